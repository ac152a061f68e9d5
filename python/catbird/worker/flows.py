"""The worker's lanes for flows: steps, map items, generators, reducers, on-fail.

:class:`.flow_runtime.FlowRuntime` makes them from a worker's ``flows``:
one lane per handler, each a :class:`.lanes.Lane` run by the
worker's claim loop and :meth:`.lanes.Lane.execute` (timeouts, threads for
plain handlers, circuit breakers, shutdown); step and item lanes batch
completions and renew leases as :class:`.batching.BatchedLane` does for
tasks. What is specific to flows:

* **steps** (``cb_claim_steps``): the handler gets its inputs by name;
  completions are batched into ``cb_complete_steps`` (fenced by the claim's
  attempt), failures go through ``cb_fail_step`` (the engine applies the
  step's stored retry policy);
* **map items** of mappers and generators (``cb_claim_map_tasks``):
  completions are batched into ``cb_complete_map_tasks`` like task
  completions; failures go through ``cb_fail_map_task``;
* **generators**: the generator function runs (a plain one in a thread) and
  its items are added with ``cb_spawn_generator_map_tasks`` in chunks of
  ``batch_size`` (or every 50 ms); the end is ``cb_complete_generator_step``.
  Both carry the claim's attempt: the engine numbers an attempt's items from
  0 and keeps the ones it already has, so a retried generator that yields its
  items again adds none twice, and a stale attempt (its lease lapsed and the
  step was claimed again) adds nothing and stops;
* **reducers**: the source's item outputs are read with
  ``cb_read_map_outputs`` a page at a time and folded, then the accumulator
  is the step's output (``cb_complete_step``);
* **on-fail** handlers of flows (``cb_claim_flow_on_fail``, :mod:`.on_fail`);
* **leases**: every ``lease / 3`` s the worker's in-flight steps and items
  are hidden again (``cb_hide_steps``/``cb_hide_map_tasks``);
* **events**: ``catbird.step.queued`` ("flow/step") wakes the lanes of that
  step; ``catbird.flow.canceling`` stops the handlers working on that run and
  reports them canceled (which lets the engine finish the cancellation), and
  ``catbird.flow.completed``/``failed`` stop them without a report (the
  engine already refused their outcome).

Nothing here decides anything about a flow: readiness, conditions, fan-out,
retries and the flow's outcome are the engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, cast

import psycopg

from .. import _sql
from ..codec import codec_for, dumps
from ..context import FlowDB, FlowRunContext
from ..definitions import Handler, HandlerOptions
from ..definitions.flows import Step, StepHandler, copy_initial
from ..models import ItemClaim, StepClaim
from .batching import BatchedLane, Completion
from .lanes import (
    Failure,
    LaneHost,
    Run,
    log,
    retry_policy,
)
from .tracing import HandlerSpan, handler_span

__all__ = ["FlowLane", "GeneratorLane", "MapLane", "ReducerLane", "StepLane"]

#: A generator's items wait at most this long (seconds) to share a statement.
SPAWN_LINGER = 0.05

#: Item outputs a reducer reads per statement.
REDUCE_PAGE = 1000

#: What a generator's producer sends to the lane: an item, the end, an error.
ITEM, END, ERROR = 0, 1, 2


def keyword_caller(fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """``fn`` called with one dict of keyword arguments (the lane's args)."""
    if is_async:

        async def call_async(kwargs: dict[str, Any]) -> Any:
            return await fn(**kwargs)

        functools.update_wrapper(call_async, fn)
        return call_async

    def call(kwargs: dict[str, Any]) -> Any:
        return fn(**kwargs)

    functools.update_wrapper(call, fn)
    return call


def identity_item(kwargs: dict[str, Any]) -> Any:
    """The item handler of a generator without one: an item is its own output."""
    return kwargs["item"]


def flow_run_of(run: Run) -> int:
    return cast(FlowRunContext, run.ctx).flow_run_id


class FlowLane(BatchedLane):
    """A lane of one step of a flow."""

    kind = "step"
    #: The claim, renewal, completion and failure statements of this kind of work.
    work: ClassVar[_sql.StepWork[Any, Any]] = _sql.STEPS

    #: Errors after which a batch is recorded one completion at a time: an
    #: output the server refuses, or one call the engine rejects.
    refused = (psycopg.Error,)

    def __init__(
        self, host: LaneHost, step: Step, handler: Handler, options: HandlerOptions
    ) -> None:
        super().__init__(host, f"{step.flow.name}/{step.name}", handler, options)
        self.step = step
        self.flow = step.flow.name
        self.step_name = step.name

    def __repr__(self) -> str:
        return f"{self.kind} handler of step {self.step_name!r} of flow {self.flow!r}"

    def span(self, run: Run) -> AbstractContextManager[HandlerSpan]:
        return handler_span(self.kind, self.name, run.id, run.attempt, self.flow, self.step_name)

    @functools.cached_property
    def db(self) -> FlowDB:
        """The database access of handler helpers (made once the worker runs)."""
        return FlowDB(self.host.client, self.host.event_loop)

    def context(self, kind: str, run_id: int, attempt: int, flow_run_id: int) -> FlowRunContext:
        return FlowRunContext(
            kind,
            f"{self.flow}.{self.step_name}",
            run_id,
            attempt,
            flow_name=self.flow,
            step_name=self.step_name,
            flow_run_id=flow_run_id,
            db=self.db,
        )

    #: The step's handler (for an item: the item handler, ``None`` for a
    #: generator without one): its parameters decide what a claim fetches.
    claiming_handler: StepHandler | None

    async def claim(self, quantity: int) -> Sequence[StepClaim | ItemClaim]:
        handler = self.claiming_handler
        return await self.host.claim_client.execute(
            self.work.claim(
                self.flow,
                self.step_name,
                quantity=quantity,
                hide_for=self.host.lease,
                with_input=handler is not None and handler.wants_input,
                with_outputs=handler is not None and handler.wants_outputs,
            )
        )

    def hide_query(self, ids: list[int], attempts: list[int], hide_for: float) -> _sql.Query[None]:
        return self.work.hide(self.flow, self.step_name, ids, hide_for=hide_for, attempts=attempts)

    def complete_query(
        self, ids: list[int], outputs: list[str], attempts: list[int]
    ) -> _sql.Query[Any]:
        return self.work.complete_json(self.flow, self.step_name, ids, outputs, attempts)

    def batch_order(self, batch: list[Completion]) -> list[Completion]:
        # Every statement locks flow runs in id order (the engine's completion
        # functions lock the run first), so concurrent batches cannot deadlock.
        return sorted(batch, key=lambda c: (flow_run_of(c.run), c.run.id))

    def fail_query(self, run: Run, failure: Failure) -> _sql.Query[str | None]:
        """``cb_fail_step`` (``cb_fail_map_task`` for an item) under the step's
        stored retry policy, or the item handler's when a generator's item
        handler has options of its own."""
        return self.work.fail(
            self.flow,
            self.step_name,
            run.id,
            failure.message,
            attempt=run.attempt,
            retryable=failure.retryable,
            error_detail=failure.detail,
            **self.policy,
        )

    def describe_run(self, run: Run) -> str:
        return f"step {self.step_name!r} run {run.id}"

    async def failed(self, run: Run, failure: Failure) -> str | None:
        status = await self.record_outcome(
            run,
            self.fail_query(run, failure),
            f"record the failure of {self.describe_run(run)}",
        )
        self.log_failure(run, f"{self!r}: flow run {flow_run_of(run)}", status, failure)
        return status  # type: ignore[no-any-return]

    async def report_canceled(self, run: Run) -> None:
        await self.host.record(
            self.fail_query(run, Failure("canceled: the flow run is canceling")),
            f"report {self.describe_run(run)} canceled",
        )

    async def stopped(self, run: Run) -> None:
        """The worker stopped the handler (see the module documentation)."""
        if run.stop_reason == "canceled":
            await self.report_canceled(run)

    async def cancel_run(self, run: Run, reason: str | None) -> None:
        ctx = cast(FlowRunContext, run.ctx)
        if ctx.early is not None:
            output, early_reason = ctx.early
            done = await self.host.record(
                _sql.complete_flow_early_json(
                    self.flow,
                    ctx.flow_run_id,
                    self.step_name,
                    output,
                    reason=early_reason,
                    # fenced by the step's claim; an item's step is not
                    # started (it waits for its items), so an item's is not
                    attempt=None if self.kind == "item" else run.attempt,
                ),
                f"complete flow run {ctx.flow_run_id} of {self.flow!r} early",
            )
            log.info(
                "flow %r run %d %s by step %r",
                self.flow,
                ctx.flow_run_id,
                "completed early" if done else "was already finished when completed early",
                self.step_name,
            )
            return
        await self.host.record(
            _sql.cancel_flow(self.flow, ctx.flow_run_id, reason=reason),
            f"cancel flow run {ctx.flow_run_id} of {self.flow!r}",
        )
        await self.report_canceled(run)
        log.info(
            "flow %r run %d canceled by step %r: %s",
            self.flow,
            ctx.flow_run_id,
            self.step_name,
            reason,
        )


class StepLane(FlowLane):
    """A normal step (and the base of generator and reducer steps)."""

    def __init__(self, host: LaneHost, step: Step, handler: StepHandler) -> None:
        wrapped = Handler(
            keyword_caller(handler.fn, handler.is_async),
            handler.options,
            (),
            handler.output,
            handler.is_async,
        )
        super().__init__(host, step, wrapped, handler.options)
        self.step_handler = self.claiming_handler = handler

    @property
    def uses_threads(self) -> bool:
        # Generators and reducers wrap the step's function in an async driver
        # that still calls a plain one in a thread.
        return not self.step_handler.is_async

    def start(self, claim: StepClaim) -> tuple[Run, tuple[Any, ...] | BaseException]:
        run = Run(
            claim.id,
            claim.attempts,
            self.context("step", claim.id, claim.attempts, claim.flow_run_id),
        )
        try:
            kwargs = self.step_handler.kwargs(claim.input, claim.step_outputs, claim.signal_input)
        except Exception as exc:
            return run, exc
        return run, self.args(run, claim, kwargs)

    def args(self, run: Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (kwargs,)


class GeneratorLane(StepLane):
    """A generator step: runs the generator, adds its items in chunks."""

    kind = "generator"
    batched = False  # its end is recorded by succeeded() itself

    def __init__(self, host: LaneHost, step: Step, handler: StepHandler) -> None:
        super().__init__(host, step, handler)
        self.handler = Handler(self._drive, handler.options, (), handler.output, True)
        self.encode_output = False
        self.chunk = max(1, handler.options.batch_size)

    def args(self, run: Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (run, kwargs)

    async def _drive(self, run: Run, kwargs: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=4 * self.chunk)
        stop = threading.Event()
        producer = self._produce(items, stop, kwargs)
        buffer: list[str] = []
        first_at = 0.0
        try:
            while True:
                timeout = None
                if buffer:
                    timeout = max(0.0, first_at + SPAWN_LINGER - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        kind, value = await items.get()
                except TimeoutError:
                    await self._spawn(run, buffer)
                    buffer = []
                    continue
                if kind == END:
                    break
                if kind == ERROR:
                    raise value
                try:
                    buffer.append(dumps(value))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"an item is not JSON-serialisable: {exc}") from exc
                if len(buffer) == 1:
                    first_at = loop.time()
                if len(buffer) >= self.chunk:
                    await self._spawn(run, buffer)
                    buffer = []
            await self._spawn(run, buffer)
        finally:
            stop.set()
            producer.cancel()
            with contextlib.suppress(BaseException):
                await producer

    def _produce(
        self, items: asyncio.Queue[tuple[int, Any]], stop: threading.Event, kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        """Start feeding ``items`` from the generator (a task, or a thread for a plain one)."""
        fn = self.step_handler.fn
        if self.step_handler.is_async:

            async def pump() -> None:
                agen = fn(**kwargs)
                try:
                    async for item in agen:
                        await items.put((ITEM, item))
                    await items.put((END, None))
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # handler code
                    await items.put((ERROR, exc))
                finally:
                    with contextlib.suppress(BaseException):
                        await agen.aclose()

            return asyncio.ensure_future(pump())

        loop = asyncio.get_running_loop()

        def put(entry: tuple[int, Any]) -> bool:
            future = asyncio.run_coroutine_threadsafe(items.put(entry), loop)
            while True:
                try:
                    future.result(timeout=0.2)
                    return True
                except TimeoutError:
                    if stop.is_set():
                        future.cancel()
                        return False
                except Exception:  # the loop is gone
                    return False

        def pump_thread() -> None:
            gen = fn(**kwargs)
            try:
                for item in gen:
                    if stop.is_set() or not put((ITEM, item)):
                        return
                put((END, None))
            except BaseException as exc:  # handler code
                put((ERROR, exc))
            finally:
                with contextlib.suppress(BaseException):
                    gen.close()

        return self.host.handler_threads.call(pump_thread)

    async def _spawn(self, run: Run, buffer: list[str]) -> None:
        if not buffer:
            return
        added = await self.host.client.execute(
            _sql.spawn_generator_items_json(
                self.flow,
                self.step_name,
                run.id,
                "[" + ",".join(buffer) + "]",
                attempt=run.attempt,
            )
        )
        if added < len(buffer):
            raise RuntimeError(
                "the generator's step run is no longer started (its flow run finished or was"
                " canceled, or its lease was lost): its items are refused"
            )

    async def succeeded(self, run: Run, output_json: str | None) -> None:
        await self.host.record(
            _sql.complete_generator_step(self.flow, self.step_name, run.id, attempt=run.attempt),
            f"record the end of generator step {self.step_name!r} run {run.id}",
        )


class ReducerLane(StepLane):
    """A reducer step: folds its source's item outputs page by page."""

    kind = "reducer"

    def __init__(self, host: LaneHost, step: Step, handler: StepHandler) -> None:
        super().__init__(host, step, handler)
        self.handler = Handler(self._reduce, handler.options, (), handler.output, True)
        assert step.reduce_source is not None
        self.source = step.reduce_source
        self.item_codec = handler.positional[1].codec

    def args(self, run: Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (run, kwargs)

    async def _reduce(self, run: Run, kwargs: dict[str, Any]) -> Any:
        fn = self.step_handler.fn
        acc = copy_initial(self.step.initial)
        after = -1
        while True:
            page = await self.host.client.execute(
                _sql.read_map_outputs(
                    self.flow, flow_run_of(run), self.source, after_idx=after, limit=REDUCE_PAGE
                )
            )
            if not page:
                return acc
            values = [self.item_codec.decode(output) for _, output in page]
            if self.step_handler.is_async:
                for value in values:
                    acc = await fn(acc, value, **kwargs)
            else:

                def fold(acc: Any, values: list[Any] = values) -> Any:
                    for value in values:
                        acc = fn(acc, value, **kwargs)
                    return acc

                ok, result = await self.host.handler_threads.call(fold, acc)
                if not ok:
                    raise result
                acc = result
            after = page[-1][0]
            if len(page) < REDUCE_PAGE:
                return acc


class MapLane(FlowLane):
    """Items of a mapper or generator step; completions are batched."""

    kind = "item"
    work = _sql.ITEMS

    def __init__(
        self, host: LaneHost, step: Step, handler: StepHandler | None, options: HandlerOptions
    ) -> None:
        if handler is None:  # a generator without item handler: an item is its own output
            wrapped = Handler(identity_item, options, (), codec_for(Any), False)
        else:
            wrapped = Handler(
                keyword_caller(handler.fn, handler.is_async),
                options,
                (),
                handler.output,
                handler.is_async,
            )
        super().__init__(host, step, wrapped, options)
        self.item_handler = self.claiming_handler = handler
        base = step.options
        own = options.max_retries != base.max_retries or options.backoff != base.backoff
        self.policy = retry_policy(options) if own else {}

    def __repr__(self) -> str:
        return f"item handler of step {self.step_name!r} of flow {self.flow!r}"

    def start(self, claim: ItemClaim) -> tuple[Run, tuple[Any, ...] | BaseException]:
        run = Run(
            claim.id,
            claim.attempts,
            self.context("item", claim.id, claim.attempts, claim.flow_run_id),
        )
        if self.item_handler is None:
            return run, ({"item": claim.item},)
        try:
            kwargs = self.item_handler.kwargs(
                claim.input, claim.step_outputs, claim.signal_input, claim.item
            )
        except Exception as exc:
            return run, exc
        return run, (kwargs,)

    def describe_run(self, run: Run) -> str:
        return f"item {run.id} of step {self.step_name!r}"

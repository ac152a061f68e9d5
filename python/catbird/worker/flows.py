"""The worker's lanes for flows: steps, map items, generators, reducers, on-fail.

A :class:`FlowRuntime` is what :class:`catbird.Worker` builds from its
``flows``: one lane per handler, each a :class:`catbird.worker._Lane` run by
the worker's generic claim loop and ``_execute``/``_invoke`` machinery
(timeouts, threads for plain handlers, circuit breakers, shutdown). The
runtime adds what is specific to flows:

* **steps** (``cb_claim_steps``): the handler gets its inputs by name; the
  outcome is ``cb_complete_step`` (one statement per step, fenced by the
  claim's attempt) or ``cb_fail_step`` with the handler's retry policy;
* **map items** of mappers and generators (``cb_claim_map_tasks``):
  completions are batched into ``cb_complete_map_tasks`` like task
  completions; failures go through ``cb_fail_map_task``;
* **generators**: the generator function runs (a plain one in a thread) and
  its items are added with ``cb_spawn_generator_map_tasks`` in chunks of
  ``batch_size`` (or every 50 ms); the end is ``cb_complete_generator_step``.
  A retried generator first asks for the step's ``map_total`` and skips as
  many items, so items are added once even when an attempt died midway;
* **reducers**: the source's item outputs are read with
  ``cb_read_map_outputs`` a page at a time and folded, then the accumulator
  is the step's output (``cb_complete_step``);
* **on-fail** handlers of flows (``cb_claim_flow_on_fail``);
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
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import psycopg

from .. import _sql
from ..codec import codec_for, dumps
from ..context import FlowDB, FlowFailure, FlowRunContext
from ..definitions import Handler, HandlerOptions
from ..definitions.flows import Flow, Step, StepHandler, copy_initial
from ..models import FlowOnFailClaim, MapTaskClaim, StepClaim
from .base import _FLUSHES, _RELEASE, _Abandoned, _describe, _Lane, _Run

if TYPE_CHECKING:
    from .base import Worker

__all__ = ["FlowRuntime"]

log = logging.getLogger("catbird.worker")

#: A generator's items wait at most this long (seconds) to share a statement.
_SPAWN_LINGER = 0.05

#: Item outputs a reducer reads per statement.
_REDUCE_PAGE = 1000


class _Named:
    """Stands in for the Task a _Lane is made for (only its name is used)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _caller(fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
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


class _FlowLane(_Lane):
    """A lane of one step of a flow."""

    kind = "step"

    def __init__(
        self, runtime: FlowRuntime, step: Step, handler: Handler, options: HandlerOptions
    ) -> None:
        super().__init__(
            runtime.worker, cast(Any, _Named(f"{step.flow.name}/{step.name}")), handler
        )
        self.options = options
        self.runtime = runtime
        self.step = step
        self.flow = step.flow.name
        self.step_name = step.name
        # Completions are buffered and recorded in batches (flush_loop), as
        # the task lanes do; entries are (flow run id, id, output JSON, attempt).
        self.pending: dict[int, int] = {}  # id -> attempt: returned, not recorded yet
        self.flushing: set[int] = set()  # in a completion statement: leases not renewed
        self.buffer: list[tuple[int, int, str, int]] = []
        self.flush_wake = asyncio.Event()
        self.buffer_full = asyncio.Event()
        self.flush_size = max(options.batch_size, 1)
        self.max_flush = max(4 * self.flush_size, 400)
        self.draining = False

    def __repr__(self) -> str:
        return f"{self.kind} handler of step {self.step_name!r} of flow {self.flow!r}"

    def context(self, kind: str, run_id: int, attempt: int, flow_run_id: int) -> FlowRunContext:
        return FlowRunContext(
            kind,
            f"{self.flow}.{self.step_name}",
            run_id,
            attempt,
            flow_name=self.flow,
            step_name=self.step_name,
            flow_run_id=flow_run_id,
            db=self.runtime.db,
        )

    def lease_ids(self) -> list[int]:
        ids = set(self.inflight)
        ids.update(i for i in self.pending if i not in self.flushing)
        return sorted(ids)

    def attempts_of(self, ids: Sequence[int]) -> list[int | None]:
        """The claim (attempt) each id is held under, the fencing token of lease renewal."""
        return [
            self.inflight[i].attempt if i in self.inflight else self.pending.get(i) for i in ids
        ]

    def hide_query(self, ids: Sequence[int], hide_for: float) -> _sql.Query[None]:
        return _sql.hide_steps(
            self.flow, self.step_name, ids, hide_for=hide_for, attempts=self.attempts_of(ids)
        )

    def complete_query(
        self, ids: list[int], outputs: list[str], attempts: list[int]
    ) -> _sql.Query[Any]:
        return _sql.complete_steps_json(self.flow, self.step_name, ids, outputs, attempts)

    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        flow_run_id = cast(FlowRunContext, run.ctx).flow_run_id
        self.pending[run.id] = run.attempt
        self.buffer.append((flow_run_id, run.id, output_json or "null", run.attempt))
        self.flush_wake.set()
        if len(self.buffer) >= self.flush_size:
            self.buffer_full.set()

    async def flush_loop(self) -> None:
        """Record buffered completions in batches (one statement per batch).

        Up to two batches are in flight at once; a batch is sorted by flow
        run, so that every statement locks flow runs in id order (the
        engine's completion functions lock the run first) and concurrent
        batches cannot deadlock.
        """
        linger = self.worker.flush_interval
        slots = asyncio.Semaphore(_FLUSHES)
        inflight: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            inflight.discard(task)
            slots.release()

        try:
            while True:
                await self.flush_wake.wait()
                if not self.draining and len(self.buffer) < self.flush_size and linger > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(linger):
                            await self.buffer_full.wait()
                await slots.acquire()
                self.flush_wake.clear()
                self.buffer_full.clear()
                batch, self.buffer = self.buffer[: self.max_flush], self.buffer[self.max_flush :]
                if self.buffer:
                    self.flush_wake.set()
                if batch:
                    task = asyncio.create_task(self._complete(sorted(batch)))
                    inflight.add(task)
                    task.add_done_callback(done)
                else:
                    slots.release()
                if self.draining and not self.buffer:
                    await asyncio.gather(*inflight, return_exceptions=True)
                    if not self.buffer:
                        return
        finally:
            for task in inflight:
                task.cancel()

    async def _complete(self, batch: list[tuple[int, int, str, int]]) -> None:
        ids = [b[1] for b in batch]
        self.flushing.update(ids)
        try:
            await self.worker._retrying(
                self.complete_query(ids, [b[2] for b in batch], [b[3] for b in batch]),
                f"record {len(batch)} completion(s) of {self!r}",
            )
        except psycopg.Error:
            # One output the server refuses, or one call the engine rejects:
            # record them one by one to find it.
            for entry in batch:
                await self._complete_one(entry)
        except _Abandoned:
            pass
        except Exception:
            log.exception("%r: recording %d completion(s) failed", self, len(batch))
        finally:
            self.flushing.difference_update(ids)
            for run_id in ids:
                self.pending.pop(run_id, None)

    async def _complete_one(self, entry: tuple[int, int, str, int]) -> None:
        flow_run_id, run_id, text, attempt = entry
        try:
            await self.worker._retrying(
                self.complete_query([run_id], [text], [attempt]),
                f"record the completion of run {run_id} of {self!r}",
            )
        except psycopg.Error as exc:
            run = _Run(run_id, attempt, self.context(self.kind, run_id, attempt, flow_run_id))
            await self.failed(run, f"the output could not be stored: {_describe(exc)}")
        except _Abandoned:
            pass
        except Exception:
            log.exception("%r: recording the completion of run %d failed", self, run_id)

    async def stopped(self, run: _Run) -> None:
        """The worker stopped the handler (see the module documentation)."""
        if run.stop_reason == "canceled":
            await self.report_canceled(run)
        elif run.stop_reason == "shutdown" and self.handler.is_async and self.releasable:
            with contextlib.suppress(Exception):
                await self.worker._client.execute(self.hide_query([run.id], _RELEASE))

    releasable = True
    batched = True

    async def report_canceled(self, run: _Run) -> None:
        await self.worker._retrying(
            _sql.fail_step(
                self.flow,
                self.step_name,
                run.id,
                "canceled: the flow run is canceling",
                attempt=run.attempt,
            ),
            f"report step {self.step_name!r} run {run.id} canceled",
        )

    async def cancel_run(self, run: _Run, reason: str | None) -> None:
        ctx = cast(FlowRunContext, run.ctx)
        if ctx.early is not None:
            output, early_reason = ctx.early
            done = await self.worker._retrying(
                _sql.complete_flow_early_json(
                    self.flow, ctx.flow_run_id, self.step_name, output, reason=early_reason
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
        await self.worker._retrying(
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

    async def fail_with_policy(self, run: _Run, message: str) -> None:
        low, high = self.options.backoff_ms
        status = await self.worker._retrying(
            _sql.fail_step(
                self.flow,
                self.step_name,
                run.id,
                message,
                attempt=run.attempt,
                max_retries=self.options.max_retries,
                backoff_min=low,
                backoff_max=high,
            ),
            f"record the failure of step {self.step_name!r} run {run.id}",
        )
        self.log_failure(run, status, message)

    def log_failure(self, run: _Run, status: str | None, message: str) -> None:
        flow_run = cast(FlowRunContext, run.ctx).flow_run_id
        if status == "queued":
            log.info(
                "%r: flow run %d attempt %d failed, retrying: %s",
                self,
                flow_run,
                run.attempt,
                message,
            )
        elif status == "failed":
            log.warning(
                "%r: flow run %d failed after %d attempt(s): %s",
                self,
                flow_run,
                run.attempt,
                message,
            )
        else:
            log.info(
                "%r: flow run %d: failure not recorded (lease lost or run finished)", self, flow_run
            )


class _StepLane(_FlowLane):
    """A normal step (and the base of generator and reducer steps)."""

    def __init__(self, runtime: FlowRuntime, step: Step, handler: StepHandler) -> None:
        wrapped = Handler(
            _caller(handler.fn, handler.is_async),
            handler.options,
            (),
            handler.output,
            handler.is_async,
        )
        super().__init__(runtime, step, wrapped, handler.options)
        self.step_handler = handler

    async def claim(self, quantity: int) -> Sequence[StepClaim]:
        handler = self.step_handler
        return await self.worker._claims.execute(
            _sql.claim_steps(
                self.flow,
                self.step_name,
                quantity=quantity,
                hide_for=self.worker.lease,
                with_input=handler.wants_input,
                with_outputs=handler.wants_outputs,
            )
        )

    def start(self, claim: StepClaim) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        run = _Run(
            claim.id,
            claim.attempts,
            self.context("step", claim.id, claim.attempts, claim.flow_run_id),
        )
        try:
            kwargs = self.step_handler.kwargs(claim.input, claim.step_outputs, claim.signal_input)
        except Exception as exc:
            return run, exc
        return run, self.args(run, claim, kwargs)

    def args(self, run: _Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (kwargs,)

    async def failed(self, run: _Run, message: str) -> None:
        self.pending[run.id] = run.attempt
        try:
            await self.fail_with_policy(run, message)
        finally:
            self.pending.pop(run.id, None)


class _GeneratorLane(_StepLane):
    """A generator step: runs the generator, adds its items in chunks."""

    kind = "generator"
    releasable = False  # a released generator would run twice at once
    batched = False

    def __init__(self, runtime: FlowRuntime, step: Step, handler: StepHandler) -> None:
        super().__init__(runtime, step, handler)
        self.handler = Handler(self._drive, handler.options, (), handler.output, True)
        self.encode_output = False
        self.chunk = max(1, handler.options.batch_size)

    def args(self, run: _Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (run, kwargs)

    async def _drive(self, run: _Run, kwargs: dict[str, Any]) -> None:
        ctx = cast(FlowRunContext, run.ctx)
        skip = 0
        if run.attempt > 1:
            info = await self.worker._client.execute(
                _sql.get_flow_step_status(self.flow, ctx.flow_run_id, self.step_name)
            )
            skip = (info.map_total or 0) if info is not None else 0
            if skip:
                log.info(
                    "%r: flow run %d attempt %d skips the %d item(s) added before",
                    self,
                    ctx.flow_run_id,
                    run.attempt,
                    skip,
                )
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
                    timeout = max(0.0, first_at + _SPAWN_LINGER - loop.time())
                try:
                    async with asyncio.timeout(timeout):
                        kind, value = await items.get()
                except TimeoutError:
                    await self._spawn(run, buffer)
                    buffer = []
                    continue
                if kind == _END:
                    break
                if kind == _ERROR:
                    raise value
                if skip:
                    skip -= 1
                    continue
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
                        await items.put((_ITEM, item))
                    await items.put((_END, None))
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:  # handler code
                    await items.put((_ERROR, exc))
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
                    if stop.is_set() or not put((_ITEM, item)):
                        return
                put((_END, None))
            except BaseException as exc:  # handler code
                put((_ERROR, exc))
            finally:
                with contextlib.suppress(BaseException):
                    gen.close()

        assert self.worker._threads is not None
        ctx = contextvars.copy_context()
        return self.worker._threads.submit(functools.partial(ctx.run, pump_thread))

    async def _spawn(self, run: _Run, buffer: list[str]) -> None:
        if not buffer:
            return
        added = await self.worker._client.execute(
            _sql.spawn_generator_map_tasks_json(
                self.flow, self.step_name, run.id, "[" + ",".join(buffer) + "]"
            )
        )
        if added < len(buffer):
            raise RuntimeError(
                "the generator's step run is no longer started (its flow run finished or was"
                " canceled, or its lease was lost): its items are refused"
            )

    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        await self.worker._retrying(
            _sql.complete_generator_step(self.flow, self.step_name, run.id),
            f"record the end of generator step {self.step_name!r} run {run.id}",
        )


_ITEM, _END, _ERROR = 0, 1, 2


class _ReducerLane(_StepLane):
    """A reducer step: folds its source's item outputs page by page."""

    kind = "reducer"

    def __init__(self, runtime: FlowRuntime, step: Step, handler: StepHandler) -> None:
        super().__init__(runtime, step, handler)
        self.handler = Handler(self._reduce, handler.options, (), handler.output, True)
        assert step.reduce_source is not None
        self.source = step.reduce_source
        self.item_codec = handler.positional[1].codec

    def args(self, run: _Run, claim: StepClaim, kwargs: dict[str, Any]) -> tuple[Any, ...]:
        return (run, kwargs)

    async def _reduce(self, run: _Run, kwargs: dict[str, Any]) -> Any:
        ctx = cast(FlowRunContext, run.ctx)
        fn = self.step_handler.fn
        acc = copy_initial(self.step.initial)
        after = -1
        while True:
            page = await self.worker._client.execute(
                _sql.read_map_outputs(
                    self.flow, ctx.flow_run_id, self.source, after_idx=after, limit=_REDUCE_PAGE
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

                assert self.worker._threads is not None
                ok, result = await self.worker._threads.submit(
                    functools.partial(contextvars.copy_context().run, fold, acc)
                )
                if not ok:
                    raise result
                acc = result
            after = page[-1][0]
            if len(page) < _REDUCE_PAGE:
                return acc


class _MapLane(_FlowLane):
    """Items of a mapper or generator step; completions are batched."""

    kind = "item"

    def __init__(
        self, runtime: FlowRuntime, step: Step, handler: StepHandler | None, options: HandlerOptions
    ) -> None:
        if handler is None:  # a generator without item handler: an item is its own output
            wrapped = Handler(_identity_item, options, (), codec_for(Any), False)
        else:
            wrapped = Handler(
                _caller(handler.fn, handler.is_async),
                options,
                (),
                handler.output,
                handler.is_async,
            )
        super().__init__(runtime, step, wrapped, options)
        self.item_handler = handler

    def __repr__(self) -> str:
        return f"item handler of step {self.step_name!r} of flow {self.flow!r}"

    async def claim(self, quantity: int) -> Sequence[MapTaskClaim]:
        handler = self.item_handler
        return await self.worker._claims.execute(
            _sql.claim_map_tasks(
                self.flow,
                self.step_name,
                quantity=quantity,
                hide_for=self.worker.lease,
                with_input=handler is not None and handler.wants_input,
                with_outputs=handler is not None and handler.wants_outputs,
            )
        )

    def start(self, claim: MapTaskClaim) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        run = _Run(
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

    def hide_query(self, ids: Sequence[int], hide_for: float) -> _sql.Query[None]:
        return _sql.hide_map_tasks(
            self.flow, self.step_name, ids, hide_for=hide_for, attempts=self.attempts_of(ids)
        )

    def complete_query(
        self, ids: list[int], outputs: list[str], attempts: list[int]
    ) -> _sql.Query[Any]:
        return _sql.complete_map_tasks_json(self.flow, self.step_name, ids, outputs, attempts)

    async def report_canceled(self, run: _Run) -> None:
        await self.worker._retrying(
            _sql.fail_map_task(
                self.flow,
                self.step_name,
                run.id,
                "canceled: the flow run is canceling",
                attempt=run.attempt,
            ),
            f"report item {run.id} of step {self.step_name!r} canceled",
        )

    async def failed(self, run: _Run, message: str) -> None:
        low, high = self.options.backoff_ms
        self.pending[run.id] = run.attempt
        try:
            status = await self.worker._retrying(
                _sql.fail_map_task(
                    self.flow,
                    self.step_name,
                    run.id,
                    message,
                    attempt=run.attempt,
                    max_retries=self.options.max_retries,
                    backoff_min=low,
                    backoff_max=high,
                ),
                f"record the failure of item {run.id} of step {self.step_name!r}",
            )
        finally:
            self.pending.pop(run.id, None)
        self.log_failure(run, status, message)


def _identity_item(kwargs: dict[str, Any]) -> Any:
    return kwargs["item"]


class _FlowOnFailLane(_Lane):
    """The on-fail handler of a flow."""

    kind = "on-fail"

    def __init__(self, runtime: FlowRuntime, flow: Flow, handler: Handler) -> None:
        super().__init__(runtime.worker, cast(Any, _Named(flow.name)), handler)
        self.runtime = runtime
        self.flow = flow.name
        self.encode_output = False
        self.decode = handler.params[0].codec.decode
        timeout = self.options.timeout
        # No lease renewal for on-fail claims: hidden long enough for one call.
        self.hide_for = runtime.worker.lease + (timeout or runtime.worker.lease)

    def __repr__(self) -> str:
        return f"on-fail handler of flow {self.flow!r}"

    async def claim(self, quantity: int) -> Sequence[FlowOnFailClaim]:
        return await self.worker._claims.execute(
            _sql.claim_flow_on_fail(self.flow, quantity=quantity, hide_for=self.hide_for)
        )

    def start(self, claim: FlowOnFailClaim) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        ctx = FlowRunContext(
            "flow_on_fail",
            self.flow,
            claim.id,
            claim.on_fail_attempts,
            None,
            claim.concurrency_key,
            flow_name=self.flow,
            step_name=claim.failed_step_name or "",
            flow_run_id=claim.id,
            db=self.runtime.db,
        )
        run = _Run(claim.id, claim.on_fail_attempts, ctx)
        failure = FlowFailure(
            flow_name=self.flow,
            flow_run_id=claim.id,
            failed_step_name=claim.failed_step_name,
            error_message=claim.error_message or "",
            attempts=claim.failed_step_attempts or 0,
            on_fail_attempts=claim.on_fail_attempts,
            started_at=claim.started_at,
            failed_at=claim.failed_at,
            concurrency_key=claim.concurrency_key,
            failed_step_input=claim.failed_step_input,
            failed_step_signal_input=claim.failed_step_signal_input,
            _db=self.runtime.db,
        )
        try:
            return run, (self.decode(claim.input), failure)
        except Exception as exc:
            return run, exc

    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        await self.worker._retrying(
            _sql.complete_flow_on_fail(self.flow, run.id),
            f"record the on-fail completion of run {run.id} of flow {self.flow!r}",
        )

    async def failed(self, run: _Run, message: str) -> None:
        exhausted = run.attempt > self.options.max_retries
        delay = _sql.ms(self.options.retry_delay(run.attempt))
        await self.worker._retrying(
            _sql.fail_flow_on_fail(
                self.flow, run.id, message, retry_exhausted=exhausted, retry_delay=delay
            ),
            f"record the on-fail failure of run {run.id} of flow {self.flow!r}",
        )
        log.warning(
            "on-fail handler of flow %r run %d attempt %d failed%s: %s",
            self.flow,
            run.id,
            run.attempt,
            " for good" if exhausted else ", retrying",
            message,
        )

    async def cancel_run(self, run: _Run, reason: str | None) -> None:  # pragma: no cover
        await self.failed(run, "catbird.cancel() is not available in an on-fail handler")

    async def stopped(self, run: _Run) -> None:
        return None


class FlowRuntime:
    """The flow lanes of one worker, and what the worker asks of them."""

    def __init__(self, worker: Worker, flows: Sequence[Flow]) -> None:
        self.worker = worker
        self.flows = list(flows)
        self._db: FlowDB | None = None
        self.step_lanes: list[_FlowLane] = []
        self.map_lanes: list[_MapLane] = []
        self.on_fail_lanes: list[_FlowOnFailLane] = []
        self.by_key: dict[str, list[_Lane]] = {}
        for flow in self.flows:
            for step in flow.steps.values():
                self._add_step(step)
            if flow.on_fail_handler is not None:
                handler = self._override(flow.on_fail_handler)
                self.on_fail_lanes.append(_FlowOnFailLane(self, flow, handler))
        self.lanes: list[_Lane] = [*self.step_lanes, *self.on_fail_lanes]

    def _override(self, handler: Handler) -> Handler:
        if self.worker.concurrency is None:
            return handler
        return Handler(
            handler.fn,
            handler.options.replace(concurrency=self.worker.concurrency),
            handler.params,
            handler.output,
            handler.is_async,
        )

    def _options(self, options: HandlerOptions) -> HandlerOptions:
        if self.worker.concurrency is None:
            return options
        return options.replace(concurrency=self.worker.concurrency)

    def _step_handler(self, handler: StepHandler) -> StepHandler:
        return StepHandler(
            handler.fn,
            self._options(handler.options),
            handler.positional,
            handler.args,
            handler.output,
            handler.is_async,
            handler.is_generator,
        )

    def _add_step(self, step: Step) -> None:
        key = f"{step.flow.name}/{step.name}"
        lanes: list[_FlowLane] = []
        handler = self._step_handler(step.handler)
        if step.step_type == "mapper":
            lanes.append(_MapLane(self, step, handler, handler.options))
        elif step.step_type == "generator":
            lanes.append(_GeneratorLane(self, step, handler))
            items = step.item_handler
            if items is not None:
                items = self._step_handler(items)
            lanes.append(_MapLane(self, step, items, self._options(step.item_options)))
        elif step.step_type == "reducer":
            lanes.append(_ReducerLane(self, step, handler))
        else:
            lanes.append(_StepLane(self, step, handler))
        for lane in lanes:
            self.step_lanes.append(lane)
            if isinstance(lane, _MapLane):
                self.map_lanes.append(lane)
            self.by_key.setdefault(key, []).append(lane)

    @property
    def db(self) -> FlowDB:
        if self._db is None:
            loop = self.worker._loop
            assert loop is not None
            self._db = FlowDB(self.worker._client, loop)
        return self._db

    @property
    def sync_slots(self) -> int:
        """Threads the plain handlers of these lanes may need at once."""
        total = 0
        for lane in self.step_lanes:
            concurrency = lane.options.concurrency
            if isinstance(lane, _StepLane):
                if not lane.step_handler.is_async:
                    total += concurrency
            elif not lane.handler.is_async:
                total += concurrency
        for on_fail in self.on_fail_lanes:
            if not on_fail.handler.is_async:
                total += on_fail.options.concurrency
        return total

    @property
    def connections(self) -> tuple[int, int]:
        """Extra connections for the worker's pools: (outcomes, claims)."""
        n = len(self.lanes)
        return min(3 * n, 24), min(2 * n, 16)

    def step_handlers(self) -> list[dict[str, Any]]:
        """The worker registry's ``step_handlers`` entries."""
        seen: list[dict[str, Any]] = []
        for flow in self.flows:
            for step in flow.steps.values():
                seen.append({"flow_name": flow.name, "step_name": step.name})
        return seen

    async def create_definitions(self) -> None:
        from ..errors import ObjectInUse

        for flow in self.flows:
            try:
                await self.worker._client.execute(_sql.create_flow(flow.name, **flow.create_args()))
            except ObjectInUse as exc:
                log.warning(
                    "flow %r: the stored definition differs from this one and runs are"
                    " active, so it is kept (%s)",
                    flow.name,
                    exc.message,
                )

    def flush_loops(self) -> list[Any]:
        return [lane.flush_loop() for lane in self.step_lanes if lane.batched]

    def drain(self) -> None:
        for lane in self.step_lanes:
            lane.draining = True
            lane.flush_wake.set()

    async def lease_loop(self) -> None:
        worker = self.worker
        interval = worker.lease / 3
        while True:
            await asyncio.sleep(interval)
            for lane in self.step_lanes:
                ids = lane.lease_ids()
                if not ids:
                    continue
                try:
                    await worker._claims.execute(lane.hide_query(ids, worker.lease))
                except Exception as exc:
                    log.warning(
                        "%r: renewing the lease of %d run(s) failed: %s",
                        lane,
                        len(ids),
                        _describe(exc),
                    )

    def on_event(self, topic: str, data: Any) -> None:
        if topic == "catbird.step.queued":
            for lane in self.by_key.get(str(data), ()):
                lane.wake.set()
            return
        if topic not in ("catbird.flow.canceling", "catbird.flow.completed", "catbird.flow.failed"):
            return
        try:
            run_id = int(data)
        except (TypeError, ValueError):
            return
        reason = "canceled" if topic == "catbird.flow.canceling" else "finished"
        for lane in self.step_lanes:
            for run in list(lane.inflight.values()):
                if cast(FlowRunContext, run.ctx).flow_run_id == run_id:
                    log.info(
                        "%r: flow run %d %s: stopping its handler",
                        lane,
                        run_id,
                        "is canceling" if reason == "canceled" else "finished",
                    )
                    self.worker._stop_run(run, reason)
        if topic == "catbird.flow.failed":
            for on_fail in self.on_fail_lanes:
                on_fail.wake.set()

"""Helpers usable inside a running handler.

::

    @catbird.task("resize")
    def resize(req: Resize) -> str:
        log = catbird.logger()                 # "[resize run 42] ..." records
        log.info("resizing %s", req.path)
        if not exists(req.path):
            catbird.cancel("source is gone")   # cancels run 42 and stops here
        if catbird.cancel_requested():         # canceled from elsewhere meanwhile
            return "stopped"
        return f"done {catbird.current_run_id()}"

The worker sets the run context (a :mod:`contextvars` variable) before it
calls a handler, in the handler's task for ``async def`` handlers and in the
thread for plain ones, so these helpers know which run they are in. Called
outside a handler they raise :class:`catbird.NoRunContext`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from . import _sql
from ._sql import AsyncExecutor, Query
from .codec import dumps
from .errors import CancelRun, CompleteEarly, NoRunContext, NotFound
from .models import StepRunInfo

T = TypeVar("T")


__all__ = [
    "FlowFailure",
    "FlowRunContext",
    "RunContext",
    "cancel",
    "cancel_requested",
    "complete_early",
    "current_flow_run_id",
    "current_run",
    "current_run_id",
    "get_step",
    "get_step_async",
    "logger",
    "wait_for_step",
    "wait_for_step_async",
]


class _RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes messages with the run and adds ``catbird_task``/``catbird_run_id`` extras."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[{extra.get('catbird_task')} run {extra.get('catbird_run_id')}] {msg}", kwargs


@dataclass(eq=False)
class RunContext:
    """What a handler can know about the run it is handling."""

    kind: str
    """``"task"`` for a task handler, ``"on_fail"`` for an on-fail handler."""
    task_name: str
    run_id: int
    attempt: int
    """1 on the first attempt (for on-fail handlers: the on-fail attempt)."""
    headers: dict[str, Any] | None = None
    concurrency_key: str | None = None
    canceled: bool = field(default=False, repr=False)
    """True once the run was canceled from outside while the handler runs."""
    _logger: _RunLogger | None = field(default=None, repr=False)

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        if self._logger is None:
            self._logger = _RunLogger(
                logging.getLogger(f"catbird.task.{self.task_name}"),
                {"catbird_task": self.task_name, "catbird_run_id": self.run_id},
            )
        return self._logger


_current: ContextVar[RunContext | None] = ContextVar("catbird_run", default=None)


def enter_run(ctx: RunContext) -> None:
    """Make ``ctx`` the run of the calling task (the worker's call, before a handler)."""
    _current.set(ctx)


def current_run() -> RunContext:
    """The :class:`RunContext` of the running handler."""
    ctx = _current.get()
    if ctx is None:
        raise NoRunContext(
            "no run context: catbird's handler helpers work only inside a handler run by a worker"
        )
    return ctx


def current_run_id() -> int:
    """The id of the run being handled."""
    return current_run().run_id


def cancel(reason: str | None = None) -> NoReturn:
    """Cancel the run being handled and stop the handler.

    Raises :class:`catbird.CancelRun`; the worker then cancels the run in the
    database (``cb_cancel_task``, status ``canceled`` with ``reason``) and
    records no other outcome. Not available in on-fail handlers (the run has
    already failed).
    """
    ctx = current_run()
    if ctx.kind != "task":
        raise NoRunContext("catbird.cancel() cancels a task run; an on-fail handler has none")
    raise CancelRun(reason)


def cancel_requested() -> bool:
    """True once the run was canceled from outside (e.g. ``client.cancel_task_run``).

    ``async def`` handlers are interrupted (``asyncio.CancelledError``) on
    cancellation; plain handlers run in a thread that cannot be interrupted,
    so long ones should check this now and then and return early.
    """
    return current_run().canceled


def logger() -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger bound to the current run (logger ``catbird.task.<name>``)."""
    return current_run().logger


# ---------------------------------------------------------------- run context


class FlowDB:
    """The worker's database access as handler helpers use it.

    ``call`` runs a query on the worker's event loop from a handler thread;
    ``acall`` awaits it on the loop itself.
    """

    def __init__(self, client: AsyncExecutor, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop

    def call(self, query: Query[T], what: str) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None:
            raise RuntimeError(
                f"{what} blocks; in an async def handler use `await {what}_async(...)` instead"
            )
        return asyncio.run_coroutine_threadsafe(self.client.execute(query), self.loop).result()

    async def acall(self, query: Query[T]) -> T:
        return await self.client.execute(query)


@dataclass(eq=False)
class FlowRunContext(RunContext):
    """The run context of a flow step, item or on-fail handler.

    ``kind`` is ``"step"``, ``"item"`` (a mapper or generator item) or
    ``"flow_on_fail"``; ``run_id`` is the step run's id (an item's id for
    items, the flow run's for on-fail handlers).
    """

    flow_name: str = ""
    step_name: str = ""
    flow_run_id: int = 0
    db: FlowDB | None = field(default=None, repr=False)
    early: tuple[str, str | None] | None = field(default=None, repr=False)
    """Set by :func:`complete_early`: (output JSON, reason)."""


def _flow_context(helper: str) -> FlowRunContext:
    ctx = _current.get()
    if not isinstance(ctx, FlowRunContext):
        raise NoRunContext(
            f"catbird.{helper}() works only inside a flow step handler run by a worker"
        )
    return ctx


def current_flow_run_id() -> int:
    """The id of the flow run whose step is being handled."""
    return _flow_context("current_flow_run_id").flow_run_id


def complete_early(output: Any = None, reason: str | None = None) -> NoReturn:
    """Complete the whole flow run now with ``output``, and stop this handler.

    Raises :class:`catbird.CompleteEarly`; the worker then records the
    output as the flow's (``cb_complete_flow_early``): the run is
    ``completed``, queued steps are canceled and running ones are told to
    stop. Does nothing more if the run already finished meanwhile.
    """
    ctx = _flow_context("complete_early")
    if ctx.kind == "flow_on_fail":
        raise NoRunContext("catbird.complete_early() is not available in an on-fail handler")
    ctx.early = (dumps(output), reason)
    raise CompleteEarly(output, reason)


def _db(ctx: FlowRunContext) -> FlowDB:
    if ctx.db is None:
        raise NoRunContext("this run context has no database access")
    return ctx.db


def _step_or_raise(ctx: FlowRunContext, info: StepRunInfo | None) -> StepRunInfo:
    if info is None:
        raise NotFound(f'flow "{ctx.flow_name}" has no run {ctx.flow_run_id}')
    return info


def get_step(name: str) -> StepRunInfo:
    """The state of step ``name`` in the current flow run (from a plain handler)."""
    ctx = _flow_context("get_step")
    query = _sql.get_flow_step_status(ctx.flow_name, ctx.flow_run_id, name)
    return _step_or_raise(ctx, _db(ctx).call(query, "catbird.get_step"))


async def get_step_async(name: str) -> StepRunInfo:
    """The state of step ``name`` in the current flow run (from an ``async def`` handler)."""
    ctx = _flow_context("get_step_async")
    query = _sql.get_flow_step_status(ctx.flow_name, ctx.flow_run_id, name)
    return _step_or_raise(ctx, await _db(ctx).acall(query))


#: Longest single server-side wait of wait_for_step.
_STEP_SLICE = 1.0


def _wait_slice(deadline: float | None) -> float:
    if deadline is None:
        return _STEP_SLICE
    return max(0.0, min(_STEP_SLICE, deadline - time.monotonic()))


def _wait_query(ctx: FlowRunContext, name: str, deadline: float | None, poll: float) -> Query[Any]:
    return _sql.wait_flow_step_output(
        ctx.flow_name, ctx.flow_run_id, name, poll_for=_wait_slice(deadline), poll_interval=poll
    )


def _check_wait(
    ctx: FlowRunContext, name: str, deadline: float | None, limit: float | None
) -> None:
    if ctx.canceled:
        raise asyncio.CancelledError(f"flow run {ctx.flow_run_id} was canceled")
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(
            f"step {name!r} of flow run {ctx.flow_run_id} is not done after {limit:g} s"
        )


def wait_for_step(
    name: str, *, timeout: float | None = None, poll_interval: float = 0.1
) -> StepRunInfo:
    """Wait until step ``name`` of the current flow run is terminal (completed,
    failed, skipped, canceled) and return its state (from a plain handler).

    Raises :class:`TimeoutError` after ``timeout`` seconds (``None``: no limit).
    """
    ctx = _flow_context("wait_for_step")
    db = _db(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if db.call(_wait_query(ctx, name, deadline, poll_interval), "catbird.wait_for_step"):
            return get_step(name)
        _check_wait(ctx, name, deadline, timeout)


async def wait_for_step_async(
    name: str, *, timeout: float | None = None, poll_interval: float = 0.1
) -> StepRunInfo:
    """:func:`wait_for_step` for ``async def`` handlers."""
    ctx = _flow_context("wait_for_step_async")
    db = _db(ctx)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if await db.acall(_wait_query(ctx, name, deadline, poll_interval)):
            return await get_step_async(name)
        _check_wait(ctx, name, deadline, timeout)


# ---------------------------------------------------------------- on-fail


@dataclass(frozen=True, slots=True)
class FlowFailure:
    """What a flow's on-fail handler receives about the run that failed.

    ``failed_step_name`` is ``None`` when the flow failed without a failing
    step (no output candidate completed). ``failed_step_input`` is what the
    failed step worked on (the flow input, or the item of a failed map item)
    and ``failed_step_signal_input`` its signal. :meth:`output` reads the
    output of a step that completed before the failure.
    """

    flow_name: str
    flow_run_id: int
    failed_step_name: str | None
    error_message: str
    attempts: int
    """Attempts of the failed step (the first one included)."""
    on_fail_attempts: int
    """On-fail attempts, this one included (1 on the first call)."""
    started_at: datetime | None
    failed_at: datetime | None
    concurrency_key: str | None
    failed_step_input: Any
    failed_step_signal_input: Any
    _db: FlowDB | None = field(default=None, repr=False, compare=False)

    def _query(self, step: str) -> Query[StepRunInfo | None]:
        return _sql.get_flow_step_status(self.flow_name, self.flow_run_id, step)

    def _value(self, step: str, info: StepRunInfo | None) -> Any:
        if info is None or info.status != "completed":
            state = "missing" if info is None else info.status
            raise NotFound(
                f'step "{step}" of run {self.flow_run_id} of flow "{self.flow_name}" has no'
                f" output (it is {state})"
            )
        return info.output

    def output(self, step: str) -> Any:
        """The output of a completed step of the failed run (from a plain handler).

        :class:`catbird.NotFound` when the step did not complete.
        """
        if self._db is None:
            raise NoRunContext("FlowFailure.output() needs the worker that made it")
        return self._value(step, self._db.call(self._query(step), "FlowFailure.output"))

    async def output_async(self, step: str) -> Any:
        """:meth:`output` for ``async def`` handlers."""
        if self._db is None:
            raise NoRunContext("FlowFailure.output_async() needs the worker that made it")
        return self._value(step, await self._db.acall(self._query(step)))

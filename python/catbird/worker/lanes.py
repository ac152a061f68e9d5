"""The lane interface: what a lane is, and what it may use of its worker.

A lane is one handler's share of a worker: the runs it holds, the events
that wake its claim loop, its circuit breaker, and how it claims, starts and
reports runs. The worker runs every lane alike (its claim loop calls
:meth:`Lane.claim` and :meth:`Lane.start`, then :meth:`Lane.execute`); the
kinds of lanes (:mod:`.tasks`, :mod:`.flows`, :mod:`.on_fail`) say only
what differs. A lane reaches its worker through :class:`LaneHost` alone.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import inspect
import logging
import os
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from .. import _sql
from ..codec import dumps
from ..context import RunContext, enter_run
from ..definitions import Handler, HandlerOptions
from ..errors import CancelRun, PermanentError

if TYPE_CHECKING:
    from ..client.client_async import AsyncClient
    from .threads import HandlerThreads

__all__ = [
    "RELEASE_LEASE",
    "Abandoned",
    "CircuitBreaker",
    "Failure",
    "Lane",
    "LaneHost",
    "Run",
    "describe",
    "retry_policy",
    "with_concurrency",
]

T = TypeVar("T")

log = logging.getLogger("catbird.worker")

#: The shortest lease: a run hidden this long is claimable again at once
#: (how runs are handed back on shutdown).
RELEASE_LEASE = 0.001

#: Seconds after a retry's earliest and latest due time that its lane claims.
RETRY_WAKE_MARGIN = 0.005


def describe(exc: BaseException) -> str:
    """``Type: message`` (or ``Type`` alone): an exception as a run's error text."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class Failure(NamedTuple):
    """A handler's failure as the engine's ``cb_fail_*`` calls take it."""

    #: ``Type: message``: the run's ``error_message``.
    message: str
    #: The traceback: the run's ``error_detail``.
    detail: str | None = None
    #: ``False``: fail the run now, whatever its retry policy.
    retryable: bool = True


def failure_of(message: str, exc: BaseException | None, *, retryable: bool = True) -> Failure:
    """The :class:`Failure` of ``exc``: its traceback as the detail, and not
    retryable when it is a :class:`catbird.PermanentError`."""
    if exc is None:
        return Failure(message, None, retryable)
    retryable = retryable and not isinstance(exc, PermanentError)
    return Failure(message, format_traceback(exc), retryable)


#: Frames of the worker itself are left out of tracebacks (they say nothing
#: about the handler).
_WORKER_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def format_traceback(exc: BaseException) -> str | None:
    """The traceback of ``exc`` as text, without the worker's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    frames = [f for f in te.stack if not f.filename.startswith(_WORKER_DIR)]
    if frames:
        te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format()).rstrip() or None


def retry_policy(options: HandlerOptions) -> dict[str, int]:
    """The retry arguments of the engine's ``cb_fail_*`` functions for a handler
    (only where no stored policy applies: on-fail handlers, generator items
    with options of their own)."""
    low, high = options.backoff_ms
    return {"max_retries": options.max_retries, "backoff_min": low, "backoff_max": high}


def with_concurrency(handler: Handler, concurrency: int | None) -> Handler:
    """``handler`` with the worker's ``concurrency`` in place of its own (if given)."""
    if concurrency is None:
        return handler
    return dataclasses.replace(handler, options=handler.options.replace(concurrency=concurrency))


class Abandoned(Exception):
    """An outcome could not be recorded before the worker gave up (shutdown)."""


class LaneHost(Protocol):
    """What a lane uses of its worker (:class:`catbird.Worker` implements it)."""

    @property
    def lease(self) -> float:
        """Seconds a claim hides a run from other workers."""

    @property
    def flush_interval(self) -> float:
        """Seconds a completion may wait to share its statement with others."""

    @property
    def client(self) -> AsyncClient:
        """Statements that must commit durably (outcomes, handler helpers)."""

    @property
    def claim_client(self) -> AsyncClient:
        """Claims and lease renewals (possibly ``synchronous_commit = off``)."""

    @property
    def handler_threads(self) -> HandlerThreads:
        """The threads plain handlers run in."""

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the worker runs on (handler threads send statements to it)."""

    async def record(self, query: _sql.Query[T], what: str) -> T:
        """Execute an outcome's statement, retrying transient errors.

        Raises :class:`Abandoned` once the worker gives up (end of shutdown).
        """
        ...


class Run:
    """One claimed run while the worker holds it."""

    __slots__ = ("attempt", "ctx", "id", "in_handler", "stop_reason", "task")

    def __init__(self, run_id: int, attempt: int, ctx: RunContext) -> None:
        self.id = run_id
        self.attempt = attempt
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.in_handler = False
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        """Stop the handler: ``canceled`` (from outside), ``finished`` or ``shutdown``.

        An ``async def`` handler is cancelled; a plain one cannot be
        interrupted and sees :func:`catbird.cancel_requested`.
        """
        if self.stop_reason is None:
            self.stop_reason = reason
        self.ctx.canceled = True
        if self.in_handler and self.task is not None:
            self.task.cancel()


class CircuitBreaker:
    """The per-handler circuit breaker (closed → open → half-open → closed)."""

    def __init__(self, threshold: int, open_timeout: float) -> None:
        self.threshold = threshold
        self.open_timeout = open_timeout
        self.failures = 0
        self.open_until: float | None = None
        self.probing = False

    def is_half_open(self, now: float) -> bool:
        return self.open_until is not None and now >= self.open_until

    def wait_time(self, now: float) -> float:
        """Seconds until claims may resume (0: now)."""
        if self.open_until is None:
            return 0.0
        return max(0.0, self.open_until - now)

    def record_success(self) -> None:
        self.failures = 0
        self.open_until = None
        self.probing = False

    def record_failure(self, now: float) -> None:
        self.failures += 1
        half_open_probe = self.probing or self.is_half_open(now)
        self.probing = False
        if half_open_probe or self.failures >= self.threshold:
            if self.open_until is None or now >= self.open_until:
                log.warning(
                    "circuit breaker open for %.3g s after %d consecutive failure(s)",
                    self.open_timeout,
                    self.failures,
                )
            self.open_until = now + self.open_timeout


#: What calling a handler came to: ``ok`` (payload: output JSON), ``error``
#: (payload: message), ``cancel`` (payload: reason; the handler called
#: catbird.cancel()) or ``stopped`` (the worker cancelled the call; nothing
#: to record); with the exception the handler raised, if any.
Outcome = tuple[str, str | None, BaseException | None]


class Lane(abc.ABC):
    """One handler's claim loop state: what it holds and how it reports outcomes.

    Subclasses say how to claim, start and report (task runs, on-fail runs,
    flow steps and items); :meth:`execute` is the same for all.
    """

    kind = ""

    def __init__(
        self, host: LaneHost, name: str, handler: Handler, options: HandlerOptions | None = None
    ) -> None:
        self.host = host
        self.name = name
        self.handler = handler
        self.options: HandlerOptions = options or handler.options
        self.inflight: dict[int, Run] = {}
        self.wake = asyncio.Event()
        self.slot_free = asyncio.Event()
        cb = self.options.circuit_breaker
        self.breaker = CircuitBreaker(cb.failure_threshold, cb.open_timeout) if cb else None
        self.encode_output = True

    def __repr__(self) -> str:
        return f"{self.kind} handler of task {self.name!r}"

    @property
    def uses_threads(self) -> bool:
        """Whether the handler runs in a thread (a plain function)."""
        return not self.handler.is_async

    @abc.abstractmethod
    async def claim(self, quantity: int) -> Sequence[Any]:
        """Claim up to ``quantity`` runs."""

    @abc.abstractmethod
    def start(self, claim: Any) -> tuple[Run, tuple[Any, ...] | BaseException]:
        """The run of a claim and the handler's arguments (or why there are none)."""

    @abc.abstractmethod
    async def succeeded(self, run: Run, output_json: str | None) -> None:
        """Record that the handler returned (``output_json``: its output)."""

    @abc.abstractmethod
    async def failed(self, run: Run, failure: Failure) -> None:
        """Record that the handler failed (the engine decides whether it is retried)."""

    @abc.abstractmethod
    async def cancel_run(self, run: Run, reason: str | None) -> None:
        """The handler cancelled its own run (:func:`catbird.cancel`)."""

    async def stopped(self, run: Run) -> None:  # noqa: B027 - an optional hook
        """The worker stopped the handler (``run.stop_reason``); nothing is recorded."""

    def wake_for_retry(self, attempt: int) -> None:
        """Claim again when a retry the engine just scheduled can be due.

        The engine picks the delay in ``[min, min(max, min * 2**(attempt-1))]``
        of the handler's backoff; the claim loop is woken at both ends of that
        range, so a retry sooner than the poll interval is not left waiting
        for the next poll."""
        low, high = self.options.backoff
        cap = min(high, low * float(2 ** min(max(attempt - 1, 0), 60)))
        loop = asyncio.get_running_loop()
        for delay in {low, max(low, cap)}:
            loop.call_later(delay + RETRY_WAKE_MARGIN, self.wake.set)

    def release_query(self, runs: list[Run]) -> _sql.Query[Any] | None:
        """The statement that hands ``runs`` back to be claimed at once
        (shutdown); ``None``: this lane cannot."""
        return None

    async def release(self, runs: list[Run]) -> int:
        """Hand back the runs this worker will not finish (shutdown): another
        worker can claim them at once. Returns how many were handed back."""
        query = self.release_query(runs) if runs else None
        if query is None:
            return 0
        try:
            await asyncio.wait_for(self.host.client.execute(query), 2.0)
        except Exception as exc:
            log.warning(
                "%r: handing back %d run(s) failed (%s); they are claimed again when their"
                " lease passes",
                self,
                len(runs),
                describe(exc),
            )
            return 0
        return len(runs)

    async def execute(self, run: Run, args: tuple[Any, ...] | BaseException) -> None:
        """Call the handler for ``run`` and report the outcome (the run's asyncio task)."""
        enter_run(run.ctx)
        status: str
        payload: str | None
        exc: BaseException | None
        retryable = True
        try:
            if isinstance(args, BaseException):
                # An input the handler cannot decode fails the same way on
                # every attempt: not retried.
                status, payload, exc = "error", f"invalid input: {describe(args)}", args
                retryable = False
            else:
                status, payload, exc = await self.invoke(run, args)
        finally:
            del self.inflight[run.id]
            self.slot_free.set()
        breaker = self.breaker
        try:
            if status == "ok":
                if breaker is not None:
                    breaker.record_success()
                await self.succeeded(run, payload)
            elif status == "error":
                if breaker is not None:
                    breaker.record_failure(time.monotonic())
                timed_out = isinstance(exc, TimeoutError | asyncio.CancelledError)
                if exc is not None and not timed_out:
                    log.debug("%r run %d raised", self, run.id, exc_info=exc)
                await self.failed(
                    run,
                    failure_of(
                        payload or "unknown error",
                        None if timed_out else exc,
                        retryable=retryable,
                    ),
                )
            elif status == "cancel":
                if breaker is not None:
                    breaker.probing = False
                await self.cancel_run(run, payload)
            else:  # stopped: canceled elsewhere, or cancelled by the shutdown
                if breaker is not None:
                    breaker.probing = False
                await self.stopped(run)
        except Abandoned:
            pass
        except Exception:
            log.exception("%r run %d: recording the outcome failed", self, run.id)

    async def invoke(self, run: Run, args: tuple[Any, ...]) -> Outcome:
        """Call the handler within its timeout (see :data:`Outcome`)."""
        timeout = self.options.timeout
        handler = self.handler
        run.in_handler = True
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                if handler.is_async:
                    value = await handler.fn(*args)
                else:
                    ok, value = await self.host.handler_threads.call(handler.fn, *args)
                    if not ok:
                        if isinstance(value, CancelRun):
                            return "cancel", value.reason, None
                        return "error", describe(value), value
                    if inspect.isawaitable(value):
                        value = await value
        except CancelRun as exc:
            return "cancel", exc.reason, None
        except TimeoutError as exc:
            if cm.expired():
                return "error", f"timed out after {timeout:g} s", exc
            return "error", describe(exc), exc
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
            if run.stop_reason is not None:
                return "stopped", run.stop_reason, None
            return (
                "error",
                describe(exc) if str(exc) else "CancelledError: the handler was cancelled",
                exc,
            )
        except BaseException as exc:  # handler code: SystemExit, KeyboardInterrupt, ...
            return "error", describe(exc), exc
        finally:
            run.in_handler = False
        if not self.encode_output:
            return "ok", None, None
        try:
            return "ok", dumps(value), None
        except (TypeError, ValueError) as exc:
            return "error", f"the output is not JSON-serialisable: {exc}", exc

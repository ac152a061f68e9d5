"""The worker: claims runs, executes handlers, reports outcomes.

::

    worker = catbird.Worker(dsn, tasks=[send_email, resize])
    worker.run()                         # blocking; SIGINT/SIGTERM stop it gracefully

    # or inside an asyncio program
    await worker.start()
    ...
    await worker.stop()

Everything the worker decides is decided in SQL (which run is next, whether a
failure is retried and when, what a lease is); the worker only moves work
between the engine and the handlers:

* **Claims.** Per handler, a loop claims up to ``min(batch_size, free
  slots)`` runs with ``cb_claim_tasks(hide_for = lease)`` and starts one
  asyncio task per run (``async def`` handlers run on the loop, plain ones in
  a thread). It claims again at once while claims come back full, and
  otherwise sleeps until a ``catbird.task.queued`` event for its task arrives
  on the worker's LISTEN connection, or ``poll_interval`` passes.
* **Outcomes** carry the claim's attempt number, the fencing token: an
  outcome of a run whose lease was lost and that was claimed again is ignored
  by the engine. Completions are batched per task (``cb_complete_tasks``),
  flushed when ``batch_size`` are waiting or a few milliseconds after the
  first; failures go through ``cb_fail_task`` with the handler's retry policy
  and the engine re-queues the run with a full-jitter delay or fails it.
  A handler's output is serialised to JSON when it returns, so an output
  JSON cannot represent fails that run with a clear message. A call that
  runs longer than ``timeout`` fails with "timed out after X s". Any
  exception counts as a failure, ``BaseException`` included (``SystemExit``,
  ``KeyboardInterrupt`` or ``asyncio.CancelledError`` raised by handler code
  do not stop the worker).
* **Leases.** Every ``lease / 3`` seconds the ids of runs still in flight
  (or whose outcome is not recorded yet) get their lease renewed with
  ``cb_hide_tasks``, so long handlers are not rescued while alive; a run of
  a worker that died becomes claimable when its lease passes.
* **Cancellation.** ``catbird.task.canceled`` for a run the worker holds
  cancels an ``async def`` handler (``CancelledError``) and sets
  :func:`catbird.cancel_requested` for a plain one; no outcome is recorded.
  A handler can cancel its own run with :func:`catbird.cancel`.
* **Circuit breaker.** After ``failure_threshold`` consecutive failures a
  handler's claims pause for ``open_timeout``; then a single run is tried and
  its success closes the breaker again.
* **On-fail handlers** run for runs that failed for good
  (``cb_claim_task_on_fail``), with their own options; a failing on-fail
  handler is retried with the same full-jitter backoff, computed here.
* **Heartbeats.** The worker registers (``cb_worker_started``), heartbeats
  every ``heartbeat_interval`` and registers again when the engine no longer
  knows it; it unregisters on stop.
* **Shutdown.** ``stop()`` (or SIGINT/SIGTERM under :meth:`run`) stops
  claiming, gives in-flight handlers ``shutdown_timeout`` seconds, then
  cancels the ``async def`` ones and makes their runs claimable at once.
  Threads of plain handlers cannot be interrupted: their results are dropped
  and their runs are claimed again when the lease passes. Pending outcomes
  are flushed before the worker unregisters. A second signal skips the
  grace period.
* **Database outages** never stop the worker: every statement is retried
  with exponential backoff (outcomes included, which the fencing makes safe),
  and the LISTEN connection reconnects.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import logging
import queue
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .. import _sql
from .._sql import Query
from ..client.client_async import AsyncClient
from ..codec import dumps
from ..context import RunContext, _current
from ..definitions import Handler, HandlerOptions, Task, definition_args
from ..definitions.flows import Flow
from ..errors import CancelRun, InvalidArgument, ObjectInUse
from ..models import OnFailClaim, TaskClaim, TaskFailure

if TYPE_CHECKING:
    from .flows import FlowRuntime

__all__ = ["Worker"]

T = TypeVar("T")

log = logging.getLogger("catbird.worker")

#: Errors after which a statement is simply tried again: a lost or refused
#: connection, a pool without a free connection, a serialization failure.
_TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.TransactionRollback,
)

#: How long stop() keeps trying to record outcomes after the grace period.
_OUTCOME_GRACE = 5.0

#: The shortest lease: used to hand runs back on shutdown.
_RELEASE = 0.001

#: Completion batches of one task in flight at once.
_FLUSHES = 2


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class _Abandoned(Exception):
    """An outcome could not be recorded before the worker gave up (shutdown)."""


class _Backoff:
    """Exponential backoff with jitter for reconnecting (0.1 s doubling to ``high``)."""

    def __init__(self, low: float = 0.1, high: float = 5.0) -> None:
        self.low, self.high = low, high
        self.failures = 0

    def next(self) -> float:
        delay = min(self.high, self.low * 2 ** min(self.failures, 16))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class _Breaker:
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


class _ThreadPool:
    """Daemon threads for plain (sync) handlers.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, so
    one stuck handler would keep a stopped worker process alive. These are
    daemon threads, and a result that arrives after its waiter was cancelled
    is dropped.
    """

    def __init__(self, max_threads: int) -> None:
        self._max = max(1, max_threads)
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[tuple[bool, Any]]:
        """Run ``fn`` in a thread; the future gets ``(True, result)`` or ``(False, exception)``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()

        def settle(outcome: tuple[bool, Any]) -> None:
            if not future.done():
                future.set_result(outcome)

        def job() -> None:
            # The outcome travels as a result, exceptions included: raising a
            # BaseException such as GeneratorExit through an awaited future
            # upsets CPython 3.11.
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:  # handler code: everything is an outcome
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # loop closed: nobody waits
                loop.call_soon_threadsafe(settle, outcome)

        with self._lock:
            self._busy += 1
            spawn = self._busy > self._threads and self._threads < self._max
            if spawn:
                self._threads += 1
        if spawn:
            threading.Thread(target=self._work, name="catbird-handler", daemon=True).start()
        self._queue.put(job)
        return future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                with self._lock:
                    self._threads -= 1
                return
            try:
                job()
            finally:
                with self._lock:
                    self._busy -= 1

    def shutdown(self) -> None:
        """Let idle threads exit (busy ones end with their handler)."""
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)


class _Run:
    """One claimed run while the worker holds it."""

    __slots__ = ("attempt", "ctx", "id", "in_handler", "stop_reason", "task")

    def __init__(self, run_id: int, attempt: int, ctx: RunContext) -> None:
        self.id = run_id
        self.attempt = attempt
        self.ctx = ctx
        self.task: asyncio.Task[None] | None = None
        self.in_handler = False
        self.stop_reason: str | None = None


class _Lane(abc.ABC):
    """One handler's claim loop state: what it holds and how it reports outcomes.

    Subclasses say how to claim, start, and report (task runs, on-fail runs,
    flow steps and items)."""

    kind = ""

    def __init__(self, worker: Worker, task: Task[Any, Any], handler: Handler) -> None:
        self.worker = worker
        self.task = task
        self.name = task.name
        self.handler = handler
        self.options: HandlerOptions = handler.options
        self.inflight: dict[int, _Run] = {}
        self.wake = asyncio.Event()
        self.slot_free = asyncio.Event()
        cb = self.options.circuit_breaker
        self.breaker = _Breaker(cb.failure_threshold, cb.open_timeout) if cb else None
        self.encode_output = True

    def __repr__(self) -> str:
        return f"{self.kind} handler of task {self.name!r}"

    @abc.abstractmethod
    async def claim(self, quantity: int) -> Sequence[Any]:
        """Implemented by every kind of lane."""

    @abc.abstractmethod
    def start(self, claim: Any) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        """Implemented by every kind of lane."""

    @abc.abstractmethod
    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        """Implemented by every kind of lane."""

    @abc.abstractmethod
    async def failed(self, run: _Run, message: str) -> None:
        """Implemented by every kind of lane."""

    @abc.abstractmethod
    async def cancel_run(self, run: _Run, reason: str | None) -> None:
        """Implemented by every kind of lane."""

    def outcome_done(self, run: _Run) -> None:  # noqa: B027 - an optional hook
        """The run's outcome is recorded (or abandoned)."""

    async def stopped(self, run: _Run) -> None:  # noqa: B027 - an optional hook
        """The worker stopped the handler (``run.stop_reason``); flow lanes report it."""


class _TaskLane(_Lane):
    kind = "task"

    def __init__(self, worker: Worker, task: Task[Any, Any], handler: Handler) -> None:
        super().__init__(worker, task, handler)
        # Runs whose handler returned but whose outcome is not recorded yet:
        # their leases are renewed like those of running ones.
        self.pending: dict[int, int] = {}  # run id -> attempt
        # Runs whose completion statement is in flight: their leases are not
        # renewed meanwhile, so renewal and completion never wait on each
        # other's row locks (two multi-row updates could deadlock).
        self.flushing: set[int] = set()
        self.buffer: list[tuple[int, str, int]] = []
        self.flush_wake = asyncio.Event()
        self.buffer_full = asyncio.Event()
        self.flush_size = max(self.options.batch_size, 1)
        # A bound on one completion statement (the buffer grows while flushes
        # are in flight); the rest waits for the next one.
        self.max_flush = max(4 * self.flush_size, 400)
        self.draining = False
        self.decode = handler.params[0].codec.decode

    async def claim(self, quantity: int) -> Sequence[TaskClaim]:
        return await self.worker._claims.execute(
            _sql.claim_tasks(self.name, quantity=quantity, hide_for=self.worker.lease)
        )

    def start(self, claim: TaskClaim) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        ctx = RunContext(
            "task", self.name, claim.id, claim.attempts, claim.headers, claim.concurrency_key
        )
        run = _Run(claim.id, claim.attempts, ctx)
        try:
            return run, (self.decode(claim.input),)
        except Exception as exc:
            return run, exc

    def leases(self) -> tuple[list[int], list[int]]:
        """Ids and attempts of the runs whose leases this worker renews."""
        ids = list(self.inflight)
        attempts = [r.attempt for r in self.inflight.values()]
        for run_id, attempt in self.pending.items():
            if run_id not in self.flushing:
                ids.append(run_id)
                attempts.append(attempt)
        return ids, attempts

    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        self.pending[run.id] = run.attempt
        self.buffer.append((run.id, output_json or "null", run.attempt))
        self.flush_wake.set()
        if len(self.buffer) >= self.flush_size:
            self.buffer_full.set()

    async def failed(self, run: _Run, message: str) -> None:
        opts = self.options
        low, high = opts.backoff_ms
        self.pending[run.id] = run.attempt
        try:
            status = await self.worker._retrying(
                _sql.fail_task(
                    self.name,
                    run.id,
                    message,
                    attempt=run.attempt,
                    max_retries=opts.max_retries,
                    backoff_min=low,
                    backoff_max=high,
                ),
                f"record the failure of run {run.id} of task {self.name!r}",
            )
        finally:
            self.pending.pop(run.id, None)
        if status == "queued":
            log.info(
                "task %r run %d attempt %d failed, retrying: %s",
                self.name,
                run.id,
                run.attempt,
                message,
            )
        elif status == "failed":
            log.warning(
                "task %r run %d failed after %d attempt(s): %s",
                self.name,
                run.id,
                run.attempt,
                message,
            )
        else:
            log.info(
                "task %r run %d: failure not recorded (lease lost or run canceled)",
                self.name,
                run.id,
            )

    async def cancel_run(self, run: _Run, reason: str | None) -> None:
        self.pending[run.id] = run.attempt
        try:
            await self.worker._retrying(
                _sql.cancel_task(self.name, run.id, reason=reason),
                f"cancel run {run.id} of task {self.name!r}",
            )
        finally:
            self.pending.pop(run.id, None)
        log.info("task %r run %d canceled by its handler: %s", self.name, run.id, reason)

    async def flush_loop(self) -> None:
        """Record buffered completions in batches (one statement per batch).

        Up to ``_FLUSHES`` batches are in flight at once (on different
        connections), so their commits can share a WAL flush; while both are
        busy, completions keep collecting into a bigger next batch.
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
                    task = asyncio.create_task(self._complete(batch))
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

    async def _complete(self, batch: list[tuple[int, str, int]]) -> None:
        ids = [b[0] for b in batch]
        self.flushing.update(ids)
        try:
            done = await self.worker._retrying(
                _sql.complete_tasks_json(
                    self.name, ids, [b[1] for b in batch], [b[2] for b in batch]
                ),
                f"record {len(batch)} completion(s) of task {self.name!r}",
            )
        except psycopg.DataError:
            # One output the server refuses (it passed json.dumps): find it.
            done = []
            for item in batch:
                done.extend(await self._complete_one(item))
        except _Abandoned:
            done = []
        except Exception:
            log.exception("task %r: recording %d completion(s) failed", self.name, len(batch))
            done = []
        finally:
            self.flushing.difference_update(ids)
            for run_id in ids:
                self.pending.pop(run_id, None)
        if len(done) < len(batch):
            log.info(
                "task %r: %d of %d completion(s) not recorded (lease lost or run canceled)",
                self.name,
                len(batch) - len(done),
                len(batch),
            )

    async def _complete_one(self, item: tuple[int, str, int]) -> list[int]:
        run_id, text, attempt = item
        try:
            return await self.worker._retrying(
                _sql.complete_tasks_json(self.name, [run_id], [text], [attempt]),
                f"record the completion of run {run_id} of task {self.name!r}",
            )
        except psycopg.DataError as exc:
            run = _Run(run_id, attempt, RunContext("task", self.name, run_id, attempt))
            await self.failed(run, f"the output could not be stored: {_describe(exc)}")
        except Exception:
            log.exception("task %r: recording the completion of run %d failed", self.name, run_id)
        return []


class _OnFailLane(_Lane):
    kind = "on-fail"

    def __init__(self, worker: Worker, task: Task[Any, Any], handler: Handler) -> None:
        super().__init__(worker, task, handler)
        self.encode_output = False
        self.decode = handler.params[0].codec.decode
        timeout = self.options.timeout
        # There is no lease renewal for on-fail claims: hide them long enough
        # for one call to run to its timeout.
        self.hide_for = worker.lease + (timeout or worker.lease)

    async def claim(self, quantity: int) -> Sequence[OnFailClaim]:
        return await self.worker._claims.execute(
            _sql.claim_task_on_fail(self.name, quantity=quantity, hide_for=self.hide_for)
        )

    def start(self, claim: OnFailClaim) -> tuple[_Run, tuple[Any, ...] | BaseException]:
        ctx = RunContext(
            "on_fail", self.name, claim.id, claim.on_fail_attempts, None, claim.concurrency_key
        )
        run = _Run(claim.id, claim.on_fail_attempts, ctx)
        failure = TaskFailure(
            task_name=self.name,
            task_run_id=claim.id,
            error_message=claim.error_message or "",
            attempts=claim.attempts,
            on_fail_attempts=claim.on_fail_attempts,
            started_at=claim.started_at,
            failed_at=claim.failed_at,
            concurrency_key=claim.concurrency_key,
        )
        try:
            return run, (self.decode(claim.input), failure)
        except Exception as exc:
            return run, exc

    async def succeeded(self, run: _Run, output_json: str | None) -> None:
        await self.worker._retrying(
            _sql.complete_task_on_fail(self.name, run.id),
            f"record the on-fail completion of run {run.id} of task {self.name!r}",
        )

    async def failed(self, run: _Run, message: str) -> None:
        exhausted = run.attempt > self.options.max_retries
        delay = _sql.ms(self.options.retry_delay(run.attempt))
        await self.worker._retrying(
            _sql.fail_task_on_fail(
                self.name, run.id, message, retry_exhausted=exhausted, retry_delay=delay
            ),
            f"record the on-fail failure of run {run.id} of task {self.name!r}",
        )
        log.warning(
            "on-fail handler of task %r run %d attempt %d failed%s: %s",
            self.name,
            run.id,
            run.attempt,
            " for good" if exhausted else ", retrying",
            message,
        )

    async def cancel_run(self, run: _Run, reason: str | None) -> None:  # pragma: no cover
        await self.failed(run, "catbird.cancel() is not available in an on-fail handler")


class Worker:
    """Runs the handlers of tasks (see the module documentation).

    ``dsn_or_pool`` is a connection string (the worker opens its own pool) or
    a :class:`psycopg_pool.AsyncConnectionPool`. ``tasks`` are
    :class:`catbird.Task` objects with handlers; ``flows`` are
    :class:`catbird.Flow` objects, whose step, item and on-fail handlers run
    next to the tasks' (see :mod:`catbird.worker.flows`). Durations are seconds.

    With ``create_definitions`` (the default) the worker stores each task's
    definition when it starts (``cb_create_task``: idempotent; a definition
    that differs while runs are active is kept, with a warning).
    Claims and lease renewals go through connections with
    ``synchronous_commit = off`` (their commits do not wait for the WAL
    flush, which halves pickup latency on a busy disk): a claim lost in a
    server crash only makes its run claimable again, as at-least-once
    delivery allows. Outcomes (completions, failures, cancellations) always
    commit durably. ``durable_claims=True`` makes claims durable too.
    ``concurrency`` overrides every handler's own. ``flush_interval`` is how
    long a completion may wait to share its statement with others. Every
    ``gc_interval`` seconds (``None``: never) the worker runs the engine's
    bounded garbage collection, ``cb_gc()``.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        *,
        tasks: Iterable[Task[Any, Any]] = (),
        flows: Iterable[Any] = (),
        shutdown_timeout: float = 5.0,
        poll_interval: float = 1.0,
        lease: float = 30.0,
        heartbeat_interval: float = 10.0,
        concurrency: int | None = None,
        create_definitions: bool = True,
        flush_interval: float = 0.002,
        gc_interval: float | None = 300.0,
        durable_claims: bool = False,
        id: uuid.UUID | None = None,
    ) -> None:
        if isinstance(dsn_or_pool, AsyncConnectionPool):
            self._pool: AsyncConnectionPool[Any] | None = dsn_or_pool
            self._dsn = ""
        elif isinstance(dsn_or_pool, str):
            self._pool = None
            self._dsn = dsn_or_pool
        else:
            raise TypeError(
                "Worker() takes a DSN string or a psycopg_pool.AsyncConnectionPool,"
                f" not {type(dsn_or_pool).__name__}"
            )
        self.tasks: list[Task[Any, Any]] = list(tasks)
        self.flows: list[Flow] = list(flows)
        for f in self.flows:
            if not isinstance(f, Flow):
                raise TypeError(f"flows must be catbird.Flow objects, got {f!r}")
            f.definition()  # a flow without steps (or with a bad output_priority) fails here
        if len({f.name for f in self.flows}) < len(self.flows):
            raise InvalidArgument("a flow is given twice")
        seen: set[str] = set()
        for t in self.tasks:
            if not isinstance(t, Task):
                raise TypeError(f"tasks must be catbird.Task objects, got {t!r}")
            if t.handler is None and t.on_fail_handler is None:
                raise InvalidArgument(f"task {t.name!r} has no handler for a worker to run")
            if t.name in seen:
                raise InvalidArgument(f"task {t.name!r} is given twice")
            seen.add(t.name)
        self.shutdown_timeout = self._seconds(shutdown_timeout, "shutdown_timeout", zero=True)
        self.poll_interval = self._seconds(poll_interval, "poll_interval")
        self.lease = self._seconds(lease, "lease")
        self.heartbeat_interval = self._seconds(heartbeat_interval, "heartbeat_interval")
        self.flush_interval = self._seconds(flush_interval, "flush_interval", zero=True)
        self.gc_interval = (
            None if gc_interval is None else self._seconds(gc_interval, "gc_interval")
        )
        if concurrency is not None and (isinstance(concurrency, bool) or concurrency < 1):
            raise InvalidArgument(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.concurrency = concurrency
        self.create_definitions = create_definitions
        self.durable_claims = durable_claims
        self.id = id or uuid.uuid4()

        self._started = False
        self._stopped = False
        self._stopping = False
        self._abandon = False
        self._registered = False
        self._lanes: list[_Lane] = []
        self._task_lanes: dict[str, _TaskLane] = {}
        self._on_fail_lanes: list[_OnFailLane] = []
        self._flow_runtime: FlowRuntime | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._claim_loops: list[asyncio.Task[None]] = []
        self._flush_loops: list[asyncio.Task[None]] = []
        self._run_tasks: set[asyncio.Task[None]] = set()
        self._released: dict[str, list[tuple[int, int]]] = {}
        self._owns_pool = False
        self._claims_pool: AsyncConnectionPool[Any] | None = None
        self._threads: _ThreadPool | None = None
        self._stop_requested: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def _seconds(value: float, what: str, *, zero: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidArgument(f"{what} must be a number of seconds, got {value!r}")
        if value < 0 or (value == 0 and not zero):
            raise InvalidArgument(f"{what} must be {'>= 0' if zero else '> 0'}, got {value!r}")
        return float(value)

    def __repr__(self) -> str:
        return f"Worker(id={self.id}, tasks={[t.name for t in self.tasks]})"

    @property
    def running(self) -> bool:
        """Started and not stopped yet."""
        return self._started and not self._stopped

    # ------------------------------------------------------------------
    # lifecycle

    def run(self) -> None:
        """Run until SIGINT or SIGTERM (blocking), then stop gracefully.

        A second signal skips what remains of the grace period.
        """
        asyncio.run(self._serve_with_signals())

    async def _serve_with_signals(self) -> None:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        installed: list[signal.Signals] = []
        for sig in signals:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        try:
            await self.serve()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested is not None and self._stop_requested.is_set():
            log.warning(
                "second %s: stopping without waiting for handlers", signal.Signals(sig).name
            )
            if self._force is not None:
                self._force.set()
            return
        log.info(
            "%s: stopping (grace period %.3g s for in-flight handlers)",
            signal.Signals(sig).name,
            self.shutdown_timeout,
        )
        self.request_stop()

    async def serve(self) -> None:
        """Start, run until :meth:`request_stop` (or :meth:`stop`), then stop."""
        await self.start()
        try:
            assert self._stop_requested is not None
            await self._stop_requested.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        """Ask a running :meth:`serve`/:meth:`run` to stop (callable from any thread)."""
        loop, event = self._loop, self._stop_requested
        if loop is None or event is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, register and start the claim loops; returns once they run.

        A database that cannot be reached yet is not an error: the worker
        keeps trying in the background. A definition the engine rejects
        (e.g. a malformed condition) is.
        """
        if self._started:
            raise RuntimeError("this worker was already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self._ready = asyncio.Event()
        flow_connections = (0, 0)
        if self.flows:
            from .flows import FlowRuntime

            self._flow_runtime = FlowRuntime(self, self.flows)
            flow_connections = self._flow_runtime.connections

        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._dsn,
                min_size=1,
                max_size=4 + 3 * len(self.tasks) + flow_connections[0],
                kwargs={"autocommit": True, "application_name": "catbird-worker"},
                timeout=5.0,
                reconnect_timeout=24 * 3600.0,
                open=False,
                name="catbird-worker",
            )
            self._owns_pool = True
            await self._pool.open(wait=False)
        elif self._pool.closed:
            self._owns_pool = True
            await self._pool.open(wait=False)
        self._client = AsyncClient(self._pool)
        self._claims = self._client
        if not self.durable_claims:
            self._claims_pool = AsyncConnectionPool(
                self._pool.conninfo,
                min_size=1,
                max_size=2 + 2 * len(self.tasks) + flow_connections[1],
                kwargs=self._pool.kwargs,
                configure=self._configure_claims_connection,
                timeout=5.0,
                reconnect_timeout=24 * 3600.0,
                open=False,
                name="catbird-worker-claims",
            )
            await self._claims_pool.open(wait=False)
            self._claims = AsyncClient(self._claims_pool)

        sync_slots = 0
        for t in self.tasks:
            lane_classes: tuple[tuple[Handler | None, type[_Lane]], ...] = (
                (t.handler, _TaskLane),
                (t.on_fail_handler, _OnFailLane),
            )
            for handler, lane_cls in lane_classes:
                if handler is None:
                    continue
                if self.concurrency is not None:
                    handler = Handler(
                        handler.fn,
                        handler.options.replace(concurrency=self.concurrency),
                        handler.params,
                        handler.output,
                        handler.is_async,
                    )
                lane = lane_cls(self, t, handler)
                self._lanes.append(lane)
                if isinstance(lane, _TaskLane):
                    self._task_lanes[t.name] = lane
                elif isinstance(lane, _OnFailLane):
                    self._on_fail_lanes.append(lane)
                if not handler.is_async:
                    sync_slots += handler.options.concurrency
        if self._flow_runtime is not None:
            self._lanes.extend(self._flow_runtime.lanes)
            sync_slots += self._flow_runtime.sync_slots
        self._threads = _ThreadPool(2 * sync_slots + 4)

        try:
            await self._register()
            self._registered = True
        except _TRANSIENT as exc:
            log.warning(
                "database not reachable yet (%s); retrying in the background", _describe(exc)
            )
        except BaseException:
            await self._close_pool()
            raise

        spawn = asyncio.create_task
        self._loops.append(spawn(self._listen_loop(), name="catbird-listen"))
        self._loops.append(spawn(self._heartbeat_loop(), name="catbird-heartbeat"))
        self._loops.append(spawn(self._lease_loop(), name="catbird-lease"))
        if self._flow_runtime is not None:
            self._loops.append(spawn(self._flow_runtime.lease_loop(), name="catbird-flow-lease"))
            for i, flush in enumerate(self._flow_runtime.flush_loops()):
                self._flush_loops.append(spawn(flush, name=f"catbird-flow-flush-{i}"))
        if self.gc_interval is not None:
            self._loops.append(spawn(self._gc_loop(self.gc_interval), name="catbird-gc"))
        for lane in self._lanes:
            self._claim_loops.append(
                spawn(self._claim_loop(lane), name=f"catbird-claim-{lane.name}")
            )
            if isinstance(lane, _TaskLane):
                self._flush_loops.append(
                    spawn(lane.flush_loop(), name=f"catbird-flush-{lane.name}")
                )
        log.info(
            "worker %s started: %s",
            self.id,
            ", ".join(repr(lane) for lane in self._lanes) or "no handlers",
        )

    async def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully: see the module documentation.

        ``timeout`` overrides ``shutdown_timeout`` for this call. Idempotent.
        """
        if not self._started or self._stopped:
            return
        self._stopped = True
        self._stopping = True
        assert self._stop_requested is not None and self._force is not None
        self._stop_requested.set()
        grace = self.shutdown_timeout if timeout is None else max(0.0, timeout)
        loop = asyncio.get_running_loop()
        for lane in self._lanes:
            lane.wake.set()
            lane.slot_free.set()
        if self._ready is not None:
            self._ready.set()
        await asyncio.gather(*self._claim_loops, return_exceptions=True)

        # 1. the grace period: in-flight handlers may finish
        deadline = loop.time() + grace
        await self._wait_runs(deadline, self._force)
        # 2. stop what still runs; async handlers are cancelled, threads are left
        for lane in self._lanes:
            for run in list(lane.inflight.values()):
                self._stop_run(run, "shutdown")
        # 3. outcomes: let them be recorded, within bounds
        await self._wait_runs(loop.time() + _OUTCOME_GRACE, None)
        for lane in self._lanes:
            if isinstance(lane, _TaskLane):
                lane.draining = True
                lane.flush_wake.set()
        if self._flow_runtime is not None:
            self._flow_runtime.drain()
        if self._flush_loops:
            await asyncio.wait(self._flush_loops, timeout=_OUTCOME_GRACE)
        self._abandon = True  # retries of outcomes stop now
        left = [t for t in (*self._run_tasks, *self._flush_loops) if not t.done()]
        if left:
            await asyncio.wait(left, timeout=1.0)
        for t in left:
            t.cancel()
        await asyncio.gather(*self._run_tasks, *self._flush_loops, return_exceptions=True)
        # 4. hand back runs whose async handler was cancelled by the shutdown
        for name, held in self._released.items():
            ids, attempts = [h[0] for h in held], [h[1] for h in held]
            release = _sql.hide_tasks(name, ids, hide_for=_RELEASE, attempts=attempts)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.execute(release), 2.0)
                log.info("task %r: released %d run(s) cancelled by the shutdown", name, len(ids))
        # 5. background loops, registry, connections
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.execute(_sql.worker_stopped(self.id)), 2.0)
        await self._close_pool()
        if self._threads is not None:
            self._threads.shutdown()
        log.info("worker %s stopped", self.id)

    async def _wait_runs(self, deadline: float, force: asyncio.Event | None) -> None:
        loop = asyncio.get_running_loop()
        while self._run_tasks:
            remaining = deadline - loop.time()
            if remaining <= 0 or (force is not None and force.is_set()):
                return
            waiters: set[asyncio.Future[Any]] = set(self._run_tasks)
            force_wait = asyncio.ensure_future(force.wait()) if force is not None else None
            if force_wait is not None:
                waiters.add(force_wait)
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if force_wait is not None:
                    force_wait.cancel()

    @staticmethod
    async def _configure_claims_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        await AsyncClient(conn).execute(_sql.async_commit())
        if not conn.autocommit:
            await conn.commit()  # the pool wants its connections idle

    async def _close_pool(self) -> None:
        if self._claims_pool is not None:
            with contextlib.suppress(Exception):
                await self._claims_pool.close(timeout=2.0)
        if self._owns_pool and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close(timeout=2.0)

    # ------------------------------------------------------------------
    # database access

    async def _retrying(self, query: Query[T], what: str) -> T:
        """Execute ``query``, retrying transient errors until it succeeds.

        Raises :class:`_Abandoned` when the worker gives up (end of shutdown)
        and any non-transient error as it is.
        """
        backoff = _Backoff()
        while True:
            try:
                return await self._client.execute(query)
            except _TRANSIENT as exc:
                if self._abandon:
                    log.warning("gave up trying to %s: %s", what, _describe(exc))
                    raise _Abandoned(what) from exc
                delay = backoff.next()
                level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                log.log(level, "cannot %s (%s); retrying in %.2f s", what, _describe(exc), delay)
                await asyncio.sleep(delay)

    async def _register(self) -> None:
        if self.create_definitions:
            for t in self.tasks:
                args = definition_args(
                    t, description=None, condition=None, retention_period=None, on_fail=None
                )
                try:
                    await self._client.execute(_sql.create_task(t.name, **args))
                except ObjectInUse as exc:
                    log.warning(
                        "task %r: the stored definition differs from this one and runs are"
                        " active, so it is kept (%s)",
                        t.name,
                        exc.message,
                    )
            if self._flow_runtime is not None:
                await self._flow_runtime.create_definitions()
        assert self._ready is not None
        self._ready.set()
        await self._client.execute(
            _sql.worker_started(
                self.id,
                task_handlers=[{"task_name": lane.name} for lane in self._task_lanes.values()],
                step_handlers=(
                    self._flow_runtime.step_handlers() if self._flow_runtime is not None else []
                ),
            )
        )

    # ------------------------------------------------------------------
    # loops

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up when the worker stops."""
        assert self._stop_requested is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def _claim_loop(self, lane: _Lane) -> None:
        assert self._ready is not None
        await self._ready.wait()
        backoff = _Backoff()
        opts = lane.options
        breaker = lane.breaker
        while not self._stopping:
            limit = opts.concurrency
            if breaker is not None:
                now = time.monotonic()
                wait = breaker.wait_time(now)
                if wait > 0:
                    await self._sleep(wait)
                    continue
                if breaker.is_half_open(now):
                    if breaker.probing:
                        lane.slot_free.clear()
                        await self._wait(lane.slot_free, self.poll_interval)
                        continue
                    limit = 1
            free = limit - len(lane.inflight)
            if free <= 0:
                lane.slot_free.clear()
                await lane.slot_free.wait()
                continue
            quantity = min(opts.batch_size, free)
            lane.wake.clear()
            try:
                claims = await lane.claim(quantity)
            except Exception as exc:
                delay = backoff.next()
                level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                log.log(
                    level, "%r: claim failed (%s); retrying in %.2f s", lane, _describe(exc), delay
                )
                await self._sleep(delay)
                continue
            if backoff.failures:
                log.info("%r: claiming again", lane)
                backoff.reset()
            if breaker is not None and claims and breaker.is_half_open(time.monotonic()):
                breaker.probing = True
            for claim in claims:
                self._start(lane, claim)
            if len(claims) < quantity:
                await self._wait(lane.wake, self.poll_interval)

    def _start(self, lane: _Lane, claim: Any) -> None:
        run, args = lane.start(claim)
        lane.inflight[run.id] = run
        task = asyncio.create_task(self._execute(lane, run, args))
        run.task = task
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _execute(self, lane: _Lane, run: _Run, args: tuple[Any, ...] | BaseException) -> None:
        _current.set(run.ctx)
        status: str
        payload: str | None
        exc: BaseException | None
        try:
            if isinstance(args, BaseException):
                status, payload, exc = "error", f"invalid input: {_describe(args)}", args
            else:
                status, payload, exc = await self._invoke(lane, run, args)
        finally:
            del lane.inflight[run.id]
            lane.slot_free.set()
        breaker = lane.breaker
        try:
            if status == "ok":
                if breaker is not None:
                    breaker.record_success()
                await lane.succeeded(run, payload)
            elif status == "error":
                if breaker is not None:
                    breaker.record_failure(time.monotonic())
                if exc is not None and not isinstance(exc, TimeoutError | asyncio.CancelledError):
                    log.debug("%r run %d raised", lane, run.id, exc_info=exc)
                await lane.failed(run, payload or "unknown error")
            elif status == "cancel":
                if breaker is not None:
                    breaker.probing = False
                await lane.cancel_run(run, payload)
            else:  # stopped: canceled elsewhere, or cancelled by the shutdown
                if breaker is not None:
                    breaker.probing = False
                if run.stop_reason == "shutdown" and lane.handler.is_async and lane.kind == "task":
                    self._released.setdefault(lane.name, []).append((run.id, run.attempt))
                await lane.stopped(run)
        except _Abandoned:
            pass
        except Exception:
            log.exception("%r run %d: recording the outcome failed", lane, run.id)

    async def _invoke(
        self, lane: _Lane, run: _Run, args: tuple[Any, ...]
    ) -> tuple[str, str | None, BaseException | None]:
        """Call the handler; returns (status, payload, exception).

        status: ``ok`` (payload: output JSON), ``error`` (payload: message),
        ``cancel`` (payload: reason; the handler called catbird.cancel()),
        ``stopped`` (the worker cancelled the call; nothing to record).
        """
        timeout = lane.options.timeout
        handler = lane.handler
        run.in_handler = True
        cm = asyncio.timeout(timeout)
        try:
            async with cm:
                if handler.is_async:
                    value = await handler.fn(*args)
                else:
                    assert self._threads is not None
                    ctx = contextvars.copy_context()
                    ok, value = await self._threads.submit(
                        functools.partial(ctx.run, handler.fn, *args)
                    )
                    if not ok:
                        if isinstance(value, CancelRun):
                            return "cancel", value.reason, None
                        return "error", _describe(value), value
                    if inspect.isawaitable(value):
                        value = await value
        except CancelRun as exc:
            return "cancel", exc.reason, None
        except TimeoutError as exc:
            if cm.expired():
                return "error", f"timed out after {timeout:g} s", exc
            return "error", _describe(exc), exc
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
            if run.stop_reason is not None:
                return "stopped", run.stop_reason, None
            return (
                "error",
                _describe(exc) if str(exc) else "CancelledError: the handler was cancelled",
                exc,
            )
        except BaseException as exc:  # handler code: SystemExit, KeyboardInterrupt, ...
            return "error", _describe(exc), exc
        finally:
            run.in_handler = False
        if not lane.encode_output:
            return "ok", None, None
        try:
            return "ok", dumps(value), None
        except (TypeError, ValueError) as exc:
            return "error", f"the output is not JSON-serialisable: {exc}", exc

    def _stop_run(self, run: _Run, reason: str) -> None:
        if run.stop_reason is None:
            run.stop_reason = reason
        run.ctx.canceled = True
        if run.in_handler and run.task is not None:
            run.task.cancel()

    async def _lease_loop(self) -> None:
        interval = self.lease / 3
        lanes = list(self._task_lanes.values())
        while True:
            await asyncio.sleep(interval)
            for lane in lanes:
                ids, attempts = lane.leases()
                if not ids:
                    continue
                try:
                    await self._claims.execute(
                        _sql.hide_tasks(lane.name, ids, hide_for=self.lease, attempts=attempts)
                    )
                except Exception as exc:
                    log.warning(
                        "task %r: renewing the lease of %d run(s) failed: %s",
                        lane.name,
                        len(ids),
                        _describe(exc),
                    )

    async def _gc_loop(self, interval: float) -> None:
        """The built-in periodic garbage collection (``cb_gc``), jittered across workers."""
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                counters = await self._client.execute(_sql.gc())
            except Exception as exc:
                log.warning("gc failed: %s", _describe(exc))
                continue
            removed = {k: v for k, v in counters.items() if v}
            if removed:
                log.info("gc: %s", ", ".join(f"{k}={v}" for k, v in sorted(removed.items())))

    async def _heartbeat_loop(self) -> None:
        backoff = _Backoff(high=max(5.0, self.heartbeat_interval))
        while True:
            try:
                if not self._registered:
                    await self._register()
                    self._registered = True
                    if backoff.failures:
                        log.info("worker %s registered", self.id)
                elif not await self._client.execute(_sql.worker_heartbeat(self.id)):
                    log.info("worker %s was unregistered (stale?); registering again", self.id)
                    self._registered = False
                    continue
                backoff.reset()
                delay = self.heartbeat_interval
            except Exception as exc:
                delay = backoff.next()
                level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                log.log(level, "heartbeat failed (%s); retrying in %.2f s", _describe(exc), delay)
            await asyncio.sleep(delay)

    async def _listen_loop(self) -> None:
        backoff = _Backoff()
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            delay = 0.0
            try:
                conninfo, kwargs = await self._listen_params()
                conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
                client = AsyncClient(conn)
                await client.execute(_sql.listen_events())
                if backoff.failures:
                    log.info("listening for events again")
                backoff.reset()
                # Events may have been missed while not listening.
                for lane in self._lanes:
                    lane.wake.set()
                while True:
                    async for note in conn.notifies(timeout=max(5.0, 5 * self.poll_interval)):
                        self._on_event(note.payload)
                    await client.execute(_sql.ping())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                level = logging.WARNING if backoff.failures == 1 else logging.DEBUG
                log.log(level, "event listener: %s; reconnecting in %.2f s", _describe(exc), delay)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)

    async def _listen_params(self) -> tuple[str, dict[str, Any]]:
        """Connection parameters of the LISTEN connection: the pool's, or the DSN."""
        if self._pool is None:
            return self._dsn, {"autocommit": True}
        conninfo: Any = self._pool.conninfo
        kwargs: Any = self._pool.kwargs
        if callable(conninfo):
            conninfo = conninfo()
        if inspect.isawaitable(conninfo):
            conninfo = await conninfo
        if callable(kwargs):
            kwargs = kwargs()
        if inspect.isawaitable(kwargs):
            kwargs = await kwargs
        return str(conninfo), {**(kwargs or {}), "autocommit": True}

    def _on_event(self, payload: str) -> None:
        if "catbird.task.completed" in payload:
            return  # by far the most frequent event, and of no use here
        try:
            doc = json.loads(payload)
            topic, data = doc.get("topic"), doc.get("data")
        except (ValueError, AttributeError):
            return
        flows = self._flow_runtime
        if flows is not None and str(topic).startswith(("catbird.step.", "catbird.flow.")):
            flows.on_event(str(topic), data)
            return
        if topic == "catbird.task.queued":
            lane = self._task_lanes.get(data)
            if lane is not None:
                lane.wake.set()
        elif topic == "catbird.task.canceled":
            try:
                run_id = int(data)
            except (TypeError, ValueError):
                return
            for lane in self._task_lanes.values():
                run = lane.inflight.get(run_id)
                if run is not None:
                    log.info("task %r run %d was canceled: stopping its handler", lane.name, run_id)
                    self._stop_run(run, "canceled")
        elif topic == "catbird.task.failed":
            for on_fail in self._on_fail_lanes:
                on_fail.wake.set()

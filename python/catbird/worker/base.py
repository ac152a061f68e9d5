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
  first; failures go through ``cb_fail_task`` (with the traceback as
  ``error_detail``, and ``retryable => false`` for a
  :class:`catbird.PermanentError` or an input that cannot be decoded), and
  the engine re-queues the run under the task's stored retry policy with a
  full-jitter delay, or fails it. A lapsed lease counts as an attempt.
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
  :func:`catbird.cancel_requested` for a plain one, which runs on until it
  checks that flag and returns (a thread cannot be interrupted); no outcome
  is recorded.
  A handler can cancel its own run with :func:`catbird.cancel`.
* **Circuit breaker.** After ``failure_threshold`` consecutive failures a
  handler's claims pause for ``open_timeout``; then a single run is tried and
  its success closes the breaker again.
* **On-fail handlers** run for runs that failed for good
  (``cb_claim_task_on_fail``), with their own options; a failing on-fail
  handler is retried under its ``max_retries``/``backoff``, the delay chosen
  by the engine.
* **Schedules** declared with the tasks and flows (``schedule=``) are
  created when the worker starts, and every ``schedule_interval`` seconds
  the due schedules of the tasks and flows it serves are fired (each tick
  exactly once across all workers; see :mod:`catbird.worker.schedules`).
* **Heartbeats.** The worker registers (``cb_worker_started``), heartbeats
  every ``heartbeat_interval`` and registers again when the engine no longer
  knows it; it unregisters on stop.
* **Shutdown.** ``stop()`` (or SIGINT/SIGTERM under :meth:`run`) stops
  claiming, gives in-flight handlers ``shutdown_timeout`` seconds, then
  stops the rest and hands every run it will not finish back to the engine
  (task runs, steps, items: their lease is cut to a millisecond; on-fail
  calls: re-queued), logging how many, so another worker claims them at
  once. ``async def`` handlers are cancelled; a plain handler's thread
  cannot be interrupted: :func:`catbird.cancel_requested` turns true for it,
  and an outcome it still reports is ignored once another worker claimed
  the run. Pending outcomes are flushed before the worker unregisters. A
  second signal skips the grace period.
* **Database outages** never stop the worker: every statement is retried
  with exponential backoff (outcomes included, which the fencing makes safe),
  and the LISTEN connection reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .. import _sql
from .._backoff import Backoff
from ..client.client_async import AsyncClient
from ..definitions import Task, definition_args
from ..definitions.flows import Flow
from ..errors import InvalidArgument, NotFound, ObjectInUse
from ..events import parse_event
from ..metrics import MetricsServer, WorkerMetrics, render_worker_scrape
from .batching import BatchedLane
from .connections import TRANSIENT, Connections
from .flow_runtime import FlowRuntime
from .lanes import Lane, describe, with_concurrency
from .on_fail import OnFailLane, TaskOnFailLane
from .schedules import Scheduler
from .tasks import TaskLane
from .threads import HandlerThreads

__all__ = ["Worker"]

T = TypeVar("T")

log = logging.getLogger("catbird.worker")

#: How long stop() keeps trying to record outcomes after the grace period.
OUTCOME_GRACE = 5.0


def _started(value: T | None) -> T:
    """``value``, which exists once the worker is started."""
    if value is None:
        raise RuntimeError("the worker is not started")
    return value


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
    bounded garbage collection, ``cb_gc()``. Every ``schedule_interval``
    seconds (``None``: never, e.g. when pg_cron does it) it fires the due
    schedules of its tasks and flows; with ``create_definitions`` it also
    creates the schedules they declare (``schedule=``) when it starts.

    ``metrics`` counts claims, completions, failures (retried, final,
    ignored), lease renewals and handler durations (see
    :mod:`catbird.metrics`). With ``metrics_port`` the worker serves them,
    with the database's gauges, at ``http://metrics_host:metrics_port/metrics``
    in the Prometheus text format (port 0: any free port, see
    :attr:`metrics_address`); ``metrics_host`` is 127.0.0.1 unless given.
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
        schedule_interval: float | None = 5.0,
        durable_claims: bool = False,
        id: uuid.UUID | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        self._db = Connections(dsn_or_pool, durable_claims)
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
        self.schedule_interval = (
            None
            if schedule_interval is None
            else self._seconds(schedule_interval, "schedule_interval")
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
        self._registered = False
        self._lanes: list[Lane] = []
        self._task_lanes: dict[str, TaskLane] = {}
        self._on_fail_lanes: list[OnFailLane] = []
        self._flow_runtime: FlowRuntime | None = None
        self._scheduler = Scheduler(self.tasks, self.flows, self.schedule_interval or 5.0)
        self._loops: list[asyncio.Task[None]] = []
        self._claim_loops: list[asyncio.Task[None]] = []
        self._flush_loops: list[asyncio.Task[None]] = []
        self._run_tasks: set[asyncio.Task[None]] = set()
        self._threads: HandlerThreads | None = None
        self._stop_requested: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The worker's counters (see :mod:`catbird.metrics`).
        self.metrics = WorkerMetrics(self._inflight_counts)
        self._metrics_server: MetricsServer | None = None
        if metrics_port is not None:
            self.serve_metrics(metrics_port, metrics_host)

    @staticmethod
    def _seconds(value: float, what: str, *, zero: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidArgument(f"{what} must be a number of seconds, got {value!r}")
        if value < 0 or (value == 0 and not zero):
            raise InvalidArgument(f"{what} must be {'>= 0' if zero else '> 0'}, got {value!r}")
        return float(value)

    def __repr__(self) -> str:
        return f"Worker(id={self.id}, tasks={[t.name for t in self.tasks]})"

    def serve_metrics(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host:port`` once started (what ``metrics_port`` does)."""
        if self._started:
            raise RuntimeError("serve_metrics() must be called before the worker starts")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"metrics_port must be a port number (0-65535), got {port!r}")
        self._metrics_server = MetricsServer(self._scrape, host=host, port=port)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """Host and port of the metrics endpoint while it is served (else ``None``)."""
        server = self._metrics_server
        try:
            return server.address if server is not None else None
        except RuntimeError:
            return None

    def _inflight_counts(self) -> list[tuple[tuple[str, str], float]]:
        return [((lane.kind, lane.name), float(len(lane.inflight))) for lane in self._lanes]

    async def _scrape(self) -> str:
        return await render_worker_scrape(self.metrics, self._db.client)

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
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a loop without signal support: the
                # worker then runs without signal handlers and stops through
                # stop() (or the cancellation of the task that runs it).
                log.debug("no %s handler: signals are not available here", sig.name)
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
            self._flow_runtime = FlowRuntime(self, self.flows, self.concurrency)
            flow_connections = self._flow_runtime.connections

        await self._db.open(
            outcome_connections=4 + 3 * len(self.tasks) + flow_connections[0],
            claim_connections=2 + 2 * len(self.tasks) + flow_connections[1],
        )

        for t in self.tasks:
            if t.handler is not None:
                task_lane = TaskLane(self, t, with_concurrency(t.handler, self.concurrency))
                self._task_lanes[t.name] = task_lane
                self._lanes.append(task_lane)
            if t.on_fail_handler is not None:
                handler = with_concurrency(t.on_fail_handler, self.concurrency)
                on_fail = TaskOnFailLane(self, t, handler)
                self._on_fail_lanes.append(on_fail)
                self._lanes.append(on_fail)
        if self._flow_runtime is not None:
            self._lanes.extend(self._flow_runtime.lanes)
        sync_slots = sum(lane.options.concurrency for lane in self._lanes if lane.uses_threads)
        self._threads = HandlerThreads(2 * sync_slots + 4)

        try:
            await self._register()
            self._registered = True
        except TRANSIENT as exc:
            log.warning(
                "database not reachable yet (%s); retrying in the background", describe(exc)
            )
        except BaseException:
            await self._db.close()
            raise

        if self._metrics_server is not None:
            try:
                await self._metrics_server.start()
            except OSError:
                await self._db.close()
                raise
        spawn = asyncio.create_task
        self._loops.append(spawn(self._listen_loop(), name="catbird-listen"))
        self._loops.append(spawn(self._heartbeat_loop(), name="catbird-heartbeat"))
        self._loops.append(spawn(self._lease_loop(), name="catbird-lease"))
        if self.gc_interval is not None:
            self._loops.append(spawn(self._gc_loop(self.gc_interval), name="catbird-gc"))
        if self.schedule_interval is not None and (self.tasks or self.flows):
            self._loops.append(spawn(self._schedule_loop(), name="catbird-schedules"))
        for lane in self._lanes:
            self._claim_loops.append(
                spawn(self._claim_loop(lane), name=f"catbird-claim-{lane.name}")
            )
            if isinstance(lane, BatchedLane) and lane.batched:
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
        # 2. stop what still runs (async handlers are cancelled, plain ones
        # see cancel_requested()) and hand every such run back at once
        await asyncio.gather(*(self._release(lane) for lane in self._lanes))
        # 3. outcomes: let them be recorded, within bounds
        await self._wait_runs(loop.time() + OUTCOME_GRACE, None)
        for lane in self._lanes:
            if isinstance(lane, BatchedLane):
                lane.drain()
        if self._flush_loops:
            await asyncio.wait(self._flush_loops, timeout=OUTCOME_GRACE)
        self._db.abandon = True  # retries of outcomes stop now
        left = [t for t in (*self._run_tasks, *self._flush_loops) if not t.done()]
        if left:
            await asyncio.wait(left, timeout=1.0)
        for t in left:
            t.cancel()
        await asyncio.gather(*self._run_tasks, *self._flush_loops, return_exceptions=True)
        # 4. background loops, registry, connections
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.execute(_sql.worker_stopped(self.id)), 2.0)
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        await self._db.close()
        if self._threads is not None:
            self._threads.shutdown()
        log.info("worker %s stopped", self.id)

    async def _release(self, lane: Lane) -> None:
        """Stop the handlers of ``lane`` still running after the grace period
        and hand their runs back, so that another worker claims them now
        rather than when their leases pass."""
        runs = list(lane.inflight.values())
        if not runs:
            return
        for run in runs:
            run.stop("shutdown")
        released = await lane.release(runs)
        if released:
            log.info(
                "%r: released %d run(s) this worker will not finish (%s); another worker can"
                " claim them now",
                lane,
                released,
                ", ".join(str(run.id) for run in runs[:10]) + (", ..." if len(runs) > 10 else ""),
            )

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

    # ------------------------------------------------------------------
    # database access: what the lanes use of the worker (the LaneHost interface)

    @property
    def client(self) -> AsyncClient:
        """The client of durable statements (outcomes, registration, handler helpers)."""
        return _started(self._db.client)

    @property
    def claim_client(self) -> AsyncClient:
        """The client of claims and lease renewals (see ``durable_claims``)."""
        return _started(self._db.claim_client)

    @property
    def handler_threads(self) -> HandlerThreads:
        """The threads plain handlers run in."""
        return _started(self._threads)

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the worker runs on."""
        return _started(self._loop)

    async def record(self, query: _sql.Query[T], what: str) -> T:
        """Execute an outcome's ``query``, retrying transient errors (see :class:`.Connections`)."""
        return await self._db.record(query, what)

    async def _register(self) -> None:
        for t in self.tasks:
            if self.create_definitions:
                args = definition_args(
                    t, description=None, condition=None, retention_period=None, on_fail=None
                )
                try:
                    await self.client.execute(_sql.create_task(t.name, **args))
                except ObjectInUse as exc:
                    log.warning(
                        "task %r: the stored definition differs from this one and runs are"
                        " active, so it is kept (%s)",
                        t.name,
                        exc.message,
                    )
            lane = self._task_lanes.get(t.name)
            if lane is not None:
                try:
                    info = await self.client.execute(_sql.get_task(t.name))
                except NotFound:
                    continue
                lane.check_policy((info.max_retries, info.backoff_min, info.backoff_max))
        if self._flow_runtime is not None:
            await self._flow_runtime.create_definitions(self.create_definitions)
        if self.create_definitions:
            await self._scheduler.create_declared(self.client)
        assert self._ready is not None
        self._ready.set()
        await self.client.execute(
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

    async def _claim_loop(self, lane: Lane) -> None:
        assert self._ready is not None
        await self._ready.wait()
        backoff = Backoff(log)
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
                delay = backoff.failed(
                    "%r: claim failed (%s); retrying in %.2f s", lane, describe(exc)
                )
                await self._sleep(delay)
                continue
            if backoff.failures:
                log.info("%r: claiming again", lane)
                backoff.reset()
            if claims:
                self.metrics.claims.inc(lane.kind, lane.name, amount=len(claims))
            if breaker is not None and claims and breaker.is_half_open(time.monotonic()):
                breaker.probing = True
            for claim in claims:
                self._start(lane, claim)
            if len(claims) < quantity:
                await self._wait(lane.wake, self.poll_interval)

    def _start(self, lane: Lane, claim: Any) -> None:
        run, args = lane.start(claim)
        lane.inflight[run.id] = run
        task = asyncio.create_task(lane.execute(run, args))
        run.task = task
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _lease_loop(self) -> None:
        """Renew the leases of held runs every ``lease / 3`` seconds."""
        interval = self.lease / 3
        lanes = [lane for lane in self._lanes if isinstance(lane, BatchedLane)]
        while True:
            await asyncio.sleep(interval)
            for lane in lanes:
                await lane.renew_leases()

    async def _gc_loop(self, interval: float) -> None:
        """The built-in periodic garbage collection (``cb_gc``), jittered across workers."""
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                counters = await self.client.execute(_sql.gc())
            except Exception as exc:
                log.warning("gc failed: %s", describe(exc))
                continue
            removed = {k: v for k, v in counters.items() if v}
            if removed:
                log.info("gc: %s", ", ".join(f"{k}={v}" for k, v in sorted(removed.items())))

    async def _schedule_loop(self) -> None:
        """Fire the due schedules of the served tasks and flows (see :class:`.Scheduler`)."""
        assert self._ready is not None and self._stop_requested is not None
        await self._ready.wait()
        await self._scheduler.loop(self.client, self._stop_requested)

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff(log, high=max(5.0, self.heartbeat_interval))
        while True:
            try:
                if not self._registered:
                    await self._register()
                    self._registered = True
                    if backoff.failures:
                        log.info("worker %s registered", self.id)
                elif not await self.client.execute(_sql.worker_heartbeat(self.id)):
                    log.info("worker %s was unregistered (stale?); registering again", self.id)
                    self._registered = False
                    continue
                backoff.reset()
                delay = self.heartbeat_interval
            except Exception as exc:
                delay = backoff.failed("heartbeat failed (%s); retrying in %.2f s", describe(exc))
            await asyncio.sleep(delay)

    async def _listen_loop(self) -> None:
        backoff = Backoff(log)
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            delay = 0.0
            try:
                conn = await self._db.connect_listener()
                client = AsyncClient(conn)
                await client.execute(_sql.listen_events())
                if backoff.failures:
                    log.info("listening for events again")
                backoff.reset()
                # Events may have been missed while not listening.
                for lane in self._lanes:
                    lane.wake.set()
                self._scheduler.wake.set()  # and ticks may have come
                while True:
                    async for note in conn.notifies(timeout=max(5.0, 5 * self.poll_interval)):
                        self._on_event(note.payload)
                    await client.execute(_sql.ping())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.failed("event listener: %s; reconnecting in %.2f s", describe(exc))
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)

    def _on_event(self, payload: str) -> None:
        if "catbird.task.completed" in payload:
            return  # by far the most frequent event, and of no use here
        event = parse_event(payload)
        if event is None:
            return
        topic = event.topic
        flows = self._flow_runtime
        if flows is not None and topic.startswith(("catbird.step.", "catbird.flow.")):
            flows.on_event(event)
            return
        if topic in ("catbird.task.started", "catbird.task.queued"):  # new runs, re-queued runs
            lane = self._task_lanes.get(event.field("task") or "")
            if lane is not None:
                lane.wake.set()
        elif topic == "catbird.task.canceled":
            for run_id in event.run_ids:
                for lane in self._task_lanes.values():
                    run = lane.inflight.get(run_id)
                    if run is None:
                        continue
                    log.info(
                        "task %r run %d was canceled: %s",
                        lane.name,
                        run_id,
                        "cancelling its handler"
                        if lane.handler.is_async
                        else "its handler runs on until it checks catbird.cancel_requested()",
                    )
                    run.stop("canceled")
        elif topic == "catbird.task.failed":
            for on_fail in self._on_fail_lanes:
                on_fail.wake.set()

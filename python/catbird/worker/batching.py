"""Lanes whose runs hold leases and whose completions are recorded in batches.

Task runs, flow steps and map items work the same way once their handler
returned: the completion waits a few milliseconds to share one statement
with others (``cb_complete_tasks``, ``cb_complete_steps``, ...), every
outcome carries the claim's attempt (the fencing token: the engine ignores
an outcome of a run claimed again since), and until its outcome is recorded
the run's lease is renewed like that of a running one.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from .. import _sql
from ..definitions import Handler, HandlerOptions
from .lanes import RELEASE_LEASE, Abandoned, Failure, Lane, LaneHost, Run, describe, log

__all__ = ["BatchedLane", "Completion"]

#: Completion batches of one lane in flight at once.
CONCURRENT_FLUSHES = 2


class Completion(NamedTuple):
    """A run whose handler returned, waiting for its completion statement."""

    run: Run
    output_json: str


class BatchedLane(Lane):
    """A lane with leases to renew and completions to record in batches."""

    #: Errors of a batch's statement after which its completions are recorded
    #: one by one, to find the one the server refuses (and fail that run).
    refused: tuple[type[Exception], ...] = (psycopg.DataError,)

    #: Whether :meth:`flush_loop` records this lane's completions (a lane
    #: that records each outcome itself has none to flush).
    batched = True

    def __init__(
        self, host: LaneHost, name: str, handler: Handler, options: HandlerOptions | None = None
    ) -> None:
        super().__init__(host, name, handler, options)
        # Runs whose handler returned but whose outcome is not recorded yet:
        # their leases are renewed like those of running ones.
        self.pending: dict[int, int] = {}  # run id -> attempt
        # Runs whose completion statement is in flight: their leases are not
        # renewed meanwhile, so renewal and completion never wait on each
        # other's row locks.
        self.flushing: set[int] = set()
        self.buffer: list[Completion] = []
        self.flush_wake = asyncio.Event()
        self.buffer_full = asyncio.Event()
        self.flush_size = max(self.options.batch_size, 1)
        # A bound on one completion statement (the buffer grows while flushes
        # are in flight); the rest waits for the next one.
        self.max_flush = max(4 * self.flush_size, 400)
        self.draining = False
        #: Retry arguments of this lane's fail calls: empty (the engine applies
        #: the definition's stored policy) unless the stored policy is not
        #: this handler's (see :meth:`check_policy`).
        self.policy: dict[str, int] = {}

    def check_policy(self, stored: tuple[int | None, int | None, int | None]) -> None:
        """Compare the stored retry policy (max_retries, backoff_min and
        backoff_max in ms) with this handler's options.

        They differ when the definition could not be replaced (runs were
        active) or was created elsewhere: then this worker's failures carry
        the handler's own policy, and the log says so (lapsed leases are
        counted under the stored one)."""
        low, high = self.options.backoff_ms
        own = (self.options.max_retries, low, high)
        if stored == own:
            self.policy = {}
            return
        self.policy = {"max_retries": own[0], "backoff_min": low, "backoff_max": high}
        log.warning(
            "%r: the stored retry policy (max_retries, backoff ms) %s differs from the"
            " handler's %s; this worker's failures use the handler's",
            self,
            stored,
            own,
        )

    @abc.abstractmethod
    def complete_query(
        self, ids: list[int], outputs: list[str], attempts: list[int]
    ) -> _sql.Query[Any]:
        """The statement that records these completions."""

    @abc.abstractmethod
    def hide_query(self, ids: list[int], attempts: list[int], hide_for: float) -> _sql.Query[None]:
        """The statement that hides these runs (renews or hands back their leases)."""

    def release_query(self, runs: list[Run]) -> _sql.Query[Any] | None:
        """Hide the runs for a millisecond (under their attempts): claimable at once."""
        return self.hide_query([r.id for r in runs], [r.attempt for r in runs], RELEASE_LEASE)

    def batch_order(self, batch: list[Completion]) -> list[Completion]:
        """The order of a batch in its statement (as it came, unless a lane needs another)."""
        return batch

    def batch_recorded(self, size: int, recorded: int) -> None:
        """``recorded`` of ``size`` completions of a batch were taken by the engine."""

    # ------------------------------------------------------------------ leases

    def held(self) -> tuple[list[int], list[int]]:
        """Ids and attempts of the runs whose leases this worker renews."""
        held = {run_id: run.attempt for run_id, run in self.inflight.items()}
        for run_id, attempt in self.pending.items():
            if run_id not in self.flushing:
                held.setdefault(run_id, attempt)
        ids = sorted(held)
        return ids, [held[i] for i in ids]

    async def renew_leases(self) -> None:
        """Hide the held runs for another lease (the worker's lease loop)."""
        ids, attempts = self.held()
        if not ids:
            return
        try:
            await self.host.claim_client.execute(self.hide_query(ids, attempts, self.host.lease))
        except Exception as exc:
            log.warning(
                "%r: renewing the lease of %d run(s) failed: %s", self, len(ids), describe(exc)
            )
        else:
            self.host.metrics.lease_renewals.inc(self.kind, self.name, amount=len(ids))

    # ---------------------------------------------------------------- outcomes

    async def succeeded(self, run: Run, output_json: str | None) -> None:
        self.pending[run.id] = run.attempt
        self.buffer.append(Completion(run, output_json or "null"))
        self.flush_wake.set()
        if len(self.buffer) >= self.flush_size:
            self.buffer_full.set()

    async def record_outcome(self, run: Run, query: _sql.Query[Any], what: str) -> Any:
        """Record an outcome other than a completion; the run's lease is renewed meanwhile."""
        self.pending[run.id] = run.attempt
        try:
            return await self.host.record(query, what)
        finally:
            self.pending.pop(run.id, None)

    def log_failure(self, run: Run, subject: str, status: str | None, failure: Failure) -> None:
        """Log what the engine did with a failure (``status`` of a ``cb_fail_*`` call)."""
        message = failure.message
        if status == "queued":
            log.info("%s attempt %d failed, retrying: %s", subject, run.attempt, message)
            self.wake_for_retry(run.attempt)
        elif status == "failed":
            log.warning(
                "%s failed after %d attempt(s)%s: %s",
                subject,
                run.attempt,
                "" if failure.retryable else " (not retryable)",
                message,
            )
        else:
            log.info("%s: failure not recorded (lease lost, or run canceled or finished)", subject)

    def drain(self) -> None:
        """Flush what is buffered at once, then let :meth:`flush_loop` end (shutdown)."""
        self.draining = True
        self.flush_wake.set()

    async def flush_loop(self) -> None:
        """Record buffered completions in batches (one statement per batch).

        Up to ``CONCURRENT_FLUSHES`` batches are in flight at once (on
        different connections), so their commits can share a WAL flush; while
        both are busy, completions keep collecting into a bigger next batch.
        """
        linger = self.host.flush_interval
        slots = asyncio.Semaphore(CONCURRENT_FLUSHES)
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
                    task = asyncio.create_task(self._complete(self.batch_order(batch)))
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

    async def _complete(self, batch: Sequence[Completion]) -> None:
        ids = [c.run.id for c in batch]
        self.flushing.update(ids)
        try:
            done = await self.host.record(
                self.complete_query(
                    ids, [c.output_json for c in batch], [c.run.attempt for c in batch]
                ),
                f"record {len(batch)} completion(s) of {self!r}",
            )
            recorded = len(done) if isinstance(done, list) else len(batch)
        except self.refused:
            recorded = 0
            for completion in batch:
                recorded += await self._complete_one(completion)
        except Abandoned:
            recorded = 0
        except Exception:
            log.exception("%r: recording %d completion(s) failed", self, len(batch))
            recorded = 0
        finally:
            self.flushing.difference_update(ids)
            for run_id in ids:
                self.pending.pop(run_id, None)
        self.batch_recorded(len(batch), recorded)

    async def _complete_one(self, completion: Completion) -> int:
        """Record one completion; fail its run if the server refuses its output."""
        run = completion.run
        try:
            done = await self.host.record(
                self.complete_query([run.id], [completion.output_json], [run.attempt]),
                f"record the completion of run {run.id} of {self!r}",
            )
            return len(done) if isinstance(done, list) else 1
        except self.refused as exc:
            await self.report_failure(
                run, Failure(f"the output could not be stored: {describe(exc)}")
            )
        except Abandoned:
            pass
        except Exception:
            log.exception("%r: recording the completion of run %d failed", self, run.id)
        return 0

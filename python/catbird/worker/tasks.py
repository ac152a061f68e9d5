"""Task lanes: the runs of one task's handler (``cb_claim_tasks`` and its outcomes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from .. import _sql
from ..context import RunContext
from ..definitions import Handler, Task
from ..models import TaskClaim
from .batching import BatchedLane
from .lanes import RELEASE_LEASE, LaneHost, Run, log, retry_policy

__all__ = ["TaskLane"]


class TaskLane(BatchedLane):
    """The handler of a task: completions batched, failures retried by the engine."""

    kind = "task"

    def __init__(self, host: LaneHost, task: Task[Any, Any], handler: Handler) -> None:
        super().__init__(host, task.name, handler)
        self.decode = handler.params[0].codec.decode
        # Runs whose async handler the shutdown cancelled: handed back at the
        # end of it, once no outcome of theirs can be on its way.
        self.released: list[Run] = []

    async def claim(self, quantity: int) -> Sequence[TaskClaim]:
        return await self.host.claim_client.execute(
            _sql.claim_tasks(self.name, quantity=quantity, hide_for=self.host.lease)
        )

    def start(self, claim: TaskClaim) -> tuple[Run, tuple[Any, ...] | BaseException]:
        ctx = RunContext(
            "task", self.name, claim.id, claim.attempts, claim.headers, claim.concurrency_key
        )
        run = Run(claim.id, claim.attempts, ctx)
        try:
            return run, (self.decode(claim.input),)
        except Exception as exc:
            return run, exc

    def complete_query(
        self, ids: list[int], outputs: list[str], attempts: list[int]
    ) -> _sql.Query[list[int]]:
        return _sql.complete_tasks_json(self.name, ids, outputs, attempts)

    def hide_query(self, ids: list[int], attempts: list[int], hide_for: float) -> _sql.Query[None]:
        return _sql.hide_tasks(self.name, ids, hide_for=hide_for, attempts=attempts)

    def batch_recorded(self, size: int, recorded: int) -> None:
        if recorded < size:
            log.info(
                "task %r: %d of %d completion(s) not recorded (lease lost or run canceled)",
                self.name,
                size - recorded,
                size,
            )

    async def failed(self, run: Run, message: str) -> None:
        status = await self.record_outcome(
            run,
            _sql.fail_task(
                self.name, run.id, message, attempt=run.attempt, **retry_policy(self.options)
            ),
            f"record the failure of run {run.id} of task {self.name!r}",
        )
        self.log_failure(run, f"task {self.name!r} run {run.id}", status, message)

    async def cancel_run(self, run: Run, reason: str | None) -> None:
        await self.record_outcome(
            run,
            _sql.cancel_task(self.name, run.id, reason=reason),
            f"cancel run {run.id} of task {self.name!r}",
        )
        log.info("task %r run %d canceled by its handler: %s", self.name, run.id, reason)

    async def stopped(self, run: Run) -> None:
        if run.stop_reason == "shutdown" and self.handler.is_async:
            self.released.append(run)

    async def release_stopped(self) -> None:
        """Make the runs the shutdown took from async handlers claimable at once."""
        if not self.released:
            return
        ids = [run.id for run in self.released]
        attempts = [run.attempt for run in self.released]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.host.client.execute(self.hide_query(ids, attempts, RELEASE_LEASE)), 2.0
            )
            log.info("task %r: released %d run(s) cancelled by the shutdown", self.name, len(ids))

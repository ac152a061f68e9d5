"""Task lanes: the runs of one task's handler (``cb_claim_tasks`` and its outcomes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _sql
from ..context import RunContext
from ..definitions import Handler, Task
from ..models import TaskClaim
from .batching import BatchedLane
from .lanes import Failure, LaneHost, Run, log

__all__ = ["TaskLane"]


class TaskLane(BatchedLane):
    """The handler of a task: completions batched, failures retried by the engine."""

    kind = "task"

    def __init__(self, host: LaneHost, task: Task[Any, Any], handler: Handler) -> None:
        super().__init__(host, task.name, handler)
        self.decode = handler.params[0].codec.decode

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

    async def failed(self, run: Run, failure: Failure) -> str | None:
        # The retry policy is the task's stored one (written from the
        # handler's options when the definition was created), unless that
        # is not this handler's (self.policy, see check_policy).
        status = await self.record_outcome(
            run,
            _sql.fail_task(
                self.name,
                run.id,
                failure.message,
                attempt=run.attempt,
                retryable=failure.retryable,
                error_detail=failure.detail,
                **self.policy,
            ),
            f"record the failure of run {run.id} of task {self.name!r}",
        )
        self.log_failure(run, f"task {self.name!r} run {run.id}", status, failure)
        return status  # type: ignore[no-any-return]

    async def cancel_run(self, run: Run, reason: str | None) -> None:
        await self.record_outcome(
            run,
            _sql.cancel_task(self.name, run.id, reason=reason),
            f"cancel run {run.id} of task {self.name!r}",
        )
        log.info("task %r run %d canceled by its handler: %s", self.name, run.id, reason)

"""On-fail lanes: the handlers that run once a task run or a flow run failed for good.

An on-fail claim (``cb_claim_task_on_fail``/``cb_claim_flow_on_fail``) is
not leased like a run: it is hidden long enough for one call to run to its
timeout. Its outcome carries the claim's ``on_fail_attempts`` (the fencing
token: a stale handler cannot end an on-fail a newer claim holds). A failing
on-fail handler is retried under the handler's ``max_retries``/``backoff``:
the engine decides whether and when (``cb_fail_*_on_fail``).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from .. import _sql
from .._sql.runs import RunStatements
from ..context import FlowDB, FlowFailure, FlowRunContext, RunContext
from ..definitions import Handler, Task
from ..definitions.flows import Flow
from ..models import FlowOnFailClaim, OnFailClaim, TaskFailure
from .lanes import Failure, Lane, LaneHost, Run, log

__all__ = ["FlowOnFailLane", "OnFailLane", "TaskOnFailLane"]


class OnFailLane(Lane):
    """What task and flow on-fail lanes share: hiding, decoding, outcomes."""

    kind = "on-fail"

    def __init__(self, host: LaneHost, name: str, handler: Handler) -> None:
        super().__init__(host, name, handler)
        self.encode_output = False  # an on-fail handler's return value is not stored
        self.decode = handler.params[0].codec.decode
        timeout = self.options.timeout
        # There is no lease renewal for on-fail claims: hide them long enough
        # for one call to run to its timeout.
        self.hide_for = host.lease + (timeout or host.lease)

    #: What failed, for messages: "task 'x'" or "flow 'y'".
    @property
    @abc.abstractmethod
    def subject(self) -> str: ...

    @abc.abstractmethod
    def context(self, claim: Any) -> RunContext:
        """The run context of the handler's call."""

    @abc.abstractmethod
    def failure(self, claim: Any) -> Any:
        """The failure the handler gets as its second argument."""

    #: The run statements of the kind (tasks or flows) this lane handles.
    statements: ClassVar[RunStatements[Any, Any, Any]]

    async def claim(self, quantity: int) -> Sequence[Any]:
        return await self.host.claim_client.execute(
            self.statements.claim_on_fail(self.name, quantity=quantity, hide_for=self.hide_for)
        )

    def complete_query(self, run: Run) -> _sql.Query[Any]:
        """The statement that records the handler's success (fenced by its attempt)."""
        return self.statements.complete_on_fail(self.name, run.id, on_fail_attempt=run.attempt)

    def fail_query(self, run: Run, message: str, **policy: int) -> _sql.Query[Any]:
        """The statement that records the handler's failure (under ``policy``)."""
        return self.statements.fail_on_fail(
            self.name, run.id, message, on_fail_attempt=run.attempt, **policy
        )

    def release_query(self, runs: list[Run]) -> _sql.Query[Any] | None:
        """Hand one on-fail back (shutdown): re-queued at once, whatever its
        retries (the engine has no lease to shorten for on-fail claims)."""
        if len(runs) != 1:
            return None
        return self.fail_query(
            runs[0],
            "released by a worker shutdown",
            max_retries=runs[0].attempt,
            backoff_min=0,
            backoff_max=0,
        )

    async def release(self, runs: list[Run]) -> int:
        released = 0
        for run in runs:
            released += await super().release([run])
        return released

    def start(self, claim: Any) -> tuple[Run, tuple[Any, ...] | BaseException]:
        run = Run(claim.id, claim.on_fail_attempts, self.context(claim))
        failure = self.failure(claim)
        try:
            return run, (self.decode(claim.input), failure)
        except Exception as exc:
            return run, exc

    async def succeeded(self, run: Run, output_json: str | None) -> None:
        await self.host.record(
            self.complete_query(run),
            f"record the on-fail completion of run {run.id} of {self.subject}",
        )

    async def failed(self, run: Run, failure: Failure) -> None:
        low, high = self.options.backoff_ms
        max_retries = self.options.max_retries if failure.retryable else 0
        await self.host.record(
            self.fail_query(
                run, failure.message, max_retries=max_retries, backoff_min=low, backoff_max=high
            ),
            f"record the on-fail failure of run {run.id} of {self.subject}",
        )
        log.warning(
            "on-fail handler of %s run %d attempt %d failed%s: %s",
            self.subject,
            run.id,
            run.attempt,
            ", retrying" if run.attempt <= max_retries else " for good",
            failure.message,
        )
        if run.attempt <= max_retries:
            self.wake_for_retry(run.attempt)

    async def cancel_run(self, run: Run, reason: str | None) -> None:  # pragma: no cover
        await self.failed(run, Failure("catbird.cancel() is not available in an on-fail handler"))


class TaskOnFailLane(OnFailLane):
    """The on-fail handler of a task."""

    statements = _sql.TASKS

    def __init__(self, host: LaneHost, task: Task[Any, Any], handler: Handler) -> None:
        super().__init__(host, task.name, handler)

    @property
    def subject(self) -> str:
        return f"task {self.name!r}"

    def context(self, claim: OnFailClaim) -> RunContext:
        return RunContext(
            "on_fail", self.name, claim.id, claim.on_fail_attempts, None, claim.concurrency_key
        )

    def failure(self, claim: OnFailClaim) -> TaskFailure:
        return TaskFailure(
            task_name=self.name,
            task_run_id=claim.id,
            error_message=claim.error_message or "",
            attempts=claim.attempts,
            on_fail_attempts=claim.on_fail_attempts,
            started_at=claim.started_at,
            failed_at=claim.failed_at,
            concurrency_key=claim.concurrency_key,
        )


class FlowOnFailLane(OnFailLane):
    """The on-fail handler of a flow."""

    statements = _sql.FLOWS

    def __init__(self, host: LaneHost, flow: Flow, handler: Handler) -> None:
        super().__init__(host, flow.name, handler)
        self.flow = flow.name

    @functools.cached_property
    def db(self) -> FlowDB:
        """The database access of handler helpers (made once the worker runs)."""
        return FlowDB(self.host.client, self.host.event_loop)

    def __repr__(self) -> str:
        return f"on-fail handler of flow {self.flow!r}"

    @property
    def subject(self) -> str:
        return f"flow {self.flow!r}"

    def context(self, claim: FlowOnFailClaim) -> FlowRunContext:
        return FlowRunContext(
            "flow_on_fail",
            self.flow,
            claim.id,
            claim.on_fail_attempts,
            None,
            claim.concurrency_key,
            flow_name=self.flow,
            step_name=claim.failed_step_name or "",
            flow_run_id=claim.id,
            db=self.db,
        )

    def failure(self, claim: FlowOnFailClaim) -> FlowFailure:
        return FlowFailure(
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
            _db=self.db,
        )

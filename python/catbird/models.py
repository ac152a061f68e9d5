"""Frozen records returned by the client.

JSON columns (``body``, ``headers``) are decoded into plain Python values
(dict, list, str, int, float, bool or None). Timestamps are timezone-aware
``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

__all__ = [
    "TERMINAL_STATUSES",
    "Binding",
    "Message",
    "OnFailClaim",
    "QueueInfo",
    "RunOutcome",
    "TaskClaim",
    "TaskFailure",
    "TaskInfo",
    "TaskRunInfo",
    "WorkerInfo",
]


@dataclass(frozen=True, slots=True)
class Message:
    """A message read from a queue (``catbird.cb_message``)."""

    id: int
    body: Any
    headers: dict[str, Any] | None
    topic: str | None
    concurrency_key: str | None
    priority: int
    deliveries: int
    created_at: datetime
    visible_at: datetime
    expires_at: datetime | None
    source_queue: str | None = None
    """For a message in a dead-letter queue: the queue it was moved from."""
    source_deliveries: int | None = None
    """For a message in a dead-letter queue: its deliveries when it was moved."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as listed by ``cb_list_queues()``.

    ``depth`` counts all messages (visible and hidden), ``visible`` those
    readable now, and ``oldest_visible_at`` is the smallest ``visible_at``
    among readable messages (``None`` when there are none).
    """

    name: str
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    depth: int
    visible: int
    oldest_visible_at: datetime | None
    max_deliveries: int | None = None
    """Deliveries after which a message is dead-lettered (``None``: no limit)."""
    dead_letter_queue: str | None = None
    """Where messages past ``max_deliveries`` go (``None``: they are deleted)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue's subscription to a topic pattern."""

    queue: str
    pattern: str
    created_at: datetime


# ----------------------------------------------------------------------------
# tasks

#: Run statuses after which nothing happens to a run any more.
TERMINAL_STATUSES = frozenset({"completed", "failed", "skipped", "canceled", "expired"})


class _RunStatus:
    """The status tests shared by task and flow run records."""

    __slots__ = ()
    status: str

    @property
    def is_done(self) -> bool:
        """The run reached a terminal state (completed, failed, canceled, expired; a task run
        also skipped)."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_completed(self) -> bool:
        """The run completed successfully (its ``output`` is the task handler's result or the
        flow's output)."""
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task definition as listed by ``cb_list_tasks()``."""

    name: str
    description: str | None
    condition: str | None
    retention_period: timedelta | None
    on_fail: bool
    """Whether failed runs are handed to an on-fail handler."""
    created_at: datetime
    max_retries: int | None = None
    """The stored retry policy (``None``: not set; see the README's Run lifecycle)."""
    backoff_min: int | None = None
    """Milliseconds."""
    backoff_max: int | None = None
    """Milliseconds."""


@dataclass(frozen=True, slots=True)
class TaskRunInfo(_RunStatus):
    """One run of a task (``catbird.cb_task_run_info``).

    ``input``, ``headers`` and ``output`` are plain JSON values; use
    :meth:`catbird.TaskHandle.wait_for_output` (or a :class:`catbird.Task`'s
    codec) for typed outputs.
    """

    id: int
    task_name: str
    status: str
    priority: int
    attempts: int
    concurrency_key: str | None
    input: Any
    headers: dict[str, Any] | None
    output: Any
    error_message: str | None
    cancel_reason: str | None
    created_at: datetime
    visible_at: datetime
    expires_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    skipped_at: datetime | None
    expired_at: datetime | None
    cancel_requested_at: datetime | None
    canceled_at: datetime | None
    on_fail_status: str | None
    on_fail_attempts: int
    on_fail_error_message: str | None
    error_detail: str | None = None
    """The detail of the last failure (the Python worker sends the traceback)."""


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """What an on-fail handler receives about the run that failed for good."""

    task_name: str
    task_run_id: int
    error_message: str
    attempts: int
    """Handler attempts made (the first one included)."""
    on_fail_attempts: int
    """On-fail attempts, this one included (1 on the first call)."""
    started_at: datetime | None
    failed_at: datetime | None
    concurrency_key: str | None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run's terminal state, as ``cb_wait_task_output`` returns it."""

    status: str
    output: Any
    error_message: str | None


@dataclass(frozen=True, slots=True)
class TaskClaim:
    """A run claimed by a worker (``catbird.cb_task_claim``).

    ``attempts`` counts this claim and is the fencing token of the calls that
    report the run's outcome.
    """

    id: int
    attempts: int
    input: Any
    headers: dict[str, Any] | None
    concurrency_key: str | None
    priority: int


@dataclass(frozen=True, slots=True)
class OnFailClaim:
    """A failed run claimed for its on-fail handler (``cb_claim_task_on_fail``)."""

    id: int
    input: Any
    error_message: str | None
    attempts: int
    on_fail_attempts: int
    started_at: datetime | None
    failed_at: datetime | None
    concurrency_key: str | None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A registered worker (``cb_list_workers()``)."""

    id: UUID
    task_handlers: list[dict[str, Any]]
    step_handlers: list[dict[str, Any]]
    started_at: datetime
    last_heartbeat_at: datetime


# ----------------------------------------------------------------------------
# the durable inbox

__all__ += ["Notification"]


@dataclass(frozen=True, slots=True)
class Notification:
    """An unseen notification of an identity's inbox (``cb_read_notifications``).

    ``id`` is the cursor: pass the last one handled as ``after_id`` to read on,
    or to ``mark_seen_until``. ``message`` is the text given when it was
    appended (``None`` without one); ``collapse_key`` the key that retires it
    when a newer notification with the same key arrives; ``expires_at`` when it
    stops being returned (``None``: never).
    """

    id: int
    topic: str
    message: str | None
    collapse_key: str | None
    created_at: datetime
    expires_at: datetime | None


# ----------------------------------------------------------------------------
# flows

__all__ += [
    "FlowInfo",
    "FlowOnFailClaim",
    "FlowRunInfo",
    "ItemClaim",
    "StepClaim",
    "StepInfo",
    "StepRunInfo",
]

#: Step statuses after which nothing happens to a step run any more.
TERMINAL_STEP_STATUSES = frozenset({"completed", "failed", "skipped", "canceled"})


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One step of a stored flow definition (an element of ``FlowInfo.steps``).

    ``step_type`` is ``normal``, ``mapper``, ``generator`` or ``reducer``;
    ``map_source`` is the dependency a mapper maps over (``None``: the flow
    input) and ``reduce_source`` the mapper/generator a reducer folds.
    """

    name: str
    description: str | None
    step_type: str
    signal: bool
    condition: str | None
    depends_on: tuple[str, ...]
    ignore_output: tuple[str, ...]
    map_source: str | None
    reduce_source: str | None
    max_retries: int | None = None
    """The step's stored retry policy (``None``: not set)."""
    backoff_min: int | None = None
    """Milliseconds."""
    backoff_max: int | None = None
    """Milliseconds."""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StepInfo:
        """From one element of the normalized ``steps`` JSON of ``cb_list_flows()``."""
        deps = doc.get("depends_on") or []
        return cls(
            name=str(doc["name"]),
            description=doc.get("description"),
            step_type=str(doc.get("step_type") or "normal"),
            signal=bool(doc.get("signal")),
            condition=doc.get("condition"),
            depends_on=tuple(d["name"] if isinstance(d, dict) else str(d) for d in deps),
            ignore_output=tuple(doc.get("ignore_output") or ()),
            map_source=doc.get("map_source_step_name"),
            reduce_source=doc.get("reduce_source_step_name"),
            max_retries=doc.get("max_retries"),
            backoff_min=doc.get("backoff_min"),
            backoff_max=doc.get("backoff_max"),
        )


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """A flow definition as listed by ``cb_list_flows()``."""

    name: str
    description: str | None
    steps: tuple[StepInfo, ...]
    output_priority: tuple[str, ...]
    """The steps whose output becomes the flow's, first completed one wins."""
    retention_period: timedelta | None
    on_fail: bool
    """Whether failed runs are handed to an on-fail handler."""
    created_at: datetime

    def step(self, name: str) -> StepInfo:
        """The step called ``name`` (``KeyError`` when there is none)."""
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class FlowRunInfo(_RunStatus):
    """One run of a flow (``catbird.cb_flow_run_info``).

    ``input``, ``headers`` and ``output`` are plain JSON values; use
    :meth:`catbird.FlowHandle.wait_for_output` for a typed output.
    """

    id: int
    flow_name: str
    status: str
    priority: int
    concurrency_key: str | None
    input: Any
    headers: dict[str, Any] | None
    output: Any
    error_message: str | None
    cancel_reason: str | None
    failed_step_name: str | None
    created_at: datetime
    visible_at: datetime
    expires_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    cancel_requested_at: datetime | None
    canceled_at: datetime | None
    on_fail_status: str | None
    on_fail_attempts: int
    on_fail_error_message: str | None


@dataclass(frozen=True, slots=True)
class StepRunInfo:
    """One step of a flow run (``catbird.cb_step_run_info``).

    ``output`` is set once the step completed (for a mapper or generator: the
    item outputs in item order); ``map_total``/``map_done`` count the items
    of mapper and generator steps.
    """

    id: int
    flow_run_id: int
    step_name: str
    status: str
    priority: int
    attempts: int
    output: Any
    error_message: str | None
    signal_input: Any
    map_total: int | None
    map_done: int
    created_at: datetime
    visible_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    skipped_at: datetime | None
    canceled_at: datetime | None
    error_detail: str | None = None
    """The detail of the last failure (the Python worker sends the traceback)."""

    @property
    def is_done(self) -> bool:
        """The step reached a terminal state (completed, failed, skipped, canceled)."""
        return self.status in TERMINAL_STEP_STATUSES

    @property
    def is_completed(self) -> bool:
        """The step completed (its ``output`` is set)."""
        return self.status == "completed"


@dataclass(frozen=True, slots=True)
class StepClaim:
    """A step run claimed by a worker (``catbird.cb_step_claim``).

    ``step_outputs`` maps each completed dependency (except ignored ones and
    a reducer's source) to its output; ``attempts`` is the fencing token.
    """

    id: int
    flow_run_id: int
    attempts: int
    input: Any
    step_outputs: dict[str, Any]
    signal_input: Any


@dataclass(frozen=True, slots=True)
class ItemClaim:
    """An item of a mapper or generator step claimed by a worker (``cb_claim_map_tasks``)."""

    id: int
    flow_run_id: int
    attempts: int
    input: Any
    step_outputs: dict[str, Any]
    signal_input: Any
    item: Any


@dataclass(frozen=True, slots=True)
class FlowOnFailClaim:
    """A failed flow run claimed for its on-fail handler (``cb_claim_flow_on_fail``)."""

    id: int
    input: Any
    error_message: str | None
    on_fail_attempts: int
    started_at: datetime | None
    failed_at: datetime | None
    concurrency_key: str | None
    failed_step_name: str | None
    failed_step_input: Any
    failed_step_signal_input: Any
    failed_step_attempts: int | None


# ----------------------------------------------------------------------------
# schedules

__all__ += ["CATCH_UP_POLICIES", "FlowScheduleInfo", "TaskScheduleInfo"]

#: The catch-up policies of a schedule: what the ticks missed while no
#: executor ran (downtime) get. ``skip``: only the latest missed tick fires;
#: ``one`` (the default): the oldest missed tick fires, once; ``all``: every
#: missed tick fires.
CATCH_UP_POLICIES = ("skip", "one", "all")


@dataclass(frozen=True, slots=True)
class TaskScheduleInfo:
    """A task's cron schedule (``cb_list_task_schedules()``).

    ``next_run_at`` is the oldest tick not fired yet; ``last_run_at`` the last
    tick fired (its scheduled time) and ``last_enqueued_at`` when it was
    fired. ``input`` is the JSON input of every scheduled run.
    """

    task_name: str
    cron_spec: str
    next_run_at: datetime
    last_run_at: datetime | None
    last_enqueued_at: datetime | None
    enabled: bool
    catch_up: str
    created_at: datetime
    updated_at: datetime
    input: Any

    @property
    def name(self) -> str:
        """The task's name (as ``FlowScheduleInfo.name`` is the flow's)."""
        return self.task_name


@dataclass(frozen=True, slots=True)
class FlowScheduleInfo:
    """A flow's cron schedule (``cb_list_flow_schedules()``); fields as
    :class:`TaskScheduleInfo`."""

    flow_name: str
    cron_spec: str
    next_run_at: datetime
    last_run_at: datetime | None
    last_enqueued_at: datetime | None
    enabled: bool
    catch_up: str
    created_at: datetime
    updated_at: datetime
    input: Any

    @property
    def name(self) -> str:
        """The flow's name."""
        return self.flow_name

"""catbird: a job engine inside PostgreSQL, with a thin Python runtime.

::

    import catbird

    client = catbird.Client.connect(dsn)
    client.create_queue("orders")
    client.send("orders", {"id": 1})
    msgs = client.read("orders", quantity=10, hide_for=30.0)
    client.delete("orders", [m.id for m in msgs])

    @catbird.task("send_email", max_retries=3, timeout=10.0)
    async def send_email(req: EmailRequest) -> EmailResult: ...

    client.create_task(send_email)
    handle = client.run_task(send_email, EmailRequest(to="a@b.c"))
    catbird.Worker(dsn, tasks=[send_email]).run()     # elsewhere: runs the handler
    result = handle.wait_for_output(timeout=10.0)     # an EmailResult
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import (
    AsyncClient,
    AsyncFlowHandle,
    AsyncReader,
    AsyncTaskHandle,
    Client,
    FlowHandle,
    Reader,
    TaskHandle,
)
from .context import (
    FlowFailure,
    FlowRunContext,
    RunContext,
    cancel,
    cancel_requested,
    complete_early,
    current_flow_run_id,
    current_run,
    current_run_id,
    get_step,
    get_step_async,
    logger,
    wait_for_step,
    wait_for_step_async,
)
from .definitions import CircuitBreaker, DefinitionError, Flow, HandlerOptions, Step, Task, task
from .errors import (
    AlreadyExists,
    CancelRun,
    CatbirdError,
    CompleteEarly,
    InvalidArgument,
    NoRunContext,
    NotFound,
    ObjectInUse,
    PermanentError,
    RunCanceled,
    RunError,
    RunExpired,
    RunFailed,
    RunSkipped,
)
from .models import (
    Binding,
    FlowInfo,
    FlowRunInfo,
    FlowScheduleInfo,
    HealthCheck,
    HealthReport,
    Message,
    MetricSample,
    Notification,
    QueueInfo,
    RunCount,
    RunOutcome,
    StepInfo,
    StepRunInfo,
    TaskFailure,
    TaskInfo,
    TaskRunInfo,
    TaskScheduleInfo,
    WorkerInfo,
)
from .worker import Worker

if TYPE_CHECKING:
    from .wire import SSEEvent, Wire

#: Names exported lazily: they need the ``web`` extra, and ``import catbird``
#: must work without it.
_WIRE_NAMES = frozenset({"SSEEvent", "Wire"})


def __getattr__(name: str) -> Any:
    if name in _WIRE_NAMES:
        from . import wire  # ImportError naming the extra when it is missing

        return getattr(wire, name)
    raise AttributeError(f"module 'catbird' has no attribute {name!r}")


__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncFlowHandle",
    "AsyncReader",
    "AsyncTaskHandle",
    "Binding",
    "CancelRun",
    "CatbirdError",
    "CircuitBreaker",
    "Client",
    "CompleteEarly",
    "DefinitionError",
    "Flow",
    "FlowFailure",
    "FlowHandle",
    "FlowInfo",
    "FlowRunContext",
    "FlowRunInfo",
    "FlowScheduleInfo",
    "HandlerOptions",
    "HealthCheck",
    "HealthReport",
    "InvalidArgument",
    "Message",
    "MetricSample",
    "NoRunContext",
    "NotFound",
    "Notification",
    "ObjectInUse",
    "PermanentError",
    "QueueInfo",
    "Reader",
    "RunCanceled",
    "RunContext",
    "RunCount",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunOutcome",
    "RunSkipped",
    "SSEEvent",
    "Step",
    "StepInfo",
    "StepRunInfo",
    "Task",
    "TaskFailure",
    "TaskHandle",
    "TaskInfo",
    "TaskRunInfo",
    "TaskScheduleInfo",
    "Wire",
    "Worker",
    "WorkerInfo",
    "cancel",
    "cancel_requested",
    "complete_early",
    "current_flow_run_id",
    "current_run",
    "current_run_id",
    "get_step",
    "get_step_async",
    "logger",
    "task",
    "wait_for_step",
    "wait_for_step_async",
]

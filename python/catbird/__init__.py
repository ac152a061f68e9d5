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

from .aio import AsyncClient
from .client import Client
from .context import (
    RunContext,
    cancel,
    cancel_requested,
    current_run,
    current_run_id,
    logger,
)
from .definitions import CircuitBreaker, DefinitionError, HandlerOptions, Task, task
from .errors import (
    AlreadyExists,
    CancelRun,
    CatbirdError,
    InvalidArgument,
    NoRunContext,
    NotFound,
    ObjectInUse,
    RunCanceled,
    RunError,
    RunExpired,
    RunFailed,
    RunSkipped,
)
from .handles import AsyncTaskHandle, TaskHandle
from .models import (
    Binding,
    Message,
    QueueInfo,
    RunOutcome,
    TaskFailure,
    TaskInfo,
    TaskRunInfo,
    WorkerInfo,
)
from .reader import AsyncReader, Reader
from .worker import Worker

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncReader",
    "AsyncTaskHandle",
    "Binding",
    "CancelRun",
    "CatbirdError",
    "CircuitBreaker",
    "Client",
    "DefinitionError",
    "HandlerOptions",
    "InvalidArgument",
    "Message",
    "NoRunContext",
    "NotFound",
    "ObjectInUse",
    "QueueInfo",
    "Reader",
    "RunCanceled",
    "RunContext",
    "RunError",
    "RunExpired",
    "RunFailed",
    "RunOutcome",
    "RunSkipped",
    "Task",
    "TaskFailure",
    "TaskHandle",
    "TaskInfo",
    "TaskRunInfo",
    "Worker",
    "WorkerInfo",
    "cancel",
    "cancel_requested",
    "current_run",
    "current_run_id",
    "logger",
    "task",
]

# flows
from .errors import CompleteEarly
from .flow_handles import AsyncFlowHandle, FlowHandle
from .flows import (
    Flow,
    FlowFailure,
    FlowRunContext,
    Step,
    complete_early,
    current_flow_run_id,
    get_step,
    get_step_async,
    wait_for_step,
    wait_for_step_async,
)
from .models import FlowInfo, FlowRunInfo, StepInfo, StepRunInfo

__all__ += [
    "AsyncFlowHandle",
    "CompleteEarly",
    "Flow",
    "FlowFailure",
    "FlowHandle",
    "FlowInfo",
    "FlowRunContext",
    "FlowRunInfo",
    "Step",
    "StepInfo",
    "StepRunInfo",
    "complete_early",
    "current_flow_run_id",
    "get_step",
    "get_step_async",
    "wait_for_step",
    "wait_for_step_async",
]

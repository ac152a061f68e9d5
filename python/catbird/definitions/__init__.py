"""What users declare: tasks, flows and the handlers they run.

:mod:`.handlers` holds what tasks and flow steps share (options, signature
checks), :mod:`.tasks` the :class:`Task` definition and :mod:`.flows` the
flow DSL (:class:`Flow`, :class:`Step`); :mod:`.schedules` the cron
schedule a task or flow may declare. Nothing here touches the database.
"""

from .flows import Flow, Step, flow_name
from .handlers import (
    CircuitBreaker,
    DefinitionError,
    Handler,
    HandlerOptions,
    Param,
    check_name,
    make_handler,
)
from .schedules import Schedule, make_schedule
from .tasks import Task, definition_args, output_decoder, task, task_name

__all__ = [
    "CircuitBreaker",
    "DefinitionError",
    "Flow",
    "Handler",
    "HandlerOptions",
    "Param",
    "Schedule",
    "Step",
    "Task",
    "check_name",
    "definition_args",
    "flow_name",
    "make_handler",
    "make_schedule",
    "output_decoder",
    "task",
    "task_name",
]

"""Statements of the dashboard's reads (``85_dashboard.sql``): peeking at a
queue, run counts by status, and runs filtered by status."""

from __future__ import annotations

from datetime import datetime

from ..models import FlowRunInfo, Message, RunCount, TaskRunInfo
from ._call import Call, Query, each
from .flows import FLOW_RUN_COLUMNS
from .queues import MESSAGE_COLUMNS
from .tasks import TASK_RUN_COLUMNS

_PEEK = Call("cb_peek", returns=MESSAGE_COLUMNS, queue="text", quantity="int")
_LIST_RUN_COUNTS = Call(
    "cb_list_run_counts", returns="kind, name, status, runs", since="timestamptz"
)
_BY_STATUS_ARGS = {"name": "text", "status": "text", "lim": "int", "before_id": "bigint"}
_LIST_TASK_RUNS_BY_STATUS = Call(
    "cb_list_task_runs_by_status", returns=TASK_RUN_COLUMNS, **_BY_STATUS_ARGS
)
_LIST_FLOW_RUNS_BY_STATUS = Call(
    "cb_list_flow_runs_by_status", returns=FLOW_RUN_COLUMNS, **_BY_STATUS_ARGS
)

_messages = each(Message)
_run_counts = each(RunCount)
_task_runs = each(TaskRunInfo)
_flow_runs = each(FlowRunInfo)


def peek(queue: str, *, quantity: int = 20) -> Query[list[Message]]:
    """Up to ``quantity`` messages of the queue in claim order, claiming none."""
    return _PEEK.query({"queue": queue, "quantity": quantity}, _messages)


def list_run_counts(since: datetime) -> Query[list[RunCount]]:
    """Runs of every task and flow created since ``since``, counted by status."""
    return _LIST_RUN_COUNTS.query({"since": since}, _run_counts)


def list_task_runs_by_status(
    name: str, *, status: str | None = None, limit: int = 100, before_id: int | None = None
) -> Query[list[TaskRunInfo]]:
    """The task's runs in ``status`` (every status when ``None``), newest first."""
    params = {"name": name, "status": status, "lim": limit, "before_id": before_id}
    return _LIST_TASK_RUNS_BY_STATUS.query(params, _task_runs)


def list_flow_runs_by_status(
    name: str, *, status: str | None = None, limit: int = 100, before_id: int | None = None
) -> Query[list[FlowRunInfo]]:
    """The flow's runs in ``status`` (every status when ``None``), newest first."""
    params = {"name": name, "status": status, "lim": limit, "before_id": before_id}
    return _LIST_FLOW_RUNS_BY_STATUS.query(params, _flow_runs)

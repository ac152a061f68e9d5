"""Statements of cron schedules (``60_schedules.sql``): creating, deleting,
enabling, listing and executing the schedules of tasks and flows, and the
cron tick preview."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, LiteralString

from ..models import FlowScheduleInfo, TaskScheduleInfo
from ._call import (
    Call,
    Query,
    Rows,
    Statement,
    boolean,
    each,
    integer,
    jsonb,
    list_or_null,
    void,
)

SCHEDULE_COLUMNS: LiteralString = (
    "cron_spec, next_run_at, last_run_at, last_enqueued_at, enabled, catch_up,"
    " created_at, updated_at, input"
)

_SCHEDULE_ARGS = {"cron_spec": "text", "input": "jsonb", "catch_up": "text"}
_EXECUTE_ARGS = {"batch_size": "int", "max_schedules": "int"}

_CREATE_TASK_SCHEDULE = Call("cb_create_task_schedule", task_name="text", **_SCHEDULE_ARGS)
_CREATE_FLOW_SCHEDULE = Call("cb_create_flow_schedule", flow_name="text", **_SCHEDULE_ARGS)
_DELETE_TASK_SCHEDULE = Call("cb_delete_task_schedule", task_name="text")
_DELETE_FLOW_SCHEDULE = Call("cb_delete_flow_schedule", flow_name="text")
_ENABLE_TASK_SCHEDULE = Call("cb_enable_task_schedule", task_name="text")
_ENABLE_FLOW_SCHEDULE = Call("cb_enable_flow_schedule", flow_name="text")
_DISABLE_TASK_SCHEDULE = Call("cb_disable_task_schedule", task_name="text")
_DISABLE_FLOW_SCHEDULE = Call("cb_disable_flow_schedule", flow_name="text")
_LIST_TASK_SCHEDULES = Call("cb_list_task_schedules", returns="task_name, " + SCHEDULE_COLUMNS)
_LIST_FLOW_SCHEDULES = Call("cb_list_flow_schedules", returns="flow_name, " + SCHEDULE_COLUMNS)
_EXECUTE_DUE_TASK_SCHEDULES = Call(
    "cb_execute_due_task_schedules", task_names="text[]", **_EXECUTE_ARGS
)
_EXECUTE_DUE_FLOW_SCHEDULES = Call(
    "cb_execute_due_flow_schedules", flow_names="text[]", **_EXECUTE_ARGS
)
# Not a plain Call: without a start time the ticks follow the engine clock
# (cb_now(), which catbird.fake_now moves), not the client's.
_NEXT_CRON_TICKS = Statement(
    "next_cron_ticks",
    "SELECT catbird.cb_next_cron_ticks(cron_spec => %(cron_spec)s::text,"
    " from_time => coalesce(%(from_time)s::timestamptz, catbird.cb_now()),"
    " quantity => %(quantity)s::int)",
)


def _schedule_input(input: Any) -> Any:
    """A schedule's input: ``None`` is the engine's default, the empty object."""
    return jsonb({} if input is None else input)


def create_task_schedule(
    name: str, cron_spec: str, *, input: Any = None, catch_up: str = "one"
) -> Query[None]:
    params = {
        "task_name": name,
        "cron_spec": cron_spec,
        "input": _schedule_input(input),
        "catch_up": catch_up,
    }
    return _CREATE_TASK_SCHEDULE.query(params, void)


def create_flow_schedule(
    name: str, cron_spec: str, *, input: Any = None, catch_up: str = "one"
) -> Query[None]:
    params = {
        "flow_name": name,
        "cron_spec": cron_spec,
        "input": _schedule_input(input),
        "catch_up": catch_up,
    }
    return _CREATE_FLOW_SCHEDULE.query(params, void)


def delete_task_schedule(name: str) -> Query[bool]:
    return _DELETE_TASK_SCHEDULE.query({"task_name": name}, boolean)


def delete_flow_schedule(name: str) -> Query[bool]:
    return _DELETE_FLOW_SCHEDULE.query({"flow_name": name}, boolean)


def enable_task_schedule(name: str) -> Query[bool]:
    return _ENABLE_TASK_SCHEDULE.query({"task_name": name}, boolean)


def enable_flow_schedule(name: str) -> Query[bool]:
    return _ENABLE_FLOW_SCHEDULE.query({"flow_name": name}, boolean)


def disable_task_schedule(name: str) -> Query[bool]:
    return _DISABLE_TASK_SCHEDULE.query({"task_name": name}, boolean)


def disable_flow_schedule(name: str) -> Query[bool]:
    return _DISABLE_FLOW_SCHEDULE.query({"flow_name": name}, boolean)


_task_schedules = each(TaskScheduleInfo)
_flow_schedules = each(FlowScheduleInfo)


def list_task_schedules() -> Query[list[TaskScheduleInfo]]:
    return _LIST_TASK_SCHEDULES.query({}, _task_schedules)


def list_flow_schedules() -> Query[list[FlowScheduleInfo]]:
    return _LIST_FLOW_SCHEDULES.query({}, _flow_schedules)


def execute_due_task_schedules(
    names: Iterable[str] | None = None, *, batch_size: int = 100, max_schedules: int = 1000
) -> Query[int]:
    """Fire the due task schedules (of ``names``, or all); returns the runs enqueued."""
    params = {
        "task_names": list_or_null(names),
        "batch_size": batch_size,
        "max_schedules": max_schedules,
    }
    return _EXECUTE_DUE_TASK_SCHEDULES.query(params, integer)


def execute_due_flow_schedules(
    names: Iterable[str] | None = None, *, batch_size: int = 100, max_schedules: int = 1000
) -> Query[int]:
    """Fire the due flow schedules (of ``names``, or all); returns the runs enqueued."""
    params = {
        "flow_names": list_or_null(names),
        "batch_size": batch_size,
        "max_schedules": max_schedules,
    }
    return _EXECUTE_DUE_FLOW_SCHEDULES.query(params, integer)


def _ticks(rows: Rows) -> list[datetime]:
    return [row[0] for row in rows]


def next_cron_ticks(
    cron_spec: str, *, after: datetime | None = None, quantity: int = 5
) -> Query[list[datetime]]:
    """The next ``quantity`` ticks of ``cron_spec`` after ``after`` (``None``: the engine's now)."""
    params = {"cron_spec": cron_spec, "from_time": after, "quantity": quantity}
    return _NEXT_CRON_TICKS.query(params, _ticks)

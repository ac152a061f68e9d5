"""``catbird task ...``: task definitions, and their runs (see :mod:`.runs`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import RenderableType
from rich.markup import escape

from ..client import Client
from ..models import TaskInfo
from ._common import App
from .output import Column, fmt_duration, fmt_ts, record, table
from .runs import RunKind, add_run_commands

__all__ = ["TASKS", "app"]

app = App(help="Tasks: definitions, runs, run, cancel, retry, purge, bind.")


def tasks_table(tasks: Sequence[TaskInfo], width: int, full: bool) -> RenderableType:
    columns = [
        Column("name", style="bold"),
        Column("condition", fit="cut"),
        Column("retention", hide=2),
        Column("retries", justify="right", hide=5),
        Column("on-fail", hide=1),
        Column("created", hide=3, stack=True),
        Column("description", fit="cut", hide=4),
    ]
    rows = [
        [
            escape(t.name),
            escape(t.condition or "-"),
            fmt_duration(t.retention_period),
            "-" if t.max_retries is None else str(t.max_retries),
            "yes" if t.on_fail else "no",
            fmt_ts(t.created_at),
            escape(t.description or ""),
        ]
        for t in tasks
    ]
    return table("Tasks", columns, rows, width=width, full=full)


def _render_task(task: TaskInfo, steps: Any, width: int, full: bool) -> list[RenderableType]:
    return [tasks_table([task], width, full)]


TASKS = RunKind(
    noun="task",
    start_verb="enqueue",
    started="enqueued",
    run=Client.run_task,
    get_run=Client.get_task_run,
    list_runs=Client.list_task_runs,
    cancel_run=Client.cancel_task_run,
    retry_run=Client.retry_task_run,
    bind=Client.bind_task,
    unbind=Client.unbind_task,
    purge_runs=Client.purge_task_runs,
    clear_runs=Client.clear_task_runs,
    list_all=Client.list_tasks,
    get=Client.get_task,
    definition_doc=record,
    definitions_table=tasks_table,
    render_definition=_render_task,
    show_help="Show a task definition and its latest runs, or one run (--run ID).",
    show_run_help="Show this run instead of the definition.",
    cancel_help="Cancel a queued or started run (a worker running it is told to stop).",
    retry_help="Queue a failed, canceled or expired run again (attempts start over).",
    counts_attempts=True,
)


add_run_commands(app, TASKS)

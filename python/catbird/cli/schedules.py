"""``catbird schedule ...``: cron schedules of tasks and flows.

::

    catbird schedule ls
    catbird schedule create nightly_report "30 2 * * *" --input '{"kind": "daily"}'
    catbird schedule create order_flow "@hourly" --flow --catch-up skip
    catbird schedule disable nightly_report       # enable, delete: the same way
    catbird schedule next "0 9 * * 1-5" -n 3      # preview a spec (UTC)

NAME is a task's name; ``--flow`` makes it a flow's (a task and a flow may
share a name, so the flag is never guessed). A task or flow has at most one
schedule: ``create`` on one that has a schedule updates it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..client import Client
from ..models import CATCH_UP_POLICIES, FlowScheduleInfo, TaskScheduleInfo
from ._common import (
    App,
    DsnOption,
    FullOption,
    JsonOption,
    fail,
    open_client,
    out,
    parse_json,
    parse_timestamp,
    report,
    usage_error,
)
from .output import Column, fmt_json, fmt_ts, print_json, record, table

__all__ = ["app"]

app = App(help="Cron schedules of tasks and flows: ls, create, delete, enable, disable, next.")

ScheduleInfo = TaskScheduleInfo | FlowScheduleInfo

NameArg = Annotated[
    str, typer.Argument(help="The task's name (the flow's with --flow).", show_default=False)
]
FlowFlag = Annotated[bool, typer.Option("--flow", help="NAME is a flow, not a task.")]
SpecArg = Annotated[
    str,
    typer.Argument(
        help='Cron spec, UTC: five fields ("0 9 * * 1-5") or @hourly, @daily, @weekly, ...',
        show_default=False,
    ),
]


def _kind(flow: bool) -> str:
    return "flow" if flow else "task"


def _doc(s: ScheduleInfo) -> dict[str, Any]:
    """A schedule as JSON: its record, with ``kind`` and ``name``."""
    kind = "task" if isinstance(s, TaskScheduleInfo) else "flow"
    return {"kind": kind, "name": s.name, **record(s)}


def schedules_table(schedules: Sequence[ScheduleInfo], *, width: int, full: bool) -> RenderableType:
    """The schedules; on a narrow terminal input and last tick go first, then timestamps stack."""
    columns = [
        Column("kind"),
        Column("name", style="bold"),
        Column("spec"),
        Column("next run", stack=True),
        Column("last run", stack=True, hide=2),
        Column("catch-up", hide=1),
        Column("on"),
        Column("input", fit="cut", hide=3),
    ]
    rows = [
        [
            "task" if isinstance(s, TaskScheduleInfo) else "flow",
            escape(s.name),
            escape(s.cron_spec),
            fmt_ts(s.next_run_at),
            fmt_ts(s.last_run_at),
            s.catch_up,
            "yes" if s.enabled else "[yellow]no[/]",
            escape(fmt_json(s.input)),
        ]
        for s in schedules
    ]
    return table("Schedules", columns, rows, width=width, full=full)


def _all_schedules(client: Client) -> list[ScheduleInfo]:
    schedules: list[ScheduleInfo] = [*client.list_task_schedules(), *client.list_flow_schedules()]
    schedules.sort(key=lambda s: (s.next_run_at, s.name))
    return schedules


def _find(client: Client, name: str, flow: bool) -> ScheduleInfo | None:
    found = client.list_flow_schedules() if flow else client.list_task_schedules()
    return next((s for s in found if s.name == name), None)


@app.command("ls")
def schedule_ls(
    dsn: DsnOption = None, as_json: JsonOption = False, full: FullOption = False
) -> None:
    """List the schedules of tasks and flows, next tick first (times in local time)."""
    with open_client(dsn) as client:
        schedules = _all_schedules(client)
    if as_json:
        print_json([_doc(s) for s in schedules])
    elif not schedules:
        out.print('No schedules. Create one with: catbird schedule create NAME "0 9 * * 1-5"')
    else:
        out.print(schedules_table(schedules, width=out.width, full=full))


@app.command("create")
def schedule_create(
    name: NameArg,
    spec: SpecArg,
    flow: FlowFlag = False,
    input: Annotated[
        str | None,
        typer.Option("--input", help="Input of every scheduled run, as JSON (default: {})."),
    ] = None,
    catch_up: Annotated[
        str,
        typer.Option(
            "--catch-up",
            help="Missed ticks after downtime: skip (only the latest), one (the oldest, once)"
            " or all (every one).",
        ),
    ] = "one",
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a task's (or flow's) schedule, or update the one it has.

    Each tick enqueues a run with --input. The same spec again keeps the
    next tick; a new one starts over from now.
    """
    if catch_up not in CATCH_UP_POLICIES:
        usage_error(f"--catch-up must be one of {', '.join(CATCH_UP_POLICIES)}, not {catch_up!r}")
    value = {} if input is None else parse_json(input, "--input")
    with open_client(dsn) as client:
        if flow:
            client.create_flow_schedule(name, spec, input=value, catch_up=catch_up)
        else:
            client.create_task_schedule(name, spec, input=value, catch_up=catch_up)
        schedule = _find(client, name, flow)
    if schedule is None:  # deleted meanwhile
        fail(f'{_kind(flow)} "{name}" has no schedule')
    report(
        as_json,
        _doc(schedule),
        f"[green]Scheduled[/] {_kind(flow)} [bold]{escape(name)}[/] at"
        f" [bold]{escape(spec)}[/] (catch-up {catch_up}); next run"
        f" {fmt_ts(schedule.next_run_at)}"
        + ("" if schedule.enabled else " [yellow](disabled: enable it to run)[/]")
        + ".",
    )


@app.command("delete")
def schedule_delete(
    name: NameArg, flow: FlowFlag = False, dsn: DsnOption = None, as_json: JsonOption = False
) -> None:
    """Delete a task's (or flow's) schedule; the task or flow stays."""
    with open_client(dsn) as client:
        deleted = client.delete_flow_schedule(name) if flow else client.delete_task_schedule(name)
    if not deleted:
        fail(f'{_kind(flow)} "{name}" has no schedule')
    report(
        as_json,
        {"kind": _kind(flow), "name": name, "deleted": True},
        f"[green]Deleted[/] the schedule of {_kind(flow)} [bold]{escape(name)}[/].",
    )


def _set_enabled(name: str, flow: bool, enabled: bool, dsn: str | None, as_json: bool) -> None:
    with open_client(dsn) as client:
        toggle: Callable[[str], bool]
        if flow:
            toggle = client.enable_flow_schedule if enabled else client.disable_flow_schedule
        else:
            toggle = client.enable_task_schedule if enabled else client.disable_task_schedule
        found = toggle(name)
        schedule = _find(client, name, flow) if found else None
    if schedule is None:
        fail(f'{_kind(flow)} "{name}" has no schedule')
    verb = "Enabled" if enabled else "Disabled"
    after = f"; next run {fmt_ts(schedule.next_run_at)}" if enabled else ""
    report(
        as_json,
        _doc(schedule),
        f"[green]{verb}[/] the schedule of {_kind(flow)} [bold]{escape(name)}[/]{after}.",
    )


@app.command("enable")
def schedule_enable(
    name: NameArg, flow: FlowFlag = False, dsn: DsnOption = None, as_json: JsonOption = False
) -> None:
    """Resume a schedule from its next tick after now (ticks missed while disabled are dropped)."""
    _set_enabled(name, flow, True, dsn, as_json)


@app.command("disable")
def schedule_disable(
    name: NameArg, flow: FlowFlag = False, dsn: DsnOption = None, as_json: JsonOption = False
) -> None:
    """Pause a schedule (it keeps its spec, input and policy)."""
    _set_enabled(name, flow, False, dsn, as_json)


@app.command("next")
def schedule_next(
    spec: SpecArg,
    quantity: Annotated[
        int, typer.Option("-n", "--quantity", help="How many ticks.", min=1, max=1000)
    ] = 5,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Start after this ISO 8601 time (default: now)."),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the next ticks of a cron spec, as the engine computes them (UTC)."""
    start = parse_timestamp(after, "--after")
    with open_client(dsn) as client:
        ticks = client.next_cron_ticks(spec, after=start, quantity=quantity)
    if as_json:
        print_json({"spec": spec, "ticks": ticks})
        return
    for tick in ticks:
        out.print(_tick(tick))


def _tick(tick: datetime) -> str:
    """A tick in UTC (as specs are) and, when it differs, local time."""
    utc = tick.astimezone(UTC).strftime("%Y-%m-%d %H:%M %a UTC")
    local = tick.astimezone()
    if local.utcoffset() == timedelta(0):
        return utc
    return f"{utc}  ({local.strftime('%Y-%m-%d %H:%M %Z')})"

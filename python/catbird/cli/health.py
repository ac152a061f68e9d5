"""``catbird health``: the engine's health report (``cb_health``) and an exit code.

::

    catbird health                      # the checks that are not ok, and a summary
    catbird health --all                # every check
    catbird health --json               # the whole report, for monitoring
    catbird health --queued-age 60      # thresholds in seconds (see --help)

Exit status: 0 every check is ok, 3 a check is at warning level, 4 a check
is critical. 1 (catbird or database error) and 2 (usage error) keep their
meaning for every command, so the health levels use the next codes.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..models import HealthCheck, HealthReport
from ._common import DsnOption, FullOption, JsonOption, open_client, out
from .output import Column, print_json, record, table

__all__ = ["EXIT_CRITICAL", "EXIT_WARNING", "health_command"]

EXIT_WARNING = 3
EXIT_CRITICAL = 4
_EXIT = {"ok": 0, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL}
_STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red"}


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.0%}"
    if unit == "seconds":
        return f"{value:g}s"
    return f"{value:g}"


def checks_table(checks: tuple[HealthCheck, ...], *, width: int, full: bool) -> RenderableType:
    columns = [
        Column("status"),
        Column("check", style="bold"),
        Column("subject", fit="cut"),
        Column("value", justify="right"),
        Column("threshold", justify="right", hide=1),
        Column("message", fit="cut", hide=2),
    ]
    rows = [
        [
            f"[{_STYLE[c.status]}]{c.status}[/]",
            c.check,
            escape(c.subject or "-"),
            _number(c.value, c.unit),
            _number(c.threshold, c.unit),
            escape(c.message),
        ]
        for c in checks
    ]
    return table("Health checks", columns, rows, width=width, full=full)


def summary(report: HealthReport) -> str:
    problems = report.problems
    style = _STYLE[report.status]
    if not problems:
        return f"[{style}]healthy[/]: {len(report.checks)} checks ok"
    counts = {s: sum(1 for c in problems if c.status == s) for s in ("critical", "warning")}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    return f"[{style}]{report.status}[/]: {', '.join(parts)} of {len(report.checks)} checks"


def health_command(
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Show every check, not only those that are not ok.")
    ] = False,
    dead_tuple_ratio: Annotated[
        float,
        typer.Option("--dead-tuple-ratio", help="Dead / all tuples of a table.", min=0, max=1),
    ] = 0.2,
    dead_tuple_min: Annotated[
        int,
        typer.Option("--dead-tuple-min", help="Fewer dead tuples are always ok.", min=0),
    ] = 1000,
    xmin_age: Annotated[
        float,
        typer.Option("--xmin-age", help="Seconds a transaction may hold back vacuum.", min=0),
    ] = 300.0,
    queued_age: Annotated[
        float,
        typer.Option("--queued-age", help="Seconds visible work may wait unclaimed.", min=0),
    ] = 300.0,
    lease_overdue: Annotated[
        float,
        typer.Option(
            "--lease-overdue", help="Seconds a started run may stay past its lease.", min=0
        ),
    ] = 60.0,
    heartbeat_age: Annotated[
        float,
        typer.Option("--heartbeat-age", help="Seconds a worker may go without heartbeat.", min=0),
    ] = 60.0,
    critical_factor: Annotated[
        float,
        typer.Option("--critical-factor", help="Critical above this times a threshold.", min=1),
    ] = 3.0,
) -> None:
    """Check the engine's health: dead tuples, the oldest transaction holding back
    vacuum, the oldest queued work, runs past their lease, silent workers.

    Exit status 0 when every check is ok, 3 on a warning, 4 when critical.
    """
    with open_client(dsn) as client:
        report = client.health(
            dead_tuple_ratio=dead_tuple_ratio,
            dead_tuple_min=dead_tuple_min,
            xmin_age=xmin_age,
            queued_age=queued_age,
            lease_overdue=lease_overdue,
            heartbeat_age=heartbeat_age,
            critical_factor=critical_factor,
        )
    if as_json:
        print_json(record(report))
    else:
        shown = report.checks if show_all else report.problems
        if shown:
            out.print(checks_table(shown, width=out.width, full=full))
        out.print(summary(report))
    raise typer.Exit(_EXIT[report.status])

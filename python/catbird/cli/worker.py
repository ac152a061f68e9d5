"""``catbird worker ...``: run a worker, list the registered ones.

::

    catbird worker myapp.jobs:worker        # = catbird worker run myapp.jobs:worker
    catbird worker ls                       # registered workers and their handlers

``worker`` is a group whose default command is ``run``: anything that is not
a subcommand name (``run``, ``ls``) is the target of ``run``, so the
original form ``catbird worker MODULE:ATTRIBUTE`` keeps working.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..errors import CatbirdError
from ..models import WorkerInfo
from ._common import (
    Command,
    DsnOption,
    FullOption,
    Group,
    JsonOption,
    errors,
    fail,
    open_client,
    out,
    require_dsn,
    usage_error,
)
from .output import Column, fmt_ts, print_json, record, table

__all__ = ["app", "load_target", "worker_command"]


class WorkerGroup(Group):
    """A group whose default command is ``run`` (see the module documentation)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=WorkerGroup,
    help="Workers: run one (catbird worker MODULE:ATTRIBUTE, short for worker run), list them.",
    no_args_is_help=True,
)


def load_target(target: str) -> Any:
    """Import ``module:attr`` (attr may be dotted) from the current directory too."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        usage_error(f"expected MODULE:ATTRIBUTE (e.g. myapp.tasks:worker), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        usage_error(f"cannot import {module_name!r}: {exc}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            usage_error(f"{module_name!r} has no attribute {attr!r}")
    return obj


@app.command("run", cls=Command)
def worker_command(
    target: Annotated[
        str,
        typer.Argument(
            help="MODULE:ATTRIBUTE of a catbird.Worker, a Task, a Flow, or a list of them.",
            show_default=False,
        ),
    ],
    dsn: DsnOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", help="Override every handler's concurrency.", min=1),
    ] = None,
    shutdown_timeout: Annotated[
        float,
        typer.Option("--shutdown-timeout", help="Grace period (s) for in-flight handlers.", min=0),
    ] = 5.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Poll (s) when no event wakes the worker.")
    ] = 1.0,
    lease: Annotated[
        float, typer.Option("--lease", help="Seconds a claimed run stays hidden between renewals.")
    ] = 30.0,
    schedule_interval: Annotated[
        float,
        typer.Option(
            "--schedule-interval",
            help="Seconds between firing the due schedules of the tasks and flows served.",
            min=0.01,
        ),
    ] = 5.0,
    no_schedules: Annotated[
        bool,
        typer.Option("--no-schedules", help="Do not fire schedules (e.g. when pg_cron does it)."),
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Python logging level.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port).",
            min=0,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the metrics endpoint listens on.")
    ] = "127.0.0.1",
) -> None:
    """Run handlers until SIGINT/SIGTERM, then stop gracefully (exit status 0).

    With a Worker object, its own settings are used (--concurrency still
    applies); with tasks, a Worker is built from --dsn or CATBIRD_DSN.
    """
    import logging

    from ..definitions import Task
    from ..definitions.flows import Flow
    from ..worker import Worker

    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        usage_error(f"unknown log level {log_level!r}")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    obj = load_target(target)
    if isinstance(obj, Worker):
        worker = obj
        if concurrency is not None:
            worker.concurrency = concurrency
    else:
        items = list(obj) if isinstance(obj, list | tuple) else [obj]
        tasks = [i for i in items if isinstance(i, Task)]
        flows = [i for i in items if isinstance(i, Flow)]
        if not items or len(tasks) + len(flows) < len(items):
            usage_error(
                f"{target} must be a catbird.Worker, a catbird.Task, a catbird.Flow"
                " or a list of tasks and flows"
            )
        try:
            worker = Worker(
                require_dsn(dsn),
                tasks=tasks,
                flows=flows,
                concurrency=concurrency,
                shutdown_timeout=shutdown_timeout,
                poll_interval=poll_interval,
                lease=lease,
                schedule_interval=None if no_schedules else schedule_interval,
            )
        except (CatbirdError, TypeError) as exc:
            usage_error(str(exc))
    if metrics_port is not None:
        worker.serve_metrics(metrics_port, metrics_host)
    with errors():
        try:
            worker.run()
        except OSError as exc:  # the metrics endpoint could not listen
            fail(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}")


def handlers_text(w: WorkerInfo) -> str:
    """A worker's handlers: its tasks, then its flows' steps as ``flow.step``."""
    tasks = [str(h.get("task_name")) for h in w.task_handlers]
    steps = [f"{h.get('flow_name')}.{h.get('step_name')}" for h in w.step_handlers]
    return ", ".join([*tasks, *steps]) or "-"


def workers_table(workers: Sequence[WorkerInfo], *, width: int, full: bool) -> RenderableType:
    columns = [
        Column("id", style="bold"),
        Column("handlers", fit="cut"),
        Column("started", stack=True, hide=1),
        Column("heartbeat", stack=True),
    ]
    rows = [
        [str(w.id), escape(handlers_text(w)), fmt_ts(w.started_at), fmt_ts(w.last_heartbeat_at)]
        for w in workers
    ]
    return table("Workers", columns, rows, width=width, full=full)


@app.command("ls", cls=Command)
def worker_ls(dsn: DsnOption = None, as_json: JsonOption = False, full: FullOption = False) -> None:
    """List the registered workers: their tasks and flow steps, last heartbeat."""
    with open_client(dsn) as client:
        workers = client.list_workers()
    if as_json:
        print_json([record(w) for w in workers])
    elif not workers:
        out.print("No workers registered. Start one with: catbird worker MODULE:ATTRIBUTE")
    else:
        out.print(workers_table(workers, width=out.width, full=full))

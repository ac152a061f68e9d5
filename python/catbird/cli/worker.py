"""``catbird worker MODULE:ATTRIBUTE``: run handlers until SIGINT/SIGTERM."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import CatbirdError
from ._common import DsnOption, errors, require_dsn, usage_error

__all__ = ["load_target", "worker_command"]


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
    log_level: Annotated[str, typer.Option("--log-level", help="Python logging level.")] = "INFO",
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
            )
        except (CatbirdError, TypeError) as exc:
            usage_error(str(exc))
    with errors():
        worker.run()

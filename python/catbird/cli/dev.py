"""``catbird dev`` (a local PostgreSQL with catbird) and ``catbird demo`` (the quick start)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..client import Client
from ..db import embedded as _dev
from ._common import JsonOption, err, errors, open_client, out
from .demo import run_demo
from .output import print_json, record

__all__ = ["demo_command", "dev_command"]


def dev_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Cluster directory (created on first use). Default: the user data dir.",
            file_okay=False,
        ),
    ] = None,
    database: Annotated[
        str, typer.Option("--database", help="Database to create and install catbird into.")
    ] = _dev.DEFAULT_DATABASE,
) -> None:
    """Run a local PostgreSQL 18 with catbird installed, print its DSN, wait for Ctrl-C.

    A second 'catbird dev' on the same directory attaches to the running server
    (and prints the same DSN); the server stops with the 'catbird dev' that
    started it.
    """
    with errors():
        _dev.run_dev(data_dir, database)


def demo_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Cluster directory to start (or reuse). Default: a temporary directory.",
            file_okay=False,
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary data directory at the end.")
    ] = False,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="Run the demo in this existing database instead of an embedded server.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The quick start: queues, topics, priorities, dedup, visibility and acks, step by step.

    Starts an embedded PostgreSQL 18 (or reuses the one running in --data-dir),
    runs the demo with catbird.Client, and stops the server if it started it.
    """
    narrative = err if as_json else out
    if dsn is not None:
        with open_client(dsn) as client:
            result = run_demo(client, narrative)
        if as_json:
            print_json(record(result))
        return

    temporary = data_dir is None
    if data_dir is None:
        base = Path(tempfile.mkdtemp(prefix="catbird-demo-"))
        data_dir = base / "pg18"
    else:
        base = data_dir
    try:
        with errors():
            narrative.print(f"[dim]Starting PostgreSQL 18 in {escape(str(data_dir))} …[/]")
            server = _dev.start_embedded(data_dir)
            try:
                how = "started" if server.started else "reusing the running server"
                narrative.print(f"[dim]PostgreSQL 18 {how}: {escape(server.dsn)}[/]")
                with Client.connect(server.dsn) as client:
                    result = run_demo(client, narrative)
            finally:
                if server.started:
                    narrative.print("[dim]Stopping the PostgreSQL the demo started.[/]")
                    server.stop()
    finally:
        if temporary and not keep:
            shutil.rmtree(base, ignore_errors=True)
    if temporary and keep:
        narrative.print(
            f"Kept the data directory: [bold]catbird dev --data-dir {escape(str(data_dir))}[/]"
            " starts it again."
        )
    if as_json:
        document = record(result)
        document["data_dir"] = None if temporary and not keep else str(data_dir)
        print_json(document)

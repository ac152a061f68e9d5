"""The definition and run-lifecycle commands, written once for tasks and flows.

``catbird task|flow ls/show/run/runs/cancel/retry/purge/bind/unbind`` differ only in the client
calls they make and a few words; a :class:`RunKind` holds those, and
:func:`add_run_commands` registers the commands on the kind's group.
"""

# No ``from __future__ import annotations`` here: the commands are closures
# whose option annotations typer must evaluate from their local scope.

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape

from ..client import Client
from ..errors import RunError
from ..models import FlowRunInfo, TaskRunInfo
from ._common import (
    EXIT_ERROR,
    App,
    DsnOption,
    FullOption,
    HeadersOption,
    JsonOption,
    concurrency_key_option,
    delay_option,
    delivery_options,
    fail,
    open_client,
    out,
    parse_json,
    priority_option,
    report,
    usage_error,
)
from .output import Column, fmt_json, fmt_ts, print_json, record, status, table
from .progress import progress

__all__ = ["RunKind", "add_run_commands", "run_result", "runs_table"]

Run = TaskRunInfo | FlowRunInfo

_FINISHED_AT = ("completed_at", "failed_at", "skipped_at", "expired_at", "canceled_at")


@dataclass(frozen=True)
class RunKind:
    """What the run commands of one kind (tasks, flows) call and say."""

    noun: str
    """``task`` or ``flow``: the group's name and the key naming it in JSON output."""
    start_verb: str
    """What ``run`` does: "enqueue" (a task) or "start" (a flow)."""
    started: str
    """What ``run`` did: "enqueued" or "started"."""
    run: Callable[..., Any]
    """``Client.run_task``-like: (client, name, input, **options) -> handle."""
    get_run: Callable[[Client, str, int], Run]
    list_runs: Callable[..., Sequence[Run]]
    cancel_run: Callable[..., bool]
    retry_run: Callable[[Client, str, int], bool]
    bind: Callable[[Client, str, str], None]
    unbind: Callable[[Client, str, str], bool]
    purge_runs: Callable[[Client, str, float], int]
    clear_runs: Callable[[Client, str], int]
    list_all: Callable[[Client], Sequence[Any]]
    """The definitions, for ``ls``."""
    get: Callable[[Client, str], Any]
    """The definition, for ``show``."""
    definition_doc: Callable[[Any], dict[str, Any]]
    definitions_table: Callable[[Sequence[Any], int, bool], RenderableType]
    """(definitions, width, full) -> the table ``ls`` prints."""
    render_definition: Callable[[Any, Sequence[Any] | None, int, bool], list[RenderableType]]
    """(definition, steps of the --run run or None, width, full) -> what ``show`` prints."""
    show_help: str
    show_run_help: str
    cancel_help: str
    retry_help: str
    get_steps: Callable[[Client, str, int], Sequence[Any]] | None = None
    """Flows: ``show --run`` marks the DAG with these; tasks (None) show the run instead."""
    counts_attempts: bool = False
    """Whether the runs table has an attempts column (a flow's attempts are its steps')."""
    cancel_reports_status: bool = False
    """Whether ``cancel --json`` reports the status after the cancel (canceling/canceled)."""


def run_result(run: Run) -> str:
    """The output of a completed run, or why it did not complete."""
    if run.status == "completed":
        return fmt_json(run.output)
    if run.status in ("canceled", "canceling"):
        return run.cancel_reason or ""
    step = getattr(run, "failed_step_name", None)
    if run.status == "failed" and step:
        return f"{step}: {run.error_message or ''}"
    return run.error_message or ""


def _finished_at(run: Run) -> datetime | None:
    return next((getattr(run, f) for f in _FINISHED_AT if getattr(run, f, None)), None)


def runs_table(
    kind: RunKind, name: str, runs: Sequence[Run], *, width: int, full: bool
) -> RenderableType:
    columns = [
        Column("id", justify="right", style="bold"),
        Column("status"),
        *([Column("attempts", justify="right", hide=3)] if kind.counts_attempts else []),
        Column("priority", justify="right", hide=1),
        Column("created", hide=4, stack=True),
        Column("finished", hide=2, stack=True),
        Column("input", fit="cut"),
        Column("output / error", fit="cut"),
    ]
    rows = [
        [
            str(r.id),
            status(r.status),
            *([str(getattr(r, "attempts", 0))] if kind.counts_attempts else []),
            str(r.priority),
            fmt_ts(r.created_at),
            fmt_ts(_finished_at(r)),
            escape(fmt_json(r.input)),
            escape(run_result(r)),
        ]
        for r in runs
    ]
    title = f"Runs of {escape(name)} (newest first)"
    return table(title, columns, rows, width=width, full=full)


def _run_details(run: Run, name: str, width: int) -> RenderableType:
    rows = []
    for key, value in record(run).items():
        if value is None:
            continue
        if isinstance(value, datetime):
            text = value.isoformat()
        elif key == "error_detail":
            text = str(value).rstrip()
        elif key in ("input", "headers", "output"):
            text = fmt_json(value)
        else:
            text = str(value)
        rows.append([key, escape(text)])
    columns = [Column("field", style="bold"), Column("value", fit="wrap")]
    return table(f"Run {run.id} of {escape(name)}", columns, rows, width=width)


def add_run_commands(app: App, kind: RunKind) -> None:
    """Register ls, show, run, runs, cancel, retry, purge, bind and unbind for
    ``kind`` on its group ``app``."""
    noun = kind.noun
    name_help = f"{noun.capitalize()} name."

    @app.command("ls", help=f"List {noun} definitions.")
    def ls(dsn: DsnOption = None, as_json: JsonOption = False, full: FullOption = False) -> None:
        with open_client(dsn) as client:
            definitions = kind.list_all(client)
        if as_json:
            print_json([kind.definition_doc(d) for d in definitions])
        elif not definitions:
            out.print(
                f"No {noun}s. Define them in Python and run 'catbird worker',"
                f" or use client.create_{noun}()."
            )
        else:
            out.print(kind.definitions_table(definitions, out.width, full))

    @app.command("show", help=kind.show_help)
    def show(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        run_id: Annotated[int | None, typer.Option("--run", help=kind.show_run_help)] = None,
        dsn: DsnOption = None,
        as_json: JsonOption = False,
        full: FullOption = False,
    ) -> None:
        with open_client(dsn) as client:
            if run_id is not None and kind.get_steps is None:
                run = kind.get_run(client, name, run_id)
                report(as_json, record(run), _run_details(run, name, out.width))
                return
            definition = kind.get(client, name)
            steps = None
            if run_id is not None and kind.get_steps is not None:
                kind.get_run(client, name, run_id)  # NotFound for a missing run
                steps = kind.get_steps(client, name, run_id)
            runs = kind.list_runs(client, name, limit=10)
        if as_json:
            doc = {noun: kind.definition_doc(definition), "runs": [record(r) for r in runs]}
            if steps is not None:
                doc["steps"] = [record(s) for s in steps]
            print_json(doc)
            return
        for renderable in kind.render_definition(definition, steps, out.width, full):
            out.print(renderable)
        if runs:
            out.print(runs_table(kind, name, runs, width=out.width, full=full))
        else:
            out.print("No runs.")

    run_help = f"{kind.start_verb.capitalize()} a run of a {noun}"
    run_help += " (and optionally wait for its output)."

    @app.command("run", help=run_help)
    def run(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        input_json: Annotated[
            str, typer.Argument(metavar="INPUT", help="Run input, as JSON.", show_default=False)
        ],
        concurrency_key: Annotated[
            str | None, concurrency_key_option("No new run while a live run holds this key.")
        ] = None,
        priority: Annotated[int, priority_option("Higher is claimed first.")] = 0,
        headers: HeadersOption = None,
        delay: Annotated[float | None, delay_option("Seconds before the run may start.")] = None,
        wait: Annotated[
            float | None,
            typer.Option("--wait", help="Wait up to this many seconds for the output.", min=0),
        ] = None,
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        value = parse_json(input_json, "INPUT")
        options = delivery_options(
            concurrency_key=concurrency_key, headers=headers, delay=delay, priority=priority
        )
        with open_client(dsn) as client:
            handle = kind.run(client, name, value, **options)
            if wait is None:
                if as_json:
                    print_json({noun: name, "run_id": handle.id})
                else:
                    what = f"[bold]{handle.id}[/] of [bold]{escape(name)}[/] {kind.started}"
                    out.print(f"Run {what}.")
                return
            try:
                output = handle.wait_for_output(timeout=wait)
            except TimeoutError:
                fail(f"run {handle.id} is not done after {wait:g} s")
            except RunError as exc:
                if as_json:
                    print_json(
                        {
                            noun: name,
                            "run_id": handle.id,
                            "status": exc.status,
                            "error": exc.message,
                        }
                    )
                    raise typer.Exit(EXIT_ERROR) from None
                fail(exc.message)
        report(
            as_json,
            {noun: name, "run_id": handle.id, "status": "completed", "output": output},
            f"Run [bold]{handle.id}[/] completed: {escape(fmt_json(output))}",
        )

    @app.command("runs", help=f"List a {noun}'s runs, newest first.")
    def runs(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        limit: Annotated[int, typer.Option("--limit", help="At most this many runs.", min=1)] = 20,
        before: Annotated[
            int | None, typer.Option("--before", help="Only runs with a smaller id (paging).")
        ] = None,
        dsn: DsnOption = None,
        as_json: JsonOption = False,
        full: FullOption = False,
    ) -> None:
        with open_client(dsn) as client:
            found = kind.list_runs(client, name, limit=limit, before_id=before)
        if as_json:
            print_json([record(r) for r in found])
        elif not found:
            out.print(f"No runs of {escape(name)}.")
        else:
            out.print(runs_table(kind, name, found, width=out.width, full=full))

    @app.command("cancel", help=kind.cancel_help)
    def cancel(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        run_id: Annotated[int, typer.Argument(help="Run id.", show_default=False)],
        reason: Annotated[
            str | None, typer.Option("--reason", help="Why (stored with the run).")
        ] = None,
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with open_client(dsn) as client:
            canceled = kind.cancel_run(client, name, run_id, reason=reason)
            after = kind.get_run(client, name, run_id).status if canceled else None
        if as_json:
            doc: dict[str, Any] = {noun: name, "run_id": run_id, "canceled": canceled}
            if kind.cancel_reports_status:
                doc["status"] = after
            print_json(doc)
        elif canceled:
            out.print(f"Run [bold]{run_id}[/] of [bold]{escape(name)}[/]: {status(after)}.")
        else:
            fail(f"run {run_id} of {noun} {name!r} does not exist or already finished")

    @app.command("retry", help=kind.retry_help)
    def retry(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        run_id: Annotated[int, typer.Argument(help="Run id.", show_default=False)],
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with open_client(dsn) as client:
            retried = kind.retry_run(client, name, run_id)
            after = kind.get_run(client, name, run_id).status if retried else None
        if as_json:
            print_json({noun: name, "run_id": run_id, "retried": retried, "status": after})
        elif retried:
            out.print(f"Run [bold]{run_id}[/] of [bold]{escape(name)}[/]: {status(after)} again.")
        else:
            fail(
                f"run {run_id} of {noun} {name!r} does not exist or is not failed,"
                " canceled or expired"
            )

    pattern_help = "Topic pattern: '*' one token, a trailing '#' any number."

    @app.command(
        "bind",
        help=f"Start a run of the {noun} for every message published to a topic matching PATTERN.",
    )
    def bind(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        pattern: Annotated[str, typer.Argument(help=pattern_help, show_default=False)],
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with open_client(dsn) as client:
            kind.bind(client, name, pattern)
        report(
            as_json,
            {noun: name, "pattern": pattern, "bound": True},
            f"Bound [bold]{escape(name)}[/] to [bold]{escape(pattern)}[/].",
        )

    @app.command("unbind", help=f"Remove a topic binding of a {noun}.")
    def unbind(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        pattern: Annotated[str, typer.Argument(help=pattern_help, show_default=False)],
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with open_client(dsn) as client:
            removed = kind.unbind(client, name, pattern)
        if as_json:
            print_json({noun: name, "pattern": pattern, "unbound": removed})
        elif removed:
            out.print(f"Unbound [bold]{escape(name)}[/] from [bold]{escape(pattern)}[/].")
        else:
            fail(f"{noun} {name!r} is not bound to {pattern!r}")

    @app.command(
        "purge", help="Delete finished runs older than --older-than, or every run (--all)."
    )
    def purge(
        name: Annotated[str, typer.Argument(help=name_help, show_default=False)],
        older_than: Annotated[
            float | None,
            typer.Option(
                "--older-than",
                help="Delete finished runs that finished this many seconds ago.",
                min=0,
            ),
        ] = None,
        everything: Annotated[
            bool, typer.Option("--all", help="Delete every run, queued and started ones too.")
        ] = False,
        dsn: DsnOption = None,
        as_json: JsonOption = False,
    ) -> None:
        if (older_than is None) == (not everything):
            usage_error("give exactly one of --older-than SECONDS and --all")
        with open_client(dsn) as client, progress(f"Deleting runs of {name}"):
            if older_than is None:
                deleted = kind.clear_runs(client, name)
            else:
                deleted = kind.purge_runs(client, name, older_than)
        report(
            as_json,
            {noun: name, "deleted": deleted},
            f"Deleted {deleted} run{'' if deleted == 1 else 's'} of {escape(name)}.",
        )

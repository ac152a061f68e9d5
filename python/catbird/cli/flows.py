"""``catbird flow ...``: flow definitions, runs, steps, signals, cancellation.

Registered on :data:`catbird.cli.app` when :mod:`catbird.cli` is imported
(it imports this module at its end); it uses the CLI's shared options and
helpers. ``catbird flow show NAME`` draws the DAG in topological layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..models import FlowInfo, FlowRunInfo, StepInfo, StepRunInfo
from . import (
    EXIT_ERROR,
    DsnOption,
    JsonOption,
    _client,
    _fail,
    _fmt_json,
    _fmt_ts,
    _parse_headers,
    _parse_json,
    _print_json,
    _visible_at,
    app,
    out,
)

__all__ = ["flow_app", "layers"]

flow_app = typer.Typer(help="Flows: definitions (with their DAG), runs, steps, signals, cancel.")
app.add_typer(flow_app, name="flow", no_args_is_help=True)

FlowArg = Annotated[str, typer.Argument(help="Flow name.", show_default=False)]
RunArg = Annotated[int, typer.Argument(help="Flow run id.", show_default=False)]

_STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
    "canceling": "yellow",
    "expired": "yellow",
    "skipped": "dim",
    "started": "cyan",
    "queued": "blue",
}

_FINISHED_AT = ("completed_at", "failed_at", "canceled_at")


def _doc(value: Any) -> Any:
    """A record as a JSON document."""
    return dataclasses.asdict(value)


def _flow_doc(flow: FlowInfo) -> dict[str, Any]:
    doc: dict[str, Any] = _doc(flow)
    doc["steps"] = [_doc(s) for s in flow.steps]
    doc["layers"] = layers(flow.steps)
    return doc


def _status(status: str | None) -> str:
    if status is None:
        return "-"
    style = _STATUS_STYLE.get(status, "")
    return f"[{style}]{status}[/]" if style else status


def _fmt_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------- the DAG


def layers(steps: Sequence[StepInfo]) -> list[list[str]]:
    """Step names in topological layers: a step is one layer below its deepest dependency."""
    depth: dict[str, int] = {}
    by_name = {s.name: s for s in steps}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        step = by_name.get(name)
        if step is None or name in seen:  # unknown or cyclic: the engine rejects both
            return 0
        deps = [d for d in step.depends_on if d in by_name]
        depth[name] = 1 + max((level(d, seen | {name}) for d in deps), default=-1)
        return depth[name]

    for s in steps:
        level(s.name)
    result: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for s in steps:  # definition order within a layer
        result[depth[s.name]].append(s.name)
    return result


def _markers(step: StepInfo, outputs: Sequence[str]) -> Text:
    text = Text()
    if step.name in outputs:
        text.append(" ★ output", style="bold yellow")
    if step.step_type == "mapper":
        text.append(f" ⇉ map {step.map_source or 'input'}", style="magenta")
    elif step.step_type == "generator":
        text.append(" ↻ generator", style="magenta")
    elif step.step_type == "reducer":
        text.append(f" Σ reduce {step.reduce_source}", style="magenta")
    if step.signal:
        text.append(" ⚑ signal", style="cyan")
    if step.condition:
        text.append(f" ? {step.condition}", style="blue")
    if step.ignore_output:
        text.append(f" (ignores {', '.join(step.ignore_output)})", style="dim")
    return text


def dag_tree(flow: FlowInfo, statuses: dict[str, str] | None = None) -> Tree:
    """The flow's DAG as a tree of layers; each step shows its dependencies (◀─)."""
    title = Text(flow.name, style="bold")
    if flow.description:
        title.append(f" — {flow.description}", style="dim")
    tree = Tree(title)
    by_name = {s.name: s for s in flow.steps}
    for i, names in enumerate(layers(flow.steps), start=1):
        branch = tree.add(Text(f"layer {i}", style="dim"))
        for name in names:
            step = by_name[name]
            label = Text(name, style="bold")
            if statuses is not None:
                status = statuses.get(name, "-")
                label.append(f" [{status}]", style=_STATUS_STYLE.get(status, ""))
            if step.depends_on:
                label.append(f"  ◀─ {', '.join(step.depends_on)}", style="green")
            label.append_text(_markers(step, flow.output_priority))
            node = branch.add(label)
            if step.description:
                node.add(Text(step.description, style="dim"))
    return tree


# ---------------------------------------------------------------- tables


def _flows_table(flows: Sequence[FlowInfo]) -> Table:
    table = Table(title="Flows", title_justify="left")
    table.add_column("name", style="bold", overflow="fold")
    table.add_column("steps", justify="right")
    table.add_column("output", overflow="fold")
    table.add_column("retention", no_wrap=True)
    table.add_column("on-fail", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("description", overflow="fold")
    for f in flows:
        table.add_row(
            escape(f.name),
            str(len(f.steps)),
            escape(", ".join(f.output_priority)),
            _fmt_duration(f.retention_period),
            "yes" if f.on_fail else "no",
            _fmt_ts(f.created_at),
            escape(f.description or ""),
        )
    return table


def _run_result(run: FlowRunInfo) -> str:
    if run.status == "completed":
        return _fmt_json(run.output)
    if run.status in ("canceled", "canceling"):
        return run.cancel_reason or ""
    if run.status == "failed" and run.failed_step_name:
        return f"{run.failed_step_name}: {run.error_message or ''}"
    return run.error_message or ""


def _runs_table(name: str, runs: Sequence[FlowRunInfo]) -> Table:
    table = Table(title=f"Runs of {escape(name)} (newest first)", title_justify="left")
    table.add_column("id", justify="right", style="bold")
    table.add_column("status", no_wrap=True)
    table.add_column("priority", justify="right")
    table.add_column("created", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    table.add_column("input", overflow="fold", ratio=1)
    table.add_column("output / error", overflow="fold", ratio=1)
    for r in runs:
        finished = next((getattr(r, f) for f in _FINISHED_AT if getattr(r, f)), None)
        table.add_row(
            str(r.id),
            _status(r.status),
            str(r.priority),
            _fmt_ts(r.created_at),
            _fmt_ts(finished),
            escape(_fmt_json(r.input)),
            escape(_run_result(r)),
        )
    return table


def _steps_table(name: str, run_id: int, steps: Sequence[StepRunInfo]) -> Table:
    table = Table(title=f"Steps of run {run_id} of {escape(name)}", title_justify="left")
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right")
    table.add_column("items", justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("finished", no_wrap=True)
    table.add_column("output / error", overflow="fold", ratio=1)
    for s in steps:
        finished = s.completed_at or s.failed_at or s.skipped_at or s.canceled_at
        items = "-" if s.map_total is None else f"{s.map_done}/{s.map_total}"
        result = _fmt_json(s.output) if s.status == "completed" else (s.error_message or "")
        table.add_row(
            escape(s.step_name),
            _status(s.status),
            str(s.attempts),
            items,
            _fmt_ts(s.started_at),
            _fmt_ts(finished),
            escape(result),
        )
    return table


# ---------------------------------------------------------------- commands


@flow_app.command("ls")
def flow_ls(dsn: DsnOption = None, as_json: JsonOption = False) -> None:
    """List flow definitions."""
    with _client(dsn) as client:
        flows = client.list_flows()
    if as_json:
        _print_json([_flow_doc(f) for f in flows])
    elif not flows:
        out.print(
            "No flows. Define them in Python and run 'catbird worker', or use client.create_flow()."
        )
    else:
        out.print(_flows_table(flows))


@flow_app.command("show")
def flow_show(
    name: FlowArg,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Mark the steps' statuses in this run.")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a flow's DAG (steps in topological layers) and its latest runs."""
    with _client(dsn) as client:
        flow = client.get_flow(name)
        steps = None
        if run_id is not None:
            client.get_flow_run(name, run_id)  # NotFound for a missing run
            steps = client.get_flow_run_steps(name, run_id)
        runs = client.list_flow_runs(name, limit=10)
    if as_json:
        doc: dict[str, Any] = {"flow": _flow_doc(flow), "runs": [_doc(r) for r in runs]}
        if steps is not None:
            doc["steps"] = [_doc(s) for s in steps]
        _print_json(doc)
        return
    statuses = None if steps is None else {s.step_name: s.status for s in steps}
    out.print(dag_tree(flow, statuses))
    out.print(
        Text(
            "◀─ depends on   ★ output candidate   ⇉ mapper   ↻ generator   Σ reducer"
            "   ⚑ waits for a signal   ? condition",
            style="dim",
        )
    )
    if runs:
        out.print(_runs_table(name, runs))
    else:
        out.print("No runs.")


@flow_app.command("run")
def flow_run(
    name: FlowArg,
    input_json: Annotated[
        str, typer.Argument(metavar="INPUT", help="Flow input, as JSON.", show_default=False)
    ],
    concurrency_key: Annotated[
        str | None,
        typer.Option("--concurrency-key", help="No new run while an active run holds this key."),
    ] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher is claimed first.")] = 0,
    headers: Annotated[
        str | None, typer.Option("--headers", help="Headers, as a JSON object.")
    ] = None,
    delay: Annotated[
        float | None, typer.Option("--delay", help="Seconds before the run may start.", min=0)
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option("--wait", help="Wait up to this many seconds for the output.", min=0),
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run of a flow (and optionally wait for its output)."""
    from ..errors import RunError

    value = _parse_json(input_json, "INPUT")
    header_map = _parse_headers(headers)
    visible_at = _visible_at(delay)
    with _client(dsn) as client:
        handle = client.run_flow(
            name,
            value,
            concurrency_key=concurrency_key,
            headers=header_map,
            visible_at=visible_at,
            priority=priority,
        )
        if wait is None:
            if as_json:
                _print_json({"flow": name, "run_id": handle.id})
            else:
                out.print(f"Run [bold]{handle.id}[/] of [bold]{escape(name)}[/] started.")
            return
        try:
            output = handle.wait_for_output(timeout=wait)
        except TimeoutError:
            _fail(f"run {handle.id} is not done after {wait:g} s")
        except RunError as exc:
            if as_json:
                _print_json(
                    {"flow": name, "run_id": handle.id, "status": exc.status, "error": exc.message}
                )
                raise typer.Exit(EXIT_ERROR) from None
            _fail(exc.message)
    if as_json:
        _print_json({"flow": name, "run_id": handle.id, "status": "completed", "output": output})
    else:
        out.print(f"Run [bold]{handle.id}[/] completed: {escape(_fmt_json(output))}")


@flow_app.command("runs")
def flow_runs(
    name: FlowArg,
    limit: Annotated[int, typer.Option("--limit", help="At most this many runs.", min=1)] = 20,
    before: Annotated[
        int | None, typer.Option("--before", help="Only runs with a smaller id (paging).")
    ] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a flow's runs, newest first."""
    with _client(dsn) as client:
        runs = client.list_flow_runs(name, limit=limit, before_id=before)
    if as_json:
        _print_json([_doc(r) for r in runs])
    elif not runs:
        out.print(f"No runs of {escape(name)}.")
    else:
        out.print(_runs_table(name, runs))


@flow_app.command("steps")
def flow_steps(
    name: FlowArg, run_id: RunArg, dsn: DsnOption = None, as_json: JsonOption = False
) -> None:
    """Show the steps of one run: status, attempts, items, output or error."""
    with _client(dsn) as client:
        run = client.get_flow_run(name, run_id)
        steps = client.get_flow_run_steps(name, run_id)
    if as_json:
        _print_json({"run": _doc(run), "steps": [_doc(s) for s in steps]})
        return
    out.print(
        f"Run [bold]{run.id}[/] of [bold]{escape(name)}[/]: {_status(run.status)}"
        + (f" — {escape(_run_result(run))}" if _run_result(run) else "")
    )
    out.print(_steps_table(name, run_id, steps))


@flow_app.command("signal")
def flow_signal(
    name: FlowArg,
    run_id: RunArg,
    step: Annotated[str, typer.Argument(help="Step waiting for the signal.", show_default=False)],
    input_json: Annotated[
        str, typer.Argument(metavar="INPUT", help="Signal input, as JSON.")
    ] = "null",
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver a signal to a step declared with signal=True."""
    value = _parse_json(input_json, "INPUT")
    with _client(dsn) as client:
        delivered = client.signal_flow(name, run_id, step, value)
    if as_json:
        _print_json({"flow": name, "run_id": run_id, "step": step, "delivered": delivered})
    elif delivered:
        out.print(f"Signal delivered to [bold]{escape(step)}[/] of run {run_id}.")
    else:
        _fail(f"signal not delivered: step {step!r} already has one, or run {run_id} is finished")


@flow_app.command("cancel")
def flow_cancel(
    name: FlowArg,
    run_id: RunArg,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (stored on the run).")] = None,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a run: queued steps at once, running ones as their workers stop them."""
    with _client(dsn) as client:
        canceled = client.cancel_flow_run(name, run_id, reason=reason)
        status = client.get_flow_run(name, run_id).status if canceled else None
    if as_json:
        _print_json({"flow": name, "run_id": run_id, "canceled": canceled, "status": status})
    elif canceled:
        out.print(f"Run {run_id} of [bold]{escape(name)}[/]: {_status(status)}.")
    else:
        _fail(f"run {run_id} of flow {name!r} does not exist or already finished")

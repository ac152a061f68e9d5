"""``catbird flow ...``: flow definitions with their DAG, runs, steps, signals.

The run commands (show, run, runs, cancel, purge) are the ones of
:mod:`.runs`; this module adds what only flows have. ``catbird flow show
NAME`` draws the DAG in topological layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from ..client import Client
from ..models import FlowInfo, StepInfo, StepRunInfo
from ._common import App, DsnOption, FullOption, JsonOption, fail, open_client, out, parse_json
from .output import (
    Column,
    fmt_duration,
    fmt_json,
    fmt_ts,
    print_json,
    record,
    status,
    status_style,
    table,
)
from .runs import RunKind, add_run_commands, run_result

__all__ = ["FLOWS", "app", "dag_tree", "layers"]

app = App(help="Flows: definitions (with their DAG), runs, steps, signals, cancel, retry.")

FlowArg = Annotated[str, typer.Argument(help="Flow name.", show_default=False)]
RunArg = Annotated[int, typer.Argument(help="Flow run id.", show_default=False)]


def flow_doc(flow: FlowInfo) -> dict[str, Any]:
    """A flow definition as a JSON document, with its steps in layers."""
    doc = record(flow)
    doc["steps"] = [record(s) for s in flow.steps]
    doc["layers"] = layers(flow.steps)
    return doc


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
                state = statuses.get(name, "-")
                label.append(f" [{state}]", style=status_style(state))
            if step.depends_on:
                label.append(f"  ◀─ {', '.join(step.depends_on)}", style="green")
            label.append_text(_markers(step, flow.output_priority))
            node = branch.add(label)
            if step.description:
                node.add(Text(step.description, style="dim"))
    return tree


# ---------------------------------------------------------------- tables


def flows_table(flows: Sequence[FlowInfo], width: int, full: bool) -> RenderableType:
    columns = [
        Column("name", style="bold"),
        Column("steps", justify="right"),
        Column("output", fit="cut"),
        Column("retention", hide=2),
        Column("on-fail", hide=1),
        Column("created", hide=3, stack=True),
        Column("description", fit="cut", hide=4),
    ]
    rows = [
        [
            escape(f.name),
            str(len(f.steps)),
            escape(", ".join(f.output_priority)),
            fmt_duration(f.retention_period),
            "yes" if f.on_fail else "no",
            fmt_ts(f.created_at),
            escape(f.description or ""),
        ]
        for f in flows
    ]
    return table("Flows", columns, rows, width=width, full=full)


def steps_table(
    name: str, run_id: int, steps: Sequence[StepRunInfo], *, width: int, full: bool
) -> RenderableType:
    columns = [
        Column("step", style="bold"),
        Column("status"),
        Column("attempts", justify="right", hide=3),
        Column("items", justify="right", hide=4),
        Column("started", hide=2, stack=True),
        Column("finished", hide=1, stack=True),
        Column("output / error", fit="cut"),
    ]
    rows = []
    for s in steps:
        finished = s.completed_at or s.failed_at or s.skipped_at or s.canceled_at
        result = fmt_json(s.output) if s.status == "completed" else (s.error_message or "")
        rows.append(
            [
                escape(s.step_name),
                status(s.status),
                str(s.attempts),
                "-" if s.map_total is None else f"{s.map_done}/{s.map_total}",
                fmt_ts(s.started_at),
                fmt_ts(finished),
                escape(result),
            ]
        )
    title = f"Steps of run {run_id} of {escape(name)}"
    return table(title, columns, rows, width=width, full=full)


_LEGEND = (
    "◀─ depends on",
    "★ output candidate",
    "⇉ mapper",
    "↻ generator",
    "Σ reducer",
    "⚑ waits for a signal",
    "? condition",
)


def legend(width: int) -> Text:
    """The DAG's symbols, on as many lines of ``width`` as they take."""
    lines = [""]
    for entry in _LEGEND:
        joined = f"{lines[-1]}   {entry}" if lines[-1] else entry
        if len(joined) <= width or not lines[-1]:
            lines[-1] = joined
        else:
            lines.append(entry)
    return Text("\n".join(lines), style="dim")


def _render_flow(
    flow: FlowInfo, steps: Sequence[StepRunInfo] | None, width: int, full: bool
) -> list[RenderableType]:
    statuses = None if steps is None else {s.step_name: s.status for s in steps}
    return [dag_tree(flow, statuses), legend(width)]


FLOWS = RunKind(
    noun="flow",
    start_verb="start",
    started="started",
    run=Client.run_flow,
    get_run=Client.get_flow_run,
    list_runs=Client.list_flow_runs,
    cancel_run=Client.cancel_flow_run,
    retry_run=Client.retry_flow_run,
    bind=Client.bind_flow,
    unbind=Client.unbind_flow,
    purge_runs=Client.purge_flow_runs,
    clear_runs=Client.clear_flow_runs,
    list_all=Client.list_flows,
    get=Client.get_flow,
    definition_doc=flow_doc,
    definitions_table=flows_table,
    render_definition=_render_flow,
    show_help="Show a flow's DAG (steps in topological layers) and its latest runs.",
    show_run_help="Mark the steps' statuses in this run.",
    cancel_help="Cancel a run: queued steps at once, running ones as their workers stop them.",
    retry_help="Resume a failed run: its failed steps run again, completed steps are kept.",
    get_steps=Client.get_flow_run_steps,
    cancel_reports_status=True,
)


# ---------------------------------------------------------------- commands


add_run_commands(app, FLOWS)


@app.command("steps")
def flow_steps(
    name: FlowArg,
    run_id: RunArg,
    dsn: DsnOption = None,
    as_json: JsonOption = False,
    full: FullOption = False,
) -> None:
    """Show the steps of one run: status, attempts, items, output or error."""
    with open_client(dsn) as client:
        run = client.get_flow_run(name, run_id)
        steps = client.get_flow_run_steps(name, run_id)
    if as_json:
        print_json({"run": record(run), "steps": [record(s) for s in steps]})
        return
    result = run_result(run)
    out.print(
        f"Run [bold]{run.id}[/] of [bold]{escape(name)}[/]: {status(run.status)}"
        + (f" — {escape(result)}" if result else "")
    )
    out.print(steps_table(name, run_id, steps, width=out.width, full=full))
    for s in steps:
        if s.error_detail and s.status != "completed":
            out.print(f"[bold]{escape(s.step_name)}[/] failed:")
            out.print(escape(s.error_detail.rstrip()), soft_wrap=True)


@app.command("signal")
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
    value = parse_json(input_json, "INPUT")
    with open_client(dsn) as client:
        delivered = client.signal_flow(name, run_id, step, value)
    if as_json:
        print_json({"flow": name, "run_id": run_id, "step": step, "delivered": delivered})
    elif delivered:
        out.print(f"Signal delivered to [bold]{escape(step)}[/] of run {run_id}.")
    else:
        fail(f"signal not delivered: step {step!r} already has one, or run {run_id} is finished")

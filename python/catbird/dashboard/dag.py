"""Server-side layout of a flow's DAG, drawn by the flow run template as inline SVG.

Steps are placed in layers by their longest path from a root (a step without
dependencies is in layer 0, any other one layer after its deepest
dependency), left to right; within a layer they keep definition order. An
edge runs from the right side of a dependency to the left side of its
dependent as a cubic curve, so edges that skip layers stay readable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..models import StepInfo, StepRunInfo

NODE_WIDTH = 204
NODE_HEIGHT = 58
LAYER_GAP = 64
ROW_GAP = 22
MARGIN = 12


@dataclass(frozen=True, slots=True)
class Node:
    """One step: its box and the state of its run (``None`` before it exists)."""

    name: str
    step_type: str
    x: int
    y: int
    run: StepRunInfo | None

    @property
    def status(self) -> str:
        return self.run.status if self.run is not None else "pending"

    @property
    def progress(self) -> str | None:
        """``done/total`` items of a map step that knows its total."""
        if self.run is None or self.run.map_total is None:
            return None
        return f"{self.run.map_done}/{self.run.map_total}"


@dataclass(frozen=True, slots=True)
class Edge:
    """A dependency, as the SVG path data of its curve."""

    source: str
    target: str
    path: str


@dataclass(frozen=True, slots=True)
class Dag:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int


def layers(steps: Sequence[StepInfo]) -> dict[str, int]:
    """Each step's layer: the length of its longest path from a root.

    Dependencies on names that are not steps (the flow input) are ignored.
    Definitions are acyclic (the engine refuses cycles); a cycle would only
    end the recursion at the step already being placed.
    """
    by_name = {s.name: s for s in steps}
    layer: dict[str, int] = {}

    def place(name: str, visiting: frozenset[str]) -> int:
        if name in layer:
            return layer[name]
        deps = [d for d in _dependencies(by_name[name]) if d in by_name and d not in visiting]
        depth = 1 + max((place(d, visiting | {name}) for d in deps), default=-1)
        layer[name] = depth
        return depth

    for step in steps:
        place(step.name, frozenset())
    return layer


def _dependencies(step: StepInfo) -> tuple[str, ...]:
    sources = (step.map_source, step.reduce_source)
    extra = tuple(s for s in sources if s and s not in step.depends_on)
    return step.depends_on + extra


def layout(steps: Sequence[StepInfo], runs: Mapping[str, StepRunInfo]) -> Dag:
    """Place the steps (with the runs of a flow run, by step name) and route the edges."""
    layer = layers(steps)
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for step in steps:
        column = layer[step.name]
        row = rows.get(column, 0)
        rows[column] = row + 1
        nodes[step.name] = Node(
            name=step.name,
            step_type=step.step_type,
            x=MARGIN + column * (NODE_WIDTH + LAYER_GAP),
            y=MARGIN + row * (NODE_HEIGHT + ROW_GAP),
            run=runs.get(step.name),
        )
    edges = []
    for step in steps:
        target = nodes[step.name]
        for dep in _dependencies(step):
            source = nodes.get(dep)
            if source is None:
                continue
            x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
            x2, y2 = target.x, target.y + NODE_HEIGHT // 2
            bend = (x2 - x1) // 2
            path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
            edges.append(Edge(dep, step.name, path))
    columns = max(layer.values(), default=-1) + 1
    width = 2 * MARGIN + columns * NODE_WIDTH + max(columns - 1, 0) * LAYER_GAP
    height = 2 * MARGIN + max(rows.values(), default=0) * (NODE_HEIGHT + ROW_GAP) - ROW_GAP
    return Dag(tuple(nodes.values()), tuple(edges), width, max(height, NODE_HEIGHT))

"""What a worker builds from its ``flows``: their lanes, definitions and events.

The lanes themselves are in :mod:`.flows` (steps, items, generators,
reducers) and :mod:`.on_fail`; this is the one place that knows which lanes
a flow needs and which of them an engine event concerns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .. import _sql
from ..definitions import HandlerOptions
from ..definitions.flows import Flow, Step, StepHandler
from ..errors import NotFound, ObjectInUse
from ..events import Event
from .flows import FlowLane, GeneratorLane, MapLane, ReducerLane, StepLane, flow_run_of
from .lanes import Lane, LaneHost, log, with_concurrency
from .on_fail import FlowOnFailLane

__all__ = ["FlowRuntime"]


class FlowRuntime:
    """The flow lanes of one worker, and what the worker asks of them.

    ``concurrency`` (the worker's option) overrides every handler's own.
    """

    def __init__(self, host: LaneHost, flows: Sequence[Flow], concurrency: int | None) -> None:
        self.host = host
        self.flows = list(flows)
        self.concurrency = concurrency
        self.step_lanes: list[FlowLane] = []
        self.on_fail_lanes: list[FlowOnFailLane] = []
        self.by_key: dict[str, list[Lane]] = {}
        for flow in self.flows:
            for step in flow.steps.values():
                self._add_step(step)
            if flow.on_fail_handler is not None:
                handler = with_concurrency(flow.on_fail_handler, concurrency)
                self.on_fail_lanes.append(FlowOnFailLane(host, flow, handler))
        self.lanes: list[Lane] = [*self.step_lanes, *self.on_fail_lanes]

    def _options(self, options: HandlerOptions) -> HandlerOptions:
        if self.concurrency is None:
            return options
        return options.replace(concurrency=self.concurrency)

    def _step_handler(self, handler: StepHandler) -> StepHandler:
        return dataclasses.replace(handler, options=self._options(handler.options))

    def _add_step(self, step: Step) -> None:
        key = f"{step.flow.name}/{step.name}"
        lanes: list[FlowLane] = []
        handler = self._step_handler(step.handler)
        if step.step_type == "mapper":
            lanes.append(MapLane(self.host, step, handler, handler.options))
        elif step.step_type == "generator":
            lanes.append(GeneratorLane(self.host, step, handler))
            items = step.item_handler
            if items is not None:
                items = self._step_handler(items)
            lanes.append(MapLane(self.host, step, items, self._options(step.item_options)))
        elif step.step_type == "reducer":
            lanes.append(ReducerLane(self.host, step, handler))
        else:
            lanes.append(StepLane(self.host, step, handler))
        for lane in lanes:
            self.step_lanes.append(lane)
            self.by_key.setdefault(key, []).append(lane)

    @property
    def connections(self) -> tuple[int, int]:
        """Extra connections for the worker's pools: (outcomes, claims)."""
        n = len(self.lanes)
        return min(3 * n, 24), min(2 * n, 16)

    def step_handlers(self) -> list[dict[str, Any]]:
        """The worker registry's ``step_handlers`` entries."""
        seen: list[dict[str, Any]] = []
        for flow in self.flows:
            for step in flow.steps.values():
                seen.append({"flow_name": flow.name, "step_name": step.name})
        return seen

    async def create_definitions(self, create: bool = True) -> None:
        """Store the flows' definitions (``create``), then check that the
        stored retry policy of every step is its handler's."""
        for flow in self.flows:
            if create:
                try:
                    await self.host.client.execute(
                        _sql.create_flow(flow.name, **flow.create_args())
                    )
                except ObjectInUse as exc:
                    log.warning(
                        "flow %r: the stored definition differs from this one and runs are"
                        " active, so it is kept (%s)",
                        flow.name,
                        exc.message,
                    )
            try:
                info = await self.host.client.execute(_sql.get_flow(flow.name))
            except NotFound:
                continue
            for lane in self.step_lanes:
                if lane.flow == flow.name:
                    try:
                        step = info.step(lane.step_name)
                    except KeyError:
                        continue
                    lane.check_policy((step.max_retries, step.backoff_min, step.backoff_max))

    def on_event(self, event: Event) -> None:
        topic = event.topic
        if topic == "catbird.step.queued":
            key = f"{event.field('flow')}/{event.field('step')}"
            for lane in self.by_key.get(key, ()):
                lane.wake.set()
            return
        if topic not in ("catbird.flow.canceling", "catbird.flow.completed", "catbird.flow.failed"):
            return
        run_ids = set(event.run_ids)
        if not run_ids:
            return
        reason = "canceled" if topic == "catbird.flow.canceling" else "finished"
        for lane in self.step_lanes:
            for run in list(lane.inflight.values()):
                if flow_run_of(run) in run_ids:
                    log.info(
                        "%r: flow run %d %s: %s",
                        lane,
                        flow_run_of(run),
                        "is canceling" if reason == "canceled" else "finished",
                        "cancelling its handler"
                        if lane.handler.is_async and not lane.uses_threads
                        else "its handler runs on until it checks catbird.cancel_requested()",
                    )
                    run.stop(reason)
        if topic == "catbird.flow.failed":
            for on_fail in self.on_fail_lanes:
                on_fail.wake.set()

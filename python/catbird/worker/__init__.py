"""The worker: claims work through the engine's SQL, runs handlers, reports back.

- :mod:`.base`: the :class:`Worker` (lifecycle, registration, heartbeats,
  claim loops, events, gc, shutdown); it implements :class:`.lanes.LaneHost`.
- :mod:`.lanes`: the lane interface (:class:`.lanes.Lane`, the run record,
  the circuit breaker, the host interface lanes use).
- :mod:`.batching`: batched completions and lease renewal of task, step and
  item lanes.
- :mod:`.tasks`, :mod:`.flows`, :mod:`.on_fail`: the kinds of lanes;
  :mod:`.flow_runtime` builds the lanes of flows and routes their events.
- :mod:`.connections`, :mod:`.threads`: pools and retries, handler threads.

Lane modules never import :mod:`.base`.
"""

from .base import Worker

__all__ = ["Worker"]

"""The worker: claims work through the engine's SQL, runs handlers, reports back.

:mod:`.base` holds the :class:`Worker` and the lane interface; task lanes,
flow step and item lanes and on-fail lanes implement it.
"""

from .base import Worker

__all__ = ["Worker"]

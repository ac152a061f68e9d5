"""Frozen records returned by the client.

JSON columns (``body``, ``headers``) are decoded into plain Python values
(dict, list, str, int, float, bool or None). Timestamps are timezone-aware
``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Binding", "Message", "QueueInfo"]


@dataclass(frozen=True, slots=True)
class Message:
    """A message read from a queue (``catbird.cb_message``)."""

    id: int
    body: Any
    headers: dict[str, Any] | None
    topic: str | None
    concurrency_key: str | None
    priority: int
    deliveries: int
    created_at: datetime
    visible_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue as listed by ``cb_list_queues()``.

    ``depth`` counts all messages (visible and hidden), ``visible`` those
    readable now, and ``oldest_visible_at`` is the smallest ``visible_at``
    among readable messages (``None`` when there are none).
    """

    name: str
    description: str | None
    created_at: datetime
    expires_at: datetime | None
    depth: int
    visible: int
    oldest_visible_at: datetime | None


@dataclass(frozen=True, slots=True)
class Binding:
    """A queue's subscription to a topic pattern."""

    queue: str
    pattern: str
    created_at: datetime

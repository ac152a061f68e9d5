"""Events: what the engine and applications announce on the ``catbird`` channel.

Every event is one PostgreSQL notification on the channel ``catbird`` whose
payload is a JSON envelope ``{"topic": ..., "data": ..., "node_id": ...}``.
``data`` is text: for the engine's own ``catbird.*`` topics a JSON document
such as ``{"task": "resize", "run_id": 42}`` (or ``"run_ids": [...]`` when one
call changed many runs), for application topics whatever ``cb_notify`` was
given. ``node_id`` names the Wire node that sent it, so that node can skip its
own echo.

Listeners choose events with the binding syntax of topics: ``.`` separates
tokens, ``*`` matches exactly one token, a trailing ``#`` matches zero or more
tokens (``catbird.task.*``, ``catbird.#``). :func:`topic_matcher` compiles a
pattern with the same rules (and the same error) as the engine's bindings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._sql import EVENTS_CHANNEL

__all__ = ["EVENTS_CHANNEL", "Event", "check_topic", "parse_event", "topic_matcher"]

_TOKEN = r"[A-Za-z0-9_-]+"
_TOPIC = re.compile(rf"{_TOKEN}(\.{_TOKEN})*")
_PATTERN = re.compile(rf"#|({_TOKEN}|\*)(\.({_TOKEN}|\*))*(\.#)?")
_MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Event:
    """One notification: its topic, its data (text, or ``None``) and the Wire
    node that sent it (``None`` for the engine and plain ``cb_notify`` calls)."""

    topic: str
    data: str | None = None
    node_id: str | None = None

    def json(self) -> Any:
        """``data`` decoded as JSON (``None`` without data); ``ValueError`` when
        it is not JSON."""
        return None if self.data is None else json.loads(self.data)

    @property
    def run_ids(self) -> tuple[int, ...]:
        """The run ids an engine run event carries (``run_id`` or ``run_ids``);
        empty for other events."""
        try:
            doc = self.json()
        except ValueError:
            return ()
        if not isinstance(doc, dict):
            return ()
        if isinstance(doc.get("run_id"), int):
            return (doc["run_id"],)
        ids = doc.get("run_ids")
        if isinstance(ids, list):
            return tuple(i for i in ids if isinstance(i, int))
        return ()

    def field(self, name: str) -> str | None:
        """A text field of the JSON data (``task``, ``flow``, ``queue``, ``step``,
        ``worker_id``), or ``None``."""
        try:
            doc = self.json()
        except ValueError:
            return None
        value = doc.get(name) if isinstance(doc, dict) else None
        return value if isinstance(value, str) else None


def parse_event(payload: str) -> Event | None:
    """The event a notification payload on the channel carries; ``None`` for a
    payload that is not an envelope (another program sharing the channel)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("topic"), str):
        return None
    data, node_id = doc.get("data"), doc.get("node_id")
    return Event(
        topic=doc["topic"],
        data=data if data is None or isinstance(data, str) else json.dumps(data),
        node_id=None if node_id is None else str(node_id),
    )


def check_topic(topic: str) -> str:
    """``topic`` if it is a valid topic (the engine's rule), else ``ValueError``."""
    if not isinstance(topic, str) or len(topic) > _MAX_LENGTH or not _TOPIC.fullmatch(topic):
        raise ValueError(
            f"invalid topic {topic!r}: a topic is one or more tokens of letters, digits, "
            '"_" or "-", separated by "." (e.g. orders.eu.created), at most 255 characters; '
            "wildcards belong in patterns only"
        )
    return topic


def topic_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate telling whether a topic matches ``pattern`` (binding syntax);
    ``ValueError`` for an invalid pattern, with the engine's explanation."""
    if (
        not isinstance(pattern, str)
        or len(pattern) > _MAX_LENGTH
        or not _PATTERN.fullmatch(pattern)
    ):
        raise ValueError(
            f"invalid pattern {pattern!r}: a pattern is a topic whose tokens may be "
            '"*" (exactly one token), and whose last token may be "#" (zero or more tokens), '
            "e.g. orders.*.created or orders.#, at most 255 characters"
        )
    if pattern == "#":
        return lambda topic: True
    if "*" not in pattern and "#" not in pattern:
        return lambda topic: topic == pattern
    parts = []
    for position, token in enumerate(pattern.split(".")):
        if token == "#":
            parts.append(rf"(\.{_TOKEN})*")
            continue
        parts.append((r"\." if position else "") + (_TOKEN if token == "*" else re.escape(token)))
    regex = re.compile("".join(parts))
    return lambda topic: regex.fullmatch(topic) is not None

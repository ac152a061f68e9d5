"""Server-sent events: the rendered event, its wire format, and the request a
renderer sees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SSEEvent", "WireRequest", "encode_event"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One event for a browser: its ``event`` name (``None``: the topic), its
    ``data`` (text; several lines are sent as several ``data:`` fields and the
    browser joins them again) and its ``id`` (``None``: no id; the browser
    sends the last id it saw as ``Last-Event-ID`` when it reconnects)."""

    event: str | None = None
    data: str = ""
    id: str | None = None


@dataclass(frozen=True, slots=True)
class WireRequest:
    """The HTTP request of one SSE or poll connection, as renderers see it:
    its path, query parameters and headers (lower-case names), the token's
    identity and topics, and the raw ASGI ``scope`` for anything else (e.g.
    a session a middleware put there)."""

    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    identity: str | None
    topics: tuple[str, ...]
    scope: Mapping[str, Any] = field(repr=False)


def _field(name: str, value: str) -> str:
    # A field value ends at the first line break: CR, LF and CRLF all count.
    return f"{name}: {value.replace(chr(13), ' ').replace(chr(10), ' ')}\n"


def encode_event(event: SSEEvent, topic: str) -> bytes:
    """The text/event-stream bytes of ``event`` (``topic`` is its default name)."""
    out = [_field("event", event.event or topic)]
    if event.id is not None:
        out.append(_field("id", event.id))
    lines = event.data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out.extend(f"data: {line}\n" if line else "data:\n" for line in lines)
    out.append("\n")
    return "".join(out).encode()

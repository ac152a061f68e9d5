"""Statements of Wire nodes and presence (``82_wire.sql``) and of ``cb_notify``
(``80_events.sql``), as :class:`catbird.Wire` sends them."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from ._call import Call, Query, Rows, boolean, integer, void

_NOTIFY = Call("cb_notify", topic="text", data="text", node_id="uuid")
_WIRE_HEARTBEAT = Call("cb_wire_heartbeat", node_id="uuid")
_WIRE_JOIN = Call(
    "cb_wire_join", node_id="uuid", subscriber_id="uuid", identity="text", topics="text[]"
)
_WIRE_LEAVE = Call("cb_wire_leave", node_id="uuid", subscriber_id="uuid")
_WIRE_PRESENCE = Call("cb_wire_presence", returns="*", statement="wire_presence", topic="text")
_WIRE_STOP = Call("cb_wire_stop", node_id="uuid")


def notify(topic: str, data: str | None = None, *, node_id: UUID | None = None) -> Query[None]:
    """An event on the ``catbird`` channel, delivered on commit; ``node_id`` names
    the sending Wire node so that it can skip its own echo."""
    return _NOTIFY.query({"topic": topic, "data": data, "node_id": node_id}, void)


def wire_heartbeat(node_id: UUID) -> Query[bool]:
    """True when the node was not registered (first beat, or removed as stale)."""
    return _WIRE_HEARTBEAT.query({"node_id": node_id}, boolean)


def wire_join(
    node_id: UUID, subscriber_id: UUID, identity: str, topics: Sequence[str]
) -> Query[int]:
    params = {
        "node_id": node_id,
        "subscriber_id": subscriber_id,
        "identity": identity,
        "topics": list(topics),
    }
    return _WIRE_JOIN.query(params, integer)


def wire_leave(node_id: UUID, subscriber_id: UUID) -> Query[int]:
    return _WIRE_LEAVE.query({"node_id": node_id, "subscriber_id": subscriber_id}, integer)


def _texts(rows: Rows) -> list[str]:
    return [str(row[0]) for row in rows]


def wire_presence(topic: str) -> Query[list[str]]:
    return _WIRE_PRESENCE.query({"topic": topic}, _texts)


def wire_stop(node_id: UUID) -> Query[bool]:
    return _WIRE_STOP.query({"node_id": node_id}, boolean)

"""Statements of the durable per-identity inbox (``84_inbox.sql``): appending
notifications, reading the unseen ones after a cursor, and marking them seen."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import LiteralString

from ..models import Notification
from ._call import Call, Query, each, integer

#: The columns of a ``cb_read_notifications`` row (a :class:`Notification`).
NOTIFICATION_COLUMNS: LiteralString = "id, topic, message, collapse_key, created_at, expires_at"

_NOTIFY_DURABLE = Call(
    "cb_notify_durable",
    identity="text",
    topic="text",
    message="text",
    collapse_key="text",
    expires_at="timestamptz",
)
_READ_NOTIFICATIONS = Call(
    "cb_read_notifications",
    returns=NOTIFICATION_COLUMNS,
    identity="text",
    after_id="bigint",
    quantity="int",
)
_MARK_SEEN_UNTIL = Call("cb_mark_seen_until", identity="text", id="bigint")
_MARK_SEEN = Call("cb_mark_seen", identity="text", ids="bigint[]")


def notify_durable(
    identity: str,
    topic: str,
    message: str | None = None,
    *,
    collapse_key: str | None = None,
    expires_at: datetime | None = None,
) -> Query[int]:
    """The new notification's id. ``message`` is text: anything else is a
    :class:`TypeError` here (the ``::text`` cast would quietly turn a number
    into its digits; encode structured data yourself, e.g. with
    ``json.dumps``)."""
    if message is not None and not isinstance(message, str):
        raise TypeError(
            f"message must be a str or None, not {type(message).__name__}:"
            " encode structured data yourself (e.g. json.dumps) and send the text"
        )
    params = {
        "identity": identity,
        "topic": topic,
        "message": message,
        "collapse_key": collapse_key,
        "expires_at": expires_at,
    }
    return _NOTIFY_DURABLE.query(params, integer)


_notifications = each(Notification)


def read_notifications(
    identity: str, *, after_id: int = 0, quantity: int = 100
) -> Query[list[Notification]]:
    params = {"identity": identity, "after_id": after_id, "quantity": quantity}
    return _READ_NOTIFICATIONS.query(params, _notifications)


def mark_seen_until(identity: str, id: int) -> Query[int]:
    return _MARK_SEEN_UNTIL.query({"identity": identity, "id": id}, integer)


def mark_seen(identity: str, ids: Iterable[int]) -> Query[int]:
    return _MARK_SEEN.query({"identity": identity, "ids": list(ids)}, integer)

"""Every statement the package sends, named, in one place.

Each operation is a function that validates nothing the engine validates
itself: it only converts Python values into SQL parameters (seconds into
integer milliseconds, JSON values into ``jsonb``) and returns a frozen
:class:`Query` — the SQL text, its parameters and a ``decode`` function that
turns the fetched rows into the result. :class:`catbird.Client` runs a query
with a sync cursor and :class:`catbird.AsyncClient` with an async one, so both
share one definition of every call.

All calls use named notation and explicit casts: ``cb_send``/``cb_publish``/
``cb_hide``/``cb_delete`` are overloaded (single and batch forms) and untyped
parameters would be ambiguous.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, LiteralString, TypeAlias, TypeVar

from psycopg.types.json import Jsonb

from .errors import InvalidArgument, NotFound
from .models import Binding, Message, QueueInfo

T = TypeVar("T")

Row: TypeAlias = tuple[Any, ...]
Rows: TypeAlias = list[Row]
Params: TypeAlias = dict[str, Any]
#: A duration in seconds (``float``/``int``) or a ``timedelta``.
Duration: TypeAlias = float | timedelta


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One statement: its name, SQL text, parameters and result decoder."""

    name: str
    sql: LiteralString
    params: Params
    decode: Callable[[Rows], T]


# --------------------------------------------------------------------------
# Parameter conversion
# --------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """Turn a body into a JSON-serialisable value.

    Dataclass instances become dicts (``dataclasses.asdict``), pydantic models
    are dumped with ``model_dump(mode="json")``; anything else is passed as is
    and must be serialisable by :func:`json.dumps`.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    return value


def jsonb(value: Any) -> Jsonb:
    """A ``jsonb`` parameter (Python ``None`` becomes JSON ``null``)."""
    return Jsonb(to_json(value))


def jsonb_or_null(value: Any) -> Jsonb | None:
    """A ``jsonb`` parameter, or SQL NULL for ``None``."""
    return None if value is None else Jsonb(to_json(value))


def jsonb_array(values: Iterable[Any]) -> list[Jsonb]:
    """A ``jsonb[]`` parameter; ``None`` items become JSON ``null``."""
    return [jsonb(v) for v in values]


def jsonb_array_or_null(values: Iterable[Any] | None) -> list[Jsonb | None] | None:
    """A ``jsonb[]`` parameter whose ``None`` items are SQL NULLs, or NULL."""
    if values is None:
        return None
    return [jsonb_or_null(v) for v in values]


def ms(seconds: Duration) -> int:
    """Convert a duration in seconds to whole milliseconds, rounding up.

    Rounding up means a positive duration never silently becomes 0 ms. Range
    and sign checks are the engine's (a negative duration reaches SQL as a
    negative number and is rejected there); only values that have no integer
    representation (NaN, infinity) are refused here.
    """
    if isinstance(seconds, timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidArgument(f"duration must be a number of seconds or a timedelta: {seconds!r}")
    if isinstance(seconds, int):
        return seconds * 1000
    if not math.isfinite(seconds):
        raise InvalidArgument(f"duration must be finite: {seconds!r}")
    # round() first so that binary noise such as 0.1 * 1000 == 100.00000000000001
    # does not turn 100 ms into 101 ms.
    return math.ceil(round(seconds * 1000, 6))


def _list_or_null(values: Iterable[Any] | None) -> list[Any] | None:
    return None if values is None else list(values)


# --------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------


def _void(rows: Rows) -> None:
    return None


def _bool(rows: Rows) -> bool:
    return bool(rows[0][0])


def _int(rows: Rows) -> int:
    return int(rows[0][0])


def _int_list(rows: Rows) -> list[int]:
    value = rows[0][0]
    return [] if value is None else [int(v) for v in value]


MESSAGE_COLUMNS: LiteralString = (
    "id, body, headers, topic, concurrency_key, priority, deliveries,"
    " created_at, visible_at, expires_at"
)


def _messages(rows: Rows) -> list[Message]:
    return [Message(*row) for row in rows]


QUEUE_COLUMNS: LiteralString = (
    "name, description, created_at, expires_at, depth, visible, oldest_visible_at"
)


def _queue_infos(rows: Rows) -> list[QueueInfo]:
    return [QueueInfo(*row) for row in rows]


def _bindings(rows: Rows) -> list[Binding]:
    return [Binding(*row) for row in rows]


# --------------------------------------------------------------------------
# Queues
# --------------------------------------------------------------------------


def create_queue(
    name: str, *, expires_at: datetime | None = None, description: str | None = None
) -> Query[None]:
    return Query(
        "create_queue",
        "SELECT catbird.cb_create_queue(name => %(name)s::text,"
        " expires_at => %(expires_at)s::timestamptz, description => %(description)s::text)",
        {"name": name, "expires_at": expires_at, "description": description},
        _void,
    )


def delete_queue(name: str) -> Query[bool]:
    return Query(
        "delete_queue",
        "SELECT catbird.cb_delete_queue(name => %(name)s::text)",
        {"name": name},
        _bool,
    )


def purge_queue(name: str) -> Query[int]:
    return Query(
        "purge_queue",
        "SELECT catbird.cb_purge_queue(name => %(name)s::text)",
        {"name": name},
        _int,
    )


def get_queue(name: str) -> Query[QueueInfo]:
    def decode(rows: Rows) -> QueueInfo:
        if not rows:
            raise NotFound(f'queue "{name}" does not exist')
        return QueueInfo(*rows[0])

    return Query(
        "get_queue",
        "SELECT " + QUEUE_COLUMNS + " FROM catbird.cb_get_queue(name => %(name)s::text)",
        {"name": name},
        decode,
    )


def list_queues() -> Query[list[QueueInfo]]:
    return Query(
        "list_queues",
        "SELECT " + QUEUE_COLUMNS + " FROM catbird.cb_list_queues() ORDER BY name",
        {},
        _queue_infos,
    )


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------


def send(
    queue: str,
    body: Any,
    *,
    topic: str | None = None,
    concurrency_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[int]:
    return Query(
        "send",
        "SELECT catbird.cb_send(queue => %(queue)s::text, body => %(body)s::jsonb,"
        " topic => %(topic)s::text, concurrency_key => %(concurrency_key)s::text,"
        " headers => %(headers)s::jsonb, visible_at => %(visible_at)s::timestamptz,"
        " priority => %(priority)s::int, expires_at => %(expires_at)s::timestamptz)",
        {
            "queue": queue,
            "body": jsonb(body),
            "topic": topic,
            "concurrency_key": concurrency_key,
            "headers": jsonb_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int,
    )


def send_many(
    queue: str,
    bodies: Iterable[Any],
    *,
    topic: str | None = None,
    concurrency_keys: Sequence[str | None] | None = None,
    headers: Sequence[Mapping[str, Any] | None] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[list[int]]:
    return Query(
        "send_many",
        "SELECT catbird.cb_send(queue => %(queue)s::text, bodies => %(bodies)s::jsonb[],"
        " topic => %(topic)s::text, concurrency_keys => %(concurrency_keys)s::text[],"
        " headers => %(headers)s::jsonb[], visible_at => %(visible_at)s::timestamptz,"
        " priority => %(priority)s::int, expires_at => %(expires_at)s::timestamptz)",
        {
            "queue": queue,
            "bodies": jsonb_array(bodies),
            "topic": topic,
            "concurrency_keys": _list_or_null(concurrency_keys),
            "headers": jsonb_array_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int_list,
    )


def read(queue: str, *, quantity: int = 1, hide_for: Duration = 30.0) -> Query[list[Message]]:
    return Query(
        "read",
        "SELECT " + MESSAGE_COLUMNS + " FROM catbird.cb_read(queue => %(queue)s::text,"
        " quantity => %(quantity)s::int, hide_for => %(hide_for)s::int)",
        {"queue": queue, "quantity": quantity, "hide_for": ms(hide_for)},
        _messages,
    )


def read_poll(
    queue: str,
    *,
    quantity: int = 1,
    hide_for: Duration = 30.0,
    poll_for: Duration = 5.0,
    poll_interval: Duration = 0.1,
) -> Query[list[Message]]:
    return Query(
        "read_poll",
        "SELECT " + MESSAGE_COLUMNS + " FROM catbird.cb_read_poll(queue => %(queue)s::text,"
        " quantity => %(quantity)s::int, hide_for => %(hide_for)s::int,"
        " poll_for => %(poll_for)s::int, poll_interval => %(poll_interval)s::int)",
        {
            "queue": queue,
            "quantity": quantity,
            "hide_for": ms(hide_for),
            "poll_for": ms(poll_for),
            "poll_interval": ms(poll_interval),
        },
        _messages,
    )


def hide(queue: str, id: int, *, hide_for: Duration) -> Query[bool]:
    return Query(
        "hide",
        "SELECT catbird.cb_hide(queue => %(queue)s::text, id => %(id)s::bigint,"
        " hide_for => %(hide_for)s::int)",
        {"queue": queue, "id": id, "hide_for": ms(hide_for)},
        _bool,
    )


def hide_many(queue: str, ids: Iterable[int], *, hide_for: Duration) -> Query[list[int]]:
    return Query(
        "hide_many",
        "SELECT catbird.cb_hide(queue => %(queue)s::text, ids => %(ids)s::bigint[],"
        " hide_for => %(hide_for)s::int)",
        {"queue": queue, "ids": list(ids), "hide_for": ms(hide_for)},
        _int_list,
    )


def delete(queue: str, id: int) -> Query[bool]:
    return Query(
        "delete",
        "SELECT catbird.cb_delete(queue => %(queue)s::text, id => %(id)s::bigint)",
        {"queue": queue, "id": id},
        _bool,
    )


def delete_many(queue: str, ids: Iterable[int]) -> Query[list[int]]:
    return Query(
        "delete_many",
        "SELECT catbird.cb_delete(queue => %(queue)s::text, ids => %(ids)s::bigint[])",
        {"queue": queue, "ids": list(ids)},
        _int_list,
    )


# --------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------


def bind(queue: str, pattern: str) -> Query[None]:
    return Query(
        "bind",
        "SELECT catbird.cb_bind(queue => %(queue)s::text, pattern => %(pattern)s::text)",
        {"queue": queue, "pattern": pattern},
        _void,
    )


def unbind(queue: str, pattern: str) -> Query[bool]:
    return Query(
        "unbind",
        "SELECT catbird.cb_unbind(queue => %(queue)s::text, pattern => %(pattern)s::text)",
        {"queue": queue, "pattern": pattern},
        _bool,
    )


def list_bindings(queue: str | None = None) -> Query[list[Binding]]:
    return Query(
        "list_bindings",
        "SELECT queue, pattern, created_at"
        " FROM catbird.cb_list_bindings(queue => %(queue)s::text) ORDER BY queue, pattern",
        {"queue": queue},
        _bindings,
    )


def publish(
    topic: str,
    body: Any,
    *,
    concurrency_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[int]:
    return Query(
        "publish",
        "SELECT catbird.cb_publish(topic => %(topic)s::text, body => %(body)s::jsonb,"
        " concurrency_key => %(concurrency_key)s::text, headers => %(headers)s::jsonb,"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "topic": topic,
            "body": jsonb(body),
            "concurrency_key": concurrency_key,
            "headers": jsonb_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int,
    )


def publish_many(
    topic: str,
    bodies: Iterable[Any],
    *,
    concurrency_keys: Sequence[str | None] | None = None,
    headers: Sequence[Mapping[str, Any] | None] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[int]:
    return Query(
        "publish_many",
        "SELECT catbird.cb_publish(topic => %(topic)s::text, bodies => %(bodies)s::jsonb[],"
        " concurrency_keys => %(concurrency_keys)s::text[], headers => %(headers)s::jsonb[],"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "topic": topic,
            "bodies": jsonb_array(bodies),
            "concurrency_keys": _list_or_null(concurrency_keys),
            "headers": jsonb_array_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int,
    )

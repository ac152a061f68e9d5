"""Statements of queues, their messages and topics (``20_queues.sql``, ``30_topics.sql``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, LiteralString, Unpack

from ..models import Binding, Message, QueueInfo
from ._call import (
    CLAIM_ARGS,
    POLL_ARGS,
    BatchEnqueueOptions,
    Call,
    Duration,
    EnqueueOptions,
    Params,
    Query,
    boolean,
    each,
    enqueue_args,
    enqueue_many,
    enqueue_one,
    int_list,
    integer,
    jsonb,
    jsonb_array,
    ms,
    one,
    poll_params,
    void,
)

MESSAGE_COLUMNS: LiteralString = (
    "id, body, headers, topic, concurrency_key, priority, deliveries,"
    " created_at, visible_at, expires_at"
)

QUEUE_COLUMNS: LiteralString = (
    "name, description, created_at, expires_at, depth, visible, oldest_visible_at"
)

_messages = each(Message)
_queue_infos = each(QueueInfo)
_bindings = each(Binding)

# -------------------------------------------------------------------- queues

_CREATE_QUEUE = Call("cb_create_queue", name="text", expires_at="timestamptz", description="text")
_DELETE_QUEUE = Call("cb_delete_queue", name="text")
_PURGE_QUEUE = Call("cb_purge_queue", name="text")
_GET_QUEUE = Call("cb_get_queue", returns=QUEUE_COLUMNS, name="text")
_LIST_QUEUES = Call("cb_list_queues", returns=QUEUE_COLUMNS, then="ORDER BY name")


def create_queue(
    name: str, *, expires_at: datetime | None = None, description: str | None = None
) -> Query[None]:
    return _CREATE_QUEUE.query(
        {"name": name, "expires_at": expires_at, "description": description}, void
    )


def delete_queue(name: str) -> Query[bool]:
    return _DELETE_QUEUE.query({"name": name}, boolean)


def purge_queue(name: str) -> Query[int]:
    return _PURGE_QUEUE.query({"name": name}, integer)


def _queue_info(row: tuple[Any, ...]) -> QueueInfo:
    return QueueInfo(*row)


def get_queue(name: str) -> Query[QueueInfo]:
    return _GET_QUEUE.query({"name": name}, one(_queue_info, f'queue "{name}" does not exist'))


def list_queues() -> Query[list[QueueInfo]]:
    return _LIST_QUEUES.query({}, _queue_infos)


# ------------------------------------------------------------------ messages

_SEND = Call("cb_send", queue="text", body="jsonb", topic="text", **enqueue_args(many=False))
_SEND_MANY = Call(
    "cb_send",
    statement="send_many",
    queue="text",
    bodies="jsonb[]",
    topic="text",
    **enqueue_args(many=True),
)
_READ = Call("cb_read", returns=MESSAGE_COLUMNS, queue="text", **CLAIM_ARGS)
_READ_POLL = Call("cb_read_poll", returns=MESSAGE_COLUMNS, queue="text", **CLAIM_ARGS, **POLL_ARGS)
_HIDE = Call("cb_hide", queue="text", id="bigint", hide_for="int")
_HIDE_MANY = Call("cb_hide", statement="hide_many", queue="text", ids="bigint[]", hide_for="int")
_DELETE = Call("cb_delete", queue="text", id="bigint")
_DELETE_MANY = Call("cb_delete", statement="delete_many", queue="text", ids="bigint[]")


def send(
    queue: str,
    body: Any,
    *,
    topic: str | None = None,
    **options: Unpack[EnqueueOptions],
) -> Query[int]:
    params: Params = {"queue": queue, "body": jsonb(body), "topic": topic}
    return _SEND.query(enqueue_one(params, options), integer)


def send_many(
    queue: str,
    bodies: Iterable[Any],
    *,
    topic: str | None = None,
    **options: Unpack[BatchEnqueueOptions],
) -> Query[list[int]]:
    params: Params = {"queue": queue, "bodies": jsonb_array(bodies), "topic": topic}
    return _SEND_MANY.query(
        enqueue_many(params, options),
        int_list,
    )


def read(queue: str, *, quantity: int = 1, hide_for: Duration = 30.0) -> Query[list[Message]]:
    return _READ.query({"queue": queue, "quantity": quantity, "hide_for": ms(hide_for)}, _messages)


def read_poll(
    queue: str,
    *,
    quantity: int = 1,
    hide_for: Duration = 30.0,
    poll_for: Duration = 5.0,
    poll_interval: Duration = 0.1,
) -> Query[list[Message]]:
    params: Params = {"queue": queue, "quantity": quantity, "hide_for": ms(hide_for)}
    return _READ_POLL.query(poll_params(params, poll_for, poll_interval), _messages)


def hide(queue: str, id: int, *, hide_for: Duration) -> Query[bool]:
    return _HIDE.query({"queue": queue, "id": id, "hide_for": ms(hide_for)}, boolean)


def hide_many(queue: str, ids: Iterable[int], *, hide_for: Duration) -> Query[list[int]]:
    return _HIDE_MANY.query({"queue": queue, "ids": list(ids), "hide_for": ms(hide_for)}, int_list)


def delete(queue: str, id: int) -> Query[bool]:
    return _DELETE.query({"queue": queue, "id": id}, boolean)


def delete_many(queue: str, ids: Iterable[int]) -> Query[list[int]]:
    return _DELETE_MANY.query({"queue": queue, "ids": list(ids)}, int_list)


# -------------------------------------------------------------------- topics

_BIND = Call("cb_bind", queue="text", pattern="text")
_UNBIND = Call("cb_unbind", queue="text", pattern="text")
_LIST_BINDINGS = Call(
    "cb_list_bindings",
    returns="queue, pattern, created_at",
    then="ORDER BY queue, pattern",
    queue="text",
)
_PUBLISH = Call("cb_publish", topic="text", body="jsonb", **enqueue_args(many=False))
_PUBLISH_MANY = Call(
    "cb_publish", statement="publish_many", topic="text", bodies="jsonb[]", **enqueue_args(True)
)


def bind(queue: str, pattern: str) -> Query[None]:
    return _BIND.query({"queue": queue, "pattern": pattern}, void)


def unbind(queue: str, pattern: str) -> Query[bool]:
    return _UNBIND.query({"queue": queue, "pattern": pattern}, boolean)


def list_bindings(queue: str | None = None) -> Query[list[Binding]]:
    return _LIST_BINDINGS.query({"queue": queue}, _bindings)


def publish(
    topic: str,
    body: Any,
    **options: Unpack[EnqueueOptions],
) -> Query[int]:
    params: Params = {"topic": topic, "body": jsonb(body)}
    return _PUBLISH.query(enqueue_one(params, options), integer)


def publish_many(
    topic: str,
    bodies: Iterable[Any],
    **options: Unpack[BatchEnqueueOptions],
) -> Query[int]:
    params: Params = {"topic": topic, "bodies": jsonb_array(bodies)}
    return _PUBLISH_MANY.query(
        enqueue_many(params, options),
        integer,
    )

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
    list_or_null,
    ms,
    one,
    poll_params,
    void,
)

MESSAGE_COLUMNS: LiteralString = (
    "id, body, headers, topic, concurrency_key, priority, deliveries,"
    " created_at, visible_at, expires_at, source_queue, source_deliveries"
)

QUEUE_COLUMNS: LiteralString = (
    "name, description, created_at, expires_at, depth, visible, oldest_visible_at,"
    " max_deliveries, dead_letter_queue"
)

_messages = each(Message)
_queue_infos = each(QueueInfo)
_bindings = each(Binding)

# -------------------------------------------------------------------- queues

_CREATE_QUEUE = Call(
    "cb_create_queue",
    name="text",
    expires_at="timestamptz",
    description="text",
    max_deliveries="int",
    dead_letter_queue="text",
)
_REDRIVE = Call("cb_redrive", dead_letter_queue="text", quantity="int")
_DELETE_QUEUE = Call("cb_delete_queue", name="text")
_PURGE_QUEUE = Call("cb_purge_queue", name="text")
_GET_QUEUE = Call("cb_get_queue", returns=QUEUE_COLUMNS, name="text")
_LIST_QUEUES = Call("cb_list_queues", returns=QUEUE_COLUMNS, then="ORDER BY name")


def create_queue(
    name: str,
    *,
    expires_at: datetime | None = None,
    description: str | None = None,
    max_deliveries: int | None = None,
    dead_letter_queue: str | None = None,
) -> Query[None]:
    """``max_deliveries``: a message about to be delivered once more is moved
    to ``dead_letter_queue`` (which must exist) or, without one, deleted."""
    params = {
        "name": name,
        "expires_at": expires_at,
        "description": description,
        "max_deliveries": max_deliveries,
        "dead_letter_queue": dead_letter_queue,
    }
    return _CREATE_QUEUE.query(params, void)


def redrive(dead_letter_queue: str, *, quantity: int | None = None) -> Query[int]:
    """Move dead letters back to the queues they came from (deliveries reset)."""
    return _REDRIVE.query({"dead_letter_queue": dead_letter_queue, "quantity": quantity}, integer)


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
_POP = Call("cb_pop", returns=MESSAGE_COLUMNS, queue="text", quantity="int")
_HIDE = Call("cb_hide", queue="text", id="bigint", hide_for="int", delivery="int")
_HIDE_MANY = Call(
    "cb_hide",
    statement="hide_many",
    queue="text",
    ids="bigint[]",
    hide_for="int",
    deliveries="int[]",
)
_DELETE = Call("cb_delete", queue="text", id="bigint", delivery="int")
_DELETE_MANY = Call(
    "cb_delete", statement="delete_many", queue="text", ids="bigint[]", deliveries="int[]"
)


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


def pop(queue: str, *, quantity: int = 1) -> Query[list[Message]]:
    """Claim and delete up to ``quantity`` messages in one statement (no ack)."""
    return _POP.query({"queue": queue, "quantity": quantity}, _messages)


def hide(queue: str, id: int, *, hide_for: Duration, delivery: int | None = None) -> Query[bool]:
    """With ``delivery`` (the message's ``deliveries`` when it was read: a
    receipt), a message delivered again since is left untouched (false)."""
    params = {"queue": queue, "id": id, "hide_for": ms(hide_for), "delivery": delivery}
    return _HIDE.query(params, boolean)


def hide_many(
    queue: str,
    ids: Iterable[int],
    *,
    hide_for: Duration,
    deliveries: Iterable[int] | None = None,
) -> Query[list[int]]:
    """With ``deliveries`` (one receipt per id), only current receipts act."""
    params = {
        "queue": queue,
        "ids": list(ids),
        "hide_for": ms(hide_for),
        "deliveries": list_or_null(deliveries),
    }
    return _HIDE_MANY.query(params, int_list)


def delete(queue: str, id: int, *, delivery: int | None = None) -> Query[bool]:
    """With ``delivery`` (a receipt), a message delivered again since is kept (false)."""
    return _DELETE.query({"queue": queue, "id": id, "delivery": delivery}, boolean)


def delete_many(
    queue: str, ids: Iterable[int], *, deliveries: Iterable[int] | None = None
) -> Query[list[int]]:
    """With ``deliveries`` (one receipt per id), only current receipts act."""
    params = {"queue": queue, "ids": list(ids), "deliveries": list_or_null(deliveries)}
    return _DELETE_MANY.query(params, int_list)


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

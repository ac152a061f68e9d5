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
from uuid import UUID

from psycopg.types.json import Jsonb

from ..errors import InvalidArgument, NotFound
from ..models import (
    Binding,
    Message,
    OnFailClaim,
    QueueInfo,
    RunOutcome,
    TaskClaim,
    TaskInfo,
    TaskRunInfo,
    WorkerInfo,
)

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


# --------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------


def interval_or_null(value: Duration | None) -> timedelta | None:
    """An ``interval`` parameter from seconds or a timedelta (``None``: SQL NULL)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(
            f"duration must be a finite number of seconds or a timedelta: {value!r}"
        )
    return timedelta(seconds=value)


TASK_COLUMNS: LiteralString = "name, description, condition, retention_period, on_fail, created_at"

TASK_RUN_COLUMNS: LiteralString = (
    "id, task_name, status, priority, attempts, concurrency_key, input, headers, output,"
    " error_message, cancel_reason, created_at, visible_at, expires_at, started_at,"
    " completed_at, failed_at, skipped_at, expired_at, cancel_requested_at, canceled_at,"
    " on_fail_status, on_fail_attempts, on_fail_error_message"
)


def _task_infos(rows: Rows) -> list[TaskInfo]:
    return [TaskInfo(*row) for row in rows]


def _task_runs(rows: Rows) -> list[TaskRunInfo]:
    return [TaskRunInfo(*row) for row in rows]


def create_task(
    name: str,
    *,
    description: str | None = None,
    condition: str | None = None,
    retention_period: Duration | None = None,
    on_fail: bool = False,
) -> Query[None]:
    return Query(
        "create_task",
        "SELECT catbird.cb_create_task(name => %(name)s::text,"
        " description => %(description)s::text, condition => %(condition)s::text,"
        " retention_period => %(retention_period)s::interval, on_fail => %(on_fail)s::boolean)",
        {
            "name": name,
            "description": description,
            "condition": condition,
            "retention_period": interval_or_null(retention_period),
            "on_fail": on_fail,
        },
        _void,
    )


def delete_task(name: str) -> Query[bool]:
    return Query(
        "delete_task",
        "SELECT catbird.cb_delete_task(name => %(name)s::text)",
        {"name": name},
        _bool,
    )


def get_task(name: str) -> Query[TaskInfo]:
    def decode(rows: Rows) -> TaskInfo:
        if not rows:
            raise NotFound(f'task "{name}" does not exist')
        return TaskInfo(*rows[0])

    return Query(
        "get_task",
        "SELECT " + TASK_COLUMNS + " FROM catbird.cb_get_task(name => %(name)s::text)",
        {"name": name},
        decode,
    )


def list_tasks() -> Query[list[TaskInfo]]:
    return Query(
        "list_tasks",
        "SELECT " + TASK_COLUMNS + " FROM catbird.cb_list_tasks() ORDER BY name",
        {},
        _task_infos,
    )


def run_task(
    name: str,
    input: Any,
    *,
    concurrency_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[int]:
    return Query(
        "run_task",
        "SELECT catbird.cb_run_task(name => %(name)s::text, input => %(input)s::jsonb,"
        " concurrency_key => %(concurrency_key)s::text, headers => %(headers)s::jsonb,"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "name": name,
            "input": jsonb(input),
            "concurrency_key": concurrency_key,
            "headers": jsonb_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int,
    )


def run_tasks(
    name: str,
    inputs: Iterable[Any],
    *,
    concurrency_keys: Sequence[str | None] | None = None,
    headers: Sequence[Mapping[str, Any] | None] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[list[int]]:
    return Query(
        "run_tasks",
        "SELECT catbird.cb_run_task(name => %(name)s::text, inputs => %(inputs)s::jsonb[],"
        " concurrency_keys => %(concurrency_keys)s::text[], headers => %(headers)s::jsonb[],"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "name": name,
            "inputs": jsonb_array(inputs),
            "concurrency_keys": _list_or_null(concurrency_keys),
            "headers": jsonb_array_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int_list,
    )


def bind_task(name: str, pattern: str) -> Query[None]:
    return Query(
        "bind_task",
        "SELECT catbird.cb_bind_task(name => %(name)s::text, pattern => %(pattern)s::text)",
        {"name": name, "pattern": pattern},
        _void,
    )


def unbind_task(name: str, pattern: str) -> Query[bool]:
    return Query(
        "unbind_task",
        "SELECT catbird.cb_unbind_task(name => %(name)s::text, pattern => %(pattern)s::text)",
        {"name": name, "pattern": pattern},
        _bool,
    )


def cancel_task(name: str, run_id: int, *, reason: str | None = None) -> Query[bool]:
    return Query(
        "cancel_task",
        "SELECT catbird.cb_cancel_task(name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " reason => %(reason)s::text)",
        {"name": name, "run_id": run_id, "reason": reason},
        _bool,
    )


def _run_outcome(rows: Rows) -> RunOutcome | None:
    return RunOutcome(*rows[0]) if rows else None


def wait_task_output(
    name: str, run_id: int, *, poll_for: Duration = 5.0, poll_interval: Duration = 0.2
) -> Query[RunOutcome | None]:
    return Query(
        "wait_task_output",
        "SELECT status, output, error_message FROM catbird.cb_wait_task_output("
        "name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " poll_for => %(poll_for)s::int, poll_interval => %(poll_interval)s::int)",
        {
            "name": name,
            "run_id": run_id,
            "poll_for": ms(poll_for),
            "poll_interval": ms(poll_interval),
        },
        _run_outcome,
    )


def purge_task_runs(name: str, older_than: Duration) -> Query[int]:
    return Query(
        "purge_task_runs",
        "SELECT catbird.cb_purge_task_runs(name => %(name)s::text,"
        " older_than => %(older_than)s::interval)",
        {"name": name, "older_than": interval_or_null(older_than)},
        _int,
    )


def clear_task_runs(name: str) -> Query[int]:
    return Query(
        "clear_task_runs",
        "SELECT catbird.cb_clear_task_runs(name => %(name)s::text)",
        {"name": name},
        _int,
    )


def get_task_run(name: str, run_id: int) -> Query[TaskRunInfo]:
    def decode(rows: Rows) -> TaskRunInfo:
        if not rows:
            raise NotFound(f'task "{name}" has no run {run_id}')
        return TaskRunInfo(*rows[0])

    return Query(
        "get_task_run",
        "SELECT " + TASK_RUN_COLUMNS + " FROM catbird.cb_get_task_run("
        "name => %(name)s::text, run_id => %(run_id)s::bigint)",
        {"name": name, "run_id": run_id},
        decode,
    )


def list_task_runs(
    name: str, *, limit: int = 100, before_id: int | None = None
) -> Query[list[TaskRunInfo]]:
    return Query(
        "list_task_runs",
        "SELECT " + TASK_RUN_COLUMNS + " FROM catbird.cb_list_task_runs("
        "name => %(name)s::text, lim => %(lim)s::int, before_id => %(before_id)s::bigint)",
        {"name": name, "lim": limit, "before_id": before_id},
        _task_runs,
    )


# --------------------------------------------------------------------------
# Worker protocol (tasks)
# --------------------------------------------------------------------------


def _task_claims(rows: Rows) -> list[TaskClaim]:
    return [TaskClaim(*row) for row in rows]


def claim_tasks(name: str, *, quantity: int, hide_for: Duration) -> Query[list[TaskClaim]]:
    return Query(
        "claim_tasks",
        "SELECT id, attempts, input, headers, concurrency_key, priority"
        " FROM catbird.cb_claim_tasks(name => %(name)s::text, quantity => %(quantity)s::int,"
        " hide_for => %(hide_for)s::int)",
        {"name": name, "quantity": quantity, "hide_for": ms(hide_for)},
        _task_claims,
    )


def hide_tasks(
    name: str,
    ids: Iterable[int],
    *,
    hide_for: Duration,
    attempts: Sequence[int] | None = None,
) -> Query[None]:
    """Lease renewal; with ``attempts`` (one per id) only claims still held are renewed."""
    return Query(
        "hide_tasks",
        "SELECT catbird.cb_hide_tasks(name => %(name)s::text, ids => %(ids)s::bigint[],"
        " hide_for => %(hide_for)s::int, attempts => %(attempts)s::int[])",
        {
            "name": name,
            "ids": list(ids),
            "hide_for": ms(hide_for),
            "attempts": _list_or_null(attempts),
        },
        _void,
    )


def complete_task(
    name: str, run_id: int, output: Any, *, attempt: int | None = None
) -> Query[bool]:
    return Query(
        "complete_task",
        "SELECT catbird.cb_complete_task(name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " output => %(output)s::jsonb, attempt => %(attempt)s::int)",
        {"name": name, "run_id": run_id, "output": jsonb(output), "attempt": attempt},
        _bool,
    )


def complete_tasks_json(
    name: str,
    run_ids: Sequence[int],
    outputs_json: Sequence[str],
    attempts: Sequence[int] | None = None,
) -> Query[list[int]]:
    """Batch completion with outputs already serialised to JSON text.

    The worker serialises each output when its handler returns, so that a
    value JSON cannot represent fails that one run instead of the batch.
    """
    return Query(
        "complete_tasks",
        "SELECT catbird.cb_complete_tasks(name => %(name)s::text, run_ids => %(run_ids)s::bigint[],"
        " outputs => %(outputs)s::text[]::jsonb[], attempts => %(attempts)s::int[])",
        {
            "name": name,
            "run_ids": list(run_ids),
            "outputs": list(outputs_json),
            "attempts": _list_or_null(attempts),
        },
        _int_list,
    )


def _text_or_none(rows: Rows) -> str | None:
    return None if not rows or rows[0][0] is None else str(rows[0][0])


def fail_task(
    name: str,
    run_id: int,
    error_message: str,
    *,
    attempt: int | None = None,
    max_retries: int = 0,
    backoff_min: int = 100,
    backoff_max: int = 2000,
) -> Query[str | None]:
    """``backoff_min``/``backoff_max`` are milliseconds, as the engine takes them."""
    return Query(
        "fail_task",
        "SELECT catbird.cb_fail_task(name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " error_message => %(error_message)s::text, attempt => %(attempt)s::int,"
        " max_retries => %(max_retries)s::int, backoff_min => %(backoff_min)s::int,"
        " backoff_max => %(backoff_max)s::int)",
        {
            "name": name,
            "run_id": run_id,
            "error_message": error_message,
            "attempt": attempt,
            "max_retries": max_retries,
            "backoff_min": backoff_min,
            "backoff_max": backoff_max,
        },
        _text_or_none,
    )


def _on_fail_claims(rows: Rows) -> list[OnFailClaim]:
    return [OnFailClaim(*row) for row in rows]


def claim_task_on_fail(
    name: str, *, quantity: int, hide_for: Duration = 30.0
) -> Query[list[OnFailClaim]]:
    return Query(
        "claim_task_on_fail",
        "SELECT id, input, error_message, attempts, on_fail_attempts, started_at, failed_at,"
        " concurrency_key FROM catbird.cb_claim_task_on_fail(name => %(name)s::text,"
        " quantity => %(quantity)s::int, hide_for => %(hide_for)s::int)",
        {"name": name, "quantity": quantity, "hide_for": ms(hide_for)},
        _on_fail_claims,
    )


def complete_task_on_fail(name: str, run_id: int) -> Query[None]:
    return Query(
        "complete_task_on_fail",
        "SELECT catbird.cb_complete_task_on_fail(name => %(name)s::text,"
        " run_id => %(run_id)s::bigint)",
        {"name": name, "run_id": run_id},
        _void,
    )


def fail_task_on_fail(
    name: str, run_id: int, error_message: str, *, retry_exhausted: bool, retry_delay: int
) -> Query[None]:
    """``retry_delay`` is milliseconds."""
    return Query(
        "fail_task_on_fail",
        "SELECT catbird.cb_fail_task_on_fail(name => %(name)s::text,"
        " run_id => %(run_id)s::bigint, error_message => %(error_message)s::text,"
        " retry_exhausted => %(retry_exhausted)s::boolean, retry_delay => %(retry_delay)s::bigint)",
        {
            "name": name,
            "run_id": run_id,
            "error_message": error_message,
            "retry_exhausted": retry_exhausted,
            "retry_delay": retry_delay,
        },
        _void,
    )


# --------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------


def worker_started(
    id: UUID,
    *,
    task_handlers: Sequence[Mapping[str, Any]],
    step_handlers: Sequence[Mapping[str, Any]],
) -> Query[None]:
    return Query(
        "worker_started",
        "SELECT catbird.cb_worker_started(id => %(id)s::uuid,"
        " task_handlers => %(task_handlers)s::jsonb, step_handlers => %(step_handlers)s::jsonb)",
        {
            "id": id,
            "task_handlers": jsonb(list(task_handlers)),
            "step_handlers": jsonb(list(step_handlers)),
        },
        _void,
    )


def _registered(rows: Rows) -> bool:
    value = rows[0][0] if rows else None
    return bool(value.get("registered", False)) if isinstance(value, dict) else False


def worker_heartbeat(id: UUID) -> Query[bool]:
    """True while the worker is registered; False means: register again."""
    return Query(
        "worker_heartbeat",
        "SELECT catbird.cb_worker_heartbeat(id => %(id)s::uuid)",
        {"id": id},
        _registered,
    )


def worker_stopped(id: UUID) -> Query[bool]:
    return Query(
        "worker_stopped",
        "SELECT catbird.cb_worker_stopped(id => %(id)s::uuid)",
        {"id": id},
        _bool,
    )


def _worker_infos(rows: Rows) -> list[WorkerInfo]:
    return [WorkerInfo(*row) for row in rows]


def list_workers() -> Query[list[WorkerInfo]]:
    return Query(
        "list_workers",
        "SELECT id, task_handlers, step_handlers, started_at, last_heartbeat_at"
        " FROM catbird.cb_list_workers()",
        {},
        _worker_infos,
    )


def _jsonb_object(rows: Rows) -> dict[str, Any]:
    value = rows[0][0] if rows else None
    return dict(value) if isinstance(value, dict) else {}


def gc(*, batch_size: int = 10000, stale_worker_after: Duration = 300.0) -> Query[dict[str, Any]]:
    """Bounded garbage collection (``cb_gc``); returns its counters."""
    return Query(
        "gc",
        "SELECT catbird.cb_gc(batch_size => %(batch_size)s::int,"
        " stale_worker_after => %(stale_worker_after)s::interval)",
        {"batch_size": batch_size, "stale_worker_after": interval_or_null(stale_worker_after)},
        _jsonb_object,
    )


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------

#: The channel every engine event is sent on (payload: {"topic", "data", "node_id"}).
EVENTS_CHANNEL: LiteralString = "catbird"


def async_commit() -> Query[None]:
    """Session setting of the worker's claim connections: commits do not wait
    for the WAL flush. A claim or lease renewal lost in a server crash only
    makes its run claimable again, which the at-least-once contract allows."""
    return Query("async_commit", "SET synchronous_commit TO off", {}, _void)


def listen_events() -> Query[None]:
    return Query("listen_events", "LISTEN catbird", {}, _void)


def ping() -> Query[None]:
    return Query("ping", "SELECT 1", {}, _void)


# --------------------------------------------------------------------------
# Flows
# --------------------------------------------------------------------------

from ..models import (  # noqa: E402 - kept with the flow section
    FlowInfo,
    FlowOnFailClaim,
    FlowRunInfo,
    MapTaskClaim,
    StepClaim,
    StepInfo,
    StepRunInfo,
)

FLOW_COLUMNS: LiteralString = (
    "name, description, steps, output_priority, retention_period, on_fail, created_at"
)

FLOW_RUN_COLUMNS: LiteralString = (
    "id, flow_name, status, priority, concurrency_key, input, headers, output, error_message,"
    " cancel_reason, failed_step_name, created_at, visible_at, expires_at, started_at,"
    " completed_at, failed_at, cancel_requested_at, canceled_at, on_fail_status,"
    " on_fail_attempts, on_fail_error_message"
)

STEP_RUN_COLUMNS: LiteralString = (
    "id, flow_run_id, step_name, status, priority, attempts, output, error_message,"
    " signal_input, map_total, map_done, created_at, visible_at, started_at, completed_at,"
    " failed_at, skipped_at, canceled_at"
)


def _flow_info(row: Row) -> FlowInfo:
    name, description, steps, output_priority, retention, on_fail, created_at = row
    return FlowInfo(
        name,
        description,
        tuple(StepInfo.from_json(s) for s in steps or ()),
        tuple(output_priority or ()),
        retention,
        bool(on_fail),
        created_at,
    )


def _flow_infos(rows: Rows) -> list[FlowInfo]:
    return [_flow_info(row) for row in rows]


def _flow_runs(rows: Rows) -> list[FlowRunInfo]:
    return [FlowRunInfo(*row) for row in rows]


def _step_runs(rows: Rows) -> list[StepRunInfo]:
    return [StepRunInfo(*row) for row in rows]


def _step_run_or_none(rows: Rows) -> StepRunInfo | None:
    return StepRunInfo(*rows[0]) if rows else None


def _jsonb_value(rows: Rows) -> Any:
    return rows[0][0] if rows else None


def create_flow(
    name: str,
    *,
    steps: Sequence[Mapping[str, Any]],
    description: str | None = None,
    output_priority: Sequence[str] | None = None,
    retention_period: Duration | None = None,
    on_fail: bool = False,
) -> Query[None]:
    return Query(
        "create_flow",
        "SELECT catbird.cb_create_flow(name => %(name)s::text,"
        " description => %(description)s::text, steps => %(steps)s::jsonb,"
        " output_priority => %(output_priority)s::text[],"
        " retention_period => %(retention_period)s::interval, on_fail => %(on_fail)s::boolean)",
        {
            "name": name,
            "description": description,
            "steps": jsonb([dict(s) for s in steps]),
            "output_priority": _list_or_null(output_priority),
            "retention_period": interval_or_null(retention_period),
            "on_fail": on_fail,
        },
        _void,
    )


def delete_flow(name: str) -> Query[bool]:
    return Query(
        "delete_flow",
        "SELECT catbird.cb_delete_flow(name => %(name)s::text)",
        {"name": name},
        _bool,
    )


def get_flow(name: str) -> Query[FlowInfo]:
    def decode(rows: Rows) -> FlowInfo:
        if not rows:
            raise NotFound(f'flow "{name}" does not exist')
        return _flow_info(rows[0])

    return Query(
        "get_flow",
        "SELECT " + FLOW_COLUMNS + " FROM catbird.cb_get_flow(name => %(name)s::text)",
        {"name": name},
        decode,
    )


def list_flows() -> Query[list[FlowInfo]]:
    return Query(
        "list_flows",
        "SELECT " + FLOW_COLUMNS + " FROM catbird.cb_list_flows() ORDER BY name",
        {},
        _flow_infos,
    )


def run_flow(
    name: str,
    input: Any,
    *,
    concurrency_key: str | None = None,
    headers: Mapping[str, Any] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[int]:
    return Query(
        "run_flow",
        "SELECT catbird.cb_run_flow(name => %(name)s::text, input => %(input)s::jsonb,"
        " concurrency_key => %(concurrency_key)s::text, headers => %(headers)s::jsonb,"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "name": name,
            "input": jsonb(input),
            "concurrency_key": concurrency_key,
            "headers": jsonb_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int,
    )


def run_flows(
    name: str,
    inputs: Iterable[Any],
    *,
    concurrency_keys: Sequence[str | None] | None = None,
    headers: Sequence[Mapping[str, Any] | None] | None = None,
    visible_at: datetime | None = None,
    priority: int = 0,
    expires_at: datetime | None = None,
) -> Query[list[int]]:
    return Query(
        "run_flows",
        "SELECT catbird.cb_run_flow(name => %(name)s::text, inputs => %(inputs)s::jsonb[],"
        " concurrency_keys => %(concurrency_keys)s::text[], headers => %(headers)s::jsonb[],"
        " visible_at => %(visible_at)s::timestamptz, priority => %(priority)s::int,"
        " expires_at => %(expires_at)s::timestamptz)",
        {
            "name": name,
            "inputs": jsonb_array(inputs),
            "concurrency_keys": _list_or_null(concurrency_keys),
            "headers": jsonb_array_or_null(headers),
            "visible_at": visible_at,
            "priority": priority,
            "expires_at": expires_at,
        },
        _int_list,
    )


def bind_flow(name: str, pattern: str) -> Query[None]:
    return Query(
        "bind_flow",
        "SELECT catbird.cb_bind_flow(name => %(name)s::text, pattern => %(pattern)s::text)",
        {"name": name, "pattern": pattern},
        _void,
    )


def unbind_flow(name: str, pattern: str) -> Query[bool]:
    return Query(
        "unbind_flow",
        "SELECT catbird.cb_unbind_flow(name => %(name)s::text, pattern => %(pattern)s::text)",
        {"name": name, "pattern": pattern},
        _bool,
    )


def signal_flow(name: str, run_id: int, step_name: str, input: Any) -> Query[bool]:
    return Query(
        "signal_flow",
        "SELECT catbird.cb_signal_flow(flow_name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " step_name => %(step_name)s::text, input => %(input)s::jsonb)",
        {"name": name, "run_id": run_id, "step_name": step_name, "input": jsonb(input)},
        _bool,
    )


def cancel_flow(name: str, run_id: int, *, reason: str | None = None) -> Query[bool]:
    return Query(
        "cancel_flow",
        "SELECT catbird.cb_cancel_flow(name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " reason => %(reason)s::text)",
        {"name": name, "run_id": run_id, "reason": reason},
        _bool,
    )


def wait_flow_output(
    name: str, run_id: int, *, poll_for: Duration = 5.0, poll_interval: Duration = 0.2
) -> Query[RunOutcome | None]:
    return Query(
        "wait_flow_output",
        "SELECT status, output, error_message FROM catbird.cb_wait_flow_output("
        "flow_name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " poll_for => %(poll_for)s::int, poll_interval => %(poll_interval)s::int)",
        {
            "name": name,
            "run_id": run_id,
            "poll_for": ms(poll_for),
            "poll_interval": ms(poll_interval),
        },
        _run_outcome,
    )


def get_flow_step_status(name: str, run_id: int, step_name: str) -> Query[StepRunInfo | None]:
    """One step of a run; ``None`` when the run does not exist (42704 for an unknown step)."""
    return Query(
        "get_flow_step_status",
        "SELECT " + STEP_RUN_COLUMNS + " FROM catbird.cb_get_flow_step_status("
        "flow_name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " step_name => %(step_name)s::text)",
        {"name": name, "run_id": run_id, "step_name": step_name},
        _step_run_or_none,
    )


def get_flow_step_output(name: str, run_id: int, step_name: str) -> Query[Any]:
    """A completed step's output (JSON null when it is not completed)."""
    return Query(
        "get_flow_step_output",
        "SELECT catbird.cb_get_flow_step_output(flow_name => %(name)s::text,"
        " run_id => %(run_id)s::bigint, step_name => %(step_name)s::text)",
        {"name": name, "run_id": run_id, "step_name": step_name},
        _jsonb_value,
    )


def wait_flow_step_output(
    name: str,
    run_id: int,
    step_name: str,
    *,
    poll_for: Duration = 5.0,
    poll_interval: Duration = 0.2,
) -> Query[RunOutcome | None]:
    return Query(
        "wait_flow_step_output",
        "SELECT status, output, error_message FROM catbird.cb_wait_flow_step_output("
        "flow_name => %(name)s::text, run_id => %(run_id)s::bigint,"
        " step_name => %(step_name)s::text, poll_for => %(poll_for)s::int,"
        " poll_interval => %(poll_interval)s::int)",
        {
            "name": name,
            "run_id": run_id,
            "step_name": step_name,
            "poll_for": ms(poll_for),
            "poll_interval": ms(poll_interval),
        },
        _run_outcome,
    )


def get_flow_run(name: str, run_id: int) -> Query[FlowRunInfo]:
    def decode(rows: Rows) -> FlowRunInfo:
        if not rows:
            raise NotFound(f'flow "{name}" has no run {run_id}')
        return FlowRunInfo(*rows[0])

    return Query(
        "get_flow_run",
        "SELECT " + FLOW_RUN_COLUMNS + " FROM catbird.cb_get_flow_run("
        "name => %(name)s::text, run_id => %(run_id)s::bigint)",
        {"name": name, "run_id": run_id},
        decode,
    )


def list_flow_runs(
    name: str, *, limit: int = 100, before_id: int | None = None
) -> Query[list[FlowRunInfo]]:
    return Query(
        "list_flow_runs",
        "SELECT " + FLOW_RUN_COLUMNS + " FROM catbird.cb_list_flow_runs("
        "name => %(name)s::text, lim => %(lim)s::int, before_id => %(before_id)s::bigint)",
        {"name": name, "lim": limit, "before_id": before_id},
        _flow_runs,
    )


def get_flow_run_steps(name: str, run_id: int) -> Query[list[StepRunInfo]]:
    return Query(
        "get_flow_run_steps",
        "SELECT " + STEP_RUN_COLUMNS + " FROM catbird.cb_get_flow_run_steps("
        "flow_name => %(name)s::text, run_id => %(run_id)s::bigint)",
        {"name": name, "run_id": run_id},
        _step_runs,
    )


def purge_flow_runs(name: str, older_than: Duration) -> Query[int]:
    return Query(
        "purge_flow_runs",
        "SELECT catbird.cb_purge_flow_runs(name => %(name)s::text,"
        " older_than => %(older_than)s::interval)",
        {"name": name, "older_than": interval_or_null(older_than)},
        _int,
    )


def clear_flow_runs(name: str) -> Query[int]:
    return Query(
        "clear_flow_runs",
        "SELECT catbird.cb_clear_flow_runs(name => %(name)s::text)",
        {"name": name},
        _int,
    )


# Worker protocol (flows) ---------------------------------------------------


def complete_flow_early_json(
    name: str, run_id: int, step_name: str, output_json: str, *, reason: str | None = None
) -> Query[bool]:
    """Early completion with the output already serialised to JSON text."""
    return Query(
        "complete_flow_early",
        "SELECT catbird.cb_complete_flow_early(flow_name => %(name)s::text,"
        " run_id => %(run_id)s::bigint, step_name => %(step_name)s::text,"
        " output => %(output)s::text::jsonb, reason => %(reason)s::text)",
        {
            "name": name,
            "run_id": run_id,
            "step_name": step_name,
            "output": output_json,
            "reason": reason,
        },
        _bool,
    )


def _step_claims(rows: Rows) -> list[StepClaim]:
    return [StepClaim(r[0], r[1], r[2], r[3], r[4] or {}, r[5]) for r in rows]


def claim_steps(
    name: str,
    step_name: str,
    *,
    quantity: int,
    hide_for: Duration,
    with_input: bool = True,
    with_outputs: bool = True,
) -> Query[list[StepClaim]]:
    """Claim step runs; ``with_input``/``with_outputs`` false leave those columns
    NULL (not sent), for handlers that do not take them."""
    return Query(
        "claim_steps",
        "SELECT id, flow_run_id, attempts,"
        " CASE WHEN %(with_input)s::boolean THEN input END,"
        " CASE WHEN %(with_outputs)s::boolean THEN step_outputs END, signal_input"
        " FROM catbird.cb_claim_steps(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, quantity => %(quantity)s::int,"
        " hide_for => %(hide_for)s::int)",
        {
            "name": name,
            "step_name": step_name,
            "quantity": quantity,
            "hide_for": ms(hide_for),
            "with_input": with_input,
            "with_outputs": with_outputs,
        },
        _step_claims,
    )


def hide_steps(
    name: str,
    step_name: str,
    ids: Iterable[int],
    *,
    hide_for: Duration,
    attempts: Sequence[int | None] | None = None,
) -> Query[None]:
    """Lease renewal; with ``attempts`` (one per id) only claims still held are renewed."""
    return Query(
        "hide_steps",
        "SELECT catbird.cb_hide_steps(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, ids => %(ids)s::bigint[],"
        " hide_for => %(hide_for)s::int, attempts => %(attempts)s::int[])",
        {
            "name": name,
            "step_name": step_name,
            "ids": list(ids),
            "hide_for": ms(hide_for),
            "attempts": _list_or_null(attempts),
        },
        _void,
    )


def complete_step_json(
    name: str, step_name: str, id: int, output_json: str, *, attempt: int | None = None
) -> Query[bool]:
    """Step completion with the output already serialised to JSON text."""
    return Query(
        "complete_step",
        "SELECT catbird.cb_complete_step(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint,"
        " output => %(output)s::text::jsonb, attempt => %(attempt)s::int)",
        {
            "name": name,
            "step_name": step_name,
            "id": id,
            "output": output_json,
            "attempt": attempt,
        },
        _bool,
    )


def _ids_done(rows: Rows) -> list[int]:
    return [int(r[0]) for r in rows]


def complete_steps_json(
    name: str,
    step_name: str,
    ids: Sequence[int],
    outputs_json: Sequence[str],
    attempts: Sequence[int] | None = None,
) -> Query[list[int]]:
    """Several ``cb_complete_step`` calls in one statement (one commit), in the
    order given; returns the ids whose completion was recorded.

    The caller orders them by flow run: each call locks its flow run, so
    statements that take their locks in the same order cannot deadlock.
    """
    return Query(
        "complete_steps",
        "SELECT u.id FROM unnest(%(ids)s::bigint[], %(outputs)s::text[], %(attempts)s::int[])"
        " WITH ORDINALITY AS u(id, output, attempt, ord)"
        " CROSS JOIN LATERAL catbird.cb_complete_step(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => u.id, output => u.output::jsonb,"
        " attempt => u.attempt) AS c(done)"
        " WHERE c.done ORDER BY u.ord",
        {
            "name": name,
            "step_name": step_name,
            "ids": list(ids),
            "outputs": list(outputs_json),
            "attempts": [None] * len(ids) if attempts is None else list(attempts),
        },
        _ids_done,
    )


def fail_step(
    name: str,
    step_name: str,
    id: int,
    error_message: str,
    *,
    attempt: int | None = None,
    max_retries: int = 0,
    backoff_min: int = 100,
    backoff_max: int = 2000,
) -> Query[str | None]:
    """``backoff_min``/``backoff_max`` are milliseconds, as the engine takes them."""
    return Query(
        "fail_step",
        "SELECT catbird.cb_fail_step(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint,"
        " error_message => %(error_message)s::text, attempt => %(attempt)s::int,"
        " max_retries => %(max_retries)s::int, backoff_min => %(backoff_min)s::int,"
        " backoff_max => %(backoff_max)s::int)",
        {
            "name": name,
            "step_name": step_name,
            "id": id,
            "error_message": error_message,
            "attempt": attempt,
            "max_retries": max_retries,
            "backoff_min": backoff_min,
            "backoff_max": backoff_max,
        },
        _text_or_none,
    )


def _map_task_claims(rows: Rows) -> list[MapTaskClaim]:
    return [MapTaskClaim(r[0], r[1], r[2], r[3], r[4] or {}, r[5], r[6]) for r in rows]


def claim_map_tasks(
    name: str,
    step_name: str,
    *,
    quantity: int,
    hide_for: Duration,
    with_input: bool = True,
    with_outputs: bool = True,
) -> Query[list[MapTaskClaim]]:
    """Claim items; ``with_input``/``with_outputs`` false leave those columns NULL
    (not sent): the engine returns the whole flow input with every item, which
    for a mapper over the input is the whole array each time."""
    return Query(
        "claim_map_tasks",
        "SELECT id, flow_run_id, attempts, input, step_outputs, signal_input, item"
        " FROM catbird.cb_claim_map_tasks(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, quantity => %(quantity)s::int,"
        " hide_for => %(hide_for)s::int, with_input => %(with_input)s::boolean,"
        " with_outputs => %(with_outputs)s::boolean)",
        {
            "name": name,
            "step_name": step_name,
            "quantity": quantity,
            "hide_for": ms(hide_for),
            "with_input": with_input,
            "with_outputs": with_outputs,
        },
        _map_task_claims,
    )


def hide_map_tasks(
    name: str,
    step_name: str,
    ids: Iterable[int],
    *,
    hide_for: Duration,
    attempts: Sequence[int | None] | None = None,
) -> Query[None]:
    """Lease renewal; with ``attempts`` (one per id) only claims still held are renewed."""
    return Query(
        "hide_map_tasks",
        "SELECT catbird.cb_hide_map_tasks(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, ids => %(ids)s::bigint[],"
        " hide_for => %(hide_for)s::int, attempts => %(attempts)s::int[])",
        {
            "name": name,
            "step_name": step_name,
            "ids": list(ids),
            "hide_for": ms(hide_for),
            "attempts": _list_or_null(attempts),
        },
        _void,
    )


def complete_map_tasks_json(
    name: str,
    step_name: str,
    ids: Sequence[int],
    outputs_json: Sequence[str],
    attempts: Sequence[int] | None = None,
) -> Query[None]:
    """Batch completion of items with outputs already serialised to JSON text."""
    return Query(
        "complete_map_tasks",
        "SELECT catbird.cb_complete_map_tasks(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, ids => %(ids)s::bigint[],"
        " outputs => %(outputs)s::text[]::jsonb[], attempts => %(attempts)s::int[])",
        {
            "name": name,
            "step_name": step_name,
            "ids": list(ids),
            "outputs": list(outputs_json),
            "attempts": _list_or_null(attempts),
        },
        _void,
    )


def fail_map_task(
    name: str,
    step_name: str,
    id: int,
    error_message: str,
    *,
    attempt: int | None = None,
    max_retries: int = 0,
    backoff_min: int = 100,
    backoff_max: int = 2000,
) -> Query[str | None]:
    """``backoff_min``/``backoff_max`` are milliseconds, as the engine takes them."""
    return Query(
        "fail_map_task",
        "SELECT catbird.cb_fail_map_task(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint,"
        " error_message => %(error_message)s::text, attempt => %(attempt)s::int,"
        " max_retries => %(max_retries)s::int, backoff_min => %(backoff_min)s::int,"
        " backoff_max => %(backoff_max)s::int)",
        {
            "name": name,
            "step_name": step_name,
            "id": id,
            "error_message": error_message,
            "attempt": attempt,
            "max_retries": max_retries,
            "backoff_min": backoff_min,
            "backoff_max": backoff_max,
        },
        _text_or_none,
    )


def spawn_generator_map_tasks_json(
    name: str, step_name: str, id: int, items_json: str, *, visible_at: datetime | None = None
) -> Query[int]:
    """Items of a running generator, given as one JSON array text; returns how many were added."""
    return Query(
        "spawn_generator_map_tasks",
        "SELECT catbird.cb_spawn_generator_map_tasks(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint,"
        " items => %(items)s::text::jsonb, visible_at => %(visible_at)s::timestamptz)",
        {
            "name": name,
            "step_name": step_name,
            "id": id,
            "items": items_json,
            "visible_at": visible_at,
        },
        _int,
    )


def complete_generator_step(name: str, step_name: str, id: int) -> Query[None]:
    return Query(
        "complete_generator_step",
        "SELECT catbird.cb_complete_generator_step(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint)",
        {"name": name, "step_name": step_name, "id": id},
        _void,
    )


def fail_generator_step(name: str, step_name: str, id: int, error_message: str) -> Query[None]:
    return Query(
        "fail_generator_step",
        "SELECT catbird.cb_fail_generator_step(flow_name => %(name)s::text,"
        " step_name => %(step_name)s::text, id => %(id)s::bigint,"
        " error_message => %(error_message)s::text)",
        {"name": name, "step_name": step_name, "id": id, "error_message": error_message},
        _void,
    )


def _idx_outputs(rows: Rows) -> list[tuple[int, Any]]:
    return [(int(r[0]), r[1]) for r in rows]


def read_map_outputs(
    name: str, run_id: int, step_name: str, *, after_idx: int = -1, limit: int = 1000
) -> Query[list[tuple[int, Any]]]:
    """A page of ``(idx, output)`` of a mapper's or generator's completed items."""
    return Query(
        "read_map_outputs",
        "SELECT idx, output FROM catbird.cb_read_map_outputs(flow_name => %(name)s::text,"
        " run_id => %(run_id)s::bigint, step_name => %(step_name)s::text,"
        " after_idx => %(after_idx)s::int, lim => %(lim)s::int)",
        {
            "name": name,
            "run_id": run_id,
            "step_name": step_name,
            "after_idx": after_idx,
            "lim": limit,
        },
        _idx_outputs,
    )


def _flow_on_fail_claims(rows: Rows) -> list[FlowOnFailClaim]:
    return [FlowOnFailClaim(*row) for row in rows]


def claim_flow_on_fail(
    name: str, *, quantity: int, hide_for: Duration = 30.0
) -> Query[list[FlowOnFailClaim]]:
    return Query(
        "claim_flow_on_fail",
        "SELECT id, input, error_message, on_fail_attempts, started_at, failed_at,"
        " concurrency_key, failed_step_name, failed_step_input, failed_step_signal_input,"
        " failed_step_attempts FROM catbird.cb_claim_flow_on_fail(name => %(name)s::text,"
        " quantity => %(quantity)s::int, hide_for => %(hide_for)s::int)",
        {"name": name, "quantity": quantity, "hide_for": ms(hide_for)},
        _flow_on_fail_claims,
    )


def complete_flow_on_fail(name: str, run_id: int) -> Query[None]:
    return Query(
        "complete_flow_on_fail",
        "SELECT catbird.cb_complete_flow_on_fail(name => %(name)s::text,"
        " run_id => %(run_id)s::bigint)",
        {"name": name, "run_id": run_id},
        _void,
    )


def fail_flow_on_fail(
    name: str, run_id: int, error_message: str, *, retry_exhausted: bool, retry_delay: int
) -> Query[None]:
    """``retry_delay`` is milliseconds."""
    return Query(
        "fail_flow_on_fail",
        "SELECT catbird.cb_fail_flow_on_fail(name => %(name)s::text,"
        " run_id => %(run_id)s::bigint, error_message => %(error_message)s::text,"
        " retry_exhausted => %(retry_exhausted)s::boolean, retry_delay => %(retry_delay)s::bigint)",
        {
            "name": name,
            "run_id": run_id,
            "error_message": error_message,
            "retry_exhausted": retry_exhausted,
            "retry_delay": retry_delay,
        },
        _void,
    )

"""The statement builder, :class:`Query`, parameter conversions and decoders.

A :class:`Call` declares one call of an engine function: its name, the SQL
type of each argument and, for a set-returning function, the columns to
select. It renders the SQL text once, when the module defining it is
imported; a statement function then only converts Python values into the
parameter dict and picks the decoder of the rows::

    _SEND = Call("cb_send", queue="text", body="jsonb", ...)

    def send(queue: str, body: Any, ...) -> Query[int]:
        return _SEND.query({"queue": queue, "body": jsonb(body), ...}, integer)

Calls use named notation and explicit casts: ``cb_send``/``cb_publish``/
``cb_hide``/``cb_delete`` are overloaded (single and batch forms), and the
engine picks the form by the argument names and types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Generic, LiteralString, NamedTuple, Protocol, TypeAlias, TypedDict, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ..codec import dumps
from ..errors import InvalidArgument, NotFound
from ..models import RunOutcome

T = TypeVar("T")

Row: TypeAlias = tuple[Any, ...]
Rows: TypeAlias = list[Row]
Params: TypeAlias = dict[str, Any]
#: A duration in seconds (``float``/``int``) or a ``timedelta``.
Duration: TypeAlias = float | timedelta


class Query(NamedTuple, Generic[T]):
    """One statement: its name, SQL text, parameters and result decoder.

    Immutable; a named tuple rather than a frozen dataclass because it is
    made for every statement sent, and a tuple is made in a fraction of the
    time.
    """

    name: str
    sql: LiteralString
    params: Params
    decode: Callable[[Rows], T]


class Executor(Protocol):
    """What runs a statement and decodes its rows: a :class:`catbird.Client`.

    Handles and readers depend on this, not on the client class, so the
    client can hand them out without an import loop.
    """

    def execute(self, query: Query[T], /) -> T: ...

    def _listening(self) -> AbstractContextManager[psycopg.Connection[Any] | None]:
        """A connection of its own LISTENing for events (``None``: none to be had)."""
        ...


class AsyncExecutor(Protocol):
    """:class:`Executor` for asyncio: a :class:`catbird.AsyncClient`."""

    async def execute(self, query: Query[T], /) -> T: ...

    def _listening(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any] | None]:
        """A connection of its own LISTENing for events (``None``: none to be had)."""
        ...


class Statement:
    """A named SQL text; :attr:`query` makes the :class:`Query` of parameters and a decoder."""

    __slots__ = ("name", "query", "sql")

    def __init__(self, name: str, sql: LiteralString) -> None:
        self.name = name
        self.sql = sql
        #: ``query(params, decode)``: the :class:`Query` of these parameters,
        #: as cheap as writing ``Query(name, sql, params, decode)`` out.
        self.query: Callable[[Params, Callable[[Rows], Any]], Query[Any]] = partial(
            Query, name, sql
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.sql!r})"


class Call(Statement):
    """One declared call of a ``catbird.<function>``, its SQL rendered once.

    ``args`` maps each argument name to its SQL type (the cast of its
    placeholder, e.g. ``"text"``, ``"jsonb[]"`` or ``"text[]::jsonb[]"`` for
    JSON texts); the parameter of an argument has the argument's name.
    ``returns`` selects these columns from a set-returning function
    (``SELECT <returns> FROM catbird.<function>(...)``) instead of its single
    value; ``then`` is appended (``ORDER BY ...``). ``statement`` names the
    :class:`Query` (default: the function name without ``cb_``).
    """

    __slots__ = ("args", "function")

    def __init__(
        self,
        function: str,
        /,
        *,
        returns: str | None = None,
        then: str = "",
        statement: str | None = None,
        **args: str,
    ) -> None:
        if not all(word.isidentifier() for word in (function, *args)):
            raise ValueError(f"not an identifier: {function}({', '.join(args)})")
        self.function = function
        self.args = args
        named = ", ".join(f"{arg} => %({arg})s::{type_}" for arg, type_ in args.items())
        call = f"catbird.{function}({named})"
        sql = f"SELECT {returns} FROM {call}" if returns else f"SELECT {call}"
        # Made of the declaration's literal pieces only, once, at import.
        text: LiteralString = sql + (f" {then}" if then else "")
        super().__init__(statement or function.removeprefix("cb_"), text)


#: Argument groups the engine's functions share.
POLL_ARGS: dict[str, str] = {"poll_for": "int", "poll_interval": "int"}
CLAIM_ARGS: dict[str, str] = {"quantity": "int", "hide_for": "int"}


# --------------------------------------------------------------------------
# Parameter conversion
# --------------------------------------------------------------------------


def jsonb(value: Any) -> Jsonb:
    """A ``jsonb`` parameter (Python ``None`` becomes JSON ``null``).

    Serialised by :func:`catbird.codec.dumps`, the one JSON codec of the
    package: dataclasses (nested), pydantic models, enums, dates, UUIDs and
    decimals are accepted wherever a JSON value is (bodies, headers, inputs,
    outputs, signals).
    """
    return Jsonb(value, dumps)


def jsonb_or_null(value: Any) -> Jsonb | None:
    """A ``jsonb`` parameter, or SQL NULL for ``None``."""
    return None if value is None else Jsonb(value, dumps)


def jsonb_array(values: Iterable[Any]) -> list[Jsonb]:
    """A ``jsonb[]`` parameter; ``None`` items become JSON ``null``."""
    return [Jsonb(v, dumps) for v in values]


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


def ms_or_null(seconds: Duration | None) -> int | None:
    """:func:`ms`, or SQL NULL for ``None``."""
    return None if seconds is None else ms(seconds)


def interval_or_null(value: Duration | None) -> timedelta | None:
    """An ``interval`` parameter from seconds or a timedelta (``None``: SQL NULL)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(
            f"duration must be a finite number of seconds or a timedelta: {value!r}"
        )
    return timedelta(seconds=value)


def list_or_null(values: Iterable[Any] | None) -> list[Any] | None:
    return None if values is None else list(values)


def poll_params(params: Params, poll_for: Duration, poll_interval: Duration) -> Params:
    """``params`` with the polling of a ``cb_read_poll``/``cb_wait_*`` call (in ms)."""
    params["poll_for"] = ms(poll_for)
    params["poll_interval"] = ms(poll_interval)
    return params


def retry_params(
    params: Params,
    max_retries: int | None,
    backoff_min: int | None,
    backoff_max: int | None,
    retryable: bool = True,
    error_detail: str | None = None,
) -> Params:
    """``params`` with the failure of a ``cb_fail_*`` call: its retry policy
    (backoffs in ms; ``None``: the policy stored on the definition), whether
    it may be retried at all, and its detail (a traceback)."""
    params["max_retries"] = max_retries
    params["backoff_min"] = backoff_min
    params["backoff_max"] = backoff_max
    params["retryable"] = retryable
    params["error_detail"] = error_detail
    return params


#: The SQL types of the failure arguments of the ``cb_fail_*`` calls.
RETRY_ARGS: dict[str, str] = {
    "error_message": "text",
    "attempt": "int",
    "max_retries": "int",
    "backoff_min": "int",
    "backoff_max": "int",
    "retryable": "boolean",
    "error_detail": "text",
}


def enqueue_args(many: bool) -> dict[str, str]:
    """The SQL types of the options shared by sending, publishing and running
    (``cb_send``/``cb_publish``/``cb_run_task``/``cb_run_flow``), single or batch form."""
    return {
        ("concurrency_keys" if many else "concurrency_key"): "text[]" if many else "text",
        "headers": "jsonb[]" if many else "jsonb",
        "visible_at": "timestamptz",
        "priority": "int",
        "expires_at": "timestamptz",
    }


class EnqueueOptions(TypedDict, total=False):
    """The keyword options of one send, publish or run.

    ``concurrency_key``: while a live message or run holds the key, nothing
    new is written and the holder's id is returned. ``headers``: a JSON object
    stored with it. ``visible_at``: not delivered before then. ``priority``:
    higher first (default 0). ``expires_at``: dropped unread after then.
    """

    concurrency_key: str | None
    headers: Mapping[str, Any] | None
    visible_at: datetime | None
    priority: int
    expires_at: datetime | None


class BatchEnqueueOptions(TypedDict, total=False):
    """The keyword options of a batch send, publish or run: as
    :class:`EnqueueOptions`, with one key and one headers object per item."""

    concurrency_keys: Sequence[str | None] | None
    headers: Sequence[Mapping[str, Any] | None] | None
    visible_at: datetime | None
    priority: int
    expires_at: datetime | None


def enqueue_one(params: Params, options: EnqueueOptions) -> Params:
    """``params`` with the options of a single send, publish or run."""
    headers = options.get("headers")
    params["concurrency_key"] = options.get("concurrency_key")
    params["headers"] = None if headers is None else Jsonb(headers, dumps)
    params["visible_at"] = options.get("visible_at")
    params["priority"] = options.get("priority", 0)
    params["expires_at"] = options.get("expires_at")
    return params


def enqueue_many(params: Params, options: BatchEnqueueOptions) -> Params:
    """``params`` with the options of a batch send, publish or run."""
    params["concurrency_keys"] = list_or_null(options.get("concurrency_keys"))
    params["headers"] = jsonb_array_or_null(options.get("headers"))
    params["visible_at"] = options.get("visible_at")
    params["priority"] = options.get("priority", 0)
    params["expires_at"] = options.get("expires_at")
    return params


# --------------------------------------------------------------------------
# Decoders
# --------------------------------------------------------------------------


def void(rows: Rows) -> None:
    return None


def boolean(rows: Rows) -> bool:
    return bool(rows[0][0])


def integer(rows: Rows) -> int:
    return int(rows[0][0])


def int_list(rows: Rows) -> list[int]:
    value = rows[0][0]
    return [] if value is None else [int(v) for v in value]


def text_or_none(rows: Rows) -> str | None:
    return None if not rows or rows[0][0] is None else str(rows[0][0])


def jsonb_value(rows: Rows) -> Any:
    return rows[0][0] if rows else None


def jsonb_object(rows: Rows) -> dict[str, Any]:
    value = rows[0][0] if rows else None
    return dict(value) if isinstance(value, dict) else {}


def run_outcome(rows: Rows) -> RunOutcome | None:
    return RunOutcome(*rows[0]) if rows else None


#: The columns of a ``cb_wait_*_output`` row (a :class:`RunOutcome`).
OUTCOME_COLUMNS: LiteralString = "status, output, error_message"


def each(record: Callable[..., T]) -> Callable[[Rows], list[T]]:
    """A decoder making one ``record(*row)`` of every row."""

    def decode(rows: Rows) -> list[T]:
        return [record(*row) for row in rows]

    return decode


def one(record: Callable[[Row], T], missing: str) -> Callable[[Rows], T]:
    """A decoder of the single row ``record(row)``; :class:`NotFound` ``missing`` if none."""

    def decode(rows: Rows) -> T:
        if not rows:
            raise NotFound(missing)
        return record(rows[0])

    return decode

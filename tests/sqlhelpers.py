"""Helpers shared by the SQL-level suites (tests/test_*_sql.py).

They call catbird's functions the way any client would (plain psycopg, named
notation, which the contract allows and which also picks the single or batch
overload by parameter name), snapshot the engine's tables so that a test can
prove a rejected call wrote nothing, and pin the engine clock through the
session setting catbird.fake_now. Fixtures live in tests/conftest.py, not here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

__all__ = [
    "HIDE",
    "T0",
    "Clock",
    "J",
    "assert_pages_backwards",
    "call",
    "claim_steps",
    "complete_step",
    "connections",
    "engine_state",
    "fn",
    "messages",
    "orphans",
    "rejected",
    "scalar",
    "step",
]

#: The instant the pinned engine clock starts from in time-dependent tests.
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)

#: A claim lease (ms) longer than any test.
HIDE = 60_000

#: Wraps a Python value so that psycopg sends it as jsonb (a list of J is jsonb[]).
J = Jsonb


def _named_call(function: str, args: dict[str, Any]) -> sql.Composed:
    return sql.SQL("catbird.{}({})").format(
        sql.Identifier(function),
        sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in args
        ),
    )


def fn(conn: psycopg.Connection[Any], function: str, /, **args: Any) -> Any:
    """``SELECT catbird.<function>(name => value, ...)`` and return its single value."""
    query = sql.SQL("SELECT {}").format(_named_call(function, args))
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def call(conn: psycopg.Connection[Any], function: str, /, **args: Any) -> list[dict[str, Any]]:
    """``SELECT * FROM catbird.<function>(name => value, ...)``: the rows of a set-returning
    call, as dicts."""
    query = sql.SQL("SELECT * FROM {}").format(_named_call(function, args))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, args).fetchall()


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    """The first column of the first row of a query."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def messages(conn: psycopg.Connection[Any], queue: str) -> list[dict[str, Any]]:
    """Every stored message of a queue (visible, hidden or expired), oldest id first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT m.* FROM catbird.cb_messages m JOIN catbird.cb_queues q ON q.id = m.queue_id"
            " WHERE q.name = %s ORDER BY m.id",
            (queue,),
        ).fetchall()


def orphans(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Messages whose queue no longer exists, and queue bindings whose queue no longer exists."""
    return {
        "messages": scalar(
            conn,
            "SELECT count(*) FROM catbird.cb_messages m"
            " WHERE NOT EXISTS (SELECT FROM catbird.cb_queues q WHERE q.id = m.queue_id)",
        ),
        "bindings": scalar(
            conn,
            "SELECT count(*) FROM catbird.cb_bindings b WHERE b.target_type = 'queue'"
            " AND NOT EXISTS (SELECT FROM catbird.cb_queues q WHERE q.name = b.target_name)",
        ),
    }


def engine_state(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """The full contents of every table in schema catbird, as sorted JSON texts per table."""
    with conn.cursor(row_factory=tuple_row) as cur:
        tables = [
            r[0]
            for r in cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'catbird' ORDER BY tablename"
            ).fetchall()
        ]
        state = {}
        for table in tables:
            rows = cur.execute(
                sql.SQL("SELECT to_jsonb(t)::text FROM catbird.{} t").format(sql.Identifier(table))
            ).fetchall()
            state[table] = sorted(r[0] for r in rows)
    return state


@contextlib.contextmanager
def rejected(
    conn: psycopg.Connection[Any], error: type[psycopg.Error]
) -> Iterator[pytest.ExceptionInfo[psycopg.Error]]:
    """Expect the block to raise ``error`` (a psycopg.errors SQLSTATE class) and to leave
    every catbird table exactly as it was."""
    before = engine_state(conn)
    with pytest.raises(error) as info:
        yield info
    assert info.value.sqlstate == error.sqlstate
    assert engine_state(conn) == before, "a rejected call must not write anything"


def assert_pages_backwards(
    conn: psycopg.Connection[Any], function: str, name: str, ids: list[int]
) -> None:
    """``function`` (cb_list_task_runs, cb_list_flow_runs) lists the five runs ``ids`` of
    ``name`` newest first, ``lim`` at a time, ``before_id`` paging backwards; ``lim`` 0 is
    rejected."""

    def page(**options: Any) -> list[int]:
        return [r["id"] for r in call(conn, function, name=name, **options)]

    assert page() == ids[::-1]
    assert page(lim=2) == [ids[4], ids[3]]
    assert page(lim=2, before_id=ids[3]) == [ids[2], ids[1]]
    assert page(lim=2, before_id=ids[1]) == [ids[0]]
    assert page(lim=2, before_id=ids[0]) == []
    with rejected(conn, errors.InvalidParameterValue):
        page(lim=0)


class Clock:
    """The engine clock of one session, pinned through ``SET catbird.fake_now``."""

    def __init__(self, conn: psycopg.Connection[Any], start: dt.datetime = T0) -> None:
        self.conn = conn
        self.now = start
        self.set(start)

    def set(self, when: dt.datetime) -> None:
        self.now = when
        scalar(self.conn, "SELECT set_config('catbird.fake_now', %s, false)", (when.isoformat(),))

    def advance(self, *, seconds: float = 0, ms: float = 0) -> dt.datetime:
        self.set(self.now + dt.timedelta(seconds=seconds, milliseconds=ms))
        return self.now

    def engine_now(self) -> dt.datetime:
        return scalar(self.conn, "SELECT catbird.cb_now()")  # type: ignore[no-any-return]


# ------------------------------------------------------------------------- flows


def step(name: str, *deps: str, **fields: Any) -> dict[str, Any]:
    """A step object of cb_create_flow; positional arguments are its dependencies."""
    out: dict[str, Any] = {"name": name, **fields}
    if deps:
        out["depends_on"] = [{"name": d} for d in deps]
    return out


def claim_steps(
    conn: psycopg.Connection[Any],
    flow: str,
    step_name: str,
    quantity: int = 10,
    hide_for: int = HIDE,
) -> list[dict[str, Any]]:
    """cb_claim_steps: up to ``quantity`` queued runs of one step."""
    return call(
        conn,
        "cb_claim_steps",
        flow_name=flow,
        step_name=step_name,
        quantity=quantity,
        hide_for=hide_for,
    )


def complete_step(
    conn: psycopg.Connection[Any],
    flow: str,
    step_name: str,
    claimed: dict[str, Any],
    output: Any,
    **options: Any,
) -> bool:
    """cb_complete_step of a claim (its attempt, unless ``attempt`` is given)."""
    options.setdefault("attempt", claimed["attempts"])
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_complete_step",
        flow_name=flow,
        step_name=step_name,
        id=claimed["id"],
        output=J(output),
        **options,
    )


@contextlib.contextmanager
def connections(dsn: str, n: int) -> Iterator[list[psycopg.Connection]]:
    """n autocommit connections; a statement stuck for a minute fails instead of hanging."""
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(psycopg.connect(dsn, autocommit=True)) for _ in range(n)]
        for c in conns:
            c.execute("SET statement_timeout = '60s'")
        yield conns

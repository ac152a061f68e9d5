"""The durable per-identity inbox (84_inbox.sql): cb_notify_durable,
cb_read_notifications, cb_mark_seen_until, cb_mark_seen, and cb_gc's sweep.

Expiry is decided by the engine clock (catbird.fake_now), never by sleeping.
The concurrency guarantees (one unseen row per collapse key, ids of one
identity committing in order) are exercised with several real connections.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import dict_row

from sqlhelpers import T0, Clock, call, connections, fn, rejected, scalar

SECOND = dt.timedelta(seconds=1)
TIMEOUT = 60  # seconds; generous so that a slow CI machine does not fail these


def notify(conn: psycopg.Connection, identity: str, topic: str = "app.note", **options: Any) -> int:
    return fn(conn, "cb_notify_durable", identity=identity, topic=topic, **options)  # type: ignore[no-any-return]


def unseen(conn: psycopg.Connection, identity: str, **options: Any) -> list[dict[str, Any]]:
    return call(conn, "cb_read_notifications", identity=identity, **options)


def unseen_ids(conn: psycopg.Connection, identity: str, **options: Any) -> list[int]:
    return [r["id"] for r in unseen(conn, identity, **options)]


def rows(conn: psycopg.Connection, identity: str) -> list[dict[str, Any]]:
    """Every stored notification of an identity (seen, expired or not), by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM catbird.cb_notifications WHERE identity = %s ORDER BY id", (identity,)
        ).fetchall()


def wait_until_blocked(monitor: psycopg.Connection, pid: int) -> None:
    """Wait until the backend pid waits on a heavyweight lock."""
    deadline = time.monotonic() + TIMEOUT
    while not scalar(
        monitor,
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
        (pid,),
    ):
        assert time.monotonic() < deadline, f"backend {pid} never blocked"
        time.sleep(0.01)


@pytest.fixture
def clock(conn) -> Clock:
    return Clock(conn)


# ----------------------------------------------------------------- append and read


def test_appends_return_increasing_ids_and_reads_return_them_oldest_first(conn, clock):
    first = notify(conn, "alice", "import.started", message="started")
    clock.advance(seconds=1)
    second = notify(
        conn,
        "alice",
        "import.done",
        message="done",
        collapse_key="imp",
        expires_at=T0 + 60 * SECOND,
    )
    assert second > first
    assert unseen(conn, "alice") == [
        {
            "id": first,
            "topic": "import.started",
            "message": "started",
            "collapse_key": None,
            "created_at": T0,
            "expires_at": None,
        },
        {
            "id": second,
            "topic": "import.done",
            "message": "done",
            "collapse_key": "imp",
            "created_at": T0 + SECOND,
            "expires_at": T0 + 60 * SECOND,
        },
    ]
    # A message is optional, and reading marks nothing.
    third = notify(conn, "alice", "ping")
    assert unseen(conn, "alice")[-1]["message"] is None
    assert unseen_ids(conn, "alice") == [first, second, third]


def test_inboxes_are_isolated_per_identity(conn):
    a = notify(conn, "alice")
    b = notify(conn, "bob")
    assert unseen_ids(conn, "alice") == [a]
    assert unseen_ids(conn, "bob") == [b]
    assert unseen_ids(conn, "carol") == []
    assert fn(conn, "cb_mark_seen_until", identity="alice", id=b) == 1
    assert unseen_ids(conn, "bob") == [b], "marking alice's inbox must not touch bob's"
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[b]) == 0


def test_after_id_and_quantity_page_through_an_inbox(conn):
    ids = [notify(conn, "alice", message=str(i)) for i in range(5)]
    assert unseen_ids(conn, "alice", quantity=2) == ids[:2]
    assert unseen_ids(conn, "alice", after_id=ids[1], quantity=2) == ids[2:4]
    assert unseen_ids(conn, "alice", after_id=ids[3], quantity=2) == ids[4:]
    assert unseen_ids(conn, "alice", after_id=ids[4]) == []
    assert unseen_ids(conn, "alice", quantity=1000) == ids


# -------------------------------------------------------------------- marking seen


def test_mark_seen_until_marks_up_to_and_including_the_id_only(conn, clock):
    ids = [notify(conn, "alice") for _ in range(4)]
    clock.advance(seconds=5)
    assert fn(conn, "cb_mark_seen_until", identity="alice", id=ids[1]) == 2
    assert unseen_ids(conn, "alice") == ids[2:]
    assert [r["seen_at"] for r in rows(conn, "alice")] == [T0 + 5 * SECOND] * 2 + [None] * 2
    # Idempotent: already seen rows are neither marked again nor counted.
    clock.advance(seconds=5)
    assert fn(conn, "cb_mark_seen_until", identity="alice", id=ids[1]) == 0
    assert rows(conn, "alice")[0]["seen_at"] == T0 + 5 * SECOND
    # A row appended after the acknowledged cursor stays unseen.
    later = notify(conn, "alice")
    assert fn(conn, "cb_mark_seen_until", identity="alice", id=ids[3]) == 2
    assert unseen_ids(conn, "alice") == [later]
    assert fn(conn, "cb_mark_seen_until", identity="nobody", id=later) == 0


def test_mark_seen_marks_exactly_the_given_unseen_ids_of_the_identity(conn):
    ids = [notify(conn, "alice", "drawer.item" if i % 2 else "other.item") for i in range(5)]
    bobs = notify(conn, "bob")
    # One subset acknowledged; its interleaved siblings stay unseen.
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[ids[1], ids[3]]) == 2
    assert unseen_ids(conn, "alice") == [ids[0], ids[2], ids[4]]
    # Already seen, unknown and other identities' ids are not counted.
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[ids[1], ids[0], bobs, 999_999]) == 1
    assert unseen_ids(conn, "bob") == [bobs]
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[]) == 0
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[ids[2], ids[2]]) == 1
    assert unseen_ids(conn, "alice") == [ids[4]]


# ------------------------------------------------------------------------ collapse


def test_a_collapse_key_keeps_only_the_newest_unseen_row(conn, clock):
    old = notify(conn, "alice", "import.progress", message="10%", collapse_key="import-7")
    other_key = notify(conn, "alice", "import.progress", message="50%", collapse_key="import-8")
    plain = notify(conn, "alice", "import.progress", message="no key")
    bobs = notify(conn, "bob", "import.progress", message="10%", collapse_key="import-7")
    clock.advance(seconds=3)
    new = notify(conn, "alice", "import.progress", message="20%", collapse_key="import-7")
    assert new > old
    assert [(r["id"], r["message"]) for r in unseen(conn, "alice")] == [
        (other_key, "50%"),
        (plain, "no key"),
        (new, "20%"),
    ]
    # The collapsed row is marked seen (not deleted) at the append's time.
    assert rows(conn, "alice")[0]["seen_at"] == T0 + 3 * SECOND
    assert unseen_ids(conn, "bob") == [bobs], "a collapse key is per identity"


def test_collapse_leaves_rows_already_seen_untouched(conn, clock):
    first = notify(conn, "alice", collapse_key="k")
    clock.advance(seconds=1)
    assert fn(conn, "cb_mark_seen", identity="alice", ids=[first]) == 1
    clock.advance(seconds=1)
    second = notify(conn, "alice", collapse_key="k")
    clock.advance(seconds=1)
    third = notify(conn, "alice", collapse_key="k")
    assert [(r["id"], r["seen_at"]) for r in rows(conn, "alice")] == [
        (first, T0 + SECOND),  # seen by the reader, not re-marked by either collapse
        (second, T0 + 3 * SECOND),  # collapsed by the third
        (third, None),
    ]


def test_collapse_also_retires_an_expired_unseen_row_with_the_key(conn, clock):
    stale = notify(conn, "alice", collapse_key="k", expires_at=T0 + SECOND)
    clock.set(T0 + 2 * SECOND)
    fresh = notify(conn, "alice", collapse_key="k")
    assert unseen_ids(conn, "alice") == [fresh]
    assert rows(conn, "alice")[0]["id"] == stale
    assert rows(conn, "alice")[0]["seen_at"] == T0 + 2 * SECOND


# -------------------------------------------------------------------------- expiry


def test_expired_rows_are_hidden_from_reads_and_deleted_by_gc(conn, clock):
    short = notify(conn, "alice", expires_at=T0 + 10 * SECOND)
    seen_short = notify(conn, "alice", expires_at=T0 + 10 * SECOND)
    long = notify(conn, "alice", expires_at=T0 + 60 * SECOND)
    forever = notify(conn, "alice")
    fn(conn, "cb_mark_seen", identity="alice", ids=[seen_short])
    assert unseen_ids(conn, "alice") == [short, long, forever]
    assert fn(conn, "cb_gc")["notifications_deleted"] == 0

    clock.set(T0 + 10 * SECOND)  # expires_at is exclusive: at that instant it is gone
    assert unseen_ids(conn, "alice") == [long, forever]
    # gc deletes expired rows, seen or not, in batches of batch_size.
    assert fn(conn, "cb_gc", batch_size=1)["notifications_deleted"] == 1
    assert fn(conn, "cb_gc", batch_size=1)["notifications_deleted"] == 1
    assert fn(conn, "cb_gc")["notifications_deleted"] == 0
    assert [r["id"] for r in rows(conn, "alice")] == [long, forever]

    clock.set(T0 + 3600 * SECOND)
    assert fn(conn, "cb_gc")["notifications_deleted"] == 1
    assert unseen_ids(conn, "alice") == [forever]


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param(T0, id="now"),
        pytest.param(T0 - SECOND, id="past"),
        pytest.param("infinity", id="infinity"),
        pytest.param("-infinity", id="minus-infinity"),
    ],
)
def test_an_expiry_not_later_than_now_is_rejected(conn, clock, expires_at):
    notify(conn, "alice")
    with rejected(conn, errors.InvalidParameterValue) as info:
        scalar(
            conn,
            "SELECT catbird.cb_notify_durable('alice', 'app.note', expires_at => %s::timestamptz)",
            (expires_at,),
        )
    assert "expires_at" in str(info.value)


# ---------------------------------------------------------------------- bad inputs

LONG = "x" * 1025
MULTIBYTE = "é" * 513  # 513 characters, 1026 bytes

BAD_APPENDS = [
    pytest.param({"identity": None}, "invalid identity", id="identity-null"),
    pytest.param({"identity": ""}, "invalid identity", id="identity-empty"),
    pytest.param({"identity": LONG}, "invalid identity", id="identity-too-long"),
    pytest.param({"identity": MULTIBYTE}, "invalid identity", id="identity-too-many-bytes"),
    pytest.param({"topic": None}, "invalid topic", id="topic-null"),
    pytest.param({"topic": ""}, "invalid topic", id="topic-empty"),
    pytest.param({"topic": "a..b"}, "invalid topic", id="topic-empty-token"),
    pytest.param({"topic": "orders.*"}, "invalid topic", id="topic-wildcard"),
    pytest.param({"topic": "a" * 256}, "invalid topic", id="topic-too-long"),
    pytest.param({"collapse_key": ""}, "invalid collapse_key", id="collapse-key-empty"),
    pytest.param({"collapse_key": LONG}, "invalid collapse_key", id="collapse-key-too-long"),
]


@pytest.mark.parametrize(("args", "message"), BAD_APPENDS)
def test_bad_appends_are_rejected_and_change_nothing(conn, args, message):
    notify(conn, "alice", collapse_key="k")
    full = {"identity": "alice", "topic": "app.note", "collapse_key": "k", **args}
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_notify_durable", **full)
    assert message in str(info.value)
    assert not re.search(r"(.)\1{200}", str(info.value)), "a bad argument is quoted in part only"


BAD_READS = [
    pytest.param({"identity": None}, "invalid identity", id="identity-null"),
    pytest.param({"identity": ""}, "invalid identity", id="identity-empty"),
    pytest.param({"identity": LONG}, "invalid identity", id="identity-too-long"),
    pytest.param({"after_id": None}, "invalid after_id", id="after-id-null"),
    pytest.param({"quantity": 0}, "invalid quantity", id="quantity-zero"),
    pytest.param({"quantity": 1001}, "invalid quantity", id="quantity-too-big"),
    pytest.param({"quantity": None}, "invalid quantity", id="quantity-null"),
]


@pytest.mark.parametrize(("args", "message"), BAD_READS)
def test_bad_reads_are_rejected(conn, args, message):
    notify(conn, "alice")
    with rejected(conn, errors.InvalidParameterValue) as info:
        call(conn, "cb_read_notifications", **{"identity": "alice", **args})
    assert message in str(info.value)


BAD_MARKS = [
    pytest.param("cb_mark_seen_until", {"identity": None}, "invalid identity", id="until-identity"),
    pytest.param("cb_mark_seen_until", {"identity": ""}, "invalid identity", id="until-empty"),
    pytest.param("cb_mark_seen_until", {"id": None}, "invalid id", id="until-id-null"),
    pytest.param("cb_mark_seen", {"identity": None}, "invalid identity", id="ids-identity"),
    pytest.param("cb_mark_seen", {"ids": None}, "invalid ids", id="ids-null"),
    pytest.param("cb_mark_seen", {"ids": [1, None]}, "invalid ids", id="ids-null-element"),
    pytest.param("cb_mark_seen", {"ids": list(range(1, 10_002))}, "10001 ids", id="ids-too-many"),
]


@pytest.mark.parametrize(("function", "args", "message"), BAD_MARKS)
def test_bad_marks_are_rejected_and_change_nothing(conn, function, args, message):
    first = notify(conn, "alice")
    defaults = (
        {"identity": "alice", "id": first}
        if function == "cb_mark_seen_until"
        else {
            "identity": "alice",
            "ids": [first],
        }
    )
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, function, **{**defaults, **args})
    assert message in str(info.value)
    assert unseen_ids(conn, "alice") == [first]


def test_ten_thousand_ids_are_accepted(conn):
    first = notify(conn, "alice")
    assert (
        fn(conn, "cb_mark_seen", identity="alice", ids=[first, *range(10**9, 10**9 + 9_999)]) == 1
    )


# --------------------------------------------------------------------- concurrency


def test_concurrent_appends_with_one_collapse_key_leave_one_unseen_row(dsn):
    per_connection, n = 25, 6
    start = threading.Barrier(n)

    def appender(c: psycopg.Connection, who: int) -> list[int]:
        start.wait(timeout=TIMEOUT)
        return [
            notify(c, "alice", "import.progress", message=f"{who}-{i}", collapse_key="import")
            for i in range(per_connection)
        ]

    with connections(dsn, n + 1) as conns, ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(appender, c, i) for i, c in enumerate(conns[:n])]
        appended = [i for f in futures for i in f.result(timeout=TIMEOUT)]
        check = conns[n]
        assert len(set(appended)) == per_connection * n
        # Exactly one unseen row is left for the key: the newest.
        assert unseen_ids(check, "alice") == [max(appended)]
        assert (
            scalar(check, "SELECT count(*) FROM catbird.cb_notifications WHERE seen_at IS NULL")
            == 1
        )


def test_an_append_waits_for_an_open_append_to_the_same_identity(dsn):
    with connections(dsn, 4) as (holder, waiter, bystander, monitor), ThreadPoolExecutor(1) as pool:
        holder.execute("BEGIN")
        held = notify(holder, "alice", collapse_key="k", message="first")
        waiter_pid = scalar(waiter, "SELECT pg_backend_pid()")
        blocked = pool.submit(notify, waiter, "alice", collapse_key="k", message="second")
        wait_until_blocked(monitor, waiter_pid)
        # Another identity is not held up.
        notify(bystander, "bob")
        assert unseen_ids(monitor, "alice") == []
        holder.execute("COMMIT")
        second = blocked.result(timeout=TIMEOUT)
        # The waiter drew its id after the holder committed: larger, and it
        # saw the holder's row to collapse it.
        assert second > held
        assert unseen_ids(monitor, "alice") == [second]
        created = [r["created_at"] for r in rows(monitor, "alice")]
        assert created == sorted(created), "created_at follows id order within an identity"


def test_a_repeatable_read_append_racing_a_collapse_gets_40001_and_writes_nothing(dsn):
    with connections(dsn, 2) as (rr, other):
        rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        assert unseen_ids(rr, "alice") == []  # takes the snapshot
        winner = notify(other, "alice", collapse_key="k")
        with pytest.raises(errors.SerializationFailure):
            notify(rr, "alice", collapse_key="k")
        rr.execute("ROLLBACK")
        assert unseen_ids(other, "alice") == [winner]
        assert len(rows(other, "alice")) == 1


def test_a_cursor_reader_acknowledging_what_it_read_never_loses_a_row(dsn):
    """Writers append to one identity in transactions that stay open for a
    random moment; a reader reads after its cursor and acknowledges with
    cb_mark_seen_until. Were a smaller id able to commit after a larger one,
    the acknowledgement would mark it seen without it ever being read."""
    writers, per_writer = 4, 30
    start = threading.Barrier(writers + 1)
    done = threading.Event()

    def writer(c: psycopg.Connection, seed: int) -> list[int]:
        rng = random.Random(seed)
        start.wait(timeout=TIMEOUT)
        ids = []
        for _ in range(per_writer):
            with c.transaction():
                ids.append(notify(c, "alice"))
                time.sleep(rng.uniform(0, 0.003))
        return ids

    def reader(c: psycopg.Connection) -> list[int]:
        cursor, read = 0, []
        start.wait(timeout=TIMEOUT)
        while True:
            finished = done.is_set()
            batch = unseen_ids(c, "alice", after_id=cursor, quantity=7)
            assert all(i > cursor for i in batch)
            if batch:
                read.extend(batch)
                cursor = batch[-1]
                fn(c, "cb_mark_seen_until", identity="alice", id=cursor)
            elif finished:
                return read

    with connections(dsn, writers + 1) as conns, ThreadPoolExecutor(writers + 1) as pool:
        reading = pool.submit(reader, conns[writers])
        futures = [pool.submit(writer, c, i) for i, c in enumerate(conns[:writers])]
        written = sorted(i for f in futures for i in f.result(timeout=TIMEOUT))
        done.set()
        read = reading.result(timeout=TIMEOUT)
    assert read == written, "every row is read exactly once, in id order"

"""The dashboard's SQL reads (85_dashboard.sql): cb_peek, cb_list_run_counts,
cb_list_task_runs_by_status and cb_list_flow_runs_by_status."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import errors

from sqlhelpers import HIDE, Clock, J, call, engine_state, fn, rejected


def test_peek_lists_messages_in_claim_order_and_changes_nothing(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_queue", name="pq")
    low = fn(conn, "cb_send", queue="pq", body=J({"n": 1}))
    high = fn(conn, "cb_send", queue="pq", body=J({"n": 2}), priority=5)
    hidden = fn(conn, "cb_send", queue="pq", body=J({"n": 3}))
    # a reader holds the low-priority ones: peek still shows them, hidden
    claimed = call(conn, "cb_read", queue="pq", quantity=1, hide_for=HIDE)
    assert [m["id"] for m in claimed] == [high]
    before = engine_state(conn)
    peeked = call(conn, "cb_peek", queue="pq")
    assert engine_state(conn) == before
    assert {m["id"] for m in peeked} == {low, high, hidden}
    assert [m["body"] for m in peeked if m["id"] != high] == [{"n": 1}, {"n": 3}]
    assert next(m for m in peeked if m["id"] == high)["deliveries"] == 1
    assert [m["id"] for m in call(conn, "cb_peek", queue="pq", quantity=1)] == [peeked[0]["id"]]


def test_peek_shows_the_source_of_dead_letters(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_queue", name="dlq")
    fn(conn, "cb_create_queue", name="work", max_deliveries=1, dead_letter_queue="dlq")
    clock = Clock(conn)
    fn(conn, "cb_send", queue="work", body=J("x"))
    call(conn, "cb_read", queue="work", quantity=1, hide_for=1000)
    clock.advance(seconds=2)  # the lease lapses
    assert call(conn, "cb_read", queue="work", quantity=1, hide_for=HIDE) == []
    (dead,) = call(conn, "cb_peek", queue="dlq")
    assert (dead["source_queue"], dead["source_deliveries"], dead["body"]) == ("work", 1, "x")


def test_peek_rejects_bad_input_and_unknown_queues(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_queue", name="pq")
    with rejected(conn, errors.InvalidParameterValue) as info:
        call(conn, "cb_peek", queue="pq", quantity=0)
    assert "1 to 1000" in str(info.value)
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, "cb_peek", queue="pq", quantity=1001)
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, "cb_peek", queue="Bad Name")
    with rejected(conn, errors.UndefinedObject):
        call(conn, "cb_peek", queue="nope")


def test_peek_is_stable_and_takes_no_lock(conn: psycopg.Connection, dsn: str) -> None:
    fn(conn, "cb_create_queue", name="pq")
    volatility = conn.execute(
        "SELECT provolatile FROM pg_proc WHERE proname = 'cb_peek'"
        " AND pronamespace = 'catbird'::regnamespace"
    ).fetchone()
    assert volatility == ("s",)
    # Deleting the queue takes the definition's exclusive lock; a peek in an
    # open transaction does not hold the shared one, so the delete goes through.
    with psycopg.connect(dsn) as reader:
        call(reader, "cb_peek", queue="pq")
        conn.execute("SET lock_timeout = '5s'")
        assert fn(conn, "cb_delete_queue", name="pq") is True
        reader.rollback()


def test_run_counts_by_status_since_a_time(conn: psycopg.Connection) -> None:
    clock = Clock(conn)
    fn(conn, "cb_create_task", name="ta")
    fn(conn, "cb_create_flow", name="fa", steps=J([{"name": "s"}]))
    fn(conn, "cb_run_task", name="ta", input=J(0))  # before the window
    clock.advance(seconds=3600)
    since = clock.now
    for i in range(3):
        fn(conn, "cb_run_task", name="ta", input=J(i))
    # the run before the window and the window's first one fail
    for claim in call(conn, "cb_claim_tasks", name="ta", quantity=2, hide_for=HIDE):
        fn(conn, "cb_fail_task", name="ta", run_id=claim["id"], error_message="boom")
    fn(conn, "cb_run_flow", name="fa", input=J({}))
    rows = call(conn, "cb_list_run_counts", since=since)
    assert rows == [
        {"kind": "flow", "name": "fa", "status": "started", "runs": 1},
        {"kind": "task", "name": "ta", "status": "failed", "runs": 1},
        {"kind": "task", "name": "ta", "status": "queued", "runs": 2},
    ]
    assert call(conn, "cb_list_run_counts", since=since + dt.timedelta(hours=1)) == []
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, "cb_list_run_counts", since=None)
    with rejected(conn, errors.InvalidParameterValue):
        conn.execute("SELECT * FROM catbird.cb_list_run_counts('infinity')")


def test_task_runs_by_status(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_task", name="ta")
    ids = [fn(conn, "cb_run_task", name="ta", input=J(i)) for i in range(4)]
    claims = call(conn, "cb_claim_tasks", name="ta", quantity=2, hide_for=HIDE)
    for c in claims:
        fn(conn, "cb_fail_task", name="ta", run_id=c["id"], error_message="boom")
    failed = sorted(c["id"] for c in claims)

    def listed(**options: object) -> list[int]:
        return [r["id"] for r in call(conn, "cb_list_task_runs_by_status", name="ta", **options)]

    assert listed(status="failed") == failed[::-1]
    assert listed(status="queued") == sorted(set(ids) - set(failed), reverse=True)
    assert listed() == ids[::-1]
    assert listed(status="failed", lim=1) == [failed[1]]
    assert listed(status="failed", before_id=failed[1]) == [failed[0]]
    assert listed(status="completed") == []
    with rejected(conn, errors.InvalidParameterValue) as info:
        listed(status="done")
    assert "queued, started, completed" in str(info.value)
    with rejected(conn, errors.InvalidParameterValue):
        listed(lim=0)
    with rejected(conn, errors.UndefinedObject):
        call(conn, "cb_list_task_runs_by_status", name="nope")


def test_flow_runs_by_status(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_flow", name="fa", steps=J([{"name": "s"}]))
    first = fn(conn, "cb_run_flow", name="fa", input=J({}))
    second = fn(conn, "cb_run_flow", name="fa", input=J({}))
    fn(conn, "cb_cancel_flow", name="fa", run_id=first)

    def listed(**options: object) -> list[int]:
        return [r["id"] for r in call(conn, "cb_list_flow_runs_by_status", name="fa", **options)]

    assert listed(status="started") == [second]
    assert listed(status="canceled") == [first]
    assert listed() == [second, first]
    with rejected(conn, errors.InvalidParameterValue) as info:
        listed(status="queued")
    assert "canceling" in str(info.value)
    with rejected(conn, errors.UndefinedObject):
        call(conn, "cb_list_flow_runs_by_status", name="nope")

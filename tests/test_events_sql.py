"""NOTIFY events at the SQL level: the engine's topics and payloads, and cb_notify.

Every event goes out on the one channel "catbird" as the envelope
{"topic", "data", "node_id"}; for the engine's catbird.* topics, data is a JSON
text naming the resource ({"task", "run_id"}, or "run_ids" when one call
changed many runs). Each test does the action on one connection while a second,
real connection LISTENs, and compares the exact topics and payloads received.
Events go out on commit only.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import HIDE, T0, Clock, J, call, claim_steps, complete_step, fn, scalar, step

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection]:
    """A second connection listening on the "catbird" channel."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("LISTEN catbird")
        yield c


def envelopes(listener: psycopg.Connection, expected: int = 0) -> list[dict[str, Any]]:
    """The envelopes received: waits (up to 2 s) for ``expected`` of them, then
    100 ms more so that an unexpected extra one is caught too."""
    got = []
    if expected:
        for n in listener.notifies(timeout=2.0, stop_after=expected):
            assert n.channel == "catbird"
            got.append(json.loads(n.payload))
    got += [json.loads(n.payload) for n in listener.notifies(timeout=0.1)]
    return got


def events(listener: psycopg.Connection, expected: int = 0) -> list[tuple[str, Any]]:
    """The engine events received, as (topic, data decoded from JSON)."""
    got = envelopes(listener, expected)
    assert all(e["node_id"] is None for e in got)
    return [(e["topic"], json.loads(e["data"])) for e in got]


def drain(listener: psycopg.Connection) -> None:
    list(listener.notifies(timeout=0.2))


# =========================================================================== definitions


def test_definition_events(conn, listener):
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_create_task", name="work")  # identical: nothing happened
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    fn(conn, "cb_create_queue", name="inbox")
    fn(conn, "cb_create_queue", name="inbox")  # exists: nothing happened
    assert fn(conn, "cb_delete_task", name="work") is True
    assert fn(conn, "cb_delete_task", name="work") is False
    assert fn(conn, "cb_delete_flow", name="pipe") is True
    assert fn(conn, "cb_delete_queue", name="inbox") is True
    assert fn(conn, "cb_delete_queue", name="inbox") is False
    assert events(listener, 6) == [
        ("catbird.task.created", {"task": "work"}),
        ("catbird.flow.created", {"flow": "pipe"}),
        ("catbird.queue.created", {"queue": "inbox"}),
        ("catbird.task.deleted", {"task": "work"}),
        ("catbird.flow.deleted", {"flow": "pipe"}),
        ("catbird.queue.deleted", {"queue": "inbox"}),
    ]


def test_an_expired_queue_deleted_by_gc_is_announced(conn, listener):
    clock = Clock(conn, T0)
    fn(conn, "cb_create_queue", name="brief", expires_at=T0 + SECOND)
    drain(listener)
    clock.set(T0 + 2 * SECOND)
    fn(conn, "cb_gc")
    assert events(listener, 1) == [("catbird.queue.deleted", {"queue": "brief"})]


def test_worker_events(conn, listener):
    clock = Clock(conn, T0)
    worker, stale = uuid.uuid4(), uuid.uuid4()
    fn(conn, "cb_worker_started", id=worker, task_handlers=J([]), step_handlers=J([]))
    fn(conn, "cb_worker_heartbeat", id=worker)
    fn(conn, "cb_worker_stopped", id=worker)
    fn(conn, "cb_worker_stopped", id=worker)  # not registered: nothing
    fn(conn, "cb_worker_started", id=stale, task_handlers=J([]), step_handlers=J([]))
    clock.set(T0 + dt.timedelta(hours=1))
    assert fn(conn, "cb_gc")["stale_workers_deleted"] == 1
    assert events(listener, 4) == [
        ("catbird.worker.started", {"worker_id": str(worker)}),
        ("catbird.worker.stopped", {"worker_id": str(worker)}),
        ("catbird.worker.started", {"worker_id": str(stale)}),
        ("catbird.worker.stopped", {"worker_id": str(stale)}),
    ]


# =========================================================================== task runs


def test_task_run_lifecycle_events(conn, listener):
    fn(conn, "cb_create_task", name="work", condition="not input.skip")
    drain(listener)
    a = fn(conn, "cb_run_task", name="work", input=J({}))
    assert events(listener, 1) == [("catbird.task.started", {"task": "work", "run_id": a})]

    s = fn(conn, "cb_run_task", name="work", input=J({"skip": True}))
    assert events(listener, 1) == [("catbird.task.skipped", {"task": "work", "run_id": s})]

    k = fn(conn, "cb_run_task", name="work", input=J({}), concurrency_key="k")
    events(listener, 1)
    assert fn(conn, "cb_run_task", name="work", input=J({}), concurrency_key="k") == k
    assert events(listener) == []  # resolved to the existing run: nothing new

    b, c, d = fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(3)])
    assert events(listener, 1) == [("catbird.task.started", {"task": "work", "run_ids": [b, c, d]})]

    call(conn, "cb_claim_tasks", name="work", quantity=10, hide_for=HIDE)
    assert events(listener) == []  # claiming is not an event

    assert fn(conn, "cb_complete_task", name="work", run_id=a, output=J("ok")) is True
    assert fn(conn, "cb_complete_task", name="work", run_id=a, output=J("again")) is False
    assert (
        fn(conn, "cb_fail_task", name="work", run_id=b, error_message="x", max_retries=1)
        == "queued"
    )
    assert fn(conn, "cb_fail_task", name="work", run_id=c, error_message="x") == "failed"
    assert fn(conn, "cb_cancel_task", name="work", run_id=d) is True
    assert fn(conn, "cb_cancel_task", name="work", run_id=d) is True  # already canceled
    assert fn(conn, "cb_retry_task_run", name="work", run_id=c) is True
    assert events(listener, 4) == [
        ("catbird.task.completed", {"task": "work", "run_id": a}),
        ("catbird.task.failed", {"task": "work", "run_id": c}),
        ("catbird.task.canceled", {"task": "work", "run_id": d}),
        ("catbird.task.queued", {"task": "work"}),
    ]


def test_a_mixed_batch_announces_started_and_skipped_runs_in_one_event_each(conn, listener):
    fn(conn, "cb_create_task", name="work", condition="not input.skip")
    drain(listener)
    inputs = [J({"skip": i % 2 == 1}) for i in range(5)]
    ids = fn(conn, "cb_run_task", name="work", inputs=inputs)
    assert events(listener, 2) == [
        ("catbird.task.started", {"task": "work", "run_ids": [ids[0], ids[2], ids[4]]}),
        ("catbird.task.skipped", {"task": "work", "run_ids": [ids[1], ids[3]]}),
    ]
    keyed = fn(conn, "cb_run_task", name="work", inputs=inputs[:2], concurrency_keys=["x", "y"])
    assert events(listener, 2) == [
        ("catbird.task.started", {"task": "work", "run_id": keyed[0]}),
        ("catbird.task.skipped", {"task": "work", "run_id": keyed[1]}),
    ]


def test_batch_completion_is_one_event_with_run_ids(conn, listener):
    fn(conn, "cb_create_task", name="work")
    ids = fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(3)])
    call(conn, "cb_claim_tasks", name="work", quantity=2, hide_for=HIDE)
    drain(listener)
    done = fn(conn, "cb_complete_tasks", name="work", run_ids=ids, outputs=[J(1), J(2), J(3)])
    assert done == ids[:2]
    assert events(listener, 1) == [("catbird.task.completed", {"task": "work", "run_ids": ids[:2]})]


def test_a_large_batch_is_announced_in_events_of_at_most_300_ids(conn, listener):
    fn(conn, "cb_create_task", name="work")
    drain(listener)
    ids = fn(conn, "cb_run_task", name="work", inputs=[J(i) for i in range(700)])
    started = events(listener, 3)
    call(conn, "cb_claim_tasks", name="work", quantity=700, hide_for=HIDE)
    assert fn(conn, "cb_complete_tasks", name="work", run_ids=ids, outputs=[J(0)] * 700) == ids
    completed = events(listener, 3)
    for announced, topic in (
        (started, "catbird.task.started"),
        (completed, "catbird.task.completed"),
    ):
        assert {t for t, _ in announced} == {topic}
        chunks = [data["run_ids"] for _, data in announced]
        assert [len(c) for c in chunks] == [300, 300, 100]
        assert [i for c in chunks for i in c] == ids


def test_publish_to_a_bound_task_announces_the_started_runs(conn, listener):
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_bind_task", name="work", pattern="orders.#")
    drain(listener)
    assert fn(conn, "cb_publish", topic="orders.new", bodies=[J({"n": 1}), J({"n": 2})]) == 2
    [(topic, data)] = events(listener, 1)
    assert topic == "catbird.task.started" and data["task"] == "work" and len(data["run_ids"]) == 2


def test_expired_task_runs_are_announced(conn, listener):
    clock = Clock(conn, T0)
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_create_task", name="idle")
    soon = {"expires_at": T0 + SECOND}
    keyed = fn(conn, "cb_run_task", name="work", input=J(1), concurrency_key="k", **soon)
    claimed = fn(conn, "cb_run_task", name="work", inputs=[J(2), J(3)], **soon)
    collected = fn(conn, "cb_run_task", name="idle", inputs=[J(4), J(5)], **soon)
    drain(listener)
    clock.set(T0 + 2 * SECOND)
    # a new run of the key expires its holder first
    fresh = fn(conn, "cb_run_task", name="work", input=J(6), concurrency_key="k")
    assert events(listener, 2) == [
        ("catbird.task.expired", {"task": "work", "run_id": keyed}),
        ("catbird.task.started", {"task": "work", "run_id": fresh}),
    ]
    # a claim meeting expired runs retires them
    claims = call(conn, "cb_claim_tasks", name="work", quantity=10, hide_for=HIDE)
    assert [r["id"] for r in claims] == [fresh]
    assert events(listener, 1) == [("catbird.task.expired", {"task": "work", "run_ids": claimed})]
    # and cb_gc the ones nobody claims
    assert fn(conn, "cb_gc")["expired_task_runs"] == 2
    assert events(listener, 1) == [("catbird.task.expired", {"task": "idle", "run_ids": collected})]


def test_lapsed_leases_out_of_attempts_fail_with_an_event(conn, listener):
    clock = Clock(conn, T0)
    fn(conn, "cb_create_task", name="work", max_retries=0)
    a, b = fn(conn, "cb_run_task", name="work", inputs=[J(1), J(2)])
    call(conn, "cb_claim_tasks", name="work", quantity=2, hide_for=1000)
    drain(listener)
    clock.set(T0 + 5 * SECOND)
    fn(conn, "cb_gc")  # both leases lapsed with their one attempt used
    assert events(listener, 1) == [("catbird.task.failed", {"task": "work", "run_ids": [a, b]})]


def test_a_claim_failing_an_exhausted_lapsed_run_announces_it(conn, listener):
    clock = Clock(conn, T0)
    fn(conn, "cb_create_task", name="work", max_retries=0)
    a = fn(conn, "cb_run_task", name="work", input=J(1))
    call(conn, "cb_claim_tasks", name="work", quantity=1, hide_for=1000)
    drain(listener)
    clock.set(T0 + 5 * SECOND)
    assert call(conn, "cb_claim_tasks", name="work", quantity=1, hide_for=HIDE) == []
    assert events(listener, 1) == [("catbird.task.failed", {"task": "work", "run_id": a})]


# =========================================================================== flow runs


def test_flow_run_lifecycle_events(conn, listener):
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a"), step("b", "a")]))
    drain(listener)
    run = fn(conn, "cb_run_flow", name="pipe", input=J({}))
    assert events(listener, 2) == [
        ("catbird.flow.started", {"flow": "pipe", "run_id": run}),
        ("catbird.step.queued", {"flow": "pipe", "step": "a"}),
    ]
    [a] = claim_steps(conn, "pipe", "a")
    assert complete_step(conn, "pipe", "a", a, 1) is True
    assert events(listener, 1) == [("catbird.step.queued", {"flow": "pipe", "step": "b"})]
    [b] = claim_steps(conn, "pipe", "b")
    assert complete_step(conn, "pipe", "b", b, 2) is True
    assert events(listener, 1) == [("catbird.flow.completed", {"flow": "pipe", "run_id": run})]


def test_a_batch_of_flow_runs_is_one_started_event(conn, listener):
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    drain(listener)
    ids = fn(conn, "cb_run_flow", name="pipe", inputs=[J(1), J(2), J(3)])
    got = events(listener, 2)
    assert got[0] == ("catbird.flow.started", {"flow": "pipe", "run_ids": ids})
    assert set(map(json.dumps, [d for _, d in got[1:]])) == {
        json.dumps({"flow": "pipe", "step": "a"})
    }


def test_flow_failure_canceling_and_early_completion_events(conn, listener):
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a"), step("b")]))
    failing, canceled, early = fn(conn, "cb_run_flow", name="pipe", inputs=[J(1), J(2), J(3)])
    drain(listener)
    claims = {c["flow_run_id"]: c for c in claim_steps(conn, "pipe", "a")}
    assert (
        fn(
            conn,
            "cb_fail_step",
            flow_name="pipe",
            step_name="a",
            id=claims[failing]["id"],
            error_message="boom",
        )
        == "failed"
    )
    assert fn(conn, "cb_cancel_flow", name="pipe", run_id=canceled) is True  # a is started
    assert (
        fn(
            conn,
            "cb_complete_flow_early",
            flow_name="pipe",
            run_id=early,
            step_name="a",
            output=J("done"),
        )
        is True
    )
    assert events(listener, 3) == [
        ("catbird.flow.failed", {"flow": "pipe", "run_id": failing}),
        ("catbird.flow.canceling", {"flow": "pipe", "run_id": canceled}),
        ("catbird.flow.completed", {"flow": "pipe", "run_id": early}),
    ]


def test_canceling_ends_in_canceled_when_the_started_work_reports(conn, listener):
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    run = fn(conn, "cb_run_flow", name="pipe", input=J(1))
    [a] = claim_steps(conn, "pipe", "a")
    drain(listener)
    assert fn(conn, "cb_cancel_flow", name="pipe", run_id=run) is True
    assert events(listener, 1) == [("catbird.flow.canceling", {"flow": "pipe", "run_id": run})]
    complete_step(conn, "pipe", "a", a, 1)  # refused, and the run's last started work
    assert events(listener, 1) == [("catbird.flow.canceled", {"flow": "pipe", "run_id": run})]
    queued = fn(conn, "cb_run_flow", name="pipe", input=J(2))
    drain(listener)
    assert fn(conn, "cb_cancel_flow", name="pipe", run_id=queued) is True  # nothing started
    assert events(listener, 2) == [
        ("catbird.flow.canceling", {"flow": "pipe", "run_id": queued}),
        ("catbird.flow.canceled", {"flow": "pipe", "run_id": queued}),
    ]


def test_a_retried_flow_run_is_announced(conn, listener):
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    run = fn(conn, "cb_run_flow", name="pipe", input=J(1))
    [a] = claim_steps(conn, "pipe", "a")
    fn(conn, "cb_fail_step", flow_name="pipe", step_name="a", id=a["id"], error_message="boom")
    drain(listener)
    assert fn(conn, "cb_retry_flow_run", name="pipe", run_id=run) is True
    assert events(listener, 2) == [
        ("catbird.step.queued", {"flow": "pipe", "step": "a"}),
        ("catbird.flow.retried", {"flow": "pipe", "run_id": run}),
    ]


def test_an_expired_flow_run_is_announced(conn, listener):
    clock = Clock(conn, T0)
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    run = fn(conn, "cb_run_flow", name="pipe", input=J(1), expires_at=T0 + SECOND)
    drain(listener)
    clock.set(T0 + 2 * SECOND)
    assert fn(conn, "cb_gc")["expired_flow_runs"] == 1
    assert events(listener, 1) == [("catbird.flow.expired", {"flow": "pipe", "run_id": run})]


# =========================================================================== transactions


def test_events_are_sent_on_commit_only(conn, listener):
    fn(conn, "cb_create_task", name="work")
    drain(listener)
    with conn.transaction(force_rollback=True):
        fn(conn, "cb_run_task", name="work", input=J({}))
        fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
        fn(conn, "cb_notify", topic="app.hello", data="x")
    assert envelopes(listener) == []

    conn.execute("BEGIN")
    run = fn(conn, "cb_run_task", name="work", input=J({}))
    fn(conn, "cb_notify", topic="app.hello", data="x")
    assert envelopes(listener) == []  # not yet
    conn.execute("COMMIT")
    assert envelopes(listener, 2) == [
        {
            "topic": "catbird.task.started",
            "data": json.dumps({"task": "work", "run_id": run}),
            "node_id": None,
        },
        {"topic": "app.hello", "data": "x", "node_id": None},
    ]


# =========================================================================== cb_notify


def test_notify_sends_topic_data_and_node_id(conn, listener):
    node = uuid.uuid4()
    fn(conn, "cb_notify", topic="app.cache.flush", data="users", node_id=node)
    fn(conn, "cb_notify", topic="app-ping")
    fn(conn, "cb_notify", topic="catbirds.are.fine")  # not the catbird namespace
    assert envelopes(listener, 3) == [
        {"topic": "app.cache.flush", "data": "users", "node_id": str(node)},
        {"topic": "app-ping", "data": None, "node_id": None},
        {"topic": "catbirds.are.fine", "data": None, "node_id": None},
    ]


@pytest.mark.parametrize("topic", ["", None, "a..b", "a.*", "a.#", ".a", "a b", "a/b", "x" * 256])
def test_notify_rejects_an_invalid_topic(conn, listener, topic):
    with pytest.raises(errors.InvalidParameterValue, match="invalid topic"):
        fn(conn, "cb_notify", topic=topic, data="x")
    assert envelopes(listener) == []


@pytest.mark.parametrize(
    "topic", ["catbird", "catbird.task.completed", "catbird.mine", "Catbird.x"]
)
def test_notify_refuses_the_engines_namespace(conn, listener, topic):
    with pytest.raises(errors.InvalidParameterValue, match="reserved for the engine") as info:
        fn(conn, "cb_notify", topic=topic, data=json.dumps({"task": "t", "run_id": 1}))
    assert "myapp." in (info.value.diag.message_hint or "")
    assert envelopes(listener) == []


def test_postgres_refuses_payloads_of_8000_bytes(conn):
    """The limit cb_notify measures against is PostgreSQL's own."""
    conn.execute("SELECT pg_notify('catbird', %s)", ("x" * 7999,))
    with pytest.raises(errors.InvalidParameterValue, match="payload string too long"):
        conn.execute("SELECT pg_notify('catbird', %s)", ("x" * 8000,))


@pytest.mark.parametrize(
    ("char", "node_id"), [("x", None), ("é", None), ('"', None), ("x", uuid.uuid4())]
)
def test_notify_accepts_exactly_what_fits_in_a_notification(conn, listener, char, node_id):
    envelope = scalar(
        conn, "SELECT octet_length(catbird._cb_event_payload('big', '', %s))", (node_id,)
    )
    per_char = len(json.dumps(char, ensure_ascii=False).encode()) - 2  # bytes once JSON-escaped
    fits = (7999 - envelope) // per_char
    assert envelope + fits * per_char == 7999 or per_char > 1
    fn(conn, "cb_notify", topic="big", data=char * fits, node_id=node_id)
    [got] = envelopes(listener, 1)
    assert got["data"] == char * fits
    with pytest.raises(errors.InvalidParameterValue, match="at most 7999") as info:
        fn(conn, "cb_notify", topic="big", data=char * (fits + 1), node_id=node_id)
    assert "Store large payloads in a table" in (info.value.diag.message_hint or "")
    assert envelopes(listener) == []


# =========================================================================== switch


def test_events_off_silences_the_engine_but_not_cb_notify(conn, dsn, listener):
    """``SET catbird.events = off`` lifts NOTIFY's commit serialization for bulk
    producers: the engine announces nothing while it is off; an application's
    explicit cb_notify still goes out."""
    fn(conn, "cb_create_task", name="work")
    events(listener, 1)
    with psycopg.connect(dsn, autocommit=True) as bulk:
        bulk.execute("SET catbird.events = off")
        bulk.execute("SELECT catbird.cb_run_task('work', '{}'::jsonb)")
        bulk.execute("SELECT catbird.cb_create_queue('quiet')")
        bulk.execute("SELECT catbird.cb_notify('myapp.hello', 'still sent')")
        assert [(e["topic"], e["data"]) for e in envelopes(listener, 1)] == [
            ("myapp.hello", "still sent")
        ]
        with bulk.transaction():
            bulk.execute("SET LOCAL catbird.events = on")
            run_id = scalar(bulk, "SELECT catbird.cb_run_task('work', '{}'::jsonb)")
        assert events(listener, 1) == [("catbird.task.started", {"task": "work", "run_id": run_id})]
    fn(conn, "cb_run_task", name="work", input=J({}))  # another session: unaffected
    assert [topic for topic, _ in events(listener, 1)] == ["catbird.task.started"]

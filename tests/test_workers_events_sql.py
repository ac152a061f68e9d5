"""The worker registry and NOTIFY events at the SQL level.

Workers register the handlers they run (cb_worker_started), send heartbeats
(cb_worker_heartbeat, which tells a worker removed meanwhile to register
again) and unregister (cb_worker_stopped); cb_list_workers shows them.

Every event goes out on the one channel "catbird" as a JSON payload
{"topic", "data", "node_id"}, on commit only, and PostgreSQL folds identical
payloads within one transaction, so a batch of runs wakes workers once. A
second connection LISTENs and the tests compare the payloads it receives.
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

from sqlhelpers import T0, Clock, J, call, fn, rejected

SECOND = dt.timedelta(seconds=1)


# =========================================================================== workers


def workers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return call(conn, "cb_list_workers")


def test_worker_started_registers_the_worker_and_its_handlers(conn):
    Clock(conn)
    worker = uuid.uuid4()
    fn(
        conn,
        "cb_worker_started",
        id=worker,
        task_handlers=J(["send_email", "resize"]),
        step_handlers=J([]),
    )
    assert workers(conn) == [
        {
            "id": worker,
            "task_handlers": ["send_email", "resize"],
            "step_handlers": [],
            "started_at": T0,
            "last_heartbeat_at": T0,
        }
    ]


def test_worker_started_again_updates_the_handlers_and_keeps_started_at(conn):
    clock = Clock(conn)
    worker = uuid.uuid4()
    fn(conn, "cb_worker_started", id=worker, task_handlers=J(["a"]), step_handlers=J([]))
    clock.advance(seconds=30)
    fn(
        conn,
        "cb_worker_started",
        id=worker,
        task_handlers=J(["a", "b"]),
        step_handlers=J([{"flow": "f"}]),
    )
    (row,) = workers(conn)
    assert (row["task_handlers"], row["step_handlers"]) == (["a", "b"], [{"flow": "f"}])
    assert (row["started_at"], row["last_heartbeat_at"]) == (T0, T0 + 30 * SECOND)


def test_worker_started_accepts_null_handlers_as_none(conn):
    worker = uuid.uuid4()
    fn(conn, "cb_worker_started", id=worker, task_handlers=None, step_handlers=None)
    (row,) = workers(conn)
    assert (row["task_handlers"], row["step_handlers"]) == ([], [])


@pytest.mark.parametrize(
    "args",
    [
        {"id": None, "task_handlers": J([]), "step_handlers": J([])},
        {"id": uuid.uuid4(), "task_handlers": J({"a": 1}), "step_handlers": J([])},
        {"id": uuid.uuid4(), "task_handlers": J([]), "step_handlers": J("step")},
    ],
    ids=["null-id", "task-handlers-object", "step-handlers-string"],
)
def test_worker_started_rejects_bad_arguments_and_writes_nothing(conn, args):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_worker_started", **args)


def test_heartbeat_records_the_time_and_tells_whether_the_worker_is_registered(conn):
    clock = Clock(conn)
    worker = uuid.uuid4()
    fn(conn, "cb_worker_started", id=worker, task_handlers=J(["a"]), step_handlers=J([]))
    clock.advance(seconds=10)
    assert fn(conn, "cb_worker_heartbeat", id=worker) == {"registered": True}
    (row,) = workers(conn)
    assert (row["started_at"], row["last_heartbeat_at"]) == (T0, T0 + 10 * SECOND)

    stranger = uuid.uuid4()
    assert fn(conn, "cb_worker_heartbeat", id=stranger) == {"registered": False}
    assert [w["id"] for w in workers(conn)] == [worker]  # a heartbeat does not register


def test_worker_stopped_unregisters_once(conn):
    worker, other = uuid.uuid4(), uuid.uuid4()
    for w in (worker, other):
        fn(conn, "cb_worker_started", id=w, task_handlers=J([]), step_handlers=J([]))
    assert fn(conn, "cb_worker_stopped", id=worker) is True
    assert fn(conn, "cb_worker_stopped", id=worker) is False
    assert [w["id"] for w in workers(conn)] == [other]
    assert fn(conn, "cb_worker_heartbeat", id=worker) == {"registered": False}


def test_list_workers_is_ordered_by_start_time(conn):
    clock = Clock(conn)
    late, early = uuid.uuid4(), uuid.uuid4()
    clock.set(T0 + SECOND)
    fn(conn, "cb_worker_started", id=late, task_handlers=J([]), step_handlers=J([]))
    clock.set(T0)
    fn(conn, "cb_worker_started", id=early, task_handlers=J([]), step_handlers=J([]))
    assert [w["id"] for w in workers(conn)] == [early, late]


# =========================================================================== events


@pytest.fixture
def listener(dsn: str) -> Iterator[psycopg.Connection]:
    """A second connection listening on the "catbird" channel."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("LISTEN catbird")
        yield c


def events(listener: psycopg.Connection, expected: int = 0) -> list[dict[str, Any]]:
    """The payloads received: waits (up to 2 s) for ``expected`` of them, then 100 ms
    more so that an unexpected extra one is caught too."""
    got = []
    if expected:
        for n in listener.notifies(timeout=2.0, stop_after=expected):
            assert n.channel == "catbird"
            got.append(json.loads(n.payload))
    got += [json.loads(n.payload) for n in listener.notifies(timeout=0.1)]
    return got


def event(topic: str, data: str | None, node_id: str | None = None) -> dict[str, Any]:
    return {"topic": topic, "data": data, "node_id": node_id}


def test_task_definition_events(conn, listener):
    fn(conn, "cb_create_task", name="work")
    assert events(listener, 1) == [event("catbird.task.created", "work")]
    fn(conn, "cb_create_task", name="work")  # identical: nothing happened
    assert events(listener) == []
    assert fn(conn, "cb_delete_task", name="work") is True
    assert events(listener, 1) == [event("catbird.task.deleted", "work")]
    assert fn(conn, "cb_delete_task", name="work") is False
    assert events(listener) == []


def test_queued_is_announced_once_per_transaction(conn, listener):
    fn(conn, "cb_create_task", name="work", condition="not input.skip")
    fn(conn, "cb_create_task", name="other")
    events(listener, 2)
    queued = event("catbird.task.queued", "work")

    fn(conn, "cb_run_task", name="work", input=J({}))
    assert events(listener, 1) == [queued]

    fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(3)])
    assert events(listener, 1) == [queued]

    with conn.transaction():
        fn(conn, "cb_run_task", name="work", input=J({"a": 1}))
        fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(3)])
        fn(conn, "cb_run_task", name="other", input=J({}))
        fn(conn, "cb_run_task", name="work", input=J({"b": 2}))
    assert events(listener, 2) == [queued, event("catbird.task.queued", "other")]


def test_a_run_that_is_not_queued_announces_nothing(conn, listener):
    fn(conn, "cb_create_task", name="work", condition="not input.skip")
    fn(conn, "cb_run_task", name="work", input=J({}), concurrency_key="k")
    events(listener, 2)
    fn(conn, "cb_run_task", name="work", input=J({"skip": True}))  # skipped by its condition
    fn(conn, "cb_run_task", name="work", input=J({}), concurrency_key="k")  # deduplicated
    assert events(listener) == []


def test_events_are_sent_on_commit_only(conn, listener):
    fn(conn, "cb_create_task", name="work")
    events(listener, 1)
    with conn.transaction(force_rollback=True):
        fn(conn, "cb_run_task", name="work", input=J({}))
    assert events(listener) == []

    conn.execute("BEGIN")
    fn(conn, "cb_run_task", name="work", input=J({}))
    assert events(listener) == []  # not yet
    conn.execute("COMMIT")
    assert events(listener, 1) == [event("catbird.task.queued", "work")]


def test_run_outcome_events_carry_the_run_id(conn, listener):
    fn(conn, "cb_create_task", name="work")
    a, b, c, d, e = fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(5)])
    call(conn, "cb_claim_tasks", name="work", quantity=4, hide_for=60_000)
    events(listener, 2)

    assert fn(conn, "cb_complete_task", name="work", run_id=a, output=J("ok")) is True
    assert events(listener, 1) == [event("catbird.task.completed", str(a))]

    assert (
        fn(conn, "cb_fail_task", name="work", run_id=b, error_message="x", max_retries=1)
        == "queued"
    )
    assert events(listener) == []  # a retry is not an outcome

    assert fn(conn, "cb_fail_task", name="work", run_id=c, error_message="x") == "failed"
    assert events(listener, 1) == [event("catbird.task.failed", str(c))]

    assert fn(conn, "cb_cancel_task", name="work", run_id=d) is True
    assert events(listener, 1) == [event("catbird.task.canceled", str(d))]
    assert fn(conn, "cb_cancel_task", name="work", run_id=d) is True  # already canceled
    assert events(listener) == []

    assert fn(conn, "cb_cancel_task", name="work", run_id=e) is True  # queued
    assert events(listener, 1) == [event("catbird.task.canceled", str(e))]

    assert fn(conn, "cb_complete_task", name="work", run_id=a, output=J("again")) is False
    assert events(listener) == []


def test_batch_completion_announces_the_completed_runs_in_one_event(conn, listener):
    fn(conn, "cb_create_task", name="work")
    ids = fn(conn, "cb_run_task", name="work", inputs=[J({"i": i}) for i in range(3)])
    call(conn, "cb_claim_tasks", name="work", quantity=2, hide_for=60_000)
    events(listener, 2)
    done = fn(conn, "cb_complete_tasks", name="work", run_ids=ids, outputs=[J(1), J(2), J(3)])
    assert done == ids[:2]
    assert events(listener, 1) == [event("catbird.task.completed", f"{ids[0]},{ids[1]}")]


def test_a_large_batch_completion_is_announced_in_events_of_at_most_500_ids(conn, listener):
    fn(conn, "cb_create_task", name="work")
    ids = fn(conn, "cb_run_task", name="work", inputs=[J(i) for i in range(1200)])
    call(conn, "cb_claim_tasks", name="work", quantity=1200, hide_for=60_000)
    done = fn(conn, "cb_complete_tasks", name="work", run_ids=ids, outputs=[J(0)] * 1200)
    assert done == ids
    announced = [e for e in events(listener, 4) if e["topic"] == "catbird.task.completed"]
    chunks = [[int(i) for i in e["data"].split(",")] for e in announced]
    assert [len(c) for c in chunks] == [500, 500, 200]
    assert [i for c in chunks for i in c] == ids


def test_publish_to_a_bound_task_announces_queued(conn, listener):
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_bind_task", name="work", pattern="orders.#")
    events(listener, 1)
    assert fn(conn, "cb_publish", topic="orders.new", bodies=[J({"n": 1}), J({"n": 2})]) == 2
    assert events(listener, 1) == [event("catbird.task.queued", "work")]


def test_worker_events(conn, listener):
    worker = uuid.uuid4()
    fn(conn, "cb_worker_started", id=worker, task_handlers=J([]), step_handlers=J([]))
    assert events(listener, 1) == [event("catbird.worker.started", str(worker))]
    fn(conn, "cb_worker_heartbeat", id=worker)
    assert events(listener) == []
    fn(conn, "cb_worker_stopped", id=worker)
    assert events(listener, 1) == [event("catbird.worker.stopped", str(worker))]
    fn(conn, "cb_worker_stopped", id=worker)
    assert events(listener) == []


# =========================================================================== cb_notify


def test_notify_sends_topic_data_and_node_id(conn, listener):
    node = uuid.uuid4()
    fn(conn, "cb_notify", topic="app.cache.flush", data="users", node_id=node)
    fn(conn, "cb_notify", topic="app-ping")
    assert events(listener, 2) == [
        event("app.cache.flush", "users", str(node)),
        event("app-ping", None),
    ]


@pytest.mark.parametrize("topic", ["", None, "a..b", "a.*", "a.#", ".a", "a b", "a/b"])
def test_notify_rejects_an_invalid_topic(conn, listener, topic):
    with pytest.raises(errors.InvalidParameterValue):
        fn(conn, "cb_notify", topic=topic, data="x")
    assert events(listener) == []


def test_notify_limits_data_to_7000_bytes(conn, listener):
    fn(conn, "cb_notify", topic="big", data="x" * 7000)
    fn(conn, "cb_notify", topic="big", data="é" * 3500)  # 7000 bytes in UTF-8
    assert [len(e["data"]) for e in events(listener, 2)] == [7000, 3500]
    for data in ("x" * 7001, "é" * 3501):
        with pytest.raises(errors.InvalidParameterValue):
            fn(conn, "cb_notify", topic="big", data=data)
    assert events(listener) == []

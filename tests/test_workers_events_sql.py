"""The worker registry at the SQL level (its events: tests/test_events_sql.py).

Workers register the handlers they run (cb_worker_started), send heartbeats
(cb_worker_heartbeat, which tells a worker removed meanwhile to register
again) and unregister (cb_worker_stopped); cb_list_workers shows them.
"""

from __future__ import annotations

import datetime as dt
import uuid
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

"""cb_gc: what garbage collection removes, marks and keeps, in bounded batches.

Every case pins the engine clock, so expiry, retention and staleness are
decided by catbird.cb_now() and the tests never sleep.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, fn, rejected, scalar

SECOND = dt.timedelta(seconds=1)
ZERO = {
    "expired_queues_deleted": 0,
    "expired_messages_deleted": 0,
    "expired_task_runs": 0,
    "expired_flow_runs": 0,
    "canceling_flow_runs_finalized": 0,
    "lease_expired_task_runs": 0,
    "lease_expired_flow_runs": 0,
    "stale_workers_deleted": 0,
    "stale_wire_nodes_deleted": 0,
    "notifications_deleted": 0,
    "task_runs_purged": 0,
    "flow_runs_purged": 0,
}


@pytest.fixture
def clock(conn) -> Clock:
    return Clock(conn)


def gc(conn, **args) -> dict[str, int]:
    return fn(conn, "cb_gc", **args)


def gc_counts(conn, **args) -> dict[str, int]:
    """The report of one cb_gc call, without the counters that are zero."""
    return {k: v for k, v in gc(conn, **args).items() if v}


def test_gc_on_an_empty_engine_reports_every_counter_as_zero(conn, clock):
    assert gc(conn) == ZERO


def test_gc_deletes_expired_queues_with_their_messages_and_bindings(conn, clock):
    fn(conn, "cb_create_queue", name="short", expires_at=T0 + 10 * SECOND)
    fn(conn, "cb_create_queue", name="long")
    fn(conn, "cb_bind", queue="short", pattern="a.#")
    fn(conn, "cb_send", queue="short", body=J({"n": 1}))
    assert gc_counts(conn) == {}
    clock.set(T0 + 10 * SECOND)
    assert gc_counts(conn) == {"expired_queues_deleted": 1}
    assert [q["name"] for q in call(conn, "cb_list_queues")] == ["long"]
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0
    assert call(conn, "cb_list_bindings") == []


def test_gc_deletes_expired_messages_in_batches_and_keeps_live_ones(conn, clock):
    fn(conn, "cb_create_queue", name="q")
    fn(conn, "cb_send", queue="q", bodies=[J(i) for i in range(5)], expires_at=T0 + SECOND)
    live = fn(conn, "cb_send", queue="q", body=J("live"))
    clock.set(T0 + SECOND)
    assert gc_counts(conn, batch_size=3) == {"expired_messages_deleted": 3}
    assert gc_counts(conn, batch_size=3) == {"expired_messages_deleted": 2}
    assert gc_counts(conn, batch_size=3) == {}
    assert scalar(conn, "SELECT array_agg(id) FROM catbird.cb_messages") == [live]


def test_gc_marks_queued_task_runs_past_their_expiry_as_expired(conn, clock):
    fn(conn, "cb_create_task", name="t")
    doomed = fn(conn, "cb_run_task", name="t", input=J(1), expires_at=T0 + SECOND)
    kept = fn(conn, "cb_run_task", name="t", input=J(2))
    clock.set(T0 + 2 * SECOND)
    assert gc_counts(conn) == {"expired_task_runs": 1}
    runs = {r["id"]: r for r in call(conn, "cb_list_task_runs", name="t")}
    assert runs[doomed]["status"] == "expired"
    assert runs[doomed]["expired_at"] == T0 + 2 * SECOND
    assert runs[kept]["status"] == "queued"


def test_gc_expires_a_flow_run_that_never_started_and_cancels_its_steps(conn, clock):
    fn(
        conn,
        "cb_create_flow",
        name="f",
        steps=J([{"name": "a"}, {"name": "b", "depends_on": ["a"]}]),
    )
    run_id = fn(conn, "cb_run_flow", name="f", input=J({}), expires_at=T0 + SECOND)
    clock.set(T0 + SECOND)
    # The claim leaves it alone: it is past its expiry and nothing has started.
    assert (
        call(conn, "cb_claim_steps", flow_name="f", step_name="a", quantity=1, hide_for=1000) == []
    )
    assert gc_counts(conn) == {"expired_flow_runs": 1}
    assert call(conn, "cb_get_flow_run", name="f", run_id=run_id)[0]["status"] == "expired"
    steps = {
        s["step_name"]: s["status"]
        for s in call(conn, "cb_get_flow_run_steps", flow_name="f", run_id=run_id)
    }
    assert steps == {"a": "canceled", "b": "canceled"}


def test_gc_leaves_a_flow_run_that_started_before_its_expiry(conn, clock):
    fn(conn, "cb_create_flow", name="f", steps=J([{"name": "a"}]))
    run_id = fn(conn, "cb_run_flow", name="f", input=J({}), expires_at=T0 + SECOND)
    call(conn, "cb_claim_steps", flow_name="f", step_name="a", quantity=1, hide_for=60_000)
    clock.set(T0 + 2 * SECOND)
    assert gc_counts(conn) == {}
    assert call(conn, "cb_get_flow_run", name="f", run_id=run_id)[0]["status"] == "started"


def test_gc_finalizes_a_canceling_flow_run_whose_worker_died(conn, clock):
    fn(conn, "cb_create_flow", name="f", steps=J([{"name": "a"}]))
    run_id = fn(conn, "cb_run_flow", name="f", input=J({}))
    (claim,) = call(conn, "cb_claim_steps", flow_name="f", step_name="a", quantity=1, hide_for=5000)
    assert fn(conn, "cb_cancel_flow", name="f", run_id=run_id) is True
    assert call(conn, "cb_get_flow_run", name="f", run_id=run_id)[0]["status"] == "canceling"
    # While the lease holds, the worker may still report back: nothing to do.
    assert gc_counts(conn) == {}
    clock.set(T0 + 5 * SECOND)
    assert gc_counts(conn) == {"canceling_flow_runs_finalized": 1}
    assert call(conn, "cb_get_flow_run", name="f", run_id=run_id)[0]["status"] == "canceled"
    assert (
        fn(conn, "cb_complete_step", flow_name="f", step_name="a", id=claim["id"], output=J(1))
        is False
    )


def test_gc_removes_workers_silent_for_longer_than_stale_worker_after(conn, clock):
    silent, alive = uuid.uuid4(), uuid.uuid4()
    fn(conn, "cb_worker_started", id=silent, task_handlers=J([]), step_handlers=J([]))
    fn(conn, "cb_worker_started", id=alive, task_handlers=J([]), step_handlers=J([]))
    clock.set(T0 + 4 * 60 * SECOND)
    fn(conn, "cb_worker_heartbeat", id=alive)
    clock.set(T0 + 5 * 60 * SECOND + SECOND)
    assert gc_counts(conn) == {"stale_workers_deleted": 1}
    assert [w["id"] for w in call(conn, "cb_list_workers")] == [alive]
    assert gc_counts(conn, stale_worker_after=dt.timedelta(seconds=30)) == {
        "stale_workers_deleted": 1
    }


def test_gc_purges_finished_runs_past_their_retention_period_only(conn, clock):
    fn(conn, "cb_create_task", name="kept_forever")
    fn(conn, "cb_create_task", name="short", retention_period=dt.timedelta(hours=1))
    for task in ("kept_forever", "short"):
        run_id = fn(conn, "cb_run_task", name=task, input=J(1))
        call(conn, "cb_claim_tasks", name=task, quantity=1, hide_for=1000)
        fn(conn, "cb_complete_task", name=task, run_id=run_id, output=J("done"))
    active = fn(conn, "cb_run_task", name="short", input=J(2))
    fn(
        conn,
        "cb_create_flow",
        name="flow",
        steps=J([{"name": "a"}]),
        retention_period=dt.timedelta(hours=1),
    )
    flow_run = fn(conn, "cb_run_flow", name="flow", input=J({}))
    (step,) = call(
        conn, "cb_claim_steps", flow_name="flow", step_name="a", quantity=1, hide_for=1000
    )
    fn(conn, "cb_complete_step", flow_name="flow", step_name="a", id=step["id"], output=J("ok"))

    clock.set(T0 + dt.timedelta(minutes=59))
    assert gc_counts(conn) == {}
    clock.set(T0 + dt.timedelta(hours=1))
    assert gc_counts(conn) == {"task_runs_purged": 1, "flow_runs_purged": 1}
    assert [r["status"] for r in call(conn, "cb_list_task_runs", name="kept_forever")] == [
        "completed"
    ]
    assert [r["id"] for r in call(conn, "cb_list_task_runs", name="short")] == [active]
    assert call(conn, "cb_get_flow_run", name="flow", run_id=flow_run) == []
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_step_runs") == 0


@pytest.mark.parametrize(
    "args",
    [{"batch_size": 0}, {"batch_size": None}, {"stale_worker_after": dt.timedelta(0)}],
)
def test_gc_rejects_bad_arguments(conn, clock, args):
    with rejected(conn, errors.InvalidParameterValue):
        gc(conn, **args)

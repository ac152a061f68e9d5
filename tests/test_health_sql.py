"""cb_health and cb_metrics: what the health report measures and how it grades it.

Engine ages (queued work, lapsed leases, heartbeats) follow the pinned
engine clock, so no test sleeps; the xmin check reads a transaction held
open on another real connection.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import HIDE, T0, Clock, J, call, fn, rejected, scalar, step

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def clock(conn) -> Clock:
    return Clock(conn)


def health(conn, **thresholds: Any) -> dict[str, Any]:
    return fn(conn, "cb_health", **thresholds)  # type: ignore[no-any-return]


def check(report: dict[str, Any], name: str, subject: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["check"] == name and c["subject"] == subject]
    assert len(found) == 1, f"{name} {subject}: {found}"
    return found[0]


def checks(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["check"] == name]


def test_an_idle_engine_is_healthy_and_reports_every_table(conn, clock):
    report = health(conn)
    assert report["healthy"] is True
    assert report["status"] == "ok"
    assert dt.datetime.fromisoformat(report["checked_at"]) == T0
    assert report["thresholds"] == {
        "dead_tuple_ratio": 0.2,
        "dead_tuple_min": 1000,
        "xmin_age": 300,
        "queued_age": 300,
        "lease_overdue": 60,
        "heartbeat_age": 60,
        "critical_factor": 3,
    }
    tables = {c["subject"] for c in checks(report, "dead_tuples")}
    assert {"cb_messages", "cb_task_runs", "cb_step_runs", "cb_map_tasks", "cb_workers"} <= tables
    assert all(c["status"] == "ok" for c in report["checks"])
    xmin = check(report, "xmin_horizon", "")
    assert xmin["value"] == 0
    assert xmin["message"] == "no other transaction holds back vacuum"
    # no queues, tasks, flows or workers: none of their checks
    assert checks(report, "oldest_queued") == checks(report, "worker_heartbeat") == []


def test_a_transaction_held_open_elsewhere_is_reported_with_its_age(conn, dsn):
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT txid_current()")  # BEGIN is implicit: the transaction stays open
        pid = holder.info.backend_pid
        report = health(conn, xmin_age="0")
        xmin = check(report, "xmin_horizon", f"pid {pid}")
        assert xmin["status"] == "critical"
        assert xmin["value"] > 0
        assert xmin["threshold"] == 0
        assert xmin["detail"]["xid_age"] >= 1
        assert xmin["detail"]["holders"] == 1
        assert f"pid {pid}" in xmin["message"]
        assert "idle in transaction" in xmin["message"]
        assert report["healthy"] is False and report["status"] == "critical"
        # the same transaction under the default threshold (5 minutes) is fine
        assert check(health(conn), "xmin_horizon", f"pid {pid}")["status"] == "ok"
    # once it ends, nothing holds the horizon
    assert check(health(conn, xmin_age="0"), "xmin_horizon", "")["status"] == "ok"


def test_a_prepared_transaction_holds_the_horizon(conn, dsn):
    if scalar(conn, "SHOW max_prepared_transactions") == "0":
        pytest.skip("the server does not allow prepared transactions")
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT txid_current()")
        holder.execute("PREPARE TRANSACTION 'health-test'")
    try:
        xmin = check(health(conn, xmin_age="0"), "xmin_horizon", "prepared health-test")
        assert xmin["status"] == "critical"
        assert "COMMIT PREPARED" in xmin["message"]
    finally:
        conn.execute("ROLLBACK PREPARED 'health-test'")


def test_a_started_run_past_its_lease_is_stuck_and_graded_by_how_long(conn, clock):
    fn(conn, "cb_create_task", name="slow")
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    run_id = fn(conn, "cb_run_task", name="slow", input=J({}))
    flow_run = fn(conn, "cb_run_flow", name="pipe", input=J({}))
    [claim] = call(conn, "cb_claim_tasks", name="slow", quantity=1, hide_for=1000)
    [step_claim] = call(
        conn, "cb_claim_steps", flow_name="pipe", step_name="a", quantity=1, hide_for=1000
    )
    assert claim["id"] == run_id and step_claim["flow_run_id"] == flow_run

    lease = check(health(conn), "lapsed_leases", "task:slow")
    assert (lease["status"], lease["value"], lease["detail"]["runs"]) == ("ok", 0, 0)

    clock.advance(seconds=31)  # lapsed 30 s ago: within lease_overdue (1 minute)
    lease = check(health(conn), "lapsed_leases", "task:slow")
    assert (lease["status"], lease["value"], lease["detail"]["runs"]) == ("ok", 30, 1)

    clock.advance(seconds=90)  # lapsed 2 minutes ago
    report = health(conn)
    lease = check(report, "lapsed_leases", "task:slow")
    assert (lease["status"], lease["value"], lease["threshold"]) == ("warning", 120, 60)
    assert lease["detail"]["examples"] == [f"run {run_id}"]
    assert f"run {run_id}" in lease["message"]
    flow = check(report, "lapsed_leases", "flow:pipe")
    assert (flow["status"], flow["value"]) == ("warning", 120)
    assert flow["detail"]["examples"] == [f"step run a {step_claim['id']}"]
    assert report["status"] == "warning" and report["healthy"] is False

    clock.advance(seconds=120)  # 4 minutes: above 3 x 1 minute
    assert check(health(conn), "lapsed_leases", "task:slow")["status"] == "critical"

    # a claim rescues the run: nothing is past its lease any more
    call(conn, "cb_claim_tasks", name="slow", quantity=1, hide_for=HIDE)
    assert check(health(conn), "lapsed_leases", "task:slow")["status"] == "ok"


def test_a_worker_without_heartbeat_is_reported(conn, clock):
    wid = uuid.uuid4()
    fn(conn, "cb_worker_started", id=wid, task_handlers=J([]), step_handlers=J([]))
    beat = check(health(conn), "worker_heartbeat", str(wid))
    assert (beat["status"], beat["value"]) == ("ok", 0)
    clock.advance(seconds=90)
    beat = check(health(conn), "worker_heartbeat", str(wid))
    assert (beat["status"], beat["value"], beat["threshold"]) == ("warning", 90, 60)
    assert (
        check(health(conn, heartbeat_age="2 minutes"), "worker_heartbeat", str(wid))["status"]
        == "ok"
    )
    clock.advance(seconds=100)
    assert check(health(conn), "worker_heartbeat", str(wid))["status"] == "critical"
    fn(conn, "cb_worker_heartbeat", id=wid)
    assert check(health(conn), "worker_heartbeat", str(wid))["status"] == "ok"


def test_the_oldest_queued_item_of_each_queue_task_and_flow(conn, clock):
    fn(conn, "cb_create_queue", name="orders")
    fn(conn, "cb_create_task", name="mail")
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    fn(conn, "cb_create_queue", name="empty")
    fn(conn, "cb_send", queue="orders", body=J(1))
    fn(conn, "cb_run_task", name="mail", input=J({}))
    fn(conn, "cb_run_flow", name="pipe", input=J({}))
    clock.advance(seconds=10)
    fn(conn, "cb_send", queue="orders", body=J(2))

    clock.advance(seconds=350)
    report = health(conn)
    for subject in ("queue:orders", "task:mail", "flow:pipe"):
        queued = check(report, "oldest_queued", subject)
        assert (queued["status"], queued["value"], queued["threshold"]) == ("warning", 360, 300)
    assert check(report, "oldest_queued", "queue:orders")["detail"]["waiting"] == 2
    empty = check(report, "oldest_queued", "queue:empty")
    assert (empty["status"], empty["value"], empty["message"]) == ("ok", 0, "nothing waiting")

    # a message not visible yet is not waiting
    fn(conn, "cb_send", queue="empty", body=J(3), visible_at=clock.now + MINUTE)
    assert check(health(conn), "oldest_queued", "queue:empty")["value"] == 0
    assert check(health(conn, queued_age="1 hour"), "oldest_queued", "task:mail")["status"] == "ok"
    clock.advance(seconds=3600)
    assert check(health(conn), "oldest_queued", "task:mail")["status"] == "critical"


def test_dead_tuples_are_measured_per_table(conn):
    # Autovacuum must not clean up between the deletes and the report.
    conn.execute("ALTER TABLE catbird.cb_messages SET (autovacuum_enabled = false)")
    fn(conn, "cb_create_queue", name="churn")
    conn.execute(
        "SELECT catbird.cb_send(queue => 'churn', bodies => array_agg(to_jsonb(g)))"
        " FROM generate_series(1, 1500) g"
    )
    conn.execute("DELETE FROM catbird.cb_messages")
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")  # the flush happens when the session goes idle
    report = health(conn)
    dead = check(report, "dead_tuples", "cb_messages")
    assert dead["detail"]["dead_tuples"] == 1500
    assert (dead["status"], dead["value"], dead["unit"]) == ("critical", 1.0, "ratio")
    assert "1500 dead of 1500 tuples" in dead["message"]
    assert "last autovacuum never" in dead["message"]
    # fewer dead tuples than dead_tuple_min: not worth a warning
    assert check(health(conn, dead_tuple_min=2000), "dead_tuples", "cb_messages")["status"] == "ok"
    conn.execute("VACUUM catbird.cb_messages")
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT 1")
    dead = check(health(conn), "dead_tuples", "cb_messages")
    assert (dead["status"], dead["detail"]["dead_tuples"]) == ("ok", 0)
    assert dead["detail"]["last_vacuum"] is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"dead_tuple_ratio": 1.5}, "invalid dead_tuple_ratio: got 1.5"),
        ({"dead_tuple_ratio": -0.1}, "invalid dead_tuple_ratio"),
        ({"dead_tuple_ratio": None}, "invalid dead_tuple_ratio: got NULL"),
        ({"dead_tuple_min": -1}, "invalid dead_tuple_min"),
        ({"xmin_age": "-1 second"}, "invalid xmin_age"),
        ({"xmin_age": None}, "invalid xmin_age: got NULL"),
        ({"queued_age": "2000 years"}, "invalid queued_age: 2000 years is longer than 1000 years"),
        ({"lease_overdue": "-5 minutes"}, "invalid lease_overdue"),
        ({"heartbeat_age": None}, "invalid heartbeat_age"),
        ({"critical_factor": 0.5}, "invalid critical_factor: got 0.5"),
    ],
)
def test_bad_thresholds_are_rejected(conn, args, message):
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_health", **args)
    assert message in str(info.value)


def test_metrics_are_gauges_of_queues_runs_and_health(conn, clock):
    fn(conn, "cb_create_queue", name="orders")
    fn(conn, "cb_create_task", name="mail")
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a")]))
    for body in (1, 2, 3):
        fn(conn, "cb_send", queue="orders", body=J(body))
    fn(conn, "cb_send", queue="orders", body=J(4), visible_at=T0 + MINUTE)
    fn(conn, "cb_run_task", name="mail", input=J({}))
    fn(conn, "cb_run_task", name="mail", input=J({}))
    fn(conn, "cb_run_flow", name="pipe", input=J({}))
    call(conn, "cb_claim_tasks", name="mail", quantity=1, hide_for=HIDE)
    clock.advance(seconds=20)
    rows = {
        (r["metric"], tuple(sorted(r["labels"].items()))): r["value"]
        for r in call(conn, "cb_metrics")
    }
    assert rows[("catbird_queue_messages", (("queue", "orders"),))] == 4
    assert rows[("catbird_queue_visible_messages", (("queue", "orders"),))] == 3
    runs = {k[1]: v for k, v in rows.items() if k[0] == "catbird_runs"}
    assert runs == {
        (("kind", "task"), ("name", "mail"), ("status", "queued")): 1,
        (("kind", "task"), ("name", "mail"), ("status", "started")): 1,
        (("kind", "flow"), ("name", "pipe"), ("status", "started")): 1,
        (("kind", "flow"), ("name", "pipe"), ("status", "canceling")): 0,
    }
    oldest = {k[1]: v for k, v in rows.items() if k[0] == "catbird_oldest_queued_seconds"}
    assert oldest == {
        (("kind", "queue"), ("name", "orders")): 20,
        (("kind", "task"), ("name", "mail")): 20,
        (("kind", "flow"), ("name", "pipe")): 20,
    }
    mail = (("check", "oldest_queued"), ("subject", "task:mail"))
    assert rows[("catbird_health_status", mail)] == 0
    assert rows[("catbird_health_value", mail)] == 20
    assert rows[("catbird_workers", ())] == 0


def test_workers_may_read_the_report_and_clients_may_not(conn, dsn):
    suffix = uuid.uuid4().hex[:8]
    worker_role, client_role = f"health_worker_{suffix}", f"health_client_{suffix}"
    conn.execute(f"CREATE ROLE {worker_role} NOLOGIN IN ROLE catbird_worker")
    conn.execute(f"CREATE ROLE {client_role} NOLOGIN IN ROLE catbird_client")
    try:
        with psycopg.connect(dsn) as holder:
            holder.execute("SELECT txid_current()")
            conn.execute(f"SET ROLE {worker_role}")
            # cb_health runs as the extension's owner (a superuser here), so a
            # worker sees the transactions of other roles' sessions too
            xmin = check(
                health(conn, xmin_age="0"), "xmin_horizon", f"pid {holder.info.backend_pid}"
            )
            assert xmin["status"] == "critical"
            assert xmin["detail"]["hidden_sessions"] == 0
            assert len(call(conn, "cb_metrics")) > 0
            conn.execute(f"SET ROLE {client_role}")
            with pytest.raises(errors.InsufficientPrivilege):
                health(conn)
            with pytest.raises(errors.InsufficientPrivilege):
                call(conn, "cb_metrics")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP ROLE {worker_role}")
        conn.execute(f"DROP ROLE {client_role}")

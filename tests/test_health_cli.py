"""``catbird health``: the report on a terminal and as JSON, and its exit status.

The command opens its own session, so the engine clock is moved for it
through the connection's options (``-c catbird.fake_now=...``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from psycopg.conninfo import make_conninfo

from clihelpers import assert_error, cb
from sqlhelpers import T0, Clock, J, fn


def at(dsn: str, when: dt.datetime) -> str:
    """``dsn`` with the engine clock of its sessions pinned at ``when``."""
    return make_conninfo(dsn, options=f"-c catbird.fake_now={when.isoformat()}")


def register_worker(conn) -> uuid.UUID:
    Clock(conn)  # registered at T0
    wid = uuid.uuid4()
    fn(conn, "cb_worker_started", id=wid, task_handlers=J([]), step_handlers=J([]))
    return wid


def test_a_healthy_engine_exits_0_with_a_summary(dsn):
    result = cb(dsn, "health")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("healthy: ")
    assert "checks ok" in result.stdout
    assert "Health checks" not in result.stdout  # no problems, no table
    every = cb(dsn, "health", "--all")
    assert every.exit_code == 0
    assert "Health checks" in every.stdout and "dead_tuples" in every.stdout


def test_a_warning_exits_3_and_shows_the_check(conn, dsn):
    wid = register_worker(conn)
    result = cb(at(dsn, T0 + dt.timedelta(seconds=90)), "health", columns=160)
    assert result.exit_code == 3, result.output
    assert "worker_heartbeat" in result.stdout and str(wid) in result.stdout
    assert "90s" in result.stdout and "60s" in result.stdout
    assert "warning: 1 warning of" in result.stdout
    # a threshold given on the command line
    relaxed = cb(at(dsn, T0 + dt.timedelta(seconds=90)), "health", "--heartbeat-age", "120")
    assert relaxed.exit_code == 0, relaxed.output


def test_critical_exits_4_and_json_carries_the_whole_report(conn, dsn):
    wid = register_worker(conn)
    result = cb(at(dsn, T0 + dt.timedelta(minutes=10)), "health", "--json")
    assert result.exit_code == 4, result.output
    report = json.loads(result.stdout)
    assert report["healthy"] is False and report["status"] == "critical"
    [beat] = [c for c in report["checks"] if c["check"] == "worker_heartbeat"]
    assert beat == {
        "check": "worker_heartbeat",
        "subject": str(wid),
        "value": 600,
        "unit": "seconds",
        "threshold": 60,
        "status": "critical",
        "message": beat["message"],
        "detail": beat["detail"],
    }
    assert report["thresholds"]["heartbeat_age"] == 60


def test_bad_thresholds_are_usage_errors(dsn):
    assert_error(cb(dsn, "health", "--critical-factor", "0.5"), 2, "--critical-factor")
    assert_error(cb(dsn, "health", "--dead-tuple-ratio", "2"), 2, "--dead-tuple-ratio")
    assert_error(cb(dsn, "health", "--queued-age", "-1"), 2, "--queued-age")


def test_an_unreachable_database_exits_1(dsn):
    bad = make_conninfo(dsn, port=1, connect_timeout=2)
    assert_error(cb(bad, "health"), 1, "cannot reach the database")

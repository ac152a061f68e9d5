"""The README's examples are tests: its SQL and Python blocks run here, in order.

SQL blocks run on one session (so the README's ``SET search_path`` holds for
the blocks after it); Python blocks run in one namespace with ``CATBIRD_DSN``
pointing at the test database. Afterwards the state they promise is checked.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import types
from pathlib import Path

import psycopg
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def test_the_readme_has_sql_and_python_examples() -> None:
    assert len(blocks("sql")) >= 8
    assert len(blocks("python")) >= 3


def test_the_sql_guide_runs_and_does_what_it_says(conn: psycopg.Connection) -> None:
    for block in blocks("sql"):
        conn.execute(block.encode())

    def one(query: str) -> tuple:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row

    # Queues: 4 sent and acked, then order-5 once, then one publish each to orders/audit.
    assert one("SELECT count(*) FROM cb_messages WHERE concurrency_key = 'order-5'") == (1,)
    depths = dict(conn.execute("SELECT name, depth FROM cb_list_queues()").fetchall())
    assert depths == {"orders": 2, "audit": 2}
    # Tasks: run 1 completed, run 2 skipped by its condition.
    runs = dict(conn.execute("SELECT id, status FROM cb_list_task_runs('send_email')").fetchall())
    assert runs == {1: "completed", 2: "skipped"}
    # Flows: the run completed with ship's output, every step completed.
    assert one("SELECT status, output FROM cb_get_flow_run('order_flow', 1)") == (
        "completed",
        {"tracking": "XYZ"},
    )
    steps = conn.execute("SELECT step_name, status FROM cb_get_flow_run_steps('order_flow', 1)")
    assert steps.fetchall() == [
        ("validate", "completed"),
        ("charge", "completed"),
        ("ship", "completed"),
    ]
    # Scheduling: one task schedule and one flow schedule, with their policies.
    schedules = conn.execute(
        "SELECT task_name, cron_spec, catch_up FROM cb_list_task_schedules()"
    ).fetchall()
    assert schedules == [("nightly_report", "30 2 * * *", "one")]
    assert one("SELECT flow_name, catch_up FROM cb_list_flow_schedules()") == ("order_flow", "skip")
    assert one("SELECT cb_next_cron_tick('0 9 * * 1-5', '2030-01-04 12:00Z')") == (
        dt.datetime(2030, 1, 7, 9, tzinfo=dt.UTC),
    )
    # Inbox: four appended, the 10% one collapsed, all acknowledged.
    assert one("SELECT count(*), count(seen_at) FROM cb_notifications") == (4, 4)
    assert conn.execute("SELECT * FROM cb_read_notifications('user-42')").fetchall() == []


def test_the_python_guide_runs(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATBIRD_DSN", dsn)
    # A real module, as a user's script would be (dataclasses look their module up).
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks("python"):
        exec(compile(block, str(README), "exec", dont_inherit=True), module.__dict__)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT id FROM invoice").fetchall() == [(3,)]
        assert conn.execute("SELECT depth FROM catbird.cb_get_queue('invoices')").fetchone() == (0,)

"""``catbird listen``: events printed as they are committed.

The command runs in-process (tests/clihelpers.py) while a thread, once the
command LISTENs, commits events on a connection of its own; ``--count`` ends
the command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg

from clihelpers import assert_error, cb
from sqlhelpers import J, fn

LISTENING = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND query = 'LISTEN catbird'"
)


@contextmanager
def once_listening(dsn: str, *calls: tuple[str, dict[str, object]]) -> Iterator[None]:
    """Make the calls (each committed on its own) once a connection LISTENs."""

    def send() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while conn.execute(LISTENING).fetchone() == (0,) and time.monotonic() < deadline:
                time.sleep(0.02)
            for function, args in calls:
                fn(conn, function, **args)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def test_listen_prints_matching_events_as_topic_and_data(dsn):
    calls = [
        ("cb_notify", {"topic": "noise.x", "data": "skipped"}),
        ("cb_notify", {"topic": "orders.eu.created", "data": '{"id": 1}'}),
        ("cb_create_task", {"name": "work"}),
        ("cb_notify", {"topic": "orders.ping"}),
    ]
    with once_listening(dsn, *calls):
        result = cb(dsn, "listen", "orders.#", "catbird.task.*", "--count", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == 'orders.eu.created  {"id": 1}'
    assert lines[1].split("  ", 1)[0] == "catbird.task.created"
    assert json.loads(lines[1].split("  ", 1)[1]) == {"task": "work"}
    assert lines[2] == "orders.ping"


def test_listen_json_prints_one_object_per_event(dsn):
    calls = [
        ("cb_create_task", {"name": "work"}),
        ("cb_run_task", {"name": "work", "input": J({})}),
        ("cb_notify", {"topic": "app.text", "data": "not json"}),
    ]
    with once_listening(dsn, *calls):
        result = cb(dsn, "listen", "#", "--json", "--count", "3")
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["topic"] for d in docs] == [
        "catbird.task.created",
        "catbird.task.started",
        "app.text",
    ]
    assert docs[0]["data"] == {"task": "work"}
    assert docs[1]["data"]["task"] == "work" and isinstance(docs[1]["data"]["run_id"], int)
    assert docs[2]["data"] == "not json"
    assert all(d["node_id"] is None for d in docs)
    assert all(datetime.fromisoformat(d["received_at"]).tzinfo is not None for d in docs)


def test_listen_rejects_an_invalid_pattern_before_connecting(dsn):
    for pattern in ("orders.#.x", "a..b", ""):
        result = cb(dsn, "listen", "ok.*", pattern, "--count", "1")
        assert_error(result, 2, "invalid pattern")


def test_listen_needs_a_pattern(dsn):
    assert cb(dsn, "listen").exit_code == 2


def test_listen_stops_quietly_on_ctrl_c(dsn):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "catbird", "listen", "#", "--dsn", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while conn.execute(LISTENING).fetchone() == (0,) and time.monotonic() < deadline:
                time.sleep(0.05)
            fn(conn, "cb_notify", topic="app.hello", data="hi")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stdout == "app.hello  hi\n"
    assert "Traceback" not in stderr

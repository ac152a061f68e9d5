"""Worker reliability with real processes: crashes, many workers, a restarted database.

Workers run as ``python -m catbird worker tests.workers.reliable:...``
subprocesses (the command line a user runs); their handlers write one row per
call into an ``effects`` table, so the tests see how often each run's handler
really ran. Waits are bounded polling loops.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from catbird import Client
from workerhelpers import EFFECTS, WorkerProcess, scalar, wait_for


def test_killed_worker_run_is_finished_by_another_after_the_lease(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    client.create_task("hang_first")
    first = WorkerProcess(dsn, "tests.workers.reliable:tasks", "--lease", "1")
    workers.append(first)
    handle = client.run_task("hang_first", 1)
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM effects WHERE run_id = %s", handle.id),
        30,
        "the first worker to start the handler",
    )
    first.kill()  # SIGKILL: no shutdown, no release; the lease must expire
    assert first.proc.returncode == -signal.SIGKILL
    killed_at = time.monotonic()
    second = WorkerProcess(dsn, "tests.workers.reliable:tasks", "--lease", "1")
    workers.append(second)
    assert handle.wait_for_output(timeout=30) == "finished"
    assert time.monotonic() - killed_at >= 0.9  # not before the lease ran out
    info = handle.info()
    assert (info.status, info.attempts) == ("completed", 2)
    calls = conn.execute(
        "SELECT attempt, pid FROM effects WHERE run_id = %s ORDER BY id", [handle.id]
    ).fetchall()
    assert [a for a, _ in calls] == [1, 2]
    assert calls[0][1] == first.proc.pid and calls[1][1] == second.proc.pid
    assert second.terminate() == 0


def test_four_worker_processes_complete_each_run_exactly_once(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    client.create_task("record")
    for _ in range(4):
        workers.append(WorkerProcess(dsn, "tests.workers.reliable:tasks", "--concurrency", "32"))
    wait_for(lambda: len(client.list_workers()) == 4, 30, "four registered workers")
    total = 5000
    handles = client.run_tasks("record", list(range(total)))
    assert len({h.id for h in handles}) == total
    wait_for(
        lambda: scalar(
            conn,
            "SELECT count(*) = %s FROM catbird.cb_task_runs WHERE status = 'completed'",
            total,
        ),
        120,
        "all runs to complete",
    )
    for w in workers:
        assert w.terminate() == 0
    effects, distinct_runs, distinct_n, processes = conn.execute(
        "SELECT count(*), count(DISTINCT run_id), count(DISTINCT n), count(DISTINCT pid)"
        " FROM effects WHERE kind = 'record'"
    ).fetchone() or (None, None, None, None)
    assert (effects, distinct_runs, distinct_n) == (total, total, total)
    assert processes >= 2  # the work was shared
    attempts = scalar(conn, "SELECT max(attempts) FROM catbird.cb_task_runs")
    assert attempts == 1
    outputs = scalar(conn, "SELECT sum((output)::int) FROM catbird.cb_task_runs")
    assert outputs == sum(range(total))
    assert client.list_workers() == []  # all unregistered on SIGTERM


def test_sigterm_exits_zero_after_the_grace_period(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    conn.execute(EFFECTS)
    client = Client(conn)
    client.create_task("sleepy")
    # A Worker object from the module (its DSN from the environment), grace 1.5 s.
    w = WorkerProcess(
        "",
        "tests.workers.reliable:worker",
        env={"CATBIRD_WORKER_DSN": dsn, "CATBIRD_WORKER_GRACE": "1.5"},
    )
    workers.append(w)
    short = client.run_task("sleepy", 0.5)
    long = client.run_task("sleepy", 60)
    wait_for(lambda: scalar(conn, "SELECT count(*) = 2 FROM effects"), 30, "both handlers to start")
    t0 = time.monotonic()
    assert w.terminate() == 0
    elapsed = time.monotonic() - t0
    assert 1.4 <= elapsed < 6, elapsed
    assert short.info().status == "completed"  # finished inside the grace period
    info = long.info()
    assert info.status == "started"  # cut off: handed back for another worker at once
    assert scalar(
        conn, "SELECT visible_at <= now() FROM catbird.cb_task_runs WHERE id = %s", long.id
    )
    assert "stopped" in w.output()


def test_worker_survives_a_database_restart(workers: list[WorkerProcess]) -> None:
    from catbird.db.embedded import start_embedded

    tmp = Path(tempfile.mkdtemp(prefix="catbird-restart-"))
    server = start_embedded(tmp / "pg", database="catbird")
    try:
        dsn = server.dsn
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(EFFECTS)
            client = Client(conn)
            client.create_task("record")
            w = WorkerProcess(dsn, "tests.workers.reliable:tasks", "--lease", "5")
            workers.append(w)
            before = client.run_tasks("record", list(range(20)))
            assert [h.wait_for_output(timeout=30) for h in before] == list(range(20))

        server.stop()  # fast shutdown: every connection of the worker is cut
        time.sleep(1.0)
        assert w.alive()
        server = start_embedded(tmp / "pg", database="catbird")
        assert server.dsn == dsn

        with psycopg.connect(dsn, autocommit=True) as conn:
            client = Client(conn)
            after = client.run_tasks("record", list(range(100, 120)))
            outputs = [h.wait_for_output(timeout=60) for h in after]
            assert outputs == list(range(100, 120))
            assert w.alive()
            wait_for(lambda: len(client.list_workers()) == 1, 30, "the worker to register again")
            assert w.terminate() == 0
            assert scalar(conn, "SELECT count(DISTINCT run_id) FROM effects") == 40
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

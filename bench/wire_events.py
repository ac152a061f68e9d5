#!/usr/bin/env python3
"""What engine events cost: enqueue and completion with and without a listener.

Run:  python bench/wire_events.py [--dsn DSN] [--calls 1500] [--batch 100] [--rounds 3]

Every run state change sends a NOTIFY (80_events.sql), delivered at commit. The
target (SPEC: "events must cost nothing measurable when nobody listens and stay
within 10 % when one does") is checked by timing the task hot paths, one
autocommit call per transaction, under three conditions on the same server in
the same run, interleaved round by round:

* ``off``:       the event helpers (``_cb_notify``, ``_cb_notify_runs``, ...)
                 replaced by no-ops: the engine without events, the baseline;
* ``on``:        the engine as it is, nobody LISTENing;
* ``listening``: the same with one connection LISTENing on "catbird" in
                 another process, draining every notification.

Operations: ``cb_run_task`` of one input (``enqueue 1``), of ``--batch``
inputs (``enqueue batch``, per run), and ``cb_claim_tasks`` of ``--batch`` +
``cb_complete_tasks`` of them (``complete batch``, per run). For each, the
client's wall time per operation and the server backend's CPU per operation
(from /proc: the embedded server or a local one) are reported, best of the
rounds, with ratios to ``off``. A last table times the raw ceiling: an
autocommit ``SELECT pg_notify(...)`` against ``SELECT 1`` on the same
connection, i.e. what one NOTIFY per commit costs PostgreSQL itself.

:func:`measure_event_cost` is importable (``bench/wire.py`` calls it) and
returns the figures as a dict. Without ``--dsn`` a fresh embedded PostgreSQL 18
is started and removed afterwards; with ``--dsn`` the database gets a task
``bench_events`` (deleted at the end) and the swapped functions are restored
even when the run fails.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import multiprocessing.synchronize
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Conn,
    backend_cpu,
    backend_pid,
    connect,
    fmt_ratio,
    fmt_us,
    load_average,
    print_header,
    print_table,
    run_workers,
    start_server,
)

TASK = "bench_events"
CONDITIONS = ("off", "on", "listening")
#: The engine's event helpers; ``off`` replaces each with a no-op of the same signature.
EVENT_HELPERS = (
    "_cb_notify(text,text,uuid)",
    "_cb_notify_runs(text,text,text,bigint[])",
    "_cb_notify_task_runs(text,bigint[])",
    "_cb_notify_flow_run(text,bigint)",
)
_NOOP = """
CREATE OR REPLACE FUNCTION catbird.{name}({arguments}) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, catbird, pg_temp
AS $$ BEGIN END $$
"""


# --------------------------------------------------------------------------- conditions


@contextlib.contextmanager
def events_off(conn: Conn) -> Iterator[None]:
    """The event helpers as no-ops while inside; their definitions restored after."""
    saved, noops = [], []
    for helper in EVENT_HELPERS:
        row = conn.execute(
            "SELECT pg_get_functiondef(f), pg_get_function_arguments(f)"
            " FROM to_regprocedure(%s) AS f",
            ("catbird." + helper,),
        ).fetchone()
        if row is None or row[0] is None:
            raise RuntimeError(f"catbird.{helper} not found: is this catbird 0.2 with events?")
        saved.append(row[0])
        noops.append(_NOOP.format(name=helper.split("(")[0], arguments=row[1]))
    try:
        with conn.transaction():
            for noop in noops:
                conn.execute(noop.encode(), prepare=False)
        yield
    finally:
        with conn.transaction():
            for definition in saved:
                conn.execute(definition.encode(), prepare=False)


def _drain(dsn: str, ready: Any, stop: Any, received: Any) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN catbird")
        ready.set()
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.1):
                received.value += 1


@contextlib.contextmanager
def listener(dsn: str) -> Iterator[Any]:
    """A process LISTENing on "catbird" and draining notifications; yields its counter."""
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    received = ctx.Value("q", 0)
    proc = ctx.Process(target=_drain, args=(dsn, ready, stop, received), daemon=True)
    proc.start()
    if not ready.wait(30):
        proc.kill()
        raise RuntimeError("the listener did not start")
    try:
        yield received
    finally:
        time.sleep(0.3)  # let it drain what is still on its way
        stop.set()
        proc.join(10)


# --------------------------------------------------------------------------- operations


def _timed(conn: Conn, n: int, call: Callable[[], object]) -> tuple[float, float]:
    """Wall and server CPU seconds of ``n`` calls."""
    pid = backend_pid(conn)
    cpu0, t0 = backend_cpu(pid), time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - t0, backend_cpu(pid) - cpu0


def _operations(conn: Conn, calls: int, batch: int) -> dict[str, tuple[float, float]]:
    """Per-operation (wall µs, server CPU µs) of each hot path, on a fresh task."""
    conn.execute("SELECT catbird.cb_delete_task(%s)", (TASK,))
    conn.execute("SELECT catbird.cb_create_task(%s)", (TASK,))
    one = Jsonb({"n": 1})
    many = [Jsonb({"n": i}) for i in range(batch)]
    results: dict[str, tuple[float, float]] = {}

    wall, cpu = _timed(
        conn, calls, lambda: conn.execute("SELECT catbird.cb_run_task(%s, %s)", (TASK, one))
    )
    results["enqueue 1"] = (wall / calls * 1e6, cpu / calls * 1e6)
    conn.execute("SELECT catbird.cb_clear_task_runs(%s)", (TASK,))

    batches = max(1, calls // 10)
    wall, cpu = _timed(
        conn,
        batches,
        lambda: conn.execute("SELECT catbird.cb_run_task(%s, inputs => %s::jsonb[])", (TASK, many)),
    )
    runs = batches * batch
    results["enqueue batch (per run)"] = (wall / runs * 1e6, cpu / runs * 1e6)

    def complete() -> None:
        rows = conn.execute(
            "SELECT id FROM catbird.cb_claim_tasks(%s, %s, 60000)", (TASK, batch)
        ).fetchall()
        ids = [r[0] for r in rows]
        conn.execute(
            "SELECT catbird.cb_complete_tasks(%s, %s::bigint[], %s::jsonb[])",
            (TASK, ids, [Jsonb(None)] * len(ids)),
        )

    wall, cpu = _timed(conn, batches, complete)
    results["complete batch (per run)"] = (wall / runs * 1e6, cpu / runs * 1e6)
    conn.execute("SELECT catbird.cb_delete_task(%s)", (TASK,))
    return results


def _concurrent_enqueue(dsn: str, connections: int, seconds: float) -> tuple[float, float]:
    """Runs/s and server CPU µs per run of ``connections`` processes each calling
    ``cb_run_task`` (one input, autocommit) for ``seconds``: a commit that sent a
    NOTIFY holds PostgreSQL's global notify lock until it is durable, so this is
    where events could cost throughput even without a listener."""
    with connect(dsn) as conn:
        conn.execute("SELECT catbird.cb_delete_task(%s)", (TASK,))
        conn.execute("SELECT catbird.cb_create_task(%s)", (TASK,))
    one = Jsonb({"n": 1})

    def factory(conn: Conn, index: int) -> Callable[[], int]:
        def step() -> int:
            conn.execute("SELECT catbird.cb_run_task(%s, %s)", (TASK, one))
            return 1

        return step

    result = run_workers(dsn, factory, connections=connections, seconds=seconds)
    with connect(dsn) as conn:
        conn.execute("SELECT catbird.cb_delete_task(%s)", (TASK,))
    return result.rate, result.server_us_per_msg


def _raw_notify(conn: Conn, calls: int) -> dict[str, tuple[float, float]]:
    payload = '{"data": "{\\"task\\": \\"bench_events\\", \\"run_id\\": 123456}", "topic": "x"}'
    out = {}
    for label, sql, params in (
        ("SELECT 1", "SELECT 1", None),
        ("SELECT pg_notify", "SELECT pg_notify('catbird', %s)", (payload,)),
    ):
        wall, cpu = _timed(conn, calls, lambda s=sql, p=params: conn.execute(s, p))  # type: ignore[misc]
        out[label] = (wall / calls * 1e6, cpu / calls * 1e6)
    return out


def _best(samples: list[dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    """Per operation, the smallest wall and the smallest CPU over the rounds."""
    return {
        op: (min(s[op][0] for s in samples), min(s[op][1] for s in samples)) for op in samples[0]
    }


def measure_event_cost(
    dsn: str,
    *,
    calls: int = 1500,
    batch: int = 100,
    rounds: int = 3,
    synchronous_commit: bool = True,
    connections: int = 4,
    seconds: float = 3.0,
) -> dict[str, Any]:
    """Time the task hot paths with events off, on, and on with one listener.

    Returns ``{"conditions": {condition: {operation: {"wall_us", "cpu_us"}}},
    "ratios": {condition: {operation: {"wall", "cpu"}}}`` (ratios to ``off``),
    ``"raw": {...}`` (``SELECT 1`` vs ``SELECT pg_notify`` per commit),
    ``"notifications"`` (received by the listener: proof it listened),
    ``"load"`` (load averages at the end), ``"concurrent"`` ({condition:
    {"runs_per_s", "cpu_us", "ratio"}}: ``connections`` processes enqueueing
    one run per call for ``seconds``, best round; only with
    ``synchronous_commit``) and the parameters. With
    ``synchronous_commit=False`` commits do not wait for the WAL flush, so
    the CPU-bound cost shows instead of the disk's.
    """
    samples: dict[str, list[dict[str, tuple[float, float]]]] = {c: [] for c in CONDITIONS}
    raw: dict[str, list[dict[str, tuple[float, float]]]] = {"nobody": [], "listening": []}
    concurrent: dict[str, list[tuple[float, float]]] = {c: [] for c in CONDITIONS}
    measure_concurrent = synchronous_commit and connections > 0
    received = 0
    with connect(dsn) as conn:
        if not synchronous_commit:
            conn.execute("SET synchronous_commit = off")
        _operations(conn, max(50, calls // 10), batch)  # warm-up: plans, caches
        for _ in range(rounds):
            with events_off(conn):
                samples["off"].append(_operations(conn, calls, batch))
                if measure_concurrent:
                    concurrent["off"].append(_concurrent_enqueue(dsn, connections, seconds))
            samples["on"].append(_operations(conn, calls, batch))
            raw["nobody"].append(_raw_notify(conn, calls))
            if measure_concurrent:
                concurrent["on"].append(_concurrent_enqueue(dsn, connections, seconds))
            with listener(dsn) as counter:
                samples["listening"].append(_operations(conn, calls, batch))
                raw["listening"].append(_raw_notify(conn, calls))
                if measure_concurrent:
                    concurrent["listening"].append(_concurrent_enqueue(dsn, connections, seconds))
            received += counter.value
    best = {c: _best(s) for c, s in samples.items()}
    base = best["off"]
    return {
        "calls": calls,
        "synchronous_commit": synchronous_commit,
        "batch": batch,
        "rounds": rounds,
        "conditions": {
            c: {op: {"wall_us": w, "cpu_us": u} for op, (w, u) in ops.items()}
            for c, ops in best.items()
        },
        "ratios": {
            c: {
                op: {
                    "wall": w / base[op][0],
                    "cpu": u / base[op][1] if base[op][1] > 0 else math.nan,
                }
                for op, (w, u) in ops.items()
            }
            for c, ops in best.items()
        },
        "raw": {
            who: {op: {"wall_us": w, "cpu_us": u} for op, (w, u) in _best(s).items()}
            for who, s in raw.items()
        },
        "notifications": received,
        "connections": connections,
        "concurrent": {
            c: {
                "runs_per_s": max(r for r, _ in runs),
                "cpu_us": min(u for _, u in runs),
                "ratio": max(r for r, _ in runs) / max(r for r, _ in concurrent["off"]),
            }
            for c, runs in concurrent.items()
            if runs
        },
        "load": load_average(),
    }


def report(result: dict[str, Any]) -> None:
    ops = list(result["conditions"]["off"])
    rows = []
    for op in ops:
        row = [op]
        for c in CONDITIONS:
            figures = result["conditions"][c][op]
            ratios = result["ratios"][c][op]
            row += [
                f"{fmt_us(figures['wall_us'])} ({fmt_ratio(ratios['wall'])})",
                f"{fmt_us(figures['cpu_us'])} ({fmt_ratio(ratios['cpu'])})",
            ]
        rows.append(row)
    headers = ["operation"]
    for c in CONDITIONS:
        headers += [f"{c} wall µs", f"{c} CPU µs"]
    print_table(
        "Event cost: µs per operation (ratio to events off), best of "
        f"{result['rounds']} rounds of {result['calls']} calls, batch {result['batch']}, "
        f"synchronous_commit {'on' if result['synchronous_commit'] else 'off'}",
        headers,
        rows,
        right=range(1, len(headers)),
        notes=[
            f"Listener received {result['notifications']:,} notifications; "
            f"load average at the end: {result['load']}."
        ],
    )
    if result["concurrent"]:
        print_table(
            f"Concurrent enqueue: {result['connections']} processes, cb_run_task of one"
            " input per call (best round)",
            ["condition", "runs/s", "ratio to off", "server CPU µs/run"],
            [
                [c, f"{f['runs_per_s']:,.0f}", fmt_ratio(f["ratio"]), fmt_us(f["cpu_us"])]
                for c, f in result["concurrent"].items()
            ],
            right=(1, 2, 3),
        )
    raw_rows = [
        [who, op, fmt_us(f["wall_us"]), fmt_us(f["cpu_us"])]
        for who, ops in result["raw"].items()
        for op, f in ops.items()
    ]
    print_table(
        "Raw ceiling: one autocommit statement, with and without a NOTIFY",
        ["listener", "statement", "wall µs", "server CPU µs"],
        raw_rows,
        right=(2, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server (default: a fresh embedded one)")
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="also measure with synchronous_commit = off (CPU-bound, no WAL flush wait)",
    )
    args = parser.parse_args()
    server = start_server(args.dsn)
    try:
        print_header("events", server)
        for durable in (True, False) if args.async_commit else (True,):
            result = measure_event_cost(
                server.dsn,
                calls=args.calls,
                batch=args.batch,
                rounds=args.rounds,
                synchronous_commit=durable,
            )
            report(result)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

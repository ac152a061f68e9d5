"""Scale benchmark: claim latency as queues and task backlogs grow, and over dead rows.

Run:  python bench/scale.py [--dsn DSN] [--samples N] [--max-depth N] [--dead N]

Without --dsn it starts a fresh embedded PostgreSQL 18 and removes it
afterwards. One client connection, autocommit (each claim its own commit):

(a) cb_read(queue, 1, 3600000) p50 / p99 and server CPU per claim with 10k,
    100k and 1M messages queued (the queue is filled through cb_send batches
    of 10,000; every sampled claim hides one message, so depth stays put);
(b) the same queue after cb_pop removed its --dead (default 200,000) oldest
    messages, before any vacuum (autovacuum is off for cb_messages during
    (b)): the first claim is shown on its own (it walks the dead index
    entries and marks them dead), then p50 / p99 of the next claims; then
    again with another session holding a snapshot older than the pop (a
    held xmin: nothing can be marked dead, every claim walks the dead rows
    again); then after VACUUM;
(c) cb_claim_tasks(task, 1, 3600000) p50 / p99 with 10k and 1M runs queued
    (cb_run_task batches of 10,000).

"flat" = p50 at the largest size / p50 at the smallest (1.0: no growth).
The machine these figures come from is shared: compare the rows of one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Conn,
    backend_cpu,
    backend_pid,
    connect,
    fmt_ms,
    fmt_ratio,
    fmt_us,
    load_average,
    median,
    percentile,
    print_header,
    print_table,
    start_server,
    stopwatch,
)

QUEUE = "scale_q"
TASK = "scale_t"
BATCH = 10_000
HIDE_MS = 3_600_000


def fill_queue(conn: Conn, count: int) -> None:
    body = Jsonb({"n": 1, "payload": "x" * 64})
    while count > 0:
        k = min(BATCH, count)
        conn.execute("SELECT catbird.cb_send(%s::text, %s::jsonb[])", (QUEUE, [body] * k))
        count -= k


def fill_task(conn: Conn, count: int) -> None:
    body = Jsonb({"n": 1})
    while count > 0:
        k = min(BATCH, count)
        conn.execute("SELECT catbird.cb_run_task(%s::text, %s::jsonb[])", (TASK, [body] * k))
        count -= k


def sample(conn: Conn, call: Callable[[], object], n: int) -> tuple[list[float], float]:
    """(seconds per call, server CPU us per call) over n calls."""
    pid = backend_pid(conn)
    cpu0 = backend_cpu(pid)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times, (backend_cpu(pid) - cpu0) / n * 1e6


def row(label: str, times: list[float], cpu_us: float, base: float | None) -> list[str]:
    p50 = median(times)
    return [
        label,
        fmt_ms(p50),
        fmt_ms(percentile(times, 99)),
        fmt_us(cpu_us),
        fmt_ratio(p50 / base) if base else "1.00",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="benchmark this database instead of a fresh embedded PG 18")
    parser.add_argument("--samples", type=int, default=300, help="claims sampled per row")
    parser.add_argument("--max-depth", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=200_000, help="head rows popped in (b)")
    args = parser.parse_args(argv)
    depths = [d for d in (10_000, 100_000, 1_000_000) if d < args.max_depth] + [args.max_depth]

    with stopwatch("start server"):
        server = start_server(args.dsn)
    try:
        print_header("scale", server)
        print(f"- load average at start (other work on this machine): {load_average()}")
        sys.stdout.flush()
        with connect(server.dsn) as conn, connect(server.dsn) as holder:
            conn.execute("SELECT catbird.cb_create_queue(%s)", (QUEUE,))
            conn.execute("SELECT catbird.cb_create_task(%s)", (TASK,))

            def read() -> object:
                return conn.execute(
                    "SELECT id FROM catbird.cb_read(%s, 1, %s)", (QUEUE, HIDE_MS)
                ).fetchall()

            # (a)
            rows: list[list[str]] = []
            base: float | None = None
            queued = 0
            for depth in depths:
                with stopwatch(f"fill queue to {depth:,}"):
                    fill_queue(conn, depth - queued)
                    queued = depth
                conn.execute("VACUUM (ANALYZE) catbird.cb_messages")
                times, cpu = sample(conn, read, args.samples)
                rows.append(row(f"{depth:,} queued", times, cpu, base))
                base = base or median(times)

            # (b)
            conn.execute("ALTER TABLE catbird.cb_messages SET (autovacuum_enabled = false)")
            try:
                with stopwatch(f"pop {args.dead:,} head messages"):
                    conn.execute("SELECT count(*) FROM catbird.cb_pop(%s, %s)", (QUEUE, args.dead))
                first, cpu = sample(conn, read, 1)
                rows.append(row(f"after popping {args.dead:,}: first claim", first, cpu, base))
                times, cpu = sample(conn, read, args.samples)
                rows.append(row(f"after popping {args.dead:,}: next claims", times, cpu, base))

                holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                holder.execute("SELECT count(*) FROM catbird.cb_queues")  # takes the snapshot
                with stopwatch(f"pop {args.dead:,} more with a snapshot held"):
                    conn.execute("SELECT count(*) FROM catbird.cb_pop(%s, %s)", (QUEUE, args.dead))
                times, cpu = sample(conn, read, max(args.samples // 3, 20))
                rows.append(row(f"{args.dead:,} more popped, xmin held", times, cpu, base))
                holder.execute("ROLLBACK")
                times, cpu = sample(conn, read, args.samples)
                rows.append(row("hold released, before vacuum", times, cpu, base))
                conn.execute("VACUUM (ANALYZE) catbird.cb_messages")
                times, cpu = sample(conn, read, args.samples)
                rows.append(row("after VACUUM", times, cpu, base))
            finally:
                conn.execute("ALTER TABLE catbird.cb_messages RESET (autovacuum_enabled)")
            print_table(
                f"(a, b) cb_read(queue, 1, ...) by depth and over dead head rows, "
                f"{args.samples} claims a row",
                ["queue", "p50 ms", "p99 ms", "server CPU us/claim", "p50 / first depth"],
                rows,
                right=(1, 2, 3, 4),
            )

            # (c)
            def claim() -> object:
                return conn.execute(
                    "SELECT id FROM catbird.cb_claim_tasks(%s, 1, %s)", (TASK, HIDE_MS)
                ).fetchall()

            rows, base, queued = [], None, 0
            for depth in (depths[0], depths[-1]):
                with stopwatch(f"fill task runs to {depth:,}"):
                    fill_task(conn, depth - queued)
                    queued = depth
                conn.execute("VACUUM (ANALYZE) catbird.cb_task_runs")
                times, cpu = sample(conn, claim, args.samples)
                rows.append(row(f"{depth:,} runs queued", times, cpu, base))
                base = base or median(times)
            print_table(
                f"(c) cb_claim_tasks(task, 1, ...) by backlog, {args.samples} claims a row",
                ["task", "p50 ms", "p99 ms", "server CPU us/claim", "p50 / first depth"],
                rows,
                right=(1, 2, 3, 4),
            )
            conn.execute("SELECT catbird.cb_delete_queue(%s)", (QUEUE,))
            conn.execute("SELECT catbird.cb_delete_task(%s)", (TASK,))
        print()
        print(f"- load average at end: {load_average()}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Soak benchmark: steady enqueue + drain, with and without a held xmin.

Run:  python bench/soak.py [--dsn DSN] [--minutes M] [--depth N]

Without --dsn it starts a fresh embedded PostgreSQL 18 and removes it
afterwards. A producer process keeps about --depth (default 10,000) messages
queued (cb_send batches of 100 whenever fewer are outstanding); a consumer
process drains as fast as it can (cb_read 100 + cb_delete, 2 commits). The
run has three phases of --minutes / 3 each (default 10 minutes in all):

1. no hold;
2. another session holds a snapshot (REPEATABLE READ transaction left open:
   a held xmin, as a long report query or a stuck replica would), so no dead
   row can be removed while it lasts;
3. the hold released.

Every 10 s it prints the consumer's messages/s, its backend CPU per message,
the queue depth, and the size of cb_messages (heap) and of its indexes. The
summary compares phase 2's median throughput with phase 1's (issue 13: within
20 %) and shows whether the table stops growing in phase 3.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    backend_cpu,
    backend_pid,
    connect,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    load_average,
    median,
    print_header,
    print_table,
    start_server,
    stopwatch,
)

QUEUE = "soak_q"
BATCH = 100
INTERVAL = 10.0
BODY = {"order_id": 184467, "customer": "cus_9f3a1c", "amount": {"value": 129.9}}
if TYPE_CHECKING:
    Counter = multiprocessing.sharedctypes.Synchronized[int]

SIZES = """
SELECT pg_relation_size('catbird.cb_messages'),
       pg_indexes_size('catbird.cb_messages'),
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'catbird.cb_messages'::regclass)
"""


def producer(
    dsn: str,
    depth: int,
    sent: Counter,
    drained: Counter,
    stop: multiprocessing.synchronize.Event,
) -> None:
    bodies = [Jsonb(BODY)] * BATCH
    with connect(dsn) as conn:
        while not stop.is_set():
            if sent.value - drained.value < depth:
                conn.execute("SELECT catbird.cb_send(%s::text, %s::jsonb[])", (QUEUE, bodies))
                with sent.get_lock():
                    sent.value += BATCH
            else:
                time.sleep(0.005)


def consumer(
    dsn: str, drained: Counter, pid_out: Counter, stop: multiprocessing.synchronize.Event
) -> None:
    with connect(dsn) as conn:
        pid_out.value = backend_pid(conn)
        while not stop.is_set():
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM catbird.cb_read(%s, %s, 30000)", (QUEUE, BATCH)
                )
            ]
            if not ids:
                time.sleep(0.005)
                continue
            conn.execute("SELECT catbird.cb_delete(%s::text, %s::bigint[])", (QUEUE, ids))
            with drained.get_lock():
                drained.value += len(ids)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="benchmark this database instead of a fresh embedded PG 18")
    parser.add_argument("--minutes", type=float, default=10.0, help="whole run (3 phases)")
    parser.add_argument("--depth", type=int, default=10_000, help="messages kept queued")
    args = parser.parse_args(argv)
    phase_seconds = args.minutes * 60 / 3

    with stopwatch("start server"):
        server = start_server(args.dsn)
    try:
        print_header("soak", server)
        print(f"- load average at start (other work on this machine): {load_average()}")
        print(f"- {args.minutes:g} minutes, 3 phases; {args.depth:,} messages kept queued")
        sys.stdout.flush()
        ctx = multiprocessing.get_context("fork")
        sent, drained, consumer_pid = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Value("q", 0)
        stop = ctx.Event()
        with connect(server.dsn) as conn, connect(server.dsn) as holder:
            conn.execute("SELECT catbird.cb_create_queue(%s)", (QUEUE,))
            procs = [
                ctx.Process(target=producer, args=(server.dsn, args.depth, sent, drained, stop)),
                ctx.Process(target=consumer, args=(server.dsn, drained, consumer_pid, stop)),
            ]
            for p in procs:
                p.start()
            rows: list[list[str]] = []
            rates: dict[str, list[float]] = {"no hold": [], "xmin held": [], "released": []}
            heaps: dict[str, list[int]] = {k: [] for k in rates}
            try:
                while consumer_pid.value == 0:
                    time.sleep(0.05)
                pid = int(consumer_pid.value)
                start = time.monotonic()
                last_t, last_n, last_cpu = start, int(drained.value), backend_cpu(pid)
                phase = "no hold"
                while (now := time.monotonic()) - start < 3 * phase_seconds:
                    wanted = ["no hold", "xmin held", "released"][
                        min(int((now - start) // phase_seconds), 2)
                    ]
                    if wanted != phase:
                        if wanted == "xmin held":
                            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                            holder.execute("SELECT count(*) FROM catbird.cb_queues")
                        else:
                            holder.execute("ROLLBACK")
                        phase = wanted
                    time.sleep(INTERVAL - ((time.monotonic() - start) % INTERVAL))
                    t, n, cpu = time.monotonic(), int(drained.value), backend_cpu(pid)
                    heap, indexes, dead = conn.execute(SIZES).fetchone() or (0, 0, 0)
                    rate = (n - last_n) / (t - last_t)
                    rates[phase].append(rate)
                    heaps[phase].append(int(heap))
                    rows.append(
                        [
                            f"{t - start:.0f}",
                            phase,
                            fmt_rate(rate),
                            fmt_us((cpu - last_cpu) / max(n - last_n, 1) * 1e6),
                            f"{int(sent.value) - n:,}",
                            f"{heap / 2**20:.1f}",
                            f"{indexes / 2**20:.1f}",
                            f"{dead or 0:,}",
                        ]
                    )
                    print("  " + " | ".join(rows[-1]), file=sys.stderr, flush=True)
                    last_t, last_n, last_cpu = t, n, cpu
            finally:
                stop.set()
                for p in procs:
                    p.join(timeout=30)
                holder.rollback()
            conn.execute("SELECT catbird.cb_delete_queue(%s)", (QUEUE,))
        print_table(
            f"consumer throughput every {INTERVAL:g} s (cb_read 100 + cb_delete)",
            [
                "s",
                "phase",
                "msgs/s",
                "consumer CPU us/msg",
                "depth",
                "heap MiB",
                "indexes MiB",
                "dead rows (stats)",
            ],
            rows,
            right=(0, 2, 3, 4, 5, 6, 7),
        )
        held, free = median(rates["xmin held"]), median(rates["no hold"])
        grow = heaps["released"]
        print()
        print(
            f"- median msgs/s with the xmin held / without: {fmt_rate(held)} / {fmt_rate(free)}"
            f" = {fmt_ratio(held / free if free else 0.0)} (target >= 0.80)"
        )
        if len(grow) >= 2:
            print(
                f"- heap after the hold ended: {grow[0] / 2**20:.1f} MiB at first, "
                f"{grow[-1] / 2**20:.1f} MiB at the end of the run"
            )
        print(f"- load average at end: {load_average()}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

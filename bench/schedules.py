"""Schedule benchmark: cron next-tick computation and due-schedule execution.

Run:  python bench/schedules.py [--dsn DSN] [--schedules N] [--quick]

Without --dsn it starts a fresh embedded PostgreSQL 18 (default settings,
durable commits) in a temporary directory and removes it afterwards.

(a) next-tick computations per second, server side (one statement evaluates
    the function over generate_series, so client round trips do not count):
    - cb_next_cron_tick(spec, t): parse + next tick, for a mix of specs; the
      worst spec is reported on its own (per call, and the slowest single
      call of a sample timed one by one through EXPLAIN ANALYZE);
    - _cb_cron_next(parsed, t): the next tick of an already parsed spec, which
      is what executing a due schedule pays (the spec is parsed once, at
      create time);
    against two raw ceilings of the same shape: a trivial PL/pgSQL function of
    (text, timestamptz) returning date_trunc('minute', t) + 1 minute, and the
    same expression inline (no function call at all).
(b) due-schedule execution: N task schedules (default 10,000, each its own
    task, spec "* * * * *") all due at once (the engine clock moved past their
    tick); cb_execute_due_task_schedules() is called until it returns 0
    (default max_schedules: 1,000 per call); reports the time, runs/s and
    checks that each schedule fired exactly once (N runs, N distinct
    concurrency keys, every schedule advanced). The raw ceiling is the same
    write volume in plain SQL: INSERT of N rows and UPDATE of N rows, in
    chunks of 1,000 per transaction.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    connect,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    load_average,
    median,
    print_header,
    print_table,
    ratio,
    start_server,
    stopwatch,
)

# (label, spec, start): the mix of (a). The start of the 8-year one sits just
# after a Feb 29 before 2100, so the next tick is 8 years away.
SPECS = [
    ("every minute", "* * * * *", "2030-01-01"),
    ("every 5 minutes", "*/5 * * * *", "2030-01-01"),
    ("weekdays 09:30", "30 9 * * 1-5", "2030-01-01"),
    ("hourly", "@hourly", "2030-01-01"),
    ("lists and names", "0,15,30,45 8-18/2 * jan,apr,jul,oct mon-fri", "2030-01-01"),
    ("day OR weekday", "0 12 13 * fri", "2030-01-01"),
    ("month end", "59 23 31 * *", "2030-01-31"),
    ("Feb 29 (8 years)", "0 0 29 2 *", "2096-03-01"),
    ("every minute, full lists", ",".join(map(str, range(60))) + " * * * *", "2030-01-01"),
]

RAW_SETUP = """
CREATE OR REPLACE FUNCTION pg_temp.raw_tick(spec text, t timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN date_trunc('minute', t) + interval '1 minute'; END $$;
"""

# The start times vary by a few seconds per row so no call can be folded or cached.
PARSE_AND_NEXT = """
SELECT count(catbird.cb_next_cron_tick(%(spec)s, %(start)s::timestamptz + g * interval '7 seconds'))
FROM generate_series(1, %(n)s) g
"""
NEXT_PARSED = """
SELECT count(catbird._cb_cron_next(p.c, %(start)s::timestamptz + g * interval '7 seconds'))
FROM (SELECT catbird._cb_parse_cron(%(spec)s) AS c OFFSET 0) p, generate_series(1, %(n)s) g
"""
RAW_FUNCTION = """
SELECT count(pg_temp.raw_tick(%(spec)s, %(start)s::timestamptz + g * interval '7 seconds'))
FROM generate_series(1, %(n)s) g
"""
RAW_INLINE = """
SELECT count(date_trunc('minute', %(start)s::timestamptz + g * interval '7 seconds')
             + interval '1 minute')
FROM generate_series(1, %(n)s) g
"""

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def timed(conn, query: str, params: dict[str, object]) -> float:
    t0 = time.perf_counter()
    conn.execute(query, params)
    return time.perf_counter() - t0


def measure_next_tick(dsn: str, n: int, rounds: int) -> None:
    rows = []
    per_spec: dict[str, dict[str, float]] = {}
    with connect(dsn) as conn:
        conn.execute(RAW_SETUP, prepare=False)
        for label, spec, start in SPECS:
            params = {"spec": spec, "start": start, "n": n}
            for q in (PARSE_AND_NEXT, NEXT_PARSED, RAW_FUNCTION, RAW_INLINE):  # warm up
                conn.execute(q, {**params, "n": 100})
            samples: dict[str, list[float]] = {"parse": [], "parsed": [], "fn": [], "inline": []}
            for _ in range(rounds):
                samples["parse"].append(timed(conn, PARSE_AND_NEXT, params))
                samples["parsed"].append(timed(conn, NEXT_PARSED, params))
                samples["fn"].append(timed(conn, RAW_FUNCTION, params))
                samples["inline"].append(timed(conn, RAW_INLINE, params))
            per_spec[label] = {k: median(v) / n * 1e6 for k, v in samples.items()}  # us per call
        # The slowest single call of the worst spec, each call timed by the server.
        worst_label = max(per_spec, key=lambda k: per_spec[k]["parse"])
        _, worst_spec, worst_start = next(s for s in SPECS if s[0] == worst_label)
        singles = []
        for i in range(200):
            plan = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON)"
                " SELECT catbird.cb_next_cron_tick(%s, %s::timestamptz"
                " + %s * interval '13 seconds')",
                (worst_spec, worst_start, i),
            ).fetchone()
            assert plan is not None
            singles.append(float(plan[0][0]["Execution Time"]) * 1000)  # ms -> us
    for label, spec, _ in SPECS:
        r = per_spec[label]
        rows.append(
            [
                label,
                f"`{spec if len(spec) < 40 else spec[:37] + '...'}`",
                fmt_rate(1e6 / r["parse"]),
                fmt_us(r["parse"]),
                fmt_rate(1e6 / r["parsed"]),
                fmt_us(r["parsed"]),
                fmt_ratio(ratio(1e6 / r["parse"], 1e6 / r["fn"])),
                fmt_ratio(ratio(1e6 / r["parsed"], 1e6 / r["fn"])),
            ]
        )
    mean = {
        k: sum(per_spec[s][k] for s in per_spec) / len(per_spec)
        for k in ("parse", "parsed", "fn", "inline")
    }
    rows.append(
        [
            "**mix (mean)**",
            "",
            fmt_rate(1e6 / mean["parse"]),
            fmt_us(mean["parse"]),
            fmt_rate(1e6 / mean["parsed"]),
            fmt_us(mean["parsed"]),
            fmt_ratio(ratio(1e6 / mean["parse"], 1e6 / mean["fn"])),
            fmt_ratio(ratio(1e6 / mean["parsed"], 1e6 / mean["fn"])),
        ]
    )
    print_table(
        f"(a) next tick: calls/s in one statement ({n:,} calls per statement, median of {rounds})",
        [
            "spec",
            "cron",
            "parse+next /s",
            "us/call",
            "next (parsed) /s",
            "us/call",
            "ratio parse+next",
            "ratio parsed",
        ],
        rows,
        right=(2, 3, 4, 5, 6, 7),
        notes=[
            f"Raw ceilings: trivial PL/pgSQL function {fmt_rate(1e6 / mean['fn'])} calls/s "
            f"({fmt_us(mean['fn'])} us/call); the same expression inline "
            f"{fmt_rate(1e6 / mean['inline'])} /s ({fmt_us(mean['inline'])} us/row). "
            "Ratios are to the trivial function.",
            f"Worst spec: {worst_label} (`{worst_spec}`), "
            f"{fmt_us(per_spec[worst_label]['parse'])} us "
            f"per parse+next; slowest of 200 single calls timed by EXPLAIN ANALYZE: "
            f"{fmt_us(max(singles))} us (median {fmt_us(median(singles))} us).",
        ],
    )


def measure_due(dsn: str, count: int) -> None:
    with connect(dsn) as conn:
        with stopwatch(f"create {count:,} tasks and schedules"):
            conn.execute("SELECT set_config('catbird.fake_now', %s, false)", (T0.isoformat(),))
            with conn.transaction():
                conn.execute(
                    "SELECT catbird.cb_create_task('sched_' || g), "
                    "catbird.cb_create_task_schedule('sched_' || g, '* * * * *',"
                    " jsonb_build_object('n', g))"
                    " FROM generate_series(1, %s) g",
                    (count,),
                )
            conn.execute("VACUUM ANALYZE catbird.cb_schedules")
            conn.execute("VACUUM ANALYZE catbird.cb_task_runs")
        due = T0 + dt.timedelta(minutes=1, seconds=5)
        conn.execute("SELECT set_config('catbird.fake_now', %s, false)", (due.isoformat(),))
        calls = []
        fired = 0
        t0 = time.perf_counter()
        while True:
            c0 = time.perf_counter()
            row = conn.execute("SELECT catbird.cb_execute_due_task_schedules()").fetchone()
            calls.append(time.perf_counter() - c0)
            assert row is not None
            if row[0] == 0:
                break
            fired += row[0]
        elapsed = time.perf_counter() - t0
        check = conn.execute(
            "SELECT count(*), count(DISTINCT r.concurrency_key), count(DISTINCT r.task_id),"
            " (SELECT count(*) FROM catbird.cb_schedules s"
            "   WHERE s.next_run_at = %s AND s.last_run_at = %s)"
            " FROM catbird.cb_task_runs r",
            (T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=1)),
        ).fetchone()
        assert check is not None
        runs, keys, tasks, advanced = check
        again = conn.execute("SELECT catbird.cb_execute_due_task_schedules()").fetchone()
        exactly_once = fired == runs == keys == tasks == advanced == count and again == (0,)

        # Raw ceiling: the same rows written in plain SQL, 1,000 per transaction.
        conn.execute(
            "CREATE TEMP TABLE raw_sched (id int PRIMARY KEY, next_run_at timestamptz, input jsonb)"
        )
        conn.execute(
            "CREATE TEMP TABLE raw_runs (id bigserial PRIMARY KEY, sched int, key text,"
            " input jsonb,"
            " status text, created_at timestamptz)"
        )
        conn.execute(
            "INSERT INTO raw_sched SELECT g, %s, jsonb_build_object('n', g)"
            " FROM generate_series(1, %s) g",
            (T0 + dt.timedelta(minutes=1), count),
        )
        r0 = time.perf_counter()
        for lo in range(1, count + 1, 1000):
            with conn.transaction():
                conn.execute(
                    "INSERT INTO raw_runs (sched, key, input, status, created_at)"
                    " SELECT id, 'sched:' || id || ':' || next_run_at, input, 'queued', now()"
                    " FROM raw_sched WHERE id BETWEEN %s AND %s FOR UPDATE SKIP LOCKED",
                    (lo, lo + 999),
                )
                conn.execute(
                    "UPDATE raw_sched SET next_run_at = next_run_at + interval '1 minute'"
                    " WHERE id BETWEEN %s AND %s",
                    (lo, lo + 999),
                )
        raw = time.perf_counter() - r0
    print_table(
        f"(b) {count:,} schedules due at once",
        ["what", "time (s)", "runs/s", "ratio to raw"],
        [
            [
                f"cb_execute_due_task_schedules() x {len(calls)} calls",
                f"{elapsed:.2f}",
                fmt_rate(fired / elapsed),
                fmt_ratio(ratio(fired / elapsed, count / raw)),
            ],
            ["raw INSERT + UPDATE of the same rows", f"{raw:.2f}", fmt_rate(count / raw), "1.00"],
        ],
        right=(1, 2, 3),
        notes=[
            f"Each fired exactly once: {'yes' if exactly_once else 'NO'} ({runs:,} runs, "
            f"{keys:,} distinct "
            f"concurrency keys, {tasks:,} tasks, {advanced:,} schedules advanced to the next tick; "
            "a further call fires nothing). Slowest call "
            f"{max(calls) * 1000:.0f} ms (max_schedules 1,000 per call).",
        ],
    )
    if not exactly_once:
        raise SystemExit("a schedule did not fire exactly once")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="benchmark this database instead of a fresh embedded PG 18")
    parser.add_argument("--schedules", type=int, default=10_000, help="schedules due at once (b)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args(argv)
    n, rounds = (2_000, 1) if args.quick else (20_000, 3)
    count = min(args.schedules, 1_000) if args.quick else args.schedules

    with stopwatch("start server"):
        server = start_server(args.dsn)
    try:
        dsn = server.dsn
        print_header("schedule", server)
        print(f"- load average at start (other work on this machine): {load_average()}")
        sys.stdout.flush()
        measure_next_tick(dsn, n, rounds)
        measure_due(dsn, count)
        print()
        print(f"- load average at end: {load_average()}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

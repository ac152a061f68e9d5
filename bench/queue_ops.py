"""Queue hot paths, server side: CPU and elapsed time per message.

Run:  python bench/queue_ops.py [--dsn DSN] [--baseline-sql FILE] [--ops N] [--rounds R]

Each shape runs --ops times (quantity 100: --ops / 5 times) in a DO loop on the
server, with a COMMIT after every statement that is its own transaction in
real use (read, then delete: two), so no client round trip is counted:

    send 1 / 100      cb_send(q, body | bodies)      raw INSERT ... RETURNING id
    read + delete     cb_read(q, n, 30000);          raw SKIP LOCKED claim setting vt;
                      cb_delete(q, ids)              DELETE ids
    pop 1 / 100       cb_pop(q, n)                   raw SKIP LOCKED claim + DELETE, 1 commit

"CPU" is the CPU time of the backend read from /proc, which does not depend
on other load on the machine (the machine these figures come from is shared);
"elapsed" is the wall time of the loop per message, with commits not waiting
for the WAL flush (synchronous_commit off in this session), so it is the
server's work plus any wait for a CPU. Every figure is the median over rounds
that run the systems in turns (order flipped every round).

With --baseline-sql (a built install script, e.g. ``git show
REV:python/catbird/sql/catbird--0.2.0.sql > before.sql``) the same server also
gets a database with that engine, measured alongside: before / after in one run.
Without --dsn a fresh embedded PostgreSQL 18 is started; with --dsn (a
superuser DSN) the databases catbird_ops_* are created there and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
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
    median,
    print_header,
    print_table,
    ratio,
    source_sql,
    start_server,
    stopwatch,
)

BODY = {"order_id": 184467, "customer": "cus_9f3a1c", "amount": {"currency": "EUR", "value": 129.9}}
QUEUE = "ops"
RAW_SETUP = """
CREATE TABLE bench_raw (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vt      timestamptz NOT NULL DEFAULT now(),
    read_ct int NOT NULL DEFAULT 0,
    body    jsonb NOT NULL
)
"""
RAW_POP = (
    "WITH c AS (SELECT id FROM bench_raw ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED),"
    " d AS (DELETE FROM bench_raw r USING c WHERE r.id = c.id RETURNING r.*)"
    " SELECT array_agg(d.id) INTO ids FROM d; COMMIT;"
)
# One operation as PL/pgSQL run in a DO loop, per shape: (catbird, raw). {n}
# is the quantity; "ids" is a bigint[] variable. A COMMIT follows every
# statement that is a transaction of its own in real use (read and delete are
# two), so dead rows and commits cost what they cost in production.
SHAPES: list[tuple[str, int, str, str, bool]] = [
    (
        "send 1",
        1,
        "PERFORM catbird.cb_send('ops', '{{\"a\": 1}}'::jsonb); COMMIT;",
        "INSERT INTO bench_raw (body) VALUES ('{{\"a\": 1}}') RETURNING id INTO id1; COMMIT;",
        False,
    ),
    (
        "send 100",
        100,
        "PERFORM catbird.cb_send('ops', array_fill('{{\"a\": 1}}'::jsonb, ARRAY[{n}])); COMMIT;",
        "WITH i AS (INSERT INTO bench_raw (body)"
        " SELECT '{{\"a\": 1}}' FROM generate_series(1, {n}) RETURNING id)"
        " SELECT array_agg(i.id) INTO ids FROM i; COMMIT;",
        False,
    ),
    (
        "read 1 + delete",
        1,
        "ids := ARRAY(SELECT id FROM catbird.cb_read('ops', {n}, 30000)); COMMIT;"
        " PERFORM catbird.cb_delete('ops', ids); COMMIT;",
        "WITH c AS (SELECT id FROM bench_raw WHERE vt <= clock_timestamp()"
        " ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED), u AS (UPDATE bench_raw r"
        " SET vt = clock_timestamp() + interval '30 seconds', read_ct = r.read_ct + 1"
        " FROM c WHERE r.id = c.id RETURNING r.*) SELECT array_agg(u.id) INTO ids FROM u;"
        " COMMIT;"
        " DELETE FROM bench_raw WHERE id = ANY (ids); COMMIT;",
        True,
    ),
    (
        "read 100 + delete",
        100,
        "ids := ARRAY(SELECT id FROM catbird.cb_read('ops', {n}, 30000)); COMMIT;"
        " PERFORM catbird.cb_delete('ops', ids); COMMIT;",
        "WITH c AS (SELECT id FROM bench_raw WHERE vt <= clock_timestamp()"
        " ORDER BY id LIMIT {n} FOR UPDATE SKIP LOCKED), u AS (UPDATE bench_raw r"
        " SET vt = clock_timestamp() + interval '30 seconds', read_ct = r.read_ct + 1"
        " FROM c WHERE r.id = c.id RETURNING r.*) SELECT array_agg(u.id) INTO ids FROM u;"
        " COMMIT;"
        " DELETE FROM bench_raw WHERE id = ANY (ids); COMMIT;",
        True,
    ),
    (
        "pop 1",
        1,
        "PERFORM catbird.cb_pop('ops', {n}); COMMIT;",
        RAW_POP,
        True,
    ),
    (
        "pop 100",
        100,
        "PERFORM catbird.cb_pop('ops', {n}); COMMIT;",
        RAW_POP,
        True,
    ),
]
LOOP = (
    "DO $do$ DECLARE ids bigint[]; id1 bigint;"
    " BEGIN FOR i IN 1..{calls} LOOP {body} END LOOP; END $do$"
)


def fill(conn: Conn, system: str, count: int) -> None:
    if system == "raw":
        conn.execute(
            "INSERT INTO bench_raw (body) SELECT %s FROM generate_series(1, %s)",
            (Jsonb(BODY), count),
        )
    else:
        for start in range(0, count, 1000):
            k = min(1000, count - start)
            conn.execute(
                "SELECT catbird.cb_send(%s::text, %s::jsonb[])", (QUEUE, [Jsonb(BODY)] * k)
            )


def measure(conn: Conn, body: str, n: int, calls: int) -> tuple[float, float]:
    """(server CPU us per message, elapsed us per message) of ``calls`` operations."""
    pid = backend_pid(conn)
    cpu0, t0 = backend_cpu(pid), time.perf_counter()
    conn.execute(LOOP.format(calls=calls, body=body.format(n=n)), prepare=False)
    wall, cpu = time.perf_counter() - t0, backend_cpu(pid) - cpu0
    return cpu / (calls * n) * 1e6, wall / (calls * n) * 1e6


def database_dsn(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--dsn", help="a superuser DSN of an existing server (default: embedded PG 18)"
    )
    parser.add_argument(
        "--baseline-sql", type=Path, help="built install script of the 'before' engine"
    )
    parser.add_argument("--ops", type=int, default=2000, help="operations of quantity 1 per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with stopwatch("start server"):
        server = start_server(None) if args.dsn is None else None
    admin_dsn = args.dsn or database_dsn(server.dsn, "postgres")  # type: ignore[union-attr]
    systems: dict[str, str] = {}
    created: list[str] = []
    try:
        with connect(admin_dsn) as admin:
            for label, script in [("after", source_sql())] + (
                [("before", args.baseline_sql.read_text(encoding="utf-8"))]
                if args.baseline_sql
                else []
            ):
                db = f"catbird_ops_{label}"
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
                created.append(db)
                systems[label] = database_dsn(admin_dsn, db)
                with connect(systems[label]) as conn, conn.transaction():
                    if "CREATE SCHEMA catbird" not in script:
                        conn.execute("CREATE SCHEMA catbird")
                    conn.execute(script.encode(), prepare=False)
                    conn.execute(RAW_SETUP)
                    conn.execute("SELECT catbird.cb_create_queue(%s)", (QUEUE,))
        labels = ["after"] + (["before"] if "before" in systems else [])
        print_header("queue operations", server or _Existing(admin_dsn))  # type: ignore[arg-type]
        print(f"- load average at start (other work on this machine): {load_average()}")
        sys.stdout.flush()

        runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        conns = {label: connect(dsn) for label, dsn in systems.items()}
        for c in conns.values():
            c.execute("SET synchronous_commit = off")
        try:
            for rnd in range(args.rounds):
                print(f"round {rnd + 1}/{args.rounds}", file=sys.stderr, flush=True)
                for shape, n, cb_op, raw_op, consumes in SHAPES:
                    calls = max(args.ops // 5, 20) if n > 1 else args.ops
                    order = [("raw", "after", raw_op)] + [(lb, lb, cb_op) for lb in labels]
                    if rnd % 2:
                        order.reverse()
                    for system, db_label, op in order:
                        conn = conns[db_label]
                        if consumes:
                            fill(conn, system, calls * n + n)
                        conn.execute(
                            "VACUUM (ANALYZE) bench_raw"
                            if system == "raw"
                            else "VACUUM (ANALYZE) catbird.cb_messages"
                        )
                        runs.setdefault((shape, system), []).append(measure(conn, op, n, calls))
                        if consumes:  # leave nothing behind for the next shape
                            conn.execute(
                                "TRUNCATE bench_raw"
                                if system == "raw"
                                else "SELECT catbird.cb_purge_queue('ops')"
                            )
        finally:
            for c in conns.values():
                c.close()

        rows = []
        for shape, *_ in SHAPES:
            raw_cpu = median([r[0] for r in runs[(shape, "raw")]])
            raw_elapsed = median([r[1] for r in runs[(shape, "raw")]])
            row = [shape, fmt_us(raw_cpu), fmt_us(raw_elapsed)]
            for label in labels:
                cpu = median([r[0] for r in runs[(shape, label)]])
                wall = median([r[1] for r in runs[(shape, label)]])
                row += [
                    fmt_us(cpu),
                    fmt_us(wall),
                    fmt_ratio(ratio(raw_cpu, cpu)),
                    fmt_ratio(ratio(raw_elapsed, wall)),
                ]
            rows.append(row)
        headers = ["shape (per message)", "raw CPU us", "raw elapsed us"]
        for label in labels:
            headers += [
                f"{label} CPU us",
                f"{label} elapsed us",
                f"{label} CPU ratio",
                f"{label} elapsed ratio",
            ]
        print_table(
            f"server CPU and elapsed time per message, median of {args.rounds} rounds",
            headers,
            rows,
            right=range(1, len(headers)),
            notes=[
                "ratio = raw / catbird (1.00: as cheap as raw PostgreSQL of the same shape; "
                "above 1: cheaper). 'after' is the engine in the tree"
                + (f", 'before' {args.baseline_sql}" if args.baseline_sql else "")
                + "."
            ],
        )
        print()
        print(f"- load average at end: {load_average()}")
    finally:
        with contextlib.suppress(psycopg.Error), connect(admin_dsn) as admin:
            for db in created:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
        if server is not None:
            server.stop()
    return 0


class _Existing:
    """print_header's view of a server given by DSN."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.description = "existing server; engines installed as plain scripts"


if __name__ == "__main__":
    raise SystemExit(main())

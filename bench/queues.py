"""Queue benchmark: catbird's send/read/delete/publish against raw PostgreSQL.

Run:  python bench/queues.py [--dsn DSN] [--seconds N] [--quick] [--apply-sql FILE]

Without --dsn it starts a fresh embedded PostgreSQL 18 (default settings,
durable commits) in a temporary directory and removes it afterwards. Every
figure is measured on one server in one run and printed as msgs/s and as a
ratio to the raw PostgreSQL ceiling of the same shape measured alongside:

(a) raw ceilings on a bare table ``bench_raw`` (id, vt, read_ct, body; primary
    key only): INSERT ... RETURNING of 1 and of 100 rows per statement; a
    1-commit claim (DELETE of 100 rows picked by FOR UPDATE SKIP LOCKED) and a
    2-commit claim (SKIP LOCKED claim that sets a visibility timestamp, then
    DELETE by ids: the shape of pgmq's and catbird's read + delete);
(b) catbird: cb_send (1), cb_send (batch of 100), cb_read(100) + cb_delete(ids),
    cb_pop(100) (claim and delete in one statement), each divided by the raw
    ceiling of the same shape and connection count (1 and 4 connections);
    cb_pop is also divided by the 2-commit raw claim, the shape of pgmq's
    read + delete (pgmq's own SQL is not available offline, so the raw shape
    stands in for it);
(c) cb_read(queue, 1, 30000) + cb_delete latency at several queue depths
    (1,000 / 100,000 / 1,000,000), against the raw 2-commit claim at the same
    depths;
(d) cb_publish with 10,000 bindings present against 10 bindings present.

Throughput runs are interleaved: in each round every catbird workload runs
right next to its ceiling (order flipped every round), and the ratio printed
is the median of the per-round ratios, so other load on the machine affects
both sides alike. Latency samples rotate over depths and systems in chunks of
100 for the same reason. Each client connection is its own process (a 2-core
machine and the GIL would otherwise cap the client); "client cores" shows the
CPU the clients used. "server CPU us/msg" is the CPU time of the server
backends per message, read from /proc when the server is local: it does not
depend on other load and shows where the engine spends more than raw SQL.

--apply-sql runs a SQL file after catbird is installed, to measure a proposed
engine change (CREATE OR REPLACE FUNCTION ...) with the same harness.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Conn,
    Heartbeat,
    RunResult,
    Step,
    StepFactory,
    connect,
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    fmt_us,
    load_average,
    median,
    percentile,
    print_header,
    print_table,
    ratio,
    run_workers,
    start_server,
    stopwatch,
    try_checkpoint,
)

# A small, realistic message body (about 120 bytes of JSON).
BODY = {
    "order_id": 184467,
    "customer": "cus_9f3a1c",
    "amount": {"currency": "EUR", "value": 129.9},
    "items": [{"sku": "A-100", "qty": 2}, {"sku": "B-7", "qty": 1}],
}
BATCH = 100
READ_BATCH = 100
HIDE_FOR_MS = 30_000
FILL_BATCH = 1_000
QUEUE = "bench_q"
LAT_QUEUE = "bench_lat"
TOPIC = "orders.eu.created"
# Issue 13's targets, per workload (ratio to its ceiling of the same shape).
TARGETS = {"cb_send_1": 0.9, "cb_send_n": 0.9, "cb_read_delete": 1.0, "cb_pop": 1.0}
POP_OVER_TWO_COMMITS_TARGET = 1.5  # cb_pop against pgmq's read + delete shape

# ----------------------------------------------------------------------------- SQL

RAW_SETUP = """
DROP TABLE IF EXISTS bench_raw;
CREATE TABLE bench_raw (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vt      timestamptz NOT NULL DEFAULT now(),
    read_ct int NOT NULL DEFAULT 0,
    body    jsonb NOT NULL
);
"""
RAW_INSERT_1 = "INSERT INTO bench_raw (body) VALUES (%s) RETURNING id"
RAW_INSERT_N = "INSERT INTO bench_raw (body) SELECT b FROM unnest(%s::jsonb[]) AS b RETURNING id"
# The next three are templates: {table} is bench_raw, or a latency table in (c).
RAW_FILL = "INSERT INTO {table} (body) SELECT %s::jsonb FROM generate_series(1, %s)"
RAW_CLAIM_DELETE = """
WITH c AS (SELECT id FROM bench_raw ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
DELETE FROM bench_raw r USING c WHERE r.id = c.id RETURNING r.*
"""
RAW_CLAIM_HIDE = """
WITH c AS (
    SELECT id FROM {table} WHERE vt <= clock_timestamp()
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
)
UPDATE {table} r SET vt = clock_timestamp() + make_interval(secs => %s / 1000.0),
                       read_ct = r.read_ct + 1
FROM c WHERE r.id = c.id RETURNING r.*
"""
RAW_DELETE_IDS = "DELETE FROM {table} WHERE id = ANY (%s)"
BENCH_RAW = sql.Identifier("bench_raw")

CB_SEND_1 = "SELECT catbird.cb_send(%s::text, %s::jsonb)"
CB_SEND_N = "SELECT catbird.cb_send(%s::text, %s::jsonb[])"
CB_READ = "SELECT * FROM catbird.cb_read(%s, %s, %s)"
CB_DELETE = "SELECT catbird.cb_delete(%s::text, %s::bigint[])"
CB_POP = "SELECT * FROM catbird.cb_pop(%s, %s)"
CB_PUBLISH_1 = "SELECT catbird.cb_publish(%s::text, %s::jsonb)"
BIND_MANY = "SELECT catbird.cb_bind(q, p) FROM unnest(%s::text[], %s::text[]) AS t(q, p)"


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    seconds: float
    rounds: int
    connections: tuple[int, ...]
    depths: tuple[int, ...]
    latency_samples: int
    bindings: int
    binding_queues: int
    checkpoints: bool
    """CHECKPOINT before each throughput run (same WAL state for every run)."""
    first_guess: float
    """msgs/s assumed before a draining workload was measured (sizes its fill)."""

    @staticmethod
    def full(seconds: float | None) -> Config:
        return Config(
            seconds=5.0 if seconds is None else seconds,
            rounds=3,
            connections=(1, 4),
            depths=(1_000, 100_000, 1_000_000),
            latency_samples=2_000,
            bindings=10_000,
            binding_queues=100,
            checkpoints=True,
            first_guess=60_000.0,
        )

    @staticmethod
    def quick(seconds: float | None) -> Config:
        return Config(
            seconds=0.3 if seconds is None else seconds,
            rounds=1,
            connections=(1, 4),
            depths=(1_000, 10_000),
            latency_samples=200,
            bindings=1_000,
            binding_queues=20,
            checkpoints=False,
            first_guess=20_000.0,
        )


# ----------------------------------------------------------------------------- workloads


def _bodies(n: int) -> list[Jsonb]:
    return [Jsonb(BODY) for _ in range(n)]


def raw_insert_1(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()
    params = (Jsonb(BODY),)

    def step() -> int:
        cur.execute(RAW_INSERT_1, params)
        cur.fetchall()
        return 1

    return step


def raw_insert_n(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()
    params = (_bodies(BATCH),)

    def step() -> int:
        cur.execute(RAW_INSERT_N, params)
        return len(cur.fetchall())

    return step


def raw_claim_delete(conn: Conn, _i: int) -> Step:
    """1 commit: DELETE ... RETURNING of the rows a SKIP LOCKED claim picked."""
    cur = conn.cursor()

    def step() -> int:
        cur.execute(RAW_CLAIM_DELETE, (READ_BATCH,))
        return len(cur.fetchall())

    return step


def raw_claim_hide_delete(conn: Conn, _i: int) -> Step:
    """2 commits: claim (set vt, read_ct) then delete by ids - pgmq's read + delete."""
    cur = conn.cursor()
    claim = sql.SQL(RAW_CLAIM_HIDE).format(table=BENCH_RAW)
    delete = sql.SQL(RAW_DELETE_IDS).format(table=BENCH_RAW)

    def step() -> int:
        cur.execute(claim, (READ_BATCH, HIDE_FOR_MS))
        rows = cur.fetchall()
        if not rows:
            return 0
        cur.execute(delete, ([r[0] for r in rows],))
        return len(rows)

    return step


def cb_send_1(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()
    params = (QUEUE, Jsonb(BODY))

    def step() -> int:
        cur.execute(CB_SEND_1, params)
        cur.fetchall()
        return 1

    return step


def cb_send_n(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()
    params = (QUEUE, _bodies(BATCH))

    def step() -> int:
        cur.execute(CB_SEND_N, params)
        row = cur.fetchone()
        return len(row[0]) if row else 0

    return step


def cb_read_delete(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()

    def step() -> int:
        cur.execute(CB_READ, (QUEUE, READ_BATCH, HIDE_FOR_MS))
        rows = cur.fetchall()
        if not rows:
            return 0
        cur.execute(CB_DELETE, (QUEUE, [r[0] for r in rows]))
        cur.fetchall()
        return len(rows)

    return step


def cb_pop(conn: Conn, _i: int) -> Step:
    """1 commit: cb_pop claims and deletes READ_BATCH messages."""
    cur = conn.cursor()

    def step() -> int:
        cur.execute(CB_POP, (QUEUE, READ_BATCH))
        return len(cur.fetchall())

    return step


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    short: str
    factory: StepFactory
    table: str
    """The table it works on (vacuumed before each run)."""
    drains: bool
    """Consumes messages: the table is topped up before each run."""


RAW_WORKLOADS = (
    Workload(
        "raw_insert_1",
        "INSERT 1 row ... RETURNING id",
        "raw INSERT 1",
        raw_insert_1,
        "bench_raw",
        False,
    ),
    Workload(
        "raw_insert_n",
        f"INSERT {BATCH} rows ... RETURNING id",
        f"raw INSERT {BATCH}",
        raw_insert_n,
        "bench_raw",
        False,
    ),
    Workload(
        "raw_claim_delete",
        f"claim {READ_BATCH} SKIP LOCKED + DELETE, 1 commit",
        "raw claim+delete, 1 commit",
        raw_claim_delete,
        "bench_raw",
        True,
    ),
    Workload(
        "raw_claim_hide_delete",
        f"claim {READ_BATCH} SKIP LOCKED (set vt) + DELETE ids, 2 commits",
        "raw claim, delete: 2 commits",
        raw_claim_hide_delete,
        "bench_raw",
        True,
    ),
)
CB_WORKLOADS = (
    Workload(
        "cb_send_1",
        "cb_send (1 message)",
        "cb_send 1",
        cb_send_1,
        "catbird.cb_messages",
        False,
    ),
    Workload(
        "cb_send_n",
        f"cb_send (batch of {BATCH})",
        f"cb_send batch {BATCH}",
        cb_send_n,
        "catbird.cb_messages",
        False,
    ),
    Workload(
        "cb_read_delete",
        f"cb_read({READ_BATCH}) + cb_delete(ids), 2 commits",
        f"cb_read {READ_BATCH}, cb_delete",
        cb_read_delete,
        "catbird.cb_messages",
        True,
    ),
    Workload(
        "cb_pop",
        f"cb_pop({READ_BATCH}), 1 commit",
        f"cb_pop {READ_BATCH}",
        cb_pop,
        "catbird.cb_messages",
        True,
    ),
)
# catbird workload -> the raw ceiling of the same shape it is divided by.
CEILING_OF = {
    "cb_send_1": "raw_insert_1",
    "cb_send_n": "raw_insert_n",
    "cb_read_delete": "raw_claim_hide_delete",
    "cb_pop": "raw_claim_delete",
}


# ----------------------------------------------------------------------------- fills


def fill_raw(conn: Conn, n: int) -> None:
    if n > 0:
        conn.execute(sql.SQL(RAW_FILL).format(table=BENCH_RAW), (Jsonb(BODY), n))


def fill_catbird(conn: Conn, queue: str, n: int) -> None:
    """Enqueue ``n`` messages through cb_send batches of FILL_BATCH (one commit each)."""
    full = _bodies(FILL_BATCH)
    cur = conn.cursor()
    with conn.pipeline():
        while n > 0:
            k = min(n, FILL_BATCH)
            cur.execute(CB_SEND_N, (queue, full if k == FILL_BATCH else full[:k]))
            n -= k


def raw_depth(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM bench_raw").fetchone()
    return int(row[0]) if row else 0


def catbird_depth(conn: Conn, queue: str) -> int:
    row = conn.execute("SELECT depth FROM catbird.cb_get_queue(%s)", (queue,)).fetchone()
    return int(row[0]) if row else 0


def fill_catbird_parallel(dsn: str, queue: str, n: int, processes: int = 2) -> None:
    """fill_catbird from several client processes (a million messages take a while)."""
    if n <= 0:
        return
    ctx = multiprocessing.get_context("fork")
    share = -(-n // processes)
    procs = []
    for i in range(processes):
        k = min(share, n - i * share)
        if k > 0:
            procs.append(ctx.Process(target=_fill_process, args=(dsn, queue, k)))
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"filling {queue} failed (exit code {p.exitcode})")


def _fill_process(dsn: str, queue: str, n: int) -> None:
    with connect(dsn) as conn:
        fill_catbird(conn, queue, n)


def prepare_run(conn: Conn, dsn: str, wl: Workload, needed: int, cfg: Config) -> None:
    """Top up a draining workload's table, then VACUUM ANALYZE and CHECKPOINT."""
    if wl.drains:
        if wl.table == "bench_raw":
            fill_raw(conn, needed - raw_depth(conn))
        else:
            fill_catbird_parallel(dsn, QUEUE, needed - catbird_depth(conn, QUEUE))
    conn.execute(f"VACUUM (ANALYZE) {wl.table}")
    if cfg.checkpoints:
        try_checkpoint(conn)


# ----------------------------------------------------------------------------- (a)+(b)


@dataclass
class Throughput:
    runs: dict[tuple[str, int], list[RunResult]] = field(default_factory=dict)

    def add(self, key: str, conns: int, res: RunResult) -> None:
        self.runs.setdefault((key, conns), []).append(res)

    def rate(self, key: str, conns: int) -> float:
        return median([r.rate for r in self.runs.get((key, conns), [])])

    def client_cores(self, key: str, conns: int) -> float:
        return median([r.client_cores for r in self.runs.get((key, conns), [])])

    def server_us(self, key: str, conns: int) -> float:
        return median([r.server_us_per_msg for r in self.runs.get((key, conns), [])])

    def paired_ratio(self, key: str, ceiling: str, conns: int) -> float:
        """Median over rounds of (rate / ceiling's rate in the same round)."""
        pairs = zip(
            self.runs.get((key, conns), []), self.runs.get((ceiling, conns), []), strict=True
        )
        return median([ratio(a.rate, b.rate) for a, b in pairs])

    def drained(self, key: str, conns: int) -> bool:
        return any(r.drained for r in self.runs.get((key, conns), []))


# Measured back to back in each round, so that each catbird figure and its
# ceiling see the same moment of the machine; the order flips every round.
GROUPS = (
    ("raw_insert_1", "cb_send_1"),
    ("raw_insert_n", "cb_send_n"),
    ("raw_claim_delete", "raw_claim_hide_delete", "cb_read_delete", "cb_pop"),
)


def measure_throughput(dsn: str, cfg: Config) -> Throughput:
    out = Throughput()
    expected: dict[tuple[str, int], float] = {}
    by_key = {wl.key: wl for wl in RAW_WORKLOADS + CB_WORKLOADS}
    with connect(dsn) as conn:
        for rnd in range(cfg.rounds):
            print(f"round {rnd + 1}/{cfg.rounds}", file=sys.stderr, flush=True)
            for conns in cfg.connections:
                for group in GROUPS:
                    for key in group if rnd % 2 == 0 else reversed(group):
                        wl = by_key[key]
                        # Enough messages for the whole run at the rate seen so far (or a
                        # first guess), so that a draining run does not run dry.
                        guess = expected.get((key, conns), cfg.first_guess)
                        needed = int(guess * cfg.seconds * 1.5) + 10 * READ_BATCH * conns
                        prepare_run(conn, dsn, wl, needed, cfg)
                        res = run_workers(dsn, wl.factory, connections=conns, seconds=cfg.seconds)
                        expected[(key, conns)] = max(res.rate, guess if res.drained else 0.0)
                        out.add(key, conns, res)
                        print(
                            f"  {key:<22} x{conns}: {fmt_rate(res.rate):>9} msgs/s"
                            f"{'  (ran dry)' if res.drained else ''}",
                            file=sys.stderr,
                            flush=True,
                        )
    return out


def report_throughput(tp: Throughput, cfg: Config) -> None:
    rows = []
    for wl in RAW_WORKLOADS:
        for conns in cfg.connections:
            rows.append(
                [
                    wl.label,
                    str(conns),
                    fmt_rate(tp.rate(wl.key, conns)),
                    fmt_us(tp.server_us(wl.key, conns)),
                    f"{tp.client_cores(wl.key, conns):.2f}",
                ]
            )
    print_table(
        "(a) raw PostgreSQL ceilings (bench_raw: id identity PK, vt, read_ct, body jsonb)",
        ["workload", "conns", "msgs/s", "server CPU us/msg", "client cores"],
        rows,
        right=(1, 2, 3, 4),
    )

    short = {wl.key: wl.short for wl in RAW_WORKLOADS + CB_WORKLOADS}
    rows = []
    notes = [
        "ratio = median over the rounds of catbird msgs/s / raw msgs/s measured back to back "
        "(same shape, same connections); "
        "CPU ratio = raw server CPU per message / catbird's (1.00: as cheap as raw)."
    ]
    for wl in CB_WORKLOADS:
        ceiling = CEILING_OF[wl.key]
        for conns in cfg.connections:
            cb = tp.rate(wl.key, conns)
            raw = tp.rate(ceiling, conns)
            r = tp.paired_ratio(wl.key, ceiling, conns)
            cb_us = tp.server_us(wl.key, conns)
            raw_us = tp.server_us(ceiling, conns)
            rows.append(
                [
                    wl.short,
                    str(conns),
                    fmt_rate(cb),
                    short[ceiling],
                    fmt_rate(raw),
                    fmt_ratio(r),
                    f"{'yes' if r >= TARGETS[wl.key] else '**no**'} (>= {TARGETS[wl.key]:.2f})",
                    f"{fmt_us(cb_us)} / {fmt_us(raw_us)}",
                    fmt_ratio(ratio(raw_us, cb_us)),
                    f"{tp.client_cores(wl.key, conns):.2f}",
                ]
            )
    for conns in cfg.connections:
        r1 = tp.paired_ratio("cb_read_delete", "raw_claim_delete", conns)
        notes.append(
            f"cb_read + cb_delete ({conns} conn) against the 1-commit raw claim "
            f"(DELETE ... RETURNING: fewer commits, not the same shape): {fmt_ratio(r1)}"
        )
        r2 = tp.paired_ratio("cb_pop", "raw_claim_hide_delete", conns)
        verdict = "met" if r2 >= POP_OVER_TWO_COMMITS_TARGET else "**missed**"
        notes.append(
            f"cb_pop ({conns} conn) against the 2-commit raw claim + delete (pgmq's read + "
            f"delete shape; target >= {POP_OVER_TWO_COMMITS_TARGET:.1f}): "
            f"{fmt_ratio(r2)}, {verdict}"
        )
    dry = [f"{k} x{c}" for (k, c) in tp.runs if tp.drained(k, c)]
    if dry:
        notes.append(
            "ran dry before the time was up (rate still valid, shorter run): " + ", ".join(dry)
        )
    print_table(
        "(b) catbird against the raw ceiling of the same shape (targets of issue 13)",
        [
            "catbird",
            "conns",
            "msgs/s",
            "divided by",
            "raw msgs/s",
            "ratio",
            "target met",
            "server us/msg cb / raw",
            "CPU ratio",
            "client cores",
        ],
        rows,
        right=(1, 2, 4, 5, 7, 8, 9),
        notes=notes,
    )


# ----------------------------------------------------------------------------- (c)


@dataclass(frozen=True)
class LatencyRow:
    depth: int
    cb_read: list[float]
    cb_pair: list[float]
    raw_claim: list[float]
    raw_pair: list[float]


@dataclass
class _LatencyTarget:
    """One queue (catbird) or table (raw) kept at one depth, with its samples."""

    claim: Callable[[], list[int]]
    delete: Callable[[list[int]], None]
    refill: Callable[[int], None]
    claims: list[float] = field(default_factory=list)
    pairs: list[float] = field(default_factory=list)

    def run(self, n: int, *, record: bool = True) -> None:
        """Claim 1 + delete ``n`` times, then put back (untimed) what was taken."""
        clock = time.perf_counter
        taken = 0
        for _ in range(n):
            t0 = clock()
            ids = self.claim()
            t1 = clock()
            self.delete(ids)
            t2 = clock()
            if record:
                self.claims.append(t1 - t0)
                self.pairs.append(t2 - t0)
            taken += len(ids)
        self.refill(taken)


def measure_latency(dsn: str, cfg: Config) -> list[LatencyRow]:
    """Claim latency at each depth, all depths present at once and sampled in turns.

    Every depth has its own catbird queue (all in catbird's one message table,
    as real queues are) and its own raw table. Samples are taken in chunks of
    100, rotating over depths and over catbird/raw, so that a burst of other
    load on the machine hits every column alike instead of one depth.
    """
    chunk = 100
    with connect(dsn) as conn:
        # The throughput runs leave messages behind; start from an empty queue.
        conn.execute("SELECT catbird.cb_purge_queue(%s)", (QUEUE,))
        cur = conn.cursor()
        targets: list[tuple[int, _LatencyTarget, _LatencyTarget]] = []
        for i, depth in enumerate(cfg.depths):
            queue = f"{LAT_QUEUE}_{i}"
            table = sql.Identifier(f"bench_raw_lat_{i}")
            conn.execute("SELECT catbird.cb_create_queue(%s)", (queue,))
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE bench_raw INCLUDING ALL)").format(table))
            raw_fill = sql.SQL(RAW_FILL).format(table=table)
            raw_claim = sql.SQL(RAW_CLAIM_HIDE).format(table=table)
            raw_delete = sql.SQL(RAW_DELETE_IDS).format(table=table)

            def cb_claim(queue: str = queue) -> list[int]:
                cur.execute(CB_READ, (queue, 1, HIDE_FOR_MS))
                return [r[0] for r in cur.fetchall()]

            def cb_delete(ids: list[int], queue: str = queue) -> None:
                cur.execute(CB_DELETE, (queue, ids))
                cur.fetchall()

            def cb_refill(n: int, queue: str = queue) -> None:
                fill_catbird(conn, queue, n)

            def r_claim(q: sql.Composed = raw_claim) -> list[int]:
                cur.execute(q, (1, HIDE_FOR_MS))
                return [r[0] for r in cur.fetchall()]

            def r_delete(ids: list[int], q: sql.Composed = raw_delete) -> None:
                cur.execute(q, (ids,))

            def r_refill(n: int, q: sql.Composed = raw_fill) -> None:
                if n > 0:
                    conn.execute(q, (Jsonb(BODY), n))

            with stopwatch(f"fill a queue and a table to depth {depth:,}"), Heartbeat():
                fill_catbird_parallel(dsn, queue, depth)
                r_refill(depth)
            targets.append(
                (
                    depth,
                    _LatencyTarget(cb_claim, cb_delete, cb_refill),
                    _LatencyTarget(r_claim, r_delete, r_refill),
                )
            )
        with stopwatch("vacuum, analyze, checkpoint"):
            conn.execute("VACUUM (ANALYZE) catbird.cb_messages")
            for i in range(len(cfg.depths)):
                conn.execute(
                    sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(f"bench_raw_lat_{i}"))
                )
            try_checkpoint(conn)
        for _, cb, raw in targets:  # warm-up: plans cached, pages in memory
            cb.run(20, record=False)
            raw.run(20, record=False)
        for turn in range(-(-cfg.latency_samples // chunk)):
            for _, cb, raw in targets:
                pair = (cb, raw) if turn % 2 == 0 else (raw, cb)
                for target in pair:
                    target.run(chunk)
        out = [LatencyRow(d, cb.claims, cb.pairs, raw.claims, raw.pairs) for d, cb, raw in targets]
        for row in out:
            print(
                f"  depth {row.depth:>9,}: cb_read p50 {fmt_ms(percentile(row.cb_read, 50))} ms, "
                f"raw claim p50 {fmt_ms(percentile(row.raw_claim, 50))} ms",
                file=sys.stderr,
                flush=True,
            )
        for i in range(len(cfg.depths)):
            conn.execute("SELECT catbird.cb_delete_queue(%s)", (f"{LAT_QUEUE}_{i}",))
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(f"bench_raw_lat_{i}")))
    return out


def report_latency(rows: Sequence[LatencyRow], cfg: Config) -> None:
    table = []
    for r in rows:
        table.append(
            [
                f"{r.depth:,}",
                fmt_ms(percentile(r.cb_read, 50)),
                fmt_ms(percentile(r.cb_read, 99)),
                fmt_ms(percentile(r.cb_pair, 50)),
                fmt_ms(percentile(r.cb_pair, 99)),
                fmt_ms(percentile(r.raw_claim, 50)),
                fmt_ms(percentile(r.raw_claim, 99)),
                fmt_ms(percentile(r.raw_pair, 50)),
                fmt_ms(percentile(r.raw_pair, 99)),
                fmt_ratio(ratio(percentile(r.raw_pair, 50), percentile(r.cb_pair, 50))),
            ]
        )
    first = percentile(rows[0].cb_read, 50) if rows else math.nan
    last = percentile(rows[-1].cb_read, 50) if rows else math.nan
    print_table(
        f"(c) claim latency by queue depth, 1 connection, {cfg.latency_samples:,} samples "
        "each (ms; depths kept constant, sampled in turns)",
        [
            "depth",
            "cb_read(1) p50",
            "p99",
            "read+delete p50",
            "p99",
            "raw claim(1) p50",
            "p99",
            "raw claim+delete p50",
            "p99",
            "ratio (raw/cb p50)",
        ],
        table,
        right=tuple(range(10)),
        notes=[
            f"cb_read p50 at the largest depth / at the smallest: "
            f"{fmt_ratio(ratio(last, first))} (flat = about 1)"
        ],
    )


# ----------------------------------------------------------------------------- (d)


def binding_plan(n_extra: int, n_queues: int) -> list[tuple[str, str]]:
    """``n_extra`` non-matching bindings for topic orders.eu.created, spread over queues.

    Per 10 bindings: 4 literal topics of their own (tenantK.orders.created), 2
    ``tenantK.*.created``, 1 ``tenantK.#``, 1 literal sibling (orders.eu.xK), 1
    ``orders.*.xK`` and 1 ``*.xK.created``: the last two share a literal prefix
    ('orders' or none) with the topic, so publish must test them (20%).
    """
    shapes = (
        "tenant{k}.orders.created",
        "tenant{k}.orders.created",
        "tenant{k}.billing.created",
        "tenant{k}.billing.updated",
        "tenant{k}.*.created",
        "tenant{k}.*.updated",
        "tenant{k}.#",
        "orders.eu.x{k}",
        "orders.*.x{k}",
        "*.x{k}.created",
    )
    return [
        (f"bench_t{k % n_queues:03d}", shapes[k % len(shapes)].format(k=k)) for k in range(n_extra)
    ]


# 10 bindings, 4 of them matching orders.eu.created (3 queues: bench_t002 matches twice).
BASE_BINDINGS = (
    ("bench_t000", "orders.eu.created"),
    ("bench_t001", "orders.*.created"),
    ("bench_t002", "orders.#"),
    ("bench_t002", "orders.eu.#"),
    ("bench_t003", "orders.us.created"),
    ("bench_t004", "orders.*.shipped"),
    ("bench_t005", "payments.#"),
    ("bench_t006", "*.eu.refunded"),
    ("bench_t007", "orders.eu.created.late"),
    ("bench_t008", "invoices.*"),
)


def cb_publish_1(conn: Conn, _i: int) -> Step:
    cur = conn.cursor()
    params = (TOPIC, Jsonb(BODY))

    def step() -> int:
        cur.execute(CB_PUBLISH_1, params)
        row = cur.fetchone()
        return 1 if row and row[0] else 0

    return step


@dataclass
class PublishResult:
    bindings: int
    deliveries: int
    runs: list[RunResult]


def measure_publish(dsn: str, cfg: Config) -> list[PublishResult]:
    queues = [f"bench_t{i:03d}" for i in range(cfg.binding_queues)]
    out: list[PublishResult] = []
    with connect(dsn) as conn:
        conn.execute("SELECT catbird.cb_create_queue(q) FROM unnest(%s::text[]) AS q", (queues,))
        qs, ps = zip(*BASE_BINDINGS, strict=True)
        conn.execute(BIND_MANY, (list(qs), list(ps)))
        for n_bindings in (len(BASE_BINDINGS), cfg.bindings):
            extra = n_bindings - len(BASE_BINDINGS)
            if extra > 0:
                with stopwatch(f"bind {extra:,} more patterns"):
                    plan = binding_plan(extra, cfg.binding_queues)
                    conn.execute(BIND_MANY, ([q for q, _ in plan], [p for _, p in plan]))
                    conn.execute("VACUUM (ANALYZE) catbird.cb_bindings")
            row = conn.execute("SELECT count(*) FROM catbird.cb_bindings").fetchone()
            present = int(row[0]) if row else 0
            row = conn.execute(
                "SELECT catbird.cb_publish(%s::text, %s::jsonb)", (TOPIC, Jsonb(BODY))
            ).fetchone()
            deliveries = int(row[0]) if row else 0
            res = PublishResult(present, deliveries, [])
            for _ in range(cfg.rounds):
                try_checkpoint(conn)
                res.runs.append(
                    run_workers(
                        dsn, cb_publish_1, connections=1, seconds=cfg.seconds, record_latency=True
                    )
                )
            out.append(res)
            print(
                f"  {present:,} bindings: {fmt_rate(median([r.rate for r in res.runs]))} "
                "publishes/s",
                file=sys.stderr,
                flush=True,
            )
        conn.execute("SELECT catbird.cb_delete_queue(q) FROM unnest(%s::text[]) AS q", (queues,))
    return out


def report_publish(results: Sequence[PublishResult]) -> None:
    base = median([r.rate for r in results[0].runs]) if results else math.nan
    rows = []
    for res in results:
        rate = median([r.rate for r in res.runs])
        lat = [x for r in res.runs for x in r.latencies]
        rows.append(
            [
                f"{res.bindings:,}",
                str(res.deliveries),
                fmt_rate(rate),
                fmt_rate(rate * res.deliveries),
                fmt_ms(percentile(lat, 50)),
                fmt_ms(percentile(lat, 99)),
                fmt_us(median([r.server_us_per_msg for r in res.runs])),
                fmt_ratio(ratio(rate, base)),
            ]
        )
    print_table(
        f"(d) cb_publish('{TOPIC}', body), 1 connection",
        [
            "bindings present",
            "deliveries/publish",
            "publishes/s",
            "messages/s",
            "p50 ms",
            "p99 ms",
            "server CPU us/publish",
            f"ratio to {len(BASE_BINDINGS)} bindings",
        ],
        rows,
        right=tuple(range(8)),
        notes=[
            "20% of the extra bindings share a literal prefix with the topic "
            "('orders.*.xK' or '*.xK.created'); the rest have literal prefixes of their own."
        ],
    )


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="benchmark this database instead of a fresh embedded PG 18")
    parser.add_argument("--seconds", type=float, help="length of each timed run (default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument(
        "--throughput-only", action="store_true", help="only (a) and (b): no latency, no publish"
    )
    parser.add_argument(
        "--apply-sql",
        type=Path,
        metavar="FILE",
        help="run this SQL file after catbird is installed (to measure a proposed engine change)",
    )
    args = parser.parse_args(argv)
    cfg = Config.quick(args.seconds) if args.quick else Config.full(args.seconds)

    with stopwatch("start server"):
        server = start_server(args.dsn)
    try:
        dsn = server.dsn
        with connect(dsn) as conn:
            if args.apply_sql is not None:
                conn.execute(args.apply_sql.read_text(encoding="utf-8").encode(), prepare=False)
            conn.execute(RAW_SETUP, prepare=False)
            conn.execute("SELECT catbird.cb_create_queue(%s)", (QUEUE,))
        print_header("queue", server)
        if args.apply_sql is not None:
            print(f"- engine change applied on top: {args.apply_sql}")
        print(f"- load average at start (other work on this machine): {load_average()}")
        print(
            f"- runs: {cfg.seconds:g} s each, median of {cfg.rounds} interleaved rounds; "
            "autocommit (one durable commit per statement), one process per connection"
        )
        sys.stdout.flush()

        tp = measure_throughput(dsn, cfg)
        report_throughput(tp, cfg)
        if not args.throughput_only:
            lat = measure_latency(dsn, cfg)
            report_latency(lat, cfg)
            pub = measure_publish(dsn, cfg)
            report_publish(pub)

        with connect(dsn) as conn:
            conn.execute("SELECT catbird.cb_delete_queue(%s)", (QUEUE,))
            conn.execute("DROP TABLE bench_raw")
        print()
        print(f"- load average at end: {load_average()}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

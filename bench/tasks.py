"""Task benchmark: catbird's Worker against pgqueuer and procrastinate, end to end.

Run:  python bench/tasks.py [--dsn DSN] [--runs 20000] [--samples 300] [--rounds 2]
                            [--skip-peers] [--peers pgqueuer,procrastinate]
                            [--batch 250] [--quick]

The peers are measured when they are importable (``pip install pgqueuer
asyncpg procrastinate``; a virtualenv created with ``--system-site-packages``
keeps them away from the project's environment). Without --dsn a fresh
embedded PostgreSQL 18 is started (default settings, durable commits) and
removed afterwards. Each system gets its own database on that one server, and
all of them run in the same invocation with the same no-op workload:

(a) **throughput**: enqueue ``--runs`` jobs in batches of 1,000 with each
    system's batch enqueue call (catbird: ``run_tasks``, i.e. the batch
    ``cb_run_task``), VACUUM (ANALYZE) and CHECKPOINT that system's database
    (so no round pays for the dead rows of the previous ones, or for a
    checkpoint or autovacuum falling into its drain), then start one worker
    process and time the drain: from the first handler call (reported by the
    worker process) until the parent sees no queued or running job left in
    the database (a cheap EXISTS every 10 ms, its backend left out of the CPU
    figures). Each round drains a fresh batch; every round's figures are
    printed, the median of rounds is the headline and the per-round ratios
    (catbird's round i against the peer's round i) show a collapsed round.
    Each round also drains the **raw ceiling** of the same shape: a job table
    with a partial claim index, claimed ``--batch`` at a time with ``FOR
    UPDATE SKIP LOCKED`` and marked done with one UPDATE per batch (two
    commits per batch, no handler, one client, claims with
    ``synchronous_commit = off`` as catbird's worker does); "÷ raw" is each
    system's throughput divided by it. CPU per job (server processes + worker
    process, from /proc) is split server / client.
(b) **pickup latency** at low load: the worker is idle, the parent enqueues one
    job at a time (every 5-15 ms, one statement each) and the handler records
    ``time.time()`` when it starts; latency = handler start - the moment just
    before the enqueue call. p50/p90/p99 over ``--samples`` jobs.

Handlers are ``async def`` no-ops in every system (catbird's worker runs them
on its event loop, procrastinate and pgqueuer likewise). Worker settings
(``--batch``, ``--catbird-concurrency``, ``--procrastinate-concurrency``;
printed with the results) default to what each system does best here:

* catbird: ``Worker`` with the task's ``concurrency=1000, batch_size=250``
  (completions are batched by the worker, flushed every 2 ms or per batch);
* pgqueuer: ``PgQueuer(AsyncpgDriver)`` (its fastest driver), the same
  ``batch_size``, no concurrency cap, tables installed with its defaults
  (durable);
* procrastinate: ``run_worker_async(concurrency=100, listen_notify=True)``
  on a ``PsycopgConnector`` (it has no batch claim).

Every worker process uses the default asyncio event loop.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    fmt_ms,
    fmt_rate,
    fmt_ratio,
    load_average,
    machine_summary,
    median,
    percentile,
    print_table,
    server_version,
    start_server,
)

TASK = "bench_noop"
ENQUEUE_BATCH = 1000
DEFAULT_BATCH = 250
DEFAULT_CATBIRD_CONCURRENCY = 1000
DEFAULT_PROCRASTINATE_CONCURRENCY = 100


@dataclass(frozen=True)
class Settings:
    """Worker settings, passed to the worker processes."""

    batch: int = DEFAULT_BATCH
    catbird_concurrency: int = DEFAULT_CATBIRD_CONCURRENCY
    procrastinate_concurrency: int = DEFAULT_PROCRASTINATE_CONCURRENCY

    def describe(self) -> str:
        return (
            f"catbird concurrency={self.catbird_concurrency} batch_size={self.batch};"
            f" pgqueuer batch_size={self.batch} (asyncpg driver);"
            f" procrastinate concurrency={self.procrastinate_concurrency}"
            " (psycopg connector, listen_notify)."
        )


def _asyncpg_args(dsn: str) -> dict[str, Any]:
    """asyncpg.connect() keywords for a libpq DSN (asyncpg only parses URIs)."""
    params = conninfo_to_dict(dsn)
    names = {
        "host": "host",
        "port": "port",
        "user": "user",
        "password": "password",
        "dbname": "database",
    }
    return {names[k]: v for k, v in params.items() if k in names and v not in (None, "")}


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ============================================================================ consumers
#
# Each runs in its own (spawned) process: ``consume(system, dsn, mode, settings, pipe)``.
# Protocol: the child imports and connects, sends "ready" and waits; the parent
# snapshots CPU counters and sends "go"; the child starts its worker; the parent
# sends "stop"; the child stops its worker and sends (first_call_ts, calls,
# starts), where ``starts`` maps job number -> handler start time (latency mode).


@dataclass
class _Probe:
    mode: str
    first: float | None = None
    calls: int = 0
    starts: dict[int, float] = field(default_factory=dict)

    def hit(self, n: int) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        self.calls += 1
        if self.mode == "latency":
            self.starts[n] = now

    def result(self) -> tuple[float | None, int, dict[int, float]]:
        return self.first, self.calls, self.starts


async def _expect(pipe: multiprocessing.connection.Connection, what: str) -> None:
    msg = await asyncio.to_thread(pipe.recv)
    assert msg == what, msg


async def _ready_then_go(pipe: multiprocessing.connection.Connection) -> None:
    """Imports and connections are done: tell the parent, wait for its "go"."""
    pipe.send("ready")
    await _expect(pipe, "go")


async def _consume_catbird(
    dsn: str, probe: _Probe, pipe: multiprocessing.connection.Connection, settings: Settings
) -> None:
    import catbird

    @catbird.task(
        TASK, concurrency=settings.catbird_concurrency, batch_size=settings.batch, max_retries=0
    )
    async def noop(n: int) -> None:
        probe.hit(n)

    worker = catbird.Worker(dsn, tasks=[noop], poll_interval=1.0, create_definitions=False)
    await _ready_then_go(pipe)
    await worker.start()
    await _expect(pipe, "stop")
    await worker.stop()


async def _consume_pgqueuer(
    dsn: str, probe: _Probe, pipe: multiprocessing.connection.Connection, settings: Settings
) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, PgQueuer
    from pgqueuer.models import Job

    conn = await asyncpg.connect(**_asyncpg_args(dsn))
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint(TASK)
    async def noop(job: Job) -> None:
        probe.hit(int(job.payload or b"0"))

    await _ready_then_go(pipe)
    runner = asyncio.create_task(pgq.run(batch_size=settings.batch))
    await _expect(pipe, "stop")
    pgq.shutdown.set()
    pgq.qm.shutdown.set()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(runner, 10)
    await conn.close()


async def _consume_procrastinate(
    dsn: str, probe: _Probe, pipe: multiprocessing.connection.Connection, settings: Settings
) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=TASK)
    async def noop(n: int) -> None:
        probe.hit(n)

    async with app.open_async():
        await _ready_then_go(pipe)
        runner = asyncio.create_task(
            app.run_worker_async(
                concurrency=settings.procrastinate_concurrency,
                wait=True,
                listen_notify=True,
                fetch_job_polling_interval=1.0,
                install_signal_handlers=False,
            )
        )
        await _expect(pipe, "stop")
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(runner, 10)


_CONSUMERS: dict[str, Callable[[str, _Probe, Any, Settings], Awaitable[None]]] = {
    "catbird": _consume_catbird,
    "pgqueuer": _consume_pgqueuer,
    "procrastinate": _consume_procrastinate,
}


def consume(
    system: str,
    dsn: str,
    mode: str,
    settings: Settings,
    pipe: multiprocessing.connection.Connection,
) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    probe = _Probe(mode)
    try:
        asyncio.run(_CONSUMERS[system](dsn, probe, pipe, settings))
        pipe.send(probe.result())
    except BaseException as exc:
        pipe.send(("error", repr(exc)))
        raise


# ============================================================================ producers


class System(abc.ABC):
    """The parent's side of one system: schema, enqueue, queue depth."""

    name = ""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @abc.abstractmethod
    async def setup(self) -> None:
        """Create this system's schema and queue."""

    @abc.abstractmethod
    async def enqueue_many(self, numbers: list[int]) -> None:
        """Enqueue one no-op job per number, in batches."""

    @abc.abstractmethod
    async def enqueue_one(self, n: int) -> None:
        """Enqueue one no-op job (for pickup latency)."""

    @abc.abstractmethod
    async def pending(self) -> bool:
        """Whether a run is not done yet (a cheap EXISTS: the parent asks every 10 ms,
        and its backend's CPU is left out of the system's)."""

    @abc.abstractmethod
    async def backend_pid(self) -> int:
        """The server process of this system's connection."""

    async def postmaster_pid(self) -> int | None:
        """The server's postmaster, when it runs on this machine (for CPU accounting)."""
        st = _proc_stat(await self.backend_pid())
        return st[0] if st is not None else None

    async def close(self) -> None:  # noqa: B027 - systems without a connection to close
        """Release the parent's connection, if the system keeps one."""


class _PsycopgCounted(System):
    """A system whose pending runs the parent counts on a psycopg connection of its own."""

    #: Whether a run is not done yet.
    pending_query: ClassVar[LiteralString]

    async def connect_counter(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def pending(self) -> bool:
        cur = await self.conn.execute(self.pending_query)
        row = await cur.fetchone()
        return bool(row and row[0])

    async def backend_pid(self) -> int:
        return self.conn.info.backend_pid

    async def close(self) -> None:
        await self.conn.close()


class Catbird(_PsycopgCounted):
    name = "catbird"
    pending_query = (
        "SELECT EXISTS (SELECT FROM catbird.cb_task_runs WHERE status IN ('queued', 'started'))"
    )

    async def setup(self) -> None:
        import catbird

        self.client = await catbird.AsyncClient.connect(self.dsn, prepare_threshold=0)
        await self.client.create_task(TASK)
        await self.connect_counter()

    async def enqueue_many(self, numbers: list[int]) -> None:
        await self.client.run_tasks(TASK, numbers)

    async def enqueue_one(self, n: int) -> None:
        await self.client.run_task(TASK, n)

    async def close(self) -> None:
        await self.client.close()
        await super().close()


class Pgqueuer(System):
    name = "pgqueuer"

    async def setup(self) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        self.pg = await asyncpg.connect(**_asyncpg_args(self.dsn))
        self.queries = Queries(AsyncpgDriver(self.pg))
        await self.queries.install()

    async def enqueue_many(self, numbers: list[int]) -> None:
        await self.queries.enqueue(
            [TASK] * len(numbers), [str(n).encode() for n in numbers], [0] * len(numbers)
        )

    async def enqueue_one(self, n: int) -> None:
        await self.queries.enqueue(TASK, str(n).encode(), 0)

    async def pending(self) -> bool:
        return bool(await self.pg.fetchval("SELECT EXISTS (SELECT FROM pgqueuer)"))

    async def backend_pid(self) -> int:
        return int(await self.pg.fetchval("SELECT pg_backend_pid()"))

    async def close(self) -> None:
        await self.pg.close()


class Procrastinate(_PsycopgCounted):
    name = "procrastinate"
    pending_query = (
        "SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
    )

    async def setup(self) -> None:
        import procrastinate

        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.dsn))

        @self.app.task(name=TASK)
        async def noop(n: int) -> None:
            return None

        self.task = noop
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()
        await self.connect_counter()

    async def enqueue_many(self, numbers: list[int]) -> None:
        await self.task.batch_defer_async(*({"n": n} for n in numbers))

    async def enqueue_one(self, n: int) -> None:
        await self.task.defer_async(n=n)

    async def close(self) -> None:
        await self.app.close_async()
        await super().close()


class RawCeiling:
    """The raw PostgreSQL ceiling of catbird's task shape, from one client.

    A job table with what a claim needs (status, attempts, visibility, input,
    output) and a partial claim index; the drain claims a batch with
    ``FOR UPDATE SKIP LOCKED`` (status, attempts, lease in one UPDATE) and marks
    it done with one UPDATE per batch: two commits per batch, no handler, no
    pipelining. As in catbird's worker, the claim commits with
    ``synchronous_commit = off`` and the completion durably.
    """

    name = "raw"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def setup(self) -> None:
        self.claims = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, prepare_threshold=0
        )
        self.outcomes = await psycopg.AsyncConnection.connect(
            self.dsn, autocommit=True, prepare_threshold=0
        )
        await self.claims.execute("SET synchronous_commit = off")
        await self.outcomes.execute(
            "CREATE TABLE IF NOT EXISTS raw_jobs ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " status text NOT NULL DEFAULT 'queued', attempts int NOT NULL DEFAULT 0,"
            " visible_at timestamptz NOT NULL DEFAULT now(), input jsonb NOT NULL, output jsonb)"
        )
        await self.outcomes.execute(
            "CREATE INDEX IF NOT EXISTS raw_jobs_claim_idx ON raw_jobs (visible_at, id)"
            " WHERE status IN ('queued', 'started')"
        )

    async def enqueue_many(self, numbers: list[int]) -> None:
        await self.outcomes.execute(
            "INSERT INTO raw_jobs (input) SELECT to_jsonb(n) FROM unnest(%s::int[]) AS n",
            (numbers,),
        )

    async def drain(self, batch: int) -> None:
        claim = (
            "WITH c AS (SELECT id FROM raw_jobs WHERE status IN ('queued', 'started')"
            " AND visible_at <= now() ORDER BY visible_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
            " UPDATE raw_jobs r SET status = 'started', attempts = r.attempts + 1,"
            " visible_at = now() + interval '30 s' FROM c WHERE r.id = c.id"
            " RETURNING r.id, r.attempts, r.input"
        )
        done = (
            "UPDATE raw_jobs SET status = 'completed', output = 'null'"
            " WHERE id = ANY(%s) AND status = 'started'"
        )
        while True:
            cur = await self.claims.execute(claim, (batch,))
            rows = await cur.fetchall()
            if not rows:
                return
            await self.outcomes.execute(done, ([r[0] for r in rows],))

    async def pending(self) -> bool:
        cur = await self.outcomes.execute(
            "SELECT EXISTS (SELECT FROM raw_jobs WHERE status IN ('queued', 'started'))"
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def postmaster_pid(self) -> int | None:
        st = _proc_stat(self.outcomes.info.backend_pid)
        return st[0] if st is not None else None

    async def close(self) -> None:
        await self.claims.close()
        await self.outcomes.close()


async def measure_raw(raw: RawCeiling, runs: int, batch: int) -> Throughput:
    """The raw ceiling's drain of ``runs`` jobs, measured as the systems' drains are."""
    numbers = list(range(runs))
    t0 = time.perf_counter()
    for i in range(0, runs, ENQUEUE_BATCH):
        await raw.enqueue_many(numbers[i : i + ENQUEUE_BATCH])
    enqueue_rate = runs / (time.perf_counter() - t0)
    await settle(raw.dsn)
    postmaster = await raw.postmaster_pid()
    server0 = _server_cpu(postmaster)
    client0 = _proc_stat(os.getpid())
    start = time.time()
    await raw.drain(batch)
    elapsed = time.time() - start
    server1 = _server_cpu(postmaster)
    client1 = _proc_stat(os.getpid())
    if await raw.pending():
        raise RuntimeError("raw: jobs left after the drain")
    server_cpu = client_cpu = float("nan")
    if server1 and client0 is not None and client1 is not None:
        server_cpu = sum(v - server0.get(pid, 0.0) for pid, v in server1.items()) / runs
        client_cpu = (client1[1] - client0[1]) / runs
    result = Throughput(
        enqueue_rate, runs / elapsed, 0, server_cpu + client_cpu, server_cpu, client_cpu
    )
    print(f"  [raw: {_describe_round(result)}]", file=sys.stderr, flush=True)
    return result


# ============================================================================ driver


class Consumer:
    """A worker process of one system."""

    def __init__(self, system: str, dsn: str, mode: str, settings: Settings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=consume, args=(system, dsn, mode, settings, child), daemon=True
        )
        self.proc.start()
        self.pid = self.proc.pid or 0

    async def ready(self) -> None:
        msg = await asyncio.wait_for(asyncio.to_thread(self.pipe.recv), 60)
        if msg != "ready":
            raise RuntimeError(f"worker failed to start: {msg}")

    def go(self) -> None:
        self.pipe.send("go")

    async def stop(self) -> tuple[float | None, int, dict[int, float]]:
        self.pipe.send("stop")
        result = await asyncio.wait_for(asyncio.to_thread(self.pipe.recv), 60)
        await asyncio.to_thread(self.proc.join, 30)
        if isinstance(result, tuple) and result and result[0] == "error":
            raise RuntimeError(f"worker failed: {result[1]}")
        return result  # type: ignore[no-any-return]


@dataclass
class Throughput:
    enqueue_rate: float
    drain_rate: float
    extra_calls: int
    """Handler calls beyond one per job (a job executed more than once)."""
    cpu_per_run: float
    """CPU seconds per job used by the server's processes and the worker process."""
    server_cpu_per_run: float = float("nan")
    """The server's share of :attr:`cpu_per_run` (all its processes: backends,
    walwriter, checkpointer, autovacuum)."""
    worker_cpu_per_run: float = float("nan")
    """The worker (client) process's share of :attr:`cpu_per_run`."""


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, from /proc (None when unavailable)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _server_cpu(postmaster: int | None, harness: int | None = None) -> dict[int, float]:
    """CPU seconds of every process of the server (the postmaster's children),
    but the benchmark's own backend ``harness``."""
    if postmaster is None:
        return {}
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != harness:
            st = _proc_stat(int(entry.name))
            if st is not None and st[0] == postmaster:
                out[int(entry.name)] = st[1]
    return out


async def _drained(system: System, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        if not await system.pending():
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.name}: not drained after {timeout:.0f} s")
        await asyncio.sleep(0.01)


async def settle(dsn: str) -> None:
    """VACUUM (ANALYZE) the system's database and CHECKPOINT: every drain starts
    with the previous rounds' dead rows gone and no checkpoint or autovacuum
    due, the same for every system (without this, round 3 pays for rounds 1-2)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("VACUUM (ANALYZE)")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            await conn.execute("CHECKPOINT")


async def measure_throughput(
    system: System, runs: int, timeout: float, settings: Settings
) -> Throughput:
    numbers = list(range(runs))
    t0 = time.perf_counter()
    for i in range(0, runs, ENQUEUE_BATCH):
        await system.enqueue_many(numbers[i : i + ENQUEUE_BATCH])
    enqueue_rate = runs / (time.perf_counter() - t0)
    await settle(system.dsn)
    consumer = Consumer(system.name, system.dsn, "throughput", settings)
    await consumer.ready()
    postmaster = await system.postmaster_pid()
    harness = await system.backend_pid()  # polls for the end of the drain: not the system's work
    server0 = _server_cpu(postmaster, harness)
    worker0 = _proc_stat(consumer.pid)
    consumer.go()
    done = await _drained(system, timeout)
    server1 = _server_cpu(postmaster, harness)
    worker1 = _proc_stat(consumer.pid)
    first, calls, _ = await consumer.stop()
    server_cpu = worker_cpu = float("nan")
    if server1 and worker0 is not None and worker1 is not None:
        server_cpu = sum(v - server0.get(pid, 0.0) for pid, v in server1.items()) / runs
        worker_cpu = (worker1[1] - worker0[1]) / runs
    if calls < runs or first is None:
        raise RuntimeError(f"{system.name}: {calls} handler calls for {runs} jobs")
    if calls > runs:
        print(f"  [{system.name}: {calls - runs} jobs ran twice]", file=sys.stderr, flush=True)
    result = Throughput(
        enqueue_rate,
        runs / (done - first),
        calls - runs,
        server_cpu + worker_cpu,
        server_cpu,
        worker_cpu,
    )
    print(f"  [{system.name}: {_describe_round(result)}]", file=sys.stderr, flush=True)
    return result


def _describe_round(t: Throughput) -> str:
    return (
        f"{fmt_rate(t.drain_rate)} jobs/s, CPU µs/job {t.cpu_per_run * 1e6:,.0f}"
        f" (server {t.server_cpu_per_run * 1e6:,.0f}, client {t.worker_cpu_per_run * 1e6:,.0f})"
    )


async def measure_latency(system: System, samples: int, settings: Settings) -> list[float]:
    consumer = Consumer(system.name, system.dsn, "latency", settings)
    await consumer.ready()
    consumer.go()
    await asyncio.sleep(1.0)  # every worker is listening by now
    sent: dict[int, float] = {}
    for n in range(samples):
        sent[n] = time.time()
        await system.enqueue_one(n)
        await asyncio.sleep(random.uniform(0.005, 0.015))
    await _drained(system, 60)
    _, calls, starts = await consumer.stop()
    if calls != samples:
        raise RuntimeError(f"{system.name}: {calls} handler calls for {samples} jobs")
    return [starts[n] - sent[n] for n in range(samples)]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(args.batch, args.catbird_concurrency, args.procrastinate_concurrency)


def _database_for(base_dsn: str, name: str) -> str:
    with psycopg.connect(base_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(base_dsn, dbname=name)


async def run(args: argparse.Namespace, dsn: str) -> dict[str, Any]:
    settings = _settings(args)
    systems: list[System] = [Catbird(dsn)]
    peers = [] if args.skip_peers else [p for p in args.peers.split(",") if p]
    if "pgqueuer" in peers:
        if _have("pgqueuer") and _have("asyncpg"):
            systems.append(Pgqueuer(_database_for(dsn, "bench_pgqueuer")))
        else:
            print("pgqueuer/asyncpg not installed: skipped", file=sys.stderr)
    if "procrastinate" in peers:
        if _have("procrastinate"):
            systems.append(Procrastinate(_database_for(dsn, "bench_procrastinate")))
        else:
            print("procrastinate not installed: skipped", file=sys.stderr)
    raw = RawCeiling(_database_for(dsn, "bench_raw"))
    await raw.setup()
    for s in systems:
        await s.setup()
    results: dict[str, Any] = {s.name: {"throughput": [], "latency": []} for s in systems}
    results["raw"] = {"throughput": [], "latency": []}
    try:
        for rnd in range(args.rounds):
            print(
                f"  [raw: throughput round {rnd + 1}, {args.runs} runs]",
                file=sys.stderr,
                flush=True,
            )
            results["raw"]["throughput"].append(await measure_raw(raw, args.runs, args.batch))
            for s in systems:  # interleaved rounds
                runs = (
                    args.runs if s.name != "procrastinate" else min(args.runs, args.peer_slow_runs)
                )
                print(
                    f"  [{s.name}: throughput round {rnd + 1}, {runs} runs]",
                    file=sys.stderr,
                    flush=True,
                )
                results[s.name]["throughput"].append(
                    await measure_throughput(s, runs, 600, settings)
                )
        for s in systems:
            if args.samples <= 0:
                break
            print(
                f"  [{s.name}: pickup latency, {args.samples} samples]", file=sys.stderr, flush=True
            )
            results[s.name]["latency"] = await measure_latency(s, args.samples, settings)
    finally:
        for s in systems:
            with contextlib.suppress(Exception):
                await s.close()
        with contextlib.suppress(Exception):
            await raw.close()
    return results


def report(results: dict[str, Any], args: argparse.Namespace, server: str) -> None:
    def rounds(name: str) -> list[Throughput]:
        return list(results[name]["throughput"])

    def med_rate(name: str) -> float:
        return median([t.drain_rate for t in rounds(name)])

    def best_rate(name: str) -> float:
        return max(t.drain_rate for t in rounds(name))

    def med_cpu(name: str, part: str = "cpu_per_run") -> float:
        return median([getattr(t, part) for t in rounds(name)])

    peers = [n for n in results if n not in ("catbird", "raw")]
    fastest_peer = max(peers, key=med_rate) if peers else None
    rows = []
    for name in ["raw", "catbird", *peers]:
        mine = name == "catbird"
        rows.append(
            [
                name,
                fmt_rate(med_rate(name)),
                ", ".join(fmt_rate(x.drain_rate) for x in rounds(name)),
                f"{med_cpu(name) * 1e6:,.0f}",
                f"{med_cpu(name, 'server_cpu_per_run') * 1e6:,.0f}"
                f" / {med_cpu(name, 'worker_cpu_per_run') * 1e6:,.0f}",
                ", ".join(f"{x.cpu_per_run * 1e6:,.0f}" for x in rounds(name)),
                str(sum(x.extra_calls for x in rounds(name))),
                fmt_ratio(med_rate(name) / med_rate("raw")),
                "-" if mine else fmt_ratio(med_rate("catbird") / med_rate(name)),
                "-" if mine else fmt_ratio(med_cpu(name) / med_cpu("catbird")),
            ]
        )
    notes = ["no peers measured"]
    if fastest_peer:
        # Round i of catbird ran right after round i of the raw ceiling and
        # before round i of each peer: per-round ratios show a collapsed round.
        per_round = [
            c.drain_rate / p.drain_rate
            for c, p in zip(rounds("catbird"), rounds(fastest_peer), strict=True)
        ]
        per_round_cpu = [
            p.cpu_per_run / c.cpu_per_run
            for c, p in zip(rounds("catbird"), rounds(fastest_peer), strict=True)
        ]
        notes = [
            f"catbird ÷ fastest peer ({fastest_peer}): throughput"
            f" {fmt_ratio(med_rate('catbird') / med_rate(fastest_peer))} (median of rounds),"
            f" {fmt_ratio(best_rate('catbird') / best_rate(fastest_peer))} (best rounds),"
            f" per round {', '.join(fmt_ratio(r) for r in per_round)}"
            f" (worst {fmt_ratio(min(per_round))});"
            f" CPU per job {fmt_ratio(med_cpu(fastest_peer) / med_cpu('catbird'))}x less"
            f" (per round {', '.join(fmt_ratio(r) for r in per_round_cpu)})."
        ]
    raw_per_round = [
        c.drain_rate / r.drain_rate for c, r in zip(rounds("catbird"), rounds("raw"), strict=True)
    ]
    notes.append(
        f"catbird ÷ raw ceiling: {fmt_ratio(med_rate('catbird') / med_rate('raw'))} (median),"
        f" per round {', '.join(fmt_ratio(r) for r in raw_per_round)}."
    )
    print_table(
        f"Tasks: end-to-end no-op throughput, one worker process ({args.runs:,} jobs per round,"
        f" {args.rounds} rounds, batch {args.batch})",
        [
            "system",
            "jobs/s (median)",
            "jobs/s per round",
            "CPU µs/job",
            "server / client",
            "CPU per round",
            "ran twice",
            "÷ raw",
            "catbird ÷ system",
            "system CPU ÷ catbird CPU",
        ],
        rows,
        right=(1, 3, 4, 6, 7, 8, 9),
        notes=[
            *notes,
            "raw: the ceiling of the same shape on the same server (claim a batch with FOR UPDATE"
            " SKIP LOCKED, one UPDATE marks it done: two commits per batch, no handler, one"
            " client, claim commits with synchronous_commit = off as catbird's).",
            "CPU µs/job: CPU time of all server processes plus the worker (client) process during"
            " the drain, per job (robust to other load on the machine, unlike jobs/s); split"
            " server / client.",
        ],
    )
    if args.samples > 0:
        rows = []
        for name in ["catbird", *peers]:
            lat = results[name]["latency"]
            rows.append(
                [
                    name,
                    fmt_ms(percentile(lat, 50)),
                    fmt_ms(percentile(lat, 90)),
                    fmt_ms(percentile(lat, 99)),
                    fmt_ms(max(lat)),
                    fmt_ratio(median(lat) / median(results["catbird"]["latency"])),
                ]
            )
        print_table(
            f"Tasks: pickup latency at low load (enqueue -> handler start, {args.samples} jobs,"
            " ms)",
            ["system", "p50", "p90", "p99", "max", "p50 ÷ catbird p50"],
            rows,
            right=(1, 2, 3, 4, 5),
        )
    print()
    print(f"Server: {server}")
    print(f"Machine: {machine_summary()}; load average at the end: {load_average()}")
    print(f"Settings: {_settings(args).describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="existing server (catbird is installed there if missing)")
    parser.add_argument("--runs", type=int, default=20_000, help="jobs per throughput round")
    parser.add_argument(
        "--peer-slow-runs",
        type=int,
        default=20_000,
        help="jobs per procrastinate round (it is much slower; lower this to save time)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per system")
    parser.add_argument("--samples", type=int, default=300, help="latency samples per system")
    parser.add_argument("--skip-peers", action="store_true", help="measure catbird only")
    parser.add_argument(
        "--peers",
        default="pgqueuer,procrastinate",
        help="comma-separated peers to measure (pgqueuer, procrastinate)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help="claim batch size of catbird and pgqueuer",
    )
    parser.add_argument(
        "--catbird-concurrency",
        type=int,
        default=DEFAULT_CATBIRD_CONCURRENCY,
        help="handler calls in flight in the catbird worker",
    )
    parser.add_argument(
        "--procrastinate-concurrency",
        type=int,
        default=DEFAULT_PROCRASTINATE_CONCURRENCY,
        help="procrastinate worker concurrency",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 runs, 1 round, 100 samples")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.samples, args.peer_slow_runs = 2000, 1, 100, 2000
    server = start_server(args.dsn)
    try:
        version = server_version(server.dsn)
        print(f"# catbird task benchmark\n\n{server.description}; {version}", flush=True)
        results = asyncio.run(run(args, server.dsn))
        report(results, args, version)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

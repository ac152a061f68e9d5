"""Definition benchmark: cb_create_flow and cb_publish as their inputs grow.

Run:  python bench/definitions.py [--dsn DSN] [--quick] [--timeout SECONDS]

Without --dsn it starts a fresh embedded PostgreSQL 18 in a temporary
directory and removes it afterwards. Workers create their definitions at
start-up, so validating a flow must stay linear in steps + dependencies:

(a) cb_create_flow for flows of 100 / 1,000 / 10,000 steps of three shapes:
    - chain: step i depends on step i - 1 (the longest dependency path);
    - independent: no dependencies at all;
    - layered: layers of 10 steps, every step depending on all 10 steps of
      the previous layer (a wide fan-in DAG with ~9 edges per step), plus
      the 44-step layered DAG (4 wide, 11 deep) that once never finished.
    Each call runs in a transaction that is rolled back, so every size starts
    from the same empty catalog. Printed: wall time, server CPU per call,
    microseconds per step and per element (steps + dependencies), and the
    growth against the smallest size of the shape ("x per 10x" is the time
    ratio for 10 times the elements: about 10 is linear, 100 quadratic). The
    raw ceiling is a plain INSERT of the same number of rows into a table of
    cb_flow_steps' shape in the same run.
(b) cb_publish with topics of 1 to 128 tokens (255 characters, the longest a
    topic may be) against one '#' binding and one literal-prefix binding; and
    how fast a topic of 1,000 / 10,000 / 20,000 tokens is refused (22023).

A case slower than --timeout (default 120 s) is cancelled by statement_timeout
and reported as such, so the benchmark finishes on an engine that is
quadratic too.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
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
    fmt_ms,
    fmt_ratio,
    fmt_us,
    load_average,
    median,
    print_header,
    print_table,
    start_server,
    stopwatch,
)

Steps = list[dict[str, Any]]


def chain(n: int) -> Steps:
    return [{"name": f"s{i}", "depends_on": [f"s{i - 1}"] if i else []} for i in range(n)]


def independent(n: int) -> Steps:
    return [{"name": f"s{i}"} for i in range(n)]


def layered(n: int, width: int = 10) -> Steps:
    """Layers of ``width`` steps, each depending on every step of the layer before."""
    steps: Steps = []
    for i in range(n):
        layer, column = divmod(i, width)
        deps = [f"s{(layer - 1) * width + c}" for c in range(width)] if layer else []
        steps.append({"name": f"s{layer * width + column}", "depends_on": deps})
    return steps


def elements(steps: Steps) -> int:
    return len(steps) + sum(len(s.get("depends_on", [])) for s in steps)


RAW_SETUP = """
CREATE TEMP TABLE raw_steps (flow_id int, name text, position int, depends_on text[],
                             PRIMARY KEY (flow_id, name))
"""
RAW_INSERT = """
INSERT INTO raw_steps (flow_id, name, position, depends_on)
SELECT 1, s ->> 'name', o,
       ARRAY(SELECT jsonb_array_elements_text(coalesce(s -> 'depends_on', '[]')))
FROM jsonb_array_elements(%s) WITH ORDINALITY AS x(s, o)
"""


def timed_in_rollback(
    conn: Conn, pid: int, statement: str, params: Sequence[Any]
) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of one statement, rolled back; nan when it timed out."""
    cpu0 = backend_cpu(pid)
    t0 = time.perf_counter()
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, params, prepare=False)
    except psycopg.errors.QueryCanceled:
        return math.nan, backend_cpu(pid) - cpu0
    return time.perf_counter() - t0, backend_cpu(pid) - cpu0


def measure_create_flow(dsn: str, sizes: Sequence[int], repeats: int, timeout_s: float) -> None:
    shapes: list[tuple[str, Callable[[int], Steps]]] = [
        ("chain", chain),
        ("independent", independent),
        ("layered (10 wide)", layered),
    ]
    rows: list[list[str]] = []
    with connect(dsn) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        conn.execute(RAW_SETUP)
        pid = backend_pid(conn)
        cases: list[tuple[str, Steps]] = [("layered 4 x 11 (the 44-step DAG)", layered(44, 4))]
        cases += [(f"{label}", build(n)) for label, build in shapes for n in sizes]
        base: dict[str, tuple[int, float]] = {}
        for label, steps in cases:
            body = Jsonb(steps)
            walls: list[float] = []
            cpus: list[float] = []
            raws: list[float] = []
            for _ in range(repeats):
                wall, cpu = timed_in_rollback(
                    conn, pid, "SELECT catbird.cb_create_flow('bench_flow', steps => %s)", [body]
                )
                walls.append(wall)
                cpus.append(cpu)
                if math.isnan(wall):
                    break
                raw, _ = timed_in_rollback(conn, pid, RAW_INSERT, [body])
                raws.append(raw)
            n_el = elements(steps)
            if any(math.isnan(w) for w in walls):
                rows.append(
                    [
                        label,
                        f"{len(steps):,}",
                        f"{n_el:,}",
                        f"> {timeout_s:.0f} s (cancelled)",
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            wall, cpu, raw = median(walls), median(cpus), median(raws)
            growth = ""
            if label in base:
                n0, t0 = base[label]
                factor = n_el / n0
                growth = f"{(wall / t0) ** (math.log(10) / math.log(factor)):.1f}"
            elif not label.startswith("layered 4"):
                base[label] = (n_el, wall)
            rows.append(
                [
                    label,
                    f"{len(steps):,}",
                    f"{n_el:,}",
                    fmt_ms(wall),
                    fmt_ms(cpu) if not math.isnan(cpu) else "?",
                    fmt_us(wall / len(steps) * 1e6),
                    fmt_us(wall / n_el * 1e6),
                    growth,
                    fmt_ratio(raw / wall),
                ]
            )
    print_table(
        "cb_create_flow as the flow grows (median of runs, each rolled back)",
        [
            "shape",
            "steps",
            "elements",
            "wall",
            "server CPU",
            "us/step",
            "us/element",
            "x per 10x",
            "raw insert / catbird",
        ],
        rows,
        right=range(1, 9),
        notes=[
            "elements = steps + dependencies. 'x per 10x': how many times longer the call takes "
            "for 10 times the elements, from the smallest size of the shape (10 = linear, "
            "100 = quadratic). 'raw insert / catbird': a plain INSERT of the same step rows "
            "into a temp table with a primary key, over catbird's time (the ceiling for "
            "writing the rows without validating anything).",
        ],
    )


def measure_publish(dsn: str, repeats: int) -> None:
    rows: list[list[str]] = []
    with connect(dsn) as conn:
        conn.execute("SELECT catbird.cb_create_queue('bench_topics')")
        conn.execute("SELECT catbird.cb_bind('bench_topics', 't.#')")
        conn.execute("SELECT catbird.cb_bind('bench_topics', 't.t.*.#')")
        pid = backend_pid(conn)
        for tokens in (1, 8, 9, 16, 64, 128):
            topic = ".".join(["t"] * tokens)
            walls, cpus = [], []
            for _ in range(repeats):
                wall, cpu = timed_in_rollback(
                    conn, pid, "SELECT catbird.cb_publish(%s, '{}'::jsonb)", [topic]
                )
                walls.append(wall)
                cpus.append(cpu)
            wall = median(walls)
            rows.append(
                [
                    f"{tokens:,}",
                    f"{len(topic):,}",
                    "published",
                    fmt_ms(wall),
                    fmt_us(wall / tokens * 1e6),
                ]
            )
        for tokens in (1_000, 10_000, 20_000):
            topic = ".".join(["t"] * tokens)
            walls = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                try:
                    conn.execute(
                        "SELECT catbird.cb_publish(%s, '{}'::jsonb)", [topic], prepare=False
                    )
                    outcome = "published"
                except psycopg.errors.InvalidParameterValue:
                    outcome = "refused (22023)"
                walls.append(time.perf_counter() - t0)
            wall = median(walls)
            rows.append(
                [
                    f"{tokens:,}",
                    f"{len(topic):,}",
                    outcome,
                    fmt_ms(wall),
                    fmt_us(wall / tokens * 1e6),
                ]
            )
        conn.execute("SELECT catbird.cb_delete_queue('bench_topics')")
    print_table(
        "cb_publish by topic length (one queue bound to 't.#' and 't.t.*.#')",
        ["tokens", "characters", "outcome", "wall", "us/token"],
        rows,
        right=(0, 1, 3, 4),
        notes=[
            "Topics are at most 255 characters (128 tokens): up to 8 tokens publish looks up "
            "every pattern that could match (767 at most), longer topics probe their n + 1 "
            "literal prefixes; longer topics are refused by the length check before any "
            "matching, in time independent of the token count beyond reading the string.",
        ],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="benchmark this database instead of a fresh embedded PG 18")
    parser.add_argument(
        "--quick", action="store_true", help="sizes 100 and 1,000 only, one run each"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a case is cancelled"
    )
    args = parser.parse_args(argv)
    sizes = (100, 1_000) if args.quick else (100, 1_000, 10_000)
    repeats = 1 if args.quick else 3

    with stopwatch("start server"):
        server = start_server(args.dsn)
    try:
        print_header("definitions", server)
        print(f"- load average at start (other work on this machine): {load_average()}")
        sys.stdout.flush()
        measure_create_flow(server.dsn, sizes, repeats, args.timeout)
        measure_publish(server.dsn, 5 if args.quick else 21)
        print()
        print(f"- load average at end: {load_average()}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prometheus metrics: a real worker process's /metrics, the format, the database gauges.

The output is parsed with prometheus_client's parser (a dev dependency; the
package writes the format itself), and counters are asserted exactly: the
handlers of tests/workers/metered.py decide their outcome by the attempt.
"""

from __future__ import annotations

import math
import socket
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from catbird import Client, RunFailed
from catbird.metrics import (
    CONTENT_TYPE,
    Counter,
    Histogram,
    WorkerMetrics,
    render_database_metrics,
)
from workerhelpers import WorkerProcess, running, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_process_serves_its_counters_and_the_database_gauges(
    dsn: str, conn: psycopg.Connection[Any], workers: list[WorkerProcess]
) -> None:
    from tests.workers import metered

    client = Client(conn)
    client.create_queue("inbox")
    client.send("inbox", 1)
    client.send("inbox", 2)
    port = free_port()
    worker = WorkerProcess(dsn, "tests.workers.metered:definitions", "--metrics-port", str(port))
    workers.append(worker)
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> httpx.Response | None:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            return None

    wait_for(lambda: scrape() is not None or not worker.alive(), 30, "the metrics endpoint")
    assert worker.alive(), worker.output()

    fine = [client.run_task("fine", n) for n in range(3)]
    flaky = [client.run_task("flaky", n) for n in range(2)]
    doomed = client.run_task("doomed", 7)
    flow = client.run_flow(metered.pipe, 21)
    assert [h.wait_for_output(timeout=30) for h in fine] == [0, 1, 2]
    assert [h.wait_for_output(timeout=30) for h in flaky] == [0, 1]
    with pytest.raises(RunFailed):
        doomed.wait_for_output(timeout=30)
    assert flow.wait_for_output(timeout=30) == 42

    expected = {
        ("catbird_worker_claims_total", "task", "fine"): 3,
        ("catbird_worker_claims_total", "task", "flaky"): 4,
        ("catbird_worker_claims_total", "task", "doomed"): 2,
        ("catbird_worker_claims_total", "step", "pipe/double"): 1,
        ("catbird_worker_completions_total", "task", "fine"): 3,
        ("catbird_worker_completions_total", "task", "flaky"): 2,
        ("catbird_worker_completions_total", "step", "pipe/double"): 1,
        ("catbird_worker_handler_duration_seconds_count", "task", "fine"): 3,
        ("catbird_worker_handler_duration_seconds_count", "task", "flaky"): 4,
        ("catbird_worker_handler_duration_seconds_count", "task", "doomed"): 2,
        ("catbird_worker_handler_duration_seconds_count", "step", "pipe/double"): 1,
    }
    failures = {("flaky", "retry"): 2, ("doomed", "retry"): 1, ("doomed", "final"): 1}

    def settled() -> Samples | None:
        # The engine's state is final; the worker counts right after its
        # statements return, so a scrape may come a moment early.
        response = scrape()
        assert response is not None and response.status_code == 200
        samples = parse(response.text)
        done = all(
            samples.get((name, frozenset({"kind": kind, "name": task}.items()))) == value
            for (name, kind, task), value in expected.items()
        ) and all(
            samples.get(
                (
                    "catbird_worker_failures_total",
                    frozenset({"kind": "task", "name": task, "outcome": outcome}.items()),
                )
            )
            == value
            for (task, outcome), value in failures.items()
        )
        return samples if done else None

    samples = wait_for(settled, 10, "the counters to settle")
    response = scrape()
    assert response is not None
    assert response.headers["content-type"] == CONTENT_TYPE
    # nothing counted that did not happen
    never = [
        ("catbird_worker_failures_total", {"kind": "task", "name": "fine", "outcome": "retry"}),
        ("catbird_worker_completions_total", {"kind": "task", "name": "doomed"}),
    ]
    assert [(n, frozenset(labels.items())) in samples for n, labels in never] == [False, False]
    # the histogram is cumulative and ends in +Inf = count
    inf = sample(
        samples,
        "catbird_worker_handler_duration_seconds_bucket",
        kind="task",
        name="fine",
        le="+Inf",
    )
    assert inf == 3
    assert (
        sample(samples, "catbird_worker_handler_duration_seconds_sum", kind="task", name="fine")
        >= 0
    )
    assert sample(samples, "catbird_worker_inflight_runs", kind="task", name="fine") == 0
    # the database's gauges, read at scrape time
    assert sample(samples, "catbird_database_up") == 1
    assert sample(samples, "catbird_queue_messages", queue="inbox") == 2
    assert sample(samples, "catbird_runs", kind="task", name="fine", status="queued") == 0
    assert sample(samples, "catbird_workers") == 1
    assert sample(samples, "catbird_health_status", check="oldest_queued", subject="task:fine") == 0
    # other paths
    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404
    assert httpx.post(url, timeout=5).status_code == 405
    assert worker.terminate() == 0


def test_the_exposition_format_is_escaped_and_cumulative() -> None:
    counter = Counter("x_total", 'help with \\ and "quotes"', ("name",))
    counter.inc('we"ird\\na\nme', amount=2)
    counter.inc("plain")
    histogram = Histogram("h_seconds", "durations", ("name",), buckets=(0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 5.0):
        histogram.observe(value, "a")
    text = "".join(line + "\n" for m in (counter, histogram) for line in m.lines())
    samples = parse(text)
    assert sample(samples, "x_total", name='we"ird\\na\nme') == 2
    assert sample(samples, "x_total", name="plain") == 1
    assert [
        sample(samples, "h_seconds_bucket", name="a", le=le) for le in ("0.1", "1", "+Inf")
    ] == [
        2,
        3,
        4,
    ]
    assert sample(samples, "h_seconds_count", name="a") == 4
    assert math.isclose(sample(samples, "h_seconds_sum", name="a"), 5.65)
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc("a", "b")


def test_an_empty_worker_registry_renders_types_without_samples() -> None:
    metrics = WorkerMetrics(lambda: [])
    families = {f.name: f.type for f in text_string_to_metric_families(metrics.render())}
    assert families == {
        "catbird_worker_claims": "counter",
        "catbird_worker_completions": "counter",
        "catbird_worker_failures": "counter",
        "catbird_worker_lease_renewals": "counter",
        "catbird_worker_handler_duration_seconds": "histogram",
        "catbird_worker_inflight_runs": "gauge",
    }


async def test_render_database_metrics_takes_a_connection_or_a_client(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    from catbird import AsyncClient

    client = AsyncClient(aconn)
    await client.create_queue("jobs")
    await client.send("jobs", {"a": 1})
    by_connection = parse(await render_database_metrics(aconn))
    by_client = parse(await render_database_metrics(client))
    assert sample(by_connection, "catbird_queue_messages", queue="jobs") == 1
    assert sample(by_connection, "catbird_queue_visible_messages", queue="jobs") == 1
    assert by_client.keys() == by_connection.keys()


async def test_an_in_process_worker_renews_leases_and_serves_on_a_free_port(dsn: str) -> None:
    import asyncio

    import catbird

    release = asyncio.Event()

    @catbird.task("slow_metered")
    async def slow(n: int) -> int:
        await release.wait()
        return n

    async with running(dsn, slow, lease=0.3, metrics_port=0) as worker:
        address = worker.metrics_address
        assert address is not None and address[0] == "127.0.0.1" and address[1] > 0
        handle = await worker.client.run_task("slow_metered", 1)

        async def renewed() -> bool:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://{address[0]}:{address[1]}/metrics")).text
            samples = parse(text)
            key = (
                "catbird_worker_lease_renewals_total",
                frozenset({"kind": "task", "name": "slow_metered"}.items()),
            )
            inflight = sample(
                samples, "catbird_worker_inflight_runs", kind="task", name="slow_metered"
            )
            return samples.get(key, 0) >= 2 and inflight == 1

        from workerhelpers import eventually

        await eventually(renewed, timeout=10)
        release.set()
        assert await handle.wait_for_output(timeout=10) == 1
    assert worker.metrics_address is None


def test_a_bad_metrics_port_is_refused(dsn: str) -> None:
    from catbird import InvalidArgument, Worker

    with pytest.raises(InvalidArgument, match="metrics_port"):
        Worker(dsn, metrics_port=70000)
    with pytest.raises(InvalidArgument, match="metrics_port"):
        Worker(dsn, metrics_port=True)  # type: ignore[arg-type]

"""Prometheus metrics: a worker's own counters and the database's gauges.

Written in the Prometheus text exposition format 0.0.4 by hand (it is
small), so no client library is needed at run time:

* :class:`WorkerMetrics` is one worker's registry (no global state): runs
  claimed, handler calls that returned, failures by what the engine did with
  them, lease renewals, a handler duration histogram and the runs in flight.
  The worker counts at its few central places (the claim loop, the call of a
  handler, the report of a failure, the lease loop).
* :func:`render_database_metrics` reads ``cb_metrics()`` (queue depths,
  active runs by status, the oldest queued age, the status of every
  ``cb_health`` check) at scrape time; the dashboard's ``/metrics`` route and
  the worker's endpoint both use it.
* :class:`MetricsServer` serves ``GET /metrics`` from a tiny asyncio HTTP
  server (``catbird worker --metrics-port``).

::

    worker = catbird.Worker(dsn, tasks=[send_email], metrics_port=9464)
    # curl http://127.0.0.1:9464/metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg

from . import _sql
from ._sql import AsyncExecutor
from .client.client_async import AsyncClient
from .models import MetricSample

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "Counter",
    "Gauge",
    "Histogram",
    "MetricsServer",
    "WorkerMetrics",
    "render_database_metrics",
    "render_samples",
    "render_worker_scrape",
]

log = logging.getLogger("catbird.metrics")

#: The Content-Type of the text exposition format 0.0.4.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds (seconds) of the handler duration histogram's buckets.
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return "{" + text + "}" if text else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)


def _header(name: str, kind: str, help: str) -> Iterator[str]:
    yield f"# HELP {name} {help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}"
    yield f"# TYPE {name} {kind}"


class Counter:
    """A counter per label set.

    Values are kept by the tuple of label values (checked against the label
    names once, when a label set is first seen) and named when rendered: a
    worker counts every handler call, so counting stays a dict update.
    """

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def _check(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return tuple(values)

    def _named(self, values: tuple[str, ...]) -> Labels:
        return tuple(zip(self.labelnames, values, strict=True))

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        else:
            values[self._check(labels)] = amount

    def lines(self) -> Iterator[str]:
        yield from _header(self.name, self.kind, self.help)
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self._named(key))} {_number(value)}"


class Gauge(Counter):
    """A gauge whose values are read when rendered (``read`` returns them by label values)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        read: Callable[[], Iterable[tuple[Sequence[str], float]]],
    ) -> None:
        super().__init__(name, help, labelnames)
        self.read = read

    def lines(self) -> Iterator[str]:
        self.values = {self._check(labels): value for labels, value in self.read()}
        yield from super().lines()


class Histogram:
    """A histogram per label set, with fixed buckets (cumulative when rendered)."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self.buckets = tuple(sorted(buckets))
        # label values -> (count per bucket (not cumulative), +Inf count, sum)
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labels}")
            series = self.series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        counts, total = series
        # the first bucket whose bound is >= value; len(buckets) is +Inf
        counts[bisect_left(self.buckets, value)] += 1
        total[0] += value

    def lines(self) -> Iterator[str]:
        yield from _header(self.name, "histogram", self.help)
        for values, (counts, total) in sorted(self.series.items()):
            key = tuple(zip(self.labelnames, values, strict=True))
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = (("le", _number(bound)),)
                yield f"{self.name}_bucket{_labels(key + le)} {cumulative}"
            yield f"{self.name}_sum{_labels(key)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(key)} {cumulative}"


#: What the engine did with a failure a worker reported: the run was queued
#: again (``retry``), failed for good (``final``), or the report was not taken
#: (``ignored``: the lease was lost, or the run was canceled or finished).
FAILURE_OUTCOMES = {"queued": "retry", "failed": "final", None: "ignored"}


class WorkerMetrics:
    """One worker's counters (the worker owns one; nothing is global).

    Labels: ``kind`` (task, step, generator, reducer, item, on-fail) and
    ``name`` (the task, or ``flow/step``). ``inflight`` reads the runs a
    worker holds when rendered.
    """

    def __init__(self, inflight: Callable[[], Iterable[tuple[Sequence[str], float]]]) -> None:
        kn = ("kind", "name")
        self.claims = Counter("catbird_worker_claims_total", "Runs claimed.", kn)
        self.completions = Counter(
            "catbird_worker_completions_total", "Handler calls that returned (succeeded).", kn
        )
        self.failures = Counter(
            "catbird_worker_failures_total",
            "Handler failures reported, by what the engine did: retry (queued again),"
            " final (failed for good), ignored (lease lost, or run canceled or finished).",
            (*kn, "outcome"),
        )
        self.lease_renewals = Counter(
            "catbird_worker_lease_renewals_total", "Leases of held runs renewed.", kn
        )
        self.duration = Histogram(
            "catbird_worker_handler_duration_seconds", "Time handlers ran, per call.", kn
        )
        self.inflight = Gauge(
            "catbird_worker_inflight_runs", "Runs the worker's handlers hold now.", kn, inflight
        )

    def failure(self, kind: str, name: str, engine_status: str | None) -> None:
        """Count a reported failure by the engine's answer (``queued``, ``failed``, None)."""
        self.failures.inc(kind, name, FAILURE_OUTCOMES.get(engine_status, "ignored"))

    def render(self) -> str:
        """The worker's metrics in the text exposition format."""
        metrics = (
            self.claims,
            self.completions,
            self.failures,
            self.lease_renewals,
            self.duration,
            self.inflight,
        )
        return "".join(line + "\n" for metric in metrics for line in metric.lines())


# --------------------------------------------------------------- database gauges

_DATABASE_HELP = {
    "catbird_queue_messages": "Messages in the queue.",
    "catbird_queue_visible_messages": "Messages of the queue readable now.",
    "catbird_runs": "Active runs by status (task runs queued or started, flow runs started or"
    " canceling).",
    "catbird_oldest_queued_seconds": "Seconds the oldest visible message or queued run has"
    " waited (0: none).",
    "catbird_health_status": "Status of a cb_health check: 0 ok, 1 warning, 2 critical.",
    "catbird_health_value": "Measured value of a cb_health check (see its unit in the report).",
    "catbird_workers": "Registered workers.",
}


def render_samples(samples: Iterable[MetricSample]) -> str:
    """``cb_metrics()`` rows as gauges in the text exposition format."""
    by_metric: dict[str, list[MetricSample]] = {}
    for sample in samples:
        by_metric.setdefault(sample.metric, []).append(sample)
    lines: list[str] = []
    for name, group in by_metric.items():
        lines.extend(_header(name, "gauge", _DATABASE_HELP.get(name, name)))
        lines.extend(f"{name}{_labels(sorted(s.labels.items()))} {_number(s.value)}" for s in group)
    return "".join(line + "\n" for line in lines)


async def render_database_metrics(
    source: AsyncExecutor | psycopg.AsyncConnection[Any],
) -> str:
    """The database's gauges (``cb_metrics()``) in the text exposition format.

    ``source`` is a :class:`catbird.AsyncClient` (any async executor) or a
    psycopg ``AsyncConnection``. Errors are raised (a route decides what a
    scrape of an unreachable database answers)."""
    executor: AsyncExecutor = (
        AsyncClient(source) if isinstance(source, psycopg.AsyncConnection) else source
    )
    samples: list[MetricSample] = await executor.execute(_sql.metrics())
    return render_samples(samples)


# --------------------------------------------------------------- the HTTP endpoint

_UP_HELP = "Whether the database answered the scrape's cb_metrics() (1) or not (0)."


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on ``host:port`` (port 0: any free one).

    ``render`` returns the body; it runs on the server's loop for each scrape.
    Every other path is 404; one request per connection.
    """

    def __init__(self, render: Callable[[], Any], host: str = "127.0.0.1", port: int = 0) -> None:
        self.render = render
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (once started)."""
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("metrics on http://%s:%d/metrics", *self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: none matter
                method, _, rest = request.decode("latin-1").partition(" ")
                path = rest.partition(" ")[0].partition("?")[0]
                if method not in ("GET", "HEAD"):
                    status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
                elif path != "/metrics":
                    status, body, ctype = "404 Not Found", b"see /metrics\n", "text/plain"
                else:
                    text = self.render()
                    if asyncio.iscoroutine(text):
                        text = await text
                    status, body, ctype = "200 OK", str(text).encode(), CONTENT_TYPE
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
                await writer.drain()
        except Exception as exc:  # a broken scrape must not disturb the worker
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def render_worker_scrape(metrics: WorkerMetrics, client: AsyncExecutor | None) -> str:
    """A worker's scrape: its own metrics, then the database's gauges (when
    it answers within 5 s; ``catbird_database_up`` says whether it did)."""
    parts = [metrics.render()]
    up = 0
    if client is not None:
        try:
            async with asyncio.timeout(5):
                parts.append(await render_database_metrics(client))
            up = 1
        except Exception as exc:
            log.warning("metrics: the database's gauges are missing from this scrape: %s", exc)
    parts.append("".join(line + "\n" for line in _header("catbird_database_up", "gauge", _UP_HELP)))
    parts.append(f"catbird_database_up {up}\n")
    return "".join(parts)

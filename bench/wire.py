"""Wire benchmark: notify -> browser latency and fan-out with many SSE clients.

    python bench/wire.py [--dsn DSN] [--clients 1000] [--seconds 5] [--rate 20]
                         [--burst 200]

Setup: the example application (examples/wire/app.py: one Wire node, uvicorn,
one renderer) runs in its own process; this process opens ``--clients``
event streams to it over loopback with plain asyncio sockets (no HTTP library
in the way) and sends events with ``cb_notify`` from SQL, whose data is the
send time (CLOCK_MONOTONIC, shared by the processes of one machine).

Measured:

* latency: ``--rate`` events per second for ``--seconds``; for every
  (event, client) pair, the time from the ``cb_notify`` commit to the event's
  bytes reaching the client; p50 / p99 / max;
* fan-out throughput: ``--burst`` events sent as fast as one connection can,
  timed until every client has every event: deliveries per second;
* CPU of the Wire process and of this client process per delivery;
* the raw PostgreSQL ceiling: the same notifications to one plain LISTEN
  connection in this process (the floor any relay adds to); Wire's p50 is
  reported as a multiple of it.

Then, if bench/wire_events.py exists (measure_event_cost), the cost of engine
events on enqueue/complete throughput with and without a listener.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import os
import re
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from _common import (
    REPO_ROOT,
    _ensure_catbird_importable,
    fmt_ratio,
    load_average,
    percentile,
    print_header,
    print_table,
    start_server,
)

_ensure_catbird_importable()
from catbird.wire import Wire  # noqa: E402

SECRET_HEX = "cd" * 32
TOPIC = "demo.bench"
_STAMP = re.compile(rb'"text": "(\d+)"')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Client:
    """One SSE stream over a raw socket; records the latency of every event."""

    def __init__(self, latencies: list[int]) -> None:
        self.latencies = latencies
        self.count = 0
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self, port: int, token: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /events/?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        buffer = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.monotonic_ns()
                buffer += chunk
                if not self.ready.is_set() and b": connected" in buffer:
                    self.ready.set()
                matches = list(_STAMP.finditer(buffer))
                for m in matches:
                    self.latencies.append(now - int(m.group(1)))
                self.count += len(matches)
                if matches:
                    buffer = buffer[matches[-1].end() :]
                elif len(buffer) > 65536:
                    buffer = buffer[-256:]
        finally:
            writer.close()


def _start_app(dsn: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CATBIRD_DSN": dsn,
        "WIRE_SECRET": SECRET_HEX,
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "PYTHONPATH": str(REPO_ROOT / "python"),
    }
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "wire" / "app.py")], env=env
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("examples/wire/app.py did not start") from None
            time.sleep(0.1)


async def _send(conn: psycopg.AsyncConnection, count: int, rate: float | None) -> None:
    interval = 1.0 / rate if rate else 0.0
    start = time.monotonic()
    for i in range(count):
        await conn.execute("SELECT catbird.cb_notify(%s, %s)", (TOPIC, str(time.monotonic_ns())))
        if interval:
            delay = start + (i + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def _raw_ceiling(dsn: str, count: int, rate: float) -> list[int]:
    """notify -> one plain LISTEN connection: the latency floor."""
    latencies: list[int] = []
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    sender = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listener.execute("LISTEN catbird")

    async def receive() -> None:
        async for note in listener.notifies():
            now = time.monotonic_ns()
            m = re.search(r'"data": "(\d+)"', note.payload)
            if m:
                latencies.append(now - int(m.group(1)))
                if len(latencies) >= count:
                    return

    task = asyncio.create_task(receive())
    await _send(sender, count, rate)
    await asyncio.wait_for(task, 30)
    await listener.close()
    await sender.close()
    return latencies


def _ms(ns: float) -> str:
    return "-" if math.isnan(ns) else f"{ns / 1e6:.2f}"


async def _wait_for(clients: list[Client], total_each: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(c.count < total_each for c in clients):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def bench(dsn: str, args: argparse.Namespace) -> None:
    port = _free_port()
    app = _start_app(dsn, port)
    minting = Wire(dsn, bytes.fromhex(SECRET_HEX))
    latencies: list[int] = []
    clients = [Client(latencies) for _ in range(args.clients)]
    try:
        connect_start = time.monotonic()
        for i, client in enumerate(clients):
            token = minting.token(["demo.#"], identity=f"user{i % 100}")
            client.task = asyncio.create_task(client.run(port, token))
            if i % 50 == 49:
                await asyncio.sleep(0)  # let connections progress
        async with asyncio.timeout(120):
            await asyncio.gather(*(c.ready.wait() for c in clients))
        connect_seconds = time.monotonic() - connect_start

        sender = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        # Latency at a steady rate.
        events = int(args.rate * args.seconds)
        app_cpu0, self_cpu0 = _proc_cpu(app.pid), _self_cpu()
        await _send(sender, events, args.rate)
        complete = await _wait_for(clients, events, 30)
        app_cpu_lat, self_cpu_lat = _proc_cpu(app.pid) - app_cpu0, _self_cpu() - self_cpu0
        steady = sorted(latencies)
        deliveries_lat = len(steady)

        # Fan-out throughput: a burst as fast as one connection sends.
        latencies.clear()
        app_cpu0, self_cpu0 = _proc_cpu(app.pid), _self_cpu()
        burst_start = time.monotonic()
        await _send(sender, args.burst, None)
        burst_complete = await _wait_for(clients, events + args.burst, 120)
        burst_seconds = time.monotonic() - burst_start
        app_cpu_burst, self_cpu_burst = _proc_cpu(app.pid) - app_cpu0, _self_cpu() - self_cpu0
        burst = sorted(latencies)
        await sender.close()
    finally:
        for client in clients:
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)
        app.terminate()
        app.wait(10)

    raw = sorted(await _raw_ceiling(dsn, events, args.rate))
    raw_p50 = percentile(raw, 50)
    p50 = percentile(steady, 50) if steady else math.nan
    print_table(
        f"notify -> SSE client latency, {args.clients} clients, {args.rate:g} events/s "
        f"for {args.seconds:g} s (ms)",
        ["path", "deliveries", "p50", "p99", "max", "p50 / raw ceiling"],
        [
            [
                "raw: cb_notify -> 1 LISTEN connection",
                str(len(raw)),
                _ms(raw_p50),
                _ms(percentile(raw, 99)),
                _ms(raw[-1]),
                fmt_ratio(1.0),
            ],
            [
                "Wire: cb_notify -> node -> SSE socket",
                f"{deliveries_lat}{'' if complete else ' (incomplete)'}",
                _ms(p50),
                _ms(percentile(steady, 99) if steady else math.nan),
                _ms(steady[-1] if steady else math.nan),
                fmt_ratio(p50 / raw_p50) if raw_p50 else "-",
            ],
        ],
        right=[1, 2, 3, 4, 5],
        notes=[
            f"{args.clients} streams connected in {connect_seconds:.1f} s. CPU while steady: "
            f"Wire process {app_cpu_lat:.2f} s ({app_cpu_lat / max(deliveries_lat, 1) * 1e6:.1f} "
            f"us per delivery), client process {self_cpu_lat:.2f} s."
        ],
    )
    rate = len(burst) / burst_seconds if burst_seconds else math.nan
    print_table(
        f"fan-out: a burst of {args.burst} events to {args.clients} clients",
        [
            "deliveries",
            "seconds",
            "deliveries/s",
            "Wire CPU us/delivery",
            "client CPU us/delivery",
            "p50 ms",
            "p99 ms",
        ],
        [
            [
                f"{len(burst)}{'' if burst_complete else ' (incomplete)'}",
                f"{burst_seconds:.2f}",
                f"{rate:,.0f}",
                f"{app_cpu_burst / max(len(burst), 1) * 1e6:.1f}",
                f"{self_cpu_burst / max(len(burst), 1) * 1e6:.1f}",
                _ms(percentile(burst, 50) if burst else math.nan),
                _ms(percentile(burst, 99) if burst else math.nan),
            ]
        ],
        right=[0, 1, 2, 3, 4, 5, 6],
        notes=[f"load average before/after: see header; now {load_average()}"],
    )


def event_cost(dsn: str) -> None:
    path = Path(__file__).resolve().parent / "wire_events.py"
    if not path.exists():
        print()
        print(
            "(bench/wire_events.py is not in this tree yet: the engine-event cost on "
            "enqueue/complete throughput is measured there once the events work lands)"
        )
        return
    # By module name (bench/ is on sys.path): its worker processes import it again.
    module = importlib.import_module("wire_events")
    module.report(module.measure_event_cost(dsn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    server = start_server(args.dsn)
    try:
        print_header("Wire", server)
        print(f"- load average at start: {load_average()}")
        asyncio.run(bench(server.dsn, args))
        event_cost(server.dsn)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

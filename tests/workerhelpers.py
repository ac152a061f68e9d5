"""Helpers shared by the suites that run catbird workers.

A catbird.Worker in the test process on the test's own database with short
intervals (poll 50 ms, heartbeat 0.2 s, 2 s shutdown grace), and a bounded
wait for a condition; ``catbird worker`` subprocesses (:class:`WorkerProcess`,
started into the ``workers`` fixture of conftest.py) whose handlers record
their calls in an ``effects`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import psycopg

from catbird import Flow, Task, Worker

__all__ = ["EFFECTS", "WorkerProcess", "eventually", "running", "scalar", "wait_for"]


@contextlib.asynccontextmanager
async def running(
    dsn: str, *definitions: Task[Any, Any] | Flow, **options: Any
) -> AsyncIterator[Worker]:
    """A started worker of these tasks and flows with short intervals, stopped on exit."""
    options.setdefault("poll_interval", 0.05)
    options.setdefault("heartbeat_interval", 0.2)
    options.setdefault("shutdown_timeout", 2.0)
    tasks = [d for d in definitions if isinstance(d, Task)]
    flows = [d for d in definitions if isinstance(d, Flow)]
    worker = Worker(dsn, tasks=tasks, flows=flows, **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll an (async or sync) check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- worker processes

ROOT = Path(__file__).resolve().parent.parent

EFFECTS = """
CREATE TABLE effects (
    id      bigserial PRIMARY KEY,
    kind    text NOT NULL,
    n       int NOT NULL,
    run_id  bigint NOT NULL,
    attempt int NOT NULL,
    pid     int NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class WorkerProcess:
    """A ``catbird worker`` subprocess with its log in a temporary file."""

    def __init__(self, dsn: str, target: str, *args: str, env: dict[str, str] | None = None):
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the fixture
        self.started_at = time.monotonic()
        argv = [sys.executable, "-m", "catbird", "worker", target, "--poll-interval", "0.1", *args]
        if dsn:
            argv += ["--dsn", dsn]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                **({"CATBIRD_EFFECTS_DSN": dsn} if dsn else {}),
                **(env or {}),
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker did not stop on SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.log.close()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scalar(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]

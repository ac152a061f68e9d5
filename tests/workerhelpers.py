"""Helpers shared by the suites that run catbird.Worker in the test process.

A worker on the test's own database with short intervals (poll 50 ms,
heartbeat 0.2 s, 2 s shutdown grace), and a bounded wait for a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from catbird import Flow, Task, Worker

__all__ = ["eventually", "running"]


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

"""Handlers run by real worker processes in tests/test_worker_reliability.py.

::

    python -m catbird worker tests.workers.reliable:tasks --dsn DSN
    CATBIRD_WORKER_DSN=DSN python -m catbird worker tests.workers.reliable:worker

Every handler writes one row per call into the test's ``effects`` table
(``CATBIRD_EFFECTS_DSN``, default: the worker's database), so a test can count
how often a run's handler actually ran, in which process and attempt.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from psycopg_pool import AsyncConnectionPool

import catbird

_pool: AsyncConnectionPool[Any] | None = None


def _effects_dsn() -> str:
    return os.environ.get("CATBIRD_EFFECTS_DSN") or os.environ["CATBIRD_WORKER_DSN"]


async def effect(kind: str, n: int) -> None:
    """Record one handler call."""
    global _pool
    if _pool is None:
        _pool = AsyncConnectionPool(
            _effects_dsn(), min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await _pool.open()
    run = catbird.current_run()
    async with _pool.connection() as conn:
        await conn.execute(
            "INSERT INTO effects (kind, n, run_id, attempt, pid) VALUES (%s, %s, %s, %s, %s)",
            (kind, n, run.run_id, run.attempt, os.getpid()),
        )


@catbird.task("record", concurrency=32, batch_size=32, max_retries=5, backoff=(0.05, 0.5))
async def record(n: int) -> int:
    await effect("record", n)
    return n


@catbird.task("hang_first", max_retries=3, timeout=120)
async def hang_first(n: int) -> str:
    """Hangs on its first attempt (until the process is killed), finishes on the next."""
    await effect("hang_first", n)
    if catbird.current_run().attempt == 1:
        await asyncio.sleep(3600)
    return "finished"


@catbird.task("sleepy", timeout=120, max_retries=0)
async def sleepy(seconds: float) -> str:
    await effect("sleepy", int(seconds * 1000))
    await asyncio.sleep(seconds)
    return "slept"


tasks = [record, hang_first, sleepy]

worker = catbird.Worker(
    os.environ.get("CATBIRD_WORKER_DSN", "postgresql:///catbird_worker_dsn_not_set"),
    tasks=tasks,
    poll_interval=0.1,
    shutdown_timeout=float(os.environ.get("CATBIRD_WORKER_GRACE", "5")),
    lease=float(os.environ.get("CATBIRD_WORKER_LEASE", "30")),
)

"""Handlers run by real worker processes in tests/test_lifecycle_py.py.

::

    python -m catbird worker tests.workers.lifecycle:definitions --dsn DSN --lease 1

Handlers record their calls in the test's ``effects`` table (see
:mod:`tests.workers.reliable`), so a test sees which process ran which
attempt of which run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import catbird

from .reliable import effect

#: A generator step that yields its items slowly: one paused worker and one
#: live one both run it, and the engine must keep each item once.
generated = catbird.Flow("generated")


@generated.step(generator=True, batch_size=1, max_retries=3, timeout=120)
async def numbers(input: dict[str, Any]) -> AsyncIterator[int]:
    await effect("generator", 0)
    for i in range(input["n"]):
        await asyncio.sleep(input["pause"])
        yield i


@numbers.item(concurrency=8)
async def tenfold(item: int) -> int:
    await effect("item", item)
    return item * 10


@catbird.task("stall", max_retries=3, timeout=120)
async def stall(seconds: float) -> int:
    """Takes ``seconds`` on every attempt; returns the attempt that finished."""
    attempt = catbird.current_run().attempt
    await effect("stall", attempt)
    await asyncio.sleep(seconds)
    return attempt


definitions: list[Any] = [generated, stall]

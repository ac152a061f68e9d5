"""Handlers run by a real worker process in tests/test_metrics.py.

::

    python -m catbird worker tests.workers.metered:definitions --dsn DSN --metrics-port P

Outcomes are decided by the attempt, so the test knows every counter's value.
"""

from __future__ import annotations

from typing import Any

import catbird


@catbird.task("fine")
async def fine(n: int) -> int:
    return n


@catbird.task("flaky", max_retries=2, backoff=(0.01, 0.02))
def flaky(n: int) -> int:
    """Fails its first attempt, succeeds on the second."""
    if catbird.current_run().attempt == 1:
        raise RuntimeError("first attempt fails")
    return n


@catbird.task("doomed", max_retries=1, backoff=(0.01, 0.02))
async def doomed(n: int) -> int:
    raise ValueError(f"never works ({n})")


pipe = catbird.Flow("pipe")


@pipe.step()
async def double(input: int) -> int:
    return input * 2


definitions: list[Any] = [fine, flaky, doomed, pipe]

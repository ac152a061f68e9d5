"""A scheduled task run by worker processes in tests/test_schedules_py.py.

::

    python -m catbird worker tests.workers.scheduled:tasks --dsn DSN

The task declares its schedule; the worker creates it at start-up and fires
it when due. Each call writes one row into the test's ``effects`` table.
"""

from __future__ import annotations

from typing import Any

import catbird

from .reliable import effect


@catbird.task("scheduled_job", schedule="* * * * *", schedule_input={"from": "schedule"})
async def scheduled_job(input: dict[str, Any]) -> dict[str, Any]:
    await effect("scheduled_job", 0)
    return input


tasks = [scheduled_job]

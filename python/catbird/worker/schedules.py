"""The worker's scheduler: declared schedules, and firing the due ones.

* At start-up (right after the task and flow definitions) the worker creates
  the schedules declared with them (``schedule=`` of :class:`catbird.Task`
  and :class:`catbird.Flow`): ``cb_create_*_schedule`` is an upsert, so every
  worker of a fleet doing it at once is harmless, and an unchanged spec keeps
  the schedule's next tick. A schedule no longer declared is not deleted
  (it may have been created by hand): ``catbird schedule delete`` does that.
* Every ``schedule_interval`` seconds (jittered), and when the worker's event
  listener (re)connects, it calls ``cb_execute_due_task_schedules`` and
  ``cb_execute_due_flow_schedules`` for the tasks and flows it serves. The
  engine fires each tick exactly once however many workers call it at the
  same time, so there is no leader to elect.
* What fired is logged at info level (one line per schedule: the tick and
  the next one), found by comparing ``last_enqueued_at`` with the previous
  listing; nothing is logged while nothing is due.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from .. import _sql
from ..client.client_async import AsyncClient
from ..definitions import Schedule, Task
from ..definitions.flows import Flow
from ..models import FlowScheduleInfo, TaskScheduleInfo
from .lanes import describe

__all__ = ["Scheduler"]

log = logging.getLogger("catbird.worker")

_Key = tuple[str, str]  # ("task" | "flow", name)
_Info = TaskScheduleInfo | FlowScheduleInfo


class Scheduler:
    """The schedules of one worker's tasks and flows (see the module documentation)."""

    def __init__(
        self, tasks: Sequence[Task[Any, Any]], flows: Sequence[Flow], interval: float
    ) -> None:
        self.tasks = list(tasks)
        self.flows = list(flows)
        self.interval = interval
        self.task_names = [t.name for t in self.tasks]
        self.flow_names = [f.name for f in self.flows]
        #: Set to fire due schedules now rather than at the next interval.
        self.wake = asyncio.Event()
        self._marks: dict[_Key, datetime | None] | None = None

    def __repr__(self) -> str:
        return f"Scheduler(tasks={self.task_names}, flows={self.flow_names})"

    async def create_declared(self, client: AsyncClient) -> None:
        """Create (upsert) the schedules declared with the tasks and flows."""
        declared: list[tuple[str, str, Schedule | None, Callable[..., Awaitable[None]]]] = [
            *(("task", t.name, t.schedule, client.create_task_schedule) for t in self.tasks),
            *(("flow", f.name, f.schedule, client.create_flow_schedule) for f in self.flows),
        ]
        for kind, name, s, create in declared:
            if s is not None:
                await create(name, s.cron_spec, input=s.input, catch_up=s.catch_up)
                log.debug("%s %r: schedule %r (catch-up %s)", kind, name, s.cron_spec, s.catch_up)

    async def _listing(self, client: AsyncClient) -> dict[_Key, _Info]:
        listing: dict[_Key, _Info] = {}
        if self.task_names:
            served = set(self.task_names)
            for ts in await client.execute(_sql.list_task_schedules()):
                if ts.task_name in served:
                    listing["task", ts.task_name] = ts
        if self.flow_names:
            served = set(self.flow_names)
            for fs in await client.execute(_sql.list_flow_schedules()):
                if fs.flow_name in served:
                    listing["flow", fs.flow_name] = fs
        return listing

    async def fire(self, client: AsyncClient) -> int:
        """Fire the due schedules of the served tasks and flows once; returns the runs enqueued."""
        if self._marks is None:
            self._marks = {k: s.last_enqueued_at for k, s in (await self._listing(client)).items()}
        runs = 0
        if self.task_names:
            runs += await client.execute(_sql.execute_due_task_schedules(self.task_names))
        if self.flow_names:
            runs += await client.execute(_sql.execute_due_flow_schedules(self.flow_names))
        if runs:
            self._report(runs, await self._listing(client))
        return runs

    def _report(self, runs: int, listing: dict[_Key, _Info]) -> None:
        assert self._marks is not None
        fired = 0
        for (kind, name), s in listing.items():
            if s.last_enqueued_at is not None and s.last_enqueued_at != self._marks.get(
                (kind, name)
            ):
                fired += 1
                log.info(
                    "%s schedule %r (%s) fired: tick %s, next %s",
                    kind,
                    name,
                    s.cron_spec,
                    s.last_run_at.isoformat() if s.last_run_at is not None else "-",
                    s.next_run_at.isoformat(),
                )
            self._marks[kind, name] = s.last_enqueued_at
        log.info("schedules: %d run(s) enqueued by %d schedule(s)", runs, fired)

    async def loop(self, client: AsyncClient, stopping: asyncio.Event) -> None:
        """Fire due schedules every ``interval`` (jittered) and on :attr:`wake`,
        until ``stopping`` is set."""
        while not stopping.is_set():
            self.wake.clear()
            try:
                await self.fire(client)
            except Exception as exc:
                log.warning("executing due schedules failed: %s", describe(exc))
            delay = self.interval * random.uniform(0.8, 1.2)
            waits = [asyncio.ensure_future(e.wait()) for e in (self.wake, stopping)]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

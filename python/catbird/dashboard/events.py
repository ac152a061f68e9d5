"""Engine events for the dashboard's live updates: one LISTEN connection per
dashboard, fanned out to every browser stream.

The engine's events (see :mod:`catbird.events`) name what changed:
``{"task": "x", "run_id": 5}``, ``{"flow": "f", "run_ids": [...]}``;
:func:`parse_event` turns one into a :class:`RunEvent` for the pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import psycopg

from .. import events
from .._sql import listen_events

logger = logging.getLogger("catbird.dashboard")

#: The ``application_name`` of the listening connection (seen in pg_stat_activity).
LISTENER_NAME = "catbird-dashboard-events"

#: The topic of the event a stream gets after its listener reconnected: events
#: may have been missed, so pages refresh.
RESYNC_TOPIC = "catbird.dashboard.resync"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """An engine event: its topic, the kind and name of what it is about
    (``task``/``flow``/``worker``/...; ``None`` when the data does not say)
    and the run ids it names."""

    topic: str
    kind: str | None
    name: str | None
    run_ids: tuple[int, ...]

    def to_json(self) -> str:
        return json.dumps(
            {"topic": self.topic, "kind": self.kind, "name": self.name, "run_ids": self.run_ids}
        )


def parse_event(payload: str) -> RunEvent | None:
    """The engine event of a notification payload; ``None`` for anything else
    (an application's topic, a payload that is not the envelope)."""
    event = events.parse_event(payload)
    if event is None or not event.topic.startswith("catbird."):
        return None
    parts = event.topic.split(".")
    kind, name = (parts[1] if len(parts) >= 3 else None), None
    # {"task": "x", ...} or {"flow": "f", "step": "s", ...}: the run's definition
    for key in ("task", "flow"):
        value = event.field(key)
        if value is not None:
            kind, name = key, value
            break
    return RunEvent(event.topic, kind, name, event.run_ids)


class EventHub:
    """Listens on the engine's channel while at least one stream subscribes,
    and hands every engine event to each subscriber's queue.

    The listening connection opens with the first subscriber and closes with
    the last one; when it breaks, it is opened again after ``retry_delay``
    seconds and every subscriber gets a :data:`RESYNC_TOPIC` event.
    """

    def __init__(self, conninfo: Callable[[], Awaitable[str]], *, retry_delay: float = 1.0) -> None:
        self._conninfo = conninfo
        self._retry_delay = retry_delay
        self._subscribers: set[asyncio.Queue[RunEvent]] = set()
        self._task: asyncio.Task[None] | None = None
        #: Set while the connection is listening.
        self.listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[RunEvent]]:
        queue: asyncio.Queue[RunEvent] = asyncio.Queue(maxsize=1000)
        self._subscribers.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="catbird-dashboard-events")
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        # Cleared now, not when the task ends: a subscriber arriving meanwhile
        # starts a new listener and must wait for that one.
        self.listening.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _publish(self, event: RunEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                # A stalled browser: its page misses nothing it would not
                # reload anyway; drop its oldest event.
                queue.get_nowait()
            queue.put_nowait(event)

    def _current(self) -> bool:
        """Whether the running task is the hub's listener (not one being closed)."""
        return self._task is asyncio.current_task()

    async def _listen(self) -> None:
        reconnect = False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    await self._conninfo(), autocommit=True, application_name=LISTENER_NAME
                )
                async with conn:
                    await conn.execute(listen_events().sql)
                    if not self._current():
                        return
                    self.listening.set()
                    if reconnect:
                        self._publish(RunEvent(RESYNC_TOPIC, None, None, ()))
                    async for notify in conn.notifies():
                        event = parse_event(notify.payload)
                        if event is not None:
                            self._publish(event)
            except (psycopg.Error, OSError) as exc:
                logger.warning("dashboard event listener: %s; reconnecting", exc)
            if self._current():
                self.listening.clear()
            reconnect = True
            await asyncio.sleep(self._retry_delay)

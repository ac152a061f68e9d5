"""Helpers of the Wire suites: a Wire's ASGI app served by uvicorn on
127.0.0.1 (a free port, in a thread with its own event loop, as in
production), and a reader of server-sent events over httpx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

__all__ = ["SSE", "Received", "free_port", "serve", "sse_stream"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any, *, timeout: float = 20.0) -> Iterator[str]:
    """Serve an ASGI app (its lifespan starts and stops its Wire) in a thread;
    yields the base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@dataclass
class Received:
    """One server-sent event as a browser would see it."""

    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SSE:
    """An open event stream: the events and comments received so far."""

    response: httpx.Response
    events: list[Received] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        event, data, seen = Received(), [], False
        async for line in self.response.aiter_lines():
            if line == "":
                if seen:
                    event.data = "\n".join(data)
                    self.events.append(event)
                    self._changed.set()
                event, data, seen = Received(), [], False
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
                self._changed.set()
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                seen = True
                if name == "event":
                    event.event = value
                elif name == "data":
                    data.append(value)
                elif name == "id":
                    event.id = value
        self._changed.set()

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def events_until(self, count: int, timeout: float = 10.0) -> list[Received]:
        await self.until(lambda s: len(s.events) >= count, timeout)
        return self.events


@contextlib.asynccontextmanager
async def sse_stream(client: httpx.AsyncClient, url: str, **kwargs: Any) -> AsyncIterator[SSE]:
    """Open an event stream; the first comment (the connection is registered)
    has arrived when this yields."""
    async with client.stream("GET", url, **kwargs) as response:
        sse = SSE(response)
        if response.status_code != 200:
            await response.aread()
            yield sse
            return
        sse._task = asyncio.create_task(sse._read())
        try:
            await sse.until(lambda s: "connected" in s.comments)
            yield sse
        finally:
            sse._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sse._task

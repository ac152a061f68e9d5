"""A runnable catbird Wire demo: a page whose EventSource receives events.

    CATBIRD_DSN=postgresql://localhost/app python examples/wire/app.py
    # then open http://127.0.0.1:8000/ and, from anywhere:
    psql "$CATBIRD_DSN" -c "SELECT catbird.cb_notify('demo.hello', 'hi from SQL')"

``WIRE_SECRET`` (64 hex digits) must be the same on every process of the
application; without it a random one is made (tokens then only work on this
process, until it restarts). ``PORT`` picks the port (default 8000),
``LOG_LEVEL`` uvicorn's log level (default info).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from catbird import SSEEvent, Wire
from catbird.wire import WireRequest

PAGE = (Path(__file__).parent / "index.html").read_text()
DSN = os.environ.get("CATBIRD_DSN", "postgresql://localhost/postgres")
SECRET = (
    bytes.fromhex(os.environ["WIRE_SECRET"])
    if "WIRE_SECRET" in os.environ
    else (secrets.token_bytes(32))
)

wire = Wire(DSN, SECRET)


# Only rendered topics reach browsers: this renderer is the allowlist.
def render_demo(request: WireRequest, topic: str, data: str | None) -> SSEEvent:
    return SSEEvent(event="chat", data=json.dumps({"topic": topic, "text": data}))


wire.render("demo.#", render_demo)


async def page(request: Request) -> Response:
    # A real application takes the identity from its session.
    who = request.query_params.get("who", "guest")
    token = wire.token(["demo.#"], identity=who)
    return HTMLResponse(PAGE.replace("{{TOKEN}}", token))


async def send(request: Request) -> Response:
    text = (await request.body()).decode()[:500]
    await wire.notify("demo.chat", text)
    return PlainTextResponse("sent")


async def presence(request: Request) -> Response:
    return PlainTextResponse("\n".join(await wire.presence("demo.#")))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with wire:
        yield


app = Starlette(
    routes=[
        Route("/", page),
        Route("/send", send, methods=["POST"]),
        Route("/presence", presence),
        Mount("/events", app=wire.asgi_app()),
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "8000")),
        log_level=os.environ.get("LOG_LEVEL", "info"),
        # Open event streams never end by themselves: without a bound,
        # uvicorn would wait for them forever on shutdown.
        timeout_graceful_shutdown=3,
    )

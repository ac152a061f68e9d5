"""catbird Wire: real-time pub/sub over PostgreSQL notifications, with
server-sent events for browsers, sealed subscription tokens and presence.

Needs the ``web`` extra (``pip install 'catbird[web]'``) for the token cipher.

::

    wire = catbird.Wire(dsn, secret)          # secret: 32 bytes, same on every node
    wire.listen("orders.#", on_order)         # server-side handlers
    wire.render("orders.*", lambda req, topic, data: SSEEvent(data=data))
    app = wire.asgi_app()                     # GET ?token=... -> text/event-stream
    async with wire:
        token = wire.token(["orders.*"], identity="ann")
        await wire.notify("orders.created", {"id": 1})
        await wire.presence("orders.*")       # ["ann"] while ann is connected
"""

from __future__ import annotations

try:
    import cryptography  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "catbird.Wire needs the 'web' extra (the cryptography package for its tokens): "
        "pip install 'catbird[web]'"
    ) from exc

from .asgi import Wire, WireApp
from .node import GAP_TOPIC, ListenHandler, RenderHandler
from .sse import SSEEvent, WireRequest
from .tokens import InvalidToken, TokenClaims

__all__ = [
    "GAP_TOPIC",
    "InvalidToken",
    "ListenHandler",
    "RenderHandler",
    "SSEEvent",
    "TokenClaims",
    "Wire",
    "WireApp",
    "WireRequest",
]

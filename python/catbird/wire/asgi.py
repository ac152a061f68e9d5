"""The Wire's HTTP endpoints as a raw ASGI application (no framework needed):

* ``GET <mount>?token=...`` (or ``Authorization: Bearer <token>``): a
  ``text/event-stream`` of the token's topics, rendered per connection, with a
  comment line every ``sse_heartbeat`` seconds so that proxies keep an idle
  stream open;
* ``GET <mount>/poll?token=...&after=<id>``: the token identity's durable
  inbox after a cursor, as JSON, for clients that cannot keep a stream open.

A token that does not open, was changed or expired is a 401 (one answer for
all). Mount it under any path: only the last path segment ``poll`` is looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

from .node import _CLOSE, GAP_TOPIC, Subscriber, WireNode
from .sse import SSEEvent, WireRequest, encode_event
from .tokens import InvalidToken, TokenClaims

__all__ = ["ASGIApp", "Wire", "WireApp"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    # nginx buffers responses unless told not to.
    (b"x-accel-buffering", b"no"),
]


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="catbird-wire"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _request(scope: Scope, claims: TokenClaims | None) -> WireRequest:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    headers = {
        k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
    }
    return WireRequest(
        path=str(scope.get("path", "")),
        query=query,
        headers=headers,
        identity=claims.identity if claims else None,
        topics=claims.topics if claims else (),
        scope=scope,
    )


class WireApp:
    """The ASGI application of one :class:`Wire` (``wire.asgi_app()``)."""

    def __init__(self, wire: WireNode) -> None:
        self.wire = wire

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed: use GET")
            return
        request = _request(scope, None)
        token = request.query.get("token")
        auth = request.headers.get("authorization", "")
        if token is None and auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        try:
            if not token:
                raise InvalidToken("no token")
            claims = self.wire.verify(token)
        except InvalidToken:
            await _respond(send, 401, b"invalid or expired token")
            return
        request = _request(scope, claims)
        if request.path.rstrip("/").rsplit("/", 1)[-1] == "poll":
            await self._poll(request, claims, send)
        else:
            await self._stream(request, claims, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Served on its own (uvicorn module:app), the app starts and stops its Wire.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.wire.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.wire.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --------------------------------------------------------------- streaming

    async def _stream(
        self, request: WireRequest, claims: TokenClaims, receive: Receive, send: Send
    ) -> None:
        wire = self.wire
        sub = await wire.subscribe(claims, request)
        watcher = asyncio.create_task(self._watch_disconnect(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            # A first comment flushes the headers through proxies and tells the
            # client the stream is open.
            await send(
                {"type": "http.response.body", "body": b": connected\n\n", "more_body": True}
            )
            if claims.inbox:
                await self._replay_inbox(request, sub, send)
            while True:
                try:
                    async with asyncio.timeout(wire.sse_heartbeat):
                        item = await sub.queue.get()
                except TimeoutError:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b": heartbeat\n\n",
                            "more_body": True,
                        }
                    )
                    continue
                if item is _CLOSE:
                    break
                body = await self._encode(sub, *item)
                if body:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            await wire.unsubscribe(sub)
        # The stream ends: a slow client was dropped, the Wire stops, or the
        # client left (then the server ignores this).
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _encode(
        self, sub: Subscriber, topic: str, data: str | None, event_id: str | None = None
    ) -> bytes:
        if topic == GAP_TOPIC:
            return encode_event(SSEEvent("gap", data or ""), topic)
        events = await self.wire.rendered(sub, topic, data, event_id)
        return b"".join(encode_event(event, t) for event, t in events)

    @staticmethod
    async def _watch_disconnect(receive: Receive, sub: Subscriber) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                sub.close()
                return

    async def _replay_inbox(self, request: WireRequest, sub: Subscriber, send: Send) -> None:
        """Durable notifications the client has not seen (after its
        ``Last-Event-ID``), before the live events."""
        raise NotImplementedError

    # ----------------------------------------------------------------- polling

    async def _poll(self, request: WireRequest, claims: TokenClaims, send: Send) -> None:
        if not claims.inbox:
            await _respond(
                send,
                400,
                b"polling reads the durable inbox: mint the token with identity=... and inbox=True",
            )
            return
        raise NotImplementedError

    @staticmethod
    def _json(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":")).encode()


class Wire(WireNode):
    """Real-time pub/sub over PostgreSQL notifications, with SSE for browsers.

    One Wire per process (a *node*): it LISTENs on the ``catbird`` channel and
    relays every event to the :meth:`listen` handlers whose pattern matches and
    to the browser connections of :meth:`asgi_app` whose token allows the
    topic. :meth:`notify` delivers locally at once and through PostgreSQL to
    the other nodes (this node skips its own echo).

    ``secret`` (32 bytes) seals the subscription tokens of :meth:`token`: every
    node of one application needs the same secret. Use it as ``async with
    Wire(dsn, secret) as wire:`` or :meth:`start` / :meth:`stop`; the ASGI app
    served on its own (``uvicorn module:app``) starts and stops it through the
    lifespan protocol.

    A slow browser connection is disconnected when ``queue_size`` events wait
    for it (memory stays bounded); the browser's EventSource reconnects by
    itself, and with an inbox token resumes from its ``Last-Event-ID``.
    """

    def asgi_app(self) -> WireApp:
        """The ASGI application serving this Wire's SSE stream and poll endpoint."""
        return WireApp(self)

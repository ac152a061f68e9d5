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

from .node import _CLOSE, GAP_TOPIC, INBOX_POKE, Subscriber, WireNode
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


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="catbird-wire"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _cursor(value: str | None) -> int | None:
    """A notification id from a query parameter or Last-Event-ID (absent: 0)."""
    if value is None or value == "":
        return 0
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


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
        # Where an inbox stream starts: after the last id the browser saw
        # (EventSource sends it as Last-Event-ID when it reconnects), or
        # ?after=, or from the oldest unseen notification.
        cursor = _cursor(request.headers.get("last-event-id") or request.query.get("after"))
        sub = await wire.subscribe(claims, request, inbox_cursor=cursor or 0)
        watcher = asyncio.create_task(self._watch_disconnect(receive, sub))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            # A first comment flushes the headers through proxies and tells the
            # client the stream is open.
            await send(
                {"type": "http.response.body", "body": b": connected\n\n", "more_body": True}
            )
            if claims.inbox:
                sub.offer(INBOX_POKE)  # first, what the client has not seen
            while True:
                queue = sub.queue
                if queue.empty():
                    try:
                        async with asyncio.timeout(wire.sse_heartbeat):
                            first = await queue.get()
                    except TimeoutError:
                        await send(_body(b": heartbeat\n\n"))
                        continue
                else:
                    first = queue.get_nowait()
                # Everything queued goes out in one write: a busy stream pays
                # one send per batch, not per event.
                body, closing = await self._drain(sub, first)
                if body:
                    await send(_body(body))
                if closing:
                    break
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            await wire.unsubscribe(sub)
        # The stream ends: a slow client was dropped, the Wire stops, or the
        # client left (then the server ignores this).
        with contextlib.suppress(OSError):
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _drain(self, sub: Subscriber, item: Any) -> tuple[bytes, bool]:
        """``item`` and the rest queued for ``sub``, encoded; and whether the
        stream ends."""
        parts: list[bytes] = []
        queue = sub.queue
        while True:
            if item is _CLOSE:
                return b"".join(parts), True
            if item is INBOX_POKE:
                parts.append(await self._inbox_events(sub))
            else:
                parts.append(await self._encode(sub, *item))
            if queue.empty():
                return b"".join(parts), False
            item = queue.get_nowait()

    async def _encode(
        self, sub: Subscriber, topic: str, data: str | None, event_id: str | None = None
    ) -> bytes:
        if topic == GAP_TOPIC:
            return encode_event(SSEEvent("gap", data or ""), topic)
        events = await self.wire.rendered(sub.request, sub.claims, topic, data, event_id)
        return b"".join(encode_event(event, t) for event, t in events)

    @staticmethod
    async def _watch_disconnect(receive: Receive, sub: Subscriber) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                sub.close()
                return

    async def _inbox_events(self, sub: Subscriber) -> bytes:
        """The connection's durable notifications after its cursor, rendered,
        each with its row id as the SSE id; the cursor moves past every row
        read (also those its topics or renderers leave out)."""
        sub.poke_queued = False
        identity = sub.claims.identity
        assert identity is not None  # inbox tokens carry one (TokenSealer)
        parts: list[bytes] = []
        while True:
            rows = await self.wire.read_inbox(identity, sub.inbox_cursor)
            for row in rows:
                sub.inbox_cursor = row.id
                if sub.claims.allows(row.topic):
                    parts.append(await self._encode(sub, row.topic, row.message, str(row.id)))
            if len(rows) < self.wire.poll_limit:
                return b"".join(parts)

    # ----------------------------------------------------------------- polling

    async def _poll(self, request: WireRequest, claims: TokenClaims, send: Send) -> None:
        """One poll of the durable inbox: ``{"events": [{"id", "event", "data"}],
        "cursor": <id>}``; the client passes ``cursor`` as ``after`` next time.
        Nothing is marked seen: that is the application's call
        (``cb_mark_seen_until``), when the user has seen them."""
        if not claims.inbox or claims.identity is None:
            await _respond(
                send,
                400,
                b"polling reads the durable inbox: mint the token with identity=... and inbox=True",
            )
            return
        after = _cursor(request.query.get("after"))
        if after is None:
            await _respond(send, 400, b"after must be a non-negative integer (a notification id)")
            return
        rows = await self.wire.read_inbox(claims.identity, after)
        events: list[dict[str, str | None]] = []
        for row in rows:
            if not claims.allows(row.topic):
                continue
            rendered = await self.wire.rendered(
                request, claims, row.topic, row.message, str(row.id)
            )
            events.extend(
                {"id": event.id, "event": event.event or topic, "data": event.data}
                for event, topic in rendered
            )
        cursor = rows[-1].id if rows else after
        body = self._json(
            {"events": events, "cursor": cursor, "more": len(rows) == self.wire.poll_limit}
        )
        await _respond(send, 200, body, b"application/json")

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

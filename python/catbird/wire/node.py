"""The Wire node: one LISTEN connection relaying catbird events to listeners
and to the SSE connections of this process, presence, and heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import psycopg
from psycopg_pool import AsyncConnectionPool

from .. import _sql
from .._backoff import Backoff
from ..client import AsyncClient
from ..codec import dumps
from ..events import check_topic, parse_event, topic_matcher
from .sse import SSEEvent, WireRequest
from .tokens import TokenClaims, TokenSealer

if TYPE_CHECKING:
    from ..models import Notification

__all__ = [
    "GAP_TOPIC",
    "INBOX_POKE",
    "INBOX_TOPIC",
    "ListenHandler",
    "RenderHandler",
    "Subscriber",
    "WireNode",
]

log = logging.getLogger("catbird.wire")

#: The local topic listeners receive after the LISTEN connection was lost and
#: re-established: events sent in between were missed, so resync. SSE clients
#: get an ``event: gap`` at the same moment.
GAP_TOPIC = "catbird.wire.gap"

#: ``handler(topic, data)``, sync or async; ``data`` is the event's text or ``None``.
ListenHandler: TypeAlias = Callable[[str, str | None], Awaitable[None] | None]
#: ``render(request, topic, data)`` → an :class:`SSEEvent`, or ``None`` to drop
#: the event for this connection; sync or async.
RenderHandler: TypeAlias = Callable[
    [WireRequest, str, str | None], SSEEvent | Awaitable[SSEEvent | None] | None
]

#: The engine event of a new durable notification (86_wire_inbox.sql), with
#: data ``{"identity", "id", "topic"}``: connections with an inbox token of
#: that identity read their inbox after their cursor.
INBOX_TOPIC = "catbird.inbox.created"

_CLOSE: Any = object()
#: Queued for an inbox connection: read the inbox after the connection's cursor.
INBOX_POKE: Any = object()


class Subscriber:
    """One SSE connection: its claims, its request and a bounded queue of
    ``(topic, data)`` waiting to be rendered and written; for an inbox token,
    the id of the last durable notification it has been sent (its cursor)."""

    __slots__ = ("claims", "closed", "id", "inbox_cursor", "poke_queued", "queue", "request")

    def __init__(
        self, claims: TokenClaims, request: WireRequest, queue_size: int, inbox_cursor: int = 0
    ) -> None:
        self.id = uuid.uuid4()
        self.claims = claims
        self.request = request
        self.queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self.closed = False
        self.inbox_cursor = inbox_cursor
        self.poke_queued = False

    def poke(self) -> None:
        """Ask for an inbox read (once, however many notifications arrive meanwhile)."""
        if not self.poke_queued:
            self.poke_queued = True
            self.offer(INBOX_POKE)

    def offer(self, item: Any) -> None:
        """Queue an event; a full queue closes the connection (a slow client is
        dropped, and reconnects, rather than buffering without bound)."""
        if self.closed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            log.info(
                "wire: SSE client %s is too slow (%d events queued); disconnecting it",
                self.id,
                self.queue.maxsize,
            )
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSE)


class WireNode:
    """Real-time pub/sub over PostgreSQL notifications (see :class:`catbird.Wire`,
    which adds the HTTP endpoints): the LISTEN relay, listeners, renderers,
    tokens, presence and the node's heartbeat."""

    def __init__(
        self,
        dsn: str,
        secret: bytes,
        *,
        heartbeat_interval: float = 5.0,
        sse_heartbeat: float = 15.0,
        queue_size: int = 256,
        raw: bool = False,
        poll_limit: int = 100,
        pool_size: int = 4,
    ) -> None:
        self._sealer = TokenSealer(secret)
        if heartbeat_interval <= 0 or heartbeat_interval > 5.0:
            # Nodes silent for 15 s are dead (82_wire.sql): three beats must fit.
            raise ValueError("heartbeat_interval must be in (0, 5] seconds")
        if sse_heartbeat <= 0 or queue_size < 1 or poll_limit < 1:
            raise ValueError("sse_heartbeat must be positive, queue_size and poll_limit at least 1")
        self._uuid = uuid.uuid4()
        self.id = str(self._uuid)
        self._dsn = dsn
        self.heartbeat_interval = heartbeat_interval
        self.sse_heartbeat = sse_heartbeat
        self.queue_size = queue_size
        self.raw = raw
        self.poll_limit = poll_limit
        self._pool_size = pool_size
        self._listeners: list[tuple[Callable[[str], bool], ListenHandler]] = []
        self._renderers: list[tuple[Callable[[str], bool], RenderHandler]] = []
        self.subscribers: set[Subscriber] = set()
        self._pool: AsyncConnectionPool | None = None
        self._client: AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._listening = asyncio.Event()

    # ------------------------------------------------------------ configuration

    def listen(self, pattern: str, handler: ListenHandler) -> Self:
        """Call ``handler(topic, data)`` for every event whose topic matches
        ``pattern`` (binding syntax: ``*`` one token, trailing ``#`` any), on
        this node, whoever sent it. Async handlers run as tasks; sync ones run
        in the relay and must not block. Returns the Wire, for chaining."""
        self._listeners.append((topic_matcher(pattern), handler))
        return self

    def render(self, pattern: str, fn: RenderHandler) -> Self:
        """Render events matching ``pattern`` for SSE and poll clients:
        ``fn(request, topic, data)`` returns an :class:`SSEEvent` or ``None``
        (dropped for that connection). Renderers are the allowlist of what
        reaches browsers: a topic no renderer matches is not sent, unless the
        token (``raw=True``) or the Wire (``Wire(raw=True)``) allows raw
        pass-through. Several matching renderers each send an event."""
        self._renderers.append((topic_matcher(pattern), fn))
        return self

    def token(
        self,
        topics: Sequence[str],
        *,
        identity: str | None = None,
        valid_for: timedelta | None = timedelta(hours=1),
        raw: bool = False,
        inbox: bool = False,
    ) -> str:
        """A sealed, URL-safe token letting one browser connection receive
        ``topics`` (topics or patterns). ``identity`` marks the connection in
        :meth:`presence`; ``inbox=True`` (needs an identity) also delivers the
        identity's durable notifications, resumable with ``Last-Event-ID``
        and pollable; ``raw=True`` passes topics without a renderer through as
        they are; ``valid_for=None`` never expires."""
        return self._sealer.seal(
            topics, identity=identity, valid_for=valid_for, raw=raw, inbox=inbox
        )

    def verify(self, token: str) -> TokenClaims:
        """The claims of a token; :class:`catbird.wire.InvalidToken` otherwise."""
        return self._sealer.open(token)

    # ---------------------------------------------------------------- lifecycle

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError(
                "the Wire is not started: use `async with wire:` or `await wire.start()`"
            )
        return self._client

    async def start(self) -> None:
        """Open the connections, register the node and start relaying; returns
        once this node is listening (events sent after that are received)."""
        if self._client is not None:
            raise RuntimeError("the Wire is already started")
        pool = AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            kwargs={"autocommit": True},
            name=f"catbird-wire-{self.id[:8]}",
        )
        await pool.open(wait=True)
        self._pool, self._client = pool, AsyncClient(pool)
        try:
            await self._client.execute(_sql.wire_heartbeat(self._uuid))
            self._listening.clear()
            self._tasks = [
                asyncio.create_task(self._listen_loop(), name="catbird-wire-listen"),
                asyncio.create_task(self._heartbeat_loop(), name="catbird-wire-heartbeat"),
            ]
            await self._listening.wait()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every SSE connection, unregister the node (its presence goes
        with it) and close the connections."""
        for sub in list(self.subscribers):
            sub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.execute(_sql.wire_stop(self._uuid))
        if self._pool is not None:
            await self._pool.close()
        self._pool = self._client = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ sending

    async def notify(self, topic: str, message: Any = None) -> None:
        """Deliver an event to this node's listeners and SSE connections now,
        and to every other node through ``cb_notify`` (on commit of its own
        autocommit statement). ``message``: text, ``None``, or any JSON value
        (encoded). ``ValueError`` for an invalid topic; the engine rejects
        ``catbird.*`` topics and data over 7000 bytes
        (:class:`catbird.InvalidArgument`)."""
        check_topic(topic)
        data = message if message is None or isinstance(message, str) else dumps(message)
        await self.client.execute(_sql.notify(topic, data, node_id=self._uuid))
        self.deliver(topic, data)

    async def read_inbox(self, identity: str, after_id: int) -> list[Notification]:
        """Up to ``poll_limit`` unseen, unexpired durable notifications of
        ``identity`` after ``after_id``, oldest first."""
        return await self.client.execute(
            _sql.read_notifications(identity, after_id=after_id, quantity=self.poll_limit)
        )

    async def presence(self, topic: str) -> list[str]:
        """The identities connected to ``topic`` (as their tokens named it:
        a topic or a pattern) on every live node, sorted."""
        return await self.client.execute(_sql.wire_presence(topic))

    # ---------------------------------------------------------------- delivery

    def deliver(self, topic: str, data: str | None) -> None:
        """Relay one event to the matching listeners and connections of this node."""
        for match, handler in self._listeners:
            if match(topic):
                self._call_listener(handler, topic, data)
        if topic == INBOX_TOPIC:
            self._poke_inboxes(data)
        for sub in self.subscribers:
            if sub.claims.allows(topic):
                sub.offer((topic, data))

    def _poke_inboxes(self, data: str | None) -> None:
        try:
            identity = json.loads(data or "")["identity"]
        except (ValueError, TypeError, KeyError):
            return
        for sub in self.subscribers:
            if sub.claims.inbox and sub.claims.identity == identity:
                sub.poke()

    def _call_listener(self, handler: ListenHandler, topic: str, data: str | None) -> None:
        try:
            result = handler(topic, data)
        except Exception:
            log.exception("wire: listener for %s failed", topic)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[None]) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("wire: async listener failed", exc_info=task.exception())

    async def rendered(
        self,
        request: WireRequest,
        claims: TokenClaims,
        topic: str,
        data: str | None,
        event_id: str | None = None,
    ) -> list[tuple[SSEEvent, str]]:
        """The SSE events of one event for one connection: one per matching
        renderer (``None`` results dropped), or the event as it is when no
        renderer matches and raw pass-through is allowed. ``event_id`` (an inbox
        row id) is the id of events whose renderer set none."""
        out: list[tuple[SSEEvent, str]] = []
        matched = False
        for match, fn in self._renderers:
            if not match(topic):
                continue
            matched = True
            try:
                result = fn(request, topic, data)
                event = await result if inspect.isawaitable(result) else result
            except Exception:
                log.exception("wire: renderer for %s failed; event dropped for this client", topic)
                continue
            if event is not None:
                out.append((event, topic))
        if not matched and (self.raw or claims.raw):
            out.append((SSEEvent(data=data or ""), topic))
        if event_id is not None:
            out = [
                (e if e.id is not None else SSEEvent(e.event, e.data, event_id), t) for e, t in out
            ]
        return out

    # ---------------------------------------------------------- subscribers

    async def subscribe(
        self, claims: TokenClaims, request: WireRequest, *, inbox_cursor: int = 0
    ) -> Subscriber:
        """Register a connection (and its presence, when it has an identity)."""
        sub = Subscriber(claims, request, self.queue_size, inbox_cursor)
        self.subscribers.add(sub)
        if claims.identity is not None:
            try:
                await self.client.execute(
                    _sql.wire_join(self._uuid, sub.id, claims.identity, claims.topics)
                )
            except BaseException:
                self.subscribers.discard(sub)
                raise
        return sub

    async def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        sub.close()
        if sub.claims.identity is not None and self._client is not None:
            try:
                await self._client.execute(_sql.wire_leave(self._uuid, sub.id))
            except Exception as exc:  # the node's gc or stop removes the rows anyway
                log.warning("wire: presence leave failed: %s", exc)

    # ------------------------------------------------------------------- loops

    def _on_notification(self, payload: str) -> None:
        event = parse_event(payload)
        if event is None or event.node_id == self.id:
            return
        self.deliver(event.topic, event.data)

    def _gap(self) -> None:
        log.warning("wire: events sent while not listening were missed; announcing %s", GAP_TOPIC)
        data = json.dumps({"node_id": self.id})
        for match, handler in self._listeners:
            if match(GAP_TOPIC):
                self._call_listener(handler, GAP_TOPIC, data)
        for sub in self.subscribers:
            sub.offer((GAP_TOPIC, data))
            if sub.claims.inbox:
                sub.poke()  # appends announced meanwhile were missed too

    async def _listen_loop(self) -> None:
        backoff = Backoff(log)
        connected_before = False
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            delay = 0.0
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                await conn.execute(_sql.listen_events().sql)
                if connected_before:
                    self._gap()
                connected_before = True
                backoff.reset()
                self._listening.set()
                while True:
                    async for note in conn.notifies(timeout=max(5.0, self.heartbeat_interval)):
                        self._on_notification(note.payload)
                    await conn.execute(_sql.ping().sql)  # a dead connection raises here
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.failed(
                    "wire: LISTEN connection lost (%s); reconnecting in %.2f s", exc
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("wire: heartbeat failed: %s", exc)

    async def _heartbeat_once(self) -> None:
        if await self.client.execute(_sql.wire_heartbeat(self._uuid)):
            await self._rejoin()

    async def _rejoin(self) -> None:
        # Removed as stale (a long pause, or the database restarted): the
        # presence rows went with the node row.
        log.warning("wire: node %s was unregistered; joining its connections again", self.id)
        for sub in list(self.subscribers):
            if sub.claims.identity is not None and not sub.closed:
                await self.client.execute(
                    _sql.wire_join(self._uuid, sub.id, sub.claims.identity, sub.claims.topics)
                )

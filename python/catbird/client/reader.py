"""Reader loops over a plain queue: ack on success, nack on exception.

::

    def handle(msg: catbird.Message) -> None:
        print(msg.id, msg.body)

    reader = client.reader("orders", handle, quantity=10, hide_for=30.0)
    threading.Thread(target=reader.run).start()
    ...
    reader.stop()          # graceful: see below

Each round claims up to ``quantity`` messages with ``cb_read_poll`` (the
server waits up to ``poll_for`` seconds for messages to appear), then calls the
handler on each message in order:

- the handler returns normally: the message is acked. Acks of one round are
  sent as one ``cb_delete(ids)`` call after the round.
- the handler raises an ``Exception``: the message is nacked. It stays hidden
  until its ``hide_for`` window passes and is then delivered again (its
  ``deliveries`` count goes up). With ``nack_delay`` the nacked messages of the
  round are instead re-hidden for ``nack_delay`` seconds from now (one
  ``cb_hide(ids)`` call), e.g. ``nack_delay=0.001`` retries at once.

Every ack and nack carries the message's receipt (its ``deliveries`` as
read): a message whose hide window lapsed while its handler ran, and that
another consumer holds now, is neither deleted nor re-hidden by this one.

On a queue created with ``max_deliveries`` the reader learns that limit
when it starts: a message that fails on its last delivery is released at
once (rather than after ``hide_for``), so the next read moves it to the
dead-letter queue (or drops it when the queue has none), and the log says so.

``stop()`` is graceful: the message being handled is finished (and acked or
nacked), claimed messages of the round that were not handed to the handler yet
are released (made visible again right away), and ``run()`` returns. A reader
waiting in ``cb_read_poll`` notices the stop when that call returns, so the
stop latency is at most ``poll_for`` plus the time of the in-flight handler.
``stop()`` may be called from any thread (or a signal handler), before or
during ``run()``; a stopped reader stays stopped.

The reader commits as it goes, so give it a pool-backed client or one on an
autocommit connection (as :meth:`catbird.Client.connect` opens), not a client
bound to a connection inside a transaction.

Database errors (including a lost connection) propagate out of ``run()``
after the acks collected so far have been attempted; restart the reader to
resume. Nothing is lost: unacked messages become visible again when their
hide window passes.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from .. import _sql
from .._sql import AsyncExecutor, Duration, Executor, Query
from ..models import Message, QueueInfo

__all__ = ["AsyncReader", "AsyncReaderHandler", "Reader", "ReaderHandler"]

#: What a :class:`Reader` calls with each message.
ReaderHandler: TypeAlias = Callable[[Message], object]
#: What an :class:`AsyncReader` calls with each message: a coroutine function,
#: or a plain function (run in a worker thread).
AsyncReaderHandler: TypeAlias = Callable[[Message], Awaitable[object]] | Callable[[Message], object]

logger = logging.getLogger("catbird.reader")

#: The shortest hide window: used to release claimed messages on stop.
_RELEASE = 0.001


class _Round:
    """Bookkeeping of one claimed batch, shared by the sync and async loops."""

    __slots__ = ("acked", "last", "messages", "nacked", "queue")

    def __init__(self, queue: str, messages: Sequence[Message]) -> None:
        self.queue = queue
        self.messages = messages
        self.acked: list[Message] = []
        self.nacked: list[Message] = []
        #: Nacked messages on their last delivery: released at once.
        self.last: list[Message] = []

    def settle_queries(self, nack_delay: Duration | None) -> list[Query[list[int]]]:
        """The statements that settle this round: acks, delayed nacks, releases.

        Each carries the messages' receipts (``deliveries`` as read)."""
        queries: list[Query[list[int]]] = []
        if self.acked:
            queries.append(_receipted(_sql.delete_many, self.queue, self.acked))
        if self.nacked and nack_delay is not None:
            queries.append(_receipted(_sql.hide_many, self.queue, self.nacked, hide_for=nack_delay))
        done = {m.id for m in self.acked} | {m.id for m in self.nacked}
        unhandled = [m for m in self.messages if m.id not in done]
        release = [*unhandled, *(m for m in self.last if nack_delay is None)]
        if release:
            queries.append(_receipted(_sql.hide_many, self.queue, release, hide_for=_RELEASE))
        return queries


def _receipted(
    statement: Callable[..., Query[list[int]]],
    queue: str,
    messages: Sequence[Message],
    **kwargs: Any,
) -> Query[list[int]]:
    return statement(
        queue, [m.id for m in messages], deliveries=[m.deliveries for m in messages], **kwargs
    )


_C = TypeVar("_C")
_H = TypeVar("_H")


class _ReaderBase(Generic[_C, _H]):
    def __init__(
        self,
        client: _C,
        queue: str,
        handler: _H,
        *,
        quantity: int = 10,
        hide_for: Duration = 30.0,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.1,
        nack_delay: Duration | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.queue = queue
        self.quantity = quantity
        self.hide_for = hide_for
        self.poll_for = poll_for
        self.poll_interval = poll_interval
        self.nack_delay = nack_delay
        self._stop = threading.Event()
        #: Messages handled successfully (acked) since construction.
        self.acked = 0
        #: Messages whose handler raised (nacked) since construction.
        self.nacked = 0
        #: The queue's ``max_deliveries`` and ``dead_letter_queue`` (read at start).
        self.max_deliveries: int | None = None
        self.dead_letter_queue: str | None = None

    def stop(self) -> None:
        """Ask the loop to finish the in-flight message and return."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def _queue_query(self) -> Query[QueueInfo]:
        return _sql.get_queue(self.queue)

    def _configure(self, info: QueueInfo) -> None:
        self.max_deliveries = info.max_deliveries
        self.dead_letter_queue = info.dead_letter_queue

    def _poll_query(self) -> Query[list[Message]]:
        return _sql.read_poll(
            self.queue,
            quantity=self.quantity,
            hide_for=self.hide_for,
            poll_for=self.poll_for,
            poll_interval=self.poll_interval,
        )

    def _record(self, rnd: _Round, msg: Message, error: Exception | None) -> None:
        if error is None:
            rnd.acked.append(msg)
            self.acked += 1
            return
        limit = self.max_deliveries
        if limit is not None and msg.deliveries >= limit:
            rnd.last.append(msg)
            where = (
                f"moved to dead-letter queue {self.dead_letter_queue!r}"
                if self.dead_letter_queue
                else "dropped (the queue has no dead-letter queue)"
            )
            outcome = f"delivery {msg.deliveries} of {limit}; nacked, {where} at the next read"
        else:
            outcome = f"delivery {msg.deliveries}; nacked"
        logger.warning(
            "catbird reader: handler failed on %s message %s (%s)",
            self.queue,
            msg.id,
            outcome,
            exc_info=error,
        )
        rnd.nacked.append(msg)
        self.nacked += 1


class Reader(_ReaderBase[Executor, ReaderHandler]):
    """Blocking reader loop; see the module documentation."""

    def run(self) -> None:
        """Read and handle messages until :meth:`stop` is called."""
        self._configure(self.client.execute(self._queue_query()))
        poll = self._poll_query()
        while not self._stop.is_set():
            messages = self.client.execute(poll)
            if messages:
                self._handle_round(messages)

    def _handle_round(self, messages: Sequence[Message]) -> None:
        rnd = _Round(self.queue, messages)
        try:
            for msg in messages:
                if self._stop.is_set():
                    break
                try:
                    self.handler(msg)
                except Exception as exc:
                    self._record(rnd, msg, exc)
                else:
                    self._record(rnd, msg, None)
        finally:
            for query in rnd.settle_queries(self.nack_delay):
                self.client.execute(query)


class AsyncReader(_ReaderBase[AsyncExecutor, AsyncReaderHandler]):
    """Asyncio reader loop; the handler may be a coroutine function or a plain
    function (which then runs in a worker thread so it cannot block the loop)."""

    @functools.cached_property
    def _is_async(self) -> bool:
        return _is_async_callable(self.handler)

    async def run(self) -> None:
        """Read and handle messages until :meth:`stop` is called."""
        self._configure(await self.client.execute(self._queue_query()))
        poll = self._poll_query()
        while not self._stop.is_set():
            messages = await self.client.execute(poll)
            if messages:
                await self._handle_round(messages)

    async def _call(self, msg: Message) -> None:
        if self._is_async:
            result: Any = self.handler(msg)
        else:
            result = await asyncio.to_thread(self.handler, msg)
        if inspect.isawaitable(result):
            await result

    async def _handle_round(self, messages: Sequence[Message]) -> None:
        rnd = _Round(self.queue, messages)
        try:
            for msg in messages:
                if self._stop.is_set():
                    break
                try:
                    await self._call(msg)
                except Exception as exc:
                    self._record(rnd, msg, exc)
                else:
                    self._record(rnd, msg, None)
        finally:
            for query in rnd.settle_queries(self.nack_delay):
                await self.client.execute(query)


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)

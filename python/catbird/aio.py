"""The asyncio client: :class:`AsyncClient`, the twin of :class:`catbird.Client`.

::

    client = await catbird.AsyncClient.connect(dsn)   # owns an autocommit connection
    client = catbird.AsyncClient(pool)                # psycopg_pool.AsyncConnectionPool
    client = catbird.AsyncClient(aconn)               # a psycopg.AsyncConnection you own

Same methods, same arguments and the same statements (:mod:`catbird._sql`) as
the sync client; every call is a coroutine. ``client.using(aconn)`` binds the
calls to your connection so they join your transaction::

    async with pool.connection() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await client.using(conn).send("orders", {"id": 1})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from . import _sql
from ._sql import Duration, Query
from .errors import map_error
from .models import Binding, Message, QueueInfo
from .reader import AsyncReader

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """Typed async access to catbird's SQL API over a psycopg connection or pool."""

    def __init__(
        self,
        conn_or_pool: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
        *,
        owned: bool = False,
    ) -> None:
        """Wrap a connection or a pool.

        ``owned=True`` makes :meth:`close` (and leaving a ``with`` block) close
        the connection or pool as well; by default it is left to the caller.
        """
        self._conn: psycopg.AsyncConnection[Any] | None
        self._pool: AsyncConnectionPool[Any] | None
        if isinstance(conn_or_pool, AsyncConnectionPool):
            self._conn, self._pool = None, conn_or_pool
        elif isinstance(conn_or_pool, psycopg.AsyncConnection):
            self._conn, self._pool = conn_or_pool, None
        else:
            raise TypeError(
                "AsyncClient() takes a psycopg.AsyncConnection or a"
                " psycopg_pool.AsyncConnectionPool,"
                f" not {type(conn_or_pool).__name__}"
            )
        self._owned = owned

    @classmethod
    async def connect(cls, dsn: str, **kwargs: Any) -> AsyncClient:
        """Open an autocommit connection to ``dsn`` owned by the new client.

        Extra keyword arguments go to :meth:`psycopg.AsyncConnection.connect`.
        """
        kwargs.setdefault("autocommit", True)
        conn = await psycopg.AsyncConnection.connect(dsn, **kwargs)
        return cls(conn, owned=True)

    def using(self, conn: psycopg.AsyncConnection[Any]) -> AsyncClient:
        """A client bound to ``conn``, so calls join the caller's transaction."""
        return AsyncClient(conn)

    @property
    def connection(self) -> psycopg.AsyncConnection[Any] | None:
        """The bound connection, or ``None`` for a pool-backed client."""
        return self._conn

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        """The pool, or ``None`` for a connection-bound client."""
        return self._pool

    async def close(self) -> None:
        """Close the connection or pool if this client owns it."""
        if not self._owned:
            return
        if self._conn is not None:
            await self._conn.close()
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------
    # execution

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

    async def execute(self, query: Query[T]) -> T:
        """Run one :class:`catbird._sql.Query` and decode its rows."""
        async with self._connection() as conn:
            try:
                async with conn.cursor(row_factory=tuple_row) as cur:
                    await cur.execute(query.sql, query.params)
                    rows = await cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                mapped = map_error(exc)
                if mapped is None:
                    raise
                raise mapped from exc
        return query.decode(rows)

    # ------------------------------------------------------------------
    # queues

    async def create_queue(
        self, name: str, *, expires_at: datetime | None = None, description: str | None = None
    ) -> None:
        """Create a queue; creating an existing queue is a no-op."""
        await self.execute(_sql.create_queue(name, expires_at=expires_at, description=description))

    async def delete_queue(self, name: str) -> bool:
        """Drop a queue with its messages and bindings; False if it did not exist."""
        return await self.execute(_sql.delete_queue(name))

    async def purge_queue(self, name: str) -> int:
        """Delete every message of a queue; returns how many were deleted."""
        return await self.execute(_sql.purge_queue(name))

    async def get_queue(self, name: str) -> QueueInfo:
        """Describe a queue; raises :class:`catbird.NotFound` when it does not exist."""
        return await self.execute(_sql.get_queue(name))

    async def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        return await self.execute(_sql.list_queues())

    # ------------------------------------------------------------------
    # messages

    async def send(
        self,
        queue: str,
        body: Any,
        *,
        topic: str | None = None,
        concurrency_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        visible_at: datetime | None = None,
        priority: int = 0,
        expires_at: datetime | None = None,
    ) -> int:
        """Enqueue one message and return its id.

        With a ``concurrency_key`` held by a live message of the queue, nothing
        is written and the live message's id is returned.
        """
        return await self.execute(
            _sql.send(
                queue,
                body,
                topic=topic,
                concurrency_key=concurrency_key,
                headers=headers,
                visible_at=visible_at,
                priority=priority,
                expires_at=expires_at,
            )
        )

    async def send_many(
        self,
        queue: str,
        bodies: Iterable[Any],
        *,
        topic: str | None = None,
        concurrency_keys: Sequence[str | None] | None = None,
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        visible_at: datetime | None = None,
        priority: int = 0,
        expires_at: datetime | None = None,
    ) -> list[int]:
        """Enqueue several messages in one statement; returns their ids in order."""
        return await self.execute(
            _sql.send_many(
                queue,
                bodies,
                topic=topic,
                concurrency_keys=concurrency_keys,
                headers=headers,
                visible_at=visible_at,
                priority=priority,
                expires_at=expires_at,
            )
        )

    async def read(
        self, queue: str, *, quantity: int = 1, hide_for: Duration = 30.0
    ) -> list[Message]:
        """Claim up to ``quantity`` messages, hiding them for ``hide_for`` seconds."""
        return await self.execute(_sql.read(queue, quantity=quantity, hide_for=hide_for))

    async def read_poll(
        self,
        queue: str,
        *,
        quantity: int = 1,
        hide_for: Duration = 30.0,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.1,
    ) -> list[Message]:
        """Like :meth:`read`, waiting up to ``poll_for`` seconds for messages."""
        return await self.execute(
            _sql.read_poll(
                queue,
                quantity=quantity,
                hide_for=hide_for,
                poll_for=poll_for,
                poll_interval=poll_interval,
            )
        )

    @overload
    async def hide(self, queue: str, id_or_ids: int, *, hide_for: Duration) -> bool: ...
    @overload
    async def hide(
        self, queue: str, id_or_ids: Iterable[int], *, hide_for: Duration
    ) -> list[int]: ...
    async def hide(
        self, queue: str, id_or_ids: int | Iterable[int], *, hide_for: Duration
    ) -> bool | list[int]:
        """Push a message's visibility ``hide_for`` seconds out.

        Given one id, returns whether it existed; given ids, returns those hidden.
        """
        if isinstance(id_or_ids, int):
            return await self.execute(_sql.hide(queue, id_or_ids, hide_for=hide_for))
        return await self.execute(_sql.hide_many(queue, id_or_ids, hide_for=hide_for))

    async def hide_many(self, queue: str, ids: Iterable[int], *, hide_for: Duration) -> list[int]:
        """Hide several messages; returns the ids actually hidden."""
        return await self.execute(_sql.hide_many(queue, ids, hide_for=hide_for))

    @overload
    async def delete(self, queue: str, id_or_ids: int) -> bool: ...
    @overload
    async def delete(self, queue: str, id_or_ids: Iterable[int]) -> list[int]: ...
    async def delete(self, queue: str, id_or_ids: int | Iterable[int]) -> bool | list[int]:
        """Ack (delete) messages.

        Given one id, returns whether it existed; given ids, returns those deleted.
        """
        if isinstance(id_or_ids, int):
            return await self.execute(_sql.delete(queue, id_or_ids))
        return await self.execute(_sql.delete_many(queue, id_or_ids))

    async def delete_many(self, queue: str, ids: Iterable[int]) -> list[int]:
        """Delete several messages; returns the ids actually deleted."""
        return await self.execute(_sql.delete_many(queue, ids))

    # ------------------------------------------------------------------
    # topics

    async def bind(self, queue: str, pattern: str) -> None:
        """Subscribe a queue to a topic pattern (``*`` one token, trailing ``#`` any)."""
        await self.execute(_sql.bind(queue, pattern))

    async def unbind(self, queue: str, pattern: str) -> bool:
        """Remove a subscription; False if it did not exist."""
        return await self.execute(_sql.unbind(queue, pattern))

    async def list_bindings(self, queue: str | None = None) -> list[Binding]:
        """Bindings of one queue, or of all queues."""
        return await self.execute(_sql.list_bindings(queue))

    async def publish(
        self,
        topic: str,
        body: Any,
        *,
        concurrency_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        visible_at: datetime | None = None,
        priority: int = 0,
        expires_at: datetime | None = None,
    ) -> int:
        """Deliver to every queue (and task/flow) bound to a matching pattern.

        Returns the number of deliveries.
        """
        return await self.execute(
            _sql.publish(
                topic,
                body,
                concurrency_key=concurrency_key,
                headers=headers,
                visible_at=visible_at,
                priority=priority,
                expires_at=expires_at,
            )
        )

    async def publish_many(
        self,
        topic: str,
        bodies: Iterable[Any],
        *,
        concurrency_keys: Sequence[str | None] | None = None,
        headers: Sequence[Mapping[str, Any] | None] | None = None,
        visible_at: datetime | None = None,
        priority: int = 0,
        expires_at: datetime | None = None,
    ) -> int:
        """Publish several messages in one statement; returns targets x messages."""
        return await self.execute(
            _sql.publish_many(
                topic,
                bodies,
                concurrency_keys=concurrency_keys,
                headers=headers,
                visible_at=visible_at,
                priority=priority,
                expires_at=expires_at,
            )
        )

    # ------------------------------------------------------------------
    # reader

    def reader(
        self,
        queue: str,
        handler: Callable[[Message], Awaitable[object]] | Callable[[Message], object],
        *,
        quantity: int = 10,
        hide_for: Duration = 30.0,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.1,
        nack_delay: Duration | None = None,
    ) -> AsyncReader:
        """A :class:`catbird.AsyncReader` loop over ``queue`` (``await reader.run()``)."""
        return AsyncReader(
            self,
            queue,
            handler,
            quantity=quantity,
            hide_for=hide_for,
            poll_for=poll_for,
            poll_interval=poll_interval,
            nack_delay=nack_delay,
        )

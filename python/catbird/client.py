"""The synchronous client.

::

    client = catbird.Client.connect(dsn)      # owns an autocommit connection
    client = catbird.Client(pool)             # psycopg_pool.ConnectionPool
    client = catbird.Client(conn)             # a psycopg.Connection you own

With a pool, every call borrows a connection and commits when it returns.
With a connection, calls run on it as they are: on an autocommit connection
each call commits on its own; inside ``with conn.transaction():`` (or on a
non-autocommit connection) they are part of your transaction. Use
:meth:`Client.using` to enqueue atomically with your own writes::

    with pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        client.using(conn).send("orders", {"id": 1})   # commits with the insert

Durations are seconds (``float``) or ``timedelta``; timestamps are aware
``datetime`` objects. All statements live in :mod:`catbird._sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, overload

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from . import _sql
from ._sql import Duration, Query
from .errors import map_error
from .models import Binding, Message, QueueInfo
from .reader import Reader

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Typed access to catbird's SQL API over a psycopg connection or pool."""

    def __init__(
        self,
        conn_or_pool: psycopg.Connection[Any] | ConnectionPool[Any],
        *,
        owned: bool = False,
    ) -> None:
        """Wrap a connection or a pool.

        ``owned=True`` makes :meth:`close` (and leaving a ``with`` block) close
        the connection or pool as well; by default it is left to the caller.
        """
        self._conn: psycopg.Connection[Any] | None
        self._pool: ConnectionPool[Any] | None
        if isinstance(conn_or_pool, ConnectionPool):
            self._conn, self._pool = None, conn_or_pool
        elif isinstance(conn_or_pool, psycopg.Connection):
            self._conn, self._pool = conn_or_pool, None
        else:
            raise TypeError(
                "Client() takes a psycopg.Connection or a psycopg_pool.ConnectionPool,"
                f" not {type(conn_or_pool).__name__}"
            )
        self._owned = owned

    @classmethod
    def connect(cls, dsn: str, **kwargs: Any) -> Client:
        """Open an autocommit connection to ``dsn`` owned by the new client.

        Extra keyword arguments go to :func:`psycopg.connect`.
        """
        kwargs.setdefault("autocommit", True)
        conn = psycopg.connect(dsn, **kwargs)
        return cls(conn, owned=True)

    def using(self, conn: psycopg.Connection[Any]) -> Client:
        """A client bound to ``conn``, so calls join the caller's transaction."""
        return Client(conn)

    @property
    def connection(self) -> psycopg.Connection[Any] | None:
        """The bound connection, or ``None`` for a pool-backed client."""
        return self._conn

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        """The pool, or ``None`` for a connection-bound client."""
        return self._pool

    def close(self) -> None:
        """Close the connection or pool if this client owns it."""
        if not self._owned:
            return
        if self._conn is not None:
            self._conn.close()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------
    # execution

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
        else:
            assert self._conn is not None
            yield self._conn

    def execute(self, query: Query[T]) -> T:
        """Run one :class:`catbird._sql.Query` and decode its rows."""
        with self._connection() as conn:
            try:
                with conn.cursor(row_factory=tuple_row) as cur:
                    cur.execute(query.sql, query.params)
                    rows = cur.fetchall() if cur.description is not None else []
            except psycopg.Error as exc:
                mapped = map_error(exc)
                if mapped is None:
                    raise
                raise mapped from exc
        return query.decode(rows)

    # ------------------------------------------------------------------
    # queues

    def create_queue(
        self, name: str, *, expires_at: datetime | None = None, description: str | None = None
    ) -> None:
        """Create a queue; creating an existing queue is a no-op."""
        self.execute(_sql.create_queue(name, expires_at=expires_at, description=description))

    def delete_queue(self, name: str) -> bool:
        """Drop a queue with its messages and bindings; False if it did not exist."""
        return self.execute(_sql.delete_queue(name))

    def purge_queue(self, name: str) -> int:
        """Delete every message of a queue; returns how many were deleted."""
        return self.execute(_sql.purge_queue(name))

    def get_queue(self, name: str) -> QueueInfo:
        """Describe a queue; raises :class:`catbird.NotFound` when it does not exist."""
        return self.execute(_sql.get_queue(name))

    def list_queues(self) -> list[QueueInfo]:
        """Every queue, by name."""
        return self.execute(_sql.list_queues())

    # ------------------------------------------------------------------
    # messages

    def send(
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
        return self.execute(
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

    def send_many(
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
        return self.execute(
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

    def read(self, queue: str, *, quantity: int = 1, hide_for: Duration = 30.0) -> list[Message]:
        """Claim up to ``quantity`` messages, hiding them for ``hide_for`` seconds."""
        return self.execute(_sql.read(queue, quantity=quantity, hide_for=hide_for))

    def read_poll(
        self,
        queue: str,
        *,
        quantity: int = 1,
        hide_for: Duration = 30.0,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.1,
    ) -> list[Message]:
        """Like :meth:`read`, waiting up to ``poll_for`` seconds for messages."""
        return self.execute(
            _sql.read_poll(
                queue,
                quantity=quantity,
                hide_for=hide_for,
                poll_for=poll_for,
                poll_interval=poll_interval,
            )
        )

    @overload
    def hide(self, queue: str, id_or_ids: int, *, hide_for: Duration) -> bool: ...
    @overload
    def hide(self, queue: str, id_or_ids: Iterable[int], *, hide_for: Duration) -> list[int]: ...
    def hide(
        self, queue: str, id_or_ids: int | Iterable[int], *, hide_for: Duration
    ) -> bool | list[int]:
        """Push a message's visibility ``hide_for`` seconds out.

        Given one id, returns whether it existed; given ids, returns those hidden.
        """
        if isinstance(id_or_ids, int):
            return self.execute(_sql.hide(queue, id_or_ids, hide_for=hide_for))
        return self.execute(_sql.hide_many(queue, id_or_ids, hide_for=hide_for))

    def hide_many(self, queue: str, ids: Iterable[int], *, hide_for: Duration) -> list[int]:
        """Hide several messages; returns the ids actually hidden."""
        return self.execute(_sql.hide_many(queue, ids, hide_for=hide_for))

    @overload
    def delete(self, queue: str, id_or_ids: int) -> bool: ...
    @overload
    def delete(self, queue: str, id_or_ids: Iterable[int]) -> list[int]: ...
    def delete(self, queue: str, id_or_ids: int | Iterable[int]) -> bool | list[int]:
        """Ack (delete) messages.

        Given one id, returns whether it existed; given ids, returns those deleted.
        """
        if isinstance(id_or_ids, int):
            return self.execute(_sql.delete(queue, id_or_ids))
        return self.execute(_sql.delete_many(queue, id_or_ids))

    def delete_many(self, queue: str, ids: Iterable[int]) -> list[int]:
        """Delete several messages; returns the ids actually deleted."""
        return self.execute(_sql.delete_many(queue, ids))

    # ------------------------------------------------------------------
    # topics

    def bind(self, queue: str, pattern: str) -> None:
        """Subscribe a queue to a topic pattern (``*`` one token, trailing ``#`` any)."""
        self.execute(_sql.bind(queue, pattern))

    def unbind(self, queue: str, pattern: str) -> bool:
        """Remove a subscription; False if it did not exist."""
        return self.execute(_sql.unbind(queue, pattern))

    def list_bindings(self, queue: str | None = None) -> list[Binding]:
        """Bindings of one queue, or of all queues."""
        return self.execute(_sql.list_bindings(queue))

    def publish(
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
        return self.execute(
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

    def publish_many(
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
        return self.execute(
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
        handler: Callable[[Message], object],
        *,
        quantity: int = 10,
        hide_for: Duration = 30.0,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.1,
        nack_delay: Duration | None = None,
    ) -> Reader:
        """A :class:`catbird.Reader` loop over ``queue`` (start it with ``.run()``)."""
        return Reader(
            self,
            queue,
            handler,
            quantity=quantity,
            hide_for=hide_for,
            poll_for=poll_for,
            poll_interval=poll_interval,
            nack_delay=nack_delay,
        )

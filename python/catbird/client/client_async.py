"""The client: typed access to catbird's SQL API (:class:`AsyncClient`).

::

    client = await catbird.AsyncClient.connect(dsn)  # owns an autocommit connection
    client = catbird.AsyncClient(pool)  # a psycopg_pool.AsyncConnectionPool
    client = catbird.AsyncClient(aconn)  # a psycopg.AsyncConnection you own

With a pool, every call borrows a connection and commits when it returns.
With a connection, calls run on it as they are: on an autocommit connection
each call commits on its own; inside ``conn.transaction()`` (or on a
non-autocommit connection) they are part of your transaction. Use
:meth:`AsyncClient.using` to enqueue atomically with your own writes::

    async with pool.connection() as aconn, aconn.transaction():
        await aconn.execute("INSERT INTO orders ...")
        await client.using(aconn).send("orders", {"id": 1})   # commits with the insert

Durations are seconds (``float``) or ``timedelta``; timestamps are aware
``datetime`` objects. Every statement is declared in :mod:`catbird._sql`.
The asyncio client is the source: the sync :class:`catbird.Client` is
generated from it (``tools/async_to_sync.py``) and has the same methods.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, Unpack, overload

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from .. import _sql
from .._sql import BatchEnqueueOptions, Duration, EnqueueOptions, Query
from ..definitions import Task, definition_args, output_decoder, task_name
from ..definitions.flows import Flow, flow_name
from ..definitions.flows import output_decoder as flow_output_decoder
from ..errors import map_error
from ..models import (
    Binding,
    FlowInfo,
    FlowRunInfo,
    FlowScheduleInfo,
    HealthReport,
    Message,
    MetricSample,
    Notification,
    QueueInfo,
    RunOutcome,
    StepRunInfo,
    TaskInfo,
    TaskRunInfo,
    TaskScheduleInfo,
    WorkerInfo,
)
from .handles_async import AsyncFlowHandle, AsyncTaskHandle
from .reader import AsyncReader, AsyncReaderHandler

__all__ = ["AsyncClient", "connect_like"]

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741 - a task's output type

log = logging.getLogger("catbird.client")


async def connect_like(
    source: psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any],
) -> psycopg.AsyncConnection[Any]:
    """A new autocommit connection to the same server as ``source`` (a
    connection: its parameters and password; a pool: its conninfo and kwargs),
    e.g. for LISTEN, which needs a connection of its own."""
    if isinstance(source, AsyncConnectionPool):
        conninfo: Any = source.conninfo
        kwargs: Any = source.kwargs
        if callable(conninfo):
            conninfo = conninfo()
        if inspect.isawaitable(conninfo):
            conninfo = await conninfo
        if callable(kwargs):
            kwargs = kwargs()
        if inspect.isawaitable(kwargs):
            kwargs = await kwargs
        return await psycopg.AsyncConnection.connect(
            str(conninfo), **{**(kwargs or {}), "autocommit": True}
        )
    password = source.pgconn.password  # info.dsn leaves it out
    conninfo = source.info.dsn
    if password:
        conninfo = make_conninfo(conninfo, password=password.decode())
    return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)


class AsyncClient:
    """Typed access to catbird's SQL API over a psycopg connection or pool."""

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

    @asynccontextmanager
    async def _listening(self) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
        """A new connection LISTENing on the events channel, closed on exit;
        ``None`` when none can be opened (callers then poll)."""
        source = self._pool if self._pool is not None else self._conn
        assert source is not None
        try:
            conn = await connect_like(source)
        except psycopg.Error as exc:
            log.debug("cannot open a connection to listen for events (%s); polling", exc)
            yield None
            return
        try:
            await AsyncClient(conn).execute(_sql.listen_events())
            yield conn
        finally:
            await conn.close()

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
        self,
        name: str,
        *,
        expires_at: datetime | None = None,
        description: str | None = None,
        max_deliveries: int | None = None,
        dead_letter_queue: str | None = None,
    ) -> None:
        """Create a queue; creating an existing queue is a no-op.

        With ``max_deliveries``, a message about to be delivered once more
        (read ``max_deliveries`` times and never deleted) is moved to
        ``dead_letter_queue`` instead (a queue that must exist), keeping its
        body and headers; without a dead-letter queue it is deleted.
        """
        await self.execute(
            _sql.create_queue(
                name,
                expires_at=expires_at,
                description=description,
                max_deliveries=max_deliveries,
                dead_letter_queue=dead_letter_queue,
            )
        )

    async def redrive(self, dead_letter_queue: str, *, quantity: int | None = None) -> int:
        """Move messages of a dead-letter queue back to the queues they came
        from, with their deliveries reset (``quantity``: at most that many,
        oldest first); returns how many were moved."""
        return await self.execute(_sql.redrive(dead_letter_queue, quantity=quantity))

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
        **options: Unpack[EnqueueOptions],
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
                **options,
            )
        )

    async def send_many(
        self,
        queue: str,
        bodies: Iterable[Any],
        *,
        topic: str | None = None,
        **options: Unpack[BatchEnqueueOptions],
    ) -> list[int]:
        """Enqueue several messages in one statement; returns their ids in order."""
        return await self.execute(
            _sql.send_many(
                queue,
                bodies,
                topic=topic,
                **options,
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

    async def pop(self, queue: str, *, quantity: int = 1) -> list[Message]:
        """Claim and delete up to ``quantity`` messages in one statement.

        One commit per batch instead of :meth:`read` + :meth:`delete`'s two; a
        message whose handling fails is lost, so pop only what needs no retry.
        """
        return await self.execute(_sql.pop(queue, quantity=quantity))

    @overload
    async def hide(
        self, queue: str, id_or_ids: int, *, hide_for: Duration, deliveries: int | None = None
    ) -> bool: ...
    @overload
    async def hide(
        self,
        queue: str,
        id_or_ids: Iterable[int],
        *,
        hide_for: Duration,
        deliveries: Iterable[int] | None = None,
    ) -> list[int]: ...
    async def hide(
        self,
        queue: str,
        id_or_ids: int | Iterable[int],
        *,
        hide_for: Duration,
        deliveries: int | Iterable[int] | None = None,
    ) -> bool | list[int]:
        """Push a message's visibility ``hide_for`` seconds out.

        Given one id, returns whether it was hidden; given ids, returns those
        hidden. ``deliveries`` (one per id: each message's ``deliveries`` as
        read) is a receipt: a message delivered again since is left alone.
        """
        if isinstance(id_or_ids, int):
            receipt = deliveries if isinstance(deliveries, int) else None
            return await self.execute(
                _sql.hide(queue, id_or_ids, hide_for=hide_for, delivery=receipt)
            )
        many = None if deliveries is None or isinstance(deliveries, int) else deliveries
        return await self.execute(
            _sql.hide_many(queue, id_or_ids, hide_for=hide_for, deliveries=many)
        )

    async def hide_many(
        self,
        queue: str,
        ids: Iterable[int],
        *,
        hide_for: Duration,
        deliveries: Iterable[int] | None = None,
    ) -> list[int]:
        """Hide several messages; returns the ids actually hidden (see :meth:`hide`)."""
        return await self.execute(
            _sql.hide_many(queue, ids, hide_for=hide_for, deliveries=deliveries)
        )

    @overload
    async def delete(
        self, queue: str, id_or_ids: int, *, deliveries: int | None = None
    ) -> bool: ...
    @overload
    async def delete(
        self, queue: str, id_or_ids: Iterable[int], *, deliveries: Iterable[int] | None = None
    ) -> list[int]: ...
    async def delete(
        self,
        queue: str,
        id_or_ids: int | Iterable[int],
        *,
        deliveries: int | Iterable[int] | None = None,
    ) -> bool | list[int]:
        """Ack (delete) messages.

        Given one id, returns whether it was deleted; given ids, returns those
        deleted. ``deliveries`` (one per id: each message's ``deliveries`` as
        read) is a receipt: a message delivered again since (its hide window
        lapsed and another consumer holds it) is kept.
        """
        if isinstance(id_or_ids, int):
            receipt = deliveries if isinstance(deliveries, int) else None
            return await self.execute(_sql.delete(queue, id_or_ids, delivery=receipt))
        many = None if deliveries is None or isinstance(deliveries, int) else deliveries
        return await self.execute(_sql.delete_many(queue, id_or_ids, deliveries=many))

    async def delete_many(
        self, queue: str, ids: Iterable[int], *, deliveries: Iterable[int] | None = None
    ) -> list[int]:
        """Delete several messages; returns the ids actually deleted (see :meth:`delete`)."""
        return await self.execute(_sql.delete_many(queue, ids, deliveries=deliveries))

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
        **options: Unpack[EnqueueOptions],
    ) -> int:
        """Deliver to every queue (and task/flow) bound to a matching pattern.

        Returns the number of deliveries.
        """
        return await self.execute(
            _sql.publish(
                topic,
                body,
                **options,
            )
        )

    async def publish_many(
        self,
        topic: str,
        bodies: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> int:
        """Publish several messages in one statement; returns targets x messages."""
        return await self.execute(
            _sql.publish_many(
                topic,
                bodies,
                **options,
            )
        )

    # ------------------------------------------------------------------
    # reader

    def reader(
        self,
        queue: str,
        handler: AsyncReaderHandler,
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

    # ------------------------------------------------------------------
    # tasks
    #
    # Every call takes the task as a name or as a catbird.Task.

    async def create_task(
        self,
        task: Task[Any, Any] | str,
        *,
        description: str | None = None,
        condition: str | None = None,
        retention_period: float | timedelta | None = None,
        on_fail: bool | None = None,
        max_retries: int | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> None:
        """Store a task definition (description, condition, retention, on-fail,
        retry policy).

        Given a :class:`catbird.Task`, its own settings are used (``on_fail``:
        whether it has an on-fail handler; ``max_retries``/``backoff``: its
        handler options) unless overridden here. The engine applies the
        stored retry policy to every failure and lapsed lease. Creating the
        same definition again is a no-op; a different one replaces it unless
        runs are queued or started (:class:`catbird.ObjectInUse`).
        """
        args = definition_args(
            task,
            description=description,
            condition=condition,
            retention_period=retention_period,
            on_fail=on_fail,
            max_retries=max_retries,
            backoff=backoff,
        )
        await self.execute(_sql.create_task(task_name(task), **args))

    async def delete_task(self, task: Task[Any, Any] | str) -> bool:
        """Remove a task with all its runs and bindings; False if it did not exist."""
        return await self.execute(_sql.delete_task(task_name(task)))

    async def get_task(self, task: Task[Any, Any] | str) -> TaskInfo:
        """A task definition; :class:`catbird.NotFound` when it does not exist."""
        return await self.execute(_sql.get_task(task_name(task)))

    async def list_tasks(self) -> list[TaskInfo]:
        """Every task definition, by name."""
        return await self.execute(_sql.list_tasks())

    @overload
    async def run_task(
        self,
        task: Task[Any, O],
        input: Any,
        **options: Unpack[EnqueueOptions],
    ) -> AsyncTaskHandle[O]: ...
    @overload
    async def run_task(
        self,
        task: str,
        input: Any,
        **options: Unpack[EnqueueOptions],
    ) -> AsyncTaskHandle[Any]: ...
    async def run_task(
        self,
        task: Task[Any, Any] | str,
        input: Any,
        **options: Unpack[EnqueueOptions],
    ) -> AsyncTaskHandle[Any]:
        """Enqueue a run and return its handle.

        ``input`` may be any JSON value, dataclass, TypedDict or pydantic model.
        With a ``concurrency_key`` held by a queued or started run of the task,
        nothing is created and the handle points at that run. A run whose
        condition is false is created ``skipped``.
        """
        name = task_name(task)
        run_id = await self.execute(
            _sql.run_task(
                name,
                input,
                **options,
            )
        )
        return AsyncTaskHandle(self, name, run_id, output_decoder(task))

    @overload
    async def run_tasks(
        self,
        task: Task[Any, O],
        inputs: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> list[AsyncTaskHandle[O]]: ...
    @overload
    async def run_tasks(
        self,
        task: str,
        inputs: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> list[AsyncTaskHandle[Any]]: ...
    async def run_tasks(
        self,
        task: Task[Any, Any] | str,
        inputs: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> list[AsyncTaskHandle[Any]]:
        """Enqueue several runs in one statement; handles in input order."""
        name = task_name(task)
        ids = await self.execute(
            _sql.run_tasks(
                name,
                list(inputs),
                **options,
            )
        )
        decode = output_decoder(task)
        return [AsyncTaskHandle(self, name, run_id, decode) for run_id in ids]

    @overload
    def task_handle(self, task: Task[Any, O], run_id: int) -> AsyncTaskHandle[O]: ...
    @overload
    def task_handle(self, task: str, run_id: int) -> AsyncTaskHandle[Any]: ...
    def task_handle(self, task: Task[Any, Any] | str, run_id: int) -> AsyncTaskHandle[Any]:
        """A handle on an existing run (nothing is checked until it is used)."""
        return AsyncTaskHandle(self, task_name(task), run_id, output_decoder(task))

    async def get_task_run(self, task: Task[Any, Any] | str, run_id: int) -> TaskRunInfo:
        """One run; :class:`catbird.NotFound` when the task has no such run."""
        return await self.execute(_sql.get_task_run(task_name(task), run_id))

    async def list_task_runs(
        self, task: Task[Any, Any] | str, *, limit: int = 100, before_id: int | None = None
    ) -> list[TaskRunInfo]:
        """Runs of a task, newest first; ``before_id`` pages backwards."""
        return await self.execute(
            _sql.list_task_runs(task_name(task), limit=limit, before_id=before_id)
        )

    async def cancel_task_run(
        self, task: Task[Any, Any] | str, run_id: int, *, reason: str | None = None
    ) -> bool:
        """Cancel a queued or started run (a worker running it is told to stop).

        True when the run is canceled (also when it already was); False when
        there is no such run or it already finished otherwise.
        """
        return await self.execute(_sql.cancel_task(task_name(task), run_id, reason=reason))

    async def retry_task_run(self, task: Task[Any, Any] | str, run_id: int) -> bool:
        """Queue a ``failed``, ``canceled`` or ``expired`` run again, as new
        (attempts restart at 0; output and errors cleared). False for any
        other run, or none."""
        return await self.execute(_sql.retry_task_run(task_name(task), run_id))

    async def wait_task_output(
        self,
        task: Task[Any, Any] | str,
        run_id: int,
        *,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.2,
    ) -> RunOutcome | None:
        """Wait on the server up to ``poll_for`` seconds for the run to be terminal.

        Returns its status, output and error, or ``None`` when it is still going
        (or does not exist). :meth:`AsyncTaskHandle.wait_for_output` is the typed,
        raising variant.
        """
        return await self.execute(
            _sql.wait_task_output(
                task_name(task), run_id, poll_for=poll_for, poll_interval=poll_interval
            )
        )

    async def purge_task_runs(self, task: Task[Any, Any] | str, older_than: Duration) -> int:
        """Delete finished runs that finished more than ``older_than`` ago; returns how many."""
        return await self.execute(_sql.purge_task_runs(task_name(task), older_than))

    async def clear_task_runs(self, task: Task[Any, Any] | str) -> int:
        """Delete every run of a task, queued and started ones included; returns how many.

        In-flight work is lost: workers holding such runs find them gone.
        """
        return await self.execute(_sql.clear_task_runs(task_name(task)))

    async def bind_task(self, task: Task[Any, Any] | str, pattern: str) -> None:
        """Create a run for every message published to a topic matching ``pattern``."""
        await self.execute(_sql.bind_task(task_name(task), pattern))

    async def unbind_task(self, task: Task[Any, Any] | str, pattern: str) -> bool:
        """Remove a task binding; False if it did not exist."""
        return await self.execute(_sql.unbind_task(task_name(task), pattern))

    # ------------------------------------------------------------------
    # workers

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, oldest first."""
        return await self.execute(_sql.list_workers())

    async def health(
        self,
        *,
        dead_tuple_ratio: float = 0.2,
        dead_tuple_min: int = 1000,
        xmin_age: Duration = 300.0,
        queued_age: Duration = 300.0,
        lease_overdue: Duration = 60.0,
        heartbeat_age: Duration = 60.0,
        critical_factor: float = 3.0,
    ) -> HealthReport:
        """The engine's health report (``cb_health``): dead tuples per table,
        the oldest transaction holding back vacuum, the oldest queued work,
        runs past their lease and silent workers, each graded ok, warning
        (above its threshold) or critical (above ``critical_factor`` times
        it). Durations in seconds; a threshold out of range raises
        :class:`catbird.InvalidArgument`."""
        return await self.execute(
            _sql.health(
                dead_tuple_ratio=dead_tuple_ratio,
                dead_tuple_min=dead_tuple_min,
                xmin_age=xmin_age,
                queued_age=queued_age,
                lease_overdue=lease_overdue,
                heartbeat_age=heartbeat_age,
                critical_factor=critical_factor,
            )
        )

    async def metrics(self) -> list[MetricSample]:
        """The database's gauges (``cb_metrics``): queue depths, active runs by
        status, oldest queued age and health check statuses."""
        return await self.execute(_sql.metrics())

    # ------------------------------------------------------------------
    # the durable inbox
    #
    # A per-identity mailbox of notifications (the identity is any text the
    # application chooses: a user id, a session). Notifications stay until
    # marked seen or expired; ids are a cursor that only grows per identity.

    async def notify_durable(
        self,
        identity: str,
        topic: str,
        message: str | None = None,
        *,
        collapse_key: str | None = None,
        expires_at: datetime | None = None,
    ) -> int:
        """Append a notification to ``identity``'s inbox; returns its id.

        With ``collapse_key``, the inbox's earlier unseen notifications with
        that key are marked seen first (the newest wins). ``expires_at`` (in
        the future) hides it from reads after then, and gc deletes it.
        ``message`` is text (``TypeError`` otherwise: encode structured data
        yourself). In a transaction of your own (:meth:`using`), the append
        holds the identity's inbox until you commit: other appends to that
        identity wait, so that its ids become visible in order.
        """
        return await self.execute(
            _sql.notify_durable(
                identity, topic, message, collapse_key=collapse_key, expires_at=expires_at
            )
        )

    async def unseen_notifications(
        self, identity: str, *, after_id: int = 0, quantity: int = 100
    ) -> list[Notification]:
        """Up to ``quantity`` (1-1000) unseen, unexpired notifications of
        ``identity`` with an id above ``after_id``, oldest first. Reading marks
        nothing: acknowledge with :meth:`mark_seen_until` or :meth:`mark_seen`."""
        return await self.execute(
            _sql.read_notifications(identity, after_id=after_id, quantity=quantity)
        )

    async def mark_seen_until(self, identity: str, id: int) -> int:
        """Mark ``identity``'s unseen notifications with an id up to ``id`` seen;
        returns how many. Later notifications stay unseen."""
        return await self.execute(_sql.mark_seen_until(identity, id))

    async def mark_seen(self, identity: str, ids: Iterable[int]) -> int:
        """Mark the given unseen notifications of ``identity`` seen (at most
        10000 ids); returns how many were marked. Other identities' ids are
        left alone."""
        return await self.execute(_sql.mark_seen(identity, ids))

    # ------------------------------------------------------------------
    # flows
    #
    # Every call takes the flow as a name or as a catbird.Flow.

    async def create_flow(self, flow: Flow) -> None:
        """Store a flow definition (its steps, output priority, retention, on-fail).

        Creating the same definition again is a no-op; a different one
        replaces it unless runs are active (:class:`catbird.ObjectInUse`).
        Rejected definitions raise :class:`catbird.InvalidArgument`.
        """
        await self.execute(_sql.create_flow(flow.name, **flow.create_args()))

    async def delete_flow(self, flow: Flow | str) -> bool:
        """Remove a flow with all its runs and bindings; False if it did not exist."""
        return await self.execute(_sql.delete_flow(flow_name(flow)))

    async def get_flow(self, flow: Flow | str) -> FlowInfo:
        """A flow definition; :class:`catbird.NotFound` when it does not exist."""
        return await self.execute(_sql.get_flow(flow_name(flow)))

    async def list_flows(self) -> list[FlowInfo]:
        """Every flow definition, by name."""
        return await self.execute(_sql.list_flows())

    async def run_flow(
        self,
        flow: Flow | str,
        input: Any,
        **options: Unpack[EnqueueOptions],
    ) -> AsyncFlowHandle:
        """Start a run and return its handle.

        ``input`` may be any JSON value, dataclass, TypedDict or pydantic model.
        With a ``concurrency_key`` held by an active run of the flow, nothing
        is created and the handle points at that run.
        """
        name = flow_name(flow)
        run_id = await self.execute(
            _sql.run_flow(
                name,
                input,
                **options,
            )
        )
        return AsyncFlowHandle(self, name, run_id, flow_output_decoder(flow))

    async def run_flows(
        self,
        flow: Flow | str,
        inputs: Iterable[Any],
        **options: Unpack[BatchEnqueueOptions],
    ) -> list[AsyncFlowHandle]:
        """Start several runs in one statement; handles in input order."""
        name = flow_name(flow)
        ids = await self.execute(
            _sql.run_flows(
                name,
                list(inputs),
                **options,
            )
        )
        decode = flow_output_decoder(flow)
        return [AsyncFlowHandle(self, name, run_id, decode) for run_id in ids]

    def flow_handle(self, flow: Flow | str, run_id: int) -> AsyncFlowHandle:
        """A handle on an existing run (nothing is checked until it is used)."""
        return AsyncFlowHandle(self, flow_name(flow), run_id, flow_output_decoder(flow))

    async def signal_flow(
        self, flow: Flow | str, run_id: int, step: str, input: Any = None
    ) -> bool:
        """Deliver a signal to a step declared with ``signal=True``.

        True when delivered; False when the step already has its signal or
        the run is finished. :class:`catbird.NotFound` for an unknown run or
        step, :class:`catbird.InvalidArgument` for a step without signal.
        """
        query = _sql.signal_flow(flow_name(flow), run_id, step, input)
        return await self.execute(query)

    async def cancel_flow_run(
        self, flow: Flow | str, run_id: int, *, reason: str | None = None
    ) -> bool:
        """Cancel a run: queued work at once, running steps once they stop.

        The run is ``canceling`` until its running handlers reported back
        (workers stop them), then ``canceled``. True when the run is canceling
        or canceled (also when it already was); False when there is no such
        run or it already finished otherwise.
        """
        return await self.execute(_sql.cancel_flow(flow_name(flow), run_id, reason=reason))

    async def retry_flow_run(self, flow: Flow | str, run_id: int) -> bool:
        """Resume a ``failed`` (or ``canceled``/``expired``) run: its failed
        steps and the work canceled with them are queued again, completed
        steps keep their outputs. False for any other run, or none."""
        return await self.execute(_sql.retry_flow_run(flow_name(flow), run_id))

    async def get_flow_run(self, flow: Flow | str, run_id: int) -> FlowRunInfo:
        """One run; :class:`catbird.NotFound` when the flow has no such run."""
        return await self.execute(_sql.get_flow_run(flow_name(flow), run_id))

    async def list_flow_runs(
        self, flow: Flow | str, *, limit: int = 100, before_id: int | None = None
    ) -> list[FlowRunInfo]:
        """Runs of a flow, newest first; ``before_id`` pages backwards."""
        query = _sql.list_flow_runs(flow_name(flow), limit=limit, before_id=before_id)
        return await self.execute(query)

    async def get_flow_run_steps(self, flow: Flow | str, run_id: int) -> list[StepRunInfo]:
        """The steps of a run, in definition order (empty for an unknown run)."""
        return await self.execute(_sql.get_flow_run_steps(flow_name(flow), run_id))

    async def wait_flow_output(
        self,
        flow: Flow | str,
        run_id: int,
        *,
        poll_for: Duration = 5.0,
        poll_interval: Duration = 0.2,
    ) -> RunOutcome | None:
        """Wait on the server up to ``poll_for`` seconds for the run to be terminal.

        Returns its status, output and error, or ``None`` when it is still
        going (or does not exist); :meth:`FlowHandle.wait_for_output` is the
        raising variant.
        """
        query = _sql.wait_flow_output(
            flow_name(flow), run_id, poll_for=poll_for, poll_interval=poll_interval
        )
        return await self.execute(query)

    async def purge_flow_runs(self, flow: Flow | str, older_than: Duration) -> int:
        """Delete runs that finished more than ``older_than`` ago; returns how many."""
        return await self.execute(_sql.purge_flow_runs(flow_name(flow), older_than))

    async def clear_flow_runs(self, flow: Flow | str) -> int:
        """Delete every run of a flow, active ones included; returns how many."""
        return await self.execute(_sql.clear_flow_runs(flow_name(flow)))

    async def bind_flow(self, flow: Flow | str, pattern: str) -> None:
        """Start a run for every message published to a topic matching ``pattern``."""
        await self.execute(_sql.bind_flow(flow_name(flow), pattern))

    async def unbind_flow(self, flow: Flow | str, pattern: str) -> bool:
        """Remove a flow binding; False if it did not exist."""
        return await self.execute(_sql.unbind_flow(flow_name(flow), pattern))

    # ------------------------------------------------------------------
    # schedules
    #
    # One cron schedule per task or flow, evaluated in UTC by the engine
    # (catbird.cb_next_cron_tick). Every call takes the task or flow as a
    # name or as a catbird.Task / catbird.Flow.

    async def create_task_schedule(
        self,
        task: Task[Any, Any] | str,
        cron_spec: str,
        *,
        input: Any = None,
        catch_up: str = "one",
    ) -> None:
        """Create or update the task's schedule: each tick of ``cron_spec``
        (five fields, or ``@hourly``, ``@daily``, ...) enqueues a run with
        ``input`` (``None``: ``{}``).

        ``catch_up`` is what ticks missed while nothing executed schedules
        get: ``"skip"`` (only the latest fires), ``"one"`` (the oldest fires,
        once) or ``"all"`` (every one fires). Creating it again with the same
        spec keeps its next tick; a disabled schedule stays disabled.
        :class:`catbird.NotFound` for an unknown task,
        :class:`catbird.InvalidArgument` for a bad spec (naming the field).
        """
        query = _sql.create_task_schedule(
            task_name(task), cron_spec, input=input, catch_up=catch_up
        )
        await self.execute(query)

    async def create_flow_schedule(
        self,
        flow: Flow | str,
        cron_spec: str,
        *,
        input: Any = None,
        catch_up: str = "one",
    ) -> None:
        """As :meth:`create_task_schedule`, for a flow: each tick starts a run."""
        query = _sql.create_flow_schedule(
            flow_name(flow), cron_spec, input=input, catch_up=catch_up
        )
        await self.execute(query)

    async def delete_task_schedule(self, task: Task[Any, Any] | str) -> bool:
        """Remove the task's schedule (the task stays); False if it had none."""
        return await self.execute(_sql.delete_task_schedule(task_name(task)))

    async def delete_flow_schedule(self, flow: Flow | str) -> bool:
        """Remove the flow's schedule (the flow stays); False if it had none."""
        return await self.execute(_sql.delete_flow_schedule(flow_name(flow)))

    async def enable_task_schedule(self, task: Task[Any, Any] | str) -> bool:
        """Resume the task's schedule from its next tick after now (ticks
        missed while it was disabled are dropped); False if it has none."""
        return await self.execute(_sql.enable_task_schedule(task_name(task)))

    async def disable_task_schedule(self, task: Task[Any, Any] | str) -> bool:
        """Pause the task's schedule; False if it has none."""
        return await self.execute(_sql.disable_task_schedule(task_name(task)))

    async def enable_flow_schedule(self, flow: Flow | str) -> bool:
        """Resume the flow's schedule (see :meth:`enable_task_schedule`)."""
        return await self.execute(_sql.enable_flow_schedule(flow_name(flow)))

    async def disable_flow_schedule(self, flow: Flow | str) -> bool:
        """Pause the flow's schedule; False if it has none."""
        return await self.execute(_sql.disable_flow_schedule(flow_name(flow)))

    async def list_task_schedules(self) -> list[TaskScheduleInfo]:
        """Every task schedule, next tick first."""
        return await self.execute(_sql.list_task_schedules())

    async def list_flow_schedules(self) -> list[FlowScheduleInfo]:
        """Every flow schedule, next tick first."""
        return await self.execute(_sql.list_flow_schedules())

    async def execute_due_task_schedules(
        self,
        tasks: Iterable[Task[Any, Any] | str] | None = None,
        *,
        batch_size: int = 100,
        max_schedules: int = 1000,
    ) -> int:
        """Fire the task schedules whose tick has come (of ``tasks``, or all)
        and move them on per their catch-up policy; returns the runs enqueued.

        Workers do this on a timer for the tasks they serve; it is safe to
        call from any number of sessions at once (each tick fires exactly
        once). Each run gets the concurrency key ``sched:<task>:<tick>``.
        ``batch_size`` bounds the ticks one ``"all"`` schedule fires per call,
        ``max_schedules`` the schedules fired per call.
        """
        names = None if tasks is None else [task_name(t) for t in tasks]
        query = _sql.execute_due_task_schedules(
            names, batch_size=batch_size, max_schedules=max_schedules
        )
        return await self.execute(query)

    async def execute_due_flow_schedules(
        self,
        flows: Iterable[Flow | str] | None = None,
        *,
        batch_size: int = 100,
        max_schedules: int = 1000,
    ) -> int:
        """As :meth:`execute_due_task_schedules`, for flows."""
        names = None if flows is None else [flow_name(f) for f in flows]
        query = _sql.execute_due_flow_schedules(
            names, batch_size=batch_size, max_schedules=max_schedules
        )
        return await self.execute(query)

    async def next_cron_ticks(
        self, cron_spec: str, *, after: datetime | None = None, quantity: int = 5
    ) -> list[datetime]:
        """The next ``quantity`` (1-1000) ticks of ``cron_spec`` strictly after
        ``after`` (default: the engine's clock), in UTC, as the engine computes them.

        :class:`catbird.InvalidArgument` for a bad spec, naming the field.
        """
        return await self.execute(_sql.next_cron_ticks(cron_spec, after=after, quantity=quantity))

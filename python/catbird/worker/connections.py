"""The worker's connections to the engine, and how it rides out database outages.

Two pools: outcomes (completions, failures, cancellations) always commit
durably; claims and lease renewals go through a second pool whose
connections use ``synchronous_commit = off`` (their commits do not wait for
the WAL flush): a claim lost in a server crash only makes its run claimable
again, as at-least-once delivery allows. The LISTEN connection is opened
apart from both, with the outcome pool's parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from .. import _sql
from .._backoff import Backoff
from ..client.client_async import AsyncClient, connect_like
from .lanes import Abandoned, describe, log

__all__ = ["TRANSIENT", "Backoff", "Connections"]

T = TypeVar("T")

#: Errors after which a statement is simply tried again: a lost or refused
#: connection, a pool without a free connection, a serialization failure.
TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.TransactionRollback,
)


class Connections:
    """The pools of one worker (``dsn_or_pool``: a DSN, or the pool of outcomes to use)."""

    def __init__(self, dsn_or_pool: str | AsyncConnectionPool[Any], durable_claims: bool) -> None:
        if isinstance(dsn_or_pool, AsyncConnectionPool):
            self._pool: AsyncConnectionPool[Any] | None = dsn_or_pool
            self._dsn = ""
        elif isinstance(dsn_or_pool, str):
            self._pool = None
            self._dsn = dsn_or_pool
        else:
            raise TypeError(
                "Worker() takes a DSN string or a psycopg_pool.AsyncConnectionPool,"
                f" not {type(dsn_or_pool).__name__}"
            )
        self.durable_claims = durable_claims
        self._owns_pool = False
        self._claims_pool: AsyncConnectionPool[Any] | None = None
        self.client: AsyncClient | None = None
        self.claim_client: AsyncClient | None = None
        #: Set at the end of a shutdown: :meth:`record` stops retrying.
        self.abandon = False

    async def open(self, outcome_connections: int, claim_connections: int) -> None:
        """Open the pools (without waiting for the database: they connect in the background)."""
        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._dsn,
                min_size=1,
                max_size=outcome_connections,
                kwargs={"autocommit": True, "application_name": "catbird-worker"},
                timeout=5.0,
                reconnect_timeout=24 * 3600.0,
                open=False,
                name="catbird-worker",
            )
            self._owns_pool = True
            await self._pool.open(wait=False)
        elif self._pool.closed:
            self._owns_pool = True
            await self._pool.open(wait=False)
        self.client = self.claim_client = AsyncClient(self._pool)
        if not self.durable_claims:
            self._claims_pool = AsyncConnectionPool(
                self._pool.conninfo,
                min_size=1,
                max_size=claim_connections,
                kwargs=self._pool.kwargs,
                configure=self._configure_claims_connection,
                timeout=5.0,
                reconnect_timeout=24 * 3600.0,
                open=False,
                name="catbird-worker-claims",
            )
            await self._claims_pool.open(wait=False)
            self.claim_client = AsyncClient(self._claims_pool)

    @staticmethod
    async def _configure_claims_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        await AsyncClient(conn).execute(_sql.async_commit())
        if not conn.autocommit:
            await conn.commit()  # the pool wants its connections idle

    async def close(self) -> None:
        """Close the claims pool, and the outcome pool if this worker opened it."""
        if self._claims_pool is not None:
            with contextlib.suppress(Exception):
                await self._claims_pool.close(timeout=2.0)
        if self._owns_pool and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close(timeout=2.0)

    async def record(self, query: _sql.Query[T], what: str) -> T:
        """Execute an outcome's ``query``, retrying transient errors until it succeeds.

        Raises :class:`.lanes.Abandoned` once :attr:`abandon` is set (end of
        shutdown) and any non-transient error as it is.
        """
        assert self.client is not None
        backoff = Backoff(log)
        while True:
            try:
                return await self.client.execute(query)
            except TRANSIENT as exc:
                if self.abandon:
                    log.warning("gave up trying to %s: %s", what, describe(exc))
                    raise Abandoned(what) from exc
                delay = backoff.failed("cannot %s (%s); retrying in %.2f s", what, describe(exc))
                await asyncio.sleep(delay)

    async def connect_listener(self) -> psycopg.AsyncConnection[Any]:
        """A new autocommit connection for LISTEN, with the pool's parameters (or the DSN)."""
        if self._pool is None:
            return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        return await connect_like(self._pool)

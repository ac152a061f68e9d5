"""catbird.AsyncClient against a real PostgreSQL: every call of the sync client,
awaited. The statements are shared with the sync client (catbird._sql), so these
tests focus on each method's result and on the async connection handling."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from catbird import AsyncClient, Binding, InvalidArgument, Message, NotFound, QueueInfo

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def set_now(conn: psycopg.AsyncConnection[Any], ts: datetime) -> None:
    await conn.execute("SELECT set_config('catbird.fake_now', %s, false)", [ts.isoformat()])


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    await set_now(aconn, NOW)
    return AsyncClient(aconn)


@pytest.fixture
async def orders(client: AsyncClient) -> str:
    await client.create_queue("orders")
    return "orders"


async def test_queue_lifecycle(client: AsyncClient) -> None:
    exp = NOW + timedelta(hours=1)
    await client.create_queue("orders", expires_at=exp, description="d")
    await client.create_queue("orders")
    assert await client.get_queue("orders") == QueueInfo("orders", "d", NOW, exp, 0, 0, None)
    await client.send("orders", 1)
    assert [(q.name, q.depth, q.visible) for q in await client.list_queues()] == [("orders", 1, 1)]
    assert await client.purge_queue("orders") == 1
    assert await client.delete_queue("orders") is True
    assert await client.delete_queue("orders") is False
    with pytest.raises(NotFound):
        await client.get_queue("orders")
    assert await client.list_queues() == []


async def test_send_read_delete_round_trip(client: AsyncClient, orders: str) -> None:
    mid = await client.send(
        orders, {"id": 1}, topic="a.b", headers={"h": 1}, priority=2, concurrency_key="k"
    )
    msgs = await client.read(orders, quantity=5, hide_for=10.0)
    assert msgs == [
        Message(mid, {"id": 1}, {"h": 1}, "a.b", "k", 2, 1, NOW, NOW + timedelta(seconds=10), None)
    ]
    assert await client.read(orders) == []
    assert await client.delete(orders, mid) is True
    assert await client.delete(orders, mid) is False


async def test_priority_ordering(client: AsyncClient, orders: str) -> None:
    low = await client.send(orders, "low")
    high = await client.send(orders, "high", priority=10)
    assert [m.id for m in await client.read(orders, quantity=5)] == [high, low]


async def test_hide_for_uses_engine_clock(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    mid = await client.send(orders, "x")
    await client.read(orders, hide_for=30.0)
    await set_now(aconn, NOW + timedelta(seconds=29))
    assert await client.read(orders) == []
    await set_now(aconn, NOW + timedelta(seconds=30))
    (m,) = await client.read(orders)
    assert (m.id, m.deliveries) == (mid, 2)


async def test_concurrency_key_dedup_and_send_many(client: AsyncClient, orders: str) -> None:
    a = await client.send(orders, 1, concurrency_key="k")
    assert await client.send(orders, 2, concurrency_key="k") == a
    ids = await client.send_many(
        orders, [10, 11, 12], concurrency_keys=[None, "k", "z"], headers=[None, None, {"x": 1}]
    )
    assert ids[1] == a and ids[0] < ids[2]
    assert await client.send_many(orders, []) == []
    bodies = [m.body for m in await client.read(orders, quantity=10)]
    assert bodies == [1, 10, 12]


async def test_hide_and_delete_many(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    a, b = await client.send_many(orders, ["a", "b"])
    assert await client.hide(orders, a, hide_for=60.0) is True
    assert await client.hide(orders, 424242, hide_for=60.0) is False
    assert await client.hide(orders, [b, 424242], hide_for=60.0) == [b]
    assert await client.hide_many(orders, [a], hide_for=60.0) == [a]
    assert await client.read(orders) == []
    await set_now(aconn, NOW + timedelta(seconds=60))
    assert len(await client.read(orders, quantity=5)) == 2
    assert await client.delete(orders, [a, 424242]) == [a]
    assert await client.delete_many(orders, [a, b]) == [b]


async def test_read_poll(client: AsyncClient, orders: str, dsn: str) -> None:
    t0 = time.monotonic()
    assert await client.read_poll(orders, poll_for=0.2, poll_interval=0.05) == []
    assert time.monotonic() - t0 >= 0.15

    async def later() -> None:
        await asyncio.sleep(0.2)
        other = await AsyncClient.connect(dsn)
        async with other:
            await other.send(orders, "late")

    task = asyncio.create_task(later())
    msgs = await client.read_poll(orders, quantity=3, hide_for=5.0, poll_for=10.0)
    await task
    assert [m.body for m in msgs] == ["late"]


async def test_topics(client: AsyncClient, orders: str) -> None:
    await client.create_queue("audit")
    await client.bind(orders, "shop.*")
    await client.bind("audit", "shop.#")
    assert await client.list_bindings() == [
        Binding("audit", "shop.#", NOW),
        Binding("orders", "shop.*", NOW),
    ]
    assert await client.list_bindings("audit") == [Binding("audit", "shop.#", NOW)]
    assert await client.publish("shop.sale", {"n": 1}, priority=1) == 2
    assert await client.publish("shop.sale.eu", {"n": 2}) == 1
    assert await client.publish_many("shop.sale", [3, 4]) == 4
    assert [m.body for m in await client.read(orders, quantity=10)] == [{"n": 1}, 3, 4]
    audit = await client.read("audit", quantity=10)
    assert [m.body for m in audit] == [{"n": 1}, {"n": 2}, 3, 4]
    assert [m.topic for m in audit] == ["shop.sale", "shop.sale.eu", "shop.sale", "shop.sale"]
    assert await client.unbind(orders, "shop.*") is True
    assert await client.unbind(orders, "shop.*") is False


async def test_error_mapping(client: AsyncClient, orders: str) -> None:
    with pytest.raises(NotFound) as nf:
        await client.send("missing", 1)
    assert nf.value.sqlstate == "42704"
    assert isinstance(nf.value.__cause__, psycopg.errors.UndefinedObject)
    with pytest.raises(InvalidArgument) as ia:
        await client.create_queue("Not-Valid")
    assert ia.value.sqlstate == "22023"
    with pytest.raises(InvalidArgument):
        await client.read(orders, quantity=0)
    with pytest.raises(InvalidArgument):
        await client.publish("bad topic", 1)
    assert await client.list_queues() != []  # the connection is still usable


async def test_using_joins_the_callers_transaction(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    async with aconn.transaction(force_rollback=True):
        await client.using(aconn).send(orders, "rolled back")
        assert (await client.using(aconn).get_queue(orders)).depth == 1
    assert (await client.get_queue(orders)).depth == 0
    async with aconn.transaction():
        await client.using(aconn).send(orders, "committed")
    assert [m.body for m in await client.read(orders)] == ["committed"]


async def test_pool_backed_client(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=3, open=False) as pool:
        client = AsyncClient(pool)
        assert client.pool is pool and client.connection is None
        await client.create_queue("orders")
        with pytest.raises(NotFound):
            await client.read("missing")
        ids = await asyncio.gather(*(client.send("orders", i) for i in range(5)))
        assert len(set(ids)) == 5
        msgs = await client.read("orders", quantity=10)
        assert sorted(m.body for m in msgs) == [0, 1, 2, 3, 4]
        async with pool.connection() as conn:
            async with conn.transaction(force_rollback=True):
                await client.using(conn).delete("orders", ids)
            assert sorted(await client.using(conn).delete("orders", ids)) == sorted(ids)
        await client.close()  # not owned
        assert not pool.closed


async def test_connect_owns_its_connection(dsn: str) -> None:
    client = await AsyncClient.connect(dsn)
    async with client:
        conn = client.connection
        assert conn is not None and conn.autocommit
        await client.create_queue("orders")
    assert conn.closed


async def test_client_rejects_sync_connection(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError):
        AsyncClient(conn)  # type: ignore[arg-type]

"""catbird.AsyncClient against a real PostgreSQL with the extension installed.

The async and the sync client run the same tests: the sync module is
generated from the async one by tools/async_to_sync.py. Tests that need
several connections at once really run them at once on both clients: as
asyncio tasks for the async one, in threads for the sync one
(:func:`run_concurrently`).

Time-dependent behaviour is tested through the engine clock: cb_now() reads
the session setting catbird.fake_now, pinned on the test connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pydantic
import pytest
from psycopg_pool import AsyncConnectionPool

import catbird
from catbird import (
    AsyncClient,
    Binding,
    InvalidArgument,
    Message,
    NotFound,
    QueueInfo,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

T = TypeVar("T")

if True:  # ASYNC
    #: A deferred client call, run (and awaited) by the test.
    Call = Callable[[], Awaitable[object]]

    async def run_concurrently(*calls: Callable[[], Awaitable[T]]) -> list[T]:
        """Run the calls at once, each in its own task; their results in order."""
        return list(await asyncio.gather(*(call() for call in calls)))

else:
    #: A deferred client call, run by the test.
    Call = Callable[[], object]

    def run_concurrently(*calls: Callable[[], T]) -> list[T]:
        """Run the calls at once, each in its own thread; their results in order."""
        with ThreadPoolExecutor(max_workers=len(calls)) as executor:
            futures = [executor.submit(call) for call in calls]
            return [future.result() for future in futures]


async def set_now(aconn: psycopg.AsyncConnection[Any], ts: datetime) -> None:
    await aconn.execute("SELECT set_config('catbird.fake_now', %s, false)", [ts.isoformat()])


@pytest.fixture
async def client(aconn: psycopg.AsyncConnection[Any]) -> AsyncClient:
    await set_now(aconn, NOW)
    return AsyncClient(aconn)


@pytest.fixture
async def orders(client: AsyncClient) -> str:
    await client.create_queue("orders")
    return "orders"


# ---------------------------------------------------------------- queues


async def test_create_queue_is_idempotent_and_described(client: AsyncClient) -> None:
    exp = NOW + timedelta(days=1)
    await client.create_queue("orders", expires_at=exp, description="all orders")
    await client.create_queue("orders", description="ignored second time")
    info = await client.get_queue("orders")
    assert info == QueueInfo(
        name="orders",
        description="all orders",
        created_at=NOW,
        expires_at=exp,
        depth=0,
        visible=0,
        oldest_visible_at=None,
    )
    assert [q.name for q in await client.list_queues()] == ["orders"]


async def test_list_queues_counts_depth_visible_and_oldest(
    client: AsyncClient, orders: str
) -> None:
    await client.create_queue("audit")
    await client.send(orders, 1)
    await client.send(orders, 2, visible_at=NOW + timedelta(minutes=5))
    queues = {q.name: q for q in await client.list_queues()}
    assert sorted(queues) == ["audit", "orders"]
    assert (queues["orders"].depth, queues["orders"].visible) == (2, 1)
    assert queues["orders"].oldest_visible_at == NOW
    assert (queues["audit"].depth, queues["audit"].visible) == (0, 0)
    assert queues["audit"].oldest_visible_at is None


async def test_get_queue_missing_raises_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFound):
        await client.get_queue("nope")


async def test_create_queue_bad_name_is_invalid_argument_and_writes_nothing(
    client: AsyncClient,
) -> None:
    for bad in ["Orders", "1orders", "or-ders", "Not-Valid", "", "x" * 59]:
        with pytest.raises(InvalidArgument) as info:
            await client.create_queue(bad)
        assert info.value.sqlstate == "22023"
        assert isinstance(info.value.__cause__, psycopg.errors.InvalidParameterValue)
        assert str(info.value)  # the server's message
    assert await client.list_queues() == []
    await client.create_queue("x" * 58)  # the longest valid name
    assert (await client.get_queue("x" * 58)).name == "x" * 58


async def test_delete_queue(client: AsyncClient, orders: str) -> None:
    await client.send(orders, {"a": 1})
    await client.bind(orders, "shop.#")
    assert await client.delete_queue(orders) is True
    assert await client.delete_queue(orders) is False
    assert await client.list_queues() == []
    assert await client.list_bindings() == []
    with pytest.raises(NotFound):
        await client.read(orders)
    with pytest.raises(NotFound):
        await client.get_queue(orders)


async def test_purge_queue(client: AsyncClient, orders: str) -> None:
    await client.send_many(orders, [1, 2, 3])
    await client.read(orders)  # a hidden one is purged too
    assert await client.purge_queue(orders) == 3
    assert await client.purge_queue(orders) == 0
    assert (await client.get_queue(orders)).depth == 0
    with pytest.raises(NotFound) as info:
        await client.purge_queue("missing")
    assert info.value.sqlstate == "42704"
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedObject)


# ---------------------------------------------------------------- send / read / delete


async def test_send_read_delete_round_trip(client: AsyncClient, orders: str) -> None:
    body = {"id": 1, "items": ["a", "b"], "total": 9.5, "paid": True, "note": None}
    mid = await client.send(
        orders,
        body,
        topic="shop.order.created",
        headers={"trace": "t-1"},
        priority=3,
        expires_at=NOW + timedelta(hours=1),
    )
    assert isinstance(mid, int)
    msgs = await client.read(orders, quantity=10, hide_for=30.0)
    assert msgs == [
        Message(
            id=mid,
            body=body,
            headers={"trace": "t-1"},
            topic="shop.order.created",
            concurrency_key=None,
            priority=3,
            deliveries=1,
            created_at=NOW,
            visible_at=NOW + timedelta(seconds=30),
            expires_at=NOW + timedelta(hours=1),
        )
    ]
    assert msgs[0].created_at.tzinfo is not None
    assert await client.read(orders) == []  # hidden
    assert await client.delete(orders, mid) is True
    assert await client.delete(orders, mid) is False
    assert (await client.get_queue(orders)).depth == 0


@pytest.mark.parametrize(
    "body", [None, 0, 1.5, "text", [1, "two", None], {"nested": {"deep": [1, {"x": []}]}}, True]
)
async def test_any_json_body_round_trips(client: AsyncClient, orders: str, body: Any) -> None:
    await client.send(orders, body)
    (msg,) = await client.read(orders)
    assert msg.body == body
    assert msg.headers is None and msg.topic is None


@dataclasses.dataclass
class OrderDC:
    id: int
    tags: list[str]


class OrderModel(pydantic.BaseModel):
    id: int
    at: datetime


async def test_dataclass_and_pydantic_bodies_are_encoded(client: AsyncClient, orders: str) -> None:
    await client.send(orders, OrderDC(1, ["x"]))
    await client.send(orders, OrderModel(id=2, at=NOW))
    await client.send_many(orders, [OrderDC(3, []), OrderModel(id=4, at=NOW)])
    bodies = [m.body for m in await client.read(orders, quantity=10)]
    assert bodies == [
        {"id": 1, "tags": ["x"]},
        {"id": 2, "at": "2030-01-01T12:00:00Z"},
        {"id": 3, "tags": []},
        {"id": 4, "at": "2030-01-01T12:00:00Z"},
    ]


async def test_priority_then_age_ordering(client: AsyncClient, orders: str) -> None:
    low = await client.send(orders, "low", priority=0)
    high = await client.send(orders, "high", priority=5)
    mid1 = await client.send(orders, "mid1", priority=1)
    mid2 = await client.send(orders, "mid2", priority=1)
    neg = await client.send(orders, "neg", priority=-1)
    first = await client.read(orders, quantity=2)
    assert [m.id for m in first] == [high, mid1]
    rest = await client.read(orders, quantity=10)
    assert [m.id for m in rest] == [mid2, low, neg]


async def test_hide_for_hides_until_window_passes(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    mid = await client.send(orders, "x")
    (m1,) = await client.read(orders, hide_for=30.0)
    assert (m1.deliveries, m1.visible_at) == (1, NOW + timedelta(seconds=30))
    await set_now(aconn, NOW + timedelta(seconds=29.999))
    assert await client.read(orders) == []
    await set_now(aconn, NOW + timedelta(seconds=30))
    (m2,) = await client.read(orders, hide_for=timedelta(minutes=2))
    assert (m2.id, m2.deliveries) == (mid, 2)
    assert m2.visible_at == NOW + timedelta(seconds=150)


async def test_hide_for_rounds_up_to_whole_milliseconds(client: AsyncClient, orders: str) -> None:
    await client.send_many(orders, ["a", "b", "c"])
    (a,) = await client.read(orders, hide_for=0.0001)  # not silently 0 ms
    assert a.visible_at == NOW + timedelta(milliseconds=1)
    (b,) = await client.read(orders, hide_for=0.1)  # float noise does not add a millisecond
    assert b.visible_at == NOW + timedelta(milliseconds=100)
    (c,) = await client.read(orders, hide_for=2)  # int seconds
    assert c.visible_at == NOW + timedelta(seconds=2)


async def test_visible_at_and_expires_at(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    later = await client.send(orders, "later", visible_at=NOW + timedelta(minutes=10))
    await client.send(orders, "expired", expires_at=NOW)
    await client.send(orders, "expiring", expires_at=NOW + timedelta(minutes=5))
    assert [m.body for m in await client.read(orders, quantity=10)] == ["expiring"]
    await set_now(aconn, NOW + timedelta(minutes=10))
    assert [m.id for m in await client.read(orders, quantity=10)] == [later]


async def test_concurrency_key_dedups_live_messages(client: AsyncClient, orders: str) -> None:
    first = await client.send(orders, {"v": 1}, concurrency_key="order-1")
    again = await client.send(orders, {"v": 2}, concurrency_key="order-1", priority=9)
    assert again == first
    other = await client.send(orders, {"v": 3}, concurrency_key="order-2")
    assert other != first
    # send_many dedups against live messages too
    batch = await client.send_many(orders, [{"v": 5}, {"v": 6}], concurrency_keys=["order-1", None])
    assert batch[0] == first and batch[1] not in (first, other)
    msgs = await client.read(orders, quantity=10)
    assert {(m.id, m.concurrency_key): m.body for m in msgs} == {
        (first, "order-1"): {"v": 1},
        (other, "order-2"): {"v": 3},
        (batch[1], None): {"v": 6},
    }
    assert await client.delete(orders, [first]) == [first]
    fresh = await client.send(orders, {"v": 4}, concurrency_key="order-1")
    assert fresh not in (first, other, batch[1])


async def test_send_many_returns_ids_in_input_order(client: AsyncClient, orders: str) -> None:
    ids = await client.send_many(
        orders,
        [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}],
        topic="shop.bulk",
        concurrency_keys=["k0", None, "k0", "k3"],
        headers=[{"h": 0}, None, {"h": 2}, {"h": 3}],
        priority=2,
    )
    assert len(ids) == 4
    assert ids[2] == ids[0]  # same key in one batch: the first position wins
    assert len(set(ids)) == 3
    msgs = {m.id: m for m in await client.read(orders, quantity=10)}
    assert sorted(msgs) == sorted(set(ids))
    assert msgs[ids[0]].body == {"n": 0} and msgs[ids[0]].headers == {"h": 0}
    assert msgs[ids[1]].headers is None and msgs[ids[1]].concurrency_key is None
    assert msgs[ids[3]].concurrency_key == "k3"
    assert {m.topic for m in msgs.values()} == {"shop.bulk"}
    assert {m.priority for m in msgs.values()} == {2}


async def test_send_many_plain_and_empty(client: AsyncClient, orders: str) -> None:
    assert await client.send_many(orders, []) == []
    ids = await client.send_many(orders, (x for x in ["a", "b", "c"]))
    assert ids == sorted(ids)
    assert [m.body for m in await client.read(orders, quantity=3)] == ["a", "b", "c"]


async def test_send_many_mismatched_lengths_rejected(client: AsyncClient, orders: str) -> None:
    with pytest.raises(InvalidArgument):
        await client.send_many(orders, [1, 2], concurrency_keys=["a"])
    with pytest.raises(InvalidArgument):
        await client.send_many(orders, [1, 2], headers=[{"a": 1}])
    with pytest.raises(InvalidArgument):
        await client.send_many(orders, [1, 2], headers=[{"a": 1}, ["not an object"]])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        await client.send_many(orders, [1, 2], topic="a..b")
    assert (await client.get_queue(orders)).depth == 0


async def test_pop_returns_and_deletes_messages(client: AsyncClient, orders: str) -> None:
    ids = await client.send_many(orders, ["a", "b", "c"])
    first = await client.pop(orders)
    assert [(m.id, m.body, m.deliveries) for m in first] == [(ids[0], "a", 1)]
    assert [m.body for m in await client.pop(orders, quantity=5)] == ["b", "c"]
    assert await client.pop(orders, quantity=5) == []
    assert (await client.get_queue(orders)).depth == 0


async def test_pop_bad_quantity_and_unknown_queue(client: AsyncClient, orders: str) -> None:
    await client.send(orders, "x")
    with pytest.raises(InvalidArgument):
        await client.pop(orders, quantity=0)
    with pytest.raises(NotFound):
        await client.pop("nope")
    assert (await client.get_queue(orders)).depth == 1


async def test_read_poll_returns_at_once_when_messages_exist(
    client: AsyncClient, orders: str
) -> None:
    await client.send(orders, "x")
    t0 = time.monotonic()
    await client.send(orders, "y")
    msgs = await client.read_poll(orders, quantity=5, hide_for=10.0, poll_for=5.0)
    assert [m.body for m in msgs] == ["x", "y"]
    assert {m.visible_at for m in msgs} == {NOW + timedelta(seconds=10)}
    assert time.monotonic() - t0 < 2.0


async def test_read_poll_waits_then_returns_empty(client: AsyncClient, orders: str) -> None:
    t0 = time.monotonic()
    assert await client.read_poll(orders, poll_for=0.3, poll_interval=0.05) == []
    assert 0.25 <= time.monotonic() - t0 < 3.0


async def test_read_poll_sees_message_sent_meanwhile(
    client: AsyncClient, orders: str, dsn: str
) -> None:
    async def later() -> list[Message]:
        await asyncio.sleep(0.3)
        async with await AsyncClient.connect(dsn) as other:
            await other.send(orders, "late")
        return []

    async def poll() -> list[Message]:
        return await client.read_poll(orders, quantity=3, hide_for=5.0, poll_for=10.0)

    t0 = time.monotonic()
    msgs, _ = await run_concurrently(poll, later)
    assert [m.body for m in msgs] == ["late"]
    assert 0.25 <= time.monotonic() - t0 < 5.0


async def test_concurrent_readers_never_share_a_message(dsn: str) -> None:
    async with await AsyncClient.connect(dsn) as setup:
        await setup.create_queue("jobs")
        await setup.send_many("jobs", list(range(200)))

    async def consume() -> list[int]:
        got: list[int] = []
        async with await AsyncClient.connect(dsn) as c:
            while batch := await c.read("jobs", quantity=7, hide_for=60.0):
                got.extend(m.id for m in batch)
        return got

    seen = await run_concurrently(consume, consume, consume, consume)
    all_ids = [i for got in seen for i in got]
    assert len(all_ids) == 200
    assert len(set(all_ids)) == 200


# ---------------------------------------------------------------- hide / delete


async def test_hide_single_and_many(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    a, b, c = await client.send_many(orders, ["a", "b", "c"])
    assert await client.hide(orders, a, hide_for=60.0) is True
    assert await client.hide(orders, 999_999, hide_for=60.0) is False
    assert await client.hide(orders, [b, 999_999], hide_for=120.0) == [b]
    assert await client.hide_many(orders, [c], hide_for=30.0) == [c]
    assert await client.hide_many(orders, [], hide_for=30.0) == []
    assert await client.read(orders) == []
    await set_now(aconn, NOW + timedelta(seconds=30))
    assert [m.id for m in await client.read(orders, quantity=5, hide_for=3600)] == [c]
    await set_now(aconn, NOW + timedelta(seconds=60))
    assert [m.id for m in await client.read(orders, quantity=5, hide_for=3600)] == [a]
    await set_now(aconn, NOW + timedelta(seconds=120))
    assert [m.id for m in await client.read(orders, quantity=5, hide_for=3600)] == [b]


async def test_hide_can_make_visible_sooner(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    mid = await client.send(orders, "x")
    await client.read(orders, hide_for=3600.0)
    assert await client.hide(orders, mid, hide_for=0.001)
    await set_now(aconn, NOW + timedelta(milliseconds=1))
    assert [m.id for m in await client.read(orders)] == [mid]


async def test_delete_single_and_many(client: AsyncClient, orders: str) -> None:
    a, b, c = await client.send_many(orders, ["a", "b", "c"])
    assert await client.delete(orders, a) is True
    assert await client.delete(orders, a) is False
    assert sorted(await client.delete(orders, [a, b, c, 12345])) == sorted([b, c])
    assert await client.delete_many(orders, [b]) == []
    assert await client.delete_many(orders, []) == []
    assert (await client.get_queue(orders)).depth == 0


async def test_hide_and_delete_only_touch_their_queue(client: AsyncClient, orders: str) -> None:
    await client.create_queue("other")
    mid = await client.send("other", "x")
    assert await client.delete(orders, mid) is False
    assert await client.hide(orders, mid, hide_for=10.0) is False
    assert (await client.get_queue("other")).depth == 1


# ---------------------------------------------------------------- topics


async def test_bind_unbind_list_bindings(client: AsyncClient, orders: str) -> None:
    await client.create_queue("audit")
    await client.bind(orders, "shop.order.*")
    await client.bind(orders, "shop.order.*")  # idempotent
    await client.bind("audit", "#")
    assert await client.list_bindings() == [
        Binding("audit", "#", NOW),
        Binding("orders", "shop.order.*", NOW),
    ]
    assert await client.list_bindings(orders) == [Binding("orders", "shop.order.*", NOW)]
    assert await client.unbind(orders, "shop.order.*") is True
    assert await client.unbind(orders, "shop.order.*") is False
    assert await client.list_bindings(orders) == []


async def test_bind_errors(client: AsyncClient, orders: str) -> None:
    with pytest.raises(NotFound):
        await client.bind("missing", "a.b")
    for bad in ["a..b", "a.#.b", "", "a b", "*x"]:
        with pytest.raises(InvalidArgument):
            await client.bind(orders, bad)
    assert await client.list_bindings() == []


async def test_publish_delivers_to_matching_queues(client: AsyncClient, orders: str) -> None:
    await client.create_queue("audit")
    await client.create_queue("billing")
    await client.bind(orders, "shop.order.*")
    await client.bind(orders, "shop.#")  # a second matching pattern: still one copy
    await client.bind("audit", "#")
    await client.bind("billing", "shop.invoice.*")
    n = await client.publish(
        "shop.order.created", {"id": 2}, headers={"h": 1}, priority=4, concurrency_key="o2"
    )
    assert n == 2
    (o,) = await client.read(orders, quantity=10)
    (a,) = await client.read("audit", quantity=10)
    assert await client.read("billing") == []
    for m in (o, a):
        assert (m.body, m.topic, m.headers, m.priority, m.concurrency_key) == (
            {"id": 2},
            "shop.order.created",
            {"h": 1},
            4,
            "o2",
        )
    assert await client.publish("nobody.listens", 1) == 1  # audit binds "#"
    await client.unbind("audit", "#")
    assert await client.publish("nobody.listens", 1) == 0


async def test_publish_many_counts_targets_times_messages(client: AsyncClient, orders: str) -> None:
    await client.create_queue("audit")
    await client.bind(orders, "shop.*")
    await client.bind("audit", "shop.#")
    assert await client.publish_many("shop.sale", [1, 2, 3]) == 6
    assert await client.publish_many("shop.sale", []) == 0
    assert await client.publish("shop.sale.eu", 4) == 1  # "*" is one word, "#" any
    assert [m.body for m in await client.read(orders, quantity=10)] == [1, 2, 3]
    audit = await client.read("audit", quantity=10)
    assert [m.body for m in audit] == [1, 2, 3, 4]
    assert [m.topic for m in audit] == ["shop.sale"] * 3 + ["shop.sale.eu"]
    assert await client.publish_many("shop.sale", ["x", "y"], concurrency_keys=["k", "k"]) == 4
    assert [m.body for m in await client.read(orders, quantity=10)] == ["x"]


async def test_publish_visible_at_and_expiry(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    await client.bind(orders, "t")
    await client.publish("t", "later", visible_at=NOW + timedelta(seconds=5))
    await client.publish_many(
        "t", ["gone"], expires_at=NOW + timedelta(seconds=1), headers=[{"x": 1}], priority=1
    )
    assert [m.body for m in await client.read(orders, quantity=5)] == ["gone"]
    await set_now(aconn, NOW + timedelta(seconds=5))
    assert [m.body for m in await client.read(orders, quantity=5)] == ["later"]


async def test_publish_bad_topic(client: AsyncClient) -> None:
    for bad in ["", "a..b", "a.*", "a.#", "sp ace"]:
        with pytest.raises(InvalidArgument):
            await client.publish(bad, 1)


# ---------------------------------------------------------------- the durable inbox


async def test_inbox_append_read_collapse_and_mark_seen(client: AsyncClient) -> None:
    started = await client.notify_durable("alice", "import.started", "started")
    progress = await client.notify_durable(
        "alice", "import.progress", "10%", collapse_key="import-7"
    )
    newer = await client.notify_durable(
        "alice",
        "import.progress",
        "20%",
        collapse_key="import-7",
        expires_at=NOW + timedelta(hours=1),
    )
    ping = await client.notify_durable("alice", "ping")
    await client.notify_durable("bob", "ping")
    assert started < progress < newer < ping
    assert await client.unseen_notifications("alice") == [
        catbird.Notification(started, "import.started", "started", None, NOW, None),
        catbird.Notification(
            newer, "import.progress", "20%", "import-7", NOW, NOW + timedelta(hours=1)
        ),
        catbird.Notification(ping, "ping", None, None, NOW, None),
    ]
    page = await client.unseen_notifications("alice", after_id=started, quantity=1)
    assert [n.id for n in page] == [newer]
    assert await client.mark_seen("alice", [ping, 10**12]) == 1
    assert await client.mark_seen_until("alice", newer) == 2
    assert await client.mark_seen_until("alice", newer) == 0
    assert await client.unseen_notifications("alice") == []
    assert [n.topic for n in await client.unseen_notifications("bob")] == ["ping"]


async def test_inbox_expiry_follows_the_engine_clock(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any]
) -> None:
    soon = await client.notify_durable("alice", "t", expires_at=NOW + timedelta(seconds=5))
    assert [n.id for n in await client.unseen_notifications("alice")] == [soon]
    await set_now(aconn, NOW + timedelta(seconds=5))
    assert await client.unseen_notifications("alice") == []
    gc = await (await aconn.execute("SELECT catbird.cb_gc()")).fetchone()
    assert gc is not None and gc[0]["notifications_deleted"] == 1


async def test_inbox_bad_arguments_raise_and_write_nothing(client: AsyncClient) -> None:
    await client.notify_durable("alice", "t", "kept")
    bad: list[Call] = [
        lambda: client.notify_durable("", "t"),
        lambda: client.notify_durable("alice", "a..b"),
        lambda: client.notify_durable("alice", "t", collapse_key=""),
        lambda: client.notify_durable("alice", "t", expires_at=NOW),
        lambda: client.unseen_notifications("alice", quantity=0),
        lambda: client.unseen_notifications("alice", quantity=1001),
        lambda: client.mark_seen("alice", range(10_001)),
    ]
    for call in bad:
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.sqlstate == "22023"
    for message in [{"a": 1}, 5, b"bytes"]:
        with pytest.raises(TypeError, match="message must be a str or None"):
            await client.notify_durable("alice", "t", message)  # type: ignore[arg-type]
    assert [n.message for n in await client.unseen_notifications("alice")] == ["kept"]


async def test_inbox_append_in_a_rolled_back_transaction_leaves_nothing(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any]
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with aconn.transaction():
            await client.using(aconn).notify_durable("alice", "t", "never")
            raise ZeroDivisionError
    assert await client.unseen_notifications("alice") == []


# ---------------------------------------------------------------- errors


async def test_unknown_queue_is_not_found_everywhere(client: AsyncClient) -> None:
    calls: list[Call] = [
        lambda: client.send("missing", 1),
        lambda: client.send_many("missing", [1]),
        lambda: client.read("missing"),
        lambda: client.read_poll("missing", poll_for=0.0),
        lambda: client.hide("missing", 1, hide_for=1.0),
        lambda: client.hide("missing", [1], hide_for=1.0),
        lambda: client.delete("missing", 1),
        lambda: client.delete("missing", [1]),
        lambda: client.purge_queue("missing"),
        lambda: client.bind("missing", "a"),
        lambda: client.unbind("missing", "a"),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(NotFound) as info:
            await call()
        assert info.value.sqlstate == "42704", i
        assert isinstance(info.value.__cause__, psycopg.errors.UndefinedObject), i
        assert "missing" in str(info.value)
    await client.create_queue("still_usable")  # the connection survived the errors
    assert [q.name for q in await client.list_queues()] == ["still_usable"]


async def test_invalid_arguments_are_rejected_by_sql(client: AsyncClient, orders: str) -> None:
    calls: list[Call] = [
        lambda: client.read(orders, quantity=0),
        lambda: client.read(orders, hide_for=0),
        lambda: client.read(orders, hide_for=-1.0),
        lambda: client.read_poll(orders, poll_for=-0.5),
        lambda: client.read_poll(orders, poll_interval=0),
        lambda: client.hide(orders, 1, hide_for=0),
        lambda: client.send(orders, 1, headers=["not", "an", "object"]),  # type: ignore[arg-type]
        lambda: client.send(orders, 1, topic="bad topic"),
        lambda: client.send("Bad", 1),
        lambda: client.publish("bad topic", 1),
        lambda: client.read(orders, hide_for=1e12),  # does not fit an int of milliseconds
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.sqlstate in {"22023", "22003"}
    assert (await client.get_queue(orders)).depth == 0


async def test_non_finite_durations_rejected_before_sending(
    client: AsyncClient, orders: str
) -> None:
    for bad in [math.nan, math.inf, -math.inf]:
        with pytest.raises(InvalidArgument) as info:
            await client.read(orders, hide_for=bad)
        assert info.value.sqlstate is None


def test_errors_form_one_hierarchy() -> None:
    for cls in [
        catbird.InvalidArgument,
        catbird.NotFound,
        catbird.ObjectInUse,
        catbird.AlreadyExists,
        catbird.RunFailed,
        catbird.RunCanceled,
        catbird.RunSkipped,
    ]:
        assert issubclass(cls, catbird.CatbirdError)
    assert issubclass(catbird.InvalidArgument, ValueError)
    assert issubclass(catbird.NotFound, LookupError)
    for cls in [catbird.RunFailed, catbird.RunCanceled, catbird.RunSkipped]:
        assert issubclass(cls, catbird.RunError)


async def test_unmapped_errors_propagate_unchanged(client: AsyncClient) -> None:
    from catbird._sql import Query

    with pytest.raises(psycopg.errors.DivisionByZero):
        await client.execute(Query("boom", "SELECT 1/0", {}, list))


# ---------------------------------------------------------------- connections


async def test_using_joins_the_callers_transaction(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    await aconn.execute("CREATE TABLE app_orders (id int)")
    async with aconn.transaction(force_rollback=True):
        await aconn.execute("INSERT INTO app_orders VALUES (1)")
        bound = client.using(aconn)
        await bound.send(orders, {"id": 1})
        assert (await bound.get_queue(orders)).depth == 1
    assert (await client.get_queue(orders)).depth == 0
    cur = await aconn.execute("SELECT count(*) FROM app_orders")
    assert await cur.fetchone() == (0,)

    async with aconn.transaction():
        await aconn.execute("INSERT INTO app_orders VALUES (2)")
        await client.using(aconn).send(orders, {"id": 2})
    assert (await client.get_queue(orders)).depth == 1
    cur = await aconn.execute("SELECT count(*) FROM app_orders")
    assert await cur.fetchone() == (1,)


async def test_error_inside_transaction_rolls_back_everything(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    with pytest.raises(NotFound):
        async with aconn.transaction():
            await client.using(aconn).send(orders, "kept?")
            await client.using(aconn).send("missing", "boom")
    assert (await client.get_queue(orders)).depth == 0


async def test_using_another_connection_with_the_pool(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        client = AsyncClient(pool)
        await client.create_queue("orders")
        async with pool.connection() as conn:
            async with conn.transaction():
                await client.using(conn).send("orders", "in tx")
                raise_rollback(conn)
            assert (await client.get_queue("orders")).depth == 0
            async with conn.transaction():
                await client.using(conn).send("orders", "committed")
        assert [m.body for m in await client.read("orders")] == ["committed"]


def raise_rollback(conn: psycopg.AsyncConnection[Any]) -> None:
    raise psycopg.Rollback()


async def test_pool_backed_client(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=3, open=False) as pool:
        client = AsyncClient(pool)
        assert client.pool is pool and client.connection is None
        await client.create_queue("orders")
        ids = await client.send_many("orders", ["a", "b"])
        # an error returns the connection to the pool in a usable state
        with pytest.raises(NotFound):
            await client.send("missing", 1)
        msgs = await client.read("orders", quantity=10)
        assert [m.id for m in msgs] == ids
        assert await client.delete("orders", ids) == ids
        # each call committed: visible from an independent connection
        async with await psycopg.AsyncConnection.connect(dsn) as other:
            assert (await AsyncClient(other).get_queue("orders")).depth == 0
        # calls at once each borrow their own connection
        sends = [functools.partial(client.send, "orders", i) for i in range(5)]
        sent = await run_concurrently(*sends)
        assert len(set(sent)) == 5
        msgs = await client.read("orders", quantity=10)
        assert sorted(m.body for m in msgs) == [0, 1, 2, 3, 4]
        async with pool.connection() as conn:
            async with conn.transaction(force_rollback=True):
                assert sorted(await client.using(conn).delete("orders", sent)) == sorted(sent)
            assert sorted(await client.using(conn).delete("orders", sent)) == sorted(sent)
        await client.close()  # not owned: the pool stays open
        assert not pool.closed


async def test_connect_owns_its_connection(dsn: str) -> None:
    async with await AsyncClient.connect(dsn) as client:
        conn = client.connection
        assert conn is not None and conn.autocommit
        await client.create_queue("orders")
        await client.send("orders", 1)
    assert conn.closed
    async with await AsyncClient.connect(dsn) as again:
        assert (await again.get_queue("orders")).depth == 1


async def test_client_on_a_user_connection_is_not_closed(
    aconn: psycopg.AsyncConnection[Any],
) -> None:
    async with AsyncClient(aconn) as client:
        await client.create_queue("orders")
    assert not aconn.closed


def test_client_rejects_other_objects(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError):
        AsyncClient("postgresql://nope")  # type: ignore[arg-type]
    if True:  # ASYNC
        with pytest.raises(TypeError):
            AsyncClient(conn)  # type: ignore[arg-type]  # a sync connection
    else:
        # the sync client takes the sync connection, and only that kind
        assert AsyncClient(conn).connection is conn


async def test_user_row_factory_does_not_matter(dsn: str) -> None:
    from psycopg.rows import dict_row

    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, row_factory=dict_row
    ) as conn:
        client = AsyncClient(conn)
        await client.create_queue("orders")
        mid = await client.send("orders", {"k": "v"})
        (msg,) = await client.read("orders")
        assert msg.id == mid and msg.body == {"k": "v"}
        assert (await client.get_queue("orders")).depth == 1


# ---------------------------------------------------------------- schedules
#
# The engine's cron and catch-up rules are tested in test_schedules_sql.py;
# these check the client's calls: arguments, typed records, errors.

#: A Flow with one step, to schedule (its handler never runs here).
nightly = catbird.Flow("nightly")


@nightly.step()
def nightly_step(input: dict[str, Any]) -> dict[str, Any]:
    return input


@dataclasses.dataclass
class ReportInput:
    kind: str
    days: int


async def test_task_schedule_create_list_upsert_delete(client: AsyncClient) -> None:
    report = catbird.Task("report")
    await client.create_task(report)
    await client.create_task("other")
    await client.create_task_schedule(report, "0 9 * * 1-5", input=ReportInput("daily", 1))
    await client.create_task_schedule("other", "@hourly", catch_up="all")
    first, second = await client.list_task_schedules()  # next tick first
    assert isinstance(first, catbird.TaskScheduleInfo)
    assert (first.task_name, first.name, first.cron_spec) == ("other", "other", "@hourly")
    assert first.next_run_at == NOW + timedelta(hours=1)
    assert (first.catch_up, first.input, first.enabled) == ("all", {}, True)
    assert second.task_name == "report" and second.input == {"kind": "daily", "days": 1}
    assert second.next_run_at == datetime(2030, 1, 2, 9, tzinfo=UTC)  # a Wednesday
    assert second.last_run_at is None and second.last_enqueued_at is None
    assert second.created_at == second.updated_at == NOW
    # upsert: same task, a new spec and policy
    await client.create_task_schedule("report", "30 12 * * *", catch_up="skip")
    [updated] = [s for s in await client.list_task_schedules() if s.name == "report"]
    assert (updated.cron_spec, updated.catch_up, updated.input) == ("30 12 * * *", "skip", {})
    assert updated.next_run_at == NOW + timedelta(minutes=30)
    assert await client.delete_task_schedule(report) is True
    assert await client.delete_task_schedule(report) is False
    assert [s.name for s in await client.list_task_schedules()] == ["other"]
    assert (await client.get_task("report")).name == "report"  # the task stays


async def test_flow_schedule_enable_disable(client: AsyncClient) -> None:
    await client.create_flow(nightly)
    await client.create_flow_schedule(nightly, "0 2 * * *", input={"full": True})
    [s] = await client.list_flow_schedules()
    assert isinstance(s, catbird.FlowScheduleInfo)
    assert (s.flow_name, s.input, s.catch_up) == ("nightly", {"full": True}, "one")
    assert await client.disable_flow_schedule("nightly") is True
    assert not (await client.list_flow_schedules())[0].enabled
    assert await client.enable_flow_schedule(nightly) is True
    assert (await client.list_flow_schedules())[0].enabled
    assert await client.delete_flow_schedule(nightly) is True
    assert await client.enable_flow_schedule(nightly) is False
    assert await client.disable_flow_schedule(nightly) is False
    assert await client.list_task_schedules() == []


async def test_task_schedule_enable_disable(client: AsyncClient) -> None:
    await client.create_task("report")
    assert await client.disable_task_schedule("report") is False
    await client.create_task_schedule("report", "* * * * *")
    assert await client.disable_task_schedule("report") is True
    assert not (await client.list_task_schedules())[0].enabled
    assert await client.enable_task_schedule("report") is True


async def test_execute_due_schedules_fires_the_named_ones(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any]
) -> None:
    for name in ("report", "other"):
        await client.create_task(name)
        await client.create_task_schedule(name, "*/5 * * * *", input={"n": name})
    await client.create_flow(nightly)
    await client.create_flow_schedule(nightly, "*/5 * * * *")
    assert await client.execute_due_task_schedules() == 0  # nothing is due yet
    await set_now(aconn, NOW + timedelta(minutes=5, seconds=1))
    assert await client.execute_due_task_schedules([catbird.Task("report")]) == 1
    assert await client.execute_due_task_schedules(["report"]) == 0  # fired once
    [run] = await client.list_task_runs("report")
    assert run.input == {"n": "report"}
    assert run.concurrency_key == "sched:report:2030-01-01T12:05:00Z"
    assert await client.list_task_runs("other") == []
    [report] = [s for s in await client.list_task_schedules() if s.name == "report"]
    assert report.last_run_at == NOW + timedelta(minutes=5)
    assert report.next_run_at == NOW + timedelta(minutes=10)
    assert await client.execute_due_task_schedules(batch_size=10, max_schedules=5) == 1
    assert await client.execute_due_flow_schedules([nightly]) == 1
    [flow_run] = await client.list_flow_runs(nightly)
    assert flow_run.input == {} and flow_run.concurrency_key == "sched:nightly:2030-01-01T12:05:00Z"
    assert await client.execute_due_flow_schedules() == 0


async def test_next_cron_ticks(client: AsyncClient) -> None:
    # default start: the engine clock (catbird.fake_now), not the client's
    assert await client.next_cron_ticks("0 */6 * * *", quantity=3) == [
        datetime(2030, 1, 1, 18, tzinfo=UTC),
        datetime(2030, 1, 2, 0, tzinfo=UTC),
        datetime(2030, 1, 2, 6, tzinfo=UTC),
    ]
    after = datetime(2030, 1, 4, 12, tzinfo=UTC)  # a Friday
    assert await client.next_cron_ticks("0 9 * * MON-FRI", after=after, quantity=1) == [
        datetime(2030, 1, 7, 9, tzinfo=UTC)
    ]
    assert len(await client.next_cron_ticks("@daily")) == 5


async def test_schedule_errors(client: AsyncClient) -> None:
    await client.create_task("report")
    with pytest.raises(InvalidArgument, match="hour"):
        await client.create_task_schedule("report", "0 24 * * *")
    with pytest.raises(InvalidArgument, match="catch_up"):
        await client.create_task_schedule("report", "0 1 * * *", catch_up="most")
    with pytest.raises(NotFound):
        await client.create_task_schedule("missing", "0 1 * * *")
    with pytest.raises(NotFound):
        await client.create_flow_schedule("missing", "0 1 * * *")
    with pytest.raises(InvalidArgument, match="day-of-week"):
        await client.next_cron_ticks("0 0 * * 8")
    with pytest.raises(InvalidArgument, match="quantity"):
        await client.next_cron_ticks("@daily", quantity=0)
    with pytest.raises(InvalidArgument, match="batch_size"):
        await client.execute_due_task_schedules(batch_size=0)
    assert await client.list_task_schedules() == []


# ---------------------------------------------------------------- waiting on events


async def finish_once_listening(dsn: str, statements: list[str], *, fake_now: bool) -> None:
    """Run ``statements`` on a connection of their own once a waiter LISTENs and
    has had its first look at the run, so that the run's event, not a poll,
    must end the wait."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        if fake_now:
            await set_now(other, NOW)
        listening = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN catbird'"
        )
        while (await (await other.execute(listening)).fetchone()) == (0,):
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        for statement in statements:
            await other.execute(statement)  # type: ignore[arg-type]


async def test_wait_for_output_wakes_on_the_completed_event(client: AsyncClient, dsn: str) -> None:
    await client.create_task("work")
    handle = await client.run_task("work", {"n": 1})
    finish = [
        "SELECT catbird.cb_claim_tasks('work', 1, 60000)",
        f"SELECT catbird.cb_complete_task('work', {handle.id}, '42')",
    ]
    output, _ = await run_concurrently(
        # a poll every hour: only the event can end this wait in time
        lambda: handle.wait_for_output(timeout=60, poll_interval=3600),
        lambda: finish_once_listening(dsn, finish, fake_now=True),
    )
    assert output == 42


async def test_wait_for_output_of_a_flow_wakes_on_the_canceled_event(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], dsn: str
) -> None:
    await aconn.execute("""SELECT catbird.cb_create_flow('pipe', steps => '[{"name": "a"}]')""")
    handle = await client.run_flow("pipe", {})
    finish = [f"SELECT catbird.cb_cancel_flow('pipe', {handle.id}, 'enough')"]
    waiter = functools.partial(handle.wait_for_output, timeout=60, poll_interval=3600)
    with pytest.raises(catbird.RunCanceled):
        await run_concurrently(waiter, lambda: finish_once_listening(dsn, finish, fake_now=True))


async def test_wait_for_output_with_a_pool_listens_on_a_connection_of_its_own(dsn: str) -> None:
    async with AsyncConnectionPool(dsn, min_size=1, max_size=1, open=False) as pool:
        client = AsyncClient(pool)
        await client.create_task("work")
        handle = await client.run_task("work", "x")
        finish = [
            "SELECT catbird.cb_claim_tasks('work', 1, 60000)",
            f"SELECT catbird.cb_complete_task('work', {handle.id}, '\"done\"')",
        ]
        output, _ = await run_concurrently(
            # the pool's one connection stays free for the waiter's checks
            lambda: handle.wait_for_output(timeout=60, poll_interval=3600),
            lambda: finish_once_listening(dsn, finish, fake_now=False),
        )
        assert output == "done"


async def test_wait_for_output_polls_when_no_connection_can_listen(
    client: AsyncClient, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if True:  # ASYNC

        async def refuse(source: object) -> psycopg.AsyncConnection[Any]:
            raise psycopg.OperationalError("too many connections")

    else:

        def refuse(source: object) -> psycopg.AsyncConnection[Any]:
            raise psycopg.OperationalError("too many connections")

    monkeypatch.setattr("catbird.client.client_async.connect_like", refuse)
    await client.create_task("work")
    handle = await client.run_task("work", 1)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
        await set_now(other, NOW)
        await other.execute("SELECT catbird.cb_cancel_task('work', %s)", [handle.id])
    with pytest.raises(catbird.RunCanceled):
        await handle.wait_for_output(timeout=60)
# ---------------------------------------------------------------- health and metrics


async def test_health_report_and_metrics(
    client: AsyncClient, aconn: psycopg.AsyncConnection[Any], orders: str
) -> None:
    await client.send(orders, {"n": 1})
    report = await client.health()
    assert isinstance(report, catbird.HealthReport)
    assert report.healthy and report.status == "ok" and report.problems == ()
    assert report.checked_at == NOW
    [queued] = [c for c in report.checks if c.subject == "queue:orders"]
    assert (queued.check, queued.value, queued.unit, queued.threshold) == (
        "oldest_queued",
        0,
        "seconds",
        300,
    )
    await set_now(aconn, NOW + timedelta(seconds=10))
    for threshold, status in ((20.0, "ok"), (5.0, "warning"), (timedelta(seconds=2), "critical")):
        report = await client.health(queued_age=threshold)
        [queued] = [c for c in report.checks if c.subject == "queue:orders"]
        assert (queued.value, queued.status, report.status) == (10, status, status)
    depth = [m for m in await client.metrics() if m.metric == "catbird_queue_messages"]
    assert depth == [catbird.MetricSample("catbird_queue_messages", {"queue": "orders"}, 1.0)]
    with pytest.raises(InvalidArgument, match="critical_factor"):
        await client.health(critical_factor=0.5)
    with pytest.raises(InvalidArgument, match="xmin_age"):
        await client.health(xmin_age=-1.0)

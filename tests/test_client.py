"""catbird.Client (sync) against a real PostgreSQL with the extension installed.

Time-dependent behaviour is tested through the engine clock: cb_now() reads
the session setting catbird.fake_now, pinned on the test connection.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pydantic
import pytest
from psycopg_pool import ConnectionPool

import catbird
from catbird import (
    Binding,
    Client,
    InvalidArgument,
    Message,
    NotFound,
    QueueInfo,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def set_now(conn: psycopg.Connection[Any], ts: datetime) -> None:
    conn.execute("SELECT set_config('catbird.fake_now', %s, false)", [ts.isoformat()])


@pytest.fixture
def client(conn: psycopg.Connection[Any]) -> Client:
    set_now(conn, NOW)
    return Client(conn)


@pytest.fixture
def orders(client: Client) -> str:
    client.create_queue("orders")
    return "orders"


# ---------------------------------------------------------------- queues


def test_create_queue_is_idempotent_and_described(client: Client) -> None:
    exp = NOW + timedelta(days=1)
    client.create_queue("orders", expires_at=exp, description="all orders")
    client.create_queue("orders", description="ignored second time")
    info = client.get_queue("orders")
    assert info == QueueInfo(
        name="orders",
        description="all orders",
        created_at=NOW,
        expires_at=exp,
        depth=0,
        visible=0,
        oldest_visible_at=None,
    )
    assert [q.name for q in client.list_queues()] == ["orders"]


def test_list_queues_counts_depth_visible_and_oldest(client: Client, orders: str) -> None:
    client.create_queue("audit")
    client.send(orders, 1)
    client.send(orders, 2, visible_at=NOW + timedelta(minutes=5))
    queues = {q.name: q for q in client.list_queues()}
    assert sorted(queues) == ["audit", "orders"]
    assert (queues["orders"].depth, queues["orders"].visible) == (2, 1)
    assert queues["orders"].oldest_visible_at == NOW
    assert (queues["audit"].depth, queues["audit"].visible) == (0, 0)
    assert queues["audit"].oldest_visible_at is None


def test_get_queue_missing_raises_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        client.get_queue("nope")


def test_create_queue_bad_name_is_invalid_argument_and_writes_nothing(client: Client) -> None:
    for bad in ["Orders", "1orders", "or-ders", "", "x" * 59]:
        with pytest.raises(InvalidArgument) as info:
            client.create_queue(bad)
        assert info.value.sqlstate == "22023"
        assert isinstance(info.value.__cause__, psycopg.errors.InvalidParameterValue)
        assert str(info.value)  # the server's message
    assert client.list_queues() == []
    client.create_queue("x" * 58)  # the longest valid name
    assert client.get_queue("x" * 58).name == "x" * 58


def test_delete_queue(client: Client, orders: str) -> None:
    client.send(orders, {"a": 1})
    client.bind(orders, "shop.#")
    assert client.delete_queue(orders) is True
    assert client.delete_queue(orders) is False
    assert client.list_queues() == []
    assert client.list_bindings() == []
    with pytest.raises(NotFound):
        client.read(orders)


def test_purge_queue(client: Client, orders: str) -> None:
    client.send_many(orders, [1, 2, 3])
    client.read(orders)  # a hidden one is purged too
    assert client.purge_queue(orders) == 3
    assert client.purge_queue(orders) == 0
    assert client.get_queue(orders).depth == 0
    with pytest.raises(NotFound) as info:
        client.purge_queue("missing")
    assert info.value.sqlstate == "42704"
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedObject)


# ---------------------------------------------------------------- send / read / delete


def test_send_read_delete_round_trip(client: Client, orders: str) -> None:
    body = {"id": 1, "items": ["a", "b"], "total": 9.5, "paid": True, "note": None}
    mid = client.send(
        orders,
        body,
        topic="shop.order.created",
        headers={"trace": "t-1"},
        priority=3,
        expires_at=NOW + timedelta(hours=1),
    )
    assert isinstance(mid, int)
    msgs = client.read(orders, quantity=10, hide_for=30.0)
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
    assert client.read(orders) == []  # hidden
    assert client.delete(orders, mid) is True
    assert client.delete(orders, mid) is False
    assert client.get_queue(orders).depth == 0


@pytest.mark.parametrize(
    "body", [None, 0, 1.5, "text", [1, "two", None], {"nested": {"deep": [1, {"x": []}]}}, True]
)
def test_any_json_body_round_trips(client: Client, orders: str, body: Any) -> None:
    client.send(orders, body)
    (msg,) = client.read(orders)
    assert msg.body == body
    assert msg.headers is None and msg.topic is None


@dataclasses.dataclass
class OrderDC:
    id: int
    tags: list[str]


class OrderModel(pydantic.BaseModel):
    id: int
    at: datetime


def test_dataclass_and_pydantic_bodies_are_encoded(client: Client, orders: str) -> None:
    client.send(orders, OrderDC(1, ["x"]))
    client.send(orders, OrderModel(id=2, at=NOW))
    client.send_many(orders, [OrderDC(3, []), OrderModel(id=4, at=NOW)])
    bodies = [m.body for m in client.read(orders, quantity=10)]
    assert bodies == [
        {"id": 1, "tags": ["x"]},
        {"id": 2, "at": "2030-01-01T12:00:00Z"},
        {"id": 3, "tags": []},
        {"id": 4, "at": "2030-01-01T12:00:00Z"},
    ]


def test_priority_then_age_ordering(client: Client, orders: str) -> None:
    low = client.send(orders, "low", priority=0)
    high = client.send(orders, "high", priority=5)
    mid1 = client.send(orders, "mid1", priority=1)
    mid2 = client.send(orders, "mid2", priority=1)
    neg = client.send(orders, "neg", priority=-1)
    first = client.read(orders, quantity=2)
    assert [m.id for m in first] == [high, mid1]
    rest = client.read(orders, quantity=10)
    assert [m.id for m in rest] == [mid2, low, neg]


def test_hide_for_hides_until_window_passes(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    mid = client.send(orders, "x")
    (m1,) = client.read(orders, hide_for=30.0)
    assert (m1.deliveries, m1.visible_at) == (1, NOW + timedelta(seconds=30))
    set_now(conn, NOW + timedelta(seconds=29.999))
    assert client.read(orders) == []
    set_now(conn, NOW + timedelta(seconds=30))
    (m2,) = client.read(orders, hide_for=timedelta(minutes=2))
    assert (m2.id, m2.deliveries) == (mid, 2)
    assert m2.visible_at == NOW + timedelta(seconds=150)


def test_hide_for_rounds_up_to_whole_milliseconds(client: Client, orders: str) -> None:
    client.send_many(orders, ["a", "b", "c"])
    (a,) = client.read(orders, hide_for=0.0001)  # not silently 0 ms
    assert a.visible_at == NOW + timedelta(milliseconds=1)
    (b,) = client.read(orders, hide_for=0.1)  # float noise does not add a millisecond
    assert b.visible_at == NOW + timedelta(milliseconds=100)
    (c,) = client.read(orders, hide_for=2)  # int seconds
    assert c.visible_at == NOW + timedelta(seconds=2)


def test_visible_at_and_expires_at(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    later = client.send(orders, "later", visible_at=NOW + timedelta(minutes=10))
    client.send(orders, "expired", expires_at=NOW)
    client.send(orders, "expiring", expires_at=NOW + timedelta(minutes=5))
    assert [m.body for m in client.read(orders, quantity=10)] == ["expiring"]
    set_now(conn, NOW + timedelta(minutes=10))
    assert [m.id for m in client.read(orders, quantity=10)] == [later]


def test_concurrency_key_dedups_live_messages(client: Client, orders: str) -> None:
    first = client.send(orders, {"v": 1}, concurrency_key="order-1")
    again = client.send(orders, {"v": 2}, concurrency_key="order-1", priority=9)
    assert again == first
    other = client.send(orders, {"v": 3}, concurrency_key="order-2")
    assert other != first
    msgs = client.read(orders, quantity=10)
    assert {(m.id, m.concurrency_key): m.body for m in msgs} == {
        (first, "order-1"): {"v": 1},
        (other, "order-2"): {"v": 3},
    }
    assert client.delete(orders, [first]) == [first]
    fresh = client.send(orders, {"v": 4}, concurrency_key="order-1")
    assert fresh not in (first, other)


def test_send_many_returns_ids_in_input_order(client: Client, orders: str) -> None:
    ids = client.send_many(
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
    msgs = {m.id: m for m in client.read(orders, quantity=10)}
    assert sorted(msgs) == sorted(set(ids))
    assert msgs[ids[0]].body == {"n": 0} and msgs[ids[0]].headers == {"h": 0}
    assert msgs[ids[1]].headers is None and msgs[ids[1]].concurrency_key is None
    assert msgs[ids[3]].concurrency_key == "k3"
    assert {m.topic for m in msgs.values()} == {"shop.bulk"}
    assert {m.priority for m in msgs.values()} == {2}


def test_send_many_plain_and_empty(client: Client, orders: str) -> None:
    assert client.send_many(orders, []) == []
    ids = client.send_many(orders, (x for x in ["a", "b", "c"]))
    assert ids == sorted(ids)
    assert [m.body for m in client.read(orders, quantity=3)] == ["a", "b", "c"]


def test_send_many_mismatched_lengths_rejected(client: Client, orders: str) -> None:
    with pytest.raises(InvalidArgument):
        client.send_many(orders, [1, 2], concurrency_keys=["a"])
    with pytest.raises(InvalidArgument):
        client.send_many(orders, [1, 2], headers=[{"a": 1}])
    with pytest.raises(InvalidArgument):
        client.send_many(orders, [1, 2], headers=[{"a": 1}, ["not an object"]])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        client.send_many(orders, [1, 2], topic="a..b")
    assert client.get_queue(orders).depth == 0


def test_read_poll_returns_at_once_when_messages_exist(client: Client, orders: str) -> None:
    client.send(orders, "x")
    t0 = time.monotonic()
    client.send(orders, "y")
    msgs = client.read_poll(orders, quantity=5, hide_for=10.0, poll_for=5.0)
    assert [m.body for m in msgs] == ["x", "y"]
    assert {m.visible_at for m in msgs} == {NOW + timedelta(seconds=10)}
    assert time.monotonic() - t0 < 2.0


def test_read_poll_waits_then_returns_empty(client: Client, orders: str) -> None:
    t0 = time.monotonic()
    assert client.read_poll(orders, poll_for=0.3, poll_interval=0.05) == []
    assert 0.25 <= time.monotonic() - t0 < 3.0


def test_read_poll_sees_message_sent_meanwhile(client: Client, orders: str, dsn: str) -> None:
    def later() -> None:
        time.sleep(0.3)
        with Client.connect(dsn) as other:
            other.send(orders, "late")

    t = threading.Thread(target=later)
    t.start()
    t0 = time.monotonic()
    msgs = client.read_poll(orders, poll_for=10.0, poll_interval=0.05)
    t.join()
    assert [m.body for m in msgs] == ["late"]
    assert time.monotonic() - t0 < 5.0


def test_concurrent_readers_never_share_a_message(dsn: str) -> None:
    with Client.connect(dsn) as setup:
        setup.create_queue("jobs")
        setup.send_many("jobs", list(range(200)))
    seen: list[list[int]] = []

    def consume() -> None:
        got: list[int] = []
        with Client.connect(dsn) as c:
            while batch := c.read("jobs", quantity=7, hide_for=60.0):
                got.extend(m.id for m in batch)
        seen.append(got)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_ids = [i for got in seen for i in got]
    assert len(all_ids) == 200
    assert len(set(all_ids)) == 200


# ---------------------------------------------------------------- hide / delete


def test_hide_single_and_many(client: Client, conn: psycopg.Connection[Any], orders: str) -> None:
    a, b, c = client.send_many(orders, ["a", "b", "c"])
    assert client.hide(orders, a, hide_for=60.0) is True
    assert client.hide(orders, 999_999, hide_for=60.0) is False
    assert client.hide(orders, [b, 999_999], hide_for=120.0) == [b]
    assert client.hide_many(orders, [c], hide_for=30.0) == [c]
    assert client.hide_many(orders, [], hide_for=30.0) == []
    assert client.read(orders) == []
    set_now(conn, NOW + timedelta(seconds=30))
    assert [m.id for m in client.read(orders, quantity=5, hide_for=3600)] == [c]
    set_now(conn, NOW + timedelta(seconds=60))
    assert [m.id for m in client.read(orders, quantity=5, hide_for=3600)] == [a]
    set_now(conn, NOW + timedelta(seconds=120))
    assert [m.id for m in client.read(orders, quantity=5, hide_for=3600)] == [b]


def test_hide_can_make_visible_sooner(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    mid = client.send(orders, "x")
    client.read(orders, hide_for=3600.0)
    assert client.hide(orders, mid, hide_for=0.001)
    set_now(conn, NOW + timedelta(milliseconds=1))
    assert [m.id for m in client.read(orders)] == [mid]


def test_delete_single_and_many(client: Client, orders: str) -> None:
    a, b, c = client.send_many(orders, ["a", "b", "c"])
    assert client.delete(orders, a) is True
    assert client.delete(orders, a) is False
    assert sorted(client.delete(orders, [a, b, c, 12345])) == sorted([b, c])
    assert client.delete_many(orders, [b]) == []
    assert client.delete_many(orders, []) == []
    assert client.get_queue(orders).depth == 0


def test_hide_and_delete_only_touch_their_queue(client: Client, orders: str) -> None:
    client.create_queue("other")
    mid = client.send("other", "x")
    assert client.delete(orders, mid) is False
    assert client.hide(orders, mid, hide_for=10.0) is False
    assert client.get_queue("other").depth == 1


# ---------------------------------------------------------------- topics


def test_bind_unbind_list_bindings(client: Client, orders: str) -> None:
    client.create_queue("audit")
    client.bind(orders, "shop.order.*")
    client.bind(orders, "shop.order.*")  # idempotent
    client.bind("audit", "#")
    assert client.list_bindings() == [
        Binding("audit", "#", NOW),
        Binding("orders", "shop.order.*", NOW),
    ]
    assert client.list_bindings(orders) == [Binding("orders", "shop.order.*", NOW)]
    assert client.unbind(orders, "shop.order.*") is True
    assert client.unbind(orders, "shop.order.*") is False
    assert client.list_bindings(orders) == []


def test_bind_errors(client: Client, orders: str) -> None:
    with pytest.raises(NotFound):
        client.bind("missing", "a.b")
    for bad in ["a..b", "a.#.b", "", "a b", "*x"]:
        with pytest.raises(InvalidArgument):
            client.bind(orders, bad)
    assert client.list_bindings() == []


def test_publish_delivers_to_matching_queues(client: Client, orders: str) -> None:
    client.create_queue("audit")
    client.create_queue("billing")
    client.bind(orders, "shop.order.*")
    client.bind(orders, "shop.#")  # a second matching pattern: still one copy
    client.bind("audit", "#")
    client.bind("billing", "shop.invoice.*")
    n = client.publish(
        "shop.order.created", {"id": 2}, headers={"h": 1}, priority=4, concurrency_key="o2"
    )
    assert n == 2
    (o,) = client.read(orders, quantity=10)
    (a,) = client.read("audit", quantity=10)
    assert client.read("billing") == []
    for m in (o, a):
        assert (m.body, m.topic, m.headers, m.priority, m.concurrency_key) == (
            {"id": 2},
            "shop.order.created",
            {"h": 1},
            4,
            "o2",
        )
    assert client.publish("nobody.listens", 1) == 1  # audit binds "#"
    client.unbind("audit", "#")
    assert client.publish("nobody.listens", 1) == 0


def test_publish_many_counts_targets_times_messages(client: Client, orders: str) -> None:
    client.create_queue("audit")
    client.bind(orders, "shop.*")
    client.bind("audit", "shop.#")
    assert client.publish_many("shop.sale", [1, 2, 3]) == 6
    assert client.publish_many("shop.sale", []) == 0
    assert [m.body for m in client.read(orders, quantity=10)] == [1, 2, 3]
    assert [m.body for m in client.read("audit", quantity=10)] == [1, 2, 3]
    assert client.publish_many("shop.sale", ["x", "y"], concurrency_keys=["k", "k"]) == 4
    assert [m.body for m in client.read(orders, quantity=10)] == ["x"]


def test_publish_visible_at_and_expiry(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    client.bind(orders, "t")
    client.publish("t", "later", visible_at=NOW + timedelta(seconds=5))
    client.publish_many(
        "t", ["gone"], expires_at=NOW + timedelta(seconds=1), headers=[{"x": 1}], priority=1
    )
    assert [m.body for m in client.read(orders, quantity=5)] == ["gone"]
    set_now(conn, NOW + timedelta(seconds=5))
    assert [m.body for m in client.read(orders, quantity=5)] == ["later"]


def test_publish_bad_topic(client: Client) -> None:
    for bad in ["", "a..b", "a.*", "a.#", "sp ace"]:
        with pytest.raises(InvalidArgument):
            client.publish(bad, 1)


# ---------------------------------------------------------------- errors


def test_unknown_queue_is_not_found_everywhere(client: Client) -> None:
    calls: list[Callable[[], object]] = [
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
            call()
        assert info.value.sqlstate == "42704", i
        assert "missing" in str(info.value)


def test_invalid_arguments_are_rejected_by_sql(client: Client, orders: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: client.read(orders, quantity=0),
        lambda: client.read(orders, hide_for=0),
        lambda: client.read(orders, hide_for=-1.0),
        lambda: client.read_poll(orders, poll_for=-0.5),
        lambda: client.read_poll(orders, poll_interval=0),
        lambda: client.hide(orders, 1, hide_for=0),
        lambda: client.send(orders, 1, headers=["not", "an", "object"]),  # type: ignore[arg-type]
        lambda: client.send(orders, 1, topic="bad topic"),
        lambda: client.send("Bad", 1),
        lambda: client.read(orders, hide_for=1e12),  # does not fit an int of milliseconds
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as info:
            call()
        assert info.value.sqlstate in {"22023", "22003"}
    assert client.get_queue(orders).depth == 0


def test_non_finite_durations_rejected_before_sending(client: Client, orders: str) -> None:
    for bad in [math.nan, math.inf, -math.inf]:
        with pytest.raises(InvalidArgument) as info:
            client.read(orders, hide_for=bad)
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


def test_unmapped_errors_propagate_unchanged(client: Client) -> None:
    from catbird._sql import Query

    with pytest.raises(psycopg.errors.DivisionByZero):
        client.execute(Query("boom", "SELECT 1/0", {}, list))


# ---------------------------------------------------------------- connections


def test_using_joins_the_callers_transaction(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    conn.execute("CREATE TABLE app_orders (id int)")
    with conn.transaction(force_rollback=True):
        conn.execute("INSERT INTO app_orders VALUES (1)")
        bound = client.using(conn)
        bound.send(orders, {"id": 1})
        assert bound.get_queue(orders).depth == 1
    assert client.get_queue(orders).depth == 0
    assert conn.execute("SELECT count(*) FROM app_orders").fetchone() == (0,)

    with conn.transaction():
        conn.execute("INSERT INTO app_orders VALUES (2)")
        client.using(conn).send(orders, {"id": 2})
    assert client.get_queue(orders).depth == 1
    assert conn.execute("SELECT count(*) FROM app_orders").fetchone() == (1,)


def test_error_inside_transaction_rolls_back_everything(
    client: Client, conn: psycopg.Connection[Any], orders: str
) -> None:
    with pytest.raises(NotFound), conn.transaction():
        client.using(conn).send(orders, "kept?")
        client.using(conn).send("missing", "boom")
    assert client.get_queue(orders).depth == 0


def test_using_another_connection_with_the_pool(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        client = Client(pool)
        client.create_queue("orders")
        with pool.connection() as conn:
            with conn.transaction():
                client.using(conn).send("orders", "in tx")
                raise_rollback(conn)
            assert client.get_queue("orders").depth == 0
            with conn.transaction():
                client.using(conn).send("orders", "committed")
        assert [m.body for m in client.read("orders")] == ["committed"]


def raise_rollback(conn: psycopg.Connection[Any]) -> None:
    raise psycopg.Rollback()


def test_pool_backed_client(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=3, open=True) as pool:
        client = Client(pool)
        assert client.pool is pool and client.connection is None
        client.create_queue("orders")
        ids = client.send_many("orders", ["a", "b"])
        # an error returns the connection to the pool in a usable state
        with pytest.raises(NotFound):
            client.send("missing", 1)
        msgs = client.read("orders", quantity=10)
        assert [m.id for m in msgs] == ids
        assert client.delete("orders", ids) == ids
        # each call committed: visible from an independent connection
        with psycopg.connect(dsn) as other:
            assert Client(other).get_queue("orders").depth == 0
        client.close()  # not owned: the pool stays open
        assert not pool.closed


def test_connect_owns_its_connection(dsn: str) -> None:
    with Client.connect(dsn) as client:
        conn = client.connection
        assert conn is not None and conn.autocommit
        client.create_queue("orders")
        client.send("orders", 1)
    assert conn.closed
    with Client.connect(dsn) as again:
        assert again.get_queue("orders").depth == 1


def test_client_on_a_user_connection_is_not_closed(conn: psycopg.Connection[Any]) -> None:
    with Client(conn) as client:
        client.create_queue("orders")
    assert not conn.closed


def test_client_rejects_other_objects() -> None:
    with pytest.raises(TypeError):
        Client("postgresql://nope")  # type: ignore[arg-type]


def test_user_row_factory_does_not_matter(dsn: str) -> None:
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        client = Client(conn)
        client.create_queue("orders")
        mid = client.send("orders", {"k": "v"})
        (msg,) = client.read("orders")
        assert msg.id == mid and msg.body == {"k": "v"}
        assert client.get_queue("orders").depth == 1

"""82_wire.sql: Wire nodes, presence across nodes, and their garbage collection.

Staleness is decided by the engine clock (catbird.fake_now), never by sleeping.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, call, fn, rejected, scalar

SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def clock(conn: psycopg.Connection) -> Clock:
    return Clock(conn)


def presence(conn: psycopg.Connection, topic: str) -> list[str]:
    return [r["cb_wire_presence"] for r in call(conn, "cb_wire_presence", topic=topic)]


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def test_heartbeat_registers_then_refreshes_and_says_when_it_registered(conn, clock):
    (node,) = ids(1)
    assert fn(conn, "cb_wire_heartbeat", node_id=node) is True
    clock.advance(seconds=5)
    assert fn(conn, "cb_wire_heartbeat", node_id=node) is False
    row = conn.execute(
        "SELECT started_at, last_heartbeat_at FROM catbird.cb_wire_nodes WHERE id = %s", (node,)
    ).fetchone()
    assert row == (T0, T0 + 5 * SECOND)


def test_presence_lists_distinct_identities_of_every_live_node(conn, clock):
    node_a, node_b, s1, s2, s3 = ids(5)
    assert (
        fn(
            conn,
            "cb_wire_join",
            node_id=node_a,
            subscriber_id=s1,
            identity="ann",
            topics=["room.1", "room.2"],
        )
        == 2
    )
    assert (
        fn(
            conn,
            "cb_wire_join",
            node_id=node_b,
            subscriber_id=s2,
            identity="bob",
            topics=["room.1"],
        )
        == 1
    )
    # The same identity twice (two tabs) is listed once.
    fn(conn, "cb_wire_join", node_id=node_b, subscriber_id=s3, identity="ann", topics=["room.1"])
    # Joining again changes nothing.
    assert (
        fn(
            conn,
            "cb_wire_join",
            node_id=node_a,
            subscriber_id=s1,
            identity="ann",
            topics=["room.1"],
        )
        == 0
    )
    assert presence(conn, "room.1") == ["ann", "bob"]
    assert presence(conn, "room.2") == ["ann"]
    assert presence(conn, "room.3") == []

    assert fn(conn, "cb_wire_leave", node_id=node_a, subscriber_id=s1) == 2
    assert presence(conn, "room.1") == ["ann", "bob"]  # ann's other tab, on node b
    assert presence(conn, "room.2") == []
    assert fn(conn, "cb_wire_leave", node_id=node_a, subscriber_id=s1) == 0


def test_patterns_are_presence_topics_as_subscribed(conn, clock):
    node, sub = ids(2)
    fn(conn, "cb_wire_join", node_id=node, subscriber_id=sub, identity="ann", topics=["chat.#"])
    assert presence(conn, "chat.#") == ["ann"]
    assert presence(conn, "chat.lobby") == []


def test_a_silent_node_disappears_from_presence_then_gc_deletes_it_with_its_rows(conn, clock):
    live, silent, s1, s2 = ids(4)
    fn(conn, "cb_wire_join", node_id=live, subscriber_id=s1, identity="ann", topics=["room.1"])
    fn(conn, "cb_wire_join", node_id=silent, subscriber_id=s2, identity="bob", topics=["room.1"])
    clock.advance(seconds=10)
    fn(conn, "cb_wire_heartbeat", node_id=live)
    clock.advance(seconds=5)  # silent for exactly 15 s: still live
    assert presence(conn, "room.1") == ["ann", "bob"]
    assert fn(conn, "cb_gc")["stale_wire_nodes_deleted"] == 0
    clock.advance(ms=1)
    assert presence(conn, "room.1") == ["ann"]
    assert fn(conn, "cb_gc")["stale_wire_nodes_deleted"] == 1
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_wire_presence WHERE identity = 'bob'") == 0
    assert scalar(conn, "SELECT array_agg(id) FROM catbird.cb_wire_nodes") == [live]
    # The removed node learns it on its next heartbeat, and re-registers.
    assert fn(conn, "cb_wire_heartbeat", node_id=silent) is True


def test_stop_removes_the_node_and_its_presence(conn, clock):
    node, sub = ids(2)
    fn(conn, "cb_wire_join", node_id=node, subscriber_id=sub, identity="ann", topics=["room.1"])
    assert fn(conn, "cb_wire_stop", node_id=node) is True
    assert presence(conn, "room.1") == []
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_wire_presence") == 0
    assert fn(conn, "cb_wire_stop", node_id=node) is False


def test_join_and_leave_announce_presence_changes(dsn, conn):
    node, sub = ids(2)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN catbird")
        fn(
            conn,
            "cb_wire_join",
            node_id=node,
            subscriber_id=sub,
            identity="ann",
            topics=["room.1", "room.2"],
        )
        fn(conn, "cb_wire_leave", node_id=node, subscriber_id=sub)
        got = [json.loads(n.payload) for n in listener.notifies(timeout=2.0, stop_after=2)]
    assert [(e["topic"], json.loads(e["data"])) for e in got] == [
        (
            "catbird.wire.presence",
            {
                "node_id": str(node),
                "identity": "ann",
                "topics": ["room.1", "room.2"],
                "joined": True,
            },
        ),
        (
            "catbird.wire.presence",
            {
                "node_id": str(node),
                "identity": "ann",
                "topics": ["room.1", "room.2"],
                "joined": False,
            },
        ),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"node_id": None}, "invalid node_id: NULL"),
        ({"subscriber_id": None}, "invalid subscriber_id: NULL"),
        ({"identity": None}, "invalid identity NULL"),
        ({"identity": ""}, "invalid identity ''"),
        ({"identity": "x" * 256}, "expected 1 to 255 characters"),
        ({"topics": []}, "invalid topics: got 0"),
        ({"topics": None}, "invalid topics: got NULL"),
        ({"topics": [f"t.{i}" for i in range(101)]}, "invalid topics: got 101"),
        ({"topics": ["ok", "a..b"]}, "invalid pattern 'a..b'"),
        ({"topics": ["x" * 300]}, "at most 255 characters"),
    ],
)
def test_join_rejects_bad_input_and_writes_nothing(conn, args, message):
    node, sub = ids(2)
    fn(conn, "cb_wire_heartbeat", node_id=node)
    good = {"node_id": node, "subscriber_id": sub, "identity": "ann", "topics": ["room.1"]}
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_wire_join", **{**good, **args})
    assert message in str(info.value)


def test_the_other_calls_reject_null_ids_and_bad_topics(conn):
    for function, args in [
        ("cb_wire_heartbeat", {"node_id": None}),
        ("cb_wire_leave", {"node_id": uuid.uuid4(), "subscriber_id": None}),
        ("cb_wire_stop", {"node_id": None}),
    ]:
        with rejected(conn, errors.InvalidParameterValue):
            fn(conn, function, **args)
    with rejected(conn, errors.InvalidParameterValue) as info:
        presence(conn, "room..1")
    assert "invalid pattern" in str(info.value)


def test_appending_a_durable_notification_announces_it_on_commit(dsn, conn):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN catbird")
        with conn.transaction():
            first = fn(conn, "cb_notify_durable", identity="ann", topic="alerts.a", message="x")
            second = fn(conn, "cb_notify_durable", identity="ann", topic="alerts.b")
            # Nothing before commit.
            assert list(listener.notifies(timeout=0.2)) == []
        got = [json.loads(n.payload) for n in listener.notifies(timeout=2.0, stop_after=2)]
    assert [(e["topic"], json.loads(e["data"])) for e in got] == [
        ("catbird.inbox.created", {"identity": "ann", "id": first, "topic": "alerts.a"}),
        ("catbird.inbox.created", {"identity": "ann", "id": second, "topic": "alerts.b"}),
    ]

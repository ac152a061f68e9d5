"""The Python side of events: the notification envelope and topic patterns.

``catbird.events`` parses what arrives on the ``catbird`` channel and matches
topics with the binding syntax. Its matcher must agree with the engine's
bindings exactly, so the routing test below asks PostgreSQL which queues a
publish reached and compares.
"""

from __future__ import annotations

import json

import pytest

from catbird.events import Event, check_topic, parse_event, topic_matcher
from sqlhelpers import J, fn

PATTERNS = ["#", "orders", "orders.*", "orders.#", "orders.*.created", "*.eu.#", "*", "a.b.c"]
TOPICS = [
    "orders",
    "orders.eu",
    "orders.eu.created",
    "orders.us.created.late",
    "x.eu",
    "a.b.c",
    "b",
]


def test_matcher_agrees_with_the_engine_bindings(conn) -> None:
    for index, pattern in enumerate(PATTERNS):
        fn(conn, "cb_create_queue", name=f"q{index}")
        fn(conn, "cb_bind", queue=f"q{index}", pattern=pattern)
    for topic in TOPICS:
        fn(conn, "cb_publish", topic=topic, body=J({"topic": topic}))
    for index, pattern in enumerate(PATTERNS):
        reached = {
            row[0]["topic"]
            for row in conn.execute(f"SELECT body FROM catbird.cb_read('q{index}', 100, 60000)")
        }
        matches = topic_matcher(pattern)
        assert reached == {t for t in TOPICS if matches(t)}, pattern


@pytest.mark.parametrize("pattern", ["", "a..b", "a.#.b", "a.b#", "a b", "#.a", "x" * 256, "a.**"])
def test_an_invalid_pattern_is_explained(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"invalid pattern .*exactly one token"):
        topic_matcher(pattern)


@pytest.mark.parametrize("topic", ["", "a.*", "a.#", "a..b", "a b", "y" * 256])
def test_an_invalid_topic_is_explained(topic: str) -> None:
    with pytest.raises(ValueError, match=r"invalid topic .*wildcards belong in patterns only"):
        check_topic(topic)
    assert check_topic("orders.eu-1.created_at") == "orders.eu-1.created_at"


def test_parse_event_reads_the_envelope_and_run_ids() -> None:
    one = parse_event(
        json.dumps({"topic": "catbird.task.completed", "data": '{"task":"t","run_id":7}'})
    )
    assert one == Event("catbird.task.completed", '{"task":"t","run_id":7}', None)
    assert one.run_ids == (7,) and one.field("task") == "t" and one.field("flow") is None
    many = parse_event(
        json.dumps(
            {
                "topic": "catbird.task.failed",
                "data": '{"task":"t","run_ids":[1,2]}',
                "node_id": "5f0c",
            }
        )
    )
    assert many is not None and many.run_ids == (1, 2) and many.node_id == "5f0c"
    plain = parse_event(json.dumps({"topic": "chat.room1", "data": "hello"}))
    assert plain is not None and plain.run_ids == () and plain.field("task") is None
    with pytest.raises(ValueError):
        plain.json()
    assert parse_event("not json") is None
    assert parse_event(json.dumps(["topic"])) is None
    assert parse_event(json.dumps({"data": "no topic"})) is None

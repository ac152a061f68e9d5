"""Queues at the SQL level: create/delete/purge/introspect, send, read, read_poll, hide, delete.

Every test runs in a fresh database with the catbird extension installed and
calls the engine's functions directly. Time-dependent behaviour is driven by the
engine clock (``SET catbird.fake_now``), never by sleeping, except read_poll's
real wall-clock wait.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, fn, messages, rejected, scalar

SECOND = dt.timedelta(seconds=1)

INVALID_QUEUE_NAMES = [
    pytest.param("Jobs", id="uppercase"),
    pytest.param("1jobs", id="leading-digit"),
    pytest.param("_jobs", id="leading-underscore"),
    pytest.param("j" * 59, id="59-chars"),
    pytest.param("", id="empty"),
    pytest.param(None, id="null"),
    pytest.param("my-jobs", id="dash"),
    pytest.param("my jobs", id="space"),
    pytest.param("jobs;drop", id="semicolon"),
]


def send(conn: psycopg.Connection, queue: str, body: object = None, **options: object) -> int:
    """cb_send of one message; body defaults to {}."""
    return fn(conn, "cb_send", queue=queue, body=J({} if body is None else body), **options)


def read(conn: psycopg.Connection, queue: str, quantity: int = 10, hide_for: int = 30_000) -> list:
    return call(conn, "cb_read", queue=queue, quantity=quantity, hide_for=hide_for)


def queue_info(conn: psycopg.Connection, name: str) -> dict:
    (row,) = call(conn, "cb_get_queue", name=name)
    return row


# --------------------------------------------------------------------------- create / delete


def test_create_queue_stores_description_and_expiry(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs", expires_at=T0 + 3600 * SECOND, description="the jobs")
    assert queue_info(conn, "jobs") == {
        "name": "jobs",
        "description": "the jobs",
        "created_at": clock.now,
        "expires_at": T0 + 3600 * SECOND,
        "depth": 0,
        "visible": 0,
        "oldest_visible_at": None,
        "max_deliveries": None,
        "dead_letter_queue": None,
    }


def test_create_queue_again_is_a_no_op(conn):
    Clock(conn)
    fn(conn, "cb_create_queue", name="jobs", description="first")
    send(conn, "jobs", {"n": 1})
    fn(conn, "cb_create_queue", name="jobs", description="second", expires_at=T0)
    info = queue_info(conn, "jobs")
    assert (info["description"], info["expires_at"], info["depth"]) == ("first", None, 1)
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_queues") == 1


def test_create_queue_accepts_a_58_character_name(conn):
    name = "q" + "_" * 56 + "9"
    assert len(name) == 58
    fn(conn, "cb_create_queue", name=name)
    assert [q["name"] for q in call(conn, "cb_list_queues")] == [name]


@pytest.mark.parametrize("name", INVALID_QUEUE_NAMES)
def test_create_queue_rejects_invalid_names(conn, name):
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_create_queue", name=name)
    assert "invalid queue name" in str(info.value)


def test_delete_queue_drops_its_messages_and_bindings_only(conn):
    for q in ("jobs", "other"):
        fn(conn, "cb_create_queue", name=q)
        send(conn, q, {"q": q})
        fn(conn, "cb_bind", queue=q, pattern="orders.#")
    assert fn(conn, "cb_delete_queue", name="jobs") is True
    assert [q["name"] for q in call(conn, "cb_list_queues")] == ["other"]
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 1
    assert [m["body"] for m in messages(conn, "other")] == [{"q": "other"}]
    assert [(b["queue"], b["pattern"]) for b in call(conn, "cb_list_bindings")] == [
        ("other", "orders.#")
    ]


def test_delete_queue_returns_false_when_absent(conn):
    assert fn(conn, "cb_delete_queue", name="nope") is False
    fn(conn, "cb_create_queue", name="jobs")
    assert fn(conn, "cb_delete_queue", name="jobs") is True
    assert fn(conn, "cb_delete_queue", name="jobs") is False


def test_a_deleted_queue_can_be_created_again_empty(conn):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs", concurrency_key="k")
    fn(conn, "cb_delete_queue", name="jobs")
    fn(conn, "cb_create_queue", name="jobs")
    assert queue_info(conn, "jobs")["depth"] == 0
    assert read(conn, "jobs") == []


@pytest.mark.parametrize("name", INVALID_QUEUE_NAMES)
def test_delete_queue_rejects_invalid_names(conn, name):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_delete_queue", name=name)


# --------------------------------------------------------------------------- purge


def test_purge_queue_deletes_every_message_of_that_queue_only(conn):
    Clock(conn)
    for q in ("jobs", "other"):
        fn(conn, "cb_create_queue", name=q)
        fn(conn, "cb_bind", queue=q, pattern="a.b")
    send(conn, "jobs", {"n": 1})
    send(conn, "jobs", {"n": 2}, visible_at=T0 + 60 * SECOND)  # hidden
    send(conn, "jobs", {"n": 3}, expires_at=T0 - SECOND)  # expired
    send(conn, "other", {"n": 4})
    assert fn(conn, "cb_purge_queue", name="jobs") == 3
    assert messages(conn, "jobs") == []
    assert [m["body"] for m in messages(conn, "other")] == [{"n": 4}]
    # The queue and its bindings stay.
    assert queue_info(conn, "jobs")["depth"] == 0
    assert len(call(conn, "cb_list_bindings", queue="jobs")) == 1
    assert fn(conn, "cb_purge_queue", name="jobs") == 0


@pytest.mark.parametrize(
    "with_messages", [False, True], ids=["no-messages-anywhere", "messages-elsewhere"]
)
def test_purge_queue_of_an_unknown_queue_raises_undefined_object(conn, with_messages):
    # The queue is looked up once, before the DELETE: an unknown queue raises even when
    # there is no message at all to scan (a lookup inside the WHERE clause would not).
    if with_messages:
        fn(conn, "cb_create_queue", name="other")
        send(conn, "other")
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_purge_queue", name="nope")


@pytest.mark.parametrize(
    "with_messages", [False, True], ids=["no-messages-anywhere", "messages-elsewhere"]
)
def test_purge_queue_rejects_an_invalid_name(conn, with_messages):
    if with_messages:
        fn(conn, "cb_create_queue", name="other")
        send(conn, "other")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_purge_queue", name="Bad-Name")


# --------------------------------------------------------------------------- introspection


def test_get_queue_counts_depth_visible_and_oldest_visible(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs", {"n": "visible, sent at T0"})
    clock.advance(seconds=5)
    send(conn, "jobs", {"n": "visible, sent at T0+5s"})
    send(conn, "jobs", {"n": "visible from T0+60s"}, visible_at=T0 + 60 * SECOND)
    send(conn, "jobs", {"n": "expired at T0+6s"}, expires_at=T0 + 6 * SECOND)
    clock.advance(seconds=5)  # T0 + 10 s: the fourth message has expired
    assert read(conn, "jobs", quantity=1, hide_for=100_000)[0]["body"] == {
        "n": "visible, sent at T0"
    }

    info = queue_info(conn, "jobs")
    assert (info["depth"], info["visible"]) == (4, 1)
    assert info["oldest_visible_at"] == T0 + 5 * SECOND

    clock.set(
        T0 + 60 * SECOND
    )  # the delayed message is visible; the read one is hidden until T0+110s
    info = queue_info(conn, "jobs")
    assert (info["depth"], info["visible"], info["oldest_visible_at"]) == (4, 2, T0 + 5 * SECOND)

    clock.set(T0 + 110 * SECOND)  # the read one is back
    info = queue_info(conn, "jobs")
    assert (info["depth"], info["visible"], info["oldest_visible_at"]) == (4, 3, T0 + 5 * SECOND)


def test_get_queue_of_an_unknown_queue_returns_no_row(conn):
    assert call(conn, "cb_get_queue", name="nope") == []


def test_list_queues_lists_every_queue_by_name_with_its_counts(conn):
    clock = Clock(conn)
    for q in ("zeta", "alpha", "mid"):
        fn(conn, "cb_create_queue", name=q, description=f"queue {q}")
    send(conn, "mid", {})
    send(conn, "mid", {}, visible_at=T0 + SECOND)
    rows = call(conn, "cb_list_queues")
    assert [
        (r["name"], r["description"], r["depth"], r["visible"], r["oldest_visible_at"])
        for r in rows
    ] == [
        ("alpha", "queue alpha", 0, 0, None),
        ("mid", "queue mid", 2, 1, clock.now),
        ("zeta", "queue zeta", 0, 0, None),
    ]


# --------------------------------------------------------------------------- send (single)


def test_send_returns_the_id_and_stores_every_field(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    first = send(conn, "jobs", {"n": 1})
    second = fn(
        conn,
        "cb_send",
        queue="jobs",
        body=J({"n": 2}),
        topic="orders.eu-1.created",
        concurrency_key="order-2",
        headers=J({"trace": "abc"}),
        priority=7,
        expires_at=T0 + 3600 * SECOND,
    )
    assert isinstance(first, int) and second > first
    qid = scalar(conn, "SELECT id FROM catbird.cb_queues WHERE name = 'jobs'")
    stored = {m["id"]: m for m in messages(conn, "jobs")}
    assert stored[first] == {
        "id": first, "queue_id": qid, "priority": 0, "deliveries": 0,
        "visible_at": clock.now, "created_at": clock.now, "expires_at": None,
        "concurrency_key": None, "topic": None, "headers": None, "body": {"n": 1},
        "source_queue_id": None, "source_deliveries": None,
    }  # fmt: skip
    assert stored[second] == {
        "id": second, "queue_id": qid, "priority": 7, "deliveries": 0,
        "visible_at": clock.now, "created_at": clock.now, "expires_at": T0 + 3600 * SECOND,
        "concurrency_key": "order-2", "topic": "orders.eu-1.created",
        "headers": {"trace": "abc"}, "body": {"n": 2},
        "source_queue_id": None, "source_deliveries": None,
    }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [J(None), J([1, "two"]), J("text"), J(42), J(True), J({"nested": {"a": [1]}})],
    ids=["json-null", "array", "string", "number", "bool", "object"],
)
def test_send_accepts_any_json_body(conn, body):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_send", queue="jobs", body=body)
    (msg,) = read(conn, "jobs")
    assert msg["body"] == body.obj


def test_send_with_visible_at_in_the_future_is_not_readable_until_then(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs", {"n": 1}, visible_at=T0 + 10 * SECOND)
    assert read(conn, "jobs") == []
    clock.set(T0 + 10 * SECOND - dt.timedelta(milliseconds=1))
    assert read(conn, "jobs") == []
    clock.set(T0 + 10 * SECOND)
    assert [m["id"] for m in read(conn, "jobs")] == [mid]


def test_send_with_expires_at_is_never_returned_once_expired(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs", {"n": "already expired"}, expires_at=T0 - SECOND)
    send(conn, "jobs", {"n": "expires at T0+5s"}, expires_at=T0 + 5 * SECOND)
    send(conn, "jobs", {"n": "expires exactly now"}, expires_at=T0)
    clock.set(T0 + 5 * SECOND)  # expires_at <= now means expired
    assert read(conn, "jobs") == []
    assert queue_info(conn, "jobs")["depth"] == 3


def test_a_message_expiring_while_hidden_is_not_returned_again(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs", {"n": 1}, expires_at=T0 + 20 * SECOND)
    assert len(read(conn, "jobs", hide_for=10_000)) == 1
    clock.set(T0 + 15 * SECOND)
    assert len(read(conn, "jobs", hide_for=10_000)) == 1
    clock.set(T0 + 25 * SECOND)
    assert read(conn, "jobs", hide_for=10_000) == []


@pytest.mark.parametrize(
    "topic",
    ["", ".a", "a.", "a..b", "a.*", "#", "a.#", "a b", "a/b", "ä"],
    ids=[
        "empty",
        "leading-dot",
        "trailing-dot",
        "empty-token",
        "star",
        "hash",
        "a-hash",
        "space",
        "slash",
        "non-ascii",
    ],
)
def test_send_rejects_an_invalid_topic(conn, topic):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        send(conn, "jobs", {"n": 1}, topic=topic)
    assert "invalid topic" in str(info.value)


@pytest.mark.parametrize(
    "headers", [J([1]), J("h"), J(1), J(None)], ids=["array", "string", "number", "json-null"]
)
def test_send_rejects_headers_that_are_not_an_object(conn, headers):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_send", queue="jobs", body=J({}), headers=headers)
    assert "headers" in str(info.value)


def test_send_rejects_an_sql_null_body(conn):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_send", queue="jobs", body=None)
    assert "body" in str(info.value)


def test_send_to_an_unknown_queue_raises_undefined_object(conn):
    with rejected(conn, errors.UndefinedObject) as info:
        send(conn, "nope", {"n": 1})
    assert 'queue "nope" does not exist' in str(info.value)


@pytest.mark.parametrize("name", INVALID_QUEUE_NAMES)
def test_send_to_an_invalid_queue_name_raises_invalid_parameter(conn, name):
    with rejected(conn, errors.InvalidParameterValue):
        send(conn, name, {"n": 1})


# --------------------------------------------------------------------------- concurrency keys


def test_send_with_a_live_concurrency_key_returns_the_live_id_and_writes_nothing(conn):
    fn(conn, "cb_create_queue", name="jobs")
    first = send(conn, "jobs", {"v": 1}, concurrency_key="k", priority=1)
    before = messages(conn, "jobs")
    again = send(conn, "jobs", {"v": 2}, concurrency_key="k", priority=9, headers=J({"x": 1}))
    assert again == first
    assert messages(conn, "jobs") == before  # the first body, priority and headers stay


def test_a_hidden_message_still_holds_its_concurrency_key(conn):
    fn(conn, "cb_create_queue", name="jobs")
    first = send(conn, "jobs", concurrency_key="k")
    assert [m["id"] for m in read(conn, "jobs")] == [first]
    assert send(conn, "jobs", concurrency_key="k") == first
    assert len(messages(conn, "jobs")) == 1


def test_a_concurrency_key_is_reusable_once_its_message_is_deleted(conn):
    fn(conn, "cb_create_queue", name="jobs")
    first = send(conn, "jobs", {"v": 1}, concurrency_key="k")
    assert fn(conn, "cb_delete", queue="jobs", id=first) is True
    second = send(conn, "jobs", {"v": 2}, concurrency_key="k")
    assert second != first
    assert [m["body"] for m in messages(conn, "jobs")] == [{"v": 2}]


def test_concurrency_keys_are_per_queue(conn):
    fn(conn, "cb_create_queue", name="a")
    fn(conn, "cb_create_queue", name="b")
    in_a = send(conn, "a", concurrency_key="k")
    in_b = send(conn, "b", concurrency_key="k")
    assert in_a != in_b
    assert (len(messages(conn, "a")), len(messages(conn, "b"))) == (1, 1)


def test_sends_without_a_concurrency_key_are_never_deduplicated(conn):
    fn(conn, "cb_create_queue", name="jobs")
    ids = {send(conn, "jobs", {"same": True}) for _ in range(3)}
    assert len(ids) == 3


# --------------------------------------------------------------------------- send (batch)


def test_batch_send_returns_ids_in_input_order(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    bodies = [{"i": i} for i in range(5)]
    ids = fn(
        conn, "cb_send", queue="jobs", bodies=[J(b) for b in bodies],
        topic="t.x", priority=3, visible_at=T0 + SECOND, expires_at=T0 + 60 * SECOND,
    )  # fmt: skip
    assert len(ids) == 5 and ids == sorted(ids) and len(set(ids)) == 5
    stored = {m["id"]: m for m in messages(conn, "jobs")}
    assert [stored[i]["body"] for i in ids] == bodies
    for m in stored.values():
        assert (m["topic"], m["priority"], m["visible_at"], m["expires_at"], m["created_at"]) == (
            "t.x",
            3,
            T0 + SECOND,
            T0 + 60 * SECOND,
            clock.now,
        )


def test_batch_send_is_one_statement_with_one_timestamp(conn):
    # Without a pinned clock every message of the batch still gets the same created_at.
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_send", queue="jobs", bodies=[J(i) for i in range(50)])
    assert scalar(conn, "SELECT count(DISTINCT created_at) FROM catbird.cb_messages") == 1


def test_batch_send_stores_headers_and_keys_per_message(conn):
    fn(conn, "cb_create_queue", name="jobs")
    ids = fn(
        conn, "cb_send", queue="jobs", bodies=[J(1), J(2), J(3)],
        concurrency_keys=["a", None, "c"], headers=[J({"h": 1}), None, J({})],
    )  # fmt: skip
    stored = {m["id"]: m for m in messages(conn, "jobs")}
    assert [(stored[i]["concurrency_key"], stored[i]["headers"]) for i in ids] == [
        ("a", {"h": 1}), (None, None), ("c", {}),
    ]  # fmt: skip


def test_batch_send_deduplicates_keys_inside_the_batch_and_against_live_messages(conn):
    fn(conn, "cb_create_queue", name="jobs")
    live = send(conn, "jobs", {"v": "live"}, concurrency_key="held")
    ids = fn(
        conn, "cb_send", queue="jobs",
        bodies=[J("a1"), J("b"), J("a2"), J("h"), J("none1"), J("none2"), J("a3")],
        concurrency_keys=["a", "b", "a", "held", None, None, "a"],
    )  # fmt: skip
    a, b, a2, held, n1, n2, a3 = ids
    assert a == a2 == a3 and held == live
    assert len({a, b, live, n1, n2}) == 5
    bodies = {m["id"]: m["body"] for m in messages(conn, "jobs")}
    # The first position that used a key wins; a live message keeps its body.
    assert bodies == {live: {"v": "live"}, a: "a1", b: "b", n1: "none1", n2: "none2"}


def test_batch_send_of_an_empty_array_returns_an_empty_array(conn):
    fn(conn, "cb_create_queue", name="jobs")
    assert fn(conn, "cb_send", queue="jobs", bodies=[]) == []
    assert messages(conn, "jobs") == []


def test_batch_send_of_an_empty_array_still_checks_the_queue(conn):
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_send", queue="nope", bodies=[])


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"concurrency_keys": ["a"]}, id="fewer-keys"),
        pytest.param({"concurrency_keys": ["a", "b", "c"]}, id="more-keys"),
        pytest.param({"headers": [J({})]}, id="fewer-headers"),
        pytest.param({"headers": [J({}), J({}), J({})]}, id="more-headers"),
    ],
)
def test_batch_send_rejects_mismatched_lengths(conn, options):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_send", queue="jobs", bodies=[J(1), J(2)], **options)
    assert "bodies" in str(info.value)


def test_batch_send_rejects_an_sql_null_body_element(conn):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_send", queue="jobs", bodies=[J(1), None, J(3)])


def test_batch_send_rejects_a_null_array(conn):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_send", queue="jobs", bodies=None)


def test_batch_send_rejects_a_two_dimensional_array(conn):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        scalar(conn, "SELECT catbird.cb_send(queue => 'jobs', bodies => '{{1,2},{3,4}}'::jsonb[])")


@pytest.mark.parametrize("bad", [J([1]), J("x"), J(None)], ids=["array", "string", "json-null"])
def test_batch_send_rejects_a_headers_element_that_is_not_an_object(conn, bad):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_send", queue="jobs", bodies=[J(1), J(2)], headers=[J({}), bad])


def test_batch_send_rejects_an_invalid_topic(conn):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_send", queue="jobs", bodies=[J(1)], topic="a.*")


# --------------------------------------------------------------------------- read


def test_read_claims_highest_priority_first_then_oldest(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    low1 = send(conn, "jobs", {"n": "low1"})
    high1 = send(conn, "jobs", {"n": "high1"}, priority=5)
    clock.advance(seconds=1)
    low2 = send(conn, "jobs", {"n": "low2"})
    high2 = send(conn, "jobs", {"n": "high2"}, priority=5)
    urgent = send(conn, "jobs", {"n": "urgent"}, priority=10)
    negative = send(conn, "jobs", {"n": "negative"}, priority=-1)
    assert [m["id"] for m in read(conn, "jobs", quantity=10)] == [
        urgent, high1, high2, low1, low2, negative,
    ]  # fmt: skip


def test_read_takes_the_longest_visible_message_first_within_a_priority(conn):
    # "Oldest" is by visible_at: a message sent later but made visible earlier goes first.
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    sent_first = send(conn, "jobs", {"n": 1}, visible_at=T0 + 5 * SECOND)
    sent_second = send(conn, "jobs", {"n": 2}, visible_at=T0 + 2 * SECOND)
    clock.set(T0 + 10 * SECOND)
    assert [m["id"] for m in read(conn, "jobs", quantity=1)] == [sent_second]
    assert [m["id"] for m in read(conn, "jobs", quantity=1)] == [sent_first]


def test_read_returns_the_cb_message_fields(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    mid = fn(
        conn, "cb_send", queue="jobs", body=J({"n": 1}), topic="a.b", concurrency_key="k",
        headers=J({"h": "v"}), priority=2, expires_at=T0 + 3600 * SECOND,
    )  # fmt: skip
    assert read(conn, "jobs", quantity=1, hide_for=1500) == [
        {
            "id": mid, "concurrency_key": "k", "topic": "a.b", "body": {"n": 1},
            "headers": {"h": "v"}, "priority": 2, "deliveries": 1, "created_at": clock.now,
            "visible_at": clock.now + dt.timedelta(milliseconds=1500),
            "expires_at": T0 + 3600 * SECOND, "source_queue": None, "source_deliveries": None,
        }
    ]  # fmt: skip


def test_read_hides_for_hide_for_then_delivers_again(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs", {"n": 1})
    (first,) = read(conn, "jobs", hide_for=30_000)
    assert (first["id"], first["deliveries"]) == (mid, 1)
    assert read(conn, "jobs", hide_for=30_000) == []  # hidden
    assert queue_info(conn, "jobs")["visible"] == 0
    clock.set(T0 + 30 * SECOND - dt.timedelta(milliseconds=1))
    assert read(conn, "jobs", hide_for=30_000) == []
    clock.set(T0 + 30 * SECOND)
    (second,) = read(conn, "jobs", hide_for=30_000)
    assert (second["id"], second["deliveries"]) == (mid, 2)
    assert second["visible_at"] == T0 + 60 * SECOND


def test_read_takes_at_most_quantity_messages(conn):
    fn(conn, "cb_create_queue", name="jobs")
    ids = fn(conn, "cb_send", queue="jobs", bodies=[J(i) for i in range(5)])
    first = read(conn, "jobs", quantity=2)
    rest = read(conn, "jobs", quantity=10)
    assert [m["id"] for m in first] == ids[:2]
    assert [m["id"] for m in rest] == ids[2:]
    assert read(conn, "jobs", quantity=10) == []


def test_read_of_an_empty_queue_returns_no_rows(conn):
    fn(conn, "cb_create_queue", name="jobs")
    assert read(conn, "jobs") == []


def test_read_only_sees_its_own_queue(conn):
    fn(conn, "cb_create_queue", name="a")
    fn(conn, "cb_create_queue", name="b")
    in_a = send(conn, "a")
    send(conn, "b")
    assert [m["id"] for m in read(conn, "a")] == [in_a]
    assert len(read(conn, "b")) == 1


@pytest.mark.parametrize(
    ("quantity", "hide_for", "argument"),
    [(0, 1000, "quantity"), (-1, 1000, "quantity"), (None, 1000, "quantity"),
     (1, 0, "hide_for"), (1, -5, "hide_for"), (1, None, "hide_for")],
    ids=["quantity-0", "quantity-negative", "quantity-null",
         "hide_for-0", "hide_for-negative", "hide_for-null"],
)  # fmt: skip
def test_read_rejects_bad_quantity_and_hide_for(conn, quantity, hide_for, argument):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:  # nothing claimed
        read(conn, "jobs", quantity=quantity, hide_for=hide_for)
    assert f"invalid {argument}" in str(info.value)


# --------------------------------------------------------------------------- read_poll


def test_read_poll_returns_at_once_when_messages_are_visible(conn):
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs")
    started = time.monotonic()
    rows = call(conn, "cb_read_poll", queue="jobs", quantity=5, hide_for=1000, poll_for=10_000)
    assert [m["id"] for m in rows] == [mid]
    assert time.monotonic() - started < 5


def test_read_poll_waits_up_to_poll_for_and_returns_nothing(conn):
    fn(conn, "cb_create_queue", name="jobs")
    started = time.monotonic()
    rows = call(
        conn,
        "cb_read_poll",
        queue="jobs",
        quantity=5,
        hide_for=1000,
        poll_for=200,
        poll_interval=20,
    )
    elapsed = time.monotonic() - started
    assert rows == []
    assert 0.18 <= elapsed < 5


def test_read_poll_with_poll_for_zero_tries_once(conn):
    fn(conn, "cb_create_queue", name="jobs")
    assert call(conn, "cb_read_poll", queue="jobs", quantity=1, hide_for=1000, poll_for=0) == []
    mid = send(conn, "jobs")
    rows = call(conn, "cb_read_poll", queue="jobs", quantity=1, hide_for=1000, poll_for=0)
    assert [m["id"] for m in rows] == [mid]


def test_read_poll_returns_a_message_sent_by_another_connection_during_the_wait(conn, dsn):
    fn(conn, "cb_create_queue", name="jobs")
    sent: list[int] = []

    def sender() -> None:
        time.sleep(0.15)
        with psycopg.connect(dsn, autocommit=True) as other:
            sent.append(send(other, "jobs", {"from": "other"}))

    thread = threading.Thread(target=sender)
    started = time.monotonic()
    thread.start()
    try:
        rows = call(conn, "cb_read_poll", queue="jobs", quantity=5, hide_for=1000,
                    poll_for=10_000, poll_interval=20)  # fmt: skip
    finally:
        thread.join()
    assert [(m["id"], m["body"], m["deliveries"]) for m in rows] == [
        (sent[0], {"from": "other"}, 1)
    ]
    assert time.monotonic() - started < 8


@pytest.mark.parametrize(
    ("options", "argument"),
    [({"poll_for": -1}, "poll_for"), ({"poll_interval": 0}, "poll_interval"),
     ({"poll_interval": -10}, "poll_interval"), ({"quantity": 0}, "quantity"),
     ({"hide_for": 0}, "hide_for")],
    ids=["poll_for-negative", "poll_interval-0", "poll_interval-negative",
         "quantity-0", "hide_for-0"],
)  # fmt: skip
def test_read_poll_rejects_bad_arguments_without_waiting(conn, options, argument):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs")
    args = {"queue": "jobs", "quantity": 1, "hide_for": 1000, "poll_for": 5000} | options
    started = time.monotonic()
    with rejected(conn, errors.InvalidParameterValue) as info:
        call(conn, "cb_read_poll", **args)
    assert f"invalid {argument}" in str(info.value)
    assert time.monotonic() - started < 4


# --------------------------------------------------------------------------- hide


def test_hide_pushes_visibility_out_from_now(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs")
    assert fn(conn, "cb_hide", queue="jobs", id=mid, hide_for=10_000) is True
    assert messages(conn, "jobs")[0]["visible_at"] == T0 + 10 * SECOND
    assert read(conn, "jobs") == []
    clock.set(T0 + 10 * SECOND)
    assert [m["id"] for m in read(conn, "jobs")] == [mid]


def test_hide_of_a_claimed_message_resets_its_window(conn):
    # A worker can give a claimed message back early (or extend its lease).
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs")
    read(conn, "jobs", hide_for=3_600_000)
    clock.advance(seconds=1)
    assert fn(conn, "cb_hide", queue="jobs", id=mid, hide_for=1) is True
    clock.advance(ms=1)
    (again,) = read(conn, "jobs")
    assert (again["id"], again["deliveries"]) == (mid, 2)


def test_hide_returns_false_for_a_missing_message_or_one_of_another_queue(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_create_queue", name="other")
    elsewhere = send(conn, "other")
    before = messages(conn, "other")
    assert fn(conn, "cb_hide", queue="jobs", id=elsewhere, hide_for=1000) is False
    assert fn(conn, "cb_hide", queue="jobs", id=elsewhere + 1000, hide_for=1000) is False
    assert messages(conn, "other") == before


def test_hide_batch_returns_the_ids_it_hid_of_that_queue_only(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_create_queue", name="other")
    a, b, c = fn(conn, "cb_send", queue="jobs", bodies=[J(1), J(2), J(3)])
    elsewhere = send(conn, "other")
    hidden = fn(conn, "cb_hide", queue="jobs", ids=[c, elsewhere, a, 999_999], hide_for=5000)
    assert hidden == [a, c]
    visible_at = {m["id"]: m["visible_at"] for m in messages(conn, "jobs")}
    assert visible_at == {a: T0 + 5 * SECOND, b: clock.now, c: T0 + 5 * SECOND}
    assert messages(conn, "other")[0]["visible_at"] == clock.now
    assert fn(conn, "cb_hide", queue="jobs", ids=[], hide_for=5000) == []


@pytest.mark.parametrize("hide_for", [0, -1, None])
def test_hide_rejects_a_bad_hide_for(conn, hide_for):
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_hide", queue="jobs", id=mid, hide_for=hide_for)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_hide", queue="jobs", ids=[mid], hide_for=hide_for)


# --------------------------------------------------------------------------- delete (ack)


def test_delete_acks_one_message(conn):
    fn(conn, "cb_create_queue", name="jobs")
    mid = send(conn, "jobs")
    keep = send(conn, "jobs")
    assert fn(conn, "cb_delete", queue="jobs", id=mid) is True
    assert fn(conn, "cb_delete", queue="jobs", id=mid) is False
    assert [m["id"] for m in messages(conn, "jobs")] == [keep]


def test_delete_leaves_messages_of_other_queues_alone(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_create_queue", name="other")
    mine = send(conn, "jobs")
    elsewhere = send(conn, "other")
    assert fn(conn, "cb_delete", queue="jobs", id=elsewhere) is False
    assert fn(conn, "cb_delete", queue="jobs", ids=[elsewhere, mine, 424242]) == [mine]
    assert [m["id"] for m in messages(conn, "other")] == [elsewhere]
    assert messages(conn, "jobs") == []


def test_delete_batch_returns_the_deleted_ids(conn):
    fn(conn, "cb_create_queue", name="jobs")
    ids = fn(conn, "cb_send", queue="jobs", bodies=[J(i) for i in range(4)])
    assert fn(conn, "cb_delete", queue="jobs", ids=[ids[3], ids[1]]) == [ids[1], ids[3]]
    assert fn(conn, "cb_delete", queue="jobs", ids=[ids[3], ids[1]]) == []
    assert fn(conn, "cb_delete", queue="jobs", ids=[]) == []
    assert [m["id"] for m in messages(conn, "jobs")] == [ids[0], ids[2]]


# --------------------------------------------------------------------------- pop


def pop(conn: psycopg.Connection, queue: str, quantity: int | None = 1) -> list:
    return call(conn, "cb_pop", queue=queue, quantity=quantity)


def test_pop_returns_and_deletes_in_claim_order(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    low = send(conn, "jobs", {"n": "low"})
    clock.advance(seconds=1)
    high = fn(
        conn, "cb_send", queue="jobs", body=J({"n": "high"}), topic="a.b", concurrency_key="k",
        headers=J({"h": "v"}), priority=5, expires_at=T0 + 3600 * SECOND,
    )  # fmt: skip
    assert pop(conn, "jobs", quantity=10) == [
        {
            "id": high, "concurrency_key": "k", "topic": "a.b", "body": {"n": "high"},
            "headers": {"h": "v"}, "priority": 5, "deliveries": 1, "created_at": clock.now,
            "visible_at": clock.now, "expires_at": T0 + 3600 * SECOND,
            "source_queue": None, "source_deliveries": None,
        },
        {
            "id": low, "concurrency_key": None, "topic": None, "body": {"n": "low"},
            "headers": None, "priority": 0, "deliveries": 1, "created_at": T0,
            "visible_at": T0, "expires_at": None, "source_queue": None, "source_deliveries": None,
        },
    ]  # fmt: skip
    assert messages(conn, "jobs") == []
    assert pop(conn, "jobs") == []


def test_pop_takes_one_by_default_and_at_most_quantity(conn):
    fn(conn, "cb_create_queue", name="jobs")
    ids = fn(conn, "cb_send", queue="jobs", bodies=[J(i) for i in range(5)])
    assert [m["id"] for m in call(conn, "cb_pop", queue="jobs")] == ids[:1]
    assert [m["id"] for m in pop(conn, "jobs", quantity=3)] == ids[1:4]
    assert [m["id"] for m in messages(conn, "jobs")] == ids[4:]


def test_pop_skips_hidden_future_and_expired_messages_and_other_queues(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_create_queue", name="other")
    send(conn, "other")
    hidden = send(conn, "jobs", {"n": "hidden"})
    read(conn, "jobs", quantity=1, hide_for=10_000)
    later = send(conn, "jobs", {"n": "later"}, visible_at=T0 + 5 * SECOND)
    send(conn, "jobs", {"n": "expired"}, expires_at=T0 + SECOND)
    clock.advance(seconds=1)
    assert pop(conn, "jobs", quantity=10) == []
    clock.advance(seconds=4)
    assert [m["id"] for m in pop(conn, "jobs", quantity=10)] == [later]
    clock.advance(seconds=5)
    (again,) = pop(conn, "jobs", quantity=10)
    assert (again["id"], again["deliveries"]) == (hidden, 2)
    assert len(messages(conn, "other")) == 1


def test_pop_frees_the_concurrency_key(conn):
    fn(conn, "cb_create_queue", name="jobs")
    first = send(conn, "jobs", concurrency_key="k")
    assert [m["id"] for m in pop(conn, "jobs")] == [first]
    assert send(conn, "jobs", concurrency_key="k") != first


def test_pop_dead_letters_like_read(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="dlq")
    fn(conn, "cb_create_queue", name="q", max_deliveries=1, dead_letter_queue="dlq")
    dead, live = fn(conn, "cb_send", queue="q", bodies=[J("dead"), J("live")])
    assert [m["id"] for m in read(conn, "q", quantity=1, hide_for=1000)] == [dead]
    clock.advance(seconds=2)
    # "dead" was delivered max_deliveries times: the pop moves it to the
    # dead-letter queue instead of returning it
    (popped,) = pop(conn, "q", quantity=2)
    assert (popped["id"], popped["body"], popped["deliveries"]) == (live, "live", 1)
    assert messages(conn, "q") == []
    (moved,) = messages(conn, "dlq")
    assert (moved["id"], moved["source_queue_id"] is not None) == (dead, True)
    (redelivered,) = pop(conn, "dlq")
    assert (redelivered["id"], redelivered["source_queue"], redelivered["source_deliveries"]) == (
        dead,
        "q",
        1,
    )


def test_pop_without_a_dead_letter_queue_deletes_dead_messages(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="q", max_deliveries=1)
    fn(conn, "cb_send", queue="q", body=J(1))
    assert len(read(conn, "q", hide_for=1000)) == 1
    clock.advance(seconds=2)
    assert pop(conn, "q", quantity=5) == []
    assert messages(conn, "q") == []


@pytest.mark.parametrize("quantity", [0, -1, None], ids=["zero", "negative", "null"])
def test_pop_rejects_a_bad_quantity_and_takes_nothing(conn, quantity):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        pop(conn, "jobs", quantity=quantity)
    assert "invalid quantity" in str(info.value)


# ------------------------------------------------------- unknown or invalid queue, every function

QUEUE_CALLS = [
    pytest.param("cb_purge_queue", {}, id="purge_queue"),
    pytest.param("cb_send", {"body": J({})}, id="send"),
    pytest.param("cb_send", {"bodies": [J({})]}, id="send-batch"),
    pytest.param("cb_read", {"quantity": 1, "hide_for": 1000}, id="read"),
    pytest.param("cb_read_poll", {"quantity": 1, "hide_for": 1000, "poll_for": 0}, id="read_poll"),
    pytest.param("cb_pop", {"quantity": 1}, id="pop"),
    pytest.param("cb_hide", {"id": 1, "hide_for": 1000}, id="hide"),
    pytest.param("cb_hide", {"ids": [1], "hide_for": 1000}, id="hide-batch"),
    pytest.param("cb_delete", {"id": 1}, id="delete"),
    pytest.param("cb_delete", {"ids": [1]}, id="delete-batch"),
    pytest.param("cb_bind", {"pattern": "a.#"}, id="bind"),
    pytest.param("cb_unbind", {"pattern": "a.#"}, id="unbind"),
]


def _queue_arg(function: str) -> str:
    return "name" if function == "cb_purge_queue" else "queue"


@pytest.mark.parametrize(("function", "args"), QUEUE_CALLS)
def test_every_queue_function_raises_undefined_object_for_an_unknown_queue(conn, function, args):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs")  # so that a table scan has something to scan
    with rejected(conn, errors.UndefinedObject) as info:
        call(conn, function, **{_queue_arg(function): "nope"}, **args)
    assert 'queue "nope" does not exist' in str(info.value)


@pytest.mark.parametrize(("function", "args"), QUEUE_CALLS)
@pytest.mark.parametrize("name", ["Jobs", "my-jobs", None], ids=["uppercase", "dash", "null"])
def test_every_queue_function_raises_invalid_parameter_for_an_invalid_queue_name(
    conn, function, args, name
):
    fn(conn, "cb_create_queue", name="jobs")
    send(conn, "jobs")
    with rejected(conn, errors.InvalidParameterValue):
        call(conn, function, **{_queue_arg(function): name}, **args)

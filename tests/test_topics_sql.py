"""Topic routing at the SQL level: bind, unbind, list bindings, pattern matching, publish.

Patterns are topics whose tokens may be ``*`` (exactly one token) and whose last
token may be ``#`` (zero or more trailing tokens; ``#`` alone matches every
topic). A publish delivers one copy to every queue with at least one matching
pattern and returns the number of deliveries (targets x messages).
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg import errors
from psycopg.rows import tuple_row

from sqlhelpers import T0, Clock, J, call, fn, messages, rejected, scalar

SECOND = dt.timedelta(seconds=1)


def bindings(conn, queue=None) -> list[tuple[str, str]]:
    return [(b["queue"], b["pattern"]) for b in call(conn, "cb_list_bindings", queue=queue)]


def publish(conn, topic, body=None, **options) -> int:
    return fn(conn, "cb_publish", topic=topic, body=J({} if body is None else body), **options)


# --------------------------------------------------------------------------- bind / unbind


def test_bind_stores_the_pattern_once(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="orders.#")
    fn(conn, "cb_bind", queue="jobs", pattern="orders.#")  # idempotent
    assert call(conn, "cb_list_bindings", queue="jobs") == [
        {"queue": "jobs", "pattern": "orders.#", "created_at": clock.now}
    ]


def test_list_bindings_lists_every_queue_or_one(conn):
    for q in ("b", "a"):
        fn(conn, "cb_create_queue", name=q)
    fn(conn, "cb_bind", queue="b", pattern="x.*")
    fn(conn, "cb_bind", queue="a", pattern="y")
    fn(conn, "cb_bind", queue="a", pattern="#")
    assert bindings(conn) == [("a", "#"), ("a", "y"), ("b", "x.*")]
    assert bindings(conn, "a") == [("a", "#"), ("a", "y")]
    assert bindings(conn, "nope") == []


def test_unbind_returns_whether_the_binding_existed(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="a.*")
    fn(conn, "cb_bind", queue="jobs", pattern="b")
    assert fn(conn, "cb_unbind", queue="jobs", pattern="a.*") is True
    assert fn(conn, "cb_unbind", queue="jobs", pattern="a.*") is False
    assert fn(conn, "cb_unbind", queue="jobs", pattern="never.bound") is False
    assert bindings(conn) == [("jobs", "b")]


def test_unbind_only_removes_that_queues_binding(conn):
    for q in ("a", "b"):
        fn(conn, "cb_create_queue", name=q)
        fn(conn, "cb_bind", queue=q, pattern="t")
    assert fn(conn, "cb_unbind", queue="a", pattern="t") is True
    assert bindings(conn) == [("b", "t")]
    assert publish(conn, "t") == 1
    assert messages(conn, "a") == []


@pytest.mark.parametrize(
    "pattern", ["a", "a.b", "A-b_9.c", "*", "#", "*.b", "a.*", "a.#", "*.#", "a.*.c.#", "*.*.*"]
)
def test_bind_accepts_valid_patterns(conn, pattern):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern=pattern)
    assert bindings(conn) == [("jobs", pattern)]


INVALID_PATTERNS = [
    pytest.param("a.#.b", id="hash-not-last"),
    pytest.param("#.a", id="hash-first"),
    pytest.param("a..b", id="empty-token"),
    pytest.param("*x", id="star-inside-token"),
    pytest.param("a#", id="hash-inside-token"),
    pytest.param("a.#.#", id="two-hashes"),
    pytest.param("", id="empty"),
    pytest.param("a.", id="trailing-dot"),
    pytest.param(".a", id="leading-dot"),
    pytest.param("a b", id="space"),
    pytest.param("a.>", id="other-wildcard"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_bind_rejects_invalid_patterns(conn, pattern):
    fn(conn, "cb_create_queue", name="jobs")
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_bind", queue="jobs", pattern=pattern)
    assert "invalid pattern" in str(info.value)


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_unbind_rejects_invalid_patterns(conn, pattern):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="a.#")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_unbind", queue="jobs", pattern=pattern)


def test_bind_and_unbind_of_an_unknown_queue_raise_undefined_object(conn):
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_bind", queue="nope", pattern="a")
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_unbind", queue="nope", pattern="a")


# --------------------------------------------------------------------------- matching

MATCHING = [
    # pattern, topics it matches, topics it does not match
    pytest.param("a.b", ["a.b"], ["a", "a.b.c", "a.c", "A.b", "x.a.b", "ab"], id="exact"),
    pytest.param("a.*", ["a.b", "a.x-y_Z"], ["a", "a.b.c", "b.c", "x.a.b"], id="star-is-one-token"),
    pytest.param("*.b", ["a.b", "z.b"], ["b", "a.c.b", "a.b.c", "a.c"], id="star-first"),
    pytest.param("*", ["a", "Z-9"], ["a.b"], id="star-alone"),
    pytest.param("*.*", ["a.b"], ["a", "a.b.c"], id="two-stars"),
    pytest.param("a.#", ["a", "a.b", "a.b.c", "a.b.c.d.e"], ["b", "ab", "b.a", "ab.c"],
                 id="hash-zero-or-more"),
    pytest.param("#", ["a", "a.b", "x.y.z.w"], [], id="hash-alone"),
    pytest.param("*.#", ["a", "a.b", "a.b.c"], [], id="star-hash"),
    pytest.param("a.*.c.#", ["a.b.c", "a.b.c.d", "a.c.c.x.c"],
                 ["a.c", "a.b", "a.b.d", "a.b.b.c", "x.b.c"], id="mixed"),
    pytest.param("a.b.#", ["a.b", "a.b.c"], ["a", "a.c", "a.bc"], id="two-literals-then-hash"),
    pytest.param("orders.*.created", ["orders.eu.created"],
                 ["orders.created", "orders.eu.x.created"], id="middle-star"),
]  # fmt: skip


@pytest.mark.parametrize(("pattern", "matches", "misses"), MATCHING)
def test_pattern_matching(conn, pattern, matches, misses):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern=pattern)
    for topic in matches:
        assert publish(conn, topic, {"topic": topic}) == 1, f"{pattern!r} should match {topic!r}"
    for topic in misses:
        assert publish(conn, topic, {"topic": topic}) == 0, (
            f"{pattern!r} should not match {topic!r}"
        )
    assert [(m["topic"], m["body"]) for m in messages(conn, "jobs")] == [
        (t, {"topic": t}) for t in matches
    ]


def test_matching_bindings_lists_every_matching_pattern(conn):
    fn(conn, "cb_create_queue", name="jobs")
    for p in ("a.b.c", "a.b.*", "a.*.c", "*.b.c", "a.#", "a.b.#", "a.b.c.#", "#", "*.#",
              "a.b", "a.b.c.d", "b.#", "*.*", "a.*.*.*"):  # fmt: skip
        fn(conn, "cb_bind", queue="jobs", pattern=p)
    matched = scalar(
        conn,
        "SELECT array_agg(pattern ORDER BY pattern) FROM catbird._cb_matching_bindings('a.b.c')",
    )
    assert matched == sorted(
        ["a.b.c", "a.b.*", "a.*.c", "*.b.c", "a.#", "a.b.#", "a.b.c.#", "#", "*.#"]
    )


# --------------------------------------------------------------------------- publish


def test_publish_delivers_one_copy_per_matching_queue(conn):
    clock = Clock(conn)
    for q in ("eu", "all", "us", "unbound"):
        fn(conn, "cb_create_queue", name=q)
    fn(conn, "cb_bind", queue="eu", pattern="orders.eu.*")
    fn(conn, "cb_bind", queue="all", pattern="orders.#")
    fn(conn, "cb_bind", queue="us", pattern="orders.us.*")
    n = fn(
        conn, "cb_publish", topic="orders.eu.created", body=J({"id": 7}), headers=J({"h": 1}),
        priority=4, visible_at=T0 + SECOND, expires_at=T0 + 60 * SECOND,
    )  # fmt: skip
    assert n == 2
    for q in ("eu", "all"):
        (m,) = messages(conn, q)
        assert (
            m["topic"], m["body"], m["headers"], m["priority"], m["deliveries"],
            m["created_at"], m["visible_at"], m["expires_at"],
        ) == (
            "orders.eu.created", {"id": 7}, {"h": 1}, 4, 0,
            clock.now, T0 + SECOND, T0 + 60 * SECOND,
        )  # fmt: skip
    assert messages(conn, "us") == messages(conn, "unbound") == []


def test_a_queue_matched_by_several_patterns_receives_one_copy(conn):
    fn(conn, "cb_create_queue", name="jobs")
    for p in ("a.b", "a.*", "a.#", "#", "*.b", "*.#"):
        fn(conn, "cb_bind", queue="jobs", pattern=p)
    assert publish(conn, "a.b", {"n": 1}) == 1
    assert [m["body"] for m in messages(conn, "jobs")] == [{"n": 1}]


def test_batch_publish_returns_targets_times_messages(conn):
    for q in ("q1", "q2", "q3"):
        fn(conn, "cb_create_queue", name=q)
    fn(conn, "cb_bind", queue="q1", pattern="t.#")
    fn(conn, "cb_bind", queue="q2", pattern="t")
    fn(conn, "cb_bind", queue="q2", pattern="#")  # q2 still counts once
    fn(conn, "cb_bind", queue="q3", pattern="u")
    n = fn(conn, "cb_publish", topic="t", bodies=[J(1), J(2), J(3)],
           headers=[J({"i": 1}), None, J({"i": 3})])  # fmt: skip
    assert n == 6
    for q in ("q1", "q2"):
        assert [(m["body"], m["headers"]) for m in messages(conn, q)] == [
            (1, {"i": 1}), (2, None), (3, {"i": 3}),
        ]  # fmt: skip
    assert messages(conn, "q3") == []


def test_batch_publish_of_an_empty_array_delivers_nothing(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="#")
    assert fn(conn, "cb_publish", topic="t", bodies=[]) == 0
    assert messages(conn, "jobs") == []


def test_publish_to_a_topic_without_bindings_returns_zero_and_writes_nothing(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="other.#")
    assert publish(conn, "orders.created") == 0
    assert fn(conn, "cb_publish", topic="orders.created", bodies=[J(1), J(2)]) == 0
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0


def test_publish_after_unbind_or_delete_queue_delivers_nowhere(conn):
    fn(conn, "cb_create_queue", name="a")
    fn(conn, "cb_create_queue", name="b")
    fn(conn, "cb_bind", queue="a", pattern="t")
    fn(conn, "cb_bind", queue="b", pattern="t")
    fn(conn, "cb_unbind", queue="a", pattern="t")
    fn(conn, "cb_delete_queue", name="b")
    assert publish(conn, "t") == 0
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0


def test_publish_deduplicates_by_concurrency_key_per_queue(conn):
    # The return value counts deliveries attempted (targets x messages), deduplicated or not.
    for q in ("a", "b"):
        fn(conn, "cb_create_queue", name=q)
        fn(conn, "cb_bind", queue=q, pattern="t")
    held = fn(conn, "cb_send", queue="b", body=J("already in b"), concurrency_key="k")
    assert publish(conn, "t", "first", concurrency_key="k") == 2
    assert publish(conn, "t", "second", concurrency_key="k") == 2
    assert [m["body"] for m in messages(conn, "a")] == ["first"]
    assert [(m["id"], m["body"]) for m in messages(conn, "b")] == [(held, "already in b")]


def test_batch_publish_deduplicates_keys_inside_the_batch(conn):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="t")
    n = fn(
        conn, "cb_publish", topic="t", bodies=[J(1), J(2), J(3)], concurrency_keys=["k", "k", None]
    )
    assert n == 3
    assert [(m["body"], m["concurrency_key"]) for m in messages(conn, "jobs")] == [
        (1, "k"),
        (3, None),
    ]


def test_published_messages_are_read_like_sent_ones(conn):
    clock = Clock(conn)
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="t.*")
    publish(conn, "t.low", {"p": 0})
    publish(conn, "t.high", {"p": 9}, priority=9)
    publish(conn, "t.later", {"p": 5}, priority=5, visible_at=T0 + 10 * SECOND)
    got = call(conn, "cb_read", queue="jobs", quantity=10, hide_for=60_000)
    assert [(m["topic"], m["deliveries"]) for m in got] == [("t.high", 1), ("t.low", 1)]
    clock.set(T0 + 10 * SECOND)
    got = call(conn, "cb_read", queue="jobs", quantity=10, hide_for=60_000)
    assert [m["topic"] for m in got] == ["t.later"]


# --------------------------------------------------------------------------- publish: bad input

INVALID_TOPICS = [
    pytest.param("a.*", id="star"),
    pytest.param("a.#", id="hash"),
    pytest.param("#", id="hash-alone"),
    pytest.param("", id="empty"),
    pytest.param("a..b", id="empty-token"),
    pytest.param("a.", id="trailing-dot"),
    pytest.param(".a", id="leading-dot"),
    pytest.param("a b", id="space"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("topic", INVALID_TOPICS)
def test_publish_rejects_invalid_topics_and_writes_nothing(conn, topic):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="#")  # would match any valid topic
    with rejected(conn, errors.InvalidParameterValue) as info:
        publish(conn, topic)
    assert "invalid topic" in str(info.value)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_publish", topic=topic, bodies=[J(1)])


@pytest.mark.parametrize(
    "args",
    [
        pytest.param({"body": None}, id="null-body"),
        pytest.param({"body": J({}), "headers": J([1])}, id="array-headers"),
        pytest.param({"body": J({}), "headers": J("h")}, id="string-headers"),
        pytest.param({"bodies": None}, id="null-bodies"),
        pytest.param({"bodies": [J(1), None]}, id="null-body-element"),
        pytest.param({"bodies": [J(1), J(2)], "concurrency_keys": ["k"]}, id="keys-length"),
        pytest.param({"bodies": [J(1), J(2)], "headers": [J({})]}, id="headers-length"),
        pytest.param({"bodies": [J(1)], "headers": [J(1)]}, id="headers-element"),
    ],
)
def test_publish_rejects_bad_bodies_and_headers_and_writes_nothing(conn, args):
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="#")
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_publish", topic="t", **args)


# --------------------------------------------------------------------------- indexed lookup


def _binding_scans(conn, topic: str) -> tuple[int, int]:
    """(sequential scans, index scans) of cb_bindings while matching one topic, read from
    the pending statistics of a new session, inside the one transaction that did the
    lookup (pending counts are only flushed when a transaction ends)."""
    with psycopg.connect(conn.info.dsn) as fresh, fresh.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT count(*) FROM catbird._cb_matching_bindings(%s)", (topic,))
        cur.execute(
            "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables"
            " WHERE schemaname = 'catbird' AND relname = 'cb_bindings'"
        )
        row = cur.fetchone()
    assert row is not None
    return row[0], row[1]


def test_pattern_lookup_uses_indexes_with_many_bindings(conn):
    fn(conn, "cb_create_queue", name="jobs")
    # 10,000 bindings of every shape: exact, '*' inside, trailing '#', leading '*'.
    conn.execute(
        """
        SELECT catbird.cb_bind(queue => 'jobs', pattern => p)
        FROM generate_series(1, 2500) AS i,
             LATERAL (VALUES ('t' || i || '.y.z'), ('t' || i || '.*.z'),
                             ('t' || i || '.#'), ('*.t' || i)) AS v(p)
        """
    )
    conn.execute("ANALYZE catbird.cb_bindings")
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_bindings") == 10_000

    # Short topics look candidate patterns up by equality, long ones by literal prefix:
    # index scans only, never a scan of all bindings.
    for topic in ("x.y.z", "t1.a.b.c.d.e.f.g.h.i"):
        seq_scans, index_scans = _binding_scans(conn, topic)
        assert seq_scans == 0, topic
        assert index_scans > 0, topic

    # And the indexed lookup finds exactly the matching patterns.
    matched = scalar(
        conn,
        "SELECT array_agg(pattern ORDER BY pattern) FROM catbird._cb_matching_bindings('t42.y.z')",
    )
    assert matched == ["t42.#", "t42.*.z", "t42.y.z"]
    assert publish(conn, "t42.y.z") == 1
    assert publish(conn, "x.t7") == 1  # through '*.t7'
    assert publish(conn, "x.y.z") == 0

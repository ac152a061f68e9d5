"""Tasks at the SQL level: definitions, runs, the worker protocol (claim, lease,
fenced complete/fail, retries decided in SQL, on-fail handling), cancel, wait,
cleanup, topic bindings, introspection and concurrent use.

Every test runs in a fresh database with the catbird extension installed and
calls the engine's functions directly. Time-dependent behaviour (visibility,
leases, backoff, expiry, retention) is driven by the engine clock
(``SET catbird.fake_now``), never by sleeping; only cb_wait_task_output waits
on the wall clock, briefly.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, assert_pages_backwards, call, fn, messages, rejected, scalar

SECOND = dt.timedelta(seconds=1)
MS = dt.timedelta(milliseconds=1)


def create(conn: psycopg.Connection, name: str = "work", **options: Any) -> None:
    fn(conn, "cb_create_task", name=name, **options)


def run(conn: psycopg.Connection, input: Any = None, name: str = "work", **options: Any) -> int:
    """cb_run_task of one input (default {}); returns the run id."""
    return fn(conn, "cb_run_task", name=name, input=J({} if input is None else input), **options)


def run_many(
    conn: psycopg.Connection, inputs: list[Any], name: str = "work", **options: Any
) -> list[int]:
    """The batch form of cb_run_task."""
    return fn(conn, "cb_run_task", name=name, inputs=[J(i) for i in inputs], **options)


def claim(
    conn: psycopg.Connection, name: str = "work", quantity: int = 10, hide_for: int = 30_000
) -> list[dict[str, Any]]:
    return call(conn, "cb_claim_tasks", name=name, quantity=quantity, hide_for=hide_for)


def complete(
    conn: psycopg.Connection, run_id: int, output: Any = None, name: str = "work", **kw: Any
) -> bool:
    return fn(conn, "cb_complete_task", name=name, run_id=run_id, output=J(output), **kw)


def fail(
    conn: psycopg.Connection, run_id: int, error: str = "boom", name: str = "work", **kw: Any
) -> str | None:
    return fn(conn, "cb_fail_task", name=name, run_id=run_id, error_message=error, **kw)


def cancel(conn: psycopg.Connection, run_id: int, name: str = "work", **kw: Any) -> bool:
    return fn(conn, "cb_cancel_task", name=name, run_id=run_id, **kw)


def run_info(conn: psycopg.Connection, run_id: int, name: str = "work") -> dict[str, Any]:
    (row,) = call(conn, "cb_get_task_run", name=name, run_id=run_id)
    return row


def statuses(conn: psycopg.Connection, name: str = "work") -> dict[int, str]:
    """Run id -> status of every run of a task."""
    return {r["id"]: r["status"] for r in call(conn, "cb_list_task_runs", name=name, lim=10_000)}


def task_info(conn: psycopg.Connection, name: str = "work") -> dict[str, Any]:
    (row,) = call(conn, "cb_get_task", name=name)
    return row


def wait(
    conn: psycopg.Connection, run_id: int, name: str = "work", **kw: Any
) -> list[dict[str, Any]]:
    return call(conn, "cb_wait_task_output", name=name, run_id=run_id, **kw)


def claim_on_fail(
    conn: psycopg.Connection, name: str = "work", quantity: int = 10, **kw: Any
) -> list[dict]:
    return call(conn, "cb_claim_task_on_fail", name=name, quantity=quantity, **kw)


def fail_on_fail(
    conn: psycopg.Connection,
    run_id: int,
    error: str,
    *,
    exhausted: bool,
    delay: int,
    name: str = "work",
) -> None:
    """Report an on-fail handler's failure (``retry_delay`` in milliseconds)."""
    fn(
        conn,
        "cb_fail_task_on_fail",
        name=name,
        run_id=run_id,
        error_message=error,
        retry_exhausted=exhausted,
        retry_delay=delay,
    )


@pytest.fixture
def clock(conn: psycopg.Connection) -> Clock:
    return Clock(conn)


@pytest.fixture
def work(conn: psycopg.Connection, clock: Clock) -> str:
    """A plain task named "work", created at T0 on the pinned clock."""
    create(conn)
    return "work"


# =========================================================================== definitions


def test_create_task_stores_its_definition(conn, clock):
    create(
        conn,
        description="does work",
        condition="input.n gte 1",
        retention_period=dt.timedelta(days=7),
    )
    assert task_info(conn) == {
        "name": "work",
        "description": "does work",
        "condition": "input.n gte 1",
        "retention_period": dt.timedelta(days=7),
        "on_fail": False,
        "created_at": T0,
        "max_retries": None,
        "backoff_min": None,
        "backoff_max": None,
    }


def test_create_task_again_with_an_identical_definition_is_a_no_op(conn, clock):
    create(conn, description="d", condition="input.x exists", on_fail=True)
    run(conn, {"x": 1})
    claim(conn)  # an active run does not matter for an identical definition
    clock.advance(seconds=60)
    create(conn, description="d", condition="input.x exists", on_fail=True)
    assert task_info(conn)["created_at"] == T0
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_tasks") == 1


def test_create_task_with_a_changed_definition_replaces_it_when_no_run_is_active(conn, clock):
    create(conn, description="old", condition="input.n gte 10")
    done = run(conn, {"n": 20})
    claim(conn)
    complete(conn, done, "ok")
    skipped = run(conn, {"n": 1})
    clock.advance(seconds=60)

    create(
        conn,
        description="new",
        condition="input.n gte 0",
        retention_period=dt.timedelta(hours=1),
        on_fail=True,
    )

    assert task_info(conn) == {
        "name": "work",
        "description": "new",
        "condition": "input.n gte 0",
        "retention_period": dt.timedelta(hours=1),
        "on_fail": True,
        "created_at": T0,  # the task is the same task, redefined
        "max_retries": None,
        "backoff_min": None,
        "backoff_max": None,
    }
    assert statuses(conn) == {done: "completed", skipped: "skipped"}  # finished runs are kept
    assert run_info(conn, run(conn, {"n": 1}))["status"] == "queued"  # the new condition applies


@pytest.mark.parametrize("active", ["queued", "started"])
@pytest.mark.parametrize(
    "change",
    [
        {"description": "other"},
        {"condition": "input.n gte 1"},
        {"retention_period": dt.timedelta(days=1)},
        {"on_fail": True},
    ],
    ids=["description", "condition", "retention", "on_fail"],
)
def test_create_task_with_a_changed_definition_is_refused_while_a_run_is_active(
    conn, clock, active, change
):
    create(conn, description="d")
    run_id = run(conn)
    if active == "started":
        claim(conn)
    with rejected(conn, errors.ObjectInUse):
        create(conn, **{"description": "d", **change})
    assert run_info(conn, run_id)["status"] == active


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Work", id="uppercase"),
        pytest.param("1work", id="leading-digit"),
        pytest.param("_work", id="leading-underscore"),
        pytest.param("my-work", id="dash"),
        pytest.param("w" * 59, id="59-chars"),
        pytest.param("", id="empty"),
        pytest.param(None, id="null"),
        pytest.param("work;drop", id="semicolon"),
    ],
)
def test_create_task_rejects_invalid_names_and_writes_nothing(conn, name):
    with rejected(conn, errors.InvalidParameterValue):
        create(conn, name)


def test_create_task_accepts_a_58_character_name(conn):
    name = "t" + "_" * 56 + "9"
    create(conn, name)
    assert [t["name"] for t in call(conn, "cb_list_tasks")] == [name]


@pytest.mark.parametrize(
    "options",
    [
        {"condition": "input.x eq"},
        {"condition": "inpt.x eq 1"},
        {"condition": ""},
        {"retention_period": dt.timedelta(seconds=-1)},
    ],
    ids=["condition-missing-value", "condition-bad-root", "condition-empty", "negative-retention"],
)
def test_create_task_rejects_an_invalid_definition_and_writes_nothing(conn, options):
    with rejected(conn, errors.InvalidParameterValue):
        create(conn, **options)


def test_create_task_rejects_an_invalid_change_and_keeps_the_old_definition(conn, clock):
    create(conn, condition="input.a exists")
    with rejected(conn, errors.InvalidParameterValue):
        create(conn, condition="input.a between 1")
    assert task_info(conn)["condition"] == "input.a exists"


def test_delete_task_removes_its_runs_and_bindings_only(conn, clock):
    create(conn)
    create(conn, "other")
    for pattern in ("orders.#", "invoices.*"):
        fn(conn, "cb_bind_task", name="work", pattern=pattern)
    fn(conn, "cb_bind_task", name="other", pattern="orders.#")
    run_many(conn, [{"n": 1}, {"n": 2}])
    claim(conn, quantity=1)
    kept = run(conn, name="other")

    assert fn(conn, "cb_delete_task", name="work") is True

    assert call(conn, "cb_get_task", name="work") == []
    assert scalar(conn, "SELECT array_agg(id) FROM catbird.cb_task_runs") == [kept]
    assert scalar(
        conn, "SELECT array_agg(target_name || ':' || pattern) FROM catbird.cb_bindings"
    ) == ["other:orders.#"]
    assert fn(conn, "cb_publish", topic="orders.created", body=J({})) == 1  # only "other" now
    assert fn(conn, "cb_delete_task", name="work") is False
    with rejected(conn, errors.UndefinedObject):
        run(conn)


def test_a_deleted_task_can_be_created_again_empty(conn, clock):
    create(conn, description="first")
    run(conn)
    fn(conn, "cb_delete_task", name="work")
    create(conn, description="second")
    assert task_info(conn)["description"] == "second"
    assert statuses(conn) == {}


def test_get_and_list_tasks(conn, clock):
    create(conn, "zeta", on_fail=True)
    clock.advance(seconds=1)
    create(conn, "alpha", description="first letter")
    assert [t["name"] for t in call(conn, "cb_list_tasks")] == ["alpha", "zeta"]
    assert call(conn, "cb_get_task", name="zeta") == [
        {
            "name": "zeta",
            "description": None,
            "condition": None,
            "retention_period": None,
            "on_fail": True,
            "created_at": T0,
            "max_retries": None,
            "backoff_min": None,
            "backoff_max": None,
        }
    ]
    assert call(conn, "cb_get_task", name="missing") == []


UNKNOWN_TASK_CALLS = [
    ("cb_run_task", {"input": J({})}),
    ("cb_run_task", {"inputs": [J({})]}),
    ("cb_claim_tasks", {"quantity": 1, "hide_for": 1000}),
    ("cb_hide_tasks", {"ids": [1], "hide_for": 1000}),
    ("cb_complete_task", {"run_id": 1, "output": J(1)}),
    ("cb_complete_tasks", {"run_ids": [1], "outputs": [J(1)]}),
    ("cb_fail_task", {"run_id": 1, "error_message": "x"}),
    ("cb_cancel_task", {"run_id": 1}),
    ("cb_wait_task_output", {"run_id": 1, "poll_for": 0}),
    ("cb_purge_task_runs", {"older_than": dt.timedelta(0)}),
    ("cb_clear_task_runs", {}),
    ("cb_bind_task", {"pattern": "a.b"}),
    ("cb_unbind_task", {"pattern": "a.b"}),
    ("cb_list_task_runs", {}),
    ("cb_get_task_run", {"run_id": 1}),
    ("cb_claim_task_on_fail", {"quantity": 1}),
    ("cb_complete_task_on_fail", {"run_id": 1}),
    (
        "cb_fail_task_on_fail",
        {"run_id": 1, "error_message": "x", "retry_exhausted": True, "retry_delay": 0},
    ),
]


@pytest.mark.parametrize(
    ("function", "args"), UNKNOWN_TASK_CALLS, ids=[c[0] for c in UNKNOWN_TASK_CALLS]
)
def test_every_task_function_raises_undefined_object_for_an_unknown_task(
    conn, work, function, args
):
    with rejected(conn, errors.UndefinedObject) as info:
        call(conn, function, name="nope", **args)
    assert "nope" in str(info.value)


def test_an_invalid_task_name_in_a_call_is_invalid_parameter(conn, work):
    with rejected(conn, errors.InvalidParameterValue):
        run(conn, name="No Such")


# =========================================================================== run_task


def test_run_task_queues_a_run(conn, work):
    run_id = run(conn, {"n": 1})
    assert run_info(conn, run_id) == {
        "id": run_id,
        "task_name": "work",
        "status": "queued",
        "priority": 0,
        "attempts": 0,
        "concurrency_key": None,
        "input": {"n": 1},
        "headers": None,
        "output": None,
        "error_message": None,
        "cancel_reason": None,
        "created_at": T0,
        "visible_at": T0,
        "expires_at": None,
        "started_at": None,
        "completed_at": None,
        "failed_at": None,
        "skipped_at": None,
        "expired_at": None,
        "cancel_requested_at": None,
        "canceled_at": None,
        "on_fail_status": None,
        "on_fail_attempts": 0,
        "on_fail_error_message": None,
        "error_detail": None,
    }


@pytest.mark.parametrize("input", [None, 0, "text", [1, 2], {"nested": {"a": [True, None]}}])
def test_run_task_accepts_any_json_input(conn, work, input):
    run_id = fn(conn, "cb_run_task", name="work", input=J(input))
    (claimed,) = claim(conn)
    assert (claimed["id"], claimed["input"]) == (run_id, input)


def test_run_task_rejects_an_sql_null_input(conn, work):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_run_task", name="work", input=None)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_run_task", name="work", inputs=[J({}), None])
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_run_task", name="work", inputs=None)


def test_run_task_stores_headers_that_reach_the_claim(conn, work):
    run_id = run(conn, {"n": 1}, headers=J({"trace": "abc", "tries": 2}))
    (claimed,) = claim(conn)
    assert claimed["id"] == run_id
    assert claimed["headers"] == {"trace": "abc", "tries": 2}


@pytest.mark.parametrize(
    "headers", [[1], "text", 1, True, None], ids=["array", "string", "number", "bool", "json-null"]
)
def test_run_task_rejects_headers_that_are_not_an_object(conn, work, headers):
    with rejected(conn, errors.InvalidParameterValue):
        run(conn, headers=J(headers))
    with rejected(conn, errors.InvalidParameterValue):
        run_many(conn, [{}, {}], headers=[J({"ok": 1}), J(headers)])


def test_a_run_visible_in_the_future_is_not_claimable_before_then(conn, work, clock):
    run_id = run(conn, visible_at=T0 + 10 * SECOND)
    assert run_info(conn, run_id)["visible_at"] == T0 + 10 * SECOND
    assert claim(conn) == []
    clock.set(T0 + 10 * SECOND - MS)
    assert claim(conn) == []
    clock.set(T0 + 10 * SECOND)
    assert [c["id"] for c in claim(conn)] == [run_id]


def test_claims_take_higher_priority_first_then_earliest_visible_then_oldest(conn, work):
    low_first = run(conn, {"k": "low_first"})
    high = run(conn, {"k": "high"}, priority=10)
    high_earlier = run(conn, {"k": "high_earlier"}, priority=10, visible_at=T0 - 5 * SECOND)
    low_second = run(conn, {"k": "low_second"})
    negative = run(conn, {"k": "negative"}, priority=-1, visible_at=T0 - 60 * SECOND)
    order = [claim(conn, quantity=1)[0]["id"] for _ in range(5)]
    assert order == [high_earlier, high, low_first, low_second, negative]
    assert claim(conn) == []


def test_an_expired_queued_run_becomes_expired_when_a_claim_meets_it_and_is_never_handed_out(
    conn, work, clock
):
    run_id = run(conn, expires_at=T0 + SECOND)
    clock.set(T0 + SECOND)
    assert claim(conn) == []
    info = run_info(conn, run_id)
    assert (info["status"], info["attempts"]) == ("expired", 0)
    clock.advance(seconds=3600)
    assert claim(conn) == []
    assert run_info(conn, run_id)["status"] == "expired"
    assert wait(conn, run_id, poll_for=0) == [
        {"status": "expired", "output": None, "error_message": None}
    ]


def test_a_run_claimed_before_its_expiry_is_not_expired(conn, work, clock):
    run_id = run(conn, expires_at=T0 + SECOND)
    (claimed,) = claim(conn, hide_for=100)
    clock.set(T0 + 5 * SECOND)
    assert complete(conn, run_id, "late but fine", attempt=claimed["attempts"]) is True


def test_a_claim_that_meets_an_expired_run_still_fills_its_quantity(conn, work, clock):
    """An expired run met by a claim is retired and does not use up the quantity."""
    expired = run(conn, {"k": "expired"}, expires_at=T0 + SECOND)
    fresh = run(conn, {"k": "fresh"})
    clock.set(T0 + 2 * SECOND)
    assert [c["id"] for c in claim(conn, quantity=1)] == [fresh]
    assert run_info(conn, expired)["status"] == "expired"


def test_an_expired_run_was_never_started(conn, work, clock):
    """Expiring a run leaves started_at empty and visible_at as it was."""
    run_id = run(conn, expires_at=T0 + SECOND)
    clock.set(T0 + 2 * SECOND)
    claim(conn, hide_for=60_000)
    info = run_info(conn, run_id)
    assert info["status"] == "expired"
    assert info["started_at"] is None


# --------------------------------------------------------------------------- concurrency keys


def test_a_concurrency_key_is_held_while_its_run_is_queued_or_started(conn, work):
    first = run(conn, {"n": 1}, concurrency_key="k")
    assert run(conn, {"n": 2}, concurrency_key="k") == first  # held while queued
    claim(conn)
    assert run(conn, {"n": 3}, concurrency_key="k") == first  # held while started
    assert run_info(conn, first)["input"] == {"n": 1}
    assert run_info(conn, first)["concurrency_key"] == "k"
    assert len(statuses(conn)) == 1

    complete(conn, first, "done")
    second = run(conn, {"n": 4}, concurrency_key="k")
    assert second != first
    assert statuses(conn) == {first: "completed", second: "queued"}

    cancel(conn, second)
    third = run(conn, {"n": 5}, concurrency_key="k")
    assert third not in (first, second)


def test_concurrency_keys_are_per_task_and_runs_without_a_key_are_never_deduplicated(conn, work):
    create(conn, "other")
    a = run(conn, concurrency_key="k")
    b = run(conn, concurrency_key="k", name="other")
    c, d = run(conn), run(conn)
    assert len({a, b, c, d}) == 4


def test_a_terminally_failed_run_releases_its_concurrency_key(conn, work):
    first = run(conn, concurrency_key="k")
    claim(conn)
    assert fail(conn, first) == "failed"
    assert run(conn, concurrency_key="k") != first


def test_a_run_its_condition_would_skip_still_returns_the_live_run_holding_its_key(conn, clock):
    """A run its condition would skip still defers to the live run holding its key."""
    create(conn, condition="input.go")
    live = run(conn, {"go": True}, concurrency_key="k")
    assert run(conn, {"go": False}, concurrency_key="k") == live
    ids = run_many(conn, [{"go": True}, {"go": False}], concurrency_keys=["z", "z"])
    assert ids[0] == ids[1]
    assert len(statuses(conn)) == 2


# --------------------------------------------------------------------------- batch form


def test_batch_run_task_returns_ids_in_input_order(conn, work):
    ids = run_many(conn, [{"i": i} for i in range(5)], headers=[J({"h": i}) for i in range(5)])
    assert len(set(ids)) == 5
    for i, run_id in enumerate(ids):
        info = run_info(conn, run_id)
        assert (info["input"], info["headers"], info["status"]) == ({"i": i}, {"h": i}, "queued")


def test_batch_run_task_deduplicates_keys_within_the_batch_and_against_live_runs(conn, work):
    existing = run(conn, {"old": True}, concurrency_key="b")
    ids = run_many(conn, [{"i": i} for i in range(5)], concurrency_keys=["a", None, "a", "b", None])
    assert ids[0] == ids[2]
    assert ids[3] == existing
    assert len({ids[0], ids[1], ids[4], existing}) == 4
    assert run_info(conn, ids[0])["input"] == {"i": 0}  # the first occurrence wins
    assert run_info(conn, existing)["input"] == {"old": True}
    assert len(statuses(conn)) == 4


def test_batch_run_task_of_nothing_returns_an_empty_array(conn, work):
    assert run_many(conn, []) == []
    assert statuses(conn) == {}


@pytest.mark.parametrize(
    "options",
    [{"concurrency_keys": ["a"]}, {"headers": [J({})]}],
    ids=["keys", "headers"],
)
def test_batch_run_task_rejects_arrays_of_another_length(conn, work, options):
    with rejected(conn, errors.InvalidParameterValue):
        run_many(conn, [{}, {}], **options)


def test_batch_run_task_applies_the_condition_per_input(conn, clock):
    create(conn, condition="input.go")
    ids = run_many(conn, [{"go": True}, {"go": False}, {}])
    assert [run_info(conn, i)["status"] for i in ids] == ["queued", "skipped", "skipped"]


# --------------------------------------------------------------------------- conditions


def test_a_false_condition_skips_the_run_at_creation_without_a_worker(conn, clock):
    create(conn, condition="input.n gte 3")
    skipped = run(conn, {"n": 1})
    queued = run(conn, {"n": 3})
    info = run_info(conn, skipped)
    assert (info["status"], info["skipped_at"], info["attempts"]) == ("skipped", T0, 0)
    assert [c["id"] for c in claim(conn)] == [queued]
    assert wait(conn, skipped, poll_for=0) == [
        {"status": "skipped", "output": None, "error_message": None}
    ]


def test_a_condition_on_a_missing_field_is_false_and_its_negation_true(conn, clock):
    create(conn, condition="input.x eq 1")
    create(conn, "negated", condition="not input.x eq 1")
    assert run_info(conn, run(conn, {}))["status"] == "skipped"
    assert run_info(conn, run(conn, {}, name="negated"), name="negated")["status"] == "queued"


# =========================================================================== claim and lease


def test_claim_returns_the_claim_columns_and_counts_attempts(conn, work, clock):
    run_id = run(conn, {"n": 1}, concurrency_key="k", headers=J({"h": 1}), priority=3)
    assert claim(conn, hide_for=2000) == [
        {
            "id": run_id,
            "attempts": 1,
            "input": {"n": 1},
            "headers": {"h": 1},
            "concurrency_key": "k",
            "priority": 3,
        }
    ]
    info = run_info(conn, run_id)
    assert (info["status"], info["started_at"], info["visible_at"]) == (
        "started",
        T0,
        T0 + 2 * SECOND,
    )
    assert claim(conn) == []  # hidden while its lease runs


def test_claim_takes_at_most_quantity_runs(conn, work):
    ids = run_many(conn, [{"i": i} for i in range(5)])
    assert [c["id"] for c in claim(conn, quantity=2)] == ids[:2]
    assert [c["id"] for c in claim(conn, quantity=10)] == ids[2:]


@pytest.mark.parametrize(
    ("quantity", "hide_for"), [(0, 1000), (-1, 1000), (None, 1000), (1, 0), (1, -5), (1, None)]
)
def test_claim_rejects_a_bad_quantity_or_hide_for(conn, work, quantity, hide_for):
    run(conn)
    with rejected(conn, errors.InvalidParameterValue):
        claim(conn, quantity=quantity, hide_for=hide_for)


def test_a_started_run_becomes_claimable_again_when_its_lease_passes(conn, work, clock):
    run_id = run(conn, {"n": 1})
    (first,) = claim(conn, hide_for=1000)
    clock.set(T0 + 1000 * MS - MS)
    assert claim(conn) == []
    clock.set(T0 + 1000 * MS)
    (second,) = claim(conn, hide_for=1000)
    assert (second["id"], first["attempts"], second["attempts"]) == (run_id, 1, 2)
    info = run_info(conn, run_id)
    assert (info["status"], info["started_at"]) == ("started", T0 + SECOND)


def test_hide_tasks_extends_the_lease_of_started_runs(conn, work, clock):
    ids = run_many(conn, [{"i": 0}, {"i": 1}, {"i": 2}])
    claim(conn, quantity=2, hide_for=1000)
    clock.set(T0 + 500 * MS)
    fn(conn, "cb_hide_tasks", name="work", ids=ids, hide_for=5000)
    assert [run_info(conn, i)["visible_at"] for i in ids] == [T0 + 5500 * MS, T0 + 5500 * MS, T0]
    assert run_info(conn, ids[2])["status"] == "queued"  # a queued run is not touched
    clock.set(T0 + 2 * SECOND)
    assert [c["id"] for c in claim(conn)] == [ids[2]]  # the renewed runs are still leased
    clock.set(T0 + 5500 * MS)
    assert sorted(c["id"] for c in claim(conn)) == ids[:2]


def test_hide_tasks_rejects_a_bad_hide_for(conn, work):
    run_id = run(conn)
    claim(conn)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_hide_tasks", name="work", ids=[run_id], hide_for=0)


def test_claims_in_open_transactions_get_disjoint_runs(conn, dsn, work):
    ids = run_many(conn, [{"i": i} for i in range(4)])
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        Clock(a), Clock(b)
        b.execute("SET lock_timeout = '5s'")  # SKIP LOCKED: B must never wait for A
        with a.transaction():
            got_a = [c["id"] for c in claim(a, quantity=2)]
            with b.transaction():
                got_b = [c["id"] for c in claim(b, quantity=4)]
    assert got_a == ids[:2]
    assert got_b == ids[2:]


def test_a_rolled_back_claim_leaves_the_run_queued(conn, work):
    run_id = run(conn)
    with conn.transaction(force_rollback=True):
        assert [c["id"] for c in claim(conn)] == [run_id]
    info = run_info(conn, run_id)
    assert (info["status"], info["attempts"]) == ("queued", 0)


# =========================================================================== fencing


def test_a_stale_worker_cannot_overwrite_the_outcome_of_a_newer_claim(conn, dsn, work):
    run_id = run(conn, {"n": 1})
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn, autocommit=True) as b:
        clock_a, clock_b = Clock(a), Clock(b)
        (claim_a,) = claim(a, hide_for=1000)
        assert claim_a["attempts"] == 1

        # A is still working when its lease passes; B claims the run again.
        clock_b.set(T0 + 2 * SECOND)
        (claim_b,) = claim(b, hide_for=30_000)
        assert (claim_b["id"], claim_b["attempts"]) == (run_id, 2)

        # A finishes late: with its fencing token, neither outcome is recorded.
        clock_a.set(T0 + 3 * SECOND)
        assert complete(a, run_id, {"by": "a"}, attempt=1) is False
        assert fail(a, run_id, "a failed", attempt=1, max_retries=5) is None
        info = run_info(conn, run_id)
        assert (info["status"], info["attempts"], info["output"], info["error_message"]) == (
            "started",
            2,
            None,
            None,
        )

        assert complete(b, run_id, {"by": "b"}, attempt=2) is True
        info = run_info(conn, run_id)
        assert (info["status"], info["output"]) == ("completed", {"by": "b"})

        # Once the run is finished nobody can change it, with or without a token.
        assert complete(a, run_id, {"by": "a"}) is False
        assert fail(a, run_id, "a failed") is None
        assert run_info(conn, run_id)["output"] == {"by": "b"}


def test_a_fail_with_a_stale_attempt_does_not_requeue_the_run(conn, work, clock):
    run_id = run(conn)
    claim(conn, hide_for=100)
    clock.advance(seconds=1)
    claim(conn)
    assert fail(conn, run_id, "stale", attempt=1, max_retries=3) is None
    assert fail(conn, run_id, "current", attempt=2, max_retries=3) == "queued"


def test_complete_or_fail_of_a_run_that_is_not_started_returns_false_or_null(conn, work):
    queued = run(conn, {"n": 1})
    assert complete(conn, queued, "x") is False
    assert fail(conn, queued) is None
    assert run_info(conn, queued)["status"] == "queued"

    (claimed,) = claim(conn)
    assert complete(conn, queued, "first", attempt=claimed["attempts"]) is True
    assert complete(conn, queued, "second") is False
    assert fail(conn, queued) is None
    info = run_info(conn, queued)
    assert (info["status"], info["output"], info["error_message"]) == ("completed", "first", None)

    assert complete(conn, 999_999, "x") is False
    assert fail(conn, 999_999) is None


def test_complete_of_a_run_of_another_task_returns_false(conn, work):
    create(conn, "other")
    other_run = run(conn, name="other")
    claim(conn, name="other")
    assert complete(conn, other_run, "x") is False
    assert run_info(conn, other_run, name="other")["status"] == "started"


def test_complete_task_records_the_output_and_completion_time(conn, work, clock):
    run_id = run(conn)
    claim(conn)
    clock.advance(seconds=3)
    assert complete(conn, run_id, {"result": [1, 2]}) is True
    info = run_info(conn, run_id)
    assert (info["status"], info["output"], info["completed_at"]) == (
        "completed",
        {"result": [1, 2]},
        T0 + 3 * SECOND,
    )


def test_complete_tasks_records_the_runs_still_started_under_their_attempts(conn, work, clock):
    a, b, c, d = run_many(conn, [{"i": i} for i in range(4)])
    claim(conn, quantity=3)  # a, b, c started under attempt 1; d stays queued
    done = fn(
        conn,
        "cb_complete_tasks",
        name="work",
        run_ids=[c, a, b, d],
        outputs=[J("c"), J("a"), J("b"), J("d")],
        attempts=[1, 1, 7, 1],
    )
    assert done == [a, c]
    assert statuses(conn) == {a: "completed", b: "started", c: "completed", d: "queued"}
    assert run_info(conn, c)["output"] == "c"
    assert fn(conn, "cb_complete_tasks", name="work", run_ids=[b], outputs=[J("b")]) == [b]
    assert fn(conn, "cb_complete_tasks", name="work", run_ids=[], outputs=[]) == []


@pytest.mark.parametrize(
    "args",
    [
        {"run_ids": [1, 2], "outputs": [J(1)]},
        {"run_ids": [1], "outputs": [J(1)], "attempts": [1, 1]},
    ],
    ids=["outputs", "attempts"],
)
def test_complete_tasks_rejects_arrays_of_another_length(conn, work, args):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_complete_tasks", name="work", **args)


# =========================================================================== fail and retry


def test_fail_retries_with_full_jitter_backoff_until_retries_are_exhausted(conn, work, clock):
    run_id = run(conn)
    policy = {"max_retries": 4, "backoff_min": 100, "backoff_max": 500}
    for attempt in range(1, 5):
        (claimed,) = claim(conn)
        assert claimed["attempts"] == attempt
        assert fail(conn, run_id, f"boom {attempt}", attempt=attempt, **policy) == "queued"
        info = run_info(conn, run_id)
        cap = min(500, 100 * 2 ** (attempt - 1))
        assert 100 * MS <= info["visible_at"] - clock.now <= cap * MS
        assert (info["status"], info["error_message"], info["failed_at"]) == (
            "queued",
            f"boom {attempt}",
            None,
        )
        assert claim(conn) == []  # not before its retry delay
        clock.set(info["visible_at"])

    (claimed,) = claim(conn)
    assert claimed["attempts"] == 5
    assert fail(conn, run_id, "final", attempt=5, **policy) == "failed"
    info = run_info(conn, run_id)
    assert (info["status"], info["error_message"], info["failed_at"], info["attempts"]) == (
        "failed",
        "final",
        clock.now,
        5,
    )
    clock.advance(seconds=3600)
    assert claim(conn) == []
    assert wait(conn, run_id, poll_for=0) == [
        {"status": "failed", "output": None, "error_message": "final"}
    ]


def test_fail_with_the_default_policy_is_terminal_at_once(conn, work, clock):
    run_id = run(conn)
    claim(conn)
    assert fail(conn, run_id, None) == "failed"  # no message: a generic one is stored
    info = run_info(conn, run_id)
    assert (info["status"], info["failed_at"], info["error_message"]) == (
        "failed",
        T0,
        "unknown error",
    )


def test_the_first_retry_waits_exactly_backoff_min(conn, work, clock):
    ids = run_many(conn, [{"i": i} for i in range(10)])
    claim(conn)
    for run_id in ids:
        assert fail(conn, run_id, max_retries=1, backoff_min=250, backoff_max=10_000) == "queued"
    assert {run_info(conn, i)["visible_at"] for i in ids} == {T0 + 250 * MS}


@pytest.mark.parametrize(("backoff_max", "cap"), [(10_000, 400), (300, 300), (100, 100)])
def test_retry_delays_of_a_third_attempt_spread_over_the_jitter_window(
    conn, work, clock, backoff_max, cap
):
    ids = run_many(conn, [{"i": i} for i in range(40)])
    policy = {"max_retries": 5, "backoff_min": 100, "backoff_max": backoff_max}
    for attempt in (1, 2, 3):
        claimed = claim(conn, quantity=100)
        assert {c["attempts"] for c in claimed} == {attempt} and len(claimed) == 40
        for run_id in ids:
            assert fail(conn, run_id, attempt=attempt, **policy) == "queued"
        if attempt < 3:
            clock.advance(seconds=60)
    delays = sorted((run_info(conn, i)["visible_at"] - clock.now) / MS for i in ids)
    assert delays[0] >= 100 and delays[-1] <= cap
    if cap > 100:  # full jitter: the whole window is used, not one point of it
        width = cap - 100
        assert delays[0] < 100 + width / 3
        assert delays[-1] > cap - width / 3


@pytest.mark.parametrize(
    "policy",
    [
        {"max_retries": -1},
        {"retryable": None},
        {"backoff_min": -1},
        {"backoff_min": 500, "backoff_max": 100},
        {"backoff_max": 50},
    ],
    ids=[
        "negative-retries",
        "null-retryable",
        "negative-backoff-min",
        "max-below-min",
        "max-below-default-min",
    ],
)
def test_fail_rejects_an_invalid_retry_policy_and_changes_nothing(conn, work, policy):
    run_id = run(conn)
    claim(conn)
    with rejected(conn, errors.InvalidParameterValue):
        fail(conn, run_id, **policy)
    assert run_info(conn, run_id)["status"] == "started"


def test_a_retried_run_that_completes_clears_its_error(conn, work, clock):
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id, "transient", max_retries=1, backoff_min=0, backoff_max=0)
    (claimed,) = claim(conn)
    assert claimed["attempts"] == 2
    assert complete(conn, run_id, "ok", attempt=2) is True
    info = run_info(conn, run_id)
    assert (info["status"], info["error_message"], info["output"]) == ("completed", None, "ok")


# =========================================================================== on-fail


def test_failed_runs_of_a_task_without_on_fail_are_queued_for_on_fail_too(conn, work):
    # SPEC 7.1: Go catbird and psql callers never pass on_fail; every failed run is claimable.
    run_id = run(conn)
    claim(conn)
    assert fail(conn, run_id) == "failed"
    assert run_info(conn, run_id)["on_fail_status"] == "queued"
    assert [c["id"] for c in claim_on_fail(conn)] == [run_id]


def test_on_fail_claim_returns_the_failure_context_of_terminally_failed_runs(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn, {"order": 7}, concurrency_key="order-7")
    claim(conn)
    assert (
        fail(conn, run_id, "first", max_retries=1, backoff_min=1000, backoff_max=1000) == "queued"
    )
    assert claim_on_fail(conn) == []  # a retry is not a failure yet
    assert run_info(conn, run_id)["on_fail_status"] is None

    clock.set(T0 + SECOND)
    claim(conn)
    clock.set(T0 + 2 * SECOND)
    assert fail(conn, run_id, "second", max_retries=1) == "failed"
    assert run_info(conn, run_id)["on_fail_status"] == "queued"

    clock.set(T0 + 3 * SECOND)
    assert claim_on_fail(conn, hide_for=10_000) == [
        {
            "id": run_id,
            "input": {"order": 7},
            "error_message": "second",
            "attempts": 2,
            "on_fail_attempts": 1,
            "started_at": T0 + SECOND,
            "failed_at": T0 + 2 * SECOND,
            "concurrency_key": "order-7",
        }
    ]
    assert run_info(conn, run_id)["on_fail_status"] == "started"
    assert claim_on_fail(conn) == []  # hidden while its handler runs

    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id)
    info = run_info(conn, run_id)
    assert (info["status"], info["on_fail_status"], info["on_fail_attempts"]) == (
        "failed",
        "completed",
        1,
    )
    clock.advance(seconds=3600)
    assert claim_on_fail(conn) == []


def test_an_on_fail_claim_whose_lease_passes_is_claimed_again(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id)
    assert [r["on_fail_attempts"] for r in claim_on_fail(conn, hide_for=1000)] == [1]
    clock.set(T0 + SECOND)
    assert [(r["id"], r["on_fail_attempts"]) for r in claim_on_fail(conn)] == [(run_id, 2)]


def test_a_failing_on_fail_handler_is_retried_after_its_delay_until_exhausted(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id, "task broke")
    claim_on_fail(conn)

    fail_on_fail(conn, run_id, "handler broke", exhausted=False, delay=5000)
    info = run_info(conn, run_id)
    assert (info["on_fail_status"], info["on_fail_error_message"]) == ("queued", "handler broke")
    clock.set(T0 + 5 * SECOND - MS)
    assert claim_on_fail(conn) == []
    clock.set(T0 + 5 * SECOND)
    (again,) = claim_on_fail(conn)
    assert (again["id"], again["on_fail_attempts"], again["error_message"]) == (
        run_id,
        2,
        "task broke",
    )

    fail_on_fail(conn, run_id, "gave up", exhausted=True, delay=0)
    info = run_info(conn, run_id)
    assert (info["status"], info["on_fail_status"], info["on_fail_error_message"]) == (
        "failed",
        "failed",
        "gave up",
    )
    clock.advance(seconds=3600)
    assert claim_on_fail(conn) == []


def test_on_fail_completion_or_failure_of_a_run_not_in_its_handler_changes_nothing(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id)  # on-fail queued, not yet claimed
    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id)
    fail_on_fail(conn, run_id, "x", exhausted=True, delay=0)
    assert run_info(conn, run_id)["on_fail_status"] == "queued"
    assert [r["id"] for r in claim_on_fail(conn)] == [run_id]


def test_on_fail_calls_reject_bad_arguments(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id)
    with rejected(conn, errors.InvalidParameterValue):
        claim_on_fail(conn, quantity=0)
    with rejected(conn, errors.InvalidParameterValue):
        claim_on_fail(conn, hide_for=0)
    claim_on_fail(conn)
    with rejected(conn, errors.InvalidParameterValue):
        fn(
            conn,
            "cb_fail_task_on_fail",
            name="work",
            run_id=run_id,
            error_message="x",
            retry_exhausted=False,
            retry_delay=-1,
        )


# =========================================================================== cancel


def test_cancel_a_queued_run(conn, work, clock):
    run_id = run(conn)
    clock.advance(seconds=2)
    assert cancel(conn, run_id, reason="not needed") is True
    info = run_info(conn, run_id)
    assert (
        info["status"],
        info["cancel_reason"],
        info["canceled_at"],
        info["cancel_requested_at"],
    ) == (
        "canceled",
        "not needed",
        T0 + 2 * SECOND,
        T0 + 2 * SECOND,
    )
    assert claim(conn) == []
    assert wait(conn, run_id, poll_for=0) == [
        {"status": "canceled", "output": None, "error_message": None}
    ]


def test_cancel_a_started_run_makes_its_late_outcome_void(conn, work):
    run_id = run(conn)
    (claimed,) = claim(conn)
    assert cancel(conn, run_id) is True
    assert run_info(conn, run_id)["status"] == "canceled"
    assert complete(conn, run_id, "late", attempt=claimed["attempts"]) is False
    assert fail(conn, run_id, "late", attempt=claimed["attempts"], max_retries=3) is None
    fn(conn, "cb_hide_tasks", name="work", ids=[run_id], hide_for=1000)
    info = run_info(conn, run_id)
    assert (info["status"], info["output"], info["error_message"]) == ("canceled", None, None)


def test_cancel_is_idempotent_and_false_for_missing_or_finished_runs(conn, work):
    canceled, finished = run(conn), run(conn)
    assert cancel(conn, canceled) is True
    assert cancel(conn, canceled, reason="again") is True
    assert run_info(conn, canceled)["cancel_reason"] is None  # the first cancel stands
    claim(conn)
    complete(conn, finished, "done")
    assert cancel(conn, finished) is False
    assert run_info(conn, finished)["status"] == "completed"
    assert cancel(conn, 999_999) is False


# =========================================================================== wait


def test_wait_returns_the_outcome_of_a_finished_run_at_once(conn, work):
    run_id = run(conn)
    claim(conn)
    complete(conn, run_id, {"answer": 42})
    started = time.monotonic()
    assert wait(conn, run_id, poll_for=5000) == [
        {"status": "completed", "output": {"answer": 42}, "error_message": None}
    ]
    assert time.monotonic() - started < 1


def test_wait_returns_no_row_when_the_run_does_not_finish_in_time(conn, work):
    run_id = run(conn)
    started = time.monotonic()
    assert wait(conn, run_id, poll_for=150, poll_interval=20) == []
    assert 0.15 <= time.monotonic() - started < 2


def test_wait_sees_a_completion_committed_by_another_connection(conn, dsn, work):
    run_id = run(conn)
    (claimed,) = claim(conn)
    results: list[bool] = []

    def finish() -> None:
        with psycopg.connect(dsn, autocommit=True) as other:
            time.sleep(0.1)
            results.append(complete(other, run_id, {"by": "other"}, attempt=claimed["attempts"]))

    worker = threading.Thread(target=finish)
    worker.start()
    started = time.monotonic()
    rows = wait(conn, run_id, poll_for=3000, poll_interval=20)
    elapsed = time.monotonic() - started
    worker.join()
    assert results == [True]
    assert rows == [{"status": "completed", "output": {"by": "other"}, "error_message": None}]
    assert elapsed < 2


def test_wait_for_a_missing_run_returns_no_row_at_once(conn, work):
    started = time.monotonic()
    assert wait(conn, 999_999, poll_for=5000) == []
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("poll_for", "poll_interval"), [(-1, 100), (100, 0), (None, 100)])
def test_wait_rejects_bad_poll_arguments(conn, work, poll_for, poll_interval):
    run_id = run(conn)
    with rejected(conn, errors.InvalidParameterValue):
        wait(conn, run_id, poll_for=poll_for, poll_interval=poll_interval)


# =========================================================================== purge and clear


def _finished_and_active_runs(conn: psycopg.Connection, clock: Clock) -> dict[str, int]:
    """Runs of "work" (created with condition "not input.skip") in every state, finished
    at T0 (completed, skipped), T0+1h (failed), T0+2h (canceled); one queued, one started."""
    ids = {
        "completed": run(conn, {"n": 1}),
        "skipped": run(conn, {"skip": True}),
        "failed": run(conn, {"n": 2}),
        "canceled": run(conn, {"n": 3}),
    }
    claim(conn, quantity=1)
    complete(conn, ids["completed"], "ok")
    clock.set(T0 + 3600 * SECOND)
    claim(conn, quantity=1)
    fail(conn, ids["failed"])
    clock.set(T0 + 7200 * SECOND)
    cancel(conn, ids["canceled"])
    ids["queued"] = run(conn, {"n": 4}, visible_at=T0 + 365 * 86400 * SECOND)
    ids["started"] = run(conn, {"n": 5})
    claim(conn, hide_for=10_000_000)
    return ids


def test_purge_deletes_finished_runs_older_than_the_interval(conn, clock):
    create(conn, condition="not input.skip")
    create(conn, "other")
    other_run = run(conn, name="other")
    claim(conn, name="other")
    complete(conn, other_run, "kept", name="other")
    ids = _finished_and_active_runs(conn, clock)

    clock.set(T0 + 3 * 3600 * SECOND)
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(minutes=90)) == 3
    assert set(statuses(conn)) == {ids["canceled"], ids["queued"], ids["started"]}
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(minutes=90)) == 0
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(minutes=30)) == 1
    assert set(statuses(conn)) == {ids["queued"], ids["started"]}
    assert statuses(conn, "other") == {other_run: "completed"}


def test_purge_rejects_a_negative_or_null_interval(conn, work):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(seconds=-1))
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_purge_task_runs", name="work", older_than=None)


def test_clear_deletes_every_run_whatever_its_status(conn, clock):
    """As in the Go library: clear is the big hammer, in-flight work included."""
    create(conn, condition="not input.skip")
    create(conn, "other")
    other_run = run(conn, name="other")
    _finished_and_active_runs(conn, clock)
    assert fn(conn, "cb_clear_task_runs", name="work") == 6
    assert statuses(conn) == {}
    assert statuses(conn, "other") == {other_run: "queued"}


def test_a_cleared_started_run_refuses_its_late_outcome(conn, work):
    run_id = run(conn)
    (claimed,) = claim(conn)
    assert fn(conn, "cb_clear_task_runs", name="work") == 1
    assert complete(conn, run_id, "late", attempt=claimed["attempts"]) is False


def test_a_run_waiting_for_its_on_fail_handler_is_not_purged(conn, clock):
    create(conn, on_fail=True)
    run_id = run(conn)
    claim(conn)
    fail(conn, run_id)
    clock.advance(seconds=60)
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(0)) == 0
    claim_on_fail(conn)
    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id)
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(0)) == 1


def test_purge_deletes_a_run_that_finished_at_this_very_instant(conn, work):
    """The cut-off is inclusive: purge with older_than = 0 takes a run finished at cb_now()."""
    run_id = run(conn)
    claim(conn)
    complete(conn, run_id, "ok")
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(0)) == 1
    assert statuses(conn) == {}


def test_an_expired_run_is_dated_by_its_expiry_for_purge(conn, work, clock):
    """An expired run is dated by expired_at (when a claim retired it)."""
    run_id = run(conn, expires_at=T0 + SECOND)
    clock.set(T0 + 2 * SECOND)
    claim(conn, hide_for=3_600_000)
    assert run_info(conn, run_id)["status"] == "expired"
    assert run_info(conn, run_id)["expired_at"] == T0 + 2 * SECOND
    clock.set(T0 + 60 * SECOND)
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(seconds=59)) == 0
    assert fn(conn, "cb_purge_task_runs", name="work", older_than=dt.timedelta(seconds=58)) == 1


# =========================================================================== topics


def test_publish_creates_a_run_per_message_for_every_bound_task(conn, clock):
    for name in ("audit", "notify", "billing"):
        create(conn, name)
    fn(conn, "cb_bind_task", name="audit", pattern="orders.#")
    fn(conn, "cb_bind_task", name="audit", pattern="orders.*")  # matched twice: still one run
    fn(conn, "cb_bind_task", name="notify", pattern="orders.created")
    fn(conn, "cb_bind_task", name="billing", pattern="invoices.#")
    fn(conn, "cb_create_queue", name="log")
    fn(conn, "cb_bind", queue="log", pattern="#")

    assert fn(conn, "cb_publish", topic="orders.created", body=J({"order": 1})) == 3
    assert (
        fn(conn, "cb_publish", topic="orders.created", bodies=[J({"order": 2}), J({"order": 3})])
        == 6
    )
    assert fn(conn, "cb_publish", topic="orders.shipped.eu", body=J({"order": 4})) == 2
    assert fn(conn, "cb_publish", topic="weather", body=J({})) == 1

    def inputs(task: str) -> list[Any]:
        return [r["input"] for r in reversed(call(conn, "cb_list_task_runs", name=task))]

    assert inputs("audit") == [{"order": 1}, {"order": 2}, {"order": 3}, {"order": 4}]
    assert inputs("notify") == [{"order": 1}, {"order": 2}, {"order": 3}]
    assert inputs("billing") == []
    assert [m["body"] for m in messages(conn, "log")] == [{"order": i} for i in (1, 2, 3, 4)] + [{}]


def test_published_runs_carry_the_message_options_and_concurrency_key(conn, clock):
    create(conn)
    fn(conn, "cb_bind_task", name="work", pattern="jobs.*")
    assert (
        fn(
            conn,
            "cb_publish",
            topic="jobs.a",
            body=J({"n": 1}),
            concurrency_key="k",
            headers=J({"h": 1}),
            priority=4,
            visible_at=T0 + SECOND,
            expires_at=T0 + 60 * SECOND,
        )
        == 1
    )
    (only,) = call(conn, "cb_list_task_runs", name="work")
    assert {
        k: only[k]
        for k in ("input", "concurrency_key", "headers", "priority", "visible_at", "expires_at")
    } == {
        "input": {"n": 1},
        "concurrency_key": "k",
        "headers": {"h": 1},
        "priority": 4,
        "visible_at": T0 + SECOND,
        "expires_at": T0 + 60 * SECOND,
    }
    # The key is held: a second publish counts its delivery but creates no run.
    assert fn(conn, "cb_publish", topic="jobs.a", body=J({"n": 2}), concurrency_key="k") == 1
    assert len(statuses(conn)) == 1


def test_a_task_condition_applies_to_published_runs(conn, clock):
    create(conn, condition="input.amount gte 100")
    fn(conn, "cb_bind_task", name="work", pattern="orders.#")
    assert (
        fn(conn, "cb_publish", topic="orders.new", bodies=[J({"amount": 5}), J({"amount": 500})])
        == 2
    )
    runs = call(conn, "cb_list_task_runs", name="work")
    assert [(r["input"]["amount"], r["status"]) for r in reversed(runs)] == [
        (5, "skipped"),
        (500, "queued"),
    ]


def test_bind_task_is_idempotent_and_unbind_task_stops_deliveries(conn, work):
    fn(conn, "cb_bind_task", name="work", pattern="a.*")
    fn(conn, "cb_bind_task", name="work", pattern="a.*")
    assert fn(conn, "cb_publish", topic="a.b", body=J({})) == 1
    assert fn(conn, "cb_unbind_task", name="work", pattern="a.*") is True
    assert fn(conn, "cb_unbind_task", name="work", pattern="a.*") is False
    assert fn(conn, "cb_publish", topic="a.b", body=J({})) == 0
    assert len(statuses(conn)) == 1


@pytest.mark.parametrize("pattern", ["a..b", "a.#.b", "", None, "a b", "a.**"])
def test_bind_task_rejects_an_invalid_pattern(conn, work, pattern):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_bind_task", name="work", pattern=pattern)


# =========================================================================== introspection


def test_list_task_runs_is_newest_first_and_pages_backwards(conn, work):
    ids = run_many(conn, [{"i": i} for i in range(5)])

    assert_pages_backwards(conn, "cb_list_task_runs", "work", ids)


def test_get_task_run_only_finds_runs_of_that_task(conn, work):
    create(conn, "other")
    mine, theirs = run(conn), run(conn, name="other")
    assert [r["id"] for r in call(conn, "cb_get_task_run", name="work", run_id=mine)] == [mine]
    assert call(conn, "cb_get_task_run", name="work", run_id=theirs) == []
    assert call(conn, "cb_get_task_run", name="work", run_id=999_999) == []


def test_get_task_run_of_the_largest_possible_id_is_empty(conn, work):
    """The largest bigint is a run id like any other: no such run, no row."""
    assert call(conn, "cb_get_task_run", name="work", run_id=2**63 - 1) == []


# =========================================================================== concurrency


def wait_until_blocked(monitor: psycopg.Connection, *pids: int) -> None:
    """Wait until every backend in pids waits on a heavyweight lock (so the interleaving
    of a test is fixed, not left to timing)."""
    deadline = time.monotonic() + 30
    while scalar(
        monitor,
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
        (list(pids),),
    ) < len(pids):
        assert time.monotonic() < deadline, f"backends {pids} never blocked"
        time.sleep(0.01)


def in_thread(target: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, list[Any]]:
    """Start target(*args, **kwargs) in a thread; the list receives its result or its exception."""
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(target(*args, **kwargs))
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    return thread, out


def test_four_concurrent_claimers_share_1000_runs_each_run_exactly_once(conn, dsn, work):
    ids = run_many(conn, [{"i": i} for i in range(1000)])
    claimed: list[list[int]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer(slot: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                Clock(c)  # leases never pass: a run claimed twice would be a bug
                start.wait()
                while rows := claim(c, quantity=7, hide_for=60_000):
                    claimed[slot].extend(r["id"] for r in rows)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    every = [i for part in claimed for i in part]
    assert len(every) == len(set(every)) == 1000
    assert set(every) == set(ids)
    assert (
        scalar(
            conn,
            "SELECT count(*) FROM catbird.cb_task_runs WHERE status = 'started' AND attempts = 1",
        )
        == 1000
    )
    assert claim(conn) == []


def test_concurrent_run_task_with_one_concurrency_key_creates_one_run(conn, dsn, work):
    rounds, writers = 5, 8
    results: list[list[int | None]] = [[None] * writers for _ in range(rounds)]
    failures: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(slot: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                for r in range(rounds):
                    start.wait()
                    results[r][slot] = run(c, {"writer": slot}, concurrency_key=f"key-{r}")
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    for r in range(rounds):
        assert len(set(results[r])) == 1, results[r]
    assert len(statuses(conn)) == rounds
    assert (
        scalar(conn, "SELECT count(DISTINCT concurrency_key) FROM catbird.cb_task_runs") == rounds
    )


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_run_task_waiting_on_an_uncommitted_key_holder(conn, dsn, work, outcome):
    """A writer that meets an uncommitted run holding its key waits for it: on commit it
    returns the holder's id, on rollback the waiters share one new run."""
    with psycopg.connect(dsn, autocommit=True) as holder:
        waiters = [psycopg.connect(dsn, autocommit=True) for _ in range(3)]
        try:
            holder.execute("BEGIN")
            held = run(holder, {"who": "holder"}, concurrency_key="k")
            started = [in_thread(run, w, {"who": "waiter"}, concurrency_key="k") for w in waiters]
            wait_until_blocked(conn, *(w.info.backend_pid for w in waiters))
            holder.execute(outcome.upper())
            for thread, _ in started:
                thread.join(30)
            ids = {out[0] for _, out in started}
        finally:
            for w in waiters:
                w.close()
    runs = call(conn, "cb_list_task_runs", name="work")
    assert len(runs) == 1
    assert ids == {runs[0]["id"]}
    if outcome == "commit":
        assert runs[0]["id"] == held and runs[0]["input"] == {"who": "holder"}
    else:
        assert runs[0]["id"] != held and runs[0]["input"] == {"who": "waiter"}


def test_a_definition_change_waits_for_an_open_run_task_then_sees_its_run(conn, dsn, work):
    with (
        psycopg.connect(dsn, autocommit=True) as writer,
        psycopg.connect(dsn, autocommit=True) as admin,
    ):
        writer.execute("BEGIN")
        run_id = run(writer)
        thread, out = in_thread(create, admin, "work", description="changed")
        wait_until_blocked(conn, admin.info.backend_pid)
        writer.execute("COMMIT")
        thread.join(30)
    assert len(out) == 1 and isinstance(out[0], errors.ObjectInUse)
    assert task_info(conn)["description"] is None
    assert statuses(conn) == {run_id: "queued"}


def test_delete_task_waits_for_an_open_run_task_and_leaves_no_orphan_run(conn, dsn, work):
    with (
        psycopg.connect(dsn, autocommit=True) as writer,
        psycopg.connect(dsn, autocommit=True) as admin,
    ):
        writer.execute("BEGIN")
        run(writer)
        thread, out = in_thread(fn, admin, "cb_delete_task", name="work")
        wait_until_blocked(conn, admin.info.backend_pid)
        writer.execute("COMMIT")
        thread.join(30)
    assert out == [True]
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_task_runs") == 0


def test_run_task_waiting_for_an_open_delete_task_fails_with_undefined_object(conn, dsn, work):
    with (
        psycopg.connect(dsn, autocommit=True) as admin,
        psycopg.connect(dsn, autocommit=True) as writer,
    ):
        admin.execute("BEGIN")
        fn(admin, "cb_delete_task", name="work")
        thread, out = in_thread(run, writer)
        wait_until_blocked(conn, writer.info.backend_pid)
        admin.execute("COMMIT")
        thread.join(30)
    assert len(out) == 1 and isinstance(out[0], errors.UndefinedObject)
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_task_runs") == 0

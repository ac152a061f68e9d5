"""The run lifecycle owned by the engine (SPEC 7.1, issue 8), at the SQL level.

Each test covers a hole of issue 8 reachable from SQL and fails on the tree
before it: retry policy stored on definitions, lapsed leases counted as
attempts with a cap (crash loops end), retryable=false, error_detail, manual
retry of task and flow runs, on-fail for every failure (fenced, its delay
decided in SQL), fenced generators and early completion, generator resume
without duplicates, queue receipts, dead letters and redrive, and expired rows
that hold no concurrency key. Every new argument rejects bad values with 22023
and writes nothing.

Time is the engine clock pinned through ``catbird.fake_now``; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, fn, messages, rejected, scalar

SECOND = dt.timedelta(seconds=1)
LEASE = 1_000  # ms


@pytest.fixture
def clock(conn: psycopg.Connection) -> Clock:
    return Clock(conn)


# ---------- helpers


def run_task(conn, name: str = "work", input: Any = None, **kw: Any) -> int:
    return fn(conn, "cb_run_task", name=name, input=J({} if input is None else input), **kw)


def claim_tasks(conn, name: str = "work", hide_for: int = LEASE) -> list[dict[str, Any]]:
    return call(conn, "cb_claim_tasks", name=name, quantity=10, hide_for=hide_for)


def task_run(conn, run_id: int, name: str = "work") -> dict[str, Any]:
    (row,) = call(conn, "cb_get_task_run", name=name, run_id=run_id)
    return row


def step(name: str, *deps: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, **fields}
    if deps:
        out["depends_on"] = [{"name": d} for d in deps]
    return out


def create_flow(conn, name: str, steps: list[dict[str, Any]], **kw: Any) -> None:
    fn(conn, "cb_create_flow", name=name, steps=J(steps), **kw)


def run_flow(conn, name: str, input: Any = None, **kw: Any) -> int:
    return fn(conn, "cb_run_flow", name=name, input=J({} if input is None else input), **kw)


def claim_steps(conn, flow: str, step_name: str, hide_for: int = LEASE) -> list[dict[str, Any]]:
    return call(
        conn, "cb_claim_steps", flow_name=flow, step_name=step_name, quantity=10, hide_for=hide_for
    )


def claim_items(conn, flow: str, step_name: str, hide_for: int = LEASE) -> list[dict[str, Any]]:
    return call(
        conn,
        "cb_claim_map_tasks",
        flow_name=flow,
        step_name=step_name,
        quantity=10,
        hide_for=hide_for,
    )


def flow_run(conn, flow: str, run_id: int) -> dict[str, Any]:
    (row,) = call(conn, "cb_get_flow_run", name=flow, run_id=run_id)
    return row


def steps_of(conn, flow: str, run_id: int) -> dict[str, dict[str, Any]]:
    return {
        s["step_name"]: s
        for s in call(conn, "cb_get_flow_run_steps", flow_name=flow, run_id=run_id)
    }


def items_of(conn, run_id: int) -> list[tuple[int, Any, str]]:
    with conn.cursor() as cur:
        return cur.execute(
            "SELECT idx, item, status FROM catbird.cb_map_tasks"
            " WHERE flow_run_id = %s ORDER BY idx",
            (run_id,),
        ).fetchall()


def read(conn, queue: str, hide_for: int = LEASE, quantity: int = 10) -> list[dict[str, Any]]:
    return call(conn, "cb_read", queue=queue, quantity=quantity, hide_for=hide_for)


# ---------- retry policy


def test_task_policy_is_stored_returned_and_used_by_fail_calls_without_one(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=2, backoff_min=1000, backoff_max=1000)
    (info,) = call(conn, "cb_get_task", name="work")
    assert (info["max_retries"], info["backoff_min"], info["backoff_max"]) == (2, 1000, 1000)
    run_id = run_task(conn)
    for attempt in (1, 2):
        (c,) = claim_tasks(conn)
        assert c["attempts"] == attempt
        # no policy arguments: the stored one decides
        assert fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x") == "queued"
        assert task_run(conn, run_id)["visible_at"] == clock.now + SECOND
        clock.advance(seconds=1)
    claim_tasks(conn)
    assert fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x") == "failed"


def test_fail_arguments_override_the_stored_policy(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=5)
    run_id = run_task(conn)
    claim_tasks(conn)
    assert (
        fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x", max_retries=0)
        == "failed"
    )


def test_step_policy_keys_are_stored_returned_and_used(conn, clock):
    create_flow(conn, "f", [step("a", max_retries=1, backoff_min=0, backoff_max=0)])
    (info,) = call(conn, "cb_get_flow", name="f")
    assert info["steps"][0]["max_retries"] == 1
    assert (info["steps"][0]["backoff_min"], info["steps"][0]["backoff_max"]) == (0, 0)
    run_id = run_flow(conn, "f")
    (a,) = claim_steps(conn, "f", "a")
    args = {"flow_name": "f", "step_name": "a", "id": a["id"], "error_message": "x"}
    assert fn(conn, "cb_fail_step", **args) == "queued"
    claim_steps(conn, "f", "a")
    assert fn(conn, "cb_fail_step", **args) == "failed"
    assert flow_run(conn, "f", run_id)["status"] == "failed"


def test_flow_without_policy_keys_keeps_its_step_shape(conn):
    create_flow(conn, "f", [step("a")])
    (info,) = call(conn, "cb_get_flow", name="f")
    assert not {"max_retries", "backoff_min", "backoff_max"} & set(info["steps"][0])


# ---------- crash loops


def test_task_crash_loop_is_capped_by_the_stored_policy(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=2)
    run_id = run_task(conn)
    for attempt in (1, 2, 3):
        (c,) = claim_tasks(conn)
        assert c["attempts"] == attempt
        clock.advance(seconds=2)  # the worker died: its lease lapses
    assert claim_tasks(conn) == []
    info = task_run(conn, run_id)
    assert info["status"] == "failed" and "lease expired" in info["error_message"]
    assert info["on_fail_status"] == "queued"


def test_task_crash_loop_without_policy_ends_after_25_attempts(conn, clock):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn)
    for _ in range(200):
        if not claim_tasks(conn):
            break
        clock.advance(seconds=2)
    info = task_run(conn, run_id)
    assert (info["status"], info["attempts"]) == ("failed", 25)
    assert "lease expired" in info["error_message"]


def test_gc_fails_a_lapsed_task_run_that_used_its_attempts(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=0)
    run_id = run_task(conn)
    claim_tasks(conn)
    clock.advance(seconds=2)
    assert fn(conn, "cb_gc")["lease_expired_task_runs"] == 1
    info = task_run(conn, run_id)
    assert info["status"] == "failed" and "lease expired" in info["error_message"]


def test_step_crash_loop_is_capped(conn, clock):
    create_flow(conn, "f", [step("a", max_retries=1)])
    run_id = run_flow(conn, "f")
    for attempt in (1, 2):
        (c,) = claim_steps(conn, "f", "a")
        assert c["attempts"] == attempt
        clock.advance(seconds=2)
    assert claim_steps(conn, "f", "a") == []
    run = flow_run(conn, "f", run_id)
    assert run["status"] == "failed" and "lease expired" in run["error_message"]
    assert run["on_fail_status"] == "queued"
    assert steps_of(conn, "f", run_id)["a"]["status"] == "failed"


def test_step_crash_loop_without_policy_ends(conn, clock):
    create_flow(conn, "f", [step("a")])
    run_id = run_flow(conn, "f")
    for _ in range(200):
        if not claim_steps(conn, "f", "a"):
            break
        clock.advance(seconds=2)
    assert steps_of(conn, "f", run_id)["a"]["attempts"] == 25
    assert flow_run(conn, "f", run_id)["status"] == "failed"


def test_map_item_crash_loop_is_capped_and_gc_does_it_too(conn, clock):
    create_flow(conn, "f", [step("m", step_type="mapper", max_retries=0)])
    run_id = run_flow(conn, "f", [1, 2])
    assert len(claim_items(conn, "f", "m")) == 2
    clock.advance(seconds=2)
    assert fn(conn, "cb_gc")["lease_expired_flow_runs"] == 1
    run = flow_run(conn, "f", run_id)
    assert run["status"] == "failed" and "lease expired" in run["error_message"]
    assert claim_items(conn, "f", "m") == []

    run_id = run_flow(conn, "f", [1])
    for _ in range(200):
        if not claim_items(conn, "f", "m"):
            break
        clock.advance(seconds=2)
    assert flow_run(conn, "f", run_id)["status"] == "failed"
    assert [s for _, _, s in items_of(conn, run_id)] == ["failed"]


# ---------- retryable, error_detail


def test_a_non_retryable_failure_fails_at_once(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=5)
    run_id = run_task(conn)
    claim_tasks(conn)
    assert (
        fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="bad", retryable=False)
        == "failed"
    )
    create_flow(conn, "f", [step("a", max_retries=5), step("m", step_type="mapper", max_retries=5)])
    run_id = run_flow(conn, "f", [1])
    (a,) = claim_steps(conn, "f", "a")
    assert (
        fn(conn, "cb_fail_step", flow_name="f", step_name="a", id=a["id"], error_message="bad",
           retryable=False)
        == "failed"
    )  # fmt: skip
    run_id = run_flow(conn, "f", [1])
    (item,) = claim_items(conn, "f", "m")
    assert (
        fn(conn, "cb_fail_map_task", flow_name="f", step_name="m", id=item["id"],
           error_message="bad", retryable=False)
        == "failed"
    )  # fmt: skip


def test_error_detail_round_trips(conn, clock):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="E: x", error_detail="tb 1")
    assert task_run(conn, run_id)["error_detail"] == "tb 1"
    assert call(conn, "cb_list_task_runs", name="work")[0]["error_detail"] == "tb 1"

    create_flow(conn, "f", [step("a"), step("m", step_type="mapper")])
    run_id = run_flow(conn, "f", [1])
    (a,) = claim_steps(conn, "f", "a")
    fn(conn, "cb_fail_step", flow_name="f", step_name="a", id=a["id"], error_message="E",
       error_detail="tb 2")  # fmt: skip
    assert steps_of(conn, "f", run_id)["a"]["error_detail"] == "tb 2"
    run_id = run_flow(conn, "f", [1])
    (item,) = claim_items(conn, "f", "m")
    fn(conn, "cb_fail_map_task", flow_name="f", step_name="m", id=item["id"], error_message="E",
       error_detail="tb 3")  # fmt: skip
    assert steps_of(conn, "f", run_id)["m"]["error_detail"] == "tb 3"


# ---------- manual retry


def test_retry_task_run_requeues_a_failed_run(conn, clock):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn, concurrency_key="k")
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x", error_detail="tb")
    assert fn(conn, "cb_retry_task_run", name="work", run_id=run_id) is True
    info = task_run(conn, run_id)
    assert (info["status"], info["attempts"], info["error_message"], info["error_detail"]) == (
        "queued", 0, None, None,
    )  # fmt: skip
    assert info["on_fail_status"] is None
    assert (
        fn(conn, "cb_retry_task_run", name="work", run_id=run_id) is False
    )  # queued: nothing to do
    (c,) = claim_tasks(conn)
    assert (c["id"], c["attempts"]) == (run_id, 1)
    assert fn(conn, "cb_complete_task", name="work", run_id=run_id, output=J(1)) is True
    assert fn(conn, "cb_retry_task_run", name="work", run_id=run_id) is False  # completed
    assert fn(conn, "cb_retry_task_run", name="work", run_id=run_id + 99) is False  # missing


def test_retry_task_run_of_a_canceled_run_whose_key_is_taken_is_refused(conn, clock):
    fn(conn, "cb_create_task", name="work")
    first = run_task(conn, concurrency_key="k")
    fn(conn, "cb_cancel_task", name="work", run_id=first)
    second = run_task(conn, concurrency_key="k")
    assert second != first
    assert fn(conn, "cb_retry_task_run", name="work", run_id=first) is False
    fn(conn, "cb_cancel_task", name="work", run_id=second)
    assert fn(conn, "cb_retry_task_run", name="work", run_id=first) is True


def test_retry_flow_run_keeps_completed_steps_and_outputs(conn, clock):
    create_flow(conn, "f", [step("a"), step("b", "a"), step("c", "b"), step("d")])
    run_id = run_flow(conn, "f")
    (a,) = claim_steps(conn, "f", "a")
    assert fn(conn, "cb_complete_step", flow_name="f", step_name="a", id=a["id"], output=J("A"))
    (b,) = claim_steps(conn, "f", "b")
    fn(conn, "cb_fail_step", flow_name="f", step_name="b", id=b["id"], error_message="x")
    statuses = {n: s["status"] for n, s in steps_of(conn, "f", run_id).items()}
    assert statuses == {"a": "completed", "b": "failed", "c": "canceled", "d": "canceled"}

    assert fn(conn, "cb_retry_flow_run", name="f", run_id=run_id) is True
    run = flow_run(conn, "f", run_id)
    assert (run["status"], run["error_message"], run["on_fail_status"]) == ("started", None, None)
    steps = steps_of(conn, "f", run_id)
    assert {n: s["status"] for n, s in steps.items()} == {
        "a": "completed", "b": "queued", "c": "waiting_for_dependencies", "d": "queued",
    }  # fmt: skip
    assert steps["a"]["output"] == "A" and steps["b"]["attempts"] == 0
    (b,) = claim_steps(conn, "f", "b")
    assert b["step_outputs"] == {"a": "A"}
    assert fn(conn, "cb_complete_step", flow_name="f", step_name="b", id=b["id"], output=J("B"))
    for name in ("c", "d"):
        (s,) = claim_steps(conn, "f", name)
        fn(conn, "cb_complete_step", flow_name="f", step_name=name, id=s["id"], output=J(name))
    assert flow_run(conn, "f", run_id)["status"] == "completed"
    assert fn(conn, "cb_retry_flow_run", name="f", run_id=run_id) is False
    assert fn(conn, "cb_retry_flow_run", name="f", run_id=run_id + 99) is False


def test_retry_flow_run_fans_a_failed_mapper_out_again(conn, clock):
    create_flow(conn, "f", [step("m", step_type="mapper")])
    run_id = run_flow(conn, "f", [1, 2])
    items = claim_items(conn, "f", "m")
    fn(conn, "cb_fail_map_task", flow_name="f", step_name="m", id=items[0]["id"], error_message="x")
    assert flow_run(conn, "f", run_id)["status"] == "failed"
    assert fn(conn, "cb_retry_flow_run", name="f", run_id=run_id) is True
    items = claim_items(conn, "f", "m")
    assert sorted(i["item"] for i in items) == [1, 2]
    fn(conn, "cb_complete_map_tasks", flow_name="f", step_name="m", ids=[i["id"] for i in items],
       outputs=[J(i["item"] * 10) for i in items])  # fmt: skip
    run = flow_run(conn, "f", run_id)
    assert (run["status"], run["output"]) == ("completed", [10, 20])


# ---------- on-fail


def test_on_fail_is_claimable_for_a_task_created_without_on_fail(conn, clock):
    fn(conn, "cb_create_task", name="work")  # as Go catbird and psql do
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x")
    (c,) = call(conn, "cb_claim_task_on_fail", name="work", quantity=5)
    assert c["id"] == run_id
    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id, on_fail_attempt=1)
    assert task_run(conn, run_id)["on_fail_status"] == "completed"


def test_on_fail_calls_are_fenced_by_on_fail_attempt(conn, clock):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x")
    (old,) = call(conn, "cb_claim_task_on_fail", name="work", quantity=5, hide_for=LEASE)
    clock.advance(seconds=2)
    (new,) = call(conn, "cb_claim_task_on_fail", name="work", quantity=5, hide_for=LEASE)
    assert (old["on_fail_attempts"], new["on_fail_attempts"]) == (1, 2)
    # the stale handler's failure writes nothing ...
    fn(conn, "cb_fail_task_on_fail", name="work", run_id=run_id, error_message="stale",
       retry_exhausted=True, retry_delay=0, on_fail_attempt=1)  # fmt: skip
    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id, on_fail_attempt=1)
    info = task_run(conn, run_id)
    assert (info["on_fail_status"], info["on_fail_error_message"]) == ("started", None)
    # ... and the newer success is recorded
    fn(conn, "cb_complete_task_on_fail", name="work", run_id=run_id, on_fail_attempt=2)
    assert task_run(conn, run_id)["on_fail_status"] == "completed"

    create_flow(conn, "f", [step("a")])
    flow_run_id = run_flow(conn, "f")
    (a,) = claim_steps(conn, "f", "a")
    fn(conn, "cb_fail_step", flow_name="f", step_name="a", id=a["id"], error_message="x")
    call(conn, "cb_claim_flow_on_fail", name="f", quantity=5, hide_for=LEASE)
    clock.advance(seconds=2)
    call(conn, "cb_claim_flow_on_fail", name="f", quantity=5, hide_for=LEASE)
    fn(conn, "cb_complete_flow_on_fail", name="f", run_id=flow_run_id, on_fail_attempt=1)
    assert flow_run(conn, "f", flow_run_id)["on_fail_status"] == "started"
    fn(conn, "cb_fail_flow_on_fail", name="f", run_id=flow_run_id, error_message="e",
       on_fail_attempt=2)  # fmt: skip
    # flows store no policy: 0 retries, so SQL decides the handler failed for good
    assert flow_run(conn, "f", flow_run_id)["on_fail_status"] == "failed"


def test_on_fail_retry_delay_is_decided_in_sql(conn, clock):
    fn(conn, "cb_create_task", name="work", max_retries=1, backoff_min=3000, backoff_max=3000)
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x", max_retries=0)
    call(conn, "cb_claim_task_on_fail", name="work", quantity=5)
    fn(conn, "cb_fail_task_on_fail", name="work", run_id=run_id, error_message="h1")
    info = task_run(conn, run_id)
    assert (info["on_fail_status"], info["on_fail_error_message"]) == ("queued", "h1")
    assert scalar(conn, "SELECT on_fail_visible_at FROM catbird.cb_task_runs WHERE id = %s",
                  (run_id,)) == clock.now + 3 * SECOND  # fmt: skip
    clock.advance(seconds=3)
    call(conn, "cb_claim_task_on_fail", name="work", quantity=5)
    fn(conn, "cb_fail_task_on_fail", name="work", run_id=run_id, error_message="h2")
    assert task_run(conn, run_id)["on_fail_status"] == "failed"  # its one retry is used


def test_old_on_fail_callers_keep_deciding_themselves(conn, clock):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x")
    call(conn, "cb_claim_task_on_fail", name="work", quantity=5)
    fn(conn, "cb_fail_task_on_fail", name="work", run_id=run_id, error_message="h",
       retry_exhausted=False, retry_delay=500)  # fmt: skip
    assert scalar(conn, "SELECT on_fail_visible_at FROM catbird.cb_task_runs WHERE id = %s",
                  (run_id,)) == clock.now + dt.timedelta(milliseconds=500)  # fmt: skip


# ---------- generators, early completion


def spawn(conn, step_run_id: int, items: list[Any], **kw: Any) -> int:
    return fn(conn, "cb_spawn_generator_map_tasks", flow_name="g", step_name="gen",
              id=step_run_id, items=J(items), **kw)  # fmt: skip


def test_a_stale_generator_writes_nothing(conn, clock):
    create_flow(conn, "g", [step("gen", step_type="generator")])
    run_id = run_flow(conn, "g")
    (old,) = claim_steps(conn, "g", "gen")
    assert spawn(conn, old["id"], [1, 2], attempt=1) == 2
    clock.advance(seconds=2)
    (new,) = claim_steps(conn, "g", "gen")
    assert new["attempts"] == 2
    assert spawn(conn, old["id"], [3], attempt=1) == 0
    fn(conn, "cb_complete_generator_step", flow_name="g", step_name="gen", id=old["id"], attempt=1)
    fn(conn, "cb_fail_generator_step", flow_name="g", step_name="gen", id=old["id"],
       error_message="stale", attempt=1)  # fmt: skip
    assert steps_of(conn, "g", run_id)["gen"]["status"] == "started"
    assert [i for _, i, _ in items_of(conn, run_id)] == [1, 2]
    assert (
        fn(conn, "cb_complete_flow_early", flow_name="g", run_id=run_id, step_name="gen",
           output=J("stale"), attempt=1)
        is False
    )  # fmt: skip
    assert flow_run(conn, "g", run_id)["status"] == "started"
    assert (
        fn(conn, "cb_complete_flow_early", flow_name="g", run_id=run_id, step_name="gen",
           output=J("now"), attempt=2)
        is True
    )  # fmt: skip
    assert flow_run(conn, "g", run_id)["output"] == "now"


def test_a_resumed_generator_never_adds_an_item_twice(conn, clock):
    create_flow(conn, "g", [step("gen", step_type="generator")])
    run_id = run_flow(conn, "g")
    (first,) = claim_steps(conn, "g", "gen")
    assert spawn(conn, first["id"], ["a", "b"], attempt=1) == 2
    assert spawn(conn, first["id"], ["c"], attempt=1) == 3 - 2
    clock.advance(seconds=2)  # the generator's worker died
    (second,) = claim_steps(conn, "g", "gen")
    # the resumed generator produces its items again from the start
    assert spawn(conn, second["id"], ["a", "b"], attempt=2) == 2
    assert spawn(conn, second["id"], ["c", "d"], attempt=2) == 2
    assert [i for _, i, _ in items_of(conn, run_id)] == ["a", "b", "c", "d"]
    # an explicit start index works the same
    assert spawn(conn, second["id"], ["c", "d", "e"], start_index=2) == 3
    assert [i for _, i, _ in items_of(conn, run_id)] == ["a", "b", "c", "d", "e"]
    fn(
        conn,
        "cb_complete_generator_step",
        flow_name="g",
        step_name="gen",
        id=second["id"],
        attempt=2,
    )
    items = claim_items(conn, "g", "gen")
    fn(conn, "cb_complete_map_tasks", flow_name="g", step_name="gen", ids=[i["id"] for i in items],
       outputs=[J(i["item"]) for i in items])  # fmt: skip
    run = flow_run(conn, "g", run_id)
    assert (run["status"], run["output"]) == ("completed", ["a", "b", "c", "d", "e"])


def test_complete_early_needs_a_started_step_and_an_existing_run(conn, clock):
    create_flow(conn, "f", [step("a"), step("b", "a")])
    run_id = run_flow(conn, "f")
    args = {"flow_name": "f", "run_id": run_id, "output": J(1)}
    assert fn(conn, "cb_complete_flow_early", step_name="b", **args) is False  # never started
    assert fn(conn, "cb_complete_flow_early", step_name="a", **args) is False  # queued
    assert flow_run(conn, "f", run_id)["status"] == "started"
    assert (
        fn(conn, "cb_complete_flow_early", flow_name="f", run_id=run_id + 99, step_name="a",
           output=J(1))
        is False
    )  # fmt: skip
    claim_steps(conn, "f", "a")
    assert fn(conn, "cb_complete_flow_early", step_name="a", attempt=1, **args) is True


# ---------- queues: receipts, dead letters


def test_receipts_keep_a_lapsed_consumer_off_the_new_delivery(conn, dsn, clock):
    fn(conn, "cb_create_queue", name="q")
    mid = fn(conn, "cb_send", queue="q", body=J(1))
    with psycopg.connect(dsn, autocommit=True) as other:
        Clock(other, clock.now)
        (first,) = read(conn, "q")
        Clock(other, clock.advance(seconds=2))  # the first consumer's window lapsed
        clock.set(clock.now)
        (second,) = read(other, "q")
        assert (first["deliveries"], second["deliveries"]) == (1, 2)
        # the lapsed consumer can neither hide nor ack the message the other holds
        assert fn(conn, "cb_hide", queue="q", id=mid, hide_for=10, delivery=1) is False
        assert fn(conn, "cb_delete", queue="q", id=mid, delivery=1) is False
        assert fn(conn, "cb_hide", queue="q", ids=[mid], hide_for=10, deliveries=[1]) == []
        assert fn(conn, "cb_delete", queue="q", ids=[mid], deliveries=[1]) == []
        assert messages(conn, "q")[0]["visible_at"] == clock.now + SECOND
        assert fn(other, "cb_hide", queue="q", ids=[mid], hide_for=5000, deliveries=[2]) == [mid]
        assert fn(other, "cb_delete", queue="q", id=mid, delivery=2) is True
    assert messages(conn, "q") == []


def test_dead_letters_move_at_read_and_redrive_back(conn, clock):
    fn(conn, "cb_create_queue", name="dlq")
    fn(conn, "cb_create_queue", name="q", max_deliveries=2, dead_letter_queue="dlq")
    (info,) = call(conn, "cb_get_queue", name="q")
    assert (info["max_deliveries"], info["dead_letter_queue"]) == (2, "dlq")
    poison = fn(conn, "cb_send", queue="q", body=J("poison"), headers=J({"h": 1}),
                concurrency_key="k")  # fmt: skip
    for _ in range(2):
        assert [m["id"] for m in read(conn, "q")] == [poison]
        clock.advance(seconds=2)
    good = fn(conn, "cb_send", queue="q", body=J("good"))
    # the third delivery moves the poison message instead, and the read goes on
    assert [m["id"] for m in read(conn, "q", quantity=1)] == [good]
    assert messages(conn, "q")[0]["id"] == good
    (dead,) = read(conn, "dlq")
    assert (dead["id"], dead["body"], dead["headers"]) == (poison, "poison", {"h": 1})
    assert (dead["source_queue"], dead["source_deliveries"], dead["deliveries"]) == ("q", 2, 1)
    assert fn(conn, "cb_redrive", dead_letter_queue="dlq", quantity=5) == 1
    (back,) = [m for m in messages(conn, "q") if m["id"] == poison]
    assert (back["deliveries"], back["source_queue_id"]) == (0, None)
    assert messages(conn, "dlq") == []


def test_without_a_dead_letter_queue_dead_messages_are_deleted(conn, clock):
    fn(conn, "cb_create_queue", name="q", max_deliveries=1)
    fn(conn, "cb_send", queue="q", body=J(1))
    assert len(read(conn, "q")) == 1
    clock.advance(seconds=2)
    assert read(conn, "q") == []
    assert messages(conn, "q") == []


def test_create_queue_again_sets_dead_letter_settings(conn):
    fn(conn, "cb_create_queue", name="q", description="d")
    fn(conn, "cb_create_queue", name="dlq")
    fn(conn, "cb_create_queue", name="q", max_deliveries=3, dead_letter_queue="dlq")
    (info,) = call(conn, "cb_get_queue", name="q")
    assert (info["description"], info["max_deliveries"], info["dead_letter_queue"]) == (
        "d",
        3,
        "dlq",
    )
    fn(conn, "cb_delete_queue", name="dlq")
    (info,) = call(conn, "cb_get_queue", name="q")
    assert info["dead_letter_queue"] is None


# ---------- expired rows hold no key


def test_an_expired_message_does_not_hold_its_key(conn, clock):
    fn(conn, "cb_create_queue", name="q")
    old = fn(conn, "cb_send", queue="q", body=J(1), concurrency_key="k", expires_at=T0 + SECOND)
    assert fn(conn, "cb_send", queue="q", body=J(2), concurrency_key="k") == old  # still live
    clock.advance(seconds=1)
    new = fn(conn, "cb_send", queue="q", body=J(3), concurrency_key="k")
    assert new != old
    assert [m["body"] for m in messages(conn, "q")] == [3]
    fn(conn, "cb_create_queue", name="r")
    fn(conn, "cb_bind", queue="r", pattern="t")
    fn(conn, "cb_send", queue="r", body=J(1), concurrency_key="p", expires_at=clock.now + SECOND)
    clock.advance(seconds=1)
    assert fn(conn, "cb_publish", topic="t", body=J(2), concurrency_key="p") == 1
    assert [m["body"] for m in messages(conn, "r")] == [2]


def test_an_expired_task_run_does_not_hold_its_key(conn, clock):
    fn(conn, "cb_create_task", name="work")
    old = run_task(conn, concurrency_key="k", expires_at=T0 + SECOND)
    clock.advance(seconds=1)
    new = run_task(conn, concurrency_key="k")
    assert new != old
    assert task_run(conn, old)["status"] == "expired"
    assert [c["id"] for c in claim_tasks(conn)] == [new]


def test_an_expired_flow_run_does_not_hold_its_key(conn, clock):
    create_flow(conn, "f", [step("a")])
    old = run_flow(conn, "f", concurrency_key="k", expires_at=T0 + SECOND)
    clock.advance(seconds=1)
    new = run_flow(conn, "f", concurrency_key="k")
    assert new != old
    assert flow_run(conn, "f", old)["status"] == "expired"
    assert [c["flow_run_id"] for c in claim_steps(conn, "f", "a")] == [new]


# ---------- bad arguments


@pytest.mark.parametrize(
    ("function", "args"),
    [
        ("cb_create_task", {"name": "t2", "max_retries": -1}),
        ("cb_create_task", {"name": "t2", "backoff_min": -1}),
        ("cb_create_task", {"name": "t2", "backoff_min": 500, "backoff_max": 100}),
        ("cb_create_task", {"name": "t2", "backoff_max": 50}),
        ("cb_create_flow", {"name": "f2", "steps": J([step("a", max_retries=-1)])}),
        ("cb_create_flow", {"name": "f2", "steps": J([step("a", max_retries=1.5)])}),
        ("cb_create_flow", {"name": "f2", "steps": J([step("a", backoff_min="x")])}),
        ("cb_create_flow", {"name": "f2", "steps": J([step("a", backoff_min=9, backoff_max=1)])}),
        ("cb_fail_task", {"name": "work", "run_id": 1, "error_message": "x", "retryable": None}),
        ("cb_fail_task", {"name": "work", "run_id": 1, "error_message": "x", "max_retries": -1}),
        (
            "cb_fail_step",
            {"flow_name": "f", "step_name": "a", "id": 1, "error_message": "x", "retryable": None},
        ),
        (
            "cb_fail_map_task",
            {"flow_name": "f", "step_name": "m", "id": 1, "error_message": "x", "backoff_min": -5},
        ),
        ("cb_complete_task_on_fail", {"name": "work", "run_id": 1, "on_fail_attempt": 0}),
        (
            "cb_fail_task_on_fail",
            {"name": "work", "run_id": 1, "error_message": "x", "on_fail_attempt": -1},
        ),
        (
            "cb_fail_task_on_fail",
            {"name": "work", "run_id": 1, "error_message": "x", "max_retries": -1},
        ),
        ("cb_complete_flow_on_fail", {"name": "f", "run_id": 1, "on_fail_attempt": 0}),
        (
            "cb_fail_flow_on_fail",
            {"name": "f", "run_id": 1, "error_message": "x", "backoff_min": 10, "backoff_max": 5},
        ),
        (
            "cb_spawn_generator_map_tasks",
            {"flow_name": "f", "step_name": "g", "id": 1, "items": J([1]), "attempt": 0},
        ),
        (
            "cb_spawn_generator_map_tasks",
            {"flow_name": "f", "step_name": "g", "id": 1, "items": J([1]), "start_index": -1},
        ),
        ("cb_complete_generator_step", {"flow_name": "f", "step_name": "g", "id": 1, "attempt": 0}),
        (
            "cb_fail_generator_step",
            {"flow_name": "f", "step_name": "g", "id": 1, "error_message": "x", "attempt": -2},
        ),
        (
            "cb_complete_flow_early",
            {"flow_name": "f", "run_id": 1, "step_name": "a", "output": J(1), "attempt": 0},
        ),
        ("cb_create_queue", {"name": "q2", "max_deliveries": 0}),
        ("cb_create_queue", {"name": "q2", "dead_letter_queue": "q"}),
        ("cb_create_queue", {"name": "q2", "max_deliveries": 1, "dead_letter_queue": "q2"}),
        ("cb_create_queue", {"name": "q2", "max_deliveries": 1, "dead_letter_queue": "No"}),
        ("cb_hide", {"queue": "q", "id": 1, "hide_for": 10, "delivery": 0}),
        ("cb_hide", {"queue": "q", "ids": [1], "hide_for": 10, "deliveries": [1, 2]}),
        ("cb_hide", {"queue": "q", "ids": [1], "hide_for": 10, "deliveries": [None]}),
        ("cb_delete", {"queue": "q", "id": 1, "delivery": -1}),
        ("cb_delete", {"queue": "q", "ids": [1, 2], "deliveries": [1]}),
        ("cb_redrive", {"dead_letter_queue": "q", "quantity": 0}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}" for k in list(v)[-1:]),
)
def test_bad_new_arguments_are_rejected_and_write_nothing(conn, clock, function, args):
    fn(conn, "cb_create_task", name="work")
    run_id = run_task(conn)
    claim_tasks(conn)
    fn(conn, "cb_fail_task", name="work", run_id=run_id, error_message="x")
    call(conn, "cb_claim_task_on_fail", name="work", quantity=1)
    create_flow(conn, "f", [step("a"), step("m", step_type="mapper"),
                            step("g", step_type="generator")])  # fmt: skip
    flow_run_id = run_flow(conn, "f", [1])
    claim_steps(conn, "f", "a")
    claim_steps(conn, "f", "g")
    claim_items(conn, "f", "m")
    fn(conn, "cb_create_queue", name="q")
    fn(conn, "cb_send", queue="q", body=J(1))
    read(conn, "q")
    assert run_id == 1 and flow_run_id == 1
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, function, **args)

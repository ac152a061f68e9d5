"""Flow runs at the SQL level, driven by hand through the worker protocol.

Every test plays the worker itself: it claims a step (``cb_claim_steps``, or
``cb_claim_map_tasks`` for the items of a mapper or generator step), then
reports the outcome with the claim's attempt as fencing token
(``cb_complete_step`` / ``cb_fail_step`` / ``cb_complete_map_tasks`` /
``cb_fail_map_task``). All dispatch happens in SQL:

* a run starts in status ``started``; its root steps are ``queued`` (or
  ``waiting_for_signal``), the others ``waiting_for_dependencies``;
* a step becomes runnable when each dependency is completed or skipped and its
  signal (if declared) has arrived; its condition is evaluated then, and false
  makes it ``skipped`` (dependents then see it as absent: no key in
  ``step_outputs``);
* a mapper step fans out one item per array element and completes with the
  item outputs in item order; a generator's handler adds items while it runs;
  a reducer reads its source's item outputs page by page;
* the flow output is the output of the first step of ``output_priority`` that
  completed; no such step fails the run;
* a step failing for good fails the run and cancels the rest; early completion
  and cancellation stop the run, and late reports from workers are refused.

Time is the engine clock pinned through ``catbird.fake_now``; nothing sleeps
except the real waits of ``cb_wait_*`` (kept well under 300 ms).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from psycopg import errors

from sqlhelpers import HIDE, T0, Clock, J, assert_pages_backwards, call, fn, rejected, scalar, step
from sqlhelpers import claim_steps as claim
from sqlhelpers import complete_step as complete

# --------------------------------------------------------------------------- helpers


def create_flow(conn, name: str, steps: list[dict[str, Any]], **options: Any) -> None:
    fn(conn, "cb_create_flow", name=name, steps=J(steps), **options)


def run_flow(conn, name: str, input: Any, **options: Any) -> int:
    return fn(conn, "cb_run_flow", name=name, input=J(input), **options)  # type: ignore[no-any-return]


def claim_one(conn, flow: str, step_name: str, **options: Any) -> dict[str, Any]:
    rows = claim(conn, flow, step_name, **options)
    assert len(rows) == 1, rows
    return rows[0]


def fail(
    conn, flow: str, step_name: str, claimed: dict[str, Any], error: str, **options: Any
) -> str | None:
    options.setdefault("attempt", claimed["attempts"])
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_fail_step",
        flow_name=flow,
        step_name=step_name,
        id=claimed["id"],
        error_message=error,
        **options,
    )


def run_step(conn, flow: str, step_name: str, output: Any) -> dict[str, Any]:
    """Claim the one queued run of a step and complete it; returns the claim."""
    claimed = claim_one(conn, flow, step_name)
    assert complete(conn, flow, step_name, claimed, output) is True
    return claimed


def claim_items(
    conn, flow: str, step_name: str, quantity: int = 100, hide_for: int = HIDE
) -> list[dict[str, Any]]:
    return call(
        conn,
        "cb_claim_map_tasks",
        flow_name=flow,
        step_name=step_name,
        quantity=quantity,
        hide_for=hide_for,
    )


def complete_items(
    conn,
    flow: str,
    step_name: str,
    items: list[dict[str, Any]],
    outputs: list[Any],
    attempts: list[int] | None = None,
) -> None:
    fn(
        conn,
        "cb_complete_map_tasks",
        flow_name=flow,
        step_name=step_name,
        ids=[i["id"] for i in items],
        outputs=[J(o) for o in outputs],
        attempts=[i["attempts"] for i in items] if attempts is None else attempts,
    )


def fail_item(
    conn, flow: str, step_name: str, claimed: dict[str, Any], error: str, **options: Any
) -> str | None:
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_fail_map_task",
        flow_name=flow,
        step_name=step_name,
        id=claimed["id"],
        error_message=error,
        **options,
    )


def signal_flow(conn, flow: str, run_id: int, step_name: str, input: Any) -> bool:
    return fn(  # type: ignore[no-any-return]
        conn, "cb_signal_flow", flow_name=flow, run_id=run_id, step_name=step_name, input=J(input)
    )


def complete_early(
    conn, flow: str, run_id: int, step_name: str, output: Any, **options: Any
) -> bool:
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_complete_flow_early",
        flow_name=flow,
        run_id=run_id,
        step_name=step_name,
        output=J(output),
        **options,
    )


def fail_on_fail(conn, flow: str, run_id: int, error: str, *, exhausted: bool, delay: int) -> None:
    """Report an on-fail handler's failure (``retry_delay`` in milliseconds)."""
    fn(
        conn,
        "cb_fail_flow_on_fail",
        name=flow,
        run_id=run_id,
        error_message=error,
        retry_exhausted=exhausted,
        retry_delay=delay,
    )


def run_info(conn, flow: str, run_id: int) -> dict[str, Any]:
    rows = call(conn, "cb_get_flow_run", name=flow, run_id=run_id)
    assert len(rows) == 1, rows
    return rows[0]


def steps_of(conn, flow: str, run_id: int) -> dict[str, dict[str, Any]]:
    return {
        s["step_name"]: s
        for s in call(conn, "cb_get_flow_run_steps", flow_name=flow, run_id=run_id)
    }


def statuses(conn, flow: str, run_id: int) -> dict[str, str]:
    return {name: s["status"] for name, s in steps_of(conn, flow, run_id).items()}


def item_statuses(conn, run_id: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT status FROM catbird.cb_map_tasks WHERE flow_run_id = %s ORDER BY idx", (run_id,)
        ).fetchall()
    ]


def wait_output(
    conn, flow: str, run_id: int, poll_for: int = 0, poll_interval: int = 10
) -> list[dict[str, Any]]:
    return call(
        conn,
        "cb_wait_flow_output",
        flow_name=flow,
        run_id=run_id,
        poll_for=poll_for,
        poll_interval=poll_interval,
    )


DIAMOND = [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]


# --------------------------------------------------------------------------- DAG dispatch


def test_a_diamond_runs_each_step_once_its_dependencies_completed(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND)
    run_id = run_flow(conn, "diamond", {"n": 1})

    assert run_info(conn, "diamond", run_id)["status"] == "started"
    assert statuses(conn, "diamond", run_id) == {
        "a": "queued",
        "b": "waiting_for_dependencies",
        "c": "waiting_for_dependencies",
        "d": "waiting_for_dependencies",
    }
    assert claim(conn, "diamond", "b") == []  # not runnable yet

    a = claim_one(conn, "diamond", "a", hide_for=30_000)
    assert a == {
        "id": a["id"],
        "flow_run_id": run_id,
        "attempts": 1,
        "input": {"n": 1},
        "step_outputs": {},
        "signal_input": None,
    }
    started = steps_of(conn, "diamond", run_id)["a"]
    assert (started["status"], started["started_at"], started["visible_at"]) == (
        "started",
        clock.now,
        clock.now + dt.timedelta(seconds=30),
    )

    clock.advance(seconds=1)
    assert complete(conn, "diamond", "a", a, {"a": 1}) is True
    assert statuses(conn, "diamond", run_id) == {
        "a": "completed",
        "b": "queued",
        "c": "queued",
        "d": "waiting_for_dependencies",
    }
    # Independent branches run in parallel, each seeing its dependency's output.
    b = claim_one(conn, "diamond", "b")
    c = claim_one(conn, "diamond", "c")
    assert b["step_outputs"] == c["step_outputs"] == {"a": {"a": 1}}
    assert b["input"] == c["input"] == {"n": 1}

    assert complete(conn, "diamond", "b", b, {"b": 2}) is True
    assert statuses(conn, "diamond", run_id)["d"] == "waiting_for_dependencies"
    assert complete(conn, "diamond", "c", c, {"c": 3}) is True
    assert statuses(conn, "diamond", run_id)["d"] == "queued"

    d = claim_one(conn, "diamond", "d")
    assert d["step_outputs"] == {"b": {"b": 2}, "c": {"c": 3}}  # its dependencies only, not a
    clock.advance(seconds=1)
    assert complete(conn, "diamond", "d", d, {"sum": 5}) is True

    info = run_info(conn, "diamond", run_id)
    assert (info["status"], info["output"], info["completed_at"], info["error_message"]) == (
        "completed",
        {"sum": 5},
        T0 + dt.timedelta(seconds=2),
        None,
    )
    assert wait_output(conn, "diamond", run_id) == [
        {"status": "completed", "output": {"sum": 5}, "error_message": None}
    ]
    assert [s["output"] for s in steps_of(conn, "diamond", run_id).values()] == [
        {"a": 1},
        {"b": 2},
        {"c": 3},
        {"sum": 5},
    ]
    # A completed step cannot be completed again.
    assert complete(conn, "diamond", "d", d, {"again": True}) is False
    assert run_info(conn, "diamond", run_id)["output"] == {"sum": 5}


def test_flow_run_info_has_every_field(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND)
    run_id = run_flow(
        conn,
        "diamond",
        {"n": 1},
        concurrency_key="k1",
        headers=J({"trace": "x"}),
        priority=3,
        expires_at=T0 + dt.timedelta(hours=1),
    )
    assert run_info(conn, "diamond", run_id) == {
        "id": run_id,
        "flow_name": "diamond",
        "status": "started",
        "priority": 3,
        "concurrency_key": "k1",
        "input": {"n": 1},
        "headers": {"trace": "x"},
        "output": None,
        "error_message": None,
        "cancel_reason": None,
        "failed_step_name": None,
        "created_at": clock.now,
        "visible_at": clock.now,
        "expires_at": T0 + dt.timedelta(hours=1),
        "started_at": clock.now,
        "completed_at": None,
        "failed_at": None,
        "cancel_requested_at": None,
        "canceled_at": None,
        "on_fail_status": None,
        "on_fail_attempts": 0,
        "on_fail_error_message": None,
    }
    # The run's priority is its steps' priority.
    assert {s["priority"] for s in steps_of(conn, "diamond", run_id).values()} == {3}
    assert call(conn, "cb_get_flow_run", name="diamond", run_id=run_id + 1000) == []


def test_a_run_input_must_not_be_sql_null_and_headers_must_be_an_object(conn):
    create_flow(conn, "diamond", DIAMOND)
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_run_flow", name="diamond", input=None)
    with rejected(conn, errors.InvalidParameterValue):
        run_flow(conn, "diamond", {}, headers=J([1]))
    # A JSON null is a valid input.
    run_id = run_flow(conn, "diamond", None)
    assert claim_one(conn, "diamond", "a")["input"] is None
    assert run_info(conn, "diamond", run_id)["input"] is None


def test_higher_priority_runs_are_claimed_first(conn):
    create_flow(conn, "solo", [step("a")])
    low = run_flow(conn, "solo", "low")
    high = run_flow(conn, "solo", "high", priority=10)
    assert [c["flow_run_id"] for c in claim(conn, "solo", "a")] == [high, low]


# --------------------------------------------------------------------------- output ownership


def test_the_flow_output_is_the_first_completed_step_of_output_priority(conn):
    create_flow(conn, "branches", [step("fast"), step("slow")])  # default priority: fast, slow
    run_id = run_flow(conn, "branches", {})
    run_step(conn, "branches", "slow", "from slow")
    assert run_info(conn, "branches", run_id)["status"] == "started"  # fast is still to run
    run_step(conn, "branches", "fast", "from fast")
    info = run_info(conn, "branches", run_id)
    # Priority order, not completion order.
    assert (info["status"], info["output"]) == (
        "completed",
        "from fast",
    )


def test_an_explicit_output_priority_picks_the_owner(conn):
    create_flow(conn, "branches", [step("fast"), step("slow")], output_priority=["slow", "fast"])
    run_id = run_flow(conn, "branches", {})
    run_step(conn, "branches", "fast", "from fast")
    run_step(conn, "branches", "slow", "from slow")
    assert run_info(conn, "branches", run_id)["output"] == "from slow"


def test_a_non_terminal_step_may_own_the_output(conn):
    create_flow(conn, "diamond", DIAMOND, output_priority=["a"])
    run_id = run_flow(conn, "diamond", {})
    for name in "abcd":
        run_step(conn, "diamond", name, name.upper())
    assert run_info(conn, "diamond", run_id)["output"] == "A"


def test_a_skipped_first_candidate_falls_through_to_the_next(conn):
    create_flow(conn, "branches", [step("fast", condition="input.use_fast eq true"), step("slow")])
    run_id = run_flow(conn, "branches", {"use_fast": False})
    assert statuses(conn, "branches", run_id) == {"fast": "skipped", "slow": "queued"}
    run_step(conn, "branches", "slow", "from slow")
    info = run_info(conn, "branches", run_id)
    assert (info["status"], info["output"]) == ("completed", "from slow")


def test_no_completed_output_candidate_fails_the_flow(conn):
    clock = Clock(conn)
    create_flow(conn, "maybe", [step("a", condition="input.go")])
    run_id = run_flow(conn, "maybe", {})  # the only step is skipped at creation, without a worker
    info = run_info(conn, "maybe", run_id)
    assert (info["status"], info["failed_at"], info["failed_step_name"], info["output"]) == (
        "failed",
        clock.now,
        None,
        None,
    )
    assert "no output candidate" in info["error_message"]
    [waited] = wait_output(conn, "maybe", run_id)
    assert waited["status"] == "failed" and "no output candidate" in waited["error_message"]
    assert statuses(conn, "maybe", run_id) == {"a": "skipped"}


def test_all_candidates_skipped_after_a_dependency_fails_the_flow(conn):
    create_flow(
        conn,
        "gate",
        [step("a"), step("b", "a", condition="a.ok"), step("c", "a", condition="a.ok")],
    )
    run_id = run_flow(conn, "gate", {})
    run_step(conn, "gate", "a", {"ok": False})
    assert statuses(conn, "gate", run_id) == {"a": "completed", "b": "skipped", "c": "skipped"}
    info = run_info(conn, "gate", run_id)
    assert info["status"] == "failed"
    assert "no output candidate" in info["error_message"] and "b, c" in info["error_message"]


# ----------------------------------------------------------------------- conditions, ignore_output


def test_a_false_condition_skips_the_step_and_its_dependent_sees_it_absent(conn):
    clock = Clock(conn)
    create_flow(
        conn, "cond", [step("a"), step("b", "a", condition='a.kind eq "big"'), step("c", "a", "b")]
    )
    run_id = run_flow(conn, "cond", {})
    clock.advance(seconds=5)
    run_step(conn, "cond", "a", {"kind": "small"})
    b = steps_of(conn, "cond", run_id)["b"]
    assert (b["status"], b["skipped_at"], b["attempts"], b["output"]) == (
        "skipped",
        clock.now,
        0,
        None,
    )
    assert claim(conn, "cond", "b") == []

    c = claim_one(conn, "cond", "c")
    assert c["step_outputs"] == {"a": {"kind": "small"}}  # "b" is absent, not null
    assert "b" not in c["step_outputs"]
    assert complete(conn, "cond", "c", c, "done") is True
    assert run_info(conn, "cond", run_id)["output"] == "done"


def test_a_true_condition_runs_the_step(conn):
    create_flow(
        conn, "cond", [step("a"), step("b", "a", condition='a.kind eq "big"'), step("c", "a", "b")]
    )
    run_id = run_flow(conn, "cond", {})
    run_step(conn, "cond", "a", {"kind": "big"})
    run_step(conn, "cond", "b", "B")
    assert claim_one(conn, "cond", "c")["step_outputs"] == {"a": {"kind": "big"}, "b": "B"}
    assert statuses(conn, "cond", run_id)["b"] == "completed"


def test_root_conditions_are_evaluated_at_run_creation(conn):
    create_flow(
        conn,
        "cond",
        [
            step("a", condition="input.go"),
            step("n", condition="not input.x eq 1"),
            step("b", "a", "n"),
        ],
    )
    run_id = run_flow(conn, "cond", {})
    # a: missing field -> false -> skipped; n: `not` of a false comparison -> true -> queued.
    assert statuses(conn, "cond", run_id) == {
        "a": "skipped",
        "n": "queued",
        "b": "waiting_for_dependencies",
    }
    run_step(conn, "cond", "n", "N")
    assert claim_one(conn, "cond", "b")["step_outputs"] == {"n": "N"}


def test_skips_cascade_through_a_chain_of_conditions(conn):
    create_flow(
        conn,
        "chain",
        [
            step("a", condition="input.go"),
            step("b", "a", condition="a.ok"),
            step("c", "b"),
            step("side"),
        ],
    )
    run_id = run_flow(conn, "chain", {"go": False})
    # b's condition reads a's output, which is absent: false, so b is skipped too, and c runs.
    assert statuses(conn, "chain", run_id) == {
        "a": "skipped",
        "b": "skipped",
        "c": "queued",
        "side": "queued",
    }
    assert claim_one(conn, "chain", "c")["step_outputs"] == {}


def test_ignore_output_keeps_a_dependency_out_of_the_step_input(conn):
    create_flow(
        conn,
        "ign",
        [
            step("a"),
            step("b"),
            step("c", "a", "b", ignore_output=["a"]),
            step("d", "c", ignore_output=["c"]),
        ],
    )
    run_id = run_flow(conn, "ign", {"x": 1})
    run_step(conn, "ign", "a", "A")
    # Still waits for a AND b.
    assert statuses(conn, "ign", run_id)["c"] == "waiting_for_dependencies"
    run_step(conn, "ign", "b", "B")
    c = claim_one(conn, "ign", "c")
    assert c["step_outputs"] == {"b": "B"}
    assert complete(conn, "ign", "c", c, "C") is True
    d = claim_one(conn, "ign", "d")
    assert (d["step_outputs"], d["input"]) == ({}, {"x": 1})


# --------------------------------------------------------------------------- signals


def test_a_signal_step_without_dependencies_waits_for_its_signal(conn):
    create_flow(conn, "approval", [step("approve", signal=True), step("after", "approve")])
    run_id = run_flow(conn, "approval", {"doc": 7})
    assert statuses(conn, "approval", run_id) == {
        "approve": "waiting_for_signal",
        "after": "waiting_for_dependencies",
    }
    assert claim(conn, "approval", "approve") == []

    assert signal_flow(conn, "approval", run_id, "approve", {"approved": True}) is True
    info = steps_of(conn, "approval", run_id)["approve"]
    assert (info["status"], info["signal_input"]) == ("queued", {"approved": True})
    approve = claim_one(conn, "approval", "approve")
    assert (approve["signal_input"], approve["input"], approve["step_outputs"]) == (
        {"approved": True},
        {"doc": 7},
        {},
    )
    assert complete(conn, "approval", "approve", approve, "ok") is True
    after = claim_one(conn, "approval", "after")
    assert after["signal_input"] is None
    assert after["step_outputs"] == {"approve": "ok"}


def test_a_signal_delivered_before_the_dependencies_is_kept_until_they_complete(conn):
    create_flow(conn, "sig", [step("a"), step("b", "a", signal=True)])
    run_id = run_flow(conn, "sig", {})
    assert statuses(conn, "sig", run_id)["b"] == "waiting_for_dependencies"
    assert signal_flow(conn, "sig", run_id, "b", "go") is True
    assert statuses(conn, "sig", run_id)["b"] == "waiting_for_dependencies"
    assert claim(conn, "sig", "b") == []
    run_step(conn, "sig", "a", "A")
    b = claim_one(conn, "sig", "b")
    assert (b["signal_input"], b["step_outputs"]) == ("go", {"a": "A"})


def test_dependencies_completed_before_the_signal_park_the_step_until_it_arrives(conn):
    create_flow(conn, "sig", [step("a"), step("b", "a", signal=True)])
    run_id = run_flow(conn, "sig", {})
    run_step(conn, "sig", "a", "A")
    assert statuses(conn, "sig", run_id)["b"] == "waiting_for_signal"
    assert claim(conn, "sig", "b") == []
    assert signal_flow(conn, "sig", run_id, "b", {"v": 1}) is True
    assert statuses(conn, "sig", run_id)["b"] == "queued"
    assert claim_one(conn, "sig", "b")["signal_input"] == {"v": 1}


@pytest.mark.parametrize(
    ("signal", "expected"), [({"ok": True}, "queued"), ({"ok": False}, "skipped"), ({}, "skipped")]
)
def test_the_signal_input_reaches_the_condition(conn, signal, expected):
    create_flow(
        conn,
        "sig",
        [step("review", signal=True, condition="signal.ok eq true"), step("fallback")],
        output_priority=["review", "fallback"],
    )
    run_id = run_flow(conn, "sig", {})
    assert signal_flow(conn, "sig", run_id, "review", signal) is True
    assert statuses(conn, "sig", run_id)["review"] == expected


def test_signal_flow_returns_false_once_delivered_or_when_the_run_is_terminal(conn):
    create_flow(conn, "sig", [step("a", signal=True), step("b", signal=True)])
    run_id = run_flow(conn, "sig", {})
    assert signal_flow(conn, "sig", run_id, "a", 1) is True
    assert signal_flow(conn, "sig", run_id, "a", 2) is False
    assert steps_of(conn, "sig", run_id)["a"]["signal_input"] == 1  # the first signal stays
    run_step(conn, "sig", "a", "A")
    assert signal_flow(conn, "sig", run_id, "a", 3) is False

    assert fn(conn, "cb_cancel_flow", name="sig", run_id=run_id) is True
    assert run_info(conn, "sig", run_id)["status"] == "canceled"
    assert signal_flow(conn, "sig", run_id, "b", 4) is False
    assert steps_of(conn, "sig", run_id)["b"]["signal_input"] is None


def test_signal_flow_errors(conn):
    create_flow(conn, "sig", [step("a", signal=True), step("plain")])
    run_id = run_flow(conn, "sig", {})
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_signal_flow", flow_name="sig", run_id=run_id + 1000, step_name="a", input=J(1))
    with rejected(conn, errors.UndefinedObject):
        signal_flow(conn, "sig", run_id, "nope", 1)
    with rejected(conn, errors.UndefinedObject):
        signal_flow(conn, "nope", run_id, "a", 1)
    with rejected(conn, errors.InvalidParameterValue) as info:
        signal_flow(conn, "sig", run_id, "plain", 1)
    assert "signal" in str(info.value)


# --------------------------------------------------------------------------- mappers


MAPPED = [step("double", step_type="mapper"), step("total", "double")]


def test_a_mapper_over_the_flow_input_runs_one_item_per_element(conn):
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", [1, 2, 3])
    info = steps_of(conn, "mapped", run_id)["double"]
    assert (info["status"], info["map_total"], info["map_done"]) == ("waiting_for_map_tasks", 3, 0)
    assert claim(conn, "mapped", "double") == []  # a mapper step is not claimed itself

    items = claim_items(conn, "mapped", "double")
    assert [
        (
            i["item"],
            i["attempts"],
            i["flow_run_id"],
            i["input"],
            i["step_outputs"],
            i["signal_input"],
        )
        for i in items
    ] == [(n, 1, run_id, [1, 2, 3], {}, None) for n in (1, 2, 3)]
    assert claim_items(conn, "mapped", "double") == []  # leased

    # Completed in any order, one call at a time: the output keeps item order.
    for item in reversed(items):
        assert statuses(conn, "mapped", run_id)["double"] == "waiting_for_map_tasks"
        complete_items(conn, "mapped", "double", [item], [item["item"] * 2])
    info = steps_of(conn, "mapped", run_id)["double"]
    assert (info["status"], info["output"], info["map_done"]) == ("completed", [2, 4, 6], 3)

    total = claim_one(conn, "mapped", "total")
    assert total["step_outputs"] == {"double": [2, 4, 6]}
    assert complete(conn, "mapped", "total", total, 12) is True
    assert run_info(conn, "mapped", run_id)["output"] == 12


def test_a_mapper_as_the_output_step_gives_its_item_outputs(conn):
    create_flow(conn, "upper", [step("each", step_type="mapper")])
    run_id = run_flow(conn, "upper", ["a", "b"])
    items = claim_items(conn, "upper", "each")
    complete_items(conn, "upper", "each", items, [{"v": "A"}, {"v": "B"}])
    assert run_info(conn, "upper", run_id)["output"] == [{"v": "A"}, {"v": "B"}]
    assert fn(
        conn, "cb_get_flow_step_output", flow_name="upper", run_id=run_id, step_name="each"
    ) == [{"v": "A"}, {"v": "B"}]


def test_a_mapper_over_a_dependency_output(conn):
    create_flow(
        conn,
        "fan",
        [
            step("list"),
            step("conf"),
            step("each", "list", "conf", step_type="mapper", map_source_step_name="list"),
            step("join", "each"),
        ],
    )
    run_id = run_flow(conn, "fan", {"in": True})
    run_step(conn, "fan", "list", ["x", "y"])
    # Conf is a dependency too.
    assert statuses(conn, "fan", run_id)["each"] == "waiting_for_dependencies"
    run_step(conn, "fan", "conf", {"sep": "-"})
    items = claim_items(conn, "fan", "each")
    # Each item carries its element; the mapped array itself is not repeated in step_outputs.
    assert [(i["item"], i["input"], i["step_outputs"]) for i in items] == [
        ("x", {"in": True}, {"conf": {"sep": "-"}}),
        ("y", {"in": True}, {"conf": {"sep": "-"}}),
    ]
    complete_items(conn, "fan", "each", items, ["X", "Y"])
    join = claim_one(conn, "fan", "join")
    assert join["step_outputs"] == {"each": ["X", "Y"]}


def test_a_mapper_over_an_empty_array_completes_at_once(conn):
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", [])
    info = steps_of(conn, "mapped", run_id)["double"]
    assert (info["status"], info["output"], info["map_total"]) == ("completed", [], 0)
    assert claim_items(conn, "mapped", "double") == []
    assert claim_one(conn, "mapped", "total")["step_outputs"] == {"double": []}


def test_mapping_over_a_non_array_flow_input_fails_the_step_and_the_flow(conn):
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", {"not": "an array"})
    steps = steps_of(conn, "mapped", run_id)
    assert (steps["double"]["status"], steps["total"]["status"]) == ("failed", "canceled")
    message = steps["double"]["error_message"]
    assert message == 'mapper step "double" maps over the flow input, which is object, not an array'
    info = run_info(conn, "mapped", run_id)
    assert (info["status"], info["failed_step_name"], info["error_message"]) == (
        "failed",
        "double",
        message,
    )


def test_mapping_over_a_non_array_step_output_fails_the_step_and_the_flow(conn):
    create_flow(
        conn,
        "fan",
        [step("list"), step("each", "list", step_type="mapper", map_source_step_name="list")],
    )
    run_id = run_flow(conn, "fan", {})
    run_step(conn, "fan", "list", "oops")
    info = run_info(conn, "fan", run_id)
    assert (info["status"], info["failed_step_name"]) == ("failed", "each")
    assert (
        info["error_message"]
        == 'mapper step "each" maps over the output of step "list", which is string, not an array'
    )


def test_each_item_retries_independently(conn):
    clock = Clock(conn)
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", [1, 2])
    first, second = claim_items(conn, "mapped", "double")
    assert (
        fail_item(
            conn,
            "mapped",
            "double",
            first,
            "flaky",
            attempt=1,
            max_retries=1,
            backoff_min=1000,
            backoff_max=1000,
        )
        == "queued"
    )
    complete_items(conn, "mapped", "double", [second], [4])
    assert item_statuses(conn, run_id) == ["queued", "completed"]
    assert statuses(conn, "mapped", run_id)["double"] == "waiting_for_map_tasks"

    assert claim_items(conn, "mapped", "double") == []  # its retry is 1 s away
    clock.advance(ms=999)
    assert claim_items(conn, "mapped", "double") == []
    clock.advance(ms=1)
    [retry] = claim_items(conn, "mapped", "double")
    assert (retry["id"], retry["item"], retry["attempts"]) == (first["id"], 1, 2)
    complete_items(conn, "mapped", "double", [retry], [2])
    info = steps_of(conn, "mapped", run_id)["double"]
    assert (info["status"], info["output"]) == ("completed", [2, 4])


def test_an_item_out_of_retries_fails_the_step_and_the_flow(conn):
    clock = Clock(conn)
    create_flow(conn, "mapped", MAPPED, on_fail=True)
    run_id = run_flow(conn, "mapped", [{"n": 1}, {"n": 2}, {"n": 3}])
    items = claim_items(conn, "mapped", "double", quantity=2)
    assert (
        fail_item(
            conn,
            "mapped",
            "double",
            items[0],
            "e1",
            attempt=1,
            max_retries=1,
            backoff_min=0,
            backoff_max=0,
        )
        == "queued"
    )
    [again] = claim_items(conn, "mapped", "double", quantity=1)
    assert again["attempts"] == 2 and again["id"] == items[0]["id"]
    clock.advance(seconds=1)
    assert fail_item(conn, "mapped", "double", again, "e2", attempt=2, max_retries=1) == "failed"

    info = run_info(conn, "mapped", run_id)
    assert (info["status"], info["failed_step_name"], info["error_message"], info["failed_at"]) == (
        "failed",
        "double",
        "item 0 failed: e2",
        clock.now,
    )
    assert statuses(conn, "mapped", run_id) == {"double": "failed", "total": "canceled"}
    # The other started item and the queued one are canceled; a late completion changes nothing.
    assert item_statuses(conn, run_id) == ["failed", "canceled", "canceled"]
    complete_items(conn, "mapped", "double", [items[1]], ["late"])
    assert item_statuses(conn, run_id) == ["failed", "canceled", "canceled"]
    assert claim_items(conn, "mapped", "double") == []
    [failure] = call(conn, "cb_claim_flow_on_fail", name="mapped", quantity=10)
    assert (
        failure["failed_step_name"],
        failure["failed_step_input"],
        failure["failed_step_attempts"],
    ) == ("double", {"n": 1}, 2)


def test_a_signal_mapper_hands_the_signal_to_every_item(conn):
    create_flow(conn, "sigmap", [step("each", step_type="mapper", signal=True)])
    run_id = run_flow(conn, "sigmap", [1, 2])
    assert statuses(conn, "sigmap", run_id) == {"each": "waiting_for_signal"}
    assert claim_items(conn, "sigmap", "each") == []
    assert signal_flow(conn, "sigmap", run_id, "each", {"k": 1}) is True
    items = claim_items(conn, "sigmap", "each")
    assert [(i["item"], i["signal_input"]) for i in items] == [(1, {"k": 1}), (2, {"k": 1})]


def test_a_false_condition_skips_a_mapper_without_items(conn):
    create_flow(
        conn,
        "maybe",
        [step("each", step_type="mapper", condition="input.0 eq 99"), step("after", "each")],
    )
    run_id = run_flow(conn, "maybe", [1, 2])
    assert statuses(conn, "maybe", run_id) == {"each": "skipped", "after": "queued"}
    assert item_statuses(conn, run_id) == []
    assert claim_one(conn, "maybe", "after")["step_outputs"] == {}


def test_a_condition_reads_the_assembled_output_of_a_mapper(conn):
    create_flow(
        conn,
        "check",
        [step("each", step_type="mapper"), step("has_four", "each", condition="each contains 4")],
        output_priority=["has_four", "each"],
    )
    yes = run_flow(conn, "check", [1, 2])
    complete_items(conn, "check", "each", claim_items(conn, "check", "each"), [2, 4])
    no = run_flow(conn, "check", [5])
    complete_items(conn, "check", "each", claim_items(conn, "check", "each"), [10])
    assert statuses(conn, "check", yes)["has_four"] == "queued"
    assert statuses(conn, "check", no)["has_four"] == "skipped"
    assert run_info(conn, "check", no)["output"] == [10]


def test_complete_map_tasks_checks_its_arrays(conn):
    create_flow(conn, "mapped", MAPPED)
    run_flow(conn, "mapped", [1, 2])
    items = claim_items(conn, "mapped", "double")
    with rejected(conn, errors.InvalidParameterValue):
        fn(
            conn,
            "cb_complete_map_tasks",
            flow_name="mapped",
            step_name="double",
            ids=[i["id"] for i in items],
            outputs=[J(1)],
        )
    with rejected(conn, errors.InvalidParameterValue):
        complete_items(conn, "mapped", "double", items, [1, 2], attempts=[1])


# ------------------------------------------------------------------------- batch step completion


def complete_batch(
    conn,
    flow: str,
    step_name: str,
    claims: list[dict[str, Any]],
    outputs: list[Any],
    **options: Any,
) -> list[int]:
    """cb_complete_steps of claims (their attempts, unless ``attempts`` is given)."""
    options.setdefault("attempts", [c["attempts"] for c in claims])
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_complete_steps",
        flow_name=flow,
        step_name=step_name,
        ids=[c["id"] for c in claims],
        outputs=[J(o) for o in outputs],
        **options,
    )


def test_complete_steps_records_a_batch_across_runs_and_advances_each(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND)
    run_ids = [run_flow(conn, "diamond", {"n": n}) for n in range(3)]
    a = claim(conn, "diamond", "a")
    assert sorted(c["flow_run_id"] for c in a) == run_ids
    clock.advance(seconds=1)
    # Given in any order; returns the recorded ids sorted.
    done = complete_batch(conn, "diamond", "a", a[::-1], [{"a": c["flow_run_id"]} for c in a[::-1]])
    assert done == sorted(c["id"] for c in a)
    for run_id in run_ids:
        assert statuses(conn, "diamond", run_id) == {
            "a": "completed",
            "b": "queued",
            "c": "queued",
            "d": "waiting_for_dependencies",
        }
        a_run = steps_of(conn, "diamond", run_id)["a"]
        assert (a_run["output"], a_run["completed_at"]) == ({"a": run_id}, clock.now)
    b = claim(conn, "diamond", "b")
    assert b[0]["step_outputs"] == {"a": {"a": b[0]["flow_run_id"]}}
    assert len(complete_batch(conn, "diamond", "b", b, ["B"] * 3)) == 3
    assert {statuses(conn, "diamond", r)["d"] for r in run_ids} == {"waiting_for_dependencies"}
    c = claim(conn, "diamond", "c")
    assert len(complete_batch(conn, "diamond", "c", c, ["C"] * 3)) == 3
    d = claim(conn, "diamond", "d")
    assert [x["step_outputs"] for x in d] == [{"b": "B", "c": "C"}] * 3
    assert len(complete_batch(conn, "diamond", "d", d, [{"sum": i} for i in range(3)])) == 3
    outputs = {run_info(conn, "diamond", r)["output"]["sum"] for r in run_ids}
    assert outputs == {0, 1, 2}
    assert {run_info(conn, "diamond", r)["status"] for r in run_ids} == {"completed"}
    # Completed steps cannot be completed again.
    assert complete_batch(conn, "diamond", "d", d, ["again"] * 3) == []


def test_complete_steps_leaves_stale_reports_out(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND)
    create_flow(conn, "other", [step("a")])
    run_ids = [run_flow(conn, "diamond", {}) for _ in range(3)]
    other_run = run_flow(conn, "other", {})
    first, second, third = claim(conn, "diamond", "a")
    other = claim_one(conn, "other", "a", hide_for=10 * HIDE)
    # The second's lease lapses and it is claimed again: its first attempt is stale.
    fn(
        conn,
        "cb_hide_steps",
        flow_name="diamond",
        step_name="a",
        ids=[first["id"], third["id"]],
        hide_for=10 * HIDE,
    )
    clock.advance(ms=HIDE + 1)
    [second_again] = claim(conn, "diamond", "a")
    assert second_again["attempts"] == 2
    done = complete_batch(
        conn,
        "diamond",
        "a",
        [first, second, third, other],  # other: a run of another flow
        ["first", "stale", "third", "other"],
        attempts=[1, 1, None, 1],  # None: any attempt
    )
    assert done == sorted([first["id"], third["id"]])
    assert statuses(conn, "diamond", second["flow_run_id"])["a"] == "started"
    assert statuses(conn, "other", other_run) == {"a": "started"}
    assert steps_of(conn, "diamond", third["flow_run_id"])["a"]["output"] == "third"
    # The current claim completes; a step that is not started is left out.
    assert complete_batch(conn, "diamond", "a", [second_again, first], ["second", "x"]) == [
        second_again["id"]
    ]
    assert steps_of(conn, "diamond", run_ids[0])["a"]["output"] == "first"
    assert complete_batch(conn, "diamond", "a", [], []) == []


def test_complete_steps_cancels_the_steps_of_canceling_runs(conn):
    create_flow(conn, "work", [step("a"), step("b", "a")])
    kept, canceled = run_flow(conn, "work", {}), run_flow(conn, "work", {})
    a = claim(conn, "work", "a")
    assert fn(conn, "cb_cancel_flow", name="work", run_id=canceled) is True
    done = complete_batch(conn, "work", "a", a, ["A", "A"])
    assert done == [c["id"] for c in a if c["flow_run_id"] == kept]
    assert statuses(conn, "work", canceled) == {"a": "canceled", "b": "canceled"}
    assert run_info(conn, "work", canceled)["status"] == "canceled"
    assert statuses(conn, "work", kept) == {"a": "completed", "b": "queued"}


def test_complete_steps_advances_conditions_and_signals_like_single_completions(conn):
    # Dependents that may be skipped or park for a signal take the run-by-run way.
    create_flow(
        conn,
        "cond",
        [
            step("a"),
            step("b", "a", condition='a.kind eq "big"'),
            step("s", "a", signal=True),
            step("c", "a", "b"),
        ],
    )
    run_ids = [run_flow(conn, "cond", {}) for _ in range(2)]
    a = sorted(claim(conn, "cond", "a"), key=lambda c: c["flow_run_id"])
    assert len(complete_batch(conn, "cond", "a", a, [{"kind": "small"}, {"kind": "big"}])) == 2
    assert statuses(conn, "cond", run_ids[0]) == {
        "a": "completed",
        "b": "skipped",
        "s": "waiting_for_signal",
        "c": "queued",
    }
    assert statuses(conn, "cond", run_ids[1]) == {
        "a": "completed",
        "b": "queued",
        "s": "waiting_for_signal",
        "c": "waiting_for_dependencies",
    }


def test_complete_steps_fails_a_finished_run_without_an_output_candidate(conn):
    create_flow(
        conn,
        "maybe",
        [step("a"), step("never", condition="input.go")],
        output_priority=["never"],
    )
    run_id = run_flow(conn, "maybe", {})
    assert complete_batch(conn, "maybe", "a", claim(conn, "maybe", "a"), ["A"]) != []
    info = run_info(conn, "maybe", run_id)
    assert info["status"] == "failed" and "no output candidate" in info["error_message"]


def test_complete_steps_rejects_bad_arguments(conn):
    create_flow(conn, "diamond", DIAMOND)
    create_flow(conn, "gen", GENERATED)
    run_flow(conn, "diamond", {})
    run_flow(conn, "gen", {})
    a = claim(conn, "diamond", "a")
    g = claim(conn, "gen", "gen")
    with rejected(conn, errors.InvalidParameterValue):
        complete_batch(conn, "diamond", "a", a, ["A", "too many"])
    with rejected(conn, errors.InvalidParameterValue):
        complete_batch(conn, "diamond", "a", a, ["A"], attempts=[1, 1])
    with rejected(conn, errors.InvalidParameterValue) as info:
        complete_batch(conn, "gen", "gen", g, [1])
    assert "cb_complete_generator_step" in str(info.value)
    with rejected(conn, errors.UndefinedObject):
        complete_batch(conn, "nope", "a", a, ["A"])
    with rejected(conn, errors.UndefinedObject):
        complete_batch(conn, "diamond", "nope", a, ["A"])


# ------------------------------------------------------------------------- generators and reducers


GENERATED = [step("gen", step_type="generator"), step("after", "gen")]


def spawn(
    conn, flow: str, step_name: str, claimed: dict[str, Any], items: Any, **options: Any
) -> int:
    return fn(  # type: ignore[no-any-return]
        conn,
        "cb_spawn_generator_map_tasks",
        flow_name=flow,
        step_name=step_name,
        id=claimed["id"],
        items=J(items),
        **options,
    )


def test_a_generator_feeds_items_while_it_runs_and_completes_after_them(conn):
    create_flow(conn, "gen", GENERATED)
    run_id = run_flow(conn, "gen", {"pages": 2})
    assert statuses(conn, "gen", run_id)["gen"] == "queued"
    gen = claim_one(conn, "gen", "gen")
    assert (gen["input"], gen["attempts"]) == ({"pages": 2}, 1)

    assert spawn(conn, "gen", "gen", gen, [10, 20]) == 2
    first = claim_items(conn, "gen", "gen")  # claimable while the generator still runs
    assert [(i["item"], i["input"]) for i in first] == [(10, {"pages": 2}), (20, {"pages": 2})]
    assert spawn(conn, "gen", "gen", gen, [30]) == 1
    assert spawn(conn, "gen", "gen", gen, []) == 0
    info = steps_of(conn, "gen", run_id)["gen"]
    assert (info["status"], info["map_total"]) == ("started", 3)

    complete_items(conn, "gen", "gen", first, [11, 21])
    assert statuses(conn, "gen", run_id)["gen"] == "started"  # the handler has not finished
    fn(conn, "cb_complete_generator_step", flow_name="gen", step_name="gen", id=gen["id"])
    assert statuses(conn, "gen", run_id)["gen"] == "waiting_for_map_tasks"  # item 30 is outstanding
    [last] = claim_items(conn, "gen", "gen")
    assert last["item"] == 30
    complete_items(conn, "gen", "gen", [last], [31])

    info = steps_of(conn, "gen", run_id)["gen"]
    assert (info["status"], info["output"], info["map_done"]) == ("completed", [11, 21, 31], 3)
    assert claim_one(conn, "gen", "after")["step_outputs"] == {"gen": [11, 21, 31]}


def test_a_generator_whose_items_are_done_completes_when_its_handler_finishes(conn):
    create_flow(conn, "gen", GENERATED)
    run_id = run_flow(conn, "gen", {})
    gen = claim_one(conn, "gen", "gen")
    spawn(conn, "gen", "gen", gen, ["a", "b"])
    complete_items(conn, "gen", "gen", claim_items(conn, "gen", "gen"), ["A", "B"])
    assert statuses(conn, "gen", run_id)["gen"] == "started"
    fn(conn, "cb_complete_generator_step", flow_name="gen", step_name="gen", id=gen["id"])
    assert steps_of(conn, "gen", run_id)["gen"]["output"] == ["A", "B"]
    assert statuses(conn, "gen", run_id) == {"gen": "completed", "after": "queued"}
    # Spawning after the end is refused quietly.
    assert spawn(conn, "gen", "gen", gen, ["c"]) == 0


def test_a_generator_without_items_completes_with_an_empty_array(conn):
    create_flow(conn, "gen", GENERATED)
    run_id = run_flow(conn, "gen", {})
    gen = claim_one(conn, "gen", "gen")
    fn(conn, "cb_complete_generator_step", flow_name="gen", step_name="gen", id=gen["id"])
    assert steps_of(conn, "gen", run_id)["gen"]["output"] == []
    assert claim_one(conn, "gen", "after")["step_outputs"] == {"gen": []}


def test_generator_misuse_is_rejected(conn):
    create_flow(conn, "gen", GENERATED)
    run_flow(conn, "gen", {})
    gen = claim_one(conn, "gen", "gen")
    with rejected(conn, errors.InvalidParameterValue):
        complete(conn, "gen", "gen", gen, "not like this")
    with rejected(conn, errors.InvalidParameterValue):
        spawn(conn, "gen", "gen", gen, {"not": "an array"})
    with rejected(conn, errors.InvalidParameterValue):
        spawn(conn, "gen", "after", gen, [1])  # not a generator


def test_a_failing_generator_fails_the_flow(conn):
    create_flow(conn, "gen", GENERATED)
    run_id = run_flow(conn, "gen", {"src": 1})
    gen = claim_one(conn, "gen", "gen")
    spawn(conn, "gen", "gen", gen, [1, 2])
    fn(
        conn,
        "cb_fail_generator_step",
        flow_name="gen",
        step_name="gen",
        id=gen["id"],
        error_message="source gone",
    )
    info = run_info(conn, "gen", run_id)
    assert (info["status"], info["failed_step_name"], info["error_message"]) == (
        "failed",
        "gen",
        "source gone",
    )
    assert item_statuses(conn, run_id) == ["canceled", "canceled"]
    assert claim_items(conn, "gen", "gen") == []


def read_map_outputs(
    conn, flow: str, run_id: int, step_name: str, after_idx: int, lim: int
) -> list[tuple[int, Any]]:
    rows = call(
        conn,
        "cb_read_map_outputs",
        flow_name=flow,
        run_id=run_id,
        step_name=step_name,
        after_idx=after_idx,
        lim=lim,
    )
    return [(r["idx"], r["output"]) for r in rows]


def test_a_reducer_folds_generator_items_page_by_page(conn):
    create_flow(
        conn,
        "sum",
        [
            step("gen", step_type="generator"),
            step("total", "gen", step_type="reducer", reduce_source_step_name="gen"),
        ],
    )
    run_id = run_flow(conn, "sum", {"n": 5})
    gen = claim_one(conn, "sum", "gen")
    spawn(conn, "sum", "gen", gen, [1, 2])
    spawn(conn, "sum", "gen", gen, [3, 4, 5])
    items = claim_items(conn, "sum", "gen")
    complete_items(conn, "sum", "gen", items, [i["item"] ** 2 for i in items])
    assert statuses(conn, "sum", run_id)["total"] == "waiting_for_dependencies"
    fn(conn, "cb_complete_generator_step", flow_name="sum", step_name="gen", id=gen["id"])

    total = claim_one(conn, "sum", "total")
    assert total["step_outputs"] == {}  # the source's items are read page by page instead
    accumulator, after, pages = 0, -1, []
    while page := read_map_outputs(conn, "sum", total["flow_run_id"], "gen", after, 2):
        pages.append(page)
        for idx, output in page:
            accumulator += output
            after = idx
    assert pages == [[(0, 1), (1, 4)], [(2, 9), (3, 16)], [(4, 25)]]
    assert complete(conn, "sum", "total", total, accumulator) is True
    assert run_info(conn, "sum", run_id)["output"] == 55


def test_a_reducer_of_a_mapper_sees_its_other_dependencies(conn):
    create_flow(
        conn,
        "sum",
        [
            step("conf"),
            step("sq", step_type="mapper"),
            step("total", "conf", "sq", step_type="reducer", reduce_source_step_name="sq"),
        ],
    )
    run_id = run_flow(conn, "sum", [3, 4])
    run_step(conn, "sum", "conf", {"scale": 10})
    items = claim_items(conn, "sum", "sq")
    complete_items(conn, "sum", "sq", items, [9, 16])
    total = claim_one(conn, "sum", "total")
    assert total["step_outputs"] == {"conf": {"scale": 10}}
    assert read_map_outputs(conn, "sum", run_id, "sq", -1, 1000) == [(0, 9), (1, 16)]
    assert read_map_outputs(conn, "sum", run_id, "sq", 0, 1000) == [(1, 16)]
    with rejected(conn, errors.InvalidParameterValue):
        read_map_outputs(conn, "sum", run_id, "sq", -1, 0)


# ------------------------------------------------------------------ early completion, cancellation


def test_early_completion_wins_over_a_slow_sibling(conn):
    clock = Clock(conn)
    create_flow(conn, "race", [step("a"), step("b"), step("c"), step("d", "a")])
    run_id = run_flow(conn, "race", {})
    a = claim_one(conn, "race", "a")
    b = claim_one(conn, "race", "b")  # the slow sibling, still started
    clock.advance(seconds=3)
    assert complete_early(conn, "race", run_id, "a", {"answer": 42}, reason="found it") is True

    info = run_info(conn, "race", run_id)
    assert (info["status"], info["output"], info["completed_at"], info["cancel_reason"]) == (
        "completed",
        {"answer": 42},
        clock.now,
        "found it",
    )
    assert statuses(conn, "race", run_id) == {
        "a": "completed",
        "b": "canceled",
        "c": "canceled",
        "d": "canceled",
    }
    assert steps_of(conn, "race", run_id)["a"]["output"] == {"answer": 42}
    # The sibling's late report is refused, and queued work is gone.
    assert complete(conn, "race", "b", b, "late") is False
    assert fail(conn, "race", "b", b, "late") is None
    assert claim(conn, "race", "c") == []
    assert complete(conn, "race", "a", a, "normal output") is False
    assert complete_early(conn, "race", run_id, "b", 0) is False
    assert run_info(conn, "race", run_id)["output"] == {"answer": 42}
    assert wait_output(conn, "race", run_id) == [
        {"status": "completed", "output": {"answer": 42}, "error_message": None}
    ]


def test_early_completion_cancels_mapper_items(conn):
    create_flow(conn, "race", [step("a"), step("m", step_type="mapper")])
    run_id = run_flow(conn, "race", [1, 2, 3])
    items = claim_items(conn, "race", "m", quantity=1)
    claim_one(conn, "race", "a")  # only a started step completes a flow early (SPEC 7.1)
    assert complete_early(conn, "race", run_id, "a", "early") is True
    assert run_info(conn, "race", run_id)["cancel_reason"] == 'completed early by step "a"'
    assert item_statuses(conn, run_id) == ["canceled", "canceled", "canceled"]
    complete_items(conn, "race", "m", items, ["late"])
    assert item_statuses(conn, run_id) == ["canceled", "canceled", "canceled"]
    assert claim_items(conn, "race", "m") == []


def test_early_completion_errors(conn):
    create_flow(conn, "race", [step("a")])
    run_id = run_flow(conn, "race", {})
    # SPEC 7.1: a run that does not exist is not an error, just false
    assert complete_early(conn, "race", run_id + 1000, "a", 1) is False
    with rejected(conn, errors.UndefinedObject):
        complete_early(conn, "race", run_id, "zz", 1)


def test_cancel_drains_started_work_then_cancels(conn):
    clock = Clock(conn)
    create_flow(conn, "work", [step("a"), step("b"), step("c", "a"), step("s", signal=True)])
    run_id = run_flow(conn, "work", {})
    a = claim_one(conn, "work", "a")
    clock.advance(seconds=1)
    assert fn(conn, "cb_cancel_flow", name="work", run_id=run_id, reason="user asked") is True

    info = run_info(conn, "work", run_id)
    assert (
        info["status"],
        info["cancel_requested_at"],
        info["cancel_reason"],
        info["canceled_at"],
    ) == ("canceling", clock.now, "user asked", None)
    # Queued and waiting work is canceled at once; the started step keeps running.
    assert statuses(conn, "work", run_id) == {
        "a": "started",
        "b": "canceled",
        "c": "canceled",
        "s": "canceled",
    }
    assert claim(conn, "work", "b") == []
    assert fn(conn, "cb_cancel_flow", name="work", run_id=run_id) is True  # idempotent
    assert wait_output(conn, "work", run_id) == []  # not terminal yet

    clock.advance(seconds=1)
    assert complete(conn, "work", "a", a, "too late") is False
    info = run_info(conn, "work", run_id)
    assert (info["status"], info["canceled_at"], info["output"]) == ("canceled", clock.now, None)
    assert statuses(conn, "work", run_id)["a"] == "canceled"
    assert fn(conn, "cb_cancel_flow", name="work", run_id=run_id) is True
    assert wait_output(conn, "work", run_id) == [
        {"status": "canceled", "output": None, "error_message": None}
    ]


def test_a_failure_reported_while_canceling_also_finishes_the_cancel(conn):
    create_flow(conn, "work", [step("a"), step("b")])
    run_id = run_flow(conn, "work", {})
    a = claim_one(conn, "work", "a")
    b = claim_one(conn, "work", "b")
    assert fn(conn, "cb_cancel_flow", name="work", run_id=run_id) is True
    assert fail(conn, "work", "a", a, "interrupted", max_retries=5) is None
    assert run_info(conn, "work", run_id)["status"] == "canceling"  # b is still out
    assert complete(conn, "work", "b", b, "B") is False
    assert run_info(conn, "work", run_id)["status"] == "canceled"


def test_cancel_waits_for_started_map_items(conn):
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", [1, 2, 3])
    items = claim_items(conn, "mapped", "double", quantity=2)
    assert fn(conn, "cb_cancel_flow", name="mapped", run_id=run_id) is True
    assert run_info(conn, "mapped", run_id)["status"] == "canceling"
    assert item_statuses(conn, run_id) == ["started", "started", "canceled"]
    complete_items(conn, "mapped", "double", items[:1], [2])
    assert run_info(conn, "mapped", run_id)["status"] == "canceling"
    assert fail_item(conn, "mapped", "double", items[1], "x", attempt=1) is None
    assert run_info(conn, "mapped", run_id)["status"] == "canceled"
    assert item_statuses(conn, run_id) == ["canceled", "canceled", "canceled"]


def test_cancel_while_a_generator_runs(conn):
    create_flow(conn, "gen", GENERATED)
    run_id = run_flow(conn, "gen", {})
    gen = claim_one(conn, "gen", "gen")
    spawn(conn, "gen", "gen", gen, [1, 2])
    [item] = claim_items(conn, "gen", "gen", quantity=1)
    assert fn(conn, "cb_cancel_flow", name="gen", run_id=run_id) is True
    assert item_statuses(conn, run_id) == ["started", "canceled"]
    assert spawn(conn, "gen", "gen", gen, [3]) == 0  # no new items for a canceling run
    fn(conn, "cb_complete_generator_step", flow_name="gen", step_name="gen", id=gen["id"])
    assert run_info(conn, "gen", run_id)["status"] == "canceling"  # the item is still out
    complete_items(conn, "gen", "gen", [item], ["late"])
    assert run_info(conn, "gen", run_id)["status"] == "canceled"
    assert statuses(conn, "gen", run_id) == {"gen": "canceled", "after": "canceled"}


def test_cancel_with_nothing_started_cancels_at_once(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND)
    run_id = run_flow(conn, "diamond", {})
    assert fn(conn, "cb_cancel_flow", name="diamond", run_id=run_id) is True
    info = run_info(conn, "diamond", run_id)
    assert (info["status"], info["canceled_at"], info["cancel_requested_at"]) == (
        "canceled",
        clock.now,
        clock.now,
    )
    assert set(statuses(conn, "diamond", run_id).values()) == {"canceled"}
    assert claim(conn, "diamond", "a") == []
    assert fn(conn, "cb_cancel_flow", name="diamond", run_id=run_id, reason="again") is True


def test_cancel_returns_false_for_a_finished_or_missing_run(conn):
    create_flow(conn, "solo", [step("a")])
    run_id = run_flow(conn, "solo", {})
    run_step(conn, "solo", "a", "A")
    assert fn(conn, "cb_cancel_flow", name="solo", run_id=run_id) is False
    assert run_info(conn, "solo", run_id)["status"] == "completed"
    assert fn(conn, "cb_cancel_flow", name="solo", run_id=run_id + 1000) is False
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_cancel_flow", name="nope", run_id=run_id)


# ---------------------------------------------------------------------- failures, retries, on-fail


def test_a_step_that_fails_after_its_retries_fails_the_flow(conn):
    clock = Clock(conn)
    create_flow(conn, "work", [step("a"), step("b"), step("c", "a")])
    run_id = run_flow(conn, "work", {"job": 1})
    b = claim_one(conn, "work", "b")
    a = claim_one(conn, "work", "a")
    policy = {"max_retries": 2, "backoff_min": 1000, "backoff_max": 1000}
    assert fail(conn, "work", "a", a, "boom 1", **policy) == "queued"
    info = steps_of(conn, "work", run_id)["a"]
    assert (info["status"], info["error_message"], info["visible_at"]) == (
        "queued",
        "boom 1",
        clock.now + dt.timedelta(seconds=1),
    )
    assert claim(conn, "work", "a") == []
    clock.advance(seconds=1)
    a = claim_one(conn, "work", "a")
    assert a["attempts"] == 2
    assert fail(conn, "work", "a", a, "boom 2", **policy) == "queued"
    clock.advance(seconds=1)
    a = claim_one(conn, "work", "a")
    assert a["attempts"] == 3
    assert run_info(conn, "work", run_id)["status"] == "started"
    assert fail(conn, "work", "a", a, "boom 3", **policy) == "failed"

    info = run_info(conn, "work", run_id)
    assert (
        info["status"],
        info["failed_step_name"],
        info["error_message"],
        info["failed_at"],
        info["on_fail_status"],
    ) == ("failed", "a", "boom 3", clock.now, "queued")  # SPEC 7.1: on-fail for every failure
    assert statuses(conn, "work", run_id) == {"a": "failed", "b": "canceled", "c": "canceled"}
    assert complete(conn, "work", "b", b, "late") is False
    assert wait_output(conn, "work", run_id) == [
        {"status": "failed", "output": None, "error_message": "boom 3"}
    ]
    # Without on_fail too, the failure can be handled (SPEC 7.1: Go/psql never pass on_fail).
    assert [c["id"] for c in call(conn, "cb_claim_flow_on_fail", name="work", quantity=10)] == [
        run_id
    ]


def test_the_failure_context_reaches_the_on_fail_handler(conn):
    clock = Clock(conn)
    create_flow(
        conn,
        "pay",
        [step("charge"), step("confirm", "charge", signal=True), step("tidy")],
        on_fail=True,
    )
    run_id = run_flow(conn, "pay", {"order": 7}, concurrency_key="order-7")
    run_step(conn, "pay", "charge", {"charged": 100})
    assert signal_flow(conn, "pay", run_id, "confirm", {"by": "alice"})
    confirm = claim_one(conn, "pay", "confirm")
    assert (
        fail(
            conn,
            "pay",
            "confirm",
            confirm,
            "declined 1",
            max_retries=1,
            backoff_min=0,
            backoff_max=0,
        )
        == "queued"
    )
    confirm = claim_one(conn, "pay", "confirm")
    clock.advance(seconds=2)
    assert fail(conn, "pay", "confirm", confirm, "declined 2", max_retries=1) == "failed"
    assert run_info(conn, "pay", run_id)["on_fail_status"] == "queued"

    [failure] = call(conn, "cb_claim_flow_on_fail", name="pay", quantity=10, hide_for=30_000)
    assert failure == {
        "id": run_id,
        "input": {"order": 7},
        "error_message": "declined 2",
        "on_fail_attempts": 1,
        "started_at": T0,
        "failed_at": clock.now,
        "concurrency_key": "order-7",
        "failed_step_name": "confirm",
        "failed_step_input": {"order": 7},
        "failed_step_signal_input": {"by": "alice"},
        "failed_step_attempts": 2,
    }
    # Completed step outputs are available by name; others are null.
    assert fn(
        conn, "cb_get_flow_step_output", flow_name="pay", run_id=run_id, step_name="charge"
    ) == {"charged": 100}
    assert (
        fn(conn, "cb_get_flow_step_output", flow_name="pay", run_id=run_id, step_name="confirm")
        is None
    )
    assert (
        fn(conn, "cb_get_flow_step_output", flow_name="pay", run_id=run_id, step_name="tidy")
        is None
    )
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_get_flow_step_output", flow_name="pay", run_id=run_id, step_name="nope")

    # Leased to the handler.
    assert call(conn, "cb_claim_flow_on_fail", name="pay", quantity=10) == []
    fail_on_fail(conn, "pay", run_id, "mailer down", exhausted=False, delay=5000)
    info = run_info(conn, "pay", run_id)
    assert (info["on_fail_status"], info["on_fail_error_message"], info["on_fail_attempts"]) == (
        "queued",
        "mailer down",
        1,
    )
    clock.advance(ms=4999)
    assert call(conn, "cb_claim_flow_on_fail", name="pay", quantity=10) == []
    clock.advance(ms=1)
    [again] = call(conn, "cb_claim_flow_on_fail", name="pay", quantity=10)
    assert again["on_fail_attempts"] == 2
    fn(conn, "cb_complete_flow_on_fail", name="pay", run_id=run_id)
    info = run_info(conn, "pay", run_id)
    assert (info["status"], info["on_fail_status"], info["on_fail_error_message"]) == (
        "failed",
        "completed",
        None,
    )
    assert call(conn, "cb_claim_flow_on_fail", name="pay", quantity=10) == []


def test_an_on_fail_handler_out_of_retries_stays_failed_and_a_lapsed_lease_is_reclaimed(conn):
    clock = Clock(conn)
    create_flow(conn, "pay", [step("a")], on_fail=True)
    run_id = run_flow(conn, "pay", {})
    assert fail(conn, "pay", "a", claim_one(conn, "pay", "a"), "boom") == "failed"
    [first] = call(conn, "cb_claim_flow_on_fail", name="pay", quantity=1, hide_for=1000)
    clock.advance(seconds=1)
    # The handler died.
    [second] = call(conn, "cb_claim_flow_on_fail", name="pay", quantity=1, hide_for=1000)
    assert (first["on_fail_attempts"], second["on_fail_attempts"]) == (1, 2)
    fail_on_fail(conn, "pay", run_id, "still down", exhausted=True, delay=0)
    info = run_info(conn, "pay", run_id)
    assert (info["on_fail_status"], info["on_fail_error_message"]) == ("failed", "still down")
    clock.advance(seconds=10)
    assert call(conn, "cb_claim_flow_on_fail", name="pay", quantity=1) == []
    # Reports about an on-fail run that is not started change nothing.
    fn(conn, "cb_complete_flow_on_fail", name="pay", run_id=run_id)
    assert run_info(conn, "pay", run_id)["on_fail_status"] == "failed"


def test_fail_step_checks_its_retry_policy(conn):
    create_flow(conn, "solo", [step("a")])
    run_flow(conn, "solo", {})
    a = claim_one(conn, "solo", "a")
    for policy in (
        {"max_retries": -1},
        {"backoff_min": -1},
        {"backoff_min": 500, "backoff_max": 100},
    ):
        with rejected(conn, errors.InvalidParameterValue):
            fail(conn, "solo", "a", a, "x", **policy)


# --------------------------------------------------------------------------- fencing and leases


def test_a_stale_worker_cannot_overwrite_the_newer_claim(conn):
    clock = Clock(conn)
    create_flow(conn, "solo", [step("a")])
    run_id = run_flow(conn, "solo", {})
    stale = claim_one(conn, "solo", "a", hide_for=1000)
    assert claim(conn, "solo", "a") == []  # leased
    clock.advance(seconds=1)
    fresh = claim_one(conn, "solo", "a", hide_for=1000)  # the lease lapsed: claimed again
    assert (stale["id"], stale["attempts"], fresh["attempts"]) == (fresh["id"], 1, 2)

    assert complete(conn, "solo", "a", stale, "stale output") is False
    assert fail(conn, "solo", "a", stale, "stale error") is None
    info = steps_of(conn, "solo", run_id)["a"]
    assert (info["status"], info["attempts"], info["error_message"]) == ("started", 2, None)
    assert run_info(conn, "solo", run_id)["status"] == "started"

    assert complete(conn, "solo", "a", fresh, "fresh output") is True
    assert run_info(conn, "solo", run_id)["output"] == "fresh output"
    assert fail(conn, "solo", "a", fresh, "too late") is None


def test_a_stale_item_worker_cannot_overwrite_the_newer_claim(conn):
    clock = Clock(conn)
    create_flow(conn, "mapped", MAPPED)
    run_id = run_flow(conn, "mapped", [1])
    [stale] = claim_items(conn, "mapped", "double", hide_for=1000)
    clock.advance(seconds=1)
    [fresh] = claim_items(conn, "mapped", "double", hide_for=1000)
    assert fresh["attempts"] == 2
    complete_items(conn, "mapped", "double", [stale], ["stale"])
    assert fail_item(conn, "mapped", "double", stale, "x", attempt=1) is None
    assert item_statuses(conn, run_id) == ["started"]
    complete_items(conn, "mapped", "double", [fresh], ["fresh"])
    assert steps_of(conn, "mapped", run_id)["double"]["output"] == ["fresh"]


def test_hiding_steps_and_items_renews_their_lease(conn):
    clock = Clock(conn)
    create_flow(conn, "both", [step("a"), step("m", step_type="mapper")])
    run_flow(conn, "both", [1])
    a = claim_one(conn, "both", "a", hide_for=1000)
    [item] = claim_items(conn, "both", "m", hide_for=1000)
    fn(conn, "cb_hide_steps", flow_name="both", step_name="a", ids=[a["id"]], hide_for=60_000)
    fn(
        conn,
        "cb_hide_map_tasks",
        flow_name="both",
        step_name="m",
        ids=[item["id"]],
        hide_for=60_000,
    )
    clock.advance(seconds=30)
    assert claim(conn, "both", "a") == []
    assert claim_items(conn, "both", "m") == []
    clock.advance(seconds=30)
    assert claim_one(conn, "both", "a")["attempts"] == 2
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_hide_steps", flow_name="both", step_name="a", ids=[a["id"]], hide_for=0)


@pytest.mark.parametrize(("quantity", "hide_for"), [(0, 1000), (1, 0)])
def test_claims_check_quantity_and_hide_for(conn, quantity, hide_for):
    create_flow(conn, "both", [step("a"), step("m", step_type="mapper")])
    run_flow(conn, "both", [1])
    with rejected(conn, errors.InvalidParameterValue):
        claim(conn, "both", "a", quantity=quantity, hide_for=hide_for)
    with rejected(conn, errors.InvalidParameterValue):
        claim_items(conn, "both", "m", quantity=quantity, hide_for=hide_for)


UNKNOWN_STEP_CALLS = [
    ("cb_claim_steps", {"quantity": 1, "hide_for": 1000}),
    ("cb_hide_steps", {"ids": [1], "hide_for": 1000}),
    ("cb_complete_step", {"id": 1, "output": J(1)}),
    ("cb_fail_step", {"id": 1, "error_message": "x"}),
    ("cb_claim_map_tasks", {"quantity": 1, "hide_for": 1000}),
    ("cb_hide_map_tasks", {"ids": [1], "hide_for": 1000}),
    ("cb_complete_map_tasks", {"ids": [1], "outputs": [J(1)]}),
    ("cb_fail_map_task", {"id": 1, "error_message": "x"}),
    ("cb_spawn_generator_map_tasks", {"id": 1, "items": J([1])}),
    ("cb_complete_generator_step", {"id": 1}),
    ("cb_fail_generator_step", {"id": 1, "error_message": "x"}),
    ("cb_complete_flow_early", {"run_id": 0, "output": J(1)}),
    ("cb_signal_flow", {"run_id": 0, "input": J(1)}),
    ("cb_read_map_outputs", {"run_id": 0}),
    ("cb_get_flow_step_output", {"run_id": 0}),
    ("cb_get_flow_step_status", {"run_id": 0}),
    ("cb_wait_flow_step_output", {"run_id": 0, "poll_for": 0}),
]


@pytest.mark.parametrize(
    ("function", "args"), UNKNOWN_STEP_CALLS, ids=[c[0] for c in UNKNOWN_STEP_CALLS]
)
def test_an_unknown_step_is_42704_everywhere(conn, function, args):
    # SPEC, Precise rules: "unknown queue, task, flow, step or schedule target -> SQLSTATE 42704".
    create_flow(conn, "solo", [step("a")])
    run_id = run_flow(conn, "solo", {})
    if "run_id" in args:
        args = {**args, "run_id": run_id}
    with rejected(conn, errors.UndefinedObject):
        call(conn, function, flow_name="solo", step_name="nope", **args)


# --------------------------------------------------------------------------- starting runs


def test_a_concurrency_key_deduplicates_active_runs(conn):
    create_flow(conn, "solo", [step("a")])
    first = run_flow(conn, "solo", {"v": 1}, concurrency_key="k")
    assert run_flow(conn, "solo", {"v": 2}, concurrency_key="k") == first
    other = run_flow(conn, "solo", {"v": 3}, concurrency_key="other")
    assert other != first
    assert [r["id"] for r in call(conn, "cb_list_flow_runs", name="solo")] == [other, first]
    assert run_info(conn, "solo", first)["input"] == {"v": 1}

    [a1, a2] = claim(conn, "solo", "a")
    for claimed in (a1, a2):
        assert complete(conn, "solo", "a", claimed, "done") is True
    # Once the run finished, the key is free again.
    again = run_flow(conn, "solo", {"v": 4}, concurrency_key="k")
    assert again not in (first, other)


def test_run_flow_in_batches(conn):
    create_flow(conn, "solo", [step("a")])
    held = run_flow(conn, "solo", 0, concurrency_key="held")
    ids = fn(
        conn,
        "cb_run_flow",
        name="solo",
        inputs=[J(1), J(2), J(3), J(4)],
        concurrency_keys=["x", "x", None, "held"],
    )
    assert ids[0] == ids[1] and ids[3] == held
    assert len({ids[0], ids[2], held}) == 3
    assert sorted(c["input"] for c in claim(conn, "solo", "a")) == [0, 1, 3]
    assert fn(conn, "cb_run_flow", name="solo", inputs=[]) == []


def test_visible_at_delays_the_root_steps(conn):
    clock = Clock(conn)
    create_flow(conn, "later", [step("a"), step("b", "a")])
    run_id = run_flow(conn, "later", {}, visible_at=T0 + dt.timedelta(minutes=1))
    assert run_info(conn, "later", run_id)["visible_at"] == T0 + dt.timedelta(minutes=1)
    assert statuses(conn, "later", run_id)["a"] == "queued"
    assert claim(conn, "later", "a") == []
    clock.advance(seconds=59)
    assert claim(conn, "later", "a") == []
    clock.advance(seconds=1)
    a = claim_one(conn, "later", "a")
    assert complete(conn, "later", "a", a, 1) is True
    # Dependents are not delayed further.
    assert claim_one(conn, "later", "b")["step_outputs"] == {"a": 1}


def test_publishing_to_a_bound_topic_starts_a_flow_run(conn):
    create_flow(conn, "orders", [step("handle")])
    fn(conn, "cb_create_queue", name="audit")
    fn(conn, "cb_bind_flow", name="orders", pattern="orders.*")
    fn(conn, "cb_bind", queue="audit", pattern="orders.#")
    # A queue and a flow.
    assert fn(conn, "cb_publish", topic="orders.created", body=J({"id": 1})) == 2
    [run] = call(conn, "cb_list_flow_runs", name="orders")
    assert (run["status"], run["input"]) == ("started", {"id": 1})
    assert claim_one(conn, "orders", "handle")["input"] == {"id": 1}

    assert fn(conn, "cb_publish", topic="orders.created", bodies=[J({"id": 2}), J({"id": 3})]) == 4
    assert len(call(conn, "cb_list_flow_runs", name="orders")) == 3
    assert fn(conn, "cb_unbind_flow", name="orders", pattern="orders.*") is True
    assert fn(conn, "cb_unbind_flow", name="orders", pattern="orders.*") is False
    assert fn(conn, "cb_publish", topic="orders.created", body=J({"id": 4})) == 1  # the queue only
    assert len(call(conn, "cb_list_flow_runs", name="orders")) == 3


def test_bind_flow_validates(conn):
    create_flow(conn, "orders", [step("handle")])
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_bind_flow", name="orders", pattern="bad..pattern")
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_bind_flow", name="nope", pattern="a.b")
    with rejected(conn, errors.UndefinedObject):
        fn(conn, "cb_unbind_flow", name="nope", pattern="a.b")


# ----------------------------------------------------------------------- waiting and introspection


def test_wait_flow_output_returns_nothing_until_the_run_is_terminal(conn):
    create_flow(conn, "solo", [step("a")])
    run_id = run_flow(conn, "solo", {})
    # A real, short wait.
    assert wait_output(conn, "solo", run_id, poll_for=100, poll_interval=20) == []
    assert wait_output(conn, "solo", run_id + 1000, poll_for=100) == []  # no such run: at once
    run_step(conn, "solo", "a", [1, 2])
    assert wait_output(conn, "solo", run_id, poll_for=100) == [
        {"status": "completed", "output": [1, 2], "error_message": None}
    ]
    with rejected(conn, errors.InvalidParameterValue):
        wait_output(conn, "solo", run_id, poll_for=-1)
    with rejected(conn, errors.InvalidParameterValue):
        wait_output(conn, "solo", run_id, poll_interval=0)
    with rejected(conn, errors.UndefinedObject):
        wait_output(conn, "nope", run_id)


def test_wait_flow_step_output_and_step_status(conn):
    create_flow(conn, "cond", [step("a"), step("b", "a", condition="a.go"), step("c", "a")])
    run_id = run_flow(conn, "cond", {})

    def wait_step(name: str, poll_for: int = 0) -> list[dict[str, Any]]:
        return call(
            conn,
            "cb_wait_flow_step_output",
            flow_name="cond",
            run_id=run_id,
            step_name=name,
            poll_for=poll_for,
            poll_interval=10,
        )

    assert wait_step("a", poll_for=60) == []
    run_step(conn, "cond", "a", {"go": False})
    assert wait_step("a") == [
        {"status": "completed", "output": {"go": False}, "error_message": None}
    ]
    assert wait_step("b") == [{"status": "skipped", "output": None, "error_message": None}]
    assert wait_step("c", poll_for=30) == []
    c = claim_one(conn, "cond", "c")
    assert fail(conn, "cond", "c", c, "bad") == "failed"
    assert wait_step("c") == [{"status": "failed", "output": None, "error_message": "bad"}]
    assert (
        call(
            conn,
            "cb_wait_flow_step_output",
            flow_name="cond",
            run_id=run_id + 1000,
            step_name="a",
            poll_for=0,
        )
        == []
    )
    with rejected(conn, errors.UndefinedObject):
        wait_step("zz")


def test_get_flow_step_status_reports_one_step(conn):
    clock = Clock(conn)
    create_flow(conn, "sig", [step("a", signal=True)])
    run_id = run_flow(conn, "sig", {})
    [before] = call(conn, "cb_get_flow_step_status", flow_name="sig", run_id=run_id, step_name="a")
    assert before == {
        "id": before["id"],
        "flow_run_id": run_id,
        "step_name": "a",
        "status": "waiting_for_signal",
        "priority": 0,
        "attempts": 0,
        "output": None,
        "error_message": None,
        "signal_input": None,
        "map_total": None,
        "map_done": 0,
        "created_at": T0,
        "visible_at": T0,
        "started_at": None,
        "completed_at": None,
        "failed_at": None,
        "skipped_at": None,
        "canceled_at": None,
        "error_detail": None,
    }
    signal_flow(conn, "sig", run_id, "a", "yes")
    clock.advance(seconds=1)
    run_step(conn, "sig", "a", "A")
    [after] = call(conn, "cb_get_flow_step_status", flow_name="sig", run_id=run_id, step_name="a")
    assert (
        after["status"],
        after["attempts"],
        after["output"],
        after["signal_input"],
        after["started_at"],
        after["completed_at"],
    ) == ("completed", 1, "A", "yes", clock.now, clock.now)
    assert (
        call(conn, "cb_get_flow_step_status", flow_name="sig", run_id=run_id + 1000, step_name="a")
        == []
    )
    with rejected(conn, errors.UndefinedObject):
        call(conn, "cb_get_flow_step_status", flow_name="sig", run_id=run_id, step_name="zz")


def test_get_flow_run_steps_lists_steps_in_definition_order(conn):
    create_flow(conn, "order", [step("z"), step("m", "z"), step("a", "m")])
    run_id = run_flow(conn, "order", {})
    assert [
        s["step_name"]
        for s in call(conn, "cb_get_flow_run_steps", flow_name="order", run_id=run_id)
    ] == ["z", "m", "a"]
    assert call(conn, "cb_get_flow_run_steps", flow_name="order", run_id=run_id + 1000) == []


def test_list_flow_runs_pages_newest_first(conn):
    create_flow(conn, "solo", [step("a")])
    create_flow(conn, "other", [step("a")])
    ids = [run_flow(conn, "solo", {"i": i}) for i in range(5)]
    run_flow(conn, "other", {})

    assert_pages_backwards(conn, "cb_list_flow_runs", "solo", ids)


def test_purge_flow_runs_removes_old_terminal_runs_with_their_steps(conn):
    clock = Clock(conn)
    create_flow(conn, "mapped", MAPPED)
    done = run_flow(conn, "mapped", [1])
    complete_items(conn, "mapped", "double", claim_items(conn, "mapped", "double"), [2])
    run_step(conn, "mapped", "total", 2)
    failed = run_flow(conn, "mapped", {"not": "array"})
    active = run_flow(conn, "mapped", [1, 2])
    clock.advance(seconds=7200)
    recent = run_flow(conn, "mapped", [])
    run_step(conn, "mapped", "total", 0)
    assert {r["id"]: r["status"] for r in call(conn, "cb_list_flow_runs", name="mapped")} == {
        done: "completed",
        failed: "failed",
        active: "started",
        recent: "completed",
    }

    assert fn(conn, "cb_purge_flow_runs", name="mapped", older_than=dt.timedelta(hours=1)) == 2
    assert [r["id"] for r in call(conn, "cb_list_flow_runs", name="mapped")] == [recent, active]
    for table in ("cb_step_runs", "cb_map_tasks"):
        assert (
            scalar(
                conn,
                f"SELECT count(*) FROM catbird.{table} WHERE flow_run_id IN (%s, %s)",
                (done, failed),
            )
            == 0
        )
    assert (
        scalar(conn, "SELECT count(*) FROM catbird.cb_map_tasks WHERE flow_run_id = %s", (active,))
        == 2
    )
    assert fn(conn, "cb_purge_flow_runs", name="mapped", older_than=dt.timedelta(hours=1)) == 0
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_purge_flow_runs", name="mapped", older_than=dt.timedelta(seconds=-1))


def test_purge_keeps_failed_runs_whose_on_fail_handler_is_pending(conn):
    clock = Clock(conn)
    create_flow(conn, "pay", [step("a")], on_fail=True)
    run_id = run_flow(conn, "pay", {})
    assert fail(conn, "pay", "a", claim_one(conn, "pay", "a"), "boom") == "failed"
    clock.advance(seconds=7200)
    assert fn(conn, "cb_purge_flow_runs", name="pay", older_than=dt.timedelta(hours=1)) == 0
    call(conn, "cb_claim_flow_on_fail", name="pay", quantity=1)
    fn(conn, "cb_complete_flow_on_fail", name="pay", run_id=run_id)
    assert fn(conn, "cb_purge_flow_runs", name="pay", older_than=dt.timedelta(hours=1)) == 1


def test_clear_flow_runs_deletes_runs_that_finished_at_this_very_instant(conn):
    # cb_clear_flow_runs is "purge older than 0": a run that finished at cb_now() must go too.
    Clock(conn)
    create_flow(conn, "solo", [step("a")])
    done = run_flow(conn, "solo", {})
    run_step(conn, "solo", "a", "A")  # completed at the pinned clock's instant
    assert run_info(conn, "solo", done)["status"] == "completed"
    assert fn(conn, "cb_clear_flow_runs", name="solo") == 1
    assert call(conn, "cb_list_flow_runs", name="solo") == []


def test_clear_flow_runs_deletes_every_run_of_the_flow_including_active_ones(conn):
    # Seed (Go) docs: "ClearFlowRuns deletes all runs for the given flow regardless of status,
    # including in-progress runs. Step runs and map tasks are deleted via cascade."
    clock = Clock(conn)
    create_flow(conn, "mapped", MAPPED)
    create_flow(conn, "other", [step("a")])
    run_flow(conn, "mapped", [])
    run_step(conn, "mapped", "total", 0)
    run_flow(conn, "mapped", [1, 2])  # in progress
    keep = run_flow(conn, "other", {})
    clock.advance(seconds=1)
    assert fn(conn, "cb_clear_flow_runs", name="mapped") == 2
    assert call(conn, "cb_list_flow_runs", name="mapped") == []
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_map_tasks") == 0
    assert (
        scalar(conn, "SELECT count(*) FROM catbird.cb_step_runs WHERE flow_run_id <> %s", (keep,))
        == 0
    )
    assert [r["id"] for r in call(conn, "cb_list_flow_runs", name="other")] == [keep]


def test_an_item_claim_can_leave_out_the_flow_input_and_dependency_outputs(conn):
    create_flow(
        conn,
        "lean",
        [
            {"name": "a"},
            {"name": "each", "step_type": "mapper", "depends_on": [{"name": "a"}]},
        ],
    )
    run_flow(conn, "lean", [10, 20])
    run_step(conn, "lean", "a", {"big": "x" * 1000})
    full = call(
        conn, "cb_claim_map_tasks", flow_name="lean", step_name="each", quantity=1, hide_for=HIDE
    )
    lean = call(
        conn,
        "cb_claim_map_tasks",
        flow_name="lean",
        step_name="each",
        quantity=1,
        hide_for=HIDE,
        with_input=False,
        with_outputs=False,
    )
    assert (full[0]["input"], full[0]["step_outputs"]) == ([10, 20], {"a": {"big": "x" * 1000}})
    assert (lean[0]["item"], lean[0]["input"], lean[0]["step_outputs"]) == (20, None, None)


def _visible_at(conn, table: str, id: int) -> Any:
    return scalar(conn, f"SELECT visible_at FROM catbird.{table} WHERE id = %s", (id,))


def test_lease_renewal_with_attempts_only_extends_claims_still_held(conn):
    clock = Clock(conn)
    create_flow(
        conn,
        "leased",
        [{"name": "a"}, {"name": "each", "step_type": "mapper", "depends_on": ["a"]}],
    )
    run_flow(conn, "leased", [1])
    stale = claim_one(conn, "leased", "a", hide_for=1000)
    clock.advance(seconds=1)
    fresh = claim_one(conn, "leased", "a", hide_for=1000)  # the lease lapsed: claimed again
    assert (stale["attempts"], fresh["attempts"]) == (1, 2)
    held_until = _visible_at(conn, "cb_step_runs", fresh["id"])

    def renew(function: str, step_name: str, id: int, attempt: int) -> None:
        fn(
            conn,
            function,
            flow_name="leased",
            step_name=step_name,
            ids=[id],
            hide_for=HIDE,
            attempts=[attempt],
        )

    renew("cb_hide_steps", "a", fresh["id"], 1)  # the stale worker's renewal changes nothing
    assert _visible_at(conn, "cb_step_runs", fresh["id"]) == held_until
    renew("cb_hide_steps", "a", fresh["id"], 2)
    assert _visible_at(conn, "cb_step_runs", fresh["id"]) == clock.now + dt.timedelta(seconds=60)

    assert complete(conn, "leased", "a", fresh, "done") is True
    (item,) = claim_items(conn, "leased", "each", hide_for=1000)
    clock.advance(seconds=1)
    (again,) = claim_items(conn, "leased", "each", hide_for=1000)
    held_until = _visible_at(conn, "cb_map_tasks", again["id"])
    renew("cb_hide_map_tasks", "each", item["id"], item["attempts"])
    assert _visible_at(conn, "cb_map_tasks", again["id"]) == held_until
    renew("cb_hide_map_tasks", "each", again["id"], again["attempts"])
    assert _visible_at(conn, "cb_map_tasks", again["id"]) == clock.now + dt.timedelta(seconds=60)


@pytest.mark.parametrize("function", ["cb_hide_steps", "cb_hide_map_tasks"])
def test_lease_renewal_needs_one_attempt_per_id(conn, function):
    create_flow(conn, "leased", [{"name": "a", "step_type": "mapper"}])
    with rejected(conn, errors.InvalidParameterValue):
        fn(
            conn,
            function,
            flow_name="leased",
            step_name="a",
            ids=[1, 2],
            hide_for=HIDE,
            attempts=[1],
        )

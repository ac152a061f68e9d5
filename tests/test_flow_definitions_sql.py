"""Flow definitions at the SQL level: create, re-create, replace, reject, delete, introspect.

A flow is a DAG of steps given to ``cb_create_flow`` as a JSON array of step
objects::

    {"name": "b", "depends_on": [{"name": "a"}] (or ["a"]), "condition": "a.ok eq true",
     "signal": false, "step_type": "normal" | "mapper" | "generator" | "reducer",
     "map_source_step_name": "a", "reduce_source_step_name": "m", "ignore_output": ["a"]}

The definition is validated as a whole before anything is written: a structure
error (unknown dependency, cycle, duplicate or reserved or invalid step name, a
map/reduce source that is not a dependency, a malformed condition, ...) raises
22023 and leaves every table as it was. Creating the same definition again is a
no-op; a different one replaces it while no run is active, and is refused with
55006 while one is. ``output_priority`` defaults to the terminal steps (those no
step depends on) in definition order.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, engine_state, fn, rejected, scalar, step


def normalized(name: str, *deps: str, **fields: Any) -> dict[str, Any]:
    """A step as cb_get_flow returns it: every key present, in its canonical form."""
    return {
        "name": name,
        "description": None,
        "step_type": "normal",
        "signal": False,
        "condition": None,
        "map_source_step_name": None,
        "reduce_source_step_name": None,
        "depends_on": [{"name": d} for d in deps],
        "ignore_output": [],
        **fields,
    }


def create_flow(conn, name: str, steps: Any, **options: Any) -> None:
    fn(conn, "cb_create_flow", name=name, steps=J(steps), **options)


def get_flow(conn, name: str) -> dict[str, Any] | None:
    rows = call(conn, "cb_get_flow", name=name)
    assert len(rows) <= 1
    return rows[0] if rows else None


DIAMOND = [step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")]


# --------------------------------------------------------------------------- create


def test_create_flow_stores_the_normalized_definition(conn):
    clock = Clock(conn)
    create_flow(
        conn,
        "orders",
        [
            step("fetch", description="load the order"),
            {"name": "check", "depends_on": ["fetch"], "condition": "fetch.total gt 100"},
            step("approve", "check", signal=True),
            step("ship", "fetch", "approve", ignore_output=["fetch"]),
        ],
        description="order pipeline",
        retention_period=dt.timedelta(days=7),
    )
    assert get_flow(conn, "orders") == {
        "name": "orders",
        "description": "order pipeline",
        "steps": [
            normalized("fetch", description="load the order"),
            normalized("check", "fetch", condition="fetch.total gt 100"),
            normalized("approve", "check", signal=True),
            normalized("ship", "fetch", "approve", ignore_output=["fetch"]),
        ],
        "output_priority": ["ship"],
        "retention_period": dt.timedelta(days=7),
        "on_fail": False,
        "created_at": clock.now,
    }


def test_create_flow_accepts_every_step_type(conn):
    create_flow(
        conn,
        "shapes",
        [
            step("src"),
            step("per_item", "src", step_type="mapper", map_source_step_name="src"),
            step("per_input", step_type="mapper"),
            step("gen", step_type="generator"),
            step("sum_items", "per_item", step_type="reducer", reduce_source_step_name="per_item"),
            step("sum_gen", "gen", step_type="reducer", reduce_source_step_name="gen"),
        ],
    )
    flow = get_flow(conn, "shapes")
    assert flow is not None
    assert [
        (s["name"], s["step_type"], s["map_source_step_name"], s["reduce_source_step_name"])
        for s in flow["steps"]
    ] == [
        ("src", "normal", None, None),
        ("per_item", "mapper", "src", None),
        ("per_input", "mapper", None, None),
        ("gen", "generator", None, None),
        ("sum_items", "reducer", None, "per_item"),
        ("sum_gen", "reducer", None, "gen"),
    ]
    assert flow["output_priority"] == ["per_input", "sum_items", "sum_gen"]


def test_depends_on_accepts_objects_and_plain_names_alike(conn):
    create_flow(conn, "objs", [step("a"), step("b", "a")])
    create_flow(conn, "strs", [{"name": "a"}, {"name": "b", "depends_on": ["a"]}])
    create_flow(
        conn, "nulls", [{"name": "a", "depends_on": None}, {"name": "b", "depends_on": ["a"]}]
    )
    objs, strs, nulls = (get_flow(conn, n) for n in ("objs", "strs", "nulls"))
    assert objs is not None and strs is not None and nulls is not None
    assert (
        objs["steps"] == strs["steps"] == nulls["steps"] == [normalized("a"), normalized("b", "a")]
    )


def test_dependencies_may_refer_to_later_steps(conn):
    create_flow(conn, "backwards", [step("last", "first"), step("first")])
    flow = get_flow(conn, "backwards")
    assert flow is not None
    assert [s["name"] for s in flow["steps"]] == ["last", "first"]
    assert flow["output_priority"] == ["last"]


def test_default_output_priority_is_the_terminal_steps_in_definition_order(conn):
    create_flow(
        conn,
        "fan",
        [
            step("root"),
            step("z_leaf", "root"),
            step("mid", "root"),
            step("a_leaf", "mid"),
            step("alone"),
        ],
    )
    flow = get_flow(conn, "fan")
    assert flow is not None
    assert flow["output_priority"] == ["z_leaf", "a_leaf", "alone"]


def test_explicit_output_priority_is_kept_and_may_name_any_steps(conn):
    create_flow(conn, "diamond", DIAMOND, output_priority=["c", "a"])
    flow = get_flow(conn, "diamond")
    assert flow is not None
    assert flow["output_priority"] == ["c", "a"]


# --------------------------------------------------------------------------- re-create / replace


def test_creating_an_identical_definition_again_is_a_noop(conn):
    clock = Clock(conn)
    create_flow(conn, "diamond", DIAMOND, description="d")
    fn(conn, "cb_run_flow", name="diamond", input=J({}))  # an active run does not matter
    before = engine_state(conn)
    clock.advance(seconds=60)
    create_flow(conn, "diamond", DIAMOND, description="d")
    # The same definition spelled differently (plain dependency names) is the same definition.
    create_flow(
        conn,
        "diamond",
        [
            {"name": s["name"], "depends_on": [d["name"] for d in s.get("depends_on", [])]}
            for s in DIAMOND
        ],
        description="d",
    )
    assert engine_state(conn) == before
    flow = get_flow(conn, "diamond")
    assert flow is not None and flow["created_at"] == T0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"description": "other"}, id="description"),
        pytest.param({"steps": [step("a"), step("b", "a")]}, id="steps"),
        pytest.param({"output_priority": ["b"]}, id="output-priority"),
        pytest.param({"retention_period": dt.timedelta(hours=1)}, id="retention"),
        pytest.param({"on_fail": True}, id="on-fail"),
    ],
)
def test_a_changed_definition_replaces_the_old_one_when_no_run_is_active(conn, change):
    create_flow(conn, "diamond", DIAMOND, description="d")
    run_id = fn(conn, "cb_run_flow", name="diamond", input=J({}))
    # Nothing started: canceled at once.
    assert fn(conn, "cb_cancel_flow", name="diamond", run_id=run_id) is True
    options = {"description": "d", "steps": DIAMOND, **change}
    create_flow(conn, "diamond", options.pop("steps"), **options)
    flow = get_flow(conn, "diamond")
    assert flow is not None
    for key, value in change.items():
        if key == "steps":
            assert [s["name"] for s in flow["steps"]] == [s["name"] for s in value]
        else:
            assert flow[key] == value
    # The finished run is kept, and new runs follow the new definition.
    assert [r["id"] for r in call(conn, "cb_list_flow_runs", name="diamond")] == [run_id]
    new_run = fn(conn, "cb_run_flow", name="diamond", input=J({}))
    expected_steps = [s["name"] for s in change.get("steps", DIAMOND)]
    assert [
        s["step_name"]
        for s in call(conn, "cb_get_flow_run_steps", flow_name="diamond", run_id=new_run)
    ] == (expected_steps)


def test_finished_runs_keep_their_step_history_after_a_replacement(conn):
    create_flow(conn, "flow", [step("a"), step("b", "a")])
    run_id = fn(conn, "cb_run_flow", name="flow", input=J({}))
    for name in ("a", "b"):
        [claimed] = call(
            conn, "cb_claim_steps", flow_name="flow", step_name=name, quantity=1, hide_for=1000
        )
        assert fn(
            conn,
            "cb_complete_step",
            flow_name="flow",
            step_name=name,
            id=claimed["id"],
            output=J(name.upper()),
        )
    create_flow(conn, "flow", [step("x")])
    # The old run still shows the steps it ran, with their outputs.
    steps = call(conn, "cb_get_flow_run_steps", flow_name="flow", run_id=run_id)
    assert [(s["step_name"], s["status"], s["output"]) for s in steps] == [
        ("a", "completed", "A"),
        ("b", "completed", "B"),
    ]
    [info] = call(conn, "cb_get_flow_run", name="flow", run_id=run_id)
    assert (info["status"], info["output"]) == ("completed", "B")


def test_a_changed_definition_is_refused_with_55006_while_a_run_is_active(conn):
    create_flow(conn, "diamond", DIAMOND)
    run_id = fn(conn, "cb_run_flow", name="diamond", input=J({}))
    with rejected(conn, errors.ObjectInUse) as info:
        create_flow(conn, "diamond", [step("a")])
    assert "active runs" in str(info.value)
    # A canceling run (started work still draining) is active too.
    [claim] = call(
        conn, "cb_claim_steps", flow_name="diamond", step_name="a", quantity=1, hide_for=60_000
    )
    assert fn(conn, "cb_cancel_flow", name="diamond", run_id=run_id) is True
    assert call(conn, "cb_get_flow_run", name="diamond", run_id=run_id)[0]["status"] == "canceling"
    with rejected(conn, errors.ObjectInUse):
        create_flow(conn, "diamond", [step("a")])
    # Once the started step reports back the run is canceled and the change goes through.
    assert (
        fn(
            conn,
            "cb_complete_step",
            flow_name="diamond",
            step_name="a",
            id=claim["id"],
            output=J(1),
        )
        is False
    )
    assert call(conn, "cb_get_flow_run", name="diamond", run_id=run_id)[0]["status"] == "canceled"
    create_flow(conn, "diamond", [step("a")])
    flow = get_flow(conn, "diamond")
    assert flow is not None and flow["steps"] == [normalized("a")]


# --------------------------------------------------------------------------- structure errors


STRUCTURE_ERRORS = [
    pytest.param([step("a", "zzz")], "unknown step", id="unknown-dependency"),
    pytest.param([step("a", "b"), step("b", "a")], "cycle", id="cycle-of-2"),
    pytest.param([step("a", "c"), step("b", "a"), step("c", "b")], "cycle", id="cycle-of-3"),
    pytest.param(
        [step("root"), step("a", "root", "c"), step("b", "a"), step("c", "b")],
        "cycle",
        id="cycle-below-root",
    ),
    pytest.param([step("a", "a")], "cycle", id="self-dependency"),
    pytest.param([step("a"), step("a")], "defined twice", id="duplicate-step"),
    pytest.param(
        [step("a"), {"name": "b", "depends_on": ["a", "a"]}], "twice", id="duplicate-dependency"
    ),
    pytest.param([step("input")], "reserved", id="reserved-input"),
    pytest.param([step("signal")], "reserved", id="reserved-signal"),
    pytest.param([step("Bad")], "invalid step name", id="uppercase-name"),
    pytest.param([step("1a")], "invalid step name", id="leading-digit"),
    pytest.param([step("a-b")], "invalid step name", id="dash"),
    pytest.param([step("x" * 59)], "invalid step name", id="name-too-long"),
    pytest.param([{"description": "no name"}], "invalid step name", id="missing-name"),
    pytest.param(["a"], "not a JSON object", id="step-not-an-object"),
    pytest.param([step("a", step_type="weird")], "step_type", id="unknown-step-type"),
    pytest.param(
        [step("a"), step("m", step_type="mapper", map_source_step_name="a")],
        "map source",
        id="map-source-not-a-dependency",
    ),
    pytest.param(
        [step("a"), step("m", step_type="mapper", map_source_step_name="nope")],
        "map source",
        id="map-source-unknown",
    ),
    pytest.param(
        [step("a"), step("b", "a", map_source_step_name="a")],
        "map source",
        id="map-source-on-normal-step",
    ),
    pytest.param(
        [step("m", step_type="mapper"), step("r", "m", step_type="reducer")],
        "reduce source",
        id="reducer-without-source",
    ),
    pytest.param(
        [step("a"), step("r", "a", step_type="reducer", reduce_source_step_name="a")],
        "reduce source",
        id="reducer-of-normal-step",
    ),
    pytest.param(
        [
            step("m", step_type="mapper"),
            step("r", step_type="reducer", reduce_source_step_name="m"),
        ],
        "reduce source",
        id="reduce-source-not-a-dependency",
    ),
    pytest.param(
        [step("m", step_type="mapper"), step("b", "m", reduce_source_step_name="m")],
        "only for reducer",
        id="reduce-source-on-normal-step",
    ),
    pytest.param(
        [step("a"), step("b"), step("c", "a", ignore_output=["b"])],
        "not a dependency",
        id="ignore-output-not-a-dependency",
    ),
    pytest.param([step("a", ignore_output="b")], "ignore_output", id="ignore-output-not-an-array"),
    pytest.param(
        [step("a"), step("b", "a", ignore_output=[None])],
        "ignore_output",
        id="ignore-output-null-element",
    ),
    pytest.param([step("a", signal="maybe")], "signal", id="signal-not-a-boolean"),
    pytest.param([step("a", depends_on="b")], "depends_on", id="depends-on-not-an-array"),
    pytest.param(
        [step("a"), step("b", depends_on=[{"nom": "a"}])],
        "depends_on",
        id="depends-on-without-name",
    ),
    pytest.param([step("a"), step("b", depends_on=[1])], "depends_on", id="depends-on-a-number"),
    pytest.param(
        [step("a", condition="input.x between 1")], "cannot parse", id="malformed-condition"
    ),
    pytest.param(
        [step("a", condition="input.x eq")], "needs a value", id="condition-without-value"
    ),
    pytest.param([step("a", condition="")], "empty", id="empty-condition"),
    pytest.param(
        [step("a"), step("b"), step("c", "a", condition="b.ok eq true")],
        "must start with",
        id="condition-on-non-dependency",
    ),
    pytest.param(
        [step("a", condition="later.ok")], "must start with", id="condition-on-unknown-step"
    ),
    pytest.param(
        [step("a", condition="signal.ok eq true")],
        "must start with",
        id="signal-condition-without-signal",
    ),
    pytest.param([], "no steps", id="empty-flow"),
    pytest.param({"name": "a"}, "JSON array", id="steps-an-object"),
    pytest.param("a", "JSON array", id="steps-a-string"),
    pytest.param(None, "JSON array", id="steps-json-null"),
]


@pytest.mark.parametrize(("steps", "message"), STRUCTURE_ERRORS)
def test_structure_errors_are_rejected_with_22023_and_write_nothing(conn, steps, message):
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", steps)
    assert message in str(info.value)
    assert get_flow(conn, "bad") is None


@pytest.mark.parametrize(("steps", "message"), STRUCTURE_ERRORS[:6])
def test_a_rejected_redefinition_keeps_the_old_definition(conn, steps, message):
    create_flow(conn, "flow", DIAMOND)
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "flow", steps)
    assert message in str(info.value)
    flow = get_flow(conn, "flow")
    assert flow is not None and [s["name"] for s in flow["steps"]] == ["a", "b", "c", "d"]


def test_sql_null_steps_are_rejected(conn):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_create_flow", name="bad", steps=None)


def test_the_default_steps_make_an_empty_flow_which_is_rejected(conn):
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_create_flow", name="bad")
    assert "no steps" in str(info.value)


def test_the_cycle_error_names_its_path(conn):
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", [step("a", "c"), step("b", "a"), step("c", "b")])
    assert "->" in str(info.value)


def chain(n: int) -> list[dict[str, Any]]:
    """s0 <- s1 <- ... <- s(n-1): each step depends on the one before."""
    return [step(f"s{i}", f"s{i - 1}") if i else step("s0") for i in range(n)]


def layered(width: int, depth: int) -> list[dict[str, Any]]:
    """``depth`` layers of ``width`` steps, each depending on every step of the layer before."""
    return [
        step(f"l{layer}_{c}", *(f"l{layer - 1}_{d}" for d in range(width) if layer))
        for layer in range(depth)
        for c in range(width)
    ]


def cycle_message(conn, steps: list[dict[str, Any]]) -> str:
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", steps)
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize(
    ("steps", "path"),
    [
        pytest.param([step("a", "a")], "a -> a", id="self-dependency"),
        pytest.param([step("a", "b"), step("b", "a")], "a -> b -> a", id="cycle-of-2"),
        pytest.param(
            [step("a", "c"), step("b", "a"), step("c", "b")], "a -> c -> b -> a", id="cycle-of-3"
        ),
        # steps depending on a cycle are not part of it: only the cycle is named
        pytest.param(
            [step("root"), step("x", "root", "c"), step("a", "x"), step("b", "a"), step("c", "b")],
            "x -> c -> b -> a -> x",
            id="cycle-below-root",
        ),
        pytest.param(
            [step("late", "a"), step("a", "b"), step("b", "a")],
            "a -> b -> a",
            id="dependent-of-a-cycle-first",
        ),
    ],
)
def test_the_cycle_error_names_exactly_the_steps_of_a_cycle(conn, steps, path):
    assert cycle_message(conn, steps) == (
        f'invalid flow "bad": its dependencies form a cycle ({path})'
    )


def test_a_long_cycle_is_found_and_named_step_by_step(conn):
    # s0 depends on s999: a cycle through all 1,000 steps, next to an acyclic part
    steps = chain(1000)
    steps[0] = step("s0", "s999")
    steps += layered(5, 20)
    path = " -> ".join(["s0", *(f"s{i}" for i in range(999, -1, -1))])
    assert cycle_message(conn, steps) == (
        f'invalid flow "bad": its dependencies form a cycle ({path})'
    )


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(chain(10_000), id="chain-of-10000"),
        pytest.param([step(f"s{i}") for i in range(10_000)], id="10000-independent"),
        pytest.param(layered(4, 11), id="44-step-layered-dag"),
        pytest.param(layered(10, 100), id="1000-step-layered-dag"),
    ],
)
def test_big_acyclic_flows_are_accepted_whole(conn, steps):
    create_flow(conn, "big", steps)
    flow = get_flow(conn, "big")
    assert flow is not None
    assert [s["name"] for s in flow["steps"]] == [s["name"] for s in steps]
    assert [s["depends_on"] for s in flow["steps"]] == [s.get("depends_on", []) for s in steps]
    depended_on = {d["name"] for s in steps for d in s.get("depends_on", [])}
    assert flow["output_priority"] == [s["name"] for s in steps if s["name"] not in depended_on]
    assert scalar(
        conn,
        "SELECT count(*) FROM catbird.cb_flow_steps s JOIN catbird.cb_flows f ON f.id = s.flow_id"
        " WHERE f.name = 'big'",
    ) == len(steps)


def test_the_first_problem_in_step_order_is_reported(conn):
    # A later duplicate and an earlier bad key: the earlier step's problem wins
    # in the names pass; in the second pass an earlier step's unknown
    # dependency wins over a later step's bad signal.
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", [step("a"), {"name": "b", "dependson": []}, step("a")])
    assert "unknown key" in str(info.value)
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", [step("a"), step("b"), step("a"), {"name": "c", "x": 1}])
    assert 'step "a" is defined twice' in str(info.value)
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", [step("a", "zz", "a2", "yy"), step("a2", signal="no")])
    assert 'step "a" depends on unknown step(s) \'"zz", "yy"\'' in str(info.value)
    assert "The steps are: a, a2." in (info.value.diag.message_hint or "")


@pytest.mark.parametrize(
    "output_priority",
    [
        pytest.param(["d", "nope"], id="unknown-step"),
        pytest.param([], id="empty"),
        pytest.param(["d", None], id="null-element"),
    ],
)
def test_output_priority_must_name_existing_steps(conn, output_priority):
    with rejected(conn, errors.InvalidParameterValue) as info:
        create_flow(conn, "bad", DIAMOND, output_priority=output_priority)
    assert "output_priority" in str(info.value)


@pytest.mark.parametrize("name", ["Bad", "", "1flow", "x" * 59, None])
def test_invalid_flow_names_are_rejected(conn, name):
    with rejected(conn, errors.InvalidParameterValue):
        create_flow(conn, name, DIAMOND)


def test_negative_retention_is_rejected(conn):
    with rejected(conn, errors.InvalidParameterValue):
        create_flow(conn, "bad", DIAMOND, retention_period=dt.timedelta(seconds=-1))


def test_a_condition_may_read_input_signal_and_dependency_outputs(conn):
    create_flow(
        conn,
        "conds",
        [
            step("a", condition="input.go"),
            step("b", "a", condition="not a.skip eq true"),
            step("c", "b", signal=True, condition="signal.ok eq true"),
            step("d", "c", condition='input.tags contains "x"'),
        ],
    )
    flow = get_flow(conn, "conds")
    assert flow is not None
    assert [s["condition"] for s in flow["steps"]] == [
        "input.go",
        "not a.skip eq true",
        "signal.ok eq true",
        'input.tags contains "x"',
    ]


# --------------------------------------------------------------------------- delete / get / list


def test_delete_flow_removes_it_with_its_runs_and_bindings(conn):
    create_flow(conn, "diamond", DIAMOND)
    create_flow(conn, "keep", [step("m", step_type="mapper")])
    fn(conn, "cb_bind_flow", name="diamond", pattern="orders.#")
    fn(conn, "cb_run_flow", name="diamond", input=J({}))
    run_id = fn(conn, "cb_run_flow", name="diamond", input=J({}))
    call(conn, "cb_claim_steps", flow_name="diamond", step_name="a", quantity=1, hide_for=1000)
    keep_run = fn(conn, "cb_run_flow", name="keep", input=J([1, 2]))

    assert fn(conn, "cb_delete_flow", name="diamond") is True
    assert get_flow(conn, "diamond") is None
    assert (
        scalar(conn, "SELECT count(*) FROM catbird.cb_flow_runs WHERE id <> %s", (keep_run,)) == 0
    )
    assert (
        scalar(
            conn, "SELECT count(*) FROM catbird.cb_step_runs WHERE flow_run_id <> %s", (keep_run,)
        )
        == 0
    )
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_bindings") == 0
    # The other flow is untouched.
    assert (
        scalar(
            conn, "SELECT count(*) FROM catbird.cb_map_tasks WHERE flow_run_id = %s", (keep_run,)
        )
        == 2
    )
    # Deleting again says there was nothing; the runs of a deleted flow are gone.
    assert fn(conn, "cb_delete_flow", name="diamond") is False
    with pytest.raises(errors.UndefinedObject):
        call(conn, "cb_get_flow_run", name="diamond", run_id=run_id)
    with pytest.raises(errors.UndefinedObject):
        fn(conn, "cb_run_flow", name="diamond", input=J({}))
    # And the name can be defined afresh.
    create_flow(conn, "diamond", [step("only")])
    flow = get_flow(conn, "diamond")
    assert flow is not None and flow["output_priority"] == ["only"]


def test_delete_flow_with_an_invalid_name_is_22023(conn):
    with rejected(conn, errors.InvalidParameterValue):
        fn(conn, "cb_delete_flow", name="Not-Valid")


def test_get_flow_of_an_unknown_flow_is_empty_and_list_is_by_name(conn):
    clock = Clock(conn)
    assert call(conn, "cb_list_flows") == []
    assert get_flow(conn, "nope") is None
    create_flow(conn, "zeta", [step("z")], on_fail=True)
    clock.advance(seconds=1)
    create_flow(conn, "alpha", DIAMOND, description="first")
    flows = call(conn, "cb_list_flows")
    assert [
        (f["name"], f["description"], f["on_fail"], f["output_priority"], f["created_at"])
        for f in flows
    ] == [
        ("alpha", "first", False, ["d"], T0 + dt.timedelta(seconds=1)),
        ("zeta", None, True, ["z"], T0),
    ]
    assert flows[0]["steps"] == [
        normalized("a"),
        normalized("b", "a"),
        normalized("c", "a"),
        normalized("d", "b", "c"),
    ]


def test_unknown_flows_and_steps_are_42704_in_the_run_api(conn):
    create_flow(conn, "diamond", DIAMOND)
    for function, args in [
        ("cb_run_flow", {"name": "nope", "input": J({})}),
        ("cb_bind_flow", {"name": "nope", "pattern": "a.b"}),
        ("cb_cancel_flow", {"name": "nope", "run_id": 1}),
        ("cb_list_flow_runs", {"name": "nope"}),
        (
            "cb_claim_steps",
            {"flow_name": "nope", "step_name": "a", "quantity": 1, "hide_for": 1000},
        ),
        (
            "cb_claim_steps",
            {"flow_name": "diamond", "step_name": "zz", "quantity": 1, "hide_for": 1000},
        ),
        (
            "cb_claim_map_tasks",
            {"flow_name": "diamond", "step_name": "zz", "quantity": 1, "hide_for": 1000},
        ),
        ("cb_complete_step", {"flow_name": "diamond", "step_name": "zz", "id": 1, "output": J(1)}),
        ("cb_get_flow_step_status", {"flow_name": "diamond", "run_id": 1, "step_name": "zz"}),
    ]:
        with rejected(conn, errors.UndefinedObject):
            call(conn, function, **args)

"""Conditions at the SQL level: the grammar accepted at definition time and the
semantics of evaluating a parsed condition against a run's input.

A condition is one expression, no and/or::

    condition := 'not' condition | path | path 'exists' | path op value
    op        := eq | ne | gt | gte | lt | lte | in | contains
    value     := a JSON literal, or a bare word (read as a string)

It is parsed once (``catbird._cb_parse_condition``, 22023 when malformed) and
evaluated when a run is created (``catbird._cb_eval_condition``), so a false
condition makes the run ``skipped`` without any worker. A missing field makes
every comparison false and ``exists`` false; ``not`` negates the result.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from sqlhelpers import T0, Clock, J, call, fn, rejected, scalar

TASK_ROOTS = ["input"]


def parse(conn: psycopg.Connection, condition: str | None, roots: list[str] = TASK_ROOTS) -> Any:
    return scalar(conn, "SELECT catbird._cb_parse_condition(%s, %s)", (condition, roots))


def evaluate(conn: psycopg.Connection, cases: list[tuple[str, Any, bool]]) -> list[bool]:
    """For each (condition, input, _): whether the condition, parsed with the task roots,
    holds for a run of that input, i.e.
    ``_cb_eval_condition(_cb_parse_condition(condition, ARRAY['input']),
    jsonb_build_object('input', input))``."""
    return scalar(  # type: ignore[no-any-return]
        conn,
        "SELECT array_agg(catbird._cb_eval_condition("
        "           catbird._cb_parse_condition(c.condition, ARRAY['input']),"
        "           jsonb_build_object('input', c.input)) ORDER BY c.ord)"
        " FROM unnest(%s::text[], %s::jsonb[]) WITH ORDINALITY AS c(condition, input, ord)",
        ([c for c, _, _ in cases], [J(i) for _, i, _ in cases]),
    )


# --------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("condition", "parsed"),
    [
        ("input.x eq 1", {"path": ["input", "x"], "op": "eq", "value": 1}),
        ("input.x ne 1", {"path": ["input", "x"], "op": "ne", "value": 1}),
        ("not input.flag", {"not": {"path": ["input", "flag"], "op": "truthy"}}),
        ("input.flag", {"path": ["input", "flag"], "op": "truthy"}),
        ('input.tags contains "a"', {"path": ["input", "tags"], "op": "contains", "value": "a"}),
        ("input.k exists", {"path": ["input", "k"], "op": "exists"}),
        ("input.k in [1,2]", {"path": ["input", "k"], "op": "in", "value": [1, 2]}),
        ("input.n gte 3", {"path": ["input", "n"], "op": "gte", "value": 3}),
        ("input.n gt 2.5", {"path": ["input", "n"], "op": "gt", "value": 2.5}),
        ("input.n lt -1", {"path": ["input", "n"], "op": "lt", "value": -1}),
        ("input.n lte 0", {"path": ["input", "n"], "op": "lte", "value": 0}),
        ("input.s eq active", {"path": ["input", "s"], "op": "eq", "value": "active"}),
        ('input.s eq "on hold"', {"path": ["input", "s"], "op": "eq", "value": "on hold"}),
        ("input.x eq null", {"path": ["input", "x"], "op": "eq", "value": None}),
        ("input.x eq true", {"path": ["input", "x"], "op": "eq", "value": True}),
        ('input.x eq {"a": 1}', {"path": ["input", "x"], "op": "eq", "value": {"a": 1}}),
        ("input.a.b.c eq 1", {"path": ["input", "a", "b", "c"], "op": "eq", "value": 1}),
        ("input.items.0 eq x", {"path": ["input", "items", "0"], "op": "eq", "value": "x"}),
        ("  input.x   eq   1  ", {"path": ["input", "x"], "op": "eq", "value": 1}),
        (
            "not not input.x eq 1",
            {"not": {"not": {"path": ["input", "x"], "op": "eq", "value": 1}}},
        ),
    ],
)
def test_parse_accepts(conn, condition, parsed):
    assert parse(conn, condition) == parsed


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param("input.x between 1", id="unknown-op"),
        pytest.param("input.x == 1", id="symbolic-op"),
        pytest.param("inpt.x eq 1", id="bad-root"),
        pytest.param("signal.x eq 1", id="flow-root-in-a-task"),
        pytest.param("x eq 1", id="bare-field-without-root"),
        pytest.param("input.x eq", id="missing-value"),
        pytest.param("input.x in 3", id="in-needs-an-array"),
        pytest.param('input.x in "ab"', id="in-with-a-string"),
        pytest.param("input.k exists 1", id="value-after-exists"),
        pytest.param("input.s eq on hold", id="unquoted-words"),
        pytest.param("input.x eq 1 and input.y eq 2", id="no-and"),
        pytest.param("input.x eq [1", id="broken-json"),
        pytest.param("not", id="not-alone"),
        pytest.param("input..x eq 1", id="empty-path-token"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(None, id="null"),
    ],
)
def test_parse_rejects_with_22023(conn, condition):
    with pytest.raises(errors.InvalidParameterValue):
        parse(conn, condition)


@pytest.mark.parametrize(
    "condition", ["inpt.x eq 1", "input.x eq", "input.x in 3", "input.x foo 1"]
)
def test_create_task_rejects_a_malformed_condition_and_writes_nothing(conn, condition):
    with rejected(conn, errors.InvalidParameterValue) as info:
        fn(conn, "cb_create_task", name="work", condition=condition)
    assert "condition" in str(info.value)
    assert call(conn, "cb_list_tasks") == []


def test_flow_roots_are_allowed_where_the_caller_allows_them(conn):
    roots = ["input", "signal", "fetch"]
    assert parse(conn, "signal.ok", roots) == {"path": ["signal", "ok"], "op": "truthy"}
    assert parse(conn, "fetch.status eq 200", roots)["path"] == ["fetch", "status"]
    with pytest.raises(errors.InvalidParameterValue):
        parse(conn, "other.status eq 200", roots)


# --------------------------------------------------------------------------- evaluation

EVALUATION: dict[str, list[tuple[str, Any, bool]]] = {
    # eq / ne: JSON equality, numbers compare by value, types never coerce
    "eq-ne": [
        ("input.x eq 1", {"x": 1}, True),
        ("input.x eq 1", {"x": 1.0}, True),
        ("input.x eq 1", {"x": 2}, False),
        ("input.x eq 1", {"x": "1"}, False),
        ("input.x eq 1", {}, False),
        ("input.x eq 1", {"x": None}, False),
        ("input.x ne 1", {"x": 2}, True),
        ("input.x ne 1", {"x": "1"}, True),
        ("input.x ne 1", {"x": 1}, False),
        ("input.x ne 1", {}, False),
        ("input.s eq active", {"s": "active"}, True),
        ("input.s eq active", {"s": "Active"}, False),
        ('input.s eq "1"', {"s": "1"}, True),
        ('input.s eq "1"', {"s": 1}, False),
        ("input.x eq null", {"x": None}, True),
        ("input.x eq null", {}, False),
        ("input.x eq true", {"x": True}, True),
        ("input.x eq true", {"x": 1}, False),
        ('input.x eq {"a": [1, 2]}', {"x": {"a": [1, 2]}}, True),
        ("input.x eq [1, 2]", {"x": [2, 1]}, False),
    ],
    # not: negation of the whole result, so a missing field makes `not ... eq` true
    "not": [
        ("not input.x eq 1", {}, True),
        ("not input.x eq 1", {"x": 1}, False),
        ("not input.x eq 1", {"x": 2}, True),
        ("not not input.x eq 1", {}, False),
        ("not input.x ne 1", {}, True),
    ],
    # ordering: numbers with numbers, strings with strings, anything else false
    "ordering": [
        ("input.n gte 3", {"n": 3}, True),
        ("input.n gte 3", {"n": 3.5}, True),
        ("input.n gte 3", {"n": 2}, False),
        ("input.n gte 3", {"n": "5"}, False),
        ("input.n gte 3", {}, False),
        ("input.n gt 3", {"n": 3}, False),
        ("input.n gt 3", {"n": 10}, True),
        ("input.n lt 10", {"n": 9.99}, True),
        ("input.n lt 10", {"n": 10}, False),
        ("input.n lte 10", {"n": 10}, True),
        ("input.n lt 10", {"n": None}, False),
        ("input.n lt 10", {"n": [1]}, False),
        ("input.n gt -1", {"n": 0}, True),
        ('input.s gt "b"', {"s": "c"}, True),
        ('input.s gt "b"', {"s": "a"}, False),
        ('input.s lt "b"', {"s": 1}, False),
        ("input.s gte m", {"s": "m"}, True),
        ("input.n gt 10", {"n": 9}, False),  # numeric, not lexical ("9" > "10" as text)
    ],
    # in: membership in a JSON array, by JSON equality
    "in": [
        ("input.k in [1,2]", {"k": 2}, True),
        ("input.k in [1,2]", {"k": 3}, False),
        ("input.k in [1,2]", {"k": "1"}, False),
        ("input.k in [1,2]", {}, False),
        ('input.k in ["a", null]', {"k": None}, True),
        ("input.k in []", {"k": 1}, False),
    ],
    # contains: array element, substring of a string, key of an object
    "contains": [
        ('input.tags contains "a"', {"tags": ["a", "b"]}, True),
        ('input.tags contains "a"', {"tags": ["b"]}, False),
        ('input.tags contains "a"', {"tags": []}, False),
        ('input.tags contains "a"', {"tags": "cat"}, True),
        ('input.tags contains "a"', {"tags": "dog"}, False),
        ('input.tags contains "a"', {"tags": {"a": 0}}, True),
        ('input.tags contains "a"', {"tags": {"b": "a"}}, False),
        ('input.tags contains "a"', {"tags": 5}, False),
        ('input.tags contains "a"', {}, False),
        ("input.tags contains 1", {"tags": [1, 2]}, True),
        ("input.tags contains 1", {"tags": ["1"]}, False),
        ("input.tags contains 1", {"tags": "1"}, False),
        ('input.tags contains {"id": 1}', {"tags": [{"id": 1}]}, True),
    ],
    # exists: present, whatever the value (null included)
    "exists": [
        ("input.k exists", {"k": None}, True),
        ("input.k exists", {"k": False}, True),
        ("input.k exists", {}, False),
        ("not input.k exists", {}, True),
        ("not input.k exists", {"k": 0}, False),
    ],
    # truthiness of a bare path
    "truthiness": [
        ("input.flag", {"flag": True}, True),
        ("input.flag", {"flag": 1}, True),
        ("input.flag", {"flag": -1}, True),
        ("input.flag", {"flag": "x"}, True),
        ("input.flag", {"flag": "false"}, True),
        ("input.flag", {"flag": "0"}, True),
        ("input.flag", {"flag": [0]}, True),
        ("input.flag", {"flag": {"a": None}}, True),
        ("input.flag", {"flag": False}, False),
        ("input.flag", {"flag": None}, False),
        ("input.flag", {"flag": 0}, False),
        ("input.flag", {"flag": 0.0}, False),
        ("input.flag", {"flag": ""}, False),
        ("input.flag", {"flag": []}, False),
        ("input.flag", {"flag": {}}, False),
        ("input.flag", {}, False),
        ("not input.flag", {}, True),
        ("not input.flag", {"flag": 0}, True),
        ("not input.flag", {"flag": "yes"}, False),
    ],
    # nested paths; a path through a scalar or past the end of an array is missing
    "paths": [
        ("input.a.b eq 1", {"a": {"b": 1}}, True),
        ("input.a.b eq 1", {"a": 1}, False),
        ("input.a.b eq 1", {"a": {"c": 1}}, False),
        ("input.a.b exists", {"a": "b"}, False),
        ("input.items.0 eq x", {"items": ["x", "y"]}, True),
        ("input.items.1 eq x", {"items": ["x", "y"]}, False),
        ("input.items.5 exists", {"items": ["x"]}, False),
    ],
    # the input itself need not be an object
    "non-object-input": [
        ("input.x eq 1", [1, 2], False),
        ("input.x exists", "text", False),
        ("not input.x exists", None, True),
    ],
}


@pytest.mark.parametrize("cases", EVALUATION.values(), ids=EVALUATION.keys())
def test_evaluation(conn, cases):
    """Each case is (condition, input, expected); the mismatches are listed on failure."""
    got = evaluate(conn, cases)
    wrong = [
        (c, i, expected, g)
        for (c, i, expected), g in zip(cases, got, strict=True)
        if g is not expected
    ]
    assert wrong == [], "(condition, input, expected, got)"


def test_no_condition_always_holds(conn):
    assert scalar(conn, "SELECT catbird._cb_eval_condition(NULL, '{}'::jsonb)") is True


# --------------------------------------------------------------------------- through runs


@pytest.mark.parametrize(
    ("condition", "input", "status"),
    [
        ("input.n gte 3", {"n": 5}, "queued"),
        ("input.n gte 3", {"n": 1}, "skipped"),
        ("input.n gte 3", {}, "skipped"),
        ("not input.x eq 1", {}, "queued"),
        ("input.flag", {"flag": []}, "skipped"),
        ('input.tags contains "vip"', {"tags": ["vip"]}, "queued"),
    ],
)
def test_a_task_condition_decides_at_creation_between_queued_and_skipped(
    conn, condition, input, status
):
    Clock(conn)
    fn(conn, "cb_create_task", name="work", condition=condition)
    run_id = fn(conn, "cb_run_task", name="work", input=J(input))
    (run,) = call(conn, "cb_get_task_run", name="work", run_id=run_id)
    assert run["status"] == status
    assert run["skipped_at"] == (T0 if status == "skipped" else None)

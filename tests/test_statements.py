"""The declared statements of catbird._sql: rendered SQL and parameters agree.

Every statement function is called with sample arguments; its parameters
must be exactly the placeholders of its SQL (a declared argument without a
value, or a value no placeholder takes, is a bug the engine would report
only when the statement runs). The engine-level behaviour of every call is
tested by the client and worker suites.
"""

from __future__ import annotations

import inspect
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from catbird import _sql
from catbird._sql._call import Call, Query

SAMPLES: dict[str, Any] = {
    "name": "n",
    "queue": "q",
    "topic": "t",
    "pattern": "p.*",
    "body": {"a": 1},
    "bodies": [{"a": 1}],
    "input": {"i": 1},
    "inputs": [{"i": 1}],
    "id": 7,
    "ids": [1, 2],
    "run_id": 9,
    "run_ids": [9],
    "output": {"o": 1},
    "outputs_json": ["1", "2"],
    "output_json": "1",
    "items_json": "[1]",
    "error_message": "boom",
    "step_name": "s",
    "older_than": 60,
    "steps": [{"name": "s"}],
    "task_handlers": [],
    "step_handlers": [],
    "hide_for": 1.5,
    "quantity": 3,
    "retry_exhausted": True,
    "retry_delay": 100,
    "cron_spec": "*/5 * * * *",
    "dead_letter_queue": "dlq",
    "node_id": uuid.UUID(int=1),
    "subscriber_id": uuid.UUID(int=2),
    "identity": "user-1",
    "since": datetime(2026, 1, 1, tzinfo=UTC),
    "topics": ["room.1"],
}


def _statements() -> list[tuple[str, Any]]:
    out = []
    for name in _sql.__all__:
        value = getattr(_sql, name)
        routine = inspect.isfunction(value) or inspect.ismethod(value)
        if routine and "Query" in str(inspect.signature(value).return_annotation):
            out.append((name, value))
    return out


def _call(name: str, function: Any) -> Query[Any]:
    args = {
        p.name: uuid.uuid4() if name.startswith("worker") and p.name == "id" else SAMPLES[p.name]
        for p in inspect.signature(function).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    query: Query[Any] = function(**args)
    return query


STATEMENTS = _statements()


def test_every_statement_is_found() -> None:
    assert len(STATEMENTS) == 117


@pytest.mark.parametrize(("name", "function"), STATEMENTS, ids=[n for n, _ in STATEMENTS])
def test_parameters_are_the_placeholders(name: str, function: Any) -> None:
    query = _call(name, function)
    assert isinstance(query, Query)
    assert set(re.findall(r"%\((\w+)\)[sb]", query.sql)) == set(query.params)


def test_calls_render_named_notation_with_casts_once() -> None:
    assert _sql.send("q", 1).sql == (
        "SELECT catbird.cb_send(queue => %(queue)s::text, body => %(body)s::jsonb,"
        " topic => %(topic)s::text, concurrency_key => %(concurrency_key)s::text,"
        " headers => %(headers)s::jsonb, visible_at => %(visible_at)s::timestamptz,"
        " priority => %(priority)s::int, expires_at => %(expires_at)s::timestamptz)"
    )
    assert _sql.list_queues().sql == (
        "SELECT name, description, created_at, expires_at, depth, visible, oldest_visible_at,"
        " max_deliveries, dead_letter_queue FROM catbird.cb_list_queues() ORDER BY name"
    )
    assert _sql.send("a", 1).sql is _sql.send("b", 2).sql
    with pytest.raises(ValueError, match="not an identifier"):
        Call("cb_x; DROP", a="int")


def test_task_and_flow_lifecycles_are_one_definition() -> None:
    pairs = [
        (_sql.run_task("n", 1), _sql.run_flow("n", 1)),
        (_sql.cancel_task("n", 1), _sql.cancel_flow("n", 1)),
        (_sql.list_task_runs("n"), _sql.list_flow_runs("n")),
        (_sql.claim_task_on_fail("n", quantity=1), _sql.claim_flow_on_fail("n", quantity=1)),
    ]
    for task, flow in pairs:
        assert task.name.replace("task", "flow") == flow.name
        assert "cb_" + task.name in task.sql
    wait = _sql.wait_flow_output("f", 1)
    assert "flow_name => %(flow_name)s::text" in wait.sql and wait.params["flow_name"] == "f"
    assert _sql.wait_task_output("t", 1).params["name"] == "t"

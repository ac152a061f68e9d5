"""``catbird flow ...`` commands, run in-process against the test's database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from typer.testing import Result

import clihelpers
from catbird import Client, Flow, _sql
from catbird.cli.flows import layers
from clihelpers import cbj


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def cb(dsn: str, *args: str, columns: int = 120) -> Result:
    return clihelpers.cb(dsn, *args, columns=columns)


def shop() -> Flow:
    flow = Flow("shop", description="an order", output_priority=["ship"])

    @flow.step()
    def validate(input: Any) -> Any: ...

    @flow.step(map="input")
    def lines(item: Any) -> Any: ...

    @flow.step(depends_on=["validate"], condition="validate.ok eq true")
    def charge(validate: Any) -> Any: ...

    @flow.step(reduce="lines", initial=0)
    def total(acc: Any, item: Any) -> Any: ...

    @flow.step(depends_on=["charge", "total"], signal=True)
    def ship(charge: Any | None, total: Any) -> Any: ...

    return flow


@pytest.fixture
def client(conn: psycopg.Connection[Any]) -> Client:
    client = Client(conn)
    client.create_flow(shop())
    return client


def test_layers_put_each_step_below_its_deepest_dependency() -> None:
    info = shop()
    from catbird.models import StepInfo

    steps = [StepInfo.from_json(s) for s in info.definition()]
    assert layers(steps) == [["validate", "lines"], ["charge", "total"], ["ship"]]
    assert layers([]) == []


def test_flow_ls_and_show_draw_the_dag(dsn: str, client: Client) -> None:
    assert "No flows" not in cb(dsn, "flow", "ls").stdout
    [doc] = cbj(dsn, "flow", "ls")
    assert (doc["name"], doc["output_priority"], doc["layers"]) == (
        "shop",
        ["ship"],
        [["validate", "lines"], ["charge", "total"], ["ship"]],
    )
    assert [s["step_type"] for s in doc["steps"]] == [
        "normal",
        "mapper",
        "normal",
        "reducer",
        "normal",
    ]
    shown = cb(dsn, "flow", "show", "shop")
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    for fragment in (
        "shop — an order",
        "layer 1",
        "layer 3",
        "lines ⇉ map input",
        "charge  ◀─ validate ? validate.ok eq true",
        "total  ◀─ lines Σ reduce lines",
        "ship  ◀─ charge, total ★ output ⚑ signal",
        "No runs.",
    ):
        assert fragment in text, text
    assert text.index("layer 1") < text.index("validate") < text.index("layer 2")


def test_flow_run_runs_steps_signal_and_cancel(dsn: str, client: Client) -> None:
    started = cbj(dsn, "flow", "run", "shop", "[1, 2]", "--priority", "3")
    run_id = started["run_id"]
    assert started == {"flow": "shop", "run_id": run_id}
    plain = cb(dsn, "flow", "run", "shop", "[]")
    assert "started" in plain.stdout
    [claimed] = client.execute(_sql.claim_steps("shop", "validate", quantity=1, hide_for=30))
    client.execute(_sql.complete_step_json("shop", "validate", claimed.id, '{"ok": true}'))

    runs = cbj(dsn, "flow", "runs", "shop")
    assert [r["id"] for r in runs][-1] == run_id
    table = cb(dsn, "flow", "runs", "shop").stdout
    assert "Runs of shop" in table and "started" in table

    steps = cbj(dsn, "flow", "steps", "shop", str(run_id))
    by_name = {s["step_name"]: s for s in steps["steps"]}
    assert by_name["validate"]["status"] == "completed"
    assert by_name["lines"]["map_total"] == 2
    text = cb(dsn, "flow", "steps", "shop", str(run_id)).stdout
    assert "0/2" in text and '{"ok": true}' in text

    marked = cb(dsn, "flow", "show", "shop", "--run", str(run_id)).stdout
    assert "validate [completed]" in marked

    assert cbj(dsn, "flow", "signal", "shop", str(run_id), "ship", '{"go": 1}')["delivered"]
    again = cb(dsn, "flow", "signal", "shop", str(run_id), "ship")
    assert again.exit_code == 1 and "not delivered" in again.stderr

    waited = cb(dsn, "flow", "run", "shop", "[]", "--wait", "0.2")
    assert waited.exit_code == 1 and "not done after 0.2 s" in waited.stderr

    canceled = cbj(dsn, "flow", "cancel", "shop", str(run_id), "--reason", "test")
    assert canceled == {"flow": "shop", "run_id": run_id, "canceled": True, "status": "canceled"}
    assert cb(dsn, "flow", "cancel", "shop", str(run_id + 1000)).exit_code == 1


def test_unknown_flows_are_one_line_errors(dsn: str) -> None:
    result = cb(dsn, "flow", "show", "nope")
    assert result.exit_code == 1
    assert 'flow "nope" does not exist' in result.stderr
    assert "No flows" in cb(dsn, "flow", "ls").stdout

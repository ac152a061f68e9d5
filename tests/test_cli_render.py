"""How the command line reads at 80 columns (the width when piped) and at 120.

Tables: every column keeps a header and some width, long values are cut with
``…`` (``--full`` shows them whole and every column), names are never broken,
and without ``--full`` no line is wider than the terminal. Help: flags show no
``<bool>`` type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import typer
from psycopg.types.json import Jsonb
from rich.console import Console
from typer.testing import Result

import clihelpers
from catbird import Client, Flow
from catbird.cli import app
from catbird.cli.output import Column, table
from sqlhelpers import call, fn

LONG_TASK = "a_rather_long_task_name_for_monthly_billing"
TAIL = "END-OF-VALUE"
"""The last word of every long value: cut away at 80 columns, shown with --full."""
BIG = {
    "customer": {"id": 12345, "name": "Some Customer With A Long Name", "city": "Springfield"},
    "items": list(range(30)),
    "the_longest_key_comes_last": TAIL,  # jsonb orders keys by length
}


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def cb(dsn: str | None, *args: str, columns: int) -> Result:
    result = clihelpers.cb(dsn, *args, columns=columns)
    assert result.exit_code == 0, result.output
    return result


def shop() -> Flow:
    flow = Flow("shop", description="an order", output_priority=["ship"])

    @flow.step()
    def validate(input: Any) -> Any: ...

    @flow.step(map="input")
    def lines(item: Any) -> Any: ...

    @flow.step(depends_on=["validate"])
    def ship(validate: Any) -> Any: ...

    return flow


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> int:
    """Tasks, runs, a flow run with a completed step and a queue, all with long values;
    returns the flow run's id."""
    client = Client(conn)
    client.create_task(LONG_TASK, description="Bills every customer account, " * 3 + TAIL)
    client.create_task("email", condition="input.to exists")
    done = client.run_task(LONG_TASK, BIG, priority=2)
    client.run_task(LONG_TASK, BIG)
    [claim] = call(conn, "cb_claim_tasks", name=LONG_TASK, quantity=1, hide_for=30_000)
    assert claim["id"] == done.id
    assert fn(conn, "cb_complete_task", name=LONG_TASK, run_id=done.id, output=Jsonb(BIG))

    client.create_flow(shop())
    run = client.run_flow("shop", [BIG, BIG])
    [step] = call(
        conn, "cb_claim_steps", flow_name="shop", step_name="validate", quantity=1, hide_for=30_000
    )
    fn(
        conn,
        "cb_complete_step",
        flow_name="shop",
        step_name="validate",
        id=step["id"],
        output=Jsonb(BIG),
    )

    client.create_queue("orders", description="all orders " * 5 + TAIL)
    client.bind("orders", "shop.order.*")
    client.send("orders", BIG, topic="shop.order.created", concurrency_key="order-" + "7" * 30)
    return run.id


def tables(text: str) -> Iterator[tuple[list[str], list[str]]]:
    """Each box table in ``text``: its column headers and its lines."""
    lines = text.splitlines()
    for top, line in enumerate(lines):
        if not line.startswith("┏"):
            continue
        end = next(i for i in range(top, len(lines)) if lines[i].startswith("└"))
        header_end = next(i for i in range(top, end) if lines[i].startswith("┡"))
        columns = [""] * (lines[top].count("┳") + 1)
        for header_line in lines[top + 1 : header_end]:
            cells = header_line.strip("┃").split("┃")
            assert len(cells) == len(columns), header_line
            columns = [f"{h} {c.strip()}".strip() for h, c in zip(columns, cells, strict=True)]
        widths = [len(part) for part in lines[top].strip("┏┓").split("┳")]
        assert min(widths) >= 3, f"a column with no room: {lines[top]}"
        yield columns, lines[top : end + 1]


COMMANDS = [
    ("task", "ls"),
    ("task", "show", LONG_TASK),
    ("task", "runs", LONG_TASK),
    ("flow", "ls"),
    ("flow", "show", "shop"),
    ("flow", "runs", "shop"),
    ("queue", "ls"),
    ("queue", "bindings"),
]


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("full", [False, True], ids=["cut", "full"])
def test_tables_keep_every_header_and_fit(dsn: str, seeded: int, columns: int, full: bool) -> None:
    commands = [*COMMANDS, ("flow", "steps", "shop", str(seeded)), ("queue", "read", "orders")]
    for command in commands:
        text = cb(dsn, *command, *(["--full"] if full else []), columns=columns).stdout
        found = list(tables(text))
        assert found, (command, text)
        for headers, _ in found:
            assert all(headers), f"{command}: a blank header in {headers}\n{text}"
        if not full:
            assert max(len(line) for line in text.splitlines()) <= columns, text
            assert TAIL not in text, text
        else:
            assert "…" not in text and "not shown at this width" not in text, text


@pytest.mark.parametrize("columns", [80, 120])
def test_long_values_are_cut_with_an_ellipsis_and_full_shows_them(
    dsn: str, conn: psycopg.Connection[Any], seeded: int, columns: int
) -> None:
    for command in (
        ("task", "runs", LONG_TASK),
        ("flow", "runs", "shop"),
        ("flow", "steps", "shop", str(seeded)),
        ("queue", "read", "orders"),
    ):
        cut = cb(dsn, *command, columns=columns).stdout
        assert "…" in cut, cut
        # one line a run: the JSON is not wrapped down the cell
        assert len(cut.splitlines()) < 15, cut
        # what was read comes back at once
        conn.execute("UPDATE catbird.cb_messages SET visible_at = now()")
        whole = cb(dsn, *command, "--full", columns=columns).stdout
        assert f'"{TAIL}"' in whole, whole
    assert (
        json.loads(cb(dsn, "task", "runs", LONG_TASK, "--json", columns=80).stdout)[0]["input"]
        == BIG
    )


def test_task_and_flow_tables_at_80_columns(dsn: str, seeded: int) -> None:
    text = cb(dsn, "task", "ls", columns=80).stdout
    assert any(LONG_TASK in line for line in text.splitlines())  # the name is not broken
    [(headers, _)] = tables(text)
    assert headers[:2] == ["name", "condition"]
    assert "not shown at this width" in text and "--full" in text

    runs = cb(dsn, "task", "runs", LONG_TASK, columns=80).stdout
    [(headers, _)] = tables(runs)
    assert headers[:2] == ["id", "status"] and headers[-2:] == ["input", "output / error"]
    assert "completed" in runs

    steps = cb(dsn, "flow", "steps", "shop", str(seeded), columns=80).stdout
    [(headers, _)] = tables(steps)
    assert "attempts" in headers and headers[-1] == "output / error"
    assert '{"items": [0, 1, ' in steps

    wide = cb(dsn, "flow", "steps", "shop", str(seeded), columns=120).stdout
    [(headers, _)] = tables(wide)
    assert headers == [
        "step",
        "status",
        "attempts",
        "items",
        "started",
        "finished",
        "output / error",
    ]
    full = cb(dsn, "task", "runs", LONG_TASK, "--full", columns=80).stdout
    [(headers, _)] = tables(full)
    assert headers == [
        "id",
        "status",
        "attempts",
        "priority",
        "created",
        "finished",
        "input",
        "output / error",
    ]


def test_layout_never_gives_a_column_zero_width() -> None:
    columns = [
        Column("name"),
        Column("status"),
        Column("attempts", justify="right"),
        Column("created", stack=True),
        Column("input", fit="cut"),
        Column("output / error", fit="cut"),
    ]
    row = ["x" * 70, "completed", "1", "2030-01-31 12:00:00", "{" * 100, "}" * 100]
    for width in (20, 40, 80, 120):
        console = Console(width=width, record=True, soft_wrap=True)
        console.print(table("t", columns, [row], width=width))
        [(headers, _)] = tables(console.export_text())
        assert headers == [c.header for c in columns]


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_shows_no_bool_metavar() -> None:
    paths = list(_commands(typer.main.get_command(app)))
    assert ("task", "runs") in paths and ("flow", "steps") in paths
    for path in paths:
        text = cb(None, *path, "--help", columns=80).stdout
        assert "<bool>" not in text, (path, text)
        assert "--help" in text
    text = cb(None, "queue", "read", "--help", columns=80).stdout
    assert "--ack" in text and "--json" in text and "--full" in text

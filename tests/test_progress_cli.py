"""Long commands: ``queue send --file``, ``gc``, purges, and their progress display.

CliRunner's streams are not terminals, so these runs are the piped case:
the output must be exactly what it is without progress. The terminal case
replaces :func:`catbird.cli.progress.console` with a forced-terminal console
writing into a buffer.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo
from rich.console import Console

from catbird.cli import progress
from clihelpers import assert_error, cb
from sqlhelpers import T0, Clock, J, fn, messages, scalar


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Progress is drawn on a forced terminal; returns what was drawn."""
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    monkeypatch.setattr(progress, "console", lambda: console)
    return buffer


def jsonl(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "bodies.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_send_file_sends_every_line_in_batches(conn, dsn, tmp_path):
    fn(conn, "cb_create_queue", name="orders")
    path = jsonl(tmp_path, '{"id": 1}', "", "2", '"three"', "[4]", "null")
    result = cb(
        dsn, "queue", "send", "orders", "--file", path, "--batch-size", "2", "--priority", "3"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "Sent 5 message(s) to queue orders.\n"
    assert result.stderr == ""
    stored = messages(conn, "orders")
    assert [m["body"] for m in stored] == [{"id": 1}, 2, "three", [4], None]
    assert {m["priority"] for m in stored} == {3}


def test_send_file_json_and_stdin(conn, dsn):
    fn(conn, "cb_create_queue", name="orders")
    result = cb(
        dsn,
        "queue",
        "send",
        "orders",
        "--file",
        "-",
        "--headers",
        '{"source": "import"}',
        "--json",
        input='{"a": 1}\n{"a": 2}\n',
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"queue": "orders", "sent": 2}
    assert [m["headers"] for m in messages(conn, "orders")] == [{"source": "import"}] * 2


def test_send_file_with_a_bad_line_sends_nothing(conn, dsn, tmp_path):
    fn(conn, "cb_create_queue", name="orders")
    path = jsonl(tmp_path, "1", "2", "{oops", "4")
    assert_error(
        cb(dsn, "queue", "send", "orders", "--file", path), 2, "line 3 of", "not valid JSON"
    )
    assert messages(conn, "orders") == []


def test_send_file_to_a_missing_queue_sends_nothing(conn, dsn, tmp_path):
    path = jsonl(tmp_path, "1", "2", "3")
    result = cb(dsn, "queue", "send", "nowhere", "--file", path, "--batch-size", "1")
    assert_error(result, 1, "nowhere")
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0


def test_send_takes_a_body_or_a_file(dsn, tmp_path):
    path = jsonl(tmp_path, "1")
    assert_error(cb(dsn, "queue", "send", "orders"), 2, "give either BODY or --file")
    assert_error(cb(dsn, "queue", "send", "orders", "1", "--file", path), 2, "either BODY or")
    assert_error(
        cb(dsn, "queue", "send", "orders", "--file", path, "--concurrency-key", "k"),
        2,
        "--concurrency-key",
    )
    assert_error(
        cb(dsn, "queue", "send", "orders", "--file", str(tmp_path / "missing.jsonl")),
        2,
        "missing.jsonl",
    )


def test_send_file_draws_a_bar_on_a_terminal_and_prints_the_same(conn, dsn, tmp_path, terminal):
    fn(conn, "cb_create_queue", name="orders")
    path = jsonl(tmp_path, *[str(n) for n in range(7)])
    result = cb(dsn, "queue", "send", "orders", "--file", path, "--batch-size", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Sent 7 message(s) to queue orders.\n"
    drawn = terminal.getvalue()
    assert "Sending to orders" in drawn
    assert "7/7" in drawn


def at(dsn: str, when: dt.datetime) -> str:
    return make_conninfo(dsn, options=f"-c catbird.fake_now={when.isoformat()}")


def test_gc_runs_batches_until_nothing_is_left(conn, dsn):
    Clock(conn)
    fn(conn, "cb_create_queue", name="short")
    for n in range(5):
        fn(conn, "cb_send", queue="short", body=J(n), expires_at=T0 + dt.timedelta(seconds=1))
    later = at(dsn, T0 + dt.timedelta(seconds=10))
    result = cb(later, "gc", "--batch-size", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["expired_messages_deleted"] == 5
    assert report["batches"] == 4  # 2, 2, 1, then a batch with nothing to do
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0
    again = cb(later, "gc")
    assert again.exit_code == 0
    assert again.stdout == "gc (1 batch): nothing to collect\n"


def test_gc_once_and_its_spinner(conn, dsn, terminal):
    Clock(conn)
    fn(conn, "cb_create_queue", name="short")
    for n in range(3):
        fn(conn, "cb_send", queue="short", body=J(n), expires_at=T0 + dt.timedelta(seconds=1))
    result = cb(at(dsn, T0 + dt.timedelta(seconds=10)), "gc", "--batch-size", "2", "--once")
    assert result.exit_code == 0, result.output
    assert result.stdout == "gc (1 batch): expired_messages_deleted=2\n"
    assert "Collecting garbage" in terminal.getvalue()
    assert_error(cb(dsn, "gc", "--batch-size", "0"), 2, "--batch-size")


def test_purges_show_a_spinner_only_on_a_terminal(conn, dsn, terminal):
    fn(conn, "cb_create_queue", name="orders")
    fn(conn, "cb_send", queue="orders", body=J(1))
    result = cb(dsn, "queue", "purge", "orders", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Purged 1 message(s) from queue orders.\n"
    assert "Purging queue orders" in terminal.getvalue()
    fn(conn, "cb_create_task", name="mail")
    fn(conn, "cb_run_task", name="mail", input=J({}))
    result = cb(dsn, "task", "purge", "mail", "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Deleted 1 run of mail.\n"
    assert "Deleting runs of mail" in terminal.getvalue()


def test_piped_purge_prints_nothing_extra(conn, dsn):
    fn(conn, "cb_create_queue", name="orders")
    result = cb(dsn, "queue", "purge", "orders", "--yes")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "Purged 0 message(s) from queue orders.\n",
        "",
    )

"""``catbird inbox send|read|seen`` against a real PostgreSQL (in-process typer runs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from clihelpers import assert_error, cb, cbj
from sqlhelpers import engine_state


@pytest.fixture(autouse=True)
def _no_env_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CATBIRD_DSN", raising=False)


def test_send_read_and_mark_seen(dsn: str) -> None:
    first = cbj(dsn, "inbox", "send", "user-42", "import.started", "Import 7 started")
    assert first == {"identity": "user-42", "id": first["id"]}
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    cbj(dsn, "inbox", "send", "user-42", "import.progress", "10%", "--collapse-key", "imp-7")
    newest = cbj(
        dsn,
        "inbox",
        "send",
        "user-42",
        "import.progress",
        "60%",
        "--collapse-key",
        "imp-7",
        "--expires-at",
        expires,
    )["id"]
    unseen = cbj(dsn, "inbox", "read", "user-42")
    assert [(n["id"], n["message"], n["collapse_key"]) for n in unseen] == [
        (first["id"], "Import 7 started", None),
        (newest, "60%", "imp-7"),
    ]
    assert datetime.fromisoformat(unseen[1]["expires_at"]) == datetime.fromisoformat(expires)
    assert cbj(dsn, "inbox", "read", "user-42", "--after-id", str(first["id"]), "-n", "1") == [
        unseen[1]
    ]

    # A table that fits 80 columns, then the acknowledgements.
    table = cb(dsn, "inbox", "read", "user-42")
    assert table.exit_code == 0
    assert "Import 7 started" in table.stdout and "import.progress" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert cbj(dsn, "inbox", "seen", "user-42", str(first["id"])) == {
        "identity": "user-42",
        "marked": 1,
    }
    done = cb(dsn, "inbox", "seen", "user-42", "--until", str(newest))
    assert done.exit_code == 0 and "Marked 1 notification of user-42 seen." in done.stdout
    assert cbj(dsn, "inbox", "read", "user-42") == []
    empty = cb(dsn, "inbox", "read", "user-42")
    assert "No unseen notifications for user-42." in empty.stdout


def test_bad_input_is_one_line_and_writes_nothing(dsn: str, conn: psycopg.Connection[Any]) -> None:
    cbj(dsn, "inbox", "send", "user-42", "t", "kept")
    before = engine_state(conn)
    assert_error(cb(dsn, "inbox", "send", "", "t"), 1, "invalid identity")
    assert_error(cb(dsn, "inbox", "send", "user-42", "a..b"), 1, "invalid topic")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert_error(cb(dsn, "inbox", "send", "user-42", "t", "--expires-at", past), 1, "expires_at")
    assert_error(cb(dsn, "inbox", "send", "user-42", "t", "--expires-at", "soon"), 2, "ISO 8601")
    assert_error(cb(dsn, "inbox", "seen", "user-42"), 2, "either notification ids or --until")
    assert_error(cb(dsn, "inbox", "seen", "user-42", "1", "--until", "2"), 2, "one of the two")
    assert cb(dsn, "inbox", "read", "user-42", "-n", "0").exit_code == 2
    assert engine_state(conn) == before

"""Helpers shared by the command-line suites: run ``catbird`` in-process.

The command runs against the test's database with ``--dsn`` appended, on a
terminal of ``columns`` characters (the width decides how tables render), and
must never end in a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner, Result

from catbird.cli import app

__all__ = ["assert_error", "cb", "cbj"]

runner = CliRunner()


def cb(dsn: str | None, *args: str, input: str | None = None, columns: int = 80) -> Result:
    """Run ``catbird ARGS --dsn DSN`` in-process, on a ``columns`` wide "terminal"."""
    argv = [*args, "--dsn", dsn] if dsn is not None else list(args)
    result = runner.invoke(
        app, argv, input=input, env={"COLUMNS": str(columns)}, catch_exceptions=False
    )
    assert "Traceback" not in result.output
    return result


def cbj(dsn: str, *args: str) -> Any:
    """Run ``catbird ARGS --dsn DSN --json``, expect success, return the parsed document."""
    result = cb(dsn, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_error(result: Result, code: int, *fragments: str) -> None:
    """A failed command: exit ``code``, nothing on stdout, the fragments on stderr."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    for fragment in fragments:
        assert fragment in message, message

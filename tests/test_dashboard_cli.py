"""``catbird dashboard``: serves the dashboard on the given address, with the
DSN from ``--dsn`` or ``CATBIRD_DSN``; refuses to start without a database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from clihelpers import assert_error, cb
from dashboardhelpers import seed

PYTHON_DIR = Path(__file__).resolve().parent.parent / "python"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dashboard_needs_a_database() -> None:
    assert_error(cb(None, "dashboard"), 2, "no database given: pass --dsn or set CATBIRD_DSN")
    assert_error(cb("postgresql://x", "dashboard", "--port", "0"), 2, "--port")


def test_dashboard_serves_the_database_of_catbird_dsn(dsn: str, conn: psycopg.Connection) -> None:
    seed(conn)
    port = _free_port()
    env = {**os.environ, "CATBIRD_DSN": dsn, "PYTHONPATH": str(PYTHON_DIR)}
    command = [sys.executable, "-m", "catbird", "dashboard", "--port", str(port), "--title", "t1"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = None
        # a condition wait: until the server answers, or exits
        while page is None:
            assert server.poll() is None, server.stdout.read() if server.stdout else ""
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
            except httpx.TransportError:
                time.sleep(0.05)
        assert page.status_code == 200
        assert "<title>t1</title>" in page.text and "send_email" in page.text
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert f"catbird dashboard on http://127.0.0.1:{port}/" in output.decode()

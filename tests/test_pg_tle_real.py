"""The pg_tle install against a real pg_tle (not the stand-in of test_install.py).

Runs only when ``PG_TLE_DSN`` names a superuser DSN of a server that has
``shared_preload_libraries = 'pg_tle'`` and no catbird files on disk (pg_tle
refuses to shadow an extension whose control file exists):

    make pg-tle-check PG_DSN=postgresql://postgres@host:5432/postgres

Elsewhere every test here is skipped with the reason printed (pytest -rs).
Each test works in its own database and with its own roles, dropped after.
The upgrade test registers 0.1.0 (extension/history/) and lets
``catbird.db.install.upgrade`` register this version and the update path.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cataloghelpers import differences, snapshot
from catbird.db import install as inst
from catbird.db import pg_tle

PG_TLE_DSN = os.environ.get("PG_TLE_DSN", "")


def _skip_reason() -> str | None:
    if not PG_TLE_DSN:
        return "PG_TLE_DSN is not set: run 'make pg-tle-check PG_DSN=...' against a pg_tle server"
    try:
        with psycopg.connect(PG_TLE_DSN, autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('shared_preload_libraries') ~ 'pg_tle',"
                " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'catbird')"
            ).fetchone()
    except psycopg.Error as exc:
        return f"PG_TLE_DSN does not answer: {exc}"
    assert row is not None
    if not row[0]:
        return "the PG_TLE_DSN server does not have pg_tle in shared_preload_libraries"
    if row[1]:
        return "the PG_TLE_DSN server has catbird's files on disk; pg_tle refuses to shadow them"
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.fixture
def tle_db() -> Iterator[tuple[str, str]]:
    """(superuser DSN, non-superuser role) for a fresh database with pg_tle created."""
    name = f"catbird_tle_{uuid.uuid4().hex[:10]}"
    role = f"catbird_tle_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_TLE_DSN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        dsn = make_conninfo(PG_TLE_DSN, dbname=name)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_tle")
                conn.execute(sql.SQL("GRANT pgtle_admin TO {}").format(sql.Identifier(role)))
            yield dsn, role
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DROP EXTENSION IF EXISTS catbird")
                conn.execute("SELECT pgtle.uninstall_extension_if_exists('catbird')")
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_pgtle_admin_member_installs_catbird_once_granted_create(
    tle_db: tuple[str, str],
) -> None:
    dsn, role = tle_db
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(inst.InstallError, match="CREATE privilege on database"):
            inst.install(conn, mode="pg-tle-script")
        conn.execute("RESET ROLE")
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        inst.install(conn, mode="pg-tle-script")
        st = inst.status(conn)
        assert (st["how"], st["version"]) == ("extension", inst.EXTENSION_VERSION)
        assert st["pg_tle"]
        assert inst.EXTENSION_VERSION in st["available_versions"]
        conn.execute("SELECT catbird.cb_create_queue('tle')")
        conn.execute("SELECT catbird.cb_send('tle', '{}'::jsonb)")
        assert len(conn.execute("SELECT * FROM catbird.cb_read('tle', 1, 1000)").fetchall()) == 1
        # Registered once: --mode extension now sees the pg_tle version.
        conn.execute("DROP EXTENSION catbird")
        inst.install(conn, mode="extension")
        assert inst.status(conn)["how"] == "extension"


def test_a_pgtle_admin_member_upgrades_from_0_1_0_through_the_update_path(
    tle_db: tuple[str, str],
) -> None:
    dsn, role = tle_db
    built = Path(__file__).resolve().parent.parent / "python" / "catbird" / "sql"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        # catbird 0.1.0 as it was registered and installed through pg_tle.
        old = pg_tle.PgTleExtension.from_control(
            inst.control_text().replace(f"'{inst.EXTENSION_VERSION}'", "'0.1.0'"),
            (built / "catbird--0.1.0.sql").read_text(),
            name="catbird",
        )
        conn.execute(pg_tle.render_script(old).encode())
        conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
        conn.execute("SELECT catbird.cb_create_queue('kept')")
        conn.execute("""SELECT catbird.cb_send('kept', '{"n": 1}'::jsonb)""")
        report = inst.upgrade(conn)
        assert (report["pg_tle"], report["from_version"], report["to_version"]) == (
            True,
            "0.1.0",
            inst.EXTENSION_VERSION,
        )
        st = inst.status(conn)
        assert (st["how"], st["version"]) == ("extension", inst.EXTENSION_VERSION)
        rows = conn.execute("SELECT body FROM catbird.cb_read('kept', 5, 1000)").fetchall()
        assert rows == [({"n": 1},)]
        upgraded = snapshot(conn)
        # A fresh install of the version registered by the upgrade has the
        # same catalog.
        conn.execute("DROP EXTENSION catbird")
        conn.execute("CREATE EXTENSION catbird")
        assert inst.status(conn)["version"] == inst.EXTENSION_VERSION
        assert differences(upgraded, snapshot(conn)) == []

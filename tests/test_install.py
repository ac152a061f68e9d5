"""Installation: CREATE/DROP EXTENSION, plain mode, the pg_tle script, status,
the embedded dev server, and the built SQL staying in sync with its sources."""

from __future__ import annotations

import os
import re
import selectors
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from catbird.db import install as inst
from catbird.db import pg_tle
from catbird.db.embedded import start_embedded
from catbird.db.install import InstallError, install, status

ROOT = Path(__file__).resolve().parent.parent
BUILT_SQL = ROOT / "python" / "catbird" / "sql" / f"catbird--{inst.EXTENSION_VERSION}.sql"
BUILT_CONTROL = ROOT / "python" / "catbird" / "sql" / "catbird.control"
OLD_SQL = ROOT / "python" / "catbird" / "sql" / "catbird--0.1.0.sql"
UPDATE_SQL = ROOT / "python" / "catbird" / "sql" / f"catbird--0.1.0--{inst.EXTENSION_VERSION}.sql"
SOURCE_CONTROL = ROOT / "extension" / "catbird.control"


# --- helpers -----------------------------------------------------------------


def _objects(conn: psycopg.Connection) -> list[str]:
    """Every function, relation and type in schema catbird, as comparable text."""
    rows = conn.execute(
        """
        SELECT 'function ' || p.oid::regprocedure::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'catbird'
        UNION ALL
        SELECT 'relation ' || c.relkind::text || ' ' || c.relname
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'catbird'
        UNION ALL
        SELECT 'type ' || t.typname
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = 'catbird'
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]


def _schema_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'catbird'").fetchone()
    assert row is not None
    return bool(row[0])


def _extension_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'catbird'").fetchone()
    return None if row is None else str(row[0])


def _uninstall(conn: psycopg.Connection) -> None:
    conn.execute("DROP EXTENSION IF EXISTS catbird")
    conn.execute("DROP SCHEMA IF EXISTS catbird CASCADE")


def _smoke(conn: psycopg.Connection) -> None:
    """The installed engine works: a message goes through a queue."""
    conn.execute("SELECT catbird.cb_create_queue(name => 'smoke')")
    row = conn.execute(
        "SELECT catbird.cb_send(queue => 'smoke', body => %s::jsonb)", ('{"n": 1}',)
    ).fetchone()
    assert row is not None
    got = conn.execute(
        "SELECT id, body FROM catbird.cb_read(queue => 'smoke', quantity => 10, hide_for => 30000)"
    ).fetchall()
    assert got == [(row[0], {"n": 1})]


# A stand-in for pg_tle (a C extension that must be in shared_preload_libraries
# and is not packaged for this machine), faithful to its SQL API: 1.4's
# five-argument or 1.5's six-argument install_extension, install_update_path,
# available_extensions() (1.4's three columns, 1.5's eight) and
# available_extension_versions(), all executable by pgtle_admin only, and the
# refusal to shadow an extension whose control file is on disk (55000). It
# records what it is given in pgtle.registry; CREATE EXTENSION on the test
# server is then served by the files, so the registered payload is run the
# way pg_tle would run it in a separate test.
def _pgtle_stand_in(api: str = "1.5") -> str:
    schema_param = ", schema text DEFAULT NULL" if api == "1.5" else ""
    schema_value = "schema" if api == "1.5" else "NULL"
    extensions_out = (
        "name name, default_version text, superuser boolean, trusted boolean, "
        "relocatable boolean, schema name, requires name[], comment text"
        if api == "1.5"
        else "name name, default_version text, comment text"
    )
    extensions_select = (
        "r.name, r.version, false, false, false, r.schema, r.requires, r.description"
        if api == "1.5"
        else "r.name, r.version, r.description"
    )
    install_signature = "text, text, text, text, text[]" + (", text" if api == "1.5" else "")
    return f"""
DO $$ BEGIN
    IF to_regrole('pgtle_admin') IS NULL THEN CREATE ROLE pgtle_admin NOLOGIN; END IF;
END $$;
CREATE SCHEMA pgtle;
CREATE TABLE pgtle.registry (
    name text, version text, description text, ext text, requires text[], schema text,
    PRIMARY KEY (name, version)
);
CREATE TABLE pgtle.update_paths (
    name text, fromvers text, tovers text, ext text, PRIMARY KEY (name, fromvers, tovers)
);
-- Names whose control file the stand-in treats as present on disk.
CREATE TABLE pgtle.files_on_disk (name text PRIMARY KEY);
CREATE FUNCTION pgtle.install_extension(
    name text, version text, description text, ext text, requires text[] DEFAULT NULL{schema_param}
) RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    IF EXISTS (SELECT FROM pgtle.files_on_disk f WHERE f.name = install_extension.name) THEN
        RAISE EXCEPTION 'control file already exists for the % extension', name
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Another version of a registered extension may be added (it becomes the
    -- default); the same version again is refused.
    IF EXISTS (SELECT FROM pgtle.registry r
               WHERE r.name = install_extension.name AND r.version = install_extension.version) THEN
        RAISE EXCEPTION 'extension "%" already installed', name USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO pgtle.registry VALUES (name, version, description, ext, requires, {schema_value});
    RETURN true;
END $f$;
CREATE FUNCTION pgtle.install_update_path(name text, fromvers text, tovers text, ext text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $f$
BEGIN
    IF EXISTS (SELECT FROM pgtle.files_on_disk f WHERE f.name = install_update_path.name) THEN
        RAISE EXCEPTION 'control file already exists for the "%" extension', name
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT FROM pgtle.update_paths u
               WHERE u.name = install_update_path.name AND u.fromvers = install_update_path.fromvers
                 AND u.tovers = install_update_path.tovers) THEN
        RAISE EXCEPTION 'extension "%" update path "%-%" already installed', name, fromvers, tovers
            USING ERRCODE = 'duplicate_object';
    END IF;
    INSERT INTO pgtle.update_paths VALUES (name, fromvers, tovers, ext);
    RETURN true;
END $f$;
CREATE FUNCTION pgtle.available_extensions(OUT {extensions_out.replace(", ", ", OUT ")})
RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER AS $f$
    SELECT DISTINCT ON (r.name) {extensions_select}
    FROM pgtle.registry r ORDER BY r.name, r.version DESC
$f$;
CREATE FUNCTION pgtle.available_extension_versions(
    OUT name name, OUT version text, OUT superuser boolean, OUT trusted boolean,
    OUT relocatable boolean, OUT schema name, OUT requires name[], OUT comment text)
RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER AS $f$
    SELECT r.name, r.version, false, false, false, r.schema, r.requires, r.description
    FROM pgtle.registry r
$f$;
REVOKE ALL ON FUNCTION pgtle.install_extension({install_signature}) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgtle.install_update_path(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtle.install_extension({install_signature}) TO pgtle_admin;
GRANT EXECUTE ON FUNCTION pgtle.install_update_path(text, text, text, text) TO pgtle_admin;
GRANT USAGE ON SCHEMA pgtle TO PUBLIC;
"""


_CAPTURING_PGTLE = _pgtle_stand_in("1.5")


def _built_header() -> str:
    # The Makefile is the one place the header is defined.
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^BUILT_HEADER\s*:=\s*(.*)$", makefile, re.MULTILINE)
    assert match is not None, "Makefile defines no BUILT_HEADER"
    return match.group(1).strip() + "\n"


def _control_fields() -> dict[str, str]:
    return pg_tle.parse_control(SOURCE_CONTROL.read_text())


# --- the built artifact ----------------------------------------------------------


def test_built_sql_is_the_concatenation_of_the_sources() -> None:
    sources = sorted((ROOT / "extension" / "sql").glob("[0-9]*.sql"))
    assert sources, "extension/sql has no [0-9]*.sql files"
    expected = _built_header() + "".join(p.read_text() for p in sources)
    actual = BUILT_SQL.read_text() if BUILT_SQL.exists() else ""
    assert actual == expected, (
        f"{BUILT_SQL.relative_to(ROOT)} is stale (it is not extension/sql/*.sql "
        "concatenated): run make build"
    )
    assert BUILT_CONTROL.read_text() == SOURCE_CONTROL.read_text(), (
        f"{BUILT_CONTROL.relative_to(ROOT)} differs from extension/catbird.control: run make build"
    )


def test_packaged_sql_is_the_built_file() -> None:
    assert inst.extension_sql() == BUILT_SQL.read_text()
    assert inst.control_text() == SOURCE_CONTROL.read_text()
    assert _control_fields()["default_version"] == inst.EXTENSION_VERSION


def test_built_sql_has_nothing_pg_tle_or_plain_mode_would_refuse() -> None:
    ext = pg_tle.PgTleExtension.from_control(
        SOURCE_CONTROL.read_text(), BUILT_SQL.read_text(), name="catbird"
    )
    # \echo lines would be dropped by PostgreSQL and pg_tle alike; requiring
    # none keeps the three install modes byte-for-byte identical.
    assert pg_tle.validate(ext) == BUILT_SQL.read_text()
    assert "@extowner@" not in ext.sql


# --- CREATE / DROP EXTENSION ------------------------------------------------------


def test_create_extension_creates_schema_catbird_owned_by_the_extension(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    conn.execute("CREATE EXTENSION catbird")
    assert _extension_version(conn) == inst.EXTENSION_VERSION
    assert _schema_exists(conn)
    assert any(o.startswith("function ") for o in _objects(conn))
    # Every function and relation in the schema belongs to the extension, so
    # DROP EXTENSION and pg_dump treat them as part of it.
    row = conn.execute(
        """
        SELECT count(*) FILTER (WHERE d.objid IS NULL), count(*)
          FROM (SELECT 'pg_proc'::regclass AS classid, p.oid
                  FROM pg_proc p WHERE p.pronamespace = 'catbird'::regnamespace
                UNION ALL
                SELECT 'pg_class'::regclass, c.oid
                  FROM pg_class c
                 WHERE c.relnamespace = 'catbird'::regnamespace
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')) o
          LEFT JOIN pg_depend d
            ON d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'catbird')
        """
    ).fetchone()
    assert row is not None
    assert row[1] > 0
    assert row[0] == 0, f"{row[0]} object(s) in schema catbird are not extension members"


def test_drop_extension_removes_every_object(conn: psycopg.Connection) -> None:
    assert _objects(conn)
    conn.execute("DROP EXTENSION catbird")
    assert _extension_version(conn) is None
    assert _objects(conn) == []


def test_drop_extension_removes_the_schema(conn: psycopg.Connection) -> None:
    conn.execute("DROP EXTENSION catbird")
    assert not _schema_exists(conn), (
        "DROP EXTENSION catbird left schema catbird behind: a schema that CREATE "
        "EXTENSION creates from the control file's 'schema =' line is not a member "
        "of the extension. Create the schema inside the extension script instead."
    )


def test_extension_can_be_created_again_after_drop(conn: psycopg.Connection) -> None:
    before = _objects(conn)
    _uninstall(conn)
    conn.execute("CREATE EXTENSION catbird")
    assert _objects(conn) == before
    _smoke(conn)


# --- install() --------------------------------------------------------------------


def test_install_extension_mode_is_idempotent(conn: psycopg.Connection) -> None:
    expected = _objects(conn)
    _uninstall(conn)
    install(conn, mode="extension")
    assert _extension_version(conn) == inst.EXTENSION_VERSION
    install(conn, mode="extension")
    assert _objects(conn) == expected
    _smoke(conn)


def test_install_extension_mode_explains_missing_extension_files(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package newer than the files installed on the server: the version it
    # asks for is not there, exactly as when no files are there at all.
    monkeypatch.setattr(inst, "EXTENSION_VERSION", "99.0.0")
    with pytest.raises(InstallError, match="upgrade it instead"):
        install(conn, mode="extension")
    _uninstall(conn)
    with pytest.raises(InstallError) as info:
        install(conn, mode="extension")
    message = str(info.value)
    assert "99.0.0 extension files are not on this server" in message
    assert "make install PG_CONFIG=" in message
    assert "--mode plain" in message
    assert not _schema_exists(conn)


def test_install_plain_mode_creates_the_same_objects_without_an_extension(
    conn: psycopg.Connection,
) -> None:
    expected = _objects(conn)
    _uninstall(conn)
    search_path = conn.execute("SHOW search_path").fetchone()
    install(conn, mode="plain")
    assert _extension_version(conn) is None
    assert _objects(conn) == expected
    assert conn.execute("SHOW search_path").fetchone() == search_path
    _smoke(conn)
    install(conn, mode="plain")  # installed already: nothing to do
    with pytest.raises(InstallError, match="plain"):
        install(conn, mode="extension")
    assert _extension_version(conn) is None


def test_install_plain_mode_works_in_the_callers_transaction(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:  # not autocommit
        _uninstall(conn)
        conn.commit()
        # Inside a transaction the caller already has open, install() is a
        # savepoint: the caller's rollback undoes it.
        conn.execute("CREATE TABLE mine (id int)")
        install(conn, mode="plain")
        assert status(conn)["how"] == "plain"
        conn.rollback()
        assert not _schema_exists(conn)
        conn.rollback()
        # With no transaction open, install() commits on its own.
        install(conn, mode="plain")
        conn.rollback()
        assert status(conn)["how"] == "plain"


def test_install_extension_over_a_plain_install_is_refused(conn: psycopg.Connection) -> None:
    _uninstall(conn)
    install(conn, mode="plain")
    with pytest.raises(InstallError, match="already installed"):
        install(conn, mode="pg-tle-script")


def test_install_rejects_an_unknown_mode(conn: psycopg.Connection) -> None:
    with pytest.raises(InstallError, match="unknown install mode"):
        install(conn, mode="rpm")  # type: ignore[arg-type]


def test_install_pg_tle_mode_without_pg_tle_fails_clearly_and_changes_nothing(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    with pytest.raises(InstallError, match="pg_tle"):
        install(conn, mode="pg-tle-script")
    assert not _schema_exists(conn)
    assert _extension_version(conn) is None


def test_install_pg_tle_mode_registers_then_creates_the_extension(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    conn.execute(_CAPTURING_PGTLE)
    install(conn, mode="pg-tle-script")
    captured = conn.execute("SELECT name, version, ext FROM pgtle.registry").fetchall()
    assert captured == [("catbird", inst.EXTENSION_VERSION, BUILT_SQL.read_text())]
    # The stand-in registers nothing, so this CREATE EXTENSION was served by
    # the files on the test server; what matters is that install() issued it.
    assert _extension_version(conn) == inst.EXTENSION_VERSION
    install(conn, mode="pg-tle-script")  # installed already: not registered twice
    assert conn.execute("SELECT count(*) FROM pgtle.registry").fetchone() == (1,)


@pytest.mark.parametrize("api", ["1.4", "1.5"])
def test_install_pg_tle_mode_works_with_both_pg_tle_apis(
    conn: psycopg.Connection, api: str
) -> None:
    _uninstall(conn)
    conn.execute(_pgtle_stand_in(api))
    install(conn, mode="pg-tle-script")
    assert conn.execute("SELECT name, version, schema FROM pgtle.registry").fetchall() == [
        ("catbird", inst.EXTENSION_VERSION, None)
    ]
    assert _extension_version(conn) == inst.EXTENSION_VERSION


def _tle_role(conn: psycopg.Connection) -> str:
    name = f"tle_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    conn.execute(sql.SQL("GRANT pgtle_admin TO {}").format(sql.Identifier(name)))
    return name


def _drop_role(conn: psycopg.Connection, name: str) -> None:
    conn.execute("RESET ROLE")
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_install_pg_tle_as_a_non_superuser_needs_create_on_the_database(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    conn.execute(_pgtle_stand_in("1.5"))
    role = _tle_role(conn)
    database = conn.info.dbname
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(InstallError, match="CREATE privilege on database") as info:
            install(conn, mode="pg-tle-script")
        assert "GRANT CREATE ON DATABASE" in str(info.value)
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM pgtle.registry").fetchone() == (0,)
        assert not _schema_exists(conn)
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        install(conn, mode="pg-tle-script")
        assert _extension_version(conn) == inst.EXTENSION_VERSION
        conn.execute("RESET ROLE")
        owner = conn.execute(
            "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'catbird'"
        ).fetchone()
        assert owner == (role,)
        # The group roles work on an install made by a non-superuser owner.
        conn.execute("SET ROLE catbird_admin")
        conn.execute("SELECT catbird.cb_create_queue('tle')")
        conn.execute("RESET ROLE")
    finally:
        _drop_role(conn, role)


def test_install_pg_tle_without_pgtle_admin_says_so(conn: psycopg.Connection) -> None:
    _uninstall(conn)
    conn.execute(_pgtle_stand_in("1.4"))
    role = f"nottle_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        with pytest.raises(InstallError, match="not a member of pgtle_admin"):
            install(conn, mode="pg-tle-script")
    finally:
        _drop_role(conn, role)


def test_install_pg_tle_reports_pg_tle_refusals_as_such(conn: psycopg.Connection) -> None:
    _uninstall(conn)
    conn.execute(_pgtle_stand_in("1.5"))
    conn.execute("INSERT INTO pgtle.files_on_disk VALUES ('catbird')")
    with pytest.raises(InstallError, match=r"pg_tle refused.*control file already exists"):
        install(conn, mode="pg-tle-script")
    assert not _schema_exists(conn)


def test_status_and_extension_mode_see_pg_tle_registered_versions(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn.execute(_pgtle_stand_in("1.4"))
    conn.execute(
        "INSERT INTO pgtle.registry"
        " VALUES ('catbird', '9.9.9', 'registered', 'SELECT 1;', NULL, NULL)"
    )
    assert status(conn)["available_versions"] == ["0.1.0", inst.EXTENSION_VERSION, "9.9.9"]
    _uninstall(conn)
    monkeypatch.setattr(inst, "EXTENSION_VERSION", "9.9.9")
    # --mode extension goes ahead with CREATE EXTENSION (served by pg_tle on a
    # real server; here the stand-in registered nothing the server can load).
    with pytest.raises(psycopg.Error) as info:
        install(conn, mode="extension")
    assert not isinstance(info.value, InstallError)


# --- status() ---------------------------------------------------------------------


def test_status_reports_an_extension_install(conn: psycopg.Connection, pg_major: int) -> None:
    st = status(conn)
    version_num = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    assert version_num is not None
    assert st == {
        "installed": True,
        "how": "extension",
        "version": inst.EXTENSION_VERSION,
        "schema_present": True,
        # 0.1.0: the released install script, kept as the upgrades' start.
        "available_versions": ["0.1.0", inst.EXTENSION_VERSION],
        "pg_tle": False,
        "server_version": conn.execute("SHOW server_version").fetchone()[0],  # type: ignore[index]
        "server_version_num": version_num[0],
    }
    assert st["server_version_num"] // 10000 == pg_major


def test_status_reports_no_install(conn: psycopg.Connection) -> None:
    _uninstall(conn)
    st = status(conn)
    assert (st["installed"], st["how"], st["version"], st["schema_present"]) == (
        False,
        "none",
        None,
        False,
    )
    # A leftover empty schema is reported, but is not an installation.
    conn.execute("CREATE SCHEMA catbird")
    st = status(conn)
    assert (st["installed"], st["how"], st["schema_present"]) == (False, "none", True)


def test_status_reports_a_plain_install(conn: psycopg.Connection) -> None:
    _uninstall(conn)
    install(conn, mode="plain")
    st = status(conn)
    assert (st["installed"], st["how"], st["version"], st["schema_present"]) == (
        True,
        "plain",
        inst.EXTENSION_VERSION,
        True,
    )


# --- the pg_tle script ------------------------------------------------------------


def _parse_pg_tle_script(text: str) -> dict[str, object]:
    delimiter = pg_tle.DELIMITER
    assert text.count(delimiter) == 2, "the payload delimiter must occur exactly twice"
    head, payload, tail = text.split(delimiter)
    call = head[head.index("SELECT pgtle.install_extension(") :]
    literals = [s.replace("''", "'") for s in re.findall(r"'((?:[^']|'')*)'", call)]
    assert len(literals) == 3, f"expected name, version, description before the payload: {call!r}"
    # Five arguments (pg_tle 1.4 and 1.5) without a pinned schema, six with one.
    tail_match = re.fullmatch(r",\n\s*'\{\}'::text\[\](?:,\n\s*'((?:[^']|'')*)')?\n\);\n", tail)
    assert tail_match is not None, f"unexpected text after the payload: {tail!r}"
    return {
        "name": literals[0],
        "version": literals[1],
        "description": literals[2],
        "payload": payload,
        "schema": tail_match.group(1),
        "before_call": head[: head.index("SELECT pgtle.install_extension(")],
    }


@pytest.fixture
def pg_tle_script(tmp_path: Path) -> str:
    """The script as pg_tle/generate.py writes it."""
    target = tmp_path / "catbird.pg_tle.sql"
    subprocess.run(
        [sys.executable, str(ROOT / "pg_tle" / "generate.py"), "--output", str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    return target.read_text()


def test_pg_tle_script_is_well_formed(pg_tle_script: str) -> None:
    parsed = _parse_pg_tle_script(pg_tle_script)
    control = _control_fields()
    assert parsed["name"] == "catbird"
    assert parsed["version"] == control["default_version"] == inst.EXTENSION_VERSION
    assert parsed["description"] == control["comment"]
    # pg_tle's schema argument is the control file's pinned schema, if any.
    assert parsed["schema"] == control.get("schema")
    assert parsed["payload"] == BUILT_SQL.read_text()
    for delimiter in pg_tle.FORBIDDEN_DELIMITERS:
        assert delimiter not in BUILT_SQL.read_text()
    assert len(f"catbird--{inst.EXTENSION_VERSION}.sql".encode()) < 64
    # Only comments before the call: the script does nothing else.
    before = str(parsed["before_call"])
    assert all(line.startswith("--") for line in before.splitlines() if line.strip())
    # The installer and the generator produce the same script.
    assert inst.pg_tle_script() == pg_tle_script


def test_pg_tle_script_registers_the_built_sql_and_its_payload_installs(
    conn: psycopg.Connection, pg_tle_script: str
) -> None:
    expected = _objects(conn)
    _uninstall(conn)
    conn.execute(_CAPTURING_PGTLE)
    conn.execute(pg_tle_script.encode())
    rows = conn.execute("SELECT * FROM pgtle.registry").fetchall()
    control = _control_fields()
    assert rows == [
        (
            "catbird",
            inst.EXTENSION_VERSION,
            control["comment"],
            BUILT_SQL.read_text(),
            [],
            control.get("schema"),
        )
    ]
    # What pg_tle does on CREATE EXTENSION: create the pinned schema (if the
    # control file pins one), put it alone on search_path, run the text.
    payload = rows[0][3]
    with conn.transaction():
        if control.get("schema"):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(control["schema"])))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier("catbird")))
        conn.execute(payload.encode())
    assert _objects(conn) == expected
    _smoke(conn)


def test_upgrade_through_pg_tle_registers_the_version_and_its_update_path(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    # catbird 0.1.0 registered through pg_tle earlier (the stand-in leaves the
    # CREATE EXTENSION and ALTER EXTENSION to the files on the test server).
    conn.execute(_CAPTURING_PGTLE)
    conn.execute(
        "INSERT INTO pgtle.registry VALUES ('catbird', '0.1.0', 'c', %s, '{}', NULL)",
        (OLD_SQL.read_text(),),
    )
    conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
    conn.execute("SELECT catbird.cb_create_queue('kept')")
    conn.execute("SELECT catbird.cb_send('kept', '{\"n\": 1}'::jsonb)")
    report = inst.upgrade(conn)
    assert report == {
        "how": "extension",
        "from_version": "0.1.0",
        "to_version": inst.EXTENSION_VERSION,
        "changed": True,
        "pg_tle": True,
    }
    assert conn.execute("SELECT version, ext FROM pgtle.registry ORDER BY version").fetchall() == [
        ("0.1.0", OLD_SQL.read_text()),
        (inst.EXTENSION_VERSION, BUILT_SQL.read_text()),
    ]
    assert conn.execute("SELECT * FROM pgtle.update_paths").fetchall() == [
        ("catbird", "0.1.0", inst.EXTENSION_VERSION, UPDATE_SQL.read_text())
    ]
    assert _extension_version(conn) == inst.EXTENSION_VERSION
    assert conn.execute("SELECT body FROM catbird.cb_read('kept', 1, 1000)").fetchall() == [
        ({"n": 1},)
    ]
    assert inst.upgrade(conn)["changed"] is False


def test_upgrade_through_pg_tle_takes_what_is_registered_already(
    conn: psycopg.Connection,
) -> None:
    _uninstall(conn)
    conn.execute(_pgtle_stand_in("1.4"))
    conn.execute(
        "INSERT INTO pgtle.registry VALUES ('catbird', '0.1.0', 'c', 'x', NULL, NULL),"
        " ('catbird', %s, 'c', 'y', NULL, NULL)",
        (inst.EXTENSION_VERSION,),
    )
    conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
    assert inst.upgrade(conn)["pg_tle"] is True
    # The registered version was kept (pg_tle cannot replace it), the path added.
    assert conn.execute("SELECT ext FROM pgtle.registry ORDER BY version").fetchall() == [
        ("x",),
        ("y",),
    ]
    assert conn.execute("SELECT fromvers, tovers FROM pgtle.update_paths").fetchall() == [
        ("0.1.0", inst.EXTENSION_VERSION)
    ]
    assert _extension_version(conn) == inst.EXTENSION_VERSION


def test_pg_tle_update_path_script_registers_the_update_script_and_its_payload_upgrades(
    conn: psycopg.Connection, tmp_path: Path
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "pg_tle_generate", ROOT / "pg_tle" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    [path] = generate.generate_update_paths(tmp_path)
    assert path.name == f"catbird--0.1.0--{inst.EXTENSION_VERSION}.pg_tle.sql"
    script = path.read_text()
    head, payload, _tail = script.split(pg_tle.DELIMITER)
    assert all(line.startswith("--") for line in head.splitlines()[:-5] if line.strip())
    assert payload == UPDATE_SQL.read_text()
    expected = _objects(conn)
    _uninstall(conn)
    conn.execute(_CAPTURING_PGTLE)
    conn.execute(script.encode())
    [(ext,)] = conn.execute("SELECT ext FROM pgtle.update_paths").fetchall()
    # What pg_tle does on ALTER EXTENSION ... UPDATE, minus the extension
    # object: the 0.1.0 script, then the registered update, with schema
    # catbird alone on search_path.
    with conn.transaction():
        conn.execute("SET LOCAL search_path TO catbird")
        conn.execute(OLD_SQL.read_text().encode())
        conn.execute(ext.encode())
    assert _objects(conn) == expected
    _smoke(conn)


def _ext(sql_text: str = "SELECT 1;\n", **kw: str) -> pg_tle.PgTleExtension:
    fields: dict[str, str] = {"name": "catbird", "version": "0.1.0", "description": "d"}
    fields.update(kw)
    return pg_tle.PgTleExtension(sql=sql_text, **fields)


@pytest.mark.parametrize(
    ("ext", "message"),
    [
        (_ext("SELECT $_pgtle_i_$x$_pgtle_i_$;\n"), r"\$_pgtle_i_\$"),
        (_ext("SELECT $_pgtle_o_$x$_pgtle_o_$;\n"), r"\$_pgtle_o_\$"),
        (_ext(name="cat--bird"), "must not contain '--'"),
        (_ext(version="0.1--2"), "must not contain '--'"),
        (_ext(version="-1"), "begin or end"),
        (_ext(name="c" * 40, version="1.2.3.4.5.6.7.8.9.10.11"), "64 bytes"),
        (_ext("SELECT 1;\n\\i other.sql\n"), r"line 2 .*meta-command"),
        (_ext("SELECT 1;\n  \\set x 1\n"), "meta-command"),
    ],
)
def test_pg_tle_refuses_what_pg_tle_would_reject(ext: pg_tle.PgTleExtension, message: str) -> None:
    with pytest.raises(pg_tle.PgTleError, match=message):
        pg_tle.render_script(ext)


def test_pg_tle_drops_echo_lines_like_postgres_does() -> None:
    script = pg_tle.render_script(_ext('\\echo Use "CREATE EXTENSION" \\quit\nSELECT 1;\n'))
    assert f"{pg_tle.DELIMITER}\nSELECT 1;\n{pg_tle.DELIMITER}" in script


def test_pg_tle_quotes_the_description_and_reads_requires_from_control() -> None:
    control = "comment = 'it''s a test'\ndefault_version = '2.0'\nrequires = 'a, b'\n"
    script = pg_tle.render_from_control(control, "SELECT 1;\n", name="x")
    assert "'it''s a test'" in script
    assert "ARRAY['a', 'b']::text[]" in script
    assert script.rstrip().endswith("ARRAY['a', 'b']::text[]\n);")


# --- install_files() --------------------------------------------------------------


def test_install_files_copies_control_and_sql_into_sharedir(tmp_path: Path) -> None:
    sharedir = tmp_path / "share"
    pg_config = tmp_path / "pg_config"
    pg_config.write_text(f"#!/bin/sh\n[ \"$1\" = --sharedir ] && echo '{sharedir}'\n")
    pg_config.chmod(0o755)
    target = inst.install_files(pg_config)
    assert target == sharedir / "extension"
    assert (target / "catbird.control").read_text() == SOURCE_CONTROL.read_text()
    installed_sql = target / f"catbird--{inst.EXTENSION_VERSION}.sql"
    assert installed_sql.read_text() == BUILT_SQL.read_text()
    assert stat.S_IMODE(installed_sql.stat().st_mode) == 0o644
    # Earlier versions' install scripts and the update scripts go along, so
    # that CREATE EXTENSION ... VERSION and ALTER EXTENSION ... UPDATE work.
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["catbird.control", installed_sql.name, "catbird--0.1.0.sql", "catbird--0.1.0--0.2.0.sql"]
    )
    for name in ("catbird--0.1.0.sql", "catbird--0.1.0--0.2.0.sql"):
        assert (target / name).read_text() == (BUILT_SQL.parent / name).read_text()


def test_install_files_without_pg_config_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="pg_config not found"):
        inst.install_files(tmp_path / "missing" / "pg_config")


# --- the embedded dev server --------------------------------------------------------


def _postmaster_running(data_dir: Path) -> bool:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_stopped(data_dir: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _postmaster_running(data_dir):
            return True
        time.sleep(0.1)
    return False


def _readline(proc: subprocess.Popen[str], timeout: float = 120.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            pytest.fail(f"no output from catbird dev within {timeout}s")
    return proc.stdout.readline().strip()


def _run_dev(data_dir: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from pathlib import Path; from catbird.db.embedded import run_dev; "
        "run_dev(Path(sys.argv[1]), 'devdb')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_start_embedded_twice_reuses_the_running_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg18"
    first = start_embedded(data_dir, database="devdb")
    try:
        assert first.started
        second = start_embedded(data_dir, database="devdb")
        assert not second.started
        assert second.dsn == first.dsn
        with psycopg.connect(second.dsn) as c:
            assert _extension_version(c) == inst.EXTENSION_VERSION
            assert c.execute("SHOW server_version_num").fetchone()[0].startswith("18")  # type: ignore[index]
    finally:
        first.stop()
    assert _wait_stopped(data_dir)


def test_run_dev_prints_the_dsn_and_stops_only_a_server_it_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg18"
    owner = _run_dev(data_dir)
    guest: subprocess.Popen[str] | None = None
    try:
        dsn = _readline(owner)
        with psycopg.connect(dsn) as c:
            assert _extension_version(c) == inst.EXTENSION_VERSION
        # A second `catbird dev` attaches; Ctrl-C on it leaves the server up.
        guest = _run_dev(data_dir)
        assert _readline(guest) == dsn
        guest.send_signal(signal.SIGINT)
        assert guest.wait(timeout=60) == 0
        with psycopg.connect(dsn) as c:
            c.execute("SELECT 1")
        # The one that started it stops it, on SIGTERM as on Ctrl-C.
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=60) == 0
        assert _wait_stopped(data_dir)
    finally:
        for proc in (owner, guest):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if _postmaster_running(data_dir):
            start_embedded(data_dir, database="devdb").stop()

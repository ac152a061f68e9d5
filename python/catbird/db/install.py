"""Install the catbird extension into a database, three ways.

``extension``
    ``CREATE EXTENSION catbird`` — the server must have the extension files
    (``make install PG_CONFIG=...``, the Docker image, or ``catbird dev``).
``pg-tle-script``
    Register the packaged SQL through pg_tle (1.4 or later), then ``CREATE
    EXTENSION`` — for managed servers without file-system access. The role
    needs membership in ``pgtle_admin`` and CREATE on the database (the
    extension creates its schema).
``plain``
    Run the packaged SQL as a script into schema ``catbird``, without an
    extension object — when neither of the above is possible.

The SQL is the built ``catbird--<version>.sql`` shipped inside this package,
so all three modes install the same engine.
"""

from __future__ import annotations

import os
import re
import subprocess
from importlib import resources
from importlib.resources.abc import Traversable
from os import PathLike
from pathlib import Path
from typing import Any, Literal, TypedDict, get_args

import psycopg
from psycopg import sql

from ..errors import CatbirdError
from . import pg_tle

__all__ = [
    "EXTENSION_NAME",
    "EXTENSION_VERSION",
    "ROLES",
    "SCHEMA",
    "InstallError",
    "InstallMode",
    "InstallStatus",
    "RolesReport",
    "UpgradeReport",
    "control_text",
    "extension_sql",
    "install",
    "install_files",
    "pg_tle_script",
    "roles",
    "status",
    "update_scripts",
    "upgrade",
]

EXTENSION_NAME = "catbird"
EXTENSION_VERSION = "0.2.0"
SCHEMA = "catbird"

InstallMode = Literal["extension", "plain", "pg-tle-script"]

# A plain install has no pg_extension row to carry its version, so it leaves
# this comment on the schema instead; status() reads it back.
_PLAIN_MARKER = "catbird {version} (plain install, no extension object)"
_PLAIN_MARKER_RE = re.compile(r"^catbird (\S+) \(plain install")

_NOT_AVAILABLE_HINT = (
    "Install the files on the database host with "
    "'make install PG_CONFIG=/path/to/that/server/bin/pg_config' (or use the "
    "Dockerfile.postgres image), register the extension through pg_tle with "
    "--mode pg-tle-script, or install without an extension object with --mode plain."
)


class InstallError(CatbirdError):
    """catbird cannot be installed into this server or database as asked."""


#: The group roles catbird's functions are granted to (SPEC 7.2).
ROLES = ("catbird_admin", "catbird_worker", "catbird_client")


class RolesReport(TypedDict):
    """What :func:`roles` did."""

    created: list[str]
    existing: list[str]
    missing: list[str]
    granted: bool


class UpgradeReport(TypedDict):
    """What :func:`upgrade` did."""

    how: Literal["extension", "plain"]
    from_version: str
    to_version: str
    changed: bool
    pg_tle: bool
    """True when the new version and its update path were registered through pg_tle."""


class InstallStatus(TypedDict):
    """What :func:`status` reports about one database."""

    installed: bool
    how: Literal["extension", "plain", "none"]
    version: str | None
    schema_present: bool
    available_versions: list[str]
    pg_tle: bool
    server_version: str
    server_version_num: int


def _resource(name: str) -> Traversable:
    return resources.files("catbird").joinpath("sql", name)


def extension_sql() -> str:
    """The built extension script shipped in this package."""
    name = f"{EXTENSION_NAME}--{EXTENSION_VERSION}.sql"
    try:
        return _resource(name).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InstallError(
            f"the packaged {name} is missing: run 'make build' in a checkout"
        ) from exc


def control_text() -> str:
    """The extension control file shipped in this package."""
    try:
        return _resource(f"{EXTENSION_NAME}.control").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InstallError(
            f"the packaged {EXTENSION_NAME}.control is missing: run 'make build' in a checkout"
        ) from exc


def pg_tle_script() -> str:
    """The pg_tle registration script for the packaged SQL."""
    return pg_tle.render_from_control(control_text(), extension_sql(), name=EXTENSION_NAME)


def install_files(pg_config: str | PathLike[str]) -> Path:
    """Copy the control file and SQL into the extension directory of a server.

    ``pg_config`` is the path of the server's ``pg_config``; returns the
    ``<sharedir>/extension`` directory the files were written to. This is what
    ``make install`` does, for installations that have the wheel but no
    checkout (the embedded server, tests).
    """
    try:
        sharedir = subprocess.run(
            [str(pg_config), "--sharedir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except FileNotFoundError as exc:
        raise InstallError(f"pg_config not found at {pg_config}") from exc
    except subprocess.CalledProcessError as exc:
        raise InstallError(f"{pg_config} --sharedir failed: {exc.stderr.strip()}") from exc
    target = Path(sharedir) / "extension"
    files = {
        f"{EXTENSION_NAME}.control": control_text(),
        f"{EXTENSION_NAME}--{EXTENSION_VERSION}.sql": extension_sql(),
    }
    # Earlier releases' install scripts (CREATE EXTENSION ... VERSION) and the
    # update scripts (catbird--<from>--<to>.sql, ALTER EXTENSION ... UPDATE).
    for resource in resources.files("catbird").joinpath("sql").iterdir():
        if resource.name.startswith(f"{EXTENSION_NAME}--") and resource.name.endswith(".sql"):
            files.setdefault(resource.name, resource.read_text(encoding="utf-8"))
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            final = target / name
            if final.exists() and final.read_text(encoding="utf-8") == text:
                continue
            # Write then rename (per process: test sessions may run this
            # concurrently) so that a server never reads a half-written file.
            tmp = target / f".{name}.{os.getpid()}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(0o644)
            tmp.replace(final)
    except PermissionError as exc:
        raise InstallError(
            f"cannot write to {target}: run as a user who may write there (e.g. root)"
        ) from exc
    return target


def _pg_tle_versions(conn: psycopg.Connection[Any]) -> list[str]:
    """The catbird versions registered through pg_tle in this database (none
    without pg_tle). pg_tle's functions are only reachable in a database where
    CREATE EXTENSION pg_tle was done."""
    row = conn.execute(
        """
        SELECT to_regprocedure('pgtle.available_extension_versions()') IS NOT NULL,
               to_regprocedure('pgtle.available_extensions()') IS NOT NULL
        """
    ).fetchone()
    assert row is not None
    has_versions, has_extensions = row
    if has_versions:
        query = "SELECT version FROM pgtle.available_extension_versions() WHERE name = %s"
    elif has_extensions:
        query = "SELECT default_version FROM pgtle.available_extensions() WHERE name = %s"
    else:
        return []
    try:
        with conn.transaction():
            return [str(r[0]) for r in conn.execute(query, (EXTENSION_NAME,)).fetchall()]
    except psycopg.errors.InsufficientPrivilege:
        return []


def status(conn: psycopg.Connection[Any]) -> InstallStatus:
    """Report whether and how catbird is installed in ``conn``'s database.

    ``available_versions`` lists the versions CREATE EXTENSION can install:
    those whose files are on the server and those registered through pg_tle.
    """
    row = conn.execute(
        """
        SELECT current_setting('server_version'),
               current_setting('server_version_num')::int,
               (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = %(name)s),
               (SELECT pg_catalog.obj_description(oid, 'pg_namespace')
                  FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s),
               EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s),
               ARRAY(SELECT version FROM pg_catalog.pg_available_extension_versions
                      WHERE name = %(name)s ORDER BY version),
               EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_tle')
        """,
        {"name": EXTENSION_NAME, "schema": SCHEMA},
    ).fetchone()
    assert row is not None
    server_version, version_num, ext_version, comment, schema_present, available, has_tle = row
    how: Literal["extension", "plain", "none"]
    version: str | None
    if ext_version is not None:
        how, version = "extension", ext_version
    elif (marker := _PLAIN_MARKER_RE.match(comment or "")) is not None:
        how, version = "plain", marker.group(1)
    else:
        # A bare schema named catbird (e.g. left behind by DROP EXTENSION) is
        # reported through schema_present but is not an installation.
        how, version = "none", None
    return InstallStatus(
        installed=how != "none",
        how=how,
        version=version,
        schema_present=bool(schema_present),
        available_versions=sorted(set(available) | set(_pg_tle_versions(conn))),
        pg_tle=bool(has_tle),
        server_version=server_version,
        server_version_num=version_num,
    )


def install(conn: psycopg.Connection[Any], *, mode: InstallMode = "extension") -> None:
    """Install catbird into ``conn``'s database, atomically.

    Installing again in the same mode and version is a no-op. Upgrading an
    older version is :func:`upgrade`'s business.
    """
    if mode not in get_args(InstallMode):
        raise InstallError(f"unknown install mode {mode!r}: use one of {get_args(InstallMode)}")
    with conn.transaction():
        current = status(conn)
        if current["installed"]:
            _check_reinstall(current, mode)
            return
        if mode == "extension":
            _install_extension(conn, current)
        elif mode == "plain":
            _install_plain(conn)
        else:
            _install_pg_tle(conn)


def _check_reinstall(current: InstallStatus, mode: InstallMode) -> None:
    installed_as = "plain" if current["how"] == "plain" else "extension"
    wanted_as = "plain" if mode == "plain" else "extension"
    if installed_as != wanted_as:
        raise InstallError(
            f"catbird is already installed in this database as {current['how']!r} "
            f"(version {current['version']}); drop it first to reinstall with --mode {mode}"
        )
    if current["version"] != EXTENSION_VERSION:
        raise InstallError(
            f"catbird {current['version']} is installed ({current['how']}), this package "
            f"is {EXTENSION_VERSION}: upgrade it instead of installing ('catbird db upgrade')"
        )


def _create_extension(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} VERSION {}").format(
            sql.Identifier(EXTENSION_NAME), sql.Literal(EXTENSION_VERSION)
        )
    )


def _install_extension(conn: psycopg.Connection[Any], current: InstallStatus) -> None:
    if EXTENSION_VERSION not in current["available_versions"]:
        found = (
            f"only version(s) {', '.join(current['available_versions'])} are installed there"
            if current["available_versions"]
            else "its extension directory has no catbird.control"
        )
        raise InstallError(
            f"the catbird {EXTENSION_VERSION} extension files are not on this server "
            f"(PostgreSQL {current['server_version']}): {found}. {_NOT_AVAILABLE_HINT}"
        )
    _create_extension(conn)


def _install_plain(conn: psycopg.Connection[Any]) -> None:
    fields = pg_tle.parse_control(control_text())
    script = pg_tle.strip_echo_lines(extension_sql())
    # Reproduce what CREATE EXTENSION provides to the script: the pinned schema
    # exists, it is the only schema on search_path, and the placeholders are
    # substituted. pg_tle.validate() rejects psql meta-commands up front so the
    # error names the line instead of being a bare syntax error.
    pg_tle.validate(pg_tle.PgTleExtension.from_control(control_text(), script, name=EXTENSION_NAME))
    row = conn.execute("SELECT current_user, current_setting('search_path')").fetchone()
    assert row is not None
    user, saved_search_path = row
    script = script.replace("@extschema@", sql.Identifier(SCHEMA).as_string(conn))
    script = script.replace("@extowner@", sql.Identifier(user).as_string(conn))
    if fields.get("schema"):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(SCHEMA)))
    try:
        conn.execute(script.encode())
    except psycopg.Error as exc:
        raise InstallError(f"the catbird SQL failed in plain mode: {exc}") from exc
    conn.execute(
        sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
            sql.Identifier(SCHEMA), sql.Literal(_PLAIN_MARKER.format(version=EXTENSION_VERSION))
        )
    )
    # Back to the caller's search_path; a LOCAL set keeps the caller's session
    # value in force once the transaction ends.
    conn.execute("SELECT set_config('search_path', %s, true)", (saved_search_path,))


_PG_TLE_NEEDS = (
    "pg_tle needs shared_preload_libraries = 'pg_tle' on the server (on RDS/Aurora: the "
    "parameter group), CREATE EXTENSION pg_tle in this database, and a role that is a "
    "member of pgtle_admin and has CREATE on the database "
    "(GRANT CREATE ON DATABASE <db> TO <role>), because the extension creates its schema"
)


def _install_pg_tle(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        """
        SELECT to_regprocedure('pgtle.install_extension(text,text,text,text,text[],text)'),
               to_regprocedure('pgtle.install_extension(text,text,text,text,text[])'),
               current_database(),
               has_database_privilege(current_database(), 'CREATE'),
               CASE WHEN to_regrole('pgtle_admin') IS NULL THEN NULL
                    ELSE pg_has_role('pgtle_admin', 'MEMBER') END,
               (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
        """
    ).fetchone()
    assert row is not None
    six_args, five_args, database, may_create, tle_admin, superuser = row
    if six_args is None and five_args is None:
        raise InstallError(
            f"pg_tle (>= 1.4) is not available in database {database}: {_PG_TLE_NEEDS}"
        )
    if not superuser and tle_admin is False:
        raise InstallError(f"the current role is not a member of pgtle_admin: {_PG_TLE_NEEDS}")
    if not may_create:
        raise InstallError(
            f"the current role has no CREATE privilege on database {database}, which CREATE "
            f"EXTENSION needs to create schema {SCHEMA}: run "
            f"GRANT CREATE ON DATABASE {sql.Identifier(database).as_string(conn)} TO <role>; "
            f"as the database owner ({_PG_TLE_NEEDS})"
        )
    registered = EXTENSION_VERSION in _pg_tle_versions(conn)
    # pg_tle cannot replace a registered version in place; a registered one is
    # taken as is and only CREATE EXTENSION remains to be done. The script
    # calls the five-argument form (pg_tle 1.4), which 1.5 accepts too.
    if not registered:
        try:
            with conn.transaction():
                conn.execute(pg_tle_script().encode())
        except psycopg.Error as exc:
            raise InstallError(
                f"pg_tle refused to register catbird {EXTENSION_VERSION}: {exc}"
            ) from exc
    _create_extension(conn)


def roles(conn: psycopg.Connection[Any]) -> RolesReport:
    """Create the group roles that are missing and grant them their rights.

    Creating needs CREATEROLE (or superuser); granting needs the owner of the
    catbird functions (the role that installed it) or a superuser. Roles that
    cannot be created are reported as ``missing``; run this again as a role
    that may create them, or use the SQL snippet in the README.
    """
    with conn.transaction():
        current = status(conn)
        if not current["installed"]:
            raise InstallError(
                "catbird is not installed in this database: run 'catbird db install'"
            )
        row = conn.execute(
            """
            SELECT r.rolsuper OR r.rolcreaterole, r.rolsuper
                   OR pg_has_role((SELECT p.proowner FROM pg_catalog.pg_proc p
                                    WHERE p.oid = 'catbird._cb_apply_privileges()'::regprocedure),
                                  'USAGE')
              FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
            """
        ).fetchone()
        assert row is not None
        may_create, may_grant = row
        existing = {
            str(r[0])
            for r in conn.execute(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%s)", (list(ROLES),)
            ).fetchall()
        }
        created: list[str] = []
        for role in ROLES:
            if role not in existing and may_create:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
                created.append(role)
        if not may_grant:
            raise InstallError(
                "only the owner of the catbird functions (the role that installed catbird) or a "
                "superuser can grant the roles their rights: run 'catbird db roles' as that role"
            )
        conn.execute("SELECT catbird._cb_apply_privileges()")
    return RolesReport(
        created=created,
        existing=sorted(existing),
        missing=[r for r in ROLES if r not in existing and r not in created],
        granted=True,
    )


def update_scripts() -> dict[tuple[str, str], str]:
    """The update scripts shipped in this package, by (from, to) version."""
    scripts: dict[tuple[str, str], str] = {}
    for resource in resources.files("catbird").joinpath("sql").iterdir():
        match = re.fullmatch(rf"{EXTENSION_NAME}--(.+?)--(.+)\.sql", resource.name)
        if match is not None:
            scripts[(match.group(1), match.group(2))] = resource.read_text(encoding="utf-8")
    return scripts


def _update_chain(from_version: str) -> list[tuple[str, str]]:
    """The shipped update steps from ``from_version`` to this package's version
    (fewest steps first), or [] when there is none."""
    steps = update_scripts().keys()
    frontier: list[list[tuple[str, str]]] = [[]]
    seen = {from_version}
    while frontier:
        next_frontier = []
        for path in frontier:
            at = path[-1][1] if path else from_version
            for old, new in sorted(steps):
                if old == at and new not in seen:
                    if new == EXTENSION_VERSION:
                        return [*path, (old, new)]
                    seen.add(new)
                    next_frontier.append([*path, (old, new)])
        frontier = next_frontier
    return []


def upgrade(conn: psycopg.Connection[Any]) -> UpgradeReport:
    """Bring an installed catbird up to this package's version, atomically.

    An extension is updated with ``ALTER EXTENSION catbird UPDATE TO``, which
    runs the update scripts (``catbird--<from>--<to>.sql``): from the server's
    extension directory after ``make install``, or, when catbird was
    registered through pg_tle, from pg_tle, where this registers the new
    version and its update path first. A plain install runs the same update
    scripts from this package. The data stays: tables are altered, not
    recreated. Upgrading an up-to-date install is a no-op.
    """
    with conn.transaction():
        current = status(conn)
        if not current["installed"] or current["version"] is None:
            raise InstallError(
                "catbird is not installed in this database: run 'catbird db install'"
            )
        how: Literal["extension", "plain"] = "plain" if current["how"] == "plain" else "extension"
        old = current["version"]
        report = UpgradeReport(
            how=how, from_version=old, to_version=EXTENSION_VERSION, changed=False, pg_tle=False
        )
        if old == EXTENSION_VERSION:
            return report
        chain = _update_chain(old)
        if how == "plain":
            if not chain:
                raise InstallError(
                    f"this package ({EXTENSION_VERSION}) has no update path from catbird {old}: "
                    "install a catbird package that has one, or (losing the data in schema "
                    "catbird) DROP SCHEMA catbird CASCADE and run 'catbird db install --mode plain'"
                )
            _upgrade_plain(conn, chain)
        else:
            report["pg_tle"] = _register_update_through_pg_tle(conn, old, chain)
            _alter_extension_update(conn, old, current)
        report["changed"] = True
    return report


def _alter_extension_update(
    conn: psycopg.Connection[Any], old: str, current: InstallStatus
) -> None:
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("ALTER EXTENSION {} UPDATE TO {}").format(
                    sql.Identifier(EXTENSION_NAME), sql.Literal(EXTENSION_VERSION)
                )
            )
    except (psycopg.errors.UndefinedFile, psycopg.errors.InvalidParameterValue) as exc:
        # No catbird--<version>.sql/control for the target, or no chain of
        # update scripts to it, on this server.
        raise InstallError(
            f"PostgreSQL cannot update catbird {old} to {EXTENSION_VERSION} on this server "
            f"(PostgreSQL {current['server_version']}): {exc}. Install this version's files "
            "on the database host ('make install PG_CONFIG=/path/to/that/server/bin/pg_config' "
            "or the Dockerfile.postgres image), then run 'catbird db upgrade' (or ALTER "
            "EXTENSION catbird UPDATE) again."
        ) from exc


def _register_update_through_pg_tle(
    conn: psycopg.Connection[Any], old: str, chain: list[tuple[str, str]]
) -> bool:
    """When catbird was registered through pg_tle (not installed from files),
    register this version and the update path from ``old``; returns whether it
    did. Either may be registered already."""
    if not _pg_tle_versions(conn):
        return False
    if not chain:
        raise InstallError(
            f"this package ({EXTENSION_VERSION}) has no update path from catbird {old} to "
            "register through pg_tle: install a catbird package that has one"
        )
    scripts = update_scripts()
    calls = [pg_tle_script()] + [
        pg_tle.render_update_path(EXTENSION_NAME, a, b, scripts[(a, b)]) for a, b in chain
    ]
    for call in calls:
        try:
            with conn.transaction():
                conn.execute(call.encode())
        except psycopg.errors.DuplicateObject:
            continue  # this version, or this update path, is registered already
        except psycopg.Error as exc:
            raise InstallError(
                f"pg_tle refused to register catbird {EXTENSION_VERSION} or its update path "
                f"from {old}: {exc} ({_PG_TLE_NEEDS})"
            ) from exc
    return True


def _upgrade_plain(conn: psycopg.Connection[Any], chain: list[tuple[str, str]]) -> None:
    scripts = update_scripts()
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    assert row is not None
    saved_search_path = row[0]
    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(SCHEMA)))
    for old, new in chain:
        script = pg_tle.strip_echo_lines(scripts[(old, new)])
        try:
            with conn.transaction():
                conn.execute(script.encode())
        except psycopg.Error as exc:
            raise InstallError(
                f"the catbird {old} -> {new} update failed in plain mode: {exc}"
            ) from exc
    conn.execute(
        sql.SQL("COMMENT ON SCHEMA {} IS {}").format(
            sql.Identifier(SCHEMA), sql.Literal(_PLAIN_MARKER.format(version=EXTENSION_VERSION))
        )
    )
    conn.execute("SELECT set_config('search_path', %s, true)", (saved_search_path,))

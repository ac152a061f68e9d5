"""Render the pg_tle registration script for the catbird extension.

pg_tle (Trusted Language Extensions) lets a server without file-system access
(RDS, Aurora, ...) host an extension: ``pgtle.install_extension(...)`` stores
the control fields and the install script in the database, after which
``CREATE EXTENSION catbird`` works as usual. This module turns the built
extension SQL and the control file into that call, and refuses input that
pg_tle would reject or silently mangle.

Used by ``pg_tle/generate.py`` (writes the script next to the sources) and by
``catbird.db.install`` (``--mode pg-tle-script``), so both produce the same text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CatbirdError

__all__ = [
    "DELIMITER",
    "FORBIDDEN_DELIMITERS",
    "PgTleError",
    "PgTleExtension",
    "default_header",
    "parse_control",
    "render_from_control",
    "render_script",
    "render_update_path",
    "strip_echo_lines",
    "update_path_header",
    "validate",
]

# pg_tle wraps the stored script in these dollar quotes itself, so the script
# may not contain them; we quote our own argument with the inner one, which is
# therefore guaranteed not to occur in the payload either.
FORBIDDEN_DELIMITERS = ("$_pgtle_o_$", "$_pgtle_i_$")
DELIMITER = "$_pgtle_i_$"

# pg_tle stores the script as a function named "<name>--<version>.sql", which
# has to fit in a PostgreSQL identifier (NAMEDATALEN - 1 bytes).
_MAX_FUNCTION_NAME_BYTES = 63

# PostgreSQL's own extension loader and pg_tle both drop lines starting with
# \echo (the usual "use CREATE EXTENSION" guard); any other psql meta-command
# would reach the server and fail there.
_ECHO_LINE = re.compile(r"^\\echo.*$", re.MULTILINE)
_BACKSLASH_LINE = re.compile(r"^[ \t]*\\.*$", re.MULTILINE)


class PgTleError(CatbirdError, ValueError):
    """The extension cannot be packaged for pg_tle as it stands."""


@dataclass(frozen=True)
class PgTleExtension:
    """The arguments of one ``pgtle.install_extension`` call."""

    name: str
    version: str
    description: str
    sql: str
    requires: tuple[str, ...] = ()
    schema: str | None = None

    @classmethod
    def from_control(cls, control_text: str, sql: str, *, name: str) -> PgTleExtension:
        """Take version, comment, requires and schema from a control file."""
        control = parse_control(control_text)
        if "default_version" not in control:
            raise PgTleError(f"{name}.control has no default_version")
        requires = tuple(
            part.strip() for part in control.get("requires", "").split(",") if part.strip()
        )
        return cls(
            name=name,
            version=control["default_version"],
            description=control.get("comment", ""),
            sql=sql,
            requires=requires,
            schema=control.get("schema") or None,
        )


_CONTROL_LINE = re.compile(
    r"""^\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=?\s*
        (?:'(?P<quoted>(?:[^'\\]|''|\\.)*)'|(?P<bare>[^\s#]*))
        \s*(?:\#.*)?$""",
    re.VERBOSE,
)


def parse_control(text: str) -> dict[str, str]:
    """Parse an extension control file (postgresql.conf syntax, simple subset)."""
    result: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _CONTROL_LINE.match(line)
        if match is None:
            raise PgTleError(f"control file line {lineno} is not 'key = value': {raw!r}")
        quoted = match.group("quoted")
        if quoted is not None:
            value = re.sub(r"''|\\(.)", lambda m: m.group(1) or "'", quoted)
        else:
            value = match.group("bare")
        result[match.group("key")] = value
    return result


def strip_echo_lines(sql: str) -> str:
    """Blank out ``\\echo`` lines exactly as PostgreSQL's extension loader does."""
    return _ECHO_LINE.sub("", sql)


def _check_identifier(kind: str, value: str) -> None:
    # The same rules as PostgreSQL's check_valid_extension_name/version_name:
    # "--" separates name and versions in script names, so it cannot occur.
    if not value:
        raise PgTleError(f"extension {kind} is empty")
    if "--" in value:
        raise PgTleError(f"extension {kind} {value!r} must not contain '--'")
    if value.startswith("-") or value.endswith("-"):
        raise PgTleError(f"extension {kind} {value!r} must not begin or end with '-'")
    if "/" in value or "\\" in value:
        raise PgTleError(f"extension {kind} {value!r} must not contain directory separators")
    if "'" in value:
        raise PgTleError(f"extension {kind} {value!r} must not contain quotes")


def validate(ext: PgTleExtension) -> str:
    """Check everything pg_tle would reject; return the payload to register."""
    _check_identifier("name", ext.name)
    _check_identifier("version", ext.version)
    function_name = f"{ext.name}--{ext.version}.sql"
    if len(function_name.encode()) > _MAX_FUNCTION_NAME_BYTES:
        raise PgTleError(
            f"{function_name!r} is {len(function_name.encode())} bytes; pg_tle needs "
            f"'<name>--<version>.sql' to be shorter than 64 bytes"
        )
    for delimiter in FORBIDDEN_DELIMITERS:
        if delimiter in ext.sql or delimiter in ext.description:
            raise PgTleError(f"the extension SQL must not contain {delimiter}: pg_tle uses it")
    payload = strip_echo_lines(ext.sql)
    meta = _BACKSLASH_LINE.search(payload)
    if meta is not None:
        line = payload.count("\n", 0, meta.start()) + 1
        raise PgTleError(
            f"line {line} of the extension SQL is a psql meta-command ({meta.group(0).strip()!r});"
            " neither pg_tle nor a plain install can run it"
        )
    return payload


def _literal(value: str) -> str:
    # standard_conforming_strings is on on every supported server, so doubling
    # quotes is a complete escape for a plain '...' literal.
    return "'" + value.replace("'", "''") + "'"


def render_script(ext: PgTleExtension, *, header: Sequence[str] = ()) -> str:
    """Render ``SELECT pgtle.install_extension(...)`` for one extension version.

    The payload between the delimiters is the SQL byte for byte (minus
    ``\\echo`` lines, which PostgreSQL would drop anyway), so the registered
    extension is exactly what ``make install`` ships.
    """
    payload = validate(ext)
    requires = "ARRAY[" + ", ".join(_literal(r) for r in ext.requires) + "]::text[]"
    if not ext.requires:
        requires = "'{}'::text[]"
    lines = [f"-- {line}" if line else "--" for line in header]
    lines += [
        "SELECT pgtle.install_extension(",
        f"    {_literal(ext.name)},",
        f"    {_literal(ext.version)},",
        f"    {_literal(ext.description)},",
        f"{DELIMITER}{payload}{DELIMITER},",
    ]
    # Without a pinned schema the call has pg_tle 1.4's five arguments, which
    # 1.5 accepts too (its sixth, schema, defaults to NULL); a pinned schema
    # needs 1.5's sixth argument.
    if ext.schema is None:
        lines += [f"    {requires}", ");", ""]
    else:
        lines += [f"    {requires},", f"    {_literal(ext.schema)}", ");", ""]
    return "\n".join(lines)


def render_update_path(
    name: str, from_version: str, to_version: str, sql: str, *, header: Sequence[str] = ()
) -> str:
    """Render ``SELECT pgtle.install_update_path(...)``: the update script from
    one registered version to the next, for ``ALTER EXTENSION ... UPDATE``."""
    for kind, value in (("name", name), ("version", from_version), ("version", to_version)):
        _check_identifier(kind, value)
    payload = validate(PgTleExtension(name=name, version=to_version, description="", sql=sql))
    lines = [f"-- {line}" if line else "--" for line in header]
    lines += [
        "SELECT pgtle.install_update_path(",
        f"    {_literal(name)},",
        f"    {_literal(from_version)},",
        f"    {_literal(to_version)},",
        f"{DELIMITER}{payload}{DELIMITER}",
        ");",
        "",
    ]
    return "\n".join(lines)


def update_path_header(name: str, from_version: str, to_version: str) -> list[str]:
    """The comment block at the top of a generated update-path script."""
    return [
        f"{name} {from_version} -> {to_version}: update path for pg_tle (>= 1.4), generated by",
        "pg_tle/generate.py from the built update script; do not edit.",
        "",
        f"Run it as a member of pgtle_admin, after registering {name} {to_version} itself",
        f"(pg_tle/{name}--{to_version}.pg_tle.sql), then: ALTER EXTENSION {name} UPDATE;",
    ]


def default_header(ext: PgTleExtension) -> list[str]:
    """The comment block at the top of a generated script."""
    minimum = "1.4" if ext.schema is None else "1.5"
    return [
        f"{ext.name} {ext.version}: registration script for pg_tle (>= {minimum}), generated by",
        "pg_tle/generate.py from the built extension SQL; do not edit.",
        "",
        "Run it as a member of pgtle_admin in a database where CREATE EXTENSION pg_tle",
        f"has been done, then: CREATE EXTENSION {ext.name};",
        "The role running CREATE EXTENSION also needs CREATE on the database (the",
        "extension creates its schema): GRANT CREATE ON DATABASE <db> TO <role>;",
    ]


def render_from_control(
    control_text: str, sql: str, *, name: str, header: Sequence[str] | None = None
) -> str:
    """Render the script from a control file and the built SQL."""
    ext = PgTleExtension.from_control(control_text, sql, name=name)
    return render_script(ext, header=default_header(ext) if header is None else header)

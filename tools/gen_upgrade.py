#!/usr/bin/env python3
"""Write an extension update script: a hand-written migration, then the engine's
current functions re-created from the sources.

    python tools/gen_upgrade.py extension/upgrades/0.1.0--0.2.0.sql \\
        --output python/catbird/sql/catbird--0.1.0--0.2.0.sql      (or: make build)

The update script ``catbird--<from>--<to>.sql`` is, in this order:

1. the migration ``extension/upgrades/<from>--<to>.sql``, written by hand: what
   carries data or cannot be replaced in place (new tables, columns, types and
   indexes, backfills, and DROP FUNCTION for functions whose argument types,
   parameter names, defaults or result type changed, since CREATE OR REPLACE
   cannot change those);
2. every top-level statement of ``extension/sql/[0-9]*.sql`` (the sources of
   the install script, in the same order) that defines behaviour: ``CREATE
   FUNCTION``/``PROCEDURE`` turned into ``CREATE OR REPLACE``, ``CREATE OR
   REPLACE TRIGGER`` (PostgreSQL 14+) as it is, ``COMMENT ON``,
   ``GRANT``/``REVOKE`` and ``DO`` blocks (which must therefore be idempotent);
   statements that create storage or types (``CREATE TABLE``/``INDEX``/
   ``TYPE``/``SEQUENCE``/``SCHEMA``, ``ALTER TABLE``/``SEQUENCE``) are left out,
   being the migration's business;
3. ``SELECT catbird._cb_apply_privileges();`` last, so that every function,
   new or replaced, gets its pinned search_path, SECURITY DEFINER and grants.

So the functions of an upgraded database are those of a fresh install by
construction, and the migration stays small. Any other kind of top-level
statement in the sources is refused, so that a new kind of object forces a
decision here instead of silently missing from upgrades. tests/test_upgrade.py
checks the result: the catalog after ALTER EXTENSION UPDATE equals a fresh
install's.

The migration's target version must be the control file's default_version:
once a version is released its update script is frozen (moved to
extension/history/ with the release's install script) and no longer generated.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "extension" / "sql"
CONTROL = ROOT / "extension" / "catbird.control"
APPLY_PRIVILEGES = "SELECT catbird._cb_apply_privileges();"

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


class GenerateError(Exception):
    """The sources or the migration cannot be turned into an update script."""


def split_statements(text: str) -> Iterator[str]:
    """Top-level SQL statements of ``text``, each with its leading comments and
    its terminating semicolon; comments, quoted strings and dollar-quoted bodies
    are skipped over, so a ``;`` inside them does not split."""
    i, start, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "'":
            backslashes = i > 0 and text[i - 1] in "eE" and not (text[i - 2 : i - 1].isalnum())
            i += 1
            while i < n:
                if backslashes and text[i] == "\\":
                    i += 2
                elif text[i] == "'":
                    if text.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif c == '"':
            end = text.find('"', i + 1)
            i = n if end < 0 else end + 1
        elif (
            c == "$"
            and (match := _DOLLAR_TAG.match(text, i))
            and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"))
        ):
            tag = match.group(0)
            end = text.find(tag, match.end())
            if end < 0:
                raise GenerateError(f"unterminated dollar quote {tag}")
            i = end + len(tag)
        elif c == ";":
            yield text[start : i + 1]
            i += 1
            start = i
        else:
            i += 1
    if text[start:].strip() and _strip_comments(text[start:]).strip():
        raise GenerateError(f"text after the last statement: {text[start:].strip()[:80]!r}")


def _strip_comments(statement: str) -> str:
    """The statement without its leading whitespace and comments."""
    s = statement
    while True:
        s = s.lstrip()
        if s.startswith("--"):
            s = s[s.find("\n") + 1 :] if "\n" in s else ""
        elif s.startswith("/*"):
            s = s[s.find("*/") + 2 :]
        else:
            return s


_KEEP = re.compile(r"^(COMMENT\s+ON|GRANT|REVOKE|DO)\b", re.IGNORECASE)
_CREATE_ROUTINE = re.compile(r"^CREATE\s+(FUNCTION|PROCEDURE)\b", re.IGNORECASE)
_CREATE_OR_REPLACE = re.compile(
    r"^CREATE\s+OR\s+REPLACE\s+(FUNCTION|PROCEDURE|TRIGGER)\b", re.IGNORECASE
)
_STORAGE = re.compile(
    r"^(CREATE\s+(SCHEMA|(UNLOGGED\s+)?TABLE|(UNIQUE\s+)?INDEX|TYPE|SEQUENCE)|ALTER\s+(TABLE|SEQUENCE))\b",
    re.IGNORECASE,
)


def replaceable(source: str, name: str) -> str:
    """The statements of one source file that an update script re-runs."""
    kept: list[str] = []
    for statement in split_statements(source):
        body = _strip_comments(statement)
        if not body:
            continue
        line = source.count("\n", 0, source.find(body)) + 1
        if re.sub(r"\s+", " ", body) == APPLY_PRIVILEGES:
            continue  # once, at the very end
        if _CREATE_ROUTINE.match(body):
            kept.append(_CREATE_ROUTINE.sub(lambda m: f"CREATE OR REPLACE {m.group(1)}", body, 1))
        elif _CREATE_OR_REPLACE.match(body) or _KEEP.match(body):
            kept.append(body)
        elif _STORAGE.match(body):
            continue
        else:
            raise GenerateError(
                f"{name}:{line}: cannot tell whether an update re-runs this statement "
                f"({body.splitlines()[0][:60]!r}); teach tools/gen_upgrade.py"
            )
    return "\n\n".join(kept)


def control_version() -> str:
    match = re.search(r"^default_version\s*=\s*'([^']*)'", CONTROL.read_text(), re.MULTILINE)
    if match is None:
        raise GenerateError(f"{CONTROL} has no default_version")
    return match.group(1)


def generate(migration: Path) -> str:
    match = re.fullmatch(r"([^-]+(?:-[^-]+)*)--([^-]+(?:-[^-]+)*)\.sql", migration.name)
    if match is None:
        raise GenerateError(f"{migration.name}: expected <from>--<to>.sql")
    old, new = match.groups()
    if new != control_version():
        raise GenerateError(
            f"{migration.name} updates to {new}, but extension/catbird.control is at "
            f"{control_version()}: a released update script is frozen in extension/history/"
        )
    sources = sorted(SOURCES.glob("[0-9]*.sql"))
    if not sources:
        raise GenerateError(f"no {SOURCES}/[0-9]*.sql files")
    for statement in split_statements(migration.read_text()):
        body = re.sub(r"\s+", " ", _strip_comments(statement))
        if body == APPLY_PRIVILEGES:
            raise GenerateError(
                f"{migration.name} must not call _cb_apply_privileges(): it runs last"
            )
    header = (
        f"-- GENERATED FILE, do not edit: catbird {old} -> {new}, written by tools/gen_upgrade.py\n"
        f"-- from extension/upgrades/{migration.name} and extension/sql/[0-9]*.sql"
        " ('make build').\n"
        f"-- Run by ALTER EXTENSION catbird UPDATE TO '{new}' (or pg_tle's update path).\n"
    )
    migration_text = migration.read_text().strip()
    parts = [header, f"-- === migration: extension/upgrades/{migration.name}\n\n{migration_text}\n"]
    for path in sources:
        kept = replaceable(path.read_text(), path.name)
        if kept:
            parts.append(f"-- === from extension/sql/{path.name}\n\n{kept}\n")
    parts.append(
        f"-- === last: privileges for every function, new or replaced\n\n{APPLY_PRIVILEGES}\n"
    )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("migration", type=Path, help="extension/upgrades/<from>--<to>.sql")
    parser.add_argument("--output", type=Path, required=True, help="where to write the script")
    args = parser.parse_args(argv)
    try:
        text = generate(args.migration)
    except GenerateError as exc:
        print(f"tools/gen_upgrade.py: {exc}", file=sys.stderr)
        return 1
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

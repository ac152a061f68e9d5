#!/usr/bin/env python3
"""Run plpgsql_check over every PL/pgSQL function of the catbird extension.

    python tools/plpgsql_check.py --dsn postgresql://postgres@host:port/postgres

Needs a superuser DSN of a server that has both the catbird extension files
(`make install PG_CONFIG=...`) and plpgsql_check (Debian: postgresql-NN-plpgsql-check).
Creates a scratch database, creates both extensions in it, checks each
function with all warning classes on, prints every finding, and drops the
database again.

Exit status: 1 if any finding has level 'error', else 0. Warnings, security
and performance findings are printed for review but do not fail the run,
because several are advisory by nature (e.g. "target type is different").
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

CHECK = """
SELECT lineno, statement, sqlstate, message, detail, hint, level, query, context
  FROM plpgsql_check_function_tb(
           %(fn)s::regprocedure, %(rel)s::regclass,
           fatal_errors => false,
           other_warnings => true,
           extra_warnings => true,
           performance_warnings => true,
           security_warnings => true)
"""

FUNCTIONS = """
SELECT p.oid::regprocedure::text,
       p.prorettype = 'trigger'::regtype,
       (SELECT t.tgrelid::regclass::text FROM pg_trigger t
         WHERE t.tgfoid = p.oid ORDER BY t.oid LIMIT 1)
  FROM pg_proc p
  JOIN pg_language l ON l.oid = p.prolang
 WHERE l.lanname = 'plpgsql' AND p.pronamespace = 'catbird'::regnamespace
 ORDER BY 1
"""


def _finding(fn: str, row: tuple[object, ...]) -> str:
    lineno, statement, sqlstate, message, detail, hint, level, query, context = row
    where = f"{fn} line {lineno}" if lineno is not None else fn
    text = f"[{level}] {where}"
    if statement:
        text += f" ({statement})"
    text += f": {message}"
    if sqlstate:
        text += f" [{sqlstate}]"
    extra = {"detail": detail, "hint": hint, "query": query, "context": context}
    for label, value in extra.items():
        if value:
            text += f"\n    {label}: {value}"
    return text


def check(conn: psycopg.Connection) -> tuple[Counter[str], int]:
    """Print every finding; return counts by level and the number checked."""
    levels: Counter[str] = Counter()
    checked = 0
    for fn, is_trigger, relation in conn.execute(FUNCTIONS).fetchall():
        if is_trigger and relation is None:
            # plpgsql_check needs the table a trigger function is attached to.
            print(f"[skipped] {fn}: trigger function not attached to any table")
            levels["skipped"] += 1
            continue
        rows = conn.execute(CHECK, {"fn": fn, "rel": relation or 0}).fetchall()
        checked += 1
        for row in rows:
            levels[str(row[6])] += 1
            print(_finding(fn, row))
    return levels, checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", required=True, help="superuser DSN (any database)")
    parser.add_argument("--database", default="catbird_plpgsql_check", help="scratch database")
    args = parser.parse_args(argv)

    db = sql.Identifier(args.database)
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(db))
        try:
            with psycopg.connect(
                make_conninfo(args.dsn, dbname=args.database), autocommit=True
            ) as conn:
                conn.execute("CREATE EXTENSION catbird")
                conn.execute("CREATE EXTENSION plpgsql_check")
                levels, checked = check(conn)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(db))

    errors = sum(n for level, n in levels.items() if "error" in level)
    summary = ", ".join(f"{n} {level}" for level, n in sorted(levels.items())) or "no findings"
    print(f"plpgsql_check: {checked} function(s) checked: {summary}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

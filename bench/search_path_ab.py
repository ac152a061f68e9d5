#!/usr/bin/env python3
"""A/B of the pinned search_path (issue 9): server-side microseconds per call.

    python bench/search_path_ab.py SUPERUSER_DSN

Each hot operation runs 2,000 times in a DO loop (no client round trips), on a
fresh plain install per variant and round (3 rounds, the minimum is kept):

* unpinned:   search_path reset and SECURITY INVOKER on every function (0.1.0)
* entry-only: pinned on the cb_* entry points, not on the _cb_* helpers or cb_now
* pinned:     as shipped

Creates and drops the database ``catbird_search_path_ab`` on that server.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from catbird.db.install import install

_RESET = """
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT oid::regprocedure FROM pg_proc
             WHERE pronamespace = 'catbird'::regnamespace AND {where} LOOP
        EXECUTE format('ALTER FUNCTION %s RESET search_path', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY INVOKER', f);
    END LOOP;
END $$;
"""
VARIANTS = {
    "unpinned": _RESET.format(where="true"),
    "entry-only": _RESET.format(where="(proname NOT LIKE 'cb\\_%' OR proname = 'cb_now')"),
    "pinned": "SELECT 1",
}
OPS = {
    "cb_send 1": "PERFORM catbird.cb_send('q', '{}'::jsonb);",
    "cb_read 1 + cb_delete": (
        "PERFORM catbird.cb_delete('q', (SELECT id FROM catbird.cb_read('q', 1, 30000)));"
    ),
    "cb_run_task": "PERFORM catbird.cb_run_task('t', '{}'::jsonb);",
    "cb_claim_tasks 1 + cb_complete_task": (
        "PERFORM catbird.cb_complete_task('t', c.id, '1'::jsonb, c.attempts)"
        " FROM catbird.cb_claim_tasks('t', 1, 30000) c;"
    ),
}
CALLS = 2000
DB = "catbird_search_path_ab"


def main(server: str) -> None:
    res: dict[str, dict[str, list[float]]] = {k: {v: [] for v in VARIANTS} for k in OPS}
    with psycopg.connect(server, autocommit=True) as adm:
        for _round in range(3):
            for variant, apply in VARIANTS.items():
                adm.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
                adm.execute(f"CREATE DATABASE {DB}")
                with psycopg.connect(make_conninfo(server, dbname=DB), autocommit=True) as c:
                    install(c, mode="plain")
                    c.execute(apply)
                    c.execute("SELECT catbird.cb_create_queue('q'), catbird.cb_create_task('t')")
                    for op, body in OPS.items():
                        t = time.perf_counter()
                        c.execute(f"DO $$ BEGIN FOR i IN 1..{CALLS} LOOP {body} END LOOP; END $$")
                        res[op][variant].append((time.perf_counter() - t) / CALLS * 1e6)
        adm.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        row = adm.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {row[0] if row else '?'}")
    print("| operation | unpinned µs | entry-only µs (ratio) | pinned µs (ratio) |")
    print("|---|--:|--:|--:|")
    for op, by in res.items():
        u, e, p = (min(by[v]) for v in ("unpinned", "entry-only", "pinned"))
        print(f"| {op} | {u:.0f} | {e:.0f} ({e / u:.2f}) | {p:.0f} ({p / u:.2f}) |")


if __name__ == "__main__":
    main(sys.argv[1])

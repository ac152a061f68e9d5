"""Upgrades: 0.1.0 (the released install script, extension/history/) to this
version through catbird--0.1.0--0.2.0.sql, with work in flight.

The upgraded database must have the catalog of a fresh install (functions
with their signatures, results, attributes and bodies, tables, columns,
indexes, constraints, types, grants, extension members, pg_dump marking) and
the work left by 0.1.0 must finish through the new API. The same for a plain
install (no extension object), and through `catbird db upgrade`. pg_tle's
update path is covered in test_install.py (stand-in) and test_pg_tle_real.py.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cataloghelpers import differences, snapshot
from catbird.db import install as inst
from clihelpers import cb, cbj
from sqlhelpers import HIDE, J, call, fn, scalar, step

ROOT = Path(__file__).resolve().parent.parent
BUILT_DIR = ROOT / "python" / "catbird" / "sql"
OLD = "0.1.0"
NEW = inst.EXTENSION_VERSION
UPDATE_SCRIPT = BUILT_DIR / f"catbird--{OLD}--{NEW}.sql"


@pytest.fixture
def new_db(server_dsn: str) -> Iterator[Any]:
    """A factory of fresh empty databases (DSNs), dropped after the test."""
    names: list[str] = []

    def make() -> str:
        name = f"catbird_upgrade_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        names.append(name)
        return make_conninfo(server_dsn, dbname=name)

    yield make
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        for name in names:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- the scripts -------------------------------------------------------------------


def test_the_update_script_is_generated_from_the_current_sources() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_upgrade
    finally:
        sys.path.pop(0)
    expected = gen_upgrade.generate(ROOT / "extension" / "upgrades" / f"{OLD}--{NEW}.sql")
    assert UPDATE_SCRIPT.read_text() == expected, (
        f"{UPDATE_SCRIPT.relative_to(ROOT)} is stale: run make build"
    )
    # The release's install script ships unchanged.
    history = ROOT / "extension" / "history" / f"catbird--{OLD}.sql"
    assert (BUILT_DIR / history.name).read_text() == history.read_text()
    assert inst.update_scripts() == {(OLD, NEW): expected}
    # Privileges are applied once, after everything else.
    assert expected.rstrip().endswith("SELECT catbird._cb_apply_privileges();")
    assert expected.count("SELECT catbird._cb_apply_privileges();") == 1


def test_the_generator_refuses_statements_it_does_not_know() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_upgrade
    finally:
        sys.path.pop(0)
    assert gen_upgrade.replaceable(
        "CREATE TABLE t (x text DEFAULT ';');\n-- c;\nCREATE FUNCTION f() RETURNS int\n"
        "LANGUAGE sql AS $$ SELECT 1; $$;\nCOMMENT ON FUNCTION f() IS 'a;b';\n",
        "x.sql",
    ) == (
        "CREATE OR REPLACE FUNCTION f() RETURNS int\nLANGUAGE sql AS $$ SELECT 1; $$;\n\n"
        "COMMENT ON FUNCTION f() IS 'a;b';"
    )
    with pytest.raises(gen_upgrade.GenerateError, match=r"x\.sql:2: .*INSERT"):
        gen_upgrade.replaceable("ALTER TABLE t ADD x int;\nINSERT INTO t VALUES (1);\n", "x.sql")


# --- loading 0.1.0 and finishing with this version ---------------------------------------------


def _load_old(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Work in every state, made through the 0.1.0 API."""
    s: dict[str, Any] = {}
    # Queues: visible messages, one in flight (its lease is short), one bound topic.
    fn(conn, "cb_create_queue", name="jobs")
    fn(
        conn,
        "cb_create_queue",
        name="later",
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=9),
    )
    s["messages"] = [fn(conn, "cb_send", queue="jobs", body=J({"n": n})) for n in range(3)]
    fn(conn, "cb_bind", queue="jobs", pattern="orders.*")
    assert fn(conn, "cb_publish", topic="orders.created", body=J({"order": 7})) == 1
    read = call(conn, "cb_read", queue="jobs", quantity=1, hide_for=50)
    assert [m["id"] for m in read] == s["messages"][:1]

    # Task runs of every status.
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_create_task", name="maybe", condition="input.n gte 1")
    fn(conn, "cb_create_task", name="guarded", on_fail=True)
    runs = {
        st: fn(conn, "cb_run_task", name="work", input=J({"status": st}))
        for st in ("started", "completed", "failed", "canceled")
    }
    # a run that expires before it is claimed: made 10 minutes ago (engine clock)
    ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    conn.execute("SELECT set_config('catbird.fake_now', %s, false)", (ago.isoformat(),))
    runs["expired"] = fn(
        conn,
        "cb_run_task",
        name="work",
        input=J({"status": "expired"}),
        expires_at=ago + dt.timedelta(minutes=1),
    )
    conn.execute("RESET catbird.fake_now")
    claimed = call(conn, "cb_claim_tasks", name="work", quantity=10, hide_for=HIDE)
    assert {c["id"] for c in claimed} == {
        runs[k] for k in ("started", "completed", "failed", "canceled")
    }
    assert fn(conn, "cb_complete_task", name="work", run_id=runs["completed"], output=J({"ok": 1}))
    assert (
        fn(conn, "cb_fail_task", name="work", run_id=runs["failed"], error_message="boom")
        == "failed"
    )
    assert fn(conn, "cb_cancel_task", name="work", run_id=runs["canceled"], reason="no")
    runs["queued"] = fn(conn, "cb_run_task", name="work", input=J({"status": "queued"}))
    runs["skipped"] = fn(conn, "cb_run_task", name="maybe", input=J({"n": 0}))
    s["maybe_queued"] = fn(conn, "cb_run_task", name="maybe", input=J({"n": 2}))
    s["guarded"] = fn(conn, "cb_run_task", name="guarded", input=J({}))
    [g] = call(conn, "cb_claim_tasks", name="guarded", quantity=1, hide_for=HIDE)
    assert fn(conn, "cb_fail_task", name="guarded", run_id=g["id"], error_message="x") == "failed"
    s["runs"] = runs
    statuses = dict(
        conn.execute(
            "SELECT input->>'status', status FROM catbird.cb_task_runs WHERE input ? 'status'"
        ).fetchall()
    )
    assert statuses == {k: k for k in runs if k != "skipped"}, statuses
    assert (
        scalar(conn, "SELECT status FROM catbird.cb_task_runs WHERE id = %s", (runs["skipped"],))
        == "skipped"
    )
    assert (
        scalar(
            conn, "SELECT on_fail_status FROM catbird.cb_task_runs WHERE id = %s", (s["guarded"],)
        )
        == "queued"
    )

    # Flows mid-way: run 1 has a completed, b and c queued; run 2 has a started.
    fn(conn, "cb_create_flow", name="pipe", steps=J([step("a"), step("b", "a"), step("c", "a")]))
    s["flow_runs"] = [fn(conn, "cb_run_flow", name="pipe", input=J({"k": k})) for k in (1, 2)]
    claims = call(
        conn, "cb_claim_steps", flow_name="pipe", step_name="a", quantity=10, hide_for=HIDE
    )
    first = next(c for c in claims if c["flow_run_id"] == s["flow_runs"][0])
    s["started_step"] = next(c for c in claims if c["flow_run_id"] == s["flow_runs"][1])
    assert fn(
        conn,
        "cb_complete_step",
        flow_name="pipe",
        step_name="a",
        id=first["id"],
        output=J({"a": 1}),
        attempt=first["attempts"],
    )
    steps = conn.execute(
        "SELECT r.flow_run_id, r.step_name, r.status FROM catbird.cb_step_runs r ORDER BY 1, 2"
    ).fetchall()
    one, two = s["flow_runs"]
    waiting = "waiting_for_dependencies"
    assert steps == [
        (one, "a", "completed"),
        (one, "b", "queued"),
        (one, "c", "queued"),
        (two, "a", "started"),
        (two, "b", waiting),
        (two, "c", waiting),
    ]

    # Generator mid-way: two items spawned (no attempt recorded in 0.1.0).
    fn(conn, "cb_create_flow", name="gen", steps=J([step("g", step_type="generator")]))
    s["gen_run"] = fn(conn, "cb_run_flow", name="gen", input=J({}))
    [gc] = call(conn, "cb_claim_steps", flow_name="gen", step_name="g", quantity=1, hide_for=HIDE)
    s["gen_claim"] = gc
    assert (
        fn(
            conn,
            "cb_spawn_generator_map_tasks",
            flow_name="gen",
            step_name="g",
            id=gc["id"],
            items=J([1, 2]),
        )
        == 2
    )
    return s


def _finish_new(conn: psycopg.Connection[Any], s: dict[str, Any]) -> None:
    """Finish everything with this version's API."""
    # The in-flight message's lease ran out: all four are delivered, and acked
    # with the delivery-checked cb_delete.
    got = sorted(
        call(conn, "cb_read", queue="jobs", quantity=10, hide_for=HIDE), key=lambda m: m["id"]
    )
    assert [m["body"] for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}, {"order": 7}]
    assert [m["deliveries"] for m in got] == [2, 1, 1, 1]
    assert all(m["source_queue"] is None for m in got)
    for m in got:
        assert fn(conn, "cb_delete", queue="jobs", id=m["id"], delivery=m["deliveries"])
    assert scalar(conn, "SELECT count(*) FROM catbird.cb_messages") == 0
    [q] = call(conn, "cb_get_queue", name="jobs")
    assert (q["max_deliveries"], q["dead_letter_queue"], q["depth"]) == (None, None, 0)

    runs = s["runs"]
    # the run started under 0.1.0 completes under its attempt
    assert fn(
        conn,
        "cb_complete_task",
        name="work",
        run_id=runs["started"],
        output=J({"late": 1}),
        attempt=1,
    )
    [queued] = call(conn, "cb_claim_tasks", name="work", quantity=10, hide_for=HIDE)
    assert queued["id"] == runs["queued"]
    assert fn(
        conn,
        "cb_complete_task",
        name="work",
        run_id=queued["id"],
        output=J(2),
        attempt=queued["attempts"],
    )
    [maybe] = call(conn, "cb_claim_tasks", name="maybe", quantity=10, hide_for=HIDE)
    assert maybe["id"] == s["maybe_queued"]
    assert (
        fn(
            conn,
            "cb_fail_task",
            name="maybe",
            run_id=maybe["id"],
            error_message="bad",
            attempt=1,
            retryable=False,
            error_detail="trace",
        )
        == "failed"
    )
    [on_fail] = call(conn, "cb_claim_task_on_fail", name="guarded", quantity=1)
    fn(
        conn,
        "cb_complete_task_on_fail",
        name="guarded",
        run_id=on_fail["id"],
        on_fail_attempt=on_fail["on_fail_attempts"],
    )
    info = {r["id"]: r for r in call(conn, "cb_list_task_runs", name="work")}
    assert {k: info[v]["status"] for k, v in runs.items() if k != "skipped"} == {
        "started": "completed",
        "completed": "completed",
        "failed": "failed",
        "canceled": "canceled",
        "expired": "expired",
        "queued": "completed",
    }
    assert info[runs["completed"]]["output"] == {"ok": 1}
    assert info[runs["failed"]]["error_message"] == "boom"
    assert info[runs["failed"]]["error_detail"] is None
    [failed_maybe] = call(conn, "cb_get_task_run", name="maybe", run_id=maybe["id"])
    assert failed_maybe["error_detail"] == "trace"
    [t] = call(conn, "cb_get_task", name="work")
    assert (t["max_retries"], t["backoff_min"], t["backoff_max"]) == (None, None, None)

    # Flows: both runs complete.
    one, two = s["flow_runs"]
    started = s["started_step"]
    assert fn(
        conn,
        "cb_complete_step",
        flow_name="pipe",
        step_name="a",
        id=started["id"],
        output=J({"a": 2}),
        attempt=started["attempts"],
    )
    for name in ("b", "c"):
        claims = call(
            conn, "cb_claim_steps", flow_name="pipe", step_name=name, quantity=10, hide_for=HIDE
        )
        assert sorted(c["flow_run_id"] for c in claims) == [one, two]
        for c in claims:
            assert fn(
                conn,
                "cb_complete_step",
                flow_name="pipe",
                step_name=name,
                id=c["id"],
                output=J({name: c["flow_run_id"]}),
                attempt=c["attempts"],
            )
    for run_id in (one, two):
        [run] = call(conn, "cb_get_flow_run", name="pipe", run_id=run_id)
        assert run["status"] == "completed", run

    # The generator resumes under its attempt: the items it spawned under
    # 0.1.0 count, the next ones are appended after them.
    gc = s["gen_claim"]
    assert (
        fn(
            conn,
            "cb_spawn_generator_map_tasks",
            flow_name="gen",
            step_name="g",
            id=gc["id"],
            items=J([3]),
            attempt=gc["attempts"],
        )
        == 1
    )
    items = conn.execute(
        "SELECT idx, item FROM catbird.cb_map_tasks WHERE flow_run_id = %s ORDER BY idx",
        (s["gen_run"],),
    ).fetchall()
    assert items == [(0, 1), (1, 2), (2, 3)]
    fn(
        conn,
        "cb_complete_generator_step",
        flow_name="gen",
        step_name="g",
        id=gc["id"],
        attempt=gc["attempts"],
    )
    tasks = call(
        conn, "cb_claim_map_tasks", flow_name="gen", step_name="g", quantity=10, hide_for=HIDE
    )
    fn(
        conn,
        "cb_complete_map_tasks",
        flow_name="gen",
        step_name="g",
        ids=[t["id"] for t in tasks],
        outputs=[J(t["item"]) for t in tasks],
        attempts=[t["attempts"] for t in tasks],
    )
    [gen] = call(conn, "cb_get_flow_run", name="gen", run_id=s["gen_run"])
    assert gen["status"] == "completed", gen

    # What 0.1.0 did not have works: schedules, and the group roles' grants.
    fn(conn, "cb_create_task_schedule", task_name="work", cron_spec="*/5 * * * *")
    assert [r["task_name"] for r in call(conn, "cb_list_task_schedules")] == ["work"]
    conn.execute("SET ROLE catbird_worker")
    try:
        assert call(conn, "cb_claim_tasks", name="work", quantity=1, hide_for=HIDE) == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            fn(conn, "cb_delete_task", name="work")
    finally:
        conn.execute("RESET ROLE")


def test_alter_extension_update_matches_a_fresh_install_and_finishes_the_work(new_db: Any) -> None:
    old_dsn, fresh_dsn = new_db(), new_db()
    with psycopg.connect(fresh_dsn, autocommit=True) as fresh:
        fresh.execute("CREATE EXTENSION catbird")
        expected = snapshot(fresh)
    with psycopg.connect(old_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
        state = _load_old(conn)
        before = snapshot(conn)
        assert differences(before, expected), "0.1.0 and this version have the same catalog"
        conn.execute("ALTER EXTENSION catbird UPDATE")
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'catbird'") == NEW
        assert differences(snapshot(conn), expected) == []
    # A new session, as after a real upgrade (no cached plans of 0.1.0).
    with psycopg.connect(old_dsn, autocommit=True) as conn:
        _finish_new(conn, state)


def _install_plain_old(conn: psycopg.Connection[Any]) -> None:
    """catbird 0.1.0 as its `catbird db install --mode plain` installed it."""
    script = (BUILT_DIR / f"catbird--{OLD}.sql").read_text()
    with conn.transaction():
        conn.execute("SET LOCAL search_path TO catbird")
        conn.execute(script.encode())
        conn.execute(
            "COMMENT ON SCHEMA catbird IS 'catbird 0.1.0 (plain install, no extension object)'"
        )


def test_upgrade_of_a_plain_install_matches_a_fresh_plain_install(new_db: Any) -> None:
    old_dsn, fresh_dsn = new_db(), new_db()
    with psycopg.connect(fresh_dsn, autocommit=True) as fresh:
        inst.install(fresh, mode="plain")
        expected = snapshot(fresh, extension=False)
    with psycopg.connect(old_dsn, autocommit=True) as conn:
        _install_plain_old(conn)
        state = _load_old(conn)
        search_path = scalar(conn, "SHOW search_path")
        report = inst.upgrade(conn)
        assert report == {
            "how": "plain",
            "from_version": OLD,
            "to_version": NEW,
            "changed": True,
            "pg_tle": False,
        }
        assert scalar(conn, "SHOW search_path") == search_path
        st = inst.status(conn)
        assert (st["how"], st["version"]) == ("plain", NEW)
        assert differences(snapshot(conn, extension=False), expected) == []
        assert inst.upgrade(conn)["changed"] is False
    with psycopg.connect(old_dsn, autocommit=True) as conn:
        _finish_new(conn, state)


def test_catbird_db_upgrade_updates_the_extension(new_db: Any) -> None:
    dsn = new_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
        fn(conn, "cb_create_queue", name="kept")
        fn(conn, "cb_send", queue="kept", body=J({"x": 1}))
    status = cb(dsn, "db", "status", columns=200)
    assert "version 0.1.0" in status.stdout and "catbird db upgrade" in status.stdout
    result = cb(dsn, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"Upgraded catbird 0.1.0 -> {NEW} (extension)" in result.stdout
    doc = cbj(dsn, "db", "upgrade")
    assert (doc["changed"], doc["from_version"], doc["to_version"]) == (False, NEW, NEW)
    assert "up to date" in cb(dsn, "db", "upgrade").stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'catbird'") == NEW
        [m] = call(conn, "cb_read", queue="kept", quantity=5, hide_for=HIDE)
        assert m["body"] == {"x": 1}


def test_catbird_db_upgrade_without_an_install_or_a_path_says_what_to_do(
    new_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = new_db()
    result = cb(dsn, "db", "upgrade")
    assert result.exit_code == 1
    assert "not installed" in result.output and "catbird db install" in result.output
    with psycopg.connect(dsn, autocommit=True) as conn:
        _install_plain_old(conn)
        # A package that ships no path from the installed version.
        monkeypatch.setattr(inst, "update_scripts", lambda: {})
        with pytest.raises(inst.InstallError, match=r"no update path from catbird 0\.1\.0"):
            inst.upgrade(conn)
        assert inst.status(conn)["version"] == OLD
        conn.execute("DROP SCHEMA catbird CASCADE")
        conn.execute("CREATE EXTENSION catbird VERSION '0.1.0'")
        # A server without this version's files: ALTER EXTENSION cannot run.
        monkeypatch.setattr(inst, "EXTENSION_VERSION", "9.9.9")
        with pytest.raises(inst.InstallError, match=r"make install PG_CONFIG=.*catbird db upgrade"):
            inst.upgrade(conn)
        assert scalar(conn, "SELECT extversion FROM pg_extension WHERE extname = 'catbird'") == OLD


def test_update_script_is_what_make_build_writes(tmp_path: Path) -> None:
    out = tmp_path / "u.sql"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "gen_upgrade.py"),
            str(ROOT / "extension" / "upgrades" / f"{OLD}--{NEW}.sql"),
            "--output",
            str(out),
        ],
        check=True,
    )
    assert out.read_text() == UPDATE_SCRIPT.read_text()


def test_the_extension_owner_upgrades_without_being_superuser(new_db: Any, server_dsn: str) -> None:
    # As on a managed server: the role that created the extension (CREATE on
    # the database, not superuser) runs the update script.
    old_dsn, fresh_dsn = new_db(), new_db()
    role = f"catbird_owner_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    try:
        snapshots = []
        for dsn, create in (
            (fresh_dsn, ["CREATE EXTENSION catbird"]),
            (
                old_dsn,
                ["CREATE EXTENSION catbird VERSION '0.1.0'", "ALTER EXTENSION catbird UPDATE"],
            ),
        ):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                        sql.Identifier(conn.info.dbname), sql.Identifier(role)
                    )
                )
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                conn.execute(create[0])
                fn(conn, "cb_create_queue", name="kept")
                for statement in create[1:]:
                    conn.execute(statement)
                assert (
                    scalar(
                        conn,
                        "SELECT extowner::regrole::text FROM pg_extension"
                        " WHERE extname = 'catbird'",
                    )
                    == role
                )
                snapshots.append(snapshot(conn))
                conn.execute("RESET ROLE")
        assert differences(snapshots[1], snapshots[0]) == []
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            for dsn in (old_dsn, fresh_dsn):
                name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(str(name))
                    )
                )
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

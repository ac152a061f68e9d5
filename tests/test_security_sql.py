"""Security and privileges (SPEC 7.2): a pinned search_path on every function,
the three group roles and exactly their rights, the clock movable by admins
only, and bounded inputs (22023, nothing written).

Roles are cluster-wide: every role a test creates carries a random suffix and
is dropped (with what it owns in the test's database) when the test ends. The
three group roles are created by CREATE EXTENSION (the tests connect as a
superuser) and are shared; no test drops them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from catbird.db import install as inst
from sqlhelpers import J, engine_state, fn, rejected, scalar

ROOT = Path(__file__).resolve().parent.parent
BUILT_SQL = ROOT / "python" / "catbird" / "sql" / f"catbird--{inst.EXTENSION_VERSION}.sql"

ADMIN, WORKER, CLIENT = "catbird_admin", "catbird_worker", "catbird_client"
A, AW, AC, AWC = {ADMIN}, {ADMIN, WORKER}, {ADMIN, CLIENT}, {ADMIN, WORKER, CLIENT}

#: Every public function and the group roles that may call it (all overloads
#: alike). A public function missing here fails test_every_public_function_is_in_the_role_table:
#: decide its roles, add it here and to _cb_function_roles in 90_privileges.sql.
FUNCTION_ROLES: dict[str, set[str]] = {
    # clock, events
    "cb_now": AWC,
    "cb_notify": AWC,
    # the durable inbox (application-facing: every role)
    "cb_notify_durable": AWC,
    "cb_read_notifications": AWC,
    "cb_mark_seen_until": AWC,
    "cb_mark_seen": AWC,
    # queues
    "cb_create_queue": A,
    "cb_delete_queue": A,
    "cb_purge_queue": A,
    "cb_send": AWC,
    "cb_read": AW,
    "cb_read_poll": AW,
    "cb_pop": AW,
    "cb_hide": AW,
    "cb_delete": AW,
    "cb_list_queues": AWC,
    "cb_get_queue": AWC,
    # topics
    "cb_bind": A,
    "cb_unbind": A,
    "cb_list_bindings": AWC,
    "cb_publish": AWC,
    # tasks
    "cb_create_task": A,
    "cb_delete_task": A,
    "cb_run_task": AWC,
    "cb_bind_task": A,
    "cb_unbind_task": A,
    "cb_cancel_task": AC,
    "cb_wait_task_output": AWC,
    "cb_purge_task_runs": A,
    "cb_clear_task_runs": A,
    "cb_list_tasks": AWC,
    "cb_get_task": AWC,
    "cb_list_task_runs": AWC,
    "cb_get_task_run": AWC,
    "cb_claim_tasks": AW,
    "cb_hide_tasks": AW,
    "cb_complete_tasks": AW,
    "cb_complete_task": AW,
    "cb_fail_task": AW,
    "cb_claim_task_on_fail": AW,
    "cb_complete_task_on_fail": AW,
    "cb_fail_task_on_fail": AW,
    # flows
    "cb_create_flow": A,
    "cb_delete_flow": A,
    "cb_list_flows": AWC,
    "cb_get_flow": AWC,
    "cb_run_flow": AWC,
    "cb_bind_flow": A,
    "cb_unbind_flow": A,
    "cb_signal_flow": AWC,
    "cb_cancel_flow": AC,
    "cb_complete_flow_early": AW,
    "cb_purge_flow_runs": A,
    "cb_clear_flow_runs": A,
    "cb_claim_steps": AW,
    "cb_hide_steps": AW,
    "cb_complete_step": AW,
    "cb_complete_steps": AW,
    "cb_fail_step": AW,
    "cb_claim_map_tasks": AW,
    "cb_hide_map_tasks": AW,
    "cb_complete_map_tasks": AW,
    "cb_fail_map_task": AW,
    "cb_spawn_generator_map_tasks": AW,
    "cb_complete_generator_step": AW,
    "cb_fail_generator_step": AW,
    "cb_read_map_outputs": AW,
    "cb_wait_flow_output": AWC,
    "cb_get_flow_run_steps": AWC,
    "cb_get_flow_step_status": AWC,
    "cb_get_flow_step_output": AWC,
    "cb_wait_flow_step_output": AWC,
    "cb_list_flow_runs": AWC,
    "cb_get_flow_run": AWC,
    "cb_claim_flow_on_fail": AW,
    "cb_complete_flow_on_fail": AW,
    # run lifecycle operations (SPEC 7.1)
    "cb_retry_task_run": AC,
    "cb_retry_flow_run": AC,
    "cb_redrive": A,
    # dashboard reads
    "cb_peek": A,
    "cb_list_run_counts": AWC,
    "cb_list_task_runs_by_status": AWC,
    "cb_list_flow_runs_by_status": AWC,
    # schedules
    "cb_next_cron_tick": AWC,
    "cb_next_cron_ticks": AWC,
    "cb_create_task_schedule": A,
    "cb_create_flow_schedule": A,
    "cb_delete_task_schedule": A,
    "cb_delete_flow_schedule": A,
    "cb_enable_task_schedule": A,
    "cb_enable_flow_schedule": A,
    "cb_disable_task_schedule": A,
    "cb_disable_flow_schedule": A,
    "cb_list_task_schedules": AWC,
    "cb_list_flow_schedules": AWC,
    "cb_execute_due_task_schedules": AW,
    "cb_execute_due_flow_schedules": AW,
    "cb_fail_flow_on_fail": AW,
    # maintenance, workers
    "cb_gc": A,
    "cb_worker_started": AW,
    "cb_worker_heartbeat": AW,
    "cb_worker_stopped": AW,
    "cb_list_workers": AWC,
    # health and metrics (75_health)
    "cb_health": AW,
    "cb_metrics": AW,
    # Wire nodes and presence
    "cb_wire_heartbeat": AC,
    "cb_wire_join": AC,
    "cb_wire_leave": AC,
    "cb_wire_presence": AC,
    "cb_wire_stop": AC,
}


# --- helpers -----------------------------------------------------------------------


@pytest.fixture
def make_role(conn: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Creates NOLOGIN roles for one test (random names) and drops them after."""
    created: list[str] = []

    def make(prefix: str, *member_of: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
        created.append(name)
        for group in member_of:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name))
            )
        return name

    yield make
    conn.execute("RESET ROLE")
    for name in reversed(created):
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def set_role(conn: psycopg.Connection, role: str | None) -> None:
    if role is None:
        conn.execute("RESET ROLE")
    else:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def public_functions(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(name, regprocedure text) of every cb_ function in schema catbird."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT p.proname::text, p.oid::regprocedure::text FROM pg_proc p"
            " WHERE p.pronamespace = 'catbird'::regnamespace AND p.proname LIKE 'cb\\_%'"
            " ORDER BY 1, 2"
        ).fetchall()
    ]


# --- search_path ---------------------------------------------------------------------


def test_every_function_pins_search_path_and_public_ones_are_security_definer(
    conn: psycopg.Connection,
) -> None:
    rows = conn.execute(
        """
        SELECT p.oid::regprocedure::text, p.proname LIKE 'cb\\_%', p.prosecdef,
               coalesce('search_path=pg_catalog, catbird, pg_temp' = ANY (p.proconfig), false),
               p.proowner = (SELECT extowner FROM pg_extension WHERE extname = 'catbird')
          FROM pg_proc p WHERE p.pronamespace = 'catbird'::regnamespace
        """
    ).fetchall()
    assert rows
    unpinned = [r[0] for r in rows if not r[3]]
    assert unpinned == [], f"functions without a pinned search_path: {unpinned}"
    assert [r[0] for r in rows if r[1] != r[2]] == [], "cb_* and only cb_* are SECURITY DEFINER"
    assert all(r[4] for r in rows), "every function is owned by the extension owner"


def _builtins_called_by_the_engine(conn: psycopg.Connection) -> list[str]:
    """Names the built SQL calls as functions (identifier followed by '(') that
    resolve to pg_catalog functions: generated from the SQL, not hand-picked."""
    text = BUILT_SQL.read_text()
    text = re.sub(r"--[^\n]*", "", text)  # comments name functions too, harmlessly
    candidates = sorted({m.lower() for m in re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", text)})
    rows = conn.execute(
        "SELECT DISTINCT proname::text FROM pg_proc"
        " WHERE pronamespace = 'pg_catalog'::regnamespace AND proname = ANY (%s) ORDER BY 1",
        (candidates,),
    ).fetchall()
    return [r[0] for r in rows]


_UNSHADOWABLE = re.compile(
    r"\b(internal|cstring|trigger|event_trigger|language_handler|fdw_handler|"
    r"index_am_handler|tsm_handler|table_am_handler|anyenum)\b"
)


def _shadow_all(conn: psycopg.Connection, role: str, names: list[str]) -> tuple[int, list[str]]:
    """As ``role``, create in public a function of the same name and argument types
    as every pg_catalog overload of ``names`` that PL/pgSQL can define; each logs
    its call into public.hostile_calls. Returns (how many, names left unshadowed)."""
    overloads = conn.execute(
        """
        SELECT p.proname::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               p.proretset OR p.prorettype = 'void'::regtype
               OR coalesce('o' = ANY (p.proargmodes) OR 't' = ANY (p.proargmodes)
                           OR 'b' = ANY (p.proargmodes), false)
          FROM pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (%s)
           AND p.prokind = 'f'
        """,
        (names,),
    ).fetchall()
    set_role(conn, role)
    conn.execute("CREATE TABLE public.hostile_calls (fn text)")
    conn.execute("GRANT INSERT ON public.hostile_calls TO PUBLIC")
    made: set[str] = set()
    count = 0
    for name, args, result, bare_return in overloads:
        args = args.replace('VARIADIC "any"', "VARIADIC text[]").replace('"any"', "text")
        if _UNSHADOWABLE.search(args) or _UNSHADOWABLE.search(result):
            continue
        if "anyelement" in result and "anyelement" not in args and "anycompatible" not in args:
            continue
        body = (
            f"BEGIN INSERT INTO public.hostile_calls VALUES ({name!r}); "
            f"{'RETURN;' if bare_return else 'RETURN NULL;'} END"
        )
        stmt = sql.SQL("CREATE FUNCTION public.{}({}) RETURNS {} LANGUAGE plpgsql AS {}").format(
            sql.Identifier(name), sql.SQL(args), sql.SQL(result), sql.Literal(body)
        )
        try:
            with conn.transaction():
                conn.execute(stmt)
        except psycopg.Error:
            continue
        made.add(name)
        count += 1
    aggregates = conn.execute(
        """
        SELECT p.proname::text, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
          FROM pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.proname = ANY (%s)
           AND p.prokind = 'a'
        """,
        (names,),
    ).fetchall()
    for i, (name, args, result) in enumerate(aggregates):
        args = args.replace('"any"', "text")
        if _UNSHADOWABLE.search(args) or _UNSHADOWABLE.search(result) or "ORDER BY" in args:
            continue
        if result.startswith("any") and not re.search(r"\bany", args):
            continue
        sfunc = f"hostile_sfunc_{i}"
        body = f"BEGIN INSERT INTO public.hostile_calls VALUES ({name!r}); RETURN state; END"
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "CREATE FUNCTION public.{}(state {}{}) RETURNS {} LANGUAGE plpgsql AS {}"
                    ).format(
                        sql.Identifier(sfunc),
                        sql.SQL(result),
                        sql.SQL(", " + args if args else ""),
                        sql.SQL(result),
                        sql.Literal(body),
                    )
                )
                conn.execute(
                    sql.SQL(
                        "CREATE AGGREGATE public.{}({}) (SFUNC = public.{}, STYPE = {})"
                    ).format(
                        sql.Identifier(name),
                        sql.SQL(args or "*"),
                        sql.Identifier(sfunc),
                        sql.SQL(result),
                    )
                )
        except psycopg.Error:
            continue
        made.add(name)
        count += 1
    set_role(conn, None)
    return count, sorted(set(names) - made)


def _exercise_every_family(conn: psycopg.Connection) -> set[str]:
    """Calls every public function family once, as the connection's role; returns
    the names called."""
    called: set[str] = set()

    def q(name: str, query: str, params: Any = None) -> list[Any]:
        called.add(name)
        return conn.execute(query, params).fetchall()

    wid = str(uuid.uuid4())
    q("cb_now", "SELECT catbird.cb_now()")
    q("cb_notify", "SELECT catbird.cb_notify('app.ping', 'x')")
    # the durable inbox
    n1 = q(
        "cb_notify_durable",
        "SELECT catbird.cb_notify_durable('user-1', 'import.done', 'ok', collapse_key => 'imp',"
        " expires_at => now() + interval '1 day')",
    )[0][0]
    q("cb_read_notifications", "SELECT * FROM catbird.cb_read_notifications('user-1')")
    q("cb_mark_seen", "SELECT catbird.cb_mark_seen('user-1', ARRAY[%s]::bigint[])", (n1,))
    q("cb_mark_seen_until", "SELECT catbird.cb_mark_seen_until('user-1', %s)", (n1,))
    # queues and topics
    q(
        "cb_create_queue",
        "SELECT catbird.cb_create_queue('hq', expires_at => now() + interval '1 day')",
    )
    q("cb_bind", "SELECT catbird.cb_bind('hq', 'orders.*.created')")
    q(
        "cb_send",
        "SELECT catbird.cb_send('hq', %s, concurrency_key => 'k1', visible_at => now())",
        (J({"a": 1}),),
    )
    q(
        "cb_send",
        "SELECT catbird.cb_send('hq', ARRAY[%s, %s]::jsonb[],"
        " concurrency_keys => ARRAY['k2', NULL])",
        (J(1), J(2)),
    )
    q(
        "cb_publish",
        "SELECT catbird.cb_publish('orders.eu.created', %s, concurrency_key => 'p1')",
        (J({"p": 1}),),
    )
    q(
        "cb_publish",
        "SELECT catbird.cb_publish('orders.eu.created', ARRAY[%s]::jsonb[])",
        (J({"p": 2}),),
    )
    got = q("cb_read", "SELECT id FROM catbird.cb_read('hq', 2, 30000)")
    q("cb_read_poll", "SELECT id FROM catbird.cb_read_poll('hq', 1, 30000, poll_for => 0)")
    q("cb_hide", "SELECT catbird.cb_hide('hq', %s::bigint, 1000)", (got[0][0],))
    q("cb_hide", "SELECT catbird.cb_hide('hq', ARRAY[%s]::bigint[], 1000)", (got[0][0],))
    q("cb_delete", "SELECT catbird.cb_delete('hq', %s::bigint)", (got[0][0],))
    q("cb_delete", "SELECT catbird.cb_delete('hq', ARRAY[%s]::bigint[])", (got[1][0],))
    q("cb_pop", "SELECT id FROM catbird.cb_pop('hq', 1)")
    q("cb_list_queues", "SELECT * FROM catbird.cb_list_queues()")
    q("cb_peek", "SELECT * FROM catbird.cb_peek('hq')")
    q("cb_get_queue", "SELECT * FROM catbird.cb_get_queue('hq')")
    q("cb_list_bindings", "SELECT * FROM catbird.cb_list_bindings()")
    q("cb_unbind", "SELECT catbird.cb_unbind('hq', 'orders.*.created')")
    q("cb_purge_queue", "SELECT catbird.cb_purge_queue('hq')")
    q("cb_delete_queue", "SELECT catbird.cb_delete_queue('hq')")
    # tasks
    q(
        "cb_create_task",
        "SELECT catbird.cb_create_task('ht', condition => 'input.go eq true',"
        " retention_period => interval '1 day', on_fail => true)",
    )
    q("cb_bind_task", "SELECT catbird.cb_bind_task('ht', 'jobs.#')")
    q("cb_publish", "SELECT catbird.cb_publish('jobs.x', %s)", (J({"go": True, "via": "topic"}),))
    r1 = q(
        "cb_run_task",
        "SELECT catbird.cb_run_task('ht', %s, concurrency_key => 'c1')",
        (J({"go": True}),),
    )[0][0]
    q(
        "cb_run_task",
        "SELECT catbird.cb_run_task('ht', ARRAY[%s, %s]::jsonb[])",
        (J({"go": True}), J({"go": False})),
    )
    claims = q("cb_claim_tasks", "SELECT id, attempts FROM catbird.cb_claim_tasks('ht', 10, 30000)")
    ids = [c[0] for c in claims]
    q("cb_hide_tasks", "SELECT catbird.cb_hide_tasks('ht', %s, 30000)", (ids,))
    q("cb_complete_task", "SELECT catbird.cb_complete_task('ht', %s, %s)", (ids[0], J("done")))
    q(
        "cb_complete_tasks",
        "SELECT catbird.cb_complete_tasks('ht', %s, ARRAY[%s]::jsonb[])",
        ([ids[1]], J(2)),
    )
    q("cb_fail_task", "SELECT catbird.cb_fail_task('ht', %s, 'boom', max_retries => 0)", (ids[2],))
    q("cb_claim_task_on_fail", "SELECT * FROM catbird.cb_claim_task_on_fail('ht', 10)")
    q(
        "cb_fail_task_on_fail",
        "SELECT catbird.cb_fail_task_on_fail('ht', %s, 'again', false, 0)",
        (ids[2],),
    )
    q("cb_claim_task_on_fail", "SELECT * FROM catbird.cb_claim_task_on_fail('ht', 10)")
    q("cb_complete_task_on_fail", "SELECT catbird.cb_complete_task_on_fail('ht', %s)", (ids[2],))
    q(
        "cb_wait_task_output",
        "SELECT * FROM catbird.cb_wait_task_output('ht', %s, poll_for => 0)",
        (r1,),
    )
    q("cb_list_tasks", "SELECT * FROM catbird.cb_list_tasks()")
    q("cb_get_task", "SELECT * FROM catbird.cb_get_task('ht')")
    q("cb_list_task_runs", "SELECT * FROM catbird.cb_list_task_runs('ht')")
    q("cb_get_task_run", "SELECT * FROM catbird.cb_get_task_run('ht', %s)", (r1,))
    q(
        "cb_list_task_runs_by_status",
        "SELECT * FROM catbird.cb_list_task_runs_by_status('ht', 'failed')",
    )
    q("cb_list_run_counts", "SELECT * FROM catbird.cb_list_run_counts(now() - interval '1 hour')")
    r2 = q("cb_run_task", "SELECT catbird.cb_run_task('ht', %s)", (J({"go": True}),))[0][0]
    q("cb_cancel_task", "SELECT catbird.cb_cancel_task('ht', %s, 'no')", (r2,))
    q("cb_unbind_task", "SELECT catbird.cb_unbind_task('ht', 'jobs.#')")
    q("cb_purge_task_runs", "SELECT catbird.cb_purge_task_runs('ht', interval '0')")
    q("cb_clear_task_runs", "SELECT catbird.cb_clear_task_runs('ht')")
    q("cb_delete_task", "SELECT catbird.cb_delete_task('ht')")
    # flows: normal, signal, mapper, generator, reducer steps, on-fail
    steps = [
        {"name": "a", "condition": "input.go eq true"},
        {
            "name": "m",
            "step_type": "mapper",
            "depends_on": [{"name": "a"}],
            "map_source_step_name": "a",
        },
        {"name": "g", "step_type": "generator", "depends_on": [{"name": "a"}]},
        {
            "name": "r",
            "step_type": "reducer",
            "depends_on": [{"name": "g"}],
            "reduce_source_step_name": "g",
        },
        {"name": "s", "signal": True, "depends_on": [{"name": "m"}, {"name": "r"}]},
    ]
    q(
        "cb_create_flow",
        "SELECT catbird.cb_create_flow('hf', steps => %s, on_fail => true)",
        (J(steps),),
    )
    q("cb_bind_flow", "SELECT catbird.cb_bind_flow('hf', 'flows.#')")
    q("cb_publish", "SELECT catbird.cb_publish('flows.x', %s)", (J({"go": False}),))
    run = q(
        "cb_run_flow",
        "SELECT catbird.cb_run_flow('hf', %s, concurrency_key => 'f1')",
        (J({"go": True}),),
    )[0][0]
    q("cb_run_flow", "SELECT catbird.cb_run_flow('hf', ARRAY[%s]::jsonb[])", (J({"go": False}),))
    a = q("cb_claim_steps", "SELECT id, attempts FROM catbird.cb_claim_steps('hf', 'a', 1, 30000)")[
        0
    ]
    q(
        "cb_hide_steps",
        "SELECT catbird.cb_hide_steps('hf', 'a', ARRAY[%s]::bigint[], 30000)",
        (a[0],),
    )
    q("cb_complete_step", "SELECT catbird.cb_complete_step('hf', 'a', %s, %s)", (a[0], J([1, 2])))
    items = q(
        "cb_claim_map_tasks", "SELECT id FROM catbird.cb_claim_map_tasks('hf', 'm', 10, 30000)"
    )
    q(
        "cb_hide_map_tasks",
        "SELECT catbird.cb_hide_map_tasks('hf', 'm', %s, 30000)",
        ([i[0] for i in items],),
    )
    q(
        "cb_fail_map_task",
        "SELECT catbird.cb_fail_map_task('hf', 'm', %s, 'retry', max_retries => 5,"
        " backoff_min => 0, backoff_max => 0)",
        (items[1][0],),
    )
    q(
        "cb_complete_map_tasks",
        "SELECT catbird.cb_complete_map_tasks('hf', 'm', ARRAY[%s]::bigint[], ARRAY[%s]::jsonb[])",
        (items[0][0], J(10)),
    )
    g = q("cb_claim_steps", "SELECT id FROM catbird.cb_claim_steps('hf', 'g', 1, 30000)")[0][0]
    q(
        "cb_spawn_generator_map_tasks",
        "SELECT catbird.cb_spawn_generator_map_tasks('hf', 'g', %s, %s)",
        (g, J([1, 2])),
    )
    gi = q("cb_claim_map_tasks", "SELECT id FROM catbird.cb_claim_map_tasks('hf', 'g', 10, 30000)")
    q(
        "cb_complete_map_tasks",
        "SELECT catbird.cb_complete_map_tasks('hf', 'g', %s, ARRAY[%s, %s]::jsonb[])",
        ([i[0] for i in gi], J(1), J(2)),
    )
    q(
        "cb_complete_generator_step",
        "SELECT catbird.cb_complete_generator_step('hf', 'g', %s)",
        (g,),
    )
    q("cb_read_map_outputs", "SELECT * FROM catbird.cb_read_map_outputs('hf', %s, 'g')", (run,))
    q("cb_claim_steps", "SELECT * FROM catbird.cb_claim_steps('hf', 'r', 1, 30000)")
    q("cb_signal_flow", "SELECT catbird.cb_signal_flow('hf', %s, 's', %s)", (run, J({"ok": 1})))
    q("cb_get_flow_run_steps", "SELECT * FROM catbird.cb_get_flow_run_steps('hf', %s)", (run,))
    q(
        "cb_get_flow_step_status",
        "SELECT * FROM catbird.cb_get_flow_step_status('hf', %s, 'a')",
        (run,),
    )
    q("cb_get_flow_step_output", "SELECT catbird.cb_get_flow_step_output('hf', %s, 'a')", (run,))
    q(
        "cb_wait_flow_step_output",
        "SELECT * FROM catbird.cb_wait_flow_step_output('hf', %s, 'a', poll_for => 0)",
        (run,),
    )
    q(
        "cb_wait_flow_output",
        "SELECT * FROM catbird.cb_wait_flow_output('hf', %s, poll_for => 0)",
        (run,),
    )
    q("cb_list_flows", "SELECT * FROM catbird.cb_list_flows()")
    q("cb_get_flow", "SELECT * FROM catbird.cb_get_flow('hf')")
    q("cb_list_flow_runs", "SELECT * FROM catbird.cb_list_flow_runs('hf')")
    q("cb_list_flow_runs_by_status", "SELECT * FROM catbird.cb_list_flow_runs_by_status('hf')")
    q("cb_get_flow_run", "SELECT * FROM catbird.cb_get_flow_run('hf', %s)", (run,))
    q(
        "cb_complete_flow_early",
        "SELECT catbird.cb_complete_flow_early('hf', %s, 'a', %s)",
        (run, J("early")),
    )
    # a second run: a generator that fails, a step that fails, on-fail handling, cancel
    run2 = q("cb_run_flow", "SELECT catbird.cb_run_flow('hf', %s)", (J({"go": True}),))[0][0]
    a2 = q("cb_claim_steps", "SELECT id FROM catbird.cb_claim_steps('hf', 'a', 1, 30000)")[0][0]
    q(
        "cb_complete_steps",
        "SELECT catbird.cb_complete_steps('hf', 'a', ARRAY[%s]::bigint[], ARRAY[%s]::jsonb[])",
        (a2, J([1])),
    )
    g2 = q("cb_claim_steps", "SELECT id FROM catbird.cb_claim_steps('hf', 'g', 1, 30000)")[0][0]
    q(
        "cb_fail_generator_step",
        "SELECT catbird.cb_fail_generator_step('hf', 'g', %s, 'gen broke')",
        (g2,),
    )
    q("cb_claim_flow_on_fail", "SELECT * FROM catbird.cb_claim_flow_on_fail('hf', 10)")
    q(
        "cb_fail_flow_on_fail",
        "SELECT catbird.cb_fail_flow_on_fail('hf', %s, 'again', false, 0)",
        (run2,),
    )
    q("cb_claim_flow_on_fail", "SELECT * FROM catbird.cb_claim_flow_on_fail('hf', 10)")
    q("cb_complete_flow_on_fail", "SELECT catbird.cb_complete_flow_on_fail('hf', %s)", (run2,))
    run3 = q("cb_run_flow", "SELECT catbird.cb_run_flow('hf', %s)", (J({"go": True}),))[0][0]
    a3 = q("cb_claim_steps", "SELECT id FROM catbird.cb_claim_steps('hf', 'a', 1, 30000)")[0][0]
    q("cb_fail_step", "SELECT catbird.cb_fail_step('hf', 'a', %s, 'step broke')", (a3,))
    run4 = q("cb_run_flow", "SELECT catbird.cb_run_flow('hf', %s)", (J({"go": True}),))[0][0]
    q("cb_cancel_flow", "SELECT catbird.cb_cancel_flow('hf', %s)", (run4,))
    q("cb_unbind_flow", "SELECT catbird.cb_unbind_flow('hf', 'flows.#')")
    q("cb_purge_flow_runs", "SELECT catbird.cb_purge_flow_runs('hf', interval '0')")
    assert run3
    q("cb_clear_flow_runs", "SELECT catbird.cb_clear_flow_runs('hf')")
    q("cb_delete_flow", "SELECT catbird.cb_delete_flow('hf')")
    # run lifecycle operations and schedules, on definitions of their own
    q("cb_create_queue", "SELECT catbird.cb_create_queue('hdlq')")
    q("cb_redrive", "SELECT catbird.cb_redrive('hdlq')")
    q("cb_create_task", "SELECT catbird.cb_create_task('hs')")
    rt = q("cb_run_task", "SELECT catbird.cb_run_task('hs', %s)", (J(1),))[0][0]
    q("cb_cancel_task", "SELECT catbird.cb_cancel_task('hs', %s)", (rt,))
    q("cb_retry_task_run", "SELECT catbird.cb_retry_task_run('hs', %s)", (rt,))
    q("cb_create_flow", "SELECT catbird.cb_create_flow('hs', steps => %s)", (J([{"name": "a"}]),))
    rf = q("cb_run_flow", "SELECT catbird.cb_run_flow('hs', %s)", (J(1),))[0][0]
    q("cb_cancel_flow", "SELECT catbird.cb_cancel_flow('hs', %s)", (rf,))
    q("cb_retry_flow_run", "SELECT catbird.cb_retry_flow_run('hs', %s)", (rf,))
    q("cb_next_cron_tick", "SELECT catbird.cb_next_cron_tick('*/5 * * * *', now())")
    q("cb_next_cron_ticks", "SELECT * FROM catbird.cb_next_cron_ticks('@daily', now(), 3)")
    for kind in ("task", "flow"):
        q(
            f"cb_create_{kind}_schedule",
            f"SELECT catbird.cb_create_{kind}_schedule('hs', '* * * * *')",
        )
        q(f"cb_disable_{kind}_schedule", f"SELECT catbird.cb_disable_{kind}_schedule('hs')")
        q(f"cb_enable_{kind}_schedule", f"SELECT catbird.cb_enable_{kind}_schedule('hs')")
        q(f"cb_list_{kind}_schedules", f"SELECT * FROM catbird.cb_list_{kind}_schedules()")
        q(f"cb_execute_due_{kind}_schedules", f"SELECT catbird.cb_execute_due_{kind}_schedules()")
        q(f"cb_delete_{kind}_schedule", f"SELECT catbird.cb_delete_{kind}_schedule('hs')")
    # workers and maintenance
    q("cb_worker_started", "SELECT catbird.cb_worker_started(%s, '[]', '[]')", (wid,))
    q("cb_worker_heartbeat", "SELECT catbird.cb_worker_heartbeat(%s)", (wid,))
    q("cb_list_workers", "SELECT * FROM catbird.cb_list_workers()")
    q("cb_worker_stopped", "SELECT catbird.cb_worker_stopped(%s)", (wid,))
    q("cb_gc", "SELECT catbird.cb_gc()")
    q("cb_health", "SELECT catbird.cb_health()")
    q("cb_metrics", "SELECT * FROM catbird.cb_metrics()")
    # Wire nodes and presence
    node, subscriber = str(uuid.uuid4()), str(uuid.uuid4())
    q("cb_wire_heartbeat", "SELECT catbird.cb_wire_heartbeat(%s)", (node,))
    q("cb_wire_join", "SELECT catbird.cb_wire_join(%s, %s, 'ann', '{room.1}')", (node, subscriber))
    q("cb_wire_presence", "SELECT * FROM catbird.cb_wire_presence('room.1')")
    q("cb_wire_leave", "SELECT catbird.cb_wire_leave(%s, %s)", (node, subscriber))
    q("cb_wire_stop", "SELECT catbird.cb_wire_stop(%s)", (node,))
    return called


def test_the_scenario_reaches_every_public_function(conn: psycopg.Connection) -> None:
    called = _exercise_every_family(conn)
    known = {name for name, _ in public_functions(conn)}
    assert known - called == set(), "extend _exercise_every_family to call these"


def test_a_hostile_role_shadowing_every_builtin_never_runs(
    conn: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    builtins = _builtins_called_by_the_engine(conn)
    # Sanity: the generated list contains the calls the issue was about.
    assert {"make_interval", "cardinality", "power", "jsonb_build_object", "format"} <= set(
        builtins
    )
    hostile = make_role("hostile")
    conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(hostile)))
    made, unshadowed = _shadow_all(conn, hostile, builtins)
    print(
        f"{len(builtins)} built-ins called by the engine; {made} hostile overloads; "
        f"not shadowable in PL/pgSQL: {unshadowed}"
    )
    assert made > 50
    # Window functions (row_number) can only be written in C.
    assert set(unshadowed) <= {"row_number", "rank", "dense_rank", "lag", "lead"}, unshadowed
    # The hostile overloads do run for whoever calls the built-ins unqualified...
    conn.execute("SET search_path = public, pg_catalog")
    conn.execute("SELECT make_interval(secs => 1.5), cardinality(ARRAY[1])")
    assert scalar(conn, "SELECT pg_catalog.count(*) FROM public.hostile_calls") > 0
    conn.execute("TRUNCATE public.hostile_calls")
    # ... but never for a superuser calling catbird, whose search_path puts them first.
    _exercise_every_family(conn)
    calls = conn.execute(
        "SELECT fn, pg_catalog.count(*) FROM public.hostile_calls GROUP BY 1"
    ).fetchall()
    assert calls == [], f"hostile functions ran inside catbird: {calls}"


# --- roles ---------------------------------------------------------------------------


def test_the_three_group_roles_exist_and_cannot_log_in(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "SELECT rolname::text, rolcanlogin, rolsuper FROM pg_roles"
        " WHERE rolname IN ('catbird_admin', 'catbird_worker', 'catbird_client') ORDER BY 1"
    ).fetchall()
    assert rows == [(ADMIN, False, False), (CLIENT, False, False), (WORKER, False, False)]


def test_every_public_function_is_in_the_role_table(conn: psycopg.Connection) -> None:
    missing = sorted({name for name, _ in public_functions(conn)} - FUNCTION_ROLES.keys())
    assert missing == [], (
        f"public functions without an entry in FUNCTION_ROLES: {missing}; decide which group "
        "roles may call them (tests/test_security_sql.py and _cb_function_roles in "
        "90_privileges.sql)"
    )
    gone = sorted(FUNCTION_ROLES.keys() - {name for name, _ in public_functions(conn)})
    assert gone == [], f"FUNCTION_ROLES lists functions that do not exist: {gone}"


def test_each_group_role_has_exactly_its_execute_rights(conn: psycopg.Connection) -> None:
    wrong = []
    for name, signature in public_functions(conn):
        expected = FUNCTION_ROLES.get(name, A)
        for role in (ADMIN, WORKER, CLIENT, "public"):
            has = scalar(
                conn,
                "SELECT has_function_privilege(%s, %s::regprocedure, 'EXECUTE')",
                (role, signature),
            )
            if has != (role in expected):
                wrong.append(f"{role} {'has' if has else 'lacks'} EXECUTE on {signature}")
    assert wrong == []
    # The internal functions belong to the owner alone.
    internal = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p"
        " WHERE p.pronamespace = 'catbird'::regnamespace AND p.proname LIKE '\\_cb\\_%'"
        " AND (has_function_privilege('catbird_admin', p.oid, 'EXECUTE')"
        "   OR has_function_privilege('public', p.oid, 'EXECUTE'))"
    ).fetchall()
    assert internal == []


def test_group_roles_work_without_any_table_privilege(
    conn: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    admin, worker, client = (
        make_role("adm", ADMIN),
        make_role("wrk", WORKER),
        make_role("cli", CLIENT),
    )
    for role in (admin, worker, client):
        assert not scalar(
            conn, "SELECT has_table_privilege(%s, 'catbird.cb_messages', 'SELECT')", (role,)
        )
    set_role(conn, admin)
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_create_task", name="work")
    set_role(conn, client)
    sent = fn(conn, "cb_send", queue="jobs", body=J({"n": 1}))
    run_id = fn(conn, "cb_run_task", name="work", input=J({"n": 2}))
    set_role(conn, worker)
    assert [r[0] for r in conn.execute("SELECT id FROM catbird.cb_read('jobs', 10, 30000)")] == [
        sent
    ]
    assert fn(conn, "cb_delete", queue="jobs", id=sent) is True
    claim = conn.execute(
        "SELECT id, attempts FROM catbird.cb_claim_tasks('work', 1, 30000)"
    ).fetchone()
    assert claim is not None and claim[0] == run_id
    assert fn(
        conn, "cb_complete_task", name="work", run_id=run_id, output=J("ok"), attempt=claim[1]
    )
    set_role(conn, client)
    rows = conn.execute(
        "SELECT status, output FROM catbird.cb_wait_task_output('work', %s)", (run_id,)
    )
    assert rows.fetchall() == [("completed", "ok")]


@pytest.mark.parametrize(
    ("group", "query"),
    [
        (CLIENT, "SELECT catbird.cb_create_queue('other')"),
        (CLIENT, "SELECT catbird.cb_delete_queue('jobs')"),
        (CLIENT, "SELECT * FROM catbird.cb_read('jobs', 10, 30000)"),
        (CLIENT, "SELECT catbird.cb_delete('jobs', 1::bigint)"),
        (CLIENT, "SELECT * FROM catbird.cb_claim_tasks('work', 1, 30000)"),
        (CLIENT, "SELECT catbird.cb_gc()"),
        (CLIENT, "SELECT catbird.cb_bind('jobs', 'x.#')"),
        (WORKER, "SELECT catbird.cb_create_task('other')"),
        (WORKER, "SELECT catbird.cb_delete_task('work')"),
        (WORKER, "SELECT catbird.cb_purge_queue('jobs')"),
        (WORKER, "SELECT catbird.cb_cancel_task('work', 1)"),
        (WORKER, "SELECT catbird.cb_gc()"),
        (WORKER, "SELECT catbird.cb_bind_task('work', 'x.#')"),
        (None, "SELECT * FROM catbird.cb_list_queues()"),
        (None, "SELECT catbird.cb_send('jobs', '{}'::jsonb)"),
    ],
)
def test_calls_outside_a_roles_rights_fail_with_42501_and_write_nothing(
    conn: psycopg.Connection, make_role: Callable[..., str], group: str | None, query: str
) -> None:
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_send", queue="jobs", body=J(1))
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_run_task", name="work", input=J(1))
    role = make_role("caller", *([group] if group else []))
    before = engine_state(conn)
    set_role(conn, role)
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute(query)
    set_role(conn, None)
    assert engine_state(conn) == before


def test_no_table_or_sequence_is_reachable_by_the_group_roles(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """
        SELECT c.relname::text, r.rolname::text
          FROM pg_class c CROSS JOIN pg_roles r
         WHERE c.relnamespace = 'catbird'::regnamespace AND c.relkind IN ('r', 'S')
           AND r.rolname IN ('catbird_admin', 'catbird_worker', 'catbird_client')
           AND (has_table_privilege(r.oid, c.oid, 'SELECT')
                OR has_table_privilege(r.oid, c.oid, 'UPDATE'))
        """
    ).fetchall()
    assert rows == []


def test_apply_privileges_is_idempotent_and_owner_only(
    conn: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    count = scalar(conn, "SELECT catbird._cb_apply_privileges()")
    assert count == scalar(
        conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'catbird'::regnamespace"
    )
    test_each_group_role_has_exactly_its_execute_rights(conn)
    set_role(conn, make_role("admin", ADMIN))
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("SELECT catbird._cb_apply_privileges()")


# --- the clock -----------------------------------------------------------------------


def test_only_admins_move_the_clock(
    conn: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    far = "2100-01-01 00:00:00+00"
    worker, client, admin = (
        make_role("wrk", WORKER),
        make_role("cli", CLIENT),
        make_role("adm", ADMIN),
    )
    conn.execute("SELECT set_config('catbird.fake_now', %s, false)", (far,))
    assert str(scalar(conn, "SELECT catbird.cb_now()")).startswith("2100-01-01")  # superuser
    for role in (worker, client, WORKER):
        set_role(conn, role)
        assert scalar(conn, "SELECT catbird.cb_now() < '2099-01-01'"), role
    set_role(conn, admin)
    assert str(scalar(conn, "SELECT catbird.cb_now()")).startswith("2100-01-01")
    set_role(conn, None)


def test_a_worker_cannot_take_a_hidden_message_by_moving_the_clock(
    conn: psycopg.Connection, make_role: Callable[..., str]
) -> None:
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_send", queue="jobs", body=J(1))
    assert len(conn.execute("SELECT * FROM catbird.cb_read('jobs', 1, 3600000)").fetchall()) == 1
    worker = make_role("wrk", WORKER)
    set_role(conn, worker)
    conn.execute("SET catbird.fake_now = '2100-01-01 00:00:00+00'")
    assert conn.execute("SELECT * FROM catbird.cb_read('jobs', 1, 30000)").fetchall() == []
    set_role(conn, None)
    # the superuser's clock does move, and then the message is visible again
    assert len(conn.execute("SELECT * FROM catbird.cb_read('jobs', 1, 30000)").fetchall()) == 1


# --- bounded inputs ------------------------------------------------------------------

_LONG = "x" * 3000
_STEP_KEYS = [{"name": "a", "conditon": "input.x"}]


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("SELECT catbird.cb_create_queue(%s)", ("q" * 100_000,)),
        ("SELECT catbird.cb_create_task(%s)", ("t" * 59,)),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, concurrency_key => %s)", (_LONG,)),
        (
            "SELECT catbird.cb_send('jobs', ARRAY['1'::jsonb], concurrency_keys => ARRAY[%s])",
            (_LONG,),
        ),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, concurrency_key => %s)", ("é" * 600,)),
        ("SELECT catbird.cb_run_task('work', '1'::jsonb, concurrency_key => %s)", (_LONG,)),
        ("SELECT catbird.cb_run_flow('flow', '1'::jsonb, concurrency_key => %s)", (_LONG,)),
        ("SELECT catbird.cb_publish('a.b', '1'::jsonb, concurrency_key => %s)", (_LONG,)),
        ("SELECT catbird.cb_publish(%s, '1'::jsonb)", (".".join(["t"] * 200),)),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, topic => %s)", ("t" * 300,)),
        ("SELECT catbird.cb_bind('jobs', %s)", ("p" * 3000,)),
        ("SELECT catbird.cb_bind_task('work', %s)", ("a." * 200 + "#",)),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, visible_at => 'infinity')", None),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, expires_at => 'infinity')", None),
        ("SELECT catbird.cb_send('jobs', ARRAY['1'::jsonb], visible_at => '-infinity')", None),
        ("SELECT catbird.cb_publish('a.b', '1'::jsonb, expires_at => 'infinity')", None),
        ("SELECT catbird.cb_run_task('work', '1'::jsonb, visible_at => 'infinity')", None),
        ("SELECT catbird.cb_run_flow('flow', '1'::jsonb, expires_at => 'infinity')", None),
        ("SELECT catbird.cb_create_queue('other', expires_at => 'infinity')", None),
        ("SELECT catbird.cb_create_task('other', condition => %s)", ("not " * 1000 + "input.x",)),
        ("SELECT catbird.cb_create_task('other', condition => %s)", ("not " * 33 + "input.x",)),
        ("SELECT catbird.cb_create_task('other', condition => %s)", ("input.x eq " + "1" * 3000,)),
        (
            "SELECT catbird.cb_create_task('other', retention_period => %s::interval)",
            ("178000000 years",),
        ),
        ("SELECT catbird.cb_purge_task_runs('work', %s::interval)", ("178000000 years",)),
        ("SELECT catbird.cb_gc(stale_worker_after => %s::interval)", ("178000000 years",)),
        ("SELECT catbird.cb_create_flow('other', steps => %s)", (J(_STEP_KEYS),)),
        (
            "SELECT catbird.cb_create_flow('other', steps => %s)",
            (J([{"name": "a"}, {"name": "b", "dependson": [{"name": "a"}]}]),),
        ),
        ("SELECT catbird.cb_send('jobs', '1'::jsonb, headers => %s)", (J(["h" * 5000]),)),
    ],
)
def test_bounded_inputs_are_rejected_with_22023_and_write_nothing(
    conn: psycopg.Connection, query: str, params: Any
) -> None:
    fn(conn, "cb_create_queue", name="jobs")
    fn(conn, "cb_bind", queue="jobs", pattern="a.#")
    fn(conn, "cb_create_task", name="work")
    fn(conn, "cb_create_flow", name="flow", steps=J([{"name": "a"}]))
    with rejected(conn, errors.InvalidParameterValue) as info:
        conn.execute(query, params)
    # The message quotes at most ~200 characters of the bad argument.
    assert len(info.value.diag.message_primary or "") < 600


def test_the_largest_allowed_inputs_are_accepted(conn: psycopg.Connection) -> None:
    fn(conn, "cb_create_queue", name="q" * 58)
    fn(conn, "cb_send", queue="q" * 58, body=J(1), concurrency_key="k" * 1024, topic="t" * 255)
    fn(conn, "cb_bind", queue="q" * 58, pattern="p" * 255)
    fn(
        conn,
        "cb_create_task",
        name="t",
        condition="not " * 32 + "input.x",
        retention_period="1000 years",
    )

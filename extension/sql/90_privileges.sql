-- catbird 90_privileges: search_path, SECURITY DEFINER, the three group roles
-- and their EXECUTE rights.
--
-- Owns: the roles catbird_admin, catbird_worker and catbird_client (created
-- here when the installing role may create roles), _cb_function_roles (which
-- role may call which public function), _cb_apply_privileges (applies it all).
-- Runs after every file that creates functions and walks pg_proc, so a
-- function added in any file is covered without being listed here.
-- Guarantees:
--   * Every function in schema catbird runs with search_path pinned to
--     pg_catalog, catbird, pg_temp: a function or operator that a caller's
--     search_path puts in front of a built-in (say public.make_interval) is
--     never called by the engine.
--   * The public functions (cb_*) are SECURITY DEFINER, owned by the
--     extension owner: callers need EXECUTE on them and USAGE on the schema,
--     no privilege on any table or sequence. The internal functions (_cb_*)
--     are callable only by the owner (and superusers), i.e. from inside the
--     public functions.
--   * PUBLIC has no EXECUTE on any catbird function: a role that is in none
--     of the three groups (and not the owner or a superuser) gets 42501.
--   * catbird_admin may call every public function; catbird_worker and
--     catbird_client what _cb_function_roles lists. A public function that
--     it does not know (one added later) is catbird_admin's only, until it is
--     listed.
--   * Roles are cluster-wide: they are created only when missing, never
--     dropped, and DROP EXTENSION leaves them (with nothing granted).
--   * Privileges are applied by GRANT/REVOKE during the install script, so
--     pg_dump's record of the extension's initial privileges (pg_init_privs)
--     covers them; the tables stay dumpable (95_backup).

-- The group roles, when the installing role may create them (a superuser, or
-- a role with CREATEROLE). Otherwise 'catbird db roles' or the README's SQL
-- snippet creates them later, then calls catbird._cb_apply_privileges().
DO $$
DECLARE
    v_role text;
BEGIN
    IF (SELECT r.rolsuper OR r.rolcreaterole FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        FOREACH v_role IN ARRAY ARRAY['catbird_admin', 'catbird_worker', 'catbird_client'] LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            END IF;
        END LOOP;
    END IF;
END
$$;

-- The group roles that may call a public catbird function, by name (all its
-- overloads alike): catbird_admin everything; catbird_worker enqueueing,
-- reading and acknowledging messages, claiming, completing, failing and
-- hiding runs, heartbeats, signals, waits, introspection and the health
-- report and metrics (a worker serves /metrics); catbird_client
-- sending, publishing, running, signalling, waiting, cancelling, retrying
-- and introspection, and the Wire node calls (cb_wire_*: the web application
-- that relays events to browsers is a client); both compute cron ticks and
-- use the durable inbox (append, read, mark seen: application-facing), and
-- workers execute due schedules. Schedules, dead-letter redrives and peeking
-- at a queue's messages (cb_peek) are catbird_admin's. Any other name (a
-- function added later): catbird_admin only. Raises nothing.
CREATE FUNCTION catbird._cb_function_roles(function_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
    SELECT ARRAY['catbird_admin']
           || CASE WHEN function_name IN ('cb_now', 'cb_send', 'cb_publish', 'cb_run_task', 'cb_run_flow',
                                          'cb_signal_flow', 'cb_notify', 'cb_next_cron_tick', 'cb_next_cron_ticks',
                                          'cb_notify_durable', 'cb_read_notifications', 'cb_mark_seen_until',
                                          'cb_mark_seen')
                     OR function_name LIKE 'cb\_wait\_%'
                     OR function_name LIKE 'cb\_get\_%'
                     OR function_name LIKE 'cb\_list\_%'
                   THEN ARRAY['catbird_worker', 'catbird_client']
                   WHEN function_name IN ('cb_read', 'cb_read_poll', 'cb_pop', 'cb_hide', 'cb_delete',
                                          'cb_spawn_generator_map_tasks', 'cb_read_map_outputs',
                                          'cb_worker_started', 'cb_worker_heartbeat', 'cb_worker_stopped',
                                          'cb_health', 'cb_metrics',
                                          'cb_execute_due_task_schedules', 'cb_execute_due_flow_schedules')
                     OR function_name LIKE 'cb\_claim\_%'
                     OR function_name LIKE 'cb\_complete\_%'
                     OR function_name LIKE 'cb\_fail\_%'
                     OR function_name LIKE 'cb\_hide\_%'
                   THEN ARRAY['catbird_worker']
                   WHEN function_name IN ('cb_cancel_task', 'cb_cancel_flow', 'cb_retry_task_run', 'cb_retry_flow_run')
                     OR function_name LIKE 'cb\_wire\_%'
                   THEN ARRAY['catbird_client']
                   ELSE '{}'::text[]
              END
$$;

-- Applies the rules above to every function in schema catbird: pins
-- search_path, makes the public ones SECURITY DEFINER, revokes EXECUTE from
-- PUBLIC, grants USAGE on the schema and EXECUTE per _cb_function_roles to
-- those of the three roles that exist. Idempotent; run at install, and again
-- by the owner (or a superuser) after the roles were created later ('catbird
-- db roles'). Returns how many functions it went through; 42501 for a caller
-- that does not own the functions.
CREATE FUNCTION catbird._cb_apply_privileges() RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_fn record;
    v_role text;
    v_count int := 0;
    v_existing text[];
BEGIN
    SELECT coalesce(array_agg(r.rolname::text), '{}') INTO v_existing
    FROM pg_catalog.pg_roles r
    WHERE r.rolname IN ('catbird_admin', 'catbird_worker', 'catbird_client');
    FOREACH v_role IN ARRAY v_existing LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA catbird TO %I', v_role);
    END LOOP;
    FOR v_fn IN
        SELECT p.oid::regprocedure AS signature, p.proname::text AS name
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'catbird'::regnamespace AND p.prokind IN ('f', 'p')
        ORDER BY p.proname, p.oid
    LOOP
        v_count := v_count + 1;
        EXECUTE format('ALTER ROUTINE %s SET search_path = pg_catalog, catbird, pg_temp', v_fn.signature);
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', v_fn.signature);
        IF v_fn.name LIKE 'cb\_%' THEN
            EXECUTE format('ALTER ROUTINE %s SECURITY DEFINER', v_fn.signature);
            FOREACH v_role IN ARRAY catbird._cb_function_roles(v_fn.name) LOOP
                IF v_role = ANY (v_existing) THEN
                    EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', v_fn.signature, v_role);
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

SELECT catbird._cb_apply_privileges();

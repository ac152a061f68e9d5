-- catbird 61_schedules: cron schedules for tasks and flows.
--
-- Owns: cb_schedules (one schedule per task or flow, its cron spec parsed
-- once into a cb_cron, see 60_cron) and the schedule verbs (create, delete,
-- enable, disable, list, execute due).
-- Guarantees:
--   * cb_execute_due_*_schedules is safe under any number of concurrent
--     callers: due rows are taken FOR UPDATE SKIP LOCKED and advanced in the
--     same transaction that enqueues their runs, so each tick fires exactly
--     once. Scheduled runs carry the schedule's input and the concurrency key
--     sched:<name>:<tick, ISO-8601 UTC>.
--   * Catch-up after downtime (the ticks between next_run_at and now):
--     skip fires only the latest due tick, one fires the oldest due tick once,
--     all fires every due tick (at most batch_size per schedule per call, the
--     rest on the next call). A schedule with a single due tick fires it under
--     every policy. Ticks missed while a schedule was disabled are dropped
--     when it is enabled again.
--   * Deleting a task or flow deletes its schedule (foreign key, cascade);
--     cb_gc never touches schedules.
--   * Definitions are guarded as elsewhere: the executor takes the shared
--     definition locks of the schedules it is about to fire (in name order)
--     before it locks their rows, so deleting or redefining a task or flow
--     never races a scheduled run into it.
-- Events (data is JSON): catbird.schedule.created|updated|deleted|enabled|disabled
-- with {"task": name} or {"flow": name}.

CREATE TABLE catbird.cb_schedules (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('task', 'flow')),
    task_id          int UNIQUE REFERENCES catbird.cb_tasks (id) ON DELETE CASCADE,
    flow_id          int UNIQUE REFERENCES catbird.cb_flows (id) ON DELETE CASCADE,
    enabled          boolean NOT NULL DEFAULT true,
    catch_up         text NOT NULL CHECK (catch_up IN ('skip', 'one', 'all')),
    next_run_at      timestamptz NOT NULL,     -- the oldest tick not fired yet
    last_run_at      timestamptz,              -- the last tick fired (its scheduled time)
    last_enqueued_at timestamptz,              -- when that tick was fired
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    cron_spec        text NOT NULL,
    input            jsonb NOT NULL,
    cron             catbird.cb_cron NOT NULL,
    CONSTRAINT cb_schedules_target_check CHECK (
        (kind = 'task' AND task_id IS NOT NULL AND flow_id IS NULL)
        OR (kind = 'flow' AND flow_id IS NOT NULL AND task_id IS NULL))
);
-- The due query: enabled schedules of one kind, oldest tick first.
CREATE INDEX cb_schedules_due_idx ON catbird.cb_schedules (kind, next_run_at) WHERE enabled;


-- Checks a schedule's catch_up policy: 'skip', 'one' or 'all'. Returns
-- nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_catch_up(catch_up text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF catch_up IS NULL OR catch_up NOT IN ('skip', 'one', 'all') THEN
        RAISE EXCEPTION 'invalid catch_up %: expected ''skip'' (only the latest missed tick), ''one'' (the oldest missed tick, once) or ''all'' (every missed tick)',
            coalesce(quote_literal(left(catch_up, 200)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- cb_create_task_schedule / cb_create_flow_schedule: creates or updates the
-- schedule of one task or flow (kind), holding the definition's shared lock.
-- next_run_at is kept when the parsed spec is unchanged (so an upsert keeps
-- the backlog) and recomputed when it changes; a disabled schedule stays
-- disabled. Announces catbird.schedule.created or .updated (nothing when the
-- schedule is the same again). Returns nothing. Errors, in this order: 22023
-- for an invalid name, 42704 for an unknown definition, 22023 for an invalid
-- cron spec, a SQL NULL input or an invalid catch_up.
CREATE FUNCTION catbird._cb_create_schedule(kind text, name text, cron_spec text, input jsonb, catch_up text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_cron catbird.cb_cron;
    v_inserted boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    v_id := catbird._cb_definition_id(kind, name);
    v_cron := catbird._cb_parse_cron(cron_spec);
    PERFORM catbird._cb_check_body('input', 'schedule input', input);
    PERFORM catbird._cb_check_catch_up(catch_up);
    -- task_id or flow_id: the column naming the definition, and the conflict arbiter
    EXECUTE format(
        'INSERT INTO catbird.cb_schedules AS s (kind, %1$I, catch_up, next_run_at, created_at, updated_at,'
        '                                       cron_spec, input, cron)'
        ' VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)'
        ' ON CONFLICT (%1$I) DO UPDATE'
        '     SET cron_spec = excluded.cron_spec, input = excluded.input, catch_up = excluded.catch_up,'
        '         cron = excluded.cron, updated_at = excluded.updated_at,'
        '         next_run_at = CASE WHEN s.cron IS NOT DISTINCT FROM excluded.cron THEN s.next_run_at'
        '                            ELSE excluded.next_run_at END'
        '     WHERE (s.cron_spec, s.input, s.catch_up)'
        '           IS DISTINCT FROM (excluded.cron_spec, excluded.input, excluded.catch_up)'
        ' RETURNING s.xmax = 0',
        v_layout.definition_column)
    INTO v_inserted
    USING kind, v_id, catch_up, catbird._cb_cron_next(v_cron, v_now), v_now, cron_spec, input, v_cron;
    IF v_inserted IS NOT NULL THEN  -- NULL: the same schedule again, nothing written
        PERFORM catbird._cb_notify(CASE WHEN v_inserted THEN 'catbird.schedule.created' ELSE 'catbird.schedule.updated' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
END
$$;

-- cb_create_task_schedule(task_name, cron_spec, input, catch_up): creates the
-- task's schedule, or updates it (one schedule per task). Each tick enqueues a
-- run with `input`; catch_up is 'skip', 'one' (default) or 'all'. An unchanged
-- spec keeps next_run_at (and so any backlog); a changed one restarts from the
-- next tick after now. A disabled schedule stays disabled.
-- Errors: 42704 unknown task; 22023 invalid name, cron spec, input or catch_up.
CREATE FUNCTION catbird.cb_create_task_schedule(task_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('task', task_name, cron_spec, input, catch_up) $$;

-- cb_create_flow_schedule(flow_name, cron_spec, input, catch_up): as
-- cb_create_task_schedule, for a flow. Errors: 42704 unknown flow; 22023.
CREATE FUNCTION catbird.cb_create_flow_schedule(flow_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('flow', flow_name, cron_spec, input, catch_up) $$;

-- cb_delete_task_schedule / cb_delete_flow_schedule: deletes the schedule of
-- the named task or flow (kind) and announces catbird.schedule.deleted.
-- Returns false when there is none (also when the definition does not
-- exist); 22023 for an invalid name.
CREATE FUNCTION catbird._cb_delete_schedule(kind text, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    EXECUTE format('DELETE FROM catbird.cb_schedules s USING catbird.%I d'
                   ' WHERE s.%I = d.id AND d.name = $1 RETURNING s.id',
                   v_layout.definitions, v_layout.definition_column)
    INTO v_id USING name;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_notify('catbird.schedule.deleted', jsonb_build_object(kind, name)::text);
    RETURN true;
END
$$;

-- cb_delete_task_schedule(task_name): removes the task's schedule (the task
-- stays). Returns false when it has none (also when the task does not exist).
-- Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_delete_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('task', task_name) $$;

-- cb_delete_flow_schedule(flow_name): as cb_delete_task_schedule, for a flow.
CREATE FUNCTION catbird.cb_delete_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('flow', flow_name) $$;

-- Enables or disables the schedule of the named task or flow; false when
-- there is none. Enabling a schedule whose next tick passed while it was
-- disabled moves it to the next tick after now (ticks missed while disabled
-- are not caught up).
CREATE FUNCTION catbird._cb_set_schedule_enabled(kind text, name text, enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_was boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'invalid enabled: NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.id, s.enabled INTO v_id, v_was
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = _cb_set_schedule_enabled.kind
      AND CASE WHEN _cb_set_schedule_enabled.kind = 'task' THEN t.name ELSE f.name END = _cb_set_schedule_enabled.name
    FOR UPDATE OF s;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    IF v_was IS DISTINCT FROM enabled THEN
        UPDATE catbird.cb_schedules s
        SET enabled = _cb_set_schedule_enabled.enabled, updated_at = v_now,
            next_run_at = CASE WHEN _cb_set_schedule_enabled.enabled AND s.next_run_at <= v_now
                               THEN catbird._cb_cron_next(s.cron, v_now) ELSE s.next_run_at END
        WHERE s.id = v_id;
        PERFORM catbird._cb_notify(CASE WHEN enabled THEN 'catbird.schedule.enabled' ELSE 'catbird.schedule.disabled' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
    RETURN true;
END
$$;

-- cb_enable_task_schedule(task_name) / cb_disable_task_schedule(task_name):
-- a disabled schedule does not fire; enabling it resumes from the next tick
-- after now. Return true when the task has a schedule (whatever its state
-- was), false otherwise. Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_enable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, true) $$;

CREATE FUNCTION catbird.cb_disable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, false) $$;

-- cb_enable_flow_schedule(flow_name) / cb_disable_flow_schedule(flow_name): as
-- for tasks.
CREATE FUNCTION catbird.cb_enable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, true) $$;

CREATE FUNCTION catbird.cb_disable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, false) $$;

-- The ticks a due schedule fires now under its catch-up policy, and the
-- next_run_at it moves to. next_run_at is its oldest unfired tick (<= now).
CREATE FUNCTION catbird._cb_schedule_ticks(cron catbird.cb_cron, next_run_at timestamptz, now timestamptz,
                                           catch_up text, batch_size int,
                                           OUT ticks timestamptz[], OUT next_tick timestamptz)
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_tick timestamptz := next_run_at;
BEGIN
    IF catch_up = 'skip' THEN
        ticks := ARRAY[catbird._cb_cron_prev(cron, now)];  -- the latest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSIF catch_up = 'one' THEN
        ticks := ARRAY[next_run_at];                       -- the oldest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSE
        ticks := '{}';
        WHILE v_tick <= now AND cardinality(ticks) < batch_size LOOP
            ticks := ticks || v_tick;
            v_tick := catbird._cb_cron_next(cron, v_tick);
        END LOOP;
        next_tick := v_tick;  -- still <= now when the batch was full: the rest next call
    END IF;
END
$$;

-- Fires the due schedules of one kind; see cb_execute_due_task_schedules.
CREATE FUNCTION catbird._cb_execute_due_schedules(kind text, names text[], batch_size int, max_schedules int)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids int[];
    v_names text[];
    v_schedule record;
    v_plan record;
    v_keys text[];
    v_done_ids int[] := '{}'::int[];
    v_done_next timestamptz[] := '{}'::timestamptz[];
    v_done_last timestamptz[] := '{}'::timestamptz[];
    v_count int := 0;
    v_started bigint[];
    v_skipped bigint[];
BEGIN
    PERFORM catbird._cb_check_at_least('batch_size', batch_size, 1);
    PERFORM catbird._cb_check_at_least('max_schedules', max_schedules, 1);
    -- Candidates, read without locks; then the definitions' shared locks in
    -- name order (as any writer of runs holds them), then the rows themselves,
    -- skipping those another caller is firing and re-checking that they are
    -- still due (a caller that just fired one has moved its next_run_at on).
    SELECT array_agg(c.id), array_agg(DISTINCT c.name)
    INTO v_ids, v_names
    FROM (SELECT s.id, CASE WHEN s.kind = 'task' THEN t.name ELSE f.name END AS name
          FROM catbird.cb_schedules s
          LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
          LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
          WHERE s.kind = _cb_execute_due_schedules.kind AND s.enabled AND s.next_run_at <= v_now
            AND (names IS NULL OR coalesce(t.name, f.name) = ANY (names))
          ORDER BY s.next_run_at, s.id
          LIMIT max_schedules) c;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM catbird._cb_lock_definition(kind, n) FROM unnest(v_names) AS n ORDER BY n;

    IF kind = 'task' THEN
        -- Tasks, in one statement: lock the due rows, plan their ticks, advance
        -- them, and insert one run per tick the way _cb_insert_task_runs does
        -- (condition evaluated at creation, a live holder of the key wins),
        -- without a call per schedule.
        WITH locked AS (
            SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, t.id AS task_id, t.name,
                   t.condition_expr
            FROM catbird.cb_schedules s JOIN catbird.cb_tasks t ON t.id = s.task_id
            WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
            FOR UPDATE OF s SKIP LOCKED
        ), planned AS (
            SELECT l.*, p.ticks, p.next_tick
            FROM locked l,
                 LATERAL catbird._cb_schedule_ticks(l.cron, l.next_run_at, v_now, l.catch_up, batch_size) p
        ), advanced AS (
            UPDATE catbird.cb_schedules s
            SET next_run_at = p.next_tick, last_run_at = p.ticks[cardinality(p.ticks)], last_enqueued_at = v_now
            FROM planned p
            WHERE s.id = p.id
        ), fired AS (
            SELECT p.task_id, p.name, p.input, u.o,
                   'sched:' || p.name || ':' || to_char(u.k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS key,
                   p.condition_expr IS NULL
                   OR catbird._cb_eval_condition(p.condition_expr, jsonb_build_object('input', p.input)) AS runnable
            FROM planned p, unnest(p.ticks) WITH ORDINALITY AS u(k, o)
        ), inserted AS (
            INSERT INTO catbird.cb_task_runs
                (id, task_id, status, priority, visible_at, created_at, skipped_at, concurrency_key, input)
            SELECT nextval('catbird.cb_task_runs_id_seq'), f.task_id,
                   CASE WHEN f.runnable THEN 'queued' ELSE 'skipped' END, 0, v_now, v_now,
                   CASE WHEN NOT f.runnable THEN v_now END, f.key, f.input
            FROM (SELECT f.* FROM fired f
                  WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                                    WHERE r.task_id = f.task_id AND r.concurrency_key = f.key
                                      AND r.status IN ('queued', 'started'))
                  ORDER BY f.task_id, f.o) f
            ON CONFLICT (task_id, concurrency_key)
                WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started')
                DO NOTHING
            RETURNING id, status
        )
        SELECT count(*)::int, array_agg(i.id) FILTER (WHERE i.status = 'queued'),
               array_agg(i.id) FILTER (WHERE i.status = 'skipped')
        INTO v_count, v_started, v_skipped
        FROM inserted i;
        PERFORM catbird._cb_notify_task_runs('catbird.task.started', v_started);
        PERFORM catbird._cb_notify_task_runs('catbird.task.skipped', v_skipped);
        RETURN v_count;
    END IF;

    -- Flows: one _cb_insert_flow_runs call per schedule (each new run's
    -- first steps are dispatched there).
    FOR v_schedule IN
        SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, f AS flow, f.name
        FROM catbird.cb_schedules s
        JOIN catbird.cb_flows f ON f.id = s.flow_id
        WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED
    LOOP
        v_plan := catbird._cb_schedule_ticks(v_schedule.cron, v_schedule.next_run_at, v_now,
                                             v_schedule.catch_up, batch_size);
        v_keys := ARRAY(SELECT 'sched:' || v_schedule.name || ':'
                               || to_char(k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        FROM unnest(v_plan.ticks) WITH ORDINALITY AS u(k, o) ORDER BY o);
        -- A tick whose key a live run already holds (a replayed tick) enqueues
        -- nothing; the insert below deduplicates any race on top of this.
        v_keys := ARRAY(SELECT k FROM unnest(v_keys) WITH ORDINALITY AS u(k, o)
                        WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                                          WHERE r.flow_id = (v_schedule.flow).id AND r.concurrency_key = u.k
                                            AND r.status IN ('started', 'canceling'))
                        ORDER BY o);
        IF cardinality(v_keys) > 0 THEN
            PERFORM catbird._cb_insert_flow_runs(v_schedule.flow, array_fill(v_schedule.input, ARRAY[cardinality(v_keys)]),
                                                 v_keys, NULL, NULL, 0, NULL);
        END IF;
        v_count := v_count + cardinality(v_keys);
        v_done_ids := v_done_ids || v_schedule.id;
        v_done_next := v_done_next || v_plan.next_tick;
        v_done_last := v_done_last || v_plan.ticks[cardinality(v_plan.ticks)];
    END LOOP;

    UPDATE catbird.cb_schedules s
    SET next_run_at = u.next_tick, last_run_at = u.last_tick, last_enqueued_at = v_now
    FROM unnest(v_done_ids, v_done_next, v_done_last) AS u(id, next_tick, last_tick)
    WHERE s.id = u.id;
    RETURN v_count;
END
$$;

-- cb_execute_due_task_schedules(task_names, batch_size, max_schedules): fires
-- every enabled task schedule whose next tick has come (cb_now()), for the
-- given tasks or all (NULL), and advances each per its catch-up policy:
-- 'skip' enqueues the latest due tick only, 'one' the oldest due tick once,
-- 'all' every due tick, at most batch_size per schedule per call (the rest on
-- the next call). At most max_schedules schedules are fired per call, oldest
-- tick first (call again for the rest). Safe to call concurrently from any
-- number of sessions: each tick fires exactly once. Each tick enqueues one
-- run with the schedule's input and the concurrency key sched:<task>:<tick>
-- (tick in ISO-8601 UTC, e.g. sched:report:2030-01-01T09:00:00Z); a tick
-- whose key a queued or started run still holds enqueues nothing. Returns the
-- number of runs enqueued.
-- Errors: 22023 batch_size or max_schedules < 1.
CREATE FUNCTION catbird.cb_execute_due_task_schedules(task_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('task', task_names, batch_size, max_schedules) $$;

-- cb_execute_due_flow_schedules(flow_names, batch_size, max_schedules): as
-- cb_execute_due_task_schedules, for flows (concurrency key sched:<flow>:<tick>).
CREATE FUNCTION catbird.cb_execute_due_flow_schedules(flow_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('flow', flow_names, batch_size, max_schedules) $$;

-- cb_list_task_schedules / cb_list_flow_schedules: every schedule of one
-- kind ('task' or 'flow'), with the name of its task or flow, ordered by
-- next_run_at, then name. Raises nothing.
CREATE FUNCTION catbird._cb_list_schedules(kind text)
RETURNS TABLE (name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(t.name, f.name), s.cron_spec, s.next_run_at, s.last_run_at, s.last_enqueued_at, s.enabled,
           s.catch_up, s.created_at, s.updated_at, s.input
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = $1
    ORDER BY s.next_run_at, coalesce(t.name, f.name)
$$;

-- cb_list_task_schedules(): every task schedule (TaskScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_task_schedules()
RETURNS TABLE (task_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('task') $$;

-- cb_list_flow_schedules(): every flow schedule (FlowScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_flow_schedules()
RETURNS TABLE (flow_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('flow') $$;

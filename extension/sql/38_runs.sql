-- catbird 38_runs: the run lifecycle shared by tasks and flows.
--
-- Owns: the internal helpers that the task verbs (40_tasks) and the flow verbs
-- (50-57) delegate to where they do the same thing: the retry policy (check
-- and full-jitter delay), lease and purge argument checks, creating runs
-- (the batch run verbs), deleting a
-- definition with its runs, purging and clearing runs (also cb_gc's retention
-- purge), listing runs, waiting for a terminal state, and recording the outcome
-- of an on-fail handler. _cb_run_layout is the one place that knows how the
-- run tables of each kind are laid out (cb_tasks/cb_task_runs;
-- cb_flows/cb_flow_runs with their parts cb_step_runs and cb_map_tasks).
-- Guarantees:
--   * Hot paths (claims, completions, failures, lease renewal) stay static SQL
--     in their own files and share only argument checks from here. The helpers
--     that build SQL (delete, purge, clear, list, on-fail outcome) run rarely;
--     they quote every identifier with format('%I') and pass every value as a
--     parameter.
--   * A run is finished when its status is terminal and its on-fail handling,
--     if any, is over (completed or failed); only finished runs are purged.
--     Every failed run is queued for on-fail handling; when the definition
--     declares no on_fail handler, a queued (never claimed) one does not hold
--     the purge back.
--   * The retry policy: stored on the definition (each part NULL: not
--     stored), overridden part by part by a fail call's arguments; defaults 0
--     retries, backoff 100-2000 ms. A lapsed lease is an attempt: runs are
--     capped at max_retries + 1 attempts (25 without a stored policy).
--   * Each helper looks the definition up first, as the verbs did before they
--     shared it, so errors come in the same order: 22023 for a bad name, 42704
--     for an unknown definition, then 22023 for a bad argument.

-- Full-jitter retry delay in milliseconds for the given (1-based) attempt:
-- uniform in [backoff_min, min(backoff_max, backoff_min * 2^(attempt - 1))].
-- Raises nothing; callers have checked the policy with _cb_check_retry_policy.
CREATE FUNCTION catbird._cb_retry_delay(attempt int, backoff_min int, backoff_max int) RETURNS double precision
LANGUAGE sql VOLATILE
AS $$
    SELECT backoff_min + random() * (least(backoff_max::double precision,
                                           backoff_min * power(2, least(greatest(attempt - 1, 0), 60)))
                                     - backoff_min)
$$;

-- Checks the retry policy of a fail call (cb_fail_task, cb_fail_step,
-- cb_fail_map_task): max_retries >= 0, 0 <= backoff_min <= backoff_max.
-- Returns nothing; 22023 for the first argument out of range.
CREATE FUNCTION catbird._cb_check_retry_policy(max_retries int, backoff_min int, backoff_max int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_at_least('max_retries', max_retries, 0);
    PERFORM catbird._cb_check_at_least('backoff_min', backoff_min, 0, ' ms');
    IF backoff_max IS NULL OR backoff_max < backoff_min THEN
        RAISE EXCEPTION 'invalid backoff_max: got %, expected at least backoff_min (% ms)',
            coalesce(backoff_max::text, 'NULL'), backoff_min
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a retry policy stored on a definition (cb_create_task, flow step
-- keys): each part NULL (not stored) or max_retries >= 0, backoff_min >= 0,
-- backoff_max not below backoff_min (100 ms when not stored). Returns nothing;
-- 22023 for the first part out of range.
CREATE FUNCTION catbird._cb_check_stored_policy(max_retries int, backoff_min int, backoff_max int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF max_retries IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('max_retries', max_retries, 0);
    END IF;
    IF backoff_min IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('backoff_min', backoff_min, 0, ' ms');
    END IF;
    IF backoff_max IS NOT NULL AND backoff_max < coalesce(backoff_min, 100) THEN
        RAISE EXCEPTION 'invalid backoff_max: got %, expected at least backoff_min (% ms%)',
            backoff_max, coalesce(backoff_min, 100), CASE WHEN backoff_min IS NULL THEN ', the default' ELSE '' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The retry policy a fail call acts under: each argument given overrides the
-- definition's stored part; without either, 0 retries and a backoff of 100 to
-- 2000 ms (backoff_max at least backoff_min). Checked with
-- _cb_check_retry_policy: 22023 for a part out of range.
CREATE FUNCTION catbird._cb_effective_policy(max_retries int, backoff_min int, backoff_max int,
                                             stored_max_retries int, stored_backoff_min int, stored_backoff_max int,
                                             OUT max_retries_out int, OUT backoff_min_out int, OUT backoff_max_out int)
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    max_retries_out := coalesce(max_retries, stored_max_retries, 0);
    backoff_min_out := coalesce(backoff_min, stored_backoff_min, 100);
    backoff_max_out := coalesce(backoff_max, stored_backoff_max, greatest(2000, backoff_min_out));
    PERFORM catbird._cb_check_retry_policy(max_retries_out, backoff_min_out, backoff_max_out);
END
$$;

-- How many attempts a run (task run, step run or map item) whose lease keeps
-- lapsing may use before the next claim or cb_gc fails it: max_retries + 1,
-- or 25 without a stored policy. Raises nothing.
CREATE FUNCTION catbird._cb_lease_cap(max_retries int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(max_retries + 1, 25) $$;

-- The error_message of a run failed because its lease lapsed too often.
-- Raises nothing.
CREATE FUNCTION catbird._cb_lease_expired_error(attempts int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT format('lease expired: attempt %s ended without a report from its worker (it crashed or stalled),'
                  ' and no attempt is left', attempts)
$$;

-- Checks the new optional arguments of the fail calls and fenced calls:
-- retryable not NULL, attempt NULL or >= 1. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_fail_args(retryable boolean, attempt int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF retryable IS NULL THEN
        RAISE EXCEPTION 'invalid retryable: NULL (give true or false)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF attempt IS NOT NULL AND attempt < 1 THEN
        PERFORM catbird._cb_check_at_least('attempt', attempt, 1);
    END IF;
END
$$;

-- Checks the arguments of a lease renewal (cb_hide_tasks, cb_hide_steps,
-- cb_hide_map_tasks): hide_for >= 1 ms, and attempts, when given, one per id.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_lease(hide_for int, ids bigint[], attempts int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids) THEN
        RAISE EXCEPTION 'invalid attempts: give one attempt per id (or none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks the retention_period of a task or flow definition: NULL (keep runs
-- forever) or not negative, and at most 1000 years. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_retention(retention_period interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF retention_period < interval '0' THEN
        RAISE EXCEPTION 'invalid retention_period %: it must not be negative (NULL keeps runs forever)', retention_period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval('retention_period', retention_period);
END
$$;

-- How the runs of a kind ('task' or 'flow') are stored, for the helpers below
-- that build SQL: the definition table, the run table, the column of both run
-- table and parts naming the definition, the tables holding parts of a run
-- (with the column naming their run), the terminal statuses, and six columns
-- whose first non-null value is when a run finished (padded with created_at,
-- which is never null). 22023 for another kind.
CREATE FUNCTION catbird._cb_run_layout(kind text,
    OUT definitions text, OUT runs text, OUT definition_column text, OUT parts text[], OUT part_run_column text,
    OUT finished_statuses text[], OUT finished_at text[])
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    CASE kind
    WHEN 'task' THEN
        definitions := 'cb_tasks';
        runs := 'cb_task_runs';
        definition_column := 'task_id';
        parts := '{}';
        finished_statuses := '{completed,failed,skipped,canceled,expired}';
        finished_at := '{completed_at,failed_at,skipped_at,canceled_at,expired_at,created_at}';
    WHEN 'flow' THEN
        definitions := 'cb_flows';
        runs := 'cb_flow_runs';
        definition_column := 'flow_id';
        parts := '{cb_map_tasks,cb_step_runs}';
        part_run_column := 'flow_run_id';
        finished_statuses := '{completed,failed,canceled,expired}';
        finished_at := '{completed_at,failed_at,canceled_at,created_at,created_at,created_at}';  -- expiry sets canceled_at
    ELSE
        RAISE EXCEPTION 'invalid kind of run %: expected task or flow', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;

-- The id of a queue, task or flow, holding its shared lock (through
-- _cb_queue_id, _cb_task or _cb_flow). 22023 for an invalid name, 42704 when
-- it does not exist.
CREATE FUNCTION catbird._cb_definition_id(kind text, name text) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    CASE kind
    WHEN 'queue' THEN
        v_id := catbird._cb_queue_id(name);
    WHEN 'task' THEN
        v_id := (catbird._cb_task(name)).id;
    WHEN 'flow' THEN
        v_id := (catbird._cb_flow(name)).id;
    END CASE;
    RETURN v_id;
END
$$;

-- Whether a concurrency key of a task or flow is held by one of its active
-- runs (a task's queued or started runs, a flow's started or canceling ones).
-- False for a NULL key. Raises nothing.
CREATE FUNCTION catbird._cb_key_held(kind text, definition_id int, concurrency_key text) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF kind = 'task' THEN
        RETURN EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                       WHERE r.task_id = definition_id AND r.concurrency_key = _cb_key_held.concurrency_key
                         AND r.status IN ('queued', 'started'));
    END IF;
    RETURN EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                   WHERE r.flow_id = definition_id AND r.concurrency_key = _cb_key_held.concurrency_key
                     AND r.status IN ('started', 'canceling'));
END
$$;

-- cb_run_task / cb_run_flow (batch forms): creates one run per input of the
-- task or flow through the one inserter of its kind (_cb_insert_task_runs,
-- _cb_insert_flow_runs), after checking the arguments. Returns the run id of
-- each input, in input order. 22023 for an invalid name, 42704 for an
-- unknown definition, then 22023 for invalid inputs, keys or headers; 40001
-- when a key's holder finished while the call deduplicated against it.
CREATE FUNCTION catbird._cb_run(kind text, name text, inputs jsonb[], concurrency_keys text[], headers jsonb[],
                                visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    -- the cb_tasks or cb_flows row, as a record: this file comes before both
    -- tables, and a plain-script install compiles the declarations
    v_task record;
    v_flow record;
BEGIN
    IF kind = 'task' THEN
        v_task := catbird._cb_task(name);
    ELSE
        v_flow := catbird._cb_flow(name);
    END IF;
    PERFORM catbird._cb_check_send_args(inputs, NULL, concurrency_keys, headers);
    IF cardinality(inputs) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    IF kind = 'task' THEN
        RETURN catbird._cb_insert_task_runs(v_task, inputs, concurrency_keys, headers,
                                            visible_at, priority, expires_at);
    END IF;
    RETURN catbird._cb_insert_flow_runs(v_flow, inputs, concurrency_keys, headers,
                                        visible_at, priority, expires_at);
END
$$;

-- Deletes a task or flow (cb_delete_task, cb_delete_flow): its definition
-- (flow steps cascade), every run with its parts, its bindings; announces
-- catbird.<kind>.deleted. Waits for calls holding the definition's shared lock.
-- Returns false when it does not exist; 22023 for an invalid name.
CREATE FUNCTION catbird._cb_delete_definition(kind text, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    PERFORM catbird._cb_lock_definition(kind, name, exclusive => true);
    EXECUTE format('DELETE FROM catbird.%I d WHERE d.name = $1 RETURNING d.id', v_layout.definitions)
        INTO v_id USING name;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_clear_runs(kind, v_id);
    DELETE FROM catbird.cb_bindings b WHERE b.target_type = kind AND b.target_name = name;
    PERFORM catbird._cb_notify(format('catbird.%s.deleted', kind), jsonb_build_object(kind, name)::text);
    RETURN true;
END
$$;

-- Deletes every run of one definition, whatever its status, with its parts;
-- in-flight work is lost (workers' later reports find nothing and are
-- refused). Returns the number of runs deleted; raises nothing.
CREATE FUNCTION catbird._cb_clear_runs(kind text, definition_id int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
-- Its writes are dynamic SQL, which plpgsql_check cannot see (it would ask for STABLE):
-- @plpgsql_check_options: performance_warnings = false
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_table text;
    v_count int;
BEGIN
    FOREACH v_table IN ARRAY v_layout.parts || v_layout.runs LOOP
        EXECUTE format('DELETE FROM catbird.%I x WHERE x.%I = $1', v_table, v_layout.definition_column)
            USING definition_id;
        GET DIAGNOSTICS v_count = ROW_COUNT;  -- the run table comes last
    END LOOP;
    RETURN v_count;
END
$$;

-- Deletes the finished runs of one definition (terminal, on-fail handling
-- over) that finished at or before finished_before, with their parts. With
-- lim, at most lim runs, skipping rows locked by other transactions (cb_gc's
-- bounded batches). Returns the number of runs deleted; raises nothing.
CREATE FUNCTION catbird._cb_delete_finished_runs(kind text, definition_id int, finished_before timestamptz,
                                                 lim int = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
-- Its writes are dynamic SQL, which plpgsql_check cannot see (it would ask for STABLE):
-- @plpgsql_check_options: performance_warnings = false
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_ids bigint[];
    v_part text;
BEGIN
    EXECUTE format(
        'WITH deleted AS ('
        '    DELETE FROM catbird.%1$I r'
        '    WHERE r.id IN (SELECT x.id FROM catbird.%1$I x'
        '                   WHERE x.%2$I = $1 AND x.status = ANY ($2)'
        -- on-fail handling blocks the purge while it runs, or while it waits
        -- for a handler the definition declares (on_fail)
        '                     AND (coalesce(x.on_fail_status, ''completed'') IN (''completed'', ''failed'')'
        '                          OR (x.on_fail_status = ''queued'''
        '                              AND NOT (SELECT d.on_fail FROM catbird.%10$I d WHERE d.id = $1)))'
        '                     AND coalesce(x.%3$I, x.%4$I, x.%5$I, x.%6$I, x.%7$I, x.%8$I) <= $3'
        '                   %9$s)'
        '    RETURNING r.id)'
        ' SELECT coalesce(array_agg(d.id), ''{}'') FROM deleted d',
        v_layout.runs, v_layout.definition_column,
        v_layout.finished_at[1], v_layout.finished_at[2], v_layout.finished_at[3],
        v_layout.finished_at[4], v_layout.finished_at[5], v_layout.finished_at[6],
        CASE WHEN lim IS NOT NULL THEN 'LIMIT $4 FOR UPDATE SKIP LOCKED' ELSE '' END,
        v_layout.definitions)
    INTO v_ids
    USING definition_id, v_layout.finished_statuses, finished_before, lim;
    FOREACH v_part IN ARRAY v_layout.parts LOOP
        EXECUTE format('DELETE FROM catbird.%I p WHERE p.%I = ANY ($1)', v_part, v_layout.part_run_column)
            USING v_ids;
    END LOOP;
    RETURN cardinality(v_ids);
END
$$;

-- cb_purge_task_runs / cb_purge_flow_runs: deletes the finished runs of a task
-- or flow that finished at least older_than ago. Returns how many it deleted.
-- 42704 for an unknown definition; 22023 for an invalid name or a NULL or
-- negative older_than, or one over 1000 years.
CREATE FUNCTION catbird._cb_purge_runs(kind text, name text, older_than interval) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'invalid older_than %: expected a non-negative interval', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval('older_than', older_than);
    RETURN catbird._cb_delete_finished_runs(kind, v_id, catbird.cb_now() - older_than);
END
$$;

-- cb_gc's retention purge for one kind: deletes up to lim finished runs older
-- than their definition's retention_period (definitions without one, or with
-- 0, keep their runs). Returns how many it deleted; raises nothing.
CREATE FUNCTION catbird._cb_purge_retained_runs(kind text, now timestamptz, lim int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
    v_retention interval;
    v_count int := 0;
BEGIN
    FOR v_id, v_retention IN EXECUTE format(
        'SELECT d.id, d.retention_period FROM catbird.%I d WHERE d.retention_period > interval ''0'' ORDER BY d.id',
        v_layout.definitions)
    LOOP
        EXIT WHEN v_count >= lim;
        v_count := v_count + catbird._cb_delete_finished_runs(kind, v_id, now - v_retention, lim - v_count);
    END LOOP;
    RETURN v_count;
END
$$;

-- cb_list_task_runs / cb_list_flow_runs / cb_get_task_run / cb_get_flow_run:
-- runs of a task or flow as row_type (cb_task_run_info or cb_flow_run_info,
-- read through the inlinable _cb_<kind>_runs), newest first, at most lim,
-- older than before_id when given, only run_id when given. 42704 for an
-- unknown definition; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird._cb_list_runs(row_type anyelement, kind text, name text, lim int,
                                      before_id bigint = NULL, run_id bigint = NULL)
RETURNS SETOF anyelement
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
BEGIN
    IF pg_typeof(row_type) <> format('catbird.cb_%s_run_info', kind)::regtype THEN
        RAISE EXCEPTION 'invalid row_type %: the runs of a % are catbird.cb_%s_run_info', pg_typeof(row_type), kind, kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY EXECUTE format(
        'SELECT * FROM catbird.%I($1, $2) r'
        ' WHERE ($3::bigint IS NULL OR r.id < $3) AND ($4::bigint IS NULL OR r.id = $4)'
        ' ORDER BY r.id DESC LIMIT $5',
        '_cb_' || kind || '_runs')
    USING v_id, name, before_id, run_id, lim;
END
$$;

-- Server-side wait (cb_wait_task_output, cb_wait_flow_output,
-- cb_wait_flow_step_output): polls a run of a task or flow (kind 'task',
-- 'flow'; name is the definition) or a step of a flow run (kind 'step'; name
-- is the flow) every poll_interval ms for up to poll_for ms (wall clock).
-- Returns one row (status, output, error_message) once it is terminal
-- (completed, failed, skipped, canceled or expired: each kind has the ones
-- its statuses allow); no row on timeout or when the run does not exist.
-- Errors, in this order: for a task or flow, 22023 for an invalid name and
-- 42704 for an unknown definition; 22023 for poll_for < 0 or poll_interval
-- < 1; for a step, 42704 for an unknown flow or step.
CREATE FUNCTION catbird._cb_wait(kind text, name text, run_id bigint, step_name text, poll_for int, poll_interval int)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
    v_deadline timestamptz;
    v_status text;
    v_output jsonb;
    v_error text;
BEGIN
    IF kind <> 'step' THEN
        v_id := catbird._cb_definition_id(kind, name);
    END IF;
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        CASE kind
        WHEN 'task' THEN
            SELECT r.status, r.output, r.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_task_runs r WHERE r.id = run_id AND r.task_id = v_id;
        WHEN 'flow' THEN
            SELECT r.status, r.output, r.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_flow_runs r WHERE r.id = run_id AND r.flow_id = v_id;
        WHEN 'step' THEN
            SELECT s.status, s.output, s.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_get_flow_step_status(name, run_id, step_name) s;
        END CASE;
        IF v_status IS NULL THEN
            RETURN;  -- no such run
        END IF;
        IF v_status IN ('completed', 'failed', 'skipped', 'canceled', 'expired') THEN
            status := v_status;
            output := v_output;
            error_message := v_error;
            RETURN NEXT;
            RETURN;
        END IF;
        IF clock_timestamp() >= v_deadline THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(least(poll_interval / 1000.0, extract(epoch FROM v_deadline - clock_timestamp())));
    END LOOP;
END
$$;

-- Records the outcome of the on-fail handler of a run whose on-fail claim is
-- started, under on_fail_attempt when given (cb_complete_task_on_fail,
-- cb_fail_task_on_fail and their flow forms): completed, or failed and queued
-- again after retry_delay ms unless retry_exhausted. When the caller leaves
-- them NULL, SQL decides: exhausted once on_fail_attempts > max_retries, delay
-- a full-jitter backoff for the on-fail attempt, with the policy given or
-- stored on the definition (tasks; flows store none: 0 retries, 100-2000 ms).
-- Otherwise (a stale claim) nothing changes. Returns nothing; 42704 for an
-- unknown definition; 22023 for an invalid name, on_fail_attempt < 1, a
-- failure's retry_delay < 0 or an invalid policy.
CREATE FUNCTION catbird._cb_end_on_fail(kind text, name text, run_id bigint, completed boolean,
                                        error_message text = NULL, retry_exhausted boolean = NULL,
                                        retry_delay bigint = NULL, on_fail_attempt int = NULL,
                                        max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
    v_layout record := catbird._cb_run_layout(kind);
    v_stored record;
    v_policy record;
BEGIN
    IF on_fail_attempt IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('on_fail_attempt', on_fail_attempt, 1);
    END IF;
    IF NOT completed AND retry_delay IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('retry_delay', retry_delay, 0, ' ms');
    END IF;
    IF kind = 'task' THEN
        SELECT t.max_retries, t.backoff_min, t.backoff_max INTO v_stored FROM catbird.cb_tasks t WHERE t.id = v_id;
    ELSE
        SELECT NULL::int AS max_retries, NULL::int AS backoff_min, NULL::int AS backoff_max INTO v_stored;
    END IF;
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_stored.max_retries, v_stored.backoff_min, v_stored.backoff_max);
    EXECUTE format(
        'UPDATE catbird.%I r'
        ' SET on_fail_status = CASE WHEN $1 THEN ''completed'''
        '                           WHEN coalesce($6, r.on_fail_attempts > $7) THEN ''failed'''
        '                           ELSE ''queued'' END,'
        '     on_fail_visible_at = CASE WHEN $1 THEN r.on_fail_visible_at'
        '                               ELSE catbird.cb_now() + make_interval(secs => coalesce($8::double precision,'
        '                                        catbird._cb_retry_delay(r.on_fail_attempts, $9, $10)) / 1000.0) END,'
        '     on_fail_error_message = $3'
        ' WHERE r.id = $4 AND r.%I = $5 AND r.on_fail_status = ''started'''
        '   AND ($2::int IS NULL OR r.on_fail_attempts = $2)',
        v_layout.runs, v_layout.definition_column)
    USING completed, on_fail_attempt,
          CASE WHEN NOT completed THEN coalesce(_cb_end_on_fail.error_message, 'unknown error') END,
          run_id, v_id, retry_exhausted, v_policy.max_retries_out, retry_delay,
          v_policy.backoff_min_out, v_policy.backoff_max_out;
END
$$;

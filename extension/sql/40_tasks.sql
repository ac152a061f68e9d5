-- catbird 40_tasks: task definitions and their runs.
--
-- Owns: cb_tasks, cb_task_runs, the cb_task_claim and cb_task_run_info types;
-- _cb_task (the lookup every task verb starts with), cb_create_task,
-- cb_delete_task, _cb_insert_task_runs (the one way runs are created:
-- cb_run_task and cb_publish), cb_run_task, cb_bind_task, cb_unbind_task,
-- cb_cancel_task, cb_wait_task_output, cb_purge_task_runs,
-- cb_clear_task_runs and introspection. The worker protocol is in
-- 45_task_worker; deleting, purging, clearing, listing and waiting are thin
-- over 38_runs.
-- Guarantees:
--   * Creating a task again with the same definition is a no-op; a different
--     one replaces it only while no run is queued or started (55006).
--   * A condition that is false for the input makes the run skipped at creation.
--   * A concurrency key is held by at most one queued or started run of a task;
--     a queued run past its expires_at is expired before a new run looks for
--     the key's holder, so an expired run never holds its key.
--   * The retry policy (max_retries, backoff_min, backoff_max) is stored on the
--     definition; fail calls and lease lapses use it (45_task_worker).
--   * Status changes are announced through cb_notify (80_events).

CREATE TABLE catbird.cb_tasks (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text,
    condition        text,
    condition_expr   jsonb,
    retention_period interval,
    on_fail          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    -- the retry policy (NULL: none stored; see 38_runs)
    max_retries      int,
    backoff_min      int,
    backoff_max      int
);

CREATE SEQUENCE catbird.cb_task_runs_id_seq AS bigint;

CREATE TABLE catbird.cb_task_runs (
    id                   bigint PRIMARY KEY DEFAULT nextval('catbird.cb_task_runs_id_seq'),
    task_id              int NOT NULL,
    attempts             int NOT NULL DEFAULT 0,
    priority             int NOT NULL DEFAULT 0,
    on_fail_attempts     int NOT NULL DEFAULT 0,
    status               text NOT NULL CHECK (status IN ('queued', 'started', 'completed', 'failed',
                                                         'skipped', 'canceled', 'expired')),
    on_fail_status       text CHECK (on_fail_status IN ('queued', 'started', 'completed', 'failed')),
    visible_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz,
    started_at           timestamptz,
    completed_at         timestamptz,
    failed_at            timestamptz,
    skipped_at           timestamptz,
    expired_at           timestamptz,
    canceled_at          timestamptz,
    cancel_requested_at  timestamptz,
    on_fail_visible_at   timestamptz,
    concurrency_key      text,
    cancel_reason        text,
    error_message        text,
    on_fail_error_message text,
    input                jsonb NOT NULL,
    headers              jsonb,
    output               jsonb,
    error_detail         text
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER SEQUENCE catbird.cb_task_runs_id_seq OWNED BY catbird.cb_task_runs.id;

CREATE INDEX cb_task_runs_claim_idx ON catbird.cb_task_runs (task_id, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');
CREATE UNIQUE INDEX cb_task_runs_concurrency_key_idx ON catbird.cb_task_runs (task_id, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started');
CREATE INDEX cb_task_runs_expiry_idx ON catbird.cb_task_runs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
CREATE INDEX cb_task_runs_task_idx ON catbird.cb_task_runs (task_id, id);
CREATE INDEX cb_task_runs_on_fail_idx ON catbird.cb_task_runs (task_id, on_fail_visible_at)
    WHERE on_fail_status IN ('queued', 'started');

CREATE TYPE catbird.cb_task_claim AS (
    id              bigint,
    attempts        int,
    input           jsonb,
    headers         jsonb,
    concurrency_key text,
    priority        int
);

-- The task row, holding the task's shared lock. 42704 when it does not
-- exist; 22023 when the name could never exist.
CREATE FUNCTION catbird._cb_task(name text) RETURNS catbird.cb_tasks
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks;
BEGIN
    PERFORM catbird._cb_lock_definition('task', name);
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = _cb_task.name;
    IF v_task.id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('task', name);
    END IF;
    RETURN v_task;
END
$$;

-- Creates a task. Creating it again with the same definition (description,
-- condition, retention_period, on_fail, retry policy) is a no-op; a different
-- one replaces it while no run is queued or started. The retry policy
-- (max_retries, backoff_min, backoff_max ms; NULL: not stored) is used by
-- fail calls that do not give their own and caps lapsed leases at
-- max_retries + 1 attempts. Announces catbird.task.created. Returns nothing.
-- 22023 for an invalid name, a malformed condition, a negative
-- retention_period or an invalid retry policy; 55006 when runs are active.
CREATE FUNCTION catbird.cb_create_task(name text, description text = NULL, condition text = NULL,
                                       retention_period interval = NULL, on_fail boolean = false,
                                       max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_expr jsonb;
    v_existing catbird.cb_tasks;
BEGIN
    PERFORM catbird._cb_check_name('task', name);
    IF condition IS NOT NULL THEN
        v_expr := catbird._cb_parse_condition(condition, ARRAY['input']);
    END IF;
    PERFORM catbird._cb_check_retention(retention_period);
    PERFORM catbird._cb_check_stored_policy(max_retries, backoff_min, backoff_max);
    PERFORM catbird._cb_lock_definition('task', name, exclusive => true);
    SELECT * INTO v_existing FROM catbird.cb_tasks t WHERE t.name = cb_create_task.name;
    IF v_existing.id IS NULL THEN
        INSERT INTO catbird.cb_tasks (name, description, condition, condition_expr, retention_period, on_fail, created_at,
                                      max_retries, backoff_min, backoff_max)
        VALUES (cb_create_task.name, cb_create_task.description, cb_create_task.condition, v_expr,
                cb_create_task.retention_period, coalesce(cb_create_task.on_fail, false), catbird.cb_now(),
                cb_create_task.max_retries, cb_create_task.backoff_min, cb_create_task.backoff_max);
        PERFORM catbird._cb_notify('catbird.task.created', jsonb_build_object('task', name)::text);
        RETURN;
    END IF;
    IF (v_existing.description, v_existing.condition, v_existing.retention_period, v_existing.on_fail,
        v_existing.max_retries, v_existing.backoff_min, v_existing.backoff_max)
       IS NOT DISTINCT FROM (description, condition, retention_period, coalesce(on_fail, false),
                             max_retries, backoff_min, backoff_max) THEN
        RETURN;  -- same definition: nothing to do
    END IF;
    IF EXISTS (SELECT 1 FROM catbird.cb_task_runs r
               WHERE r.task_id = v_existing.id AND r.status IN ('queued', 'started')) THEN
        RAISE EXCEPTION 'task "%" has queued or started runs; its definition cannot change while they are active', name
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for the runs to finish or cancel them, or create the task under a new name.';
    END IF;
    UPDATE catbird.cb_tasks t
    SET description = cb_create_task.description, condition = cb_create_task.condition,
        condition_expr = v_expr, retention_period = cb_create_task.retention_period,
        on_fail = coalesce(cb_create_task.on_fail, false), max_retries = cb_create_task.max_retries,
        backoff_min = cb_create_task.backoff_min, backoff_max = cb_create_task.backoff_max
    WHERE t.id = v_existing.id;
END
$$;

-- Deletes a task with all its runs and bindings; waits for calls in flight on
-- it. Returns false when it does not exist; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_delete_task(name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_definition('task', cb_delete_task.name) $$;

-- The one implementation of creating runs: one run per input, condition
-- evaluated, deduplicated by concurrency key among queued/started runs.
-- Announces the new runs (catbird.task.started, catbird.task.skipped; a
-- queued holder of a key past expires_at: catbird.task.expired), one event
-- per topic and call. Returns the run id each input position resolved to.
-- Callers have validated the arguments and hold the task's shared lock.
CREATE FUNCTION catbird._cb_insert_task_runs(
    task catbird.cb_tasks, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_started bigint[];
    v_skipped bigint[];
    v_expired bigint[];
BEGIN
    -- Bounded inputs (10_names): keys fit the index, times are finite.
    IF concurrency_keys IS NOT NULL OR _cb_insert_task_runs.visible_at IS NOT NULL OR _cb_insert_task_runs.expires_at IS NOT NULL THEN
        PERFORM catbird._cb_check_bounds(concurrency_keys, _cb_insert_task_runs.visible_at, _cb_insert_task_runs.expires_at);
    END IF;
    -- Fast path: no concurrency key anywhere needs no arbiter and no dedup join.
    -- Ids are drawn after the sort, so ascending ids are the input order.
    IF concurrency_keys IS NULL OR cardinality(array_remove(concurrency_keys, NULL)) = 0 THEN
        WITH inserted AS (
            INSERT INTO catbird.cb_task_runs
                (id, task_id, status, priority, visible_at, created_at, expires_at, skipped_at, input, headers)
            SELECT nextval('catbird.cb_task_runs_id_seq'), task.id,
                   CASE WHEN e.runnable THEN 'queued' ELSE 'skipped' END,
                   coalesce(_cb_insert_task_runs.priority, 0), coalesce(_cb_insert_task_runs.visible_at, v_now),
                   v_now, _cb_insert_task_runs.expires_at, CASE WHEN NOT e.runnable THEN v_now END,
                   e.input, e.headers
            FROM (SELECT u.input, u.headers, u.ord,
                         task.condition_expr IS NULL
                         OR catbird._cb_eval_condition(task.condition_expr, jsonb_build_object('input', u.input)) AS runnable
                  FROM unnest(inputs, _cb_insert_task_runs.headers) WITH ORDINALITY AS u(input, headers, ord)) e
            ORDER BY e.ord
            RETURNING id, status
        )
        SELECT array_agg(i.id ORDER BY i.id), array_agg(i.id ORDER BY i.id) FILTER (WHERE i.status = 'skipped')
        INTO v_ids, v_skipped FROM inserted i;
        IF v_skipped IS NULL THEN
            PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name, v_ids);
        ELSE
            PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name,
                                            ARRAY(SELECT i FROM unnest(v_ids) AS i
                                                  WHERE i <> ALL (v_skipped) ORDER BY i));
            PERFORM catbird._cb_notify_runs('catbird.task.skipped', 'task', task.name, v_skipped);
        END IF;
        RETURN v_ids;
    END IF;
    -- Expired runs hold nothing: queued holders of these keys past their
    -- expires_at become expired (as a claim or cb_gc would) before deduplicating.
    WITH expired AS (
        UPDATE catbird.cb_task_runs r SET status = 'expired', expired_at = v_now
        WHERE r.task_id = task.id AND r.concurrency_key = ANY (concurrency_keys)
          AND r.status = 'queued' AND r.expires_at <= v_now
        RETURNING r.id
    )
    SELECT array_agg(e.id ORDER BY e.id) INTO v_expired FROM expired e;
    IF v_expired IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.expired', 'task', task.name, v_expired);
    END IF;
    WITH evaluated AS (
        SELECT u.ord, u.input, u.concurrency_key, u.headers,
               nextval('catbird.cb_task_runs_id_seq') AS new_id,
               catbird._cb_eval_condition(task.condition_expr, jsonb_build_object('input', u.input)) AS runnable
        FROM unnest(inputs, concurrency_keys, _cb_insert_task_runs.headers)
                 WITH ORDINALITY AS u(input, concurrency_key, headers, ord)
    ), input AS (
        -- A run that would be skipped still defers to a live holder of its key
        -- (a queued or started run, or an earlier runnable input of this batch).
        SELECT e.*,
               e.runnable OR e.concurrency_key IS NULL
               OR NOT (EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                               WHERE r.task_id = task.id AND r.concurrency_key = e.concurrency_key
                                 AND r.status IN ('queued', 'started'))
                       OR EXISTS (SELECT 1 FROM evaluated p
                                  WHERE p.concurrency_key = e.concurrency_key AND p.runnable AND p.ord < e.ord)) AS creates
        FROM evaluated e
    ), inserted AS (
        INSERT INTO catbird.cb_task_runs
            (id, task_id, status, priority, visible_at, created_at, expires_at, skipped_at,
             concurrency_key, input, headers)
        SELECT i.new_id, task.id, CASE WHEN i.runnable THEN 'queued' ELSE 'skipped' END,
               coalesce(_cb_insert_task_runs.priority, 0), coalesce(_cb_insert_task_runs.visible_at, v_now),
               v_now, _cb_insert_task_runs.expires_at, CASE WHEN NOT i.runnable THEN v_now END,
               i.concurrency_key, i.input, i.headers
        FROM input i
        WHERE i.creates
        ORDER BY i.new_id
        ON CONFLICT (task_id, concurrency_key)
            WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started')
            DO NOTHING
        RETURNING id, concurrency_key, status
    )
    SELECT array_agg(coalesce(
               ins.id,
               (SELECT min(dup.id) FROM inserted dup
                 WHERE dup.concurrency_key = i.concurrency_key AND dup.status = 'queued'),
               (SELECT r.id FROM catbird.cb_task_runs r
                 WHERE r.task_id = task.id AND r.concurrency_key = i.concurrency_key
                   AND r.status IN ('queued', 'started')))
           ORDER BY i.ord),
           array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.status = 'queued'),
           array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.status = 'skipped')
    INTO v_ids, v_started, v_skipped
    FROM input i
    LEFT JOIN inserted ins ON ins.id = i.new_id;

    IF array_position(v_ids, NULL) IS NOT NULL THEN
        SELECT array_agg(coalesce(v_ids[k.ord], r.id) ORDER BY k.ord)
        INTO v_ids
        FROM unnest(concurrency_keys) WITH ORDINALITY AS k(concurrency_key, ord)
        LEFT JOIN catbird.cb_task_runs r
               ON r.task_id = task.id AND r.concurrency_key = k.concurrency_key
              AND r.status IN ('queued', 'started') AND v_ids[k.ord] IS NULL;
        IF array_position(v_ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'the run holding a concurrency key finished while this call deduplicated against it'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the call.';
        END IF;
    END IF;
    IF v_started IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name, v_started);
    END IF;
    IF v_skipped IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.skipped', 'task', task.name, v_skipped);
    END IF;
    RETURN v_ids;
END
$$;

-- Creates one run per input (condition false: skipped at creation), in one
-- statement; an input whose concurrency key is held by a queued or started
-- run resolves to that run. Returns the run id of each input, in input
-- order. 42704 for an unknown task; 22023 for invalid inputs, keys or
-- headers; 40001 when a key's holder finished while the call deduplicated
-- against it (retry).
CREATE FUNCTION catbird.cb_run_task(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_run('task', cb_run_task.name, inputs, concurrency_keys, headers, visible_at, priority, expires_at)
$$;

-- Creates a run (see the batch form). Returns its id, or the id of the run
-- holding concurrency_key. 42704 for an unknown task; 22023 for a SQL NULL
-- input or non-object headers; 40001 as for the batch form.
CREATE FUNCTION catbird.cb_run_task(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    IF input IS NULL OR (headers IS NOT NULL AND jsonb_typeof(headers) <> 'object') THEN
        PERFORM catbird._cb_check_body('input', 'run input', input, headers);
    END IF;
    RETURN (catbird._cb_insert_task_runs(v_task, ARRAY[input],
                                         CASE WHEN concurrency_key IS NOT NULL THEN ARRAY[concurrency_key] END,
                                         ARRAY[headers], visible_at, priority, expires_at))[1];
END
$$;

-- Binds the task to a topic pattern: every publish to a matching topic creates
-- a run. Binding twice is a no-op. Returns nothing; 42704 for an unknown task,
-- 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_bind_task(name text, pattern text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_bind('task', cb_bind_task.name, pattern) $$;

-- Removes a binding of the task. Returns false when there was none; 42704 for
-- an unknown task, 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind_task(name text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('task', cb_unbind_task.name, pattern) $$;

-- Cancels a queued or started run (a started run's later reports are
-- refused); idempotent. Announces catbird.task.canceled. Returns true when the
-- run is canceled, false when it does not exist or already ended otherwise.
-- 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_cancel_task(name text, run_id bigint, reason text = NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_status text;
BEGIN
    UPDATE catbird.cb_task_runs r
    SET status = 'canceled', canceled_at = v_now, cancel_requested_at = v_now, cancel_reason = reason
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status IN ('queued', 'started')
    RETURNING r.status INTO v_status;
    IF v_status IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.canceled', 'task', v_task.name, ARRAY[run_id]);
        RETURN true;
    END IF;
    -- Canceling a canceled run again is not an error, and still true.
    RETURN EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                   WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'canceled');
END
$$;

-- Waits up to poll_for ms, polling every poll_interval ms, for the run to be
-- terminal (completed, failed, skipped, canceled, expired). Returns one row
-- (status, output, error_message) then, no row on timeout or for a run that
-- does not exist. 42704 for an unknown task; 22023 for an invalid name,
-- poll_for < 0 or poll_interval < 1.
CREATE FUNCTION catbird.cb_wait_task_output(name text, run_id bigint, poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_wait('task', cb_wait_task_output.name, run_id, NULL, poll_for, poll_interval) $$;

-- Deletes the task's finished runs (terminal, on-fail handling over) that
-- finished at least older_than ago. Returns how many it deleted. 42704 for an
-- unknown task; 22023 for an invalid name or a NULL or negative older_than.
CREATE FUNCTION catbird.cb_purge_task_runs(name text, older_than interval) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_purge_runs('task', cb_purge_task_runs.name, older_than) $$;

-- Deletes every run of the task whatever its status; in-flight work is lost
-- (workers' later reports find nothing and are refused). Returns how many it
-- deleted. 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_clear_task_runs(name text) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_clear_runs('task', catbird._cb_definition_id('task', cb_clear_task_runs.name)) $$;

-- Every task as TaskInfo (name, description, condition, retention_period,
-- on_fail, created_at, max_retries, backoff_min, backoff_max), by name.
-- Raises nothing.
CREATE FUNCTION catbird.cb_list_tasks()
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz, max_retries int, backoff_min int, backoff_max int)
LANGUAGE sql STABLE
AS $$
    SELECT t.name, t.description, t.condition, t.retention_period, t.on_fail, t.created_at,
           t.max_retries, t.backoff_min, t.backoff_max
    FROM catbird.cb_tasks t ORDER BY t.name
$$;

-- One task as TaskInfo; no row when it does not exist. Raises nothing.
CREATE FUNCTION catbird.cb_get_task(name text)
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz, max_retries int, backoff_min int, backoff_max int)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_tasks() t WHERE t.name = $1 $$;

CREATE TYPE catbird.cb_task_run_info AS (
    id bigint, task_name text, status text, priority int, attempts int, concurrency_key text,
    input jsonb, headers jsonb, output jsonb, error_message text, cancel_reason text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz,
    started_at timestamptz, completed_at timestamptz, failed_at timestamptz, skipped_at timestamptz,
    expired_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text, error_detail text
);

-- Every run of a task as cb_task_run_info (TaskRunInfo fields); an inlinable
-- building block, so callers' filters, order and limit reach the index.
-- Raises nothing.
CREATE FUNCTION catbird._cb_task_runs(task_id int, task_name text)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql STABLE
AS $$
    SELECT r.id, task_name, r.status, r.priority, r.attempts, r.concurrency_key, r.input, r.headers,
           r.output, r.error_message, r.cancel_reason, r.created_at, r.visible_at, r.expires_at,
           r.started_at, r.completed_at, r.failed_at, r.skipped_at, r.expired_at, r.cancel_requested_at,
           r.canceled_at, r.on_fail_status, r.on_fail_attempts, r.on_fail_error_message, r.error_detail
    FROM catbird.cb_task_runs r
    WHERE r.task_id = $1
$$;

-- The task's runs as cb_task_run_info (TaskRunInfo), newest first, at most
-- lim, older than before_id when given (to page backwards). 42704 for an
-- unknown task; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird.cb_list_task_runs(name text, lim int = 100, before_id bigint = NULL)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_task_run_info, 'task', cb_list_task_runs.name, lim, before_id)
$$;

-- One run of the task as cb_task_run_info; no row when it does not exist.
-- 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_get_task_run(name text, run_id bigint)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_task_run_info, 'task', cb_get_task_run.name, 1,
                                        run_id => run_id)
$$;

-- catbird 40_tasks: task definitions, runs, claims, retries and on-fail handling.
--
-- Owns: cb_tasks, cb_task_runs, the cb_task_claim and cb_task_run_info types;
-- the task verbs of the public API and the worker protocol (claim, hide,
-- complete, fail, on-fail). Hot paths are static SQL here; deleting, purging,
-- clearing, listing, waiting and on-fail outcomes are thin over 38_runs.
-- Guarantees:
--   * A run is claimable while it is queued, or started with its lease
--     (visible_at) passed: a run whose worker died is picked up again without
--     an operator. Claims use FOR UPDATE SKIP LOCKED on the partial claim index,
--     which holds only queued and started runs.
--   * Every claim increments attempts; attempts is the fencing token: complete
--     and fail given an attempt act only on the run still started under that
--     attempt, so a stale worker cannot overwrite a newer claim's outcome.
--   * The retry decision is made here: cb_fail_task re-queues with a full-jitter
--     delay while attempts <= max_retries, else the run is failed for good.
--   * A queued run past its expires_at becomes expired when a claim meets it
--     and is never handed out.
--   * A condition that is false for the input makes the run skipped at creation.
--   * A concurrency key is held by at most one queued or started run of a task.
--   * Status changes are announced through cb_notify (80_events).

CREATE TABLE catbird.cb_tasks (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text,
    condition        text,
    condition_expr   jsonb,
    retention_period interval,
    on_fail          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL
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
    output               jsonb
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
-- condition, retention_period, on_fail) is a no-op; a different one replaces
-- it while no run is queued or started. Announces catbird.task.created.
-- Returns nothing. 22023 for an invalid name, a malformed condition or a
-- negative retention_period; 55006 when runs are active.
CREATE FUNCTION catbird.cb_create_task(name text, description text = NULL, condition text = NULL,
                                       retention_period interval = NULL, on_fail boolean = false)
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
    PERFORM catbird._cb_lock_definition('task', name, exclusive => true);
    SELECT * INTO v_existing FROM catbird.cb_tasks t WHERE t.name = cb_create_task.name;
    IF v_existing.id IS NULL THEN
        INSERT INTO catbird.cb_tasks (name, description, condition, condition_expr, retention_period, on_fail, created_at)
        VALUES (cb_create_task.name, cb_create_task.description, cb_create_task.condition, v_expr,
                cb_create_task.retention_period, coalesce(cb_create_task.on_fail, false), catbird.cb_now());
        PERFORM catbird._cb_notify('catbird.task.created', name);
        RETURN;
    END IF;
    IF (v_existing.description, v_existing.condition, v_existing.retention_period, v_existing.on_fail)
       IS NOT DISTINCT FROM (description, condition, retention_period, coalesce(on_fail, false)) THEN
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
        on_fail = coalesce(cb_create_task.on_fail, false)
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
-- Returns the run id each input position resolved to. Callers have validated
-- the arguments and hold the task's shared lock.
CREATE FUNCTION catbird._cb_insert_task_runs(
    task catbird.cb_tasks, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_queued boolean;
BEGIN
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
        SELECT array_agg(i.id ORDER BY i.id), bool_or(i.status = 'queued') INTO v_ids, v_queued FROM inserted i;
        IF v_queued THEN
            PERFORM catbird._cb_notify('catbird.task.queued', task.name);
        END IF;
        RETURN v_ids;
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
           bool_or(ins.status = 'queued')
    INTO v_ids, v_queued
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
    IF v_queued THEN
        PERFORM catbird._cb_notify('catbird.task.queued', task.name);
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
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_send_args(inputs, NULL, concurrency_keys, headers);
    IF cardinality(inputs) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    RETURN catbird._cb_insert_task_runs(v_task, inputs, concurrency_keys, headers, visible_at, priority, expires_at);
END
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
    IF input IS NULL THEN
        RAISE EXCEPTION 'invalid input: a run input must not be SQL NULL (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        PERFORM catbird._cb_check_headers(headers);
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
AS $$ SELECT catbird._cb_bind('task', (catbird._cb_task(cb_bind_task.name)).name, pattern) $$;

-- Removes a binding of the task. Returns false when there was none; 42704 for
-- an unknown task, 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind_task(name text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('task', (catbird._cb_task(cb_unbind_task.name)).name, pattern) $$;

-- Claims up to quantity runs of a task: queued runs, and started runs whose
-- lease (visible_at) lapsed, highest priority first, then oldest. Each claim
-- increments attempts (the fencing token) and holds the run for hide_for ms;
-- concurrent claims skip each other's rows. Queued runs past expires_at met
-- on the way become expired and do not count. Returns the claims
-- (cb_task_claim) by priority, then id. 42704 for an unknown task; 22023 for
-- an invalid name, quantity < 1 or hide_for < 1.
CREATE FUNCTION catbird.cb_claim_tasks(name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_task_claim
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task_id int;
    v_now timestamptz;
    v_wanted int := quantity;
    v_claims catbird.cb_task_claim[];
    v_expired int;
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    SELECT t.id INTO v_task_id FROM catbird.cb_tasks t WHERE t.name = cb_claim_tasks.name;
    IF v_task_id IS NULL THEN
        v_task_id := (catbird._cb_task(name)).id;  -- raises the clear error
    END IF;
    v_now := catbird.cb_now();
    -- Expired runs met on the way are retired (they leave the claim index) and
    -- do not count against quantity: claim again until it is filled or no
    -- expired run was met.
    LOOP
        WITH candidates AS (
            SELECT r.id, (r.status = 'queued' AND coalesce(r.expires_at <= v_now, false)) AS expired
            FROM catbird.cb_task_runs r
            WHERE r.task_id = v_task_id
              AND r.status IN ('queued', 'started')
              AND r.visible_at <= v_now
            ORDER BY r.priority DESC, r.visible_at, r.id
            LIMIT v_wanted
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE catbird.cb_task_runs r
            SET status = CASE WHEN c.expired THEN 'expired' ELSE 'started' END,
                attempts = r.attempts + CASE WHEN c.expired THEN 0 ELSE 1 END,
                started_at = CASE WHEN c.expired THEN r.started_at ELSE v_now END,
                expired_at = CASE WHEN c.expired THEN v_now END,
                visible_at = CASE WHEN c.expired THEN r.visible_at
                                  ELSE v_now + make_interval(secs => hide_for / 1000.0) END
            FROM candidates c
            WHERE r.id = c.id
            RETURNING r.id, r.attempts, r.input, r.headers, r.concurrency_key, r.priority, c.expired
        )
        SELECT coalesce(array_agg(ROW(c.id, c.attempts, c.input, c.headers, c.concurrency_key, c.priority)::catbird.cb_task_claim
                                  ORDER BY c.priority DESC, c.id) FILTER (WHERE NOT c.expired), '{}'),
               count(*) FILTER (WHERE c.expired)
        INTO v_claims, v_expired
        FROM claimed c;
        RETURN QUERY SELECT * FROM unnest(v_claims);
        v_wanted := v_wanted - cardinality(v_claims);
        EXIT WHEN v_expired = 0 OR v_wanted = 0;
    END LOOP;
END
$$;

-- Lease renewal: pushes visible_at of started runs out to hide_for ms from
-- now; with attempts (one per id) only runs still started under those claims.
-- Returns nothing. 42704 for an unknown task; 22023 for an invalid name,
-- hide_for < 1 or attempts of another length than ids.
CREATE FUNCTION catbird.cb_hide_tasks(name text, ids bigint[], hide_for int, attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    -- With attempts, only leases still held under those claims are renewed.
    UPDATE catbird.cb_task_runs r
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_tasks.attempts) AS u(id, attempt)
    WHERE r.task_id = v_task.id AND r.id = u.id AND r.id = ANY (ids) AND r.status = 'started'
      AND (u.attempt IS NULL OR r.attempts = u.attempt);
END
$$;

-- Batch completion: records the outputs of the runs still started under the
-- given attempts (NULL attempts: any) and announces catbird.task.completed.
-- Returns the ids recorded (sorted); stale runs are left out. 42704 for an
-- unknown task; 22023 for an invalid name or arrays of different lengths.
CREATE FUNCTION catbird.cb_complete_tasks(name text, run_ids bigint[], outputs jsonb[], attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_done bigint[];
BEGIN
    IF cardinality(run_ids) IS DISTINCT FROM cardinality(outputs)
       OR (attempts IS NOT NULL AND cardinality(attempts) <> cardinality(run_ids)) THEN
        RAISE EXCEPTION 'invalid arguments: run_ids, outputs (and attempts, when given) must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH done AS (
        UPDATE catbird.cb_task_runs r
        SET status = 'completed', output = coalesce(u.output, 'null'::jsonb), completed_at = v_now,
            error_message = NULL
        FROM unnest(run_ids, outputs, cb_complete_tasks.attempts) AS u(id, output, attempt)
        -- r.id = ANY keeps the plan on the primary key (joining the unnest alone
        -- can walk the task's whole claim index on an unanalyzed table)
        WHERE r.id = u.id AND r.id = ANY (run_ids) AND r.task_id = v_task.id AND r.status = 'started'
          AND (u.attempt IS NULL OR r.attempts = u.attempt)
        RETURNING r.id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO v_done FROM done d;
    -- One event per call (ids comma-separated, at most 500 per event), not one per run.
    PERFORM catbird._cb_notify('catbird.task.completed', string_agg(c.id::text, ',' ORDER BY c.id))
    FROM (SELECT d AS id, (row_number() OVER (ORDER BY d) - 1) / 500 AS chunk FROM unnest(v_done) AS d) c
    GROUP BY c.chunk;
    RETURN v_done;
END
$$;

-- Completes one run with output (see cb_complete_tasks). Returns true when
-- the outcome was recorded, false for a run that is not started (under
-- attempt, when given). Errors as cb_complete_tasks.
CREATE FUNCTION catbird.cb_complete_task(name text, run_id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT cardinality(catbird.cb_complete_tasks(name, ARRAY[run_id], ARRAY[output], ARRAY[attempt])) > 0
$$;

-- Records a failure of a started run (under attempt, when given): re-queued
-- with a full-jitter delay in [backoff_min, min(backoff_max, backoff_min *
-- 2^(attempts - 1))] ms while attempts <= max_retries, else failed for good
-- (queued for its on-fail handler when the task has on_fail; announces
-- catbird.task.failed). Returns 'queued', 'failed', or NULL for a stale call.
-- 42704 for an unknown task; 22023 for an invalid name or retry policy.
CREATE FUNCTION catbird.cb_fail_task(name text, run_id bigint, error_message text, attempt int = NULL,
                                     max_retries int = 0, backoff_min int = 100, backoff_max int = 2000)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_status text;
BEGIN
    PERFORM catbird._cb_check_retry_policy(max_retries, backoff_min, backoff_max);
    UPDATE catbird.cb_task_runs r
    SET status = CASE WHEN r.attempts <= max_retries THEN 'queued' ELSE 'failed' END,
        visible_at = CASE WHEN r.attempts <= max_retries
                          THEN v_now + make_interval(secs => catbird._cb_retry_delay(r.attempts, backoff_min, backoff_max) / 1000.0)
                          ELSE r.visible_at END,
        failed_at = CASE WHEN r.attempts <= max_retries THEN NULL ELSE v_now END,
        error_message = coalesce(cb_fail_task.error_message, 'unknown error'),
        on_fail_status = CASE WHEN r.attempts > max_retries AND v_task.on_fail THEN 'queued' END,
        on_fail_visible_at = CASE WHEN r.attempts > max_retries AND v_task.on_fail THEN v_now END
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'started'
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.status INTO v_status;
    IF v_status = 'failed' THEN
        PERFORM catbird._cb_notify('catbird.task.failed', run_id::text);
    END IF;
    RETURN v_status;
END
$$;

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
        PERFORM catbird._cb_notify('catbird.task.canceled', run_id::text);
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

-- Claims up to quantity failed runs whose on-fail handling is due (queued,
-- or started with its hide window lapsed), oldest due first: on_fail_attempts
-- is incremented and the claim held for hide_for ms. Returns the claims by
-- id. 42704 for an unknown task; 22023 for an invalid name, quantity < 1 or
-- hide_for < 1.
CREATE FUNCTION catbird.cb_claim_task_on_fail(name text, quantity int, hide_for int = 30000)
RETURNS TABLE (id bigint, input jsonb, error_message text, attempts int, on_fail_attempts int,
               started_at timestamptz, failed_at timestamptz, concurrency_key text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    RETURN QUERY
    WITH candidates AS (
        SELECT r.id
        FROM catbird.cb_task_runs r
        WHERE r.task_id = v_task.id AND r.on_fail_status IN ('queued', 'started')
          AND r.on_fail_visible_at <= v_now
        ORDER BY r.on_fail_visible_at, r.id
        LIMIT quantity
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_task_runs r
        SET on_fail_status = 'started', on_fail_attempts = r.on_fail_attempts + 1,
            on_fail_visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c
        WHERE r.id = c.id
        RETURNING r.id, r.input, r.error_message, r.attempts, r.on_fail_attempts, r.started_at,
                  r.failed_at, r.concurrency_key
    )
    SELECT c.id, c.input, c.error_message, c.attempts, c.on_fail_attempts, c.started_at, c.failed_at,
           c.concurrency_key
    FROM claimed c ORDER BY c.id;
END
$$;

-- Records that the on-fail handler of a run succeeded; acts only on a run whose
-- on-fail claim is started. Returns nothing; 42704 for an unknown task, 22023
-- for an invalid name.
CREATE FUNCTION catbird.cb_complete_task_on_fail(name text, run_id bigint) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_end_on_fail('task', cb_complete_task_on_fail.name, run_id, completed => true) $$;

-- Records that the on-fail handler of a run failed: claimable again after
-- retry_delay ms, or failed for good when retry_exhausted. Acts only on a run
-- whose on-fail claim is started. Returns nothing; 42704 for an unknown task,
-- 22023 for an invalid name or retry_delay < 0.
CREATE FUNCTION catbird.cb_fail_task_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean, retry_delay bigint)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('task', cb_fail_task_on_fail.name, run_id, completed => false,
                                   error_message => cb_fail_task_on_fail.error_message,
                                   retry_exhausted => retry_exhausted, retry_delay => retry_delay)
$$;

-- Every task as TaskInfo (name, description, condition, retention_period,
-- on_fail, created_at), by name. Raises nothing.
CREATE FUNCTION catbird.cb_list_tasks()
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT t.name, t.description, t.condition, t.retention_period, t.on_fail, t.created_at
    FROM catbird.cb_tasks t ORDER BY t.name
$$;

-- One task as TaskInfo; no row when it does not exist. Raises nothing.
CREATE FUNCTION catbird.cb_get_task(name text)
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_tasks() t WHERE t.name = $1 $$;

CREATE TYPE catbird.cb_task_run_info AS (
    id bigint, task_name text, status text, priority int, attempts int, concurrency_key text,
    input jsonb, headers jsonb, output jsonb, error_message text, cancel_reason text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz,
    started_at timestamptz, completed_at timestamptz, failed_at timestamptz, skipped_at timestamptz,
    expired_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text
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
           r.canceled_at, r.on_fail_status, r.on_fail_attempts, r.on_fail_error_message
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

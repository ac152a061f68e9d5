-- catbird 45_task_worker: the worker protocol for task runs.
--
-- Owns: cb_claim_tasks, cb_hide_tasks, cb_complete_tasks, cb_complete_task,
-- cb_fail_task, and the on-fail lane: cb_claim_task_on_fail,
-- cb_complete_task_on_fail, cb_fail_task_on_fail. Writes cb_task_runs.
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
--   * Claims, completions, failures and lease renewal are static SQL (cached
--     plans); on-fail outcomes are thin over 38_runs.

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

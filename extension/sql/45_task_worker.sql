-- catbird 45_task_worker: the worker protocol for task runs.
--
-- Owns: cb_claim_tasks, cb_hide_tasks, cb_complete_tasks, cb_complete_task,
-- cb_fail_task, cb_retry_task_run, and the on-fail lane: cb_claim_task_on_fail,
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
--     delay while attempts <= max_retries (the policy given, else the one stored
--     on the task) and the failure is retryable, else the run is failed for good.
--   * A lapsed lease is an attempt: a started run whose lease lapsed after
--     max_retries + 1 attempts (25 without a stored policy) is failed by the
--     next claim (or cb_gc) with a "lease expired" error, never claimed again.
--   * Every run that ends failed is queued for on-fail handling, whatever the
--     task's flags; on-fail outcomes are fenced by on_fail_attempt and their
--     retry delay is decided in SQL when the caller does not give one.
--   * cb_retry_task_run puts a failed, canceled or expired run back to queued.
--   * A queued run past its expires_at becomes expired when a claim meets it
--     and is never handed out.
--   * Claims, completions, failures and lease renewal are static SQL (cached
--     plans); on-fail outcomes are thin over 38_runs.
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).
--   * Claims, completions and lease renewals call no other catbird function
--     on their normal path: with the pinned search_path (SPEC 7.2) each nested
--     call is a search_path switch (_cb_task ~22 us, cb_now() ~12 us a call),
--     which at small batches was most of the difference to a raw claim. So
--     they inline the engine clock (clock_timestamp(), and cb_now() only when
--     catbird.fake_now is set, to check the caller may move the clock), the
--     definition lookup with its shared lock (_cb_task / _cb_lock_definition;
--     _cb_task only to raise for an unknown task), the argument checks (the
--     check helpers only to raise) and _cb_lease_cap. What is left is called
--     once per statement, never per row.

-- Claims up to quantity runs of a task: queued runs, and started runs whose
-- lease (visible_at) lapsed, highest priority first, then oldest. Each claim
-- increments attempts (the fencing token) and holds the run for hide_for ms;
-- concurrent claims skip each other's rows. Queued runs past expires_at met
-- on the way become expired (catbird.task.expired), and lapsed runs that used
-- their attempts (see _cb_lease_cap) fail with a "lease expired" error
-- (on-fail queued, catbird.task.failed); neither counts. Returns the claims
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
    v_expired bigint;
    v_expired_ids bigint[];
    v_failed bigint[];
    v_max_retries int;
    v_cap int;
BEGIN
    -- Nested calls inlined (see the header): the checks only raise.
    IF quantity IS NULL OR quantity < 1 OR hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    SELECT t.id, t.max_retries INTO v_task_id, v_max_retries FROM catbird.cb_tasks t WHERE t.name = cb_claim_tasks.name;
    IF v_task_id IS NULL THEN
        v_task_id := (catbird._cb_task(name)).id;  -- raises the clear error
    END IF;
    v_cap := coalesce(v_max_retries + 1, 25);  -- _cb_lease_cap
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    -- Expired runs met on the way are retired (they leave the claim index) and
    -- do not count against quantity: claim again until it is filled or no
    -- expired run was met.
    LOOP
        WITH candidates AS (
            SELECT r.id, (r.status = 'queued' AND coalesce(r.expires_at <= v_now, false)) AS expired,
                   (r.status = 'started' AND r.attempts >= v_cap) AS exhausted
            FROM catbird.cb_task_runs r
            WHERE r.task_id = v_task_id
              AND r.status IN ('queued', 'started')
              AND r.visible_at <= v_now
            ORDER BY r.priority DESC, r.visible_at, r.id
            LIMIT v_wanted
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE catbird.cb_task_runs r
            SET status = CASE WHEN c.expired THEN 'expired' WHEN c.exhausted THEN 'failed' ELSE 'started' END,
                attempts = r.attempts + CASE WHEN c.expired OR c.exhausted THEN 0 ELSE 1 END,
                started_at = CASE WHEN c.expired OR c.exhausted THEN r.started_at ELSE v_now END,
                expired_at = CASE WHEN c.expired THEN v_now END,
                visible_at = CASE WHEN c.expired OR c.exhausted THEN r.visible_at
                                  ELSE v_now + make_interval(secs => hide_for / 1000.0) END,
                failed_at = CASE WHEN c.exhausted THEN v_now ELSE r.failed_at END,
                error_message = CASE WHEN c.exhausted THEN catbird._cb_lease_expired_error(r.attempts)
                                     ELSE r.error_message END,
                on_fail_status = CASE WHEN c.exhausted THEN 'queued' ELSE r.on_fail_status END,
                on_fail_visible_at = CASE WHEN c.exhausted THEN v_now ELSE r.on_fail_visible_at END
            FROM candidates c
            -- = ANY keeps the join on the primary key: a hash join over a scan
            -- of the whole table (every finished run too) was the planner's
            -- choice for a batch of 250 (2-3 ms per claim at 20,000 runs).
            WHERE r.id = c.id AND r.id = ANY (ARRAY(SELECT x.id FROM candidates x))
            RETURNING r.id, r.attempts, r.input, r.headers, r.concurrency_key, r.priority, c.expired, c.exhausted
        )
        SELECT coalesce(array_agg(ROW(c.id, c.attempts, c.input, c.headers, c.concurrency_key, c.priority)::catbird.cb_task_claim
                                  ORDER BY c.priority DESC, c.id) FILTER (WHERE NOT (c.expired OR c.exhausted)), '{}'),
               count(*) FILTER (WHERE c.expired OR c.exhausted),
               array_agg(c.id ORDER BY c.id) FILTER (WHERE c.exhausted),
               array_agg(c.id ORDER BY c.id) FILTER (WHERE c.expired)
        INTO v_claims, v_expired, v_failed, v_expired_ids
        FROM claimed c;
        RETURN QUERY SELECT * FROM unnest(v_claims);
        IF v_expired > 0 THEN
            PERFORM catbird._cb_notify_runs('catbird.task.failed', 'task', cb_claim_tasks.name, v_failed);
            PERFORM catbird._cb_notify_runs('catbird.task.expired', 'task', cb_claim_tasks.name, v_expired_ids);
        END IF;
        v_wanted := v_wanted - cardinality(v_claims);
        EXIT WHEN v_expired = 0 OR v_wanted = 0;
    END LOOP;
END
$$;

-- Lease renewal: pushes visible_at of started runs out to hide_for ms from
-- now; with attempts (one per id) only runs still started under those claims.
-- Returns nothing. 42704 for an unknown task; 22023 for an invalid name,
-- hide_for < 1 or attempts of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_tasks(name text, ids bigint[], hide_for int, attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_task catbird.cb_tasks;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_task, the check, cb_now().
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('task/' || name));
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = cb_hide_tasks.name;
    IF v_task.id IS NULL THEN
        v_task := catbird._cb_task(name);  -- raises the clear error
    END IF;
    IF hide_for IS NULL OR hide_for < 1
       OR (attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids)) THEN
        PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;
    -- With attempts, only leases still held under those claims are renewed.
    UPDATE catbird.cb_task_runs r
    SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_tasks.attempts) AS u(id, attempt)
    WHERE r.task_id = v_task.id AND r.id = u.id AND r.id = ANY (ids) AND r.status = 'started'
      AND (u.attempt IS NULL OR r.attempts = u.attempt);
END
$$;

-- Batch completion: records the outputs of the runs still started under the
-- given attempts (NULL attempts: any) and announces catbird.task.completed.
-- Returns the ids recorded (sorted); stale runs are left out. 42704 for an
-- unknown task; 22023 for an invalid name or arrays of different lengths.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_tasks(name text, run_ids bigint[], outputs jsonb[], attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_task catbird.cb_tasks;
    v_now timestamptz;
    v_done bigint[];
BEGIN
    -- Nested calls inlined (see the header): _cb_task, cb_now().
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('task/' || name));
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = cb_complete_tasks.name;
    IF v_task.id IS NULL THEN
        v_task := catbird._cb_task(name);  -- raises the clear error
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;
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
    -- One event per call (run_ids), not one per run.
    PERFORM catbird._cb_notify_runs('catbird.task.completed', 'task', v_task.name, v_done);
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
-- 2^(attempts - 1))] ms while attempts <= max_retries and retryable, else
-- failed for good (queued for on-fail handling; announces
-- catbird.task.failed). Policy arguments left NULL come from the task's stored
-- policy (default 0 retries, 100-2000 ms). error_detail (e.g. a traceback) is
-- stored beside error_message. Returns 'queued', 'failed', or NULL for a stale
-- call. 42704 for an unknown task; 22023 for an invalid name, retry policy or
-- a NULL retryable.
CREATE FUNCTION catbird.cb_fail_task(name text, run_id bigint, error_message text, attempt int = NULL,
                                     max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL,
                                     retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_policy record;
    v_status text;
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_task.max_retries, v_task.backoff_min, v_task.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
    UPDATE catbird.cb_task_runs r
    SET status = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN 'queued' ELSE 'failed' END,
        visible_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out
                          THEN v_now + make_interval(secs => catbird._cb_retry_delay(
                                   r.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
                          ELSE r.visible_at END,
        failed_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE v_now END,
        error_message = coalesce(cb_fail_task.error_message, 'unknown error'),
        error_detail = cb_fail_task.error_detail,
        on_fail_status = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE 'queued' END,
        on_fail_visible_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE v_now END
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'started'
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.status INTO v_status;
    IF v_status = 'failed' THEN
        PERFORM catbird._cb_notify_runs('catbird.task.failed', 'task', v_task.name, ARRAY[run_id]);
    END IF;
    RETURN v_status;
END
$$;

-- Puts a failed, canceled or expired run back to queued, visible now:
-- attempts restart at 0; output, errors, end times and on-fail state are
-- cleared (an expires_at already passed is dropped). Announces
-- catbird.task.queued. Returns true when re-queued; false when the run does
-- not exist, is in another status, or its concurrency key is held by another
-- queued or started run. 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_retry_task_run(name text, run_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_run catbird.cb_task_runs;
BEGIN
    SELECT * INTO v_run FROM catbird.cb_task_runs r
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status IN ('failed', 'canceled', 'expired')
    FOR UPDATE;
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    IF catbird._cb_key_held('task', v_task.id, v_run.concurrency_key) THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE catbird.cb_task_runs r
        SET status = 'queued', attempts = 0, visible_at = v_now, output = NULL, error_message = NULL,
            error_detail = NULL, started_at = NULL, completed_at = NULL, failed_at = NULL, expired_at = NULL,
            canceled_at = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
            expires_at = CASE WHEN r.expires_at <= v_now THEN NULL ELSE r.expires_at END,
            on_fail_status = NULL, on_fail_attempts = 0, on_fail_visible_at = NULL, on_fail_error_message = NULL
        WHERE r.id = v_run.id;
    EXCEPTION WHEN unique_violation THEN
        RETURN false;  -- a run holding the key committed meanwhile
    END;
    PERFORM catbird._cb_notify('catbird.task.queued', jsonb_build_object('task', v_task.name)::text);
    RETURN true;
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
-- on-fail claim is started (under on_fail_attempt, the on_fail_attempts its
-- claim returned, when given). Returns nothing; 42704 for an unknown task,
-- 22023 for an invalid name or on_fail_attempt < 1.
CREATE FUNCTION catbird.cb_complete_task_on_fail(name text, run_id bigint, on_fail_attempt int = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('task', cb_complete_task_on_fail.name, run_id, completed => true,
                                   on_fail_attempt => on_fail_attempt)
$$;

-- Records that the on-fail handler of a run failed: claimable again after
-- retry_delay ms, or failed for good when retry_exhausted. Left NULL, SQL
-- decides both from the policy given (max_retries, backoff_min, backoff_max)
-- or stored on the task: exhausted once on_fail_attempts > max_retries, a
-- full-jitter delay otherwise. Acts only on a run whose on-fail claim is
-- started (under on_fail_attempt, when given). Returns nothing; 42704 for an
-- unknown task, 22023 for an invalid name, retry_delay < 0, on_fail_attempt
-- < 1 or an invalid policy.
CREATE FUNCTION catbird.cb_fail_task_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean = NULL, retry_delay bigint = NULL,
                                             on_fail_attempt int = NULL, max_retries int = NULL,
                                             backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('task', cb_fail_task_on_fail.name, run_id, completed => false,
                                   error_message => cb_fail_task_on_fail.error_message,
                                   retry_exhausted => retry_exhausted, retry_delay => retry_delay,
                                   on_fail_attempt => on_fail_attempt, max_retries => max_retries,
                                   backoff_min => backoff_min, backoff_max => backoff_max)
$$;

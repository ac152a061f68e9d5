-- catbird 54_flow_steps: the worker protocol for flow steps.
--
-- Owns: cb_claim_steps, cb_hide_steps, _cb_lock_step_run, _cb_lock_reported_step,
-- cb_complete_step, cb_complete_steps, cb_fail_step. Writes cb_step_runs (and,
-- through dispatch, the run).
-- Guarantees:
--   * Claims use FOR UPDATE SKIP LOCKED on cb_step_runs_claim_idx and never
--     lock the flow run; a step whose lease (visible_at) lapsed is claimable
--     again, and each claim increments attempts, the fencing token.
--   * Complete and fail lock the flow run first, then act only on a step run
--     still started (under the given attempt, when one is given): a stale
--     worker gets false / NULL and changes nothing. The batch completion
--     (cb_complete_steps) locks all its flow runs first, in id order, and
--     does in a few set-based statements what cb_complete_step does per step.
--   * The retry decision is made here: a failure re-queues the step with a
--     full-jitter delay while attempts <= max_retries (the policy given, else
--     the step's stored one) and it is retryable, else fails the run.
--   * A claim first fails the step's lapsed runs that used their attempts
--     (_cb_fail_lapsed_work): a crash loop ends with a "lease expired" error.
--   * A report for a step of a canceling run cancels that step (and finishes
--     the cancel when it was the last started work).
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).
--   * cb_claim_steps, cb_complete_steps and cb_hide_steps inline what they
--     would call on their normal path, as the task worker functions do (see
--     45_task_worker): the engine clock, the flow and step lookup with the
--     flow's shared lock (_cb_flow / _cb_flow_step only to raise), the
--     argument checks; cb_complete_steps reads a finished run's output
--     directly unless it is an item step's (_cb_step_output, per row before).

-- Claims up to quantity runs of one step of a flow: queued, or started with
-- the lease (visible_at) lapsed, in started flow runs (not expired before
-- their first attempt), highest priority first, then oldest. Each claim
-- increments attempts (the fencing token) and holds the step for hide_for ms.
-- Returns the claims (cb_step_claim: flow input, dependency outputs, signal
-- input) by priority, then id. Lapsed step runs that used their attempts
-- are failed first (see _cb_fail_lapsed_work). 42704 for an unknown flow or
-- step; 22023 for an invalid name, quantity < 1 or hide_for < 1.
CREATE FUNCTION catbird.cb_claim_steps(flow_name text, step_name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_step_claim
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    IF quantity IS NULL OR quantity < 1 OR hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    PERFORM catbird._cb_fail_lapsed_work(v_step, 'step', v_now);
    RETURN QUERY
    WITH candidates AS (
        SELECT sr.id
        FROM catbird.cb_step_runs sr
        JOIN catbird.cb_flow_runs r ON r.id = sr.flow_run_id
        WHERE sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status IN ('queued', 'started') AND sr.visible_at <= v_now
          AND r.status = 'started' AND (r.expires_at IS NULL OR r.expires_at > v_now OR sr.attempts > 0)
        ORDER BY sr.priority DESC, sr.visible_at, sr.id
        LIMIT quantity
        FOR UPDATE OF sr SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_step_runs sr
        SET status = 'started', attempts = sr.attempts + 1, started_at = v_now,
            visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c
        -- = ANY keeps the joins on the primary keys (see cb_claim_tasks)
        WHERE sr.id = c.id AND sr.id = ANY (ARRAY(SELECT x.id FROM candidates x))
        RETURNING sr.id, sr.flow_run_id, sr.attempts, sr.signal_input, sr.priority
    )
    SELECT c.id, c.flow_run_id, c.attempts, r.input, o.outputs, c.signal_input
    FROM claimed c
    JOIN catbird.cb_flow_runs r ON r.id = c.flow_run_id AND r.id = ANY (ARRAY(SELECT x.flow_run_id FROM claimed x))
    -- dependency outputs of the whole batch in one call
    JOIN catbird._cb_dependency_outputs_of((SELECT array_agg(x.flow_run_id) FROM claimed x), v_step) o
      ON o.flow_run_id = c.flow_run_id
    ORDER BY c.priority DESC, c.id;
END
$$;

-- Lease renewal: pushes visible_at of started step runs out to hide_for ms
-- from now; with attempts (one per id) only claims still held under those
-- attempts. Returns nothing. 42704 for an unknown flow or step; 22023 for an
-- invalid name, hide_for < 1 or attempts of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_steps(flow_name text, step_name text, ids bigint[], hide_for int,
                                      attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    IF hide_for IS NULL OR hide_for < 1
       OR (attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids)) THEN
        PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    UPDATE catbird.cb_step_runs sr
    SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_steps.attempts) AS u(id, attempt)
    WHERE sr.flow_id = v_flow.id AND sr.step_name = cb_hide_steps.step_name
      AND sr.id = u.id AND sr.id = ANY (ids) AND sr.status = 'started'
      AND (u.attempt IS NULL OR sr.attempts = u.attempt);
END
$$;

-- Locks the run of a step run and returns both; the step run's fields are read
-- after the lock, so they are current. Both NULL when there is no such step
-- run of that flow and step. Raises nothing.
CREATE FUNCTION catbird._cb_lock_step_run(flow catbird.cb_flows, step_name text, step_run_id bigint,
                                          OUT run catbird.cb_flow_runs, OUT step_run catbird.cb_step_runs)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    SELECT * INTO run FROM catbird.cb_flow_runs r
    WHERE r.id = (SELECT sr.flow_run_id FROM catbird.cb_step_runs sr
                  WHERE sr.id = step_run_id AND sr.flow_id = flow.id AND sr.step_name = _cb_lock_step_run.step_name)
    FOR UPDATE;
    SELECT * INTO step_run FROM catbird.cb_step_runs sr WHERE sr.id = step_run_id AND sr.flow_run_id = run.id;
END
$$;

-- Locks the run of a step run a worker reports on (cb_complete_step,
-- cb_fail_step, cb_complete_generator_step, cb_fail_generator_step) and
-- returns what the report needs, when it may act: the step run is started
-- (under attempt, when given) and its run is not canceling. For a canceling
-- run the step is canceled instead (with error_message, when given) and the
-- cancel finished when it was the last started work. Otherwise (a stale
-- report, or a canceling run) every field is NULL. Raises nothing.
CREATE FUNCTION catbird._cb_lock_reported_step(flow catbird.cb_flows, step_name text, step_run_id bigint,
                                               attempt int, error_message text = NULL,
                                               OUT run_id bigint, OUT run_input jsonb,
                                               OUT signal_input jsonb, OUT attempts int)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked record := catbird._cb_lock_step_run(flow, step_name, step_run_id);
BEGIN
    IF (v_locked.step_run).status IS DISTINCT FROM 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN;  -- stale
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        PERFORM catbird._cb_cancel_reported_step((v_locked.run).id, step_run_id, error_message);
        RETURN;
    END IF;
    run_id := (v_locked.run).id;
    run_input := (v_locked.run).input;
    signal_input := (v_locked.step_run).signal_input;
    attempts := (v_locked.step_run).attempts;
END
$$;

-- Completes a started step run (under attempt, when given) with output and
-- advances the flow run. Returns true when recorded; false for a stale call,
-- or when the run is canceling (the step is then canceled). 42704 for an
-- unknown flow or step; 22023 for an invalid name or a generator step (use
-- cb_complete_generator_step).
CREATE FUNCTION catbird.cb_complete_step(flow_name text, step_name text, id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_report record;
    v_now timestamptz := catbird.cb_now();
BEGIN
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt);
    IF v_report.run_id IS NULL THEN
        RETURN false;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF v_step.step_type = 'generator' THEN
        RAISE EXCEPTION 'step "%" is a generator: finish it with cb_complete_generator_step', step_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_step.output, 'null'),
        error_message = NULL, error_detail = NULL
    WHERE sr.id = cb_complete_step.id;
    PERFORM catbird._cb_resolve_dependents(v_report.run_id, v_flow.id, step_name);
    PERFORM catbird._cb_advance_flow_run(v_report.run_id);
    RETURN true;
END
$$;

-- Batch completion of one step's runs: completes the step runs still started
-- under the given attempts (NULL attempts: any) with their outputs and
-- advances their flow runs, as cb_complete_step does for each, with the flow
-- and step resolved once, every flow run locked up front in id order, and the
-- step runs and their dependents written in one statement each; when every
-- dependent is a plain step (no signal, condition or mapper) the runs are
-- advanced set-based too (announcing catbird.step.queued and
-- catbird.flow.completed as _cb_advance_flow_run does). Step runs of
-- canceling flow runs are canceled instead. Returns the ids recorded
-- (sorted); stale ones are left out. 42704 for an unknown flow or step; 22023
-- for an invalid name, arrays of different lengths or a generator step.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_steps(flow_name text, step_name text, ids bigint[], outputs jsonb[],
                                          attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
    v_dependents text[];
    v_done bigint[];
    v_runs bigint[];
    v_canceled record;
    v_queued record;
    v_run_id bigint;
    v_finished bigint[];
    v_outputs jsonb[];
    v_no_output bigint[];
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    IF cardinality(ids) IS DISTINCT FROM cardinality(outputs)
       OR (attempts IS NOT NULL AND cardinality(attempts) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'invalid arguments: ids, outputs (and attempts, when given) must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_step.step_type = 'generator' THEN
        RAISE EXCEPTION 'step "%" is a generator: finish it with cb_complete_generator_step', step_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Lock order is flow run, then its parts, runs in id order: concurrent
    -- batches and single transitions cannot deadlock.
    -- With enable_nestloop off every join below is a hash join: each names
    -- its rows with = ANY (array) so that its tables are read through their
    -- indexes, never scanned whole (a scan of every flow run per batch made a
    -- step cost ~1 ms of server CPU at batch 10 with 20,000 runs queued).
    v_runs := ARRAY(SELECT DISTINCT sr.flow_run_id FROM catbird.cb_step_runs sr
                    WHERE sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name);
    PERFORM FROM catbird.cb_flow_runs r
    WHERE r.id = ANY (v_runs)
    ORDER BY r.id
    FOR UPDATE OF r;
    -- Reports for canceling runs cancel their step (and may finish the cancel).
    FOR v_canceled IN
        SELECT sr.id, sr.flow_run_id
        FROM unnest(ids, cb_complete_steps.attempts) AS u(id, attempt)
        JOIN catbird.cb_step_runs sr ON sr.id = u.id
        JOIN catbird.cb_flow_runs r ON r.id = sr.flow_run_id
        WHERE sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status = 'started' AND (u.attempt IS NULL OR sr.attempts = u.attempt)
          AND r.id = ANY (v_runs) AND r.status = 'canceling'
        ORDER BY sr.flow_run_id, sr.id
    LOOP
        PERFORM catbird._cb_cancel_reported_step(v_canceled.flow_run_id, v_canceled.id);
    END LOOP;
    WITH done AS (
        UPDATE catbird.cb_step_runs sr
        SET status = 'completed', completed_at = v_now, output = coalesce(u.output, 'null'),
            error_message = NULL, error_detail = NULL
        FROM unnest(ids, outputs, cb_complete_steps.attempts) AS u(id, output, attempt)
        -- sr.id = ANY keeps the plan on the primary key (see cb_complete_tasks)
        WHERE sr.id = u.id AND sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status = 'started' AND (u.attempt IS NULL OR sr.attempts = u.attempt)
        RETURNING sr.id, sr.flow_run_id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}'),
           coalesce(array_agg(DISTINCT d.flow_run_id ORDER BY d.flow_run_id), '{}')
    INTO v_done, v_runs
    FROM done d;
    IF cardinality(v_runs) = 0 THEN
        RETURN v_done;
    END IF;
    v_dependents := ARRAY(SELECT fs.name FROM catbird.cb_flow_steps fs
                          WHERE fs.flow_id = v_flow.id AND v_step.name = ANY (fs.depends_on));
    IF EXISTS (SELECT FROM catbird.cb_flow_steps fs
               WHERE fs.flow_id = v_flow.id AND fs.name = ANY (v_dependents)
                 AND (fs.signal OR fs.condition_expr IS NOT NULL OR fs.step_type = 'mapper')) THEN
        -- A dependent may park, be skipped or fan out: what
        -- _cb_resolve_dependents does per run, for all of them at once, then
        -- run by run.
        UPDATE catbird.cb_step_runs sr
        SET deps_remaining = sr.deps_remaining - 1
        WHERE sr.flow_run_id = ANY (v_runs) AND sr.step_name = ANY (v_dependents);
        FOREACH v_run_id IN ARRAY v_runs LOOP
            PERFORM catbird._cb_advance_flow_run(v_run_id);
        END LOOP;
        RETURN v_done;
    END IF;
    -- Every dependent is a plain step: what _cb_advance_flow_run would do for
    -- each run comes down to queueing the dependents now ready (in runs still
    -- started) and finishing the runs whose steps are all completed or
    -- skipped, here for all runs at once (one catbird.step.queued per step, as
    -- identical notifications of one transaction are delivered once anyway).
    -- Resolving a dependency and queueing the dependent it readies are one
    -- write of the dependent's row (two before: a row version each).
    IF cardinality(v_dependents) > 0 THEN
        FOR v_queued IN
            WITH resolved AS (
                UPDATE catbird.cb_step_runs sr
                SET deps_remaining = sr.deps_remaining - 1,
                    status = CASE WHEN sr.status = 'waiting_for_dependencies' AND sr.deps_remaining = 1
                                       AND r.status = 'started' THEN 'queued' ELSE sr.status END,
                    visible_at = CASE WHEN sr.status = 'waiting_for_dependencies' AND sr.deps_remaining = 1
                                           AND r.status = 'started' THEN greatest(v_now, r.visible_at)
                                      ELSE sr.visible_at END
                FROM catbird.cb_flow_runs r
                WHERE r.id = sr.flow_run_id AND r.id = ANY (v_runs) AND sr.flow_run_id = ANY (v_runs)
                  AND sr.step_name = ANY (v_dependents)
                RETURNING sr.step_name, sr.status = 'queued' AND sr.deps_remaining = 0 AS queued
            )
            SELECT DISTINCT q.step_name FROM resolved q WHERE q.queued ORDER BY q.step_name
        LOOP
            PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', v_queued.step_name)::text);
        END LOOP;
    END IF;
    v_runs := ARRAY(SELECT r.id FROM catbird.cb_flow_runs r
                    WHERE r.id = ANY (v_runs) AND r.status = 'started' ORDER BY r.id);
    -- Finished runs complete with their first completed output_priority step;
    -- a run without one goes through _cb_advance_flow_run, which fails it.
    SELECT array_agg(f.id ORDER BY f.id) FILTER (WHERE f.step_name IS NOT NULL),
           array_agg(f.output ORDER BY f.id) FILTER (WHERE f.step_name IS NOT NULL),
           array_agg(f.id ORDER BY f.id) FILTER (WHERE f.step_name IS NULL)
    INTO v_finished, v_outputs, v_no_output
    FROM (
        SELECT r.id, o.step_name, o.output
        FROM unnest(v_runs) AS r(id)
        LEFT JOIN LATERAL (
            -- only item steps' outputs need assembling (_cb_step_output)
            SELECT p.name AS step_name,
                   CASE WHEN sr.step_type IN ('mapper', 'generator')
                        THEN catbird._cb_step_output(sr.id, sr.step_type, sr.output)
                        ELSE sr.output END AS output
            FROM unnest(v_flow.output_priority) WITH ORDINALITY AS p(name, ord)
            JOIN catbird.cb_step_runs sr ON sr.flow_run_id = r.id AND sr.step_name = p.name
            WHERE sr.status = 'completed'
            ORDER BY p.ord
            LIMIT 1
        ) o ON true
        WHERE NOT EXISTS (SELECT FROM catbird.cb_step_runs sr
                          WHERE sr.flow_run_id = r.id AND sr.flow_run_id = ANY (v_runs)
                            AND sr.status NOT IN ('completed', 'skipped'))
    ) f;
    IF v_finished IS NOT NULL THEN
        UPDATE catbird.cb_flow_runs r SET status = 'completed', completed_at = v_now, output = u.output
        FROM unnest(v_finished, v_outputs) AS u(id, output)
        WHERE r.id = u.id AND r.id = ANY (v_finished);
        -- one event for the runs this batch finished (run_ids, ascending)
        PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, v_finished);
    END IF;
    IF v_no_output IS NOT NULL THEN
        FOREACH v_run_id IN ARRAY v_no_output LOOP
            PERFORM catbird._cb_advance_flow_run(v_run_id);
        END LOOP;
    END IF;
    RETURN v_done;
END
$$;

-- Records a failure of a started step run (under attempt, when given):
-- re-queued with a full-jitter delay while attempts <= max_retries and
-- retryable, else the step and the flow run fail (on-fail handling queued).
-- Policy arguments left NULL come from the step's stored policy (default 0
-- retries, 100-2000 ms); error_detail is stored beside error_message. Returns
-- 'queued', 'failed', or NULL for a stale call or a canceling run. 42704 for
-- an unknown flow or step; 22023 for an invalid name, retry policy or a NULL
-- retryable.
CREATE FUNCTION catbird.cb_fail_step(flow_name text, step_name text, id bigint, error_message text,
                                     attempt int = NULL, max_retries int = NULL, backoff_min int = NULL,
                                     backoff_max int = NULL, retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_policy record;
    v_report record;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_step.error_message, 'unknown error');
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_step.max_retries, v_step.backoff_min, v_step.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt, v_error);
    IF v_report.run_id IS NULL THEN
        RETURN NULL;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF retryable AND v_report.attempts <= v_policy.max_retries_out THEN
        UPDATE catbird.cb_step_runs sr
        SET status = 'queued', error_message = v_error, error_detail = cb_fail_step.error_detail,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(
                             sr.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
        WHERE sr.id = cb_fail_step.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = v_now, error_message = v_error, error_detail = cb_fail_step.error_detail
    WHERE sr.id = cb_fail_step.id;
    PERFORM catbird._cb_fail_flow_run(v_report.run_id, step_name, v_error, v_report.run_input,
                                      v_report.signal_input, v_report.attempts);
    RETURN 'failed';
END
$$;

-- catbird 53_flow_runs: starting, signalling, cancelling and ending flow runs.
--
-- Owns: _cb_insert_flow_runs (the one way runs start: cb_run_flow and
-- cb_publish), cb_run_flow, cb_bind_flow, cb_unbind_flow, cb_signal_flow,
-- cb_cancel_flow, cb_complete_flow_early, cb_retry_flow_run, _cb_expire_flow_run,
-- cb_purge_flow_runs, cb_clear_flow_runs. Writes cb_flow_runs and cb_step_runs.
-- Guarantees:
--   * A concurrency key is held by at most one started or canceling run of a
--     flow; a run with a held key returns the holder's id and writes nothing.
--     A holder past its expires_at before any step started is expired first
--     (as cb_gc would), so an expired run never holds its key.
--   * Early completion is fenced: only for a step that is started (under the
--     given attempt); a stale or missing one gets false and writes nothing.
--   * cb_retry_flow_run re-queues a failed run's failed and canceled steps,
--     keeping completed steps and their outputs.
--   * A signal is delivered at most once per step run, and only while the
--     run is started.
--   * Cancel is two-phase and idempotent; early completion cancels the
--     run's other work and makes later reports from workers stale.

-- Expires a started run (locked by the caller) that is past its expires_at
-- before any step started (cb_gc, and a new run with its concurrency key): its
-- work is canceled and catbird.flow.expired announced. Returns nothing;
-- raises nothing.
CREATE FUNCTION catbird._cb_expire_flow_run(run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_flow_runs r SET status = 'expired', canceled_at = catbird.cb_now() WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, true);
    PERFORM catbird._cb_notify_flow_run('catbird.flow.expired', run_id);
END
$$;

-- The one implementation of starting runs (cb_run_flow, cb_publish): one run
-- per input, deduplicated by concurrency key among active runs, each advanced
-- at once (root steps queued); the new runs are announced as
-- catbird.flow.started, one event per call. Returns the run id each input
-- resolved to. Callers hold the flow's shared lock. 40001 when a key's holder
-- finished while the call deduplicated against it (retry).
CREATE FUNCTION catbird._cb_insert_flow_runs(
    flow catbird.cb_flows, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_new bigint[];
    v_run bigint;
BEGIN
    -- Bounded inputs (10_names): keys fit the index, times are finite.
    IF concurrency_keys IS NOT NULL OR _cb_insert_flow_runs.visible_at IS NOT NULL OR _cb_insert_flow_runs.expires_at IS NOT NULL THEN
        PERFORM catbird._cb_check_bounds(concurrency_keys, _cb_insert_flow_runs.visible_at, _cb_insert_flow_runs.expires_at);
    END IF;
    IF cardinality(array_remove(concurrency_keys, NULL)) > 0 THEN
        -- Expired runs hold nothing: expire the holders of these keys first.
        FOR v_run IN
            SELECT r.id FROM catbird.cb_flow_runs r
            WHERE r.flow_id = flow.id AND r.concurrency_key = ANY (concurrency_keys)
              AND r.status = 'started' AND r.expires_at <= v_now
              AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.attempts > 0)
            ORDER BY r.id
            FOR UPDATE
        LOOP
            PERFORM catbird._cb_expire_flow_run(v_run);
        END LOOP;
    END IF;
    WITH input AS (
        SELECT u.ord, u.input, u.concurrency_key, u.headers, nextval('catbird.cb_flow_runs_id_seq') AS new_id
        FROM unnest(inputs, concurrency_keys, _cb_insert_flow_runs.headers)
                 WITH ORDINALITY AS u(input, concurrency_key, headers, ord)
    ), inserted AS (
        INSERT INTO catbird.cb_flow_runs (id, flow_id, status, priority, visible_at, created_at, started_at,
                                          expires_at, concurrency_key, input, headers)
        SELECT i.new_id, flow.id, 'started', coalesce(_cb_insert_flow_runs.priority, 0),
               coalesce(_cb_insert_flow_runs.visible_at, v_now), v_now, v_now, _cb_insert_flow_runs.expires_at,
               i.concurrency_key, i.input, i.headers
        FROM input i
        ORDER BY i.new_id
        ON CONFLICT (flow_id, concurrency_key)
            WHERE concurrency_key IS NOT NULL AND status IN ('started', 'canceling')
            DO NOTHING
        RETURNING id, concurrency_key
    ), steps AS (
        INSERT INTO catbird.cb_step_runs (flow_run_id, flow_id, step_name, step_type, status, priority,
                                          deps_remaining, visible_at, created_at)
        SELECT ins.id, flow.id, fs.name, fs.step_type, 'waiting_for_dependencies', coalesce(_cb_insert_flow_runs.priority, 0),
               cardinality(fs.depends_on), coalesce(_cb_insert_flow_runs.visible_at, v_now), v_now
        FROM inserted ins
        CROSS JOIN catbird.cb_flow_steps fs
        WHERE fs.flow_id = flow.id
        ORDER BY ins.id, fs.position  -- step run ids follow the definition order
    )
    SELECT array_agg(coalesce(
               ins.id,
               (SELECT min(dup.id) FROM inserted dup WHERE dup.concurrency_key = i.concurrency_key),
               (SELECT r.id FROM catbird.cb_flow_runs r
                 WHERE r.flow_id = flow.id AND r.concurrency_key = i.concurrency_key
                   AND r.status IN ('started', 'canceling')))
           ORDER BY i.ord),
           array_agg(ins.id ORDER BY i.ord) FILTER (WHERE ins.id IS NOT NULL)
    INTO v_ids, v_new
    FROM input i
    LEFT JOIN inserted ins ON ins.id = i.new_id;

    IF array_position(v_ids, NULL) IS NOT NULL THEN
        -- The key's holder committed after this statement's snapshot was taken:
        -- look again with a fresh snapshot.
        SELECT array_agg(coalesce(v_ids[k.ord], r.id) ORDER BY k.ord)
        INTO v_ids
        FROM unnest(concurrency_keys) WITH ORDINALITY AS k(concurrency_key, ord)
        LEFT JOIN catbird.cb_flow_runs r
               ON r.flow_id = flow.id AND r.concurrency_key = k.concurrency_key
              AND r.status IN ('started', 'canceling') AND v_ids[k.ord] IS NULL;
        IF array_position(v_ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'the flow run holding a concurrency key finished while this call deduplicated against it'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the call.';
        END IF;
    END IF;
    -- started before the advance: a run that ends at once announces its end after.
    PERFORM catbird._cb_notify_runs('catbird.flow.started', 'flow', flow.name, v_new);
    FOREACH v_run IN ARRAY coalesce(v_new, '{}') LOOP
        PERFORM catbird._cb_advance_flow_run(v_run);
    END LOOP;
    RETURN v_ids;
END
$$;

-- Starts one run per input, in one statement; an input whose concurrency key
-- is held by a started or canceling run resolves to that run. Returns the run
-- id of each input, in input order. 42704 for an unknown flow; 22023 for
-- invalid inputs, keys or headers; 40001 as for _cb_insert_flow_runs.
CREATE FUNCTION catbird.cb_run_flow(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_run('flow', cb_run_flow.name, inputs, concurrency_keys, headers, visible_at, priority, expires_at)
$$;

-- Starts a run (see the batch form). Returns its id, or the id of the run
-- holding concurrency_key. 42704 for an unknown flow; 22023 for a SQL NULL
-- input or non-object headers; 40001 as for the batch form.
CREATE FUNCTION catbird.cb_run_flow(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_body('input', 'run input', input, headers);
    RETURN (catbird.cb_run_flow(name, ARRAY[input], ARRAY[concurrency_key], ARRAY[headers],
                                visible_at, priority, expires_at))[1];
END
$$;

-- Binds the flow to a topic pattern: every publish to a matching topic starts
-- a run. Binding twice is a no-op. Returns nothing; 42704 for an unknown flow,
-- 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_bind_flow(name text, pattern text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_bind('flow', cb_bind_flow.name, pattern) $$;

-- Removes a binding of the flow. Returns false when there was none; 42704 for
-- an unknown flow, 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind_flow(name text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('flow', cb_unbind_flow.name, pattern) $$;

-- Delivers a signal (its input) to a step declared with signal: true, which
-- may then run. Returns true when delivered, false when the step already has
-- its signal or is past waiting, or the run is not started. 42704 for an
-- unknown flow, step or run; 22023 for an invalid name or a step without
-- signal.
CREATE FUNCTION catbird.cb_signal_flow(flow_name text, run_id bigint, step_name text, input jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_run catbird.cb_flow_runs;
BEGIN
    IF NOT v_step.signal THEN
        RAISE EXCEPTION 'step "%" of flow "%" does not take a signal', step_name, flow_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Declare the step with "signal": true to let it wait for one.';
    END IF;
    v_run := catbird._cb_lock_flow_run(v_flow, run_id);
    IF v_run.id IS NULL THEN
        RAISE EXCEPTION 'flow "%" has no run %', flow_name, run_id USING ERRCODE = 'undefined_object';
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET signal_received = true, signal_input = coalesce(cb_signal_flow.input, 'null'::jsonb)
    WHERE sr.flow_run_id = run_id AND sr.step_name = cb_signal_flow.step_name AND NOT sr.signal_received
      AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_advance_flow_run(run_id);
    RETURN true;
END
$$;

-- Cancels a run in two phases: waiting and queued work is canceled at once
-- and the run is canceling (catbird.flow.canceling) until its started work
-- reports back or its leases lapse, then canceled. Idempotent. Returns true
-- when the run is canceling or canceled, false when it does not exist or
-- already ended otherwise. 42704 for an unknown flow; 22023 for an invalid
-- name.
CREATE FUNCTION catbird.cb_cancel_flow(name text, run_id bigint, reason text = NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_run catbird.cb_flow_runs := catbird._cb_lock_flow_run(v_flow, run_id);
    v_now timestamptz := catbird.cb_now();
BEGIN
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    IF v_run.status IN ('canceling', 'canceled') THEN
        RETURN true;  -- idempotent
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_flow_runs r
    SET status = 'canceling', cancel_requested_at = v_now, cancel_reason = reason
    WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, false);
    PERFORM catbird._cb_notify_runs('catbird.flow.canceling', 'flow', v_flow.name, ARRAY[run_id]);
    PERFORM catbird._cb_finish_canceling(run_id);
    RETURN true;
END
$$;

-- Completes a started run with output on behalf of step_name (a step
-- handler ending the flow): the step must be started (under attempt, when
-- given) — or, for a mapper or generator, have items in flight
-- (waiting_for_map_tasks, attempt not given) — and completes with it; other
-- work is canceled, catbird.flow.completed is announced. Returns true when the
-- run completed; false, writing nothing, when the run does not exist or is
-- not started, or the step is not started (or under another attempt). 42704
-- for an unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_complete_flow_early(flow_name text, run_id bigint, step_name text, output jsonb,
                                               reason text = NULL, attempt int = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_run catbird.cb_flow_runs;
    v_step_run catbird.cb_step_runs;
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_fail_args(true, attempt);
    v_run := catbird._cb_lock_flow_run(v_flow, run_id);
    IF v_run.id IS NULL OR v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    SELECT * INTO v_step_run FROM catbird.cb_step_runs sr
    WHERE sr.flow_run_id = run_id AND sr.step_name = v_step.name;
    IF NOT (v_step_run.status = 'started' AND (attempt IS NULL OR v_step_run.attempts = attempt)
            OR (v_step_run.status = 'waiting_for_map_tasks' AND attempt IS NULL)) THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null')
    WHERE sr.id = v_step_run.id AND sr.status = 'started';
    UPDATE catbird.cb_flow_runs r
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null'),
        cancel_reason = coalesce(reason, format('completed early by step "%s"', step_name))
    WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, true);
    PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, ARRAY[run_id]);
    RETURN true;
END
$$;

-- Retries a failed run: its failed and canceled step runs (the failure and
-- the work canceled because of it) go back to waiting with attempts 0, their
-- errors, outputs and items cleared, and dependencies counted again; completed
-- and skipped steps keep their state and outputs; the run is started again
-- (errors, failed-step context and on-fail state cleared; an expires_at
-- already passed dropped) and advanced, so ready steps are queued. Returns
-- true when the run was retried; false when it does not exist, is not
-- failed, has no failed or canceled step, or its concurrency key is held by
-- another active run. 42704 for an unknown flow; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_retry_flow_run(name text, run_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_run catbird.cb_flow_runs := catbird._cb_lock_flow_run(v_flow, run_id);
    v_now timestamptz := catbird.cb_now();
    v_reset bigint[];
BEGIN
    IF v_run.id IS NULL OR v_run.status <> 'failed' THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
                   WHERE sr.flow_run_id = run_id AND sr.status IN ('failed', 'canceled')) THEN
        RETURN false;
    END IF;
    IF catbird._cb_key_held('flow', v_flow.id, v_run.concurrency_key) THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE catbird.cb_flow_runs r
        SET status = 'started', failed_at = NULL, error_message = NULL, output = NULL, failed_step_name = NULL,
            failed_step_input = NULL, failed_step_signal_input = NULL, failed_step_attempts = NULL,
            on_fail_status = NULL, on_fail_attempts = 0, on_fail_visible_at = NULL, on_fail_error_message = NULL,
            expires_at = CASE WHEN r.expires_at <= v_now THEN NULL ELSE r.expires_at END, visible_at = v_now
        WHERE r.id = run_id;
    EXCEPTION WHEN unique_violation THEN
        RETURN false;  -- a run holding the key committed meanwhile
    END;
    SELECT array_agg(sr.id) INTO v_reset FROM catbird.cb_step_runs sr
    WHERE sr.flow_run_id = run_id AND sr.status IN ('failed', 'canceled');
    DELETE FROM catbird.cb_map_tasks m WHERE m.step_run_id = ANY (v_reset);
    UPDATE catbird.cb_step_runs sr
    SET status = 'waiting_for_dependencies', attempts = 0, visible_at = v_now, started_at = NULL,
        completed_at = NULL, failed_at = NULL, canceled_at = NULL, error_message = NULL, error_detail = NULL,
        output = NULL, map_total = NULL, map_done = 0, generator_done = false, spawn_attempt = NULL,
        spawn_cursor = 0,
        deps_remaining = (SELECT count(*) FROM catbird.cb_flow_steps fs
                          JOIN catbird.cb_step_runs d ON d.flow_run_id = sr.flow_run_id AND d.step_name = ANY (fs.depends_on)
                          WHERE fs.flow_id = sr.flow_id AND fs.name = sr.step_name
                            AND d.status NOT IN ('completed', 'skipped'))
    WHERE sr.id = ANY (v_reset);
    PERFORM catbird._cb_advance_flow_run(run_id);
    PERFORM catbird._cb_notify_runs('catbird.flow.retried', 'flow', v_flow.name, ARRAY[run_id]);
    RETURN true;
END
$$;

-- Deletes the flow's finished runs (terminal, on-fail handling over) that
-- finished at least older_than ago, with their step runs and map items.
-- Returns how many runs it deleted. 42704 for an unknown flow; 22023 for an
-- invalid name or a NULL or negative older_than.
CREATE FUNCTION catbird.cb_purge_flow_runs(name text, older_than interval) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_purge_runs('flow', cb_purge_flow_runs.name, older_than) $$;

-- Deletes every run of the flow whatever its status, with its step runs and
-- map items; in-flight work is lost (workers' later reports find nothing and
-- are refused). Returns how many runs it deleted. 42704 for an unknown flow;
-- 22023 for an invalid name.
CREATE FUNCTION catbird.cb_clear_flow_runs(name text) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_clear_runs('flow', catbird._cb_definition_id('flow', cb_clear_flow_runs.name)) $$;

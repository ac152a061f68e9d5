-- catbird 52_flow_dispatch: moving flow runs forward.
--
-- Owns: the internal transitions every flow verb shares: step outputs as
-- consumers see them, dependency resolution, _cb_advance_flow_run (skip, wait
-- for signal, fan out, queue; finish the run), failing and cancelling a run's
-- open work, failing lapsed work past its attempts (_cb_fail_lapsed_work),
-- _cb_lock_flow_run. Writes cb_flow_runs, cb_step_runs and
-- cb_map_tasks; callers hold the flow run's row lock.
-- Guarantees:
--   * Conditions are evaluated here, when a step becomes ready, never by a
--     worker: a skipped step needs no worker and resolves its dependents.
--   * A run completes with the output of the first completed step of its
--     output_priority, or fails with a clear error when none completed.
--   * Mapping over a value that is not an array fails that step and the run.

-- The output of a finished step as its consumers see it: mapper and generator
-- outputs are their item outputs in item order. Raises nothing.
CREATE FUNCTION catbird._cb_step_output(step_run_id bigint, step_type text, stored jsonb) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN step_type IN ('mapper', 'generator') THEN
                    (SELECT coalesce(jsonb_agg(m.output ORDER BY m.idx), '[]')
                     FROM catbird.cb_map_tasks m WHERE m.step_run_id = $1)
                ELSE stored END
$$;

-- Outputs of a step's completed dependencies, keyed by step name, without
-- ignore_output ones and without a reducer's source (read page by page).
-- Returns a jsonb object ({} for none); raises nothing.
CREATE FUNCTION catbird._cb_dependency_outputs(flow_run_id bigint, step catbird.cb_flow_steps) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(jsonb_object_agg(d.step_name, catbird._cb_step_output(d.id, d.step_type, d.output)), '{}')
    FROM catbird.cb_step_runs d
    WHERE d.flow_run_id = $1
      AND d.step_name = ANY (step.depends_on)
      AND NOT d.step_name = ANY (step.ignore_output)
      AND d.step_name IS DISTINCT FROM step.reduce_source
      AND d.status = 'completed'
$$;

-- Marks a step resolved (completed or skipped): its dependents need one
-- dependency less. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_resolve_dependents(flow_run_id bigint, flow_id int, step_name text) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    UPDATE catbird.cb_step_runs sr
    SET deps_remaining = sr.deps_remaining - 1
    FROM catbird.cb_flow_steps fs
    WHERE sr.flow_run_id = $1 AND fs.flow_id = $2 AND fs.name = sr.step_name
      AND $3 = ANY (fs.depends_on)
$$;

-- Ends a run's work: waiting and queued step runs and queued items are
-- canceled, started ones too with include_started (workers' later reports
-- are refused because their step is no longer started). Raises nothing.
CREATE FUNCTION catbird._cb_cancel_open_work(flow_run_id bigint, include_started boolean) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = v_now
    WHERE sr.flow_run_id = _cb_cancel_open_work.flow_run_id
      AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal', 'waiting_for_map_tasks', 'queued')
          OR (sr.flow_run_id = _cb_cancel_open_work.flow_run_id AND include_started AND sr.status = 'started');
    UPDATE catbird.cb_map_tasks m SET status = 'canceled'
    WHERE m.flow_run_id = _cb_cancel_open_work.flow_run_id
      AND (m.status = 'queued' OR (include_started AND m.status = 'started'));
END
$$;

-- Fails a flow run because of step_name (NULL: no output candidate): records
-- the error and the failed step's input, signal input and attempts, queues
-- on-fail handling (for every failed run, whatever the flow's flags), cancels
-- all open work and announces catbird.flow.failed. Returns nothing; raises
-- nothing.
CREATE FUNCTION catbird._cb_fail_flow_run(flow_run_id bigint, step_name text, error_message text,
                                          step_input jsonb, signal_input jsonb, step_attempts int)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    UPDATE catbird.cb_flow_runs r
    SET status = 'failed', failed_at = v_now, error_message = _cb_fail_flow_run.error_message,
        failed_step_name = step_name, failed_step_input = step_input, failed_step_signal_input = signal_input,
        failed_step_attempts = step_attempts,
        on_fail_status = 'queued', on_fail_visible_at = v_now
    WHERE r.id = flow_run_id;
    PERFORM catbird._cb_cancel_open_work(flow_run_id, true);
    PERFORM catbird._cb_notify_flow_run('catbird.flow.failed', flow_run_id);
END
$$;

-- Moves a run forward after any change: steps whose dependencies are resolved
-- are skipped (condition false), parked for their signal, fanned out (mapper)
-- or queued; repeats while skips and empty maps resolve further steps; then
-- completes (or fails) the run when every step is completed or skipped.
-- Returns nothing; a mapper over a non-array fails the run, it does not raise.
CREATE FUNCTION catbird._cb_advance_flow_run(flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_run catbird.cb_flow_runs;
    v_flow catbird.cb_flows;
    v_step record;
    v_now timestamptz := catbird.cb_now();
    v_progress boolean;
    v_context jsonb;
    v_items jsonb;
    v_output jsonb;
    v_output_step text;
BEGIN
    SELECT * INTO v_run FROM catbird.cb_flow_runs r WHERE r.id = flow_run_id;
    IF v_run.status <> 'started' THEN
        RETURN;
    END IF;
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.id = v_run.flow_id;
    LOOP
        v_progress := false;
        FOR v_step IN
            SELECT sr.id, sr.signal_received, sr.signal_input, sr.status, fs
            FROM catbird.cb_step_runs sr
            JOIN catbird.cb_flow_steps fs ON fs.flow_id = sr.flow_id AND fs.name = sr.step_name
            WHERE sr.flow_run_id = _cb_advance_flow_run.flow_run_id
              AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal')
              AND sr.deps_remaining = 0
            ORDER BY fs.position
        LOOP
            IF (v_step.fs).signal AND NOT v_step.signal_received THEN
                IF v_step.status <> 'waiting_for_signal' THEN
                    UPDATE catbird.cb_step_runs sr SET status = 'waiting_for_signal' WHERE sr.id = v_step.id;
                END IF;
                CONTINUE;
            END IF;
            v_context := NULL;
            IF (v_step.fs).condition_expr IS NOT NULL OR (v_step.fs).map_source IS NOT NULL THEN
                v_context := catbird._cb_dependency_outputs(flow_run_id, v_step.fs)
                             || jsonb_build_object('input', v_run.input)
                             || CASE WHEN v_step.signal_received
                                     THEN jsonb_build_object('signal', v_step.signal_input) ELSE '{}' END;
            END IF;
            IF NOT catbird._cb_eval_condition((v_step.fs).condition_expr, v_context) THEN
                UPDATE catbird.cb_step_runs sr SET status = 'skipped', skipped_at = v_now WHERE sr.id = v_step.id;
                PERFORM catbird._cb_resolve_dependents(flow_run_id, v_run.flow_id, (v_step.fs).name);
                v_progress := true;
                CONTINUE;
            END IF;
            IF (v_step.fs).step_type = 'mapper' THEN
                v_items := CASE WHEN (v_step.fs).map_source IS NULL THEN v_run.input
                                ELSE v_context -> (v_step.fs).map_source END;
                IF v_items IS NULL OR jsonb_typeof(v_items) <> 'array' THEN
                    UPDATE catbird.cb_step_runs sr
                    SET status = 'failed', failed_at = v_now,
                        error_message = format('mapper step "%s" maps over %s, which is %s, not an array',
                                               (v_step.fs).name,
                                               coalesce('the output of step "' || (v_step.fs).map_source || '"', 'the flow input'),
                                               coalesce(jsonb_typeof(v_items), 'absent'))
                    WHERE sr.id = v_step.id
                    RETURNING sr.error_message INTO v_output_step;
                    PERFORM catbird._cb_fail_flow_run(flow_run_id, (v_step.fs).name, v_output_step,
                                                      v_items, v_step.signal_input, 0);
                    RETURN;
                END IF;
                INSERT INTO catbird.cb_map_tasks (step_run_id, flow_run_id, flow_id, idx, priority, step_name,
                                                  status, visible_at, created_at, item)
                SELECT v_step.id, flow_run_id, v_run.flow_id, (e.ord - 1)::int, v_run.priority, (v_step.fs).name,
                       'queued', greatest(v_now, v_run.visible_at), v_now, e.item
                FROM jsonb_array_elements(v_items) WITH ORDINALITY AS e(item, ord);
                IF jsonb_array_length(v_items) = 0 THEN
                    UPDATE catbird.cb_step_runs sr SET status = 'completed', completed_at = v_now, map_total = 0
                    WHERE sr.id = v_step.id;
                    PERFORM catbird._cb_resolve_dependents(flow_run_id, v_run.flow_id, (v_step.fs).name);
                    v_progress := true;
                ELSE
                    UPDATE catbird.cb_step_runs sr
                    SET status = 'waiting_for_map_tasks', map_total = jsonb_array_length(v_items)
                    WHERE sr.id = v_step.id;
                    PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', (v_step.fs).name)::text);
                END IF;
                CONTINUE;
            END IF;
            UPDATE catbird.cb_step_runs sr SET status = 'queued', visible_at = greatest(v_now, v_run.visible_at)
            WHERE sr.id = v_step.id;
            PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', (v_step.fs).name)::text);
        END LOOP;
        EXIT WHEN NOT v_progress;
    END LOOP;

    IF EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
               WHERE sr.flow_run_id = _cb_advance_flow_run.flow_run_id
                 AND sr.status NOT IN ('completed', 'skipped')) THEN
        RETURN;
    END IF;
    SELECT p.name, catbird._cb_step_output(sr.id, sr.step_type, sr.output)
    INTO v_output_step, v_output
    FROM unnest(v_flow.output_priority) WITH ORDINALITY AS p(name, ord)
    JOIN catbird.cb_step_runs sr ON sr.flow_run_id = _cb_advance_flow_run.flow_run_id AND sr.step_name = p.name
    WHERE sr.status = 'completed'
    ORDER BY p.ord
    LIMIT 1;
    IF v_output_step IS NULL THEN
        PERFORM catbird._cb_fail_flow_run(flow_run_id, NULL,
            format('no output candidate produced output: none of the steps %s completed (all were skipped)',
                   array_to_string(v_flow.output_priority, ', ')),
            NULL, NULL, NULL);
        RETURN;
    END IF;
    UPDATE catbird.cb_flow_runs r SET status = 'completed', completed_at = v_now, output = v_output
    WHERE r.id = flow_run_id;
    PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, ARRAY[flow_run_id]);
END
$$;

-- A canceling run becomes canceled (announcing catbird.flow.canceled) once no
-- step or item is started any more. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_finish_canceling(flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_flow_runs r SET status = 'canceled', canceled_at = catbird.cb_now()
    WHERE r.id = flow_run_id AND r.status = 'canceling'
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.status = 'started')
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_map_tasks m WHERE m.flow_run_id = r.id AND m.status = 'started');
    IF FOUND THEN
        PERFORM catbird._cb_notify_flow_run('catbird.flow.canceled', flow_run_id);
    END IF;
END
$$;

-- A worker's report (complete or fail) for a started step of a canceling run:
-- the step is canceled, keeping error_message when one is given, and the run
-- becomes canceled if that was its last started work. Returns nothing;
-- raises nothing.
CREATE FUNCTION catbird._cb_cancel_reported_step(flow_run_id bigint, step_run_id bigint, error_message text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_step_runs sr
    SET status = 'canceled', canceled_at = catbird.cb_now(),
        error_message = coalesce(_cb_cancel_reported_step.error_message, sr.error_message)
    WHERE sr.id = step_run_id;
    PERFORM catbird._cb_finish_canceling(flow_run_id);
END
$$;

-- Locks a run of the flow for a transition (FOR UPDATE) and returns it; all
-- fields NULL when the flow has no such run. Raises nothing.
CREATE FUNCTION catbird._cb_lock_flow_run(flow catbird.cb_flows, flow_run_id bigint) RETURNS catbird.cb_flow_runs
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird.cb_flow_runs r WHERE r.id = flow_run_id AND r.flow_id = flow.id FOR UPDATE
$$;

-- Fails the lapsed work of one step of a flow that used its attempts (see
-- _cb_lease_cap with the step's max_retries): step runs (kind 'step') or map
-- items (kind 'item') still started, lease lapsed, in started flow runs. Each
-- fails with a "lease expired" error, and its flow run with it (on-fail
-- queued). Called by claims before they claim, holding no row lock, and by
-- cb_gc; a flow run locked by another transaction is skipped (the next claim
-- or cb_gc gets it). At most lim. Returns how many it failed; raises nothing.
CREATE FUNCTION catbird._cb_fail_lapsed_work(step catbird.cb_flow_steps, kind text, now timestamptz, lim int = 100)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_cap int := catbird._cb_lease_cap(step.max_retries);
    v_candidate record;
    v_run catbird.cb_flow_runs;
    v_step_run catbird.cb_step_runs;
    v_item catbird.cb_map_tasks;
    v_error text;
    v_count int := 0;
BEGIN
    FOR v_candidate IN
        SELECT x.id, x.flow_run_id FROM catbird.cb_step_runs x
        WHERE kind = 'step' AND x.flow_id = step.flow_id AND x.step_name = step.name
          AND x.status = 'started' AND x.visible_at <= now AND x.attempts >= v_cap
        UNION ALL
        SELECT x.id, x.flow_run_id FROM catbird.cb_map_tasks x
        WHERE kind = 'item' AND x.flow_id = step.flow_id AND x.step_name = step.name
          AND x.status = 'started' AND x.visible_at <= now AND x.attempts >= v_cap
        ORDER BY 2, 1
        LIMIT lim
    LOOP
        -- Lock order is flow run, then its parts; never wait for a run here.
        SELECT * INTO v_run FROM catbird.cb_flow_runs r
        WHERE r.id = v_candidate.flow_run_id AND r.status = 'started'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN v_run.id IS NULL;
        IF kind = 'step' THEN
            UPDATE catbird.cb_step_runs sr
            SET status = 'failed', failed_at = now, error_message = catbird._cb_lease_expired_error(sr.attempts),
                error_detail = NULL
            WHERE sr.id = v_candidate.id AND sr.status = 'started' AND sr.visible_at <= now AND sr.attempts >= v_cap
            RETURNING sr.* INTO v_step_run;
            CONTINUE WHEN v_step_run.id IS NULL;
            PERFORM catbird._cb_fail_flow_run(v_run.id, step.name, v_step_run.error_message, v_run.input,
                                              v_step_run.signal_input, v_step_run.attempts);
        ELSE
            UPDATE catbird.cb_map_tasks m
            SET status = 'failed', failed_at = now, error_message = catbird._cb_lease_expired_error(m.attempts),
                error_detail = NULL
            WHERE m.id = v_candidate.id AND m.status = 'started' AND m.visible_at <= now AND m.attempts >= v_cap
            RETURNING m.* INTO v_item;
            CONTINUE WHEN v_item.id IS NULL;
            v_error := format('item %s failed: %s', v_item.idx, v_item.error_message);
            UPDATE catbird.cb_step_runs sr SET status = 'failed', failed_at = now, error_message = v_error
            WHERE sr.id = v_item.step_run_id
            RETURNING sr.* INTO v_step_run;
            PERFORM catbird._cb_fail_flow_run(v_run.id, step.name, v_error, v_item.item,
                                              v_step_run.signal_input, v_item.attempts);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- catbird 55_flow_items: the worker protocol for map items, generators and reducers.
--
-- Owns: cb_claim_map_tasks, cb_hide_map_tasks, _cb_maybe_complete_map_step,
-- cb_complete_map_tasks, cb_fail_map_task, cb_spawn_generator_map_tasks,
-- cb_complete_generator_step and cb_fail_generator_step (over
-- _cb_end_generator), cb_read_map_outputs.
-- Writes cb_map_tasks and cb_step_runs.
-- Guarantees:
--   * Items are claimed, fenced, retried and canceled like step runs (see
--     54_flow_steps), each item independently.
--   * A mapper or generator step completes when all its items are done (and
--     a generator's handler has finished); its output is its item outputs in
--     item order, assembled on read, never stored as one array.
--   * Generators add items only while their step run is started, and under
--     the claim's attempt when they give it: a stale generator writes nothing.
--   * Generator items are keyed by their index within the step: a resumed
--     generator that produces its items again (under its attempt, or with an
--     explicit start_index) adds none twice.
--   * A claim first fails the step's lapsed items that used their attempts
--     (_cb_fail_lapsed_work); a failure uses the step's stored policy when
--     the call gives none.
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).

-- Claims up to quantity items of a mapper or generator step, like
-- cb_claim_steps: each claim increments the item's attempts and holds it for
-- hide_for ms. Returns the claims (item, flow input, dependency outputs
-- without the map source, signal input) by priority, then id. with_input /
-- with_outputs false: the claim leaves input / step_outputs NULL, for item
-- handlers that do not take them (a mapper over a large flow input would
-- otherwise ship that input with every item). Lapsed items that used their
-- attempts are failed first (see _cb_fail_lapsed_work). 42704 for an unknown
-- flow or step; 22023 for an invalid name, quantity < 1 or hide_for < 1.
CREATE FUNCTION catbird.cb_claim_map_tasks(flow_name text, step_name text, quantity int, hide_for int,
                                           with_input boolean = true, with_outputs boolean = true)
RETURNS TABLE (id bigint, flow_run_id bigint, attempts int, input jsonb, step_outputs jsonb,
               signal_input jsonb, item jsonb)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_now timestamptz;
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    v_now := catbird.cb_now();
    PERFORM catbird._cb_fail_lapsed_work(v_step, 'item', v_now);
    RETURN QUERY
    WITH candidates AS (
        SELECT m.id
        FROM catbird.cb_map_tasks m
        JOIN catbird.cb_flow_runs r ON r.id = m.flow_run_id
        WHERE m.flow_id = v_flow.id AND m.step_name = v_step.name
          AND m.status IN ('queued', 'started') AND m.visible_at <= v_now
          AND r.status = 'started'
        ORDER BY m.priority DESC, m.visible_at, m.id
        LIMIT quantity
        FOR UPDATE OF m SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_map_tasks m
        SET status = 'started', attempts = m.attempts + 1, started_at = v_now,
            visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c
        WHERE m.id = c.id
        RETURNING m.id, m.flow_run_id, m.step_run_id, m.attempts, m.item, m.priority
    ), runs AS (
        -- Dependency outputs once per flow run, not once per item.
        SELECT DISTINCT ON (c.flow_run_id) c.flow_run_id, CASE WHEN with_input THEN r.input END AS input,
               sr.signal_input,
               CASE WHEN with_outputs THEN
                   catbird._cb_dependency_outputs(c.flow_run_id, v_step) - coalesce(v_step.map_source, '')
               END AS outputs
        FROM claimed c
        JOIN catbird.cb_flow_runs r ON r.id = c.flow_run_id
        JOIN catbird.cb_step_runs sr ON sr.id = c.step_run_id
    )
    SELECT c.id, c.flow_run_id, c.attempts, x.input, x.outputs, x.signal_input, c.item
    FROM claimed c JOIN runs x ON x.flow_run_id = c.flow_run_id
    ORDER BY c.priority DESC, c.id;
END
$$;

-- Lease renewal for items, as cb_hide_steps. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name, hide_for < 1 or attempts
-- of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_map_tasks(flow_name text, step_name text, ids bigint[], hide_for int,
                                          attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    UPDATE catbird.cb_map_tasks m
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_map_tasks.attempts) AS u(id, attempt)
    WHERE m.flow_id = v_flow.id AND m.step_name = cb_hide_map_tasks.step_name
      AND m.id = u.id AND m.id = ANY (ids) AND m.status = 'started'
      AND (u.attempt IS NULL OR m.attempts = u.attempt);
END
$$;

-- A mapper or generator step whose items are all done (and, for a
-- generator, whose handler has finished) is completed, and its run advanced.
-- Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_maybe_complete_map_step(step_run_id bigint, flow_id int) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_step_run catbird.cb_step_runs;
BEGIN
    UPDATE catbird.cb_step_runs sr SET status = 'completed', completed_at = catbird.cb_now()
    WHERE sr.id = step_run_id
      AND sr.status IN ('waiting_for_map_tasks', 'started')
      AND sr.map_done = sr.map_total
      AND (sr.step_type = 'mapper' OR sr.generator_done)
    RETURNING sr.* INTO v_step_run;
    IF v_step_run.id IS NOT NULL THEN
        PERFORM catbird._cb_resolve_dependents(v_step_run.flow_run_id, flow_id, v_step_run.step_name);
        PERFORM catbird._cb_advance_flow_run(v_step_run.flow_run_id);
    END IF;
END
$$;

-- Completes started items (under the given attempts, when given) with their
-- outputs, one flow run at a time (runs locked in id order); a step whose
-- items are all done completes. Items of canceling runs are canceled.
-- Returns nothing; stale items are left out. 42704 for an unknown flow or
-- step; 22023 for an invalid name or arrays of different lengths.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_map_tasks(flow_name text, step_name text, ids bigint[], outputs jsonb[],
                                              attempts int[] = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_run record;
    v_step_runs bigint[];
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    IF cardinality(ids) IS DISTINCT FROM cardinality(outputs)
       OR (attempts IS NOT NULL AND cardinality(attempts) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'invalid arguments: ids, outputs (and attempts, when given) must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- One transition per flow run, runs locked in id order.
    FOR v_run IN
        SELECT r.id, r.status FROM catbird.cb_flow_runs r
        WHERE r.id IN (SELECT m.flow_run_id FROM catbird.cb_map_tasks m
                       WHERE m.id = ANY (ids) AND m.flow_id = v_flow.id AND m.step_name = cb_complete_map_tasks.step_name)
        ORDER BY r.id
        FOR UPDATE
    LOOP
        IF v_run.status = 'canceling' THEN
            UPDATE catbird.cb_map_tasks m SET status = 'canceled'
            WHERE m.flow_run_id = v_run.id AND m.id = ANY (ids) AND m.status = 'started';
            PERFORM catbird._cb_finish_canceling(v_run.id);
            CONTINUE;
        END IF;
        WITH done AS (
            UPDATE catbird.cb_map_tasks m
            SET status = 'completed', completed_at = v_now, output = coalesce(u.output, 'null'), error_message = NULL,
                error_detail = NULL
            FROM unnest(ids, outputs, cb_complete_map_tasks.attempts) AS u(id, output, attempt)
            WHERE m.id = u.id AND m.id = ANY (ids) AND m.flow_run_id = v_run.id AND m.status = 'started'
              AND (u.attempt IS NULL OR m.attempts = u.attempt)
            RETURNING m.step_run_id
        ), counted AS (
            UPDATE catbird.cb_step_runs sr SET map_done = sr.map_done + d.n
            FROM (SELECT done.step_run_id, count(*) AS n FROM done GROUP BY done.step_run_id) d
            WHERE sr.id = d.step_run_id
            RETURNING sr.id
        )
        SELECT array_agg(c.id) INTO v_step_runs FROM counted c;
        PERFORM catbird._cb_maybe_complete_map_step(sr_id, v_flow.id) FROM unnest(v_step_runs) AS sr_id;
    END LOOP;
END
$$;

-- Records a failure of a started item (under attempt, when given): re-queued
-- with a full-jitter delay while attempts <= max_retries and retryable, else
-- the item, its step and the flow run fail. Policy arguments left NULL come
-- from the step's stored policy; error_detail is stored beside error_message
-- (on the item, and on its step when the flow fails). Returns 'queued',
-- 'failed', or NULL for a stale call or a canceling run. 42704 for an unknown
-- flow or step; 22023 for an invalid name, retry policy or a NULL retryable.
CREATE FUNCTION catbird.cb_fail_map_task(flow_name text, step_name text, id bigint, error_message text,
                                         attempt int = NULL, max_retries int = NULL, backoff_min int = NULL,
                                         backoff_max int = NULL, retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_policy record;
    v_run catbird.cb_flow_runs;
    v_task catbird.cb_map_tasks;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_map_task.error_message, 'unknown error');
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_step.max_retries, v_step.backoff_min, v_step.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
    SELECT * INTO v_run FROM catbird.cb_flow_runs r
    WHERE r.id = (SELECT m.flow_run_id FROM catbird.cb_map_tasks m
                  WHERE m.id = cb_fail_map_task.id AND m.flow_id = v_flow.id AND m.step_name = cb_fail_map_task.step_name)
    FOR UPDATE;
    SELECT * INTO v_task FROM catbird.cb_map_tasks m WHERE m.id = cb_fail_map_task.id AND m.flow_run_id = v_run.id;
    IF v_task.status IS DISTINCT FROM 'started' OR (attempt IS NOT NULL AND v_task.attempts <> attempt) THEN
        RETURN NULL;
    END IF;
    IF v_run.status = 'canceling' THEN
        UPDATE catbird.cb_map_tasks m SET status = 'canceled', error_message = v_error WHERE m.id = v_task.id;
        PERFORM catbird._cb_finish_canceling(v_run.id);
        RETURN NULL;
    END IF;
    IF retryable AND v_task.attempts <= v_policy.max_retries_out THEN
        UPDATE catbird.cb_map_tasks m
        SET status = 'queued', error_message = v_error, error_detail = cb_fail_map_task.error_detail,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(
                             m.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
        WHERE m.id = v_task.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_map_tasks m
    SET status = 'failed', failed_at = v_now, error_message = v_error, error_detail = cb_fail_map_task.error_detail
    WHERE m.id = v_task.id;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = v_now,
        error_message = format('item %s failed: %s', v_task.idx, v_error), error_detail = cb_fail_map_task.error_detail
    WHERE sr.id = v_task.step_run_id;
    PERFORM catbird._cb_fail_flow_run(v_run.id, step_name, format('item %s failed: %s', v_task.idx, v_error),
                                      v_task.item,
                                      (SELECT sr.signal_input FROM catbird.cb_step_runs sr WHERE sr.id = v_task.step_run_id),
                                      v_task.attempts);
    RETURN 'failed';
END
$$;

-- A generator's handler, while running (its step run started, under attempt
-- when given), adds items (queued at visible_at, default now). Items are
-- keyed by their index within the step: the first of this call's items has
-- index start_index when given (at most the number of items the step has,
-- so there is no gap); else, with attempt, the number of items this attempt
-- has spawned so far (a resumed generator starts again at 0); else the
-- number of items the step has (append). Items whose index the step already
-- has are not added again. Returns how many of the call's items the step now
-- has (added now or before); 0 when the call is stale (attempt no longer
-- current) or the step run or flow run is no longer started, and then
-- nothing is written. 42704 for an unknown flow or step; 22023 for an invalid
-- name, a step that is not a generator, items that are not a JSON array,
-- attempt < 1, start_index < 0 or past the step's items, an infinite
-- visible_at.
CREATE FUNCTION catbird.cb_spawn_generator_map_tasks(flow_name text, step_name text, id bigint, items jsonb,
                                                     visible_at timestamptz = NULL, attempt int = NULL,
                                                     start_index int = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_locked record;
    v_now timestamptz := catbird.cb_now();
    v_count int;
    v_base int;
    v_added int;
BEGIN
    IF v_step.step_type <> 'generator' THEN
        RAISE EXCEPTION 'step "%" of flow "%" is not a generator', step_name, flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'invalid items: expected a JSON array of items' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('visible_at', visible_at);
    PERFORM catbird._cb_check_fail_args(true, attempt);
    IF start_index IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('start_index', start_index, 0);
    END IF;
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started' OR (v_locked.run).status <> 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN 0;  -- the run was canceled or finished meanwhile, or a newer attempt holds the step
    END IF;
    v_base := CASE WHEN start_index IS NOT NULL THEN start_index
                   WHEN attempt IS NOT NULL THEN
                       CASE WHEN (v_locked.step_run).spawn_attempt = attempt THEN (v_locked.step_run).spawn_cursor ELSE 0 END
                   ELSE coalesce((v_locked.step_run).map_total, 0) END;
    IF v_base > coalesce((v_locked.step_run).map_total, 0) THEN
        RAISE EXCEPTION 'invalid start_index %: the step has % item(s), so the next one has index %',
            start_index, coalesce((v_locked.step_run).map_total, 0), coalesce((v_locked.step_run).map_total, 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_count := jsonb_array_length(items);
    INSERT INTO catbird.cb_map_tasks (step_run_id, flow_run_id, flow_id, idx, priority, step_name, status,
                                      visible_at, created_at, item)
    SELECT cb_spawn_generator_map_tasks.id, (v_locked.run).id, v_flow.id,
           v_base + (e.ord - 1)::int, (v_locked.step_run).priority,
           step_name, 'queued', coalesce(cb_spawn_generator_map_tasks.visible_at, v_now), v_now, e.item
    FROM jsonb_array_elements(items) WITH ORDINALITY AS e(item, ord)
    ORDER BY e.ord
    ON CONFLICT (step_run_id, idx) DO NOTHING;
    GET DIAGNOSTICS v_added = ROW_COUNT;
    UPDATE catbird.cb_step_runs sr
    SET map_total = greatest(coalesce(sr.map_total, 0), v_base + v_count),
        spawn_attempt = coalesce(attempt, sr.spawn_attempt),
        spawn_cursor = CASE WHEN attempt IS NOT NULL THEN v_base + v_count ELSE sr.spawn_cursor END
    WHERE sr.id = cb_spawn_generator_map_tasks.id;
    IF v_added > 0 THEN
        PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', flow_name, 'step', step_name)::text);
    END IF;
    RETURN v_count;
END
$$;

-- cb_complete_generator_step / cb_fail_generator_step: records that a
-- generator's handler finished (failed false: the step completes once all its
-- items are done) or failed (the step and the flow run fail, no retry, with
-- error_message and error_detail stored on the step), under attempt when
-- given. A stale call (step not started, or another attempt) writes nothing;
-- for a canceling run the step is canceled. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird._cb_end_generator(flow_name text, step_name text, id bigint, attempt int, failed boolean,
                                          error_message text = NULL, error_detail text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_report record;
    v_error text := coalesce(_cb_end_generator.error_message, 'unknown error');
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_fail_args(true, attempt);
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt);
    IF v_report.run_id IS NULL THEN
        RETURN;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF NOT failed THEN
        UPDATE catbird.cb_step_runs sr
        SET generator_done = true, status = 'waiting_for_map_tasks', map_total = coalesce(sr.map_total, 0)
        WHERE sr.id = _cb_end_generator.id;
        PERFORM catbird._cb_maybe_complete_map_step(id, v_flow.id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = catbird.cb_now(), error_message = v_error,
        error_detail = _cb_end_generator.error_detail
    WHERE sr.id = _cb_end_generator.id;
    PERFORM catbird._cb_fail_flow_run(v_report.run_id, step_name, v_error, v_report.run_input,
                                      v_report.signal_input, v_report.attempts);
END
$$;

-- Records that a generator's handler has finished (under attempt, when
-- given): the step completes once all its items are done. A stale call (step
-- not started, or another attempt) writes nothing; for a canceling run the
-- step is canceled. Returns nothing. 42704 for an unknown flow or step; 22023
-- for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_complete_generator_step(flow_name text, step_name text, id bigint, attempt int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_end_generator(flow_name, step_name, id, attempt, failed => false) $$;

-- Records that a generator's handler failed (under attempt, when given): the
-- step and the flow run fail (no retry), with error_detail stored on the
-- step. A stale call (step not started, or another attempt) writes nothing;
-- for a canceling run the step is canceled. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_fail_generator_step(flow_name text, step_name text, id bigint, error_message text,
                                               attempt int = NULL, error_detail text = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_generator(flow_name, step_name, id, attempt, failed => true,
                                     error_message => error_message, error_detail => error_detail)
$$;

-- Item outputs of a mapper or generator step of a run, in item order, a page
-- at a time (for reducers, which fold them without building one array):
-- completed items after after_idx, at most lim. Returns (idx, output) rows.
-- 42704 for an unknown flow or step; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird.cb_read_map_outputs(flow_name text, run_id bigint, step_name text,
                                            after_idx int = -1, lim int = 1000)
RETURNS TABLE (idx int, output jsonb)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY
    SELECT m.idx, m.output
    FROM catbird.cb_step_runs sr
    JOIN catbird.cb_map_tasks m ON m.step_run_id = sr.id
    WHERE sr.flow_run_id = run_id AND sr.flow_id = v_flow.id AND sr.step_name = cb_read_map_outputs.step_name
      AND m.idx > after_idx AND m.status = 'completed'
    ORDER BY m.idx
    LIMIT lim;
END
$$;

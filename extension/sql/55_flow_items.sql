-- catbird 55_flow_items: the worker protocol for map items, generators and reducers.
--
-- Owns: cb_claim_map_tasks, cb_hide_map_tasks, _cb_maybe_complete_map_step,
-- cb_complete_map_tasks, cb_fail_map_task, cb_spawn_generator_map_tasks,
-- cb_complete_generator_step, cb_fail_generator_step, cb_read_map_outputs.
-- Writes cb_map_tasks and cb_step_runs.
-- Guarantees:
--   * Items are claimed, fenced, retried and canceled like step runs (see
--     54_flow_steps), each item independently.
--   * A mapper or generator step completes when all its items are done (and
--     a generator's handler has finished); its output is its item outputs in
--     item order, assembled on read, never stored as one array.
--   * Generators add items only while their step run is started.

-- Claims up to quantity items of a mapper or generator step, like
-- cb_claim_steps: each claim increments the item's attempts and holds it for
-- hide_for ms. Returns the claims (item, flow input, dependency outputs
-- without the map source, signal input) by priority, then id. with_input /
-- with_outputs false: the claim leaves input / step_outputs NULL, for item
-- handlers that do not take them (a mapper over a large flow input would
-- otherwise ship that input with every item). 42704 for an unknown flow or
-- step; 22023 for an invalid name, quantity < 1 or hide_for < 1.
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
CREATE FUNCTION catbird.cb_hide_map_tasks(flow_name text, step_name text, ids bigint[], hide_for int,
                                          attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
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
CREATE FUNCTION catbird.cb_complete_map_tasks(flow_name text, step_name text, ids bigint[], outputs jsonb[],
                                              attempts int[] = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
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
            SET status = 'completed', completed_at = v_now, output = coalesce(u.output, 'null'), error_message = NULL
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
-- with a full-jitter delay while attempts <= max_retries, else the item, its
-- step and the flow run fail. Returns 'queued', 'failed', or NULL for a
-- stale call or a canceling run. 42704 for an unknown flow or step; 22023 for
-- an invalid name or retry policy.
CREATE FUNCTION catbird.cb_fail_map_task(flow_name text, step_name text, id bigint, error_message text,
                                         attempt int = NULL, max_retries int = 0, backoff_min int = 100,
                                         backoff_max int = 2000)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_run catbird.cb_flow_runs;
    v_task catbird.cb_map_tasks;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_map_task.error_message, 'unknown error');
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_retry_policy(max_retries, backoff_min, backoff_max);
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
    IF v_task.attempts <= max_retries THEN
        UPDATE catbird.cb_map_tasks m
        SET status = 'queued', error_message = v_error,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(m.attempts, backoff_min, backoff_max) / 1000.0)
        WHERE m.id = v_task.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_map_tasks m SET status = 'failed', failed_at = v_now, error_message = v_error WHERE m.id = v_task.id;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = v_now,
        error_message = format('item %s failed: %s', v_task.idx, v_error)
    WHERE sr.id = v_task.step_run_id;
    PERFORM catbird._cb_fail_flow_run(v_run.id, step_name, format('item %s failed: %s', v_task.idx, v_error),
                                      v_task.item,
                                      (SELECT sr.signal_input FROM catbird.cb_step_runs sr WHERE sr.id = v_task.step_run_id),
                                      v_task.attempts);
    RETURN 'failed';
END
$$;

-- A generator's handler, while running (its step run started), adds items
-- (queued at visible_at, default now). Returns how many it added; 0 when the
-- step run or flow run is no longer started. 42704 for an unknown flow or
-- step; 22023 for an invalid name, a step that is not a generator, items
-- that are not a JSON array or an infinite visible_at.
CREATE FUNCTION catbird.cb_spawn_generator_map_tasks(flow_name text, step_name text, id bigint, items jsonb,
                                                     visible_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_locked record;
    v_now timestamptz := catbird.cb_now();
    v_count int;
BEGIN
    IF v_step.step_type <> 'generator' THEN
        RAISE EXCEPTION 'step "%" of flow "%" is not a generator', step_name, flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'invalid items: expected a JSON array of items' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('visible_at', visible_at);
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started' OR (v_locked.run).status <> 'started' THEN
        RETURN 0;  -- the run was canceled or finished meanwhile
    END IF;
    INSERT INTO catbird.cb_map_tasks (step_run_id, flow_run_id, flow_id, idx, priority, step_name, status,
                                      visible_at, created_at, item)
    SELECT cb_spawn_generator_map_tasks.id, (v_locked.run).id, v_flow.id,
           coalesce((v_locked.step_run).map_total, 0) + (e.ord - 1)::int, (v_locked.step_run).priority,
           step_name, 'queued', coalesce(cb_spawn_generator_map_tasks.visible_at, v_now), v_now, e.item
    FROM jsonb_array_elements(items) WITH ORDINALITY AS e(item, ord);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE catbird.cb_step_runs sr SET map_total = coalesce(sr.map_total, 0) + v_count
    WHERE sr.id = cb_spawn_generator_map_tasks.id;
    IF v_count > 0 THEN
        PERFORM catbird._cb_notify('catbird.step.queued', flow_name || '/' || step_name);
    END IF;
    RETURN v_count;
END
$$;

-- Records that a generator's handler has finished: the step completes once
-- all its items are done. A stale call does nothing; for a canceling run the
-- step is canceled. Returns nothing. 42704 for an unknown flow or step; 22023
-- for an invalid name.
CREATE FUNCTION catbird.cb_complete_generator_step(flow_name text, step_name text, id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_locked record;
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started' THEN
        RETURN;
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        PERFORM catbird._cb_cancel_reported_step((v_locked.run).id, cb_complete_generator_step.id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET generator_done = true, status = 'waiting_for_map_tasks', map_total = coalesce(sr.map_total, 0)
    WHERE sr.id = cb_complete_generator_step.id;
    PERFORM catbird._cb_maybe_complete_map_step(id, v_flow.id);
END
$$;

-- Records that a generator's handler failed: the step and the flow run fail
-- (no retry). A stale call does nothing; for a canceling run the step is
-- canceled. Returns nothing. 42704 for an unknown flow or step; 22023 for an
-- invalid name.
CREATE FUNCTION catbird.cb_fail_generator_step(flow_name text, step_name text, id bigint, error_message text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_locked record;
    v_error text := coalesce(cb_fail_generator_step.error_message, 'unknown error');
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started' THEN
        RETURN;
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        PERFORM catbird._cb_cancel_reported_step((v_locked.run).id, cb_fail_generator_step.id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr SET status = 'failed', failed_at = catbird.cb_now(), error_message = v_error
    WHERE sr.id = cb_fail_generator_step.id;
    PERFORM catbird._cb_fail_flow_run((v_locked.run).id, step_name, v_error, (v_locked.run).input,
                                      (v_locked.step_run).signal_input, (v_locked.step_run).attempts);
END
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

-- catbird 56_flow_introspection: waiting for flows and reading their state.
--
-- Owns: cb_wait_flow_output, cb_get_flow_run_steps, cb_get_flow_step_status,
-- cb_get_flow_step_output, cb_wait_flow_step_output, cb_list_flow_runs,
-- cb_get_flow_run, and the cb_step_run_info / cb_flow_run_info types (the
-- fields of StepRunInfo and FlowRunInfo). Reads only; writes nothing.
-- Guarantees:
--   * Waits return one row when the run (or step) is terminal and no row on
--     timeout or for a run that does not exist.
--   * Runs list newest first; before_id pages backwards.

CREATE FUNCTION catbird.cb_wait_flow_output(flow_name text, run_id bigint, poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_deadline timestamptz;
    v_run record;
BEGIN
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        SELECT r.status, r.output, r.error_message INTO v_run
        FROM catbird.cb_flow_runs r WHERE r.id = run_id AND r.flow_id = v_flow.id;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF v_run.status IN ('completed', 'failed', 'canceled', 'expired') THEN
            status := v_run.status;
            output := v_run.output;
            error_message := v_run.error_message;
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

CREATE TYPE catbird.cb_step_run_info AS (
    id bigint, flow_run_id bigint, step_name text, status text, priority int, attempts int,
    output jsonb, error_message text, signal_input jsonb, map_total int, map_done int,
    created_at timestamptz, visible_at timestamptz, started_at timestamptz, completed_at timestamptz,
    failed_at timestamptz, skipped_at timestamptz, canceled_at timestamptz
);

CREATE FUNCTION catbird.cb_get_flow_run_steps(flow_name text, run_id bigint)
RETURNS SETOF catbird.cb_step_run_info
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    RETURN QUERY
    SELECT sr.id, sr.flow_run_id, sr.step_name, sr.status, sr.priority, sr.attempts,
           CASE WHEN sr.status = 'completed' THEN catbird._cb_step_output(sr.id, sr.step_type, sr.output) END,
           sr.error_message, sr.signal_input, sr.map_total, sr.map_done, sr.created_at, sr.visible_at,
           sr.started_at, sr.completed_at, sr.failed_at, sr.skipped_at, sr.canceled_at
    FROM catbird.cb_step_runs sr
    -- a run made under an older definition keeps its steps (in their own order)
    LEFT JOIN catbird.cb_flow_steps fs ON fs.flow_id = sr.flow_id AND fs.name = sr.step_name
    WHERE sr.flow_run_id = run_id AND sr.flow_id = v_flow.id
    ORDER BY fs.position, sr.id;
END
$$;

CREATE FUNCTION catbird.cb_get_flow_step_status(flow_name text, run_id bigint, step_name text)
RETURNS SETOF catbird.cb_step_run_info
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN QUERY SELECT * FROM catbird.cb_get_flow_run_steps(flow_name, run_id) s
                 WHERE s.step_name = cb_get_flow_step_status.step_name;
    IF NOT FOUND THEN
        -- no such step in the run: an error when the flow has no such step either
        PERFORM catbird._cb_flow_step(catbird._cb_flow(flow_name), step_name);
    END IF;
END
$$;

CREATE FUNCTION catbird.cb_get_flow_step_output(flow_name text, run_id bigint, step_name text) RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$
    SELECT s.output FROM catbird.cb_get_flow_step_status(flow_name, run_id, step_name) s
$$;

CREATE FUNCTION catbird.cb_wait_flow_step_output(flow_name text, run_id bigint, step_name text,
                                                 poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_deadline timestamptz;
    v_step catbird.cb_step_run_info;
BEGIN
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        SELECT * INTO v_step FROM catbird.cb_get_flow_step_status(flow_name, run_id, step_name);
        IF v_step.id IS NULL THEN
            RETURN;
        END IF;
        IF v_step.status IN ('completed', 'failed', 'skipped', 'canceled') THEN
            status := v_step.status;
            output := v_step.output;
            error_message := v_step.error_message;
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

CREATE TYPE catbird.cb_flow_run_info AS (
    id bigint, flow_name text, status text, priority int, concurrency_key text, input jsonb, headers jsonb,
    output jsonb, error_message text, cancel_reason text, failed_step_name text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz, started_at timestamptz,
    completed_at timestamptz, failed_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text
);

-- Every run of a flow as cb_flow_run_info; inlinable, like _cb_task_runs.
CREATE FUNCTION catbird._cb_flow_runs(flow_id int, flow_name text)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE sql STABLE
AS $$
    SELECT r.id, flow_name, r.status, r.priority, r.concurrency_key, r.input, r.headers, r.output,
           r.error_message, r.cancel_reason, r.failed_step_name, r.created_at, r.visible_at, r.expires_at,
           r.started_at, r.completed_at, r.failed_at, r.cancel_requested_at, r.canceled_at,
           r.on_fail_status, r.on_fail_attempts, r.on_fail_error_message
    FROM catbird.cb_flow_runs r
    WHERE r.flow_id = $1
$$;

CREATE FUNCTION catbird.cb_list_flow_runs(name text, lim int = 100, before_id bigint = NULL)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
BEGIN
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY
    SELECT * FROM catbird._cb_flow_runs(v_flow.id, v_flow.name) r
    WHERE before_id IS NULL OR r.id < before_id
    ORDER BY r.id DESC
    LIMIT lim;
END
$$;

CREATE FUNCTION catbird.cb_get_flow_run(name text, run_id bigint)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
BEGIN
    RETURN QUERY SELECT * FROM catbird._cb_flow_runs(v_flow.id, v_flow.name) r WHERE r.id = run_id;
END
$$;

CREATE FUNCTION catbird.cb_purge_flow_runs(name text, older_than interval) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_ids bigint[];
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'invalid older_than %: expected a non-negative interval', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH purged AS (
        DELETE FROM catbird.cb_flow_runs r
        WHERE r.flow_id = v_flow.id
          AND r.status IN ('completed', 'failed', 'canceled', 'expired')
          AND coalesce(r.on_fail_status, 'completed') IN ('completed', 'failed')
          AND coalesce(r.completed_at, r.failed_at, r.canceled_at, r.created_at) <= catbird.cb_now() - older_than
        RETURNING r.id
    )
    SELECT coalesce(array_agg(p.id), '{}') INTO v_ids FROM purged p;
    DELETE FROM catbird.cb_map_tasks m WHERE m.flow_run_id = ANY (v_ids);
    DELETE FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = ANY (v_ids);
    RETURN cardinality(v_ids);
END
$$;

-- Deletes every run of the flow whatever its status; in-flight work is lost
-- (workers' later reports find nothing and are refused).
CREATE FUNCTION catbird.cb_clear_flow_runs(name text) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_count int;
BEGIN
    DELETE FROM catbird.cb_map_tasks m WHERE m.flow_id = v_flow.id;
    DELETE FROM catbird.cb_step_runs sr WHERE sr.flow_id = v_flow.id;
    DELETE FROM catbird.cb_flow_runs r WHERE r.flow_id = v_flow.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

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

-- Waits up to poll_for ms, polling every poll_interval ms, for the flow run to
-- be terminal (completed, failed, canceled, expired). Returns one row (status,
-- output, error_message) then, no row on timeout or for a run that does not
-- exist. 42704 for an unknown flow; 22023 for an invalid name, poll_for < 0 or
-- poll_interval < 1.
CREATE FUNCTION catbird.cb_wait_flow_output(flow_name text, run_id bigint, poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_wait('flow', flow_name, run_id, NULL, poll_for, poll_interval) $$;

CREATE TYPE catbird.cb_step_run_info AS (
    id bigint, flow_run_id bigint, step_name text, status text, priority int, attempts int,
    output jsonb, error_message text, signal_input jsonb, map_total int, map_done int,
    created_at timestamptz, visible_at timestamptz, started_at timestamptz, completed_at timestamptz,
    failed_at timestamptz, skipped_at timestamptz, canceled_at timestamptz, error_detail text
);

-- The step runs of a flow run as cb_step_run_info (StepRunInfo), in
-- definition order; a completed mapper's or generator's output is its item
-- outputs. No rows for a run that does not exist. 42704 for an unknown flow;
-- 22023 for an invalid name.
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
           sr.started_at, sr.completed_at, sr.failed_at, sr.skipped_at, sr.canceled_at, sr.error_detail
    FROM catbird.cb_step_runs sr
    -- a run made under an older definition keeps its steps (in their own order)
    LEFT JOIN catbird.cb_flow_steps fs ON fs.flow_id = sr.flow_id AND fs.name = sr.step_name
    WHERE sr.flow_run_id = run_id AND sr.flow_id = v_flow.id
    ORDER BY fs.position, sr.id;
END
$$;

-- One step run of a flow run as cb_step_run_info; no row for a run that does
-- not exist. 42704 for an unknown flow or step; 22023 for an invalid name.
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

-- The output of one step of a flow run (NULL unless completed). Errors as
-- cb_get_flow_step_status.
CREATE FUNCTION catbird.cb_get_flow_step_output(flow_name text, run_id bigint, step_name text) RETURNS jsonb
LANGUAGE sql VOLATILE
AS $$
    SELECT s.output FROM catbird.cb_get_flow_step_status(flow_name, run_id, step_name) s
$$;

-- Waits up to poll_for ms, polling every poll_interval ms, for a step of the
-- flow run to be terminal (completed, failed, skipped, canceled). Returns one
-- row (status, output, error_message) then, no row on timeout or for a run
-- that does not exist. 22023 for poll_for < 0 or poll_interval < 1, then as
-- cb_get_flow_step_status: 42704 for an unknown flow or step.
CREATE FUNCTION catbird.cb_wait_flow_step_output(flow_name text, run_id bigint, step_name text,
                                                 poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_wait('step', flow_name, run_id, step_name, poll_for, poll_interval) $$;

CREATE TYPE catbird.cb_flow_run_info AS (
    id bigint, flow_name text, status text, priority int, concurrency_key text, input jsonb, headers jsonb,
    output jsonb, error_message text, cancel_reason text, failed_step_name text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz, started_at timestamptz,
    completed_at timestamptz, failed_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text
);

-- Every run of a flow as cb_flow_run_info (FlowRunInfo fields); inlinable,
-- like _cb_task_runs. Raises nothing.
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

-- The flow's runs as cb_flow_run_info (FlowRunInfo), newest first, at most
-- lim, older than before_id when given (to page backwards). 42704 for an
-- unknown flow; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird.cb_list_flow_runs(name text, lim int = 100, before_id bigint = NULL)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_flow_run_info, 'flow', cb_list_flow_runs.name, lim, before_id)
$$;

-- One run of the flow as cb_flow_run_info; no row when it does not exist.
-- 42704 for an unknown flow; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_get_flow_run(name text, run_id bigint)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_flow_run_info, 'flow', cb_get_flow_run.name, 1,
                                        run_id => run_id)
$$;

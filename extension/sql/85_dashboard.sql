-- catbird 85_dashboard: the read-only views an operator's dashboard needs.
--
-- Owns: cb_peek (messages of a queue without claiming them),
-- cb_list_run_counts (runs of every task and flow by status since a time),
-- cb_list_task_runs_by_status and cb_list_flow_runs_by_status (a
-- definition's runs filtered by status). No tables.
-- Guarantees:
--   * Every function here is STABLE and writes nothing: peeking never counts
--     a delivery, moves visible_at or takes a definition's lock, so a
--     dashboard cannot disturb workers.
--   * Inputs are checked like the rest of the API: 22023 for a bad name,
--     status, quantity or limit, 42704 for an unknown queue, task or flow.

-- Up to quantity messages of the queue as cb_message, in claim order
-- (priority first, then visible_at, then id), whether visible now or hidden
-- by a reader's lease; nothing is claimed or changed. 22023 for an invalid
-- name or a quantity outside 1..1000; 42704 for an unknown queue.
CREATE FUNCTION catbird.cb_peek(queue text, quantity int = 20)
RETURNS SETOF catbird.cb_message
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_queue_id int;
BEGIN
    PERFORM catbird._cb_check_name('queue', queue);
    IF quantity IS NULL OR quantity < 1 OR quantity > 1000 THEN
        RAISE EXCEPTION 'invalid quantity %: peek at 1 to 1000 messages at a time', coalesce(quantity::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT q.id INTO v_queue_id FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_queue_id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('queue', queue);
    END IF;
    RETURN QUERY
    SELECT m.id, m.concurrency_key, m.topic, m.body, m.headers, m.priority, m.deliveries,
           m.created_at, m.visible_at, m.expires_at, src.name, m.source_deliveries
    FROM catbird.cb_messages m
    LEFT JOIN catbird.cb_queues src ON src.id = m.source_queue_id
    WHERE m.queue_id = v_queue_id
    ORDER BY m.priority DESC, m.visible_at, m.id
    LIMIT quantity;
END
$$;

-- How many runs of each task and flow were created at or after since, by
-- status: one row (kind 'task' or 'flow', name, status, runs) per status
-- that occurs, ordered by kind, name and status. A definition without runs
-- in that window has no row. 22023 for a NULL or infinite since.
CREATE FUNCTION catbird.cb_list_run_counts(since timestamptz)
RETURNS TABLE (kind text, name text, status text, runs bigint)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF since IS NULL OR NOT isfinite(since) THEN
        RAISE EXCEPTION 'invalid since %: give the finite time from which to count runs',
            coalesce(since::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT 'task'::text, t.name, r.status, count(*)
    FROM catbird.cb_task_runs r JOIN catbird.cb_tasks t ON t.id = r.task_id
    WHERE r.created_at >= since
    GROUP BY t.name, r.status
    UNION ALL
    SELECT 'flow'::text, f.name, r.status, count(*)
    FROM catbird.cb_flow_runs r JOIN catbird.cb_flows f ON f.id = r.flow_id
    WHERE r.created_at >= since
    GROUP BY f.name, r.status
    ORDER BY 1, 2, 3;
END
$$;

-- Checks a run status filter of kind 'task' or 'flow': NULL (every status) or
-- one of the kind's statuses. Returns nothing; 22023 otherwise, naming them.
CREATE FUNCTION catbird._cb_check_run_status(kind text, status text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_statuses text[] := CASE kind
        WHEN 'task' THEN '{queued,started,completed,failed,skipped,canceled,expired}'::text[]
        ELSE '{started,canceling,completed,failed,canceled,expired}'::text[] END;
BEGIN
    IF status IS NOT NULL AND NOT status = ANY (v_statuses) THEN
        RAISE EXCEPTION 'invalid status %: a % run is one of %', catbird._cb_quote_arg(status), kind,
            array_to_string(v_statuses, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The task's runs in status (every status when NULL) as cb_task_run_info,
-- newest first, at most lim, older than before_id when given. 22023 for an
-- invalid name, 42704 for an unknown task, then 22023 for an unknown status
-- or lim < 1.
CREATE FUNCTION catbird.cb_list_task_runs_by_status(name text, status text = NULL, lim int = 100,
                                                    before_id bigint = NULL)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_task_id int;
BEGIN
    PERFORM catbird._cb_check_name('task', name);
    SELECT t.id INTO v_task_id FROM catbird.cb_tasks t WHERE t.name = cb_list_task_runs_by_status.name;
    IF v_task_id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('task', name);
    END IF;
    PERFORM catbird._cb_check_run_status('task', status);
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY
    SELECT * FROM catbird._cb_task_runs(v_task_id, name) r
    WHERE (cb_list_task_runs_by_status.status IS NULL OR r.status = cb_list_task_runs_by_status.status)
      AND (before_id IS NULL OR r.id < before_id)
    ORDER BY r.id DESC
    LIMIT lim;
END
$$;

-- The flow's runs in status (every status when NULL) as cb_flow_run_info,
-- newest first, at most lim, older than before_id when given. 22023 for an
-- invalid name, 42704 for an unknown flow, then 22023 for an unknown status
-- or lim < 1.
CREATE FUNCTION catbird.cb_list_flow_runs_by_status(name text, status text = NULL, lim int = 100,
                                                    before_id bigint = NULL)
RETURNS SETOF catbird.cb_flow_run_info
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_flow_id int;
BEGIN
    PERFORM catbird._cb_check_name('flow', name);
    SELECT f.id INTO v_flow_id FROM catbird.cb_flows f WHERE f.name = cb_list_flow_runs_by_status.name;
    IF v_flow_id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('flow', name);
    END IF;
    PERFORM catbird._cb_check_run_status('flow', status);
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY
    SELECT * FROM catbird._cb_flow_runs(v_flow_id, name) r
    WHERE (cb_list_flow_runs_by_status.status IS NULL OR r.status = cb_list_flow_runs_by_status.status)
      AND (before_id IS NULL OR r.id < before_id)
    ORDER BY r.id DESC
    LIMIT lim;
END
$$;

-- catbird 70_maintenance: the worker registry and garbage collection.
--
-- Owns: cb_workers, cb_gc. Workers register the handlers they run, send heartbeats
-- and unregister on shutdown; cb_list_workers shows them (WorkerInfo fields).
-- A worker that stops heartbeating is stale; its runs need no rescue here,
-- because their leases (visible_at) expire on their own. cb_gc's retention purge of
-- finished runs is the one of cb_purge_task_runs / cb_purge_flow_runs
-- (38_runs), in bounded batches.

CREATE TABLE catbird.cb_workers (
    id                uuid PRIMARY KEY,
    task_handlers     jsonb NOT NULL DEFAULT '[]',
    step_handlers     jsonb NOT NULL DEFAULT '[]',
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL
);

-- Registers a worker (or updates a registered one) with the handlers it runs
-- and announces catbird.worker.started. Returns nothing; 22023 for a NULL id
-- or handlers that are not JSON arrays.
CREATE FUNCTION catbird.cb_worker_started(id uuid, task_handlers jsonb, step_handlers jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'invalid worker id: NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(coalesce(task_handlers, '[]')) <> 'array' OR jsonb_typeof(coalesce(step_handlers, '[]')) <> 'array' THEN
        RAISE EXCEPTION 'invalid handlers: task_handlers and step_handlers must be JSON arrays'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO catbird.cb_workers AS w (id, task_handlers, step_handlers, started_at, last_heartbeat_at)
    VALUES (cb_worker_started.id, coalesce(task_handlers, '[]'), coalesce(step_handlers, '[]'), v_now, v_now)
    ON CONFLICT ON CONSTRAINT cb_workers_pkey DO UPDATE
        SET task_handlers = excluded.task_handlers, step_handlers = excluded.step_handlers,
            last_heartbeat_at = excluded.last_heartbeat_at;
    PERFORM catbird._cb_notify('catbird.worker.started', jsonb_build_object('worker_id', id)::text);
END
$$;

-- Records a worker's heartbeat. Returns {"registered": true}, or
-- {"registered": false} when the worker is unknown (e.g. removed as stale),
-- so it can register again. Raises nothing.
CREATE FUNCTION catbird.cb_worker_heartbeat(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_workers w SET last_heartbeat_at = catbird.cb_now() WHERE w.id = cb_worker_heartbeat.id;
    RETURN jsonb_build_object('registered', FOUND);
END
$$;

-- Unregisters a worker and announces catbird.worker.stopped. Returns false
-- when it was not registered. Raises nothing.
CREATE FUNCTION catbird.cb_worker_stopped(id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    DELETE FROM catbird.cb_workers w WHERE w.id = cb_worker_stopped.id;
    IF FOUND THEN
        PERFORM catbird._cb_notify('catbird.worker.stopped', jsonb_build_object('worker_id', id)::text);
    END IF;
    RETURN FOUND;
END
$$;

-- Every registered worker as WorkerInfo, oldest first. Raises nothing.
CREATE FUNCTION catbird.cb_list_workers()
RETURNS TABLE (id uuid, task_handlers jsonb, step_handlers jsonb, started_at timestamptz,
               last_heartbeat_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT w.id, w.task_handlers, w.step_handlers, w.started_at, w.last_heartbeat_at
    FROM catbird.cb_workers w ORDER BY w.started_at, w.id
$$;

-- Garbage collection, in bounded batches (call it again while it reports work):
--   expired_queues_deleted     queues past their expires_at, with their messages
--   expired_messages_deleted   messages past their expires_at (never readable)
--   expired_task_runs          queued runs past expires_at marked expired
--   expired_flow_runs          runs past expires_at before any step started
--   canceling_flow_runs_finalized  canceling runs whose started work's leases lapsed
--   lease_expired_task_runs    started task runs whose lease lapsed after their
--                              last attempt (see _cb_lease_cap): failed, on-fail queued
--   lease_expired_flow_runs    flow runs failed because a step run or map item
--                              did the same (_cb_fail_lapsed_work)
--   stale_workers_deleted      workers silent for longer than stale_worker_after
--   stale_wire_nodes_deleted   Wire nodes silent for longer than
--                              _cb_wire_stale_after() (82_wire), with their presence
--   notifications_deleted      inbox notifications past their expires_at (84_inbox)
--   task_runs_purged / flow_runs_purged  finished runs older than their
--                              definition's retention_period (NULL or 0: kept)
-- Returns those counters as jsonb; 22023 for batch_size < 1 or a
-- stale_worker_after that is not a positive interval of at most 1000 years.
CREATE FUNCTION catbird.cb_gc(batch_size int = 10000, stale_worker_after interval = '5 minutes')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_queue text;
    v_run bigint;
    v_expired_queues int := 0;
    v_expired_messages int;
    v_expired_task_runs int;
    v_expired_ids bigint[];
    v_expired_flow_runs int := 0;
    v_finalized int := 0;
    v_stale_workers int;
    v_stale_wire_nodes int;
    v_stale_ids uuid[];
    v_task_purged int;
    v_flow_purged int;
    v_notifications int;
    v_lapsed_tasks bigint[];
    v_lapsed_flow int := 0;
    v_step catbird.cb_flow_steps;
BEGIN
    PERFORM catbird._cb_check_at_least('batch_size', batch_size, 1);
    IF stale_worker_after IS NULL OR stale_worker_after <= interval '0' THEN
        RAISE EXCEPTION 'invalid stale_worker_after: expected a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval('stale_worker_after', stale_worker_after);

    FOR v_queue IN
        SELECT q.name FROM catbird.cb_queues q WHERE q.expires_at <= v_now ORDER BY q.name LIMIT batch_size
    LOOP
        IF catbird.cb_delete_queue(v_queue) THEN
            v_expired_queues := v_expired_queues + 1;
        END IF;
    END LOOP;

    DELETE FROM catbird.cb_messages m
    WHERE m.id IN (SELECT x.id FROM catbird.cb_messages x WHERE x.expires_at <= v_now
                   LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_expired_messages = ROW_COUNT;

    WITH expired AS (
        UPDATE catbird.cb_task_runs r SET status = 'expired', expired_at = v_now
        WHERE r.id IN (SELECT x.id FROM catbird.cb_task_runs x
                       WHERE x.status = 'queued' AND x.expires_at <= v_now
                       LIMIT batch_size FOR UPDATE SKIP LOCKED)
        RETURNING r.id
    )
    SELECT array_agg(e.id) INTO v_expired_ids FROM expired e;
    v_expired_task_runs := coalesce(cardinality(v_expired_ids), 0);
    PERFORM catbird._cb_notify_task_runs('catbird.task.expired', v_expired_ids);

    FOR v_run IN
        SELECT r.id FROM catbird.cb_flow_runs r
        WHERE r.status = 'started' AND r.expires_at <= v_now
          AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.attempts > 0)
        ORDER BY r.id LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM catbird._cb_expire_flow_run(v_run);
        v_expired_flow_runs := v_expired_flow_runs + 1;
    END LOOP;

    -- Crash loops end: lapsed runs that used their attempts fail.
    WITH lapsed AS (
        UPDATE catbird.cb_task_runs r
        SET status = 'failed', failed_at = v_now, error_message = catbird._cb_lease_expired_error(r.attempts),
            error_detail = NULL, on_fail_status = 'queued', on_fail_visible_at = v_now
        WHERE r.id IN (SELECT x.id FROM catbird.cb_task_runs x
                       JOIN catbird.cb_tasks t ON t.id = x.task_id
                       WHERE x.status = 'started' AND x.visible_at <= v_now
                         AND x.attempts >= catbird._cb_lease_cap(t.max_retries)
                       LIMIT batch_size FOR UPDATE OF x SKIP LOCKED)
        RETURNING r.id
    )
    SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}') INTO v_lapsed_tasks FROM lapsed l;
    PERFORM catbird._cb_notify_task_runs('catbird.task.failed', v_lapsed_tasks);
    FOR v_step IN
        SELECT fs.* FROM catbird.cb_flow_steps fs
        WHERE EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
                      WHERE sr.flow_id = fs.flow_id AND sr.step_name = fs.name AND sr.status = 'started'
                        AND sr.visible_at <= v_now AND sr.attempts >= catbird._cb_lease_cap(fs.max_retries))
           OR EXISTS (SELECT 1 FROM catbird.cb_map_tasks m
                      WHERE m.flow_id = fs.flow_id AND m.step_name = fs.name AND m.status = 'started'
                        AND m.visible_at <= v_now AND m.attempts >= catbird._cb_lease_cap(fs.max_retries))
        ORDER BY fs.flow_id, fs.position
    LOOP
        EXIT WHEN v_lapsed_flow >= batch_size;
        v_lapsed_flow := v_lapsed_flow
            + catbird._cb_fail_lapsed_work(v_step, 'step', v_now, batch_size - v_lapsed_flow);
        EXIT WHEN v_lapsed_flow >= batch_size;
        v_lapsed_flow := v_lapsed_flow
            + catbird._cb_fail_lapsed_work(v_step, 'item', v_now, batch_size - v_lapsed_flow);
    END LOOP;

    FOR v_run IN
        SELECT r.id FROM catbird.cb_flow_runs r
        WHERE r.status = 'canceling'
          AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
                          WHERE sr.flow_run_id = r.id AND sr.status = 'started' AND sr.visible_at > v_now)
          AND NOT EXISTS (SELECT 1 FROM catbird.cb_map_tasks m
                          WHERE m.flow_run_id = r.id AND m.status = 'started' AND m.visible_at > v_now)
        ORDER BY r.id LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM catbird._cb_cancel_open_work(v_run, true);
        PERFORM catbird._cb_finish_canceling(v_run);
        v_finalized := v_finalized + 1;
    END LOOP;

    WITH stale AS (
        DELETE FROM catbird.cb_workers w WHERE w.last_heartbeat_at < v_now - stale_worker_after
        RETURNING w.id
    )
    SELECT array_agg(s.id ORDER BY s.id) INTO v_stale_ids FROM stale s;
    v_stale_workers := coalesce(cardinality(v_stale_ids), 0);
    PERFORM catbird._cb_notify('catbird.worker.stopped', jsonb_build_object('worker_id', s)::text)
    FROM unnest(v_stale_ids) AS s;
    v_notifications := catbird._cb_delete_expired_notifications(v_now, batch_size);

    DELETE FROM catbird.cb_wire_nodes n WHERE n.last_heartbeat_at < v_now - catbird._cb_wire_stale_after();
    GET DIAGNOSTICS v_stale_wire_nodes = ROW_COUNT;

    v_task_purged := catbird._cb_purge_retained_runs('task', v_now, batch_size);
    v_flow_purged := catbird._cb_purge_retained_runs('flow', v_now, batch_size);

    RETURN jsonb_build_object(
        'expired_queues_deleted', v_expired_queues,
        'expired_messages_deleted', v_expired_messages,
        'expired_task_runs', v_expired_task_runs,
        'expired_flow_runs', v_expired_flow_runs,
        'canceling_flow_runs_finalized', v_finalized,
        'lease_expired_task_runs', cardinality(v_lapsed_tasks),
        'lease_expired_flow_runs', v_lapsed_flow,
        'stale_workers_deleted', v_stale_workers,
        'stale_wire_nodes_deleted', v_stale_wire_nodes,
        'notifications_deleted', v_notifications,
        'task_runs_purged', v_task_purged,
        'flow_runs_purged', v_flow_purged);
END
$$;

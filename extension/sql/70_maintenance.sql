-- catbird 70_maintenance: the worker registry.
--
-- Owns: cb_workers. Workers register the handlers they run, send heartbeats
-- and unregister on shutdown; cb_list_workers shows them (WorkerInfo fields).
-- A worker that stops heartbeating is stale; its runs need no rescue here,
-- because their leases (visible_at) expire on their own.

CREATE TABLE catbird.cb_workers (
    id                uuid PRIMARY KEY,
    task_handlers     jsonb NOT NULL DEFAULT '[]',
    step_handlers     jsonb NOT NULL DEFAULT '[]',
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL
);

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
    PERFORM catbird._cb_notify('catbird.worker.started', id::text);
END
$$;

-- Returns {"registered": false} when the worker is unknown (e.g. removed as
-- stale), so it can register again.
CREATE FUNCTION catbird.cb_worker_heartbeat(id uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_workers w SET last_heartbeat_at = catbird.cb_now() WHERE w.id = cb_worker_heartbeat.id;
    RETURN jsonb_build_object('registered', FOUND);
END
$$;

CREATE FUNCTION catbird.cb_worker_stopped(id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    DELETE FROM catbird.cb_workers w WHERE w.id = cb_worker_stopped.id;
    IF FOUND THEN
        PERFORM catbird._cb_notify('catbird.worker.stopped', id::text);
    END IF;
    RETURN FOUND;
END
$$;

CREATE FUNCTION catbird.cb_list_workers()
RETURNS TABLE (id uuid, task_handlers jsonb, step_handlers jsonb, started_at timestamptz,
               last_heartbeat_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT w.id, w.task_handlers, w.step_handlers, w.started_at, w.last_heartbeat_at
    FROM catbird.cb_workers w ORDER BY w.started_at, w.id
$$;

-- catbird 80_events: NOTIFY events.
--
-- Owns: cb_notify, _cb_notify and the engine's event helpers
-- (_cb_event_payload, _cb_notify_runs, _cb_notify_task_runs,
-- _cb_notify_flow_run). Every event goes out on the one channel "catbird" as
-- the JSON envelope {"topic": ..., "data": ..., "node_id": ...}; listeners
-- match topics themselves. "data" is text: for the engine's catbird.* topics a
-- small JSON document naming the resource (consumers query for details), for
-- application topics whatever cb_notify was given.
-- Guarantees:
--   * PostgreSQL delivers notifications on commit: a rolled-back change
--     announces nothing, and events of one transaction arrive in the order
--     they were sent. Identical payloads within one transaction are folded.
--   * A call that changes many runs of one task or flow sends one event whose
--     data has "run_ids" (an array, ascending) in place of "run_id" — one per
--     300 runs, so every payload fits NOTIFY's limit.
--   * The catbird.* namespace is the engine's: cb_notify refuses it.
--   * An event cb_notify accepts never fails at pg_notify: the whole envelope
--     is measured against PostgreSQL's limit (payload < 8000 bytes).
-- Cost: one event per call, not per run (bench/wire_events.py). PostgreSQL
-- serializes the commits of transactions that sent a NOTIFY (a cluster-wide
-- lock held through the commit, listeners or not), which caps many
-- concurrent single-run enqueues with durable commits; the engine sent one
-- NOTIFY per enqueue and completion call (worker wake-ups) before events
-- carried run ids too, and still sends no more than that. Hence the switch:
-- `SET catbird.events = off` (per session, transaction with SET LOCAL, role
-- or database with ALTER ... SET) stops the engine's events for the
-- transactions it covers, lifting that serialization for bulk producers;
-- workers then find the work through their poll interval, and waiters through
-- their fallback poll. cb_notify (an application's explicit event) is always
-- sent.
--
-- Engine topics (the Go library's, plus wake-ups and lifecycle extras):
--
--   topic                      when                                   data
--   catbird.worker.started     cb_worker_started                      {"worker_id"}
--   catbird.worker.stopped     cb_worker_stopped; cb_gc removes a     {"worker_id"}
--                              stale worker
--   catbird.queue.created      cb_create_queue creates it             {"queue"}
--   catbird.queue.deleted      cb_delete_queue; cb_gc (expired)       {"queue"}
--   catbird.task.created       cb_create_task creates it              {"task"}
--   catbird.task.deleted       cb_delete_task deletes it              {"task"}
--   catbird.flow.created       cb_create_flow creates it              {"flow"}
--   catbird.flow.deleted       cb_delete_flow deletes it              {"flow"}
--   catbird.task.started       a run is created queued (cb_run_task,  {"task","run_id"|"run_ids"}
--                              cb_publish, schedules) — as in the Go
--                              library, "started" means the run
--                              exists, not that a worker claimed it;
--                              a call resolving to an existing run by
--                              concurrency key announces nothing
--   catbird.task.skipped       a run is created skipped (condition)   {"task","run_id"|"run_ids"}
--   catbird.task.completed     cb_complete_task(s)                    {"task","run_id"|"run_ids"}
--   catbird.task.failed        failed for good: cb_fail_task, or a    {"task","run_id"|"run_ids"}
--                              lapsed lease out of attempts (claim,
--                              cb_gc)
--   catbird.task.canceled      cb_cancel_task                         {"task","run_id"}
--   catbird.task.expired       a queued run past expires_at (claim,   {"task","run_id"|"run_ids"}
--                              a new run of its key, cb_gc)
--   catbird.task.queued        a run is queued again (retry_task_run) {"task"}       (worker wake-up)
--   catbird.flow.started       a run is created (cb_run_flow,         {"flow","run_id"|"run_ids"}
--                              cb_publish, schedules)
--   catbird.flow.completed     the last step ends it, or a step       {"flow","run_id"}
--                              completes it early
--   catbird.flow.failed        a step fails for good, or no output    {"flow","run_id"}
--   catbird.flow.canceling     cb_cancel_flow, started work remains   {"flow","run_id"}
--   catbird.flow.canceled      the canceling run's work has ended     {"flow","run_id"}
--   catbird.flow.expired       a run past expires_at before any step  {"flow","run_id"}
--                              started (cb_gc, a new run of its key)
--   catbird.flow.retried       cb_retry_flow_run                      {"flow","run_id"}
--   catbird.step.queued        step work became claimable             {"flow","step"} (worker wake-up)
--   catbird.schedule.created|updated|deleted|enabled|disabled          {"task"} or {"flow"}
--
-- A task run skipped or canceled before it started has no other event; a task
-- run that is retried (cb_fail_task 'queued') announces nothing until it ends.

-- The envelope of an event: the exact payload text _cb_notify sends,
-- {"topic": ..., "data": ..., "node_id": ...} (built as text: the cheapest
-- way, and it keeps the keys in this order). Raises nothing.
CREATE FUNCTION catbird._cb_event_payload(topic text, data text, node_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format('{"topic": %s, "data": %s, "node_id": %s}', to_json(topic),
                  coalesce(to_json(data)::text, 'null'), coalesce(to_json(node_id)::text, 'null'))
$$;

-- Sends an event on the channel "catbird" (delivered on commit), unchecked:
-- for the engine's own topics, whose payloads are small by construction.
-- Returns nothing.
-- Nothing while catbird.events is 'off' (see the header).
CREATE FUNCTION catbird._cb_notify(topic text, data text = NULL, node_id uuid = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_notify('catbird', catbird._cb_event_payload(topic, data, node_id))
    WHERE current_setting('catbird.events', true) IS DISTINCT FROM 'off'
$$;

-- Announces that runs of one task or flow (kind 'task' or 'flow', name) went
-- through topic: {"<kind>": name, "run_id": id} for one run, {"<kind>": name,
-- "run_ids": [...]} for several, in the order given (callers pass them
-- ascending), one event per 300 ids. Nothing for no runs. On the hot paths
-- (every enqueue and completion), so it builds the text itself and calls
-- pg_notify directly: each nested catbird function costs a search_path switch.
-- Nothing while catbird.events is 'off'. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_notify_runs(topic text, kind text, name text, run_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_count int := coalesce(cardinality(run_ids), 0);
    v_head text := format('{"%s": %s, ', kind, to_json(name));
BEGIN
    IF current_setting('catbird.events', true) = 'off' THEN
        RETURN;
    END IF;
    IF v_count = 1 THEN
        PERFORM pg_notify('catbird', format('{"topic": %s, "data": %s, "node_id": null}', to_json(topic),
                                            to_json(v_head || '"run_id": ' || run_ids[1] || '}')));
    ELSIF v_count > 1 THEN
        -- 300 ids of at most 20 digits stay far below NOTIFY's 8000 bytes.
        PERFORM pg_notify('catbird', format('{"topic": %s, "data": %s, "node_id": null}', to_json(topic),
                                            to_json(v_head || '"run_ids": [' || array_to_string(run_ids[s : s + 299], ', ') || ']}')))
        FROM generate_series(1, v_count, 300) AS s;
    END IF;
END
$$;

-- _cb_notify_runs for task runs of any tasks: one event (or one per 300 ids)
-- per task. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_notify_task_runs(topic text, run_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF coalesce(cardinality(run_ids), 0) = 0 OR current_setting('catbird.events', true) = 'off' THEN
        RETURN;
    END IF;
    PERFORM catbird._cb_notify_runs(topic, 'task', t.name, g.ids)
    FROM (SELECT r.task_id, array_agg(r.id ORDER BY r.id) AS ids
          FROM catbird.cb_task_runs r WHERE r.id = ANY (run_ids)
          GROUP BY r.task_id) g
    JOIN catbird.cb_tasks t ON t.id = g.task_id
    ORDER BY t.name;
END
$$;

-- _cb_notify_runs for one flow run known by id (its flow looked up). Returns
-- nothing; raises nothing.
CREATE FUNCTION catbird._cb_notify_flow_run(topic text, flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_notify(topic, jsonb_build_object('flow', f.name, 'run_id', r.id)::text)
    FROM catbird.cb_flow_runs r JOIN catbird.cb_flows f ON f.id = r.flow_id
    WHERE r.id = flow_run_id;
END
$$;

-- Sends an event with an application topic: delivered on commit to every
-- connection LISTENing on "catbird" as {"topic", "data", "node_id"} (see the
-- header). Returns nothing. 22023 (nothing sent) for an invalid topic, a
-- topic in the engine's catbird.* namespace, or an event whose envelope
-- exceeds NOTIFY's limit (7999 bytes of payload: data, JSON-escaped, plus
-- about 70 bytes of envelope and the topic).
CREATE FUNCTION catbird.cb_notify(topic text, data text = NULL, node_id uuid = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_payload text;
BEGIN
    PERFORM catbird._cb_check_topic(topic);
    IF lower(topic) = 'catbird' OR lower(topic) LIKE 'catbird.%' THEN
        RAISE EXCEPTION 'invalid topic "%": the catbird.* namespace is reserved for the engine''s own events', topic
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Choose a topic of your own, e.g. "myapp.' || substr(topic, 9) || '"; listen to catbird.# to follow the engine.';
    END IF;
    v_payload := catbird._cb_event_payload(topic, data, node_id);
    -- PostgreSQL refuses payloads of 8000 bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH).
    IF octet_length(v_payload) >= 8000 THEN
        RAISE EXCEPTION 'invalid data: the event is % bytes once wrapped in its envelope, and a notification holds at most 7999', octet_length(v_payload)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('data is %s bytes; the envelope adds %s (topic, node_id, JSON quoting).',
                                  coalesce(octet_length(data), 0), octet_length(v_payload) - coalesce(octet_length(data), 0)),
                  HINT = 'Store large payloads in a table and notify their key.';
    END IF;
    PERFORM pg_notify('catbird', v_payload);
END
$$;

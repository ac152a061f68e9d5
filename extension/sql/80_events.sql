-- catbird 80_events: NOTIFY events.
--
-- Owns: cb_notify and _cb_notify. Every event goes out on the one channel
-- "catbird" as a JSON payload {"topic": ..., "data": ..., "node_id": ...};
-- listeners match topics themselves. PostgreSQL delivers notifications on
-- commit, so a rolled-back change announces nothing, and folds identical
-- payloads within one transaction, so a batch of runs wakes workers once.
-- Engine topics: catbird.task.{created,deleted,queued,completed,failed,canceled},
-- catbird.worker.{started,stopped}; data is the task name for definition and
-- queued events, the run id for run events (catbird.task.completed carries the
-- ids a call completed, comma-separated), the worker id for worker events.

-- Sends an event on the channel "catbird" (delivered on commit), unchecked:
-- for the engine's own topics. Returns nothing.
CREATE FUNCTION catbird._cb_notify(topic text, data text = NULL, node_id uuid = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_notify('catbird', jsonb_build_object('topic', topic, 'data', data, 'node_id', node_id)::text)
$$;

-- Sends an event with a user topic (see _cb_notify). Returns nothing; 22023
-- for an invalid topic or data over 7000 bytes.
CREATE FUNCTION catbird.cb_notify(topic text, data text = NULL, node_id uuid = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_topic(topic);
    IF octet_length(coalesce(data, '')) > 7000 THEN
        RAISE EXCEPTION 'invalid data: % bytes, at most 7000 fit in a notification', octet_length(data)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Store large payloads in a table and notify their key.';
    END IF;
    PERFORM catbird._cb_notify(topic, data, node_id);
END
$$;

-- catbird 30_topics: topic bindings and publish.
--
-- Owns: cb_bindings (queues bind here; tasks and flows bind through the same
-- table from their own files); cb_bind, cb_unbind, cb_list_bindings, cb_publish
-- (which writes messages into bound queues and runs of bound tasks and flows).
-- Guarantees:
--   * Matching is an indexed lookup: a topic of n tokens can only be matched by
--     a pattern whose literal prefix is one of the topic's n + 1 token
--     prefixes, so publish probes cb_bindings_prefix_idx n + 1 times and runs
--     the anchored regex of the few candidates only, whatever the number of
--     bindings.
--   * A queue matched by several of its patterns receives one copy.
--   * cb_publish returns targets x messages, whether or not a concurrency key
--     deduplicated some of them, and writes into every target in one statement.

CREATE FUNCTION catbird._cb_bind(target_type text, target_name text, pattern text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_parts record;
BEGIN
    PERFORM catbird._cb_check_pattern(pattern);
    v_parts := catbird._cb_pattern_parts(pattern);
    INSERT INTO catbird.cb_bindings
        (target_type, target_name, pattern, prefix, token_count, has_hash, regex, created_at)
    VALUES (_cb_bind.target_type, _cb_bind.target_name, _cb_bind.pattern,
            v_parts.prefix, v_parts.token_count, v_parts.has_hash, v_parts.regex, catbird.cb_now())
    ON CONFLICT ON CONSTRAINT cb_bindings_target_pattern_key DO NOTHING;
END
$$;

CREATE FUNCTION catbird._cb_unbind(target_type text, target_name text, pattern text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_pattern(pattern);
    DELETE FROM catbird.cb_bindings b
    WHERE b.target_type = _cb_unbind.target_type
      AND b.target_name = _cb_unbind.target_name
      AND b.pattern = _cb_unbind.pattern;
    RETURN FOUND;
END
$$;

CREATE FUNCTION catbird.cb_bind(queue text, pattern text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_queue_id(queue);
    PERFORM catbird._cb_bind('queue', queue, pattern);
END
$$;

CREATE FUNCTION catbird.cb_unbind(queue text, pattern text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_queue_id(queue);
    RETURN catbird._cb_unbind('queue', queue, pattern);
END
$$;

CREATE FUNCTION catbird.cb_list_bindings(queue text = NULL)
RETURNS TABLE (queue text, pattern text, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT b.target_name, b.pattern, b.created_at
    FROM catbird.cb_bindings b
    WHERE b.target_type = 'queue' AND ($1 IS NULL OR b.target_name = $1)
    ORDER BY b.target_name, b.pattern
$$;

-- The bindings whose pattern matches a (valid) topic.
CREATE FUNCTION catbird._cb_matching_bindings(topic text)
RETURNS SETOF catbird.cb_bindings
LANGUAGE sql STABLE
AS $$
    WITH tokens AS (
        SELECT string_to_array(topic, '.') AS t
    ), prefixes AS (
        SELECT array_to_string(tokens.t[1:i], '.') AS prefix, cardinality(tokens.t) AS n
        FROM tokens, generate_series(0, cardinality(tokens.t)) AS i
    )
    SELECT b.*
    FROM prefixes p
    JOIN catbird.cb_bindings b ON b.prefix = p.prefix
    WHERE (b.token_count = p.n OR (b.has_hash AND b.token_count <= p.n))
      AND (b.regex IS NULL OR topic ~ b.regex)
$$;

CREATE FUNCTION catbird.cb_publish(
    topic text, bodies jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_names text[];
    v_queue_ids int[];
    v_target record;
    v_deliveries int := 0;
BEGIN
    PERFORM catbird._cb_check_topic(topic);
    PERFORM catbird._cb_check_send_args(bodies, topic, concurrency_keys, headers);
    IF cardinality(bodies) = 0 THEN
        RETURN 0;
    END IF;
    -- Shared locks on the matched names first (in a stable order), then their
    -- ids with a fresh snapshot: a queue deleted meanwhile is left out, and a
    -- queue bound meanwhile is not written into without its lock.
    SELECT array_agg(DISTINCT b.target_name ORDER BY b.target_name) INTO v_names
    FROM catbird._cb_matching_bindings(topic) b WHERE b.target_type = 'queue';
    PERFORM catbird._cb_lock_definition('queue', n) FROM unnest(v_names) AS n;
    SELECT array_agg(q.id ORDER BY q.id) INTO v_queue_ids
    FROM catbird.cb_queues q WHERE q.name = ANY (v_names);
    IF v_queue_ids IS NOT NULL THEN
        PERFORM catbird._cb_insert_messages(v_queue_ids, bodies, topic, concurrency_keys, headers,
                                            visible_at, priority, expires_at);
        v_deliveries := cardinality(v_queue_ids) * cardinality(bodies);
    END IF;

    -- Bound tasks and flows get one run per message.
    FOR v_target IN
        SELECT DISTINCT b.target_name AS name FROM catbird._cb_matching_bindings(topic) b
        WHERE b.target_type = 'task' ORDER BY 1
    LOOP
        PERFORM catbird._cb_lock_definition('task', v_target.name);
        PERFORM catbird._cb_insert_task_runs(t, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
        FROM catbird.cb_tasks t WHERE t.name = v_target.name;
        IF FOUND THEN
            v_deliveries := v_deliveries + cardinality(bodies);
        END IF;
    END LOOP;

    -- Bound flows get one run per message.
    FOR v_target IN
        SELECT DISTINCT b.target_name AS name FROM catbird._cb_matching_bindings(topic) b
        WHERE b.target_type = 'flow' ORDER BY 1
    LOOP
        PERFORM catbird._cb_lock_definition('flow', v_target.name);
        PERFORM catbird._cb_insert_flow_runs(f, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
        FROM catbird.cb_flows f WHERE f.name = v_target.name;
        IF FOUND THEN
            v_deliveries := v_deliveries + cardinality(bodies);
        END IF;
    END LOOP;
    RETURN v_deliveries;
END
$$;

CREATE FUNCTION catbird.cb_publish(
    topic text, body jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION 'invalid body: a message body must not be SQL NULL (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_headers(headers);
    RETURN catbird.cb_publish(topic, ARRAY[body], ARRAY[concurrency_key], ARRAY[headers],
                              visible_at, priority, expires_at);
END
$$;

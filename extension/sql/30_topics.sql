-- catbird 30_topics: topic bindings and publish.
--
-- Owns: cb_bindings (queues bind here; tasks and flows bind through the same
-- table from their own files); cb_bind, cb_unbind, cb_list_bindings, cb_publish
-- (which writes messages into bound queues and runs of bound tasks and flows).
-- Guarantees:
--   * Matching is an indexed lookup, whatever the number of bindings: for a
--     topic of up to 8 tokens publish lists every pattern that could match it
--     (each token literal or '*', optionally cut short by '#': 767 at most) and
--     looks them up by equality in cb_bindings_pattern_idx; longer topics probe
--     cb_bindings_prefix_idx with the topic's n + 1 literal prefixes and run
--     the anchored regex of those candidates only.
--   * A queue matched by several of its patterns receives one copy.
--   * cb_publish returns targets x messages, whether or not a concurrency key
--     deduplicated some of them, and writes into every target in one statement.

-- cb_bind, cb_bind_task, cb_bind_flow: binds a queue, task or flow
-- (target_type) to a pattern, holding the target's shared lock; binding twice
-- is a no-op. Returns nothing; 22023 for an invalid name, 42704 for an
-- unknown target, then 22023 for an invalid pattern.
CREATE FUNCTION catbird._cb_bind(target_type text, target_name text, pattern text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_parts record;
BEGIN
    PERFORM catbird._cb_definition_id(target_type, target_name);
    PERFORM catbird._cb_check_pattern(pattern);
    v_parts := catbird._cb_pattern_parts(pattern);
    INSERT INTO catbird.cb_bindings
        (target_type, target_name, pattern, prefix, token_count, has_hash, regex, created_at)
    VALUES (_cb_bind.target_type, _cb_bind.target_name, _cb_bind.pattern,
            v_parts.prefix, v_parts.token_count, v_parts.has_hash, v_parts.regex, catbird.cb_now())
    ON CONFLICT ON CONSTRAINT cb_bindings_target_pattern_key DO NOTHING;
END
$$;

-- cb_unbind, cb_unbind_task, cb_unbind_flow: removes a binding of a queue,
-- task or flow (target_type). Returns false when there was none; 22023 for an
-- invalid name, 42704 for an unknown target, then 22023 for an invalid pattern.
CREATE FUNCTION catbird._cb_unbind(target_type text, target_name text, pattern text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_definition_id(target_type, target_name);
    PERFORM catbird._cb_check_pattern(pattern);
    DELETE FROM catbird.cb_bindings b
    WHERE b.target_type = _cb_unbind.target_type
      AND b.target_name = _cb_unbind.target_name
      AND b.pattern = _cb_unbind.pattern;
    RETURN FOUND;
END
$$;

-- Binds a queue to a topic pattern: publishes to matching topics are
-- delivered to it. Binding twice is a no-op. Returns nothing; 42704 for an
-- unknown queue; 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_bind(queue text, pattern text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_bind('queue', queue, pattern) $$;

-- Removes a binding of a queue. Returns false when there was none; 42704 for
-- an unknown queue; 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind(queue text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('queue', queue, pattern) $$;

-- The patterns queues are bound to (all queues, or one), by queue and
-- pattern. Raises nothing; an unknown queue has no rows.
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
-- Every pattern that matches a topic of n tokens: each token literal or '*'
-- (2^n), and each such prefix of 0..n tokens followed by '#' (2^(n+1) - 1).
CREATE FUNCTION catbird._cb_topic_patterns(topic text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    v_level text[] := ARRAY[NULL::text];  -- patterns of the first i tokens (NULL: none yet)
    v_next text[];
    v_out text[] := ARRAY['#'];
    v_p text;
    v_tok text;
BEGIN
    FOREACH v_tok IN ARRAY string_to_array(topic, '.') LOOP
        v_next := '{}';
        FOREACH v_p IN ARRAY v_level LOOP
            v_next := v_next || concat_ws('.', v_p, v_tok) || concat_ws('.', v_p, '*');
        END LOOP;
        v_level := v_next;
        FOREACH v_p IN ARRAY v_level LOOP
            v_out := v_out || (v_p || '.#');
        END LOOP;
    END LOOP;
    RETURN v_out || v_level;
END
$$;

-- plpgsql, not an inlined SQL function: callers then get generic plans (an
-- inlined body with the fallback branch made every caller re-plan per call).
CREATE FUNCTION catbird._cb_matching_bindings(topic text)
RETURNS SETOF catbird.cb_bindings
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_tokens text[] := string_to_array(topic, '.');
    v_patterns text[];
BEGIN
    IF cardinality(v_tokens) <= 8 THEN
        -- At most 767 candidate patterns: exact lookups in cb_bindings_pattern_idx.
        v_patterns := catbird._cb_topic_patterns(topic);
        RETURN QUERY SELECT b.* FROM catbird.cb_bindings b WHERE b.pattern = ANY (v_patterns);
    ELSE
        -- Longer topics: literal-prefix lookups, then the regex of each candidate.
        RETURN QUERY
        SELECT b.*
        FROM generate_series(0, cardinality(v_tokens)) AS i
        JOIN catbird.cb_bindings b ON b.prefix = array_to_string(v_tokens[1:i], '.')
        WHERE (b.token_count = cardinality(v_tokens)
               OR (b.has_hash AND b.token_count <= cardinality(v_tokens)))
          AND (b.regex IS NULL OR topic ~ b.regex);
    END IF;
END
$$;

-- Publishes bodies to a topic: every queue bound to a matching pattern
-- receives each body once (in one statement), and every bound task and flow
-- gets one run per body. Returns the number of deliveries (targets x bodies).
-- 22023 for an invalid topic, bodies, keys or headers; 40001 as for cb_send.
CREATE FUNCTION catbird.cb_publish(
    topic text, bodies jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_names text[];
    v_kinds text[];
    v_targets text[];
    v_queue_ids int[];
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
    -- Tasks and flows in one list: tasks by name, then flows by name.
    SELECT array_agg(b.target_name ORDER BY b.target_name) FILTER (WHERE b.target_type = 'queue'),
           array_agg(b.target_type ORDER BY b.target_type DESC, b.target_name) FILTER (WHERE b.target_type <> 'queue'),
           array_agg(b.target_name ORDER BY b.target_type DESC, b.target_name) FILTER (WHERE b.target_type <> 'queue')
    INTO v_names, v_kinds, v_targets
    FROM (SELECT DISTINCT m.target_type, m.target_name FROM catbird._cb_matching_bindings(topic) m) b;
    PERFORM catbird._cb_lock_definition('queue', n) FROM unnest(v_names) AS n;
    SELECT array_agg(q.id ORDER BY q.id) INTO v_queue_ids
    FROM catbird.cb_queues q WHERE q.name = ANY (v_names);
    IF v_queue_ids IS NOT NULL THEN
        PERFORM catbird._cb_insert_messages(v_queue_ids, bodies, topic, concurrency_keys, headers,
                                            visible_at, priority, expires_at);
        v_deliveries := cardinality(v_queue_ids) * cardinality(bodies);
    END IF;

    -- Bound tasks and flows get one run per message (one that was deleted
    -- meanwhile is left out).
    FOR i IN 1..coalesce(cardinality(v_targets), 0) LOOP
        PERFORM catbird._cb_lock_definition(v_kinds[i], v_targets[i]);
        IF v_kinds[i] = 'task' THEN
            PERFORM catbird._cb_insert_task_runs(t, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
            FROM catbird.cb_tasks t WHERE t.name = v_targets[i];
        ELSE
            PERFORM catbird._cb_insert_flow_runs(f, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
            FROM catbird.cb_flows f WHERE f.name = v_targets[i];
        END IF;
        IF FOUND THEN
            v_deliveries := v_deliveries + cardinality(bodies);
        END IF;
    END LOOP;
    RETURN v_deliveries;
END
$$;

-- Single form of cb_publish. Returns the number of deliveries. 22023 for an
-- invalid topic, a SQL NULL body or non-object headers; 40001 as for cb_send.
CREATE FUNCTION catbird.cb_publish(
    topic text, body jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_body('body', 'message body', body, headers);
    RETURN catbird.cb_publish(topic, ARRAY[body], ARRAY[concurrency_key], ARRAY[headers],
                              visible_at, priority, expires_at);
END
$$;

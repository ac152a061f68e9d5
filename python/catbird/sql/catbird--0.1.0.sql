-- GENERATED FILE, do not edit: concatenation of extension/sql/[0-9]*.sql by 'make build'.
-- catbird 00_schema: the schema, the engine's clock, the queue and binding tables.
--
-- Owns: schema catbird (created here, not by the control file, so that it is a
-- member of the extension and DROP EXTENSION removes it); cb_now(),
-- cb_queues, cb_messages, cb_bindings, the cb_message type.
-- Guarantees:
--   * Every engine time comparison reads cb_now(), which a session can pin with
--     SET catbird.fake_now = '<timestamptz>' so expiry and visibility are
--     testable without sleeping.
--   * cb_messages is one table for every queue (queue_id column), so every
--     engine statement is static SQL with a cached plan. The claim index
--     (queue_id, priority DESC, visible_at, id) lists the visible messages of a
--     priority level before its hidden ones, so a claim never walks past rows
--     that are in flight at the same priority.
--   * A concurrency key is unique among the live messages of one queue
--     (partial unique index); it becomes reusable once the message is deleted.
--   * cb_bindings is indexed by pattern and by literal prefix so that a publish
--     finds its targets through index lookups, not by testing every pattern.

CREATE SCHEMA catbird;

CREATE FUNCTION catbird.cb_now() RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT coalesce(nullif(current_setting('catbird.fake_now', true), '')::timestamptz,
                    clock_timestamp())
$$;
COMMENT ON FUNCTION catbird.cb_now() IS
    'The engine clock: clock_timestamp(), or the session setting catbird.fake_now when it is set (for tests).';

CREATE TABLE catbird.cb_queues (
    id          int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz
);

CREATE TABLE catbird.cb_messages (
    id              bigint PRIMARY KEY,
    queue_id        int NOT NULL,
    priority        int NOT NULL,
    deliveries      int NOT NULL DEFAULT 0,
    visible_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    concurrency_key text,
    topic           text,
    headers         jsonb,
    body            jsonb NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);

-- Ids are drawn before the insert so a batch send can return them in input order.
CREATE SEQUENCE catbird.cb_messages_id_seq AS bigint OWNED BY catbird.cb_messages.id;
ALTER TABLE catbird.cb_messages ALTER COLUMN id SET DEFAULT nextval('catbird.cb_messages_id_seq');

CREATE INDEX cb_messages_claim_idx
    ON catbird.cb_messages (queue_id, priority DESC, visible_at, id);
CREATE INDEX cb_messages_expiry_idx ON catbird.cb_messages (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX cb_messages_concurrency_key_idx
    ON catbird.cb_messages (queue_id, concurrency_key) WHERE concurrency_key IS NOT NULL;

CREATE TYPE catbird.cb_message AS (
    id              bigint,
    concurrency_key text,
    topic           text,
    body            jsonb,
    headers         jsonb,
    priority        int,
    deliveries      int,
    created_at      timestamptz,
    visible_at      timestamptz,
    expires_at      timestamptz
);

CREATE TABLE catbird.cb_bindings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_type text NOT NULL CHECK (target_type IN ('queue', 'task', 'flow')),
    target_name text NOT NULL,
    pattern     text NOT NULL,
    -- literal tokens before the first wildcard ('' when the pattern starts with one)
    prefix      text NOT NULL,
    -- tokens in the pattern, not counting a trailing '#'
    token_count int NOT NULL,
    has_hash    boolean NOT NULL,
    -- anchored regular expression; null for a pattern without wildcards
    regex       text,
    created_at  timestamptz NOT NULL,
    CONSTRAINT cb_bindings_target_pattern_key UNIQUE (target_type, target_name, pattern)
);
CREATE INDEX cb_bindings_pattern_idx ON catbird.cb_bindings (pattern);
CREATE INDEX cb_bindings_prefix_idx ON catbird.cb_bindings (prefix, token_count);
-- catbird 10_names: validation of names, topics, patterns and arguments.
--
-- Owns: the _cb_check_* helpers. Each raises SQLSTATE 22023
-- (invalid_parameter_value) with a message that says what was wrong and what is
-- allowed; none writes anything. Callers validate before their first write, so
-- a rejected call leaves the database as it was.

CREATE FUNCTION catbird._cb_check_name(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]*$' OR length(name) > 58 THEN
        RAISE EXCEPTION 'invalid % name %: a name starts with a lowercase letter, continues with lowercase letters, digits or underscores, and has at most 58 characters',
            kind, coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION catbird._cb_check_topic(topic text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF topic IS NULL OR topic !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'invalid topic %: a topic is one or more tokens of letters, digits, "_" or "-", separated by "." (e.g. orders.eu.created); wildcards belong in patterns only',
            coalesce(quote_literal(topic), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION catbird._cb_check_pattern(pattern text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF pattern IS NULL
       OR pattern !~ '^(#|([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.#)?)$' THEN
        RAISE EXCEPTION 'invalid pattern %: a pattern is a topic whose tokens may be "*" (exactly one token), and whose last token may be "#" (zero or more tokens), e.g. orders.*.created or orders.#',
            coalesce(quote_literal(pattern), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks an integer argument against its lower bound; used for quantities (>= 1),
-- durations in milliseconds (hide_for >= 1, poll_for >= 0) and intervals.
CREATE FUNCTION catbird._cb_check_at_least(argument text, value bigint, minimum bigint, unit text = '')
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR value < minimum THEN
        RAISE EXCEPTION 'invalid %: got %, expected an integer of at least %',
            argument, coalesce(value::text, 'NULL'), minimum::text || unit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION catbird._cb_check_headers(headers jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'invalid headers %: headers must be a JSON object (or null)', headers::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Splits a valid pattern into the columns cb_bindings indexes (see 00_schema).
CREATE FUNCTION catbird._cb_pattern_parts(pattern text,
    OUT prefix text, OUT token_count int, OUT has_hash boolean, OUT regex text)
LANGUAGE sql IMMUTABLE STRICT
AS $$
    WITH tokens AS (
        SELECT t.token, t.pos
        FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS t(token, pos)
    ), shape AS (
        SELECT coalesce(min(pos) FILTER (WHERE token IN ('*', '#')), count(*) + 1) AS first_wild,
               bool_or(token = '#') AS has_hash,
               count(*) FILTER (WHERE token <> '#') AS token_count
        FROM tokens
    )
    SELECT coalesce((SELECT string_agg(token, '.' ORDER BY pos) FROM tokens WHERE pos < s.first_wild), ''),
           s.token_count::int,
           s.has_hash,
           CASE WHEN pattern !~ '[*#]' THEN NULL
                WHEN pattern = '#' THEN '^.*$'
                ELSE '^' || (SELECT string_agg(
                                        CASE WHEN token = '#' THEN '(\.[A-Za-z0-9_-]+)*'
                                             ELSE CASE WHEN pos > 1 THEN '\.' ELSE '' END
                                                  || CASE WHEN token = '*' THEN '[A-Za-z0-9_-]+' ELSE token END
                                        END, '' ORDER BY pos)
                             FROM tokens) || '$'
           END
    FROM shape s
$$;
-- catbird 20_queues: queues and their messages.
--
-- Owns: cb_queues, cb_messages; create/delete/purge, send (single and batch),
-- read (claim with a visibility window), read_poll, hide, delete, introspection.
-- Guarantees:
--   * cb_read claims with FOR UPDATE SKIP LOCKED: concurrent readers never get
--     the same message inside its hide window; each claim counts a delivery.
--   * Expired messages (expires_at <= cb_now()) are never returned.
--   * A send holds a shared advisory lock on the queue name until its
--     transaction ends and cb_delete_queue takes it exclusively, so a message is
--     never written into a queue that is being deleted.
--   * cb_send with a concurrency key held by a live message of the queue writes
--     nothing and returns the live message's id.

-- Definitions (queues, tasks, flows) are guarded by transaction-level advisory
-- locks keyed on kind and name: writers of runs and messages hold the shared
-- lock, deleting the definition takes it exclusively.
CREATE FUNCTION catbird._cb_lock_definition(kind text, name text, exclusive boolean = false)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF exclusive THEN
        PERFORM pg_advisory_xact_lock(1667326066, hashtext(kind || '/' || name));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext(kind || '/' || name));
    END IF;
END
$$;

-- The id of a queue, holding the queue's shared lock; 42704 when it does not
-- exist (22023 when the name could never exist).
CREATE FUNCTION catbird._cb_queue_id(queue text) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    PERFORM catbird._cb_lock_definition('queue', queue);
    SELECT q.id INTO v_id FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_id IS NULL THEN
        PERFORM catbird._cb_check_name('queue', queue);
        RAISE EXCEPTION 'queue "%" does not exist', queue
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it first: SELECT catbird.cb_create_queue(%L);', queue);
    END IF;
    RETURN v_id;
END
$$;

CREATE FUNCTION catbird.cb_create_queue(name text, expires_at timestamptz = NULL, description text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_name('queue', name);
    INSERT INTO catbird.cb_queues (name, description, created_at, expires_at)
    VALUES (cb_create_queue.name, cb_create_queue.description, catbird.cb_now(), cb_create_queue.expires_at)
    ON CONFLICT ON CONSTRAINT cb_queues_name_key DO NOTHING;
END
$$;

CREATE FUNCTION catbird.cb_delete_queue(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name('queue', name);
    -- Waits for in-flight sends to this queue to commit or roll back.
    PERFORM catbird._cb_lock_definition('queue', name, exclusive => true);
    DELETE FROM catbird.cb_queues q WHERE q.name = cb_delete_queue.name RETURNING q.id INTO v_id;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    DELETE FROM catbird.cb_messages m WHERE m.queue_id = v_id;
    DELETE FROM catbird.cb_bindings b WHERE b.target_type = 'queue' AND b.target_name = cb_delete_queue.name;
    RETURN true;
END
$$;

CREATE FUNCTION catbird.cb_purge_queue(name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := catbird._cb_queue_id(name);
    v_count bigint;
BEGIN
    DELETE FROM catbird.cb_messages m WHERE m.queue_id = v_queue_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- The one implementation of sending: inserts bodies[i] into every queue of
-- queue_ids, deduplicating by concurrency key, and returns, for the first
-- queue, the id each input position resolved to (inserted or already live).
-- Callers have validated everything and hold the queues' shared locks.
CREATE FUNCTION catbird._cb_insert_messages(
    queue_ids int[], bodies jsonb[], topic text, concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_id bigint;
BEGIN
    -- Fast path: no concurrency key anywhere (the common case) needs no
    -- ON CONFLICT arbiter, no dedup join and no aggregate over the input.
    IF concurrency_keys IS NULL OR cardinality(array_remove(concurrency_keys, NULL)) = 0 THEN
        IF cardinality(queue_ids) = 1 AND cardinality(bodies) = 1 THEN
            INSERT INTO catbird.cb_messages
                (id, queue_id, priority, visible_at, created_at, expires_at, topic, headers, body)
            VALUES (nextval('catbird.cb_messages_id_seq'), queue_ids[1],
                    coalesce(_cb_insert_messages.priority, 0),
                    coalesce(_cb_insert_messages.visible_at, v_now), v_now,
                    _cb_insert_messages.expires_at, _cb_insert_messages.topic,
                    _cb_insert_messages.headers[1], bodies[1])
            RETURNING id INTO v_id;
            RETURN ARRAY[v_id];
        END IF;
        -- Ids are drawn after the sort, in (queue, position) order: for one
        -- queue, ascending ids are the input order.
        WITH inserted AS (
            INSERT INTO catbird.cb_messages
                (id, queue_id, priority, visible_at, created_at, expires_at, topic, headers, body)
            SELECT nextval('catbird.cb_messages_id_seq'), q.queue_id,
                   coalesce(_cb_insert_messages.priority, 0),
                   coalesce(_cb_insert_messages.visible_at, v_now), v_now,
                   _cb_insert_messages.expires_at, _cb_insert_messages.topic, u.headers, u.body
            FROM unnest(queue_ids) WITH ORDINALITY AS q(queue_id, queue_ord),
                 unnest(bodies, _cb_insert_messages.headers) WITH ORDINALITY AS u(body, headers, ord)
            ORDER BY q.queue_ord, u.ord
            RETURNING id, queue_id
        )
        SELECT array_agg(i.id ORDER BY i.id) INTO v_ids FROM inserted i WHERE i.queue_id = queue_ids[1];
        RETURN v_ids;
    END IF;
    WITH input AS (
        SELECT q.queue_id, u.ord, u.body, u.concurrency_key, u.headers,
               nextval('catbird.cb_messages_id_seq') AS new_id
        FROM unnest(queue_ids) WITH ORDINALITY AS q(queue_id, queue_ord),
             unnest(bodies, concurrency_keys, _cb_insert_messages.headers)
                 WITH ORDINALITY AS u(body, concurrency_key, headers, ord)
        ORDER BY q.queue_ord, u.ord
    ), inserted AS (
        INSERT INTO catbird.cb_messages
            (id, queue_id, priority, visible_at, created_at, expires_at, concurrency_key, topic, headers, body)
        SELECT i.new_id, i.queue_id, coalesce(_cb_insert_messages.priority, 0),
               coalesce(_cb_insert_messages.visible_at, v_now), v_now, _cb_insert_messages.expires_at,
               i.concurrency_key, _cb_insert_messages.topic, i.headers, i.body
        FROM input i
        ORDER BY i.new_id
        ON CONFLICT (queue_id, concurrency_key) WHERE concurrency_key IS NOT NULL DO NOTHING
        RETURNING id, queue_id, concurrency_key
    )
    SELECT array_agg(coalesce(
               ins.id,
               -- an earlier position of this batch took the key
               (SELECT min(dup.id) FROM inserted dup
                 WHERE dup.queue_id = i.queue_id AND dup.concurrency_key = i.concurrency_key),
               -- a live message already held it
               (SELECT m.id FROM catbird.cb_messages m
                 WHERE m.queue_id = i.queue_id AND m.concurrency_key = i.concurrency_key))
           ORDER BY i.ord)
    INTO v_ids
    FROM input i
    LEFT JOIN inserted ins ON ins.id = i.new_id
    WHERE i.queue_id = queue_ids[1];

    IF array_position(v_ids, NULL) IS NOT NULL THEN
        -- The key's holder committed after this statement's snapshot was taken:
        -- look again with a fresh snapshot.
        SELECT array_agg(coalesce(v_ids[k.ord], m.id) ORDER BY k.ord)
        INTO v_ids
        FROM unnest(concurrency_keys) WITH ORDINALITY AS k(concurrency_key, ord)
        LEFT JOIN catbird.cb_messages m
               ON m.queue_id = queue_ids[1] AND m.concurrency_key = k.concurrency_key
              AND v_ids[k.ord] IS NULL;
        IF array_position(v_ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'the message holding a concurrency key was deleted while this send deduplicated against it'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the send.';
        END IF;
    END IF;
    RETURN v_ids;
END
$$;

-- Validates the arguments shared by the single and batch forms of send and publish.
CREATE FUNCTION catbird._cb_check_send_args(bodies jsonb[], topic text, concurrency_keys text[], headers jsonb[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF bodies IS NULL OR array_ndims(bodies) > 1 OR array_position(bodies, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'invalid bodies: expected a one-dimensional array of JSON values without SQL NULLs (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NOT NULL THEN
        PERFORM catbird._cb_check_topic(topic);
    END IF;
    IF concurrency_keys IS NOT NULL AND cardinality(concurrency_keys) <> cardinality(bodies) THEN
        RAISE EXCEPTION 'invalid concurrency_keys: got % keys for % bodies; give one key (or NULL) per body',
            cardinality(concurrency_keys), cardinality(bodies)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers IS NOT NULL THEN
        IF cardinality(headers) <> cardinality(bodies) THEN
            RAISE EXCEPTION 'invalid headers: got % headers for % bodies; give one object (or NULL) per body',
                cardinality(headers), cardinality(bodies)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM catbird._cb_check_headers(h) FROM unnest(headers) AS h;
    END IF;
END
$$;

CREATE FUNCTION catbird.cb_send(
    queue text, bodies jsonb[], topic text = NULL, concurrency_keys text[] = NULL,
    headers jsonb[] = NULL, visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := catbird._cb_queue_id(queue);
BEGIN
    PERFORM catbird._cb_check_send_args(bodies, topic, concurrency_keys, headers);
    IF cardinality(bodies) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    RETURN catbird._cb_insert_messages(ARRAY[v_queue_id], bodies, topic, concurrency_keys, headers,
                                       visible_at, priority, expires_at);
END
$$;

CREATE FUNCTION catbird.cb_send(
    queue text, body jsonb, topic text = NULL, concurrency_key text = NULL,
    headers jsonb = NULL, visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := catbird._cb_queue_id(queue);
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION 'invalid body: a message body must not be SQL NULL (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF topic IS NOT NULL THEN
        PERFORM catbird._cb_check_topic(topic);
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        PERFORM catbird._cb_check_headers(headers);
    END IF;
    RETURN (catbird._cb_insert_messages(ARRAY[v_queue_id], ARRAY[body], topic,
                                        CASE WHEN concurrency_key IS NOT NULL THEN ARRAY[concurrency_key] END,
                                        ARRAY[headers], visible_at, priority, expires_at))[1];
END
$$;

-- A generic plan keeps the claim on the claim index; with LIMIT quantity the
-- planner would otherwise re-plan (custom plans) on every call.
CREATE FUNCTION catbird.cb_read(queue text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_message
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now timestamptz;
    v_queue_id int;
BEGIN
    IF quantity IS NULL OR quantity < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    END IF;
    IF hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    SELECT q.id INTO v_queue_id FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_queue_id IS NULL THEN
        v_queue_id := catbird._cb_queue_id(queue);  -- raises the clear error
    END IF;
    v_now := catbird.cb_now();
    RETURN QUERY
    WITH claimed AS (
        SELECT m.id, m.visible_at AS was_visible_at
        FROM catbird.cb_messages m
        WHERE m.queue_id = v_queue_id
          AND m.visible_at <= v_now
          AND (m.expires_at IS NULL OR m.expires_at > v_now)
        ORDER BY m.priority DESC, m.visible_at, m.id
        LIMIT quantity
        FOR UPDATE SKIP LOCKED
    ), updated AS (
        UPDATE catbird.cb_messages m
        SET visible_at = v_now + make_interval(secs => hide_for / 1000.0),
            deliveries = m.deliveries + 1
        FROM claimed c
        WHERE m.id = c.id
          AND m.id = ANY (ARRAY(SELECT c2.id FROM claimed c2))  -- keeps the generic plan on the primary key
        RETURNING m.id, m.concurrency_key, m.topic, m.body, m.headers, m.priority, m.deliveries,
                  m.created_at, m.visible_at, m.expires_at, c.was_visible_at
    )
    SELECT u.id, u.concurrency_key, u.topic, u.body, u.headers, u.priority, u.deliveries,
           u.created_at, u.visible_at, u.expires_at
    FROM updated u
    ORDER BY u.priority DESC, u.was_visible_at, u.id;  -- the order they were claimed in
END
$$;

CREATE FUNCTION catbird.cb_read_poll(queue text, quantity int, hide_for int,
                                     poll_for int = 5000, poll_interval int = 100)
RETURNS SETOF catbird.cb_message
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    -- Polling paces itself on the wall clock: a pinned cb_now() must not stop time here.
    v_deadline timestamptz;
BEGIN
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        RETURN QUERY SELECT * FROM catbird.cb_read(queue, quantity, hide_for);
        IF FOUND OR clock_timestamp() >= v_deadline THEN
            RETURN;
        END IF;
        PERFORM pg_sleep(least(poll_interval / 1000.0,
                               extract(epoch FROM v_deadline - clock_timestamp())));
    END LOOP;
END
$$;

CREATE FUNCTION catbird.cb_hide(queue text, ids bigint[], hide_for int) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := catbird._cb_queue_id(queue);
    v_now timestamptz := catbird.cb_now();
    v_hidden bigint[];
BEGIN
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    WITH hidden AS (
        UPDATE catbird.cb_messages m
        SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        WHERE m.queue_id = v_queue_id AND m.id = ANY (ids)
        RETURNING m.id
    )
    SELECT coalesce(array_agg(h.id ORDER BY h.id), '{}') INTO v_hidden FROM hidden h;
    RETURN v_hidden;
END
$$;

CREATE FUNCTION catbird.cb_hide(queue text, id bigint, hide_for int) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT cardinality(catbird.cb_hide(queue, ARRAY[id], hide_for)) > 0 $$;

CREATE FUNCTION catbird.cb_delete(queue text, ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int;
    v_deleted bigint[];
BEGIN
    -- Deleting needs no definition lock: a plain lookup, as in cb_read.
    SELECT q.id INTO v_queue_id FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_queue_id IS NULL THEN
        v_queue_id := catbird._cb_queue_id(queue);  -- raises the clear error
    END IF;
    WITH deleted AS (
        DELETE FROM catbird.cb_messages m
        WHERE m.queue_id = v_queue_id AND m.id = ANY (ids)
        RETURNING m.id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO v_deleted FROM deleted d;
    RETURN v_deleted;
END
$$;

CREATE FUNCTION catbird.cb_delete(queue text, id bigint) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT cardinality(catbird.cb_delete(queue, ARRAY[id])) > 0 $$;

-- Queue introspection. depth counts every message; visible those readable now;
-- oldest_visible_at is the earliest visible_at among the readable ones.
CREATE FUNCTION catbird._cb_queue_info(names text[])
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz)
LANGUAGE sql VOLATILE
AS $$
    WITH now AS (SELECT catbird.cb_now() AS ts)
    SELECT q.name, q.description, q.created_at, q.expires_at,
           coalesce(s.depth, 0), coalesce(s.visible, 0), s.oldest_visible_at
    FROM catbird.cb_queues q
    CROSS JOIN now
    LEFT JOIN LATERAL (
        SELECT count(*) AS depth,
               count(*) FILTER (WHERE m.visible_at <= now.ts
                                  AND (m.expires_at IS NULL OR m.expires_at > now.ts)) AS visible,
               min(m.visible_at) FILTER (WHERE m.visible_at <= now.ts
                                           AND (m.expires_at IS NULL OR m.expires_at > now.ts)) AS oldest_visible_at
        FROM catbird.cb_messages m
        WHERE m.queue_id = q.id
    ) s ON true
    WHERE names IS NULL OR q.name = ANY (names)
    ORDER BY q.name
$$;

CREATE FUNCTION catbird.cb_list_queues()
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_queue_info(NULL) $$;

CREATE FUNCTION catbird.cb_get_queue(name text)
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_queue_info(ARRAY[name]) $$;
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

CREATE FUNCTION catbird.cb_publish(
    topic text, bodies jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_names text[];
    v_tasks text[];
    v_flows text[];
    v_queue_ids int[];
    v_target text;
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
    SELECT array_agg(DISTINCT b.target_name ORDER BY b.target_name) FILTER (WHERE b.target_type = 'queue'),
           array_agg(DISTINCT b.target_name ORDER BY b.target_name) FILTER (WHERE b.target_type = 'task'),
           array_agg(DISTINCT b.target_name ORDER BY b.target_name) FILTER (WHERE b.target_type = 'flow')
    INTO v_names, v_tasks, v_flows
    FROM catbird._cb_matching_bindings(topic) b;
    PERFORM catbird._cb_lock_definition('queue', n) FROM unnest(v_names) AS n;
    SELECT array_agg(q.id ORDER BY q.id) INTO v_queue_ids
    FROM catbird.cb_queues q WHERE q.name = ANY (v_names);
    IF v_queue_ids IS NOT NULL THEN
        PERFORM catbird._cb_insert_messages(v_queue_ids, bodies, topic, concurrency_keys, headers,
                                            visible_at, priority, expires_at);
        v_deliveries := cardinality(v_queue_ids) * cardinality(bodies);
    END IF;

    -- Bound tasks and flows get one run per message.
    FOREACH v_target IN ARRAY coalesce(v_tasks, '{}') LOOP
        PERFORM catbird._cb_lock_definition('task', v_target);
        PERFORM catbird._cb_insert_task_runs(t, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
        FROM catbird.cb_tasks t WHERE t.name = v_target;
        IF FOUND THEN
            v_deliveries := v_deliveries + cardinality(bodies);
        END IF;
    END LOOP;

    -- Bound flows get one run per message.
    FOREACH v_target IN ARRAY coalesce(v_flows, '{}') LOOP
        PERFORM catbird._cb_lock_definition('flow', v_target);
        PERFORM catbird._cb_insert_flow_runs(f, bodies, concurrency_keys, headers, visible_at, priority, expires_at)
        FROM catbird.cb_flows f WHERE f.name = v_target;
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
-- catbird 35_conditions: the condition language of tasks and flow steps.
--
-- Owns: _cb_parse_condition (text -> jsonb, at definition time) and
-- _cb_eval_condition (jsonb x context -> boolean, when a run or step is created
-- or becomes ready). Grammar, one expression, no and/or:
--     condition := 'not' condition | path | path 'exists' | path op value
--     op        := eq | ne | gt | gte | lt | lte | in | contains
--     path      := root ('.' key)*          root: input, signal or a step name
--     value     := a JSON literal ("text", 12, true, null, [..], {..}) or a bare word (a string)
-- Guarantees:
--   * A malformed condition, or one whose root is not allowed where it is
--     used, is rejected with 22023 at definition time.
--   * A missing field makes every comparison false and `exists` false; `not`
--     negates the result, so `not input.x eq 1` is true when x is missing.
--   * gt/gte/lt/lte compare numbers with numbers and strings with strings; any
--     other pairing is false. A bare path is true unless missing, null, false,
--     0, "", [] or {}.

CREATE FUNCTION catbird._cb_parse_condition(condition text, allowed_roots text[]) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_match text[];
    v_path text[];
    v_value jsonb;
    v_path_re constant text := '([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)';
    v_syntax constant text := 'a condition is "<path> <op> <value>", "<path> exists", "<path>" or "not <condition>"; ops: eq ne gt gte lt lte in contains; paths start with %s';
BEGIN
    IF condition IS NULL OR btrim(condition) = '' THEN
        RAISE EXCEPTION 'invalid condition %: it is empty', coalesce(quote_literal(condition), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
    END IF;

    v_match := regexp_match(condition, '^\s*not\s+(.+)$');
    IF v_match IS NOT NULL THEN
        RETURN jsonb_build_object('not', catbird._cb_parse_condition(v_match[1], allowed_roots));
    END IF;

    v_match := regexp_match(condition, '^\s*' || v_path_re || '(?:\s+(exists|eq|ne|gte|gt|lte|lt|in|contains)(?:\s+(.+?))?)?\s*$');
    IF v_match IS NULL THEN
        RAISE EXCEPTION 'invalid condition %: cannot parse it', quote_literal(condition)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
    END IF;

    v_path := string_to_array(v_match[1], '.');
    IF NOT v_path[1] = ANY (allowed_roots) THEN
        RAISE EXCEPTION 'invalid condition %: path "%" must start with one of: %',
            quote_literal(condition), v_match[1], array_to_string(allowed_roots, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF v_match[2] IS NULL OR v_match[2] = 'exists' THEN
        IF v_match[3] IS NOT NULL THEN
            RAISE EXCEPTION 'invalid condition %: nothing may follow "%"', quote_literal(condition),
                coalesce(v_match[2], v_match[1])
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
        END IF;
        RETURN jsonb_build_object('path', to_jsonb(v_path), 'op', coalesce(v_match[2], 'truthy'));
    END IF;

    IF v_match[3] IS NULL THEN
        RAISE EXCEPTION 'invalid condition %: operator "%" needs a value', quote_literal(condition), v_match[2]
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        v_value := v_match[3]::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        IF v_match[3] ~ '^[A-Za-z_][A-Za-z0-9_.-]*$' THEN
            v_value := to_jsonb(v_match[3]);
        ELSE
            RAISE EXCEPTION 'invalid condition %: value % is neither JSON nor a bare word',
                quote_literal(condition), v_match[3]
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Quote strings: input.status eq "on hold"';
        END IF;
    END;
    IF v_match[2] = 'in' AND jsonb_typeof(v_value) <> 'array' THEN
        RAISE EXCEPTION 'invalid condition %: "in" needs a JSON array, e.g. input.k in [1, 2]', quote_literal(condition)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN jsonb_build_object('path', to_jsonb(v_path), 'op', v_match[2], 'value', v_value);
END
$$;

-- The root names a parsed condition reads (e.g. to check flow step references).
CREATE FUNCTION catbird._cb_condition_root(expr jsonb) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT CASE WHEN expr ? 'not' THEN catbird._cb_condition_root(expr -> 'not')
                ELSE expr -> 'path' ->> 0 END
$$;

CREATE FUNCTION catbird._cb_eval_condition(expr jsonb, context jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_actual jsonb;
    v_expected jsonb;
BEGIN
    IF expr IS NULL THEN
        RETURN true;
    END IF;
    IF expr ? 'not' THEN
        RETURN NOT catbird._cb_eval_condition(expr -> 'not', context);
    END IF;
    v_actual := context #> ARRAY(SELECT jsonb_array_elements_text(expr -> 'path'));
    v_expected := expr -> 'value';
    IF v_actual IS NULL THEN
        RETURN false;  -- missing field
    END IF;
    RETURN CASE expr ->> 'op'
        WHEN 'truthy' THEN v_actual NOT IN ('null', 'false', '0', '""', '[]', '{}')
        WHEN 'exists' THEN true
        WHEN 'eq' THEN v_actual = v_expected
        WHEN 'ne' THEN v_actual <> v_expected
        WHEN 'in' THEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_expected) e WHERE e = v_actual)
        WHEN 'contains' THEN CASE jsonb_typeof(v_actual)
            WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements(v_actual) e WHERE e = v_expected)
            WHEN 'string' THEN jsonb_typeof(v_expected) = 'string'
                               AND strpos(v_actual #>> '{}', v_expected #>> '{}') > 0
            WHEN 'object' THEN jsonb_typeof(v_expected) = 'string' AND v_actual ? (v_expected #>> '{}')
            ELSE false END
        ELSE CASE
            WHEN jsonb_typeof(v_actual) = 'number' AND jsonb_typeof(v_expected) = 'number' THEN
                CASE expr ->> 'op'
                    WHEN 'gt' THEN (v_actual #>> '{}')::numeric > (v_expected #>> '{}')::numeric
                    WHEN 'gte' THEN (v_actual #>> '{}')::numeric >= (v_expected #>> '{}')::numeric
                    WHEN 'lt' THEN (v_actual #>> '{}')::numeric < (v_expected #>> '{}')::numeric
                    ELSE (v_actual #>> '{}')::numeric <= (v_expected #>> '{}')::numeric END
            WHEN jsonb_typeof(v_actual) = 'string' AND jsonb_typeof(v_expected) = 'string' THEN
                CASE expr ->> 'op'
                    WHEN 'gt' THEN (v_actual #>> '{}') > (v_expected #>> '{}')
                    WHEN 'gte' THEN (v_actual #>> '{}') >= (v_expected #>> '{}')
                    WHEN 'lt' THEN (v_actual #>> '{}') < (v_expected #>> '{}')
                    ELSE (v_actual #>> '{}') <= (v_expected #>> '{}') END
            ELSE false END
    END;
END
$$;
-- catbird 40_tasks: task definitions, runs, claims, retries and on-fail handling.
--
-- Owns: cb_tasks, cb_task_runs, the cb_task_claim type; the task verbs of the
-- public API and the worker protocol (claim, hide, complete, fail, on-fail).
-- Guarantees:
--   * A run is claimable while it is queued, or started with its lease
--     (visible_at) passed: a run whose worker died is picked up again without
--     an operator. Claims use FOR UPDATE SKIP LOCKED on the partial claim index,
--     which holds only queued and started runs.
--   * Every claim increments attempts; attempts is the fencing token: complete
--     and fail given an attempt act only on the run still started under that
--     attempt, so a stale worker cannot overwrite a newer claim's outcome.
--   * The retry decision is made here: cb_fail_task re-queues with a full-jitter
--     delay while attempts <= max_retries, else the run is failed for good.
--   * A queued run past its expires_at becomes expired when a claim meets it
--     and is never handed out.
--   * A condition that is false for the input makes the run skipped at creation.
--   * A concurrency key is held by at most one queued or started run of a task.
--   * Status changes are announced through cb_notify (80_events).

CREATE TABLE catbird.cb_tasks (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text,
    condition        text,
    condition_expr   jsonb,
    retention_period interval,
    on_fail          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL
);

CREATE SEQUENCE catbird.cb_task_runs_id_seq AS bigint;

CREATE TABLE catbird.cb_task_runs (
    id                   bigint PRIMARY KEY DEFAULT nextval('catbird.cb_task_runs_id_seq'),
    task_id              int NOT NULL,
    attempts             int NOT NULL DEFAULT 0,
    priority             int NOT NULL DEFAULT 0,
    on_fail_attempts     int NOT NULL DEFAULT 0,
    status               text NOT NULL CHECK (status IN ('queued', 'started', 'completed', 'failed',
                                                         'skipped', 'canceled', 'expired')),
    on_fail_status       text CHECK (on_fail_status IN ('queued', 'started', 'completed', 'failed')),
    visible_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz,
    started_at           timestamptz,
    completed_at         timestamptz,
    failed_at            timestamptz,
    skipped_at           timestamptz,
    expired_at           timestamptz,
    canceled_at          timestamptz,
    cancel_requested_at  timestamptz,
    on_fail_visible_at   timestamptz,
    concurrency_key      text,
    cancel_reason        text,
    error_message        text,
    on_fail_error_message text,
    input                jsonb NOT NULL,
    headers              jsonb,
    output               jsonb
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
ALTER SEQUENCE catbird.cb_task_runs_id_seq OWNED BY catbird.cb_task_runs.id;

CREATE INDEX cb_task_runs_claim_idx ON catbird.cb_task_runs (task_id, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');
CREATE UNIQUE INDEX cb_task_runs_concurrency_key_idx ON catbird.cb_task_runs (task_id, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started');
CREATE INDEX cb_task_runs_expiry_idx ON catbird.cb_task_runs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
CREATE INDEX cb_task_runs_task_idx ON catbird.cb_task_runs (task_id, id);
CREATE INDEX cb_task_runs_on_fail_idx ON catbird.cb_task_runs (task_id, on_fail_visible_at)
    WHERE on_fail_status IN ('queued', 'started');

CREATE TYPE catbird.cb_task_claim AS (
    id              bigint,
    attempts        int,
    input           jsonb,
    headers         jsonb,
    concurrency_key text,
    priority        int
);

-- The task row, holding the task's shared lock; 42704 when it does not exist.
CREATE FUNCTION catbird._cb_task(name text) RETURNS catbird.cb_tasks
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks;
BEGIN
    PERFORM catbird._cb_lock_definition('task', name);
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = _cb_task.name;
    IF v_task.id IS NULL THEN
        PERFORM catbird._cb_check_name('task', name);
        RAISE EXCEPTION 'task "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it first: SELECT catbird.cb_create_task(%L);', name);
    END IF;
    RETURN v_task;
END
$$;

CREATE FUNCTION catbird.cb_create_task(name text, description text = NULL, condition text = NULL,
                                       retention_period interval = NULL, on_fail boolean = false)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_expr jsonb;
    v_existing catbird.cb_tasks;
BEGIN
    PERFORM catbird._cb_check_name('task', name);
    IF condition IS NOT NULL THEN
        v_expr := catbird._cb_parse_condition(condition, ARRAY['input']);
    END IF;
    IF retention_period < interval '0' THEN
        RAISE EXCEPTION 'invalid retention_period %: it must not be negative (NULL keeps runs forever)', retention_period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_lock_definition('task', name, exclusive => true);
    SELECT * INTO v_existing FROM catbird.cb_tasks t WHERE t.name = cb_create_task.name;
    IF v_existing.id IS NULL THEN
        INSERT INTO catbird.cb_tasks (name, description, condition, condition_expr, retention_period, on_fail, created_at)
        VALUES (cb_create_task.name, cb_create_task.description, cb_create_task.condition, v_expr,
                cb_create_task.retention_period, coalesce(cb_create_task.on_fail, false), catbird.cb_now());
        PERFORM catbird._cb_notify('catbird.task.created', name);
        RETURN;
    END IF;
    IF (v_existing.description, v_existing.condition, v_existing.retention_period, v_existing.on_fail)
       IS NOT DISTINCT FROM (description, condition, retention_period, coalesce(on_fail, false)) THEN
        RETURN;  -- same definition: nothing to do
    END IF;
    IF EXISTS (SELECT 1 FROM catbird.cb_task_runs r
               WHERE r.task_id = v_existing.id AND r.status IN ('queued', 'started')) THEN
        RAISE EXCEPTION 'task "%" has queued or started runs; its definition cannot change while they are active', name
            USING ERRCODE = 'object_in_use',
                  HINT = 'Wait for the runs to finish or cancel them, or create the task under a new name.';
    END IF;
    UPDATE catbird.cb_tasks t
    SET description = cb_create_task.description, condition = cb_create_task.condition,
        condition_expr = v_expr, retention_period = cb_create_task.retention_period,
        on_fail = coalesce(cb_create_task.on_fail, false)
    WHERE t.id = v_existing.id;
END
$$;

CREATE FUNCTION catbird.cb_delete_task(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name('task', name);
    PERFORM catbird._cb_lock_definition('task', name, exclusive => true);
    DELETE FROM catbird.cb_tasks t WHERE t.name = cb_delete_task.name RETURNING t.id INTO v_id;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    DELETE FROM catbird.cb_task_runs r WHERE r.task_id = v_id;
    DELETE FROM catbird.cb_bindings b WHERE b.target_type = 'task' AND b.target_name = cb_delete_task.name;
    PERFORM catbird._cb_notify('catbird.task.deleted', name);
    RETURN true;
END
$$;

-- The one implementation of creating runs: one run per input, condition
-- evaluated, deduplicated by concurrency key among queued/started runs.
-- Returns the run id each input position resolved to. Callers have validated
-- the arguments and hold the task's shared lock.
CREATE FUNCTION catbird._cb_insert_task_runs(
    task catbird.cb_tasks, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_queued boolean;
BEGIN
    -- Fast path: no concurrency key anywhere needs no arbiter and no dedup join.
    -- Ids are drawn after the sort, so ascending ids are the input order.
    IF concurrency_keys IS NULL OR cardinality(array_remove(concurrency_keys, NULL)) = 0 THEN
        WITH inserted AS (
            INSERT INTO catbird.cb_task_runs
                (id, task_id, status, priority, visible_at, created_at, expires_at, skipped_at, input, headers)
            SELECT nextval('catbird.cb_task_runs_id_seq'), task.id,
                   CASE WHEN e.runnable THEN 'queued' ELSE 'skipped' END,
                   coalesce(_cb_insert_task_runs.priority, 0), coalesce(_cb_insert_task_runs.visible_at, v_now),
                   v_now, _cb_insert_task_runs.expires_at, CASE WHEN NOT e.runnable THEN v_now END,
                   e.input, e.headers
            FROM (SELECT u.input, u.headers, u.ord,
                         task.condition_expr IS NULL
                         OR catbird._cb_eval_condition(task.condition_expr, jsonb_build_object('input', u.input)) AS runnable
                  FROM unnest(inputs, _cb_insert_task_runs.headers) WITH ORDINALITY AS u(input, headers, ord)) e
            ORDER BY e.ord
            RETURNING id, status
        )
        SELECT array_agg(i.id ORDER BY i.id), bool_or(i.status = 'queued') INTO v_ids, v_queued FROM inserted i;
        IF v_queued THEN
            PERFORM catbird._cb_notify('catbird.task.queued', task.name);
        END IF;
        RETURN v_ids;
    END IF;
    WITH evaluated AS (
        SELECT u.ord, u.input, u.concurrency_key, u.headers,
               nextval('catbird.cb_task_runs_id_seq') AS new_id,
               catbird._cb_eval_condition(task.condition_expr, jsonb_build_object('input', u.input)) AS runnable
        FROM unnest(inputs, concurrency_keys, _cb_insert_task_runs.headers)
                 WITH ORDINALITY AS u(input, concurrency_key, headers, ord)
    ), input AS (
        -- A run that would be skipped still defers to a live holder of its key
        -- (a queued or started run, or an earlier runnable input of this batch).
        SELECT e.*,
               e.runnable OR e.concurrency_key IS NULL
               OR NOT (EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                               WHERE r.task_id = task.id AND r.concurrency_key = e.concurrency_key
                                 AND r.status IN ('queued', 'started'))
                       OR EXISTS (SELECT 1 FROM evaluated p
                                  WHERE p.concurrency_key = e.concurrency_key AND p.runnable AND p.ord < e.ord)) AS creates
        FROM evaluated e
    ), inserted AS (
        INSERT INTO catbird.cb_task_runs
            (id, task_id, status, priority, visible_at, created_at, expires_at, skipped_at,
             concurrency_key, input, headers)
        SELECT i.new_id, task.id, CASE WHEN i.runnable THEN 'queued' ELSE 'skipped' END,
               coalesce(_cb_insert_task_runs.priority, 0), coalesce(_cb_insert_task_runs.visible_at, v_now),
               v_now, _cb_insert_task_runs.expires_at, CASE WHEN NOT i.runnable THEN v_now END,
               i.concurrency_key, i.input, i.headers
        FROM input i
        WHERE i.creates
        ORDER BY i.new_id
        ON CONFLICT (task_id, concurrency_key)
            WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started')
            DO NOTHING
        RETURNING id, concurrency_key, status
    )
    SELECT array_agg(coalesce(
               ins.id,
               (SELECT min(dup.id) FROM inserted dup
                 WHERE dup.concurrency_key = i.concurrency_key AND dup.status = 'queued'),
               (SELECT r.id FROM catbird.cb_task_runs r
                 WHERE r.task_id = task.id AND r.concurrency_key = i.concurrency_key
                   AND r.status IN ('queued', 'started')))
           ORDER BY i.ord),
           bool_or(ins.status = 'queued')
    INTO v_ids, v_queued
    FROM input i
    LEFT JOIN inserted ins ON ins.id = i.new_id;

    IF array_position(v_ids, NULL) IS NOT NULL THEN
        SELECT array_agg(coalesce(v_ids[k.ord], r.id) ORDER BY k.ord)
        INTO v_ids
        FROM unnest(concurrency_keys) WITH ORDINALITY AS k(concurrency_key, ord)
        LEFT JOIN catbird.cb_task_runs r
               ON r.task_id = task.id AND r.concurrency_key = k.concurrency_key
              AND r.status IN ('queued', 'started') AND v_ids[k.ord] IS NULL;
        IF array_position(v_ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'the run holding a concurrency key finished while this call deduplicated against it'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the call.';
        END IF;
    END IF;
    IF v_queued THEN
        PERFORM catbird._cb_notify('catbird.task.queued', task.name);
    END IF;
    RETURN v_ids;
END
$$;

CREATE FUNCTION catbird.cb_run_task(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_send_args(inputs, NULL, concurrency_keys, headers);
    IF cardinality(inputs) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    RETURN catbird._cb_insert_task_runs(v_task, inputs, concurrency_keys, headers, visible_at, priority, expires_at);
END
$$;

CREATE FUNCTION catbird.cb_run_task(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    IF input IS NULL THEN
        RAISE EXCEPTION 'invalid input: a run input must not be SQL NULL (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        PERFORM catbird._cb_check_headers(headers);
    END IF;
    RETURN (catbird._cb_insert_task_runs(v_task, ARRAY[input],
                                         CASE WHEN concurrency_key IS NOT NULL THEN ARRAY[concurrency_key] END,
                                         ARRAY[headers], visible_at, priority, expires_at))[1];
END
$$;

CREATE FUNCTION catbird.cb_bind_task(name text, pattern text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_task(name);
    PERFORM catbird._cb_bind('task', name, pattern);
END
$$;

CREATE FUNCTION catbird.cb_unbind_task(name text, pattern text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_task(name);
    RETURN catbird._cb_unbind('task', name, pattern);
END
$$;

CREATE FUNCTION catbird.cb_claim_tasks(name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_task_claim
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task_id int;
    v_now timestamptz;
    v_wanted int := quantity;
    v_claims catbird.cb_task_claim[];
    v_expired int;
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    SELECT t.id INTO v_task_id FROM catbird.cb_tasks t WHERE t.name = cb_claim_tasks.name;
    IF v_task_id IS NULL THEN
        v_task_id := (catbird._cb_task(name)).id;  -- raises the clear error
    END IF;
    v_now := catbird.cb_now();
    -- Expired runs met on the way are retired (they leave the claim index) and
    -- do not count against quantity: claim again until it is filled or no
    -- expired run was met.
    LOOP
        WITH candidates AS (
            SELECT r.id, (r.status = 'queued' AND coalesce(r.expires_at <= v_now, false)) AS expired
            FROM catbird.cb_task_runs r
            WHERE r.task_id = v_task_id
              AND r.status IN ('queued', 'started')
              AND r.visible_at <= v_now
            ORDER BY r.priority DESC, r.visible_at, r.id
            LIMIT v_wanted
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE catbird.cb_task_runs r
            SET status = CASE WHEN c.expired THEN 'expired' ELSE 'started' END,
                attempts = r.attempts + CASE WHEN c.expired THEN 0 ELSE 1 END,
                started_at = CASE WHEN c.expired THEN r.started_at ELSE v_now END,
                expired_at = CASE WHEN c.expired THEN v_now END,
                visible_at = CASE WHEN c.expired THEN r.visible_at
                                  ELSE v_now + make_interval(secs => hide_for / 1000.0) END
            FROM candidates c
            WHERE r.id = c.id
            RETURNING r.id, r.attempts, r.input, r.headers, r.concurrency_key, r.priority, c.expired
        )
        SELECT coalesce(array_agg(ROW(c.id, c.attempts, c.input, c.headers, c.concurrency_key, c.priority)::catbird.cb_task_claim
                                  ORDER BY c.priority DESC, c.id) FILTER (WHERE NOT c.expired), '{}'),
               count(*) FILTER (WHERE c.expired)
        INTO v_claims, v_expired
        FROM claimed c;
        RETURN QUERY SELECT * FROM unnest(v_claims);
        v_wanted := v_wanted - cardinality(v_claims);
        EXIT WHEN v_expired = 0 OR v_wanted = 0;
    END LOOP;
END
$$;

-- Lease renewal for runs still being worked on.
CREATE FUNCTION catbird.cb_hide_tasks(name text, ids bigint[], hide_for int, attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids) THEN
        RAISE EXCEPTION 'invalid attempts: give one attempt per id (or none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- With attempts, only leases still held under those claims are renewed.
    UPDATE catbird.cb_task_runs r
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_tasks.attempts) AS u(id, attempt)
    WHERE r.task_id = v_task.id AND r.id = u.id AND r.id = ANY (ids) AND r.status = 'started'
      AND (u.attempt IS NULL OR r.attempts = u.attempt);
END
$$;

-- Batch completion: records the outputs of the runs still started under the
-- given attempts (NULL attempts: any), returns the ids recorded.
CREATE FUNCTION catbird.cb_complete_tasks(name text, run_ids bigint[], outputs jsonb[], attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_done bigint[];
BEGIN
    IF cardinality(run_ids) IS DISTINCT FROM cardinality(outputs)
       OR (attempts IS NOT NULL AND cardinality(attempts) <> cardinality(run_ids)) THEN
        RAISE EXCEPTION 'invalid arguments: run_ids, outputs (and attempts, when given) must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH done AS (
        UPDATE catbird.cb_task_runs r
        SET status = 'completed', output = coalesce(u.output, 'null'::jsonb), completed_at = v_now,
            error_message = NULL
        FROM unnest(run_ids, outputs, cb_complete_tasks.attempts) AS u(id, output, attempt)
        -- r.id = ANY keeps the plan on the primary key (joining the unnest alone
        -- can walk the task's whole claim index on an unanalyzed table)
        WHERE r.id = u.id AND r.id = ANY (run_ids) AND r.task_id = v_task.id AND r.status = 'started'
          AND (u.attempt IS NULL OR r.attempts = u.attempt)
        RETURNING r.id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO v_done FROM done d;
    -- One event per call (ids comma-separated, at most 500 per event), not one per run.
    PERFORM catbird._cb_notify('catbird.task.completed', string_agg(c.id::text, ',' ORDER BY c.id))
    FROM (SELECT d AS id, (row_number() OVER (ORDER BY d) - 1) / 500 AS chunk FROM unnest(v_done) AS d) c
    GROUP BY c.chunk;
    RETURN v_done;
END
$$;

CREATE FUNCTION catbird.cb_complete_task(name text, run_id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT cardinality(catbird.cb_complete_tasks(name, ARRAY[run_id], ARRAY[output], ARRAY[attempt])) > 0
$$;

-- Full-jitter retry delay in milliseconds for the given (1-based) attempt:
-- uniform in [backoff_min, min(backoff_max, backoff_min * 2^(attempt - 1))].
CREATE FUNCTION catbird._cb_retry_delay(attempt int, backoff_min int, backoff_max int) RETURNS double precision
LANGUAGE sql VOLATILE
AS $$
    SELECT backoff_min + random() * (least(backoff_max::double precision,
                                           backoff_min * power(2, least(greatest(attempt - 1, 0), 60)))
                                     - backoff_min)
$$;

CREATE FUNCTION catbird._cb_check_retry_policy(max_retries int, backoff_min int, backoff_max int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_at_least('max_retries', max_retries, 0);
    PERFORM catbird._cb_check_at_least('backoff_min', backoff_min, 0, ' ms');
    IF backoff_max IS NULL OR backoff_max < backoff_min THEN
        RAISE EXCEPTION 'invalid backoff_max: got %, expected at least backoff_min (% ms)',
            coalesce(backoff_max::text, 'NULL'), backoff_min
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION catbird.cb_fail_task(name text, run_id bigint, error_message text, attempt int = NULL,
                                     max_retries int = 0, backoff_min int = 100, backoff_max int = 2000)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_status text;
BEGIN
    PERFORM catbird._cb_check_retry_policy(max_retries, backoff_min, backoff_max);
    UPDATE catbird.cb_task_runs r
    SET status = CASE WHEN r.attempts <= max_retries THEN 'queued' ELSE 'failed' END,
        visible_at = CASE WHEN r.attempts <= max_retries
                          THEN v_now + make_interval(secs => catbird._cb_retry_delay(r.attempts, backoff_min, backoff_max) / 1000.0)
                          ELSE r.visible_at END,
        failed_at = CASE WHEN r.attempts <= max_retries THEN NULL ELSE v_now END,
        error_message = coalesce(cb_fail_task.error_message, 'unknown error'),
        on_fail_status = CASE WHEN r.attempts > max_retries AND v_task.on_fail THEN 'queued' END,
        on_fail_visible_at = CASE WHEN r.attempts > max_retries AND v_task.on_fail THEN v_now END
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'started'
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.status INTO v_status;
    IF v_status = 'failed' THEN
        PERFORM catbird._cb_notify('catbird.task.failed', run_id::text);
    END IF;
    RETURN v_status;
END
$$;

CREATE FUNCTION catbird.cb_cancel_task(name text, run_id bigint, reason text = NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_status text;
BEGIN
    UPDATE catbird.cb_task_runs r
    SET status = 'canceled', canceled_at = v_now, cancel_requested_at = v_now, cancel_reason = reason
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status IN ('queued', 'started')
    RETURNING r.status INTO v_status;
    IF v_status IS NOT NULL THEN
        PERFORM catbird._cb_notify('catbird.task.canceled', run_id::text);
        RETURN true;
    END IF;
    -- Canceling a canceled run again is not an error, and still true.
    RETURN EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                   WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'canceled');
END
$$;

CREATE FUNCTION catbird.cb_wait_task_output(name text, run_id bigint, poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_deadline timestamptz;
    v_run record;
BEGIN
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        SELECT r.status, r.output, r.error_message INTO v_run
        FROM catbird.cb_task_runs r WHERE r.id = run_id AND r.task_id = v_task.id;
        IF NOT FOUND THEN
            RETURN;  -- no such run
        END IF;
        IF v_run.status IN ('completed', 'failed', 'skipped', 'canceled', 'expired') THEN
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

CREATE FUNCTION catbird.cb_purge_task_runs(name text, older_than interval) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_count int;
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'invalid older_than %: expected a non-negative interval', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM catbird.cb_task_runs r
    WHERE r.task_id = v_task.id
      AND r.status IN ('completed', 'failed', 'skipped', 'canceled', 'expired')
      AND coalesce(r.on_fail_status, 'completed') IN ('completed', 'failed')
      AND coalesce(r.completed_at, r.failed_at, r.skipped_at, r.canceled_at, r.expired_at, r.created_at)
          <= catbird.cb_now() - older_than;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Deletes every run of the task whatever its status; in-flight work is lost
-- (workers' later reports find nothing and are refused).
CREATE FUNCTION catbird.cb_clear_task_runs(name text) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_count int;
BEGIN
    DELETE FROM catbird.cb_task_runs r WHERE r.task_id = v_task.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

CREATE FUNCTION catbird.cb_claim_task_on_fail(name text, quantity int, hide_for int = 30000)
RETURNS TABLE (id bigint, input jsonb, error_message text, attempts int, on_fail_attempts int,
               started_at timestamptz, failed_at timestamptz, concurrency_key text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    RETURN QUERY
    WITH candidates AS (
        SELECT r.id
        FROM catbird.cb_task_runs r
        WHERE r.task_id = v_task.id AND r.on_fail_status IN ('queued', 'started')
          AND r.on_fail_visible_at <= v_now
        ORDER BY r.on_fail_visible_at, r.id
        LIMIT quantity
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_task_runs r
        SET on_fail_status = 'started', on_fail_attempts = r.on_fail_attempts + 1,
            on_fail_visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c
        WHERE r.id = c.id
        RETURNING r.id, r.input, r.error_message, r.attempts, r.on_fail_attempts, r.started_at,
                  r.failed_at, r.concurrency_key
    )
    SELECT c.id, c.input, c.error_message, c.attempts, c.on_fail_attempts, c.started_at, c.failed_at,
           c.concurrency_key
    FROM claimed c ORDER BY c.id;
END
$$;

CREATE FUNCTION catbird.cb_complete_task_on_fail(name text, run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    UPDATE catbird.cb_task_runs r
    SET on_fail_status = 'completed', on_fail_error_message = NULL
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.on_fail_status = 'started';
END
$$;

CREATE FUNCTION catbird.cb_fail_task_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean, retry_delay bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_at_least('retry_delay', retry_delay, 0, ' ms');
    UPDATE catbird.cb_task_runs r
    SET on_fail_status = CASE WHEN retry_exhausted THEN 'failed' ELSE 'queued' END,
        on_fail_visible_at = catbird.cb_now() + make_interval(secs => retry_delay / 1000.0),
        on_fail_error_message = coalesce(cb_fail_task_on_fail.error_message, 'unknown error')
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.on_fail_status = 'started';
END
$$;

-- Introspection: the fields of TaskInfo and TaskRunInfo.
CREATE FUNCTION catbird.cb_list_tasks()
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT t.name, t.description, t.condition, t.retention_period, t.on_fail, t.created_at
    FROM catbird.cb_tasks t ORDER BY t.name
$$;

CREATE FUNCTION catbird.cb_get_task(name text)
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_tasks() t WHERE t.name = $1 $$;

CREATE TYPE catbird.cb_task_run_info AS (
    id bigint, task_name text, status text, priority int, attempts int, concurrency_key text,
    input jsonb, headers jsonb, output jsonb, error_message text, cancel_reason text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz,
    started_at timestamptz, completed_at timestamptz, failed_at timestamptz, skipped_at timestamptz,
    expired_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text
);

-- Every run of a task as cb_task_run_info; an inlinable building block, so
-- callers' filters, order and limit reach the index.
CREATE FUNCTION catbird._cb_task_runs(task_id int, task_name text)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql STABLE
AS $$
    SELECT r.id, task_name, r.status, r.priority, r.attempts, r.concurrency_key, r.input, r.headers,
           r.output, r.error_message, r.cancel_reason, r.created_at, r.visible_at, r.expires_at,
           r.started_at, r.completed_at, r.failed_at, r.skipped_at, r.expired_at, r.cancel_requested_at,
           r.canceled_at, r.on_fail_status, r.on_fail_attempts, r.on_fail_error_message
    FROM catbird.cb_task_runs r
    WHERE r.task_id = $1
$$;

CREATE FUNCTION catbird.cb_list_task_runs(name text, lim int = 100, before_id bigint = NULL)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY
    SELECT * FROM catbird._cb_task_runs(v_task.id, v_task.name) r
    WHERE before_id IS NULL OR r.id < before_id
    ORDER BY r.id DESC
    LIMIT lim;
END
$$;

CREATE FUNCTION catbird.cb_get_task_run(name text, run_id bigint)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    RETURN QUERY SELECT * FROM catbird._cb_task_runs(v_task.id, v_task.name) r WHERE r.id = run_id;
END
$$;
-- catbird 50_flows: flow definitions (DAGs of steps) and their runs.
--
-- Owns: cb_flows, cb_flow_steps (definitions); cb_flow_runs, cb_step_runs,
-- cb_map_tasks (runs); the cb_step_claim type; every flow verb of the public
-- API and of the worker protocol. All dispatch decisions are made here.
-- Guarantees:
--   * Every transition of a flow run (a step completing, failing, being
--     signalled; cancellation; early completion) first locks the flow run row,
--     so concurrent step completions of one run serialize and exactly one of
--     them sees the run finish. Claims never lock flow runs (lock order is
--     always flow run, then step runs), so claims and transitions cannot
--     deadlock.
--   * A step becomes runnable when every dependency is completed or skipped
--     and its signal (if declared) has arrived; its condition is evaluated
--     then, and false makes it skipped, which resolves its dependents.
--   * Mapper and generator outputs are never stored as one array: they are
--     assembled in item order from cb_map_tasks when a consumer reads them,
--     and reducers read item outputs page by page (cb_read_map_outputs).
--   * A step failing for good fails the flow at once: queued and started work
--     is canceled, later outcomes from workers are refused (false/null).
--   * cb_cancel_flow is two-phase: waiting and queued work is canceled at
--     once; the run stays canceling until started work reports back (or its
--     lease lapses and cb_gc finalizes it), then it is canceled.

CREATE TABLE catbird.cb_flows (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text,
    steps            jsonb NOT NULL,          -- normalized definition, for comparison and introspection
    output_priority  text[] NOT NULL,
    retention_period interval,
    on_fail          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL
);

CREATE TABLE catbird.cb_flow_steps (
    flow_id        int NOT NULL REFERENCES catbird.cb_flows (id) ON DELETE CASCADE,
    name           text NOT NULL,
    position       int NOT NULL,
    description    text,
    step_type      text NOT NULL CHECK (step_type IN ('normal', 'mapper', 'generator', 'reducer')),
    signal         boolean NOT NULL,
    condition      text,
    condition_expr jsonb,
    map_source     text,
    reduce_source  text,
    depends_on     text[] NOT NULL,
    ignore_output  text[] NOT NULL,
    PRIMARY KEY (flow_id, name)
);

CREATE SEQUENCE catbird.cb_flow_runs_id_seq AS bigint;

CREATE TABLE catbird.cb_flow_runs (
    id                       bigint PRIMARY KEY DEFAULT nextval('catbird.cb_flow_runs_id_seq'),
    flow_id                  int NOT NULL,
    priority                 int NOT NULL DEFAULT 0,
    on_fail_attempts         int NOT NULL DEFAULT 0,
    status                   text NOT NULL CHECK (status IN ('started', 'canceling', 'completed', 'failed',
                                                             'canceled', 'expired')),
    on_fail_status           text CHECK (on_fail_status IN ('queued', 'started', 'completed', 'failed')),
    visible_at               timestamptz NOT NULL,
    created_at               timestamptz NOT NULL,
    started_at               timestamptz NOT NULL,
    expires_at               timestamptz,
    completed_at             timestamptz,
    failed_at                timestamptz,
    canceled_at              timestamptz,
    cancel_requested_at      timestamptz,
    on_fail_visible_at       timestamptz,
    concurrency_key          text,
    cancel_reason            text,
    error_message            text,
    failed_step_name         text,
    on_fail_error_message    text,
    failed_step_attempts     int,
    input                    jsonb NOT NULL,
    headers                  jsonb,
    output                   jsonb,
    failed_step_input        jsonb,
    failed_step_signal_input jsonb
);
ALTER SEQUENCE catbird.cb_flow_runs_id_seq OWNED BY catbird.cb_flow_runs.id;
CREATE INDEX cb_flow_runs_flow_idx ON catbird.cb_flow_runs (flow_id, id);
CREATE UNIQUE INDEX cb_flow_runs_concurrency_key_idx ON catbird.cb_flow_runs (flow_id, concurrency_key)
    WHERE concurrency_key IS NOT NULL AND status IN ('started', 'canceling');
CREATE INDEX cb_flow_runs_on_fail_idx ON catbird.cb_flow_runs (flow_id, on_fail_visible_at)
    WHERE on_fail_status IN ('queued', 'started');
CREATE INDEX cb_flow_runs_active_idx ON catbird.cb_flow_runs (id) WHERE status IN ('started', 'canceling');

CREATE TABLE catbird.cb_step_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_run_id     bigint NOT NULL,
    flow_id         int NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    priority        int NOT NULL DEFAULT 0,
    deps_remaining  int NOT NULL,
    map_total       int,
    map_done        int NOT NULL DEFAULT 0,
    step_name       text NOT NULL,
    step_type       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('waiting_for_dependencies', 'waiting_for_signal',
                                                    'waiting_for_map_tasks', 'queued', 'started',
                                                    'completed', 'failed', 'skipped', 'canceled')),
    signal_received boolean NOT NULL DEFAULT false,
    generator_done  boolean NOT NULL DEFAULT false,
    visible_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    completed_at    timestamptz,
    failed_at       timestamptz,
    skipped_at      timestamptz,
    canceled_at     timestamptz,
    error_message   text,
    signal_input    jsonb,
    output          jsonb,
    UNIQUE (flow_run_id, step_name)
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX cb_step_runs_claim_idx ON catbird.cb_step_runs (flow_id, step_name, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');

CREATE TABLE catbird.cb_map_tasks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step_run_id   bigint NOT NULL,
    flow_run_id   bigint NOT NULL,
    flow_id       int NOT NULL,
    idx           int NOT NULL,
    attempts      int NOT NULL DEFAULT 0,
    priority      int NOT NULL DEFAULT 0,
    step_name     text NOT NULL,
    status        text NOT NULL CHECK (status IN ('queued', 'started', 'completed', 'failed', 'canceled')),
    visible_at    timestamptz NOT NULL,
    created_at    timestamptz NOT NULL,
    started_at    timestamptz,
    completed_at  timestamptz,
    failed_at     timestamptz,
    error_message text,
    item          jsonb NOT NULL,
    output        jsonb,
    UNIQUE (step_run_id, idx)
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX cb_map_tasks_claim_idx ON catbird.cb_map_tasks (flow_id, step_name, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');

CREATE TYPE catbird.cb_step_claim AS (
    id           bigint,
    flow_run_id  bigint,
    attempts     int,
    input        jsonb,
    step_outputs jsonb,
    signal_input jsonb
);

--------------------------------------------------------------------------------
-- Definitions
--------------------------------------------------------------------------------

-- The flow row, holding the flow's shared lock; 42704 when it does not exist.
CREATE FUNCTION catbird._cb_flow(name text) RETURNS catbird.cb_flows
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows;
BEGIN
    PERFORM catbird._cb_lock_definition('flow', name);
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = _cb_flow.name;
    IF v_flow.id IS NULL THEN
        PERFORM catbird._cb_check_name('flow', name);
        RAISE EXCEPTION 'flow "%" does not exist', name
            USING ERRCODE = 'undefined_object',
                  HINT = format('Create it first: SELECT catbird.cb_create_flow(%L, steps => ...);', name);
    END IF;
    RETURN v_flow;
END
$$;

-- A step of a flow; 42704 when the flow has no such step.
CREATE FUNCTION catbird._cb_flow_step(flow catbird.cb_flows, step_name text) RETURNS catbird.cb_flow_steps
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_step catbird.cb_flow_steps;
BEGIN
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        RAISE EXCEPTION 'flow "%" has no step "%"', flow.name, step_name
            USING ERRCODE = 'undefined_object',
                  HINT = format('Its steps are: %s.', (SELECT string_agg(s.name, ', ' ORDER BY s.position)
                                                        FROM catbird.cb_flow_steps s WHERE s.flow_id = flow.id));
    END IF;
    RETURN v_step;
END
$$;

-- Validates a steps array and returns it normalized (every key present, in a
-- fixed shape), raising 22023 with a precise message for the first problem.
CREATE FUNCTION catbird._cb_normalize_flow_steps(flow_name text, steps jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_step jsonb;
    v_name text;
    v_names text[] := '{}'::text[];
    v_deps text[];
    v_type text;
    v_normalized jsonb := '[]'::jsonb;
    v_ignore text[];
    v_cycle text;
    v_dep jsonb;
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
        RAISE EXCEPTION 'invalid steps for flow "%": expected a JSON array of step objects', flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(steps) = 0 THEN
        RAISE EXCEPTION 'invalid flow "%": it has no steps; a flow needs at least one', flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Names first, so dependencies can refer to later steps.
    FOR v_step IN SELECT s FROM jsonb_array_elements(steps) s LOOP
        IF jsonb_typeof(v_step) <> 'object' THEN
            RAISE EXCEPTION 'invalid step in flow "%": % is not a JSON object', flow_name, v_step
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_name := v_step ->> 'name';
        PERFORM catbird._cb_check_name('step', v_name);
        IF v_name IN ('input', 'signal') THEN
            RAISE EXCEPTION 'invalid step name "%" in flow "%": "input" and "signal" are reserved', v_name, flow_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_name = ANY (v_names) THEN
            RAISE EXCEPTION 'invalid flow "%": step "%" is defined twice', flow_name, v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_names := v_names || v_name;
    END LOOP;

    FOR v_step IN SELECT s FROM jsonb_array_elements(steps) s LOOP
        v_name := v_step ->> 'name';
        IF v_step ? 'depends_on' AND jsonb_typeof(v_step -> 'depends_on') NOT IN ('array', 'null') THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": expected an array of {"name": ...}', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_deps := '{}'::text[];
        FOR v_dep IN SELECT d FROM jsonb_array_elements(coalesce(nullif(v_step -> 'depends_on', 'null'), '[]')) d LOOP
            -- {"name": "a"} as in the Go API, or plain "a"
            v_deps := v_deps || CASE jsonb_typeof(v_dep) WHEN 'object' THEN v_dep ->> 'name'
                                                          WHEN 'string' THEN v_dep #>> '{}' END;
        END LOOP;
        IF array_position(v_deps, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": expected an array of {"name": ...}', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(v_deps) d GROUP BY d HAVING count(*) > 1) THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": a dependency is listed twice', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM unnest(v_deps) d WHERE NOT d = ANY (v_names)) THEN
            RAISE EXCEPTION 'invalid flow "%": step "%" depends on unknown step(s) %', flow_name, v_name,
                (SELECT string_agg(format('"%s"', d), ', ') FROM unnest(v_deps) d WHERE NOT d = ANY (v_names))
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('The steps are: %s.', array_to_string(v_names, ', '));
        END IF;
        IF jsonb_typeof(v_step -> 'signal') NOT IN ('boolean', 'null') THEN
            RAISE EXCEPTION 'invalid signal of step "%": expected true or false, got %', v_name, v_step -> 'signal'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_type := coalesce(v_step ->> 'step_type', 'normal');
        IF v_type NOT IN ('normal', 'mapper', 'generator', 'reducer') THEN
            RAISE EXCEPTION 'invalid step_type "%" of step "%": expected normal, mapper, generator or reducer', v_type, v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step ->> 'map_source_step_name' IS NOT NULL AND (v_type <> 'mapper'
           OR NOT (v_step ->> 'map_source_step_name') = ANY (v_deps)) THEN
            RAISE EXCEPTION 'invalid map source of step "%": "%" must be a dependency of a mapper step (or omit it to map the flow input)',
                v_name, v_step ->> 'map_source_step_name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_type = 'reducer' AND (v_step ->> 'reduce_source_step_name' IS NULL
           OR NOT (v_step ->> 'reduce_source_step_name') = ANY (v_deps)
           OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements(steps) s
                          WHERE s ->> 'name' = v_step ->> 'reduce_source_step_name'
                            AND s ->> 'step_type' IN ('mapper', 'generator'))) THEN
            RAISE EXCEPTION 'invalid reduce source of step "%": a reducer needs reduce_source_step_name naming a mapper or generator step among its dependencies',
                v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step ->> 'reduce_source_step_name' IS NOT NULL AND v_type <> 'reducer' THEN
            RAISE EXCEPTION 'invalid step "%": reduce_source_step_name is only for reducer steps', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step ? 'ignore_output' AND jsonb_typeof(v_step -> 'ignore_output') NOT IN ('array', 'null') THEN
            RAISE EXCEPTION 'invalid ignore_output of step "%": expected an array of dependency names', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(nullif(v_step -> 'ignore_output', 'null'), '[]')) i
                   WHERE jsonb_typeof(i) <> 'string') THEN
            RAISE EXCEPTION 'invalid ignore_output of step "%": expected an array of dependency names (strings)', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_ignore := ARRAY(SELECT jsonb_array_elements_text(coalesce(nullif(v_step -> 'ignore_output', 'null'), '[]')));
        IF EXISTS (SELECT 1 FROM unnest(v_ignore) i WHERE NOT i = ANY (v_deps)) THEN
            RAISE EXCEPTION 'invalid ignore_output of step "%": % is not a dependency', v_name,
                (SELECT string_agg(format('"%s"', i), ', ') FROM unnest(v_ignore) i WHERE NOT i = ANY (v_deps))
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step ->> 'condition' IS NOT NULL THEN
            PERFORM catbird._cb_parse_condition(
                v_step ->> 'condition',
                ARRAY['input'] || CASE WHEN (v_step ->> 'signal')::boolean THEN ARRAY['signal'] ELSE '{}' END || v_deps);
        END IF;
        v_normalized := v_normalized || jsonb_build_array(jsonb_build_object(
            'name', v_name,
            'description', v_step ->> 'description',
            'step_type', v_type,
            'signal', coalesce((v_step ->> 'signal')::boolean, false),
            'condition', v_step ->> 'condition',
            'map_source_step_name', v_step ->> 'map_source_step_name',
            'reduce_source_step_name', v_step ->> 'reduce_source_step_name',
            'depends_on', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', d) ORDER BY o), '[]')
                           FROM unnest(v_deps) WITH ORDINALITY AS x(d, o)),
            'ignore_output', to_jsonb(v_ignore)));
    END LOOP;

    -- Cycle check: walk the dependency edges from every step; coming back to
    -- the starting step is a cycle (reported with its path).
    WITH RECURSIVE edges AS (
        SELECT s ->> 'name' AS step, d ->> 'name' AS dep
        FROM jsonb_array_elements(v_normalized) s, jsonb_array_elements(s -> 'depends_on') d
    ), walk (origin, step, path) AS (
        SELECT e.step, e.dep, ARRAY[e.step, e.dep] FROM edges e
        UNION ALL
        SELECT w.origin, e.dep, w.path || e.dep
        FROM walk w JOIN edges e ON e.step = w.step
        WHERE NOT e.dep = ANY (w.path[2:]) AND w.step <> w.origin
    )
    SELECT array_to_string(w.path, ' -> ') INTO v_cycle FROM walk w WHERE w.step = w.origin LIMIT 1;
    IF v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'invalid flow "%": its dependencies form a cycle (%)', flow_name, v_cycle
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN v_normalized;
END
$$;

CREATE FUNCTION catbird.cb_create_flow(name text, description text = NULL, steps jsonb = '[]',
                                       output_priority text[] = NULL, retention_period interval = NULL,
                                       on_fail boolean = false)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_steps jsonb;
    v_output_priority text[];
    v_existing catbird.cb_flows;
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name('flow', name);
    v_steps := catbird._cb_normalize_flow_steps(name, steps);
    IF output_priority IS NOT NULL THEN
        IF cardinality(output_priority) = 0 OR array_position(output_priority, NULL) IS NOT NULL
           OR EXISTS (SELECT 1 FROM unnest(output_priority) o
                      WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_steps) s WHERE s ->> 'name' = o)) THEN
            RAISE EXCEPTION 'invalid output_priority %: it must name one or more steps of flow "%"',
                output_priority, name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_output_priority := output_priority;
    ELSE
        -- Default: the terminal steps (no dependents), in definition order.
        v_output_priority := ARRAY(
            SELECT s ->> 'name' FROM jsonb_array_elements(v_steps) WITH ORDINALITY AS x(s, o)
            WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_steps) t, jsonb_array_elements(t -> 'depends_on') d
                              WHERE d ->> 'name' = s ->> 'name')
            ORDER BY o);
    END IF;
    IF retention_period < interval '0' THEN
        RAISE EXCEPTION 'invalid retention_period %: it must not be negative (NULL keeps runs forever)', retention_period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM catbird._cb_lock_definition('flow', name, exclusive => true);
    SELECT * INTO v_existing FROM catbird.cb_flows f WHERE f.name = cb_create_flow.name;
    IF v_existing.id IS NOT NULL THEN
        IF (v_existing.description, v_existing.steps, v_existing.output_priority, v_existing.retention_period, v_existing.on_fail)
           IS NOT DISTINCT FROM (description, v_steps, v_output_priority, retention_period, coalesce(on_fail, false)) THEN
            RETURN;  -- same definition
        END IF;
        IF EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                   WHERE r.flow_id = v_existing.id AND r.status IN ('started', 'canceling')) THEN
            RAISE EXCEPTION 'flow "%" has active runs; its definition cannot change while they run', name
                USING ERRCODE = 'object_in_use',
                      HINT = 'Wait for the runs to finish or cancel them, or create the flow under a new name.';
        END IF;
        DELETE FROM catbird.cb_flow_steps s WHERE s.flow_id = v_existing.id;
        UPDATE catbird.cb_flows f
        SET description = cb_create_flow.description, steps = v_steps, output_priority = v_output_priority,
            retention_period = cb_create_flow.retention_period, on_fail = coalesce(cb_create_flow.on_fail, false)
        WHERE f.id = v_existing.id;
        v_id := v_existing.id;
    ELSE
        INSERT INTO catbird.cb_flows (name, description, steps, output_priority, retention_period, on_fail, created_at)
        VALUES (cb_create_flow.name, cb_create_flow.description, v_steps, v_output_priority,
                cb_create_flow.retention_period, coalesce(cb_create_flow.on_fail, false), catbird.cb_now())
        RETURNING id INTO v_id;
        PERFORM catbird._cb_notify('catbird.flow.created', name);
    END IF;

    INSERT INTO catbird.cb_flow_steps (flow_id, name, position, description, step_type, signal, condition,
                                       condition_expr, map_source, reduce_source, depends_on, ignore_output)
    SELECT v_id, s ->> 'name', o, s ->> 'description', s ->> 'step_type', (s ->> 'signal')::boolean,
           s ->> 'condition',
           CASE WHEN s ->> 'condition' IS NOT NULL THEN
               catbird._cb_parse_condition(s ->> 'condition',
                   ARRAY['input', 'signal'] || ARRAY(SELECT d ->> 'name' FROM jsonb_array_elements(s -> 'depends_on') d))
           END,
           s ->> 'map_source_step_name', s ->> 'reduce_source_step_name',
           ARRAY(SELECT d ->> 'name' FROM jsonb_array_elements(s -> 'depends_on') d),
           ARRAY(SELECT jsonb_array_elements_text(s -> 'ignore_output'))
    FROM jsonb_array_elements(v_steps) WITH ORDINALITY AS x(s, o);
END
$$;

CREATE FUNCTION catbird.cb_delete_flow(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name('flow', name);
    PERFORM catbird._cb_lock_definition('flow', name, exclusive => true);
    DELETE FROM catbird.cb_flows f WHERE f.name = cb_delete_flow.name RETURNING f.id INTO v_id;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    DELETE FROM catbird.cb_map_tasks m WHERE m.flow_id = v_id;
    DELETE FROM catbird.cb_step_runs s WHERE s.flow_id = v_id;
    DELETE FROM catbird.cb_flow_runs r WHERE r.flow_id = v_id;
    DELETE FROM catbird.cb_bindings b WHERE b.target_type = 'flow' AND b.target_name = cb_delete_flow.name;
    PERFORM catbird._cb_notify('catbird.flow.deleted', name);
    RETURN true;
END
$$;

CREATE FUNCTION catbird.cb_list_flows()
RETURNS TABLE (name text, description text, steps jsonb, output_priority text[], retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT f.name, f.description, f.steps, f.output_priority, f.retention_period, f.on_fail, f.created_at
    FROM catbird.cb_flows f ORDER BY f.name
$$;

CREATE FUNCTION catbird.cb_get_flow(name text)
RETURNS TABLE (name text, description text, steps jsonb, output_priority text[], retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_flows() f WHERE f.name = $1 $$;

--------------------------------------------------------------------------------
-- Dispatch (callers hold the flow run's row lock)
--------------------------------------------------------------------------------

-- The output of a finished step as its consumers see it: mapper and generator
-- outputs are their item outputs in item order.
CREATE FUNCTION catbird._cb_step_output(step_run_id bigint, step_type text, stored jsonb) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN step_type IN ('mapper', 'generator') THEN
                    (SELECT coalesce(jsonb_agg(m.output ORDER BY m.idx), '[]')
                     FROM catbird.cb_map_tasks m WHERE m.step_run_id = $1)
                ELSE stored END
$$;

-- Outputs of a step's completed dependencies, keyed by step name, without
-- ignore_output ones and without a reducer's source (read page by page).
CREATE FUNCTION catbird._cb_dependency_outputs(flow_run_id bigint, step catbird.cb_flow_steps) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(jsonb_object_agg(d.step_name, catbird._cb_step_output(d.id, d.step_type, d.output)), '{}')
    FROM catbird.cb_step_runs d
    WHERE d.flow_run_id = $1
      AND d.step_name = ANY (step.depends_on)
      AND NOT d.step_name = ANY (step.ignore_output)
      AND d.step_name IS DISTINCT FROM step.reduce_source
      AND d.status = 'completed'
$$;

-- Marks steps resolved (completed or skipped): their dependents need one
-- dependency less.
CREATE FUNCTION catbird._cb_resolve_dependents(flow_run_id bigint, flow_id int, step_name text) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    UPDATE catbird.cb_step_runs sr
    SET deps_remaining = sr.deps_remaining - 1
    FROM catbird.cb_flow_steps fs
    WHERE sr.flow_run_id = $1 AND fs.flow_id = $2 AND fs.name = sr.step_name
      AND $3 = ANY (fs.depends_on)
$$;

-- Ends a run: queued, waiting and started work is canceled (workers' later
-- reports are refused because their step is no longer started).
CREATE FUNCTION catbird._cb_cancel_open_work(flow_run_id bigint, include_started boolean) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = v_now
    WHERE sr.flow_run_id = _cb_cancel_open_work.flow_run_id
      AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal', 'waiting_for_map_tasks', 'queued')
          OR (sr.flow_run_id = _cb_cancel_open_work.flow_run_id AND include_started AND sr.status = 'started');
    UPDATE catbird.cb_map_tasks m SET status = 'canceled'
    WHERE m.flow_run_id = _cb_cancel_open_work.flow_run_id
      AND (m.status = 'queued' OR (include_started AND m.status = 'started'));
END
$$;

CREATE FUNCTION catbird._cb_fail_flow_run(flow_run_id bigint, step_name text, error_message text,
                                          step_input jsonb, signal_input jsonb, step_attempts int)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    UPDATE catbird.cb_flow_runs r
    SET status = 'failed', failed_at = v_now, error_message = _cb_fail_flow_run.error_message,
        failed_step_name = step_name, failed_step_input = step_input, failed_step_signal_input = signal_input,
        failed_step_attempts = step_attempts,
        on_fail_status = CASE WHEN f.on_fail THEN 'queued' END,
        on_fail_visible_at = CASE WHEN f.on_fail THEN v_now END
    FROM catbird.cb_flows f
    WHERE r.id = flow_run_id AND f.id = r.flow_id;
    PERFORM catbird._cb_cancel_open_work(flow_run_id, true);
    PERFORM catbird._cb_notify('catbird.flow.failed', flow_run_id::text);
END
$$;

-- Moves a run forward after any change: steps whose dependencies are resolved
-- are skipped (condition false), parked for their signal, fanned out (mapper)
-- or queued; repeats while skips and empty maps resolve further steps; then
-- completes (or fails) the run when every step is completed or skipped.
CREATE FUNCTION catbird._cb_advance_flow_run(flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_run catbird.cb_flow_runs;
    v_flow catbird.cb_flows;
    v_step record;
    v_now timestamptz := catbird.cb_now();
    v_progress boolean;
    v_context jsonb;
    v_items jsonb;
    v_output jsonb;
    v_output_step text;
BEGIN
    SELECT * INTO v_run FROM catbird.cb_flow_runs r WHERE r.id = flow_run_id;
    IF v_run.status <> 'started' THEN
        RETURN;
    END IF;
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.id = v_run.flow_id;
    LOOP
        v_progress := false;
        FOR v_step IN
            SELECT sr.id, sr.signal_received, sr.signal_input, sr.status, fs
            FROM catbird.cb_step_runs sr
            JOIN catbird.cb_flow_steps fs ON fs.flow_id = sr.flow_id AND fs.name = sr.step_name
            WHERE sr.flow_run_id = _cb_advance_flow_run.flow_run_id
              AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal')
              AND sr.deps_remaining = 0
            ORDER BY fs.position
        LOOP
            IF (v_step.fs).signal AND NOT v_step.signal_received THEN
                IF v_step.status <> 'waiting_for_signal' THEN
                    UPDATE catbird.cb_step_runs sr SET status = 'waiting_for_signal' WHERE sr.id = v_step.id;
                END IF;
                CONTINUE;
            END IF;
            v_context := NULL;
            IF (v_step.fs).condition_expr IS NOT NULL OR (v_step.fs).map_source IS NOT NULL THEN
                v_context := catbird._cb_dependency_outputs(flow_run_id, v_step.fs)
                             || jsonb_build_object('input', v_run.input)
                             || CASE WHEN v_step.signal_received
                                     THEN jsonb_build_object('signal', v_step.signal_input) ELSE '{}' END;
            END IF;
            IF NOT catbird._cb_eval_condition((v_step.fs).condition_expr, v_context) THEN
                UPDATE catbird.cb_step_runs sr SET status = 'skipped', skipped_at = v_now WHERE sr.id = v_step.id;
                PERFORM catbird._cb_resolve_dependents(flow_run_id, v_run.flow_id, (v_step.fs).name);
                v_progress := true;
                CONTINUE;
            END IF;
            IF (v_step.fs).step_type = 'mapper' THEN
                v_items := CASE WHEN (v_step.fs).map_source IS NULL THEN v_run.input
                                ELSE v_context -> (v_step.fs).map_source END;
                IF v_items IS NULL OR jsonb_typeof(v_items) <> 'array' THEN
                    UPDATE catbird.cb_step_runs sr
                    SET status = 'failed', failed_at = v_now,
                        error_message = format('mapper step "%s" maps over %s, which is %s, not an array',
                                               (v_step.fs).name,
                                               coalesce('the output of step "' || (v_step.fs).map_source || '"', 'the flow input'),
                                               coalesce(jsonb_typeof(v_items), 'absent'))
                    WHERE sr.id = v_step.id
                    RETURNING sr.error_message INTO v_output_step;
                    PERFORM catbird._cb_fail_flow_run(flow_run_id, (v_step.fs).name, v_output_step,
                                                      v_items, v_step.signal_input, 0);
                    RETURN;
                END IF;
                INSERT INTO catbird.cb_map_tasks (step_run_id, flow_run_id, flow_id, idx, priority, step_name,
                                                  status, visible_at, created_at, item)
                SELECT v_step.id, flow_run_id, v_run.flow_id, (e.ord - 1)::int, v_run.priority, (v_step.fs).name,
                       'queued', greatest(v_now, v_run.visible_at), v_now, e.item
                FROM jsonb_array_elements(v_items) WITH ORDINALITY AS e(item, ord);
                IF jsonb_array_length(v_items) = 0 THEN
                    UPDATE catbird.cb_step_runs sr SET status = 'completed', completed_at = v_now, map_total = 0
                    WHERE sr.id = v_step.id;
                    PERFORM catbird._cb_resolve_dependents(flow_run_id, v_run.flow_id, (v_step.fs).name);
                    v_progress := true;
                ELSE
                    UPDATE catbird.cb_step_runs sr
                    SET status = 'waiting_for_map_tasks', map_total = jsonb_array_length(v_items)
                    WHERE sr.id = v_step.id;
                    PERFORM catbird._cb_notify('catbird.step.queued', v_flow.name || '/' || (v_step.fs).name);
                END IF;
                CONTINUE;
            END IF;
            UPDATE catbird.cb_step_runs sr SET status = 'queued', visible_at = greatest(v_now, v_run.visible_at)
            WHERE sr.id = v_step.id;
            PERFORM catbird._cb_notify('catbird.step.queued', v_flow.name || '/' || (v_step.fs).name);
        END LOOP;
        EXIT WHEN NOT v_progress;
    END LOOP;

    IF EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
               WHERE sr.flow_run_id = _cb_advance_flow_run.flow_run_id
                 AND sr.status NOT IN ('completed', 'skipped')) THEN
        RETURN;
    END IF;
    SELECT p.name, catbird._cb_step_output(sr.id, sr.step_type, sr.output)
    INTO v_output_step, v_output
    FROM unnest(v_flow.output_priority) WITH ORDINALITY AS p(name, ord)
    JOIN catbird.cb_step_runs sr ON sr.flow_run_id = _cb_advance_flow_run.flow_run_id AND sr.step_name = p.name
    WHERE sr.status = 'completed'
    ORDER BY p.ord
    LIMIT 1;
    IF v_output_step IS NULL THEN
        PERFORM catbird._cb_fail_flow_run(flow_run_id, NULL,
            format('no output candidate produced output: none of the steps %s completed (all were skipped)',
                   array_to_string(v_flow.output_priority, ', ')),
            NULL, NULL, NULL);
        RETURN;
    END IF;
    UPDATE catbird.cb_flow_runs r SET status = 'completed', completed_at = v_now, output = v_output
    WHERE r.id = flow_run_id;
    PERFORM catbird._cb_notify('catbird.flow.completed', flow_run_id::text);
END
$$;

-- A canceling run becomes canceled once no step or item is started any more.
CREATE FUNCTION catbird._cb_finish_canceling(flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_flow_runs r SET status = 'canceled', canceled_at = catbird.cb_now()
    WHERE r.id = flow_run_id AND r.status = 'canceling'
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.status = 'started')
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_map_tasks m WHERE m.flow_run_id = r.id AND m.status = 'started');
    IF FOUND THEN
        PERFORM catbird._cb_notify('catbird.flow.canceled', flow_run_id::text);
    END IF;
END
$$;

-- Locks a flow run for a transition and returns it.
CREATE FUNCTION catbird._cb_lock_flow_run(flow catbird.cb_flows, flow_run_id bigint) RETURNS catbird.cb_flow_runs
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird.cb_flow_runs r WHERE r.id = flow_run_id AND r.flow_id = flow.id FOR UPDATE
$$;

--------------------------------------------------------------------------------
-- Runs
--------------------------------------------------------------------------------

-- The one implementation of starting runs (cb_run_flow, cb_publish): one run
-- per input, deduplicated by concurrency key among active runs; returns the
-- run id each input resolved to. Callers hold the flow's shared lock.
CREATE FUNCTION catbird._cb_insert_flow_runs(
    flow catbird.cb_flows, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_new bigint[];
    v_run bigint;
BEGIN
    WITH input AS (
        SELECT u.ord, u.input, u.concurrency_key, u.headers, nextval('catbird.cb_flow_runs_id_seq') AS new_id
        FROM unnest(inputs, concurrency_keys, _cb_insert_flow_runs.headers)
                 WITH ORDINALITY AS u(input, concurrency_key, headers, ord)
    ), inserted AS (
        INSERT INTO catbird.cb_flow_runs (id, flow_id, status, priority, visible_at, created_at, started_at,
                                          expires_at, concurrency_key, input, headers)
        SELECT i.new_id, flow.id, 'started', coalesce(_cb_insert_flow_runs.priority, 0),
               coalesce(_cb_insert_flow_runs.visible_at, v_now), v_now, v_now, _cb_insert_flow_runs.expires_at,
               i.concurrency_key, i.input, i.headers
        FROM input i
        ORDER BY i.new_id
        ON CONFLICT (flow_id, concurrency_key)
            WHERE concurrency_key IS NOT NULL AND status IN ('started', 'canceling')
            DO NOTHING
        RETURNING id, concurrency_key
    ), steps AS (
        INSERT INTO catbird.cb_step_runs (flow_run_id, flow_id, step_name, step_type, status, priority,
                                          deps_remaining, visible_at, created_at)
        SELECT ins.id, flow.id, fs.name, fs.step_type, 'waiting_for_dependencies', coalesce(_cb_insert_flow_runs.priority, 0),
               cardinality(fs.depends_on), coalesce(_cb_insert_flow_runs.visible_at, v_now), v_now
        FROM inserted ins
        CROSS JOIN catbird.cb_flow_steps fs
        WHERE fs.flow_id = flow.id
        ORDER BY ins.id, fs.position  -- step run ids follow the definition order
    )
    SELECT array_agg(coalesce(
               ins.id,
               (SELECT min(dup.id) FROM inserted dup WHERE dup.concurrency_key = i.concurrency_key),
               (SELECT r.id FROM catbird.cb_flow_runs r
                 WHERE r.flow_id = flow.id AND r.concurrency_key = i.concurrency_key
                   AND r.status IN ('started', 'canceling')))
           ORDER BY i.ord),
           array_agg(ins.id ORDER BY i.ord) FILTER (WHERE ins.id IS NOT NULL)
    INTO v_ids, v_new
    FROM input i
    LEFT JOIN inserted ins ON ins.id = i.new_id;

    IF array_position(v_ids, NULL) IS NOT NULL THEN
        -- The key's holder committed after this statement's snapshot was taken:
        -- look again with a fresh snapshot.
        SELECT array_agg(coalesce(v_ids[k.ord], r.id) ORDER BY k.ord)
        INTO v_ids
        FROM unnest(concurrency_keys) WITH ORDINALITY AS k(concurrency_key, ord)
        LEFT JOIN catbird.cb_flow_runs r
               ON r.flow_id = flow.id AND r.concurrency_key = k.concurrency_key
              AND r.status IN ('started', 'canceling') AND v_ids[k.ord] IS NULL;
        IF array_position(v_ids, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'the flow run holding a concurrency key finished while this call deduplicated against it'
                USING ERRCODE = 'serialization_failure', HINT = 'Retry the call.';
        END IF;
    END IF;
    FOREACH v_run IN ARRAY coalesce(v_new, '{}') LOOP
        PERFORM catbird._cb_advance_flow_run(v_run);
    END LOOP;
    RETURN v_ids;
END
$$;

CREATE FUNCTION catbird.cb_run_flow(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
BEGIN
    PERFORM catbird._cb_check_send_args(inputs, NULL, concurrency_keys, headers);
    IF cardinality(inputs) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    RETURN catbird._cb_insert_flow_runs(v_flow, inputs, concurrency_keys, headers, visible_at, priority, expires_at);
END
$$;

CREATE FUNCTION catbird.cb_run_flow(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF input IS NULL THEN
        RAISE EXCEPTION 'invalid input: a run input must not be SQL NULL (use ''null''::jsonb for a JSON null)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_headers(headers);
    RETURN (catbird.cb_run_flow(name, ARRAY[input], ARRAY[concurrency_key], ARRAY[headers],
                                visible_at, priority, expires_at))[1];
END
$$;

CREATE FUNCTION catbird.cb_bind_flow(name text, pattern text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_flow(name);
    PERFORM catbird._cb_bind('flow', name, pattern);
END
$$;

CREATE FUNCTION catbird.cb_unbind_flow(name text, pattern text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_flow(name);
    RETURN catbird._cb_unbind('flow', name, pattern);
END
$$;

CREATE FUNCTION catbird.cb_signal_flow(flow_name text, run_id bigint, step_name text, input jsonb) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_run catbird.cb_flow_runs;
BEGIN
    IF NOT v_step.signal THEN
        RAISE EXCEPTION 'step "%" of flow "%" does not take a signal', step_name, flow_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Declare the step with "signal": true to let it wait for one.';
    END IF;
    v_run := catbird._cb_lock_flow_run(v_flow, run_id);
    IF v_run.id IS NULL THEN
        RAISE EXCEPTION 'flow "%" has no run %', flow_name, run_id USING ERRCODE = 'undefined_object';
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET signal_received = true, signal_input = coalesce(cb_signal_flow.input, 'null'::jsonb)
    WHERE sr.flow_run_id = run_id AND sr.step_name = cb_signal_flow.step_name AND NOT sr.signal_received
      AND sr.status IN ('waiting_for_dependencies', 'waiting_for_signal');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_advance_flow_run(run_id);
    RETURN true;
END
$$;

CREATE FUNCTION catbird.cb_cancel_flow(name text, run_id bigint, reason text = NULL) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_run catbird.cb_flow_runs := catbird._cb_lock_flow_run(v_flow, run_id);
    v_now timestamptz := catbird.cb_now();
BEGIN
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    IF v_run.status IN ('canceling', 'canceled') THEN
        RETURN true;  -- idempotent
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_flow_runs r
    SET status = 'canceling', cancel_requested_at = v_now, cancel_reason = reason
    WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, false);
    PERFORM catbird._cb_notify('catbird.flow.canceling', run_id::text);
    PERFORM catbird._cb_finish_canceling(run_id);
    RETURN true;
END
$$;

CREATE FUNCTION catbird.cb_complete_flow_early(flow_name text, run_id bigint, step_name text, output jsonb,
                                               reason text = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_run catbird.cb_flow_runs := catbird._cb_lock_flow_run(v_flow, run_id);
    v_now timestamptz := catbird.cb_now();
BEGIN
    IF v_run.id IS NULL THEN
        RAISE EXCEPTION 'flow "%" has no run %', flow_name, run_id USING ERRCODE = 'undefined_object';
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null')
    WHERE sr.flow_run_id = run_id AND sr.step_name = v_step.name AND sr.status = 'started';
    UPDATE catbird.cb_flow_runs r
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null'),
        cancel_reason = coalesce(reason, format('completed early by step "%s"', step_name))
    WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, true);
    PERFORM catbird._cb_notify('catbird.flow.completed', run_id::text);
    RETURN true;
END
$$;

--------------------------------------------------------------------------------
-- Worker protocol: steps
--------------------------------------------------------------------------------

CREATE FUNCTION catbird.cb_claim_steps(flow_name text, step_name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_step_claim
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
        SELECT sr.id
        FROM catbird.cb_step_runs sr
        JOIN catbird.cb_flow_runs r ON r.id = sr.flow_run_id
        WHERE sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status IN ('queued', 'started') AND sr.visible_at <= v_now
          AND r.status = 'started' AND (r.expires_at IS NULL OR r.expires_at > v_now OR sr.attempts > 0)
        ORDER BY sr.priority DESC, sr.visible_at, sr.id
        LIMIT quantity
        FOR UPDATE OF sr SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_step_runs sr
        SET status = 'started', attempts = sr.attempts + 1, started_at = v_now,
            visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c
        WHERE sr.id = c.id
        RETURNING sr.id, sr.flow_run_id, sr.attempts, sr.signal_input, sr.priority
    )
    SELECT c.id, c.flow_run_id, c.attempts, r.input, catbird._cb_dependency_outputs(c.flow_run_id, v_step),
           c.signal_input
    FROM claimed c
    JOIN catbird.cb_flow_runs r ON r.id = c.flow_run_id
    ORDER BY c.priority DESC, c.id;
END
$$;

-- Lease renewal; with attempts (one per id) only claims still held under
-- those attempts are renewed.
CREATE FUNCTION catbird.cb_hide_steps(flow_name text, step_name text, ids bigint[], hide_for int,
                                      attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids) THEN
        RAISE EXCEPTION 'invalid attempts: give one attempt per id (or none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_steps.attempts) AS u(id, attempt)
    WHERE sr.flow_id = v_flow.id AND sr.step_name = cb_hide_steps.step_name
      AND sr.id = u.id AND sr.id = ANY (ids) AND sr.status = 'started'
      AND (u.attempt IS NULL OR sr.attempts = u.attempt);
END
$$;

-- Locks the run of a step run and returns both; the step run's fields are read
-- after the lock, so they are current.
CREATE FUNCTION catbird._cb_lock_step_run(flow catbird.cb_flows, step_name text, step_run_id bigint,
                                          OUT run catbird.cb_flow_runs, OUT step_run catbird.cb_step_runs)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    SELECT * INTO run FROM catbird.cb_flow_runs r
    WHERE r.id = (SELECT sr.flow_run_id FROM catbird.cb_step_runs sr
                  WHERE sr.id = step_run_id AND sr.flow_id = flow.id AND sr.step_name = _cb_lock_step_run.step_name)
    FOR UPDATE;
    SELECT * INTO step_run FROM catbird.cb_step_runs sr WHERE sr.id = step_run_id AND sr.flow_run_id = run.id;
END
$$;

CREATE FUNCTION catbird.cb_complete_step(flow_name text, step_name text, id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_locked record;
    v_now timestamptz := catbird.cb_now();
BEGIN
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN false;
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = v_now WHERE sr.id = cb_complete_step.id;
        PERFORM catbird._cb_finish_canceling((v_locked.run).id);
        RETURN false;
    END IF;
    IF v_step.step_type = 'generator' THEN
        RAISE EXCEPTION 'step "%" is a generator: finish it with cb_complete_generator_step', step_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_step.output, 'null'),
        error_message = NULL
    WHERE sr.id = cb_complete_step.id;
    PERFORM catbird._cb_resolve_dependents((v_locked.run).id, v_flow.id, step_name);
    PERFORM catbird._cb_advance_flow_run((v_locked.run).id);
    RETURN true;
END
$$;

-- Records a failure of a started step or item: re-queues it with a full-jitter
-- delay while attempts <= max_retries, else fails it and the flow run.
-- Returns 'queued', 'failed', or NULL for a stale call.
CREATE FUNCTION catbird.cb_fail_step(flow_name text, step_name text, id bigint, error_message text,
                                     attempt int = NULL, max_retries int = 0, backoff_min int = 100,
                                     backoff_max int = 2000)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_locked record;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_step.error_message, 'unknown error');
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_retry_policy(max_retries, backoff_min, backoff_max);
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN NULL;
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = v_now, error_message = v_error
        WHERE sr.id = cb_fail_step.id;
        PERFORM catbird._cb_finish_canceling((v_locked.run).id);
        RETURN NULL;
    END IF;
    IF (v_locked.step_run).attempts <= max_retries THEN
        UPDATE catbird.cb_step_runs sr
        SET status = 'queued', error_message = v_error,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(sr.attempts, backoff_min, backoff_max) / 1000.0)
        WHERE sr.id = cb_fail_step.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_step_runs sr SET status = 'failed', failed_at = v_now, error_message = v_error
    WHERE sr.id = cb_fail_step.id;
    PERFORM catbird._cb_fail_flow_run((v_locked.run).id, step_name, v_error, (v_locked.run).input,
                                      (v_locked.step_run).signal_input, (v_locked.step_run).attempts);
    RETURN 'failed';
END
$$;

--------------------------------------------------------------------------------
-- Worker protocol: map items, generators, reducers
--------------------------------------------------------------------------------

-- with_input / with_outputs false: the claim leaves input / step_outputs NULL,
-- for item handlers that do not take them (a mapper over a large flow input
-- would otherwise ship that input with every item).
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

CREATE FUNCTION catbird.cb_hide_map_tasks(flow_name text, step_name text, ids bigint[], hide_for int,
                                          attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids) THEN
        RAISE EXCEPTION 'invalid attempts: give one attempt per id (or none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_map_tasks m
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_map_tasks.attempts) AS u(id, attempt)
    WHERE m.flow_id = v_flow.id AND m.step_name = cb_hide_map_tasks.step_name
      AND m.id = u.id AND m.id = ANY (ids) AND m.status = 'started'
      AND (u.attempt IS NULL OR m.attempts = u.attempt);
END
$$;

-- A mapper or generator step whose items are all done (and, for a
-- generator, whose handler has finished) is completed.
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

-- A generator's handler, while running (its step run started), adds items.
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
        UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = catbird.cb_now()
        WHERE sr.id = cb_complete_generator_step.id;
        PERFORM catbird._cb_finish_canceling((v_locked.run).id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET generator_done = true, status = 'waiting_for_map_tasks', map_total = coalesce(sr.map_total, 0)
    WHERE sr.id = cb_complete_generator_step.id;
    PERFORM catbird._cb_maybe_complete_map_step(id, v_flow.id);
END
$$;

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
        UPDATE catbird.cb_step_runs sr SET status = 'canceled', canceled_at = catbird.cb_now()
        WHERE sr.id = cb_fail_generator_step.id;
        PERFORM catbird._cb_finish_canceling((v_locked.run).id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr SET status = 'failed', failed_at = catbird.cb_now(), error_message = v_error
    WHERE sr.id = cb_fail_generator_step.id;
    PERFORM catbird._cb_fail_flow_run((v_locked.run).id, step_name, v_error, (v_locked.run).input,
                                      (v_locked.step_run).signal_input, (v_locked.step_run).attempts);
END
$$;

-- Item outputs of a mapper or generator step, in item order, a page at a time
-- (for reducers, which fold them without building one array).
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

--------------------------------------------------------------------------------
-- Waiting and introspection
--------------------------------------------------------------------------------

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

--------------------------------------------------------------------------------
-- On-fail handlers of flows
--------------------------------------------------------------------------------

CREATE FUNCTION catbird.cb_claim_flow_on_fail(name text, quantity int, hide_for int = 30000)
RETURNS TABLE (id bigint, input jsonb, error_message text, on_fail_attempts int, started_at timestamptz,
               failed_at timestamptz, concurrency_key text, failed_step_name text, failed_step_input jsonb,
               failed_step_signal_input jsonb, failed_step_attempts int)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    RETURN QUERY
    WITH candidates AS (
        SELECT r.id FROM catbird.cb_flow_runs r
        WHERE r.flow_id = v_flow.id AND r.on_fail_status IN ('queued', 'started') AND r.on_fail_visible_at <= v_now
        ORDER BY r.on_fail_visible_at, r.id
        LIMIT quantity
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE catbird.cb_flow_runs r
        SET on_fail_status = 'started', on_fail_attempts = r.on_fail_attempts + 1,
            on_fail_visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM candidates c WHERE r.id = c.id
        RETURNING r.*
    )
    SELECT c.id, c.input, c.error_message, c.on_fail_attempts, c.started_at, c.failed_at, c.concurrency_key,
           c.failed_step_name, c.failed_step_input, c.failed_step_signal_input, c.failed_step_attempts
    FROM claimed c ORDER BY c.id;
END
$$;

CREATE FUNCTION catbird.cb_complete_flow_on_fail(name text, run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
BEGIN
    UPDATE catbird.cb_flow_runs r SET on_fail_status = 'completed', on_fail_error_message = NULL
    WHERE r.id = run_id AND r.flow_id = v_flow.id AND r.on_fail_status = 'started';
END
$$;

CREATE FUNCTION catbird.cb_fail_flow_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean, retry_delay bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
BEGIN
    PERFORM catbird._cb_check_at_least('retry_delay', retry_delay, 0, ' ms');
    UPDATE catbird.cb_flow_runs r
    SET on_fail_status = CASE WHEN retry_exhausted THEN 'failed' ELSE 'queued' END,
        on_fail_visible_at = catbird.cb_now() + make_interval(secs => retry_delay / 1000.0),
        on_fail_error_message = coalesce(cb_fail_flow_on_fail.error_message, 'unknown error')
    WHERE r.id = run_id AND r.flow_id = v_flow.id AND r.on_fail_status = 'started';
END
$$;
-- catbird 70_maintenance: the worker registry and garbage collection.
--
-- Owns: cb_workers, cb_gc. Workers register the handlers they run, send heartbeats
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

-- Garbage collection, in bounded batches (call it again while it reports work):
--   expired_queues_deleted     queues past their expires_at, with their messages
--   expired_messages_deleted   messages past their expires_at (never readable)
--   expired_task_runs          queued runs past expires_at marked expired
--   expired_flow_runs          runs past expires_at before any step started
--   canceling_flow_runs_finalized  canceling runs whose started work's leases lapsed
--   stale_workers_deleted      workers silent for longer than stale_worker_after
--   stale_wire_nodes_deleted   (no Wire nodes in this version: always 0)
--   task_runs_purged / flow_runs_purged  finished runs older than their
--                              definition's retention_period (NULL or 0: kept)
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
    v_expired_flow_runs int := 0;
    v_finalized int := 0;
    v_stale_workers int;
    v_task_purged int;
    v_flow_purged int;
BEGIN
    PERFORM catbird._cb_check_at_least('batch_size', batch_size, 1);
    IF stale_worker_after IS NULL OR stale_worker_after <= interval '0' THEN
        RAISE EXCEPTION 'invalid stale_worker_after: expected a positive interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

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

    UPDATE catbird.cb_task_runs r SET status = 'expired', expired_at = v_now
    WHERE r.id IN (SELECT x.id FROM catbird.cb_task_runs x
                   WHERE x.status = 'queued' AND x.expires_at <= v_now
                   LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_expired_task_runs = ROW_COUNT;

    FOR v_run IN
        SELECT r.id FROM catbird.cb_flow_runs r
        WHERE r.status = 'started' AND r.expires_at <= v_now
          AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.attempts > 0)
        ORDER BY r.id LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE catbird.cb_flow_runs r SET status = 'expired', canceled_at = v_now WHERE r.id = v_run;
        PERFORM catbird._cb_cancel_open_work(v_run, true);
        PERFORM catbird._cb_notify('catbird.flow.expired', v_run::text);
        v_expired_flow_runs := v_expired_flow_runs + 1;
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

    DELETE FROM catbird.cb_workers w WHERE w.last_heartbeat_at < v_now - stale_worker_after;
    GET DIAGNOSTICS v_stale_workers = ROW_COUNT;

    DELETE FROM catbird.cb_task_runs r
    WHERE r.id IN (
        SELECT x.id FROM catbird.cb_task_runs x JOIN catbird.cb_tasks t ON t.id = x.task_id
        WHERE t.retention_period > interval '0'
          AND x.status IN ('completed', 'failed', 'skipped', 'canceled', 'expired')
          AND coalesce(x.on_fail_status, 'completed') IN ('completed', 'failed')
          AND coalesce(x.completed_at, x.failed_at, x.skipped_at, x.canceled_at, x.expired_at, x.created_at)
              <= v_now - t.retention_period
        LIMIT batch_size FOR UPDATE OF x SKIP LOCKED);
    GET DIAGNOSTICS v_task_purged = ROW_COUNT;

    WITH purged AS (
        DELETE FROM catbird.cb_flow_runs r
        WHERE r.id IN (
            SELECT x.id FROM catbird.cb_flow_runs x JOIN catbird.cb_flows f ON f.id = x.flow_id
            WHERE f.retention_period > interval '0'
              AND x.status IN ('completed', 'failed', 'canceled', 'expired')
              AND coalesce(x.on_fail_status, 'completed') IN ('completed', 'failed')
              AND coalesce(x.completed_at, x.failed_at, x.canceled_at, x.created_at) <= v_now - f.retention_period
            LIMIT batch_size FOR UPDATE OF x SKIP LOCKED)
        RETURNING r.id
    ), steps AS (
        DELETE FROM catbird.cb_step_runs sr WHERE sr.flow_run_id IN (SELECT p.id FROM purged p)
    ), items AS (
        DELETE FROM catbird.cb_map_tasks m WHERE m.flow_run_id IN (SELECT p.id FROM purged p)
    )
    SELECT count(*) INTO v_flow_purged FROM purged;

    RETURN jsonb_build_object(
        'expired_queues_deleted', v_expired_queues,
        'expired_messages_deleted', v_expired_messages,
        'expired_task_runs', v_expired_task_runs,
        'expired_flow_runs', v_expired_flow_runs,
        'canceling_flow_runs_finalized', v_finalized,
        'stale_workers_deleted', v_stale_workers,
        'stale_wire_nodes_deleted', 0,
        'task_runs_purged', v_task_purged,
        'flow_runs_purged', v_flow_purged);
END
$$;
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

CREATE FUNCTION catbird._cb_notify(topic text, data text = NULL, node_id uuid = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_notify('catbird', jsonb_build_object('topic', topic, 'data', data, 'node_id', node_id)::text)
$$;

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
-- catbird 95_backup: what pg_dump keeps.
--
-- Tables created by an extension are left out of pg_dump unless marked as
-- configuration tables. Every catbird table holds user state (definitions,
-- messages, runs), so all of them are marked, with their sequences. In plain
-- mode (no extension) pg_dump keeps them anyway, and the call is skipped.

DO $$
DECLARE
    v_relation text;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'catbird') THEN
        FOR v_relation IN
            SELECT format('%I.%I', n.nspname, c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'catbird' AND c.relkind IN ('r', 'S')
            ORDER BY c.relname
        LOOP
            PERFORM pg_extension_config_dump(v_relation, '');
        END LOOP;
    END IF;
END
$$;

-- GENERATED FILE, do not edit: concatenation of extension/sql/[0-9]*.sql by 'make build'.
-- catbird 00_schema: the schema, the engine's clock, the queue and binding tables.
--
-- Owns: schema catbird (created here, not by the control file, so that it is a
-- member of the extension and DROP EXTENSION removes it); cb_now(),
-- cb_queues, cb_messages, cb_bindings, the cb_message type.
-- Guarantees:
--   * Every engine time comparison reads cb_now(), which a session can pin with
--     SET catbird.fake_now = '<timestamptz>' so expiry and visibility are
--     testable without sleeping. Only a superuser or a member of
--     catbird_admin moves the clock: anyone else's catbird.fake_now is
--     ignored (it would let them take messages and leases others hold).
--   * cb_messages is one table for every queue (queue_id column), so every
--     engine statement is static SQL with a cached plan. The claim index
--     (queue_id, priority DESC, visible_at, id) lists the visible messages of a
--     priority level before its hidden ones, so a claim never walks past rows
--     that are in flight at the same priority.
--   * A concurrency key is unique among the messages of one queue (partial
--     unique index); it becomes reusable once the message is deleted, and a
--     send deletes an expired holder first (expired rows hold nothing).
--   * A dead letter (moved by cb_read past its queue's max_deliveries) records
--     its source queue and delivery count (source_queue_id, source_deliveries).
--   * cb_bindings is indexed by pattern and by literal prefix so that a publish
--     finds its targets through index lookups, not by testing every pattern.

CREATE SCHEMA catbird;

-- Whether the calling role may move the engine clock: a superuser or a member
-- of catbird_admin. The caller is the role of the session (SET ROLE's role,
-- else the session user), not current_user, which is the extension owner
-- inside catbird's SECURITY DEFINER functions. Raises nothing.
CREATE FUNCTION catbird._cb_caller_moves_clock() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(r.rolsuper, false)
           OR CASE WHEN r.oid IS NULL OR to_regrole('catbird_admin') IS NULL THEN false
                   ELSE pg_has_role(r.oid, 'catbird_admin', 'MEMBER') END
    FROM (SELECT CASE WHEN current_setting('role') = 'none' THEN session_user::text
                      ELSE current_setting('role') END AS caller) c
    LEFT JOIN pg_roles r ON r.rolname = c.caller
$$;

-- The engine clock: clock_timestamp(), or the session setting catbird.fake_now
-- when it is set, not empty, and the caller may move the clock (see
-- _cb_caller_moves_clock; for anyone else the setting is ignored). Raises
-- 22007/22008 when an admin's catbird.fake_now is not a valid timestamptz.
-- PL/pgSQL, not SQL: with the pinned search_path (90_privileges) a SQL
-- function is never inlined, and running one through the SQL function
-- executor cost about 9 us a call against 1-3 us for PL/pgSQL's simple
-- expressions; every send, claim and completion reads the clock.
CREATE FUNCTION catbird.cb_now() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $$
DECLARE
    v_fake text := nullif(current_setting('catbird.fake_now', true), '');
BEGIN
    IF v_fake IS NOT NULL AND catbird._cb_caller_moves_clock() THEN
        RETURN v_fake::timestamptz;
    END IF;
    RETURN clock_timestamp();
END
$$;
COMMENT ON FUNCTION catbird.cb_now() IS
    'The engine clock: clock_timestamp(), or the session setting catbird.fake_now when it is set by a superuser or a catbird_admin member (for tests).';

CREATE TABLE catbird.cb_queues (
    id          int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    description text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    -- dead letters: a message about to be delivered for the max_deliveries + 1-th
    -- time moves to dead_letter_queue_id (deleted when NULL)
    max_deliveries       int,
    dead_letter_queue_id int
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
    body            jsonb NOT NULL,
    -- set on a dead letter: the queue it came from and its deliveries there
    source_queue_id   int,
    source_deliveries int
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
    expires_at      timestamptz,
    source_queue      text,
    source_deliveries int
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
-- Owns: the _cb_check_* helpers and _cb_quote_arg. Each check raises SQLSTATE
-- 22023 (invalid_parameter_value) with a message that says what was wrong and
-- what is allowed; none writes anything. Callers validate before their first
-- write, so a rejected call leaves the database as it was.
-- Guarantees:
--   * Every value that reaches an index is bounded here (names 58 characters,
--     topics and patterns 255, concurrency keys 1024 bytes), so an oversized
--     argument is 22023, never 54000 (index row size) from the insert.
--   * An error message quotes at most 200 characters of a bad argument
--     (_cb_quote_arg), so a huge argument cannot flood the server log.
--   * Times must be finite ('infinity' would be a message or run that can
--     never be delivered or never expire), intervals at most 1000 years (so
--     that cb_now() minus them stays a timestamp).

-- A bad argument quoted for an error message: quote_literal of its first 200
-- characters, followed by how long it really was when it was cut; 'NULL' for
-- NULL. Raises nothing.
CREATE FUNCTION catbird._cb_quote_arg(value text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN length(value) <= 200 THEN quote_literal(value)
                ELSE quote_literal(left(value, 200)) || format('... (%s characters)', length(value))
           END
$$;

-- Checks the name of a queue, task, flow or step (kind names it in the
-- message): a lowercase letter, then lowercase letters, digits or underscores,
-- at most 58 characters. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_name(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF name IS NULL OR length(name) > 58 OR name !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid % name %: a name starts with a lowercase letter, continues with lowercase letters, digits or underscores, and has at most 58 characters',
            kind, catbird._cb_quote_arg(name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a topic: dot-separated tokens of letters, digits, '_' or '-', no
-- wildcards, at most 255 characters. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_topic(topic text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF topic IS NULL OR length(topic) > 255 OR topic !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'invalid topic %: a topic is one or more tokens of letters, digits, "_" or "-", separated by "." (e.g. orders.eu.created), at most 255 characters; wildcards belong in patterns only',
            catbird._cb_quote_arg(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a binding pattern: a topic whose tokens may be '*' (one token) and
-- whose last token may be '#' (zero or more), at most 255 characters.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_pattern(pattern text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF pattern IS NULL OR length(pattern) > 255
       OR pattern !~ '^(#|([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.#)?)$' THEN
        RAISE EXCEPTION 'invalid pattern %: a pattern is a topic whose tokens may be "*" (exactly one token), and whose last token may be "#" (zero or more tokens), e.g. orders.*.created or orders.#, at most 255 characters',
            catbird._cb_quote_arg(pattern)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks an integer argument against its lower bound; used for quantities (>= 1),
-- durations in milliseconds (hide_for >= 1, poll_for >= 0) and intervals.
-- Returns nothing; 22023 when the value is NULL or below the minimum.
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

-- Checks message or run headers: a JSON object, or NULL. Returns nothing;
-- 22023 otherwise.
CREATE FUNCTION catbird._cb_check_headers(headers jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'invalid headers %: headers must be a JSON object (or null)', catbird._cb_quote_arg(headers::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks the one body of a single send, publish or run, or a schedule's
-- input (argument and what name it in the message: 'body', 'message body';
-- 'input', 'run input'): not SQL NULL; then its headers (see
-- _cb_check_headers). Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_body(argument text, what text, body jsonb, headers jsonb = NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION 'invalid %: a % must not be SQL NULL (use ''null''::jsonb for a JSON null)', argument, what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_headers(headers);
END
$$;

-- Splits a valid pattern into the columns cb_bindings indexes (see 00_schema):
-- literal prefix, token count, trailing '#', anchored regex (NULL without
-- wildcards). Raises nothing; callers have checked the pattern.
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

-- Checks the bounded arguments of a send, publish or run: every concurrency
-- key at most 1024 bytes (it is indexed), visible_at and expires_at finite.
-- NULLs are allowed. Returns nothing; 22023 for the first problem.
CREATE FUNCTION catbird._cb_check_bounds(concurrency_keys text[], visible_at timestamptz, expires_at timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_key text;
BEGIN
    SELECT k INTO v_key FROM unnest(concurrency_keys) k WHERE octet_length(k) > 1024 LIMIT 1;
    IF v_key IS NOT NULL THEN
        RAISE EXCEPTION 'invalid concurrency key %: % bytes, at most 1024 are allowed',
            catbird._cb_quote_arg(v_key), octet_length(v_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('visible_at', visible_at);
    PERFORM catbird._cb_check_time('expires_at', expires_at);
END
$$;

-- Checks a time argument (argument names it): NULL or finite. Returns
-- nothing; 22023 for 'infinity' or '-infinity'.
CREATE FUNCTION catbird._cb_check_time(argument text, value timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF NOT isfinite(value) THEN
        RAISE EXCEPTION 'invalid %: % is not a finite time', argument, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks an interval argument (argument names it): NULL or at most 1000
-- years either way, so that cb_now() plus or minus it is a timestamp.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_interval(argument text, value interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value > interval '1000 years' OR value < interval '-1000 years' THEN
        RAISE EXCEPTION 'invalid %: % is longer than 1000 years', argument, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
-- catbird 20_queues: queues and their messages.
--
-- Owns: cb_queues, cb_messages; create/delete/purge, send (single and batch),
-- read (claim with a visibility window), read_poll, pop (claim and delete in
-- one statement), hide, delete, introspection;
-- and, for every kind of definition (queue, task, flow), the definition lock
-- and the error for a missing one.
-- Guarantees:
--   * cb_read and cb_pop claim with FOR UPDATE SKIP LOCKED: concurrent readers
--     never get the same message inside its hide window, and a popped message
--     is gone for everyone; each claim counts a delivery.
--   * Expired messages (expires_at <= cb_now()) are never returned.
--   * A send holds a shared advisory lock on the queue name until its
--     transaction ends and cb_delete_queue takes it exclusively, so a message is
--     never written into a queue that is being deleted.
--   * cb_send with a concurrency key held by a live message of the queue writes
--     nothing and returns the live message's id; a holder past its expires_at
--     is deleted first, so an expired message never holds its key.
--   * Receipts: cb_hide and cb_delete given the deliveries value of a read
--     act only while it is current, so a consumer whose window lapsed cannot
--     touch a message another consumer now holds.
--   * Dead letters: with max_deliveries, the read (or pop) that would deliver a message
--     for the max_deliveries + 1-th time moves it instead, in the same
--     statement, to the queue's dead_letter_queue (deleted without one);
--     cb_redrive moves dead letters back to the queues they came from.

-- Definitions (queues, tasks, flows) are guarded by transaction-level advisory
-- locks keyed on kind and name: writers of runs and messages hold the shared
-- lock, deleting the definition takes it exclusively. Returns nothing; waits
-- for the lock, raises nothing of its own. The worker's hot functions (45, 54)
-- take the shared lock inline with the same key (a nested call costs a
-- search_path switch): change the key there too.
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

-- Raises for a queue, task or flow (kind) that does not exist: 22023 when the
-- name could never exist, else 42704 with a hint naming the create call.
-- Never returns.
CREATE FUNCTION catbird._cb_raise_undefined(kind text, name text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    RAISE EXCEPTION '% "%" does not exist', kind, name
        USING ERRCODE = 'undefined_object',
              HINT = format('Create it first: SELECT catbird.cb_create_%s(%L%s);', kind, name,
                            CASE kind WHEN 'flow' THEN ', steps => ...' ELSE '' END);
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
        PERFORM catbird._cb_raise_undefined('queue', queue);
    END IF;
    RETURN v_id;
END
$$;

-- Creates a queue (announcing catbird.queue.created); creating an existing
-- queue is a no-op (its description
-- and expiry are kept) except that max_deliveries and dead_letter_queue, when
-- given, replace its dead-letter settings. A queue past expires_at is deleted
-- by cb_gc. With max_deliveries, a message about to be delivered for the
-- max_deliveries + 1-th time is moved to dead_letter_queue (which must exist
-- and be another queue), or deleted without one. Returns nothing; 22023 for
-- an invalid name, an infinite expires_at, max_deliveries < 1, a dead_letter_queue without
-- max_deliveries or naming the queue itself; 42704 for an unknown
-- dead_letter_queue.
CREATE FUNCTION catbird.cb_create_queue(name text, expires_at timestamptz = NULL, description text = NULL,
                                        max_deliveries int = NULL, dead_letter_queue text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_dlq_id int;
BEGIN
    PERFORM catbird._cb_check_name('queue', name);
    PERFORM catbird._cb_check_time('expires_at', expires_at);
    IF max_deliveries IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('max_deliveries', max_deliveries, 1);
    END IF;
    IF dead_letter_queue IS NOT NULL THEN
        IF max_deliveries IS NULL THEN
            RAISE EXCEPTION 'invalid dead_letter_queue: it needs max_deliveries (how many deliveries before a message is dead)'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF dead_letter_queue = name THEN
            RAISE EXCEPTION 'invalid dead_letter_queue "%": a queue cannot be its own dead-letter queue', name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_dlq_id := catbird._cb_queue_id(dead_letter_queue);
    END IF;
    INSERT INTO catbird.cb_queues (name, description, created_at, expires_at, max_deliveries, dead_letter_queue_id)
    VALUES (cb_create_queue.name, cb_create_queue.description, catbird.cb_now(), cb_create_queue.expires_at,
            cb_create_queue.max_deliveries, v_dlq_id)
    ON CONFLICT ON CONSTRAINT cb_queues_name_key DO NOTHING;
    IF FOUND THEN
        PERFORM catbird._cb_notify('catbird.queue.created', jsonb_build_object('queue', name)::text);
    ELSIF max_deliveries IS NOT NULL THEN
        UPDATE catbird.cb_queues q
        SET max_deliveries = cb_create_queue.max_deliveries, dead_letter_queue_id = v_dlq_id
        WHERE q.name = cb_create_queue.name;
    END IF;
END
$$;

-- Deletes a queue with its messages and bindings (announcing
-- catbird.queue.deleted); waits for sends in flight
-- to it. Returns false when it does not exist; 22023 for an invalid name.
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
    -- queues that dead-lettered into it delete their dead messages from now on
    UPDATE catbird.cb_queues q SET dead_letter_queue_id = NULL WHERE q.dead_letter_queue_id = v_id;
    -- dead letters that came from it have nowhere to be redriven to
    UPDATE catbird.cb_messages m SET source_queue_id = NULL WHERE m.source_queue_id = v_id;
    PERFORM catbird._cb_notify('catbird.queue.deleted', jsonb_build_object('queue', name)::text);
    RETURN true;
END
$$;

-- Deletes every message of a queue, hidden or not. Returns how many it
-- deleted; 42704 for an unknown queue, 22023 for an invalid name.
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
    -- Bounded inputs (10_names): keys fit the index, times are finite.
    IF concurrency_keys IS NOT NULL OR _cb_insert_messages.visible_at IS NOT NULL OR _cb_insert_messages.expires_at IS NOT NULL THEN
        PERFORM catbird._cb_check_bounds(concurrency_keys, _cb_insert_messages.visible_at, _cb_insert_messages.expires_at);
    END IF;
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
    -- Expired messages hold nothing: the expired holders of these keys (never
    -- readable again; cb_gc would delete them) go before deduplicating.
    DELETE FROM catbird.cb_messages m
    WHERE m.queue_id = ANY (queue_ids) AND m.concurrency_key = ANY (concurrency_keys) AND m.expires_at <= v_now;
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

-- Validates the arguments shared by the batch forms of send, publish and
-- run: bodies a one-dimensional array without SQL NULLs, a valid topic when
-- given, one concurrency key and one headers object (or NULL) per body.
-- Returns nothing; 22023 for the first problem.
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

-- Sends bodies to a queue in one statement, in order; a body whose
-- concurrency key is held by a live message writes nothing and resolves to
-- the holder's id. Returns the id of each
-- body, in input order. 42704 for an unknown queue; 22023 for an invalid
-- name, topic, bodies, keys or headers (see _cb_check_send_args); 40001 when
-- a key's holder vanished while the call deduplicated against it (retry).
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

-- Sends one body to a queue. Returns the new message's id, or the id of the
-- live message holding concurrency_key (then nothing is written). 42704 for an
-- unknown queue; 22023 for an invalid name or topic, a SQL NULL body or
-- non-object headers; 40001 as for the batch form.
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
        PERFORM catbird._cb_check_body('body', 'message body', body);
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

-- The claim of cb_read (hide_for ms) and cb_pop (hide_for NULL: the claimed
-- messages are deleted) for a queue with max_deliveries: a message already
-- delivered max_deliveries times is not returned but moved to dlq_id (source
-- queue and deliveries recorded, deliveries reset, concurrency key dropped),
-- or deleted without one, in the same statement, and the claim goes on until
-- quantity messages were claimed or no dead one was met. Returns the claimed
-- messages (deliveries counted) in claim order. Callers validated the
-- arguments; raises nothing of its own.
CREATE FUNCTION catbird._cb_claim_dead_lettering(queue_id int, max_deliveries int, dlq_id int,
                                                 quantity int, hide_for int)
RETURNS SETOF catbird.cb_message
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := queue_id;
    v_max_deliveries int := max_deliveries;
    v_dlq_id int := dlq_id;
    v_now timestamptz := catbird.cb_now();
    v_wanted int := quantity;
    v_messages catbird.cb_message[];
    v_dead bigint;
BEGIN
    IF v_dlq_id IS NOT NULL THEN
        -- Dead letters must not land in a dead-letter queue being deleted.
        PERFORM catbird._cb_lock_definition('queue', q.name) FROM catbird.cb_queues q WHERE q.id = v_dlq_id;
    END IF;
    -- Dead messages met on the way do not count against quantity: claim again
    -- until it is filled or none was met.
    LOOP
        WITH candidates AS (
            SELECT m.id, m.visible_at AS was_visible_at, m.deliveries >= v_max_deliveries AS dead
            FROM catbird.cb_messages m
            WHERE m.queue_id = v_queue_id
              AND m.visible_at <= v_now
              AND (m.expires_at IS NULL OR m.expires_at > v_now)
            ORDER BY m.priority DESC, m.visible_at, m.id
            LIMIT v_wanted
            FOR UPDATE SKIP LOCKED
        ), moved AS (
            UPDATE catbird.cb_messages m
            SET queue_id = v_dlq_id, source_queue_id = v_queue_id, source_deliveries = m.deliveries,
                deliveries = 0, visible_at = v_now, concurrency_key = NULL
            FROM candidates c
            WHERE m.id = c.id AND c.dead AND v_dlq_id IS NOT NULL
            RETURNING m.id
        ), dropped AS (
            DELETE FROM catbird.cb_messages m
            USING candidates c
            WHERE m.id = c.id AND c.dead AND v_dlq_id IS NULL
            RETURNING m.id
        ), hidden AS (
            UPDATE catbird.cb_messages m
            SET visible_at = v_now + make_interval(secs => hide_for / 1000.0),
                deliveries = m.deliveries + 1
            FROM candidates c
            WHERE m.id = c.id AND NOT c.dead AND hide_for IS NOT NULL
            RETURNING m.id, m.concurrency_key, m.topic, m.body, m.headers, m.priority, m.deliveries,
                      m.created_at, m.visible_at, m.expires_at, m.source_queue_id, m.source_deliveries,
                      c.was_visible_at
        ), popped AS (
            DELETE FROM catbird.cb_messages m
            USING candidates c
            WHERE m.id = c.id AND NOT c.dead AND hide_for IS NULL
            RETURNING m.id, m.concurrency_key, m.topic, m.body, m.headers, m.priority, m.deliveries + 1,
                      m.created_at, m.visible_at, m.expires_at, m.source_queue_id, m.source_deliveries,
                      c.was_visible_at
        ), updated AS (
            SELECT * FROM hidden UNION ALL SELECT * FROM popped
        )
        SELECT coalesce(array_agg(ROW(u.id, u.concurrency_key, u.topic, u.body, u.headers, u.priority, u.deliveries,
                                      u.created_at, u.visible_at, u.expires_at,
                                      (SELECT q.name FROM catbird.cb_queues q WHERE q.id = u.source_queue_id),
                                      u.source_deliveries)::catbird.cb_message
                                  ORDER BY u.priority DESC, u.was_visible_at, u.id), '{}'),
               (SELECT count(*) FROM moved) + (SELECT count(*) FROM dropped)
        INTO v_messages, v_dead
        FROM updated u;
        RETURN QUERY SELECT * FROM unnest(v_messages);
        v_wanted := v_wanted - cardinality(v_messages);
        EXIT WHEN v_dead = 0 OR v_wanted = 0;
    END LOOP;
END
$$;

-- Claims up to quantity visible, unexpired messages of a queue, highest
-- priority first, then oldest: each is hidden for hide_for ms and its
-- deliveries incremented; concurrent readers skip each other's rows. With the
-- queue's max_deliveries, a message already delivered that many times is not
-- returned: the same statement moves it to the dead-letter queue (source queue
-- and deliveries recorded, deliveries reset, concurrency key dropped) or
-- deletes it, and the claim goes on for the quantity asked. Returns the
-- claimed messages (cb_message) in claim order. 42704 for an unknown queue;
-- 22023 for an invalid name, quantity < 1 or hide_for < 1.
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
    v_max_deliveries int;
    v_dlq_id int;
BEGIN
    IF quantity IS NULL OR quantity < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    END IF;
    IF hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    SELECT q.id, q.max_deliveries, q.dead_letter_queue_id INTO v_queue_id, v_max_deliveries, v_dlq_id
    FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_queue_id IS NULL THEN
        v_queue_id := catbird._cb_queue_id(queue);  -- raises the clear error
    END IF;
    v_now := catbird.cb_now();
    IF v_max_deliveries IS NULL THEN
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
                      m.created_at, m.visible_at, m.expires_at, m.source_queue_id, m.source_deliveries,
                      c.was_visible_at
        )
        SELECT u.id, u.concurrency_key, u.topic, u.body, u.headers, u.priority, u.deliveries,
               u.created_at, u.visible_at, u.expires_at,
               (SELECT q.name FROM catbird.cb_queues q WHERE q.id = u.source_queue_id), u.source_deliveries
        FROM updated u
        ORDER BY u.priority DESC, u.was_visible_at, u.id;  -- the order they were claimed in
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM catbird._cb_claim_dead_lettering(v_queue_id, v_max_deliveries, v_dlq_id,
                                                                quantity, hide_for);
END
$$;

-- Pops up to quantity visible, unexpired messages of a queue, highest
-- priority first, then oldest: claims and deletes them in one statement, so
-- a consumer that needs no acknowledgement pays one commit per batch instead
-- of cb_read + cb_delete's two. Concurrent poppers (and readers) skip each
-- other's rows, so no two get the same message. Each popped message counts
-- a delivery (deliveries as cb_read would return them); with the queue's
-- max_deliveries, dead messages met on the way are dead-lettered as by
-- cb_read. Returns the popped messages (cb_message) in claim order. 42704 for
-- an unknown queue; 22023 for an invalid name or quantity < 1.
CREATE FUNCTION catbird.cb_pop(queue text, quantity int = 1)
RETURNS SETOF catbird.cb_message
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now timestamptz;
    v_queue_id int;
    v_max_deliveries int;
    v_dlq_id int;
BEGIN
    IF quantity IS NULL OR quantity < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    END IF;
    SELECT q.id, q.max_deliveries, q.dead_letter_queue_id INTO v_queue_id, v_max_deliveries, v_dlq_id
    FROM catbird.cb_queues q WHERE q.name = queue;
    IF v_queue_id IS NULL THEN
        v_queue_id := catbird._cb_queue_id(queue);  -- raises the clear error
    END IF;
    IF v_max_deliveries IS NOT NULL THEN
        RETURN QUERY SELECT * FROM catbird._cb_claim_dead_lettering(v_queue_id, v_max_deliveries, v_dlq_id,
                                                                    quantity, NULL);
        RETURN;
    END IF;
    v_now := catbird.cb_now();
    RETURN QUERY
    WITH claimed AS (
        SELECT m.id
        FROM catbird.cb_messages m
        WHERE m.queue_id = v_queue_id
          AND m.visible_at <= v_now
          AND (m.expires_at IS NULL OR m.expires_at > v_now)
        ORDER BY m.priority DESC, m.visible_at, m.id
        LIMIT quantity
        FOR UPDATE SKIP LOCKED
    ), popped AS (
        DELETE FROM catbird.cb_messages m
        USING claimed c
        WHERE m.id = c.id
          AND m.id = ANY (ARRAY(SELECT c2.id FROM claimed c2))  -- keeps the generic plan on the primary key
        RETURNING m.*
    )
    SELECT p.id, p.concurrency_key, p.topic, p.body, p.headers, p.priority, p.deliveries + 1,
           p.created_at, p.visible_at, p.expires_at,
           (SELECT q.name FROM catbird.cb_queues q WHERE q.id = p.source_queue_id), p.source_deliveries
    FROM popped p
    ORDER BY p.priority DESC, p.visible_at, p.id;  -- the order they were claimed in
END
$$;

-- Like cb_read, polling every poll_interval ms for up to poll_for ms (wall
-- clock) until a message is visible. Returns the claimed messages, none on
-- timeout. 22023 for poll_for < 0 or poll_interval < 1; then as cb_read.
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

-- Checks the receipts given to cb_hide / cb_delete: NULL, or one deliveries
-- value (>= 1, as returned by cb_read) per id. Returns nothing; 22023
-- otherwise.
CREATE FUNCTION catbird._cb_check_receipts(ids bigint[], deliveries int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF deliveries IS NOT NULL AND (cardinality(deliveries) IS DISTINCT FROM cardinality(ids)
                                   OR EXISTS (SELECT 1 FROM unnest(deliveries) d WHERE d IS NULL OR d < 1)) THEN
        RAISE EXCEPTION 'invalid deliveries: give one receipt per id, each the deliveries value (>= 1) its read returned'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Pushes the visibility of messages of a queue out to hide_for ms from now;
-- with deliveries (the receipts returned by cb_read, one per id) only messages
-- still at that delivery. Returns the ids it hid (sorted). 42704 for an
-- unknown queue; 22023 for an invalid name, hide_for < 1 or bad receipts.
CREATE FUNCTION catbird.cb_hide(queue text, ids bigint[], hide_for int, deliveries int[] = NULL) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_queue_id int := catbird._cb_queue_id(queue);
    v_now timestamptz := catbird.cb_now();
    v_hidden bigint[];
BEGIN
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF deliveries IS NULL THEN
        WITH hidden AS (
            UPDATE catbird.cb_messages m
            SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
            WHERE m.queue_id = v_queue_id AND m.id = ANY (ids)
            RETURNING m.id
        )
        SELECT coalesce(array_agg(h.id ORDER BY h.id), '{}') INTO v_hidden FROM hidden h;
        RETURN v_hidden;
    END IF;
    PERFORM catbird._cb_check_receipts(ids, deliveries);
    WITH hidden AS (
        UPDATE catbird.cb_messages m
        SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
        FROM unnest(ids, cb_hide.deliveries) AS u(id, delivery)
        WHERE m.queue_id = v_queue_id AND m.id = u.id AND m.id = ANY (ids) AND m.deliveries = u.delivery
        RETURNING m.id
    )
    SELECT coalesce(array_agg(h.id ORDER BY h.id), '{}') INTO v_hidden FROM hidden h;
    RETURN v_hidden;
END
$$;

-- Single form of cb_hide: true when the message was hidden (with delivery:
-- only while it is still at that delivery). Errors as the array form.
CREATE FUNCTION catbird.cb_hide(queue text, id bigint, hide_for int, delivery int = NULL) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT cardinality(catbird.cb_hide(queue, ARRAY[id], hide_for,
                                       CASE WHEN delivery IS NOT NULL THEN ARRAY[delivery] END)) > 0
$$;

-- Deletes (acknowledges) messages of a queue; with deliveries (the receipts
-- returned by cb_read, one per id) only messages still at that delivery.
-- Returns the ids it deleted (sorted). 42704 for an unknown queue; 22023 for
-- an invalid name or bad receipts.
CREATE FUNCTION catbird.cb_delete(queue text, ids bigint[], deliveries int[] = NULL) RETURNS bigint[]
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
    IF deliveries IS NULL THEN
        WITH deleted AS (
            DELETE FROM catbird.cb_messages m
            WHERE m.queue_id = v_queue_id AND m.id = ANY (ids)
            RETURNING m.id
        )
        SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO v_deleted FROM deleted d;
        RETURN v_deleted;
    END IF;
    PERFORM catbird._cb_check_receipts(ids, deliveries);
    WITH deleted AS (
        DELETE FROM catbird.cb_messages m
        USING unnest(ids, cb_delete.deliveries) AS u(id, delivery)
        WHERE m.queue_id = v_queue_id AND m.id = u.id AND m.id = ANY (ids) AND m.deliveries = u.delivery
        RETURNING m.id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO v_deleted FROM deleted d;
    RETURN v_deleted;
END
$$;

-- Single form of cb_delete: true when the message was deleted (with delivery:
-- only while it is still at that delivery). Errors as the array form.
CREATE FUNCTION catbird.cb_delete(queue text, id bigint, delivery int = NULL) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT cardinality(catbird.cb_delete(queue, ARRAY[id], CASE WHEN delivery IS NOT NULL THEN ARRAY[delivery] END)) > 0
$$;

-- Moves up to quantity dead letters (all when NULL) of a dead-letter queue
-- back to the queues they came from, oldest first, visible at once with
-- deliveries reset to 0. Dead letters whose source queue no longer exists
-- stay. Returns how many it moved. 42704 for an unknown queue; 22023 for an
-- invalid name or quantity < 1.
CREATE FUNCTION catbird.cb_redrive(dead_letter_queue text, quantity int = NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_dlq_id int := catbird._cb_queue_id(dead_letter_queue);
    v_now timestamptz := catbird.cb_now();
    v_count bigint;
BEGIN
    IF quantity IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    END IF;
    -- Messages must not land in a queue being deleted: hold the sources' shared locks.
    PERFORM catbird._cb_lock_definition('queue', q.name)
    FROM catbird.cb_queues q
    WHERE q.id IN (SELECT DISTINCT m.source_queue_id FROM catbird.cb_messages m
                   WHERE m.queue_id = v_dlq_id AND m.source_queue_id IS NOT NULL)
    ORDER BY q.name;
    UPDATE catbird.cb_messages m
    SET queue_id = m.source_queue_id, source_queue_id = NULL, source_deliveries = NULL,
        deliveries = 0, visible_at = v_now
    WHERE m.id IN (SELECT x.id FROM catbird.cb_messages x
                   WHERE x.queue_id = v_dlq_id AND x.source_queue_id IS NOT NULL
                     AND EXISTS (SELECT 1 FROM catbird.cb_queues q WHERE q.id = x.source_queue_id)
                   ORDER BY x.id
                   LIMIT quantity
                   FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Queue introspection (QueueInfo fields) for the given names, or all queues
-- when names is NULL, by name. depth counts every message; visible those
-- readable now; oldest_visible_at is the earliest visible_at among the
-- readable ones. Raises nothing.
CREATE FUNCTION catbird._cb_queue_info(names text[])
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz,
               max_deliveries int, dead_letter_queue text)
LANGUAGE sql VOLATILE
AS $$
    WITH now AS (SELECT catbird.cb_now() AS ts)
    SELECT q.name, q.description, q.created_at, q.expires_at,
           coalesce(s.depth, 0), coalesce(s.visible, 0), s.oldest_visible_at,
           q.max_deliveries, (SELECT d.name FROM catbird.cb_queues d WHERE d.id = q.dead_letter_queue_id)
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

-- Every queue as QueueInfo (name, description, created_at, expires_at,
-- depth, visible, oldest_visible_at, max_deliveries, dead_letter_queue), by
-- name. Raises nothing.
CREATE FUNCTION catbird.cb_list_queues()
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz,
               max_deliveries int, dead_letter_queue text)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_queue_info(NULL) $$;

-- One queue as QueueInfo; no row when it does not exist. Raises nothing.
CREATE FUNCTION catbird.cb_get_queue(name text)
RETURNS TABLE (name text, description text, created_at timestamptz, expires_at timestamptz,
               depth bigint, visible bigint, oldest_visible_at timestamptz,
               max_deliveries int, dead_letter_queue text)
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
--     used, is rejected with 22023 at definition time; so is one longer than
--     2000 characters or with more than 32 nested "not".
--   * A missing field makes every comparison false and `exists` false; `not`
--     negates the result, so `not input.x eq 1` is true when x is missing.
--   * gt/gte/lt/lte compare numbers with numbers and strings with strings; any
--     other pairing is false. A bare path is true unless missing, null, false,
--     0, "", [] or {}.

-- Parses a condition (grammar above) into its jsonb form ({"op", "path",
-- "value"}, or {"not": ...}); paths must start with one of allowed_roots.
-- Returns the parsed form; 22023 for a malformed condition, another root, more
-- than 2000 characters or more than 32 nested "not".
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
        RAISE EXCEPTION 'invalid condition %: it is empty', catbird._cb_quote_arg(condition)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
    END IF;

    -- Bounded before any regular expression runs: a long chain of "not" is too
    -- complex for the regex engine (2201B) and too deep for the recursion.
    IF length(condition) > 2000 OR condition ~ '^(\s*not\s+){33}' THEN
        RAISE EXCEPTION 'invalid condition %: a condition has at most 2000 characters and 32 nested "not"',
            catbird._cb_quote_arg(condition)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    v_match := regexp_match(condition, '^\s*not\s+(.+)$');
    IF v_match IS NOT NULL THEN
        RETURN jsonb_build_object('not', catbird._cb_parse_condition(v_match[1], allowed_roots));
    END IF;

    v_match := regexp_match(condition, '^\s*' || v_path_re || '(?:\s+(exists|eq|ne|gte|gt|lte|lt|in|contains)(?:\s+(.+?))?)?\s*$');
    IF v_match IS NULL THEN
        RAISE EXCEPTION 'invalid condition %: cannot parse it', catbird._cb_quote_arg(condition)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
    END IF;

    v_path := string_to_array(v_match[1], '.');
    IF NOT v_path[1] = ANY (allowed_roots) THEN
        RAISE EXCEPTION 'invalid condition %: path "%" must start with one of: %',
            catbird._cb_quote_arg(condition), v_match[1], array_to_string(allowed_roots, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF v_match[2] IS NULL OR v_match[2] = 'exists' THEN
        IF v_match[3] IS NOT NULL THEN
            RAISE EXCEPTION 'invalid condition %: nothing may follow "%"', catbird._cb_quote_arg(condition),
                coalesce(v_match[2], v_match[1])
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format(v_syntax, array_to_string(allowed_roots, ', '));
        END IF;
        RETURN jsonb_build_object('path', to_jsonb(v_path), 'op', coalesce(v_match[2], 'truthy'));
    END IF;

    IF v_match[3] IS NULL THEN
        RAISE EXCEPTION 'invalid condition %: operator "%" needs a value', catbird._cb_quote_arg(condition), v_match[2]
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        v_value := v_match[3]::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        IF v_match[3] ~ '^[A-Za-z_][A-Za-z0-9_.-]*$' THEN
            v_value := to_jsonb(v_match[3]);
        ELSE
            RAISE EXCEPTION 'invalid condition %: value % is neither JSON nor a bare word',
                catbird._cb_quote_arg(condition), v_match[3]
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Quote strings: input.status eq "on hold"';
        END IF;
    END;
    IF v_match[2] = 'in' AND jsonb_typeof(v_value) <> 'array' THEN
        RAISE EXCEPTION 'invalid condition %: "in" needs a JSON array, e.g. input.k in [1, 2]', catbird._cb_quote_arg(condition)
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

-- Evaluates a parsed condition against a context object ({"input": ...,
-- "signal": ..., <step>: ...}); a NULL condition is true. Returns the result;
-- raises nothing (a missing field makes a comparison false).
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
-- catbird 38_runs: the run lifecycle shared by tasks and flows.
--
-- Owns: the internal helpers that the task verbs (40_tasks) and the flow verbs
-- (50-57) delegate to where they do the same thing: the retry policy (check
-- and full-jitter delay), lease and purge argument checks, creating runs
-- (the batch run verbs), deleting a
-- definition with its runs, purging and clearing runs (also cb_gc's retention
-- purge), listing runs, waiting for a terminal state, and recording the outcome
-- of an on-fail handler. _cb_run_layout is the one place that knows how the
-- run tables of each kind are laid out (cb_tasks/cb_task_runs;
-- cb_flows/cb_flow_runs with their parts cb_step_runs and cb_map_tasks).
-- Guarantees:
--   * Hot paths (claims, completions, failures, lease renewal) stay static SQL
--     in their own files and share only argument checks from here. The helpers
--     that build SQL (delete, purge, clear, list, on-fail outcome) run rarely;
--     they quote every identifier with format('%I') and pass every value as a
--     parameter.
--   * A run is finished when its status is terminal and its on-fail handling,
--     if any, is over (completed or failed); only finished runs are purged.
--     Every failed run is queued for on-fail handling; when the definition
--     declares no on_fail handler, a queued (never claimed) one does not hold
--     the purge back.
--   * The retry policy: stored on the definition (each part NULL: not
--     stored), overridden part by part by a fail call's arguments; defaults 0
--     retries, backoff 100-2000 ms. A lapsed lease is an attempt: runs are
--     capped at max_retries + 1 attempts (25 without a stored policy).
--   * Each helper looks the definition up first, as the verbs did before they
--     shared it, so errors come in the same order: 22023 for a bad name, 42704
--     for an unknown definition, then 22023 for a bad argument.

-- Full-jitter retry delay in milliseconds for the given (1-based) attempt:
-- uniform in [backoff_min, min(backoff_max, backoff_min * 2^(attempt - 1))].
-- Raises nothing; callers have checked the policy with _cb_check_retry_policy.
CREATE FUNCTION catbird._cb_retry_delay(attempt int, backoff_min int, backoff_max int) RETURNS double precision
LANGUAGE sql VOLATILE
AS $$
    SELECT backoff_min + random() * (least(backoff_max::double precision,
                                           backoff_min * power(2, least(greatest(attempt - 1, 0), 60)))
                                     - backoff_min)
$$;

-- Checks the retry policy of a fail call (cb_fail_task, cb_fail_step,
-- cb_fail_map_task): max_retries >= 0, 0 <= backoff_min <= backoff_max.
-- Returns nothing; 22023 for the first argument out of range.
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

-- Checks a retry policy stored on a definition (cb_create_task, flow step
-- keys): each part NULL (not stored) or max_retries >= 0, backoff_min >= 0,
-- backoff_max not below backoff_min (100 ms when not stored). Returns nothing;
-- 22023 for the first part out of range.
CREATE FUNCTION catbird._cb_check_stored_policy(max_retries int, backoff_min int, backoff_max int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF max_retries IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('max_retries', max_retries, 0);
    END IF;
    IF backoff_min IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('backoff_min', backoff_min, 0, ' ms');
    END IF;
    IF backoff_max IS NOT NULL AND backoff_max < coalesce(backoff_min, 100) THEN
        RAISE EXCEPTION 'invalid backoff_max: got %, expected at least backoff_min (% ms%)',
            backoff_max, coalesce(backoff_min, 100), CASE WHEN backoff_min IS NULL THEN ', the default' ELSE '' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The retry policy a fail call acts under: each argument given overrides the
-- definition's stored part; without either, 0 retries and a backoff of 100 to
-- 2000 ms (backoff_max at least backoff_min). Checked with
-- _cb_check_retry_policy: 22023 for a part out of range.
CREATE FUNCTION catbird._cb_effective_policy(max_retries int, backoff_min int, backoff_max int,
                                             stored_max_retries int, stored_backoff_min int, stored_backoff_max int,
                                             OUT max_retries_out int, OUT backoff_min_out int, OUT backoff_max_out int)
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    max_retries_out := coalesce(max_retries, stored_max_retries, 0);
    backoff_min_out := coalesce(backoff_min, stored_backoff_min, 100);
    backoff_max_out := coalesce(backoff_max, stored_backoff_max, greatest(2000, backoff_min_out));
    PERFORM catbird._cb_check_retry_policy(max_retries_out, backoff_min_out, backoff_max_out);
END
$$;

-- How many attempts a run (task run, step run or map item) whose lease keeps
-- lapsing may use before the next claim or cb_gc fails it: max_retries + 1,
-- or 25 without a stored policy. Raises nothing.
CREATE FUNCTION catbird._cb_lease_cap(max_retries int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(max_retries + 1, 25) $$;

-- The error_message of a run failed because its lease lapsed too often.
-- Raises nothing.
CREATE FUNCTION catbird._cb_lease_expired_error(attempts int) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT format('lease expired: attempt %s ended without a report from its worker (it crashed or stalled),'
                  ' and no attempt is left', attempts)
$$;

-- Checks the new optional arguments of the fail calls and fenced calls:
-- retryable not NULL, attempt NULL or >= 1. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_fail_args(retryable boolean, attempt int) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF retryable IS NULL THEN
        RAISE EXCEPTION 'invalid retryable: NULL (give true or false)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF attempt IS NOT NULL AND attempt < 1 THEN
        PERFORM catbird._cb_check_at_least('attempt', attempt, 1);
    END IF;
END
$$;

-- Checks the arguments of a lease renewal (cb_hide_tasks, cb_hide_steps,
-- cb_hide_map_tasks): hide_for >= 1 ms, and attempts, when given, one per id.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_lease(hide_for int, ids bigint[], attempts int[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    IF attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids) THEN
        RAISE EXCEPTION 'invalid attempts: give one attempt per id (or none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks the retention_period of a task or flow definition: NULL (keep runs
-- forever) or not negative, and at most 1000 years. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_retention(retention_period interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF retention_period < interval '0' THEN
        RAISE EXCEPTION 'invalid retention_period %: it must not be negative (NULL keeps runs forever)', retention_period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval('retention_period', retention_period);
END
$$;

-- How the runs of a kind ('task' or 'flow') are stored, for the helpers below
-- that build SQL: the definition table, the run table, the column of both run
-- table and parts naming the definition, the tables holding parts of a run
-- (with the column naming their run), the terminal statuses, and six columns
-- whose first non-null value is when a run finished (padded with created_at,
-- which is never null). 22023 for another kind.
CREATE FUNCTION catbird._cb_run_layout(kind text,
    OUT definitions text, OUT runs text, OUT definition_column text, OUT parts text[], OUT part_run_column text,
    OUT finished_statuses text[], OUT finished_at text[])
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    CASE kind
    WHEN 'task' THEN
        definitions := 'cb_tasks';
        runs := 'cb_task_runs';
        definition_column := 'task_id';
        parts := '{}';
        finished_statuses := '{completed,failed,skipped,canceled,expired}';
        finished_at := '{completed_at,failed_at,skipped_at,canceled_at,expired_at,created_at}';
    WHEN 'flow' THEN
        definitions := 'cb_flows';
        runs := 'cb_flow_runs';
        definition_column := 'flow_id';
        parts := '{cb_map_tasks,cb_step_runs}';
        part_run_column := 'flow_run_id';
        finished_statuses := '{completed,failed,canceled,expired}';
        finished_at := '{completed_at,failed_at,canceled_at,created_at,created_at,created_at}';  -- expiry sets canceled_at
    ELSE
        RAISE EXCEPTION 'invalid kind of run %: expected task or flow', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;

-- The id of a queue, task or flow, holding its shared lock (through
-- _cb_queue_id, _cb_task or _cb_flow). 22023 for an invalid name, 42704 when
-- it does not exist.
CREATE FUNCTION catbird._cb_definition_id(kind text, name text) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
BEGIN
    CASE kind
    WHEN 'queue' THEN
        v_id := catbird._cb_queue_id(name);
    WHEN 'task' THEN
        v_id := (catbird._cb_task(name)).id;
    WHEN 'flow' THEN
        v_id := (catbird._cb_flow(name)).id;
    END CASE;
    RETURN v_id;
END
$$;

-- Whether a concurrency key of a task or flow is held by one of its active
-- runs (a task's queued or started runs, a flow's started or canceling ones).
-- False for a NULL key. Raises nothing.
CREATE FUNCTION catbird._cb_key_held(kind text, definition_id int, concurrency_key text) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF kind = 'task' THEN
        RETURN EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                       WHERE r.task_id = definition_id AND r.concurrency_key = _cb_key_held.concurrency_key
                         AND r.status IN ('queued', 'started'));
    END IF;
    RETURN EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                   WHERE r.flow_id = definition_id AND r.concurrency_key = _cb_key_held.concurrency_key
                     AND r.status IN ('started', 'canceling'));
END
$$;

-- cb_run_task / cb_run_flow (batch forms): creates one run per input of the
-- task or flow through the one inserter of its kind (_cb_insert_task_runs,
-- _cb_insert_flow_runs), after checking the arguments. Returns the run id of
-- each input, in input order. 22023 for an invalid name, 42704 for an
-- unknown definition, then 22023 for invalid inputs, keys or headers; 40001
-- when a key's holder finished while the call deduplicated against it.
CREATE FUNCTION catbird._cb_run(kind text, name text, inputs jsonb[], concurrency_keys text[], headers jsonb[],
                                visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    -- the cb_tasks or cb_flows row, as a record: this file comes before both
    -- tables, and a plain-script install compiles the declarations
    v_task record;
    v_flow record;
BEGIN
    IF kind = 'task' THEN
        v_task := catbird._cb_task(name);
    ELSE
        v_flow := catbird._cb_flow(name);
    END IF;
    PERFORM catbird._cb_check_send_args(inputs, NULL, concurrency_keys, headers);
    IF cardinality(inputs) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    IF kind = 'task' THEN
        RETURN catbird._cb_insert_task_runs(v_task, inputs, concurrency_keys, headers,
                                            visible_at, priority, expires_at);
    END IF;
    RETURN catbird._cb_insert_flow_runs(v_flow, inputs, concurrency_keys, headers,
                                        visible_at, priority, expires_at);
END
$$;

-- Deletes a task or flow (cb_delete_task, cb_delete_flow): its definition
-- (flow steps cascade), every run with its parts, its bindings; announces
-- catbird.<kind>.deleted. Waits for calls holding the definition's shared lock.
-- Returns false when it does not exist; 22023 for an invalid name.
CREATE FUNCTION catbird._cb_delete_definition(kind text, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    PERFORM catbird._cb_lock_definition(kind, name, exclusive => true);
    EXECUTE format('DELETE FROM catbird.%I d WHERE d.name = $1 RETURNING d.id', v_layout.definitions)
        INTO v_id USING name;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_clear_runs(kind, v_id);
    DELETE FROM catbird.cb_bindings b WHERE b.target_type = kind AND b.target_name = name;
    PERFORM catbird._cb_notify(format('catbird.%s.deleted', kind), jsonb_build_object(kind, name)::text);
    RETURN true;
END
$$;

-- Deletes every run of one definition, whatever its status, with its parts;
-- in-flight work is lost (workers' later reports find nothing and are
-- refused). Returns the number of runs deleted; raises nothing.
CREATE FUNCTION catbird._cb_clear_runs(kind text, definition_id int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
-- Its writes are dynamic SQL, which plpgsql_check cannot see (it would ask for STABLE):
-- @plpgsql_check_options: performance_warnings = false
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_table text;
    v_count int;
BEGIN
    FOREACH v_table IN ARRAY v_layout.parts || v_layout.runs LOOP
        EXECUTE format('DELETE FROM catbird.%I x WHERE x.%I = $1', v_table, v_layout.definition_column)
            USING definition_id;
        GET DIAGNOSTICS v_count = ROW_COUNT;  -- the run table comes last
    END LOOP;
    RETURN v_count;
END
$$;

-- Deletes the finished runs of one definition (terminal, on-fail handling
-- over) that finished at or before finished_before, with their parts. With
-- lim, at most lim runs, skipping rows locked by other transactions (cb_gc's
-- bounded batches). Returns the number of runs deleted; raises nothing.
CREATE FUNCTION catbird._cb_delete_finished_runs(kind text, definition_id int, finished_before timestamptz,
                                                 lim int = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
-- Its writes are dynamic SQL, which plpgsql_check cannot see (it would ask for STABLE):
-- @plpgsql_check_options: performance_warnings = false
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_ids bigint[];
    v_part text;
BEGIN
    EXECUTE format(
        'WITH deleted AS ('
        '    DELETE FROM catbird.%1$I r'
        '    WHERE r.id IN (SELECT x.id FROM catbird.%1$I x'
        '                   WHERE x.%2$I = $1 AND x.status = ANY ($2)'
        -- on-fail handling blocks the purge while it runs, or while it waits
        -- for a handler the definition declares (on_fail)
        '                     AND (coalesce(x.on_fail_status, ''completed'') IN (''completed'', ''failed'')'
        '                          OR (x.on_fail_status = ''queued'''
        '                              AND NOT (SELECT d.on_fail FROM catbird.%10$I d WHERE d.id = $1)))'
        '                     AND coalesce(x.%3$I, x.%4$I, x.%5$I, x.%6$I, x.%7$I, x.%8$I) <= $3'
        '                   %9$s)'
        '    RETURNING r.id)'
        ' SELECT coalesce(array_agg(d.id), ''{}'') FROM deleted d',
        v_layout.runs, v_layout.definition_column,
        v_layout.finished_at[1], v_layout.finished_at[2], v_layout.finished_at[3],
        v_layout.finished_at[4], v_layout.finished_at[5], v_layout.finished_at[6],
        CASE WHEN lim IS NOT NULL THEN 'LIMIT $4 FOR UPDATE SKIP LOCKED' ELSE '' END,
        v_layout.definitions)
    INTO v_ids
    USING definition_id, v_layout.finished_statuses, finished_before, lim;
    FOREACH v_part IN ARRAY v_layout.parts LOOP
        EXECUTE format('DELETE FROM catbird.%I p WHERE p.%I = ANY ($1)', v_part, v_layout.part_run_column)
            USING v_ids;
    END LOOP;
    RETURN cardinality(v_ids);
END
$$;

-- cb_purge_task_runs / cb_purge_flow_runs: deletes the finished runs of a task
-- or flow that finished at least older_than ago. Returns how many it deleted.
-- 42704 for an unknown definition; 22023 for an invalid name or a NULL or
-- negative older_than, or one over 1000 years.
CREATE FUNCTION catbird._cb_purge_runs(kind text, name text, older_than interval) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
BEGIN
    IF older_than IS NULL OR older_than < interval '0' THEN
        RAISE EXCEPTION 'invalid older_than %: expected a non-negative interval', coalesce(older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval('older_than', older_than);
    RETURN catbird._cb_delete_finished_runs(kind, v_id, catbird.cb_now() - older_than);
END
$$;

-- cb_gc's retention purge for one kind: deletes up to lim finished runs older
-- than their definition's retention_period (definitions without one, or with
-- 0, keep their runs). Returns how many it deleted; raises nothing.
CREATE FUNCTION catbird._cb_purge_retained_runs(kind text, now timestamptz, lim int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
    v_retention interval;
    v_count int := 0;
BEGIN
    FOR v_id, v_retention IN EXECUTE format(
        'SELECT d.id, d.retention_period FROM catbird.%I d WHERE d.retention_period > interval ''0'' ORDER BY d.id',
        v_layout.definitions)
    LOOP
        EXIT WHEN v_count >= lim;
        v_count := v_count + catbird._cb_delete_finished_runs(kind, v_id, now - v_retention, lim - v_count);
    END LOOP;
    RETURN v_count;
END
$$;

-- cb_list_task_runs / cb_list_flow_runs / cb_get_task_run / cb_get_flow_run:
-- runs of a task or flow as row_type (cb_task_run_info or cb_flow_run_info,
-- read through the inlinable _cb_<kind>_runs), newest first, at most lim,
-- older than before_id when given, only run_id when given. 42704 for an
-- unknown definition; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird._cb_list_runs(row_type anyelement, kind text, name text, lim int,
                                      before_id bigint = NULL, run_id bigint = NULL)
RETURNS SETOF anyelement
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
BEGIN
    IF pg_typeof(row_type) <> format('catbird.cb_%s_run_info', kind)::regtype THEN
        RAISE EXCEPTION 'invalid row_type %: the runs of a % are catbird.cb_%s_run_info', pg_typeof(row_type), kind, kind
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_at_least('lim', lim, 1);
    RETURN QUERY EXECUTE format(
        'SELECT * FROM catbird.%I($1, $2) r'
        ' WHERE ($3::bigint IS NULL OR r.id < $3) AND ($4::bigint IS NULL OR r.id = $4)'
        ' ORDER BY r.id DESC LIMIT $5',
        '_cb_' || kind || '_runs')
    USING v_id, name, before_id, run_id, lim;
END
$$;

-- Server-side wait (cb_wait_task_output, cb_wait_flow_output,
-- cb_wait_flow_step_output): polls a run of a task or flow (kind 'task',
-- 'flow'; name is the definition) or a step of a flow run (kind 'step'; name
-- is the flow) every poll_interval ms for up to poll_for ms (wall clock).
-- Returns one row (status, output, error_message) once it is terminal
-- (completed, failed, skipped, canceled or expired: each kind has the ones
-- its statuses allow); no row on timeout or when the run does not exist.
-- Errors, in this order: for a task or flow, 22023 for an invalid name and
-- 42704 for an unknown definition; 22023 for poll_for < 0 or poll_interval
-- < 1; for a step, 42704 for an unknown flow or step.
CREATE FUNCTION catbird._cb_wait(kind text, name text, run_id bigint, step_name text, poll_for int, poll_interval int)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int;
    v_deadline timestamptz;
    v_status text;
    v_output jsonb;
    v_error text;
BEGIN
    IF kind <> 'step' THEN
        v_id := catbird._cb_definition_id(kind, name);
    END IF;
    PERFORM catbird._cb_check_at_least('poll_for', poll_for, 0, ' ms');
    PERFORM catbird._cb_check_at_least('poll_interval', poll_interval, 1, ' ms');
    v_deadline := clock_timestamp() + make_interval(secs => poll_for / 1000.0);
    LOOP
        CASE kind
        WHEN 'task' THEN
            SELECT r.status, r.output, r.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_task_runs r WHERE r.id = run_id AND r.task_id = v_id;
        WHEN 'flow' THEN
            SELECT r.status, r.output, r.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_flow_runs r WHERE r.id = run_id AND r.flow_id = v_id;
        WHEN 'step' THEN
            SELECT s.status, s.output, s.error_message INTO v_status, v_output, v_error
            FROM catbird.cb_get_flow_step_status(name, run_id, step_name) s;
        END CASE;
        IF v_status IS NULL THEN
            RETURN;  -- no such run
        END IF;
        IF v_status IN ('completed', 'failed', 'skipped', 'canceled', 'expired') THEN
            status := v_status;
            output := v_output;
            error_message := v_error;
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

-- Records the outcome of the on-fail handler of a run whose on-fail claim is
-- started, under on_fail_attempt when given (cb_complete_task_on_fail,
-- cb_fail_task_on_fail and their flow forms): completed, or failed and queued
-- again after retry_delay ms unless retry_exhausted. When the caller leaves
-- them NULL, SQL decides: exhausted once on_fail_attempts > max_retries, delay
-- a full-jitter backoff for the on-fail attempt, with the policy given or
-- stored on the definition (tasks; flows store none: 0 retries, 100-2000 ms).
-- Otherwise (a stale claim) nothing changes. Returns nothing; 42704 for an
-- unknown definition; 22023 for an invalid name, on_fail_attempt < 1, a
-- failure's retry_delay < 0 or an invalid policy.
CREATE FUNCTION catbird._cb_end_on_fail(kind text, name text, run_id bigint, completed boolean,
                                        error_message text = NULL, retry_exhausted boolean = NULL,
                                        retry_delay bigint = NULL, on_fail_attempt int = NULL,
                                        max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_id int := catbird._cb_definition_id(kind, name);
    v_layout record := catbird._cb_run_layout(kind);
    v_stored record;
    v_policy record;
BEGIN
    IF on_fail_attempt IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('on_fail_attempt', on_fail_attempt, 1);
    END IF;
    IF NOT completed AND retry_delay IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('retry_delay', retry_delay, 0, ' ms');
    END IF;
    IF kind = 'task' THEN
        SELECT t.max_retries, t.backoff_min, t.backoff_max INTO v_stored FROM catbird.cb_tasks t WHERE t.id = v_id;
    ELSE
        SELECT NULL::int AS max_retries, NULL::int AS backoff_min, NULL::int AS backoff_max INTO v_stored;
    END IF;
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_stored.max_retries, v_stored.backoff_min, v_stored.backoff_max);
    EXECUTE format(
        'UPDATE catbird.%I r'
        ' SET on_fail_status = CASE WHEN $1 THEN ''completed'''
        '                           WHEN coalesce($6, r.on_fail_attempts > $7) THEN ''failed'''
        '                           ELSE ''queued'' END,'
        '     on_fail_visible_at = CASE WHEN $1 THEN r.on_fail_visible_at'
        '                               ELSE catbird.cb_now() + make_interval(secs => coalesce($8::double precision,'
        '                                        catbird._cb_retry_delay(r.on_fail_attempts, $9, $10)) / 1000.0) END,'
        '     on_fail_error_message = $3'
        ' WHERE r.id = $4 AND r.%I = $5 AND r.on_fail_status = ''started'''
        '   AND ($2::int IS NULL OR r.on_fail_attempts = $2)',
        v_layout.runs, v_layout.definition_column)
    USING completed, on_fail_attempt,
          CASE WHEN NOT completed THEN coalesce(_cb_end_on_fail.error_message, 'unknown error') END,
          run_id, v_id, retry_exhausted, v_policy.max_retries_out, retry_delay,
          v_policy.backoff_min_out, v_policy.backoff_max_out;
END
$$;
-- catbird 40_tasks: task definitions and their runs.
--
-- Owns: cb_tasks, cb_task_runs, the cb_task_claim and cb_task_run_info types;
-- _cb_task (the lookup every task verb starts with), cb_create_task,
-- cb_delete_task, _cb_insert_task_runs (the one way runs are created:
-- cb_run_task and cb_publish), cb_run_task, cb_bind_task, cb_unbind_task,
-- cb_cancel_task, cb_wait_task_output, cb_purge_task_runs,
-- cb_clear_task_runs and introspection. The worker protocol is in
-- 45_task_worker; deleting, purging, clearing, listing and waiting are thin
-- over 38_runs.
-- Guarantees:
--   * Creating a task again with the same definition is a no-op; a different
--     one replaces it only while no run is queued or started (55006).
--   * A condition that is false for the input makes the run skipped at creation.
--   * A concurrency key is held by at most one queued or started run of a task;
--     a queued run past its expires_at is expired before a new run looks for
--     the key's holder, so an expired run never holds its key.
--   * The retry policy (max_retries, backoff_min, backoff_max) is stored on the
--     definition; fail calls and lease lapses use it (45_task_worker).
--   * Status changes are announced through cb_notify (80_events).

CREATE TABLE catbird.cb_tasks (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    description      text,
    condition        text,
    condition_expr   jsonb,
    retention_period interval,
    on_fail          boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL,
    -- the retry policy (NULL: none stored; see 38_runs)
    max_retries      int,
    backoff_min      int,
    backoff_max      int
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
    output               jsonb,
    error_detail         text
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

-- The task row, holding the task's shared lock. 42704 when it does not
-- exist; 22023 when the name could never exist.
CREATE FUNCTION catbird._cb_task(name text) RETURNS catbird.cb_tasks
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks;
BEGIN
    PERFORM catbird._cb_lock_definition('task', name);
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = _cb_task.name;
    IF v_task.id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('task', name);
    END IF;
    RETURN v_task;
END
$$;

-- Creates a task. Creating it again with the same definition (description,
-- condition, retention_period, on_fail, retry policy) is a no-op; a different
-- one replaces it while no run is queued or started. The retry policy
-- (max_retries, backoff_min, backoff_max ms; NULL: not stored) is used by
-- fail calls that do not give their own and caps lapsed leases at
-- max_retries + 1 attempts. Announces catbird.task.created. Returns nothing.
-- 22023 for an invalid name, a malformed condition, a negative
-- retention_period or an invalid retry policy; 55006 when runs are active.
CREATE FUNCTION catbird.cb_create_task(name text, description text = NULL, condition text = NULL,
                                       retention_period interval = NULL, on_fail boolean = false,
                                       max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL)
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
    PERFORM catbird._cb_check_retention(retention_period);
    PERFORM catbird._cb_check_stored_policy(max_retries, backoff_min, backoff_max);
    PERFORM catbird._cb_lock_definition('task', name, exclusive => true);
    SELECT * INTO v_existing FROM catbird.cb_tasks t WHERE t.name = cb_create_task.name;
    IF v_existing.id IS NULL THEN
        INSERT INTO catbird.cb_tasks (name, description, condition, condition_expr, retention_period, on_fail, created_at,
                                      max_retries, backoff_min, backoff_max)
        VALUES (cb_create_task.name, cb_create_task.description, cb_create_task.condition, v_expr,
                cb_create_task.retention_period, coalesce(cb_create_task.on_fail, false), catbird.cb_now(),
                cb_create_task.max_retries, cb_create_task.backoff_min, cb_create_task.backoff_max);
        PERFORM catbird._cb_notify('catbird.task.created', jsonb_build_object('task', name)::text);
        RETURN;
    END IF;
    IF (v_existing.description, v_existing.condition, v_existing.retention_period, v_existing.on_fail,
        v_existing.max_retries, v_existing.backoff_min, v_existing.backoff_max)
       IS NOT DISTINCT FROM (description, condition, retention_period, coalesce(on_fail, false),
                             max_retries, backoff_min, backoff_max) THEN
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
        on_fail = coalesce(cb_create_task.on_fail, false), max_retries = cb_create_task.max_retries,
        backoff_min = cb_create_task.backoff_min, backoff_max = cb_create_task.backoff_max
    WHERE t.id = v_existing.id;
END
$$;

-- Deletes a task with all its runs and bindings; waits for calls in flight on
-- it. Returns false when it does not exist; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_delete_task(name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_definition('task', cb_delete_task.name) $$;

-- The one implementation of creating runs: one run per input, condition
-- evaluated, deduplicated by concurrency key among queued/started runs.
-- Announces the new runs (catbird.task.started, catbird.task.skipped; a
-- queued holder of a key past expires_at: catbird.task.expired), one event
-- per topic and call. Returns the run id each input position resolved to.
-- Callers have validated the arguments and hold the task's shared lock.
CREATE FUNCTION catbird._cb_insert_task_runs(
    task catbird.cb_tasks, inputs jsonb[], concurrency_keys text[], headers jsonb[],
    visible_at timestamptz, priority int, expires_at timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids bigint[];
    v_started bigint[];
    v_skipped bigint[];
    v_expired bigint[];
BEGIN
    -- Bounded inputs (10_names): keys fit the index, times are finite.
    IF concurrency_keys IS NOT NULL OR _cb_insert_task_runs.visible_at IS NOT NULL OR _cb_insert_task_runs.expires_at IS NOT NULL THEN
        PERFORM catbird._cb_check_bounds(concurrency_keys, _cb_insert_task_runs.visible_at, _cb_insert_task_runs.expires_at);
    END IF;
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
        SELECT array_agg(i.id ORDER BY i.id), array_agg(i.id ORDER BY i.id) FILTER (WHERE i.status = 'skipped')
        INTO v_ids, v_skipped FROM inserted i;
        IF v_skipped IS NULL THEN
            PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name, v_ids);
        ELSE
            PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name,
                                            ARRAY(SELECT i FROM unnest(v_ids) AS i
                                                  WHERE i <> ALL (v_skipped) ORDER BY i));
            PERFORM catbird._cb_notify_runs('catbird.task.skipped', 'task', task.name, v_skipped);
        END IF;
        RETURN v_ids;
    END IF;
    -- Expired runs hold nothing: queued holders of these keys past their
    -- expires_at become expired (as a claim or cb_gc would) before deduplicating.
    WITH expired AS (
        UPDATE catbird.cb_task_runs r SET status = 'expired', expired_at = v_now
        WHERE r.task_id = task.id AND r.concurrency_key = ANY (concurrency_keys)
          AND r.status = 'queued' AND r.expires_at <= v_now
        RETURNING r.id
    )
    SELECT array_agg(e.id ORDER BY e.id) INTO v_expired FROM expired e;
    IF v_expired IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.expired', 'task', task.name, v_expired);
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
           array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.status = 'queued'),
           array_agg(ins.id ORDER BY ins.id) FILTER (WHERE ins.status = 'skipped')
    INTO v_ids, v_started, v_skipped
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
    IF v_started IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.started', 'task', task.name, v_started);
    END IF;
    IF v_skipped IS NOT NULL THEN
        PERFORM catbird._cb_notify_runs('catbird.task.skipped', 'task', task.name, v_skipped);
    END IF;
    RETURN v_ids;
END
$$;

-- Creates one run per input (condition false: skipped at creation), in one
-- statement; an input whose concurrency key is held by a queued or started
-- run resolves to that run. Returns the run id of each input, in input
-- order. 42704 for an unknown task; 22023 for invalid inputs, keys or
-- headers; 40001 when a key's holder finished while the call deduplicated
-- against it (retry).
CREATE FUNCTION catbird.cb_run_task(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_run('task', cb_run_task.name, inputs, concurrency_keys, headers, visible_at, priority, expires_at)
$$;

-- Creates a run (see the batch form). Returns its id, or the id of the run
-- holding concurrency_key. 42704 for an unknown task; 22023 for a SQL NULL
-- input or non-object headers; 40001 as for the batch form.
CREATE FUNCTION catbird.cb_run_task(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
BEGIN
    IF input IS NULL OR (headers IS NOT NULL AND jsonb_typeof(headers) <> 'object') THEN
        PERFORM catbird._cb_check_body('input', 'run input', input, headers);
    END IF;
    RETURN (catbird._cb_insert_task_runs(v_task, ARRAY[input],
                                         CASE WHEN concurrency_key IS NOT NULL THEN ARRAY[concurrency_key] END,
                                         ARRAY[headers], visible_at, priority, expires_at))[1];
END
$$;

-- Binds the task to a topic pattern: every publish to a matching topic creates
-- a run. Binding twice is a no-op. Returns nothing; 42704 for an unknown task,
-- 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_bind_task(name text, pattern text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_bind('task', cb_bind_task.name, pattern) $$;

-- Removes a binding of the task. Returns false when there was none; 42704 for
-- an unknown task, 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind_task(name text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('task', cb_unbind_task.name, pattern) $$;

-- Cancels a queued or started run (a started run's later reports are
-- refused); idempotent. Announces catbird.task.canceled. Returns true when the
-- run is canceled, false when it does not exist or already ended otherwise.
-- 42704 for an unknown task; 22023 for an invalid name.
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
        PERFORM catbird._cb_notify_runs('catbird.task.canceled', 'task', v_task.name, ARRAY[run_id]);
        RETURN true;
    END IF;
    -- Canceling a canceled run again is not an error, and still true.
    RETURN EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                   WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'canceled');
END
$$;

-- Waits up to poll_for ms, polling every poll_interval ms, for the run to be
-- terminal (completed, failed, skipped, canceled, expired). Returns one row
-- (status, output, error_message) then, no row on timeout or for a run that
-- does not exist. 42704 for an unknown task; 22023 for an invalid name,
-- poll_for < 0 or poll_interval < 1.
CREATE FUNCTION catbird.cb_wait_task_output(name text, run_id bigint, poll_for int = 5000, poll_interval int = 200)
RETURNS TABLE (status text, output jsonb, error_message text)
LANGUAGE sql VOLATILE
AS $$ SELECT * FROM catbird._cb_wait('task', cb_wait_task_output.name, run_id, NULL, poll_for, poll_interval) $$;

-- Deletes the task's finished runs (terminal, on-fail handling over) that
-- finished at least older_than ago. Returns how many it deleted. 42704 for an
-- unknown task; 22023 for an invalid name or a NULL or negative older_than.
CREATE FUNCTION catbird.cb_purge_task_runs(name text, older_than interval) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_purge_runs('task', cb_purge_task_runs.name, older_than) $$;

-- Deletes every run of the task whatever its status; in-flight work is lost
-- (workers' later reports find nothing and are refused). Returns how many it
-- deleted. 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_clear_task_runs(name text) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_clear_runs('task', catbird._cb_definition_id('task', cb_clear_task_runs.name)) $$;

-- Every task as TaskInfo (name, description, condition, retention_period,
-- on_fail, created_at, max_retries, backoff_min, backoff_max), by name.
-- Raises nothing.
CREATE FUNCTION catbird.cb_list_tasks()
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz, max_retries int, backoff_min int, backoff_max int)
LANGUAGE sql STABLE
AS $$
    SELECT t.name, t.description, t.condition, t.retention_period, t.on_fail, t.created_at,
           t.max_retries, t.backoff_min, t.backoff_max
    FROM catbird.cb_tasks t ORDER BY t.name
$$;

-- One task as TaskInfo; no row when it does not exist. Raises nothing.
CREATE FUNCTION catbird.cb_get_task(name text)
RETURNS TABLE (name text, description text, condition text, retention_period interval,
               on_fail boolean, created_at timestamptz, max_retries int, backoff_min int, backoff_max int)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_tasks() t WHERE t.name = $1 $$;

CREATE TYPE catbird.cb_task_run_info AS (
    id bigint, task_name text, status text, priority int, attempts int, concurrency_key text,
    input jsonb, headers jsonb, output jsonb, error_message text, cancel_reason text,
    created_at timestamptz, visible_at timestamptz, expires_at timestamptz,
    started_at timestamptz, completed_at timestamptz, failed_at timestamptz, skipped_at timestamptz,
    expired_at timestamptz, cancel_requested_at timestamptz, canceled_at timestamptz,
    on_fail_status text, on_fail_attempts int, on_fail_error_message text, error_detail text
);

-- Every run of a task as cb_task_run_info (TaskRunInfo fields); an inlinable
-- building block, so callers' filters, order and limit reach the index.
-- Raises nothing.
CREATE FUNCTION catbird._cb_task_runs(task_id int, task_name text)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql STABLE
AS $$
    SELECT r.id, task_name, r.status, r.priority, r.attempts, r.concurrency_key, r.input, r.headers,
           r.output, r.error_message, r.cancel_reason, r.created_at, r.visible_at, r.expires_at,
           r.started_at, r.completed_at, r.failed_at, r.skipped_at, r.expired_at, r.cancel_requested_at,
           r.canceled_at, r.on_fail_status, r.on_fail_attempts, r.on_fail_error_message, r.error_detail
    FROM catbird.cb_task_runs r
    WHERE r.task_id = $1
$$;

-- The task's runs as cb_task_run_info (TaskRunInfo), newest first, at most
-- lim, older than before_id when given (to page backwards). 42704 for an
-- unknown task; 22023 for an invalid name or lim < 1.
CREATE FUNCTION catbird.cb_list_task_runs(name text, lim int = 100, before_id bigint = NULL)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_task_run_info, 'task', cb_list_task_runs.name, lim, before_id)
$$;

-- One run of the task as cb_task_run_info; no row when it does not exist.
-- 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_get_task_run(name text, run_id bigint)
RETURNS SETOF catbird.cb_task_run_info
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird._cb_list_runs(NULL::catbird.cb_task_run_info, 'task', cb_get_task_run.name, 1,
                                        run_id => run_id)
$$;
-- catbird 45_task_worker: the worker protocol for task runs.
--
-- Owns: cb_claim_tasks, cb_hide_tasks, cb_complete_tasks, cb_complete_task,
-- cb_fail_task, cb_retry_task_run, and the on-fail lane: cb_claim_task_on_fail,
-- cb_complete_task_on_fail, cb_fail_task_on_fail. Writes cb_task_runs.
-- Guarantees:
--   * A run is claimable while it is queued, or started with its lease
--     (visible_at) passed: a run whose worker died is picked up again without
--     an operator. Claims use FOR UPDATE SKIP LOCKED on the partial claim index,
--     which holds only queued and started runs.
--   * Every claim increments attempts; attempts is the fencing token: complete
--     and fail given an attempt act only on the run still started under that
--     attempt, so a stale worker cannot overwrite a newer claim's outcome.
--   * The retry decision is made here: cb_fail_task re-queues with a full-jitter
--     delay while attempts <= max_retries (the policy given, else the one stored
--     on the task) and the failure is retryable, else the run is failed for good.
--   * A lapsed lease is an attempt: a started run whose lease lapsed after
--     max_retries + 1 attempts (25 without a stored policy) is failed by the
--     next claim (or cb_gc) with a "lease expired" error, never claimed again.
--   * Every run that ends failed is queued for on-fail handling, whatever the
--     task's flags; on-fail outcomes are fenced by on_fail_attempt and their
--     retry delay is decided in SQL when the caller does not give one.
--   * cb_retry_task_run puts a failed, canceled or expired run back to queued.
--   * A queued run past its expires_at becomes expired when a claim meets it
--     and is never handed out.
--   * Claims, completions, failures and lease renewal are static SQL (cached
--     plans); on-fail outcomes are thin over 38_runs.
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).
--   * Claims, completions and lease renewals call no other catbird function
--     on their normal path: with the pinned search_path (SPEC 7.2) each nested
--     call is a search_path switch (_cb_task ~22 us, cb_now() ~12 us a call),
--     which at small batches was most of the difference to a raw claim. So
--     they inline the engine clock (clock_timestamp(), and cb_now() only when
--     catbird.fake_now is set, to check the caller may move the clock), the
--     definition lookup with its shared lock (_cb_task / _cb_lock_definition;
--     _cb_task only to raise for an unknown task), the argument checks (the
--     check helpers only to raise) and _cb_lease_cap. What is left is called
--     once per statement, never per row.

-- Claims up to quantity runs of a task: queued runs, and started runs whose
-- lease (visible_at) lapsed, highest priority first, then oldest. Each claim
-- increments attempts (the fencing token) and holds the run for hide_for ms;
-- concurrent claims skip each other's rows. Queued runs past expires_at met
-- on the way become expired (catbird.task.expired), and lapsed runs that used
-- their attempts (see _cb_lease_cap) fail with a "lease expired" error
-- (on-fail queued, catbird.task.failed); neither counts. Returns the claims
-- (cb_task_claim) by priority, then id. 42704 for an unknown task; 22023 for
-- an invalid name, quantity < 1 or hide_for < 1.
CREATE FUNCTION catbird.cb_claim_tasks(name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_task_claim
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task_id int;
    v_now timestamptz;
    v_wanted int := quantity;
    v_claims catbird.cb_task_claim[];
    v_expired bigint;
    v_expired_ids bigint[];
    v_failed bigint[];
    v_max_retries int;
    v_cap int;
BEGIN
    -- Nested calls inlined (see the header): the checks only raise.
    IF quantity IS NULL OR quantity < 1 OR hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    SELECT t.id, t.max_retries INTO v_task_id, v_max_retries FROM catbird.cb_tasks t WHERE t.name = cb_claim_tasks.name;
    IF v_task_id IS NULL THEN
        v_task_id := (catbird._cb_task(name)).id;  -- raises the clear error
    END IF;
    v_cap := coalesce(v_max_retries + 1, 25);  -- _cb_lease_cap
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    -- Expired runs met on the way are retired (they leave the claim index) and
    -- do not count against quantity: claim again until it is filled or no
    -- expired run was met.
    LOOP
        WITH candidates AS (
            SELECT r.id, (r.status = 'queued' AND coalesce(r.expires_at <= v_now, false)) AS expired,
                   (r.status = 'started' AND r.attempts >= v_cap) AS exhausted
            FROM catbird.cb_task_runs r
            WHERE r.task_id = v_task_id
              AND r.status IN ('queued', 'started')
              AND r.visible_at <= v_now
            ORDER BY r.priority DESC, r.visible_at, r.id
            LIMIT v_wanted
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE catbird.cb_task_runs r
            SET status = CASE WHEN c.expired THEN 'expired' WHEN c.exhausted THEN 'failed' ELSE 'started' END,
                attempts = r.attempts + CASE WHEN c.expired OR c.exhausted THEN 0 ELSE 1 END,
                started_at = CASE WHEN c.expired OR c.exhausted THEN r.started_at ELSE v_now END,
                expired_at = CASE WHEN c.expired THEN v_now END,
                visible_at = CASE WHEN c.expired OR c.exhausted THEN r.visible_at
                                  ELSE v_now + make_interval(secs => hide_for / 1000.0) END,
                failed_at = CASE WHEN c.exhausted THEN v_now ELSE r.failed_at END,
                error_message = CASE WHEN c.exhausted THEN catbird._cb_lease_expired_error(r.attempts)
                                     ELSE r.error_message END,
                on_fail_status = CASE WHEN c.exhausted THEN 'queued' ELSE r.on_fail_status END,
                on_fail_visible_at = CASE WHEN c.exhausted THEN v_now ELSE r.on_fail_visible_at END
            FROM candidates c
            -- = ANY keeps the join on the primary key: a hash join over a scan
            -- of the whole table (every finished run too) was the planner's
            -- choice for a batch of 250 (2-3 ms per claim at 20,000 runs).
            WHERE r.id = c.id AND r.id = ANY (ARRAY(SELECT x.id FROM candidates x))
            RETURNING r.id, r.attempts, r.input, r.headers, r.concurrency_key, r.priority, c.expired, c.exhausted
        )
        SELECT coalesce(array_agg(ROW(c.id, c.attempts, c.input, c.headers, c.concurrency_key, c.priority)::catbird.cb_task_claim
                                  ORDER BY c.priority DESC, c.id) FILTER (WHERE NOT (c.expired OR c.exhausted)), '{}'),
               count(*) FILTER (WHERE c.expired OR c.exhausted),
               array_agg(c.id ORDER BY c.id) FILTER (WHERE c.exhausted),
               array_agg(c.id ORDER BY c.id) FILTER (WHERE c.expired)
        INTO v_claims, v_expired, v_failed, v_expired_ids
        FROM claimed c;
        RETURN QUERY SELECT * FROM unnest(v_claims);
        IF v_expired > 0 THEN
            PERFORM catbird._cb_notify_runs('catbird.task.failed', 'task', cb_claim_tasks.name, v_failed);
            PERFORM catbird._cb_notify_runs('catbird.task.expired', 'task', cb_claim_tasks.name, v_expired_ids);
        END IF;
        v_wanted := v_wanted - cardinality(v_claims);
        EXIT WHEN v_expired = 0 OR v_wanted = 0;
    END LOOP;
END
$$;

-- Lease renewal: pushes visible_at of started runs out to hide_for ms from
-- now; with attempts (one per id) only runs still started under those claims.
-- Returns nothing. 42704 for an unknown task; 22023 for an invalid name,
-- hide_for < 1 or attempts of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_tasks(name text, ids bigint[], hide_for int, attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_task catbird.cb_tasks;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_task, the check, cb_now().
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('task/' || name));
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = cb_hide_tasks.name;
    IF v_task.id IS NULL THEN
        v_task := catbird._cb_task(name);  -- raises the clear error
    END IF;
    IF hide_for IS NULL OR hide_for < 1
       OR (attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids)) THEN
        PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;
    -- With attempts, only leases still held under those claims are renewed.
    UPDATE catbird.cb_task_runs r
    SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_tasks.attempts) AS u(id, attempt)
    WHERE r.task_id = v_task.id AND r.id = u.id AND r.id = ANY (ids) AND r.status = 'started'
      AND (u.attempt IS NULL OR r.attempts = u.attempt);
END
$$;

-- Batch completion: records the outputs of the runs still started under the
-- given attempts (NULL attempts: any) and announces catbird.task.completed.
-- Returns the ids recorded (sorted); stale runs are left out. 42704 for an
-- unknown task; 22023 for an invalid name or arrays of different lengths.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_tasks(name text, run_ids bigint[], outputs jsonb[], attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_task catbird.cb_tasks;
    v_now timestamptz;
    v_done bigint[];
BEGIN
    -- Nested calls inlined (see the header): _cb_task, cb_now().
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('task/' || name));
    SELECT * INTO v_task FROM catbird.cb_tasks t WHERE t.name = cb_complete_tasks.name;
    IF v_task.id IS NULL THEN
        v_task := catbird._cb_task(name);  -- raises the clear error
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;
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
    -- One event per call (run_ids), not one per run.
    PERFORM catbird._cb_notify_runs('catbird.task.completed', 'task', v_task.name, v_done);
    RETURN v_done;
END
$$;

-- Completes one run with output (see cb_complete_tasks). Returns true when
-- the outcome was recorded, false for a run that is not started (under
-- attempt, when given). Errors as cb_complete_tasks.
CREATE FUNCTION catbird.cb_complete_task(name text, run_id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE sql VOLATILE
AS $$
    SELECT cardinality(catbird.cb_complete_tasks(name, ARRAY[run_id], ARRAY[output], ARRAY[attempt])) > 0
$$;

-- Records a failure of a started run (under attempt, when given): re-queued
-- with a full-jitter delay in [backoff_min, min(backoff_max, backoff_min *
-- 2^(attempts - 1))] ms while attempts <= max_retries and retryable, else
-- failed for good (queued for on-fail handling; announces
-- catbird.task.failed). Policy arguments left NULL come from the task's stored
-- policy (default 0 retries, 100-2000 ms). error_detail (e.g. a traceback) is
-- stored beside error_message. Returns 'queued', 'failed', or NULL for a stale
-- call. 42704 for an unknown task; 22023 for an invalid name, retry policy or
-- a NULL retryable.
CREATE FUNCTION catbird.cb_fail_task(name text, run_id bigint, error_message text, attempt int = NULL,
                                     max_retries int = NULL, backoff_min int = NULL, backoff_max int = NULL,
                                     retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_policy record;
    v_status text;
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_task.max_retries, v_task.backoff_min, v_task.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
    UPDATE catbird.cb_task_runs r
    SET status = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN 'queued' ELSE 'failed' END,
        visible_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out
                          THEN v_now + make_interval(secs => catbird._cb_retry_delay(
                                   r.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
                          ELSE r.visible_at END,
        failed_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE v_now END,
        error_message = coalesce(cb_fail_task.error_message, 'unknown error'),
        error_detail = cb_fail_task.error_detail,
        on_fail_status = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE 'queued' END,
        on_fail_visible_at = CASE WHEN retryable AND r.attempts <= v_policy.max_retries_out THEN NULL ELSE v_now END
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status = 'started'
      AND (attempt IS NULL OR r.attempts = attempt)
    RETURNING r.status INTO v_status;
    IF v_status = 'failed' THEN
        PERFORM catbird._cb_notify_runs('catbird.task.failed', 'task', v_task.name, ARRAY[run_id]);
    END IF;
    RETURN v_status;
END
$$;

-- Puts a failed, canceled or expired run back to queued, visible now:
-- attempts restart at 0; output, errors, end times and on-fail state are
-- cleared (an expires_at already passed is dropped). Announces
-- catbird.task.queued. Returns true when re-queued; false when the run does
-- not exist, is in another status, or its concurrency key is held by another
-- queued or started run. 42704 for an unknown task; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_retry_task_run(name text, run_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_task catbird.cb_tasks := catbird._cb_task(name);
    v_now timestamptz := catbird.cb_now();
    v_run catbird.cb_task_runs;
BEGIN
    SELECT * INTO v_run FROM catbird.cb_task_runs r
    WHERE r.id = run_id AND r.task_id = v_task.id AND r.status IN ('failed', 'canceled', 'expired')
    FOR UPDATE;
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    IF catbird._cb_key_held('task', v_task.id, v_run.concurrency_key) THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE catbird.cb_task_runs r
        SET status = 'queued', attempts = 0, visible_at = v_now, output = NULL, error_message = NULL,
            error_detail = NULL, started_at = NULL, completed_at = NULL, failed_at = NULL, expired_at = NULL,
            canceled_at = NULL, cancel_requested_at = NULL, cancel_reason = NULL,
            expires_at = CASE WHEN r.expires_at <= v_now THEN NULL ELSE r.expires_at END,
            on_fail_status = NULL, on_fail_attempts = 0, on_fail_visible_at = NULL, on_fail_error_message = NULL
        WHERE r.id = v_run.id;
    EXCEPTION WHEN unique_violation THEN
        RETURN false;  -- a run holding the key committed meanwhile
    END;
    PERFORM catbird._cb_notify('catbird.task.queued', jsonb_build_object('task', v_task.name)::text);
    RETURN true;
END
$$;

-- Claims up to quantity failed runs whose on-fail handling is due (queued,
-- or started with its hide window lapsed), oldest due first: on_fail_attempts
-- is incremented and the claim held for hide_for ms. Returns the claims by
-- id. 42704 for an unknown task; 22023 for an invalid name, quantity < 1 or
-- hide_for < 1.
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

-- Records that the on-fail handler of a run succeeded; acts only on a run whose
-- on-fail claim is started (under on_fail_attempt, the on_fail_attempts its
-- claim returned, when given). Returns nothing; 42704 for an unknown task,
-- 22023 for an invalid name or on_fail_attempt < 1.
CREATE FUNCTION catbird.cb_complete_task_on_fail(name text, run_id bigint, on_fail_attempt int = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('task', cb_complete_task_on_fail.name, run_id, completed => true,
                                   on_fail_attempt => on_fail_attempt)
$$;

-- Records that the on-fail handler of a run failed: claimable again after
-- retry_delay ms, or failed for good when retry_exhausted. Left NULL, SQL
-- decides both from the policy given (max_retries, backoff_min, backoff_max)
-- or stored on the task: exhausted once on_fail_attempts > max_retries, a
-- full-jitter delay otherwise. Acts only on a run whose on-fail claim is
-- started (under on_fail_attempt, when given). Returns nothing; 42704 for an
-- unknown task, 22023 for an invalid name, retry_delay < 0, on_fail_attempt
-- < 1 or an invalid policy.
CREATE FUNCTION catbird.cb_fail_task_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean = NULL, retry_delay bigint = NULL,
                                             on_fail_attempt int = NULL, max_retries int = NULL,
                                             backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('task', cb_fail_task_on_fail.name, run_id, completed => false,
                                   error_message => cb_fail_task_on_fail.error_message,
                                   retry_exhausted => retry_exhausted, retry_delay => retry_delay,
                                   on_fail_attempt => on_fail_attempt, max_retries => max_retries,
                                   backoff_min => backoff_min, backoff_max => backoff_max)
$$;
-- catbird 50_flow_tables: the tables and types of flows (DAGs of steps) and their runs.
--
-- Owns: cb_flows, cb_flow_steps (definitions); cb_flow_runs, cb_step_runs,
-- cb_map_tasks (runs); the cb_step_claim type. The flow verbs live in 51-57,
-- one concern a file: definitions, dispatch, runs, worker steps, worker items,
-- introspection, on-fail. Guarantees of the flow engine as a whole:
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
--   * A lapsed lease is an attempt: a step run or map item whose lease lapsed
--     after its step's max_retries + 1 attempts (25 without a stored policy)
--     fails the flow run with a "lease expired" error at the next claim of
--     that step (or cb_gc) instead of being claimed again.
--   * Every failed flow run is queued for on-fail handling, whatever the
--     flow's flags.
--   * Step runs and map items carry flow_id and step_name, so the claim
--     indexes (flow_id, step_name, priority DESC, visible_at, id) serve a
--     worker's claims for one step without joining the definitions.

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
    -- the step's retry policy (NULL: not stored; see 38_runs), also its items'
    max_retries    int,
    backoff_min    int,
    backoff_max    int,
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
    error_detail    text,
    -- a generator's items: the attempt that spawned last and how many items
    -- (from index 0) that attempt has produced, so a resumed generator that
    -- produces its items again adds none twice
    spawn_attempt   int,
    spawn_cursor    int NOT NULL DEFAULT 0,
    UNIQUE (flow_run_id, step_name)
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX cb_step_runs_claim_idx ON catbird.cb_step_runs (flow_id, step_name, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');
-- in-flight step runs by lease end: a claim finds lapsed ones that used their attempts
CREATE INDEX cb_step_runs_lease_idx ON catbird.cb_step_runs (flow_id, step_name, visible_at)
    WHERE status = 'started';

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
    error_detail  text,
    UNIQUE (step_run_id, idx)
) WITH (autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX cb_map_tasks_claim_idx ON catbird.cb_map_tasks (flow_id, step_name, priority DESC, visible_at, id)
    WHERE status IN ('queued', 'started');
CREATE INDEX cb_map_tasks_lease_idx ON catbird.cb_map_tasks (flow_id, step_name, visible_at)
    WHERE status = 'started';

CREATE TYPE catbird.cb_step_claim AS (
    id           bigint,
    flow_run_id  bigint,
    attempts     int,
    input        jsonb,
    step_outputs jsonb,
    signal_input jsonb
);
-- catbird 51_flow_definitions: creating, replacing, deleting and listing flows.
--
-- Owns: _cb_flow and _cb_flow_step (the lookups every flow verb starts with),
-- _cb_normalize_flow_steps, cb_create_flow, cb_delete_flow, cb_list_flows,
-- cb_get_flow. Writes cb_flows and cb_flow_steps.
-- Guarantees:
--   * A steps array is validated as a whole before anything is written: an
--     unknown dependency, a cycle, a duplicate or reserved step name, a bad
--     map/reduce source, a malformed condition or an empty flow is 22023.
--     Validation takes time linear in steps + dependencies (a cycle is
--     reported with exactly the steps on it).
--   * Creating a flow again with an identical definition is a no-op; a
--     different definition replaces it only while no run is active (55006
--     otherwise).
--   * Definition changes take the flow's advisory lock exclusively, and every
--     verb on a flow holds it shared, so a flow never changes under a running
--     call.

-- The flow row, holding the flow's shared lock. 42704 when it does not
-- exist; 22023 when the name could never exist.
CREATE FUNCTION catbird._cb_flow(name text) RETURNS catbird.cb_flows
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows;
BEGIN
    PERFORM catbird._cb_lock_definition('flow', name);
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = _cb_flow.name;
    IF v_flow.id IS NULL THEN
        PERFORM catbird._cb_raise_undefined('flow', name);
    END IF;
    RETURN v_flow;
END
$$;

-- A step of a flow. 42704 when the flow has no such step (the hint lists its
-- steps).
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
-- fixed shape), raising 22023 with a precise message for the first problem:
-- not an array, empty, a step that is not an object, an invalid, reserved or
-- duplicate name, an unknown key, an unknown or repeated dependency, a bad signal, step_type,
-- map or reduce source or ignore_output, a malformed condition, a cycle, a
-- retry policy key (max_retries, backoff_min, backoff_max: whole numbers,
-- kept in the normalized step only when given) out of range.
-- Linear in steps + dependencies (workers create their flows at start-up,
-- and flows of 10,000 steps are valid): every lookup across steps is done
-- once for the whole array with joins, the per-step loops only read what
-- those produced, and cycles are found by Kahn's topological peel.
CREATE FUNCTION catbird._cb_normalize_flow_steps(flow_name text, steps jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_step jsonb;
    v_pos int := 0;
    v_name text;
    v_key text;
    v_first_duplicate bigint;
    v_step_info record;
    v_type text;
    v_ignore text[];
    v_normalized jsonb[] := '{}'::jsonb[];
    v_count int;
    -- Kahn's peel over step positions: a step is peeled once every step it
    -- depends on is; steps never peeled depend on a cycle.
    v_remaining int[];        -- per step: its dependencies not peeled yet
    v_dependents int[];       -- every edge's dependent, grouped by the step depended on
    v_first_dependent int[];  -- per step (and one past the last): where its dependents start
    v_peeled int[];           -- peeled steps, in peel order (the work queue)
    v_peeled_count int;
    v_next int := 1;
    v_current int;
    v_dependent int;
    -- the cycle's path, when there is one
    v_dependencies int[];
    v_first_dependency int[];
    v_path_index int[];
    v_path int[] := '{}'::int[];
    v_cycle text;
BEGIN
    IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
        RAISE EXCEPTION 'invalid steps for flow "%": expected a JSON array of step objects', flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_count := jsonb_array_length(steps);
    IF v_count = 0 THEN
        RAISE EXCEPTION 'invalid flow "%": it has no steps; a flow needs at least one', flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Names first, so dependencies can refer to later steps. The first step
    -- repeating an earlier name is found once, for the whole array.
    SELECT min(x.o) INTO v_first_duplicate
    FROM (SELECT e.o, row_number() OVER (PARTITION BY e.s ->> 'name' ORDER BY e.o) AS seen
          FROM jsonb_array_elements(steps) WITH ORDINALITY AS e(s, o)
          WHERE jsonb_typeof(e.s) = 'object' AND e.s ->> 'name' IS NOT NULL) x
    WHERE x.seen > 1;
    FOR v_step IN SELECT s FROM jsonb_array_elements(steps) s LOOP
        v_pos := v_pos + 1;
        IF jsonb_typeof(v_step) <> 'object' THEN
            RAISE EXCEPTION 'invalid step in flow "%": % is not a JSON object', flow_name, catbird._cb_quote_arg(v_step::text)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_name := v_step ->> 'name';
        PERFORM catbird._cb_check_name('step', v_name);
        -- A misspelt key ("conditon", "dependson") would silently drop what it
        -- meant to say. max_retries, backoff_min, backoff_max: the stored
        -- retry policy (SPEC 7.1).
        SELECT k INTO v_key FROM jsonb_object_keys(v_step) k
        WHERE k NOT IN ('name', 'description', 'step_type', 'signal', 'condition', 'depends_on',
                        'map_source_step_name', 'reduce_source_step_name', 'ignore_output',
                        'max_retries', 'backoff_min', 'backoff_max')
        ORDER BY k LIMIT 1;
        IF v_key IS NOT NULL THEN
            RAISE EXCEPTION 'invalid step "%" in flow "%": unknown key %', v_name, flow_name, catbird._cb_quote_arg(v_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A step object has the keys name, description, step_type, signal, condition, depends_on, map_source_step_name, reduce_source_step_name, ignore_output, max_retries, backoff_min, backoff_max.';
        END IF;
        IF v_name IN ('input', 'signal') THEN
            RAISE EXCEPTION 'invalid step name "%" in flow "%": "input" and "signal" are reserved', v_name, flow_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_pos = v_first_duplicate THEN
            RAISE EXCEPTION 'invalid flow "%": step "%" is defined twice', flow_name, v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;

    -- Names are unique from here. One pass over every step with what needs
    -- the other steps already joined in: its dependencies (NULL for one that
    -- is neither {"name": ...} nor a string), whether one repeats, the
    -- unknown ones, the step type of its reduce source and the ignore_output
    -- entries that are not dependencies.
    FOR v_step_info IN
        WITH step AS (
            SELECT x.o::int AS pos, x.s, x.s ->> 'name' AS name
            FROM jsonb_array_elements(steps) WITH ORDINALITY AS x(s, o)
        ), dependency AS (
            SELECT st.pos, d.ord,
                   CASE jsonb_typeof(d.dep) WHEN 'object' THEN d.dep ->> 'name'
                                            WHEN 'string' THEN d.dep #>> '{}' END AS name
            FROM step st,
                 jsonb_array_elements(CASE jsonb_typeof(st.s -> 'depends_on') WHEN 'array' THEN st.s -> 'depends_on'
                                                                               ELSE '[]' END)
                     WITH ORDINALITY AS d(dep, ord)
        ), dependencies AS (
            SELECT d.pos,
                   array_agg(d.name ORDER BY d.ord) AS names,
                   jsonb_agg(jsonb_build_object('name', d.name) ORDER BY d.ord) AS depends_on,
                   count(d.name) > count(DISTINCT d.name) AS repeated,
                   string_agg(format('"%s"', d.name), ', ' ORDER BY d.ord)
                       FILTER (WHERE known.pos IS NULL AND d.name IS NOT NULL) AS unknown
            FROM dependency d
            LEFT JOIN step known ON known.name = d.name
            GROUP BY d.pos
        ), ignored AS (
            SELECT st.pos, string_agg(format('"%s"', i.entry #>> '{}'), ', ' ORDER BY i.ord) AS not_dependencies
            FROM step st
            CROSS JOIN LATERAL jsonb_array_elements(
                CASE jsonb_typeof(st.s -> 'ignore_output') WHEN 'array' THEN st.s -> 'ignore_output' ELSE '[]' END)
                WITH ORDINALITY AS i(entry, ord)
            LEFT JOIN dependency d ON d.pos = st.pos AND d.name = i.entry #>> '{}'
            WHERE jsonb_typeof(i.entry) = 'string' AND d.pos IS NULL
            GROUP BY st.pos
        )
        SELECT st.pos, st.s AS step, st.name, coalesce(ds.names, '{}') AS dependencies,
               coalesce(ds.depends_on, '[]') AS depends_on,
               coalesce(ds.repeated, false) AS repeated, ds.unknown,
               source.s ->> 'step_type' AS reduce_source_type, ig.not_dependencies
        FROM step st
        LEFT JOIN dependencies ds ON ds.pos = st.pos
        LEFT JOIN step source ON source.name = st.s ->> 'reduce_source_step_name'
        LEFT JOIN ignored ig ON ig.pos = st.pos
        ORDER BY st.pos
    LOOP
        v_step := v_step_info.step;
        v_name := v_step_info.name;
        IF v_step ? 'depends_on' AND jsonb_typeof(v_step -> 'depends_on') NOT IN ('array', 'null') THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": expected an array of {"name": ...}', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF array_position(v_step_info.dependencies, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": expected an array of {"name": ...}', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step_info.repeated THEN
            RAISE EXCEPTION 'invalid depends_on of step "%": a dependency is listed twice', v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step_info.unknown IS NOT NULL THEN
            RAISE EXCEPTION 'invalid flow "%": step "%" depends on unknown step(s) %', flow_name, v_name,
                catbird._cb_quote_arg(v_step_info.unknown)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('The steps are: %s.',
                                    (SELECT string_agg(s ->> 'name', ', ' ORDER BY o)
                                     FROM jsonb_array_elements(steps) WITH ORDINALITY AS x(s, o)));
        END IF;
        IF jsonb_typeof(v_step -> 'signal') NOT IN ('boolean', 'null') THEN
            RAISE EXCEPTION 'invalid signal of step "%": expected true or false, got %', v_name, catbird._cb_quote_arg((v_step -> 'signal')::text)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_type := coalesce(v_step ->> 'step_type', 'normal');
        IF v_type NOT IN ('normal', 'mapper', 'generator', 'reducer') THEN
            RAISE EXCEPTION 'invalid step_type % of step "%": expected normal, mapper, generator or reducer', catbird._cb_quote_arg(v_type), v_name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_step ->> 'map_source_step_name' IS NOT NULL AND (v_type <> 'mapper'
           OR NOT (v_step ->> 'map_source_step_name') = ANY (v_step_info.dependencies)) THEN
            RAISE EXCEPTION 'invalid map source of step "%": "%" must be a dependency of a mapper step (or omit it to map the flow input)',
                v_name, v_step ->> 'map_source_step_name'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_type = 'reducer' AND (v_step ->> 'reduce_source_step_name' IS NULL
           OR NOT (v_step ->> 'reduce_source_step_name') = ANY (v_step_info.dependencies)
           OR v_step_info.reduce_source_type IS NULL
           OR v_step_info.reduce_source_type NOT IN ('mapper', 'generator')) THEN
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
        IF v_step_info.not_dependencies IS NOT NULL THEN
            RAISE EXCEPTION 'invalid ignore_output of step "%": % is not a dependency', v_name, v_step_info.not_dependencies
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_ignore := ARRAY(SELECT jsonb_array_elements_text(coalesce(nullif(v_step -> 'ignore_output', 'null'), '[]')));
        IF v_step ->> 'condition' IS NOT NULL THEN
            PERFORM catbird._cb_parse_condition(
                v_step ->> 'condition',
                ARRAY['input'] || CASE WHEN (v_step ->> 'signal')::boolean THEN ARRAY['signal'] ELSE '{}' END
                    || v_step_info.dependencies);
        END IF;
        FOREACH v_key IN ARRAY ARRAY['max_retries', 'backoff_min', 'backoff_max'] LOOP
            IF jsonb_typeof(v_step -> v_key) NOT IN ('number', 'null')
               OR (jsonb_typeof(v_step -> v_key) = 'number'
                   AND ((v_step ->> v_key)::numeric <> trunc((v_step ->> v_key)::numeric)
                        OR abs((v_step ->> v_key)::numeric) > 2147483647)) THEN
                RAISE EXCEPTION 'invalid % of step "%": expected a whole number, got %', v_key, v_name, v_step -> v_key
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END LOOP;
        PERFORM catbird._cb_check_stored_policy((v_step ->> 'max_retries')::int, (v_step ->> 'backoff_min')::int,
                                                (v_step ->> 'backoff_max')::int);
        -- Assigning an element in place (not appending to a jsonb) keeps this
        -- linear; so does a right-hand side without a subquery (PL/pgSQL
        -- copies the whole array to assign the result of one).
        v_normalized[v_step_info.pos] := jsonb_build_object(
            'name', v_name,
            'description', v_step ->> 'description',
            'step_type', v_type,
            'signal', coalesce((v_step ->> 'signal')::boolean, false),
            'condition', v_step ->> 'condition',
            'map_source_step_name', v_step ->> 'map_source_step_name',
            'reduce_source_step_name', v_step ->> 'reduce_source_step_name',
            'depends_on', v_step_info.depends_on,
            'ignore_output', to_jsonb(v_ignore))
            -- the retry policy keys only when given, so definitions without one keep their shape
            || jsonb_strip_nulls(jsonb_build_object('max_retries', v_step -> 'max_retries',
                                                    'backoff_min', v_step -> 'backoff_min',
                                                    'backoff_max', v_step -> 'backoff_max'));
    END LOOP;

    -- Cycle check (Kahn): the edges by step position, once, in both
    -- directions (CSR: a step's dependents, or dependencies, are the slice
    -- from its first_ entry to the next step's); then peel the steps whose
    -- dependencies are all peeled, looking at each edge once.
    WITH position AS (
        SELECT x.pos::int AS pos, x.s ->> 'name' AS name, x.s -> 'depends_on' AS depends_on
        FROM unnest(v_normalized) WITH ORDINALITY AS x(s, pos)
    ), edge AS (
        SELECT st.pos AS step_pos, known.pos AS dependency_pos
        FROM position st
        CROSS JOIN LATERAL jsonb_array_elements(st.depends_on) d
        JOIN position known ON known.name = d ->> 'name'
    ), counts AS (
        SELECT p.pos, coalesce(i.n, 0)::int AS dependencies, coalesce(o.n, 0)::int AS dependents
        FROM generate_series(1, v_count) AS p(pos)
        LEFT JOIN (SELECT e.step_pos, count(*) AS n FROM edge e GROUP BY e.step_pos) i ON i.step_pos = p.pos
        LEFT JOIN (SELECT e.dependency_pos, count(*) AS n FROM edge e GROUP BY e.dependency_pos) o
               ON o.dependency_pos = p.pos
    )
    SELECT array_agg(c.dependencies ORDER BY c.pos),
           array_agg(c.first_dependent ORDER BY c.pos) || (sum(c.dependents)::int + 1),
           (SELECT coalesce(array_agg(e.step_pos ORDER BY e.dependency_pos, e.step_pos), '{}') FROM edge e),
           array_agg(c.first_dependency ORDER BY c.pos) || (sum(c.dependencies)::int + 1),
           (SELECT coalesce(array_agg(e.dependency_pos ORDER BY e.step_pos, e.dependency_pos), '{}') FROM edge e)
    INTO v_remaining, v_first_dependent, v_dependents, v_first_dependency, v_dependencies
    FROM (SELECT c.pos, c.dependencies, c.dependents,
                 (sum(c.dependents) OVER w - c.dependents + 1)::int AS first_dependent,
                 (sum(c.dependencies) OVER w - c.dependencies + 1)::int AS first_dependency
          FROM counts c
          WINDOW w AS (ORDER BY c.pos)) c;
    v_peeled := ARRAY(SELECT p FROM generate_subscripts(v_remaining, 1) p WHERE v_remaining[p] = 0 ORDER BY p);
    v_peeled_count := cardinality(v_peeled);
    WHILE v_next <= v_peeled_count LOOP
        v_current := v_peeled[v_next];
        v_next := v_next + 1;
        FOR k IN v_first_dependent[v_current] .. v_first_dependent[v_current + 1] - 1 LOOP
            v_dependent := v_dependents[k];
            v_remaining[v_dependent] := v_remaining[v_dependent] - 1;
            IF v_remaining[v_dependent] = 0 THEN
                v_peeled_count := v_peeled_count + 1;
                v_peeled[v_peeled_count] := v_dependent;
            END IF;
        END LOOP;
    END LOOP;
    IF v_peeled_count < v_count THEN
        -- Every step left has a dependency left: follow those from the first
        -- step left until a step repeats; from its first visit on, the path
        -- is a cycle (reported as step -> dependency -> ... -> step).
        v_path_index := array_fill(0, ARRAY[v_count]);
        SELECT min(p) INTO v_current FROM generate_subscripts(v_remaining, 1) p WHERE v_remaining[p] > 0;
        WHILE v_path_index[v_current] = 0 LOOP
            v_path[cardinality(v_path) + 1] := v_current;
            v_path_index[v_current] := cardinality(v_path);
            FOR k IN v_first_dependency[v_current] .. v_first_dependency[v_current + 1] - 1 LOOP
                IF v_remaining[v_dependencies[k]] > 0 THEN
                    v_current := v_dependencies[k];
                    EXIT;
                END IF;
            END LOOP;
        END LOOP;
        SELECT string_agg(v_normalized[c.pos] ->> 'name', ' -> ' ORDER BY c.ord) INTO v_cycle
        FROM unnest(v_path[v_path_index[v_current]:] || v_current) WITH ORDINALITY AS c(pos, ord);
        RAISE EXCEPTION 'invalid flow "%": its dependencies form a cycle (%)', flow_name, v_cycle
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN to_jsonb(v_normalized);
END
$$;

-- Creates a flow from its steps (see _cb_normalize_flow_steps) and
-- output_priority (default: the terminal steps in definition order).
-- Creating it again with the same definition is a no-op; a different one
-- replaces it while no run is active. Announces catbird.flow.created.
-- Returns nothing. 22023 for an invalid name, steps, output_priority or a
-- negative retention_period; 55006 when runs are active.
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
                      WHERE o NOT IN (SELECT s ->> 'name' FROM jsonb_array_elements(v_steps) s)) THEN
            RAISE EXCEPTION 'invalid output_priority %: it must name one or more steps of flow "%"',
                catbird._cb_quote_arg(output_priority::text), name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_output_priority := output_priority;
    ELSE
        -- Default: the terminal steps (no dependents), in definition order.
        -- NOT IN over one list of every dependency: a hashed lookup per step.
        v_output_priority := ARRAY(
            SELECT s ->> 'name' FROM jsonb_array_elements(v_steps) WITH ORDINALITY AS x(s, o)
            WHERE s ->> 'name' NOT IN (SELECT d ->> 'name'
                                       FROM jsonb_array_elements(v_steps) t, jsonb_array_elements(t -> 'depends_on') d)
            ORDER BY o);
    END IF;
    PERFORM catbird._cb_check_retention(retention_period);

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
        PERFORM catbird._cb_notify('catbird.flow.created', jsonb_build_object('flow', name)::text);
    END IF;

    INSERT INTO catbird.cb_flow_steps (flow_id, name, position, description, step_type, signal, condition,
                                       condition_expr, map_source, reduce_source, depends_on, ignore_output,
                                       max_retries, backoff_min, backoff_max)
    SELECT v_id, s ->> 'name', o, s ->> 'description', s ->> 'step_type', (s ->> 'signal')::boolean,
           s ->> 'condition',
           CASE WHEN s ->> 'condition' IS NOT NULL THEN
               catbird._cb_parse_condition(s ->> 'condition',
                   ARRAY['input', 'signal'] || ARRAY(SELECT d ->> 'name' FROM jsonb_array_elements(s -> 'depends_on') d))
           END,
           s ->> 'map_source_step_name', s ->> 'reduce_source_step_name',
           ARRAY(SELECT d ->> 'name' FROM jsonb_array_elements(s -> 'depends_on') d),
           ARRAY(SELECT jsonb_array_elements_text(s -> 'ignore_output')),
           (s ->> 'max_retries')::int, (s ->> 'backoff_min')::int, (s ->> 'backoff_max')::int
    FROM jsonb_array_elements(v_steps) WITH ORDINALITY AS x(s, o);
END
$$;

-- Deletes a flow with all its runs (step runs and map items too) and
-- bindings; waits for calls in flight on it. Returns false when it does not
-- exist; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_delete_flow(name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_definition('flow', cb_delete_flow.name) $$;

-- Every flow as FlowInfo (name, description, normalized steps as jsonb,
-- output_priority, retention_period, on_fail, created_at), by name. Raises
-- nothing.
CREATE FUNCTION catbird.cb_list_flows()
RETURNS TABLE (name text, description text, steps jsonb, output_priority text[], retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT f.name, f.description, f.steps, f.output_priority, f.retention_period, f.on_fail, f.created_at
    FROM catbird.cb_flows f ORDER BY f.name
$$;

-- One flow as FlowInfo; no row when it does not exist. Raises nothing.
CREATE FUNCTION catbird.cb_get_flow(name text)
RETURNS TABLE (name text, description text, steps jsonb, output_priority text[], retention_period interval,
               on_fail boolean, created_at timestamptz)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird.cb_list_flows() f WHERE f.name = $1 $$;
-- catbird 52_flow_dispatch: moving flow runs forward.
--
-- Owns: the internal transitions every flow verb shares: step outputs as
-- consumers see them, dependency resolution, _cb_advance_flow_run (skip, wait
-- for signal, fan out, queue; finish the run), failing and cancelling a run's
-- open work, failing lapsed work past its attempts (_cb_fail_lapsed_work),
-- _cb_lock_flow_run. Writes cb_flow_runs, cb_step_runs and
-- cb_map_tasks; callers hold the flow run's row lock.
-- Guarantees:
--   * Conditions are evaluated here, when a step becomes ready, never by a
--     worker: a skipped step needs no worker and resolves its dependents.
--   * A run completes with the output of the first completed step of its
--     output_priority, or fails with a clear error when none completed.
--   * Mapping over a value that is not an array fails that step and the run.

-- The output of a finished step as its consumers see it: mapper and generator
-- outputs are their item outputs in item order. Raises nothing.
CREATE FUNCTION catbird._cb_step_output(step_run_id bigint, step_type text, stored jsonb) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN step_type IN ('mapper', 'generator') THEN
                    (SELECT coalesce(jsonb_agg(m.output ORDER BY m.idx), '[]')
                     FROM catbird.cb_map_tasks m WHERE m.step_run_id = $1)
                ELSE stored END
$$;

-- Outputs of a step's completed dependencies in each of the flow runs, keyed
-- by step name, without ignore_output ones and without a reducer's source
-- (read page by page): one row per flow run ({} for none). One call for a
-- whole claim batch: a function call per row costs more than the query.
-- Raises nothing.
CREATE FUNCTION catbird._cb_dependency_outputs_of(flow_run_ids bigint[], step catbird.cb_flow_steps)
RETURNS TABLE (flow_run_id bigint, outputs jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT r.id,
           coalesce(jsonb_object_agg(d.step_name,
                                     -- only item steps' outputs need assembling (_cb_step_output)
                                     CASE WHEN d.step_type IN ('mapper', 'generator')
                                          THEN catbird._cb_step_output(d.id, d.step_type, d.output)
                                          ELSE d.output END)
                        FILTER (WHERE d.id IS NOT NULL), '{}')
    FROM unnest(flow_run_ids) AS r(id)
    LEFT JOIN catbird.cb_step_runs d
      ON d.flow_run_id = r.id
     AND d.step_name = ANY (step.depends_on)
     AND NOT d.step_name = ANY (step.ignore_output)
     AND d.step_name IS DISTINCT FROM step.reduce_source
     AND d.status = 'completed'
    GROUP BY r.id
$$;

-- The dependency outputs (see _cb_dependency_outputs_of) of one flow run.
-- Returns a jsonb object ({} for none); raises nothing.
CREATE FUNCTION catbird._cb_dependency_outputs(flow_run_id bigint, step catbird.cb_flow_steps) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT o.outputs FROM catbird._cb_dependency_outputs_of(ARRAY[flow_run_id], step) o
$$;

-- Marks a step resolved (completed or skipped): its dependents need one
-- dependency less. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_resolve_dependents(flow_run_id bigint, flow_id int, step_name text) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    UPDATE catbird.cb_step_runs sr
    SET deps_remaining = sr.deps_remaining - 1
    FROM catbird.cb_flow_steps fs
    WHERE sr.flow_run_id = $1 AND fs.flow_id = $2 AND fs.name = sr.step_name
      AND $3 = ANY (fs.depends_on)
$$;

-- Ends a run's work: waiting and queued step runs and queued items are
-- canceled, started ones too with include_started (workers' later reports
-- are refused because their step is no longer started). Raises nothing.
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

-- Fails a flow run because of step_name (NULL: no output candidate): records
-- the error and the failed step's input, signal input and attempts, queues
-- on-fail handling (for every failed run, whatever the flow's flags), cancels
-- all open work and announces catbird.flow.failed. Returns nothing; raises
-- nothing.
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
        on_fail_status = 'queued', on_fail_visible_at = v_now
    WHERE r.id = flow_run_id;
    PERFORM catbird._cb_cancel_open_work(flow_run_id, true);
    PERFORM catbird._cb_notify_flow_run('catbird.flow.failed', flow_run_id);
END
$$;

-- Moves a run forward after any change: steps whose dependencies are resolved
-- are skipped (condition false), parked for their signal, fanned out (mapper)
-- or queued; repeats while skips and empty maps resolve further steps; then
-- completes (or fails) the run when every step is completed or skipped.
-- Returns nothing; a mapper over a non-array fails the run, it does not raise.
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
                    PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', (v_step.fs).name)::text);
                END IF;
                CONTINUE;
            END IF;
            UPDATE catbird.cb_step_runs sr SET status = 'queued', visible_at = greatest(v_now, v_run.visible_at)
            WHERE sr.id = v_step.id;
            PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', (v_step.fs).name)::text);
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
    PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, ARRAY[flow_run_id]);
END
$$;

-- A canceling run becomes canceled (announcing catbird.flow.canceled) once no
-- step or item is started any more. Returns nothing; raises nothing.
CREATE FUNCTION catbird._cb_finish_canceling(flow_run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_flow_runs r SET status = 'canceled', canceled_at = catbird.cb_now()
    WHERE r.id = flow_run_id AND r.status = 'canceling'
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.status = 'started')
      AND NOT EXISTS (SELECT 1 FROM catbird.cb_map_tasks m WHERE m.flow_run_id = r.id AND m.status = 'started');
    IF FOUND THEN
        PERFORM catbird._cb_notify_flow_run('catbird.flow.canceled', flow_run_id);
    END IF;
END
$$;

-- A worker's report (complete or fail) for a started step of a canceling run:
-- the step is canceled, keeping error_message when one is given, and the run
-- becomes canceled if that was its last started work. Returns nothing;
-- raises nothing.
CREATE FUNCTION catbird._cb_cancel_reported_step(flow_run_id bigint, step_run_id bigint, error_message text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_step_runs sr
    SET status = 'canceled', canceled_at = catbird.cb_now(),
        error_message = coalesce(_cb_cancel_reported_step.error_message, sr.error_message)
    WHERE sr.id = step_run_id;
    PERFORM catbird._cb_finish_canceling(flow_run_id);
END
$$;

-- Locks a run of the flow for a transition (FOR UPDATE) and returns it; all
-- fields NULL when the flow has no such run. Raises nothing.
CREATE FUNCTION catbird._cb_lock_flow_run(flow catbird.cb_flows, flow_run_id bigint) RETURNS catbird.cb_flow_runs
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM catbird.cb_flow_runs r WHERE r.id = flow_run_id AND r.flow_id = flow.id FOR UPDATE
$$;

-- Fails the lapsed work of one step of a flow that used its attempts (see
-- _cb_lease_cap with the step's max_retries): step runs (kind 'step') or map
-- items (kind 'item') still started, lease lapsed, in started flow runs. Each
-- fails with a "lease expired" error, and its flow run with it (on-fail
-- queued). Called by claims before they claim, holding no row lock, and by
-- cb_gc; a flow run locked by another transaction is skipped (the next claim
-- or cb_gc gets it). At most lim. Returns how many it failed; raises nothing.
CREATE FUNCTION catbird._cb_fail_lapsed_work(step catbird.cb_flow_steps, kind text, now timestamptz, lim int = 100)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_cap int := catbird._cb_lease_cap(step.max_retries);
    v_candidate record;
    v_run catbird.cb_flow_runs;
    v_step_run catbird.cb_step_runs;
    v_item catbird.cb_map_tasks;
    v_error text;
    v_count int := 0;
BEGIN
    FOR v_candidate IN
        SELECT x.id, x.flow_run_id FROM catbird.cb_step_runs x
        WHERE kind = 'step' AND x.flow_id = step.flow_id AND x.step_name = step.name
          AND x.status = 'started' AND x.visible_at <= now AND x.attempts >= v_cap
        UNION ALL
        SELECT x.id, x.flow_run_id FROM catbird.cb_map_tasks x
        WHERE kind = 'item' AND x.flow_id = step.flow_id AND x.step_name = step.name
          AND x.status = 'started' AND x.visible_at <= now AND x.attempts >= v_cap
        ORDER BY 2, 1
        LIMIT lim
    LOOP
        -- Lock order is flow run, then its parts; never wait for a run here.
        SELECT * INTO v_run FROM catbird.cb_flow_runs r
        WHERE r.id = v_candidate.flow_run_id AND r.status = 'started'
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN v_run.id IS NULL;
        IF kind = 'step' THEN
            UPDATE catbird.cb_step_runs sr
            SET status = 'failed', failed_at = now, error_message = catbird._cb_lease_expired_error(sr.attempts),
                error_detail = NULL
            WHERE sr.id = v_candidate.id AND sr.status = 'started' AND sr.visible_at <= now AND sr.attempts >= v_cap
            RETURNING sr.* INTO v_step_run;
            CONTINUE WHEN v_step_run.id IS NULL;
            PERFORM catbird._cb_fail_flow_run(v_run.id, step.name, v_step_run.error_message, v_run.input,
                                              v_step_run.signal_input, v_step_run.attempts);
        ELSE
            UPDATE catbird.cb_map_tasks m
            SET status = 'failed', failed_at = now, error_message = catbird._cb_lease_expired_error(m.attempts),
                error_detail = NULL
            WHERE m.id = v_candidate.id AND m.status = 'started' AND m.visible_at <= now AND m.attempts >= v_cap
            RETURNING m.* INTO v_item;
            CONTINUE WHEN v_item.id IS NULL;
            v_error := format('item %s failed: %s', v_item.idx, v_item.error_message);
            UPDATE catbird.cb_step_runs sr SET status = 'failed', failed_at = now, error_message = v_error
            WHERE sr.id = v_item.step_run_id
            RETURNING sr.* INTO v_step_run;
            PERFORM catbird._cb_fail_flow_run(v_run.id, step.name, v_error, v_item.item,
                                              v_step_run.signal_input, v_item.attempts);
        END IF;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
-- catbird 53_flow_runs: starting, signalling, cancelling and ending flow runs.
--
-- Owns: _cb_insert_flow_runs (the one way runs start: cb_run_flow and
-- cb_publish), cb_run_flow, cb_bind_flow, cb_unbind_flow, cb_signal_flow,
-- cb_cancel_flow, cb_complete_flow_early, cb_retry_flow_run, _cb_expire_flow_run,
-- cb_purge_flow_runs, cb_clear_flow_runs. Writes cb_flow_runs and cb_step_runs.
-- Guarantees:
--   * A concurrency key is held by at most one started or canceling run of a
--     flow; a run with a held key returns the holder's id and writes nothing.
--     A holder past its expires_at before any step started is expired first
--     (as cb_gc would), so an expired run never holds its key.
--   * Early completion is fenced: only for a step that is started (under the
--     given attempt); a stale or missing one gets false and writes nothing.
--   * cb_retry_flow_run re-queues a failed run's failed and canceled steps,
--     keeping completed steps and their outputs.
--   * A signal is delivered at most once per step run, and only while the
--     run is started.
--   * Cancel is two-phase and idempotent; early completion cancels the
--     run's other work and makes later reports from workers stale.

-- Expires a started run (locked by the caller) that is past its expires_at
-- before any step started (cb_gc, and a new run with its concurrency key): its
-- work is canceled and catbird.flow.expired announced. Returns nothing;
-- raises nothing.
CREATE FUNCTION catbird._cb_expire_flow_run(run_id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    UPDATE catbird.cb_flow_runs r SET status = 'expired', canceled_at = catbird.cb_now() WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, true);
    PERFORM catbird._cb_notify_flow_run('catbird.flow.expired', run_id);
END
$$;

-- The one implementation of starting runs (cb_run_flow, cb_publish): one run
-- per input, deduplicated by concurrency key among active runs, each advanced
-- at once (root steps queued); the new runs are announced as
-- catbird.flow.started, one event per call. Returns the run id each input
-- resolved to. Callers hold the flow's shared lock. 40001 when a key's holder
-- finished while the call deduplicated against it (retry).
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
    -- Bounded inputs (10_names): keys fit the index, times are finite.
    IF concurrency_keys IS NOT NULL OR _cb_insert_flow_runs.visible_at IS NOT NULL OR _cb_insert_flow_runs.expires_at IS NOT NULL THEN
        PERFORM catbird._cb_check_bounds(concurrency_keys, _cb_insert_flow_runs.visible_at, _cb_insert_flow_runs.expires_at);
    END IF;
    IF cardinality(array_remove(concurrency_keys, NULL)) > 0 THEN
        -- Expired runs hold nothing: expire the holders of these keys first.
        FOR v_run IN
            SELECT r.id FROM catbird.cb_flow_runs r
            WHERE r.flow_id = flow.id AND r.concurrency_key = ANY (concurrency_keys)
              AND r.status = 'started' AND r.expires_at <= v_now
              AND NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr WHERE sr.flow_run_id = r.id AND sr.attempts > 0)
            ORDER BY r.id
            FOR UPDATE
        LOOP
            PERFORM catbird._cb_expire_flow_run(v_run);
        END LOOP;
    END IF;
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
    -- started before the advance: a run that ends at once announces its end after.
    PERFORM catbird._cb_notify_runs('catbird.flow.started', 'flow', flow.name, v_new);
    FOREACH v_run IN ARRAY coalesce(v_new, '{}') LOOP
        PERFORM catbird._cb_advance_flow_run(v_run);
    END LOOP;
    RETURN v_ids;
END
$$;

-- Starts one run per input, in one statement; an input whose concurrency key
-- is held by a started or canceling run resolves to that run. Returns the run
-- id of each input, in input order. 42704 for an unknown flow; 22023 for
-- invalid inputs, keys or headers; 40001 as for _cb_insert_flow_runs.
CREATE FUNCTION catbird.cb_run_flow(
    name text, inputs jsonb[], concurrency_keys text[] = NULL, headers jsonb[] = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint[]
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_run('flow', cb_run_flow.name, inputs, concurrency_keys, headers, visible_at, priority, expires_at)
$$;

-- Starts a run (see the batch form). Returns its id, or the id of the run
-- holding concurrency_key. 42704 for an unknown flow; 22023 for a SQL NULL
-- input or non-object headers; 40001 as for the batch form.
CREATE FUNCTION catbird.cb_run_flow(
    name text, input jsonb, concurrency_key text = NULL, headers jsonb = NULL,
    visible_at timestamptz = NULL, priority int = 0, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_check_body('input', 'run input', input, headers);
    RETURN (catbird.cb_run_flow(name, ARRAY[input], ARRAY[concurrency_key], ARRAY[headers],
                                visible_at, priority, expires_at))[1];
END
$$;

-- Binds the flow to a topic pattern: every publish to a matching topic starts
-- a run. Binding twice is a no-op. Returns nothing; 42704 for an unknown flow,
-- 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_bind_flow(name text, pattern text) RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_bind('flow', cb_bind_flow.name, pattern) $$;

-- Removes a binding of the flow. Returns false when there was none; 42704 for
-- an unknown flow, 22023 for an invalid name or pattern.
CREATE FUNCTION catbird.cb_unbind_flow(name text, pattern text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_unbind('flow', cb_unbind_flow.name, pattern) $$;

-- Delivers a signal (its input) to a step declared with signal: true, which
-- may then run. Returns true when delivered, false when the step already has
-- its signal or is past waiting, or the run is not started. 42704 for an
-- unknown flow, step or run; 22023 for an invalid name or a step without
-- signal.
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

-- Cancels a run in two phases: waiting and queued work is canceled at once
-- and the run is canceling (catbird.flow.canceling) until its started work
-- reports back or its leases lapse, then canceled. Idempotent. Returns true
-- when the run is canceling or canceled, false when it does not exist or
-- already ended otherwise. 42704 for an unknown flow; 22023 for an invalid
-- name.
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
    PERFORM catbird._cb_notify_runs('catbird.flow.canceling', 'flow', v_flow.name, ARRAY[run_id]);
    PERFORM catbird._cb_finish_canceling(run_id);
    RETURN true;
END
$$;

-- Completes a started run with output on behalf of step_name (a step
-- handler ending the flow): the step must be started (under attempt, when
-- given) — or, for a mapper or generator, have items in flight
-- (waiting_for_map_tasks, attempt not given) — and completes with it; other
-- work is canceled, catbird.flow.completed is announced. Returns true when the
-- run completed; false, writing nothing, when the run does not exist or is
-- not started, or the step is not started (or under another attempt). 42704
-- for an unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_complete_flow_early(flow_name text, run_id bigint, step_name text, output jsonb,
                                               reason text = NULL, attempt int = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_run catbird.cb_flow_runs;
    v_step_run catbird.cb_step_runs;
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_fail_args(true, attempt);
    v_run := catbird._cb_lock_flow_run(v_flow, run_id);
    IF v_run.id IS NULL OR v_run.status <> 'started' THEN
        RETURN false;
    END IF;
    SELECT * INTO v_step_run FROM catbird.cb_step_runs sr
    WHERE sr.flow_run_id = run_id AND sr.step_name = v_step.name;
    IF NOT (v_step_run.status = 'started' AND (attempt IS NULL OR v_step_run.attempts = attempt)
            OR (v_step_run.status = 'waiting_for_map_tasks' AND attempt IS NULL)) THEN
        RETURN false;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null')
    WHERE sr.id = v_step_run.id AND sr.status = 'started';
    UPDATE catbird.cb_flow_runs r
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_flow_early.output, 'null'),
        cancel_reason = coalesce(reason, format('completed early by step "%s"', step_name))
    WHERE r.id = run_id;
    PERFORM catbird._cb_cancel_open_work(run_id, true);
    PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, ARRAY[run_id]);
    RETURN true;
END
$$;

-- Retries a failed run: its failed and canceled step runs (the failure and
-- the work canceled because of it) go back to waiting with attempts 0, their
-- errors, outputs and items cleared, and dependencies counted again; completed
-- and skipped steps keep their state and outputs; the run is started again
-- (errors, failed-step context and on-fail state cleared; an expires_at
-- already passed dropped) and advanced, so ready steps are queued. Returns
-- true when the run was retried; false when it does not exist, is not
-- failed, has no failed or canceled step, or its concurrency key is held by
-- another active run. 42704 for an unknown flow; 22023 for an invalid name.
CREATE FUNCTION catbird.cb_retry_flow_run(name text, run_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(name);
    v_run catbird.cb_flow_runs := catbird._cb_lock_flow_run(v_flow, run_id);
    v_now timestamptz := catbird.cb_now();
    v_reset bigint[];
BEGIN
    IF v_run.id IS NULL OR v_run.status <> 'failed' THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM catbird.cb_step_runs sr
                   WHERE sr.flow_run_id = run_id AND sr.status IN ('failed', 'canceled')) THEN
        RETURN false;
    END IF;
    IF catbird._cb_key_held('flow', v_flow.id, v_run.concurrency_key) THEN
        RETURN false;
    END IF;
    BEGIN
        UPDATE catbird.cb_flow_runs r
        SET status = 'started', failed_at = NULL, error_message = NULL, output = NULL, failed_step_name = NULL,
            failed_step_input = NULL, failed_step_signal_input = NULL, failed_step_attempts = NULL,
            on_fail_status = NULL, on_fail_attempts = 0, on_fail_visible_at = NULL, on_fail_error_message = NULL,
            expires_at = CASE WHEN r.expires_at <= v_now THEN NULL ELSE r.expires_at END, visible_at = v_now
        WHERE r.id = run_id;
    EXCEPTION WHEN unique_violation THEN
        RETURN false;  -- a run holding the key committed meanwhile
    END;
    SELECT array_agg(sr.id) INTO v_reset FROM catbird.cb_step_runs sr
    WHERE sr.flow_run_id = run_id AND sr.status IN ('failed', 'canceled');
    DELETE FROM catbird.cb_map_tasks m WHERE m.step_run_id = ANY (v_reset);
    UPDATE catbird.cb_step_runs sr
    SET status = 'waiting_for_dependencies', attempts = 0, visible_at = v_now, started_at = NULL,
        completed_at = NULL, failed_at = NULL, canceled_at = NULL, error_message = NULL, error_detail = NULL,
        output = NULL, map_total = NULL, map_done = 0, generator_done = false, spawn_attempt = NULL,
        spawn_cursor = 0,
        deps_remaining = (SELECT count(*) FROM catbird.cb_flow_steps fs
                          JOIN catbird.cb_step_runs d ON d.flow_run_id = sr.flow_run_id AND d.step_name = ANY (fs.depends_on)
                          WHERE fs.flow_id = sr.flow_id AND fs.name = sr.step_name
                            AND d.status NOT IN ('completed', 'skipped'))
    WHERE sr.id = ANY (v_reset);
    PERFORM catbird._cb_advance_flow_run(run_id);
    PERFORM catbird._cb_notify_runs('catbird.flow.retried', 'flow', v_flow.name, ARRAY[run_id]);
    RETURN true;
END
$$;

-- Deletes the flow's finished runs (terminal, on-fail handling over) that
-- finished at least older_than ago, with their step runs and map items.
-- Returns how many runs it deleted. 42704 for an unknown flow; 22023 for an
-- invalid name or a NULL or negative older_than.
CREATE FUNCTION catbird.cb_purge_flow_runs(name text, older_than interval) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_purge_runs('flow', cb_purge_flow_runs.name, older_than) $$;

-- Deletes every run of the flow whatever its status, with its step runs and
-- map items; in-flight work is lost (workers' later reports find nothing and
-- are refused). Returns how many runs it deleted. 42704 for an unknown flow;
-- 22023 for an invalid name.
CREATE FUNCTION catbird.cb_clear_flow_runs(name text) RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_clear_runs('flow', catbird._cb_definition_id('flow', cb_clear_flow_runs.name)) $$;
-- catbird 54_flow_steps: the worker protocol for flow steps.
--
-- Owns: cb_claim_steps, cb_hide_steps, _cb_lock_step_run, _cb_lock_reported_step,
-- cb_complete_step, cb_complete_steps, cb_fail_step. Writes cb_step_runs (and,
-- through dispatch, the run).
-- Guarantees:
--   * Claims use FOR UPDATE SKIP LOCKED on cb_step_runs_claim_idx and never
--     lock the flow run; a step whose lease (visible_at) lapsed is claimable
--     again, and each claim increments attempts, the fencing token.
--   * Complete and fail lock the flow run first, then act only on a step run
--     still started (under the given attempt, when one is given): a stale
--     worker gets false / NULL and changes nothing. The batch completion
--     (cb_complete_steps) locks all its flow runs first, in id order, and
--     does in a few set-based statements what cb_complete_step does per step.
--   * The retry decision is made here: a failure re-queues the step with a
--     full-jitter delay while attempts <= max_retries (the policy given, else
--     the step's stored one) and it is retryable, else fails the run.
--   * A claim first fails the step's lapsed runs that used their attempts
--     (_cb_fail_lapsed_work): a crash loop ends with a "lease expired" error.
--   * A report for a step of a canceling run cancels that step (and finishes
--     the cancel when it was the last started work).
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).
--   * cb_claim_steps, cb_complete_steps and cb_hide_steps inline what they
--     would call on their normal path, as the task worker functions do (see
--     45_task_worker): the engine clock, the flow and step lookup with the
--     flow's shared lock (_cb_flow / _cb_flow_step only to raise), the
--     argument checks; cb_complete_steps reads a finished run's output
--     directly unless it is an item step's (_cb_step_output, per row before).

-- Claims up to quantity runs of one step of a flow: queued, or started with
-- the lease (visible_at) lapsed, in started flow runs (not expired before
-- their first attempt), highest priority first, then oldest. Each claim
-- increments attempts (the fencing token) and holds the step for hide_for ms.
-- Returns the claims (cb_step_claim: flow input, dependency outputs, signal
-- input) by priority, then id. Lapsed step runs that used their attempts
-- are failed first (see _cb_fail_lapsed_work). 42704 for an unknown flow or
-- step; 22023 for an invalid name, quantity < 1 or hide_for < 1.
CREATE FUNCTION catbird.cb_claim_steps(flow_name text, step_name text, quantity int, hide_for int)
RETURNS SETOF catbird.cb_step_claim
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    IF quantity IS NULL OR quantity < 1 OR hide_for IS NULL OR hide_for < 1 THEN
        PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
        PERFORM catbird._cb_check_at_least('hide_for', hide_for, 1, ' ms');
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    PERFORM catbird._cb_fail_lapsed_work(v_step, 'step', v_now);
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
        -- = ANY keeps the joins on the primary keys (see cb_claim_tasks)
        WHERE sr.id = c.id AND sr.id = ANY (ARRAY(SELECT x.id FROM candidates x))
        RETURNING sr.id, sr.flow_run_id, sr.attempts, sr.signal_input, sr.priority
    )
    SELECT c.id, c.flow_run_id, c.attempts, r.input, o.outputs, c.signal_input
    FROM claimed c
    JOIN catbird.cb_flow_runs r ON r.id = c.flow_run_id AND r.id = ANY (ARRAY(SELECT x.flow_run_id FROM claimed x))
    -- dependency outputs of the whole batch in one call
    JOIN catbird._cb_dependency_outputs_of((SELECT array_agg(x.flow_run_id) FROM claimed x), v_step) o
      ON o.flow_run_id = c.flow_run_id
    ORDER BY c.priority DESC, c.id;
END
$$;

-- Lease renewal: pushes visible_at of started step runs out to hide_for ms
-- from now; with attempts (one per id) only claims still held under those
-- attempts. Returns nothing. 42704 for an unknown flow or step; 22023 for an
-- invalid name, hide_for < 1 or attempts of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_steps(flow_name text, step_name text, ids bigint[], hide_for int,
                                      attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    IF hide_for IS NULL OR hide_for < 1
       OR (attempts IS NOT NULL AND cardinality(attempts) IS DISTINCT FROM cardinality(ids)) THEN
        PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    UPDATE catbird.cb_step_runs sr
    SET visible_at = v_now + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_steps.attempts) AS u(id, attempt)
    WHERE sr.flow_id = v_flow.id AND sr.step_name = cb_hide_steps.step_name
      AND sr.id = u.id AND sr.id = ANY (ids) AND sr.status = 'started'
      AND (u.attempt IS NULL OR sr.attempts = u.attempt);
END
$$;

-- Locks the run of a step run and returns both; the step run's fields are read
-- after the lock, so they are current. Both NULL when there is no such step
-- run of that flow and step. Raises nothing.
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

-- Locks the run of a step run a worker reports on (cb_complete_step,
-- cb_fail_step, cb_complete_generator_step, cb_fail_generator_step) and
-- returns what the report needs, when it may act: the step run is started
-- (under attempt, when given) and its run is not canceling. For a canceling
-- run the step is canceled instead (with error_message, when given) and the
-- cancel finished when it was the last started work. Otherwise (a stale
-- report, or a canceling run) every field is NULL. Raises nothing.
CREATE FUNCTION catbird._cb_lock_reported_step(flow catbird.cb_flows, step_name text, step_run_id bigint,
                                               attempt int, error_message text = NULL,
                                               OUT run_id bigint, OUT run_input jsonb,
                                               OUT signal_input jsonb, OUT attempts int)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked record := catbird._cb_lock_step_run(flow, step_name, step_run_id);
BEGIN
    IF (v_locked.step_run).status IS DISTINCT FROM 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN;  -- stale
    END IF;
    IF (v_locked.run).status = 'canceling' THEN
        PERFORM catbird._cb_cancel_reported_step((v_locked.run).id, step_run_id, error_message);
        RETURN;
    END IF;
    run_id := (v_locked.run).id;
    run_input := (v_locked.run).input;
    signal_input := (v_locked.step_run).signal_input;
    attempts := (v_locked.step_run).attempts;
END
$$;

-- Completes a started step run (under attempt, when given) with output and
-- advances the flow run. Returns true when recorded; false for a stale call,
-- or when the run is canceling (the step is then canceled). 42704 for an
-- unknown flow or step; 22023 for an invalid name or a generator step (use
-- cb_complete_generator_step).
CREATE FUNCTION catbird.cb_complete_step(flow_name text, step_name text, id bigint, output jsonb, attempt int = NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_report record;
    v_now timestamptz := catbird.cb_now();
BEGIN
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt);
    IF v_report.run_id IS NULL THEN
        RETURN false;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF v_step.step_type = 'generator' THEN
        RAISE EXCEPTION 'step "%" is a generator: finish it with cb_complete_generator_step', step_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'completed', completed_at = v_now, output = coalesce(cb_complete_step.output, 'null'),
        error_message = NULL, error_detail = NULL
    WHERE sr.id = cb_complete_step.id;
    PERFORM catbird._cb_resolve_dependents(v_report.run_id, v_flow.id, step_name);
    PERFORM catbird._cb_advance_flow_run(v_report.run_id);
    RETURN true;
END
$$;

-- Batch completion of one step's runs: completes the step runs still started
-- under the given attempts (NULL attempts: any) with their outputs and
-- advances their flow runs, as cb_complete_step does for each, with the flow
-- and step resolved once, every flow run locked up front in id order, and the
-- step runs and their dependents written in one statement each; when every
-- dependent is a plain step (no signal, condition or mapper) the runs are
-- advanced set-based too (announcing catbird.step.queued and
-- catbird.flow.completed as _cb_advance_flow_run does). Step runs of
-- canceling flow runs are canceled instead. Returns the ids recorded
-- (sorted); stale ones are left out. 42704 for an unknown flow or step; 22023
-- for an invalid name, arrays of different lengths or a generator step.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_steps(flow_name text, step_name text, ids bigint[], outputs jsonb[],
                                          attempts int[] = NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows;
    v_step catbird.cb_flow_steps;
    v_now timestamptz;
    v_dependents text[];
    v_done bigint[];
    v_runs bigint[];
    v_canceled record;
    v_queued record;
    v_run_id bigint;
    v_finished bigint[];
    v_outputs jsonb[];
    v_no_output bigint[];
BEGIN
    -- Nested calls inlined (see the header): _cb_flow, _cb_flow_step.
    PERFORM pg_advisory_xact_lock_shared(1667326066, hashtext('flow/' || flow_name));
    SELECT * INTO v_flow FROM catbird.cb_flows f WHERE f.name = flow_name;
    IF v_flow.id IS NULL THEN
        v_flow := catbird._cb_flow(flow_name);  -- raises the clear error
    END IF;
    SELECT * INTO v_step FROM catbird.cb_flow_steps s WHERE s.flow_id = v_flow.id AND s.name = step_name;
    IF v_step.flow_id IS NULL THEN
        v_step := catbird._cb_flow_step(v_flow, step_name);  -- raises the clear error
    END IF;
    v_now := CASE WHEN nullif(current_setting('catbird.fake_now', true), '') IS NULL THEN clock_timestamp()
                  ELSE catbird.cb_now() END;  -- cb_now()
    IF cardinality(ids) IS DISTINCT FROM cardinality(outputs)
       OR (attempts IS NOT NULL AND cardinality(attempts) <> cardinality(ids)) THEN
        RAISE EXCEPTION 'invalid arguments: ids, outputs (and attempts, when given) must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_step.step_type = 'generator' THEN
        RAISE EXCEPTION 'step "%" is a generator: finish it with cb_complete_generator_step', step_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Lock order is flow run, then its parts, runs in id order: concurrent
    -- batches and single transitions cannot deadlock.
    -- With enable_nestloop off every join below is a hash join: each names
    -- its rows with = ANY (array) so that its tables are read through their
    -- indexes, never scanned whole (a scan of every flow run per batch made a
    -- step cost ~1 ms of server CPU at batch 10 with 20,000 runs queued).
    v_runs := ARRAY(SELECT DISTINCT sr.flow_run_id FROM catbird.cb_step_runs sr
                    WHERE sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name);
    PERFORM FROM catbird.cb_flow_runs r
    WHERE r.id = ANY (v_runs)
    ORDER BY r.id
    FOR UPDATE OF r;
    -- Reports for canceling runs cancel their step (and may finish the cancel).
    FOR v_canceled IN
        SELECT sr.id, sr.flow_run_id
        FROM unnest(ids, cb_complete_steps.attempts) AS u(id, attempt)
        JOIN catbird.cb_step_runs sr ON sr.id = u.id
        JOIN catbird.cb_flow_runs r ON r.id = sr.flow_run_id
        WHERE sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status = 'started' AND (u.attempt IS NULL OR sr.attempts = u.attempt)
          AND r.id = ANY (v_runs) AND r.status = 'canceling'
        ORDER BY sr.flow_run_id, sr.id
    LOOP
        PERFORM catbird._cb_cancel_reported_step(v_canceled.flow_run_id, v_canceled.id);
    END LOOP;
    WITH done AS (
        UPDATE catbird.cb_step_runs sr
        SET status = 'completed', completed_at = v_now, output = coalesce(u.output, 'null'),
            error_message = NULL, error_detail = NULL
        FROM unnest(ids, outputs, cb_complete_steps.attempts) AS u(id, output, attempt)
        -- sr.id = ANY keeps the plan on the primary key (see cb_complete_tasks)
        WHERE sr.id = u.id AND sr.id = ANY (ids) AND sr.flow_id = v_flow.id AND sr.step_name = v_step.name
          AND sr.status = 'started' AND (u.attempt IS NULL OR sr.attempts = u.attempt)
        RETURNING sr.id, sr.flow_run_id
    )
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}'),
           coalesce(array_agg(DISTINCT d.flow_run_id ORDER BY d.flow_run_id), '{}')
    INTO v_done, v_runs
    FROM done d;
    IF cardinality(v_runs) = 0 THEN
        RETURN v_done;
    END IF;
    v_dependents := ARRAY(SELECT fs.name FROM catbird.cb_flow_steps fs
                          WHERE fs.flow_id = v_flow.id AND v_step.name = ANY (fs.depends_on));
    IF EXISTS (SELECT FROM catbird.cb_flow_steps fs
               WHERE fs.flow_id = v_flow.id AND fs.name = ANY (v_dependents)
                 AND (fs.signal OR fs.condition_expr IS NOT NULL OR fs.step_type = 'mapper')) THEN
        -- A dependent may park, be skipped or fan out: what
        -- _cb_resolve_dependents does per run, for all of them at once, then
        -- run by run.
        UPDATE catbird.cb_step_runs sr
        SET deps_remaining = sr.deps_remaining - 1
        WHERE sr.flow_run_id = ANY (v_runs) AND sr.step_name = ANY (v_dependents);
        FOREACH v_run_id IN ARRAY v_runs LOOP
            PERFORM catbird._cb_advance_flow_run(v_run_id);
        END LOOP;
        RETURN v_done;
    END IF;
    -- Every dependent is a plain step: what _cb_advance_flow_run would do for
    -- each run comes down to queueing the dependents now ready (in runs still
    -- started) and finishing the runs whose steps are all completed or
    -- skipped, here for all runs at once (one catbird.step.queued per step, as
    -- identical notifications of one transaction are delivered once anyway).
    -- Resolving a dependency and queueing the dependent it readies are one
    -- write of the dependent's row (two before: a row version each).
    IF cardinality(v_dependents) > 0 THEN
        FOR v_queued IN
            WITH resolved AS (
                UPDATE catbird.cb_step_runs sr
                SET deps_remaining = sr.deps_remaining - 1,
                    status = CASE WHEN sr.status = 'waiting_for_dependencies' AND sr.deps_remaining = 1
                                       AND r.status = 'started' THEN 'queued' ELSE sr.status END,
                    visible_at = CASE WHEN sr.status = 'waiting_for_dependencies' AND sr.deps_remaining = 1
                                           AND r.status = 'started' THEN greatest(v_now, r.visible_at)
                                      ELSE sr.visible_at END
                FROM catbird.cb_flow_runs r
                WHERE r.id = sr.flow_run_id AND r.id = ANY (v_runs) AND sr.flow_run_id = ANY (v_runs)
                  AND sr.step_name = ANY (v_dependents)
                RETURNING sr.step_name, sr.status = 'queued' AND sr.deps_remaining = 0 AS queued
            )
            SELECT DISTINCT q.step_name FROM resolved q WHERE q.queued ORDER BY q.step_name
        LOOP
            PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', v_flow.name, 'step', v_queued.step_name)::text);
        END LOOP;
    END IF;
    v_runs := ARRAY(SELECT r.id FROM catbird.cb_flow_runs r
                    WHERE r.id = ANY (v_runs) AND r.status = 'started' ORDER BY r.id);
    -- Finished runs complete with their first completed output_priority step;
    -- a run without one goes through _cb_advance_flow_run, which fails it.
    SELECT array_agg(f.id ORDER BY f.id) FILTER (WHERE f.step_name IS NOT NULL),
           array_agg(f.output ORDER BY f.id) FILTER (WHERE f.step_name IS NOT NULL),
           array_agg(f.id ORDER BY f.id) FILTER (WHERE f.step_name IS NULL)
    INTO v_finished, v_outputs, v_no_output
    FROM (
        SELECT r.id, o.step_name, o.output
        FROM unnest(v_runs) AS r(id)
        LEFT JOIN LATERAL (
            -- only item steps' outputs need assembling (_cb_step_output)
            SELECT p.name AS step_name,
                   CASE WHEN sr.step_type IN ('mapper', 'generator')
                        THEN catbird._cb_step_output(sr.id, sr.step_type, sr.output)
                        ELSE sr.output END AS output
            FROM unnest(v_flow.output_priority) WITH ORDINALITY AS p(name, ord)
            JOIN catbird.cb_step_runs sr ON sr.flow_run_id = r.id AND sr.step_name = p.name
            WHERE sr.status = 'completed'
            ORDER BY p.ord
            LIMIT 1
        ) o ON true
        WHERE NOT EXISTS (SELECT FROM catbird.cb_step_runs sr
                          WHERE sr.flow_run_id = r.id AND sr.flow_run_id = ANY (v_runs)
                            AND sr.status NOT IN ('completed', 'skipped'))
    ) f;
    IF v_finished IS NOT NULL THEN
        UPDATE catbird.cb_flow_runs r SET status = 'completed', completed_at = v_now, output = u.output
        FROM unnest(v_finished, v_outputs) AS u(id, output)
        WHERE r.id = u.id AND r.id = ANY (v_finished);
        -- one event for the runs this batch finished (run_ids, ascending)
        PERFORM catbird._cb_notify_runs('catbird.flow.completed', 'flow', v_flow.name, v_finished);
    END IF;
    IF v_no_output IS NOT NULL THEN
        FOREACH v_run_id IN ARRAY v_no_output LOOP
            PERFORM catbird._cb_advance_flow_run(v_run_id);
        END LOOP;
    END IF;
    RETURN v_done;
END
$$;

-- Records a failure of a started step run (under attempt, when given):
-- re-queued with a full-jitter delay while attempts <= max_retries and
-- retryable, else the step and the flow run fail (on-fail handling queued).
-- Policy arguments left NULL come from the step's stored policy (default 0
-- retries, 100-2000 ms); error_detail is stored beside error_message. Returns
-- 'queued', 'failed', or NULL for a stale call or a canceling run. 42704 for
-- an unknown flow or step; 22023 for an invalid name, retry policy or a NULL
-- retryable.
CREATE FUNCTION catbird.cb_fail_step(flow_name text, step_name text, id bigint, error_message text,
                                     attempt int = NULL, max_retries int = NULL, backoff_min int = NULL,
                                     backoff_max int = NULL, retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_policy record;
    v_report record;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_step.error_message, 'unknown error');
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_step.max_retries, v_step.backoff_min, v_step.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt, v_error);
    IF v_report.run_id IS NULL THEN
        RETURN NULL;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF retryable AND v_report.attempts <= v_policy.max_retries_out THEN
        UPDATE catbird.cb_step_runs sr
        SET status = 'queued', error_message = v_error, error_detail = cb_fail_step.error_detail,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(
                             sr.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
        WHERE sr.id = cb_fail_step.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = v_now, error_message = v_error, error_detail = cb_fail_step.error_detail
    WHERE sr.id = cb_fail_step.id;
    PERFORM catbird._cb_fail_flow_run(v_report.run_id, step_name, v_error, v_report.run_input,
                                      v_report.signal_input, v_report.attempts);
    RETURN 'failed';
END
$$;
-- catbird 55_flow_items: the worker protocol for map items, generators and reducers.
--
-- Owns: cb_claim_map_tasks, cb_hide_map_tasks, _cb_maybe_complete_map_step,
-- cb_complete_map_tasks, cb_fail_map_task, cb_spawn_generator_map_tasks,
-- cb_complete_generator_step and cb_fail_generator_step (over
-- _cb_end_generator), cb_read_map_outputs.
-- Writes cb_map_tasks and cb_step_runs.
-- Guarantees:
--   * Items are claimed, fenced, retried and canceled like step runs (see
--     54_flow_steps), each item independently.
--   * A mapper or generator step completes when all its items are done (and
--     a generator's handler has finished); its output is its item outputs in
--     item order, assembled on read, never stored as one array.
--   * Generators add items only while their step run is started, and under
--     the claim's attempt when they give it: a stale generator writes nothing.
--   * Generator items are keyed by their index within the step: a resumed
--     generator that produces its items again (under its attempt, or with an
--     explicit start_index) adds none twice.
--   * A claim first fails the step's lapsed items that used their attempts
--     (_cb_fail_lapsed_work); a failure uses the step's stored policy when
--     the call gives none.
--   * Batch completions and lease renewals join the given ids with the run
--     table with enable_nestloop off: statistics taken while every run was
--     queued make the planner expect no started run and rescan unnest once
--     per row (40 ms instead of 4 ms for 250 runs).

-- Claims up to quantity items of a mapper or generator step, like
-- cb_claim_steps: each claim increments the item's attempts and holds it for
-- hide_for ms. Returns the claims (item, flow input, dependency outputs
-- without the map source, signal input) by priority, then id. with_input /
-- with_outputs false: the claim leaves input / step_outputs NULL, for item
-- handlers that do not take them (a mapper over a large flow input would
-- otherwise ship that input with every item). Lapsed items that used their
-- attempts are failed first (see _cb_fail_lapsed_work). 42704 for an unknown
-- flow or step; 22023 for an invalid name, quantity < 1 or hide_for < 1.
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
    PERFORM catbird._cb_fail_lapsed_work(v_step, 'item', v_now);
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

-- Lease renewal for items, as cb_hide_steps. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name, hide_for < 1 or attempts
-- of another length than ids.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_hide_map_tasks(flow_name text, step_name text, ids bigint[], hide_for int,
                                          attempts int[] = NULL) RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_lease(hide_for, ids, attempts);
    UPDATE catbird.cb_map_tasks m
    SET visible_at = catbird.cb_now() + make_interval(secs => hide_for / 1000.0)
    FROM unnest(ids, cb_hide_map_tasks.attempts) AS u(id, attempt)
    WHERE m.flow_id = v_flow.id AND m.step_name = cb_hide_map_tasks.step_name
      AND m.id = u.id AND m.id = ANY (ids) AND m.status = 'started'
      AND (u.attempt IS NULL OR m.attempts = u.attempt);
END
$$;

-- A mapper or generator step whose items are all done (and, for a
-- generator, whose handler has finished) is completed, and its run advanced.
-- Returns nothing; raises nothing.
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

-- Completes started items (under the given attempts, when given) with their
-- outputs, one flow run at a time (runs locked in id order); a step whose
-- items are all done completes. Items of canceling runs are canceled.
-- Returns nothing; stale items are left out. 42704 for an unknown flow or
-- step; 22023 for an invalid name or arrays of different lengths.
-- Runs with enable_nestloop off (see the guarantees above).
CREATE FUNCTION catbird.cb_complete_map_tasks(flow_name text, step_name text, ids bigint[], outputs jsonb[],
                                              attempts int[] = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET enable_nestloop = off
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
            SET status = 'completed', completed_at = v_now, output = coalesce(u.output, 'null'), error_message = NULL,
                error_detail = NULL
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

-- Records a failure of a started item (under attempt, when given): re-queued
-- with a full-jitter delay while attempts <= max_retries and retryable, else
-- the item, its step and the flow run fail. Policy arguments left NULL come
-- from the step's stored policy; error_detail is stored beside error_message
-- (on the item, and on its step when the flow fails). Returns 'queued',
-- 'failed', or NULL for a stale call or a canceling run. 42704 for an unknown
-- flow or step; 22023 for an invalid name, retry policy or a NULL retryable.
CREATE FUNCTION catbird.cb_fail_map_task(flow_name text, step_name text, id bigint, error_message text,
                                         attempt int = NULL, max_retries int = NULL, backoff_min int = NULL,
                                         backoff_max int = NULL, retryable boolean = true, error_detail text = NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_policy record;
    v_run catbird.cb_flow_runs;
    v_task catbird.cb_map_tasks;
    v_now timestamptz := catbird.cb_now();
    v_error text := coalesce(cb_fail_map_task.error_message, 'unknown error');
BEGIN
    v_policy := catbird._cb_effective_policy(max_retries, backoff_min, backoff_max,
                                             v_step.max_retries, v_step.backoff_min, v_step.backoff_max);
    PERFORM catbird._cb_check_fail_args(retryable, NULL);
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
    IF retryable AND v_task.attempts <= v_policy.max_retries_out THEN
        UPDATE catbird.cb_map_tasks m
        SET status = 'queued', error_message = v_error, error_detail = cb_fail_map_task.error_detail,
            visible_at = v_now + make_interval(secs => catbird._cb_retry_delay(
                             m.attempts, v_policy.backoff_min_out, v_policy.backoff_max_out) / 1000.0)
        WHERE m.id = v_task.id;
        RETURN 'queued';
    END IF;
    UPDATE catbird.cb_map_tasks m
    SET status = 'failed', failed_at = v_now, error_message = v_error, error_detail = cb_fail_map_task.error_detail
    WHERE m.id = v_task.id;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = v_now,
        error_message = format('item %s failed: %s', v_task.idx, v_error), error_detail = cb_fail_map_task.error_detail
    WHERE sr.id = v_task.step_run_id;
    PERFORM catbird._cb_fail_flow_run(v_run.id, step_name, format('item %s failed: %s', v_task.idx, v_error),
                                      v_task.item,
                                      (SELECT sr.signal_input FROM catbird.cb_step_runs sr WHERE sr.id = v_task.step_run_id),
                                      v_task.attempts);
    RETURN 'failed';
END
$$;

-- A generator's handler, while running (its step run started, under attempt
-- when given), adds items (queued at visible_at, default now). Items are
-- keyed by their index within the step: the first of this call's items has
-- index start_index when given (at most the number of items the step has,
-- so there is no gap); else, with attempt, the number of items this attempt
-- has spawned so far (a resumed generator starts again at 0); else the
-- number of items the step has (append). Items whose index the step already
-- has are not added again. Returns how many of the call's items the step now
-- has (added now or before); 0 when the call is stale (attempt no longer
-- current) or the step run or flow run is no longer started, and then
-- nothing is written. 42704 for an unknown flow or step; 22023 for an invalid
-- name, a step that is not a generator, items that are not a JSON array,
-- attempt < 1, start_index < 0 or past the step's items, an infinite
-- visible_at.
CREATE FUNCTION catbird.cb_spawn_generator_map_tasks(flow_name text, step_name text, id bigint, items jsonb,
                                                     visible_at timestamptz = NULL, attempt int = NULL,
                                                     start_index int = NULL)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_step catbird.cb_flow_steps := catbird._cb_flow_step(v_flow, step_name);
    v_locked record;
    v_now timestamptz := catbird.cb_now();
    v_count int;
    v_base int;
    v_added int;
BEGIN
    IF v_step.step_type <> 'generator' THEN
        RAISE EXCEPTION 'step "%" of flow "%" is not a generator', step_name, flow_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF items IS NULL OR jsonb_typeof(items) <> 'array' THEN
        RAISE EXCEPTION 'invalid items: expected a JSON array of items' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('visible_at', visible_at);
    PERFORM catbird._cb_check_fail_args(true, attempt);
    IF start_index IS NOT NULL THEN
        PERFORM catbird._cb_check_at_least('start_index', start_index, 0);
    END IF;
    v_locked := catbird._cb_lock_step_run(v_flow, step_name, id);
    IF (v_locked.step_run).status IS DISTINCT FROM 'started' OR (v_locked.run).status <> 'started'
       OR (attempt IS NOT NULL AND (v_locked.step_run).attempts <> attempt) THEN
        RETURN 0;  -- the run was canceled or finished meanwhile, or a newer attempt holds the step
    END IF;
    v_base := CASE WHEN start_index IS NOT NULL THEN start_index
                   WHEN attempt IS NOT NULL THEN
                       CASE WHEN (v_locked.step_run).spawn_attempt = attempt THEN (v_locked.step_run).spawn_cursor ELSE 0 END
                   ELSE coalesce((v_locked.step_run).map_total, 0) END;
    IF v_base > coalesce((v_locked.step_run).map_total, 0) THEN
        RAISE EXCEPTION 'invalid start_index %: the step has % item(s), so the next one has index %',
            start_index, coalesce((v_locked.step_run).map_total, 0), coalesce((v_locked.step_run).map_total, 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_count := jsonb_array_length(items);
    INSERT INTO catbird.cb_map_tasks (step_run_id, flow_run_id, flow_id, idx, priority, step_name, status,
                                      visible_at, created_at, item)
    SELECT cb_spawn_generator_map_tasks.id, (v_locked.run).id, v_flow.id,
           v_base + (e.ord - 1)::int, (v_locked.step_run).priority,
           step_name, 'queued', coalesce(cb_spawn_generator_map_tasks.visible_at, v_now), v_now, e.item
    FROM jsonb_array_elements(items) WITH ORDINALITY AS e(item, ord)
    ORDER BY e.ord
    ON CONFLICT (step_run_id, idx) DO NOTHING;
    GET DIAGNOSTICS v_added = ROW_COUNT;
    UPDATE catbird.cb_step_runs sr
    SET map_total = greatest(coalesce(sr.map_total, 0), v_base + v_count),
        spawn_attempt = coalesce(attempt, sr.spawn_attempt),
        spawn_cursor = CASE WHEN attempt IS NOT NULL THEN v_base + v_count ELSE sr.spawn_cursor END
    WHERE sr.id = cb_spawn_generator_map_tasks.id;
    IF v_added > 0 THEN
        PERFORM catbird._cb_notify('catbird.step.queued', jsonb_build_object('flow', flow_name, 'step', step_name)::text);
    END IF;
    RETURN v_count;
END
$$;

-- cb_complete_generator_step / cb_fail_generator_step: records that a
-- generator's handler finished (failed false: the step completes once all its
-- items are done) or failed (the step and the flow run fail, no retry, with
-- error_message and error_detail stored on the step), under attempt when
-- given. A stale call (step not started, or another attempt) writes nothing;
-- for a canceling run the step is canceled. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird._cb_end_generator(flow_name text, step_name text, id bigint, attempt int, failed boolean,
                                          error_message text = NULL, error_detail text = NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_flow catbird.cb_flows := catbird._cb_flow(flow_name);
    v_report record;
    v_error text := coalesce(_cb_end_generator.error_message, 'unknown error');
BEGIN
    PERFORM catbird._cb_flow_step(v_flow, step_name);
    PERFORM catbird._cb_check_fail_args(true, attempt);
    v_report := catbird._cb_lock_reported_step(v_flow, step_name, id, attempt);
    IF v_report.run_id IS NULL THEN
        RETURN;  -- stale, or the run is canceling (the step is canceled)
    END IF;
    IF NOT failed THEN
        UPDATE catbird.cb_step_runs sr
        SET generator_done = true, status = 'waiting_for_map_tasks', map_total = coalesce(sr.map_total, 0)
        WHERE sr.id = _cb_end_generator.id;
        PERFORM catbird._cb_maybe_complete_map_step(id, v_flow.id);
        RETURN;
    END IF;
    UPDATE catbird.cb_step_runs sr
    SET status = 'failed', failed_at = catbird.cb_now(), error_message = v_error,
        error_detail = _cb_end_generator.error_detail
    WHERE sr.id = _cb_end_generator.id;
    PERFORM catbird._cb_fail_flow_run(v_report.run_id, step_name, v_error, v_report.run_input,
                                      v_report.signal_input, v_report.attempts);
END
$$;

-- Records that a generator's handler has finished (under attempt, when
-- given): the step completes once all its items are done. A stale call (step
-- not started, or another attempt) writes nothing; for a canceling run the
-- step is canceled. Returns nothing. 42704 for an unknown flow or step; 22023
-- for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_complete_generator_step(flow_name text, step_name text, id bigint, attempt int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_end_generator(flow_name, step_name, id, attempt, failed => false) $$;

-- Records that a generator's handler failed (under attempt, when given): the
-- step and the flow run fail (no retry), with error_detail stored on the
-- step. A stale call (step not started, or another attempt) writes nothing;
-- for a canceling run the step is canceled. Returns nothing. 42704 for an
-- unknown flow or step; 22023 for an invalid name or attempt < 1.
CREATE FUNCTION catbird.cb_fail_generator_step(flow_name text, step_name text, id bigint, error_message text,
                                               attempt int = NULL, error_detail text = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_generator(flow_name, step_name, id, attempt, failed => true,
                                     error_message => error_message, error_detail => error_detail)
$$;

-- Item outputs of a mapper or generator step of a run, in item order, a page
-- at a time (for reducers, which fold them without building one array):
-- completed items after after_idx, at most lim. Returns (idx, output) rows.
-- 42704 for an unknown flow or step; 22023 for an invalid name or lim < 1.
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
-- catbird 57_flow_on_fail: on-fail handlers of flows.
--
-- Owns: cb_claim_flow_on_fail, cb_complete_flow_on_fail, cb_fail_flow_on_fail.
-- Writes the on_fail_* columns of cb_flow_runs.
-- Guarantees:
--   * Every flow run that fails is queued for its on-fail handler
--     (on_fail_status), whatever the flow's flags, with the failed step's
--     name, input, signal input and attempts.
--   * On-fail claims use FOR UPDATE SKIP LOCKED and a hide window like run
--     claims; complete/fail act only on a claim that is still started, under
--     on_fail_attempt (the claim's on_fail_attempts) when given; the retry
--     delay of a failed handler is decided in SQL when the caller gives none.

-- Claims up to quantity failed flow runs whose on-fail handling is due
-- (queued, or started with its hide window lapsed), oldest due first:
-- on_fail_attempts is incremented and the claim held for hide_for ms.
-- Returns the claims, with the failed step's name, input, signal input and
-- attempts, by id. 42704 for an unknown flow; 22023 for an invalid name,
-- quantity < 1 or hide_for < 1.
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

-- Records that the on-fail handler of a flow run succeeded; acts only on a run
-- whose on-fail claim is started (under on_fail_attempt, when given). Returns
-- nothing; 42704 for an unknown flow, 22023 for an invalid name or
-- on_fail_attempt < 1.
CREATE FUNCTION catbird.cb_complete_flow_on_fail(name text, run_id bigint, on_fail_attempt int = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('flow', cb_complete_flow_on_fail.name, run_id, completed => true,
                                   on_fail_attempt => on_fail_attempt)
$$;

-- Records that the on-fail handler of a flow run failed: claimable again after
-- retry_delay ms, or failed for good when retry_exhausted. Left NULL, SQL
-- decides both from the policy given (max_retries, backoff_min, backoff_max;
-- flows store none: 0 retries, 100-2000 ms). Acts only on a run whose on-fail
-- claim is started (under on_fail_attempt, when given). Returns nothing;
-- 42704 for an unknown flow, 22023 for an invalid name, retry_delay < 0,
-- on_fail_attempt < 1 or an invalid policy.
CREATE FUNCTION catbird.cb_fail_flow_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean = NULL, retry_delay bigint = NULL,
                                             on_fail_attempt int = NULL, max_retries int = NULL,
                                             backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('flow', cb_fail_flow_on_fail.name, run_id, completed => false,
                                   error_message => cb_fail_flow_on_fail.error_message,
                                   retry_exhausted => retry_exhausted, retry_delay => retry_delay,
                                   on_fail_attempt => on_fail_attempt, max_retries => max_retries,
                                   backoff_min => backoff_min, backoff_max => backoff_max)
$$;
-- catbird 60_cron: cron specs, parsed once, and their ticks.
--
-- Owns: the cb_cron type (a parsed cron spec), the cron parser,
-- cb_next_cron_tick / cb_next_cron_ticks and the tick arithmetic the
-- schedules (61_schedules) use. No tables.
-- Guarantees:
--   * A cron spec is parsed once: cb_cron keeps it as lookup arrays (for
--     every minute, hour, day, month and weekday, the next and the previous
--     allowed value), so finding the next tick is a handful of array lookups
--     with carry from minute to hour to day to month to year, never a walk
--     over minutes. All of it is computed in UTC, whatever the session's
--     TimeZone.
--   * Cron grammar (five fields: minute hour day-of-month month day-of-week):
--     "*", "N", "N-M", "*/S", "N-M/S", "N/S" (= N-max/S), comma lists; months
--     1-12 or JAN-DEC; weekdays 0-7 or SUN-SAT, 0 and 7 both Sunday, also in
--     ranges (5-7, FRI-SUN); descriptors @yearly @annually @monthly @weekly
--     @daily @midnight @hourly. When both day fields are restricted a date
--     matches if either matches; which fields count as restricted follows
--     croniter exactly (a field is unrestricted when it is "*" or holds a bare
--     "*" in a list, or when it covers every value and the other day field's
--     text contains a "*"). One deliberate difference: an equal range "N-N"
--     means just N (croniter reads it as the whole cycle).
--   * Every invalid spec is rejected with 22023 naming the bad field, including
--     one that can never match (e.g. "0 0 30 2 *"); nothing is written.

CREATE TYPE catbird.cb_cron AS (
    -- Lookup arrays, 1-based: element i is for value (i - 1) for minute, hour
    -- and weekday, and for value i for day of month and month.
    minute_next int[],   -- smallest allowed minute >= m, NULL when none
    minute_prev int[],   -- largest allowed minute <= m, NULL when none
    hour_next   int[],
    hour_prev   int[],
    dom_next    int[],   -- may exceed the month's length: then there is none
    dom_prev    int[],
    month_next  int[],
    month_prev  int[],
    dow_next    int[],   -- days forward from weekday w to the next allowed weekday (0-6)
    dow_prev    int[],   -- days back from weekday w to the previous allowed weekday (0-6)
    -- 0: a day matches day-of-month OR day-of-week; 1: day-of-month only
    -- (day-of-week unrestricted); 2: day-of-week only (day-of-month unrestricted)
    day_mode    int
);


-- A cron spec quoted for an error message: at most 200 characters of it.
CREATE FUNCTION catbird._cb_cron_quote(cron_spec text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN cron_spec IS NULL THEN 'NULL'
                WHEN length(cron_spec) > 200 THEN quote_literal(left(cron_spec, 200)) || '... ('
                                                   || length(cron_spec) || ' characters)'
                ELSE quote_literal(cron_spec) END
$$;

-- The hint of a cron field error: the field's grammar and values.
CREATE FUNCTION catbird._cb_cron_hint(field_name text, lo int, hi int) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format('The %s field takes "*", N, N-M, */S, N-M/S, N/S or a comma list of those, with values %s-%s%s.',
                  field_name, lo, hi,
                  CASE WHEN field_name = 'month' THEN ' or JAN-DEC'
                       WHEN field_name = 'day-of-week' THEN ' or SUN-SAT (0 and 7 are Sunday)'
                       ELSE '' END)
$$;

-- One field of a cron spec as a bit mask of its allowed values (bit v for
-- value v; a weekday 7 is stored as 0), and whether it holds a bare "*".
-- Raises 22023 naming the field for anything outside the grammar.
CREATE FUNCTION catbird._cb_cron_field(cron_spec text, field_name text, field text, lo int, hi int,
                                       names text[], OUT mask bigint, OUT star boolean)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_element text;
    v_parts text[];
    v_base text;
    v_from int;
    v_to int;
    v_step int;
    v_value int;
    -- the largest value a range may name: 7 for Sunday in day-of-week
    v_max int := CASE WHEN field_name = 'day-of-week' THEN 7 ELSE hi END;
BEGIN
    mask := 0;
    star := false;
    FOREACH v_element IN ARRAY string_to_array(field, ',') LOOP
        IF v_element = '' THEN
            RAISE EXCEPTION 'invalid cron spec %: the % field % has an empty list element', catbird._cb_cron_quote(cron_spec), field_name, quote_literal(field)
                USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
        END IF;
        -- Fast path: a plain number (most list elements).
        IF v_element ~ '^[0-9]{1,2}$' THEN
            v_value := v_element::int;
            IF v_value >= lo AND v_value <= v_max THEN
                mask := mask | (1::bigint << (v_value % CASE WHEN field_name = 'day-of-week' THEN 7 ELSE 64 END));
                CONTINUE;
            END IF;
        END IF;
        -- element = base ["/" step]; base = "*" | value ["-" value]. Split by
        -- hand: regexp_match with capture groups costs more than the rest of
        -- the parse together.
        v_parts := ARRAY[NULL, NULL, NULL, NULL]::text[];
        v_base := v_element;
        IF strpos(v_element, '/') > 0 THEN
            v_base := split_part(v_element, '/', 1);
            v_parts[4] := substr(v_element, strpos(v_element, '/') + 1);
            IF v_parts[4] !~ '^[0-9]{1,4}$' OR v_parts[4]::int < 1 THEN
                RAISE EXCEPTION 'invalid cron spec %: the % field % has a bad step %: a step is a whole number from 1 to 9999',
                    catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_parts[4], 100))
                    USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
            END IF;
            v_step := v_parts[4]::int;
        ELSE
            v_step := 1;
        END IF;
        IF v_base = '*' THEN
            v_parts[1] := '*';
        ELSIF strpos(v_base, '-') > 0 THEN
            v_parts[2] := split_part(v_base, '-', 1);
            v_parts[3] := substr(v_base, strpos(v_base, '-') + 1);
        ELSE
            v_parts[2] := v_base;
        END IF;
        IF v_parts[1] IS NULL AND (v_parts[2] !~ '^[a-z0-9]+$' OR v_parts[3] !~ '^[a-z0-9]+$') THEN
            RAISE EXCEPTION 'invalid cron spec %: the % field % cannot be read at %',
                catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_element, 100))
                USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
        END IF;
        IF v_parts[1] IS NOT NULL THEN
            v_from := lo;
            -- "*/S" on weekdays steps over 0-6, like croniter
            v_to := hi;
            IF v_parts[4] IS NULL THEN
                star := true;
            END IF;
        ELSE
            -- Values: numbers, or names where the field has them.
            FOR i IN 2..3 LOOP
                CONTINUE WHEN v_parts[i] IS NULL;
                IF v_parts[i] ~ '^[0-9]{1,4}$' THEN
                    v_value := v_parts[i]::int;
                ELSE
                    v_value := array_position(names, v_parts[i]);
                    IF v_value IS NULL THEN
                        RAISE EXCEPTION 'invalid cron spec %: the % field % has an unknown value %',
                            catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_parts[i], 100))
                            USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
                    END IF;
                    -- names are 1-based in the array: JAN = 1, SUN = 0
                    v_value := v_value + lo - 1;
                    -- SUN closing a range is 7 (FRI-SUN)
                    IF field_name = 'day-of-week' AND i = 3 AND v_value = 0 THEN
                        v_value := 7;
                    END IF;
                END IF;
                IF v_value < lo OR v_value > v_max THEN
                    RAISE EXCEPTION 'invalid cron spec %: the % field % has the value %, out of range %-%',
                        catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), v_parts[i], lo, v_max
                        USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
                END IF;
                IF i = 2 THEN v_from := v_value; ELSE v_to := v_value; END IF;
            END LOOP;
            IF v_parts[3] IS NULL THEN
                -- "N" alone, or "N/S" = N-max/S (max 6 for weekdays, like
                -- croniter; "7/S" is just Sunday)
                v_to := CASE WHEN v_parts[4] IS NULL THEN v_from ELSE greatest(hi, v_from) END;
                IF field_name = 'day-of-week' AND v_from = 7 THEN
                    v_to := 7;
                END IF;
            ELSIF v_to < v_from THEN
                RAISE EXCEPTION 'invalid cron spec %: the % field % has a reversed range %: write the smaller value first',
                    catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_element, 100))
                    USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
            END IF;
        END IF;
        IF v_step = 1 AND field_name <> 'day-of-week' THEN
            -- a plain range: bits v_from..v_to at once
            mask := mask | ((((1::bigint << (v_to - v_from + 1)) - 1)) << v_from);
            CONTINUE;
        END IF;
        v_value := v_from;
        WHILE v_value <= v_to LOOP
            mask := mask | (1::bigint << (v_value % CASE WHEN field_name = 'day-of-week' THEN 7 ELSE 64 END));
            v_value := v_value + v_step;
        END LOOP;
    END LOOP;
END
$$;

-- Lookup arrays of a mask over lo..hi: for each value, the next (forward) or
-- previous allowed value, NULL when there is none. One pass over the range.
CREATE FUNCTION catbird._cb_cron_lookup(mask bigint, lo int, hi int, forward boolean) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_lookup int[] := array_fill(NULL::int, ARRAY[hi - lo + 1]);
    v_current int;
BEGIN
    IF forward THEN
        FOR i IN REVERSE hi..lo LOOP
            IF (mask >> i) & 1 = 1 THEN v_current := i; END IF;
            v_lookup[i - lo + 1] := v_current;
        END LOOP;
    ELSE
        FOR i IN lo..hi LOOP
            IF (mask >> i) & 1 = 1 THEN v_current := i; END IF;
            v_lookup[i - lo + 1] := v_current;
        END LOOP;
    END IF;
    RETURN v_lookup;
END
$$;

-- Weekday offsets: for each weekday w (0 = Sunday), how many days forward
-- (or back) the nearest allowed weekday is (mask is not empty).
CREATE FUNCTION catbird._cb_cron_dow_lookup(mask bigint, forward boolean) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_lookup int[] := array_fill(NULL::int, ARRAY[7]);
    v_k int;
BEGIN
    FOR w IN 0..6 LOOP
        v_k := 0;
        WHILE (mask >> (CASE WHEN forward THEN w + v_k ELSE w - v_k + 7 END) % 7) & 1 = 0 LOOP
            v_k := v_k + 1;
        END LOOP;
        v_lookup[w + 1] := v_k;
    END LOOP;
    RETURN v_lookup;
END
$$;

-- Parses a cron spec into a cb_cron; 22023 naming the bad field when invalid
-- (including a spec that matches no day at all, such as "0 0 30 2 *").
-- Without with_prev the *_prev arrays are left NULL (enough for
-- _cb_cron_next, and half the work).
CREATE FUNCTION catbird._cb_parse_cron(cron_spec text, with_prev boolean = true) RETURNS catbird.cb_cron
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_spec text;
    v_fields text[];
    v_minute record;
    v_hour record;
    v_dom record;
    v_month record;
    v_dow record;
    v_dom_star boolean;
    v_dow_star boolean;
    v_min_dom int;
    v_cron catbird.cb_cron;
BEGIN
    IF cron_spec IS NULL THEN
        RAISE EXCEPTION 'invalid cron spec NULL: give five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(cron_spec) > 1000 THEN
        RAISE EXCEPTION 'invalid cron spec %: it is longer than 1000 characters', catbird._cb_cron_quote(cron_spec)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_spec := lower(btrim(cron_spec, E' \t\n\r'));
    IF left(v_spec, 1) = '@' THEN
        v_spec := CASE v_spec
                      WHEN '@yearly' THEN '0 0 1 1 *'
                      WHEN '@annually' THEN '0 0 1 1 *'
                      WHEN '@monthly' THEN '0 0 1 * *'
                      WHEN '@weekly' THEN '0 0 * * 0'
                      WHEN '@daily' THEN '0 0 * * *'
                      WHEN '@midnight' THEN '0 0 * * *'
                      WHEN '@hourly' THEN '0 * * * *'
                  END;
        IF v_spec IS NULL THEN
            RAISE EXCEPTION 'invalid cron spec %: unsupported descriptor; the descriptors are @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly',
                catbird._cb_cron_quote(cron_spec)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For "@every <duration>" or "@reboot", write a five-field spec instead, e.g. "*/5 * * * *" for every five minutes.';
        END IF;
    END IF;
    v_fields := regexp_split_to_array(v_spec, '[ \t\n\r]+');
    IF v_spec = '' OR cardinality(v_fields) <> 5 THEN
        RAISE EXCEPTION 'invalid cron spec %: expected 5 fields (minute hour day-of-month month day-of-week), got %',
            catbird._cb_cron_quote(cron_spec), CASE WHEN v_spec = '' THEN 0 ELSE cardinality(v_fields) END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Seconds and years are not supported; e.g. "30 9 * * 1-5" is 09:30 UTC on weekdays.';
    END IF;
    v_minute := catbird._cb_cron_field(cron_spec, 'minute', v_fields[1], 0, 59, NULL);
    v_hour := catbird._cb_cron_field(cron_spec, 'hour', v_fields[2], 0, 23, NULL);
    v_dom := catbird._cb_cron_field(cron_spec, 'day-of-month', v_fields[3], 1, 31, NULL);
    v_month := catbird._cb_cron_field(cron_spec, 'month', v_fields[4], 1, 12,
        ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']);
    v_dow := catbird._cb_cron_field(cron_spec, 'day-of-week', v_fields[5], 0, 6,
        ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);

    -- croniter's rule for "restricted": see the header.
    v_dom_star := v_dom.star OR (v_dom.mask = 4294967294 AND strpos(v_fields[5], '*') > 0);
    v_dow_star := v_dow.star OR (v_dow.mask = 127 AND strpos(v_fields[3], '*') > 0);
    v_cron.day_mode := CASE WHEN NOT v_dom_star AND NOT v_dow_star THEN 0 WHEN v_dom_star THEN 2 ELSE 1 END;

    -- A spec restricted by day of month only must name a day that some of its
    -- months have (February counts its 29th).
    IF v_cron.day_mode = 1 THEN
        SELECT min(d) INTO v_min_dom FROM generate_series(1, 31) d WHERE (v_dom.mask >> d) & 1 = 1;
        IF v_min_dom = 31 AND v_month.mask & ((1 << 1) | (1 << 3) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 12)) = 0
           OR v_min_dom = 30 AND v_month.mask & ~(1 << 2) = 0 THEN
            RAISE EXCEPTION 'invalid cron spec %: it matches no minute in the next 8 years: the day-of-month field % names no day that the month field % has',
                catbird._cb_cron_quote(cron_spec), quote_literal(left(v_fields[3], 100)), quote_literal(left(v_fields[4], 100))
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    v_cron.minute_next := catbird._cb_cron_lookup(v_minute.mask, 0, 59, true);
    v_cron.hour_next := catbird._cb_cron_lookup(v_hour.mask, 0, 23, true);
    v_cron.dom_next := catbird._cb_cron_lookup(v_dom.mask, 1, 31, true);
    v_cron.month_next := catbird._cb_cron_lookup(v_month.mask, 1, 12, true);
    v_cron.dow_next := catbird._cb_cron_dow_lookup(v_dow.mask, true);
    IF with_prev THEN
        v_cron.minute_prev := catbird._cb_cron_lookup(v_minute.mask, 0, 59, false);
        v_cron.hour_prev := catbird._cb_cron_lookup(v_hour.mask, 0, 23, false);
        v_cron.dom_prev := catbird._cb_cron_lookup(v_dom.mask, 1, 31, false);
        v_cron.month_prev := catbird._cb_cron_lookup(v_month.mask, 1, 12, false);
        v_cron.dow_prev := catbird._cb_cron_dow_lookup(v_dow.mask, false);
    END IF;
    RETURN v_cron;
END
$$;

-- Next and previous ticks
--------------------------------------------------------------------------------

-- The first minute matching a parsed spec strictly after from_time (UTC).
-- Field by field with carry: month, then day, then hour, then minute; each
-- step is one array lookup, and a miss moves the next larger unit on.
CREATE FUNCTION catbird._cb_cron_next(cron catbird.cb_cron, from_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_t timestamp := date_trunc('minute', from_time AT TIME ZONE 'UTC') + interval '1 minute';
    v_y int := extract(year FROM v_t)::int;
    v_mo int := extract(month FROM v_t)::int;
    v_d int := extract(day FROM v_t)::int;
    v_h int := extract(hour FROM v_t)::int;
    v_mi int := extract(minute FROM v_t)::int;
    v_limit int := v_y + 9;  -- a feasible spec matches within 8 years (Feb 29 across 2100)
    v_dim int;
    v_v int;
    v_a int;
    v_b int;
BEGIN
    LOOP
        -- month
        v_v := cron.month_next[v_mo];
        IF v_v IS NULL THEN
            v_y := v_y + 1;
            v_mo := cron.month_next[1];
            v_d := 1; v_h := 0; v_mi := 0;
        ELSIF v_v > v_mo THEN
            v_mo := v_v;
            v_d := 1; v_h := 0; v_mi := 0;
        END IF;
        IF v_y > v_limit THEN
            RETURN NULL;
        END IF;
        -- day
        v_dim := CASE WHEN v_mo = 2 THEN CASE WHEN v_y % 4 = 0 AND (v_y % 100 <> 0 OR v_y % 400 = 0) THEN 29 ELSE 28 END
                      ELSE 30 + (v_mo + v_mo / 8) % 2 END;
        v_a := NULL;
        v_b := NULL;
        IF cron.day_mode <> 2 THEN
            v_a := cron.dom_next[v_d];
            IF v_a > v_dim THEN v_a := NULL; END IF;
        END IF;
        IF cron.day_mode <> 1 THEN
            -- 1970-01-04 was a Sunday
            v_b := v_d + cron.dow_next[((make_date(v_y, v_mo, v_d) - DATE '1970-01-04') % 7 + 7) % 7 + 1];
            IF v_b > v_dim THEN v_b := NULL; END IF;
        END IF;
        v_v := least(v_a, v_b);
        IF v_v IS NULL THEN
            v_mo := v_mo + 1;
            v_d := 1; v_h := 0; v_mi := 0;
            IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
            CONTINUE;
        END IF;
        IF v_v > v_d THEN
            v_d := v_v;
            v_h := 0; v_mi := 0;
        END IF;
        -- hour
        v_v := cron.hour_next[v_h + 1];
        IF v_v IS NULL THEN
            v_d := v_d + 1;
            v_h := 0; v_mi := 0;
            IF v_d > v_dim THEN
                v_d := 1; v_mo := v_mo + 1;
                IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
            END IF;
            CONTINUE;
        END IF;
        IF v_v > v_h THEN
            v_h := v_v;
            v_mi := 0;
        END IF;
        -- minute
        v_v := cron.minute_next[v_mi + 1];
        IF v_v IS NULL THEN
            v_h := v_h + 1;
            v_mi := 0;
            IF v_h > 23 THEN
                v_h := 0; v_d := v_d + 1;
                IF v_d > v_dim THEN
                    v_d := 1; v_mo := v_mo + 1;
                    IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
                END IF;
            END IF;
            CONTINUE;
        END IF;
        RETURN make_timestamp(v_y, v_mo, v_d, v_h, v_v, 0) AT TIME ZONE 'UTC';
    END LOOP;
END
$$;

-- The last minute matching a parsed spec at or before until_time (UTC): the
-- mirror image of _cb_cron_next. Used by the skip policy (latest due tick).
CREATE FUNCTION catbird._cb_cron_prev(cron catbird.cb_cron, until_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_t timestamp := date_trunc('minute', until_time AT TIME ZONE 'UTC');
    v_y int := extract(year FROM v_t)::int;
    v_mo int := extract(month FROM v_t)::int;
    v_d int := extract(day FROM v_t)::int;
    v_h int := extract(hour FROM v_t)::int;
    v_mi int := extract(minute FROM v_t)::int;
    v_limit int := v_y - 9;
    v_dim int;
    v_v int;
    v_a int;
    v_b int;
BEGIN
    LOOP
        -- month (v_d = 99: the last day of whatever month this lands in)
        v_v := cron.month_prev[v_mo];
        IF v_v IS NULL THEN
            v_y := v_y - 1;
            v_mo := cron.month_prev[12];
            v_d := 99; v_h := 23; v_mi := 59;
        ELSIF v_v < v_mo THEN
            v_mo := v_v;
            v_d := 99; v_h := 23; v_mi := 59;
        END IF;
        IF v_y < v_limit THEN
            RETURN NULL;
        END IF;
        -- day
        v_dim := CASE WHEN v_mo = 2 THEN CASE WHEN v_y % 4 = 0 AND (v_y % 100 <> 0 OR v_y % 400 = 0) THEN 29 ELSE 28 END
                      ELSE 30 + (v_mo + v_mo / 8) % 2 END;
        v_d := least(v_d, v_dim);
        v_a := NULL;
        v_b := NULL;
        IF cron.day_mode <> 2 THEN
            v_a := cron.dom_prev[v_d];
        END IF;
        IF cron.day_mode <> 1 THEN
            v_b := v_d - cron.dow_prev[((make_date(v_y, v_mo, v_d) - DATE '1970-01-04') % 7 + 7) % 7 + 1];
            IF v_b < 1 THEN v_b := NULL; END IF;
        END IF;
        v_v := greatest(v_a, v_b);
        IF v_v IS NULL THEN
            v_mo := v_mo - 1;
            v_d := 99; v_h := 23; v_mi := 59;
            IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
            CONTINUE;
        END IF;
        IF v_v < v_d THEN
            v_d := v_v;
            v_h := 23; v_mi := 59;
        END IF;
        -- hour
        v_v := cron.hour_prev[v_h + 1];
        IF v_v IS NULL THEN
            v_d := v_d - 1;
            v_h := 23; v_mi := 59;
            IF v_d < 1 THEN
                v_d := 99; v_mo := v_mo - 1;
                IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
            END IF;
            CONTINUE;
        END IF;
        IF v_v < v_h THEN
            v_h := v_v;
            v_mi := 59;
        END IF;
        -- minute
        v_v := cron.minute_prev[v_mi + 1];
        IF v_v IS NULL THEN
            v_h := v_h - 1;
            v_mi := 59;
            IF v_h < 0 THEN
                v_h := 23; v_d := v_d - 1;
                IF v_d < 1 THEN
                    v_d := 99; v_mo := v_mo - 1;
                    IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
                END IF;
            END IF;
            CONTINUE;
        END IF;
        RETURN make_timestamp(v_y, v_mo, v_d, v_h, v_v, 0) AT TIME ZONE 'UTC';
    END LOOP;
END
$$;

-- Checks the from_time of cb_next_cron_tick(s) (argument names it): not NULL
-- and finite. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_cron_time(argument text, value timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR NOT isfinite(value) THEN
        RAISE EXCEPTION 'invalid %: got %, expected a finite timestamptz', argument, coalesce(value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- cb_next_cron_tick(cron_spec, from_time): the first minute matching cron_spec
-- strictly after from_time, computed in UTC whatever the session TimeZone.
-- Errors: 22023 for an invalid spec (the message names the bad field) and for
-- a NULL or infinite from_time.
CREATE FUNCTION catbird.cb_next_cron_tick(cron_spec text, from_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_cron_time('from_time', from_time);
    RETURN catbird._cb_cron_next(catbird._cb_parse_cron(cron_spec, with_prev => false), from_time);
END
$$;

-- cb_next_cron_ticks(cron_spec, from_time, quantity): the next `quantity`
-- matching minutes after from_time, in order (e.g. to preview a spec).
-- Errors: as cb_next_cron_tick; quantity outside 1-1000 -> 22023.
CREATE FUNCTION catbird.cb_next_cron_ticks(cron_spec text, from_time timestamptz, quantity int = 5)
RETURNS SETOF timestamptz
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_cron catbird.cb_cron := catbird._cb_parse_cron(cron_spec, with_prev => false);
    v_tick timestamptz := from_time;
BEGIN
    PERFORM catbird._cb_check_cron_time('from_time', from_time);
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    IF quantity > 1000 THEN
        RAISE EXCEPTION 'invalid quantity: got %, at most 1000 ticks are listed per call', quantity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..quantity LOOP
        v_tick := catbird._cb_cron_next(v_cron, v_tick);
        RETURN NEXT v_tick;
    END LOOP;
END
$$;

-- catbird 61_schedules: cron schedules for tasks and flows.
--
-- Owns: cb_schedules (one schedule per task or flow, its cron spec parsed
-- once into a cb_cron, see 60_cron) and the schedule verbs (create, delete,
-- enable, disable, list, execute due).
-- Guarantees:
--   * cb_execute_due_*_schedules is safe under any number of concurrent
--     callers: due rows are taken FOR UPDATE SKIP LOCKED and advanced in the
--     same transaction that enqueues their runs, so each tick fires exactly
--     once. Scheduled runs carry the schedule's input and the concurrency key
--     sched:<name>:<tick, ISO-8601 UTC>.
--   * Catch-up after downtime (the ticks between next_run_at and now):
--     skip fires only the latest due tick, one fires the oldest due tick once,
--     all fires every due tick (at most batch_size per schedule per call, the
--     rest on the next call). A schedule with a single due tick fires it under
--     every policy. Ticks missed while a schedule was disabled are dropped
--     when it is enabled again.
--   * Deleting a task or flow deletes its schedule (foreign key, cascade);
--     cb_gc never touches schedules.
--   * Definitions are guarded as elsewhere: the executor takes the shared
--     definition locks of the schedules it is about to fire (in name order)
--     before it locks their rows, so deleting or redefining a task or flow
--     never races a scheduled run into it.
-- Events (data is JSON): catbird.schedule.created|updated|deleted|enabled|disabled
-- with {"task": name} or {"flow": name}.

CREATE TABLE catbird.cb_schedules (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('task', 'flow')),
    task_id          int UNIQUE REFERENCES catbird.cb_tasks (id) ON DELETE CASCADE,
    flow_id          int UNIQUE REFERENCES catbird.cb_flows (id) ON DELETE CASCADE,
    enabled          boolean NOT NULL DEFAULT true,
    catch_up         text NOT NULL CHECK (catch_up IN ('skip', 'one', 'all')),
    next_run_at      timestamptz NOT NULL,     -- the oldest tick not fired yet
    last_run_at      timestamptz,              -- the last tick fired (its scheduled time)
    last_enqueued_at timestamptz,              -- when that tick was fired
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    cron_spec        text NOT NULL,
    input            jsonb NOT NULL,
    cron             catbird.cb_cron NOT NULL,
    CONSTRAINT cb_schedules_target_check CHECK (
        (kind = 'task' AND task_id IS NOT NULL AND flow_id IS NULL)
        OR (kind = 'flow' AND flow_id IS NOT NULL AND task_id IS NULL))
);
-- The due query: enabled schedules of one kind, oldest tick first.
CREATE INDEX cb_schedules_due_idx ON catbird.cb_schedules (kind, next_run_at) WHERE enabled;


-- Checks a schedule's catch_up policy: 'skip', 'one' or 'all'. Returns
-- nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_catch_up(catch_up text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF catch_up IS NULL OR catch_up NOT IN ('skip', 'one', 'all') THEN
        RAISE EXCEPTION 'invalid catch_up %: expected ''skip'' (only the latest missed tick), ''one'' (the oldest missed tick, once) or ''all'' (every missed tick)',
            coalesce(quote_literal(left(catch_up, 200)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- cb_create_task_schedule / cb_create_flow_schedule: creates or updates the
-- schedule of one task or flow (kind), holding the definition's shared lock.
-- next_run_at is kept when the parsed spec is unchanged (so an upsert keeps
-- the backlog) and recomputed when it changes; a disabled schedule stays
-- disabled. Announces catbird.schedule.created or .updated (nothing when the
-- schedule is the same again). Returns nothing. Errors, in this order: 22023
-- for an invalid name, 42704 for an unknown definition, 22023 for an invalid
-- cron spec, a SQL NULL input or an invalid catch_up.
CREATE FUNCTION catbird._cb_create_schedule(kind text, name text, cron_spec text, input jsonb, catch_up text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_cron catbird.cb_cron;
    v_inserted boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    v_id := catbird._cb_definition_id(kind, name);
    v_cron := catbird._cb_parse_cron(cron_spec);
    PERFORM catbird._cb_check_body('input', 'schedule input', input);
    PERFORM catbird._cb_check_catch_up(catch_up);
    -- task_id or flow_id: the column naming the definition, and the conflict arbiter
    EXECUTE format(
        'INSERT INTO catbird.cb_schedules AS s (kind, %1$I, catch_up, next_run_at, created_at, updated_at,'
        '                                       cron_spec, input, cron)'
        ' VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)'
        ' ON CONFLICT (%1$I) DO UPDATE'
        '     SET cron_spec = excluded.cron_spec, input = excluded.input, catch_up = excluded.catch_up,'
        '         cron = excluded.cron, updated_at = excluded.updated_at,'
        '         next_run_at = CASE WHEN s.cron IS NOT DISTINCT FROM excluded.cron THEN s.next_run_at'
        '                            ELSE excluded.next_run_at END'
        '     WHERE (s.cron_spec, s.input, s.catch_up)'
        '           IS DISTINCT FROM (excluded.cron_spec, excluded.input, excluded.catch_up)'
        ' RETURNING s.xmax = 0',
        v_layout.definition_column)
    INTO v_inserted
    USING kind, v_id, catch_up, catbird._cb_cron_next(v_cron, v_now), v_now, cron_spec, input, v_cron;
    IF v_inserted IS NOT NULL THEN  -- NULL: the same schedule again, nothing written
        PERFORM catbird._cb_notify(CASE WHEN v_inserted THEN 'catbird.schedule.created' ELSE 'catbird.schedule.updated' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
END
$$;

-- cb_create_task_schedule(task_name, cron_spec, input, catch_up): creates the
-- task's schedule, or updates it (one schedule per task). Each tick enqueues a
-- run with `input`; catch_up is 'skip', 'one' (default) or 'all'. An unchanged
-- spec keeps next_run_at (and so any backlog); a changed one restarts from the
-- next tick after now. A disabled schedule stays disabled.
-- Errors: 42704 unknown task; 22023 invalid name, cron spec, input or catch_up.
CREATE FUNCTION catbird.cb_create_task_schedule(task_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('task', task_name, cron_spec, input, catch_up) $$;

-- cb_create_flow_schedule(flow_name, cron_spec, input, catch_up): as
-- cb_create_task_schedule, for a flow. Errors: 42704 unknown flow; 22023.
CREATE FUNCTION catbird.cb_create_flow_schedule(flow_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('flow', flow_name, cron_spec, input, catch_up) $$;

-- cb_delete_task_schedule / cb_delete_flow_schedule: deletes the schedule of
-- the named task or flow (kind) and announces catbird.schedule.deleted.
-- Returns false when there is none (also when the definition does not
-- exist); 22023 for an invalid name.
CREATE FUNCTION catbird._cb_delete_schedule(kind text, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    EXECUTE format('DELETE FROM catbird.cb_schedules s USING catbird.%I d'
                   ' WHERE s.%I = d.id AND d.name = $1 RETURNING s.id',
                   v_layout.definitions, v_layout.definition_column)
    INTO v_id USING name;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_notify('catbird.schedule.deleted', jsonb_build_object(kind, name)::text);
    RETURN true;
END
$$;

-- cb_delete_task_schedule(task_name): removes the task's schedule (the task
-- stays). Returns false when it has none (also when the task does not exist).
-- Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_delete_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('task', task_name) $$;

-- cb_delete_flow_schedule(flow_name): as cb_delete_task_schedule, for a flow.
CREATE FUNCTION catbird.cb_delete_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('flow', flow_name) $$;

-- Enables or disables the schedule of the named task or flow; false when
-- there is none. Enabling a schedule whose next tick passed while it was
-- disabled moves it to the next tick after now (ticks missed while disabled
-- are not caught up).
CREATE FUNCTION catbird._cb_set_schedule_enabled(kind text, name text, enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_was boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'invalid enabled: NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.id, s.enabled INTO v_id, v_was
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = _cb_set_schedule_enabled.kind
      AND CASE WHEN _cb_set_schedule_enabled.kind = 'task' THEN t.name ELSE f.name END = _cb_set_schedule_enabled.name
    FOR UPDATE OF s;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    IF v_was IS DISTINCT FROM enabled THEN
        UPDATE catbird.cb_schedules s
        SET enabled = _cb_set_schedule_enabled.enabled, updated_at = v_now,
            next_run_at = CASE WHEN _cb_set_schedule_enabled.enabled AND s.next_run_at <= v_now
                               THEN catbird._cb_cron_next(s.cron, v_now) ELSE s.next_run_at END
        WHERE s.id = v_id;
        PERFORM catbird._cb_notify(CASE WHEN enabled THEN 'catbird.schedule.enabled' ELSE 'catbird.schedule.disabled' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
    RETURN true;
END
$$;

-- cb_enable_task_schedule(task_name) / cb_disable_task_schedule(task_name):
-- a disabled schedule does not fire; enabling it resumes from the next tick
-- after now. Return true when the task has a schedule (whatever its state
-- was), false otherwise. Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_enable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, true) $$;

CREATE FUNCTION catbird.cb_disable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, false) $$;

-- cb_enable_flow_schedule(flow_name) / cb_disable_flow_schedule(flow_name): as
-- for tasks.
CREATE FUNCTION catbird.cb_enable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, true) $$;

CREATE FUNCTION catbird.cb_disable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, false) $$;

-- The ticks a due schedule fires now under its catch-up policy, and the
-- next_run_at it moves to. next_run_at is its oldest unfired tick (<= now).
CREATE FUNCTION catbird._cb_schedule_ticks(cron catbird.cb_cron, next_run_at timestamptz, now timestamptz,
                                           catch_up text, batch_size int,
                                           OUT ticks timestamptz[], OUT next_tick timestamptz)
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_tick timestamptz := next_run_at;
BEGIN
    IF catch_up = 'skip' THEN
        ticks := ARRAY[catbird._cb_cron_prev(cron, now)];  -- the latest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSIF catch_up = 'one' THEN
        ticks := ARRAY[next_run_at];                       -- the oldest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSE
        ticks := '{}';
        WHILE v_tick <= now AND cardinality(ticks) < batch_size LOOP
            ticks := ticks || v_tick;
            v_tick := catbird._cb_cron_next(cron, v_tick);
        END LOOP;
        next_tick := v_tick;  -- still <= now when the batch was full: the rest next call
    END IF;
END
$$;

-- Fires the due schedules of one kind; see cb_execute_due_task_schedules.
CREATE FUNCTION catbird._cb_execute_due_schedules(kind text, names text[], batch_size int, max_schedules int)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids int[];
    v_names text[];
    v_schedule record;
    v_plan record;
    v_keys text[];
    v_done_ids int[] := '{}'::int[];
    v_done_next timestamptz[] := '{}'::timestamptz[];
    v_done_last timestamptz[] := '{}'::timestamptz[];
    v_count int := 0;
    v_started bigint[];
    v_skipped bigint[];
BEGIN
    PERFORM catbird._cb_check_at_least('batch_size', batch_size, 1);
    PERFORM catbird._cb_check_at_least('max_schedules', max_schedules, 1);
    -- Candidates, read without locks; then the definitions' shared locks in
    -- name order (as any writer of runs holds them), then the rows themselves,
    -- skipping those another caller is firing and re-checking that they are
    -- still due (a caller that just fired one has moved its next_run_at on).
    SELECT array_agg(c.id), array_agg(DISTINCT c.name)
    INTO v_ids, v_names
    FROM (SELECT s.id, CASE WHEN s.kind = 'task' THEN t.name ELSE f.name END AS name
          FROM catbird.cb_schedules s
          LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
          LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
          WHERE s.kind = _cb_execute_due_schedules.kind AND s.enabled AND s.next_run_at <= v_now
            AND (names IS NULL OR coalesce(t.name, f.name) = ANY (names))
          ORDER BY s.next_run_at, s.id
          LIMIT max_schedules) c;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM catbird._cb_lock_definition(kind, n) FROM unnest(v_names) AS n ORDER BY n;

    IF kind = 'task' THEN
        -- Tasks, in one statement: lock the due rows, plan their ticks, advance
        -- them, and insert one run per tick the way _cb_insert_task_runs does
        -- (condition evaluated at creation, a live holder of the key wins),
        -- without a call per schedule.
        WITH locked AS (
            SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, t.id AS task_id, t.name,
                   t.condition_expr
            FROM catbird.cb_schedules s JOIN catbird.cb_tasks t ON t.id = s.task_id
            WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
            FOR UPDATE OF s SKIP LOCKED
        ), planned AS (
            SELECT l.*, p.ticks, p.next_tick
            FROM locked l,
                 LATERAL catbird._cb_schedule_ticks(l.cron, l.next_run_at, v_now, l.catch_up, batch_size) p
        ), advanced AS (
            UPDATE catbird.cb_schedules s
            SET next_run_at = p.next_tick, last_run_at = p.ticks[cardinality(p.ticks)], last_enqueued_at = v_now
            FROM planned p
            WHERE s.id = p.id
        ), fired AS (
            SELECT p.task_id, p.name, p.input, u.o,
                   'sched:' || p.name || ':' || to_char(u.k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS key,
                   p.condition_expr IS NULL
                   OR catbird._cb_eval_condition(p.condition_expr, jsonb_build_object('input', p.input)) AS runnable
            FROM planned p, unnest(p.ticks) WITH ORDINALITY AS u(k, o)
        ), inserted AS (
            INSERT INTO catbird.cb_task_runs
                (id, task_id, status, priority, visible_at, created_at, skipped_at, concurrency_key, input)
            SELECT nextval('catbird.cb_task_runs_id_seq'), f.task_id,
                   CASE WHEN f.runnable THEN 'queued' ELSE 'skipped' END, 0, v_now, v_now,
                   CASE WHEN NOT f.runnable THEN v_now END, f.key, f.input
            FROM (SELECT f.* FROM fired f
                  WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                                    WHERE r.task_id = f.task_id AND r.concurrency_key = f.key
                                      AND r.status IN ('queued', 'started'))
                  ORDER BY f.task_id, f.o) f
            ON CONFLICT (task_id, concurrency_key)
                WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started')
                DO NOTHING
            RETURNING id, status
        )
        SELECT count(*)::int, array_agg(i.id) FILTER (WHERE i.status = 'queued'),
               array_agg(i.id) FILTER (WHERE i.status = 'skipped')
        INTO v_count, v_started, v_skipped
        FROM inserted i;
        PERFORM catbird._cb_notify_task_runs('catbird.task.started', v_started);
        PERFORM catbird._cb_notify_task_runs('catbird.task.skipped', v_skipped);
        RETURN v_count;
    END IF;

    -- Flows: one _cb_insert_flow_runs call per schedule (each new run's
    -- first steps are dispatched there).
    FOR v_schedule IN
        SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, f AS flow, f.name
        FROM catbird.cb_schedules s
        JOIN catbird.cb_flows f ON f.id = s.flow_id
        WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED
    LOOP
        v_plan := catbird._cb_schedule_ticks(v_schedule.cron, v_schedule.next_run_at, v_now,
                                             v_schedule.catch_up, batch_size);
        v_keys := ARRAY(SELECT 'sched:' || v_schedule.name || ':'
                               || to_char(k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        FROM unnest(v_plan.ticks) WITH ORDINALITY AS u(k, o) ORDER BY o);
        -- A tick whose key a live run already holds (a replayed tick) enqueues
        -- nothing; the insert below deduplicates any race on top of this.
        v_keys := ARRAY(SELECT k FROM unnest(v_keys) WITH ORDINALITY AS u(k, o)
                        WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                                          WHERE r.flow_id = (v_schedule.flow).id AND r.concurrency_key = u.k
                                            AND r.status IN ('started', 'canceling'))
                        ORDER BY o);
        IF cardinality(v_keys) > 0 THEN
            PERFORM catbird._cb_insert_flow_runs(v_schedule.flow, array_fill(v_schedule.input, ARRAY[cardinality(v_keys)]),
                                                 v_keys, NULL, NULL, 0, NULL);
        END IF;
        v_count := v_count + cardinality(v_keys);
        v_done_ids := v_done_ids || v_schedule.id;
        v_done_next := v_done_next || v_plan.next_tick;
        v_done_last := v_done_last || v_plan.ticks[cardinality(v_plan.ticks)];
    END LOOP;

    UPDATE catbird.cb_schedules s
    SET next_run_at = u.next_tick, last_run_at = u.last_tick, last_enqueued_at = v_now
    FROM unnest(v_done_ids, v_done_next, v_done_last) AS u(id, next_tick, last_tick)
    WHERE s.id = u.id;
    RETURN v_count;
END
$$;

-- cb_execute_due_task_schedules(task_names, batch_size, max_schedules): fires
-- every enabled task schedule whose next tick has come (cb_now()), for the
-- given tasks or all (NULL), and advances each per its catch-up policy:
-- 'skip' enqueues the latest due tick only, 'one' the oldest due tick once,
-- 'all' every due tick, at most batch_size per schedule per call (the rest on
-- the next call). At most max_schedules schedules are fired per call, oldest
-- tick first (call again for the rest). Safe to call concurrently from any
-- number of sessions: each tick fires exactly once. Each tick enqueues one
-- run with the schedule's input and the concurrency key sched:<task>:<tick>
-- (tick in ISO-8601 UTC, e.g. sched:report:2030-01-01T09:00:00Z); a tick
-- whose key a queued or started run still holds enqueues nothing. Returns the
-- number of runs enqueued.
-- Errors: 22023 batch_size or max_schedules < 1.
CREATE FUNCTION catbird.cb_execute_due_task_schedules(task_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('task', task_names, batch_size, max_schedules) $$;

-- cb_execute_due_flow_schedules(flow_names, batch_size, max_schedules): as
-- cb_execute_due_task_schedules, for flows (concurrency key sched:<flow>:<tick>).
CREATE FUNCTION catbird.cb_execute_due_flow_schedules(flow_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('flow', flow_names, batch_size, max_schedules) $$;

-- cb_list_task_schedules / cb_list_flow_schedules: every schedule of one
-- kind ('task' or 'flow'), with the name of its task or flow, ordered by
-- next_run_at, then name. Raises nothing.
CREATE FUNCTION catbird._cb_list_schedules(kind text)
RETURNS TABLE (name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(t.name, f.name), s.cron_spec, s.next_run_at, s.last_run_at, s.last_enqueued_at, s.enabled,
           s.catch_up, s.created_at, s.updated_at, s.input
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = $1
    ORDER BY s.next_run_at, coalesce(t.name, f.name)
$$;

-- cb_list_task_schedules(): every task schedule (TaskScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_task_schedules()
RETURNS TABLE (task_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('task') $$;

-- cb_list_flow_schedules(): every flow schedule (FlowScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_flow_schedules()
RETURNS TABLE (flow_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('flow') $$;
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
-- catbird 75_health: the health report and the metrics a scrape reads.
--
-- Owns: cb_health (one jsonb report for humans and monitoring) and
-- cb_metrics (gauges read from the database at scrape time). Reads the
-- engine tables and the server's statistics views; writes nothing.
-- Guarantees:
--   * cb_health returns {"healthy", "status", "checked_at", "thresholds",
--     "checks": [{check, subject, value, unit, threshold, status, message,
--     detail}]}. status is ok, warning (value above its threshold) or
--     critical (above critical_factor times it); the report's status is the
--     worst of its checks and healthy means every check is ok. Checks:
--       dead_tuples     per table of schema catbird: dead / (live + dead)
--                       tuples (pg_stat_user_tables), with the last vacuum
--                       and autovacuum; a table with fewer than
--                       dead_tuple_min dead tuples is ok whatever its ratio.
--       xmin_horizon    the oldest transaction of this database that holds
--                       back vacuum: another session's snapshot or
--                       transaction id (pg_stat_activity backend_xmin,
--                       backend_xid; aged from its transaction start) or a
--                       prepared transaction; one row, subject '' when
--                       there is none. A standby's hot_standby_feedback
--                       (a walsender, no transaction start) is left to the
--                       replication_slot check when the standby uses a slot.
--       replication_slot  per slot holding an xmin or catalog_xmin: its age
--                       in transactions; warning while the slot is inactive.
--       oldest_queued   per queue (visible messages), task (queued runs
--                       due) and flow (queued step runs and map items due):
--                       how long the oldest has waited since it became
--                       visible.
--       lapsed_leases   per task and flow: how long ago the lease of the
--                       most overdue started run (step run, map item) ended;
--                       claims rescue such runs, so one lapsed for longer
--                       than lease_overdue means no worker claims them.
--       worker_heartbeat  per registered worker: time since its heartbeat.
--     Ages of engine rows use the engine clock (cb_now); ages of server
--     sessions and prepared transactions use clock_timestamp().
--   * What a session sees of pg_stat_activity depends on the role that owns
--     the extension (cb_health runs as that owner): a superuser owner, or
--     one in pg_read_all_stats, sees every session's backend_xmin; any other
--     owner sees only its own sessions', so the xmin check then misses the
--     transactions of other roles (detail.hidden_sessions counts the
--     sessions it could not see). Nothing is granted here for it.
--   * cb_metrics returns (metric, labels, value) rows: queue depths, active
--     runs by status, oldest queued age, and the status of every cb_health
--     check under default thresholds (0 ok, 1 warning, 2 critical). Only
--     active runs are counted (the partial claim indexes hold them), so a
--     scrape never scans finished history.

-- The status of a measured value: critical above critical_factor times the
-- threshold, warning above the threshold, else ok (NULL value or threshold:
-- ok). Raises nothing.
CREATE FUNCTION catbird._cb_health_status(value double precision, threshold double precision,
                                          critical_factor double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN value IS NULL OR threshold IS NULL THEN 'ok'
                WHEN value > threshold * critical_factor THEN 'critical'
                WHEN value > threshold THEN 'warning'
                ELSE 'ok' END
$$;

-- Seconds in an interval, rounded to milliseconds. Raises nothing.
CREATE FUNCTION catbird._cb_seconds(value interval) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT round(extract(epoch FROM value), 3)::double precision $$;

-- Checks a health threshold interval: not NULL, not negative, at most 1000
-- years. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_threshold(argument text, value interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR value < interval '0' THEN
        RAISE EXCEPTION 'invalid %: got %, expected an interval of at least 0 (e.g. ''5 minutes'')',
            argument, coalesce(value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval(argument, value);
END
$$;

-- The health report (see the header): every check with its value, threshold
-- and status. dead_tuple_ratio in [0, 1]; dead_tuple_min >= 0; xmin_age,
-- queued_age, lease_overdue and heartbeat_age intervals >= 0;
-- critical_factor >= 1. Returns jsonb; 22023 for a threshold out of range.
CREATE FUNCTION catbird.cb_health(dead_tuple_ratio double precision = 0.2, dead_tuple_min bigint = 1000,
                                  xmin_age interval = '5 minutes', queued_age interval = '5 minutes',
                                  lease_overdue interval = '1 minute', heartbeat_age interval = '1 minute',
                                  critical_factor double precision = 3)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz;
    v_checks jsonb;
    v_status text;
BEGIN
    IF dead_tuple_ratio IS NULL OR NOT (dead_tuple_ratio BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'invalid dead_tuple_ratio: got %, expected a fraction between 0 and 1 (e.g. 0.2)',
            coalesce(dead_tuple_ratio::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_at_least('dead_tuple_min', dead_tuple_min, 0);
    PERFORM catbird._cb_check_threshold('xmin_age', xmin_age);
    PERFORM catbird._cb_check_threshold('queued_age', queued_age);
    PERFORM catbird._cb_check_threshold('lease_overdue', lease_overdue);
    PERFORM catbird._cb_check_threshold('heartbeat_age', heartbeat_age);
    IF critical_factor IS NULL OR NOT (critical_factor BETWEEN 1 AND 1000000) THEN
        RAISE EXCEPTION 'invalid critical_factor: got %, expected a number from 1 to 1000000 (critical above critical_factor x threshold)',
            coalesce(critical_factor::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_now := catbird.cb_now();

    WITH tables AS (
        SELECT s.relname::text AS subject, s.n_live_tup AS live, s.n_dead_tup AS dead,
               CASE WHEN s.n_live_tup + s.n_dead_tup = 0 THEN 0
                    ELSE round(s.n_dead_tup::numeric / (s.n_live_tup + s.n_dead_tup), 4)::double precision END AS ratio,
               s.last_vacuum, s.last_autovacuum
        FROM pg_catalog.pg_stat_user_tables s
        WHERE s.schemaname = 'catbird'
    ),
    dead AS (
        SELECT 'dead_tuples' AS "check", t.subject, t.ratio AS value, 'ratio' AS unit,
               dead_tuple_ratio AS threshold,
               CASE WHEN t.dead < dead_tuple_min THEN 'ok'
                    ELSE catbird._cb_health_status(t.ratio, dead_tuple_ratio, critical_factor) END AS status,
               format('%s dead of %s tuples; last vacuum %s, last autovacuum %s', t.dead, t.live + t.dead,
                      coalesce(t.last_vacuum::text, 'never'), coalesce(t.last_autovacuum::text, 'never')) AS message,
               jsonb_build_object('dead_tuples', t.dead, 'live_tuples', t.live,
                                  'last_vacuum', t.last_vacuum, 'last_autovacuum', t.last_autovacuum) AS detail
        FROM tables t
    ),
    holders AS (
        SELECT format('pid %s', a.pid) AS subject,
               clock_timestamp() - a.xact_start AS held_for,
               greatest(pg_catalog.age(a.backend_xmin), pg_catalog.age(a.backend_xid)) AS xid_age,
               format('pid %s (role %s, application %s, %s) holds a snapshot since %s',
                      a.pid, coalesce(a.usename::text, '?'), coalesce(nullif(a.application_name, ''), '-'),
                      coalesce(a.state, a.backend_type), a.xact_start) AS message
        FROM pg_catalog.pg_stat_activity a
        WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.xact_start IS NOT NULL
          AND a.pid <> pg_catalog.pg_backend_pid()
          AND (a.datname = current_database() OR a.datid IS NULL OR a.datid = 0)
        UNION ALL
        SELECT format('prepared %s', p.gid), clock_timestamp() - p.prepared, pg_catalog.age(p.transaction),
               format('prepared transaction %L (owner %s) waits for COMMIT PREPARED or ROLLBACK PREPARED since %s',
                      p.gid, p.owner, p.prepared)
        FROM pg_catalog.pg_prepared_xacts p
        WHERE p.database = current_database()
    ),
    oldest_holder AS (
        SELECT h.* FROM holders h ORDER BY h.held_for DESC LIMIT 1
    ),
    xmin AS (
        SELECT 'xmin_horizon' AS "check", coalesce(o.subject, '') AS subject,
               coalesce(catbird._cb_seconds(o.held_for), 0) AS value, 'seconds' AS unit,
               catbird._cb_seconds(xmin_age) AS threshold,
               catbird._cb_health_status(coalesce(catbird._cb_seconds(o.held_for), 0),
                                         catbird._cb_seconds(xmin_age), critical_factor) AS status,
               coalesce(o.message, 'no other transaction holds back vacuum') AS message,
               jsonb_build_object('xid_age', o.xid_age,
                                  'holders', (SELECT count(*) FROM holders),
                                  'hidden_sessions', (SELECT count(*) FROM pg_catalog.pg_stat_activity a
                                                      WHERE a.query = '<insufficient privilege>')) AS detail
        FROM (SELECT 1) one LEFT JOIN oldest_holder o ON true
    ),
    slots AS (
        SELECT 'replication_slot' AS "check", s.slot_name::text AS subject,
               greatest(pg_catalog.age(s.xmin), pg_catalog.age(s.catalog_xmin))::double precision AS value,
               'transactions' AS unit, NULL::double precision AS threshold,
               CASE WHEN s.active THEN 'ok' ELSE 'warning' END AS status,
               format('%s slot %s holds xmin %s, catalog_xmin %s', CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
                      s.slot_name, coalesce(s.xmin::text, '-'), coalesce(s.catalog_xmin::text, '-')) AS message,
               jsonb_build_object('active', s.active, 'slot_type', s.slot_type) AS detail
        FROM pg_catalog.pg_replication_slots s
        WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
    ),
    waiting AS (
        SELECT 'queue:' || q.name AS subject, q.oldest_visible_at AS since, q.visible AS n
        FROM catbird._cb_queue_info(NULL) q
        UNION ALL
        SELECT 'task:' || t.name, r.since, coalesce(r.n, 0)
        FROM catbird.cb_tasks t
        LEFT JOIN (SELECT x.task_id, min(x.visible_at) AS since, count(*) AS n
                   FROM catbird.cb_task_runs x
                   WHERE x.status = 'queued' AND x.visible_at <= v_now
                     AND (x.expires_at IS NULL OR x.expires_at > v_now)
                   GROUP BY x.task_id) r ON r.task_id = t.id
        UNION ALL
        SELECT 'flow:' || f.name, min(w.since), coalesce(sum(w.n), 0)
        FROM catbird.cb_flows f
        LEFT JOIN (SELECT sr.flow_id, min(sr.visible_at) AS since, count(*) AS n
                   FROM catbird.cb_step_runs sr
                   WHERE sr.status = 'queued' AND sr.visible_at <= v_now
                   GROUP BY sr.flow_id
                   UNION ALL
                   SELECT m.flow_id, min(m.visible_at), count(*)
                   FROM catbird.cb_map_tasks m
                   WHERE m.status = 'queued' AND m.visible_at <= v_now
                   GROUP BY m.flow_id) w ON w.flow_id = f.id
        GROUP BY f.id, f.name
    ),
    queued AS (
        SELECT 'oldest_queued' AS "check", w.subject,
               coalesce(catbird._cb_seconds(greatest(v_now - w.since, interval '0')), 0) AS value,
               'seconds' AS unit, catbird._cb_seconds(queued_age) AS threshold,
               catbird._cb_health_status(coalesce(catbird._cb_seconds(greatest(v_now - w.since, interval '0')), 0),
                                         catbird._cb_seconds(queued_age), critical_factor) AS status,
               CASE WHEN w.since IS NULL THEN 'nothing waiting'
                    ELSE format('%s waiting, the oldest visible since %s', w.n, w.since) END AS message,
               jsonb_build_object('waiting', w.n, 'oldest_visible_at', w.since) AS detail
        FROM waiting w
    ),
    lapsed_runs AS (
        SELECT 'task:' || t.name AS subject, r.id, 'run' AS kind, r.visible_at
        FROM catbird.cb_tasks t
        JOIN catbird.cb_task_runs r ON r.task_id = t.id AND r.status = 'started' AND r.visible_at <= v_now
        UNION ALL
        SELECT 'flow:' || f.name, sr.id, 'step run ' || sr.step_name, sr.visible_at
        FROM catbird.cb_flows f
        JOIN catbird.cb_step_runs sr ON sr.flow_id = f.id AND sr.status = 'started' AND sr.visible_at <= v_now
        UNION ALL
        SELECT 'flow:' || f.name, m.id, 'map item of ' || m.step_name, m.visible_at
        FROM catbird.cb_flows f
        JOIN catbird.cb_map_tasks m ON m.flow_id = f.id AND m.status = 'started' AND m.visible_at <= v_now
    ),
    lapsed_by_subject AS (
        SELECT l.subject, count(*) AS n, min(l.visible_at) AS since,
               (array_agg(l.kind || ' ' || l.id ORDER BY l.visible_at, l.id))[1:10] AS examples
        FROM lapsed_runs l GROUP BY l.subject
    ),
    subjects AS (
        SELECT 'task:' || t.name AS subject FROM catbird.cb_tasks t
        UNION ALL
        SELECT 'flow:' || f.name FROM catbird.cb_flows f
    ),
    leases AS (
        SELECT 'lapsed_leases' AS "check", s.subject,
               coalesce(catbird._cb_seconds(v_now - l.since), 0) AS value, 'seconds' AS unit,
               catbird._cb_seconds(lease_overdue) AS threshold,
               CASE WHEN l.since IS NULL OR v_now - l.since <= lease_overdue THEN 'ok'
                    ELSE catbird._cb_health_status(catbird._cb_seconds(v_now - l.since),
                                                   catbird._cb_seconds(lease_overdue), critical_factor) END AS status,
               CASE WHEN l.since IS NULL THEN 'no started run past its lease'
                    ELSE format('%s started run(s) past their lease, the oldest lapsed at %s (%s); a worker that claims them rescues them',
                                l.n, l.since, array_to_string(l.examples, ', ')) END AS message,
               jsonb_build_object('runs', coalesce(l.n, 0), 'oldest_lease_end', l.since,
                                  'examples', coalesce(to_jsonb(l.examples), '[]')) AS detail
        FROM subjects s LEFT JOIN lapsed_by_subject l ON l.subject = s.subject
    ),
    workers AS (
        SELECT 'worker_heartbeat' AS "check", w.id::text AS subject,
               catbird._cb_seconds(greatest(v_now - w.last_heartbeat_at, interval '0')) AS value, 'seconds' AS unit,
               catbird._cb_seconds(heartbeat_age) AS threshold,
               catbird._cb_health_status(catbird._cb_seconds(greatest(v_now - w.last_heartbeat_at, interval '0')),
                                         catbird._cb_seconds(heartbeat_age), critical_factor) AS status,
               format('last heartbeat at %s (started %s)', w.last_heartbeat_at, w.started_at) AS message,
               jsonb_build_object('last_heartbeat_at', w.last_heartbeat_at, 'started_at', w.started_at,
                                  'task_handlers', w.task_handlers, 'step_handlers', w.step_handlers) AS detail
        FROM catbird.cb_workers w
    ),
    all_checks AS (
        SELECT 1 AS ord, * FROM dead
        UNION ALL SELECT 2, * FROM xmin
        UNION ALL SELECT 3, * FROM slots
        UNION ALL SELECT 4, * FROM queued
        UNION ALL SELECT 5, * FROM leases
        UNION ALL SELECT 6, * FROM workers
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'check', c."check", 'subject', c.subject, 'value', c.value, 'unit', c.unit,
               'threshold', c.threshold, 'status', c.status, 'message', c.message, 'detail', c.detail)
               ORDER BY c.ord, c.subject), '[]'),
           CASE max(CASE c.status WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)
               WHEN 2 THEN 'critical' WHEN 1 THEN 'warning' ELSE 'ok' END
    INTO v_checks, v_status
    FROM all_checks c;

    RETURN jsonb_build_object(
        'healthy', v_status = 'ok',
        'status', v_status,
        'checked_at', v_now,
        'thresholds', jsonb_build_object(
            'dead_tuple_ratio', dead_tuple_ratio, 'dead_tuple_min', dead_tuple_min,
            'xmin_age', catbird._cb_seconds(xmin_age), 'queued_age', catbird._cb_seconds(queued_age),
            'lease_overdue', catbird._cb_seconds(lease_overdue),
            'heartbeat_age', catbird._cb_seconds(heartbeat_age), 'critical_factor', critical_factor),
        'checks', v_checks);
END
$$;

-- Gauges for a Prometheus scrape (see the header), as (metric, labels,
-- value) rows ordered by metric and labels:
--   catbird_queue_messages{queue}              messages in the queue
--   catbird_queue_visible_messages{queue}      of them readable now
--   catbird_runs{kind, name, status}           active runs: task runs queued
--                                              or started, flow runs started or canceling
--   catbird_oldest_queued_seconds{kind, name}  age of the oldest waiting
--                                              message / queued run (0: none)
--   catbird_health_status{check, subject}      0 ok, 1 warning, 2 critical
--   catbird_health_value{check, subject}       the measured value of the check
--   catbird_workers                            registered workers
-- Raises nothing.
CREATE FUNCTION catbird.cb_metrics()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_health jsonb := catbird.cb_health();
BEGIN
    RETURN QUERY
    WITH queues AS MATERIALIZED (
        SELECT q.name, q.depth, q.visible FROM catbird._cb_queue_info(NULL) q
    ),
    rows AS (
        SELECT 'catbird_queue_messages' AS metric, jsonb_build_object('queue', q.name) AS labels,
               q.depth::double precision AS value
        FROM queues q
        UNION ALL
        SELECT 'catbird_queue_visible_messages', jsonb_build_object('queue', q.name), q.visible::double precision
        FROM queues q
        UNION ALL
        SELECT 'catbird_runs', jsonb_build_object('kind', 'task', 'name', t.name, 'status', st.status),
               coalesce(c.n, 0)::double precision
        FROM catbird.cb_tasks t CROSS JOIN (VALUES ('queued'), ('started')) st(status)
        LEFT JOIN (SELECT r.task_id, r.status, count(*) AS n FROM catbird.cb_task_runs r
                   WHERE r.status IN ('queued', 'started') GROUP BY r.task_id, r.status) c
               ON c.task_id = t.id AND c.status = st.status
        UNION ALL
        SELECT 'catbird_runs', jsonb_build_object('kind', 'flow', 'name', f.name, 'status', st.status),
               coalesce(c.n, 0)::double precision
        FROM catbird.cb_flows f CROSS JOIN (VALUES ('started'), ('canceling')) st(status)
        LEFT JOIN (SELECT r.flow_id, r.status, count(*) AS n FROM catbird.cb_flow_runs r
                   WHERE r.status IN ('started', 'canceling') GROUP BY r.flow_id, r.status) c
               ON c.flow_id = f.id AND c.status = st.status
        UNION ALL
        SELECT 'catbird_oldest_queued_seconds',
               jsonb_build_object('kind', split_part(c->>'subject', ':', 1),
                                  'name', substr(c->>'subject', length(split_part(c->>'subject', ':', 1)) + 2)),
               (c->>'value')::double precision
        FROM jsonb_array_elements(v_health->'checks') c
        WHERE c->>'check' = 'oldest_queued'
        UNION ALL
        SELECT 'catbird_health_status', jsonb_build_object('check', c->>'check', 'subject', c->>'subject'),
               CASE c->>'status' WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END
        FROM jsonb_array_elements(v_health->'checks') c
        UNION ALL
        SELECT 'catbird_health_value', jsonb_build_object('check', c->>'check', 'subject', c->>'subject'),
               (c->>'value')::double precision
        FROM jsonb_array_elements(v_health->'checks') c
        UNION ALL
        SELECT 'catbird_workers', '{}'::jsonb, (SELECT count(*) FROM catbird.cb_workers)::double precision
    )
    SELECT r.metric, r.labels, r.value FROM rows r ORDER BY r.metric, r.labels::text;
END
$$;
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
--   catbird.flow.completed     the last step ends it, or a step       {"flow","run_id"|"run_ids"}
--                              completes it early (cb_complete_steps:
--                              one event for the runs a batch ended)
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
-- catbird 82_wire: the Wire nodes and who is connected to which topic.
--
-- Owns: cb_wire_nodes, cb_wire_presence and the cb_wire_* functions. A Wire
-- node is one process relaying events to its browser connections (the Python
-- catbird.Wire); it registers with a heartbeat and records, for every
-- connection that carries an identity, one presence row per subscribed topic
-- or pattern. cb_wire_presence(topic) answers "who is here" across all nodes.
-- Guarantees:
--   * Both tables are UNLOGGED: they describe live processes, not user state,
--     so they cost no WAL and a server crash empties them (every node
--     re-registers and re-joins on its next heartbeat, see cb_wire_heartbeat).
--   * A node whose last heartbeat is older than _cb_wire_stale_after() (15 s
--     by cb_now()) is dead: cb_wire_presence ignores it at once, and cb_gc
--     deletes it (stale_wire_nodes_deleted) with its presence rows (cascade).
--   * Joining and leaving announce catbird.wire.presence
--     {"node_id","identity","topics","joined"} on the events channel, so
--     other nodes and listeners can refresh a "who is here" view.
--   * Every input is checked before the first write (22023): ids not NULL,
--     identities of 1 to 255 characters, topics that are valid patterns, at
--     most 100 per connection.

CREATE UNLOGGED TABLE catbird.cb_wire_nodes (
    id                uuid PRIMARY KEY,
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL
);

CREATE UNLOGGED TABLE catbird.cb_wire_presence (
    subscriber_id uuid NOT NULL,
    topic         text NOT NULL,
    identity      text NOT NULL,
    node_id       uuid NOT NULL REFERENCES catbird.cb_wire_nodes (id) ON DELETE CASCADE,
    connected_at  timestamptz NOT NULL,
    PRIMARY KEY (subscriber_id, topic)
);
CREATE INDEX cb_wire_presence_topic_idx ON catbird.cb_wire_presence (topic, identity);
CREATE INDEX cb_wire_presence_node_idx ON catbird.cb_wire_presence (node_id);

-- How long a node may stay silent before it counts as gone: three missed
-- heartbeats at the Wire's default interval of 5 s. Raises nothing.
CREATE FUNCTION catbird._cb_wire_stale_after() RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$
    SELECT interval '15 seconds'
$$;

-- Checks a node or subscriber id (argument names it): not NULL. Returns
-- nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_wire_check_id(argument text, id uuid) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'invalid %: NULL, expected a uuid', argument USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Registers a Wire node or records its heartbeat (cb_now()). Returns true when
-- the node was not registered (its first heartbeat, or the first after cb_gc
-- removed it as stale or a crash emptied the table): the node must then join
-- its connections' presence again. 22023 for a NULL id.
CREATE FUNCTION catbird.cb_wire_heartbeat(node_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_inserted boolean;
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    INSERT INTO catbird.cb_wire_nodes AS n (id, started_at, last_heartbeat_at)
    VALUES (cb_wire_heartbeat.node_id, v_now, v_now)
    ON CONFLICT ON CONSTRAINT cb_wire_nodes_pkey DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at
    RETURNING (n.xmax = 0) INTO v_inserted;
    RETURN v_inserted;
END
$$;

-- Records that a connection (subscriber_id) of a node is present, as identity,
-- on each of topics (topics or patterns, as the connection subscribed them),
-- registering the node if needed (as cb_wire_heartbeat does). Joining again is
-- harmless. Announces catbird.wire.presence with "joined": true. Returns how
-- many presence rows were added; 22023 for NULL ids, an identity that is NULL,
-- empty or over 255 characters, no topics, more than 100, or an invalid one.
CREATE FUNCTION catbird.cb_wire_join(node_id uuid, subscriber_id uuid, identity text, topics text[]) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_topic text;
    v_added int;
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    PERFORM catbird._cb_wire_check_id('subscriber_id', subscriber_id);
    IF identity IS NULL OR length(identity) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid identity %: expected 1 to 255 characters', catbird._cb_quote_arg(identity)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(topics), 0) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid topics: got %, expected 1 to 100 topics or patterns',
            coalesce(cardinality(topics)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH v_topic IN ARRAY topics LOOP
        PERFORM catbird._cb_check_pattern(v_topic);
    END LOOP;

    PERFORM catbird.cb_wire_heartbeat(node_id);
    INSERT INTO catbird.cb_wire_presence AS p (subscriber_id, topic, identity, node_id, connected_at)
    SELECT cb_wire_join.subscriber_id, t.topic, cb_wire_join.identity, cb_wire_join.node_id, v_now
    FROM (SELECT DISTINCT u.topic FROM unnest(topics) AS u(topic)) t
    ON CONFLICT ON CONSTRAINT cb_wire_presence_pkey DO NOTHING;
    GET DIAGNOSTICS v_added = ROW_COUNT;
    PERFORM catbird._cb_notify('catbird.wire.presence', jsonb_build_object(
        'node_id', node_id, 'identity', identity, 'topics', to_jsonb(topics), 'joined', true)::text);
    RETURN v_added;
END
$$;

-- Removes a connection's presence rows (all its topics) on a node and
-- announces catbird.wire.presence with "joined": false when there were any.
-- Returns how many rows were removed; 22023 for NULL ids.
CREATE FUNCTION catbird.cb_wire_leave(node_id uuid, subscriber_id uuid) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_identity text;
    v_topics text[];
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    PERFORM catbird._cb_wire_check_id('subscriber_id', subscriber_id);
    WITH gone AS (
        DELETE FROM catbird.cb_wire_presence p
        WHERE p.node_id = cb_wire_leave.node_id AND p.subscriber_id = cb_wire_leave.subscriber_id
        RETURNING p.identity, p.topic
    )
    SELECT min(g.identity), array_agg(g.topic ORDER BY g.topic) INTO v_identity, v_topics FROM gone g;
    IF v_topics IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM catbird._cb_notify('catbird.wire.presence', jsonb_build_object(
        'node_id', node_id, 'identity', v_identity, 'topics', to_jsonb(v_topics), 'joined', false)::text);
    RETURN cardinality(v_topics);
END
$$;

-- The distinct identities connected to topic (exactly as the connections
-- subscribed it: a topic or a pattern) on live nodes (heartbeat within
-- _cb_wire_stale_after() of cb_now()), in order. 22023 for an invalid topic.
CREATE FUNCTION catbird.cb_wire_presence(topic text) RETURNS SETOF text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_pattern(topic);
    RETURN QUERY
        SELECT DISTINCT p.identity
        FROM catbird.cb_wire_presence p
        JOIN catbird.cb_wire_nodes n ON n.id = p.node_id
        WHERE p.topic = cb_wire_presence.topic
          AND n.last_heartbeat_at >= catbird.cb_now() - catbird._cb_wire_stale_after()
        ORDER BY p.identity;
END
$$;

-- Unregisters a Wire node that shuts down, with all its presence rows.
-- Returns false when it was not registered; 22023 for a NULL id.
CREATE FUNCTION catbird.cb_wire_stop(node_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    DELETE FROM catbird.cb_wire_nodes n WHERE n.id = cb_wire_stop.node_id;
    RETURN FOUND;
END
$$;
-- catbird 84_inbox: the durable per-identity inbox (notifications).
--
-- Owns: cb_notifications, cb_notify_durable, cb_read_notifications,
-- cb_mark_seen_until, cb_mark_seen, and the expiry sweep cb_gc calls
-- (_cb_delete_expired_notifications). Function and column names are the Go
-- library's, so both can share one database.
--
-- An inbox is keyed by an identity (any non-empty text the application
-- chooses: a user id, a session, a tenant). A notification is a prompt to look
-- at something, not the thing itself: a topic, an optional text message, an
-- optional collapse key and an optional expiry. Unlike cb_notify (a NOTIFY that
-- is lost when nobody listens) it is a logged row, read by whoever asks, as
-- often as needed, until it is marked seen.
-- Guarantees:
--   * id is the cursor: "what arrived since I last looked" is
--     cb_read_notifications(identity, after_id => last id seen). Within one
--     identity ids become visible in increasing order: cb_notify_durable holds
--     a per-identity transaction lock from before it draws the id until the
--     caller's transaction ends, so a row with a smaller id of that identity
--     is always committed (or rolled back) before a larger one. A reader at
--     cursor N never later meets a row of that identity below N, and
--     cb_mark_seen_until(identity, N) never marks a row the reader could not
--     have read. (Ids of different identities still commit in any order; a
--     cursor is per identity.) The price: appends to one identity are
--     serialized until each appending transaction ends, so append in short
--     transactions, and a transaction that notifies several identities
--     should do so in a fixed order (say sorted), or PostgreSQL may end one
--     of two crossing transactions with a deadlock (40P01).
--   * A collapse key keeps the newest: appending with one marks the earlier
--     unseen rows of that identity and key seen first, in the same
--     transaction. At most one unseen row per (identity, collapse_key) exists
--     at any time, enforced by a partial unique index; under the identity lock
--     concurrent appends in READ COMMITTED line up, and under REPEATABLE READ
--     or SERIALIZABLE the loser gets 40001 (retry) instead of a second row.
--   * Reads return unseen, unexpired rows only and mark nothing; marking is
--     idempotent (a row already seen is not marked or counted again).
--   * Expiry uses the engine clock (cb_now()): an expired row is never read and
--     cb_gc deletes it (notifications_deleted). Rows without expires_at stay
--     until deleted by hand, seen or not: give notifications an expiry when
--     their history is not worth keeping.
--   * Any role that may call these functions reads and marks any identity's
--     inbox: which identity a caller may use is the application's decision.
--   * Every identity and collapse key is bounded (1024 bytes: they are
--     indexed), the topic follows the topic grammar; the message is free text.

CREATE TABLE catbird.cb_notifications (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity     text NOT NULL,
    topic        text NOT NULL,
    collapse_key text,
    message      text,
    created_at   timestamptz NOT NULL,
    seen_at      timestamptz,
    expires_at   timestamptz,
    CONSTRAINT cb_notifications_expires_at_check CHECK (expires_at > created_at)
);
-- The read path and cb_mark_seen_until: an identity's unseen rows by cursor.
CREATE INDEX cb_notifications_unseen_idx ON catbird.cb_notifications (identity, id) WHERE seen_at IS NULL;
CREATE INDEX cb_notifications_expiry_idx ON catbird.cb_notifications (expires_at) WHERE expires_at IS NOT NULL;
-- Keep-newest collapse: at most one unseen row per identity and key.
CREATE UNIQUE INDEX cb_notifications_collapse_idx ON catbird.cb_notifications (identity, collapse_key)
    WHERE collapse_key IS NOT NULL AND seen_at IS NULL;

-- Checks an inbox identity: not NULL, not empty, at most 1024 bytes.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_identity(identity text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF identity IS NULL OR identity = '' OR octet_length(identity) > 1024 THEN
        RAISE EXCEPTION 'invalid identity %: an identity names one inbox (a user id, a session, ...); it must be non-empty text of at most 1024 bytes',
            catbird._cb_quote_arg(identity)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Appends a notification to identity's inbox. With a collapse_key, the
-- identity's earlier unseen rows with that key are marked seen first (keep
-- newest). Returns the new row's id, the cursor value. 22023 for an invalid
-- identity or topic, an empty or over-1024-byte collapse_key (NULL means
-- none), or an expires_at that is infinite or not later than cb_now(); 40001
-- when a REPEATABLE READ or SERIALIZABLE transaction raced another append with
-- the same collapse key (retry it); 40P01 when two transactions append to the
-- same identities in crossing orders (see the header).
CREATE FUNCTION catbird.cb_notify_durable(identity text, topic text, message text = NULL,
                                          collapse_key text = NULL, expires_at timestamptz = NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
-- The ON CONFLICT target names the columns identity and collapse_key, which
-- are also parameter names; parameters are always written qualified.
#variable_conflict use_column
DECLARE
    v_now timestamptz;
    v_id bigint;
BEGIN
    PERFORM catbird._cb_check_identity(cb_notify_durable.identity);
    PERFORM catbird._cb_check_topic(cb_notify_durable.topic);
    IF cb_notify_durable.collapse_key = '' OR octet_length(cb_notify_durable.collapse_key) > 1024 THEN
        RAISE EXCEPTION 'invalid collapse_key %: a collapse key is non-empty text of at most 1024 bytes (NULL for none)',
            catbird._cb_quote_arg(cb_notify_durable.collapse_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('expires_at', cb_notify_durable.expires_at);

    -- Held until the caller's transaction ends, taken before the id is drawn:
    -- this identity's ids commit in order (see the header). The kind 'inbox'
    -- is no definition's, so the keys never meet a queue, task or flow lock.
    PERFORM catbird._cb_lock_definition('inbox', cb_notify_durable.identity, exclusive => true);
    -- Read after the wait, so created_at follows id order within an identity.
    v_now := catbird.cb_now();
    IF cb_notify_durable.expires_at <= v_now THEN
        RAISE EXCEPTION 'invalid expires_at: % is not in the future; the engine clock reads %', cb_notify_durable.expires_at, v_now
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A notification that has already expired would never be read; leave expires_at NULL for none.';
    END IF;

    IF cb_notify_durable.collapse_key IS NOT NULL THEN
        UPDATE catbird.cb_notifications n SET seen_at = v_now
        WHERE n.identity = cb_notify_durable.identity
          AND n.collapse_key = cb_notify_durable.collapse_key
          AND n.seen_at IS NULL;
    END IF;
    INSERT INTO catbird.cb_notifications AS n (identity, topic, collapse_key, message, created_at, expires_at)
    VALUES (cb_notify_durable.identity, cb_notify_durable.topic, cb_notify_durable.collapse_key,
            cb_notify_durable.message, v_now, cb_notify_durable.expires_at)
    ON CONFLICT (identity, collapse_key) WHERE collapse_key IS NOT NULL AND seen_at IS NULL DO NOTHING
    RETURNING n.id INTO v_id;
    IF v_id IS NULL THEN
        -- Only a writer that bypassed this function (a direct INSERT) can
        -- leave an unseen row with the key that the UPDATE above did not see.
        RAISE EXCEPTION 'an unseen notification with collapse key % of identity % was written concurrently',
            catbird._cb_quote_arg(cb_notify_durable.collapse_key), catbird._cb_quote_arg(cb_notify_durable.identity)
            USING ERRCODE = 'serialization_failure', HINT = 'Retry the call.';
    END IF;
    RETURN v_id;
END
$$;

-- The identity's unseen, unexpired notifications with id > after_id, oldest
-- (smallest id) first, at most quantity. Pass the last id returned as after_id
-- to page on; reading marks nothing (see cb_mark_seen_until, cb_mark_seen).
-- 22023 for an invalid identity, a NULL after_id, or a quantity outside
-- 1..1000. VOLATILE because it reads the engine clock.
CREATE FUNCTION catbird.cb_read_notifications(identity text, after_id bigint = 0, quantity int = 100)
RETURNS TABLE (id bigint, topic text, message text, collapse_key text, created_at timestamptz,
               expires_at timestamptz)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
BEGIN
    PERFORM catbird._cb_check_identity(cb_read_notifications.identity);
    IF after_id IS NULL THEN
        RAISE EXCEPTION 'invalid after_id: NULL; pass 0 to read from the start, or the last id read to page on'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF quantity IS NULL OR quantity < 1 OR quantity > 1000 THEN
        RAISE EXCEPTION 'invalid quantity: got %, expected 1 to 1000 (page on with after_id)',
            coalesce(quantity::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT n.id, n.topic, n.message, n.collapse_key, n.created_at, n.expires_at
    FROM catbird.cb_notifications n
    WHERE n.identity = cb_read_notifications.identity
      AND n.id > after_id
      AND n.seen_at IS NULL
      AND (n.expires_at IS NULL OR n.expires_at > v_now)
    ORDER BY n.id
    LIMIT quantity;
END
$$;

-- Marks the identity's unseen notifications with id <= the given id seen: the
-- acknowledgement of a reader that has handled everything up to a cursor.
-- Rows that arrive later (larger ids) stay unseen. Returns how many rows it
-- marked. 22023 for an invalid identity or a NULL id.
CREATE FUNCTION catbird.cb_mark_seen_until(identity text, id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_marked bigint;
BEGIN
    PERFORM catbird._cb_check_identity(cb_mark_seen_until.identity);
    IF cb_mark_seen_until.id IS NULL THEN
        RAISE EXCEPTION 'invalid id: NULL; pass the last notification id handled'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE catbird.cb_notifications n SET seen_at = catbird.cb_now()
    WHERE n.identity = cb_mark_seen_until.identity
      AND n.id <= cb_mark_seen_until.id
      AND n.seen_at IS NULL;
    GET DIAGNOSTICS v_marked = ROW_COUNT;
    RETURN v_marked;
END
$$;

-- Marks the identity's unseen notifications whose id is in ids seen: the
-- acknowledgement of a reader that handled some rows only (say, one topic),
-- where a cursor would also mark the rows it skipped. Ids of other
-- identities, unknown or already seen ids are not counted. Returns how many
-- rows it marked. 22023 for an invalid identity, a NULL array, a NULL
-- element, or more than 10000 ids.
CREATE FUNCTION catbird.cb_mark_seen(identity text, ids bigint[]) RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_marked bigint;
BEGIN
    PERFORM catbird._cb_check_identity(cb_mark_seen.identity);
    IF ids IS NULL OR array_position(ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'invalid ids: expected an array of notification ids without NULLs (''{}'' for none)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(ids) > 10000 THEN
        RAISE EXCEPTION 'invalid ids: % ids, at most 10000 per call', cardinality(ids)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Mark in batches, or use cb_mark_seen_until for everything up to an id.';
    END IF;
    UPDATE catbird.cb_notifications n SET seen_at = catbird.cb_now()
    WHERE n.identity = cb_mark_seen.identity
      AND n.id = ANY (ids)
      AND n.seen_at IS NULL;
    GET DIAGNOSTICS v_marked = ROW_COUNT;
    RETURN v_marked;
END
$$;

-- cb_gc's sweep: deletes up to batch_size notifications (seen or not) whose
-- expires_at is at or before as_of (cb_gc's clock reading), skipping rows
-- locked by other transactions. Returns how many it deleted. Raises nothing.
CREATE FUNCTION catbird._cb_delete_expired_notifications(as_of timestamptz, batch_size int) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_deleted int;
BEGIN
    DELETE FROM catbird.cb_notifications n
    WHERE n.id IN (SELECT x.id FROM catbird.cb_notifications x WHERE x.expires_at <= as_of
                   LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    RETURN v_deleted;
END
$$;
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
-- catbird 86_wire_inbox: durable notifications announced as they are appended.
--
-- Owns: _cb_wire_inbox_created and the trigger cb_notifications_announce on
-- cb_notifications (84_inbox). Every appended notification, however it was
-- appended (cb_notify_durable from any client, language or SQL), sends the
-- engine event catbird.inbox.created {"identity", "id", "topic"} on the
-- events channel, on commit: a Wire node then reads that identity's inbox for
-- its open inbox streams, so durable notifications also arrive live. The
-- message stays in the table (it may be larger than a notification can
-- carry); the identity and topic travel in the event, which every session
-- that LISTENs on the channel can see, as it sees all engine events. A
-- transaction run with catbird.events = off (80_events) announces nothing:
-- its notifications reach open streams at their next read (a reconnect, a
-- gap, the next announced append) and polls as usual.

-- Announces one appended notification (see the header). Returns NULL (an
-- AFTER trigger's result is ignored). Raises nothing.
CREATE FUNCTION catbird._cb_wire_inbox_created() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_notify('catbird.inbox.created',
        jsonb_build_object('identity', NEW.identity, 'id', NEW.id, 'topic', NEW.topic)::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER cb_notifications_announce
    AFTER INSERT ON catbird.cb_notifications
    FOR EACH ROW EXECUTE FUNCTION catbird._cb_wire_inbox_created();
-- catbird 90_privileges: search_path, SECURITY DEFINER, the three group roles
-- and their EXECUTE rights.
--
-- Owns: the roles catbird_admin, catbird_worker and catbird_client (created
-- here when the installing role may create roles), _cb_function_roles (which
-- role may call which public function), _cb_apply_privileges (applies it all).
-- Runs after every file that creates functions and walks pg_proc, so a
-- function added in any file is covered without being listed here.
-- Guarantees:
--   * Every function in schema catbird runs with search_path pinned to
--     pg_catalog, catbird, pg_temp: a function or operator that a caller's
--     search_path puts in front of a built-in (say public.make_interval) is
--     never called by the engine.
--   * The public functions (cb_*) are SECURITY DEFINER, owned by the
--     extension owner: callers need EXECUTE on them and USAGE on the schema,
--     no privilege on any table or sequence. The internal functions (_cb_*)
--     are callable only by the owner (and superusers), i.e. from inside the
--     public functions.
--   * PUBLIC has no EXECUTE on any catbird function: a role that is in none
--     of the three groups (and not the owner or a superuser) gets 42501.
--   * catbird_admin may call every public function; catbird_worker and
--     catbird_client what _cb_function_roles lists. A public function that
--     it does not know (one added later) is catbird_admin's only, until it is
--     listed.
--   * Roles are cluster-wide: they are created only when missing, never
--     dropped, and DROP EXTENSION leaves them (with nothing granted).
--   * Privileges are applied by GRANT/REVOKE during the install script, so
--     pg_dump's record of the extension's initial privileges (pg_init_privs)
--     covers them; the tables stay dumpable (95_backup).

-- The group roles, when the installing role may create them (a superuser, or
-- a role with CREATEROLE). Otherwise 'catbird db roles' or the README's SQL
-- snippet creates them later, then calls catbird._cb_apply_privileges().
DO $$
DECLARE
    v_role text;
BEGIN
    IF (SELECT r.rolsuper OR r.rolcreaterole FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        FOREACH v_role IN ARRAY ARRAY['catbird_admin', 'catbird_worker', 'catbird_client'] LOOP
            IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            END IF;
        END LOOP;
    END IF;
END
$$;

-- The group roles that may call a public catbird function, by name (all its
-- overloads alike): catbird_admin everything; catbird_worker enqueueing,
-- reading and acknowledging messages, claiming, completing, failing and
-- hiding runs, heartbeats, signals, waits, introspection and the health
-- report and metrics (a worker serves /metrics); catbird_client
-- sending, publishing, running, signalling, waiting, cancelling, retrying
-- and introspection, and the Wire node calls (cb_wire_*: the web application
-- that relays events to browsers is a client); both compute cron ticks and
-- use the durable inbox (append, read, mark seen: application-facing), and
-- workers execute due schedules. Schedules, dead-letter redrives and peeking
-- at a queue's messages (cb_peek) are catbird_admin's. Any other name (a
-- function added later): catbird_admin only. Raises nothing.
CREATE FUNCTION catbird._cb_function_roles(function_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE
AS $$
    SELECT ARRAY['catbird_admin']
           || CASE WHEN function_name IN ('cb_now', 'cb_send', 'cb_publish', 'cb_run_task', 'cb_run_flow',
                                          'cb_signal_flow', 'cb_notify', 'cb_next_cron_tick', 'cb_next_cron_ticks',
                                          'cb_notify_durable', 'cb_read_notifications', 'cb_mark_seen_until',
                                          'cb_mark_seen')
                     OR function_name LIKE 'cb\_wait\_%'
                     OR function_name LIKE 'cb\_get\_%'
                     OR function_name LIKE 'cb\_list\_%'
                   THEN ARRAY['catbird_worker', 'catbird_client']
                   WHEN function_name IN ('cb_read', 'cb_read_poll', 'cb_pop', 'cb_hide', 'cb_delete',
                                          'cb_spawn_generator_map_tasks', 'cb_read_map_outputs',
                                          'cb_worker_started', 'cb_worker_heartbeat', 'cb_worker_stopped',
                                          'cb_health', 'cb_metrics',
                                          'cb_execute_due_task_schedules', 'cb_execute_due_flow_schedules')
                     OR function_name LIKE 'cb\_claim\_%'
                     OR function_name LIKE 'cb\_complete\_%'
                     OR function_name LIKE 'cb\_fail\_%'
                     OR function_name LIKE 'cb\_hide\_%'
                   THEN ARRAY['catbird_worker']
                   WHEN function_name IN ('cb_cancel_task', 'cb_cancel_flow', 'cb_retry_task_run', 'cb_retry_flow_run')
                     OR function_name LIKE 'cb\_wire\_%'
                   THEN ARRAY['catbird_client']
                   ELSE '{}'::text[]
              END
$$;

-- Applies the rules above to every function in schema catbird: pins
-- search_path, makes the public ones SECURITY DEFINER, revokes EXECUTE from
-- PUBLIC, grants USAGE on the schema and EXECUTE per _cb_function_roles to
-- those of the three roles that exist. Idempotent; run at install, and again
-- by the owner (or a superuser) after the roles were created later ('catbird
-- db roles'). Returns how many functions it went through; 42501 for a caller
-- that does not own the functions.
CREATE FUNCTION catbird._cb_apply_privileges() RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_fn record;
    v_role text;
    v_count int := 0;
    v_existing text[];
BEGIN
    SELECT coalesce(array_agg(r.rolname::text), '{}') INTO v_existing
    FROM pg_catalog.pg_roles r
    WHERE r.rolname IN ('catbird_admin', 'catbird_worker', 'catbird_client');
    FOREACH v_role IN ARRAY v_existing LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA catbird TO %I', v_role);
    END LOOP;
    FOR v_fn IN
        SELECT p.oid::regprocedure AS signature, p.proname::text AS name
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'catbird'::regnamespace AND p.prokind IN ('f', 'p')
        ORDER BY p.proname, p.oid
    LOOP
        v_count := v_count + 1;
        EXECUTE format('ALTER ROUTINE %s SET search_path = pg_catalog, catbird, pg_temp', v_fn.signature);
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', v_fn.signature);
        IF v_fn.name LIKE 'cb\_%' THEN
            EXECUTE format('ALTER ROUTINE %s SECURITY DEFINER', v_fn.signature);
            FOREACH v_role IN ARRAY catbird._cb_function_roles(v_fn.name) LOOP
                IF v_role = ANY (v_existing) THEN
                    EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO %I', v_fn.signature, v_role);
                END IF;
            END LOOP;
        END IF;
    END LOOP;
    RETURN v_count;
END
$$;

SELECT catbird._cb_apply_privileges();
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

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

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

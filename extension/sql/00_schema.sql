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

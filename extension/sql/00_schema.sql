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
--   * A concurrency key is unique among the messages of one queue (partial
--     unique index); it becomes reusable once the message is deleted, and a
--     send deletes an expired holder first (expired rows hold nothing).
--   * A dead letter (moved by cb_read past its queue's max_deliveries) records
--     its source queue and delivery count (source_queue_id, source_deliveries).
--   * cb_bindings is indexed by pattern and by literal prefix so that a publish
--     finds its targets through index lookups, not by testing every pattern.

CREATE SCHEMA catbird;

-- The engine clock: clock_timestamp(), or the session setting catbird.fake_now
-- when it is set and not empty (tests pin time with it). Raises 22007/22008
-- when catbird.fake_now is not a valid timestamptz.
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

-- catbird 0.1.0 -> 0.2.0: the schema changes that CREATE OR REPLACE cannot make.
--
-- tools/gen_upgrade.py appends every function of extension/sql/ (CREATE OR
-- REPLACE), the idempotent DO blocks (roles, pg_dump marking of the new
-- table) and, last, catbird._cb_apply_privileges(). tests/test_upgrade.py
-- checks that the result has the catalog of a fresh 0.2.0 install.

-- --- functions whose arguments, defaults or result changed ---------------------
-- CREATE OR REPLACE would add the new signature beside the old one (new
-- arguments) or refuse (new result columns), so the old ones go first.
DROP FUNCTION catbird.cb_complete_flow_early(text, bigint, text, jsonb, text);
DROP FUNCTION catbird.cb_complete_flow_on_fail(text, bigint);
DROP FUNCTION catbird.cb_complete_generator_step(text, text, bigint);
DROP FUNCTION catbird.cb_complete_task_on_fail(text, bigint);
DROP FUNCTION catbird.cb_create_queue(text, timestamptz, text);
DROP FUNCTION catbird.cb_create_task(text, text, text, interval, boolean);
DROP FUNCTION catbird.cb_delete(text, bigint);
DROP FUNCTION catbird.cb_delete(text, bigint[]);
DROP FUNCTION catbird.cb_fail_flow_on_fail(text, bigint, text, boolean, bigint);
DROP FUNCTION catbird.cb_fail_generator_step(text, text, bigint, text);
DROP FUNCTION catbird.cb_fail_map_task(text, text, bigint, text, int, int, int, int);
DROP FUNCTION catbird.cb_fail_step(text, text, bigint, text, int, int, int, int);
DROP FUNCTION catbird.cb_fail_task(text, bigint, text, int, int, int, int);
DROP FUNCTION catbird.cb_fail_task_on_fail(text, bigint, text, boolean, bigint);
DROP FUNCTION catbird.cb_hide(text, bigint, int);
DROP FUNCTION catbird.cb_hide(text, bigint[], int);
DROP FUNCTION catbird.cb_spawn_generator_map_tasks(text, text, bigint, jsonb, timestamptz);
-- new result columns (dead letters, retry policy)
DROP FUNCTION catbird.cb_get_queue(text);
DROP FUNCTION catbird.cb_list_queues();
DROP FUNCTION catbird._cb_queue_info(text[]);
DROP FUNCTION catbird.cb_get_task(text);
DROP FUNCTION catbird.cb_list_tasks();

-- --- queues: dead letters ---------------------------------------------------------
ALTER TABLE catbird.cb_queues
    ADD COLUMN max_deliveries int,
    ADD COLUMN dead_letter_queue_id int;
ALTER TABLE catbird.cb_messages
    ADD COLUMN source_queue_id int,
    ADD COLUMN source_deliveries int;
ALTER TYPE catbird.cb_message
    ADD ATTRIBUTE source_queue text,
    ADD ATTRIBUTE source_deliveries int;

-- --- run lifecycle: stored retry policies, error details, lease indexes -----------
-- NULL policy columns mean "none stored", which is what 0.1.0 definitions had.
ALTER TABLE catbird.cb_tasks
    ADD COLUMN max_retries int,
    ADD COLUMN backoff_min int,
    ADD COLUMN backoff_max int;
ALTER TABLE catbird.cb_flow_steps
    ADD COLUMN max_retries int,
    ADD COLUMN backoff_min int,
    ADD COLUMN backoff_max int;
ALTER TABLE catbird.cb_task_runs ADD COLUMN error_detail text;
ALTER TABLE catbird.cb_map_tasks ADD COLUMN error_detail text;
ALTER TABLE catbird.cb_step_runs
    ADD COLUMN error_detail text,
    ADD COLUMN spawn_attempt int,
    ADD COLUMN spawn_cursor int NOT NULL DEFAULT 0;
-- A generator in flight keeps appending after the items it spawned so far (as
-- 0.1.0 did): they count as its current attempt's.
UPDATE catbird.cb_step_runs sr
SET spawn_attempt = sr.attempts, spawn_cursor = sr.map_total
WHERE sr.status = 'started' AND sr.map_total IS NOT NULL;
ALTER TYPE catbird.cb_task_run_info ADD ATTRIBUTE error_detail text;
ALTER TYPE catbird.cb_step_run_info ADD ATTRIBUTE error_detail text;
CREATE INDEX cb_step_runs_lease_idx ON catbird.cb_step_runs (flow_id, step_name, visible_at)
    WHERE status = 'started';
CREATE INDEX cb_map_tasks_lease_idx ON catbird.cb_map_tasks (flow_id, step_name, visible_at)
    WHERE status = 'started';

-- --- schedules (60_schedules.sql) -------------------------------------------------
CREATE TYPE catbird.cb_cron AS (
    minute_next int[],
    minute_prev int[],
    hour_next   int[],
    hour_prev   int[],
    dom_next    int[],
    dom_prev    int[],
    month_next  int[],
    month_prev  int[],
    dow_next    int[],
    dow_prev    int[],
    day_mode    int
);

CREATE TABLE catbird.cb_schedules (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('task', 'flow')),
    task_id          int UNIQUE REFERENCES catbird.cb_tasks (id) ON DELETE CASCADE,
    flow_id          int UNIQUE REFERENCES catbird.cb_flows (id) ON DELETE CASCADE,
    enabled          boolean NOT NULL DEFAULT true,
    catch_up         text NOT NULL CHECK (catch_up IN ('skip', 'one', 'all')),
    next_run_at      timestamptz NOT NULL,
    last_run_at      timestamptz,
    last_enqueued_at timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    cron_spec        text NOT NULL,
    input            jsonb NOT NULL,
    cron             catbird.cb_cron NOT NULL,
    CONSTRAINT cb_schedules_target_check CHECK (
        (kind = 'task' AND task_id IS NOT NULL AND flow_id IS NULL)
        OR (kind = 'flow' AND flow_id IS NOT NULL AND task_id IS NULL))
);
CREATE INDEX cb_schedules_due_idx ON catbird.cb_schedules (kind, next_run_at) WHERE enabled;

-- --- the durable inbox (84_inbox.sql) ---------------------------------------------
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
CREATE INDEX cb_notifications_unseen_idx ON catbird.cb_notifications (identity, id) WHERE seen_at IS NULL;
CREATE INDEX cb_notifications_expiry_idx ON catbird.cb_notifications (expires_at) WHERE expires_at IS NOT NULL;
CREATE UNIQUE INDEX cb_notifications_collapse_idx ON catbird.cb_notifications (identity, collapse_key)
    WHERE collapse_key IS NOT NULL AND seen_at IS NULL;

-- --- Wire nodes and presence (82_wire.sql) -----------------------------------------
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

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

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

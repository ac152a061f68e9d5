-- catbird 51_flow_definitions: creating, replacing, deleting and listing flows.
--
-- Owns: _cb_flow and _cb_flow_step (the lookups every flow verb starts with),
-- _cb_normalize_flow_steps, cb_create_flow, cb_delete_flow, cb_list_flows,
-- cb_get_flow. Writes cb_flows and cb_flow_steps.
-- Guarantees:
--   * A steps array is validated as a whole before anything is written: an
--     unknown dependency, a cycle, a duplicate or reserved step name, a bad
--     map/reduce source, a malformed condition or an empty flow is 22023.
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
    v_key text;
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
                catbird._cb_quote_arg((SELECT string_agg(format('"%s"', d), ', ') FROM unnest(v_deps) d WHERE NOT d = ANY (v_names)))
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('The steps are: %s.', array_to_string(v_names, ', '));
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
            'ignore_output', to_jsonb(v_ignore))
            -- the retry policy keys only when given, so definitions without one keep their shape
            || jsonb_strip_nulls(jsonb_build_object('max_retries', v_step -> 'max_retries',
                                                    'backoff_min', v_step -> 'backoff_min',
                                                    'backoff_max', v_step -> 'backoff_max')));
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
                      WHERE NOT EXISTS (SELECT 1 FROM jsonb_array_elements(v_steps) s WHERE s ->> 'name' = o)) THEN
            RAISE EXCEPTION 'invalid output_priority %: it must name one or more steps of flow "%"',
                catbird._cb_quote_arg(output_priority::text), name
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

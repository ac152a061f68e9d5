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

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

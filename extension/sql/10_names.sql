-- catbird 10_names: validation of names, topics, patterns and arguments.
--
-- Owns: the _cb_check_* helpers. Each raises SQLSTATE 22023
-- (invalid_parameter_value) with a message that says what was wrong and what is
-- allowed; none writes anything. Callers validate before their first write, so
-- a rejected call leaves the database as it was.

-- Checks the name of a queue, task, flow or step (kind names it in the
-- message): a lowercase letter, then lowercase letters, digits or underscores,
-- at most 58 characters. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_name(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]*$' OR length(name) > 58 THEN
        RAISE EXCEPTION 'invalid % name %: a name starts with a lowercase letter, continues with lowercase letters, digits or underscores, and has at most 58 characters',
            kind, coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a topic: dot-separated tokens of letters, digits, '_' or '-', no
-- wildcards. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_topic(topic text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF topic IS NULL OR topic !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'invalid topic %: a topic is one or more tokens of letters, digits, "_" or "-", separated by "." (e.g. orders.eu.created); wildcards belong in patterns only',
            coalesce(quote_literal(topic), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a binding pattern: a topic whose tokens may be '*' (one token) and
-- whose last token may be '#' (zero or more). Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_pattern(pattern text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF pattern IS NULL
       OR pattern !~ '^(#|([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.#)?)$' THEN
        RAISE EXCEPTION 'invalid pattern %: a pattern is a topic whose tokens may be "*" (exactly one token), and whose last token may be "#" (zero or more tokens), e.g. orders.*.created or orders.#',
            coalesce(quote_literal(pattern), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks an integer argument against its lower bound; used for quantities (>= 1),
-- durations in milliseconds (hide_for >= 1, poll_for >= 0) and intervals.
-- Returns nothing; 22023 when the value is NULL or below the minimum.
CREATE FUNCTION catbird._cb_check_at_least(argument text, value bigint, minimum bigint, unit text = '')
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR value < minimum THEN
        RAISE EXCEPTION 'invalid %: got %, expected an integer of at least %',
            argument, coalesce(value::text, 'NULL'), minimum::text || unit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks message or run headers: a JSON object, or NULL. Returns nothing;
-- 22023 otherwise.
CREATE FUNCTION catbird._cb_check_headers(headers jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF headers IS NOT NULL AND jsonb_typeof(headers) <> 'object' THEN
        RAISE EXCEPTION 'invalid headers %: headers must be a JSON object (or null)', headers::text
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Splits a valid pattern into the columns cb_bindings indexes (see 00_schema):
-- literal prefix, token count, trailing '#', anchored regex (NULL without
-- wildcards). Raises nothing; callers have checked the pattern.
CREATE FUNCTION catbird._cb_pattern_parts(pattern text,
    OUT prefix text, OUT token_count int, OUT has_hash boolean, OUT regex text)
LANGUAGE sql IMMUTABLE STRICT
AS $$
    WITH tokens AS (
        SELECT t.token, t.pos
        FROM unnest(string_to_array(pattern, '.')) WITH ORDINALITY AS t(token, pos)
    ), shape AS (
        SELECT coalesce(min(pos) FILTER (WHERE token IN ('*', '#')), count(*) + 1) AS first_wild,
               bool_or(token = '#') AS has_hash,
               count(*) FILTER (WHERE token <> '#') AS token_count
        FROM tokens
    )
    SELECT coalesce((SELECT string_agg(token, '.' ORDER BY pos) FROM tokens WHERE pos < s.first_wild), ''),
           s.token_count::int,
           s.has_hash,
           CASE WHEN pattern !~ '[*#]' THEN NULL
                WHEN pattern = '#' THEN '^.*$'
                ELSE '^' || (SELECT string_agg(
                                        CASE WHEN token = '#' THEN '(\.[A-Za-z0-9_-]+)*'
                                             ELSE CASE WHEN pos > 1 THEN '\.' ELSE '' END
                                                  || CASE WHEN token = '*' THEN '[A-Za-z0-9_-]+' ELSE token END
                                        END, '' ORDER BY pos)
                             FROM tokens) || '$'
           END
    FROM shape s
$$;

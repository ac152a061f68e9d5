-- catbird 10_names: validation of names, topics, patterns and arguments.
--
-- Owns: the _cb_check_* helpers and _cb_quote_arg. Each check raises SQLSTATE
-- 22023 (invalid_parameter_value) with a message that says what was wrong and
-- what is allowed; none writes anything. Callers validate before their first
-- write, so a rejected call leaves the database as it was.
-- Guarantees:
--   * Every value that reaches an index is bounded here (names 58 characters,
--     topics and patterns 255, concurrency keys 1024 bytes), so an oversized
--     argument is 22023, never 54000 (index row size) from the insert.
--   * An error message quotes at most 200 characters of a bad argument
--     (_cb_quote_arg), so a huge argument cannot flood the server log.
--   * Times must be finite ('infinity' would be a message or run that can
--     never be delivered or never expire), intervals at most 1000 years (so
--     that cb_now() minus them stays a timestamp).

-- A bad argument quoted for an error message: quote_literal of its first 200
-- characters, followed by how long it really was when it was cut; 'NULL' for
-- NULL. Raises nothing.
CREATE FUNCTION catbird._cb_quote_arg(value text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN value IS NULL THEN 'NULL'
                WHEN length(value) <= 200 THEN quote_literal(value)
                ELSE quote_literal(left(value, 200)) || format('... (%s characters)', length(value))
           END
$$;

-- Checks the name of a queue, task, flow or step (kind names it in the
-- message): a lowercase letter, then lowercase letters, digits or underscores,
-- at most 58 characters. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_name(kind text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF name IS NULL OR length(name) > 58 OR name !~ '^[a-z][a-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid % name %: a name starts with a lowercase letter, continues with lowercase letters, digits or underscores, and has at most 58 characters',
            kind, catbird._cb_quote_arg(name)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a topic: dot-separated tokens of letters, digits, '_' or '-', no
-- wildcards, at most 255 characters. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_topic(topic text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF topic IS NULL OR length(topic) > 255 OR topic !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        RAISE EXCEPTION 'invalid topic %: a topic is one or more tokens of letters, digits, "_" or "-", separated by "." (e.g. orders.eu.created), at most 255 characters; wildcards belong in patterns only',
            catbird._cb_quote_arg(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks a binding pattern: a topic whose tokens may be '*' (one token) and
-- whose last token may be '#' (zero or more), at most 255 characters.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_pattern(pattern text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF pattern IS NULL OR length(pattern) > 255
       OR pattern !~ '^(#|([A-Za-z0-9_-]+|\*)(\.([A-Za-z0-9_-]+|\*))*(\.#)?)$' THEN
        RAISE EXCEPTION 'invalid pattern %: a pattern is a topic whose tokens may be "*" (exactly one token), and whose last token may be "#" (zero or more tokens), e.g. orders.*.created or orders.#, at most 255 characters',
            catbird._cb_quote_arg(pattern)
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
        RAISE EXCEPTION 'invalid headers %: headers must be a JSON object (or null)', catbird._cb_quote_arg(headers::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks the one body of a single send, publish or run, or a schedule's
-- input (argument and what name it in the message: 'body', 'message body';
-- 'input', 'run input'): not SQL NULL; then its headers (see
-- _cb_check_headers). Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_body(argument text, what text, body jsonb, headers jsonb = NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION 'invalid %: a % must not be SQL NULL (use ''null''::jsonb for a JSON null)', argument, what
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_headers(headers);
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

-- Checks the bounded arguments of a send, publish or run: every concurrency
-- key at most 1024 bytes (it is indexed), visible_at and expires_at finite.
-- NULLs are allowed. Returns nothing; 22023 for the first problem.
CREATE FUNCTION catbird._cb_check_bounds(concurrency_keys text[], visible_at timestamptz, expires_at timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_key text;
BEGIN
    SELECT k INTO v_key FROM unnest(concurrency_keys) k WHERE octet_length(k) > 1024 LIMIT 1;
    IF v_key IS NOT NULL THEN
        RAISE EXCEPTION 'invalid concurrency key %: % bytes, at most 1024 are allowed',
            catbird._cb_quote_arg(v_key), octet_length(v_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_time('visible_at', visible_at);
    PERFORM catbird._cb_check_time('expires_at', expires_at);
END
$$;

-- Checks a time argument (argument names it): NULL or finite. Returns
-- nothing; 22023 for 'infinity' or '-infinity'.
CREATE FUNCTION catbird._cb_check_time(argument text, value timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF NOT isfinite(value) THEN
        RAISE EXCEPTION 'invalid %: % is not a finite time', argument, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Checks an interval argument (argument names it): NULL or at most 1000
-- years either way, so that cb_now() plus or minus it is a timestamp.
-- Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_interval(argument text, value interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value > interval '1000 years' OR value < interval '-1000 years' THEN
        RAISE EXCEPTION 'invalid %: % is longer than 1000 years', argument, value
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- catbird 60_cron: cron specs, parsed once, and their ticks.
--
-- Owns: the cb_cron type (a parsed cron spec), the cron parser,
-- cb_next_cron_tick / cb_next_cron_ticks and the tick arithmetic the
-- schedules (61_schedules) use. No tables.
-- Guarantees:
--   * A cron spec is parsed once: cb_cron keeps it as lookup arrays (for
--     every minute, hour, day, month and weekday, the next and the previous
--     allowed value), so finding the next tick is a handful of array lookups
--     with carry from minute to hour to day to month to year, never a walk
--     over minutes. All of it is computed in UTC, whatever the session's
--     TimeZone.
--   * Cron grammar (five fields: minute hour day-of-month month day-of-week):
--     "*", "N", "N-M", "*/S", "N-M/S", "N/S" (= N-max/S), comma lists; months
--     1-12 or JAN-DEC; weekdays 0-7 or SUN-SAT, 0 and 7 both Sunday, also in
--     ranges (5-7, FRI-SUN); descriptors @yearly @annually @monthly @weekly
--     @daily @midnight @hourly. When both day fields are restricted a date
--     matches if either matches; which fields count as restricted follows
--     croniter exactly (a field is unrestricted when it is "*" or holds a bare
--     "*" in a list, or when it covers every value and the other day field's
--     text contains a "*"). One deliberate difference: an equal range "N-N"
--     means just N (croniter reads it as the whole cycle).
--   * Every invalid spec is rejected with 22023 naming the bad field, including
--     one that can never match (e.g. "0 0 30 2 *"); nothing is written.

CREATE TYPE catbird.cb_cron AS (
    -- Lookup arrays, 1-based: element i is for value (i - 1) for minute, hour
    -- and weekday, and for value i for day of month and month.
    minute_next int[],   -- smallest allowed minute >= m, NULL when none
    minute_prev int[],   -- largest allowed minute <= m, NULL when none
    hour_next   int[],
    hour_prev   int[],
    dom_next    int[],   -- may exceed the month's length: then there is none
    dom_prev    int[],
    month_next  int[],
    month_prev  int[],
    dow_next    int[],   -- days forward from weekday w to the next allowed weekday (0-6)
    dow_prev    int[],   -- days back from weekday w to the previous allowed weekday (0-6)
    -- 0: a day matches day-of-month OR day-of-week; 1: day-of-month only
    -- (day-of-week unrestricted); 2: day-of-week only (day-of-month unrestricted)
    day_mode    int
);


-- A cron spec quoted for an error message: at most 200 characters of it.
CREATE FUNCTION catbird._cb_cron_quote(cron_spec text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN cron_spec IS NULL THEN 'NULL'
                WHEN length(cron_spec) > 200 THEN quote_literal(left(cron_spec, 200)) || '... ('
                                                   || length(cron_spec) || ' characters)'
                ELSE quote_literal(cron_spec) END
$$;

-- The hint of a cron field error: the field's grammar and values.
CREATE FUNCTION catbird._cb_cron_hint(field_name text, lo int, hi int) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format('The %s field takes "*", N, N-M, */S, N-M/S, N/S or a comma list of those, with values %s-%s%s.',
                  field_name, lo, hi,
                  CASE WHEN field_name = 'month' THEN ' or JAN-DEC'
                       WHEN field_name = 'day-of-week' THEN ' or SUN-SAT (0 and 7 are Sunday)'
                       ELSE '' END)
$$;

-- One field of a cron spec as a bit mask of its allowed values (bit v for
-- value v; a weekday 7 is stored as 0), and whether it holds a bare "*".
-- Raises 22023 naming the field for anything outside the grammar.
CREATE FUNCTION catbird._cb_cron_field(cron_spec text, field_name text, field text, lo int, hi int,
                                       names text[], OUT mask bigint, OUT star boolean)
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_element text;
    v_parts text[];
    v_base text;
    v_from int;
    v_to int;
    v_step int;
    v_value int;
    -- the largest value a range may name: 7 for Sunday in day-of-week
    v_max int := CASE WHEN field_name = 'day-of-week' THEN 7 ELSE hi END;
BEGIN
    mask := 0;
    star := false;
    FOREACH v_element IN ARRAY string_to_array(field, ',') LOOP
        IF v_element = '' THEN
            RAISE EXCEPTION 'invalid cron spec %: the % field % has an empty list element', catbird._cb_cron_quote(cron_spec), field_name, quote_literal(field)
                USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
        END IF;
        -- Fast path: a plain number (most list elements).
        IF v_element ~ '^[0-9]{1,2}$' THEN
            v_value := v_element::int;
            IF v_value >= lo AND v_value <= v_max THEN
                mask := mask | (1::bigint << (v_value % CASE WHEN field_name = 'day-of-week' THEN 7 ELSE 64 END));
                CONTINUE;
            END IF;
        END IF;
        -- element = base ["/" step]; base = "*" | value ["-" value]. Split by
        -- hand: regexp_match with capture groups costs more than the rest of
        -- the parse together.
        v_parts := ARRAY[NULL, NULL, NULL, NULL]::text[];
        v_base := v_element;
        IF strpos(v_element, '/') > 0 THEN
            v_base := split_part(v_element, '/', 1);
            v_parts[4] := substr(v_element, strpos(v_element, '/') + 1);
            IF v_parts[4] !~ '^[0-9]{1,4}$' OR v_parts[4]::int < 1 THEN
                RAISE EXCEPTION 'invalid cron spec %: the % field % has a bad step %: a step is a whole number from 1 to 9999',
                    catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_parts[4], 100))
                    USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
            END IF;
            v_step := v_parts[4]::int;
        ELSE
            v_step := 1;
        END IF;
        IF v_base = '*' THEN
            v_parts[1] := '*';
        ELSIF strpos(v_base, '-') > 0 THEN
            v_parts[2] := split_part(v_base, '-', 1);
            v_parts[3] := substr(v_base, strpos(v_base, '-') + 1);
        ELSE
            v_parts[2] := v_base;
        END IF;
        IF v_parts[1] IS NULL AND (v_parts[2] !~ '^[a-z0-9]+$' OR v_parts[3] !~ '^[a-z0-9]+$') THEN
            RAISE EXCEPTION 'invalid cron spec %: the % field % cannot be read at %',
                catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_element, 100))
                USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
        END IF;
        IF v_parts[1] IS NOT NULL THEN
            v_from := lo;
            -- "*/S" on weekdays steps over 0-6, like croniter
            v_to := hi;
            IF v_parts[4] IS NULL THEN
                star := true;
            END IF;
        ELSE
            -- Values: numbers, or names where the field has them.
            FOR i IN 2..3 LOOP
                CONTINUE WHEN v_parts[i] IS NULL;
                IF v_parts[i] ~ '^[0-9]{1,4}$' THEN
                    v_value := v_parts[i]::int;
                ELSE
                    v_value := array_position(names, v_parts[i]);
                    IF v_value IS NULL THEN
                        RAISE EXCEPTION 'invalid cron spec %: the % field % has an unknown value %',
                            catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_parts[i], 100))
                            USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
                    END IF;
                    -- names are 1-based in the array: JAN = 1, SUN = 0
                    v_value := v_value + lo - 1;
                    -- SUN closing a range is 7 (FRI-SUN)
                    IF field_name = 'day-of-week' AND i = 3 AND v_value = 0 THEN
                        v_value := 7;
                    END IF;
                END IF;
                IF v_value < lo OR v_value > v_max THEN
                    RAISE EXCEPTION 'invalid cron spec %: the % field % has the value %, out of range %-%',
                        catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), v_parts[i], lo, v_max
                        USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
                END IF;
                IF i = 2 THEN v_from := v_value; ELSE v_to := v_value; END IF;
            END LOOP;
            IF v_parts[3] IS NULL THEN
                -- "N" alone, or "N/S" = N-max/S (max 6 for weekdays, like
                -- croniter; "7/S" is just Sunday)
                v_to := CASE WHEN v_parts[4] IS NULL THEN v_from ELSE greatest(hi, v_from) END;
                IF field_name = 'day-of-week' AND v_from = 7 THEN
                    v_to := 7;
                END IF;
            ELSIF v_to < v_from THEN
                RAISE EXCEPTION 'invalid cron spec %: the % field % has a reversed range %: write the smaller value first',
                    catbird._cb_cron_quote(cron_spec), field_name, quote_literal(left(field, 100)), quote_literal(left(v_element, 100))
                    USING ERRCODE = 'invalid_parameter_value', HINT = catbird._cb_cron_hint(field_name, lo, v_max);
            END IF;
        END IF;
        IF v_step = 1 AND field_name <> 'day-of-week' THEN
            -- a plain range: bits v_from..v_to at once
            mask := mask | ((((1::bigint << (v_to - v_from + 1)) - 1)) << v_from);
            CONTINUE;
        END IF;
        v_value := v_from;
        WHILE v_value <= v_to LOOP
            mask := mask | (1::bigint << (v_value % CASE WHEN field_name = 'day-of-week' THEN 7 ELSE 64 END));
            v_value := v_value + v_step;
        END LOOP;
    END LOOP;
END
$$;

-- Lookup arrays of a mask over lo..hi: for each value, the next (forward) or
-- previous allowed value, NULL when there is none. One pass over the range.
CREATE FUNCTION catbird._cb_cron_lookup(mask bigint, lo int, hi int, forward boolean) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_lookup int[] := array_fill(NULL::int, ARRAY[hi - lo + 1]);
    v_current int;
BEGIN
    IF forward THEN
        FOR i IN REVERSE hi..lo LOOP
            IF (mask >> i) & 1 = 1 THEN v_current := i; END IF;
            v_lookup[i - lo + 1] := v_current;
        END LOOP;
    ELSE
        FOR i IN lo..hi LOOP
            IF (mask >> i) & 1 = 1 THEN v_current := i; END IF;
            v_lookup[i - lo + 1] := v_current;
        END LOOP;
    END IF;
    RETURN v_lookup;
END
$$;

-- Weekday offsets: for each weekday w (0 = Sunday), how many days forward
-- (or back) the nearest allowed weekday is (mask is not empty).
CREATE FUNCTION catbird._cb_cron_dow_lookup(mask bigint, forward boolean) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_lookup int[] := array_fill(NULL::int, ARRAY[7]);
    v_k int;
BEGIN
    FOR w IN 0..6 LOOP
        v_k := 0;
        WHILE (mask >> (CASE WHEN forward THEN w + v_k ELSE w - v_k + 7 END) % 7) & 1 = 0 LOOP
            v_k := v_k + 1;
        END LOOP;
        v_lookup[w + 1] := v_k;
    END LOOP;
    RETURN v_lookup;
END
$$;

-- Parses a cron spec into a cb_cron; 22023 naming the bad field when invalid
-- (including a spec that matches no day at all, such as "0 0 30 2 *").
-- Without with_prev the *_prev arrays are left NULL (enough for
-- _cb_cron_next, and half the work).
CREATE FUNCTION catbird._cb_parse_cron(cron_spec text, with_prev boolean = true) RETURNS catbird.cb_cron
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_spec text;
    v_fields text[];
    v_minute record;
    v_hour record;
    v_dom record;
    v_month record;
    v_dow record;
    v_dom_star boolean;
    v_dow_star boolean;
    v_min_dom int;
    v_cron catbird.cb_cron;
BEGIN
    IF cron_spec IS NULL THEN
        RAISE EXCEPTION 'invalid cron spec NULL: give five fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF length(cron_spec) > 1000 THEN
        RAISE EXCEPTION 'invalid cron spec %: it is longer than 1000 characters', catbird._cb_cron_quote(cron_spec)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_spec := lower(btrim(cron_spec, E' \t\n\r'));
    IF left(v_spec, 1) = '@' THEN
        v_spec := CASE v_spec
                      WHEN '@yearly' THEN '0 0 1 1 *'
                      WHEN '@annually' THEN '0 0 1 1 *'
                      WHEN '@monthly' THEN '0 0 1 * *'
                      WHEN '@weekly' THEN '0 0 * * 0'
                      WHEN '@daily' THEN '0 0 * * *'
                      WHEN '@midnight' THEN '0 0 * * *'
                      WHEN '@hourly' THEN '0 * * * *'
                  END;
        IF v_spec IS NULL THEN
            RAISE EXCEPTION 'invalid cron spec %: unsupported descriptor; the descriptors are @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly',
                catbird._cb_cron_quote(cron_spec)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For "@every <duration>" or "@reboot", write a five-field spec instead, e.g. "*/5 * * * *" for every five minutes.';
        END IF;
    END IF;
    v_fields := regexp_split_to_array(v_spec, '[ \t\n\r]+');
    IF v_spec = '' OR cardinality(v_fields) <> 5 THEN
        RAISE EXCEPTION 'invalid cron spec %: expected 5 fields (minute hour day-of-month month day-of-week), got %',
            catbird._cb_cron_quote(cron_spec), CASE WHEN v_spec = '' THEN 0 ELSE cardinality(v_fields) END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Seconds and years are not supported; e.g. "30 9 * * 1-5" is 09:30 UTC on weekdays.';
    END IF;
    v_minute := catbird._cb_cron_field(cron_spec, 'minute', v_fields[1], 0, 59, NULL);
    v_hour := catbird._cb_cron_field(cron_spec, 'hour', v_fields[2], 0, 23, NULL);
    v_dom := catbird._cb_cron_field(cron_spec, 'day-of-month', v_fields[3], 1, 31, NULL);
    v_month := catbird._cb_cron_field(cron_spec, 'month', v_fields[4], 1, 12,
        ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']);
    v_dow := catbird._cb_cron_field(cron_spec, 'day-of-week', v_fields[5], 0, 6,
        ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);

    -- croniter's rule for "restricted": see the header.
    v_dom_star := v_dom.star OR (v_dom.mask = 4294967294 AND strpos(v_fields[5], '*') > 0);
    v_dow_star := v_dow.star OR (v_dow.mask = 127 AND strpos(v_fields[3], '*') > 0);
    v_cron.day_mode := CASE WHEN NOT v_dom_star AND NOT v_dow_star THEN 0 WHEN v_dom_star THEN 2 ELSE 1 END;

    -- A spec restricted by day of month only must name a day that some of its
    -- months have (February counts its 29th).
    IF v_cron.day_mode = 1 THEN
        SELECT min(d) INTO v_min_dom FROM generate_series(1, 31) d WHERE (v_dom.mask >> d) & 1 = 1;
        IF v_min_dom = 31 AND v_month.mask & ((1 << 1) | (1 << 3) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 12)) = 0
           OR v_min_dom = 30 AND v_month.mask & ~(1 << 2) = 0 THEN
            RAISE EXCEPTION 'invalid cron spec %: it matches no minute in the next 8 years: the day-of-month field % names no day that the month field % has',
                catbird._cb_cron_quote(cron_spec), quote_literal(left(v_fields[3], 100)), quote_literal(left(v_fields[4], 100))
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;

    v_cron.minute_next := catbird._cb_cron_lookup(v_minute.mask, 0, 59, true);
    v_cron.hour_next := catbird._cb_cron_lookup(v_hour.mask, 0, 23, true);
    v_cron.dom_next := catbird._cb_cron_lookup(v_dom.mask, 1, 31, true);
    v_cron.month_next := catbird._cb_cron_lookup(v_month.mask, 1, 12, true);
    v_cron.dow_next := catbird._cb_cron_dow_lookup(v_dow.mask, true);
    IF with_prev THEN
        v_cron.minute_prev := catbird._cb_cron_lookup(v_minute.mask, 0, 59, false);
        v_cron.hour_prev := catbird._cb_cron_lookup(v_hour.mask, 0, 23, false);
        v_cron.dom_prev := catbird._cb_cron_lookup(v_dom.mask, 1, 31, false);
        v_cron.month_prev := catbird._cb_cron_lookup(v_month.mask, 1, 12, false);
        v_cron.dow_prev := catbird._cb_cron_dow_lookup(v_dow.mask, false);
    END IF;
    RETURN v_cron;
END
$$;

-- Next and previous ticks
--------------------------------------------------------------------------------

-- The first minute matching a parsed spec strictly after from_time (UTC).
-- Field by field with carry: month, then day, then hour, then minute; each
-- step is one array lookup, and a miss moves the next larger unit on.
CREATE FUNCTION catbird._cb_cron_next(cron catbird.cb_cron, from_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_t timestamp := date_trunc('minute', from_time AT TIME ZONE 'UTC') + interval '1 minute';
    v_y int := extract(year FROM v_t)::int;
    v_mo int := extract(month FROM v_t)::int;
    v_d int := extract(day FROM v_t)::int;
    v_h int := extract(hour FROM v_t)::int;
    v_mi int := extract(minute FROM v_t)::int;
    v_limit int := v_y + 9;  -- a feasible spec matches within 8 years (Feb 29 across 2100)
    v_dim int;
    v_v int;
    v_a int;
    v_b int;
BEGIN
    LOOP
        -- month
        v_v := cron.month_next[v_mo];
        IF v_v IS NULL THEN
            v_y := v_y + 1;
            v_mo := cron.month_next[1];
            v_d := 1; v_h := 0; v_mi := 0;
        ELSIF v_v > v_mo THEN
            v_mo := v_v;
            v_d := 1; v_h := 0; v_mi := 0;
        END IF;
        IF v_y > v_limit THEN
            RETURN NULL;
        END IF;
        -- day
        v_dim := CASE WHEN v_mo = 2 THEN CASE WHEN v_y % 4 = 0 AND (v_y % 100 <> 0 OR v_y % 400 = 0) THEN 29 ELSE 28 END
                      ELSE 30 + (v_mo + v_mo / 8) % 2 END;
        v_a := NULL;
        v_b := NULL;
        IF cron.day_mode <> 2 THEN
            v_a := cron.dom_next[v_d];
            IF v_a > v_dim THEN v_a := NULL; END IF;
        END IF;
        IF cron.day_mode <> 1 THEN
            -- 1970-01-04 was a Sunday
            v_b := v_d + cron.dow_next[((make_date(v_y, v_mo, v_d) - DATE '1970-01-04') % 7 + 7) % 7 + 1];
            IF v_b > v_dim THEN v_b := NULL; END IF;
        END IF;
        v_v := least(v_a, v_b);
        IF v_v IS NULL THEN
            v_mo := v_mo + 1;
            v_d := 1; v_h := 0; v_mi := 0;
            IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
            CONTINUE;
        END IF;
        IF v_v > v_d THEN
            v_d := v_v;
            v_h := 0; v_mi := 0;
        END IF;
        -- hour
        v_v := cron.hour_next[v_h + 1];
        IF v_v IS NULL THEN
            v_d := v_d + 1;
            v_h := 0; v_mi := 0;
            IF v_d > v_dim THEN
                v_d := 1; v_mo := v_mo + 1;
                IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
            END IF;
            CONTINUE;
        END IF;
        IF v_v > v_h THEN
            v_h := v_v;
            v_mi := 0;
        END IF;
        -- minute
        v_v := cron.minute_next[v_mi + 1];
        IF v_v IS NULL THEN
            v_h := v_h + 1;
            v_mi := 0;
            IF v_h > 23 THEN
                v_h := 0; v_d := v_d + 1;
                IF v_d > v_dim THEN
                    v_d := 1; v_mo := v_mo + 1;
                    IF v_mo > 12 THEN v_mo := 1; v_y := v_y + 1; END IF;
                END IF;
            END IF;
            CONTINUE;
        END IF;
        RETURN make_timestamp(v_y, v_mo, v_d, v_h, v_v, 0) AT TIME ZONE 'UTC';
    END LOOP;
END
$$;

-- The last minute matching a parsed spec at or before until_time (UTC): the
-- mirror image of _cb_cron_next. Used by the skip policy (latest due tick).
CREATE FUNCTION catbird._cb_cron_prev(cron catbird.cb_cron, until_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_t timestamp := date_trunc('minute', until_time AT TIME ZONE 'UTC');
    v_y int := extract(year FROM v_t)::int;
    v_mo int := extract(month FROM v_t)::int;
    v_d int := extract(day FROM v_t)::int;
    v_h int := extract(hour FROM v_t)::int;
    v_mi int := extract(minute FROM v_t)::int;
    v_limit int := v_y - 9;
    v_dim int;
    v_v int;
    v_a int;
    v_b int;
BEGIN
    LOOP
        -- month (v_d = 99: the last day of whatever month this lands in)
        v_v := cron.month_prev[v_mo];
        IF v_v IS NULL THEN
            v_y := v_y - 1;
            v_mo := cron.month_prev[12];
            v_d := 99; v_h := 23; v_mi := 59;
        ELSIF v_v < v_mo THEN
            v_mo := v_v;
            v_d := 99; v_h := 23; v_mi := 59;
        END IF;
        IF v_y < v_limit THEN
            RETURN NULL;
        END IF;
        -- day
        v_dim := CASE WHEN v_mo = 2 THEN CASE WHEN v_y % 4 = 0 AND (v_y % 100 <> 0 OR v_y % 400 = 0) THEN 29 ELSE 28 END
                      ELSE 30 + (v_mo + v_mo / 8) % 2 END;
        v_d := least(v_d, v_dim);
        v_a := NULL;
        v_b := NULL;
        IF cron.day_mode <> 2 THEN
            v_a := cron.dom_prev[v_d];
        END IF;
        IF cron.day_mode <> 1 THEN
            v_b := v_d - cron.dow_prev[((make_date(v_y, v_mo, v_d) - DATE '1970-01-04') % 7 + 7) % 7 + 1];
            IF v_b < 1 THEN v_b := NULL; END IF;
        END IF;
        v_v := greatest(v_a, v_b);
        IF v_v IS NULL THEN
            v_mo := v_mo - 1;
            v_d := 99; v_h := 23; v_mi := 59;
            IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
            CONTINUE;
        END IF;
        IF v_v < v_d THEN
            v_d := v_v;
            v_h := 23; v_mi := 59;
        END IF;
        -- hour
        v_v := cron.hour_prev[v_h + 1];
        IF v_v IS NULL THEN
            v_d := v_d - 1;
            v_h := 23; v_mi := 59;
            IF v_d < 1 THEN
                v_d := 99; v_mo := v_mo - 1;
                IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
            END IF;
            CONTINUE;
        END IF;
        IF v_v < v_h THEN
            v_h := v_v;
            v_mi := 59;
        END IF;
        -- minute
        v_v := cron.minute_prev[v_mi + 1];
        IF v_v IS NULL THEN
            v_h := v_h - 1;
            v_mi := 59;
            IF v_h < 0 THEN
                v_h := 23; v_d := v_d - 1;
                IF v_d < 1 THEN
                    v_d := 99; v_mo := v_mo - 1;
                    IF v_mo < 1 THEN v_mo := 12; v_y := v_y - 1; END IF;
                END IF;
            END IF;
            CONTINUE;
        END IF;
        RETURN make_timestamp(v_y, v_mo, v_d, v_h, v_v, 0) AT TIME ZONE 'UTC';
    END LOOP;
END
$$;

-- Checks the from_time of cb_next_cron_tick(s) (argument names it): not NULL
-- and finite. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_cron_time(argument text, value timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR NOT isfinite(value) THEN
        RAISE EXCEPTION 'invalid %: got %, expected a finite timestamptz', argument, coalesce(value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- cb_next_cron_tick(cron_spec, from_time): the first minute matching cron_spec
-- strictly after from_time, computed in UTC whatever the session TimeZone.
-- Errors: 22023 for an invalid spec (the message names the bad field) and for
-- a NULL or infinite from_time.
CREATE FUNCTION catbird.cb_next_cron_tick(cron_spec text, from_time timestamptz) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_cron_time('from_time', from_time);
    RETURN catbird._cb_cron_next(catbird._cb_parse_cron(cron_spec, with_prev => false), from_time);
END
$$;

-- cb_next_cron_ticks(cron_spec, from_time, quantity): the next `quantity`
-- matching minutes after from_time, in order (e.g. to preview a spec).
-- Errors: as cb_next_cron_tick; quantity outside 1-1000 -> 22023.
CREATE FUNCTION catbird.cb_next_cron_ticks(cron_spec text, from_time timestamptz, quantity int = 5)
RETURNS SETOF timestamptz
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_cron catbird.cb_cron := catbird._cb_parse_cron(cron_spec, with_prev => false);
    v_tick timestamptz := from_time;
BEGIN
    PERFORM catbird._cb_check_cron_time('from_time', from_time);
    PERFORM catbird._cb_check_at_least('quantity', quantity, 1);
    IF quantity > 1000 THEN
        RAISE EXCEPTION 'invalid quantity: got %, at most 1000 ticks are listed per call', quantity
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR i IN 1..quantity LOOP
        v_tick := catbird._cb_cron_next(v_cron, v_tick);
        RETURN NEXT v_tick;
    END LOOP;
END
$$;


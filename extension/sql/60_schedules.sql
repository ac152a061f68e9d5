-- catbird 60_schedules: cron schedules for tasks and flows.
--
-- Owns: the cb_cron type (a parsed cron spec), cb_schedules (one schedule per
-- task or flow), the cron parser, cb_next_cron_tick / cb_next_cron_ticks, and
-- the schedule verbs (create, delete, enable, disable, list, execute due).
-- Guarantees:
--   * A cron spec is parsed once, when the schedule is created: the row keeps
--     the spec as lookup arrays (for every minute, hour, day, month and weekday,
--     the next and the previous allowed value), so finding the next tick is a
--     handful of array lookups with carry from minute to hour to day to month
--     to year, never a walk over minutes. All of it is computed in UTC,
--     whatever the session's TimeZone.
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
--   * cb_execute_due_*_schedules is safe under any number of concurrent
--     callers: due rows are taken FOR UPDATE SKIP LOCKED and advanced in the
--     same transaction that enqueues their runs, so each tick fires exactly
--     once. Scheduled runs carry the schedule's input and the concurrency key
--     sched:<name>:<tick, ISO-8601 UTC>.
--   * Catch-up after downtime (the ticks between next_run_at and now):
--     skip fires only the latest due tick, one fires the oldest due tick once,
--     all fires every due tick (at most batch_size per schedule per call, the
--     rest on the next call). A schedule with a single due tick fires it under
--     every policy. Ticks missed while a schedule was disabled are dropped
--     when it is enabled again.
--   * Deleting a task or flow deletes its schedule (foreign key, cascade);
--     cb_gc never touches schedules.
--   * Definitions are guarded as elsewhere: the executor takes the shared
--     definition locks of the schedules it is about to fire (in name order)
--     before it locks their rows, so deleting or redefining a task or flow
--     never races a scheduled run into it.
-- Events (data is JSON): catbird.schedule.created|updated|deleted|enabled|disabled
-- with {"task": name} or {"flow": name}.

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

CREATE TABLE catbird.cb_schedules (
    id               int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('task', 'flow')),
    task_id          int UNIQUE REFERENCES catbird.cb_tasks (id) ON DELETE CASCADE,
    flow_id          int UNIQUE REFERENCES catbird.cb_flows (id) ON DELETE CASCADE,
    enabled          boolean NOT NULL DEFAULT true,
    catch_up         text NOT NULL CHECK (catch_up IN ('skip', 'one', 'all')),
    next_run_at      timestamptz NOT NULL,     -- the oldest tick not fired yet
    last_run_at      timestamptz,              -- the last tick fired (its scheduled time)
    last_enqueued_at timestamptz,              -- when that tick was fired
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    cron_spec        text NOT NULL,
    input            jsonb NOT NULL,
    cron             catbird.cb_cron NOT NULL,
    CONSTRAINT cb_schedules_target_check CHECK (
        (kind = 'task' AND task_id IS NOT NULL AND flow_id IS NULL)
        OR (kind = 'flow' AND flow_id IS NOT NULL AND task_id IS NULL))
);
-- The due query: enabled schedules of one kind, oldest tick first.
CREATE INDEX cb_schedules_due_idx ON catbird.cb_schedules (kind, next_run_at) WHERE enabled;

-- Cron parsing
--------------------------------------------------------------------------------

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

-- Schedules
--------------------------------------------------------------------------------

-- Checks a schedule's catch_up policy: 'skip', 'one' or 'all'. Returns
-- nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_catch_up(catch_up text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF catch_up IS NULL OR catch_up NOT IN ('skip', 'one', 'all') THEN
        RAISE EXCEPTION 'invalid catch_up %: expected ''skip'' (only the latest missed tick), ''one'' (the oldest missed tick, once) or ''all'' (every missed tick)',
            coalesce(quote_literal(left(catch_up, 200)), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- cb_create_task_schedule / cb_create_flow_schedule: creates or updates the
-- schedule of one task or flow (kind), holding the definition's shared lock.
-- next_run_at is kept when the parsed spec is unchanged (so an upsert keeps
-- the backlog) and recomputed when it changes; a disabled schedule stays
-- disabled. Announces catbird.schedule.created or .updated (nothing when the
-- schedule is the same again). Returns nothing. Errors, in this order: 22023
-- for an invalid name, 42704 for an unknown definition, 22023 for an invalid
-- cron spec, a SQL NULL input or an invalid catch_up.
CREATE FUNCTION catbird._cb_create_schedule(kind text, name text, cron_spec text, input jsonb, catch_up text)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_cron catbird.cb_cron;
    v_inserted boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    v_id := catbird._cb_definition_id(kind, name);
    v_cron := catbird._cb_parse_cron(cron_spec);
    PERFORM catbird._cb_check_body('input', 'schedule input', input);
    PERFORM catbird._cb_check_catch_up(catch_up);
    -- task_id or flow_id: the column naming the definition, and the conflict arbiter
    EXECUTE format(
        'INSERT INTO catbird.cb_schedules AS s (kind, %1$I, catch_up, next_run_at, created_at, updated_at,'
        '                                       cron_spec, input, cron)'
        ' VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8)'
        ' ON CONFLICT (%1$I) DO UPDATE'
        '     SET cron_spec = excluded.cron_spec, input = excluded.input, catch_up = excluded.catch_up,'
        '         cron = excluded.cron, updated_at = excluded.updated_at,'
        '         next_run_at = CASE WHEN s.cron IS NOT DISTINCT FROM excluded.cron THEN s.next_run_at'
        '                            ELSE excluded.next_run_at END'
        '     WHERE (s.cron_spec, s.input, s.catch_up)'
        '           IS DISTINCT FROM (excluded.cron_spec, excluded.input, excluded.catch_up)'
        ' RETURNING s.xmax = 0',
        v_layout.definition_column)
    INTO v_inserted
    USING kind, v_id, catch_up, catbird._cb_cron_next(v_cron, v_now), v_now, cron_spec, input, v_cron;
    IF v_inserted IS NOT NULL THEN  -- NULL: the same schedule again, nothing written
        PERFORM catbird._cb_notify(CASE WHEN v_inserted THEN 'catbird.schedule.created' ELSE 'catbird.schedule.updated' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
END
$$;

-- cb_create_task_schedule(task_name, cron_spec, input, catch_up): creates the
-- task's schedule, or updates it (one schedule per task). Each tick enqueues a
-- run with `input`; catch_up is 'skip', 'one' (default) or 'all'. An unchanged
-- spec keeps next_run_at (and so any backlog); a changed one restarts from the
-- next tick after now. A disabled schedule stays disabled.
-- Errors: 42704 unknown task; 22023 invalid name, cron spec, input or catch_up.
CREATE FUNCTION catbird.cb_create_task_schedule(task_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('task', task_name, cron_spec, input, catch_up) $$;

-- cb_create_flow_schedule(flow_name, cron_spec, input, catch_up): as
-- cb_create_task_schedule, for a flow. Errors: 42704 unknown flow; 22023.
CREATE FUNCTION catbird.cb_create_flow_schedule(flow_name text, cron_spec text, input jsonb = '{}',
                                                catch_up text = 'one')
RETURNS void
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_create_schedule('flow', flow_name, cron_spec, input, catch_up) $$;

-- cb_delete_task_schedule / cb_delete_flow_schedule: deletes the schedule of
-- the named task or flow (kind) and announces catbird.schedule.deleted.
-- Returns false when there is none (also when the definition does not
-- exist); 22023 for an invalid name.
CREATE FUNCTION catbird._cb_delete_schedule(kind text, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_layout record := catbird._cb_run_layout(kind);
    v_id int;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    EXECUTE format('DELETE FROM catbird.cb_schedules s USING catbird.%I d'
                   ' WHERE s.%I = d.id AND d.name = $1 RETURNING s.id',
                   v_layout.definitions, v_layout.definition_column)
    INTO v_id USING name;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM catbird._cb_notify('catbird.schedule.deleted', jsonb_build_object(kind, name)::text);
    RETURN true;
END
$$;

-- cb_delete_task_schedule(task_name): removes the task's schedule (the task
-- stays). Returns false when it has none (also when the task does not exist).
-- Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_delete_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('task', task_name) $$;

-- cb_delete_flow_schedule(flow_name): as cb_delete_task_schedule, for a flow.
CREATE FUNCTION catbird.cb_delete_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_delete_schedule('flow', flow_name) $$;

-- Enables or disables the schedule of the named task or flow; false when
-- there is none. Enabling a schedule whose next tick passed while it was
-- disabled moves it to the next tick after now (ticks missed while disabled
-- are not caught up).
CREATE FUNCTION catbird._cb_set_schedule_enabled(kind text, name text, enabled boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_id int;
    v_was boolean;
BEGIN
    PERFORM catbird._cb_check_name(kind, name);
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'invalid enabled: NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.id, s.enabled INTO v_id, v_was
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = _cb_set_schedule_enabled.kind
      AND CASE WHEN _cb_set_schedule_enabled.kind = 'task' THEN t.name ELSE f.name END = _cb_set_schedule_enabled.name
    FOR UPDATE OF s;
    IF v_id IS NULL THEN
        RETURN false;
    END IF;
    IF v_was IS DISTINCT FROM enabled THEN
        UPDATE catbird.cb_schedules s
        SET enabled = _cb_set_schedule_enabled.enabled, updated_at = v_now,
            next_run_at = CASE WHEN _cb_set_schedule_enabled.enabled AND s.next_run_at <= v_now
                               THEN catbird._cb_cron_next(s.cron, v_now) ELSE s.next_run_at END
        WHERE s.id = v_id;
        PERFORM catbird._cb_notify(CASE WHEN enabled THEN 'catbird.schedule.enabled' ELSE 'catbird.schedule.disabled' END,
                                   jsonb_build_object(kind, name)::text);
    END IF;
    RETURN true;
END
$$;

-- cb_enable_task_schedule(task_name) / cb_disable_task_schedule(task_name):
-- a disabled schedule does not fire; enabling it resumes from the next tick
-- after now. Return true when the task has a schedule (whatever its state
-- was), false otherwise. Errors: 22023 invalid name.
CREATE FUNCTION catbird.cb_enable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, true) $$;

CREATE FUNCTION catbird.cb_disable_task_schedule(task_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('task', task_name, false) $$;

-- cb_enable_flow_schedule(flow_name) / cb_disable_flow_schedule(flow_name): as
-- for tasks.
CREATE FUNCTION catbird.cb_enable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, true) $$;

CREATE FUNCTION catbird.cb_disable_flow_schedule(flow_name text) RETURNS boolean
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_set_schedule_enabled('flow', flow_name, false) $$;

-- The ticks a due schedule fires now under its catch-up policy, and the
-- next_run_at it moves to. next_run_at is its oldest unfired tick (<= now).
CREATE FUNCTION catbird._cb_schedule_ticks(cron catbird.cb_cron, next_run_at timestamptz, now timestamptz,
                                           catch_up text, batch_size int,
                                           OUT ticks timestamptz[], OUT next_tick timestamptz)
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v_tick timestamptz := next_run_at;
BEGIN
    IF catch_up = 'skip' THEN
        ticks := ARRAY[catbird._cb_cron_prev(cron, now)];  -- the latest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSIF catch_up = 'one' THEN
        ticks := ARRAY[next_run_at];                       -- the oldest due tick
        next_tick := catbird._cb_cron_next(cron, now);
    ELSE
        ticks := '{}';
        WHILE v_tick <= now AND cardinality(ticks) < batch_size LOOP
            ticks := ticks || v_tick;
            v_tick := catbird._cb_cron_next(cron, v_tick);
        END LOOP;
        next_tick := v_tick;  -- still <= now when the batch was full: the rest next call
    END IF;
END
$$;

-- Fires the due schedules of one kind; see cb_execute_due_task_schedules.
CREATE FUNCTION catbird._cb_execute_due_schedules(kind text, names text[], batch_size int, max_schedules int)
RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_ids int[];
    v_names text[];
    v_schedule record;
    v_plan record;
    v_keys text[];
    v_done_ids int[] := '{}'::int[];
    v_done_next timestamptz[] := '{}'::timestamptz[];
    v_done_last timestamptz[] := '{}'::timestamptz[];
    v_count int := 0;
    v_queued int[];
BEGIN
    PERFORM catbird._cb_check_at_least('batch_size', batch_size, 1);
    PERFORM catbird._cb_check_at_least('max_schedules', max_schedules, 1);
    -- Candidates, read without locks; then the definitions' shared locks in
    -- name order (as any writer of runs holds them), then the rows themselves,
    -- skipping those another caller is firing and re-checking that they are
    -- still due (a caller that just fired one has moved its next_run_at on).
    SELECT array_agg(c.id), array_agg(DISTINCT c.name)
    INTO v_ids, v_names
    FROM (SELECT s.id, CASE WHEN s.kind = 'task' THEN t.name ELSE f.name END AS name
          FROM catbird.cb_schedules s
          LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
          LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
          WHERE s.kind = _cb_execute_due_schedules.kind AND s.enabled AND s.next_run_at <= v_now
            AND (names IS NULL OR coalesce(t.name, f.name) = ANY (names))
          ORDER BY s.next_run_at, s.id
          LIMIT max_schedules) c;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM catbird._cb_lock_definition(kind, n) FROM unnest(v_names) AS n ORDER BY n;

    IF kind = 'task' THEN
        -- Tasks, in one statement: lock the due rows, plan their ticks, advance
        -- them, and insert one run per tick the way _cb_insert_task_runs does
        -- (condition evaluated at creation, a live holder of the key wins),
        -- without a call per schedule.
        WITH locked AS (
            SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, t.id AS task_id, t.name,
                   t.condition_expr
            FROM catbird.cb_schedules s JOIN catbird.cb_tasks t ON t.id = s.task_id
            WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
            FOR UPDATE OF s SKIP LOCKED
        ), planned AS (
            SELECT l.*, p.ticks, p.next_tick
            FROM locked l,
                 LATERAL catbird._cb_schedule_ticks(l.cron, l.next_run_at, v_now, l.catch_up, batch_size) p
        ), advanced AS (
            UPDATE catbird.cb_schedules s
            SET next_run_at = p.next_tick, last_run_at = p.ticks[cardinality(p.ticks)], last_enqueued_at = v_now
            FROM planned p
            WHERE s.id = p.id
        ), fired AS (
            SELECT p.task_id, p.name, p.input, u.o,
                   'sched:' || p.name || ':' || to_char(u.k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS key,
                   p.condition_expr IS NULL
                   OR catbird._cb_eval_condition(p.condition_expr, jsonb_build_object('input', p.input)) AS runnable
            FROM planned p, unnest(p.ticks) WITH ORDINALITY AS u(k, o)
        ), inserted AS (
            INSERT INTO catbird.cb_task_runs
                (id, task_id, status, priority, visible_at, created_at, skipped_at, concurrency_key, input)
            SELECT nextval('catbird.cb_task_runs_id_seq'), f.task_id,
                   CASE WHEN f.runnable THEN 'queued' ELSE 'skipped' END, 0, v_now, v_now,
                   CASE WHEN NOT f.runnable THEN v_now END, f.key, f.input
            FROM (SELECT f.* FROM fired f
                  WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_task_runs r
                                    WHERE r.task_id = f.task_id AND r.concurrency_key = f.key
                                      AND r.status IN ('queued', 'started'))
                  ORDER BY f.task_id, f.o) f
            ON CONFLICT (task_id, concurrency_key)
                WHERE concurrency_key IS NOT NULL AND status IN ('queued', 'started')
                DO NOTHING
            RETURNING task_id, status
        )
        SELECT count(*)::int, array_agg(DISTINCT i.task_id) FILTER (WHERE i.status = 'queued')
        INTO v_count, v_queued
        FROM inserted i;
        PERFORM catbird._cb_notify('catbird.task.queued', t.name)
        FROM catbird.cb_tasks t WHERE t.id = ANY (v_queued);
        RETURN v_count;
    END IF;

    -- Flows: one _cb_insert_flow_runs call per schedule (each new run's
    -- first steps are dispatched there).
    FOR v_schedule IN
        SELECT s.id, s.cron, s.next_run_at, s.catch_up, s.input, f AS flow, f.name
        FROM catbird.cb_schedules s
        JOIN catbird.cb_flows f ON f.id = s.flow_id
        WHERE s.id = ANY (v_ids) AND s.enabled AND s.next_run_at <= v_now
        ORDER BY s.id
        FOR UPDATE OF s SKIP LOCKED
    LOOP
        v_plan := catbird._cb_schedule_ticks(v_schedule.cron, v_schedule.next_run_at, v_now,
                                             v_schedule.catch_up, batch_size);
        v_keys := ARRAY(SELECT 'sched:' || v_schedule.name || ':'
                               || to_char(k AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                        FROM unnest(v_plan.ticks) WITH ORDINALITY AS u(k, o) ORDER BY o);
        -- A tick whose key a live run already holds (a replayed tick) enqueues
        -- nothing; the insert below deduplicates any race on top of this.
        v_keys := ARRAY(SELECT k FROM unnest(v_keys) WITH ORDINALITY AS u(k, o)
                        WHERE NOT EXISTS (SELECT 1 FROM catbird.cb_flow_runs r
                                          WHERE r.flow_id = (v_schedule.flow).id AND r.concurrency_key = u.k
                                            AND r.status IN ('started', 'canceling'))
                        ORDER BY o);
        IF cardinality(v_keys) > 0 THEN
            PERFORM catbird._cb_insert_flow_runs(v_schedule.flow, array_fill(v_schedule.input, ARRAY[cardinality(v_keys)]),
                                                 v_keys, NULL, NULL, 0, NULL);
        END IF;
        v_count := v_count + cardinality(v_keys);
        v_done_ids := v_done_ids || v_schedule.id;
        v_done_next := v_done_next || v_plan.next_tick;
        v_done_last := v_done_last || v_plan.ticks[cardinality(v_plan.ticks)];
    END LOOP;

    UPDATE catbird.cb_schedules s
    SET next_run_at = u.next_tick, last_run_at = u.last_tick, last_enqueued_at = v_now
    FROM unnest(v_done_ids, v_done_next, v_done_last) AS u(id, next_tick, last_tick)
    WHERE s.id = u.id;
    RETURN v_count;
END
$$;

-- cb_execute_due_task_schedules(task_names, batch_size, max_schedules): fires
-- every enabled task schedule whose next tick has come (cb_now()), for the
-- given tasks or all (NULL), and advances each per its catch-up policy:
-- 'skip' enqueues the latest due tick only, 'one' the oldest due tick once,
-- 'all' every due tick, at most batch_size per schedule per call (the rest on
-- the next call). At most max_schedules schedules are fired per call, oldest
-- tick first (call again for the rest). Safe to call concurrently from any
-- number of sessions: each tick fires exactly once. Each tick enqueues one
-- run with the schedule's input and the concurrency key sched:<task>:<tick>
-- (tick in ISO-8601 UTC, e.g. sched:report:2030-01-01T09:00:00Z); a tick
-- whose key a queued or started run still holds enqueues nothing. Returns the
-- number of runs enqueued.
-- Errors: 22023 batch_size or max_schedules < 1.
CREATE FUNCTION catbird.cb_execute_due_task_schedules(task_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('task', task_names, batch_size, max_schedules) $$;

-- cb_execute_due_flow_schedules(flow_names, batch_size, max_schedules): as
-- cb_execute_due_task_schedules, for flows (concurrency key sched:<flow>:<tick>).
CREATE FUNCTION catbird.cb_execute_due_flow_schedules(flow_names text[] = NULL, batch_size int = 100,
                                                      max_schedules int = 1000)
RETURNS int
LANGUAGE sql VOLATILE
AS $$ SELECT catbird._cb_execute_due_schedules('flow', flow_names, batch_size, max_schedules) $$;

-- cb_list_task_schedules / cb_list_flow_schedules: every schedule of one
-- kind ('task' or 'flow'), with the name of its task or flow, ordered by
-- next_run_at, then name. Raises nothing.
CREATE FUNCTION catbird._cb_list_schedules(kind text)
RETURNS TABLE (name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(t.name, f.name), s.cron_spec, s.next_run_at, s.last_run_at, s.last_enqueued_at, s.enabled,
           s.catch_up, s.created_at, s.updated_at, s.input
    FROM catbird.cb_schedules s
    LEFT JOIN catbird.cb_tasks t ON t.id = s.task_id
    LEFT JOIN catbird.cb_flows f ON f.id = s.flow_id
    WHERE s.kind = $1
    ORDER BY s.next_run_at, coalesce(t.name, f.name)
$$;

-- cb_list_task_schedules(): every task schedule (TaskScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_task_schedules()
RETURNS TABLE (task_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('task') $$;

-- cb_list_flow_schedules(): every flow schedule (FlowScheduleInfo fields, and
-- its input), ordered by next_run_at.
CREATE FUNCTION catbird.cb_list_flow_schedules()
RETURNS TABLE (flow_name text, cron_spec text, next_run_at timestamptz, last_run_at timestamptz,
               last_enqueued_at timestamptz, enabled boolean, catch_up text, created_at timestamptz,
               updated_at timestamptz, input jsonb)
LANGUAGE sql STABLE
AS $$ SELECT * FROM catbird._cb_list_schedules('flow') $$;

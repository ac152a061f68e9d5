-- catbird 75_health: the health report and the metrics a scrape reads.
--
-- Owns: cb_health (one jsonb report for humans and monitoring) and
-- cb_metrics (gauges read from the database at scrape time). Reads the
-- engine tables and the server's statistics views; writes nothing.
-- Guarantees:
--   * cb_health returns {"healthy", "status", "checked_at", "thresholds",
--     "checks": [{check, subject, value, unit, threshold, status, message,
--     detail}]}. status is ok, warning (value above its threshold) or
--     critical (above critical_factor times it); the report's status is the
--     worst of its checks and healthy means every check is ok. Checks:
--       dead_tuples     per table of schema catbird: dead / (live + dead)
--                       tuples (pg_stat_user_tables), with the last vacuum
--                       and autovacuum; a table with fewer than
--                       dead_tuple_min dead tuples is ok whatever its ratio.
--       xmin_horizon    the oldest transaction of this database that holds
--                       back vacuum: another session's snapshot or
--                       transaction id (pg_stat_activity backend_xmin,
--                       backend_xid; aged from its transaction start) or a
--                       prepared transaction; one row, subject '' when
--                       there is none. A standby's hot_standby_feedback
--                       (a walsender, no transaction start) is left to the
--                       replication_slot check when the standby uses a slot.
--       replication_slot  per slot holding an xmin or catalog_xmin: its age
--                       in transactions; warning while the slot is inactive.
--       oldest_queued   per queue (visible messages), task (queued runs
--                       due) and flow (queued step runs and map items due):
--                       how long the oldest has waited since it became
--                       visible.
--       lapsed_leases   per task and flow: how long ago the lease of the
--                       most overdue started run (step run, map item) ended;
--                       claims rescue such runs, so one lapsed for longer
--                       than lease_overdue means no worker claims them.
--       worker_heartbeat  per registered worker: time since its heartbeat.
--     Ages of engine rows use the engine clock (cb_now); ages of server
--     sessions and prepared transactions use clock_timestamp().
--   * What a session sees of pg_stat_activity depends on the role that owns
--     the extension (cb_health runs as that owner): a superuser owner, or
--     one in pg_read_all_stats, sees every session's backend_xmin; any other
--     owner sees only its own sessions', so the xmin check then misses the
--     transactions of other roles (detail.hidden_sessions counts the
--     sessions it could not see). Nothing is granted here for it.
--   * cb_metrics returns (metric, labels, value) rows: queue depths, active
--     runs by status, oldest queued age, and the status of every cb_health
--     check under default thresholds (0 ok, 1 warning, 2 critical). Only
--     active runs are counted (the partial claim indexes hold them), so a
--     scrape never scans finished history.

-- The status of a measured value: critical above critical_factor times the
-- threshold, warning above the threshold, else ok (NULL value or threshold:
-- ok). Raises nothing.
CREATE FUNCTION catbird._cb_health_status(value double precision, threshold double precision,
                                          critical_factor double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN value IS NULL OR threshold IS NULL THEN 'ok'
                WHEN value > threshold * critical_factor THEN 'critical'
                WHEN value > threshold THEN 'warning'
                ELSE 'ok' END
$$;

-- Seconds in an interval, rounded to milliseconds. Raises nothing.
CREATE FUNCTION catbird._cb_seconds(value interval) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT round(extract(epoch FROM value), 3)::double precision $$;

-- Checks a health threshold interval: not NULL, not negative, at most 1000
-- years. Returns nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_check_threshold(argument text, value interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL OR value < interval '0' THEN
        RAISE EXCEPTION 'invalid %: got %, expected an interval of at least 0 (e.g. ''5 minutes'')',
            argument, coalesce(value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_interval(argument, value);
END
$$;

-- The health report (see the header): every check with its value, threshold
-- and status. dead_tuple_ratio in [0, 1]; dead_tuple_min >= 0; xmin_age,
-- queued_age, lease_overdue and heartbeat_age intervals >= 0;
-- critical_factor >= 1. Returns jsonb; 22023 for a threshold out of range.
CREATE FUNCTION catbird.cb_health(dead_tuple_ratio double precision = 0.2, dead_tuple_min bigint = 1000,
                                  xmin_age interval = '5 minutes', queued_age interval = '5 minutes',
                                  lease_overdue interval = '1 minute', heartbeat_age interval = '1 minute',
                                  critical_factor double precision = 3)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz;
    v_checks jsonb;
    v_status text;
BEGIN
    IF dead_tuple_ratio IS NULL OR NOT (dead_tuple_ratio BETWEEN 0 AND 1) THEN
        RAISE EXCEPTION 'invalid dead_tuple_ratio: got %, expected a fraction between 0 and 1 (e.g. 0.2)',
            coalesce(dead_tuple_ratio::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM catbird._cb_check_at_least('dead_tuple_min', dead_tuple_min, 0);
    PERFORM catbird._cb_check_threshold('xmin_age', xmin_age);
    PERFORM catbird._cb_check_threshold('queued_age', queued_age);
    PERFORM catbird._cb_check_threshold('lease_overdue', lease_overdue);
    PERFORM catbird._cb_check_threshold('heartbeat_age', heartbeat_age);
    IF critical_factor IS NULL OR NOT (critical_factor BETWEEN 1 AND 1000000) THEN
        RAISE EXCEPTION 'invalid critical_factor: got %, expected a number from 1 to 1000000 (critical above critical_factor x threshold)',
            coalesce(critical_factor::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_now := catbird.cb_now();

    WITH tables AS (
        SELECT s.relname::text AS subject, s.n_live_tup AS live, s.n_dead_tup AS dead,
               CASE WHEN s.n_live_tup + s.n_dead_tup = 0 THEN 0
                    ELSE round(s.n_dead_tup::numeric / (s.n_live_tup + s.n_dead_tup), 4)::double precision END AS ratio,
               s.last_vacuum, s.last_autovacuum
        FROM pg_catalog.pg_stat_user_tables s
        WHERE s.schemaname = 'catbird'
    ),
    dead AS (
        SELECT 'dead_tuples' AS "check", t.subject, t.ratio AS value, 'ratio' AS unit,
               dead_tuple_ratio AS threshold,
               CASE WHEN t.dead < dead_tuple_min THEN 'ok'
                    ELSE catbird._cb_health_status(t.ratio, dead_tuple_ratio, critical_factor) END AS status,
               format('%s dead of %s tuples; last vacuum %s, last autovacuum %s', t.dead, t.live + t.dead,
                      coalesce(t.last_vacuum::text, 'never'), coalesce(t.last_autovacuum::text, 'never')) AS message,
               jsonb_build_object('dead_tuples', t.dead, 'live_tuples', t.live,
                                  'last_vacuum', t.last_vacuum, 'last_autovacuum', t.last_autovacuum) AS detail
        FROM tables t
    ),
    holders AS (
        SELECT format('pid %s', a.pid) AS subject,
               clock_timestamp() - a.xact_start AS held_for,
               greatest(pg_catalog.age(a.backend_xmin), pg_catalog.age(a.backend_xid)) AS xid_age,
               format('pid %s (role %s, application %s, %s) holds a snapshot since %s',
                      a.pid, coalesce(a.usename::text, '?'), coalesce(nullif(a.application_name, ''), '-'),
                      coalesce(a.state, a.backend_type), a.xact_start) AS message
        FROM pg_catalog.pg_stat_activity a
        WHERE (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL) AND a.xact_start IS NOT NULL
          AND a.pid <> pg_catalog.pg_backend_pid()
          AND (a.datname = current_database() OR a.datid IS NULL OR a.datid = 0)
        UNION ALL
        SELECT format('prepared %s', p.gid), clock_timestamp() - p.prepared, pg_catalog.age(p.transaction),
               format('prepared transaction %L (owner %s) waits for COMMIT PREPARED or ROLLBACK PREPARED since %s',
                      p.gid, p.owner, p.prepared)
        FROM pg_catalog.pg_prepared_xacts p
        WHERE p.database = current_database()
    ),
    oldest_holder AS (
        SELECT h.* FROM holders h ORDER BY h.held_for DESC LIMIT 1
    ),
    xmin AS (
        SELECT 'xmin_horizon' AS "check", coalesce(o.subject, '') AS subject,
               coalesce(catbird._cb_seconds(o.held_for), 0) AS value, 'seconds' AS unit,
               catbird._cb_seconds(xmin_age) AS threshold,
               catbird._cb_health_status(coalesce(catbird._cb_seconds(o.held_for), 0),
                                         catbird._cb_seconds(xmin_age), critical_factor) AS status,
               coalesce(o.message, 'no other transaction holds back vacuum') AS message,
               jsonb_build_object('xid_age', o.xid_age,
                                  'holders', (SELECT count(*) FROM holders),
                                  'hidden_sessions', (SELECT count(*) FROM pg_catalog.pg_stat_activity a
                                                      WHERE a.query = '<insufficient privilege>')) AS detail
        FROM (SELECT 1) one LEFT JOIN oldest_holder o ON true
    ),
    slots AS (
        SELECT 'replication_slot' AS "check", s.slot_name::text AS subject,
               greatest(pg_catalog.age(s.xmin), pg_catalog.age(s.catalog_xmin))::double precision AS value,
               'transactions' AS unit, NULL::double precision AS threshold,
               CASE WHEN s.active THEN 'ok' ELSE 'warning' END AS status,
               format('%s slot %s holds xmin %s, catalog_xmin %s', CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
                      s.slot_name, coalesce(s.xmin::text, '-'), coalesce(s.catalog_xmin::text, '-')) AS message,
               jsonb_build_object('active', s.active, 'slot_type', s.slot_type) AS detail
        FROM pg_catalog.pg_replication_slots s
        WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
    ),
    waiting AS (
        SELECT 'queue:' || q.name AS subject, q.oldest_visible_at AS since, q.visible AS n
        FROM catbird._cb_queue_info(NULL) q
        UNION ALL
        SELECT 'task:' || t.name, r.since, coalesce(r.n, 0)
        FROM catbird.cb_tasks t
        LEFT JOIN (SELECT x.task_id, min(x.visible_at) AS since, count(*) AS n
                   FROM catbird.cb_task_runs x
                   WHERE x.status = 'queued' AND x.visible_at <= v_now
                     AND (x.expires_at IS NULL OR x.expires_at > v_now)
                   GROUP BY x.task_id) r ON r.task_id = t.id
        UNION ALL
        SELECT 'flow:' || f.name, min(w.since), coalesce(sum(w.n), 0)
        FROM catbird.cb_flows f
        LEFT JOIN (SELECT sr.flow_id, min(sr.visible_at) AS since, count(*) AS n
                   FROM catbird.cb_step_runs sr
                   WHERE sr.status = 'queued' AND sr.visible_at <= v_now
                   GROUP BY sr.flow_id
                   UNION ALL
                   SELECT m.flow_id, min(m.visible_at), count(*)
                   FROM catbird.cb_map_tasks m
                   WHERE m.status = 'queued' AND m.visible_at <= v_now
                   GROUP BY m.flow_id) w ON w.flow_id = f.id
        GROUP BY f.id, f.name
    ),
    queued AS (
        SELECT 'oldest_queued' AS "check", w.subject,
               coalesce(catbird._cb_seconds(greatest(v_now - w.since, interval '0')), 0) AS value,
               'seconds' AS unit, catbird._cb_seconds(queued_age) AS threshold,
               catbird._cb_health_status(coalesce(catbird._cb_seconds(greatest(v_now - w.since, interval '0')), 0),
                                         catbird._cb_seconds(queued_age), critical_factor) AS status,
               CASE WHEN w.since IS NULL THEN 'nothing waiting'
                    ELSE format('%s waiting, the oldest visible since %s', w.n, w.since) END AS message,
               jsonb_build_object('waiting', w.n, 'oldest_visible_at', w.since) AS detail
        FROM waiting w
    ),
    lapsed_runs AS (
        SELECT 'task:' || t.name AS subject, r.id, 'run' AS kind, r.visible_at
        FROM catbird.cb_tasks t
        JOIN catbird.cb_task_runs r ON r.task_id = t.id AND r.status = 'started' AND r.visible_at <= v_now
        UNION ALL
        SELECT 'flow:' || f.name, sr.id, 'step run ' || sr.step_name, sr.visible_at
        FROM catbird.cb_flows f
        JOIN catbird.cb_step_runs sr ON sr.flow_id = f.id AND sr.status = 'started' AND sr.visible_at <= v_now
        UNION ALL
        SELECT 'flow:' || f.name, m.id, 'map item of ' || m.step_name, m.visible_at
        FROM catbird.cb_flows f
        JOIN catbird.cb_map_tasks m ON m.flow_id = f.id AND m.status = 'started' AND m.visible_at <= v_now
    ),
    lapsed_by_subject AS (
        SELECT l.subject, count(*) AS n, min(l.visible_at) AS since,
               (array_agg(l.kind || ' ' || l.id ORDER BY l.visible_at, l.id))[1:10] AS examples
        FROM lapsed_runs l GROUP BY l.subject
    ),
    subjects AS (
        SELECT 'task:' || t.name AS subject FROM catbird.cb_tasks t
        UNION ALL
        SELECT 'flow:' || f.name FROM catbird.cb_flows f
    ),
    leases AS (
        SELECT 'lapsed_leases' AS "check", s.subject,
               coalesce(catbird._cb_seconds(v_now - l.since), 0) AS value, 'seconds' AS unit,
               catbird._cb_seconds(lease_overdue) AS threshold,
               CASE WHEN l.since IS NULL OR v_now - l.since <= lease_overdue THEN 'ok'
                    ELSE catbird._cb_health_status(catbird._cb_seconds(v_now - l.since),
                                                   catbird._cb_seconds(lease_overdue), critical_factor) END AS status,
               CASE WHEN l.since IS NULL THEN 'no started run past its lease'
                    ELSE format('%s started run(s) past their lease, the oldest lapsed at %s (%s); a worker that claims them rescues them',
                                l.n, l.since, array_to_string(l.examples, ', ')) END AS message,
               jsonb_build_object('runs', coalesce(l.n, 0), 'oldest_lease_end', l.since,
                                  'examples', coalesce(to_jsonb(l.examples), '[]')) AS detail
        FROM subjects s LEFT JOIN lapsed_by_subject l ON l.subject = s.subject
    ),
    workers AS (
        SELECT 'worker_heartbeat' AS "check", w.id::text AS subject,
               catbird._cb_seconds(greatest(v_now - w.last_heartbeat_at, interval '0')) AS value, 'seconds' AS unit,
               catbird._cb_seconds(heartbeat_age) AS threshold,
               catbird._cb_health_status(catbird._cb_seconds(greatest(v_now - w.last_heartbeat_at, interval '0')),
                                         catbird._cb_seconds(heartbeat_age), critical_factor) AS status,
               format('last heartbeat at %s (started %s)', w.last_heartbeat_at, w.started_at) AS message,
               jsonb_build_object('last_heartbeat_at', w.last_heartbeat_at, 'started_at', w.started_at,
                                  'task_handlers', w.task_handlers, 'step_handlers', w.step_handlers) AS detail
        FROM catbird.cb_workers w
    ),
    all_checks AS (
        SELECT 1 AS ord, * FROM dead
        UNION ALL SELECT 2, * FROM xmin
        UNION ALL SELECT 3, * FROM slots
        UNION ALL SELECT 4, * FROM queued
        UNION ALL SELECT 5, * FROM leases
        UNION ALL SELECT 6, * FROM workers
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'check', c."check", 'subject', c.subject, 'value', c.value, 'unit', c.unit,
               'threshold', c.threshold, 'status', c.status, 'message', c.message, 'detail', c.detail)
               ORDER BY c.ord, c.subject), '[]'),
           CASE max(CASE c.status WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END)
               WHEN 2 THEN 'critical' WHEN 1 THEN 'warning' ELSE 'ok' END
    INTO v_checks, v_status
    FROM all_checks c;

    RETURN jsonb_build_object(
        'healthy', v_status = 'ok',
        'status', v_status,
        'checked_at', v_now,
        'thresholds', jsonb_build_object(
            'dead_tuple_ratio', dead_tuple_ratio, 'dead_tuple_min', dead_tuple_min,
            'xmin_age', catbird._cb_seconds(xmin_age), 'queued_age', catbird._cb_seconds(queued_age),
            'lease_overdue', catbird._cb_seconds(lease_overdue),
            'heartbeat_age', catbird._cb_seconds(heartbeat_age), 'critical_factor', critical_factor),
        'checks', v_checks);
END
$$;

-- Gauges for a Prometheus scrape (see the header), as (metric, labels,
-- value) rows ordered by metric and labels:
--   catbird_queue_messages{queue}              messages in the queue
--   catbird_queue_visible_messages{queue}      of them readable now
--   catbird_runs{kind, name, status}           active runs: task runs queued
--                                              or started, flow runs started or canceling
--   catbird_oldest_queued_seconds{kind, name}  age of the oldest waiting
--                                              message / queued run (0: none)
--   catbird_health_status{check, subject}      0 ok, 1 warning, 2 critical
--   catbird_health_value{check, subject}       the measured value of the check
--   catbird_workers                            registered workers
-- Raises nothing.
CREATE FUNCTION catbird.cb_metrics()
RETURNS TABLE (metric text, labels jsonb, value double precision)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_health jsonb := catbird.cb_health();
BEGIN
    RETURN QUERY
    WITH queues AS MATERIALIZED (
        SELECT q.name, q.depth, q.visible FROM catbird._cb_queue_info(NULL) q
    ),
    rows AS (
        SELECT 'catbird_queue_messages' AS metric, jsonb_build_object('queue', q.name) AS labels,
               q.depth::double precision AS value
        FROM queues q
        UNION ALL
        SELECT 'catbird_queue_visible_messages', jsonb_build_object('queue', q.name), q.visible::double precision
        FROM queues q
        UNION ALL
        SELECT 'catbird_runs', jsonb_build_object('kind', 'task', 'name', t.name, 'status', st.status),
               coalesce(c.n, 0)::double precision
        FROM catbird.cb_tasks t CROSS JOIN (VALUES ('queued'), ('started')) st(status)
        LEFT JOIN (SELECT r.task_id, r.status, count(*) AS n FROM catbird.cb_task_runs r
                   WHERE r.status IN ('queued', 'started') GROUP BY r.task_id, r.status) c
               ON c.task_id = t.id AND c.status = st.status
        UNION ALL
        SELECT 'catbird_runs', jsonb_build_object('kind', 'flow', 'name', f.name, 'status', st.status),
               coalesce(c.n, 0)::double precision
        FROM catbird.cb_flows f CROSS JOIN (VALUES ('started'), ('canceling')) st(status)
        LEFT JOIN (SELECT r.flow_id, r.status, count(*) AS n FROM catbird.cb_flow_runs r
                   WHERE r.status IN ('started', 'canceling') GROUP BY r.flow_id, r.status) c
               ON c.flow_id = f.id AND c.status = st.status
        UNION ALL
        SELECT 'catbird_oldest_queued_seconds',
               jsonb_build_object('kind', split_part(c->>'subject', ':', 1),
                                  'name', substr(c->>'subject', length(split_part(c->>'subject', ':', 1)) + 2)),
               (c->>'value')::double precision
        FROM jsonb_array_elements(v_health->'checks') c
        WHERE c->>'check' = 'oldest_queued'
        UNION ALL
        SELECT 'catbird_health_status', jsonb_build_object('check', c->>'check', 'subject', c->>'subject'),
               CASE c->>'status' WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END
        FROM jsonb_array_elements(v_health->'checks') c
        UNION ALL
        SELECT 'catbird_health_value', jsonb_build_object('check', c->>'check', 'subject', c->>'subject'),
               (c->>'value')::double precision
        FROM jsonb_array_elements(v_health->'checks') c
        UNION ALL
        SELECT 'catbird_workers', '{}'::jsonb, (SELECT count(*) FROM catbird.cb_workers)::double precision
    )
    SELECT r.metric, r.labels, r.value FROM rows r ORDER BY r.metric, r.labels::text;
END
$$;

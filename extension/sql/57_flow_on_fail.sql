-- catbird 57_flow_on_fail: on-fail handlers of flows.
--
-- Owns: cb_claim_flow_on_fail, cb_complete_flow_on_fail, cb_fail_flow_on_fail.
-- Writes the on_fail_* columns of cb_flow_runs.
-- Guarantees:
--   * Every flow run that fails is queued for its on-fail handler
--     (on_fail_status), whatever the flow's flags, with the failed step's
--     name, input, signal input and attempts.
--   * On-fail claims use FOR UPDATE SKIP LOCKED and a hide window like run
--     claims; complete/fail act only on a claim that is still started, under
--     on_fail_attempt (the claim's on_fail_attempts) when given; the retry
--     delay of a failed handler is decided in SQL when the caller gives none.

-- Claims up to quantity failed flow runs whose on-fail handling is due
-- (queued, or started with its hide window lapsed), oldest due first:
-- on_fail_attempts is incremented and the claim held for hide_for ms.
-- Returns the claims, with the failed step's name, input, signal input and
-- attempts, by id. 42704 for an unknown flow; 22023 for an invalid name,
-- quantity < 1 or hide_for < 1.
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

-- Records that the on-fail handler of a flow run succeeded; acts only on a run
-- whose on-fail claim is started (under on_fail_attempt, when given). Returns
-- nothing; 42704 for an unknown flow, 22023 for an invalid name or
-- on_fail_attempt < 1.
CREATE FUNCTION catbird.cb_complete_flow_on_fail(name text, run_id bigint, on_fail_attempt int = NULL) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('flow', cb_complete_flow_on_fail.name, run_id, completed => true,
                                   on_fail_attempt => on_fail_attempt)
$$;

-- Records that the on-fail handler of a flow run failed: claimable again after
-- retry_delay ms, or failed for good when retry_exhausted. Left NULL, SQL
-- decides both from the policy given (max_retries, backoff_min, backoff_max;
-- flows store none: 0 retries, 100-2000 ms). Acts only on a run whose on-fail
-- claim is started (under on_fail_attempt, when given). Returns nothing;
-- 42704 for an unknown flow, 22023 for an invalid name, retry_delay < 0,
-- on_fail_attempt < 1 or an invalid policy.
CREATE FUNCTION catbird.cb_fail_flow_on_fail(name text, run_id bigint, error_message text,
                                             retry_exhausted boolean = NULL, retry_delay bigint = NULL,
                                             on_fail_attempt int = NULL, max_retries int = NULL,
                                             backoff_min int = NULL, backoff_max int = NULL)
RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT catbird._cb_end_on_fail('flow', cb_fail_flow_on_fail.name, run_id, completed => false,
                                   error_message => cb_fail_flow_on_fail.error_message,
                                   retry_exhausted => retry_exhausted, retry_delay => retry_delay,
                                   on_fail_attempt => on_fail_attempt, max_retries => max_retries,
                                   backoff_min => backoff_min, backoff_max => backoff_max)
$$;

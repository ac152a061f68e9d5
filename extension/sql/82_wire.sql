-- catbird 82_wire: the Wire nodes and who is connected to which topic.
--
-- Owns: cb_wire_nodes, cb_wire_presence and the cb_wire_* functions. A Wire
-- node is one process relaying events to its browser connections (the Python
-- catbird.Wire); it registers with a heartbeat and records, for every
-- connection that carries an identity, one presence row per subscribed topic
-- or pattern. cb_wire_presence(topic) answers "who is here" across all nodes.
-- Guarantees:
--   * Both tables are UNLOGGED: they describe live processes, not user state,
--     so they cost no WAL and a server crash empties them (every node
--     re-registers and re-joins on its next heartbeat, see cb_wire_heartbeat).
--   * A node whose last heartbeat is older than _cb_wire_stale_after() (15 s
--     by cb_now()) is dead: cb_wire_presence ignores it at once, and cb_gc
--     deletes it (stale_wire_nodes_deleted) with its presence rows (cascade).
--   * Joining and leaving announce catbird.wire.presence
--     {"node_id","identity","topics","joined"} on the events channel, so
--     other nodes and listeners can refresh a "who is here" view.
--   * Every input is checked before the first write (22023): ids not NULL,
--     identities of 1 to 255 characters, topics that are valid patterns, at
--     most 100 per connection.

CREATE UNLOGGED TABLE catbird.cb_wire_nodes (
    id                uuid PRIMARY KEY,
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL
);

CREATE UNLOGGED TABLE catbird.cb_wire_presence (
    subscriber_id uuid NOT NULL,
    topic         text NOT NULL,
    identity      text NOT NULL,
    node_id       uuid NOT NULL REFERENCES catbird.cb_wire_nodes (id) ON DELETE CASCADE,
    connected_at  timestamptz NOT NULL,
    PRIMARY KEY (subscriber_id, topic)
);
CREATE INDEX cb_wire_presence_topic_idx ON catbird.cb_wire_presence (topic, identity);
CREATE INDEX cb_wire_presence_node_idx ON catbird.cb_wire_presence (node_id);

-- How long a node may stay silent before it counts as gone: three missed
-- heartbeats at the Wire's default interval of 5 s. Raises nothing.
CREATE FUNCTION catbird._cb_wire_stale_after() RETURNS interval
LANGUAGE sql IMMUTABLE
AS $$
    SELECT interval '15 seconds'
$$;

-- Checks a node or subscriber id (argument names it): not NULL. Returns
-- nothing; 22023 otherwise.
CREATE FUNCTION catbird._cb_wire_check_id(argument text, id uuid) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'invalid %: NULL, expected a uuid', argument USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Registers a Wire node or records its heartbeat (cb_now()). Returns true when
-- the node was not registered (its first heartbeat, or the first after cb_gc
-- removed it as stale or a crash emptied the table): the node must then join
-- its connections' presence again. 22023 for a NULL id.
CREATE FUNCTION catbird.cb_wire_heartbeat(node_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_inserted boolean;
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    INSERT INTO catbird.cb_wire_nodes AS n (id, started_at, last_heartbeat_at)
    VALUES (cb_wire_heartbeat.node_id, v_now, v_now)
    ON CONFLICT ON CONSTRAINT cb_wire_nodes_pkey DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at
    RETURNING (n.xmax = 0) INTO v_inserted;
    RETURN v_inserted;
END
$$;

-- Records that a connection (subscriber_id) of a node is present, as identity,
-- on each of topics (topics or patterns, as the connection subscribed them),
-- registering the node if needed (as cb_wire_heartbeat does). Joining again is
-- harmless. Announces catbird.wire.presence with "joined": true. Returns how
-- many presence rows were added; 22023 for NULL ids, an identity that is NULL,
-- empty or over 255 characters, no topics, more than 100, or an invalid one.
CREATE FUNCTION catbird.cb_wire_join(node_id uuid, subscriber_id uuid, identity text, topics text[]) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := catbird.cb_now();
    v_topic text;
    v_added int;
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    PERFORM catbird._cb_wire_check_id('subscriber_id', subscriber_id);
    IF identity IS NULL OR length(identity) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'invalid identity %: expected 1 to 255 characters', catbird._cb_quote_arg(identity)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(cardinality(topics), 0) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid topics: got %, expected 1 to 100 topics or patterns',
            coalesce(cardinality(topics)::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH v_topic IN ARRAY topics LOOP
        PERFORM catbird._cb_check_pattern(v_topic);
    END LOOP;

    PERFORM catbird.cb_wire_heartbeat(node_id);
    INSERT INTO catbird.cb_wire_presence AS p (subscriber_id, topic, identity, node_id, connected_at)
    SELECT cb_wire_join.subscriber_id, t.topic, cb_wire_join.identity, cb_wire_join.node_id, v_now
    FROM (SELECT DISTINCT u.topic FROM unnest(topics) AS u(topic)) t
    ON CONFLICT ON CONSTRAINT cb_wire_presence_pkey DO NOTHING;
    GET DIAGNOSTICS v_added = ROW_COUNT;
    PERFORM catbird._cb_notify('catbird.wire.presence', jsonb_build_object(
        'node_id', node_id, 'identity', identity, 'topics', to_jsonb(topics), 'joined', true)::text);
    RETURN v_added;
END
$$;

-- Removes a connection's presence rows (all its topics) on a node and
-- announces catbird.wire.presence with "joined": false when there were any.
-- Returns how many rows were removed; 22023 for NULL ids.
CREATE FUNCTION catbird.cb_wire_leave(node_id uuid, subscriber_id uuid) RETURNS int
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_identity text;
    v_topics text[];
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    PERFORM catbird._cb_wire_check_id('subscriber_id', subscriber_id);
    WITH gone AS (
        DELETE FROM catbird.cb_wire_presence p
        WHERE p.node_id = cb_wire_leave.node_id AND p.subscriber_id = cb_wire_leave.subscriber_id
        RETURNING p.identity, p.topic
    )
    SELECT min(g.identity), array_agg(g.topic ORDER BY g.topic) INTO v_identity, v_topics FROM gone g;
    IF v_topics IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM catbird._cb_notify('catbird.wire.presence', jsonb_build_object(
        'node_id', node_id, 'identity', v_identity, 'topics', to_jsonb(v_topics), 'joined', false)::text);
    RETURN cardinality(v_topics);
END
$$;

-- The distinct identities connected to topic (exactly as the connections
-- subscribed it: a topic or a pattern) on live nodes (heartbeat within
-- _cb_wire_stale_after() of cb_now()), in order. 22023 for an invalid topic.
CREATE FUNCTION catbird.cb_wire_presence(topic text) RETURNS SETOF text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM catbird._cb_check_pattern(topic);
    RETURN QUERY
        SELECT DISTINCT p.identity
        FROM catbird.cb_wire_presence p
        JOIN catbird.cb_wire_nodes n ON n.id = p.node_id
        WHERE p.topic = cb_wire_presence.topic
          AND n.last_heartbeat_at >= catbird.cb_now() - catbird._cb_wire_stale_after()
        ORDER BY p.identity;
END
$$;

-- Unregisters a Wire node that shuts down, with all its presence rows.
-- Returns false when it was not registered; 22023 for a NULL id.
CREATE FUNCTION catbird.cb_wire_stop(node_id uuid) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_wire_check_id('node_id', node_id);
    DELETE FROM catbird.cb_wire_nodes n WHERE n.id = cb_wire_stop.node_id;
    RETURN FOUND;
END
$$;

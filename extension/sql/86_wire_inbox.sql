-- catbird 86_wire_inbox: durable notifications announced as they are appended.
--
-- Owns: _cb_wire_inbox_created and the trigger cb_notifications_announce on
-- cb_notifications (84_inbox). Every appended notification, however it was
-- appended (cb_notify_durable from any client, language or SQL), sends the
-- engine event catbird.inbox.created {"identity", "id", "topic"} on the
-- events channel, on commit: a Wire node then reads that identity's inbox for
-- its open inbox streams, so durable notifications also arrive live. The
-- message stays in the table (it may be larger than a notification can
-- carry); the identity and topic travel in the event, which every session
-- that LISTENs on the channel can see, as it sees all engine events. A
-- transaction run with catbird.events = off (80_events) announces nothing:
-- its notifications reach open streams at their next read (a reconnect, a
-- gap, the next announced append) and polls as usual.

-- Announces one appended notification (see the header). Returns NULL (an
-- AFTER trigger's result is ignored). Raises nothing.
CREATE FUNCTION catbird._cb_wire_inbox_created() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM catbird._cb_notify('catbird.inbox.created',
        jsonb_build_object('identity', NEW.identity, 'id', NEW.id, 'topic', NEW.topic)::text);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER cb_notifications_announce
    AFTER INSERT ON catbird.cb_notifications
    FOR EACH ROW EXECUTE FUNCTION catbird._cb_wire_inbox_created();

-- catbird 95_backup: what pg_dump keeps.
--
-- Tables created by an extension are left out of pg_dump unless marked as
-- configuration tables. Every catbird table holds user state (definitions,
-- messages, runs), so all of them are marked, with their sequences. In plain
-- mode (no extension) pg_dump keeps them anyway, and the call is skipped.

DO $$
DECLARE
    v_relation text;
BEGIN
    IF EXISTS (SELECT FROM pg_extension WHERE extname = 'catbird') THEN
        FOR v_relation IN
            SELECT format('%I.%I', n.nspname, c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'catbird' AND c.relkind IN ('r', 'S')
            ORDER BY c.relname
        LOOP
            PERFORM pg_extension_config_dump(v_relation, '');
        END LOOP;
    END IF;
END
$$;

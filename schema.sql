-- pgsession: the session table, its index, and the triggers that tell every
-- instance's cache of changes made to the table by other SQL. New runs the
-- same DDL, for the configured names, unless Config.SkipCreateTable is set.
-- To provision the table by migration, run this file with your table's name
-- in place of http_sessions. The triggers' argument is the channel: it must
-- be the store's Config.Channel (by default "pgsession:" and the lower-case
-- schema.table, as here for a table in schema public). Running the file again
-- changes nothing.
--
-- Generated from sql.go: go test -run TestSchemaFiles -update
CREATE TABLE IF NOT EXISTS "http_sessions" (
    key_hash   bytea       PRIMARY KEY,             -- SHA-256 of the session token
    data       bytea       NOT NULL,                -- encoded session values
    version    bigint      NOT NULL DEFAULT 1,      -- +1 on every write of data
    expires_at timestamptz NOT NULL,                -- set from the database clock
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Logged out. The row stays, empty, until expires_at, so that a request
    -- that loaded the session before the logout cannot save it back.
    deleted    boolean     NOT NULL DEFAULT false,
    user_id    text,                             -- Config.UserKey's value; NULL: no user
    last_seen  timestamptz,                      -- last write or touch
    client_ip  text,                             -- with Config.RecordClient
    user_agent text                              -- with Config.RecordClient
) WITH (fillfactor = 75); -- room on each page for HOT updates of its sessions
CREATE INDEX IF NOT EXISTS "http_sessions_expires_at_idx" ON "http_sessions" (expires_at);
CREATE INDEX IF NOT EXISTS "http_sessions_user_id_idx" ON "http_sessions" (user_id) WHERE user_id IS NOT NULL;

-- Tells every pgsession instance's cache of changes made to the table by
-- other SQL (an administrator's DELETE, a migration's UPDATE, a TRUNCATE),
-- on the channel given as the trigger's argument. The store's own
-- statements set pgsession.store_write and notify for themselves.
CREATE OR REPLACE FUNCTION "http_sessions_notify"() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $pgsession$
BEGIN
    IF pg_catalog.current_setting('pgsession.store_write', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], '1 sql *');
    ELSIF EXISTS (SELECT FROM old_rows OFFSET 1000) THEN
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], '1 sql *');
    ELSE
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], '1 sql ' ||
                pg_catalog.string_agg(pg_catalog.encode(key_hash, 'hex') || ':0', ' '))
            FROM (SELECT key_hash, (pg_catalog.row_number() OVER () - 1) / 90 AS chunk
                  FROM old_rows) k
            GROUP BY chunk;
    END IF;
    RETURN NULL;
END
$pgsession$;
DROP TRIGGER IF EXISTS "http_sessions_notify_update" ON "http_sessions";
CREATE TRIGGER "http_sessions_notify_update" AFTER UPDATE ON "http_sessions"
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT WHEN (pg_catalog.current_setting('pgsession.store_write', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION "http_sessions_notify"('pgsession:public.http_sessions');
DROP TRIGGER IF EXISTS "http_sessions_notify_delete" ON "http_sessions";
CREATE TRIGGER "http_sessions_notify_delete" AFTER DELETE ON "http_sessions"
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT WHEN (pg_catalog.current_setting('pgsession.store_write', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION "http_sessions_notify"('pgsession:public.http_sessions');
DROP TRIGGER IF EXISTS "http_sessions_notify_truncate" ON "http_sessions";
CREATE TRIGGER "http_sessions_notify_truncate" AFTER TRUNCATE ON "http_sessions"
    FOR EACH STATEMENT WHEN (pg_catalog.current_setting('pgsession.store_write', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION "http_sessions_notify"('pgsession:public.http_sessions');

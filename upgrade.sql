-- pgsession: upgrade a session table made by an earlier version: it adds the
-- user columns and index (Config.UserKey, Sessions, RecordClient) and the
-- triggers (without them an UPDATE, DELETE or TRUNCATE by other SQL did not
-- reach the instances' caches). The index is built with a plain CREATE INDEX,
-- which blocks writes while it runs: on a large table, create it first with
-- CREATE INDEX CONCURRENTLY under the same name. New does this itself
-- unless Config.SkipCreateTable is set; with it set, run
-- this file as the table's owner, with your table's name in place of
-- http_sessions and, if it differs, the store's Config.Channel in place of
-- the channel (see schema.sql). Running it again changes nothing.
--
-- Generated from sql.go: go test -run TestSchemaFiles -update
ALTER TABLE "http_sessions"
    ADD COLUMN IF NOT EXISTS user_id text,
    ADD COLUMN IF NOT EXISTS last_seen timestamptz,
    ADD COLUMN IF NOT EXISTS client_ip text,
    ADD COLUMN IF NOT EXISTS user_agent text;
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

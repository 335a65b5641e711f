-- pgsession: the session table and its index. New runs the same DDL, for
-- the configured names, unless Config.SkipCreateTable is set. To provision
-- the table by migration, run this file with your table's name in place of
-- http_sessions. Running it again changes nothing.
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
    deleted    boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS "http_sessions_expires_at_idx" ON "http_sessions" (expires_at);

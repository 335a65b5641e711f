// Package pgsession is a session store for github.com/gorilla/sessions that
// keeps sessions in PostgreSQL and serves reads from a bounded in-process
// cache.
//
// Each application instance opens one Store on its existing *pgxpool.Pool:
//
//	store, err := pgsession.New(ctx, pool, pgsession.Config{
//		KeyPairs: [][]byte{hashKey, blockKey},
//	})
//	if err != nil {
//		return err
//	}
//	defer store.Close() // stops the store; the pool stays yours
//
// and uses it as any gorilla store:
//
//	session, err := store.Get(r, "session")
//	session.Values["user"] = "ada"
//	err = session.Save(r, w)
//
// # Storage
//
// A session is a row keyed by the SHA-256 of a random 32-byte token. The
// cookie carries the token, signed (and, with a block key, encrypted) by
// securecookie; session.ID is the token in base64url, for admin tools. The
// raw token never reaches the database, so a leaked table or backup cannot
// be replayed as cookies. Expiry is computed on the database clock alone.
// The table is created by New unless Config.SkipCreateTable is set; its DDL
// ships as schema.sql.
//
// # Reads and writes
//
// Get is served from the cache when it holds the session, else by one
// SELECT; concurrent misses of one session share that query. Each Get
// decodes the values into a map of its own, so no two requests share one.
// A missing, expired or unverifiable session is a new session, not an
// error; a database error is returned together with a usable new session.
//
// Save writes through: one INSERT ... ON CONFLICT DO UPDATE that bumps the
// row's version, and the cache and the cookie change only after it has
// committed. A Save whose values equal what is stored, with an expiry that
// is recent enough (see Config.RefreshAfter), needs no round trip at all.
// Saving with Options.MaxAge < 0 deletes the session: the row becomes a
// tombstone until its expiry, so that a request that loaded the session
// before the logout cannot save it back (it gets ErrDeleted). Concurrent
// writes of one Store share a transaction (group commit, Config.MaxBatch),
// but no write waits for another's row lock, and each waits under its own
// request's context, bounded by Config.WriteTimeout: a write cut short
// after it was sent reports ErrUncertain. Store.AutoSave saves the
// request's sessions before the response's headers go out.
//
// # Several instances
//
// Every write sends, in its own transaction, a pg_notify naming the
// session's key hash and new version; each Store LISTENs, on one dedicated
// connection shared by the process's Stores on the same pool, and evicts
// older copies. Changes made to the table by plain
// SQL (an admin's DELETE, a migration's UPDATE, TRUNCATE) are notified by
// the table's triggers. The cache serves only while the listener has
// heard, within Config.ListenLease, a probe the store sent itself through
// the pool, the way its writes' notifications go: a listener that cannot
// hear the writes (PgBouncer in transaction mode without ListenConnString)
// never serves, and New fails with ErrNotHeard. After a reconnect the
// cache starts empty. The cookie carries the version the client was last
// given, so a client never reads older than it was given, on any instance.
//
// For large fleets, Config.Coherence = CoherenceRevocations notifies only
// logouts, revocations, Clear and plain-SQL changes: saves then cost no
// notification to every instance. A client still reads its own writes
// everywhere (its cookie version), logouts still reach every cache within
// milliseconds, and another client, holding an older cookie, may be
// served an older version for at most Config.MaxStale, after which a
// cached copy is read again.
//
// # Read replicas
//
// With Config.ReadPool, cache misses read a physical streaming standby of
// the primary. Its answer is used only when replication lag cannot show in
// it: a row older than the client's cookie, no row for a cookie that has a
// version, or a live row that a logout or write this instance heard of may
// have superseded (the standby's replay position is compared with the
// primary's WAL position, sampled every DefaultReplicaSampleInterval) is
// read again from the primary. Under CoherenceRevocations a standby's live
// row is as old as the standby's replay, for Config.MaxStale: a standby
// lagging more than MaxStale is read around.
//
// # Idle entries and expired rows
//
// Idle entries leave the cache after Config.MaxIdle, checked every
// Config.ScavengeInterval (the scavenger); expired rows are purged every
// Config.PurgeInterval by one instance at a time (the purger), or now with
// Store.PurgeExpired.
//
// # Administration
//
// Store.Regenerate (at login), Store.Delete, Store.Len and Store.Clear
// complete the API; each reaches every instance's cache.
//
// # Users and devices
//
// With Config.UserKey, each session's user is kept in an indexed column:
// Store.Sessions lists a user's sessions (one per device), Store.Revoke
// logs one out by its handle (Store.Handle), Store.LogoutUser and
// Store.LogoutOthers log out many, on every instance at once. A Save that
// changes the user renews the token, as Regenerate does, so a session ID
// planted before login is worthless after it. Config.IdleTimeout ends
// sessions unused on every instance (reads extend them with throttled
// background touches) and Config.AbsoluteTimeout ends them a fixed time
// after login, whatever their activity.
//
// # Starting and stopping
//
// New validates the Config, creates or checks the table and starts the
// listener, scavenger and purger; Close lets writes under way finish, then
// stops them. Close never closes the pool.
package pgsession

package pgsession_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/gorilla/sessions"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

// A user logged in on two devices logs the other one out.
func ExampleStore_LogoutOthers() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testDB.url) // your application's pool
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	store, err := pgsession.New(ctx, pool, pgsession.Config{
		KeyPairs: [][]byte{[]byte("example-hash-key-of-32-bytes-or-more")},
		Table:    "example_user_sessions",
		UserKey:  "user_id",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	defer pool.Exec(ctx, "DROP TABLE example_user_sessions") //nolint:errcheck

	// Two logins of ada: a Save that sets user_id issues a fresh token.
	phone, laptop := loginAs(store, "ada"), loginAs(store, "ada")
	list, _ := store.Sessions(ctx, "ada")
	fmt.Println("devices:", len(list))

	n, err := store.LogoutOthers(ctx, laptop)
	fmt.Println("logged out:", n, err)
	list, _ = store.Sessions(ctx, "ada")
	fmt.Println("devices:", len(list), list[0].Handle == store.Handle(laptop), store.Handle(phone) != "")
	// Output:
	// devices: 2
	// logged out: 1 <nil>
	// devices: 1 true true
}

// loginAs saves a new session of user and returns it, as a login handler does.
func loginAs(store *pgsession.Store, user string) *sessions.Session {
	r := httptest.NewRequest("POST", "/login", nil)
	session, _ := store.Get(r, "session")
	session.Values["user_id"] = user
	if err := session.Save(r, httptest.NewRecorder()); err != nil {
		fmt.Println(err)
	}
	return session
}

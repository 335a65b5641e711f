package pgsession_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgsession/pgsession"
)

func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testDB.url) // your application's pool
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	store, err := pgsession.New(ctx, pool, pgsession.Config{
		// Load keys from your secret store; securecookie.GenerateRandomKey(64)
		// makes one. At least 32 bytes.
		KeyPairs: [][]byte{[]byte("example-hash-key-of-32-bytes-or-more")},
		Table:    "example_sessions",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer store.Close()
	defer pool.Exec(ctx, "DROP TABLE example_sessions")

	login := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session, _ := store.Get(r, "session") // a new session on any error
		session.Values["user"] = "ada"
		if err := session.Save(r, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	whoami := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		session, err := store.Get(r, "session")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "user=%v", session.Values["user"])
	})

	rec := httptest.NewRecorder()
	login.ServeHTTP(rec, httptest.NewRequest("POST", "/login", nil))
	req := httptest.NewRequest("GET", "/", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	rec = httptest.NewRecorder()
	whoami.ServeHTTP(rec, req)
	fmt.Println(rec.Body.String())
	// Output: user=ada
}

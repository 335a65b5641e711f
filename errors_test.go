package pgsession

import (
	"errors"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestNotifyQueueFullIsExplained: a full queue cannot be produced in a test
// (8 GB on PostgreSQL 15), so this checks the error PostgreSQL gives then
// (async.c: "too many notifications in the NOTIFY queue", SQLSTATE 54000).
func TestNotifyQueueFullIsExplained(t *testing.T) {
	full := &pgconn.PgError{Code: "54000", Message: "too many notifications in the NOTIFY queue"}
	err := explain(full)
	if !errors.Is(err, ErrNotifyQueueFull) || !errors.Is(err, full) {
		t.Fatalf("explain: %v; want ErrNotifyQueueFull wrapping the PostgreSQL error", err)
	}
	other := &pgconn.PgError{Code: "54000", Message: "row is too big"}
	if err := explain(other); err != other {
		t.Fatalf("another 54000 error was changed: %v", err)
	}
	if explain(nil) != nil {
		t.Fatal("explain(nil) is not nil")
	}
}

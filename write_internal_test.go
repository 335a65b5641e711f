package pgsession

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWriteContextSharesOneTimerPerSlot: writes with no deadline of their
// own that start within one slot share a context, which ends at most the
// write timeout after each of them began, and at least all but a slot of it.
func TestWriteContextSharesOneTimerPerSlot(t *testing.T) {
	const timeout = 400 * time.Millisecond
	s := &Store{cfg: Config{WriteTimeout: timeout}, bound: newWriteBound(timeout)}
	start := time.Now()
	a, cancelA := s.writeContext(context.Background())
	defer cancelA()
	b, cancelB := s.writeContext(context.Background())
	defer cancelB()
	began := time.Now() // b began by now
	if a != b && time.Since(start) < s.bound.slot {
		t.Fatal("two writes of one slot got contexts of their own")
	}
	d, ok := a.Deadline()
	if !ok {
		t.Fatal("a write with no deadline of its own got none")
	}
	// The first write's start plus the timeout: the second, started
	// within the same slot, gets at most the timeout and at least all but
	// that slot of it.
	if d.Before(start.Add(timeout)) || d.After(began.Add(timeout)) {
		t.Fatalf("deadline %v after the writes began, want the write timeout %v", d.Sub(start), timeout)
	}
	select {
	case <-a.Done():
	case <-time.After(2 * timeout):
		t.Fatalf("the bound did not end in %v", 2*timeout)
	}
	if err := context.Cause(a); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the bound ended with %v", err)
	}
	// A later write gets a slot of its own, with its own whole timeout.
	c, cancelC := s.writeContext(context.Background())
	defer cancelC()
	if c.Err() != nil {
		t.Fatalf("a write after the slot's end got an ended context: %v", c.Err())
	}
}

// TestWriteContextJoinsARequestThatCanEnd: a request context that can be
// canceled (a server's) still ends the write, and the write timeout ends
// it too, with context.DeadlineExceeded; a request deadline sooner than
// the timeout is kept as it is.
func TestWriteContextJoinsARequestThatCanEnd(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := &Store{cfg: Config{WriteTimeout: timeout}, bound: newWriteBound(timeout)}

	req, cancelReq := context.WithCancel(context.Background())
	ctx, cancel := s.writeContext(req)
	cancelReq()
	select {
	case <-ctx.Done():
	case <-time.After(timeout / 2):
		t.Fatal("canceling the request did not end its write")
	}
	cancel()

	req, cancelReq = context.WithCancel(context.Background())
	defer cancelReq()
	start := time.Now()
	ctx, cancel = s.writeContext(req)
	defer cancel()
	select {
	case <-ctx.Done():
	case <-time.After(2 * timeout):
		t.Fatalf("the write timeout did not end the write in %v", 2*timeout)
	}
	if took := time.Since(start); took > timeout+100*time.Millisecond || took < timeout-s.bound.slot-10*time.Millisecond {
		t.Fatalf("the write timeout ended the write after %v, want about %v", took, timeout)
	}
	if err := context.Cause(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the write ended with cause %v, want the write timeout", err)
	}
	if err := ctx.Err(); err != context.DeadlineExceeded {
		t.Fatalf("the write ended with Err %v, want the write timeout (pgx reports Err)", err)
	}
	if d, ok := ctx.Deadline(); !ok || d.After(start.Add(timeout)) {
		t.Fatalf("Deadline %v, %v; want the write timeout's", d.Sub(start), ok)
	}
	if req.Err() != nil {
		t.Fatal("the write timeout ended the request itself")
	}

	short, cancelShort := context.WithTimeout(context.Background(), timeout/3)
	defer cancelShort()
	if got, cancel := s.writeContext(short); got != short {
		cancel()
		t.Fatal("a request deadline sooner than the write timeout was wrapped")
	}
}

// TestWriteContextKeepsValues: a context with values but no way to end
// (context.WithoutCancel of a request's, a tracer's span) keeps them.
func TestWriteContextKeepsValues(t *testing.T) {
	const timeout = time.Second
	s := &Store{cfg: Config{WriteTimeout: timeout}, bound: newWriteBound(timeout)}
	type key struct{}
	for _, parent := range []context.Context{
		context.WithValue(context.Background(), key{}, "span"),
		context.WithoutCancel(context.WithValue(context.Background(), key{}, "span")),
	} {
		ctx, cancel := s.writeContext(parent)
		if ctx.Value(key{}) != "span" {
			t.Errorf("the write's context lost the request's value")
		}
		if _, ok := ctx.Deadline(); !ok {
			t.Errorf("the write's context has no deadline")
		}
		cancel()
	}
}

// TestWriteContextWithoutTimeout: WriteTimeout negative (stored as 0)
// leaves the request's context as it is.
func TestWriteContextWithoutTimeout(t *testing.T) {
	s := &Store{}
	req, cancelReq := context.WithCancel(context.Background())
	defer cancelReq()
	if got, cancel := s.writeContext(req); got != req {
		cancel()
		t.Fatal("a store without a write timeout wrapped the request's context")
	}
}

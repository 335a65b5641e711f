package pgsession

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/gorilla/sessions"
)

// SaveErrorHandler answers a request whose sessions could not be saved
// before its response's headers went out. It owns the response: whatever
// the handler writes afterwards is dropped. w's Header() still holds what
// the handler set. err joins the errors of the sessions that failed (test
// it with errors.Is: ErrTooLarge, ErrClosed, context.DeadlineExceeded,
// ...).
type SaveErrorHandler func(w http.ResponseWriter, r *http.Request, err error)

// AutoSaveOptions configures AutoSaveWith. The zero value is what AutoSave
// uses.
type AutoSaveOptions struct {
	// ErrorHandler answers a request whose sessions could not be saved
	// before its headers went out. Default: 500 Internal Server Error with
	// the status text as its body (the error itself is logged, never shown
	// to the client).
	ErrorHandler SaveErrorHandler
}

// errAnswered is what the handler's writes return once a failed save was
// answered by the error handler.
var errAnswered = errors.New("pgsession: a session could not be saved: the response was answered by the error handler")

// AutoSave returns a handler that runs next and saves the sessions next
// obtained from this store, so that handlers need not call Save. It is
// AutoSaveWith with the zero AutoSaveOptions; it fits any router's
// func(http.Handler) http.Handler middleware slot.
func (s *Store) AutoSave(next http.Handler) http.Handler {
	return s.AutoSaveWith(next, AutoSaveOptions{})
}

// AutoSaveWith returns a handler that runs next and saves every session
// next obtained with s.Get just before the response's headers go out: at
// the first WriteHeader (other than 1xx), Write, Flush, ReadFrom or
// Hijack, or when next returns without writing. Requests next derives with
// WithContext share gorilla's registry, so a Get through any of them
// returns the same session, and it is saved. Sessions of other stores, and
// sessions made with s.New directly, are left alone.
//
//   - A session whose values did not change costs no database round trip
//     while this instance caches it (Save's rule, see Config.RefreshAfter);
//     it gets its cookie again, which keeps the browser's copy as
//     long-lived as the row.
//   - A new session that stayed empty is not stored, and sets no cookie.
//   - A session whose Options.MaxAge < 0 is deleted (logged out), as Save
//     does; a stale cookie of that name is expired.
//   - An explicit Save in next still works and is not repeated: a session
//     saved (or deleted) and not changed afterwards costs nothing more, and
//     the response carries its cookie once.
//   - A session deleted by another request while next ran (ErrDeleted)
//     stays deleted; that is not an error here.
//
// The response gets "Vary: Cookie" when next obtained a session, and
// "Cache-Control: no-store" when it sets a session cookie, so no shared
// cache keeps it or serves one user's page to another.
//
// When a save fails before the headers went out, the failure is logged
// through Config.Logger and opts.ErrorHandler answers the request instead
// of next: next's later writes are dropped and return an error.
//
// Changes next makes after the headers went out (a streaming handler that
// flushed, or one that hijacked the connection) are saved when it returns,
// for sessions that already have a cookie; the cookie itself is not sent
// again. A session created after the headers went out cannot be given its
// cookie and is not stored (a warning is logged). A failure then is logged.
//
// A panic in next (or runtime.Goexit) skips every save that had not
// happened yet, and goes on: put AutoSave inside your recovering
// middleware, so that a handler that fails half-way saves nothing.
//
// The ResponseWriter next gets supports Flush, Hijack and ReadFrom, and
// Unwrap for http.ResponseController. Wrapping a handler twice with one
// store's AutoSave has the effect of once.
func (s *Store) AutoSaveWith(next http.Handler, opts AutoSaveOptions) http.Handler {
	onError := opts.ErrorHandler
	if onError == nil {
		onError = internalServerError
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Value(autoSaveKey{s}).(*saveWriter); ok {
			next.ServeHTTP(w, r) // an outer AutoSave of this store saves
			return
		}
		sw := &saveWriter{ResponseWriter: w, s: s, onError: onError}
		r = r.WithContext(context.WithValue(r.Context(), autoSaveKey{s}, sw))
		// gorilla's registry goes in r's context now, so that requests
		// the handler derives from r share it (and its sessions).
		sessions.GetRegistry(r)
		sw.r = r

		returned := false
		defer func() {
			if !returned {
				sw.abandoned = true // panic or Goexit: save nothing more
			}
		}()
		next.ServeHTTP(sw, r)
		returned = true
		sw.finish()
	})
}

func internalServerError(w http.ResponseWriter, _ *http.Request, _ error) {
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}

// autoSaveKey is the context key under which AutoSave keeps a request's
// saveWriter, one key per store.
type autoSaveKey struct{ s *Store }

// track records a session Get returned, for the AutoSave handling r, if
// any.
func (s *Store) track(r *http.Request, session *sessions.Session) {
	if session == nil {
		return
	}
	if sw, ok := r.Context().Value(autoSaveKey{s}).(*saveWriter); ok {
		sw.add(session)
	}
}

// saveWriter is the ResponseWriter AutoSave gives the handler. Like any
// ResponseWriter, it is not safe for concurrent use; only the list of
// sessions is locked, so that Gets in other goroutines are safe.
type saveWriter struct {
	http.ResponseWriter
	s       *Store
	r       *http.Request // the request the handler got
	onError SaveErrorHandler

	mu       sync.Mutex
	sessions []*sessions.Session // obtained through s.Get, in order

	saved map[*sessions.Session]savedAs // as the headers went out

	started   bool // the sessions were saved: the headers may go out
	failed    bool // a save failed and onError answered
	abandoned bool // the handler panicked: save nothing more
}

// savedAs is a session as it was saved before the headers went out: when
// the handler returns, only a session that differs is saved again.
type savedAs struct {
	id     string
	maxAge int
	data   []byte
}

func (w *saveWriter) savedAs(session *sessions.Session) (savedAs, bool) {
	data, err := w.s.cfg.Serializer.Serialize(session.Values)
	if err != nil {
		return savedAs{}, false
	}
	return savedAs{session.ID, w.maxAge(session), data}, true
}

func (w *saveWriter) maxAge(session *sessions.Session) int {
	if session.Options != nil {
		return session.Options.MaxAge
	}
	return w.s.cfg.Cookie.MaxAge
}

func (w *saveWriter) add(session *sessions.Session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.sessions {
		if t == session {
			return
		}
	}
	w.sessions = append(w.sessions, session)
}

func (w *saveWriter) tracked() []*sessions.Session {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*sessions.Session(nil), w.sessions...)
}

// start saves the sessions before the headers go out, once. It reports
// whether the handler's output may go on.
func (w *saveWriter) start() bool {
	switch {
	case w.failed:
		return false
	case w.started || w.abandoned:
		return true
	}
	w.started = true
	list := w.tracked()
	var errs []error
	for _, session := range list {
		if err := w.save(session, w.ResponseWriter, false); err != nil {
			errs = append(errs, err)
		}
	}
	w.setHeaders(list)
	if len(errs) > 0 {
		w.failed = true
		w.onError(w.ResponseWriter, w.r, errors.Join(errs...))
		return false
	}
	return true
}

// finish runs when the handler returned: the sessions are saved now if
// nothing was written, else the changes made since are.
func (w *saveWriter) finish() {
	if !w.started {
		w.start()
		return
	}
	if w.failed {
		return
	}
	// The headers went out: a cookie set now would be lost.
	for _, session := range w.tracked() {
		if before, ok := w.saved[session]; ok {
			if now, ok := w.savedAs(session); ok && now.id == before.id && now.maxAge == before.maxAge && bytes.Equal(now.data, before.data) {
				continue // unchanged since it was saved
			}
		}
		_ = w.save(session, discardHeaders{}, true)
	}
}

// save saves one session as the rules of AutoSaveWith say; late means
// after the headers went out. Failures are logged; ErrDeleted is none.
func (w *saveWriter) save(session *sessions.Session, rw http.ResponseWriter, late bool) error {
	maxAge := w.maxAge(session)
	if session.ID == "" {
		switch {
		case late:
			if maxAge >= 0 && len(session.Values) > 0 {
				w.s.log.Warn("pgsession: session created after the response's headers went out is not saved: its cookie cannot be sent",
					"session", session.Name())
			}
			return nil
		case maxAge >= 0 && len(session.Values) == 0:
			return nil // new and empty: nothing to store
		case maxAge < 0 && !w.expireCookie(session.Name()):
			return nil // never stored, or deleted already
		}
	}
	err := w.s.Save(w.r, rw, session)
	switch {
	case err == nil:
		if !late && session.ID != "" {
			if as, ok := w.savedAs(session); ok {
				if w.saved == nil {
					w.saved = make(map[*sessions.Session]savedAs)
				}
				w.saved[session] = as
			}
		}
		return nil
	case errors.Is(err, ErrDeleted):
		w.s.log.Info("pgsession: session logged out while the request ran: its changes are not saved", "session", session.Name())
		return nil
	}
	w.s.log.Error("pgsession: automatic save failed", "session", session.Name(), "after_headers", late, "err", err)
	return err
}

// expireCookie reports whether the request carried a cookie called name
// that the response does not set yet: a session without an ID that is to
// be deleted then expires it.
func (w *saveWriter) expireCookie(name string) bool {
	if _, err := w.r.Cookie(name); err != nil {
		return false
	}
	for _, line := range w.Header().Values("Set-Cookie") {
		if setCookieName(line) == name {
			return false
		}
	}
	return true
}

// setHeaders adds Vary and Cache-Control, and keeps only the last of
// several Set-Cookie lines for one session cookie (an explicit Save and
// the automatic one).
func (w *saveWriter) setHeaders(list []*sessions.Session) {
	if len(list) == 0 {
		return
	}
	h := w.Header()
	if !headerHasToken(h.Values("Vary"), "Cookie") && !headerHasToken(h.Values("Vary"), "*") {
		h.Add("Vary", "Cookie")
	}
	lines := h.Values("Set-Cookie")
	if len(lines) == 0 {
		return
	}
	names := make(map[string]bool, len(list))
	for _, session := range list {
		names[session.Name()] = true
	}
	type where struct{ name, path, domain string }
	keys := make([]*where, len(lines)) // nil: not a session cookie
	last := make(map[where]int)
	for i, line := range lines {
		c, err := http.ParseSetCookie(line)
		if err != nil || !names[c.Name] {
			continue
		}
		keys[i] = &where{c.Name, c.Path, strings.ToLower(c.Domain)}
		last[*keys[i]] = i
	}
	if len(last) == 0 {
		return
	}
	kept := make([]string, 0, len(lines))
	for i, line := range lines {
		if keys[i] == nil || last[*keys[i]] == i {
			kept = append(kept, line)
		}
	}
	h["Set-Cookie"] = kept
	if !headerHasToken(h.Values("Cache-Control"), "no-store") {
		h.Add("Cache-Control", "no-store")
	}
}

// setCookieName returns the name of the cookie a Set-Cookie line sets.
func setCookieName(line string) string {
	name, _, _ := strings.Cut(line, "=")
	return strings.TrimSpace(name)
}

// headerHasToken reports whether the comma-separated header values hold
// token, ignoring case and any "=..." argument.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			t, _, _ = strings.Cut(t, "=")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// WriteHeader saves the sessions, then sends the status and headers. An
// informational (1xx) status other than 101 goes out as it is: the final
// headers are still to come.
func (w *saveWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		if !w.failed {
			w.ResponseWriter.WriteHeader(code)
		}
		return
	}
	if w.start() {
		w.ResponseWriter.WriteHeader(code)
	}
}

// Write saves the sessions before the first bytes go out.
func (w *saveWriter) Write(b []byte) (int, error) {
	if !w.start() {
		return 0, errAnswered
	}
	return w.ResponseWriter.Write(b)
}

// ReadFrom saves the sessions, then copies src to the response, through
// the underlying ResponseWriter's ReadFrom when it has one (sendfile).
func (w *saveWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.start() {
		return 0, errAnswered
	}
	return io.Copy(w.ResponseWriter, src)
}

// Flush saves the sessions, then flushes.
func (w *saveWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush with the error, which http.ResponseController
// returns.
func (w *saveWriter) FlushError() error {
	if !w.start() {
		return errAnswered
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack saves the sessions, then hands the connection over. The cookies
// of sessions saved now are in Header(), which a hijacking handler
// writes itself if it wants them.
func (w *saveWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !w.start() {
		return nil, nil, errAnswered
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap returns the ResponseWriter AutoSave wrapped, for
// http.ResponseController. Writing to it directly skips the automatic
// save.
func (w *saveWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// discardHeaders takes the cookie of a save made after the headers went
// out.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header         { return http.Header{} }
func (discardHeaders) Write(b []byte) (int, error) { return len(b), nil }
func (discardHeaders) WriteHeader(int)             {}

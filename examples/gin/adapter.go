package main

import (
	"net/http"
	"sync"

	"github.com/gin-contrib/sessions"
	"github.com/gin-gonic/gin"
	gorilla "github.com/gorilla/sessions"

	"github.com/pgsession/pgsession"
)

// ginStore adapts a *pgsession.Store to gin-contrib/sessions, whose Store
// is a gorilla Store with one more method, Options. Copy it as it is.
//
// Sessions go through gorilla's per-request registry, as with the Store
// alone, so session(c, name) below returns the very session that
// sessions.Default(c) works on, with the error its load had (gin-contrib
// only logs it).
type ginStore struct {
	*pgsession.Store // Save, and everything else, as they are

	mu   sync.RWMutex
	opts *gorilla.Options // set by Options; nil: the Store's Config.Cookie
}

var _ sessions.Store = (*ginStore)(nil)

func newGinStore(s *pgsession.Store) *ginStore { return &ginStore{Store: s} }

// Options sets the cookie attributes of new sessions, replacing the
// Store's Config.Cookie. They are used as given: a field left out is
// zero (Options{Secure: true} has no Path, no HttpOnly, no SameSite, and
// MaxAge 0 makes a browser-session cookie). Prefer setting Config.Cookie
// from pgsession.DefaultCookie().
func (s *ginStore) Options(o sessions.Options) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts = o.ToGorillaOptions()
}

// Get returns the request's session called name through gorilla's
// registry, which calls New once per request and name.
func (s *ginStore) Get(r *http.Request, name string) (*gorilla.Session, error) {
	return gorilla.GetRegistry(r).Get(s, name)
}

// New is the Store's New, with the attributes set through Options, if any.
func (s *ginStore) New(r *http.Request, name string) (*gorilla.Session, error) {
	session, err := s.Store.New(r, name)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.opts != nil {
		o := *s.opts
		session.Options = &o
	}
	return session, err
}

// session returns the gorilla session behind sessions.Default(c) (for a
// middleware made with sessions.Sessions(name, s)) and the error its load
// had: a logout must not pass for done when the session could not be
// read, and Regenerate takes the gorilla session.
func (s *ginStore) session(c *gin.Context, name string) (*gorilla.Session, error) {
	return s.Get(c.Request, name)
}

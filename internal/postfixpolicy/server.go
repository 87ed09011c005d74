// Package postfixpolicy is mailwarden's Postfix SMTP access policy
// delegation server (Postfix 2.1 and later; check_policy_service).
//
// It reads the requests the Postfix SMTP server sends — name=value lines
// ended by an empty line, many requests over one kept connection — turns
// the ones that matter (CONNECT/EHLO/HELO, MAIL/RCPT, DATA/END-OF-MESSAGE)
// into event.Events or verdict questions for a decide.Decider, and answers
// with an access(5) action: DUNNO, 421 (Postfix replies and hangs up),
// REJECT, DEFER_IF_PERMIT or HOLD. See policy.go for the mapping.
//
// On trouble (a malformed, oversized or unknown request, a timeout) it logs
// one line and closes that connection without replying, as the protocol
// asks; Postfix then applies the check_policy_service default_action, which
// mailwarden's documented setting makes DUNNO: mail keeps flowing.
//
// It does not parse Postfix logs (package postfix does), does not decide
// anything itself, and does not create or own the listening socket: the
// daemon passes a net.Listener to Serve. Protocol reference:
// https://www.postfix.org/SMTPD_POLICY_README.html; the main.cf lines are in
// docs/integrate-postfix.md and etc/postfix/main.cf.snippet.
package postfixpolicy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailwarden/mailwarden/internal/decide"
)

// Source is the Event.Source of every event of this package.
const Source = "postfix-policy"

// Config configures a Server. The zero value of every field but Decider
// means its default.
type Config struct {
	// Decider answers every request. Required.
	Decider decide.Decider
	// Clock stamps events and checks. Default: time.Now.
	Clock decide.Clock
	// Logger receives one line per refused request or closed connection
	// (never a password; account names only quoted). Default: slog.Default().
	Logger *slog.Logger
	// Node is the Event.Node of every event: the name of the Postfix host
	// this listener serves. Default: "" (unknown).
	Node string

	// BlockedReply is how a blocked client address is refused: "421"
	// (reply 421 4.7.1 and hang up; default) or "REJECT" (a permanent 5xx
	// for that command; the client may try other commands).
	BlockedReply string
	// BlockedText is the reply text for a blocked client address.
	// Default: "Service temporarily unavailable".
	BlockedText string
	// LockedText is the reply text, after "421 4.7.1", for a locked
	// account. Default: "Account temporarily disabled, contact your mail
	// provider".
	LockedText string
	// DeferText is the DEFER_IF_PERMIT text (Postfix answers 450) when the
	// account must wait, e.g. over a daily cap. Default: "Sending limit
	// reached, try again later".
	DeferText string
	// HoldText is the HOLD text: Postfix logs it and keeps the message in
	// its hold queue; the client sees an ordinary 250. Default: "Held for
	// review".
	HoldText string

	// MaxLineBytes bounds one attribute line, newline included.
	// Default: 8192.
	MaxLineBytes int
	// MaxRequestBytes bounds one request, its empty line included.
	// Default: 65536. (Postfix 3.7 sends about 30 attributes, ~700 bytes.)
	MaxRequestBytes int
	// MaxAttributes bounds the attribute lines of one request.
	// Default: 128.
	MaxAttributes int
	// MaxConns bounds the connections served at once; one more is closed
	// at once (Postfix then applies its default action). Every Postfix
	// smtpd process keeps one connection. Default: 1024.
	MaxConns int
	// IdleTimeout closes a connection that sends no request for this long.
	// Postfix closes unused policy connections itself after
	// smtpd_policy_service_max_idle (300 s); this default stays above it so
	// that Postfix, not mailwarden, closes idle connections, and a request
	// never meets a connection that mailwarden has just closed (which costs
	// one try of the try_limit). Default: 6 minutes.
	IdleTimeout time.Duration
	// RequestTimeout bounds the time from the first line of a request to
	// its empty line. Postfix writes a request at once; a slower one is a
	// stalled or hostile peer. Default: 10 s.
	RequestTimeout time.Duration
	// WriteTimeout bounds writing one answer. Default: 10 s.
	WriteTimeout time.Duration
}

// Defaults.
const (
	DefaultBlockedReply    = "421"
	DefaultBlockedText     = "Service temporarily unavailable"
	DefaultLockedText      = "Account temporarily disabled, contact your mail provider"
	DefaultDeferText       = "Sending limit reached, try again later"
	DefaultHoldText        = "Held for review"
	DefaultMaxLineBytes    = 8 << 10
	DefaultMaxRequestBytes = 64 << 10
	DefaultMaxAttributes   = 128
	DefaultMaxConns        = 1024
	DefaultIdleTimeout     = 6 * time.Minute
	DefaultRequestTimeout  = 10 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
)

// ErrServerClosed is returned by Serve after Shutdown or Close. It wraps
// net.ErrClosed, so that errors.Is(err, net.ErrClosed) holds for it too.
var ErrServerClosed = fmt.Errorf("postfixpolicy: server closed: %w", net.ErrClosed)

// Server answers Postfix policy requests. Create it with New; it is safe
// for concurrent use and may serve several listeners.
type Server struct {
	cfg Config
	lim limits
	log *slog.Logger

	ansDunno, ansBlocked, ansLocked, ansDefer, ansHold []byte

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	nconns    atomic.Int64
	seq       atomic.Uint64

	overLogged atomic.Int64 // unix seconds of the last "too many connections" line
	overCount  atomic.Int64 // connections refused since that line
}

// New checks cfg, fills in its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Decider == nil {
		return nil, errors.New("postfixpolicy: Config.Decider is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&cfg.BlockedReply, DefaultBlockedReply)
	def(&cfg.BlockedText, DefaultBlockedText)
	def(&cfg.LockedText, DefaultLockedText)
	def(&cfg.DeferText, DefaultDeferText)
	def(&cfg.HoldText, DefaultHoldText)
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&cfg.MaxLineBytes, DefaultMaxLineBytes)
	defInt(&cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	defInt(&cfg.MaxAttributes, DefaultMaxAttributes)
	defInt(&cfg.MaxConns, DefaultMaxConns)
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur(&cfg.IdleTimeout, DefaultIdleTimeout)
	defDur(&cfg.RequestTimeout, DefaultRequestTimeout)
	defDur(&cfg.WriteTimeout, DefaultWriteTimeout)
	if cfg.MaxLineBytes < 64 {
		return nil, fmt.Errorf("postfixpolicy: MaxLineBytes %d is too small (at least 64)", cfg.MaxLineBytes)
	}
	for _, t := range []struct{ name, v string }{
		{"BlockedText", cfg.BlockedText}, {"LockedText", cfg.LockedText},
		{"DeferText", cfg.DeferText}, {"HoldText", cfg.HoldText},
	} {
		if err := checkText(t.v); err != nil {
			return nil, fmt.Errorf("postfixpolicy: %s %q: %v", t.name, t.v, err)
		}
	}
	s := &Server{
		cfg:       cfg,
		lim:       limits{maxLine: cfg.MaxLineBytes, maxRequest: cfg.MaxRequestBytes, maxAttrs: cfg.MaxAttributes},
		log:       cfg.Logger,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	s.ansDunno = action("DUNNO")
	switch cfg.BlockedReply {
	case "421":
		s.ansBlocked = action("421 4.7.1 " + cfg.BlockedText)
	case "REJECT", "reject":
		s.ansBlocked = action("REJECT " + cfg.BlockedText)
	default:
		return nil, fmt.Errorf("postfixpolicy: BlockedReply %q: want \"421\" or \"REJECT\"", cfg.BlockedReply)
	}
	s.ansLocked = action("421 4.7.1 " + cfg.LockedText)
	s.ansDefer = action("DEFER_IF_PERMIT " + cfg.DeferText)
	s.ansHold = action("HOLD " + cfg.HoldText)
	return s, nil
}

// checkText accepts reply texts Postfix can pass to an SMTP client as they
// are: printable ASCII, at most 200 bytes.
func checkText(v string) error {
	if len(v) > 200 {
		return errors.New("longer than 200 bytes")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("byte %#x at %d is not printable ASCII", c, i)
		}
	}
	return nil
}

func action(a string) []byte { return []byte("action=" + a + "\n\n") }

// Serve accepts connections on ln and serves them until ln fails or the
// server is shut down; it then returns ErrServerClosed (after Shutdown or
// Close) or the listener's error. Serve closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and friends: wait and try again, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("postfix policy: accept failed, retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.nconns.Add(1) > int64(s.cfg.MaxConns) {
			s.nconns.Add(-1)
			nc.Close()
			s.logOverLimit()
			continue
		}
		c := s.newConn(nc)
		if !s.track(c) {
			s.nconns.Add(-1)
			nc.Close()
			return ErrServerClosed
		}
		go c.serve()
	}
}

// logOverLimit logs refused connections at most once a second.
func (s *Server) logOverLimit() {
	n := s.overCount.Add(1)
	now := time.Now().Unix()
	last := s.overLogged.Load()
	if now > last && s.overLogged.CompareAndSwap(last, now) {
		s.overCount.Add(-n)
		s.log.Warn("postfix policy: too many connections, closing new ones without reply",
			"max_conns", s.cfg.MaxConns, "refused", n)
	}
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.nconns.Add(-1)
}

// Shutdown stops the server gracefully: it closes the listeners and the
// idle connections at once, lets every request being read or answered
// finish (its connection is closed after the answer), and returns when no
// connection is left, or with ctx's error after closing the rest when ctx
// ends first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes the listeners and every connection at once; requests being
// answered get no answer (Postfix applies its default action).
func (s *Server) Close() error {
	s.closing.Store(true)
	s.closeListeners()
	s.closeAll()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeIdle closes idle connections and reports whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.Load() == stateIdle {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

// Connection states for Shutdown.
const (
	stateIdle   int32 = iota // waiting for the first line of a request
	stateActive              // reading or answering a request
)

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{s: s, nc: nc, id: s.seq.Add(1)}
	c.r = bufio.NewReaderSize(nc, s.lim.maxLine)
	c.q.buf = make([]byte, 0, 1024)
	return c
}

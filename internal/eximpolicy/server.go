// Package eximpolicy answers Exim's ${readsocket} queries: Exim's ACLs ask
// mailwarden, over a unix or TCP socket, whether a client may connect, try
// AUTH, send, and report what happened (a failed AUTH, a refused recipient,
// a received message, the end of the session).
//
// One request per connection, as readsocket makes it: Exim connects, writes
// one line, by default shuts down its write side, and reads the answer
// until end of file. The request line is
//
//	v1 <stage> key=value key=value ...
//
// with values bare or in Exim's ${quote:} form; the answer is one line
// without a line end: DUNNO, DROP <text>, DEFER <text>, FREEZE <text> or
// TARPIT <seconds>. docs/integrate-exim.md specifies the format and the
// ACLs that speak it (etc/exim/); readsocket itself is documented in the
// Exim specification, chapter "String expansions":
// https://www.exim.org/exim-html-current/doc/html/spec_html/ch-string_expansions.html
//
// The package converts requests into events and verdicts into answers. It
// does not decide anything (decide.Decider does), create or own the socket
// file, or parse Exim's logs (package exim does).
package eximpolicy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mailwarden/mailwarden/internal/decide"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// Source is the Event.Source of every event this package produces.
const Source = "exim"

// Config configures a Server. The zero value of every field but Decider
// means its default.
type Config struct {
	// Decider answers every request. Required.
	Decider decide.Decider
	// Clock stamps events and checks. Default: time.Now.
	Clock decide.Clock
	// Logger receives one line per refused or broken request. Default:
	// slog.Default().
	Logger *slog.Logger
	// Node is Event.Node: the name of the Exim host. Default: "".
	Node string

	// MaxLine is the longest request line accepted, in bytes, without its
	// line end. Longer requests are answered DUNNO and logged. Default: 4096.
	MaxLine int
	// ReadTimeout is how long a connection may take, from accept, to send
	// its whole request (a line end or end of file). Default: 5s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the answer. Default: 5s.
	WriteTimeout time.Duration
	// MaxConns is the most connections handled at once; further ones are
	// answered DUNNO and closed at once (Exim fails open). Default: 1024.
	MaxConns int

	// TarpitSeconds is the delay a TARPIT answer asks for (the ACLs turn it
	// into "delay = <n>s"). Default (0): 3. Negative: no tarpit, a Tarpit
	// verdict is answered DUNNO.
	TarpitSeconds int
	// BlockedText is sent with DROP when the client address is blocked.
	// Default: "Too many failed logins from your address, try again later".
	BlockedText string
	// LockedText is sent with DROP when the account is locked. Default:
	// "Account temporarily locked, contact your provider".
	LockedText string
	// DeferText is sent with DEFER. Default: "Sending limit reached, try
	// again later".
	DeferText string
	// HoldText is sent with FREEZE; the ACLs write it to Exim's log, the
	// client never sees it. Default: "Message accepted for review".
	HoldText string
}

// Defaults of Config.
const (
	DefaultMaxLine       = 4096
	DefaultReadTimeout   = 5 * time.Second
	DefaultWriteTimeout  = 5 * time.Second
	DefaultMaxConns      = 1024
	DefaultTarpitSeconds = 3
	DefaultBlockedText   = "Too many failed logins from your address, try again later"
	DefaultLockedText    = "Account temporarily locked, contact your provider"
	DefaultDeferText     = "Sending limit reached, try again later"
	DefaultHoldText      = "Message accepted for review"
)

// ErrServerClosed is returned by Serve after Shutdown or Close. It wraps
// net.ErrClosed, so a caller that treats a closed listener as a normal end
// needs no special case.
var ErrServerClosed = fmt.Errorf("eximpolicy: server closed: %w", net.ErrClosed)

// Server answers Exim's readsocket queries. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}
	buf sync.Pool // *[]byte of MaxLine+1

	dunno, drop, lock, deferA, freeze, tarpit []byte // the answers

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup

	overloaded atomic.Int64 // connections refused since the last log line
	overLogged atomic.Int64 // unix nanoseconds of that line
}

// conn is one client connection; reading is set while it waits for its
// request (Shutdown closes those, and lets the others finish).
type conn struct {
	net.Conn
	reading atomic.Bool
}

// New checks cfg, fills in its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Decider == nil {
		return nil, errors.New("eximpolicy: Config.Decider is required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.TarpitSeconds == 0 {
		cfg.TarpitSeconds = DefaultTarpitSeconds
	}
	if cfg.TarpitSeconds > 3600 {
		return nil, fmt.Errorf("eximpolicy: TarpitSeconds %d is more than an hour", cfg.TarpitSeconds)
	}
	texts := []struct {
		name string
		v    *string
		def  string
	}{
		{"BlockedText", &cfg.BlockedText, DefaultBlockedText},
		{"LockedText", &cfg.LockedText, DefaultLockedText},
		{"DeferText", &cfg.DeferText, DefaultDeferText},
		{"HoldText", &cfg.HoldText, DefaultHoldText},
	}
	for _, t := range texts {
		if *t.v == "" {
			*t.v = t.def
		}
		if err := checkText(*t.v); err != nil {
			return nil, fmt.Errorf("eximpolicy: %s %q: %v", t.name, *t.v, err)
		}
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		sem:       make(chan struct{}, cfg.MaxConns),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		dunno:     []byte("DUNNO"),
		drop:      []byte("DROP " + cfg.BlockedText),
		lock:      []byte("DROP " + cfg.LockedText),
		deferA:    []byte("DEFER " + cfg.DeferText),
		freeze:    []byte("FREEZE " + cfg.HoldText),
		tarpit:    []byte("TARPIT " + strconv.Itoa(cfg.TarpitSeconds)),
	}
	if cfg.TarpitSeconds < 0 {
		s.tarpit = s.dunno
	}
	n := cfg.MaxLine + 1
	s.buf.New = func() any { b := make([]byte, n); return &b }
	return s, nil
}

// checkText accepts an answer text: one line of printable UTF-8, at most
// 200 bytes (Exim puts it into an SMTP reply).
func checkText(t string) error {
	if len(t) > 200 {
		return errors.New("longer than 200 bytes")
	}
	if !utf8.ValidString(t) {
		return errors.New("not UTF-8")
	}
	for _, r := range t {
		if !unicode.IsPrint(r) {
			return errors.New("contains a control character")
		}
	}
	return nil
}

// Serve accepts connections on ln and answers them until ln is closed. It
// returns ErrServerClosed after Shutdown or Close, or the listener's error.
// Serve closes ln when it returns. It may serve several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
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
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: wait and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("exim listener: accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		select {
		case s.sem <- struct{}{}:
		default:
			s.overload(nc)
			continue
		}
		c := &conn{Conn: nc}
		c.reading.Store(true)
		nc.SetDeadline(time.Now().Add(s.cfg.ReadTimeout))
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			<-s.sem
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// overload answers a connection beyond MaxConns with DUNNO and closes it,
// logging at most one line every 10 seconds.
func (s *Server) overload(nc net.Conn) {
	defer func() {
		nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		nc.Write(s.dunno)
		nc.Close()
	}()
	n := s.overloaded.Add(1)
	now := time.Now().UnixNano()
	last := s.overLogged.Load()
	if now-last >= int64(10*time.Second) && s.overLogged.CompareAndSwap(last, now) {
		s.overloaded.Add(-n)
		s.log.Warn("exim listener: too many connections, answered DUNNO without asking", "refused", n, "max_conns", s.cfg.MaxConns)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops accepting, closes connections still waiting for their
// request, and waits for the others to be answered or for ctx to end (then
// it closes them and returns ctx's error).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		if c.reading.Load() {
			c.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns() // a Decider still busy finishes on its own
		return ctx.Err()
	}
}

// Close stops accepting and closes every connection at once, without
// waiting for requests in progress.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	s.closeConns()
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) serveConn(c *conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		<-s.sem
		s.wg.Done()
	}()
	bp := s.buf.Get().(*[]byte)
	defer s.buf.Put(bp)

	line, err := readRequest(c, *bp)
	c.reading.Store(false)
	switch {
	case err == nil:
	case errors.Is(err, errTooLong):
		s.log.Warn("exim request refused: line too long, answered DUNNO", "max_line", s.cfg.MaxLine, "peer", peer(c))
		s.answer(c, s.dunno)
		return
	case s.isClosed():
		return // Shutdown or Close ended a connection still waiting for its request
	case errors.Is(err, errNoRequest):
		// A connection check (monitoring); Exim always sends a request.
		s.log.Debug("exim listener: "+err.Error(), "peer", peer(c))
		return
	case errors.Is(err, errIdle), errors.Is(err, errIncomplete):
		s.log.Warn("exim request refused: "+err.Error(), "read_timeout", s.cfg.ReadTimeout, "peer", peer(c))
		return
	default:
		s.log.Warn("exim request refused: "+err.Error(), "peer", peer(c))
		return
	}
	s.answer(c, s.handle(line, c))
}

// answer writes the answer; Exim reads it until the connection closes.
func (s *Server) answer(c net.Conn, a []byte) {
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := c.Write(a); err != nil {
		s.log.Warn("exim listener: writing the answer failed", "err", err, "peer", peer(c))
	}
}

var (
	errTooLong    = errors.New("line too long")
	errIdle       = errors.New("no request before the read timeout")
	errIncomplete = errors.New("incomplete request: no line end or end of file before the read timeout (with readsocket's shutdown=no the request must end in \\n)")
	errNoRequest  = errors.New("connection closed without a request")
)

// readRequest reads one request: up to a line end or the end of file
// (readsocket's write-side shutdown), whichever comes first. buf is the
// whole budget: a request that fills it without a line end is too long.
// A trailing "\r" is dropped.
func readRequest(c net.Conn, buf []byte) ([]byte, error) {
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if m > 0 {
			if i := bytes.IndexByte(buf[n:n+m], '\n'); i >= 0 {
				return trimCR(buf[:n+i]), nil
			}
			n += m
			if n == len(buf) {
				return nil, errTooLong
			}
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			if n == 0 {
				return nil, errNoRequest
			}
			return trimCR(buf[:n]), nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if n == 0 {
				return nil, errIdle
			}
			return nil, errIncomplete
		default:
			return nil, err
		}
	}
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// handle answers one request line.
func (s *Server) handle(line []byte, c net.Conn) []byte {
	var r request
	if err := parseRequest(line, &r); err != nil {
		s.log.Warn("exim request refused: "+err.Error()+", answered DUNNO", "request", excerpt(line), "peer", peer(c))
		return s.dunno
	}
	return s.respond(&r)
}

// respond turns a parsed request into a decision and its answer.
func (s *Server) respond(r *request) []byte {
	now := s.cfg.Clock()
	var kind event.Kind
	switch r.stage {
	case StageConnect, StageAuth, StageMail, StageRcpt:
		return s.verdictAnswer(r.stage, s.cfg.Decider.Check(event.NormalizeAccount(string(r.account)), r.ip, now))
	case StageAuthFail:
		kind = event.AuthFail
	case StageAuthOK:
		kind = event.AuthOK
	case StageRcptFail:
		kind = event.RcptRejected
	case StageData:
		kind = event.Message
	case StageQuit:
		kind = event.Disconnect
	}
	account := r.account
	if kind == event.AuthFail {
		account = failID(account)
	}
	ev := &event.Event{
		Time:     now,
		Kind:     kind,
		Account:  event.NormalizeAccount(string(account)),
		IP:       r.ip,
		Protocol: event.SMTP,
		Session:  session(r),
		Node:     s.cfg.Node,
		Source:   Source,
	}
	if kind == event.AuthFail {
		ev.PwHash = string(r.pwhash)
	}
	if kind == event.Message {
		ev.Size, ev.Rcpts, ev.QueueID = r.size, r.rcpts, string(r.qid)
	}
	return s.verdictAnswer(r.stage, s.cfg.Decider.Decide(ev))
}

// verdictAnswer maps a verdict to the answer for a stage. FREEZE only
// where a message is being received; the end of a session is answered
// DUNNO whatever the verdict (Exim ignores the outcome of those ACLs).
func (s *Server) verdictAnswer(st Stage, v engine.Verdict) []byte {
	if st == StageQuit {
		return s.dunno
	}
	switch v {
	case engine.Blocked:
		return s.drop
	case engine.Lock:
		return s.lock
	case engine.Defer:
		return s.deferA
	case engine.Hold:
		switch st {
		case StageAuthOK, StageMail, StageRcpt, StageRcptFail, StageData:
			return s.freeze
		}
	case engine.Tarpit:
		return s.tarpit
	}
	return s.dunno
}

// failID returns the account of $authenticated_fail_id, which Exim 4.96
// sets to the fragment of its log line: " (set_id=joe@example.com)".
func failID(b []byte) []byte {
	t := bytes.TrimSpace(b)
	if len(t) > len("(set_id=)") && bytes.HasPrefix(t, []byte("(set_id=")) && t[len(t)-1] == ')' {
		return t[len("(set_id=") : len(t)-1]
	}
	return b
}

// session identifies the client connection: the client's address and
// port, and ours when the ACL sends them ("192.0.2.7:50312>198.51.100.1:587").
func session(r *request) string {
	if !r.ip.IsValid() {
		return ""
	}
	var a [96]byte
	b := appendHostPort(a[:0], r.ip, r.port)
	switch {
	case r.lip.IsValid():
		b = appendHostPort(append(b, '>'), r.lip, r.lport)
	case r.lport != 0:
		b = strconv.AppendUint(append(b, '>', ':'), uint64(r.lport), 10)
	}
	return string(b)
}

func appendHostPort(b []byte, ip netip.Addr, port uint16) []byte {
	if port == 0 {
		return ip.AppendTo(b)
	}
	return netip.AddrPortFrom(ip, port).AppendTo(b)
}

// excerpt returns the start of a request line for a log line, quoted so
// that client-supplied names cannot forge log lines.
func excerpt(line []byte) string {
	if len(line) > 120 {
		return strconv.Quote(string(line[:120])) + "…"
	}
	return strconv.Quote(string(line))
}

func peer(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Package dovecotpolicy is mailwarden's Dovecot authentication policy
// server: the HTTP endpoint named by Dovecot's auth_policy_server_url
// (Dovecot 2.2.25 and later; checked against 2.3.19 and 2.4).
//
// Dovecot POSTs a JSON object built from auth_policy_request_attributes to
// the URL with "?command=allow" before authentication (and again after a
// successful one) and with "?command=report" once the result is known. An
// allow is a question: it is answered from Decider.Check and records
// nothing; the answer is {"status":-1,"msg":…} for a locked account or a
// blocked address, {"status":N} to slow the client down by N seconds, and
// {"status":0} otherwise. A report is a fact: a success becomes an auth_ok
// event and a failure an auth_fail event (with Dovecot's password hash,
// which tells a stale client retrying one wrong password from a new
// guess), both fed to Decider.Decide; failures that were Dovecot's own
// doing (an internal error) or ours (a policy refusal) are not counted as
// guesses. See docs/integrate-dovecot.md for the Dovecot side.
//
// The package owns the HTTP protocol, the request parsing and the API key
// check. It speaks HTTP/1.1 itself (http.go, head.go), strictly and only
// as far as one endpoint needs: with net/http, a request cost twice the
// CPU (a background read per request, header maps, 60 allocations), and
// this listener sees every login attempt of every Dovecot in front of it.
// It does not decide anything, does not serve on unix sockets for
// Dovecot (Dovecot's HTTP client speaks only http:// and https:// URLs:
// listen on loopback TCP), and does not terminate TLS.
//
// Spec: https://doc.dovecot.org/2.3/configuration_manual/authentication/auth_policy/
// and Dovecot's src/auth/auth-policy.c.
package dovecotpolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mailwarden/mailwarden/internal/decide"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// Source is the Event.Source of every event of this package.
const Source = "dovecot-policy"

// Defaults of Config.
const (
	DefaultAPIHeader         = "X-API-Key" // what Dovecot sends for an api_header without a colon
	DefaultRejectMessage     = "Login refused. Contact your mail provider if this persists."
	DefaultTarpitSeconds     = 3
	DefaultMaxBodyBytes      = 16 << 10
	DefaultMaxConns          = 256
	DefaultMaxHeaderBytes    = 8 << 10
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultLogPerSecond      = 10
	maxTarpitSeconds         = 300
	maxRejectMessage         = 256
)

// Config configures a Server. The zero value of every field but Decider
// means its default.
type Config struct {
	// Decider answers and records. Required.
	Decider decide.Decider
	// Clock stamps events and checks. Default time.Now.
	Clock decide.Clock
	// Logger receives one line per refused HTTP request (bad input, wrong
	// API key) and, at debug level, one per policy refusal. Default
	// slog.Default().
	Logger *slog.Logger
	// Node is the Event.Node of recorded events (this mail server's
	// name). Default "".
	Node string

	// APIHeader is the request header that carries the API key.
	// Dovecot's auth_policy_server_api_header = "Name: value" sends header
	// Name; a value without a colon is sent as X-API-Key. Default
	// "X-API-Key".
	APIHeader string
	// APIKey is the exact value expected in APIHeader (e.g. "Basic
	// bWFpbHdhcmRlbjpzM2NyZXQ=" with APIHeader "Authorization"), compared
	// in constant time. Default "": no key is required (acceptable only
	// on a loopback listener).
	APIKey string

	// RejectMessage is the "msg" of a refusal; Dovecot passes it to the
	// client as the reason of the failed login. It must not reveal why
	// (no detector names, no counts). Default DefaultRejectMessage.
	RejectMessage string
	// BlockedMessage, when set, replaces RejectMessage for a blocked
	// address (RejectMessage then speaks of locked accounts). Default "".
	BlockedMessage string
	// TarpitSeconds is the status of an allow answered with a tarpit: the
	// client waits that long before its password is checked. Default 3;
	// negative: never tarpit (answer 0); at most 300.
	TarpitSeconds int

	// MaxBodyBytes bounds a request body; larger ones get 413. Default
	// 16 KiB (Dovecot's requests are 150–300 bytes; only attributes
	// carrying client-chosen data, such as device_id=%{client_id}, grow).
	MaxBodyBytes int64
	// MaxConns bounds concurrent connections; further ones wait to be
	// accepted. Default 256 (Dovecot opens at most 100 per auth process).
	MaxConns int
	// MaxHeaderBytes bounds the request line and headers. Default 8 KiB.
	MaxHeaderBytes int
	// ReadHeaderTimeout, ReadTimeout and WriteTimeout bound one request;
	// IdleTimeout closes a kept-alive connection with no request. Defaults
	// 5 s, 10 s, 10 s and 60 s (IdleTimeout must stay above Dovecot's 10 s
	// so that Dovecot, not the server, closes idle connections: a server
	// closing one just as Dovecot reuses it costs a failed, fail-open
	// request).
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// LogPerSecond bounds log lines about refused HTTP requests; the
	// rest are counted and the count is logged with the next line.
	// Default 10; negative: unlimited.
	LogPerSecond int
}

// Stats counts what the server did since it started.
type Stats struct {
	Allow        uint64 // allow requests answered
	Refused      uint64 // … of them with status -1
	Tarpitted    uint64 // … of them with a tarpit
	Report       uint64 // report requests answered
	Logins       uint64 // reports recorded as auth_ok
	Failures     uint64 // reports recorded as auth_fail
	NotCounted   uint64 // failure reports not counted as guesses (policy refusal, internal error, expired, disabled)
	BadRequests  uint64 // requests refused with 4xx for their form or content
	Unauthorized uint64 // requests refused for a missing or wrong API key
	Dropped      uint64 // connections closed without a valid request (malformed HTTP, idle)
}

type counters struct {
	allow, refused, tarpitted, report, logins, failures, notCounted, bad, unauthorized, dropped atomic.Uint64
}

// Server answers Dovecot's auth policy requests on the listeners given
// to Serve, speaking HTTP/1.1 itself (http.go).
type Server struct {
	cfg    Config
	dec    decide.Decider
	now    decide.Clock
	log    *slog.Logger
	logLim logLimiter

	keyHeader string // canonical
	keySum    [sha256.Size]byte
	needKey   bool

	okBody, tarpitBody, rejectBody, blockedBody []byte

	stats counters

	shutting  atomic.Bool // Shutdown or Close was called
	mu        sync.Mutex
	done      chan struct{} // closed by Shutdown or Close
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
}

// New checks cfg, fills in its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Decider == nil {
		return nil, errors.New("dovecot policy: no Decider")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.APIHeader == "" {
		cfg.APIHeader = DefaultAPIHeader
	}
	if !validHeaderName(cfg.APIHeader) {
		return nil, fmt.Errorf("dovecot policy: api header %q is not a valid HTTP header name", cfg.APIHeader)
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n\x00") || strings.TrimSpace(cfg.APIKey) != cfg.APIKey {
		return nil, errors.New("dovecot policy: the api key must not contain line breaks or start or end with spaces")
	}
	if cfg.RejectMessage == "" {
		cfg.RejectMessage = DefaultRejectMessage
	}
	if err := checkMessage(cfg.RejectMessage); err != nil {
		return nil, err
	}
	if cfg.BlockedMessage == "" {
		cfg.BlockedMessage = cfg.RejectMessage
	}
	if err := checkMessage(cfg.BlockedMessage); err != nil {
		return nil, err
	}
	switch {
	case cfg.TarpitSeconds == 0:
		cfg.TarpitSeconds = DefaultTarpitSeconds
	case cfg.TarpitSeconds > maxTarpitSeconds:
		return nil, fmt.Errorf("dovecot policy: tarpit of %d seconds is over the %d allowed", cfg.TarpitSeconds, maxTarpitSeconds)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	setDur(&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDur(&cfg.ReadTimeout, DefaultReadTimeout)
	setDur(&cfg.WriteTimeout, DefaultWriteTimeout)
	setDur(&cfg.IdleTimeout, DefaultIdleTimeout)
	if cfg.LogPerSecond == 0 {
		cfg.LogPerSecond = DefaultLogPerSecond
	}

	s := &Server{
		cfg:       cfg,
		dec:       cfg.Decider,
		now:       cfg.Clock,
		log:       cfg.Logger,
		logLim:    logLimiter{per: int64(cfg.LogPerSecond)},
		keyHeader: textproto.CanonicalMIMEHeaderKey(cfg.APIHeader),
		keySum:    sha256.Sum256([]byte(cfg.APIKey)),
		needKey:   cfg.APIKey != "",
		okBody:    []byte(`{"status":0}`),
		done:      make(chan struct{}),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	s.tarpitBody = s.okBody
	if cfg.TarpitSeconds > 0 {
		s.tarpitBody = []byte(`{"status":` + strconv.Itoa(cfg.TarpitSeconds) + `}`)
	}
	s.rejectBody = refusal(cfg.RejectMessage)
	s.blockedBody = refusal(cfg.BlockedMessage)
	return s, nil
}

// refusal is the answer refusing a login with msg.
func refusal(msg string) []byte {
	m, _ := json.Marshal(msg)
	return []byte(`{"status":-1,"msg":` + string(m) + `}`)
}

func setDur(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func checkMessage(m string) error {
	if len(m) > maxRejectMessage || !utf8.ValidString(m) || strings.IndexFunc(m, unicode.IsControl) >= 0 {
		return fmt.Errorf("dovecot policy: refusal messages must be at most %d bytes of printable UTF-8", maxRejectMessage)
	}
	return nil
}

// Serve accepts connections on ln, at most MaxConns at a time (further
// ones wait to be accepted), and answers them until Shutdown or Close; it
// then returns nil. Any number of listeners may be served. Serve closes
// ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	sem := make(chan struct{}, s.cfg.MaxConns)
	var delay time.Duration // after a temporary accept error
	for {
		select {
		case sem <- struct{}{}:
		case <-s.done:
			return nil
		}
		nc, err := ln.Accept()
		if err != nil {
			<-sem
			if s.shutting.Load() {
				return nil
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("dovecot policy: accept failed; retrying", "source", Source, "error", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-s.done:
				}
				continue
			}
			return err
		}
		delay = 0
		c := s.newConn(nc, sem)
		s.mu.Lock()
		if s.shutting.Load() {
			s.mu.Unlock()
			nc.Close()
			<-sem
			return nil
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections and waits for the
// requests in flight until ctx is done; their answers close their
// connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	wait := time.Millisecond
	for {
		s.mu.Lock()
		for c := range s.conns {
			if c.state.CompareAndSwap(stateIdle, stateClosed) {
				c.nc.Close()
			}
		}
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.stop()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

// stop stops accepting: no listener accepts, no connection goes on
// after its current request.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutting.Swap(true) {
		return
	}
	close(s.done)
	for ln := range s.listeners {
		ln.Close()
	}
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Allow: c.allow.Load(), Refused: c.refused.Load(), Tarpitted: c.tarpitted.Load(),
		Report: c.report.Load(), Logins: c.logins.Load(), Failures: c.failures.Load(),
		NotCounted: c.notCounted.Load(), BadRequests: c.bad.Load(), Unauthorized: c.unauthorized.Load(),
		Dropped: c.dropped.Load(),
	}
}

// handle answers one policy request whose head was read; it reads the
// body itself, once the head passed its checks.
func (c *conn) handle(h *reqHead) {
	s := c.s
	if string(h.method) != "POST" {
		c.skipBody(h)
		c.refuse(405, "method not allowed", "", hdrAllow, slog.String("method", strconv.Quote(string(h.method))))
		return
	}
	if s.needKey && !c.keyOK(h) {
		return
	}
	cmd := command(h.query)
	if cmd != "allow" && cmd != "report" {
		c.skipBody(h)
		c.refuse(400, "unknown command", "", 0, slog.String("command", strconv.Quote(cmd)))
		return
	}
	if !isJSON(h.ctype) {
		c.skipBody(h)
		c.refuse(415, "content type is not application/json", cmd, 0, slog.String("content_type", strconv.Quote(string(h.ctype))))
		return
	}
	if h.clen > s.cfg.MaxBodyBytes {
		c.unread = true
		c.refuse(413, "body too large", cmd, hdrClose, slog.Int64("bytes", h.clen))
		return
	}
	body, err := c.readBody(h)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			c.refuse(413, "body too large", cmd, hdrClose, slog.Int64("max_bytes", s.cfg.MaxBodyBytes))
			return
		}
		c.closing = true
		c.refuse(400, "reading body failed", cmd, 0, slog.String("error", err.Error()))
		return
	}
	var req request
	c.tmp, err = parseRequest(body, &req, cmd == "report", c.tmp)
	if err != nil {
		c.refuse(400, err.Error(), cmd, 0)
		return
	}
	if !req.hasLogin || !req.hasRemote {
		c.refuse(400, "login or remote missing: auth_policy_request_attributes must include login=%{requested_username} remote=%{rip}", cmd, 0)
		return
	}
	ip, ok := parseIP(req.remote)
	if !ok {
		c.refuse(400, "remote is not an IP address", cmd, 0, slog.String("remote", quoteShort(req.remote)))
		return
	}
	acct := event.NormalizeAccount(req.login)
	if cmd == "allow" {
		c.answerJSON(s.allow(acct, ip))
		return
	}
	if !req.hasSuccess {
		c.refuse(400, "report without success", cmd, 0)
		return
	}
	s.report(acct, ip, &req)
	c.answerJSON(s.okBody)
}

// allow answers a question asked before (or right after) authentication.
func (s *Server) allow(acct string, ip netip.Addr) []byte {
	s.stats.allow.Add(1)
	v := s.dec.Check(acct, ip, s.now())
	body := s.okBody
	switch v {
	case engine.Lock:
		s.stats.refused.Add(1)
		body = s.rejectBody
	case engine.Blocked:
		s.stats.refused.Add(1)
		body = s.blockedBody
	case engine.Tarpit:
		if s.cfg.TarpitSeconds > 0 {
			s.stats.tarpitted.Add(1)
			body = s.tarpitBody
		}
	}
	if v != engine.Allow && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.LogAttrs(context.Background(), slog.LevelDebug, "dovecot policy: answered allow", slog.String("source", Source),
			slog.String("account", acct), slog.String("ip", ip.String()), slog.String("verdict", v.String()))
	}
	return body
}

// report records the outcome of an authentication.
func (s *Server) report(acct string, ip netip.Addr, req *request) {
	s.stats.report.Add(1)
	ev := event.Event{
		Time:     s.now(),
		Account:  acct,
		IP:       ip,
		Protocol: event.ParseProtocol(req.protocol),
		Session:  req.session,
		Node:     s.cfg.Node,
		Source:   Source,
	}
	switch {
	case req.success:
		ev.Kind = event.AuthOK
		s.stats.logins.Add(1)
	case !countsAsGuess(req):
		s.stats.notCounted.Add(1)
		return
	default:
		ev.Kind = event.AuthFail
		ev.PwHash = req.pwhash
		s.stats.failures.Add(1)
	}
	v := s.dec.Decide(&ev)
	if v != engine.Allow && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.LogAttrs(context.Background(), slog.LevelDebug, "dovecot policy: recorded report", slog.String("source", Source),
			slog.String("kind", ev.Kind.String()), slog.String("account", acct),
			slog.String("ip", ip.String()), slog.String("verdict", v.String()))
	}
}

// countsAsGuess tells whether a failed authentication is evidence of a
// wrong password or user name. Not counted: our own refusal (counting it
// would let a refusal feed the very detectors that caused it, and extend a
// block that an admin just lifted), Dovecot's internal errors, and
// accounts refused for their own state (password expired, account
// disabled) rather than for the password tried. Unknown 2.4+ fail types
// count.
func countsAsGuess(req *request) bool {
	if req.policyReject {
		return false
	}
	switch req.failType {
	case "policy", "internal", "expired", "disabled":
		return false
	}
	return true
}

// keyOK checks the API key and answers 401 or 403 when it is missing or
// wrong (sent twice counts as wrong).
func (c *conn) keyOK(h *reqHead) bool {
	s := c.s
	if h.keys == 1 {
		sum := sha256.Sum256(h.key)
		if subtle.ConstantTimeCompare(sum[:], s.keySum[:]) == 1 {
			return true
		}
	}
	s.stats.unauthorized.Add(1)
	c.skipBody(h)
	if h.keys == 0 {
		hdrs := 0
		if s.keyHeader == "Authorization" {
			hdrs = hdrBasicAuth
		}
		c.logRefusal("API key missing", "", slog.String("header", s.keyHeader))
		c.answerPlain(401, "API key missing", hdrs)
		return false
	}
	c.logRefusal("API key wrong", "", slog.String("header", s.keyHeader))
	c.answerPlain(403, "API key wrong", 0)
	return false
}

// refuse answers a bad request with a 4xx and logs one line.
func (c *conn) refuse(code int, reason, cmd string, hdrs int, attrs ...slog.Attr) {
	c.s.stats.bad.Add(1)
	c.logRefusal(reason, cmd, attrs...)
	c.answerPlain(code, reason, hdrs)
}

func (c *conn) logRefusal(reason, cmd string, attrs ...slog.Attr) {
	s := c.s
	ok, dropped := s.logLim.allow(s.now())
	if !ok {
		return
	}
	a := make([]slog.Attr, 0, 5+len(attrs))
	a = append(a, slog.String("source", Source), slog.String("reason", reason), slog.String("peer", c.peerAddr()))
	if cmd != "" {
		a = append(a, slog.String("command", cmd))
	}
	a = append(a, attrs...)
	if dropped > 0 {
		a = append(a, slog.Int64("suppressed", dropped))
	}
	s.log.LogAttrs(context.Background(), slog.LevelWarn, "dovecot policy: request refused", a...)
}

// command returns the value of the last "command" query parameter.
func command(q []byte) string {
	var cmd []byte
	for len(q) > 0 {
		var kv []byte
		kv, q, _ = bytes.Cut(q, []byte{'&'})
		k, v, _ := bytes.Cut(kv, []byte{'='})
		if string(k) == "command" {
			cmd = v
		}
	}
	switch string(cmd) { // no allocation for the usual values
	case "allow":
		return "allow"
	case "report":
		return "report"
	}
	v := string(cmd)
	if strings.ContainsAny(v, "%+") {
		if u, err := url.QueryUnescape(v); err == nil {
			v = u
		}
	}
	return v
}

func isJSON(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return equalFold(bytes.TrimSpace(ct), "application/json")
}

var errTooLarge = errors.New("body too large")

// parseIP parses Dovecot's %{rip}: brackets and a port are tolerated, an
// IPv4-mapped IPv6 address becomes IPv4. "" (a local connection) is the
// zero Addr, which is valid here.
func parseIP(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.Addr{}, true
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if ip, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// quoteShort quotes a client-supplied value for a log line, cut to 64
// bytes.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strconv.Quote(s)
}

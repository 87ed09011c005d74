package postfixpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

var t0 = time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC)

// call is one Decider call the fake recorded.
type call struct {
	check   bool        // Check (else Decide)
	ev      event.Event // Decide's event
	account string      // Check's account
	ip      netip.Addr  // Check's address
	t       time.Time   // Check's time
}

func (c call) String() string {
	if c.check {
		return fmt.Sprintf("check %q %v", c.account, c.ip)
	}
	return fmt.Sprintf("decide %s %q %v session=%q size=%d rcpts=%d qid=%q",
		c.ev.Kind, c.ev.Account, c.ev.IP, c.ev.Session, c.ev.Size, c.ev.Rcpts, c.ev.QueueID)
}

// fakeDecider records every call and answers with scripted verdicts.
type fakeDecider struct {
	mu     sync.Mutex
	calls  []call
	decide func(ev *event.Event) engine.Verdict // nil: Allow
	check  func(account string, ip netip.Addr) engine.Verdict
}

func (f *fakeDecider) Decide(ev *event.Event) engine.Verdict {
	f.mu.Lock()
	f.calls = append(f.calls, call{ev: *ev})
	fn := f.decide
	f.mu.Unlock()
	if fn == nil {
		return engine.Allow
	}
	return fn(ev)
}

func (f *fakeDecider) Check(account string, ip netip.Addr, t time.Time) engine.Verdict {
	f.mu.Lock()
	f.calls = append(f.calls, call{check: true, account: account, ip: ip, t: t})
	fn := f.check
	f.mu.Unlock()
	if fn == nil {
		return engine.Allow
	}
	return fn(account, ip)
}

// take returns the calls recorded since the last take.
func (f *fakeDecider) take() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeDecider) script(decide func(*event.Event) engine.Verdict, check func(string, netip.Addr) engine.Verdict) {
	f.mu.Lock()
	f.decide, f.check = decide, check
	f.mu.Unlock()
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type testServer struct {
	s    *Server
	fake *fakeDecider
	logs *syncBuffer
	addr string // unix socket path
	done chan error
}

// startServer serves on a unix socket in a temporary folder. mod may
// change the configuration.
func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	ts := &testServer{fake: &fakeDecider{}, logs: &syncBuffer{}, done: make(chan error, 1)}
	cfg := Config{
		Decider: ts.fake,
		Clock:   func() time.Time { return t0 },
		Logger:  slog.New(slog.NewTextHandler(ts.logs, nil)),
		Node:    "mx1",
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.s = s
	ts.addr = filepath.Join(t.TempDir(), "policy.sock")
	ln, err := net.Listen("unix", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func (ts *testServer) dial(t *testing.T) *client {
	t.Helper()
	nc, err := net.Dial("unix", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	// A safety net so that a broken server fails the test instead of
	// hanging it; no test asserts on elapsed time.
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// answer reads one answer: everything up to and including its empty line.
func (c *client) answer() string {
	c.t.Helper()
	var b strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			c.t.Fatalf("reading answer: %v (got %q)", err, b.String())
		}
		if line == "\n" {
			return b.String()
		}
	}
}

// ask sends a request and returns its answer.
func (c *client) ask(req string) string {
	c.t.Helper()
	c.send(req)
	return c.answer()
}

// closedWithoutReply asserts that the server closes the connection and
// sends nothing more.
func (c *client) closedWithoutReply() {
	c.t.Helper()
	rest, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("want the server to close the connection, got %v", err)
	}
	if len(rest) != 0 {
		c.t.Fatalf("want no reply, got %q", rest)
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// req builds a request from name=value pairs.
func req(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(kv[i] + "=" + kv[i+1] + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// pf builds a request the way Postfix 3.7 sends it for one session: every
// attribute, with the protocol state and overrides given.
func pf(state string, over ...string) string {
	attrs := [][2]string{
		{"request", "smtpd_access_policy"},
		{"protocol_state", state},
		{"protocol_name", "ESMTP"},
		{"client_address", "192.0.2.10"},
		{"client_name", "client.example.net"},
		{"client_port", "40000"},
		{"reverse_client_name", "client.example.net"},
		{"server_address", "198.51.100.1"},
		{"server_port", "587"},
		{"helo_name", "[192.0.2.10]"},
		{"sender", ""},
		{"recipient", ""},
		{"recipient_count", "0"},
		{"queue_id", ""},
		{"instance", "1a2b.65f1c2d3.4e5f6.0"},
		{"size", "0"},
		{"etrn_domain", ""},
		{"stress", ""},
		{"sasl_method", ""},
		{"sasl_username", ""},
		{"sasl_sender", ""},
		{"ccert_subject", ""},
		{"ccert_issuer", ""},
		{"ccert_fingerprint", ""},
		{"ccert_pubkey_fingerprint", ""},
		{"encryption_protocol", "TLSv1.3"},
		{"encryption_cipher", "TLS_AES_256_GCM_SHA384"},
		{"encryption_keysize", "256"},
		{"policy_context", ""},
		{"compatibility_level", "3.6"},
		{"mail_version", "3.7.11"},
	}
	for i := 0; i+1 < len(over); i += 2 {
		found := false
		for j := range attrs {
			if attrs[j][0] == over[i] {
				attrs[j][1] = over[i+1]
				found = true
			}
		}
		if !found {
			attrs = append(attrs, [2]string{over[i], over[i+1]})
		}
	}
	var b strings.Builder
	for _, a := range attrs {
		b.WriteString(a[0] + "=" + a[1] + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

// waitFor polls cond; it fails the test after a generous safety limit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 4000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

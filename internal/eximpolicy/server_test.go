package eximpolicy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

var testNow = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

// call is one question the fake Decider was asked.
type call struct {
	check   bool // Check, else Decide
	account string
	ip      netip.Addr
	t       time.Time
	ev      event.Event // Decide
}

// fakeDecider records what it is asked and answers verdict (Allow if nil).
// With gate set, it signals entered and waits for gate before answering.
type fakeDecider struct {
	mu      sync.Mutex
	calls   []call
	verdict func(kind event.Kind, account string, ip netip.Addr) engine.Verdict // kind is KindUnknown for Check
	entered chan struct{}
	gate    chan struct{}
}

func (d *fakeDecider) answer(kind event.Kind, account string, ip netip.Addr) engine.Verdict {
	if d.gate != nil {
		d.entered <- struct{}{}
		<-d.gate
	}
	if d.verdict == nil {
		return engine.Allow
	}
	return d.verdict(kind, account, ip)
}

func (d *fakeDecider) Decide(ev *event.Event) engine.Verdict {
	d.mu.Lock()
	d.calls = append(d.calls, call{ev: *ev})
	d.mu.Unlock()
	return d.answer(ev.Kind, ev.Account, ev.IP)
}

func (d *fakeDecider) Check(account string, ip netip.Addr, t time.Time) engine.Verdict {
	d.mu.Lock()
	d.calls = append(d.calls, call{check: true, account: account, ip: ip, t: t})
	d.mu.Unlock()
	return d.answer(event.KindUnknown, account, ip)
}

func (d *fakeDecider) take() []call {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.calls
	d.calls = nil
	return c
}

// logBuffer is a goroutine-safe log destination.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	l.b.Reset()
	return s
}

type testServer struct {
	*Server
	addr string // unix socket path
	dec  *fakeDecider
	logs *logBuffer
	done chan error // Serve's result
}

// start runs a Server on a unix socket with a fake Decider; cfg may set
// anything but Decider, Clock and Logger.
func start(t *testing.T, cfg Config) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "mw") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "exim.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: path, dec: &fakeDecider{}, logs: &logBuffer{}, done: make(chan error, 1)}
	if cfg.Decider == nil {
		cfg.Decider = ts.dec
	}
	cfg.Clock = func() time.Time { return testNow }
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Node = "mx1"
	ts.Server, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.done <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.Shutdown(ctx)
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ts
}

func (ts *testServer) dial(t *testing.T) *net.UnixConn {
	t.Helper()
	c, err := net.Dial("unix", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UnixConn)
}

// ask does what Exim's readsocket does: write the request, shut down the
// write side, read the answer until the server closes the connection.
func (ts *testServer) ask(t *testing.T, req string) string {
	t.Helper()
	c := ts.dial(t)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("%q: reading the answer: %v", req, err)
	}
	return string(b)
}

const client = "ip=192.0.2.7 port=50312 lip=198.51.100.1 lport=587"

func TestTranscript(t *testing.T) {
	ts := start(t, Config{})
	ip := netip.MustParseAddr("192.0.2.7")
	sess := "192.0.2.7:50312>198.51.100.1:587"
	base := event.Event{Time: testNow, IP: ip, Protocol: event.SMTP, Session: sess, Node: "mx1", Source: "exim"}
	with := func(f func(*event.Event)) event.Event { e := base; f(&e); return e }

	tests := []struct {
		req  string
		want call
	}{
		{"v1 connect " + client + "\n", call{check: true, ip: ip}},
		{"v1 auth " + client + "\n", call{check: true, ip: ip}},
		{`v1 authfail ` + client + ` account=" (set_id=Joe@Example.com)" pwhash=162f8e23fecad5a8` + "\n",
			call{ev: with(func(e *event.Event) {
				e.Kind, e.Account, e.PwHash = event.AuthFail, "joe@example.com", "162f8e23fecad5a8"
			})}},
		{`v1 authfail ` + client + ` account="" pwhash=` + "\n",
			call{ev: with(func(e *event.Event) { e.Kind = event.AuthFail })}},
		{`v1 authok ` + client + ` account="joe@example.com"` + "\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account = event.AuthOK, "joe@example.com" })}},
		{`v1 mail ` + client + ` account="joe@example.com"` + "\n", call{check: true, account: "joe@example.com", ip: ip}},
		{`v1 rcpt ` + client + ` account="joe@example.com"` + "\n", call{check: true, account: "joe@example.com", ip: ip}},
		{`v1 rcptfail ` + client + ` account="joe@example.com"` + "\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account = event.RcptRejected, "joe@example.com" })}},
		{`v1 data ` + client + ` account="joe@example.com" rcpts=3 size=2201 qid=1xWvpq-0004GH-1Q` + "\n",
			call{ev: with(func(e *event.Event) {
				e.Kind, e.Account, e.Rcpts, e.Size, e.QueueID = event.Message, "joe@example.com", 3, 2201, "1xWvpq-0004GH-1Q"
			})}},
		{`v1 quit ` + client + ` account="joe@example.com"` + "\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account = event.Disconnect, "joe@example.com" })}},
		// a pwhash on another stage is not the password of an attempt
		{`v1 authok ` + client + ` account=joe pwhash=abc` + "\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account = event.AuthOK, "joe" })}},
		// no local address (exim -bh): the session is the client's
		{"v1 authok ip=192.0.2.7 port=4000 lip= lport=-1 account=joe\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account, e.Session = event.AuthOK, "joe", "192.0.2.7:4000" })}},
		// IPv6, and a local port without an address
		{"v1 authok ip=2001:db8::7 port=4000 lport=587 account=joe\n",
			call{ev: with(func(e *event.Event) {
				e.Kind, e.Account, e.IP, e.Session = event.AuthOK, "joe", netip.MustParseAddr("2001:db8::7"), "[2001:db8::7]:4000>:587"
			})}},
		// no client address: no session
		{"v1 authok account=joe\n",
			call{ev: with(func(e *event.Event) { e.Kind, e.Account, e.IP, e.Session = event.AuthOK, "joe", netip.Addr{}, "" })}},
	}
	for _, tt := range tests {
		if got := ts.ask(t, tt.req); got != "DUNNO" {
			t.Errorf("%q: answer %q, want DUNNO", tt.req, got)
		}
		calls := ts.dec.take()
		if len(calls) != 1 {
			t.Errorf("%q: %d calls, want 1: %+v", tt.req, len(calls), calls)
			continue
		}
		want := tt.want
		if want.check {
			want.t = testNow
		}
		if calls[0] != want {
			t.Errorf("%q:\n got %+v\nwant %+v", tt.req, calls[0], want)
		}
	}
	if l := ts.logs.take(); l != "" {
		t.Errorf("good requests logged:\n%s", l)
	}
}

// TestAnswers covers the verdict to answer mapping of every stage.
func TestAnswers(t *testing.T) {
	ts := start(t, Config{TarpitSeconds: 7, BlockedText: "Go away", LockedText: "Locked", DeferText: "Later", HoldText: "held"})
	var mu sync.Mutex
	var v engine.Verdict
	ts.dec.verdict = func(event.Kind, string, netip.Addr) engine.Verdict { mu.Lock(); defer mu.Unlock(); return v }

	verdicts := []engine.Verdict{engine.Allow, engine.Tarpit, engine.Defer, engine.Hold, engine.Lock, engine.Blocked}
	common := []string{"DUNNO", "TARPIT 7", "DEFER Later", "DUNNO", "DROP Locked", "DROP Go away"}
	message := []string{"DUNNO", "TARPIT 7", "DEFER Later", "FREEZE held", "DROP Locked", "DROP Go away"}
	quit := []string{"DUNNO", "DUNNO", "DUNNO", "DUNNO", "DUNNO", "DUNNO"}
	for stage, want := range map[string][]string{
		"connect": common, "auth": common, "authfail": common,
		"authok": message, "mail": message, "rcpt": message, "rcptfail": message, "data": message,
		"quit": quit,
	} {
		for i, vv := range verdicts {
			mu.Lock()
			v = vv
			mu.Unlock()
			if got := ts.ask(t, "v1 "+stage+" "+client+" account=joe\n"); got != want[i] {
				t.Errorf("%s, %s: answer %q, want %q", stage, vv, got, want[i])
			}
		}
	}
}

// TestRequestEnds: readsocket with shutdown=no sends a line end and keeps
// its side open; with shutdown=yes the end of file may end the request.
func TestRequestEnds(t *testing.T) {
	ts := start(t, Config{})
	for _, req := range []string{
		"v1 connect " + client,          // end of file
		"v1 connect " + client + "\r\n", // CRLF
	} {
		if got := ts.ask(t, req); got != "DUNNO" {
			t.Errorf("%q: answer %q", req, got)
		}
	}
	// shutdown=no: line end, write side left open
	c := ts.dial(t)
	io.WriteString(c, "v1 connect "+client+"\n")
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "DUNNO" {
		t.Errorf("without shutdown: %q, %v", b, err)
	}
	if n := len(ts.dec.take()); n != 3 {
		t.Errorf("%d calls, want 3", n)
	}
}

// TestBadInput: every broken request is logged once, answered DUNNO when
// it was complete, its connection closed, and the next client served.
func TestBadInput(t *testing.T) {
	ts := start(t, Config{MaxLine: 64, ReadTimeout: 500 * time.Millisecond})
	tests := []struct {
		name, req string
		shut      bool   // shut down the write side after req
		answer    string // "" for none
		log       string
	}{
		{"malformed", "v1 connect ip\n", true, "DUNNO", "expected key=value"},
		{"unknown stage", "v1 helo ip=192.0.2.7\n", true, "DUNNO", "unknown stage"},
		{"other version", "v2 connect ip=192.0.2.7\n", true, "DUNNO", `request does not start with \"v1 \"`},
		{"invalid UTF-8", "v1 connect ip=\xff\xfe\n", true, "DUNNO", "non-ASCII byte outside a quoted value"},
		{"bad address", "v1 connect ip=192.0.2.999\n", true, "DUNNO", `bad value for key \"ip\"`},
		{"garbage", "\x00\x01\x02\xff garbage", true, "DUNNO", `does not start with`},
		{"empty line", "\n", true, "DUNNO", "empty request"},
		{"idle", "", false, "", "no request before the read timeout"},
		{"half a line", "v1 connect ip=192.0", false, "", "incomplete request"},
	}
	for _, tt := range tests {
		c := ts.dial(t)
		io.WriteString(c, tt.req)
		if tt.shut {
			c.CloseWrite()
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != tt.answer {
			t.Errorf("%s: answer %q, %v; want %q", tt.name, b, err, tt.answer)
		}
		logs := ts.logs.take()
		if strings.Count(logs, "\n") != 1 || !strings.Contains(logs, tt.log) || !strings.Contains(logs, "level=WARN") {
			t.Errorf("%s: want one warning with %q, logged:\n%s", tt.name, tt.log, logs)
		}
		if got := ts.ask(t, "v1 connect "+client+"\n"); got != "DUNNO" {
			t.Errorf("after %s: answer %q", tt.name, got)
		}
	}
	if n := len(ts.dec.take()); n != len(tests) {
		t.Errorf("the Decider was asked %d times, want %d (only the good requests)", n, len(tests))
	}
}

// TestTooLong: a request longer than MaxLine is refused before it is read
// to its end; the client gets DUNNO or a reset (both fail open).
func TestTooLong(t *testing.T) {
	ts := start(t, Config{MaxLine: 64})
	c := ts.dial(t)
	io.WriteString(c, "v1 connect ip=192.0.2.7 x="+strings.Repeat("a", 100)+"\n")
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err == nil && string(b) != "DUNNO" {
		t.Errorf("answer %q", b)
	}
	if logs := ts.logs.take(); !strings.Contains(logs, "line too long") || strings.Count(logs, "\n") != 1 {
		t.Errorf("logged:\n%s", logs)
	}
	// exactly MaxLine bytes is fine
	req := "v1 connect ip=192.0.2.7 x="
	req += strings.Repeat("a", 64-len(req))
	if got := ts.ask(t, req+"\n"); got != "DUNNO" || len(ts.dec.take()) != 1 {
		t.Errorf("a request of MaxLine bytes: %q", got)
	}
}

// TestLogSanitised: a request cannot forge log lines.
func TestLogSanitised(t *testing.T) {
	ts := start(t, Config{})
	ts.ask(t, "v1 bogus account=joe\rlevel=ERROR msg=forged\n")
	logs := ts.logs.take()
	if strings.Count(logs, "\n") != 1 || strings.Contains(logs, "\r") || !strings.Contains(logs, `\\r`) {
		t.Errorf("logged:\n%q", logs)
	}
}

func TestNoRequest(t *testing.T) {
	ts := start(t, Config{})
	c := ts.dial(t)
	c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Errorf("answer %q, %v", b, err)
	}
	if logs := ts.logs.take(); !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "without a request") {
		t.Errorf("logged:\n%s", logs)
	}
}

// TestOverload: beyond MaxConns a client is answered DUNNO at once.
func TestOverload(t *testing.T) {
	ts := start(t, Config{MaxConns: 1})
	first := ts.dial(t) // holds the only slot, silent
	// The second client is answered and closed without being read: it
	// reads DUNNO or, if its request was already queued, a reset. Exim
	// fails open on both.
	c := ts.dial(t)
	io.WriteString(c, "v1 connect "+client+"\n")
	c.CloseWrite()
	if b, err := io.ReadAll(c); err == nil && string(b) != "DUNNO" {
		t.Errorf("second client: %q", b)
	}
	if logs := ts.logs.take(); !strings.Contains(logs, "too many connections") {
		t.Errorf("logged:\n%s", logs)
	}
	if n := len(ts.dec.take()); n != 0 {
		t.Errorf("the Decider was asked %d times while overloaded", n)
	}
	io.WriteString(first, "v1 connect "+client+"\n")
	if b, err := io.ReadAll(first); err != nil || string(b) != "DUNNO" || len(ts.dec.take()) != 1 {
		t.Errorf("first client: %q, %v", b, err)
	}
}

// TestShutdown: idle connections are closed, a request in progress is
// answered, and Serve returns ErrServerClosed.
func TestShutdown(t *testing.T) {
	ts := start(t, Config{})
	ts.dec.entered, ts.dec.gate = make(chan struct{}), make(chan struct{})
	idle := ts.dial(t)
	busy := ts.dial(t)
	io.WriteString(busy, "v1 connect "+client+"\n")
	<-ts.dec.entered

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	if b, err := io.ReadAll(idle); err != nil || len(b) != 0 {
		t.Errorf("idle connection: %q, %v", b, err)
	}
	close(ts.dec.gate)
	if b, err := io.ReadAll(busy); err != nil || string(b) != "DUNNO" {
		t.Errorf("busy connection: %q, %v", b, err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("unix", ts.addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
	if logs := ts.logs.take(); logs != "" {
		t.Errorf("Shutdown logged:\n%s", logs)
	}
}

// TestShutdownDeadline: a Decider that does not answer in time is left
// behind, its connection closed.
func TestShutdownDeadline(t *testing.T) {
	ts := start(t, Config{})
	ts.dec.entered, ts.dec.gate = make(chan struct{}), make(chan struct{})
	busy := ts.dial(t)
	io.WriteString(busy, "v1 connect "+client+"\n")
	<-ts.dec.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v", err)
	}
	if b, _ := io.ReadAll(busy); len(b) != 0 {
		t.Errorf("busy connection got %q", b)
	}
	close(ts.dec.gate)
}

func TestTCP(t *testing.T) {
	dec := &fakeDecider{}
	s, err := New(Config{Decider: dec, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "v1 connect ip=192.0.2.7\n")
	c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "DUNNO" {
		t.Errorf("answer %q, %v", b, err)
	}
	c.Close()
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no Decider: no error")
	}
	for _, cfg := range []Config{
		{Decider: &fakeDecider{}, BlockedText: "two\nlines"},
		{Decider: &fakeDecider{}, LockedText: strings.Repeat("x", 201)},
		{Decider: &fakeDecider{}, DeferText: "\xff"},
		{Decider: &fakeDecider{}, TarpitSeconds: 3601},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	s, err := New(Config{Decider: &fakeDecider{}, TarpitSeconds: -1})
	if err != nil || string(s.tarpit) != "DUNNO" {
		t.Errorf("tarpit off: %q, %v", s.tarpit, err)
	}
	s, err = New(Config{Decider: &fakeDecider{}})
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.MaxLine != DefaultMaxLine || c.ReadTimeout != DefaultReadTimeout || c.WriteTimeout != DefaultWriteTimeout ||
		c.MaxConns != DefaultMaxConns || c.TarpitSeconds != DefaultTarpitSeconds || c.Clock == nil || c.Logger == nil ||
		string(s.drop) != "DROP "+DefaultBlockedText || string(s.tarpit) != "TARPIT 3" {
		t.Errorf("defaults: %+v", c)
	}
}

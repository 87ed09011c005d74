package dovecotpolicy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

var t0 = time.Date(2026, 11, 27, 13, 12, 34, 0, time.UTC)

// check is one recorded Decider.Check call.
type check struct {
	Account string
	IP      netip.Addr
	Time    time.Time
}

// fakeDecider records what it is asked and told and answers from a
// script: verdicts per account or address, Allow otherwise.
type fakeDecider struct {
	mu      sync.Mutex
	checks  []check
	events  []event.Event
	verdict map[string]engine.Verdict // by account or address
	decided engine.Verdict            // answer of every Decide
}

func newFake() *fakeDecider { return &fakeDecider{verdict: map[string]engine.Verdict{}} }

func (f *fakeDecider) Check(account string, ip netip.Addr, t time.Time) engine.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks = append(f.checks, check{account, ip, t})
	if v, ok := f.verdict[account]; ok {
		return v
	}
	if ip.IsValid() {
		return f.verdict[ip.String()]
	}
	return engine.Allow
}

func (f *fakeDecider) Decide(ev *event.Event) engine.Verdict {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, *ev)
	return f.decided
}

func (f *fakeDecider) set(key string, v engine.Verdict) {
	f.mu.Lock()
	f.verdict[key] = v
	f.mu.Unlock()
}

func (f *fakeDecider) take() ([]check, []event.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, e := f.checks, f.events
	f.checks, f.events = nil, nil
	return c, e
}

// syncBuffer is a log sink safe for the server's goroutines.
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

// waitLog waits until the log holds s (the server may log after it
// answered); it fails the test after a generous bound.
func (b *syncBuffer) waitLog(t *testing.T, s string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if strings.Contains(b.String(), s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("log never contained %q; log:\n%s", s, b.String())
}

// testServer is a Server on a loopback listener.
type testServer struct {
	*Server
	addr string
	dec  *fakeDecider
	log  *syncBuffer
}

// start serves cfg (Decider, Clock and Logger filled in when unset).
func start(t testing.TB, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{log: &syncBuffer{}}
	if cfg.Decider == nil {
		ts.dec = newFake()
		cfg.Decider = ts.dec
	}
	if cfg.Clock == nil {
		cfg.Clock = func() time.Time { return t0 }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	ts.Server, ts.addr = s, ln.Addr().String()
	return ts
}

// client is one raw HTTP/1.1 connection, written and read byte for byte.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func (ts *testServer) dial(t testing.TB) *client {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// dovecotRequest builds a request the way Dovecot's HTTP client writes it.
func dovecotRequest(target, auth, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: 127.0.0.1:8643\r\n", target)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	fmt.Fprintf(&b, "Connection: Keep-Alive\r\nContent-Length: %d\r\nContent-Type: application/json\r\n"+
		"Date: Fri, 27 Nov 2026 13:12:34 GMT\r\nUser-Agent: dovecot/auth-policy-client\r\n\r\n%s", len(body), body)
	return b.String()
}

// roundTrip writes raw and returns the raw response.
func (c *client) roundTrip(raw string) string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.read()
	if err != nil {
		c.t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	return resp
}

// read reads one response: status line, headers, Content-Length body.
func (c *client) read() (string, error) {
	var b strings.Builder
	n := 0
	for {
		line, err := c.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return b.String(), err
	}
	b.Write(body)
	return b.String(), nil
}

// closed reports whether the server closed the connection (EOF or reset
// before any further byte).
func (c *client) closed() bool {
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// fixture is one request of a captured Dovecot session.
type fixture struct {
	comment, target, body string
}

// readFixtures reads testdata/<name>: "# comment" lines, then a target
// line ("POST /?command=allow") and a body line per request.
func readFixtures(t testing.TB, name string) []fixture {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var out []fixture
	var comment string
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case l == "":
			comment = ""
		case strings.HasPrefix(l, "#"):
			comment = strings.TrimSpace(strings.TrimPrefix(l, "#"))
		case strings.HasPrefix(l, "POST "):
			if i+1 >= len(lines) {
				t.Fatalf("%s: request without a body at line %d", name, i+1)
			}
			out = append(out, fixture{comment, strings.TrimPrefix(l, "POST "), lines[i+1]})
			i++
		default:
			t.Fatalf("%s: unexpected line %d: %q", name, i+1, l)
		}
	}
	return out
}

// answerJSON is the exact answer carrying body.
func answerJSON(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// Exact answers.
var (
	answerOK     = answerJSON(`{"status":0}`)
	answerTarpit = answerJSON(`{"status":3}`)
	answerReject = answerJSON(`{"status":-1,"msg":"Login refused. Contact your mail provider if this persists."}`)
)

// answerPlain is the exact answer to a refused request; extra are the
// header lines the handler adds, in Go's (sorted) order around
// Content-Type.
func answerPlain(code int, text string, extra ...string) string {
	var before, after string
	for _, e := range extra {
		if e < "Content-Type" {
			before += e + "\r\n"
		} else {
			after += e + "\r\n"
		}
	}
	body := text + "\n"
	return fmt.Sprintf("HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n%sContent-Length: %d\r\n\r\n%s",
		code, statusText(code), before, after, len(body), body)
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 405:
		return "Method Not Allowed"
	case 413:
		return "Request Entity Too Large"
	case 415:
		return "Unsupported Media Type"
	}
	return "?"
}

// memConn is an in-memory connection: reads come from in (at most step
// bytes each when step > 0), writes go to out, deadlines do nothing.
type memConn struct {
	in   []byte
	step int
	out  bytes.Buffer
}

func (m *memConn) Read(p []byte) (int, error) {
	if len(m.in) == 0 {
		return 0, io.EOF
	}
	if m.step > 0 && len(p) > m.step {
		p = p[:m.step]
	}
	n := copy(p, m.in)
	m.in = m.in[n:]
	return n, nil
}

func (m *memConn) Write(p []byte) (int, error)      { return m.out.Write(p) }
func (m *memConn) Close() error                     { return nil }
func (m *memConn) LocalAddr() net.Addr              { return memAddr }
func (m *memConn) RemoteAddr() net.Addr             { return memAddr }
func (m *memConn) SetDeadline(time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(time.Time) error { return nil }

var memAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

// serveMem serves one connection that sends in (step bytes per read at
// most, 0: as much as fits) and returns what the server wrote.
func serveMem(s *Server, in []byte, step int) []byte {
	mc := &memConn{in: in, step: step}
	sem := make(chan struct{}, 1)
	sem <- struct{}{}
	s.newConn(mc, sem).serve()
	return mc.out.Bytes()
}

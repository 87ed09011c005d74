package postfixpolicy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// TestBadInput: every kind of bad input makes the server log one line and
// close that connection without a reply, while another connection, opened
// before and used after, keeps being served.
func TestBadInput(t *testing.T) {
	big := strings.Repeat("x", 9000)
	manyLines := strings.Repeat("helo_name="+strings.Repeat("h", 1000)+"\n", 70)
	manyAttrs := strings.Repeat("a=b\n", 129)
	cases := []struct {
		name, input, log string
	}{
		{"missing request", "protocol_state=RCPT\nclient_address=192.0.2.1\n\n", "request attribute missing"},
		{"unknown request", "request=smtpd_other_policy\n\n", `request=\"smtpd_other_policy\"`},
		{"invalid utf-8 request", "request=smtpd_access_policy\xff\xfe\n\n", `request=\"smtpd_access_policy\\xff\\xfe\"`},
		{"invalid utf-8 name", "requ\xffest=smtpd_access_policy\n\n", "request attribute missing"},
		{"no equals", "request=smtpd_access_policy\nhello\n\n", "line without '='"},
		{"empty name", "request=smtpd_access_policy\n=x\n\n", "empty attribute name"},
		{"nul", "request=smtpd_access_policy\nsender=a\x00b\n\n", "NUL byte"},
		{"long line", "request=smtpd_access_policy\nhelo_name=" + big + "\n\n", "line too long"},
		{"long line without newline", big, "line too long"},
		{"large request", "request=smtpd_access_policy\n" + manyLines + "\n", "request too large"},
		{"many attributes", "request=smtpd_access_policy\n" + manyAttrs + "\n", "too many attributes"},
		{"tls hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", "NUL byte"},
		{"binary", "\xde\xad\xbe\xef\x80\x81\n\n", "line without '='"},
		{"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "line without '='"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, nil)
			good := ts.dial(t)
			if got := good.ask(pf("CONNECT")); got != dunno {
				t.Fatalf("good connection: %q", got)
			}
			bad := ts.dial(t)
			bad.send(tc.input)
			bad.closedWithoutReply()
			logs := ts.logs.String()
			if !strings.Contains(logs, "closing connection without reply") || !strings.Contains(logs, tc.log) {
				t.Fatalf("log does not say %q:\n%s", tc.log, logs)
			}
			if n := strings.Count(logs, "\n"); n != 1 {
				t.Fatalf("%d log lines, want 1:\n%s", n, logs)
			}
			if got := good.ask(pf("EHLO")); got != dunno {
				t.Fatalf("good connection after the bad one: %q", got)
			}
			if got := ts.dial(t).ask(pf("CONNECT")); got != dunno {
				t.Fatalf("new connection after the bad one: %q", got)
			}
		})
	}
}

// TestTruncatedRequest: the peer closes inside a request.
func TestTruncatedRequest(t *testing.T) {
	ts := startServer(t, nil)
	bad := ts.dial(t)
	bad.send("request=smtpd_access_policy\nprotocol_state=RC")
	bad.nc.(interface{ CloseWrite() error }).CloseWrite()
	bad.closedWithoutReply()
	if logs := ts.logs.String(); !strings.Contains(logs, "connection closed inside a request") {
		t.Fatalf("log:\n%s", logs)
	}
	if got := ts.dial(t).ask(pf("CONNECT")); got != dunno {
		t.Fatalf("%q", got)
	}
}

// TestCleanCloseIsSilent: closing between requests is how Postfix ends a
// connection; it is not logged.
func TestCleanCloseIsSilent(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	c.ask(pf("CONNECT"))
	c.nc.Close()
	waitFor(t, "the connection to be released", func() bool { return ts.s.nconns.Load() == 0 })
	if logs := ts.logs.String(); logs != "" {
		t.Fatalf("logged: %s", logs)
	}
}

// TestIdleTimeout: a connection that sends nothing is closed and logged;
// another one keeps being served.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.IdleTimeout = 50 * time.Millisecond })
	idle := ts.dial(t)
	idle.ask(pf("CONNECT"))
	idle.closedWithoutReply()
	if logs := ts.logs.String(); !strings.Contains(logs, "closing idle connection") {
		t.Fatalf("log:\n%s", logs)
	}
	if got := ts.dial(t).ask(pf("CONNECT")); got != dunno {
		t.Fatalf("%q", got)
	}
}

// TestStalledRequest: a request whose first line came but whose end does
// not is closed after RequestTimeout, long before the idle timeout.
func TestStalledRequest(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.RequestTimeout = 50 * time.Millisecond })
	bad := ts.dial(t)
	bad.send("request=smtpd_access_policy\nprotocol_state=RCPT\n")
	bad.closedWithoutReply()
	if logs := ts.logs.String(); !strings.Contains(logs, "request not completed in time") {
		t.Fatalf("log:\n%s", logs)
	}
	if got := ts.dial(t).ask(pf("CONNECT")); got != dunno {
		t.Fatalf("%q", got)
	}
}

// TestMaxConns: a connection over the limit is closed at once, without a
// reply; once a slot is free, new connections are served again.
func TestMaxConns(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConns = 1 })
	first := ts.dial(t)
	if got := first.ask(pf("CONNECT")); got != dunno {
		t.Fatalf("%q", got)
	}
	over := ts.dial(t)
	// The server may close the connection before the request is written:
	// a write error here is the expected outcome too.
	over.nc.Write([]byte(pf("CONNECT")))
	over.closedWithoutReply()
	// The server logs after it closed the connection: wait for the line.
	waitFor(t, "the over-limit log line", func() bool { return strings.Contains(ts.logs.String(), "too many connections") })
	first.nc.Close()
	waitFor(t, "the slot to be released", func() bool { return ts.s.nconns.Load() == 0 })
	if got := ts.dial(t).ask(pf("CONNECT")); got != dunno {
		t.Fatalf("after release: %q", got)
	}
}

// blockingDecider holds Decide calls until released.
type blockingDecider struct {
	fakeDecider
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingDecider) Decide(ev *event.Event) engine.Verdict {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return engine.Hold
}

func (b *blockingDecider) Check(string, netip.Addr, time.Time) engine.Verdict { return engine.Allow }

// TestShutdown: idle connections close at once, the request being decided
// gets its answer, then its connection closes and Shutdown returns.
func TestShutdown(t *testing.T) {
	bd := &blockingDecider{entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, func(c *Config) { c.Decider = bd })
	idle := ts.dial(t)
	idle.ask(pf("CONNECT"))
	busy := ts.dial(t)
	busy.send(pf("END-OF-MESSAGE", "sasl_username", "joe"))
	<-bd.entered

	done := make(chan error, 1)
	go func() { done <- ts.s.Shutdown(context.Background()) }()
	idle.closedWithoutReply()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}
	close(bd.release)
	if got := busy.answer(); got != hold {
		t.Fatalf("in-flight answer %q", got)
	}
	busy.closedWithoutReply()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	ts.done <- ErrServerClosed // for the cleanup
	if logs := ts.logs.String(); logs != "" {
		t.Fatalf("a graceful shutdown logged: %s", logs)
	}
}

// TestShutdownDeadline: when ctx ends first, the remaining connections are
// closed and Shutdown returns ctx's error.
func TestShutdownDeadline(t *testing.T) {
	bd := &blockingDecider{entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, func(c *Config) { c.Decider = bd })
	busy := ts.dial(t)
	busy.send(pf("END-OF-MESSAGE", "sasl_username", "joe"))
	<-bd.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	busy.closedWithoutReply()
	close(bd.release)
	waitFor(t, "the handler to finish", func() bool { return ts.s.nconns.Load() == 0 })
}

// TestServeAfterClose: Serve on a closed server returns at once.
func TestServeAfterClose(t *testing.T) {
	ts := startServer(t, nil)
	ts.s.Close()
	ln := mustListen(t)
	if err := ts.s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

func TestErrServerClosedIsNetErrClosed(t *testing.T) {
	if !errors.Is(ErrServerClosed, net.ErrClosed) {
		t.Fatal("ErrServerClosed does not wrap net.ErrClosed")
	}
}

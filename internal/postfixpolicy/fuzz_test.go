package postfixpolicy

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// FuzzRequest feeds arbitrary bytes to the request reader and the mapping:
// they must never panic, never keep a value with a newline or NUL, stay
// within the limits and only ever produce one of the configured answers.
func FuzzRequest(f *testing.F) {
	f.Add([]byte(pf("CONNECT")))
	f.Add([]byte(pf("RCPT", "sasl_username", "joe@example.com") + pf("RCPT", "sasl_username", "joe@example.com")))
	f.Add([]byte(pf("END-OF-MESSAGE", "sasl_username", "Joe", "size", "99999999999999999999", "recipient_count", "-1")))
	f.Add([]byte(pf("DATA", "client_address", "::ffff:1.2.3.4", "client_port", "", "instance", "x") + pf("END-OF-MESSAGE", "client_address", "[2001:db8::1]")))
	f.Add([]byte("request=smtpd_access_policy\r\n\r\nrequest=x\n\n"))
	f.Add([]byte("request=smtpd_access_policy\nclient_address=01.2.3.4\nclient_address=1.2.3.256\n\n"))
	f.Add([]byte("=\n\x00\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fake := &fakeDecider{
			decide: func(ev *event.Event) engine.Verdict { return engine.Verdict(len(ev.Account) % 6) },
			check:  func(a string, _ netip.Addr) engine.Verdict { return engine.Verdict(len(a) % 6) },
		}
		s, err := New(Config{
			Decider: fake, Clock: func() time.Time { return t0 },
			Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
			MaxLineBytes: 128, MaxRequestBytes: 512, MaxAttributes: 16,
		})
		if err != nil {
			t.Fatal(err)
		}
		valid := map[string]bool{}
		for _, a := range [][]byte{s.ansDunno, s.ansBlocked, s.ansLocked, s.ansDefer, s.ansHold} {
			valid[string(a)] = true
		}
		c := &conn{s: s}
		r := bufio.NewReaderSize(bytes.NewReader(data), s.lim.maxLine)
		total := 0
		for range 1000 {
			_, err := readRequest(r, &c.q, &s.lim, nil)
			total += c.q.bytes
			if total > len(data) {
				t.Fatalf("read %d bytes of %d", total, len(data))
			}
			if err != nil {
				return
			}
			if c.q.bytes > s.lim.maxRequest || c.q.attrs > s.lim.maxAttrs {
				t.Fatalf("limits exceeded: %d bytes, %d attributes", c.q.bytes, c.q.attrs)
			}
			for a := range numAttrs {
				if v := c.q.get(a); bytes.IndexByte(v, '\n') >= 0 || bytes.IndexByte(v, 0) >= 0 {
					t.Fatalf("value %q kept a newline or NUL", v)
				}
			}
			ans, err := c.answer(&c.q)
			if err == nil && !valid[string(ans)] {
				t.Fatalf("answer %q", ans)
			}
			for _, cl := range fake.take() {
				if !cl.check && cl.ev.Source != Source {
					t.Fatalf("event without source: %v", cl)
				}
			}
		}
	})
}

// FuzzParseAddr: the allocation-free IPv4 path agrees with net/netip.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", "::1", "::ffff:1.2.3.4", "[1.2.3.4]", "IPv6:::1", "fe80::1%eth0", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseIPv4([]byte(s))
		want, err := netip.ParseAddr(s)
		if ok != (err == nil && want.Is4()) || ok && got != want {
			t.Fatalf("parseIPv4(%q) = %v, %v; netip: %v, %v", s, got, ok, want, err)
		}
		if a, ok := parseAddr([]byte(s)); ok && (!a.IsValid() || a.Is4In6() || a.Zone() != "") {
			t.Fatalf("parseAddr(%q) = %v", s, a)
		}
	})
}

// loopReader serves the same bytes forever.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// BenchmarkServerPath measures reading, deciding and mapping one request
// without a socket: the server's own cost per request.
func BenchmarkServerPath(b *testing.B) {
	for _, bc := range []struct{ name, req string }{
		{"connect", pf("CONNECT")},
		{"rcpt-auth", pf("RCPT", "sasl_username", "joe@example.com", "recipient", "a@example.org")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Config{Decider: nopDecider{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			c := &conn{s: s}
			r := bufio.NewReaderSize(&loopReader{b: []byte(bc.req)}, s.lim.maxLine)
			b.SetBytes(int64(len(bc.req)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := readRequest(r, &c.q, &s.lim, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := c.answer(&c.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nopDecider allows everything, as fast as possible.
type nopDecider struct{}

func (nopDecider) Decide(*event.Event) engine.Verdict                 { return engine.Allow }
func (nopDecider) Check(string, netip.Addr, time.Time) engine.Verdict { return engine.Allow }

// BenchmarkRoundTrip measures one request and its answer over a unix
// socket, as Postfix sends them: one connection, one request at a time.
func BenchmarkRoundTrip(b *testing.B) {
	s, err := New(Config{Decider: nopDecider{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	path := b.TempDir() + "/p.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Close()
	nc, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	req := []byte(pf("RCPT", "sasl_username", "joe@example.com", "recipient", "a@example.org"))
	want := len(s.ansDunno)
	buf := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nc.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for n < want {
			m, err := nc.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
		}
	}
}

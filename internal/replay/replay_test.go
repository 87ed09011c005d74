package replay

import (
	"bytes"
	"compress/gzip"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

var ref = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)

func drain(s *Merger) []event.Event {
	var out []event.Event
	for ev := s.Next(); ev != nil; ev = s.Next() {
		out = append(out, *ev)
	}
	return out
}

const good = "Nov  4 09:11:01 mx1 dovecot: imap-login: Login: user=<joe@example.com>, method=PLAIN, rip=192.0.2.7, lip=192.0.2.1, mpid=1, TLS, session=<abc>\n"

// Broken input is counted as unparsed, never fatal, and never hides the
// good lines around it.
func TestBadInputCountedUnparsed(t *testing.T) {
	var b bytes.Buffer
	b.WriteString(good)
	b.WriteString("Nov  4 09:11:02 mx1 postfix/smtpd[1]: NOQUEUE: reje\n")           // truncated
	b.WriteString("Nov  4 09:11:0")                                                  // truncated timestamp
	b.WriteString("\n")                                                              //
	b.WriteString(strings.Repeat("x", 1<<20) + "\n")                                 // 1 MB line
	b.WriteString("Nov  4 09:11:03 mx1 dovecot: imap-login: \xff\xfe\xfd garbage\n") // invalid UTF-8
	b.WriteString("\x00\x01\x02\x03\x04\x05\x06\x07\x08binary\x00garbage\x7f\n")     // binary
	b.WriteString(strings.TrimSuffix(good, "\n") + "\r\n")                           // CRLF: still good
	b.WriteString("2013-01-04 17:03:46 garbled exim line that means nothing\r\n")    // CRLF garbage
	b.WriteString(good)                                                              // no newline at the end
	m := &Merger{Streams: []*Stream{NewStream("t", bytes.NewReader(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), Options{}, ref)}}
	evs := drain(m)
	c := m.Counts()
	if len(evs) != 3 {
		t.Errorf("events = %d, want the 3 good logins", len(evs))
	}
	if c.Lines != 9 || c.Unparsed != 6 {
		t.Errorf("counts = %+v, want 9 lines, 6 unparsed", c)
	}
	for _, ev := range evs {
		if ev.Account != "joe@example.com" || ev.Kind != event.AuthOK || ev.Time.Year() != 2026 {
			t.Errorf("event %+v", ev)
		}
	}
}

func TestGzipFilesAndMergeOrder(t *testing.T) {
	dir := t.TempDir()
	a := "Nov  4 09:00:00 mx1 dovecot: imap-login: Login: user=<a@example.com>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.9, session=<1>\n" +
		"Nov  4 11:00:00 mx1 dovecot: imap-login: Login: user=<c@example.com>, method=PLAIN, rip=192.0.2.3, lip=192.0.2.9, session=<3>\n"
	bLog := "2026-11-04 10:00:00 dovecot_login authenticator failed for (x) [192.0.2.2]:1234: 535 Incorrect authentication data (set_id=b@example.com)\n" +
		"2026-11-04 12:00:00 dovecot_login authenticator failed for (x) [192.0.2.4]:1234: 535 Incorrect authentication data (set_id=d@example.com)\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(a))
	zw.Close()
	pa := filepath.Join(dir, "mail.log.1.gz")
	pb := filepath.Join(dir, "mainlog")
	os.WriteFile(pa, gz.Bytes(), 0o644)
	os.WriteFile(pb, []byte(bLog), 0o644)
	os.Chtimes(pa, ref, ref)
	var m Merger
	for _, p := range []string{pa, pb} {
		s, err := Open(p, Options{Loc: time.UTC})
		if err != nil {
			t.Fatal(err)
		}
		m.Streams = append(m.Streams, s)
	}
	defer m.Close()
	var got []string
	for _, ev := range drain(&m) {
		got = append(got, ev.Account)
	}
	if strings.Join(got, " ") != "a@example.com b@example.com c@example.com d@example.com" {
		t.Errorf("merged order = %v", got)
	}
	// --since/--until bounds.
	m2 := Merger{Since: time.Date(2026, 11, 4, 10, 0, 0, 0, time.UTC), Until: time.Date(2026, 11, 4, 12, 0, 0, 0, time.UTC)}
	for _, p := range []string{pa, pb} {
		s, _ := Open(p, Options{Loc: time.UTC})
		m2.Streams = append(m2.Streams, s)
	}
	defer m2.Close()
	if evs := drain(&m2); len(evs) != 2 || evs[0].Account != "b@example.com" || evs[1].Account != "c@example.com" {
		t.Errorf("bounded = %+v", evs)
	}
	// A .gz name that is not gzip is an error, not garbage.
	bad := filepath.Join(dir, "broken.gz")
	os.WriteFile(bad, []byte("plain text"), 0o644)
	if _, err := Open(bad, Options{}); err == nil || !strings.Contains(err.Error(), "not in gzip format") {
		t.Errorf("Open(broken.gz) = %v", err)
	}
}

// One SMTP AUTH failure logged by both Postfix and Dovecot SASL counts once.
func TestCrossSourceDedup(t *testing.T) {
	pf := "Nov  4 09:00:01 mx1 postfix/submission/smtpd[7]: warning: unknown[192.0.2.5]: SASL PLAIN authentication failed: UGFzc3dvcmQ6, sasl_username=joe@example.com\n" +
		"Nov  4 09:05:01 mx1 postfix/submission/smtpd[7]: warning: unknown[192.0.2.5]: SASL PLAIN authentication failed: UGFzc3dvcmQ6, sasl_username=joe@example.com\n"
	dc := "Nov  4 09:00:01 mx1 dovecot: auth: passwd-file(joe@example.com,192.0.2.5,<x>): Password mismatch\n"
	m := &Merger{Streams: []*Stream{
		NewStream("pf", strings.NewReader(pf), Options{}, ref),
		NewStream("dc", strings.NewReader(dc), Options{}, ref),
	}}
	n := 0
	for _, ev := range drain(m) {
		if ev.Kind == event.AuthFail {
			n += ev.N()
		}
	}
	if n != 2 {
		t.Errorf("auth failures = %d, want 2 (one attempt logged twice, one once)", n)
	}
}

func BenchmarkReplay(b *testing.B) {
	lines := strings.Repeat(good+
		"Nov  4 09:11:02 mx1 postfix/submission/smtpd[22]: 4QABC123: client=unknown[192.0.2.8], sasl_method=PLAIN, sasl_username=joe@example.com\n"+
		"Nov  4 09:11:02 mx1 postfix/cleanup[23]: 4QABC123: message-id=<x@example.com>\n"+
		"Nov  4 09:11:02 mx1 postfix/qmgr[24]: 4QABC123: from=<joe@example.com>, size=2000, nrcpt=1 (queue active)\n"+
		"Nov  4 09:11:03 mx1 postfix/smtp[25]: 4QABC123: to=<r@example.net>, relay=mx.example.net[198.18.0.1]:25, delay=1, delays=0.1/0/0.4/0.5, dsn=2.0.0, status=sent (250 ok)\n", 1000)
	b.SetBytes(int64(len(lines)))
	b.ReportAllocs()
	for b.Loop() {
		m := &Merger{Streams: []*Stream{NewStream("b", strings.NewReader(lines), Options{}, ref)}}
		drain(m)
	}
}

// Lines are views of a reused read buffer: an event joined long after its
// first line (an Exim arrival waiting for its deliveries, a Postfix
// client= line waiting for qmgr) must still carry intact strings after the
// buffer has been refilled many times.
func TestJoinsSurviveBufferReuse(t *testing.T) {
	var b strings.Builder
	b.WriteString("2026-11-04 10:00:00 [100] 1vAbCd-000001-Xy <= alice@example.com H=(pc) [192.0.2.10]:4000 P=esmtpsa A=dovecot_plain:alice@example.com S=2000 id=x@pc\n")
	b.WriteString("Nov  4 10:00:00 mx1 postfix/submission/smtpd[200]: 4QJOIN0001: client=unknown[192.0.2.20], sasl_method=PLAIN, sasl_username=bob@example.org\n")
	filler := "2026-11-04 10:00:01 [999] Start queue run: pid=999 " + strings.Repeat("x", 150) + "\n"
	for i := 0; i < 8000; i++ { // about 1.5 MB: the 256 KiB buffer is refilled many times
		b.WriteString(filler)
	}
	b.WriteString("Nov  4 10:05:00 mx1 postfix/qmgr[300]: 4QJOIN0001: from=<bob@example.org>, size=3000, nrcpt=2 (queue active)\n")
	b.WriteString("2026-11-04 10:05:00 [101] 1vAbCd-000001-Xy => r1@example.net R=dnslookup T=remote_smtp\n")
	b.WriteString("2026-11-04 10:05:00 [101] 1vAbCd-000001-Xy => r2@example.net R=dnslookup T=remote_smtp\n")
	b.WriteString("2026-11-04 10:05:00 [101] 1vAbCd-000001-Xy Completed\n")
	m := &Merger{Streams: []*Stream{NewStream("t", strings.NewReader(b.String()), Options{}, ref)}}
	got := map[string]event.Event{}
	for _, ev := range drain(m) {
		if ev.Kind == event.Message {
			got[ev.Account] = ev
		}
	}
	a, ok := got["alice@example.com"]
	if !ok || a.QueueID != "1vAbCd-000001-Xy" || a.Rcpts != 2 || a.IP != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("exim join: %+v (all: %v)", a, got)
	}
	p, ok := got["bob@example.org"]
	if !ok || p.QueueID != "4QJOIN0001" || p.Rcpts != 2 || p.Node != "mx1" || p.IP != netip.MustParseAddr("192.0.2.20") {
		t.Errorf("postfix join: %+v (all: %v)", p, got)
	}
}

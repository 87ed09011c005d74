package postfix

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenEvent is the golden form of an event; Line is the sample line
// (1-based) that produced it.
type goldenEvent struct {
	Line     int
	Time     string
	Kind     string
	Account  string
	IP       string
	Protocol string
	Session  string
	Size     int64
	Rcpts    int
	Count    int
	QueueID  string
}

func golden(line int, e event.Event) goldenEvent {
	g := goldenEvent{
		Line: line, Time: e.Time.Format(time.RFC3339), Kind: e.Kind.String(), Account: e.Account,
		Protocol: e.Protocol.String(), Session: e.Session, Size: e.Size, Rcpts: e.Rcpts,
		Count: e.Count, QueueID: e.QueueID,
	}
	if e.IP.IsValid() {
		g.IP = e.IP.String()
	}
	return g
}

func readLines(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 2<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func sampleFramer(t testing.TB) *maillog.Framer {
	f := f2bfixture.Framer()
	f.Year = 2024
	return f
}

func TestGolden(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatal("no testdata/*.log", err)
	}
	for _, path := range logs {
		t.Run(filepath.Base(path), func(t *testing.T) {
			fr := sampleFramer(t)
			p := New()
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			var evs []event.Event
			for i, s := range readLines(t, path) {
				var l maillog.Line
				if !fr.Frame(s, &l) {
					t.Errorf("line %d: not framed", i+1)
					continue
				}
				var res maillog.Result
				evs, res = p.Parse(&l, evs[:0])
				if res == maillog.Unknown {
					t.Errorf("line %d: Unknown: %s", i+1, s)
				}
				for _, e := range evs {
					enc.Encode(golden(i+1, e))
				}
			}
			for _, e := range p.Flush(nil) {
				enc.Encode(golden(0, e))
			}
			gpath := strings.TrimSuffix(path, ".log") + ".golden"
			if *update {
				if err := os.WriteFile(gpath, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(gpath)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				got := strings.Split(buf.String(), "\n")
				exp := strings.Split(string(want), "\n")
				for i := 0; i < len(got) || i < len(exp); i++ {
					var g, w string
					if i < len(got) {
						g = got[i]
					}
					if i < len(exp) {
						w = exp[i]
					}
					if g != w {
						t.Fatalf("%s differs at event %d:\n got %s\nwant %s", gpath, i+1, g, w)
					}
				}
			}
		})
	}
}

// TestJoins checks the joins and tables on their own.
func TestJoins(t *testing.T) {
	fr := sampleFramer(t)
	p := New()
	parse := func(s string) []event.Event {
		t.Helper()
		var l maillog.Line
		if !fr.Frame(s, &l) {
			t.Fatalf("not framed: %q", s)
		}
		evs, res := p.Parse(&l, nil)
		if res == maillog.Unknown {
			t.Fatalf("Unknown: %q", s)
		}
		return evs
	}
	// A queue id seen at client= whose qmgr line never comes is no event.
	parse("Nov  4 09:11:02 mx1 postfix/smtpd[7]: 3F2A11C0499: client=unknown[192.0.2.1]")
	if evs := p.Flush(nil); len(evs) != 0 {
		t.Errorf("Flush = %v", evs)
	}
	// qmgr repeats for deferred mail: one message.
	n := 0
	for i := 0; i < 3; i++ {
		for _, e := range parse("Nov  4 09:11:03 mx1 postfix/qmgr[8]: 3F2A11C0499: from=<a@b>, size=10, nrcpt=1 (queue active)") {
			if e.Kind == event.Message {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("%d messages for one queue id", n)
	}
	// An unlogged auth failure at disconnect is counted once, a logged one not again.
	parse("Nov  4 09:12:00 mx1 postfix/smtpd[9]: connect from unknown[192.0.2.9]")
	parse("Nov  4 09:12:01 mx1 postfix/smtpd[9]: warning: unknown[192.0.2.9]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=x")
	var fails int
	for _, e := range parse("Nov  4 09:12:02 mx1 postfix/smtpd[9]: disconnect from unknown[192.0.2.9] ehlo=1 auth=0/3 commands=1/4") {
		if e.Kind == event.AuthFail {
			fails += e.N()
		}
	}
	if fails != 2 {
		t.Errorf("disconnect auth=0/3 after one logged failure: %d failures, want 2", fails)
	}
}

func TestTableBound(t *testing.T) {
	tb := newTable[int, int](4)
	for i := 0; i < 100; i++ {
		tb.put(i, i)
		if i%3 == 0 {
			tb.del(i - 1)
		}
		if tb.len() > 4 {
			t.Fatalf("table holds %d entries", tb.len())
		}
	}
	if _, ok := tb.get(99); !ok {
		t.Error("newest entry evicted")
	}
	if _, ok := tb.get(0); ok {
		t.Error("oldest entry kept")
	}
	p := New()
	fr := sampleFramer(t)
	var l maillog.Line
	for i := 0; i < MaxEntries+1000; i++ {
		fr.Frame("Nov  4 09:11:02 mx1 postfix/smtpd[7]: "+queueID(i)+": client=unknown[192.0.2.1]", &l)
		p.Parse(&l, nil)
	}
	if p.queue.len() > MaxEntries {
		t.Errorf("queue table holds %d entries", p.queue.len())
	}
}

func queueID(i int) string {
	const hex = "0123456789ABCDEF"
	b := []byte("A0000000000")
	for j := len(b) - 1; j > 0 && i > 0; j-- {
		b[j] = hex[i%16]
		i /= 16
	}
	return string(b)
}

func TestBadInput(t *testing.T) {
	const pre = "Nov  4 09:11:01 mail postfix/smtpd[1]: "
	huge := strings.Repeat("A", 1<<20)
	bad := []string{
		pre + "NOQUEUE: reje",
		pre + "NOQUEUE: reject: RCPT from unknown[192.0.2.1",
		pre + "NOQUEUE: reject: RCPT from unknown[192.0.2.1]",
		pre + "warning: unknown[192.0.2.1]: SASL LOGIN authentication fa",
		pre + "connect from unknown[192.0.2.",
		pre + "connect from unknown[not-an-ip]",
		pre + "disconnect from unkn",
		pre + "3F2A11C0412: client=unknown[192.0.2",
		pre + "3F2A11C0412: clie",
		pre + "improper command pipelining after",
		pre + huge,
		pre + "NOQUEUE: reject: RCPT from " + huge,
		pre + "connect from " + huge,
		pre + "\xff\xfe\xfd\x00garbage\x80",
		pre + "\x00\x00\x00\x00",
		"Nov  4 09:11:01 mail postfix/qmgr[2]: 3F2A11C0412: from=<a@b>, size=12",
		"Nov  4 09:11:01 mail postfix/qmgr[2]: 3F2A11C0412: from=<a@b>, size=x, nrcpt=1 (queue active)",
		"Nov  4 09:11:01 mail postfix/smtp[3]: 3F2A11C0412: to=<a@b>, relay=mx[192.0.2.1]:25, del",
		"Nov  4 09:11:01 mail postfix/postscreen[4]: PREGREET 11 after 0.1 from [192.0.2",
		"Nov  4 09:11:01 mail postfix/pickup[5]: 3F2A11C0412: uid=0 fr",
		"Nov  4 09:11:01 mail postfix/nosuchdaemon[6]: hello",
		"Nov  4 09:11:01 mail postfix/smtpd[1]: ",
		"\x00\x01\x02\x03\xff\xfe binary garbage \x00 postfix/smtpd[1]: connect from x[192.0.2.1]",
		"Nov  4 09:11:01 mail exim[1]: connect from x[192.0.2.1]",
		huge,
	}
	fr := f2bfixture.Framer()
	for _, s := range bad {
		for _, crlf := range []string{"", "\r\n"} {
			p := New()
			var l maillog.Line
			if !fr.Frame(s+crlf, &l) {
				continue // the dispatcher reports an unframed line as Unknown
			}
			evs, res := p.Parse(&l, nil)
			if res != maillog.Unknown || len(evs) != 0 {
				t.Errorf("Parse(%.80q) = %v, %d events; want Unknown, none", s, res, len(evs))
			}
		}
	}
	// A valid line with CRLF still parses.
	var l maillog.Line
	if !fr.Frame(pre+"connect from unknown[192.0.2.1]\r\n", &l) {
		t.Fatal("CRLF line not framed")
	}
	evs, res := New().Parse(&l, nil)
	if res != maillog.Parsed || len(evs) != 1 || evs[0].Kind != event.Connect || evs[0].IP.String() != "192.0.2.1" {
		t.Errorf("CRLF line: %v %v", res, evs)
	}
	// Invalid UTF-8 in an account is normalised, not passed on.
	fr.Frame(pre+"warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: x, sasl_username=J\xffOE@X\r\n", &l)
	evs, _ = New().Parse(&l, nil)
	if len(evs) != 1 || evs[0].Account != "joe@x" {
		t.Errorf("invalid UTF-8 account: %v", evs)
	}
}

func checkEvent(t *testing.T, e event.Event) {
	t.Helper()
	if e.Kind == event.KindUnknown || e.Kind > event.Disconnect {
		t.Fatalf("invalid kind %d", e.Kind)
	}
	if e.IP.IsValid() && (e.IP.Zone() != "" || e.IP.Is4In6()) {
		t.Fatalf("address not normalised: %v", e.IP)
	}
	if e.Account != event.NormalizeAccount(e.Account) {
		t.Fatalf("account %q not normalised", e.Account)
	}
	if e.Source != Source {
		t.Fatalf("source %q", e.Source)
	}
	if e.Kind.IsFailure() && !e.IP.IsValid() && e.Account == "" {
		t.Fatalf("failure without address or account: %+v", e)
	}
}

func FuzzParse(f *testing.F) {
	if dir := f2bfixture.Dir(); dir != "" {
		for _, s := range readLines(f, filepath.Join(dir, "postfix")) {
			if s != "" && !strings.HasPrefix(s, "#") {
				f.Add(s)
			}
		}
	}
	logs, _ := filepath.Glob(filepath.Join("testdata", "*.log"))
	for _, path := range logs {
		lines := readLines(f, path)
		for _, s := range lines {
			f.Add(s)
		}
		f.Add(strings.Join(lines, "\n"))
	}
	fr := sampleFramer(f)
	f.Fuzz(func(t *testing.T, in string) {
		p := New()
		var evs []event.Event
		for _, s := range strings.Split(in, "\n") {
			var l maillog.Line
			if !fr.Frame(s, &l) || !Owns(&l) {
				continue
			}
			var res maillog.Result
			n := len(evs)
			evs, res = p.Parse(&l, evs)
			if res != maillog.Parsed && len(evs) != n {
				t.Fatalf("result %v with events for %q", res, s)
			}
		}
		evs = p.Flush(evs)
		for _, e := range evs {
			checkEvent(t, e)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	var lines []string
	logs, _ := filepath.Glob(filepath.Join("testdata", "*.log"))
	for _, path := range logs {
		lines = append(lines, readLines(b, path)...)
	}
	if dir := f2bfixture.Dir(); dir != "" {
		for _, s := range readLines(b, filepath.Join(dir, "postfix")) {
			if s != "" && !strings.HasPrefix(s, "#") {
				lines = append(lines, s)
			}
		}
	}
	size := 0
	for _, s := range lines {
		size += len(s) + 1
	}
	fr := sampleFramer(b)
	p := New()
	evs := make([]event.Event, 0, 16)
	var l maillog.Line
	b.SetBytes(int64(size / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if fr.Frame(lines[i%len(lines)], &l) && Owns(&l) {
			evs, _ = p.Parse(&l, evs[:0])
		}
	}
}

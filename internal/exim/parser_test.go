package exim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// TestFail2banFixture feeds fail2ban's Exim test log through one parser and
// checks every "# failJSON" case against the events of its line.
func TestFail2banFixture(t *testing.T) {
	dir := f2bfixture.Dir()
	if dir == "" {
		t.Skip("fail2ban fixtures absent")
	}
	path := filepath.Join(dir, "exim")
	lines, err := f2bfixture.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	fr := f2bfixture.Framer()
	p := New()
	var (
		l     maillog.Line
		dst   []event.Event
		cases int
	)
	for _, fl := range lines {
		var evs []event.Event
		if fr.Frame(fl.Text, &l) {
			if fl.Want != nil && !Owns(&l) {
				t.Errorf("line %d: Owns = false for %q", fl.No, fl.Text)
			}
			dst, _ = p.Parse(&l, dst[:0])
			evs = append(evs, dst...)
		}
		if fl.Want == nil {
			continue
		}
		cases++
		if msg := fl.Check(evs); msg != "" {
			t.Errorf("line %d: %s\n\t%s", fl.No, msg, fl.Text)
		}
	}
	p.Flush(nil)
	if cases < 50 {
		t.Fatalf("only %d cases read from %s", cases, path)
	}
}

// TestBadInput checks that broken input yields Unknown and no events, and
// that a valid line with a CRLF ending still parses.
func TestBadInput(t *testing.T) {
	fr := f2bfixture.Framer()
	huge := "2024-11-04 09:11:01 " + strings.Repeat("A", 1<<20)
	hugeHost := "2024-11-04 09:11:01 H=" + strings.Repeat("(", 1<<20)
	bad := []string{
		"2013-01-04 17:03:46 login authenticator failed for (x) [24.106.1",
		"2013-01-04 17:03:46 login authenticator failed for (x) [24.106.174.74]",
		"2013-01-04 17:03:46 login authenticator failed for (x) [24.106.174.74]: 5",
		"2013-01-04 17:03:46 login authenticator fa",
		"2024-11-04 09:11:01 1rAbCd-00000000Xyz-abcd <= joe@example.com H=(x) [192.0.2.1]:5 P=esmtpa A=dovecot_plain:joe",
		"2024-11-04 09:11:01 1rAbCd-00000000Xyz-abcd <= ",
		"2024-11-04 09:11:01 1rAbCd-00000000Xyz-abcd ==",
		"2024-11-04 09:11:01 1rAbCd-00000000Xyz-abcd ",
		"2024-11-04 09:11:01 1QexIu-0006dj-PX  ",
		"2024-11-04 09:11:01 H=(x) [192.0.",
		"2024-11-04 09:11:01 H=(x) [300.1.2.3] F=<a@b> rejected RCPT <c@d>: no",
		"2024-11-04 09:11:01 SMTP connection from [192.0.2.1",
		"2024-11-04 09:11:01 SMTP connection from [192.0.2.1]:4",
		"2024-11-04 09:11:01 no host name found for IP address 192.0.2",
		"2024-11-04 09:11:01 SMTP protocol error in \"AUTH LOGIN\" H=(x) [192.0",
		"2024-11-04 09:11:01 garbage that is not any exim line at all",
		"2024-11-04 09:11:01 \xff\xfe\xfd invalid utf-8 \xc3\x28 [192.0.2.1]",
		"2024-11-04 09:11:01 \x00\x01\x02\x03 binary \x00 garbage \x7f",
		huge,
		hugeHost,
		"Nov  4 09:11:01 mx exim[12]: ",
		"2024-11-04 09:11:01 [123] ",
	}
	for _, s := range bad {
		for _, variant := range []string{s, s + "\r\n"} {
			p := New()
			var l maillog.Line
			if !fr.Frame(variant, &l) {
				continue
			}
			evs, res := p.Parse(&l, nil)
			evs = p.Flush(evs)
			if res != maillog.Unknown || len(evs) != 0 {
				short := variant
				if len(short) > 120 {
					short = short[:120] + "..."
				}
				t.Errorf("Parse(%q) = %v, %d events %+v; want Unknown, none", short, res, len(evs), evs)
			}
		}
	}

	good := "2014-01-12 02:07:48 dovecot_login authenticator failed for h1832461.stratoserver.net (User) [85.214.85.40]:51214: 535 Incorrect authentication data (set_id=scanner)\r\n"
	var l maillog.Line
	if !fr.Frame(good, &l) {
		t.Fatal("Frame failed on a valid CRLF line")
	}
	evs, res := New().Parse(&l, nil)
	if res != maillog.Parsed || len(evs) != 1 || evs[0].Kind != event.AuthFail ||
		evs[0].Account != "scanner" || evs[0].Session != "[85.214.85.40]:51214" {
		t.Errorf("CRLF line: %v %+v", res, evs)
	}
}

// TestOwns checks which framed lines the dispatcher hands to this package.
func TestOwns(t *testing.T) {
	fr := f2bfixture.Framer()
	cases := []struct {
		line string
		want bool
	}{
		{"2024-11-04 09:11:01 1rAbCd-00000000Xyz-abcd <= a@b H=x [192.0.2.1] P=esmtp S=1", true},
		{"2024-11-04 09:11:01 [42] SMTP connection from [192.0.2.1]:4 (TCP/IP connection count = 1)", true},
		{"2024-11-04 09:11:01 Warning: ACL \"warn\" statement skipped", true},
		{"2024-11-04 09:11:01 1QexIu-0006dj-PX DKIM: d=example.com s=sel [verification succeeded]", true},
		{"Nov  4 09:11:01 mx exim[123]: 2024-11-04 09:11:01 Start queue run: pid=123", true},
		{"Nov  4 09:11:01 mx exim4-daemon-heavy[1]: x y z", true},
		{"Nov  4 09:11:01 mx exim4[1]: x y z", true},
		{"2024-11-04 09:11:01 imap-login: Info: Login: user=<joe>", false},
		{"2024-11-04 09:11:01 auth-worker(123): Info: pam(joe,192.0.2.1): x", false},
		{"2024-11-04 09:11:01 indexer-worker(joe): Info: x", false},
		{"Nov  4 09:11:01 mx postfix/smtpd[12]: connect from x[192.0.2.1]", false},
		{"Nov  4 09:11:01 mx dovecot[12]: imap-login: Login", false},
		{"Nov  4 09:11:01 mx eximstats[12]: x y", false},
	}
	for _, c := range cases {
		var l maillog.Line
		if !fr.Frame(c.line, &l) {
			t.Errorf("Frame(%q) failed", c.line)
			continue
		}
		if got := Owns(&l); got != c.want {
			t.Errorf("Owns(%q) = %v (host %q prog %q)", c.line, got, l.Host, l.Program)
		}
	}
}

// seedLines returns the fixture and sample lines for fuzzing and benchmarks.
func seedLines(t testing.TB) []string {
	var lines []string
	read := func(path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			return
		}
		for _, s := range strings.Split(string(data), "\n") {
			if s = strings.TrimRight(s, "\r"); s != "" && !strings.HasPrefix(s, "#") {
				lines = append(lines, s)
			}
		}
	}
	if dir := f2bfixture.Dir(); dir != "" {
		read(filepath.Join(dir, "exim"))
		read(filepath.Join(dir, "exim-spam"))
	}
	samples, _ := filepath.Glob(filepath.Join("testdata", "*.log"))
	for _, s := range samples {
		read(s)
	}
	if len(lines) == 0 {
		t.Skip("no seed lines")
	}
	return lines
}

func FuzzParse(f *testing.F) {
	for _, s := range seedLines(f) {
		f.Add(s)
	}
	fr := &maillog.Framer{Loc: time.UTC, Year: 2024}
	f.Fuzz(func(t *testing.T, s string) {
		p := New()
		var l maillog.Line
		var evs []event.Event
		for _, line := range strings.Split(s, "\n") {
			if fr.Frame(line, &l) {
				evs, _ = p.Parse(&l, evs)
			}
		}
		evs = p.Flush(evs)
		for _, e := range evs {
			if e.Kind == event.KindUnknown || e.Kind > event.Disconnect {
				t.Fatalf("invalid kind in %+v", e)
			}
			if e.IP.IsValid() && (e.IP.Zone() != "" || e.IP.Is4In6()) {
				t.Fatalf("unnormalised IP in %+v", e)
			}
			if e.Account != event.NormalizeAccount(e.Account) {
				t.Fatalf("account %q not normalised", e.Account)
			}
			if e.Source != Source || e.Protocol != event.SMTP {
				t.Fatalf("source/protocol in %+v", e)
			}
			if e.Kind == event.Message && e.Rcpts < 1 {
				t.Fatalf("message without recipients: %+v", e)
			}
		}
	})
}

// BenchmarkParse frames and parses a realistic mix of Exim lines; one
// iteration is one line.
func BenchmarkParse(b *testing.B) {
	lines := benchLines(b)
	total := 0
	for _, s := range lines {
		total += len(s) + 1
	}
	fr := &maillog.Framer{Loc: time.UTC, Year: 2024}
	p := New()
	var l maillog.Line
	dst := make([]event.Event, 0, 16)
	b.SetBytes(int64(total / len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if fr.Frame(lines[i%len(lines)], &l) {
			dst, _ = p.Parse(&l, dst[:0])
		}
	}
}

// benchLines is a day on a submission server in miniature: for each
// connection a connect, an authenticated arrival, deliveries, Completed and
// the close, plus queue runs and attacks.
func benchLines(b *testing.B) []string {
	data, err := os.ReadFile(filepath.Join("testdata", "exim496.log"))
	if err != nil {
		b.Fatal(err)
	}
	var lines []string
	for _, s := range strings.Split(string(data), "\n") {
		if s != "" && !strings.HasPrefix(s, "#") {
			lines = append(lines, s)
		}
	}
	return lines
}

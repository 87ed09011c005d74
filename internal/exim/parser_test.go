package exim

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// zurich is fail2ban's test zone; its test clock is 2005-08-14 12:00 there.
func fail2banFramer(t testing.TB) *maillog.Framer {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	return &maillog.Framer{Loc: loc, Ref: time.Date(2005, 8, 14, 12, 0, 0, 0, loc)}
}

// sharedLogs returns ../shared/testdata/logs/<sub> relative to the module
// root, or skips the test when it is absent.
func sharedLogs(t testing.TB, sub string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", "logs", sub)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("fixture %s absent", p)
	}
	return p
}

type f2bCase struct {
	Match bool   `json:"match"`
	Time  string `json:"time"`
	Host  string `json:"host"`
	User  string `json:"user"`
	Desc  string `json:"desc"`
}

type caseLine struct {
	no   int // line number in the file
	text string
	c    f2bCase
	evs  []event.Event
}

// TestFail2banFixture feeds fail2ban's Exim test log through one parser and
// checks every "# failJSON" case against the events of its line.
func TestFail2banFixture(t *testing.T) {
	path := filepath.Join(sharedLogs(t, "fail2ban"), "exim")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	fr := fail2banFramer(t)
	p := New()
	var (
		cases   []*caseLine
		pending *f2bCase
		l       maillog.Line
		dst     []event.Event
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	no := 0
	for sc.Scan() {
		no++
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if trim == "" {
			continue
		}
		if strings.HasPrefix(trim, "#") {
			if js, ok := strings.CutPrefix(trim, "# failJSON:"); ok {
				var c f2bCase
				if err := json.Unmarshal([]byte(js), &c); err != nil {
					t.Fatalf("line %d: %v", no, err)
				}
				pending = &c
			}
			continue
		}
		var evs []event.Event
		if fr.Frame(line, &l) {
			if pending != nil && !Owns(&l) {
				t.Errorf("line %d: Owns = false for %q", no, line)
			}
			dst, _ = p.Parse(&l, dst[:0])
			evs = append(evs, dst...)
		}
		if pending != nil {
			cases = append(cases, &caseLine{no: no, text: line, c: *pending, evs: evs})
			pending = nil
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	p.Flush(nil)
	if len(cases) < 50 {
		t.Fatalf("only %d cases read from %s", len(cases), path)
	}

	zurich := fr.Loc
	for _, cl := range cases {
		c := cl.c
		if !c.Match {
			for _, e := range cl.evs {
				if e.Kind == event.AuthFail {
					t.Errorf("line %d %q: unexpected auth failure %+v", cl.no, cl.text, e)
				}
			}
			continue
		}
		want, err := netip.ParseAddr(c.Host)
		if err != nil {
			t.Fatalf("line %d: host %q: %v", cl.no, c.Host, err)
		}
		found := false
		for _, e := range cl.evs {
			if !e.Kind.IsFailure() || e.IP != want {
				continue
			}
			if c.User != "" && e.Account != event.NormalizeAccount(c.User) {
				continue
			}
			if c.Time != "" && !sameTime(e.Time.In(zurich), c.Time, strings.HasPrefix(cl.text, "@4000"), zurich) {
				continue
			}
			found = true
		}
		if !found {
			t.Errorf("line %d %q (%s): no failure event for %s at %q user %q; got %+v",
				cl.no, cl.text, c.Desc, c.Host, c.Time, c.User, cl.evs)
		}
	}
}

// sameTime compares an event time with fail2ban's local time string; TAI64N
// lines may differ by the TAI-UTC offset fail2ban ignores.
func sameTime(got time.Time, want string, tai bool, loc *time.Location) bool {
	if got.Format("2006-01-02T15:04:05") == want {
		return true
	}
	if !tai {
		return false
	}
	w, err := time.ParseInLocation("2006-01-02T15:04:05", want, loc)
	if err != nil {
		return false
	}
	d := got.Sub(w)
	return d >= -10*time.Second && d <= 10*time.Second
}

// TestBadInput checks that broken input yields Unknown and no events, and
// that a valid line with a CRLF ending still parses.
func TestBadInput(t *testing.T) {
	fr := fail2banFramer(t)
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
	fr := fail2banFramer(t)
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
	if dir := sharedLogsOpt(); dir != "" {
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

// sharedLogsOpt is sharedLogs without skipping: "" when absent.
func sharedLogsOpt() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "testdata", "logs", "fail2ban")
			if _, err := os.Stat(p); err == nil {
				return p
			}
			return ""
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
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

package postfix

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

// testFramer frames in the zone and at the clock of fail2ban's tests.
func testFramer(t testing.TB) *maillog.Framer {
	t.Helper()
	z, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	return &maillog.Framer{Loc: z, Ref: time.Date(2005, 8, 14, 12, 0, 0, 0, z)}
}

// fixtureDir returns ../shared/testdata/logs/fail2ban beside the module
// root (the directory holding go.mod), or "" when it is absent.
func fixtureDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
	d := filepath.Join(dir, "..", "shared", "testdata", "logs", "fail2ban")
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// frame frames s (including BSD timestamps whose day is not padded, "Mar 7
// 02:09:33", as some syslog daemons write).
func frame(t testing.TB, f *maillog.Framer, s string, l *maillog.Line) bool {
	return f.Frame(s, l)
}

type failJSON struct {
	Time  string `json:"time"`
	Match bool   `json:"match"`
	Host  string `json:"host"`
	User  string `json:"user"`
	Desc  string `json:"desc"`
}

type fixtureLine struct {
	n    int
	text string
	want *failJSON
}

func readFixture(t testing.TB, name string) []fixtureLine {
	t.Helper()
	dir := fixtureDir(t)
	if dir == "" {
		t.Skip("fail2ban fixtures not found")
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Skip("fixture:", err)
	}
	defer f.Close()
	var lines []fixtureLine
	var want *failJSON
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		s := sc.Text()
		if strings.TrimSpace(s) == "" {
			continue
		}
		if strings.HasPrefix(s, "#") {
			if j, ok := strings.CutPrefix(s, "# failJSON:"); ok {
				var w failJSON
				if err := json.Unmarshal([]byte(j), &w); err != nil {
					t.Fatalf("line %d: %v", n, err)
				}
				want = &w
			}
			continue
		}
		lines = append(lines, fixtureLine{n: n, text: s, want: want})
		want = nil
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestFail2banFixture(t *testing.T) {
	lines := readFixture(t, "postfix")
	fr := testFramer(t)
	p := New()
	cases := 0
	var evs []event.Event
	for _, fl := range lines {
		var l maillog.Line
		if !frame(t, fr, fl.text, &l) {
			t.Errorf("line %d: not framed: %q", fl.n, fl.text)
			continue
		}
		if !Owns(&l) {
			t.Errorf("line %d: not owned (program %q)", fl.n, l.Program)
			continue
		}
		var res maillog.Result
		evs, res = p.Parse(&l, evs[:0])
		if res == maillog.Unknown {
			t.Errorf("line %d: Unknown: %q", fl.n, fl.text)
		}
		if res != maillog.Parsed && len(evs) > 0 {
			t.Errorf("line %d: result %v with %d events", fl.n, res, len(evs))
		}
		if fl.want == nil {
			continue
		}
		cases++
		checkCase(t, fl, &l, evs)
	}
	if extra := p.Flush(nil); len(extra) > 0 {
		t.Errorf("Flush returned %d events", len(extra))
	}
	if cases < 60 {
		t.Errorf("only %d cases found", cases)
	}
}

func checkCase(t *testing.T, fl fixtureLine, l *maillog.Line, evs []event.Event) {
	t.Helper()
	w := fl.want
	if !w.Match {
		for _, e := range evs {
			if e.Kind == event.AuthFail {
				t.Errorf("line %d (match false, %s): got %v %v", fl.n, w.Desc, e.Kind, e.IP)
			}
		}
		return
	}
	host, err := netip.ParseAddr(w.Host)
	if err != nil {
		t.Fatalf("line %d: host %q: %v", fl.n, w.Host, err)
	}
	var wantTime time.Time
	if w.Time != "" {
		wantTime, err = time.ParseInLocation("2006-1-2T15:04:05", w.Time, zurich(t))
		if err != nil {
			t.Fatalf("line %d: time %q: %v", fl.n, w.Time, err)
		}
	}
	slack := time.Duration(0)
	if strings.HasPrefix(fl.text, "@4000") {
		slack = 10 * time.Second
	}
	for _, e := range evs {
		if !e.Kind.IsFailure() || e.IP != host {
			continue
		}
		if w.Time != "" {
			if d := e.Time.Sub(wantTime); d > slack || d < -slack {
				continue
			}
		}
		if w.User != "" && e.Account != event.NormalizeAccount(w.User) {
			continue
		}
		return
	}
	t.Errorf("line %d: want a failure from %s at %s user %q; got %s\n\t%s", fl.n, w.Host, w.Time, w.User, describe(evs), fl.text)
}

func zurich(t *testing.T) *time.Location {
	z, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func describe(evs []event.Event) string {
	if len(evs) == 0 {
		return "no events"
	}
	var b strings.Builder
	for _, e := range evs {
		b.WriteString(e.Kind.String() + " " + e.IP.String() + " " + e.Time.Format(time.RFC3339) + " " + e.Account + "; ")
	}
	return b.String()
}

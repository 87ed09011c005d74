package dovecot

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// fixtureDir returns ../shared/testdata/logs/fail2ban beside the module
// root, or skips the test.
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
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("module root not found")
		}
		dir = parent
	}
	d := filepath.Join(dir, "..", "shared", "testdata", "logs", "fail2ban")
	if _, err := os.Stat(d); err != nil {
		t.Skip("fail2ban fixtures absent:", err)
	}
	return d
}

func zurich(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// fail2banFramer frames with fail2ban's test clock and zone.
func fail2banFramer(t testing.TB) *maillog.Framer {
	loc := zurich(t)
	return &maillog.Framer{Loc: loc, Ref: time.Date(2005, 8, 14, 12, 0, 0, 0, loc)}
}

type failJSON struct {
	Time  string `json:"time"`
	Match bool   `json:"match"`
	Host  string `json:"host"`
	User  string `json:"user"`
	Desc  string `json:"desc"`
}

type fixtureCase struct {
	lineNo int
	line   string
	want   failJSON
	events []event.Event
	result maillog.Result
}

// readFixture returns every log line of a fail2ban test file and, by line
// index, the case each failJSON comment announces.
func readFixture(t testing.TB, path string) (lines []string, cases map[int]*fixtureCase) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases = map[int]*fixtureCase{}
	var pending *failJSON
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
			c := strings.TrimSpace(strings.TrimPrefix(s, "#"))
			if rest, ok := strings.CutPrefix(c, "failJSON:"); ok {
				var fj failJSON
				if err := json.Unmarshal([]byte(rest), &fj); err != nil {
					t.Fatalf("%s:%d: bad failJSON: %v", path, n, err)
				}
				pending = &fj
			}
			continue
		}
		if pending != nil {
			cases[len(lines)] = &fixtureCase{lineNo: n, line: s, want: *pending}
			pending = nil
		}
		lines = append(lines, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines, cases
}

func TestFail2banFixture(t *testing.T) {
	path := filepath.Join(fixtureDir(t), "dovecot")
	loc := zurich(t)
	lines, cases := readFixture(t, path)
	if len(cases) < 50 {
		t.Fatalf("only %d cases in %s", len(cases), path)
	}
	fr := fail2banFramer(t)
	p := New()
	var l maillog.Line
	var buf []event.Event
	for i, s := range lines {
		res := maillog.Unknown
		buf = buf[:0]
		if fr.Frame(s, &l) && Owns(&l) {
			buf, res = p.Parse(&l, buf)
		}
		if c := cases[i]; c != nil {
			c.events = append([]event.Event(nil), buf...)
			c.result = res
		}
	}
	if held := p.Flush(nil); len(held) != 0 {
		t.Errorf("Flush returned %d events; the parser holds none", len(held))
	}
	for _, c := range cases {
		where := path + ":" + strconv.Itoa(c.lineNo)
		if !c.want.Match {
			for _, e := range c.events {
				if e.Kind == event.AuthFail {
					t.Errorf("%s: match=false but got %+v\n\t%s", where, e, c.line)
				}
			}
			continue
		}
		found := false
		for _, e := range c.events {
			if !e.Kind.IsFailure() || e.IP.String() != c.want.Host {
				continue
			}
			if c.want.User != "" && e.Account != event.NormalizeAccount(c.want.User) {
				continue
			}
			if c.want.Time != "" {
				want, err := time.ParseInLocation("2006-01-02T15:04:05", c.want.Time, loc)
				if err != nil {
					t.Fatalf("%s: bad time %q", where, c.want.Time)
				}
				if strings.HasPrefix(c.line, "@") {
					// TAI64N: fail2ban ignores the TAI-UTC offset.
					if d := e.Time.Sub(want); d < -10*time.Second || d > 10*time.Second {
						continue
					}
				} else if got := e.Time.In(loc).Format("2006-01-02T15:04:05"); got != c.want.Time {
					continue
				}
			}
			if e.Source != Source {
				t.Errorf("%s: Source %q", where, e.Source)
			}
			found = true
		}
		if !found {
			t.Errorf("%s: want a failure from %s at %s (result %v), got %+v\n\t%s", where, c.want.Host, c.want.Time, c.result, c.events, c.line)
		}
	}
}

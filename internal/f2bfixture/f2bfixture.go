// Package f2bfixture reads fail2ban's annotated test logs (the files under
// ../shared/testdata/logs/fail2ban beside the module root) for the parser
// tests: where they are, the clock and zone fail2ban's tests run at, the
// "# failJSON: {…}" case each line carries, and whether a parser's events
// satisfy it. Only tests import it; it parses nothing itself.
package f2bfixture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
	_ "time/tzdata" // fail2ban's zone, also where no zoneinfo is installed

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Dir returns the fail2ban fixture folder beside the module root, or ""
// when it is absent (tests then skip).
func Dir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			d := filepath.Join(dir, "..", "shared", "testdata", "logs", "fail2ban")
			if _, err := os.Stat(d); err != nil {
				return ""
			}
			return d
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// Zone is fail2ban's test zone.
func Zone() *time.Location {
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		panic(err) // time/tzdata is linked in
	}
	return loc
}

// Framer frames at fail2ban's test clock (2005-08-14 12:00) and zone, so
// that yearless syslog dates get the years its cases name.
func Framer() *maillog.Framer {
	loc := Zone()
	return &maillog.Framer{Loc: loc, Ref: time.Date(2005, 8, 14, 12, 0, 0, 0, loc)}
}

// Want is one "# failJSON" case.
type Want struct {
	Time  string `json:"time"`
	Match bool   `json:"match"`
	Host  string `json:"host"`
	User  string `json:"user"`
	Desc  string `json:"desc"`
}

// Line is one log line of a fixture file and the case announced for it.
type Line struct {
	No   int // line number in the file
	Text string
	Want *Want // nil when no failJSON comment precedes the line
}

// Read returns every log line of a fixture file (comments and empty lines
// left out), each with its case.
func Read(path string) ([]Line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []Line
	var want *Want
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		s := sc.Text()
		trim := strings.TrimSpace(s)
		if trim == "" {
			continue
		}
		if strings.HasPrefix(trim, "#") {
			if j, ok := strings.CutPrefix(strings.TrimSpace(trim[1:]), "failJSON:"); ok {
				var w Want
				if err := json.Unmarshal([]byte(j), &w); err != nil {
					return nil, fmt.Errorf("%s:%d: bad failJSON: %v", path, n, err)
				}
				want = &w
			}
			continue
		}
		lines = append(lines, Line{No: n, Text: s, Want: want})
		want = nil
	}
	return lines, sc.Err()
}

// Check returns "" when evs, the events parsed from l, satisfy its case:
// for "match": true a failure event (auth failure, rejected recipient or
// other refusal) from the case's host, at its time in fail2ban's zone (TAI64N
// lines within 10 s: fail2ban ignores the TAI-UTC offset daemontools
// applies) and for its user when given; for "match": false no auth failure.
// Otherwise it says what is wrong.
func (l *Line) Check(evs []event.Event) string {
	w := l.Want
	if !w.Match {
		for _, e := range evs {
			if e.Kind == event.AuthFail {
				return fmt.Sprintf("match=false (%s) but got an auth failure %v %v %q", w.Desc, e.IP, e.Time, e.Account)
			}
		}
		return ""
	}
	host, err := netip.ParseAddr(w.Host)
	if err != nil {
		return fmt.Sprintf("case host %q: %v", w.Host, err)
	}
	var want time.Time
	if w.Time != "" {
		if want, err = time.ParseInLocation("2006-1-2T15:04:05", w.Time, Zone()); err != nil {
			return fmt.Sprintf("case time %q: %v", w.Time, err)
		}
	}
	slack := time.Duration(0)
	if strings.HasPrefix(l.Text, "@4000") {
		slack = 10 * time.Second
	}
	for _, e := range evs {
		if !e.Kind.IsFailure() || e.IP != host {
			continue
		}
		if w.Time != "" {
			if d := e.Time.Sub(want); d > slack || d < -slack {
				continue
			}
		}
		if w.User != "" && e.Account != event.NormalizeAccount(w.User) {
			continue
		}
		return ""
	}
	var got []string
	for _, e := range evs {
		got = append(got, fmt.Sprintf("%v %v %s %q", e.Kind, e.IP, e.Time.In(Zone()).Format(time.RFC3339), e.Account))
	}
	return fmt.Sprintf("want a failure from %s at %s user %q (%s); got [%s]", w.Host, w.Time, w.User, w.Desc, strings.Join(got, "; "))
}

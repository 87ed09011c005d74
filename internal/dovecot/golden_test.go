package dovecot

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

// goldenEvent is the form of an event in a golden file.
type goldenEvent struct {
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

func toGolden(e event.Event) goldenEvent {
	g := goldenEvent{
		Time:     e.Time.Format(time.RFC3339Nano),
		Kind:     e.Kind.String(),
		Account:  e.Account,
		Protocol: e.Protocol.String(),
		Session:  e.Session,
		Size:     e.Size,
		Rcpts:    e.Rcpts,
		Count:    e.Count,
		QueueID:  e.QueueID,
	}
	if e.IP.IsValid() {
		g.IP = e.IP.String()
	}
	return g
}

// sampleLines returns the log lines of a sample file (comments and empty
// lines dropped).
func sampleLines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		s := sc.Text()
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		lines = append(lines, s)
	}
	return lines
}

func sampleFramer(t testing.TB) *maillog.Framer {
	return &maillog.Framer{Loc: f2bfixture.Zone(), Year: 2024}
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
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			var l maillog.Line
			var evs []event.Event
			for _, s := range sampleLines(t, path) {
				if !fr.Frame(s, &l) || !Owns(&l) {
					t.Errorf("not framed or not owned: %s", s)
					continue
				}
				n := len(evs)
				var res maillog.Result
				evs, res = p.Parse(&l, evs)
				if res == maillog.Unknown {
					t.Errorf("Unknown: %s", s)
				}
				if res != maillog.Parsed && len(evs) != n {
					t.Errorf("result %d with events: %s", res, s)
				}
				for _, e := range evs[n:] {
					checkEvent(t, e, s)
				}
			}
			evs = p.Flush(evs)
			for _, e := range evs {
				if err := enc.Encode(toGolden(e)); err != nil {
					t.Fatal(err)
				}
			}
			golden := strings.TrimSuffix(path, ".log") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s differs from the parser's output:\n--- got\n%s--- want\n%s", golden, out.Bytes(), want)
			}
		})
	}
}

// checkEvent asserts the invariants every event of this package keeps.
func checkEvent(t testing.TB, e event.Event, line string) {
	t.Helper()
	if e.Kind == event.KindUnknown || e.Kind.String() == "unknown" {
		t.Errorf("event without kind %+v from %q", e, line)
	}
	if e.Source != Source {
		t.Errorf("Source %q from %q", e.Source, line)
	}
	if e.IP.IsValid() && (e.IP.Zone() != "" || e.IP.Is4In6()) {
		t.Errorf("IP %s not normalised from %q", e.IP, line)
	}
	if e.Account != event.NormalizeAccount(e.Account) {
		t.Errorf("Account %q not normalised from %q", e.Account, line)
	}
	if e.Kind == event.AuthFail && e.Count < 1 {
		t.Errorf("AuthFail with Count %d from %q", e.Count, line)
	}
	if e.Time.IsZero() {
		t.Errorf("no time from %q", line)
	}
}

package exim

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the parser's output")

// goldenEvent is one line of a .golden file. Line is the number of the log
// line whose Parse call emitted the event (0: emitted by Flush).
type goldenEvent struct {
	Line     int    `json:"Line"`
	Time     string `json:"Time"`
	Kind     string `json:"Kind"`
	Account  string `json:"Account,omitempty"`
	IP       string `json:"IP,omitempty"`
	Protocol string `json:"Protocol"`
	Session  string `json:"Session,omitempty"`
	Size     int64  `json:"Size,omitempty"`
	Rcpts    int    `json:"Rcpts,omitempty"`
	Count    int    `json:"Count,omitempty"`
	QueueID  string `json:"QueueID,omitempty"`
	Node     string `json:"Node,omitempty"`
}

// TestGolden parses each testdata/*.log (our own samples) and compares the
// events with testdata/*.golden. Every sample line must be owned and
// understood (Parsed or Ignored).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil || len(files) == 0 {
		t.Fatal("no samples in testdata")
	}
	loc, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			fr := &maillog.Framer{Loc: loc, Ref: time.Date(2025, 12, 31, 12, 0, 0, 0, loc)}
			p := New()
			var (
				out bytes.Buffer
				l   maillog.Line
				evs []event.Event
			)
			enc := json.NewEncoder(&out)
			write := func(no int, evs []event.Event) {
				for _, e := range evs {
					g := goldenEvent{
						Line: no, Time: e.Time.Format(time.RFC3339), Kind: e.Kind.String(),
						Account: e.Account, Protocol: e.Protocol.String(), Session: e.Session,
						Size: e.Size, Rcpts: e.Rcpts, Count: e.Count, QueueID: e.QueueID, Node: e.Node,
					}
					if e.IP.IsValid() {
						g.IP = e.IP.String()
					}
					if err := enc.Encode(g); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i, line := range strings.Split(string(data), "\n") {
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				if !fr.Frame(line, &l) {
					t.Errorf("line %d: not framed: %q", i+1, line)
					continue
				}
				if !Owns(&l) {
					t.Errorf("line %d: not owned: %q", i+1, line)
				}
				var res maillog.Result
				evs, res = p.Parse(&l, evs[:0])
				if res == maillog.Unknown {
					t.Errorf("line %d: Unknown: %q", i+1, line)
				}
				if res == maillog.Ignored && len(evs) > 0 && !expiredOnly(evs, l.Time) {
					t.Errorf("line %d: Ignored but emitted %+v", i+1, evs)
				}
				write(i+1, evs)
			}
			write(0, p.Flush(evs[:0]))

			golden := strings.TrimSuffix(file, ".log") + ".golden"
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
				t.Errorf("events differ from %s (go test -update rewrites it):\ngot:\n%s\nwant:\n%s", golden, out.Bytes(), want)
			}
		})
	}
}

// expiredOnly reports whether all events are held arrivals released because
// they waited longer than HoldFor (those may come out with any line).
func expiredOnly(evs []event.Event, now time.Time) bool {
	for _, e := range evs {
		if e.Kind != event.Message || now.Sub(e.Time) <= HoldFor {
			return false
		}
	}
	return true
}

package postfix

import (
	"path/filepath"
	"testing"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// TestFail2banFixture feeds fail2ban's Postfix test log through one parser:
// every line must frame, belong to Postfix and be understood, and every
// "# failJSON" case must be met by the events of its line.
func TestFail2banFixture(t *testing.T) {
	dir := f2bfixture.Dir()
	if dir == "" {
		t.Skip("fail2ban fixtures absent")
	}
	path := filepath.Join(dir, "postfix")
	lines, err := f2bfixture.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	fr := f2bfixture.Framer()
	p := New()
	cases := 0
	var evs []event.Event
	for _, fl := range lines {
		var l maillog.Line
		if !fr.Frame(fl.Text, &l) {
			t.Errorf("line %d: not framed: %q", fl.No, fl.Text)
			continue
		}
		if !Owns(&l) {
			t.Errorf("line %d: not owned (program %q)", fl.No, l.Program)
			continue
		}
		var res maillog.Result
		evs, res = p.Parse(&l, evs[:0])
		if res == maillog.Unknown {
			t.Errorf("line %d: Unknown: %q", fl.No, fl.Text)
		}
		if res != maillog.Parsed && len(evs) > 0 {
			t.Errorf("line %d: result %v with %d events", fl.No, res, len(evs))
		}
		if fl.Want == nil {
			continue
		}
		cases++
		if msg := fl.Check(evs); msg != "" {
			t.Errorf("line %d: %s\n\t%s", fl.No, msg, fl.Text)
		}
	}
	if extra := p.Flush(nil); len(extra) > 0 {
		t.Errorf("Flush returned %d events", len(extra))
	}
	if cases < 60 {
		t.Errorf("only %d cases found", cases)
	}
}

package dovecot

import (
	"path/filepath"
	"testing"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// TestFail2banFixture feeds fail2ban's Dovecot test log through one parser
// and checks every "# failJSON" case against the events of its line.
func TestFail2banFixture(t *testing.T) {
	dir := f2bfixture.Dir()
	if dir == "" {
		t.Skip("fail2ban fixtures absent")
	}
	path := filepath.Join(dir, "dovecot")
	lines, err := f2bfixture.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	fr := f2bfixture.Framer()
	p := New()
	var l maillog.Line
	var buf []event.Event
	cases := 0
	for _, fl := range lines {
		buf = buf[:0]
		if fr.Frame(fl.Text, &l) && Owns(&l) {
			buf, _ = p.Parse(&l, buf)
		}
		for _, e := range buf {
			if e.Source != Source {
				t.Errorf("%s:%d: Source %q", path, fl.No, e.Source)
			}
		}
		if fl.Want == nil {
			continue
		}
		cases++
		if msg := fl.Check(buf); msg != "" {
			t.Errorf("%s:%d: %s\n\t%s", path, fl.No, msg, fl.Text)
		}
	}
	if cases < 50 {
		t.Fatalf("only %d cases in %s", cases, path)
	}
	if held := p.Flush(nil); len(held) != 0 {
		t.Errorf("Flush returned %d events; the parser holds none", len(held))
	}
}

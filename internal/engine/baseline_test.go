package engine

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

// bday0 is a Monday.
var bday0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func newBaselineEngine(t *testing.T, mod func(*config.Config)) *Engine {
	t.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return New(cfg)
}

// sendDay feeds n messages of acct over 08:00–18:00 of day d and returns
// the baseline incidents they raised.
func sendDay(e *Engine, acct string, d, n int) []*Incident {
	var out, bl []*Incident
	ip := netip.MustParseAddr("198.51.100.20")
	for i := range n {
		ev := event.Event{Time: bday0.Add(time.Duration(d)*24*time.Hour + 8*time.Hour + time.Duration(i)*10*time.Hour/time.Duration(n)),
			Kind: event.Message, Account: acct, IP: ip, Protocol: event.SMTP, Rcpts: 2, Size: 20000, Source: "test"}
		_, out = e.Process(&ev, out[:0])
		for _, inc := range out {
			if inc.Detector == "baseline" {
				bl = append(bl, inc)
			}
		}
	}
	return bl
}

// population gives the engine a population prior: 40 accounts sending a
// few messages a day.
func population(e *Engine, days int) {
	for d := range days {
		for a := range 40 {
			sendDay(e, "pop"+string(rune('a'+a%26))+string(rune('a'+a/26))+"@example.com", d, 3+a%7)
		}
	}
}

func usualOn(e *Engine, acct string, d int) baseline.ReportKind {
	return e.HistoryReport(acct, baseline.Rows{}, bday0.Add(time.Duration(d)*24*time.Hour+time.Hour)).Usual[0]
}

// After a burst the baseline does not rise with it: the burst raised an
// alert, its day is never learned, and a later 6.5× day is still caught —
// which a plain 30-day mean (inflated to about 37 by the burst) would miss.
func TestPoisoningBurst(t *testing.T) {
	e := newBaselineEngine(t, nil)
	const acct = "steady@example.com"
	for d := range 28 {
		n := 20
		if d%7 >= 5 {
			n = 3
		}
		if incs := sendDay(e, acct, d, n); len(incs) > 0 {
			t.Fatalf("day %d: %v", d, incs[0].Evidence)
		}
	}
	incs := sendDay(e, acct, 28, 400)
	if len(incs) != 1 {
		t.Fatalf("a 400-message Monday raised %d baseline incidents", len(incs))
	}
	if incs[0].Action != config.Hold || incs[0].Evidence["usual"].(float64) > 21 {
		t.Errorf("incident: %s %v", incs[0].Action, incs[0].Evidence)
	}
	for d := 29; d < 35; d++ {
		n := 20
		if d%7 >= 5 {
			n = 3
		}
		if incs := sendDay(e, acct, d, n); len(incs) > 0 {
			t.Errorf("day %d after the burst: %v", d, incs[0].Evidence["summary"])
		}
	}
	u := usualOn(e, acct, 35)
	if u.Messages.Usual > 21 {
		t.Errorf("usual weekday after the burst = %v, want about 20", u.Messages.Usual)
	}
	rep := e.HistoryReport(acct, baseline.Rows{}, bday0.Add(35*24*time.Hour))
	if d := rep.Days[len(rep.Days)-8]; d.Date != "2026-03-30" || !d.Anomalous || d.Messages != 400 {
		t.Errorf("the burst day: %+v", d)
	}
	if incs := sendDay(e, acct, 35, 130); len(incs) != 1 {
		t.Errorf("a 6.5× Monday a week after the burst raised %d incidents", len(incs))
	}
}

// ramp sends 20 messages a day for 21 days, then 8 % more every day up
// to day last, and returns the day of the first baseline incident (-1).
func ramp(e *Engine, acct string, last int) int {
	for d := 0; d <= last; d++ {
		n := 20.0
		if d > 20 {
			n = 20 * math.Pow(1.08, float64(d-20))
		}
		if incs := sendDay(e, acct, d, int(math.Round(n))); len(incs) > 0 {
			return d
		}
	}
	return -1
}

// During a slow ramp (8 % a day: doubling every 9 days, never 5× the
// 30-day mean of the day before) the baseline does not rise with it: once
// the ramp's days are learn_ratio (2) × usual they are not learned, and
// the ramp is caught (on day 46, at 7.4× its start). With that gate off
// (learn_ratio = ratio) the baseline follows the ramp and it is never
// caught.
func TestPoisoningRamp(t *testing.T) {
	const acct = "ramp@example.com"
	e := newBaselineEngine(t, nil)
	population(e, 1)
	got := ramp(e, acct, 70)
	if got < 0 {
		t.Fatal("the ramp was never caught")
	}
	sent := 20 * math.Pow(1.08, float64(got-20))
	t.Logf("ramp caught on day %d at %.0f messages a day (%.1f× its start)", got, sent, sent/20)
	if sent/20 > 8 {
		t.Errorf("the ramp was caught only at %.1f× its start", sent/20)
	}
	u := usualOn(e, acct, got)
	rep := e.HistoryReport(acct, baseline.Rows{}, bday0.Add(time.Duration(got)*24*time.Hour))
	sum, n, unlearned := 0.0, 0, 0
	for _, d := range rep.Days[:len(rep.Days)-1] {
		sum += float64(d.Messages)
		n++
		if d.Unlearned {
			unlearned++
		}
	}
	if unlearned == 0 || u.Messages.Usual > 0.75*sum/float64(n) {
		t.Errorf("on day %d the usual day is %v (%d days not learned); the ramp's plain 30-day mean is %.0f", got, u.Messages.Usual, unlearned, sum/float64(n))
	}

	off := newBaselineEngine(t, func(c *config.Config) { c.Detectors.Baseline.LearnRatio = c.Detectors.Baseline.Ratio })
	population(off, 1)
	if d := ramp(off, acct, got+5); d >= 0 {
		t.Errorf("without the learning gate the ramp was caught too (day %d): the test shows nothing", d)
	}
}

// A slow grower (1 % a day, 1.8× in two months) is learned and never
// alerts.
func TestSlowGrowerLearned(t *testing.T) {
	e := newBaselineEngine(t, nil)
	const acct = "grower@example.com"
	for d := range 60 {
		n := int(math.Round(20 * math.Pow(1.01, float64(d))))
		if incs := sendDay(e, acct, d, n); len(incs) > 0 {
			t.Fatalf("day %d (%d messages): %v", d, n, incs[0].Evidence["summary"])
		}
	}
	if u := usualOn(e, acct, 60); u.Messages.Usual < 28 {
		t.Errorf("usual after 60 days of growth = %v, want it to follow (day 60 sends 36)", u.Messages.Usual)
	}
}

// The daemon persists only what changed, restores it after a restart, and
// the journal it replays does not count a message twice.
func TestHistoryChangesAndRestore(t *testing.T) {
	e := newBaselineEngine(t, nil)
	e.TrackHistory()
	sendDay(e, "a@example.com", 0, 10)
	sendDay(e, "b@example.com", 0, 4)
	ch, last, dropped := e.HistoryChanges()
	if len(ch) != 2 || dropped != 0 || !last.Equal(bday0.Add(8*time.Hour+9*time.Hour)) {
		t.Fatalf("changes = %d, last %v, dropped %d", len(ch), last, dropped)
	}
	if ch[0].Account != "a@example.com" || len(ch[0].Days) != 1 || ch[0].Days[0].Msgs != 10 || len(ch[0].Hours) != 10 {
		t.Errorf("a's rows = %+v", ch[0])
	}
	if ch, _, _ := e.HistoryChanges(); len(ch) != 0 {
		t.Errorf("changes again = %+v", ch)
	}
	evs := []event.Event{}
	for i := range 3 {
		evs = append(evs, event.Event{Time: bday0.Add(24*time.Hour + time.Duration(i)*time.Minute), Kind: event.Message,
			Account: "a@example.com", IP: netip.MustParseAddr("198.51.100.20"), Rcpts: 1, Size: 100})
	}
	e.Process(&evs[0], nil)
	e.Process(&evs[1], nil)
	ch, mark, _ := e.HistoryChanges()
	if len(ch) != 1 || len(ch[0].Days) != 1 || ch[0].Days[0].Msgs != 2 || len(ch[0].Hours) != 1 {
		t.Fatalf("changes on day 1 = %+v", ch)
	}

	// A restart: the stored rows come back, the watermark says what they
	// count, and the journal's events are warmed.
	f := newBaselineEngine(t, nil)
	all := append(e.HistoryReportRows(t, "a@example.com"), ch[0].Rows)
	for _, r := range all {
		f.RestoreHistory("a@example.com", r)
	}
	f.SetHistoryWatermark(mark)
	for i := range evs {
		f.Warm(&evs[i])
	}
	rep := f.HistoryReport("a@example.com", baseline.Rows{}, bday0.Add(24*time.Hour+time.Hour))
	if rep.Days[0].Messages != 10 || rep.Days[1].Messages != 3 {
		t.Errorf("after the restart: %+v", rep.Days)
	}
}

// HistoryReportRows is the account's rows of day 0 as the store would
// have kept them.
func (e *Engine) HistoryReportRows(t *testing.T, acct string) []baseline.Rows {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.st.peek(key{kind: kAccount, s: acct})
	if n == nil || n.acct == nil || n.acct.history == nil {
		t.Fatalf("no history for %s", acct)
	}
	r := n.acct.history.RowsSince(0, 0)
	r.Days = r.Days[:1]
	r.Hours = r.Hours[:10]
	return []baseline.Rows{r}
}

// The engine holds histories only for accounts that send, and a
// replay that persists nothing does not remember changes.
func TestHistoryNotTrackedByDefault(t *testing.T) {
	e := newBaselineEngine(t, nil)
	sendDay(e, "a@example.com", 0, 3)
	if ch, _, _ := e.HistoryChanges(); len(ch) != 0 {
		t.Errorf("changes without TrackHistory: %+v", ch)
	}
}

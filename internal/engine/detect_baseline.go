package engine

import (
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/event"
)

// baseline counts a message in the account's history (daily and hourly
// totals, kept whether the detector is on or not: daily_caps scales by
// them) and checks the account's last 24 h against its usual day (the
// model is internal/baseline's). When the message starts a new day, the
// day before is finished: the model decides whether it is learned.
//
// The day of an alert, and the day before when the 24 h reach into it,
// are marked anomalous: never learned from.
func (e *Engine) baseline(a *acctState, ev *event.Event, rcpts, kib int, out []*Incident) []*Incident {
	t := ev.Time
	if a.history == nil {
		a.history = &baseline.History{}
	}
	h := a.history
	if !e.warming || t.After(e.histMark) {
		d, hr := baseline.DayOf(t), baseline.HourOf(t)
		if fin, ok := h.Add(t, rcpts, kib, baseline.NetHash(event.NetKey(ev.IP))); ok {
			if e.bl.Finish(h, fin) {
				d = fin.Num
			}
		}
		e.changed(ev.Account, h, d, hr)
		if t.After(e.histLast) {
			e.histLast = t
		}
	}
	c := &e.cfg.Detectors.Baseline
	if !c.Enabled || a.fired.quiet(dBaseline, t) || !e.bl.Check(h, t) {
		return out
	}
	out = append(out, e.newIncident(dBaseline, &c.Common, ev, ev.Account, ev.IP, e.bl.Explain(h, t)))
	a.fired.set(dBaseline, t.Add(c.Window.D()))
	e.changed(ev.Account, h, e.bl.Alerted(h, t, c.Window.D()), baseline.HourOf(t))
	return out
}

// histChanges remembers which accounts' histories changed since the last
// HistoryChanges, and from which day and hour on, so that the daemon
// writes only those rows. It is off (nil index) unless TrackHistory turned
// it on: a replay that persists nothing must not hold on to histories.
type histChanges struct {
	idx     map[string]int32 // account (the store's copy of the name) → list index
	list    []histChange
	dropped uint64 // changes not remembered: the list was full
}

type histChange struct {
	account string
	h       *baseline.History // kept even if the account is evicted before the drain
	day     uint16
	hour    int32
}

// changed notes that account's history changed on day d, hour hr.
func (e *Engine) changed(account string, h *baseline.History, d uint16, hr int32) {
	c := &e.hist
	if c.idx == nil {
		return
	}
	if i, ok := c.idx[account]; ok {
		x := &c.list[i]
		x.day, x.hour = min(x.day, d), min(x.hour, hr)
		return
	}
	if len(c.list) >= e.cfg.MaxTrackedKeys {
		c.dropped++
		return
	}
	n := e.st.lookup(key{kind: kAccount, s: account})
	if n == nil {
		return
	}
	c.idx[n.k.s] = int32(len(c.list))
	c.list = append(c.list, histChange{n.k.s, h, d, hr})
}

// TrackHistory turns on remembering which accounts' histories change, for
// HistoryChanges. The daemon and `analyze --import-history` use it.
func (e *Engine) TrackHistory() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hist.idx == nil {
		e.hist.idx = map[string]int32{}
	}
}

// HistoryChanges returns the history rows changed since the last call
// (TrackHistory must be on), the time of the newest message counted in any
// history so far (the store keeps it as its watermark, see
// SetHistoryWatermark) and how many changes were not remembered because
// more than max_tracked_keys accounts changed between two calls.
func (e *Engine) HistoryChanges() ([]baseline.AccountRows, time.Time, uint64) {
	e.mu.Lock()
	c := &e.hist
	list, last, dropped := c.list, e.histLast, c.dropped
	c.list, c.dropped = nil, 0
	if c.idx != nil {
		c.idx = make(map[string]int32, len(list))
	}
	e.mu.Unlock()
	// The rows are copied a slice at a time, so that decisions do not wait
	// for 100 000 changed accounts at once (about 100 ms). A change made
	// meanwhile to an account already copied is in the next call's list.
	const slice = 1024
	out := make([]baseline.AccountRows, 0, len(list))
	for i := 0; i < len(list); i += slice {
		e.mu.Lock()
		for _, x := range list[i:min(i+slice, len(list))] {
			out = append(out, baseline.AccountRows{Account: x.account, Rows: x.h.RowsSince(x.day, x.hour)})
		}
		e.mu.Unlock()
	}
	return out, last, dropped
}

// RestoreHistory merges stored rows into an account's history (after a
// restart; once per account) and lets the population prior learn from its
// finished days.
func (e *Engine) RestoreHistory(account string, r baseline.Rows) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if account == "" {
		return
	}
	a := e.st.account(account)
	if a.history == nil {
		a.history = &baseline.History{}
	}
	a.history.Merge(r)
	e.bl.Learn(a.history)
}

// SetHistoryWatermark says that the restored histories already count every
// message up to t: events Warm replays from the journal at or before t
// rebuild the other detectors' counters but are not counted again.
func (e *Engine) SetHistoryWatermark(t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.histMark = t
	if t.After(e.histLast) {
		e.histLast = t
	}
}

// HistoryReport describes an account's history at t: the stored rows
// merged with what the engine holds in memory, its usual days and the
// thresholds its last 24 h are held to.
func (e *Engine) HistoryReport(account string, stored baseline.Rows, t time.Time) baseline.Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	var h baseline.History
	h.Merge(stored)
	if n := e.st.peek(key{kind: kAccount, s: account}); n != nil && n.acct != nil && n.acct.history != nil {
		h.Merge(n.acct.history.RowsSince(0, 0))
	}
	return e.bl.Report(&h, account, t)
}

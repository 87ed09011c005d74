package engine

import (
	"fmt"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/event"
)

func (e *Engine) markAnomalous(a *acctState, account string, t time.Time) {
	if a.history != nil {
		d := baseline.DayOf(t)
		a.history.Mark(d, baseline.Anomalous)
		e.changed(account, a.history, d, baseline.HourOf(t))
	}
}

// capFor returns the cap that value is held against: the static one or,
// only once value reaches it, factor × the account's usual busy day when
// its history is long enough — with a note saying so for the evidence.
// Most messages are far below every cap and cost no history look-up.
func (e *Engine) capFor(a *acctState, t time.Time, static, value int64, m baseline.Metric) (int64, string) {
	dc := &e.cfg.Detectors.DailyCaps
	if value < static || a.history == nil || dc.HistoryFactor <= 0 {
		return static, ""
	}
	p, n := a.history.P90(baseline.DayOf(t), m)
	if n < dc.HistoryDays {
		return static, ""
	}
	if c := int64(p * dc.HistoryFactor); c > static {
		return c, fmt.Sprintf("cap raised from %d to %d: %.0f× this account's 90th-percentile day (%.0f) over %d days", static, c, dc.HistoryFactor, p, n)
	}
	return static, ""
}

// withNotes adds the history notes to an evidence map.
func withNotes(evd map[string]any, notes ...string) map[string]any {
	for _, n := range notes {
		if n != "" {
			evd["scaled_by_history"] = n
		}
	}
	return evd
}

func (e *Engine) message(ev *event.Event, out []*Incident) []*Incident {
	if ev.Account == "" {
		return out
	}
	d := &e.cfg.Detectors
	t := ev.Time
	rcpts := max(ev.Rcpts, 1)
	kib := int((ev.Size + 1023) / 1024)
	a := e.st.account(ev.Account)
	a.msgsWin.add(t, d.Harvest.Window.D(), 1)

	// baseline: the account's last 24 h against its own usual day.
	out = e.baseline(a, ev, rcpts, kib, out)

	// daily_caps: rolling 24 h per account. A message over a cap is
	// deferred and not counted, as the MTA would refuse it.
	if d.DailyCaps.Enabled {
		w := d.DailyCaps.Window.D()
		m := a.msgs24.sumAt(t, w) + 1
		r := a.rcpts24.sumAt(t, w) + rcpts
		b := int64(a.bytes24.sumAt(t, w)+kib) * 1024
		var over []string
		cr, n1 := e.capFor(a, t, int64(d.DailyCaps.Recipients), int64(r), baseline.Recipients)
		if int64(r) > cr {
			over = append(over, fmt.Sprintf("recipients %d > %d", r, cr))
		}
		cm, n2 := e.capFor(a, t, int64(d.DailyCaps.Messages), int64(m), baseline.Messages)
		if int64(m) > cm {
			over = append(over, fmt.Sprintf("messages %d > %d", m, cm))
		}
		var n3 string
		if d.DailyCaps.Bytes > 0 {
			var cb int64
			cb, n3 = e.capFor(a, t, d.DailyCaps.Bytes/1024, b/1024, baseline.KiB)
			if b > cb*1024 {
				over = append(over, fmt.Sprintf("bytes %d > %d", b, cb*1024))
			}
		}
		if len(over) > 0 {
			if a.fired.quiet(dDailyCaps, t) && a.capInc != nil {
				a.capInc.Stopped.count(ev)
			} else {
				evd := withNotes(map[string]any{"messages": m, "recipients": r, "bytes": b, "over": over}, n1, n2, n3)
				a.capInc = e.newIncident(dDailyCaps, &d.DailyCaps.Common, ev, ev.Account, ev.IP, evd)
				out = append(out, a.capInc)
				a.fired.set(dDailyCaps, t.Add(w))
			}
			if !e.cfg.DryRun {
				e.verdict = max(e.verdict, Defer)
				return out
			}
		}
		a.msgs24.add(t, w, 1)
		a.rcpts24.add(t, w, rcpts)
		a.bytes24.add(t, w, kib)
	}

	// per_connection: messages in one authenticated SMTP session.
	if d.PerConnection.Enabled && ev.Session != "" {
		ss := e.st.session(sessionID(ev))
		if ss.msgs == 0 {
			ss.first, ss.ip = t, ev.IP
		}
		ss.msgs++
		if ss.msgs >= d.PerConnection.Messages && !ss.fired {
			ss.fired = true
			out = append(out, e.newIncident(dPerConnection, &d.PerConnection.Common, ev, ev.Account, ev.IP, map[string]any{
				"messages":  ss.msgs,
				"threshold": d.PerConnection.Messages,
				"session":   ev.Session,
				"since":     ss.first.UTC(),
				"window":    "1h0m0s",
			}))
		}
	}

	// spamware: messages from one account and address.
	if d.Spamware.Enabled && ev.IP.IsValid() {
		w := d.Spamware.Window.D()
		p := e.st.pairOf(ev.Account, event.NetKey(ev.IP))
		if p.first.IsZero() || t.Sub(p.first) > w {
			p.first = t
		}
		m := p.msgs.add(t, w, 1)
		r := p.rcpts.add(t, w, rcpts)
		if !a.fired.quiet(dSpamware, t) {
			capM, n1 := e.capFor(a, t, int64(d.Spamware.Messages), int64(m), baseline.Messages)
			capR, n2 := e.capFor(a, t, int64(d.Spamware.Recipients), int64(r), baseline.Recipients)
			if int64(m) >= capM || int64(r) >= capR {
				evd := withNotes(map[string]any{"messages": m, "recipients": r, "threshold_messages": capM, "threshold_recipients": capR}, n1, n2)
				out = append(out, e.newIncident(dSpamware, &d.Spamware.Common, ev, ev.Account, ev.IP, evd))
				a.fired.set(dSpamware, t.Add(w))
			}
		}
	}

	return e.checkHarvest(a, ev, out)
}

func (e *Engine) rcptRejected(ev *event.Event, out []*Incident) []*Incident {
	d := &e.cfg.Detectors.BadRcpt
	if ev.Account == "" || !d.Enabled {
		return out
	}
	a := e.st.account(ev.Account)
	n := a.badRcpt.add(ev.Time, d.Window.D(), ev.N())
	if n >= d.Recipients && !a.fired.quiet(dBadRcpt, ev.Time) {
		out = append(out, e.newIncident(dBadRcpt, &d.Common, ev, ev.Account, ev.IP, map[string]any{
			"rejected":  n,
			"threshold": d.Recipients,
		}))
		a.fired.set(dBadRcpt, ev.Time.Add(d.Window.D()))
		e.markAnomalous(a, ev.Account, ev.Time)
	}
	return out
}

package baseline

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// judged is one metric's figures in one view at a time.
type judged struct {
	k         Metric
	view      string // "today" or "24h"
	count     float64
	u         *Usual // the usual day the count is held to
	weekend   bool   // its kind
	threshold float64
	term      Term
	tailP     float64
}

// judge works out the figures of every metric in both views at t (what
// Check does, in full) and returns the one furthest over its threshold.
func (m *Model) judge(h *History, t time.Time) (best judged, all [NumMetrics]judged) {
	today := DayOf(t)
	us := m.usual(h, today)
	wy, wt := Weekend(today-1), Weekend(today)
	uy, ut := &us[b2i(wy)], &us[b2i(wt)]
	xd, x := h.counts(t, h.since)
	bestR := -1.0
	for k := Metric(0); k < NumMetrics; k++ {
		tt, termT := m.threshold(ut, k, 1)
		ty, termY := m.threshold(uy, k, 1)
		day := judged{k: k, view: "today", count: xd[k], u: ut, weekend: wt, threshold: tt, term: termT}
		roll := judged{k: k, view: "24h", count: x[k], u: ut, weekend: wt, threshold: tt, term: termT}
		if ty > tt {
			roll.u, roll.weekend, roll.threshold, roll.term = uy, wy, ty, termY
		}
		all[k] = roll
		for _, j := range []judged{day, roll} {
			if math.IsInf(j.threshold, 1) {
				continue
			}
			if r := j.count / j.threshold; r > bestR {
				best, bestR = j, r
			}
		}
	}
	if best.u == nil {
		best = all[Messages]
	}
	unit := poissonUnit(best.u, best.k)
	best.tailP = poissonTail(best.u.M[best.k].Usual/unit, best.count/unit)
	return best, all
}

// Explain returns the evidence of an alert at t: the metric and view
// furthest over its threshold with its count, what is usual for the
// account, the ratio, the threshold and what set it, the 24 h totals, and
// a one-line summary such as
//
//	412 recipients today by 14:00 UTC; usual 38 ± 9 on a weekday (Tuesday); 10.8× (threshold 190: 5× usual)
func (m *Model) Explain(h *History, t time.Time) map[string]any {
	j, all := m.judge(h, t)
	s := j.u.M[j.k]
	ratio := 0.0
	if s.Usual > 0 {
		ratio = j.count / s.Usual
	}
	d, _ := h.Day(DayOf(t))
	kind := "weekday"
	if j.weekend {
		kind = "weekend"
	}
	if !j.u.Typed {
		kind = "any day"
	}
	return map[string]any{
		"summary":          m.summary(&j, t),
		"metric":           j.k.String(),
		"view":             j.view,
		"count":            int64(math.Round(j.count * unitBytes(j.k))),
		"usual":            round1(s.Usual * unitBytes(j.k)),
		"spread":           round1(s.Spread * unitBytes(j.k)),
		"ratio":            round1(ratio),
		"threshold":        int64(math.Ceil(j.threshold * unitBytes(j.k))),
		"threshold_by":     j.term.String(),
		"day_kind":         kind,
		"basis":            j.u.Basis.String(),
		"history_days":     j.u.Days,
		"active_days":      j.u.Active,
		"tail_probability": j.tailP,
		"messages_24h":     int64(math.Round(all[Messages].count)),
		"recipients_24h":   int64(math.Round(all[Recipients].count)),
		"bytes_24h":        int64(math.Round(all[KiB].count * 1024)),
		"ips_today":        int(d.IPs),
	}
}

func unitBytes(k Metric) float64 {
	if k == KiB {
		return 1024
	}
	return 1
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func (m *Model) summary(j *judged, t time.Time) string {
	var b strings.Builder
	t = t.UTC()
	s := j.u.M[j.k]
	if j.view == "today" {
		fmt.Fprintf(&b, "%s %s today by %s UTC", amount(j.k, j.count), j.k, t.Format("15:04"))
	} else {
		fmt.Fprintf(&b, "%s %s in the 24 h to %s UTC", amount(j.k, j.count), j.k, t.Format("Mon 15:04"))
	}
	fmt.Fprintf(&b, "; usual %s ± %s", amount(j.k, s.Usual), amount(j.k, s.Spread))
	switch {
	case j.u.Basis == Population:
		fmt.Fprintf(&b, " (new or rarely sending account, %d days with traffic: the population's %s-percentile day)", j.u.Active, ordinal(m.cfg.PriorQuantile*100))
	case !j.u.Typed:
		b.WriteString(" a day")
	case j.weekend:
		b.WriteString(" on a weekend day")
	default:
		b.WriteString(" on a weekday")
	}
	if j.u.Basis == Own && j.u.Typed && (j.view == "today" || j.weekend == Weekend(DayOf(t))) {
		fmt.Fprintf(&b, " (%s)", t.Weekday())
	}
	if s.Usual > 0 {
		fmt.Fprintf(&b, "; %s×", strconv.FormatFloat(round1(j.count/s.Usual), 'f', -1, 64))
	}
	fmt.Fprintf(&b, " (threshold %s: ", amount(j.k, math.Ceil(j.threshold)))
	switch j.term {
	case ByFloor:
		fmt.Fprintf(&b, "the floor for %s)", j.k)
	case ByRatio:
		fmt.Fprintf(&b, "%s× usual)", strconv.FormatFloat(m.cfg.Ratio, 'f', -1, 64))
	case BySpread:
		fmt.Fprintf(&b, "usual + %s × spread)", strconv.FormatFloat(m.cfg.Spread, 'f', -1, 64))
	case ByTail:
		fmt.Fprintf(&b, "Poisson tail %g)", m.cfg.TailProbability)
	}
	return b.String()
}

func ordinal(v float64) string {
	s := strconv.FormatFloat(v, 'f', -1, 64)
	switch {
	case strings.HasSuffix(s, "1") && !strings.HasSuffix(s, "11"):
		return s + "st"
	case strings.HasSuffix(s, "2") && !strings.HasSuffix(s, "12"):
		return s + "nd"
	case strings.HasSuffix(s, "3") && !strings.HasSuffix(s, "13"):
		return s + "rd"
	}
	return s + "th"
}

// amount formats a value of metric k: a count, or bytes for KiB.
func amount(k Metric, v float64) string {
	if k == KiB {
		return Bytes(v * 1024)
	}
	if v < 10 && v != math.Trunc(v) {
		return strconv.FormatFloat(round1(v), 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
}

// Bytes formats a byte count for people: 912 B, 4.1 kB, 38 MB, 2.1 GB.
func Bytes(v float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if v < 10 && i > 0 {
		return strconv.FormatFloat(round1(v), 'f', -1, 64) + " " + units[i]
	}
	return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " " + units[i]
}

// Report is an account's history as the admin API gives it and `mailwarden
// history` prints it.
type Report struct {
	Account    string       `json:"account"`
	At         time.Time    `json:"at"`
	First      string       `json:"first_day,omitempty"` // first day with a message seen (UTC)
	Days       []ReportDay  `json:"days"`                // the last history_days days and today, oldest first
	Today      Counts       `json:"today"`               // since UTC midnight
	Last24h    Counts       `json:"last_24h"`            // At's hour and the 23 before it
	Usual      []ReportKind `json:"usual"`               // weekday, weekend
	LimitToday Counts       `json:"threshold_today"`     // what today may reach (0: not judged)
	Limit24h   Counts       `json:"threshold_24h"`       // what the last 24 h may reach
	Note       string       `json:"note,omitempty"`      // why the account is not judged, if it is not
}

// ReportDay is one day of a Report.
type ReportDay struct {
	Date       string `json:"date"`
	Weekday    string `json:"weekday"`
	Messages   uint32 `json:"messages"`
	Recipients uint32 `json:"recipients"`
	Bytes      int64  `json:"bytes"`
	IPs        uint8  `json:"ips"`
	Anomalous  bool   `json:"anomalous,omitempty"` // a detector fired: not learned
	Unlearned  bool   `json:"unlearned,omitempty"` // far above usual: not learned
}

// Counts are messages, recipients and bytes.
type Counts struct {
	Messages   float64 `json:"messages"`
	Recipients float64 `json:"recipients"`
	Bytes      float64 `json:"bytes"`
}

// ReportKind is what is usual on one kind of day.
type ReportKind struct {
	Kind       string `json:"kind"`  // weekday or weekend
	Basis      string `json:"basis"` // own, population or none
	Typed      bool   `json:"typed"` // from this kind of day only (else all days pooled)
	Days       int    `json:"days"`  // learned days
	Active     int    `json:"active_days"`
	Messages   Stat   `json:"messages"`
	Recipients Stat   `json:"recipients"`
	Bytes      Stat   `json:"bytes"`
}

func counts(v [NumMetrics]float64) Counts {
	return Counts{round1(v[Messages]), round1(v[Recipients]), math.Round(v[KiB] * 1024)}
}

// Report describes h at t for the admin.
func (m *Model) Report(h *History, account string, t time.Time) Report {
	today := DayOf(t)
	xd, x := h.counts(t, 0)
	r := Report{Account: account, At: t.UTC(), Days: []ReportDay{}, Today: counts(xd), Last24h: counts(x)}
	if h.Empty() {
		r.Note = "no message seen"
		return r
	}
	r.First = DayTime(h.first).Format("2006-01-02")
	for d := max(int(h.first), int(today)-m.cfg.HistoryDays); d <= int(today); d++ {
		rd := ReportDay{Date: DayTime(uint16(d)).Format("2006-01-02"), Weekday: DayTime(uint16(d)).Weekday().String()[:3]}
		if s, ok := h.Day(uint16(d)); ok {
			rd.Messages, rd.Recipients, rd.Bytes, rd.IPs = s.Msgs, s.Rcpts, int64(s.KiB)*1024, s.IPs
			rd.Anomalous, rd.Unlearned = s.Flags&Anomalous != 0, s.Flags&Unlearned != 0
		}
		r.Days = append(r.Days, rd)
	}
	us := m.usual(h, today)
	kb := func(s Stat) Stat { return Stat{math.Round(s.Usual * 1024), math.Round(s.Spread * 1024)} }
	r1 := func(s Stat) Stat { return Stat{round1(s.Usual), round1(s.Spread)} }
	for w, name := range []string{"weekday", "weekend"} {
		u := &us[w]
		r.Usual = append(r.Usual, ReportKind{Kind: name, Basis: u.Basis.String(), Typed: u.Typed, Days: u.Days, Active: u.Active,
			Messages: r1(u.M[Messages]), Recipients: r1(u.M[Recipients]), Bytes: kb(u.M[KiB])})
	}
	uy, ut := &us[b2i(Weekend(today-1))], &us[b2i(Weekend(today))]
	var lt, l24 [NumMetrics]float64
	for k := Metric(0); k < NumMetrics; k++ {
		tt, _ := m.threshold(ut, k, 1)
		ty, _ := m.threshold(uy, k, 1)
		if !math.IsInf(tt, 1) {
			lt[k], l24[k] = math.Ceil(tt), math.Ceil(max(tt, ty))
		}
	}
	r.LimitToday, r.Limit24h = counts(lt), counts(l24)
	if us[0].Basis == None {
		r.Note = "not judged yet: too few days with traffic and no population prior"
	}
	return r
}

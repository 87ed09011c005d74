package baseline

import (
	"math"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// The model, in short. On every message an account's totals (messages,
// recipients, bytes) are judged in two views (see Check): since UTC
// midnight against a whole usual day of today's kind, and over the last
// 24 h against the larger threshold of the two days they span. The
// thresholds come from the account's own learned days:
//
//   - usual: a robust centre of the daily totals over the last
//     history_days complete days (days without traffic count as zero):
//     their mean with the top tenth clipped (winsorized), so that a past
//     burst does not move it; spread: 1.4826 × the median absolute
//     deviation (a robust standard deviation);
//   - weekdays and weekend days are learned apart (each once it has three
//     days; before, they are pooled);
//   - threshold: the largest of ratio × usual (the admins' "500% over the
//     average"), usual + spread × robust deviation (erratic accounts), a
//     Poisson tail quantile (near-zero accounts: 2 messages are no news for
//     an account averaging 0.3 a day) and the absolute floor
//     min_messages / min_recipients / min_bytes; it is computed once per
//     account and day, when the account first gets over a floor;
//   - an account with fewer than min_days learned days with traffic (new,
//     or sending too rarely to have a usual day) is held to the population
//     prior instead: prior_quantile of the active days of all accounts, or
//     its own figures when they are higher;
//   - no learning from anomalous periods: the days an alert covers (and
//     those of other detectors' incidents) are never learned, and a
//     finished day over the threshold scaled down to learn_ratio is not
//     learned either (Finish), so a slow ramp cannot raise the baseline it
//     is measured against;
//   - after an alert, the next one needs volume sent after the quiet
//     period (Alerted): the tail of one attack raises one incident.
//
// The Poisson tail counts in messages: for recipients and bytes the unit is
// the usual recipients (KiB) per message.

// minTyped is how many learned days of one kind (weekday, weekend) are
// needed before that kind has a usual day of its own; before, both kinds
// are pooled.
const minTyped = 3

// priorMin is the weight (account-days) the population prior needs before
// new accounts are judged against it.
const priorMin = 20

// Basis says what an account's usual day comes from.
type Basis uint8

// Bases.
const (
	None       Basis = iota // too little history and no population prior yet: not judged
	Own                     // the account's own learned days
	Population              // new or sparse account: the population prior (or its own days when higher)
)

var basisNames = [...]string{"none", "own", "population"}

func (b Basis) String() string { return basisNames[b] }

// Stat is what is usual for one metric on one kind of day.
type Stat struct {
	Usual  float64 `json:"usual"`  // robust centre of the daily totals (winsorized mean)
	Spread float64 `json:"spread"` // robust standard deviation (1.4826 × MAD)
}

// Usual is what is usual for an account on one kind of day (weekday or
// weekend), from the complete days before a given day.
type Usual struct {
	Basis  Basis
	Days   int  // learned days the figures come from
	Active int  // of which with traffic
	Typed  bool // from days of the same kind only (else weekdays and weekends pooled)
	M      [NumMetrics]Stat
}

// Model judges histories. It holds the detector's settings and the
// population prior; it is not safe for concurrent use (the engine calls it
// under its lock).
type Model struct {
	cfg   *config.Baseline
	gen   uint16 // bumped by Reconfigure: invalidates cached thresholds
	prior Prior
}

// NewModel returns a model for c (validated).
func NewModel(c *config.Baseline) *Model { return &Model{cfg: c, gen: 1} }

// Reconfigure applies new settings; thresholds cached in histories are
// recomputed on their next use.
func (m *Model) Reconfigure(c *config.Baseline) {
	m.cfg = c
	if m.gen++; m.gen == 0 {
		m.gen = 1
	}
}

// floor returns the absolute floor of metric k, 0 when k is not judged.
func (m *Model) floor(k Metric) float64 {
	switch k {
	case Messages:
		return float64(m.cfg.MinMessages)
	case Recipients:
		return float64(m.cfg.MinRecipients)
	}
	return float64(m.cfg.MinBytes) / 1024
}

// group gathers one kind of day's values.
type group struct {
	n, active int
	v         [NumMetrics][Days]float64
}

func (g *group) add(v *[NumMetrics]float64) {
	for k := range v {
		g.v[k][g.n] = v[k]
	}
	if v[Messages] > 0 {
		g.active++
	}
	g.n++
}

// usual returns what is usual on weekdays ([0]) and weekend days ([1]),
// from the complete learned days before today.
//
// One way out of "never learn from anomalous days": when fewer than
// min_days learned days have traffic but at least min_days excluded ones
// do (a new account whose first days all raised alerts, a customer whose
// volume rose for good), the excluded days are learned too. Only an
// account without a usual day of its own gets there, after min_days days
// that each raised an alert or were far above its usual day.
func (m *Model) usual(h *History, today uint16) [2]Usual {
	var pooled group
	var kinds [2]group
	lo := max(int(h.first), int(today)-m.cfg.HistoryDays)
	skip := Skip
	if m.excludedActive(h, lo, int(today)) {
		skip = 0
	}
	for d := lo; d < int(today); d++ {
		s := &h.days[d%Days]
		var v [NumMetrics]float64
		if int(s.Num) == d {
			if s.Flags&skip != 0 {
				continue
			}
			v = [NumMetrics]float64{float64(s.Msgs), float64(s.Rcpts), float64(s.KiB)}
		}
		pooled.add(&v)
		kinds[b2i(Weekend(uint16(d)))].add(&v)
	}
	var out [2]Usual
	for w := range out {
		u := &out[w]
		g := &pooled
		if kinds[w].n >= minTyped {
			g, u.Typed = &kinds[w], true
		}
		u.Days, u.Active = g.n, g.active
		for k := range u.M {
			u.M[k] = stat(g.v[k][:g.n])
		}
		u.Basis = Own
		if pooled.active < m.cfg.MinDays {
			u.Basis = Population
			u.Days, u.Active, u.Typed = pooled.n, pooled.active, false
			for k := range u.M {
				own := stat(pooled.v[k][:pooled.n])
				p, ok := m.prior.quantile(Metric(k), m.cfg.PriorQuantile)
				if !ok {
					u.Basis = None
				}
				u.M[k] = Stat{Usual: max(own.Usual, p), Spread: own.Spread}
			}
		}
	}
	return out
}

// excludedActive reports whether days [lo, hi) hold fewer than min_days
// learned days with traffic and at least min_days excluded ones.
func (m *Model) excludedActive(h *History, lo, hi int) bool {
	learned, excluded := 0, 0
	for d := lo; d < hi; d++ {
		if s := &h.days[d%Days]; int(s.Num) == d && s.Msgs > 0 {
			if s.Flags&Skip != 0 {
				excluded++
			} else {
				learned++
			}
		}
	}
	return learned < m.cfg.MinDays && excluded >= m.cfg.MinDays
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// stat returns the robust centre and spread of v (sorted in place): the
// winsorized mean — the top tenth of the days (at least the top one, from
// five days on) clipped to the next highest — and 1.4826 × the median
// absolute deviation. It shrugs off a past burst like the median does, but
// it is less noisy (a 6× day is only 20 % over a 5× threshold), it never
// exceeds the plain average the admins' rule speaks of, and it stays above
// zero for an account that sends on a few days only.
func stat(v []float64) Stat {
	n := len(v)
	if n == 0 {
		return Stat{}
	}
	sortFloats(v)
	med := median(v)
	clip := 0
	if n >= 5 {
		clip = (n + 5) / 10
	}
	sum := 0.0
	for i, x := range v {
		if i >= n-clip {
			x = v[n-clip-1]
		}
		sum += x
	}
	var dev [Days]float64
	for i, x := range v {
		dev[i] = math.Abs(x - med)
	}
	sortFloats(dev[:n])
	return Stat{Usual: sum / float64(n), Spread: 1.4826 * median(dev[:n])}
}

func median(v []float64) float64 {
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

// Term is what set a threshold.
type Term uint8

// Terms.
const (
	ByFloor  Term = iota // the absolute floor
	ByRatio              // ratio × usual
	BySpread             // usual + spread × deviation
	ByTail               // the Poisson tail
)

var termNames = [...]string{"floor", "ratio", "spread", "tail"}

func (t Term) String() string { return termNames[t] }

// threshold returns the threshold of metric k for a usual day u, and the
// term that set it. scale < 1 lowers the ratio and the floor by scale and
// raises the tail probability to the power scale (the learning limit); the
// spread term stays.
func (m *Model) threshold(u *Usual, k Metric, scale float64) (float64, Term) {
	floor := m.floor(k)
	if floor <= 0 || u.Basis == None {
		return math.Inf(1), ByFloor
	}
	c := m.cfg
	s := u.M[k]
	t, why := scale*floor, ByFloor
	if r := scale * c.Ratio * s.Usual; r > t {
		t, why = r, ByRatio
	}
	if r := s.Usual + c.Spread*s.Spread; r > t {
		t, why = r, BySpread
	}
	unit := poissonUnit(u, k)
	if r := unit * poissonQuantile(s.Usual/unit, math.Pow(c.TailProbability, scale)); r > t {
		t, why = r, ByTail
	}
	return t, why
}

// poissonUnit is the size of one Poisson count for metric k: a message for
// messages, the usual recipients (KiB) per message for the others (they
// come in lumps of one message's worth). Day-to-day variation beyond
// Poisson's is the spread term's business.
func poissonUnit(u *Usual, k Metric) float64 {
	if k != Messages && u.M[Messages].Usual > 0 {
		return max(1, u.M[k].Usual/u.M[Messages].Usual)
	}
	return 1
}

// poissonQuantile returns the smallest k with P(N ≥ k) ≤ p for N ~
// Poisson(lambda).
func poissonQuantile(lambda, p float64) float64 {
	if lambda <= 0 {
		return 1
	}
	if lambda > 400 { // normal approximation with a skew correction
		z := math.Sqrt2 * math.Erfcinv(2*p)
		return math.Ceil(lambda + z*math.Sqrt(lambda) + (z*z+2)/6)
	}
	pmf := math.Exp(-lambda)
	cdf := pmf
	k := 0
	for 1-cdf > p && k < 100000 {
		k++
		pmf *= lambda / float64(k)
		cdf += pmf
	}
	return float64(k + 1)
}

// poissonTail returns P(N ≥ x) for N ~ Poisson(lambda).
func poissonTail(lambda, x float64) float64 {
	if x <= 0 {
		return 1
	}
	if lambda <= 0 {
		return 0
	}
	if lambda > 400 {
		z := (x - 0.5 - lambda) / math.Sqrt(lambda)
		return 0.5 * math.Erfc(z/math.Sqrt2)
	}
	k := math.Ceil(x)
	// Sum the upper tail directly from its first term: exact where 1 - cdf
	// would cancel.
	lg, _ := math.Lgamma(k + 1)
	term := math.Exp(k*math.Log(lambda) - lambda - lg)
	sum := 0.0
	for i := k; term > 1e-300 && i < k+100000; i++ {
		sum += term
		term *= lambda / (i + 1)
		if term < sum*1e-17 {
			break
		}
	}
	return min(sum, 1)
}

// thresholds fills the history's cached thresholds for today.
func (m *Model) thresholds(h *History, today uint16) {
	if h.cacheDay == today && h.cacheGen == m.gen {
		return
	}
	us := m.usual(h, today)
	for w := range us {
		for k := Metric(0); k < NumMetrics; k++ {
			t, _ := m.threshold(&us[w], k, 1)
			h.thr[w][k] = float32(t)
		}
	}
	h.cacheDay, h.cacheGen = today, m.gen
}

// Check reports whether the account is over a threshold at t on any
// metric, in either of two views:
//
//   - today: the totals since UTC midnight against a whole usual day of
//     today's kind (weekday or weekend) — no hourly profile is needed,
//     and a nightly job that sends its whole day at 02:00 is no anomaly;
//   - the last 24 h against the larger threshold of the two days they
//     span — catches what straddles midnight, and on a Monday morning
//     does not hold a weekday's traffic to a quiet Sunday's figures.
//
// Check is cheap while the 24 h are under the floors (most accounts, most
// of the time); otherwise it uses the thresholds computed once per account
// and day.
func (m *Model) Check(h *History, t time.Time) bool {
	if h.Empty() {
		return false
	}
	xd, x := h.counts(t, h.since)
	under := true
	for k := Metric(0); k < NumMetrics; k++ {
		if f := m.floor(k); f > 0 && x[k] >= f {
			under = false
		}
	}
	if under {
		return false
	}
	today := DayOf(t)
	m.thresholds(h, today)
	y, w := b2i(Weekend(today-1)), b2i(Weekend(today))
	for k := Metric(0); k < NumMetrics; k++ {
		ty, tw := float64(h.thr[y][k]), float64(h.thr[w][k])
		if xd[k] >= tw || x[k] >= max(ty, tw) {
			return true
		}
	}
	return false
}

// Alerted records an alert at t: the days with traffic in its 24 h are
// marked Anomalous (never learned), and the next alert needs volume sent
// after quiet (the detector's quiet period, its window) has passed — the
// tail of an attack that already raised an alert does not raise another;
// an attack that goes on does. It returns the oldest day marked.
func (m *Model) Alerted(h *History, t time.Time, quiet time.Duration) uint16 {
	h.since = HourOf(t.Add(quiet))
	return h.MarkWindow(t, Anomalous)
}

// Finish learns from a finished day d of h (as History.Add returned it):
// the day is marked Unlearned when it crossed the threshold scaled down to
// learn_ratio / ratio, and a learned day with traffic joins the population
// prior. It reports whether the day was marked.
//
// The day is held to the baseline alerts are judged by (learned days
// only), so that a ramp is gated as soon as it is learn_ratio × the usual
// day it started from. A new account's days are learned (unless an alert
// marked them): it has no usual day of its own to protect yet, and
// holding it to the population would keep a busy newcomer from ever
// getting one. The spread term is not scaled down: an erratic
// account's busy day within usual + spread × its deviation is learned, so
// that a low early estimate cannot exclude busy days and sink further.
func (m *Model) Finish(h *History, d Day) bool {
	marked := false
	if d.Flags&Skip == 0 {
		us := m.usual(h, d.Num)
		u := &us[b2i(Weekend(d.Num))]
		for k := Metric(0); k < NumMetrics && u.Basis == Own; k++ {
			if t, _ := m.threshold(u, k, m.cfg.LearnRatio/m.cfg.Ratio); float64(d.Value(k)) > t {
				h.Mark(d.Num, Unlearned)
				d.Flags |= Unlearned
				marked = true
				break
			}
		}
	}
	if d.Flags&Skip == 0 && d.Msgs > 0 {
		m.prior.add(&d)
	}
	return marked
}

// Learn adds the finished, learned days of a restored history to the
// population prior (the days before its newest).
func (m *Model) Learn(h *History) {
	for i := range h.days {
		d := &h.days[i]
		if d.Msgs > 0 && d.Num < h.newest && int(d.Num) > int(h.newest)-Days && d.Flags&Skip == 0 {
			m.prior.add(d)
		}
	}
}

// Prior is the population's distribution of account-days: the daily
// totals of every learned day with traffic of every account, on a log
// scale (four bins per doubling), with older days weighing less (half-life
// two weeks). It costs 2.5 KB per engine, not per account.
type Prior struct {
	day    uint16
	weight float64
	bins   [NumMetrics][priorBins]float64
}

const priorBins = 4*26 + 1

var priorDecay = math.Exp2(-1.0 / 14)

func priorBin(v float64) int {
	if v < 1 {
		return 0
	}
	return min(1+int(math.Log2(v)*4), priorBins-1)
}

func (p *Prior) add(d *Day) {
	w := 1.0
	switch {
	case p.weight == 0:
		p.day = d.Num
	case d.Num > p.day:
		f := math.Pow(priorDecay, float64(d.Num-p.day))
		for k := range p.bins {
			for b := range p.bins[k] {
				p.bins[k][b] *= f
			}
		}
		p.weight *= f
		p.day = d.Num
	case d.Num < p.day:
		w = math.Pow(priorDecay, float64(p.day-d.Num))
	}
	p.weight += w
	for k := Metric(0); k < NumMetrics; k++ {
		p.bins[k][priorBin(float64(d.Value(k)))] += w
	}
}

// quantile returns the q-quantile of metric k over the population's days
// (the upper edge of its bin: on the generous side), or false while the
// prior holds too few days.
func (p *Prior) quantile(k Metric, q float64) (float64, bool) {
	if p.weight < priorMin {
		return 0, false
	}
	acc := 0.0
	for b, w := range p.bins[k] {
		acc += w
		if acc >= q*p.weight {
			if b == 0 {
				return 1, true
			}
			return math.Exp2(float64(b) / 4), true
		}
	}
	return math.Exp2(float64(priorBins-1) / 4), true
}

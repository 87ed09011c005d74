package baseline

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// day0 is a Monday.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func at(d int, hour float64) time.Time {
	return day0.Add(time.Duration(d)*24*time.Hour + time.Duration(hour*float64(time.Hour)))
}

func model(t *testing.T) *Model {
	t.Helper()
	c := config.Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewModel(&c.Detectors.Baseline)
}

// send adds n messages of rcpts recipients spread over 08:00–18:00 of day d,
// finishing the day before as the engine does.
func send(m *Model, h *History, d, n, rcpts int) {
	for i := range n {
		if fin, ok := h.Add(at(d, 8+10*float64(i)/float64(max(n, 1))), rcpts, 20, 1); ok && m != nil {
			m.Finish(h, fin)
		}
	}
}

func TestHistoryAddWindowRows(t *testing.T) {
	var h History
	if !h.Empty() {
		t.Fatal("zero history not empty")
	}
	ip := NetHash(netip.MustParseAddr("192.0.2.1"))
	ip2 := NetHash(netip.MustParseAddr("192.0.2.2"))
	for i := range 10 {
		h.Add(at(0, 10+float64(i)/10), 3, 5, ip)
	}
	h.Add(at(0, 23.5), 1, 1, ip2)
	fin, ok := h.Add(at(1, 0.25), 2, 2, ip)
	if !ok || fin.Num != DayOf(day0) || fin.Msgs != 11 || fin.Rcpts != 31 || fin.KiB != 51 || fin.IPs != 2 {
		t.Fatalf("finished day = %+v, %v", fin, ok)
	}
	// At 01:30 on day 1 the last 24 h (01:00 and the 23 hours before) reach
	// back to 02:00 on day 0: all of day 0's messages (10:00–23:30) and the
	// one of day 1.
	if x := h.Window(at(1, 1.5)); x[Messages] != 12 || x[Recipients] != 33 || x[KiB] != 53 {
		t.Errorf("window = %v", x)
	}
	// At 10:30 they reach back to 11:00: not the ten of 10:00–11:00.
	if x := h.Window(at(1, 10.5)); x[Messages] != 2 {
		t.Errorf("window at 10:30 = %v, want 1 + 1", x)
	}
	today, roll := h.counts(at(1, 1.5), 0)
	if today[Messages] != 1 || roll[Messages] != 12 {
		t.Errorf("counts = %v %v", today, roll)
	}
	// Rows round trip through Merge.
	r := h.RowsSince(0, 0)
	if len(r.Days) != 2 || len(r.Hours) != 3 || r.First != DayOf(day0) {
		t.Fatalf("rows = %+v", r)
	}
	var g History
	g.Merge(r)
	g.Merge(r) // idempotent: counts are the larger, not the sum
	if g.Window(at(1, 1.5)) != h.Window(at(1, 1.5)) || g.RowsSince(0, 0).Days[0] != r.Days[0] || g.First() != h.First() {
		t.Errorf("merged history differs: %+v", g.RowsSince(0, 0))
	}
	// Only what changed since a day and an hour.
	if r := h.RowsSince(DayOf(at(1, 0)), HourOf(at(1, 0))); len(r.Days) != 1 || len(r.Hours) != 1 || r.Hours[0].Msgs != 1 {
		t.Errorf("rows since day 1 = %+v", r)
	}
}

func TestHistoryRing(t *testing.T) {
	var h History
	for d := range 40 {
		send(nil, &h, d, d+1, 1)
	}
	if _, ok := h.Day(DayOf(at(4, 0))); ok {
		t.Error("day 4 still held after 40 days")
	}
	if d, ok := h.Day(DayOf(at(5, 0))); !ok || d.Msgs != 6 {
		t.Errorf("day 5 = %+v %v", d, ok)
	}
	// A message 35 days older than the newest is ignored, not written
	// over a day the ring still holds.
	h.Add(at(4, 12), 1, 1, 0)
	if d, ok := h.Day(DayOf(at(39, 0))); !ok || d.Msgs != 40 {
		t.Errorf("day 39 = %+v %v", d, ok)
	}
	if len(h.RowsSince(0, 0).Days) != Days {
		t.Errorf("rows = %d days", len(h.RowsSince(0, 0).Days))
	}
	// P90 (daily_caps): 30 days before today, anomalous days skipped.
	h.Mark(DayOf(at(38, 0)), Anomalous)
	// Days 10–39 hold 11–40 messages; without day 38 (39 messages) the
	// 27th of 29 values is 37.
	if p, n := h.P90(DayOf(at(40, 0)), Messages); n != 29 || p != 37 {
		t.Errorf("p90 = %v over %d days", p, n)
	}
}

func TestMergeKeepsNewerDays(t *testing.T) {
	var h History
	send(nil, &h, 40, 5, 1)
	// Rows from a store holding an older day in the same ring slot.
	h.Merge(Rows{First: DayOf(at(0, 0)), Days: []Day{{Msgs: 9, Num: DayOf(at(5, 0))}}})
	if d, ok := h.Day(DayOf(at(40, 0))); !ok || d.Msgs != 5 {
		t.Errorf("day 40 = %+v %v", d, ok)
	}
	if h.First() != DayOf(at(0, 0)) {
		t.Errorf("first = %d", h.First())
	}
}

func TestEstimate(t *testing.T) {
	var s uint64
	for i := range 8 {
		s |= 1 << (NetHash(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})) >> 58)
	}
	if e := estimate(s); e < 6 || e > 10 {
		t.Errorf("8 addresses estimated as %d", e)
	}
	if estimate(0) != 0 || estimate(^uint64(0)) != 255 {
		t.Error("estimate bounds")
	}
}

func TestPoisson(t *testing.T) {
	// P(N >= 4 | 1) = 0.019, P(N >= 5 | 1) = 0.00366, P(N >= 6 | 1) =
	// 0.00059: the quantile at 1e-2 is 5, at 1e-3 is 6.
	if q := poissonQuantile(1, 1e-2); q != 5 {
		t.Errorf("quantile(1, 1e-2) = %v", q)
	}
	if q := poissonQuantile(1, 1e-3); q != 6 {
		t.Errorf("quantile(1, 1e-3) = %v", q)
	}
	if p := poissonTail(1, 5); math.Abs(p-0.00366) > 1e-5 {
		t.Errorf("tail(1, 5) = %v", p)
	}
	for _, l := range []float64{0.3, 3, 30, 300, 3000} {
		q := poissonQuantile(l, 1e-6)
		if p := poissonTail(l, q); p > 1.5e-6 {
			t.Errorf("tail(%v, quantile %v) = %v > 1e-6", l, q, p)
		}
		if p := poissonTail(l, q-2); l < 400 && p <= 1e-6 {
			t.Errorf("quantile(%v) = %v is not the smallest", l, q)
		}
	}
	// An account averaging 0.3 messages a day: 2 is no news.
	if poissonTail(0.3, 2) > 1e-6 == false {
		t.Error("2 messages at 0.3 a day judged improbable")
	}
}

// A steady weekday sender: 20 messages of 2 recipients on weekdays, 2 on
// weekends, for 4 weeks.
func steady(m *Model, h *History, days int) {
	for d := range days {
		n := 20 + (d*7)%5 - 2
		if d%7 >= 5 {
			n = 2
		}
		send(m, h, d, n, 2)
	}
}

func TestUsualAndThresholds(t *testing.T) {
	m := model(t)
	var h History
	steady(m, &h, 28)
	us := m.usual(&h, DayOf(at(28, 0)))
	wd, we := us[0], us[1]
	if wd.Basis != Own || !wd.Typed || wd.Days != 20 || math.Abs(wd.M[Messages].Usual-20) > 1.5 || math.Abs(wd.M[Recipients].Usual-40) > 3 {
		t.Errorf("weekday usual = %+v", wd)
	}
	if !we.Typed || we.M[Messages].Usual != 2 || we.M[Messages].Spread != 0 {
		t.Errorf("weekend usual = %+v", we)
	}
	// Monday (day 28): 5× of 20 is 100 messages.
	if m.Check(&h, at(28, 12)) {
		t.Error("an empty Monday is an anomaly")
	}
	send(m, &h, 28, 99, 1)
	if m.Check(&h, at(28, 18)) {
		t.Error("99 messages is under 5× a usual 20")
	}
	h.Add(at(28, 18.1), 1, 20, 1)
	h.Add(at(28, 18.2), 1, 20, 1)
	if !m.Check(&h, at(28, 18.2)) {
		t.Error("101 messages is over 5× a usual 20")
	}
	evd := m.Explain(&h, at(28, 18.2))
	sum, _ := evd["summary"].(string)
	for _, want := range []string{"messages today by 18:12 UTC", "usual 2", "on a weekday (Monday)", "× (threshold 10", "5× usual)"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
	if evd["view"] != "today" || evd["threshold_by"] != "ratio" || evd["basis"] != "own" || evd["metric"] != "messages" {
		t.Errorf("evidence = %v", evd)
	}

	// A Saturday is held to the weekend's usual day: 2 messages, so the
	// floor of 50 decides; a weekday's 60 would be nothing on a Tuesday.
	var g History
	steady(m, &g, 33) // day 33 is a Saturday
	send(m, &g, 33, 55, 1)
	if !m.Check(&g, at(33, 18)) {
		t.Error("55 messages on a Saturday usually of 2 is no anomaly")
	}
	if e := m.Explain(&g, at(33, 18)); e["threshold_by"] != "floor" || e["day_kind"] != "weekend" {
		t.Errorf("saturday evidence = %v", e)
	}
}

// One past burst must not inflate the usual day: a plain mean would.
func TestBurstDoesNotInflate(t *testing.T) {
	m := model(t)
	var h History
	steady(m, &h, 28)
	send(nil, &h, 28, 400, 1) // a Monday burst the model never saw as it happened
	send(m, &h, 29, 20, 2)
	us := m.usual(&h, DayOf(at(30, 0)))
	if u := us[0].M[Messages].Usual; u > 21 {
		t.Errorf("usual after a 400-message day = %v, want about 20 (a plain mean says %v)", u, (20*20+400)/21.0)
	}
	// It was far above usual: finished, it is not learned either.
	if d, _ := h.Day(DayOf(at(28, 0))); d.Flags&Unlearned == 0 {
		t.Errorf("burst day flags = %v", d.Flags)
	}
}

// An account averaging 0.3 messages a day does not alert on 2, nor on
// anything under the floor.
func TestNearZeroAccount(t *testing.T) {
	m := model(t)
	m.prior = popPrior(10)
	var h History
	for d := range 30 {
		if d%3 == 0 {
			send(m, &h, d, 1, 1)
		}
	}
	send(m, &h, 30, 2, 1)
	if m.Check(&h, at(30, 19)) {
		t.Error("2 messages alert an account averaging 0.3")
	}
	send(m, &h, 30, 45, 1)
	if m.Check(&h, at(30, 19)) {
		t.Error("47 messages, under the floor of 50, alert")
	}
	send(m, &h, 30, 10, 1)
	if !m.Check(&h, at(30, 19)) {
		t.Error("57 messages from an account averaging 0.3 do not alert")
	}
}

// popPrior is a population of active days around median.
func popPrior(median float64) Prior {
	var p Prior
	for i := range 200 {
		v := uint32(median * math.Exp(float64(i%20-10)/10))
		p.add(&Day{Msgs: v, Rcpts: 2 * v, KiB: 20 * v, Num: DayOf(at(10, 0))})
	}
	return p
}

// A new account has no history: it is held to the population prior, and
// not judged at all while there is none.
func TestNewAccountPrior(t *testing.T) {
	m := model(t)
	var h History
	send(m, &h, 30, 1000, 1)
	if m.Check(&h, at(30, 19)) {
		t.Error("judged without any prior")
	}
	m.prior = popPrior(10)
	q, ok := m.prior.quantile(Messages, 0.99)
	if !ok || q < 20 || q > 40 {
		t.Fatalf("prior p99 = %v %v", q, ok)
	}
	if m.Check(&h, at(30, 19)) {
		t.Error("thresholds are computed once a day: a prior that appeared since applies tomorrow")
	}
	h.cacheDay = 0
	if !m.Check(&h, at(30, 19)) {
		t.Errorf("1000 messages from a new account under a p99 of %v", q)
	}
	var g History
	send(m, &g, 30, int(4*q), 1)
	if m.Check(&g, at(30, 19)) {
		t.Errorf("%d messages from a new account (4× the population's p99) alert", int(4*q))
	}
	e := m.Explain(&h, at(30, 19))
	if e["basis"] != "population" || !strings.Contains(e["summary"].(string), "population's 99th-percentile day") {
		t.Errorf("evidence = %v", e)
	}
	r := m.Report(&h, "new@example.com", at(30, 19))
	if r.Usual[0].Basis != "population" || r.LimitToday.Messages == 0 || r.Today.Messages != 1000 {
		t.Errorf("report = %+v", r)
	}
}

// An account whose every day raised an alert learns them after min_days.
func TestExcludedDaysLearnedEventually(t *testing.T) {
	m := model(t)
	m.prior = popPrior(10)
	var h History
	for d := range 12 {
		send(m, &h, d, 400, 1)
		if m.Check(&h, at(d, 19)) {
			h.MarkWindow(at(d, 19), Anomalous)
		}
	}
	if us := m.usual(&h, DayOf(at(9, 0))); us[0].Basis != Population || us[0].Active != 0 {
		t.Errorf("after 9 alerted days: %+v, want the population's figures", us[0])
	}
	if us := m.usual(&h, DayOf(at(12, 0))); us[0].M[Messages].Usual < 300 {
		t.Errorf("after %d alerted days the account's volume is still not learned: %+v", 12, us[0])
	}
}

func TestReconfigureDropsCache(t *testing.T) {
	m := model(t)
	var h History
	steady(m, &h, 28)
	send(m, &h, 28, 80, 1)
	if m.Check(&h, at(28, 18)) {
		t.Fatal("80 alerts at ratio 5")
	}
	c := *m.cfg
	c.Ratio, c.LearnRatio = 3, 2
	m.Reconfigure(&c)
	if !m.Check(&h, at(28, 18)) {
		t.Error("80 does not alert at ratio 3 after Reconfigure")
	}
}

func TestBytes(t *testing.T) {
	for v, want := range map[float64]string{912: "912 B", 4100: "4.1 kB", 38e6: "38 MB", 2.1e9: "2.1 GB"} {
		if got := Bytes(v); got != want {
			t.Errorf("Bytes(%v) = %q, want %q", v, got, want)
		}
	}
}

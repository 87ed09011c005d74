// Package baseline is the statistics of mailwarden's per-account baseline
// (DESIGN §4): an account's daily and hourly sending aggregates (History),
// the model that turns 30 days of them into what is usual for the account
// and how far above usual is an anomaly (Model), and the evidence that
// explains a decision in numbers.
//
// It is pure: no I/O, no clock (times come from events). The engine owns
// one History per account and asks the Model about it on every message; the
// daemon persists the aggregates (store) and the CLI prints them.
//
// Days and hours are UTC days and hours, numbered since the Unix epoch. It
// does not count distinct recipient domains: no event source reports them
// yet.
package baseline

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
	"time"
)

// Metric is one of the aggregates the baseline judges.
type Metric uint8

// Metrics.
const (
	Messages Metric = iota
	Recipients
	KiB // message bytes, in KiB
	NumMetrics
)

var metricNames = [NumMetrics]string{"messages", "recipients", "bytes"}

func (m Metric) String() string { return metricNames[m] }

// Days is how many daily slots a History keeps: today and the 34 days
// before it, enough for a 30-day baseline plus the days that roll out of
// it while the store catches up.
const Days = 35

// hourSlots covers the rolling 24 h: the current hour and the 23 before it
// (between 23 and 24 hours: one slot more would put a History in Go's
// next allocation size, 128 bytes more per account).
const hourSlots = 24

// Flags mark a day that must not be learned from.
type Flags uint8

// Flags.
const (
	// Anomalous: a detector fired for the account that day (a confirmed or
	// suspected compromise).
	Anomalous Flags = 1 << iota
	// Unlearned: the finished day was far above the account's usual day
	// (past learn_ratio) without being an alert: kept out of the baseline
	// so that a slow ramp cannot raise the baseline it is measured against.
	Unlearned
)

// Skip is the set of flags that keep a day out of the baseline.
const Skip = Anomalous | Unlearned

// Day is an account's sending on one UTC day (16 bytes).
type Day struct {
	Msgs  uint32 // messages accepted (or held, deferred: attempts count)
	Rcpts uint32 // recipients
	KiB   uint32 // message bytes in KiB, rounded up per message
	Num   uint16 // day number: days since 1970-01-01 UTC
	IPs   uint8  // distinct client addresses (IPv6 per /64), estimated, at most 255
	Flags Flags
}

// Value returns the day's aggregate m.
func (d *Day) Value(m Metric) uint32 {
	switch m {
	case Messages:
		return d.Msgs
	case Recipients:
		return d.Rcpts
	}
	return d.KiB
}

// Hour is an account's sending in one UTC hour.
type Hour struct {
	Msgs, Rcpts, KiB uint32
}

func (h *Hour) value(m Metric) uint32 {
	switch m {
	case Messages:
		return h.Msgs
	case Recipients:
		return h.Rcpts
	}
	return h.KiB
}

// HourRow is an hour with its number (hours since 1970-01-01 00:00 UTC).
type HourRow struct {
	Num int32
	Hour
}

// History is one account's recent sending: 35 daily totals, the last 24
// hourly totals (the rolling 24 h), a sketch of today's distinct client
// addresses and the thresholds derived from it for the current day. It
// takes 896 bytes, exactly one of Go's allocation sizes
// (BenchmarkHistorySize); the zero value is empty.
type History struct {
	first    uint16 // day of the first message seen
	newest   uint16 // newest day with traffic
	cacheDay uint16 // the day thr was computed for (0: none)
	cacheGen uint16 // the model generation it was computed with
	days     [Days]Day
	head     int32 // hour number of the newest hourly slot
	since    int32 // first hour Check counts: after an alert, the hour its quiet period ends
	hours    [hourSlots]Hour
	nets     uint64 // today's distinct addresses: a 64-bit linear-counting sketch
	thr      [2][NumMetrics]float32
}

// DayOf returns the UTC day number of t.
func DayOf(t time.Time) uint16 { return uint16(t.Unix() / 86400) }

// HourOf returns the hour number of t.
func HourOf(t time.Time) int32 { return int32(t.Unix() / 3600) }

// DayTime returns the start of day d (UTC).
func DayTime(d uint16) time.Time { return time.Unix(int64(d)*86400, 0).UTC() }

// Weekend reports whether day d is a Saturday or a Sunday (UTC).
func Weekend(d uint16) bool {
	w := (int(d) + 4) % 7 // 1970-01-01 was a Thursday
	return w == 0 || w == 6
}

// Empty reports whether the history has seen no message.
func (h *History) Empty() bool { return h.first == 0 && h.newest == 0 }

// First returns the day of the first message seen.
func (h *History) First() uint16 { return h.first }

// Newest returns the newest day with traffic.
func (h *History) Newest() uint16 { return h.newest }

// Day returns the totals of day d, or false when the history does not hold
// it (no traffic that day, or too old).
func (h *History) Day(d uint16) (Day, bool) {
	s := &h.days[int(d)%Days]
	if s.Num != d || h.Empty() {
		return Day{}, false
	}
	return *s, true
}

func sat(a uint32, b int) uint32 {
	if b <= 0 {
		return a
	}
	if s := uint64(a) + uint64(b); s < math.MaxUint32 {
		return uint32(s)
	}
	return math.MaxUint32
}

// NetHash hashes a client address for the distinct-address sketch (an IPv6
// address should be given as its /64, see event.NetKey).
func NetHash(ip netip.Addr) uint64 {
	if !ip.IsValid() {
		return 0
	}
	a := ip.As16()
	x := binary.BigEndian.Uint64(a[:8]) ^ bits.RotateLeft64(binary.BigEndian.Uint64(a[8:]), 29)
	return (x | 1) * 0x9e3779b97f4a7c15
}

// estimate returns the linear-counting estimate of a 64-bit sketch, rounded
// down (never below the bits set: exact for the handful of addresses an
// account uses when they do not collide), saturating near 250.
func estimate(s uint64) uint8 {
	zero := 64 - bits.OnesCount64(s)
	if zero == 0 {
		return 255
	}
	n := math.Floor(-64 * math.Log(float64(zero)/64))
	return uint8(min(n, 255))
}

// Add counts one message at t. When t starts a newer day than any seen
// before, the newest day before it is finished: Add returns it (a copy) so
// that the model can learn from it. Messages more than 34 days older than
// the newest are ignored.
func (h *History) Add(t time.Time, rcpts, kib int, net uint64) (finished Day, ok bool) {
	d := DayOf(t)
	if h.Empty() {
		h.first, h.newest = d, d
	}
	if d > h.newest {
		if s := &h.days[int(h.newest)%Days]; s.Num == h.newest {
			finished, ok = *s, true
		}
		h.newest, h.nets = d, 0
	} else if int(d) <= int(h.newest)-Days {
		return Day{}, false
	}
	if d < h.first {
		h.first = d
	}
	s := h.slot(d)
	s.Msgs = sat(s.Msgs, 1)
	s.Rcpts = sat(s.Rcpts, rcpts)
	s.KiB = sat(s.KiB, kib)
	if d == h.newest && net != 0 {
		h.nets |= 1 << (net >> 58)
		s.IPs = max(s.IPs, estimate(h.nets))
	}
	hr := HourOf(t)
	h.advance(hr)
	if hr > h.head-hourSlots {
		x := &h.hours[int(hr)%hourSlots]
		x.Msgs = sat(x.Msgs, 1)
		x.Rcpts = sat(x.Rcpts, rcpts)
		x.KiB = sat(x.KiB, kib)
	}
	return finished, ok
}

// slot returns day d's slot, emptied when it held an older day.
func (h *History) slot(d uint16) *Day {
	s := &h.days[int(d)%Days]
	if s.Num != d {
		*s = Day{Num: d}
	}
	return s
}

// advance moves the hourly ring forward to hour hr, emptying the hours it
// passes.
func (h *History) advance(hr int32) {
	if hr <= h.head {
		return
	}
	if h.head == 0 || hr-h.head >= hourSlots {
		h.hours = [hourSlots]Hour{}
	} else {
		for x := h.head + 1; x <= hr; x++ {
			h.hours[int(x)%hourSlots] = Hour{}
		}
	}
	h.head = hr
}

// Mark sets flags on day d (creating its slot when the day has no traffic
// yet: a detector may fire on a login before the day's first message) and
// drops the cached thresholds.
func (h *History) Mark(d uint16, f Flags) {
	if h.Empty() || int(d) <= int(h.newest)-Days {
		return
	}
	h.slot(d).Flags |= f
	h.cacheDay = 0
}

// MarkWindow sets flags on every day with traffic in the 24 h ending at t
// (the days an alert's window covers) and returns the oldest of them.
func (h *History) MarkWindow(t time.Time, f Flags) uint16 {
	oldest := DayOf(t)
	h.Mark(oldest, f)
	hr := HourOf(t)
	for n := max(hr-hourSlots+1, h.head-hourSlots+1, 1); n <= min(hr, h.head); n++ {
		if h.hours[int(n)%hourSlots] != (Hour{}) {
			if d := uint16(n / 24); d < oldest {
				h.Mark(d, f)
				oldest = d
			}
		}
	}
	return oldest
}

// Window returns the account's totals over the last 24 h at t: t's hour
// so far and the 23 hours before it.
func (h *History) Window(t time.Time) [NumMetrics]float64 {
	_, roll := h.counts(t, 0)
	return roll
}

// counts returns the account's totals since t's UTC midnight and over the
// last 24 h (t's hour and the 23 before it), counting no hour before from.
func (h *History) counts(t time.Time, from int32) (today, roll [NumMetrics]float64) {
	hr := HourOf(t)
	midnight := int32(DayOf(t)) * 24
	for i := int32(0); i < hourSlots; i++ {
		n := hr - i
		if n > h.head || n <= h.head-hourSlots || n <= 0 || n < from {
			continue
		}
		s := &h.hours[int(n)%hourSlots]
		for m := Metric(0); m < NumMetrics; m++ {
			v := float64(s.value(m))
			roll[m] += v
			if n >= midnight {
				today[m] += v
			}
		}
	}
	return today, roll
}

// Rows is a history in the form the store keeps: day and hour rows.
type Rows struct {
	First uint16
	Days  []Day
	Hours []HourRow
}

// AccountRows are one account's rows.
type AccountRows struct {
	Account string
	Rows
}

// RowsSince returns the days numbered from day on and the hours numbered
// from hour on that the history holds (days and hours without traffic are
// left out, unless a day carries flags).
func (h *History) RowsSince(day uint16, hour int32) Rows {
	r := Rows{First: h.first}
	if h.Empty() {
		return r
	}
	lo := max(int(day), int(h.newest)-Days+1, 0)
	for d := lo; d <= int(h.newest); d++ {
		if s := &h.days[d%Days]; int(s.Num) == d && (s.Msgs > 0 || s.Flags != 0) {
			r.Days = append(r.Days, *s)
		}
	}
	for n := max(hour, h.head-hourSlots+1, 1); n <= h.head; n++ {
		if s := h.hours[int(n)%hourSlots]; s != (Hour{}) {
			r.Hours = append(r.Hours, HourRow{n, s})
		}
	}
	return r
}

// Merge adds stored rows to the history, keeping the larger of two counts
// for the same day or hour (counts only grow within a day, so the larger
// one is the more complete) and the union of the flags. Rows too old for
// the history's ring are ignored.
func (h *History) Merge(r Rows) {
	for _, d := range r.Days {
		if h.Empty() {
			h.first, h.newest = d.Num, d.Num
		}
		if d.Num > h.newest {
			h.newest, h.nets = d.Num, 0
		}
		if int(d.Num) <= int(h.newest)-Days {
			continue
		}
		s := &h.days[int(d.Num)%Days]
		if s.Num != d.Num {
			if s.Num > d.Num && s.Msgs > 0 {
				continue
			}
			*s = Day{Num: d.Num}
		}
		s.Msgs, s.Rcpts, s.KiB = max(s.Msgs, d.Msgs), max(s.Rcpts, d.Rcpts), max(s.KiB, d.KiB)
		s.IPs = max(s.IPs, d.IPs)
		s.Flags |= d.Flags
		if d.Num < h.first {
			h.first = d.Num
		}
	}
	if r.First != 0 && (h.Empty() || r.First < h.first) {
		if h.Empty() {
			h.newest = r.First
		}
		h.first = r.First // the account is older than its oldest stored day
	}
	for _, x := range r.Hours {
		h.advance(x.Num)
		if x.Num <= h.head-hourSlots {
			continue
		}
		s := &h.hours[int(x.Num)%hourSlots]
		s.Msgs, s.Rcpts, s.KiB = max(s.Msgs, x.Msgs), max(s.Rcpts, x.Rcpts), max(s.KiB, x.KiB)
	}
	h.cacheDay = 0
}

// P90 returns the 90th-percentile daily value of m over the complete days
// before today within the last 30 (days without traffic count as zero;
// days marked Anomalous are skipped) and how many days that covers. It is
// what daily_caps scales its caps by.
func (h *History) P90(today uint16, m Metric) (float64, int) {
	var buf [Days]float64
	vals := buf[:0]
	for d := max(int(h.first), int(today)-30); d < int(today); d++ {
		s := &h.days[d%Days]
		switch {
		case int(s.Num) != d:
			vals = append(vals, 0)
		case s.Flags&Anomalous == 0:
			vals = append(vals, float64(s.Value(m)))
		}
	}
	if len(vals) == 0 || h.Empty() {
		return 0, 0
	}
	sortFloats(vals)
	return vals[(len(vals)*9)/10], len(vals)
}

// sortFloats is an insertion sort: the slices are at most 35 long.
func sortFloats(v []float64) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}

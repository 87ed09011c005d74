package baseline

import (
	"testing"
	"time"
	"unsafe"
)

// BenchmarkHistorySize reports what one account's history takes in memory
// (the struct is exactly one of Go's allocation sizes: no rounding up).
func BenchmarkHistorySize(b *testing.B) {
	var hs []*History
	for b.Loop() {
		hs = append(hs[:0], new(History))
	}
	b.ReportMetric(float64(unsafe.Sizeof(History{})), "bytes/account")
}

// historyOf30Days is an account with 30 days of weekday and weekend mail.
func historyOf30Days(m *Model) *History {
	h := new(History)
	steady(m, h, 30)
	return h
}

// BenchmarkThresholds is what an account above the floors costs once a
// day: its usual weekday and weekend from 30 days and the thresholds.
func BenchmarkThresholds(b *testing.B) {
	c := model(&testing.T{})
	c.prior = popPrior(10)
	h := historyOf30Days(c)
	day := DayOf(at(30, 0))
	for b.Loop() {
		h.cacheDay = 0
		c.thresholds(h, day)
	}
}

// BenchmarkCheck is one message of an account judged against its cached
// thresholds (the 24 h above the floors, under the thresholds).
func BenchmarkCheck(b *testing.B) {
	c := model(&testing.T{})
	h := historyOf30Days(c)
	send(c, h, 30, 60, 1)
	t := at(30, 18)
	if c.Check(h, t) {
		b.Fatal("alert")
	}
	for b.Loop() {
		c.Check(h, t)
	}
	_ = time.Now
}

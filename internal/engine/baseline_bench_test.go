package engine

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

// loaded returns an engine holding 30 days of history for n accounts
// (restored as the daemon does at a start), their names, and the heap the
// accounts took.
func loaded(b *testing.B, n int, perDay func(a int) uint32, baselineOn bool) (*Engine, []string, float64) {
	cfg := config.Default()
	cfg.Detectors.Baseline.Enabled = baselineOn
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	e := New(cfg)
	names := make([]string, n)
	for a := range names {
		names[a] = fmt.Sprintf("user%07d@example.com", a)
	}
	today := baseline.DayOf(bday0.Add(30 * 24 * time.Hour))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for a, name := range names {
		v := perDay(a)
		r := baseline.Rows{First: today - 30}
		for d := today - 30; d < today; d++ {
			if baseline.Weekend(d) {
				continue
			}
			r.Days = append(r.Days, baseline.Day{Msgs: v, Rcpts: 2 * v, KiB: 20 * v, IPs: 1, Num: d})
		}
		e.RestoreHistory(name, r)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	return e, names, float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// BenchmarkBaselineEvent is one message through every detector, the
// baseline included, at random over 100 000 accounts that each have 30
// days of history loaded and have sent today already: "quiet" accounts
// are under the floors (most accounts, most of the time), "busy" ones are
// above them, so every message is judged against the account's thresholds
// (computed once a day: BenchmarkThresholds in internal/baseline);
// "quiet-baseline-off" is the same as quiet with the detector off (the
// history is still kept). heap-bytes/account is what an account restored
// with a history takes in the engine (history, other state, key).
func BenchmarkBaselineEvent(b *testing.B) {
	for _, tc := range []struct {
		name   string
		perDay func(a int) uint32
		on     bool
		warm   int // messages per account today before the timed loop
	}{
		{"quiet", func(a int) uint32 { return uint32(2 + a%20) }, true, 10},
		{"quiet-baseline-off", func(a int) uint32 { return uint32(2 + a%20) }, false, 10},
		{"busy", func(a int) uint32 { return uint32(300 + a%200) }, true, 60},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const accounts = 100_000
			e, names, heap := loaded(b, accounts, tc.perDay, tc.on)
			r := rand.New(rand.NewPCG(1, 2))
			start := bday0.Add(30*24*time.Hour + 8*time.Hour)
			ev := event.Event{Kind: event.Message, Protocol: event.SMTP, Rcpts: 2, Size: 20000, Source: "bench"}
			var out []*Incident
			// Today's first messages (a new day, new per-address state)
			// and, for busy accounts, the way over the floors are not timed.
			i := 0
			for ; i < tc.warm*accounts; i++ {
				a := i % accounts
				ev.Account, ev.IP = names[a], netip.AddrFrom4([4]byte{198, 18, byte(a >> 8), byte(a)})
				ev.Time = start.Add(time.Duration(i) * 50 * time.Microsecond)
				_, out = e.Process(&ev, out[:0])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				a := r.IntN(accounts)
				ev.Account, ev.IP = names[a], netip.AddrFrom4([4]byte{198, 18, byte(a >> 8), byte(a)})
				ev.Time = start.Add(time.Duration(i) * 50 * time.Microsecond)
				_, out = e.Process(&ev, out[:0])
				i++
			}
			b.ReportMetric(heap, "heap-bytes/account")
		})
	}
}

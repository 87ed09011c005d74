package engine

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

// BenchmarkProcess measures one event through every detector, on a mix of
// logins, messages and failures over 100 000 accounts and 1 000 000
// addresses (state at its working size, not empty).
func BenchmarkProcess(b *testing.B) {
	cfg := config.Default()
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	e := New(cfg)
	r := rand.New(rand.NewPCG(1, 1))
	const accounts, addrs = 100_000, 1_000_000
	names := make([]string, accounts)
	for i := range names {
		names[i] = fmt.Sprintf("user%d@example.com", i)
	}
	evs := make([]event.Event, 1<<16)
	t := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	for i := range evs {
		a := r.IntN(accounts)
		ip := netip.AddrFrom4([4]byte{byte(1 + a%223), byte(a >> 8), byte(r.IntN(addrs) >> 8), byte(r.IntN(256))})
		ev := event.Event{Account: names[a], IP: ip, Protocol: event.IMAP, Source: "bench", Session: fmt.Sprint(i % 5000)}
		switch x := r.IntN(10); {
		case x < 5:
			ev.Kind = event.AuthOK
		case x < 8:
			ev.Kind, ev.Protocol, ev.Rcpts, ev.Size = event.Message, event.SMTP, 1+r.IntN(3), 4000
		default:
			ev.Kind = event.AuthFail
		}
		evs[i] = ev
	}
	var out []*Incident
	// Warm the state up to its working size.
	for i := 0; i < 1_000_000; i++ {
		ev := evs[i%len(evs)]
		ev.Time = t.Add(time.Duration(i) * 50 * time.Millisecond)
		_, out = e.Process(&ev, out[:0])
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 1_000_000
	for b.Loop() {
		ev := evs[i%len(evs)]
		ev.Time = t.Add(time.Duration(i) * 50 * time.Millisecond)
		_, out = e.Process(&ev, out[:0])
		i++
	}
	b.ReportMetric(float64(e.TrackedKeys()), "keys")
}

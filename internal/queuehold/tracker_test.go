package queuehold

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

func pfID(i int) string { return fmt.Sprintf("%010X", 0xA000000000+i) }

func TestTracker(t *testing.T) {
	t0 := time.Date(2026, 11, 4, 9, 0, 0, 0, time.UTC)
	tr := NewTracker(config.QueueHold{MTA: "postfix", Remember: config.Duration(time.Hour), MaxPerAccount: 3})

	tr.Add("joe@example.com", pfID(1), t0)
	tr.Add("joe@example.com", pfID(2), t0.Add(time.Minute))
	tr.Add("joe@example.com", pfID(1), t0.Add(2*time.Minute)) // again: no change
	tr.Add("ann@example.com", pfID(9), t0.Add(2*time.Minute))
	// Not Postfix ids, or no account: ignored.
	for _, bad := range []string{"1xWxn8-0003rG-32", "ALL", "", "3f1a2b4c5d"} {
		tr.Add("joe@example.com", bad, t0)
	}
	tr.Add("", pfID(5), t0)
	if got := tr.IDs("joe@example.com", t0.Add(3*time.Minute)); !slices.Equal(got, []string{pfID(1), pfID(2)}) {
		t.Fatalf("joe: %v", got)
	}
	if tr.Len() != 3 {
		t.Fatalf("Len %d, want 3", tr.Len())
	}

	// At most 3 per account: the newest are kept.
	tr.Add("joe@example.com", pfID(3), t0.Add(3*time.Minute))
	tr.Add("joe@example.com", pfID(4), t0.Add(4*time.Minute))
	if got := tr.IDs("joe@example.com", t0.Add(5*time.Minute)); !slices.Equal(got, []string{pfID(2), pfID(3), pfID(4)}) {
		t.Fatalf("joe after the cap: %v", got)
	}
	// pfID(1) was dropped, so it may come again.
	tr.Add("joe@example.com", pfID(1), t0.Add(5*time.Minute))
	if got := tr.IDs("joe@example.com", t0.Add(5*time.Minute)); !slices.Equal(got, []string{pfID(3), pfID(4), pfID(1)}) {
		t.Fatalf("joe: %v", got)
	}

	// Older than Remember before now: not returned, and dropped at the
	// next Add.
	if got := tr.IDs("joe@example.com", t0.Add(time.Hour+4*time.Minute)); !slices.Equal(got, []string{pfID(4), pfID(1)}) {
		t.Fatalf("joe an hour later: %v", got)
	}
	if got := tr.IDs("ann@example.com", t0.Add(2*time.Hour)); got != nil {
		t.Fatalf("ann two hours later: %v", got)
	}
	tr.Add("bob@example.com", pfID(20), t0.Add(time.Hour+4*time.Minute))
	if tr.Len() != 3 { // joe's 4 and 1, bob's 20
		t.Fatalf("Len %d after expiry, want 3", tr.Len())
	}

	tr.Forget("joe@example.com")
	if got := tr.IDs("joe@example.com", t0.Add(time.Hour)); got != nil {
		t.Fatalf("joe after Forget: %v", got)
	}
	if tr.Len() != 1 || !slices.Equal(tr.IDs("bob@example.com", t0.Add(time.Hour)), []string{pfID(20)}) {
		t.Fatalf("bob after Forget(joe): %v (Len %d)", tr.IDs("bob@example.com", t0.Add(time.Hour)), tr.Len())
	}
	tr.Forget("nobody@example.com")
}

// The global cap forgets the oldest ids of all accounts first.
func TestTrackerGlobalCap(t *testing.T) {
	t0 := time.Date(2026, 11, 4, 9, 0, 0, 0, time.UTC)
	tr := NewTracker(config.QueueHold{MTA: "exim", Remember: config.Duration(24 * time.Hour), MaxPerAccount: 1000})
	tr.max = 10
	for i := range 25 {
		tr.Add(fmt.Sprintf("u%d@example.com", i%3), fmt.Sprintf("1xWxn8-%06d-32", i), t0.Add(time.Duration(i)*time.Second))
	}
	if tr.Len() != 10 {
		t.Fatalf("Len %d, want 10", tr.Len())
	}
	var all []string
	for a := range 3 {
		all = append(all, tr.IDs(fmt.Sprintf("u%d@example.com", a), t0.Add(time.Minute))...)
	}
	slices.Sort(all)
	var want []string
	for i := 15; i < 25; i++ {
		want = append(want, fmt.Sprintf("1xWxn8-%06d-32", i))
	}
	if !slices.Equal(all, want) {
		t.Fatalf("kept %v, want the 10 newest %v", all, want)
	}
	// Tracker built without bounds gets the defaults.
	d := NewTracker(config.QueueHold{})
	if d.remember != 7*24*time.Hour || d.perAccount != 1000 || d.max != MaxTracked {
		t.Fatalf("defaults: %v %d %d", d.remember, d.perAccount, d.max)
	}
}

func TestTrackerConcurrent(t *testing.T) {
	t0 := time.Date(2026, 11, 4, 9, 0, 0, 0, time.UTC)
	tr := NewTracker(config.QueueHold{MTA: "postfix", Remember: config.Duration(time.Hour), MaxPerAccount: 50})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acct := fmt.Sprintf("u%d@example.com", g%3)
			for i := range 500 {
				at := t0.Add(time.Duration(i) * time.Second)
				tr.Add(acct, pfID(g*1000+i), at)
				if i%50 == 0 {
					tr.IDs(acct, at)
				}
				if i%170 == 0 {
					tr.Forget(acct)
				}
			}
		}()
	}
	wg.Wait()
	for a := range 3 {
		if n := len(tr.IDs(fmt.Sprintf("u%d@example.com", a), t0.Add(500*time.Second))); n > 50 {
			t.Errorf("u%d: %d ids, over the cap of 50", a, n)
		}
	}
	if tr.Len() > 150 {
		t.Errorf("Len %d, over 3 accounts × 50", tr.Len())
	}
}

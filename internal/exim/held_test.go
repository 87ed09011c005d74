package exim

import (
	"fmt"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// parseAll frames and parses lines with one parser and returns all events,
// including those of Flush.
func parseAll(t *testing.T, p *Parser, lines []string) []event.Event {
	t.Helper()
	fr := &maillog.Framer{Loc: time.UTC}
	var (
		l   maillog.Line
		evs []event.Event
	)
	for _, s := range lines {
		if !fr.Frame(s, &l) {
			t.Fatalf("Frame(%q) failed", s)
		}
		var res maillog.Result
		if evs, res = p.Parse(&l, evs); res == maillog.Unknown {
			t.Fatalf("Parse(%q) = Unknown", s)
		}
	}
	return p.Flush(evs)
}

// msgID builds a valid classic message id from a counter.
func msgID(i int) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte("1t0000-000000-Zz")
	for j := 12; i > 0 && j >= 7; j-- {
		b[j] = digits[i%62]
		i /= 62
	}
	return string(b)
}

func TestHeldRecipientsDistinct(t *testing.T) {
	id := msgID(1)
	lines := []string{
		"2024-11-04 09:00:00 " + id + " <= joe@example.com H=(pc) [192.0.2.1]:1000 P=esmtpa A=login:joe S=100",
	}
	// 40 recipients (past the small-set size), each delivered and deferred
	// twice with different letter case: 40 distinct.
	for i := 0; i < 40; i++ {
		lines = append(lines,
			fmt.Sprintf("2024-11-04 09:00:01 %s == r%d@example.org R=dnslookup T=remote_smtp defer (110): timed out", id, i),
			fmt.Sprintf("2024-11-04 09:00:02 %s => R%d@Example.org R=dnslookup T=remote_smtp H=mx [192.0.2.9]", id, i))
	}
	lines = append(lines, "2024-11-04 09:00:03 "+id+" Completed")
	evs := parseAll(t, New(), lines)
	if len(evs) != 1 || evs[0].Kind != event.Message || evs[0].Rcpts != 40 || evs[0].Account != "joe" {
		t.Fatalf("got %+v", evs)
	}
}

func TestHeldBounded(t *testing.T) {
	p := New()
	var lines []string
	for i := 0; i < MaxHeld+10; i++ {
		lines = append(lines, fmt.Sprintf("2024-11-04 09:00:00 %s <= a@example.com H=[192.0.2.1]:%d P=esmtp S=1", msgID(i+1), i%60000+1))
	}
	fr := &maillog.Framer{Loc: time.UTC}
	var (
		l       maillog.Line
		evs     []event.Event
		evicted int
	)
	for _, s := range lines {
		fr.Frame(s, &l)
		evs, _ = p.Parse(&l, evs[:0])
		evicted += len(evs)
		if len(p.held) > MaxHeld {
			t.Fatalf("held %d > %d", len(p.held), MaxHeld)
		}
	}
	if evicted != 10 {
		t.Errorf("evicted %d, want 10", evicted)
	}
	if n := len(p.Flush(nil)); n != MaxHeld {
		t.Errorf("flushed %d, want %d", n, MaxHeld)
	}
	if len(p.held) != 0 || len(p.order) != 0 {
		t.Errorf("tables not empty after Flush: %d %d", len(p.held), len(p.order))
	}
}

func TestHeldExpiresBothWays(t *testing.T) {
	id := msgID(7)
	p := New()
	fr := &maillog.Framer{Loc: time.UTC}
	var l maillog.Line
	fr.Frame("2024-11-04 09:00:00 "+id+" <= joe@example.com U=joe P=local S=10", &l)
	if evs, res := p.Parse(&l, nil); res != maillog.Parsed || len(evs) != 0 {
		t.Fatalf("arrival: %v %+v", res, evs)
	}
	// An older file follows: the held arrival must not wait for it.
	fr.Frame("2024-11-04 08:00:00 Start queue run: pid=1", &l)
	evs, _ := p.Parse(&l, nil)
	if len(evs) != 1 || evs[0].Rcpts != 1 || evs[0].QueueID != id || evs[0].Session != "" {
		t.Fatalf("got %+v", evs)
	}
}

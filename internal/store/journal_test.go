package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

func journalEvent(i int, t time.Time) event.Event {
	e := event.Event{Time: t, Kind: event.Message, Account: fmt.Sprintf("user%d@example.com", i), Protocol: event.SMTP,
		Session: fmt.Sprintf("s%d", i), Size: int64(1000 * i), Rcpts: i % 7, QueueID: fmt.Sprintf("Q%d", i), Source: "postfix-policy", Node: "mx1"}
	if i%2 == 0 {
		e.IP = netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
	} else {
		e.Kind, e.IP, e.PwHash, e.Count = event.AuthFail, netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)), "ab12", 3
	}
	return e
}

func TestJournalSegmentsAndPrune(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	var want []event.Event
	// Three hours of writing, events slightly out of order within a batch.
	for h := 0; h < 3; h++ {
		wall := base.Add(time.Duration(h)*time.Hour + 30*time.Minute)
		batch := []event.Event{journalEvent(3*h+2, wall.Add(2*time.Second)), journalEvent(3*h+1, wall.Add(time.Second)), journalEvent(3*h+3, wall.Add(3*time.Second))}
		if err := s.j.append(batch, wall); err != nil {
			t.Fatal(err)
		}
		want = append(want, batch[1], batch[0], batch[2])
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []event.Event
	if err := s.Events(ctx, base, func(e *event.Event) { got = append(got, *e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// since filters inside a segment too.
	got = nil
	s.Events(ctx, base.Add(time.Hour+30*time.Minute+2*time.Second), func(e *event.Event) { got = append(got, *e) })
	if len(got) != 5 || got[0] != want[4] {
		t.Errorf("since: got %d events, first %+v", len(got), got)
	}
	// Pruning before 11:00 drops the 10:00 segment only.
	if n, err := s.PruneEvents(ctx, base.Add(time.Hour)); n != 1 || err != nil {
		t.Errorf("pruned %d, %v", n, err)
	}
	got = nil
	s.Events(ctx, base, func(e *event.Event) { got = append(got, *e) })
	if len(got) != 6 {
		t.Errorf("after prune: %d events", len(got))
	}
}

// A crash mid-write leaves a torn record: readers deliver every event
// before it and say so; the next append goes after the last good record.
func TestJournalTornRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	wall := time.Date(2026, 11, 27, 10, 5, 0, 0, time.UTC)
	if err := s.j.append([]event.Event{journalEvent(1, wall), journalEvent(2, wall)}, wall); err != nil {
		t.Fatal(err)
	}
	s.Close()
	seg := filepath.Join(dir, journalDir, fmt.Sprint(wall.Unix()/3600)+segmentExt)
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	good := len(b)
	// Half of a third record.
	rec, _ := appendRecord(nil, &[]event.Event{journalEvent(3, wall)}[0])
	if err := os.WriteFile(seg, append(b, rec[:len(rec)/2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	err = s.Events(ctx, wall.Add(-time.Hour), func(*event.Event) { n++ })
	var torn *TornJournal
	if n != 2 || !errors.As(err, &torn) || torn.Segments != 1 {
		t.Fatalf("torn segment: %d events, err %v", n, err)
	}
	// Appending in the same hour cuts the torn bytes off first.
	if err := s.j.append([]event.Event{journalEvent(4, wall.Add(time.Minute))}, wall.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	n = 0
	if err := s.Events(ctx, wall.Add(-time.Hour), func(*event.Event) { n++ }); err != nil || n != 3 {
		t.Fatalf("after append: %d events, err %v", n, err)
	}
	if st, _ := os.Stat(seg); st.Size() <= int64(good) {
		t.Errorf("segment size %d", st.Size())
	}
	// A flipped byte is caught by the checksum.
	b, _ = os.ReadFile(seg)
	b[good+3] ^= 0x40
	os.WriteFile(seg, b, 0o600)
	n = 0
	err = s.Events(ctx, wall.Add(-time.Hour), func(*event.Event) { n++ })
	if n != 2 || !errors.As(err, &torn) {
		t.Errorf("corrupt record: %d events, err %v", n, err)
	}
}

func BenchmarkJournalAppend(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	batch := make([]event.Event, 256)
	for i := range batch {
		batch[i] = journalEvent(i, now)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.j.append(batch, now); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
}

package store

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

func TestDurableFacts(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	id, err := s.AddIncident(ctx, &Incident{DetectedAt: now, Detector: "botnet", Account: "joe@example.com", IP: "192.0.2.1", Action: "lock", Evidence: map[string]any{"networks": 8}})
	if err != nil || id == 0 {
		t.Fatal(id, err)
	}
	if err := s.PutLock(ctx, Lock{Account: "joe@example.com", Since: now, Reason: "botnet", Actor: "mailwarden", IncidentID: id}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlock(ctx, Block{Net: "203.0.113.9", IP: "203.0.113.9", Since: now, Until: now.Add(time.Hour), Offence: 2, Reason: "crack_ip", Actor: "mailwarden"}); err != nil {
		t.Fatal(err)
	}
	evs := []event.Event{{Time: now, Kind: event.AuthFail, Account: "x@example.com", IP: netip.MustParseAddr("2001:db8::1"), Protocol: event.IMAP, PwHash: "ab12", Source: "dovecot-policy", Count: 1}}
	if err := s.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Reopened (as after a crash or restart): everything is there.
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	locks, _ := s.Locks(ctx)
	if len(locks) != 1 || locks[0].Account != "joe@example.com" || locks[0].IncidentID != id || !locks[0].Since.Equal(now) {
		t.Errorf("locks = %+v", locks)
	}
	blocks, _ := s.Blocks(ctx, now.Add(30*time.Minute), false)
	if len(blocks) != 1 || blocks[0].Offence != 2 {
		t.Errorf("blocks = %+v", blocks)
	}
	if b, _ := s.Blocks(ctx, now.Add(2*time.Hour), false); len(b) != 0 {
		t.Errorf("expired block still in force: %+v", b)
	}
	incs, _ := s.Incidents(ctx, "joe@example.com", 10)
	if len(incs) != 1 || incs[0].Evidence["networks"] != 8.0 {
		t.Errorf("incidents = %+v", incs)
	}
	var got []event.Event
	s.Events(ctx, now.Add(-time.Hour), func(e *event.Event) { got = append(got, *e) })
	if len(got) != 1 || got[0] != evs[0] {
		t.Errorf("journal = %+v, want %+v", got, evs)
	}
	ok, err := s.DeleteLock(ctx, "joe@example.com", "admin", "customer called, password changed", now.Add(time.Hour))
	if !ok || err != nil {
		t.Errorf("DeleteLock = %v, %v", ok, err)
	}
	ok, _ = s.EndBlock(ctx, "203.0.113.9", "admin", "false alarm", now.Add(10*time.Minute))
	if !ok {
		t.Error("EndBlock found no block")
	}
	a, _ := s.Audit(ctx, 10)
	if len(a) != 5 || a[0].Action != "unblock" || a[1].Action != "unlock" || a[1].Actor != "admin" || a[1].Reason != "customer called, password changed" {
		t.Errorf("audit = %+v", a)
	}
	st, _ := os.Stat(s.Path())
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", st.Mode().Perm())
	}
	dst, _ := os.Stat(dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v", dst.Mode().Perm())
	}
}

package store

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestResponsesAndHeld(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	id, err := s.AddIncident(ctx, &Incident{DetectedAt: now, Detector: "botnet", Account: "joe@example.com", Action: "lock", Evidence: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := s.AddIncident(ctx, &Incident{DetectedAt: now, Detector: "crack_ip", IP: "192.0.2.1", Action: "block_ip", Evidence: map[string]any{}})
	for _, r := range []Response{
		{IncidentID: id, Account: "joe@example.com", At: now, Kind: "kick", OK: true, Detail: "2 sessions kicked"},
		{IncidentID: id, Account: "joe@example.com", At: now.Add(time.Second), Kind: "hold", OK: false, Detail: "postsuper: no such file"},
	} {
		if err := s.AddResponse(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHeld(ctx, "postfix", "joe@example.com", []string{"4AbCdEf", "3XyZ"}, now, id); err != nil {
		t.Fatal(err)
	}
	if err := s.PutHeld(ctx, "exim", "joe@example.com", []string{"1abcde-000001-AB"}, now, id); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	incs, err := s.Incidents(ctx, "", 10)
	if err != nil || len(incs) != 2 {
		t.Fatal(incs, err)
	}
	for _, in := range incs {
		switch in.ID {
		case id:
			if len(in.Responses) != 2 || in.Responses[0].Kind != "kick" || !in.Responses[0].OK || in.Responses[1].OK {
				t.Errorf("responses of %d = %+v", id, in.Responses)
			}
		case other:
			if len(in.Responses) != 0 {
				t.Errorf("responses of %d = %+v", other, in.Responses)
			}
		}
	}
	ids, err := s.Held(ctx, "postfix", "joe@example.com")
	if err != nil || !slices.Equal(ids, []string{"3XyZ", "4AbCdEf"}) {
		t.Fatalf("held = %v, %v", ids, err)
	}
	if err := s.DeleteHeld(ctx, "postfix", []string{"3XyZ"}); err != nil {
		t.Fatal(err)
	}
	ids, _ = s.Held(ctx, "postfix", "joe@example.com")
	ex, _ := s.Held(ctx, "exim", "joe@example.com")
	if !slices.Equal(ids, []string{"4AbCdEf"}) || !slices.Equal(ex, []string{"1abcde-000001-AB"}) {
		t.Errorf("after delete: postfix %v exim %v", ids, ex)
	}
	a, _ := s.Audit(ctx, 10)
	found := false
	for _, e := range a {
		if e.Action == "kick" && e.Target == "joe@example.com" {
			found = true
		}
	}
	if !found {
		t.Errorf("kick not audited: %+v", a)
	}
}

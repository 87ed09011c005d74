package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

func historyOf(t *testing.T, d *Daemon, account string) (int, baseline.Report) {
	t.Helper()
	rec := httptest.NewRecorder()
	d.AdminHandler("").ServeHTTP(rec, httptest.NewRequest("GET", "/v1/history?account="+account, nil))
	var rep baseline.Report
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
	}
	return rec.Code, rep
}

func today(rep baseline.Report) baseline.ReportDay {
	if len(rep.Days) == 0 {
		return baseline.ReportDay{}
	}
	return rep.Days[len(rep.Days)-1]
}

// The per-account aggregates survive a restart — a graceful one (written
// at shutdown) and a crash (the journal's messages since the last
// snapshot are counted again, those before it are not counted twice).
func TestHistorySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	clk := &fakeClock{time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)}
	send := func(d *Daemon, n int) []event.Event {
		var evs []event.Event
		for range n {
			clk.t = clk.t.Add(time.Minute)
			e := ev(clk.t, event.Message, "joe@example.com", "198.51.100.7")
			e.Rcpts, e.Size = 2, 5000
			evs = append(evs, *e)
			d.Decide(e)
		}
		return evs
	}
	d, cancel := newDaemon(t, dir, clk)
	send(d, 10)
	d.snapshotHistory(ctx)
	send(d, 5)
	if code, rep := historyOf(t, d, "Joe@Example.com"); code != 200 || today(rep).Messages != 15 || today(rep).Recipients != 30 || rep.Last24h.Messages != 15 {
		t.Fatalf("live history: %d %+v", code, rep)
	}
	cancel()
	d.Close()

	d, cancel = newDaemon(t, dir, clk)
	if code, rep := historyOf(t, d, "joe@example.com"); code != 200 || today(rep).Messages != 15 || rep.Last24h.Messages != 15 || today(rep).IPs != 1 {
		t.Errorf("after a graceful restart: %d %+v", code, today(rep))
	}
	cancel()
	d.Close()

	// A crash: three more messages reach the journal, no snapshot is
	// written before the process dies.
	cfg := config.Default()
	cfg.Serve.StateDir, cfg.Serve.Node = dir, "mx-test"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	evs := send(d, 3)
	if err := d.st.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	d.st.Close()

	d, cancel = newDaemon(t, dir, clk)
	defer func() { cancel(); d.Close() }()
	if code, rep := historyOf(t, d, "joe@example.com"); code != 200 || today(rep).Messages != 18 || rep.Last24h.Messages != 18 {
		t.Errorf("after a crash: %d %+v", code, today(rep))
	}
	if code, _ := historyOf(t, d, "nobody@example.com"); code != http.StatusNotFound {
		t.Errorf("unknown account: %d", code)
	}
	if code, _ := historyOf(t, d, ""); code != http.StatusBadRequest {
		t.Errorf("no account: %d", code)
	}
}

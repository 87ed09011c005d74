package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/daemon"
	"github.com/mailwarden/mailwarden/internal/store"
)

// A new install imports its old logs, starts with that history, and
// `mailwarden history` shows it.
func TestImportHistoryAndShowIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	_, stderr, code := mw(t, "analyze", "--tz", "UTC", "--quiet", "--import-history", "--state-dir", dir, sample)
	if code != 0 || !strings.Contains(stderr, "history of 4 accounts written to "+filepath.Join(dir, "mailwarden.db")) {
		t.Fatalf("import: exit %d, %s", code, stderr)
	}
	// Importing again changes nothing: rows are merged, not added up.
	if _, stderr, code := mw(t, "analyze", "--tz", "UTC", "--quiet", "--import-history", "--state-dir", dir, sample); code != 0 {
		t.Fatalf("second import: %s", stderr)
	}
	now := time.Date(2013, 8, 2, 10, 0, 0, 0, time.UTC)
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, ok, err := st.AccountHistory(context.Background(), "joe@example.com", now)
	st.Close()
	// joe was locked at his 8th address: the 5 messages after were refused.
	if err != nil || !ok || len(r.Days) != 1 || r.Days[0].Msgs != 8 || r.Days[0].IPs != 8 || r.Days[0].Flags&baseline.Anomalous == 0 {
		t.Fatalf("stored history of joe: %+v %v %v", r, ok, err)
	}

	cfg := config.Default()
	cfg.Serve.StateDir = dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(cfg, daemon.Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	defer func() { cancel(); d.Close() }()
	sock := "unix:" + filepath.Join(t.TempDir(), "admin.sock")
	ln, err := daemon.Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: d.AdminHandler(""), ConnContext: daemon.ConnContext}
	go hs.Serve(ln)
	defer hs.Close()

	out, stderr, code := mw(t, "history", "--admin", sock, "--spark", "always", "Joe@Example.com")
	if code != 0 {
		t.Fatalf("history: exit %d, %s", code, stderr)
	}
	for _, want := range []string{
		"joe@example.com: first message seen 2013-08-01",
		"today by 10:00 UTC: 0 messages, 0 recipients, 0 B",
		"last 24 h: 0 messages, 0 recipients, 0 B", // joe sent before 07:44 the day before
		"2013-08-01  Thu         8           8      30 kB     8  anomalous\n2013-08-02  Fri         0           0        0 B     0\n",
		"messages   █ \n",
		"usual weekday: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("history output lacks %q:\n%s", want, out)
		}
	}
	out, _, code = mw(t, "history", "anna@example.com", "--admin", sock, "--json")
	var rep baseline.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Account != "anna@example.com" || rep.Days[0].Messages != 8 || rep.Days[0].Anomalous {
		t.Errorf("history --json: %d %s", code, out)
	}
	if out, _, _ := mw(t, "history", "--admin", sock, "--spark", "never", "anna@example.com"); strings.Contains(out, "█") || strings.Contains(out, "▁") {
		t.Errorf("--spark never drew a sparkline:\n%s", out)
	}
	if _, stderr, code := mw(t, "history", "--admin", sock, "nobody@example.com"); code != 1 || !strings.Contains(stderr, `no message of "nobody@example.com"`) {
		t.Errorf("unknown account: exit %d, %s", code, stderr)
	}
	if _, stderr, code := mw(t, "history", "--admin", sock); code != 2 || !strings.Contains(stderr, "expected one account") {
		t.Errorf("no account: exit %d, %s", code, stderr)
	}
}

func TestSparkline(t *testing.T) {
	if got := sparkline([]float64{0, 1, 2, 4, 8}); got != " ▂▃▅█" {
		t.Errorf("sparkline = %q", got)
	}
}

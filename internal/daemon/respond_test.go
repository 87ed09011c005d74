package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/kick"
	"github.com/mailwarden/mailwarden/internal/queuehold"
	"github.com/mailwarden/mailwarden/internal/store"
)

// fakeMTA records what the responder asks of the kicker and the queue.
type fakeMTA struct {
	mu      sync.Mutex
	kicked  []string
	held    []string
	release []string
}

func (f *fakeMTA) Kick(_ context.Context, a string) (kick.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicked = append(f.kicked, a)
	return kick.Result{Method: "fake", Kicked: 2}, nil
}
func (f *fakeMTA) Hold(_ context.Context, ids []string) (queuehold.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held = append(f.held, ids...)
	return queuehold.Result{Action: "hold", IDs: ids, Done: len(ids)}, nil
}
func (f *fakeMTA) Release(_ context.Context, ids []string) (queuehold.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.release = append(f.release, ids...)
	return queuehold.Result{Action: "release", IDs: ids, Done: len(ids) - 1, Missing: 1}, nil
}
func (f *fakeMTA) Purge(_ context.Context, ids []string) (queuehold.Result, error) {
	return queuehold.Result{Action: "purge", IDs: ids, Done: len(ids)}, nil
}

func respondDaemon(t *testing.T, dryRun bool, lockFor time.Duration) (*Daemon, *fakeMTA, *fakeClock, context.CancelFunc) {
	t.Helper()
	cfg := config.Default()
	cfg.DryRun = dryRun
	cfg.Serve.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Responses.LockFor = config.Duration(lockFor)
	cfg.Responses.Kick.Method, cfg.Responses.Kick.APIKey = "http", "k" // replaced by the fake below
	cfg.Responses.Hold.MTA = "postfix"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	d, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMTA{}
	d.resp.kick, d.resp.queue = f, f
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	t.Cleanup(func() { cancel(); d.Close() })
	return d, f, clk, cancel
}

func lockIncident(t time.Time, acct string) *engine.Incident {
	return &engine.Incident{Detector: "botnet", Account: acct, IP: netip.MustParseAddr("192.0.2.7"), DetectedAt: t, Action: config.Lock, Evidence: map[string]any{"networks": 8}}
}

func waitResponses(t *testing.T, d *Daemon, acct string, n int) []store.Response {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		incs, err := d.st.Incidents(context.Background(), acct, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(incs) > 0 && len(incs[0].Responses) >= n {
			return incs[0].Responses
		}
		if time.Now().After(deadline) {
			t.Fatalf("responses of %s: %+v", acct, incs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A lock kicks the account's sessions and holds the queue ids seen for it
// (and only for it); unlock --release releases exactly those.
func TestLockKicksAndHolds(t *testing.T) {
	d, f, clk, _ := respondDaemon(t, false, 0)
	for i, q := range []string{"4AB1C2D3E1", "4AB1C2D3E2", "4AB1C2D3E3"} {
		acct := "joe@example.com"
		if i == 2 {
			acct = "ann@example.com"
		}
		d.Decide(&event.Event{Time: clk.t, Kind: event.Message, Account: acct, IP: netip.MustParseAddr("192.0.2.1"), QueueID: q, Rcpts: 1, Source: "test"})
	}
	d.persist(lockIncident(clk.t, "joe@example.com"))
	rs := waitResponses(t, d, "joe@example.com", 2)
	if rs[0].Kind != "kick" || !rs[0].OK || !strings.Contains(rs[0].Detail, "2 live") || rs[1].Kind != "hold" || !strings.Contains(rs[1].Detail, "4AB1C2D3E1 4AB1C2D3E2") {
		t.Errorf("responses = %+v", rs)
	}
	f.mu.Lock()
	if !slices.Equal(f.kicked, []string{"joe@example.com"}) || !slices.Equal(f.held, []string{"4AB1C2D3E1", "4AB1C2D3E2"}) {
		t.Errorf("kicked %v, held %v", f.kicked, f.held)
	}
	f.mu.Unlock()
	detail, err := d.resp.release(context.Background(), "joe@example.com", "release", "admin")
	if err != nil || !strings.Contains(detail, "1 held message(s) released by admin (1 already gone)") {
		t.Errorf("release: %q, %v", detail, err)
	}
	if ids, _ := d.st.Held(context.Background(), "postfix", "joe@example.com"); len(ids) != 0 {
		t.Errorf("still held after the release: %v", ids)
	}
}

// In a dry run nothing is kicked or held; the incident says what would
// have been.
func TestDryRunRecordsWouldBe(t *testing.T) {
	d, f, clk, _ := respondDaemon(t, true, 0)
	d.Decide(&event.Event{Time: clk.t, Kind: event.Message, Account: "joe@example.com", IP: netip.MustParseAddr("192.0.2.1"), QueueID: "4AB1C2D3E1", Rcpts: 1, Source: "test"})
	inc := lockIncident(clk.t, "joe@example.com")
	inc.DryRun = true
	d.persist(inc)
	rs := waitResponses(t, d, "joe@example.com", 2)
	for _, r := range rs {
		if !r.DryRun {
			t.Errorf("not marked dry run: %+v", r)
		}
	}
	if !strings.Contains(rs[1].Detail, "hold 1 queued message(s): 4AB1C2D3E1") {
		t.Errorf("responses = %+v", rs)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.kicked)+len(f.held) != 0 {
		t.Errorf("dry run acted: kicked %v held %v", f.kicked, f.held)
	}
	if locks, _ := d.st.Locks(context.Background()); len(locks) != 0 {
		t.Errorf("dry run stored a lock: %+v", locks)
	}
}

// responses.lock_for makes automatic locks expire (audited); 0 keeps them.
func TestLockFor(t *testing.T) {
	d, _, clk, _ := respondDaemon(t, false, time.Hour)
	d.eng.LockAccount("joe@example.com", clk.t, nil)
	d.persist(lockIncident(clk.t, "joe@example.com"))
	locks, _ := d.st.Locks(context.Background())
	if len(locks) != 1 || !locks[0].Expires.Equal(clk.t.Add(time.Hour)) {
		t.Fatalf("locks = %+v", locks)
	}
	clk.t = clk.t.Add(59 * time.Minute)
	d.expireLocks(context.Background())
	if !d.eng.Locked("joe@example.com") {
		t.Fatal("expired early")
	}
	clk.t = clk.t.Add(2 * time.Minute)
	d.expireLocks(context.Background())
	if d.eng.Locked("joe@example.com") {
		t.Fatal("not expired")
	}
	// The responder's kick and hold land in the audit too, at their own
	// pace: look for the unlock among them.
	a, _ := d.st.Audit(context.Background(), 20)
	if !slices.ContainsFunc(a, func(e store.AuditEntry) bool {
		return e.Action == "unlock" && e.Actor == "mailwarden" && strings.Contains(e.Reason, "lock_for")
	}) {
		t.Errorf("no audited expiry in %+v", a)
	}
}

// With the webhook target hanging, incidents (and the decisions that raise
// them) do not wait for it: the time per incident is printed with and
// without the webhook, and every notification is accounted for — sent,
// queued, or given up and counted — none dropped silently.
func TestWebhookDownKeepsDecisionsFast(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	const n = 500
	run := func(webhook bool) (time.Duration, *Daemon) {
		cfg := config.Default()
		cfg.Serve.StateDir = filepath.Join(t.TempDir(), "state")
		cfg.Responses.Notify.MinAction = config.Alert
		cfg.Responses.Notify.MaxPerHour = 1_000_000
		cfg.Responses.Notify.Queue = 50
		if webhook {
			cfg.Responses.Notify.Webhooks = []config.Webhook{{URL: srv.URL, Secret: "s"}}
		}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		d, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go d.Run(ctx)
		t.Cleanup(func() { cancel(); d.Close() })
		at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
		start := time.Now()
		for i := range n {
			d.persist(&engine.Incident{Detector: "crack_ip", IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), DetectedAt: at, Action: config.Alert, Evidence: map[string]any{"failures": i}})
		}
		return time.Since(start), d
	}
	without, _ := run(false)
	with, d := run(true)
	t.Logf("%d incidents stored and handed on: %v per incident without a webhook, %v with the webhook hanging",
		n, without/n, with/n)
	// Every notice is accounted for once the responder has handed them all
	// to the notifier.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := d.resp.notify.Stats().Channel("webhook")
		acc := st.Sent + st.GivenUp + uint64(st.Queued) + d.resp.dropped.Load()
		// One delivery may be in flight (taken from the queue, hanging).
		if acc == n || acc == n-1 {
			if st.QueueFull == 0 && d.resp.dropped.Load() == 0 {
				t.Errorf("a hanging webhook with a queue of 50 gave nothing up: %+v", st)
			}
			t.Logf("webhook: %d queued, %d given up (queue full %d), responder dropped %d", st.Queued, st.GivenUp, st.QueueFull, d.resp.dropped.Load())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("notifications unaccounted for: %+v, responder dropped %d", st, d.resp.dropped.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newDaemon(t *testing.T, dir string, clk *fakeClock) (*Daemon, context.CancelFunc) {
	t.Helper()
	cfg := config.Default()
	cfg.Serve.StateDir = dir
	cfg.Serve.Node = "mx-test"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	return d, cancel
}

func ev(t time.Time, kind event.Kind, acct, ip string) *event.Event {
	return &event.Event{Time: t, Kind: kind, Account: acct, IP: netip.MustParseAddr(ip), Protocol: event.SMTP, Source: "test", Rcpts: 1}
}

// A lock and a block survive a restart, the counters of an attack in
// progress are rebuilt from the journal, and an admin's unlock is not undone
// by that rebuild.
func TestStateSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	clk := &fakeClock{time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	d, cancel := newDaemon(t, dir, clk)
	botnet := []string{"109.162.53.114", "113.179.7.245", "186.94.41.7", "41.251.77.130", "94.54.12.201", "190.43.187.18", "117.199.96.44", "200.55.230.9"}
	var v engine.Verdict
	for i, ip := range botnet {
		clk.t = clk.t.Add(10 * time.Minute)
		v = d.Decide(ev(clk.t, event.Message, "joe@example.com", ip))
		if i < 7 && v != engine.Allow {
			t.Fatalf("message %d: %v", i, v)
		}
	}
	if v != engine.Lock {
		t.Fatalf("8th network: verdict %v, want lock", v)
	}
	for i := 0; i < 12; i++ {
		v = d.Decide(&event.Event{Time: clk.t, Kind: event.AuthFail, Account: "x@example.com", IP: netip.MustParseAddr("203.0.113.9"), Protocol: event.IMAP, Source: "test"})
	}
	if v != engine.Blocked {
		t.Fatalf("brute force: verdict %v", v)
	}
	// Half an attack on ann: 4 of the 8 networks.
	for _, ip := range botnet[:4] {
		d.Decide(ev(clk.t, event.Message, "ann@example.com", ip))
	}
	cancel()
	d.Close()

	clk.t = clk.t.Add(time.Minute)
	d, cancel = newDaemon(t, dir, clk)
	defer func() { cancel(); d.Close() }()
	if got := d.Check("joe@example.com", netip.MustParseAddr("192.0.2.1"), clk.t); got != engine.Lock {
		t.Errorf("after restart joe is %v, want lock", got)
	}
	if got := d.Check("", netip.MustParseAddr("203.0.113.9"), clk.t); got != engine.Blocked {
		t.Errorf("after restart the address is %v, want blocked", got)
	}
	// ann's attack goes on after the restart: 4 more networks lock her,
	// because the first 4 were rebuilt from the journal.
	for _, ip := range botnet[4:] {
		v = d.Decide(ev(clk.t, event.Message, "ann@example.com", ip))
	}
	if v != engine.Lock {
		t.Errorf("attack across the restart: verdict %v, want lock", v)
	}
	incs, _ := d.st.Incidents(context.Background(), "", 10)
	if len(incs) != 3 {
		t.Errorf("incidents = %d, want 3 (joe, the address, ann)", len(incs))
	}
}

func adminGet(t *testing.T, c *http.Client, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminAPI(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}
	d, cancel := newDaemon(t, filepath.Join(dir, "state"), clk)
	defer func() { cancel(); d.Close() }()
	sock := "unix:" + filepath.Join(dir, "admin.sock")
	ln, err := Listen(sock, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: d.AdminHandler(""), ConnContext: ConnContext}
	go hs.Serve(ln)
	defer hs.Close()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return Dial(sock)
	}}}

	if code, body := adminGet(t, c, "POST", "/v1/locks", `{"account":"Joe@Example.com","reason":"customer reported phishing"}`); code != 200 {
		t.Fatalf("lock: %d %s", code, body)
	}
	if d.Check("joe@example.com", netip.Addr{}, clk.t) != engine.Lock {
		t.Error("lock not in force")
	}
	if code, body := adminGet(t, c, "POST", "/v1/locks", `{"account":"x@example.com"}`); code != 400 || !strings.Contains(body, "reason is required") {
		t.Errorf("lock without reason: %d %s", code, body)
	}
	if code, _ := adminGet(t, c, "POST", "/v1/locks", `{"account":"x@example.com","reason":"r","evil":1}`); code != 400 {
		t.Errorf("unknown field accepted: %d", code)
	}
	if code, body := adminGet(t, c, "POST", "/v1/blocks", `{"ip":"198.51.100.7","for":"2h","reason":"abuse report"}`); code != 200 {
		t.Fatalf("block: %d %s", code, body)
	}
	if code, _ := adminGet(t, c, "POST", "/v1/blocks", `{"ip":"not-an-ip","reason":"r"}`); code != 400 {
		t.Errorf("bad ip accepted: %d", code)
	}
	_, body := adminGet(t, c, "GET", "/v1/status", "")
	var st Status
	json.Unmarshal([]byte(body), &st)
	if st.Locks != 1 || st.Blocks != 1 || st.Node != "mx-test" {
		t.Errorf("status = %s", body)
	}
	if code, _ := adminGet(t, c, "DELETE", "/v1/locks/joe@example.com?reason=password+changed", ""); code != 200 {
		t.Errorf("unlock: %d", code)
	}
	if code, _ := adminGet(t, c, "DELETE", "/v1/locks/joe@example.com", ""); code != 404 {
		t.Errorf("second unlock: %d, want 404", code)
	}
	if code, _ := adminGet(t, c, "DELETE", "/v1/blocks/198.51.100.7", ""); code != 200 {
		t.Errorf("unblock: %d", code)
	}
	if d.Check("joe@example.com", netip.MustParseAddr("198.51.100.7"), clk.t) != engine.Allow {
		t.Error("unlock/unblock not in force")
	}
	_, body = adminGet(t, c, "GET", "/v1/audit", "")
	for _, want := range []string{`"action": "unlock"`, `"reason": "password changed"`, `"reason": "customer reported phishing"`, `"action": "unblock"`} {
		if !strings.Contains(body, want) {
			t.Errorf("audit lacks %s:\n%s", want, body)
		}
	}
	// The actor of a unix-socket change is the peer's user name.
	if !strings.Contains(body, `"actor": "root"`) && !strings.Contains(body, `"actor": "`) {
		t.Errorf("audit has no actor: %s", body)
	}

	// A TCP listener needs the token.
	th := d.AdminHandler("s3cret")
	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	ts := &http.Server{Handler: th, ConnContext: ConnContext}
	go ts.Serve(tl)
	defer ts.Close()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/status", tl.Addr()))
	if err != nil || resp.StatusCode != 401 {
		t.Errorf("no token: %v %v", resp.StatusCode, err)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/v1/status", tl.Addr()), nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("with token: %v %v", resp.StatusCode, err)
	}
}

package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// testConfig is the default configuration with every action notified,
// no mail and no syslog; tests add what they exercise.
func testConfig() config.Notify {
	c := config.Default().Responses.Notify
	c.MinAction = config.Alert
	c.From = "mailwarden@example.org"
	c.To = []string{"postmaster@example.org", "security@example.org"}
	c.Timeout = config.Duration(2 * time.Second)
	c.Retries = 2
	return c
}

// running is a Notifier whose Run goroutine the test controls.
type running struct {
	*Notifier
	log    *logBuffer
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// newNotifier makes a notifier with short retry delays; run starts it.
func newNotifier(t *testing.T, cfg config.Notify) *running {
	t.Helper()
	log, lb := testLogger()
	n, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	n.RetryBase = 5 * time.Millisecond
	n.RetryMax = 20 * time.Millisecond
	r := &running{Notifier: n, log: lb, done: make(chan struct{})}
	t.Cleanup(r.stop)
	return r
}

func (r *running) run() *running {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.Run(ctx)
		close(r.done)
	}()
	return r
}

// stop ends Run and waits for it.
func (r *running) stop() {
	r.once.Do(func() {
		if r.cancel == nil {
			return
		}
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			panic("notifier Run did not return within 10s of its context ending")
		}
	})
}

// waitStats polls until cond holds (10 s at most).
func waitStats(t *testing.T, n *running, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := n.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: stats %+v\nlog:\n%s", what, s, n.log)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type ipRow struct {
	IP       string    `json:"ip"`
	Network  string    `json:"network"`
	Messages int       `json:"messages"`
	Logins   int       `json:"logins"`
	First    time.Time `json:"first"`
	Known    bool      `json:"known,omitempty"`
}

type stopped struct {
	Messages   int `json:"messages"`
	Recipients int `json:"recipients"`
}

// botnetNotice is an incident as the daemon passes it.
func botnetNotice(id int64, account string) Notice {
	at := time.Date(2024, 3, 1, 11, 59, 3, 0, time.UTC)
	return Notice{
		ID: id, Detector: "botnet", Account: account, IP: "77.121.250.77", Action: "lock",
		DetectedAt: at, Node: "mx1",
		Summary: "used from 3 new networks in 24h0m0s (threshold 3), spread over 3 address blocks",
		Evidence: map[string]any{
			"networks":  3,
			"threshold": 3,
			"window":    "24h0m0s",
			"last_at":   at,
			"countries": []string{"UA", "BR", "VN"},
			"ips": []ipRow{
				{"77.121.250.77", "77.121.0.0/16", 1, 1, at.Add(-3 * time.Hour), false},
				{"187.44.1.9", "187.44.0.0/16", 1, 1, at.Add(-2 * time.Hour), false},
				{"14.161.7.200", "14.161.0.0/16", 1, 1, at.Add(-time.Hour), true},
			},
			"stopped_after": stopped{Messages: 3, Recipients: 7},
		},
		Done: []string{"account locked", "2 IMAP sessions kicked", "3 queued messages held"},
	}
}

// hookServer is a webhook receiver that verifies signatures the way a
// receiver would: HMAC-SHA256 of the raw body under the shared secret,
// compared in constant time.
type hookServer struct {
	*httptest.Server
	secret []byte
	mu     sync.Mutex
	reqs   []hookReq
	// status gives the reply to the n-th request (from 1); nil is 200.
	status func(n int) int
}

type hookReq struct {
	body                        []byte
	sig, event, delivery, ctype string
	sigOK                       bool
}

func newHookServer(t *testing.T, secret string) *hookServer {
	h := &hookServer{secret: []byte(secret)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("X-Mailwarden-Signature")
		mac := hmac.New(sha256.New, h.secret)
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		h.mu.Lock()
		h.reqs = append(h.reqs, hookReq{body, sig, r.Header.Get("X-Mailwarden-Event"), r.Header.Get("Idempotency-Key"),
			r.Header.Get("Content-Type"), r.Method == http.MethodPost && hmac.Equal([]byte(sig), []byte(want))})
		n := len(h.reqs)
		h.mu.Unlock()
		code := 200
		if h.status != nil {
			code = h.status(n)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d", code)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) requests() []hookReq {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookReq(nil), h.reqs...)
}

func withHook(cfg config.Notify, url, secret string) config.Notify {
	cfg.Webhooks = append(cfg.Webhooks, config.Webhook{URL: url, Secret: secret})
	return cfg
}

const evilAccount = "evil\r\nBcc: victim@x\r\n\r\nbody"

func TestWebhookSignedJSON(t *testing.T) {
	hs := newHookServer(t, "s3cret")
	n := newNotifier(t, withHook(testConfig(), hs.URL+"/hook", "s3cret")).run()
	x := botnetNotice(42, evilAccount+" $(rm -rf /) `id` \"q\" 'q'")
	if !n.Notify(x) {
		t.Fatal("Notify returned false with an empty queue")
	}
	waitStats(t, n, "the webhook delivery", func(s Stats) bool { return s.Channel(ChannelWebhook).Sent == 1 })
	reqs := hs.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if !r.sigOK {
		t.Errorf("signature %q does not verify over the body under the secret", r.sig)
	}
	if r.event != "incident" || r.delivery != "incident-42-mx1" || r.ctype != "application/json" {
		t.Errorf("headers: event %q, idempotency key %q, content type %q", r.event, r.delivery, r.ctype)
	}
	var got struct {
		Event, Detector, Account, IP, Action, Node, Summary string
		ID                                                  int64
		DryRun                                              bool      `json:"dry_run"`
		DetectedAt                                          time.Time `json:"detected_at"`
		Evidence                                            map[string]any
		Done                                                []string
	}
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
	if got.Account != x.Account {
		t.Errorf("account %q, want it intact %q", got.Account, x.Account)
	}
	if got.Event != "incident" || got.ID != 42 || got.Detector != "botnet" || got.Action != "lock" || got.Node != "mx1" ||
		got.IP != "77.121.250.77" || !got.DetectedAt.Equal(x.DetectedAt) || got.Summary != x.Summary {
		t.Errorf("body fields: %+v", got)
	}
	if len(got.Done) != 3 || got.Done[0] != "account locked" {
		t.Errorf("done: %q", got.Done)
	}
	ips, _ := got.Evidence["ips"].([]any)
	if len(ips) != 3 || got.Evidence["networks"] != float64(3) {
		t.Errorf("evidence: %v", got.Evidence)
	}
	// A body changed in transit no longer verifies.
	if Sign([]byte("s3cret"), append(r.body, ' ')) == r.sig || Sign([]byte("other"), r.body) == r.sig {
		t.Error("signature does not depend on the body and the secret")
	}
	if Sign([]byte("s3cret"), r.body) != r.sig {
		t.Error("Sign disagrees with the header")
	}
}

func TestWebhookRetriesThenSuccess(t *testing.T) {
	hs := newHookServer(t, "k")
	hs.status = func(n int) int {
		if n <= 2 {
			return []int{503, 429}[n-1]
		}
		return 204
	}
	n := newNotifier(t, withHook(testConfig(), hs.URL, "k")).run() // retries: 2
	n.Notify(botnetNotice(7, "joe@example.org"))
	s := waitStats(t, n, "delivery after two failures", func(s Stats) bool { return s.Channel(ChannelWebhook).Sent == 1 })
	w := s.Channel(ChannelWebhook)
	if w.Failed != 2 || w.GivenUp != 0 {
		t.Errorf("stats: failed %d given up %d, want 2 and 0", w.Failed, w.GivenUp)
	}
	reqs := hs.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, r := range reqs {
		if string(r.body) != string(reqs[0].body) || r.delivery != reqs[0].delivery || !r.sigOK {
			t.Errorf("attempt %d differs from the first (a retry must send the same body and idempotency key)", i+1)
		}
	}
	if l := n.log.String(); strings.Count(l, "will retry") != 2 || !strings.Contains(l, "503") || !strings.Contains(l, "429") {
		t.Errorf("log should show both failed attempts:\n%s", l)
	}
}

// closedURL is an http URL where nothing listens.
func closedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/hook?token=secret-token"
}

func TestWebhookTargetDownRetriesExhausted(t *testing.T) {
	cfg := withHook(testConfig(), closedURL(t), "k")
	cfg.Retries = 3
	n := newNotifier(t, cfg).run()
	n.Notify(botnetNotice(9, "joe@example.org"))
	s := waitStats(t, n, "the delivery to be given up", func(s Stats) bool { return s.Channel(ChannelWebhook).GivenUp == 1 })
	w := s.Channel(ChannelWebhook)
	if w.Exhausted != 1 || w.Failed != 4 || w.Sent != 0 {
		t.Errorf("stats: exhausted %d failed %d sent %d, want 1, 4 (1 + 3 retries), 0", w.Exhausted, w.Failed, w.Sent)
	}
	l := n.log.String()
	if !strings.Contains(l, "every attempt failed") || !strings.Contains(l, "incident=9") || !strings.Contains(l, "attempts=4") {
		t.Errorf("log should name the given-up incident and its attempts:\n%s", l)
	}
	if strings.Contains(l, "secret-token") {
		t.Errorf("the webhook's query string (a token) reached the log:\n%s", l)
	}
}

func TestWebhookClientErrorNotRetried(t *testing.T) {
	for _, tc := range []struct {
		code     int
		requests int
	}{{400, 1}, {403, 1}, {404, 1}, {302, 1}, {408, 3}, {500, 3}} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			hs := newHookServer(t, "k")
			hs.status = func(int) int { return tc.code }
			n := newNotifier(t, withHook(testConfig(), hs.URL, "k")).run()
			n.Notify(botnetNotice(1, "joe@example.org"))
			s := waitStats(t, n, "the delivery to be given up", func(s Stats) bool { return s.Channel(ChannelWebhook).GivenUp == 1 })
			if got := len(hs.requests()); got != tc.requests {
				t.Errorf("HTTP %d: %d requests, want %d", tc.code, got, tc.requests)
			}
			w := s.Channel(ChannelWebhook)
			if tc.requests == 1 && w.Rejected != 1 || tc.requests > 1 && w.Exhausted != 1 {
				t.Errorf("HTTP %d: stats %+v", tc.code, w)
			}
		})
	}
}

// A target that never answers: Notify stays instant, the queue bounds
// what waits, and the overflow is counted and logged with its incident.
func TestQueueFullDrops(t *testing.T) {
	cfg := withHook(testConfig(), "http://127.0.0.1:1/never-started", "k")
	cfg.Queue = 3
	n := newNotifier(t, cfg) // not running: nothing leaves the queue
	for id := int64(1); id <= 3; id++ {
		if !n.Notify(botnetNotice(id, "joe@example.org")) {
			t.Fatalf("notice %d dropped with room in the queue", id)
		}
	}
	if n.Notify(botnetNotice(4, "joe@example.org")) {
		t.Fatal("Notify returned true with a full queue")
	}
	n.Notify(botnetNotice(5, "joe@example.org"))
	w := n.Stats().Channel(ChannelWebhook)
	if w.QueueFull != 2 || w.GivenUp != 2 || w.Queued != 3 {
		t.Errorf("stats: queue full %d, given up %d, queued %d; want 2, 2, 3", w.QueueFull, w.GivenUp, w.Queued)
	}
	// The first drop is logged at once, with its incident.
	if l := n.log.String(); !strings.Contains(l, "queue full") || !strings.Contains(l, "incident=4") {
		t.Errorf("log should name the dropped incident 4:\n%s", l)
	}
	// Run ending at once: the queued notices are given up and listed,
	// and the drop of incident 5, held back to aggregate, is logged.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Run(ctx)
	if n.Notify(botnetNotice(6, "joe@example.org")) {
		t.Error("Notify after Run ended returned true")
	}
	w = n.Stats().Channel(ChannelWebhook)
	if w.Stopped != 4 || w.GivenUp != 6 || w.Queued != 0 {
		t.Errorf("after Run: stopped %d, given up %d, queued %d; want 4 (3 queued, 1 after), 6, 0", w.Stopped, w.GivenUp, w.Queued)
	}
	l := n.log.String()
	if !strings.Contains(l, "given up at stop") || !strings.Contains(l, "incidents=1,2,3") {
		t.Errorf("log should list what was still queued at stop:\n%s", l)
	}
	if !strings.Contains(l, "incident=5") || !strings.Contains(l, "incident=6") {
		t.Errorf("the drops of incidents 5 and 6 should be logged:\n%s", l)
	}
}

func TestDedupByID(t *testing.T) {
	hs := newHookServer(t, "k")
	n := newNotifier(t, withHook(testConfig(), hs.URL, "k")).run()
	for range 3 {
		if !n.Notify(botnetNotice(5, "joe@example.org")) {
			t.Fatal("a duplicate must be ignored, not reported as dropped")
		}
	}
	// ID 0 (not stored) is never taken for a duplicate.
	n.Notify(botnetNotice(0, "ann@example.org"))
	n.Notify(botnetNotice(0, "bob@example.org"))
	s := waitStats(t, n, "three deliveries", func(s Stats) bool { return s.Channel(ChannelWebhook).Sent == 3 })
	time.Sleep(50 * time.Millisecond) // room for a wrong extra delivery
	if got := len(hs.requests()); got != 3 {
		t.Errorf("%d requests, want 3 (incident 5 once, two incidents without id)", got)
	}
	if s.Duplicates != 2 {
		t.Errorf("duplicates %d, want 2", s.Duplicates)
	}
}

func TestMinAction(t *testing.T) {
	hs := newHookServer(t, "k")
	cfg := withHook(testConfig(), hs.URL, "k")
	cfg.MinAction = config.Hold
	n := newNotifier(t, cfg).run()
	for i, a := range []string{"alert", "defer", "hold", "lock", "block_ip", "bogus"} {
		x := botnetNotice(int64(i+1), "joe@example.org")
		x.Action = a
		n.Notify(x)
	}
	s := waitStats(t, n, "hold, lock and block_ip", func(s Stats) bool { return s.Channel(ChannelWebhook).Sent == 3 })
	if s.Filtered != 3 {
		t.Errorf("filtered %d, want 3 (alert, defer and an unknown action)", s.Filtered)
	}
	var actions []string
	for _, r := range hs.requests() {
		var b WebhookBody
		json.Unmarshal(r.body, &b)
		actions = append(actions, b.Action)
	}
	if strings.Join(actions, ",") != "hold,lock,block_ip" {
		t.Errorf("notified actions %v", actions)
	}
}

func TestRateLimit(t *testing.T) {
	hs := newHookServer(t, "k")
	cfg := withHook(testConfig(), hs.URL, "k")
	cfg.MaxPerHour = 2
	n := newNotifier(t, cfg)
	var clock atomic.Int64
	clock.Store(time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC).Unix())
	n.now = func() time.Time { return time.Unix(clock.Load(), 0) }
	n.run()
	for id := int64(1); id <= 5; id++ {
		n.Notify(botnetNotice(id, "joe@example.org"))
	}
	s := waitStats(t, n, "2 sent, 3 over the limit", func(s Stats) bool {
		w := s.Channel(ChannelWebhook)
		return w.Sent == 2 && w.RateLimited == 3
	})
	if w := s.Channel(ChannelWebhook); w.GivenUp != 3 {
		t.Errorf("given up %d, want 3", w.GivenUp)
	}
	if l := n.log.String(); !strings.Contains(l, "over max_per_hour") || !strings.Contains(l, "incident=3") {
		t.Errorf("the first notice over the limit (3) should be logged at once:\n%s", l)
	}
	// 59 minutes later the hour is not over; at 61 minutes it is.
	clock.Add(59 * 60)
	n.Notify(botnetNotice(6, "joe@example.org"))
	waitStats(t, n, "a 4th notice over the limit", func(s Stats) bool { return s.Channel(ChannelWebhook).RateLimited == 4 })
	clock.Add(2 * 60)
	n.Notify(botnetNotice(7, "joe@example.org"))
	waitStats(t, n, "a new hour", func(s Stats) bool { return s.Channel(ChannelWebhook).Sent == 3 })
	n.stop()
	l := n.log.String()
	// 3 at once; 4 and 5 within its minute, aggregated and written when 6
	// came after the minute; 6 at once.
	if !strings.Contains(l, "notifications given up: over max_per_hour") || !strings.Contains(l, "count=2") ||
		!strings.Contains(l, "first_incident=4") || !strings.Contains(l, "last_incident=5") || !strings.Contains(l, "incident=6") {
		t.Errorf("the aggregated line should count incidents 4 and 5, then 6 on its own:\n%s", l)
	}
}

func TestLimiterWindow(t *testing.T) {
	l := limiter{max: 3}
	t0 := time.Date(2024, 3, 1, 12, 0, 30, 0, time.UTC)
	for i := range 3 {
		if !l.allow(t0.Add(time.Duration(i) * 20 * time.Minute)) {
			t.Fatalf("delivery %d refused under the limit", i+1)
		}
	}
	if l.allow(t0.Add(59 * time.Minute)) {
		t.Error("4th delivery within the hour allowed")
	}
	if !l.allow(t0.Add(61 * time.Minute)) { // the first one has left the hour
		t.Error("delivery refused once the first left the hour")
	}
	if l.allow(t0.Add(62 * time.Minute)) {
		t.Error("the window should be full again")
	}
}

// Stopping: the delivery in progress and what is queued are given up,
// counted and logged; nothing is lost silently.
func TestStopGivesUpQueued(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	cfg := withHook(testConfig(), hang.URL, "k")
	cfg.Timeout = config.Duration(time.Minute)
	n := newNotifier(t, cfg).run()
	for id := int64(1); id <= 5; id++ {
		n.Notify(botnetNotice(id, "joe@example.org"))
	}
	waitStats(t, n, "the first delivery in progress", func(s Stats) bool { return s.Channel(ChannelWebhook).Queued == 4 })
	n.stop()
	w := n.Stats().Channel(ChannelWebhook)
	if w.Stopped != 5 || w.GivenUp != 5 || w.Sent != 0 || w.Queued != 0 {
		t.Errorf("after stop: %+v; want 5 stopped (1 in progress, 4 queued)", w)
	}
	l := n.log.String()
	if !strings.Contains(l, "given up at stop") || !strings.Contains(l, "count=4") || !strings.Contains(l, `incidents=2,3,4,5`) {
		t.Errorf("log should list the queued incidents given up:\n%s", l)
	}
}

// Notify never waits, whatever the targets do: every target hangs here,
// and 10 000 calls still return (the e2e test prints the timing).
func TestNotifyNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	sinkLn, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never greets
	if err != nil {
		t.Fatal(err)
	}
	defer sinkLn.Close()
	cfg := withHook(testConfig(), hang.URL, "k")
	cfg.SMTP = sinkLn.Addr().String()
	cfg.Queue = 100
	cfg.Timeout = config.Duration(time.Minute)
	n := newNotifier(t, cfg).run()
	accepted := 0
	for id := int64(1); id <= 10000; id++ {
		if n.Notify(botnetNotice(id, "joe@example.org")) {
			accepted++
		}
	}
	if accepted < 100 || accepted > 102 {
		t.Errorf("%d notices accepted, want the queue's 100 (+1 taken by each worker)", accepted)
	}
	n.stop()
	s := n.Stats()
	for _, ch := range []string{ChannelMail, ChannelWebhook} {
		c := s.Channel(ch)
		if c.Sent+c.GivenUp != 10000 {
			t.Errorf("%s: sent %d + given up %d != 10000 notices: %+v", ch, c.Sent, c.GivenUp, c)
		}
	}
}

func TestNewBadConfig(t *testing.T) {
	cfg := testConfig()
	cfg.MinAction = "sometimes"
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), "min_action") {
		t.Errorf("bad min_action: %v", err)
	}
}

// BenchmarkNotifyFull measures Notify when every queue is full (the
// flood case: each call is counted as given up).
func BenchmarkNotifyFull(b *testing.B) {
	cfg := withHook(testConfig(), "http://127.0.0.1:1/", "k")
	cfg.Queue = 1
	log, _ := testLogger()
	n, err := New(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	x := botnetNotice(1, "joe@example.org")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x.ID = int64(i + 1)
		n.Notify(x)
	}
}

// BenchmarkNotifyQueued measures Notify when the notice is queued.
func BenchmarkNotifyQueued(b *testing.B) {
	cfg := withHook(testConfig(), "http://127.0.0.1:1/", "k")
	cfg.Queue = 1 << 20
	n, err := New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	x := botnetNotice(1, "joe@example.org")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%(1<<19) == 0 {
			for len(n.chans[0].q) > 0 {
				<-n.chans[0].q
			}
		}
		x.ID = int64(i + 1)
		n.Notify(x)
	}
}

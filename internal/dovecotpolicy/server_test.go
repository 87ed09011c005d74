package dovecotpolicy

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

const basicAuth = "Basic bWFpbHdhcmRlbjpzM2NyZXQ="

// keyed is the configuration of the captured sessions:
// auth_policy_server_api_header = Authorization: Basic bWFp…
var keyed = Config{APIHeader: "Authorization", APIKey: basicAuth, Node: "mx1"}

// The requests Dovecot 2.3.19 really sent, replayed on one kept-alive
// connection: every answer byte for byte, every check and event.
func TestDovecot2319Transcript(t *testing.T) {
	ts := start(t, keyed)
	c := ts.dial(t)
	for _, f := range readFixtures(t, "dovecot-2.3.19.txt") {
		if got := c.roundTrip(dovecotRequest(f.target, basicAuth, f.body)); got != answerOK {
			t.Errorf("%s\n got %q\nwant %q", f.comment, got, answerOK)
		}
	}
	local := netip.MustParseAddr("127.0.0.1")
	checks, events := ts.dec.take()
	wantChecks := []check{
		{"joe@example.com", local, t0}, {"joe@example.com", local, t0},
		{"joe@example.com", local, t0}, {"nobody@example.com", local, t0},
	}
	if !reflect.DeepEqual(checks, wantChecks) {
		t.Errorf("checks\n got %+v\nwant %+v", checks, wantChecks)
	}
	ev := func(k event.Kind, acct string, p event.Protocol, sess, pw string) event.Event {
		return event.Event{Time: t0, Kind: k, Account: acct, IP: local, Protocol: p, Session: sess, PwHash: pw, Node: "mx1", Source: Source}
	}
	wantEvents := []event.Event{
		ev(event.AuthOK, "joe@example.com", event.IMAP, "K/430EFhMpF/AAAB", ""),
		ev(event.AuthFail, "joe@example.com", event.IMAP, "FRU50EFhQpF/AAAB", "67d37c"),
		ev(event.AuthFail, "nobody@example.com", event.POP3, "T1RY0EFh6up/AAAB", "7fd2cc"),
	}
	if !reflect.DeepEqual(events, wantEvents) {
		t.Errorf("events\n got %+v\nwant %+v", events, wantEvents)
	}
	want := Stats{Allow: 4, Report: 3, Logins: 1, Failures: 2}
	if got := ts.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

// Dovecot 2.3.19 with the shipped snippet: a locked account refused, the
// refusal reported back and not counted, and a wrong password over POP3.
func TestDovecot2319RefusalTranscript(t *testing.T) {
	ts := start(t, Config{APIKey: "s3cret"})
	ts.dec.set("locked@example.com", engine.Lock)
	c := ts.dial(t)
	want := []string{answerReject, answerOK, answerOK, answerOK}
	for i, f := range readFixtures(t, "dovecot-2.3.19-refusal.txt") {
		req := strings.Replace(dovecotRequest(f.target, "", f.body), "User-Agent:", "X-Api-Key: s3cret\r\nUser-Agent:", 1)
		if got := c.roundTrip(req); got != want[i] {
			t.Errorf("%s\n got %q\nwant %q", f.comment, got, want[i])
		}
	}
	checks, events := ts.dec.take()
	if len(checks) != 2 || checks[0].Account != "locked@example.com" || checks[1].IP != netip.MustParseAddr("127.0.0.9") {
		t.Errorf("checks %+v", checks)
	}
	wantEv := event.Event{Time: t0, Kind: event.AuthFail, Account: "joe@example.com", IP: netip.MustParseAddr("127.0.0.9"),
		Protocol: event.POP3, Session: "fo1vAUJhEKx/AAAJ", PwHash: "67d37c", Source: Source}
	if len(events) != 1 || events[0] != wantEv {
		t.Errorf("events\n got %+v\nwant %+v", events, wantEv)
	}
	if s := ts.Stats(); s.Refused != 1 || s.NotCounted != 1 || s.Failures != 1 {
		t.Errorf("stats %+v", s)
	}
}

// body is a Dovecot 2.3 request body.
func body(login, remote, extra string) string {
	return `{"device_id":"","login":"` + login + `","protocol":"imap","pwhash":"a1b2c3","remote":"` + remote +
		`","session_id":"sess1"` + extra + `,"tls":true}`
}

// Allow: the verdict of Check and the answer it gives.
func TestAllowVerdicts(t *testing.T) {
	cases := []struct {
		verdict engine.Verdict
		cfg     Config
		want    string
	}{
		{engine.Allow, Config{}, answerOK},
		{engine.Lock, Config{}, answerReject},
		{engine.Blocked, Config{}, answerReject},
		{engine.Tarpit, Config{}, answerTarpit},
		{engine.Tarpit, Config{TarpitSeconds: 17}, answerJSON(`{"status":17}`)},
		{engine.Tarpit, Config{TarpitSeconds: -1}, answerOK},
		{engine.Defer, Config{}, answerOK}, // refusing mail is not refusing a login
		{engine.Hold, Config{}, answerOK},
		{engine.Lock, Config{RejectMessage: `Nope, "go" away`}, answerJSON(`{"status":-1,"msg":"Nope, \"go\" away"}`)},
		{engine.Blocked, Config{RejectMessage: "Account locked"}, answerJSON(`{"status":-1,"msg":"Account locked"}`)},
		{engine.Blocked, Config{RejectMessage: "Account locked", BlockedMessage: "Try later"}, answerJSON(`{"status":-1,"msg":"Try later"}`)},
		{engine.Lock, Config{RejectMessage: "Account locked", BlockedMessage: "Try later"}, answerJSON(`{"status":-1,"msg":"Account locked"}`)},
	}
	for _, tc := range cases {
		ts := start(t, tc.cfg)
		ts.dec.set("joe@example.com", tc.verdict)
		got := ts.dial(t).roundTrip(dovecotRequest("/?command=allow", "", body("joe@example.com", "192.0.2.7", "")))
		if got != tc.want {
			t.Errorf("%v %+v:\n got %q\nwant %q", tc.verdict, tc.cfg, got, tc.want)
		}
		if checks, events := ts.dec.take(); len(checks) != 1 || len(events) != 0 {
			t.Errorf("%v: %d checks, %d events; want 1, 0", tc.verdict, len(checks), len(events))
		}
		if tc.verdict != engine.Allow && !strings.Contains(ts.log.String(), `verdict=`+tc.verdict.String()) {
			t.Errorf("%v: no debug line; log:\n%s", tc.verdict, ts.log)
		}
	}
}

// A blocked address is refused whatever the account, and the message
// never says why.
func TestAllowBlockedAddress(t *testing.T) {
	ts := start(t, Config{})
	ts.dec.set("203.0.113.9", engine.Blocked)
	c := ts.dial(t)
	if got := c.roundTrip(dovecotRequest("/?command=allow", "", body("", "203.0.113.9", ""))); got != answerReject {
		t.Errorf("got %q", got)
	}
	if got := c.roundTrip(dovecotRequest("/?command=allow", "", body("other@example.com", "203.0.113.10", ""))); got != answerOK {
		t.Errorf("got %q", got)
	}
	if strings.Contains(answerReject, "block") {
		t.Error("the refusal names the reason")
	}
	if s := ts.Stats(); s.Refused != 1 || s.Allow != 2 {
		t.Errorf("stats %+v", s)
	}
}

// Report: which outcomes become which events.
func TestReportEvents(t *testing.T) {
	cases := []struct {
		name  string
		extra string     // members after session_id
		kind  event.Kind // KindUnknown: nothing recorded
	}{
		{"success", `,"success":true,"policy_reject":false`, event.AuthOK},
		{"failure", `,"success":false,"policy_reject":false`, event.AuthFail},
		{"our refusal", `,"success":false,"policy_reject":true`, event.KindUnknown},
		{"2.4 wrong password", `,"fail_type":"credentials","success":false`, event.AuthFail},
		{"2.4 unknown user", `,"fail_type":"account","success":false`, event.AuthFail},
		{"2.4 our refusal", `,"fail_type":"policy","success":false`, event.KindUnknown},
		{"2.4 internal error", `,"fail_type":"internal","success":false,"policy_reject":false`, event.KindUnknown},
		{"2.4 expired", `,"fail_type":"expired","success":false`, event.KindUnknown},
		{"2.4 disabled", `,"fail_type":"disabled","success":false`, event.KindUnknown},
		{"future fail type", `,"fail_type":"quantum","success":false`, event.AuthFail},
		{"success also listed as an attribute", `,"success":"","success":true`, event.AuthOK},
		{"2.4 success, no fail type", `,"fail_type":"","success":true`, event.AuthOK},
	}
	ts := start(t, Config{Node: "imap1"})
	c := ts.dial(t)
	for _, tc := range cases {
		got := c.roundTrip(dovecotRequest("/?command=report", "", body("Joe@Example.com", "192.0.2.7", tc.extra)))
		if got != answerOK {
			t.Errorf("%s: answer %q", tc.name, got)
		}
		checks, events := ts.dec.take()
		if len(checks) != 0 {
			t.Errorf("%s: a report asked Check", tc.name)
		}
		if tc.kind == event.KindUnknown {
			if len(events) != 0 {
				t.Errorf("%s: recorded %+v", tc.name, events)
			}
			continue
		}
		want := event.Event{Time: t0, Kind: tc.kind, Account: "joe@example.com", IP: netip.MustParseAddr("192.0.2.7"),
			Protocol: event.IMAP, Session: "sess1", Node: "imap1", Source: Source}
		if tc.kind == event.AuthFail {
			want.PwHash = "a1b2c3"
		}
		if len(events) != 1 || events[0] != want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, events, want)
		}
	}
	if s := ts.Stats(); s.Report != uint64(len(cases)) || s.NotCounted != 5 || s.Logins != 3 || s.Failures != 4 {
		t.Errorf("stats %+v", s)
	}
}

// The verdict of a report does not change its answer (Dovecot ignores it).
func TestReportVerdictIgnored(t *testing.T) {
	ts := start(t, Config{})
	ts.dec.decided = engine.Blocked
	got := ts.dial(t).roundTrip(dovecotRequest("/?command=report", "", body("joe", "192.0.2.7", `,"success":false,"policy_reject":false`)))
	if got != answerOK {
		t.Errorf("got %q", got)
	}
	ts.log.waitLog(t, "verdict=block_ip")
}

// Field conversions: addresses, accounts, protocols, missing attributes.
func TestEventFields(t *testing.T) {
	cases := []struct {
		body    string
		account string
		ip      string
		proto   event.Protocol
		session string
	}{
		{`{"login":"  JOE@Example.COM ","remote":"2001:db8::1","protocol":"submission","session_id":"s"}`, "joe@example.com", "2001:db8::1", event.SMTP, "s"},
		{`{"login":"joe","remote":"::ffff:192.0.2.1","protocol":"pop3"}`, "joe", "192.0.2.1", event.POP3, ""},
		{`{"login":"joe","remote":"[2001:db8::2]:993","protocol":"imap"}`, "joe", "2001:db8::2", event.IMAP, ""},
		{`{"login":"joe","remote":"192.0.2.3:143","protocol":"managesieve"}`, "joe", "192.0.2.3", event.Sieve, ""},
		{`{"login":"joe","remote":"","protocol":"smtp"}`, "joe", "", event.SMTP, ""}, // a local connection
		{`{"login":"","remote":"192.0.2.4"}`, "", "192.0.2.4", event.ProtoUnknown, ""},
		{`{"login":null,"remote":"192.0.2.4","protocol":null}`, "", "192.0.2.4", event.ProtoUnknown, ""},
		{`{"login":"j\u00f6rg@ex\u0061mple.com","remote":"192.0.2.5","attrs":{"cos":"premium","n":[1,2.5e3,true,null]}}`, "jörg@example.com", "192.0.2.5", event.ProtoUnknown, ""},
		{"{\"login\":\"bad\xff\xfeutf8\",\"remote\":\"192.0.2.6\"}", "badutf8", "192.0.2.6", event.ProtoUnknown, ""},
		{`{"login":"x\n\u0000y","remote":"192.0.2.6"}`, "xy", "192.0.2.6", event.ProtoUnknown, ""},
	}
	ts := start(t, Config{})
	c := ts.dial(t)
	for _, tc := range cases {
		b := strings.TrimSuffix(tc.body, "}") + `,"success":false}`
		if got := c.roundTrip(dovecotRequest("/?command=report", "", b)); got != answerOK {
			t.Errorf("%s: answer %q", tc.body, got)
			continue
		}
		_, events := ts.dec.take()
		if len(events) != 1 {
			t.Errorf("%s: %d events", tc.body, len(events))
			continue
		}
		e := events[0]
		var ip netip.Addr
		if tc.ip != "" {
			ip = netip.MustParseAddr(tc.ip)
		}
		if e.Account != tc.account || e.IP != ip || e.Protocol != tc.proto || e.Session != tc.session {
			t.Errorf("%s: got account %q ip %v proto %v session %q", tc.body, e.Account, e.IP, e.Protocol, e.Session)
		}
	}
}

// The API key: Dovecot's two header forms, missing and wrong keys.
func TestAPIKey(t *testing.T) {
	ok := body("joe", "192.0.2.7", "")
	t.Run("authorization", func(t *testing.T) {
		ts := start(t, keyed)
		c := ts.dial(t)
		if got := c.roundTrip(dovecotRequest("/?command=allow", basicAuth, ok)); got != answerOK {
			t.Errorf("right key: %q", got)
		}
		want := answerPlain(401, "API key missing", `Www-Authenticate: Basic realm="mailwarden"`)
		if got := c.roundTrip(dovecotRequest("/?command=allow", "", ok)); got != want {
			t.Errorf("no key:\n got %q\nwant %q", got, want)
		}
		if got := c.roundTrip(dovecotRequest("/?command=allow", "Basic d3Jvbmc6a2V5", ok)); got != answerPlain(403, "API key wrong") {
			t.Errorf("wrong key: %q", got)
		}
		if got := c.roundTrip(dovecotRequest("/?command=allow", basicAuth+"x", ok)); got != answerPlain(403, "API key wrong") {
			t.Errorf("longer key: %q", got)
		}
		ts.log.waitLog(t, `reason="API key wrong"`)
		if strings.Contains(ts.log.String(), "d3Jvbmc6a2V5") {
			t.Error("the wrong key was logged")
		}
		if checks, _ := ts.dec.take(); len(checks) != 1 {
			t.Errorf("%d checks, want 1 (unauthorised requests must not reach the Decider)", len(checks))
		}
		if s := ts.Stats(); s.Unauthorized != 3 || s.Allow != 1 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("x-api-key", func(t *testing.T) {
		// auth_policy_server_api_header = s3cret (no colon) sends X-API-Key.
		ts := start(t, Config{APIKey: "s3cret"})
		c := ts.dial(t)
		req := strings.Replace(dovecotRequest("/?command=allow", "", ok), "Connection:", "X-API-Key: s3cret\r\nConnection:", 1)
		if got := c.roundTrip(req); got != answerOK {
			t.Errorf("right key: %q", got)
		}
		if got := c.roundTrip(dovecotRequest("/?command=allow", "", ok)); got != answerPlain(401, "API key missing") {
			t.Errorf("no key: %q", got)
		}
		twice := strings.Replace(req, "Connection:", "X-API-Key: s3cret\r\nConnection:", 1)
		if got := c.roundTrip(twice); got != answerPlain(403, "API key wrong") {
			t.Errorf("key sent twice: %q", got)
		}
	})
}

// The URL may carry its own query (auth_policy_server_url ending in "&")
// and any path.
func TestURLForms(t *testing.T) {
	ts := start(t, Config{})
	c := ts.dial(t)
	b := body("joe", "192.0.2.7", "")
	for _, target := range []string{"/?command=allow", "/policy?site=a&command=allow", "/x/?command=report&command=allow", "/?command=%61llow"} {
		if got := c.roundTrip(dovecotRequest(target, "", b)); got != answerOK {
			t.Errorf("%s: %q", target, got)
		}
	}
	if checks, _ := ts.dec.take(); len(checks) != 4 {
		t.Errorf("%d checks, want 4", len(checks))
	}
}

// Shutdown lets a request in flight finish and closes idle connections.
func TestShutdown(t *testing.T) {
	dec := &slowDecider{fakeDecider: newFake(), entered: make(chan struct{}), release: make(chan struct{})}
	ts := start(t, Config{Decider: dec})
	idle := ts.dial(t)
	idle.roundTrip(dovecotRequest("/?command=report", "", body("a", "192.0.2.1", `,"success":true`)))
	busy := ts.dial(t)
	answered := make(chan string, 1)
	go func() {
		answered <- busy.roundTrip(dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", "")))
	}()
	<-dec.entered
	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	if !idle.closed() {
		t.Error("the idle connection stayed open")
	}
	close(dec.release)
	if got := <-answered; !strings.HasPrefix(got, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(got, "\r\n\r\n{\"status\":0}") {
		t.Errorf("in-flight request answered %q", got)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", ts.addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

// slowDecider blocks in Check until released.
type slowDecider struct {
	*fakeDecider
	entered, release chan struct{}
}

func (d *slowDecider) Check(a string, ip netip.Addr, t time.Time) engine.Verdict {
	close(d.entered)
	<-d.release
	return d.fakeDecider.Check(a, ip, t)
}

func TestNewRejectsBadConfig(t *testing.T) {
	dec := newFake()
	for _, cfg := range []Config{
		{},
		{Decider: dec, APIHeader: "Bad Header"},
		{Decider: dec, APIHeader: "X:Y"},
		{Decider: dec, APIKey: "a\r\nInjected: yes"},
		{Decider: dec, APIKey: " spaced"},
		{Decider: dec, RejectMessage: "line\nbreak"},
		{Decider: dec, RejectMessage: strings.Repeat("x", 300)},
		{Decider: dec, RejectMessage: "bad\xffutf8"},
		{Decider: dec, BlockedMessage: "tab\there"},
		{Decider: dec, TarpitSeconds: 301},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	s, err := New(Config{Decider: dec})
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.APIHeader != DefaultAPIHeader || c.TarpitSeconds != 3 || c.MaxBodyBytes != 16<<10 || c.MaxConns != DefaultMaxConns ||
		c.IdleTimeout != 60*time.Second || c.RejectMessage != DefaultRejectMessage || c.LogPerSecond != 10 {
		t.Errorf("defaults %+v", c)
	}
}

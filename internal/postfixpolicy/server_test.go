package postfixpolicy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

const (
	dunno   = "action=DUNNO\n\n"
	blocked = "action=421 4.7.1 Service temporarily unavailable\n\n"
	locked  = "action=421 4.7.1 Account temporarily disabled, contact your mail provider\n\n"
	defer_  = "action=DEFER_IF_PERMIT Sending limit reached, try again later\n\n"
	hold    = "action=HOLD Held for review\n\n"
)

var (
	clientIP = netip.MustParseAddr("192.0.2.10")
	session1 = "192.0.2.10:40000|198.51.100.1:587"
)

func wantCalls(t *testing.T, got []call, want ...string) {
	t.Helper()
	var g []string
	for _, c := range got {
		g = append(g, c.String())
	}
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

// TestTranscriptSession follows one authenticated submission session with
// two messages, then the next session on the same connection.
func TestTranscriptSession(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	user := []string{"sasl_method", "PLAIN", "sasl_username", " Joe@Example.COM "}

	steps := []struct {
		req   string
		ans   string
		calls []string
	}{
		{pf("CONNECT"), dunno, []string{`check "" 192.0.2.10`}},
		{pf("EHLO"), dunno, []string{`check "" 192.0.2.10`}},
		{pf("MAIL", append(user, "sender", "joe@example.com", "size", "2048")...), dunno,
			[]string{`decide auth_ok "joe@example.com" 192.0.2.10 session="` + session1 + `" size=0 rcpts=0 qid=""`}},
		{pf("RCPT", append(user, "recipient", "a@example.org", "queue_id", "4XyZ1")...), dunno,
			[]string{`check "joe@example.com" 192.0.2.10`}},
		{pf("RCPT", append(user, "recipient", "b@example.org", "queue_id", "4XyZ1")...), dunno,
			[]string{`check "joe@example.com" 192.0.2.10`}},
		{pf("DATA", append(user, "recipient_count", "2", "size", "2048", "queue_id", "4XyZ1")...), dunno,
			[]string{`decide message "joe@example.com" 192.0.2.10 session="` + session1 + `" size=2048 rcpts=2 qid="4XyZ1"`}},
		{pf("END-OF-MESSAGE", append(user, "recipient_count", "2", "size", "2311", "queue_id", "4XyZ1")...), dunno,
			[]string{`check "joe@example.com" 192.0.2.10`}},
		// second message of the session: a new instance
		{pf("MAIL", append(user, "instance", "1a2b.65f1c2d3.4e5f6.1")...), dunno,
			[]string{`check "joe@example.com" 192.0.2.10`}},
		{pf("END-OF-MESSAGE", append(user, "instance", "1a2b.65f1c2d3.4e5f6.1", "recipient_count", "1", "size", "900", "queue_id", "4XyZ2")...), dunno,
			[]string{`decide message "joe@example.com" 192.0.2.10 session="` + session1 + `" size=900 rcpts=1 qid="4XyZ2"`}},
		// the smtpd process moved on to another client: the session ended
		{pf("CONNECT", "client_address", "203.0.113.5", "client_port", "51000", "instance", "1a2b.65f1c2d3.4e5f6.2"), dunno,
			[]string{
				`decide disconnect "joe@example.com" 192.0.2.10 session="` + session1 + `" size=0 rcpts=0 qid=""`,
				`check "" 203.0.113.5`,
			}},
		{pf("RCPT", "client_address", "203.0.113.5", "client_port", "51000", "sasl_username", "joe@example.com"), dunno,
			[]string{`decide auth_ok "joe@example.com" 203.0.113.5 session="203.0.113.5:51000|198.51.100.1:587" size=0 rcpts=0 qid=""`}},
	}
	for i, st := range steps {
		if got := c.ask(st.req); got != st.ans {
			t.Fatalf("step %d: answer %q, want %q", i, got, st.ans)
		}
		wantCalls(t, ts.fake.take(), st.calls...)
	}
}

// TestEventFields checks every field of the events, not only the ones the
// transcript shows.
func TestEventFields(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	c.ask(pf("RCPT", "sasl_username", "joe@example.com"))
	c.ask(pf("END-OF-MESSAGE", "sasl_username", "joe@example.com", "size", "12345", "recipient_count", "3", "queue_id", "4Q"))
	got := ts.fake.take()
	want := []event.Event{
		{Time: t0, Kind: event.AuthOK, Account: "joe@example.com", IP: clientIP, Protocol: event.SMTP,
			Session: session1, Node: "mx1", Source: "postfix-policy"},
		{Time: t0, Kind: event.Message, Account: "joe@example.com", IP: clientIP, Protocol: event.SMTP,
			Session: session1, Size: 12345, Rcpts: 3, QueueID: "4Q", Node: "mx1", Source: "postfix-policy"},
	}
	if len(got) != len(want) {
		t.Fatalf("calls %v", got)
	}
	for i := range want {
		if got[i].check || got[i].ev != want[i] {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i].ev, want[i])
		}
	}
}

// TestVerdictAnswers maps every verdict at every stage to its exact answer.
func TestVerdictAnswers(t *testing.T) {
	verdicts := []engine.Verdict{engine.Allow, engine.Tarpit, engine.Defer, engine.Hold, engine.Lock, engine.Blocked}
	stages := []struct {
		name string
		req  string
		want []string // per verdict, in the order above
	}{
		{"connect", pf("CONNECT"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"helo", pf("HELO"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"rcpt-unauthenticated", pf("RCPT"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"mail-auth", pf("MAIL", "sasl_username", "joe@example.com"), []string{dunno, dunno, defer_, hold, locked, blocked}},
		{"rcpt-auth", pf("RCPT", "sasl_username", "joe@example.com"), []string{dunno, dunno, defer_, hold, locked, blocked}},
		{"data-auth", pf("DATA", "sasl_username", "joe@example.com"), []string{dunno, dunno, defer_, hold, locked, blocked}},
		{"eom-auth", pf("END-OF-MESSAGE", "sasl_username", "joe@example.com"), []string{dunno, dunno, defer_, hold, locked, blocked}},
		{"eom-unauthenticated", pf("END-OF-MESSAGE"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"vrfy", pf("VRFY"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"etrn", pf("ETRN"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
		{"unknown-state", pf("SOMEDAY"), []string{dunno, dunno, dunno, dunno, locked, blocked}},
	}
	for _, st := range stages {
		for i, v := range verdicts {
			t.Run(st.name+"/"+v.String(), func(t *testing.T) {
				ts := startServer(t, nil)
				ts.fake.script(
					func(*event.Event) engine.Verdict { return v },
					func(string, netip.Addr) engine.Verdict { return v })
				c := ts.dial(t)
				// twice: the first request of a session or message may be a
				// Decide, the second a Check; both map the same way
				for round := 0; round < 2; round++ {
					if got := c.ask(st.req); got != st.want[i] {
						t.Fatalf("round %d: %q, want %q", round, got, st.want[i])
					}
				}
			})
		}
	}
}

func TestConfiguredTexts(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.BlockedReply = "REJECT"
		c.BlockedText = "Access denied"
		c.LockedText = "Contact support"
		c.DeferText = "Later"
		c.HoldText = "Quarantine"
	})
	c := ts.dial(t)
	for _, tc := range []struct {
		v    engine.Verdict
		want string
	}{
		{engine.Blocked, "action=REJECT Access denied\n\n"},
		{engine.Lock, "action=421 4.7.1 Contact support\n\n"},
		{engine.Defer, "action=DEFER_IF_PERMIT Later\n\n"},
		{engine.Hold, "action=HOLD Quarantine\n\n"},
	} {
		v := tc.v
		ts.fake.script(
			func(*event.Event) engine.Verdict { return v },
			func(string, netip.Addr) engine.Verdict { return v })
		for round := 0; round < 2; round++ {
			if got := c.ask(pf("RCPT", "sasl_username", "joe@example.com")); got != tc.want {
				t.Fatalf("%v round %d: %q, want %q", tc.v, round, got, tc.want)
			}
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	f := &fakeDecider{}
	for name, cfg := range map[string]Config{
		"no decider":    {},
		"blocked reply": {Decider: f, BlockedReply: "550"},
		"newline text":  {Decider: f, LockedText: "a\nb"},
		"utf-8 text":    {Decider: f, DeferText: "später"},
		"long text":     {Decider: f, HoldText: strings.Repeat("x", 201)},
		"tiny line":     {Decider: f, MaxLineBytes: 10},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
	s, err := New(Config{Decider: f})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.IdleTimeout != DefaultIdleTimeout || s.cfg.MaxConns != DefaultMaxConns || s.cfg.MaxRequestBytes != 64<<10 || s.cfg.MaxLineBytes != 8<<10 {
		t.Fatalf("defaults not applied: %+v", s.cfg)
	}
}

// TestAddresses covers IPv6 (session key in brackets), IPv4-mapped
// addresses, brackets and unparseable addresses.
func TestAddresses(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	c.ask(pf("RCPT", "client_address", "2001:db8::25", "client_port", "5555", "server_address", "2001:db8::1", "server_port", "465", "sasl_username", "joe"))
	c.ask(pf("CONNECT", "client_address", "::ffff:192.0.2.77", "client_port", "7"))
	c.ask(pf("CONNECT", "client_address", "[192.0.2.78]", "client_port", "8"))
	c.ask(pf("CONNECT", "client_address", "IPv6:2001:db8::26", "client_port", "9"))
	// no usable address and no account: nothing to ask
	if got := c.ask(pf("CONNECT", "client_address", "unknown", "client_port", "10")); got != dunno {
		t.Fatalf("unknown address: %q", got)
	}
	// no usable address, but an account: a locked account is refused all the same
	ts.fake.script(nil, func(a string, _ netip.Addr) engine.Verdict {
		if a == "joe" {
			return engine.Lock
		}
		return engine.Allow
	})
	if got := c.ask(pf("RCPT", "client_address", "", "client_port", "11", "sasl_username", "joe")); got != dunno {
		t.Fatalf("first RCPT (Decide): %q", got)
	}
	if got := c.ask(pf("RCPT", "client_address", "", "client_port", "11", "sasl_username", "joe")); got != locked {
		t.Fatalf("second RCPT (Check): %q", got)
	}
	wantCalls(t, ts.fake.take(),
		`decide auth_ok "joe" 2001:db8::25 session="[2001:db8::25]:5555|[2001:db8::1]:465" size=0 rcpts=0 qid=""`,
		`check "" 192.0.2.77`,
		`check "" 192.0.2.78`,
		`check "" 2001:db8::26`,
		`decide auth_ok "joe" invalid IP session=":11|198.51.100.1:587" size=0 rcpts=0 qid=""`,
		`check "joe" invalid IP`,
	)
}

// TestSessionFallback: without client_port (Postfix before 3.0) the
// session is known per message only.
func TestSessionFallback(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	old := func(state, inst string) string {
		return req("request", "smtpd_access_policy", "protocol_state", state, "client_address", "192.0.2.10",
			"instance", inst, "sasl_username", "joe", "recipient_count", "1", "size", "10")
	}
	c.ask(old("RCPT", "a.1"))
	c.ask(old("RCPT", "a.1"))
	c.ask(old("END-OF-MESSAGE", "a.1"))
	c.ask(old("RCPT", "a.2"))
	wantCalls(t, ts.fake.take(),
		`decide auth_ok "joe" 192.0.2.10 session="192.0.2.10|a.1" size=0 rcpts=0 qid=""`,
		`check "joe" 192.0.2.10`,
		`decide message "joe" 192.0.2.10 session="192.0.2.10|a.1" size=10 rcpts=1 qid=""`,
		`decide disconnect "joe" 192.0.2.10 session="192.0.2.10|a.1" size=0 rcpts=0 qid=""`,
		`decide auth_ok "joe" 192.0.2.10 session="192.0.2.10|a.2" size=0 rcpts=0 qid=""`,
	)
	// client_port=0 means "unknown" too
	c.ask(pf("RCPT", "client_port", "0", "sasl_username", "ann", "instance", "b.1"))
	wantCalls(t, ts.fake.take(),
		`decide auth_ok "ann" 192.0.2.10 session="192.0.2.10|b.1" size=0 rcpts=0 qid=""`)
}

// TestMinimalRequests: the smallest requests the protocol allows, CRLF line
// ends (a human with a terminal), repeated attributes (the last one wins)
// and pipelined requests.
func TestMinimalRequests(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	if got := c.ask("request=smtpd_access_policy\n\n"); got != dunno {
		t.Fatalf("bare request: %q", got)
	}
	if got := c.ask("request=smtpd_access_policy\r\nprotocol_state=CONNECT\r\nclient_address=192.0.2.1\r\n\r\n"); got != dunno {
		t.Fatalf("crlf: %q", got)
	}
	c.ask(req("request", "smtpd_access_policy", "protocol_state", "CONNECT", "client_address", "192.0.2.1", "client_address", "192.0.2.2"))
	wantCalls(t, ts.fake.take(), `check "" 192.0.2.1`, `check "" 192.0.2.2`)

	c.send(pf("CONNECT") + pf("EHLO") + pf("MAIL", "sasl_username", "joe"))
	for i := 0; i < 3; i++ {
		if got := c.answer(); got != dunno {
			t.Fatalf("pipelined %d: %q", i, got)
		}
	}
	if n := len(ts.fake.take()); n != 3 {
		t.Fatalf("%d calls for 3 pipelined requests", n)
	}
}

// TestAccountNames: sasl_username is normalised (event.NormalizeAccount),
// invalid UTF-8 and control characters included, and never refused for it.
func TestAccountNames(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	for i, tc := range []struct{ raw, want string }{
		{"JOE@Example.com", "joe@example.com"},
		{"jo\xffe@example.com", "joe@example.com"},
		{"jo\x01e\x7f@example.com", "joe@example.com"},
		{"<ann@example.com>", "ann@example.com"},
	} {
		port := string(rune('1' + i))
		if got := c.ask(pf("RCPT", "client_port", port, "sasl_username", tc.raw)); got != dunno {
			t.Fatalf("%q: %q", tc.raw, got)
		}
		calls := ts.fake.take()
		if len(calls) != 1 || calls[0].ev.Account != tc.want {
			t.Fatalf("%q: calls %v, want account %q", tc.raw, calls, tc.want)
		}
	}
	// a name that normalises to nothing is unauthenticated
	c.ask(pf("RCPT", "client_port", "9", "sasl_username", "unknown"))
	wantCalls(t, ts.fake.take(), `check "" 192.0.2.10`)
}

// TestOneMessageOncePerInstance: with both smtpd_data_restrictions and
// smtpd_end_of_data_restrictions, DATA counts the message and
// END-OF-MESSAGE only checks; the queue id stands in for a missing instance.
func TestOneMessageOncePerInstance(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t)
	u := "sasl_username"
	c.ask(pf("DATA", u, "joe", "recipient_count", "1", "instance", ""))
	c.ask(pf("END-OF-MESSAGE", u, "joe", "recipient_count", "1", "instance", ""))
	c.ask(pf("DATA", u, "joe", "recipient_count", "1", "instance", "", "queue_id", "Q1"))
	c.ask(pf("END-OF-MESSAGE", u, "joe", "recipient_count", "1", "instance", "", "queue_id", "Q1"))
	wantCalls(t, ts.fake.take(),
		`decide message "joe" 192.0.2.10 session="`+session1+`" size=0 rcpts=1 qid=""`,
		`decide message "joe" 192.0.2.10 session="`+session1+`" size=0 rcpts=1 qid=""`,
		`decide message "joe" 192.0.2.10 session="`+session1+`" size=0 rcpts=1 qid="Q1"`,
		`check "joe" 192.0.2.10`,
	)
}

// TestFirstDecisionRefuses: the AuthOK that trips a detector refuses the
// very request that carried it.
func TestFirstDecisionRefuses(t *testing.T) {
	ts := startServer(t, nil)
	ts.fake.script(func(ev *event.Event) engine.Verdict {
		if ev.Kind == event.AuthOK {
			return engine.Lock
		}
		return engine.Allow
	}, nil)
	c := ts.dial(t)
	if got := c.ask(pf("MAIL", "sasl_username", "joe")); got != locked {
		t.Fatalf("%q", got)
	}
}

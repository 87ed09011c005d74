package dovecotpolicy

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Bad requests get a 4xx and one log line, and the server goes on serving
// that connection (when the request could be read to its end) and others.
func TestBadRequests(t *testing.T) {
	okBody := body("joe", "192.0.2.7", "")
	post := func(target, ctype, b string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Type: %s\r\n\r\n%s", target, len(b), ctype, b)
	}
	deep := `{"login":"a","remote":"192.0.2.1","x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "}"
	cases := []struct {
		name, raw string
		code      int
		reason    string // answer text and log reason
		extra     []string
		logged    string // also in the log line
	}{
		{"GET", "GET /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method not allowed", []string{"Allow: POST"}, `method="\"GET\""`},
		{"unknown command", post("/?command=deny", "application/json", okBody), 400, "unknown command", nil, `command="\"deny\""`},
		{"no command", post("/", "application/json", okBody), 400, "unknown command", nil, `command="\"\""`},
		{"content type", post("/?command=allow", "text/plain", okBody), 415, "content type is not application/json", nil, `content_type="\"text/plain\""`},
		{"no content type", strings.Replace(post("/?command=allow", "x", okBody), "Content-Type: x\r\n", "", 1), 415, "content type is not application/json", nil, ""},
		{"garbage body", post("/?command=allow", "application/json", "\x00\x01\x02garbage"), 400, "invalid JSON", nil, "command=allow"},
		{"empty body", post("/?command=allow", "application/json", ""), 400, "body is not a JSON object", nil, ""},
		{"array", post("/?command=allow", "application/json", `[{"login":"a","remote":"192.0.2.1"}]`), 400, "body is not a JSON object", nil, ""},
		{"two objects", post("/?command=allow", "application/json", okBody+okBody), 400, "data after the JSON object", nil, ""},
		{"truncated", post("/?command=allow", "application/json", okBody[:40]), 400, "invalid JSON", nil, ""},
		{"trailing comma", post("/?command=allow", "application/json", `{"login":"a","remote":"192.0.2.1",}`), 400, "invalid JSON", nil, ""},
		{"single quotes", post("/?command=allow", "application/json", `{'login':'a'}`), 400, "invalid JSON", nil, ""},
		{"bad escape", post("/?command=allow", "application/json", `{"login":"a\x","remote":"192.0.2.1"}`), 400, "invalid JSON", nil, ""},
		{"raw control character", post("/?command=allow", "application/json", "{\"login\":\"a\tb\",\"remote\":\"192.0.2.1\"}"), 400, "invalid JSON", nil, ""},
		{"invalid UTF-8 outside strings", post("/?command=allow", "application/json", "{\"login\":\"a\",\xff\"remote\":\"192.0.2.1\"}"), 400, "invalid JSON", nil, ""},
		{"too deep", post("/?command=allow", "application/json", deep), 400, "JSON nested too deep", nil, ""},
		{"bad number", post("/?command=allow", "application/json", `{"login":"a","remote":"192.0.2.1","n":01}`), 400, "invalid JSON", nil, ""},
		{"no login", post("/?command=allow", "application/json", `{"remote":"192.0.2.1"}`), 400, "login or remote missing: auth_policy_request_attributes must include login=%{requested_username} remote=%{rip}", nil, ""},
		{"no remote", post("/?command=allow", "application/json", `{"login":"joe"}`), 400, "login or remote missing: auth_policy_request_attributes must include login=%{requested_username} remote=%{rip}", nil, ""},
		{"bad remote", post("/?command=allow", "application/json", `{"login":"joe","remote":"not an \"address\""}`), 400, "remote is not an IP address", nil, `remote="\"not an \\\"address\\\"\""`},
		{"login not a string", post("/?command=allow", "application/json", `{"login":42,"remote":"192.0.2.1"}`), 400, "a request attribute is not a string", nil, ""},
		{"remote an object", post("/?command=allow", "application/json", `{"login":"a","remote":{"ip":"192.0.2.1"}}`), 400, "a request attribute is not a string", nil, ""},
		{"report without success", post("/?command=report", "application/json", okBody), 400, "report without success", nil, "command=report"},
		{"success a number", post("/?command=report", "application/json", `{"login":"a","remote":"192.0.2.1","success":1}`), 400, "success or policy_reject is not a boolean", nil, ""},
		{"success a word", post("/?command=report", "application/json", `{"login":"a","remote":"192.0.2.1","success":"maybe"}`), 400, "success or policy_reject is not a boolean", nil, ""},
	}
	ts := start(t, Config{LogPerSecond: -1})
	c := ts.dial(t)
	for _, tc := range cases {
		want := answerPlain(tc.code, tc.reason, tc.extra...)
		if got := c.roundTrip(tc.raw); got != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, want)
		}
		line := "reason=\"" + strings.ReplaceAll(tc.reason, `"`, `\"`) + "\""
		if !strings.Contains(tc.reason, " ") {
			line = "reason=" + tc.reason
		}
		ts.log.waitLog(t, line)
		if tc.logged != "" && !strings.Contains(ts.log.String(), tc.logged) {
			t.Errorf("%s: log lacks %q:\n%s", tc.name, tc.logged, ts.log)
		}
		// The same connection still works.
		if got := c.roundTrip(dovecotRequest("/?command=allow", "", okBody)); got != answerOK {
			t.Fatalf("%s: the next request got %q", tc.name, got)
		}
	}
	if checks, events := ts.dec.take(); len(checks) != len(cases) || len(events) != 0 {
		t.Errorf("%d checks, %d events; want %d, 0", len(checks), len(events), len(cases))
	}
	if s := ts.Stats(); s.BadRequests != uint64(len(cases)) {
		t.Errorf("BadRequests %d, want %d", s.BadRequests, len(cases))
	}
}

// A body over the limit gets 413, the connection is closed, others go on.
func TestOversizedBody(t *testing.T) {
	ts := start(t, Config{MaxBodyBytes: 100})
	big := `{"login":"` + strings.Repeat("a", 200) + `","remote":"192.0.2.1"}`
	closeHdr := []string{"Connection: close"}

	c := ts.dial(t) // declared length over the limit: refused before reading
	if got, want := c.roundTrip(dovecotRequest("/?command=allow", "", big)), answerPlain(413, "body too large", closeHdr...); got != want {
		t.Errorf("declared:\n got %q\nwant %q", got, want)
	}
	if !c.closed() {
		t.Error("connection kept open after 413")
	}
	chunked := "POST /?command=allow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)
	c = ts.dial(t) // chunked: refused once the limit is passed
	if got, want := c.roundTrip(chunked), answerPlain(413, "body too large", closeHdr...); got != want {
		t.Errorf("chunked:\n got %q\nwant %q", got, want)
	}
	if !c.closed() {
		t.Error("connection kept open after 413")
	}
	ts.log.waitLog(t, "max_bytes=100")
	if got := ts.dial(t).roundTrip(dovecotRequest("/?command=allow", "", `{"login":"joe","remote":"192.0.2.7"}`)); got != answerOK {
		t.Errorf("next client got %q", got)
	}
	// Exactly at the limit is fine.
	exact := `{"login":"` + strings.Repeat("b", 100-len(`{"login":"","remote":"192.0.2.1"}`)) + `","remote":"192.0.2.1"}`
	if got := ts.dial(t).roundTrip(dovecotRequest("/?command=allow", "", exact)); got != answerOK {
		t.Errorf("%d-byte body got %q", len(exact), got)
	}
}

// Malformed HTTP, oversized headers and silent or stalled clients are
// closed with one log line each, while another client is served.
func TestBrokenConnections(t *testing.T) {
	ts := start(t, Config{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 300 * time.Millisecond,
		MaxHeaderBytes: 1024, LogPerSecond: -1})
	serveOther := func(what string) {
		t.Helper()
		if got := ts.dial(t).roundTrip(dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", ""))); got != answerOK {
			t.Errorf("after %s, another client got %q", what, got)
		}
	}
	cases := []struct {
		name, send string
		answer     string // status line expected before the close, "" for none
	}{
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"invalid UTF-8 request line", "POST /\xff\xfe HTTP/1.1\x00\r\n\r\n", "HTTP/1.1 400 Bad Request"},
		{"headers too large", "POST /?command=allow HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large"},
		{"silent", "", ""},
		{"half a request line", "POST /?comm", "HTTP/1.1 400 Bad Request"}, // after ReadHeaderTimeout
	}
	for _, tc := range cases {
		before := ts.Stats().Dropped
		c := ts.dial(t)
		if tc.send != "" {
			c.c.Write([]byte(tc.send))
		}
		serveOther(tc.name)
		if tc.answer != "" {
			c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, _ := c.br.ReadString('\n')
			if !strings.HasPrefix(line, tc.answer) {
				t.Errorf("%s: answered %q, want %q", tc.name, line, tc.answer)
			}
			c.br.Discard(c.br.Buffered())
		}
		if !c.closed() {
			t.Errorf("%s: connection left open", tc.name)
		}
		for i := 0; i < 500 && ts.Stats().Dropped == before; i++ {
			time.Sleep(10 * time.Millisecond)
		}
		if ts.Stats().Dropped != before+1 {
			t.Errorf("%s: not counted as dropped", tc.name)
		}
	}
	// The counter moves just before the line is written: wait for it.
	warn := `level=WARN msg="dovecot policy: connection closed without a valid request`
	info := `level=INFO msg="dovecot policy: connection closed without sending anything`
	log := ts.log.String()
	for i := 0; i < 500 && (strings.Count(log, warn) < len(cases)-1 || strings.Count(log, info) < 1); i++ {
		time.Sleep(10 * time.Millisecond)
		log = ts.log.String()
	}
	if n := strings.Count(log, warn); n != len(cases)-1 {
		t.Errorf("%d warnings for %d broken connections:\n%s", n, len(cases)-1, log)
	}
	if n := strings.Count(log, info); n != 1 {
		t.Errorf("%d lines for the silent connection:\n%s", n, log)
	}

	// A body that stops arriving: the request times out, the handler
	// logs it and the connection closes.
	c := ts.dial(t)
	c.c.Write([]byte("POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"login\":"))
	serveOther("a stalled body")
	want := "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\nreading body failed\n"
	if got, _ := c.read(); got != want {
		t.Errorf("stalled body:\n got %q\nwant %q", got, want)
	}
	if !c.closed() {
		t.Error("stalled body: connection left open")
	}
	ts.log.waitLog(t, `reason="reading body failed"`)
}

// The log is bounded; suppressed lines are counted in the next one.
func TestLogRateLimit(t *testing.T) {
	var now atomic.Int64
	now.Store(t0.Unix())
	ts := start(t, Config{LogPerSecond: 2, Clock: func() time.Time { return time.Unix(now.Load(), 0) }})
	c := ts.dial(t)
	bad := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for i := 0; i < 5; i++ {
		c.roundTrip(bad)
	}
	if n := strings.Count(ts.log.String(), "request refused"); n != 2 {
		t.Errorf("%d lines in one second, want 2", n)
	}
	now.Add(1)
	c.roundTrip(bad)
	ts.log.waitLog(t, "suppressed=3")
	if s := ts.Stats(); s.BadRequests != 6 {
		t.Errorf("BadRequests %d, want 6 (suppressed lines still count)", s.BadRequests)
	}
}

// With MaxConns connections open, the next one waits to be accepted and is
// served as soon as one closes.
func TestMaxConns(t *testing.T) {
	ts := start(t, Config{MaxConns: 1})
	first := ts.dial(t)
	if got := first.roundTrip(dovecotRequest("/?command=allow", "", body("a", "192.0.2.1", ""))); got != answerOK {
		t.Fatalf("first: %q", got)
	}
	second := ts.dial(t) // the kernel completes the handshake; the server does not accept yet
	done := make(chan string, 1)
	go func() {
		second.c.Write([]byte(dovecotRequest("/?command=allow", "", body("b", "192.0.2.2", ""))))
		got, _ := second.read()
		done <- got
	}()
	first.c.Close()
	if got := <-done; got != answerOK {
		t.Errorf("second: %q", got)
	}
}

// Many clients at once (Dovecot opens up to 100 connections): every
// request is answered and recorded exactly once.
func TestConcurrentClients(t *testing.T) {
	ts := start(t, Config{})
	const clients, each = 20, 25
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ts.dial(t)
			for j := 0; j < each; j++ {
				acct := fmt.Sprintf("u%d-%d@example.com", i, j)
				if got := c.roundTrip(dovecotRequest("/?command=allow", "", body(acct, "192.0.2.9", ""))); got != answerOK {
					t.Errorf("allow: %q", got)
				}
				if got := c.roundTrip(dovecotRequest("/?command=report", "", body(acct, "192.0.2.9", `,"success":false,"policy_reject":false`))); got != answerOK {
					t.Errorf("report: %q", got)
				}
			}
		}()
	}
	wg.Wait()
	checks, events := ts.dec.take()
	if len(checks) != clients*each || len(events) != clients*each {
		t.Fatalf("%d checks, %d events; want %d each", len(checks), len(events), clients*each)
	}
	seen := map[string]bool{}
	for _, e := range events {
		if seen[e.Account] {
			t.Errorf("%s recorded twice", e.Account)
		}
		seen[e.Account] = true
	}
}

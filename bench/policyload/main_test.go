package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestReadAnswer(t *testing.T) {
	for _, c := range []struct {
		in    string
		dunno bool
		bad   bool
	}{
		{"action=DUNNO\n\n", true, false},
		{"action=dunno\n\n", true, false},
		{"action=450 4.7.1 sending limit reached\n\n", false, false},
		{"action=DUNNO\nx\n", false, true},
		{"DUNNO\n\n", false, true},
	} {
		dunno, err := readAnswer(bufio.NewReader(strings.NewReader(c.in)))
		if (err != nil) != c.bad || (err == nil && dunno != c.dunno) {
			t.Errorf("readAnswer(%q) = %v, %v", c.in, dunno, err)
		}
	}
}

func TestReadHTTPStatus(t *testing.T) {
	for _, c := range []struct {
		in     string
		status int
		bad    bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"status\":0}", 0, false},
		{"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n{\"status\":-1,\"msg\":\"refused.\"}", -1, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"status\":3}", 3, false},
		{"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 0, true},
		{"HTTP/1.1 200 OK\r\n\r\n{\"status\":0}", 0, true},
	} {
		st, err := readHTTPStatus(bufio.NewReader(strings.NewReader(c.in)))
		if (err != nil) != c.bad || (err == nil && st != c.status) {
			t.Errorf("readHTTPStatus(%q) = %d, %v", c.in, st, err)
		}
	}
}

// The Dovecot requests are valid HTTP with a JSON body that has the
// members the shipped snippet sends; reports add success and
// policy_reject; an allow and its report are about the same login.
func TestDovecotRequests(t *testing.T) {
	d := newDgen(1, 1000, 10000, "127.0.0.1:8643", "key")
	var allow map[string]any
	for i := range 2000 {
		raw := append([]byte(nil), d.next()...)
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatalf("request %d: %v\n%s", i, err, raw)
		}
		report := i%2 == 1
		if cmd := req.URL.Query().Get("command"); cmd != map[bool]string{false: "allow", true: "report"}[report] {
			t.Fatalf("request %d: command %q", i, cmd)
		}
		if req.Header.Get("X-API-Key") != "key" || req.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d: headers %v", i, req.Header)
		}
		var m map[string]any
		if err := json.NewDecoder(req.Body).Decode(&m); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		for _, k := range []string{"login", "protocol", "pwhash", "remote", "session_id", "tls"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("request %d: no %s in %v", i, k, m)
			}
		}
		if _, err := netip.ParseAddr(m["remote"].(string)); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, hasSuccess := m["success"]
		if hasSuccess != report {
			t.Fatalf("request %d: success member %v in %v", i, hasSuccess, m)
		}
		if !report {
			allow = m
			continue
		}
		for _, k := range []string{"login", "remote", "session_id", "pwhash"} {
			if m[k] != allow[k] {
				t.Fatalf("request %d: report %s %v, allow %v", i, k, m[k], allow[k])
			}
		}
	}
}

// Each warm-up Postfix request is authenticated and from the account's
// usual address.
func TestWarmPostfixRequest(t *testing.T) {
	g := newGen(1, 1000, 10000)
	g.account = 7
	g.client = g.usualClient(7, 2)
	g.port = 4000
	g.instance = 1
	req := string(g.build(step{state: "RCPT", msg: 1}))
	var want []byte
	want = appendClient(append(want, "\nclient_address="...), g.client)
	for _, s := range []string{"protocol_state=RCPT\n", "\nsasl_username=user000007@example7.com\n", string(want) + "\n"} {
		if !strings.Contains(req, s) {
			t.Errorf("request lacks %q:\n%s", s, req)
		}
	}
	if !strings.HasSuffix(req, "\n\n") {
		t.Errorf("request not ended by an empty line")
	}
}

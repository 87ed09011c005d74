package dovecotpolicy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Tests of the HTTP/1.1 layer (http.go). Each request is followed by a
// good one on the same connection, which must be answered exactly when
// the connection is kept.

// answers splits a server's output into its answers (interim 100
// answers included) and fails on anything that is not well-formed HTTP.
func answers(t testing.TB, out []byte) []*http.Response {
	t.Helper()
	var all []*http.Response
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return all
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of %q: %v", len(all)+1, out, err)
		}
		if resp.StatusCode != 100 {
			if resp.ContentLength < 0 {
				t.Fatalf("answer %d of %q has no Content-Length", len(all)+1, out)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("answer %d of %q: body: %v", len(all)+1, out, err)
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		all = append(all, resp)
	}
}

// memServer is a Server for in-memory connections.
func memServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Decider == nil {
		cfg.Decider = newFake()
	}
	if cfg.Clock == nil {
		cfg.Clock = func() time.Time { return t0 }
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHTTPForms(t *testing.T) {
	b := `{"login":"joe","remote":"192.0.2.7"}`
	cl := strconv.Itoa(len(b))
	post := func(target, version, headers string) string {
		return "POST " + target + " " + version + "\r\n" + headers + "Content-Type: application/json\r\nContent-Length: " + cl + "\r\n\r\n" + b
	}
	std := "Host: a\r\n"
	chunk := func(body, ext, trailer string) string {
		return "POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
			fmt.Sprintf("%x%s\r\n%s\r\n0\r\n%s\r\n", len(body), ext, body, trailer)
	}
	cases := []struct {
		name, raw string
		code      int
		text      string // answer body, "" to skip the check
		kept      bool
		header    string // a header line the answer must carry
	}{
		{"Dovecot", dovecotRequest("/?command=allow", "", b), 200, `{"status":0}`, true, ""},
		{"bare LF", strings.ReplaceAll(post("/?command=allow", "HTTP/1.1", std), "\r\n", "\n"), 200, "", true, ""},
		{"lower-case names, spaces", "POST /?command=allow HTTP/1.1\r\nhost:a\r\ncontent-type:application/json  \r\ncontent-length: \t" + cl + "\r\n\r\n" + b, 200, "", true, ""},
		{"HTTP/1.2", post("/?command=allow", "HTTP/1.2", std), 200, "", true, ""},
		{"absolute form", post("http://a:8643/?command=allow", "HTTP/1.1", std), 200, "", true, ""},
		{"absolute form, no path", post("HTTPS://a?command=allow", "HTTP/1.1", std), 200, "", true, ""},
		{"UTF-8 in path and value", post("/\xc3\xa9?command=allow", "HTTP/1.1", std+"X-A: \xc3\xa9\xff\r\n"), 200, "", true, ""},
		{"same length twice", post("/?command=allow", "HTTP/1.1", std+"Content-Length: "+cl+"\r\n"), 200, "", true, ""},
		{"100-continue, body sent", post("/?command=allow", "HTTP/1.1", std+"Expect: 100-Continue\r\n"), 200, "", true, ""},
		{"chunked", chunk(b, "", ""), 200, "", true, ""},
		{"chunked, extension, trailer", chunk(b, " ;a=b;c", "X-T: 1\r\n"), 200, "", true, ""},
		{"chunked, two chunks", "POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nContent-Type: application/json\r\n\r\n" +
			fmt.Sprintf("3\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n", b[:3], len(b)-3, b[3:]), 200, "", true, ""},
		{"HTTP/1.0", post("/?command=allow", "HTTP/1.0", ""), 200, "", false, ""},
		{"HTTP/1.0 keep-alive", post("/?command=allow", "HTTP/1.0", "Connection: Keep-Alive\r\n"), 200, "", true, "Connection: keep-alive"},
		{"Connection: close", post("/?command=allow", "HTTP/1.1", std+"Connection: keep-alive, Close\r\n"), 200, "", false, "Connection: close"},
		{"no body", "POST /?command=allow HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\r\n", 400, "body is not a JSON object\n", true, ""},
		{"GET with a body", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "POST", "GET", 1), 405, "method not allowed\n", true, "Allow: POST"},
		{"lower-case method", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "POST", "post", 1), 405, "", true, ""},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 405, "", true, ""},
		{"fragment", post("/?command=allow#x", "HTTP/1.1", std), 400, "unknown command\n", true, ""},
		{"GET, body not all sent", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{", 405, "", false, "Connection: close"},
		{"refused, chunked body", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 405, "", false, "Connection: close"},

		{"leading empty line", "\r\n" + post("/?command=allow", "HTTP/1.1", std), 400, "malformed request line\n", false, "Connection: close"},
		{"no Host", post("/?command=allow", "HTTP/1.1", ""), 400, "missing required Host header\n", false, ""},
		{"two Hosts", post("/?command=allow", "HTTP/1.1", std+std), 400, "too many Host headers\n", false, ""},
		{"bad Host", post("/?command=allow", "HTTP/1.1", "Host: a b\r\n"), 400, "malformed Host header\n", false, ""},
		{"Expect", post("/?command=allow", "HTTP/1.1", std+"Expect: something\r\n"), 417, "", false, ""},
		{"gzip", "POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "", false, ""},
		{"gzip, chunked", "POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "", false, ""},
		{"chunked twice", "POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501, "", false, ""},
		{"chunked and length", strings.Replace(chunk(b, "", ""), "Host: a\r\n", "Host: a\r\nContent-Length: 5\r\n", 1), 400, "", false, ""},
		{"chunked in HTTP/1.0", strings.Replace(chunk(b, "", ""), "HTTP/1.1", "HTTP/1.0", 1), 400, "", false, ""},
		{"folded header", post("/?command=allow", "HTTP/1.1", std+"X-A: b\r\n c\r\n"), 400, "obsolete line folding\n", false, ""},
		{"HTTP/2.0", post("/?command=allow", "HTTP/2.0", std), 505, "", false, ""},
		{"HTTP/1.10", post("/?command=allow", "HTTP/1.10", std), 400, "malformed HTTP version\n", false, ""},
		{"version with NUL", post("/", "HTTP/1.1\x00", std), 400, "", false, ""},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "", false, ""},
		{"space before colon", post("/?command=allow", "HTTP/1.1", std+"X-A : b\r\n"), 400, "invalid header name\n", false, ""},
		{"no colon", post("/?command=allow", "HTTP/1.1", std+"foo\r\n"), 400, "malformed header line\n", false, ""},
		{"control character", post("/?command=allow", "HTTP/1.1", std+"X-A: a\x01b\r\n"), 400, "invalid header value\n", false, ""},
		{"bare CR", post("/?command=allow", "HTTP/1.1", "Host: a\rX: y\r\n"), 400, "invalid header value\n", false, ""},
		{"two lengths", post("/?command=allow", "HTTP/1.1", std+"Content-Length: 3\r\n"), 400, "bad Content-Length\n", false, ""},
		{"signed length", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "Length: ", "Length: +", 1), 400, "bad Content-Length\n", false, ""},
		{"huge length", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "Length: ", "Length: 9999999999999999999", 1), 400, "bad Content-Length\n", false, ""},
		{"tab after method", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "POST ", "POST\t", 1), 400, "malformed request line\n", false, ""},
		{"two spaces", strings.Replace(post("/?command=allow", "HTTP/1.1", std), "POST ", "POST  ", 1), 400, "malformed request target\n", false, ""},
		{"bad escape in path", post("/%zz?command=allow", "HTTP/1.1", std), 400, "malformed request target\n", false, ""},
		{"no path", post("?command=allow", "HTTP/1.1", std), 400, "malformed request target\n", false, ""},
		{"other scheme", post("ftp://a/?command=allow", "HTTP/1.1", std), 400, "malformed request target\n", false, ""},
		{"bad authority", post("http://a\"b/?command=allow", "HTTP/1.1", std), 400, "malformed request target\n", false, ""},
		{"DEL in target", post("/\x7f?command=allow", "HTTP/1.1", std), 400, "malformed request target\n", false, ""},
		{"bad chunk size", chunk(b, "x", ""), 400, "reading body failed\n", false, "Connection: close"},
		{"chunk without CRLF", strings.Replace(chunk(b, "", ""), b+"\r\n", b+"xx", 1), 400, "reading body failed\n", false, "Connection: close"},
		{"chunked, cut off", strings.TrimSuffix(chunk(b, "", ""), "0\r\n\r\n"), 400, "reading body failed\n", false, "Connection: close"},
		{"body cut off", strings.TrimSuffix(post("/?command=allow", "HTTP/1.1", std), "}"), 400, "reading body failed\n", false, "Connection: close"},
		{"head cut off", "POST /?command=allow HTTP/1.1\r\nHost: a\r\n", 400, "incomplete request\n", false, ""},
		{"request line cut off", "POST /?comm", 400, "incomplete request\n", false, ""},
	}
	s := memServer(t, Config{LogPerSecond: -1})
	next := dovecotRequest("/?command=allow", "", b)
	for _, tc := range cases {
		in := tc.raw + next
		if strings.HasSuffix(tc.name, "cut off") { // followed by nothing
			in = tc.raw
		}
		out := serveMem(s, []byte(in), 0)
		all := answers(t, out)
		if len(all) > 0 && all[0].StatusCode == 100 {
			all = all[1:]
		}
		want := 1
		if tc.kept {
			want = 2
		}
		if len(all) != want {
			t.Errorf("%s: %d answers, want %d:\n%q", tc.name, len(all), want, out)
			continue
		}
		a := all[0]
		body, _ := io.ReadAll(a.Body)
		if a.StatusCode != tc.code || tc.text != "" && string(body) != tc.text {
			t.Errorf("%s: answered %d %q, want %d %q", tc.name, a.StatusCode, body, tc.code, tc.text)
		}
		if tc.header != "" && !bytes.Contains(out, []byte("\r\n"+tc.header+"\r\n")) {
			t.Errorf("%s: no %q in %q", tc.name, tc.header, out)
		}
		if tc.kept && !bytes.HasSuffix(out, []byte(answerOK)) {
			t.Errorf("%s: the next request got %q", tc.name, out)
		}
		if a.Close == tc.kept {
			t.Errorf("%s: Connection header of %q does not say what happened", tc.name, out)
		}
	}
}

// The same requests read in pieces of any size get the same answers.
func TestHTTPSplitReads(t *testing.T) {
	s := memServer(t, Config{MaxHeaderBytes: 300, MaxBodyBytes: 6000, LogPerSecond: -1})
	big := `{"login":"` + strings.Repeat("x", 5000) + `","remote":"192.0.2.7"}` // larger than the read buffer
	in := dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", "")) +
		dovecotRequest("/?command=report", "", body("joe", "192.0.2.7", `,"success":true`)) +
		dovecotRequest("/?command=allow", "", big) +
		"POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n0\r\nX: y\r\n\r\n", 2000, big[:2000], len(big)-2000, big[2000:]) +
		dovecotRequest("/?command=allow", "", big[:100]) // invalid JSON: 400
	want := serveMem(s, []byte(in), 0)
	if n := len(answers(t, want)); n != 5 || !bytes.HasPrefix(want, []byte(answerOK+answerOK+answerOK+answerOK)) {
		t.Fatalf("%d answers: %q", n, want)
	}
	for step := 1; step < 600; step += 7 {
		if got := serveMem(s, []byte(in), step); !bytes.Equal(got, want) {
			t.Fatalf("read %d bytes at a time:\n got %q\nwant %q", step, got, want)
		}
	}
}

// Pipelined requests are answered in order, in one write; a request
// after "Connection: close" is not answered.
func TestPipelining(t *testing.T) {
	ts := start(t, Config{})
	c := ts.dial(t)
	b := body("joe", "192.0.2.7", "")
	reqs := dovecotRequest("/?command=allow", "", b) + dovecotRequest("/?command=report", "", body("joe", "192.0.2.7", `,"success":true`)) +
		strings.Replace(dovecotRequest("/?command=allow", "", b), "Keep-Alive", "close", 1) + dovecotRequest("/?command=allow", "", b)
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, reqs); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c.c)
	if err != nil {
		t.Fatal(err)
	}
	closed := strings.Replace(answerOK, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
	if want := answerOK + answerOK + closed; string(got) != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if checks, events := ts.dec.take(); len(checks) != 2 || len(events) != 1 {
		t.Errorf("%d checks, %d events; want 2, 1", len(checks), len(events))
	}
}

// A client that sends "Expect: 100-continue" gets "100 Continue" before it
// sends the body.
func TestExpectContinue(t *testing.T) {
	ts := start(t, Config{})
	c := ts.dial(t)
	b := body("joe", "192.0.2.7", "")
	req := dovecotRequest("/?command=allow", "", b)
	head := strings.Replace(strings.TrimSuffix(req, b), "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1)
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c.c, head)
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q, %v", line, err)
	}
	if line, _ = c.br.ReadString('\n'); line != "\r\n" {
		t.Fatalf("got %q", line)
	}
	io.WriteString(c.c, b)
	if got, _ := c.read(); got != answerOK {
		t.Errorf("got %q", got)
	}
}

// A kept-alive connection with nothing to say is closed after
// IdleTimeout, quietly.
func TestIdleTimeout(t *testing.T) {
	ts := start(t, Config{IdleTimeout: 100 * time.Millisecond})
	c := ts.dial(t)
	if got := c.roundTrip(dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", ""))); got != answerOK {
		t.Fatalf("got %q", got)
	}
	if !c.closed() {
		t.Fatal("idle connection kept")
	}
	time.Sleep(20 * time.Millisecond)
	if s := ts.Stats(); s.Dropped != 0 {
		t.Errorf("an idle close counted as dropped: %+v", s)
	}
}

// A client sending a head byte by byte on a kept-alive connection gets
// ReadHeaderTimeout from its first byte, not a fresh one per byte.
func TestSlowHeadKeptAlive(t *testing.T) {
	ts := start(t, Config{ReadHeaderTimeout: 300 * time.Millisecond})
	c := ts.dial(t)
	if got := c.roundTrip(dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", ""))); got != answerOK {
		t.Fatalf("got %q", got)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, b := range []byte(dovecotRequest("/?command=allow", "", body("joe", "192.0.2.7", ""))) {
			if _, err := c.c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond) // the whole request would take 10 s
		}
	}()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 400 Bad Request\r\n" {
		t.Errorf("got %q, %v; want a 400 within 5 s", line, err)
	}
	c.c.Close()
	<-done
}

// A client that sends requests without reading the answers is dropped
// after WriteTimeout once the socket buffers are full.
func TestWriteTimeout(t *testing.T) {
	ts := start(t, Config{WriteTimeout: 100 * time.Millisecond, Decider: &benchDecider{}})
	c := ts.dial(t)
	c.c.(*net.TCPConn).SetReadBuffer(4096)
	req := []byte(strings.Repeat(dovecotRequest("/?command=report", "", body("joe", "192.0.2.7", `,"success":true`)), 100))
	go func() {
		c.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, err := c.c.Write(req); err != nil {
				return
			}
		}
	}()
	for i := 0; ; i++ {
		ts.mu.Lock()
		n := len(ts.conns)
		ts.mu.Unlock()
		if n == 0 && ts.Stats().Report > 0 {
			break
		}
		if i == 2000 {
			t.Fatalf("connection still open after 20 s; stats %+v", ts.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close ends connections at once, even one in the middle of a request;
// Serve then returns nil, and so does a Serve called afterwards.
func TestClose(t *testing.T) {
	ts := start(t, Config{})
	c := ts.dial(t)
	io.WriteString(c.c, "POST /?command=allow HTTP/1.1\r\n")
	for i := 0; ; i++ { // wait until the server has the connection
		ts.mu.Lock()
		n := len(ts.conns)
		ts.mu.Unlock()
		if n == 1 {
			break
		}
		if i == 1000 {
			t.Fatal("connection never accepted")
		}
		time.Sleep(time.Millisecond)
	}
	ts.Close()
	if !c.closed() {
		t.Error("connection open after Close")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(ln); err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("a listener served after Close accepts")
	}
}

func httpSeeds(f *testing.F) {
	b := body("joe", "192.0.2.7", "")
	for _, s := range []string{
		dovecotRequest("/?command=allow", basicAuth, b),
		dovecotRequest("/?command=report", "", body("joe", "192.0.2.7", `,"success":false`)) + dovecotRequest("/?command=allow", "", b),
		"POST /?command=allow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n5;x\r\n{\"log\r\n2\r\n\"}\r\n0\r\nT: 1\r\n\r\n",
		"POST http://a/?command=allow HTTP/1.0\nConnection: keep-alive\nX-Api-Key: k\nX-Api-Key: k\nContent-Length: 2\n\n{}",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"POST /%41?command=%61llow&x HTTP/1.1\r\nHost: [::1]:8\r\nContent-Length: 0\r\nContent-Type: application/json; charset=utf-8\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "\r\n\r\n", "POST / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(3))
	}
}

// What the head parser accepts, net/http's reads alike: the same method,
// query, framing, connection and headers. (net/http accepts some forms
// this server refuses: obsolete line folding, Content-Length with
// Transfer-Encoding, HTTP/2 versions.)
func FuzzParseHead(f *testing.F) {
	httpSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte, _ uint8) {
		scan := 0
		n := headEnd(b, &scan)
		if n < 0 {
			return
		}
		var h reqHead
		if parseHead(b[:n], "X-Api-Key", &h) != nil {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:n])))
		if err != nil {
			t.Fatalf("accepted %q, which net/http refuses: %v", b[:n], err)
		}
		query := r.URL.RawQuery
		if string(h.target) == "*" {
			query = ""
		}
		if r.Method != string(h.method) || query != string(h.query) || r.ProtoMinor != h.minor && h.minor != 1 {
			t.Fatalf("%q: net/http reads %s %q 1.%d, we %s %q 1.%d", b[:n], r.Method, query, r.ProtoMinor, h.method, h.query, h.minor)
		}
		chunked := len(r.TransferEncoding) == 1 && r.TransferEncoding[0] == "chunked"
		if chunked != h.chunked || !chunked && r.ContentLength != max(h.clen, 0) {
			t.Fatalf("%q: net/http frames chunked=%v length %d, we chunked=%v length %d", b[:n], chunked, r.ContentLength, h.chunked, h.clen)
		}
		if r.Close != (h.close || h.minor == 0 && !h.keepAlive) {
			t.Fatalf("%q: net/http close=%v, we close=%v keep-alive=%v", b[:n], r.Close, h.close, h.keepAlive)
		}
		keys := r.Header.Values("X-Api-Key")
		if len(keys) != h.keys || len(keys) > 0 && keys[0] != string(h.key) {
			t.Fatalf("%q: net/http keys %q, we %d %q", b[:n], keys, h.keys, h.key)
		}
		if ct := r.Header.Get("Content-Type"); ct != string(h.ctype) {
			t.Fatalf("%q: net/http content type %q, we %q", b[:n], ct, h.ctype)
		}
	})
}

// Whatever a client sends, in whatever pieces, the server answers with
// well-formed HTTP and never panics; reading in pieces changes nothing
// but where a refused request's body is not there yet to skip (the
// connection then closes early).
func FuzzConn(f *testing.F) {
	httpSeeds(f)
	s := memServer(f, Config{MaxHeaderBytes: 256, MaxBodyBytes: 512, APIKey: "k"})
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		whole := answers(t, serveMem(s, in, 0))
		split := answers(t, serveMem(s, in, int(step%64)+1))
		drop100 := func(a []*http.Response) []*http.Response {
			var out []*http.Response
			for _, r := range a {
				if r.StatusCode != 100 {
					out = append(out, r)
				}
			}
			return out
		}
		whole, split = drop100(whole), drop100(split)
		if len(split) > len(whole) {
			t.Fatalf("%q: %d answers whole, %d in pieces of %d", in, len(whole), len(split), step%64+1)
		}
		for i, r := range split {
			w := whole[i]
			bw, _ := io.ReadAll(w.Body)
			bs, _ := io.ReadAll(r.Body)
			if w.StatusCode != r.StatusCode || !bytes.Equal(bw, bs) {
				t.Fatalf("%q: answer %d is %d %q whole, %d %q in pieces of %d", in, i, w.StatusCode, bw, r.StatusCode, bs, step%64+1)
			}
			switch r.StatusCode {
			case 200, 400, 401, 403, 405, 413, 415, 417, 431, 501, 505:
			default:
				t.Fatalf("%q: status %d", in, r.StatusCode)
			}
		}
	})
}

// A TLS handshake (Dovecot configured with an https:// URL) is refused at
// once, not after ReadHeaderTimeout.
func TestTLSRefusedAtOnce(t *testing.T) {
	ts := start(t, Config{ReadHeaderTimeout: time.Minute})
	c := ts.dial(t)
	c.c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")) // a ClientHello's start, no line end
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := c.br.ReadString('\n'); line != "HTTP/1.1 400 Bad Request\r\n" {
		t.Errorf("got %q, %v", line, err)
	}
}

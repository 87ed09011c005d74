package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// Dovecot auth policy load. Each connection is one kept-alive HTTP/1.1
// connection of Dovecot's auth process and plays logins one after the
// other: POST /?command=allow before the password is checked, then POST
// /?command=report with the result, with the JSON members of the shipped
// snippet (login, protocol, pwhash, remote, session_id; tls, and success
// and policy_reject in reports) in the order Dovecot 2.3 writes them.
//
// Logins: 94 % are an account (heavy-tailed, as in the Postfix load)
// logging in from one of its three usual addresses (1 % from anywhere)
// with its right password; 3 % the same with a stale password (one fixed
// wrong hash per account: a phone retrying); 3 % background guessing from
// any of -clients addresses, at a random account or a common name, with a
// random password hash. Protocols: IMAP 65 %, SMTP (submission through
// Dovecot SASL) 25 %, POP3 10 %.

var commonNames = []string{"admin", "test", "info", "support", "office", "sales", "webmaster", "postmaster"}

// dgen produces the requests of Dovecot logins, one at a time.
type dgen struct {
	*gen
	host, apiKey string
	body, req    []byte
	report       bool // the next request is the report of the current login
	login        []byte
	remote       int // client address number
	proto        string
	pwhash       uint32
	success      bool
	session      [16]byte
}

func newDgen(seed uint64, accounts, clients int, host, apiKey string) *dgen {
	return &dgen{gen: newGen(seed, accounts, clients), host: host, apiKey: apiKey,
		body: make([]byte, 0, 512), req: make([]byte, 0, 1024), login: make([]byte, 0, 64)}
}

const sessionChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// newLogin draws the next login.
func (d *dgen) newLogin() {
	r := d.rng
	d.login = d.login[:0]
	switch p := r.IntN(100); {
	case p < 65:
		d.proto = "imap"
	case p < 90:
		d.proto = "smtp"
	default:
		d.proto = "pop3"
	}
	for i := range d.session {
		d.session[i] = sessionChars[r.IntN(len(sessionChars))]
	}
	switch p := r.IntN(1000); {
	case p < 30: // background guessing
		d.remote = r.IntN(d.clients)
		if r.IntN(2) == 0 {
			d.login = appendAccount(d.login, r.IntN(d.accounts))
		} else {
			d.login = append(d.login, commonNames[r.IntN(len(commonNames))]...)
		}
		d.pwhash = r.Uint32() & 0xffffff
		d.success = false
	default:
		a := int(d.zipf.Uint64())
		d.login = appendAccount(d.login, a)
		if r.IntN(100) == 0 {
			d.remote = r.IntN(d.clients)
		} else {
			d.remote = d.usualClient(a, r.IntN(3))
		}
		d.success = p >= 60
		if d.success {
			d.pwhash = uint32(mix(uint64(a))) & 0xffffff
		} else {
			d.pwhash = uint32(mix(uint64(a)^0xdead)) & 0xffffff // the old password
		}
	}
}

// next returns the next request (allow, then report of the same login);
// the slice is valid until the next call.
func (d *dgen) next() []byte {
	if !d.report {
		d.newLogin()
	}
	b := d.appendBody(d.body[:0], d.report)
	d.body = b
	d.req = d.appendRequest(d.req[:0], d.report, b)
	d.report = !d.report
	return d.req
}

// appendBody writes the JSON of the current login, as Dovecot 2.3 does.
func (d *dgen) appendBody(b []byte, report bool) []byte {
	b = append(b, `{"login":"`...)
	b = append(b, d.login...)
	b = append(b, `","protocol":"`...)
	b = append(b, d.proto...)
	b = append(b, `","pwhash":"`...)
	b = appendHex6(b, d.pwhash)
	b = append(b, `","remote":"`...)
	b = appendClient(b, d.remote)
	b = append(b, `","session_id":"`...)
	b = append(b, d.session[:]...)
	b = append(b, '"')
	if report {
		b = append(b, `,"success":`...)
		b = strconv.AppendBool(b, d.success)
		b = append(b, `,"policy_reject":false`...)
	}
	return append(b, `,"tls":true}`...)
}

func appendHex6(b []byte, v uint32) []byte {
	const hex = "0123456789abcdef"
	for sh := 20; sh >= 0; sh -= 4 {
		b = append(b, hex[(v>>uint(sh))&0xf])
	}
	return b
}

// appendRequest writes the HTTP request carrying body.
func (d *dgen) appendRequest(b []byte, report bool, body []byte) []byte {
	if report {
		b = append(b, "POST /?command=report HTTP/1.1\r\nHost: "...)
	} else {
		b = append(b, "POST /?command=allow HTTP/1.1\r\nHost: "...)
	}
	b = append(b, d.host...)
	b = append(b, "\r\nConnection: Keep-Alive\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nContent-Type: application/json\r\nDate: Fri, 27 Nov 2026 13:12:34 GMT\r\nUser-Agent: dovecot/auth-policy-client\r\n"...)
	if d.apiKey != "" {
		b = append(b, "X-API-Key: "...)
		b = append(b, d.apiKey...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}

func runDovecot(address, apiKey string, conns int, duration time.Duration, limit int64, accounts, clients int, seed uint64) (*result, error) {
	return runConns("tcp", address, conns, duration, func(i int, nc net.Conn, issued *atomic.Int64, stop *atomic.Bool, deadline time.Time) *result {
		d := newDgen(seed+uint64(i)*0x9e3779b97f4a7c15, accounts, clients, address, apiKey)
		return driveDovecot(nc, d, issued, stop, limit, deadline)
	})
}

// driveDovecot sends logins on one connection until the deadline or the
// limit; a login's allow and report always go together.
func driveDovecot(nc net.Conn, d *dgen, issued *atomic.Int64, stop *atomic.Bool, limit int64, deadline time.Time) *result {
	res := &result{hist: make([]uint64, histMicros)}
	r := bufio.NewReaderSize(nc, 4096)
	nc.SetDeadline(deadline.Add(10 * time.Second))
	for {
		if !d.report {
			if stop.Load() {
				return res
			}
			if limit > 0 && issued.Add(2) > limit {
				stop.Store(true)
				return res
			}
			if time.Now().After(deadline) {
				stop.Store(true)
				return res
			}
		}
		req := d.next()
		t := time.Now()
		if _, err := nc.Write(req); err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		status, err := readHTTPStatus(r)
		lat := time.Since(t)
		if err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		switch {
		case status < 0:
			res.refused++
		case status > 0:
			res.tarpit++
		}
		res.record(lat)
	}
}

// readHTTPStatus reads one HTTP/1.1 200 answer with a body
// {"status":N,...} and returns N.
func readHTTPStatus(r *bufio.Reader) (int, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return 0, fmt.Errorf("answer %q", line)
	}
	n := -1
	for {
		line, err = r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if len(line) > 16 && bytes.EqualFold(line[:15], []byte("Content-Length:")) {
			n, err = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
			if err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", line)
			}
		}
	}
	if n < 0 || n > 4096 {
		return 0, fmt.Errorf("answer without a usable Content-Length (%d)", n)
	}
	var buf [4096]byte
	body := buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	v, ok := bytes.CutPrefix(body, []byte(`{"status":`))
	if !ok {
		return 0, fmt.Errorf("answer body %q", body)
	}
	end := bytes.IndexAny(v, ",}")
	if end < 0 {
		return 0, fmt.Errorf("answer body %q", body)
	}
	st, err := strconv.Atoi(string(v[:end]))
	if err != nil {
		return 0, errors.New("answer status " + strconv.Quote(string(v[:end])))
	}
	return st, nil
}

func (r *result) printDovecot(w io.Writer, addr string, conns int) {
	rps := float64(r.requests) / r.elapsed.Seconds()
	fmt.Fprintf(w, "target      %s (Dovecot auth policy), %d connections\n", addr, conns)
	fmt.Fprintf(w, "requests    %d in %.2fs: %.0f requests/s, %.0f allow+report pairs/s\n", r.requests, r.elapsed.Seconds(), rps, rps/2)
	fmt.Fprintf(w, "answers     %d refused (status -1), %d tarpit (status > 0), the rest 0\n", r.refused, r.tarpit)
	fmt.Fprintf(w, "latency     p50 %v  p90 %v  p99 %v  max %v per request (1 µs resolution)\n",
		r.percentile(0.50), r.percentile(0.90), r.percentile(0.99), r.max.Round(time.Microsecond))
	if r.errors > 0 {
		fmt.Fprintf(w, "errors      %d, first: %v\n", r.errors, r.firstErr)
	}
}

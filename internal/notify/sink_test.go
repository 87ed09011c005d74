package notify

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpSink is a minimal SMTP server for the unit tests: it records each
// transaction (envelope and raw message) and can be told to refuse
// recipients or messages. The end-to-end tests use a real Postfix.
type smtpSink struct {
	t    *testing.T
	ln   net.Listener
	tls  *tls.Config // STARTTLS offered when set
	Addr string

	mu    sync.Mutex
	msgs  []sinkMsg
	datas int
	// rcptReply and dataReply, when set, give the reply to a RCPT TO (by
	// address) or to the end of the n-th DATA (from 1); "" means 250.
	rcptReply func(rcpt string) string
	dataReply func(n int) string
	got       chan struct{}
}

type sinkMsg struct {
	From  string
	Rcpts []string
	Data  []byte // as received, dot-stuffing undone, CRLF kept
	TLS   bool
}

func newSMTPSink(t *testing.T, withTLS bool) *smtpSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{t: t, ln: ln, Addr: ln.Addr().String(), got: make(chan struct{}, 100)}
	if withTLS {
		s.tls = selfSigned(t)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { s.serve(c) })
		}
	})
	return s
}

func (s *smtpSink) messages() []sinkMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMsg(nil), s.msgs...)
}

// wait waits for n messages in all.
func (s *smtpSink) wait(n int) []sinkMsg {
	s.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if m := s.messages(); len(m) >= n {
			return m
		}
		select {
		case <-s.got:
		case <-deadline:
			s.t.Fatalf("smtp sink: %d messages after 10s, want %d", len(s.messages()), n)
		}
	}
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	reply := func(l string) {
		w.WriteString(l + "\r\n")
		w.Flush()
	}
	reply("220 sink.test ESMTP")
	var cur sinkMsg
	isTLS := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		cmd := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			w.WriteString("250-sink.test\r\n250-8BITMIME\r\n")
			if s.tls != nil && !isTLS {
				w.WriteString("250-STARTTLS\r\n")
			}
			reply("250 PIPELINING")
		case cmd == "STARTTLS" && s.tls != nil && !isTLS:
			reply("220 go ahead")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, isTLS = tc, true
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			cur = sinkMsg{From: addrOf(line[len("MAIL FROM:"):]), TLS: isTLS}
			reply("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			rcpt := addrOf(line[len("RCPT TO:"):])
			rep := ""
			if s.rcptReply != nil {
				rep = s.rcptReply(rcpt)
			}
			if rep == "" {
				cur.Rcpts = append(cur.Rcpts, rcpt)
				rep = "250 ok"
			}
			reply(rep)
		case cmd == "DATA":
			reply("354 go on")
			var data bytes.Buffer
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			s.mu.Lock()
			s.datas++
			n := s.datas
			s.mu.Unlock()
			rep := ""
			if s.dataReply != nil {
				rep = s.dataReply(n)
			}
			if rep != "" {
				reply(rep)
				continue
			}
			cur.Data = data.Bytes()
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			select {
			case s.got <- struct{}{}:
			default:
			}
			reply("250 queued")
		case cmd == "QUIT":
			reply("221 bye")
			return
		case cmd == "RSET", cmd == "NOOP":
			reply("250 ok")
		default:
			reply("502 unknown command")
		}
	}
}

// addrOf takes the address out of "<a@b> PARAMS".
func addrOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '>'); strings.HasPrefix(s, "<") && i > 0 {
		return s[1:i]
	}
	return s
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sink.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"sink.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

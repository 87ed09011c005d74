package dovecotpolicy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds the bounds on connections and on log lines.

type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitConn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// connState logs connections that close without a request reaching the
// handler: malformed HTTP, oversized headers, or a client that connected
// and sent nothing until a timeout.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitConn)
	if !ok || st != http.StateClosed || lc.served.Load() {
		return
	}
	s.stats.dropped.Add(1)
	// A client that sent nothing at all is most likely a port probe.
	level, msg := slog.LevelWarn, "dovecot policy: connection closed without a valid request (malformed, oversized or stalled)"
	if !lc.sent.Load() {
		level, msg = slog.LevelInfo, "dovecot policy: connection closed without sending anything"
	}
	if ok, dropped := s.logLim.allow(s.now()); ok {
		a := []slog.Attr{slog.String("source", Source), slog.String("peer", c.RemoteAddr().String())}
		if dropped > 0 {
			a = append(a, slog.Int64("suppressed", dropped))
		}
		s.log.LogAttrs(context.Background(), level, msg, a...)
	}
}

// logLimiter allows per lines each second and counts the rest.
type logLimiter struct {
	per     int64
	mu      sync.Mutex
	sec     int64
	n       int64
	dropped int64
}

// allow reports whether a line may be logged now and how many were
// suppressed since the last one that was.
func (l *logLimiter) allow(now time.Time) (bool, int64) {
	if l.per < 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.sec {
		l.sec, l.n = sec, 0
	}
	if l.n >= l.per {
		l.dropped++
		return false, 0
	}
	l.n++
	d := l.dropped
	l.dropped = 0
	return true, d
}

// limitListener accepts at most n connections at a time.
type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, sem: l.sem}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	sem    chan struct{}
	once   sync.Once
	sent   atomic.Bool // the client sent at least one byte
	served atomic.Bool // a request reached the handler
}

func (c *limitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.sent.Load() {
		c.sent.Store(true)
	}
	return n, err
}

// CloseWrite lets net/http half-close a TCP connection before closing it,
// so that a client still sending (an oversized body) reads the answer
// instead of a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.sem })
	return err
}

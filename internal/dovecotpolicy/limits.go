package dovecotpolicy

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// This file holds the bounds on log lines. (The bounds on connections
// and requests are in Serve and http.go.)

// logDropped logs a connection that closed without a request reaching
// the handler: malformed HTTP, oversized headers, or a client that
// connected and sent nothing until a timeout.
func (s *Server) logDropped(peer string, sent bool) {
	s.stats.dropped.Add(1)
	// A client that sent nothing at all is most likely a port probe.
	level, msg := slog.LevelWarn, "dovecot policy: connection closed without a valid request (malformed, oversized or stalled)"
	if !sent {
		level, msg = slog.LevelInfo, "dovecot policy: connection closed without sending anything"
	}
	if ok, dropped := s.logLim.allow(s.now()); ok {
		a := []slog.Attr{slog.String("source", Source), slog.String("peer", peer)}
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

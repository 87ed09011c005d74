package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"log/syslog"
	"strconv"
	"strings"
	"time"
)

// syslogSink writes one line per incident to the local syslog (facility
// auth, severity warning, tag mailwarden). When syslog cannot be reached
// it says so once, gives the lines up (counted) and tries again at most
// once a minute.
type syslogSink struct {
	log *slog.Logger
	now func() time.Time
	// network and addr are syslog.Dial's ("", "" is the local syslog).
	network, addr string

	w        *syslog.Writer // used by the syslog channel's worker only
	lastDial time.Time
	down     bool // unavailability already logged
}

var errNoSyslog = errors.New("syslog unavailable")

func (s *syslogSink) send(_ context.Context, j *job) error {
	if s.w == nil {
		now := s.now()
		if !s.lastDial.IsZero() && now.Sub(s.lastDial) < time.Minute {
			return &permanentError{err: errNoSyslog, quiet: true}
		}
		s.lastDial = now
		w, err := syslog.Dial(s.network, s.addr, syslog.LOG_AUTH|syslog.LOG_WARNING, "mailwarden")
		if err != nil {
			s.unavailable(err)
			return &permanentError{err: errNoSyslog, quiet: true}
		}
		if s.down {
			s.log.Info("syslog reachable again: incidents are written to it")
			s.down = false
		}
		s.w = w
	}
	if err := s.w.Warning(syslogLine(&j.n)); err != nil {
		s.w.Close()
		s.w = nil
		s.unavailable(err)
		return &permanentError{err: errNoSyslog, quiet: true}
	}
	return nil
}

func (s *syslogSink) unavailable(err error) {
	if !s.down {
		s.log.Warn("syslog unavailable: incidents are not written to it (counted as given up) until it is back", "err", err)
		s.down = true
	}
}

// close is called once the channel's worker has ended.
func (s *syslogSink) close() {
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
}

// syslogLine is "incident id=… detector=… action=… account="…" …": key=value
// fields, where the account and every free text are quoted with
// strconv.Quote, so nothing a client typed can end the line or forge a
// field.
func syslogLine(x *Notice) string {
	var b strings.Builder
	fmt.Fprintf(&b, "incident id=%d", x.ID)
	field := func(k, v string) {
		b.WriteString(" " + k + "=")
		b.WriteString(bareOrQuoted(v))
	}
	field("node", x.Node)
	field("detector", x.Detector)
	field("action", x.Action)
	fmt.Fprintf(&b, " dry_run=%t", x.DryRun)
	b.WriteString(" account=" + strconv.Quote(clip(x.Account, 256)))
	field("ip", x.IP)
	if !x.DetectedAt.IsZero() {
		field("detected_at", x.DetectedAt.UTC().Format(time.RFC3339))
	}
	if x.Summary != "" {
		b.WriteString(" summary=" + strconv.Quote(clip(x.Summary, 300)))
	}
	if len(x.Done) > 0 {
		b.WriteString(" done=" + strconv.Quote(clip(strings.Join(x.Done, "; "), 300)))
	}
	return b.String()
}

// bareOrQuoted writes tokens as they are and anything else quoted.
func bareOrQuoted(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:@/+-", r)) {
			return strconv.Quote(clip(s, 256))
		}
	}
	return clip(s, 256)
}

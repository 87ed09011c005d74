// Package exim turns the lines of Exim 4's main log into events: SMTP AUTH
// failures, accepted messages (authenticated account, client address, size,
// recipient count), refused recipients, other refusals and protocol abuse of a
// client, and client connects and disconnects.
//
// It reads Exim's own log format ("2024-11-04 09:11:01 [pid] msg", with or
// without the pid, with the classic 16-character message ids such as
// 1QexIu-0006dj-PX and the 23-character ids of Exim 4.97 and later such as
// 1rAbCd-00000000Xyz-abcd) and the same messages passed through syslog or the
// systemd journal ("host exim[pid]: msg").
//
// An arrival line ("<=") that carries its recipients (log_selector
// +received_recipients: "... for a@b c@d") becomes a Message event at once.
// Without that list the event is held and the recipients are counted from
// the delivery lines of the same message id ("=>", "->", "*>", ">>", "**"
// bounces, "==" deferrals); it is emitted at the message's "Completed" line,
// when it has been held for HoldFor of log time, or at Flush.
//
// Not covered: the reject log and the panic log (their lines repeat the main
// log), the per-message logs in the spool directory, and the outcome of
// deliveries (a bounce counts as a recipient of the message, nothing more).
// Exim logs no line for a successful SMTP AUTH; the account of an
// authenticated client is taken from the A= field of its arrivals and
// rejections.
package exim

import (
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

const (
	// Source is the Event.Source of every event of this package.
	Source = "exim"
	// MaxHeld bounds the arrivals held for their recipient count; past it the
	// oldest is emitted with the recipients counted so far.
	MaxHeld = 65536
	// HoldFor is how long, in log time, an arrival waits for its "Completed"
	// line before it is emitted with the recipients counted so far.
	HoldFor = 5 * time.Minute
)

// Parser parses Exim main-log lines. It is stateful (arrivals wait for their
// delivery lines) and not safe for concurrent use. Create it with New.
type Parser struct {
	held    map[string]*pending // message id -> arrival waiting for its recipients
	order   []queued            // held ids, oldest first, from head on
	head    int
	seq     uint64
	tracked int        // recipient hashes kept over all held arrivals
	free    []*pending // recycled entries
}

var _ maillog.Parser = (*Parser)(nil)

// New returns a Parser with empty join tables.
func New() *Parser {
	return &Parser{held: make(map[string]*pending)}
}

// Owns reports whether a framed line belongs to Exim's log: syslog and
// journal lines of the programs exim, exim4 and exim4-daemon-*, and lines in
// Exim's own format (no host, no program). When such a message starts with
// a word ending in ':' ("Warning: ...", "1rAbCd-...-ab DKIM: ..."), the
// framer takes that word for a program (and a leading message id for a
// host); those lines are Exim's too unless the "program" is a Dovecot
// service, whose own log format looks the same.
func Owns(l *maillog.Line) bool {
	switch {
	case l.Program == "":
		return l.Host == ""
	case isEximProgram(l.Program):
		return true
	case l.Host == "" || isMessageID(l.Host):
		return !isDovecotService(l.Program)
	}
	return false
}

// isEximProgram reports whether a syslog tag is Exim's: "exim", "exim4",
// "exim4-daemon-heavy", ...
func isEximProgram(p string) bool {
	if !strings.HasPrefix(p, "exim") {
		return false
	}
	p = p[4:]
	return p == "" || p[0] == '-' || (p[0] >= '0' && p[0] <= '9')
}

// isDovecotService reports whether a framed program name is one that
// Dovecot's own log format puts after the timestamp.
func isDovecotService(p string) bool {
	name := p
	if i := strings.IndexByte(p, '('); i >= 0 {
		name = p[:i]
	}
	switch name {
	case "imap-login", "pop3-login", "managesieve-login", "submission-login",
		"auth", "auth-worker", "imap", "pop3", "managesieve", "submission",
		"lmtp", "master", "dovecot", "dovecot-auth", "config", "anvil", "log",
		"stats", "doveadm", "dict", "imap-hibernate", "imap-urlauth",
		"imap-urlauth-login", "replicator", "aggregator", "director":
		return true
	}
	return strings.HasPrefix(name, "indexer") || strings.HasPrefix(name, "quota") ||
		strings.HasPrefix(name, "dict-")
}

// ctx is what one line's handlers share.
type ctx struct {
	t    time.Time
	pid  string // Exim's process id, "" if not logged
	node string // syslog host, "" for Exim's own format
}

func (c *ctx) ev(k event.Kind) event.Event {
	return event.Event{Time: c.t, Kind: k, Protocol: event.SMTP, Node: c.node, Source: Source}
}

// Parse appends the events of l to dst. See the package comment for what is
// held across lines.
func (p *Parser) Parse(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	if p.head < len(p.order) && !l.Time.IsZero() {
		dst = p.expire(l.Time, dst)
	}
	msg, pid, node, ok := lineText(l)
	if !ok || msg == "" {
		return dst, maillog.Unknown
	}
	c := ctx{t: l.Time, pid: pid, node: node}
	if id, rest, ok := cutID(msg); ok {
		return p.messageLine(&c, id, rest, dst)
	}
	dst, res, _ := p.general(&c, msg, dst)
	return dst, res
}

// Flush appends every arrival still held, oldest first, and empties the join
// table.
func (p *Parser) Flush(dst []event.Event) []event.Event {
	for _, q := range p.order[p.head:] {
		if e := p.held[q.id]; e != nil && e.seq == q.seq && e.arrived {
			dst = append(dst, e.final())
		}
	}
	clear(p.held)
	clear(p.order)
	p.order, p.head, p.tracked = p.order[:0], 0, 0
	return dst
}

// lineText returns the Exim message of a framed line, the process id and the
// node, or false when the line is not Exim's.
func lineText(l *maillog.Line) (msg, pid, node string, ok bool) {
	switch {
	case l.Program == "":
		if l.Host != "" {
			return "", "", "", false
		}
		return l.Msg, l.PID, "", true
	case isEximProgram(l.Program):
		// Exim writes its own timestamp (syslog_timestamp) and "[pid]" into
		// syslog messages unless told not to.
		m := skipEximTime(l.Msg)
		pid = l.PID
		if len(m) > 2 && m[0] == '[' {
			if j := strings.IndexByte(m, ']'); j > 1 && j < 12 && allDigits(m[1:j]) {
				pid = m[1:j]
				m = strings.TrimPrefix(m[j+1:], " ")
			}
		}
		return m, pid, l.Host, true
	case l.Host == "" || isMessageID(l.Host):
		if isDovecotService(l.Program) {
			return "", "", "", false
		}
		// Exim's own format, split by the framer at a word ending in ':'.
		return l.Tail, "", "", true
	}
	return "", "", "", false
}

// skipEximTime removes a leading "YYYY-MM-DD HH:MM:SS[.fff][ +zzzz] ".
func skipEximTime(s string) string {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' ||
		!allDigits(s[:4]) || !allDigits(s[11:13]) {
		return s
	}
	i := 19
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	}
	if i+6 <= len(s) && s[i] == ' ' && (s[i+1] == '+' || s[i+1] == '-') && allDigits(s[i+2:i+6]) {
		i += 6
	}
	if i < len(s) && s[i] == ' ' {
		return s[i+1:]
	}
	return s
}

// messageLine handles a line that starts with a message id.
func (p *Parser) messageLine(c *ctx, id, rest string, dst []event.Event) ([]event.Event, maillog.Result) {
	if trimSpaces(rest) == "" {
		return dst, maillog.Unknown // truncated
	}
	if len(rest) >= 2 && isDeliveryFlag(rest[:2]) {
		if len(rest) < 4 || rest[2] != ' ' {
			return dst, maillog.Unknown // truncated
		}
		if rest[:2] == "<=" || rest[:2] == "(=" {
			return p.arrival(c, id, rest[3:], dst)
		}
		p.delivery(id, rest[:2], rest[3:], c.t)
		return dst, maillog.Ignored
	}
	if rest == "Completed" || strings.HasPrefix(rest, "Completed ") {
		return p.completed(id, dst)
	}
	dst, res, matched := p.general(c, rest, dst)
	if !matched {
		// Any other line about a message: Frozen, Message is frozen, DKIM:,
		// SMTP error from remote mail server, removed by, Spool file is
		// locked, retry time not reached, ...
		return dst, maillog.Ignored
	}
	return dst, res
}

// isDeliveryFlag reports whether f is one of Exim's per-message flags:
// "<=" arrival, "(=" arrival with fakereject, "=>" delivery, "->" further
// address of the same delivery, "*>" suppressed delivery, ">>" cutthrough
// delivery, "**" failure (bounce), "==" deferral.
func isDeliveryFlag(f string) bool {
	switch f {
	case "<=", "(=", "=>", "->", "*>", ">>", "**", "==":
		return true
	}
	return false
}

// general handles every line shape that is not a delivery-flag or Completed
// line. matched is false when the shape is not one it knows.
func (p *Parser) general(c *ctx, m string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	if m == "" {
		return dst, maillog.Unknown, false
	}
	switch m[0] {
	case 'H', 'D':
		if strings.HasPrefix(m, "H=") {
			return p.hostLine(c, m[2:], dst)
		}
		if strings.HasPrefix(m, "DS H=") {
			return p.hostLine(c, m[5:], dst)
		}
	case 'S':
		switch {
		case strings.HasPrefix(m, "SMTP connection "):
			return p.connection(c, m[len("SMTP connection "):], dst)
		case strings.HasPrefix(m, "SMTP call from "):
			return p.refusalAt(c, m[len("SMTP call from "):], dst)
		case strings.HasPrefix(m, "SMTP protocol error in \""), strings.HasPrefix(m, "SMTP syntax error in \""):
			return p.protocolError(c, m, dst)
		case strings.HasPrefix(m, "SMTP protocol synchronization error ("):
			return p.syncError(c, m, dst)
		case strings.HasPrefix(m, "SMTP command timeout on "), strings.HasPrefix(m, "SMTP data timeout "):
			if i := strings.Index(m, "connection from "); i >= 0 {
				return p.disconnectAt(c, m[i+len("connection from "):], dst)
			}
			return dst, maillog.Unknown, true
		case strings.HasPrefix(m, "Start queue run"), strings.HasPrefix(m, "SIGHUP received"),
			strings.HasPrefix(m, "Spool file is locked"):
			return dst, maillog.Ignored, true
		}
	case 'n':
		switch {
		case strings.HasPrefix(m, "no MAIL in SMTP connection from "):
			return p.refusalAt(c, m[len("no MAIL in SMTP connection from "):], dst)
		case strings.HasPrefix(m, "no host name found for IP address "):
			return p.refusalIP(c, m[len("no host name found for IP address "):], dst)
		case strings.HasPrefix(m, "no IP address found for host "):
			if i := strings.Index(m, " (during SMTP connection from "); i >= 0 {
				return p.refusalAt(c, m[i+len(" (during SMTP connection from "):], dst)
			}
			return dst, maillog.Unknown, true
		}
	case 'r', 't':
		switch {
		case strings.HasPrefix(m, "rejected "):
			return p.rejectedCommand(c, m[len("rejected "):], dst)
		case strings.HasPrefix(m, "temporarily rejected "):
			return p.rejectedCommand(c, m[len("temporarily rejected "):], dst)
		case strings.HasPrefix(m, "too many recipients"):
			return p.refusalAfter(c, m, "> H=", event.Reject, dst)
		}
	case 'u':
		switch {
		case strings.HasPrefix(m, "unqualified sender rejected: "):
			return p.refusalAfter(c, m, "> H=", event.Reject, dst)
		case strings.HasPrefix(m, "unqualified recipient rejected: "):
			return p.refusalAfter(c, m, "> H=", event.RcptRejected, dst)
		case strings.HasPrefix(m, "unexpected disconnection while reading SMTP command from "):
			return p.disconnectAt(c, m[len("unexpected disconnection while reading SMTP command from "):], dst)
		}
	case 'F':
		// local_scan() rejections: "F=<sender> H=... P=esmtp [temporarily ]
		// rejected by local_scan(): ...".
		if strings.HasPrefix(m, "F=") {
			if _, rest := nextToken(m); strings.HasPrefix(rest, " H=") {
				return p.hostLine(c, rest[3:], dst)
			}
		}
	case 'C':
		if strings.HasPrefix(m, "Connection from ") {
			return p.daemonRefusal(c, m[len("Connection from "):], dst)
		}
	case 'E':
		if strings.HasPrefix(m, "End queue run") {
			return dst, maillog.Ignored, true
		}
	case 'e':
		if strings.HasPrefix(m, "exim ") && strings.Contains(m, " daemon started") {
			return dst, maillog.Ignored, true
		}
	case 'i':
		if strings.HasPrefix(m, "ignoring AUTH=") {
			return dst, maillog.Ignored, true
		}
	case 'T':
		if strings.HasPrefix(m, "TLS error on connection from ") {
			return dst, maillog.Ignored, true
		}
	case 'W':
		if strings.HasPrefix(m, "Warning: ") {
			return dst, maillog.Ignored, true
		}
	case 'c':
		if strings.HasPrefix(m, "cwd=") {
			return dst, maillog.Ignored, true
		}
	}
	// "<authenticator> authenticator failed ...": the authenticator's name
	// is one word.
	if sp := strings.IndexByte(m, ' '); sp > 0 && strings.HasPrefix(m[sp:], " authenticator failed") {
		return p.authFailed(c, m[sp+len(" authenticator failed"):], dst)
	}
	return dst, maillog.Unknown, false
}

// failure appends a refusal event of kind k for the client h.
func (c *ctx) failure(k event.Kind, h host, t tags, dst []event.Event) []event.Event {
	e := c.ev(k)
	e.IP = h.ip
	e.Session = session(h, t.ci, c.pid, false)
	e.Account = event.NormalizeAccount(authID(t.auth))
	return append(dst, e)
}

// session picks the string that identifies the client connection: the
// client's "[ip]:port" when the port is logged (+incoming_port; the same in
// every line of the connection, whichever process logs it), else the
// connection id (Ci=, the handling process's id), else the line's pid. The
// "SMTP connection from" line is logged by the daemon before it forks, so
// its pid is not the connection's: connect lines pass connect = true.
func session(h host, ci, pid string, connect bool) string {
	switch {
	case h.conn != "":
		return h.conn
	case ci != "":
		return ci
	case !connect:
		return pid
	}
	return ""
}

// authID returns the authenticated id of an A= field value
// "authenticator:id" or "authenticator:id:authenticated_sender"
// (+smtp_mailauth); "" for "authenticator" alone.
func authID(a string) string {
	i := strings.IndexByte(a, ':')
	if i < 0 {
		return ""
	}
	a = a[i+1:]
	if j := strings.IndexByte(a, ':'); j >= 0 {
		a = a[:j]
	}
	return a
}

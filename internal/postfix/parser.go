// Package postfix turns Postfix log lines (already framed by maillog) into
// events: SMTP sessions of smtpd, SASL successes and failures, accepted
// messages with their size and recipient count, and refusals of clients by
// smtpd, postscreen and cleanup.
//
// It understands the log of Postfix 2.x to 3.9, including multi-instance
// and per-service syslog names ("postfix-out/submission/smtpd"), client
// port logging ("name[addr]:port"), long queue ids and the
// ", sasl_username=…" suffix of SASL failures (3.7.8+, 3.9). Messages are
// joined by queue id: smtpd's "QID: client=…" line gives the client and the
// SASL account, qmgr's "QID: from=<…>, size=N, nrcpt=M (queue active)" the
// size and recipient count; the Message event is emitted at the qmgr line.
// smtpd sessions are tracked by process id.
//
// It does not follow delivery (smtp, lmtp, local, virtual, pipe lines are
// recognised and ignored), bounces, or the policy-delegation protocol (a
// source of its own), and it does not read files: the caller frames lines
// and feeds them in log order.
package postfix

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Source is the Event.Source of every event of this package.
const Source = "postfix"

// MaxEntries bounds each join table (smtpd processes, queued messages).
const MaxEntries = 65536

// Parser parses one Postfix log stream. It is not safe for concurrent use.
type Parser struct {
	sessions *table[sessKey, *session]
	queue    *table[queueKey, pending]
	names    map[string]string // interned host and program names
	buf      []byte
}

type sessKey struct{ node, prog, pid string }

// session is the state of one smtpd (or qmqpd) process: its current client
// connection, if any.
type session struct {
	n          int // connections seen on this process
	active     bool
	id         string
	ip         netip.Addr
	account    string // SASL account that submitted mail in this connection
	authLogged int    // SASL failure lines logged in this connection
}

type queueKey struct{ node, qid string }

// pending is a queued message waiting for its qmgr line.
type pending struct {
	ip      netip.Addr
	account string
	session string
	local   bool // submitted by pickup (sendmail), not over SMTP
}

// New returns a Parser with empty join tables.
func New() *Parser {
	return &Parser{
		sessions: newTable[sessKey, *session](MaxEntries),
		queue:    newTable[queueKey, pending](MaxEntries),
		names:    make(map[string]string),
	}
}

// Owns reports whether l was logged by Postfix: its program starts with
// "postfix" ("postfix/smtpd", "postfix-out/submission/smtpd").
func Owns(l *maillog.Line) bool { return strings.HasPrefix(l.Program, "postfix") }

// Parse appends the events of l to dst.
func (p *Parser) Parse(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	if !Owns(l) || l.Msg == "" {
		return dst, maillog.Unknown
	}
	if hasAnyPrefix(l.Msg, "fatal: ", "panic: ", "error: ") {
		return dst, maillog.Ignored
	}
	switch daemon(l.Program) {
	case "smtpd", "qmqpd":
		return p.smtpd(l, dst)
	case "postscreen":
		return p.postscreen(l, dst)
	case "qmgr", "nqmgr", "oqmgr":
		return p.qmgr(l, dst)
	case "pickup":
		return p.pickup(l, dst)
	case "cleanup":
		return p.cleanup(l, dst)
	case "smtp", "lmtp", "local", "virtual", "pipe", "error", "discard", "retry":
		return dst, delivery(l.Msg)
	case "bounce", "defer", "trace":
		return dst, bounce(l.Msg)
	case "postsuper":
		return p.postsuper(l, dst)
	case "master", "anvil", "scache", "tlsmgr", "tlsproxy", "dnsblog", "verify",
		"proxymap", "proxywrite", "trivial-rewrite", "flush", "showq", "spawn",
		"postfix", "postfix-script", "postlog", "postlogd", "postdrop", "sendmail",
		"postqueue", "postmap", "postalias", "postconf", "postmulti", "postkick":
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// Flush returns dst unchanged: the parser holds no events, only join state.
// A queue id seen at "client=" whose qmgr line never came is not a message.
func (p *Parser) Flush(dst []event.Event) []event.Event { return dst }

// daemon returns the last component of a syslog name:
// "postfix-out/submission/smtpd" → "smtpd".
func daemon(prog string) string {
	if i := strings.LastIndexByte(prog, '/'); i >= 0 {
		return prog[i+1:]
	}
	return prog
}

func (p *Parser) event(l *maillog.Line, k event.Kind, ip netip.Addr) event.Event {
	return event.Event{Time: l.Time, Kind: k, IP: ip, Protocol: event.SMTP, Node: l.Host, Source: Source}
}

// intern returns a long-lived copy of a host or program name, so that
// table keys do not pin whole log lines in memory.
func (p *Parser) intern(s string) string {
	if v, ok := p.names[s]; ok {
		return v
	}
	v := strings.Clone(s)
	if len(p.names) < 4096 {
		p.names[v] = v
	}
	return v
}

// session returns the smtpd connection of l's process. A new connection
// starts when start is set ("connect from"), when the process has none (the
// log began mid-session or its "connect from" was lost) or when the client
// address differs from the connection's. It returns nil for a line without
// a pid.
func (p *Parser) session(l *maillog.Line, ip netip.Addr, start bool) *session {
	if l.PID == "" {
		return nil
	}
	s, ok := p.sessions.get(sessKey{l.Host, l.Program, l.PID})
	if !ok {
		s = &session{}
		p.sessions.put(sessKey{p.intern(l.Host), p.intern(l.Program), strings.Clone(l.PID)}, s)
	}
	if start || !s.active || (ip.IsValid() && s.ip.IsValid() && ip != s.ip) {
		s.n++
		s.active = true
		s.ip = ip
		s.account = ""
		s.authLogged = 0
		p.buf = append(p.buf[:0], l.Program...)
		p.buf = append(p.buf, '[')
		p.buf = append(p.buf, l.PID...)
		p.buf = append(p.buf, "]#"...)
		p.buf = strconv.AppendInt(p.buf, int64(s.n), 10)
		s.id = string(p.buf)
	}
	if !s.ip.IsValid() {
		s.ip = ip
	}
	return s
}

// refusal builds a failure event of kind k for a line of an smtpd
// connection (s may be nil), carrying the connection's account.
func (p *Parser) refusal(l *maillog.Line, k event.Kind, ip netip.Addr, s *session) event.Event {
	e := p.event(l, k, ip)
	if s != nil {
		e.Session = s.id
		e.Account = s.account
	}
	return e
}

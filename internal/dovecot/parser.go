// Package dovecot turns Dovecot log lines into events: logins and login
// failures of the pre-login processes (imap-login, pop3-login,
// submission-login, managesieve-login), password failures of the auth
// processes (auth, auth-worker, passdb drivers such as passwd-file, sql,
// ldap, pam) and the PAM syslog line "pam_unix(dovecot:auth): authentication
// failure", for Dovecot 1.x to 2.4 and for both syslog and Dovecot's own
// log_path format.
//
// It does not cover the post-login mail processes (imap, pop3, lmtp,
// submission relaying, deliveries): their lines are known and Ignored, as
// are the master, config, stats and similar service lines. Dovecot's auth
// policy requests (the in-band source) are handled elsewhere.
//
// One failed attempt is often logged twice: once by the auth process
// ("Password mismatch") and once by the login process when the client goes
// away ("auth failed, 3 attempts in 12 secs"). The parser keeps a bounded
// table of the auth failures it emitted per session and per IP+account for
// five minutes of log time and emits only the attempts the login line adds.
// Log references: Dovecot's src/login-common/client-common.c
// (client_get_extra_disconnect_reason) and src/auth/auth-request.c.
package dovecot

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Source is the Event.Source of every event of this package.
const Source = "dovecot"

// Parser parses Dovecot log lines. It is not safe for concurrent use.
type Parser struct {
	recent recent
}

// New returns a Parser.
func New() *Parser {
	return &Parser{recent: newRecent(defaultRecentMax)}
}

var _ maillog.Parser = (*Parser)(nil)

// process kinds.
type procKind uint8

const (
	procNone  procKind = iota
	procLogin          // imap-login, pop3-login, ...
	procAuth           // auth, auth-worker, dovecot-auth
	procOther          // mail processes and services: known, nothing to detect
)

// baseKind returns the kind of a process base name.
func baseKind(base string) procKind {
	switch base {
	case "imap-login", "pop3-login", "submission-login", "managesieve-login", "imap-urlauth-login":
		return procLogin
	case "auth", "auth-worker", "dovecot-auth":
		return procAuth
	case "imap", "pop3", "lmtp", "submission", "managesieve", "lda", "deliver", "dovecot-lda",
		"doveadm", "doveadm-server", "indexer", "indexer-worker", "quota-status",
		"imap-urlauth", "imap-urlauth-worker", "imap-hibernate", "master", "config",
		"stats", "old-stats", "anvil", "log", "dict", "dict-async", "dict-expire",
		"replicator", "aggregator", "director", "ssl-params", "ssl-build-param",
		"dns-client", "health-check", "pop3c", "imapc", "script", "script-login",
		"IMAP", "POP3": // Dovecot 1.x mail processes
		return procOther
	}
	if len(base) > len("-login") && strings.HasSuffix(base, "-login") && isName(base) {
		return procLogin
	}
	return procNone
}

// kindOf returns the kind of a process name ("imap-login",
// "auth-worker(123)", "imap(joe)<1><sess>").
func kindOf(proc string) procKind { return baseKind(procBase(proc)) }

// procBase cuts a process prefix at its first '(' or '<'.
func procBase(proc string) string {
	for i := 0; i < len(proc); i++ {
		if proc[i] == '(' || proc[i] == '<' {
			return proc[:i]
		}
	}
	return proc
}

func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// levels Dovecot writes after the process prefix. Syslog lines carry all but
// "Info: " (syslog has its own priority); log_path lines carry all.
var levels = [...]string{"Info: ", "Warning: ", "Error: ", "Debug: ", "Fatal: ", "Panic: "}

func isLevelWord(s string) bool {
	switch s {
	case "Info", "Warning", "Error", "Debug", "Fatal", "Panic":
		return true
	}
	return false
}

// stripLevel removes a leading log level; leveled reports a level other
// than Info (a diagnostic line).
func stripLevel(msg string) (rest string, leveled bool) {
	if len(msg) < 6 || msg[0] < 'D' || msg[0] > 'W' {
		return msg, false
	}
	for i, lv := range levels {
		if strings.HasPrefix(msg, lv) {
			return msg[len(lv):], i > 0
		}
	}
	return msg, false
}

// Owns reports whether a framed line belongs to Dovecot's log: syslog
// programs "dovecot" and "dovecot-auth", Dovecot's own log_path lines (no
// host, the process name as program), syslog "auth" and "*-login" programs,
// and log_path lines whose event prefix the framer could not split
// ("auth(joe,1.2.3.4,sasl:plain)<sess>: Info: …").
func Owns(l *maillog.Line) bool {
	switch l.Program {
	case "dovecot", "dovecot-auth":
		return true
	case "":
		if l.Host != "" {
			return false
		}
		_, _, ok := cutProc(l.Msg)
		return ok
	}
	if isLevelWord(l.Program) {
		return strings.HasSuffix(l.Host, ":") && kindOf(l.Host[:len(l.Host)-1]) != procNone
	}
	k := kindOf(l.Program)
	if l.Host == "" {
		return k != procNone
	}
	return k == procLogin || k == procAuth
}

// split finds the Dovecot process prefix, the message after it and the
// node of a line. proc is "" for a "dovecot:" syslog line without one.
func split(l *maillog.Line) (proc, msg, node string, ok bool) {
	switch l.Program {
	case "dovecot", "dovecot-auth":
		msg = l.Msg
		if l.Program == "dovecot" {
			msg = strings.TrimPrefix(msg, "dovecot: ")
		}
		if p, rest, ok := cutProc(msg); ok {
			return p, rest, l.Host, true
		}
		if l.Program == "dovecot-auth" {
			return "dovecot-auth", msg, l.Host, true
		}
		return "", msg, l.Host, true
	case "":
		if l.Host != "" {
			return "", "", "", false
		}
		p, rest, ok := cutProc(l.Msg)
		return p, rest, "", ok
	}
	if isLevelWord(l.Program) {
		// The framer took "proc(…)<…>:" for a host and the level for the
		// program: Dovecot 2.4 event prefixes in log_path lines.
		if !strings.HasSuffix(l.Host, ":") {
			return "", "", "", false
		}
		p := l.Host[:len(l.Host)-1]
		if kindOf(p) == procNone {
			return "", "", "", false
		}
		return p, l.Msg, "", true
	}
	if kindOf(l.Program) == procNone {
		return "", "", "", false
	}
	return l.Program, l.Msg, l.Host, true
}

// cutProc splits "name: rest", "name(…): rest" or "name(…)<…>…: rest" where
// name is a Dovecot process.
func cutProc(s string) (proc, rest string, ok bool) {
	i := 0
	for i < len(s) {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c >= 'A' && c <= 'Z' {
			i++
			continue
		}
		break
	}
	if i < 2 || i >= len(s) {
		return "", "", false
	}
	switch s[i] {
	case ':':
		if i+1 < len(s) && s[i+1] != ' ' {
			return "", "", false
		}
		proc, rest = s[:i], s[min(i+2, len(s)):]
	case '(', '<':
		j := strings.Index(s[i:], ": ")
		if j < 0 {
			if !strings.HasSuffix(s, ":") {
				return "", "", false
			}
			j = len(s) - 1 - i
		}
		proc = s[:i+j]
		if c := proc[len(proc)-1]; c != ')' && c != '>' {
			return "", "", false
		}
		rest = s[min(i+j+2, len(s)):]
	default:
		return "", "", false
	}
	if kindOf(proc) == procNone {
		return "", "", false
	}
	return proc, rest, true
}

// Parse appends the events of one Dovecot line to dst.
func (p *Parser) Parse(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	// Dovecot sanitises what it logs: NUL bytes and invalid UTF-8 mean a
	// damaged line.
	if strings.IndexByte(l.Msg, 0) >= 0 || !utf8.ValidString(l.Msg) {
		return dst, maillog.Unknown
	}
	proc, msg, node, ok := split(l)
	if !ok {
		return dst, maillog.Unknown
	}
	msg, leveled := stripLevel(msg)
	if msg == "" {
		return dst, maillog.Unknown
	}
	if strings.HasPrefix(msg, "pam_") && strings.Contains(msg, "(dovecot:") {
		return p.pamSyslog(l, node, msg, dst)
	}
	switch kindOf(proc) {
	case procLogin:
		return p.login(l, proc, node, msg, leveled, dst)
	case procAuth:
		return p.auth(l, proc, node, msg, leveled, dst)
	case procOther:
		return dst, maillog.Ignored
	}
	// "dovecot:" without a process: Dovecot 1.x master lines.
	if leveled || strings.HasPrefix(msg, "Dovecot v") || strings.HasPrefix(msg, "Killed with signal") {
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// Flush appends held events; the parser holds none.
func (p *Parser) Flush(dst []event.Event) []event.Event { return dst }

// parseIP parses an address as Dovecot logs it: plain, "::ffff:a.b.c.d",
// rarely bracketed; a zone is dropped.
func parseIP(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// account normalises a logged user name; Dovecot writes "?" for "not yet
// known".
func account(s string) string {
	if s == "?" {
		return ""
	}
	return event.NormalizeAccount(s)
}

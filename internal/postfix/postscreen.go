package postfix

import (
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// postscreen parses a line of the postscreen(8) zombie blocker. Its failed
// tests (pregreet, hangup, DNSBL, command limits, pipelining, non-SMTP
// commands, bare newlines) and its rejects are Reject events; they carry no
// session, as one postscreen process serves every client.
func (p *Parser) postscreen(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	m := l.Msg
	switch {
	case strings.HasPrefix(m, "CONNECT from "):
		return dst, known(m[len("CONNECT from "):])
	case hasAnyPrefix(m, "PASS NEW ", "PASS OLD ", "DISCONNECT ", "DROP ", "UNPASS ",
		"SKIP ", "ENFORCE ", "UNFAIL ", "ALLOWLISTED ", "WHITELISTED ",
		"ALLOWLIST VETO ", "WHITELIST VETO "):
		i := strings.Index(m, " [")
		if i < 0 {
			return dst, maillog.Unknown
		}
		return dst, known(m[i+1:])
	case hasAnyPrefix(m, "DENYLISTED ", "BLACKLISTED "):
		return p.screened(l, m[strings.IndexByte(m, ' ')+1:], dst)
	case strings.HasPrefix(m, "DNSBL rank "):
		i := strings.Index(m, " for ")
		if i < 0 {
			return dst, maillog.Unknown
		}
		return p.screened(l, m[i+len(" for "):], dst)
	case hasAnyPrefix(m, "PREGREET ", "HANGUP ", "COMMAND ", "NON-SMTP COMMAND ",
		"BARE NEWLINE ", "DATA without valid RCPT ", "BDAT without valid RCPT "):
		i := strings.Index(m, " from ")
		if i < 0 {
			return dst, maillog.Unknown
		}
		return p.screened(l, m[i+len(" from "):], dst)
	case strings.HasPrefix(m, "NOQUEUE: reject: "):
		_, ip, reply, ok := parseReject(m[len("NOQUEUE: reject: "):])
		if !ok {
			return dst, maillog.Unknown
		}
		if strings.HasPrefix(reply, "all server ports busy") || serverFault(reply) {
			return dst, maillog.Ignored
		}
		return append(dst, p.event(l, event.Reject, ip)), maillog.Parsed
	case hasAnyPrefix(m, "warning: ", "entering STRESS mode", "leaving STRESS mode",
		"cache ", "reject: connect from ", "table "):
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// screened appends a Reject for the client at the start of s.
func (p *Parser) screened(l *maillog.Line, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	ip, _, ok := client(s)
	if !ok {
		return dst, maillog.Unknown
	}
	return append(dst, p.event(l, event.Reject, ip)), maillog.Parsed
}

// known returns Ignored when s starts with a well-formed client, Unknown
// otherwise (a truncated line).
func known(s string) maillog.Result {
	if _, _, ok := client(s); ok {
		return maillog.Ignored
	}
	return maillog.Unknown
}

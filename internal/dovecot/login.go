package dovecot

import (
	"net/netip"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Lines of the pre-login processes have the shape
//
//	<reason>[ (<human reason>)][ (<event_reason>)]: user=<…>, method=…, rip=…, lip=…, mpid=…, TLS, session=<…>
//
// where the fields follow login_log_format_elements (user, method, mpid and
// session may be missing; user is what the client sent). Successful logins
// have the reason "Login"; Dovecot 2.3 proxies log
// "proxy(joe): started proxying to host:port".

// loginFields are the fields of a login-process line.
type loginFields struct {
	user    string
	method  bool
	ip      netip.Addr
	session string
}

// fieldsStart returns the index of the ": " that ends the reason.
func fieldsStart(msg string) int {
	if i := strings.Index(msg, ": user=<"); i >= 0 {
		return i
	}
	if i := strings.Index(msg, ": method="); i >= 0 {
		return i
	}
	return strings.Index(msg, ": rip=")
}

// parseFields reads the login fields. The user name is the client's input,
// so the real rip is the last one that starts a field, and the user is
// whatever lies between "user=<" and the '>' before method/rip.
func parseFields(f string) (lf loginFields, ok bool) {
	j := -1
	if strings.HasPrefix(f, "rip=") {
		j = 0
	}
	for off := 0; ; {
		k := strings.Index(f[off:], ", rip=")
		if k < 0 {
			break
		}
		j = off + k + 2
		off = j
	}
	if j < 0 {
		return lf, false
	}
	v := f[j+4:]
	if k := strings.IndexByte(v, ','); k >= 0 {
		v = v[:k]
	}
	if lf.ip, ok = parseIP(v); !ok {
		return lf, false
	}
	head := strings.TrimSuffix(f[:j], ", ")
	if k := strings.LastIndex(head, ", method="); k >= 0 && strings.IndexByte(head[k+9:], ' ') < 0 {
		lf.method, head = true, head[:k]
	} else if strings.HasPrefix(head, "method=") {
		lf.method, head = true, ""
	}
	if len(head) >= 7 && strings.HasPrefix(head, "user=<") && head[len(head)-1] == '>' {
		lf.user = head[6 : len(head)-1]
	}
	if k := strings.Index(f[j:], "session=<"); k >= 0 {
		s := f[j+k+9:]
		if e := strings.IndexByte(s, '>'); e > 0 {
			lf.session = s[:e]
		}
	}
	return lf, true
}

// reasonGroups splits "<text> (<human>) (<event_reason>)" into the human
// reason and the 2.4 event reason ("auth_failed"); either may be "".
func reasonGroups(r string) (human, ev string) {
	r = strings.TrimRight(r, " ")
	g, r := lastGroup(r)
	if g == "" {
		return "", ""
	}
	if isEventReason(g) {
		ev = g
		g, _ = lastGroup(r)
		return g, ev
	}
	return g, ""
}

// lastGroup returns the content of a trailing "(…)" and the text before it.
func lastGroup(r string) (group, before string) {
	if len(r) < 2 || r[len(r)-1] != ')' {
		return "", r
	}
	k := strings.LastIndexByte(r, '(')
	if k < 0 {
		return "", r
	}
	return r[k+1 : len(r)-1], strings.TrimRight(r[:k], " ")
}

func isEventReason(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// attempts reads "N attempts" or "K/N successful auths" (N−K failed) from a
// human reason; 1 when it says nothing.
func attempts(h string) int {
	if i := strings.Index(h, " attempts"); i > 0 {
		if n, ok := numBefore(h[:i]); ok {
			return n
		}
	}
	if i := strings.Index(h, " successful auths"); i > 0 {
		s := h[:i]
		if j := strings.LastIndexByte(s, '/'); j > 0 {
			tot, ok1 := numBefore(s[j+1:])
			ok, ok2 := numBefore(s[:j])
			if ok1 && ok2 && tot > ok {
				return tot - ok
			}
		}
	}
	return 1
}

// numBefore parses the decimal number at the end of s.
func numBefore(s string) (int, bool) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) || len(s)-i > 6 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s[i:]) {
		n = n*10 + int(c-'0')
	}
	return n, true
}

// verdicts of a login-process disconnect.
type verdict uint8

const (
	vIgnore verdict = iota
	vFail
	vReject
)

// classify maps the human reason of an unsuccessful login to a verdict.
// reason is the whole text before the fields, fields the rest.
func classify(human, reason, fields string, lf *loginFields) verdict {
	switch {
	case human == "":
		// Dovecot 1.x: "Aborted login: user=<x>, method=PLAIN, rip=…"
		// after a failed authentication.
		if reason == "Aborted login" && lf.method && lf.user != "" {
			return vFail
		}
		return vIgnore
	case strings.HasPrefix(human, "auth failed"),
		strings.HasPrefix(human, "authorization failed"),
		strings.HasPrefix(human, "user disabled"),
		strings.HasPrefix(human, "password expired"),
		strings.HasPrefix(human, "proxy dest auth failed"),            // 2.3
		strings.HasPrefix(human, "proxy dest authentication failure"): // 2.4
		return vFail
	case strings.HasPrefix(human, "tried to use dis"), // disabled/disallowed plaintext/cleartext/… auth
		strings.HasPrefix(human, "tried to use unsupported auth mechanism"),
		strings.HasPrefix(human, "sent invalid base64 in response"),
		strings.HasPrefix(human, "anonymous logins disabled"),
		strings.HasPrefix(human, "login disabled"),
		strings.HasPrefix(human, "client didn't finish SASL auth"),
		strings.HasPrefix(human, "disconnected before auth was ready"),
		strings.HasPrefix(human, "disconnected during TLS handshake"),
		strings.HasPrefix(human, "disconnected while authenticating"):
		return vReject
	case strings.HasPrefix(human, "no auth attempts"):
		// A client that connects and leaves without logging in is normal
		// (idle timeouts, capability probes); it is a refusal only when
		// it also broke the protocol: a failed or unfinished TLS
		// handshake, a reset connection, invalid commands.
		if strings.Contains(fields, "TLS handshaking") ||
			strings.Contains(reason, "Connection reset by peer") ||
			strings.Contains(reason, "Too many invalid commands") ||
			strings.Contains(reason, "SSL_accept()") {
			return vReject
		}
	}
	return vIgnore
}

// login handles a line of a pre-login process.
func (p *Parser) login(l *maillog.Line, proc, node, msg string, leveled bool, dst []event.Event) ([]event.Event, maillog.Result) {
	if leveled {
		// Warnings and errors of the login process (TLS setup, auth
		// process trouble, proxy errors) are the server's business.
		return dst, maillog.Ignored
	}
	i := fieldsStart(msg)
	if i < 0 {
		// Proxy progress lines.
		if strings.HasPrefix(msg, "proxy(") {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	reason, fields := msg[:i], msg[i+2:]
	lf, ok := parseFields(fields)
	if !ok {
		return dst, maillog.Unknown
	}
	ev := event.Event{
		Time:     l.Time,
		Account:  account(lf.user),
		IP:       lf.ip,
		Protocol: event.ParseProtocol(procBase(proc)),
		Session:  lf.session,
		Node:     node,
		Source:   Source,
	}
	if reason == "Login" || strings.HasPrefix(reason, "proxy(") && strings.Contains(reason, "started proxying to") {
		ev.Kind = event.AuthOK
		p.recent.forget(lf.session, lf.ip, ev.Account)
		return append(dst, ev), maillog.Parsed
	}
	human, _ := reasonGroups(reason)
	switch classify(human, reason, fields, &lf) {
	case vFail:
		n := attempts(human)
		n -= p.recent.take(lf.session, lf.ip, ev.Account, n, l.Time)
		if n <= 0 {
			return dst, maillog.Parsed
		}
		ev.Kind, ev.Count = event.AuthFail, n
		return append(dst, ev), maillog.Parsed
	case vReject:
		ev.Kind = event.Reject
		return append(dst, ev), maillog.Parsed
	}
	return dst, maillog.Ignored
}

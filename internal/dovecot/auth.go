package dovecot

import (
	"net/netip"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Auth process lines name the request in a tuple:
//
//	2.3: auth: passwd-file(joe@x,1.2.3.4,<session>): Password mismatch
//	     auth-worker(304): pam(joe,1.2.3.4): pam_authenticate() failed: …
//	     auth-worker(80180): conn unix:auth-worker (uid=143): auth-worker<13247>: sql(joe,1.2.3.4): unknown user
//	2.4: auth(joe@x,1.2.3.4,sasl:plain)<session>: sql: Password mismatch
//	     auth-worker(joe,1.2.3.4,sasl:plain)<pid><session>: request [3]: pam: …
//
// The tuple is read from the right (user names may hold commas).

// failure markers, each after ": ".
const (
	mUnknownUser   = "unknown user"
	mMismatch      = "password mismatch"
	mInvalidCreds  = "invalid credentials"
	mPamFailed     = "pam_authenticate() failed: "
	mCheckpassword = "Login failed (status=" // a checkpassword script refused
)

// pam_authenticate() results that mean the client gave a wrong name or
// password (the others are system errors).
var pamFailures = [...]string{
	"Authentication failure",
	"User not known to the underlying authentication module",
	"Permission denied",
}

// authMarker finds the first failure marker. pos is the index of the ": "
// before it; fail is false for a pam_authenticate() system error.
func authMarker(msg string) (pos int, pam, fail bool) {
	off := 0
	for {
		k := strings.Index(msg[off:], ": ")
		if k < 0 {
			return -1, false, false
		}
		pos = off + k
		rest := msg[pos+2:]
		if len(rest) > 0 {
			switch rest[0] {
			case 'u', 'U':
				if wordAt(rest, mUnknownUser) {
					return pos, false, true
				}
			case 'p', 'P':
				if wordAt(rest, mMismatch) {
					return pos, false, true
				}
				if strings.HasPrefix(rest, mPamFailed) {
					r := rest[len(mPamFailed):]
					for _, f := range pamFailures {
						if strings.HasPrefix(r, f) {
							return pos, true, true
						}
					}
					return pos, true, false
				}
			case 'i', 'I':
				if wordAt(rest, mInvalidCreds) {
					return pos, false, true
				}
			case 'L':
				if strings.HasPrefix(rest, mCheckpassword) {
					return pos, false, true
				}
			}
		}
		off = pos + 2
	}
}

// wordAt reports whether s starts with w (first letter in either case)
// followed by the end, a space or a colon.
func wordAt(s, w string) bool {
	if len(s) < len(w) || s[0]|0x20 != w[0] || s[1:len(w)] != w[1:] {
		return false
	}
	return len(s) == len(w) || s[len(w)] == ' ' || s[len(w)] == ':'
}

// parseTuple reads "user,ip[,<session>]" (2.3) or
// "user[,ip][,sasl:mech][,master]" (2.4). ok is false for a tuple without a
// comma ("auth-worker(304)", "auth(default)").
func parseTuple(t string) (user string, ip netip.Addr, session string, ok bool) {
	if strings.IndexByte(t, ',') < 0 {
		return "", ip, "", false
	}
	for range 4 {
		k := strings.LastIndexByte(t, ',')
		if k < 0 {
			break
		}
		last := t[k+1:]
		switch {
		case last == "", last == "master", strings.HasPrefix(last, "sasl:"):
		case len(last) >= 2 && last[0] == '<' && last[len(last)-1] == '>':
			session = last[1 : len(last)-1]
		default:
			if a, good := parseIP(last); good {
				ip, t = a, t[:k]
			}
			return t, ip, session, true
		}
		t = t[:k]
	}
	return t, ip, session, true
}

// lastAngle returns the content of the last "<…>" group of s that is not a
// pid.
func lastAngle(s string) string {
	for len(s) > 2 && s[len(s)-1] == '>' {
		k := strings.LastIndexByte(s, '<')
		if k < 0 {
			return ""
		}
		v := s[k+1 : len(s)-1]
		if !allDigits(v) {
			return v
		}
		s = s[:k]
	}
	return ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// authKnown reports whether msg has the shape of an auth process's
// informational line: a request tuple ("passwd-file(joe,1.2.3.4): …"), the
// 2.3 worker connection prefix, or a 2.4 request prefix.
func authKnown(proc, msg string) bool {
	i := 0
	for i < len(msg) && (msg[i] >= 'a' && msg[i] <= 'z' || msg[i] == '-' || msg[i] == '_' || msg[i] >= '0' && msg[i] <= '9') {
		i++
	}
	switch {
	case i > 0 && i < len(msg) && msg[i] == '(':
		return strings.Contains(msg[i:], "): ")
	case strings.HasPrefix(msg, "conn "):
		return strings.Contains(msg, "): ")
	case strings.IndexByte(proc, ',') > 0:
		return strings.Contains(msg, ": ")
	}
	return false
}

// auth handles a line of an auth process.
func (p *Parser) auth(l *maillog.Line, proc, node, msg string, leveled bool, dst []event.Event) ([]event.Event, maillog.Result) {
	if leveled {
		// Failures are logged at info level; debug lines repeat lookups,
		// errors are about the server's own backends ("LDAP: binding
		// failed …: Invalid credentials" is Dovecot's bind DN).
		return dst, maillog.Ignored
	}
	pos, pam, fail := authMarker(msg)
	if pos < 0 {
		if authKnown(proc, msg) {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	if !fail {
		return dst, maillog.Ignored
	}
	var (
		user, sess string
		ip         netip.Addr
		ok         bool
	)
	if seg := msg[:pos]; strings.HasSuffix(seg, ")") {
		if k := strings.LastIndexByte(seg, '('); k >= 0 {
			user, ip, sess, ok = parseTuple(seg[k+1 : len(seg)-1])
		}
	}
	if !ok || !ip.IsValid() {
		if k := strings.IndexByte(proc, '('); k > 0 {
			if e := strings.LastIndexByte(proc, ')'); e > k {
				if u, a, s, good := parseTuple(proc[k+1 : e]); good {
					user, ip = u, a
					if sess = s; sess == "" {
						sess = lastAngle(proc[e+1:])
					}
				}
			}
		}
	}
	if !ip.IsValid() {
		// No client address: a userdb lookup or a local client.
		return dst, maillog.Ignored
	}
	acct := account(user)
	if pam && p.recent.pamSeen(ip, l.Time) {
		// The PAM module's own syslog line counted this attempt; it
		// carried no session, this line may.
		p.recent.addSession(sess, l.Time)
		return dst, maillog.Parsed
	}
	p.recent.add(sess, ip, acct, l.Time)
	return append(dst, event.Event{
		Time:    l.Time,
		Kind:    event.AuthFail,
		Account: acct,
		IP:      ip,
		Session: sess,
		Count:   1,
		Node:    node,
		Source:  Source,
	}), maillog.Parsed
}

// pamSyslog handles the PAM module's line, "pam_unix(dovecot:auth):
// authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=joe
// rhost=1.2.3.4  user=joe". ruser holds the name the client gave, so only a
// " rhost=" after a space is the real field.
func (p *Parser) pamSyslog(l *maillog.Line, node, msg string, dst []event.Event) ([]event.Event, maillog.Result) {
	i := strings.Index(msg, "): ")
	if i < 0 {
		return dst, maillog.Unknown
	}
	rest := msg[i+3:]
	if !strings.HasPrefix(rest, "authentication failure;") {
		return dst, maillog.Ignored // "check pass; user unknown", sessions
	}
	k := strings.Index(rest, " rhost=")
	if k < 0 {
		return dst, maillog.Unknown
	}
	v := rest[k+7:]
	if e := strings.IndexByte(v, ' '); e >= 0 {
		v = v[:e]
	}
	ip, ok := parseIP(v)
	if !ok {
		return dst, maillog.Ignored // local (empty rhost) or a host name
	}
	var user string
	if u := strings.Index(rest[k:], " user="); u >= 0 {
		user = rest[k+u+6:]
		if e := strings.IndexByte(user, ' '); e >= 0 {
			user = user[:e]
		}
	} else if r := strings.Index(rest, " ruser="); r >= 0 && r+7 <= k {
		user = rest[r+7 : k]
	}
	acct := account(user)
	p.recent.add("", ip, acct, l.Time)
	p.recent.markPam(ip, l.Time)
	return append(dst, event.Event{
		Time:    l.Time,
		Kind:    event.AuthFail,
		Account: acct,
		IP:      ip,
		Count:   1,
		Node:    node,
		Source:  Source,
	}), maillog.Parsed
}

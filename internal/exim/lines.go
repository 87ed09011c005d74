package exim

import (
	"net/netip"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// host is a client as Exim describes it: "name (helo) [ip]:port".
type host struct {
	ip   netip.Addr
	conn string // "[ip]:port" as logged, "" when the port is not logged
}

// maxHostScan bounds the search for the address in a host description.
const maxHostScan = 1024

// parseHost reads Exim's host description at the start of s:
// "[ip]", "name [ip]", "(helo) [ip]", "name (helo) [ip]", each optionally
// followed by ":port". The HELO name may itself hold brackets
// ("([192.168.2.33])"), so only a bracket outside parentheses is the
// address. It returns the rest of s after the address and port.
func parseHost(s string) (h host, rest string, ok bool) {
	depth, words := 0, 0
	n := min(len(s), maxHostScan)
	for i := 0; i < n; i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case ' ':
			if depth == 0 {
				if words++; words > 2 {
					return h, s, false
				}
			}
		case '[':
			if depth > 0 {
				continue
			}
			j := strings.IndexByte(s[i+1:], ']')
			if j < 0 {
				return h, s, false
			}
			ip, ok := parseIP(s[i+1 : i+1+j])
			if !ok {
				return h, s, false
			}
			h.ip = ip
			end := i + 2 + j
			if end < len(s) && s[end] == ':' {
				d := end + 1
				for d < len(s) && d-end <= 6 && isDigit(s[d]) {
					d++
				}
				if d > end+1 && d-end <= 6 {
					h.conn = s[i:d]
					end = d
				}
			}
			return h, s[end:], true
		}
	}
	return h, s, false
}

// parseIP parses an address as Exim logs it, dropping an IPv6 zone and
// unmapping "::ffff:a.b.c.d".
func parseIP(s string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.WithZone("").Unmap(), true
}

// tags holds the fields of interest among the "X=value" fields that follow
// a host description.
type tags struct {
	auth string // A=authenticator:id
	user string // U=ident (or login of a local caller)
	ci   string // Ci=connection id
}

// scanTags reads "X=value" fields (values may be quoted) from s and returns
// them and the text from the first word that is not a field.
func scanTags(s string) (t tags, rest string) {
	for {
		s = trimSpaces(s)
		eq := -1
		for i := 0; i < len(s) && i < 9; i++ {
			c := s[i]
			if c == '=' {
				eq = i
				break
			}
			if !isAlnum(c) {
				break
			}
		}
		if eq < 1 || !isLetter(s[0]) {
			return t, s
		}
		tok, next := nextToken(s)
		v := tok[eq+1:]
		switch s[:eq] {
		case "A":
			t.auth = v
		case "U":
			t.user = v
		case "Ci":
			t.ci = v
		}
		s = next
	}
}

// nextToken returns the first space-separated token of s (a double-quoted
// part, with backslash escapes, may hold spaces) and the rest after it.
func nextToken(s string) (tok, rest string) {
	s = trimSpaces(s)
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		i = len(s)
	}
	q := strings.IndexByte(s[:i], '"')
	if q < 0 {
		return s[:i], s[i:]
	}
	for i = q; i < len(s) && s[i] != ' '; {
		if s[i] == '"' {
			i = skipQuoted(s, i)
			continue
		}
		i++
	}
	return s[:i], s[i:]
}

// skipQuoted returns the index after the string quoted at s[i].
func skipQuoted(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(s)
}

func trimSpaces(s string) string {
	for len(s) > 0 && s[0] == ' ' {
		s = s[1:]
	}
	return s
}

// hostLine handles lines that start with "H=": ACL rejections
// ("H=... F=<a> [A=x:y] rejected RCPT <b>: ...", "... rejected after DATA"),
// sender verification failures, drops by an ACL, and (with a message id)
// errors of outgoing deliveries, whose host is the remote server.
func (p *Parser) hostLine(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	h, rest, ok := parseHost(s)
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, word := scanTags(rest)
	kind := event.KindUnknown
	switch {
	case strings.HasPrefix(word, "rejected RCPT "):
		kind = event.RcptRejected
	case strings.HasPrefix(word, "rejected "), strings.HasPrefix(word, "temporarily rejected "),
		strings.HasPrefix(word, "sender verify fail "), strings.HasPrefix(word, "dropped "):
		kind = event.Reject
	}
	if kind == event.KindUnknown {
		// incomplete transaction, sender verify defer, ACL warnings,
		// outgoing delivery errors, callouts: nothing about this client.
		return dst, maillog.Ignored, true
	}
	return c.failure(kind, h, t, dst), maillog.Parsed, true
}

// connection handles the lines after "SMTP connection ": the connect line
// "from [ip]:port I=... (TCP/IP connection count = 1)", the close lines
// "[Ci=N ]from ... [D=...] closed by QUIT" (or "closed by DROP in ACL", a
// refusal), "from ... lost ...", and "lost after final dot H=...".
func (p *Parser) connection(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	if strings.HasPrefix(s, "lost after final dot") {
		if i := strings.Index(s, " H="); i >= 0 {
			return p.disconnectAt(c, s[i+3:], dst)
		}
		return dst, maillog.Ignored, true
	}
	var ci string
	if strings.HasPrefix(s, "Ci=") {
		ci, s = nextToken(s[3:])
		s = trimSpaces(s)
	}
	if !strings.HasPrefix(s, "from ") {
		return dst, maillog.Unknown, true
	}
	h, rest, ok := parseHost(s[5:])
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, word := scanTags(rest)
	if t.ci == "" {
		t.ci = ci
	}
	switch {
	case strings.HasPrefix(word, "(TCP/IP connection count"):
		e := c.ev(event.Connect)
		e.IP = h.ip
		e.Session = session(h, t.ci, c.pid, true)
		return append(dst, e), maillog.Parsed, true
	case strings.HasPrefix(word, "closed by DROP in ACL"):
		dst = c.failure(event.Reject, h, t, dst)
		e := c.ev(event.Disconnect)
		e.IP, e.Session = h.ip, session(h, t.ci, c.pid, false)
		return append(dst, e), maillog.Parsed, true
	case strings.HasPrefix(word, "closed "), strings.HasPrefix(word, "lost"):
		e := c.ev(event.Disconnect)
		e.IP, e.Session = h.ip, session(h, t.ci, c.pid, false)
		return append(dst, e), maillog.Parsed, true
	case strings.Contains(word, "refused"):
		return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
	case word == "":
		return dst, maillog.Unknown, true // truncated
	}
	return dst, maillog.Ignored, true
}

// disconnectAt appends a Disconnect for the host description at s.
func (p *Parser) disconnectAt(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	h, rest, ok := parseHost(s)
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest)
	e := c.ev(event.Disconnect)
	e.IP, e.Session = h.ip, session(h, t.ci, c.pid, false)
	return append(dst, e), maillog.Parsed, true
}

// refusalAt appends a Reject for the host description at s: "SMTP call
// from ... dropped: too many ...", "no MAIL in SMTP connection from ...",
// "(during SMTP connection from ...)".
func (p *Parser) refusalAt(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	h, rest, ok := parseHost(s)
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest)
	return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
}

// refusalIP handles "no host name found for IP address <ip>".
func (p *Parser) refusalIP(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	ip, ok := parseIP(strings.TrimSpace(s))
	if !ok {
		return dst, maillog.Unknown, true
	}
	return c.failure(event.Reject, host{ip: ip}, tags{}, dst), maillog.Parsed, true
}

// refusalAfter appends a refusal of kind k for the host that follows the
// first sep in m ("unqualified sender rejected: <x> H=...").
func (p *Parser) refusalAfter(c *ctx, m, sep string, k event.Kind, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	i := strings.Index(m, sep)
	if i < 0 {
		if strings.Contains(m, " U=") {
			return dst, maillog.Ignored, true // local caller, no client address
		}
		return dst, maillog.Unknown, true
	}
	h, rest, ok := parseHost(m[i+len(sep):])
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest)
	return c.failure(k, h, t, dst), maillog.Parsed, true
}

// protocolError handles `SMTP protocol error in "<command>" H=... <reason>`
// and the same for "SMTP syntax error". The command is the client's text and
// is logged without escaping its quotes, so it can carry a fake `" H=...`:
// the last `" H=` of the line is taken (the reason after the real host is
// Exim's text; at most it names the requested AUTH mechanism, one word).
func (p *Parser) protocolError(c *ctx, m string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	i := strings.LastIndex(m, "\" H=")
	if i < 0 {
		if strings.Contains(m, "\" U=") {
			return dst, maillog.Ignored, true // local -bs caller, no client address
		}
		return dst, maillog.Unknown, true
	}
	h, rest, ok := parseHost(m[i+4:])
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest)
	return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
}

// syncError handles "SMTP protocol synchronization error (<why>): rejected
// connection from H=... input=..." and `... rejected "<command>" H=... next
// input=...`. Both the command and the input are the client's text; the host
// is the first one that is followed by the input field.
func (p *Parser) syncError(c *ctx, m string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	i := strings.Index(m, "): rejected ")
	if i < 0 {
		return dst, maillog.Unknown, true
	}
	s := m[i+len("): rejected "):]
	if strings.HasPrefix(s, "connection from ") {
		s = strings.TrimPrefix(s[len("connection from "):], "H=")
		return p.refusalAt(c, s, dst)
	}
	for tries := 0; tries < 8; tries++ {
		j := strings.Index(s, "\" H=")
		if j < 0 {
			break
		}
		s = s[j+4:]
		h, rest, ok := parseHost(s)
		if !ok {
			continue
		}
		t, word := scanTags(rest)
		if strings.HasPrefix(word, "next input=") || strings.HasPrefix(word, "input=") || word == "" {
			return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
		}
	}
	return dst, maillog.Unknown, true
}

// rejectedCommand handles lines that start with "[temporarily ]rejected ":
// "rejected EHLO from [ip]: syntactically invalid argument(s): ...",
// `rejected "EHLO name" from host [ip]` (HELO verification), "rejected MAIL
// from [ip]: no HELO/EHLO given", "rejected MAIL FROM:<a> H=...: message too
// big ...", "rejected MAIL command H=...: too many messages in one
// connection", "rejected XCLIENT from ...".
func (p *Parser) rejectedCommand(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	var at string
	switch {
	case strings.HasPrefix(s, "\""):
		if i := strings.LastIndex(s, "\" from "); i >= 0 {
			at = s[i+len("\" from "):]
		}
	default:
		if sp := strings.IndexByte(s, ' '); sp > 0 && strings.HasPrefix(s[sp:], " from ") {
			at = s[sp+len(" from "):]
		} else if i := strings.Index(s, " H="); i >= 0 {
			at = s[i+3:]
		}
	}
	if at == "" {
		return dst, maillog.Unknown, true
	}
	at = strings.TrimPrefix(at, "H=")
	h, rest, ok := parseHost(at)
	if !ok {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest)
	return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
}

// daemonRefusal handles the daemon's "Connection from [ip] refused: too many
// connections[ from that IP address]" and "... refused: load average = ...".
func (p *Parser) daemonRefusal(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	h, rest, ok := parseHost(s)
	if !ok {
		return dst, maillog.Unknown, true
	}
	if strings.Contains(rest, "refused") || strings.Contains(rest, "too many connections") {
		e := c.ev(event.Reject)
		e.IP, e.Session = h.ip, session(h, "", c.pid, true)
		return append(dst, e), maillog.Parsed, true
	}
	return dst, maillog.Ignored, true
}

// authFailed handles the rest of "<name> authenticator failed": " for
// (helo) [ip]:port I=[ip]:port Ci=N U=ident: 535 Incorrect authentication
// data (set_id=joe)", " for H=..." (Exim 4.98 and later log host_and_ident
// with its H= flag) and " H=... U=joe: ...". In the "for" forms U= is the RFC
// 1413 ident of the client, not a login; the account comes from set_id, or
// from U= in the untagged "failed H=" form. A trailing ": N Time(s)" (as
// summarising tools write it) sets Count.
func (p *Parser) authFailed(c *ctx, s string, dst []event.Event) ([]event.Event, maillog.Result, bool) {
	userForm := false
	switch {
	case strings.HasPrefix(s, " for H="):
		s = s[len(" for H="):]
	case strings.HasPrefix(s, " for "):
		s = s[len(" for "):]
	case strings.HasPrefix(s, " H="):
		s, userForm = s[len(" H="):], true
	default:
		return dst, maillog.Unknown, true
	}
	h, rest, ok := parseHost(s)
	if !ok {
		return dst, maillog.Unknown, true
	}
	i := strings.Index(rest, ": ")
	if i < 0 {
		return dst, maillog.Unknown, true
	}
	t, _ := scanTags(rest[:i])
	resp := rest[i+2:]
	if len(resp) < 3 || !allDigits(resp[:3]) {
		return dst, maillog.Unknown, true
	}
	switch {
	case resp[0] == '4':
		// 435: the server could not check (backend down, expansion error).
		return dst, maillog.Ignored, true
	case resp[0] != '5':
		return dst, maillog.Unknown, true
	case resp[:3] != "535":
		// 501 Invalid base64 data / Authentication cancelled, 553: the
		// client broke the exchange.
		return c.failure(event.Reject, h, t, dst), maillog.Parsed, true
	}
	count := 0
	if strings.HasSuffix(resp, " Time(s)") {
		r := resp[:len(resp)-len(" Time(s)")]
		if j := strings.LastIndex(r, ": "); j >= 0 {
			if n, ok := atoi(r[j+2:]); ok && n > 0 && n < 1<<31 {
				count = int(n)
			}
			resp = r[:j]
		}
	}
	account := ""
	if k := strings.Index(resp, "(set_id="); k >= 0 {
		v := resp[k+len("(set_id="):]
		if strings.HasSuffix(v, ")") {
			v = v[:len(v)-1]
		} else if j := strings.IndexByte(v, ')'); j >= 0 {
			v = v[:j]
		}
		account = v
	} else if userForm {
		account = t.user
	}
	e := c.ev(event.AuthFail)
	e.IP = h.ip
	e.Session = session(h, t.ci, c.pid, false)
	e.Account = event.NormalizeAccount(account)
	e.Count = count
	return append(dst, e), maillog.Parsed, true
}

// cutID splits a leading Exim message id from s.
func cutID(s string) (id, rest string, ok bool) {
	n := idLen(s)
	if n == 0 || len(s) <= n || s[n] != ' ' {
		return "", s, false
	}
	return s[:n], s[n+1:], true
}

// isMessageID reports whether s is exactly an Exim message id.
func isMessageID(s string) bool { n := idLen(s); return n > 0 && n == len(s) }

// idLen returns the length of the message id at the start of s: 16 for the
// classic form (6-6-2 base-62 digits) or 23 for Exim 4.97's (6-11-4), or 0.
func idLen(s string) int {
	if len(s) < 16 || s[6] != '-' || !base62(s[:6]) {
		return 0
	}
	if s[13] == '-' && base62(s[7:13]) && base62(s[14:16]) && (len(s) == 16 || !isAlnum(s[16])) {
		return 16
	}
	if len(s) >= 23 && s[18] == '-' && base62(s[7:18]) && base62(s[19:23]) && (len(s) == 23 || !isAlnum(s[23])) {
		return 23
	}
	return 0
}

func base62(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }
func isAlnum(c byte) bool  { return isDigit(c) || isLetter(c) }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

// atoi parses a non-negative decimal of at most 18 digits.
func atoi(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

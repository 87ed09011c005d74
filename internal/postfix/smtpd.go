package postfix

import (
	"net/netip"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// smtpd parses a line of the SMTP server (also qmqpd).
func (p *Parser) smtpd(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	m := l.Msg
	switch {
	case strings.HasPrefix(m, "connect from "):
		ip, _, ok := client(m[len("connect from "):])
		if !ok {
			return dst, maillog.Unknown
		}
		e := p.event(l, event.Connect, ip)
		if s := p.session(l, ip, true); s != nil {
			e.Session = s.id
		}
		return append(dst, e), maillog.Parsed
	case strings.HasPrefix(m, "disconnect from "):
		return p.disconnect(l, m[len("disconnect from "):], dst)
	case strings.HasPrefix(m, "warning: "):
		return p.smtpdWarning(l, m[len("warning: "):], dst)
	case strings.HasPrefix(m, "NOQUEUE: "):
		return p.smtpdQueue(l, "", m[len("NOQUEUE: "):], dst)
	case strings.HasPrefix(m, "lost connection after "):
		return p.lost(l, m[len("lost connection after "):], dst)
	case strings.HasPrefix(m, "timeout after "):
		if _, _, _, ok := afterFrom(m[len("timeout after "):]); ok {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	case strings.HasPrefix(m, "too many errors after "):
		return p.abuse(l, m[len("too many errors after "):], dst)
	case strings.HasPrefix(m, "improper command pipelining after "):
		return p.abuse(l, m[len("improper command pipelining after "):], dst)
	case strings.HasPrefix(m, "proxy-reject: "):
		return p.proxyReject(l, "", m[len("proxy-reject: "):], dst)
	}
	if qid, rest, ok := cutQueueID(m); ok {
		return p.smtpdQueue(l, qid, rest, dst)
	}
	if isTLS(m) || hasAnyPrefix(m, "proxy-accept: ", "discarding EHLO keywords: ",
		"table ", "using backwards-compatible default setting ", "replacing command ") {
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// isTLS reports the informational TLS lines of smtpd and smtp.
func isTLS(m string) bool {
	return strings.Contains(m, "TLS connection ") || hasAnyPrefix(m, "SSL_accept error ", "SSL_connect error ")
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// disconnect parses "name[addr] ehlo=1 auth=0/1 … commands=…". Failed AUTH
// commands that no SASL failure line of the connection accounts for (the
// client dropped or aborted mid-AUTH, AUTH was refused before SASL ran)
// become one AuthFail with their number as Count.
func (p *Parser) disconnect(l *maillog.Line, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	ip, rest, ok := client(s)
	if !ok {
		return dst, maillog.Unknown
	}
	ses := p.session(l, ip, false)
	logged := 0
	if ses != nil {
		logged = ses.authLogged
	}
	if failed := authFailures(rest); failed > logged {
		e := p.event(l, event.AuthFail, ip)
		e.Count = failed - logged
		if ses != nil {
			e.Session = ses.id
		}
		dst = append(dst, e)
	}
	e := p.event(l, event.Disconnect, ip)
	if ses != nil {
		e.Session, e.Account = ses.id, ses.account
		ses.active = false
		ses.account = ""
		ses.authLogged = 0
	}
	return append(dst, e), maillog.Parsed
}

// authFailures returns M-N from the " auth=N/M" counter of a disconnect
// line (Postfix 3.0+), 0 when there is none.
func authFailures(stats string) int {
	i := strings.Index(stats, " auth=")
	if i < 0 {
		return 0
	}
	good, r, ok := atoi(stats[i+len(" auth="):])
	if !ok || len(r) < 2 || r[0] != '/' {
		return 0
	}
	total, _, ok := atoi(r[1:])
	if !ok || total <= good || total-good > 1<<20 {
		return 0
	}
	return int(total - good)
}

// smtpdWarning parses what follows "warning: ".
func (p *Parser) smtpdWarning(l *maillog.Line, w string, dst []event.Event) ([]event.Event, maillog.Result) {
	if ip, rest, ok := client(w); ok && strings.HasPrefix(rest, ": SASL ") {
		return p.sasl(l, ip, rest[len(": SASL "):], dst)
	}
	switch {
	case strings.Contains(w, " limit exceeded: "):
		// "Connection rate limit exceeded: 31 from name[addr] for service smtp"
		// and the concurrency, message, recipient, TLS and AUTH rate limits.
		i := strings.Index(w, " limit exceeded: ")
		j := strings.Index(w[i:], " from ")
		if j < 0 {
			return dst, maillog.Unknown
		}
		ip, _, ok := client(w[i+j+len(" from "):])
		if !ok {
			return dst, maillog.Unknown
		}
		return append(dst, p.refusal(l, event.Reject, ip, p.session(l, ip, false))), maillog.Parsed
	case strings.HasPrefix(w, "hostname "):
		// "hostname H does not resolve to address A[: reason]", logged before
		// "connect from": forward-confirmed reverse DNS failed.
		j := strings.Index(w, " does not resolve to address ")
		if j < 0 {
			return dst, maillog.Ignored
		}
		a := w[j+len(" does not resolve to address "):]
		if k := strings.Index(a, ": "); k >= 0 {
			a = a[:k]
		}
		ip, ok := parseIP(a)
		if !ok {
			return dst, maillog.Unknown
		}
		return append(dst, p.event(l, event.Reject, ip)), maillog.Parsed
	case strings.HasPrefix(w, "non-SMTP command from "), strings.HasPrefix(w, "Illegal address syntax from "):
		ip, _, ok := client(w[strings.Index(w, " from ")+len(" from "):])
		if !ok {
			return dst, maillog.Unknown
		}
		return append(dst, p.refusal(l, event.Reject, ip, p.session(l, ip, false))), maillog.Parsed
	}
	return dst, maillog.Ignored
}

// sasl parses "METHOD authentication failed: reason[, sasl_username=user]"
// and "METHOD authentication aborted".
func (p *Parser) sasl(l *maillog.Line, ip netip.Addr, r string, dst []event.Event) ([]event.Event, maillog.Result) {
	sp := strings.IndexByte(r, ' ')
	if sp <= 0 {
		return dst, maillog.Unknown
	}
	r = r[sp+1:]
	if strings.HasPrefix(r, "authentication aborted") {
		// The client gave up ("*"); the disconnect line's auth= counter
		// accounts for it.
		return dst, maillog.Ignored
	}
	if !strings.HasPrefix(r, "authentication failed") {
		return dst, maillog.Unknown
	}
	reason := r[len("authentication failed"):]
	if reason != "" && reason[0] != ':' {
		return dst, maillog.Unknown
	}
	user := ""
	if i := strings.Index(reason, ", sasl_username="); i >= 0 {
		user = reason[i+len(", sasl_username="):]
		reason = reason[:i]
	}
	reason = strings.TrimSpace(reason[min(1, len(reason)):])
	ses := p.session(l, ip, false)
	if ses != nil {
		ses.authLogged++
	}
	switch {
	case hasAnyPrefix(reason, "Connection lost to authentication server",
		"Can't connect to authentication server", "Authentication backend error"):
		// The SASL server failed, not the client.
		return dst, maillog.Ignored
	case hasAnyPrefix(reason, "Invalid authentication mechanism", "Invalid base64 data",
		"no mechanism available"):
		// A protocol error, not a password guess.
		return append(dst, p.refusal(l, event.Reject, ip, ses)), maillog.Parsed
	}
	e := p.event(l, event.AuthFail, ip)
	e.Count = 1
	if user != "(unavailable)" {
		e.Account = event.NormalizeAccount(user)
	}
	if ses != nil {
		e.Session = ses.id
	}
	return append(dst, e), maillog.Parsed
}

// lost parses "CMD from name[addr]" after "lost connection after ". A client
// that drops right after connecting or after STARTTLS is refused-like
// behaviour of scanners and flooders; drops later in the dialogue are
// ordinary (and a drop during AUTH is counted at disconnect).
func (p *Parser) lost(l *maillog.Line, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	cmd, ip, _, ok := afterFrom(s)
	if !ok {
		return dst, maillog.Unknown
	}
	if cmd != "CONNECT" && cmd != "STARTTLS" {
		return dst, maillog.Ignored
	}
	return append(dst, p.refusal(l, event.Reject, ip, p.session(l, ip, false))), maillog.Parsed
}

// abuse parses "CMD from name[addr]…" after "too many errors after " or
// "improper command pipelining after ".
func (p *Parser) abuse(l *maillog.Line, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	_, ip, _, ok := afterFrom(s)
	if !ok {
		return dst, maillog.Unknown
	}
	return append(dst, p.refusal(l, event.Reject, ip, p.session(l, ip, false))), maillog.Parsed
}

// smtpdQueue parses what follows "QID: " or "NOQUEUE: " in an smtpd line.
func (p *Parser) smtpdQueue(l *maillog.Line, qid, rest string, dst []event.Event) ([]event.Event, maillog.Result) {
	switch {
	case strings.HasPrefix(rest, "client="):
		return p.clientLine(l, qid, rest[len("client="):], dst)
	case strings.HasPrefix(rest, "reject: "):
		return p.reject(l, qid, rest[len("reject: "):], dst)
	case strings.HasPrefix(rest, "milter-reject: "):
		return p.reject(l, qid, rest[len("milter-reject: "):], dst)
	case strings.HasPrefix(rest, "lost connection after "):
		return p.lost(l, rest[len("lost connection after "):], dst)
	case strings.HasPrefix(rest, "proxy-reject: "):
		return p.proxyReject(l, qid, rest[len("proxy-reject: "):], dst)
	case hasAnyPrefix(rest, "filter: ", "hold: ", "discard: ", "redirect: ", "warn: ",
		"prepend: ", "reject_warning: ", "milter-hold: ", "milter-discard: ",
		"proxy-accept: ", "abort: ", "info: "):
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// clientLine parses "name[addr][:port][, sasl_method=M, sasl_username=U]
// [, sasl_sender=S][, orig_queue_id=Q][, orig_client=C]" and holds the
// message until qmgr queues it. The first account seen in a connection is
// an AuthOK: Postfix logs no line of its own for a successful AUTH.
//
// A message reinjected by an after-queue content filter (orig_queue_id is a
// queue id) was already counted under its original queue id and is not
// held again. "NOQUEUE: client=" (a before-queue filter's front end) gives
// the account of the connection but holds nothing; the filter's back end
// names the real client in orig_client.
func (p *Parser) clientLine(l *maillog.Line, qid, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	ip, rest, ok := client(s)
	if !ok {
		return dst, maillog.Unknown
	}
	acct := event.NormalizeAccount(field(rest, ", sasl_username="))
	if oq := field(rest, ", orig_queue_id="); oq != "" && oq != "NOQUEUE" {
		return dst, maillog.Ignored
	}
	pend := pending{ip: ip}
	if oc := field(rest, ", orig_client="); oc != "" {
		if oip, _, ok := client(oc); ok && oip.IsValid() {
			pend.ip = oip
		}
	}
	if ses := p.session(l, ip, false); ses != nil {
		if acct != "" && acct != ses.account {
			ses.account = strings.Clone(acct)
			e := p.event(l, event.AuthOK, ip)
			e.Account, e.Session = acct, ses.id
			dst = append(dst, e)
		}
		pend.session = ses.id
		if acct != "" {
			acct = ses.account
		}
	} else if acct != "" {
		acct = strings.Clone(acct)
	}
	if qid == "" {
		return dst, maillog.Parsed
	}
	pend.account = acct
	k := queueKey{l.Host, qid}
	if _, ok := p.queue.get(k); ok {
		p.queue.put(k, pend)
	} else {
		p.queue.put(queueKey{p.intern(l.Host), strings.Clone(qid)}, pend)
	}
	return dst, maillog.Parsed
}

// field returns the value after key in a client= line, up to the next
// field Postfix logs after it.
func field(s, key string) string {
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	v := s[i+len(key):]
	for _, next := range [...]string{", sasl_method=", ", sasl_username=", ", sasl_sender=", ", orig_queue_id=", ", orig_client="} {
		if j := strings.Index(v, next); j >= 0 {
			v = v[:j]
		}
	}
	return v
}

// reject parses the text after "reject: " or "milter-reject: " of an smtpd
// line.
func (p *Parser) reject(l *maillog.Line, qid, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	cmd, ip, reply, ok := parseReject(s)
	if !ok {
		return dst, maillog.Unknown
	}
	if serverFault(reply) {
		return dst, maillog.Ignored
	}
	e := p.refusal(l, rejectKind(cmd, reply), ip, p.session(l, ip, false))
	e.QueueID = qid
	return append(dst, e), maillog.Parsed
}

// parseReject parses "CMD from name[addr]: reply[; from=<…> to=<…> proto=…
// helo=<…>]" and returns the reply without the envelope part.
func parseReject(s string) (cmd string, ip netip.Addr, reply string, ok bool) {
	cmd, ip, rest, ok := afterFrom(s)
	if !ok || len(rest) < 3 || rest[0] != ':' || rest[1] != ' ' {
		return "", netip.Addr{}, "", false
	}
	reply = rest[2:]
	if i := strings.Index(reply, "; from=<"); i >= 0 {
		reply = reply[:i]
	}
	return cmd, ip, reply, true
}

// rejectKind classifies a refusal: a refused recipient (unknown user, relay
// denied, a recipient restriction or policy) is RcptRejected; any other
// refusal (HELO, client, sender, DATA, VRFY, milter) is Reject.
func rejectKind(cmd, reply string) event.Kind {
	if cmd == "RCPT" && (strings.Contains(reply, "Recipient address rejected") || strings.Contains(reply, "Relay access denied")) {
		return event.RcptRejected
	}
	return event.Reject
}

// proxyReject parses "CMD: reply;…" of a before-queue content filter's
// refusal. The line names no client: the connection's is used.
func (p *Parser) proxyReject(l *maillog.Line, qid, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	i := strings.Index(s, ": ")
	if i <= 0 {
		return dst, maillog.Unknown
	}
	if serverFault(s[i+2:]) || l.PID == "" {
		return dst, maillog.Ignored
	}
	ses, ok := p.sessions.get(sessKey{l.Host, l.Program, l.PID})
	if !ok || !ses.active || !ses.ip.IsValid() {
		return dst, maillog.Ignored
	}
	e := p.refusal(l, event.Reject, ses.ip, ses)
	e.QueueID = qid
	return append(dst, e), maillog.Parsed
}

package postfix

import (
	"net/netip"
	"strings"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// qmgr parses a queue manager line. "QID: from=<…>, size=N, nrcpt=M (queue
// active)" completes a message held since its "client=" or pickup line; the
// line repeats on every delivery retry, but the message is emitted once.
func (p *Parser) qmgr(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	qid, rest, ok := cutQueueID(l.Msg)
	if !ok {
		if hasAnyPrefix(l.Msg, "warning: ", "info: ", "statistics: ") {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	switch {
	case strings.HasPrefix(rest, "from=<"):
		if i := strings.LastIndex(rest, ", nrcpt="); i >= 0 {
			j := strings.LastIndex(rest[:i], ", size=")
			if j < 0 {
				return dst, maillog.Unknown
			}
			size, r1, ok1 := atoi(rest[j+len(", size="):])
			n, r2, ok2 := atoi(rest[i+len(", nrcpt="):])
			if !ok1 || !ok2 || !strings.HasPrefix(r1, ", nrcpt=") || !strings.HasPrefix(r2, " (queue ") || !strings.HasSuffix(r2, ")") {
				return dst, maillog.Unknown
			}
			return p.message(l, qid, size, int(n), dst)
		}
		if strings.Contains(rest, ", status=") {
			// "from=<…>, status=expired, returned to sender"
			p.queue.del(queueKey{l.Host, qid})
			return dst, maillog.Ignored
		}
	case rest == "removed":
		p.queue.del(queueKey{l.Host, qid})
		return dst, maillog.Ignored
	case strings.HasPrefix(rest, "skipped, "):
		return dst, maillog.Ignored
	case strings.HasPrefix(rest, "to=<"):
		if strings.Contains(rest, ", status=") {
			return dst, maillog.Ignored
		}
	}
	return dst, maillog.Unknown
}

// message emits the Message held under qid, if any.
func (p *Parser) message(l *maillog.Line, qid string, size int64, rcpts int, dst []event.Event) ([]event.Event, maillog.Result) {
	k := queueKey{l.Host, qid}
	pend, ok := p.queue.get(k)
	if !ok {
		// A retry of a message already emitted, a bounce, or mail that
		// entered the queue by another way (local forwarding, postsuper).
		return dst, maillog.Ignored
	}
	p.queue.del(k)
	e := event.Event{
		Time: l.Time, Kind: event.Message, Account: pend.account, IP: pend.ip,
		Session: pend.session, Size: size, Rcpts: rcpts, QueueID: qid,
		Node: l.Host, Source: Source,
	}
	if !pend.local {
		e.Protocol = event.SMTP
	}
	return append(dst, e), maillog.Parsed
}

// pickup parses "QID: uid=N from=<sender>" of mail submitted with
// sendmail(1): held as a message without client or account.
func (p *Parser) pickup(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	qid, rest, ok := cutQueueID(l.Msg)
	if !ok {
		if strings.HasPrefix(l.Msg, "warning: ") {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	if !strings.HasPrefix(rest, "uid=") {
		return dst, maillog.Unknown
	}
	if !strings.Contains(rest, " from=<") {
		if strings.Contains(rest, "no envelope sender") {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	k := queueKey{l.Host, qid}
	if _, ok := p.queue.get(k); !ok {
		p.queue.put(queueKey{p.intern(l.Host), strings.Clone(qid)}, pending{local: true})
	}
	return dst, maillog.Parsed
}

// cleanup parses a cleanup line: message ids are ignored; a message refused
// by a milter or by header/body checks is a Reject of the client that sent
// it, and will never reach qmgr.
func (p *Parser) cleanup(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	qid, rest, ok := cutQueueID(l.Msg)
	if !ok {
		if hasAnyPrefix(l.Msg, "warning: ", "info: ") {
			return dst, maillog.Ignored
		}
		return dst, maillog.Unknown
	}
	switch {
	case hasAnyPrefix(rest, "message-id=", "resent-message-id="):
		return dst, maillog.Ignored
	case strings.HasPrefix(rest, "milter-reject: "):
		// "END-OF-MESSAGE from name[addr]: 5.7.1 text; from=<…> to=<…> proto=… helo=<…>"
		_, ip, reply, ok := parseReject(rest[len("milter-reject: "):])
		if !ok {
			return dst, maillog.Unknown
		}
		if serverFault(reply) {
			return dst, maillog.Ignored
		}
		return p.refused(l, qid, ip, dst)
	case strings.HasPrefix(rest, "reject: "):
		// "header Subject: … from name[addr]; from=<…> to=<…> proto=… helo=<…>: 5.7.1 text".
		// The header or body text is the sender's: the client is taken from
		// the queued message, not from the line.
		if !hasAnyPrefix(rest[len("reject: "):], "header ", "body ", "mime-error ", "content ") {
			return dst, maillog.Unknown
		}
		return p.refused(l, qid, netip.Addr{}, dst)
	case hasAnyPrefix(rest, "warning: ", "info: ", "hold: ", "discard: ", "redirect: ",
		"replace: ", "prepend: ", "filter: ", "bcc: ", "milter-", "message rejected: ",
		"message not accepted", "queue file size limit exceeded"):
		return dst, maillog.Ignored
	}
	return dst, maillog.Unknown
}

// refused appends a Reject for message qid, refused by cleanup, and drops
// it from the queue table. ip is the client the line names, if any; else
// the client of the queued message is used.
func (p *Parser) refused(l *maillog.Line, qid string, ip netip.Addr, dst []event.Event) ([]event.Event, maillog.Result) {
	k := queueKey{l.Host, qid}
	pend, ok := p.queue.get(k)
	if ok {
		p.queue.del(k)
	}
	if !ip.IsValid() {
		ip = pend.ip
	}
	if !ip.IsValid() && pend.account == "" {
		// Nothing to attribute the refusal to.
		return dst, maillog.Ignored
	}
	e := p.event(l, event.Reject, ip)
	e.Account, e.Session, e.QueueID = pend.account, pend.session, qid
	if pend.local {
		e.Protocol = event.ProtoUnknown
	}
	return append(dst, e), maillog.Parsed
}

// delivery classifies a line of a delivery agent (smtp, lmtp, local,
// virtual, pipe, error, discard): all are ignored, but a truncated
// "QID: to=<…" line without its status, or one not starting with text, is
// Unknown. m is not empty.
func delivery(m string) maillog.Result {
	if _, rest, ok := cutQueueID(m); ok {
		if strings.HasPrefix(rest, "to=<") && !strings.Contains(rest, ", status=") {
			return maillog.Unknown
		}
		if rest != "" {
			return maillog.Ignored
		}
		return maillog.Unknown
	}
	// Connection, TLS and certificate chatter ("connect to …", "Untrusted
	// TLS connection established to …", "certificate verification failed
	// for …", "warning: …").
	if c := m[0]; (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
		return maillog.Ignored
	}
	return maillog.Unknown
}

// bounce classifies a line of the bounce, defer and trace daemons
// ("QID: sender non-delivery notification: QID2").
func bounce(m string) maillog.Result {
	if _, rest, ok := cutQueueID(m); ok && strings.Contains(rest, " notification: ") {
		return maillog.Ignored
	}
	if strings.HasPrefix(m, "warning: ") {
		return maillog.Ignored
	}
	return maillog.Unknown
}

// postsuper ignores the queue tool's lines but forgets deleted messages.
func (p *Parser) postsuper(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	if qid, rest, ok := cutQueueID(l.Msg); ok && rest == "removed" {
		p.queue.del(queueKey{l.Host, qid})
	}
	return dst, maillog.Ignored
}

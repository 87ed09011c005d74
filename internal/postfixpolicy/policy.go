package postfixpolicy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// The mapping from requests to verdicts and answers. "account" is the
// normalised sasl_username, "ip" the client_address.
//
//	protocol_state              call                                   answer
//	CONNECT, EHLO, HELO         Check(account, ip)                     Blocked: BlockedReply; Lock: 421; else DUNNO
//	MAIL, RCPT with account     first in the SMTP session:             Lock: 421; Blocked: BlockedReply;
//	                              Decide(AuthOK); then Check            Defer: DEFER_IF_PERMIT; Hold: HOLD;
//	                                                                    Tarpit, Allow: DUNNO
//	DATA, END-OF-MESSAGE        first for the message (instance):      as MAIL/RCPT
//	  with account                Decide(Message); then Check
//	anything else, or no        Check(account, ip)                     as CONNECT
//	account
//
// A request whose SMTP session differs from the previous one on the same
// connection ends that session: Postfix's smtpd serves one client at a time,
// so when the previous session counted a message, Decide(Disconnect) lets
// the engine drop its per-session state.

var errNotPolicy = errors.New("not an smtpd_access_policy request")

// Protocol states (Postfix reports BDAT as DATA).
var (
	stConnect = []byte("CONNECT")
	stEHLO    = []byte("EHLO")
	stHELO    = []byte("HELO")
	stMail    = []byte("MAIL")
	stRcpt    = []byte("RCPT")
	stData    = []byte("DATA")
	stEOM     = []byte("END-OF-MESSAGE")
)

// answer decides one request and returns the bytes to send, or an error
// when the request must be refused (the connection is then closed without
// reply).
func (c *conn) answer(q *request) ([]byte, error) {
	if req := q.get(aRequest); string(req) != "smtpd_access_policy" {
		if req == nil {
			return nil, errors.New("request attribute missing")
		}
		return nil, fmt.Errorf("%w: request=%s", errNotPolicy, quoted(req))
	}
	s := c.s
	now := s.cfg.Clock()
	ip := c.clientAddr(q.get(aClientAddress))
	account := c.accountOf(q.get(aSASLUsername))
	c.trackSession(q, now)

	st := q.get(aProtocolState)
	switch {
	case account != "" && (bytes.Equal(st, stMail) || bytes.Equal(st, stRcpt)):
		var v engine.Verdict
		if c.authed != account {
			c.authed = account
			v = s.cfg.Decider.Decide(&event.Event{
				Time: now, Kind: event.AuthOK, Account: account, IP: ip,
				Protocol: event.SMTP, Session: c.session, Node: s.cfg.Node, Source: Source,
			})
		} else {
			v = s.cfg.Decider.Check(account, ip, now)
		}
		return s.full(v), nil

	case account != "" && (bytes.Equal(st, stEOM) || bytes.Equal(st, stData)):
		key := q.get(aInstance)
		if len(key) == 0 {
			key = q.get(aQueueID)
		}
		if len(key) > 0 && bytes.Equal(key, c.msgKey) {
			return s.full(s.cfg.Decider.Check(account, ip, now)), nil
		}
		c.msgKey = append(c.msgKey[:0], key...)
		size, _ := parseUint(q.get(aSize), 1<<62)
		rcpts, _ := parseUint(q.get(aRecipientCount), 1<<31-1)
		ev := &event.Event{
			Time: now, Kind: event.Message, Account: account, IP: ip,
			Protocol: event.SMTP, Session: c.session, Size: int64(size), Rcpts: int(rcpts),
			Node: s.cfg.Node, Source: Source,
		}
		if qid := q.get(aQueueID); len(qid) > 0 {
			ev.QueueID = string(qid)
		}
		c.sessMsg, c.sessAccount, c.sessIP = true, account, ip
		return s.full(s.cfg.Decider.Decide(ev)), nil
	}
	if !ip.IsValid() && account == "" {
		return s.ansDunno, nil
	}
	return s.refuse(s.cfg.Decider.Check(account, ip, now)), nil
}

// full maps a verdict on something the client does (MAIL, RCPT, a message).
func (s *Server) full(v engine.Verdict) []byte {
	switch v {
	case engine.Lock:
		return s.ansLocked
	case engine.Blocked:
		return s.ansBlocked
	case engine.Defer:
		return s.ansDefer
	case engine.Hold:
		return s.ansHold
	}
	return s.ansDunno
}

// refuse maps a verdict where only a lock or a block can refuse.
func (s *Server) refuse(v engine.Verdict) []byte {
	switch v {
	case engine.Lock:
		return s.ansLocked
	case engine.Blocked:
		return s.ansBlocked
	}
	return s.ansDunno
}

// clientAddr parses client_address, reusing the previous result when the
// value did not change.
func (c *conn) clientAddr(raw []byte) netip.Addr {
	if c.addrOK && bytes.Equal(raw, c.addrRaw) {
		return c.addr
	}
	c.addrRaw = append(c.addrRaw[:0], raw...)
	c.addr, _ = parseAddr(raw)
	c.addrOK = true
	return c.addr
}

// accountOf normalises sasl_username, reusing the previous result when the
// value did not change.
func (c *conn) accountOf(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	if c.account != "" && bytes.Equal(raw, c.userRaw) {
		return c.account
	}
	c.userRaw = append(c.userRaw[:0], raw...)
	c.account = event.NormalizeAccount(string(raw))
	return c.account
}

// trackSession computes the request's SMTP session key and, when it differs
// from the previous request's, starts a new session.
//
// The key is client_address:client_port|server_address:server_port (IPv6
// addresses in brackets). Without a client port (Postfix before 3.0) it is
// client_address|instance: one message, the best that is known.
func (c *conn) trackSession(q *request, now time.Time) {
	k := c.tmp[:0]
	ca, cp := q.get(aClientAddress), q.get(aClientPort)
	if len(cp) > 0 && !(len(cp) == 1 && cp[0] == '0') {
		k = appendHost(k, ca)
		k = append(k, ':')
		k = append(k, cp...)
		k = append(k, '|')
		if sa := q.get(aServerAddress); len(sa) > 0 {
			k = appendHost(k, sa)
			k = append(k, ':')
			k = append(k, q.get(aServerPort)...)
		}
	} else if inst := q.get(aInstance); len(inst) > 0 {
		k = appendHost(k, ca)
		k = append(k, '|')
		k = append(k, inst...)
	}
	c.tmp = k
	if c.haveSess && bytes.Equal(k, c.sessKey) {
		return // requests without any key share one unnamed session
	}
	c.endSession(now)
	c.haveSess = true
	c.sessKey = append(c.sessKey[:0], k...)
	c.session = string(k)
	c.authed = ""
	c.msgKey = c.msgKey[:0]
}

// endSession tells the Decider that the previous session ended, when it
// counted a message (the engine keeps per-session state for those only).
func (c *conn) endSession(now time.Time) {
	if !c.sessMsg || c.session == "" {
		c.sessMsg = false
		return
	}
	c.sessMsg = false
	c.s.cfg.Decider.Decide(&event.Event{
		Time: now, Kind: event.Disconnect, Account: c.sessAccount, IP: c.sessIP,
		Protocol: event.SMTP, Session: c.session, Node: c.s.cfg.Node, Source: Source,
	})
}

func appendHost(k, addr []byte) []byte {
	if bytes.IndexByte(addr, ':') >= 0 && (len(addr) == 0 || addr[0] != '[') {
		k = append(k, '[')
		k = append(k, addr...)
		return append(k, ']')
	}
	return append(k, addr...)
}

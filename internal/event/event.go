// Package event defines the one normalised event model that every source
// (log parsers, Postfix policy, Exim readsocket, Dovecot auth policy) produces
// and that the detection engine consumes.
//
// It owns the normalisation of account names and the aggregation of IP
// addresses into counting keys (IPv6 per /64). It does no I/O.
package event

import (
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Kind is what happened.
type Kind uint8

// Event kinds.
const (
	KindUnknown  Kind = iota
	AuthOK            // successful authentication (SMTP AUTH, IMAP/POP login)
	AuthFail          // failed authentication; Count says how many attempts it stands for
	Message           // a message accepted for delivery: Size, Rcpts
	RcptRejected      // a recipient refused (unknown user, relay denied, policy)
	Reject            // a client refused for another reason (HELO, protocol error, sync error)
	Connect           // a client connected
	Disconnect        // a client went away
)

var kindNames = [...]string{"unknown", "auth_ok", "auth_fail", "message", "rcpt_rejected", "reject", "connect", "disconnect"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// IsFailure reports whether the kind is a refusal of the client.
func (k Kind) IsFailure() bool { return k == AuthFail || k == RcptRejected || k == Reject }

// Protocol is the service the client spoke to.
type Protocol uint8

// Protocols.
const (
	ProtoUnknown Protocol = iota
	SMTP                  // SMTP, including submission (587) and submissions (465)
	IMAP
	POP3
	Sieve // ManageSieve
)

var protoNames = [...]string{"", "smtp", "imap", "pop3", "sieve"}

func (p Protocol) String() string {
	if int(p) < len(protoNames) {
		return protoNames[p]
	}
	return ""
}

// ParseProtocol maps a service name as servers log it ("imap-login",
// "pop3", "submission", "smtps") to a Protocol.
func ParseProtocol(s string) Protocol {
	s = strings.ToLower(s)
	switch {
	case strings.HasPrefix(s, "imap"):
		return IMAP
	case strings.HasPrefix(s, "pop3"), strings.HasPrefix(s, "pop"):
		return POP3
	case strings.HasPrefix(s, "smtp"), strings.HasPrefix(s, "submission"), strings.HasPrefix(s, "esmtp"), strings.HasPrefix(s, "lmtp"):
		return SMTP
	case strings.HasPrefix(s, "managesieve"), strings.HasPrefix(s, "sieve"):
		return Sieve
	}
	return ProtoUnknown
}

// Event is one normalised observation. The zero value of every field means
// "not known".
type Event struct {
	Time     time.Time  // event time, from the log line or the request
	Kind     Kind       // what happened
	Account  string     // normalised account (see NormalizeAccount); "" if unauthenticated
	IP       netip.Addr // client address, full (evidence keeps it; counting uses NetKey)
	Protocol Protocol   // service
	Session  string     // identifies one client connection within its Source and Node
	Size     int64      // message size in bytes (Message)
	Rcpts    int        // recipients (Message)
	Count    int        // attempts this event stands for (AuthFail); 0 means 1
	PwHash   string     // opaque hash of the tried password (AuthFail), never the password
	QueueID  string     // queue id / message id (Message)
	Node     string     // host that logged or asked
	Source   string     // "exim", "postfix", "dovecot", "policy", …
}

// N returns the number of attempts the event stands for (at least 1).
func (e *Event) N() int {
	if e.Count > 1 {
		return e.Count
	}
	return 1
}

// NormalizeAccount lower-cases and trims an account name and makes it safe
// to print: control characters and invalid UTF-8 are dropped, the result is
// at most 256 bytes. It returns "" for names that are empty after that or
// that are placeholders servers log for "no user" ("<>", "unknown").
func NormalizeAccount(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		s = strings.TrimSpace(s[1 : len(s)-1])
	}
	clean := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f || c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') || c == ' ' {
			clean = false
			break
		}
	}
	if !clean {
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == utf8.RuneError, unicode.IsControl(r), unicode.IsSpace(r):
				continue
			}
			b.WriteRune(unicode.ToLower(r))
		}
		s = b.String()
	}
	if len(s) > 256 {
		s = s[:256]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	switch s {
	case "", "unknown", "(unknown)", "-":
		return ""
	}
	return s
}

// NetKey returns the address used for per-IP counting: IPv4 as is (an
// IPv4-mapped IPv6 address is unmapped), IPv6 masked to its /64 so that
// privacy addresses of one host count once.
func NetKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// Network returns the wider network an address belongs to for "distinct
// networks" counting (botnet, harvest): the /16 for IPv4 and the /32 for
// IPv6 — roughly one provider's block, so that a phone hopping through its
// carrier's NAT pool or a host rotating IPv6 privacy addresses stays one
// network.
func Network(ip netip.Addr, v4bits, v6bits int) netip.Prefix {
	ip = ip.Unmap()
	bits := v4bits
	if ip.Is6() {
		bits = v6bits
	}
	p, _ := ip.Prefix(bits)
	return p
}

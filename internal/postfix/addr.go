package postfix

import (
	"net/netip"
	"strings"
)

// client parses the client as Postfix logs it at the start of s:
// "name[addr]" or "[addr]" (postscreen), optionally followed by ":port"
// (smtpd_client_port_logging, postscreen). It returns the address and the
// text after it. "unknown[unknown]" yields ok with an invalid address.
func client(s string) (ip netip.Addr, rest string, ok bool) {
	i := strings.IndexByte(s, '[')
	if i < 0 || strings.IndexByte(s[:i], ' ') >= 0 {
		return netip.Addr{}, s, false
	}
	j := strings.IndexByte(s[i+1:], ']')
	if j < 0 {
		return netip.Addr{}, s, false
	}
	a := s[i+1 : i+1+j]
	rest = s[i+2+j:]
	if len(rest) > 1 && rest[0] == ':' && isDigit(rest[1]) {
		k := 1
		for k < len(rest) && isDigit(rest[k]) {
			k++
		}
		rest = rest[k:]
	}
	if a == "unknown" {
		return netip.Addr{}, rest, true
	}
	ip, ok = parseIP(a)
	return ip, rest, ok
}

// parseIP parses an address, dropping an "IPv6:" tag and a zone and
// unmapping IPv4-mapped IPv6 addresses.
func parseIP(s string) (netip.Addr, bool) {
	if len(s) > 5 && (s[0] == 'I' || s[0] == 'i') && strings.EqualFold(s[:5], "ipv6:") {
		s = s[5:]
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return ip.WithZone("").Unmap(), true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// cutQueueID splits "QID: rest" where QID is a short (hex) or long
// (enable_long_queue_ids) Postfix queue id.
func cutQueueID(s string) (qid, rest string, ok bool) {
	i := 0
	for i < len(s) && i <= 20 {
		c := s[i]
		if !(isDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) {
			break
		}
		i++
	}
	if i < 5 || i > 20 || len(s) < i+2 || s[i] != ':' || s[i+1] != ' ' {
		return "", s, false
	}
	return s[:i], s[i+2:], true
}

// atoi parses leading decimal digits of s; ok is false without any digit.
func atoi(s string) (n int64, rest string, ok bool) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		if i < 18 {
			n = n*10 + int64(s[i]-'0')
		}
		i++
	}
	return n, s[i:], i > 0
}

// afterFrom parses "CMD[ (N bytes)] from name[addr]…" as in "lost
// connection after DATA (0 bytes) from …" and returns the command, the
// client address and the text after it.
func afterFrom(s string) (cmd string, ip netip.Addr, rest string, ok bool) {
	sp := strings.IndexByte(s, ' ')
	if sp <= 0 {
		return "", netip.Addr{}, s, false
	}
	cmd, rest = s[:sp], s[sp+1:]
	if len(rest) > 0 && rest[0] == '(' {
		e := strings.Index(rest, ") ")
		if e < 0 {
			return "", netip.Addr{}, s, false
		}
		rest = rest[e+2:]
	}
	if !strings.HasPrefix(rest, "from ") {
		return "", netip.Addr{}, s, false
	}
	ip, rest, ok = client(rest[5:])
	return cmd, ip, rest, ok
}

// serverFault reports whether a reject reply is the server's own trouble
// rather than a refusal of the client: DSN class x.3.x ("mail system
// status": lookup failures, configuration errors, no resources, message too
// big) and a milter's default tempfail reply.
func serverFault(reply string) bool {
	r := reply
	if len(r) >= 4 && isDigit(r[0]) && isDigit(r[1]) && isDigit(r[2]) && r[3] == ' ' {
		r = r[4:]
	}
	if len(r) >= 4 && (r[0] == '4' || r[0] == '5') && r[1] == '.' && r[2] == '3' && r[3] == '.' {
		return true
	}
	return strings.Contains(r, "Service unavailable - try again later")
}

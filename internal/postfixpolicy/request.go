package postfixpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"net/netip"
)

// attr names the request attributes the server uses; every other attribute
// is read, counted against the limits and ignored.
type attr uint8

const (
	aRequest attr = iota
	aProtocolState
	aClientAddress
	aClientPort
	aServerAddress
	aServerPort
	aSASLUsername
	aSize
	aRecipientCount
	aQueueID
	aInstance
	numAttrs
)

// attrOf maps an attribute name to the attributes the server keeps. The
// switch on string(name) does not allocate.
func attrOf(name []byte) (attr, bool) {
	switch string(name) {
	case "request":
		return aRequest, true
	case "protocol_state":
		return aProtocolState, true
	case "client_address":
		return aClientAddress, true
	case "client_port":
		return aClientPort, true
	case "server_address":
		return aServerAddress, true
	case "server_port":
		return aServerPort, true
	case "sasl_username":
		return aSASLUsername, true
	case "size":
		return aSize, true
	case "recipient_count":
		return aRecipientCount, true
	case "queue_id":
		return aQueueID, true
	case "instance":
		return aInstance, true
	}
	return 0, false
}

// Reasons a request is refused. The connection is closed without a reply
// (the policy protocol's way to report trouble); Postfix then applies its
// default_action.
var (
	errLineTooLong    = errors.New("line too long")
	errRequestTooLong = errors.New("request too large")
	errTooManyAttrs   = errors.New("too many attributes")
	errNoEquals       = errors.New("line without '='")
	errEmptyName      = errors.New("empty attribute name")
	errNUL            = errors.New("NUL byte in request")
	errTruncated      = errors.New("connection closed inside a request")
)

// limits bound one request.
type limits struct {
	maxLine    int // bytes per line, newline included
	maxRequest int // bytes per request, the final empty line included
	maxAttrs   int // attribute lines per request
}

// span is where a value sits in request.buf.
type span struct {
	off, end int32
	set      bool
}

// request is one parsed policy request. It is reused from one request to
// the next on a connection: only the values of the attributes the server
// uses are copied, into buf.
type request struct {
	buf   []byte
	val   [numAttrs]span
	attrs int // attribute lines seen
	bytes int // bytes read
}

func (q *request) reset() {
	q.buf = q.buf[:0]
	q.val = [numAttrs]span{}
	q.attrs, q.bytes = 0, 0
}

// get returns the value of a, or nil when the request did not carry it.
func (q *request) get(a attr) []byte {
	v := q.val[a]
	if !v.set {
		return nil
	}
	return q.buf[v.off:v.end:v.end]
}

// has reports whether the request carried a with a non-empty value.
func (q *request) has(a attr) bool { return q.val[a].set && q.val[a].end > q.val[a].off }

// addLine adds one "name=value" line (newline and an optional carriage
// return already removed). A repeated attribute keeps its last value, which
// the protocol allows.
func (q *request) addLine(line []byte, lim *limits) error {
	q.attrs++
	if q.attrs > lim.maxAttrs {
		return errTooManyAttrs
	}
	if bytes.IndexByte(line, 0) >= 0 {
		return errNUL
	}
	eq := bytes.IndexByte(line, '=')
	if eq < 0 {
		return errNoEquals
	}
	if eq == 0 {
		return errEmptyName
	}
	a, ok := attrOf(line[:eq])
	if !ok {
		return nil
	}
	v := line[eq+1:]
	off := len(q.buf)
	q.buf = append(q.buf, v...)
	q.val[a] = span{off: int32(off), end: int32(len(q.buf)), set: true}
	return nil
}

// readRequest reads one request, up to and including its empty line. It
// returns io.EOF when the peer closed the connection between requests,
// errTruncated when it closed inside one, and started reports whether any
// byte of the request was read (the connection was no longer idle).
// first is called once, after the first line of the request arrived.
func readRequest(r *bufio.Reader, q *request, lim *limits, first func(r *bufio.Reader)) (started bool, err error) {
	q.reset()
	for {
		line, err := r.ReadSlice('\n')
		q.bytes += len(line)
		if err != nil {
			switch {
			case errors.Is(err, bufio.ErrBufferFull):
				return true, errLineTooLong
			case len(line) > 0 || started:
				if isEOF(err) {
					return true, errTruncated
				}
				return true, err
			}
			return false, err
		}
		if !started {
			started = true
			if first != nil {
				first(r)
			}
		}
		if len(line) > lim.maxLine {
			return true, errLineTooLong
		}
		if q.bytes > lim.maxRequest {
			return true, errRequestTooLong
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			return true, nil
		}
		if err := q.addLine(line, lim); err != nil {
			return true, err
		}
	}
}

// complete reports whether the bytes buffered in r hold the end of the
// current request (its empty line), so that reading the rest of it cannot
// block. It is called right after the first line was read.
func complete(r *bufio.Reader) bool {
	b, _ := r.Peek(r.Buffered())
	if len(b) > 0 && b[0] == '\n' {
		return true
	}
	return bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\n\r\n")) || bytes.HasPrefix(b, []byte("\r\n"))
}

// parseUint parses a decimal number without allocating; ok is false for an
// empty value, a non-digit or a value above max.
func parseUint(b []byte, max uint64) (n uint64, ok bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseAddr parses a client or server address as Postfix sends it: an IPv4
// dotted quad or an IPv6 address, tolerating brackets, an "IPv6:" prefix
// and a zone; IPv4-mapped IPv6 addresses are unmapped. IPv4, by far the most
// common, is parsed without allocating.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) >= 2 && b[0] == '[' && b[len(b)-1] == ']' {
		b = b[1 : len(b)-1]
	}
	if len(b) > 5 && (b[0] == 'I' || b[0] == 'i') && bytes.EqualFold(b[:5], []byte("ipv6:")) {
		b = b[5:]
	}
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	if a, ok := parseIPv4(b); ok {
		return a, true
	}
	if bytes.IndexByte(b, ':') < 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.WithZone("").Unmap(), true
}

func parseIPv4(b []byte) (netip.Addr, bool) {
	var ip [4]byte
	part, digits := 0, 0
	v := 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits > 0 && v == 0 {
				return netip.Addr{}, false // leading zero
			}
			v = v*10 + int(c-'0')
			digits++
			if v > 255 {
				return netip.Addr{}, false
			}
		case c == '.':
			if digits == 0 || part == 3 {
				return netip.Addr{}, false
			}
			ip[part] = byte(v)
			part++
			v, digits = 0, 0
		default:
			return netip.Addr{}, false
		}
	}
	if part != 3 || digits == 0 {
		return netip.Addr{}, false
	}
	ip[3] = byte(v)
	return netip.AddrFrom4(ip), true
}

package dovecotpolicy

import (
	"bytes"
	"errors"
)

// This file parses request heads (RFC 9112 sections 2 to 7): strictly,
// and never more liberally than net/http, which FuzzParseHead checks.

// reqHead is a parsed request line and header section. The slices alias
// the connection's read buffer and are valid until the body is read.
type reqHead struct {
	method, target, query []byte
	minor                 int   // HTTP/1.minor
	clen                  int64 // Content-Length, -1 when absent
	clenText              []byte
	chunked               bool
	close                 bool // Connection: close
	keepAlive             bool // Connection: keep-alive
	expect                bool // Expect: 100-continue
	hosts                 int
	ctype                 []byte // the first Content-Type
	hasCtype              bool
	key                   []byte // the first value of the API key header
	keys                  int    // how many API key headers came
}

// httpError is a request the HTTP layer refuses; the connection is closed
// after the answer.
type httpError struct {
	code int
	text string
}

func (e *httpError) Error() string { return e.text }

var (
	errRequestLine   = &httpError{400, "malformed request line"}
	errTarget        = &httpError{400, "malformed request target"}
	errVersion       = &httpError{400, "malformed HTTP version"}
	errVersionNot1   = &httpError{505, "HTTP version not supported"}
	errHeaderLine    = &httpError{400, "malformed header line"}
	errHeaderName    = &httpError{400, "invalid header name"}
	errHeaderValue   = &httpError{400, "invalid header value"}
	errFolding       = &httpError{400, "obsolete line folding"}
	errHost          = &httpError{400, "missing required Host header"}
	errHosts         = &httpError{400, "too many Host headers"}
	errHostValue     = &httpError{400, "malformed Host header"}
	errLength        = &httpError{400, "bad Content-Length"}
	errLengthAndTE   = &httpError{400, "both Content-Length and Transfer-Encoding"}
	errCoding        = &httpError{501, "unsupported transfer encoding"}
	errCoding10      = &httpError{400, "Transfer-Encoding in an HTTP/1.0 request"}
	errExpect        = &httpError{417, "unsupported Expect"}
	errHeadTooLarge  = &httpError{431, "request header fields too large"}
	errIncomplete    = &httpError{400, "incomplete request"}
	errChunked       = errors.New("malformed chunked encoding")
	errChunkWaste    = errors.New("chunked encoding contains too much non-data")
	errTrailerTooBig = errors.New("chunked trailer too large")
)

// headEnd returns the length of the head at the start of b, through the
// empty line that ends it, or -1 if b does not hold it all. *scan is
// where the search resumes: the start of the first line not yet seen
// whole.
func headEnd(b []byte, scan *int) int {
	for {
		i := bytes.IndexByte(b[*scan:], '\n')
		if i < 0 {
			return -1
		}
		line := b[*scan : *scan+i]
		*scan += i + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return *scan
		}
	}
}

// nextLine cuts the first line off b; the line has no LF and no CR
// before it.
func nextLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// parseHead parses a head as headEnd found it. keyName is the API key
// header.
func parseHead(b []byte, keyName string, h *reqHead) *httpError {
	*h = reqHead{clen: -1}
	line, b := nextLine(b)
	method, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok || !isToken(method) {
		return errRequestLine
	}
	target, version, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return errRequestLine
	}
	h.method = method
	if !parseTarget(target, h) {
		return errTarget
	}
	switch string(version) {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		if len(version) != 8 || string(version[:5]) != "HTTP/" || !isDigit(version[5]) || version[6] != '.' || !isDigit(version[7]) {
			return errVersion
		}
		if version[5] != '1' {
			return errVersionNot1
		}
		h.minor = 1 // HTTP/1.x: a later minor version speaks 1.1 at least
	}
	for {
		line, b = nextLine(b)
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errFolding
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			return errHeaderLine
		}
		if !isToken(name) {
			return errHeaderName
		}
		value = trimOWS(value)
		if !validValue(value) {
			return errHeaderValue
		}
		if equalFold(name, keyName) {
			h.keys++
			if h.keys == 1 {
				h.key = value
			}
		}
		if err := h.header(name, value); err != nil {
			return err
		}
	}
	switch {
	case h.minor >= 1 && h.hosts == 0:
		return errHost
	case h.hosts > 1:
		return errHosts
	case h.chunked && h.clen >= 0:
		return errLengthAndTE
	case h.chunked && h.minor == 0:
		return errCoding10 // RFC 9112 6.1: faulty framing
	}
	return nil
}

// header takes in the headers the server uses.
func (h *reqHead) header(name, value []byte) *httpError {
	switch len(name) {
	case 4:
		if equalFold(name, "Host") {
			h.hosts++
			for _, c := range value {
				if !validHostByte[c] {
					return errHostValue
				}
			}
		}
	case 6:
		if equalFold(name, "Expect") && len(value) > 0 {
			if !equalFold(value, "100-continue") {
				return errExpect
			}
			h.expect = true
		}
	case 10:
		if equalFold(name, "Connection") {
			for len(value) > 0 {
				var tok []byte
				tok, value, _ = bytes.Cut(value, []byte{','})
				tok = trimOWS(tok)
				switch {
				case equalFold(tok, "close"):
					h.close = true
				case equalFold(tok, "keep-alive"):
					h.keepAlive = true
				}
			}
		}
	case 12:
		if equalFold(name, "Content-Type") && !h.hasCtype {
			h.ctype, h.hasCtype = value, true
		}
	case 14:
		if equalFold(name, "Content-Length") {
			if h.clen >= 0 { // repeated: only the very same value
				if !bytes.Equal(value, h.clenText) {
					return errLength
				}
				break
			}
			n, ok := parseLength(value)
			if !ok {
				return errLength
			}
			h.clen, h.clenText = n, value
		}
	case 17:
		if equalFold(name, "Transfer-Encoding") {
			if h.chunked || !equalFold(value, "chunked") {
				return errCoding
			}
			h.chunked = true
		}
	}
	return nil
}

// parseTarget checks a request target (origin form, absolute form or
// "*") and finds its query.
func parseTarget(t []byte, h *reqHead) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	h.target = t
	path := t
	switch {
	case t[0] == '/':
	case len(t) == 1 && t[0] == '*':
		return true
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
		rest := t[bytes.IndexByte(t, ':')+3:]
		i := bytes.IndexAny(rest, "/?")
		if i < 0 {
			i = len(rest)
		}
		if !plainAuthority(rest[:i]) {
			return false
		}
		path = rest[i:]
	default:
		return false
	}
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		h.query = path[i+1:]
		path = path[:i]
	}
	for i := 0; i < len(path); i++ {
		if path[i] == '%' && (i+2 >= len(path) || !isHex(path[i+1]) || !isHex(path[i+2])) {
			return false
		}
	}
	return true
}

// plainAuthority reports whether the authority of an absolute-form
// target is a plain host (letters, digits, "-._~", or an IPv6 address in
// brackets) with an optional numeric port. Clients send this form to
// proxies only; it is accepted in its simplest shape.
func plainAuthority(a []byte) bool {
	host, port := a, []byte(nil)
	if i := bytes.LastIndexByte(a, ':'); i >= 0 && bytes.IndexByte(a[i:], ']') < 0 {
		host, port = a[:i], a[i+1:]
	}
	for _, c := range port {
		if !isDigit(c) {
			return false
		}
	}
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		for _, c := range host[1 : len(host)-1] {
			if !isHex(c) && c != ':' && c != '.' {
				return false
			}
		}
		return true
	}
	for _, c := range host {
		if !isDigit(c) && !('a' <= c|0x20 && c|0x20 <= 'z') && c != '-' && c != '.' && c != '_' && c != '~' {
			return false
		}
	}
	return true
}

// parseLength parses a Content-Length value: decimal digits only.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseChunkSize parses a chunk-size line: hex digits, then optional
// extensions, which are ignored.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line) && isHex(line[i]); i++ {
		if i >= 15 {
			return 0, false
		}
		n = n<<4 | int64(unhex(line[i]))
	}
	if i == 0 {
		return 0, false
	}
	ext := trimOWS(line[i:])
	if len(ext) > 0 && ext[0] != ';' || !validValue(ext) {
		return 0, false
	}
	return n, true
}

// Byte classes.

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool { return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'f' }

func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return (c | 0x20) - 'a' + 10
}

// isToken reports whether b is an RFC 9110 token.
func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !tokenByte[c] {
			return false
		}
	}
	return true
}

// validValue reports whether a header value has no control characters
// but tabs.
func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares ASCII case-insensitively.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x != y && (x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z') {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, s string) bool { return len(b) >= len(s) && equalFold(b[:len(s)], s) }

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	return t
}()

// validHostByte is net/http's set of bytes allowed in a Host header.
var validHostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range []byte("!$%&'()*+,-.:;=[]_~") {
		t[c] = true
	}
	return t
}()

package dovecotpolicy

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// request is the part of a policy request body this package uses. Dovecot
// builds the body from auth_policy_request_attributes: a flat JSON object
// of strings (a key with "/" becomes a nested object), plus the booleans
// "success" and "policy_reject" on reports and "tls" everywhere (2.3.2+).
type request struct {
	login    string // requested_username
	pwhash   string // truncated H(nonce‖user‖0‖password), hex
	remote   string // client address (%{rip}, %{remote_ip})
	protocol string // service: imap, pop3, smtp, submission, …
	session  string // Dovecot's session id of the client connection
	failType string // 2.4: internal, credentials, account, expired, disabled, policy

	success      bool
	policyReject bool

	hasLogin, hasRemote, hasSuccess bool
}

// maxDepth bounds the nesting of objects and arrays in a body (Dovecot
// nests one level per "/" in an attribute name).
const maxDepth = 32

// Parse errors. Their texts go into log lines and 400 answers.
var (
	errSyntax   = errors.New("invalid JSON")
	errNotObj   = errors.New("body is not a JSON object")
	errTrailing = errors.New("data after the JSON object")
	errDepth    = errors.New("JSON nested too deep")
	errBoolType = errors.New("success or policy_reject is not a boolean")
	errStrType  = errors.New("a request attribute is not a string")
)

// field identifies the top-level keys the parser keeps.
type field uint8

const (
	fOther field = iota
	fLogin
	fPwhash
	fRemote
	fProtocol
	fSession
	fFailType
	fSuccess
	fPolicyReject
)

func fieldOf(key []byte) field {
	switch string(key) { // no allocation: the compiler compares in place
	case "login":
		return fLogin
	case "pwhash":
		return fPwhash
	case "remote":
		return fRemote
	case "protocol":
		return fProtocol
	case "session_id":
		return fSession
	case "fail_type":
		return fFailType
	case "success":
		return fSuccess
	case "policy_reject":
		return fPolicyReject
	}
	return fOther
}

// parser is a strict RFC 8259 scanner for one request body. It keeps the
// known top-level string and boolean members and checks the syntax of
// everything else without building it. Invalid UTF-8 inside a string is
// replaced by U+FFFD rather than refused: string contents are the
// client's (a user name, an IMAP ID), and a refusal would make Dovecot
// fail open for whoever sent them.
type parser struct {
	b      []byte
	i      int
	tmp    []byte // unescaping buffer, reused
	report bool   // keep what only reports use (pwhash, session_id, fail_type, protocol)
}

// parseRequest parses body into r; report tells whether the attributes
// only reports use are kept. tmp is a scratch buffer that may be reused
// across calls; the returned one should be kept for the next call.
func parseRequest(body []byte, r *request, report bool, tmp []byte) ([]byte, error) {
	p := parser{b: body, tmp: tmp[:0], report: report}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		if p.i >= len(p.b) {
			return p.tmp, errNotObj
		}
		if c := p.b[p.i]; c == '[' || c == '"' || c == 't' || c == 'f' || c == 'n' || c == '-' || (c >= '0' && c <= '9') {
			return p.tmp, errNotObj
		}
		return p.tmp, errSyntax
	}
	p.i++
	p.ws()
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			p.ws()
			key, ok := p.str()
			if !ok {
				return p.tmp, errSyntax
			}
			f := fieldOf(key)
			p.ws()
			if p.peek() != ':' {
				return p.tmp, errSyntax
			}
			p.i++
			p.ws()
			if err := p.member(f, r); err != nil {
				return p.tmp, err
			}
			p.ws()
			c := p.peek()
			p.i++
			if c == '}' {
				break
			}
			if c != ',' {
				return p.tmp, errSyntax
			}
		}
	}
	p.ws()
	if p.i != len(p.b) {
		return p.tmp, errTrailing
	}
	return p.tmp, nil
}

// member parses the value of a top-level member.
func (p *parser) member(f field, r *request) error {
	switch f {
	case fOther:
		return p.skip(1)
	case fSuccess, fPolicyReject:
		v, err := p.boolish()
		if err != nil {
			return err
		}
		if f == fSuccess {
			r.success, r.hasSuccess = v, true
		} else {
			r.policyReject = v
		}
		return nil
	}
	if p.peek() != '"' {
		if p.peek() == 'n' && p.lit("null") { // an unset attribute
			return p.set(f, r, nil)
		}
		if err := p.skip(1); err != nil {
			return err
		}
		return errStrType
	}
	s, ok := p.str()
	if !ok {
		return errSyntax
	}
	return p.set(f, r, s)
}

func (p *parser) set(f field, r *request, s []byte) error {
	if !p.report && f != fLogin && f != fRemote {
		return nil
	}
	switch f {
	case fLogin:
		r.login, r.hasLogin = string(s), true
	case fPwhash:
		r.pwhash = string(s)
	case fRemote:
		r.remote, r.hasRemote = string(s), true
	case fProtocol:
		r.protocol = internProtocol(s)
	case fSession:
		r.session = string(s)
	case fFailType:
		r.failType = internFailType(s)
	}
	return nil
}

// boolish reads a JSON boolean, or a string spelling one: an admin may
// also list "success" among the request attributes, and Dovecot then
// sends it as a string before its own boolean (the last one wins).
func (p *parser) boolish() (bool, error) {
	switch p.peek() {
	case 't':
		if p.lit("true") {
			return true, nil
		}
		return false, errSyntax
	case 'f':
		if p.lit("false") {
			return false, nil
		}
		return false, errSyntax
	case '"':
		s, ok := p.str()
		if !ok {
			return false, errSyntax
		}
		switch string(s) {
		case "true", "yes", "1":
			return true, nil
		case "false", "no", "0", "":
			return false, nil
		}
		return false, errBoolType
	}
	if err := p.skip(1); err != nil {
		return false, err
	}
	return false, errBoolType
}

func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

// str reads a string at p.i and returns its value. The value aliases
// either the body (no escapes, valid UTF-8: the usual case) or p.tmp,
// and is valid until the next call.
func (p *parser) str() ([]byte, bool) {
	if p.peek() != '"' {
		return nil, false
	}
	p.i++
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c >= utf8.RuneSelf:
			return p.strSlow(start)
		case c < 0x20:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

// strSlow finishes a string with escapes or non-ASCII bytes into p.tmp.
func (p *parser) strSlow(start int) ([]byte, bool) {
	t := append(p.tmp[:0], p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			p.tmp = t
			return t, true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return nil, false
			}
			e := p.b[p.i+1]
			p.i += 2
			switch e {
			case '"', '\\', '/':
				t = append(t, e)
			case 'b':
				t = append(t, '\b')
			case 'f':
				t = append(t, '\f')
			case 'n':
				t = append(t, '\n')
			case 'r':
				t = append(t, '\r')
			case 't':
				t = append(t, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return nil, false
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					save := p.i
					if p.lit(`\u`) {
						if r2, ok = p.hex4(); !ok {
							return nil, false
						}
					}
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
					} else {
						r = utf8.RuneError
						p.i = save // a lone surrogate; what follows is read again
					}
				}
				t = utf8.AppendRune(t, r)
			default:
				return nil, false
			}
		case c < utf8.RuneSelf:
			t = append(t, c)
			p.i++
		default:
			r, n := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && n == 1 {
				t = utf8.AppendRune(t, utf8.RuneError)
			} else {
				t = append(t, p.b[p.i:p.i+n]...)
			}
			p.i += n
		}
	}
	return nil, false
}

func (p *parser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	p.i += 4
	return r, true
}

// skip checks and passes over any value; depth is its nesting level.
func (p *parser) skip(depth int) error {
	if depth > maxDepth {
		return errDepth
	}
	switch c := p.peek(); {
	case c == '"':
		if _, ok := p.str(); !ok {
			return errSyntax
		}
	case c == '{' || c == '[':
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		p.i++
		p.ws()
		if p.peek() == close {
			p.i++
			return nil
		}
		for {
			p.ws()
			if c == '{' {
				if _, ok := p.str(); !ok {
					return errSyntax
				}
				p.ws()
				if p.peek() != ':' {
					return errSyntax
				}
				p.i++
				p.ws()
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			p.ws()
			d := p.peek()
			p.i++
			if d == close {
				return nil
			}
			if d != ',' {
				return errSyntax
			}
		}
	case c == 't':
		if !p.lit("true") {
			return errSyntax
		}
	case c == 'f':
		if !p.lit("false") {
			return errSyntax
		}
	case c == 'n':
		if !p.lit("null") {
			return errSyntax
		}
	case c == '-' || ('0' <= c && c <= '9'):
		return p.number()
	default:
		return errSyntax
	}
	return nil
}

// number passes over a number in RFC 8259 syntax.
func (p *parser) number() error {
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case '1' <= c && c <= '9':
		p.digits()
	default:
		return errSyntax
	}
	if p.peek() == '.' {
		p.i++
		if n := p.digits(); n == 0 {
			return errSyntax
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if n := p.digits(); n == 0 {
			return errSyntax
		}
	}
	return nil
}

func (p *parser) digits() int {
	n := 0
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// internProtocol returns the service names Dovecot sends without
// allocating; others are copied.
func internProtocol(s []byte) string {
	switch string(s) {
	case "imap":
		return "imap"
	case "pop3":
		return "pop3"
	case "smtp":
		return "smtp"
	case "submission":
		return "submission"
	case "managesieve":
		return "managesieve"
	case "lmtp":
		return "lmtp"
	case "":
		return ""
	}
	return string(s)
}

// internFailType does the same for Dovecot 2.4's fail_type values.
func internFailType(s []byte) string {
	switch string(s) {
	case "":
		return ""
	case "internal":
		return "internal"
	case "credentials":
		return "credentials"
	case "account":
		return "account"
	case "expired":
		return "expired"
	case "disabled":
		return "disabled"
	case "policy":
		return "policy"
	}
	return string(s)
}

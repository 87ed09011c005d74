package eximpolicy

import (
	"errors"
	"net/netip"
	"strconv"
)

// Stage is the point of the SMTP session an ACL asks from; it is the
// second word of a request line.
type Stage uint8

// Stages, in the order they happen in an SMTP session.
const (
	StageUnknown  Stage = iota
	StageConnect        // acl_smtp_connect: may this address talk to us?
	StageAuth           // acl_smtp_auth, before an AUTH command is processed
	StageAuthFail       // report: an AUTH attempt failed
	StageAuthOK         // report: the session authenticated (first MAIL)
	StageMail           // acl_smtp_mail of an authenticated session
	StageRcpt           // acl_smtp_rcpt of an authenticated session
	StageRcptFail       // report: a recipient of an authenticated session was refused
	StageData           // report: acl_smtp_data, the message is complete
	StageQuit           // report: acl_smtp_quit / acl_smtp_notquit
	numStages
)

var stageNames = [numStages]string{"", "connect", "auth", "authfail", "authok", "mail", "rcpt", "rcptfail", "data", "quit"}

func (s Stage) String() string {
	if s < numStages {
		return stageNames[s]
	}
	return ""
}

func parseStage(b []byte) Stage {
	for s := StageConnect; s < numStages; s++ {
		if string(b) == stageNames[s] {
			return s
		}
	}
	return StageUnknown
}

// request is one parsed request line. Fields that were not sent keep
// their zero value.
type request struct {
	stage   Stage
	ip      netip.Addr // ip=: the client ($sender_host_address)
	port    uint16     // port=: the client's port ($sender_host_port)
	lip     netip.Addr // lip=: our address ($received_ip_address)
	lport   uint16     // lport=: our port ($received_port)
	account []byte     // account=: $authenticated_id or $authenticated_fail_id
	pwhash  []byte     // pwhash=: keyed hash of the tried credentials (authfail)
	qid     []byte     // qid=: $message_exim_id (data)
	rcpts   int        // rcpts=: $recipients_count (data)
	size    int64      // size=: $message_size (data)
}

// Limits on single values; longer ones make the request malformed.
const (
	maxAccount = 512 // bytes after unquoting; NormalizeAccount keeps 256
	maxToken   = 128 // pwhash, qid
)

// parseError says what is wrong with a request line. It never carries the
// line itself: callers decide what of it is safe to log.
type parseError struct {
	what string // "unknown stage", "bad value", ...
	key  string // the key concerned, if any (a known key or a sanitised unknown one)
}

func (e *parseError) Error() string {
	if e.key != "" {
		return e.what + " for key " + strconv.Quote(e.key)
	}
	return e.what
}

var (
	errEmpty     = &parseError{what: "empty request"}
	errVersion   = &parseError{what: `request does not start with "v1 "`}
	errStage     = &parseError{what: "unknown stage"}
	errSyntax    = &parseError{what: "expected key=value"}
	errQuote     = &parseError{what: "unterminated quoted value"}
	errBareBytes = &parseError{what: "control or non-ASCII byte outside a quoted value"}
)

// parseRequest parses one request line (without its line end) into r. The
// byte slices in r alias line, which parseRequest may rewrite in place
// (unquoting only ever shortens a value).
//
// Grammar (see the package documentation):
//
//	line  = "v1" SP stage *(SP+ key "=" value) [SP+]
//	value = bare / quoted
//	bare  = *(%x21-7E except DQUOTE)
//	quoted = DQUOTE *(any byte except DQUOTE and "\" / "\" any byte) DQUOTE
//
// which is what Exim's ${quote:} produces: \n and \r stand for newline and
// carriage return, any other escaped byte for itself. Unknown keys are
// ignored so that later ACLs can send more than this version reads.
func parseRequest(line []byte, r *request) error {
	*r = request{}
	i := skipSpace(line, 0)
	if i == len(line) {
		return errEmpty
	}
	if len(line)-i < 3 || line[i] != 'v' || line[i+1] != '1' || (line[i+2] != ' ' && line[i+2] != '\t') {
		return errVersion
	}
	i = skipSpace(line, i+3)
	j := i
	for j < len(line) && line[j] != ' ' && line[j] != '\t' {
		j++
	}
	r.stage = parseStage(line[i:j])
	if r.stage == StageUnknown {
		return errStage
	}
	i = j
	for {
		i = skipSpace(line, i)
		if i == len(line) {
			return nil
		}
		// key
		k := i
		for i < len(line) && isKeyByte(line[i]) {
			i++
		}
		if i == k || i == len(line) || line[i] != '=' {
			return errSyntax
		}
		key := line[k:i]
		i++
		// value
		var val []byte
		if i < len(line) && line[i] == '"' {
			v, n, ok := unquote(line, i)
			if !ok {
				return &parseError{what: errQuote.what, key: safeKey(key)}
			}
			val, i = v, n
		} else {
			v := i
			for i < len(line) && line[i] != ' ' && line[i] != '\t' {
				c := line[i]
				if c <= 0x20 || c >= 0x7f || c == '"' {
					return &parseError{what: errBareBytes.what, key: safeKey(key)}
				}
				i++
			}
			val = line[v:i]
		}
		if i < len(line) && line[i] != ' ' && line[i] != '\t' {
			return &parseError{what: "missing space after value", key: safeKey(key)}
		}
		if err := r.set(key, val); err != nil {
			return err
		}
	}
}

// set stores one known key; unknown keys are ignored.
func (r *request) set(key, val []byte) error {
	var err error
	switch string(key) {
	case "ip":
		r.ip, err = parseAddr(val)
	case "lip":
		r.lip, err = parseAddr(val)
	case "port":
		r.port, err = parsePort(val)
	case "lport":
		r.lport, err = parsePort(val)
	case "account":
		if len(val) > maxAccount {
			return &parseError{what: "value too long", key: "account"}
		}
		r.account = val
	case "pwhash":
		r.pwhash, err = token(val)
	case "qid":
		r.qid, err = token(val)
	case "rcpts":
		var n int64
		n, err = parseCount(val, 1<<20)
		r.rcpts = int(n)
	case "size":
		r.size, err = parseCount(val, 1<<50)
	default:
		return nil
	}
	if err != nil {
		return &parseError{what: "bad value", key: string(key)}
	}
	return nil
}

var errValue = errors.New("bad value")

// parseAddr accepts an address as Exim prints it: empty (not known),
// bare, or in brackets; an IPv4-mapped IPv6 address is unmapped and a
// zone is dropped.
func parseAddr(b []byte) (netip.Addr, error) {
	if len(b) == 0 {
		return netip.Addr{}, nil
	}
	if len(b) >= 2 && b[0] == '[' && b[len(b)-1] == ']' {
		b = b[1 : len(b)-1]
	}
	if len(b) > 64 {
		return netip.Addr{}, errValue
	}
	a, err := netip.ParseAddr(string(b))
	if err != nil {
		return netip.Addr{}, errValue
	}
	return a.Unmap().WithZone(""), nil
}

// parsePort accepts empty, a port number, or -1 (Exim's "not known" in
// -bh test sessions).
func parsePort(b []byte) (uint16, error) {
	if len(b) == 0 || string(b) == "-1" {
		return 0, nil
	}
	n, err := parseCount(b, 65535)
	return uint16(n), err
}

// parseCount parses a non-negative decimal number up to max; empty is 0.
func parseCount(b []byte, max int64) (int64, error) {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errValue
		}
		n = n*10 + int64(c-'0')
		if n > max {
			return 0, errValue
		}
	}
	return n, nil
}

// token accepts a short printable ASCII value (pwhash, qid).
func token(b []byte) ([]byte, error) {
	if len(b) > maxToken {
		return nil, errValue
	}
	for _, c := range b {
		if c <= 0x20 || c >= 0x7f {
			return nil, errValue
		}
	}
	return b, nil
}

// unquote decodes the quoted value starting at line[i] == '"' in place. It
// returns the value, the index just after the closing quote, and false if
// the quote is not closed.
func unquote(line []byte, i int) ([]byte, int, bool) {
	start := i + 1
	w := start
	for r := start; r < len(line); r++ {
		c := line[r]
		switch c {
		case '"':
			return line[start:w], r + 1, true
		case '\\':
			r++
			if r == len(line) {
				return nil, 0, false
			}
			c = line[r]
			switch c {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			}
		}
		line[w] = c
		w++
	}
	return nil, 0, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	return i
}

func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_'
}

// safeKey returns a key for an error message; keys only hold [a-z0-9_]
// and are short, but cap them anyway.
func safeKey(k []byte) string {
	if len(k) > 32 {
		k = k[:32]
	}
	return string(k)
}

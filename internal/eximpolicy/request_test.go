package eximpolicy

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// eximQuote does what Exim's ${quote:} does (expand.c, EOP_QUOTE): the
// string as is if it is made of letters, digits, "_", "." and "-" only,
// else in double quotes with " and \ escaped and newline and carriage
// return written as \n and \r.
func eximQuote(s string) string {
	plain := s != ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func TestParseRequest(t *testing.T) {
	ip := netip.MustParseAddr
	tests := []struct {
		line string
		want request
	}{
		{"v1 connect ip=192.0.2.7 port=50312 lip=198.51.100.1 lport=587",
			request{stage: StageConnect, ip: ip("192.0.2.7"), port: 50312, lip: ip("198.51.100.1"), lport: 587}},
		// -bh test sessions: no local address, port -1
		{"v1 auth ip=192.0.2.7 port=4000 lip= lport=-1", request{stage: StageAuth, ip: ip("192.0.2.7"), port: 4000}},
		{`v1 authfail ip=192.0.2.7 account=" (set_id=joe@example.com)" pwhash=162f8e23fecad5a8`,
			request{stage: StageAuthFail, ip: ip("192.0.2.7"), account: []byte(" (set_id=joe@example.com)"), pwhash: []byte("162f8e23fecad5a8")}},
		{`v1 authok ip=[2001:db8::7] account="joe@example.com"`, request{stage: StageAuthOK, ip: ip("2001:db8::7"), account: []byte("joe@example.com")}},
		{`v1 mail ip=::ffff:192.0.2.7 account=joe`, request{stage: StageMail, ip: ip("192.0.2.7"), account: []byte("joe")}},
		{`v1 rcpt ip=fe80::1%eth0 account=""`, request{stage: StageRcpt, ip: ip("fe80::1"), account: []byte{}}},
		{`v1 rcptfail account="joe"`, request{stage: StageRcptFail, account: []byte("joe")}},
		{`v1 data account=joe rcpts=3 size=2201 qid=1xWvpq-0004GH-1Q`,
			request{stage: StageData, account: []byte("joe"), rcpts: 3, size: 2201, qid: []byte("1xWvpq-0004GH-1Q")}},
		{"v1 quit", request{stage: StageQuit}},
		// separators: several spaces, tabs, trailing space
		{"  v1\tconnect   ip=192.0.2.7\t ", request{stage: StageConnect, ip: ip("192.0.2.7")}},
		// unknown keys are ignored, whatever their value
		{`v1 connect future=1 other="a b" ip=192.0.2.7 x=`, request{stage: StageConnect, ip: ip("192.0.2.7")}},
		// escapes: \" \\ \n \r, and any other escaped byte stands for itself
		{`v1 authfail account="a\"b\\c\nd\re\x"`, request{stage: StageAuthFail, account: []byte("a\"b\\c\nd\rex")}},
		// 8-bit bytes and spaces inside quotes are kept (NormalizeAccount cleans them)
		{"v1 authfail account=\"j\xf6e \xff\"", request{stage: StageAuthFail, account: []byte("j\xf6e \xff")}},
		// a bare value may hold "=" (base64)
		{"v1 authfail pwhash=ab== ", request{stage: StageAuthFail, pwhash: []byte("ab==")}},
		// the last of a repeated key wins
		{"v1 connect ip=192.0.2.1 ip=192.0.2.2", request{stage: StageConnect, ip: ip("192.0.2.2")}},
	}
	for _, tt := range tests {
		var r request
		if err := parseRequest([]byte(tt.line), &r); err != nil {
			t.Errorf("%q: %v", tt.line, err)
			continue
		}
		if !sameRequest(&r, &tt.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tt.line, r, tt.want)
		}
	}
}

func sameRequest(a, b *request) bool {
	return a.stage == b.stage && a.ip == b.ip && a.port == b.port && a.lip == b.lip && a.lport == b.lport &&
		bytes.Equal(a.account, b.account) && bytes.Equal(a.pwhash, b.pwhash) && bytes.Equal(a.qid, b.qid) &&
		a.rcpts == b.rcpts && a.size == b.size
}

func TestParseRequestErrors(t *testing.T) {
	tests := []struct{ line, err string }{
		{"", "empty request"},
		{"   ", "empty request"},
		{"connect ip=192.0.2.7", `request does not start with "v1 "`},
		{"v2 connect", `request does not start with "v1 "`},
		{"v1", `request does not start with "v1 "`},
		{"v1 hello ip=192.0.2.7", "unknown stage"},
		{"v1 CONNECT", "unknown stage"},
		{"v1 connect ip", "expected key=value"},
		{"v1 connect =192.0.2.7", "expected key=value"},
		{"v1 connect IP=192.0.2.7", "expected key=value"},
		{"v1 connect ip=300.1.1.1", `bad value for key "ip"`},
		{"v1 connect ip=joe", `bad value for key "ip"`},
		{"v1 connect port=65536", `bad value for key "port"`},
		{"v1 connect lport=-2", `bad value for key "lport"`},
		{"v1 data rcpts=x", `bad value for key "rcpts"`},
		{"v1 data size=-1", `bad value for key "size"`},
		{"v1 data size=99999999999999999999", `bad value for key "size"`},
		{`v1 authfail account="joe`, `unterminated quoted value for key "account"`},
		{`v1 authfail account="joe\`, `unterminated quoted value for key "account"`},
		{`v1 authfail account="joe"x`, `missing space after value for key "account"`},
		{`v1 authfail account=jo"e`, `control or non-ASCII byte outside a quoted value for key "account"`},
		{"v1 authfail account=j\xf6e", `control or non-ASCII byte outside a quoted value for key "account"`},
		{"v1 authfail account=jo\x01e", `control or non-ASCII byte outside a quoted value for key "account"`},
		{"v1 connect\x00 ip=192.0.2.7", "unknown stage"},
		{"v1 authfail pwhash=\"a b\"", `bad value for key "pwhash"`},
		{"v1 data qid=" + strings.Repeat("x", maxToken+1), `bad value for key "qid"`},
		{`v1 authfail account="` + strings.Repeat("x", maxAccount+1) + `"`, `value too long for key "account"`},
	}
	for _, tt := range tests {
		var r request
		err := parseRequest([]byte(tt.line), &r)
		if err == nil {
			t.Errorf("%q: no error, want %q", tt.line, tt.err)
			continue
		}
		if err.Error() != tt.err {
			t.Errorf("%q: error %q, want %q", tt.line, err, tt.err)
		}
	}
}

func TestQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"", "joe", "joe@example.com", `a "b" \c`, "line\nbreak\r", "\xff\xfe", "x=y z", `\`, `"`} {
		line := []byte("v1 authfail account=" + eximQuote(s))
		var r request
		if err := parseRequest(line, &r); err != nil {
			t.Errorf("%q: %v", s, err)
			continue
		}
		if string(r.account) != s {
			t.Errorf("%q: account %q", s, r.account)
		}
	}
}

func TestFailID(t *testing.T) {
	for in, want := range map[string]string{
		" (set_id=joe@example.com)": "joe@example.com", // Exim 4.96
		"joe@example.com":           "joe@example.com",
		"(set_id=)":                 "(set_id=)",
		"":                          "",
		" (set_id=a b)":             "a b",
	} {
		if got := string(failID([]byte(in))); got != want {
			t.Errorf("failID(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseRequest checks that no input makes the parser panic or return
// values out of bounds, and that any account survives ${quote:}.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"v1 connect ip=192.0.2.7 port=50312 lip=198.51.100.1 lport=587",
		`v1 authfail ip=192.0.2.7 account=" (set_id=joe@example.com)" pwhash=162f8e23fecad5a8`,
		`v1 data account="joe@example.com" rcpts=3 size=2201 qid=1xWvpq-0004GH-1Q`,
		`v1 rcpt account="a\"b\\c\nd"`,
		"v1 quit ip=[::1]",
		"\xff\x00garbage",
	} {
		f.Add([]byte(s), "joe@example.com")
	}
	f.Fuzz(func(t *testing.T, line []byte, account string) {
		var r request
		if err := parseRequest(append([]byte(nil), line...), &r); err == nil {
			if r.stage == StageUnknown || r.stage >= numStages {
				t.Fatalf("stage %d accepted", r.stage)
			}
			if len(r.account) > maxAccount || len(r.pwhash) > maxToken || len(r.qid) > maxToken || r.rcpts < 0 || r.size < 0 {
				t.Fatalf("value out of bounds: %+v", r)
			}
			session(&r)
		}
		if len(account) > maxAccount {
			return
		}
		in := []byte("v1 rcpt account=" + eximQuote(account) + " ip=192.0.2.7")
		if err := parseRequest(in, &r); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if string(r.account) != account {
			t.Fatalf("account %q came back as %q", account, r.account)
		}
	})
}

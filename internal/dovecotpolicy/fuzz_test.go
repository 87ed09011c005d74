package dovecotpolicy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func fuzzSeeds(f *testing.F) {
	for _, fx := range readFixtures(f, "dovecot-2.3.19.txt") {
		f.Add([]byte(fx.body))
	}
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"login":"a"}{}`, `{"login":"\ud83d\ude00\udc00\ud800x"}`,
		`{"login":"a","remote":"192.0.2.1","attrs":{"cos":{"x":[1,-2.5e-3,true,false,null,"s"]}}}`,
		`{"login":42}`, `{"success":"yes","success":false}`, "{\"login\":\"\xff\"}", `{"n":-0.0E+1}`,
		`{"login":"a\u0000b","remote":"::1","protocol":"imap","session_id":"s/+x","pwhash":"abc","fail_type":"policy","policy_reject":true,"success":false,"tls":"TLS"}`,
	} {
		f.Add([]byte(s))
	}
}

// The request parser agrees with encoding/json: what it accepts is valid
// JSON with the same values, and valid JSON objects are accepted unless a
// kept attribute has the wrong type or the nesting is too deep.
func FuzzParseRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		var r request
		_, err := parseRequest(b, &r, true, nil)
		valid := json.Valid(b)
		var m map[string]any
		isObj := valid && json.Unmarshal(b, &m) == nil && m != nil
		switch {
		case err == nil:
			if !isObj {
				t.Fatalf("accepted %q, which is not a JSON object", b)
			}
		case errors.Is(err, errSyntax), errors.Is(err, errTrailing):
			if valid {
				t.Fatalf("refused valid JSON %q: %v", b, err)
			}
			return
		case errors.Is(err, errNotObj):
			if isObj {
				t.Fatalf("refused object %q: %v", b, err)
			}
			return
		default: // a type or depth error: the syntax is not in question
			return
		}
		str := func(k string) (string, bool) {
			v, ok := m[k]
			if !ok || v == nil {
				return "", ok
			}
			return v.(string), true
		}
		for _, c := range []struct {
			key, got string
			has      bool // for login and remote: the parser saw the key
		}{
			{"login", r.login, r.hasLogin}, {"remote", r.remote, r.hasRemote}, {"pwhash", r.pwhash, false},
			{"protocol", r.protocol, false}, {"session_id", r.session, false}, {"fail_type", r.failType, false},
		} {
			want, ok := str(c.key)
			if c.got != want || (c.key == "login" || c.key == "remote") && c.has != ok {
				t.Fatalf("%s of %q: got %q (present %v), encoding/json %q (present %v)", c.key, b, c.got, c.has, want, ok)
			}
		}
		if v, ok := m["success"].(bool); ok && (v != r.success || !r.hasSuccess) {
			t.Fatalf("success of %q: got %v, encoding/json %v", b, r.success, v)
		}
		if v, ok := m["policy_reject"].(bool); ok && v != r.policyReject {
			t.Fatalf("policy_reject of %q: got %v, encoding/json %v", b, r.policyReject, v)
		}
	})
}

// Whatever the body, the handler answers 200 or 400 and never panics.
func FuzzHandler(f *testing.F) {
	fuzzSeeds(f)
	s, err := New(Config{Decider: newFake(), Logger: discardLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, cmd := range []string{"allow", "report"} {
			raw := dovecotRequest("/?command="+cmd, "", string(b))
			out := serveMem(s, []byte(raw), 0)
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
			if err != nil {
				t.Fatalf("%s %q: answer %q: %v", cmd, b, out, err)
			}
			body, _ := io.ReadAll(resp.Body)
			switch resp.StatusCode {
			case 200:
				if !strings.HasPrefix(string(body), `{"status":`) {
					t.Fatalf("%s %q: 200 with %q", cmd, b, body)
				}
			case 400:
			default:
				t.Fatalf("%s %q: status %d", cmd, b, resp.StatusCode)
			}
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

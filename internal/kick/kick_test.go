package kick

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

func TestCheckAccount(t *testing.T) {
	refused := []string{
		"", "*", "a*", "*@example.com", "jo?@example.com", "?",
		"0/0", "10.0.0.0/8", "joe/x", "127.1", "127.0.0.1", "2130706433", "0x7f.1", "0X7F000001", "017.0.0.1",
		"::1", "[::1]", "fe80::1", "::", "a:b",
		"joe @example.com", "joe\t@example.com", "joe\x00", "joe\n", "joe\r\n", "joe\u00a0x", "joe\u2028",
		"\xff\xfe", strings.Repeat("a", 513),
	}
	for _, a := range refused {
		if err := CheckAccount(a); err == nil {
			t.Errorf("CheckAccount(%q) = nil, want a refusal", a)
		}
	}
	accepted := []string{"joe@example.com", "-joe", "--", "-f", "cafe", "beef.dead", "1a", "a1", "joe.smith", "jöe@exämple.de", "x.1.2.3", strings.Repeat("a", 512)}
	for _, a := range accepted {
		if err := CheckAccount(a); err != nil {
			t.Errorf("CheckAccount(%q) = %v, want nil", a, err)
		}
	}
	if err := CheckAccount("*"); !strings.Contains(err.Error(), "wildcard") {
		t.Errorf("the refusal of * should say why: %v", err)
	}
}

func TestNew(t *testing.T) {
	k, err := New(config.Kick{})
	if k != nil || err != nil {
		t.Fatalf("method \"\": got %v, %v, want nil, nil", k, err)
	}
	bad := []config.Kick{
		{Method: "http", URL: "ftp://x/", APIKey: "k"},
		{Method: "http", URL: "http://127.0.0.1:8080/doveadm/v1"},
		{Method: "command"},
		{Method: "command", Command: []string{"doveadm", "kick"}},
		{Method: "smoke-signals"},
	}
	for _, c := range bad {
		if k, err := New(c); err == nil {
			t.Errorf("New(%+v) = %v, want an error", c, k)
		}
	}
	if k, err := New(config.Kick{Method: "http", URL: "http://127.0.0.1:8080/doveadm/v1", APIKey: "k"}); err != nil || k == nil {
		t.Errorf("http: %v, %v", k, err)
	}
	if k, err := New(config.Kick{Method: "command", Command: []string{"/usr/bin/doveadm", "kick"}}); err != nil || k == nil {
		t.Errorf("command: %v, %v", k, err)
	}
}

// fakeDoveadmAPI plays the doveadm HTTP API: it checks each request and
// answers with the body answer gives for the command.
type fakeDoveadmAPI struct {
	t      *testing.T
	key    string
	answer func(command string) (int, string)
	mu     sync.Mutex
	bodies []string
}

func (f *fakeDoveadmAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, string(body))
	f.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/doveadm/v1" || r.Header.Get("Content-Type") != "application/json" {
		f.t.Errorf("request %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if r.Header.Get("Authorization") != "X-Dovecot-API "+base64.StdEncoding.EncodeToString([]byte(f.key)) {
		w.Header().Set("WWW-Authenticate", "X-Dovecot-API")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	command := "kick"
	if strings.HasPrefix(string(body), `[["who",`) {
		command = "who"
	}
	code, answer := f.answer(command)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, answer)
}

func (f *fakeDoveadmAPI) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

func newFakeAPI(t *testing.T, answer func(command string) (int, string)) (*fakeDoveadmAPI, string) {
	f := &fakeDoveadmAPI{t: t, key: "s3cret key", answer: answer}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL + "/doveadm/v1"
}

// The answers below are those of Dovecot 2.3.19 (who, kick, nothing
// matched, bad request) and of the 2.4 kick (a count).
const (
	// 2.3.19 really closes the list after the first row.
	who23     = `[["doveadmResponse",[{"username":"joe@example.com","connections":"1","service":"pop3","pids":"(29228)","ips":"(127.0.0.1)"}],{"username":"joe@example.com","connections":"2","service":"imap","pids":"(29227 29230)","ips":"(127.0.0.1)"},"mailwarden-who"]]`
	whoList   = `[["doveadmResponse",[{"username":"joe@example.com","connections":"2","service":"imap","pids":"(13192 13190)","ips":"(127.0.0.1)"},{"username":"joe@example.com","connections":"1","service":"pop3","pids":"(13200)","ips":"(127.0.0.1)"}],"mailwarden-who"]]`
	whoNone   = `[["doveadmResponse",[],"mailwarden-who"]]`
	kick23    = `[["doveadmResponse",[{"result":"joe@example.com"}],"mailwarden-kick"]]`
	kick24    = `[["doveadmResponse",[{"count":"4"}],"mailwarden-kick"]]`
	notFound  = `[["error",{"type":"exitCode", "exitCode":68},"mailwarden-kick"]]`
	tempFail  = `[["error",{"type":"exitCode", "exitCode":75},"mailwarden-kick"]]`
	unknownMe = `[["error",{"type":"unknownMethod", "exitCode":0},"mailwarden-kick"]]`
)

func TestHTTPKick(t *testing.T) {
	cases := []struct {
		name      string
		who, kick string
		kickCode  int
		want      int
		errHas    string
	}{
		{"2.3 lists users; who counts", who23, kick23, 200, 3, ""},
		{"who as a proper list", whoList, kick23, 200, 3, ""},
		{"2.3 who failed", "garbage", kick23, 200, 1, ""},
		{"2.4 counts", whoNone, kick24, 200, 4, ""},
		{"no session", whoNone, notFound, 200, 0, ""},
		{"temporary failure", who23, tempFail, 200, 0, "temporary failure (is anvil running?) (exit code 75)"},
		{"unknown method", whoNone, unknownMe, 200, 0, `error "unknownMethod"`},
		{"bad request", whoNone, "Parameter `mask' must be string or array", 400, 0, "400 Bad Request: Parameter `mask' must be string or array"},
		{"server error", whoNone, "", 500, 0, "500 Internal Server Error"},
		{"not JSON", whoNone, "<html>", 200, 0, "other than a JSON array"},
		{"other tag", whoNone, `[["doveadmResponse",[],"x"],["doveadmResponse",[],"y"]]`, 200, 0, `no answer with tag "mailwarden-kick"`},
		{"bad count", whoNone, `[["doveadmResponse",[{"count":"many"}],"mailwarden-kick"]]`, 200, 0, "unexpected count"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, url := newFakeAPI(t, func(command string) (int, string) {
				if command == "who" {
					return 200, c.who
				}
				return c.kickCode, c.kick
			})
			k, err := New(config.Kick{Method: "http", URL: url, APIKey: f.key, Timeout: config.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			res, err := k.Kick(context.Background(), "joe@example.com")
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("err = %v, want one with %q", err, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Method != "http" || res.Kicked != c.want || res.Detail == "" {
				t.Fatalf("result %+v, want %d kicked", res, c.want)
			}
			reqs := f.requests()
			want := []string{
				`[["who",{"mask":["joe@example.com"]},"mailwarden-who"]]`,
				`[["kick",{"mask":["joe@example.com"]},"mailwarden-kick"]]`,
			}
			if strings.Join(reqs, "\n") != strings.Join(want, "\n") {
				t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(reqs, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestHTTPKickWrongKey(t *testing.T) {
	_, url := newFakeAPI(t, func(string) (int, string) { return 200, kick23 })
	k, _ := New(config.Kick{Method: "http", URL: url, APIKey: "wrong", Timeout: config.Duration(5 * time.Second)})
	_, err := k.Kick(context.Background(), "joe@example.com")
	if err == nil || !strings.Contains(err.Error(), "refused the key (401 Unauthorized)") || !strings.Contains(err.Error(), "doveadm_api_key") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "wrong") {
		t.Errorf("the error shows the key: %v", err)
	}
}

// Names doveadm would read as a mask of other users are refused before any
// request is made.
func TestHTTPKickRefusesMasks(t *testing.T) {
	f, url := newFakeAPI(t, func(string) (int, string) { return 200, kick23 })
	k, _ := New(config.Kick{Method: "http", URL: url, APIKey: f.key, Timeout: config.Duration(5 * time.Second)})
	for _, a := range []string{"*", "", "*@example.com", "j?e@example.com", "0/0", "127.0.0.1", "joe\n"} {
		if res, err := k.Kick(context.Background(), a); err == nil {
			t.Errorf("Kick(%q) = %+v, want an error", a, res)
		}
	}
	if r := f.requests(); len(r) != 0 {
		t.Fatalf("requests were made: %q", r)
	}
}

func TestHTTPKickTimeoutAndRedirect(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	k, _ := New(config.Kick{Method: "http", URL: slow.URL + "/doveadm/v1", APIKey: "k", Timeout: config.Duration(300 * time.Millisecond)})
	// The API never answers: Kick gives up by itself (the test would
	// otherwise hang until release).
	_, err := k.Kick(context.Background(), "joe@example.com")
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("slow API: err = %v, want the timeout", err)
	}

	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the redirect was followed, with Authorization %q", r.Header.Get("Authorization"))
	}))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.URL+"/doveadm/v1", http.StatusTemporaryRedirect))
	defer redirect.Close()
	k, _ = New(config.Kick{Method: "http", URL: redirect.URL + "/doveadm/v1", APIKey: "k", Timeout: config.Duration(2 * time.Second)})
	if _, err := k.Kick(context.Background(), "joe@example.com"); err == nil || !strings.Contains(err.Error(), "307") {
		t.Fatalf("redirect: err = %v", err)
	}
}

// fakeDoveadm writes an executable named doveadm that records its
// arguments (one per line, then a blank line) in log and plays who and
// kick with the given output and exit code.
func fakeDoveadm(t *testing.T, whoOut, kickOut string, kickCode int, kickSleep string) (bin, log string) {
	t.Helper()
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "doveadm"), filepath.Join(dir, "args")
	script := `#!/bin/sh
for a in "$@"; do printf '%s\n' "$a" >> '` + log + `'; done
echo >> '` + log + `'
for a in "$@"; do
	case "$a" in
	who) printf '%b' '` + whoOut + `'; exit 0 ;;
	kick) ` + kickSleep + `
		printf '%b' '` + kickOut + `'; exit ` + strconv.Itoa(kickCode) + ` ;;
	esac
done
exit 64
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

func TestCommandKick(t *testing.T) {
	const who = `username\t#\tproto\t(pids)\t(ips)\n-joe@example.com\t2\timap\t(1 2)\t(127.0.0.1)\n-joe@example.com\t1\tpop3\t(3)\t(127.0.0.1)\n`
	cases := []struct {
		name   string
		out    string
		code   int
		want   int
		errHas string
	}{
		// The 2.3 CLI's real output, names first (two buffers).
		{"2.3 lists users", `-joe@example.com kicked connections from the following users:\n\n`, 0, 3, ""},
		{"2.4 counts", `2 connections kicked\n`, 0, 2, ""},
		{"no session", `no users kicked\n`, 68, 0, ""},
		{"shared process", `warning: other connections would also be kicked from following users:\nann@example.com \nUse the '-f' option to enforce the disconnect.\n`, 0, 0, "refuses without -f"},
		{"anvil down", `Fatal: connect(anvil) failed\n`, 75, 0, "temporary failure"},
		// Not root: doveadm 2.3 cannot signal the processes and reports
		// nothing kicked.
		{"not root", `no users kicked\n' ; printf 'kill(4711, SIGTERM) failed: Operation not permitted\n' >&2; printf '`, 68, 0, "must run as root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin, log := fakeDoveadm(t, who, c.out, c.code, "")
			k, err := New(config.Kick{Method: "command", Command: []string{bin, "-c", "/etc/dovecot/dovecot.conf", "kick"}, Timeout: config.Duration(5 * time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			// An account beginning with "-" is passed after "--".
			res, err := k.Kick(context.Background(), "-joe@example.com")
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("err = %v, want one with %q", err, c.errHas)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if res.Method != "command" || res.Kicked != c.want || res.Detail == "" {
					t.Fatalf("result %+v, want %d kicked", res, c.want)
				}
			}
			args, _ := os.ReadFile(log)
			want := "-c\n/etc/dovecot/dovecot.conf\n-f\ntab\nwho\n--\n-joe@example.com\n\n" +
				"-c\n/etc/dovecot/dovecot.conf\nkick\n--\n-joe@example.com\n\n"
			if string(args) != want {
				t.Fatalf("arguments:\n%s\nwant:\n%s", args, want)
			}
		})
	}
}

// A command that is not doveadm's kick is run as given, without a who.
func TestCommandKickOtherProgram(t *testing.T) {
	bin, log := fakeDoveadm(t, "", `1 connections kicked\n`, 0, "")
	wrapper := filepath.Join(filepath.Dir(bin), "kick-wrapper")
	if err := os.Rename(bin, wrapper); err != nil {
		t.Fatal(err)
	}
	k, _ := New(config.Kick{Method: "command", Command: []string{wrapper, "kick"}, Timeout: config.Duration(5 * time.Second)})
	res, err := k.Kick(context.Background(), "joe@example.com")
	if err != nil || res.Kicked != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if args, _ := os.ReadFile(log); string(args) != "kick\n--\njoe@example.com\n\n" {
		t.Fatalf("arguments: %q", args)
	}
}

func TestCommandKickRefusesAndTimesOut(t *testing.T) {
	bin, log := fakeDoveadm(t, "", `1 connections kicked\n`, 0, "sleep 10;")
	k, _ := New(config.Kick{Method: "command", Command: []string{bin, "kick"}, Timeout: config.Duration(300 * time.Millisecond)})
	for _, a := range []string{"*", "j*", "?", "0/0", "::1", ""} {
		if _, err := k.Kick(context.Background(), a); err == nil {
			t.Errorf("Kick(%q): no error", a)
		}
	}
	if _, err := os.Stat(log); err == nil {
		t.Fatal("the command ran for a refused account")
	}
	_, err := k.Kick(context.Background(), "joe@example.com")
	if err == nil || !strings.Contains(err.Error(), "no answer in time") {
		t.Fatalf("err = %v", err)
	}
}

// A who that does not answer leaves the kick half of the time: the
// sessions are still kicked.
func TestKickDespiteSlowWho(t *testing.T) {
	f, url := newFakeAPI(t, func(command string) (int, string) {
		if command == "who" {
			time.Sleep(2 * time.Second)
			return 200, whoNone
		}
		return 200, kick23
	})
	k, _ := New(config.Kick{Method: "http", URL: url, APIKey: f.key, Timeout: config.Duration(time.Second)})
	res, err := k.Kick(context.Background(), "joe@example.com")
	if err != nil || res.Kicked != 1 || !strings.Contains(res.Detail, "who failed") {
		t.Fatalf("http: %+v, %v", res, err)
	}

	bin, log := fakeDoveadm(t, "", `joe@example.com kicked connections from the following users:\n\n`, 0, "")
	script, _ := os.ReadFile(bin)
	os.WriteFile(bin, []byte(strings.Replace(string(script), "who) printf", "who) sleep 5; printf", 1)), 0o755)
	k, _ = New(config.Kick{Method: "command", Command: []string{bin, "kick"}, Timeout: config.Duration(time.Second)})
	res, err = k.Kick(context.Background(), "joe@example.com")
	if err != nil || res.Kicked != 1 || !strings.Contains(res.Detail, "who failed") {
		t.Fatalf("command: %+v, %v", res, err)
	}
	if args, _ := os.ReadFile(log); !strings.Contains(string(args), "kick\n--\njoe@example.com\n") {
		t.Fatalf("kick not run: %q", args)
	}
}

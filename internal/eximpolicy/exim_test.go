package eximpolicy

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// These tests run the real Exim in host-checking mode (exim -bh: a fake SMTP
// session on stdin and stdout that goes through the ACLs without
// delivering) with testdata/exim.conf, which includes the shipped
// etc/exim/mailwarden.conf, against a Server with a scripted Decider.
//
// They need an Exim binary (MAILWARDEN_EXIM, or exim4 / exim on PATH;
// Debian 12's exim4-daemon-light 4.96 unpacked with dpkg -x will do) and
// root (exim -C with -D macros); they skip otherwise.

func eximBinary(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("exim -C with -D macros needs root")
	}
	if p := os.Getenv("MAILWARDEN_EXIM"); p != "" {
		return p
	}
	for _, name := range []string{"exim4", "exim"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Exim binary: set MAILWARDEN_EXIM or put exim4 on PATH")
	return ""
}

type eximRun struct {
	t       *testing.T
	bin     string
	conf    string
	macros  []string
	ts      *testServer
	verdict map[string]engine.Verdict // by "kind account ip", kind "check" for Check; "*" matches any part
}

func newEximRun(t *testing.T) *eximRun {
	bin := eximBinary(t)
	conf, err := filepath.Abs("testdata/exim.conf")
	if err != nil {
		t.Fatal(err)
	}
	ts := start(t, Config{})
	dir := filepath.Dir(ts.addr)
	spool := filepath.Join(dir, "spool")
	for _, d := range []string{spool, filepath.Join(spool, "log")} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// Exim runs the ACLs as its own user: it must reach the socket (the
	// daemon's socket needs the same permissions for the Exim user).
	for p, mode := range map[string]os.FileMode{dir: 0o777, spool: 0o777, filepath.Join(spool, "log"): 0o777, ts.addr: 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	eximUser := "Debian-exim"
	if _, err := user.Lookup(eximUser); err != nil {
		eximUser = "root"
	}
	r := &eximRun{t: t, bin: bin, conf: conf, ts: ts, verdict: map[string]engine.Verdict{}}
	r.macros = []string{
		"-DMW_TEST_SPOOL=" + spool,
		"-DMW_TEST_USER=" + eximUser,
		"-DMAILWARDEN_SOCKET=" + ts.addr,
		"-DMAILWARDEN_PW_SECRET=test-secret",
	}
	ts.dec.verdict = func(kind event.Kind, account string, ip netip.Addr) engine.Verdict {
		k := kind.String()
		if kind == event.KindUnknown {
			k = "check"
		}
		for _, key := range []string{k + " " + account + " " + ip.String(), k + " * " + ip.String(), k + " " + account + " *", "* * " + ip.String(), "* " + account + " *"} {
			if v, ok := r.verdict[key]; ok {
				return v
			}
		}
		return engine.Allow
	}
	return r
}

// session runs one SMTP session from client (exim -bh "ip.port") to our
// 198.51.100.1:587 and returns Exim's replies (without EHLO's 250-
// continuation lines and -bh's banners), its debug output, and what the
// Decider was asked, one line per call.
func (r *eximRun) session(client, smtp string, extra ...string) (replies []string, debug string, calls []string) {
	r.t.Helper()
	args := append([]string{"-C", r.conf}, r.macros...)
	args = append(args, extra...)
	args = append(args, "-oMi", "198.51.100.1.587", "-bh", client)
	cmd := exec.Command(r.bin, args...)
	cmd.Stdin = strings.NewReader(strings.ReplaceAll(smtp, "\n", "\r\n"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		r.t.Fatalf("exim %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "" || strings.HasPrefix(l, "250-") || strings.HasPrefix(l, "****") {
			continue
		}
		replies = append(replies, l)
	}
	for _, c := range r.ts.dec.take() {
		if c.check {
			calls = append(calls, fmt.Sprintf("check %q %s", c.account, c.ip))
			continue
		}
		e := c.ev
		s := fmt.Sprintf("%s %q %s %s", e.Kind, e.Account, e.IP, e.Session)
		if e.PwHash != "" {
			s += " pwhash=" + e.PwHash
		}
		if e.Kind == event.Message {
			s += fmt.Sprintf(" rcpts=%d size=%d qid=%s", e.Rcpts, e.Size, e.QueueID)
		}
		calls = append(calls, s)
	}
	return replies, errb.String(), calls
}

func plain(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

var (
	sessionID = "192.0.2.7:4000>198.51.100.1:587"
	dateRe    = regexp.MustCompile(`^220 mx.example.com ESMTP Exim \S+ .*$`)
	idRe      = regexp.MustCompile(`(id=|qid=)[0-9A-Za-z-]+`)
	pwRe      = regexp.MustCompile(`pwhash=[0-9a-f]{16}\b`)
)

// normalise replaces what changes from run to run.
func normalise(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		l = dateRe.ReplaceAllString(l, "220 mx.example.com ESMTP Exim")
		l = idRe.ReplaceAllString(l, "${1}ID")
		out[i] = pwRe.ReplaceAllString(l, "pwhash=HASH")
	}
	return out
}

func expect(t *testing.T, what string, got, want []string) {
	t.Helper()
	got = normalise(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

const fullSession = `EHLO client
AUTH PLAIN ` + "{bad}" + `
AUTH LOGIN
` + "{bob}" + `
` + "{x}" + `
AUTH PLAIN ` + "{good}" + `
MAIL FROM:<joe@example.com>
RCPT TO:<ann@example.com>
RCPT TO:<nobody@example.com>
DATA
Subject: test

body
.
MAIL FROM:<joe@example.com>
RCPT TO:<ann@example.com>
QUIT
`

func fill(s string) string {
	return strings.NewReplacer("{bad}", plain("joe@example.com", "wrong"), "{good}", plain("joe@example.com", "secret"),
		"{bob}", b64(`Bob "B"`), "{x}", b64("x")).Replace(s)
}

// TestEximSession: a whole session through the shipped ACLs, every stage
// reported once with the right account and session.
func TestEximSession(t *testing.T) {
	r := newEximRun(t)
	replies, _, calls := r.session("192.0.2.7.4000", fill(fullSession))
	expect(t, "replies", replies, []string{
		"220 mx.example.com ESMTP Exim",
		"250 HELP",
		"535 Incorrect authentication data",
		"334 VXNlcm5hbWU6",
		"334 UGFzc3dvcmQ6",
		"535 Incorrect authentication data",
		"235 Authentication succeeded",
		"250 OK",
		"250 Accepted",
		"550 Unknown user",
		`354 Enter message, ending with "." on a line by itself`,
		"250 OK id=ID",
		"250 OK",
		"250 Accepted",
		"221 mx.example.com closing connection",
	})
	expect(t, "calls", calls, []string{
		`check "" 192.0.2.7`, // connect
		`check "" 192.0.2.7`, // AUTH PLAIN (bad)
		`auth_fail "joe@example.com" 192.0.2.7 ` + sessionID + ` pwhash=HASH`,          // AUTH LOGIN: the PLAIN failed
		`auth_fail "bob\"b\"" 192.0.2.7 ` + sessionID,                                  // AUTH PLAIN (good): the LOGIN failed, no hash
		`auth_ok "joe@example.com" 192.0.2.7 ` + sessionID,                             // first MAIL
		`check "joe@example.com" 192.0.2.7`,                                            // RCPT ann
		`check "joe@example.com" 192.0.2.7`,                                            // RCPT nobody
		`rcpt_rejected "joe@example.com" 192.0.2.7 ` + sessionID,                       // nobody refused
		`message "joe@example.com" 192.0.2.7 ` + sessionID + ` rcpts=1 size=20 qid=ID`, // DATA
		`check "joe@example.com" 192.0.2.7`,                                            // second MAIL
		`check "joe@example.com" 192.0.2.7`,                                            // RCPT
		`disconnect "joe@example.com" 192.0.2.7 ` + sessionID,                          // QUIT
	})
}

// TestEximAuthFailAtEnd: the last failed AUTH is reported by the QUIT or
// the not-QUIT ACL, once.
func TestEximAuthFailAtEnd(t *testing.T) {
	r := newEximRun(t)
	for _, end := range []string{"QUIT\n", ""} {
		_, _, calls := r.session("192.0.2.7.4000", fill("EHLO client\nAUTH PLAIN {bad}\n"+end))
		expect(t, "calls, end "+strings.TrimSpace(end), calls, []string{
			`check "" 192.0.2.7`,
			`check "" 192.0.2.7`,
			`auth_fail "joe@example.com" 192.0.2.7 ` + sessionID + ` pwhash=HASH`,
		})
	}
}

func TestEximVerdicts(t *testing.T) {
	r := newEximRun(t)
	const mail = "EHLO client\nAUTH PLAIN {good}\nMAIL FROM:<joe@example.com>\nRCPT TO:<ann@example.com>\nDATA\nSubject: test\n\nbody\n.\nQUIT\n"

	// A blocked address is dropped before the banner.
	r.verdict["check  192.0.2.66"] = engine.Blocked
	replies, _, calls := r.session("192.0.2.66.4000", fill(mail))
	expect(t, "blocked: replies", replies, []string{"550 " + DefaultBlockedText})
	expect(t, "blocked: calls", calls, []string{`check "" 192.0.2.66`})

	// An address blocked by a failed AUTH is dropped at the next AUTH (Exim
	// refuses AUTH with 503).
	r.verdict["auth_fail * 192.0.2.9"] = engine.Blocked
	replies, _, _ = r.session("192.0.2.9.4000", fill("EHLO client\nAUTH PLAIN {bad}\nAUTH PLAIN {bad}\nAUTH PLAIN {bad}\n"))
	expect(t, "blocked at AUTH: replies", replies, []string{
		"220 mx.example.com ESMTP Exim", "250 HELP", "535 Incorrect authentication data", "503 " + DefaultBlockedText})

	// A locked account is dropped at its first MAIL; the end of the
	// session is still reported.
	r.verdict["auth_ok joe@example.com *"] = engine.Lock
	replies, _, calls = r.session("192.0.2.7.4000", fill(mail))
	expect(t, "locked: replies", replies, []string{
		"220 mx.example.com ESMTP Exim", "250 HELP", "235 Authentication succeeded", "550 " + DefaultLockedText})
	expect(t, "locked: calls", calls, []string{
		`check "" 192.0.2.7`, `check "" 192.0.2.7`,
		`auth_ok "joe@example.com" 192.0.2.7 ` + sessionID,
		`disconnect "joe@example.com" 192.0.2.7 ` + sessionID,
	})
	delete(r.verdict, "auth_ok joe@example.com *")

	// Over a cap: the message is deferred.
	r.verdict["message joe@example.com *"] = engine.Defer
	replies, _, _ = r.session("192.0.2.7.4000", fill(mail))
	if got := normalise(replies); len(got) < 7 || got[6] != "451 "+DefaultDeferText {
		t.Errorf("deferred: replies %q", got)
	}
	delete(r.verdict, "message joe@example.com *")

	// Hold: the message is accepted and frozen.
	r.verdict["message joe@example.com *"] = engine.Hold
	replies, debug, _ := r.session("192.0.2.7.4000", fill(mail))
	if got := normalise(replies); len(got) < 7 || got[6] != "250 OK id=ID" {
		t.Errorf("held: replies %q", got)
	}
	if !strings.Contains(debug, "frozen by ACL") || !strings.Contains(debug, "mailwarden: message frozen: "+DefaultHoldText) {
		t.Errorf("held: the message was not frozen:\n%s", debug)
	}
	delete(r.verdict, "message joe@example.com *")

	// Tarpit: the command is delayed (exim -bh skips the delay but says so).
	r.verdict["check  192.0.2.8"] = engine.Tarpit
	_, debug, _ = r.session("192.0.2.8.4000", fill(mail))
	if !strings.Contains(debug, "delay modifier requests 3-second delay") {
		t.Errorf("tarpit: no delay:\n%s", debug)
	}
}

// TestEximFailOpen: with mailwarden down, mail flows as without it.
func TestEximFailOpen(t *testing.T) {
	r := newEximRun(t)
	r.macros[2] = "-DMAILWARDEN_SOCKET=" + filepath.Join(filepath.Dir(r.ts.addr), "absent.sock")
	replies, _, calls := r.session("192.0.2.7.4000", fill(fullSession))
	if got := normalise(replies); len(got) != 15 || got[11] != "250 OK id=ID" || got[14] != "221 mx.example.com closing connection" {
		t.Errorf("replies %q", got)
	}
	if len(calls) != 0 {
		t.Errorf("calls %q", calls)
	}
}

// TestEximConfigVariants: the shipped file parses with every option set
// (the auth:fail event ACL only runs on Exim 4.97 and later).
func TestEximConfigVariants(t *testing.T) {
	r := newEximRun(t)
	for _, extra := range [][]string{nil, {"-DMAILWARDEN_AUTH_EVENT=1"}, {"-DMAILWARDEN_TIMEOUT=500ms"}} {
		args := append(append([]string{"-C", r.conf}, r.macros...), extra...)
		out, err := exec.Command(r.bin, append(args, "-bV")...).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Configuration file is")) {
			t.Errorf("exim -bV %q: %v\n%s", extra, err, out)
		}
	}
}

// debianTemplate finds Debian's monolithic Exim configuration
// (exim4-config): MAILWARDEN_EXIM_TEMPLATE, /etc/exim4, or beside an
// unpacked binary (…/usr/sbin/exim4 and …/etc/exim4).
func debianTemplate(bin string) string {
	for _, p := range []string{
		os.Getenv("MAILWARDEN_EXIM_TEMPLATE"),
		"/etc/exim4/exim4.conf.template",
		filepath.Join(filepath.Dir(bin), "../../etc/exim4/exim4.conf.template"),
	} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// TestEximDebian runs Debian's own configuration with etc/exim/debian.conf
// wired in as docs/integrate-exim.md says.
func TestEximDebian(t *testing.T) {
	r := newEximRun(t)
	tmpl := debianTemplate(r.bin)
	if tmpl == "" {
		t.Skip("no Debian exim4.conf.template: set MAILWARDEN_EXIM_TEMPLATE")
	}
	text, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	etc, err := filepath.Abs("../../etc/exim")
	if err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(filepath.Dir(r.ts.addr), "spool")
	eximUser := strings.TrimPrefix(r.macros[1], "-DMW_TEST_USER=")
	// What exim4.conf.localmacros would hold, then the template with the
	// two .include lines of conf.d/acl/10_mailwarden after "begin acl",
	// then a server authenticator (Debian ships client ones only).
	prefix := `MAIN_LOCAL_DOMAINS = example.com
MAIN_RELAY_TO_DOMAINS =
MAIN_RELAY_NETS = :
MAIN_HARDCODE_PRIMARY_HOSTNAME = mx.example.com
MAIN_HOST_LOOKUP =
SPOOLDIR = ` + spool + `
log_file_path = ` + spool + `/log/%slog
exim_user = ` + eximUser + `
MAIN_ACL_CHECK_MAIL = mailwarden_debian_mail
MAIN_ACL_CHECK_RCPT = mailwarden_debian_rcpt
MAIN_ACL_CHECK_DATA = mailwarden_debian_data
acl_smtp_connect = mailwarden_connect
acl_smtp_auth = mailwarden_auth
acl_smtp_quit = mailwarden_quit
acl_smtp_notquit = mailwarden_quit
`
	includes := "begin acl\n.include " + etc + "/mailwarden.conf\n.include " + etc + "/debian.conf\n"
	body := strings.Replace(string(text), "\nbegin acl\n", "\n"+includes, 1)
	if body == string(text) {
		t.Fatalf("%s: no \"begin acl\" line", tmpl)
	}
	auth := `
mw_plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = ${if and{{eq{$auth2}{joe@example.com}}{eq{$auth3}{secret}}}}
  server_set_id = $auth2
`
	conf := filepath.Join(filepath.Dir(r.ts.addr), "debian.conf")
	if err := os.WriteFile(conf, []byte(prefix+body+auth), 0o644); err != nil {
		t.Fatal(err)
	}
	r.conf = conf

	// Debian routes local parts to system users: nobody exists, nosuchuser
	// does not.
	replies, debug, calls := r.session("192.0.2.7.4000", fill(`EHLO client
AUTH PLAIN {bad}
AUTH PLAIN {good}
MAIL FROM:<joe@example.com>
RCPT TO:<nosuchuser@example.com>
RCPT TO:<nobody@example.com>
DATA
Subject: test

body
.
QUIT
`))
	expect(t, "replies", replies, []string{
		"220 mx.example.com ESMTP Exim",
		"250 HELP",
		"535 Incorrect authentication data",
		"235 Authentication succeeded",
		"250 OK",
		"550 Unknown user",
		"250 Accepted",
		`354 Enter message, ending with "." on a line by itself`,
		"250 OK id=ID",
		"221 mx.example.com closing connection",
	})
	if t.Failed() {
		t.Logf("exim debug output:\n%s", debug)
	}
	expect(t, "calls", calls, []string{
		`check "" 192.0.2.7`,
		`check "" 192.0.2.7`,
		`auth_fail "joe@example.com" 192.0.2.7 ` + sessionID + ` pwhash=HASH`,
		`auth_ok "joe@example.com" 192.0.2.7 ` + sessionID,
		`check "joe@example.com" 192.0.2.7`,
		`rcpt_rejected "joe@example.com" 192.0.2.7 ` + sessionID,
		`check "joe@example.com" 192.0.2.7`,
		`message "joe@example.com" 192.0.2.7 ` + sessionID + ` rcpts=1 size=20 qid=ID`,
		`disconnect "joe@example.com" 192.0.2.7 ` + sessionID,
	})
}

package e2e

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testNetworksConfig is the mailwarden configuration of the tests that play
// a botnet. Every test client lives in 127.0.0.0/8, a single /8 block, so
// the "spread over the address space" condition (networks.min_spread: 3
// by default, distinct /8 blocks) can never hold on one machine: it is
// lowered to 1. Each client's /16 (127.1.0.0/16, 127.2.0.0/16, …) is its own
// network, as by default.
const testNetworksConfig = `networks:
  ipv4_prefix: 16
  min_spread: 1
`

// The Postfix policy snippet, as shipped.
const postfixSnippet = "etc/postfix/main.cf.snippet"

// PostfixOpts configures startPostfix.
type PostfixOpts struct {
	// Policy is the mailwarden whose Postfix socket the shipped snippet is
	// pointed at ("/run/mailwarden/" in the snippet becomes its socket
	// folder).
	Policy *Mailwarden
	// SASL is the Dovecot that authenticates SMTP clients (Dovecot SASL).
	SASL *Dovecot
}

// Postfix is a private Postfix instance (postfix -c DIR start): its own
// main.cf/master.cf, queue, data folder and log file, one submission
// listener on 127.0.0.1 with SMTP AUTH through Dovecot, and every message
// delivered to discard (nothing leaves the machine).
type Postfix struct {
	t       *testing.T
	bin     string // the postfix command
	Dir     string
	ConfDir string
	Port    int
	Maillog string
}

// startPostfix starts the instance and waits for its greeting; it is
// stopped when the test ends.
func startPostfix(t *testing.T, opts PostfixOpts) *Postfix {
	t.Helper()
	requireRoot(t)
	bin := requireBinaries(t, "postfix")[0]
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Skip("no postfix user (apt-get install postfix)")
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	// Postfix wants a root-owned queue folder whose parents other users
	// cannot write: a fresh folder under /tmp.
	dir := shortTempDir(t, "pf")
	pf := &Postfix{t: t, bin: bin, Dir: dir, ConfDir: filepath.Join(dir, "etc"), Port: freePort(t), Maillog: filepath.Join(dir, "maillog")}
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}
	snip, err := os.ReadFile(filepath.Join(repoRoot, postfixSnippet))
	if err != nil {
		t.Fatal(err)
	}
	// The shipped file; only its socket folder is replaced.
	if !strings.Contains(string(snip), "unix:/run/mailwarden/") {
		t.Fatalf("%s no longer names unix:/run/mailwarden/: update the test's placeholder", postfixSnippet)
	}
	snippet := strings.ReplaceAll(string(snip), "unix:/run/mailwarden/", "unix:"+opts.Policy.Opts.SocketDir+"/")
	mainCf := renderTemplate(t, "postfix/main.cf.tmpl", map[string]any{"Dir": dir, "SASLPath": opts.SASL.AuthSocket}) + snippet
	masterCf := renderTemplate(t, "postfix/master.cf.tmpl", map[string]any{"Port": pf.Port})
	pf.start(t, mainCf, masterCf)
	return pf
}

// start writes the instance's main.cf and master.cf, starts it, waits for
// its greeting and stops it when the test ends.
func (pf *Postfix) start(t *testing.T, mainCf, masterCf string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(pf.ConfDir, "main.cf"), []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pf.ConfDir, "master.cf"), []byte(masterCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd(0, pf.bin, "-c", pf.ConfDir, "start"); err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", pf.ConfDir, err, out, pf.Logs())
	}
	t.Cleanup(func() {
		pf.Stop()
		if t.Failed() {
			t.Log(pf.Logs())
		}
	})
	waitFor(t, "postfix greeting", func() error {
		return greets(fmt.Sprintf("127.0.0.1:%d", pf.Port), "220 ")
	}, pf.Logs)
}

// Logs returns Postfix's log file, for failure messages.
func (pf *Postfix) Logs() string {
	return fmt.Sprintf("--- postfix maillog %s ---\n%s\n", pf.Maillog, fileTail(pf.Maillog, 30000))
}

// Stop stops Postfix and waits until its master has gone; it kills what
// is left after waitTimeout. Calling it again is harmless.
func (pf *Postfix) Stop() {
	running := func() bool {
		_, err := runCmd(10*time.Second, pf.bin, "-c", pf.ConfDir, "status")
		return err == nil
	}
	if !running() {
		return
	}
	runCmd(0, pf.bin, "-c", pf.ConfDir, "stop")
	deadline := time.Now().Add(waitTimeout)
	for running() {
		if time.Now().After(deadline) {
			runCmd(0, pf.bin, "-c", pf.ConfDir, "abort")
			pf.t.Errorf("postfix did not stop within %s", waitTimeout)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// swaksResult is one SMTP submission by swaks.
type swaksResult struct {
	Out      string // the whole transcript
	Queued   string // the queue id when the message was accepted after DATA
	Code     int    // swaks' exit code
	AuthFail bool   // SMTP AUTH was refused
	Refused  string // the first error reply (e.g. "421 4.7.1 …", "535 5.7.8 …"), "" if none
}

var (
	reQueued = regexp.MustCompile(`(?m)^<-\s+250 \S+ Ok: queued as (\S+)`)
	reError  = regexp.MustCompile(`(?m)^<\*\*\s+([45]\d\d .*)$`)
)

// sendMail submits one message with SMTP AUTH PLAIN from the source
// address from, as user (also the envelope sender), to rcpt.
func sendMail(t *testing.T, pf *Postfix, from, user, pass, rcpt string) swaksResult {
	t.Helper()
	out, err := runCmd(30*time.Second, "swaks",
		"--server", fmt.Sprintf("127.0.0.1:%d", pf.Port),
		"--local-interface", from,
		"--ehlo", "client.e2e.test",
		"--auth", "PLAIN", "--auth-user", user, "--auth-password", pass,
		"--from", user, "--to", rcpt,
		"--header", "Subject: mailwarden e2e from "+from,
		"--body", "test message",
		"--timeout", "20")
	r := swaksResult{Out: out, Code: exitCode(err)}
	if r.Code < 0 {
		t.Fatalf("swaks from %s: %v\n%s", from, err, out)
	}
	if m := reQueued.FindStringSubmatch(out); m != nil {
		r.Queued = m[1]
	}
	if m := reError.FindStringSubmatch(out); m != nil {
		r.Refused = m[1]
	}
	r.AuthFail = strings.HasPrefix(r.Refused, "535 ")
	return r
}

// Stolen credentials used by a botnet: one account submits one message
// each from 13 addresses in 13 networks through the real Postfix, which
// authenticates through the real Dovecot (SASL) and asks mailwarden
// through the shipped snippet. The account is locked before the 13th
// message; Postfix refuses it with 421 and Dovecot then refuses its
// logins, while another account keeps sending.
func TestPostfixDovecotBotnet(t *testing.T) {
	requireRoot(t)
	requireBinaries(t, "postfix", "dovecot", "swaks")
	t.Parallel()
	mw := startMailwarden(t, MailwardenOpts{Config: testNetworksConfig, DovecotAPIKey: "e2e-api-key"})
	dv := startDovecot(t, DovecotOpts{Policy: mw, Users: map[string]string{
		"joe@e2e.test": "joe-secret", "ann@e2e.test": "ann-secret"}})
	pf := startPostfix(t, PostfixOpts{Policy: mw, SASL: dv})

	// The 13 addresses of the exim-users case, one /16 each.
	refusedAt := 0
	var accepted []string
	for i := 1; i <= 13; i++ {
		ip := fmt.Sprintf("127.%d.0.%d", i, 4+i)
		r := sendMail(t, pf, ip, "joe@e2e.test", "joe-secret", "rcpt@example.net")
		if r.Queued != "" {
			if refusedAt != 0 {
				t.Fatalf("message %d from %s accepted after the refusal of message %d:\n%s", i, ip, refusedAt, r.Out)
			}
			accepted = append(accepted, r.Queued)
			continue
		}
		if refusedAt == 0 {
			refusedAt = i
			// The message that crosses the threshold is refused by
			// Postfix at RCPT: the lock happened at its login.
			if !strings.HasPrefix(r.Refused, "421 4.7.1 ") || !strings.Contains(r.Refused, "Account temporarily locked") {
				t.Errorf("message %d from %s: want 421 4.7.1 … Account temporarily locked, got %q:\n%s", i, ip, r.Refused, r.Out)
			}
			continue
		}
		// Later attempts do not get that far: Dovecot refuses the login.
		if !r.AuthFail {
			t.Errorf("message %d from %s after the lock: want SMTP AUTH refused, got:\n%s", i, ip, r.Out)
		}
	}
	// botnet: 5 new networks within 10 minutes (burst) lock the account
	// at the 5th login; 8 in 24 hours would lock at the 8th.
	if refusedAt == 0 || refusedAt > 12 {
		t.Fatalf("botnet not stopped before the 13th message: refused at %d", refusedAt)
	}
	if refusedAt != 5 {
		t.Errorf("refusals began at message %d, want 5 (botnet burst: 5 new networks in 10 min)", refusedAt)
	}
	t.Logf("%d messages accepted, refused from message %d on", len(accepted), refusedAt)

	// The next attempt, from yet another network: refused.
	r := sendMail(t, pf, "127.14.0.9", "joe@e2e.test", "joe-secret", "rcpt@example.net")
	if r.Queued != "" || !r.AuthFail || !strings.Contains(r.Out, "Account temporarily locked") {
		t.Errorf("locked account after the botnet: want AUTH refused with the lock text, got:\n%s", r.Out)
	}

	locks := mw.MustAdmin("locks")
	if !strings.Contains(locks, "joe@e2e.test") || !strings.Contains(locks, "botnet") {
		t.Errorf("mailwarden locks: want joe@e2e.test by botnet:\n%s", locks)
	}
	inc := mw.MustAdmin("incidents", "--account", "joe@e2e.test")
	if !strings.Contains(inc, "botnet") {
		t.Errorf("mailwarden incidents: want the botnet incident:\n%s", inc)
	}
	if blocks := mw.MustAdmin("blocks"); strings.Contains(blocks, "127.") {
		t.Errorf("no address should be blocked (the account is locked, not its addresses):\n%s", blocks)
	}

	// Another account keeps sending, from its own address and from the
	// botnet's last one.
	for _, ip := range []string{"127.0.0.1", "127.13.0.17"} {
		r := sendMail(t, pf, ip, "ann@e2e.test", "ann-secret", "friend@example.net")
		if r.Queued == "" {
			t.Fatalf("ann from %s: not accepted:\n%s", ip, r.Out)
		}
		accepted = append(accepted, r.Queued)
	}
	// Postfix's own log shows every accepted message, authenticated, and
	// delivered (to discard).
	waitFor(t, "the accepted messages in Postfix's log", func() error {
		log := fileTail(pf.Maillog, 0)
		for _, q := range accepted {
			if !regexp.MustCompile(q + `: client=\S+, sasl_method=PLAIN, sasl_username=`).MatchString(log) {
				return fmt.Errorf("%s: no client= line", q)
			}
			if !strings.Contains(log, q+": to=<") || !regexp.MustCompile(q+`: to=<[^>]+>.* status=sent`).MatchString(log) {
				return fmt.Errorf("%s: not delivered yet", q)
			}
		}
		return nil
	})
}

// IMAP and POP through the real Dovecot with the shipped auth policy
// snippet: a password-guessing address is blocked (even the right password
// is refused from it, other addresses log in), and an account locked by
// the admin is refused on both protocols from anywhere until unlocked.
func TestDovecotIMAPPOP(t *testing.T) {
	requireRoot(t)
	requireBinaries(t, "dovecot", "curl")
	t.Parallel()
	mw := startMailwarden(t, MailwardenOpts{DovecotAPIKey: "e2e-api-key"})
	dv := startDovecot(t, DovecotOpts{Policy: mw, Users: map[string]string{
		"amy@e2e.test": "amy-secret", "bob@e2e.test": "bob-secret"}})
	login := func(from, url, user, pass string) (bool, string) {
		t.Helper()
		code, out := curlLogin(t, from, url, user, pass)
		if code != 0 && code != 67 {
			t.Fatalf("curl %s as %s from %s: exit %d\n%s", url, user, from, code, out)
		}
		return code == 0, out
	}

	// Both accounts work from the start, on both protocols.
	for _, u := range [][2]string{{"amy@e2e.test", "amy-secret"}, {"bob@e2e.test", "bob-secret"}} {
		for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
			if ok, out := login("127.20.0.1", url, u[0], u[1]); !ok {
				t.Fatalf("%s on %s: login refused before anything happened:\n%s", u[0], url, out)
			}
		}
	}

	// Brute force from one address: a new wrong password each time, over
	// IMAP and POP, up to crack_ip's default of 12 in 15 minutes.
	const attacker = "127.66.0.6"
	for i := 1; i <= 12; i++ {
		url := dv.IMAPURL()
		if i%2 == 0 {
			url = dv.POP3URL()
		}
		if ok, out := login(attacker, url, "amy@e2e.test", fmt.Sprintf("guess-%d", i)); ok {
			t.Fatalf("guess %d logged in:\n%s", i, out)
		}
	}
	waitFor(t, "the attacking address to be blocked", func() error {
		out, err := mw.Admin("blocks")
		if err != nil || !strings.Contains(out, attacker) {
			return fmt.Errorf("blocks: %v %s", err, out)
		}
		return nil
	})
	// The right password from the blocked address: refused, on both
	// protocols, whatever the account.
	for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
		for _, u := range [][2]string{{"amy@e2e.test", "amy-secret"}, {"bob@e2e.test", "bob-secret"}} {
			ok, out := login(attacker, url, u[0], u[1])
			if ok {
				t.Errorf("%s from the blocked %s on %s: logged in:\n%s", u[0], attacker, url, out)
			} else if strings.HasPrefix(url, "imap") && !strings.Contains(out, "Too many failed logins from your address") {
				t.Errorf("%s from the blocked %s on IMAP: want the block text (serve.texts.blocked) in the reply:\n%s", u[0], attacker, out)
			}
		}
	}
	// The account itself is not locked: from elsewhere it logs in.
	for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
		if ok, out := login("127.21.0.2", url, "amy@e2e.test", "amy-secret"); !ok {
			t.Errorf("amy from another address on %s: refused:\n%s", url, out)
		}
	}
	if inc := mw.MustAdmin("incidents"); !strings.Contains(inc, "crack_ip") || !strings.Contains(inc, attacker) {
		t.Errorf("incidents: want crack_ip for %s:\n%s", attacker, inc)
	}

	// An account locked by the admin: refused on IMAP and POP from any
	// address, with the right password.
	mw.MustAdmin("lock", "bob@e2e.test", "--reason", "e2e: customer reported a stolen password")
	if locks := mw.MustAdmin("locks"); !strings.Contains(locks, "bob@e2e.test") {
		t.Fatalf("locks: bob@e2e.test missing:\n%s", locks)
	}
	for _, from := range []string{"127.20.0.1", "127.22.0.3"} {
		for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
			ok, out := login(from, url, "bob@e2e.test", "bob-secret")
			if ok {
				t.Errorf("locked bob from %s on %s: logged in:\n%s", from, url, out)
			} else if strings.HasPrefix(url, "imap") && !strings.Contains(out, "Account temporarily locked") {
				t.Errorf("locked bob on IMAP: want the lock text in the reply:\n%s", out)
			}
		}
	}
	// Unlocked: in again, on both.
	mw.MustAdmin("unlock", "bob@e2e.test", "--reason", "e2e: password changed")
	for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
		if ok, out := login("127.22.0.3", url, "bob@e2e.test", "bob-secret"); !ok {
			t.Errorf("unlocked bob on %s: refused:\n%s", url, out)
		}
	}
}

// Fail open: with mailwarden stopped (its sockets gone), Postfix still
// accepts authenticated mail (default_action=DUNNO of the snippet) and
// Dovecot still lets users in (auth_policy_reject_on_fail = no).
func TestFailOpenPostfixDovecot(t *testing.T) {
	requireRoot(t)
	requireBinaries(t, "postfix", "dovecot", "swaks", "curl")
	t.Parallel()
	mw := startMailwarden(t, MailwardenOpts{DovecotAPIKey: "e2e-api-key"})
	dv := startDovecot(t, DovecotOpts{Policy: mw, Users: map[string]string{"joe@e2e.test": "joe-secret"}})
	pf := startPostfix(t, PostfixOpts{Policy: mw, SASL: dv})

	// With mailwarden up: mail flows, and mailwarden sees it.
	if r := sendMail(t, pf, "127.30.0.1", "joe@e2e.test", "joe-secret", "rcpt@example.net"); r.Queued == "" {
		t.Fatalf("with mailwarden up: not accepted:\n%s", r.Out)
	}
	if code, out := curlLogin(t, "127.30.0.1", dv.IMAPURL(), "joe@e2e.test", "joe-secret"); code != 0 {
		t.Fatalf("with mailwarden up: IMAP login refused:\n%s", out)
	}

	mw.Stop()
	if _, err := os.Stat(mw.PostfixSocket); !os.IsNotExist(err) {
		t.Errorf("postfix socket %s still there after SIGTERM: %v", mw.PostfixSocket, err)
	}
	if err := dialOK(mw.DovecotAddr); err == nil {
		t.Fatalf("something still listens on %s", mw.DovecotAddr)
	}

	// Several messages: the first may meet the connection smtpd kept to
	// the stopped daemon, the later ones find no socket at all.
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.31.0.%d", i)
		r := sendMail(t, pf, ip, "joe@e2e.test", "joe-secret", "rcpt@example.net")
		if r.Queued == "" {
			t.Errorf("mailwarden down, message %d from %s: not accepted:\n%s", i, ip, r.Out)
		}
	}
	for _, url := range []string{dv.IMAPURL(), dv.POP3URL()} {
		if code, out := curlLogin(t, "127.31.0.9", url, "joe@e2e.test", "joe-secret"); code != 0 {
			t.Errorf("mailwarden down: login on %s refused:\n%s", url, out)
		}
	}
	// A wrong password is still wrong.
	if code, _ := curlLogin(t, "127.31.0.9", dv.IMAPURL(), "joe@e2e.test", "nope"); code != 67 {
		t.Errorf("mailwarden down: a wrong password gave curl exit %d, want 67", code)
	}
	// Both servers said why they went on without mailwarden.
	waitFor(t, "Postfix and Dovecot to log the unreachable policy", func() error {
		if !strings.Contains(fileTail(pf.Maillog, 0), "warning: problem talking to server "+mw.PostfixSocket) {
			return fmt.Errorf("no Postfix warning about %s", mw.PostfixSocket)
		}
		if !strings.Contains(fileTail(dv.LogPath, 0), "Policy server HTTP error") {
			return fmt.Errorf("no Dovecot policy error")
		}
		return nil
	})
}

// Crash safety: a lock (botnet over SMTP) and a block (password guessing
// over IMAP) survive kill -9; the restarted daemon on the same state
// folder enforces both at once and still lists the incidents.
func TestCrashKeepsLocksAndBlocks(t *testing.T) {
	requireRoot(t)
	requireBinaries(t, "postfix", "dovecot", "swaks", "curl")
	t.Parallel()
	mw := startMailwarden(t, MailwardenOpts{Config: testNetworksConfig, DovecotAPIKey: "e2e-api-key"})
	dv := startDovecot(t, DovecotOpts{Policy: mw, Users: map[string]string{
		"joe@e2e.test": "joe-secret", "amy@e2e.test": "amy-secret"}})
	pf := startPostfix(t, PostfixOpts{Policy: mw, SASL: dv})

	// The botnet locks joe.
	for i := 1; i <= 8; i++ {
		sendMail(t, pf, fmt.Sprintf("127.%d.0.%d", 40+i, i), "joe@e2e.test", "joe-secret", "rcpt@example.net")
	}
	// Password guessing gets an address blocked.
	const attacker = "127.66.0.7"
	for i := 1; i <= 12; i++ {
		curlLogin(t, attacker, dv.IMAPURL(), "amy@e2e.test", fmt.Sprintf("guess-%d", i))
	}
	waitFor(t, "the lock and the block", func() error {
		l, err := mw.Admin("locks")
		if err != nil || !strings.Contains(l, "joe@e2e.test") {
			return fmt.Errorf("locks: %v %s", err, l)
		}
		b, err := mw.Admin("blocks")
		if err != nil || !strings.Contains(b, attacker) {
			return fmt.Errorf("blocks: %v %s", err, b)
		}
		return nil
	})

	mw.Kill()
	mw = mw.Restart(t)

	if l := mw.MustAdmin("locks"); !strings.Contains(l, "joe@e2e.test") {
		t.Errorf("after the crash, locks: joe@e2e.test missing:\n%s", l)
	}
	if b := mw.MustAdmin("blocks"); !strings.Contains(b, attacker) {
		t.Errorf("after the crash, blocks: %s missing:\n%s", attacker, b)
	}
	inc := mw.MustAdmin("incidents")
	for _, want := range []string{"botnet", "joe@e2e.test", "crack_ip", attacker} {
		if !strings.Contains(inc, want) {
			t.Errorf("after the crash, incidents: %q missing:\n%s", want, inc)
		}
	}
	// Enforced: joe is refused on SMTP and IMAP from a fresh address, the
	// attacker's address even with amy's right password, and amy still
	// logs in from elsewhere.
	if r := sendMail(t, pf, "127.50.0.1", "joe@e2e.test", "joe-secret", "rcpt@example.net"); r.Queued != "" {
		t.Errorf("after the crash, locked joe sent mail:\n%s", r.Out)
	}
	if code, out := curlLogin(t, "127.50.0.1", dv.IMAPURL(), "joe@e2e.test", "joe-secret"); code == 0 {
		t.Errorf("after the crash, locked joe logged in over IMAP:\n%s", out)
	}
	if code, out := curlLogin(t, attacker, dv.IMAPURL(), "amy@e2e.test", "amy-secret"); code == 0 {
		t.Errorf("after the crash, the blocked %s logged in:\n%s", attacker, out)
	}
	if code, out := curlLogin(t, "127.51.0.1", dv.IMAPURL(), "amy@e2e.test", "amy-secret"); code != 0 {
		t.Errorf("after the crash, amy from elsewhere refused:\n%s", out)
	}
}

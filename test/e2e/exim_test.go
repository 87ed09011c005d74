package e2e

// The Exim tests run Debian 12's Exim 4.96 as a submission server on a
// loopback port, with testdata/exim/exim.conf, which includes the shipped
// etc/exim/mailwarden.conf exactly as docs/integrate-exim.md shows (only
// mailwarden's socket is set, through the documented MAILWARDEN_SOCKET
// macro). Clients are swaks (and, where a test needs several AUTH commands
// in one connection, a few lines of SMTP below), each from its own
// 127.x.y.z source address.
//
// Debian's exim4 and postfix packages conflict, so on a machine that has
// Postfix installed Exim runs unpacked: testdata/exim/install.sh puts
// exim4-daemon-light under /var/cache/mailwarden-test/exim. The tests use
// /usr/sbin/exim4 when it exists, else that copy, and skip when there is
// neither.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// eximUnpacked is where testdata/exim/install.sh unpacks Debian's Exim.
const eximUnpacked = "/var/cache/mailwarden-test/exim/usr/sbin/exim4"

// eximConfig is the test server's configuration template.
const eximConfig = "test/e2e/testdata/exim/exim.conf"

// eximACLs is the shipped ACL file the configuration includes.
const eximACLs = "etc/exim/mailwarden.conf"

// mailwardenEximConfig is the daemon's configuration for the Exim tests:
// the built-in defaults but for the botnet's spread, with the thresholds
// the tests count on spelled out.
const mailwardenEximConfig = `# All test clients live in 127.0.0.0/8, a single /8 block: the botnet's
# networks (one /16 each) cannot span several /8 blocks as a real botnet's
# would, so one block is enough here.
networks:
  min_spread: 1
detectors:
  crack_ip:
    failures: 12     # TestEximBruteForce: blocked after at most 12 wrong passwords
  botnet:
    networks: 8      # TestEximBotnet: locked before the 13th network
    burst: 5
`

// eximCrackFailures is crack_ip.failures above.
const eximCrackFailures = 12

var (
	eximOnce sync.Once
	eximPath string
	eximErr  error
)

// eximBinary returns the Exim binary to run, skipping the test when there
// is none or the test does not run as root.
func eximBinary(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	requireBinaries(t, "swaks")
	if _, err := user.Lookup("Debian-exim"); err != nil {
		t.Skip("no Debian-exim user: run test/e2e/testdata/exim/install.sh")
	}
	eximOnce.Do(func() {
		for _, p := range []string{"/usr/sbin/exim4", eximUnpacked} {
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				eximPath = p
				break
			}
		}
		if eximPath == "" {
			return
		}
		// The unpacked binary needs libidn12, which install.sh installs.
		if out, err := runCmd(0, eximPath, "-C", "/dev/null", "-bV"); err != nil {
			eximErr = fmt.Errorf("%s -bV: %v (run test/e2e/testdata/exim/install.sh)\n%s", eximPath, err, out)
		}
	})
	if eximPath == "" {
		t.Skipf("Exim is not installed: neither /usr/sbin/exim4 nor %s (run test/e2e/testdata/exim/install.sh)", eximUnpacked)
	}
	if eximErr != nil {
		t.Fatal(eximErr)
	}
	return eximPath
}

// Exim is a running Exim daemon (exim4 -bdf) with its own configuration,
// spool and logs.
type Exim struct {
	t          *testing.T
	Dir        string // configuration, users, spool
	ConfigPath string
	Addr       string // 127.0.0.1:port
	MainLog    string
	PanicLog   string

	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	waitMu sync.Mutex
	exited bool
}

// eximUsers are the accounts of the test server and their passwords.
var eximUsers = map[string]string{
	"joe@example.test": "joe-secret",
	"ann@example.test": "ann-secret",
}

// startExim starts Exim on a free loopback port, asking mailwarden at
// socket (a unix path). It waits for the greeting and stops Exim, and
// every process it forked, when the test ends; the logs are printed if the
// test failed, and an unexpected line in the panic log fails it. Lines of
// main configuration in extra go before the shipped test configuration.
func startExim(t *testing.T, socket string, extra ...string) *Exim {
	t.Helper()
	bin := eximBinary(t)
	tmpl, err := os.ReadFile(filepath.Join(repoRoot, eximConfig))
	if err != nil {
		t.Fatal(err)
	}
	// Exim's reception processes run as Debian-exim: the folder must be
	// traversable, the spool theirs.
	dir := shortTempDir(t, "ex")
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(filepath.Join(spool, "log"), 0o750); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup("Debian-exim")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []string{spool, filepath.Join(spool, "log")} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	var users strings.Builder
	for _, a := range slices.Sorted(maps.Keys(eximUsers)) {
		fmt.Fprintf(&users, "%s: %s\n", a, eximUsers[a])
	}
	usersPath := filepath.Join(dir, "users")
	if err := os.WriteFile(usersPath, []byte(users.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ex := &Exim{
		t:          t,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "exim.conf"),
		Addr:       fmt.Sprintf("127.0.0.1:%d", port),
		MainLog:    filepath.Join(spool, "log", "mainlog"),
		PanicLog:   filepath.Join(spool, "log", "paniclog"),
		out:        &syncBuffer{},
		done:       make(chan struct{}),
	}
	conf := string(tmpl)
	for _, r := range [][2]string{
		{"@SPOOL@", spool},
		{"@PORT@", strconv.Itoa(port)},
		{"@USERS@", usersPath},
		{"@SOCKET@", socket},
		{"@MAILWARDEN@", filepath.Join(repoRoot, eximACLs)},
		{"@EXIM@", bin},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("%s no longer contains the placeholder %s", eximConfig, r[0])
		}
		conf = strings.ReplaceAll(conf, r[0], r[1])
	}
	if m := regexp.MustCompile(`@[A-Z]+@`).FindString(conf); m != "" {
		t.Fatalf("%s: placeholder %s is not set by the test", eximConfig, m)
	}
	if len(extra) > 0 {
		conf = strings.Join(extra, "\n") + "\n" + conf
	}
	if err := os.WriteFile(ex.ConfigPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ex.cmd = exec.Command(bin, "-C", ex.ConfigPath, "-bdf")
	ex.cmd.Stdout, ex.cmd.Stderr = ex.out, ex.out
	if err := ex.cmd.Start(); err != nil {
		t.Fatalf("start exim: %v", err)
	}
	go func() {
		ex.cmd.Wait()
		close(ex.done)
	}()
	t.Cleanup(func() {
		ex.Stop()
		if bad := ex.panics(); bad != "" {
			t.Errorf("exim panic log:\n%s", bad)
		}
		if t.Failed() {
			t.Log(ex.Logs())
		}
	})
	waitFor(t, "exim daemon", func() error {
		select {
		case <-ex.done:
			return errors.New("exim exited")
		default:
		}
		if !strings.Contains(fileTail(ex.MainLog, 0), "daemon started") {
			return errors.New("no \"daemon started\" in the main log yet")
		}
		return greets(ex.Addr, "220 ")
	}, ex.Logs)
	return ex
}

// Logs returns Exim's output, main log and panic log.
func (ex *Exim) Logs() string {
	return fmt.Sprintf("--- exim output ---\n%s\n--- exim main log %s ---\n%s\n--- exim panic log ---\n%s\n",
		ex.out, ex.MainLog, fileTail(ex.MainLog, 30000), fileTail(ex.PanicLog, 5000))
}

// panics returns the panic log's lines but the expected one: a reception
// process, running as the Exim user, runs Exim again to deliver, and Exim
// notes that -C from an unprivileged caller gives up root privilege, which
// delivering to :blackhole: does not need.
func (ex *Exim) panics() string {
	b, err := os.ReadFile(ex.PanicLog)
	if err != nil {
		return ""
	}
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" && !strings.HasSuffix(l, "exim user lost privilege for using -C option") {
			bad = append(bad, l)
		}
	}
	return strings.Join(bad, "\n")
}

// WaitLog waits until the main log has a line containing every part.
func (ex *Exim) WaitLog(parts ...string) string {
	ex.t.Helper()
	var found string
	waitFor(ex.t, fmt.Sprintf("exim main log line with %q", parts), func() error {
		for _, l := range strings.Split(fileTail(ex.MainLog, 0), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l, p) {
					ok = false
					break
				}
			}
			if ok {
				found = l
				return nil
			}
		}
		return errors.New("not there")
	}, ex.Logs)
	return found
}

// Stop stops the daemon (SIGTERM) and waits until every process running
// this configuration (reception and delivery processes) has exited,
// killing the ones left after waitTimeout. Calling it again is harmless.
func (ex *Exim) Stop() {
	ex.waitMu.Lock()
	defer ex.waitMu.Unlock()
	if ex.exited {
		return
	}
	ex.exited = true
	ex.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ex.done:
	case <-time.After(waitTimeout):
		ex.cmd.Process.Kill()
		<-ex.done
		ex.t.Errorf("exim did not exit within %s of SIGTERM", waitTimeout)
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		left := eximProcs(ex.ConfigPath)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			ex.t.Errorf("exim processes %v still running %s after the daemon stopped: killed", left, waitTimeout)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eximProcs lists the processes whose command line has arg (Exim's
// children carry -C <config>).
func eximProcs(arg string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(b), "\x00"), arg) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// eximSwaksResult is what one swaks run saw.
type eximSwaksResult struct {
	Out     string
	Code    int    // swaks' exit code
	ID      string // Exim's message id from "250 OK id=…" after DATA; "" if not accepted
	Refusal string // the first error reply or "*** …" line; "" if none
	Closed  bool   // the server closed the connection on the client
}

var (
	eximSwaksID     = regexp.MustCompile(`(?m)^<-  250 OK id=(\S+)`)
	eximSwaksRefuse = regexp.MustCompile(`(?m)^(?:<\*\* |\*\*\* )(.*)$`)
)

// send runs swaks from the source address from to ex: AUTH PLAIN as
// account with password, then one message from the account to
// inbox@example.test.
func (ex *Exim) send(from, account, password string) eximSwaksResult {
	ex.t.Helper()
	args := []string{"--server", ex.Addr, "--local-interface", from,
		"--helo", "client.example.org", "--from", account, "--to", "inbox@example.test",
		"--auth", "PLAIN", "--auth-user", account, "--auth-password", password,
		"--timeout", "15"}
	out, err := runCmd(30*time.Second, "swaks", args...)
	r := eximSwaksResult{Out: out, Code: exitCode(err)}
	if r.Code < 0 {
		ex.t.Fatalf("swaks %s: %v\n%s\n%s", strings.Join(args, " "), err, out, ex.Logs())
	}
	if m := eximSwaksID.FindStringSubmatch(out); m != nil {
		r.ID = m[1]
	}
	if m := eximSwaksRefuse.FindStringSubmatch(out); m != nil {
		r.Refusal = m[1]
	}
	r.Closed = strings.Contains(out, "Remote host closed connection unexpectedly")
	return r
}

// mustSend sends one message and fails the test unless Exim accepted it
// (250 after DATA) and logged its arrival from that address and account.
func (ex *Exim) mustSend(from, account, password string) string {
	ex.t.Helper()
	r := ex.send(from, account, password)
	if r.ID == "" || r.Code != 0 {
		ex.t.Fatalf("swaks from %s as %s: not accepted (exit %d)\n%s\n%s", from, account, r.Code, r.Out, ex.Logs())
	}
	ex.WaitLog(r.ID+" <= "+account, "["+from+"]:", "P=esmtpa", "A=plain:"+account)
	return r.ID
}

// eximSMTPConn is a bare SMTP client, for sessions swaks cannot play
// (several AUTH commands in one connection).
type eximSMTPConn struct {
	c  net.Conn
	tp *textproto.Conn
}

// eximDialSMTP connects from the source address from and reads the
// greeting.
func eximDialSMTP(from, addr string) (*eximSMTPConn, int, string, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, 0, "", err
	}
	c.SetDeadline(time.Now().Add(waitTimeout))
	s := &eximSMTPConn{c: c, tp: textproto.NewConn(c)}
	code, msg, err := s.tp.ReadResponse(0)
	if err != nil {
		c.Close()
		return nil, code, msg, err
	}
	return s, code, msg, nil
}

// cmd sends one command and reads its reply; err is set when the
// connection ended instead.
func (s *eximSMTPConn) cmd(line string) (int, string, error) {
	if err := s.tp.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	return s.tp.ReadResponse(0)
}

func (s *eximSMTPConn) Close() { s.c.Close() }

// eximAuthPlain is the AUTH PLAIN command for account and password.
func eximAuthPlain(account, password string) string {
	return "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+account+"\x00"+password))
}

// eximAdminJSON fetches an admin API list (/v1/locks, /v1/blocks,
// /v1/incidents).
func eximAdminJSON(t *testing.T, mw *Mailwarden, path string) []map[string]any {
	t.Helper()
	body, err := mw.AdminGET(path)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, body, mw.Logs())
	}
	var v []map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
	return v
}

// eximHasEntry tells whether one of the entries has key = value.
func eximHasEntry(list []map[string]any, key, value string) bool {
	for _, e := range list {
		if fmt.Sprint(e[key]) == value {
			return true
		}
	}
	return false
}

// TestEximConfigMatchesDocs checks that the test server calls the
// mailwarden ACLs exactly as docs/integrate-exim.md section 3 shows, so
// that the documentation and the tested configuration cannot drift apart.
func TestEximConfigMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs/integrate-exim.md"))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(repoRoot, eximConfig))
	if err != nil {
		t.Fatal(err)
	}
	var block string
	for i, part := range strings.Split(string(doc), "```") {
		if i%2 == 1 && strings.Contains(part, "acl_check_connect:") {
			block = part
			break
		}
	}
	if block == "" {
		t.Fatal("docs/integrate-exim.md: no code block with acl_check_connect: (section 3)")
	}
	for _, l := range strings.Split(block, "\n") {
		if strings.HasPrefix(l, "acl_smtp_") && !strings.Contains(string(conf), "\n"+l+"\n") {
			t.Errorf("%s lacks the documented line %q", eximConfig, l)
		}
	}
	acls := block[strings.Index(block, "acl_check_connect:"):]
	if !strings.Contains(string(conf), acls) {
		t.Errorf("%s: the ACLs differ from docs/integrate-exim.md section 3, which shows:\n%s", eximConfig, acls)
	}
	if !strings.Contains(string(conf), "begin acl\n.include @MAILWARDEN@\n") {
		t.Errorf("%s: mailwarden.conf must be included right after \"begin acl\", as documented", eximConfig)
	}
}

// TestEximBotnet is the stolen-password botnet of the exim-users thread:
// one account authenticates from 13 addresses, each in its own /16, and
// sends one message from each. mailwarden locks the account before the
// 13th; from then on Exim drops the account's sessions at MAIL, while
// another account keeps sending.
func TestEximBotnet(t *testing.T) {
	eximBinary(t)
	mw := startMailwarden(t, MailwardenOpts{Config: mailwardenEximConfig})
	ex := startExim(t, mw.EximSocket)
	const victim, other = "joe@example.test", "ann@example.test"

	firstRefused := 0
	for i := 1; i <= 13; i++ {
		from := fmt.Sprintf("127.%d.0.%d", i, 4*i+1) // 127.1.0.5, 127.2.0.9, …
		r := ex.send(from, victim, eximUsers[victim])
		if r.ID != "" {
			if firstRefused != 0 {
				t.Fatalf("message %d from %s accepted after the account was refused at message %d\n%s", i, from, firstRefused, r.Out)
			}
			ex.WaitLog(r.ID+" <= "+victim, "["+from+"]:", "A=plain:"+victim)
			continue
		}
		// Locked: refused at MAIL with the daemon's text, and the
		// connection closed (drop).
		if !strings.HasPrefix(r.Refusal, "550 Account temporarily locked") || !r.Closed {
			t.Fatalf("message %d from %s: want 550 \"Account temporarily locked\" and the connection closed\n%s\n%s", i, from, r.Out, ex.Logs())
		}
		ex.WaitLog("["+from+"]:", "rejected MAIL <"+victim+">: Account temporarily locked")
		ex.WaitLog("["+from+"]:", "closed by DROP in ACL")
		if firstRefused == 0 {
			firstRefused = i
			t.Logf("refused from message %d on (%s)", i, from)
		}
	}
	if firstRefused == 0 || firstRefused > 12 {
		t.Fatalf("the account was not locked before its 13th address (first refusal: %d)\n%s\n%s", firstRefused, ex.Logs(), mw.Logs())
	}
	if firstRefused == 1 {
		t.Fatalf("the first message was refused already: the account was locked before it was used\n%s", ex.Logs())
	}

	if !eximHasEntry(eximAdminJSON(t, mw, "/v1/locks"), "account", victim) {
		t.Errorf("/v1/locks does not list %s", victim)
	}
	if !eximHasEntry(eximAdminJSON(t, mw, "/v1/incidents"), "detector", "botnet") {
		t.Errorf("/v1/incidents has no botnet incident")
	}

	// The next attempt, from an address the account used before the lock,
	// is dropped too.
	r := ex.send("127.1.0.5", victim, eximUsers[victim])
	if r.ID != "" || !strings.HasPrefix(r.Refusal, "550 ") || !r.Closed {
		t.Fatalf("locked account sending again from 127.1.0.5: want 550 and the connection closed\n%s", r.Out)
	}
	// Another account, also from one of the botnet's addresses, sends.
	ex.mustSend("127.1.0.5", other, eximUsers[other])
	ex.mustSend("127.200.0.1", other, eximUsers[other])
}

// TestEximBruteForce guesses passwords from one address, over several
// connections with several AUTH commands each (Exim 4.96 reports each
// failure at the next AUTH or at QUIT). mailwarden blocks the address: the
// AUTH after the threshold is dropped, and so is every later connection
// from it, before the banner, while another address authenticates as the
// very account under attack and sends.
func TestEximBruteForce(t *testing.T) {
	eximBinary(t)
	mw := startMailwarden(t, MailwardenOpts{Config: mailwardenEximConfig})
	ex := startExim(t, mw.EximSocket)
	const attacker, victim = "127.66.0.7", "joe@example.test"

	failures, guess := 0, 0
	refused := ""
	for conn := 0; conn < 8 && refused == ""; conn++ {
		s, code, msg, err := eximDialSMTP(attacker, ex.Addr)
		if err != nil || code != 220 {
			refused = fmt.Sprintf("connect: %d %s %v", code, msg, err)
			if s != nil {
				s.Close()
			}
			break
		}
		if code, msg, err := s.cmd("EHLO guesser.example.org"); err != nil || code != 250 {
			s.Close()
			t.Fatalf("EHLO: %d %s %v", code, msg, err)
		}
		for range 5 {
			guess++
			code, msg, err := s.cmd(eximAuthPlain(victim, fmt.Sprintf("guess-%03d", guess)))
			if err == nil && code == 535 {
				failures++
				continue
			}
			refused = fmt.Sprintf("AUTH %d: %d %s %v", guess, code, msg, err)
			if err == nil {
				// A refusal is a drop: the connection is closed after it.
				if _, _, err2 := s.cmd("NOOP"); err2 == nil {
					t.Errorf("after %q the connection is still open", refused)
				}
			}
			break
		}
		if refused == "" {
			// QUIT reports the connection's last failure.
			if code, msg, err := s.cmd("QUIT"); err != nil || code != 221 {
				t.Fatalf("QUIT: %d %s %v", code, msg, err)
			}
		}
		s.Close()
	}
	t.Logf("%d failed AUTH, then %s", failures, refused)
	if refused == "" {
		t.Fatalf("%d wrong passwords from %s and never refused\n%s\n%s", failures, attacker, ex.Logs(), mw.Logs())
	}
	if !strings.Contains(refused, "Too many failed logins") {
		t.Fatalf("refused with %q, want the blocked-address text\n%s", refused, ex.Logs())
	}
	if failures == 0 || failures > eximCrackFailures {
		t.Fatalf("refused after %d failures, want 1 to %d (crack_ip.failures)", failures, eximCrackFailures)
	}
	ex.WaitLog("plain authenticator failed for (guesser.example.org) ["+attacker+"]:", "(set_id="+victim+")")

	if !eximHasEntry(eximAdminJSON(t, mw, "/v1/blocks"), "ip", attacker) {
		t.Errorf("/v1/blocks does not list %s", attacker)
	}

	// Any new connection from the address is dropped before the banner,
	// even with the right password.
	r := ex.send(attacker, victim, eximUsers[victim])
	if r.ID != "" || !strings.HasPrefix(r.Refusal, "550 Too many failed logins") || !r.Closed {
		t.Fatalf("blocked address connecting again: want 550 at the banner and the connection closed\n%s\n%s", r.Out, ex.Logs())
	}
	ex.WaitLog("["+attacker+"]:", `rejected connection in "connect" ACL: Too many failed logins`)

	// Another address authenticates as the attacked account and sends:
	// the victim is not locked out.
	ex.mustSend("127.67.0.8", victim, eximUsers[victim])
}

// TestEximFailOpen stops mailwarden under a running Exim: the ACLs'
// ${readsocket} falls back to DUNNO and Exim accepts authenticated mail,
// even for an account mailwarden had locked.
func TestEximFailOpen(t *testing.T) {
	eximBinary(t)
	mw := startMailwarden(t, MailwardenOpts{Config: mailwardenEximConfig})
	ex := startExim(t, mw.EximSocket)
	const account = "joe@example.test"

	ex.mustSend("127.1.0.5", account, eximUsers[account])
	// The ACLs do ask mailwarden: a lock set by the admin is enforced.
	mw.MustAdmin("lock", account, "--reason", "fail-open test")
	r := ex.send("127.1.0.5", account, eximUsers[account])
	if r.ID != "" || !strings.HasPrefix(r.Refusal, "550 Account temporarily locked") {
		t.Fatalf("locked account: want 550 at MAIL\n%s\n%s", r.Out, ex.Logs())
	}

	mw.Stop()
	id := ex.mustSend("127.1.0.5", account, eximUsers[account])
	ex.mustSend("127.2.0.9", "ann@example.test", eximUsers["ann@example.test"])
	ex.WaitLog(id, "Completed")
}

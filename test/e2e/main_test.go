// Package e2e drives mailwarden against the real mail servers of Debian 12:
// Postfix, Exim and Dovecot, each started by the test with its own
// configuration, ports, sockets and spool under a temporary folder, and
// stopped again. The servers include the very integration snippets the
// documentation shows (etc/postfix/main.cf.snippet,
// etc/dovecot/conf.d/95-mailwarden.conf, etc/exim/), rewriting only the
// addresses and secrets in them.
//
// Every client plays its own source address inside 127.0.0.0/8 (all of
// it is local on Linux). The tests need root and the Debian packages
// postfix, dovecot-imapd, dovecot-pop3d, swaks and curl, and skip when
// they are missing.
//
// This file holds the shared helpers: the mailwarden binary, the daemon
// (startMailwarden), Dovecot (startDovecot), free ports, waits and
// command runs.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// waitTimeout bounds every wait for a daemon or a condition.
const waitTimeout = 20 * time.Second

var (
	// mailwardenBin is the binary built once by TestMain.
	mailwardenBin string
	// repoRoot is the module root (where go.mod is).
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	tmp, err := os.MkdirTemp("", "mailwarden-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// Daemons running as other users (dovecot, postfix) never need the
	// binary, but the folder must be traversable for the CLI run as root.
	os.Chmod(tmp, 0o755)
	mailwardenBin = filepath.Join(tmp, "mailwarden")
	build := exec.Command("go", "build", "-o", mailwardenBin, "./cmd/mailwarden")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/mailwarden: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// requireRoot skips the test unless it runs as root: the mail servers
// drop privileges to their own users and need root to start.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the mail servers start as root and drop privileges")
	}
}

// requireBinaries skips the test when one of the programs is not
// installed; it returns their paths in order.
func requireBinaries(t *testing.T, names ...string) []string {
	t.Helper()
	var paths []string
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
				if fi, err2 := os.Stat(filepath.Join(dir, n)); err2 == nil && !fi.IsDir() {
					p, err = filepath.Join(dir, n), nil
					break
				}
			}
		}
		if err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install postfix dovecot-imapd dovecot-pop3d swaks curl)", n)
		}
		paths = append(paths, p)
	}
	return paths
}

// shortTempDir makes a folder under /tmp with a short path (unix socket
// paths are limited to 107 bytes, and t.TempDir's paths carry the test
// name) that other users may traverse (mode 0755; t.TempDir's parent is
// private). It is removed when the test ends.
func shortTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{}
)

// freePort returns a TCP port in 20000–31999 (above 10000, below Linux's
// ephemeral range so no outgoing connection takes it) that nothing listens
// on at 127.0.0.1 and that no other test of this process was given.
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		if portUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portUsed[p] = true
		return p
	}
	t.Fatal("no free port found in 20000-31999")
	return 0
}

// waitFor polls cond until it returns nil or waitTimeout passes; then the
// test fails with what, cond's last error and the logs given. (The daemons
// started by the helpers print their own logs when a test fails.)
func waitFor(t *testing.T, what string, cond func() error, logs ...func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l())
	}
	t.Fatalf("timed out after %s waiting for %s: %v\n%s", waitTimeout, what, err, b.String())
}

// dialOK tells whether something accepts connections at a "unix:/path" or
// "host:port" address.
func dialOK(addr string) error {
	network, a := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, a = "unix", p
	}
	c, err := net.DialTimeout(network, a, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// runCmd runs a program with a deadline (waitTimeout unless given) and
// returns its combined output; err is non-nil when it exits non-zero or
// runs out of time.
func runCmd(timeout time.Duration, name string, args ...string) (string, error) {
	if timeout <= 0 {
		timeout = waitTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, ctx.Err())
	}
	return string(out), err
}

// exitCode is the exit status of a runCmd error (0 for nil, -1 when the
// program did not exit normally).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// fileTail returns a file's last max bytes (all of it when max <= 0), or
// a note that it could not be read.
func fileTail(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%s: %v)\n", path, err)
	}
	if max > 0 && len(b) > max {
		b = append([]byte("…"), b[len(b)-max:]...)
	}
	return string(b)
}

// renderTemplate fills in a text/template under testdata/ (e.g.
// "dovecot/dovecot.conf.tmpl") with data.
func renderTemplate(t *testing.T, name string, data any) string {
	t.Helper()
	tm, err := template.ParseFiles(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tm.Execute(&b, data); err != nil {
		t.Fatalf("testdata/%s: %v", name, err)
	}
	return b.String()
}

// syncBuffer is a bytes.Buffer safe for a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// MailwardenOpts configures startMailwarden. The zero value runs the
// built-in defaults with every listener on, in fresh folders.
type MailwardenOpts struct {
	// Config is the YAML configuration file's content; "" uses the
	// built-in defaults. Leave out serve.postfix, serve.exim,
	// serve.dovecot, serve.admin and serve.state_dir: the handle sets them
	// by flag. serve.dovecot_api_key may be set here or by DovecotAPIKey.
	Config string
	// DovecotAPIKey, when set, is appended as serve.dovecot_api_key (only
	// when Config has no serve: section of its own).
	DovecotAPIKey string
	// StateDir is the state folder; "" makes a fresh one. Reuse a
	// stopped daemon's StateDir to restart on its state.
	StateDir string
	// SocketDir holds the unix sockets; "" makes a fresh short one.
	SocketDir string
	// DovecotAddr is the Dovecot listener's host:port; "" picks a free
	// loopback port.
	DovecotAddr string
}

// Mailwarden is a running `mailwarden serve`.
type Mailwarden struct {
	t    *testing.T
	Opts MailwardenOpts // as resolved: StateDir, SocketDir, DovecotAddr filled in

	PostfixAddr   string // "unix:/…/postfix.sock"
	PostfixSocket string // the same path without "unix:"
	EximSocket    string // path of the Exim ${readsocket} socket
	DovecotAddr   string // 127.0.0.1:port of the Dovecot auth policy listener
	DovecotURL    string // "http://127.0.0.1:port/" for auth_policy_server_url
	AdminAddr     string // "unix:/…/admin.sock"
	ConfigPath    string
	LogPath       string // the daemon's stderr (slog, debug level)

	cmd    *exec.Cmd
	done   chan struct{}
	waitMu sync.Mutex
	exited bool
}

var mwStarts sync.Map // state dir -> start count, so restarts log to new files

// startMailwarden starts `mailwarden serve` with all four listeners (Postfix
// and Exim on unix sockets, Dovecot on loopback TCP, the admin API on a unix
// socket) and waits until each of them answers. The daemon is stopped
// (SIGTERM) when the test ends, and its log is printed if the test failed.
func startMailwarden(t *testing.T, opts MailwardenOpts) *Mailwarden {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(shortTempDir(t, "mws"), "state")
	}
	if opts.SocketDir == "" {
		opts.SocketDir = shortTempDir(t, "mw")
	}
	if opts.DovecotAddr == "" {
		opts.DovecotAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	n := 1
	if v, ok := mwStarts.Load(opts.StateDir); ok {
		n = v.(int) + 1
	}
	mwStarts.Store(opts.StateDir, n)
	m := &Mailwarden{
		t:             t,
		Opts:          opts,
		PostfixSocket: filepath.Join(opts.SocketDir, "postfix.sock"),
		EximSocket:    filepath.Join(opts.SocketDir, "exim.sock"),
		DovecotAddr:   opts.DovecotAddr,
		DovecotURL:    "http://" + opts.DovecotAddr + "/",
		AdminAddr:     "unix:" + filepath.Join(opts.SocketDir, "admin.sock"),
		ConfigPath:    filepath.Join(opts.SocketDir, fmt.Sprintf("mailwarden-%d.yaml", n)),
		LogPath:       filepath.Join(opts.SocketDir, fmt.Sprintf("mailwarden-%d.log", n)),
		done:          make(chan struct{}),
	}
	m.PostfixAddr = "unix:" + m.PostfixSocket
	cfg := opts.Config
	if opts.DovecotAPIKey != "" && !strings.Contains(cfg, "serve:") {
		cfg += fmt.Sprintf("\nserve:\n  dovecot_api_key: %q\n", opts.DovecotAPIKey)
	}
	if err := os.WriteFile(m.ConfigPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(m.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(mailwardenBin, "serve",
		"--config", m.ConfigPath,
		"--state-dir", opts.StateDir,
		"--postfix", m.PostfixAddr,
		"--exim", "unix:"+m.EximSocket,
		"--dovecot", m.DovecotAddr,
		"--admin", m.AdminAddr,
		"--log-level", "debug")
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start mailwarden: %v", err)
	}
	go func() {
		m.cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("mailwarden log (%s):\n%s", m.LogPath, fileTail(m.LogPath, 20000))
		}
	})
	waitFor(t, "mailwarden listeners", func() error {
		select {
		case <-m.done:
			return errors.New("mailwarden exited")
		default:
		}
		for _, a := range []string{m.PostfixAddr, "unix:" + m.EximSocket, m.DovecotAddr} {
			if err := dialOK(a); err != nil {
				return err
			}
		}
		_, err := m.Admin("status")
		return err
	})
	return m
}

// Logs returns the daemon's log so far, for failure messages.
func (m *Mailwarden) Logs() string {
	return fmt.Sprintf("--- mailwarden log %s ---\n%s\n", m.LogPath, fileTail(m.LogPath, 20000))
}

// Admin runs a CLI command against the daemon, e.g.
// Admin("lock", "joe@example.com", "--reason", "test"), and returns its
// combined output.
func (m *Mailwarden) Admin(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("Admin: no command")
	}
	a := append([]string{args[0], "--admin", m.AdminAddr}, args[1:]...)
	return runCmd(waitTimeout, mailwardenBin, a...)
}

// MustAdmin is Admin that fails the test on error.
func (m *Mailwarden) MustAdmin(args ...string) string {
	m.t.Helper()
	out, err := m.Admin(args...)
	if err != nil {
		m.t.Fatalf("mailwarden %s: %v\n%s\n%s", strings.Join(args, " "), err, out, m.Logs())
	}
	return out
}

// AdminGET fetches a path of the admin API (e.g. "/v1/locks") and returns
// the body.
func (m *Mailwarden) AdminGET(path string) (string, error) {
	sock := strings.TrimPrefix(m.AdminAddr, "unix:")
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	resp, err := cl.Get("http://mailwarden" + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return b.String(), fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b.String(), nil
}

// Running tells whether the process is still alive.
func (m *Mailwarden) Running() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the daemon to exit (killing it, and
// failing the test, if it does not within waitTimeout). Calling it again
// is harmless.
func (m *Mailwarden) Stop() {
	m.signalAndWait(syscall.SIGTERM)
}

// Kill sends SIGKILL (a crash: nothing is flushed or closed) and waits.
func (m *Mailwarden) Kill() {
	m.signalAndWait(syscall.SIGKILL)
}

func (m *Mailwarden) signalAndWait(sig syscall.Signal) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	if m.exited {
		return
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(waitTimeout):
		m.cmd.Process.Kill()
		<-m.done
		m.t.Errorf("mailwarden did not exit within %s of %v", waitTimeout, sig)
	}
	m.exited = true
}

// Restart starts a new daemon on the same state folder, sockets and
// Dovecot port, with the same configuration. The old one must have
// stopped (Stop or Kill).
func (m *Mailwarden) Restart(t *testing.T) *Mailwarden {
	t.Helper()
	if m.Running() {
		t.Fatal("Restart: the daemon is still running")
	}
	return startMailwarden(t, m.Opts)
}

// DovecotOpts configures startDovecot.
type DovecotOpts struct {
	// Users maps a login to its password (a passwd-file with {PLAIN}
	// passwords).
	Users map[string]string
	// Policy is the mailwarden whose Dovecot listener the auth policy
	// points at (through etc/dovecot/conf.d/95-mailwarden.conf, with the
	// URL, API key and nonce replaced); nil leaves the policy out.
	Policy *Mailwarden
	// APIKey is the API key both sides use; "" means "e2e-api-key" (start
	// the mailwarden with the same DovecotAPIKey).
	APIKey string
	// Protocols is Dovecot's protocols setting; "" means "imap pop3".
	Protocols string
	// DoveadmHTTPPort, when set, opens the doveadm HTTP API on that
	// loopback port, with DoveadmAPIKey as doveadm_api_key.
	DoveadmHTTPPort int
	DoveadmAPIKey   string
}

// Dovecot is a running Dovecot master (dovecot -F) with its own
// configuration, base_dir, state_dir and maildirs.
type Dovecot struct {
	t          *testing.T
	Dir        string // the instance's folder (config, passwd, mail, logs)
	ConfigPath string
	IMAPPort   int // plain IMAP on 127.0.0.1
	POP3Port   int // plain POP3 on 127.0.0.1
	// AuthSocket is the auth client socket (mode 0666) for SMTP servers
	// that authenticate through Dovecot SASL: Postfix smtpd_sasl_path,
	// Exim's dovecot authenticator server_socket.
	AuthSocket string
	LogPath    string

	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	waitMu sync.Mutex
	exited bool
}

// The Dovecot auth policy snippet, as shipped.
const dovecotSnippet = "etc/dovecot/conf.d/95-mailwarden.conf"

// The doveadm HTTP API snippet for kicking sessions, as shipped.
const doveadmSnippet = "etc/dovecot/conf.d/96-mailwarden-doveadm.conf"

// startDovecot starts Dovecot on two free loopback ports (IMAP and POP3)
// with a passwd-file of the users and, when opts.Policy is set, the
// shipped auth policy snippet pointing at that mailwarden. It waits for
// both greetings and the auth socket, and stops Dovecot when the test ends.
func startDovecot(t *testing.T, opts DovecotOpts) *Dovecot {
	t.Helper()
	requireRoot(t)
	bins := requireBinaries(t, "dovecot")
	if _, err := os.Stat("/usr/lib/dovecot/pop3"); err != nil && strings.Contains(opts.protocols(), "pop3") {
		t.Skip("dovecot-pop3d is not installed")
	}
	if _, err := os.Stat("/usr/lib/dovecot/imap"); err != nil && strings.Contains(opts.protocols(), "imap") {
		t.Skip("dovecot-imapd is not installed")
	}
	// Dovecot's unprivileged processes (dovenull, dovecot, nobody) must
	// reach these files, and base_dir holds unix sockets: a short path
	// with traversable parents.
	dir := shortTempDir(t, "dv")
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, "mail"), 0o777)
	var pw strings.Builder
	for u, p := range opts.Users {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s::::\n", u, p)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	dv := &Dovecot{
		t:          t,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "dovecot.conf"),
		IMAPPort:   freePort(t),
		POP3Port:   freePort(t),
		AuthSocket: filepath.Join(dir, "run", "auth-smtp"),
		LogPath:    filepath.Join(dir, "dovecot.log"),
		out:        &syncBuffer{},
		done:       make(chan struct{}),
	}
	policy := ""
	if opts.Policy != nil {
		key := opts.APIKey
		if key == "" {
			key = "e2e-api-key"
		}
		snip, err := os.ReadFile(filepath.Join(repoRoot, dovecotSnippet))
		if err != nil {
			t.Fatal(err)
		}
		// The shipped file, with only its address and secrets replaced.
		s := string(snip)
		for _, r := range [][2]string{
			{"http://127.0.0.1:8643/", opts.Policy.DovecotURL},
			{"CHANGE-ME-api-key", key},
			{"CHANGE-ME-random-nonce", "e2e-nonce-4f1c"},
		} {
			if !strings.Contains(s, r[0]) {
				t.Fatalf("%s no longer contains %q: update the test's placeholders", dovecotSnippet, r[0])
			}
			s = strings.ReplaceAll(s, r[0], r[1])
		}
		p := filepath.Join(dir, "95-mailwarden.conf")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		policy = p
	}
	doveadm := ""
	if opts.DoveadmHTTPPort != 0 {
		// The shipped doveadm HTTP API snippet, with its port and key
		// replaced.
		snip, err := os.ReadFile(filepath.Join(repoRoot, doveadmSnippet))
		if err != nil {
			t.Fatal(err)
		}
		s := string(snip)
		for _, r := range [][2]string{
			{"port = 8080", fmt.Sprintf("port = %d", opts.DoveadmHTTPPort)},
			{"CHANGE-ME-doveadm-key", opts.DoveadmAPIKey},
		} {
			if !strings.Contains(s, r[0]) {
				t.Fatalf("%s no longer contains %q: update the test's placeholders", doveadmSnippet, r[0])
			}
			s = strings.ReplaceAll(s, r[0], r[1])
		}
		doveadm = filepath.Join(dir, "96-mailwarden-doveadm.conf")
		if err := os.WriteFile(doveadm, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := renderTemplate(t, "dovecot/dovecot.conf.tmpl", map[string]any{
		"Dir": dir, "Instance": fmt.Sprintf("mw-e2e-%d", dv.IMAPPort), "Protocols": opts.protocols(),
		"IMAPPort": dv.IMAPPort, "POP3Port": dv.POP3Port, "PolicyInclude": policy,
		"DoveadmInclude": doveadm,
	})
	if err := os.WriteFile(dv.ConfigPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	dv.cmd = exec.Command(bins[0], "-F", "-c", dv.ConfigPath)
	dv.cmd.Stdout, dv.cmd.Stderr = dv.out, dv.out
	if err := dv.cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	go func() {
		dv.cmd.Wait()
		close(dv.done)
	}()
	t.Cleanup(func() {
		dv.Stop()
		if t.Failed() {
			t.Log(dv.Logs())
		}
	})
	waitFor(t, "dovecot greetings and auth socket", func() error {
		select {
		case <-dv.done:
			return errors.New("dovecot exited")
		default:
		}
		if strings.Contains(opts.protocols(), "imap") {
			if err := greets(fmt.Sprintf("127.0.0.1:%d", dv.IMAPPort), "* OK"); err != nil {
				return err
			}
		}
		if strings.Contains(opts.protocols(), "pop3") {
			if err := greets(fmt.Sprintf("127.0.0.1:%d", dv.POP3Port), "+OK"); err != nil {
				return err
			}
		}
		return dialOK("unix:" + dv.AuthSocket)
	})
	return dv
}

func (o DovecotOpts) protocols() string {
	if o.Protocols == "" {
		return "imap pop3"
	}
	return o.Protocols
}

// greets connects to addr and checks the first line starts with prefix.
func greets(addr, prefix string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("%s: no greeting: %w", addr, err)
	}
	if !strings.HasPrefix(string(buf[:n]), prefix) {
		return fmt.Errorf("%s: greeting %q", addr, buf[:n])
	}
	return nil
}

// Logs returns Dovecot's output and log file, for failure messages.
func (dv *Dovecot) Logs() string {
	return fmt.Sprintf("--- dovecot output ---\n%s\n--- dovecot log %s ---\n%s\n", dv.out, dv.LogPath, fileTail(dv.LogPath, 30000))
}

// Stop stops Dovecot (SIGTERM to the master, which stops its children)
// and waits. Calling it again is harmless.
func (dv *Dovecot) Stop() {
	dv.waitMu.Lock()
	defer dv.waitMu.Unlock()
	if dv.exited {
		return
	}
	dv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dv.done:
	case <-time.After(waitTimeout):
		dv.cmd.Process.Kill()
		<-dv.done
		dv.t.Errorf("dovecot did not exit within %s of SIGTERM", waitTimeout)
	}
	dv.exited = true
}

// IMAPURL and POP3URL are curl URLs of the instance.
func (dv *Dovecot) IMAPURL() string { return fmt.Sprintf("imap://127.0.0.1:%d/", dv.IMAPPort) }
func (dv *Dovecot) POP3URL() string { return fmt.Sprintf("pop3://127.0.0.1:%d/", dv.POP3Port) }

// curlLogin logs in with curl from the source address from (any
// 127.x.y.z) to an imap:// or pop3:// URL and lists the mailbox. It
// returns curl's exit code (0 logged in, 67 login refused) and its
// verbose output.
func curlLogin(t *testing.T, from, url, user, pass string) (int, string) {
	t.Helper()
	out, err := runCmd(waitTimeout, "curl", "-sS", "-v", "--max-time", "15",
		"--interface", from, "--user", user+":"+pass, url)
	code := exitCode(err)
	if code < 0 {
		t.Fatalf("curl %s as %s from %s: %v\n%s", url, user, from, err, out)
	}
	return code, out
}

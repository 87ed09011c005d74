package postfixpolicy

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// TestPostfixEndToEnd runs a private instance of the real Postfix (Debian's
// postfix package) with etc/postfix/main.cf.snippet included as shipped —
// only the socket path is changed — and drives SMTP sessions through it.
// XCLIENT stands in for SMTP AUTH: it sets the client address, port and
// sasl_username exactly as a login would. It skips without Postfix or root.
func TestPostfixEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	if _, err := exec.LookPath("postfix"); err != nil {
		t.Skip("postfix is not installed (apt-get install postfix)")
	}
	if os.Geteuid() != 0 {
		t.Skip("running a Postfix instance needs root")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		t.Skip("no postfix user")
	}
	snippet, err := os.ReadFile("../../etc/postfix/main.cf.snippet")
	if err != nil {
		t.Fatal(err)
	}

	dir, err := os.MkdirTemp("", "mailwarden-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"", "etc", "spool", "data"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
		os.Chmod(filepath.Join(dir, d), 0o755)
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}

	// mailwarden's side: the server with a scripted Decider.
	fake := &fakeDecider{
		decide: func(ev *event.Event) engine.Verdict {
			switch {
			case ev.Account == "locked@example.com":
				return engine.Lock
			case ev.Kind == event.Message && ev.Account == "held@example.com":
				return engine.Hold
			case ev.Kind == event.Message && ev.Account == "capped@example.com":
				return engine.Defer
			}
			return engine.Allow
		},
		check: func(account string, ip netip.Addr) engine.Verdict {
			switch {
			case ip == netip.MustParseAddr("192.0.2.66"):
				return engine.Blocked
			case account == "locked@example.com":
				return engine.Lock
			}
			return engine.Allow
		},
	}
	logs := &syncBuffer{}
	s, err := New(Config{Decider: fake, Logger: slog.New(slog.NewTextHandler(logs, nil)), Node: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "policy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666) // smtpd runs as the postfix user
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() { s.Close(); <-served })

	// Postfix's side.
	port := freePort(t)
	etc := filepath.Join(dir, "etc")
	mainCf := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.test
mydestination = example.org
local_recipient_maps =
local_transport = discard:
default_transport = discard:
mynetworks = 127.0.0.0/8
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_sasl_auth_enable = yes
`, dir) + strings.ReplaceAll(string(snippet), "unix:/run/mailwarden/postfix.sock", "unix:"+sock)
	masterCf := strconv.Itoa(port) + ` inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`
	os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCf), 0o644)
	os.WriteFile(filepath.Join(etc, "master.cf"), []byte(masterCf), 0o644)
	maillog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "maillog")); return string(b) }
	if out, err := exec.Command("postfix", "-c", etc, "start").CombinedOutput(); err != nil {
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, maillog())
	}
	t.Cleanup(func() {
		exec.Command("postfix", "-c", etc, "stop").Run()
		waitFor(t, "postfix to stop", func() bool {
			return exec.Command("postfix", "-c", etc, "status").Run() != nil
		})
		if t.Failed() {
			t.Logf("maillog:\n%s", maillog())
		}
	})
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitFor(t, "postfix to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	sessionOf := func(clientPort int) string {
		return fmt.Sprintf("192.0.2.10:%d|127.0.0.1:%d", clientPort, port)
	}

	// An authenticated client sends two messages in one session: one
	// login, two messages, real sizes and queue ids.
	c := dialSMTP(t, addr, "LOGIN=joe@example.com ADDR=192.0.2.10 PORT=40000")
	q1 := c.send(t, "joe@example.com", "a@example.org", "b@example.org")
	q2 := c.send(t, "joe@example.com", "c@example.org")
	c.quit()
	var auths, msgs []event.Event
	for _, cl := range fake.take() {
		switch {
		case cl.check:
		case cl.ev.Kind == event.AuthOK:
			auths = append(auths, cl.ev)
		case cl.ev.Kind == event.Message:
			msgs = append(msgs, cl.ev)
		}
	}
	if len(auths) != 1 || auths[0].Account != "joe@example.com" || auths[0].IP != clientIP || auths[0].Session != sessionOf(40000) {
		t.Fatalf("logins: %+v", auths)
	}
	if len(msgs) != 2 || msgs[0].QueueID != q1 || msgs[1].QueueID != q2 || msgs[0].Rcpts != 2 || msgs[1].Rcpts != 1 ||
		msgs[0].Size < 100 || msgs[0].Session != sessionOf(40000) || msgs[0].Node != "mx.test" || msgs[0].Source != Source {
		t.Fatalf("messages (queued %s, %s): %+v", q1, q2, msgs)
	}

	// A locked account: 421 at its first RCPT, and Postfix hangs up.
	c = dialSMTP(t, addr, "LOGIN=locked@example.com ADDR=192.0.2.10 PORT=40001")
	c.cmd(t, 250, "MAIL FROM:<locked@example.com>")
	code, msg := c.try("RCPT TO:<a@example.org>")
	if code != 421 || !strings.HasPrefix(msg, "4.7.1 ") || !strings.Contains(msg, "Account temporarily disabled, contact your mail provider") {
		t.Fatalf("locked account: %d %s", code, msg)
	}
	c.hungUp(t)

	// A blocked address, not authenticated: 421 as well.
	c = dialSMTP(t, addr, "ADDR=192.0.2.66 PORT=40002")
	c.cmd(t, 250, "MAIL FROM:<x@example.net>")
	if code, msg := c.try("RCPT TO:<a@example.org>"); code != 421 || !strings.Contains(msg, "Service temporarily unavailable") {
		t.Fatalf("blocked address: %d %s", code, msg)
	}
	c.hungUp(t)

	// A held sender: accepted (250), kept in Postfix's hold queue.
	c = dialSMTP(t, addr, "LOGIN=held@example.com ADDR=192.0.2.10 PORT=40003")
	qh := c.send(t, "held@example.com", "a@example.org")
	c.quit()
	out, err := exec.Command("postqueue", "-c", etc, "-j").Output()
	if err != nil {
		t.Fatalf("postqueue: %v", err)
	}
	if !inQueue(out, qh, "hold") || !strings.Contains(maillog(), "Held for review") {
		t.Fatalf("%s is not held:\n%s", qh, out)
	}

	// An account over a cap: the message is refused for now (450).
	c = dialSMTP(t, addr, "LOGIN=capped@example.com ADDR=192.0.2.10 PORT=40004")
	c.cmd(t, 250, "MAIL FROM:<capped@example.com>")
	c.cmd(t, 250, "RCPT TO:<a@example.org>")
	c.cmd(t, 354, "DATA")
	if code, msg := c.try("Subject: x\r\n\r\nbody\r\n."); code != 450 || !strings.Contains(msg, "Sending limit reached, try again later") {
		t.Fatalf("capped account: %d %s", code, msg)
	}
	c.quit()

	if l := logs.String(); l != "" {
		t.Fatalf("the server logged trouble with real Postfix requests:\n%s", l)
	}
	if strings.Contains(maillog(), "problem talking to server") {
		t.Fatalf("postfix had trouble talking to the server")
	}

	// mailwarden is gone: Postfix applies default_action=DUNNO.
	s.Close()
	c = dialSMTP(t, addr, "LOGIN=locked@example.com ADDR=192.0.2.10 PORT=40005")
	c.send(t, "locked@example.com", "a@example.org")
	c.quit()
	if !strings.Contains(maillog(), "problem talking to server "+sock) {
		t.Fatalf("postfix did not notice that the server was gone")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func inQueue(postqueueJSON []byte, qid, queue string) bool {
	for _, line := range strings.Split(string(postqueueJSON), "\n") {
		var m struct {
			QueueName string `json:"queue_name"`
			QueueID   string `json:"queue_id"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.QueueID == qid && m.QueueName == queue {
			return true
		}
	}
	return false
}

type smtpClient struct{ *textproto.Conn }

// dialSMTP connects, says EHLO, and applies XCLIENT attributes.
func dialSMTP(t *testing.T, addr, xclient string) *smtpClient {
	t.Helper()
	tc, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c := &smtpClient{tc}
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	c.cmd(t, 250, "EHLO client.example.net")
	c.cmd(t, 220, "XCLIENT "+xclient)
	c.cmd(t, 250, "EHLO client.example.net")
	return c
}

func (c *smtpClient) try(cmd string) (int, string) {
	id, err := c.Cmd("%s", cmd)
	if err != nil {
		return 0, err.Error()
	}
	c.StartResponse(id)
	defer c.EndResponse(id)
	code, msg, _ := c.ReadResponse(0)
	return code, msg
}

func (c *smtpClient) cmd(t *testing.T, want int, cmd string) string {
	t.Helper()
	code, msg := c.try(cmd)
	if code != want {
		t.Fatalf("%s: %d %s, want %d", cmd, code, msg, want)
	}
	return msg
}

// send sends one message and returns its queue id.
func (c *smtpClient) send(t *testing.T, from string, to ...string) string {
	t.Helper()
	c.cmd(t, 250, "MAIL FROM:<"+from+">")
	for _, r := range to {
		c.cmd(t, 250, "RCPT TO:<"+r+">")
	}
	c.cmd(t, 354, "DATA")
	msg := c.cmd(t, 250, "Subject: test\r\nFrom: <"+from+">\r\n\r\n"+strings.Repeat("Hello, world.\r\n", 10)+".")
	i := strings.LastIndex(msg, "queued as ")
	if i < 0 {
		t.Fatalf("no queue id in %q", msg)
	}
	return strings.TrimSpace(msg[i+len("queued as "):])
}

func (c *smtpClient) quit() { c.try("QUIT"); c.Close() }

// hungUp asserts that the server closed the session.
func (c *smtpClient) hungUp(t *testing.T) {
	t.Helper()
	if code, msg := c.try("NOOP"); code != 0 {
		t.Fatalf("the session is still open: %d %s", code, msg)
	}
}

// TestSnippetFailsOpen: every policy service the shipped main.cf lines
// name falls back to DUNNO, so that mail flows when mailwarden is away.
func TestSnippetFailsOpen(t *testing.T) {
	b, err := os.ReadFile("../../etc/postfix/main.cf.snippet")
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a parameter: %q", line)
		}
		params[strings.TrimSpace(name)] = strings.TrimSpace(value)
	}
	ep := params["mailwarden_policy"]
	for _, want := range []string{"default_action=DUNNO", "timeout=2s", "try_limit=1", "unix:/run/mailwarden/postfix.sock"} {
		if !strings.Contains(ep, want) {
			t.Errorf("mailwarden_policy = %q lacks %s", ep, want)
		}
	}
	for _, p := range []string{"smtpd_client_restrictions", "smtpd_recipient_restrictions", "smtpd_end_of_data_restrictions"} {
		if !strings.HasPrefix(params[p], "check_policy_service $mailwarden_policy") {
			t.Errorf("%s = %q: want check_policy_service $mailwarden_policy first", p, params[p])
		}
	}
	for name, v := range params {
		if strings.Count(v, "check_policy_service") != strings.Count(v, "check_policy_service $mailwarden_policy") {
			t.Errorf("%s = %q names another policy service", name, v)
		}
	}
}

package dovecotpolicy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// The real Dovecot, configured with etc/dovecot/conf.d/95-mailwarden.conf,
// against a Server: logins allowed, refused, slowed down and reported. It
// needs the dovecot binary (Debian: apt-get install dovecot-imapd) and
// root, and skips otherwise.
func TestDovecotEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		t.Skip("dovecot not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("dovecot needs root")
	}
	snippet, err := filepath.Abs("../../etc/dovecot/conf.d/95-mailwarden.conf")
	if err != nil {
		t.Fatal(err)
	}

	const key = "e2e-api-key"
	ts := start(t, Config{APIKey: key, TarpitSeconds: 1, Node: "imap1", LogPerSecond: -1})
	ts.dec.set("locked@example.com", engine.Lock)
	ts.dec.set("127.0.0.66", engine.Blocked)
	ts.dec.set("127.0.0.77", engine.Tarpit)

	// Dovecot's unprivileged processes must reach the files: not
	// t.TempDir, whose parent is private.
	dir, err := os.MkdirTemp("", "mailwarden-dovecot-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"run", "state", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, "mail"), 0o777)
	passwd := "joe@example.com:{PLAIN}secret::::\nlocked@example.com:{PLAIN}secret::::\n"
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	imapPort := freePort(t)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
mail_location = maildir:%[1]s/mail/%%u
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = %[1]s/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=%[1]s/mail/%%u
}
service imap-login {
  inet_listener imap {
    port = %[2]d
  }
  inet_listener imaps {
    port = 0
  }
}
!include %[3]s
# The test's own server and secrets.
auth_policy_server_url = http://%[4]s/
auth_policy_server_api_header = X-API-Key: %[5]s
auth_policy_hash_nonce = e2e-nonce
`, dir, imapPort, snippet, ts.addr, key)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-F", "-c", confPath)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot output:\n%s\ndovecot.log:\n%s\nserver log:\n%s", out, log, ts.log)
		}
	})
	imapAddr := fmt.Sprintf("127.0.0.1:%d", imapPort)
	waitListening(t, imapAddr)

	login := func(from, user, pass string) string {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", imapAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		if greet, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(greet, "* OK") {
			t.Fatalf("greeting %q, %v", greet, err)
		}
		fmt.Fprintf(c, "a1 LOGIN %s %s\r\n", user, pass)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("LOGIN %s from %s: %v", user, from, err)
			}
			if strings.HasPrefix(line, "a1 ") {
				return strings.TrimSpace(line)
			}
		}
	}
	session := regexp.MustCompile(`^[A-Za-z0-9+/]{16}$`)
	pwhash := regexp.MustCompile(`^[0-9a-f]{6}$`) // 24 bits

	// Right password: allow, allow, report success.
	if got := login("127.0.0.1", "joe@example.com", "secret"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("joe: %q", got)
	}
	checks, events := ts.dec.take()
	if len(checks) != 2 || len(events) != 1 || events[0].Kind != event.AuthOK || events[0].Account != "joe@example.com" ||
		events[0].Protocol != event.IMAP || !session.MatchString(events[0].Session) || events[0].IP.String() != "127.0.0.1" ||
		events[0].Node != "imap1" || events[0].Source != Source {
		t.Errorf("joe: checks %+v, events %+v", checks, events)
	}

	// Wrong password, twice the same and once another: three failures,
	// the first two with the same hash. (From three addresses: Dovecot
	// delays repeated failures from one address.)
	var hashes []string
	for i, pw := range []string{"guess1", "guess1", "guess2"} {
		if got := login(fmt.Sprintf("127.0.0.%d", 10+i), "joe@example.com", pw); !strings.HasPrefix(got, "a1 NO") {
			t.Errorf("wrong password: %q", got)
		}
		_, events = ts.dec.take()
		if len(events) != 1 || events[0].Kind != event.AuthFail || !pwhash.MatchString(events[0].PwHash) {
			t.Fatalf("wrong password: events %+v", events)
		}
		hashes = append(hashes, events[0].PwHash)
	}
	if hashes[0] != hashes[1] || hashes[0] == hashes[2] {
		t.Errorf("password hashes %v: want the same wrong password to hash alike and another not", hashes)
	}

	// A locked account is refused with our message, even with the right
	// password, and the refusal is not counted as a guess.
	if got := login("127.0.0.3", "locked@example.com", "secret"); !strings.HasPrefix(got, "a1 NO") || !strings.Contains(got, DefaultRejectMessage) {
		t.Errorf("locked: %q", got)
	}
	// A blocked address is refused whatever the account.
	if got := login("127.0.0.66", "joe@example.com", "secret"); !strings.HasPrefix(got, "a1 NO") {
		t.Errorf("blocked: %q", got)
	}
	if _, events = ts.dec.take(); len(events) != 0 {
		t.Errorf("refusals recorded: %+v", events)
	}
	// A tarpitted address waits, then logs in (Dovecot ignores the tarpit
	// answered to the check after authentication).
	if got := login("127.0.0.77", "joe@example.com", "secret"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("tarpit: %q", got)
	}
	s := ts.Stats()
	if s.Refused != 2 || s.Tarpitted != 2 || s.NotCounted != 2 || s.Failures != 3 || s.Logins != 2 || s.BadRequests+s.Unauthorized != 0 {
		t.Errorf("stats %+v", s)
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

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

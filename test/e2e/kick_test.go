package e2e

// Kicking a locked account's live IMAP and POP sessions out of the real
// Dovecot 2.3, through the doveadm HTTP API and through doveadm kick, with
// internal/kick as the daemon uses it. The clients are a few lines of raw
// IMAP and POP3 below: a session in IDLE, as a mail client keeps it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/kick"
)

// kickBound is how soon a kicked session must be closed: doveadm signals
// the session's process, which says BYE and exits at once.
const kickBound = 2 * time.Second

// kickSession is a logged-in IMAP (in IDLE) or POP3 session.
type kickSession struct {
	t     *testing.T
	proto string
	user  string
	c     net.Conn
	r     *bufio.Reader
}

func kickDial(t *testing.T, port int) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// line reads one line within waitTimeout.
func (s *kickSession) line() string {
	s.t.Helper()
	s.c.SetReadDeadline(time.Now().Add(waitTimeout))
	l, err := s.r.ReadString('\n')
	if err != nil {
		s.t.Fatalf("%s %s: reading: %v (got %q)", s.proto, s.user, err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// send writes a command and reads up to the line starting with want (the
// tagged answer), failing the test on anything else at that point.
func (s *kickSession) send(cmd, want string) {
	s.t.Helper()
	s.c.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(s.c, cmd+"\r\n"); err != nil {
		s.t.Fatalf("%s %s: %s: %v", s.proto, s.user, cmd, err)
	}
	tag, _, _ := strings.Cut(want, " ")
	for {
		l := s.line()
		if strings.HasPrefix(l, want) {
			return
		}
		if strings.HasPrefix(l, tag+" ") || strings.HasPrefix(l, "-ERR") {
			s.t.Fatalf("%s %s: %s: got %q, want %q", s.proto, s.user, strings.Fields(cmd)[0], l, want)
		}
	}
}

// kickIMAPIdle logs user in over IMAP, selects INBOX and enters IDLE.
func kickIMAPIdle(t *testing.T, dv *Dovecot, user, pass string) *kickSession {
	t.Helper()
	c, r := kickDial(t, dv.IMAPPort)
	s := &kickSession{t: t, proto: "imap", user: user, c: c, r: r}
	if g := s.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("imap greeting %q", g)
	}
	s.send(fmt.Sprintf("a LOGIN %s %s", user, pass), "a OK")
	s.send("b SELECT INBOX", "b OK")
	s.send("c IDLE", "+ ")
	return s
}

// kickPOP3 logs user in over POP3 and leaves the session open.
func kickPOP3(t *testing.T, dv *Dovecot, user, pass string) *kickSession {
	t.Helper()
	c, r := kickDial(t, dv.POP3Port)
	s := &kickSession{t: t, proto: "pop3", user: user, c: c, r: r}
	if g := s.line(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("pop3 greeting %q", g)
	}
	s.send("USER "+user, "+OK")
	s.send("PASS "+pass, "+OK")
	s.send("STAT", "+OK")
	return s
}

// closedBy waits until the server closes the session, at the latest at
// deadline, and returns what it said before (e.g. "* BYE …").
func (s *kickSession) closedBy(deadline time.Time) (string, error) {
	s.c.SetReadDeadline(deadline)
	var said []string
	for {
		l, err := s.r.ReadString('\n')
		if l != "" {
			said = append(said, strings.TrimRight(l, "\r\n"))
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return strings.Join(said, " | "), fmt.Errorf("%s session of %s still open at the deadline", s.proto, s.user)
		}
		// EOF or reset: closed.
		return strings.Join(said, " | "), nil
	}
}

// alive checks an IMAP session in IDLE still works: it leaves IDLE and
// runs NOOP, then idles again.
func (s *kickSession) alive() error {
	s.c.SetDeadline(time.Now().Add(waitTimeout))
	defer s.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(s.c, "DONE\r\nd NOOP\r\ne IDLE\r\n"); err != nil {
		return fmt.Errorf("%s session of %s: %v", s.proto, s.user, err)
	}
	want := []string{"c OK", "d OK", "+ "}
	for len(want) > 0 {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s session of %s is gone: %v", s.proto, s.user, err)
		}
		if strings.HasPrefix(l, want[0]) {
			want = want[1:]
		}
	}
	// The next check expects the same tags.
	if _, err := io.WriteString(s.c, "DONE\r\nc IDLE\r\n"); err != nil {
		return err
	}
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s session of %s is gone: %v", s.proto, s.user, err)
		}
		if strings.HasPrefix(l, "+ ") {
			return nil
		}
	}
}

// kickWho returns the connections doveadm who lists per user.
func kickWho(t *testing.T, doveadm string, dv *Dovecot) map[string]int {
	t.Helper()
	out, err := runCmd(0, doveadm, "-c", dv.ConfigPath, "-f", "tab", "who")
	if err != nil {
		t.Fatalf("doveadm who: %v\n%s", err, out)
	}
	users := map[string]int{}
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(l, "\t")
		if i == 0 || len(f) < 2 {
			continue
		}
		var n int
		fmt.Sscan(f[1], &n)
		users[f[0]] += n
	}
	return users
}

// Live sessions of amy (IMAP in IDLE and POP3) are ended within
// kickBound by each method, and doveadm who no longer lists her; bob's
// session, open all along, is untouched. Names doveadm would read as a
// wildcard or address mask are refused and kick nobody.
func TestKickDovecot(t *testing.T) {
	requireRoot(t)
	doveadm := requireBinaries(t, "dovecot", "doveadm")[1]
	t.Parallel()
	const key = "e2e-doveadm-key"
	users := map[string]string{"amy@e2e.test": "amy-secret", "bob@e2e.test": "bob-secret"}
	port := freePort(t)
	dv := startDovecot(t, DovecotOpts{Users: users, DoveadmHTTPPort: port, DoveadmAPIKey: key})
	apiURL := fmt.Sprintf("http://127.0.0.1:%d/doveadm/v1", port)
	waitFor(t, "the doveadm HTTP listener", func() error { return dialOK(fmt.Sprintf("127.0.0.1:%d", port)) }, dv.Logs)

	kickers := []struct {
		name string
		cfg  config.Kick
	}{
		{"http", config.Kick{Method: "http", URL: apiURL, APIKey: key, Timeout: config.Duration(5 * time.Second)}},
		{"command", config.Kick{Method: "command", Command: []string{doveadm, "-c", dv.ConfigPath, "kick"}, Timeout: config.Duration(5 * time.Second)}},
	}
	bob := kickIMAPIdle(t, dv, "bob@e2e.test", users["bob@e2e.test"])
	for _, kc := range kickers {
		t.Run(kc.name, func(t *testing.T) {
			k, err := kick.New(kc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			imap := kickIMAPIdle(t, dv, "amy@e2e.test", users["amy@e2e.test"])
			pop := kickPOP3(t, dv, "amy@e2e.test", users["amy@e2e.test"])
			waitFor(t, "doveadm who to list amy's 2 sessions and bob's", func() error {
				if w := kickWho(t, doveadm, dv); w["amy@e2e.test"] != 2 || w["bob@e2e.test"] != 1 {
					return fmt.Errorf("who: %v", w)
				}
				return nil
			}, dv.Logs)

			start := time.Now()
			res, err := k.Kick(context.Background(), "amy@e2e.test")
			if err != nil {
				t.Fatalf("kick: %v\n%s", err, dv.Logs())
			}
			took := time.Since(start)
			said, errIMAP := imap.closedBy(start.Add(kickBound))
			_, errPOP := pop.closedBy(start.Add(kickBound))
			closed := time.Since(start)
			if errIMAP != nil || errPOP != nil {
				t.Fatalf("not disconnected within %s of the kick: %v; %v\n%s", kickBound, errIMAP, errPOP, dv.Logs())
			}
			if !strings.Contains(said, "* BYE") {
				t.Errorf("IMAP session ended without BYE: %q", said)
			}
			t.Logf("%s: kick answered in %s, sessions closed after %s; %+v", kc.name, took.Round(time.Millisecond), closed.Round(time.Millisecond), res)
			if res.Method != kc.name || res.Kicked != 2 {
				t.Errorf("result %+v, want 2 sessions kicked by %s", res, kc.name)
			}
			waitFor(t, "doveadm who to no longer list amy", func() error {
				if w := kickWho(t, doveadm, dv); w["amy@e2e.test"] != 0 {
					return fmt.Errorf("who: %v", w)
				}
				return nil
			}, dv.Logs)
			if err := bob.alive(); err != nil {
				t.Fatalf("bob was kicked too: %v", err)
			}

			// Nobody left to kick: not an error.
			res, err = k.Kick(context.Background(), "amy@e2e.test")
			if err != nil || res.Kicked != 0 {
				t.Fatalf("second kick: %+v, %v", res, err)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		imap := kickIMAPIdle(t, dv, "amy@e2e.test", users["amy@e2e.test"])
		waitFor(t, "doveadm who to list amy", func() error {
			if w := kickWho(t, doveadm, dv); w["amy@e2e.test"] != 1 {
				return fmt.Errorf("who: %v", w)
			}
			return nil
		}, dv.Logs)
		for _, kc := range kickers {
			k, _ := kick.New(kc.cfg)
			// Each of these, given to doveadm as a mask, would match amy
			// and bob ("*", "*@e2e.test", "?my@e2e.test", "0/0", the
			// clients' address).
			for _, a := range []string{"*", "*@e2e.test", "?my@e2e.test", "a*", "0/0", "127.0.0.1", "127.0.0.0/8", "", "amy@e2e.test\n*"} {
				if res, err := k.Kick(context.Background(), a); err == nil {
					t.Errorf("%s: Kick(%q) = %+v, want a refusal", kc.name, a, res)
				}
			}
			// A name beginning with "-" is an account, not an option:
			// doveadm finds no such user.
			res, err := k.Kick(context.Background(), "-amy@e2e.test")
			if err != nil || res.Kicked != 0 {
				t.Errorf("%s: Kick(\"-amy@e2e.test\") = %+v, %v; want nothing kicked, no error", kc.name, res, err)
			}
		}
		if err := imap.alive(); err != nil {
			t.Fatalf("amy: %v", err)
		}
		if err := bob.alive(); err != nil {
			t.Fatalf("bob: %v", err)
		}
		if w := kickWho(t, doveadm, dv); w["amy@e2e.test"] != 1 || w["bob@e2e.test"] != 1 {
			t.Fatalf("who after the refusals: %v", w)
		}

		// A wrong API key is refused by Dovecot, with a clear error.
		k, _ := kick.New(config.Kick{Method: "http", URL: apiURL, APIKey: "wrong-key", Timeout: config.Duration(5 * time.Second)})
		if _, err := k.Kick(context.Background(), "amy@e2e.test"); err == nil || !strings.Contains(err.Error(), "refused the key") {
			t.Fatalf("wrong key: %v", err)
		}
		if err := imap.alive(); err != nil {
			t.Fatalf("amy after a kick with a wrong key: %v", err)
		}
	})
}

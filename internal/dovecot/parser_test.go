package dovecot

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// run frames and parses lines through one parser and returns, per line, its
// result and events.
func run(t testing.TB, lines ...string) ([]maillog.Result, [][]event.Event) {
	t.Helper()
	fr := sampleFramer(t)
	p := New()
	res := make([]maillog.Result, len(lines))
	evs := make([][]event.Event, len(lines))
	var l maillog.Line
	for i, s := range lines {
		if !fr.Frame(s, &l) || !Owns(&l) {
			res[i] = maillog.Unknown
			continue
		}
		evs[i], res[i] = p.Parse(&l, nil)
		for _, e := range evs[i] {
			checkEvent(t, e, s)
		}
	}
	return res, evs
}

// failures sums the attempts of the AuthFail events of one line.
func failures(evs []event.Event) int {
	n := 0
	for _, e := range evs {
		if e.Kind == event.AuthFail {
			n += e.N()
		}
	}
	return n
}

func TestDedupe(t *testing.T) {
	const (
		mismatch = "Nov  4 09:%s mx1 dovecot: auth: passwd-file(%s,198.51.100.14%s): Password mismatch"
		aborted  = "Nov  4 09:%s mx1 dovecot: imap-login: Disconnected (auth failed, %d attempts in 9 secs): user=<%s>, method=PLAIN, rip=198.51.100.14, lip=192.0.2.10, TLS%s"
		login    = "Nov  4 09:%s mx1 dovecot: imap-login: Login: user=<%s>, method=PLAIN, rip=198.51.100.14, lip=192.0.2.10, mpid=1204, TLS%s"
	)
	sess := func(s string) string { return ",<" + s + ">" }
	fsess := func(s string) string { return ", session=<" + s + ">" }
	cases := []struct {
		name  string
		lines []string
		want  []int // AuthFail attempts per line
	}{
		{
			name: "login line adds the attempts not logged by auth",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", sess("S1aaaaaaaaaaaaaa")),
				fmt.Sprintf(aborted, "12:09", 3, "kim", fsess("S1aaaaaaaaaaaaaa")),
			},
			want: []int{1, 2},
		},
		{
			name: "every attempt already counted",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", sess("S2aaaaaaaaaaaaaa")),
				fmt.Sprintf(mismatch, "12:04", "kim", sess("S2aaaaaaaaaaaaaa")),
				fmt.Sprintf(mismatch, "12:06", "kim", sess("S2aaaaaaaaaaaaaa")),
				fmt.Sprintf(aborted, "12:09", 3, "kim", fsess("S2aaaaaaaaaaaaaa")),
			},
			want: []int{1, 1, 1, 0},
		},
		{
			name: "user name rewritten by the auth process: the session joins",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", sess("S3aaaaaaaaaaaaaa")),
				fmt.Sprintf(aborted, "12:09", 1, "Kim@Example.com", fsess("S3aaaaaaaaaaaaaa")),
			},
			want: []int{1, 0},
		},
		{
			name: "no sessions: IP and account join",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", ""),
				fmt.Sprintf(aborted, "12:09", 2, "kim", ""),
			},
			want: []int{1, 1},
		},
		{
			name: "no sessions, another account from the same IP",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", ""),
				fmt.Sprintf(aborted, "12:09", 2, "lee", ""),
			},
			want: []int{1, 2},
		},
		{
			name: "parallel connections of one IP and account",
			lines: []string{
				fmt.Sprintf(mismatch, "12:01", "kim", ""),
				fmt.Sprintf(mismatch, "12:02", "kim", ""),
				fmt.Sprintf(mismatch, "12:03", "kim", ""),
				fmt.Sprintf(mismatch, "12:04", "kim", ""),
				fmt.Sprintf(aborted, "12:09", 2, "kim", ""),
				fmt.Sprintf(aborted, "12:10", 2, "kim", ""),
				fmt.Sprintf(aborted, "12:11", 1, "kim", ""),
			},
			want: []int{1, 1, 1, 1, 0, 0, 1},
		},
		{
			name: "auth line older than five minutes",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", sess("S4aaaaaaaaaaaaaa")),
				fmt.Sprintf(aborted, "17:03", 1, "kim", fsess("S4aaaaaaaaaaaaaa")),
			},
			want: []int{1, 1},
		},
		{
			name: "a typo then a login: nothing pending for the next connection",
			lines: []string{
				fmt.Sprintf(mismatch, "12:02", "kim", sess("S5aaaaaaaaaaaaaa")),
				fmt.Sprintf(login, "12:05", "kim", fsess("S5aaaaaaaaaaaaaa")),
				fmt.Sprintf(aborted, "13:09", 1, "kim", fsess("S6aaaaaaaaaaaaaa")),
			},
			want: []int{1, 0, 1},
		},
		{
			name: "PAM module line, Dovecot's PAM line, login line: one attempt",
			lines: []string{
				"Nov  4 09:26:10 mx1 dovecot: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=kim rhost=198.51.100.14  user=kim",
				"Nov  4 09:26:10 mx1 dovecot: auth-worker(1502): pam(kim,198.51.100.14,<S7aaaaaaaaaaaaaa>): pam_authenticate() failed: Authentication failure (password mismatch?)",
				fmt.Sprintf(aborted, "26:12", 2, "kim", fsess("S7aaaaaaaaaaaaaa")),
			},
			want: []int{1, 0, 1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, evs := run(t, c.lines...)
			for i := range c.lines {
				if res[i] != maillog.Parsed {
					t.Errorf("line %d: result %d, want Parsed: %s", i, res[i], c.lines[i])
				}
				if got := failures(evs[i]); got != c.want[i] {
					t.Errorf("line %d: %d failed attempts, want %d: %+v", i, got, c.want[i], evs[i])
				}
			}
		})
	}
}

func TestRecentBounded(t *testing.T) {
	r := newRecent(100)
	t0 := time.Date(2024, 11, 4, 9, 0, 0, 0, time.UTC)
	ip := netip.MustParseAddr("192.0.2.1")
	for i := range 10000 {
		r.add(fmt.Sprintf("sess%d", i), ip, "joe", t0.Add(time.Duration(i)*time.Millisecond))
	}
	if len(r.m) > 100 {
		t.Errorf("table holds %d entries, max 100", len(r.m))
	}
	if q := len(r.q) - r.head; q > 2*100+1024 {
		t.Errorf("queue holds %d entries", q)
	}
	// The newest session is still there, the oldest gone.
	if _, ok := r.get(recentKey{kind: keySession, s: "sess9999"}, t0.Unix(), recentWindow); !ok {
		t.Error("newest session evicted")
	}
	if _, ok := r.m[recentKey{kind: keySession, s: "sess0"}]; ok {
		t.Error("oldest session kept")
	}
	// One key hammered: the queue is compacted.
	for i := range 100000 {
		r.add("", ip, "joe", t0.Add(time.Duration(i)*time.Millisecond))
	}
	if q := len(r.q) - r.head; q > 2*100+1024 {
		t.Errorf("queue holds %d entries after repeated updates", q)
	}
}

func TestOwns(t *testing.T) {
	fr := f2bfixture.Framer()
	cases := []struct {
		line string
		want bool
	}{
		{"Nov  4 09:11:20 mx1 dovecot[812]: imap-login: Login: user=<joe>", true},
		{"Nov  4 09:11:20 mx1 dovecot-auth: pam_unix(dovecot:auth): x", true},
		{"Nov  4 09:11:20 imap-login: Info: Login: user=<joe>", true},
		{"2013-08-11 03:56:40 auth-worker(default): Info: pam(username,1.2.3.4): x", true},
		{"2025-03-02 10:17:12 imap(anna@example.org)<41230><Hq8cW3X0tuLLAHEt>: Info: Logged out", true},
		{"2025-03-02 10:21:00 auth-worker(carol,203.0.113.9,sasl:plain)<3310><Kk1Ll2Mm3Nn4Oo5P>: request [4]: Info: x", true},
		{"Apr 19 05:22:20 vm5 auth: pam_unix(dovecot:auth): authentication failure;", true},
		{"Apr 19 05:22:20 vm1 imap-login: Info: Login: user=<joe>", true},
		{"Nov  4 09:11:20 mx1 postfix/smtpd[1]: connect from x[1.2.3.4]", false},
		{"Nov  4 09:11:20 mx1 imap[123]: login: cyrus line", false},
		{"2013-06-10 18:33:32 [10099] H=(yakult.com.tw) [202.132.70.178]", false},
		{"2013-01-04 17:03:46 login authenticator failed for x", false},
		{"2013-01-04 17:03:46 1tXyZa-000AbC-1x <= a@b H=x", false},
		{"Nov  4 09:11:20 mx1 sshd[1]: Info: x", false},
	}
	for _, c := range cases {
		var l maillog.Line
		if !fr.Frame(c.line, &l) {
			t.Errorf("not framed: %s", c.line)
			continue
		}
		if got := Owns(&l); got != c.want {
			t.Errorf("Owns(%q) = %v, want %v (host %q prog %q)", c.line, got, c.want, l.Host, l.Program)
		}
	}
}

func TestBadInput(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	bad := []string{
		"Nov  4 09:11:20 mx1 dovecot: imap-login: Login: user=<joe@example.com>, method=PL",
		"Nov  4 09:12:09 mx1 dovecot: imap-login: Disconnected (auth failed, 2 attempts in 9 secs): user=<kim@example.com>, method=PLAIN, rip=198.51.1",
		"Nov  4 09:12:02 mx1 dovecot: auth: passwd-file(kim@exa",
		"Nov  4 09:12:02 mx1 dovecot: imap-lo",
		"Nov  4 09:12:02 mx1 dovecot: ",
		"Nov  4 09:12:02 mx1 dovecot: imap-login: Info: ",
		"Nov  4 09:12:02 mx1 dovecot: imap-login: Disconnected: a: a: a: test no match",
		"Nov  4 09:12:02 mx1 dovecot: " + big,
		"Nov  4 09:12:02 mx1 dovecot: imap-login: " + big,
		"Nov  4 09:12:02 mx1 dovecot: auth: " + big,
		"Nov  4 09:12:02 mx1 dovecot: imap-login: Disconnected (auth failed, 1 attempts): user=<" + big,
		"Nov  4 09:12:02 mx1 dovecot: imap-login: Login: user=<j\xffoe>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.10",
		"Nov  4 09:12:02 mx1 dovecot: auth: passwd-file(joe,192.0.2.1): Password \x00mismatch",
		"Nov  4 09:12:02 mx1 dovecot: \x00\x01\x02\xfe\xff binary \x80\x81 garbage",
		"\x00\x01\x02\xfe\xff binary garbage \x80\x81\x82\x83\x84\x85\x86",
		"Nov  4 09:12:02\r\n",
		"garbage",
		"",
	}
	fr := sampleFramer(t)
	p := New()
	for _, s := range bad {
		var l maillog.Line
		if !fr.Frame(s, &l) || !Owns(&l) {
			continue
		}
		evs, res := p.Parse(&l, nil)
		if res != maillog.Unknown || len(evs) != 0 {
			t.Errorf("Parse(%.120q) = %d with %d events, want Unknown", s, res, len(evs))
		}
	}
	// CRLF endings are stripped by the framer: the line still parses.
	_, evs := run(t, "Nov  4 09:11:20 mx1 dovecot: imap-login: Login: user=<joe@example.com>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10, mpid=1204, TLS, session=<3mXhPq8XvOnLAHEF>\r\n")
	if len(evs[0]) != 1 || evs[0][0].Kind != event.AuthOK || evs[0][0].Session != "3mXhPq8XvOnLAHEF" {
		t.Errorf("CRLF line: %+v", evs[0])
	}
}

// A user name may carry text that looks like fields; the real rip is the
// last field.
func TestInjectedUser(t *testing.T) {
	_, evs := run(t,
		"Nov  4 09:12:09 mx1 dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<x>, method=PLAIN, rip=192.0.2.99, lip=1.1.1.1, session=<a>, method=PLAIN, rip=198.51.100.14, lip=192.0.2.10, TLS, session=<Real0aaaaaaaaaaa>",
		"Nov  4 09:13:00 mx1 dovecot: dovecot-auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=rhost=192.0.2.99 rhost=198.51.100.15  user=rhost=192.0.2.99",
	)
	for i, want := range []string{"198.51.100.14", "198.51.100.15"} {
		if len(evs[i]) != 1 || evs[i][0].IP.String() != want {
			t.Errorf("line %d: %+v, want IP %s", i, evs[i], want)
		}
	}
	if e := evs[0][0]; e.Session != "Real0aaaaaaaaaaa" || e.Account != "x>,method=plain,rip=192.0.2.99,lip=1.1.1.1,session=<a" {
		t.Errorf("session %q account %q", e.Session, e.Account)
	}
}

func TestAttempts(t *testing.T) {
	for h, want := range map[string]int{
		"auth failed, 3 attempts in 12 secs":                   3,
		"auth failed, 1 attempts":                              1,
		"authorization failed, 1/3 successful auths in 5 secs": 2,
		"proxy dest auth failed":                               1,
		"auth failed, 99999999999 attempts in 1 secs":          1,
	} {
		if got := attempts(h); got != want {
			t.Errorf("attempts(%q) = %d, want %d", h, got, want)
		}
	}
}

func TestIgnored(t *testing.T) {
	lines := []string{
		"Nov  4 09:11:01 mx1 dovecot: master: Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3 (core dumps disabled)",
		"Nov  4 09:11:01 mx1 dovecot: master: Warning: Killed with signal 15 (by pid=1 uid=0 code=kill)",
		"Nov  4 09:11:51 mx1 dovecot: imap(joe@example.com)<1204><3mXhPq8XvOnLAHEF>: Logged out in=285 out=1873",
		"Nov  4 09:11:51 mx1 dovecot: imap(joe@example.com)<1204><3mXhPq8XvOnLAHEF>: Disconnected: Logged out in=285 out=1873",
		"Nov  4 09:11:51 mx1 dovecot: pop3(joe@example.com)<1290><Qw1Er2Ty3Ui4Op5A>: Disconnected: Logged out top=0/0, retr=1/2210, del=1/1, size=2193",
		"Nov  4 09:11:51 mx1 dovecot: lmtp(joe@example.com)<2231><aBcDeFgHiJkLmNoP>: msgid=<a@b>: saved mail to INBOX",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=203.0.113.9, lip=192.0.2.10, TLS, session=<Po9Iu8Yt7Re6Wq5E>",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: Disconnected: Inactivity (no auth attempts in 180 secs): user=<>, rip=203.0.113.9, lip=192.0.2.10, TLS, session=<Po9Iu8Yt7Re6Wq5F>",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: Disconnected (auth process communication failure): user=<joe>, method=PLAIN, rip=203.0.113.9, lip=192.0.2.10, session=<Po9Iu8Yt7Re6Wq5G>",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: Error: Failed to initialize SSL server context",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: Warning: Auth process not responding, delayed sending initial response (greeting): user=<>, rip=203.0.113.9, lip=192.0.2.10",
		"Nov  4 09:11:51 mx1 dovecot: imap-login: proxy(joe@example.com): Login failed to 10.0.0.21:143: Authentication failed: user=<joe@example.com>, method=PLAIN, rip=203.0.113.5, lip=192.0.2.10",
		"Nov  4 09:11:51 mx1 dovecot: auth: Error: LDAP: binding failed (dn cn=dovecot,dc=example,dc=org): Invalid credentials",
		"Nov  4 09:11:51 mx1 dovecot: auth: Debug: passwd-file(joe,203.0.113.9,<Po9Iu8Yt7Re6Wq5E>): unknown user",
		"Nov  4 09:11:51 mx1 dovecot: auth: Warning: auth client 0 disconnected with 1 pending requests: EOF",
		"Nov  4 09:11:51 mx1 dovecot: auth: passwd-file(joe,203.0.113.9,<Po9Iu8Yt7Re6Wq5E>): lookup: user=joe file=/etc/dovecot/users",
		"Nov  4 09:11:51 mx1 dovecot: auth-worker(1502): pam(carl,192.0.2.9): pam_authenticate() failed: Authentication service cannot retrieve authentication info",
		"Nov  4 09:11:51 mx1 dovecot: auth: passwd-file(nobody@example.com): unknown user",
		"Nov  4 09:11:51 mx1 dovecot: pam_unix(dovecot:auth): check pass; user unknown",
		"Nov  4 09:11:51 mx1 dovecot: config: Warning: please set ssl_server_cert_file",
		"2025-03-02 10:24:00 auth: Warning: Event 0x55d2c0a1b2c0 leaked (parent=(nil)): auth-client-connection.c:338",
		"2025-03-02 10:17:12 imap(anna@example.org)<41230><Hq8cW3X0tuLLAHEt>: Info: Logged out in=312 out=10842",
		"2025-03-02 10:17:12 imap(anna@example.org)<41230><Hq8cW3X0tuLLAHEt>: Error: Mailbox INBOX: UID 12 lost",
		"2025-03-02 10:17:12 stats: Error: Failed to send event",
	}
	res, evs := run(t, lines...)
	for i, s := range lines {
		if res[i] != maillog.Ignored || len(evs[i]) != 0 {
			t.Errorf("result %d, %d events, want Ignored: %s", res[i], len(evs[i]), s)
		}
	}
}

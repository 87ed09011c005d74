package maillog

import (
	"testing"
	"time"
)

func TestFrame(t *testing.T) {
	zurich, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	f := &Framer{Loc: zurich, Ref: time.Date(2005, 8, 14, 12, 0, 0, 0, zurich)}
	cases := []struct {
		in                   string
		time                 string
		host, prog, pid, msg string
	}{
		{"Feb 21 09:21:54 xxx postfix/smtpd[14398]: NOQUEUE: reject", "2005-02-21T09:21:54+01:00", "xxx", "postfix/smtpd", "14398", "NOQUEUE: reject"},
		{"Dec 25 02:35:54 platypus postfix/smtpd[9144]: improper", "2004-12-25T02:35:54+01:00", "platypus", "postfix/smtpd", "9144", "improper"},
		{"Sep  6 00:44:56 trianon postfix/submission/smtpd[11538]: x y", "2004-09-06T00:44:56+02:00", "trianon", "postfix/submission/smtpd", "11538", "x y"},
		{"2013-01-04 17:03:46 login authenticator failed for x", "2013-01-04T17:03:46+01:00", "", "", "", "login authenticator failed for x"},
		{"2013-06-10 18:33:32 [10099] H=(yakult.com.tw) [202.132.70.178]", "2013-06-10T18:33:32+02:00", "", "", "10099", "H=(yakult.com.tw) [202.132.70.178]"},
		{"2019-10-22 03:39:17 mx1.fqdn.local exim[29786]: dovecot_login authenticator", "2019-10-22T03:39:17+02:00", "mx1.fqdn.local", "exim", "29786", "dovecot_login authenticator"},
		{"mail.example.com exim[3751842]: 2021-07-17 23:20:49 plain_server authenticator", "2021-07-17T23:20:49+02:00", "mail.example.com", "exim", "3751842", "plain_server authenticator"},
		{"2013-08-11 03:56:40 auth-worker(default): Info: pam(username,1.2.3.4): x", "2013-08-11T03:56:40+02:00", "", "auth-worker(default)", "", "Info: pam(username,1.2.3.4): x"},
		{"Mar 7 02:09:33 srv postfix/smtpd[1]: x y", "2005-03-07T02:09:33+01:00", "srv", "postfix/smtpd", "1", "x y"},
		{"Jan 14 15:54:30 pop3-login: Info: Aborted login", "2005-01-14T15:54:30+01:00", "", "pop3-login", "", "Info: Aborted login"},
		{"2024-11-04T09:11:01.123456+01:00 mx dovecot[12]: imap-login: Login", "2024-11-04T09:11:01.123456+01:00", "mx", "dovecot", "12", "imap-login: Login"},
		{"2024-11-04 09:11:01.250 +0100 [42] <= a@b H=x", "2024-11-04T09:11:01.25+01:00", "", "", "42", "<= a@b H=x"},
		{"@400000004c91b044077a9e94 imap-login: Info: Aborted login (auth failed", "2010-09-16T07:50:50.1254765+02:00", "", "imap-login", "", "Info: Aborted login (auth failed"},
	}
	for _, c := range cases {
		var l Line
		if !f.Frame(c.in+"\r\n", &l) {
			t.Errorf("Frame(%q) = false", c.in)
			continue
		}
		if got := l.Time.In(zurich).Format(time.RFC3339Nano); got != c.time {
			t.Errorf("Frame(%q) time = %s, want %s", c.in, got, c.time)
		}
		if l.Host != c.host || l.Program != c.prog || l.PID != c.pid || l.Msg != c.msg {
			t.Errorf("Frame(%q) = host %q prog %q pid %q msg %q", c.in, l.Host, l.Program, l.PID, l.Msg)
		}
	}
	for _, bad := range []string{"", "garbage", "2013-01-04 17:03", "Foo 21 09:21:54 xxx postfix/smtpd[1]: x", "\x00\x01\x02\xff\xfe binary garbage here ok", "2013-13-04 17:03:46 x y z"} {
		var l Line
		if f.Frame(bad, &l) {
			t.Errorf("Frame(%q) = true", bad)
		}
	}
}

func FuzzFrame(f *testing.F) {
	f.Add("Feb 21 09:21:54 xxx postfix/smtpd[14398]: NOQUEUE: reject")
	f.Add("2013-06-10 18:33:32 [10099] H=(yakult.com.tw) [202.132.70.178]")
	f.Add("@400000004c91b044077a9e94 imap-login: Info: Aborted login")
	f.Add("mail.example.com exim[3751842]: 2021-07-17 23:20:49 plain_server")
	fr := &Framer{}
	f.Fuzz(func(t *testing.T, s string) {
		var l Line
		fr.Frame(s, &l)
	})
}

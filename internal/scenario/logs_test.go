package scenario

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// logs collects lines of three log files, each kept in time order.
type logs struct {
	postfix, dovecot, exim []line
	pid, qid, sess         int
}

type line struct {
	t time.Time
	s string
}

func syslogTime(t time.Time) string { return t.Format("Jan _2 15:04:05") }

func (l *logs) pf(t time.Time, prog, msg string) {
	l.pid++
	l.postfix = append(l.postfix, line{t, fmt.Sprintf("%s mx1 postfix/%s: %s", syslogTime(t), prog, msg)})
}

func (l *logs) dc(t time.Time, msg string) {
	l.dovecot = append(l.dovecot, line{t, fmt.Sprintf("%s imap1 dovecot: %s", syslogTime(t), msg)})
}

func (l *logs) ex(t time.Time, pid int, msg string) {
	l.exim = append(l.exim, line{t, fmt.Sprintf("%s [%d] %s", t.Format("2006-01-02 15:04:05"), pid, msg)})
}

func (l *logs) nextQID() string {
	l.qid++
	return fmt.Sprintf("4Q%09X", l.qid)
}

// pfSubmit is one authenticated Postfix submission session sending n
// messages of rcpts recipients each.
func (l *logs) pfSubmit(t time.Time, account, ip string, n, rcpts int) {
	l.pid++
	pid := 20000 + l.pid%40000
	smtpd := fmt.Sprintf("submission/smtpd[%d]", pid)
	l.pf(t, smtpd, fmt.Sprintf("connect from unknown[%s]", ip))
	for i := 0; i < n; i++ {
		q := l.nextQID()
		t1 := t.Add(time.Duration(i*2+1) * time.Second)
		l.pf(t1, smtpd, fmt.Sprintf("%s: client=unknown[%s], sasl_method=PLAIN, sasl_username=%s", q, ip, account))
		l.pf(t1, "cleanup[3001]", fmt.Sprintf("%s: message-id=<%s@example.com>", q, strings.ToLower(q)))
		l.pf(t1, "qmgr[900]", fmt.Sprintf("%s: from=<%s>, size=%d, nrcpt=%d (queue active)", q, account, 2000+i*37, rcpts))
		l.pf(t1.Add(time.Second), "smtp[4001]", fmt.Sprintf("%s: to=<r%d@example.net>, relay=mx.example.net[198.18.0.25]:25, delay=0.4, delays=0.1/0/0.1/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)", q, i))
		l.pf(t1.Add(time.Second), "qmgr[900]", fmt.Sprintf("%s: removed", q))
	}
	l.pf(t.Add(time.Duration(n*2+2)*time.Second), smtpd, fmt.Sprintf("disconnect from unknown[%s] ehlo=1 auth=1 mail=%d rcpt=%d data=%d quit=1 commands=%d", ip, n, n*rcpts, n, 3+n*3))
}

// pfAuthFail is a failed SMTP AUTH logged by Postfix (3.7.8+ form).
func (l *logs) pfAuthFail(t time.Time, account, ip string) {
	l.pid++
	l.pf(t, fmt.Sprintf("submission/smtpd[%d]", 30000+l.pid%1000), fmt.Sprintf("warning: unknown[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=%s", ip, account))
}

func (l *logs) dcLogin(t time.Time, proto, account, ip string) {
	l.sess++
	l.dc(t, fmt.Sprintf("%s-login: Login: user=<%s>, method=PLAIN, rip=%s, lip=192.0.2.10, mpid=%d, TLS, session=<s%07d>", proto, account, ip, 4000+l.sess, l.sess))
}

func (l *logs) dcFail(t time.Time, proto, account, ip string, attempts int) {
	l.sess++
	l.dc(t, fmt.Sprintf("%s-login: Disconnected (auth failed, %d attempts in %d secs): user=<%s>, method=PLAIN, rip=%s, lip=192.0.2.10, TLS, session=<f%07d>", proto, attempts, attempts*2+1, account, ip, l.sess))
}

// exSubmit is one authenticated Exim session sending n messages.
func (l *logs) exSubmit(t time.Time, account, ip string, n, rcpts int) {
	l.pid++
	pid := 10000 + l.pid
	port := 40000 + l.pid%20000
	l.ex(t, pid, fmt.Sprintf("SMTP connection from (client) [%s]:%d I=[192.0.2.1]:587 (TCP/IP connection count = 1)", ip, port))
	for i := 0; i < n; i++ {
		l.qid++
		id := fmt.Sprintf("1vX%03d-%06X-Ab", l.qid%1000, l.qid)
		var to []string
		for r := 0; r < rcpts; r++ {
			to = append(to, fmt.Sprintf("r%d@example.net", r))
		}
		t1 := t.Add(time.Duration(i) * time.Second)
		l.ex(t1, pid, fmt.Sprintf("%s <= %s H=(client) [%s]:%d I=[192.0.2.1]:587 P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=dovecot_plain:%s S=%d id=%s@client for %s", id, account, ip, port, account, 3000+i, id, strings.Join(to, " ")))
		l.ex(t1, pid+1, fmt.Sprintf("%s => %s R=dnslookup T=remote_smtp H=mx.example.net [198.18.0.25]", id, to[0]))
		l.ex(t1, pid+1, fmt.Sprintf("%s Completed", id))
	}
	l.ex(t.Add(time.Duration(n)*time.Second), pid, fmt.Sprintf("SMTP connection from (client) [%s]:%d I=[192.0.2.1]:587 closed by QUIT", ip, port))
}

func (l *logs) exAuthFail(t time.Time, account, ip string) {
	l.pid++
	l.ex(t, 10000+l.pid, fmt.Sprintf("dovecot_login authenticator failed for (User) [%s]:%d I=[192.0.2.1]:587: 535 Incorrect authentication data (set_id=%s)", ip, 50000+l.pid%10000, account))
}

func (l *logs) exBadRcpt(t time.Time, account, ip, rcpt string) {
	l.pid++
	l.ex(t, 10000+l.pid, fmt.Sprintf("H=(client) [%s]:%d I=[192.0.2.1]:587 F=<%s> A=dovecot_plain:%s rejected RCPT <%s>: Unknown user", ip, 50000+l.pid%10000, account, account, rcpt))
}

func render(ls []line) string {
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].t.Before(ls[j].t) })
	var b strings.Builder
	for _, x := range ls {
		b.WriteString(x.s)
		b.WriteByte('\n')
	}
	return b.String()
}

package notify

import (
	"bytes"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

func mailConfig(s *smtpSink) config.Notify {
	c := testConfig()
	c.SMTP = s.Addr
	return c
}

// parsed is a received message, parsed the way a mail client would.
type parsed struct {
	msg     *mail.Message
	subject string // decoded
	body    string // transfer encoding undone
	to      []string
}

func parseMail(t *testing.T, data []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("message does not parse: %v\n%s", err, data)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("Subject %q: %v", m.Header.Get("Subject"), err)
	}
	var r io.Reader = m.Body
	if m.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
		r = quotedprintable.NewReader(r)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	p := parsed{msg: m, subject: subj, body: strings.ReplaceAll(string(body), "\r\n", "\n")}
	list, err := m.Header.AddressList("To")
	if err != nil {
		t.Fatalf("To %q: %v", m.Header.Get("To"), err)
	}
	for _, a := range list {
		p.to = append(p.to, a.Address)
	}
	return p
}

// headerNames are the headers every notification mail has, and no other.
var headerNames = []string{"Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From",
	"Message-Id", "Mime-Version", "Subject", "To", "X-Auto-Response-Suppress", "X-Mailwarden-Incident"}

func checkHeaders(t *testing.T, p parsed, to []string) {
	t.Helper()
	var names []string
	for k, v := range p.msg.Header {
		names = append(names, k)
		if len(v) != 1 {
			t.Errorf("header %s appears %d times", k, len(v))
		}
	}
	sort.Strings(names)
	if !slices.Equal(names, headerNames) {
		t.Errorf("headers %v, want exactly %v", names, headerNames)
	}
	if !slices.Equal(p.to, to) {
		t.Errorf("To %v, want %v", p.to, to)
	}
	if p.msg.Header.Get("Auto-Submitted") != "auto-generated" || p.msg.Header.Get("Mime-Version") != "1.0" ||
		p.msg.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("headers: %v", p.msg.Header)
	}
	if _, err := p.msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if !regexp.MustCompile(`^<mailwarden\.\d+\.[0-9a-f]{16}@example\.org>$`).MatchString(p.msg.Header.Get("Message-Id")) {
		t.Errorf("Message-ID %q", p.msg.Header.Get("Message-Id"))
	}
	if from, err := mail.ParseAddress(p.msg.Header.Get("From")); err != nil || from.Address != "mailwarden@example.org" {
		t.Errorf("From %q: %v", p.msg.Header.Get("From"), err)
	}
}

func TestMailIncidentReport(t *testing.T) {
	sink := newSMTPSink(t, false)
	n := newNotifier(t, mailConfig(sink)).run()
	n.Notify(botnetNotice(12, "joe@example.org"))
	msgs := sink.wait(1)
	m := msgs[0]
	if m.From != "mailwarden@example.org" || !slices.Equal(m.Rcpts, []string{"postmaster@example.org", "security@example.org"}) {
		t.Errorf("envelope: from %q to %v", m.From, m.Rcpts)
	}
	p := parseMail(t, m.Data)
	checkHeaders(t, p, []string{"postmaster@example.org", "security@example.org"})
	if p.subject != "[mailwarden] lock: joe@example.org (botnet) on mx1" {
		t.Errorf("Subject %q", p.subject)
	}
	if p.msg.Header.Get("Content-Transfer-Encoding") != "7bit" || p.msg.Header.Get("X-Mailwarden-Incident") != "12" {
		t.Errorf("headers: %v", p.msg.Header)
	}
	for _, re := range []string{
		`(?m)^used from 3 new networks in 24h0m0s`,
		`(?m)^Incident  12$`,
		`(?m)^Account   joe@example\.org$`,
		`(?m)^Detected  2024-03-01 11:59:03 UTC$`,
		`(?m)^  - account locked$`,
		`(?m)^  - 2 IMAP sessions kicked$`,
		`(?m)^  - 3 queued messages held$`,
		`(?m)^  networks       3$`,
		`(?m)^  countries      UA, BR, VN$`,
		`(?m)^  stopped_after  messages=3 recipients=7$`,
		`(?m)^  ips \(3 rows\)$`,
		`(?m)^    ip +network +messages +logins +first +known$`,
		`(?m)^    77\.121\.250\.77 +77\.121\.0\.0/16 +1 +1 +2024-03-01 08:59:03 UTC +false$`,
		`(?m)^    14\.161\.7\.200 +14\.161\.0\.0/16 +1 +1 +2024-03-01 10:59:03 UTC +true$`,
	} {
		if !regexp.MustCompile(re).MatchString(p.body) {
			t.Errorf("body lacks %s:\n%s", re, p.body)
		}
	}
	if strings.Contains(strings.ReplaceAll(p.body, "\n-- \n", "\n"), " \n") { // "-- " is the signature separator
		t.Errorf("body has trailing spaces:\n%q", p.body)
	}
}

// Whatever the account holds, the mail has exactly its headers and its
// recipients: CR/LF cannot add a Bcc, shell and quote characters are
// shown as text, and the account (not an address) gets no mail.
func TestMailHeaderInjection(t *testing.T) {
	accounts := []string{
		evilAccount,
		"joe@example.org\r\nBcc: victim@x",
		"joe@example.org\nBcc: victim@x",
		"joe@example.org\rBcc: victim@x",
		"$(rm -rf /)@example.org",
		"\"quoted\" 'single' `id` $HOME; rm -rf / | mail victim@x",
		"victim@x, joe@example.org",
		"jürgen@exämple.org\r\nX-Injected: 1\r\n",
		"a\x00b\x1b[31m\u2028c\u202ed",
		strings.Repeat("long", 300) + "\r\nBcc: victim@x",
	}
	sink := newSMTPSink(t, false)
	cfg := mailConfig(sink)
	cfg.NotifyAccount = true
	n := newNotifier(t, cfg).run()
	for i, a := range accounts {
		n.Notify(botnetNotice(int64(100+i), a))
	}
	msgs := sink.wait(len(accounts))
	waitStats(t, n, "every mail sent", func(s Stats) bool { return s.Channel(ChannelMail).Sent == uint64(len(accounts)) })
	if s := n.Stats().Channel(ChannelAccountMail); s.Sent+s.GivenUp != 0 {
		t.Errorf("account mail for accounts that are no plain address: %+v", s)
	}
	time.Sleep(50 * time.Millisecond)
	if got := len(sink.messages()); got != len(accounts) {
		t.Errorf("%d messages, want %d", got, len(accounts))
	}
	want := []string{"postmaster@example.org", "security@example.org"}
	for _, m := range msgs {
		if !slices.Equal(m.Rcpts, want) {
			t.Errorf("envelope recipients %v, want %v", m.Rcpts, want)
		}
		p := parseMail(t, m.Data)
		id := p.msg.Header.Get("X-Mailwarden-Incident")
		var acct string
		for i, a := range accounts {
			if id == strconv.Itoa(100+i) {
				acct = a
			}
		}
		checkHeaders(t, p, want) // exactly the intended headers: no Bcc, no X-Injected
		head := string(m.Data[:bytes.Index(m.Data, []byte("\r\n\r\n"))])
		for _, line := range strings.Split(head, "\r\n") {
			if len(line) > 998 || strings.ContainsAny(line, "\r\n\x00") {
				t.Errorf("incident %s: bad header line %q", id, line)
			}
			if l := strings.ToLower(line); strings.HasPrefix(l, "bcc") || strings.HasPrefix(l, "x-injected") {
				t.Errorf("incident %s: header line %q comes from the account", id, line)
			}
		}
		if !strings.Contains(p.subject, clip(display(acct), 120)) {
			t.Errorf("incident %s: subject %q lacks the escaped account %q", id, p.subject, clip(display(acct), 120))
		}
		for _, line := range strings.Split(p.body, "\n") {
			if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X-Injected:") || strings.HasPrefix(line, "body") {
				t.Errorf("incident %s: body line %q comes from the account", id, line)
			}
		}
		if !strings.Contains(p.body, "Account   "+clip(display(acct), 256)) {
			t.Errorf("incident %s: body lacks the escaped account line for %q:\n%s", id, acct, p.body)
		}
		if strings.ContainsAny(p.body, "\x00\x1b\r\u2028\u202e") {
			t.Errorf("incident %s: raw control characters in the body: %q", id, p.body)
		}
	}
}

func TestMailToAccount(t *testing.T) {
	sink := newSMTPSink(t, false)
	cfg := mailConfig(sink)
	cfg.NotifyAccount = true
	n := newNotifier(t, cfg).run()
	n.Notify(botnetNotice(1, "joe@example.org"))
	dry := botnetNotice(2, "ann@example.org")
	dry.DryRun = true
	n.Notify(dry) // nothing happened to ann: she is not told
	alert := botnetNotice(3, "joe@example.org")
	alert.Action = "alert"
	n.Notify(alert) // nor for an alert: nothing changed for joe
	waitStats(t, n, "4 mails", func(s Stats) bool {
		return s.Channel(ChannelMail).Sent == 3 && s.Channel(ChannelAccountMail).Sent == 1
	})
	var toJoe []sinkMsg
	for _, m := range sink.wait(4) {
		if slices.Contains(m.Rcpts, "joe@example.org") {
			toJoe = append(toJoe, m)
		}
		if slices.Contains(m.Rcpts, "ann@example.org") {
			t.Errorf("dry run: the account was mailed")
		}
	}
	if len(toJoe) != 1 || !slices.Equal(toJoe[0].Rcpts, []string{"joe@example.org"}) {
		t.Fatalf("mail to joe: %+v", toJoe)
	}
	p := parseMail(t, toJoe[0].Data)
	checkHeaders(t, p, []string{"joe@example.org"})
	if p.subject != "Your mail account has been locked" {
		t.Errorf("Subject %q", p.subject)
	}
	if !strings.Contains(p.body, "joe@example.org") || !strings.Contains(p.body, "has been locked") || !strings.Contains(p.body, "new password") {
		t.Errorf("body should say the account was locked and what to do:\n%s", p.body)
	}
	for _, internal := range []string{"77.121", "botnet", "mx1", "Evidence", "kicked", "postmaster"} {
		if strings.Contains(p.body, internal) {
			t.Errorf("the account's mail shows an internal detail %q:\n%s", internal, p.body)
		}
	}
	// Dry-run subjects say so.
	for _, m := range sink.messages() {
		if pm := parseMail(t, m.Data); pm.msg.Header.Get("X-Mailwarden-Incident") == "2" &&
			(pm.subject != "[mailwarden] lock (dry run): ann@example.org (botnet) on mx1" || !strings.Contains(pm.body, "DRY RUN")) {
			t.Errorf("dry run: subject %q, body:\n%s", pm.subject, pm.body)
		}
	}
}

func TestMailRetryAfterTemporaryFailure(t *testing.T) {
	sink := newSMTPSink(t, false)
	sink.dataReply = func(n int) string {
		if n == 1 {
			return "451 4.3.0 try again later"
		}
		return ""
	}
	n := newNotifier(t, mailConfig(sink)).run()
	n.Notify(botnetNotice(3, "joe@example.org"))
	s := waitStats(t, n, "the retried mail", func(s Stats) bool { return s.Channel(ChannelMail).Sent == 1 })
	if c := s.Channel(ChannelMail); c.Failed != 1 || c.GivenUp != 0 {
		t.Errorf("stats %+v, want 1 failed attempt", c)
	}
	if l := n.log.String(); !strings.Contains(l, "451") || !strings.Contains(l, "try again later") {
		t.Errorf("log should show the relay's answer:\n%s", n.log)
	}
}

func TestMailRecipientRefusals(t *testing.T) {
	t.Run("one for good", func(t *testing.T) {
		sink := newSMTPSink(t, false)
		sink.rcptReply = func(r string) string {
			if r == "security@example.org" {
				return "550 5.1.1 no such user"
			}
			return ""
		}
		n := newNotifier(t, mailConfig(sink)).run()
		n.Notify(botnetNotice(3, "joe@example.org"))
		waitStats(t, n, "the mail", func(s Stats) bool { return s.Channel(ChannelMail).Sent == 1 })
		if m := sink.wait(1); !slices.Equal(m[0].Rcpts, []string{"postmaster@example.org"}) {
			t.Errorf("recipients %v", m[0].Rcpts)
		}
		if l := n.log.String(); !strings.Contains(l, "refused for good") || !strings.Contains(l, "security@example.org") {
			t.Errorf("the refused recipient should be logged:\n%s", l)
		}
	})
	t.Run("one for now", func(t *testing.T) {
		sink := newSMTPSink(t, false)
		tries := 0
		sink.rcptReply = func(r string) string {
			if r == "security@example.org" {
				if tries++; tries == 1 {
					return "450 4.2.0 mailbox busy"
				}
			}
			return ""
		}
		n := newNotifier(t, mailConfig(sink)).run()
		n.Notify(botnetNotice(3, "joe@example.org"))
		s := waitStats(t, n, "the mail", func(s Stats) bool { return s.Channel(ChannelMail).Sent == 1 })
		if c := s.Channel(ChannelMail); c.Failed != 1 {
			t.Errorf("stats %+v", c)
		}
		m := sink.wait(2)
		if !slices.Equal(m[0].Rcpts, []string{"postmaster@example.org"}) || !slices.Equal(m[1].Rcpts, []string{"security@example.org"}) {
			t.Errorf("each recipient should get the mail once: %v then %v", m[0].Rcpts, m[1].Rcpts)
		}
		if !bytes.Equal(m[0].Data, m[1].Data) {
			t.Error("the retry should send the same message")
		}
	})
	t.Run("all for good", func(t *testing.T) {
		sink := newSMTPSink(t, false)
		sink.rcptReply = func(string) string { return "550 5.7.1 relaying denied" }
		n := newNotifier(t, mailConfig(sink)).run()
		n.Notify(botnetNotice(3, "joe@example.org"))
		s := waitStats(t, n, "the refusal", func(s Stats) bool { return s.Channel(ChannelMail).Rejected == 1 })
		if c := s.Channel(ChannelMail); c.Failed != 1 || c.Sent != 0 {
			t.Errorf("a refusal for good must not be retried: %+v", c)
		}
	})
}

func TestMailSTARTTLS(t *testing.T) {
	sink := newSMTPSink(t, true)
	n := newNotifier(t, mailConfig(sink)).run()
	n.Notify(botnetNotice(1, "joe@example.org"))
	if m := sink.wait(1); !m[0].TLS {
		t.Error("the relay offered STARTTLS, the mail went in clear")
	}
}

func TestTemplateFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, text, key, want string
	}{
		{"unknown-field.tmpl", "Incident {{.ID}}\n\n{{.Nope}}\n", "template", ":3:"},
		{"parse.tmpl", "Incident {{.ID}}\n{{end}}\n", "template", ":2:"},
		{"func.tmpl", "{{.ID}}\n{{nosuch .ID}}\n", "template", ":2:"},
		{"account.tmpl", "Hello\n{{.Account.Nope}}\n", "account_template", ":2:"},
	} {
		p := write(tc.name, tc.text)
		cfg := testConfig()
		if tc.key == "template" {
			cfg.Template = p
		} else {
			cfg.AccountTemplate = p
		}
		_, err := New(cfg, nil)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "responses.notify."+tc.key+": "+p+tc.want) {
			t.Errorf("%s: error %q should name the setting, the file and the line (%s)", tc.name, msg, tc.want)
		}
	}
	cfg := testConfig()
	cfg.Template = filepath.Join(dir, "missing.tmpl")
	if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), cfg.Template) {
		t.Errorf("missing file: %v", err)
	}

	// A working custom template is used, and sees escaped values only.
	sink := newSMTPSink(t, false)
	cfg = mailConfig(sink)
	cfg.Template = write("custom.tmpl", "Custom report {{.ID}} for {{.Account}}\n{{range .Tables}}{{.Key}}: {{len .Rows}} rows\n{{end}}{{.EvidenceText}}")
	n := newNotifier(t, cfg).run()
	n.Notify(botnetNotice(77, evilAccount))
	p := parseMail(t, sink.wait(1)[0].Data)
	if !strings.HasPrefix(p.body, "Custom report 77 for evil\\r\\nBcc: victim@x\\r\\n\\r\\nbody\nips: 3 rows\n") {
		t.Errorf("custom template body:\n%q", p.body)
	}
}

// FuzzMailHeaders: whatever a client puts in the account (and whatever
// the detector and node are), the message parses with exactly the
// intended headers and recipients.
func FuzzMailHeaders(f *testing.F) {
	for _, s := range []string{evilAccount, "joe@example.org", "jürgen\r\n\r\n", "=?utf-8?q?=0D=0ABcc:_x?=", "\x00\xff\xfe"} {
		f.Add(s, "botnet", "mx1")
	}
	f.Add("joe", "bot\r\nBcc: x", "mx\n1")
	m, err := newMailer(mailConfigFor("127.0.0.1:25"), time.Second, nil)
	if err != nil {
		f.Fatal(err)
	}
	want := []string{"postmaster@example.org", "security@example.org"}
	f.Fuzz(func(t *testing.T, account, detector, node string) {
		x := botnetNotice(1, account)
		x.Detector, x.Node = detector, node
		x.Evidence["note"] = account
		msg, err := m.incidentMessage(&x, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p := parseMail(t, msg)
		checkHeaders(t, p, want)
		for _, line := range strings.Split(string(msg), "\r\n") {
			if len(line) > 998 {
				t.Fatalf("line of %d bytes", len(line))
			}
		}
	})
}

func mailConfigFor(addr string) config.Notify {
	c := testConfig()
	c.SMTP = addr
	return c
}

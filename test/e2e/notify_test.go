package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/notify"
)

// notifyMailboxes are the maildirs (under notifyPostfix.MailDir) of the
// Postfix that receives notifications; any other address in e2e.test
// lands in catchall, so an injected recipient would show there.
var notifyMailboxes = map[string]string{
	"postmaster@e2e.test": "postmaster",
	"security@e2e.test":   "security",
	"joe@e2e.test":        "joe",
	"victim@e2e.test":     "victim",
	"@e2e.test":           "catchall",
}

// notifyPostfix is a private Postfix instance that accepts mail for
// e2e.test from the loopback without authentication and delivers it with
// its virtual(8) agent into the maildirs above (uid nobody). STARTTLS is
// offered when Debian's snakeoil certificate is there. Anything for other
// domains is discarded.
type notifyPostfix struct {
	*Postfix
	MailDir string
	TLS     bool
}

func notifyStartPostfix(t *testing.T) *notifyPostfix {
	t.Helper()
	requireRoot(t)
	bin := requireBinaries(t, "postfix")[0]
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Skip("no postfix user (apt-get install postfix)")
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody to own the maildirs")
	}
	dir := shortTempDir(t, "pfn")
	pf := &notifyPostfix{
		Postfix: &Postfix{t: t, bin: bin, Dir: dir, ConfDir: filepath.Join(dir, "etc"), Port: freePort(t), Maillog: filepath.Join(dir, "maillog")},
		MailDir: filepath.Join(dir, "mail"),
	}
	for _, d := range []string{"etc", "spool", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(filepath.Join(dir, "data"), uid, -1); err != nil {
		t.Fatal(err)
	}
	nuid, _ := strconv.Atoi(nobody.Uid)
	ngid, _ := strconv.Atoi(nobody.Gid)
	if err := os.Chown(pf.MailDir, nuid, ngid); err != nil {
		t.Fatal(err)
	}
	var boxes []string
	for addr, box := range notifyMailboxes {
		boxes = append(boxes, addr+"="+box+"/") // trailing slash: maildir
	}
	slices.Sort(boxes)
	const cert, key = "/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/ssl/private/ssl-cert-snakeoil.key"
	tlsConf := "smtpd_tls_security_level = none\n"
	if _, err := os.Stat(cert); err == nil {
		if _, err := os.Stat(key); err == nil {
			pf.TLS = true
			tlsConf = fmt.Sprintf("smtpd_tls_security_level = may\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtpd_tls_received_header = yes\n", cert, key)
		}
	}
	mainCf := fmt.Sprintf(`# Postfix of the mailwarden notification end-to-end test.
compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
maillog_file_prefixes = %[1]s
maillog_file = %[1]s/maillog
syslog_name = postfix-notify
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.e2e.test
mydomain = e2e.test
myorigin = e2e.test
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
%[2]ssmtp_tls_security_level = none
virtual_mailbox_domains = e2e.test
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = inline:{ %[3]s }
virtual_uid_maps = static:%[4]d
virtual_gid_maps = static:%[5]d
local_transport = discard:notify-e2e
default_transport = discard:notify-e2e
relay_transport = discard:notify-e2e
biff = no
`, dir, tlsConf, strings.Join(boxes, ", "), nuid, ngid)
	masterCf := fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
  -o syslog_name=postfix-notify/smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
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
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`, pf.Port)
	pf.start(t, mainCf, masterCf)
	return pf
}

// notifyMailbox returns the messages delivered to one maildir.
func notifyMailbox(t *testing.T, pf *notifyPostfix, box string) [][]byte {
	t.Helper()
	var msgs [][]byte
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(pf.MailDir, box, sub, "*"))
		slices.Sort(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, b)
		}
	}
	return msgs
}

// notifyParsed is a delivered message read as a mail client would.
type notifyParsed struct {
	hdr     mail.Header
	subject string
	body    string // transfer encoding undone, LF line ends
}

func notifyParse(t *testing.T, raw []byte) notifyParsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v\n%s", err, raw)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("Subject: %v", err)
	}
	var r io.Reader = m.Body
	if m.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
		r = quotedprintable.NewReader(r)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return notifyParsed{m.Header, subj, strings.ReplaceAll(string(body), "\r\n", "\n")}
}

// notifyHeaders are the headers mailwarden writes plus those Postfix's
// virtual(8) adds on delivery; nothing else may appear.
var notifyHeaders = []string{"Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "Delivered-To",
	"From", "Message-Id", "Mime-Version", "Received", "Return-Path", "Subject", "To", "X-Auto-Response-Suppress",
	"X-Mailwarden-Incident", "X-Original-To"}

type notifyIPRow struct {
	IP       string    `json:"ip"`
	Network  string    `json:"network"`
	Messages int       `json:"messages"`
	Logins   int       `json:"logins"`
	First    time.Time `json:"first"`
}

func notifyBotnet(id int64, account string) notify.Notice {
	at := time.Date(2024, 3, 1, 11, 59, 3, 0, time.UTC)
	return notify.Notice{
		ID: id, Detector: "botnet", Account: account, IP: "77.121.250.77", Action: "lock",
		DetectedAt: at, Node: "mx1",
		Summary: "used from 3 new networks in 24h0m0s (threshold 3), spread over 3 address blocks",
		Evidence: map[string]any{
			"networks":  3,
			"threshold": 3,
			"window":    "24h0m0s",
			"ips": []notifyIPRow{
				{"77.121.250.77", "77.121.0.0/16", 1, 1, at.Add(-3 * time.Hour)},
				{"187.44.1.9", "187.44.0.0/16", 1, 1, at.Add(-2 * time.Hour)},
				{"14.161.7.200", "14.161.0.0/16", 1, 1, at.Add(-time.Hour)},
			},
		},
		Done: []string{"account locked", "2 IMAP sessions kicked", "3 queued messages held"},
	}
}

// Notification mail through a real Postfix into real maildirs: the
// evidence table and what was done arrive, a malicious account name adds
// no header and no recipient, and a plain account gets its own notice.
func TestNotifyMailThroughPostfix(t *testing.T) {
	requireRoot(t)
	requireBinaries(t, "postfix")
	t.Parallel()
	pf := notifyStartPostfix(t)
	t.Logf("Postfix on 127.0.0.1:%d, STARTTLS offered: %v", pf.Port, pf.TLS)

	cfg := config.Default().Responses.Notify
	cfg.SMTP = fmt.Sprintf("127.0.0.1:%d", pf.Port)
	cfg.From = "mailwarden@e2e.test"
	cfg.To = []string{"postmaster@e2e.test", "security@e2e.test"}
	cfg.NotifyAccount = true
	cfg.Retries = 3
	var logBuf syncBuffer
	n, err := notify.New(cfg, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	n.RetryBase = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("notifier log:\n%s", logBuf.String())
		}
	})

	const evil = "evil\r\nBcc: victim@e2e.test\r\nX-Injected: yes\r\n\r\nbody $(rm -rf /) `id` \"q\" 'q'"
	if !n.Notify(notifyBotnet(1, evil)) || !n.Notify(notifyBotnet(2, "joe@e2e.test")) {
		t.Fatal("Notify dropped a notice with empty queues")
	}

	waitFor(t, "the mails in the postmaster, security and joe maildirs", func() error {
		for box, want := range map[string]int{"postmaster": 2, "security": 2, "joe": 1} {
			if got := len(notifyMailbox(t, pf, box)); got != want {
				return fmt.Errorf("%s: %d messages, want %d", box, got, want)
			}
		}
		return nil
	}, pf.Logs, logBuf.String)
	s := n.Stats()
	if m, a := s.Channel(notify.ChannelMail), s.Channel(notify.ChannelAccountMail); m.Sent != 2 || a.Sent != 1 || m.GivenUp+a.GivenUp != 0 {
		t.Errorf("stats: mail %+v, account mail %+v", m, a)
	}
	// Give a wrongly added recipient time to show up, then check none did.
	waitFor(t, "the mail queue to empty", func() error {
		out, err := runCmd(0, "/usr/sbin/postqueue", "-c", pf.ConfDir, "-p")
		if err != nil || !strings.Contains(out, "Mail queue is empty") {
			return fmt.Errorf("postqueue -p: %v %s", err, out)
		}
		return nil
	}, pf.Logs)
	for _, box := range []string{"victim", "catchall"} {
		if got := notifyMailbox(t, pf, box); len(got) != 0 {
			t.Errorf("%s received %d messages: a recipient was injected:\n%s", box, len(got), got[0])
		}
	}
	// Postfix's own log: deliveries to exactly the intended recipients.
	deliveries := regexp.MustCompile(`to=<([^>]*)>.*status=sent`).FindAllStringSubmatch(fileTail(pf.Maillog, 0), -1)
	var rcpts []string
	for _, d := range deliveries {
		rcpts = append(rcpts, d[1])
	}
	slices.Sort(rcpts)
	if want := []string{"joe@e2e.test", "postmaster@e2e.test", "postmaster@e2e.test", "security@e2e.test", "security@e2e.test"}; !slices.Equal(rcpts, want) {
		t.Errorf("Postfix delivered to %v, want %v", rcpts, want)
	}

	for _, box := range []string{"postmaster", "security"} {
		for _, raw := range notifyMailbox(t, pf, box) {
			p := notifyParse(t, raw)
			id := p.hdr.Get("X-Mailwarden-Incident")
			for k := range p.hdr {
				if !slices.Contains(notifyHeaders, k) {
					t.Errorf("%s, incident %s: unexpected header %s: %q", box, id, k, p.hdr[k])
				}
			}
			if len(p.hdr["Bcc"]) > 0 || len(p.hdr["X-Injected"]) > 0 {
				t.Errorf("%s, incident %s: injected header", box, id)
			}
			to, err := p.hdr.AddressList("To")
			if err != nil || len(to) != 2 || to[0].Address != "postmaster@e2e.test" || to[1].Address != "security@e2e.test" {
				t.Errorf("%s, incident %s: To %q: %v", box, id, p.hdr.Get("To"), err)
			}
			if got := p.hdr.Get("Delivered-To"); got != box+"@e2e.test" {
				t.Errorf("%s, incident %s: Delivered-To %q", box, id, got)
			}
			if pf.TLS && !strings.Contains(p.hdr.Get("Received"), "using TLS") {
				t.Errorf("%s, incident %s: Postfix offered STARTTLS, the Received header shows no TLS: %q", box, id, p.hdr.Get("Received"))
			}
			acct := "joe@e2e.test"
			if id == "1" {
				acct = `evil\r\nBcc: victim@e2e.test\r\nX-Injected: yes\r\n\r\nbody $(rm -rf /) ` + "`id`" + ` "q" 'q'`
			}
			if want := "[mailwarden] lock: " + acct + " (botnet) on mx1"; p.subject != want {
				t.Errorf("%s, incident %s: Subject %q, want %q", box, id, p.subject, want)
			}
			for _, re := range []string{
				`(?m)^Account   ` + regexp.QuoteMeta(acct) + `$`,
				`(?m)^  - account locked$`,
				`(?m)^  - 2 IMAP sessions kicked$`,
				`(?m)^  - 3 queued messages held$`,
				`(?m)^  networks   3$`,
				`(?m)^  window     24h0m0s$`,
				`(?m)^  ips \(3 rows\)$`,
				`(?m)^    ip +network +messages +logins +first$`,
				`(?m)^    77\.121\.250\.77 +77\.121\.0\.0/16 +1 +1 +2024-03-01 08:59:03 UTC$`,
				`(?m)^    187\.44\.1\.9 +187\.44\.0\.0/16 +1 +1 +2024-03-01 09:59:03 UTC$`,
			} {
				if !regexp.MustCompile(re).MatchString(p.body) {
					t.Errorf("%s, incident %s: body lacks %s:\n%s", box, id, re, p.body)
				}
			}
			for _, line := range strings.Split(p.body, "\n") {
				if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "X-Injected:") || strings.HasPrefix(line, "body ") {
					t.Errorf("%s, incident %s: a body line comes from the account: %q", box, id, line)
				}
			}
		}
	}

	// The account's own notice: to joe only, without internal details.
	joe := notifyMailbox(t, pf, "joe")
	p := notifyParse(t, joe[0])
	if to, err := p.hdr.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "joe@e2e.test" {
		t.Errorf("joe's notice: To %q: %v", p.hdr.Get("To"), err)
	}
	if p.subject != "Your mail account has been locked" || !strings.Contains(p.body, "has been locked") || !strings.Contains(p.body, "new password") {
		t.Errorf("joe's notice: subject %q, body:\n%s", p.subject, p.body)
	}
	for _, internal := range []string{"77.121", "botnet", "mx1", "kicked"} {
		if strings.Contains(p.body, internal) {
			t.Errorf("joe's notice shows an internal detail %q:\n%s", internal, p.body)
		}
	}
}

// Webhooks that hang or are down: 10 000 notices are handed over at
// memory speed (the time is printed, not asserted), and every one that
// could not be delivered is counted as given up.
func TestNotifyWebhookFlood(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String() + "/hook"
	ln.Close()

	cfg := config.Default().Responses.Notify
	cfg.MinAction = config.Alert
	cfg.Webhooks = []config.Webhook{{URL: hang.URL + "/hook", Secret: "k1"}, {URL: down, Secret: "k2"}}
	cfg.Queue = 100
	cfg.Retries = 2
	cfg.Timeout = config.Duration(300 * time.Millisecond)
	var logBuf syncBuffer
	n, err := notify.New(cfg, slog.New(slog.NewTextHandler(&logBuf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	n.RetryBase = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.Run(ctx)
		close(done)
	}()

	const total = 10000
	notices := make([]notify.Notice, total)
	for i := range notices {
		notices[i] = notifyBotnet(int64(i+1), fmt.Sprintf("user%d@e2e.test", i+1))
	}
	accepted := 0
	start := time.Now()
	for _, x := range notices {
		if n.Notify(x) {
			accepted++
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d Notify calls with one webhook hanging and one down took %s (%.0f ns per call); %d fully queued",
		total, elapsed, float64(elapsed.Nanoseconds())/total, accepted)

	time.Sleep(time.Second) // a few deliveries fail and are retried meanwhile
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of its context ending")
	}
	s := n.Stats()
	if len(s.Channels) != 2 {
		t.Fatalf("channels: %+v", s.Channels)
	}
	for _, c := range s.Channels {
		t.Logf("%s %s: sent %d, failed attempts %d, given up %d (queue full %d, retries exhausted %d, refused %d, at stop %d)",
			c.Channel, c.Target, c.Sent, c.Failed, c.GivenUp, c.QueueFull, c.Exhausted, c.Rejected, c.Stopped)
		if c.Sent != 0 || c.GivenUp != total || c.Queued != 0 {
			t.Errorf("%s: sent %d, given up %d, queued %d; want 0, %d, 0", c.Target, c.Sent, c.GivenUp, c.Queued, total)
		}
		if c.QueueFull == 0 {
			t.Errorf("%s: nothing dropped for a full queue", c.Target)
		}
		if c.Failed == 0 {
			t.Errorf("%s: no failed attempt recorded", c.Target)
		}
	}
	if down := s.Channels[1]; down.Exhausted == 0 {
		t.Errorf("the target that is down: no delivery counted as retries exhausted: %+v", down)
	}
	l := logBuf.String()
	for _, want := range []string{"queue full", "given up at stop", "every attempt failed"} {
		if !strings.Contains(l, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if lines := strings.Count(l, "\n"); lines > 500 {
		t.Errorf("%d log lines for %d notices: drops should be aggregated", lines, total)
	}
}

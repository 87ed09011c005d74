package notify

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

//go:embed templates/incident.txt templates/account.txt
var builtinTemplates embed.FS

// MailData is what the mail templates see. Every string in it is safe to
// print: text from clients has its control characters escaped (see the
// package's display rules), so a template cannot be tricked into writing
// a line an attacker chose.
type MailData struct {
	ID         int64
	Detector   string
	Account    string
	IP         string
	Action     string
	DryRun     bool
	DetectedAt time.Time
	Node       string
	Summary    string
	Done       []string
	// Evidence holds the key/value evidence, Tables the list-of-rows
	// evidence; EvidenceText is both laid out as a plain-text table.
	Evidence     []EvidenceRow
	Tables       []EvidenceTable
	EvidenceText string
}

// mailer sends notification mail through the relay.
type mailer struct {
	addr, host string
	helo       string
	log        *slog.Logger
	from       string // envelope sender
	fromHeader string
	to         []string
	timeout    time.Duration
	msgDomain  string // right-hand side of Message-IDs
	incident   *template.Template
	account    *template.Template
}

// newMailer loads the templates (even when no relay is set, so a broken
// template is reported at start).
func newMailer(cfg config.Notify, timeout time.Duration, log *slog.Logger) (*mailer, error) {
	m := &mailer{addr: cfg.SMTP, helo: hostname(), log: log, timeout: timeout, msgDomain: hostname()}
	var err error
	if m.incident, err = loadTemplate("template", cfg.Template, "templates/incident.txt"); err != nil {
		return nil, err
	}
	if m.account, err = loadTemplate("account_template", cfg.AccountTemplate, "templates/account.txt"); err != nil {
		return nil, err
	}
	if cfg.SMTP == "" {
		return m, nil
	}
	if m.host, _, err = net.SplitHostPort(cfg.SMTP); err != nil {
		return nil, fmt.Errorf("responses.notify.smtp: %q: %v", cfg.SMTP, err)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("responses.notify.from: %q: %v", cfg.From, err)
	}
	m.from, m.fromHeader = from.Address, from.String()
	if _, dom, ok := strings.Cut(from.Address, "@"); ok && hostLike(dom) {
		m.msgDomain = dom
	}
	for _, a := range cfg.To {
		to, err := mail.ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("responses.notify.to: %q: %v", a, err)
		}
		m.to = append(m.to, to.Address)
	}
	return m, nil
}

// loadTemplate parses a template file (the built-in one when path is "")
// and runs it once on a sample incident, so that errors found only when a
// template runs (an unknown field) also show at start. The error names
// the file and the line.
func loadTemplate(key, path, builtin string) (*template.Template, error) {
	var text []byte
	var err error
	name := path
	if path == "" {
		name = "built-in " + builtin
		text, err = builtinTemplates.ReadFile(builtin)
	} else {
		text, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("responses.notify.%s: %w", key, err)
	}
	t, err := template.New(name).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("responses.notify.%s: %s", key, strings.TrimPrefix(err.Error(), "template: "))
	}
	if err := t.Execute(io.Discard, sampleData()); err != nil {
		return nil, fmt.Errorf("responses.notify.%s: %s", key, strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

func sampleData() MailData {
	x := Notice{ID: 1, Detector: "botnet", Account: "joe@example.org", IP: "192.0.2.1", Action: "lock",
		DetectedAt: time.Unix(0, 0), Node: "mx1", Summary: "sample", Done: []string{"account locked"},
		Evidence: map[string]any{"networks": 9, "ips": []map[string]any{{"ip": "192.0.2.1", "messages": 1}}}}
	return mailData(&x)
}

func mailData(x *Notice) MailData {
	rows, tables := layoutEvidence(x.Evidence)
	d := MailData{
		ID: x.ID, Detector: clip(display(x.Detector), 64), Account: clip(display(x.Account), 256),
		IP: clip(display(x.IP), 64), Action: clip(display(x.Action), 32), DryRun: x.DryRun,
		DetectedAt: x.DetectedAt, Node: clip(display(x.Node), 128), Summary: clip(display(x.Summary), 1000),
		Evidence: rows, Tables: tables, EvidenceText: evidenceText(rows, tables),
	}
	for _, s := range x.Done {
		d.Done = append(d.Done, clip(display(s), 200))
	}
	return d
}

// sendIncident is the mail channel: the evidence report to cfg.To.
func (m *mailer) sendIncident(ctx context.Context, j *job) error {
	if j.msg == nil {
		msg, err := m.incidentMessage(&j.n, time.Now())
		if err != nil {
			return permanent(err)
		}
		j.msg, j.rcpts = msg, m.to
	}
	return m.deliver(ctx, j)
}

// sendAccount is the account_mail channel: the explanation to the account.
func (m *mailer) sendAccount(ctx context.Context, j *job) error {
	if j.msg == nil {
		addr, ok := accountAddress(j.n.Account)
		if !ok {
			return permanent(errors.New("the account is not a mail address"))
		}
		msg, err := m.accountMessage(&j.n, addr, time.Now())
		if err != nil {
			return permanent(err)
		}
		j.msg, j.rcpts = msg, []string{addr}
	}
	return m.deliver(ctx, j)
}

// incidentMessage builds the postmaster's mail.
func (m *mailer) incidentMessage(x *Notice, now time.Time) ([]byte, error) {
	var body bytes.Buffer
	if err := m.incident.Execute(&body, mailData(x)); err != nil {
		return nil, fmt.Errorf("template %s: %v", m.incident.Name(), err)
	}
	return m.message(x, m.to, subject(x), body.String(), now), nil
}

// accountMessage builds the mail to the account's owner.
func (m *mailer) accountMessage(x *Notice, addr string, now time.Time) ([]byte, error) {
	var body bytes.Buffer
	if err := m.account.Execute(&body, mailData(x)); err != nil {
		return nil, fmt.Errorf("template %s: %v", m.account.Name(), err)
	}
	subj := "Security notice about your mail account"
	if x.Action == string(config.Lock) {
		subj = "Your mail account has been locked"
	}
	return m.message(x, []string{addr}, subj, body.String(), now), nil
}

// subject is "[mailwarden] lock: alice@example.org (botnet) on mx1", with
// the account (or address) escaped and cut to a sane length.
func subject(x *Notice) string {
	var b strings.Builder
	b.WriteString("[mailwarden] ")
	b.WriteString(clip(display(x.Action), 32))
	if x.DryRun {
		b.WriteString(" (dry run)")
	}
	who := x.Account
	if who == "" {
		who = x.IP
	}
	if who != "" {
		b.WriteString(": ")
		b.WriteString(clip(display(who), 120))
	}
	fmt.Fprintf(&b, " (%s)", clip(display(x.Detector), 64))
	if x.Node != "" {
		b.WriteString(" on ")
		b.WriteString(clip(display(x.Node), 64))
	}
	return b.String()
}

// message writes the headers and the body. Header values are built from
// parsed addresses, numbers and display()ed text only, so they hold no CR,
// LF or other control character; non-ASCII text is RFC 2047 encoded.
func (m *mailer) message(x *Notice, to []string, subj, body string, now time.Time) []byte {
	var b bytes.Buffer
	hdr := func(name, value string) {
		fold(&b, name+": "+value)
	}
	hdr("From", m.fromHeader)
	tos := make([]string, len(to))
	for i, a := range to {
		tos[i] = (&mail.Address{Address: a}).String()
	}
	hdr("To", strings.Join(tos, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", subj))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", fmt.Sprintf("<mailwarden.%d.%s@%s>", x.ID, randomHex(8), m.msgDomain))
	hdr("Auto-Submitted", "auto-generated")
	hdr("X-Auto-Response-Suppress", "All")
	hdr("X-Mailwarden-Incident", fmt.Sprint(x.ID))
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	text, cte := encodeBody(body)
	hdr("Content-Transfer-Encoding", cte)
	b.WriteString("\r\n")
	b.WriteString(text)
	return b.Bytes()
}

// fold writes one header line, folded at spaces to keep lines short.
// line holds no CR or LF.
func fold(b *bytes.Buffer, line string) {
	const width = 76
	for len(line) > width {
		i := strings.LastIndexByte(line[:width], ' ')
		if i <= 0 || strings.TrimSpace(line[:i]) == "" {
			i = strings.IndexByte(line[width:], ' ')
			if i < 0 {
				break
			}
			i += width
		}
		b.WriteString(line[:i])
		b.WriteString("\r\n")
		line = line[i:] // keeps the space: the continuation line starts with it
	}
	b.WriteString(line)
	b.WriteString("\r\n")
}

// encodeBody turns the template's output into CRLF lines: 7bit when it is
// ASCII with short lines, quoted-printable otherwise. Control characters
// other than tab and newline are dropped (values were escaped already;
// this covers the template text itself).
func encodeBody(s string) (string, string) {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.Map(func(r rune) rune {
		if (r < 0x20 && r != '\t' && r != '\n') || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	plain := true
	for _, line := range strings.Split(s, "\n") {
		if len(line) > 998 {
			plain = false
			break
		}
	}
	for i := 0; plain && i < len(s); i++ {
		if s[i] >= 0x80 {
			plain = false
		}
	}
	if plain {
		return strings.ReplaceAll(s, "\n", "\r\n"), "7bit"
	}
	var b strings.Builder
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s)) // text mode: "\n" becomes CRLF
	w.Close()
	return b.String(), "quoted-printable"
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// hostLike tells whether s looks like a domain name (for Message-IDs).
func hostLike(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// accountAddress returns the account as a mail address, when it is
// exactly one plain address (no display name, no comment, no control or
// space characters, printable ASCII).
func accountAddress(acct string) (string, bool) {
	if acct == "" || len(acct) > 254 {
		return "", false
	}
	for i := 0; i < len(acct); i++ {
		if c := acct[i]; c <= ' ' || c >= 0x7f {
			return "", false
		}
	}
	a, err := mail.ParseAddress(acct)
	if err != nil || a.Name != "" || a.Address != acct || strings.Count(acct, "@") != 1 {
		return "", false
	}
	local, dom, _ := strings.Cut(acct, "@")
	if local == "" || !hostLike(dom) || !strings.Contains(dom, ".") {
		return "", false
	}
	return acct, true
}

// errTLS marks a failed STARTTLS: the session is retried without it.
var errTLS = errors.New("STARTTLS failed")

// deliver sends j.msg to j.rcpts, with STARTTLS when the relay offers it
// (opportunistic and unauthenticated, as MTAs do by default: a local
// relay's certificate rarely names 127.0.0.1). Recipients the relay
// refuses for good are dropped and logged in the error; the others stay
// in j.rcpts until they are delivered.
func (m *mailer) deliver(ctx context.Context, j *job) error {
	err := m.session(ctx, j, true)
	if errors.Is(err, errTLS) {
		err = m.session(ctx, j, false)
	}
	return err
}

func (m *mailer) session(ctx context.Context, j *job, useTLS bool) error {
	d := net.Dialer{Timeout: m.timeout}
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(m.timeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c, err := smtp.NewClient(conn, m.host)
	if err != nil {
		return smtpErr("greeting", err)
	}
	defer c.Close()
	if err := c.Hello(m.helo); err != nil {
		return smtpErr("EHLO", err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok && useTLS {
		cfg := &tls.Config{ServerName: m.host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // #nosec G402: opportunistic TLS, see deliver
		if err := c.StartTLS(cfg); err != nil {
			return fmt.Errorf("%w: %v", errTLS, err)
		}
	}
	if err := c.Mail(m.from); err != nil {
		return smtpErr("MAIL FROM", err)
	}
	var accepted, later []string
	var refused []string
	for _, r := range j.rcpts {
		err := c.Rcpt(r)
		switch {
		case err == nil:
			accepted = append(accepted, r)
		case isPermanent(err):
			refused = append(refused, fmt.Sprintf("<%s>: %v", r, err))
		default:
			later = append(later, r)
		}
	}
	if len(accepted) == 0 {
		j.rcpts = later
		if len(later) == 0 {
			return permanent(fmt.Errorf("every recipient refused: %s", strings.Join(refused, "; ")))
		}
		return fmt.Errorf("no recipient accepted for now (RCPT TO: temporary failure); refused for good: %v", refused)
	}
	w, err := c.Data()
	if err != nil {
		return smtpErr("DATA", err)
	}
	if _, err := w.Write(j.msg); err != nil {
		return smtpErr("DATA", err)
	}
	if err := w.Close(); err != nil {
		return smtpErr("end of DATA", err)
	}
	c.Quit()
	j.rcpts = later
	switch {
	case len(later) > 0:
		return fmt.Errorf("delivered to %s; %d recipient(s) refused for now, refused for good: %v", strings.Join(accepted, ", "), len(later), refused)
	case len(refused) > 0:
		// Delivered to some: a success, but say who was refused.
		m.log.Error("notification mail: some recipients refused for good", "incident", j.n.ID, "refused", strings.Join(refused, "; "))
	}
	return nil
}

// smtpErr classifies an SMTP reply: 5xx is permanent, anything else
// (4xx, network) temporary.
func smtpErr(stage string, err error) error {
	e := fmt.Errorf("%s: %w", stage, err)
	if isPermanent(err) {
		return permanent(e)
	}
	return e
}

func isPermanent(err error) bool {
	var te *textproto.Error
	return errors.As(err, &te) && te.Code >= 500
}

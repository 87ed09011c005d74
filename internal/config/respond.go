package config

import (
	"net/mail"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Responses configures what mailwarden does beyond answering the mail
// servers when it locks an account: end the account's live sessions, hold
// its queued mail, tell people.
type Responses struct {
	// LockFor is how long an automatic account lock lasts; 0 means until an
	// admin unlocks it (the default: a compromised account needs a new
	// password before it sends again).
	LockFor Duration  `yaml:"lock_for"`
	Kick    Kick      `yaml:"kick"`
	Hold    QueueHold `yaml:"hold_queued"`
	Notify  Notify    `yaml:"notify"`
}

// Kick ends the live Dovecot (IMAP/POP) sessions of a locked account. SMTP
// sessions end through the 421/drop answers of the policy listeners.
type Kick struct {
	// Method is "http" (the doveadm HTTP API, preferred), "command" (run
	// doveadm kick, without a shell) or "" (off).
	Method string `yaml:"method"`
	// URL of the doveadm HTTP API (doveadm_api_port), e.g.
	// http://127.0.0.1:8080/doveadm/v1.
	URL string `yaml:"url"`
	// APIKey is Dovecot's doveadm_api_key.
	APIKey string `yaml:"api_key"`
	// Command is the program and leading arguments; "--" and the account
	// are appended. Never run through a shell.
	Command []string `yaml:"command"`
	Timeout Duration `yaml:"timeout"`
}

// QueueHold remembers the queue ids of each account's recent mail and holds
// (Postfix) or freezes (Exim) them when the account is locked: nothing
// queued goes out, nothing is lost.
type QueueHold struct {
	// MTA is "postfix", "exim" or "" (off).
	MTA string `yaml:"mta"`
	// Postsuper is the path of Postfix's postsuper (hold -h, release -H,
	// delete -d; queue ids on its standard input).
	Postsuper string `yaml:"postsuper"`
	// Exim is the path of the exim binary (-Mf freeze, -Mt thaw, -Mrm remove).
	Exim string `yaml:"exim"`
	// Args go before the action: [-c, /etc/postfix-out] for another
	// Postfix instance, [-C, /etc/exim4/other.conf] for another Exim.
	Args    []string `yaml:"args"`
	Timeout Duration `yaml:"timeout"`
	// Remember is how long a queue id is remembered for its account.
	Remember Duration `yaml:"remember"`
	// MaxPerAccount bounds the remembered ids per account (newest kept).
	MaxPerAccount int `yaml:"max_per_account"`
}

// Notify says who is told about incidents and how.
type Notify struct {
	// MinAction: incidents whose action is at least this severe are
	// notified (alert notifies everything).
	MinAction Action `yaml:"min_action"`
	// SMTP is the relay (host:port) for notification mail; "" sends none.
	SMTP string `yaml:"smtp"`
	From string `yaml:"from"`
	// To are the postmaster addresses.
	To []string `yaml:"to"`
	// NotifyAccount also mails the account itself (its name must be an
	// address) with AccountTemplate.
	NotifyAccount bool `yaml:"notify_account"`
	// Template and AccountTemplate are Go text/template files for the
	// message bodies; "" uses the built-in ones.
	Template        string `yaml:"template"`
	AccountTemplate string `yaml:"account_template"`
	// Webhooks receive each incident as JSON, signed with HMAC-SHA256 of
	// the body under Secret (header X-Mailwarden-Signature: sha256=<hex>).
	Webhooks []Webhook `yaml:"webhooks"`
	// Syslog writes one line per incident to the local syslog/journal.
	Syslog bool `yaml:"syslog"`
	// MaxPerHour bounds the notifications of each channel (postmaster
	// mail, account mail, each webhook, syslog) per hour; past it they are
	// counted and logged as given up.
	MaxPerHour int `yaml:"max_per_hour"`
	// Queue bounds the notifications waiting to be sent; a full queue
	// drops (counted and logged), it never slows a decision.
	Queue int `yaml:"queue"`
	// Retries is how many times a failed delivery is retried, with
	// exponential backoff from 1 s.
	Retries int      `yaml:"retries"`
	Timeout Duration `yaml:"timeout"`
}

// Webhook is one HTTP endpoint for incidents.
type Webhook struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

func defaultResponses() Responses {
	return Responses{
		Kick: Kick{
			Method:  "",
			URL:     "http://127.0.0.1:8080/doveadm/v1",
			Command: []string{"/usr/bin/doveadm", "kick"},
			Timeout: Duration(5 * time.Second),
		},
		Hold: QueueHold{
			MTA:           "",
			Postsuper:     "/usr/sbin/postsuper",
			Exim:          "/usr/sbin/exim4",
			Timeout:       Duration(30 * time.Second),
			Remember:      Duration(7 * 24 * time.Hour),
			MaxPerAccount: 1000,
		},
		Notify: Notify{
			MinAction:  Hold,
			From:       "mailwarden@localhost",
			To:         []string{"postmaster@localhost"},
			MaxPerHour: 60,
			Queue:      1000,
			Retries:    5,
			Timeout:    Duration(10 * time.Second),
		},
	}
}

func (r *Responses) validate(bad func(string, ...any)) {
	if r.LockFor < 0 {
		bad("responses.lock_for: must not be negative")
	}
	k := &r.Kick
	switch k.Method {
	case "":
	case "http":
		if u, err := url.Parse(k.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("responses.kick.url: %q is not an http(s) URL", k.URL)
		}
		if k.APIKey == "" {
			bad("responses.kick.api_key: the http method needs Dovecot's doveadm_api_key")
		}
	case "command":
		if len(k.Command) == 0 || !filepath.IsAbs(k.Command[0]) {
			bad("responses.kick.command: needs an absolute program path, e.g. [/usr/bin/doveadm, kick]")
		}
	default:
		bad("responses.kick.method: %q is not one of http, command or \"\" (off)", k.Method)
	}
	if k.Timeout <= 0 {
		bad("responses.kick.timeout: must be positive")
	}
	h := &r.Hold
	switch h.MTA {
	case "":
	case "postfix":
		if !filepath.IsAbs(h.Postsuper) {
			bad("responses.hold_queued.postsuper: %q is not an absolute path", h.Postsuper)
		}
	case "exim":
		if !filepath.IsAbs(h.Exim) {
			bad("responses.hold_queued.exim: %q is not an absolute path", h.Exim)
		}
	default:
		bad("responses.hold_queued.mta: %q is not one of postfix, exim or \"\" (off)", h.MTA)
	}
	if h.Remember <= 0 || h.MaxPerAccount < 1 || h.Timeout <= 0 {
		bad("responses.hold_queued: remember, max_per_account and timeout must be positive")
	}
	if len(h.Args) == 0 {
		h.Args = nil
	}
	n := &r.Notify
	if !n.MinAction.valid() {
		bad("responses.notify.min_action: %q is not one of alert, defer, hold, lock, block_ip", n.MinAction)
	}
	if n.SMTP != "" {
		if err := CheckAddr(n.SMTP); err != nil || strings.HasPrefix(n.SMTP, "unix:") {
			bad("responses.notify.smtp: %q: use host:port", n.SMTP)
		}
		if _, err := mail.ParseAddress(n.From); err != nil {
			bad("responses.notify.from: %q is not a mail address", n.From)
		}
		if len(n.To) == 0 && !n.NotifyAccount {
			bad("responses.notify.to: no recipient")
		}
		for _, a := range n.To {
			if _, err := mail.ParseAddress(a); err != nil {
				bad("responses.notify.to: %q is not a mail address", a)
			}
		}
	}
	for _, w := range n.Webhooks {
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("responses.notify.webhooks: %q is not an http(s) URL", w.URL)
		}
		if w.Secret == "" {
			bad("responses.notify.webhooks: %q has no secret (receivers must be able to verify the signature)", w.URL)
		}
	}
	if n.MaxPerHour < 1 || n.Queue < 1 || n.Retries < 0 || n.Timeout <= 0 {
		bad("responses.notify: max_per_hour and queue must be at least 1, retries not negative, timeout positive")
	}
}

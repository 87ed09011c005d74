package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/notify"
)

// respondHooks is a webhook receiver that keeps what it was sent.
type respondHooks struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []respondHook
}

type respondHook struct {
	sig  string
	body []byte
}

func respondStartHooks(t *testing.T) *respondHooks {
	h := &respondHooks{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, respondHook{r.Header.Get(notify.HeaderSignature), b})
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *respondHooks) all() []respondHook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// The whole response to a botnet through the real servers: Postfix asks
// mailwarden (policy), authenticates through Dovecot, and queues the
// account's mail for a relay that is down. When the botnet detector locks
// the account, mailwarden, configured as docs/responses.md shows, ends the
// account's IMAP session in IDLE through the doveadm HTTP API within 2
// seconds, holds its queued mail (postqueue -j: hold), mails the
// postmaster the evidence through a second real Postfix into a maildir,
// posts a signed webhook, and records all of it with the incident.
// "mailwarden unlock --release" puts the mail back in the queue.
func TestLockRespondsPostfixDovecot(t *testing.T) {
	requireRoot(t)
	bins := requireBinaries(t, "postfix", "postsuper", "postqueue", "postconf", "dovecot", "doveadm", "swaks")
	postsuper, postqueue, postconf, doveadm := bins[1], bins[2], bins[3], bins[5]
	t.Parallel()
	const doveadmKey, hookSecret = "e2e-doveadm-key", "e2e-webhook-secret"
	users := map[string]string{"joe@e2e.test": "joe-secret", "ann@e2e.test": "ann-secret"}

	mw := startMailwarden(t, MailwardenOpts{Config: testNetworksConfig, DovecotAPIKey: "e2e-api-key"})
	dport := freePort(t)
	dv := startDovecot(t, DovecotOpts{Policy: mw, Users: users, DoveadmHTTPPort: dport, DoveadmAPIKey: doveadmKey})
	pf := startPostfix(t, PostfixOpts{Policy: mw, SASL: dv})
	relay := freePort(t) // nothing listens there: mail waits in the queue
	qhRestartPostfix(t, pf, postconf, []string{
		"default_transport=smtp", "relay_transport=smtp",
		fmt.Sprintf("relayhost=[127.0.0.1]:%d", relay),
	}, []string{"smtp/unix=smtp unix - - n - - smtp"})
	notifier := notifyStartPostfix(t) // the site's mail relay for notifications
	hooks := respondStartHooks(t)
	waitFor(t, "the doveadm HTTP listener", func() error { return dialOK(fmt.Sprintf("127.0.0.1:%d", dport)) }, dv.Logs)

	// Responses need the paths above: restart on the same sockets.
	mw.Stop()
	mw.Opts.Config = testNetworksConfig + fmt.Sprintf(`responses:
  kick:
    method: http
    url: http://127.0.0.1:%d/doveadm/v1
    api_key: %s
  hold_queued:
    mta: postfix
    postsuper: %s
    args: [-c, %s]
  notify:
    min_action: lock
    smtp: 127.0.0.1:%d
    from: mailwarden@e2e.test
    to: [postmaster@e2e.test]
    webhooks:
      - url: %s
        secret: %s
`, dport, doveadmKey, postsuper, pf.ConfDir, notifier.Port, hooks.srv.URL, hookSecret)
	mw = mw.Restart(t)

	imap := kickIMAPIdle(t, dv, "joe@e2e.test", users["joe@e2e.test"])
	waitFor(t, "doveadm who to list joe", func() error {
		if w := kickWho(t, doveadm, dv); w["joe@e2e.test"] != 1 {
			return fmt.Errorf("who: %v", w)
		}
		return nil
	}, dv.Logs)

	var queued []string
	var lockedAt time.Time
	for i := 1; i <= 13 && lockedAt.IsZero(); i++ {
		r := sendMail(t, pf, fmt.Sprintf("127.%d.0.%d", i, 4+i), "joe@e2e.test", users["joe@e2e.test"], "friend@example.net")
		if r.Queued != "" {
			queued = append(queued, r.Queued)
			continue
		}
		lockedAt = time.Now()
	}
	if lockedAt.IsZero() || len(queued) == 0 {
		t.Fatalf("botnet not locked (queued %v)\n%s", queued, mw.Logs())
	}
	said, err := imap.closedBy(lockedAt.Add(kickBound))
	if err != nil {
		t.Fatalf("IMAP session of the locked account: %v\n%s\n%s", err, mw.Logs(), dv.Logs())
	}
	t.Logf("locked after %d queued messages; IMAP session closed %s after the refusal (%q)", len(queued), time.Since(lockedAt).Round(time.Millisecond), said)
	if w := kickWho(t, doveadm, dv); w["joe@e2e.test"] != 0 {
		t.Errorf("doveadm who still lists joe: %v", w)
	}

	waitFor(t, "the account's queued mail on hold", func() error {
		if got := qhQueues(qhPostqueue(t, postqueue, pf), queued); slices.ContainsFunc(got, func(q string) bool { return q != "hold" }) {
			return fmt.Errorf("queues %v", got)
		}
		return nil
	}, mw.Logs, pf.Logs)

	// The incident says what was done.
	var inc string
	waitFor(t, "the responses recorded with the incident", func() error {
		inc = mw.MustAdmin("incidents", "--account", "joe@e2e.test")
		for _, want := range []string{"botnet", "done   kick", "1 live IMAP/POP session(s) ended (http)", "done   hold", fmt.Sprintf("hold %d queued message(s)", len(queued))} {
			if !strings.Contains(inc, want) {
				return fmt.Errorf("no %q in:\n%s", want, inc)
			}
		}
		return nil
	})

	// The postmaster's mail: evidence and what was done.
	var body string
	waitFor(t, "the notification in the postmaster's mailbox", func() error {
		msgs := notifyMailbox(t, notifier, "postmaster")
		if len(msgs) == 0 {
			return fmt.Errorf("no mail yet")
		}
		p := notifyParse(t, msgs[0])
		body = p.subject + "\n" + p.body
		return nil
	}, notifier.Logs, mw.Logs)
	for _, want := range []string{"joe@e2e.test", "botnet", "lock", "networks", "127.1.0.5", "1 live IMAP/POP session(s) ended", "queued message(s)"} {
		if !strings.Contains(body, want) {
			t.Errorf("notification lacks %q:\n%s", want, body)
		}
	}

	// The webhook, signed.
	waitFor(t, "the webhook", func() error {
		if len(hooks.all()) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	h := hooks.all()[0]
	if h.sig != notify.Sign([]byte(hookSecret), h.body) {
		t.Errorf("webhook signature %q does not verify", h.sig)
	}
	var wb notify.WebhookBody
	if err := json.Unmarshal(h.body, &wb); err != nil || wb.Account != "joe@e2e.test" || wb.Detector != "botnet" || wb.Action != "lock" {
		t.Errorf("webhook body %s: %v", h.body, err)
	}

	// Unlocked with --release: the mail goes back to the queue.
	out := mw.MustAdmin("unlock", "joe@e2e.test", "--reason", "password changed", "--release")
	if !strings.Contains(out, fmt.Sprintf("%d held message(s) released", len(queued))) {
		t.Errorf("unlock --release said:\n%s", out)
	}
	q := qhQueues(qhPostqueue(t, postqueue, pf), queued)
	for i, where := range q {
		if where == "hold" || where == "gone" {
			t.Errorf("after the release, %s is in %q", queued[i], where)
		}
	}
	if a := mw.MustAdmin("audit"); !strings.Contains(a, "release") || !strings.Contains(a, "password changed") {
		t.Errorf("audit lacks the unlock and release:\n%s", a)
	}
}

// The same with Exim (its mail frozen, then thawed) and the doveadm kick
// command; and an account name made to break out of a shell: it is
// passed to doveadm as one argument, never through a shell.
func TestLockRespondsEximCommand(t *testing.T) {
	bin := eximBinary(t)
	doveadm := requireBinaries(t, "dovecot", "doveadm")[1]
	t.Parallel()
	users := map[string]string{"joe@example.test": eximUsers["joe@example.test"]}
	dv := startDovecot(t, DovecotOpts{Users: users, Protocols: "imap"})
	mw := startMailwarden(t, MailwardenOpts{Config: mailwardenEximConfig})
	// queue_only: accepted mail waits for a queue run that never comes.
	ex := startExim(t, mw.EximSocket, "queue_only = true")
	mw.Stop()
	mw.Opts.Config = mailwardenEximConfig + fmt.Sprintf(`responses:
  kick:
    method: command
    command: [%s, -c, %s, kick]
  hold_queued:
    mta: exim
    exim: %s
    args: [-C, %s]
`, doveadm, dv.ConfigPath, bin, ex.ConfigPath)
	mw = mw.Restart(t)

	imap := kickIMAPIdle(t, dv, "joe@example.test", users["joe@example.test"])
	var queued []string
	var lockedAt time.Time
	for i := 1; i <= 13 && lockedAt.IsZero(); i++ {
		r := ex.send(fmt.Sprintf("127.%d.0.%d", i, 4*i+1), "joe@example.test", users["joe@example.test"])
		if r.ID != "" {
			queued = append(queued, r.ID)
			continue
		}
		lockedAt = time.Now()
	}
	if lockedAt.IsZero() || len(queued) == 0 {
		t.Fatalf("botnet not locked (queued %v)\n%s", queued, mw.Logs())
	}
	if _, err := imap.closedBy(lockedAt.Add(kickBound)); err != nil {
		t.Fatalf("IMAP session of the locked account: %v\n%s", err, mw.Logs())
	}
	t.Logf("locked after %d queued messages; IMAP session closed %s after the refusal", len(queued), time.Since(lockedAt).Round(time.Millisecond))
	frozen := func() map[string]bool {
		out, err := runCmd(0, bin, "-C", ex.ConfigPath, "-bp")
		if err != nil {
			t.Fatalf("exim -bp: %v\n%s", err, out)
		}
		f := map[string]bool{}
		for _, id := range queued {
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, id) {
					f[id] = strings.Contains(l, "*** frozen ***")
				}
			}
		}
		return f
	}
	waitFor(t, "the account's queued mail frozen", func() error {
		f := frozen()
		for _, id := range queued {
			if !f[id] {
				return fmt.Errorf("%s not frozen: %v", id, f)
			}
		}
		return nil
	}, mw.Logs, ex.Logs)
	out := mw.MustAdmin("unlock", "joe@example.test", "--reason", "cleaned", "--release")
	if !strings.Contains(out, fmt.Sprintf("%d held message(s) released", len(queued))) {
		t.Errorf("unlock --release said:\n%s", out)
	}
	f := frozen()
	for _, id := range queued {
		if v, ok := f[id]; !ok || v {
			t.Errorf("%s after the release: in queue %v, frozen %v", id, ok, v)
		}
	}

	// A hostile account name, locked by hand: doveadm gets it as one
	// argument (it has no session to end); no shell ever sees it. A shell
	// would create the marker in the daemon's working folder, this one.
	marker := fmt.Sprintf("pwned-%d", time.Now().UnixNano())
	evil := fmt.Sprintf("x$(touch${IFS}%s)`touch${IFS}%s`;touch${IFS}%s|touch${IFS}%s'\"@example.test", marker, marker, marker, marker)
	mw.MustAdmin("lock", evil, "--reason", "test")
	var audit string
	waitFor(t, "the kick of the hostile name to be recorded", func() error {
		audit = mw.MustAdmin("audit")
		for _, l := range strings.Split(audit, "\n") {
			if strings.Contains(l, " kick ") && strings.Contains(l, marker) {
				audit = l
				return nil
			}
		}
		return fmt.Errorf("no kick of the hostile name in the audit yet:\n%s", audit)
	})
	if !strings.Contains(audit, "0 live IMAP/POP session(s) ended (command)") {
		t.Errorf("doveadm kick did not run for the hostile name: %s", audit)
	}
	if _, err := os.Stat(marker); err == nil {
		os.Remove(marker)
		t.Fatalf("a shell ran the account name: %s exists", marker)
	}
	if logs := mw.Logs(); strings.Contains(logs, "\ntouch") {
		t.Errorf("the account name broke a log line:\n%s", logs)
	}
}

// docs/responses.md shows the shipped doveadm snippet's settings as they
// are in the file the tests include.
func TestResponsesDocsShowShippedSnippet(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs/responses.md"))
	if err != nil {
		t.Fatal(err)
	}
	snip, err := os.ReadFile(filepath.Join(repoRoot, doveadmSnippet))
	if err != nil {
		t.Fatal(err)
	}
	var settings []string
	for _, l := range strings.Split(string(snip), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			settings = append(settings, l)
		}
	}
	if block := strings.Join(settings, "\n"); !strings.Contains(string(doc), block) {
		t.Errorf("docs/responses.md does not show %s as shipped:\n%s", doveadmSnippet, block)
	}
}

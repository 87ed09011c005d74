package e2e

// Holding, releasing and purging a locked account's mail that is already
// queued, with internal/queuehold as the daemon uses it, on the real
// Postfix (postsuper) and the test's Exim 4.96 (exim -Mf/-Mt/-Mrm). The
// queue is read back with postqueue -j and exim -bp.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/queuehold"
)

// qhEntry is one message of postqueue -j.
type qhEntry struct {
	Queue  string // active, deferred, hold, incoming
	Reason string // the first recipient's delay reason
}

// qhPostqueue lists the Postfix queue by queue id.
func qhPostqueue(t *testing.T, postqueue string, pf *Postfix) map[string]qhEntry {
	t.Helper()
	out, err := runCmd(0, postqueue, "-c", pf.ConfDir, "-j")
	if err != nil {
		t.Fatalf("postqueue -j: %v\n%s", err, out)
	}
	q := map[string]qhEntry{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m struct {
			QueueName  string `json:"queue_name"`
			QueueID    string `json:"queue_id"`
			Recipients []struct {
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("postqueue -j line %q: %v", sc.Text(), err)
		}
		e := qhEntry{Queue: m.QueueName}
		if len(m.Recipients) > 0 {
			e.Reason = m.Recipients[0].DelayReason
		}
		q[m.QueueID] = e
	}
	return q
}

// qhRestartPostfix stops the instance, changes main.cf with postconf -e
// and master.cf with postconf -M (entries "name/type=line"), and starts it
// again.
func qhRestartPostfix(t *testing.T, pf *Postfix, postconf string, mainCf []string, masterCf []string) {
	t.Helper()
	pf.Stop()
	if len(mainCf) > 0 {
		if out, err := runCmd(0, postconf, append([]string{"-c", pf.ConfDir, "-e"}, mainCf...)...); err != nil {
			t.Fatalf("postconf -e: %v\n%s", err, out)
		}
	}
	for _, m := range masterCf {
		if out, err := runCmd(0, postconf, "-c", pf.ConfDir, "-M", m); err != nil {
			t.Fatalf("postconf -M %s: %v\n%s", m, err, out)
		}
	}
	if out, err := runCmd(0, pf.bin, "-c", pf.ConfDir, "start"); err != nil {
		t.Fatalf("postfix start: %v\n%s\n%s", err, out, pf.Logs())
	}
	waitFor(t, "postfix greeting after the restart", func() error {
		return greets(fmt.Sprintf("127.0.0.1:%d", pf.Port), "220 ")
	}, pf.Logs)
}

// qhQueues says in which queue each id is ("gone" when it is not listed).
func qhQueues(q map[string]qhEntry, ids []string) []string {
	var where []string
	for _, id := range ids {
		e, ok := q[id]
		if !ok {
			where = append(where, "gone")
			continue
		}
		where = append(where, e.Queue)
	}
	return where
}

// The account's mail waits in the queue because its relay (a closed
// loopback port) is unreachable. Held, it moves to the hold queue and
// stays; released, it goes back to the deferred queue; purged, it is
// deleted. A purge touches only held mail, and ids of mail already gone
// count as missing. Then the same with long queue ids.
func TestQueueHoldPostfix(t *testing.T) {
	requireRoot(t)
	bins := requireBinaries(t, "postfix", "postsuper", "postqueue", "postconf", "dovecot", "swaks")
	postsuper, postqueue, postconf := bins[1], bins[2], bins[3]
	t.Parallel()
	mw := startMailwarden(t, MailwardenOpts{})
	dv := startDovecot(t, DovecotOpts{Users: map[string]string{"joe@e2e.test": "joe-secret"}, Protocols: "imap"})
	pf := startPostfix(t, PostfixOpts{Policy: mw, SASL: dv})
	relay := freePort(t) // nothing listens there
	qhRestartPostfix(t, pf, postconf, []string{
		"default_transport=smtp", "relay_transport=smtp",
		fmt.Sprintf("relayhost=[127.0.0.1]:%d", relay),
	}, []string{"smtp/unix=smtp unix - - n - - smtp"})

	send := func(n int) []string {
		t.Helper()
		var ids []string
		for range n {
			r := sendMail(t, pf, "127.0.0.1", "joe@e2e.test", "joe-secret", "friend@example.net")
			if r.Queued == "" {
				t.Fatalf("not accepted:\n%s\n%s", r.Out, pf.Logs())
			}
			ids = append(ids, r.Queued)
		}
		// The first delivery attempt fails: the mail waits, deferred.
		waitFor(t, "the messages deferred (relay unreachable)", func() error {
			q := qhPostqueue(t, postqueue, pf)
			for _, id := range ids {
				if e := q[id]; e.Queue != "deferred" || !strings.Contains(e.Reason, "Connection refused") {
					return fmt.Errorf("%s: %+v", id, e)
				}
			}
			return nil
		}, pf.Logs)
		return ids
	}
	ids := send(6)
	for _, id := range ids {
		if !queuehold.ValidPostfixID(id) {
			t.Fatalf("real queue id %q fails ValidPostfixID", id)
		}
	}
	q, err := queuehold.NewPostfix(postsuper, queuehold.Options{Args: []string{"-c", pf.ConfDir}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(what string, want ...string) {
		t.Helper()
		if got := qhQueues(qhPostqueue(t, postqueue, pf), ids); !slices.Equal(got, want) {
			t.Fatalf("%s: queues %v, want %v", what, got, want)
		}
	}

	res, err := q.Hold(ctx, ids[:4])
	if err != nil || res.Done != 4 || res.Missing != 0 || !slices.Equal(res.IDs, ids[:4]) {
		t.Fatalf("hold: %+v, %v", res, err)
	}
	check("after the hold", "hold", "hold", "hold", "hold", "deferred", "deferred")
	// Asked to deliver now, Postfix tries the deferred mail again (in
	// vain) but not the held mail.
	for _, id := range []string{ids[0], ids[4]} {
		if out, err := runCmd(0, postqueue, "-c", pf.ConfDir, "-i", id); err != nil {
			t.Fatalf("postqueue -i %s: %v\n%s", id, err, out)
		}
	}
	waitFor(t, "a second, vain delivery attempt of the deferred message", func() error {
		if n := strings.Count(fileTail(pf.Maillog, 0), ids[4]+": to=<friend@example.net>"); n < 2 {
			return fmt.Errorf("%d attempts", n)
		}
		return nil
	}, pf.Logs)
	check("after postqueue -i", "hold", "hold", "hold", "hold", "deferred", "deferred")
	if strings.Count(fileTail(pf.Maillog, 0), ids[0]+": to=<friend@example.net>") != 1 {
		t.Fatalf("held message %s was tried again:\n%s", ids[0], pf.Logs())
	}

	res, err = q.Release(ctx, ids[:2])
	if err != nil || res.Done != 2 || res.Missing != 0 {
		t.Fatalf("release: %+v, %v", res, err)
	}
	waitFor(t, "the released mail back in the deferred or active queue", func() error {
		got := qhQueues(qhPostqueue(t, postqueue, pf), ids)
		for i, g := range got[:2] {
			if g != "deferred" && g != "active" {
				return fmt.Errorf("%s: %s", ids[i], g)
			}
		}
		if !slices.Equal(got[2:4], []string{"hold", "hold"}) {
			return fmt.Errorf("the others: %v", got[2:4])
		}
		return nil
	})

	res, err = q.Purge(ctx, ids[2:4])
	if err != nil || res.Done != 2 || res.Missing != 0 {
		t.Fatalf("purge: %+v, %v", res, err)
	}
	if got := qhQueues(qhPostqueue(t, postqueue, pf), ids); got[2] != "gone" || got[3] != "gone" {
		t.Fatalf("after the purge: %v", got)
	}
	// Purging mail that is not on hold does nothing.
	res, err = q.Purge(ctx, ids[4:5])
	if err != nil || res.Done != 0 || res.Missing != 1 {
		t.Fatalf("purge of deferred mail: %+v, %v", res, err)
	}
	if got := qhQueues(qhPostqueue(t, postqueue, pf), ids[4:5]); got[0] != "deferred" {
		t.Fatalf("mail not on hold was purged: %v", got)
	}
	// Mail already gone: missing, not an error; the rest is held.
	res, err = q.Hold(ctx, []string{ids[2], ids[5], ids[3]})
	if err != nil || res.Done != 1 || res.Missing != 2 || !slices.Equal(res.IDs, ids[5:6]) {
		t.Fatalf("hold with ids already gone: %+v, %v", res, err)
	}
	if got := qhQueues(qhPostqueue(t, postqueue, pf), ids[5:6]); got[0] != "hold" {
		t.Fatalf("after the second hold: %v", got)
	}
	t.Logf("last hold: %s", res.Detail)

	// Long queue ids (enable_long_queue_ids = yes).
	qhRestartPostfix(t, pf, postconf, []string{"enable_long_queue_ids=yes"}, nil)
	long := send(2)
	for _, id := range long {
		if !strings.Contains(id, "z") || !queuehold.ValidPostfixID(id) {
			t.Fatalf("%q: not a long queue id, or refused by ValidPostfixID", id)
		}
	}
	ids = long
	res, err = q.Hold(ctx, long)
	if err != nil || res.Done != 2 {
		t.Fatalf("hold of long ids: %+v, %v", res, err)
	}
	check("long ids held", "hold", "hold")
	res, err = q.Purge(ctx, long)
	if err != nil || res.Done != 2 {
		t.Fatalf("purge of long ids: %+v, %v", res, err)
	}
	check("long ids purged", "gone", "gone")
}

var qhEximLine = regexp.MustCompile(`(?m)^\s*\S+\s+\S+\s+(\S+) <[^>]*>( \*\*\* frozen \*\*\*)?$`)

// qhEximQueue lists Exim's queue (exim -bp): id → frozen.
func qhEximQueue(t *testing.T, bin string, ex *Exim) map[string]bool {
	t.Helper()
	out, err := runCmd(0, bin, "-C", ex.ConfigPath, "-bp")
	if err != nil {
		t.Fatalf("exim -bp: %v\n%s", err, out)
	}
	q := map[string]bool{}
	for _, m := range qhEximLine.FindAllStringSubmatch(out, -1) {
		q[m[1]] = m[2] != ""
	}
	return q
}

// qhEximSubmit queues one message from account for local delivery without
// delivering it (-odq: queue only; the test's daemon runs no queue runner)
// and returns its id.
func qhEximSubmit(t *testing.T, bin string, ex *Exim, account string) string {
	t.Helper()
	before := qhEximQueue(t, bin, ex)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-C", ex.ConfigPath, "-odq", "-oi", "-f", account, "inbox@example.test")
	cmd.Stdin = strings.NewReader("From: " + account + "\nSubject: queue hold e2e\n\nbody\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("exim -odq: %v\n%s", err, out)
	}
	for id := range qhEximQueue(t, bin, ex) {
		if _, ok := before[id]; !ok {
			return id
		}
	}
	t.Fatalf("the submitted message is not in the queue\n%s", ex.Logs())
	return ""
}

// The account's queued mail is frozen (exim -bp shows *** frozen ***),
// thawed, and removed; mail already gone counts as missing.
func TestQueueHoldExim(t *testing.T) {
	bin := eximBinary(t)
	// No mailwarden runs: the ACLs fail open, and local submissions do not
	// pass them anyway.
	ex := startExim(t, filepath.Join(shortTempDir(t, "qh"), "absent.sock"))
	const account = "joe@example.test"
	var ids []string
	for range 4 {
		ids = append(ids, qhEximSubmit(t, bin, ex, account))
	}
	for _, id := range ids {
		if !queuehold.ValidEximID(id) {
			t.Fatalf("real message id %q fails ValidEximID", id)
		}
	}
	q, err := queuehold.NewExim(bin, queuehold.Options{Args: []string{"-C", ex.ConfigPath}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	state := func() []string {
		t.Helper()
		eq := qhEximQueue(t, bin, ex)
		var s []string
		for _, id := range ids {
			frozen, ok := eq[id]
			switch {
			case !ok:
				s = append(s, "gone")
			case frozen:
				s = append(s, "frozen")
			default:
				s = append(s, "queued")
			}
		}
		return s
	}
	check := func(what string, want ...string) {
		t.Helper()
		if got := state(); !slices.Equal(got, want) {
			t.Fatalf("%s: %v, want %v\n%s", what, got, want, ex.Logs())
		}
	}
	check("submitted", "queued", "queued", "queued", "queued")

	res, err := q.Hold(ctx, ids[:3])
	if err != nil || res.Done != 3 || res.Missing != 0 || !slices.Equal(res.IDs, ids[:3]) {
		t.Fatalf("freeze: %+v, %v", res, err)
	}
	check("frozen", "frozen", "frozen", "frozen", "queued")
	ex.WaitLog(ids[0], "frozen by root")
	// Frozen again: already frozen counts as done.
	if res, err := q.Hold(ctx, ids[:1]); err != nil || res.Done != 1 {
		t.Fatalf("freeze again: %+v, %v", res, err)
	}

	res, err = q.Release(ctx, ids[:2])
	if err != nil || res.Done != 2 || res.Missing != 0 {
		t.Fatalf("thaw: %+v, %v", res, err)
	}
	check("thawed", "queued", "queued", "frozen", "queued")

	res, err = q.Purge(ctx, ids[2:4])
	if err != nil || res.Done != 2 || res.Missing != 0 {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	check("removed", "queued", "queued", "gone", "gone")

	// Ids of mail already gone: missing, not an error.
	res, err = q.Hold(ctx, []string{ids[2], ids[0], ids[3]})
	if err != nil || res.Done != 1 || res.Missing != 2 || !slices.Equal(res.IDs, ids[:1]) {
		t.Fatalf("freeze with ids already gone: %+v, %v", res, err)
	}
	check("frozen again", "frozen", "queued", "gone", "gone")
	if res, err := q.Purge(ctx, ids[2:3]); err != nil || res.Done != 0 || res.Missing != 1 {
		t.Fatalf("remove of a removed message: %+v, %v", res, err)
	}
	t.Logf("last: %s", res.Detail)
}

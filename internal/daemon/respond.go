package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/kick"
	"github.com/mailwarden/mailwarden/internal/notify"
	"github.com/mailwarden/mailwarden/internal/queuehold"
	"github.com/mailwarden/mailwarden/internal/report"
	"github.com/mailwarden/mailwarden/internal/store"
)

// responseQueue bounds the lock responses and notifications waiting for the
// responder; past it they are given up (counted and logged), never waited
// for: a decision is never slowed by a hanging doveadm or mail relay.
const responseQueue = 4096

// responder finishes the job a lock starts, off the decision path: it ends
// the account's live IMAP/POP sessions, holds its mail still in the queue,
// tells people, and records each step with the incident (or, in a dry run,
// what it would have done).
type responder struct {
	log    *slog.Logger
	st     *store.Store
	cfg    config.Responses
	kick   kick.Kicker     // nil: off
	queue  queuehold.Queue // nil: off
	track  *queuehold.Tracker
	notify *notify.Notifier // nil: nothing to notify

	jobs    chan job
	dropped atomic.Uint64
}

// job is one thing for the responder: a lock to finish and/or an incident
// to notify.
type job struct {
	incidentID int64
	account    string
	at         time.Time
	lock       bool // kick the sessions and hold the queued mail
	dryRun     bool
	notice     *notify.Notice // nil: nothing to notify (an admin's own lock)
}

func newResponder(cfg config.Responses, st *store.Store, log *slog.Logger) (*responder, error) {
	r := &responder{log: log, st: st, cfg: cfg, jobs: make(chan job, responseQueue)}
	var err error
	if r.kick, err = kick.New(cfg.Kick); err != nil {
		return nil, fmt.Errorf("responses.kick: %w", err)
	}
	if r.queue, err = queuehold.New(cfg.Hold); err != nil {
		return nil, fmt.Errorf("responses.hold_queued: %w", err)
	}
	if r.queue != nil {
		r.track = queuehold.NewTracker(cfg.Hold)
	}
	n := cfg.Notify
	if n.SMTP != "" || len(n.Webhooks) > 0 || n.Syslog {
		if r.notify, err = notify.New(n, log); err != nil {
			return nil, fmt.Errorf("responses.notify: %w", err)
		}
	}
	return r, nil
}

// run works the queue until ctx ends.
func (r *responder) run(ctx context.Context) {
	nctx, stop := context.WithCancel(context.Background())
	ndone := make(chan struct{})
	go func() {
		defer close(ndone)
		if r.notify != nil {
			r.notify.Run(nctx)
		}
	}()
	defer func() {
		stop()
		<-ndone
	}()
	for {
		select {
		case j := <-r.jobs:
			r.handle(ctx, j)
		case <-ctx.Done():
			if n := len(r.jobs); n > 0 {
				r.log.Warn("stopping: lock responses and notifications not done", "given_up", n)
			}
			return
		}
	}
}

func (r *responder) notifyStats() []notify.ChannelStats {
	if r.notify == nil {
		return nil
	}
	return r.notify.Stats().Channels
}

// queued notes a message's queue id for its account (Message events that
// carry one).
func (r *responder) queued(account, queueID string, at time.Time) {
	if r.track != nil && account != "" && queueID != "" {
		r.track.Add(account, queueID, at)
	}
}

// submit hands a job to the responder without waiting.
func (r *responder) submit(j job) {
	if !j.lock && j.notice == nil {
		return
	}
	select {
	case r.jobs <- j:
	default:
		n := r.dropped.Add(1)
		r.log.Error("responder queue full: lock response and notification given up", "incident", j.incidentID, "account", j.account, "given_up_total", n)
	}
}

func (r *responder) handle(ctx context.Context, j job) {
	var done []string
	record := func(kind string, ok bool, detail string) {
		if ok || j.dryRun {
			done = append(done, detail)
		} else {
			done = append(done, kind+" failed: "+detail)
		}
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := r.st.AddResponse(rctx, store.Response{IncidentID: j.incidentID, Account: j.account, At: time.Now(), Kind: kind, DryRun: j.dryRun, OK: ok, Detail: detail}); err != nil {
			r.log.Error("response not recorded", "incident", j.incidentID, "kind", kind, "err", err)
		}
	}
	if j.lock && j.account != "" {
		if j.dryRun {
			done = append(done, "account would be locked on SMTP, IMAP and POP")
		} else {
			done = append(done, "account locked on SMTP, IMAP and POP")
		}
		r.kickSessions(ctx, j, record)
		r.holdQueued(ctx, j, record)
	}
	if j.notice != nil && r.notify != nil {
		j.notice.Done = done
		if !r.notify.Notify(*j.notice) {
			r.log.Warn("notification given up", "incident", j.incidentID)
		}
	}
}

func (r *responder) kickSessions(ctx context.Context, j job, record func(string, bool, string)) {
	if r.kick == nil {
		return
	}
	if j.dryRun {
		record("kick", true, fmt.Sprintf("end the live IMAP/POP sessions of %s (%s)", report.Safe(j.account), r.cfg.Kick.Method))
		return
	}
	kctx, cancel := context.WithTimeout(ctx, r.cfg.Kick.Timeout.D())
	defer cancel()
	res, err := r.kick.Kick(kctx, j.account)
	if err != nil {
		r.log.Error("kick failed", "account", j.account, "method", r.cfg.Kick.Method, "err", err)
		record("kick", false, report.Safe(err.Error()))
		return
	}
	r.log.Warn("sessions kicked", "account", j.account, "method", res.Method, "kicked", res.Kicked)
	record("kick", true, fmt.Sprintf("%d live IMAP/POP session(s) ended (%s)", res.Kicked, res.Method))
}

func (r *responder) holdQueued(ctx context.Context, j job, record func(string, bool, string)) {
	if r.queue == nil {
		return
	}
	ids := r.track.IDs(j.account, j.at)
	if len(ids) == 0 {
		record("hold", true, "no queued mail of the account is known")
		return
	}
	verb := map[string]string{"postfix": "hold", "exim": "freeze"}[r.cfg.Hold.MTA]
	if j.dryRun {
		record("hold", true, fmt.Sprintf("%s %d queued message(s): %s", verb, len(ids), strings.Join(ids, " ")))
		return
	}
	res, err := r.queue.Hold(ctx, ids)
	// Whatever was held, also before an error, must be releasable later.
	pctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if perr := r.st.PutHeld(pctx, r.cfg.Hold.MTA, j.account, ids, time.Now(), j.incidentID); perr != nil {
		r.log.Error("held queue ids not stored: release them by hand", "account", j.account, "ids", ids, "err", perr)
	}
	if err != nil {
		r.log.Error("holding queued mail failed", "account", j.account, "ids", len(ids), "held", res.Done, "err", err)
		record("hold", false, fmt.Sprintf("%d of %d held before: %s", res.Done, len(ids), report.Safe(err.Error())))
		return
	}
	r.track.Forget(j.account)
	r.log.Warn("queued mail held", "account", j.account, "mta", r.cfg.Hold.MTA, "held", res.Done, "already_gone", res.Missing)
	record("hold", true, fmt.Sprintf("%s %d queued message(s) (%d already gone): %s", verb, res.Done, res.Missing, strings.Join(ids, " ")))
}

// release releases or purges the mail held for an account (unlock
// --release / --purge) and records it.
func (r *responder) release(ctx context.Context, account, how, actor string) (string, error) {
	if r.queue == nil {
		return "", fmt.Errorf("no queued mail is held: responses.hold_queued.mta is off")
	}
	ids, err := r.st.Held(ctx, r.cfg.Hold.MTA, account)
	if err != nil {
		return "", err
	}
	if len(ids) == 0 {
		return "no held mail", nil
	}
	var res queuehold.Result
	if how == "purge" {
		res, err = r.queue.Purge(ctx, ids)
	} else {
		res, err = r.queue.Release(ctx, ids)
	}
	detail := fmt.Sprintf("%d held message(s) %sd by %s (%d already gone)", res.Done, how, report.Safe(actor), res.Missing)
	if err == nil {
		if derr := r.st.DeleteHeld(ctx, r.cfg.Hold.MTA, ids); derr != nil {
			r.log.Error("released queue ids not forgotten", "account", account, "err", derr)
		}
	} else {
		// Kept: a second unlock --release retries them (ids done already
		// count as missing then).
		detail = fmt.Sprintf("%d of %d %sd, then: %s", res.Done, len(ids), how, report.Safe(err.Error()))
	}
	if aerr := r.st.AddResponse(ctx, store.Response{Account: account, At: time.Now(), Kind: how, OK: err == nil, Detail: detail}); aerr != nil {
		r.log.Error("response not recorded", "account", account, "kind", how, "err", aerr)
	}
	if err != nil {
		return "", err
	}
	return detail, nil
}

// noticeOf builds the notification of a stored incident.
func noticeOf(id int64, inc *engine.Incident, node string) *notify.Notice {
	ip := ""
	if inc.IP.IsValid() {
		ip = inc.IP.String()
	}
	return &notify.Notice{
		ID: id, Detector: inc.Detector, Account: inc.Account, IP: ip, Action: string(inc.Action),
		DryRun: inc.DryRun, DetectedAt: inc.DetectedAt, Node: node,
		Summary: report.Explain(inc), Evidence: report.Evidence(inc),
	}
}

// expireLocks lifts automatic locks whose lock_for has passed.
func (d *Daemon) expireLocks(ctx context.Context) {
	locks, err := d.st.Locks(ctx)
	if err != nil {
		d.log.Error("lock expiry: reading locks failed", "err", err)
		return
	}
	now := d.clock()
	for _, l := range locks {
		if l.Expires.IsZero() || now.Before(l.Expires) {
			continue
		}
		if _, err := d.st.DeleteLock(ctx, l.Account, "mailwarden", "lock expired (responses.lock_for)", now); err != nil {
			d.log.Error("lock expiry failed", "account", l.Account, "err", err)
			continue
		}
		d.eng.Unlock(l.Account)
		d.log.Warn("account lock expired", "account", l.Account, "since", l.Since)
	}
}

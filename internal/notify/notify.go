// Package notify tells people about incidents: a mail with the evidence to
// the postmaster addresses (and, optionally, a plain explanation to the
// account's owner) through an SMTP relay, a JSON POST signed with
// HMAC-SHA256 to each webhook, and one line to the local syslog.
//
// The caller is never slowed down: Notify only puts the notice on bounded
// in-memory queues, one per channel, and Run's goroutines deliver, with
// retries and a per-channel hourly cap. Whatever cannot be delivered (a
// full queue, the cap, a target that stays down, the daemon stopping) is
// counted and logged as given up, never dropped silently.
//
// It does not decide what is an incident, nor store incidents: the queues
// live in memory, and what is still queued when Run ends is given up (the
// incidents themselves are in the store and can be read with
// "mailwarden incidents").
package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// Notice is one incident to tell about.
type Notice struct {
	// ID is the incident's id in the store: the deduplication key (a
	// second Notify with the same ID is ignored). 0 means unknown (the
	// incident could not be stored) and is never deduplicated.
	ID       int64
	Detector string
	// Account may contain anything a client typed: quotes, CR/LF, shell
	// metacharacters. Every channel escapes it.
	Account string
	IP      string
	// Action is alert, defer, hold, lock or block_ip.
	Action string
	// DryRun: nothing was enforced, the notice says what would have been.
	DryRun     bool
	DetectedAt time.Time
	Node       string
	// Summary is a one-line explanation ("used from 13 new networks in
	// 24h0m0s (threshold 8), spread over 9 address blocks").
	Summary string
	// Evidence is the detector's evidence: numbers, strings, time.Time,
	// slices of strings, slices of structs or maps (shown as a table).
	// The notifier reads it from its goroutines after Notify returns:
	// the caller must not modify it (or Done) afterwards.
	Evidence map[string]any
	// Done lists what was done: "account locked", "2 IMAP sessions
	// kicked", "3 queued messages held".
	Done []string
}

// Channels, as named in Stats and in the log.
const (
	ChannelMail        = "mail"         // the evidence report to the postmaster addresses (cfg.To)
	ChannelAccountMail = "account_mail" // the explanation to the account's owner (cfg.NotifyAccount; defer, hold and lock that were enforced, accounts that are plain addresses)
	ChannelWebhook     = "webhook"      // one channel per configured webhook
	ChannelSyslog      = "syslog"
)

// ChannelStats counts the deliveries of one channel. A delivery is one
// notice to one target (one mail, one POST, one syslog line).
type ChannelStats struct {
	Channel string // ChannelMail, ChannelAccountMail, ChannelWebhook or ChannelSyslog
	// Target says where the channel delivers: the relay, the webhook's
	// URL without credentials or query, "local".
	Target string
	Sent   uint64 // deliveries that succeeded
	Failed uint64 // attempts that failed (a delivery that fails twice, then succeeds, counts 2)
	// GivenUp counts deliveries abandoned; it is the sum of the five
	// reasons below.
	GivenUp     uint64
	QueueFull   uint64 // the channel's queue was full when Notify was called
	RateLimited uint64 // over max_per_hour
	Exhausted   uint64 // every retry failed
	Rejected    uint64 // refused for good (SMTP 5xx, HTTP 4xx, no syslog)
	Stopped     uint64 // still queued or retrying when Run ended, or notified after
	Queued      int    // waiting now
}

// Stats is a snapshot of the notifier's counters.
type Stats struct {
	Duplicates uint64 // notices ignored because their ID was seen before
	Filtered   uint64 // notices below min_action
	// Channels in a fixed order: mail, account_mail, the webhooks in
	// configuration order, syslog (each only when configured).
	Channels []ChannelStats
}

// Channel returns the sum of the channels of one kind (e.g. all webhooks).
func (s Stats) Channel(kind string) ChannelStats {
	sum := ChannelStats{Channel: kind}
	for _, c := range s.Channels {
		if c.Channel != kind {
			continue
		}
		if sum.Target == "" {
			sum.Target = c.Target
		} else {
			sum.Target += ", " + c.Target
		}
		sum.Sent += c.Sent
		sum.Failed += c.Failed
		sum.GivenUp += c.GivenUp
		sum.QueueFull += c.QueueFull
		sum.RateLimited += c.RateLimited
		sum.Exhausted += c.Exhausted
		sum.Rejected += c.Rejected
		sum.Stopped += c.Stopped
		sum.Queued += c.Queued
	}
	return sum
}

// Notifier delivers notices. Create it with New and start Run once; call
// Notify from anywhere (it is safe for concurrent use), before Run too:
// what it queues waits for Run.
type Notifier struct {
	// RetryBase is the wait before the first retry of a failed delivery;
	// each further retry waits twice as long, up to RetryMax. New sets
	// 1 s and 5 min; change them (tests do) before Run.
	RetryBase time.Duration
	RetryMax  time.Duration

	cfg   config.Notify
	min   int // cfg.MinAction.Severity()
	log   *slog.Logger
	now   func() time.Time
	chans []*channel
	sys   *syslogSink

	mu      sync.Mutex // guards seen, stopped and the enqueueing of one notice
	seen    dedup
	stopped bool

	running    atomic.Bool
	duplicates atomic.Uint64
	filtered   atomic.Uint64
	drops      *dropLog
}

// channel is one delivery target with its own queue and worker, so that a
// target that hangs never delays the others.
type channel struct {
	kind, target string
	q            chan Notice
	applies      func(*Notice) bool
	send         func(context.Context, *job) error
	limit        limiter // used by the channel's worker only

	sent, failed, queueFull, rateLimited, exhausted, rejected, stopped atomic.Uint64
}

// job is one delivery in progress; the message is built once, so that a
// retry sends the very same bytes (same Message-ID, same signature).
type job struct {
	n     Notice
	msg   []byte   // mail: the message; webhook: the JSON body
	rcpts []string // mail: recipients still to deliver
	sig   string   // webhook: the signature header's value
}

// dedupSize is how many recent incident ids are remembered for
// deduplication.
const dedupSize = 1 << 14

// New makes a notifier for cfg (validated by the config package). It loads
// the mail templates and tries each on a sample incident, so a template
// error names its file and line now rather than at the first incident.
// log may be nil (slog.Default()).
func New(cfg config.Notify, log *slog.Logger) (*Notifier, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "notify")
	n := &Notifier{
		RetryBase: time.Second,
		RetryMax:  5 * time.Minute,
		cfg:       cfg,
		min:       cfg.MinAction.Severity(),
		log:       log,
		now:       time.Now,
		seen:      newDedup(dedupSize),
	}
	if n.min == 0 {
		return nil, fmt.Errorf("responses.notify.min_action: %q is not one of alert, defer, hold, lock, block_ip", cfg.MinAction)
	}
	n.drops = &dropLog{log: log, now: func() time.Time { return n.now() }, m: map[dropKey]*dropAgg{}}
	queue := max(cfg.Queue, 1)
	perHour := max(cfg.MaxPerHour, 1)
	timeout := cfg.Timeout.D()
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	m, err := newMailer(cfg, timeout, log)
	if err != nil {
		return nil, err
	}
	add := func(kind, target string, applies func(*Notice) bool, send func(context.Context, *job) error) {
		n.chans = append(n.chans, &channel{
			kind: kind, target: target, q: make(chan Notice, queue),
			applies: applies, send: send, limit: limiter{max: perHour},
		})
	}
	if cfg.SMTP != "" {
		if len(cfg.To) > 0 {
			add(ChannelMail, cfg.SMTP, func(*Notice) bool { return true }, m.sendIncident)
		}
		if cfg.NotifyAccount {
			add(ChannelAccountMail, cfg.SMTP, func(x *Notice) bool {
				_, ok := accountAddress(x.Account)
				return ok && !x.DryRun && touchesAccount(x.Action)
			}, m.sendAccount)
		}
	}
	for _, w := range cfg.Webhooks {
		wh := newWebhook(w, timeout)
		add(ChannelWebhook, wh.name, func(*Notice) bool { return true }, wh.send)
	}
	if cfg.Syslog {
		n.sys = &syslogSink{log: log, now: func() time.Time { return n.now() }}
		add(ChannelSyslog, "local", func(*Notice) bool { return true }, n.sys.send)
	}
	return n, nil
}

// touchesAccount tells whether an action changed something for the
// account's owner (an alert or an address block did not: the owner is
// not mailed about those).
func touchesAccount(action string) bool {
	switch config.Action(action) {
	case config.Defer, config.Hold, config.Lock:
		return true
	}
	return false
}

// Notify puts x on the queue of each channel it is for and returns at
// once: it never waits for a delivery, a lock held by a delivery, or I/O.
// It returns false when x was dropped by at least one channel because its
// queue was full or Run has ended (counted and logged as given up). A
// notice below min_action, a duplicate ID or a notice no channel is for is
// ignored, and Notify returns true. An ID is remembered once a channel has
// queued its notice.
func (n *Notifier) Notify(x Notice) bool {
	if config.Action(x.Action).Severity() < n.min {
		n.filtered.Add(1)
		return true
	}
	type drop struct {
		ch     *channel
		reason string
	}
	var drops []drop
	ok := true
	n.mu.Lock()
	if x.ID != 0 && n.seen.has(x.ID) {
		n.mu.Unlock()
		n.duplicates.Add(1)
		return true
	}
	queued := false
	for _, ch := range n.chans {
		if !ch.applies(&x) {
			continue
		}
		if n.stopped {
			ch.stopped.Add(1)
			drops = append(drops, drop{ch, reasonStopped})
			continue
		}
		select {
		case ch.q <- x:
			queued = true
		default:
			ch.queueFull.Add(1)
			drops = append(drops, drop{ch, reasonQueueFull})
		}
	}
	if queued && x.ID != 0 {
		n.seen.add(x.ID)
	}
	n.mu.Unlock()
	for _, d := range drops {
		ok = false
		n.drops.add(d.ch, d.reason, x.ID)
	}
	return ok
}

// Run delivers until ctx ends: one worker per channel, plus the periodic
// log of given-up notices. It then counts and logs what is still queued as
// given up, and returns. Call it once.
func (n *Notifier) Run(ctx context.Context) {
	if !n.running.CompareAndSwap(false, true) {
		n.log.Error("notifier already running: second Run ignored")
		return
	}
	var wg sync.WaitGroup
	for _, ch := range n.chans {
		wg.Go(func() { n.work(ctx, ch) })
	}
	wg.Go(func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.drops.flush(false)
			}
		}
	})
	wg.Wait()
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	for _, ch := range n.chans {
		var ids []int64
		left := 0
	drain:
		for {
			select {
			case x := <-ch.q:
				left++
				ch.stopped.Add(1)
				if len(ids) < 20 {
					ids = append(ids, x.ID)
				}
			default:
				break drain
			}
		}
		if left > 0 {
			n.log.Error("notifications given up at stop: still queued", "channel", ch.kind, "target", ch.target,
				"count", left, "incidents", idList(ids, left))
		}
	}
	n.drops.flush(true)
	if n.sys != nil {
		n.sys.close()
	}
}

// Stats returns the counters.
func (n *Notifier) Stats() Stats {
	s := Stats{Duplicates: n.duplicates.Load(), Filtered: n.filtered.Load()}
	for _, ch := range n.chans {
		c := ChannelStats{
			Channel: ch.kind, Target: ch.target,
			Sent: ch.sent.Load(), Failed: ch.failed.Load(),
			QueueFull: ch.queueFull.Load(), RateLimited: ch.rateLimited.Load(), Exhausted: ch.exhausted.Load(),
			Rejected: ch.rejected.Load(), Stopped: ch.stopped.Load(), Queued: len(ch.q),
		}
		c.GivenUp = c.QueueFull + c.RateLimited + c.Exhausted + c.Rejected + c.Stopped
		s.Channels = append(s.Channels, c)
	}
	return s
}

// work is a channel's worker: one delivery at a time, in order.
func (n *Notifier) work(ctx context.Context, ch *channel) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case x := <-ch.q:
			n.deliver(ctx, ch, x)
		}
	}
}

// deliver sends one notice through one channel, retrying temporary
// failures with exponential backoff.
func (n *Notifier) deliver(ctx context.Context, ch *channel, x Notice) {
	if !ch.limit.allow(n.now()) {
		ch.rateLimited.Add(1)
		n.drops.add(ch, reasonRateLimit, x.ID)
		return
	}
	j := &job{n: x}
	delay := n.RetryBase
	attempts := 1 + max(n.cfg.Retries, 0)
	for attempt := 1; ; attempt++ {
		err := ch.send(ctx, j)
		if err == nil {
			ch.sent.Add(1)
			n.log.Debug("notification sent", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempt", attempt)
			return
		}
		if ctx.Err() != nil {
			ch.stopped.Add(1)
			n.log.Error("notification given up: stopping", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempt", attempt)
			return
		}
		ch.failed.Add(1)
		if p := (*permanentError)(nil); errors.As(err, &p) {
			ch.rejected.Add(1)
			if !p.quiet {
				n.log.Error("notification given up: refused", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempt", attempt, "err", p.err)
			}
			return
		}
		if attempt >= attempts {
			ch.exhausted.Add(1)
			n.log.Error("notification given up: every attempt failed", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempts", attempt, "err", err)
			return
		}
		n.log.Warn("notification failed, will retry", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempt", attempt, "retry_in", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			ch.stopped.Add(1)
			n.log.Error("notification given up: stopping while waiting to retry", "channel", ch.kind, "target", ch.target, "incident", x.ID, "attempts", attempt)
			return
		case <-t.C:
		}
		delay = min(2*delay, max(n.RetryMax, n.RetryBase))
	}
}

// permanentError is a failure that retrying cannot fix (SMTP 5xx, HTTP
// 4xx). quiet: already logged by the channel (syslog unavailable).
type permanentError struct {
	err   error
	quiet bool
}

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return &permanentError{err: err} }

// limiter allows max deliveries in any sliding hour, counted in minute
// buckets (constant memory whatever max is).
type limiter struct {
	max     int
	buckets [60]struct {
		minute int64
		n      int
	}
}

func (l *limiter) allow(now time.Time) bool {
	m := now.Unix() / 60
	total := 0
	for _, b := range l.buckets {
		if b.minute > m-60 && b.minute <= m {
			total += b.n
		}
	}
	if total >= l.max {
		return false
	}
	b := &l.buckets[m%60]
	if b.minute != m {
		b.minute, b.n = m, 0
	}
	b.n++
	return true
}

// dedup remembers the last size ids (a ring plus a set).
type dedup struct {
	ring []int64
	next int
	set  map[int64]struct{}
}

func newDedup(size int) dedup {
	return dedup{ring: make([]int64, 0, size), set: make(map[int64]struct{}, size)}
}

func (d *dedup) has(id int64) bool {
	_, ok := d.set[id]
	return ok
}

func (d *dedup) add(id int64) {
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, id)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = id
		d.next = (d.next + 1) % len(d.ring)
	}
	d.set[id] = struct{}{}
}

// Reasons a notice is given up without an attempt.
const (
	reasonQueueFull = "queue full"
	reasonRateLimit = "over max_per_hour"
	reasonStopped   = "notifier stopped"
)

// dropLog logs notices given up without an attempt: the first of a kind
// at once with its incident id, then at most one aggregated line per
// minute while they keep coming, so a flood cannot flood the log too.
type dropLog struct {
	log *slog.Logger
	now func() time.Time
	mu  sync.Mutex
	m   map[dropKey]*dropAgg
}

type dropKey struct {
	ch     *channel
	reason string
}

type dropAgg struct {
	quietUntil  time.Time // aggregate until then
	n           int
	first, last int64
}

type dropLine struct {
	key         dropKey
	n           int
	first, last int64
}

func (d *dropLog) add(ch *channel, reason string, id int64) {
	now := d.now()
	k := dropKey{ch, reason}
	var out []dropLine
	d.mu.Lock()
	a := d.m[k]
	if a == nil {
		a = &dropAgg{}
		d.m[k] = a
	}
	if now.Before(a.quietUntil) {
		if a.n == 0 {
			a.first = id
		}
		a.n++
		a.last = id
	} else {
		if a.n > 0 {
			out = append(out, dropLine{k, a.n, a.first, a.last})
			a.n = 0
		}
		out = append(out, dropLine{k, 1, id, id})
		a.quietUntil = now.Add(time.Minute)
	}
	d.mu.Unlock()
	d.write(out)
}

// flush logs the aggregated drops whose minute is over (all of them when
// final).
func (d *dropLog) flush(final bool) {
	now := d.now()
	var out []dropLine
	d.mu.Lock()
	for k, a := range d.m {
		if a.n > 0 && (final || !now.Before(a.quietUntil)) {
			out = append(out, dropLine{k, a.n, a.first, a.last})
			a.n = 0
			a.quietUntil = now.Add(time.Minute)
		}
	}
	d.mu.Unlock()
	d.write(out)
}

func (d *dropLog) write(lines []dropLine) {
	for _, l := range lines {
		if l.n == 1 {
			d.log.Error("notification given up: "+l.key.reason, "channel", l.key.ch.kind, "target", l.key.ch.target, "incident", l.first)
			continue
		}
		d.log.Error("notifications given up: "+l.key.reason, "channel", l.key.ch.kind, "target", l.key.ch.target,
			"count", l.n, "first_incident", l.first, "last_incident", l.last)
	}
}

// idList shows up to 20 incident ids of total.
func idList(ids []int64, total int) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprint(&b, id)
	}
	if total > len(ids) {
		fmt.Fprintf(&b, ",… (%d more)", total-len(ids))
	}
	return b.String()
}

// hostname is the local host name for HELO and Message-IDs, reduced to
// the characters a host name may have.
func hostname() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, h)
	h = strings.Trim(h, ".-")
	if h == "" {
		return "localhost"
	}
	return h
}

// httpStatusRetry tells whether an HTTP status is worth retrying.
func httpStatusRetry(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

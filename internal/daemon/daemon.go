// Package daemon is `mailwarden serve`'s core: it owns the engine and the
// durable store, answers the live sources (it implements decide.Decider),
// persists incidents, locks and blocks before answering, journals events so
// that a restart rebuilds the counters, and serves the admin API.
//
// The protocol listeners (Postfix policy, Exim readsocket, Dovecot auth
// policy) and the log tailer are separate packages wired in by the serve
// command; this package does not speak any mail protocol.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/decide"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/report"
	"github.com/mailwarden/mailwarden/internal/store"
)

// journalQueue bounds the events waiting to be journaled; past it events
// are dropped from the journal (counted and logged), never from decisions.
const journalQueue = 65536

// journalEvery is how often the waiting events are written.
const journalEvery = 200 * time.Millisecond

// Daemon answers live sources and keeps durable state.
type Daemon struct {
	log   *slog.Logger
	clock decide.Clock
	node  string
	st    *store.Store
	eng   *engine.Engine
	start time.Time

	mu  sync.RWMutex
	cfg *config.Config

	jmu       sync.Mutex    // guards jbuf
	jbuf      []event.Event // events waiting to be journaled
	resp      *responder
	jDropped  atomic.Uint64 // events never journaled, since the start
	jWarned   uint64        // jDropped when last logged (Run only)
	decisions atomic.Uint64
	incidents atomic.Uint64
	stopOnce  sync.Once
	done      chan struct{}
}

// Options are the daemon's collaborators.
type Options struct {
	Log   *slog.Logger
	Clock decide.Clock // default time.Now
}

// New opens the state in cfg.Serve.StateDir, rebuilds the counters from the
// journal and restores locks and blocks.
func New(cfg *config.Config, o Options) (*Daemon, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	st, err := store.Open(cfg.Serve.StateDir)
	if err != nil {
		return nil, err
	}
	node := cfg.Serve.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	d := &Daemon{
		log: o.Log, clock: o.Clock, node: node, st: st, cfg: cfg,
		eng:   engine.New(cfg),
		start: o.Clock(),
		jbuf:  make([]event.Event, 0, 4096),
		done:  make(chan struct{}),
	}
	if d.resp, err = newResponder(cfg.Responses, st, o.Log); err != nil {
		st.Close()
		return nil, err
	}
	if err := d.restore(context.Background()); err != nil {
		st.Close()
		return nil, err
	}
	return d, nil
}

// restore replays the journal into the detectors, then puts the durable
// locks and blocks in force (the journal must not re-lock an account an
// admin unlocked).
func (d *Daemon) restore(ctx context.Context) error {
	now := d.clock()
	if err := d.restoreHistory(ctx, now); err != nil {
		return err
	}
	n := 0
	err := d.st.Events(ctx, now.Add(-d.cfg.Serve.Journal.D()), func(ev *event.Event) {
		d.eng.Warm(ev)
		n++
	})
	if torn := (*store.TornJournal)(nil); errors.As(err, &torn) {
		d.log.Warn("event journal damaged (a crash during a write?): counters rebuilt from the intact events", "err", err)
	} else if err != nil {
		return err
	}
	locks, err := d.st.Locks(ctx)
	if err != nil {
		return err
	}
	for _, l := range locks {
		d.eng.LockAccount(l.Account, l.Since, nil)
	}
	blocks, err := d.st.Blocks(ctx, now, true)
	if err != nil {
		return err
	}
	inForce := 0
	for _, b := range blocks {
		ip, err := netip.ParseAddr(b.IP)
		if err != nil {
			continue
		}
		if b.Until.After(now) {
			d.eng.BlockIP(ip, b.Until, b.Offence, nil)
			inForce++
		}
	}
	d.log.Info("state restored", "file", d.st.Path(), "journal_events", n, "locks", len(locks), "blocks", inForce)
	return nil
}

// Run writes the journal until ctx ends, then flushes it.
func (d *Daemon) Run(ctx context.Context) {
	defer close(d.done)
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		d.resp.run(ctx)
	}()
	defer func() { <-rdone }()
	expiry := time.NewTicker(10 * time.Second)
	defer expiry.Stop()
	// The journal is written in batches taken every journalEvery: the
	// deciding goroutines only append under a mutex and never wake this
	// one (a channel send per event did, at a context switch each).
	tick := time.NewTicker(journalEvery)
	defer tick.Stop()
	warned := time.Now()
	prune := time.NewTicker(10 * time.Minute)
	defer prune.Stop()
	// History snapshots run beside the journal: a large one must not hold
	// up the journal's writes.
	hdone := make(chan struct{})
	go func() {
		defer close(hdone)
		hist := time.NewTicker(historyEvery)
		defer hist.Stop()
		for {
			select {
			case <-hist.C:
				d.snapshotHistory(context.Background())
			case <-ctx.Done():
				d.snapshotHistory(context.Background())
				return
			}
		}
	}()
	defer func() { <-hdone }()
	batch := make([]event.Event, 0, 4096)
	flush := func() {
		d.jmu.Lock()
		batch, d.jbuf = d.jbuf, batch[:0]
		d.jmu.Unlock()
		if len(batch) == 0 {
			return
		}
		if err := d.st.AppendEvents(context.Background(), batch); err != nil {
			d.log.Error("journal write failed; counters of these events will not survive a restart", "events", len(batch), "err", err)
		}
		clear(batch) // drop the strings
		batch = batch[:0]
	}
	for {
		select {
		case <-tick.C:
			flush()
			if n := d.jDropped.Load(); n > d.jWarned && time.Since(warned) >= time.Second {
				d.log.Warn("journal queue full: events dropped from the journal (decisions unaffected)", "dropped", n-d.jWarned, "dropped_total", n)
				d.jWarned, warned = n, time.Now()
			}
		case <-expiry.C:
			d.expireLocks(context.Background())
		case <-prune.C:
			flush()
			if _, err := d.st.PruneEvents(context.Background(), d.clock().Add(-d.config().Serve.Journal.D())); err != nil {
				d.log.Error("journal prune failed", "err", err)
			}
		case <-ctx.Done():
			flush()
			return
		}
	}
}

// Close waits for Run to finish and closes the state file.
func (d *Daemon) Close() error {
	<-d.done
	return d.st.Close()
}

func (d *Daemon) config() *config.Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// Reconfigure applies a new configuration (SIGHUP). Listener addresses and
// the state directory need a restart; everything else applies now.
func (d *Daemon) Reconfigure(cfg *config.Config) {
	if !reflect.DeepEqual(cfg.Responses, d.config().Responses) {
		d.log.Warn("configuration reloaded, but changes to responses (kick, hold_queued, notify) take effect after a restart; lock_for applies to new locks now")
	}
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.eng.Reconfigure(cfg)
}

// Decide implements decide.Decider.
func (d *Daemon) Decide(ev *event.Event) engine.Verdict {
	if ev.Node == "" {
		ev.Node = d.node
	}
	d.decisions.Add(1)
	v, incs := d.eng.Process(ev, nil)
	for _, inc := range incs {
		d.persist(inc)
	}
	if ev.Kind == event.Message && ev.QueueID != "" {
		d.resp.queued(ev.Account, ev.QueueID, ev.Time)
	}
	d.jmu.Lock()
	if len(d.jbuf) < journalQueue {
		d.jbuf = append(d.jbuf, *ev)
	} else {
		d.jDropped.Add(1)
	}
	d.jmu.Unlock()
	return v
}

// Check implements decide.Decider.
func (d *Daemon) Check(account string, ip netip.Addr, t time.Time) engine.Verdict {
	return d.eng.Check(account, ip, t)
}

// persist writes an incident and the lock or block it put in force. It is
// synchronous: a lock must survive a crash right after it was answered.
func (d *Daemon) persist(inc *engine.Incident) {
	d.incidents.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ip := ""
	if inc.IP.IsValid() {
		ip = inc.IP.String()
	}
	id, err := d.st.AddIncident(ctx, &store.Incident{
		DetectedAt: inc.DetectedAt, Detector: inc.Detector, Account: inc.Account, IP: ip,
		Action: string(inc.Action), DryRun: inc.DryRun, Node: d.node, Evidence: report.Evidence(inc),
	})
	if err != nil {
		d.log.Error("incident not stored (still enforced in memory)", "detector", inc.Detector, "account", inc.Account, "ip", ip, "err", err)
	}
	d.log.Warn("incident", "id", id, "detector", inc.Detector, "action", string(inc.Action), "account", inc.Account, "ip", ip, "dry_run", inc.DryRun)
	d.resp.submit(job{
		incidentID: id, account: inc.Account, at: inc.DetectedAt,
		lock: inc.Action == config.Lock, dryRun: inc.DryRun,
		notice: noticeOf(id, inc, d.node),
	})
	if inc.DryRun {
		return
	}
	switch inc.Action {
	case config.Lock:
		if inc.Account == "" {
			return
		}
		l := store.Lock{Account: inc.Account, Since: inc.DetectedAt, Reason: inc.Detector, Actor: "mailwarden", IncidentID: id}
		if lf := d.config().Responses.LockFor.D(); lf > 0 {
			l.Expires = inc.DetectedAt.Add(lf)
		}
		err = d.st.PutLock(ctx, l)
	case config.BlockIP:
		until, offence := d.eng.Blocked(inc.IP, inc.DetectedAt)
		if until.IsZero() {
			return
		}
		err = d.st.PutBlock(ctx, store.Block{Net: event.NetKey(inc.IP).String(), IP: ip, Since: inc.DetectedAt, Until: until, Offence: offence, Reason: inc.Detector, Actor: "mailwarden", IncidentID: id})
	}
	if err != nil {
		d.log.Error("lock or block not stored: it is enforced now but will not survive a restart", "account", inc.Account, "ip", ip, "err", err)
	}
}

// Package engine is mailwarden's detection engine: normalised events in,
// verdicts and incidents out. It is pure: no I/O, no wall clock (time comes
// from the events), so live decisions and log replay run exactly the same
// code with the same configuration.
//
// It owns the detectors of DESIGN §4, the bounded per-key state they keep
// (including each account's 35-day sending history, whose statistics live
// in internal/baseline), and the enforcement state a replay needs
// to say what would have been stopped: locked accounts, blocked addresses
// (with expiry and escalation), held accounts. Durable storage of that state
// belongs to the daemon, not here.
package engine

import (
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

type detector uint8

const (
	dCrackIP detector = iota
	dSprayIP
	dAccountAttacked
	dBotnet
	dSpamware
	dPerConnection
	dBadRcpt
	dDailyCaps
	dHarvest
	dBaseline
	numDetectors
)

var detectorNames = [numDetectors]string{"crack_ip", "spray_ip", "account_attacked", "botnet", "spamware", "per_connection", "bad_rcpt", "daily_caps", "harvest", "baseline"}

func (d detector) String() string { return detectorNames[d] }

// Verdict is the engine's answer for one event.
type Verdict uint8

// Verdicts.
const (
	Allow   Verdict = iota
	Tarpit          // allow, slowly: the account is under distributed attack
	Defer           // refuse for now (4xx)
	Hold            // accept, hold the mail
	Lock            // the account is locked
	Blocked         // the address is blocked
)

var verdictNames = [...]string{"allow", "tarpit", "defer", "hold", "lock", "block_ip"}

func (v Verdict) String() string { return verdictNames[v] }

// Stopped counts what an incident's enforcement refused or held afterwards.
type Stopped struct {
	Messages     int `json:"messages"`
	Recipients   int `json:"recipients"`
	AuthAttempts int `json:"auth_attempts"`
	Logins       int `json:"logins"`
}

func (s *Stopped) count(ev *event.Event) {
	switch ev.Kind {
	case event.Message:
		s.Messages++
		s.Recipients += max(ev.Rcpts, 1)
	case event.AuthFail:
		s.AuthAttempts += ev.N()
	case event.AuthOK:
		s.Logins++
	}
}

// Incident is one detection: what fired, for whom, when, what it does, and
// the evidence.
type Incident struct {
	Detector   string
	Account    string
	IP         netip.Addr
	DetectedAt time.Time
	Action     config.Action
	DryRun     bool
	Evidence   map[string]any
	Stopped    Stopped // filled while a replay goes on
}

type lockInfo struct {
	since time.Time
	inc   *Incident
}

type blockInfo struct {
	until   time.Time
	offence int
	inc     *Incident
}

// Engine evaluates events. It is safe for concurrent use.
type Engine struct {
	mu     sync.Mutex
	cfg    *config.Config
	st     *store
	locks  map[string]*lockInfo
	blocks map[netip.Addr]*blockInfo
	tarpit map[netip.Addr]time.Time // addresses attacking an account, until

	pop     popularity // accounts per network, for "new network" counting
	warming bool       // rebuilding counters from a journal: nothing is enforced
	verdict Verdict    // set by detectors that decide without an incident (a cap still exceeded)

	bl       *baseline.Model // the baseline's settings and population prior
	hist     histChanges     // histories changed since the last HistoryChanges
	histMark time.Time       // Warm counts no message at or before this in the histories
	histLast time.Time       // the newest message counted in a history
}

// New returns an engine for cfg (which must be validated).
func New(cfg *config.Config) *Engine {
	return &Engine{
		cfg:    cfg,
		st:     newStore(cfg.MaxTrackedKeys),
		locks:  map[string]*lockInfo{},
		blocks: map[netip.Addr]*blockInfo{},
		tarpit: map[netip.Addr]time.Time{},
		pop:    popularity{m: map[netip.Prefix]*popEntry{}, max: 1 << 18},
		bl:     baseline.NewModel(&cfg.Detectors.Baseline),
	}
}

// TrackedKeys returns the number of keys (accounts, addresses, pairs,
// sessions) holding detector state. It never exceeds max_tracked_keys.
func (e *Engine) TrackedKeys() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.len()
}

// Evicted returns how many keys were dropped to respect the cap.
func (e *Engine) Evicted() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st.evicted
}

// Process evaluates ev, appends the incidents it raises to out and returns
// the verdict for it.
func (e *Engine) Process(ev *event.Event, out []*Incident) (Verdict, []*Incident) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev.Time.IsZero() {
		return Allow, out
	}
	if e.cfg.Allowlist.AccountAllowed(ev.Account) || e.cfg.Allowlist.IPAllowed(ev.IP) {
		return Allow, out
	}
	if v, ok := e.enforced(ev); ok {
		return v, out
	}
	n := len(out)
	e.verdict = Allow
	switch ev.Kind {
	case event.AuthFail:
		out = e.authFail(ev, out)
	case event.AuthOK:
		out = e.authOK(ev, out)
	case event.Message:
		if ev.Account != "" {
			out = e.use(ev, out)
		}
		out = e.message(ev, out)
	case event.RcptRejected:
		out = e.rcptRejected(ev, out)
	case event.Disconnect:
		if ev.Session != "" {
			e.st.del(key{kind: kSession, s: sessionID(ev)})
		}
	}
	v := e.verdict
	if e.cfg.DryRun {
		v = Allow
	}
	for _, inc := range out[n:] {
		if inc.DryRun {
			continue
		}
		if w := e.apply(inc, ev); w > v {
			v = w
		}
	}
	if v == Allow && ev.Kind == event.Message && ev.Account != "" {
		// Held mail still counted towards the detectors above; it is held
		// unless something refused it outright.
		if n := e.st.peek(key{kind: kAccount, s: ev.Account}); n != nil && n.acct != nil && ev.Time.Before(n.acct.holdUntil) {
			n.acct.holdInc.Stopped.count(ev)
			v = Hold
		}
	}
	if v == Allow && ev.IP.IsValid() && len(e.tarpit) > 0 && ev.Kind != event.Message {
		k := event.NetKey(ev.IP)
		if until, ok := e.tarpit[k]; ok {
			if ev.Time.Before(until) {
				v = Tarpit
			} else {
				delete(e.tarpit, k)
			}
		}
	}
	return v, out
}

// enforced answers for events that a lock, block or hold already decides.
func (e *Engine) enforced(ev *event.Event) (Verdict, bool) {
	if ev.IP.IsValid() {
		k := event.NetKey(ev.IP)
		if b, ok := e.blocks[k]; ok {
			if ev.Time.Before(b.until) {
				b.inc.Stopped.count(ev)
				return Blocked, true
			}
		}
	}
	if ev.Account == "" {
		return Allow, false
	}
	if l, ok := e.locks[ev.Account]; ok {
		l.inc.Stopped.count(ev)
		return Lock, true
	}
	return Allow, false
}

// apply turns an incident into enforcement state and returns the verdict it
// gives the event that raised it.
func (e *Engine) apply(inc *Incident, ev *event.Event) Verdict {
	switch inc.Action {
	case config.BlockIP:
		if !inc.IP.IsValid() {
			return Allow
		}
		k := event.NetKey(inc.IP)
		b := e.blocks[k]
		if b == nil {
			e.pruneBlocks(ev.Time)
			b = &blockInfo{}
			e.blocks[k] = b
		}
		b.offence++
		d := e.cfg.BlockFor.D()
		for i := 1; i < b.offence && d < 30*24*time.Hour; i++ {
			d *= 4 // repeat offenders: 1h, 4h, 16h, 64h, …
		}
		b.until, b.inc = ev.Time.Add(d), inc
		inc.Evidence["blocked_for"] = d.String()
		inc.Evidence["offence"] = b.offence
		return Blocked
	case config.Lock:
		if inc.Account == "" {
			return Allow
		}
		e.locks[inc.Account] = &lockInfo{since: ev.Time, inc: inc}
		return Lock
	case config.Hold:
		if inc.Account != "" {
			a := e.st.account(inc.Account)
			a.holdUntil, a.holdInc = ev.Time.Add(e.holdFor(inc)), inc
		}
		return Hold
	case config.Defer:
		return Defer
	}
	if inc.Detector == dAccountAttacked.String() {
		if rows, ok := inc.Evidence["attackers"].([]failRow); ok {
			until := ev.Time.Add(e.cfg.Detectors.AccountAttacked.Window.D())
			for _, r := range rows {
				if a, err := netip.ParseAddr(r.IP); err == nil {
					e.slow(a, until)
				}
			}
			if ev.IP.IsValid() && ev.Kind == event.AuthFail {
				return Tarpit
			}
		}
	}
	return Allow
}

// slow tarpits an address until a time; the table is bounded.
func (e *Engine) slow(a netip.Addr, until time.Time) {
	if len(e.tarpit) >= e.cfg.MaxTrackedKeys {
		for k := range e.tarpit { // full: drop any one (map order is random)
			delete(e.tarpit, k)
			break
		}
	}
	e.tarpit[event.NetKey(a)] = until
}

func (e *Engine) holdFor(inc *Incident) time.Duration {
	if w, ok := inc.Evidence["window"].(string); ok {
		if d, err := time.ParseDuration(w); err == nil && d > 0 {
			return d
		}
	}
	return time.Hour
}

// pruneBlocks keeps the block table bounded: expired blocks go first; past
// the cap, the blocks that expire soonest.
func (e *Engine) pruneBlocks(now time.Time) {
	if len(e.blocks) < e.cfg.MaxTrackedKeys {
		return
	}
	for k, b := range e.blocks {
		if !now.Before(b.until) {
			delete(e.blocks, k)
		}
	}
	for len(e.blocks) >= e.cfg.MaxTrackedKeys {
		var oldK netip.Addr
		var oldT time.Time
		first := true
		for k, b := range e.blocks {
			if first || b.until.Before(oldT) {
				oldK, oldT, first = k, b.until, false
			}
		}
		delete(e.blocks, oldK)
	}
}

// Locked reports whether an account is locked (replay simulation or live).
func (e *Engine) Locked(account string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.locks[account]
	return ok
}

// Unlock lifts an account lock. It reports whether there was one.
func (e *Engine) Unlock(account string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.locks[account]
	delete(e.locks, account)
	return ok
}

func (e *Engine) newIncident(d detector, c *config.Common, ev *event.Event, account string, ip netip.Addr, evidence map[string]any) *Incident {
	if c.Window > 0 {
		evidence["window"] = c.Window.D().String()
	}
	return &Incident{
		Detector:   d.String(),
		Account:    strings.Clone(account), // events point into input buffers
		IP:         ip,
		DetectedAt: ev.Time,
		Action:     c.Action,
		DryRun:     e.cfg.DryRun || e.warming,
		Evidence:   evidence,
	}
}

// sessionID makes a session key unique across sources and nodes.
func sessionID(ev *event.Event) string {
	return ev.Source + "\x00" + ev.Node + "\x00" + ev.Session
}

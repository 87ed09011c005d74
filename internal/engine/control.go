package engine

import (
	"net/netip"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

// Check answers for an account and address without recording anything: is
// the address blocked or slowed down, is the account locked? Live sources
// ask it before authentication (Dovecot's "allow", a connect ACL).
func (e *Engine) Check(account string, ip netip.Addr, t time.Time) Verdict {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.Allowlist.AccountAllowed(account) || e.cfg.Allowlist.IPAllowed(ip) {
		return Allow
	}
	if ip.IsValid() {
		if b, ok := e.blocks[event.NetKey(ip)]; ok && t.Before(b.until) {
			return Blocked
		}
	}
	if account != "" {
		if _, ok := e.locks[account]; ok {
			return Lock
		}
	}
	if ip.IsValid() {
		if until, ok := e.tarpit[event.NetKey(ip)]; ok && t.Before(until) {
			return Tarpit
		}
	}
	return Allow
}

// LockAccount locks an account by hand (or restores a durable lock). inc
// is the incident that caused it, or a manual one.
func (e *Engine) LockAccount(account string, t time.Time, inc *Incident) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if inc == nil {
		inc = &Incident{Detector: "manual", Account: account, DetectedAt: t, Action: config.Lock, Evidence: map[string]any{}}
	}
	e.locks[account] = &lockInfo{since: t, inc: inc}
}

// BlockIP blocks an address (IPv6: its /64) until a time, by hand or to
// restore a durable block.
func (e *Engine) BlockIP(ip netip.Addr, until time.Time, offence int, inc *Incident) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if inc == nil {
		inc = &Incident{Detector: "manual", IP: ip, DetectedAt: until, Action: config.BlockIP, Evidence: map[string]any{}}
	}
	e.blocks[event.NetKey(ip)] = &blockInfo{until: until, offence: max(offence, 1), inc: inc}
}

// UnblockIP lifts a block. It reports whether there was one.
func (e *Engine) UnblockIP(ip netip.Addr) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := event.NetKey(ip)
	_, ok := e.blocks[k]
	delete(e.blocks, k)
	return ok
}

// Blocked returns when the block on ip ends and the offence count, or the
// zero time when it is not blocked at t.
func (e *Engine) Blocked(ip netip.Addr, t time.Time) (time.Time, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b, ok := e.blocks[event.NetKey(ip)]; ok && t.Before(b.until) {
		return b.until, b.offence
	}
	return time.Time{}, 0
}

// Warm feeds a past event to the detectors to rebuild their counters after
// a restart: incidents it would raise are dropped and nothing is enforced
// (locks and blocks are restored from durable state instead).
func (e *Engine) Warm(ev *event.Event) {
	e.mu.Lock()
	e.warming = true
	e.mu.Unlock()
	e.Process(ev, nil)
	e.mu.Lock()
	e.warming = false
	e.mu.Unlock()
}

// Reconfigure swaps in a new validated configuration (SIGHUP): thresholds,
// windows, actions and allowlists apply to the next event; counters are
// kept. The cap on tracked keys applies as the store evicts.
func (e *Engine) Reconfigure(cfg *config.Config) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg = cfg
	e.st.max = cfg.MaxTrackedKeys
	e.bl.Reconfigure(&cfg.Detectors.Baseline)
}

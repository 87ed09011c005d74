package engine

import (
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// Limits on the small per-key sets (bounded memory per key).
const (
	maxIPAccts   = 64
	maxPwHashes  = 256
	maxFailIPs   = 128
	maxNets      = 64
	maxKnownNets = 32
)

func timeLast(t *time.Time) time.Time { return *t }

// network returns the "distinct networks" prefix of ip per the config.
func (e *Engine) network(ip netip.Addr) netip.Prefix {
	return event.Network(ip, e.cfg.Networks.IPv4Prefix, e.cfg.Networks.IPv6Prefix)
}

// knownOn reports whether the account has logged in from net within
// known_for, at any time (stale-password tolerance).
func (e *Engine) knownOn(a *acctState, net netip.Prefix, t time.Time) bool {
	k := a.known.get(net)
	return k != nil && t.Sub(k.last) < e.cfg.Detectors.Botnet.KnownFor.D()
}

func (e *Engine) authFail(ev *event.Event, out []*Incident) []*Incident {
	d := &e.cfg.Detectors
	t := ev.Time
	n := ev.N()
	var acct *acctState
	stale := false
	if ev.Account != "" && ev.IP.IsValid() {
		acct = e.st.account(ev.Account)
		stale = e.knownOn(acct, e.network(ev.IP), t)
	}
	if !ev.IP.IsValid() {
		return out
	}
	k := event.NetKey(ev.IP)
	ipst := e.st.addr(k)
	s := ipst.fail()
	if ev.PwHash != "" {
		// The same wrong password again is a client retrying, not a new guess.
		if s.seenPassword(fnv32(ev.PwHash), t, d.CrackIP.LongWindow.D()) {
			n = 0
		} else {
			n = 1
		}
	}
	if ev.Account != "" {
		ia, isNew := s.accts.put(ev.Account, maxIPAccts, ipAcctLast)
		if isNew {
			s.accts.rekey(ev.Account, strings.Clone(ev.Account))
		}
		if t.Sub(ia.lastFail) > d.CrackIP.LongWindow.D() {
			ia.fails = 0
		}
		ia.fails += ev.N()
		ia.lastFail = t
		ia.stale = stale
	}
	if t.Sub(s.lastFail) > d.CrackIP.LongWindow.D() {
		s.firstFail = t
	}
	s.lastFail = t
	if stale && n > 0 {
		// A client with an old password from the account's usual network:
		// tolerated up to a budget, then counted like any other failure.
		over := s.stale.add(t, d.CrackIP.Window.D(), n) - d.CrackIP.StaleFailures
		n = max(0, min(n, over))
	}
	short := s.fails.add(t, d.CrackIP.Window.D(), n)
	long := s.failsLong.add(t, d.CrackIP.LongWindow.D(), n)
	logins := ipst.logins(t, d.CrackIP.LongWindow.D())

	if d.CrackIP.Enabled && !s.fired.quiet(dCrackIP, t) {
		bonus := logins * d.CrackIP.PerLoginBonus
		if short >= d.CrackIP.Failures+bonus || long >= d.CrackIP.LongFailures+bonus {
			ev2 := map[string]any{
				"failures":      short,
				"failures_long": long,
				"long_window":   d.CrackIP.LongWindow.D().String(),
				"threshold":     d.CrackIP.Failures + bonus,
				"first_failure": s.firstFail.UTC(),
				"last_failure":  t.UTC(),
				"accounts":      s.accountTable(t, d.CrackIP.LongWindow.D(), 10),
			}
			if logins > 0 {
				ev2["accounts_logged_in"] = logins
			}
			if ev.PwHash != "" {
				ev2["distinct_passwords"] = s.distinctPasswords(t, d.CrackIP.LongWindow.D())
			}
			out = append(out, e.newIncident(dCrackIP, &d.CrackIP.Common, ev, "", ev.IP, ev2))
			s.fired.set(dCrackIP, t.Add(d.CrackIP.Window.D()))
		}
	}
	if d.SprayIP.Enabled && ev.Account != "" && !s.fired.quiet(dSprayIP, t) {
		w := d.SprayIP.Window.D()
		failing := 0
		for _, ia := range s.accts.m {
			if !ia.stale && t.Sub(ia.lastFail) < w {
				failing++
			}
		}
		need := d.SprayIP.Accounts + ipst.logins(t, w)*d.SprayIP.PerLoginBonus
		if failing >= need {
			out = append(out, e.newIncident(dSprayIP, &d.SprayIP.Common, ev, "", ev.IP, map[string]any{
				"accounts":  failing,
				"threshold": need,
				"tried":     s.accountTable(t, w, 20),
			}))
			s.fired.set(dSprayIP, t.Add(w))
		}
	}
	// Only accounts seen logging in are protected: background noise that
	// tries "admin" or "test" from thousands of addresses is not news.
	if acct != nil && !stale && d.AccountAttacked.Enabled && len(acct.known.m) > 0 {
		w := d.AccountAttacked.Window.D()
		underAttack := acct.fired.quiet(dAccountAttacked, t)
		// While the account is known to be under attack and its table is
		// full, further attackers are only slowed down: the evidence has
		// enough rows and a large attack must not cost a scan per failure.
		f := acct.failIPs.get(k)
		if f == nil && len(acct.failIPs.m) >= maxFailIPs && !underAttack {
			acct.failIPs.prune(t.Add(-w), failIPLast)
		}
		if f == nil && (!underAttack || len(acct.failIPs.m) < maxFailIPs) {
			f, _ = acct.failIPs.put(k, maxFailIPs, failIPLast)
		}
		if f != nil {
			if t.Sub(f.last) > w {
				*f = failIP{first: t}
			}
			f.ip, f.last = ev.IP, t
			f.n += ev.N()
		}
		if underAttack && !e.cfg.DryRun {
			e.slow(ev.IP, acct.fired.end(dAccountAttacked)) // a new attacker of an account under attack
		}
		if !underAttack && acct.failIPs.count(t, w, failIPLast) >= d.AccountAttacked.IPs {
			out = append(out, e.newIncident(dAccountAttacked, &d.AccountAttacked.Common, ev, ev.Account, netip.Addr{}, map[string]any{
				"ips":       len(acct.failIPs.m),
				"threshold": d.AccountAttacked.IPs,
				"attackers": failTable(acct.failIPs.m),
				"note":      "the account is protected, not locked: attacking addresses are slowed down",
			}))
			acct.fired.set(dAccountAttacked, t.Add(w))
		}
	}
	return out
}

// attackedFrom is called on a successful login: if the account is under a
// distributed attack and this login comes from one of the attacking
// addresses, the password was found.
func (e *Engine) attackedFrom(a *acctState, ev *event.Event, out []*Incident) []*Incident {
	d := &e.cfg.Detectors.AccountAttacked
	if !d.Enabled || d.SuccessAction == "" || a.failIPs.m == nil {
		return out
	}
	w := d.Window.D()
	if len(a.failIPs.m) < d.IPs || !a.fired.quiet(dAccountAttacked, ev.Time) {
		return out
	}
	f := a.failIPs.get(event.NetKey(ev.IP))
	if f == nil || ev.Time.Sub(f.last) > w {
		return out
	}
	c := d.Common
	c.Action = d.SuccessAction
	inc := e.newIncident(dAccountAttacked, &c, ev, ev.Account, ev.IP, map[string]any{
		"ips":             len(a.failIPs.m),
		"attackers":       failTable(a.failIPs.m),
		"logged_in_from":  ev.IP.String(),
		"failures_before": f.n,
		"note":            "a successful login from an address that was guessing the password",
	})
	return append(out, inc)
}

// AccountRow is one row of an evidence table.
type AccountRow struct {
	Account  string `json:"account"`
	Failures int    `json:"failures"`
	Stale    bool   `json:"stale_password,omitempty"`
}

func (s *ipFail) accountTable(t time.Time, w time.Duration, top int) []AccountRow {
	var rows []AccountRow
	for a, ia := range s.accts.m {
		if ia.fails > 0 && t.Sub(ia.lastFail) < w {
			rows = append(rows, AccountRow{a, ia.fails, ia.stale})
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Failures != rows[j].Failures {
			return rows[i].Failures > rows[j].Failures
		}
		return rows[i].Account < rows[j].Account
	})
	if len(rows) > top {
		rows = rows[:top]
	}
	return rows
}

type failRow struct {
	IP       string    `json:"ip"`
	Failures int       `json:"failures"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
}

func failTable(m map[netip.Addr]*failIP) []failRow {
	rows := make([]failRow, 0, len(m))
	for _, f := range m {
		rows = append(rows, failRow{f.ip.String(), f.n, f.first.UTC(), f.last.UTC()})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].IP < rows[j].IP })
	return rows
}

// count returns how many entries were seen within w of t.
func (r *recent[K, V]) count(t time.Time, w time.Duration, last func(*V) time.Time) int {
	n := 0
	for _, v := range r.m {
		if t.Sub(last(v)) < w {
			n++
		}
	}
	return n
}

// seenPassword records a wrong password's hash and reports whether it was
// already tried from this address within w. The list is small and bounded:
// when full, the password seen longest ago makes room.
func (s *ipFail) seenPassword(h uint32, t time.Time, w time.Duration) bool {
	now := t.Unix()
	old := -1
	for i := range s.pwhashes {
		p := &s.pwhashes[i]
		if p.h == h {
			seen := now-p.t < int64(w/time.Second)
			p.t = now
			return seen
		}
		if old < 0 || p.t < s.pwhashes[old].t {
			old = i
		}
	}
	if len(s.pwhashes) < maxPwHashes {
		s.pwhashes = append(s.pwhashes, pwSeen{h, now})
	} else {
		s.pwhashes[old] = pwSeen{h, now}
	}
	return false
}

func (s *ipFail) distinctPasswords(t time.Time, w time.Duration) int {
	n := 0
	for _, p := range s.pwhashes {
		if t.Unix()-p.t < int64(w/time.Second) {
			n++
		}
	}
	return n
}

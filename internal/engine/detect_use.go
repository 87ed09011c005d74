package engine

import (
	"net/netip"
	"sort"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

func (e *Engine) authOK(ev *event.Event, out []*Incident) []*Incident {
	if ev.Account == "" || !ev.IP.IsValid() {
		return out
	}
	t := ev.Time
	e.st.addr(event.NetKey(ev.IP)).addLogin(ev.Account, t)
	a := e.st.account(ev.Account)
	out = e.attackedFrom(a, ev, out)
	switch ev.Protocol {
	case event.IMAP, event.POP3:
		out = e.mailbox(a, ev, out)
	default:
		out = e.use(ev, out)
	}
	return out
}

// remember records a successful use of the account from ip's network.
func (e *Engine) remember(a *acctState, account string, ip netip.Addr, t time.Time) {
	net := e.network(ip)
	k, isNew := a.known.put(net, maxKnownNets, knownLast)
	if isNew {
		k.first = t
		// Counted once per account and network: a repeat adds nothing.
		e.pop.add(net, account, e.cfg.Networks.CommonAccounts)
	}
	k.last = t
}

// isKnown reports whether net was used by the account before the window
// that is being counted (and recently enough to still be trusted).
func (e *Engine) isKnown(a *acctState, net netip.Prefix, t time.Time, w time.Duration) bool {
	k := a.known.get(net)
	return k != nil && k.first.Before(t.Add(-w)) && t.Sub(k.last) < e.cfg.Detectors.Botnet.KnownFor.D()
}

// track updates the per-network use table of an account for window w.
func (e *Engine) track(a *acctState, nets *recent[netip.Prefix, netUse], ev *event.Event, w time.Duration) {
	net := e.network(ev.IP)
	nu, isNew := nets.put(net, maxNets, netUseLast)
	if isNew || ev.Time.Sub(nu.last) > w {
		*nu = netUse{first: ev.Time, known: e.isKnown(a, net, ev.Time, w)}
	}
	nu.ip, nu.last = ev.IP, ev.Time
	if ev.Kind == event.Message {
		nu.messages++
	} else {
		nu.logins++
	}
	if len(nets.m) > maxNets/2 {
		nets.prune(ev.Time.Add(-w), netUseLast)
	}
}

// newNets counts networks used within w that were not known for the
// account before and are not common access networks of other accounts, and
// the distinct wide blocks (IPv4 /8, IPv6 /16) they span.
func (e *Engine) newNets(account string, nets *recent[netip.Prefix, netUse], t time.Time, w time.Duration) (n, spread int) {
	var blocks [32]uint16
	nb := 0
	for p, nu := range nets.m {
		if nu.known || t.Sub(nu.last) >= w || e.pop.common(p, account, e.cfg.Networks.CommonAccounts) {
			continue
		}
		n++
		b := p.Addr().AsSlice()
		blk := uint16(b[0])
		if len(b) == 16 {
			blk = uint16(b[0])<<8 | uint16(b[1]) | 1<<15
		}
		seen := false
		for _, x := range blocks[:nb] {
			if x == blk {
				seen = true
				break
			}
		}
		if !seen {
			spread++
			if nb < len(blocks) {
				blocks[nb] = blk
				nb++
			}
		}
	}
	return n, spread
}

// use is an authenticated SMTP use of an account (a login or a message):
// the botnet detector.
func (e *Engine) use(ev *event.Event, out []*Incident) []*Incident {
	if !ev.IP.IsValid() {
		return out
	}
	d := &e.cfg.Detectors.Botnet
	a := e.st.account(ev.Account)
	w := d.Window.D()
	e.track(a, &a.smtpNets, ev, w)
	e.remember(a, ev.Account, ev.IP, ev.Time)
	if !d.Enabled || a.fired.quiet(dBotnet, ev.Time) || len(a.smtpNets.m) < min(d.Networks, d.Burst) {
		return out
	}
	n, spread := e.newNets(ev.Account, &a.smtpNets, ev.Time, w)
	burst, bspread := e.newNets(ev.Account, &a.smtpNets, ev.Time, d.BurstWindow.D())
	minSpread := e.cfg.Networks.MinSpread
	var why string
	switch {
	case n >= d.Networks && spread >= minSpread:
		why = "networks"
	case burst >= d.Burst && bspread >= minSpread:
		why = "burst"
	default:
		return out
	}
	evd := map[string]any{
		"networks":     n,
		"threshold":    d.Networks,
		"burst":        burst,
		"burst_window": d.BurstWindow.D().String(),

		"spread":  spread,
		"reason":  why,
		"ips":     netTable(&a.smtpNets, ev.Time, w),
		"last_ip": ev.IP.String(),
		"last_at": ev.Time.UTC(),
	}
	evd["burst_threshold"] = d.Burst
	out = append(out, e.newIncident(dBotnet, &d.Common, ev, ev.Account, ev.IP, evd))
	a.fired.set(dBotnet, ev.Time.Add(w))
	e.markAnomalous(a, ev.Account, ev.Time)
	return out
}

// mailbox is an IMAP/POP login: the harvest detector.
func (e *Engine) mailbox(a *acctState, ev *event.Event, out []*Incident) []*Incident {
	d := &e.cfg.Detectors.Harvest
	e.track(a, &a.mboxNets, ev, d.Window.D())
	e.remember(a, ev.Account, ev.IP, ev.Time)
	return e.checkHarvest(a, ev, out)
}

func (e *Engine) checkHarvest(a *acctState, ev *event.Event, out []*Incident) []*Incident {
	d := &e.cfg.Detectors.Harvest
	if !d.Enabled || len(a.mboxNets.m) < d.Networks || a.fired.quiet(dHarvest, ev.Time) {
		return out
	}
	w := d.Window.D()
	n, spread := e.newNets(ev.Account, &a.mboxNets, ev.Time, w)
	if n < d.Networks || spread < e.cfg.Networks.MinSpread {
		return out
	}
	sent := a.msgsWin.sumAt(ev.Time, w)
	if sent < d.Messages {
		return out
	}
	out = append(out, e.newIncident(dHarvest, &d.Common, ev, ev.Account, ev.IP, map[string]any{
		"networks":      n,
		"threshold":     d.Networks,
		"spread":        spread,
		"mailbox_ips":   netTable(&a.mboxNets, ev.Time, w),
		"smtp_messages": sent,
		"smtp_ips":      netTable(&a.smtpNets, ev.Time, w),
	}))
	a.fired.set(dHarvest, ev.Time.Add(w))
	return out
}

// netRow is one row of the per-account address table (the admins' "IP => n").
type netRow struct {
	IP       string    `json:"ip"`
	Network  string    `json:"network"`
	Messages int       `json:"messages"`
	Logins   int       `json:"logins"`
	First    time.Time `json:"first"`
	Last     time.Time `json:"last"`
	Known    bool      `json:"known,omitempty"`
}

func netTable(nets *recent[netip.Prefix, netUse], t time.Time, w time.Duration) []netRow {
	rows := []netRow{}
	for p, nu := range nets.m {
		if t.Sub(nu.last) >= w {
			continue
		}
		rows = append(rows, netRow{nu.ip.String(), p.String(), nu.messages, nu.logins, nu.first.UTC(), nu.last.UTC(), nu.known})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].IP < rows[j].IP })
	return rows
}

// popularity remembers, per network, a few of the distinct accounts that
// logged in from it. A network many of your users come from (a mobile
// carrier's NAT pool, a large ISP) is no sign of a stolen password; the
// networks of a botnet are mostly ones none of your users use.
type popularity struct {
	m   map[netip.Prefix]*popEntry
	max int
}

type popEntry struct {
	n uint8
	h [15]uint32 // distinct account hashes, up to the configured count
}

func (p *popularity) add(net netip.Prefix, account string, need int) {
	if need <= 0 {
		return
	}
	e := p.m[net]
	if e == nil {
		if len(p.m) >= p.max {
			for k := range p.m { // full: forget one network (map order is random)
				delete(p.m, k)
				break
			}
		}
		e = &popEntry{}
		p.m[net] = e
	}
	if int(e.n) > need || int(e.n) >= len(e.h) {
		return
	}
	h := fnv32(account)
	for _, x := range e.h[:e.n] {
		if x == h {
			return
		}
	}
	e.h[e.n] = h
	e.n++
}

// common reports whether at least need accounts other than account have
// logged in from net.
func (p *popularity) common(net netip.Prefix, account string, need int) bool {
	if need <= 0 {
		return false
	}
	e := p.m[net]
	if e == nil || int(e.n) < need {
		return false
	}
	h := fnv32(account)
	others := int(e.n)
	for _, x := range e.h[:e.n] {
		if x == h {
			others--
		}
	}
	return others >= need
}

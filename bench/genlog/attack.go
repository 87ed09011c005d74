package main

import (
	"math"
	"net/netip"
	"strings"
)

// A campaign is one injected attack (or, for "stale_client", a benign
// source of failures that detectors must not punish). Campaigns start when
// the log reaches a given share of its line budget, so even a short log
// carries every kind.
type campaign struct {
	kind     string
	legit    bool
	at       float64 // share of the line budget at which it starts
	durMin   float64
	perMin   float64 // jobs per minute while active
	start    int64
	end      int64
	h        *host
	svc      int
	ip       netip.Addr
	ipName   string
	helo     string
	ips      []netip.Addr
	acct     *account
	users    []string
	burstMin int64 // botnet: a minute of near-simultaneous logins, -1 if none
	next     int
	total    int // spamware: messages to send; bad_rcpt: rejections to cause

	jobs, attempts, logins, messages, rcpts, rejects int
	usedIPs                                          int
}

// campaignsPerDay is how often each kind happens in a day of this
// population's traffic.
var campaignsPerDay = []struct {
	kind string
	n    float64
}{
	{"brute_force", 6},
	{"password_spray", 2},
	{"distributed_attack", 1.5},
	{"botnet", 2},
	{"spamware", 1},
	{"bad_rcpt", 1},
	{"dir_harvest", 2},
	{"stale_client", 4},
}

// linesPerDay is the measured volume of a weekday with the default
// population; it only sizes the number of campaigns.
const linesPerDay = 2_700_000

var attackHelos = []string{"User", "ylmf-pc", "WIN-CLJ1B0GQ6JP", "localhost", "PC", "USER-PC", "mail", "[127.0.0.1]", "DESKTOP-HGBVM7R"}

var dictUsers = strings.Fields("admin info test office sales support contact webmaster postmaster user mail marketing service billing noreply root hr kontakt buchhaltung backup")

func (g *gen) planCampaigns() {
	days := float64(g.cfg.lines) / float64(linesPerDay) * float64(defaultAccounts) / float64(max(g.cfg.accounts, 1))
	for _, k := range campaignsPerDay {
		n := int(math.Round(k.n * days))
		if n < 1 {
			n = 1
		}
		for i := 0; i < n; i++ {
			c := &campaign{kind: k.kind, at: 0.02 + 0.86*g.r.Float64(), burstMin: -1}
			g.setupCampaign(c)
			g.campaigns = append(g.campaigns, c)
		}
	}
	// Activation order.
	for i := 1; i < len(g.campaigns); i++ {
		for j := i; j > 0 && g.campaigns[j].at < g.campaigns[j-1].at; j-- {
			g.campaigns[j], g.campaigns[j-1] = g.campaigns[j-1], g.campaigns[j]
		}
	}
}

func (g *gen) randomAccount(srv int, need uint16) *account {
	ids := g.byServer[srv]
	for {
		a := &g.accts[ids[g.r.IntN(len(ids))]]
		if a.flags&need == need && !a.has(fBulk) {
			return a
		}
	}
}

func (g *gen) attackerIP() (netip.Addr, string) {
	hs := g.r.Uint64()
	ip := publicV4(hs)
	if hs%5 == 0 {
		return ip, g.homes[hs%uint64(len(g.homes))].rdns(ip, hs)
	}
	return ip, ""
}

func (g *gen) setupCampaign(c *campaign) {
	srv := 0
	if g.r.IntN(100) < 30 {
		srv = 1
	}
	c.h = g.hosts[srv]
	c.ip, c.ipName = g.attackerIP()
	c.helo = pick(g.r, attackHelos)
	switch c.kind {
	case "brute_force":
		c.svc = []int{svcSMTP, svcSub, svcSMTPS, svcIMAP, svcIMAP, svcPOP}[g.r.IntN(6)]
		c.durMin = 20 + 160*g.r.Float64()
		c.perMin = 1 + 5*g.r.Float64() // connections per minute, 1-5 attempts each
		if g.r.IntN(2) == 0 {
			a := g.randomAccount(srv, 0) // a targeted mailbox
			c.acct = a
			c.users = []string{a.addr}
		} else {
			for _, u := range dictUsers {
				c.users = append(c.users, u)
				for _, d := range c.h.domains[:2] {
					c.users = append(c.users, u+"@"+d)
				}
			}
		}
	case "password_spray":
		c.svc = []int{svcSub, svcIMAP, svcIMAP, svcPOP}[g.r.IntN(4)]
		c.durMin = 60 + 300*g.r.Float64()
		n := 100 + g.r.IntN(700)
		c.perMin = float64(n) / c.durMin
		for i := 0; i < n; i++ {
			c.users = append(c.users, g.randomAccount(srv, 0).addr)
		}
		k := 1 + g.r.IntN(3)
		for i := 0; i < k; i++ {
			ip, _ := g.attackerIP()
			c.ips = append(c.ips, ip)
		}
	case "distributed_attack":
		c.svc = []int{svcSub, svcIMAP, svcIMAP}[g.r.IntN(3)]
		c.acct = g.randomAccount(srv, 0)
		c.users = []string{c.acct.addr}
		n := 50 + g.r.IntN(250)
		for i := 0; i < n; i++ {
			ip, _ := g.attackerIP()
			c.ips = append(c.ips, ip)
		}
		c.durMin = 60 + 180*g.r.Float64()
		c.perMin = float64(n) * 1.8 / c.durMin
	case "botnet":
		c.acct = g.randomAccount(srv, 0)
		n := 20 + g.r.IntN(41)
		for i := 0; i < n; i++ {
			hs := g.r.Uint64()
			if hs%9 == 0 {
				c.ips = append(c.ips, v6(0x2000_0000_0000_0000|hs>>4&0x0fff_ffff_ffff_0000, g.r.Uint64()))
			} else {
				c.ips = append(c.ips, publicV4(hs))
			}
		}
		c.durMin = 60 + 300*g.r.Float64()
		c.perMin = float64(n) * 1.25 / c.durMin
		if g.r.IntN(3) > 0 {
			c.burstMin = int64(g.r.IntN(int(c.durMin)))
		}
	case "spamware":
		c.acct = g.randomAccount(srv, fDesktop)
		c.total = 300 + g.r.IntN(1200)
		c.durMin = 60 + 180*g.r.Float64()
		c.perMin = float64(c.total) / 12 / c.durMin
	case "bad_rcpt":
		c.acct = g.randomAccount(srv, 0)
		c.total = 150 + g.r.IntN(450)
		c.durMin = 40 + 40*g.r.Float64()
		c.perMin = float64(c.total) / 17 / c.durMin
	case "dir_harvest":
		c.durMin = 20 + 40*g.r.Float64()
		c.perMin = 1 + 3*g.r.Float64()
	case "stale_client":
		c.legit = true
		c.acct = g.randomAccount(srv, fPhone)
		c.h = g.hosts[c.acct.srv]
		c.durMin = 120 + 1600*g.r.Float64()
		c.perMin = 1 / (5 + 10*g.r.Float64())
	}
}

// activate starts campaigns whose share of the line budget has been reached.
func (g *gen) activate(m0 int64) {
	for g.nextCamp < len(g.campaigns) && float64(g.written) >= g.campaigns[g.nextCamp].at*float64(g.cfg.lines) {
		c := g.campaigns[g.nextCamp]
		g.nextCamp++
		c.start = m0 + g.r.Int64N(60_000)
		c.end = c.start + int64(c.durMin*60_000)
		if c.burstMin >= 0 {
			c.burstMin = c.start + c.burstMin*60_000
		}
		if c.kind == "spamware" {
			cl := g.clientOf(c.acct, devDesktop, c.start)
			c.ip, c.ipName, c.helo = cl.ip, cl.name, cl.helo
		}
		if c.kind == "bad_rcpt" && g.r.IntN(2) == 0 {
			cl := g.clientOf(c.acct, devDesktop, c.start)
			c.ip, c.ipName, c.helo = cl.ip, cl.name, cl.helo
		}
		g.active = append(g.active, c)
	}
}

func (g *gen) planActive(m0, m1 int64) {
	keep := g.active[:0]
	for _, c := range g.active {
		if c.end <= m0 || (len(c.ips) > 0 && c.next >= len(c.ips) && c.kind == "botnet") || (c.total > 0 && c.messages+c.rejects >= c.total) {
			continue
		}
		keep = append(keep, c)
		from := max(m0, c.start)
		to := min(m1, c.end)
		if to <= from {
			continue
		}
		n := g.poisson(c.perMin * float64(to-from) / 60_000)
		for i := 0; i < n; i++ {
			g.jobs = append(g.jobs, job{t: from + g.r.Int64N(to-from), kind: jCampaign, c: c})
		}
		if c.burstMin >= m0 && c.burstMin < m1 {
			k := 12 + g.r.IntN(14)
			for i := 0; i < k; i++ {
				g.jobs = append(g.jobs, job{t: c.burstMin + g.r.Int64N(15_000), kind: jCampaign, c: c})
			}
		}
	}
	g.active = keep
}

func (g *gen) exists(user string) bool {
	_, ok := g.addrs[user]
	return ok
}

// runCampaign performs one step of a campaign at t.
func (g *gen) runCampaign(t int64, c *campaign) {
	c.jobs++
	h := c.h
	switch c.kind {
	case "brute_force":
		k := 1 + g.r.IntN(5)
		users := make([]string, k)
		for i := range users {
			if c.acct != nil {
				users[i] = c.acct.addr
			} else {
				users[i] = c.users[c.next%len(c.users)]
				c.next++
			}
		}
		g.authAttack(t, h, c.svc, c.ip, c.ipName, c.helo, users)
		c.attempts += k
	case "password_spray":
		ip := c.ips[c.next%len(c.ips)]
		u := c.users[c.next%len(c.users)]
		c.next++
		k := 1
		if g.r.IntN(4) == 0 {
			k = 2
		}
		users := []string{u, u}[:k]
		g.authAttack(t, h, c.svc, ip, "", c.helo, users)
		c.attempts += k
	case "distributed_attack":
		i := g.r.IntN(min(c.next+3, len(c.ips)))
		if i >= c.next {
			c.next = i + 1
		}
		k := 1 + g.r.IntN(2)
		users := []string{c.acct.addr, c.acct.addr}[:k]
		g.authAttack(t, h, c.svc, c.ips[i], "", pick(g.r, attackHelos), users)
		c.attempts += k
		c.usedIPs = c.next
	case "botnet":
		if c.next >= len(c.ips) {
			return
		}
		ip := c.ips[c.next]
		c.next++
		c.usedIPs = c.next
		helo := pick(g.r, attackHelos)
		a := c.acct
		if g.r.IntN(5) == 0 {
			// Harvesting: read the mailbox's headers over IMAP first.
			cl := client{ip: ip, helo: helo}
			g.imapLogin(t, h, a, svcIMAP, cl, false, 0, 20_000+g.r.Int64N(120_000), true)
			c.logins++
			t += 30_000 + g.r.Int64N(600_000)
		}
		n := 1 + g.r.IntN(3)
		msgs := make([]message, n)
		for i := range msgs {
			rs := make([]string, 20+g.r.IntN(61))
			for j := range rs {
				rs[j] = g.externalRcpt()
			}
			msgs[i] = message{from: a.addr, rcpts: rs, size: 3000 + g.r.IntN(9000), msgid: g.randStr(hexLower, 20) + "@" + a.addr[strings.IndexByte(a.addr, '@')+1:], bounceP: 0.15}
			c.rcpts += len(rs)
		}
		c.messages += n
		c.logins++
		cl := client{ip: ip, helo: helo}
		if h.exim {
			g.eximSession(t, h, cl, 1024+g.r.IntN(64000), a.addr, "dovecot_login", 0, msgs)
		} else {
			g.postfixSession(t, h, []int{svcSub, svcSMTPS}[g.r.IntN(2)], cl, a.addr, "LOGIN", 0, msgs)
		}
	case "spamware":
		a := c.acct
		n := 1 + g.r.IntN(24)
		if n > c.total-c.messages {
			n = c.total - c.messages
		}
		if n <= 0 {
			return
		}
		msgs := make([]message, n)
		for i := range msgs {
			rs := make([]string, 1+g.r.IntN(5))
			for j := range rs {
				rs[j] = g.externalRcpt()
			}
			msgs[i] = message{from: a.addr, rcpts: rs, size: 2500 + g.r.IntN(6000), msgid: g.randStr(hexLower, 16) + "@" + a.addr[strings.IndexByte(a.addr, '@')+1:], bounceP: 0.15}
			c.rcpts += len(rs)
		}
		c.messages += n
		c.logins++
		cl := client{ip: c.ip, name: c.ipName, helo: c.helo}
		g.smtpAuthed(t, h, a, cl, msgs)
	case "bad_rcpt":
		a := c.acct
		nb := 5 + g.r.IntN(26)
		msg := message{from: a.addr, size: 4000 + g.r.IntN(20000), msgid: g.randStr(hexLower, 24) + "@" + a.addr[strings.IndexByte(a.addr, '@')+1:], bounceP: 0.05}
		for i := 0; i < nb; i++ {
			msg.rejects = append(msg.rejects, g.unknownLocal(h))
		}
		for i := g.r.IntN(4); i > 0; i-- {
			msg.rcpts = append(msg.rcpts, g.externalRcpt())
		}
		c.rejects += nb
		c.rcpts += len(msg.rcpts)
		if len(msg.rcpts) > 0 {
			c.messages++
		}
		c.logins++
		cl := client{ip: c.ip, name: c.ipName, helo: c.helo}
		g.smtpAuthed(t, h, a, cl, []message{msg})
	case "dir_harvest":
		n := 10 + g.r.IntN(11)
		c.rejects += g.harvestConn(t, h, c.ip, c.ipName, c.helo, n)
	case "stale_client":
		a := c.acct
		cl := g.clientOf(a, devPhone, t)
		g.imapFailed(t, h, svcIMAP, a.addr, cl.ip, 1, false)
		c.attempts++
	}
}

// smtpAuthed sends msgs as account a from cl through a's server.
func (g *gen) smtpAuthed(t int64, h *host, a *account, cl client, msgs []message) {
	if h.exim {
		g.eximSession(t, h, cl, 1024+g.r.IntN(64000), a.addr, "dovecot_plain", 0, msgs)
		return
	}
	g.postfixSession(t, h, svcSub, cl, a.addr, "PLAIN", 0, msgs)
}

// authAttack is one attacker connection trying passwords for users.
func (g *gen) authAttack(t int64, h *host, svc int, ip netip.Addr, name, helo string, users []string) {
	switch {
	case svc == svcIMAP || svc == svcPOP:
		// Dovecot lets a client retry on one connection; bots mostly try one
		// user per connection.
		g.imapFailed(t, h, svc, users[0], ip, len(users), !g.exists(users[0]))
	case h.exim:
		pid := h.newPID(g.r)
		port := 1024 + g.r.IntN(64000)
		tt := t + 300 + g.r.Int64N(700)
		auth := []string{"dovecot_login", "dovecot_plain"}[g.r.IntN(2)]
		for _, u := range users {
			g.dovecotAuthFail(tt, h, u, ip, "", !g.exists(u))
			tt += 2000
			g.beginExim(tt, h, pid).s(auth).s(" authenticator failed for ")
			if name != "" {
				g.s(name).c(' ')
			}
			g.c('(').s(helo).s(") [").ip(ip).s("]:").n(port).s(": 535 Incorrect authentication data (set_id=").s(u).s(")").fail(f2bExim).end()
			tt += 200 + g.r.Int64N(1500)
		}
		if g.r.IntN(2) == 0 {
			g.beginExim(tt, h, pid).s("unexpected disconnection while reading SMTP command from ")
			if name != "" {
				g.s(name).c(' ')
			}
			g.c('(').s(helo).s(") [").ip(ip).s("]:").n(port).s(" D=").n(int((tt - t) / 1000)).c('s').end()
		}
	default:
		prog := smtpdProg(svc)
		dur := int64(len(users))*4000 + 2000
		pid := h.smtpdPool(svc).acquire(h, g.r, t, t+dur)
		g.begin(t, h, prog, pid).s("connect from ").hostip(name, ip).end()
		tt := t + 200 + g.r.Int64N(500)
		if svc != svcSMTP {
			g.begin(tt, h, prog, pid).s("Anonymous TLS connection established from ").hostip(name, ip).s(": ").s(tlsIn).end()
		}
		method := "LOGIN"
		if g.r.IntN(4) == 0 {
			method = "PLAIN"
		}
		for _, u := range users {
			tt += 100 + g.r.Int64N(700)
			g.dovecotAuthFail(tt, h, u, ip, "", !g.exists(u))
			tt += 2000
			g.begin(tt, h, prog, pid).s("warning: ").hostip(name, ip).s(": SASL ").s(method).s(" authentication failed: ")
			if method == "LOGIN" {
				g.s("UGFzc3dvcmQ6")
			} else {
				g.s("authentication failure")
			}
			g.s(", sasl_username=").s(u).fail(f2bPostfix).end()
		}
		tt += 100 + g.r.Int64N(400)
		ehlo := " ehlo=1"
		cmds := 1
		if svc == svcSub {
			ehlo = " ehlo=2 starttls=1"
			cmds = 3
		}
		if g.r.IntN(2) == 0 {
			g.begin(tt, h, prog, pid).s("lost connection after AUTH from ").hostip(name, ip).end()
			g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(ehlo).s(" auth=0/").n(len(users)).s(" commands=").n(cmds).c('/').n(cmds + len(users)).end()
			return
		}
		g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(ehlo).s(" auth=0/").n(len(users)).s(" quit=1 commands=").n(cmds + 1).c('/').n(cmds + 1 + len(users)).end()
	}
}

// harvestConn is one directory-harvest connection on port 25: n recipients
// tried, all unknown. It returns the number of rejections written.
func (g *gen) harvestConn(t int64, h *host, ip netip.Addr, name, helo string, n int) int {
	from := strings.ToLower(g.randStr(b62, 8)) + "@" + strings.ToLower(g.randStr(b62, 7)) + ".com"
	if h.exim {
		pid := h.newPID(g.r)
		port := 1024 + g.r.IntN(64000)
		tt := t + 500
		for i := 0; i < n; i++ {
			tt += 100 + g.r.Int64N(400)
			g.beginExim(tt, h, pid).eximHost(name, helo, ip, port).s(" F=<").s(from).s("> rejected RCPT <").s(g.unknownLocal(h)).s(">: ")
			if g.r.IntN(2) == 0 {
				g.s("Unknown user")
			} else {
				g.s("Unrouteable address")
			}
			g.fail(f2bExim).end()
		}
		return n
	}
	prog := "postfix/smtpd"
	n = min(n, 20)
	pid := h.smtpd.acquire(h, g.r, t, t+int64(n)*600+2000)
	g.begin(t, h, prog, pid).s("connect from ").hostip(name, ip).end()
	tt := t + 500
	for i := 0; i < n; i++ {
		tt += 100 + g.r.Int64N(400)
		to := g.unknownLocal(h)
		g.begin(tt, h, prog, pid).s("NOQUEUE: reject: RCPT from ").hostip(name, ip).s(": 550 5.1.1 <").s(to).s(">: Recipient address rejected: User unknown in virtual mailbox table; from=<").s(from).s("> to=<").s(to).s("> proto=ESMTP helo=<").s(helo).s(">").fail(f2bPostfix).end()
	}
	tt += 50
	if n == 20 {
		g.begin(tt, h, prog, pid).s("too many errors after RCPT from ").hostip(name, ip).fail(f2bPostfix).end()
		g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(" ehlo=1 mail=1 rcpt=0/").n(n).s(" commands=2/").n(n + 2).end()
		return n
	}
	g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(" ehlo=1 mail=1 rcpt=0/").n(n).s(" quit=1 commands=3/").n(n + 3).end()
	return n
}

// noise is the Internet's constant background of password guessing: many
// addresses, a few attempts each, common user names.
func (g *gen) noise(t int64) {
	i := int(float64(len(g.badIPs)) * math.Pow(g.r.Float64(), 3))
	ip := g.badIPs[i]
	h := g.hosts[0]
	if g.r.IntN(100) < 30 {
		h = g.hosts[1]
	}
	u := pick(g.r, dictUsers)
	switch g.r.IntN(3) {
	case 0:
		u += "@" + h.domains[g.r.IntN(min(len(h.domains), 4))]
	case 1:
		srv := g.byServer[h.idx]
		u = g.accts[srv[g.r.IntN(len(srv))]].addr
	}
	svc := []int{svcSMTP, svcSub, svcSMTPS, svcIMAP, svcPOP}[g.r.IntN(5)]
	k := 1 + g.r.IntN(2)
	users := []string{u, u}[:k]
	g.authAttack(t, h, svc, ip, "", pick(g.r, attackHelos), users)
	g.count.noise += k
}

func (c *campaign) truth() map[string]any {
	m := map[string]any{
		"kind":   c.kind,
		"server": c.h.name,
		"start":  msTime(c.start),
		"end":    msTime(c.end),
		"jobs":   c.jobs,
	}
	if c.legit {
		m["benign"] = true
	}
	switch c.kind {
	case "brute_force", "password_spray", "distributed_attack", "stale_client":
		m["service"] = svcName(c.svc, c.h)
		m["attempts"] = c.attempts
	}
	if c.acct != nil {
		m["account"] = c.acct.addr
	}
	switch c.kind {
	case "brute_force", "dir_harvest", "spamware":
		m["ip"] = c.ip.String()
	case "bad_rcpt":
		m["ip"] = c.ip.String()
		m["rejected_rcpts"] = c.rejects
		m["messages"] = c.messages
	case "password_spray":
		ips := make([]string, len(c.ips))
		for i, ip := range c.ips {
			ips[i] = ip.String()
		}
		m["ips"] = ips
		m["accounts"] = min(c.next, len(c.users))
	case "distributed_attack":
		m["ips"] = c.usedIPs
	case "botnet":
		ips := make([]string, c.usedIPs)
		for i := range ips {
			ips[i] = c.ips[i].String()
		}
		m["ips"] = ips
		m["messages"] = c.messages
		m["rcpts"] = c.rcpts
		m["sessions"] = c.logins
	}
	switch c.kind {
	case "spamware":
		m["messages"] = c.messages
		m["rcpts"] = c.rcpts
		m["sessions"] = c.logins
	case "dir_harvest":
		m["rejected_rcpts"] = c.rejects
	case "stale_client":
		m["service"] = "imap"
	}
	return m
}

func svcName(svc int, h *host) string {
	if h.exim && svc <= svcSMTPS {
		return "exim"
	}
	return []string{"smtp", "submission", "smtps", "imap", "pop3"}[svc]
}

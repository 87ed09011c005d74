package main

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Services a client can reach.
const (
	svcSMTP  = iota // port 25
	svcSub          // 587, STARTTLS
	svcSMTPS        // 465, implicit TLS
	svcIMAP
	svcPOP
)

// Devices an account uses.
const (
	devDesktop = iota
	devPhone
	devWebmail
)

const hourMS = 3_600_000
const dayMS = 86_400_000

type client struct {
	ip   netip.Addr
	name string // reverse DNS, "" when none
	helo string
}

// Where an account's device is at time t, and what it looks like.

func (g *gen) homeIP(a *account, dev int, t int64) (netip.Addr, string) {
	p := &g.homes[a.isp]
	if a.has(fV6) {
		hi := p.v6 | (hash(a.id, 1)&0xffffff)<<8
		lo := hash(a.id, uint64(dev), uint64(t/dayMS))
		return v6(hi, lo), ""
	}
	epoch := uint64(0)
	if !a.has(fStaticHome) {
		epoch = uint64((t+int64(a.id%dayMS))/dayMS) + 1
	}
	h := hash(a.id, epoch, 2)
	ip := in4(p.v4[h%uint64(len(p.v4))], 16, hash(a.id, epoch, 3))
	return ip, p.rdns(ip, h)
}

func (g *gen) mobileIP(a *account, t int64) netip.Addr {
	p := &g.mobiles[a.carrier]
	epoch := uint64((t + int64(a.id%(2*hourMS))) / (2 * hourMS))
	if a.has(fPhoneV6) {
		return v6(p.v6|hash(a.id, epoch, 5)&0xffffffff, hash(a.id, epoch, 6))
	}
	h := hash(a.id, epoch, 7)
	return in4(p.v4[h%uint64(len(p.v4))], 20, hash(a.id, epoch, 8))
}

func (g *gen) workHours(t int64) bool {
	g.stamp.ensure(t / 1000)
	wd := g.stamp.wday
	h := t % dayMS / hourMS
	return wd != 0 && wd != 6 && h >= 8 && h < 18
}

// away reports whether a phone is on the mobile network rather than home wifi.
func (g *gen) away(a *account, t int64) bool {
	h := t % dayMS / hourMS
	p := uint64(10)
	switch {
	case h >= 7 && h < 19:
		p = 55
	case h >= 19 && h < 23:
		p = 30
	}
	return hash(a.id, uint64(t/hourMS), 9)%100 < p
}

func (g *gen) clientOf(a *account, dev int, t int64) client {
	var c client
	switch dev {
	case devPhone:
		if g.away(a, t) {
			c.ip = g.mobileIP(a, t)
		} else {
			c.ip, c.name = g.homeIP(a, devPhone, t)
		}
		if a.has(fIPhone) {
			c.helo = "smtpclient.apple"
		} else {
			c.helo = "[127.0.0.1]"
		}
	default:
		if a.office >= 0 && g.workHours(t) {
			o := g.offices[a.office]
			c.ip, c.name = o.ip, o.rdns
		} else {
			c.ip, c.name = g.homeIP(a, devDesktop, t)
		}
		switch {
		case a.has(fOutlook):
			c.helo = "DESKTOP-" + strings.ToUpper(strconv.FormatUint(hash(a.id, 11)%78364164096, 36))
		case a.has(fAppleMail):
			c.helo = "smtpclient.apple"
		default:
			c.helo = desktopHelos[a.id%uint64(len(desktopHelos))]
		}
	}
	return c
}

func (g *gen) pickDevice(a *account) int {
	switch {
	case a.has(fPhone) && a.has(fDesktop|fPOP):
		if g.r.IntN(100) < 55 {
			return devPhone
		}
		return devDesktop
	case a.has(fPhone):
		return devPhone
	}
	return devDesktop
}

// Identifiers.

const hexUpper = "0123456789ABCDEF"
const hexLower = "0123456789abcdef"
const b62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

func (g *gen) randStr(alphabet string, n int) string {
	var b [48]byte
	x := g.r.Uint64()
	for i := 0; i < n; i++ {
		if i%10 == 9 {
			x = g.r.Uint64()
		}
		b[i] = alphabet[x%uint64(len(alphabet))]
		x /= uint64(len(alphabet))
	}
	return string(b[:n])
}

// qid is a Postfix short queue id.
func (g *gen) qid() string {
	n := 10 + g.r.IntN(2)
	s := g.randStr(hexUpper, n)
	if s[0] == '0' {
		s = "4" + s[1:]
	}
	return s
}

// eximID is a pre-4.97 Exim message id: base-62 time, pid, sub-second.
func eximID(t int64, pid int) string {
	var b [16]byte
	enc := func(dst []byte, v uint64) {
		for i := len(dst) - 1; i >= 0; i-- {
			dst[i] = b62[v%62]
			v /= 62
		}
	}
	enc(b[0:6], uint64(t/1000))
	b[6] = '-'
	enc(b[7:13], uint64(pid))
	b[13] = '-'
	enc(b[14:16], uint64(t%1000*3844/1000))
	return string(b[:])
}

func (g *gen) session() string { return g.randStr(b64, 16) }

func (g *gen) msgID(a *account, dev int) string {
	dom := a.addr[strings.IndexByte(a.addr, '@')+1:]
	switch {
	case dev == devWebmail:
		return g.randStr(hexLower, 32) + "@" + dom
	case dev == devPhone && a.has(fIPhone):
		u := strings.ToUpper(g.randStr(hexLower, 32))
		return u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:] + "@" + dom
	case dev == devPhone:
		return g.randStr(hexLower, 24) + "." + strconv.FormatInt(1_700_000_000_000+g.r.Int64N(1e11), 10) + "@" + dom
	case a.has(fOutlook):
		return "000001db" + g.randStr(hexLower, 4) + "$" + g.randStr(hexLower, 8) + "$" + g.randStr(hexLower, 8) + "$@" + dom
	case a.has(fAppleMail):
		u := strings.ToUpper(g.randStr(hexLower, 32))
		return u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:] + "@" + dom
	}
	u := g.randStr(hexLower, 32)
	return u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:] + "@" + dom
}

func (g *gen) inboundMsgID(domain string) string {
	switch domain {
	case "gmail.com":
		return "CA" + g.randStr(b62, 22) + "+" + g.randStr(b62, 18) + "@mail.gmail.com"
	case "outlook.com":
		return "AM9PR0" + strconv.Itoa(1+g.r.IntN(9)) + "MB" + g.randStr(hexUpper, 7) + g.randStr(hexUpper, 32) + "@AM9PR03MB1234.eurprd03.prod.outlook.com"
	case "amazonses.com":
		return "0102019" + g.randStr(hexLower, 9) + "-" + g.randStr(hexLower, 8) + "-" + g.randStr(hexLower, 4) + "-" + g.randStr(hexLower, 4) + "-" + g.randStr(hexLower, 12) + "-000000@eu-west-1.amazonses.com"
	case "":
		return strconv.FormatInt(20261100000000+g.r.Int64N(99999999), 10) + "." + g.randStr(hexUpper, 8) + "@" + pick(g.r, businessWords) + "-" + pick(g.r, businessKinds) + ".example"
	}
	return "trinity-" + g.randStr(hexLower, 8) + "-" + g.randStr(hexLower, 4) + "-" + g.randStr(hexLower, 4) + "-" + g.randStr(hexLower, 12) + "@" + domain
}

// externalRcpt is a plausible address at a big provider or a business domain.
func (g *gen) externalRcpt() string {
	var dom string
	if g.r.IntN(100) < 70 {
		dom = providers[g.provA.pick(g.r)].domain
	} else {
		dom = pick(g.r, businessWords) + pick(g.r, []string{"-", ""}) + pick(g.r, businessKinds) + ".example"
	}
	f, l := pick(g.r, firstNames), pick(g.r, lastNames)
	switch g.r.IntN(5) {
	case 0:
		return f + "." + l + "@" + dom
	case 1:
		return f + l + strconv.Itoa(g.r.IntN(99)) + "@" + dom
	case 2:
		return f[:1] + "." + l + "@" + dom
	case 3:
		return pick(g.r, roleParts) + "@" + dom
	}
	return f + "_" + l + "@" + dom
}

func (g *gen) rcptsFor(a *account) []string {
	n := 1
	if g.r.Float64() < float64(a.rcpt)-1 {
		n += 1 + g.r.IntN(3)
	}
	if g.r.IntN(400) == 0 {
		n = 20 + g.r.IntN(60) // an invitation to many
	}
	rs := make([]string, n)
	for i := range rs {
		if g.r.IntN(100) < 18 {
			// a colleague or friend on the same server
			srv := g.byServer[a.srv]
			rs[i] = g.accts[srv[g.r.IntN(len(srv))]].addr
		} else {
			rs[i] = g.externalRcpt()
		}
	}
	return rs
}

func (g *gen) msgSize(a *account) int {
	s := int(lognormal(g.r, float64(a.sizeMu), 1.3))
	if s < 700 {
		s = 700 + g.r.IntN(500)
	}
	if s > 30_000_000 {
		s = 30_000_000
	}
	return s
}

// localDomain reports whether dom is served by host h.
func (h *host) local(addr string) bool {
	dom := addr[strings.IndexByte(addr, '@')+1:]
	for _, d := range h.domains {
		if d == dom {
			return true
		}
	}
	return false
}

// mxFor returns the MX host and address a recipient's mail goes to.
func (g *gen) mxFor(rcpt string) (string, netip.Addr, int) {
	dom := rcpt[strings.IndexByte(rcpt, '@')+1:]
	for _, p := range providers {
		if p.domain == dom {
			// Big providers answer from a handful of addresses.
			return p.mx, publicV4(hash(g.seed, 77, uint64(len(p.mx)), uint64(p.mx[0]), uint64(p.mx[len(p.mx)-1]), uint64(g.r.IntN(4)))), p.style
		}
	}
	h := hash(g.seed, 78, uint64(len(dom)), uint64(dom[0]), uint64(dom[len(dom)/2]))
	if h%3 == 0 {
		return strings.ReplaceAll(strings.TrimSuffix(dom, ".example"), "-", "") + "-example.mail.protection.outlook.com", publicV4(h), 1
	}
	return "mx." + dom, publicV4(h), 3
}

func (g *gen) smtpReply(style int, h *host, t int64) {
	switch style {
	case 0:
		g.s("250 2.0.0 OK  ").n(int(t / 1000)).c(' ').s(g.randStr(hexLower, 10)).s("si").s(g.randStr(hexLower, 6)).s(".").n(100 + g.r.IntN(900)).s(" - gsmtp")
	case 1:
		g.s("250 2.6.0 <").s(g.randStr(hexLower, 12)).c('@').s(h.fqdn).s("> [InternalId=").n(g.r.IntN(1 << 30)).s(", Hostname=").s(g.randStr(hexUpper, 4)).s("PR0").n(g.r.IntN(9)).s("MB").n(1000 + g.r.IntN(9000)).s(".eurprd0").n(1 + g.r.IntN(8)).s(".prod.outlook.com] ").n(2000 + g.r.IntN(50000)).s(" bytes in 0.").n(10 + g.r.IntN(89)).s("0, ").n(10 + g.r.IntN(90)).s(".").n(g.r.IntN(999)).s(" KB/sec Queued mail for delivery")
	case 2:
		g.s("250 ok dirdel")
	default:
		g.s("250 2.0.0 Ok: queued as ").s(g.randStr(hexUpper, 11))
	}
}

const tlsIn = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256"
const tlsOut = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256"
const eximTLS = "X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no"

// ---- Postfix ----

func smtpdProg(svc int) string {
	switch svc {
	case svcSub:
		return "postfix/submission/smtpd"
	case svcSMTPS:
		return "postfix/smtps/smtpd"
	}
	return "postfix/smtpd"
}

func (h *host) smtpdPool(svc int) *procPool {
	switch svc {
	case svcSub:
		return &h.sub
	case svcSMTPS:
		return &h.smtps
	}
	return &h.smtpd
}

// message is one transaction in an SMTP session.
type message struct {
	from    string
	rcpts   []string // accepted
	rejects []string // refused as unknown local users (bad-recipient floods)
	size    int
	msgid   string
	bounceP float64 // share of remote recipients that bounce
}

// postfixSession writes one authenticated (or, with user == "", inbound)
// smtpd session carrying msgs. fails is the number of failed AUTH attempts
// before the successful one. It returns the session's end.
func (g *gen) postfixSession(t int64, h *host, svc int, cl client, user, method string, fails int, msgs []message) int64 {
	// Reserve the smtpd process for an upper bound of the session's length:
	// one process never serves two clients at once.
	dur := int64(1100 + fails*3800)
	for i := range msgs {
		dur += 200 + int64(len(msgs[i].rcpts)+len(msgs[i].rejects))*75 + int64(msgs[i].size/200)
	}
	prog := smtpdProg(svc)
	pid := h.smtpdPool(svc).acquire(h, g.r, t, t+dur)
	g.begin(t, h, prog, pid).s("connect from ").hostip(cl.name, cl.ip).end()
	tt := t + 30 + g.r.Int64N(150)
	tls := user != "" || g.r.IntN(100) < 80
	if tls {
		g.begin(tt, h, prog, pid).s("Anonymous TLS connection established from ").hostip(cl.name, cl.ip).s(": ").s(tlsIn).end()
	}
	cmds, cmdsOK := 1, 1 // ehlo
	if svc != svcSMTPS && tls {
		cmds, cmdsOK = 3, 3 // ehlo, starttls, ehlo
	}
	if user != "" {
		for i := 0; i < fails; i++ {
			tt += 300 + g.r.Int64N(1500)
			g.dovecotAuthFail(tt, h, user, cl.ip, "", false)
			tt += 2000
			g.begin(tt, h, prog, pid).s("warning: ").hostip(cl.name, cl.ip).s(": SASL ").s(method).s(" authentication failed: ")
			if method == "LOGIN" {
				g.s("UGFzc3dvcmQ6")
			} else {
				g.s("authentication failure")
			}
			g.s(", sasl_username=").s(user).fail(f2bPostfix).end()
		}
		tt += 200 + g.r.Int64N(500)
		cmds += fails + 1
		cmdsOK++
	}
	rcptOK, rcptAll, data, dataOK := 0, 0, 0, 0
	for i := range msgs {
		m := &msgs[i]
		tt += 30 + g.r.Int64N(80)
		tm := tt // MAIL FROM: the message's arrival starts here
		cmds++
		cmdsOK++
		// RCPT commands: rejects scattered among the accepted ones.
		all := len(m.rcpts) + len(m.rejects)
		order := make([]bool, all) // true = rejected
		for j := 0; j < len(m.rejects); j++ {
			order[j] = true
		}
		g.r.Shuffle(all, func(x, y int) { order[x], order[y] = order[y], order[x] })
		qid := ""
		ri := 0
		for _, rej := range order {
			tt += 15 + g.r.Int64N(60)
			cmds++
			rcptAll++
			if !rej {
				cmdsOK++
				rcptOK++
				if qid == "" {
					qid = g.qid()
					g.begin(tt, h, prog, pid).s(qid).s(": client=").hostip(cl.name, cl.ip)
					if user != "" {
						g.s(", sasl_method=").s(method).s(", sasl_username=").s(user)
					}
					g.end()
				}
				continue
			}
			bad := m.rejects[ri]
			ri++
			g.begin(tt, h, prog, pid)
			if qid == "" {
				g.s("NOQUEUE")
			} else {
				g.s(qid)
			}
			g.s(": reject: RCPT from ").hostip(cl.name, cl.ip).s(": 550 5.1.1 <").s(bad).s(">: Recipient address rejected: User unknown in virtual mailbox table; from=<").s(m.from).s("> to=<").s(bad).s("> proto=ESMTP helo=<").s(cl.helo).s(">").fail(f2bPostfix).end()
		}
		cmds++ // DATA
		data++
		if qid == "" {
			continue
		}
		dataOK++
		cmdsOK++
		tt += 20 + g.r.Int64N(60)
		cpid := h.cleanup.acquire(h, g.r, tt, tt+50)
		g.begin(tt, h, "postfix/cleanup", cpid).s(qid).s(": message-id=<").s(m.msgid).s(">").end()
		tt += int64(m.size/(200+g.r.IntN(2000))) + 10
		tq := tt + 2 + g.r.Int64N(30)
		g.begin(tq, h, "postfix/qmgr", h.qmgrPID).s(qid).s(": from=<").s(m.from).s(">, size=").n(m.size + 600 + g.r.IntN(400)).s(", nrcpt=").n(len(m.rcpts)).s(" (queue active)").end()
		g.postfixDeliver(h, qid, m, tm, tq)
	}
	tt += 20 + g.r.Int64N(200)
	cmds++
	cmdsOK++ // QUIT
	g.begin(tt, h, prog, pid).s("disconnect from ").hostip(cl.name, cl.ip)
	if svc != svcSMTPS && tls {
		g.s(" ehlo=2 starttls=1")
	} else {
		g.s(" ehlo=1")
	}
	if user != "" {
		if fails > 0 {
			g.s(" auth=1/").n(fails + 1)
		} else {
			g.s(" auth=1")
		}
	}
	g.s(" mail=").n(len(msgs))
	g.s(" rcpt=").n(rcptOK)
	if rcptOK != rcptAll {
		g.c('/').n(rcptAll)
	}
	g.s(" data=").n(dataOK)
	if dataOK != data {
		g.c('/').n(data)
	}
	g.s(" quit=1 commands=").n(cmdsOK)
	if cmdsOK != cmds {
		g.c('/').n(cmds)
	}
	g.end()
	return tt
}

// postfixDeliver writes the deliveries of one queued message: LMTP into
// Dovecot for local recipients, SMTP for the rest, bounces back to a local
// sender, then the qmgr "removed".
func (g *gen) postfixDeliver(h *host, qid string, m *message, tin, tq int64) {
	last := tq
	bounced := int64(0) // time of the last bounce, 0 if none
	var remote []string
	for _, r := range m.rcpts {
		if h.local(r) {
			td := tq + 40 + g.r.Int64N(250)
			g.lmtpDeliver(h, qid, r, m.msgid, tin, tq, td)
			if td > last {
				last = td
			}
		} else {
			remote = append(remote, r)
		}
	}
	// Group remote recipients by MX: one smtp client connection each.
	for len(remote) > 0 {
		mx, mxip, style := g.mxFor(remote[0])
		var batch, rest []string
		for _, r := range remote {
			if m2, _, _ := g.mxFor(r); m2 == mx {
				batch = append(batch, r)
			} else {
				rest = append(rest, r)
			}
		}
		remote = rest
		tc := tq + 100 + g.r.Int64N(400)
		td := tc + 300 + g.r.Int64N(1500)
		pid := h.smtp.acquire(h, g.r, tc, td+int64(len(batch))*80+100)
		if g.r.IntN(100) < 85 {
			g.begin(tc+150, h, "postfix/smtp", pid).s("Trusted TLS connection established to ").s(mx).c('[').ip(mxip).s("]:25: ").s(tlsOut).end()
		}
		for _, r := range batch {
			td += 20 + g.r.Int64N(60)
			g.begin(td, h, "postfix/smtp", pid).s(qid).s(": to=<").s(r).s(">, relay=").s(mx).c('[').ip(mxip).s("]:25, delay=").secs(td - tin).s(", delays=").secs(tq - tin).c('/').secs(tc - tq).c('/').secs(150 + g.r.Int64N(200)).c('/').secs(td - tc - 200).s(", dsn=")
			switch x := g.r.Float64(); {
			case x < m.bounceP:
				g.s("5.1.1, status=bounced (host ").s(mx).c('[').ip(mxip).s("] said: 550 5.1.1 <").s(r).s(">: Recipient address rejected: User unknown (in reply to RCPT TO command))").end()
				bounced = max(bounced, td)
			case x < m.bounceP+0.01:
				g.s("4.4.1, status=deferred (connect to ").s(mx).c('[').ip(mxip).s("]:25: Connection timed out)").end()
				tr := td + 300_000 + g.r.Int64N(1_500_000)
				rpid := h.smtp.acquire(h, g.r, tr, tr+2000)
				g.begin(tr, h, "postfix/smtp", rpid).s(qid).s(": to=<").s(r).s(">, relay=").s(mx).c('[').ip(mxip).s("]:25, delay=").secs(tr - tin).s(", delays=").secs(tr - tin - 900).s("/0.01/0.4/0.5, dsn=2.0.0, status=sent (")
				g.smtpReply(style, h, tr)
				g.s(")").end()
				if tr > last {
					last = tr
				}
			default:
				g.s("2.0.0, status=sent (")
				g.smtpReply(style, h, td)
				g.s(")").end()
			}
		}
		if td > last {
			last = td
		}
	}
	if bounced > 0 {
		g.postfixBounce(h, qid, m, bounced)
	}
	g.begin(last+1+g.r.Int64N(5), h, "postfix/qmgr", h.qmgrPID).s(qid).s(": removed").end()
}

func (g *gen) lmtpDeliver(h *host, qid, rcpt, msgid string, tin, tq, td int64) {
	lpid := h.lmtp.acquire(h, g.r, td-30, td)
	sess := g.randStr(b64, 22)
	g.begin(td-5, h, "dovecot", h.logPID).s("lmtp(").s(rcpt).s(")<").n(h.dlmtp.acquire(h, g.r, td-40, td)).s("><").s(sess).s(">: msgid=<").s(msgid).s(">: saved mail to INBOX").end()
	g.begin(td, h, "postfix/lmtp", lpid).s(qid).s(": to=<").s(rcpt).s(">, relay=").s(h.fqdn).s("[private/dovecot-lmtp], delay=").secs(td - tin).s(", delays=").secs(tq - tin).s("/0.01/0.01/").secs(td - tq - 20).s(", dsn=2.0.0, status=sent (250 2.0.0 <").s(rcpt).s("> ").s(sess).s(" Saved)").end()
}

func (g *gen) postfixBounce(h *host, qid string, m *message, t int64) {
	if !h.local(m.from) {
		return
	}
	nq := g.qid()
	t += 2 + g.r.Int64N(10)
	mid := time.UnixMilli(t).UTC().Format("20060102150405") + "." + nq + "@" + h.fqdn
	cpid := h.cleanup.acquire(h, g.r, t, t+20)
	g.begin(t, h, "postfix/cleanup", cpid).s(nq).s(": message-id=<").s(mid).s(">").end()
	bpid := h.bounce.acquire(h, g.r, t, t+30)
	g.begin(t+5, h, "postfix/bounce", bpid).s(qid).s(": sender non-delivery notification: ").s(nq).end()
	g.begin(t+7, h, "postfix/qmgr", h.qmgrPID).s(nq).s(": from=<>, size=").n(m.size/3 + 2400).s(", nrcpt=1 (queue active)").end()
	td := t + 60 + g.r.Int64N(200)
	g.lmtpDeliver(h, nq, m.from, mid, t, t+7, td)
	g.begin(td+2, h, "postfix/qmgr", h.qmgrPID).s(nq).s(": removed").end()
}

// ---- Exim ----

// eximSession writes an Exim submission session. Exim logs no connect or
// disconnect by default: only failed authentications, rejections, arrivals
// and deliveries.
func (g *gen) eximSession(t int64, h *host, cl client, port int, user, auth string, fails int, msgs []message) int64 {
	pid := h.newPID(g.r)
	tt := t + 200 + g.r.Int64N(400)
	for i := 0; i < fails; i++ {
		g.dovecotAuthFail(tt, h, user, cl.ip, "", false)
		tt += 2000
		g.beginExim(tt, h, pid).s(auth).s(" authenticator failed for ")
		if cl.name != "" {
			g.s(cl.name).c(' ')
		}
		g.c('(').s(cl.helo).s(") [").ip(cl.ip).s("]:").n(port).s(": 535 Incorrect authentication data (set_id=").s(user).s(")").fail(f2bExim).end()
		tt += 300 + g.r.Int64N(1500)
	}
	plain := cl.ip.IsLoopback() // webmail on the same host: no TLS
	for i := range msgs {
		m := &msgs[i]
		tt += 100 + int64(len(m.rcpts)+len(m.rejects))*40
		for _, bad := range m.rejects {
			tt += 15 + g.r.Int64N(60)
			g.beginExim(tt, h, pid).eximHost(cl.name, cl.helo, cl.ip, port)
			if !plain {
				g.c(' ').s(eximTLS)
			}
			g.s(" F=<").s(m.from).s("> A=").s(auth).c(':').s(user).s(" rejected RCPT <").s(bad).s(">: Unknown user").end()
		}
		if len(m.rcpts) == 0 {
			continue
		}
		tt += int64(m.size/(200+g.r.IntN(2000))) + 20
		id := eximID(tt, pid)
		g.beginExim(tt, h, pid).s(id).s(" <= ").s(m.from).c(' ').eximHost(cl.name, cl.helo, cl.ip, port)
		if plain {
			g.s(" P=esmtpa")
		} else {
			g.s(" P=esmtpsa ").s(eximTLS)
		}
		g.s(" A=").s(auth).c(':').s(user).s(" S=").n(m.size + 500).s(" id=").s(m.msgid).s(" for")
		for _, r := range m.rcpts {
			g.c(' ').s(r)
		}
		g.end()
		g.eximDeliver(h, id, m, tt)
	}
	return tt
}

func (g *gen) eximDeliver(h *host, id string, m *message, t int64) {
	dpid := h.newPID(g.r)
	td := t + 5 + g.r.Int64N(30)
	var remote []string
	for _, r := range m.rcpts {
		if h.local(r) {
			td += 20 + g.r.Int64N(100)
			sess := g.randStr(b64, 22)
			g.begin(td-3, h, "dovecot", h.logPID).s("lmtp(").s(r).s(")<").n(h.dlmtp.acquire(h, g.r, td-30, td)).s("><").s(sess).s(">: msgid=<").s(m.msgid).s(">: saved mail to INBOX").end()
			g.beginExim(td, h, dpid).s(id).s(" => ").s(r).s(" R=virtual_user T=dovecot_lmtp H=localhost [127.0.0.1] C=\"250 2.0.0 <").s(r).s("> ").s(sess).s(" Saved\"").end()
		} else {
			remote = append(remote, r)
		}
	}
	var deferred []string
	var mxs []string
	bounced := int64(0)
	for len(remote) > 0 {
		mx, mxip, style := g.mxFor(remote[0])
		var batch, rest []string
		for _, r := range remote {
			if m2, _, _ := g.mxFor(r); m2 == mx {
				batch = append(batch, r)
			} else {
				rest = append(rest, r)
			}
		}
		remote = rest
		td += 300 + g.r.Int64N(1500)
		for i, r := range batch {
			td += 20 + g.r.Int64N(60)
			g.beginExim(td, h, dpid).s(id)
			switch x := g.r.Float64(); {
			case x < m.bounceP:
				g.s(" ** ").s(r).s(" R=dnslookup T=remote_smtp H=").s(mx).s(" [").ip(mxip).s("] ").s(eximTLS[:len(eximTLS)-2]).s("yes: SMTP error from remote mail server after RCPT TO:<").s(r).s(">: 550 5.1.1 <").s(r).s(">: Recipient address rejected: User unknown").end()
				bounced = td
			case x < m.bounceP+0.01:
				g.s(" == ").s(r).s(" R=dnslookup T=remote_smtp defer (110): Connection timed out").end()
				deferred = append(deferred, r)
				mxs = append(mxs, mx)
			default:
				if i == 0 {
					g.s(" => ")
				} else {
					g.s(" -> ")
				}
				g.s(r).s(" R=dnslookup T=remote_smtp H=").s(mx).s(" [").ip(mxip).s("] ").s(eximTLS[:len(eximTLS)-2]).s("yes C=\"")
				g.smtpReply(style, h, td)
				g.s("\"").end()
			}
		}
	}
	if bounced > 0 {
		g.eximBounce(h, id, m, bounced)
	}
	if len(deferred) == 0 {
		g.beginExim(td+1+g.r.Int64N(3), h, dpid).s(id).s(" Completed").end()
		return
	}
	// A queue runner delivers the deferred recipients later.
	tr := td + 600_000 + g.r.Int64N(1_200_000)
	qpid := h.newPID(g.r)
	for i, r := range deferred {
		_, mxip, style := g.mxFor(r)
		tr += 300 + g.r.Int64N(1500)
		g.beginExim(tr, h, qpid).s(id).s(" => ").s(r).s(" R=dnslookup T=remote_smtp H=").s(mxs[i]).s(" [").ip(mxip).s("] ").s(eximTLS[:len(eximTLS)-2]).s("yes C=\"")
		g.smtpReply(style, h, tr)
		g.s("\"").end()
	}
	g.beginExim(tr+2, h, qpid).s(id).s(" Completed").end()
}

func (g *gen) eximBounce(h *host, id string, m *message, t int64) {
	if !h.local(m.from) {
		return
	}
	bpid := h.newPID(g.r)
	t += 3 + g.r.Int64N(20)
	nid := eximID(t, bpid)
	g.beginExim(t, h, bpid).s(nid).s(" <= <> R=").s(id).s(" U=Debian-exim P=local S=").n(m.size/3 + 2400).end()
	sess := g.randStr(b64, 22)
	g.begin(t+40, h, "dovecot", h.logPID).s("lmtp(").s(m.from).s(")<").n(h.dlmtp.acquire(h, g.r, t+10, t+40)).s("><").s(sess).s(">: msgid=<E").s(nid).s("@").s(h.fqdn).s(">: saved mail to INBOX").end()
	g.beginExim(t+45, h, bpid).s(nid).s(" => ").s(m.from).s(" R=virtual_user T=dovecot_lmtp H=localhost [127.0.0.1] C=\"250 2.0.0 <").s(m.from).s("> ").s(sess).s(" Saved\"").end()
	g.beginExim(t+46, h, bpid).s(nid).s(" Completed").end()
}

// ---- Dovecot ----

// dovecotAuthFail writes the auth process's verdict on one bad password
// (auth_verbose = yes). unknown selects "unknown user".
func (g *gen) dovecotAuthFail(t int64, h *host, user string, ip netip.Addr, sess string, unknown bool) {
	g.begin(t, h, "dovecot", h.logPID).s("auth: ").s(h.auth).c('(').s(user).c(',').ip(ip)
	if sess != "" {
		g.s(",<").s(sess).c('>')
	}
	if unknown {
		g.s("): unknown user")
	} else {
		g.s("): Password mismatch")
	}
	g.fail(f2bDovecot).end()
}

// imapLogin writes a successful IMAP or POP3 login and its end. fails is the
// number of bad passwords the client tried first on the same connection.
func (g *gen) imapLogin(t int64, h *host, a *account, svc int, cl client, webmail bool, fails int, dur int64, harvest bool) {
	sess := g.session()
	proto := "imap"
	if svc == svcPOP {
		proto = "pop3"
	}
	method := "PLAIN"
	if a.has(fLogin) && !webmail {
		method = "LOGIN"
	}
	for i := 0; i < fails; i++ {
		g.dovecotAuthFail(t, h, a.addr, cl.ip, sess, false)
		t += 2500 + g.r.Int64N(6000)
	}
	mpid := h.newPID(g.r)
	g.begin(t, h, "dovecot", h.logPID).s(proto).s("-login: Login: user=<").s(a.addr).s(">, method=").s(method).s(", rip=").ip(cl.ip).s(", lip=")
	if webmail {
		g.s("127.0.0.1, mpid=").n(mpid).s(", secured")
	} else {
		if cl.ip.Is4() {
			g.ip(h.lip4)
		} else {
			g.ip(h.lip6)
		}
		g.s(", mpid=").n(mpid).s(", TLS")
	}
	g.s(", session=<").s(sess).s(">").end()
	te := t + dur
	g.begin(te, h, "dovecot", h.logPID).s(proto).c('(').s(a.addr).s(")<").n(mpid).s("><").s(sess).s(">: ")
	if svc == svcPOP {
		n := g.r.IntN(3)
		sz := 0
		if n > 0 {
			sz = n * (2000 + g.r.IntN(40000))
		}
		g.s("Disconnected: Logged out top=0/0, retr=").n(n).c('/').n(sz).s(", del=").n(n).c('/').n(n).s(", size=").n(sz).end()
		return
	}
	in, out := 150+g.r.IntN(3000), 800+g.r.IntN(60000)
	hc, hb, bc, bb := 0, 0, g.r.IntN(4), 0
	if bc > 0 {
		bb = bc * (3000 + g.r.IntN(50000))
		out += bb
	}
	if harvest {
		hc = 800 + g.r.IntN(4000)
		hb = hc * (900 + g.r.IntN(600))
		out += hb
		bc, bb = 0, 0
	}
	switch {
	case harvest || webmail || g.r.IntN(100) < 45:
		g.s("Logged out in=")
	case g.r.IntN(2) == 0:
		g.s("Disconnected: Connection closed (IDLE finished ").n(int(dur / 1000)).c('.').n(10 + g.r.IntN(89)).s(" secs ago) in=")
	default:
		g.s("Disconnected for inactivity in=")
	}
	g.n(in).s(" out=").n(out).s(" deleted=0 expunged=0 trashed=0 hdr_count=").n(hc).s(" hdr_bytes=").n(hb).s(" body_count=").n(bc).s(" body_bytes=").n(bb).end()
}

// imapFailed writes a connection that gives up after bad passwords.
func (g *gen) imapFailed(t int64, h *host, svc int, user string, ip netip.Addr, attempts int, unknown bool) int64 {
	sess := g.session()
	t0 := t
	for i := 0; i < attempts; i++ {
		if i > 0 {
			t += 2000 + g.r.Int64N(4000)
		}
		g.dovecotAuthFail(t, h, user, ip, sess, unknown)
	}
	t += 2000 + g.r.Int64N(1500)
	proto := "imap"
	if svc == svcPOP {
		proto = "pop3"
	}
	secs := int((t - t0) / 1000)
	g.begin(t, h, "dovecot", h.logPID).s(proto).s("-login: ")
	if g.r.IntN(3) == 0 {
		g.s("Aborted login")
	} else {
		g.s("Disconnected")
	}
	g.s(" (auth failed, ").n(attempts).s(" attempts in ").n(secs).s(" secs): user=<").s(user).s(">, method=PLAIN, rip=").ip(ip).s(", lip=")
	if ip.Is4() {
		g.ip(h.lip4)
	} else {
		g.ip(h.lip6)
	}
	g.s(", TLS, session=<").s(sess).s(">").fail(f2bDovecot).end()
	return t
}

// ---- Baseline jobs ----

func (g *gen) newMessage(a *account, dev int) message {
	return message{from: a.addr, rcpts: g.rcptsFor(a), size: g.msgSize(a), msgid: g.msgID(a, dev), bounceP: 0.012}
}

// submit is an account sending mail as usual.
func (g *gen) submit(t int64, a *account) {
	h := g.hosts[a.srv]
	dev := g.pickDevice(a)
	if a.has(fWebmail) && g.r.IntN(100) < 40 {
		dev = devWebmail
	}
	if a.has(fBulk) {
		dev = devDesktop
	}
	n := 1
	if dev == devDesktop && g.r.IntN(100) < 12 {
		n = 2 + g.r.IntN(4) // an outbox flushed in one session
	}
	if a.has(fBulk) {
		n = 1 + g.r.IntN(20)
	}
	msgs := make([]message, n)
	for i := range msgs {
		msgs[i] = g.newMessage(a, dev)
	}
	var cl client
	if dev == devWebmail {
		cl = client{ip: netip.AddrFrom4([4]byte{127, 0, 0, 1}), name: "localhost", helo: "webmail." + h.fqdn[strings.IndexByte(h.fqdn, '.')+1:]}
	} else {
		cl = g.clientOf(a, dev, t)
	}
	fails := 0
	if dev != devWebmail && g.r.IntN(1000) < 4 {
		fails = 1 // a typo, or a client that tries an old password first
	}
	method := "PLAIN"
	if a.has(fLogin) {
		method = "LOGIN"
	}
	if h.exim {
		auth := "dovecot_plain"
		if method == "LOGIN" {
			auth = "dovecot_login"
		}
		g.eximSession(t, h, cl, 30000+g.r.IntN(35000), a.addr, auth, fails, msgs)
		return
	}
	svc := svcSub
	if a.has(fSMTPS) {
		svc = svcSMTPS
	}
	if dev == devWebmail {
		svc = svcSub
	}
	g.postfixSession(t, h, svc, cl, a.addr, method, fails, msgs)
}

// imap is one mail client (re)connecting.
func (g *gen) imap(t int64, a *account, svc int) {
	h := g.hosts[a.srv]
	dev := devDesktop
	if svc == svcIMAP {
		dev = g.pickDevice(a)
		if a.has(fWebmail) && g.r.IntN(100) < 25 {
			dev = devWebmail
		}
	}
	cl := g.clientOf(a, dev, t)
	fails := 0
	if g.r.IntN(1000) < 6 {
		fails = 1
	}
	if dev == devWebmail {
		g.imapLogin(t, h, a, svc, cl, true, fails, 2000+g.r.Int64N(600_000), false)
		return
	}
	if svc == svcPOP {
		g.imapLogin(t, h, a, svc, cl, false, 0, 300+g.r.Int64N(4000), false)
		return
	}
	conns := 1
	dur := 60_000 + g.r.Int64N(1_800_000)
	if dev == devDesktop {
		conns = 1 + g.r.IntN(3) // Thunderbird and friends open several
		dur = 120_000 + g.r.Int64N(3_000_000)
	}
	for i := 0; i < conns; i++ {
		tt := t + int64(i)*(50+g.r.Int64N(1500))
		f := 0
		if i == 0 {
			f = fails
		}
		g.imapLogin(tt, h, a, svc, cl, false, f, dur+g.r.Int64N(30_000), false)
	}
}

// inbound is mail from the Internet to a local account.
func (g *gen) inbound(t int64, a *account) {
	h := g.hosts[a.srv]
	s := &inboundSenders[g.senderA.pick(g.r)]
	hs := g.r.Uint64()
	var cl client
	from := ""
	if s.bits > 0 {
		cl.ip = in4(s.prefix, s.bits, hs)
		cl.name = s.rdns(cl.ip, hs)
		switch s.domain {
		case "amazonses.com":
			from = "0102019" + g.randStr(hexLower, 9) + "-" + g.randStr(hexLower, 8) + "-000000@eu-west-1.amazonses.com"
		case "mcdlv.net":
			from = "bounce-mc.us" + strconv.Itoa(1+g.r.IntN(20)) + "_" + strconv.Itoa(g.r.IntN(1e8)) + "." + strconv.Itoa(g.r.IntN(1e7)) + "-" + g.randStr(hexLower, 10) + "@mail" + strconv.Itoa(int(v4u(cl.ip)&0xff)) + ".suw21.mcdlv.net"
		default:
			from = g.externalRcpt()
			from = from[:strings.IndexByte(from, '@')+1] + s.domain
		}
		cl.helo = cl.name
	} else {
		cl.ip = publicV4(hs)
		p := &g.homes[hs%uint64(len(g.homes))]
		if hs%3 == 0 {
			from = g.externalRcpt()
			dom := from[strings.IndexByte(from, '@')+1:]
			cl.name = "mail." + dom
			cl.helo = cl.name
		} else {
			from = g.externalRcpt()
			cl.name = p.rdns(cl.ip, hs)
			cl.helo = "mx." + from[strings.IndexByte(from, '@')+1:]
		}
	}
	m := message{from: from, rcpts: []string{a.addr}, size: int(lognormal(g.r, 9.8, 1.2)) + 1500, msgid: g.inboundMsgID(s.domain)}
	if h.exim {
		pid := h.newPID(g.r)
		tt := t + 300 + g.r.Int64N(800) + int64(m.size/(500+g.r.IntN(5000)))
		id := eximID(tt, pid)
		g.beginExim(tt, h, pid).s(id).s(" <= ").s(m.from).c(' ')
		g.eximHost(cl.name, cl.helo, cl.ip, 30000+g.r.IntN(35000))
		if s.tls || g.r.IntN(100) < 70 {
			g.s(" P=esmtps ").s(eximTLS)
		} else {
			g.s(" P=esmtp")
		}
		g.s(" S=").n(m.size).s(" id=").s(m.msgid).s(" for ").s(a.addr).end()
		g.eximDeliver(h, id, &m, tt)
		return
	}
	g.postfixSession(t, h, svcSMTP, cl, "", "", 0, []message{m})
}

// spamReject is a refused delivery attempt from a spam source.
func (g *gen) spamReject(t int64, h *host) {
	hs := g.r.Uint64()
	ip := publicV4(hs)
	name := ""
	if hs%4 == 0 {
		name = g.homes[hs%uint64(len(g.homes))].rdns(ip, hs)
	}
	helo := name
	if helo == "" {
		helo = pick(g.r, []string{"User", "localhost", "[" + ip.String() + "]", strings.ToLower(g.randStr(b62, 8)) + ".com", "WIN-" + g.randStr(hexUpper, 11)})
	}
	from := strings.ToLower(g.randStr(b62, 6+g.r.IntN(6))) + "@" + pick(g.r, []string{"gmail.com", "yahoo.com", "outlook.com", "mail.ru", strings.ToLower(g.randStr(b62, 7)) + ".top", strings.ToLower(g.randStr(b62, 6)) + ".xyz"})
	srv := g.byServer[h.idx]
	to := g.accts[srv[g.r.IntN(len(srv))]].addr
	kind := g.r.IntN(100)
	unknown := kind >= 45 && kind < 80
	if unknown {
		to = g.unknownLocal(h)
	}
	if h.exim {
		pid := h.newPID(g.r)
		g.beginExim(t+500+g.r.Int64N(2000), h, pid).eximHost(name, helo, ip, 1024+g.r.IntN(64000)).s(" F=<").s(from).s("> rejected RCPT <").s(to).s(">: ")
		switch {
		case unknown:
			g.s("Unknown user").fail(f2bExim)
		case kind < 45:
			g.s("JunkMail rejected - ").ip(ip).s(" is listed at zen.spamhaus.org")
		default:
			g.s("Unrouteable address").fail(f2bExim)
		}
		g.end()
		return
	}
	prog := "postfix/smtpd"
	pid := h.smtpd.acquire(h, g.r, t, t+4000)
	g.begin(t, h, prog, pid).s("connect from ").hostip(name, ip).end()
	tt := t + 400 + g.r.Int64N(2000)
	g.begin(tt, h, prog, pid).s("NOQUEUE: reject: RCPT from ").hostip(name, ip).s(": ")
	switch {
	case unknown:
		g.s("550 5.1.1 <").s(to).s(">: Recipient address rejected: User unknown in virtual mailbox table")
	case kind < 45:
		g.s("554 5.7.1 Service unavailable; Client host [").ip(ip).s("] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/").ip(ip)
	default:
		g.s("450 4.7.25 Client host rejected: cannot find your hostname, [").ip(ip).s("]")
	}
	g.s("; from=<").s(from).s("> to=<").s(to).s("> proto=ESMTP helo=<").s(helo).s(">").fail(f2bPostfix).end()
	tt += 50 + g.r.Int64N(1000)
	if g.r.IntN(3) == 0 {
		g.begin(tt, h, prog, pid).s("lost connection after RCPT from ").hostip(name, ip).end()
		g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(" ehlo=1 mail=1 rcpt=0/1 commands=2/3").end()
		return
	}
	g.begin(tt, h, prog, pid).s("disconnect from ").hostip(name, ip).s(" ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4").end()
}

// unknownLocal makes up a recipient at a local domain that does not exist.
func (g *gen) unknownLocal(h *host) string {
	d := h.domains[g.r.IntN(len(h.domains))]
	switch g.r.IntN(4) {
	case 0:
		return pick(g.r, firstNames) + "@" + d
	case 1:
		return pick(g.r, firstNames)[:1] + pick(g.r, lastNames) + strconv.Itoa(g.r.IntN(100)) + "@" + d
	case 2:
		return pick(g.r, []string{"newsletter", "marketing", "hr", "ceo", "it", "noreply", "abuse", "test", "web", "shop"}) + "@" + d
	}
	return strings.ToLower(g.randStr(b62, 5+g.r.IntN(5))) + "@" + d
}

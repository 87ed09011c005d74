package main

import (
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
)

// mix is splitmix64's finaliser: a cheap, well-spread hash used to derive
// stable per-account facts (home address of the day, device names) without
// storing them.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func hash(vs ...uint64) uint64 {
	h := uint64(0x6a09e667f3bcc908)
	for _, v := range vs {
		h = mix(h ^ v)
	}
	return h
}

// alias is Vose's alias table: O(1) weighted choice among many accounts.
type alias struct {
	prob  []float64
	alias []int32
	total float64
}

func newAlias(w []float64) *alias {
	n := len(w)
	a := &alias{prob: make([]float64, n), alias: make([]int32, n)}
	for _, x := range w {
		a.total += x
	}
	if a.total == 0 {
		for i := range a.prob {
			a.prob[i] = 1
		}
		return a
	}
	scaled := make([]float64, n)
	var small, large []int32
	for i, x := range w {
		scaled[i] = x * float64(n) / a.total
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s := small[len(small)-1]
		small = small[:len(small)-1]
		l := large[len(large)-1]
		a.prob[s] = scaled[s]
		a.alias[s] = l
		scaled[l] -= 1 - scaled[s]
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range large {
		a.prob[i] = 1
	}
	for _, i := range small {
		a.prob[i] = 1
	}
	return a
}

func (a *alias) pick(r *rand.Rand) int {
	i := r.IntN(len(a.prob))
	if r.Float64() < a.prob[i] {
		return i
	}
	return int(a.alias[i])
}

// Public IPv4 space: anything but private, shared, loopback, link-local,
// documentation, benchmark and multicast/reserved ranges.
func publicV4(x uint64) netip.Addr {
	for {
		v := uint32(x)
		a, b := v>>24, v>>16&0xff
		bad := a == 0 || a == 10 || a == 127 || a >= 224 ||
			(a == 100 && b&0xc0 == 64) || (a == 169 && b == 254) ||
			(a == 172 && b&0xf0 == 16) || (a == 192 && b == 168) ||
			(a == 198 && b&0xfe == 18) || v>>8 == 0xc00002 || v>>8 == 0xc63364 ||
			v>>8 == 0xcb0071 || v>>8 == 0xc00000 || v&0xff == 0 || v&0xff == 255
		if !bad {
			return v4(v)
		}
		x = mix(x)
	}
}

func v4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func v4u(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// in4 picks an address inside prefix/bits, avoiding .0 and .255.
func in4(prefix uint32, bits int, x uint64) netip.Addr {
	host := uint32(x) & (1<<(32-bits) - 1)
	v := prefix | host
	if v&0xff == 0 {
		v |= 1
	}
	if v&0xff == 255 {
		v ^= 2
	}
	return v4(v)
}

func v6(hi, lo uint64) netip.Addr {
	var b [16]byte
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (56 - 8*i))
		b[8+i] = byte(lo >> (56 - 8*i))
	}
	return netip.AddrFrom16(b)
}

// isp is an access provider: home customers (DSL/cable/fibre), or a mobile
// carrier whose customers sit behind carrier-grade NAT and share addresses.
type isp struct {
	domain string
	v4     []uint32 // /16 prefixes (home) or /20 prefixes (mobile)
	v6     uint64   // /32 in the top bits
	style  int      // reverse DNS naming style
	mobile bool
}

func (p *isp) rdns(a netip.Addr, h uint64) string {
	if p.mobile || !a.Is4() {
		return ""
	}
	b := a.As4()
	d := func(i int) string { return strconv.Itoa(int(b[i])) }
	switch p.style {
	case 0:
		return "p" + strings.ToUpper(strconv.FormatUint(uint64(v4u(a))|1<<32, 16)[1:]) + ".dip0." + p.domain
	case 1:
		return "dslb-" + pad3(b[0]) + "-" + pad3(b[1]) + "-" + pad3(b[2]) + "-" + pad3(b[3]) + ".pools." + p.domain
	case 2:
		return d(3) + "-" + d(2) + "-" + d(1) + "-" + d(0) + ".dyn." + p.domain
	case 3:
		return "host-" + d(0) + "-" + d(1) + "-" + d(2) + "-" + d(3) + ".cust." + p.domain
	case 4:
		if h%5 == 0 {
			return ""
		}
		return "ip" + d(0) + "-" + d(1) + "-" + d(2) + "-" + d(3) + ".adsl." + p.domain
	default:
		return "cpe-" + d(0) + "-" + d(1) + "-" + d(2) + "-" + d(3) + ".fibre." + p.domain
	}
}

func pad3(x byte) string {
	s := strconv.Itoa(int(x))
	return strings.Repeat("0", 3-len(s)) + s
}

var homeISPs = []string{"kabelplus.example", "fibrenet.example", "dsl-west.example", "citynet.example",
	"alpenbreitband.example", "nordfiber.example", "telco-one.example", "ruralnet.example",
	"metrocable.example", "sky-dsl.example", "lightspeed.example", "heimnetz.example"}

var mobileISPs = []string{"carrier-a.example", "carrier-b.example", "carrier-c.example", "carrier-d.example"}

// host is one mail server whose daemons write into the shared log.
type host struct {
	idx     int
	name    string // syslog host name
	fqdn    string
	lip4    netip.Addr
	lip6    netip.Addr
	pid     int
	exim    bool
	logPID  int // Dovecot's log process: every Dovecot line carries it
	qmgrPID int
	smtpd   procPool
	sub     procPool
	smtps   procPool
	cleanup procPool
	smtp    procPool
	lmtp    procPool
	bounce  procPool
	dlmtp   procPool // Dovecot's LMTP server
	auth    string   // Dovecot passdb driver name in auth lines
	domains []string
}

func (h *host) newPID(r *rand.Rand) int {
	h.pid += 1 + r.IntN(6)
	if h.pid >= 4194304 {
		h.pid = 300 + r.IntN(1000)
	}
	return h.pid
}

// procPool mimics Postfix's reuse of daemon processes: a process serves one
// client at a time, is reused up to max_use times and exits when idle for
// max_idle. Sessions are handed out in time order.
type procPool struct {
	idle []proc // min-heap on free
}

type proc struct {
	pid  int
	free int64
	uses int
}

const (
	maxIdleMS = 100_000
	maxUse    = 100
)

func (p *procPool) acquire(h *host, r *rand.Rand, start, end int64) int {
	for len(p.idle) > 0 && p.idle[0].free <= start {
		pr := p.pop()
		if start-pr.free > maxIdleMS || pr.uses >= maxUse {
			continue
		}
		pr.uses++
		pr.free = end
		p.push(pr)
		return pr.pid
	}
	pr := proc{pid: h.newPID(r), free: end, uses: 1}
	p.push(pr)
	return pr.pid
}

func (p *procPool) push(x proc) {
	p.idle = append(p.idle, x)
	i := len(p.idle) - 1
	for i > 0 {
		q := (i - 1) / 2
		if p.idle[q].free <= p.idle[i].free {
			break
		}
		p.idle[q], p.idle[i] = p.idle[i], p.idle[q]
		i = q
	}
}

func (p *procPool) pop() proc {
	s := p.idle
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if l+1 < n && s[l+1].free < s[l].free {
			m = l + 1
		}
		if s[i].free <= s[m].free {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	p.idle = s
	return top
}

// Account flags.
const (
	fPhone = 1 << iota
	fDesktop
	fPOP
	fV6
	fStaticHome
	fWebmail
	fBulk
	fIPhone
	fSMTPS
	fLogin // client uses AUTH LOGIN rather than PLAIN
	fOutlook
	fAppleMail
	fPhoneV6
)

type account struct {
	addr    string
	srv     uint8 // index into gen.hosts
	isp     uint8
	carrier uint8
	flags   uint16
	office  int16 // index into gen.offices, -1 if none
	rcpt    float32
	sizeMu  float32
	id      uint64
}

func (a *account) has(f uint16) bool { return a.flags&f != 0 }

type office struct {
	ip   netip.Addr
	rdns string
}

var firstNames = strings.Fields(`anna ben clara david emma felix greta hanna ida jakob jonas julia karl lena leon lisa lukas marie max mia noah olga paul paula peter rita sara simon sophie thomas tim ute vera walter zoe alex chris sam robin kim jan eva nina tom lara finn ella oskar mila emil frieda henry lina matteo alma moritz elias nora anton luisa theo amelie john mary james linda robert patricia michael jennifer william susan richard karen joseph nancy daniel lisa mark betty george helen steven carol kevin ruth brian sharon`)

var lastNames = strings.Fields(`mueller schmidt schneider fischer weber meyer wagner becker schulz hoffmann koch richter klein wolf schroeder neumann schwarz braun zimmermann krueger hartmann lange werner krause lehmann koehler maier herrmann koenig walter huber kaiser fuchs peters lang scholz moeller weiss jung hahn vogel roth beck lorenz baumann franke albrecht smith johnson brown jones miller davis garcia wilson anderson taylor thomas moore martin jackson white harris clark lewis walker hall allen young king wright scott green baker adams nelson hill campbell mitchell roberts carter phillips evans turner parker collins edwards stewart morris murphy cook rogers morgan cooper`)

var roleParts = strings.Fields(`info office kontakt sales support buchhaltung rechnung service admin mail post team booking empfang hello contact billing accounts orders jobs press`)

var businessWords = strings.Fields(`alpen harbor cedar summit river nordlicht sonnen blue green oak maple stone silver golden linden birken meadow lake bay valley castle tower bridge mill garden forest falcon eagle`)

var businessKinds = strings.Fields(`bau design consulting dental law tours bakery media immobilien steuer physio garten elektro haustechnik logistik reisen praxis kanzlei verlag studio`)

// External recipient domains with the MX host Postfix/Exim would deliver to
// and the shape of its "250" answer.
type provider struct {
	domain string
	mx     string
	style  int
	weight float64
}

var providers = []provider{
	{"gmail.com", "gmail-smtp-in.l.google.com", 0, 30},
	{"googlemail.com", "gmail-smtp-in.l.google.com", 0, 2},
	{"outlook.com", "outlook-com.olc.protection.outlook.com", 1, 6},
	{"hotmail.com", "hotmail-com.olc.protection.outlook.com", 1, 6},
	{"yahoo.com", "mta6.am0.yahoodns.net", 2, 4},
	{"gmx.de", "mx00.emig.gmx.net", 3, 8},
	{"web.de", "mx-ha02.web.de", 3, 8},
	{"t-online.de", "mx00.t-online.de", 3, 5},
	{"icloud.com", "mx01.mail.icloud.com", 2, 4},
	{"orange.fr", "smtp-in.orange.fr", 3, 2},
}

// Big senders of inbound mail: reverse DNS shape and network.
type sender struct {
	rdns   func(a netip.Addr, h uint64) string
	prefix uint32
	bits   int
	domain string
	weight float64
	tls    bool
}

func dashed(a netip.Addr) string {
	return strings.ReplaceAll(a.String(), ".", "-")
}

var inboundSenders = []sender{
	{func(a netip.Addr, h uint64) string {
		return "mail-" + []string{"wr1", "wm1", "ej1", "lf1", "pl1", "yw1", "qt1"}[h%7] + "-f" + strconv.Itoa(int(v4u(a)&0xff)) + ".google.com"
	}, 0xd155_8000, 17, "gmail.com", 30, true},
	{func(a netip.Addr, h uint64) string {
		return "mail-" + []string{"db8eur05", "am6eur02", "vi1eur04", "he1eur01"}[h%4] + "on" + strconv.Itoa(int(2000+h%200)) + ".outbound.protection.outlook.com"
	}, 0x286b_0000, 16, "outlook.com", 15, true},
	{func(a netip.Addr, h uint64) string { return "mout.gmx.net" }, 0xd4e3_1100, 24, "gmx.de", 8, true},
	{func(a netip.Addr, h uint64) string { return "mout.web.de" }, 0xd4e3_1000, 24, "web.de", 8, true},
	{func(a netip.Addr, h uint64) string {
		return "a" + strconv.Itoa(int(v4u(a)>>8&0xff)) + "-" + strconv.Itoa(int(v4u(a)&0xff)) + ".smtp-out.amazonses.com"
	}, 0x36f0_0000, 18, "amazonses.com", 10, true},
	{func(a netip.Addr, h uint64) string {
		return "mail" + strconv.Itoa(int(v4u(a)&0xff)) + ".suw" + strconv.Itoa(int(11+h%10)) + ".mcdlv.net"
	}, 0xc602_8000, 18, "mcdlv.net", 6, true},
	{func(a netip.Addr, h uint64) string { return "" }, 0, 0, "", 23, false}, // small senders everywhere
}

// Client software: EHLO names and Message-ID shapes.
var desktopHelos = []string{"[192.168.178.23]", "[192.168.1.34]", "[10.0.0.12]", "[192.168.0.101]", "[192.168.2.57]", "[172.20.10.4]"}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// lognormal returns exp(N(mu, sigma)).
func lognormal(r *rand.Rand, mu, sigma float64) float64 {
	return math.Exp(mu + sigma*r.NormFloat64())
}

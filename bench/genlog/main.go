// Command genlog writes a deterministic, realistic mail log for replay
// benchmarks: Postfix, Dovecot and Exim lines from two servers, merged in
// Debian's mail.log (BSD syslog) style, with attacks sprinkled in.
//
//	genlog -seed 1 -lines 5000000 -o mail.log -stats mail.log.stats.json -truth mail.log.truth.jsonl
//
// mx1 runs Postfix (ports 25, 587, 465) with Dovecot (IMAP, POP3, SASL for
// Postfix, LMTP); mx2 runs Exim (authenticating through Dovecot) with
// Dovecot. About 20 000 accounts with heavy-tailed volumes, phones roaming
// through carrier-grade NAT, IPv6 homes, offices, webmail and newsletter
// senders produce the traffic; brute force from single addresses, password
// spraying, distributed attacks on one mailbox, botnets sending through a
// stolen account, spamware, bad-recipient floods and directory harvesting are
// injected, together with benign clients stuck on an old password.
//
// BSD syslog timestamps carry no year: the reader must assume -year (for
// mailwarden: analyze --year). Exim's own timestamps, embedded after the
// syslog prefix, carry it. All times are UTC.
//
// The same seed and flags give the same bytes. With -stats, a JSON summary is
// written: line counts per daemon and, per stock fail2ban filter
// (postfix[mode=extra], dovecot, exim), the number of lines it should match.
// With -truth, every injected campaign is written as one JSON object per line.
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// version changes whenever the output for a given seed changes.
const version = 2

const defaultAccounts = 20_000

type config struct {
	seed     uint64
	lines    int64
	year     int
	start    string
	out      string
	accounts int
	stats    string
	truth    string
}

type counts struct {
	bySource [4]int64
	f2b      [4]int64
	noise    int
}

// Job kinds: one scenario starting at a given time.
const (
	jSubmit = iota
	jIMAP
	jPOP
	jInbound
	jSpam
	jNoise
	jCampaign
)

type job struct {
	t    int64
	kind uint8
	a    int32
	h    *host
	c    *campaign
}

type gen struct {
	cfg  config
	r    *rand.Rand
	seed uint64

	stamp stamps
	buf   []byte
	chunk []byte
	lt    int64
	lmeta uint8
	seq   uint64
	heap  lineHeap
	w     io.Writer

	written, bytes int64
	first, last    int64
	count          counts
	t0             int64

	hosts    []*host
	accts    []account
	addrs    map[string]struct{}
	byServer [2][]int32
	offices  []office
	homes    []isp
	mobiles  []isp
	badIPs   []netip.Addr

	sendA, imapA, popA, recvA *alias
	provA, senderA            *alias
	perMin                    [jNoise + 1]float64 // baseline jobs per minute at diurnal factor 1

	jobs      []job
	campaigns []*campaign
	nextCamp  int
	active    []*campaign
}

func main() {
	var cfg config
	var seed int64
	flag.Int64Var(&seed, "seed", 1, "random seed: the same seed and flags give the same log")
	flag.Int64Var(&cfg.lines, "lines", 5_000_000, "number of lines to write")
	flag.IntVar(&cfg.year, "year", 2026, "year of -start; BSD syslog timestamps carry no year, so the reader must assume this one (mailwarden analyze --year)")
	flag.StringVar(&cfg.start, "start", "11-02", "first day: MM-DD in -year, or YYYY-MM-DD (which sets -year); the log starts at midnight UTC")
	flag.StringVar(&cfg.out, "o", "", "output file (default stdout)")
	flag.IntVar(&cfg.accounts, "accounts", defaultAccounts, "number of mail accounts")
	flag.StringVar(&cfg.stats, "stats", "", "write a JSON summary (counts, expected fail2ban matches) to this file")
	flag.StringVar(&cfg.truth, "truth", "", "write the injected campaigns as JSON lines to this file")
	showVersion := flag.Bool("version", false, "print the output format version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	if len(cfg.start) == len("2006-01-02") {
		yearSet := false
		flag.Visit(func(f *flag.Flag) { yearSet = yearSet || f.Name == "year" })
		y, err := strconv.Atoi(cfg.start[:4])
		if err != nil || (yearSet && y != cfg.year) {
			fmt.Fprintf(os.Stderr, "genlog: -start %q conflicts with -year %d\n", cfg.start, cfg.year)
			os.Exit(2)
		}
		cfg.year, cfg.start = y, cfg.start[5:]
	}
	cfg.seed = uint64(seed)
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "genlog:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	if cfg.lines <= 0 {
		return fmt.Errorf("-lines must be positive")
	}
	if cfg.accounts < 100 {
		return fmt.Errorf("-accounts must be at least 100")
	}
	start, err := time.Parse("2006-01-02", fmt.Sprintf("%04d-%s", cfg.year, cfg.start))
	if err != nil {
		return fmt.Errorf("-start %q: want MM-DD: %v", cfg.start, err)
	}
	var out io.Writer = os.Stdout
	var f *os.File
	if cfg.out != "" && cfg.out != "-" {
		if f, err = os.Create(cfg.out); err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	g := newGen(cfg, start.UnixMilli())
	g.w = bw
	began := time.Now()
	if err := g.run(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if f != nil {
		if err := f.Close(); err != nil {
			return err
		}
	}
	if g.written < cfg.lines {
		return fmt.Errorf("wrote only %d lines", g.written)
	}
	if y := time.UnixMilli(g.last).UTC().Year(); y != cfg.year {
		fmt.Fprintf(os.Stderr, "genlog: warning: the log runs into %d; BSD timestamps after New Year need year inference\n", y)
	}
	if cfg.stats != "" {
		if err := g.writeStats(cfg.stats, time.Since(began)); err != nil {
			return err
		}
	}
	if cfg.truth != "" {
		if err := g.writeTruth(cfg.truth); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "genlog: %d lines, %d bytes, %s .. %s, in %.1fs\n", g.written, g.bytes,
		msTime(g.first), msTime(g.last), time.Since(began).Seconds())
	return nil
}

func msTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

func newGen(cfg config, t0 int64) *gen {
	g := &gen{
		cfg:   cfg,
		seed:  cfg.seed,
		r:     rand.New(rand.NewPCG(cfg.seed, 0x6d61696c77617264)),
		t0:    t0,
		addrs: make(map[string]struct{}, cfg.accounts),
		buf:   make([]byte, 0, 4096),
	}
	g.build()
	g.planCampaigns()
	return g
}

// ---- Population ----

func (g *gen) build() {
	r := g.r
	for i, name := range homeISPs {
		p := isp{domain: name, style: i % 6, v6: (0x2a00_0000 | uint64(r.IntN(1<<20))) << 32}
		for k := 3 + r.IntN(4); k > 0; k-- {
			p.v4 = append(p.v4, v4u(publicV4(r.Uint64()))&0xffff0000)
		}
		g.homes = append(g.homes, p)
	}
	for _, name := range mobileISPs {
		p := isp{domain: name, mobile: true, v6: (0x2a00_0000 | uint64(r.IntN(1<<20))) << 32}
		for k := 4 + r.IntN(5); k > 0; k-- {
			p.v4 = append(p.v4, v4u(publicV4(r.Uint64()))&0xfffff000)
		}
		g.mobiles = append(g.mobiles, p)
	}
	mk := func(idx int, name, fqdn, auth string, exim bool, domains ...string) *host {
		h := &host{idx: idx, name: name, fqdn: fqdn, auth: auth, exim: exim, domains: domains}
		h.lip4 = publicV4(r.Uint64())
		h.lip6 = v6(0x2a01_04f8_0000_0000|uint64(r.IntN(1<<16))<<16, 0x25)
		h.logPID = 600 + r.IntN(400)
		h.qmgrPID = 1000 + r.IntN(900)
		h.pid = 20_000 + r.IntN(2_000_000)
		return h
	}
	mx1 := mk(0, "mx1", "mx1.example.com", "passwd-file", false, "example.com", "example.net")
	mx2 := mk(1, "mx2", "mx2.example.org", "sql", true, "example.org")
	g.hosts = []*host{mx1, mx2}

	// Hosted business domains, each with an office on a static line.
	seen := map[string]bool{}
	officeOf := map[string]int16{}
	for hi, n := range []int{60, 25} {
		h := g.hosts[hi]
		base := len(h.domains)
		for len(h.domains) < base+n {
			d := pick(r, businessWords) + pick(r, []string{"-", ""}) + pick(r, businessKinds) + ".example"
			if seen[d] {
				continue
			}
			seen[d] = true
			h.domains = append(h.domains, d)
			p := &g.homes[r.IntN(len(g.homes))]
			ip := in4(p.v4[r.IntN(len(p.v4))], 16, r.Uint64())
			rd := "static-" + dashed(ip) + "." + p.domain
			if r.IntN(3) == 0 {
				rd = "gw." + d
			}
			officeOf[d] = int16(len(g.offices))
			g.offices = append(g.offices, office{ip: ip, rdns: rd})
		}
	}

	n := g.cfg.accounts
	g.accts = make([]account, n)
	send := make([]float64, n)
	imap := make([]float64, n)
	pop := make([]float64, n)
	recv := make([]float64, n)
	for i := range g.accts {
		a := &g.accts[i]
		a.id = hash(g.seed, uint64(i), 0xacc)
		a.office = -1
		srv := 0
		if r.Float64() < 0.25 {
			srv = 1
		}
		h := g.hosts[srv]
		a.srv = uint8(srv)
		var dom string
		hosted := false
		x := r.Float64()
		switch {
		case srv == 0 && x < 0.55:
			dom = "example.com"
		case srv == 0 && x < 0.75:
			dom = "example.net"
		case srv == 1 && x < 0.65:
			dom = "example.org"
		default:
			first := 2
			if srv == 1 {
				first = 1
			}
			dom = h.domains[first+r.IntN(len(h.domains)-first)]
			hosted = true
			a.office = officeOf[dom]
		}
		for {
			addr := localPart(r, hosted) + "@" + dom
			if _, dup := g.addrs[addr]; !dup {
				a.addr = addr
				g.addrs[addr] = struct{}{}
				break
			}
		}
		a.isp = uint8(r.IntN(len(g.homes)))
		a.carrier = uint8(r.IntN(len(g.mobiles)))
		var fl uint16
		if r.Float64() < 0.65 {
			fl |= fPhone
			if r.Float64() < 0.45 {
				fl |= fIPhone
			}
			if r.Float64() < 0.3 {
				fl |= fPhoneV6
			}
		}
		if r.Float64() < 0.72 || fl&fPhone == 0 {
			if r.Float64() < 0.10 {
				fl |= fPOP
			} else {
				fl |= fDesktop
			}
			switch x := r.Float64(); {
			case x < 0.35:
				fl |= fOutlook
			case x < 0.5:
				fl |= fAppleMail
			}
		}
		if r.Float64() < 0.28 {
			fl |= fV6
		}
		if r.Float64() < 0.3 {
			fl |= fStaticHome
		}
		if r.Float64() < 0.2 {
			fl |= fWebmail
		}
		if r.Float64() < 0.25 {
			fl |= fSMTPS
		}
		if r.Float64() < 0.2 {
			fl |= fLogin
		}
		a.rcpt = float32(1 + 0.35*r.Float64())
		a.sizeMu = float32(math.Log(14_000) + 0.6*r.NormFloat64())
		switch x := r.Float64(); {
		case x < 0.003:
			fl |= fBulk | fDesktop | fStaticHome
			fl &^= fV6
			send[i] = (150 + 1350*r.Float64()) / 10.5 // sessions: ~10 messages each
		case x < 0.15:
			send[i] = 0
		default:
			send[i] = math.Min(lognormal(r, math.Log(2), 1.1), 150)
		}
		a.flags = fl
		w := lognormal(r, 0, 0.5)
		if fl&fPhone != 0 {
			imap[i] += 10 * w
		}
		if fl&fDesktop != 0 {
			imap[i] += 5 * w
		}
		if fl&fWebmail != 0 {
			imap[i] += 1.5 * w
		}
		if fl&fPOP != 0 {
			pop[i] = 40 * lognormal(r, 0, 0.3)
		}
		recv[i] = math.Min(lognormal(r, math.Log(3), 1.0), 300)
		g.byServer[srv] = append(g.byServer[srv], int32(i))
	}
	g.sendA, g.imapA, g.popA, g.recvA = newAlias(send), newAlias(imap), newAlias(pop), newAlias(recv)
	g.perMin[jSubmit] = g.sendA.total / 1440
	g.perMin[jIMAP] = g.imapA.total / 1440
	g.perMin[jPOP] = g.popA.total / 1440
	g.perMin[jInbound] = g.recvA.total / 1440
	scale := float64(n) / defaultAccounts
	g.perMin[jSpam] = 30_000 * scale / 1440
	g.perMin[jNoise] = 4_000 * scale / 1440

	pw := make([]float64, len(providers))
	for i, p := range providers {
		pw[i] = p.weight
	}
	g.provA = newAlias(pw)
	sw := make([]float64, len(inboundSenders))
	for i, s := range inboundSenders {
		sw[i] = s.weight
	}
	g.senderA = newAlias(sw)
	for i := 0; i < 3000; i++ {
		g.badIPs = append(g.badIPs, publicV4(r.Uint64()))
	}
}

func localPart(r *rand.Rand, hosted bool) string {
	f, l := pick(r, firstNames), pick(r, lastNames)
	if hosted {
		switch r.IntN(10) {
		case 0, 1:
			return pick(r, roleParts)
		case 2, 3:
			return f[:1] + "." + l
		case 4:
			return f
		}
		return f + "." + l
	}
	switch r.IntN(8) {
	case 0:
		return f + "." + l
	case 1:
		return f + l + strconv.Itoa(r.IntN(100))
	case 2:
		return f[:1] + l
	case 3:
		return f + "." + l + strconv.Itoa(1950+r.IntN(60))
	case 4:
		return f + "_" + l
	case 5:
		return l + "." + f
	case 6:
		return f + strconv.Itoa(r.IntN(1000))
	}
	return f[:1] + "." + l + strconv.Itoa(r.IntN(10))
}

// ---- Time ----

// Relative activity by hour of a weekday (people) and of any day (bots).
var hourly = [24]float64{0.22, 0.15, 0.12, 0.1, 0.1, 0.15, 0.35, 0.8, 1.35, 1.6, 1.65, 1.6, 1.4, 1.5, 1.6, 1.55, 1.45, 1.3, 1.15, 1.05, 0.95, 0.8, 0.55, 0.35}
var hourlyWeekend = [24]float64{0.25, 0.18, 0.13, 0.1, 0.1, 0.1, 0.15, 0.25, 0.45, 0.65, 0.8, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.75, 0.65, 0.5, 0.35}

func (g *gen) diurnal(t int64) float64 {
	g.stamp.ensure(t / 1000)
	h := t % dayMS / hourMS
	// Smooth between hours so the rate has no steps.
	frac := float64(t%hourMS) / hourMS
	tab := &hourly
	if wd := g.stamp.wday; wd == 0 || wd == 6 {
		tab = &hourlyWeekend
	}
	return (tab[h]*(1-frac) + tab[(h+1)%24]*frac) / 0.925
}

func (g *gen) poisson(mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean < 30 {
		l := math.Exp(-mean)
		k, p := 0, g.r.Float64()
		for p > l {
			k++
			p *= g.r.Float64()
		}
		return k
	}
	x := mean + math.Sqrt(mean)*g.r.NormFloat64()
	if x < 0 {
		return 0
	}
	return int(x + 0.5)
}

// ---- Main loop ----

// run simulates minute by minute: plan the jobs starting in the minute, run
// them in time order (each queues its lines, possibly far ahead), then write
// every queued line older than the next minute, which no later job can
// precede.
func (g *gen) run() error {
	for m0 := g.t0; g.written < g.cfg.lines; m0 += 60_000 {
		m1 := m0 + 60_000
		g.activate(m0)
		g.jobs = g.jobs[:0]
		f := g.diurnal(m0)
		bots := 0.85 + 0.3*math.Sin(float64(m0%dayMS)/dayMS*2*math.Pi)
		for k := jSubmit; k <= jNoise; k++ {
			mean := g.perMin[k] * f
			if k == jSpam || k == jNoise {
				mean = g.perMin[k] * bots
			}
			for n := g.poisson(mean); n > 0; n-- {
				j := job{t: m0 + g.r.Int64N(60_000), kind: uint8(k)}
				switch k {
				case jSubmit:
					j.a = int32(g.sendA.pick(g.r))
				case jIMAP:
					j.a = int32(g.imapA.pick(g.r))
				case jPOP:
					j.a = int32(g.popA.pick(g.r))
				case jInbound:
					j.a = int32(g.recvA.pick(g.r))
				case jSpam:
					j.h = g.hosts[0]
					if g.r.IntN(100) < 30 {
						j.h = g.hosts[1]
					}
				}
				g.jobs = append(g.jobs, j)
			}
		}
		g.planActive(m0, m1)
		slices.SortFunc(g.jobs, func(a, b job) int { return cmp.Compare(a.t, b.t) })
		for i := range g.jobs {
			j := &g.jobs[i]
			switch j.kind {
			case jSubmit:
				g.submit(j.t, &g.accts[j.a])
			case jIMAP:
				g.imap(j.t, &g.accts[j.a], svcIMAP)
			case jPOP:
				g.imap(j.t, &g.accts[j.a], svcPOP)
			case jInbound:
				g.inbound(j.t, &g.accts[j.a])
			case jSpam:
				g.spamReject(j.t, j.h)
			case jNoise:
				g.noise(j.t)
			case jCampaign:
				g.runCampaign(j.t, j.c)
			}
		}
		if err := g.flush(m1); err != nil {
			return err
		}
	}
	return nil
}

// ---- Reports ----

func (g *gen) writeStats(path string, took time.Duration) error {
	kinds := map[string]int{}
	for _, c := range g.campaigns[:g.nextCamp] {
		if c.start <= g.last {
			kinds[c.kind]++
		}
	}
	s := map[string]any{
		"version":  version,
		"seed":     g.cfg.seed,
		"lines":    g.written,
		"bytes":    g.bytes,
		"year":     g.cfg.year,
		"start":    g.cfg.start,
		"accounts": g.cfg.accounts,
		"first":    msTime(g.first),
		"last":     msTime(g.last),
		"seconds":  math.Round(took.Seconds()*10) / 10,
		"lines_by_daemon": map[string]int64{
			"postfix": g.count.bySource[srcPostfix],
			"dovecot": g.count.bySource[srcDovecot],
			"exim":    g.count.bySource[srcExim],
		},
		"fail2ban_expected": map[string]int64{
			"postfix": g.count.f2b[f2bPostfix],
			"dovecot": g.count.f2b[f2bDovecot],
			"exim":    g.count.f2b[f2bExim],
		},
		"campaigns":                kinds,
		"background_auth_failures": g.count.noise,
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func (g *gen) writeTruth(path string) error {
	var sb strings.Builder
	for _, c := range g.campaigns[:g.nextCamp] {
		if c.start > g.last {
			continue
		}
		m := c.truth()
		if c.end > g.last {
			m["truncated"] = true
		}
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

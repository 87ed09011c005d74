package scenario

import (
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// The generator of the baseline replay: 35 days of authenticated Exim
// submissions (the "<=" arrival, "Completed" and connection-closed lines
// of exim_mainlog, one connection per message)
// for a population with a heavy tail of volumes, written in time order to
// a pipe so that a month of a few thousand accounts never sits in memory.

// blKind is a kind of account.
type blKind uint8

const (
	kOffice   blKind = iota // office hours, quiet weekends
	kHome                   // a few messages, evenings and weekends too
	kBusiness               // a small business: tens to hundreds a day
	kBulk                   // newsletters: the same batch every morning, weekends too
	kNew                    // opens during the month
	kBurst                  // one earlier burst (a mailing gone wrong, a past compromise)
	kGrower                 // volume grows 0.3–1.5 % a day all month (10–55 % a month)
	numKinds
)

var kindNames = [numKinds]string{"office", "home", "business", "bulk", "new", "burst", "grower"}

// blAccount is one generated account.
type blAccount struct {
	name    string
	ip      string
	kind    blKind
	rate    float64 // expected messages on a weekday at day 0
	weekend float64 // weekend factor
	rcpts   float64 // mean recipients per message
	cv      float64 // day-to-day variation of the rate (gamma)
	growth  float64 // per day
	start   int     // first day with mail
	from    int     // sending hours [from, to)
	to      int
	burst   int // day of the earlier burst, -1: none
	burstX  float64
}

// expected returns the account's expected messages on day d (without
// anomalies or bursts).
func (a *blAccount) expected(d int) float64 {
	if d < a.start {
		return 0
	}
	m := a.rate * math.Pow(1+a.growth, float64(d))
	if blWeekend(d) {
		m *= a.weekend
	}
	return m
}

func blWeekend(d int) bool { return d%7 == 5 || d%7 == 6 } // day0 is a Monday

// blAnomaly is an injected one-day volume anomaly: the trojan on the
// customer's PC, sending from the usual address.
type blAnomaly struct {
	acct       int
	day        int
	factor     float64 // the day's volume over the account's expected day
	start, end time.Time
	extra      int     // messages added to the day's ordinary ones (set by write)
	average    float64 // the account's average day of that kind over the 30 days before (set by write)
	skipped    bool    // the anomalous day would be under the floor: not injected (set by write)
	young      bool    // the account had too little history to have its own baseline
}

// blPopulation is the generated month.
type blPopulation struct {
	accts       []blAccount
	anomalies   []blAnomaly
	days        int
	seed        uint64
	minMessages int
}

// lognormal draws a heavy-tailed value with the given median.
func lognormal(r *rand.Rand, median, sigma float64) float64 {
	return median * math.Exp(sigma*r.NormFloat64())
}

// gamma draws from Gamma(shape, 1) (Marsaglia and Tsang).
func gamma(r *rand.Rand, shape float64) float64 {
	if shape < 1 {
		return gamma(r, shape+1) * math.Pow(r.Float64(), 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

// poisson draws from Poisson(lambda).
func poisson(r *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// newPopulation draws n accounts over days days and picks about 12 % of
// them for a one-day anomaly of 6–8× in the last week, on accounts whose
// anomalous day should be above the detector's floor of minMessages (a
// smaller "anomaly" is, by design, not one; write skips those that turn
// out under it).
func newPopulation(n, days int, seed uint64, minMessages int) *blPopulation {
	r := rand.New(rand.NewPCG(seed, 35))
	p := &blPopulation{days: days, seed: seed, minMessages: minMessages}
	for i := range n {
		a := blAccount{
			name:    "u" + strconv.Itoa(10000+i) + "@example.com",
			ip:      "198.18." + strconv.Itoa(i/250) + "." + strconv.Itoa(1+i%250),
			cv:      0.2 + 0.25*r.Float64(),
			rcpts:   1 + 1.5*r.Float64(),
			burst:   -1,
			from:    8,
			to:      18,
			weekend: 0.05 + 0.25*r.Float64(),
		}
		x := r.Float64()
		switch {
		case x < 0.43:
			a.kind = kOffice
		case x < 0.68:
			a.kind = kHome
		case x < 0.76:
			a.kind = kBusiness
		case x < 0.78:
			a.kind = kBulk
		case x < 0.86:
			a.kind = kNew
		case x < 0.93:
			a.kind = kBurst
		default:
			a.kind = kGrower
		}
		a.rate = min(max(lognormal(r, 9, 0.8), 1.5), 150)
		switch a.kind {
		case kHome:
			a.rate = min(max(lognormal(r, 1.2, 0.9), 0.1), 12)
			a.weekend = 0.8 + 0.7*r.Float64()
			a.from, a.to = 7, 23
		case kBusiness:
			a.rate = min(max(lognormal(r, 60, 0.7), 15), 800)
			a.weekend = 0.1 + 0.4*r.Float64()
			a.from, a.to = 7, 20
		case kBulk:
			a.rate = 30 + 120*r.Float64()
			a.rcpts = 20 + 40*r.Float64()
			a.weekend = 0.9 + 0.2*r.Float64()
			a.cv = 0.1 + 0.1*r.Float64()
			a.from = 4 + r.IntN(4)
			a.to = a.from + 2
		case kNew:
			a.start = 3 + r.IntN(days-4)
			if r.IntN(3) == 0 {
				a.rate = min(max(lognormal(r, 40, 0.8), 10), 300)
			}
		case kBurst:
			a.burst = 8 + r.IntN(17)
			a.burstX = 10 + 30*r.Float64()
		case kGrower:
			a.growth = 0.003 + 0.012*r.Float64()
		}
		p.accts = append(p.accts, a)
	}
	// Anomalies: the last week, one day each.
	for i := range p.accts {
		a := &p.accts[i]
		if r.Float64() > 0.12 {
			continue
		}
		d := days - 7 + r.IntN(7)
		f := 6 + 2*r.Float64()
		if a.expected(d)*f < 1.25*float64(minMessages) {
			continue
		}
		hist := 0 // days with traffic expected before the anomaly
		for x := a.start; x < d; x++ {
			if a.expected(x) >= 1 {
				hist++
			}
		}
		start := day0.Add(time.Duration(d)*24*time.Hour + time.Duration(6*3600+r.IntN(8*3600))*time.Second)
		dur := time.Duration(3*3600+r.IntN(6*3600)) * time.Second
		p.anomalies = append(p.anomalies, blAnomaly{acct: i, day: d, factor: f, start: start, end: start.Add(dur), young: hist < 14})
	}
	return p
}

// write writes the month as exim_mainlog lines to w, day by day in time
// order, and closes nothing.
func (p *blPopulation) write(w io.Writer) error {
	r := rand.New(rand.NewPCG(p.seed, 36))
	type msg struct {
		t     int64 // unix seconds
		acct  int32
		rcpts int32
		size  int32
	}
	byDay := map[int][]*blAnomaly{}
	for i := range p.anomalies {
		byDay[p.anomalies[i].day] = append(byDay[p.anomalies[i].day], &p.anomalies[i])
	}
	var msgs []msg
	sent := make([][]int, len(p.accts)) // messages per account and day
	for i := range sent {
		sent[i] = make([]int, p.days)
	}
	buf := make([]byte, 0, 1<<20)
	id := 0
	for d := 0; d < p.days; d++ {
		msgs = msgs[:0]
		base := day0.Add(time.Duration(d) * 24 * time.Hour).Unix()
		add := func(i int, t int64) {
			a := &p.accts[i]
			rc := 1 + poisson(r, a.rcpts-1)
			size := int32(min(lognormal(r, 6000, 1.1), 30<<20))
			msgs = append(msgs, msg{t, int32(i), int32(rc), size})
		}
		for i := range p.accts {
			a := &p.accts[i]
			m := a.expected(d)
			if m == 0 {
				continue
			}
			shape := 1 / (a.cv * a.cv)
			lambda := m * gamma(r, shape) / shape
			if d == a.burst {
				lambda *= a.burstX
			}
			n := poisson(r, lambda)
			span := int64(a.to-a.from) * 3600
			for range n {
				add(i, base+int64(a.from)*3600+r.Int64N(span))
			}
		}
		for _, an := range byDay[d] {
			// The day's total is factor × the account's average day of
			// the same kind (weekday, weekend) over the 30 days before,
			// its earlier burst left out: "500 % over its 30-day average".
			a := &p.accts[an.acct]
			sum, n := 0, 0
			for x := max(a.start, d-30); x < d; x++ {
				if blWeekend(x) == blWeekend(d) && x != a.burst {
					sum += sent[an.acct][x]
					n++
				}
			}
			normal := 0
			for _, m := range msgs {
				if int(m.acct) == an.acct {
					normal++
				}
			}
			if n > 0 {
				an.average = float64(sum) / float64(n)
			}
			total := int(math.Round(an.average * an.factor))
			if float64(total) < 1.1*float64(p.minMessages) {
				an.skipped = true // under the floor after all: no anomaly
				continue
			}
			an.extra = max(0, total-normal)
			span := an.end.Unix() - an.start.Unix()
			for range an.extra {
				add(an.acct, an.start.Unix()+r.Int64N(span))
			}
		}
		for _, m := range msgs {
			sent[m.acct][d]++
		}
		slices.SortFunc(msgs, func(a, b msg) int { return int(a.t - b.t) })
		for _, m := range msgs {
			a := &p.accts[m.acct]
			id++
			ts := time.Unix(m.t, 0).UTC().AppendFormat(nil, "2006-01-02 15:04:05")
			mid := blMsgID(id)
			buf = append(buf, ts...)
			buf = append(buf, " ["...)
			buf = strconv.AppendInt(buf, int64(10000+id%50000), 10)
			buf = append(buf, "] "...)
			buf = append(buf, mid...)
			buf = append(buf, " <= "...)
			buf = append(buf, a.name...)
			buf = append(buf, " H=(client) ["...)
			buf = append(buf, a.ip...)
			buf = append(buf, "]:"...)
			buf = strconv.AppendInt(buf, int64(40000+id%20000), 10)
			buf = append(buf, " I=[192.0.2.1]:587 P=esmtpsa X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no A=dovecot_plain:"...)
			buf = append(buf, a.name...)
			buf = append(buf, " S="...)
			buf = strconv.AppendInt(buf, int64(m.size), 10)
			buf = append(buf, " id="...)
			buf = append(buf, mid...)
			buf = append(buf, "@client for"...)
			for k := range m.rcpts {
				buf = append(buf, " r"...)
				buf = strconv.AppendInt(buf, int64(k), 10)
				buf = append(buf, "@example.net"...)
			}
			buf = append(buf, '\n')
			buf = append(buf, ts...)
			buf = append(buf, " ["...)
			buf = strconv.AppendInt(buf, int64(10000+id%50000), 10)
			buf = append(buf, "] "...)
			buf = append(buf, mid...)
			buf = append(buf, " Completed\n"...)
			buf = append(buf, ts...)
			buf = append(buf, " ["...)
			buf = strconv.AppendInt(buf, int64(10000+id%50000), 10)
			buf = append(buf, "] SMTP connection from (client) ["...)
			buf = append(buf, a.ip...)
			buf = append(buf, "]:"...)
			buf = strconv.AppendInt(buf, int64(40000+id%20000), 10)
			buf = append(buf, " I=[192.0.2.1]:587 closed by QUIT\n"...)
			if len(buf) > 1<<19 {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				buf = buf[:0]
			}
		}
	}
	_, err := w.Write(buf)
	return err
}

// blMsgID is an Exim 4.96 message id for sequence number n.
func blMsgID(n int) []byte {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := []byte("1vX000-000000-Ab")
	for i, x := 5, n; i >= 3; i-- {
		b[i] = digits[x%62]
		x /= 62
	}
	for i, x := 12, n/(62*62*62); i >= 7; i-- {
		b[i] = digits[x%62]
		x /= 62
	}
	return b
}

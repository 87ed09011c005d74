package main

import (
	"net/netip"
	"strconv"
	"time"
)

// entry is one finished log line waiting for its time to come.
type entry struct {
	t    int64 // milliseconds since the Unix epoch
	seq  uint64
	line []byte // includes the trailing newline
	meta uint8  // source (low bits) and fail2ban expectation, counted when written
}

// lineHeap is a binary min-heap ordered by (t, seq). It is hand-rolled to
// keep the hot path free of interface calls.
type lineHeap []entry

func (h lineHeap) less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].seq < h[j].seq
}

func (h *lineHeap) push(e entry) {
	*h = append(*h, e)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *lineHeap) pop() entry {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = entry{}
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s.less(r, l) {
			m = r
		}
		if !s.less(m, i) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

var monthAbbr = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// stamps caches the date parts of the current day: formatting a timestamp is
// then a handful of byte appends.
type stamps struct {
	day    int64
	bsd    []byte // "Nov  4 "
	iso    []byte // "2026-11-04 "
	year   int
	wday   time.Weekday
	inited bool
}

func (s *stamps) setDay(day int64) {
	s.day = day
	s.inited = true
	t := time.Unix(day*86400, 0).UTC()
	s.year = t.Year()
	s.wday = t.Weekday()
	s.bsd = s.bsd[:0]
	s.bsd = append(s.bsd, monthAbbr[t.Month()-1]...)
	s.bsd = append(s.bsd, ' ')
	if t.Day() < 10 {
		s.bsd = append(s.bsd, ' ')
	}
	s.bsd = strconv.AppendInt(s.bsd, int64(t.Day()), 10)
	s.bsd = append(s.bsd, ' ')
	s.iso = t.AppendFormat(s.iso[:0], "2006-01-02 ")
}

func append2(b []byte, v int64) []byte {
	return append(b, byte('0'+v/10), byte('0'+v%10))
}

func (s *stamps) appendClock(b []byte, sec int64) []byte {
	sod := sec - s.day*86400
	b = append2(b, sod/3600)
	b = append(b, ':')
	b = append2(b, sod/60%60)
	b = append(b, ':')
	return append2(b, sod%60)
}

func (s *stamps) ensure(sec int64) {
	day := sec / 86400
	if !s.inited || day != s.day {
		s.setDay(day)
	}
}

// appendBSD appends "Nov  4 09:11:01".
func (s *stamps) appendBSD(b []byte, ms int64) []byte {
	sec := ms / 1000
	s.ensure(sec)
	b = append(b, s.bsd...)
	return s.appendClock(b, sec)
}

// appendISO appends "2026-11-04 09:11:01" (Exim's own stamp).
func (s *stamps) appendISO(b []byte, ms int64) []byte {
	sec := ms / 1000
	s.ensure(sec)
	b = append(b, s.iso...)
	return s.appendClock(b, sec)
}

// Line building. A line is started with begin (syslog prefix) or beginExim,
// filled with the chainable appenders and handed to the heap with end.

func (g *gen) begin(t int64, h *host, prog string, pid int) *gen {
	g.lt = t
	g.lmeta = srcOf(prog)
	b := g.stamp.appendBSD(g.buf[:0], t)
	b = append(b, ' ')
	b = append(b, h.name...)
	b = append(b, ' ')
	b = append(b, prog...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, ']', ':', ' ')
	g.buf = b
	return g
}

// beginExim starts an Exim line as syslog carries it: the syslog prefix, then
// Exim's own timestamp (syslog_timestamp = true, Exim's default).
func (g *gen) beginExim(t int64, h *host, pid int) *gen {
	g.begin(t, h, "exim", pid)
	g.buf = g.stamp.appendISO(g.buf, t)
	g.buf = append(g.buf, ' ')
	return g
}

func (g *gen) s(x string) *gen { g.buf = append(g.buf, x...); return g }

func (g *gen) c(x byte) *gen { g.buf = append(g.buf, x); return g }

func (g *gen) n(x int) *gen { g.buf = strconv.AppendInt(g.buf, int64(x), 10); return g }

func (g *gen) ip(a netip.Addr) *gen { g.buf = a.AppendTo(g.buf); return g }

// hostip appends Postfix's "name[ip]".
func (g *gen) hostip(name string, a netip.Addr) *gen {
	if name == "" {
		name = "unknown"
	}
	g.buf = append(g.buf, name...)
	g.buf = append(g.buf, '[')
	g.buf = a.AppendTo(g.buf)
	g.buf = append(g.buf, ']')
	return g
}

// eximHost appends Exim's "H=name (helo) [ip]:port".
func (g *gen) eximHost(name, helo string, a netip.Addr, port int) *gen {
	g.buf = append(g.buf, "H="...)
	if name != "" {
		g.buf = append(g.buf, name...)
		if helo != name {
			g.buf = append(g.buf, " ("...)
			g.buf = append(g.buf, helo...)
			g.buf = append(g.buf, ')')
		}
	} else {
		g.buf = append(g.buf, '(')
		g.buf = append(g.buf, helo...)
		g.buf = append(g.buf, ')')
	}
	g.buf = append(g.buf, " ["...)
	g.buf = a.AppendTo(g.buf)
	g.buf = append(g.buf, "]:"...)
	g.buf = strconv.AppendInt(g.buf, int64(port), 10)
	return g
}

// secs appends a duration the way Postfix prints delays: "0.45", "1.2", "12".
func (g *gen) secs(ms int64) *gen {
	if ms < 0 {
		ms = 0
	}
	switch {
	case ms >= 10000:
		g.buf = strconv.AppendInt(g.buf, ms/1000, 10)
	case ms >= 1000:
		g.buf = strconv.AppendInt(g.buf, ms/1000, 10)
		if d := ms % 1000 / 100; d != 0 {
			g.buf = append(g.buf, '.', byte('0'+d))
		}
	default:
		cs := ms / 10
		if cs == 0 {
			g.buf = append(g.buf, '0')
			break
		}
		g.buf = append(g.buf, '0', '.', byte('0'+cs/10))
		if cs%10 != 0 {
			g.buf = append(g.buf, byte('0'+cs%10))
		}
	}
	return g
}

// Line metadata: which daemon wrote it, and which stock fail2ban filter is
// expected to count it as a failure (see fail2ban-regex in ../analyze.sh).
const (
	srcPostfix = iota
	srcDovecot
	srcExim
	srcMask = 3

	f2bNone    = 0
	f2bPostfix = 1 // postfix[mode=extra]: SASL failures and RCPT rejects
	f2bDovecot = 2 // dovecot: auth failures and failed-login disconnects
	f2bExim    = 3 // exim: authenticator failures, unauthenticated RCPT rejects
	f2bShift   = 2
)

func srcOf(prog string) uint8 {
	switch prog[0] {
	case 'd':
		return srcDovecot
	case 'e':
		return srcExim
	}
	return srcPostfix
}

// fail marks the current line as one the given fail2ban filter should match.
func (g *gen) fail(filter uint8) *gen {
	g.lmeta = g.lmeta&srcMask | filter<<f2bShift
	return g
}

// end finishes the line and queues it.
func (g *gen) end() {
	g.buf = append(g.buf, '\n')
	n := len(g.buf)
	if len(g.chunk)+n > cap(g.chunk) {
		size := 1 << 20
		if n > size {
			size = n
		}
		g.chunk = make([]byte, 0, size)
	}
	start := len(g.chunk)
	g.chunk = append(g.chunk, g.buf...)
	g.seq++
	g.heap.push(entry{t: g.lt, seq: g.seq, line: g.chunk[start:len(g.chunk):len(g.chunk)], meta: g.lmeta})
}

// flush writes every queued line older than until, stopping at the line budget.
func (g *gen) flush(until int64) error {
	for len(g.heap) > 0 && g.heap[0].t < until && g.written < g.cfg.lines {
		e := g.heap.pop()
		if g.written == 0 {
			g.first = e.t
		}
		g.last = e.t
		if _, err := g.w.Write(e.line); err != nil {
			return err
		}
		g.written++
		g.bytes += int64(len(e.line))
		g.count.bySource[e.meta&srcMask]++
		if f := e.meta >> f2bShift; f != 0 {
			g.count.f2b[f]++
		}
	}
	return nil
}

package exim

import (
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// pending is an arrival waiting for its recipients, or (arrived false) the
// recipients of a cutthrough delivery, which Exim logs before the arrival.
type pending struct {
	ev      event.Event
	arrived bool
	seq     uint64
	first   time.Time // log time of the first line seen for the message
	n       int       // distinct recipients counted (or all, past maxTracked)
	hashes  []uint64  // distinct recipients while few
	set     map[uint64]struct{}
}

// queued is one entry of the held ids in arrival order; seq tells a live
// entry from one that was completed and re-used.
type queued struct {
	id  string
	seq uint64
}

const (
	// maxTracked bounds the recipient hashes kept over all held arrivals;
	// past it recipients are counted without removing duplicates.
	maxTracked = 1 << 20
	// smallSet is the size up to which a held arrival keeps its recipient
	// hashes in a slice.
	smallSet = 32
	// maxFree bounds the recycled entries kept for reuse.
	maxFree = 1024
)

func (e *pending) final() event.Event {
	ev := e.ev
	ev.Rcpts = max(e.n, 1)
	return ev
}

// add counts a recipient once.
func (p *Parser) add(e *pending, h uint64) {
	if p.tracked >= maxTracked {
		e.n++
		return
	}
	if e.set != nil {
		if _, dup := e.set[h]; dup {
			return
		}
		e.set[h] = struct{}{}
	} else {
		for _, x := range e.hashes {
			if x == h {
				return
			}
		}
		if len(e.hashes) < smallSet {
			e.hashes = append(e.hashes, h)
		} else {
			e.set = make(map[uint64]struct{}, 2*smallSet)
			for _, x := range e.hashes {
				e.set[x] = struct{}{}
			}
			e.set[h] = struct{}{}
			e.hashes = nil
		}
	}
	e.n++
	p.tracked++
}

// arrival handles "<= sender H=... P=... A=auth:id S=size id=... for r1 r2",
// the text after "<= ". Exim's own bounces ("<= <> R=<id of the bounced
// message> U=Exim-user P=local") are ignored: their failed recipients already
// count for the bounced message.
func (p *Parser) arrival(c *ctx, id, s string, dst []event.Event) ([]event.Event, maillog.Result) {
	sender, r := nextToken(s)
	if sender == "" {
		return dst, maillog.Unknown
	}
	var (
		h       host
		t       tags
		ref     string
		size    int64 = -1
		rcpts   int
		forList bool
	)
	// Fields after S= matter only for the recipient list at the end.
	mayList := strings.Contains(r, " for ")
	for {
		r = trimSpaces(r)
		if r == "" {
			break
		}
		if strings.HasPrefix(r, "H=") {
			hh, rest, ok := parseHost(r[2:])
			if !ok {
				return dst, maillog.Unknown
			}
			h, r = hh, rest
			continue
		}
		tok, next := nextToken(r)
		r = next
		switch {
		case tok == "for":
			forList, rcpts, r = true, countTokens(r), ""
		case tok == "from": // +received_sender: "from <sender>"
			_, r = nextToken(r)
		case strings.HasPrefix(tok, "S="):
			n, ok := atoi(tok[2:])
			if !ok {
				return dst, maillog.Unknown
			}
			size = n
			if !mayList {
				r = ""
			}
		case strings.HasPrefix(tok, "A="):
			t.auth = tok[2:]
		case strings.HasPrefix(tok, "R="):
			ref = tok[2:]
		case strings.HasPrefix(tok, "Ci="):
			t.ci = tok[3:]
		}
	}
	if size < 0 {
		return dst, maillog.Unknown // every arrival line has S=; this one is cut
	}
	if sender == "<>" && ref != "" {
		p.drop(id)
		return dst, maillog.Ignored
	}
	e := c.ev(event.Message)
	e.IP = h.ip
	e.Session = session(h, t.ci, c.pid, false)
	e.Account = event.NormalizeAccount(authID(t.auth))
	e.Size = size
	e.QueueID = id
	if forList {
		p.drop(id)
		e.Rcpts = max(rcpts, 1)
		return append(dst, e), maillog.Parsed
	}
	return p.hold(e, dst), maillog.Parsed
}

// countTokens counts the space-separated words of s.
func countTokens(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			in = false
		} else if !in {
			in = true
			n++
		}
	}
	return n
}

// hold keeps an arrival until its recipients are counted. Strings are copied:
// the held event outlives the line.
func (p *Parser) hold(e event.Event, dst []event.Event) []event.Event {
	// One copy for the four strings.
	all := e.QueueID + e.Account + e.Session + e.Node
	n1, n2, n3 := len(e.QueueID), len(e.QueueID)+len(e.Account), len(e.QueueID)+len(e.Account)+len(e.Session)
	e.QueueID, e.Account, e.Session, e.Node = all[:n1], all[n1:n2], all[n2:n3], all[n3:]
	if x := p.held[e.QueueID]; x != nil {
		x.ev, x.arrived = e, true
		return dst
	}
	x := p.newPending(e.QueueID, e.Time)
	x.ev, x.arrived = e, true
	if len(p.held) > MaxHeld {
		dst = p.evictOldest(dst)
	}
	return dst
}

func (p *Parser) newPending(id string, t time.Time) *pending {
	p.seq++
	var x *pending
	if n := len(p.free); n > 0 {
		x, p.free = p.free[n-1], p.free[:n-1]
		x.seq, x.first = p.seq, t
	} else {
		x = &pending{seq: p.seq, first: t}
	}
	p.held[id] = x
	p.order = append(p.order, queued{id: id, seq: p.seq})
	return x
}

// drop forgets a held message without emitting it.
func (p *Parser) drop(id string) {
	if x := p.held[id]; x != nil {
		p.forget(id, x)
	}
}

// forget removes a held entry and recycles it; read it before.
func (p *Parser) forget(id string, x *pending) {
	p.tracked -= len(x.hashes) + len(x.set)
	delete(p.held, id)
	if len(p.free) < maxFree && x.set == nil {
		*x = pending{hashes: x.hashes[:0]}
		p.free = append(p.free, x)
	}
}

// delivery counts the recipient of a delivery line ("=> addr <top> R=...",
// "** addr <top>: error", "== addr R=... defer ...") for a held arrival.
// A cutthrough delivery (">>") is logged before its arrival: it starts an
// entry that the arrival completes.
func (p *Parser) delivery(id, flag, s string, t time.Time) {
	x := p.held[id]
	if x == nil {
		if flag != ">>" || len(p.held) >= MaxHeld {
			return
		}
		id = strings.Clone(id)
		x = p.newPending(id, t)
	}
	p.add(x, hashAddr(recipient(s)))
}

// recipient returns the address a delivery line is for: the top-level
// (envelope) address in "<...>" when Exim logs one after the delivered
// address and its optional "(parents)", else the delivered address.
func recipient(s string) string {
	addr, rest := nextToken(s)
	addr = strings.TrimSuffix(addr, ":")
	rest = trimSpaces(rest)
	if strings.HasPrefix(rest, "(") {
		if j := strings.IndexByte(rest, ')'); j >= 0 {
			rest = trimSpaces(rest[j+1:])
		}
	}
	if strings.HasPrefix(rest, "<") {
		if j := strings.IndexByte(rest, '>'); j > 0 {
			return rest[1:j]
		}
	}
	if len(addr) >= 2 && addr[0] == '<' && addr[len(addr)-1] == '>' {
		addr = addr[1 : len(addr)-1]
	}
	return addr
}

// hashAddr is FNV-1a over the ASCII-lower-cased address.
func hashAddr(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// completed emits the held arrival of a "Completed" line.
func (p *Parser) completed(id string, dst []event.Event) ([]event.Event, maillog.Result) {
	x := p.held[id]
	if x == nil {
		return dst, maillog.Ignored
	}
	arrived, ev := x.arrived, x.final()
	p.forget(id, x)
	if !arrived {
		return dst, maillog.Ignored
	}
	return append(dst, ev), maillog.Parsed
}

// expire emits held arrivals older than HoldFor at log time now and drops
// cutthrough entries whose arrival never came. An entry more than HoldFor
// in the future of now (the log time went back: another file, a restored
// clock) is released too, so that it cannot block the queue.
func (p *Parser) expire(now time.Time, dst []event.Event) []event.Event {
	for p.head < len(p.order) {
		q := p.order[p.head]
		x := p.held[q.id]
		if x != nil && x.seq == q.seq {
			if age := now.Sub(x.first); age <= HoldFor && age >= -HoldFor {
				break
			}
			if x.arrived {
				dst = append(dst, x.final())
			}
			p.forget(q.id, x)
		}
		p.order[p.head] = queued{}
		p.head++
	}
	p.compact()
	return dst
}

// evictOldest emits the oldest held arrival to make room.
func (p *Parser) evictOldest(dst []event.Event) []event.Event {
	for p.head < len(p.order) {
		q := p.order[p.head]
		p.order[p.head] = queued{}
		p.head++
		if x := p.held[q.id]; x != nil && x.seq == q.seq {
			if x.arrived {
				dst = append(dst, x.final())
			}
			p.forget(q.id, x)
			break
		}
	}
	p.compact()
	return dst
}

// compact reclaims the consumed part of the order queue, and drops entries of
// completed messages when they make up most of it.
func (p *Parser) compact() {
	switch {
	case p.head == len(p.order):
		p.order, p.head = p.order[:0], 0
	case p.head > 4096 && p.head > len(p.order)/2:
		n := copy(p.order, p.order[p.head:])
		clear(p.order[n:])
		p.order, p.head = p.order[:n], 0
	case len(p.order)-p.head > 4*MaxHeld:
		live := p.order[:0]
		for _, q := range p.order[p.head:] {
			if x := p.held[q.id]; x != nil && x.seq == q.seq {
				live = append(live, q)
			}
		}
		clear(p.order[len(live):])
		p.order, p.head = live, 0
	}
}

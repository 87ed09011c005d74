package replay

import (
	"container/heap"
	"net/netip"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// Merger yields the events of several streams in timestamp order (a stable
// merge: ties keep file order). Each stream is assumed ordered on its own,
// as log files are.
type Merger struct {
	Streams []*Stream
	Since   time.Time // events before are skipped (zero: no bound)
	Until   time.Time // events at or after are skipped (zero: no bound)

	h      mergeHeap
	primed bool
	dedup  failDedup
	cur    event.Event
}

type head struct {
	ev  *event.Event
	idx int
	s   *Stream
}

type mergeHeap []head

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	if !h[i].ev.Time.Equal(h[j].ev.Time) {
		return h[i].ev.Time.Before(h[j].ev.Time)
	}
	return h[i].idx < h[j].idx
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(head)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Next returns the next event in time order, or nil when all streams end.
// The event is valid until the next call.
func (m *Merger) Next() *event.Event {
	if !m.primed {
		m.primed = true
		for i, s := range m.Streams {
			if ev := s.Next(); ev != nil {
				m.h = append(m.h, head{ev, i, s})
			}
		}
		heap.Init(&m.h)
	}
	for len(m.h) > 0 {
		top := m.h[0]
		ev := *top.ev
		if nxt := top.s.Next(); nxt != nil {
			m.h[0].ev = nxt
			heap.Fix(&m.h, 0)
		} else {
			heap.Pop(&m.h)
		}
		if (!m.Since.IsZero() && ev.Time.Before(m.Since)) || (!m.Until.IsZero() && !ev.Time.Before(m.Until)) {
			continue
		}
		if m.dedup.duplicate(&ev) {
			continue
		}
		m.cur = ev
		return &m.cur
	}
	return nil
}

// failDedup drops an authentication failure that a second server logged
// for the same attempt: Postfix's "SASL … authentication failed" and
// Dovecot's auth "Password mismatch" for one SMTP AUTH through Dovecot SASL,
// or Exim's authenticator line and Dovecot's. Same address, same account,
// different source, within two seconds.
type failDedup struct {
	m map[dedupKey]dedupVal
}

type dedupKey struct {
	ip      netip.Addr
	account string
}

type dedupVal struct {
	source string
	t      time.Time
	n      int // attempts of the earlier record not yet matched
}

const dedupMax = 4096

func (d *failDedup) duplicate(ev *event.Event) bool {
	if ev.Kind != event.AuthFail || ev.Account == "" || !ev.IP.IsValid() {
		return false
	}
	if d.m == nil {
		d.m = make(map[dedupKey]dedupVal)
	}
	k := dedupKey{ev.IP, ev.Account}
	if v, ok := d.m[k]; ok && v.source != ev.Source && ev.Time.Sub(v.t) <= 2*time.Second && v.n > 0 {
		v.n -= ev.N()
		d.m[k] = v
		return true
	}
	if len(d.m) >= dedupMax {
		for k2, v2 := range d.m {
			if ev.Time.Sub(v2.t) > 2*time.Second {
				delete(d.m, k2)
			}
		}
		if len(d.m) >= dedupMax {
			clear(d.m)
		}
	}
	k.account = strings.Clone(k.account) // do not pin the input chunk
	d.m[k] = dedupVal{ev.Source, ev.Time, ev.N()}
	return false
}

// Counts sums the streams' line statistics.
func (m *Merger) Counts() Counts {
	var c Counts
	for _, s := range m.Streams {
		c.Lines += s.Counts.Lines
		c.Unparsed += s.Counts.Unparsed
		c.Ignored += s.Counts.Ignored
		c.Events += s.Counts.Events
		c.Bytes += s.Counts.Bytes
	}
	return c
}

// Close closes every stream.
func (m *Merger) Close() {
	for _, s := range m.Streams {
		s.Close()
	}
}

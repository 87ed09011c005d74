package dovecot

import (
	"net/netip"
	"strings"
	"time"
)

// recent remembers, per session and per IP+account, how many auth-process
// failures were emitted in the last few minutes of log time, so that the
// login process's "auth failed, N attempts" line of the same connection
// adds only the attempts not yet counted. It also pairs a PAM module's
// syslog failure with Dovecot's own pam_authenticate() line for the same
// attempt. The table is bounded: past max entries the oldest is dropped.
type recent struct {
	m    map[recentKey]recentSlot
	q    []queued // insertion order, with stale entries
	head int
	seq  uint64
	max  int
}

const (
	defaultRecentMax = 65536
	recentWindow     = 5 * 60 // seconds: an auth failure and its login line
	pamWindow        = 60     // seconds: a PAM syslog line and Dovecot's
)

type keyKind uint8

const (
	keySession keyKind = iota + 1
	keyIPAccount
	keyPAM
)

type recentKey struct {
	kind keyKind
	ip   netip.Addr
	s    string // session or account
}

type recentSlot struct {
	n   int
	t   int64 // unix seconds of the last failure
	seq uint64
}

type queued struct {
	k   recentKey
	seq uint64
}

func newRecent(max int) recent {
	return recent{m: make(map[recentKey]recentSlot), max: max}
}

func within(a, b int64, window int64) bool {
	d := a - b
	return d <= window && d >= -window
}

// get returns the live slot of k.
func (r *recent) get(k recentKey, now int64, window int64) (recentSlot, bool) {
	s, ok := r.m[k]
	if !ok || s.n <= 0 || !within(now, s.t, window) {
		return recentSlot{}, false
	}
	return s, true
}

func (r *recent) bump(k recentKey, now int64, window int64) {
	k.s = strings.Clone(k.s) // the table and its queue outlive the input line
	s, ok := r.get(k, now, window)
	if !ok {
		s = recentSlot{}
	}
	r.seq++
	s.n++
	s.t = now
	s.seq = r.seq
	r.m[k] = s
	r.q = append(r.q, queued{k, r.seq})
	for len(r.m) > r.max && r.head < len(r.q) {
		e := r.q[r.head]
		r.q[r.head] = queued{}
		r.head++
		if cur, ok := r.m[e.k]; ok && cur.seq == e.seq {
			delete(r.m, e.k)
		}
	}
	if live := len(r.q) - r.head; live > 2*len(r.m)+1024 || r.head > 4096 && r.head > len(r.q)/2 {
		r.compact()
	}
}

// compact drops stale queue entries.
func (r *recent) compact() {
	q := r.q[:0]
	for _, e := range r.q[r.head:] {
		if cur, ok := r.m[e.k]; ok && cur.seq == e.seq {
			q = append(q, e)
		}
	}
	clear(r.q[len(q):])
	r.q, r.head = q, 0
}

// consume takes up to c from k.
func (r *recent) consume(k recentKey, c int) {
	s, ok := r.m[k]
	if !ok {
		return
	}
	if s.n -= min(c, s.n); s.n == 0 {
		delete(r.m, k)
		return
	}
	// Assigning to an existing string key replaces the stored key: copy it
	// so that the table does not pin the input line.
	k.s = strings.Clone(k.s)
	r.m[k] = s
}

// add records one auth-process failure.
func (r *recent) add(session string, ip netip.Addr, acct string, t time.Time) {
	now := t.Unix()
	if session != "" {
		r.bump(recentKey{kind: keySession, s: session}, now, recentWindow)
	}
	if ip.IsValid() {
		r.bump(recentKey{kind: keyIPAccount, ip: ip, s: acct}, now, recentWindow)
	}
}

// addSession records a failure already recorded by IP+account under its
// session too.
func (r *recent) addSession(session string, t time.Time) {
	if session != "" {
		r.bump(recentKey{kind: keySession, s: session}, t.Unix(), recentWindow)
	}
}

// take returns how many of the n attempts of a login line were already
// emitted from auth-process lines, and forgets them.
func (r *recent) take(session string, ip netip.Addr, acct string, n int, t time.Time) int {
	if len(r.m) == 0 {
		return 0
	}
	now := t.Unix()
	sk := recentKey{kind: keySession, s: session}
	ik := recentKey{kind: keyIPAccount, ip: ip, s: acct}
	var avail int
	if s, ok := r.get(sk, now, recentWindow); ok && session != "" {
		avail = s.n
	} else if s, ok := r.get(ik, now, recentWindow); ok {
		avail = s.n
	}
	c := min(n, avail)
	if c > 0 {
		if session != "" {
			r.consume(sk, c)
		}
		r.consume(ik, c)
	}
	return c
}

// forget drops what a successful login's connection had pending.
func (r *recent) forget(session string, ip netip.Addr, acct string) {
	if len(r.m) == 0 {
		return
	}
	ik := recentKey{kind: keyIPAccount, ip: ip, s: acct}
	if session == "" {
		delete(r.m, ik)
		return
	}
	sk := recentKey{kind: keySession, s: session}
	if s, ok := r.m[sk]; ok {
		delete(r.m, sk)
		r.consume(ik, s.n)
	}
}

// markPam records a PAM module's failure line for ip.
func (r *recent) markPam(ip netip.Addr, t time.Time) {
	r.bump(recentKey{kind: keyPAM, ip: ip}, t.Unix(), pamWindow)
}

// pamSeen reports (and forgets) a recent PAM module failure line for ip.
func (r *recent) pamSeen(ip netip.Addr, t time.Time) bool {
	if len(r.m) == 0 {
		return false
	}
	k := recentKey{kind: keyPAM, ip: ip}
	if _, ok := r.get(k, t.Unix(), pamWindow); !ok {
		return false
	}
	r.consume(k, 1)
	return true
}

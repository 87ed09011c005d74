package engine

import (
	"net/netip"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
)

// keyKind says what a tracked key stands for.
type keyKind uint8

const (
	kAccount keyKind = iota + 1
	kIP              // a client address (IPv6 /64)
	kPair            // account + address (spamware)
	kSession         // one SMTP connection (per_connection)
)

type key struct {
	kind keyKind
	s    string     // account or session id
	ip   netip.Addr // address (NetKey)
}

// node is one tracked key in the LRU list. Exactly one of the state
// pointers is set.
type node struct {
	k          key
	prev, next *node
	acct       *acctState
	ip         *ipState
	pair       *pairState
	sess       *sessState
}

// store holds all per-key detector state, capped at max keys with
// least-recently-used eviction, so that an attacker spraying millions of
// addresses cannot grow memory without bound. Each kind of key has a map of
// its own (string keys take Go's fast string path); one list orders them
// all by use.
type store struct {
	max     int
	accts   map[string]*node
	ips     map[netip.Addr]*node
	pairs   map[pairKey]*node
	sess    map[string]*node
	head    node // sentinel: head.next is the most recently used
	evicted uint64
}

type pairKey struct {
	a  string
	ip netip.Addr
}

func newStore(max int) *store {
	hint := min(max, 1<<14)
	s := &store{max: max, accts: make(map[string]*node, hint), ips: make(map[netip.Addr]*node, hint),
		pairs: make(map[pairKey]*node, hint), sess: make(map[string]*node)}
	s.head.next, s.head.prev = &s.head, &s.head
	return s
}

func (s *store) len() int { return len(s.accts) + len(s.ips) + len(s.pairs) + len(s.sess) }

func (s *store) unlink(n *node) {
	n.prev.next, n.next.prev = n.next, n.prev
}

func (s *store) pushFront(n *node) {
	n.next, n.prev = s.head.next, &s.head
	s.head.next.prev = n
	s.head.next = n
}

func (s *store) lookup(k key) *node {
	switch k.kind {
	case kAccount:
		return s.accts[k.s]
	case kIP:
		return s.ips[k.ip]
	case kPair:
		return s.pairs[pairKey{k.s, k.ip}]
	default:
		return s.sess[k.s]
	}
}

func (s *store) remove(k key) {
	switch k.kind {
	case kAccount:
		delete(s.accts, k.s)
	case kIP:
		delete(s.ips, k.ip)
	case kPair:
		delete(s.pairs, pairKey{k.s, k.ip})
	default:
		delete(s.sess, k.s)
	}
}

// get returns the node for k, creating it when absent, and marks it used.
func (s *store) get(k key) (*node, bool) {
	if n := s.lookup(k); n != nil {
		if s.head.next != n {
			s.unlink(n)
			s.pushFront(n)
		}
		return n, false
	}
	for s.len() >= s.max {
		old := s.head.prev
		s.unlink(old)
		s.remove(old.k)
		s.evicted++
	}
	k.s = strings.Clone(k.s) // do not pin the log line a name came from
	n := &node{k: k}
	switch k.kind {
	case kAccount:
		s.accts[k.s] = n
	case kIP:
		s.ips[k.ip] = n
	case kPair:
		s.pairs[pairKey{k.s, k.ip}] = n
	default:
		s.sess[k.s] = n
	}
	s.pushFront(n)
	return n, true
}

// peek returns the node for k without creating it or marking it used.
func (s *store) peek(k key) *node { return s.lookup(k) }

func (s *store) del(k key) {
	if n := s.lookup(k); n != nil {
		s.unlink(n)
		s.remove(k)
	}
}

func (s *store) account(a string) *acctState {
	n, _ := s.get(key{kind: kAccount, s: a})
	if n.acct == nil {
		n.acct = &acctState{}
	}
	return n.acct
}

func (s *store) addr(ip netip.Addr) *ipState {
	n, _ := s.get(key{kind: kIP, ip: ip})
	if n.ip == nil {
		n.ip = &ipState{}
	}
	return n.ip
}

func (s *store) pairOf(a string, ip netip.Addr) *pairState {
	n, _ := s.get(key{kind: kPair, s: a, ip: ip})
	if n.pair == nil {
		n.pair = &pairState{}
	}
	return n.pair
}

func (s *store) session(id string) *sessState {
	n, _ := s.get(key{kind: kSession, s: id})
	if n.sess == nil {
		n.sess = &sessState{}
	}
	return n.sess
}

// ipAcct is what one address did with one account.
type ipAcct struct {
	fails    int
	lastFail time.Time
	stale    bool // the account is known on this network: an old password, not a guess
}

func ipAcctLast(v *ipAcct) time.Time { return v.lastFail }

// loginRec is one account that logged in from an address (hashed: only
// distinct counting is needed).
type loginRec struct {
	h uint32
	t int64 // unix seconds
}

// ipState is what is known about one client address (IPv6 /64). Most
// addresses only ever log in; failure state is allocated on the first
// failure.
type ipState struct {
	seen [8]loginRec
	f    *ipFail
}

// pwSeen is one distinct wrong password tried from an address.
type pwSeen struct {
	h uint32
	t int64 // unix seconds
}

// ipFail is the failure history of an address.
type ipFail struct {
	fails     counter // failures that look like guesses, short window
	failsLong counter // the same, long window
	stale     counter // failures from clients with an old password
	firstFail time.Time
	lastFail  time.Time
	accts     recent[string, ipAcct]
	pwhashes  []pwSeen // distinct wrong passwords (hashed again), at most maxPwHashes
	fired     firedSet
}

func (s *ipState) fail() *ipFail {
	if s.f == nil {
		s.f = &ipFail{}
	}
	return s.f
}

// addLogin records a successful login of account from the address.
func (s *ipState) addLogin(account string, t time.Time) {
	h := fnv32(account)
	old := 0
	for i := range s.seen {
		if s.seen[i].h == h && s.seen[i].t != 0 {
			s.seen[i].t = t.Unix()
			return
		}
		if s.seen[i].t < s.seen[old].t {
			old = i
		}
	}
	s.seen[old] = loginRec{h, t.Unix()}
}

// logins returns how many distinct accounts logged in successfully from the
// address within w (a NAT or proxy serves many users); at most 8.
func (s *ipState) logins(t time.Time, w time.Duration) int {
	n := 0
	cut := t.Add(-w).Unix()
	for _, r := range s.seen {
		if r.t != 0 && r.t > cut {
			n++
		}
	}
	return n
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// netUse is one network's use of an account within a window.
type netUse struct {
	ip       netip.Addr // last full address
	first    time.Time
	last     time.Time
	messages int
	logins   int
	known    bool // known for the account before this window
}

func netUseLast(v *netUse) time.Time { return v.last }

// known is a network an account has logged in from.
type knownNet struct {
	first, last time.Time
}

func knownLast(v *knownNet) time.Time { return v.last }

// failIP is one address failing for an account.
type failIP struct {
	ip    netip.Addr
	n     int
	first time.Time
	last  time.Time
}

func failIPLast(v *failIP) time.Time { return v.last }

// acctState is what is known about one account.
type acctState struct {
	known     recent[netip.Prefix, knownNet] // networks with successful logins
	smtpNets  recent[netip.Prefix, netUse]   // SMTP use per network, botnet window
	mboxNets  recent[netip.Prefix, netUse]   // IMAP/POP use per network, harvest window
	failIPs   recent[netip.Addr, failIP]     // addresses failing for the account
	badRcpt   counter
	msgs24    counter // rolling 24 h
	rcpts24   counter
	bytes24   wideCounter // in KiB
	msgsWin   counter     // harvest window
	history   *baseline.History
	fired     firedSet
	holdUntil time.Time
	holdInc   *Incident
	capInc    *Incident // the daily_caps incident deferring this account
}

// pairState is one account sending from one address.
type pairState struct {
	msgs  counter
	rcpts counter
	first time.Time
}

// sessState is one SMTP connection.
type sessState struct {
	msgs  int
	ip    netip.Addr
	first time.Time
	fired bool
}

// firedSet remembers until when each detector stays quiet for a key, so
// that one attack makes one incident and not one per event (unix
// nanoseconds: a third of the size of time.Time).
type firedSet struct {
	until [numDetectors]int64
}

func (f *firedSet) quiet(d detector, t time.Time) bool { return t.UnixNano() < f.until[d] }
func (f *firedSet) set(d detector, until time.Time)    { f.until[d] = until.UnixNano() }
func (f *firedSet) end(d detector) time.Time           { return time.Unix(0, f.until[d]) }

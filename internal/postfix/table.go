package postfix

// table is a map bounded to a fixed number of entries: when it is full, an
// insert evicts the oldest inserted entry. It keeps join state (sessions by
// pid, messages by queue id) from growing without bound on an endless log.
type table[K comparable, V any] struct {
	max  int
	m    map[K]*slot[V] // pointers: an update must not reassign (and so replace) a key
	ring []ringKey[K]   // insertion order, grown up to max; entries whose seq no longer matches are stale
	head int            // index of the oldest ring entry once the ring is full
	seq  uint64
}

type slot[V any] struct {
	v   V
	seq uint64
}

type ringKey[K comparable] struct {
	k   K
	seq uint64
}

func newTable[K comparable, V any](limit int) *table[K, V] {
	return &table[K, V]{max: max(limit, 1), m: make(map[K]*slot[V])}
}

func (t *table[K, V]) get(k K) (V, bool) {
	s, ok := t.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	return s.v, true
}

// put stores v under k. An existing entry keeps its age.
func (t *table[K, V]) put(k K, v V) {
	if s, ok := t.m[k]; ok {
		// Updated in place: reassigning an existing key would also replace
		// the stored key (Go does so for strings) with the caller's, which
		// points into a log line.
		s.v = v
		return
	}
	t.seq++
	rk := ringKey[K]{k: k, seq: t.seq}
	if len(t.ring) < t.max {
		t.ring = append(t.ring, rk)
	} else {
		old := t.ring[t.head]
		if s, ok := t.m[old.k]; ok && s.seq == old.seq {
			delete(t.m, old.k)
		}
		t.ring[t.head] = rk
		t.head = (t.head + 1) % len(t.ring)
	}
	t.m[k] = &slot[V]{v: v, seq: t.seq}
}

func (t *table[K, V]) del(k K) { delete(t.m, k) }

func (t *table[K, V]) len() int { return len(t.m) }

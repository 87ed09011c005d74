package engine

import "time"

// nbuckets is the resolution of a sliding-window counter: counts are exact
// to within one bucket (window/nbuckets) at the window's old edge.
const nbuckets = 12

// counter counts events in a sliding window of event time with constant
// memory (32 bytes). Events older than the window (out of order) are
// dropped; a bucket saturates at 65 535.
type counter = counterOf[uint16]

// wideCounter is a counter for large amounts (bytes).
type wideCounter = counterOf[uint32]

type counterOf[T uint16 | uint32] struct {
	head    int64 // absolute bucket number of the newest bucket
	buckets [nbuckets]T
}

func bucketOf(t time.Time, w time.Duration) int64 {
	width := int64(w) / nbuckets
	if width <= 0 {
		width = 1
	}
	return t.UnixNano() / width
}

func (c *counterOf[T]) advance(b int64) {
	if b <= c.head {
		return
	}
	if b-c.head >= nbuckets {
		c.buckets = [nbuckets]T{}
	} else {
		for i := c.head + 1; i <= b; i++ {
			c.buckets[i%nbuckets] = 0
		}
	}
	c.head = b
}

// add counts n at t and returns the window's sum at t.
func (c *counterOf[T]) add(t time.Time, w time.Duration, n int) int {
	b := bucketOf(t, w)
	c.advance(b)
	if b > c.head-nbuckets && n > 0 {
		// Saturates at the bucket's maximum: far past every threshold.
		x := &c.buckets[((b%nbuckets)+nbuckets)%nbuckets]
		*x = T(min(uint64(*x)+uint64(n), uint64(^T(0))))
	}
	return c.sum()
}

// sumAt returns the window's sum at t without adding.
func (c *counterOf[T]) sumAt(t time.Time, w time.Duration) int {
	c.advance(bucketOf(t, w))
	return c.sum()
}

func (c *counterOf[T]) sum() int {
	s := 0
	for _, v := range c.buckets {
		s += int(v)
	}
	return s
}

// recent is a capped map of keys to the time they were last seen, for
// "distinct X in a window" questions. When full, the entry seen longest ago
// makes room.
type recent[K comparable, V any] struct {
	m map[K]*V
}

func (r *recent[K, V]) get(k K) *V {
	if r.m == nil {
		return nil
	}
	return r.m[k]
}

// put returns the entry for k, creating it (evicting by oldest(V) when the
// map holds max entries).
func (r *recent[K, V]) put(k K, max int, last func(*V) time.Time) (*V, bool) {
	if r.m == nil {
		r.m = make(map[K]*V, 4)
	}
	if v, ok := r.m[k]; ok {
		return v, false
	}
	if len(r.m) >= max {
		var oldK K
		var oldT time.Time
		first := true
		for k2, v2 := range r.m {
			if t := last(v2); first || t.Before(oldT) {
				oldK, oldT, first = k2, t, false
			}
		}
		delete(r.m, oldK)
	}
	v := new(V)
	r.m[k] = v
	return v, true
}

// prune drops entries last seen before cutoff.
func (r *recent[K, V]) prune(cutoff time.Time, last func(*V) time.Time) {
	for k, v := range r.m {
		if last(v).Before(cutoff) {
			delete(r.m, k)
		}
	}
}

// rekey moves the entry at old to new (to replace a key that pins a large
// string with a copy of it).
func (r *recent[K, V]) rekey(old, new K) {
	if v, ok := r.m[old]; ok {
		delete(r.m, old)
		r.m[new] = v
	}
}

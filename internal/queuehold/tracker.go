package queuehold

import (
	"container/list"
	"sync"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

// MaxTracked bounds the queue ids a Tracker remembers over all accounts;
// past it the oldest are forgotten first.
const MaxTracked = 100_000

// maxAccountLen bounds an account name the Tracker keeps.
const maxAccountLen = 512

// Tracker remembers the recent queue ids of each account: at most
// MaxPerAccount per account (the newest), none older than Remember, and
// MaxTracked in all. Ids that are not of the configured MTA's format are
// ignored. It is safe for concurrent use.
type Tracker struct {
	mu         sync.Mutex
	mta        string
	remember   time.Duration
	perAccount int
	max        int
	order      list.List // *tracked, in the order added (oldest first)
	accounts   map[string]*accountIDs
}

type tracked struct {
	account, id string
	at          time.Time
}

// accountIDs are one account's entries in the order added, and its ids.
type accountIDs struct {
	elems []*list.Element
	ids   map[string]struct{}
}

// NewTracker returns an empty Tracker with cfg's bounds (7 days and 1000
// per account where cfg gives none).
func NewTracker(cfg config.QueueHold) *Tracker {
	t := &Tracker{
		mta:        cfg.MTA,
		remember:   cfg.Remember.D(),
		perAccount: cfg.MaxPerAccount,
		max:        MaxTracked,
		accounts:   make(map[string]*accountIDs),
	}
	if t.remember <= 0 {
		t.remember = 7 * 24 * time.Hour
	}
	if t.perAccount <= 0 {
		t.perAccount = 1000
	}
	return t
}

// Add remembers that account queued the message queueID at the time at.
// An id already remembered for the account keeps its first time.
func (t *Tracker) Add(account, queueID string, at time.Time) {
	if account == "" || len(account) > maxAccountLen || !ValidID(t.mta, queueID) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expire(at)
	acc := t.accounts[account]
	if acc == nil {
		acc = &accountIDs{ids: make(map[string]struct{})}
		t.accounts[account] = acc
	}
	if _, dup := acc.ids[queueID]; dup {
		return
	}
	acc.ids[queueID] = struct{}{}
	acc.elems = append(acc.elems, t.order.PushBack(&tracked{account: account, id: queueID, at: at}))
	if len(acc.elems) > t.perAccount {
		t.remove(acc.elems[0])
	}
	for t.order.Len() > t.max {
		t.remove(t.order.Front())
	}
}

// IDs returns the account's queue ids added no earlier than Remember
// before now, oldest first.
func (t *Tracker) IDs(account string, now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	acc := t.accounts[account]
	if acc == nil {
		return nil
	}
	cutoff := now.Add(-t.remember)
	var ids []string
	for _, e := range acc.elems {
		if tr := e.Value.(*tracked); !tr.at.Before(cutoff) {
			ids = append(ids, tr.id)
		}
	}
	return ids
}

// Forget drops every id of the account (after they were held).
func (t *Tracker) Forget(account string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	acc := t.accounts[account]
	if acc == nil {
		return
	}
	for _, e := range acc.elems {
		t.order.Remove(e)
	}
	delete(t.accounts, account)
}

// Len returns the number of ids remembered over all accounts.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// expire drops the oldest entries while they are older than Remember
// before now. (Entries come roughly in time order; one out of order is
// dropped when it reaches the front, and IDs skips it before that.)
func (t *Tracker) expire(now time.Time) {
	cutoff := now.Add(-t.remember)
	for e := t.order.Front(); e != nil && e.Value.(*tracked).at.Before(cutoff); e = t.order.Front() {
		t.remove(e)
	}
}

// remove drops one entry, which is the oldest of its account: entries
// are only removed from the front of the global order or of the
// account's own list.
func (t *Tracker) remove(e *list.Element) {
	tr := t.order.Remove(e).(*tracked)
	acc := t.accounts[tr.account]
	i := 0
	for i < len(acc.elems) && acc.elems[i] != e {
		i++
	}
	if i == len(acc.elems) {
		return
	}
	acc.elems[i] = nil
	if i == 0 {
		acc.elems = acc.elems[1:]
	} else {
		acc.elems = append(acc.elems[:i], acc.elems[i+1:]...)
	}
	delete(acc.ids, tr.id)
	if len(acc.elems) == 0 {
		delete(t.accounts, tr.account)
		return
	}
	// Shrink an array that is mostly unused.
	if cap(acc.elems) > 64 && cap(acc.elems) > 4*len(acc.elems) {
		acc.elems = append([]*list.Element(nil), acc.elems...)
	}
}

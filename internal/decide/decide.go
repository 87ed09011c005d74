// Package decide is the contract between mailwarden's live sources — the
// Postfix policy, Exim readsocket and Dovecot auth-policy listeners and the
// log tailer — and the daemon that owns the engine and the durable state.
//
// A source turns a protocol request into an event (stamped with its clock,
// never the engine's), asks for a verdict, and turns the verdict into the
// protocol's answer. It never decides anything itself.
package decide

import (
	"net/netip"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// Decider answers live sources. Implementations are safe for concurrent
// use and answer quickly; on internal trouble they answer engine.Allow
// (mail must never stop because mailwarden has a problem).
type Decider interface {
	// Decide records ev (it feeds the detectors) and returns its verdict.
	Decide(ev *event.Event) engine.Verdict
	// Check returns the verdict for an account and address at t without
	// recording anything (a question asked before authentication).
	Check(account string, ip netip.Addr, t time.Time) engine.Verdict
}

// Clock returns the current time; sources take one so tests can set it.
type Clock func() time.Time

package maillog

import "github.com/mailwarden/mailwarden/internal/event"

// Result says what a parser made of a framed line.
type Result uint8

// Results.
const (
	Unknown Result = iota // not a line this parser knows (garbage, truncated, another program)
	Ignored               // a known line that carries nothing for detection
	Parsed                // understood; events were appended or are held for a join
)

// Parser turns framed lines of one server's log into events. Parsers are
// stateful (they join lines by queue id, message id or process id) and not
// safe for concurrent use. Their join tables are bounded.
type Parser interface {
	// Parse appends the events of l to dst. Events held for a join may be
	// appended on a later call, with their own (earlier) time.
	Parse(l *Line, dst []event.Event) ([]event.Event, Result)
	// Flush appends every event still held for a join (end of input).
	Flush(dst []event.Event) []event.Event
}

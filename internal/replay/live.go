package replay

import (
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// Lines frames and parses lines handed to it one at a time, with the same
// framer and parsers as a Stream: the parsing half of a Stream for a source
// that does its own reading (the log tailer). Keep one Lines per log file so
// that the parsers' joins see every line of that log. Not safe for
// concurrent use.
type Lines struct {
	Counts Counts // Lines, Unparsed, Ignored and Events; Bytes is the caller's

	fr  maillog.Framer
	d   *dispatcher
	o   Options
	day int // now's year*1000+yearday at the last Parse, to renew the framer's date cache
}

// NewLines returns a Lines with empty join tables. o.Year 0 infers the year
// of BSD syslog timestamps from the reference time given to Parse.
func NewLines(o Options) *Lines {
	p := &Lines{d: newDispatcher(), o: o}
	p.fr.Loc, p.fr.Year = o.Loc, o.Year
	return p
}

// Parse appends the events of one line (with or without its line end) to
// dst. now is the reference for the year of BSD syslog timestamps: a date
// more than a day after it belongs to the year before. Events held for a
// join may come out on a later call, or at Flush.
func (p *Lines) Parse(line string, now time.Time, dst []event.Event) []event.Event {
	p.Counts.Lines++
	if p.o.Year == 0 {
		loc := p.o.Loc
		if loc == nil {
			loc = time.UTC
		}
		nl := now.In(loc)
		if day := nl.Year()*1000 + nl.YearDay(); day != p.day {
			// The framer keeps the year of the last date it saw; a new
			// day of the clock may change the year a date belongs to.
			p.fr = maillog.Framer{Loc: p.o.Loc}
			p.day = day
		}
	}
	p.fr.Ref = now
	var l maillog.Line
	if line == "" || !p.fr.Frame(line, &l) {
		p.Counts.Unparsed++
		return dst
	}
	n := len(dst)
	dst, res := p.d.parse(&l, dst)
	switch res {
	case maillog.Unknown:
		p.Counts.Unparsed++
	case maillog.Ignored:
		p.Counts.Ignored++
	}
	p.Counts.Events += int64(len(dst) - n)
	return dst
}

// Skip counts a line that was not read whole (longer than MaxLine) as a
// line that did not parse.
func (p *Lines) Skip() {
	p.Counts.Lines++
	p.Counts.Unparsed++
}

// Flush appends every event still held for a join and empties the join
// tables (end of input, or a source that stops).
func (p *Lines) Flush(dst []event.Event) []event.Event {
	n := len(dst)
	dst = p.d.flush(dst)
	p.Counts.Events += int64(len(dst) - n)
	return dst
}

// Dedup drops the second record of one authentication failure that two
// servers logged (Postfix or Exim, and Dovecot's auth), as a Merger does:
// same address and account, different source, within two seconds. The zero
// value is ready; not safe for concurrent use.
type Dedup struct {
	d failDedup
}

// Duplicate reports whether ev repeats a failure already seen.
func (d *Dedup) Duplicate(ev *event.Event) bool { return d.d.duplicate(ev) }

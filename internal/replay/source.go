// Package replay reads mail logs (files, .gz, stdin), frames and parses their
// lines with the Exim, Postfix and Dovecot parsers, merges several files in
// timestamp order and hands the events, in order, to a consumer (the engine
// in `mailwarden analyze`). Lines that do not parse are counted, never fatal.
//
// It does not detect anything and does not format output.
package replay

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/mailwarden/mailwarden/internal/dovecot"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/exim"
	"github.com/mailwarden/mailwarden/internal/maillog"
	"github.com/mailwarden/mailwarden/internal/postfix"
)

// MaxLine is the longest line read whole; longer lines are skipped (counted
// as unparsed) without growing memory.
const MaxLine = 64 * 1024

// Options tune how lines are read.
type Options struct {
	Loc  *time.Location // zone of timestamps without one (nil: UTC)
	Year int            // year of BSD syslog timestamps (0: from the file date)
}

// Counts are a stream's line statistics.
type Counts struct {
	Lines    int64 // lines read
	Unparsed int64 // lines no parser understood (garbage, truncated, unknown shapes)
	Ignored  int64 // known lines that carry nothing for detection, and other programs' lines
	Events   int64 // events produced
	Bytes    int64 // bytes read
}

// dispatcher routes framed lines to the parser of their server.
type dispatcher struct {
	ex *exim.Parser
	pf *postfix.Parser
	dc *dovecot.Parser
}

func newDispatcher() *dispatcher {
	return &dispatcher{ex: exim.New(), pf: postfix.New(), dc: dovecot.New()}
}

func (d *dispatcher) parse(l *maillog.Line, dst []event.Event) ([]event.Event, maillog.Result) {
	switch {
	case postfix.Owns(l):
		return d.pf.Parse(l, dst)
	case dovecot.Owns(l):
		return d.dc.Parse(l, dst)
	case exim.Owns(l):
		return d.ex.Parse(l, dst)
	}
	if l.Program != "" && l.Host != "" {
		return dst, maillog.Ignored // another program in a shared mail.log
	}
	return dst, maillog.Unknown
}

func (d *dispatcher) flush(dst []event.Event) []event.Event {
	dst = d.pf.Flush(dst)
	dst = d.dc.Flush(dst)
	return d.ex.Flush(dst)
}

// Stream yields the events of one input in order of its lines. Reading,
// framing and parsing run in a goroutine of their own, a batch ahead of the
// consumer, so that replay uses a second core for the engine.
type Stream struct {
	Name   string
	Counts Counts // of the batches consumed so far

	r      *bufio.Reader
	closer io.Closer
	fr     maillog.Framer
	d      *dispatcher
	pos    int
	done   bool
	err    error

	started bool
	batches chan *batch
	free    chan *batch
	stop    chan struct{}
	cur     *batch
	arena   []byte // block that event strings are copied into (producer side)
	pc      Counts // producer's running counts
	perr    error
	pdone   bool
}

// batch is a slice of events with the line counts that produced them.
type batch struct {
	evs    []event.Event
	counts Counts
	err    error
	last   bool
}

const batchEvents = 1024

// Open opens a log file ("-" is stdin; a .gz name or gzip magic is
// decompressed).
func Open(name string, o Options) (*Stream, error) {
	s := &Stream{Name: name, d: newDispatcher()}
	s.fr.Loc, s.fr.Year = o.Loc, o.Year
	var f io.ReadCloser
	if name == "-" {
		f = io.NopCloser(os.Stdin)
		s.fr.Ref = time.Now()
	} else {
		ff, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		if st, err := ff.Stat(); err == nil {
			s.fr.Ref = st.ModTime()
		}
		f = ff
	}
	br := bufio.NewReaderSize(&countReader{r: f, n: &s.pc.Bytes}, 256*1024)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		br = bufio.NewReaderSize(zr, 256*1024)
	} else if strings.HasSuffix(name, ".gz") {
		f.Close()
		return nil, fmt.Errorf("%s: not in gzip format", name)
	}
	s.r, s.closer = br, f
	return s, nil
}

// NewStream reads from r (tests, stdin).
func NewStream(name string, r io.Reader, o Options, ref time.Time) *Stream {
	s := &Stream{Name: name, d: newDispatcher()}
	s.fr.Loc, s.fr.Year, s.fr.Ref = o.Loc, o.Year, ref
	s.r = bufio.NewReaderSize(&countReader{r: r, n: &s.pc.Bytes}, 256*1024)
	return s
}

type countReader struct {
	r io.Reader
	n *int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// Close stops the reader and releases the input.
func (s *Stream) Close() error {
	if s.started && s.stop != nil {
		close(s.stop)
		s.stop = nil
		for range s.batches { // let the producer finish
		}
	}
	if s.closer != nil {
		return s.closer.Close()
	}
	return nil
}

// Err returns the read error that ended the stream, if any.
func (s *Stream) Err() error { return s.err }

// Next returns the next event, or nil at the end of the input. The event
// is valid until the next call.
func (s *Stream) Next() *event.Event {
	if !s.started {
		s.start()
	}
	for s.cur == nil || s.pos >= len(s.cur.evs) {
		if s.cur != nil {
			last := s.cur.last
			s.free <- s.cur
			s.cur = nil
			if last {
				s.done = true
			}
		}
		if s.done {
			return nil
		}
		b, ok := <-s.batches
		if !ok {
			s.done = true
			return nil
		}
		s.cur, s.pos = b, 0
		s.Counts.Lines += b.counts.Lines
		s.Counts.Unparsed += b.counts.Unparsed
		s.Counts.Ignored += b.counts.Ignored
		s.Counts.Events += b.counts.Events
		s.Counts.Bytes = b.counts.Bytes
		if b.err != nil {
			s.err = b.err
		}
	}
	ev := &s.cur.evs[s.pos]
	s.pos++
	return ev
}

func (s *Stream) start() {
	s.started = true
	s.batches = make(chan *batch, 4)
	s.free = make(chan *batch, 6)
	s.stop = make(chan struct{})
	for i := 0; i < 6; i++ {
		s.free <- &batch{evs: make([]event.Event, 0, batchEvents+64)}
	}
	go s.produce(s.stop)
}

// produce reads and parses the input into batches until it ends or stop
// is closed.
func (s *Stream) produce(stop chan struct{}) {
	defer close(s.batches)
	for {
		var b *batch
		select {
		case b = <-s.free:
		case <-stop:
			return
		}
		b.evs, b.err, b.last = b.evs[:0], nil, false
		before := s.pc
		for len(b.evs) < batchEvents && !s.pdone {
			b.evs = s.fill(b.evs)
		}
		b.counts = Counts{
			Lines:    s.pc.Lines - before.Lines,
			Unparsed: s.pc.Unparsed - before.Unparsed,
			Ignored:  s.pc.Ignored - before.Ignored,
			Events:   s.pc.Events - before.Events,
			Bytes:    s.pc.Bytes,
		}
		b.err, b.last = s.perr, s.pdone
		select {
		case s.batches <- b:
		case <-stop:
			return
		}
		if b.last {
			return
		}
	}
}

// fill reads lines until at least one event is appended or input ends.
func (s *Stream) fill(dst []event.Event) []event.Event {
	var l maillog.Line
	start := len(dst)
	for len(dst) == start {
		line, err := s.readLine()
		if err != nil {
			if err != io.EOF {
				s.perr = fmt.Errorf("%s: %w", s.Name, err)
			}
			n := len(dst)
			dst = s.d.flush(dst)
			s.pc.Events += int64(len(dst) - n)
			s.pdone = true
			return dst
		}
		s.pc.Lines++
		if line == "" || !s.fr.Frame(line, &l) {
			s.pc.Unparsed++
			continue
		}
		n := len(dst)
		var res maillog.Result
		dst, res = s.d.parse(&l, dst)
		s.own(dst[n:]) // the line's bytes are reused by the next read
		switch res {
		case maillog.Unknown:
			s.pc.Unparsed++
		case maillog.Ignored:
			s.pc.Ignored++
		}
		s.pc.Events += int64(len(dst) - n)
	}
	return dst
}

// readLine returns the next line without its end; a line longer than
// MaxLine is returned as "" (unparsed) after skipping it. The string is a
// view of the reader's buffer, valid until the next call: parsers copy what
// they keep in their join tables, and own copies the events' strings.
func (s *Stream) readLine() (string, error) {
	b, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull || (err == nil && len(b) > MaxLine) {
		for err == bufio.ErrBufferFull {
			_, err = s.r.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return "", err
		}
		return "", nil
	}
	if err == io.EOF && len(b) > 0 {
		err = nil
	}
	if err != nil {
		return "", err
	}
	if len(b) > MaxLine || len(b) == 0 {
		return "", nil
	}
	return unsafe.String(&b[0], len(b)), nil
}

// arenaSize is the size of the blocks event strings are copied into: one
// allocation for hundreds of events instead of one string per line.
const arenaSize = 64 << 10

// own copies the strings of freshly parsed events out of the read buffer.
func (s *Stream) own(evs []event.Event) {
	for i := range evs {
		e := &evs[i]
		e.Account = s.keep(e.Account)
		e.Session = s.keep(e.Session)
		e.QueueID = s.keep(e.QueueID)
		e.Node = s.keep(e.Node)
		e.PwHash = s.keep(e.PwHash)
		e.Source = s.keep(e.Source)
	}
}

func (s *Stream) keep(str string) string {
	if str == "" {
		return ""
	}
	if len(s.arena)+len(str) > cap(s.arena) {
		s.arena = make([]byte, 0, max(arenaSize, len(str)))
	}
	start := len(s.arena)
	s.arena = append(s.arena, str...)
	return unsafe.String(&s.arena[start], len(str))
}

// Package tail follows mail log files as they are written, the log source
// of `mailwarden serve`: it reads each complete line once, frames and parses
// it with the same parsers as replay (one set per file, so that joins by
// queue id or process id work), and hands the events, in line order, to a
// callback of the daemon.
//
// It follows the ways logs are rotated: by rename (logrotate's default: the
// old file is read to its end, then the new one from its start), by
// copytruncate (the file shrinks, or starts with other bytes: it is read
// again from its start, after the lines written since the last read are
// taken from the copy when the copy is found next to it), and a file that
// does not exist yet or disappears for a while. Files are polled at
// Config.Poll.
//
// Each file's position (device, inode, the offset of the end of the last
// line handed out, and a hash of the file's first bytes) is saved through an
// OffsetStore, so that after a stop and start no line is read twice and
// none is skipped (after a crash, the lines read since the last save, at
// most Config.SaveEvery of them, come again). A file with no saved position is read from its end: a live
// daemon does not replay history (that is `mailwarden analyze`'s job)
// unless Config.FromStart says so.
//
// What it cannot promise: rotations closer together than a poll skip the
// generations in between (only the newest and the one being read are
// seen); a copy that is compressed at once (copytruncate without
// delaycompress) cannot supply the lines written since the last read; the
// parsers' joins do not survive a restart, so a message in flight then may
// lose its account; and events an Exim parser holds for their recipient
// count are handed out at stop, but lost on a crash (their lines are behind
// the saved position).
//
// It does not read compressed files, the systemd journal or syslog over the
// network, and it decides nothing: the callback does.
package tail

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailwarden/mailwarden/internal/decide"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/replay"
)

// Defaults of Config.
const (
	DefaultPoll      = 250 * time.Millisecond
	DefaultSaveEvery = time.Second
)

// Config says what to follow and how.
type Config struct {
	// Paths are the log files to follow. A path, as written here, is the key
	// of its saved position: keep it the same across restarts.
	Paths []string
	// Store keeps positions across restarts. nil: none are kept, and every
	// start is a first start.
	Store OffsetStore
	// FromStart reads a file that has no saved position from its start.
	// Default false: from its end, so that a starting daemon does not act
	// on old lines. A file that does not exist at start is read from its
	// start when it appears, either way.
	FromStart bool
	// Poll is how often files are checked for new lines, rotation and
	// truncation. Default 250ms.
	Poll time.Duration
	// SaveEvery is the shortest time between two saves of a file's position
	// while lines flow. Default 1s. Positions are always saved at stop.
	SaveEvery time.Duration
	// Loc is the zone of timestamps that carry none. Default time.Local:
	// the zone of the machine that writes the logs.
	Loc *time.Location
	// Clock is the current time, from which BSD syslog timestamps (which
	// have no year) take their year: a date more than a day ahead of it
	// belongs to the year before. Default time.Now.
	Clock decide.Clock
	// Logf reports trouble that does not stop following: a file that cannot
	// be opened or read, a position that cannot be saved. Each distinct
	// trouble of a file is reported once. Default: discarded.
	Logf func(format string, args ...any)
}

// Counts are the statistics of one followed file.
type Counts struct {
	Lines       int64 // complete lines read, including skipped ones
	Events      int64 // events handed to the callback
	Unparsed    int64 // lines no parser understood (garbage, unknown shapes), including TooLong
	Ignored     int64 // known lines that carry nothing for detection, and other programs' lines
	TooLong     int64 // lines longer than replay.MaxLine, skipped unread
	Duplicates  int64 // events dropped as a second server's record of one failure
	Bytes       int64 // bytes read
	Rotations   int64 // moves to a new file after a rename
	Truncations int64 // restarts from the start of a file that shrank or was rewritten
	Errors      int64 // failures to open, read, or save the position
}

func (c *Counts) add(o Counts) {
	c.Lines += o.Lines
	c.Events += o.Events
	c.Unparsed += o.Unparsed
	c.Ignored += o.Ignored
	c.TooLong += o.TooLong
	c.Duplicates += o.Duplicates
	c.Bytes += o.Bytes
	c.Rotations += o.Rotations
	c.Truncations += o.Truncations
	c.Errors += o.Errors
}

// FileStats describe one followed file.
type FileStats struct {
	Path    string // the followed path
	Reading string // the file being read: Path, a rotated file being finished, or "" while waiting for Path
	Offset  int64  // end of the last complete line handed out
	Counts  Counts
}

// Stats are the follower's statistics.
type Stats struct {
	Files []FileStats
	Total Counts
}

// Follower follows log files. Create it with New, run it once with Run.
type Follower struct {
	cfg   Config
	emit  func(*event.Event)
	files []*file
	dedup replay.Dedup
	evs   []event.Event
	buf   []byte

	lastSave time.Time
	ready    chan struct{}
	running  atomic.Bool

	mu    sync.Mutex // guards the published statistics
	stats []FileStats
}

// New returns a Follower of c.Paths that hands every event to emit. emit is
// called from Run's goroutine, one event at a time, in the order of each
// file's lines; the event is valid only during the call (copy it to keep
// it). A slow emit slows reading, never loses lines.
func New(c Config, emit func(*event.Event)) (*Follower, error) {
	if len(c.Paths) == 0 {
		return nil, errors.New("tail: no log file to follow")
	}
	if emit == nil {
		return nil, errors.New("tail: no callback for the events")
	}
	if c.Poll <= 0 {
		c.Poll = DefaultPoll
	}
	if c.SaveEvery <= 0 {
		c.SaveEvery = DefaultSaveEvery
	}
	if c.Loc == nil {
		c.Loc = time.Local
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	f := &Follower{cfg: c, emit: emit, ready: make(chan struct{}), buf: make([]byte, chunkSize)}
	seen := make(map[string]bool)
	for i, p := range c.Paths {
		if p == "" {
			return nil, errors.New("tail: empty log file name")
		}
		if seen[p] {
			return nil, fmt.Errorf("tail: log file %s listed twice: follow each file once", p)
		}
		seen[p] = true
		f.files = append(f.files, &file{idx: i, path: p, lp: replay.NewLines(replay.Options{Loc: c.Loc})})
	}
	f.stats = make([]FileStats, len(f.files))
	for i, fl := range f.files {
		f.stats[i].Path = fl.path
	}
	return f, nil
}

// Ready is closed once every file has been positioned: lines appended after
// that are read. It stays open when Run fails at start.
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Stats returns the current statistics; safe to call from any goroutine.
func (f *Follower) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := Stats{Files: make([]FileStats, len(f.stats))}
	copy(s.Files, f.stats)
	for _, fs := range s.Files {
		s.Total.add(fs.Counts)
	}
	return s
}

// Run follows the files until ctx is done. At stop it hands out the events
// the parsers still hold for a join, saves every position and returns nil,
// or the errors of the last saves. It returns an error at once when a
// saved position cannot be loaded.
func (f *Follower) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("tail: Run called twice")
	}
	if err := f.begin(); err != nil {
		f.closeAll()
		return err
	}
	close(f.ready)
	t := time.NewTicker(f.cfg.Poll)
	defer t.Stop()
	for {
		busy := f.round()
		if busy {
			select {
			case <-ctx.Done():
				return f.stop()
			default:
				continue
			}
		}
		select {
		case <-ctx.Done():
			return f.stop()
		case <-t.C:
		}
	}
}

// begin positions every file.
func (f *Follower) begin() error {
	for _, fl := range f.files {
		if err := f.start(fl); err != nil {
			return err
		}
		f.publish(fl)
	}
	return nil
}

// round reads what every file has; busy means a file has more to read now.
func (f *Follower) round() (busy bool) {
	for _, fl := range f.files {
		if f.step(fl) {
			busy = true
		}
		f.publish(fl)
	}
	f.save(false)
	return busy
}

// stop hands out held events and saves every position.
func (f *Follower) stop() error {
	for _, fl := range f.files {
		f.evs = fl.lp.Flush(f.evs[:0])
		f.hand(fl)
	}
	err := f.save(true)
	for _, fl := range f.files {
		f.publish(fl)
	}
	f.closeAll()
	return err
}

func (f *Follower) closeAll() {
	for _, fl := range f.files {
		fl.close()
	}
}

// hand gives f.evs to the callback, dropping a second server's record of
// one failure.
func (f *Follower) hand(fl *file) {
	for i := range f.evs {
		ev := &f.evs[i]
		if f.dedup.Duplicate(ev) {
			fl.n.Duplicates++
			continue
		}
		fl.n.Events++
		f.emit(ev)
	}
	clear(f.evs)
	f.evs = f.evs[:0]
}

// save writes the positions that changed, at most every SaveEvery unless
// forced.
func (f *Follower) save(force bool) error {
	if f.cfg.Store == nil {
		return nil
	}
	now := time.Now()
	if !force && now.Sub(f.lastSave) < f.cfg.SaveEvery {
		return nil
	}
	var errs []error
	for _, fl := range f.files {
		if !fl.dirty {
			continue
		}
		if err := f.cfg.Store.Save(fl.path, fl.position()); err != nil {
			fl.fail(f.cfg.Logf, "saving the position", err)
			errs = append(errs, fmt.Errorf("tail: %s: saving position: %w", fl.path, err))
			continue
		}
		fl.dirty = false
		fl.ok("saving the position")
	}
	f.lastSave = now
	return errors.Join(errs...)
}

// publish copies a file's statistics for Stats.
func (f *Follower) publish(fl *file) {
	c := fl.n
	lc := fl.lp.Counts
	c.Lines, c.Unparsed, c.Ignored = lc.Lines, lc.Unparsed, lc.Ignored
	reading := ""
	if fl.f != nil {
		reading = fl.name
	}
	f.mu.Lock()
	st := &f.stats[fl.idx]
	st.Reading, st.Offset, st.Counts = reading, fl.cur.off, c
	f.mu.Unlock()
}

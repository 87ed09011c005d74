package tail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mailwarden/mailwarden/internal/replay"
)

const (
	// chunkSize is the size of one read.
	chunkSize = 64 * 1024
	// readBudget is how much one file may read in a round before the other
	// files get their turn.
	readBudget = 1 << 20
)

// file is the reading state of one followed path.
type file struct {
	idx  int
	path string
	lp   *replay.Lines // the file's own framer and parsers, kept across rotations

	f    *os.File    // the file being read; nil while waiting for path
	name string      // its name: path, or a rotated file being finished
	fi   os.FileInfo // its identity when opened
	dev  uint64
	ino  uint64
	cur  cursor
	head []byte // the file's first min(cur.off, HeadBytes) bytes

	pending  *Position         // a saved position to apply when path can be opened
	atEnd    bool              // open path at its end (it existed at start, with no saved position)
	dirty    bool              // the position changed since it was last saved
	n        Counts            // Lines, Unparsed and Ignored come from lp
	troubles map[string]string // what failed -> how, reported once until it works again
}

// cursor is where reading stands in one file.
type cursor struct {
	off  int64  // end of the last complete line handed out
	rd   int64  // next byte to read
	part []byte // the incomplete line from off to rd
	skip bool   // inside a line longer than replay.MaxLine that starts at off
}

// position is what is saved of fl.
func (fl *file) position() Position {
	if fl.f == nil {
		// Waiting for the file: read it from its start when it appears.
		return Position{}
	}
	p := Position{Dev: fl.dev, Ino: fl.ino, Offset: fl.cur.off, HeadLen: len(fl.head)}
	if len(fl.head) > 0 {
		p.HeadSum = headSum(fl.head)
	}
	return p
}

// set makes fp (named name) the file read, from off.
func (fl *file) set(fp *os.File, name string, fi os.FileInfo, off int64, skip bool) {
	if fl.f != nil && fl.f != fp {
		fl.f.Close()
	}
	fl.f, fl.name, fl.fi = fp, name, fi
	fl.dev, fl.ino = fileID(fi)
	fl.cur = cursor{off: off, rd: off, skip: skip}
	fl.head = nil
	fl.updateHead()
	fl.dirty = true
	fl.ok("opening")
	fl.ok("reading the rotated file")
	fl.ok("reading the rotated copy")
}

func (fl *file) close() {
	if fl.f != nil {
		fl.f.Close()
		fl.f = nil
	}
}

// updateHead keeps the identifying start of the file as lines are read.
func (fl *file) updateHead() {
	want := min(fl.cur.off, HeadBytes)
	if int64(len(fl.head)) >= want {
		return
	}
	if b, err := readHead(fl.f, int(want)); err == nil && int64(len(b)) == want {
		fl.head = b
	}
}

// fail counts and reports the trouble of doing what, once until it works
// again or fails otherwise.
func (fl *file) fail(logf func(string, ...any), what string, err error) {
	msg := err.Error()
	if fl.troubles[what] == msg {
		return
	}
	if fl.troubles == nil {
		fl.troubles = make(map[string]string)
	}
	fl.troubles[what] = msg
	fl.n.Errors++
	logf("tail: %s: %s: %s", fl.path, what, msg)
}

// ok notes that what worked.
func (fl *file) ok(what string) {
	if len(fl.troubles) > 0 {
		delete(fl.troubles, what)
	}
}

// openFile opens a regular file for reading.
func openFile(name string) (*os.File, os.FileInfo, error) {
	if st, err := os.Stat(name); err != nil {
		return nil, nil, err
	} else if !st.Mode().IsRegular() {
		// Opening a FIFO would block.
		return nil, nil, fmt.Errorf("%s is not a regular file", name)
	}
	fp, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := fp.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file", name)
	}
	if err != nil {
		fp.Close()
		return nil, nil, err
	}
	return fp, fi, nil
}

// start positions fl at the start of Run: at its saved position, or else at
// the end of the file (the start with Config.FromStart), or waits for it.
func (f *Follower) start(fl *file) error {
	var pos Position
	var saved bool
	if f.cfg.Store != nil {
		p, ok, err := f.cfg.Store.Load(fl.path)
		if err != nil {
			return fmt.Errorf("tail: %s: loading the saved position: %w", fl.path, err)
		}
		pos, saved = p, ok
	}
	fl.dirty = true
	fp, fi, err := openFile(fl.path)
	switch {
	case err == nil && saved:
		f.resume(fl, pos, fp, fi)
	case err == nil:
		off, skip := int64(0), false
		if !f.cfg.FromStart {
			off, skip = lastLineEnd(fp, fi.Size())
		}
		fl.set(fp, fl.path, fi, off, skip)
	case errors.Is(err, os.ErrNotExist):
		if saved {
			// Renamed while stopped, and no new file yet?
			f.resume(fl, pos, nil, nil)
		}
		// Otherwise it is read from its start when it appears.
	default:
		// It exists but cannot be read: keep what was saved, and apply it
		// when the file can be opened.
		fl.dirty = false
		fl.fail(f.cfg.Logf, "opening", err)
		if saved {
			fl.pending = &pos
		} else {
			fl.atEnd = !f.cfg.FromStart
		}
	}
	return nil
}

// openPath opens the followed path while waiting for it.
func (f *Follower) openPath(fl *file) bool {
	fp, fi, err := openFile(fl.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			fl.fail(f.cfg.Logf, "opening", err)
		}
		return false
	}
	switch {
	case fl.pending != nil:
		pos := *fl.pending
		fl.pending = nil
		f.resume(fl, pos, fp, fi)
	case fl.atEnd:
		fl.atEnd = false
		off, skip := lastLineEnd(fp, fi.Size())
		fl.set(fp, fl.path, fi, off, skip)
	default:
		fl.set(fp, fl.path, fi, 0, false)
	}
	return fl.f != nil
}

// resume applies a saved position. fp is the file now at path (nil when
// there is none). The same file, not shorter and with the same start, is
// read on from the offset. A file truncated meanwhile is read from its
// start, after the rest of its copy when one is found next to it. When
// path is another file, the saved one is looked for next to it (renamed by
// rotation) and read to its end first; if it is gone, path is read from its
// start.
func (f *Follower) resume(fl *file, pos Position, fp *os.File, fi os.FileInfo) {
	if fp != nil {
		if dev, ino := fileID(fi); dev == pos.Dev && ino == pos.Ino {
			if fi.Size() >= pos.Offset && headMatches(fp, pos) {
				fl.set(fp, fl.path, fi, pos.Offset, false)
				return
			}
			fl.set(fp, fl.path, fi, 0, false)
			if pos.Offset > 0 {
				f.drainCopy(fl, pos.Offset, func(c *os.File, cfi os.FileInfo) bool {
					return cfi.Size() > pos.Offset && headMatches(c, pos)
				})
			}
			fl.n.Truncations++
			return
		}
	}
	if pos.Dev != 0 || pos.Ino != 0 {
		name, c, cfi := findSibling(fl.path, func(c *os.File, cfi os.FileInfo) bool {
			dev, ino := fileID(cfi)
			return dev == pos.Dev && ino == pos.Ino && cfi.Size() >= pos.Offset && headMatches(c, pos)
		})
		if c != nil {
			if fp != nil {
				fp.Close()
			}
			fl.set(c, name, cfi, pos.Offset, false)
			return
		}
	}
	if fp != nil {
		fl.set(fp, fl.path, fi, 0, false)
	}
}

// lastLineEnd returns the offset after the last complete line of fp, and
// whether the line after it is already too long to read.
func lastLineEnd(fp *os.File, size int64) (int64, bool) {
	if size == 0 {
		return 0, false
	}
	n := min(size, replay.MaxLine)
	b := make([]byte, n)
	m, err := fp.ReadAt(b, size-n)
	if (err != nil && err != io.EOF) || int64(m) < n {
		return size, false
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return size - n + int64(i) + 1, false
	}
	if size < replay.MaxLine {
		// One line, still being written.
		return 0, false
	}
	return size, true
}

// step reads what fl has and follows truncation and rotation. It returns
// true when more is ready to read now.
func (f *Follower) step(fl *file) bool {
	if fl.f == nil && !f.openPath(fl) {
		return false
	}
	fi, err := fl.f.Stat()
	if err != nil {
		fl.fail(f.cfg.Logf, "reading", err)
		return false
	}
	if size := fi.Size(); size < fl.cur.rd || (size > fl.cur.rd && !sameHead(fl.f, fl.head)) {
		f.truncated(fl)
	}
	more, err := f.read(fl, readBudget)
	if err != nil {
		fl.fail(f.cfg.Logf, "reading", err)
		return false
	}
	fl.ok("reading")
	if more {
		return true
	}
	f.rotated(fl)
	return false
}

// read reads fl's file from its cursor, up to budget bytes (0: to its end).
func (f *Follower) read(fl *file, budget int) (more bool, err error) {
	off := fl.cur.off
	more, err = f.readFrom(fl, fl.f, &fl.cur, budget)
	if fl.cur.off != off {
		fl.dirty = true
		fl.updateHead()
	}
	return more, err
}

// readFrom reads r from c, hands out the events of its complete lines, and
// returns true when it stopped at budget before the end.
func (f *Follower) readFrom(fl *file, r *os.File, c *cursor, budget int) (bool, error) {
	for total := 0; budget <= 0 || total < budget; {
		n, err := r.ReadAt(f.buf, c.rd)
		if n > 0 {
			fl.n.Bytes += int64(n)
			total += n
			f.consume(fl, c, f.buf[:n])
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// consume parses the complete lines in data, read at c.rd, and hands out
// their events. A line longer than replay.MaxLine is skipped without being
// kept in memory.
func (f *Follower) consume(fl *file, c *cursor, data []byte) {
	now := f.cfg.Clock()
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if c.skip {
			if i < 0 {
				c.rd += int64(len(data))
				break
			}
			c.rd += int64(i + 1)
			c.off, c.skip = c.rd, false
			data = data[i+1:]
			fl.lp.Skip()
			fl.n.TooLong++
			continue
		}
		if i < 0 {
			if len(c.part)+len(data) >= replay.MaxLine {
				c.skip, c.part = true, c.part[:0]
			} else {
				c.part = append(c.part, data...)
			}
			c.rd += int64(len(data))
			break
		}
		var line string
		if len(c.part) > 0 {
			c.part = append(c.part, data[:i+1]...)
			line, c.part = string(c.part), c.part[:0]
		} else {
			line = string(data[:i+1])
		}
		c.rd += int64(i + 1)
		c.off = c.rd
		data = data[i+1:]
		if len(line) > replay.MaxLine {
			fl.lp.Skip()
			fl.n.TooLong++
			continue
		}
		f.evs = fl.lp.Parse(line, now, f.evs)
	}
	f.hand(fl)
}

// truncated starts fl's file again from its start. The lines written since
// the last read are in the copy that copytruncate made, when it is found
// next to the file: it is read first.
func (f *Follower) truncated(fl *file) {
	if off, head, old := fl.cur.off, fl.head, fl.fi; len(head) > 0 {
		f.drainCopy(fl, off, func(c *os.File, cfi os.FileInfo) bool {
			return cfi.Size() > off && !os.SameFile(cfi, old) && sameHead(c, head)
		})
	}
	fl.n.Truncations++
	fl.cur = cursor{}
	fl.head = nil
	fl.dirty = true
}

// drainCopy reads, from off to its end, the file next to fl.path for which
// match is true, if there is one.
func (f *Follower) drainCopy(fl *file, off int64, match func(*os.File, os.FileInfo) bool) {
	_, c, _ := findSibling(fl.path, match)
	if c == nil {
		return
	}
	defer c.Close()
	cur := cursor{off: off, rd: off}
	if _, err := f.readFrom(fl, c, &cur, 0); err != nil {
		fl.fail(f.cfg.Logf, "reading the rotated copy", err)
	}
	if len(cur.part) > 0 || cur.skip {
		fl.lp.Skip() // its last line was cut
	}
}

// rotated moves to the new file at fl.path once the one read was renamed
// or removed and the new one has been written to: the writer has moved to
// it, so the old one is read to its end first.
func (f *Follower) rotated(fl *file) {
	fi, err := os.Stat(fl.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			fl.fail(f.cfg.Logf, "checking for rotation", err)
		}
		// Gone for now: keep the open file until a new one appears.
		return
	}
	fl.ok("checking for rotation")
	if os.SameFile(fi, fl.fi) || fi.Size() == 0 {
		return
	}
	if _, err := f.read(fl, 0); err != nil {
		fl.fail(f.cfg.Logf, "reading the rotated file", err)
	}
	if len(fl.cur.part) > 0 || fl.cur.skip {
		fl.lp.Skip() // its last line was cut
	}
	fl.n.Rotations++
	fl.close()
	fl.dirty = true
	f.openPath(fl)
}

// compressed are the suffixes of rotated files that are not read.
var compressed = []string{".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".Z", ".zip"}

// findSibling opens the first file next to path that rotation may have
// made of it ("mail.log.1", "mail.log-20240101"; not compressed ones) and
// for which match is true.
func findSibling(path string, match func(*os.File, os.FileInfo) bool) (string, *os.File, os.FileInfo) {
	dir, base := filepath.Dir(path), filepath.Base(path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", nil, nil
	}
	for _, e := range ents {
		name := e.Name()
		if len(name) <= len(base) || !strings.HasPrefix(name, base) || !strings.ContainsRune(".-_", rune(name[len(base)])) || !e.Type().IsRegular() {
			continue
		}
		skip := false
		for _, s := range compressed {
			skip = skip || strings.HasSuffix(name, s)
		}
		if skip {
			continue
		}
		full := filepath.Join(dir, name)
		fp, fi, err := openFile(full)
		if err != nil {
			continue
		}
		if match(fp, fi) {
			return full, fp, fi
		}
		fp.Close()
	}
	return "", nil, nil
}

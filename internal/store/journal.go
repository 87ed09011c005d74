package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// The event journal lives beside the SQLite file, in append-only segment
// files, one per hour of writing: dir/journal/<unix hour>.mwj. Appending
// a batch is one write system call and pruning deletes whole files, which
// costs a fraction of SQLite inserts at tens of thousands of events per
// second (the journal is the only per-event write of the daemon).
//
// A record is: uvarint length of the payload, the payload, CRC-32C of the
// payload (4 bytes, little endian). The payload is the event's fields in a
// fixed order (see appendEvent). A crash can leave a torn last record; a
// reader stops at it and logs nothing worse than the events it lost. A
// failed write is cut off again, so the file never holds a torn record
// followed by good ones.

const (
	journalDir = "journal"
	segmentExt = ".mwj"
	maxRecord  = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type journal struct {
	dir string

	mu   sync.Mutex
	f    *os.File
	hour int64 // the open segment's hour (unix seconds / 3600)
	off  int64 // its length up to the last complete batch
	buf  []byte
}

func openJournal(stateDir string) (*journal, error) {
	dir := filepath.Join(stateDir, journalDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return &journal{dir: dir}, nil
}

func (j *journal) segment(hour int64) string {
	return filepath.Join(j.dir, strconv.FormatInt(hour, 10)+segmentExt)
}

// append writes a batch of events to the segment of the current hour.
func (j *journal) append(evs []event.Event, now time.Time) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	hour := now.Unix() / 3600
	if j.f == nil || hour != j.hour {
		if err := j.open(hour); err != nil {
			return err
		}
	}
	b := j.buf[:0]
	for i := range evs {
		var err error
		if b, err = appendRecord(b, &evs[i]); err != nil {
			return err
		}
	}
	j.buf = b
	n, err := j.f.Write(b)
	if err != nil {
		// Cut a partial write off, so that later batches follow good records.
		if n > 0 {
			if terr := j.f.Truncate(j.off); terr != nil {
				j.closeFile()
			}
		}
		return fmt.Errorf("journal %s: %w", j.segment(j.hour), err)
	}
	j.off += int64(n)
	return nil
}

func (j *journal) open(hour int64) error {
	j.closeFile()
	f, err := os.OpenFile(j.segment(hour), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	// Append after the last complete record (a crash may have torn one).
	off, err := validLength(j.segment(hour))
	if err == nil {
		err = f.Truncate(off)
	}
	if err == nil {
		_, err = f.Seek(off, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	j.f, j.hour, j.off = f, hour, off
	return nil
}

func (j *journal) closeFile() {
	if j.f != nil {
		j.f.Sync()
		j.f.Close()
		j.f = nil
	}
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.closeFile()
}

// segments returns the hours of the segment files, oldest first.
func (j *journal) segments() ([]int64, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var hours []int64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segmentExt)
		if !ok {
			continue
		}
		if h, err := strconv.ParseInt(name, 10, 64); err == nil {
			hours = append(hours, h)
		}
	}
	slices.Sort(hours)
	return hours, nil
}

// events calls f for the events at or after since, segment by segment,
// each segment in time order. It reports how many torn or corrupt records
// it skipped (the rest of their segment).
func (j *journal) events(ctx context.Context, since time.Time, f func(*event.Event)) (int, error) {
	j.mu.Lock()
	hours, err := j.segments()
	j.mu.Unlock()
	if err != nil {
		return 0, err
	}
	bad := 0
	sinceMS := since.UnixMilli()
	for _, h := range hours {
		// A segment holds events appended during its hour; their times
		// are no later than that (an hour's slack for clock steps).
		if (h+2)*3600*1000 < sinceMS {
			continue
		}
		if err := ctx.Err(); err != nil {
			return bad, err
		}
		evs, torn, err := readSegment(j.segment(h))
		if err != nil {
			return bad, err
		}
		if torn {
			bad++
		}
		sort.SliceStable(evs, func(a, b int) bool { return evs[a].Time.Before(evs[b].Time) })
		for i := range evs {
			if !evs[i].Time.Before(since) {
				f(&evs[i])
			}
		}
	}
	return bad, nil
}

// prune deletes the segments whose events are all before t.
func (j *journal) prune(before time.Time) (int64, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	hours, err := j.segments()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, h := range hours {
		if (h+1)*3600 > before.Unix() || (j.f != nil && h == j.hour) {
			continue
		}
		if err := os.Remove(j.segment(h)); err != nil {
			return n, fmt.Errorf("journal: %w", err)
		}
		n++
	}
	return n, nil
}

// validLength is the length of a segment's complete, intact records.
func validLength(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	off := 0
	for off < len(b) {
		_, n, err := nextRecord(b[off:])
		if err != nil {
			break
		}
		off += n
	}
	return int64(off), nil
}

func readSegment(path string) ([]event.Event, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("journal: %w", err)
	}
	var evs []event.Event
	for off := 0; off < len(b); {
		p, n, err := nextRecord(b[off:])
		if err != nil {
			return evs, true, nil
		}
		var e event.Event
		if err := decodeEvent(p, &e); err != nil {
			return evs, true, nil
		}
		evs = append(evs, e)
		off += n
	}
	return evs, false, nil
}

var errTorn = errors.New("torn or corrupt journal record")

// nextRecord returns the payload of the record at the start of b and the
// record's length.
func nextRecord(b []byte) ([]byte, int, error) {
	l, k := binary.Uvarint(b)
	if k <= 0 || l > maxRecord || uint64(len(b)-k) < l+4 {
		return nil, 0, errTorn
	}
	p := b[k : k+int(l)]
	if binary.LittleEndian.Uint32(b[k+int(l):]) != crc32.Checksum(p, castagnoli) {
		return nil, 0, errTorn
	}
	return p, k + int(l) + 4, nil
}

func appendRecord(b []byte, e *event.Event) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0) // room for the length (uvarint, up to 3 bytes for maxRecord)
	p0 := len(b)
	b = appendEvent(b, e)
	l := len(b) - p0
	if l > maxRecord {
		return b[:start], fmt.Errorf("journal: event too large (%d bytes)", l)
	}
	var lb [binary.MaxVarintLen64]byte
	k := binary.PutUvarint(lb[:], uint64(l))
	// Move the payload to follow the actual length's bytes.
	copy(b[start+k:], b[p0:])
	copy(b[start:], lb[:k])
	b = b[:start+k+l]
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start+k:], castagnoli)), nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendEvent(b []byte, e *event.Event) []byte {
	b = binary.AppendVarint(b, e.Time.UnixMilli())
	b = append(b, byte(e.Kind), byte(e.Protocol))
	if e.IP.IsValid() {
		ip := e.IP.AsSlice()
		b = append(b, byte(len(ip)))
		b = append(b, ip...)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendVarint(b, e.Size)
	b = binary.AppendVarint(b, int64(e.Rcpts))
	b = binary.AppendVarint(b, int64(e.Count))
	for _, s := range [...]string{e.Account, e.Session, e.PwHash, e.QueueID, e.Source, e.Node} {
		b = appendStr(b, s)
	}
	return b
}

func decodeEvent(p []byte, e *event.Event) error {
	d := decoder{b: p}
	e.Time = fromMS(d.varint())
	e.Kind, e.Protocol = event.Kind(d.byte()), event.Protocol(d.byte())
	if n := int(d.byte()); n > 0 {
		ip, ok := netip.AddrFromSlice(d.bytes(n))
		if !ok {
			return errTorn
		}
		e.IP = ip
	}
	e.Size = d.varint()
	e.Rcpts, e.Count = int(d.varint()), int(d.varint())
	for _, s := range [...]*string{&e.Account, &e.Session, &e.PwHash, &e.QueueID, &e.Source, &e.Node} {
		*s = d.str()
	}
	if d.bad || len(d.b) != 0 {
		return errTorn
	}
	return nil
}

type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) varint() int64 {
	v, k := binary.Varint(d.b)
	if k <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n int) []byte {
	if n > len(d.b) {
		d.bad, d.b = true, nil
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) str() string {
	l, k := binary.Uvarint(d.b)
	if k <= 0 || l > uint64(len(d.b)-k) {
		d.bad, d.b = true, nil
		return ""
	}
	s := string(d.b[k : k+int(l)])
	d.b = d.b[k+int(l):]
	return s
}

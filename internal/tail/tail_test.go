package tail

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// now is the clock of the tests: the lines' "Nov  4" is in 2025.
var now = time.Date(2025, 11, 5, 12, 0, 0, 0, time.UTC)

const deadline = 10 * time.Second

// line returns a Postfix SASL failure from the address 10.x.y.z that encodes
// i: one AuthFail event per line, told apart by its address.
func line(i int) string {
	return fmt.Sprintf("Nov  4 09:12:41 mx1 postfix/submission/smtpd[%d]: warning: unknown[10.%d.%d.%d]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=u%d@example.org\n",
		1000+i, i>>16&255, i>>8&255, i&255, i)
}

func lines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		b.WriteString(line(i))
	}
	return b.String()
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// sink collects the events handed out.
type sink struct {
	mu  sync.Mutex
	evs []event.Event
}

func (s *sink) emit(ev *event.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, *ev)
	s.mu.Unlock()
}

func (s *sink) events() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.evs)
}

// ids returns the line numbers of the AuthFail events, in order.
func (s *sink) ids() []int {
	var ids []int
	for _, ev := range s.events() {
		if ev.Kind != event.AuthFail {
			continue
		}
		b := ev.IP.As4()
		ids = append(ids, int(b[1])<<16|int(b[2])<<8|int(b[3]))
	}
	return ids
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

func writeFile(t *testing.T, name, s string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, name, s string) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func config(paths ...string) Config {
	return Config{
		Paths:     paths,
		Poll:      2 * time.Millisecond,
		SaveEvery: time.Millisecond,
		Loc:       time.UTC,
		Clock:     func() time.Time { return now },
	}
}

func newFollower(t *testing.T, c Config, s *sink) *Follower {
	t.Helper()
	f, err := New(c, s.emit)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// waitFor fails the test unless cond becomes true within the deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// run starts f.Run and returns the function that stops it.
func run(t *testing.T, f *Follower) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	select {
	case <-f.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(deadline):
		cancel()
		t.Fatal("timed out waiting for the follower to start")
	}
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(deadline):
			t.Fatal("timed out waiting for the follower to stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitIDs waits until exactly want has been handed out, then checks that
// nothing more comes with a last line.
func waitIDs(t *testing.T, s *sink, want []int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d events", len(want)), func() bool { return len(s.ids()) >= len(want) })
	if got := s.ids(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// settle runs rounds until no file has more to read.
func settle(t *testing.T, f *Follower) {
	t.Helper()
	for i := 0; f.round(); i++ {
		if i > 1000 {
			t.Fatal("the follower never caught up")
		}
	}
}

func begin(t *testing.T, f *Follower) {
	t.Helper()
	if err := f.begin(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.closeAll)
}

func TestAppendedLines(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, lines(0, 3))
	s := &sink{}
	f := newFollower(t, config(name), s)
	stop := run(t, f)
	appendFile(t, name, lines(3, 5))
	waitIDs(t, s, seq(3, 5))
	appendFile(t, name, lines(5, 8))
	waitIDs(t, s, seq(3, 8))
	stop()
	st := f.Stats()
	if st.Total.Events != 5 || st.Total.Lines != 5 || st.Total.Unparsed != 0 {
		t.Errorf("stats %+v", st.Total)
	}
	if fi, _ := os.Stat(name); st.Files[0].Offset != fi.Size() {
		t.Errorf("offset %d, want %d", st.Files[0].Offset, fi.Size())
	}
}

func TestFromStart(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, lines(0, 3))
	s := &sink{}
	c := config(name)
	c.FromStart = true
	f := newFollower(t, c, s)
	run(t, f)
	appendFile(t, name, lines(3, 4))
	waitIDs(t, s, seq(0, 4))
}

// Starting at the end of a file whose last line is being written reads
// that line once it is complete.
func TestStartAtEndWithPartialLine(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	l := line(3)
	writeFile(t, name, lines(0, 3)+l[:20])
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	settle(t, f)
	appendFile(t, name, l[20:])
	settle(t, f)
	if got := s.ids(); !slices.Equal(got, []int{3}) {
		t.Fatalf("events %v, want [3]", got)
	}
}

func TestPartialLineWaitsForItsEnd(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	l := line(1)
	appendFile(t, name, line(0)+l[:30])
	settle(t, f)
	if got := s.ids(); !slices.Equal(got, []int{0}) {
		t.Fatalf("events %v, want [0]", got)
	}
	if off := f.Stats().Files[0].Offset; off != int64(len(line(0))) {
		t.Errorf("offset %d, want the end of the first line %d", off, len(line(0)))
	}
	appendFile(t, name, l[30:40])
	settle(t, f)
	appendFile(t, name, l[40:])
	settle(t, f)
	if got := s.ids(); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("events %v, want [0 1]", got)
	}
	if st := f.Stats().Total; st.Lines != 2 || st.Unparsed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// Rotation by rename: the lines the old file got after the last read, and
// while the new file is still empty, are read before the new file.
func TestRenameRotation(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	appendFile(t, name, lines(0, 5))
	settle(t, f)
	appendFile(t, name, lines(5, 8)) // not read yet
	if err := os.Rename(name, name+".1"); err != nil {
		t.Fatal(err)
	}
	settle(t, f) // old file renamed, no new one yet
	writeFile(t, name, "")
	appendFile(t, name+".1", lines(8, 9)) // the writer has not reopened yet
	settle(t, f)
	appendFile(t, name+".1", lines(9, 10)+line(10)[:25]) // a cut last line
	appendFile(t, name, lines(11, 13))
	settle(t, f)
	appendFile(t, name, lines(13, 14))
	settle(t, f)
	want := append(seq(0, 10), seq(11, 14)...)
	if got := s.ids(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	st := f.Stats()
	if st.Total.Rotations != 1 || st.Files[0].Reading != name {
		t.Errorf("stats %+v", st)
	}
}

func TestRenameRotationWhileRunning(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	run(t, f)
	n := 0
	for r := 0; r < 5; r++ {
		appendFile(t, name, lines(n, n+20))
		n += 20
		if err := os.Rename(name, fmt.Sprintf("%s.%d", name, r)); err != nil {
			t.Fatal(err)
		}
		appendFile(t, fmt.Sprintf("%s.%d", name, r), lines(n, n+3))
		n += 3
		writeFile(t, name, lines(n, n+7))
		n += 7
		// Rotations are far apart in real life: the follower has moved to
		// the new file before the next one.
		waitIDs(t, s, seq(0, n))
	}
	if st := f.Stats().Total; st.Rotations != 5 {
		t.Errorf("stats %+v", st)
	}
}

// copytruncate: the lines written since the last read are taken from the
// copy, then the file is read again from its start.
func TestCopyTruncate(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	appendFile(t, name, lines(0, 5))
	settle(t, f)
	appendFile(t, name, lines(5, 7)+line(7)[:10]) // unread, with a cut line
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, name+".1", string(b))
	if err := os.Truncate(name, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, name, lines(8, 10))
	settle(t, f)
	appendFile(t, name, lines(10, 11))
	settle(t, f)
	want := append(seq(0, 7), seq(8, 11)...)
	if got := s.ids(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if st := f.Stats().Total; st.Truncations != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A file truncated and written past the old offset before the follower
// looked is recognised by its start.
func TestTruncatedAndRegrown(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	appendFile(t, name, lines(0, 3))
	settle(t, f)
	writeFile(t, name, lines(100, 110)) // truncates, no copy
	settle(t, f)
	want := append(seq(0, 3), seq(100, 110)...)
	if got := s.ids(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if st := f.Stats().Total; st.Truncations != 1 {
		t.Errorf("stats %+v", st)
	}
}

// A file that does not exist at start is read from its start when it
// appears; one that disappears for a while is read again when it is back.
func TestMissingFileAppears(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	s := &sink{}
	f := newFollower(t, config(name), s)
	run(t, f)
	writeFile(t, name, lines(0, 4))
	waitIDs(t, s, seq(0, 4))
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	writeFile(t, name, lines(4, 6))
	waitIDs(t, s, seq(0, 6))
	if st := f.Stats().Total; st.Rotations != 1 {
		t.Errorf("stats %+v", st)
	}
}

func openStore(t *testing.T, dir string) *FileOffsets {
	t.Helper()
	st, err := OpenFileOffsets(filepath.Join(dir, "positions.json"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// After a restart no line is read twice and none is skipped, including the
// end of a line that was cut at stop.
func TestRestartResumes(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, lines(1000, 1003)) // history, not read
	s1 := &sink{}
	c := config(name)
	c.Store = openStore(t, dir)
	stop := run(t, newFollower(t, c, s1))
	appendFile(t, name, lines(0, 10)+line(10)[:33])
	waitIDs(t, s1, seq(0, 10))
	stop()

	appendFile(t, name, line(10)[33:]+lines(11, 20))
	s2 := &sink{}
	c.Store = openStore(t, dir) // as a new process would
	f2 := newFollower(t, c, s2)
	stop = run(t, f2)
	waitIDs(t, s2, seq(10, 20))
	appendFile(t, name, lines(20, 21))
	waitIDs(t, s2, seq(10, 21))
	stop()
	if got := append(s1.ids(), s2.ids()...); !slices.Equal(got, seq(0, 21)) {
		t.Fatalf("events %v", got)
	}
}

// A restart without a clean stop resumes from the position saved while
// running: at most the lines after it come again, none is lost.
func TestPositionSavedWhileRunning(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s := &sink{}
	run(t, newFollower(t, c, s))
	appendFile(t, name, lines(0, 7))
	waitIDs(t, s, seq(0, 7))
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the position to be saved", func() bool {
		st, err := OpenFileOffsets(filepath.Join(dir, "positions.json"))
		if err != nil {
			return false
		}
		p, ok, _ := st.Load(name)
		return ok && p.Offset == fi.Size()
	})
}

// Renamed while stopped: the rest of the old file, then the new one.
func TestRestartAfterRenameRotation(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s1 := &sink{}
	stop := run(t, newFollower(t, c, s1))
	appendFile(t, name, lines(0, 5))
	waitIDs(t, s1, seq(0, 5))
	stop()

	appendFile(t, name, lines(5, 8))
	if err := os.Rename(name, name+".1"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, name+".2.gz", "not read")
	writeFile(t, name, lines(8, 10))
	s2 := &sink{}
	c.Store = openStore(t, dir)
	f2 := newFollower(t, c, s2)
	stop = run(t, f2)
	waitIDs(t, s2, seq(5, 10))
	appendFile(t, name, lines(10, 11))
	waitIDs(t, s2, seq(5, 11))
	stop()
	if st := f2.Stats(); st.Total.Rotations != 1 || st.Files[0].Reading != name {
		t.Errorf("stats %+v", st)
	}
}

// Replaced while stopped (the old file removed, a new one created, maybe
// on the same inode): the new file is read from its start.
func TestRestartAfterReplace(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s1 := &sink{}
	stop := run(t, newFollower(t, c, s1))
	appendFile(t, name, lines(0, 5))
	waitIDs(t, s1, seq(0, 5))
	stop()

	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	writeFile(t, name, lines(100, 103))
	s2 := &sink{}
	c.Store = openStore(t, dir)
	stop = run(t, newFollower(t, c, s2))
	waitIDs(t, s2, seq(100, 103))
	appendFile(t, name, lines(103, 104))
	waitIDs(t, s2, seq(100, 104))
	stop()

	// Rewritten in place, the same inode, longer than before: told apart by
	// its start.
	writeFile(t, name, lines(200, 220))
	s3 := &sink{}
	c.Store = openStore(t, dir)
	stop = run(t, newFollower(t, c, s3))
	waitIDs(t, s3, seq(200, 220))
	stop()
}

// Truncated while stopped (copytruncate): the rest from the copy, then the
// file from its start.
func TestRestartAfterCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s1 := &sink{}
	stop := run(t, newFollower(t, c, s1))
	appendFile(t, name, lines(0, 5))
	waitIDs(t, s1, seq(0, 5))
	stop()

	appendFile(t, name, lines(5, 8))
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, name+"-20251105", string(b))
	writeFile(t, name, lines(8, 10)) // truncates
	s2 := &sink{}
	c.Store = openStore(t, dir)
	stop = run(t, newFollower(t, c, s2))
	appendFile(t, name, lines(10, 11))
	waitIDs(t, s2, seq(5, 11))
	stop()
}

// A missing file is remembered as such: when it appears while the daemon
// is stopped, it is read from its start.
func TestRestartMissingFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	c := config(name)
	c.Store = openStore(t, dir)
	stop := run(t, newFollower(t, c, &sink{}))
	stop()
	writeFile(t, name, lines(0, 3))
	s := &sink{}
	c.Store = openStore(t, dir)
	run(t, newFollower(t, c, s))
	waitIDs(t, s, seq(0, 3))
}

func TestLongLineSkipped(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	run(t, f)
	long := strings.TrimSuffix(line(1), "\n") + strings.Repeat("x", 1<<20) + "\n"
	appendFile(t, name, line(0)+long[:300000])
	appendFile(t, name, long[300000:]+line(2))
	appendFile(t, name, strings.Repeat("y", 70000)) // too long, not ended yet
	appendFile(t, name, "\n"+line(3))
	waitIDs(t, s, []int{0, 2, 3})
	if st := f.Stats().Total; st.TooLong != 2 || st.Unparsed != 2 || st.Lines != 5 {
		t.Errorf("stats %+v", st)
	}
}

// A line of exactly replay.MaxLine bytes, its end included, is read.
func TestLineOfMaxLength(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	begin(t, f)
	l := strings.TrimSuffix(line(0), "\n")
	l += strings.Repeat(" ", 64*1024-len(l)-1) + "\n"
	appendFile(t, name, l+line(1))
	settle(t, f)
	if got := s.ids(); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("events %v", got)
	}
	if st := f.Stats().Total; st.TooLong != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestGarbageCounted(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	f := newFollower(t, config(name), s)
	run(t, f)
	garbage := []string{
		"\n",
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\n",
		"\xff\xfe\xfd binary \x01\x02\x03 garbage that is long enough\n",
		"Nov  4 09:11:0\n",
		"2013-01-04 17:03:46 garbled exim line that means nothing\r\n",
		line(99)[:60] + "\n",
	}
	appendFile(t, name, line(0)+strings.Join(garbage, "")+line(1))
	waitIDs(t, s, []int{0, 1})
	st := f.Stats().Total
	if st.Lines != int64(2+len(garbage)) || st.Unparsed != int64(len(garbage)) || st.Errors != 0 {
		t.Errorf("stats %+v, want %d unparsed", st, len(garbage))
	}
}

// BSD syslog dates take the year of the clock; a date more than a day
// ahead of it is of the year before.
func TestYearFromClock(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	c := config(name)
	var mu sync.Mutex
	clock := time.Date(2025, 12, 31, 23, 59, 50, 0, time.UTC)
	c.Clock = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	}
	f := newFollower(t, c, s)
	begin(t, f)
	fail := func(ts string, i int) string { return ts + line(i)[len("Nov  4 09:12:41"):] }
	// A writer's clock a little ahead: by the rule, a date of the past year.
	appendFile(t, name, fail("Dec 31 23:59:49", 0)+fail("Jan  1 00:00:01", 1))
	settle(t, f)
	mu.Lock()
	clock = time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC)
	mu.Unlock()
	appendFile(t, name, fail("Dec 31 23:59:59", 2)+fail("Jan  1 00:00:02", 3))
	settle(t, f)
	want := []time.Time{
		time.Date(2025, 12, 31, 23, 59, 49, 0, time.UTC),
		time.Date(2025, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(2025, 12, 31, 23, 59, 59, 0, time.UTC), // more than a day ahead of the clock
		time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC),      // the same date as line 1, in the clock's new year
	}
	evs := s.events()
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d", len(evs), len(want))
	}
	for i, ev := range evs {
		if !ev.Time.Equal(want[i]) {
			t.Errorf("event %d at %v, want %v", i, ev.Time, want[i])
		}
	}
}

// Events an Exim parser holds for their recipients are handed out at stop,
// before the position past their lines is saved.
func TestStopHandsOutHeldEvents(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mainlog")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s := &sink{}
	f := newFollower(t, c, s)
	stop := run(t, f)
	appendFile(t, name, "2025-11-04 09:12:03 [12345] 1t80Qx-0003Ed-Ab <= joe@example.com H=(laptop) [203.0.113.5]:51234 I=[198.51.100.1]:587 P=esmtpsa A=dovecot_plain:joe@example.com S=2201 id=1@laptop\n"+
		"2025-11-04 09:12:04 [12346] 1t80Qx-0003Ed-Ab => bob@example.net R=dnslookup T=remote_smtp H=mx.example.net [192.0.2.9]\n")
	waitFor(t, "the lines to be read", func() bool { return f.Stats().Total.Lines == 2 })
	if n := s.len(); n != 0 {
		t.Fatalf("%d events before stop, want the arrival held", n)
	}
	stop()
	evs := s.events()
	if len(evs) != 1 || evs[0].Kind != event.Message || evs[0].Account != "joe@example.com" || evs[0].Rcpts != 1 {
		t.Fatalf("events %+v", evs)
	}
}

// Several files: each has its own parsers and position.
func TestSeveralFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	writeFile(t, a, "")
	s := &sink{}
	f := newFollower(t, config(a, b), s)
	run(t, f)
	appendFile(t, a, lines(0, 3))
	waitIDs(t, s, seq(0, 3))
	writeFile(t, b, lines(3, 6))
	waitIDs(t, s, seq(0, 6))
	st := f.Stats()
	if len(st.Files) != 2 || st.Files[0].Counts.Events != 3 || st.Files[1].Counts.Events != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestNewRejects(t *testing.T) {
	emit := func(*event.Event) {}
	for _, c := range []Config{{}, {Paths: []string{"a", "a"}}, {Paths: []string{""}}} {
		if _, err := New(c, emit); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	if _, err := New(Config{Paths: []string{"a"}}, nil); err == nil {
		t.Error("New without a callback accepted")
	}
}

// Bytes the follower hands out are exactly the file's lines, whatever the
// sizes of the writes.
func TestManySmallWrites(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	s := &sink{}
	run(t, newFollower(t, config(name), s))
	all := lines(0, 300)
	for k := 0; len(all) > 0; k++ {
		n := min(len(all), 1+k*37%97)
		appendFile(t, name, all[:n])
		all = all[n:]
	}
	waitIDs(t, s, seq(0, 300))
}

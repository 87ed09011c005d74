package tail

import (
	"context"
	"errors"
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

// logs collects what the follower reports.
type logs struct {
	mu  sync.Mutex
	msg []string
}

func (l *logs) logf(format string, args ...any) {
	l.mu.Lock()
	l.msg = append(l.msg, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logs) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msg)
}

// A path that exists but cannot be read is reported once; when it can be
// read, it is read from its end, as it was there at start.
func TestUnreadableAtStart(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	if err := os.Mkdir(name, 0o755); err != nil {
		t.Fatal(err)
	}
	s, l := &sink{}, &logs{}
	c := config(name)
	c.Logf = l.logf
	f := newFollower(t, c, s)
	begin(t, f)
	settle(t, f)
	settle(t, f)
	if msgs := l.all(); len(msgs) != 1 || !strings.Contains(msgs[0], "not a regular file") {
		t.Errorf("reported %q", msgs)
	}
	if st := f.Stats(); st.Total.Errors != 1 || st.Files[0].Reading != "" {
		t.Errorf("stats %+v", st)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	writeFile(t, name, lines(0, 3))
	settle(t, f)
	appendFile(t, name, lines(3, 5))
	settle(t, f)
	if got := s.ids(); !slices.Equal(got, seq(3, 5)) {
		t.Fatalf("events %v, want [3 4]", got)
	}
}

// A saved position waits until the file can be read.
func TestUnreadableWithSavedPosition(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = openStore(t, dir)
	s1 := &sink{}
	stop := run(t, newFollower(t, c, s1))
	appendFile(t, name, lines(0, 3))
	waitIDs(t, s1, seq(0, 3))
	stop()

	appendFile(t, name, lines(3, 5))
	if err := os.Rename(name, name+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(name, 0o755); err != nil {
		t.Fatal(err)
	}
	s2 := &sink{}
	c.Store = openStore(t, dir)
	f := newFollower(t, c, s2)
	begin(t, f)
	settle(t, f)
	if p, ok, _ := c.Store.Load(name); !ok || p.Offset != int64(len(lines(0, 3))) {
		t.Fatalf("saved position overwritten: %+v", p)
	}
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(name+".tmp", name); err != nil {
		t.Fatal(err)
	}
	settle(t, f)
	if got := s2.ids(); !slices.Equal(got, seq(3, 5)) {
		t.Fatalf("events %v, want [3 4]", got)
	}
}

// One SMTP AUTH failure logged by Postfix in one file and Dovecot's auth in
// another is handed out once, as in replay.
func TestCrossFileDedup(t *testing.T) {
	dir := t.TempDir()
	pf, dc := filepath.Join(dir, "postfix.log"), filepath.Join(dir, "dovecot.log")
	writeFile(t, pf, "")
	writeFile(t, dc, "")
	s := &sink{}
	f := newFollower(t, config(pf, dc), s)
	begin(t, f)
	appendFile(t, pf, "Nov  4 09:00:01 mx1 postfix/submission/smtpd[7]: warning: unknown[192.0.2.5]: SASL PLAIN authentication failed: UGFzc3dvcmQ6, sasl_username=joe@example.com\n")
	appendFile(t, dc, "Nov  4 09:00:01 mx1 dovecot: auth: passwd-file(joe@example.com,192.0.2.5,<x>): Password mismatch\n")
	settle(t, f)
	n := 0
	for _, ev := range s.events() {
		if ev.Kind == event.AuthFail {
			n += ev.N()
		}
	}
	if st := f.Stats().Total; n != 1 || st.Duplicates != 1 {
		t.Errorf("%d failures, stats %+v; want 1 failure, 1 duplicate", n, st)
	}
}

type badStore struct{ load, save error }

func (b badStore) Load(string) (Position, bool, error) { return Position{}, false, b.load }
func (b badStore) Save(string, Position) error         { return b.save }

func TestStoreErrors(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mail.log")
	writeFile(t, name, "")
	c := config(name)
	c.Store = badStore{load: errors.New("database is locked")}
	f := newFollower(t, c, &sink{})
	if err := f.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Errorf("Run with a failing Load: %v", err)
	}
	if err := f.Run(context.Background()); err == nil {
		t.Error("Run ran twice")
	}

	l := &logs{}
	c.Store = badStore{save: errors.New("disk full")}
	c.Logf = l.logf
	f = newFollower(t, c, &sink{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "a failed save", func() bool { return f.Stats().Total.Errors == 1 })
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("Run = %v, want the failed save", err)
		}
	case <-time.After(deadline):
		t.Fatal("timed out waiting for the follower to stop")
	}
	if msgs := l.all(); len(msgs) != 1 {
		t.Errorf("reported %q, want one report", msgs)
	}
}

package eximpolicy

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// allow is a Decider that answers Allow and keeps nothing.
type allow struct{}

func (allow) Decide(*event.Event) engine.Verdict                 { return engine.Allow }
func (allow) Check(string, netip.Addr, time.Time) engine.Verdict { return engine.Allow }

const benchRequest = `v1 data ip=192.0.2.7 port=50312 lip=198.51.100.1 lport=587 account="joe@example.com" rcpts=3 size=2201 qid=1xWvpq-0004GH-1Q` + "\n"

// BenchmarkHandle is one request without the socket: parse, event,
// verdict, answer.
func BenchmarkHandle(b *testing.B) {
	s, err := New(Config{Decider: allow{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	line := []byte(benchRequest[:len(benchRequest)-1])
	buf := make([]byte, len(line))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, line)
		if a := s.handle(buf, nil); len(a) != 5 {
			b.Fatalf("answer %q", a)
		}
	}
}

// BenchmarkRoundTrip is one readsocket query as Exim makes it: connect to
// the unix socket, write, shut down the write side, read to the end.
func BenchmarkRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Decider: allow{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Close()
	b.ReportAllocs()
	b.SetParallelism(4) // Exim runs one process per SMTP connection: many clients at once
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 64)
		for pb.Next() {
			c, err := net.Dial("unix", path)
			if err != nil {
				b.Error(err)
				return
			}
			io.WriteString(c, benchRequest)
			c.(*net.UnixConn).CloseWrite()
			n, _ := io.ReadFull(c, buf[:5])
			c.Close()
			if string(buf[:n]) != "DUNNO" {
				b.Errorf("answer %q", buf[:n])
				return
			}
		}
	})
}

package dovecotpolicy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
)

// benchDecider answers Allow and only counts.
type benchDecider struct{ checks, events atomic.Int64 }

func (d *benchDecider) Check(string, netip.Addr, time.Time) engine.Verdict {
	d.checks.Add(1)
	return engine.Allow
}

func (d *benchDecider) Decide(*event.Event) engine.Verdict {
	d.events.Add(1)
	return engine.Allow
}

const (
	benchAllow  = `{"device_id":"","login":"joe@example.com","protocol":"imap","pwhash":"67d37c","remote":"198.51.100.23","session_id":"FRU50EFhQpF/AAAB","tls":false}`
	benchReport = `{"device_id":"","login":"joe@example.com","protocol":"imap","pwhash":"67d37c","remote":"198.51.100.23","session_id":"FRU50EFhQpF/AAAB","success":false,"policy_reject":false,"tls":false}`
)

func BenchmarkParseRequest(b *testing.B) {
	body := []byte(benchReport)
	var tmp []byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var r request
		var err error
		if tmp, err = parseRequest(body, &r, true, tmp); err != nil {
			b.Fatal(err)
		}
	}
}

// The server without the network: allow + report, HTTP parsing and the
// handler, on an in-memory connection that the server keeps (as it
// keeps Dovecot's).
func BenchmarkHandler(b *testing.B) {
	s, err := New(Config{Decider: &benchDecider{}, APIHeader: "Authorization", APIKey: basicAuth, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	in := []byte(dovecotRequest("/?command=allow", basicAuth, benchAllow) + dovecotRequest("/?command=report", basicAuth, benchReport))
	mc := &memConn{}
	c := s.newConn(mc, nil)
	b.ReportAllocs()
	for b.Loop() {
		mc.in = in
		mc.out.Reset()
		if !c.next() || !c.next() || !c.flush() {
			b.Fatal("connection closed")
		}
	}
	if !bytes.HasSuffix(mc.out.Bytes(), s.okBody) {
		b.Fatalf("answers %q", mc.out.Bytes())
	}
}

// benchConn is a raw client connection sending Dovecot's requests.
type benchConn struct {
	c             net.Conn
	br            *bufio.Reader
	allow, report []byte
}

func dialBench(b *testing.B, addr string) *benchConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &benchConn{
		c: c, br: bufio.NewReaderSize(c, 4096),
		allow:  []byte(dovecotRequest("/?command=allow", basicAuth, benchAllow)),
		report: []byte(dovecotRequest("/?command=report", basicAuth, benchReport)),
	}
}

// do sends req and reads the answer, which must be a 200.
func (bc *benchConn) do(req []byte) error {
	if _, err := bc.c.Write(req); err != nil {
		return err
	}
	line, err := bc.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return errors.New("answer " + strconv.Quote(string(line)))
	}
	n := 0
	for {
		line, err = bc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	_, err = bc.br.Discard(n)
	return err
}

func benchServer(b *testing.B) *testServer {
	return start(b, Config{Decider: &benchDecider{}, APIHeader: "Authorization", APIKey: basicAuth, Logger: discardLogger()})
}

// One allow + report round trip on a kept-alive loopback connection.
func BenchmarkRoundTrip(b *testing.B) {
	ts := benchServer(b)
	bc := dialBench(b, ts.addr)
	defer bc.c.Close()
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		if err := bc.do(bc.allow); err != nil {
			b.Fatal(err)
		}
		if err := bc.do(bc.report); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu, 2*b.N)
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "req/s")
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per request of server and load generator
// together, a figure other processes on the machine barely disturb: the
// capacity of n cores is n seconds divided by it.
func reportCPU(b *testing.B, since time.Duration, reqs int) {
	if reqs > 0 && since > 0 {
		b.ReportMetric(float64((cpuTime()-since).Microseconds())/float64(reqs), "cpu-µs/req")
	}
}

// Throughput and latency with 8 client connections (as in DESIGN §8) and
// with 32 (Dovecot opens up to 100), each sending allow + report pairs; the
// load generator shares the machine. One op is one pair.
func BenchmarkLoopback(b *testing.B) {
	for _, n := range []int{8, 32} {
		b.Run("conns="+strconv.Itoa(n), func(b *testing.B) { benchLoopback(b, n) })
	}
}

func benchLoopback(b *testing.B, conns int) {
	ts := benchServer(b)
	clients := make([]*benchConn, conns)
	for i := range clients {
		clients[i] = dialBench(b, ts.addr)
		defer clients[i].c.Close()
	}
	var next atomic.Int64
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu := cpuTime()
	for i, bc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				for _, req := range [][]byte{bc.allow, bc.report} {
					t := time.Now()
					if err := bc.do(req); err != nil {
						b.Error(err)
						return
					}
					lat[i] = append(lat[i], time.Since(t))
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	reportCPU(b, cpu, 2*b.N)
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	}
	b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "req/s")
}

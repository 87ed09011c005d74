// Command policyload measures Postfix policy servers: it opens N persistent
// connections, sends realistic SMTP-session request mixes the way Postfix's
// smtpd does (one request at a time per connection, every attribute of
// Postfix 3.7), and prints requests/s and latency percentiles.
//
//	policyload -addr unix:/run/mailwarden/postfix.sock -conns 8 -duration 10s
//	policyload -floor -addr unix:/tmp/floor.sock    # DUNNO to everything
//	policyload -serve -addr unix:/tmp/mw.sock       # mailwarden's listener, fake Decider
//	policyload -serve -engine -addr unix:/tmp/mw.sock  # ... with the real engine
//	policyload -dovecot -addr 127.0.0.1:8643 -api-key K # Dovecot auth policy load
//	policyload -warm -addr unix:/run/mailwarden/postfix.sock -warm-dovecot 127.0.0.1:8643
//	policyload -free-port                           # print a free loopback TCP port
//
// Load: each connection plays SMTP sessions: CONNECT, then one to three
// messages of one to five RCPTs and an END-OF-MESSAGE. 60 % of the sessions
// are authenticated, with an account drawn from -accounts (heavy-tailed: a
// few accounts send much of the mail) that logs in from one of its three
// usual addresses (1 % from anywhere); the others come from any of -clients
// addresses (5 % IPv6). The run stops after -duration or -requests,
// whichever comes first; both are bounded.
//
// -floor answers DUNNO to every request with the least work a Go server can
// do: the protocol's floor, to measure in the same run as the server under
// test. -serve runs internal/postfixpolicy with an in-process Decider that
// answers from a read-only lock list (or, with -engine, the real detection
// engine with default settings). Both serve until interrupted.
//
// -dovecot sends Dovecot auth policy requests instead (dovecot.go): each
// connection plays logins, an allow then a report on a kept-alive HTTP/1.1
// connection, the way Dovecot's auth process does.
//
// -warm fills a server's state before it is measured (warm.go): every
// account logs in and sends one message over Postfix from each of its three
// usual addresses, then every one of the -clients addresses fails one login
// over Dovecot (background password guessing). Bounded by its count and by
// -duration.
//
// -tsv appends one tab-separated line per measurement (label, requests,
// seconds, requests/s, p50 µs, p99 µs, refused, errors), for summaries.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/postfixpolicy"
)

const (
	maxDuration = 10 * time.Minute
	maxRequests = 1_000_000_000
	maxConns    = 4096
)

func main() {
	var (
		addr     = flag.String("addr", "unix:/run/mailwarden/postfix.sock", "server address: unix:PATH, tcp:HOST:PORT or HOST:PORT")
		conns    = flag.Int("conns", 8, "persistent connections (1-4096)")
		duration = flag.Duration("duration", 10*time.Second, "run time (at most 10m)")
		requests = flag.Int64("requests", 0, "stop after this many requests (0: only -duration)")
		accounts = flag.Int("accounts", 100_000, "distinct sasl_username values")
		clients  = flag.Int("clients", 1_000_000, "distinct client addresses")
		seed     = flag.Uint64("seed", 1, "random seed")
		floor    = flag.Bool("floor", false, "serve DUNNO to everything on -addr instead of sending load")
		serve    = flag.Bool("serve", false, "serve mailwarden's Postfix policy listener on -addr instead of sending load")
		useEng   = flag.Bool("engine", false, "with -serve: decide with the real engine (default settings) instead of a fake")
		dovecot  = flag.Bool("dovecot", false, "send Dovecot auth policy load (allow + report pairs over HTTP) to -addr (HOST:PORT)")
		warm     = flag.Bool("warm", false, "fill a server's state instead of measuring: every account over Postfix (-addr), every address over Dovecot (-warm-dovecot)")
		warmDC   = flag.String("warm-dovecot", "", "with -warm: Dovecot auth policy address HOST:PORT (empty: accounts only)")
		apiKey   = flag.String("api-key", "", "with -dovecot or -warm: value of the X-API-Key header")
		label    = flag.String("label", "", "name of the measurement in -tsv (default: -addr)")
		tsv      = flag.String("tsv", "", "append one tab-separated result line to this file")
		freePort = flag.Bool("free-port", false, "print a free loopback TCP port and exit")
		cpuProf  = flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	)
	flag.Parse()
	if *freePort {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		return
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fail("%v", err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	network, address := splitAddr(*addr)
	if *floor || *serve {
		if err := runServer(network, address, *floor, *useEng); err != nil {
			fmt.Fprintln(os.Stderr, "policyload:", err)
			pprof.StopCPUProfile()
			os.Exit(1)
		}
		return
	}
	switch {
	case *conns < 1 || *conns > maxConns:
		fail("-conns must be 1-%d", maxConns)
	case *duration <= 0 || *duration > maxDuration:
		fail("-duration must be above 0 and at most %v", maxDuration)
	case *requests < 0 || *requests > maxRequests:
		fail("-requests must be 0-%d", maxRequests)
	case *accounts < 1 || *clients < 1:
		fail("-accounts and -clients must be positive")
	}
	if *warm {
		if err := runWarm(network, address, *warmDC, *apiKey, *conns, *duration, *accounts, *clients, *seed); err != nil {
			fmt.Fprintln(os.Stderr, "policyload:", err)
			os.Exit(1)
		}
		return
	}
	var res *result
	var err error
	if *dovecot {
		if network != "tcp" {
			fail("-dovecot needs a TCP address (Dovecot speaks HTTP over TCP only)")
		}
		res, err = runDovecot(address, *apiKey, *conns, *duration, *requests, *accounts, *clients, *seed)
	} else {
		res, err = runLoad(network, address, *conns, *duration, *requests, *accounts, *clients, *seed)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "policyload:", err)
		os.Exit(1)
	}
	if *dovecot {
		res.printDovecot(os.Stdout, *addr, *conns)
	} else {
		res.print(os.Stdout, *addr, *conns)
	}
	if *tsv != "" {
		name := *label
		if name == "" {
			name = *addr
		}
		if err := res.appendTSV(*tsv, name); err != nil {
			fmt.Fprintln(os.Stderr, "policyload:", err)
			os.Exit(1)
		}
	}
	if res.errors > 0 {
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "policyload: "+format+"\n", a...)
	os.Exit(2)
}

func splitAddr(a string) (network, address string) {
	switch {
	case strings.HasPrefix(a, "unix:"):
		return "unix", strings.TrimPrefix(a, "unix:")
	case strings.HasPrefix(a, "tcp:"):
		return "tcp", strings.TrimPrefix(a, "tcp:")
	case strings.HasPrefix(a, "inet:"):
		return "tcp", strings.TrimPrefix(a, "inet:")
	case strings.HasPrefix(a, "/"):
		return "unix", a
	}
	return "tcp", a
}

// ---- servers -------------------------------------------------------------

func runServer(network, address string, floor, useEngine bool) error {
	if network == "unix" {
		os.Remove(address)
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if floor {
		go func() { <-ctx.Done(); ln.Close() }()
		fmt.Fprintf(os.Stderr, "policyload: floor server on %s:%s\n", network, address)
		return serveFloor(ln)
	}
	var d interface {
		Decide(*event.Event) engine.Verdict
		Check(string, netip.Addr, time.Time) engine.Verdict
	} = &fakeDecider{locked: map[string]bool{"user000013@example3.com": true}}
	if useEngine {
		d = &engineDecider{e: engine.New(config.Default())}
	}
	s, err := postfixpolicy.New(postfixpolicy.Config{
		Decider: d,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Node:    "bench",
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(sctx)
	}()
	fmt.Fprintf(os.Stderr, "policyload: mailwarden policy server (engine=%v) on %s:%s\n", useEngine, network, address)
	if err := s.Serve(ln); !errors.Is(err, postfixpolicy.ErrServerClosed) {
		return err
	}
	return nil
}

// serveFloor answers DUNNO to every request: read lines up to the empty
// one, write the answer. Nothing is parsed.
func serveFloor(ln net.Listener) error {
	answer := []byte("action=DUNNO\n\n")
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer nc.Close()
			r := bufio.NewReaderSize(nc, 8192)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 1 {
					if _, err := nc.Write(answer); err != nil {
						return
					}
				}
			}
		}()
	}
}

// fakeDecider answers from a fixed lock list and counts events: the cost of
// the listener alone.
type fakeDecider struct {
	locked map[string]bool // read-only
	events atomic.Int64
}

func (f *fakeDecider) Decide(ev *event.Event) engine.Verdict {
	f.events.Add(1)
	if f.locked[ev.Account] {
		return engine.Lock
	}
	return engine.Allow
}

func (f *fakeDecider) Check(account string, _ netip.Addr, _ time.Time) engine.Verdict {
	if f.locked[account] {
		return engine.Lock
	}
	return engine.Allow
}

// engineDecider puts the detection engine behind the Decider contract the
// way the daemon does, without durable state.
type engineDecider struct{ e *engine.Engine }

func (d *engineDecider) Decide(ev *event.Event) engine.Verdict {
	v, _ := d.e.Process(ev, nil)
	return v
}

func (d *engineDecider) Check(account string, ip netip.Addr, t time.Time) engine.Verdict {
	return d.e.Check(account, ip, t)
}

// ---- load ----------------------------------------------------------------

type result struct {
	requests, errors int64
	refused          int64 // answers other than DUNNO (Dovecot: status -1)
	tarpit           int64 // Dovecot: answers with a status above 0
	elapsed          time.Duration
	hist             []uint64 // latency counts per microsecond
	over             uint64   // latencies beyond the histogram
	max              time.Duration
	firstErr         error
}

const histMicros = 100_000 // 100 ms at 1 µs resolution

func runLoad(network, address string, conns int, duration time.Duration, limit int64, accounts, clients int, seed uint64) (*result, error) {
	return runConns(network, address, conns, duration, func(i int, nc net.Conn, issued *atomic.Int64, stop *atomic.Bool, deadline time.Time) *result {
		g := newGen(seed+uint64(i)*0x9e3779b97f4a7c15, accounts, clients)
		return drive(nc, g, issued, stop, limit, deadline)
	})
}

// runConns opens conns connections, runs one driver per connection until
// the deadline and adds up their results.
func runConns(network, address string, conns int, duration time.Duration,
	driver func(i int, nc net.Conn, issued *atomic.Int64, stop *atomic.Bool, deadline time.Time) *result) (*result, error) {
	// Connect first, so that connection set-up is not measured.
	ncs := make([]net.Conn, conns)
	for i := range ncs {
		nc, err := net.DialTimeout(network, address, 5*time.Second)
		if err != nil {
			for _, c := range ncs[:i] {
				c.Close()
			}
			return nil, err
		}
		ncs[i] = nc
	}
	var (
		issued   atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		parts    = make([]*result, conns)
		deadline = time.Now().Add(duration)
	)
	start := time.Now()
	for i, nc := range ncs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			parts[i] = driver(i, nc, &issued, &stop, deadline)
		}()
	}
	wg.Wait()
	total := &result{elapsed: time.Since(start), hist: make([]uint64, histMicros)}
	for _, p := range parts {
		total.requests += p.requests
		total.errors += p.errors
		total.refused += p.refused
		total.tarpit += p.tarpit
		total.over += p.over
		total.max = max(total.max, p.max)
		if total.firstErr == nil {
			total.firstErr = p.firstErr
		}
		for j, n := range p.hist {
			total.hist[j] += n
		}
	}
	return total, nil
}

// drive sends requests on one connection until the deadline or the limit.
func drive(nc net.Conn, g *gen, issued *atomic.Int64, stop *atomic.Bool, limit int64, deadline time.Time) *result {
	res := &result{hist: make([]uint64, histMicros)}
	r := bufio.NewReaderSize(nc, 4096)
	nc.SetDeadline(deadline.Add(10 * time.Second))
	for {
		if stop.Load() {
			return res
		}
		if limit > 0 && issued.Add(1) > limit {
			stop.Store(true)
			return res
		}
		req := g.next()
		t := time.Now()
		if t.After(deadline) {
			stop.Store(true)
			return res
		}
		if _, err := nc.Write(req); err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		dunno, err := readAnswer(r)
		lat := time.Since(t)
		if err != nil {
			res.errors++
			res.firstErr = err
			return res
		}
		if !dunno {
			res.refused++
		}
		res.record(lat)
	}
}

// record counts one answered request that took lat.
func (r *result) record(lat time.Duration) {
	r.requests++
	if us := lat.Microseconds(); us < histMicros {
		r.hist[us]++
	} else {
		r.over++
	}
	r.max = max(r.max, lat)
}

// readAnswer reads "action=...\n\n" and reports whether it was DUNNO
// (in any case: some servers answer "dunno").
func readAnswer(r *bufio.Reader) (dunno bool, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(string(line), "action=") {
		return false, fmt.Errorf("bad answer %q", line)
	}
	dunno = strings.EqualFold(string(line), "action=DUNNO\n")
	if empty, err := r.ReadSlice('\n'); err != nil || len(empty) != 1 {
		return false, fmt.Errorf("answer not ended by an empty line (%q, %v)", empty, err)
	}
	return dunno, nil
}

// percentile returns the smallest latency at or under which a share p of
// the requests completed (nearest rank).
func (r *result) percentile(p float64) time.Duration {
	rank := max(uint64(math.Ceil(p*float64(r.requests))), 1)
	var seen uint64
	for us, c := range r.hist {
		seen += c
		if seen >= rank {
			return time.Duration(us) * time.Microsecond
		}
	}
	return r.max
}

func (r *result) print(w io.Writer, addr string, conns int) {
	rps := float64(r.requests) / r.elapsed.Seconds()
	fmt.Fprintf(w, "target      %s, %d connections\n", addr, conns)
	fmt.Fprintf(w, "requests    %d in %.2fs: %.0f requests/s\n", r.requests, r.elapsed.Seconds(), rps)
	fmt.Fprintf(w, "refused     %d (answers other than DUNNO)\n", r.refused)
	fmt.Fprintf(w, "latency     p50 %v  p90 %v  p99 %v  max %v (1 µs resolution)\n",
		r.percentile(0.50), r.percentile(0.90), r.percentile(0.99), r.max.Round(time.Microsecond))
	if r.errors > 0 {
		fmt.Fprintf(w, "errors      %d, first: %v\n", r.errors, r.firstErr)
	}
}

// appendTSV appends label, requests, seconds, requests/s, p50 and p99 in
// µs, refused and errors as one tab-separated line to the file.
func (r *result) appendTSV(path, label string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s\t%d\t%.2f\t%.0f\t%d\t%d\t%d\t%d\n", label, r.requests, r.elapsed.Seconds(),
		float64(r.requests)/r.elapsed.Seconds(), r.percentile(0.50).Microseconds(), r.percentile(0.99).Microseconds(),
		r.refused, r.errors)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ---- request generator -----------------------------------------------------

// gen produces the requests of SMTP sessions, one at a time.
type gen struct {
	rng      *rand.Rand
	accounts int
	clients  int
	zipf     *rand.Zipf
	buf      []byte

	// current session
	queue    []step
	account  int // -1: not authenticated
	client   int
	port     int
	instance uint64
	qid      uint64
}

type step struct {
	state string
	rcpts int // recipient_count (DATA, END-OF-MESSAGE)
	size  int
	msg   uint64 // instance counter of the message
}

func newGen(seed uint64, accounts, clients int) *gen {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	return &gen{
		rng: rng, accounts: accounts, clients: clients,
		zipf: rand.NewZipf(rng, 1.1, 10, uint64(accounts-1)),
		buf:  make([]byte, 0, 1024),
	}
}

func (g *gen) newSession() {
	g.queue = g.queue[:0]
	g.port = 1024 + g.rng.IntN(64000)
	if g.rng.IntN(100) < 60 {
		g.account = int(g.zipf.Uint64())
		if g.rng.IntN(100) == 0 {
			g.client = g.rng.IntN(g.clients)
		} else {
			g.client = g.usualClient(g.account, g.rng.IntN(3))
		}
	} else {
		g.account = -1
		g.client = g.rng.IntN(g.clients)
	}
	g.queue = append(g.queue, step{state: "CONNECT"})
	for range 1 + g.rng.IntN(3) {
		g.instance++
		n := 1 + g.rng.IntN(5)
		for range n {
			g.queue = append(g.queue, step{state: "RCPT", msg: g.instance})
		}
		g.queue = append(g.queue, step{state: "END-OF-MESSAGE", rcpts: n, size: 500 + g.rng.IntN(200_000), msg: g.instance})
	}
	slices.Reverse(g.queue)
}

// next returns the next request; the slice is valid until the next call.
func (g *gen) next() []byte {
	if len(g.queue) == 0 {
		g.newSession()
	}
	st := g.queue[len(g.queue)-1]
	g.queue = g.queue[:len(g.queue)-1]
	return g.build(st)
}

// usualClient is the client address number of account a's k-th usual
// address (k in 0-2).
func (g *gen) usualClient(a, k int) int {
	return int(mix(uint64(a)*3+uint64(k)) % uint64(g.clients))
}

// build returns the request for step st of the current session; the slice
// is valid until the next call.
func (g *gen) build(st step) []byte {
	b := g.buf[:0]
	b = append(b, "request=smtpd_access_policy\nprotocol_state="...)
	b = append(b, st.state...)
	b = append(b, "\nprotocol_name=ESMTP\nclient_address="...)
	b = appendClient(b, g.client)
	b = append(b, "\nclient_name=unknown\nreverse_client_name=unknown\nclient_port="...)
	b = strconv.AppendInt(b, int64(g.port), 10)
	b = append(b, "\nserver_address=198.51.100.1\nserver_port=587\nhelo_name=client.example.net\nsender="...)
	if st.state != "CONNECT" && g.account >= 0 {
		b = appendAccount(b, g.account)
	}
	b = append(b, "\nrecipient="...)
	if st.state == "RCPT" {
		b = append(b, "rcpt"...)
		b = strconv.AppendInt(b, int64(g.rng.IntN(1_000_000)), 10)
		b = append(b, "@example.org"...)
	}
	b = append(b, "\nrecipient_count="...)
	b = strconv.AppendInt(b, int64(st.rcpts), 10)
	b = append(b, "\nqueue_id="...)
	if st.state != "CONNECT" {
		b = strconv.AppendUint(b, 0x10000000+st.msg, 16)
	}
	b = append(b, "\ninstance="...)
	b = strconv.AppendUint(b, 0x1000+g.instance, 16)
	b = append(b, ".65f1c2d3.4e5f6.0\nsize="...)
	b = strconv.AppendInt(b, int64(st.size), 10)
	b = append(b, "\netrn_domain=\nstress=\nsasl_method="...)
	if st.state != "CONNECT" && g.account >= 0 {
		b = append(b, "PLAIN\nsasl_username="...)
		b = appendAccount(b, g.account)
	} else {
		b = append(b, "\nsasl_username="...)
	}
	b = append(b, "\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n"+
		"encryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n"+
		"policy_context=\ncompatibility_level=3.6\nmail_version=3.7.11\n\n"...)
	g.buf = b
	return b
}

func appendAccount(b []byte, i int) []byte {
	b = append(b, "user"...)
	s := strconv.Itoa(i)
	for range 6 - len(s) {
		b = append(b, '0')
	}
	b = append(b, s...)
	b = append(b, "@example"...)
	b = strconv.AppendInt(b, int64(i%10), 10)
	return append(b, ".com"...)
}

// appendClient writes client address number i: spread over the IPv4 space
// (5 % IPv6), the same address for the same i.
func appendClient(b []byte, i int) []byte {
	h := mix(uint64(i) + 0x1234)
	if h%20 == 0 {
		b = append(b, "2001:db8:"...)
		b = strconv.AppendUint(b, (h>>8)&0xffff, 16)
		b = append(b, ':')
		b = strconv.AppendUint(b, (h>>24)&0xffff, 16)
		b = append(b, "::"...)
		return strconv.AppendUint(b, (h>>40)&0xffff, 16)
	}
	b = strconv.AppendUint(b, 1+(h>>8)%223, 10)
	for _, sh := range []uint{16, 24, 32} {
		b = append(b, '.')
		b = strconv.AppendUint(b, (h>>sh)&0xff, 10)
	}
	return b
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

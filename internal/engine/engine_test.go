package engine

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/event"
)

var t0 = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC) // a Monday

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func fail(t time.Time, acct, addr string) *event.Event {
	return &event.Event{Time: t, Kind: event.AuthFail, Account: acct, IP: ip(addr), Protocol: event.IMAP, Source: "test"}
}

func login(t time.Time, acct, addr string, p event.Protocol) *event.Event {
	return &event.Event{Time: t, Kind: event.AuthOK, Account: acct, IP: ip(addr), Protocol: p, Source: "test"}
}

func msg(t time.Time, acct, addr string, rcpts int) *event.Event {
	return &event.Event{Time: t, Kind: event.Message, Account: acct, IP: ip(addr), Protocol: event.SMTP, Rcpts: rcpts, Size: 4000, Source: "test"}
}

type run struct {
	t    *testing.T
	e    *Engine
	incs []*Incident
	last Verdict
}

func newRun(t *testing.T, mod func(*config.Config)) *run {
	c := config.Default()
	if mod != nil {
		mod(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return &run{t: t, e: New(c)}
}

func (r *run) feed(evs ...*event.Event) {
	for _, ev := range evs {
		r.last, r.incs = r.e.Process(ev, r.incs)
	}
}

func (r *run) fired(det string) []*Incident {
	var out []*Incident
	for _, inc := range r.incs {
		if inc.Detector == det {
			out = append(out, inc)
		}
	}
	return out
}

func (r *run) none() {
	r.t.Helper()
	for _, inc := range r.incs {
		r.t.Errorf("unexpected incident %s account=%q ip=%v at %v: %v", inc.Detector, inc.Account, inc.IP, inc.DetectedAt, inc.Evidence)
	}
}

func TestCrackIP(t *testing.T) {
	r := newRun(t, nil)
	for i := 0; i < 30; i++ {
		r.feed(fail(t0.Add(time.Duration(i)*20*time.Second), fmt.Sprintf("user%d@example.com", i%3), "203.0.113.9"))
	}
	got := r.fired("crack_ip")
	if len(got) != 1 || got[0].Action != config.BlockIP || got[0].IP != ip("203.0.113.9") {
		t.Fatalf("crack_ip incidents = %+v", got)
	}
	if got[0].Evidence["failures"].(int) != 12 {
		t.Errorf("fired at %v failures, want 12", got[0].Evidence["failures"])
	}
	// The rest of the attack is refused and counted.
	if got[0].Stopped.AuthAttempts != 18 || r.last != Blocked {
		t.Errorf("stopped %+v, last verdict %v", got[0].Stopped, r.last)
	}
	// Another address still gets in.
	r.feed(login(t0.Add(time.Hour), "user1@example.com", "198.51.100.7", event.IMAP))
	if r.last != Allow {
		t.Errorf("other address verdict %v", r.last)
	}
	// The block expires after block_for; a repeat offender is blocked longer.
	r.incs = nil
	for i := 0; i < 12; i++ {
		r.feed(fail(t0.Add(2*time.Hour+time.Duration(i)*time.Second), "user1@example.com", "203.0.113.9"))
	}
	if got := r.fired("crack_ip"); len(got) != 1 || got[0].Evidence["blocked_for"] != "4h0m0s" {
		t.Fatalf("repeat offence: %+v", got)
	}
}

func TestCrackIPPwHashRetries(t *testing.T) {
	// The same wrong password retried by a client counts once.
	r := newRun(t, nil)
	for i := 0; i < 200; i++ {
		ev := fail(t0.Add(time.Duration(i)*time.Second), "joe@example.com", "203.0.113.9")
		ev.PwHash = "aa11"
		r.feed(ev)
	}
	r.none()
	for i := 0; i < 12; i++ {
		ev := fail(t0.Add(300*time.Second+time.Duration(i)*time.Second), "joe@example.com", "203.0.113.9")
		ev.PwHash = fmt.Sprintf("guess%d", i)
		r.feed(ev)
	}
	if got := r.fired("crack_ip"); len(got) != 1 || got[0].Evidence["distinct_passwords"] != 12 {
		t.Fatalf("distinct guesses: %+v", got)
	}
}

func TestStalePasswordFromUsualNetwork(t *testing.T) {
	// The user changed the password; the phone at home keeps trying the old
	// one every 2 minutes for 10 hours.
	r := newRun(t, nil)
	r.feed(login(t0.Add(-48*time.Hour), "ann@example.com", "198.51.100.20", event.IMAP))
	for i := 0; i < 300; i++ {
		r.feed(fail(t0.Add(time.Duration(i)*2*time.Minute), "ann@example.com", "198.51.100.20"))
	}
	r.none()
}

func TestNATScaling(t *testing.T) {
	// A university NAT: 30 users log in, and 13 failures from a few users who
	// mistype in 15 minutes must not block everyone.
	r := newRun(t, nil)
	for i := 0; i < 30; i++ {
		r.feed(login(t0.Add(time.Duration(i)*time.Second), fmt.Sprintf("s%d@uni.example", i), "192.0.2.1", event.IMAP))
	}
	for i := 0; i < 13; i++ {
		r.feed(fail(t0.Add(time.Minute+time.Duration(i)*time.Minute), fmt.Sprintf("s%d@uni.example", 40+i%3), "192.0.2.1"))
	}
	r.none()
}

func TestSprayIP(t *testing.T) {
	r := newRun(t, func(c *config.Config) { c.Detectors.CrackIP.Enabled = false })
	for i := 0; i < 6; i++ {
		r.feed(fail(t0.Add(time.Duration(i)*time.Minute), fmt.Sprintf("u%d@example.com", i), "203.0.113.50"))
	}
	got := r.fired("spray_ip")
	if len(got) != 1 || got[0].Evidence["accounts"] != 6 {
		t.Fatalf("spray_ip = %+v", got)
	}
}

func TestAccountAttackedProtectsVictim(t *testing.T) {
	r := newRun(t, nil)
	r.feed(login(t0.Add(-72*time.Hour), "boss@example.com", "198.51.100.1", event.IMAP))
	for i := 0; i < 6; i++ {
		r.feed(fail(t0.Add(time.Duration(i)*time.Minute), "boss@example.com", fmt.Sprintf("203.0.%d.7", 100+i)))
	}
	got := r.fired("account_attacked")
	if len(got) != 1 || got[0].Action != config.Alert {
		t.Fatalf("account_attacked = %+v", got)
	}
	// The owner still logs in from home: never locked out.
	r.feed(login(t0.Add(10*time.Minute), "boss@example.com", "198.51.100.1", event.IMAP))
	if r.last != Allow || r.e.Locked("boss@example.com") {
		t.Fatalf("victim locked out: verdict %v", r.last)
	}
	// An attacking address now logs in: the password was found.
	r.feed(login(t0.Add(11*time.Minute), "boss@example.com", "203.0.102.7", event.IMAP))
	if got := r.fired("account_attacked"); len(got) != 2 || got[1].Action != config.Lock || !r.e.Locked("boss@example.com") {
		t.Fatalf("success from attacker: %+v", got)
	}
}

func TestBotnet(t *testing.T) {
	r := newRun(t, nil)
	ips := []string{"109.162.53.114", "113.179.7.245", "14.161.22.9", "177.54.33.2", "186.10.4.99", "190.123.40.5", "201.17.88.3", "41.203.64.12", "5.39.218.4", "78.96.5.201", "91.200.12.7", "95.6.77.31", "77.121.250.77"}
	for i, a := range ips {
		r.feed(msg(t0.Add(time.Duration(i)*37*time.Minute), "joe@example.com", a, 1))
	}
	got := r.fired("botnet")
	if len(got) != 1 || got[0].Action != config.Lock {
		t.Fatalf("botnet = %+v", got)
	}
	if got[0].IP != ip(ips[7]) {
		t.Errorf("locked at %v, want the 8th address %s", got[0].IP, ips[7])
	}
	if got[0].Stopped.Messages != 5 {
		t.Errorf("stopped %+v, want the last 5 messages", got[0].Stopped)
	}
}

func TestBotnetBurst(t *testing.T) {
	r := newRun(t, nil)
	for i, a := range []string{"109.162.53.114", "113.179.7.245", "14.161.22.9", "177.54.33.2", "186.10.4.99"} {
		r.feed(msg(t0.Add(time.Duration(i)*40*time.Second), "joe@example.com", a, 1))
	}
	if got := r.fired("botnet"); len(got) != 1 || got[0].Evidence["reason"] != "burst" {
		t.Fatalf("burst = %+v", got)
	}
}

func TestMobileCGNATAndTravel(t *testing.T) {
	r := newRun(t, nil)
	// A phone behind a carrier NAT: a new public address every few minutes,
	// all inside the carrier's blocks (two /16s of one /8), for a week,
	// sending a few messages a day and checking mail constantly.
	for d := 0; d < 7; d++ {
		for i := 0; i < 200; i++ {
			t1 := t0.Add(time.Duration(d)*24*time.Hour + time.Duration(i)*5*time.Minute)
			a := fmt.Sprintf("100.%d.%d.%d", 64+(i%2), (i*7)%256, (i*13)%250+1)
			a = "176." + a[4:]
			r.feed(login(t1, "mobile@example.com", a, event.IMAP))
			if i%40 == 0 {
				r.feed(msg(t1, "mobile@example.com", a, 2))
			}
		}
	}
	// A traveller: home, then a week abroad in hotels, airports, a
	// conference: up to four new networks a day.
	r.feed(msg(t0, "trip@example.com", "198.51.100.30", 1))
	abroad := [][]string{{"81.2.69.1", "62.30.1.4"}, {"62.30.9.9", "185.20.1.1", "31.13.64.1"}, {"31.13.64.2", "80.10.4.5"}, {"80.10.4.6", "2.56.1.1", "93.184.216.5", "23.1.1.1"}}
	for d, day := range abroad {
		for i, a := range day {
			t1 := t0.Add(time.Duration(d+1)*24*time.Hour + time.Duration(i)*3*time.Hour)
			r.feed(login(t1, "trip@example.com", a, event.IMAP), msg(t1.Add(time.Minute), "trip@example.com", a, 1))
		}
	}
	// IPv6 privacy addresses: a new address every hour inside one /64.
	for i := 0; i < 48; i++ {
		a := fmt.Sprintf("2001:db8:4:7:%x:%x::1", i*97, i*31)
		r.feed(msg(t0.Add(time.Duration(i)*time.Hour), "v6@example.com", a, 1), login(t0.Add(time.Duration(i)*time.Hour), "v6@example.com", a, event.IMAP))
	}
	r.none()
}

func TestHarvest(t *testing.T) {
	r := newRun(t, nil)
	r.feed(msg(t0, "sue@example.com", "198.51.100.40", 1))
	for i, a := range []string{"45.1.2.3", "61.4.5.6", "103.7.8.9", "150.10.11.12", "187.13.14.15", "212.16.17.18"} {
		r.feed(login(t0.Add(time.Duration(i+1)*time.Hour), "sue@example.com", a, event.POP3))
	}
	if got := r.fired("harvest"); len(got) != 1 || got[0].Action != config.Lock {
		t.Fatalf("harvest = %+v", got)
	}
}

func TestSpamwareAndHistory(t *testing.T) {
	r := newRun(t, nil)
	for i := 0; i < 200; i++ {
		r.feed(msg(t0.Add(time.Duration(i)*10*time.Second), "pc@example.com", "198.51.100.60", 1))
	}
	if got := r.fired("spamware"); len(got) != 1 || got[0].Action != config.Hold {
		t.Fatalf("spamware = %+v", got)
	}
	if r.last != Hold {
		t.Errorf("verdict %v, want hold", r.last)
	}
	// A newsletter sender whose steady history is 900 messages a day in one
	// hour: scaled caps, no incident.
	r2 := newRun(t, nil)
	for d := 0; d < 14; d++ {
		for i := 0; i < 900; i++ {
			r2.feed(msg(t0.Add(time.Duration(d)*24*time.Hour+time.Duration(i)*3*time.Second), "news@example.com", "198.51.100.61", 1))
		}
	}
	for _, inc := range r2.incs {
		if inc.DetectedAt.After(t0.Add(8 * 24 * time.Hour)) {
			t.Errorf("steady bulk sender flagged after history: %s %v", inc.Detector, inc.Evidence)
		}
	}
}

func TestPerConnectionBadRcptDailyCaps(t *testing.T) {
	r := newRun(t, nil)
	for i := 0; i < 50; i++ {
		ev := msg(t0.Add(time.Duration(i)*time.Second), "batch@example.com", "198.51.100.70", 1)
		ev.Session = "s1"
		r.feed(ev)
	}
	if got := r.fired("per_connection"); len(got) != 1 {
		t.Fatalf("per_connection = %+v", got)
	}
	for i := 0; i < 40; i++ {
		r.feed(&event.Event{Time: t0.Add(time.Duration(i) * time.Second), Kind: event.RcptRejected, Account: "rr@example.com", IP: ip("198.51.100.71"), Source: "test"})
	}
	if got := r.fired("bad_rcpt"); len(got) != 1 || !r.e.Locked("rr@example.com") {
		t.Fatalf("bad_rcpt = %+v", got)
	}
	for i := 0; i < 12; i++ {
		r.feed(msg(t0.Add(time.Duration(i)*90*time.Minute), "cap@example.com", fmt.Sprintf("198.51.100.%d", 80+i%2), 99))
	}
	got := r.fired("daily_caps")
	if len(got) != 1 || r.last != Defer || got[0].Stopped.Messages != 1 {
		t.Fatalf("daily_caps = %+v, last %v", got, r.last)
	}
}

func TestAllowlistAndDryRun(t *testing.T) {
	r := newRun(t, func(c *config.Config) {
		c.Allowlist.Accounts = []string{"bulk@example.com"}
		c.DryRun = true
	})
	for i := 0; i < 400; i++ {
		r.feed(msg(t0.Add(time.Duration(i)*time.Second), "bulk@example.com", "198.51.100.90", 5))
	}
	r.none()
	for i := 0; i < 20; i++ {
		r.feed(fail(t0.Add(time.Duration(i)*time.Second), "x@example.com", "203.0.113.99"))
	}
	got := r.fired("crack_ip")
	if len(got) != 1 || !got[0].DryRun || r.last != Allow {
		t.Fatalf("dry run: %+v verdict %v", got, r.last)
	}
}

// An attacker spraying failures from 2 million addresses cannot grow the
// engine's state past its cap.
func TestBoundedMemory(t *testing.T) {
	const limit = 20_000
	r := newRun(t, func(c *config.Config) { c.MaxTrackedKeys = limit })
	ev := event.Event{Kind: event.AuthFail, Account: "victim@example.com", Protocol: event.SMTP, Source: "test"}
	maxSeen := 0
	for i := 0; i < 2_000_000; i++ {
		ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
		ev.IP = netip.AddrFrom4([4]byte{byte(1 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		r.last, r.incs = r.e.Process(&ev, r.incs[:0])
		if n := r.e.st.len(); n > maxSeen {
			maxSeen = n
		}
	}
	if maxSeen > limit {
		t.Fatalf("tracked keys reached %d, cap %d", maxSeen, limit)
	}
	if maxSeen < limit {
		t.Fatalf("tracked keys peaked at %d: the test did not reach the cap %d", maxSeen, limit)
	}
	if r.e.Evicted() == 0 {
		t.Fatal("nothing evicted")
	}
}

// Large volumes still add up: the byte counters are wide, the others
// saturate far above every threshold.
func TestCountersAndByteCap(t *testing.T) {
	var c counter
	w := time.Hour
	if got := c.add(t0, w, 70000); got != 65535 {
		t.Errorf("saturating counter = %d", got)
	}
	if got := c.add(t0.Add(2*time.Hour), w, 3); got != 3 {
		t.Errorf("after the window: %d", got)
	}
	r := newRun(t, nil)
	for i := 0; i < 8; i++ {
		ev := msg(t0.Add(time.Duration(i)*time.Minute), "big@example.com", "198.51.100.99", 1)
		ev.Size = 300 << 20
		r.feed(ev)
	}
	got := r.fired("daily_caps")
	if len(got) != 1 || r.last != Defer {
		t.Fatalf("2.4 GB in 8 messages: %+v, verdict %v", got, r.last)
	}
}

package scenario

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/replay"
)

// day0 is a Monday; the logs' files are dated a few days later.
var day0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

// replayLogs runs the three logs through replay and the engine, as
// `mailwarden analyze` does.
func replayLogs(t *testing.T, l *logs, mod func(*config.Config)) []*engine.Incident {
	t.Helper()
	cfg := config.Default()
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ref := day0.Add(40 * 24 * time.Hour)
	opts := replay.Options{Loc: time.UTC}
	m := &replay.Merger{}
	for name, ls := range map[string][]line{"mail.log": l.postfix, "dovecot.log": l.dovecot, "exim_mainlog": l.exim} {
		if len(ls) > 0 {
			m.Streams = append(m.Streams, replay.NewStream(name, strings.NewReader(render(ls)), opts, ref))
		}
	}
	e := engine.New(cfg)
	var incs []*engine.Incident
	for ev := m.Next(); ev != nil; ev = m.Next() {
		_, incs = e.Process(ev, incs)
	}
	c := m.Counts()
	t.Logf("replayed %d lines, %d events, %d incidents", c.Lines, c.Events, len(incs))
	if c.Events == 0 {
		t.Fatal("no events")
	}
	if c.Unparsed > 0 {
		t.Errorf("%d of %d generated lines did not parse", c.Unparsed, c.Lines)
	}
	return incs
}

func only(t *testing.T, incs []*engine.Incident, detector, account, ip string, action config.Action) *engine.Incident {
	t.Helper()
	var hit *engine.Incident
	for _, inc := range incs {
		if inc.Detector == detector && (account == "" || inc.Account == account) && (ip == "" || inc.IP.String() == ip) {
			if hit == nil {
				hit = inc
			}
			continue
		}
		if inc.Detector == "baseline" && detector != "baseline" && account != "" && inc.Account == account {
			continue // a volume attack is also far above the account's usual day
		}
		t.Errorf("unexpected %s incident: account=%q ip=%v at %v %v", inc.Detector, inc.Account, inc.IP, inc.DetectedAt, inc.Evidence)
	}
	if hit == nil {
		t.Fatalf("%s did not fire (account %q ip %q)", detector, account, ip)
	}
	if hit.Action != action {
		t.Errorf("%s action = %s, want %s", detector, hit.Action, action)
	}
	return hit
}

// normalTraffic is a week of ordinary users: office hours, quieter
// weekends, phones polling IMAP from a carrier's NAT pool, a laptop on IPv6
// with privacy addresses, a user who changed the password and left an old
// phone retrying at home, a traveller abroad, and a newsletter account on
// the allowlist.
func normalTraffic(l *logs, r *rand.Rand) { population(l, r, 40, 10, 7, true) }

// population is normalTraffic with staff office users and mobile phone
// users over days days.
func population(l *logs, r *rand.Rand, staff, mobiles, days int, newsletter bool) {
	for d := 0; d < days; d++ {
		day := day0.Add(time.Duration(d) * 24 * time.Hour)
		weekend := d >= 5
		// 40 office users sending through Postfix and reading over IMAP from
		// home or office.
		for u := 0; u < staff; u++ {
			acct := fmt.Sprintf("staff%02d@example.com", u)
			home := fmt.Sprintf("198.51.%d.%d", 100+u%20, 10+u)
			office := "203.0.113.10"
			n := 2 + r.IntN(12)
			if weekend {
				n = r.IntN(3)
			}
			for i := 0; i < n; i++ {
				t := day.Add(time.Duration(8*3600+r.IntN(10*3600)) * time.Second)
				ip := office
				if weekend || i%4 == 3 {
					ip = home
				}
				l.dcLogin(t.Add(-time.Minute), "imap", acct, ip)
				l.pfSubmit(t, acct, ip, 1+r.IntN(2), 1+r.IntN(4))
			}
			// A mistyped password now and then.
			if r.IntN(5) == 0 {
				t := day.Add(time.Duration(9*3600+r.IntN(8*3600)) * time.Second)
				l.dcFail(t, "imap", acct, office, 1+r.IntN(3))
				l.dcLogin(t.Add(20*time.Second), "imap", acct, office)
			}
		}
		// Phones behind a carrier NAT: a new public address on every poll,
		// inside the carrier's two /16s of one /8.
		for u := 0; u < mobiles; u++ {
			acct := fmt.Sprintf("mobile%d@example.com", u)
			for i := 0; i < 96; i++ {
				t := day.Add(time.Duration(i)*15*time.Minute + time.Duration(u)*time.Second)
				ip := fmt.Sprintf("176.%d.%d.%d", 64+r.IntN(2), r.IntN(256), 1+r.IntN(254))
				l.dcLogin(t, "imap", acct, ip)
				if i%24 == 10 {
					l.exSubmit(t.Add(time.Minute), acct, ip, 1, 1)
				}
			}
		}
		// A laptop on IPv6 with privacy addresses in one /64.
		for i := 0; i < 12; i++ {
			t := day.Add(time.Duration(8+i) * time.Hour)
			ip := fmt.Sprintf("2001:db8:77:1:%x:%x:%x:%x", r.IntN(65536), r.IntN(65536), r.IntN(65536), r.IntN(65536))
			l.dcLogin(t, "imap", "v6@example.com", ip)
			l.pfSubmit(t.Add(time.Minute), "v6@example.com", ip, 1, 2)
		}
		// The newsletter account: thousands a day, on the allowlist.
		for i := 0; i < 30 && newsletter; i++ {
			l.pfSubmit(day.Add(6*time.Hour+time.Duration(i)*time.Minute), "news@example.com", "192.0.2.200", 50, 40)
		}
	}
	// Stale password: ann used her phone at home all week; on day 4 she
	// changes her password and the old tablet retries every 5 minutes for
	// 10 hours.
	for d := 0; d < days; d++ {
		l.dcLogin(day0.Add(time.Duration(d)*24*time.Hour+19*time.Hour), "imap", "ann@example.com", "198.51.100.77")
	}
	for i := 0; i < 120 && days > 4; i++ {
		l.dcFail(day0.Add(4*24*time.Hour+8*time.Hour+time.Duration(i)*5*time.Minute), "imap", "ann@example.com", "198.51.100.78", 1)
		if i%3 == 0 {
			l.pfAuthFail(day0.Add(4*24*time.Hour+8*time.Hour+time.Duration(i)*5*time.Minute+time.Second), "ann@example.com", "198.51.100.78")
		}
	}
	// Traveller: home on Monday, then a week abroad: hotels, an airport, a
	// conference, a café — a few new networks a day, mail every day.
	l.pfSubmit(day0.Add(9*time.Hour), "trip@example.com", "198.51.100.30", 2, 1)
	abroad := [][]string{
		{"81.2.69.160", "62.30.112.4"},
		{"62.30.112.9", "185.45.12.6", "31.13.64.35"},
		{"31.13.64.35", "80.10.4.5"},
		{"80.10.4.5", "2.56.160.1", "93.184.216.34"},
		{"93.184.216.34", "23.45.6.7"},
		{"23.45.6.7", "81.2.69.160"},
	}
	for d, ips := range abroad[:min(len(abroad), days-1)] {
		for i, ip := range ips {
			t := day0.Add(time.Duration(d+1)*24*time.Hour + time.Duration(7+4*i)*time.Hour)
			l.dcLogin(t, "imap", "trip@example.com", ip)
			l.pfSubmit(t.Add(5*time.Minute), "trip@example.com", ip, 1+r.IntN(3), 1+r.IntN(2))
		}
	}
}

func allowNews(c *config.Config) { c.Allowlist.Accounts = []string{"news@example.com"} }

func TestNormalTrafficIsSilent(t *testing.T) {
	l := &logs{}
	normalTraffic(l, rand.New(rand.NewPCG(1, 2)))
	for _, inc := range replayLogs(t, l, allowNews) {
		t.Errorf("false alarm: %s %s account=%q ip=%v at %v: %v", inc.Detector, inc.Action, inc.Account, inc.IP, inc.DetectedAt, inc.Evidence)
	}
}

// Without the allowlist the newsletter account is caught by the volume
// detectors: the allowlist is what keeps it silent above.
func TestBulkSenderNeedsAllowlist(t *testing.T) {
	l := &logs{}
	for i := 0; i < 30; i++ {
		l.pfSubmit(day0.Add(6*time.Hour+time.Duration(i)*time.Minute), "news@example.com", "192.0.2.200", 50, 40)
	}
	incs := replayLogs(t, l, nil)
	if len(incs) == 0 {
		t.Fatal("1500 messages to 60000 recipients in 30 minutes raised nothing")
	}
	if incs := replayLogs(t, l, allowNews); len(incs) != 0 {
		t.Fatalf("allowlisted sender flagged: %+v", incs[0])
	}
}

func attack(t *testing.T, f func(l *logs)) []*engine.Incident {
	l := &logs{}
	normalTraffic(l, rand.New(rand.NewPCG(3, 4)))
	f(l)
	return replayLogs(t, l, allowNews)
}

func TestCrackIP(t *testing.T) {
	at := day0.Add(2*24*time.Hour + 3*time.Hour)
	incs := attack(t, func(l *logs) {
		for i := 0; i < 60; i++ {
			l.dcFail(at.Add(time.Duration(i)*10*time.Second), "imap", "staff07@example.com", "45.155.205.33", 1)
		}
	})
	inc := only(t, incs, "crack_ip", "", "45.155.205.33", config.BlockIP)
	if inc.Stopped.AuthAttempts == 0 {
		t.Errorf("block stopped nothing: %+v", inc.Stopped)
	}
}

func TestCrackIPSlow(t *testing.T) {
	// One guess every 3 minutes through Exim: under the short rate, caught
	// by the long window.
	at := day0.Add(24 * time.Hour)
	incs := attack(t, func(l *logs) {
		for i := 0; i < 60; i++ {
			l.exAuthFail(at.Add(time.Duration(i)*3*time.Minute), "staff03@example.com", "193.32.162.70")
		}
	})
	only(t, incs, "crack_ip", "", "193.32.162.70", config.BlockIP)
}

func TestSprayIP(t *testing.T) {
	at := day0.Add(3*24*time.Hour + 2*time.Hour)
	incs := attack(t, func(l *logs) {
		for i := 0; i < 10; i++ {
			l.pfAuthFail(at.Add(time.Duration(i)*4*time.Minute), fmt.Sprintf("staff%02d@example.com", i*3), "141.98.11.5")
		}
	})
	only(t, incs, "spray_ip", "", "141.98.11.5", config.BlockIP)
}

func TestAccountAttacked(t *testing.T) {
	at := day0.Add(5*24*time.Hour + 1*time.Hour)
	incs := attack(t, func(l *logs) {
		for i := 0; i < 9; i++ {
			l.dcFail(at.Add(time.Duration(i)*5*time.Minute), "pop3", "staff11@example.com", fmt.Sprintf("%d.%d.7.%d", 31+i*20, 40+i, 9+i), 2)
		}
	})
	inc := only(t, incs, "account_attacked", "staff11@example.com", "", config.Alert)
	if inc.Stopped.Messages != 0 || inc.Stopped.Logins != 0 {
		t.Errorf("the victim was locked out: %+v", inc.Stopped)
	}
}

func TestBotnet(t *testing.T) {
	at := day0.Add(2*24*time.Hour + 1*time.Hour)
	ips := []string{"109.162.53.114", "113.179.7.245", "186.94.41.7", "41.251.77.130", "94.54.12.201", "190.43.187.18", "117.199.96.44", "200.55.230.9", "37.238.144.61", "14.226.68.15", "88.247.140.99", "179.108.22.163", "77.121.250.77"}
	incs := attack(t, func(l *logs) {
		for i, ip := range ips {
			l.pfSubmit(at.Add(time.Duration(i)*47*time.Minute), "staff21@example.com", ip, 1+i%3, 1)
		}
	})
	inc := only(t, incs, "botnet", "staff21@example.com", "", config.Lock)
	if inc.Stopped.Messages == 0 {
		t.Error("the lock stopped nothing")
	}
}

func TestSpamware(t *testing.T) {
	at := day0.Add(3*24*time.Hour + 14*time.Hour)
	incs := attack(t, func(l *logs) {
		// The trojan on staff05's home PC: short sessions, 3 messages each,
		// from the usual home address.
		for i := 0; i < 80; i++ {
			l.pfSubmit(at.Add(time.Duration(i)*40*time.Second), "staff05@example.com", "198.51.105.15", 3, 2)
		}
	})
	only(t, incs, "spamware", "staff05@example.com", "198.51.105.15", config.Hold)
}

func TestPerConnection(t *testing.T) {
	at := day0.Add(1*24*time.Hour + 15*time.Hour)
	incs := attack(t, func(l *logs) {
		l.exSubmit(at, "mobile3@example.com", "176.64.1.2", 70, 1)
	})
	only(t, incs, "per_connection", "mobile3@example.com", "176.64.1.2", config.Hold)
}

func TestBadRcpt(t *testing.T) {
	at := day0.Add(4*24*time.Hour + 10*time.Hour)
	incs := attack(t, func(l *logs) {
		for i := 0; i < 60; i++ {
			l.exBadRcpt(at.Add(time.Duration(i)*20*time.Second), "mobile1@example.com", "176.65.9.9", fmt.Sprintf("x%d@example.com", i))
		}
	})
	only(t, incs, "bad_rcpt", "mobile1@example.com", "", config.Lock)
}

func TestDailyCaps(t *testing.T) {
	at := day0.Add(5*24*time.Hour + 6*time.Hour)
	incs := attack(t, func(l *logs) {
		// 1 200 recipients over 16 hours: slow enough for spamware, over the
		// daily cap.
		for i := 0; i < 24; i++ {
			l.pfSubmit(at.Add(time.Duration(i)*40*time.Minute), "staff30@example.com", "203.0.113.10", 1, 50)
		}
	})
	inc := only(t, incs, "daily_caps", "staff30@example.com", "", config.Defer)
	if inc.Stopped.Messages == 0 {
		t.Error("nothing deferred after the cap")
	}
}

func TestHarvest(t *testing.T) {
	at := day0.Add(6*24*time.Hour + 1*time.Hour)
	incs := attack(t, func(l *logs) {
		for i, ip := range []string{"5.188.62.11", "45.134.26.7", "89.248.165.2", "103.99.0.12", "152.32.180.4", "185.220.101.9", "212.70.149.3"} {
			l.dcLogin(at.Add(time.Duration(i)*50*time.Minute), "pop3", "staff15@example.com", ip)
		}
	})
	only(t, incs, "harvest", "staff15@example.com", "", config.Lock)
}

package scenario

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/replay"
)

var updateSamples = flag.Bool("update-samples", false, "rewrite testdata/samples/mail.log")

// sampleLogs is the bundled quick-start sample: three days of a small
// provider (Postfix submission and Dovecot IMAP/POP in one Debian-style
// mail.log) with one of each attack in it.
func sampleLogs() *logs {
	l := &logs{}
	population(l, rand.New(rand.NewPCG(2026, 11)), 12, 3, 3, false)
	d1 := day0.Add(24 * time.Hour)
	for i := 0; i < 40; i++ { // brute force against one mailbox
		l.dcFail(d1.Add(2*time.Hour+time.Duration(i)*15*time.Second), "imap", "staff04@example.com", "45.155.205.33", 1)
	}
	for i := 0; i < 9; i++ { // password spraying through SMTP AUTH
		l.pfAuthFail(d1.Add(3*time.Hour+time.Duration(i)*3*time.Minute), fmt.Sprintf("staff%02d@example.com", i), "141.98.11.5")
	}
	for i, ip := range []string{"109.162.53.114", "113.179.7.245", "186.94.41.7", "41.251.77.130", "94.54.12.201", "190.43.187.18", "117.199.96.44", "200.55.230.9", "37.238.144.61", "14.226.68.15"} {
		l.pfSubmit(d1.Add(9*time.Hour+time.Duration(i)*41*time.Minute), "staff07@example.com", ip, 1, 1)
	}
	for i := 0; i < 70; i++ { // spamware on a home PC
		l.pfSubmit(d1.Add(20*time.Hour+time.Duration(i)*45*time.Second), "staff02@example.com", "198.51.102.12", 3, 4)
	}
	d2 := day0.Add(2 * 24 * time.Hour)
	for i, ip := range []string{"5.188.62.11", "45.134.26.7", "89.248.165.2", "103.99.0.12", "152.32.180.4", "185.220.101.9"} {
		l.dcLogin(d2.Add(time.Hour+time.Duration(i)*30*time.Minute), "pop3", "staff09@example.com", ip)
	}
	return l
}

func TestBundledSample(t *testing.T) {
	l := sampleLogs()
	all := append(append([]line{}, l.postfix...), l.dovecot...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].t.Before(all[j].t) })
	text := render(all)
	path := filepath.Join("..", "..", "testdata", "samples", "mail.log")
	if *updateSamples {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != text {
		t.Fatalf("%s is not what sampleLogs writes: run go test ./internal/scenario -update-samples", path)
	}
	cfg := config.Default()
	cfg.Validate()
	e := engine.New(cfg)
	m := &replay.Merger{Streams: []*replay.Stream{replay.NewStream("mail.log", strings.NewReader(text), replay.Options{}, day0.Add(30*24*time.Hour))}}
	got := map[string]bool{}
	var incs []*engine.Incident
	for ev := m.Next(); ev != nil; ev = m.Next() {
		_, incs = e.Process(ev, incs)
	}
	for _, inc := range incs {
		got[inc.Detector+" "+inc.Account+inc.IP.String()] = true
	}
	for _, want := range []string{
		"crack_ip 45.155.205.33",
		"spray_ip 141.98.11.5",
		"botnet staff07@example.com" + incs[0].IP.String()[:0],
		"spamware staff02@example.com198.51.102.12",
		"harvest staff09@example.com",
	} {
		found := false
		for k := range got {
			if strings.HasPrefix(k, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("the sample does not show %q; got %v", want, got)
		}
	}
	if c := m.Counts(); c.Unparsed != 0 {
		t.Errorf("%d unparsed lines in the sample", c.Unparsed)
	}
}

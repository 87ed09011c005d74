package notify

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSyslogLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := testConfig()
	cfg.Syslog = true
	n := newNotifier(t, cfg)
	n.sys.network, n.sys.addr = "unixgram", path
	n.run()
	account := evilAccount + " \"quoted\" `id` $(rm -rf /)"
	x := botnetNotice(31, account)
	x.Summary = "line one\nline two"
	n.Notify(x)

	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8192)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no syslog datagram: %v\n%s", err, n.log)
	}
	msg := string(buf[:k])
	// <facility auth (4) * 8 + warning (4)>, tag mailwarden.
	if !strings.HasPrefix(msg, "<36>") || !strings.Contains(msg, " mailwarden[") {
		t.Errorf("priority or tag: %q", msg)
	}
	if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") || strings.Contains(msg, "\r") {
		t.Errorf("want exactly one line: %q", msg)
	}
	_, line, ok := strings.Cut(msg, "]: ")
	if !ok || !strings.HasPrefix(line, "incident id=31 node=mx1 detector=botnet action=lock dry_run=false account=") {
		t.Fatalf("line: %q", line)
	}
	rest := line[strings.Index(line, "account=")+len("account="):]
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		t.Fatalf("account is not quoted: %q", rest)
	}
	if got, _ := strconv.Unquote(q); got != account {
		t.Errorf("account field %s unquotes to %q, want %q", q, got, account)
	}
	if !strings.HasPrefix(rest[len(q):], " ip=77.121.250.77 detected_at=2024-03-01T11:59:03Z summary=\"line one\\nline two\" done=\"account locked; 2 IMAP sessions kicked; 3 queued messages held\"") {
		t.Errorf("fields after the account: %q", rest[len(q):])
	}
	waitStats(t, n, "the syslog line counted", func(s Stats) bool { return s.Channel(ChannelSyslog).Sent == 1 })
}

// No syslog: said once, given up (counted), the other channels go on.
func TestSyslogUnavailable(t *testing.T) {
	hs := newHookServer(t, "k")
	cfg := withHook(testConfig(), hs.URL, "k")
	cfg.Syslog = true
	n := newNotifier(t, cfg)
	n.sys.network, n.sys.addr = "unixgram", filepath.Join(t.TempDir(), "nothing-here")
	n.run()
	for id := int64(1); id <= 3; id++ {
		n.Notify(botnetNotice(id, "joe@example.org"))
	}
	s := waitStats(t, n, "syslog given up, webhooks sent", func(s Stats) bool {
		return s.Channel(ChannelSyslog).GivenUp == 3 && s.Channel(ChannelWebhook).Sent == 3
	})
	if c := s.Channel(ChannelSyslog); c.Rejected != 3 || c.Sent != 0 {
		t.Errorf("syslog stats %+v", c)
	}
	if l := n.log.String(); strings.Count(l, "syslog unavailable") != 1 {
		t.Errorf("want syslog's absence logged once:\n%s", l)
	}
}

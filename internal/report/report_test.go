package report

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// Account names come from the logs, that is from attackers: they must not
// be able to forge lines in a report or move the terminal's cursor.
func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"joe@example.com":                    "joe@example.com",
		"evil\nLast connection from 1.2.3.4": "evil?Last connection from 1.2.3.4",
		"\x1b[2Jx":                           "?[2Jx",
		"a\rb\tc\x7f":                        "a?b?c?",
		"ünïcödé@example.com":                "ünïcödé@example.com",
		"\u0085x":                            "?x",
	} {
		if got := Safe(in); got != want {
			t.Errorf("Safe(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Safe(strings.Repeat("a", 1000)); len(got) > 260 {
		t.Errorf("Safe does not cap length: %d", len(got))
	}
}

func TestCollectorDays(t *testing.T) {
	c := &Collector{Loc: time.UTC}
	c.Keep("joe@example.com", "2026-03-02")
	add := func(ts string, ip string, kind event.Kind, p event.Protocol) {
		tm, _ := time.Parse(time.RFC3339, ts)
		c.Add(&event.Event{Time: tm, Kind: kind, Account: "joe@example.com", IP: netip.MustParseAddr(ip), Protocol: p})
	}
	add("2026-03-02T10:00:00Z", "192.0.2.1", event.Message, event.SMTP)
	add("2026-03-02T11:00:00Z", "192.0.2.1", event.Message, event.SMTP)
	add("2026-03-02T12:00:00Z", "198.51.100.9", event.AuthOK, event.IMAP)
	add("2026-03-03T09:00:00Z", "203.0.113.5", event.Message, event.SMTP)
	var b bytes.Buffer
	c.Table("joe@example.com", "2026-03-02").Write(&b, time.UTC)
	want := "2026-03-02 -> mailbox joe@example.com: (1)\n  192.0.2.1 => 2\n    Last connection from 192.0.2.1 at 11:00:00\n  IMAP/POP logins from 1 addresses:\n  198.51.100.9 => 1\n"
	if b.String() != want {
		t.Errorf("kept day:\n%s\nwant:\n%s", b.String(), want)
	}
	if tb := c.Table("joe@example.com", "2026-03-03"); tb == nil || tb.SMTPAddresses() != 1 {
		t.Errorf("current day: %+v", tb)
	}
}

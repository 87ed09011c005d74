package f2bfixture

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

func TestCheck(t *testing.T) {
	z := Zone()
	at := time.Date(2005, 6, 13, 16, 30, 54, 0, z)
	fail := event.Event{Kind: event.AuthFail, IP: netip.MustParseAddr("192.0.2.1"), Time: at, Account: "bob"}
	l := Line{Text: "Jun 13 16:30:54 x dovecot: …", Want: &Want{Match: true, Host: "192.0.2.1", Time: "2005-06-13T16:30:54", User: "Bob"}}
	if msg := l.Check([]event.Event{fail}); msg != "" {
		t.Errorf("matching event rejected: %s", msg)
	}
	for name, e := range map[string]event.Event{
		"other host": {Kind: event.AuthFail, IP: netip.MustParseAddr("192.0.2.2"), Time: at, Account: "bob"},
		"other time": {Kind: event.AuthFail, IP: fail.IP, Time: at.Add(time.Second), Account: "bob"},
		"other user": {Kind: event.AuthFail, IP: fail.IP, Time: at, Account: "eve"},
		"not failed": {Kind: event.AuthOK, IP: fail.IP, Time: at, Account: "bob"},
	} {
		if l.Check([]event.Event{e}) == "" {
			t.Errorf("%s: accepted", name)
		}
	}
	tai := Line{Text: "@400000004c91b044077a9e94 imap-login: …", Want: &Want{Match: true, Host: "192.0.2.1", Time: "2005-06-13T16:31:00"}}
	if msg := tai.Check([]event.Event{fail}); msg != "" {
		t.Errorf("TAI64N line within 10 s rejected: %s", msg)
	}
	neg := Line{Text: "x", Want: &Want{Match: false}}
	if neg.Check([]event.Event{fail}) == "" {
		t.Error("match=false accepted an auth failure")
	}
	if neg.Check([]event.Event{{Kind: event.Reject, IP: fail.IP}}) != "" {
		t.Error("match=false refused a non-auth refusal")
	}
}

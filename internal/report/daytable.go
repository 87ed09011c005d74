// Package report renders what mailwarden found for people and for programs:
// the per-account daily address table admins already use ("mailbox joe: (13)
// … Last connection from …"), incidents with their evidence as text, and
// the JSON Lines contract of `mailwarden analyze --format json`.
//
// It does not detect anything: it formats engine incidents and collects the
// per-account day tables from the event stream.
package report

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/event"
)

// ipUse is one address's use of an account on one day.
type ipUse struct {
	messages int
	logins   int // IMAP/POP logins
	smtp     bool
}

// DayTable is one account's use on one day: the addresses it sent from
// (authenticated SMTP messages) and logged in from (IMAP/POP).
type DayTable struct {
	Account string
	Day     string // YYYY-MM-DD in the report's zone
	ips     map[netip.Addr]*ipUse
	lastIP  netip.Addr
	lastAt  time.Time
}

func newDayTable(account, day string) *DayTable {
	return &DayTable{Account: account, Day: day, ips: map[netip.Addr]*ipUse{}}
}

func (t *DayTable) add(ev *event.Event) {
	u := t.ips[ev.IP]
	if u == nil {
		u = &ipUse{}
		t.ips[ev.IP] = u
	}
	switch {
	case ev.Kind == event.Message:
		u.messages++
		u.smtp = true
	case ev.Protocol == event.IMAP || ev.Protocol == event.POP3:
		u.logins++
		return // the "last connection" line is about sending
	default:
		u.smtp = true
	}
	t.lastIP, t.lastAt = ev.IP, ev.Time
}

// SMTPAddresses returns how many distinct addresses sent as the account.
func (t *DayTable) SMTPAddresses() int {
	n := 0
	for _, u := range t.ips {
		if u.smtp {
			n++
		}
	}
	return n
}

// Write prints the table in the shape admins know:
//
//	2013-08-01 -> mailbox joe@example.com: (13)
//	  109.162.53.114 => 1
//	    Last connection from 77.121.250.77 at 11:59:03
//
// followed, when there were any, by the IMAP/POP logins.
func (t *DayTable) Write(w io.Writer, loc *time.Location) {
	type row struct {
		ip string
		u  *ipUse
	}
	var smtp, mbox []row
	for ip, u := range t.ips {
		if u.smtp {
			smtp = append(smtp, row{ip.String(), u})
		}
		if u.logins > 0 {
			mbox = append(mbox, row{ip.String(), u})
		}
	}
	sort.Slice(smtp, func(i, j int) bool { return smtp[i].ip < smtp[j].ip })
	sort.Slice(mbox, func(i, j int) bool { return mbox[i].ip < mbox[j].ip })
	fmt.Fprintf(w, "%s -> mailbox %s: (%d)\n", t.Day, Safe(t.Account), len(smtp))
	for _, r := range smtp {
		fmt.Fprintf(w, "  %s => %d\n", r.ip, r.u.messages)
	}
	if t.lastIP.IsValid() {
		fmt.Fprintf(w, "    Last connection from %s at %s\n", t.lastIP, t.lastAt.In(loc).Format("15:04:05"))
	}
	if len(mbox) > 0 {
		fmt.Fprintf(w, "  IMAP/POP logins from %d addresses:\n", len(mbox))
		for _, r := range mbox {
			fmt.Fprintf(w, "  %s => %d\n", r.ip, r.u.logins)
		}
	}
}

// Collector builds day tables from events. Only the current day of each
// account is kept, plus the days asked for with Keep; Max caps the number
// of accounts followed.
type Collector struct {
	Loc     *time.Location
	Account string // follow only this account ("" = all)
	Max     int    // accounts followed at most (0 = 100 000)

	cur  map[string]*DayTable
	kept map[string]*DayTable // account + "\x00" + day
	want map[string]bool
	all  bool // keep every day (report command)
}

// KeepAll makes the collector keep every day of the followed account(s).
func (c *Collector) KeepAll() { c.all = true }

// Keep asks that the table of account on day survives the day's end.
func (c *Collector) Keep(account, day string) {
	if c.want == nil {
		c.want = map[string]bool{}
	}
	c.want[account+"\x00"+day] = true
}

// DayOf returns the day string of t in the collector's zone.
func (c *Collector) DayOf(t time.Time) string { return t.In(c.loc()).Format("2006-01-02") }

func (c *Collector) loc() *time.Location {
	if c.Loc == nil {
		return time.UTC
	}
	return c.Loc
}

// Add records an event (authenticated messages and logins only).
func (c *Collector) Add(ev *event.Event) {
	if ev.Account == "" || !ev.IP.IsValid() || (ev.Kind != event.Message && ev.Kind != event.AuthOK) {
		return
	}
	if c.Account != "" && ev.Account != c.Account {
		return
	}
	if c.cur == nil {
		c.cur, c.kept = map[string]*DayTable{}, map[string]*DayTable{}
	}
	day := c.DayOf(ev.Time)
	t := c.cur[ev.Account]
	if t == nil || t.Day != day {
		if t != nil {
			c.retire(t)
		} else if max := c.max(); len(c.cur) >= max {
			for a, old := range c.cur { // drop some account's table (map order: arbitrary)
				c.retire(old)
				delete(c.cur, a)
				break
			}
		}
		if k := c.kept[ev.Account+"\x00"+day]; k != nil {
			t = k // an out-of-order event for a kept day
		} else {
			t = newDayTable(strings.Clone(ev.Account), day) // do not pin the input
		}
		c.cur[t.Account] = t
	}
	t.add(ev)
}

func (c *Collector) max() int {
	if c.Max > 0 {
		return c.Max
	}
	return 100_000
}

func (c *Collector) retire(t *DayTable) {
	if k := t.Account + "\x00" + t.Day; c.all || c.want[k] {
		c.kept[k] = t
	}
}

// Table returns the table of account on day, or nil.
func (c *Collector) Table(account, day string) *DayTable {
	if t := c.cur[account]; t != nil && t.Day == day {
		return t
	}
	return c.kept[account+"\x00"+day]
}

// Tables returns every kept or current table of account, by day.
func (c *Collector) Tables(account string) []*DayTable {
	var out []*DayTable
	for _, t := range c.kept {
		if t.Account == account {
			out = append(out, t)
		}
	}
	if t := c.cur[account]; t != nil && c.kept[account+"\x00"+t.Day] != t {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Day < out[j].Day })
	return out
}

// Safe makes an account name or other log-derived text safe to print on a
// terminal or in a report: control characters become "?", and its length is
// capped.
func Safe(s string) string {
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

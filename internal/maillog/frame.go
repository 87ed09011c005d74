// Package maillog splits a mail log line into its frame: timestamp, host,
// program and message. It knows the timestamp and prefix shapes that Exim,
// Postfix and Dovecot logs come in:
//
//   - BSD syslog:   "Nov  4 09:11:01 host prog[pid]: msg" (no year: taken from
//     Framer.Year or inferred from a reference time such as the file date)
//   - RFC 3339:     "2024-11-04T09:11:01.123+01:00 host prog[pid]: msg"
//   - Exim's own:   "2024-11-04 09:11:01[.mmm][ +0100] [pid] msg"
//   - Dovecot's own log_path: "2024-11-04 09:11:01 auth: Info: msg" or
//     "Nov 04 09:11:01 imap-login: Info: msg" (no host)
//   - daemontools TAI64N: "@400000004c91b044077a9e94 prog: msg"
//   - journal without a syslog timestamp: "host exim[pid]: 2024-11-04 09:11:01 msg"
//
// It does not interpret messages; the exim, postfix and dovecot packages do.
package maillog

import (
	"strings"
	"time"
)

// Line is one framed log line. Strings point into the original line.
type Line struct {
	Time    time.Time
	Host    string // syslog host, "" when the line has none
	Program string // syslog tag without pid ("postfix/smtpd", "exim", "dovecot", "imap-login"), "" for Exim's own log format
	PID     string // pid from "[pid]", "" if none
	Msg     string // the rest of the line
	Tail    string // everything after the timestamp (and Exim's "[pid]"), before host/tag splitting
}

// Framer frames lines. The zero value frames in UTC and infers BSD syslog
// years from the current time.
type Framer struct {
	Loc  *time.Location // zone of timestamps that carry none; nil means UTC
	Year int            // year of BSD syslog timestamps; 0 infers it from Ref
	Ref  time.Time      // reference for year inference (file date); zero means now

	lastMonth time.Month
	lastDom   int
	lastBase  time.Time
}

// Frame splits line. It returns false when the line carries no timestamp
// shape it knows (garbage, a truncated line).
func (f *Framer) Frame(line string, l *Line) bool {
	*l = Line{}
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	if len(line) < 16 {
		return false
	}
	var rest string
	var ok bool
	switch c := line[0]; {
	case c >= '0' && c <= '9':
		l.Time, rest, ok = f.isoTime(line)
		if !ok {
			return false
		}
		if len(rest) > 0 && rest[0] == ' ' {
			rest = rest[1:]
		}
		// Exim's own format: "[pid] msg".
		if len(rest) > 2 && rest[0] == '[' {
			if i := strings.IndexByte(rest, ']'); i > 1 && i < 12 && allDigits(rest[1:i]) {
				l.PID = rest[1:i]
				l.Msg = strings.TrimPrefix(rest[i+1:], " ")
				l.Tail = l.Msg
				return true
			}
		}
		l.Tail = rest
		f.tag(rest, l)
		return true
	case c == '@':
		l.Time, rest, ok = tai64n(line)
		if !ok {
			return false
		}
		l.Tail = rest
		f.tag(rest, l)
		return true
	case c >= 'A' && c <= 'S':
		if l.Time, rest, ok = f.bsdTime(line); ok {
			l.Tail = rest
			f.tag(rest, l)
			return true
		}
	}
	// Journal export without a syslog timestamp: "host prog[pid]: <exim time> msg".
	f.tag(line, l)
	if l.Program != "" && l.Host != "" {
		if t, r, ok := f.isoTime(l.Msg); ok {
			l.Time = t
			l.Msg = strings.TrimPrefix(r, " ")
			l.Tail = l.Msg
			return true
		}
	}
	return false
}

// tag splits "host prog[pid]: msg", "prog[pid]: msg" or a bare message.
func (f *Framer) tag(s string, l *Line) {
	l.Msg = s
	sp := strings.IndexByte(s, ' ')
	if sp < 0 {
		return
	}
	first := s[:sp]
	if prog, pid, ok := splitTag(first); ok {
		l.Program, l.PID, l.Msg = prog, pid, s[sp+1:]
		return
	}
	rest := s[sp+1:]
	sp2 := strings.IndexByte(rest, ' ')
	if sp2 < 0 {
		return
	}
	if prog, pid, ok := splitTag(rest[:sp2]); ok {
		l.Host, l.Program, l.PID, l.Msg = first, prog, pid, rest[sp2+1:]
	}
}

// splitTag parses "prog[pid]:" or "prog:".
func splitTag(t string) (prog, pid string, ok bool) {
	if len(t) < 2 || t[len(t)-1] != ':' {
		return "", "", false
	}
	t = t[:len(t)-1]
	if t[len(t)-1] == ']' {
		i := strings.LastIndexByte(t, '[')
		if i <= 0 || !allDigits(t[i+1:len(t)-1]) {
			return "", "", false
		}
		return t[:i], t[i+1 : len(t)-1], true
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c == '[' || c == '"' || c == '<' || c == '=' {
			return "", "", false
		}
	}
	return t, "", true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func num(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(s) > 0
}

func (f *Framer) loc() *time.Location {
	if f.Loc == nil {
		return time.UTC
	}
	return f.Loc
}

// isoTime parses "YYYY-MM-DD HH:MM:SS" or "YYYY-MM-DDTHH:MM:SS", with an
// optional fraction and zone ("Z", "+hh:mm", "+hhmm", " +hhmm").
func (f *Framer) isoTime(s string) (time.Time, string, bool) {
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' || s[16] != ':' {
		return time.Time{}, s, false
	}
	y, ok1 := num(s[0:4])
	mo, ok2 := num(s[5:7])
	d, ok3 := num(s[8:10])
	h, ok4 := num(s[11:13])
	mi, ok5 := num(s[14:16])
	se, ok6 := num(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 {
		return time.Time{}, s, false
	}
	i := 19
	ns := 0
	if i < len(s) && (s[i] == '.' || s[i] == ',') {
		j := i + 1
		scale := 100000000
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			if scale > 0 {
				ns += int(s[j]-'0') * scale
				scale /= 10
			}
			j++
		}
		i = j
	}
	loc := f.loc()
	rest := s[i:]
	if len(rest) > 0 {
		z := rest
		space := false
		if z[0] == ' ' && len(z) >= 6 && (z[1] == '+' || z[1] == '-') {
			z, space = z[1:], true
		}
		switch {
		case z[0] == 'Z':
			loc, rest = time.UTC, z[1:]
		case (z[0] == '+' || z[0] == '-') && len(z) >= 5:
			hh, okh := num(z[1:3])
			var mm int
			var okm bool
			n := 5
			if z[3] == ':' && len(z) >= 6 {
				mm, okm = num(z[4:6])
				n = 6
			} else {
				mm, okm = num(z[3:5])
			}
			if okh && okm && (len(z) == n || z[n] == ' ') {
				off := (hh*60 + mm) * 60
				if z[0] == '-' {
					off = -off
				}
				loc, rest = time.FixedZone("", off), z[n:]
			} else if space {
				rest = s[i:]
			}
		}
	}
	return time.Date(y, time.Month(mo), d, h, mi, se, ns, loc), rest, true
}

var months = map[string]time.Month{
	"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "Jun": 6,
	"Jul": 7, "Aug": 8, "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12,
}

// bsdTime parses "Mon DD HH:MM:SS" (day space- or zero-padded, optional
// fraction) followed by a space.
func (f *Framer) bsdTime(s string) (time.Time, string, bool) {
	if len(s) < 15 || s[3] != ' ' {
		return time.Time{}, s, false
	}
	mon, ok := months[s[:3]]
	if !ok {
		return time.Time{}, s, false
	}
	// The day is "DD", " D" (syslog's padding) or "D" (some relays drop it).
	var d int
	var ok1 bool
	switch {
	case s[4] == ' ':
		d, ok1 = num(s[5:6])
		s = s[6:]
	case s[5] == ' ':
		d, ok1 = num(s[4:5])
		s = s[5:]
	default:
		d, ok1 = num(s[4:6])
		s = s[6:]
	}
	if len(s) < 10 || s[0] != ' ' || s[3] != ':' || s[6] != ':' {
		return time.Time{}, s, false
	}
	h, ok2 := num(s[1:3])
	mi, ok3 := num(s[4:6])
	se, ok4 := num(s[7:9])
	if !(ok1 && ok2 && ok3 && ok4) || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60 {
		return time.Time{}, s, false
	}
	i := 9
	ns := 0
	if s[i] == '.' {
		j := i + 1
		scale := 100000000
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			if scale > 0 {
				ns += int(s[j]-'0') * scale
				scale /= 10
			}
			j++
		}
		i = j
	}
	if i >= len(s) || s[i] != ' ' {
		return time.Time{}, s, false
	}
	base := f.bsdDate(mon, d)
	t := base.Add(time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(se)*time.Second + time.Duration(ns))
	if f.Loc != nil && f.Loc != time.UTC {
		// Adding a duration across a DST change shifts the wall clock: rebuild.
		if t.Hour() != h || t.Minute() != mi {
			t = time.Date(base.Year(), mon, d, h, mi, se, ns, f.loc())
		}
	}
	return t, s[i+1:], true
}

// bsdDate returns midnight of month/day in the inferred year, cached.
func (f *Framer) bsdDate(mon time.Month, d int) time.Time {
	if f.lastMonth == mon && f.lastDom == d && !f.lastBase.IsZero() {
		return f.lastBase
	}
	year := f.Year
	if year == 0 {
		ref := f.Ref
		if ref.IsZero() {
			ref = time.Now()
		}
		ref = ref.In(f.loc())
		year = ref.Year()
		// A date more than a day after the reference belongs to the year before
		// (a December line in a file dated January).
		if time.Date(year, mon, d, 0, 0, 0, 0, f.loc()).After(ref.Add(24 * time.Hour)) {
			year--
		}
	}
	f.lastMonth, f.lastDom = mon, d
	f.lastBase = time.Date(year, mon, d, 0, 0, 0, 0, f.loc())
	return f.lastBase
}

// tai64n parses a daemontools "@" + 24 hex digit label (TAI64N). Following
// daemontools' tai64nlocal, TAI is taken as UTC+10s.
func tai64n(s string) (time.Time, string, bool) {
	if len(s) < 26 || s[25] != ' ' {
		return time.Time{}, s, false
	}
	var secs, nanos uint64
	for i := 1; i < 25; i++ {
		c := s[i]
		var v uint64
		switch {
		case c >= '0' && c <= '9':
			v = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			v = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v = uint64(c-'A') + 10
		default:
			return time.Time{}, s, false
		}
		if i <= 16 {
			secs = secs<<4 | v
		} else {
			nanos = nanos<<4 | v
		}
	}
	const base = 1 << 62
	if secs < base+10 || nanos >= 1e9 {
		return time.Time{}, s, false
	}
	return time.Unix(int64(secs-base-10), int64(nanos)).UTC(), s[26:], true
}

package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/replay"
	"github.com/mailwarden/mailwarden/internal/report"
)

// replayFlags are the flags analyze and report share.
type replayFlags struct {
	tz    string
	year  int
	since string
	until string
	quiet bool
}

func (r *replayFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.tz, "tz", "Local", "time zone of log timestamps that carry none, and of the report (IANA name, e.g. Europe/Berlin, or UTC)")
	fs.IntVar(&r.year, "year", 0, "year of syslog timestamps without one (default: inferred from each file's date)")
	fs.StringVar(&r.since, "since", "", "skip events before this time (RFC 3339, \"2006-01-02 15:04:05\" or a date, in --tz)")
	fs.StringVar(&r.until, "until", "", "skip events at or after this time (same forms as --since)")
	fs.BoolVar(&r.quiet, "quiet", false, "no progress bar, even on a terminal")
}

// open validates the flags and opens the inputs.
func (r *replayFlags) open(files []string) (*replay.Merger, *time.Location, error) {
	loc, err := time.LoadLocation(r.tz)
	if err != nil {
		return nil, nil, fmt.Errorf("--tz %q: %v", r.tz, err)
	}
	m := &replay.Merger{}
	if m.Since, err = parseTime(r.since, loc); err != nil {
		return nil, nil, fmt.Errorf("--since: %v", err)
	}
	if m.Until, err = parseTime(r.until, loc); err != nil {
		return nil, nil, fmt.Errorf("--until: %v", err)
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no log file given (use - for standard input)")
	}
	opts := replay.Options{Loc: loc, Year: r.year}
	for _, f := range files {
		s, err := replay.Open(f, opts)
		if err != nil {
			m.Close()
			return nil, nil, err
		}
		m.Streams = append(m.Streams, s)
	}
	return m, loc, nil
}

func parseTime(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (use 2006-01-02, \"2006-01-02 15:04:05\" or RFC 3339)", s)
}

const analyzeUsage = `Usage: mailwarden analyze [flags] FILE...

Replays mail logs (Exim, Postfix, Dovecot; mixed, several files merged in
time order, .gz, "-" for standard input) through the detection engine, with
the same detectors and configuration as the live daemon, and prints the
incidents: what was detected, when, the action it would have taken, the
evidence, and what that action would have stopped afterwards.

With --import-history it also writes what the replay learned about each
account's sending (35 days of daily and hourly totals, the days not to
learn from) into the state directory's SQLite file: run it on a new
install's old logs before starting mailwarden serve, and the baseline
detector starts with a month of history instead of none.

Flags:
`

func analyze(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("analyze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf replayFlags
	cfgPath := fs.String("config", "", "configuration file (YAML; default: built-in defaults, see etc/mailwarden.yaml)")
	format := fs.String("format", "text", "output format: text (for people) or json (JSON Lines: one incident per line, then a summary line)")
	dryRun := fs.Bool("dry-run", false, "simulate no enforcement: incidents are recorded but locks and blocks do not stop later events")
	importHist := fs.Bool("import-history", false, "also write the accounts' daily and hourly history (what the baseline learns from) into the state directory, so that a new install starts with baselines; restart mailwarden serve afterwards")
	stateDir := fs.String("state-dir", "", "state directory for --import-history (default: serve.state_dir of --config)")
	rf.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), analyzeUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("--format %q: use text or json", *format)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *dryRun {
		cfg.DryRun = true
	}
	m, loc, err := rf.open(fs.Args())
	if err != nil {
		return err
	}
	defer m.Close()

	eng := engine.New(cfg)
	var imp *historyImport
	if *importHist {
		if *stateDir != "" {
			cfg.Serve.StateDir = *stateDir
		}
		if imp, err = newHistoryImport(eng, cfg.Serve.StateDir); err != nil {
			return err
		}
		defer imp.close()
	}
	col := &report.Collector{Loc: loc, Max: cfg.MaxTrackedKeys}
	prog := newProgress(stderr, m, rf.quiet)
	var incs []*engine.Incident
	for ev := m.Next(); ev != nil; ev = m.Next() {
		n := len(incs)
		_, incs = eng.Process(ev, incs)
		if imp != nil {
			if err := imp.after(ev.Time); err != nil {
				return err
			}
		}
		for _, inc := range incs[n:] {
			if inc.Account != "" {
				col.Keep(inc.Account, col.DayOf(inc.DetectedAt))
			}
		}
		if *format == "text" {
			col.Add(ev)
		}
		prog.tick()
	}
	prog.done()
	for _, s := range m.Streams {
		if err := s.Err(); err != nil {
			return err
		}
	}
	if imp != nil {
		if err := imp.finish(stderr); err != nil {
			return err
		}
	}
	c := m.Counts()
	sum := report.Summary{Lines: c.Lines, Events: c.Events, Unparsed: c.Unparsed, Ignored: c.Ignored, Incidents: len(incs), Files: len(m.Streams), Keys: eng.TrackedKeys(), Evicted: eng.Evicted()}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	if *format == "json" {
		return report.WriteJSON(w, incs, sum)
	}
	report.WriteText(w, incs, sum, loc, func(account string, t time.Time) *report.DayTable {
		return col.Table(account, col.DayOf(t))
	})
	return nil
}

const reportUsage = `Usage: mailwarden report --account A [--day D] [flags] FILE...

Prints, for one account, the addresses it sent mail from (authenticated SMTP
messages per address) and logged in from (IMAP/POP), day by day, in the shape
admins already use:

  2013-08-01 -> mailbox joe@example.com: (13)
    109.162.53.114 => 1
    ...
      Last connection from 77.121.250.77 at 11:59:03

It works for any account and day, whether an incident was raised or not.

Flags:
`

func reportCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf replayFlags
	account := fs.String("account", "", "the account to report on (required)")
	day := fs.String("day", "", "only this day (YYYY-MM-DD in --tz); default: every day with activity")
	rf.register(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), reportUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	acct := strings.ToLower(strings.TrimSpace(*account))
	if acct == "" {
		fmt.Fprintln(stderr, "mailwarden report: --account is required")
		fs.Usage()
		return errUsage
	}
	if *day != "" {
		if _, err := time.Parse("2006-01-02", *day); err != nil {
			return fmt.Errorf("--day %q: use YYYY-MM-DD", *day)
		}
	}
	m, loc, err := rf.open(fs.Args())
	if err != nil {
		return err
	}
	defer m.Close()
	col := &report.Collector{Loc: loc, Account: acct}
	col.KeepAll()
	prog := newProgress(stderr, m, rf.quiet)
	for ev := m.Next(); ev != nil; ev = m.Next() {
		col.Add(ev)
		prog.tick()
	}
	prog.done()
	for _, s := range m.Streams {
		if err := s.Err(); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	tables := col.Tables(acct)
	n := 0
	for _, t := range tables {
		if *day != "" && t.Day != *day {
			continue
		}
		t.Write(w, loc)
		n++
	}
	if n == 0 {
		when := ""
		if *day != "" {
			when = " on " + *day
		}
		fmt.Fprintf(w, "no authenticated use of %s%s in these logs\n", report.Safe(acct), when)
	}
	return nil
}

// progress draws a one-line progress bar on stderr when it is a terminal
// and the input is large.
type progress struct {
	w       io.Writer
	m       *replay.Merger
	total   int64
	on      bool
	n       int
	start   time.Time
	last    time.Time
	started bool
}

func newProgress(w io.Writer, m *replay.Merger, quiet bool) *progress {
	p := &progress{w: w, m: m, start: time.Now()}
	if quiet {
		return p
	}
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return p
	}
	for _, s := range m.Streams {
		if s.Name == "-" {
			continue
		}
		if st, err := os.Stat(s.Name); err == nil {
			p.total += st.Size()
		}
	}
	p.on = p.total > 64<<20
	return p
}

func (p *progress) tick() {
	if !p.on {
		return
	}
	p.n++
	if p.n&0xffff != 0 {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	c := p.m.Counts()
	frac := float64(c.Bytes) / float64(p.total)
	if frac > 1 {
		frac = 1
	}
	const width = 30
	bar := strings.Repeat("#", int(frac*width)) + strings.Repeat(".", width-int(frac*width))
	rate := float64(c.Lines) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "\r[%s] %3.0f%%  %d lines  %.0f lines/s ", bar, frac*100, c.Lines, rate)
	p.started = true
}

func (p *progress) done() {
	if p.started {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
	"github.com/mailwarden/mailwarden/internal/engine"
	"github.com/mailwarden/mailwarden/internal/report"
	"github.com/mailwarden/mailwarden/internal/store"
)

const historyUsage = `Usage: mailwarden history [flags] ACCOUNT

Prints an account's last 30 days as the running daemon knows them: messages,
recipients, bytes and distinct client addresses per UTC day, the days not
learned from (anomalous: a detector fired; unlearned: far above usual),
what is usual for the account on weekdays and weekends, and the thresholds
the baseline detector holds it to now. On a terminal, sparklines show the
month at a glance.

Flags:
`

func historyCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("history", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f adminFlags
	f.register(fs)
	spark := fs.String("spark", "auto", "sparklines: auto (when standard output is a terminal), always or never")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), historyUsage)
		fs.PrintDefaults()
	}
	// Flags may come after the account: "history joe@x --json".
	pos, err := parseInterleaved(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "mailwarden history: expected one account, got %d arguments\n", len(pos))
		fs.Usage()
		return errUsage
	}
	var sparks bool
	switch *spark {
	case "auto":
		f, ok := stdout.(*os.File)
		sparks = ok && isTerminal(f)
	case "always":
		sparks = true
	case "never":
	default:
		return fmt.Errorf("--spark %q: use auto, always or never", *spark)
	}
	cl, err := f.client()
	if err != nil {
		return err
	}
	var rep baseline.Report
	if err := cl.do("GET", "/v1/history?"+url.Values{"account": {pos[0]}}.Encode(), nil, &rep); err != nil {
		return err
	}
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeHistory(stdout, &rep, sparks)
}

// writeHistory prints a history report for people.
func writeHistory(w io.Writer, r *baseline.Report, sparks bool) error {
	fmt.Fprintf(w, "%s: first message seen %s (UTC days)\n", report.Safe(r.Account), r.First)
	for _, u := range r.Usual {
		from := fmt.Sprintf("%d learned days, %d with mail", u.Days, u.Active)
		switch {
		case u.Basis == "population":
			from = fmt.Sprintf("too few days with mail (%d): the population's figures", u.Active)
		case u.Basis == "none":
			from = "not judged yet"
		case !u.Typed:
			from += ", weekdays and weekends pooled"
		}
		fmt.Fprintf(w, "usual %s: %s ± %s messages, %s ± %s recipients, %s (%s)\n", u.Kind,
			num(u.Messages.Usual), num(u.Messages.Spread), num(u.Recipients.Usual), num(u.Recipients.Spread), baseline.Bytes(u.Bytes.Usual), from)
	}
	fmt.Fprintf(w, "today by %s UTC: %s messages, %s recipients, %s", r.At.Format("15:04"), num(r.Today.Messages), num(r.Today.Recipients), baseline.Bytes(r.Today.Bytes))
	if r.LimitToday.Messages > 0 {
		fmt.Fprintf(w, " (held at %s, %s, %s)", num(r.LimitToday.Messages), num(r.LimitToday.Recipients), limitBytes(r.LimitToday.Bytes))
	}
	fmt.Fprintf(w, "\nlast 24 h: %s messages, %s recipients, %s", num(r.Last24h.Messages), num(r.Last24h.Recipients), baseline.Bytes(r.Last24h.Bytes))
	if r.Limit24h.Messages > 0 {
		fmt.Fprintf(w, " (held at %s, %s, %s)", num(r.Limit24h.Messages), num(r.Limit24h.Recipients), limitBytes(r.Limit24h.Bytes))
	}
	fmt.Fprintln(w)
	if r.Note != "" {
		fmt.Fprintf(w, "note: %s\n", r.Note)
	}
	if sparks && len(r.Days) > 1 {
		var m, rc []float64
		for _, d := range r.Days {
			m, rc = append(m, float64(d.Messages)), append(rc, float64(d.Recipients))
		}
		fmt.Fprintf(w, "messages   %s\nrecipients %s\n", sparkline(m), sparkline(rc))
	}
	fmt.Fprintf(w, "\n%-10s  %-3s  %8s  %10s  %9s  %4s\n", "DATE", "DAY", "MESSAGES", "RECIPIENTS", "BYTES", "IPS")
	for _, d := range r.Days {
		var notes []string
		if d.Anomalous {
			notes = append(notes, "anomalous")
		}
		if d.Unlearned {
			notes = append(notes, "not learned")
		}
		line := fmt.Sprintf("%-10s  %-3s  %8d  %10d  %9s  %4d  %s", d.Date, d.Weekday, d.Messages, d.Recipients, baseline.Bytes(float64(d.Bytes)), d.IPs, strings.Join(notes, ", "))
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	return nil
}

func num(v float64) string {
	if v != float64(int64(v)) {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%d", int64(v))
}

func limitBytes(v float64) string {
	if v <= 0 {
		return "bytes not judged"
	}
	return baseline.Bytes(v)
}

// sparkline draws values as a line of eight-level blocks, scaled to the
// largest.
func sparkline(v []float64) string {
	const bars = "▁▂▃▄▅▆▇█"
	top := 0.0
	for _, x := range v {
		top = max(top, x)
	}
	var b strings.Builder
	for _, x := range v {
		switch {
		case x <= 0:
			b.WriteByte(' ')
		case top == 0:
			b.WriteRune('▁')
		default:
			i := min(int(x/top*8), 7)
			b.WriteRune([]rune(bars)[i])
		}
	}
	return b.String()
}

// historyImport writes the history a replay builds into a state file
// (analyze --import-history). The engine keeps 24 hours of hourly totals,
// so the changes are written every 12 hours of log time.
type historyImport struct {
	eng      *engine.Engine
	st       *store.Store
	last     time.Time
	accounts map[string]bool
}

func newHistoryImport(eng *engine.Engine, dir string) (*historyImport, error) {
	st, err := store.Open(dir)
	if err != nil {
		return nil, err
	}
	eng.TrackHistory()
	return &historyImport{eng: eng, st: st, accounts: map[string]bool{}}, nil
}

// after is called after each event of the replay.
func (h *historyImport) after(t time.Time) error {
	if h.last.IsZero() {
		h.last = t
	}
	if t.Sub(h.last) < 12*time.Hour {
		return nil
	}
	h.last = t
	return h.write()
}

func (h *historyImport) write() error {
	rows, upTo, dropped := h.eng.HistoryChanges()
	if dropped > 0 {
		return fmt.Errorf("import-history: more than max_tracked_keys accounts sent mail within 12 hours of the logs; raise max_tracked_keys for the import")
	}
	for _, r := range rows {
		h.accounts[r.Account] = true
	}
	// The watermark tells a daemon restarting on this file that the rows
	// already count its journal's messages up to the end of these logs.
	return h.st.PutHistory(context.Background(), rows, upTo)
}

// finish writes the rest and says what was imported.
func (h *historyImport) finish(w io.Writer) error {
	if err := h.write(); err != nil {
		return err
	}
	fmt.Fprintf(w, "mailwarden analyze: history of %d accounts written to %s (restart mailwarden serve to use it)\n", len(h.accounts), h.st.Path())
	return nil
}

func (h *historyImport) close() { h.st.Close() }

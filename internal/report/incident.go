package report

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/engine"
)

// Summary is the last line of a JSON report and the head of a text one.
type Summary struct {
	Lines     int64 `json:"lines"`
	Events    int64 `json:"events"`
	Unparsed  int64 `json:"unparsed"`
	Incidents int   `json:"incidents"`
	// Ignored lines are known lines without meaning for detection; not part
	// of the JSON contract, shown in text only.
	Ignored int64  `json:"-"`
	Files   int    `json:"-"`
	Keys    int    `json:"-"` // keys holding detector state at the end
	Evicted uint64 `json:"-"`
}

// jsonIncident is the JSON Lines contract for one incident.
type jsonIncident struct {
	Type       string         `json:"type"`
	Detector   string         `json:"detector"`
	Account    string         `json:"account"`
	IP         string         `json:"ip"`
	DetectedAt string         `json:"detected_at"`
	Action     string         `json:"action"`
	Evidence   map[string]any `json:"evidence"`
}

// Evidence returns the incident's evidence with what enforcement stopped
// afterwards and the dry-run flag added.
func Evidence(inc *engine.Incident) map[string]any {
	ev := make(map[string]any, len(inc.Evidence)+2)
	for k, v := range inc.Evidence {
		ev[k] = v
	}
	if inc.Stopped != (engine.Stopped{}) {
		ev["stopped_after"] = inc.Stopped
	}
	if inc.DryRun {
		ev["dry_run"] = true
	}
	return ev
}

// WriteJSON writes incidents and the summary as JSON Lines.
func WriteJSON(w io.Writer, incs []*engine.Incident, s Summary) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, inc := range incs {
		ip := ""
		if inc.IP.IsValid() {
			ip = inc.IP.String()
		}
		if err := enc.Encode(jsonIncident{
			Type:       "incident",
			Detector:   inc.Detector,
			Account:    inc.Account,
			IP:         ip,
			DetectedAt: inc.DetectedAt.UTC().Format(time.RFC3339),
			Action:     string(inc.Action),
			Evidence:   Evidence(inc),
		}); err != nil {
			return err
		}
	}
	return enc.Encode(struct {
		Type string `json:"type"`
		Summary
	}{"summary", s})
}

// WriteText writes the summary and each incident with its evidence for
// people. tables gives the account's day table where one was collected.
func WriteText(w io.Writer, incs []*engine.Incident, s Summary, loc *time.Location, tables func(account string, t time.Time) *DayTable) {
	fmt.Fprintf(w, "%d lines read from %d input(s): %d events, %d lines unparsed, %d ignored\n", s.Lines, s.Files, s.Events, s.Unparsed, s.Ignored)
	fmt.Fprintf(w, "detector state: %d keys at the end, %d evicted to stay under max_tracked_keys\n", s.Keys, s.Evicted)
	byDet := map[string]int{}
	for _, inc := range incs {
		byDet[inc.Detector]++
	}
	var dets []string
	for d, n := range byDet {
		dets = append(dets, fmt.Sprintf("%s %d", d, n))
	}
	sort.Strings(dets)
	if len(incs) == 0 {
		fmt.Fprintf(w, "no incidents\n")
		return
	}
	fmt.Fprintf(w, "%d incidents (%s)\n", len(incs), strings.Join(dets, ", "))
	for _, inc := range incs {
		fmt.Fprintln(w)
		who := ""
		if inc.Account != "" {
			who = "account " + Safe(inc.Account)
		}
		if inc.IP.IsValid() {
			if who != "" {
				who += " "
			}
			who += "from " + inc.IP.String()
		}
		dry := ""
		if inc.DryRun {
			dry = " (dry run: not enforced)"
		}
		fmt.Fprintf(w, "%s  %s  %s  %s%s\n", inc.DetectedAt.In(loc).Format("2006-01-02 15:04:05"), inc.Detector, inc.Action, who, dry)
		fmt.Fprintf(w, "  %s\n", explain(inc))
		if st := inc.Stopped; st != (engine.Stopped{}) {
			var parts []string
			if st.Messages > 0 {
				parts = append(parts, fmt.Sprintf("%d messages (%d recipients)", st.Messages, st.Recipients))
			}
			if st.AuthAttempts > 0 {
				parts = append(parts, fmt.Sprintf("%d failed logins", st.AuthAttempts))
			}
			if st.Logins > 0 {
				parts = append(parts, fmt.Sprintf("%d logins", st.Logins))
			}
			verb := "refused"
			if inc.Action == "hold" {
				verb = "held"
			}
			fmt.Fprintf(w, "  would have %s afterwards: %s\n", verb, strings.Join(parts, ", "))
		}
		if inc.Account != "" && tables != nil {
			if t := tables(inc.Account, inc.DetectedAt); t != nil {
				t.Write(indent{w}, loc)
			}
		}
		if rows, ok := inc.Evidence["accounts"].([]engine.AccountRow); ok && len(rows) > 0 {
			fmt.Fprintf(w, "  accounts tried:\n")
			for _, r := range rows {
				note := ""
				if r.Stale {
					note = " (usual network: old password?)"
				}
				fmt.Fprintf(w, "    %s => %d%s\n", Safe(r.Account), r.Failures, note)
			}
		}
	}
}

// explain says in one line why the incident fired.
func explain(inc *engine.Incident) string {
	e := inc.Evidence
	g := func(k string) any { return e[k] }
	switch inc.Detector {
	case "crack_ip":
		return fmt.Sprintf("%v failed logins in %v (threshold %v), %v in %v", g("failures"), g("window"), g("threshold"), g("failures_long"), g("long_window"))
	case "spray_ip":
		return fmt.Sprintf("failed logins for %v different accounts in %v (threshold %v)", g("accounts"), g("window"), g("threshold"))
	case "account_attacked":
		if ip, ok := e["logged_in_from"]; ok {
			return fmt.Sprintf("under attack from %v addresses, then a successful login from attacking address %v", g("ips"), ip)
		}
		return fmt.Sprintf("failed logins from %v different addresses in %v (threshold %v); protected, not locked", g("ips"), g("window"), g("threshold"))
	case "botnet":
		if e["reason"] == "burst" {
			return fmt.Sprintf("used from %v new networks within %v (threshold %v)", g("burst"), g("burst_window"), g("burst_threshold"))
		}
		return fmt.Sprintf("used from %v new networks in %v (threshold %v), spread over %v address blocks", g("networks"), g("window"), g("threshold"), g("spread"))
	case "spamware":
		return fmt.Sprintf("%v messages, %v recipients from one address in %v (thresholds %v, %v)", g("messages"), g("recipients"), g("window"), g("threshold_messages"), g("threshold_recipients"))
	case "per_connection":
		return fmt.Sprintf("%v messages in one SMTP session (threshold %v)", g("messages"), g("threshold"))
	case "bad_rcpt":
		return fmt.Sprintf("%v rejected recipients in %v (threshold %v)", g("rejected"), g("window"), g("threshold"))
	case "daily_caps":
		s := fmt.Sprintf("over a rolling 24 h cap: %v", g("over"))
		if h, ok := e["scaled_by_history"]; ok {
			s += fmt.Sprintf(" (%v)", h)
		}
		return s
	case "harvest":
		return fmt.Sprintf("mailbox opened from %v new networks in %v while the account sent %v messages", g("networks"), g("window"), g("smtp_messages"))
	case "baseline":
		return fmt.Sprint(g("summary"))
	}
	return ""
}

// indent prefixes every line written through it with two spaces.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	s := strings.TrimSuffix(string(p), "\n")
	_, err := io.WriteString(i.w, "  "+strings.ReplaceAll(s, "\n", "\n  ")+"\n")
	return len(p), err
}

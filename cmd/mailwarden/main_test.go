package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

const sample = "../../testdata/samples/exim_mainlog"

func mw(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d:\n got %q\nwant %q", name, i+1, g, w)
			}
		}
	}
}

// The admins' report from the exim-users thread, rebuilt from a log: 13
// addresses, one message each, the last from 77.121.250.77 at 11:59:03.
func TestReportBotnetDay(t *testing.T) {
	out, stderr, code := mw(t, "report", "--tz", "UTC", "--account", "Joe@Example.com", "--day", "2013-08-01", sample)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := `2013-08-01 -> mailbox joe@example.com: (13)
  109.162.53.114 => 1
  113.179.7.245 => 1
  117.199.96.44 => 1
  14.226.68.15 => 1
  179.108.22.163 => 1
  186.94.41.7 => 1
  190.43.187.18 => 1
  200.55.230.9 => 1
  37.238.144.61 => 1
  41.251.77.130 => 1
  77.121.250.77 => 1
  88.247.140.99 => 1
  94.54.12.201 => 1
    Last connection from 77.121.250.77 at 11:59:03
`
	if out != want {
		t.Errorf("report:\n%s\nwant:\n%s", out, want)
	}
	out, _, _ = mw(t, "report", "--tz", "UTC", "--account", "nobody@example.com", sample)
	if !strings.Contains(out, "no authenticated use of nobody@example.com") {
		t.Errorf("report for an unknown account: %q", out)
	}
}

func TestAnalyzeBotnetText(t *testing.T) {
	out, stderr, code := mw(t, "analyze", "--tz", "UTC", sample)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden(t, "exim_mainlog.analyze.txt", out)
}

type jsonLine struct {
	Type       string         `json:"type"`
	Detector   string         `json:"detector"`
	Account    string         `json:"account"`
	IP         string         `json:"ip"`
	DetectedAt string         `json:"detected_at"`
	Action     string         `json:"action"`
	Evidence   map[string]any `json:"evidence"`
	Lines      *int           `json:"lines"`
	Events     *int           `json:"events"`
	Unparsed   *int           `json:"unparsed"`
	Incidents  *int           `json:"incidents"`
}

func parseJSONL(t *testing.T, out string) []jsonLine {
	t.Helper()
	var res []jsonLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var j jsonLine
		dec := json.NewDecoder(strings.NewReader(l))
		if err := dec.Decode(&j); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		res = append(res, j)
	}
	return res
}

// The botnet detector locks the account before its 13th address.
func TestAnalyzeBotnetJSON(t *testing.T) {
	out, stderr, code := mw(t, "analyze", "--format", "json", "--tz", "UTC", sample)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := parseJSONL(t, out)
	if len(lines) != 2 {
		t.Fatalf("want one incident and a summary, got:\n%s", out)
	}
	inc, sum := lines[0], lines[1]
	if inc.Type != "incident" || inc.Detector != "botnet" || inc.Account != "joe@example.com" || inc.Action != "lock" {
		t.Errorf("incident = %+v", inc)
	}
	// Locked at the 8th address (07:44:05), so the last five never get through.
	if inc.IP != "200.55.230.9" || inc.DetectedAt != "2013-08-01T07:44:05Z" {
		t.Errorf("locked at %s %s, want 200.55.230.9 at 2013-08-01T07:44:05Z", inc.IP, inc.DetectedAt)
	}
	if st, ok := inc.Evidence["stopped_after"].(map[string]any); !ok || st["messages"] != 5.0 {
		t.Errorf("stopped_after = %v", inc.Evidence["stopped_after"])
	}
	if ips, ok := inc.Evidence["ips"].([]any); !ok || len(ips) != 8 {
		t.Errorf("evidence ips = %v", inc.Evidence["ips"])
	}
	if sum.Type != "summary" || *sum.Lines != 175 || *sum.Unparsed != 0 || *sum.Incidents != 1 || *sum.Events == 0 {
		t.Errorf("summary = %s", strings.Split(out, "\n")[1])
	}
	// --since after the attack: nothing to see.
	out, _, _ = mw(t, "analyze", "--format", "json", "--tz", "UTC", "--since", "2013-08-01 12:00", sample)
	if l := parseJSONL(t, out); len(l) != 1 || *l[0].Incidents != 0 {
		t.Errorf("--since: %s", out)
	}
	// Dry run records the same incident and stops nothing.
	out, _, _ = mw(t, "analyze", "--format", "json", "--tz", "UTC", "--dry-run", sample)
	if l := parseJSONL(t, out); len(l) != 2 || l[0].Evidence["dry_run"] != true || l[0].Evidence["stopped_after"] != nil {
		t.Errorf("--dry-run: %s", out)
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	out, _, code := mw(t, "--help")
	if code != 0 || !strings.Contains(out, "analyze") || !strings.Contains(out, "report") {
		t.Errorf("--help: %d %q", code, out)
	}
	for cmd, flags := range map[string][]string{
		"analyze": {"-config", "-format", "-since", "-until", "-tz", "-year", "-dry-run", "-quiet"},
		"report":  {"-account", "-day", "-since", "-until", "-tz", "-year", "-quiet"},
	} {
		out, _, code := mw(t, cmd, "--help")
		if code != 0 {
			t.Errorf("%s --help exit %d", cmd, code)
		}
		for _, f := range flags {
			if !strings.Contains(out, "  "+f+" ") && !strings.Contains(out, "  "+f+"\n") {
				t.Errorf("%s --help does not document %s:\n%s", cmd, f, out)
			}
		}
	}
}

func TestBadInvocations(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("detectors:\n  botnet:\n    treshold: 3\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"analyze"}, 1, "no log file given"},
		{[]string{"analyze", "--format", "xml", sample}, 1, `--format "xml"`},
		{[]string{"analyze", "--tz", "Mars/Olympus", sample}, 1, `--tz "Mars/Olympus"`},
		{[]string{"analyze", "--since", "yesterday", sample}, 1, "--since"},
		{[]string{"analyze", "--config", badCfg, sample}, 1, `line 3: unknown key "treshold"`},
		{[]string{"analyze", filepath.Join(dir, "missing.log")}, 1, "no such file"},
		{[]string{"report", sample}, 2, "--account is required"},
		{[]string{"report", "--account", "a@b", "--day", "August", sample}, 1, "--day"},
		{[]string{"analyze", "--nope", sample}, 2, "flag provided but not defined"},
	} {
		_, stderr, code := mw(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d containing %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}

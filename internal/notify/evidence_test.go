package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"
)

type accountRow struct {
	Account  string `json:"account"`
	Failures int    `json:"failures"`
	Stale    bool   `json:"stale_password,omitempty"`
	hidden   int
}

func TestEvidenceText(t *testing.T) {
	at := time.Date(2024, 3, 1, 9, 11, 1, 0, time.FixedZone("CET", 3600))
	ev := map[string]any{
		"failures":     14,
		"ratio":        0.125,
		"big":          float64(1500000),
		"nan":          math.NaN(),
		"first":        at,
		"addr":         netip.MustParseAddr("2001:db8::1"),
		"err":          errors.New("boom\nline"),
		"tried":        []accountRow{{"joe@x", 7, false, 0}, {"evil\r\nBcc: v@x", 3, true, 0}},
		"nothing":      nil,
		"empty_list":   []string{},
		"stopped":      &struct{ Messages, Logins int }{3, 1},
		"by_day":       map[string]int{"mon": 2, "sun": 9},
		"evil\nkey":    "v",
		"tab\tvalue":   "a\tb",
		"long":         strings.Repeat("x", 300),
		"list_of_ints": []int{1, 2, 3},
	}
	rows, tables := layoutEvidence(ev)
	got := evidenceText(rows, tables)
	want := `  addr          2001:db8::1
  big           1500000
  by_day        mon=2 sun=9
  empty_list
  err           boom\nline
  evil\nkey     v
  failures      14
  first         2024-03-01 08:11:01 UTC
  list_of_ints  1, 2, 3
  long          ` + strings.Repeat("x", 199) + `…
  nan           NaN
  nothing
  ratio         0.125
  stopped       Messages=3 Logins=1
  tab\tvalue    a\tb

  tried (2 rows)
    account           failures  stale_password
    joe@x             7         false
    evil\r\nBcc: v@x  3         true
`
	if got != want {
		t.Errorf("evidence text:\n%s\nwant:\n%s", got, want)
	}
}

// Evidence read back from the store is JSON-decoded: maps and float64.
func TestEvidenceFromJSON(t *testing.T) {
	var ev map[string]any
	raw := `{"networks": 13, "ips": [{"ip": "77.121.250.77", "messages": 1, "first": "2024-03-01T10:00:00Z"},
		{"ip": "1.2.3.4", "messages": 2, "known": true}], "last_ip": "1.2.3.4"}`
	if err := json.Unmarshal([]byte(raw), &ev); err != nil {
		t.Fatal(err)
	}
	rows, tables := layoutEvidence(ev)
	got := evidenceText(rows, tables)
	want := `  last_ip   1.2.3.4
  networks  13

  ips (2 rows)
    first                 ip             messages  known
    2024-03-01T10:00:00Z  77.121.250.77  1
                          1.2.3.4        2         true
`
	if got != want {
		t.Errorf("evidence text:\n%s\nwant:\n%s", got, want)
	}
}

func TestEvidenceTableCapped(t *testing.T) {
	var rows []accountRow
	for i := range 120 {
		rows = append(rows, accountRow{Account: fmt.Sprintf("a%d@x", i), Failures: i})
	}
	r, tables := layoutEvidence(map[string]any{"tried": rows})
	text := evidenceText(r, tables)
	if len(tables) != 1 || len(tables[0].Rows) != maxTableRows || tables[0].More != 70 {
		t.Fatalf("tables %+v", tables)
	}
	if !strings.Contains(text, "tried (120 rows)") || !strings.Contains(text, "… 70 more rows") {
		t.Errorf("text:\n%s", text)
	}
}

func FuzzDisplay(f *testing.F) {
	for _, s := range []string{evilAccount, "plain", "\x00\xff", "\u2028\u202e", `back\slash`, "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := display(s)
		for _, r := range d {
			if unsafeRune(r) || r == unicode.ReplacementChar && !strings.ContainsRune(s, unicode.ReplacementChar) {
				t.Fatalf("display(%q) = %q keeps %U", s, d, r)
			}
		}
		if !strings.Contains(s, `\`) && !strings.ContainsFunc(s, unsafeRune) && strings.ToValidUTF8(s, "") == s && d != s {
			t.Fatalf("display(%q) = %q changed a clean string", s, d)
		}
	})
}

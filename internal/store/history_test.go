package store

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/baseline"
)

var hday0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func dayNum(d int) uint16 { return baseline.DayOf(hday0.Add(time.Duration(d) * 24 * time.Hour)) }

func hourNum(d, h int) int32 {
	return baseline.HourOf(hday0.Add(time.Duration(d)*24*time.Hour + time.Duration(h)*time.Hour))
}

func TestHistoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if w, err := s.HistoryWatermark(ctx); err != nil || !w.IsZero() {
		t.Fatalf("watermark of a new file = %v, %v", w, err)
	}
	a := baseline.AccountRows{Account: "a@example.com", Rows: baseline.Rows{First: dayNum(0),
		Days:  []baseline.Day{{Msgs: 10, Rcpts: 20, KiB: 300, IPs: 2, Num: dayNum(0)}, {Msgs: 4, Rcpts: 4, KiB: 40, IPs: 1, Num: dayNum(40)}},
		Hours: []baseline.HourRow{{Num: hourNum(40, 9), Hour: baseline.Hour{Msgs: 3, Rcpts: 3, KiB: 30}}, {Num: hourNum(39, 2), Hour: baseline.Hour{Msgs: 1}}}}}
	b := baseline.AccountRows{Account: "b@example.com", Rows: baseline.Rows{First: dayNum(38),
		Days: []baseline.Day{{Msgs: 7, Rcpts: 7, KiB: 70, Num: dayNum(38), Flags: baseline.Anomalous}}}}
	mark := hday0.Add(40*24*time.Hour + 9*time.Hour)
	if err := s.PutHistory(ctx, []baseline.AccountRows{a, b}, mark); err != nil {
		t.Fatal(err)
	}
	// A partial copy of the same day (an engine that lost the account)
	// neither lowers the counts nor clears a flag; a later watermark wins.
	part := baseline.AccountRows{Account: "a@example.com", Rows: baseline.Rows{First: dayNum(40),
		Days: []baseline.Day{{Msgs: 2, Rcpts: 9, KiB: 1, Num: dayNum(40), Flags: baseline.Unlearned}}}}
	if err := s.PutHistory(ctx, []baseline.AccountRows{part}, mark.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if w, _ := s.HistoryWatermark(ctx); !w.Equal(mark) {
		t.Errorf("watermark = %v, want %v", w, mark)
	}
	now := hday0.Add(40*24*time.Hour + 12*time.Hour)
	var got []string
	loaded := map[string]baseline.Rows{}
	if err := s.LoadHistory(ctx, now, func(acct string, r baseline.Rows) { got = append(got, acct); loaded[acct] = r }); err != nil {
		t.Fatal(err)
	}
	// b was last active on day 38, a on day 40: b comes first. Day 0 is
	// more than 35 days back: not loaded. The hour of day 39 02:00 is more
	// than 25 hours back.
	if len(got) != 2 || got[0] != "b@example.com" {
		t.Fatalf("loaded %v", got)
	}
	ra := loaded["a@example.com"]
	want := baseline.Day{Msgs: 4, Rcpts: 9, KiB: 40, IPs: 1, Num: dayNum(40), Flags: baseline.Unlearned}
	if ra.First != dayNum(0) || len(ra.Days) != 1 || ra.Days[0] != want || len(ra.Hours) != 1 || ra.Hours[0].Msgs != 3 {
		t.Errorf("a's rows = %+v", ra)
	}
	if rb := loaded["b@example.com"]; len(rb.Days) != 1 || rb.Days[0].Flags != baseline.Anomalous {
		t.Errorf("b's rows = %+v", rb)
	}
	r, ok, err := s.AccountHistory(ctx, "a@example.com", now)
	if err != nil || !ok || len(r.Days) != 1 || r.Days[0] != want || len(r.Hours) != 1 {
		t.Errorf("AccountHistory = %+v %v %v", r, ok, err)
	}
	if _, ok, _ := s.AccountHistory(ctx, "nobody@example.com", now); ok {
		t.Error("history for an unknown account")
	}
	// The view shows dates.
	var date string
	var bytes int64
	if err := s.db.QueryRowContext(ctx, `SELECT date, bytes FROM history_days_v WHERE account = 'b@example.com'`).Scan(&date, &bytes); err != nil || date != "2026-04-09" || bytes != 70*1024 {
		t.Errorf("view: %q %d %v", date, bytes, err)
	}

	// 35 days later than day 38 only a's day 40 is left; b goes entirely.
	n, err := s.PruneHistory(ctx, hday0.Add(74*24*time.Hour))
	if err != nil || n != 4 {
		t.Errorf("pruned %d rows, %v; want day 0, day 38, the hour of day 39 and b", n, err)
	}
	got = got[:0]
	s.LoadHistory(ctx, hday0.Add(74*24*time.Hour), func(acct string, r baseline.Rows) { got = append(got, acct) })
	if len(got) != 1 || got[0] != "a@example.com" {
		t.Errorf("after pruning: %v", got)
	}
}

// BenchmarkHistoryBytes measures what 35 days of history cost in the
// SQLite file: accounts sending on weekdays in 10 hours each.
func BenchmarkHistoryBytes(b *testing.B) {
	ctx := context.Background()
	const accounts = 1000
	for b.Loop() {
		dir := b.TempDir()
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		empty := fileSize(b, dir)
		for d := range 35 {
			var rows []baseline.AccountRows
			for a := range accounts {
				r := baseline.AccountRows{Account: fmt.Sprintf("user%06d@example.com", a), Rows: baseline.Rows{First: dayNum(0),
					Days: []baseline.Day{{Msgs: uint32(10 + a%40), Rcpts: uint32(20 + a%90), KiB: uint32(400 + a), IPs: 2, Num: dayNum(d)}}}}
				for h := 8; h < 18; h++ {
					r.Hours = append(r.Hours, baseline.HourRow{Num: hourNum(d, h), Hour: baseline.Hour{Msgs: 2, Rcpts: 4, KiB: 80}})
				}
				rows = append(rows, r)
			}
			if err := s.PutHistory(ctx, rows, time.Time{}); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fileSize(b, dir)-empty)/accounts, "bytes/account")
		s.Close()
	}
}

func fileSize(b *testing.B, dir string) int64 {
	st, err := os.Stat(dir + "/mailwarden.db")
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

package dovecot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/f2bfixture"
	"github.com/mailwarden/mailwarden/internal/maillog"
)

// seedLines returns the fixture and sample lines (those present).
func seedLines(tb testing.TB) []string {
	var lines []string
	if data, err := os.ReadFile(filepath.Join(f2bfixture.Dir(), "dovecot")); err == nil {
		for _, s := range strings.Split(string(data), "\n") {
			if s != "" && !strings.HasPrefix(s, "#") {
				lines = append(lines, s)
			}
		}
	}
	logs, _ := filepath.Glob(filepath.Join("testdata", "*.log"))
	for _, path := range logs {
		lines = append(lines, sampleLines(tb, path)...)
	}
	return lines
}

func FuzzParse(f *testing.F) {
	for _, s := range seedLines(f) {
		f.Add(s)
	}
	fr := sampleFramer(f)
	p := New()
	f.Fuzz(func(t *testing.T, s string) {
		var l maillog.Line
		if !fr.Frame(s, &l) || !Owns(&l) {
			return
		}
		evs, res := p.Parse(&l, nil)
		if res != maillog.Parsed && len(evs) != 0 {
			t.Fatalf("result %d with %d events", res, len(evs))
		}
		for _, e := range evs {
			if e.Kind < event.AuthOK || e.Kind > event.Disconnect {
				t.Fatalf("invalid kind %d", e.Kind)
			}
			if e.IP.IsValid() && (e.IP.Zone() != "" || e.IP.Is4In6()) {
				t.Fatalf("IP %s not normalised", e.IP)
			}
			if e.Account != event.NormalizeAccount(e.Account) {
				t.Fatalf("Account %q not normalised", e.Account)
			}
			if e.Kind == event.AuthFail && e.Count < 1 {
				t.Fatalf("AuthFail with Count %d", e.Count)
			}
		}
		p.Flush(nil)
	})
}

// benchLines is a realistic mix: mostly logins and logouts, some failures,
// deliveries and noise.
func benchLines(b *testing.B) []string {
	lines := sampleLines(b, filepath.Join("testdata", "syslog-23.log"))
	lines = append(lines, sampleLines(b, filepath.Join("testdata", "logpath-24.log"))...)
	return lines
}

func BenchmarkParse(b *testing.B) {
	lines := benchLines(b)
	var bytes int64
	for _, s := range lines {
		bytes += int64(len(s))
	}
	fr := sampleFramer(b)
	p := New()
	var l maillog.Line
	dst := make([]event.Event, 0, 8)
	b.SetBytes(bytes / int64(len(lines)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := lines[i%len(lines)]
		if fr.Frame(s, &l) && Owns(&l) {
			dst, _ = p.Parse(&l, dst[:0])
		}
	}
}

// BenchmarkParseOnly measures Parse on framed lines.
func BenchmarkParseOnly(b *testing.B) {
	lines := benchLines(b)
	fr := sampleFramer(b)
	framed := make([]maillog.Line, 0, len(lines))
	for _, s := range lines {
		var l maillog.Line
		if fr.Frame(s, &l) && Owns(&l) {
			framed = append(framed, l)
		}
	}
	p := New()
	dst := make([]event.Event, 0, 8)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst, _ = p.Parse(&framed[i%len(framed)], dst[:0])
	}
}

package tool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSanitize(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"fatal:\r\nInjected: header\x1b[31m", 100, "fatal: Injected: header [31m"},
		{"bad \xff utf8", 100, "bad ? utf8"},
		{"  many   spaces\t\t", 100, "many spaces"},
		{strings.Repeat("é", 10), 5, "éé…"}, // cut on a rune boundary
	} {
		if got := Sanitize(c.in, c.max); got != c.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
	if Note("", 10) != "" || Note(" x ", 10) != ": x" {
		t.Errorf("Note: %q %q", Note("", 10), Note(" x ", 10))
	}
}

func TestRun(t *testing.T) {
	ctx := context.Background()
	// Arguments reach the program as they are: no shell.
	out, _, code, err := Run(ctx, "", []string{"/bin/echo", "$(id)", "`id`;", "a b"})
	if err != nil || code != 0 || out != "$(id) `id`; a b\n" {
		t.Fatalf("echo: %q %d %v", out, code, err)
	}
	out, _, code, err = Run(ctx, "line1\nline2\n", []string{"/bin/sh", "-c", "cat; exit 3"})
	if err != nil || code != 3 || out != "line1\nline2\n" {
		t.Fatalf("cat: %q %d %v", out, code, err)
	}
	// Output is bounded.
	out, _, _, err = Run(ctx, "", []string{"/bin/sh", "-c", "head -c 1000000 /dev/zero"})
	if err != nil || len(out) != MaxOutput {
		t.Fatalf("bounded output: %d bytes, %v", len(out), err)
	}
	// A hung program is killed with its whole process group: a wrapper's
	// child would otherwise outlive it.
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	ctx2, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, code, err := Run(ctx2, "", []string{"/bin/sh", "-c", "sleep 10 & echo $! > " + pidFile + "; wait"}); !errors.Is(err, ErrNoAnswer) || code != -1 {
		t.Fatalf("hung program: %d %v", code, err)
	}
	if !killedSoon(t, pidFile) {
		t.Error("the hung program's child outlived the timeout: the process group was not killed")
	}
	if _, _, _, err := Run(ctx, "", []string{"/nonexistent/tool"}); err == nil {
		t.Fatal("missing program: no error")
	}
}

// killedSoon reports whether the process whose pid is in file is gone (or a
// zombie) within a few seconds. It polls; it does not measure.
func killedSoon(t *testing.T, file string) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the program did not record its child: %v", err)
	}
	pid := strings.TrimSpace(string(b))
	for range 300 {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return true
		}
		if f := strings.Fields(string(st)); len(f) > 2 && f[2] == "Z" {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

package tool

import (
	"context"
	"errors"
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
	ctx2, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, code, err := Run(ctx2, "", []string{"/bin/sh", "-c", "sleep 10 & wait"}); !errors.Is(err, ErrNoAnswer) || code != -1 {
		t.Fatalf("hung program: %d %v", code, err)
	}
	if _, _, _, err := Run(ctx, "", []string{"/nonexistent/tool"}); err == nil {
		t.Fatal("missing program: no error")
	}
}

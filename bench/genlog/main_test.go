package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"
)

func generate(t *testing.T, seed uint64, lines int64) []byte {
	t.Helper()
	cfg := config{seed: seed, lines: lines, year: 2026, start: "11-02", accounts: 2000}
	start := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	g := newGen(cfg, start.UnixMilli())
	g.w = bw
	if err := g.run(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if g.written != lines {
		t.Fatalf("wrote %d lines, want %d", g.written, lines)
	}
	return buf.Bytes()
}

func TestDeterministic(t *testing.T) {
	a := generate(t, 7, 30_000)
	b := generate(t, 7, 30_000)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different output")
	}
	c := generate(t, 8, 30_000)
	if bytes.Equal(a, c) {
		t.Fatal("different seeds, same output")
	}
}

func TestOrderAndShape(t *testing.T) {
	out := generate(t, 1, 60_000)
	var prev time.Time
	progs := map[string]int{}
	for i, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if len(line) < 16 {
			t.Fatalf("line %d too short: %q", i+1, line)
		}
		ts, err := time.Parse("2006 Jan _2 15:04:05", "2026 "+line[:15])
		if err != nil {
			t.Fatalf("line %d: %v: %q", i+1, err, line)
		}
		if ts.Before(prev) {
			t.Fatalf("line %d goes back in time: %q", i+1, line)
		}
		prev = ts
		f := strings.Fields(line[16:])
		if len(f) < 3 || (f[0] != "mx1" && f[0] != "mx2") || !strings.HasSuffix(f[1], "]:") {
			t.Fatalf("line %d: bad syslog prefix: %q", i+1, line)
		}
		prog := f[1][:strings.IndexByte(f[1], '[')]
		progs[prog]++
		if prog == "exim" {
			if _, err := time.Parse("2006-01-02 15:04:05", f[2]+" "+f[3]); err != nil {
				t.Fatalf("line %d: exim line without its own timestamp: %q", i+1, line)
			}
		}
	}
	for _, p := range []string{"postfix/smtpd", "postfix/submission/smtpd", "postfix/qmgr", "postfix/smtp", "dovecot", "exim"} {
		if progs[p] == 0 {
			t.Errorf("no %s lines", p)
		}
	}
}

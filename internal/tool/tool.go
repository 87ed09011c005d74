// Package tool runs the mail servers' administration programs for
// mailwarden's responses (doveadm, postsuper, exim): without a shell, with
// bounded output, and killed with their whole process group when they take
// too long. It also makes what such a program printed fit for one log
// line.
package tool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxOutput bounds what is kept of a program's standard output and of its
// standard error.
const MaxOutput = 256 << 10

// ErrNoAnswer wraps the error of a program that ran out of time.
var ErrNoAnswer = errors.New("no answer in time")

// Run runs argv without a shell until it exits or ctx ends, with stdin as
// its standard input (none if ""), and returns its standard output and
// error (each bounded by MaxOutput) and exit code. err is set when it
// could not run (-1), was killed by a signal (-1) or ran out of time
// (ErrNoAnswer, -1); a non-zero exit is not an error.
func Run(ctx context.Context, stdin string, argv []string) (stdout, stderr string, code int, err error) {
	if len(argv) == 0 {
		return "", "", -1, errors.New("no program to run")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var o, e boundedBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	// On time-out the whole process group goes, not only the program: a
	// wrapper's children would keep its output open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	stdout, stderr = o.String(), e.String()
	if ctx.Err() != nil {
		return stdout, stderr, -1, fmt.Errorf("%w: %w", ErrNoAnswer, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.Exited() {
			return stdout, stderr, ee.ExitCode(), nil
		}
		return stdout, stderr, -1, fmt.Errorf("ended by %v", ee.ProcessState)
	}
	if err != nil {
		return stdout, stderr, -1, err
	}
	return stdout, stderr, 0, nil
}

// Sanitize makes a program's output or an HTTP body fit for one log line:
// invalid UTF-8 and control characters become "?" and spaces, runs of
// space shrink, and it is cut to max bytes (with "…").
func Sanitize(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// Note is ": <output>" (sanitised, at most max bytes) for an error
// message, or "" when there is no output.
func Note(s string, max int) string {
	s = Sanitize(s, max)
	if s == "" {
		return ""
	}
	return ": " + s
}

// boundedBuffer keeps the first MaxOutput bytes written and drops the
// rest (the writer never blocks or fails).
type boundedBuffer struct {
	b bytes.Buffer
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	if room := MaxOutput - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string { return w.b.String() }

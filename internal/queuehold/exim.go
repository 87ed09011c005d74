package queuehold

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/mailwarden/mailwarden/internal/tool"
)

// eximBatch bounds the ids given to one exim run (they go on its command
// line).
const eximBatch = 100

// exim runs exim -Mf (freeze), -Mt (thaw) or -Mrm (remove) with the ids as
// arguments. Exim answers each id on standard output ("Message <id> is now
// frozen", "… is already frozen", "… is no longer frozen", "… is not
// frozen", "… has been removed", "… is locked", "Spool data file for <id>
// does not exist") and exits 1 when any id was not acted on.
type exim struct {
	r runner
}

// NewExim returns the Queue of the Exim binary at path. It must run as
// root or an Exim admin user; Options.Args may carry -C <config> for an
// Exim with its own configuration.
func NewExim(path string, o Options) (Queue, error) {
	r, err := newRunner("exim", path, o)
	if err != nil {
		return nil, err
	}
	return &exim{r: r}, nil
}

var (
	reEximMessage = regexp.MustCompile(`^Message (\S+) (is now frozen|is already frozen|is no longer frozen|is not frozen|has been removed or did not exist|has been removed|is locked)\b`)
	reEximNoData  = regexp.MustCompile(`^Spool data file for (\S+) does not exist`)
	reEximReadErr = regexp.MustCompile(`^Spool (?:read|format) error for (\S+?)(?:-[HDJ])?(?::|$)`)
)

// Hold freezes the messages: Exim keeps them and does not try to deliver
// them. A message already frozen counts as done.
func (e *exim) Hold(ctx context.Context, ids []string) (Result, error) {
	return e.do(ctx, "hold", "frozen", ids, "-Mf", map[string]bool{"is now frozen": true, "is already frozen": true})
}

// Release thaws the messages; the next queue run delivers them. A message
// that was not frozen counts as done.
func (e *exim) Release(ctx context.Context, ids []string) (Result, error) {
	return e.do(ctx, "release", "thawed", ids, "-Mt", map[string]bool{"is no longer frozen": true, "is not frozen": true})
}

// Purge removes the messages from the queue without a bounce.
func (e *exim) Purge(ctx context.Context, ids []string) (Result, error) {
	return e.do(ctx, "purge", "removed", ids, "-Mrm", map[string]bool{"has been removed": true, "has been removed or did not exist": true})
}

// state of one id after a run.
const (
	unanswered = iota
	done
	missing
	failed
)

func (e *exim) do(ctx context.Context, action, verb string, ids []string, flag string, ok map[string]bool) (Result, error) {
	res := Result{Action: action}
	ids, err := checkIDs("exim", ids)
	if err != nil {
		return res, err
	}
	state := make(map[string]int, len(ids))
	var firstErr error
	var other []string
	for start := 0; start < len(ids); start += eximBatch {
		batch := ids[start:min(start+eximBatch, len(ids))]
		stdout, stderr, code, err := e.r.run(ctx, "", append([]string{flag}, batch...)...)
		for _, line := range strings.Split(stdout+"\n"+stderr, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if m := reEximNoData.FindStringSubmatch(line); m != nil {
				state[m[1]] = missing
				continue
			}
			if m := reEximMessage.FindStringSubmatch(line); m != nil {
				switch {
				case state[m[1]] == missing:
					// "has been removed or did not exist" after "does
					// not exist".
				case m[2] == "is locked":
					state[m[1]] = failed
				case ok[m[2]]:
					state[m[1]] = done
				default:
					other = append(other, line)
				}
				continue
			}
			if m := reEximReadErr.FindStringSubmatch(line); m != nil {
				if state[m[1]] == unanswered {
					state[m[1]] = failed
				}
				other = append(other, line)
				continue
			}
			if !strings.HasPrefix(line, "Continuing") {
				other = append(other, line)
			}
		}
		var unanswer []string
		for _, id := range batch {
			if state[id] == unanswered {
				unanswer = append(unanswer, id)
			}
		}
		cmdline := strings.Join(append(append([]string{e.r.path}, e.r.args...), flag, "…"), " ")
		switch {
		case err != nil:
			firstErr = fmt.Errorf("%s (%d ids): %w", cmdline, len(batch), err)
		case len(unanswer) > 0:
			firstErr = fmt.Errorf("%s: exit code %d and no answer for %d of %d ids (%s)%s", cmdline, code, len(unanswer), len(batch), strings.Join(unanswer, " "), tool.Note(stderr+" "+stdout, 400))
		case code != 0 && code != 1:
			firstErr = fmt.Errorf("%s: exit code %d%s", cmdline, code, tool.Note(stderr+" "+stdout, 400))
		}
		if firstErr != nil {
			break
		}
	}
	for _, id := range ids {
		switch state[id] {
		case done:
			res.IDs = append(res.IDs, id)
		case missing:
			res.Missing++
		case failed:
			res.Failed = append(res.Failed, id)
		}
	}
	finish(&res, verb, tool.Sanitize(strings.Join(other, "; "), 300))
	return res, firstErr
}

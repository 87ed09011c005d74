package queuehold

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/mailwarden/mailwarden/internal/tool"
)

// postfix runs postsuper with "-" as the queue id, so that the ids go on
// its standard input, one per line (postsuper(1)). postsuper reports each
// message on standard error ("postsuper: 3F1A2B4C5D: placed on hold",
// "…: released from hold", "…: removed") and then a summary ("postsuper:
// Placed on hold: 2 messages"); an id not found in the queues the action
// applies to is silently skipped.
type postfix struct {
	r runner
}

// NewPostfix returns the Queue of the Postfix whose postsuper is at path.
// It must run as root (postsuper refuses anyone else).
func NewPostfix(postsuper string, o Options) (Queue, error) {
	r, err := newRunner("postsuper", postsuper, o)
	if err != nil {
		return nil, err
	}
	return &postfix{r: r}, nil
}

var (
	rePostsuperDone    = regexp.MustCompile(`^[^\s:]*: ([0-9A-Za-z]+): (placed on hold|released from hold|removed)$`)
	rePostsuperSummary = regexp.MustCompile(`^[^\s:]*: (?:Placed on hold|Released from hold|Deleted): (\d+) messages?$`)
)

// Hold moves the messages from the incoming, active and deferred queues to
// the hold queue (postsuper -h -). Held mail is not delivered and does not
// expire.
func (p *postfix) Hold(ctx context.Context, ids []string) (Result, error) {
	return p.do(ctx, "hold", "placed on hold", ids, "-h", "-")
}

// Release moves held messages back to the deferred queue (postsuper -H -).
func (p *postfix) Release(ctx context.Context, ids []string) (Result, error) {
	return p.do(ctx, "release", "released from hold", ids, "-H", "-")
}

// Purge deletes the messages from the hold queue only (postsuper -d -
// hold): short Postfix queue ids are reused, so an id remembered from
// mail long delivered may now name someone else's message in another
// queue. Mail of the account that was never held is not touched.
func (p *postfix) Purge(ctx context.Context, ids []string) (Result, error) {
	return p.do(ctx, "purge", "removed", ids, "-d", "-", "hold")
}

func (p *postfix) do(ctx context.Context, action, verb string, ids []string, args ...string) (Result, error) {
	res := Result{Action: action}
	ids, err := checkIDs("postfix", ids)
	if err != nil {
		return res, err
	}
	if len(ids) == 0 {
		finish(&res, verb, "")
		return res, nil
	}
	stdout, stderr, code, err := p.r.run(ctx, strings.Join(ids, "\n")+"\n", args...)
	done := make(map[string]bool, len(ids))
	summary := -1
	var other []string
	for _, line := range strings.Split(stderr+"\n"+stdout, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if m := rePostsuperDone.FindStringSubmatch(line); m != nil && m[2] == verb {
			done[m[1]] = true
			continue
		}
		if m := rePostsuperSummary.FindStringSubmatch(line); m != nil {
			summary, _ = strconv.Atoi(m[1])
			continue
		}
		other = append(other, line)
	}
	for _, id := range ids {
		if done[id] {
			res.IDs = append(res.IDs, id)
		} else {
			res.Missing++
		}
	}
	extra := tool.Sanitize(strings.Join(other, "; "), 300)
	if summary >= 0 && summary != len(res.IDs) {
		extra = strings.TrimPrefix(extra+fmt.Sprintf("; postsuper counted %d", summary), "; ")
	}
	finish(&res, verb, extra)
	cmdline := fmt.Sprintf("%s %s", p.r.path, strings.Join(append(append([]string(nil), p.r.args...), args...), " "))
	if err != nil {
		return res, fmt.Errorf("%s (%d ids): %w", cmdline, len(ids), err)
	}
	if code != 0 {
		return res, fmt.Errorf("%s (%d ids): exit code %d%s", cmdline, len(ids), code, tool.Note(stderr+" "+stdout, 400))
	}
	return res, nil
}

// Package queuehold holds, releases and purges mail already in the queue
// of Postfix (postsuper -h, -H, -d with the queue ids on standard input)
// or Exim (exim -Mf, -Mt, -Mrm), by queue id, and remembers the recent
// queue ids of each account (Tracker) so that a locked account's mail can
// be found. Programs run without a shell and with a time limit; queue ids
// are checked against the MTA's own formats before they are passed on.
//
// It does not read the queue or the logs: the daemon feeds the Tracker from
// the events that carry a queue id, and keeps the held ids for a later
// release. Mail that left the queue before the hold (delivered, bounced,
// removed) is counted as missing, which is not an error.
package queuehold

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/tool"
)

// Result is what one action did.
type Result struct {
	// Action is "hold", "release" or "purge".
	Action string
	// IDs are the queue ids the MTA acted on, in the order given.
	IDs []string
	// Done is len(IDs): messages now held (frozen), released (thawed) or
	// deleted.
	Done int
	// Missing counts the ids no longer where the action applies: gone
	// from the queue (delivered, bounced, deleted), or, for a release or
	// a Postfix purge, not on hold.
	Missing int
	// Failed are ids the MTA could not act on now (Exim: a delivery
	// process holds the message's lock); try them again later.
	Failed []string
	// Detail summarises the MTA's answer.
	Detail string
}

// Queue acts on queued messages by queue id. On error the Result still
// says what was done before the failure.
type Queue interface {
	Hold(ctx context.Context, ids []string) (Result, error)
	Release(ctx context.Context, ids []string) (Result, error)
	Purge(ctx context.Context, ids []string) (Result, error)
}

// DefaultTimeout bounds one run of postsuper or exim.
const DefaultTimeout = 30 * time.Second

// Options are what the configuration does not carry.
type Options struct {
	// Args go before the action's arguments, e.g. [-c, /etc/postfix-out]
	// for another Postfix instance or [-C, /path/exim.conf] for an Exim
	// with its own configuration.
	Args []string
	// Timeout bounds each run; 0 means DefaultTimeout.
	Timeout time.Duration
}

// New returns the Queue of cfg.MTA, or nil, nil when holding is off
// (cfg.MTA "").
func New(cfg config.QueueHold) (Queue, error) {
	switch cfg.MTA {
	case "":
		return nil, nil
	case "postfix":
		return NewPostfix(cfg.Postsuper, Options{Args: cfg.Args, Timeout: cfg.Timeout.D()})
	case "exim":
		return NewExim(cfg.Exim, Options{Args: cfg.Args, Timeout: cfg.Timeout.D()})
	default:
		return nil, fmt.Errorf("mta %q is not one of postfix, exim or \"\" (off)", cfg.MTA)
	}
}

var (
	// Postfix short queue ids: 5 hex digits of microseconds, then the
	// inode number in hex (enable_long_queue_ids = no, the default).
	rePostfixShort = regexp.MustCompile(`^[0-9A-F]{6,21}$`)
	// Postfix long queue ids: seconds (6 or more) and microseconds (4) in
	// a 52-character alphabet without vowels, 'z', then the inode number
	// in the first 51 characters of that alphabet (no 'z').
	rePostfixLong = regexp.MustCompile(`^[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,16}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]{1,13}$`)
	// Exim message ids, base 62 (base 36 on case-insensitive systems):
	// 4.96 and earlier time-pid-fraction 6-6-2, 4.97 and later 6-11-4.
	reEximOld = regexp.MustCompile(`^[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}$`)
	reEximNew = regexp.MustCompile(`^[0-9A-Za-z]{6}-[0-9A-Za-z]{11}-[0-9A-Za-z]{4}$`)
)

// ValidPostfixID tells whether id is a Postfix queue id (short or long).
func ValidPostfixID(id string) bool {
	return rePostfixShort.MatchString(id) || rePostfixLong.MatchString(id)
}

// ValidEximID tells whether id is an Exim message id (4.96 or 4.97+
// format).
func ValidEximID(id string) bool {
	return reEximOld.MatchString(id) || reEximNew.MatchString(id)
}

// ValidID tells whether id is a queue id of mta ("postfix", "exim"; any of
// both for "").
func ValidID(mta, id string) bool {
	switch mta {
	case "postfix":
		return ValidPostfixID(id)
	case "exim":
		return ValidEximID(id)
	case "":
		return ValidPostfixID(id) || ValidEximID(id)
	}
	return false
}

// checkIDs returns ids without duplicates, in order, or an error naming
// the first id that is not of the MTA's format (nothing is run then).
func checkIDs(mta string, ids []string) ([]string, error) {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !ValidID(mta, id) {
			return nil, fmt.Errorf("%q is not a%s queue id: nothing done", tool.Sanitize(id, 60), map[string]string{"postfix": " Postfix", "exim": "n Exim"}[mta])
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out, nil
}

// runner runs one program without a shell.
type runner struct {
	path    string
	args    []string
	timeout time.Duration
}

func newRunner(what, path string, o Options) (runner, error) {
	if !filepath.IsAbs(path) {
		return runner{}, fmt.Errorf("%s %q is not an absolute path", what, path)
	}
	for _, a := range o.Args {
		if strings.ContainsRune(a, 0) {
			return runner{}, fmt.Errorf("%s argument %q contains a NUL byte", what, a)
		}
	}
	t := o.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return runner{path: path, args: append([]string(nil), o.Args...), timeout: t}, nil
}

// run runs the program with r.args then args, stdin as its standard
// input, and returns its standard output and error (bounded) and exit
// code; err is set when it could not run, was killed or ran out of time.
func (r runner) run(ctx context.Context, stdin string, args ...string) (stdout, stderr string, code int, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	argv := make([]string, 0, len(r.args)+len(args))
	argv = append(append(argv, r.args...), args...)
	stdout, stderr, code, err = tool.Run(ctx, stdin, append([]string{r.path}, argv...))
	switch {
	case errors.Is(err, tool.ErrNoAnswer):
		err = fmt.Errorf("%s: no answer within %s: %w", r.path, r.timeout, ctx.Err())
	case err != nil:
		err = fmt.Errorf("%s: %w%s", r.path, err, tool.Note(stderr, 400))
	}
	return stdout, stderr, code, err
}

// finish fills in Done and a Detail.
func finish(res *Result, verb string, extra string) {
	res.Done = len(res.IDs)
	res.Detail = fmt.Sprintf("%d %s, %d no longer there", res.Done, verb, res.Missing)
	if len(res.Failed) > 0 {
		res.Detail += fmt.Sprintf(", %d not possible now (%s)", len(res.Failed), strings.Join(res.Failed, " "))
	}
	if extra != "" {
		res.Detail += "; " + extra
	}
}

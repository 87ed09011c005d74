package kick

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailwarden/mailwarden/internal/tool"
)

// commandKicker runs the configured program (e.g. /usr/bin/doveadm kick)
// with "--" and the account appended, without a shell; "--" keeps an
// account beginning with "-" from being read as an option.
type commandKicker struct {
	argv    []string
	who     []string // the matching "doveadm … -f tab who" command; nil if there is none
	timeout time.Duration
}

func newCommand(argv []string, timeout time.Duration) (*commandKicker, error) {
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		return nil, errors.New("kick command needs an absolute program path, e.g. [/usr/bin/doveadm, kick]")
	}
	k := &commandKicker{argv: append([]string(nil), argv...), timeout: timeout}
	// For a command that is doveadm's kick (possibly with global options
	// such as -c, or behind a wrapper such as sudo), the same doveadm's
	// who counts the connections, for a Dovecot (2.3) whose kick lists
	// users instead of counting.
	n := len(argv)
	if n >= 2 && argv[n-1] == "kick" {
		for _, a := range argv[:n-1] {
			if filepath.Base(a) == "doveadm" {
				k.who = append(append([]string(nil), argv[:n-1]...), "-f", "tab", "who")
				break
			}
		}
	}
	return k, nil
}

var (
	reKickCount = regexp.MustCompile(`(?m)^\s*(\d+) connections kicked\s*$`)
	// The 2.3 CLI prints the header with printf and the names through its
	// own buffer, so the two can come out in either order.
	kickUsersHeader = "kicked connections from the following users:"
	kickWarning     = "other connections would also be kicked"
)

func (k *commandKicker) Kick(ctx context.Context, account string) (Result, error) {
	res := Result{Method: "command"}
	if err := CheckAccount(account); err != nil {
		return res, err
	}
	ctx, cancel := withTimeout(ctx, k.timeout)
	defer cancel()
	counted, whoErr := 0, error(nil)
	if k.who != nil {
		// who gets half the time at most: the kick must still happen.
		wctx, wcancel := context.WithTimeout(ctx, k.timeout/2)
		counted, whoErr = k.countWho(wctx, account)
		wcancel()
	}
	out, errOut, code, err := tool.Run(ctx, "", slices.Concat(k.argv, []string{"--", account}))
	if err != nil {
		return res, fmt.Errorf("%s: %w%s", k.argv[0], err, tool.Note(errOut, 300))
	}
	switch code {
	case 0:
	case exitNotFound:
		if strings.Contains(errOut, "kill(") {
			// doveadm 2.3 found sessions but could not signal their
			// processes (not root), and says "no users kicked".
			return res, fmt.Errorf("%s could not end the sessions of %s (it must run as root)%s", k.argv[0], quote(account), tool.Note(errOut, 300))
		}
		res.Detail = "no live session (doveadm kick: no users kicked)"
		return res, nil
	default:
		return res, fmt.Errorf("%s kick %s: %s%s", k.argv[0], quote(account), exitMeaning(code), tool.Note(errOut+" "+out, 300))
	}
	if strings.Contains(out, kickWarning) {
		// doveadm 2.3 without -f refuses to signal a process that also
		// serves other users.
		return res, fmt.Errorf("%s did not kick %s: a process also serves other users and doveadm kick refuses without -f: %s", k.argv[0], quote(account), tool.Sanitize(out, 300))
	}
	if m := reKickCount.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		res.Kicked = n
		res.Detail = fmt.Sprintf("dovecot: %d connection(s) kicked", n)
		return res, nil
	}
	if strings.Contains(out, "no users kicked") {
		res.Detail = "no live session (doveadm kick: no users kicked)"
		return res, nil
	}
	if strings.Contains(out, kickUsersHeader) {
		users := strings.Fields(strings.ReplaceAll(out, kickUsersHeader, " "))
		res.Kicked = kickedFromUsers(users, counted)
		res.Detail = fmt.Sprintf("dovecot kicked the sessions of %s", tool.Sanitize(strings.Join(users, " "), 300))
		if k.who != nil {
			res.Detail += fmt.Sprintf("; %d connection(s) listed by doveadm who before the kick", counted)
			if whoErr != nil {
				res.Detail += " (who failed: " + tool.Sanitize(whoErr.Error(), 200) + ")"
			}
		}
		return res, nil
	}
	res.Detail = "the command succeeded without saying what it kicked: " + tool.Sanitize(out, 200)
	return res, nil
}

// countWho sums the connection column of "doveadm -f tab who -- account".
func (k *commandKicker) countWho(ctx context.Context, account string) (int, error) {
	out, errOut, code, err := tool.Run(ctx, "", slices.Concat(k.who, []string{"--", account}))
	if err != nil {
		return 0, fmt.Errorf("%w%s", err, tool.Note(errOut, 300))
	}
	if code != 0 {
		return 0, fmt.Errorf("doveadm who: %s%s", exitMeaning(code), tool.Note(errOut, 300))
	}
	col, n := 1, 0
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if i == 0 && len(f) > 0 && f[0] == "username" {
			for j, h := range f {
				if h == "#" || h == "connections" {
					col = j
				}
			}
			continue
		}
		if len(f) <= col {
			continue
		}
		c, err := strconv.Atoi(strings.TrimSpace(f[col]))
		if err != nil || c < 1 {
			c = 1
		}
		n += c
	}
	return n, nil
}

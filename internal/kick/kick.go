// Package kick ends the live Dovecot IMAP and POP sessions of an account,
// through the doveadm HTTP API or by running doveadm kick (never through a
// shell). It owns the request, the parsing of Dovecot's answer and the
// refusal of account names doveadm would read as a mask matching other
// users. It does not decide who is kicked, nor end SMTP sessions (those end
// through the policy listeners' 421/drop answers).
//
// What Dovecot reports differs by version (checked against Dovecot 2.3.19
// and the doveadm sources):
//
//   - 2.3 lists the users whose processes it signalled, not a count:
//     HTTP [["doveadmResponse",[{"result":"joe@example.com"}],"tag"]],
//     CLI "kicked connections from the following users:" and the names.
//     When no session matched it fails with exit code 68 (HTTP
//     [["error",{"type":"exitCode","exitCode":68},"tag"]], CLI "no users
//     kicked"). To report connections, the kicker first asks doveadm who
//     how many the account has.
//   - 2.4 reports the number of connections: HTTP [{"count":"2"}], CLI
//     "2 connections kicked".
//
// Dovecot 2.3's JSON output of several rows is not the documented list:
// [["doveadmResponse",[{row 1}],{row 2},"tag"]]; the parser reads both.
//
// doveadm reads its user mask with * and ? as wildcards, and a mask that
// parses as an IP address or ip/bits as an address filter ("0/0" matches
// every connection): CheckAccount refuses such names, so that kicking one
// account can never end another's sessions.
package kick

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mailwarden/mailwarden/internal/config"
)

// Result is what one kick did.
type Result struct {
	// Method is "http" or "command".
	Method string
	// Kicked is the number of sessions (connections) ended, as reported
	// by Dovecot: its count (2.4), or, when it lists users instead (2.3),
	// the connections doveadm who listed for the account just before the
	// kick (at least one per user listed). 0 when the account had none.
	Kicked int
	// Detail says what Dovecot answered, for the log and the audit trail.
	Detail string
}

// Kicker ends the live sessions of an account.
type Kicker interface {
	Kick(ctx context.Context, account string) (Result, error)
}

// DefaultTimeout bounds a kick when the configuration gives no timeout.
const DefaultTimeout = 5 * time.Second

// maxAccount bounds the length of an account name (an address is at most
// 254 bytes).
const maxAccount = 512

// exitNotFound is doveadm's exit code when nothing matched
// (DOVEADM_EX_NOTFOUND).
const exitNotFound = 68

// New returns the kicker cfg describes, or nil, nil when kicking is off
// (cfg.Method "").
func New(cfg config.Kick) (Kicker, error) {
	timeout := cfg.Timeout.D()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	switch cfg.Method {
	case "":
		return nil, nil
	case "http":
		return newHTTP(cfg.URL, cfg.APIKey, timeout)
	case "command":
		return newCommand(cfg.Command, timeout)
	default:
		return nil, fmt.Errorf("kick method %q is not one of http, command or \"\" (off)", cfg.Method)
	}
}

// CheckAccount returns an error when account must not be given to doveadm
// as a user mask: empty, too long, not UTF-8, with control or space
// characters, with the wildcards * or ?, with a '/', or shaped like an IP
// address (which doveadm reads as an address filter, not a user name).
func CheckAccount(account string) error {
	switch {
	case account == "":
		return errors.New("refusing to kick an empty account name")
	case len(account) > maxAccount:
		return fmt.Errorf("refusing to kick an account name of %d bytes (at most %d)", len(account), maxAccount)
	case !utf8.ValidString(account):
		return fmt.Errorf("refusing to kick %s: not valid UTF-8", quote(account))
	}
	for _, r := range account {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("refusing to kick %s: it contains a control or space character", quote(account))
		}
	}
	if strings.ContainsAny(account, "*?") {
		return fmt.Errorf("refusing to kick %s: doveadm reads * and ? as wildcards, which would end other users' sessions", quote(account))
	}
	if strings.Contains(account, "/") {
		return fmt.Errorf("refusing to kick %s: doveadm reads ip/bits as an address range, which could end other users' sessions", quote(account))
	}
	if looksLikeIP(account) {
		return fmt.Errorf("refusing to kick %s: doveadm reads it as an IP address, not a user name, so this account cannot be kicked by name", quote(account))
	}
	return nil
}

// looksLikeIP tells whether Dovecot's net_addr2ip could take s for an
// address: anything IPv6-shaped, or what inet_aton accepts (1 to 4 dotted
// parts, each decimal, octal or 0x-hex: "127.1", "2130706433").
func looksLikeIP(s string) bool {
	if strings.Contains(s, ":") {
		if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
			return true
		}
		return strings.Trim(s, "0123456789abcdefABCDEF:.[]%") == ""
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		if !inetAtonPart(p) {
			return false
		}
	}
	return true
}

func inetAtonPart(p string) bool {
	if p == "" {
		return false
	}
	digits := "0123456789"
	if h, ok := strings.CutPrefix(strings.ToLower(p), "0x"); ok {
		p, digits = h, "0123456789abcdef"
		if p == "" {
			return true
		}
	}
	return strings.Trim(strings.ToLower(p), digits) == ""
}

// quote quotes a name for an error message, cut to a readable length.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// withTimeout bounds ctx by d.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}

// kickedFromUsers is Kicked for a Dovecot that lists users: the
// connections who counted before the kick, at least one per user.
func kickedFromUsers(users []string, counted int) int {
	if len(users) == 0 {
		return 0
	}
	return max(counted, len(users))
}

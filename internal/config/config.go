// Package config holds mailwarden's one typed configuration: detector
// thresholds, windows and actions, allowlists, memory caps. It loads YAML
// strictly (an unknown key is an error naming its line) over built-in
// defaults, so mailwarden works without any config file.
//
// Every field is documented with its default in etc/mailwarden.yaml, which a
// test loads; keep the two in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Action is what a detector does when it fires, in rising severity.
type Action string

// Actions.
const (
	Alert   Action = "alert"    // notify only
	Defer   Action = "defer"    // temporary refusal (4xx)
	Hold    Action = "hold"     // accept but hold/freeze the mail: nothing lost
	Lock    Action = "lock"     // lock the account on SMTP, IMAP and POP
	BlockIP Action = "block_ip" // refuse the client address
)

// Severity orders actions: alert < defer < hold < lock, block_ip.
func (a Action) Severity() int {
	switch a {
	case Alert:
		return 1
	case Defer:
		return 2
	case Hold:
		return 3
	case Lock, BlockIP:
		return 4
	}
	return 0
}

func (a Action) valid() bool { return a.Severity() > 0 }

// Duration is a time.Duration that YAML writes as "90s", "15m", "24h" or "7d".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML accepts Go durations plus a "d" (days) suffix.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in its short form.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// ParseDuration parses "15m", "24h", "7d", "1d12h".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 15m, 24h, 7d)", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 90s, 15m, 24h, 7d)", s)
	}
	return days + v, nil
}

// Config is the whole configuration.
type Config struct {
	DryRun         bool      `yaml:"dry_run"`          // record what would be done, enforce nothing
	MaxTrackedKeys int       `yaml:"max_tracked_keys"` // cap on accounts+IPs+sessions held in memory (LRU)
	Allowlist      Allowlist `yaml:"allowlist"`
	Networks       Networks  `yaml:"networks"`
	BlockFor       Duration  `yaml:"block_for"` // how long a block_ip lasts (escalates for repeat offenders)
	Detectors      Detectors `yaml:"detectors"`
	Serve          Serve     `yaml:"serve"`
	Responses      Responses `yaml:"responses"`
}

// Serve configures the daemon (mailwarden serve). Addresses are
// "unix:/path" or "host:port"; "" disables that listener.
type Serve struct {
	Node     string   `yaml:"node"`      // this server's name in incidents; default: the host name
	StateDir string   `yaml:"state_dir"` // SQLite state and log positions
	Postfix  string   `yaml:"postfix"`   // Postfix policy delegation
	Exim     string   `yaml:"exim"`      // Exim ${readsocket}
	Dovecot  string   `yaml:"dovecot"`   // Dovecot auth policy (HTTP)
	Admin    string   `yaml:"admin"`     // admin API for the CLI
	Logs     []string `yaml:"logs"`      // log files to follow (events no in-band hook sees)
	// DovecotAPIKey is the key Dovecot sends in its X-API-Key header
	// (auth_policy_server_api_header = X-API-Key: <key>); "" accepts any
	// request (only sensible when nothing else can reach the listener).
	DovecotAPIKey string `yaml:"dovecot_api_key"`
	// AdminToken is required (as "Authorization: Bearer <token>") on a TCP
	// admin listener; the unix socket is protected by its permissions.
	AdminToken string `yaml:"admin_token"`
	// TarpitSeconds is the delay asked of Dovecot for an address attacking
	// an account.
	TarpitSeconds int `yaml:"tarpit_seconds"`
	// Journal is how much recent event history is kept to rebuild the
	// counters after a restart.
	Journal Duration `yaml:"journal"`
	// Texts are the answers the mail servers give the client; they never
	// say why in detail.
	Texts Texts `yaml:"texts"`
}

// Texts are the client-facing reply texts.
type Texts struct {
	Locked  string `yaml:"locked"`
	Blocked string `yaml:"blocked"`
	Defer   string `yaml:"defer"`
	Hold    string `yaml:"hold"`
}

// Allowlist exempts accounts and networks from every detector.
type Allowlist struct {
	Accounts []string `yaml:"accounts"` // exact names or "*@domain"
	Networks []string `yaml:"networks"` // CIDR or single addresses

	prefixes []netip.Prefix
}

// Networks says how addresses are grouped into "networks" for distinct
// counting (botnet, harvest).
type Networks struct {
	IPv4Prefix int `yaml:"ipv4_prefix"` // default 16
	IPv6Prefix int `yaml:"ipv6_prefix"` // default 32
	// MinSpread is the number of distinct IPv4 /8 (IPv6 /16) blocks the new
	// networks must span before botnet or harvest fire: a phone hopping
	// through one carrier's NAT pool stays in one or two.
	MinSpread int `yaml:"min_spread"` // default 3
	// CommonAccounts: a network from which at least this many other
	// accounts log in is a common access network of your users (a
	// carrier's NAT pool, a large ISP) and never counts as new. 0 disables.
	CommonAccounts int `yaml:"common_accounts"` // default 5, at most 14
}

// Detectors configures each detector.
type Detectors struct {
	CrackIP         CrackIP         `yaml:"crack_ip"`
	SprayIP         SprayIP         `yaml:"spray_ip"`
	AccountAttacked AccountAttacked `yaml:"account_attacked"`
	Botnet          Botnet          `yaml:"botnet"`
	Spamware        Spamware        `yaml:"spamware"`
	PerConnection   PerConnection   `yaml:"per_connection"`
	BadRcpt         BadRcpt         `yaml:"bad_rcpt"`
	DailyCaps       DailyCaps       `yaml:"daily_caps"`
	Harvest         Harvest         `yaml:"harvest"`
	Baseline        Baseline        `yaml:"baseline"`
}

// Common fields of every detector.
type Common struct {
	Enabled bool     `yaml:"enabled"`
	Action  Action   `yaml:"action"`
	Window  Duration `yaml:"window"`
}

// CrackIP: password guessing from one address (IPv6 per /64).
type CrackIP struct {
	Common       `yaml:",inline"`
	Failures     int      `yaml:"failures"`      // failed attempts per window
	LongWindow   Duration `yaml:"long_window"`   // slow guessing
	LongFailures int      `yaml:"long_failures"` // failed attempts per long window
	// StaleFailures is the budget for failures of an account from a network
	// where it has logged in successfully (a client with an old password):
	// those count only past this many per window.
	StaleFailures int `yaml:"stale_failures"`
	// PerLoginBonus raises the thresholds by this many per distinct account
	// that logged in successfully from the address (NAT, proxies).
	PerLoginBonus int `yaml:"per_login_bonus"`
}

// SprayIP: one address failing for many accounts.
type SprayIP struct {
	Common        `yaml:",inline"`
	Accounts      int `yaml:"accounts"`        // distinct failing accounts per window
	PerLoginBonus int `yaml:"per_login_bonus"` // per distinct account that logged in from the address
}

// AccountAttacked: one account failing from many addresses.
type AccountAttacked struct {
	Common `yaml:",inline"`
	IPs    int `yaml:"ips"` // distinct failing addresses per window
	// SuccessAction applies when the attacked account then logs in from one
	// of the attacking networks: the password was found.
	SuccessAction Action `yaml:"success_action"`
}

// Botnet: one account used from many networks.
type Botnet struct {
	Common   `yaml:",inline"`
	Networks int `yaml:"networks"` // distinct new networks per window
	// Burst and BurstWindow catch near-simultaneous use from different
	// networks.
	Burst       int      `yaml:"burst"`
	BurstWindow Duration `yaml:"burst_window"`
	// KnownFor is how long a network stays "known" for an account after a
	// successful login from it; known networks never count.
	KnownFor Duration `yaml:"known_for"`
}

// Spamware: many messages from one account and address.
type Spamware struct {
	Common     `yaml:",inline"`
	Messages   int `yaml:"messages"`   // per account+IP per window
	Recipients int `yaml:"recipients"` // per account+IP per window
}

// PerConnection: many messages in one SMTP session.
type PerConnection struct {
	Common   `yaml:",inline"`
	Messages int `yaml:"messages"`
}

// BadRcpt: rejected recipients of an authenticated account.
type BadRcpt struct {
	Common     `yaml:",inline"`
	Recipients int `yaml:"recipients"`
}

// DailyCaps: rolling 24 h volume per account.
type DailyCaps struct {
	Common     `yaml:",inline"`
	Recipients int   `yaml:"recipients"`
	Messages   int   `yaml:"messages"`
	Bytes      int64 `yaml:"bytes"`
	// HistoryFactor scales the caps to an account's own steady volume: the
	// cap is at least HistoryFactor × its 90th-percentile day of the last
	// 30 days (once HistoryDays days are known).
	HistoryFactor float64 `yaml:"history_factor"`
	HistoryDays   int     `yaml:"history_days"`
}

// Harvest: IMAP/POP access from many new networks while the account sends.
type Harvest struct {
	Common   `yaml:",inline"`
	Networks int `yaml:"networks"` // distinct new IMAP/POP networks per window
	Messages int `yaml:"messages"` // SMTP messages of the account in the window
}

// Baseline: an account's rolling 24 h volume against its own usual day
// (see internal/baseline for the model and etc/mailwarden.yaml for the
// defaults' reasons).
type Baseline struct {
	Common          `yaml:",inline"`
	Ratio           float64 `yaml:"ratio"`            // at least ratio × the usual day
	Spread          float64 `yaml:"spread"`           // and usual + spread × its robust deviation
	TailProbability float64 `yaml:"tail_probability"` // and a Poisson tail this improbable
	MinMessages     int     `yaml:"min_messages"`     // and at least this many messages in 24 h
	MinRecipients   int     `yaml:"min_recipients"`   // (or recipients)
	MinBytes        int64   `yaml:"min_bytes"`        // (or bytes; 0: bytes are not judged)
	HistoryDays     int     `yaml:"history_days"`     // complete days the usual day is learned from
	MinDays         int     `yaml:"min_days"`         // learned days with traffic before the account's own figures count
	PriorQuantile   float64 `yaml:"prior_quantile"`   // new accounts: this quantile of all accounts' days
	LearnRatio      float64 `yaml:"learn_ratio"`      // a finished day past this fraction of the threshold is not learned
}

// Default returns the built-in configuration. See etc/mailwarden.yaml for
// why each figure is what it is.
func Default() *Config {
	h := func(n int) Duration { return Duration(time.Duration(n) * time.Hour) }
	m := func(n int) Duration { return Duration(time.Duration(n) * time.Minute) }
	return &Config{
		MaxTrackedKeys: 1_000_000,
		Networks:       Networks{IPv4Prefix: 16, IPv6Prefix: 32, MinSpread: 3, CommonAccounts: 5},
		BlockFor:       h(1),
		Responses:      defaultResponses(),
		Serve: Serve{
			StateDir:      "/var/lib/mailwarden",
			Postfix:       "unix:/run/mailwarden/postfix.sock",
			Exim:          "",
			Dovecot:       "127.0.0.1:8643",
			Admin:         "unix:/run/mailwarden/admin.sock",
			TarpitSeconds: 3,
			Journal:       h(24),
			Texts: Texts{
				Locked:  "Account temporarily locked, contact your provider",
				Blocked: "Too many failed logins from your address, try again later",
				Defer:   "Sending limit reached, try again later",
				Hold:    "Message accepted for review",
			},
		},
		Detectors: Detectors{
			CrackIP: CrackIP{Common: Common{true, BlockIP, m(15)}, Failures: 12, LongWindow: h(24), LongFailures: 40,
				StaleFailures: 100, PerLoginBonus: 2},
			SprayIP:         SprayIP{Common: Common{true, BlockIP, h(1)}, Accounts: 6, PerLoginBonus: 1},
			AccountAttacked: AccountAttacked{Common: Common{true, Alert, h(1)}, IPs: 6, SuccessAction: Lock},
			Botnet: Botnet{Common: Common{true, Lock, h(24)}, Networks: 8, Burst: 5, BurstWindow: m(10),
				KnownFor: Duration(30 * 24 * time.Hour)},
			Spamware:      Spamware{Common: Common{true, Hold, h(1)}, Messages: 200, Recipients: 1000},
			PerConnection: PerConnection{Common: Common{true, Hold, 0}, Messages: 50},
			BadRcpt:       BadRcpt{Common: Common{true, Lock, h(1)}, Recipients: 40},
			DailyCaps: DailyCaps{Common: Common{true, Defer, h(24)}, Recipients: 1000, Messages: 1000,
				Bytes: 2 << 30, HistoryFactor: 2, HistoryDays: 3},
			Harvest: Harvest{Common: Common{true, Lock, h(24)}, Networks: 6, Messages: 1},
			Baseline: Baseline{Common: Common{true, Hold, h(24)}, Ratio: 5, Spread: 4, TailProbability: 1e-6,
				MinMessages: 50, MinRecipients: 150, MinBytes: 100 << 20, HistoryDays: 30, MinDays: 10,
				PriorQuantile: 0.99, LearnRatio: 2},
		},
	}
}

var fieldNotFound = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// Load reads path over the defaults. An empty path returns the defaults.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		return c, c.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := c.decode(b); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults and validates it.
func Parse(b []byte) (*Config, error) {
	c := Default()
	if err := c.decode(b); err != nil {
		return nil, err
	}
	return c, c.Validate()
}

func (c *Config) decode(b []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, errEOF) || err.Error() == "EOF" {
			return nil // empty file: defaults
		}
		msg := err.Error()
		msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
		msg = fieldNotFound.ReplaceAllString(msg, `line $1: unknown key "$2"`)
		return errors.New(strings.TrimSpace(msg))
	}
	return nil
}

var errEOF = errors.New("EOF")

// Validate checks ranges and compiles the allowlist.
func (c *Config) Validate() error {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if c.MaxTrackedKeys < 1000 {
		bad("max_tracked_keys: %d is too small (at least 1000)", c.MaxTrackedKeys)
	}
	if c.Networks.IPv4Prefix < 8 || c.Networks.IPv4Prefix > 32 {
		bad("networks.ipv4_prefix: %d is out of range 8..32", c.Networks.IPv4Prefix)
	}
	if c.Networks.IPv6Prefix < 16 || c.Networks.IPv6Prefix > 64 {
		bad("networks.ipv6_prefix: %d is out of range 16..64", c.Networks.IPv6Prefix)
	}
	if c.Serve.TarpitSeconds < 0 || c.Serve.TarpitSeconds > 30 {
		bad("serve.tarpit_seconds: %d is out of range 0..30", c.Serve.TarpitSeconds)
	}
	for name, a := range map[string]string{"postfix": c.Serve.Postfix, "exim": c.Serve.Exim, "dovecot": c.Serve.Dovecot, "admin": c.Serve.Admin} {
		if err := CheckAddr(a); err != nil {
			bad("serve.%s: %v", name, err)
		}
	}
	if strings.HasPrefix(c.Serve.Dovecot, "unix:") {
		bad("serve.dovecot: %q: Dovecot's policy client speaks HTTP over TCP only; use a loopback address such as 127.0.0.1:8643", c.Serve.Dovecot)
	}
	if c.Networks.CommonAccounts < 0 || c.Networks.CommonAccounts > 14 {
		bad("networks.common_accounts: %d is out of range 0..14", c.Networks.CommonAccounts)
	}
	c.Responses.validate(bad)
	d := &c.Detectors
	for _, x := range []struct {
		name string
		c    *Common
		n    []int
	}{
		{"crack_ip", &d.CrackIP.Common, []int{d.CrackIP.Failures, d.CrackIP.LongFailures}},
		{"spray_ip", &d.SprayIP.Common, []int{d.SprayIP.Accounts}},
		{"account_attacked", &d.AccountAttacked.Common, []int{d.AccountAttacked.IPs}},
		{"botnet", &d.Botnet.Common, []int{d.Botnet.Networks, d.Botnet.Burst}},
		{"spamware", &d.Spamware.Common, []int{d.Spamware.Messages, d.Spamware.Recipients}},
		{"per_connection", &d.PerConnection.Common, []int{d.PerConnection.Messages}},
		{"bad_rcpt", &d.BadRcpt.Common, []int{d.BadRcpt.Recipients}},
		{"daily_caps", &d.DailyCaps.Common, []int{d.DailyCaps.Recipients, d.DailyCaps.Messages}},
		{"harvest", &d.Harvest.Common, []int{d.Harvest.Networks}},
		{"baseline", &d.Baseline.Common, []int{d.Baseline.MinMessages, d.Baseline.MinRecipients}},
	} {
		if !x.c.Action.valid() {
			bad("detectors.%s.action: %q is not one of alert, defer, hold, lock, block_ip", x.name, x.c.Action)
		}
		if x.c.Window < 0 || (x.name != "per_connection" && x.c.Window == 0 && x.c.Enabled) {
			bad("detectors.%s.window: must be positive", x.name)
		}
		for _, n := range x.n {
			if n < 1 && x.c.Enabled {
				bad("detectors.%s: thresholds must be at least 1", x.name)
				break
			}
		}
	}
	if d.AccountAttacked.SuccessAction != "" && !d.AccountAttacked.SuccessAction.valid() {
		bad("detectors.account_attacked.success_action: %q is not a valid action", d.AccountAttacked.SuccessAction)
	}
	if d.CrackIP.Enabled && d.CrackIP.LongWindow < d.CrackIP.Window {
		bad("detectors.crack_ip.long_window: must be at least window")
	}
	if d.Botnet.Enabled && d.Botnet.BurstWindow <= 0 {
		bad("detectors.botnet.burst_window: must be positive")
	}
	if b := &d.Baseline; b.Enabled {
		if b.Window.D() != 24*time.Hour {
			bad("detectors.baseline.window: must be 24h (the last 24 h are compared with whole usual days)")
		}
		if b.Ratio < 1 || b.LearnRatio < 1 || b.LearnRatio > b.Ratio {
			bad("detectors.baseline: need 1 <= learn_ratio <= ratio (got learn_ratio %g, ratio %g)", b.LearnRatio, b.Ratio)
		}
		if b.Spread < 0 || b.MinBytes < 0 {
			bad("detectors.baseline: spread and min_bytes must not be negative")
		}
		if b.TailProbability < 1e-12 || b.TailProbability > 0.1 {
			bad("detectors.baseline.tail_probability: %g is out of range 1e-12..0.1", b.TailProbability)
		}
		if b.HistoryDays < 7 || b.HistoryDays > 34 {
			bad("detectors.baseline.history_days: %d is out of range 7..34", b.HistoryDays)
		}
		if b.MinDays < 1 || b.MinDays > b.HistoryDays {
			bad("detectors.baseline.min_days: %d is out of range 1..history_days", b.MinDays)
		}
		if b.PriorQuantile < 0.5 || b.PriorQuantile >= 1 {
			bad("detectors.baseline.prior_quantile: %g is out of range 0.5..0.99", b.PriorQuantile)
		}
	}
	c.Allowlist.prefixes = nil
	if len(c.Allowlist.Accounts) == 0 {
		c.Allowlist.Accounts = nil
	}
	if len(c.Allowlist.Networks) == 0 {
		c.Allowlist.Networks = nil
	}
	if len(c.Serve.Logs) == 0 {
		c.Serve.Logs = nil
	}
	if len(c.Responses.Notify.Webhooks) == 0 {
		c.Responses.Notify.Webhooks = nil
	}
	for _, s := range c.Allowlist.Networks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				bad("allowlist.networks: %q is neither a CIDR nor an address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.Allowlist.prefixes = append(c.Allowlist.prefixes, p.Masked())
	}
	for i, a := range c.Allowlist.Accounts {
		c.Allowlist.Accounts[i] = strings.ToLower(strings.TrimSpace(a))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// AccountAllowed reports whether the account is on the allowlist.
func (a *Allowlist) AccountAllowed(acct string) bool {
	if acct == "" {
		return false
	}
	for _, x := range a.Accounts {
		if x == acct || (strings.HasPrefix(x, "*@") && strings.HasSuffix(acct, x[1:])) {
			return true
		}
	}
	return false
}

// IPAllowed reports whether the address is on the allowlist.
func (a *Allowlist) IPAllowed(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckAddr validates a listener address: "" (off), "unix:/absolute/path"
// or "host:port".
func CheckAddr(a string) error {
	switch {
	case a == "":
		return nil
	case strings.HasPrefix(a, "unix:"):
		if !strings.HasPrefix(a[5:], "/") {
			return fmt.Errorf("%q: a unix socket needs an absolute path (unix:/run/mailwarden/x.sock)", a)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: use unix:/path or host:port", a)
	}
	if _, err := strconv.Atoi(port); err != nil {
		return fmt.Errorf("%q: port %q is not a number", a, port)
	}
	_ = host
	return nil
}

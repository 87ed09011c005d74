package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The documented example must load and say exactly the defaults, so the
// docs cannot drift from the code.
func TestExampleIsDefaults(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "etc", "mailwarden.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, d) {
		t.Errorf("etc/mailwarden.yaml differs from Default():\n got %+v\n%+v\nwant %+v\n%+v", c.Detectors, c.Serve, d.Detectors, d.Serve)
	}
}

func TestNoFile(t *testing.T) {
	c, err := Load("")
	if err != nil || c.Detectors.Botnet.Networks != 8 {
		t.Fatalf("Load(\"\") = %v, %v", c, err)
	}
	if c, err := Parse(nil); err != nil || c.MaxTrackedKeys != 1_000_000 {
		t.Fatalf("Parse(empty) = %v, %v", c, err)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"detectors:\n  crack_ip:\n    treshold: 5\n", `line 3: unknown key "treshold"`},
		{"detectors:\n  botnet:\n    action: nuke\n", `detectors.botnet.action: "nuke" is not one of`},
		{"detectors:\n  botnet:\n    window: soon\n", `line 3: invalid duration "soon"`},
		{"allowlist:\n  networks: [10.0.0.0/33]\n", `allowlist.networks: "10.0.0.0/33"`},
		{"max_tracked_keys: 5\n", "max_tracked_keys: 5 is too small"},
		{"serve:\n  postfix: run/x.sock\n", `serve.postfix: "run/x.sock": use unix:/path or host:port`},
		{"serve:\n  admin: unix:relative.sock\n", "absolute path"},
		{"dry_run: [\n", "yaml"},
		{"detectors:\n  baseline:\n    window: 12h\n", "detectors.baseline.window: must be 24h"},
		{"detectors:\n  baseline:\n    learn_ratio: 6\n", "need 1 <= learn_ratio <= ratio"},
		{"detectors:\n  baseline:\n    history_days: 40\n", "detectors.baseline.history_days: 40 is out of range 7..34"},
		{"detectors:\n  baseline:\n    min_messages: 0\n", "detectors.baseline: thresholds must be at least 1"},
		{"detectors:\n  baseline:\n    tail_probability: 0.5\n", "tail_probability: 0.5 is out of range"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestOverrideAndAllowlist(t *testing.T) {
	c, err := Parse([]byte("dry_run: true\ndetectors:\n  botnet:\n    window: 2d\nallowlist:\n  accounts: ['News@Example.com', '*@bulk.example']\n  networks: [192.0.2.0/24, '2001:db8::1']\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.DryRun || c.Detectors.Botnet.Window.D() != 48*time.Hour || c.Detectors.Botnet.Networks != 8 {
		t.Errorf("override: %+v", c.Detectors.Botnet)
	}
	if !c.Allowlist.AccountAllowed("news@example.com") || !c.Allowlist.AccountAllowed("x@bulk.example") || c.Allowlist.AccountAllowed("x@example.com") {
		t.Error("account allowlist")
	}
	ok := func(s string) bool { return c.Allowlist.IPAllowed(mustAddr(s)) }
	if !ok("192.0.2.77") || !ok("2001:db8::1") || ok("192.0.3.1") || ok("2001:db8::2") {
		t.Error("network allowlist")
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v", err)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/daemon"
	"github.com/mailwarden/mailwarden/internal/report"
	"github.com/mailwarden/mailwarden/internal/store"
)

const adminUsage = `Usage: mailwarden <command> [flags] [ARG]

Admin commands talk to a running daemon (mailwarden serve) over its admin
socket:

  status                       what the daemon is doing
  locks                        locked accounts
  blocks                       blocked addresses
  incidents [--account A]      recent incidents, newest first
  report A                     an account's address tables and incidents
  lock A --reason R            lock an account on SMTP, IMAP and POP
  unlock A [--reason R] [--release | --purge]
                               lift a lock; --release lets the account's
                               held queued mail go, --purge deletes it
  block IP [--for D] --reason R  block an address (default: block_for)
  unblock IP [--reason R]      lift a block
  audit                        who changed what, newest first

Every change is audited with who made it and why.

Flags:
`

type adminFlags struct {
	addr   string
	token  string
	cfg    string
	reason string
	dur    string
	acct   string
	limit  int
	asJSON bool
	// unlock: what to do with the account's mail held at lock time
	release, purge bool
}

func adminCmd(cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f adminFlags
	f.register(fs)
	switch cmd {
	case "lock", "unlock", "block", "unblock":
		fs.StringVar(&f.reason, "reason", "", "why (goes to the audit log; required for lock and block)")
	}
	if cmd == "unlock" {
		fs.BoolVar(&f.release, "release", false, "release the account's queued mail held when it was locked")
		fs.BoolVar(&f.purge, "purge", false, "delete the account's queued mail held when it was locked (after you have looked at it)")
	}
	if cmd == "block" {
		fs.StringVar(&f.dur, "for", "", "how long (e.g. 2h, 7d; default: block_for of the daemon's config)")
	}
	if cmd == "incidents" {
		fs.StringVar(&f.acct, "account", "", "only this account's incidents")
		fs.IntVar(&f.limit, "limit", 50, "at most this many")
	}
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), adminUsage)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args, stdout)
	if err != nil {
		return err
	}
	need := map[string]int{"status": 0, "locks": 0, "blocks": 0, "incidents": 0, "audit": 0, "report": 1, "lock": 1, "unlock": 1, "block": 1, "unblock": 1}[cmd]
	if len(pos) != need {
		fmt.Fprintf(stderr, "mailwarden %s: expected %d argument(s), got %d\n", cmd, need, len(pos))
		fs.Usage()
		return errUsage
	}
	cl, err := f.client()
	if err != nil {
		return err
	}
	var out any
	switch cmd {
	case "status":
		var s daemon.Status
		err = cl.do("GET", "/v1/status", nil, &s)
		out = s
		if err == nil && !f.asJSON {
			fmt.Fprintf(stdout, "node %s, up since %s\nstate %s\n%d decisions, %d incidents since start, %d keys tracked\n%d accounts locked, %d addresses blocked\n",
				s.Node, s.Started.Local().Format(time.RFC3339), s.StateFile, s.Decisions, s.Incidents, s.TrackedKeys, s.Locks, s.Blocks)
			if s.DryRun {
				fmt.Fprintln(stdout, "dry run: nothing is enforced")
			}
			if s.ResponsesGivenUp > 0 {
				fmt.Fprintf(stdout, "%d lock responses or notifications given up (responder queue full)\n", s.ResponsesGivenUp)
			}
			for _, c := range s.Notifications {
				fmt.Fprintf(stdout, "notify %s %s: %d sent, %d failed attempts, %d given up\n", c.Channel, report.Safe(c.Target), c.Sent, c.Failed, c.GivenUp)
			}
			return nil
		}
	case "locks":
		var ls []store.Lock
		err = cl.do("GET", "/v1/locks", nil, &ls)
		out = ls
		if err == nil && !f.asJSON {
			tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACCOUNT\tSINCE\tBY\tREASON")
			for _, l := range ls {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", report.Safe(l.Account), l.Since.Local().Format("2006-01-02 15:04:05"), report.Safe(l.Actor), report.Safe(l.Reason))
			}
			return tw.Flush()
		}
	case "blocks":
		var bs []store.Block
		err = cl.do("GET", "/v1/blocks", nil, &bs)
		out = bs
		if err == nil && !f.asJSON {
			tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tUNTIL\tOFFENCE\tBY\tREASON")
			for _, b := range bs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", b.IP, b.Until.Local().Format("2006-01-02 15:04:05"), b.Offence, report.Safe(b.Actor), report.Safe(b.Reason))
			}
			return tw.Flush()
		}
	case "incidents":
		var is []store.Incident
		q := url.Values{"limit": {fmt.Sprint(f.limit)}}
		if f.acct != "" {
			q.Set("account", f.acct)
		}
		err = cl.do("GET", "/v1/incidents?"+q.Encode(), nil, &is)
		out = is
		if err == nil && !f.asJSON {
			for _, in := range is {
				dry := ""
				if in.DryRun {
					dry = " (dry run)"
				}
				fmt.Fprintf(stdout, "#%d %s  %s  %s  %s %s%s\n", in.ID, in.DetectedAt.Local().Format("2006-01-02 15:04:05"), in.Detector, in.Action, report.Safe(in.Account), in.IP, dry)
				for _, r := range in.Responses {
					fmt.Fprintf(stdout, "    %s\n", responseLine(r))
				}
			}
			return nil
		}
	case "audit":
		var as []store.AuditEntry
		err = cl.do("GET", "/v1/audit", nil, &as)
		out = as
		if err == nil && !f.asJSON {
			for _, a := range as {
				fmt.Fprintf(stdout, "%s  %-9s %-8s %s  %s\n", a.At.Local().Format("2006-01-02 15:04:05"), report.Safe(a.Actor), a.Action, report.Safe(a.Target), report.Safe(a.Reason))
			}
			return nil
		}
	case "report":
		var rep struct {
			Account   string           `json:"account"`
			Locked    bool             `json:"locked"`
			Tables    string           `json:"tables"`
			Incidents []store.Incident `json:"incidents"`
		}
		err = cl.do("GET", "/v1/report/"+url.PathEscape(pos[0]), nil, &rep)
		out = rep
		if err == nil && !f.asJSON {
			state := "not locked"
			if rep.Locked {
				state = "LOCKED"
			}
			fmt.Fprintf(stdout, "account %s: %s\n", report.Safe(rep.Account), state)
			fmt.Fprint(stdout, rep.Tables)
			for _, in := range rep.Incidents {
				fmt.Fprintf(stdout, "incident #%d %s  %s  %s %s\n", in.ID, in.DetectedAt.Local().Format("2006-01-02 15:04:05"), in.Detector, in.Action, in.IP)
			}
			return nil
		}
	case "lock":
		if f.reason == "" {
			return fmt.Errorf("--reason is required: it goes to the audit log")
		}
		err = cl.do("POST", "/v1/locks", map[string]string{"account": pos[0], "reason": f.reason}, &out)
	case "unlock":
		if f.release && f.purge {
			return fmt.Errorf("--release and --purge exclude each other")
		}
		q := url.Values{}
		if f.reason != "" {
			q.Set("reason", f.reason)
		}
		if f.release {
			q.Set("queued", "release")
		}
		if f.purge {
			q.Set("queued", "purge")
		}
		err = cl.do("DELETE", "/v1/locks/"+url.PathEscape(pos[0])+"?"+q.Encode(), nil, &out)
	case "block":
		if f.reason == "" {
			return fmt.Errorf("--reason is required: it goes to the audit log")
		}
		err = cl.do("POST", "/v1/blocks", map[string]string{"ip": pos[0], "for": f.dur, "reason": f.reason}, &out)
	case "unblock":
		q := url.Values{}
		if f.reason != "" {
			q.Set("reason", f.reason)
		}
		err = cl.do("DELETE", "/v1/blocks/"+url.PathEscape(pos[0])+"?"+q.Encode(), nil, &out)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// register adds the flags every admin command has.
func (f *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "admin", "", "admin address of the daemon: unix:/path or host:port (default: serve.admin of --config, else unix:/run/mailwarden/admin.sock)")
	fs.StringVar(&f.token, "token", os.Getenv("MAILWARDEN_ADMIN_TOKEN"), "admin token for a TCP admin address (default: $MAILWARDEN_ADMIN_TOKEN)")
	fs.StringVar(&f.cfg, "config", "", "configuration file to take the admin address from")
	fs.BoolVar(&f.asJSON, "json", false, "print the daemon's JSON answer as is")
}

// client returns a client for the daemon the flags name.
func (f *adminFlags) client() (*adminClient, error) {
	addr := f.addr
	if addr == "" {
		addr = "unix:/run/mailwarden/admin.sock"
		if f.cfg != "" {
			c, err := config.Load(f.cfg)
			if err != nil {
				return nil, err
			}
			addr = c.Serve.Admin
		}
	}
	return newAdminClient(addr, f.token), nil
}

// parseFlags parses args; -h prints the usage to stdout (and returns
// flag.ErrHelp), a bad flag returns errUsage (the flag package has said why).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(stdout)
			fs.Usage()
			return err
		}
		return errUsage
	}
	return nil
}

// parseInterleaved parses flags that may come after the arguments ("lock
// joe@x --reason R") and returns the arguments.
func parseInterleaved(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	var pos []string
	for rest := args; ; {
		if err := parseFlags(fs, rest, stdout); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}

type adminClient struct {
	base  string
	token string
	hc    *http.Client
	addr  string
}

func newAdminClient(addr, token string) *adminClient {
	c := &adminClient{addr: addr, token: token, base: "http://mailwarden"}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			if p, ok := strings.CutPrefix(addr, "unix:"); ok {
				return d.DialContext(ctx, "unix", p)
			}
			return d.DialContext(ctx, "tcp", addr)
		},
	}
	c.hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return c
}

func (c *adminClient) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the daemon at %s: %v (is mailwarden serve running? see --admin)", c.addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("daemon answered %s", resp.Status)
	}
	return json.Unmarshal(b, out)
}

// responseLine says what was done about an incident, or in a dry run what
// would have been done.
func responseLine(r store.Response) string {
	state := "done"
	switch {
	case r.DryRun:
		state = "would"
	case !r.OK:
		state = "FAILED"
	}
	return fmt.Sprintf("%-6s %-7s %s", state, r.Kind, report.Safe(r.Detail))
}

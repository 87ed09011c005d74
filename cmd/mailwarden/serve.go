package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
	"github.com/mailwarden/mailwarden/internal/daemon"
	"github.com/mailwarden/mailwarden/internal/dovecotpolicy"
	"github.com/mailwarden/mailwarden/internal/event"
	"github.com/mailwarden/mailwarden/internal/eximpolicy"
	"github.com/mailwarden/mailwarden/internal/postfixpolicy"
	"github.com/mailwarden/mailwarden/internal/tail"
)

const serveUsage = `Usage: mailwarden serve [flags]

Runs the daemon: answers Postfix (policy delegation), Exim (${readsocket})
and Dovecot (auth policy) in the same request, follows log files for what no
in-band hook sees, keeps locks, blocks, incidents and an audit log in a
SQLite file under the state directory, and serves the admin API that the
status/locks/lock/unlock/block/... commands use.

Addresses are unix:/path or host:port; an empty address turns a listener
off. Flags override the configuration file. SIGHUP reloads the
configuration (detectors, allowlists, texts apply at once; addresses need a
restart); SIGINT/SIGTERM stop gracefully.

Flags:
`

type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

func serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (YAML; default: built-in defaults, see etc/mailwarden.yaml)")
	postfix := fs.String("postfix", "", "Postfix policy listener address (default: serve.postfix; \"\" turns it off)")
	exim := fs.String("exim", "", "Exim readsocket listener address (default: serve.exim; \"\" turns it off)")
	dovecot := fs.String("dovecot", "", "Dovecot auth policy listener address, TCP (default: serve.dovecot; \"\" turns it off)")
	admin := fs.String("admin", "", "admin API address (default: serve.admin; \"\" turns it off)")
	stateDir := fs.String("state-dir", "", "state directory (default: serve.state_dir)")
	logFormat := fs.String("log-format", "text", "log format on stderr: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), serveUsage)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", *logLevel)
	}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})
	case "json":
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl})
	default:
		return fmt.Errorf("--log-format %q: use text or json", *logFormat)
	}
	log := slog.New(h)

	load := func() (*config.Config, error) {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return nil, err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, o := range []struct {
			name string
			val  string
			dst  *string
		}{{"postfix", *postfix, &cfg.Serve.Postfix}, {"exim", *exim, &cfg.Serve.Exim}, {"dovecot", *dovecot, &cfg.Serve.Dovecot}, {"admin", *admin, &cfg.Serve.Admin}} {
			if set[o.name] {
				*o.dst = o.val
			}
		}
		if *stateDir != "" {
			cfg.Serve.StateDir = *stateDir
		}
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, daemon.Options{Log: log})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go d.Run(ctx)

	var servers []server
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	start := func(name, addr string, mode os.FileMode, s server) error {
		ln, err := daemon.Listen(addr, mode)
		if err != nil {
			return fmt.Errorf("%s listener %s: %w", name, addr, err)
		}
		servers = append(servers, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s listener: %w", name, err)
			}
		}()
		log.Info("listening", "listener", name, "addr", addr)
		return nil
	}
	fail := func(err error) error {
		stop()
		for _, s := range servers {
			s.Close()
		}
		d.Close()
		return err
	}
	t := cfg.Serve.Texts
	node := cfg.Serve.Node
	tarpit := cfg.Serve.TarpitSeconds
	if tarpit == 0 {
		tarpit = -1 // the listeners read 0 as "their default"; the config's 0 means off
	}
	if cfg.Serve.Postfix != "" {
		s, err := postfixpolicy.New(postfixpolicy.Config{Decider: d, Logger: log.With("listener", "postfix"), Node: node,
			BlockedText: t.Blocked, LockedText: t.Locked, DeferText: t.Defer, HoldText: t.Hold})
		if err != nil {
			return fail(err)
		}
		if err := start("postfix", cfg.Serve.Postfix, 0o666, s); err != nil {
			return fail(err)
		}
	}
	if cfg.Serve.Exim != "" {
		s, err := eximpolicy.New(eximpolicy.Config{Decider: d, Logger: log.With("listener", "exim"), Node: node,
			TarpitSeconds: tarpit, BlockedText: t.Blocked, LockedText: t.Locked, DeferText: t.Defer, HoldText: t.Hold})
		if err != nil {
			return fail(err)
		}
		if err := start("exim", cfg.Serve.Exim, 0o666, s); err != nil {
			return fail(err)
		}
	}
	if cfg.Serve.Dovecot != "" {
		s, err := dovecotpolicy.New(dovecotpolicy.Config{Decider: d, Logger: log.With("listener", "dovecot"), Node: node,
			APIKey: cfg.Serve.DovecotAPIKey, RejectMessage: t.Locked, BlockedMessage: t.Blocked, TarpitSeconds: tarpit})
		if err != nil {
			return fail(err)
		}
		if err := start("dovecot", cfg.Serve.Dovecot, 0o660, s); err != nil {
			return fail(err)
		}
	}
	if cfg.Serve.Admin != "" {
		token := cfg.Serve.AdminToken
		if _, unix := cutUnix(cfg.Serve.Admin); !unix && token == "" {
			return fail(fmt.Errorf("serve.admin %s is a TCP address: set serve.admin_token (the admin API never runs unauthenticated on TCP)", cfg.Serve.Admin))
		}
		hs := &http.Server{Handler: d.AdminHandler(token), ConnContext: daemon.ConnContext, ReadHeaderTimeout: 10 * time.Second}
		if err := start("admin", cfg.Serve.Admin, 0o600, httpServer{hs}); err != nil {
			return fail(err)
		}
	}
	if len(cfg.Serve.Logs) > 0 {
		offs, err := tail.OpenFileOffsets(cfg.Serve.StateDir + "/log-positions.json")
		if err != nil {
			return fail(err)
		}
		fol, err := tail.New(tail.Config{Paths: cfg.Serve.Logs, Store: offs, Loc: time.Local,
			Logf: func(f string, a ...any) { log.Warn(fmt.Sprintf(f, a...), "source", "tail") }}, func(ev *event.Event) { d.Decide(ev) })
		if err != nil {
			return fail(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fol.Run(ctx); err != nil {
				log.Error("log follower stopped", "err", err)
			}
		}()
		log.Info("following logs", "files", len(cfg.Serve.Logs))
	}

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	log.Info("mailwarden serving", "state", cfg.Serve.StateDir, "dry_run", cfg.DryRun)
	var runErr error
loop:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				nc, err := load()
				if err != nil {
					log.Error("reload failed; keeping the running configuration", "err", err)
					continue
				}
				d.Reconfigure(nc)
				log.Info("configuration reloaded (listener addresses and state_dir need a restart)")
				continue
			}
			log.Info("stopping", "signal", s.String())
			break loop
		case err := <-errc:
			log.Error("listener failed", "err", err)
			runErr = err
			break loop
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	stop()
	wg.Wait()
	if err := d.Close(); err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped")
	return runErr
}

type httpServer struct{ *http.Server }

func (h httpServer) Serve(ln net.Listener) error { return h.Server.Serve(ln) }

func cutUnix(addr string) (string, bool) {
	if len(addr) > 5 && addr[:5] == "unix:" {
		return addr[5:], true
	}
	return addr, false
}

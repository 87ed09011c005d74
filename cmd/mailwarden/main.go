// Command mailwarden protects Exim, Postfix and Dovecot mail services
// against account compromise: `analyze` replays logs through the detection
// engine and prints incidents; `report` prints the per-account address
// table for any account and day; `serve` runs the daemon that answers the
// mail servers in-band; the admin commands talk to it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	_ "time/tzdata" // --tz works on systems without a zoneinfo database
)

const usage = `mailwarden protects mail services (Exim, Postfix, Dovecot) against account compromise.

Usage:
  mailwarden <command> [flags] [FILE...]

Commands:
  analyze   replay mail logs through the detection engine and print incidents
  report    print the per-account address table for an account and day
            (report --account A FILE... replays logs; report A asks the daemon)
  serve     run the daemon: in-band answers for Postfix, Exim and Dovecot
  help      show help for a command: mailwarden help analyze

Admin commands (talk to a running daemon; mailwarden status --help):
  status, locks, blocks, incidents [--account A], report A,
  lock A --reason R, unlock A, block IP [--for D] --reason R, unblock IP, audit,
  history A (an account's 30 days, usual day and thresholds)

Flags:
  -h, --help   show this help

Logs may be Exim main logs, Postfix or Dovecot syslog files, or a mail.log
mixing all three; .gz files and "-" (standard input) are read too. Run
"mailwarden <command> --help" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "analyze":
		err = analyze(rest, stdout, stderr)
	case "report":
		// "report A" asks the daemon; "report --account A FILE..." replays logs.
		if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && !isFile(rest[0]) {
			err = adminCmd("report", rest, stdout, stderr)
		} else {
			err = reportCmd(rest, stdout, stderr)
		}
	case "serve":
		err = serve(rest, stdout, stderr)
	case "status", "locks", "blocks", "incidents", "lock", "unlock", "block", "unblock", "audit":
		err = adminCmd(cmd, rest, stdout, stderr)
	case "history":
		err = historyCmd(rest, stdout, stderr)
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	case "help":
		if len(rest) == 1 {
			return run([]string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mailwarden: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "mailwarden %s: %v\n", cmd, err)
		return 1
	}
}

var errUsage = errors.New("usage")

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

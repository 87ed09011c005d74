// Command mailwarden protects Exim, Postfix and Dovecot mail services
// against account compromise. This build has the log replay commands:
// `analyze` replays logs through the detection engine and prints incidents;
// `report` prints the per-account address table for any account and day.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	_ "time/tzdata" // --tz works on systems without a zoneinfo database
)

const usage = `mailwarden protects mail services (Exim, Postfix, Dovecot) against account compromise.

Usage:
  mailwarden <command> [flags] [FILE...]

Commands:
  analyze   replay mail logs through the detection engine and print incidents
  report    print the per-account address table for an account and day
  help      show help for a command: mailwarden help analyze

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
		err = reportCmd(rest, stdout, stderr)
	case "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	case "help":
		if len(rest) == 1 && (rest[0] == "analyze" || rest[0] == "report") {
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

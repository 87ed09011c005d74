package queuehold

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailwarden/mailwarden/internal/config"
)

func TestValidIDs(t *testing.T) {
	postfix := []string{"3F1A2B4C5D", "C3CD21F3E90", "4A8C3C0B9D", "ABCDEF", "3Pt2mN2VXxznjll", "4dkWBy4Vz3z4wTR", "4dkWBy4Vz3zyyyyyyy"}
	exim := []string{"1xWxn8-0003rG-32", "1rB8cN-0003rI-38", "1rB8cN-00000000Dl9-3Aq2", "1RB8CN-00000000DL9-3AQ2"}
	bad := []string{"", "ALL", "-", "hold", "3f1a2b4c5d", "ABCDE", "3F1A 2B4C", "3F1A2B4C5D\n", "../3F1A2B", "3F1A2B/4C",
		"3Pt2mN2VXxznjlA", "3Pt2mN2VXx", "3Pt2mN2VXxz", "zzzzzzzzzzz", "1xWxn8-0003rG-3", "1xWxn8-0003rG-32x", "1xWxn8_0003rG-32",
		"-Mrm", "1xWxn8-0003rG-32 1xWxn8-0003rI-38", "1rB8cN-00000000Dl9-3Aq", strings.Repeat("A", 22)}
	for _, id := range postfix {
		if !ValidPostfixID(id) || !ValidID("postfix", id) || ValidEximID(id) || !ValidID("", id) {
			t.Errorf("%q: want a Postfix id only", id)
		}
	}
	for _, id := range exim {
		if !ValidEximID(id) || !ValidID("exim", id) || ValidPostfixID(id) || !ValidID("", id) {
			t.Errorf("%q: want an Exim id only", id)
		}
	}
	for _, id := range bad {
		if ValidID("", id) || ValidID("postfix", id) || ValidID("exim", id) {
			t.Errorf("%q: accepted", id)
		}
	}
	if ValidID("sendmail", "3F1A2B4C5D") {
		t.Error("an unknown MTA accepts ids")
	}
}

func TestNew(t *testing.T) {
	if q, err := New(config.QueueHold{}); q != nil || err != nil {
		t.Fatalf("mta \"\": %v, %v", q, err)
	}
	for _, c := range []config.QueueHold{
		{MTA: "postfix", Postsuper: "postsuper"},
		{MTA: "exim", Exim: "exim4"},
		{MTA: "qmail"},
	} {
		if q, err := New(c); err == nil {
			t.Errorf("New(%+v) = %v, want an error", c, q)
		}
	}
	if q, err := New(config.QueueHold{MTA: "postfix", Postsuper: "/usr/sbin/postsuper"}); err != nil || q == nil {
		t.Errorf("postfix: %v, %v", q, err)
	}
	if q, err := New(config.QueueHold{MTA: "exim", Exim: "/usr/sbin/exim4"}); err != nil || q == nil {
		t.Errorf("exim: %v, %v", q, err)
	}
}

// script writes an executable shell script (a stand-in for postsuper or
// exim) in a fresh folder and returns its path and the folder.
func script(t *testing.T, name, body string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nD='"+dir+"'\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p, dir
}

// fakePostsuper answers like postsuper: the messages whose files exist in
// $D/queue/<id> are acted on and reported on standard error, the others
// silently skipped. It records its arguments and standard input.
const fakePostsuper = `printf '%s\n' "$@" > "$D/args"
cat > "$D/stdin"
verb=
case "$*" in
*-h*) verb='placed on hold'; sum='Placed on hold' ;;
*-H*) verb='released from hold'; sum='Released from hold' ;;
*-d*) verb=removed; sum=Deleted ;;
esac
n=0
while read -r id; do
	if [ -e "$D/queue/$id" ]; then
		echo "postsuper: $id: $verb" >&2
		n=$((n+1))
	fi
done < "$D/stdin"
if [ $n -gt 0 ]; then
	s=s; [ $n -eq 1 ] && s=
	echo "postsuper: $sum: $n message$s" >&2
fi
exit 0
`

func TestPostfix(t *testing.T) {
	bin, dir := script(t, "postsuper", fakePostsuper)
	os.Mkdir(filepath.Join(dir, "queue"), 0o755)
	present := []string{"3F1A2B4C5D", "4dkWBy4Vz3z4wTR"}
	for _, id := range present {
		os.WriteFile(filepath.Join(dir, "queue", id), nil, 0o644)
	}
	q, err := NewPostfix(bin, Options{Args: []string{"-c", "/etc/postfix-out"}})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"3F1A2B4C5D", "C3CD21F3E90", "4dkWBy4Vz3z4wTR", "3F1A2B4C5D"}
	for _, c := range []struct {
		action string
		call   func(context.Context, []string) (Result, error)
		args   string
	}{
		{"hold", q.Hold, "-c /etc/postfix-out -h -"},
		{"release", q.Release, "-c /etc/postfix-out -H -"},
		{"purge", q.Purge, "-c /etc/postfix-out -d - hold"},
	} {
		res, err := c.call(context.Background(), ids)
		if err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		if res.Action != c.action || !slices.Equal(res.IDs, present) || res.Done != 2 || res.Missing != 1 || len(res.Failed) != 0 {
			t.Fatalf("%s: %+v", c.action, res)
		}
		if !strings.HasPrefix(res.Detail, "2 ") || strings.Contains(res.Detail, "counted") {
			t.Errorf("%s: detail %q", c.action, res.Detail)
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		if got := strings.Join(strings.Fields(string(args)), " "); got != c.args {
			t.Errorf("%s: arguments %q, want %q", c.action, got, c.args)
		}
		// Each id once, one per line.
		if stdin, _ := os.ReadFile(filepath.Join(dir, "stdin")); string(stdin) != "3F1A2B4C5D\nC3CD21F3E90\n4dkWBy4Vz3z4wTR\n" {
			t.Errorf("%s: standard input %q", c.action, stdin)
		}
	}

	// A malformed id stops everything before postsuper runs.
	os.Remove(filepath.Join(dir, "args"))
	for _, bad := range []string{"ALL", "-", "3F1A2B4C5D\nALL", "deferred"} {
		if res, err := q.Purge(context.Background(), []string{"3F1A2B4C5D", bad}); err == nil || res.Done != 0 {
			t.Errorf("Purge with %q: %+v, %v", bad, res, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "args")); err == nil {
		t.Fatal("postsuper ran with a malformed id")
	}
	if res, err := q.Hold(context.Background(), nil); err != nil || res.Done != 0 || res.Missing != 0 {
		t.Fatalf("no ids: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "args")); err == nil {
		t.Fatal("postsuper ran without ids")
	}
}

func TestPostfixFailures(t *testing.T) {
	bin, _ := script(t, "postsuper", "echo 'postsuper: fatal: use of this command is reserved for the superuser' >&2\nexit 1\n")
	q, _ := NewPostfix(bin, Options{})
	_, err := q.Hold(context.Background(), []string{"3F1A2B4C5D"})
	if err == nil || !strings.Contains(err.Error(), "exit code 1: postsuper: fatal: use of this command is reserved for the superuser") {
		t.Fatalf("err = %v", err)
	}

	bin, _ = script(t, "postsuper", "cat >/dev/null\nsleep 10\n")
	q, _ = NewPostfix(bin, Options{Timeout: 300 * time.Millisecond})
	_, err = q.Hold(context.Background(), []string{"3F1A2B4C5D"})
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("err = %v", err)
	}

	// Control characters in the tool's output do not reach the error.
	bin, _ = script(t, "postsuper", "printf 'postsuper: fatal: bad\\033[31m\\nnews\\n' >&2\nexit 1\n")
	q, _ = NewPostfix(bin, Options{})
	_, err = q.Release(context.Background(), []string{"3F1A2B4C5D"})
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\n") || !strings.Contains(err.Error(), "fatal: bad [31m news") {
		t.Fatalf("err = %q", err)
	}
}

// fakeExim answers -Mf, -Mt and -Mrm like Exim 4.96, from files: $D/q/<id>
// is a queued message, <id>.frozen marks it frozen, <id>.locked as being
// delivered. It counts its runs in $D/runs.
const fakeExim = `echo run >> "$D/runs"
flag=$1; shift
rc=0
for id in "$@"; do
	m="$D/q/$id"
	if [ ! -e "$m" ]; then
		echo "Spool data file for $id does not exist"
		if [ "$flag" = -Mrm ]; then
			echo "Continuing, to ensure all files removed"
			echo "Spool read error for $id-H: No such file or directory"
			echo "Continuing to ensure all files removed"
			echo "Message $id has been removed or did not exist"
		fi
		rc=1; continue
	fi
	if [ -e "$m.locked" ]; then echo "Message $id is locked"; rc=1; continue; fi
	case $flag in
	-Mf) if [ -e "$m.frozen" ]; then echo "Message $id is already frozen"; rc=1
	     else touch "$m.frozen"; echo "Message $id is now frozen"; fi ;;
	-Mt) if [ -e "$m.frozen" ]; then rm "$m.frozen"; echo "Message $id is no longer frozen"
	     else echo "Message $id is not frozen"; rc=1; fi ;;
	-Mrm) rm -f "$m" "$m.frozen"; echo "Message $id has been removed" ;;
	*) echo "exim: unknown option $flag" >&2; exit 2 ;;
	esac
done
exit $rc
`

func TestExim(t *testing.T) {
	bin, dir := script(t, "exim4", fakeExim)
	os.Mkdir(filepath.Join(dir, "q"), 0o755)
	var ids []string
	for i := range 250 {
		id := fmt.Sprintf("1xWxn8-%06d-32", i)
		ids = append(ids, id)
		if i%10 != 9 {
			os.WriteFile(filepath.Join(dir, "q", id), nil, 0o644)
		}
	}
	locked := ids[3]
	os.WriteFile(filepath.Join(dir, "q", locked+".locked"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "q", ids[4]+".frozen"), nil, 0o644) // already frozen
	q, err := NewExim(bin, Options{})
	if err != nil {
		t.Fatal(err)
	}

	res, err := q.Hold(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	// 25 gone, 1 locked, 224 frozen (one of them already was).
	if res.Done != 224 || len(res.IDs) != 224 || res.Missing != 25 || !slices.Equal(res.Failed, []string{locked}) || slices.Contains(res.IDs, locked) {
		t.Fatalf("hold: done %d missing %d failed %v: %s", res.Done, res.Missing, res.Failed, res.Detail)
	}
	if runs, _ := os.ReadFile(filepath.Join(dir, "runs")); strings.Count(string(runs), "run") != 3 {
		t.Errorf("%d runs for 250 ids, want 3 (batches of %d)", strings.Count(string(runs), "run"), eximBatch)
	}
	for _, id := range res.IDs {
		if _, err := os.Stat(filepath.Join(dir, "q", id+".frozen")); err != nil {
			t.Fatalf("%s reported frozen but is not", id)
		}
	}

	res, err = q.Release(context.Background(), ids[:20])
	if err != nil || res.Done != 17 || res.Missing != 2 || len(res.Failed) != 1 {
		t.Fatalf("release: %+v, %v", res, err)
	}
	res, err = q.Purge(context.Background(), ids[:20])
	if err != nil || res.Done != 17 || res.Missing != 2 || len(res.Failed) != 1 {
		t.Fatalf("purge: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "q", ids[0])); err == nil {
		t.Fatal("purged message still there")
	}
	// Purging again: all gone (or locked), no error.
	res, err = q.Purge(context.Background(), ids[:3])
	if err != nil || res.Done != 0 || res.Missing != 3 {
		t.Fatalf("purge again: %+v, %v", res, err)
	}

	if _, err := q.Hold(context.Background(), []string{ids[0], "1xWxn8-0003rG-32; rm -rf /"}); err == nil {
		t.Fatal("a malformed id was accepted")
	}
}

func TestEximArgsAndFailures(t *testing.T) {
	bin, dir := script(t, "exim4", `printf '%s\n' "$@" > "$D/args"; shift 2; for id in "$@"; do echo "Message $id is now frozen"; done`)
	q, _ := NewExim(bin, Options{Args: []string{"-C", "/etc/exim4/test.conf"}})
	res, err := q.Hold(context.Background(), []string{"1rB8cN-00000000Dl9-3Aq2"})
	if err != nil || res.Done != 1 {
		t.Fatalf("%+v, %v", res, err)
	}
	if args, _ := os.ReadFile(filepath.Join(dir, "args")); string(args) != "-C\n/etc/exim4/test.conf\n-Mf\n1rB8cN-00000000Dl9-3Aq2\n" {
		t.Fatalf("arguments %q", args)
	}

	bin, _ = script(t, "exim4", "echo 'exim: permission denied' >&2\nexit 1\n")
	q, _ = NewExim(bin, Options{})
	res, err = q.Hold(context.Background(), []string{"1xWxn8-0003rG-32"})
	if err == nil || !strings.Contains(err.Error(), "no answer for 1 of 1 ids (1xWxn8-0003rG-32): exim: permission denied") || res.Done != 0 {
		t.Fatalf("%+v, %v", res, err)
	}

	bin, _ = script(t, "exim4", "sleep 10\n")
	q, _ = NewExim(bin, Options{Timeout: 300 * time.Millisecond})
	if _, err := q.Release(context.Background(), []string{"1xWxn8-0003rG-32"}); err == nil {
		t.Fatal("hung exim: no error")
	}
}

#!/usr/bin/env bash
# Log-replay benchmark: how fast `mailwarden analyze` replays a large mixed
# mail log, on all cores and on one, against fail2ban-regex running its stock
# postfix, dovecot and exim filters over the same file.
#
#   bench/analyze.sh                   # 5 000 000 lines, seed 1
#   LINES=1000000 SEED=3 bench/analyze.sh
#
# Knobs (environment):
#   LINES       log size in lines (default 5000000)
#   SEED        generator seed (default 1)
#   OUT         work folder (default bench/out; git-ignored)
#   MW_TIMEOUT  limit per mailwarden run, seconds (default 1800)
#   F2B_BUDGET  limit for the three fail2ban-regex runs together, seconds
#               (default 3600)
#   F2B_SAMPLE  lines timed first to estimate fail2ban's full run (default 200000)
#   SKIP_F2B=1  skip fail2ban
#
# fail2ban-regex runs one filter per pass, so the file is read three times;
# fail2ban's lines/s is the file's lines over the sum of the three passes,
# which is what it costs to watch these three services with it. It is given
# its fastest sensible configuration: explicit anchored date patterns,
# --no-check-all (stop at the first matching regex, as fail2ban-server does),
# no DNS, no printing of missed lines. postfix runs in mode=extra (SASL
# failures and RCPT rejects in one pass). Exim writes to syslog with its own
# timestamp after the syslog prefix, which the stock exim filter cannot skip,
# so its date pattern spans both stamps.
#
# Before running fail2ban on the whole file, it is timed on the first
# F2B_SAMPLE lines; if the estimate for the whole file exceeds F2B_BUDGET,
# fail2ban runs on the longest prefix that fits and the script says so.
# Lines per second stay comparable; matched counts then cover the prefix only.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
OUT=${OUT:-$BENCH/out}
LINES=${LINES:-5000000}
SEED=${SEED:-1}
YEAR=2026
MW_TIMEOUT=${MW_TIMEOUT:-1800}
F2B_BUDGET=${F2B_BUDGET:-3600}
F2B_SAMPLE=${F2B_SAMPLE:-200000}
SKIP_F2B=${SKIP_F2B:-0}

mkdir -p "$OUT"
LOG=$OUT/mail-s$SEED-$LINES.log
STATS=$LOG.stats.json
TRUTH=$LOG.truth.jsonl

say() { printf '%s\n' "$*"; }
hr() { say ""; say "== $* =="; }
die() { say "analyze.sh: $*" >&2; exit 1; }

# calc EXPR: floating-point arithmetic through awk.
calc() { awk "BEGIN { v = $1; print v }"; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "" || v == "-") print "-"; else printf f, v }'; }

# ---- Prerequisites ----

POLICY_CREATED=0
cleanup() {
	if [ "$POLICY_CREATED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# apt_install PKG: install a Debian package without starting its services.
apt_install() {
	command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available"
	[ "$(id -u)" = 0 ] || die "$1 is missing; run as root or install it: apt-get install -y $1"
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		POLICY_CREATED=1
	fi
	say "installing Debian package $1 (services are not started)"
	if ! DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$1" >"$OUT/apt-$1.log" 2>&1; then
		timeout 300 apt-get update -q >>"$OUT/apt-$1.log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$1" >>"$OUT/apt-$1.log" 2>&1 ||
			die "apt-get install $1 failed; see $OUT/apt-$1.log"
	fi
	if [ "$POLICY_CREATED" = 1 ]; then
		rm -f /usr/sbin/policy-rc.d
		POLICY_CREATED=0
	fi
}

[ -x /usr/bin/time ] || apt_install time
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (expected /usr/local/go/bin)"

# timed NAME LIMIT CMD...: run CMD under /usr/bin/time -v with a time limit.
# stdout goes to $OUT/NAME.out unless NAME_STDOUT is set, stderr to
# $OUT/NAME.err. Sets RC, WALL (s), CPU (user+sys s) and RSS (MB).
timed() {
	local name=$1 limit=$2
	shift 2
	local tf=$OUT/$name.time stdout=${TIMED_STDOUT:-$OUT/$name.out}
	rm -f "$tf"
	RC=0
	timeout -k 10 "$limit" /usr/bin/time -v -o "$tf" "$@" >"$stdout" 2>"$OUT/$name.err" || RC=$?
	WALL=- CPU=- RSS=-
	if [ -s "$tf" ]; then
		WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s }' "$tf")
		CPU=$(awk -F': ' '/User time|System time/ { s += $2 } END { print s }' "$tf")
		RSS=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$tf")
	fi
	if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
		say "  $name: stopped after the ${limit}s limit"
	fi
}

# ---- Machine ----

hr "Machine"
say "cpus: $(nproc)   $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
say "memory: $(awk '/MemTotal/ { printf "%.1f GB", $2 / 1048576 }' /proc/meminfo)   go: $(go version | cut -d' ' -f3)"
LOAD=$(cut -d' ' -f1 /proc/loadavg)
say "load average (1 min): $LOAD"
if [ "$(calc "$LOAD > 0.5 * $(nproc)")" = 1 ]; then
	say "WARNING: the machine is busy; timings will be noisy. Rerun on an idle machine for figures to quote."
fi

# ---- Build ----

hr "Build"
cd "$ROOT"
timeout 600 go build -o "$OUT/genlog" ./bench/genlog
say "built $OUT/genlog"
MW="" MW_STATE=""
if [ -d "$ROOT/cmd/mailwarden" ]; then
	if timeout 600 go build -o "$OUT/mailwarden" ./cmd/mailwarden 2>"$OUT/build-mailwarden.err"; then
		MW=$OUT/mailwarden
		say "built $MW"
	else
		MW_STATE="build failed (see $OUT/build-mailwarden.err)"
		say "ERROR: building ./cmd/mailwarden failed; the mailwarden runs are skipped:"
		sed 's/^/  /' "$OUT/build-mailwarden.err" | head -n 20
	fi
else
	MW_STATE="not built (./cmd/mailwarden missing)"
	say "./cmd/mailwarden does not exist yet: the mailwarden runs are skipped"
fi

# ---- Log ----

hr "Log"
# Top-level number from the generator's pretty-printed stats file.
stat_num() { sed -n "s/^  \"$1\": \([0-9]*\),\{0,1\}\$/\1/p" "$STATS" | head -n1; }
# Number from a nested object of the stats file: stat_sub OBJECT KEY.
stat_sub() {
	awk -v obj="\"$1\"" -v key="\"$2\"" '
		index($0, obj ":") { inside = 1; next }
		inside && /}/ { inside = 0 }
		inside && index($0, key ":") { gsub(/[^0-9]/, "", $2); print $2; exit }' "$STATS"
}

GENV=$("$OUT/genlog" -version)
REUSE=0
if [ -s "$LOG" ] && [ -s "$STATS" ] && [ -s "$TRUTH" ] &&
	[ "$(stat_num version)" = "$GENV" ] && [ "$(stat_num seed)" = "$SEED" ] &&
	[ "$(stat_num lines)" = "$LINES" ] && [ "$(stat_num bytes)" = "$(stat -c %s "$LOG")" ]; then
	REUSE=1
fi
if [ "$REUSE" = 1 ]; then
	say "reusing $LOG (seed $SEED, $LINES lines, generator v$GENV)"
else
	rm -f "$LOG" "$STATS" "$TRUTH"
	say "generating $LINES lines, seed $SEED ..."
	TIMED_STDOUT=/dev/null timed genlog 900 "$OUT/genlog" -seed "$SEED" -lines "$LINES" -year "$YEAR" \
		-o "$LOG" -stats "$STATS" -truth "$TRUTH"
	[ "$RC" = 0 ] || { cat "$OUT/genlog.err" >&2; die "genlog failed"; }
	say "generated in ${WALL}s ($(fmt "$(calc "$LINES / $WALL")" '%.0f') lines/s)"
fi
BYTES=$(stat -c %s "$LOG")
say "file: $LOG"
say "size: $(fmt "$(calc "$BYTES / 1048576")" '%.0f') MB, $(sed -n 's/^  "first": "\(.*\)",$/\1/p' "$STATS") .. $(sed -n 's/^  "last": "\(.*\)",$/\1/p' "$STATS")"
say "lines by daemon: postfix $(stat_sub lines_by_daemon postfix), dovecot $(stat_sub lines_by_daemon dovecot), exim $(stat_sub lines_by_daemon exim)"
say "injected campaigns (ground truth, one JSON object per line): $TRUTH"
awk -F'"kind":"' '{ split($2, a, "\""); n[a[1]]++ } END { for (k in n) printf "  %-20s %d\n", k, n[k] }' "$TRUTH" | sort

# Read the file once so every run starts from the page cache.
cat "$LOG" >/dev/null

# ---- mailwarden ----

MW_WALL=- MW_CPU=- MW_RSS=- MW_LPS=- MW1_WALL=- MW1_CPU=- MW1_RSS=- MW1_LPS=- MW_INC=-
if [ -n "$MW" ]; then
	hr "mailwarden analyze"
	MWARGS=(analyze --format json --tz UTC --year "$YEAR" "$LOG")
	say "\$ mailwarden ${MWARGS[*]} > out.jsonl"
	TIMED_STDOUT=$OUT/out.jsonl timed mailwarden "$MW_TIMEOUT" "$MW" "${MWARGS[@]}"
	if [ "$RC" = 0 ]; then
		MW_WALL=$WALL MW_CPU=$CPU MW_RSS=$RSS
		MW_LPS=$(calc "$LINES / $MW_WALL")
		MW_INC=$(grep -c '"detector"' "$OUT/out.jsonl" || true)
		say "wall ${MW_WALL}s, cpu ${MW_CPU}s, peak RSS ${MW_RSS} MB, $(fmt "$MW_LPS" '%.0f') lines/s"
		say "summary: $(tail -n1 "$OUT/out.jsonl" | cut -c1-300)"
		say "incidents by detector:"
		{ grep -o '"detector":"[^"]*"' "$OUT/out.jsonl" || true; } | cut -d'"' -f4 | sort | uniq -c | sort -rn | sed 's/^/  /'
	else
		say "mailwarden failed (exit $RC); stderr:"
		tail -n 20 "$OUT/mailwarden.err" >&2
	fi

	if command -v taskset >/dev/null; then
		say ""
		say "\$ taskset -c 0 mailwarden ${MWARGS[*]} > out-1core.jsonl"
		TIMED_STDOUT=$OUT/out-1core.jsonl timed mailwarden-1core "$MW_TIMEOUT" taskset -c 0 "$MW" "${MWARGS[@]}"
		if [ "$RC" = 0 ]; then
			MW1_WALL=$WALL MW1_CPU=$CPU MW1_RSS=$RSS
			MW1_LPS=$(calc "$LINES / $MW1_WALL")
			say "wall ${MW1_WALL}s, cpu ${MW1_CPU}s, peak RSS ${MW1_RSS} MB, $(fmt "$MW1_LPS" '%.0f') lines/s (one core)"
			if ! cmp -s "$OUT/out.jsonl" "$OUT/out-1core.jsonl"; then
				say "NOTE: the one-core run's output differs from the all-core run's"
			fi
		else
			say "mailwarden (one core) failed (exit $RC)"
		fi
	fi
fi

# ---- fail2ban ----

F2B_NAMES=(postfix dovecot exim)
declare -A F2B_FILTER=([postfix]='postfix[mode=extra]' [dovecot]='dovecot' [exim]='exim')
BSD_DATE='{^LN-BEG}%b %d %H:%M:%S'
declare -A F2B_DATE=(
	[postfix]=$BSD_DATE
	[dovecot]=$BSD_DATE
	[exim]='{^LN-BEG}%b %d %H:%M:%S \S+ exim\[\d+\]: %Y-\d\d-\d\d \d\d:\d\d:\d\d'
)
F2B_OPTS=(-r --no-check-all --print-no-missed --print-no-ignored --timezone UTC)
declare -A F_WALL F_CPU F_RSS F_MATCH F_LPS
F2B_LINES=$LINES F2B_FILE=$LOG F2B_NOTE="" F2B_TOTAL=- F2B_LPS=-

# f2b_run TAG FILE NAME LIMIT: one fail2ban-regex pass; sets MATCHED.
f2b_run() {
	local tag=$1 file=$2 name=$3 limit=$4
	timed "fail2ban-$tag-$name" "$limit" fail2ban-regex "${F2B_OPTS[@]}" -d "${F2B_DATE[$name]}" "$file" "${F2B_FILTER[$name]}"
	MATCHED=$(sed -n 's/^Lines: [0-9]* lines, [0-9]* ignored, \([0-9]*\) matched.*/\1/p' "$OUT/fail2ban-$tag-$name.out" | tail -n1)
	[ -n "$MATCHED" ] || MATCHED=-
	if [ "$RC" != 0 ]; then
		say "  fail2ban-regex $name exited $RC; see $OUT/fail2ban-$tag-$name.err"
	fi
}

if [ "$SKIP_F2B" != 1 ]; then
	hr "fail2ban-regex"
	command -v fail2ban-regex >/dev/null || apt_install fail2ban
	say "$(fail2ban-regex --version 2>&1 | head -n1), filters from /etc/fail2ban/filter.d"
	say "options: ${F2B_OPTS[*]}"
	for n in "${F2B_NAMES[@]}"; do say "  $n: filter ${F2B_FILTER[$n]}, -d '${F2B_DATE[$n]}'"; done

	EST=0
	if [ "$LINES" -gt "$F2B_SAMPLE" ]; then
		say ""
		say "estimating on the first $F2B_SAMPLE lines ..."
		head -n "$F2B_SAMPLE" "$LOG" >"$OUT/f2b-sample.log"
		for n in "${F2B_NAMES[@]}"; do
			f2b_run sample "$OUT/f2b-sample.log" "$n" 900
			est=$(calc "$WALL * $LINES / $F2B_SAMPLE")
			say "  $n: ${WALL}s for $F2B_SAMPLE lines ($(fmt "$(calc "$F2B_SAMPLE / $WALL")" '%.0f') lines/s, $MATCHED matched) -> about $(fmt "$est" '%.0f')s for the whole file"
			EST=$(calc "$EST + $est")
		done
		rm -f "$OUT/f2b-sample.log"
		say "estimate for the whole file, three passes: $(fmt "$EST" '%.0f')s (budget ${F2B_BUDGET}s)"
		if [ "$(calc "$EST > $F2B_BUDGET")" = 1 ]; then
			F2B_LINES=$(calc "int($F2B_BUDGET / $EST * $LINES / 100000) * 100000")
			[ "$F2B_LINES" -ge "$F2B_SAMPLE" ] || F2B_LINES=$F2B_SAMPLE
			F2B_FILE=$OUT/f2b-prefix.log
			head -n "$F2B_LINES" "$LOG" >"$F2B_FILE"
			F2B_NOTE="fail2ban-regex would need about $(fmt "$EST" '%.0f')s for the whole file, over the ${F2B_BUDGET}s budget: it runs on the first $F2B_LINES lines; lines/s are comparable, matched counts cover that prefix only"
			say "$F2B_NOTE"
		fi
	fi

	say ""
	say "running on $F2B_LINES lines ..."
	F2B_TOTAL=0
	for n in "${F2B_NAMES[@]}"; do
		limit=$(calc "int($EST * 3 + 600)")
		f2b_run full "$F2B_FILE" "$n" "$limit"
		F_WALL[$n]=$WALL F_CPU[$n]=$CPU F_RSS[$n]=$RSS F_MATCH[$n]=$MATCHED
		if [ "$RC" = 0 ] && [ "$WALL" != - ]; then
			F_LPS[$n]=$(calc "$F2B_LINES / $WALL")
			[ "$F2B_TOTAL" = - ] || F2B_TOTAL=$(calc "$F2B_TOTAL + $WALL")
		else
			F_LPS[$n]=-
			F2B_TOTAL=-
		fi
		say "  $n: ${WALL}s, $(fmt "${F_LPS[$n]}" '%.0f') lines/s, peak RSS ${RSS} MB, $MATCHED lines matched (generator expects $(stat_sub fail2ban_expected "$n") in the whole file)"
	done
	[ "$F2B_FILE" = "$LOG" ] || rm -f "$F2B_FILE"
	if [ "$F2B_TOTAL" != - ]; then
		F2B_LPS=$(calc "$F2B_LINES / $F2B_TOTAL")
	fi
fi

# ---- Summary ----

hr "Summary: $LINES lines, $(fmt "$(calc "$BYTES / 1048576")" '%.0f') MB, seed $SEED, $(nproc) cpus"
# lines/cpu-s is lines over user+system CPU seconds: steadier than wall time
# on a busy machine, and not a throughput (several cores may work at once).
lpc() {
	if [ "$2" = - ] || [ -z "$2" ]; then echo -; else calc "$1 / $2"; fi
}
row() { printf '%-34s %9s %10s %9s %12s %12s  %s\n' "$@"; }
row "run" "wall s" "lines/s" "cpu s" "lines/cpu-s" "peak RSS MB" "found"
if [ -n "$MW" ]; then
	row "mailwarden analyze" "$(fmt "$MW_WALL" '%.2f')" "$(fmt "$MW_LPS" '%.0f')" "$(fmt "$MW_CPU" '%.2f')" "$(fmt "$(lpc "$LINES" "$MW_CPU")" '%.0f')" "$MW_RSS" "$MW_INC incidents"
	row "mailwarden analyze (taskset -c 0)" "$(fmt "$MW1_WALL" '%.2f')" "$(fmt "$MW1_LPS" '%.0f')" "$(fmt "$MW1_CPU" '%.2f')" "$(fmt "$(lpc "$LINES" "$MW1_CPU")" '%.0f')" "$MW1_RSS" ""
else
	row "mailwarden analyze" "-" "-" "-" "-" "-" "$MW_STATE"
fi
if [ "$SKIP_F2B" != 1 ]; then
	F2B_CPU=0
	for n in "${F2B_NAMES[@]}"; do
		exp=""
		[ "$F2B_LINES" != "$LINES" ] || exp=" of $(stat_sub fail2ban_expected "$n") expected"
		row "fail2ban-regex ${F2B_FILTER[$n]}" "$(fmt "${F_WALL[$n]}" '%.2f')" "$(fmt "${F_LPS[$n]}" '%.0f')" "$(fmt "${F_CPU[$n]}" '%.2f')" "$(fmt "$(lpc "$F2B_LINES" "${F_CPU[$n]}")" '%.0f')" "${F_RSS[$n]}" "${F_MATCH[$n]} lines matched$exp"
		if [ "$F2B_CPU" = - ] || [ "${F_CPU[$n]}" = - ]; then
			F2B_CPU=-
		else
			F2B_CPU=$(calc "$F2B_CPU + ${F_CPU[$n]}")
		fi
	done
	row "fail2ban-regex, three passes" "$(fmt "$F2B_TOTAL" '%.2f')" "$(fmt "$F2B_LPS" '%.0f')" "$(fmt "$F2B_CPU" '%.2f')" "$(fmt "$(lpc "$F2B_LINES" "$F2B_CPU")" '%.0f')" "" "on $F2B_LINES lines"
	say ""
	if [ "$MW_LPS" != - ] && [ "$F2B_LPS" != - ]; then
		say "mailwarden / fail2ban (lines/s): $(fmt "$(calc "$MW_LPS / $F2B_LPS")" '%.1f')x all cores, $(fmt "$( [ "$MW1_LPS" = - ] && echo - || calc "$MW1_LPS / $F2B_LPS")" '%.1f')x one core"
		if [ "$MW1_CPU" != - ] && [ "$F2B_CPU" != - ]; then
			say "mailwarden / fail2ban (lines per CPU second, one-core run): $(fmt "$(calc "$F2B_CPU / $MW1_CPU * $LINES / $F2B_LINES")" '%.1f')x"
		fi
	else
		say "mailwarden / fail2ban (lines/s): n/a"
	fi
	[ -z "$F2B_NOTE" ] || say "note: $F2B_NOTE"
fi
say "load average at the end (1 min): $(cut -d' ' -f1 /proc/loadavg)"
case $MW_STATE in "build failed"*) exit 1 ;; esac

#!/usr/bin/env bash
# Postfix and Dovecot policy benchmark, all in one run, every server under
# the same load from one policyload process (CONNS persistent connections,
# DURATION each):
#
#   1. the floor: a Go server answering DUNNO to everything, on a unix
#      socket and on loopback TCP;
#   2. the real daemon, `mailwarden serve` built from ./cmd/mailwarden, with
#      its own state directory (journal on, every detector at its default),
#      after a warm-up that makes every account and every address known;
#      Postfix over its unix socket;
#   3. Dovecot auth policy load on the same daemon: allow + report pairs
#      over loopback TCP, kept-alive HTTP/1.1;
#   4. postfwd 1.35 (Debian's postfwd, run as postfwd1) on loopback TCP with
#      a rate() limit per sasl_username;
#   5. policyd-rate-limit 1.0.1 (Debian's package; Python + SQLite) on
#      loopback TCP, limit_by_sasl.
#
#   bench/policy.sh                          # 8 connections, 10 s each
#   DURATION=30s bench/policy.sh
#   SKIP_POSTFWD=1 SKIP_PRL=1 bench/policy.sh
#
# Missing Debian packages are installed with apt-get (as root; INSTALL=0 to
# skip them instead). Only loopback addresses are used; every process the
# script starts is stopped at its end (or on interrupt).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

CONNS=${CONNS:-8}
DURATION=${DURATION:-10s}
ACCOUNTS=${ACCOUNTS:-100000}
CLIENTS=${CLIENTS:-1000000}
WARM_LIMIT=${WARM_LIMIT:-300s}        # the warm-up stops there even if not done
MW_MAX_KEYS=${MW_MAX_KEYS:-2000000}   # max_tracked_keys of the daemon (default 1000000)
OUT=${OUT:-bench/out}
SKIP_POSTFWD=${SKIP_POSTFWD:-0}
SKIP_PRL=${SKIP_PRL:-0}
INSTALL=${INSTALL:-1}

mkdir -p "$OUT"
echo "building policyload and mailwarden ..."
go build -o "$OUT/policyload" ./bench/policyload
go build -o "$OUT/mailwarden" ./cmd/mailwarden
PL=$OUT/policyload
MW=$OUT/mailwarden

dir=$(mktemp -d /tmp/policybench.XXXXXX)
chmod 755 "$dir" # the package daemons drop to their own users
results=$dir/results.tsv
pids=()
failed=0

alive() { kill -0 "$1" 2>/dev/null; }

# stop PID [SIGNAL]: signal one process this script started and wait for it
# (at most 15 s, then SIGKILL).
stop() {
	local pid=$1 sig=${2:-TERM}
	alive "$pid" || return 0
	kill "-$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
	if alive "$pid"; then
		echo "  pid $pid did not stop in 15 s: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	for p in "${pids[@]}"; do stop "$p"; done
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_unix() { # path
	for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.1; done
	echo "  $1 did not appear in 10 s" >&2
	return 1
}

wait_tcp() { # port
	for _ in $(seq 100); do
		(: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "  nothing listens on 127.0.0.1:$1 after 10 s" >&2
	return 1
}

free_port() { "$PL" -free-port; }

# measure LABEL ADDR [policyload flags...]
measure() {
	local label=$1 addr=$2
	shift 2
	echo "-- $label"
	if ! "$PL" -addr "$addr" -conns "$CONNS" -duration "$DURATION" -accounts "$ACCOUNTS" -clients "$CLIENTS" \
		-label "$label" -tsv "$results" "$@"; then
		echo "  measurement failed"
		failed=1
	fi
}

install_pkg() { # package
	[ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] || return 1
	echo "installing $1 ..."
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >"$dir/apt-$1.log" 2>&1 ||
		{ apt-get update -qq >>"$dir/apt-$1.log" 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >>"$dir/apt-$1.log" 2>&1; } ||
		{ tail -5 "$dir/apt-$1.log"; return 1; }
}

echo
echo "date          $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine       $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load          $CONNS connections, $DURATION per server, $ACCOUNTS accounts, $CLIENTS client addresses"
echo

# ---- 1. the floor --------------------------------------------------------
echo "== 1. floor: DUNNO to everything"
"$PL" -floor -addr "unix:$dir/floor.sock" 2>"$dir/floor-unix.err" &
pid=$!
pids+=("$pid")
wait_unix "$dir/floor.sock"
measure "floor (unix)" "unix:$dir/floor.sock"
stop "$pid"
port=$(free_port)
"$PL" -floor -addr "127.0.0.1:$port" 2>"$dir/floor-tcp.err" &
pid=$!
pids+=("$pid")
wait_tcp "$port"
measure "floor (TCP)" "127.0.0.1:$port"
stop "$pid"
echo

# ---- 2. mailwarden serve ---------------------------------------------------
echo "== 2. mailwarden serve"
mw=$dir/mw
mkdir -p "$mw"
key=bench-$RANDOM$RANDOM
cat >"$mw/mailwarden.yaml" <<EOF
max_tracked_keys: $MW_MAX_KEYS
serve:
  dovecot_api_key: $key
EOF
dport=$(free_port)
"$MW" serve --config "$mw/mailwarden.yaml" --postfix "unix:$mw/postfix.sock" --dovecot "127.0.0.1:$dport" \
	--admin "unix:$mw/admin.sock" --exim '' --state-dir "$mw/state" 2>"$mw/serve.log" &
mwpid=$!
pids+=("$mwpid")
if ! { wait_unix "$mw/postfix.sock" && wait_unix "$mw/admin.sock" && wait_tcp "$dport"; }; then
	sed 's/^/  /' "$mw/serve.log"
	exit 1
fi
mwstatus() {
	"$MW" status --admin "unix:$mw/admin.sock" | sed 's/^/  /'
	local j
	j=$("$MW" status --json --admin "unix:$mw/admin.sock")
	echo "  journal events dropped: $(grep -o '"journal_dropped": *[0-9]*' <<<"$j" | grep -o '[0-9]*$' || echo 0)"
}
echo "-- warm-up: every account from its usual addresses (Postfix), every address once (Dovecot)"
t0=$(date +%s)
if ! "$PL" -warm -addr "unix:$mw/postfix.sock" -warm-dovecot "127.0.0.1:$dport" -api-key "$key" \
	-conns "$CONNS" -duration "$WARM_LIMIT" -accounts "$ACCOUNTS" -clients "$CLIENTS"; then
	echo "  warm-up failed"
	failed=1
fi
echo "  warm-up took $(($(date +%s) - t0)) s; daemon after warm-up:"
mwstatus
measure "mailwarden serve (unix)" "unix:$mw/postfix.sock"
echo "  daemon after the Postfix load:"
mwstatus
echo
echo "== 3. Dovecot auth policy on the same daemon (allow + report pairs, loopback TCP)"
measure "mailwarden serve, Dovecot (TCP)" "127.0.0.1:$dport" -dovecot -api-key "$key"
echo "  daemon after the Dovecot load:"
mwstatus
echo "  memory: $(awk '/VmHWM|VmRSS/ {printf "%s %d MB  ", $1, $2/1024}' "/proc/$mwpid/status")"
stop "$mwpid"
echo "  incidents logged: $(grep -c 'msg=incident' "$mw/serve.log" || true); other warnings/errors: $(grep -v 'msg=incident' "$mw/serve.log" | grep -c 'level=\(WARN\|ERROR\)' || true)"
echo

# ---- 4. postfwd ------------------------------------------------------------
echo "== 4. postfwd 1.35, rate() per sasl_username"
if [ "$SKIP_POSTFWD" = 1 ]; then
	echo "  skipped (SKIP_POSTFWD=1)"
elif ! [ -x /usr/sbin/postfwd1 ] && ! install_pkg postfwd; then
	echo "  skipped: /usr/sbin/postfwd1 missing and not installed"
else
	echo "  $(/usr/sbin/postfwd1 -V 2>&1 | head -1 || true)"
	pf=$dir/postfwd
	mkdir -p "$pf"
	chmod 755 "$pf"
	# Count RCPTs per authenticated user: 100 an hour, then 450.
	cat >"$pf/postfwd.cf" <<'EOF'
id=RATE01; protocol_state==RCPT; sasl_username=.; action=rate(sasl_username/100/3600/450 4.7.1 sending limit reached)
EOF
	user=postfw
	id -u "$user" >/dev/null 2>&1 || user=nobody
	group=$(id -gn "$user")
	port=$(free_port)
	# Debian's default options (/etc/default/postfwd) plus no DNS and no
	# logging (-P, --perfmon: "included for performance testing").
	/usr/sbin/postfwd1 --daemon --file "$pf/postfwd.cf" --interface 127.0.0.1 --port "$port" \
		--user "$user" --group "$group" --pidfile "$pf/postfwd.pid" \
		--cache=600 --cache-rdomain-only --cache-no-size --nodns --perfmon 2>"$pf/postfwd.err"
	for _ in $(seq 100); do [ -s "$pf/postfwd.pid" ] && break; sleep 0.1; done
	pfpid=$(cat "$pf/postfwd.pid" 2>/dev/null || true)
	if [ -z "$pfpid" ]; then
		echo "  postfwd did not start:"
		sed 's/^/  /' "$pf/postfwd.err"
		failed=1
	else
		pids+=("$pfpid")
		wait_tcp "$port"
		measure "postfwd 1.35 (TCP)" "127.0.0.1:$port"
		stop "$pfpid"
	fi
fi
echo

# ---- 5. policyd-rate-limit -------------------------------------------------
echo "== 5. policyd-rate-limit, limit_by_sasl, SQLite"
if [ "$SKIP_PRL" = 1 ]; then
	echo "  skipped (SKIP_PRL=1)"
elif ! command -v policyd-rate-limit >/dev/null && ! install_pkg policyd-rate-limit; then
	echo "  skipped: policyd-rate-limit missing and not installed"
else
	echo "  policyd-rate-limit $(dpkg-query -W -f '${Version}' policyd-rate-limit 2>/dev/null || echo '?')"
	prl=$dir/prl
	mkdir -p "$prl"
	chmod 755 "$prl"
	port=$(free_port)
	user=policyd-rate-limit
	id -u "$user" >/dev/null 2>&1 || user=nobody
	group=$(id -gn "$user")
	# The keys of the package's /etc/policyd-rate-limit.yaml; run/ and db/
	# are created by the daemon (as root, then it drops to $user).
	cat >"$prl/policyd-rate-limit.yaml" <<EOF
debug: False
user: "$user"
group: "$group"
pidfile: "$prl/run/policyd-rate-limit.pid"
backend: 0
sqlite_config:
    database: "$prl/db/db.sqlite3"
SOCKET: ["127.0.0.1", $port]
limits:
    - [100, 3600]
limits_by_id: {}
limit_by_sasl: True
limit_by_sender: False
limit_by_ip: False
limited_networks: []
success_action: "dunno"
fail_action: "450 4.7.1 sending limit reached"
db_error_action: "dunno"
report: False
delay_to_close: 300
EOF
	policyd-rate-limit --file "$prl/policyd-rate-limit.yaml" 2>"$prl/err" &
	prlpid=$!
	pids+=("$prlpid")
	if wait_tcp "$port"; then
		measure "policyd-rate-limit 1.0.1 (TCP)" "127.0.0.1:$port"
	else
		sed 's/^/  /' "$prl/err"
		failed=1
	fi
	stop "$prlpid" USR1 # its clean exit
fi
echo

# ---- summary ---------------------------------------------------------------
echo "== summary ($CONNS connections, $DURATION each; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-34s %12s %9s %9s %9s %7s\n' server requests/s p50_ms p99_ms refused errors
awk -F'\t' '{printf "%-34s %12.0f %9.3f %9.3f %9d %7d\n", $1, $4, $5/1000, $6/1000, $7, $8}' "$results"
awk -F'\t' '
$1 == "mailwarden serve (unix)" {
	ok = ($4 >= 50000 && $6 <= 1000)
	printf "target Postfix: >= 50000 requests/s with p99 <= 1 ms: %s (%.0f requests/s, p99 %.3f ms)\n", ok ? "met" : "NOT met", $4, $6/1000
}
$1 == "mailwarden serve, Dovecot (TCP)" {
	ok = ($4 >= 20000)
	printf "target Dovecot: >= 20000 allow+report requests/s: %s (%.0f requests/s, %.0f pairs/s)\n", ok ? "met" : "NOT met", $4, $4/2
}' "$results"
exit "$failed"

#!/usr/bin/env bash
# Postfix policy benchmark: the protocol's floor (a Go server answering
# DUNNO to everything) and mailwarden's listener (with a fake Decider, then
# with the real engine), each under the same load from one policyload
# process, one after the other in the same run.
#
#   bench/policyload/run.sh                 # 8 connections, 10 s each
#   CONNS=16 DURATION=30s bench/policyload/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH"

CONNS=${CONNS:-8}
DURATION=${DURATION:-10s}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
go build -o "$OUT/policyload" ./bench/policyload
bin=$OUT/policyload
dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

run() { # name, server flags...
	local name=$1; shift
	local sock=$dir/$name.sock
	"$bin" "$@" -addr "unix:$sock" 2>"$dir/$name.err" &
	local pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
	echo "== $name"
	"$bin" -addr "unix:$sock" -conns "$CONNS" -duration "$DURATION"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	echo
}

echo "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
run floor -floor
run mailwarden-fake -serve
run mailwarden-engine -serve -engine

#!/usr/bin/env bash
# The whole test suite: formatting, vet, and every test with the race
# detector. Tests that need ../shared/testdata skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="/usr/local/go/bin:$PATH"

files=$(find . -name '*.go' -not -path './bench/out/*' -not -path './.git/*')
unformatted=$(gofmt -l $files)
if [ -n "$unformatted" ]; then
	echo "gofmt would change these files (run gofmt -w):" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -race -count=1 -timeout 30m ./...

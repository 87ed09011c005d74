#!/usr/bin/env bash
# Unpacks Debian's Exim (exim4-daemon-light, 4.96 on Debian 12) under
# /var/cache/mailwarden-test/exim for the end-to-end tests (exim_test.go).
# The exim4 packages conflict with postfix, so they are not installed: the
# tests run the unpacked binary as root with their own configuration (-C).
#
# Idempotent: only does what is missing. Needs root and apt.
set -euo pipefail

root=/var/cache/mailwarden-test/exim
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
	echo "install.sh: needs root" >&2
	exit 1
fi

# Runs an apt-get command, updating the package lists once if it fails.
updated=
aptget() {
	if ! apt-get "$@"; then
		[ -z "$updated" ] || return 1
		apt-get update
		updated=1
		apt-get "$@"
	fi
}

# The one library the daemon needs beyond what postfix, dovecot and swaks
# pull in.
if ! dpkg-query -W -f='${Status}' libidn12 2>/dev/null | grep -q 'install ok installed'; then
	aptget install -y --no-install-recommends libidn12
fi

# The user the tests' configuration runs Exim as (exim_user).
if ! id Debian-exim >/dev/null 2>&1; then
	useradd -r -M -s /usr/sbin/nologin Debian-exim
fi

if "$root/usr/sbin/exim4" -C /dev/null -bV >/dev/null 2>&1; then
	exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$root.new"' EXIT
# apt-get download drops privileges to _apt, which must write here.
if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
(cd "$tmp" && aptget download exim4-daemon-light exim4-base exim4-config)
rm -rf "$root.new"
mkdir -p "$root.new"
for f in "$tmp"/*.deb; do
	dpkg -x "$f" "$root.new"
done
rm -rf "$root"
mv "$root.new" "$root"
"$root/usr/sbin/exim4" -C /dev/null -bV 2>/dev/null | sed -n 1p

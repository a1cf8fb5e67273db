#!/bin/bash
# Installs on the host, as root, what the Debian package tests (tests/deb_e2e.rs) need: mmdebstrap
# for the Debian 12 chroot, zstd for its cached tarball, and debhelper, dpkg-dev and lintian to
# build and check the package. Idempotent; no `apt-get update` unless something must be installed.
# (tests/setup/install-deps.sh --chroot --deb covers the same packages once it is on main.)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

want=(mmdebstrap zstd debhelper dpkg-dev lintian)

say() { echo "tests/deb/setup.sh: $*" >&2; }
[[ $(id -u) = 0 ]] || { say "error: must run as root"; exit 1; }
command -v apt-get >/dev/null || { say "error: needs a Debian system (apt-get)"; exit 1; }

missing=()
for p in "${want[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null) == ii* ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0
say "installing: ${missing[*]}"
apt-get update -qq >&2 || { say "error: apt-get update failed"; exit 1; }
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || { say "error: apt-get install failed"; exit 1; }

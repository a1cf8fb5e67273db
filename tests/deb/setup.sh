#!/bin/bash
# Installs on the host, as root, what the Debian package tests (tests/deb_e2e.rs) need: mmdebstrap
# for the Debian 12 chroot and debhelper, dpkg-dev and lintian to build and check the package
# (tests/setup/install-deps.sh --chroot --deb, which also installs what every real-dkms test needs),
# plus zstd for the cached chroot tarball. Idempotent and fast when everything is present.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "tests/deb/setup.sh: $*" >&2; }

"$here/../setup/install-deps.sh" --chroot --deb >&2

if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' zstd 2>/dev/null) != ii* ]]; then
    say "installing zstd"
    apt-get install -y -q --no-install-recommends zstd >&2 ||
        { apt-get update -qq >&2 && apt-get install -y -q --no-install-recommends zstd >&2; } ||
        { say "error: cannot install zstd"; exit 1; }
fi

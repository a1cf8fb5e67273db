#!/bin/bash
# Prints the path of the Debian 12 base chroot tarball for tests/deb_e2e.rs, building it first
# with mmdebstrap when the cache has none that is fresh. Contents: the apt variant plus dkms and a
# kernel-module toolchain from the distribution's packages, the older of the two newest
# linux-headers ABIs installed, the newer one downloaded (tests/deb/base-inside.sh); apt's lists
# and downloaded packages are kept so that the tests' apt runs work offline.
#
# Cache: $DKMS_TRIGGER_TEST_CACHE (default /var/cache/dkms-trigger-tests)/base-KEY.tar.zst, KEY a
# digest of these two scripts, the mirrors, suite and architecture; a tarball older than
# $DKMS_TRIGGER_TEST_CACHE_DAYS (default 7) days is rebuilt, so the chosen ABIs follow the archive.
# Mirrors: $DKMS_TRIGGER_TEST_MIRROR, $DKMS_TRIGGER_TEST_SECURITY_MIRROR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DKMS_TRIGGER_TEST_CACHE:-/var/cache/dkms-trigger-tests}
mirror=${DKMS_TRIGGER_TEST_MIRROR:-http://deb.debian.org/debian}
security=${DKMS_TRIGGER_TEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
max_days=${DKMS_TRIGGER_TEST_CACHE_DAYS:-7}
suite=bookworm
arch=$(dpkg --print-architecture)
packages=dkms,gcc,make,libc6-dev,kmod
say() { echo "tests/deb/base.sh: $*" >&2; }

key=$({
    cat "$here/base.sh" "$here/base-inside.sh" "$here/../setup/newest-headers.sh"
    echo "$mirror $security $suite $arch $packages"
} | sha256sum | cut -c1-16)
out=$cache/base-$key.tar.zst

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -s $out && -n $(find "$out" -mmin "-$((max_days * 24 * 60))" 2>/dev/null) ]]; then
    echo "$out"
    exit 0
fi
# Stale or other keys: gone (each is about 300 MB).
rm -f "$cache"/base-*.tar.zst "$cache"/.base-*.tmp.tar.zst
tmp=$cache/.base-$key.tmp.tar.zst
say "building $out with mmdebstrap (a few minutes)"
start=$SECONDS
mmdebstrap --mode=root --variant=apt --format=tar --include="$packages" \
    --skip=cleanup/apt \
    --customize-hook="upload $here/base-inside.sh /root/base-inside.sh" \
    --customize-hook="upload $here/../setup/newest-headers.sh /root/newest-headers.sh" \
    --customize-hook='chroot "$1" bash /root/base-inside.sh' \
    --customize-hook='rm -f "$1/root/base-inside.sh" "$1/root/newest-headers.sh"' \
    "$suite" "$tmp" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main" >&2
mv "$tmp" "$out"
say "built in $((SECONDS - start)) s"
echo "$out"

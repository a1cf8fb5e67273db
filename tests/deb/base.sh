#!/bin/bash
# Prints the path of the base chroot tarball of Debian release SUITE (bookworm, trixie) for
# tests/deb_e2e.rs, building it first with mmdebstrap when the cache has none that is fresh:
#
#   base.sh SUITE
#
# Contents: the apt variant plus dkms and a kernel-module toolchain from the release's packages,
# the older of the two newest linux-headers ABIs installed (on Debian 13 with its kernel image,
# which the headers depend on), the newer one downloaded (tests/deb/base-inside.sh); apt's lists
# and downloaded packages are kept so that the tests' apt runs work offline.
#
# Cache: $DKMS_TRIGGER_TEST_CACHE (default /var/cache/dkms-trigger-tests)/base-SUITE-KEY.tar.zst,
# KEY a digest of these scripts, the archive entries, suite and architecture; a tarball older than
# $DKMS_TRIGGER_TEST_CACHE_DAYS (default 7) days is rebuilt, so the chosen ABIs follow the archive.
# Each release keeps its own tarball; older ones of the same release are deleted.
# Archive: the host's apt configuration, re-targeted at SUITE (tests/setup/apt-sources.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DKMS_TRIGGER_TEST_CACHE:-/var/cache/dkms-trigger-tests}
max_days=${DKMS_TRIGGER_TEST_CACHE_DAYS:-7}
suite=${1:?usage: base.sh SUITE}
arch=$(dpkg --print-architecture)
packages=dkms,gcc,make,libc6-dev,kmod
say() { echo "tests/deb/base.sh: $*" >&2; }
mapfile -t sources < <("$here/../setup/apt-sources.sh" "$suite")
((${#sources[@]})) || exit 1

key=$({
    cat "$here/base.sh" "$here/base-inside.sh" "$here/../setup/newest-headers.sh"
    printf '%s\n' "${sources[@]}"
    echo "$suite $arch $packages"
} | sha256sum | cut -c1-16)
out=$cache/base-$suite-$key.tar.zst

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -s $out && -n $(find "$out" -mmin "-$((max_days * 24 * 60))" 2>/dev/null) ]]; then
    echo "$out"
    exit 0
fi
# Stale or other keys of this release, and tarballs named before releases were (base-KEY): gone
# (each is about 300 MB).
rm -f "$cache/base-$suite-"*.tar.zst "$cache/.base-$suite-"*.tmp.tar.zst "$cache"/base-????????????????.tar.zst
tmp=$cache/.base-$suite-$key.tmp.tar.zst
say "building $out with mmdebstrap (a few minutes)"
start=$SECONDS
mmdebstrap --mode=root --variant=apt --format=tar --include="$packages" \
    --skip=cleanup/apt \
    --customize-hook="upload $here/base-inside.sh /root/base-inside.sh" \
    --customize-hook="upload $here/../setup/newest-headers.sh /root/newest-headers.sh" \
    --customize-hook='chroot "$1" bash /root/base-inside.sh' \
    --customize-hook='rm -f "$1/root/base-inside.sh" "$1/root/newest-headers.sh"' \
    "$suite" "$tmp" "${sources[@]}" >&2
mv "$tmp" "$out"
say "built in $((SECONDS - start)) s"
echo "$out"

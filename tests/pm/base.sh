#!/bin/bash
# Prints the path of the cached root directory of Debian release SUITE (bookworm: dkms 3.0.10;
# trixie: dkms 3.2, the family Fedora and Arch ship) that tests/pm_e2e.rs uses as the read-only
# lower layer of its rpm and pacman test roots, building it first with mmdebstrap when the cache has
# none that is fresh. Run as root.
#
#   base.sh SUITE
#
# Contents (tests/pm/base-inside.sh): dkms, a kernel-module toolchain, systemd (for the real
# kernel-install), the -common headers and kbuild of the two newest linux-headers ABIs of the
# archive, and the files of those two ABIs' linux-headers-K packages UNPACKED under
# /opt/pm-fixtures/headers/K (not installed: the tests repackage them as rpm kernel-devel and Arch
# linux-headers packages, which put the tree in place the way Fedora and Arch do). The kernel
# versions are in /opt/pm-fixtures/kernels ("K1 K2", oldest first).
#
# Cache: $DKMS_TRIGGER_TEST_CACHE (default /var/cache/dkms-trigger-tests)/pm-root-SUITE-KEY, KEY a
# digest of these scripts, the archive entries, the suite and the architecture. A root older than
# $DKMS_TRIGGER_TEST_CACHE_DAYS (default 7) days is rebuilt, so the ABIs follow the archive. Each
# release keeps its own root; older ones of the same release are deleted.
# Archive: the host's apt configuration, re-targeted at SUITE (tests/setup/apt-sources.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DKMS_TRIGGER_TEST_CACHE:-/var/cache/dkms-trigger-tests}
max_days=${DKMS_TRIGGER_TEST_CACHE_DAYS:-7}
suite=${1:?usage: base.sh SUITE}
say() { echo "tests/pm/base.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) = 0 ]] || die "must run as root"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (tests/setup/install-deps.sh --chroot)"
arch=$(dpkg --print-architecture)
packages=dkms,gcc,make,libc6-dev,kmod,systemd
mapfile -t sources < <("$here/../setup/apt-sources.sh" "$suite")
((${#sources[@]})) || exit 1

key=$({
    cat "$here/base.sh" "$here/base-inside.sh" "$here/../setup/newest-headers.sh"
    printf '%s\n' "${sources[@]}"
    echo "$suite $arch $packages"
} | sha256sum | cut -c1-16)
out=$cache/pm-root-$suite-$key

mkdir -p "$cache"
exec 9>"$cache/.pm-lock"
flock 9
if [[ -s $out/opt/pm-fixtures/kernels && -n $(find "$out/opt/pm-fixtures/kernels" -mmin "-$((max_days * 24 * 60))" 2>/dev/null) ]]; then
    echo "$out"
    exit 0
fi
# Stale roots and roots of other keys of this release, and roots named before releases were
# (pm-root-KEY): gone (each is about 600 MB).
for old in "$cache/pm-root-$suite-"* "$cache/.pm-root-$suite-"* "$cache"/pm-root-???????????????? "$cache"/.pm-root-????????????????.tmp; do
    [[ -e $old ]] && rm -rf --one-file-system "$old"
done
tmp=$cache/.pm-root-$suite-$key.tmp
say "building $out with mmdebstrap (a few minutes)"
start=$SECONDS
# The hooks' "$1" is mmdebstrap's, not ours.
# shellcheck disable=SC2016
mmdebstrap --mode=root --variant=apt --format=directory --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Retries "3"' \
    --customize-hook="upload $here/base-inside.sh /root/base-inside.sh" \
    --customize-hook="upload $here/../setup/newest-headers.sh /root/newest-headers.sh" \
    --customize-hook='chroot "$1" bash /root/base-inside.sh' \
    --customize-hook='rm -f "$1/root/base-inside.sh" "$1/root/newest-headers.sh"' \
    "$suite" "$tmp" "${sources[@]}" >&2
mv "$tmp" "$out"
say "built in $((SECONDS - start)) s"
echo "$out"

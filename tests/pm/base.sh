#!/bin/bash
# Prints the path of the cached root directory of Debian release SUITE (bookworm: dkms 3.0.10;
# trixie: dkms 3.2, the family Fedora and Arch ship) that tests/pm_e2e.rs uses as the read-only
# lower layer of its rpm and pacman test roots, building it first when the cache has none that is
# fresh. Run as root.
#
#   base.sh SUITE
#
# Made from the release's base of the Debian package tests (tests/deb/base.sh SUITE, built or
# reused; one bootstrap per release serves both suites): the tarball is unpacked and
# tests/pm/base-inside.sh run in it. Contents: dkms, a kernel-module toolchain, systemd (for the real
# kernel-install), the -common headers and kbuild of the two kernels of that base (the two newest
# ABIs of the release's default series), and the files of those two ABIs' linux-headers-K packages
# UNPACKED under /opt/pm-fixtures/headers/K (not installed: the tests repackage them as rpm
# kernel-devel and Arch linux-headers packages, which put the tree in place the way Fedora and Arch
# do). No Debian kernel image. The kernel versions are in /opt/pm-fixtures/kernels ("K1 K2", oldest
# first).
#
# Cache: $DKMS_TRIGGER_TEST_CACHE (default /var/cache/dkms-trigger-tests)/pm-root-SUITE-KEY, KEY a
# digest of these scripts and of the deb base's name (itself a digest of its scripts, archive
# entries, suite and architecture) and time: a new deb base (rebuilt weekly, so the ABIs follow the
# archive) makes a new root. Older roots of the same release are deleted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DKMS_TRIGGER_TEST_CACHE:-/var/cache/dkms-trigger-tests}
suite=${1:?usage: base.sh SUITE}
say() { echo "tests/pm/base.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) = 0 ]] || die "must run as root"
# Before taking our own lock: deb/base.sh takes the cache's other one.
tarball=$("$here/../deb/base.sh" "$suite") || die "no $suite base (tests/deb/base.sh)"

key=$({
    cat "$here/base.sh" "$here/base-inside.sh"
    basename "$tarball"
    stat -c %Y "$tarball" # a weekly rebuild keeps the name
} | sha256sum | cut -c1-16)
out=$cache/pm-root-$suite-$key

exec 9>"$cache/.pm-lock"
flock 9
if [[ -s $out/opt/pm-fixtures/kernels ]]; then
    echo "$out"
    exit 0
fi
# Roots of other keys of this release, and roots named before releases were (pm-root-KEY): gone
# (each is about 600 MB).
for old in "$cache/pm-root-$suite-"* "$cache/.pm-root-$suite-"* "$cache"/pm-root-???????????????? "$cache"/.pm-root-????????????????.tmp; do
    [[ -e $old ]] && rm -rf --one-file-system "$old"
done
tmp=$cache/.pm-root-$suite-$key.tmp
say "building $out from $tarball"
start=$SECONDS
mkdir -p "$tmp"
tar --zstd -xpf "$tarball" --numeric-owner -C "$tmp"
cp "$here/base-inside.sh" "$tmp/root/base-inside.sh"
# apt and dpkg need /proc and /dev; private namespaces so that nothing stays mounted.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --pid --fork --kill-child --propagation private -- bash -euc '
    r=$1
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --make-rslave "$r/dev"
    mount --rbind /sys "$r/sys"
    mount --make-rslave "$r/sys"
    rm -f "$r/etc/resolv.conf"
    cat /etc/resolv.conf >"$r/etc/resolv.conf"
    chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive bash /root/base-inside.sh' base "$tmp" >&2
rm -f "$tmp/root/base-inside.sh"
mv "$tmp" "$out"
say "built in $((SECONDS - start)) s"
echo "$out"

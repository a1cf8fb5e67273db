#!/bin/bash
# Runs INSIDE a copy of the Debian package tests' base (tests/deb/base.sh), to make the root of the
# package-manager tests (tests/pm/base.sh). Takes the two kernels of that base
# (/etc/dkms-trigger-tests/kernels) and installs what their header trees need (the -common trees,
# linux-kbuild, the compiler package) plus systemd, but NOT the linux-headers-K packages themselves:
# their files are unpacked under /opt/pm-fixtures/headers/K for the tests to repackage, so that rpm
# and pacman own the header trees (pacman refuses to install over files it does not own). K1's
# headers, installed in the deb base, are purged, and with them (Debian 13) K1's image: the rpm and
# pacman tests install their own kernel packages, and a Debian image and initramfs-tools have no
# place in a root that stands for Fedora or Arch.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
say() { echo "pm base-inside: $*" >&2; }

read -r k1 k2 </etc/dkms-trigger-tests/kernels
say "kernels: $k1 $k2"

# Everything linux-headers-K depends on, for both kernels, except the kernel image (Debian 13's
# headers depend on it). The .debs of both kernels are in apt's cache (tests/deb/base-inside.sh).
deps=$(for k in "$k1" "$k2"; do
    apt-cache depends --no-recommends --no-suggests "linux-headers-$k" | sed -n 's/^ *Depends: *//p'
done | grep -v -e '^<' -e '^linux-image-' | sort -u)
# shellcheck disable=SC2086
apt-get install -y -q $deps systemd
# shellcheck disable=SC2086
apt-mark manual $deps >/dev/null
purge=("linux-headers-$k1")
[[ $(dpkg-query -W -f='${db:Status-Abbrev}' "linux-image-$k1" 2>/dev/null) == ii* ]] && purge+=("linux-image-$k1")
apt-get purge -y -q "${purge[@]}"
apt-get autoremove --purge -y -q

mkdir -p /opt/pm-fixtures/headers
for k in "$k1" "$k2"; do
    d=/opt/pm-fixtures/headers/$k
    deb=$(ls /var/cache/apt/archives/linux-headers-"$k"_*.deb)
    dpkg-deb -x "$deb" "$d"
    tree=$d/usr/src/linux-headers-$k
    [[ -f $tree/Makefile ]] || { say "error: $tree/Makefile missing"; exit 1; }
    # The tree is repackaged at other places (usr/src/kernels/K, usr/lib/modules/K/build): its
    # relative symlinks into /usr/lib/linux-kbuild-* become absolute.
    find "$tree" -type l | while read -r l; do
        t=$(readlink "$l")
        case "$t" in
        /*) ;;
        *) ln -sfn "$(realpath -ms "$(dirname "${l#"$d"}")/$t")" "$l" ;;
        esac
    done
    # Debian's build symlink is not kept: each test package makes its own.
    rm -rf "${d:?}/lib" "${d:?}/usr/lib" "${d:?}/usr/share"
done
[[ ! -e /lib/modules/$k1 && ! -e /lib/modules/$k2 ]] || { say "error: a Debian kernel is left in /lib/modules"; ls /lib/modules >&2; exit 1; }
echo "$k1 $k2" >/opt/pm-fixtures/kernels

apt-get clean
rm -rf /var/lib/apt/lists/* /root/debs

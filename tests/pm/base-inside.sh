#!/bin/bash
# Runs INSIDE the Debian root that tests/pm/base.sh builds (an mmdebstrap customize hook).
# Chooses the two newest installable linux-headers-<ABI>-<arch> packages (the rule of
# tests/setup/install-deps.sh), installs what their trees need (the -common trees, linux-kbuild,
# the compiler package) but NOT the linux-headers-K packages themselves: their files are unpacked
# under /opt/pm-fixtures/headers/K for the tests to repackage, so that rpm and pacman own the
# header trees (pacman refuses to install over files it does not own).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
say() { echo "pm base-inside: $*" >&2; }

# tests/setup/newest-headers.sh, uploaded next to this script.
mapfile -t chosen < <(bash /root/newest-headers.sh "$(dpkg --print-architecture)")
((${#chosen[@]} == 2)) || { say "error: fewer than two installable linux-headers packages"; exit 1; }
k1=${chosen[0]#linux-headers-}
k2=${chosen[1]#linux-headers-}
say "kernels: $k1 $k2"

# Everything linux-headers-K depends on, for both kernels, except the kernel image (Debian 13's
# headers depend on it): the rpm and pacman tests install their own kernel packages, and a Debian
# image would bring initramfs-tools and its hooks into a root that stands for Fedora or Arch.
deps=$(for k in "$k1" "$k2"; do
    apt-cache depends --no-recommends --no-suggests "linux-headers-$k" | sed -n 's/^ *Depends: *//p'
done | grep -v -e '^<' -e '^linux-image-' | sort -u)
# shellcheck disable=SC2086
apt-get install -y -q $deps

mkdir -p /opt/pm-fixtures/headers /tmp/pm-debs
cd /tmp/pm-debs
apt-get download "linux-headers-$k1" "linux-headers-$k2"
for k in "$k1" "$k2"; do
    d=/opt/pm-fixtures/headers/$k
    dpkg-deb -x linux-headers-"$k"_*.deb "$d"
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
cd /
rm -rf /tmp/pm-debs
echo "$k1 $k2" >/opt/pm-fixtures/kernels

apt-get clean
rm -rf /var/lib/apt/lists/*

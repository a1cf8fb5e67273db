#!/bin/bash
# Runs INSIDE the Debian chroot that tests/deb/base.sh builds (an mmdebstrap customize hook), on
# any release: chooses the two newest linux-headers-<ABI>-<arch> packages the archive offers,
# installs the older one (K1) and has apt download the newer one (K2, installed by the tests
# themselves, with whatever it depends on: on Debian 13 its kernel image and its own kbuild); K1's
# kernel image is downloaded too. Writes the choice to /etc/dkms-trigger-tests/kernels ("K1 K2")
# and the name of K1's linux-kbuild package (linux-kbuild-6.1 on Debian 12, linux-kbuild-<K1's ABI> on Debian 13) to
# /etc/dkms-trigger-tests/kbuild.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
say() { echo "base-inside: $*" >&2; }

cat >/etc/apt/apt.conf.d/90dkms-trigger-tests <<'EOT'
// dkms-trigger test chroot: like mmdebstrap's own setup, no Recommends; quiet progress.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
Dpkg::Use-Pty "false";
quiet "1";
EOT

# The chroots boot nothing, and what the tests look at is when and how often an initramfs is made
# and which DKMS modules are in it, not the disk and file system drivers: only the modules listed in
# /etc/initramfs-tools/modules go in (MODULES=list), which makes each generation seconds instead of
# a minute on a loaded 2-core machine. (initramfs-tools itself comes with the first kernel image.)
mkdir -p /etc/initramfs-tools/conf.d
cat >/etc/initramfs-tools/conf.d/dkms-trigger-tests.conf <<'EOT'
# dkms-trigger test chroot (tests/deb/base-inside.sh): small initramfs images.
MODULES=list
EOT

# tests/setup/newest-headers.sh, uploaded next to this script.
mapfile -t chosen < <(bash /root/newest-headers.sh "$(dpkg --print-architecture)")
((${#chosen[@]} == 2)) || { say "error: fewer than two installable linux-headers packages"; exit 1; }
k1=${chosen[0]#linux-headers-}
k2=${chosen[1]#linux-headers-}
say "kernels: $k1 (installed) $k2 (downloaded)"

apt-get install -y "linux-headers-$k1"
# Keep the .debs of the K1 headers and kbuild (the tests repackage them) and download K2's.
apt-get clean
common1=$(dpkg-query -W -f='${Depends}' "linux-headers-$k1" | tr ',' '\n' | sed -n 's/^ *\(linux-headers-[^ ]*-common\).*/\1/p')
kbuild=$(dpkg-query -W -f='${Depends}' "linux-headers-$k1" | tr ',' '\n' | sed -n 's/^ *\(linux-kbuild-[^ ]*\).*/\1/p')
apt-get install -y --reinstall --download-only "linux-headers-$k1" "$common1" "$kbuild"
# K1's kernel image, for the image (re)install scenario: installed with the headers on Debian 13
# (kept for a reinstall), not installed on Debian 12 (a first install).
apt-get install -y --reinstall --download-only "linux-image-$k1"
apt-get install -y --download-only "linux-headers-$k2"
ls /var/cache/apt/archives/*.deb >&2

mkdir -p /etc/dkms-trigger-tests
echo "$k1 $k2" >/etc/dkms-trigger-tests/kernels
echo "$kbuild" >/etc/dkms-trigger-tests/kbuild

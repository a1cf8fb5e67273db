#!/bin/bash
# Runs inside the test chroot. Repackages a real .deb with a higher version, optionally appending a
# line to one of its files (a "changed tool file"):
#   repack.sh DEB NEW-VERSION [--append PATH-IN-PACKAGE TEXT] [--control-sed EXPR]
#                                                               -> prints the new .deb's path
# (--control-sed edits DEBIAN/control, e.g. to follow another repackaged package's exact version.)
# File times inside the package are kept (dpkg-deb -R/-b), except for the file changed.
set -euo pipefail
deb=$1 version=$2
shift 2
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
dpkg-deb -R "$deb" "$tree"
sed -i "s/^Version: .*/Version: $version/" "$tree/DEBIAN/control"
while (($#)); do
    case "$1" in
    --append)
        [[ -f $tree/$2 ]] || { echo "repack.sh: $2 is not in $deb" >&2; exit 1; }
        printf '%s\n' "$3" >>"$tree/$2"
        # md5sums must match, or dpkg --verify (and debsums) complain.
        (cd "$tree" && sed -i "\\|  $2\$|d" DEBIAN/md5sums && md5sum "$2" >>DEBIAN/md5sums)
        shift 3
        ;;
    --control-sed)
        sed -i "$2" "$tree/DEBIAN/control"
        shift 2
        ;;
    *) echo "repack.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
pkg=$(sed -n 's/^Package: //p' "$tree/DEBIAN/control")
arch=$(sed -n 's/^Architecture: //p' "$tree/DEBIAN/control")
mkdir -p /root/debs
out=/root/debs/${pkg}_${version}_$arch.deb
dpkg-deb --root-owner-group -Zgzip -b "$tree" "$out" >/dev/null
echo "$out"

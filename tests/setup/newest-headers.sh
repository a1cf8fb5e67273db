#!/bin/bash
# Prints the two newest usable linux-headers-<ABI>-FLAVOUR packages apt offers, oldest first, one a
# line; exits 1 when there are fewer than two. Usable: installed, or installable (apt can resolve
# it). The one rule for choosing the test kernels: used on the host by tests/setup/install-deps.sh
# and inside the test roots by tests/deb/base-inside.sh and tests/pm/base-inside.sh, on every
# release (Debian 12: 6.1.0-57-amd64; Debian 13: 6.12.57+deb13-amd64; Ubuntu: 6.8.0-45-generic).
#
# Only the release's default kernel series counts: the one the meta package linux-headers-FLAVOUR
# depends on. Its ABI with the ABI number made a wildcard is the series (6.1.0-N, 6.12.N+deb13,
# 6.8.0-N): Debian 12 also offers a 6.12.N+deb12 series, which is not its default kernel, and the
# flavour must follow the ABI at once, which keeps out -cloud-amd64, -rt-amd64 and meta packages.
#
#   newest-headers.sh FLAVOUR        (Debian: the architecture, amd64; Ubuntu: generic)
set -euo pipefail
flavour=${1:?usage: newest-headers.sh FLAVOUR}
# The default series, e.g. "6.12.57+deb13" -> 6\.12\.[0-9]+\+deb13.
esc() { sed 's/[.+]/\\&/g' <<<"$1"; }
default=$(apt-cache depends "linux-headers-$flavour" 2>/dev/null |
    sed -n "s/^ *Depends: linux-headers-\(.*\)-$flavour\$/\1/p" | head -n 1)
if [[ $default =~ ^(.*[^0-9])([0-9]+)(\+deb[0-9]+)$ || $default =~ ^(.*[^0-9])([0-9]+)()$ ]]; then
    series="$(esc "${BASH_REMATCH[1]}")[0-9]+$(esc "${BASH_REMATCH[3]}")"
else
    echo "newest-headers: linux-headers-$flavour names no default kernel series (got '$default')" >&2
    exit 1
fi
re="^linux-headers-${series}-${flavour}\$"
installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii"* ]]; }

# One `apt-cache policy` call with a regex: each apt-cache run costs a second or more where apt
# keeps no binary cache (containers). A package counts when it has a candidate or is installed (a
# mirror may have dropped it; it still works).
cands=$(apt-cache policy "$re" 2>/dev/null | awk '
    /^[^ ]/ { pkg = $1; sub(/:$/, "", pkg); next }
    /^  Installed:/ { inst = $2; next }
    /^  Candidate:/ { if ($2 != "(none)" || inst != "(none)") print pkg }' |
    grep -E "$re" | sort -V -u || true)
chosen=()
# Newest first; skip packages that apt cannot actually install (broken dependencies).
while read -r pkg; do
    [[ -n $pkg ]] || continue
    if installed "$pkg" || apt-get -s -qq install --no-install-recommends "$pkg" >/dev/null 2>&1; then
        chosen+=("$pkg")
    else
        echo "newest-headers: skipping $pkg: not installable" >&2
    fi
    ((${#chosen[@]} < 2)) || break
done < <(tac <<<"$cands")
((${#chosen[@]} == 2)) || exit 1
printf '%s\n' "${chosen[1]}" "${chosen[0]}"

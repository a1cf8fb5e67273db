#!/bin/bash
# Prints the two newest usable linux-headers-<ABI>-FLAVOUR packages apt offers, oldest first, one a
# line; exits 1 when there are fewer than two. Usable: installed, or installable (apt can resolve
# it). Never the -cloud-, -rt- or +debNN series names. The one rule for choosing the test kernels:
# used on the host by tests/setup/install-deps.sh and inside the test chroots by
# tests/deb/base-inside.sh and tests/pm/base-inside.sh.
#
#   newest-headers.sh FLAVOUR        (Debian: the architecture, amd64; Ubuntu: generic)
set -euo pipefail
flavour=${1:?usage: newest-headers.sh FLAVOUR}
# Debian: linux-headers-6.1.0-56-amd64; Ubuntu: linux-headers-6.8.0-45-generic. The ABI part is
# digits, dots and dashes only, which keeps out -cloud-amd64, -rt-amd64 and meta packages.
re="^linux-headers-[0-9]+\\.[0-9]+(\\.[0-9]+)?-[0-9][0-9.]*-${flavour}\$"
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

#!/bin/bash
# The one rule for the two test kernels, in two modes:
#
#   newest-headers.sh [FLAVOUR]               what to install: the two newest usable
#                                             linux-headers-<ABI>-FLAVOUR packages apt offers, one a
#                                             line, oldest first. Usable: installed, or installable
#                                             (apt can resolve it).
#   newest-headers.sh --installed [FLAVOUR]   what is installed: the kernel versions (<ABI>-FLAVOUR)
#                                             of the two newest such packages that are installed and
#                                             whose /lib/modules/K/build has include/ and a Makefile,
#                                             oldest first, one a line.
#
# Both exit 1 when there are fewer than two.
# FLAVOUR defaults to $DKMS_TRIGGER_TEST_FLAVOUR, else generic on Ubuntu and the architecture
# (amd64) on Debian. Used on the host by tests/setup/install-deps.sh (to choose, then to verify and
# print what it installed), inside the test chroots by tests/deb/base-inside.sh and
# tests/pm/base-inside.sh, and by the Rust tests (tests/common/kernels.rs: the real-system tests
# and benchmarks run on the kernels `--installed` prints), so no test depends on which ABIs the
# archive carries today.
#
# Only the release's default kernel series counts: the one the meta package linux-headers-FLAVOUR
# depends on. Its ABI with the ABI number made a wildcard is the series (6.1.0-N, 6.12.N+deb13,
# 6.8.0-N): Debian 12 also offers a 6.12.N+deb12 series, which is not its default kernel, and the
# flavour must follow the ABI at once, which keeps out -cloud-amd64, -rt-amd64 and meta packages.
# Where apt knows no linux-headers-FLAVOUR (no package lists), --installed falls back to ABIs of
# digits, dots and dashes.
set -euo pipefail
mode=apt
if [[ ${1:-} == --installed ]]; then
    mode=installed
    shift
fi
flavour=${1:-${DKMS_TRIGGER_TEST_FLAVOUR:-}}
if [[ -z $flavour ]]; then
    case "$(. /etc/os-release 2>/dev/null && echo "${ID:-}")" in
        ubuntu) flavour=generic ;;
        *) flavour=$(dpkg --print-architecture) ;; # Debian names the flavour after the arch: amd64
    esac
fi
# The default series, e.g. "6.12.57+deb13" -> 6\.12\.[0-9]+\+deb13.
esc() { sed 's/[.+]/\\&/g' <<<"$1"; }
default=$(apt-cache depends "linux-headers-$flavour" 2>/dev/null |
    sed -n "s/^ *Depends: linux-headers-\(.*\)-$flavour\$/\1/p" | head -n 1)
if [[ $default =~ ^(.*[^0-9])([0-9]+)(\+deb[0-9]+)$ || $default =~ ^(.*[^0-9])([0-9]+)()$ ]]; then
    series="$(esc "${BASH_REMATCH[1]}")[0-9]+$(esc "${BASH_REMATCH[3]}")"
elif [[ $mode == installed ]]; then
    series="[0-9]+\\.[0-9]+(\\.[0-9]+)?-[0-9][0-9.]*"
else
    echo "newest-headers: linux-headers-$flavour names no default kernel series (got '$default')" >&2
    exit 1
fi
re="^linux-headers-${series}-${flavour}\$"
installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii"* ]]; }

if [[ $mode == installed ]]; then
    # Installed packages of the rule, newest first; a kernel counts when its headers are usable
    # where dkms looks for them.
    chosen=()
    while read -r pkg; do
        [[ -n $pkg ]] || continue
        k=${pkg#linux-headers-}
        if [[ -d /lib/modules/$k/build/include && -f /lib/modules/$k/build/Makefile ]]; then
            chosen+=("$k")
        else
            echo "newest-headers: skipping $pkg: /lib/modules/$k/build has no include/ or Makefile" >&2
        fi
        ((${#chosen[@]} < 2)) || break
    done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'linux-headers-*' 2>/dev/null |
        awk '$1 ~ /^ii/ { print $2 }' | grep -E "$re" | sort -V -r -u || true)
    if ((${#chosen[@]} < 2)); then
        echo "newest-headers: fewer than two installed linux-headers-*-$flavour kernels with usable headers" \
            "(found: ${chosen[*]:-none}): run tests/setup/install-deps.sh as root" >&2
        exit 1
    fi
    printf '%s\n' "${chosen[1]}" "${chosen[0]}"
    exit 0
fi

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

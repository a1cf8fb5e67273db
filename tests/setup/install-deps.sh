#!/bin/bash
# Installs what the real-dkms tests (tests/common, tests/world_smoke.rs) need on a Debian 12 or Ubuntu
# machine, as root: dkms, a toolchain, kmod, openssl, unshare, and the TWO NEWEST kernel header
# packages of the machine's flavour that the distribution offers, chosen at run time.
#
# Idempotent and fast when everything is present: no `apt-get update` unless something must be
# installed (or the package lists are missing). Ends by checking, with the rule the Rust tests use
# (`tests/setup/newest-headers.sh --installed`), that the test kernels are the ones it installed,
# and prints them, the last line being `kernels: K1 K2` (oldest first).
#
# Usage: tests/setup/install-deps.sh [--rpm] [--pacman] [--chroot] [--deb] [--flavour F] [--dry-run]
#   --rpm      rpm (rpm, rpmbuild) for rpm trigger tests; systemd (systemctl --root: is the boot
#              unit enabled in the test root)
#   --pacman   pacman-package-manager, zstd, libarchive-tools for ALPM hook tests; systemd (as --rpm)
#   --chroot   mmdebstrap for throwaway Debian chroots
#   --deb      debhelper, lintian, dpkg-dev for building the .deb; pkgconf and systemd's pkg-config
#              file (debian/rules asks it where units go) and systemd-analyze (the unit's check)
#   --flavour  kernel flavour of the header packages (default: amd64 on Debian amd64, generic on
#              Ubuntu); -cloud, -rt and other flavours are never picked by default. The Rust tests
#              read the flavour from DKMS_TRIGGER_TEST_FLAVOUR: set it to the same value for them.
#   --dry-run  show what would be installed, install nothing (still runs apt-get update if needed)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# Package lists older than this are refreshed before installing anything.
LISTS_MAX_AGE_MIN=$((6 * 60))

extra=()
flavour=""
dry_run=""
while (($#)); do
    case "$1" in
        --rpm) extra+=(rpm systemd) ;;
        --pacman) extra+=(pacman-package-manager zstd libarchive-tools systemd) ;;
        --chroot) extra+=(mmdebstrap) ;;
        --deb) extra+=(debhelper lintian dpkg-dev pkgconf systemd deb_systemd_dev) ;;
        --flavour) flavour="${2:?--flavour needs a value}"; shift ;;
        --flavour=*) flavour="${1#*=}" ;;
        --dry-run) dry_run=1 ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "install-deps: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "install-deps: $*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) = 0 ]] || die "must run as root"
command -v apt-get >/dev/null && command -v dpkg-query >/dev/null ||
    die "needs a Debian or Ubuntu system (apt-get, dpkg-query)"

base=(dkms gcc make libc6-dev kmod openssl bash util-linux)

# The default flavour (generic on Ubuntu, the architecture on Debian) is newest-headers.sh's.
rule=$(dirname "$0")/newest-headers.sh
installed() { # PKG: installed and configured
    [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == "ii"* ]]
}

lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

lists_fresh() {
    lists_present || return 1
    # Fresh when some Packages file is younger than the limit.
    [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin "-$LISTS_MAX_AGE_MIN" -print -quit) ]]
}

updated=""
apt_update() {
    [[ -n $updated ]] && return
    say "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    updated=1
}

# The two newest usable header packages (oldest first): the rule shared with the test chroots.
choose_headers() {
    "$rule" ${flavour:+"$flavour"}
}

lists_present || apt_update

headers=""
if ! headers=$(choose_headers); then
    # Stale lists may simply not know the current ABIs.
    if [[ -z $updated ]]; then
        apt_update
        headers=$(choose_headers) || true
    fi
fi
[[ $(wc -w <<<"$headers") == 2 ]] ||
    die "fewer than two installable linux-headers-*-${flavour:-<default flavour>} packages are offered (check /etc/apt/sources.list*, or pass --flavour)"

# systemd.pc is in systemd-dev from Debian 13 on, in systemd before: the placeholder becomes
# systemd-dev where the archive has it.
for i in "${!extra[@]}"; do
    if [[ ${extra[$i]} == deb_systemd_dev ]]; then
        if apt-cache show systemd-dev >/dev/null 2>&1; then extra[i]=systemd-dev; else unset 'extra[i]'; fi
    fi
done

# shellcheck disable=SC2206
wanted=("${base[@]}" "${extra[@]}" $headers)
missing=()
for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done

if ((${#missing[@]})); then
    if ! lists_fresh && [[ -z $updated ]]; then
        apt_update
        # Newer ABIs may have appeared: choose again.
        if new=$(choose_headers) && [[ $new != "$headers" ]]; then
            headers=$new
            # shellcheck disable=SC2206
            wanted=("${base[@]}" "${extra[@]}" $headers)
            missing=()
            for p in "${wanted[@]}"; do installed "$p" || missing+=("$p"); done
        fi
    fi
fi

if ((${#missing[@]})); then
    say "installing: ${missing[*]}"
    if [[ -n $dry_run ]]; then
        say "(dry run: nothing installed)"
    else
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install failed"
    fi
else
    say "all packages present"
fi

chosen=$(for p in $headers; do echo "${p#linux-headers-}"; done)
if [[ -n $dry_run ]]; then
    echo "kernels:" $chosen
    exit 0
fi
# The test kernels as the Rust tests find them (the same script): they must be what was just
# installed, or the tests would run on other kernels than the ones this script vouches for.
found=$("$rule" --installed ${flavour:+"$flavour"}) ||
    die "the headers of $(echo $chosen) are installed but not usable under /lib/modules/K/build (see above)"
[[ $found == "$chosen" ]] ||
    die "the test kernels found on this machine ($(echo $found)) are not the ones installed ($(echo $chosen)): see above"
echo "kernels:" $found

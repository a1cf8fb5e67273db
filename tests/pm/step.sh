#!/bin/bash
# One step of the package-manager tests (tests/pm_e2e.rs), run as root on the host:
#
#   step.sh WORK NAME SCRIPT
#
# Mounts the test root WORK/state (tests/pm/enter.sh over the cached base root WORK/base-path),
# runs the bash SCRIPT with the helpers below, then writes into WORK/out/NAME/: `rc` (SCRIPT's exit
# status), `status.json` (`dkms-trigger status --json` inside the root, when installed) and copies
# of the counters the tests read (see `instrument`).
#
# Helpers for SCRIPT (ROOT is the mounted root; P is WORK/pkgs):
#   rpm_ ARGS...      rpm --root ROOT --dbpath /var/lib/rpm (Debian's packages are not in that
#                     database, hence --nodeps)
#   pacman_ ARGS...   pacman --root ROOT with WORK/pacman.conf and ROOT's /etc/pacman.d/hooks
#                     (pacman's --root does not move HookDir); dkms and kmod are Debian's, unknown
#                     to the pacman database, hence --assume-installed
#   inroot CMD...     CMD chrooted into ROOT with a clean environment
#   instrument        wraps dkms and depmod in ROOT so that every call is logged
#   fact KEY VALUE    records KEY=VALUE in WORK/out/NAME/facts for the test to read
# The helpers below are called by SCRIPT through eval.
# shellcheck disable=SC2317
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ -z ${DKMS_TRIGGER_PM_STEP:-} ]]; then
    work=$1
    base=$(cat "$work/base-path")
    DKMS_TRIGGER_PM_STEP=1 exec "$here/enter.sh" --lower "$base" --state "$work/state" -- "$0" "$@"
fi

WORK=$1 NAME=$2 SCRIPT=$3
# Everything below writes under ROOT: never let it be the host's /.
[[ -n ${ROOT:-} && $ROOT != / && -d $ROOT/usr ]] || { echo "step.sh: no test root mounted" >&2; exit 1; }
# P is for SCRIPT.
# shellcheck disable=SC2034
P=$WORK/pkgs
OUT=$WORK/out/$NAME
rm -rf "$OUT"
mkdir -p "$OUT"

rpm_() {
    rpm --root "$ROOT" --dbpath /var/lib/rpm --nodeps --force-debian "$@"
}

pacman_() {
    pacman --config "$WORK/pacman.conf" --root "$ROOT" --hookdir "$ROOT/etc/pacman.d/hooks/" \
        --assume-installed dkms=3.0.10 --assume-installed kmod=30 --noconfirm --noprogressbar "$@"
}

inroot() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

fact() {
    printf '%s=%s\n' "$1" "$2" >>"$OUT/facts"
}

# Logs every dkms call dkms-trigger makes (its config key `dkms` points at a logging wrapper) and
# every depmod call (a wrapper in place of /usr/sbin/depmod) into /var/log/pmtest/ in the root.
# /usr/sbin/dkms itself stays as it is: dkms-trigger reads dkms's version from that script.
instrument() {
    mkdir -p "$ROOT/var/log/pmtest" "$ROOT/usr/local/sbin" "$ROOT/etc/dkms-trigger/config.d"
    cat >"$ROOT/usr/local/sbin/pmtest-dkms" <<'EOF'
#!/bin/bash
# pm test instrumentation (tests/pm/step.sh): log, then run the real dkms.
printf '%s\n' "$*" >>/var/log/pmtest/dkms.log
exec /usr/sbin/dkms "$@"
EOF
    chmod 0755 "$ROOT/usr/local/sbin/pmtest-dkms"
    printf '%s\n' '# dkms-trigger package-manager tests (tests/pm/step.sh)' \
        'dkms = "/usr/local/sbin/pmtest-dkms"' 'keep_runs = 1000' \
        >"$ROOT/etc/dkms-trigger/config.d/90-pmtest.toml"
    if [[ ! -e $ROOT/usr/sbin/depmod.real ]]; then
        mv "$ROOT/usr/sbin/depmod" "$ROOT/usr/sbin/depmod.real"
        cat >"$ROOT/usr/sbin/depmod" <<'EOF'
#!/bin/bash
# pm test instrumentation (tests/pm/step.sh): log, then run the real depmod (kmod multi-call).
printf '%s\t%s\n' "$(cat /proc/$PPID/comm 2>/dev/null)" "$*" >>/var/log/pmtest/depmod.log
exec -a depmod /usr/sbin/depmod.real "$@"
EOF
        chmod 0755 "$ROOT/usr/sbin/depmod"
    fi
}

set +e
(
    set -euo pipefail
    eval "$SCRIPT"
)
rc=$?
set -e
echo "$rc" >"$OUT/rc"

if [[ -x $ROOT/usr/sbin/dkms-trigger || -x $ROOT/usr/bin/dkms-trigger ]]; then
    inroot dkms-trigger status --json >"$OUT/status.json" 2>"$OUT/status.err" || true
fi
for f in "$ROOT"/var/log/pmtest/*.log "$ROOT"/var/log/dkms-world/builds.log; do
    if [[ -f $f ]]; then cp "$f" "$OUT/"; fi
done
# Finalizer runs that did work: one directory each under /var/log/dkms-trigger.
if [[ -d $ROOT/var/log/dkms-trigger ]]; then
    find "$ROOT/var/log/dkms-trigger" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort >"$OUT/runs"
else
    : >"$OUT/runs"
fi
exit 0

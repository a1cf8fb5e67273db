#!/bin/bash
# Runs a command on the HOST with a throwaway test root mounted, in private mount and PID
# namespaces (nothing is mounted on the host; every process ends with the command):
#
#   enter.sh --lower DIR --state DIR -- COMMAND [ARGS...]
#
# The root is an overlay: --lower (the cached Debian root of tests/pm/base.sh) read-only below
# STATE/upper, which keeps every change between calls; it is mounted at STATE/root with /proc, /sys
# and /dev inside, so that rpm --root and pacman --root can chroot into it to run scriptlets and
# hooks. COMMAND runs with ROOT=STATE/root in its environment and its exit status is returned.
set -euo pipefail

if [[ -z ${DKMS_TRIGGER_PM_NS:-} ]]; then
    DKMS_TRIGGER_PM_NS=1 exec unshare --mount --pid --fork --kill-child --propagation private -- "$0" "$@"
fi

lower="" state=""
while (($#)); do
    case "$1" in
    --lower) lower=$2; shift 2 ;;
    --state) state=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "enter.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -d $lower && -n $state && $# -ge 1 ]] || { echo "enter.sh: usage: see the header" >&2; exit 2; }

mkdir -p "$state/upper" "$state/work" "$state/root"
ROOT=$state/root
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$state/upper,workdir=$state/work" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --make-rslave "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/run"
export ROOT
exec "$@"

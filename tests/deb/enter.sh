#!/bin/bash
# Runs a shell script inside a throwaway Debian chroot made of overlay layers, in private mount and
# PID namespaces (nothing is mounted on the host; every process ends with the script):
#
#   enter.sh --stage DIR --lower DIR[:DIR...] [--bind HOST:GUEST]... -- SCRIPT [ARGS...]
#
# DIR/upper receives every change (it becomes a lower layer of later stages), DIR/work is
# overlayfs's work directory, DIR/root the mount point. --lower lists read-only layers, top first.
# Inside: /proc, /sys and /dev mounted, the host's resolv.conf for apt, each --bind read-only,
# a clean environment, `bash -euo pipefail -c SCRIPT`, whose exit status is returned.
set -euo pipefail

if [[ -z ${DKMS_TRIGGER_ENTER_NS:-} ]]; then
    DKMS_TRIGGER_ENTER_NS=1 exec unshare --mount --pid --fork --kill-child --propagation private -- "$0" "$@"
fi

stage='' lower='' binds=()
while (($#)); do
    case "$1" in
    --stage) stage=$2; shift 2 ;;
    --lower) lower=$2; shift 2 ;;
    --bind) binds+=("$2"); shift 2 ;;
    --) shift; break ;;
    *) echo "enter.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -n $stage && -n $lower && $# -ge 1 ]] || { echo "enter.sh: usage: see the header" >&2; exit 2; }
script=$1
shift

mkdir -p "$stage/upper" "$stage/work" "$stage/root"
root=$stage/root
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$stage/upper,workdir=$stage/work" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
rm -f "$root/etc/resolv.conf"
cat /etc/resolv.conf >"$root/etc/resolv.conf"
for b in "${binds[@]}"; do
    host=${b%%:*} guest=${b#*:}
    mkdir -p "$root$guest"
    mount --bind "$host" "$root$guest"
    mount -o remount,bind,ro "$root$guest"
done

exec chroot "$root" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    /bin/bash -euo pipefail -c "$script" enter "$@"

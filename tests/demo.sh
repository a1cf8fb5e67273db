#!/usr/bin/env bash
# The README's try-it command (`make demo`): runs dkms-trigger's main job for real, with the real
# dkms and real headers, in a throwaway DKMS world that leaves the host untouched.
#
#  1. installs what it needs from the distribution (dkms, a compiler, the two newest linux-headers
#     ABIs) with tests/setup/install-deps.sh;
#  2. makes a private mount namespace with overlays over /usr/src, the modules directory, /etc and
#     /var, and empty directories over /var/lib/dkms, /var/lib/dkms-trigger, /var/log/dkms-trigger,
#     /etc/dkms-trigger and /boot (all in a temporary directory, removed at the end);
#  3. generates sample modules: one already installed for the older kernel, a driver and an add-on
#     that BUILD_DEPENDS on it, and a legacy module supported on the older kernel only;
#  4. records what a real upgrade's hooks would (new kernel, its headers, two module packages, the
#     add-on's package recorded before its dependency's), then runs `plan`, `finalize` and `status`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) = 0 ]] || { echo "demo: run as root (it uses mount namespaces and the real dkms)" >&2; exit 4; }

if [[ -z ${DKMS_TRIGGER_DEMO_INSIDE:-} ]]; then
    kernels=$("$here/tests/setup/install-deps.sh" | sed -n 's/^kernels: //p')
    read -r k1 k2 <<<"$kernels"
    [[ -n ${k1:-} && -n ${k2:-} ]] || { echo "demo: need two kernels with headers" >&2; exit 1; }
    bin=${DKMS_TRIGGER:-$here/target/release/dkms-trigger}
    [[ -x $bin ]] || (cd "$here" && cargo build --release --locked)
    world=$(mktemp -d /tmp/dkms-trigger-demo.XXXXXX)
    trap 'rm -rf "$world"' EXIT
    echo "== throwaway world in $world; kernels $k1 (installed) and $k2 (arriving in the upgrade)"
    DKMS_TRIGGER_DEMO_INSIDE=1 DEMO_WORLD=$world DEMO_BIN=$bin DEMO_K1=$k1 DEMO_K2=$k2 \
        unshare --mount --pid --fork --kill-child --mount-proc --propagation private "$0"
    exit $?
fi

# ---- inside the private namespace ----------------------------------------------------------------
w=$DEMO_WORLD k1=$DEMO_K1 k2=$DEMO_K2
modules=$(readlink -f /lib/modules)
mount --make-rprivate /
for d in /usr/src "$modules" /etc /var /usr/local; do
    slug=$(echo "$d" | tr / _)
    mkdir -p "$w/upper/$slug" "$w/work/$slug"
    mount -t overlay demo -o "lowerdir=$d,upperdir=$w/upper/$slug,workdir=$w/work/$slug" "$d"
done
for d in /var/lib/dkms /var/lib/dkms-trigger /var/log/dkms-trigger /etc/dkms-trigger /boot; do
    slug=$(echo "$d" | tr / _)
    mkdir -p "$w/fresh/$slug" "$d"
    mount --bind "$w/fresh/$slug" "$d"
done
install -D -m 0755 "$DEMO_BIN" /usr/local/sbin/dkms-trigger
export PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
touch "/boot/vmlinuz-$k1" "/boot/vmlinuz-$k2"

# A tiny module: NAME VERSION [extra dkms.conf lines...]
module() {
    local name=$1 version=$2 dir=/usr/src/$1-$2
    shift 2
    mkdir -p "$dir"
    {
        echo "PACKAGE_NAME=\"$name\""
        echo "PACKAGE_VERSION=\"$version\""
        echo "BUILT_MODULE_NAME[0]=\"$name\""
        echo 'DEST_MODULE_LOCATION[0]="/updates/dkms"'
        echo 'AUTOINSTALL="yes"'
        printf '%s\n' "$@"
    } >"$dir/dkms.conf"
    echo "obj-m := $name.o" >"$dir/Makefile"
    cat >"$dir/$name.c" <<C
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
static int __init demo_init(void) { return 0; }
static void __exit demo_exit(void) { }
module_init(demo_init);
module_exit(demo_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dkms-trigger demo module $name $version");
C
}
step() { printf '\n== %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

step "before the upgrade: wifi-demo is installed for $k1 (as on a real machine)"
module wifi-demo 1.0
module legacy-demo 0.9 "BUILD_EXCLUSIVE_KERNEL=\"^${k1//./\\.}\$\""
for m in wifi-demo/1.0 legacy-demo/0.9; do
    dkms add -m "${m%/*}" -v "${m#*/}" >/dev/null
    dkms install -m "${m%/*}" -v "${m#*/}" -k "$k1" >/dev/null
done
dkms status

step "the upgrade unpacks a new kernel $k2, its headers, and two module packages"
module gpu-demo 2.0
module gpu-addon-demo 1.0 'BUILD_DEPENDS[0]="gpu-demo"'
echo "   (each package hook records its intent and returns at once; the add-on comes before its dependency)"
run dkms-trigger record --source dpkg:linux-image-$k2 kernel-added "$k2"
run dkms-trigger record --source dpkg:gpu-addon-demo-dkms module-changed gpu-addon-demo/1.0
run dkms-trigger record --source dpkg:linux-headers-$k2 headers-changed "$k2"
run dkms-trigger record --source dpkg:gpu-demo-dkms module-changed gpu-demo/2.0
run dkms-trigger spool

step "what the finalizer will do (dkms-trigger plan)"
run dkms-trigger plan

step "end of the transaction: one finalize builds everything once, in dependency order"
set +e
run dkms-trigger finalize
rc=$?
set -e
echo "finalize exit status: $rc (a module that cannot be built for a kernel event is a warning, not an error)"

step "the result (dkms-trigger status, then dkms's own view)"
run dkms-trigger status
run dkms status

step "a second finalize has nothing to do"
run dkms-trigger finalize
echo "(nothing printed: nothing pending)"

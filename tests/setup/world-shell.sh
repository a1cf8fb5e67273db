#!/bin/bash
# Runs a command (default: an interactive bash) inside a World that a test kept, for debugging:
#
#   DKMS_WORLD_KEEP=1 cargo test --release --test world_smoke -- --nocapture   (prints the kept dirs)
#   tests/setup/world-shell.sh /tmp/dkms-world.XXXX ['shell text']
#
# Same namespace setup as tests/common/world.rs (it sources the world's generated setup.sh), same
# environment. Only one process may use a world at a time. Remove the dir with rm -rf when done.
set -euo pipefail
dir=${1:?usage: world-shell.sh WORLD_DIR ['shell text']}
shift
[[ -f $dir/setup.sh ]] || { echo "world-shell: $dir/setup.sh missing (not a kept World?)" >&2; exit 2; }
dir=$(cd "$dir" && pwd)
if (($#)); then
    cmd="$*" # shell text, as for `bash -c`
else
    cmd="exec bash --norc -i"
fi
exec unshare --mount --pid --fork --kill-child --mount-proc --propagation private \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C \
    DKMS_WORLD="$dir" DKMS_TRIGGER=/usr/local/sbin/dkms-trigger TERM="${TERM:-dumb}" \
    bash -euo pipefail -c ". '$dir/setup.sh'; set +eu +o pipefail; $cmd"

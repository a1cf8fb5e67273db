#!/usr/bin/env bash
# The README's try-it command: records what a kernel upgrade's hooks would record, into a
# throwaway root, and shows the resulting spool and configuration. Touches nothing on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${DKMS_TRIGGER:-target/release/dkms-trigger}
[ -x "$bin" ] || cargo build --release --locked
world=$(mktemp -d /tmp/dkms-trigger-demo.XXXXXX)
trap 'rm -rf "$world"' EXIT
dt() { echo "+ dkms-trigger $*"; "$bin" --root "$world" "$@"; }

echo "== a kernel upgrade transaction, as the package hooks record it (root: $world)"
dt record --source dpkg:linux-image-6.1.0-99-amd64 kernel-added 6.1.0-99-amd64
dt record --source dpkg:linux-headers-6.1.0-99-amd64 headers-changed 6.1.0-99-amd64
dt record --source dpkg:nvidia-dkms module-changed nvidia/535.104.05
dt record --source dpkg:nvidia-fs-dkms module-changed nvidia-fs/2.26.6
dt record --source dpkg:linux-headers-6.1.0-99-amd64 headers-changed 6.1.0-99-amd64
echo "== what is pending for the finalizer"
dt spool
echo "== a hostile kernel version is refused (exit 2) and nothing is written"
dt record kernel-added ../../etc || echo "exit status $?"
echo "== effective configuration"
dt config

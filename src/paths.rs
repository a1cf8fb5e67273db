//! Every location the tool knows, as paths relative to the root handle (see `root.rs`).
//!
//! Nothing else in the crate spells a system path: code joins these onto a `Root`, so tests can run
//! against a fake root in a temporary directory and `--root` can point at an image or chroot.

/// The tool's private state directory (mode 0700).
pub const STATE_DIR: &str = "var/lib/dkms-trigger";
/// File names inside `STATE_DIR`.
pub const SPOOL_FILE: &str = "spool.toml";
pub const SPOOL_LOCK: &str = "spool.lock";
pub const STATE_FILE: &str = "state.toml";
pub const STATE_LOCK: &str = "state.lock";
pub const FINALIZE_LOCK: &str = "finalize.lock";

/// Per-run job logs: `LOG_DIR/<run-id>/`.
pub const LOG_DIR: &str = "var/log/dkms-trigger";

/// Configuration: the main file and its drop-in directory.
pub const CONFIG_FILE: &str = "etc/dkms-trigger/config.toml";
pub const CONFIG_DROPIN_DIR: &str = "etc/dkms-trigger/config.d";

/// The documentation the packages install (the Makefile's DOCDIR), named by the man page.
pub const DOC_DIR: &str = "usr/share/doc/dkms-trigger";

/// Kernel module trees; both are read and merged (merged-/usr systems make them the same directory).
pub const MODULE_DIRS: [&str; 2] = ["lib/modules", "usr/lib/modules"];
/// Where kernel images live when not inside the modules directory.
pub const BOOT_DIR: &str = "boot";

/// Fedora's kernel-devel header trees (`usr/src/kernels/K`).
pub const KERNEL_DEVEL_TREE: &str = "usr/src/kernels";
/// Debian's header trees are `usr/src/linux-headers-K`.
pub const HEADERS_DIR_PREFIX: &str = "linux-headers-";

/// DKMS's own trees and configuration.
pub const DKMS_TREE: &str = "var/lib/dkms";
pub const SOURCE_TREE: &str = "usr/src";
pub const DKMS_ETC: &str = "etc/dkms";
/// The distribution identification dkms reads (`running_distribution`).
pub const OS_RELEASE: &str = "etc/os-release";

/// Initramfs tools, by which one a system has (`backend/initrd.rs`).
pub const MKINITCPIO: &str = "usr/bin/mkinitcpio";
pub const UPDATE_INITRAMFS: &str = "usr/sbin/update-initramfs";
pub const DRACUT: [&str; 2] = ["usr/bin/dracut", "usr/sbin/dracut"];
/// Where initramfs-tools and dracut are told which modules to include (`initrd::wanted`).
pub const INITRAMFS_TOOLS_MODULES: &str = "etc/initramfs-tools/modules";
pub const INITRAMFS_TOOLS_MODULES_D: [&str; 1] = ["usr/share/initramfs-tools/modules.d"];
pub const DRACUT_CONF: &str = "etc/dracut.conf";
pub const DRACUT_CONF_D: [&str; 2] = ["etc/dracut.conf.d", "usr/lib/dracut/dracut.conf.d"];
/// Debian's kernel install hooks (run-parts, in lexical order) and ours among them.
pub const KERNEL_POSTINST_DIR: &str = "etc/kernel/postinst.d";
pub const OUR_KERNEL_HOOK: &str = "dkms-trigger";
/// Debian kernel hooks that make the new kernel's initramfs (initramfs-tools', dracut's).
pub const DEBIAN_INITRAMFS_HOOKS: [&str; 2] = ["initramfs-tools", "dracut"];
/// kernel-install(8) plugin directories, and ours among the plugins (hooks/rpm).
pub const KERNEL_INSTALL_DIRS: [&str; 2] = ["etc/kernel/install.d", "usr/lib/kernel/install.d"];
pub const OUR_KERNEL_INSTALL_PLUGIN: &str = "45-dkms-trigger.install";

/// Where the dkms script may be, in the order dkms's Makefile and distributions install it.
pub const DKMS_SCRIPTS: [&str; 3] = ["usr/sbin/dkms", "sbin/dkms", "usr/bin/dkms"];
/// Where the compiler a kernel config names is looked for, in PATH order.
pub const BIN_DIRS: [&str; 3] = ["usr/local/bin", "usr/bin", "bin"];
/// gcc's per-target directories holding `cc1` (`TRIPLET/MAJOR/cc1`): Debian 12, Debian 13 and later.
pub const GCC_LIB_DIRS: [&str; 2] = ["usr/lib/gcc", "usr/libexec/gcc"];
/// The running kernel, as the host's /proc says (whatever the root).
pub const PROC_OSRELEASE: &str = "/proc/sys/kernel/osrelease";
pub const PROC_ARCH: &str = "/proc/sys/kernel/arch";
/// The running kernel as `boot` reads it: relative to the root, so that a test can put another
/// release there (`boot::running_kernel`).
pub const PROC_OSRELEASE_IN_ROOT: &str = "proc/sys/kernel/osrelease";
/// What `boot`'s catch-up left unbuilt for the running kernel (inside `STATE_DIR`).
pub const BOOT_CHECKED: &str = "boot-checked";
/// Package databases, to name the headers package the running kernel lacks (`boot`).
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";
pub const RPM_DBS: [&str; 2] = ["var/lib/rpm", "usr/lib/sysimage/rpm"];

/// Rebuilds in progress (`executor/swap.rs`): `SWAP_DIR/M/V/K/A`, inside the private state directory.
pub const SWAP_DIR: &str = "var/lib/dkms-trigger/swap";

/// Scratch state the rpm scriptlets and `hook rpm-*` share during one rpm transaction (rpm's own
/// per-package state directory, var/lib/rpm-state).
pub const RPM_STATE_DIR: &str = "var/lib/rpm-state/dkms-trigger";

/// The running system's process table, the one absolute path here: the processes a hook runs
/// under are the host's whatever `--root` says (a Debian hook reads its ancestors' arguments).
pub const PROC_DIR: &str = "/proc";

/// Module sources found unusable and reported as an error once (`hook/debian.rs`):
/// `UNUSABLE_DIR/NAME-VERSION` holds the source's digest when it was reported.
pub const UNUSABLE_DIR: &str = "var/lib/dkms-trigger/unusable";
/// dkms's common.postinst (what dh_dkms module packages run), diverted while dkms-trigger is
/// installed, and where the diversion keeps dkms's own.
pub const DKMS_COMMON_POSTINST: &str = "usr/lib/dkms/common.postinst";
/// Where private scratch directories are made, in order (`root::scratch_dir`): sticky, root's,
/// and never chosen by the caller's environment.
pub const SCRATCH_DIRS: [&str; 2] = ["/dev/shm", "/tmp"];

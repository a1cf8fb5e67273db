//! Installed kernels: the directories under lib/modules and usr/lib/modules, with their headers,
//! image, arch, initramfs and kernel-side fingerprint.

use super::prints::{self, KernelCache};
use super::resolve::{relative, resolve, resolve_host};
use super::sorted_names;
use super::Kernel;
use crate::fingerprint::Fingerprint;
use crate::paths::{BOOT_DIR, MODULE_DIRS};
use crate::root::{MetadataExt, Root};
use crate::validate::{check, shown, What};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The few kernel config values the scan uses (arch, compiler), read from the headers' .config.
#[derive(Debug, Clone, Default)]
pub(crate) struct KConfig(BTreeMap<String, String>);

const CONFIG_KEYS: [&str; 14] = [
    "CONFIG_X86_64",
    "CONFIG_ARM64",
    "CONFIG_PPC64",
    "CONFIG_CPU_LITTLE_ENDIAN",
    "CONFIG_S390",
    "CONFIG_RISCV",
    "CONFIG_LOONGARCH",
    "CONFIG_MIPS",
    "CONFIG_64BIT",
    "CONFIG_CC_VERSION_TEXT",
    "CONFIG_CC_IS_GCC",
    "CONFIG_CC_IS_CLANG",
    "CONFIG_GCC_VERSION",
    "CONFIG_CLANG_VERSION",
];

impl KConfig {
    /// Reads `path`; a missing or unreadable file gives an empty config.
    pub(crate) fn read(root: &Root, path: &Path) -> KConfig {
        root.read(path).map(|b| KConfig::parse(&String::from_utf8_lossy(&b))).unwrap_or_default()
    }

    fn parse(text: &str) -> KConfig {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            if CONFIG_KEYS.contains(&key) {
                let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
                map.insert(key.to_string(), value.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
        }
        KConfig(map)
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> KConfig {
        KConfig(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn yes(&self, key: &str) -> bool {
        self.get(key) == Some("y")
    }

    /// The arch as dkms names it (`uname -m` of that kernel), when the config alone says it.
    /// 32-bit x86 and ARM have several `uname -m` spellings, so they fall back to the machine's.
    fn arch(&self) -> Option<&'static str> {
        let arch = if self.yes("CONFIG_X86_64") {
            "x86_64"
        } else if self.yes("CONFIG_ARM64") {
            "aarch64"
        } else if self.yes("CONFIG_PPC64") {
            if self.yes("CONFIG_CPU_LITTLE_ENDIAN") {
                "ppc64le"
            } else {
                "ppc64"
            }
        } else if self.yes("CONFIG_S390") {
            "s390x"
        } else if self.yes("CONFIG_RISCV") && self.yes("CONFIG_64BIT") {
            "riscv64"
        } else if self.yes("CONFIG_LOONGARCH") && self.yes("CONFIG_64BIT") {
            "loongarch64"
        } else if self.yes("CONFIG_MIPS") && self.yes("CONFIG_64BIT") {
            "mips64"
        } else {
            return None;
        };
        Some(arch)
    }
}

/// A kernel directory found under one of the module trees.
struct Dir {
    /// Host path, resolved.
    path: PathBuf,
    id: (u64, u64),
    /// Holds modules.*, a build entry or an image: not a leftover.
    real: bool,
}

/// Finds every kernel; `machine` is `uname -m`, the arch of kernels whose config does not say.
/// With merged /usr both trees lead to the same directories: each kernel is reported once, at its
/// resolved location (`usr/lib/modules/K`). On a split /usr where both trees hold a directory for
/// the same kernel, the one with content wins, lib/modules on a tie (that is where kmod and dkms
/// look), and the other is named in a note.
pub(crate) fn scan(
    root: &Root,
    machine: &str,
    cache: &mut KernelCache,
    notes: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, Kernel>> {
    let mut dirs: BTreeMap<String, Dir> = BTreeMap::new();
    for base in MODULE_DIRS {
        let Ok(tree) = resolve(root, Path::new(base)) else { continue };
        if !root.is_dir(&tree) {
            continue;
        }
        for name in sorted_names(root, &tree).with_context(|| format!("reading {}", tree.display()))? {
            if let Err(e) = check(What::KernelVersion, &name) {
                notes.push(format!("{base}/{}: skipped: {e}", shown(&name)));
                continue;
            }
            let Ok(path) = resolve_host(root, &tree.join(&name)) else { continue };
            let Ok(md) = root.stat(&path) else { continue };
            if !md.is_dir() {
                continue;
            }
            let dir = Dir { real: looks_real(root, &path, &name), path, id: (md.dev(), md.ino()) };
            let replace = match dirs.get(&name) {
                None => true,
                Some(kept) if kept.id == dir.id => false,
                Some(kept) => {
                    let replace = dir.real && !kept.real;
                    let (used, other) = if replace { (&dir.path, &kept.path) } else { (&kept.path, &dir.path) };
                    notes.push(format!(
                        "kernel {name}: {} and {} are different directories; using the first",
                        relative(root, used),
                        relative(root, other)
                    ));
                    replace
                }
            };
            if replace {
                dirs.insert(name, dir);
            }
        }
    }
    let mut trees = HashMap::new();
    Ok(dirs
        .into_iter()
        .map(|(k, dir)| (k.clone(), kernel(root, &k, &dir.path, machine, cache, &mut trees, notes)))
        .collect())
}

fn looks_real(root: &Root, dir: &Path, k: &str) -> bool {
    has_modules_files(root, dir) || root.lstat(dir.join("build")).is_ok() || image(root, dir, k)
}

fn has_modules_files(root: &Root, dir: &Path) -> bool {
    root.list(dir).map(|names| names.iter().any(|n| n.to_string_lossy().starts_with("modules."))).unwrap_or(false)
}

fn is_file(root: &Root, host: &Path) -> bool {
    resolve_host(root, host).is_ok_and(|p| root.is_file(p))
}

/// Whether kernel `k` has an image installed (in any of the modules trees, or in boot/): a
/// headers package going away while it stays leaves its DKMS builds alone.
pub(crate) fn has_image(root: &Root, k: &str) -> bool {
    crate::paths::MODULE_DIRS.iter().any(|d| image(root, &root.path(d).join(k), k))
}

fn image(root: &Root, dir: &Path, k: &str) -> bool {
    let boot = root.path(BOOT_DIR);
    [boot.join(format!("vmlinuz-{k}")), boot.join(format!("vmlinux-{k}")), dir.join("vmlinuz"), dir.join("vmlinux")]
        .iter()
        .any(|p| is_file(root, p))
}

/// `trees`: the trust rule's verdict on the program trees of headers (shared between kernels).
fn kernel(
    root: &Root,
    k: &str,
    dir: &Path,
    machine: &str,
    cache: &mut KernelCache,
    trees: &mut HashMap<PathBuf, Option<String>>,
    notes: &mut Vec<String>,
) -> Kernel {
    let modules_dir = relative(root, dir);
    let build = dir.join("build");
    let headers = match resolve_host(root, &build) {
        Ok(h) if root.is_file(h.join("Makefile")) => match super::trust::headers(root, &build, trees) {
            None => Some(h),
            Some(why) => {
                notes.push(format!("kernel {k}: headers not used, root may not trust them: {why}"));
                None
            }
        },
        Ok(h) => {
            notes.push(format!("kernel {k}: {} has no Makefile: no usable headers", relative(root, &h)));
            None
        }
        Err(e) if root.lstat(&build).is_ok() => {
            notes.push(format!("kernel {k}: {modules_dir}/build does not resolve ({e}): no usable headers"));
            None
        }
        Err(_) => None,
    };
    let image = image(root, dir, k);
    if headers.is_none() && !image && !has_modules_files(root, dir) && root.lstat(&build).is_err() {
        notes.push(format!(
            "kernel {k}: {modules_dir} holds no modules.* files, build link or image: left over by a removed \
             kernel package (no headers, no image)"
        ));
    }
    let config = headers.as_ref().map(|h| KConfig::read(root, &h.join(".config"))).unwrap_or_default();
    let arch = config.arch().unwrap_or(machine).to_string();
    let boot = root.path(BOOT_DIR);
    let initramfs = [
        boot.join(format!("initrd.img-{k}")),
        boot.join(format!("initramfs-{k}.img")),
        boot.join(format!("initrd-{k}")),
        dir.join("initramfs.img"),
    ]
    .into_iter()
    .find(|p| is_file(root, p))
    .map(|p| relative(root, &p));
    let print = match &headers {
        Some(h) => prints::kernel_side(root, h, &config, cache),
        None => Fingerprint::default(),
    };
    Kernel { version: k.to_string(), modules_dir, headers, image, arch, initramfs, print }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_from_config() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CONFIG_X86_64=y\nCONFIG_64BIT=y\n", Some("x86_64")),
            ("CONFIG_ARM64=y\n", Some("aarch64")),
            ("CONFIG_PPC64=y\nCONFIG_CPU_LITTLE_ENDIAN=y\n", Some("ppc64le")),
            ("CONFIG_PPC64=y\n", Some("ppc64")),
            ("CONFIG_S390=y\n", Some("s390x")),
            ("CONFIG_RISCV=y\nCONFIG_64BIT=y\n", Some("riscv64")),
            ("CONFIG_X86_32=y\n", None),
            ("# CONFIG_X86_64 is not set\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(KConfig::parse(text).arch(), *want, "{text}");
        }
        let c = KConfig::parse("CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n");
        assert_eq!(c.get("CONFIG_CC_VERSION_TEXT"), Some("gcc-12 (Debian 12.2.0-14) 12.2.0"));
    }
}

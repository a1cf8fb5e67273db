//! Intents: what a hook saw happen ("kernel K was added", "module M/V changed"...), the unit the
//! spool stores and the planner consumes. Conversion to and from the spool's TOML fields lives here.

use crate::validate::{check, module_spec, What};
use std::fmt;

/// A module selector of `rebuild -m`: a name, optionally with one version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleSel {
    pub name: String,
    pub version: Option<String>,
}

impl fmt::Display for ModuleSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}/{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl std::str::FromStr for ModuleSel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, version) = module_spec(s, true)?;
        Ok(ModuleSel { name, version })
    }
}

/// One recorded event. Lists are kept sorted and deduplicated so equal intents compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Intent {
    /// A kernel (image and modules directory) was installed.
    KernelAdded { kernel: String },
    /// A kernel's headers were installed, upgraded or reconfigured; `force` rebuilds what is built.
    HeadersChanged { kernel: String, force: bool },
    /// A DKMS module source was installed or upgraded.
    ModuleChanged { module: String, version: String },
    /// Something every build consumes changed (kbuild, compiler); empty = all kernels.
    ToolchainChanged { kernels: Vec<String> },
    /// Reconcile everything.
    Rescan,
    /// An explicit, forced rebuild; empty lists mean all kernels with headers / all AUTOINSTALL modules.
    Rebuild { kernels: Vec<String>, modules: Vec<ModuleSel> },
    /// Written by the finalizer, not by hooks: one pair whose BUILD_DEPENDS dependency DKMS did not
    /// know yet, with the strength and failure policy of the intents that wanted it.
    Deferred { module: String, version: String, kernel: String, force: bool, module_event: bool },
}

impl Intent {
    /// The kind as written on the command line and in the spool.
    pub fn kind(&self) -> &'static str {
        match self {
            Intent::KernelAdded { .. } => "kernel-added",
            Intent::HeadersChanged { .. } => "headers-changed",
            Intent::ModuleChanged { .. } => "module-changed",
            Intent::ToolchainChanged { .. } => "toolchain-changed",
            Intent::Rescan => "rescan",
            Intent::Rebuild { .. } => "rebuild",
            Intent::Deferred { .. } => "deferred",
        }
    }

    /// Sorts and deduplicates list arguments, so that argument order does not make intents differ.
    pub fn normalized(mut self) -> Intent {
        match &mut self {
            Intent::ToolchainChanged { kernels } => {
                kernels.sort();
                kernels.dedup();
            }
            Intent::Rebuild { kernels, modules } => {
                kernels.sort();
                kernels.dedup();
                modules.sort();
                modules.dedup();
            }
            _ => {}
        }
        self
    }

    /// The spool fields (kind and arguments) of this intent.
    pub fn to_fields(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("kind".into(), self.kind().into());
        let list = |v: &[String]| toml::Value::Array(v.iter().map(|s| s.as_str().into()).collect());
        match self {
            Intent::KernelAdded { kernel } => {
                t.insert("kernel".into(), kernel.as_str().into());
            }
            Intent::HeadersChanged { kernel, force } => {
                t.insert("kernel".into(), kernel.as_str().into());
                t.insert("force".into(), (*force).into());
            }
            Intent::ModuleChanged { module, version } => {
                t.insert("module".into(), module.as_str().into());
                t.insert("version".into(), version.as_str().into());
            }
            Intent::ToolchainChanged { kernels } => {
                t.insert("kernels".into(), list(kernels));
            }
            Intent::Rescan => {}
            Intent::Rebuild { kernels, modules } => {
                t.insert("kernels".into(), list(kernels));
                let mods: Vec<String> = modules.iter().map(|m| m.to_string()).collect();
                t.insert("modules".into(), list(&mods));
            }
            Intent::Deferred { module, version, kernel, force, module_event } => {
                t.insert("module".into(), module.as_str().into());
                t.insert("version".into(), version.as_str().into());
                t.insert("kernel".into(), kernel.as_str().into());
                t.insert("force".into(), (*force).into());
                t.insert("module_event".into(), (*module_event).into());
            }
        }
        t
    }

    /// Reads an intent back from spool fields. `Err` explains why it cannot be understood: an unknown
    /// kind (written by a newer version) or invalid arguments (a hand-edited file); such entries are
    /// kept in the spool and reported, never acted on or dropped.
    pub fn from_fields(t: &toml::Table) -> Result<Intent, String> {
        let kind = t.get("kind").and_then(|v| v.as_str()).ok_or("no kind")?;
        let s = |key: &str, what: What| -> Result<String, String> {
            let v = t.get(key).and_then(|v| v.as_str()).ok_or_else(|| format!("{kind}: no '{key}'"))?;
            check(what, v)?;
            Ok(v.to_string())
        };
        let kernels = |key: &str| -> Result<Vec<String>, String> {
            match t.get(key) {
                None => Ok(Vec::new()),
                Some(toml::Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        let k = v.as_str().ok_or("kernel list holds a non-string")?;
                        check(What::KernelVersion, k)?;
                        Ok(k.to_string())
                    })
                    .collect(),
                Some(_) => Err(format!("{kind}: '{key}' is not a list")),
            }
        };
        let intent = match kind {
            "kernel-added" => Intent::KernelAdded { kernel: s("kernel", What::KernelVersion)? },
            "headers-changed" => Intent::HeadersChanged {
                kernel: s("kernel", What::KernelVersion)?,
                force: t.get("force").and_then(|v| v.as_bool()).unwrap_or(false),
            },
            "module-changed" => Intent::ModuleChanged {
                module: s("module", What::ModuleName)?,
                version: s("version", What::ModuleVersion)?,
            },
            "toolchain-changed" => Intent::ToolchainChanged { kernels: kernels("kernels")? },
            "rescan" => Intent::Rescan,
            "rebuild" => {
                let modules = match t.get("modules") {
                    None => Vec::new(),
                    Some(toml::Value::Array(a)) => a
                        .iter()
                        .map(|v| v.as_str().ok_or_else(|| "module list holds a non-string".to_string())?.parse())
                        .collect::<Result<Vec<ModuleSel>, String>>()?,
                    Some(_) => return Err("rebuild: 'modules' is not a list".into()),
                };
                Intent::Rebuild { kernels: kernels("kernels")?, modules }
            }
            "deferred" => Intent::Deferred {
                module: s("module", What::ModuleName)?,
                version: s("version", What::ModuleVersion)?,
                kernel: s("kernel", What::KernelVersion)?,
                force: t.get("force").and_then(|v| v.as_bool()).unwrap_or(false),
                module_event: t.get("module_event").and_then(|v| v.as_bool()).unwrap_or(false),
            },
            other => return Err(format!("unknown kind '{other}' (written by a newer dkms-trigger?)")),
        };
        Ok(intent.normalized())
    }
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = |v: &[String]| {
            if v.is_empty() {
                "all kernels".to_string()
            } else {
                v.join(" ")
            }
        };
        match self {
            Intent::KernelAdded { kernel } => write!(f, "kernel-added {kernel}"),
            Intent::HeadersChanged { kernel, force } => {
                write!(f, "headers-changed {kernel}{}", if *force { " --force" } else { "" })
            }
            Intent::ModuleChanged { module, version } => {
                write!(f, "module-changed {module}/{version}")
            }
            Intent::ToolchainChanged { kernels } => {
                write!(f, "toolchain-changed ({})", all(kernels))
            }
            Intent::Rescan => f.write_str("rescan"),
            Intent::Rebuild { kernels, modules } => {
                let mods: Vec<String> = modules.iter().map(|m| m.to_string()).collect();
                let mods = if mods.is_empty() { "all autoinstall modules".to_string() } else { mods.join(" ") };
                write!(f, "rebuild {mods} for {}", all(kernels))
            }
            Intent::Deferred { module, version, kernel, force, .. } => {
                write!(f, "deferred {}build of {module}/{version} for {kernel}", if *force { "forced " } else { "" })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Intent> {
        vec![
            Intent::KernelAdded { kernel: "6.1.0-47-amd64".into() },
            Intent::HeadersChanged { kernel: "6.1.0-47-amd64".into(), force: true },
            Intent::HeadersChanged { kernel: "6.1.0-47-amd64".into(), force: false },
            Intent::ModuleChanged { module: "nvidia-fs".into(), version: "2.26.6".into() },
            Intent::ToolchainChanged { kernels: vec![] },
            Intent::ToolchainChanged { kernels: vec!["a1".into(), "b2".into()] },
            Intent::Rescan,
            Intent::Rebuild {
                kernels: vec!["6.1.0-47-amd64".into()],
                modules: vec!["hello".parse().unwrap(), "dep/1.0".parse().unwrap()],
            }
            .normalized(),
            Intent::Deferred {
                module: "m".into(),
                version: "1".into(),
                kernel: "k".into(),
                force: true,
                module_event: false,
            },
        ]
    }

    #[test]
    fn fields_round_trip() {
        for i in all() {
            assert_eq!(Intent::from_fields(&i.to_fields()), Ok(i.clone()), "{i}");
        }
    }

    #[test]
    fn normalization_makes_argument_order_irrelevant() {
        let a = Intent::ToolchainChanged { kernels: vec!["b".into(), "a".into(), "a".into()] }.normalized();
        let b = Intent::ToolchainChanged { kernels: vec!["a".into(), "b".into()] }.normalized();
        assert_eq!(a, b);
    }

    #[test]
    fn unknown_kind_and_bad_fields_are_reported() {
        let mut t = toml::Table::new();
        t.insert("kind".into(), "kernel-signed".into());
        assert!(Intent::from_fields(&t).unwrap_err().contains("unknown kind 'kernel-signed'"));
        let mut t = toml::Table::new();
        t.insert("kind".into(), "kernel-added".into());
        t.insert("kernel".into(), "../../etc".into());
        assert!(Intent::from_fields(&t).is_err());
        let mut t = toml::Table::new();
        t.insert("kind".into(), "module-changed".into());
        t.insert("module".into(), "x".into());
        assert!(Intent::from_fields(&t).unwrap_err().contains("no 'version'"));
    }
}

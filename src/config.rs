//! Configuration: defaults, then the main file, then `config.d/*.toml` drop-ins in lexical order,
//! each key remembering which file set it. Every key is documented in docs/config.md.

use crate::exit::{Code, Failure};
use crate::paths;
use crate::root::{Distrust, Root};
use anyhow::Result;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which kernels a module package's own change (module-changed) builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSet {
    /// Every installed kernel that has headers.
    All,
    /// The running kernel and the newest installed one (Debian's common.postinst default).
    RunningAndNewest,
}

/// How initramfs images are updated after modules changed for a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsSetting {
    /// Detect the distribution's tool: update-initramfs, dracut, or nothing (mkinitcpio has its own hook).
    Auto,
    UpdateInitramfs,
    Dracut,
    Never,
}

/// What a failed job does to the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A `warning:` line, recorded in the state; exit status unaffected.
    Warn,
    /// Exit status 1 after every other job has run.
    Error,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub dkms: String,
    pub depmod: String,
    pub jobs: u32,
    pub make_jobs: u32,
    pub kernels: KernelSet,
    pub initramfs: InitramfsSetting,
    pub on_failure_kernel: Policy,
    pub on_failure_module: Policy,
    pub job_timeout: u64,
    pub eval_timeout: u64,
    pub keep_runs: u32,
    pub allow_untrusted_sources: bool,
    pub weak_updates: bool,
    pub lock_timeout: u64,
    pub pass_environment: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dkms: "dkms".into(),
            depmod: "depmod".into(),
            jobs: 0,
            make_jobs: 0,
            kernels: KernelSet::All,
            initramfs: InitramfsSetting::Auto,
            on_failure_kernel: Policy::Warn,
            on_failure_module: Policy::Error,
            job_timeout: 3600,
            eval_timeout: 10,
            keep_runs: 10,
            allow_untrusted_sources: false,
            weak_updates: true,
            lock_timeout: 1800,
            pass_environment: Vec::new(),
        }
    }
}

/// One configuration key: its dotted name, how to set it from TOML, how to show it.
struct Key {
    name: &'static str,
    set: fn(&mut Config, &toml::Value) -> Result<(), String>,
    get: fn(&Config) -> toml::Value,
}

fn string(v: &toml::Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) if !s.is_empty() && !s.chars().any(char::is_control) => Ok(s.to_string()),
        Some(_) => Err("must be a non-empty string without control characters".into()),
        None => Err(format!("must be a string, not {}", v.type_str())),
    }
}

fn int(v: &toml::Value, min: i64, max: i64) -> Result<i64, String> {
    match v.as_integer() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(n) => Err(format!("{n} is out of range {min}..={max}")),
        None => Err(format!("must be an integer, not {}", v.type_str())),
    }
}

fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("must be true or false, not {}", v.type_str()))
}

fn choice<T: Copy>(v: &toml::Value, options: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let s = v.as_str().ok_or_else(|| format!("must be one of {}, not {}", names.join(", "), v.type_str()))?;
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("'{s}' is not one of {}", names.join(", ")))
}

/// A list of environment variable names, for `pass_environment`.
fn variable_names(v: &toml::Value) -> Result<Vec<String>, String> {
    let items = v.as_array().ok_or_else(|| format!("must be a list of variable names, not {}", v.type_str()))?;
    let mut names = Vec::new();
    for item in items {
        let name = item.as_str().ok_or_else(|| format!("must hold strings, not {}", item.type_str()))?;
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("'{name}' is not a variable name"));
        }
        if matches!(name, "PATH" | "LC_ALL") {
            return Err(format!("{name} is fixed (docs/config.md)"));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

const KERNEL_SETS: &[(&str, KernelSet)] =
    &[("all", KernelSet::All), ("running-and-newest", KernelSet::RunningAndNewest)];
const INITRAMFS: &[(&str, InitramfsSetting)] = &[
    ("auto", InitramfsSetting::Auto),
    ("update-initramfs", InitramfsSetting::UpdateInitramfs),
    ("dracut", InitramfsSetting::Dracut),
    ("never", InitramfsSetting::Never),
];
const POLICIES: &[(&str, Policy)] = &[("warn", Policy::Warn), ("error", Policy::Error)];

fn name_of<T: PartialEq + Copy>(options: &[(&'static str, T)], t: T) -> toml::Value {
    toml::Value::String(options.iter().find(|(_, o)| *o == t).map(|(n, _)| *n).unwrap_or("?").to_string())
}

const KEYS: &[Key] = &[
    Key {
        name: "dkms",
        set: |c, v| {
            c.dkms = string(v)?;
            Ok(())
        },
        get: |c| c.dkms.clone().into(),
    },
    Key {
        name: "depmod",
        set: |c, v| {
            c.depmod = string(v)?;
            Ok(())
        },
        get: |c| c.depmod.clone().into(),
    },
    Key {
        name: "jobs",
        set: |c, v| {
            c.jobs = int(v, 0, 256)? as u32;
            Ok(())
        },
        get: |c| (c.jobs as i64).into(),
    },
    Key {
        name: "make_jobs",
        set: |c, v| {
            c.make_jobs = int(v, 0, 256)? as u32;
            Ok(())
        },
        get: |c| (c.make_jobs as i64).into(),
    },
    Key {
        name: "kernels",
        set: |c, v| {
            c.kernels = choice(v, KERNEL_SETS)?;
            Ok(())
        },
        get: |c| name_of(KERNEL_SETS, c.kernels),
    },
    Key {
        name: "initramfs",
        set: |c, v| {
            c.initramfs = choice(v, INITRAMFS)?;
            Ok(())
        },
        get: |c| name_of(INITRAMFS, c.initramfs),
    },
    Key {
        name: "on_failure.kernel_event",
        set: |c, v| {
            c.on_failure_kernel = choice(v, POLICIES)?;
            Ok(())
        },
        get: |c| name_of(POLICIES, c.on_failure_kernel),
    },
    Key {
        name: "on_failure.module_event",
        set: |c, v| {
            c.on_failure_module = choice(v, POLICIES)?;
            Ok(())
        },
        get: |c| name_of(POLICIES, c.on_failure_module),
    },
    Key {
        name: "job_timeout",
        set: |c, v| {
            c.job_timeout = int(v, 1, 7 * 86_400)? as u64;
            Ok(())
        },
        get: |c| (c.job_timeout as i64).into(),
    },
    Key {
        name: "eval_timeout",
        set: |c, v| {
            c.eval_timeout = int(v, 1, 3600)? as u64;
            Ok(())
        },
        get: |c| (c.eval_timeout as i64).into(),
    },
    Key {
        name: "keep_runs",
        set: |c, v| {
            c.keep_runs = int(v, 1, 10_000)? as u32;
            Ok(())
        },
        get: |c| (c.keep_runs as i64).into(),
    },
    Key {
        name: "allow_untrusted_sources",
        set: |c, v| {
            c.allow_untrusted_sources = boolean(v)?;
            Ok(())
        },
        get: |c| c.allow_untrusted_sources.into(),
    },
    Key {
        name: "weak_updates",
        set: |c, v| {
            c.weak_updates = boolean(v)?;
            Ok(())
        },
        get: |c| c.weak_updates.into(),
    },
    Key {
        name: "lock_timeout",
        set: |c, v| {
            c.lock_timeout = int(v, 1, 7 * 86_400)? as u64;
            Ok(())
        },
        get: |c| (c.lock_timeout as i64).into(),
    },
    Key {
        name: "pass_environment",
        set: |c, v| {
            c.pass_environment = variable_names(v)?;
            Ok(())
        },
        get: |c| toml::Value::Array(c.pass_environment.iter().map(|n| n.clone().into()).collect()),
    },
];

/// Names of all keys, in documentation order.
pub fn key_names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|k| k.name)
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The configuration together with where each key's value came from, and the warnings met.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub origins: BTreeMap<&'static str, Origin>,
    pub warnings: Vec<String>,
    pub files: Vec<PathBuf>,
}

impl Loaded {
    fn new() -> Loaded {
        Loaded { config: Config::default(), origins: BTreeMap::new(), warnings: Vec::new(), files: Vec::new() }
    }

    /// Applies one fragment (already parsed) from `origin` on top of what is loaded.
    pub fn apply(&mut self, table: &toml::Table, origin: &Path) -> Result<()> {
        self.apply_prefixed(table, "", origin)
    }

    fn apply_prefixed(&mut self, table: &toml::Table, prefix: &str, origin: &Path) -> Result<()> {
        for (k, v) in table {
            let name = format!("{prefix}{k}");
            if let toml::Value::Table(sub) = v {
                if KEYS.iter().any(|key| key.name.starts_with(&format!("{name}."))) {
                    self.apply_prefixed(sub, &format!("{name}."), origin)?;
                    continue;
                }
            }
            match KEYS.iter().find(|key| key.name == name) {
                Some(key) => {
                    (key.set)(&mut self.config, v).map_err(|problem| {
                        Failure::err(Code::Usage, format!("{}: key '{name}': {problem}", origin.display()))
                    })?;
                    self.origins.insert(key.name, Origin::File(origin.to_path_buf()));
                }
                None => self.warnings.push(format!("{}: unknown key '{name}' ignored", origin.display())),
            }
        }
        Ok(())
    }

    /// Where `key`'s value came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The effective configuration as TOML, each line commented with its origin.
    pub fn render(&self) -> String {
        let mut top = String::new();
        let mut sections: BTreeMap<&str, String> = BTreeMap::new();
        for key in KEYS {
            let value = (key.get)(&self.config);
            let line = |short: &str| format!("{short} = {value}  # {}\n", self.origin(key.name));
            match key.name.split_once('.') {
                Some((section, short)) => sections.entry(section).or_default().push_str(&line(short)),
                None => top.push_str(&line(key.name)),
            }
        }
        for (section, body) in sections {
            top.push_str(&format!("\n[{section}]\n{body}"));
        }
        top
    }
}

/// Parses one configuration file into a table; errors carry exit code 2 and the file name. The
/// file must pass the trust rule (`Root::open_trusted`): its `dkms` and `depmod` keys name programs
/// run as root. One that does not stops the command with `Code::Unsafe`. Symlinks are followed
/// inside the root; a missing file, or a directory, is no configuration.
fn parse_file(reader: &Root, path: &Path) -> Result<Option<toml::Table>> {
    let mut file = match reader.open_trusted(path) {
        Ok(t) if t.md.is_file() => t.file,
        Ok(_) | Err(Distrust::Missing) => return Ok(None),
        Err(Distrust::Refused(why)) => return Err(refused(path, &why)),
        Err(Distrust::Io(e)) => return Err(Failure::err(Code::Usage, format!("{}: {e}", path.display()))),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .map_err(|e| Failure::err(Code::Usage, format!("{}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map(Some)
        .map_err(|e| Failure::err(Code::Usage, format!("{}: invalid TOML: {}", path.display(), e.message())))
}

fn refused(path: &Path, why: &str) -> anyhow::Error {
    Failure::err(Code::Unsafe, format!("{}: refusing to read the configuration there: {why}", path.display()))
}

/// Loads the configuration: `explicit` (from `--config`, must exist) or ROOT/etc/dkms-trigger/config.toml
/// (optional), then ROOT/etc/dkms-trigger/config.d/*.toml in lexical order.
pub fn load(root: &Root, explicit: Option<&Path>) -> Result<Loaded> {
    let mut loaded = Loaded::new();
    // A file named with --config is the caller's, wherever it is; the rest is the root's.
    let host = Root::host();
    let main = match explicit {
        Some(given) => {
            let p = std::path::absolute(given)
                .map_err(|e| Failure::err(Code::Usage, format!("--config {}: {e}", given.display())))?;
            if !host.is_file(&p) {
                return Err(Failure::err(Code::Usage, format!("--config {}: no such file", given.display())));
            }
            (&host, p)
        }
        None => (root, root.path(paths::CONFIG_FILE)),
    };
    let mut files = vec![main];
    let dropins = root.path(paths::CONFIG_DROPIN_DIR);
    match root.open_trusted(&dropins) {
        Ok(_) | Err(Distrust::Missing) | Err(Distrust::Io(_)) => {}
        Err(Distrust::Refused(why)) => return Err(refused(&dropins, &why)),
    }
    if let Ok(names) = root.list(&dropins) {
        files.extend(
            names
                .into_iter()
                .map(|n| dropins.join(n))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .map(|p| (root, p)),
        );
    }
    for (reader, file) in files {
        if let Some(table) = parse_file(reader, &file)? {
            loaded.apply(&table, &file)?;
            loaded.files.push(file);
        }
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = t.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        let r = Root::open(t.path()).unwrap();
        (t, r)
    }

    #[test]
    fn defaults_without_files() {
        let (_t, r) = root_with(&[]);
        let l = load(&r, None).unwrap();
        assert_eq!(l.config, Config::default());
        assert_eq!(l.origin("jobs"), Origin::Default);
    }

    #[test]
    fn dropins_override_main_in_lexical_order() {
        let (_t, r) = root_with(&[
            ("etc/dkms-trigger/config.toml", "jobs = 2\nkernels = \"running-and-newest\"\n"),
            ("etc/dkms-trigger/config.d/20-b.toml", "jobs = 4\n"),
            ("etc/dkms-trigger/config.d/10-a.toml", "jobs = 3\n[on_failure]\nkernel_event = \"error\"\n"),
            ("etc/dkms-trigger/config.d/30-c.conf", "jobs = 9\n"),
        ]);
        let l = load(&r, None).unwrap();
        assert_eq!(l.config.jobs, 4);
        assert_eq!(l.config.kernels, KernelSet::RunningAndNewest);
        assert_eq!(l.config.on_failure_kernel, Policy::Error);
        assert!(matches!(l.origin("jobs"), Origin::File(p) if p.ends_with("20-b.toml")));
        assert!(matches!(l.origin("kernels"), Origin::File(p) if p.ends_with("config.toml")));
        assert!(matches!(l.origin("on_failure.kernel_event"), Origin::File(p) if p.ends_with("10-a.toml")));
        assert_eq!(l.origin("initramfs"), Origin::Default);
    }

    #[test]
    fn unknown_keys_warn() {
        let (_t, r) = root_with(&[("etc/dkms-trigger/config.toml", "jbos = 2\n[on_failure]\nother = 1\n")]);
        let l = load(&r, None).unwrap();
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("'jbos'"));
        assert!(l.warnings[1].contains("'on_failure.other'"));
    }

    #[test]
    fn invalid_values_name_file_key_and_problem() {
        let cases = [
            ("jobs = \"many\"", "key 'jobs': must be an integer"),
            ("jobs = -1", "key 'jobs': -1 is out of range"),
            ("kernels = \"some\"", "key 'kernels': 'some' is not one of all, running-and-newest"),
            ("weak_updates = 1", "key 'weak_updates': must be true or false"),
            ("[on_failure]\nmodule_event = \"ignore\"", "key 'on_failure.module_event'"),
            ("dkms = \"\"", "key 'dkms': must be a non-empty string"),
            ("jobs = = 2", "invalid TOML"),
        ];
        for (text, want) in cases {
            let (_t, r) = root_with(&[("etc/dkms-trigger/config.d/50-x.toml", text)]);
            let err = load(&r, None).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("50-x.toml") && msg.contains(want), "{text}: {msg}");
            assert_eq!(crate::exit::exit_code(&err), Code::Usage);
        }
    }

    #[test]
    fn explicit_config_must_exist() {
        let (_t, r) = root_with(&[]);
        let err = load(&r, Some(Path::new("/nonexistent/x.toml"))).unwrap_err();
        assert_eq!(crate::exit::exit_code(&err), Code::Usage);
    }

    #[test]
    fn render_names_origins() {
        let (_t, r) = root_with(&[("etc/dkms-trigger/config.toml", "jobs = 2\n")]);
        let text = load(&r, None).unwrap().render();
        assert!(text.contains("jobs = 2  # "), "{text}");
        assert!(text.contains("config.toml"));
        assert!(text.contains("[on_failure]\nkernel_event = \"warn\"  # default"), "{text}");
        // the rendering is itself a valid configuration
        text.parse::<toml::Table>().unwrap();
    }

    #[test]
    fn untrusted_configuration_is_refused_naming_file_and_reason() {
        use std::os::unix::fs::PermissionsExt;
        let (t, r) = root_with(&[("etc/dkms-trigger/config.toml", "dkms = \"/opt/x/dkms\"\n")]);
        let file = t.path().join("etc/dkms-trigger/config.toml");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
        let err = load(&r, None).unwrap_err();
        assert_eq!(crate::exit::exit_code(&err), Code::Unsafe);
        let msg = format!("{err:#}");
        assert!(msg.contains("/etc/dkms-trigger/config.toml is writable by group or others (mode 0666)"), "{msg}");

        let (t, r) = root_with(&[("etc/dkms-trigger/config.d/50-x.toml", "jobs = 2\n")]);
        fs::set_permissions(t.path().join("etc/dkms-trigger/config.d"), fs::Permissions::from_mode(0o777)).unwrap();
        let msg = format!("{:#}", load(&r, None).unwrap_err());
        assert!(msg.contains("/etc/dkms-trigger/config.d is writable by group or others (mode 0777)"), "{msg}");

        // A drop-in linked to a file in a directory others may write to: the directory counts.
        let (t, r) = root_with(&[("srv/open/x.toml", "jobs = 2\n")]);
        fs::set_permissions(t.path().join("srv/open"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::create_dir_all(t.path().join("etc/dkms-trigger/config.d")).unwrap();
        std::os::unix::fs::symlink("/srv/open/x.toml", t.path().join("etc/dkms-trigger/config.d/60-l.toml")).unwrap();
        let msg = format!("{:#}", load(&r, None).unwrap_err());
        assert!(msg.contains("/srv/open is writable by group or others (mode 0777)"), "{msg}");
    }

    #[test]
    fn pass_environment_takes_variable_names_only() {
        let (_t, r) =
            root_with(&[("etc/dkms-trigger/config.toml", "pass_environment = [\"TMPDIR\", \"http_proxy\"]\n")]);
        assert_eq!(load(&r, None).unwrap().config.pass_environment, vec!["TMPDIR", "http_proxy"]);
        for bad in ["[\"A B\"]", "[\"PATH\"]", "\"TMPDIR\"", "[1]", "[\"1X\"]"] {
            let (_t, r) = root_with(&[("etc/dkms-trigger/config.toml", &format!("pass_environment = {bad}\n"))]);
            let err = load(&r, None).unwrap_err();
            assert_eq!(crate::exit::exit_code(&err), Code::Usage, "{bad}");
        }
    }

    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../docs/config.md");
        for name in key_names() {
            assert!(doc.contains(&format!("`{name}`")), "docs/config.md lacks `{name}`");
        }
    }
}

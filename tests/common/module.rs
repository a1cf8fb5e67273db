//! Generated DKMS module sources (our own code, written for these tests): `dkms.conf`, a Kbuild
//! `Makefile` and one C file, with knobs for the cases the tests need: dependencies, a
//! BUILD_EXCLUSIVE_KERNEL regex, a compile failure, a missing `.ko`, a slow build.
//!
//! Every generated module records each build it goes through in [`BUILD_LOG`] (`start`/`end` lines
//! with the kernel and a timestamp), so tests can count builds and detect overlapping ones with
//! [`World::builds`].
//!
//! ```ignore
//! Module::new("base").write_to(&world);
//! Module::new("user").version("2.0").build_depends("base").slow(2).write_to(&world);
//! ```
//!
//! [`World::builds`]: super::World::builds

use std::fs;
use std::path::{Path, PathBuf};

use super::dkms::BUILD_LOG;
use super::sh_quote;
use super::World;

/// What happens when the module is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Compiles and yields `NAME.ko`.
    Builds,
    /// The C file has an `#error`: make fails (dkms exits 10).
    FailsToCompile,
    /// make succeeds but builds `NAME_other.ko`, not the `NAME.ko` dkms.conf names (dkms exits 7).
    MissingKo,
}

/// A DKMS module source tree to generate (builder style).
#[derive(Debug, Clone)]
pub struct Module {
    name: String,
    version: String,
    /// `None`: no AUTOINSTALL line at all.
    autoinstall: Option<String>,
    build_depends: Vec<String>,
    build_exclusive_kernel: Option<String>,
    outcome: Outcome,
    slow_secs: u32,
    /// (path, seconds): the build fails while `path` exists (seconds 0), or hangs that long.
    while_flag: Option<(String, u32)>,
    extra_conf: Vec<String>,
    module_version_tag: bool,
}

impl Module {
    /// Module `name`, version 1.0, `AUTOINSTALL="yes"`, builds fine. Names are `[a-z0-9_-]+`.
    pub fn new(name: &str) -> Module {
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'),
            "module name {name:?}: use [a-z0-9_-]"
        );
        Module {
            name: name.to_string(),
            version: "1.0".to_string(),
            autoinstall: Some("yes".to_string()),
            build_depends: Vec::new(),
            build_exclusive_kernel: None,
            outcome: Outcome::Builds,
            slow_secs: 0,
            while_flag: None,
            extra_conf: Vec::new(),
            module_version_tag: true,
        }
    }

    /// The plain `hello` module.
    pub fn hello() -> Module {
        Module::new("hello")
    }

    /// Module version (`[A-Za-z0-9.+~_-]+`, as dkms accepts).
    pub fn version(mut self, v: &str) -> Module {
        assert!(
            !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || ".+~_-".contains(c)),
            "module version {v:?}"
        );
        self.version = v.to_string();
        self
    }

    /// `AUTOINSTALL="<value>"`; `""` makes a manual (not autoinstalled) module.
    pub fn autoinstall(mut self, value: &str) -> Module {
        self.autoinstall = Some(value.to_string());
        self
    }

    /// No AUTOINSTALL line at all.
    pub fn no_autoinstall_line(mut self) -> Module {
        self.autoinstall = None;
        self
    }

    /// Adds `BUILD_DEPENDS[i]="dep"` (no symbol is used from it).
    pub fn build_depends(mut self, dep: &str) -> Module {
        self.build_depends.push(dep.to_string());
        self
    }

    /// `BUILD_EXCLUSIVE_KERNEL='<regex>'`.
    pub fn build_exclusive_kernel(mut self, regex: &str) -> Module {
        self.build_exclusive_kernel = Some(regex.to_string());
        self
    }

    /// Only for exactly this kernel version.
    pub fn only_for_kernel(self, kver: &str) -> Module {
        let re = format!("^{}$", regex::escape(kver));
        self.build_exclusive_kernel(&re)
    }

    /// Fails to compile.
    pub fn fail_compile(mut self) -> Module {
        self.outcome = Outcome::FailsToCompile;
        self
    }

    /// make succeeds but the `.ko` dkms expects is missing.
    pub fn missing_ko(mut self) -> Module {
        self.outcome = Outcome::MissingKo;
        self
    }

    /// Each build sleeps this many seconds inside make (before compiling).
    pub fn slow(mut self, secs: u32) -> Module {
        self.slow_secs = secs;
        self
    }

    /// The build fails (make exits 1, so dkms 10) while the file `path` exists in the world: a
    /// cause the test can remove to make the same source build again.
    pub fn broken_while(mut self, path: &str) -> Module {
        self.while_flag = Some((path.to_string(), 0));
        self
    }

    /// The build hangs for `secs` while the file `path` exists in the world.
    pub fn hangs_while(mut self, path: &str, secs: u32) -> Module {
        self.while_flag = Some((path.to_string(), secs));
        self
    }

    /// No `MODULE_VERSION()` in the C file. dkms 3.0.10 then refuses to replace an installed copy
    /// of the module by any other version ("exactly matches"), as it does for equal versions.
    pub fn without_module_version(mut self) -> Module {
        self.module_version_tag = false;
        self
    }

    /// An extra dkms.conf line, verbatim (bash).
    pub fn conf_line(mut self, line: &str) -> Module {
        self.extra_conf.push(line.to_string());
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ver(&self) -> &str {
        &self.version
    }

    /// `/usr/src/NAME-VERSION`.
    pub fn src_dir(&self) -> String {
        format!("/usr/src/{}-{}", self.name, self.version)
    }

    /// The C identifier / object base name.
    fn ident(&self) -> String {
        self.name.replace('-', "_")
    }

    fn object(&self) -> String {
        match self.outcome {
            Outcome::MissingKo => format!("{}_other", self.ident()),
            _ => self.name.clone(),
        }
    }

    pub fn dkms_conf(&self) -> String {
        let mut s = String::from("# Generated test module (dkms-trigger tests/common/module.rs).\n");
        s += &format!("PACKAGE_NAME={}\n", sh_quote(&self.name));
        s += &format!("PACKAGE_VERSION={}\n", sh_quote(&self.version));
        s += &format!("BUILT_MODULE_NAME[0]={}\n", sh_quote(&self.name));
        s += "DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\n";
        if let Some(a) = &self.autoinstall {
            s += &format!("AUTOINSTALL={}\n", sh_quote(a));
        }
        for (i, d) in self.build_depends.iter().enumerate() {
            s += &format!("BUILD_DEPENDS[{i}]={}\n", sh_quote(d));
        }
        if let Some(re) = &self.build_exclusive_kernel {
            s += &format!("BUILD_EXCLUSIVE_KERNEL={}\n", sh_quote(re));
        }
        for l in &self.extra_conf {
            s += l;
            s += "\n";
        }
        s
    }

    pub fn makefile(&self) -> String {
        let obj = self.object();
        let tag = format!("{} {} $(KERNELRELEASE)", self.name, self.version);
        let mut sleep = if self.slow_secs > 0 { format!("\t@sleep {}\n", self.slow_secs) } else { String::new() };
        match &self.while_flag {
            Some((flag, 0)) => {
                sleep +=
                    &format!("\t@if [ -e {flag} ]; then echo 'broken on purpose while {flag} exists' >&2; exit 1; fi\n")
            }
            Some((flag, secs)) => sleep += &format!("\t@if [ -e {flag} ]; then sleep {secs}; fi\n"),
            None => {}
        }
        format!(
            "# Generated test module (dkms-trigger tests/common/module.rs); read by Kbuild.\n\
             obj-m := {obj}.o\n\
             \n\
             # The build recorder: one start/end pair per build of this module, for the tests.\n\
             $(obj)/{obj}.o: $(obj)/.world-build-stamp\n\
             \n\
             $(obj)/.world-build-stamp:\n\
             \t@mkdir -p {dir}\n\
             \t@echo \"start {tag} $$(date +%s.%N)\" >> {log}\n\
             {sleep}\
             \t@echo \"end {tag} $$(date +%s.%N)\" >> {log}\n\
             \t@touch $@\n",
            dir = super::dkms::BUILD_LOG_DIR,
            log = BUILD_LOG,
        )
    }

    pub fn c_source(&self) -> String {
        let id = self.ident();
        let broken = if self.outcome == Outcome::FailsToCompile {
            "#error \"dkms-trigger test module: fails to compile on purpose\"\n"
        } else {
            ""
        };
        let version_tag =
            if self.module_version_tag { format!("MODULE_VERSION(\"{}\");\n", self.version) } else { String::new() };
        format!(
            "// SPDX-License-Identifier: GPL-2.0\n\
             /* Generated test module {name} {ver} (dkms-trigger tests/common/module.rs). */\n\
             #include <linux/init.h>\n\
             #include <linux/module.h>\n\
             {broken}\
             \n\
             static int __init {id}_init(void)\n\
             {{\n\
             \tpr_info(\"{name} {ver} loaded\\n\");\n\
             \treturn 0;\n\
             }}\n\
             \n\
             static void __exit {id}_exit(void)\n\
             {{\n\
             }}\n\
             \n\
             module_init({id}_init);\n\
             module_exit({id}_exit);\n\
             MODULE_LICENSE(\"GPL\");\n\
             {version_tag}\
             MODULE_DESCRIPTION(\"dkms-trigger test module {name}\");\n",
            name = self.name,
            ver = self.version,
        )
    }

    /// (file name, contents) of the source tree.
    pub fn files(&self) -> Vec<(String, String)> {
        vec![
            ("dkms.conf".to_string(), self.dkms_conf()),
            ("Makefile".to_string(), self.makefile()),
            (format!("{}.c", self.object()), self.c_source()),
        ]
    }

    /// Writes the source tree into `dir` (created).
    pub fn write_at(&self, dir: &Path) {
        fs::create_dir_all(dir).unwrap();
        for (name, text) in self.files() {
            fs::write(dir.join(name), text).unwrap();
        }
    }

    /// Writes the source tree to the world's `/usr/src/NAME-VERSION` (as a package would); returns
    /// the host path of that directory in the upper dir. `dkms add` is up to the test.
    pub fn write_to(&self, world: &World) -> PathBuf {
        let dir = world.upper(self.src_dir());
        self.write_at(&dir);
        dir
    }
}

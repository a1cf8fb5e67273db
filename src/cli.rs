//! The command line: clap definitions, global options, and dispatch to the library.

use crate::config;
use crate::exit::{exit_code, Code, Failure};
use crate::intent::{Intent, ModuleSel};
use crate::root::{self, Root};
use crate::spool;
use crate::ui;
use crate::validate::{self, What};
use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// What the man page's DESCRIPTION and `--help` say the tool is for.
const LONG_ABOUT: &str = "\
Rebuild DKMS modules once, in order, at the end of a package transaction.

Package hooks call `dkms-trigger record` (or `hook`) to note what happened: a kernel or its headers \
installed, a DKMS module source installed, the build tools changed. One `dkms-trigger finalize` at the \
end of the transaction plans and runs the real dkms: every affected (module, kernel) pair built at \
most once, dependencies first, one depmod and at most one initramfs update per changed kernel.

The distribution packages install the hooks that record and run the finalizer, and take over from \
dkms's own automation while installed; the documentation in /usr/share/doc/dkms-trigger says what \
each changes on the system and how to undo it.";

#[derive(Parser, Debug)]
#[command(
    name = "dkms-trigger",
    version,
    about = "Rebuild DKMS modules once, in order, at the end of a package transaction",
    long_about = LONG_ABOUT,
    // -V/--version is ours (below): it also says which dkms would run.
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the version, and the dkms that would run and its version.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// Operate on the system rooted at DIR (every path is taken relative to it).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Configuration file [default: ROOT/etc/dkms-trigger/config.toml]; config.d/*.toml drop-ins still apply.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More diagnostics (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Optional only so that `--version` needs none; any other use without one is refused.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Record an intent in the spool (called by package hooks; fast, prints nothing when all is well).
    Record(RecordArgs),
    /// List pending intents, or clear them.
    Spool(SpoolArgs),
    /// Print the effective configuration and where each value comes from.
    Config,
    /// Show what a finalize would do now, grouped by kernel, with the reason for every pair.
    Plan {
        /// Plan a full reconcile, as if a rescan intent were pending.
        #[arg(long)]
        rescan: bool,
        /// Include pairs that failed before with the same inputs.
        #[arg(long)]
        retry_failed: bool,
        /// Machine-readable output (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Module x kernel table (installed, built, weak, unsupported, failed, stale, pending, deferred),
    /// then module signatures, the key dkms signs with and the Secure Boot state.
    Status {
        /// Machine-readable output (schema in docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Plan and run the pending work with dkms (run once at the end of a package transaction).
    Finalize(FinalizeArgs),
    /// The boot catch-up (dkms-trigger.service): finalize what is pending, and build the running
    /// kernel's missing DKMS modules.
    Boot,
    /// Remove a kernel's DKMS builds now (kernel or headers being removed) and drop its pending intents.
    RemoveKernel {
        #[arg(value_parser = kernel_version)]
        kver: String,
    },
    /// Remove every build of a module version now (its source is being removed).
    RemoveModule {
        #[arg(value_name = "NAME/VERSION", value_parser = module_with_version)]
        module: ModuleSel,
    },
    /// Read package file paths on stdin (rpm file triggers, pacman hooks) and record or remove accordingly.
    FromPaths {
        /// What the transaction does to these paths.
        #[arg(long, value_enum)]
        op: PathOp,
        /// Who reports the paths, e.g. `rpm:kernel-devel`.
        #[arg(long, value_name = "TEXT", value_parser = source_text)]
        source: Option<String>,
    },
    /// What a package-manager hook does: the hook files are a guard plus this call (docs/design.md).
    #[command(subcommand)]
    Hook(crate::hook::Hook),
    /// Shell completions and the man page, from this very definition (for `make install`).
    #[command(subcommand, hide = true)]
    Generate(Generate),
}

/// What `generate` writes on stdout.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// The completion script of a shell.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The man page dkms-trigger(8), in roff.
    Man,
}

/// The operation of `from-paths`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathOp {
    /// New files: record kernel-added, headers-changed, module-changed.
    Install,
    /// Replaced files (upgrade or reinstall): as install, and headers changes are forced rebuilds.
    Upgrade,
    /// Files about to be removed: remove the DKMS builds of those modules and kernels now.
    Remove,
}

#[derive(Args, Debug)]
pub struct FinalizeArgs {
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How many modules to build in parallel [default: config `jobs`, else the CPU count].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// Exit with status 3 at once if another finalizer is running, instead of waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Retry pairs that failed before with the same inputs.
    #[arg(long)]
    pub retry_failed: bool,
    /// Also reconcile everything (as if a rescan intent were pending).
    #[arg(long)]
    pub rescan: bool,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Who recorded this intent, e.g. `dpkg:linux-headers-6.1.0-47-amd64`.
    #[arg(long, global = true, value_name = "TEXT", value_parser = source_text)]
    pub source: Option<String>,
    #[command(subcommand)]
    pub kind: RecordKind,
}

#[derive(Subcommand, Debug)]
pub enum RecordKind {
    /// A kernel was installed.
    KernelAdded {
        #[arg(value_parser = kernel_version)]
        kver: String,
    },
    /// A kernel's headers were installed, upgraded or reconfigured.
    HeadersChanged {
        #[arg(value_parser = kernel_version)]
        kver: String,
        /// Rebuild modules already built for this kernel (same-version upgrade, reconfigure).
        #[arg(long)]
        force: bool,
    },
    /// A DKMS module source was installed or upgraded.
    ModuleChanged {
        #[arg(value_name = "NAME/VERSION", value_parser = module_with_version)]
        module: ModuleSel,
    },
    /// Something every build uses changed (kbuild, compiler); no KVER means all kernels.
    ToolchainChanged {
        #[arg(value_parser = kernel_version)]
        kvers: Vec<String>,
    },
    /// Reconcile everything at the next finalize.
    Rescan,
    /// Force a rebuild of modules (default: all AUTOINSTALL) for kernels (default: all with headers).
    Rebuild {
        /// A kernel to rebuild for (repeatable).
        #[arg(short = 'k', long = "kernel", value_name = "KVER", value_parser = kernel_version)]
        kernels: Vec<String>,
        /// A module to rebuild, one version or all of them (repeatable).
        #[arg(short = 'm', long = "module", value_name = "NAME[/VERSION]", value_parser = module_sel)]
        modules: Vec<ModuleSel>,
    },
}

#[derive(Args, Debug)]
pub struct SpoolArgs {
    /// Machine-readable output (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<SpoolAction>,
}

#[derive(Subcommand, Debug)]
pub enum SpoolAction {
    /// Drop every pending intent.
    Clear {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
}

fn kernel_version(s: &str) -> Result<String, String> {
    validate::check(What::KernelVersion, s).map(|_| s.to_string())
}

fn module_with_version(s: &str) -> Result<ModuleSel, String> {
    let (name, version) = validate::module_spec(s, false)?;
    Ok(ModuleSel { name, version })
}

fn module_sel(s: &str) -> Result<ModuleSel, String> {
    s.parse()
}

fn source_text(s: &str) -> Result<String, String> {
    if s.len() > 256 {
        Err(format!("is {} bytes long, at most 256 are allowed", s.len()))
    } else if s.chars().any(char::is_control) {
        Err("contains control characters".into())
    } else {
        Ok(s.to_string())
    }
}

impl RecordKind {
    fn intent(&self) -> Intent {
        match self {
            RecordKind::KernelAdded { kver } => Intent::KernelAdded { kernel: kver.clone() },
            RecordKind::HeadersChanged { kver, force } => {
                Intent::HeadersChanged { kernel: kver.clone(), force: *force }
            }
            RecordKind::ModuleChanged { module } => Intent::ModuleChanged {
                module: module.name.clone(),
                version: module.version.clone().expect("validated NAME/VERSION"),
            },
            RecordKind::ToolchainChanged { kvers } => Intent::ToolchainChanged { kernels: kvers.clone() },
            RecordKind::Rescan => Intent::Rescan,
            RecordKind::Rebuild { kernels, modules } => {
                Intent::Rebuild { kernels: kernels.clone(), modules: modules.clone() }
            }
        }
        .normalized()
    }
}

/// Parses the command line, runs the command, prints an error once, and returns the exit status.
pub fn main_with_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { Code::Usage.status() } else { Code::Ok.status() };
        }
    };
    if cli.version {
        print_version(&cli);
        return Code::Ok.status();
    }
    let Some(command) = &cli.command else {
        let _ = Cli::command().error(clap::error::ErrorKind::MissingSubcommand, "a COMMAND is required").print();
        return Code::Usage.status();
    };
    // Needs neither the root nor a configuration: packaging runs it in a build tree.
    if let Command::Generate(what) = command {
        return generate(what);
    }
    init_logging(cli.verbose, cli.quiet);
    ui::set_quiet(cli.quiet);
    match run(&cli, command) {
        Ok(code) => code.status(),
        Err(err) => {
            eprintln!("dkms-trigger: error: {err:#}");
            exit_code(&err).status()
        }
    }
}

/// `--version`: this tool's version, then the dkms the configuration names (what finalize would
/// run), found and asked the way finalize would. Exit 0 whatever dkms's state: a missing dkms is
/// an answer, and an unreadable configuration falls back to the default `dkms`.
fn print_version(cli: &Cli) {
    println!("dkms-trigger {}", env!("CARGO_PKG_VERSION"));
    let program = Root::open(&cli.root)
        .and_then(|root| config::load(&root, cli.config.as_deref()))
        .map(|loaded| loaded.config.dkms)
        .unwrap_or_else(|_| config::Config::default().dkms);
    println!("{}", crate::backend::dkms::describe(&program));
}

fn generate(what: &Generate) -> i32 {
    use std::io::Write;
    let bytes = match what {
        Generate::Completion { shell } => crate::generate::completion(*shell, Cli::command()),
        Generate::Man => crate::generate::man_page(Cli::command()).into_bytes(),
    };
    match std::io::stdout().write_all(&bytes).and_then(|()| std::io::stdout().flush()) {
        Ok(()) => Code::Ok.status(),
        Err(e) => {
            eprintln!("dkms-trigger: error: writing to stdout: {e}");
            Code::Failure.status()
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => log::LevelFilter::Error,
        (false, 0) => log::LevelFilter::Warn,
        (false, 1) => log::LevelFilter::Info,
        (false, 2) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let _ = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("DKMS_TRIGGER_LOG")
        .format_timestamp(None)
        .format_target(false)
        .try_init();
}

fn load_config(root: &Root, cli: &Cli) -> Result<config::Loaded> {
    let loaded = config::load(root, cli.config.as_deref())?;
    for w in &loaded.warnings {
        ui::warn(w);
    }
    crate::runner::environment::pass_through(&loaded.config.pass_environment);
    Ok(loaded)
}

fn run(cli: &Cli, command: &Command) -> Result<Code> {
    let root = Root::open(&cli.root)?;
    match command {
        // record deliberately reads no configuration: a broken config must not stop hooks from
        // recording, and the hot path stays a lock, a read and a write.
        Command::Record(args) => {
            root::require_root("record")?;
            let intent = args.kind.intent();
            log::debug!("recording {intent} (source {:?})", args.source);
            spool::record(&root, &[intent], args.source.as_deref())?;
            Ok(Code::Ok)
        }
        Command::Spool(args) => match &args.action {
            None => crate::report::print_spool(&root, args.json),
            Some(SpoolAction::Clear { yes }) => {
                if !*yes {
                    return Err(Failure::err(
                        Code::Usage,
                        "spool clear drops every pending intent; confirm with --yes",
                    ));
                }
                root::require_root("spool clear")?;
                let dropped = spool::update(&root, |s| std::mem::take(&mut s.entries).len())?;
                ui::info(format!("dropped {dropped} pending intent(s)"));
                Ok(Code::Ok)
            }
        },
        Command::Plan { rescan, retry_failed, json } => {
            let loaded = load_config(&root, cli)?;
            crate::report::print_plan(&root, &loaded.config, *rescan, *retry_failed, *json)
        }
        Command::Status { json } => {
            let loaded = load_config(&root, cli)?;
            crate::report::print_status(&root, &loaded.config, *json)
        }
        Command::Finalize(a) => {
            let loaded = load_config(&root, cli)?;
            let opts = crate::finalize::Options {
                dry_run: a.dry_run,
                jobs: a.jobs.map(usize::from),
                no_wait: a.no_wait,
                retry_failed: a.retry_failed,
                rescan: a.rescan,
                initramfs_follows: Default::default(),
                also: Vec::new(),
            };
            crate::finalize::run(&root, &loaded.config, &opts)
        }
        Command::Boot => {
            let loaded = load_config(&root, cli)?;
            crate::boot::run(&root, &loaded.config)
        }
        Command::RemoveKernel { kver } => {
            root::require_root("remove-kernel")?;
            let loaded = load_config(&root, cli)?;
            let n = crate::removal::remove_kernel(&root, &loaded.config, kver)?;
            if n > 0 {
                ui::info(format!("dkms-trigger: removed {n} DKMS build(s) for {kver}"));
            }
            Ok(Code::Ok)
        }
        Command::RemoveModule { module } => {
            root::require_root("remove-module")?;
            let loaded = load_config(&root, cli)?;
            let version = module.version.as_deref().expect("validated NAME/VERSION");
            crate::removal::remove_module(&root, &loaded.config, &module.name, version)?;
            Ok(Code::Ok)
        }
        Command::FromPaths { op, source } => {
            root::require_root("from-paths")?;
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(|e| Failure::err(Code::Usage, format!("reading paths from stdin: {e}")))?;
            crate::hook::from_paths(&root, &input, *op, source.as_deref(), &|| {
                load_config(&root, cli).map(|l| l.config)
            })
        }
        Command::Hook(hook) => crate::hook::run(&root, hook, &|| load_config(&root, cli).map(|l| l.config)),
        Command::Config => {
            let loaded = load_config(&root, cli)?;
            print!("{}", loaded.render());
            Ok(Code::Ok)
        }
        Command::Generate(_) => unreachable!("handled before the root is opened"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn record_parses_every_kind() {
        let p = |args: &[&str]| {
            let mut v = vec!["dkms-trigger", "record"];
            v.extend_from_slice(args);
            match Cli::try_parse_from(v).map(|c| c.command) {
                Ok(Some(Command::Record(r))) => Ok((r.kind.intent(), r.source)),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(
            p(&["kernel-added", "6.1.0-47-amd64"]).unwrap().0,
            Intent::KernelAdded { kernel: "6.1.0-47-amd64".into() }
        );
        assert_eq!(
            p(&["headers-changed", "k1", "--force", "--source", "dpkg:x"]).unwrap(),
            (Intent::HeadersChanged { kernel: "k1".into(), force: true }, Some("dpkg:x".into()))
        );
        assert_eq!(
            p(&["--source", "s", "module-changed", "hello/1.0"]).unwrap(),
            (Intent::ModuleChanged { module: "hello".into(), version: "1.0".into() }, Some("s".into()))
        );
        assert_eq!(p(&["toolchain-changed"]).unwrap().0, Intent::ToolchainChanged { kernels: vec![] });
        assert_eq!(p(&["rescan"]).unwrap().0, Intent::Rescan);
        assert_eq!(
            p(&["rebuild", "-k", "b", "-k", "a", "-m", "x/1", "-m", "y"]).unwrap().0,
            Intent::Rebuild {
                kernels: vec!["a".into(), "b".into()],
                modules: vec!["x/1".parse().unwrap(), "y".parse().unwrap()]
            }
        );
        for bad in [
            vec!["kernel-added", "../../etc"],
            vec!["kernel-added", ""],
            vec!["module-changed", "hello"],
            vec!["module-changed", "he llo/1"],
            vec!["toolchain-changed", "a", "b/c"],
            vec!["rebuild", "-m", "x/.."],
            vec!["rescan", "--source", "a\nb"],
        ] {
            let err = p(&bad).unwrap_err();
            assert!(err.contains("invalid value"), "{bad:?}: {err}");
        }
    }
}

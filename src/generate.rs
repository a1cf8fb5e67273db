//! Shell completions and the man page dkms-trigger(8), from cli.rs, exit.rs and paths.rs, so that they cannot drift.

use crate::exit::Code;
use crate::paths;
use clap::{Arg, Command};
use std::fmt::Write as _;

/// The completion script of `shell` for the command line `cmd`, without its hidden commands.
pub fn completion(shell: clap_complete::Shell, cmd: Command) -> Vec<u8> {
    let mut out = Vec::new();
    if shell != clap_complete::Shell::Bash {
        clap_complete::generate(shell, &mut without_hidden(&cmd), "dkms-trigger", &mut out);
        return out;
    }
    // clap_complete's bash script spells its states two ways when the program's name has a hyphen
    // (clap-rs/clap#6421: `dkms__trigger__subcmd__plan` in the loop, `dkms__subcmd__trigger__...` in
    // the cases), so nothing after a subcommand would complete. Generated for `dkms_trigger`, then
    // registered for the real name.
    clap_complete::generate(shell, &mut without_hidden(&cmd), "dkms_trigger", &mut out);
    let script = String::from_utf8_lossy(&out).replace(" dkms_trigger\n", " dkms-trigger\n");
    script.into_bytes()
}

/// `cmd` as completion sees it: clap_complete offers hidden subcommands too, and clap cannot
/// remove a subcommand, so the visible ones are copied into a new command with the same options
/// (clap's `string` feature: the names are copied, not `'static`).
fn without_hidden(cmd: &Command) -> Command {
    let copy = Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(without_hidden));
    match cmd.get_about() {
        Some(about) => copy.about(about.clone()),
        None => copy,
    }
}

/// The man page dkms-trigger(8), in roff. clap_mangen renders the title, NAME, SYNOPSIS,
/// DESCRIPTION and OPTIONS; COMMANDS is rendered here because clap_mangen's SUBCOMMANDS section
/// points at one page per subcommand (dkms-trigger-record(8)...), which this tool does not have,
/// and leaves out their options.
pub fn man_page(mut cmd: Command) -> String {
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone()).title("DKMS-TRIGGER").section("8").manual("System Administration");
    let mut out = Vec::new();
    // Rendering into a Vec cannot fail.
    man.render_title(&mut out).expect("writing to memory");
    man.render_name_section(&mut out).expect("writing to memory");
    man.render_synopsis_section(&mut out).expect("writing to memory");
    man.render_description_section(&mut out).expect("writing to memory");
    man.render_options_section(&mut out).expect("writing to memory");
    let mut page = String::from_utf8(out).expect("clap_mangen writes UTF-8");

    page.push_str(".SH COMMANDS\n");
    for sub in visible(&cmd) {
        commands(&mut page, sub, &globals(&cmd, &[]));
    }
    page.push_str(
        ".PP\nRun\n.B dkms\\-trigger \\-\\-help\nor\n.B dkms\\-trigger\n.I COMMAND\n.B \\-\\-help\nfor the same, in short.\n",
    );

    page.push_str(".SH \"EXIT STATUS\"\n");
    for code in Code::ALL {
        let _ = write!(page, ".TP\n.B {}\n{}\n", code.status(), text(code.meaning()));
    }

    page.push_str(".SH FILES\n");
    let state = format!(
        "The spool ({}), the state ({}) and their locks; mode 0700, written by root only.",
        paths::SPOOL_FILE,
        paths::STATE_FILE
    );
    let files = [
        (format!("{}/", paths::STATE_DIR), state.as_str()),
        (format!("{}/", paths::LOG_DIR), "One directory of job logs per finalize run."),
        (paths::CONFIG_FILE.to_string(), "The configuration (optional; --config replaces it)."),
        (format!("{}/", paths::CONFIG_DROPIN_DIR), "Drop-ins (*.toml), applied after the main file in lexical order."),
    ];
    for (path, what) in files {
        let _ = write!(page, ".TP\n.I /{}\n{}\n", text(&path), text(what));
    }

    page.push_str(".SH \"SEE ALSO\"\n.BR dkms (8),\n.BR depmod (8),\n");
    let docs = ["README.md", "config.md"].map(|f| format!(".I /{}/{f}", text(paths::DOC_DIR)));
    let _ = writeln!(page, "{}", docs.join(",\n"));
    page
}

/// The subcommands a reader is shown: not the hidden ones, not clap's `help`.
fn visible(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The global options shown already: `above`'s and those `cmd` defines (clap copies a global
/// option into every subcommand below it).
fn globals(cmd: &Command, above: &[String]) -> Vec<String> {
    let mut all = above.to_vec();
    all.extend(cmd.get_arguments().filter(|a| a.is_global_set()).map(|a| a.get_id().to_string()));
    all
}

/// One command of the COMMANDS section: its usage, what it does, its own options (global ones
/// only where they are defined), then its subcommands, indented.
fn commands(page: &mut String, cmd: &Command, shown: &[String]) {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    let _ = write!(page, ".TP\n.B {}\n", text(usage));
    if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
        let _ = writeln!(page, "{}", text(&about.to_string()));
    }
    // Positional arguments are in the usage line; they are described only when they have help.
    let args: Vec<&Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !shown.iter().any(|g| a.get_id() == g.as_str()) && a.get_id() != "help")
        .filter(|a| !a.is_positional() || a.get_help().is_some())
        .collect();
    let subs: Vec<&Command> = visible(cmd).collect();
    if args.is_empty() && subs.is_empty() {
        return;
    }
    page.push_str(".RS\n");
    for a in args {
        let mut body = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        let possible = a.get_possible_values();
        let values: Vec<&str> = possible.iter().filter(|v| !v.is_hide_set()).map(|v| v.get_name()).collect();
        if !values.is_empty() {
            body = format!("{body} [possible values: {}]", values.join(", "));
        }
        let _ = writeln!(page, ".TP\n.B {}", text(&arg_form(a)));
        // An empty line would be a paragraph break in roff.
        if !body.trim().is_empty() {
            let _ = writeln!(page, "{}", text(body.trim()));
        }
    }
    let below = globals(cmd, shown);
    for sub in subs {
        commands(page, sub, &below);
    }
    page.push_str(".RE\n");
}

/// How an argument is written: `-k, --kernel <KVER>`, `--force`, `<KVER>...`.
fn arg_form(a: &Arg) -> String {
    let value = match a.get_value_names() {
        Some(names) => names.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>().join(" "),
        None => format!("<{}>", a.get_id().as_str().to_uppercase()),
    };
    let many = a.get_num_args().is_some_and(|n| n.max_values() > 1);
    if a.is_positional() {
        return if many { format!("{value}...") } else { value };
    }
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("--{l}"));
    }
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    if takes_value {
        format!("{} {value}", names.join(", "))
    } else {
        names.join(", ")
    }
}

/// Text made safe for roff: backslashes and hyphens escaped (a `-` is a hyphen, `\-` the minus
/// that options need to be copyable), and a line starting with `.` or `'` kept from being a request.
fn text(s: &str) -> String {
    s.lines()
        .map(|line| {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with('.') || escaped.starts_with('\'') {
                format!("\\&{escaped}")
            } else {
                escaped
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    /// Every visible subcommand, at any depth.
    fn visible_subcommands(cmd: &Command, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.push(sub.get_name().to_string());
            visible_subcommands(sub, out);
        }
    }

    fn global_longs() -> Vec<String> {
        let cmd = Cli::command();
        let longs: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_positional() && !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        assert!(longs.len() >= 5, "{longs:?}");
        longs
    }

    fn names() -> Vec<String> {
        let mut subs = Vec::new();
        visible_subcommands(&Cli::command(), &mut subs);
        assert!(subs.iter().any(|s| s == "kernel-added") && subs.iter().any(|s| s == "remove-kernel"), "{subs:?}");
        subs
    }

    /// The roff text as a reader sees it, for searching.
    fn unescaped(page: &str) -> String {
        page.replace("\\-", "-").replace("\\e", "\\").replace("\\&", "")
    }

    #[test]
    fn completions_know_every_subcommand_and_global_option() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completion(shell, Cli::command())).unwrap();
            for sub in names() {
                assert!(script.contains(&sub), "{shell}: no subcommand {sub}");
            }
            assert!(!script.contains("generate"), "{shell}: offers the hidden generate");
            for long in global_longs() {
                // fish writes `-l root`, bash and zsh `--root`.
                let form = if shell == Shell::Fish { format!("-l {long}") } else { format!("--{long}") };
                assert!(script.contains(&form), "{shell}: no option {form}");
            }
        }
    }

    /// What bash offers for the words `line` with the generated script (bash-completion's calling
    /// convention: the function gets the command, the current word and the previous one).
    fn bash_offers(line: &[&str]) -> String {
        let t = tempfile::tempdir().unwrap();
        let script = t.path().join("dkms-trigger");
        std::fs::write(&script, completion(clap_complete::Shell::Bash, Cli::command())).unwrap();
        let words = line.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" ");
        let test = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; f=$(complete -p dkms-trigger | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
             \"$f\" dkms-trigger \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[*]}}\"",
            script.display(),
            line.len() - 1
        );
        let out = std::process::Command::new("bash").args(["-c", &test]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn bash_completes_commands_and_the_options_after_them() {
        assert_eq!(bash_offers(&["dkms-trigger", "rem"]).trim(), "remove-kernel remove-module");
        let after = bash_offers(&["dkms-trigger", "finalize", "--re"]);
        assert!(after.contains("--retry-failed") && after.contains("--rescan"), "{after}");
        let kinds = bash_offers(&["dkms-trigger", "record", "kernel"]);
        assert_eq!(kinds.trim(), "kernel-added", "{kinds}");
    }

    #[test]
    fn man_page_has_every_subcommand_option_and_exit_code() {
        let page = man_page(Cli::command());
        assert!(page.contains("\n.TH DKMS-TRIGGER 8 "), "{}", &page[..200]);
        let seen = unescaped(&page);
        for sub in names() {
            assert!(seen.contains(&format!("\n{sub}")) || seen.contains(&format!(" {sub}")), "no command {sub}");
        }
        for long in global_longs() {
            assert!(seen.contains(&format!("--{long}")), "no option --{long}");
        }
        // Options of subcommands too, with their values.
        for option in ["--dry-run", "--retry-failed", "-k, --kernel <KVER>", "--op <OP>", "install, upgrade, remove"] {
            assert!(seen.contains(option), "no {option}");
        }
        let exit = &seen[seen.find(".SH \"EXIT STATUS\"").expect("an EXIT STATUS section")..];
        let exit = &exit[..exit.find(".SH FILES").expect("FILES follows")];
        for code in Code::ALL {
            assert!(exit.contains(&format!(".TP\n.B {}\n{}\n", code.status(), code.meaning())), "{code:?}: {exit}");
        }
        for path in [paths::STATE_DIR, paths::LOG_DIR, paths::CONFIG_FILE, paths::CONFIG_DROPIN_DIR] {
            assert!(seen.contains(&format!(".I /{path}")), "FILES: no {path}");
        }
        // The hidden generator is for packaging, not for readers.
        assert!(!seen.contains("generate"), "{seen}");
    }

    #[test]
    fn roff_text_is_escaped() {
        assert_eq!(text(".x -y\n'z \\n"), "\\&.x \\-y\n\\&'z \\en");
    }
}

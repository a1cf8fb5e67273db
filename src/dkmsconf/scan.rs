//! Static proof that a dkms.conf (or override file) cannot see the kernel it is evaluated for.
//!
//! The scan is textual and errs towards "dependent": it looks for the kernel variables dkms sets
//! (`kernelver`, `arch`, `kernel_source_dir`, `kernel_config`), for the evaluator's own `__dt_`
//! names and `BASH_REMATCH` (which hold other kernels' data), for `uname`, and for every way bash
//! has to reach a variable whose name is not written out: `eval`, `source`/`.`, `declare`/
//! `typeset`, `local -n`, `compgen`, `caller`, `BASH_ARGV`, `${!...}`, `$_`, ANSI-C `$'...'`, a
//! `set` that lists variables, and a command word that is itself an expansion (`$cmd ...`). Each
//! check runs on the text, on the text with backslash-newlines joined, and on the text with all
//! quoting characters removed (`e''val`). Only whole-line comments are skipped, and only where a
//! small lexer is sure they are comments. What it cannot catch is a conf built to hide a
//! reference (say a command name assembled from pieces and run through a variable in a position
//! the scan does not recognise): dkms.conf is root's code, and the scan is there to catch
//! accidental dependence, not deliberate obfuscation.

use regex::Regex;
use std::borrow::Cow;
use std::sync::OnceLock;

/// True when nothing in `text` can read the kernel being evaluated.
pub(super) fn kernel_independent(text: &str) -> bool {
    let code = strip_comment_lines(text);
    let joined = code.replace("\\\n", "");
    let unquoted: String = joined.chars().filter(|c| !matches!(c, '\'' | '"' | '\\')).collect();
    ![code.as_ref(), joined.as_str(), unquoted.as_str()].iter().any(|t| reads_kernel(t))
}

fn reads_kernel(text: &str) -> bool {
    static DEPENDENT: OnceLock<Regex> = OnceLock::new();
    static SET: OnceLock<Regex> = OnceLock::new();
    let dependent = DEPENDENT.get_or_init(|| {
        Regex::new(concat!(
            r"(?m)(?:^|[^A-Za-z0-9_])",
            r"(?:kernelver|kernel_source_dir|kernel_config|arch|uname|eval|source|declare|typeset",
            r"|compgen|caller|BASH_ARGV|BASH_ARGC|BASH_COMMAND|BASH_REMATCH)(?:[^A-Za-z0-9_]|$)",
            r"|__dt_",
            r"|\$\{!",
            r"|\$\{?_(?:[^A-Za-z0-9_]|$)",
            r"|\$'",
            r"|(?:^|[\s;&|({`!])\.(?:\s|$)",
            r"|(?:^|[^A-Za-z0-9_])local\s+-[A-Za-z]*n",
            // A command word that is an expansion can be any builtin, eval included.
            r"|(?:^|[;&|({`!]|(?:^|[^A-Za-z0-9_])(?:then|do|else|elif|if|while|until|time))[ \t]*[$`]",
        ))
        .expect("static regex")
    });
    if dependent.is_match(text) {
        return true;
    }
    // `set` with options or `--` only sets things; without them it prints every variable.
    let set = SET.get_or_init(|| Regex::new(r"\bset\b").expect("static regex"));
    set.find_iter(text).any(|m| !text[m.end()..].trim_start_matches([' ', '\t']).starts_with(['-', '+']))
}

/// `text` without its whole-line comments, or `text` itself when the lexer below cannot be sure
/// where bash's quotes and substitutions end (heredocs, `=~` regexes, `case` inside `$(...)`,
/// single quotes inside `${...}`, anything left open at the end).
fn strip_comment_lines(text: &str) -> Cow<'_, str> {
    if text.contains("<<") || text.contains("=~") {
        return Cow::Borrowed(text);
    }
    match Lexer::default().strip(text) {
        Some(stripped) => Cow::Owned(stripped),
        None => Cow::Borrowed(text),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// `"..."`
    Double,
    /// `'...'`
    Single,
    /// `$'...'`
    Ansi,
    /// `$(...)`, `<(...)`, `>(...)` with the depth of plain parentheses inside.
    Subst(u32),
    /// `${...}`
    Param,
    /// `` `...` ``
    Backtick,
}

#[derive(Default)]
struct Lexer {
    stack: Vec<Ctx>,
}

impl Lexer {
    fn strip(mut self, text: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut continued = false;
        for line in text.split_inclusive('\n') {
            if self.stack.is_empty() && !continued && line.trim_start().starts_with('#') {
                continue;
            }
            continued = self.line(line.as_bytes(), continued)?;
            out.push_str(line);
        }
        self.stack.is_empty().then_some(out)
    }

    /// Lexes one line; returns whether it ends in a backslash-newline, None when unsure.
    fn line(&mut self, b: &[u8], continued: bool) -> Option<bool> {
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            let next = b.get(i + 1).copied();
            let code = matches!(self.stack.last(), None | Some(Ctx::Subst(_)));
            match self.stack.last().copied() {
                Some(Ctx::Single) => {
                    if c == b'\'' {
                        self.stack.pop();
                    }
                }
                Some(Ctx::Backtick) => match c {
                    b'\\' => i += 1,
                    b'`' => {
                        self.stack.pop();
                    }
                    _ => {}
                },
                Some(Ctx::Ansi) => match c {
                    b'\\' => i += 1,
                    b'\'' => {
                        self.stack.pop();
                    }
                    _ => {}
                },
                top => match c {
                    b'\\' => {
                        if next == Some(b'\n') {
                            return Some(true);
                        }
                        i += 1;
                    }
                    b'$' if next == Some(b'(') => {
                        self.stack.push(Ctx::Subst(0));
                        i += 1;
                    }
                    b'$' if next == Some(b'{') => {
                        self.stack.push(Ctx::Param);
                        i += 1;
                    }
                    b'$' if next == Some(b'\'') && code => {
                        self.stack.push(Ctx::Ansi);
                        i += 1;
                    }
                    b'`' => self.stack.push(Ctx::Backtick),
                    b'"' if top == Some(Ctx::Double) => {
                        self.stack.pop();
                    }
                    b'"' => self.stack.push(Ctx::Double),
                    b'\'' if top == Some(Ctx::Param) => return None,
                    b'\'' if code => self.stack.push(Ctx::Single),
                    b'}' if top == Some(Ctx::Param) => {
                        self.stack.pop();
                    }
                    b'<' | b'>' if code && next == Some(b'(') => {
                        self.stack.push(Ctx::Subst(0));
                        i += 1;
                    }
                    b'(' | b')' if code => {
                        if let Some(Ctx::Subst(depth)) = self.stack.last_mut() {
                            match (c, *depth) {
                                (b'(', d) => *depth = d + 1,
                                (_, 0) => {
                                    self.stack.pop();
                                }
                                (_, d) => *depth = d - 1,
                            }
                        }
                    }
                    // After a backslash-newline, whether `#` starts a word depends on the line before.
                    b'#' if code && i == 0 && continued => return None,
                    b'#' if code && (i == 0 || b" \t;&|()<>".contains(&b[i - 1])) => return Some(false),
                    b'c' if matches!(top, Some(Ctx::Subst(_)))
                        && b[i..].starts_with(b"case")
                        && (i == 0 || !is_word(b[i - 1]))
                        && b.get(i + 4).is_none_or(|&n| !is_word(n)) =>
                    {
                        return None
                    }
                    _ => {}
                },
            }
            i += 1;
        }
        Some(false)
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_assignments_are_independent() {
        let conf = "PACKAGE_NAME=\"foo\"\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=foo\n\
                    DEST_MODULE_LOCATION[0]=/updates/dkms\nAUTOINSTALL=yes\nMAKE[0]=\"make -C src\"\n\
                    BUILD_EXCLUSIVE_ARCH='x86_64|aarch64'\nCLEAN=\"make clean\"\nset -e\n";
        assert!(kernel_independent(conf));
    }

    #[test]
    fn kernel_variables_make_it_dependent() {
        for text in [
            "MAKE=\"make KVER=$kernelver\"",
            "MAKE=\"make -C ${kernel_source_dir}\"",
            "X=$(grep FOO $kernel_config)",
            "BUILD_EXCLUSIVE_ARCH=$arch",
            "V=$(uname -r)",
            "eval \"$x\"",
            "source ./more.conf",
            ". ./more.conf",
            "x=${!name}",
            "echo $_",
            "declare -p",
            "local -n ref=$1",
            "set",
            "set | grep x",
            "x=$'\\x41'",
            "$cmd 'x=1'",
            "if true; then $cmd; fi",
            "`echo eval` x",
            "ev''al x",
            "e\\val x",
            "MAKE=\"$kernel\\\nver\"",
            "echo $__dt_kv",
            "X=${BASH_REMATCH[0]}",
        ] {
            assert!(!kernel_independent(text), "{text:?} was taken as independent");
        }
    }

    #[test]
    fn march_and_similar_words_are_not_arch() {
        assert!(kernel_independent("MAKE=\"make CFLAGS=-march=native\"\nX=research\nY=BUILD_EXCLUSIVE_ARCH\n"));
    }

    #[test]
    fn whole_line_comments_are_skipped() {
        assert!(kernel_independent("# builds for every arch; see the source\nPACKAGE_NAME=foo\n  # set kernelver\n"));
    }

    #[test]
    fn comment_lines_inside_strings_are_code() {
        assert!(!kernel_independent("MAKE=\"make\n# $kernelver\n\"\n"));
        assert!(!kernel_independent("X='it''s'\nMAKE=\"$(echo \"it's\")\n# $kernelver\n\"\n"));
        assert!(!kernel_independent("X=`echo \"\n# $kernelver\n\"`\n"));
        assert!(!kernel_independent("X=1 # it's\nY='\n# $kernelver\n'\n"));
    }

    #[test]
    fn continued_lines_and_unsure_constructs_keep_comments() {
        assert!(!kernel_independent("MAKE=make\\\n# $kernelver\n"));
        assert!(!kernel_independent("cat <<EOF\n# $kernelver\nEOF\n"));
        assert!(!kernel_independent("X=$(case a in a) echo \"x\";; esac)\nY=\"\n# $kernelver\n\"\n"));
        assert!(!kernel_independent("X=\"unterminated\n# $kernelver\n"));
    }

    #[test]
    fn trailing_comments_do_not_open_quotes() {
        // The apostrophe is in a comment: the next comment line is still a comment.
        assert!(kernel_independent("X=1 # it's\n# the kernelver is not used\nY=2\n"));
    }
}

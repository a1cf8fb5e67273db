//! Validation of every externally supplied name that can become part of a path: kernel versions,
//! module names and module versions.
//!
//! One rule for all three (README.md, "Names"): 1 to 128 bytes of UTF-8, first character an ASCII
//! letter or digit, the rest ASCII letters, digits and `.` `_` `+` `~` `-`, and never `..`. This
//! admits every kernel release seen in the field (`6.1.0-47-amd64`, `5.14.0-362.8.1.el9_3.x86_64`,
//! `6.6.1-arch1-1`, `6.1.0+`) and every DKMS name and version (`nvidia-fs`, `535.104.05`,
//! `1.0~rc1+git20230101`), while excluding `/`, whitespace, control characters, shell and glob
//! metacharacters and anything that could climb out of a directory.

use crate::exit::{Code, Failure};
use std::fmt;

/// Longest accepted name, in bytes.
pub const MAX_LEN: usize = 128;

/// What a name is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    KernelVersion,
    ModuleName,
    ModuleVersion,
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            What::KernelVersion => "kernel version",
            What::ModuleName => "module name",
            What::ModuleVersion => "module version",
        })
    }
}

/// Checks `s` against the name rule; the error says what is wrong (not which argument: callers add that).
pub fn check(what: What, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > MAX_LEN {
        return Err(format!("{what} is {} bytes long, at most {MAX_LEN} are allowed", s.len()));
    }
    let first = s.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(format!("{what} {} must start with a letter or digit", shown(s)));
    }
    if let Some(bad) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._+~-".contains(*c))) {
        return Err(format!(
            "{what} {} contains {}, allowed are letters, digits and . _ + ~ -",
            shown(s),
            describe(bad)
        ));
    }
    if s.contains("..") {
        return Err(format!("{what} {} contains '..'", shown(s)));
    }
    Ok(())
}

/// Like `check`, as an exit-code-carrying error.
pub fn require(what: What, s: &str) -> anyhow::Result<()> {
    check(what, s).map_err(|m| Failure::err(Code::Usage, m))
}

/// A valid `NAME/VERSION` (version optional when `version_optional`), split.
pub fn module_spec(s: &str, version_optional: bool) -> Result<(String, Option<String>), String> {
    match s.split_once('/') {
        Some((name, version)) => {
            check(What::ModuleName, name)?;
            check(What::ModuleVersion, version)?;
            Ok((name.to_string(), Some(version.to_string())))
        }
        None if version_optional => {
            check(What::ModuleName, s)?;
            Ok((s.to_string(), None))
        }
        None => Err(format!("{} is not of the form NAME/VERSION", shown(s))),
    }
}

/// The one rule for splitting a module source directory's name (`usr/src/NAME-VERSION`) into a
/// module name and version, before dkms.conf is evaluated (the evaluation has the last word): after
/// `literal_name`, a literal PACKAGE_NAME read from its dkms.conf, when the directory starts with
/// it; else at the first dash followed by a digit (`nvidia-fs-2.17.5`, `foo-1.0-2`: versions carry
/// dashes more often than names carry a dash before a digit); else at the last dash. Both parts
/// must pass `check`.
pub fn split_source_dir(dir: &str, literal_name: Option<&str>) -> Result<(String, String), String> {
    let at = |i: usize| (dir[..i].to_string(), dir[i + 1..].to_string());
    let after_literal = literal_name
        .and_then(|n| dir.strip_prefix(n))
        .and_then(|r| r.strip_prefix('-'))
        .filter(|v| !v.is_empty())
        .map(|v| dir.len() - v.len() - 1);
    let digit = || {
        dir.match_indices('-')
            .map(|(i, _)| i)
            .find(|&i| i > 0 && dir[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
    };
    let last = || dir.rfind('-').filter(|&i| i > 0 && i + 1 < dir.len());
    let (name, version) = after_literal
        .or_else(digit)
        .or_else(last)
        .map(at)
        .ok_or_else(|| format!("{} is not of the form NAME-VERSION", shown(dir)))?;
    check(What::ModuleName, &name)?;
    check(What::ModuleVersion, &version)?;
    Ok((name, version))
}

/// The value of a literal `KEY=value` assignment in a dkms.conf (quotes stripped), when it has no
/// expansion, quoting or whitespace inside: a hint for `split_source_dir`, never a substitute
/// for evaluating the file.
pub fn literal_assignment(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let value = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty() && !value.contains(['$', '`', '"', '\'', ' ', '\t'])).then(|| value.to_string())
    })
}

/// A printable rendering of untrusted text: quoted, control characters escaped, cut at 64 chars.
pub fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push_str("...");
    }
    format!("'{out}'")
}

fn describe(c: char) -> String {
    match c {
        '/' => "'/'".to_string(),
        c if c.is_whitespace() => format!("whitespace ({})", c.escape_unicode()),
        c if c.is_control() => format!("a control character ({})", c.escape_unicode()),
        c => format!("'{}'", c.escape_debug()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_directories_split_by_one_rule() {
        let s = |d: &str, n: Option<&str>| split_source_dir(d, n).map(|(a, b)| format!("{a}|{b}"));
        let cases: &[(&str, Option<&str>, Result<&str, &str>)] = &[
            ("nvidia-fs-2.17.5", None, Ok("nvidia-fs|2.17.5")),
            ("zfs-2.1.11", None, Ok("zfs|2.1.11")),
            ("foo-bar-1.0-2", None, Ok("foo-bar|1.0-2")),
            ("v4l2-loop-git-abc", Some("v4l2-loop"), Ok("v4l2-loop|git-abc")),
            ("a-1-b-2", Some("a-1-b"), Ok("a-1-b|2")),
            ("zfs-rc-x", None, Ok("zfs-rc|x")),
            ("nodash", None, Err("not of the form NAME-VERSION")),
            ("-1.0", None, Err("not of the form")),
            ("x-1..2", None, Err("contains '..'")),
        ];
        for (dir, literal, want) in cases {
            match (s(dir, *literal), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w, "{dir}"),
                (Err(got), Err(w)) => assert!(got.contains(w), "{dir}: {got}"),
                (got, w) => panic!("{dir}: got {got:?}, want {w:?}"),
            }
        }
        assert_eq!(
            literal_assignment("# c\nPACKAGE_NAME=\"nvidia-fs\"\n", "PACKAGE_NAME").as_deref(),
            Some("nvidia-fs")
        );
        assert_eq!(literal_assignment("PACKAGE_NAME=$(echo x)\n", "PACKAGE_NAME"), None);
        assert_eq!(literal_assignment("PACKAGE_VERSION=1.0\n", "PACKAGE_NAME"), None);
    }

    #[test]
    fn accepts_real_world_names() {
        for k in
            ["6.1.0-47-amd64", "5.14.0-362.8.1.el9_3.x86_64", "6.6.1-arch1-1", "6.1.0+", "4.19.0-0.bpo.1-cloud-amd64"]
        {
            assert_eq!(check(What::KernelVersion, k), Ok(()), "{k}");
        }
        for m in ["nvidia-fs", "v4l2loopback", "zfs", "nvidia_current", "r8168"] {
            assert_eq!(check(What::ModuleName, m), Ok(()), "{m}");
        }
        for v in ["2.26.6", "535.104.05", "1.0~rc1+git20230101", "0.1"] {
            assert_eq!(check(What::ModuleVersion, v), Ok(()), "{v}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(MAX_LEN + 1);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("../../etc", "start with"),
            ("a/../b", "'/'"),
            ("6.1..0", "'..'"),
            ("a b", "whitespace"),
            ("a\nb", "whitespace"),
            ("a\u{1b}b", "control"),
            ("a\u{7f}b", "control"),
            ("a$(id)", "'$'"),
            ("a*", "'*'"),
            ("-rf", "start with"),
            (".hidden", "start with"),
            ("é", "start with"),
            ("aé", "'é'"),
            (&long, "at most 128"),
        ];
        for (input, want) in cases {
            let err = check(What::KernelVersion, input).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err}");
        }
        assert_eq!(check(What::ModuleName, &"a".repeat(MAX_LEN)), Ok(()));
    }

    #[test]
    fn module_spec_splits_and_validates() {
        assert_eq!(module_spec("hello/1.0", false), Ok(("hello".into(), Some("1.0".into()))));
        assert_eq!(module_spec("hello", true), Ok(("hello".into(), None)));
        assert!(module_spec("hello", false).is_err());
        assert!(module_spec("hello/1.0/x", false).is_err());
        assert!(module_spec("../x/1", false).is_err());
        assert!(module_spec("x/", false).is_err());
    }

    #[test]
    fn shown_escapes_controls() {
        assert_eq!(shown("a\nb"), "'a\\nb'");
        assert!(shown(&"x".repeat(100)).ends_with("...'"));
    }
}

//! `mokutil --sb-state` and `mokutil --test-key CERT`: the firmware's Secure Boot state and whether
//! a certificate is enrolled as a Machine Owner Key. Read-only questions; parsers on captured text.

use crate::runner::{Captured, Cmd};
use serde::Serialize;
use std::time::Duration;

/// mokutil answers from EFI variables at once; a hung firmware interface must not hold a finalize.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The firmware's Secure Boot state as mokutil reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SbState {
    /// "SecureBoot enabled": a kernel that enforces module signatures under Secure Boot (lockdown,
    /// as Debian's, Ubuntu's and Fedora's do) only loads modules signed by a key it trusts.
    Enabled,
    /// "SecureBoot enabled" and "SecureBoot validation is disabled in shim": shim tells the kernel
    /// not to enforce, so unsigned modules load.
    ValidationDisabled,
    /// "SecureBoot disabled" (also in Setup Mode).
    Disabled,
    /// "EFI variables are not supported on this system": booted by BIOS, or in a container or
    /// chroot without efivarfs.
    NoEfi,
    /// "This system doesn't support Secure Boot": EFI without a SecureBoot variable.
    Unsupported,
    /// mokutil is missing, failed, or said something else (see `detail`).
    Unknown,
}

impl SbState {
    /// True when the kernel refuses modules signed by a key it does not trust.
    pub fn enforcing(self) -> bool {
        self == SbState::Enabled
    }

    pub fn words(self) -> &'static str {
        match self {
            SbState::Enabled => "enabled",
            SbState::ValidationDisabled => "enabled, but shim's validation is disabled (unsigned modules load)",
            SbState::Disabled => "disabled",
            SbState::NoEfi => "not available (no EFI variables: BIOS boot, or a container)",
            SbState::Unsupported => "not supported by this firmware",
            SbState::Unknown => "unknown",
        }
    }
}

/// Where a certificate stands with shim's Machine Owner Key lists, as `mokutil --test-key` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enrolment {
    /// "CERT is already enrolled" (in MokListRT).
    Enrolled,
    /// "CERT is already in db": the firmware's own database holds it.
    InDb,
    /// "CERT is already in the enrollment request": `mokutil --import` ran; MokManager asks to
    /// confirm it at the next boot.
    Pending,
    /// "CERT is not enrolled".
    NotEnrolled,
    /// "CERT is blocked in dbx" / "... in MokListX": revoked, modules signed with it never load.
    Blocked,
    /// Not asked, or no answer understood (see `detail`).
    Unknown,
}

impl Enrolment {
    pub fn words(self) -> &'static str {
        match self {
            Enrolment::Enrolled => "enrolled",
            Enrolment::InDb => "enrolled (in the firmware's db)",
            Enrolment::Pending => "enrolment pending: confirm it in MokManager at the next boot",
            Enrolment::NotEnrolled => "not enrolled",
            Enrolment::Blocked => "blocked (revoked in dbx or MokListX)",
            Enrolment::Unknown => "unknown",
        }
    }
}

/// `mokutil --sb-state`, with why when the state is unknown. Its exit status is no error signal
/// (1 for "SecureBoot disabled"), so only the text counts.
pub fn sb_state() -> (SbState, Option<String>) {
    match Cmd::new("mokutil").arg("--sb-state").timeout(TIMEOUT).output() {
        Ok(c) => {
            let state = parse_sb_state(&c.stdout, &c.stderr);
            (state, (state == SbState::Unknown).then(|| unknown_why(&c)))
        }
        Err(e) => (SbState::Unknown, Some(format!("{e:#}"))),
    }
}

/// `mokutil --test-key CERT` (CERT as the system names it: mokutil runs on the host).
pub fn test_key(cert: &str) -> (Enrolment, Option<String>) {
    match Cmd::new("mokutil").args(["--test-key", cert]).timeout(TIMEOUT).output() {
        Ok(c) => {
            let e = parse_test_key(&c.stdout, &c.stderr, cert);
            (e, (e == Enrolment::Unknown).then(|| unknown_why(&c)))
        }
        Err(e) => (Enrolment::Unknown, Some(format!("{e:#}"))),
    }
}

fn unknown_why(c: &Captured) -> String {
    let said = c.stdout.lines().chain(c.stderr.lines()).map(str::trim).find(|l| !l.is_empty());
    match said {
        Some(l) => format!("`{}` said: {l}", c.command),
        None => c.explain(),
    }
}

/// The state from `mokutil --sb-state`'s stdout and stderr (mokutil 0.6 and 0.7 wordings).
pub fn parse_sb_state(stdout: &str, stderr: &str) -> SbState {
    let has = |text: &str, line: &str| text.lines().any(|l| l.trim() == line);
    if has(stderr, "EFI variables are not supported on this system") {
        SbState::NoEfi
    } else if has(stderr, "This system doesn't support Secure Boot") {
        SbState::Unsupported
    } else if has(stdout, "SecureBoot enabled") {
        if has(stdout, "SecureBoot validation is disabled in shim") {
            SbState::ValidationDisabled
        } else {
            SbState::Enabled
        }
    } else if has(stdout, "SecureBoot disabled") {
        SbState::Disabled
    } else {
        SbState::Unknown
    }
}

/// The enrolment of `cert` from `mokutil --test-key cert`'s output. mokutil names the file as it
/// was given, so the lines are matched with that name in front.
pub fn parse_test_key(stdout: &str, stderr: &str, cert: &str) -> Enrolment {
    let said = |tail: &str| {
        stdout.lines().chain(stderr.lines()).any(|l| l.trim_end().strip_prefix(cert).is_some_and(|rest| rest == tail))
    };
    if said(" is not enrolled") {
        Enrolment::NotEnrolled
    } else if said(" is already enrolled") {
        Enrolment::Enrolled
    } else if said(" is already in db") {
        Enrolment::InDb
    } else if said(" is already in the enrollment request") {
        Enrolment::Pending
    } else if said(" is blocked in dbx") || said(" is blocked in MokListX") {
        Enrolment::Blocked
    } else {
        Enrolment::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The texts below are mokutil's own (src/mokutil.c of mokutil 0.6.0, Debian 12, and 0.7.2):
    // printf to stdout for the states, fprintf to stderr for the two "cannot tell" answers. The
    // "EFI variables" line is what Debian 12's mokutil 0.6.0 printed, exit status 1, on the
    // machine this was developed on (no efivarfs).
    #[test]
    fn secure_boot_states_from_mokutils_own_wording() {
        let rows: [(&str, &str, SbState); 8] = [
            ("SecureBoot enabled\n", "", SbState::Enabled),
            ("SecureBoot enabled\nSecureBoot validation is disabled in shim\n", "", SbState::ValidationDisabled),
            ("SecureBoot disabled\n", "", SbState::Disabled),
            ("SecureBoot disabled\nPlatform is in Setup Mode\n", "", SbState::Disabled),
            ("", "EFI variables are not supported on this system\n", SbState::NoEfi),
            ("", "This system doesn't support Secure Boot\n", SbState::Unsupported),
            ("Cannot determine secure boot state.\n", "", SbState::Unknown),
            ("", "mokutil: error while loading shared libraries: libefivar.so.1\n", SbState::Unknown),
        ];
        for (out, err, want) in rows {
            assert_eq!(parse_sb_state(out, err), want, "{out:?} {err:?}");
        }
        assert!(SbState::Enabled.enforcing());
        assert!(!SbState::ValidationDisabled.enforcing() && !SbState::Disabled.enforcing());
    }

    #[test]
    fn enrolment_from_mokutils_own_wording_for_this_certificate_only() {
        let c = "/var/lib/dkms/mok.pub";
        let rows: [(String, String, Enrolment); 9] = [
            (format!("{c} is not enrolled\n"), String::new(), Enrolment::NotEnrolled),
            (format!("{c} is already enrolled\n"), String::new(), Enrolment::Enrolled),
            (format!("{c} is already in db\n"), String::new(), Enrolment::InDb),
            (format!("{c} is already in the enrollment request\n"), String::new(), Enrolment::Pending),
            (format!("{c} is blocked in dbx\n"), String::new(), Enrolment::Blocked),
            (format!("{c} is blocked in MokListX\n"), String::new(), Enrolment::Blocked),
            (String::new(), "Not a valid x509 certificate\n".into(), Enrolment::Unknown),
            (String::new(), "EFI variables are not supported on this system\n".into(), Enrolment::Unknown),
            // Another file's answer says nothing about this one.
            ("/root/other.der is already enrolled\n".into(), String::new(), Enrolment::Unknown),
        ];
        for (out, err, want) in rows {
            assert_eq!(parse_test_key(&out, &err, c), want, "{out:?} {err:?}");
        }
    }

    #[test]
    fn a_missing_mokutil_is_unknown_with_the_reason() {
        // The fixed PATH of the runner has no program of that name on a machine without mokutil;
        // where it has one, the answer is one of the parsed states and this says nothing.
        if crate::runner::locate("mokutil").is_err() {
            let (state, why) = sb_state();
            assert_eq!(state, SbState::Unknown);
            assert!(why.unwrap().contains("mokutil"));
        }
    }
}

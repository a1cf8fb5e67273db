//! The arguments of the maintainer script a hook runs under, read from its ancestors' command lines
//! in /proc: Debian 12's 6.1 headers postinst runs its hooks without passing them on.

use crate::root::Root;
use std::path::Path;

/// Ancestors looked at: run-parts, the maintainer script (perl or sh), and room for wrappers.
const MAX_DEPTH: usize = 8;

/// One process as /proc shows it; an unreadable part is empty or None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proc {
    pub ppid: Option<u32>,
    pub argv: Vec<String>,
}

/// The arguments after the script `PACKAGE.postinst` in `argv`: dpkg runs `.../info/PKG.postinst`
/// (`.../info/PKG:ARCH.postinst` for a multiarch package), through its interpreter or directly.
pub fn params_in(argv: &[String], package: &str) -> Option<Vec<String>> {
    if package.is_empty() {
        return None;
    }
    let plain = format!("/{package}.postinst");
    let multiarch = format!("/{package}:");
    let at = argv.iter().position(|a| a.ends_with(&plain) || (a.contains(&multiarch) && a.ends_with(".postinst")))?;
    Some(argv[at + 1..].to_vec())
}

/// Walks up from `start` (the hook's parent) through at most MAX_DEPTH processes, stopping at
/// init, and returns the arguments of the first one running PACKAGE's postinst.
pub fn find_params(start: u32, package: &str, lookup: impl Fn(u32) -> Proc) -> Option<Vec<String>> {
    let mut pid = start;
    for _ in 0..MAX_DEPTH {
        if pid <= 1 {
            return None;
        }
        let p = lookup(pid);
        if let Some(params) = params_in(&p.argv, package) {
            return Some(params);
        }
        pid = p.ppid?;
    }
    None
}

/// Reads process `pid` from a proc directory (`/proc`, or a copy in tests). The process table is
/// the running system's, whatever `--root` says: read through the host's root.
pub fn read_proc(proc_dir: &Path, pid: u32) -> Proc {
    let host = Root::host();
    let dir = proc_dir.join(pid.to_string());
    let argv = host.read(dir.join("cmdline")).map(|b| parse_cmdline(&b)).unwrap_or_default();
    let ppid = host.read_to_string(dir.join("status")).ok().and_then(|s| parse_ppid(&s));
    Proc { ppid, argv }
}

/// /proc/PID/cmdline: NUL-terminated arguments.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// The `PPid:` line of /proc/PID/status.
pub fn parse_ppid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("PPid:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const PKG: &str = "linux-headers-6.1.0-47-amd64";

    #[test]
    fn params_follow_the_postinst_script() {
        let cases: &[(&str, Option<&str>)] = &[
            // Debian 12's headers postinst is perl: interpreter, script, arguments.
            (
                "/usr/bin/perl /var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.postinst configure 6.1.76-1",
                Some("configure 6.1.76-1"),
            ),
            ("/bin/sh /var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.postinst configure", Some("configure")),
            ("/var/lib/dpkg/info/linux-headers-6.1.0-47-amd64:amd64.postinst configure 1", Some("configure 1")),
            ("/var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.postinst", Some("")),
            // Another package's postinst, or the same name as a prefix of a longer one.
            ("/usr/bin/perl /var/lib/dpkg/info/linux-headers-6.1.0-48-amd64.postinst configure 1", None),
            ("/usr/bin/perl /var/lib/dpkg/info/xlinux-headers-6.1.0-47-amd64.postinst configure 1", None),
            ("/var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.prerm remove", None),
            ("run-parts --report --exit-on-error --arg=6.1.0-47-amd64 /etc/kernel/header_postinst.d", None),
            ("", None),
        ];
        for (cmd, want) in cases {
            assert_eq!(params_in(&v(cmd), PKG), want.map(v), "{cmd}");
        }
        assert_eq!(params_in(&v("/x/.postinst configure 1"), ""), None, "no package, no match");
    }

    #[test]
    fn walk_finds_the_nearest_postinst_ancestor_within_reach() {
        // (pid, ppid, cmdline): hook <- run-parts <- perl postinst <- dpkg <- apt <- init.
        let table: BTreeMap<u32, Proc> = [
            (40, 30, "run-parts --report --exit-on-error --arg=6.1.0-47-amd64 /etc/kernel/header_postinst.d"),
            (30, 20, "/usr/bin/perl /var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.postinst configure 6.1.76-1"),
            (20, 10, "/usr/bin/dpkg --status-fd 23 --configure --pending"),
            (10, 1, "apt-get install -y linux-headers-6.1.0-47-amd64"),
        ]
        .into_iter()
        .map(|(pid, ppid, cmd)| (pid, Proc { ppid: Some(ppid), argv: v(cmd) }))
        .collect();
        let lookup = |pid: u32| table.get(&pid).cloned().unwrap_or_default();
        assert_eq!(find_params(40, PKG, lookup), Some(v("configure 6.1.76-1")));
        assert_eq!(find_params(20, PKG, lookup), None, "not below the postinst");
        assert_eq!(find_params(1, PKG, lookup), None, "init is never looked at");

        // Deeper than MAX_DEPTH wrappers: not found (the hook then records no --force).
        let deep: BTreeMap<u32, Proc> = (100..=120)
            .map(|pid| {
                let argv = if pid == 120 {
                    v("/bin/sh /var/lib/dpkg/info/linux-headers-6.1.0-47-amd64.postinst configure 1")
                } else {
                    v("sh -c x")
                };
                (pid, Proc { ppid: Some(pid + 1), argv })
            })
            .collect();
        let lookup = |pid: u32| deep.get(&pid).cloned().unwrap_or_default();
        assert_eq!(find_params(113, PKG, lookup), Some(v("configure 1")), "7 levels up");
        assert_eq!(find_params(100, PKG, lookup), None, "20 levels up");
        // An unreadable status ends the walk; an unreadable cmdline does not.
        let gap: BTreeMap<u32, Proc> = [
            (7, Proc { ppid: Some(6), argv: vec![] }),
            (6, Proc { ppid: None, argv: v("sh") }),
            (5, Proc { ppid: Some(1), argv: v("/x/linux-headers-6.1.0-47-amd64.postinst configure 1") }),
        ]
        .into_iter()
        .collect();
        let lookup = |pid: u32| gap.get(&pid).cloned().unwrap_or_default();
        assert_eq!(find_params(7, PKG, lookup), None);
    }

    #[test]
    fn reads_a_proc_tree() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("1234");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("cmdline"), b"/usr/bin/perl\0/var/lib/dpkg/info/x.postinst\0configure\0\0").unwrap();
        std::fs::write(p.join("status"), "Name:\tperl\nState:\tS (sleeping)\nTgid:\t1234\nPid:\t1234\nPPid:\t77\n")
            .unwrap();
        let got = read_proc(t.path(), 1234);
        assert_eq!(got.ppid, Some(77));
        // The empty last argument (configure with no old version) is kept.
        assert_eq!(got.argv, vec!["/usr/bin/perl", "/var/lib/dpkg/info/x.postinst", "configure", ""]);
        assert_eq!(read_proc(t.path(), 99), Proc::default(), "a process gone meanwhile reads as nothing");
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_ppid("PPid:\tx\n"), None);
        // And the real /proc: this test's own parent.
        let me = read_proc(Path::new("/proc"), std::process::id());
        assert_eq!(me.ppid, Some(nix::unistd::getppid().as_raw() as u32));
        assert!(!me.argv.is_empty());
    }
}

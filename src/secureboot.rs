//! Module signing under Secure Boot: the certificate dkms signs with (from its framework.conf), who
//! signed the installed DKMS modules (modinfo), the firmware's state and that certificate's
//! enrolment (mokutil), for `status` and for the one warning after a finalize that built modules.

use crate::backend::modinfo::{self, Signature};
use crate::backend::mokutil::{self, Enrolment, SbState};
use crate::inventory::Inventory;
use crate::paths::{DKMS_ETC, DKMS_TREE, OS_RELEASE};
use crate::root::Root;
use crate::runner::Cmd;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The certificate dkms makes and signs with unless its configuration names another.
pub const DKMS_CERTIFICATE: &str = "/var/lib/dkms/mok.pub";
/// Its private key.
pub const DKMS_KEY: &str = "/var/lib/dkms/mok.key";
/// dkms's default on Ubuntu (and distributions like it) when no signing key is configured: the
/// pair update-secureboot-policy makes (and enrols with shim-signed).
pub const UBUNTU_CERTIFICATE: &str = "/var/lib/shim-signed/mok/MOK.der";
pub const UBUNTU_KEY: &str = "/var/lib/shim-signed/mok/MOK.priv";

/// Sources dkms's framework files the way its read_framework_conf does, for the two signing
/// variables: each file in a subshell that starts with what the files before it left (a file
/// that exits contributes nothing), output discarded. `$1` is os-release (dkms's
/// running_distribution, minus its LSB fallback), the rest the files in dkms's order. Prints
/// NUL-terminated fields: the distribution, then file, mok_certificate, mok_signing_key per file.
const FRAMEWORK_SH: &str = r#"
osr=$1; shift
dist=$(if [[ -r $osr ]]; then . "$osr" >/dev/null 2>&1 </dev/null
  if [[ $ID = ubuntu ]]; then echo "$ID"; elif [[ ${#ID_LIKE[@]} != 0 ]]; then echo "${ID_LIKE[0]}"; else echo "$ID"; fi
fi)
printf '%s\0' "$dist"
mok_certificate= mok_signing_key=
for f; do
  got=$( . "$f" >/dev/null 2>&1 </dev/null; declare -p mok_certificate mok_signing_key 2>/dev/null; echo '#end' )
  [[ $got == *'#end' ]] && eval "${got%'#end'}"
  printf '%s\0%s\0%s\0' "$f" "$mok_certificate" "$mok_signing_key"
done
"#;

/// The certificate dkms signs modules with on this system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// Its path as the system names it; None when it cannot be told (`problem` says why).
    pub path: Option<String>,
    /// What chose it: "dkms's default", or the framework file that set `mok_certificate`.
    pub from: String,
    /// The private key dkms signs with (a path, or a `pkcs11:` URI), when it can be told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// The file exists (dkms makes it, with its key, at the first signed build).
    pub exists: bool,
    /// Its serial number the way modinfo prints a module's `sig_key`, when it is DER (as dkms
    /// makes it): tells the modules signed with it from others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The firmware's answer through mokutil.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firmware {
    pub state: SbState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_detail: Option<String>,
    /// The enrolment of the dkms certificate (unknown when Secure Boot is not on, or not asked).
    pub enrolment: Enrolment,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolment_detail: Option<String>,
}

/// The signatures of one installed (module, kernel) pair's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairSignature {
    pub state: Signed,
    /// Every signature is by the dkms certificate's key; None when that cannot be told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_dkms_key: Option<bool>,
    /// Per module file name.
    pub files: BTreeMap<String, Signature>,
}

/// A summary of a pair's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signed {
    Signed,
    Unsigned,
    /// Some files signed, some not.
    Partly,
    Unknown,
}

/// `status`'s Secure Boot section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub certificate: Certificate,
    pub firmware: Firmware,
}

/// The certificate dkms would sign with now: framework.conf and framework.conf.d/*.conf sourced
/// as dkms does (only when they pass the trust rule: dkms sources them as root), dkms's defaults
/// otherwise (Ubuntu's when no signing key is set there).
pub fn certificate(root: &Root) -> Certificate {
    certificate_with(root, crate::inventory::etc_dkms_problem(root).as_deref())
}

/// `certificate`, with the trust rule's verdict on /etc/dkms already known.
pub(crate) fn certificate_with(root: &Root, etc_problem: Option<&str>) -> Certificate {
    let unknown = |from: &str, why: String| Certificate {
        path: None,
        from: from.to_string(),
        signing_key: None,
        exists: false,
        serial: None,
        problem: Some(why),
    };
    if let Some(why) = etc_problem {
        return unknown("/etc/dkms", format!("dkms's framework configuration is not trusted: {why}"));
    }
    let mut files = vec![root.path(DKMS_ETC).join("framework.conf")];
    let d = root.path(DKMS_ETC).join("framework.conf.d");
    let mut extra: Vec<PathBuf> = root
        .list(&d)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.as_encoded_bytes().ends_with(b".conf"))
        .map(|n| d.join(n))
        .collect();
    // bash's glob order under LC_ALL=C, as the runner gives dkms: bytes.
    extra.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
    files.extend(extra);
    files.retain(|f| root.exists(f));
    let (dist, records) = if files.is_empty() {
        (os_release_id(root), Vec::new())
    } else {
        // os-release is sourced too: only when root may trust it (else dkms's "unknown").
        let os_release = root.open_trusted(OS_RELEASE).map(|t| t.path).unwrap_or_default();
        let run = Cmd::new("bash")
            .args(["-c", FRAMEWORK_SH, "bash"])
            .arg(os_release)
            .args(&files)
            .timeout(Duration::from_secs(10))
            .output();
        match run {
            Ok(c) if c.ok() => parse_framework(&c.stdout),
            Ok(c) => return unknown("/etc/dkms", format!("reading dkms's framework files: {}", c.explain())),
            Err(e) => return unknown("/etc/dkms", format!("reading dkms's framework files: {e:#}")),
        }
    };
    let (path, signing_key, from) = choose(&dist, &records, root);
    let mut c = Certificate {
        path: Some(path.clone()),
        from,
        signing_key: Some(signing_key),
        exists: false,
        serial: None,
        problem: None,
    };
    if let Err(why) = plain_absolute(&path) {
        c.problem = Some(why);
        return c;
    }
    match root.read(root.path(&path)) {
        Ok(bytes) => {
            c.exists = true;
            c.serial = der_serial(&bytes);
            if c.serial.is_none() {
                c.problem = Some(format!("{path} is not a DER certificate (mokutil --import needs DER)"));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => c.problem = Some(format!("{path}: {e}")),
    }
    c
}

/// The os-release ID dkms would see when there is no framework file to source (then no bash).
fn os_release_id(root: &Root) -> String {
    // As when sourced: a file root may not trust counts as none.
    let Ok(t) = root.open_trusted(OS_RELEASE) else { return String::new() };
    let text = root.read_to_string(&t.path).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    match (field("ID"), field("ID_LIKE")) {
        (Some(id), _) if id == "ubuntu" => id,
        (_, Some(like)) if !like.is_empty() => like,
        (id, _) => id.unwrap_or_default(),
    }
}

/// One record per framework file: (host path, mok_certificate, mok_signing_key) after it.
type Records = Vec<(PathBuf, String, String)>;

fn parse_framework(out: &str) -> (String, Records) {
    let mut fields = out.split('\0');
    let dist = fields.next().unwrap_or_default().to_string();
    let mut records = Vec::new();
    while let (Some(f), Some(c), Some(k)) = (fields.next(), fields.next(), fields.next()) {
        records.push((PathBuf::from(f), c.to_string(), k.to_string()));
    }
    (dist, records)
}

/// dkms's prepare_mok: a configured signing key keeps the configured (or default) certificate;
/// without one, Ubuntu uses update-secureboot-policy's pair whatever mok_certificate says.
/// (certificate, key, what chose the certificate).
fn choose(dist: &str, records: &Records, root: &Root) -> (String, String, String) {
    let mut cert = String::new();
    let mut from = None;
    for (file, c, _) in records {
        if *c != cert {
            from = root.inside(file);
        }
        cert = c.clone();
    }
    let key = records.last().map(|(_, _, k)| k.clone()).unwrap_or_default();
    if key.is_empty() && dist.starts_with("ubuntu") {
        let from = "dkms's default on Ubuntu (update-secureboot-policy's key)";
        return (UBUNTU_CERTIFICATE.to_string(), UBUNTU_KEY.to_string(), from.to_string());
    }
    let key = if key.is_empty() { DKMS_KEY.to_string() } else { key };
    if cert.is_empty() {
        (DKMS_CERTIFICATE.to_string(), key, "dkms's default".to_string())
    } else {
        (cert, key, from.map(|p| p.display().to_string()).unwrap_or_default())
    }
}

impl Certificate {
    /// dkms has its key pair: a build signs without making one first (two builds that both make
    /// it race, docs/dkms-behaviour.md). False when that cannot be told.
    pub fn pair_exists(&self, root: &Root) -> bool {
        let key_there = match self.signing_key.as_deref() {
            Some(k) if k.starts_with("pkcs11:") => true,
            Some(k) => plain_absolute(k).is_ok() && root.exists(root.path(k)),
            None => false,
        };
        self.exists && key_there
    }
}

/// A configured path is used inside the root only when it cannot climb out of it.
fn plain_absolute(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))) {
        Ok(())
    } else {
        Err(format!("mok_certificate {path:?} is not a plain absolute path"))
    }
}

/// The serial number of a DER X.509 certificate, as modinfo prints `sig_key` (upper-case hex
/// pairs joined by `:`, without the sign byte DER adds to a serial whose top bit is set).
pub fn der_serial(der: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial INTEGER, ...
    let (tag, cert, _) = der_item(der)?;
    let (tag2, tbs, _) = der_item(cert).filter(|_| tag == 0x30)?;
    if tag2 != 0x30 {
        return None;
    }
    let (mut t, mut v, rest) = der_item(tbs)?;
    if t == 0xa0 {
        (t, v, _) = der_item(rest)?;
    }
    if t != 0x02 || v.is_empty() {
        return None;
    }
    let v = if v.len() > 1 && v[0] == 0 { &v[1..] } else { v };
    Some(v.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// One DER item: (tag, contents, what follows).
fn der_item(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |acc, &x| (acc << 8) | x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The firmware's Secure Boot state, and the certificate's enrolment when it matters (Secure
/// Boot on). Only for the running system: with `--root` elsewhere the firmware is another
/// machine's (or none), so nothing is asked.
pub fn firmware(root: &Root, cert: &Certificate) -> Firmware {
    if !root.is_host() {
        let why = Some(format!("not asked: {} is not the running system", root.dir().display()));
        return Firmware {
            state: SbState::Unknown,
            state_detail: why.clone(),
            enrolment: Enrolment::Unknown,
            enrolment_detail: why,
        };
    }
    let (state, state_detail) = mokutil::sb_state();
    let (enrolment, enrolment_detail) = enrolment(state, cert);
    Firmware { state, state_detail, enrolment, enrolment_detail }
}

/// The certificate's enrolment, asked only when Secure Boot enforces signatures.
fn enrolment(state: SbState, cert: &Certificate) -> (Enrolment, Option<String>) {
    match (&cert.path, cert.exists) {
        _ if !state.enforcing() => (Enrolment::Unknown, Some("not asked: Secure Boot is not enforcing".to_string())),
        (Some(p), true) => mokutil::test_key(p),
        (Some(p), false) => (Enrolment::Unknown, Some(format!("{p} does not exist yet"))),
        (None, _) => (Enrolment::Unknown, cert.problem.clone()),
    }
}

/// `status`'s section: the certificate (as the inventory resolved it) and the firmware.
pub fn report(root: &Root, certificate: Certificate) -> Report {
    let firmware = firmware(root, &certificate);
    Report { certificate, firmware }
}

/// An installed build to look at: (module, version, kernel, arch).
pub type Build = (String, String, String, String);

/// The installed builds of the inventory (what dkms has installed, for every kernel).
pub fn installed_builds(inv: &Inventory) -> Vec<Build> {
    let mut out = Vec::new();
    for m in inv.modules.values() {
        for ((k, a), b) in &m.builds {
            if b.installed {
                out.push((m.name.clone(), m.version.clone(), k.clone(), a.clone()));
            }
        }
    }
    out
}

/// The signatures of `builds`' module files in dkms's tree (the files dkms signed and copied to
/// the kernel's modules directory), one modinfo for all of them; keyed by (module, kernel).
pub fn signatures(root: &Root, builds: &[Build], cert: &Certificate) -> BTreeMap<(String, String), PairSignature> {
    let mut files_of: Vec<(&Build, Vec<PathBuf>)> = Vec::new();
    for b in builds {
        let base = root.path(DKMS_TREE).join(&b.0).join(&b.1).join(&b.2).join(&b.3);
        let files =
            crate::inventory::module_files(root, &base).into_iter().map(|f| base.join("module").join(f)).collect();
        files_of.push((b, files));
    }
    let all: Vec<PathBuf> = files_of.iter().flat_map(|(_, f)| f.iter().cloned()).collect();
    let mut sigs = modinfo::signatures(&all);
    files_of
        .into_iter()
        .map(|(b, files)| {
            let files: BTreeMap<String, Signature> = files
                .iter()
                .map(|f| {
                    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    (name, sigs.remove(f).unwrap_or(Signature::Unknown { why: "not read".into() }))
                })
                .collect();
            ((b.0.clone(), b.2.clone()), summarize(files, cert.serial.as_deref()))
        })
        .collect()
}

fn summarize(files: BTreeMap<String, Signature>, serial: Option<&str>) -> PairSignature {
    let signed = files.values().filter(|s| matches!(s, Signature::Signed { .. })).count();
    let unsigned = files.values().filter(|s| matches!(s, Signature::Unsigned)).count();
    let state = match (signed, unsigned) {
        _ if files.is_empty() || signed + unsigned < files.len() => Signed::Unknown,
        (_, 0) => Signed::Signed,
        (0, _) => Signed::Unsigned,
        _ => Signed::Partly,
    };
    let keys: Vec<&str> = files
        .values()
        .filter_map(|s| match s {
            Signature::Signed { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    let by_dkms_key = match serial {
        Some(serial) if !keys.is_empty() && keys.iter().all(|k| !k.is_empty()) => {
            Some(keys.iter().all(|k| same_serial(k, serial)))
        }
        _ => None,
    };
    PairSignature { state, by_dkms_key, files }
}

/// modinfo prints a serial with or without DER's leading zero byte, depending on kmod's version.
fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_start_matches("00:").to_ascii_uppercase();
    norm(a) == norm(b)
}

/// What to tell the administrator after builds under Secure Boot, if anything: one warning (the
/// kernel will refuse modules built now) and the command that fixes it, or one informational line
/// (enrolment pending). Pure: `built` are the pairs this finalize installed, "M/V on K".
pub fn advice(fw: &Firmware, cert: &Certificate, built: &[(String, PairSignature)]) -> Option<(bool, String)> {
    if !fw.state.enforcing() || built.is_empty() {
        return None;
    }
    let unsigned: Vec<&str> = built
        .iter()
        .filter(|(_, s)| matches!(s.state, Signed::Unsigned | Signed::Partly))
        .map(|(n, _)| n.as_str())
        .collect();
    let signed_by_cert = built
        .iter()
        .filter(|(_, s)| matches!(s.state, Signed::Signed | Signed::Partly) && s.by_dkms_key != Some(false))
        .count();
    let mut parts = Vec::new();
    let mut warn = false;
    if !unsigned.is_empty() {
        warn = true;
        parts.push(format!(
            "Secure Boot is enabled and {} module build(s) of this run are not signed, so a kernel that enforces \
             module signatures under Secure Boot (lockdown: Debian's, Ubuntu's and Fedora's do) will refuse to load \
             them: {}. dkms signs only when it finds the kernel's sign-file and can make or read its key \
             (the build log says why: \"modules won't be signed\"); see sign_file, mok_signing_key and \
             mok_certificate in /etc/dkms/framework.conf, then `dkms-trigger finalize --rescan`.",
            unsigned.len(),
            unsigned.join(", ")
        ));
    }
    if signed_by_cert > 0 {
        let path = cert.path.as_deref().unwrap_or(DKMS_CERTIFICATE);
        match fw.enrolment {
            Enrolment::NotEnrolled => {
                warn = true;
                parts.push(format!(
                    "Secure Boot is enabled and the key dkms signed {signed_by_cert} module build(s) with is not \
                     enrolled, so a kernel that enforces module signatures under Secure Boot (lockdown: Debian's, Ubuntu's and \
                     Fedora's do) will refuse to load them (\"Key was rejected by service\"). Enrol it:\n  \
                     mokutil --import {path}\nmokutil asks for a one-time password. At the next boot, shim's \
                     MokManager stops before Linux starts: choose \"Enroll MOK\", check the key, confirm, type that \
                     password, and reboot; from then on these modules load. If nobody answers MokManager within its \
                     timeout, the boot goes on without the key and it must be imported again."
                ));
            }
            Enrolment::Blocked => {
                warn = true;
                parts.push(format!(
                    "Secure Boot is enabled and the key dkms signed {signed_by_cert} module build(s) with ({path}) \
                     is revoked (dbx or MokListX): a kernel that enforces module signatures will refuse them. Make a new key pair (move {path} \
                     and its key aside; dkms makes a new pair at the next build), rebuild with \
                     `dkms-trigger finalize --rescan`, and enrol the new certificate with `mokutil --import`."
                ));
            }
            Enrolment::Pending => parts.push(format!(
                "Secure Boot is enabled and {path}, the key dkms signed {signed_by_cert} module build(s) with, is \
                 waiting to be enrolled: at the next boot MokManager asks to confirm it (\"Enroll MOK\", then the \
                 password given to mokutil --import); the modules load after that."
            )),
            _ => {}
        }
    }
    (!parts.is_empty()).then(|| (warn, parts.join("\n")))
}

/// After a finalize that installed `built`: asks the firmware, and prints `advice` (at most one
/// warning). Costs one mokutil call when Secure Boot is off; nothing at all without builds.
pub fn after_builds(root: &Root, built: &[Build]) {
    if built.is_empty() || !root.is_host() {
        return;
    }
    let (state, state_detail) = mokutil::sb_state();
    if !state.enforcing() {
        log::debug!("secure boot: {} {}", state.words(), state_detail.unwrap_or_default());
        return;
    }
    let cert = certificate(root);
    let (enrolment, enrolment_detail) = enrolment(state, &cert);
    let fw = Firmware { state, state_detail, enrolment, enrolment_detail };
    let sigs = signatures(root, built, &cert);
    let named: Vec<(String, PairSignature)> = built
        .iter()
        .filter_map(|b| {
            sigs.get(&(b.0.clone(), b.2.clone())).map(|s| (format!("{}/{} on {}", b.0, b.1, b.2), s.clone()))
        })
        .collect();
    match advice(&fw, &cert, &named) {
        Some((true, text)) => crate::ui::warn(text),
        Some((false, text)) => crate::ui::info(text),
        None => {}
    }
}

#[cfg(test)]
mod tests;

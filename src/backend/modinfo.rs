//! `modinfo FILE...`: who signed module files (signer, sig_key), one call for many files. Read-only;
//! the parser takes the captured text.

use crate::runner::Cmd;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Enough for a few hundred files, each a small read.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A module file's signature as modinfo shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Signature {
    /// `signer` is the certificate's subject CN; `key` its serial number, the way modinfo prints
    /// `sig_key` ("6F:6E:..."). Either may be empty when modinfo was built without openssl.
    Signed {
        signer: String,
        key: String,
    },
    Unsigned,
    /// modinfo printed nothing for the file (unreadable, not a module), or did not run.
    Unknown {
        why: String,
    },
}

/// The signature of each file (host paths, as given), one modinfo for all of them. Files modinfo
/// says nothing about are `Unknown`, with its complaint.
pub fn signatures(files: &[PathBuf]) -> BTreeMap<PathBuf, Signature> {
    if files.is_empty() {
        return BTreeMap::new();
    }
    let (text, why) = match Cmd::new("modinfo").args(files).timeout(TIMEOUT).output() {
        Ok(c) => {
            let why = c.stderr.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string);
            let why = why.unwrap_or_else(|| c.explain());
            (c.stdout, why)
        }
        Err(e) => (String::new(), format!("{e:#}")),
    };
    let mut found = parse(&text);
    files
        .iter()
        .map(|f| {
            let sig = found.remove(f).unwrap_or_else(|| Signature::Unknown { why: why.clone() });
            (f.clone(), sig)
        })
        .collect()
}

/// modinfo's output for several files: a `filename:` line opens each file's block; a block with
/// `sig_id`, `signer` or `sig_key` is signed. modinfo prints `filename:` before it finds that a
/// file is no module, so a block without any other field says nothing.
pub fn parse(text: &str) -> BTreeMap<PathBuf, Signature> {
    #[derive(Default)]
    struct Block {
        file: PathBuf,
        fields: usize,
        sig: Option<(String, String)>,
    }
    fn close(b: Option<Block>, out: &mut BTreeMap<PathBuf, Signature>) {
        if let Some(b) = b.filter(|b| b.fields > 0) {
            let s = match b.sig {
                Some((signer, key)) => Signature::Signed { signer, key },
                None => Signature::Unsigned,
            };
            out.insert(b.file, s);
        }
    }
    let mut out = BTreeMap::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        // Continuation lines of `signature:` start with a tab; they carry no field name.
        let Some((field, value)) = line.split_once(':').filter(|_| !line.starts_with(char::is_whitespace)) else {
            continue;
        };
        let value = value.trim();
        if field == "filename" {
            close(current.replace(Block { file: PathBuf::from(value), ..Block::default() }), &mut out);
            continue;
        }
        let Some(b) = current.as_mut() else { continue };
        b.fields += 1;
        if matches!(field, "sig_id" | "signer" | "sig_key") {
            let (signer, key) = b.sig.get_or_insert_with(Default::default);
            match field {
                "signer" => *signer = value.to_string(),
                "sig_key" => *key = value.to_string(),
                _ => {}
            }
        }
    }
    close(current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kmod 30's `modinfo t.ko u.ko` (Debian 12) for a module signed by dkms's sign-file with a key
    /// made the way dkms makes it, and an unsigned copy; trimmed to the fields that matter plus
    /// the two-line signature, whose continuation lines start with a tab.
    const TWO: &str = "filename:       /tmp/sigt/t.ko
license:        GPL
depends:        
name:           t
vermagic:       6.1.0-57-amd64 SMP preempt mod_unload modversions 
sig_id:         PKCS#7
signer:         DKMS module signing key
sig_key:        6F:6E:73:49:4B:EF:E5:D6:4C:6F:19:7D:BE:F2:70:C2:2B:7C:DD:4B
sig_hashalgo:   sha256
signature:      6B:1D:45:29:4B:6F:95:87:F4:BB:75:3D:5A:A9:C6:42:DA:65:A4:DA:
\t\t1E:85:FC:0C:F9:49:1F:12:45:15:8D:9B:31:9E:46:9C:12:30:54:85
filename:       /tmp/sigt/u.ko
license:        GPL
depends:        
name:           t
vermagic:       6.1.0-57-amd64 SMP preempt mod_unload modversions 
";

    #[test]
    fn signed_and_unsigned_files_in_one_output() {
        let got = parse(TWO);
        assert_eq!(
            got.get(&PathBuf::from("/tmp/sigt/t.ko")),
            Some(&Signature::Signed {
                signer: "DKMS module signing key".into(),
                key: "6F:6E:73:49:4B:EF:E5:D6:4C:6F:19:7D:BE:F2:70:C2:2B:7C:DD:4B".into()
            })
        );
        assert_eq!(got.get(&PathBuf::from("/tmp/sigt/u.ko")), Some(&Signature::Unsigned));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_signature_modinfo_cannot_decode_is_still_signed() {
        // kmod without openssl shows the signature's presence but not its signer.
        let got = parse("filename: /m/a.ko\nsig_id: PKCS#7\nsig_hashalgo: unknown\n");
        assert_eq!(got[&PathBuf::from("/m/a.ko")], Signature::Signed { signer: String::new(), key: String::new() });
    }

    #[test]
    fn a_file_that_is_no_module_says_nothing() {
        // kmod 30 on a non-module: the filename line, then "could not get modinfo" on stderr.
        assert!(parse("filename:       /tmp/junk.ko\n").is_empty());
    }

    #[test]
    fn files_modinfo_skips_are_unknown_with_its_complaint() {
        let t = tempfile::tempdir().unwrap();
        let junk = t.path().join("junk.ko");
        std::fs::write(&junk, b"not an ELF module").unwrap();
        let got = signatures(std::slice::from_ref(&junk));
        match &got[&junk] {
            Signature::Unknown { why } => assert!(!why.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

use super::*;
use std::os::unix::fs::PermissionsExt;

fn fake() -> (tempfile::TempDir, Root) {
    let t = tempfile::tempdir().unwrap();
    let root = Root::open(t.path()).unwrap();
    (t, root)
}

fn write(root: &Root, rel: &str, text: &str) {
    let p = root.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
}

#[test]
fn without_framework_files_dkms_defaults_apply() {
    let (_t, root) = fake();
    let c = certificate(&root);
    assert_eq!(c.path.as_deref(), Some(DKMS_CERTIFICATE));
    assert_eq!(c.from, "dkms's default");
    assert!(!c.exists && c.problem.is_none(), "{c:?}");
}

#[test]
fn framework_files_choose_the_certificate_in_dkms_order() {
    let (_t, root) = fake();
    // Debian's framework.conf names the variables in comments only.
    write(&root, "etc/dkms/framework.conf", "# mok_certificate=/var/lib/dkms/mok.pub\n");
    let c = certificate(&root);
    assert_eq!((c.path.as_deref(), c.from.as_str()), (Some(DKMS_CERTIFICATE), "dkms's default"));

    write(
        &root,
        "etc/dkms/framework.conf.d/50-sign.conf",
        "mok_signing_key=/root/mok/k.key\nmok_certificate=/root/mok/c.der\n",
    );
    let c = certificate(&root);
    assert_eq!(c.path.as_deref(), Some("/root/mok/c.der"));
    assert_eq!(c.from, "/etc/dkms/framework.conf.d/50-sign.conf");

    // A later file wins; one that only sets the key leaves the certificate as it was; one that
    // exits contributes nothing (dkms's safe_source loses its values the same way); a file not
    // ending in .conf is not read.
    write(&root, "etc/dkms/framework.conf.d/60-other.conf", "mok_certificate=\"/root/mok/later.der\"\n");
    write(&root, "etc/dkms/framework.conf.d/70-key.conf", "mok_signing_key=/root/mok/k2.key\n");
    write(&root, "etc/dkms/framework.conf.d/80-exit.conf", "mok_certificate=/nowhere.der\nexit 0\n");
    write(&root, "etc/dkms/framework.conf.d/90-note.conf.dpkg-old", "mok_certificate=/old.der\n");
    let c = certificate(&root);
    assert_eq!(c.path.as_deref(), Some("/root/mok/later.der"));
    assert_eq!(c.from, "/etc/dkms/framework.conf.d/60-other.conf");
}

#[test]
fn on_ubuntu_without_a_signing_key_dkms_uses_shim_signeds_pair() {
    let (_t, root) = fake();
    write(&root, "etc/os-release", "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n");
    let c = certificate(&root);
    assert_eq!(c.path.as_deref(), Some(UBUNTU_CERTIFICATE));
    // A certificate alone does not change that (dkms's prepare_mok looks at the key)...
    write(&root, "etc/dkms/framework.conf", "mok_certificate=/root/c.der\n");
    assert_eq!(certificate(&root).path.as_deref(), Some(UBUNTU_CERTIFICATE));
    // ...a key does, and then the configured certificate counts.
    write(&root, "etc/dkms/framework.conf", "mok_signing_key=/root/k.key\nmok_certificate=/root/c.der\n");
    assert_eq!(certificate(&root).path.as_deref(), Some("/root/c.der"));
    // Derivatives: ID_LIKE starting with ubuntu, as dkms's running_distribution reads it.
    write(&root, "etc/dkms/framework.conf", "");
    write(&root, "etc/os-release", "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
    assert_eq!(certificate(&root).path.as_deref(), Some(UBUNTU_CERTIFICATE));
    std::fs::remove_file(root.path("etc/dkms/framework.conf")).unwrap();
    assert_eq!(certificate(&root).path.as_deref(), Some(UBUNTU_CERTIFICATE), "the same without any framework file");
}

#[test]
fn an_untrusted_framework_file_is_not_sourced_and_the_certificate_is_unknown() {
    if !crate::root::is_root_user() {
        return; // the trust rule accepts only root-owned files: as another user everything is refused
    }
    let (_t, root) = fake();
    write(&root, "etc/dkms/framework.conf.d/sign.conf", "touch /tmp/dkms-trigger-sourced-untrusted\n");
    std::fs::set_permissions(root.path("etc/dkms/framework.conf.d/sign.conf"), std::fs::Permissions::from_mode(0o666))
        .unwrap();
    let c = certificate(&root);
    assert_eq!(c.path, None);
    assert!(c.problem.as_deref().unwrap().contains("sign.conf"), "{c:?}");
    assert!(!Path::new("/tmp/dkms-trigger-sourced-untrusted").exists(), "the untrusted file ran");
}

#[test]
fn a_configured_path_that_climbs_is_refused_and_not_read() {
    let (_t, root) = fake();
    write(&root, "etc/dkms/framework.conf", "mok_signing_key=/k\nmok_certificate=/var/../../etc/shadow\n");
    let c = certificate(&root);
    assert!(!c.exists && c.problem.as_deref().unwrap().contains("not a plain absolute path"), "{c:?}");
    write(&root, "etc/dkms/framework.conf", "mok_signing_key=/k\nmok_certificate=relative.der\n");
    assert!(certificate(&root).problem.unwrap().contains("not a plain absolute path"));
}

/// A DER TLV with a short or long length.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    if body.len() < 0x80 {
        v.push(body.len() as u8);
    } else {
        v.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
    }
    v.extend(body);
    v
}

#[test]
fn the_serial_is_read_as_modinfo_prints_sig_key() {
    let version = tlv(0xa0, &tlv(0x02, &[2]));
    let cert = |serial: &[u8], with_version: bool, pad: usize| {
        let mut tbs = if with_version { version.clone() } else { vec![] };
        tbs.extend(tlv(0x02, serial));
        tbs.extend(tlv(0x30, &vec![0u8; pad])); // the rest of the certificate, long enough to need a long length
        tlv(0x30, &tlv(0x30, &tbs))
    };
    assert_eq!(der_serial(&cert(&[0x6f, 0x6e, 0x01], true, 10)).as_deref(), Some("6F:6E:01"));
    // DER's sign byte is not part of the number modinfo prints.
    assert_eq!(der_serial(&cert(&[0x00, 0x9f, 0x01], true, 300)).as_deref(), Some("9F:01"));
    assert_eq!(der_serial(&cert(&[0x05], false, 10)).as_deref(), Some("05"));
    // PEM, truncated or empty input: no serial.
    assert_eq!(der_serial(b"-----BEGIN CERTIFICATE-----\nMIIB\n"), None);
    let whole = cert(&[1, 2], true, 300);
    assert_eq!(der_serial(&whole[..whole.len() - 1]), None);
    assert_eq!(der_serial(&[]), None);
}

#[test]
fn the_serial_of_a_certificate_made_as_dkms_makes_it_matches_openssls() {
    let t = tempfile::tempdir().unwrap();
    let (key, der) = (t.path().join("k.key"), t.path().join("c.der"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=DKMS module signing key",
            "-newkey",
            "rsa:2048",
        ])
        .arg("-keyout")
        .arg(&key)
        .args(["-outform", "DER", "-out"])
        .arg(&der)
        .output()
        .expect("openssl (tests/setup/install-deps.sh installs it)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let shown = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-serial", "-in"])
        .arg(&der)
        .output()
        .unwrap();
    let hex = String::from_utf8(shown.stdout).unwrap().trim().strip_prefix("serial=").unwrap().to_string();
    let ours = der_serial(&std::fs::read(&der).unwrap()).unwrap();
    assert_eq!(ours.replace(':', ""), hex.trim_start_matches("00"));
}

fn signed(key: &str) -> Signature {
    Signature::Signed { signer: "DKMS module signing key".into(), key: key.into() }
}

fn pair(files: &[(&str, Signature)], serial: Option<&str>) -> PairSignature {
    summarize(files.iter().map(|(n, s)| (n.to_string(), s.clone())).collect(), serial)
}

#[test]
fn a_pair_is_signed_unsigned_partly_or_unknown_and_by_dkms_key_or_not() {
    let p = pair(&[("a.ko", signed("6F:01")), ("b.ko", signed("00:6F:01"))], Some("6F:01"));
    assert_eq!((p.state, p.by_dkms_key), (Signed::Signed, Some(true)));
    let p = pair(&[("a.ko", signed("6F:01")), ("b.ko", signed("AA"))], Some("6F:01"));
    assert_eq!((p.state, p.by_dkms_key), (Signed::Signed, Some(false)));
    let p = pair(&[("a.ko", signed("6F:01")), ("b.ko", Signature::Unsigned)], Some("6F:01"));
    assert_eq!((p.state, p.by_dkms_key), (Signed::Partly, Some(true)));
    let p = pair(&[("a.ko", Signature::Unsigned)], Some("6F:01"));
    assert_eq!((p.state, p.by_dkms_key), (Signed::Unsigned, None));
    let p = pair(&[("a.ko", signed("6F:01")), ("b.ko", Signature::Unknown { why: "x".into() })], None);
    assert_eq!((p.state, p.by_dkms_key), (Signed::Unknown, None));
    assert_eq!(pair(&[], None).state, Signed::Unknown, "no module file at all");
    // modinfo without openssl: signed, by an unknown key.
    let p = pair(&[("a.ko", signed(""))], Some("6F:01"));
    assert_eq!((p.state, p.by_dkms_key), (Signed::Signed, None));
}

fn fw(state: SbState, enrolment: Enrolment) -> Firmware {
    Firmware { state, state_detail: None, enrolment, enrolment_detail: None }
}

fn cert() -> Certificate {
    Certificate {
        path: Some("/var/lib/dkms/mok.pub".into()),
        from: "dkms's default".into(),
        signing_key: Some("/var/lib/dkms/mok.key".into()),
        exists: true,
        serial: Some("6F:01".into()),
        problem: None,
    }
}

#[test]
fn advice_after_builds_follows_the_firmware_and_the_signatures() {
    let by_dkms = vec![("m/1 on 6.1.0-1-amd64".to_string(), pair(&[("m.ko", signed("6F:01"))], Some("6F:01")))];
    let unsigned = vec![("u/1 on 6.1.0-1-amd64".to_string(), pair(&[("u.ko", Signature::Unsigned)], Some("6F:01")))];
    let other_key = vec![("o/1 on 6.1.0-1-amd64".to_string(), pair(&[("o.ko", signed("AA"))], Some("6F:01")))];
    let c = cert();

    // Secure Boot on, the key not enrolled: one warning with the exact command and the next boot.
    let (warn, text) = advice(&fw(SbState::Enabled, Enrolment::NotEnrolled), &c, &by_dkms).unwrap();
    assert!(warn);
    assert!(text.contains("\n  mokutil --import /var/lib/dkms/mok.pub\n"), "{text}");
    assert!(text.contains("MokManager") && text.contains("Enroll MOK") && text.contains("1 module build(s)"), "{text}");

    // Nothing to say: Secure Boot not enforcing, key enrolled or in db, no builds, or modules
    // signed by another key (the dkms key's enrolment does not concern them).
    for state in
        [SbState::Disabled, SbState::ValidationDisabled, SbState::NoEfi, SbState::Unsupported, SbState::Unknown]
    {
        assert_eq!(advice(&fw(state, Enrolment::NotEnrolled), &c, &by_dkms), None, "{state:?}");
    }
    for e in [Enrolment::Enrolled, Enrolment::InDb, Enrolment::Unknown] {
        assert_eq!(advice(&fw(SbState::Enabled, e), &c, &by_dkms), None, "{e:?}");
    }
    assert_eq!(advice(&fw(SbState::Enabled, Enrolment::NotEnrolled), &c, &[]), None);
    assert_eq!(advice(&fw(SbState::Enabled, Enrolment::NotEnrolled), &c, &other_key), None);

    // Pending: information about the next boot, no warning.
    let (warn, text) = advice(&fw(SbState::Enabled, Enrolment::Pending), &c, &by_dkms).unwrap();
    assert!(!warn && text.contains("at the next boot MokManager"), "{text}");

    // Revoked key: a warning that says to make a new one.
    let (warn, text) = advice(&fw(SbState::Enabled, Enrolment::Blocked), &c, &by_dkms).unwrap();
    assert!(warn && text.contains("revoked"), "{text}");

    // Unsigned builds under Secure Boot: a warning naming them, whatever the key's enrolment;
    // with signed builds of an unenrolled key too, still one warning (two paragraphs).
    let (warn, text) = advice(&fw(SbState::Enabled, Enrolment::Enrolled), &c, &unsigned).unwrap();
    assert!(warn && text.contains("u/1 on 6.1.0-1-amd64") && text.contains("not signed"), "{text}");
    let both: Vec<_> = by_dkms.iter().chain(&unsigned).cloned().collect();
    let (warn, text) = advice(&fw(SbState::Enabled, Enrolment::NotEnrolled), &c, &both).unwrap();
    assert!(warn && text.contains("not signed") && text.contains("mokutil --import"), "{text}");
}

#[test]
fn the_firmware_of_another_root_is_not_asked() {
    let (_t, root) = fake();
    let f = firmware(&root, &cert());
    assert_eq!((f.state, f.enrolment), (SbState::Unknown, Enrolment::Unknown));
    assert!(f.state_detail.unwrap().contains("not the running system"));
}

#[test]
fn the_key_pair_exists_where_the_configuration_puts_it() {
    let (_t, root) = fake();
    assert!(!certificate(&root).pair_exists(&root), "nothing made yet");
    write(&root, "var/lib/dkms/mok.pub", "x");
    assert!(!certificate(&root).pair_exists(&root), "the certificate alone");
    write(&root, "var/lib/dkms/mok.key", "x");
    assert!(certificate(&root).pair_exists(&root));
    // Configured elsewhere: the default pair no longer counts.
    write(&root, "etc/dkms/framework.conf", "mok_signing_key=/root/k.key\nmok_certificate=/root/c.der\n");
    assert!(!certificate(&root).pair_exists(&root));
    write(&root, "root/k.key", "x");
    write(&root, "root/c.der", "x");
    assert!(certificate(&root).pair_exists(&root));
    // A PKCS#11 key is no file.
    write(&root, "etc/dkms/framework.conf", "mok_signing_key='pkcs11:token=x'\nmok_certificate=/root/c.der\n");
    let c = certificate(&root);
    assert_eq!(c.signing_key.as_deref(), Some("pkcs11:token=x"));
    assert!(c.pair_exists(&root));
}

#[test]
fn an_untrusted_os_release_is_not_sourced() {
    if !crate::root::is_root_user() {
        return;
    }
    let (_t, root) = fake();
    write(&root, "etc/os-release", "ID=ubuntu\n");
    write(&root, "etc/dkms/framework.conf", "");
    assert_eq!(certificate(&root).path.as_deref(), Some(UBUNTU_CERTIFICATE));
    std::fs::set_permissions(root.path("etc/os-release"), std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(certificate(&root).path.as_deref(), Some(DKMS_CERTIFICATE), "dkms's `unknown` distribution");
    std::fs::remove_file(root.path("etc/dkms/framework.conf")).unwrap();
    assert_eq!(certificate(&root).path.as_deref(), Some(DKMS_CERTIFICATE), "the same when nothing is sourced");
}

//! Signature verification on observed commits against real SSH- and GPG-signed commits, and the
//! `require` policy blocking an unsigned or badly signed head.

use anyhow::Result;
use reckon::source::signature::SignatureFormat;
use reckon::source::{
    DeployDecision, GitSource, RefSelector, SignatureMode, SignaturePolicy, SignatureStatus,
    SourceSpec,
};
use reckon_testenv::git::{Fixture, GpgKey, Person, SshKey};

struct Keys {
    allowed_signers: std::path::PathBuf,
    gpg_public: std::path::PathBuf,
    ssh: SshKey,
    ssh_stranger: SshKey,
    gpg: GpgKey,
    gpg_stranger: GpgKey,
}

fn keys(f: &Fixture) -> Result<Keys> {
    let root = f.root();
    let ssh = SshKey::generate(&root.join("ssh_signer"), "signer")?;
    let ssh_stranger = SshKey::generate(&root.join("ssh_stranger"), "stranger")?;
    let gpg = GpgKey::generate(&root.join("g1"), "Gee Pee", "gpg@example.com")?;
    let gpg_stranger = GpgKey::generate(&root.join("g2"), "Strange R", "strange@example.com")?;
    let allowed_signers = root.join("allowed_signers");
    std::fs::write(
        &allowed_signers,
        ssh.allowed_signers_line("signer@example.com"),
    )?;
    let gpg_public = root.join("gpg.asc");
    std::fs::write(&gpg_public, &gpg.public_armored)?;
    Ok(Keys {
        allowed_signers,
        gpg_public,
        ssh,
        ssh_stranger,
        gpg,
        gpg_stranger,
    })
}

fn source(f: &Fixture, cache: &std::path::Path, keys: &Keys, mode: SignatureMode) -> GitSource {
    GitSource::new(
        SourceSpec {
            id: "signed".into(),
            url: f.file_url(),
            reference: RefSelector::Branch("main".into()),
            path: String::new(),
            access: Default::default(),
            signatures: SignaturePolicy {
                mode,
                ssh_allowed_signers: Some(keys.allowed_signers.clone()),
                gpg_public_keys: vec![keys.gpg_public.clone()],
            },
        },
        cache,
    )
}

/// A copy of signed commit `sha` with its message changed but its signature kept: a forgery.
fn tampered_copy(f: &Fixture, sha: &str) -> Result<String> {
    let raw = f.git(["cat-file", "commit", sha])?;
    let forged = raw.replace("ssh signed", "ssh signed, then edited");
    assert_ne!(raw, forged);
    let path = f.root().join("forged");
    std::fs::write(&path, format!("{forged}\n"))?;
    let id = f.git(["hash-object", "-t", "commit", "-w", path.to_str().unwrap()])?;
    f.git(["update-ref", "refs/heads/main", &id])?;
    f.git(["reset", "--quiet", "--hard", &id])?;
    Ok(id)
}

#[test]
fn record_mode_records_each_commits_signature_status() -> Result<()> {
    let f = Fixture::new()?;
    let cache = tempfile::tempdir()?;
    let k = keys(&f)?;
    let base = f.commit("base").write("a", "a").create()?;
    f.push()?;
    let src = source(&f, cache.path(), &k, SignatureMode::Record);
    assert_eq!(src.fetch(None)?.head, base);

    let who = Person::new("Sig Ner", "signer@example.com");
    f.commit("ssh signed")
        .author(who.clone())
        .sign_ssh(&k.ssh)
        .create()?;
    f.commit("ssh stranger")
        .sign_ssh(&k.ssh_stranger)
        .create()?;
    f.commit("unsigned").create()?;
    f.commit("gpg signed").sign_gpg(&k.gpg).create()?;
    f.commit("gpg stranger")
        .sign_gpg(&k.gpg_stranger)
        .create()?;
    f.push()?;
    let out = src.fetch(Some(&base))?;
    let statuses: Vec<&SignatureStatus> = out.new_commits.iter().map(|c| &c.signature).collect();
    assert_eq!(statuses.len(), 5);
    match statuses[0] {
        SignatureStatus::Verified {
            format,
            signer,
            key,
        } => {
            assert_eq!(*format, SignatureFormat::Ssh);
            assert_eq!(signer, "signer@example.com");
            assert!(key.starts_with("SHA256:"), "{key}");
        }
        other => panic!("ssh signed: {other:?}"),
    }
    assert!(
        matches!(
            statuses[1],
            SignatureStatus::Untrusted {
                format: SignatureFormat::Ssh,
                ..
            }
        ),
        "{:?}",
        statuses[1]
    );
    assert_eq!(statuses[2], &SignatureStatus::Unsigned);
    match statuses[3] {
        SignatureStatus::Verified {
            format,
            signer,
            key,
        } => {
            assert_eq!(*format, SignatureFormat::Gpg);
            assert_eq!(signer, "Gee Pee <gpg@example.com>");
            assert_eq!(key, &k.gpg.fingerprint);
        }
        other => panic!("gpg signed: {other:?}"),
    }
    assert!(
        matches!(
            statuses[4],
            SignatureStatus::Untrusted {
                format: SignatureFormat::Gpg,
                ..
            }
        ),
        "{:?}",
        statuses[4]
    );
    // record never blocks, even with an untrusted head.
    assert!(matches!(out.decision, DeployDecision::Deploy { .. }));

    // Policy off: nothing checked.
    let off = source(&f, tempfile::tempdir()?.path(), &k, SignatureMode::Off).fetch(None)?;
    assert_eq!(off.new_commits[0].signature, SignatureStatus::NotChecked);
    Ok(())
}

#[test]
fn require_mode_blocks_unsigned_and_forged_heads_and_deploys_verified_ones() -> Result<()> {
    let f = Fixture::new()?;
    let cache = tempfile::tempdir()?;
    let k = keys(&f)?;
    let who = Person::new("Sig Ner", "signer@example.com");
    let good = f
        .commit("ssh signed")
        .author(who)
        .sign_ssh(&k.ssh)
        .create()?;
    f.push()?;
    let src = source(&f, cache.path(), &k, SignatureMode::Require);
    let out = src.fetch(None)?;
    assert_eq!(out.decision, DeployDecision::Deploy { sha: good.clone() });

    let unsigned = f.commit("sneaky unsigned").write("x", "x").create()?;
    f.push()?;
    let out = src.fetch(Some(&good))?;
    match &out.decision {
        DeployDecision::Blocked { sha, reason } => {
            assert_eq!(sha, &unsigned);
            assert!(reason.contains("not signed"), "{reason}");
        }
        d => panic!("unsigned head deployed: {d:?}"),
    }
    assert_eq!(out.head_signature, SignatureStatus::Unsigned);

    // A signature copied onto a changed commit does not verify.
    f.reset_hard(&good)?;
    let forged = tampered_copy(&f, &good)?;
    f.push()?;
    let out = src.fetch(Some(&unsigned))?;
    assert_eq!(out.head, forged);
    match (&out.decision, &out.head_signature) {
        (DeployDecision::Blocked { reason, .. }, SignatureStatus::Invalid { format, .. }) => {
            assert_eq!(*format, SignatureFormat::Ssh);
            assert!(reason.starts_with("invalid signature"), "{reason}");
        }
        other => panic!("forged head: {other:?}"),
    }
    // Nothing new but still unverified: still blocked.
    let again = src.fetch(Some(&forged))?;
    assert!(again.new_commits.is_empty());
    assert!(matches!(again.decision, DeployDecision::Blocked { .. }));
    Ok(())
}

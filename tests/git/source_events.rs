//! Git observations recorded in the event log, end to end: a real repository served by a real
//! `git daemon`, the Git source, and a real sled store behind its single writer. Every new commit
//! becomes a CommitObserved with exact people, offsets and messages, found again through the
//! author and commit indexes; a force-push, a damaged mirror, a refused signature and an
//! unreachable remote are each an event, and the App keeps its last good revision throughout —
//! also across a restart.

use anyhow::Result;
use reckon::event::{Envelope, Event, EventKind};
use reckon::fetch::fetch as observe;
use reckon::source::{GitSource, RefSelector, SignatureMode, SignaturePolicy, SourceSpec};
use reckon::store::writer::{self, StoreHandle};
use reckon::store::{EventRead, OpenOptions, Query, Selector, SledStore};
use reckon_testenv::git::{Fixture, GitDaemon, Person, SshKey};
use std::path::Path;

fn open(path: &Path) -> StoreHandle {
    let store = SledStore::open(
        path,
        OpenOptions {
            create: true,
            ..Default::default()
        },
    )
    .unwrap();
    writer::spawn(store).0
}

fn source(url: &str, cache: &Path, signatures: SignaturePolicy) -> GitSource {
    GitSource::new(
        SourceSpec {
            id: "shop".into(),
            url: url.into(),
            reference: RefSelector::Branch("main".into()),
            path: "apps/shop".into(),
            access: Default::default(),
            signatures,
        },
        cache,
    )
}

fn events(store: &StoreHandle, selector: Selector) -> Vec<Envelope> {
    store
        .reader()
        .query(&Query::new(selector).oldest_first().limit(1000))
        .unwrap()
        .events
}

fn kinds(envs: &[Envelope]) -> Vec<EventKind> {
    envs.iter().map(|e| e.body.event.kind()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_observation_is_an_event_and_the_app_keeps_its_last_good_revision() -> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    let first = f
        .commit("Add the shop")
        .author(Person::new("Ada Lovelace", "ada@example.com").at(1_700_000_000, 120))
        .committer(Person::new("CI Bot", "bot@example.com").at(1_700_000_100, -300))
        .write("apps/shop/deploy.yaml", "kind: Deployment\n")
        .create()?;
    f.push()?;
    let daemon = GitDaemon::start(&f.served_root())?;
    let url = daemon.url(f.name());
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("cache");
    let store = open(&dir.path().join("store"));
    let src = source(&url, &cache, SignaturePolicy::default());

    // First observation: the head, with exact people and offsets.
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(
        (o.appended, o.observed_head.as_deref()),
        (1, Some(first.as_str()))
    );
    let all = events(&store, Selector::App("shop".into()));
    let Event::CommitObserved(c) = &all[0].body.event else {
        panic!("{all:?}")
    };
    assert_eq!(c.sha, first);
    assert_eq!(c.ref_name, "refs/heads/main");
    assert_eq!(
        (c.author.email.as_str(), c.author.offset_seconds),
        ("ada@example.com", 7200)
    );
    assert_eq!(c.author.time.timestamp(), 1_700_000_000);
    assert_eq!(
        (c.committer.name.as_str(), c.committer.offset_seconds),
        ("CI Bot", -18000)
    );
    assert_eq!(c.message.trim_end(), "Add the shop");
    assert_eq!(c.changed_paths, vec!["apps/shop/deploy.yaml".to_string()]);

    // Three commits by different people: three events, first-parent order, oldest first, each
    // found by its author and by its SHA.
    let mut shas = Vec::new();
    for (i, who) in ["grace@example.com", "linus@example.com", "ada@example.com"]
        .iter()
        .enumerate()
    {
        shas.push(
            f.commit(&format!("change {i}\n\nWhy: test {i}"))
                .author(Person::new("Dev", who).at(1_700_001_000 + i as i64, 0))
                .write("apps/shop/deploy.yaml", format!("kind: Deployment # {i}\n"))
                .create()?,
        );
    }
    f.push()?;
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(o.appended, 3);
    assert_eq!(o.deployable_head.as_deref(), Some(shas[2].as_str()));
    let commits = events(&store, Selector::Kind(EventKind::CommitObserved));
    let observed: Vec<&str> = commits
        .iter()
        .map(|e| match &e.body.event {
            Event::CommitObserved(c) => c.sha.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(observed, [first.as_str(), &shas[0], &shas[1], &shas[2]]);
    assert_eq!(
        events(&store, Selector::Author("linus@example.com".into())).len(),
        1
    );
    assert_eq!(
        events(&store, Selector::Author("ADA@example.com".into())).len(),
        2
    );
    assert_eq!(events(&store, Selector::Commit(shas[1].clone())).len(), 1);

    // A steady-state poll writes nothing.
    assert_eq!(observe(&store, "shop", &src).await?.appended, 0);

    // A force-push: HistoryRewritten (with the merge base), then the new commit.
    f.reset_hard(&shas[0])?;
    let rewritten = f
        .commit("rewrite")
        .write("apps/shop/deploy.yaml", "kind: Deployment # rewritten\n")
        .create()?;
    f.push()?;
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(o.observed_head.as_deref(), Some(rewritten.as_str()));
    let tail = events(&store, Selector::App("shop".into()));
    let tail = &tail[tail.len() - 2..];
    assert_eq!(
        kinds(tail),
        [EventKind::HistoryRewritten, EventKind::CommitObserved]
    );
    let Event::HistoryRewritten(rw) = &tail[0].body.event else {
        unreachable!()
    };
    assert_eq!(
        (
            rw.old_head.as_str(),
            rw.new_head.as_str(),
            rw.merge_base.as_deref()
        ),
        (shas[2].as_str(), rewritten.as_str(), Some(shas[0].as_str()))
    );

    // A damaged mirror is recloned, and that is recorded.
    std::fs::write(src.cache_dir().join("config"), "[core\n\tbare = \u{0}[[[")?;
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(o.appended, 1);
    let last = events(&store, Selector::Kind(EventKind::SourceCacheRecovered));
    assert_eq!(last.len(), 1);

    // The remote goes away: SourceFetchFailed with a reason; the App keeps its revision.
    drop(daemon);
    let o = observe(&store, "shop", &src).await?;
    assert!(o.failure.is_some());
    assert_eq!(o.deployable_head.as_deref(), Some(rewritten.as_str()));
    let failed = events(&store, Selector::Kind(EventKind::SourceFetchFailed));
    let Event::SourceFetchFailed(ff) = &failed[0].body.event else {
        unreachable!()
    };
    assert_eq!(
        (ff.reason.as_str(), ff.url.as_str()),
        ("Unreachable", url.as_str())
    );
    assert!(ff.error.contains("127.0.0.1"), "{}", ff.error);

    // Restart: the projection remembers the head, so nothing is observed twice.
    store.close().await?;
    let store = open(&dir.path().join("store"));
    let src = source(
        &f.file_url(),
        &dir.path().join("cache2"),
        SignaturePolicy::default(),
    );
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(
        o.appended, 0,
        "a restarted observer re-recorded known commits"
    );
    assert_eq!(o.observed_head.as_deref(), Some(rewritten.as_str()));
    store.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_refused_by_the_signature_policy_is_recorded_and_not_deployable() -> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    let key = SshKey::generate(&f.root().join("signer"), "signer")?;
    let allowed = f.root().join("allowed_signers");
    std::fs::write(&allowed, key.allowed_signers_line("signer@example.com"))?;
    let signed = f
        .commit("signed release")
        .author(Person::new("Signer", "signer@example.com").at(1_700_000_000, 0))
        .committer(Person::new("Signer", "signer@example.com").at(1_700_000_000, 0))
        .write("apps/shop/a.yaml", "kind: ConfigMap\n")
        .sign_ssh(&key)
        .create()?;
    f.push()?;
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("store"));
    let policy = SignaturePolicy {
        mode: SignatureMode::Require,
        ssh_allowed_signers: Some(allowed),
        gpg_public_keys: vec![],
    };
    let src = source(&f.file_url(), &dir.path().join("cache"), policy);
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(o.deployable_head.as_deref(), Some(signed.as_str()));
    let good = events(&store, Selector::Commit(signed.clone()));
    let Event::CommitObserved(c) = &good[0].body.event else {
        unreachable!()
    };
    assert!(
        matches!(&c.signature, reckon::event::SignatureStatus::Good { format, signer, .. }
            if format == "ssh" && signer == "signer@example.com"),
        "{:?}",
        c.signature
    );

    let unsigned = f
        .commit("sneaky change")
        .write("apps/shop/a.yaml", "kind: ConfigMap # changed\n")
        .create()?;
    f.push()?;
    let o = observe(&store, "shop", &src).await?;
    assert_eq!(o.observed_head.as_deref(), Some(unsigned.as_str()));
    assert_eq!(
        o.deployable_head.as_deref(),
        Some(signed.as_str()),
        "kept the signed revision"
    );
    let blocked = events(&store, Selector::Kind(EventKind::RevisionBlocked));
    let Event::RevisionBlocked(b) = &blocked[0].body.event else {
        unreachable!()
    };
    assert_eq!(
        (b.revision.as_str(), b.kept.as_deref()),
        (unsigned.as_str(), Some(signed.as_str()))
    );
    assert!(!b.reason.is_empty());
    // Polling again does not record the refusal twice.
    assert_eq!(observe(&store, "shop", &src).await?.appended, 0);
    store.close().await?;
    Ok(())
}

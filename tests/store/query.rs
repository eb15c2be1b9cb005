//! The query layer on a real store (no cluster): every history filter, paged with cursors,
//! equals the same filter applied to the whole log by brute force; a sparse filter returns
//! short pages with a cursor instead of scanning the whole log at once; revisions pages
//! concatenate to the unlimited list.

use crate::support::store as common;

use reckon::event::{Draft, Envelope, Event, IntentKind, IntentRecorded, samples};
use reckon::query::{self, Category, HistoryFilter};
use reckon::store::{EventRead, EventStore, OpenOptions, SledStore};

const APPS: u64 = 2;
const OBJECTS: u64 = 4;

fn store(events: u64) -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SledStore::open(dir.path().join("s"), OpenOptions::create()).unwrap();
    // A rollback and a resume at the very start of app-0's history: rare events for sparse
    // filters.
    s.append(vec![
        Draft::new(
            Some("app-0"),
            Event::IntentRecorded(IntentRecorded {
                intent: IntentKind::Rollback,
                revision: Some(samples::sha(0)),
                reason: Some("bad build".into()),
            }),
        )
        .by("ana"),
    ])
    .unwrap();
    let mut i = 0;
    while i < events {
        let end = (i + 5000).min(events);
        s.append(
            (i..end)
                .map(|j| samples::stream(j, APPS, OBJECTS))
                .collect(),
        )
        .unwrap();
        i = end;
    }
    s.append(vec![
        Draft::new(
            Some("app-0"),
            Event::IntentRecorded(IntentRecorded {
                intent: IntentKind::Resume,
                revision: None,
                reason: None,
            }),
        )
        .by("ana"),
    ])
    .unwrap();
    s.flush().unwrap();
    (dir, s)
}

fn all(s: &SledStore) -> Vec<Envelope> {
    let mut v: Vec<Envelope> = s.reader().iter_from(1).map(|e| e.unwrap()).collect();
    v.reverse();
    v
}

/// Every page of `filter`, concatenated, with the page sizes.
fn paged(s: &SledStore, filter: &HistoryFilter) -> (Vec<u64>, Vec<usize>) {
    let mut f = filter.clone();
    let mut seqs = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let page = query::history(s, s.projections(), &f).unwrap();
        assert!(page.events.len() <= f.limit);
        sizes.push(page.events.len());
        seqs.extend(page.events.iter().map(|e| e.seq));
        match page.next {
            Some(n) => f.cursor = Some(n),
            None => return (seqs, sizes),
        }
    }
}

#[test]
fn every_filter_pages_to_exactly_what_a_full_scan_selects() {
    let (_dir, s) = store(30_000);
    let log = all(&s);
    let t = |seq: u64| log.iter().find(|e| e.body.seq == seq).unwrap().body.time;
    let (since, until) = (t(9_000), t(21_000));
    let rev = samples::sha(3 * APPS + 1); // app-1's fourth revision
    let dep1 = samples::object("apps", "v1", "Deployment", Some("ns-1"), "svc-2");
    type Pick = Box<dyn Fn(&Envelope) -> bool>;
    let cases: Vec<(&str, HistoryFilter, Pick)> = vec![
        (
            "app",
            HistoryFilter {
                app: Some("app-1".into()),
                ..Default::default()
            },
            Box::new(|e| e.body.app.as_deref() == Some("app-1")),
        ),
        (
            "object",
            HistoryFilter {
                object: Some("Deployment/ns-1/svc-2".into()),
                ..Default::default()
            },
            Box::new(move |e| {
                e.body
                    .event
                    .object()
                    .is_some_and(|o| o.identity() == dep1.identity())
            }),
        ),
        (
            "revision prefix",
            HistoryFilter {
                revision: Some(rev[..34].into()),
                ..Default::default()
            },
            Box::new({
                let rev = rev.clone();
                move |e| e.body.event.revisions().contains(&rev.as_str())
            }),
        ),
        (
            "author",
            HistoryFilter {
                author: Some("DEV3@example.com".into()),
                ..Default::default()
            },
            Box::new(|e| e.body.event.authors().contains(&"dev3@example.com")),
        ),
        (
            "category (two kinds merged)",
            HistoryFilter {
                category: Some(Category::Drift),
                ..Default::default()
            },
            Box::new(|e| Category::of(e.body.event.kind()) == Some(Category::Drift)),
        ),
        (
            "category (four kinds merged) in a time window",
            HistoryFilter {
                category: Some(Category::Apply),
                since: Some(since),
                until: Some(until),
                ..Default::default()
            },
            Box::new(move |e| {
                Category::of(e.body.event.kind()) == Some(Category::Apply)
                    && e.body.time >= since
                    && e.body.time <= until
            }),
        ),
        (
            "app and category",
            HistoryFilter {
                app: Some("app-0".into()),
                category: Some(Category::Commit),
                ..Default::default()
            },
            Box::new(|e| {
                e.body.app.as_deref() == Some("app-0")
                    && matches!(e.body.event, Event::CommitObserved(_))
            }),
        ),
        (
            "object and category",
            HistoryFilter {
                object: Some("Deployment/ns-1/svc-2".into()),
                category: Some(Category::Drift),
                ..Default::default()
            },
            Box::new({
                let dep = samples::object("apps", "v1", "Deployment", Some("ns-1"), "svc-2");
                move |e| {
                    e.body
                        .event
                        .object()
                        .is_some_and(|o| o.identity() == dep.identity())
                        && matches!(
                            e.body.event,
                            Event::DriftDetected(_) | Event::DriftCorrected(_)
                        )
                }
            }),
        ),
        (
            "revision, category and time window",
            HistoryFilter {
                revision: Some(samples::sha(937 * APPS)[..36].into()),
                category: Some(Category::Apply),
                since: Some(since),
                until: Some(until),
                ..Default::default()
            },
            Box::new({
                let rev = samples::sha(937 * APPS);
                move |e| {
                    e.body.event.revisions().contains(&rev.as_str())
                        && Category::of(e.body.event.kind()) == Some(Category::Apply)
                        && e.body.time >= since
                        && e.body.time <= until
                }
            }),
        ),
        (
            "author and App",
            HistoryFilter {
                author: Some("dev7@example.com".into()),
                app: Some("app-1".into()),
                ..Default::default()
            },
            Box::new(|e| {
                e.body.app.as_deref() == Some("app-1")
                    && e.body.event.authors().contains(&"dev7@example.com")
            }),
        ),
        ("everything", HistoryFilter::default(), Box::new(|_| true)),
    ];
    for (name, mut filter, pick) in cases {
        filter.limit = 97;
        let expected: Vec<u64> = log.iter().filter(|e| pick(e)).map(|e| e.body.seq).collect();
        assert!(!expected.is_empty(), "{name}: the case selects something");
        let (got, sizes) = paged(&s, &filter);
        assert_eq!(got.len(), expected.len(), "{name}");
        assert_eq!(got, expected, "{name}");
        // Pages are full until the last one (these filters are exact on their index or dense).
        assert!(
            sizes[..sizes.len() - 1].iter().all(|n| *n == 97),
            "{name}: {sizes:?}"
        );
    }
}

#[test]
fn a_sparse_combination_is_found_from_the_indexes_in_one_page() {
    let (_dir, s) = store(50_000);
    // app-0 has ~25,000 events; its two intents are at its oldest and newest ends. The App and
    // kind indexes are intersected without reading the events in between.
    let filter = HistoryFilter {
        app: Some("app-0".into()),
        category: Some(Category::Rollback),
        limit: 10,
        ..Default::default()
    };
    let page = query::history(&s, s.projections(), &filter).unwrap();
    assert_eq!(page.next, None);
    let summaries: Vec<&str> = page.events.iter().map(|e| e.summary.as_str()).collect();
    let rollback = format!("rollback to {}: bad build", &samples::sha(0)[..12]);
    assert_eq!(summaries, vec!["resume", rollback.as_str()]);
    assert!(
        page.events
            .iter()
            .all(|e| e.actor.as_deref() == Some("ana"))
    );
    assert_eq!(page.events[1].seq, 1);
    // Oldest first after the first event (how --follow polls): only the resume.
    let after = query::history_after(&s, s.projections(), &filter, 1).unwrap();
    assert_eq!(after.events.len(), 1);
    assert_eq!(after.events[0].summary, "resume");
    // Pages of one continue exactly.
    let (seqs, sizes) = paged(
        &s,
        &HistoryFilter {
            limit: 1,
            ..filter.clone()
        },
    );
    assert_eq!(seqs, vec![page.events[0].seq, 1], "{sizes:?}");
    // Nothing for the other App.
    let other = query::history(
        &s,
        s.projections(),
        &HistoryFilter {
            app: Some("app-1".into()),
            ..filter
        },
    )
    .unwrap();
    assert!(other.events.is_empty());
    assert_eq!(other.next, None);
}

#[test]
fn follow_polls_see_only_what_was_appended_after_the_cursor() {
    let (_dir, mut s) = store(1_000);
    let head = s.reader().last_seq().unwrap();
    let filter = HistoryFilter {
        app: Some("app-1".into()),
        ..Default::default()
    };
    let nothing = query::history_after(&s, s.projections(), &filter, head).unwrap();
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.next, None);
    s.append(
        (1_000..1_010)
            .map(|j| samples::stream(j, APPS, OBJECTS))
            .collect(),
    )
    .unwrap();
    let page = query::history_after(&s, s.projections(), &filter, head).unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        vec![head + 2, head + 4, head + 6, head + 8, head + 10]
    );
    assert_eq!(page.next, Some(head + 10));
    let again = query::history_after(&s, s.projections(), &filter, page.next.unwrap()).unwrap();
    assert!(again.events.is_empty());
}

#[test]
fn revision_pages_concatenate_to_the_whole_list() {
    let (_dir, s) = store(6_000);
    let whole = query::revisions(&s, s.projections(), "app-0").unwrap();
    assert!(whole.len() > 50, "{}", whole.len());
    assert!(whole.windows(2).all(|w| w[0].first_seen >= w[1].first_seen));
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page =
            query::revisions_page(&s, s.projections(), "app-0", 20, cursor.as_deref()).unwrap();
        pages.extend(page.revisions);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(pages, whole);
    // Each revision of the sample stream applies (or drifts) its App's OBJECTS objects.
    let full = &whole[1];
    assert!(
        full.author_email
            .as_deref()
            .unwrap()
            .ends_with("@example.com")
    );
    assert!(full.summary.as_deref().unwrap().starts_with("Update app-0"));
    assert!(full.objects_changed <= OBJECTS && full.objects_changed >= OBJECTS - 1);
    let e = query::revisions_page(&s, s.projections(), "app-0", 20, Some("nope")).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

/// The ConfigMap of the hand-made history, in `color`.
fn cm(color: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"}, "data": {"color": color}})
}

/// What the steps on the hand-made history know besides its store: the two commits, and the
/// last sequence number and time of each sync.
#[derive(serde::Serialize, serde::Deserialize)]
struct Recorded {
    c1: reckon::event::CommitObserved,
    c2: reckon::event::CommitObserved,
    seq_time: Vec<(u64, chrono::DateTime<chrono::Utc>)>,
}

/// A private copy of the hand-made history (built once per run, `support::fixture`), opened.
fn recorded_history() -> (tempfile::TempDir, SledStore, Recorded) {
    let (dir, recorded) = crate::support::fixture::shared("store-query-history", |into| {
        let mut s = SledStore::open(into.join("s"), OpenOptions::create()).unwrap();
        let recorded = record_history(&mut s);
        s.close().unwrap();
        recorded
    });
    let s = SledStore::open(dir.path().join("s"), OpenOptions::default()).unwrap();
    (dir, s, recorded)
}

/// A small hand-made history: a render with its manifests, a sync, health, an uncorrected drift
/// and a rollback by a person. Each step below is a test of its own on a copy.
fn record_history(s: &mut SledStore) -> Recorded {
    use reckon::event::*;
    let obj = samples::object("", "v1", "ConfigMap", Some("shop"), "settings");
    let mut c1 = samples::commit(1, "alice@example.com");
    c1.sha = format!("aaaa{}", &c1.sha[4..]);
    let mut c2 = samples::commit(2, "bob@example.com");
    c2.sha = format!("aaab{}", &c2.sha[4..]);
    let mut seq_time = Vec::new();
    for (c, color) in [(&c1, "blue"), (&c2, "green")] {
        let set = reckon::store::blob::canonical(&[cm(color)]);
        let set_digest = s.put_blob(&set).unwrap();
        let one = s.put_blob(&set).unwrap(); // one object: the set is the object's manifest
        let d = |e: Event| Draft::new(Some("shop"), e);
        let appended = s
            .append(vec![
                d(Event::CommitObserved(c.clone())),
                d(Event::RenderSucceeded(RenderSucceeded {
                    revision: c.sha.clone(),
                    digest: set_digest,
                    object_count: 1,
                })),
                d(Event::SyncStarted(SyncStarted {
                    revision: c.sha.clone(),
                    digest: Some(set_digest),
                })),
                d(Event::ObjectApplied(ObjectApplied {
                    revision: c.sha.clone(),
                    object: obj.clone(),
                    action: if color == "blue" {
                        ApplyAction::Created
                    } else {
                        ApplyAction::Configured
                    },
                    changed_fields: vec!["/data/color".into()],
                    digest: one,
                })),
                d(Event::SyncFinished(SyncFinished {
                    revision: c.sha.clone(),
                    outcome: SyncOutcome::Succeeded,
                    counts: SyncCounts::default(),
                    duration_ms: 7,
                })),
                d(Event::HealthChanged(HealthChanged {
                    object: None,
                    from: Health::Unknown,
                    to: Health::Healthy,
                    message: None,
                })),
            ])
            .unwrap();
        s.flush().unwrap();
        seq_time.push((
            appended.last_seq,
            s.get(appended.last_seq).unwrap().unwrap().body.time,
        ));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    s.append(vec![Draft::new(
        Some("shop"),
        Event::DriftDetected(DriftDetected {
            object: obj.clone(),
            diffs: vec![FieldDiff {
                path: "/data/color".into(),
                expected: Some("\"green\"".into()),
                actual: Some("\"red\"".into()),
            }],
            managers: vec![FieldManager {
                manager: "kubectl-edit".into(),
                operation: "Update".into(),
                fields: vec!["/data/color".into()],
                time: None,
            }],
        }),
    )])
    .unwrap();
    s.append(vec![
        Draft::new(
            Some("shop"),
            Event::IntentRecorded(IntentRecorded {
                intent: IntentKind::Rollback,
                revision: Some(c1.sha.clone()),
                reason: Some("green breaks checkout".into()),
            }),
        )
        .by("ana"),
    ])
    .unwrap();
    s.flush().unwrap();
    Recorded { c1, c2, seq_time }
}

#[test]
fn status_on_a_recorded_history() {
    use reckon::event::*;
    let (_dir, s, Recorded { c1, c2, .. }) = recorded_history();
    let p = s.projections().clone();

    let st = query::status(&s, &p, Some("shop")).unwrap();
    assert_eq!(st.len(), 1);
    let st = &st[0];
    assert!(st.pinned);
    assert_eq!(st.intent.kind, "rollback");
    assert_eq!(st.intent.revision.as_deref(), Some(c1.sha.as_str()));
    assert_eq!(st.intent.actor.as_deref(), Some("ana"));
    assert_eq!(st.intent.reason.as_deref(), Some("green breaks checkout"));
    assert_eq!(st.applied_revision.as_deref(), Some(c2.sha.as_str()));
    assert_eq!(st.health, Some(Health::Healthy));
    assert_eq!(st.drift_count, 1);
    assert_eq!(st.drifted, vec!["ConfigMap/shop/settings".to_string()]);
    assert_eq!(st.last_sync.as_ref().unwrap().revision, c2.sha);
    let e = query::status(&s, &p, Some("nope")).unwrap_err();
    assert!(e.to_string().contains("\"nope\""), "{e}");
}

#[test]
fn replay_on_a_recorded_history() {
    let (_dir, s, Recorded { c1, c2, seq_time }) = recorded_history();

    // Replay: after the first sync, before the rollback, now.
    let (seq1, t1) = seq_time[0];
    let then = query::replay(&s, t1, Some("shop")).unwrap();
    assert_eq!(then[0].seq, seq1);
    assert!(!then[0].pinned);
    assert_eq!(then[0].applied_revision.as_deref(), Some(c1.sha.as_str()));
    assert_eq!(then[0].inventory[0].revision, c1.sha);
    let now = query::replay(&s, chrono::Utc::now(), None).unwrap();
    assert!(now[0].pinned);
    assert_eq!(now[0].intent.actor.as_deref(), Some("ana"));
    assert_eq!(now[0].inventory[0].revision, c2.sha);
    let before = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
    assert!(query::replay(&s, before, None).unwrap().is_empty());
    assert!(matches!(
        query::replay(&s, before, Some("shop")),
        Err(query::QueryError::NothingAt { .. })
    ));
}

#[test]
fn show_and_diff_on_a_recorded_history() {
    let (_dir, s, Recorded { c1, c2, .. }) = recorded_history();
    let p = s.projections().clone();

    // Show by prefix; an ambiguous prefix names both.
    let shown = query::show(&s, &p, "shop", &c1.sha[..6]).unwrap();
    assert_eq!(shown.manifests, vec![cm("blue")]);
    let e = query::show(&s, &p, "shop", "aaa").unwrap_err().to_string();
    assert!(e.contains(&c1.sha) && e.contains(&c2.sha), "{e}");
    let d = query::diff_revisions(&s, &p, "shop", &c1.sha[..5], &c2.sha[..5]).unwrap();
    assert!(d.added.is_empty() && d.removed.is_empty());
    assert_eq!(d.changed[0].object, "ConfigMap/shop/settings");
    assert_eq!(d.changed[0].fields[0].path, "/data/color");
    assert_eq!(d.changed[0].fields[0].from, Some(serde_json::json!("blue")));
}

#[test]
fn blame_on_a_recorded_history() {
    let (_dir, s, Recorded { c1, c2, .. }) = recorded_history();
    let p = s.projections().clone();

    // Blame: the color from Bob's commit, with its open drift; the name from Alice's.
    let spec: query::ObjectSpec = "ConfigMap/shop/settings".parse().unwrap();
    let b = query::blame(&s, &p, &spec, None, None).unwrap();
    let color = b.fields.iter().find(|f| f.path == "/data/color").unwrap();
    assert_eq!(color.set_by.as_ref().unwrap().revision, c2.sha);
    assert_eq!(
        color.set_by.as_ref().unwrap().author_email.as_deref(),
        Some("bob@example.com")
    );
    assert_eq!(color.drifts.len(), 1);
    assert!(!color.drifts[0].corrected);
    assert_eq!(color.drifts[0].managers[0].manager, "kubectl-edit");
    let name = b
        .fields
        .iter()
        .find(|f| f.path == "/metadata/name")
        .unwrap();
    assert_eq!(name.set_by.as_ref().unwrap().revision, c1.sha);
    let e = query::blame(&s, &p, &spec, None, Some("spec.replicas"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/spec/replicas"), "{e}");
}

/// A small deterministic generator (xorshift), so a failure names the seed that made it.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Blame reads only what it needs (the object's events newest first until every field is
/// settled, the drift index for drifts, the commit each credit names); the whole walk over every
/// event of the object is the reference it must equal, on random histories of creations,
/// configures of random fields, no-op applies, drifts with and without corrections, prunes and
/// re-creations, and another App's events on the same object.
#[test]
fn blame_reads_less_but_answers_like_the_whole_walk() {
    use reckon::event::{
        ApplyAction, DriftCorrected, DriftDetected, FieldDiff, FieldManager, ObjectApplied,
        ObjectPruned,
    };
    let object = samples::object("apps", "v1", "Deployment", Some("web"), "api");
    let spec: query::ObjectSpec = "Deployment.apps/web/api".parse().unwrap();
    let paths = [
        "/spec/replicas",
        "/spec/template/spec/containers/0/image",
        "/metadata/labels",
        "/metadata/labels/tier",
        "/spec/template",
        "/spec/paused",
    ];
    let manifest = |n: u64| {
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "web", "labels": {"tier": format!("t{}", n % 3)}},
            "spec": {
                "replicas": n % 4,
                "paused": n.is_multiple_of(2),
                "template": {"spec": {"containers": [{"name": "api", "image": format!("api:{n}")}]}}
            }
        })
    };
    let mut early_stops = 0;
    for seed in 1..=60u64 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SledStore::open(dir.path().join("s"), OpenOptions::create()).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rev = 0;
        let mut live = false;
        let mut last_manifest = 0;
        let mut drafts: Vec<Draft> = vec![];
        let steps = 20 + rng.below(80);
        for step in 0..steps {
            let last = step + 1 == steps;
            let choice = if last || !live { 0 } else { rng.below(12) };
            let app = if rng.below(8) == 0 { "other" } else { "shop" };
            let before = drafts.len();
            let apply = |s: &mut SledStore, rev: u64, action: ApplyAction, changed: Vec<String>| {
                let digest = s
                    .put_blob(&serde_json::to_vec(&manifest(step)).unwrap())
                    .unwrap();
                Event::ObjectApplied(ObjectApplied {
                    revision: samples::sha(rev),
                    object: object.clone(),
                    action,
                    changed_fields: changed,
                    digest,
                })
            };
            // Mostly the image, as in real histories: long lives where few fields ever change.
            let pick = |rng: &mut Rng| -> Vec<String> {
                if rng.below(4) != 0 {
                    return vec![paths[1].to_string()];
                }
                (0..1 + rng.below(2))
                    .map(|_| paths[rng.below(paths.len() as u64) as usize].to_string())
                    .collect()
            };
            match choice {
                // (Re-)create, or configure under a new commit.
                0..=2 => {
                    rev += 1;
                    drafts.push(Draft::new(
                        Some("shop"),
                        Event::CommitObserved(samples::commit(rev, "dev@example.com")),
                    ));
                    let e = if live {
                        apply(&mut s, rev, ApplyAction::Configured, pick(&mut rng))
                    } else {
                        apply(&mut s, rev, ApplyAction::Created, vec![])
                    };
                    drafts.push(Draft::new(Some("shop"), e));
                    live = true;
                }
                3 => {
                    let e = apply(&mut s, rev, ApplyAction::Unchanged, vec![]);
                    drafts.push(Draft::new(Some(app), e));
                }
                // A drift, put back (the re-apply, then the correction) or not.
                4..=6 => {
                    let path = if rng.below(6) == 0 {
                        String::new()
                    } else {
                        paths[rng.below(paths.len() as u64) as usize].to_string()
                    };
                    drafts.push(Draft::new(
                        Some(app),
                        Event::DriftDetected(DriftDetected {
                            object: object.clone(),
                            diffs: vec![FieldDiff {
                                path: path.clone(),
                                expected: Some("1".into()),
                                actual: Some("2".into()),
                            }],
                            managers: vec![FieldManager {
                                manager: "kubectl-edit".into(),
                                operation: "Update".into(),
                                fields: vec![path.clone()],
                                time: None,
                            }],
                        }),
                    ));
                    if choice != 6 {
                        let e = apply(&mut s, rev, ApplyAction::Configured, vec![path.clone()]);
                        drafts.push(Draft::new(Some(app), e));
                        drafts.push(Draft::new(
                            Some(app),
                            Event::DriftCorrected(DriftCorrected {
                                revision: samples::sha(rev),
                                object: object.clone(),
                                fields: vec![path],
                            }),
                        ));
                    }
                }
                7 if rng.below(3) == 0 => {
                    drafts.push(Draft::new(
                        Some("shop"),
                        Event::ObjectPruned(ObjectPruned {
                            revision: samples::sha(rev),
                            object: object.clone(),
                        }),
                    ));
                    live = false;
                }
                // Deleted behind reckon's back and created again under the same revision.
                8 if rng.below(3) == 0 => {
                    let e = apply(&mut s, rev, ApplyAction::Created, vec![]);
                    drafts.push(Draft::new(Some("shop"), e));
                }
                // Unrelated events in between (another object of the App).
                _ => drafts.push(samples::stream(step, 1, 3)),
            }
            // Blame reads the manifest of the App's last apply of the object.
            if drafts[before..].iter().any(|d| {
                d.app.as_deref() == Some("shop") && matches!(d.event, Event::ObjectApplied(_))
            }) {
                last_manifest = step;
            }
            // Batches of random size: index blocks and log chunks split anywhere.
            if rng.below(4) == 0 {
                s.append(std::mem::take(&mut drafts)).unwrap();
            }
        }
        s.append(drafts).unwrap();
        s.flush().unwrap();

        let p = s.projections().clone();
        let events = query::object_events(&s, &object, "shop").unwrap();
        let got = query::blame(&s, &p, &spec, Some("shop"), None)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        common::oracle::check_blame(
            &got,
            &events,
            &manifest(last_manifest),
            &format!("seed {seed}"),
        );
        // Every credit names its commit's author (each revision was observed).
        for f in &got.fields {
            let c = f.set_by.as_ref().unwrap();
            assert_eq!(
                c.author_email.as_deref(),
                Some("dev@example.com"),
                "seed {seed}"
            );
        }
        let entry = &p.apps["shop"].inventory[&object.identity()];
        if entry.lifecycle_seq.is_some_and(|l| {
            events.iter().filter(|e| e.body.seq > l).count() > 3 && entry.changed_since.len() < 3
        }) {
            early_stops += 1;
        }
    }
    // The generator must exercise histories where the early stop matters.
    assert!(early_stops > 5, "only {early_stops} long histories");
}

/// The revision table's counts and commits come from the projections now; the log itself is the
/// reference: distinct objects created, configured or pruned under each revision, and the
/// author and message of its CommitObserved.
#[test]
fn revisions_count_and_describe_what_the_log_says() {
    let (_d, s) = store(3000);
    let log: Vec<Envelope> = s.reader().iter_from(1).map(|e| e.unwrap()).collect();
    for app in ["app-0", "app-1"] {
        let rows = query::revisions(&s, s.projections(), app).unwrap();
        assert!(rows.len() > 20, "{app}: {} revisions", rows.len());
        common::oracle::check_revisions(&log, app, &rows);
        assert!(rows.iter().any(|r| r.objects_changed > 0));
    }
}

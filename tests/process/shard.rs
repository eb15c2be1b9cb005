//! Two shards as processes (`reckon run --shards 2 --shard I --peers ...`) against the real
//! control plane, each with its own store, watching the same App objects: every App is
//! reconciled by exactly one shard (the hash's, or the one its `reckon.dev/shard` label names;
//! a label naming no shard leaves it to nobody, said in its status by shard 0), and either
//! shard's API answers for the fleet — history merged by time, paged with a small limit into
//! exactly the union of both stores, App lists, per-App queries and a POST forwarded to the
//! owner, and live event streams from the owner through either shard (also across a move). A
//! stopped shard makes the fleet answer 502 naming it, or a partial answer saying so.
//!
//! One test per step, each on a fleet of its own (`support::fleet`): nextest runs every test in
//! a process of its own, so a running fleet cannot be shared, and starting one (two processes,
//! five one-object Apps) takes about a second. The state a step starts from is reached by the
//! builder (every owned App Ready, the history window) or by the test itself (an App moved to
//! the other shard with a new commit, a shard stopped); the steps that watch a move happen
//! (following the fleet, live streams) open what they watch before they move the App.

use crate::support;

use kube::api::{Api, PostParams};
use reckon::crd::App;
use reckon_testenv::git::{Fixture, TestCa};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::TestNamespace;
use support::crd::{install_app_crd, until};
use support::fleet::{
    ADMIN, Fleet, Http, Live, READER, Shard, Window, app_object, config_map, enc, keys, owners,
};

/// Every owned App applied and Ready (its status written by its owner); the orphan applied by
/// nobody, with shard 0 saying why in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_owned_app_is_applied_and_the_orphan_is_refused() {
    // Every owned App Ready, its status written by its owner: the builder waits for that.
    let fleet = &Fleet::ready().await;
    let (apps, cms, ns) = (&fleet.apps, &fleet.cms, &fleet.ns);
    let (owner_of, orphan) = (fleet.owner_of.clone(), fleet.orphan.clone());
    for name in owner_of.keys() {
        assert!(
            cms.get_opt(&format!("cm-{name}")).await.unwrap().is_some(),
            "{name}'s ConfigMap applied"
        );
    }
    // The orphan: nobody applies it; shard 0 says why in its status.
    let refused = until(
        "the orphan's InvalidShard",
        Duration::from_secs(30),
        || async {
            let app = apps.get(&orphan).await.unwrap();
            app.status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Stalled" && c.reason == "InvalidShard")
        },
    )
    .await;
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains(&format!("{}/orphan", ns.name)) && message.contains("=7"),
        "{message}"
    );
    assert!(cms.get_opt("cm-orphan").await.unwrap().is_none());
}

/// The App list from either shard: every owned App once, with its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_shard_lists_every_app_with_its_owner() {
    let fleet = &Fleet::ready().await;
    let (shards, http) = (&fleet.shards, &fleet.http);
    let owner_of = fleet.owner_of.clone();
    for s in shards {
        let (_, list) = http.ok(&format!("{}/api/v1/apps", s.url), false).await;
        let got = owners(&list);
        let want: BTreeMap<String, u64> = owner_of.iter().map(|(n, o)| (fleet.id(n), *o)).collect();
        assert_eq!(got, want, "apps from {}", s.url);
    }
}

/// History: a fixed window (shards keep polling), each shard's own events as the oracle; every
/// page of it from either shard is the union of both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_shard_answers_history_for_the_fleet() {
    let fleet = &Fleet::ready().await;
    let (shards, http) = (&fleet.shards, &fleet.http);
    let owner_of = fleet.owner_of.clone();
    let Window { want, until_t } = Window::take(fleet).await;
    for s in shards {
        // One page: the union merged newest first by time.
        let (_, page) = http
            .ok(
                &format!("{}/api/v1/events?limit=1000&until={}", s.url, enc(&until_t)),
                false,
            )
            .await;
        assert_eq!(keys(&page, None), want, "one page from {}", s.url);
        assert!(page["next"].is_null());
        // Small pages: exactly the union, in order, no duplicates or gaps.
        let mut got = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = format!("{}/api/v1/events?limit=3&until={}", s.url, enc(&until_t));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={}", enc(c)));
            }
            let (_, page) = http.ok(&url, false).await;
            got.extend(keys(&page, None));
            pages += 1;
            match page["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => {
                    assert!(page["next"].is_null(), "a fleet cursor is a string");
                    break;
                }
            }
            assert!(pages < 1000);
        }
        assert_eq!(got, want, "paged with limit 3 from {}", s.url);
        println!(
            "{}: {} events ({} on shard 0) in {pages} pages of 3",
            s.url,
            want.len(),
            want.iter().filter(|(sh, _)| *sh == 0).count()
        );
        // A filter across shards: one App's events come from its owner only.
        let (app, owner) = owner_of.iter().next().unwrap();
        let app = fleet.id(app);
        let (_, page) = http
            .ok(
                &format!("{}/api/v1/events?app={app}&limit=1000", s.url),
                false,
            )
            .await;
        let ks = keys(&page, None);
        assert!(
            !ks.is_empty() && ks.iter().all(|(sh, _)| sh == owner),
            "{app}: {ks:?}"
        );
    }
}

/// Per-App queries from either shard reach the owner, and so does a POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_app_queries_and_a_post_reach_the_owner() {
    let fleet = &Fleet::ready().await;
    let (shards, http) = (&fleet.shards, &fleet.http);
    let (owner_of, sha) = (fleet.owner_of.clone(), fleet.sha.clone());
    for (app, owner) in &owner_of {
        let app = &fleet.id(app);
        for s in shards {
            let (headers, revs) = http
                .ok(&format!("{}/api/v1/apps/{app}/revisions", s.url), false)
                .await;
            assert_eq!(
                headers[reckon::api::fanout::SHARD_HEADER].to_str().unwrap(),
                owner.to_string()
            );
            assert_eq!(
                revs["revisions"][0]["sha"].as_str(),
                Some(sha.as_str()),
                "{revs}"
            );
            let (_, one) = http
                .ok(&format!("{}/api/v1/apps/{app}", s.url), false)
                .await;
            assert_eq!(one["app"], app.as_str());
        }
    }
    let (status, _, body) = http
        .get(&format!("{}/api/v1/apps/nosuch", shards[0].url), false)
        .await;
    assert_eq!(status, 404, "{body}");
    // A POST through the other shard reaches the owner (resume of an App that is not pinned:
    // the owner's 409, not the other shard's 404).
    let (app, owner) = owner_of.iter().find(|(_, o)| **o == 1).unwrap();
    let app = fleet.id(app);
    let resp = http
        .client
        .post(format!("{}/api/v1/apps/{app}/resume", shards[0].url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(
        resp.headers()[reckon::api::fanout::SHARD_HEADER]
            .to_str()
            .unwrap(),
        owner.to_string()
    );
}

/// Live streams opened on shard 0 before the second commit: of an App shard 1 reconciles
/// (forwarded from shard 1) and of the App about to move from shard 0 to shard 1 (shard 0's own).
async fn live_streams_open_through_shard_0(fleet: &Fleet) -> (Live, Live) {
    let (shards, http) = (&fleet.shards, &fleet.http);
    let other = &fleet.id(&fleet.hashed[&1][0]);
    let moving = &fleet.id(&fleet.hashed[&0][0]);
    let url = |app: &str| format!("{}/api/v1/apps/{app}/events/stream", shards[0].url);
    let (status, shard, forwarded) = Live::open(http, &url(other)).await;
    assert_eq!(
        (status, shard.as_deref()),
        (200, Some("1")),
        "{other}'s stream through shard 0 comes from its owner"
    );
    let (status, shard, own) = Live::open(http, &url(moving)).await;
    assert_eq!((status, shard), (200, None), "shard 0 streams its own App");
    (forwarded, own)
}

/// After the second commit: the forwarded stream carried it from shard 1; the moved App's
/// stream on shard 0 ended when the App left, and reconnecting through shard 0 (as the web UI
/// does, with its last position and that position's shard) reaches the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_follow_the_owner() {
    let fleet = &Fleet::ready().await;
    let (mut forwarded, mut own) = live_streams_open_through_shard_0(fleet).await;
    let (moved, sha2) = fleet.move_app().await;
    let (moved, sha2) = (moved.as_str(), sha2.as_str());
    let other = &fleet.id(&fleet.hashed[&1][0]);
    let moved = &fleet.id(moved);
    let saw = forwarded
        .read_until(Duration::from_secs(90), |rows| {
            rows.iter()
                .any(|r| r["kind"] == "CommitObserved" && r["revision"].as_str() == Some(sha2))
        })
        .await;
    assert!(
        saw,
        "{other}'s stream through shard 0 shows the second commit live: {:?}",
        forwarded.rows
    );
    for r in &forwarded.rows {
        assert_eq!(
            (r["app"].as_str(), r["shard"].as_u64()),
            (Some(other.as_str()), Some(1)),
            "{r}"
        );
    }
    assert!(
        own.read_until(Duration::from_secs(90), |_| false).await || own.ended,
        "the moved App's stream on shard 0 ends when the App moves: {:?}",
        own.rows
    );
    assert!(
        own.rows.iter().all(|r| r["shard"].as_u64() == Some(0)),
        "{:?}",
        own.rows
    );
    let last = own.rows.last().map_or(0, |r| r["seq"].as_u64().unwrap());
    let (status, shard, _again) = Live::open(
        &fleet.http,
        &format!(
            "{}/api/v1/apps/{moved}/events/stream?after={last}&shard=0",
            fleet.shards[0].url
        ),
    )
    .await;
    assert_eq!(
        (status, shard.as_deref()),
        (200, Some("1")),
        "reconnecting reaches the moved App's new owner"
    );
}

/// The CLI against one shard: the fleet's history, with the shard in JSON and tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_against_one_shard_answers_for_the_fleet() {
    let fleet = &Fleet::ready().await;
    let window = &Window::take(fleet).await;
    let (shards, root) = (&fleet.shards, &fleet.root);
    let owner_of = fleet.owner_of.clone();
    let (until_t, want) = (window.until_t.clone(), window.want.clone());
    let cli = |args: &[&str]| {
        let out = support::reckon(root.path())
            .args(args)
            .args(["--server", &shards[1].url, "--token", READER])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reckon {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&cli(&[
        "history", "--until", &until_t, "--limit", "1000", "-o", "json",
    ]))
    .unwrap();
    assert_eq!(keys(&json, None), want);
    let json: Value = serde_json::from_str(&cli(&[
        "history", "--until", &until_t, "--limit", "4", "-o", "json",
    ]))
    .unwrap();
    assert_eq!(keys(&json, None), want[..4]);
    let next = json["next"].as_str().expect("a fleet cursor").to_string();
    let json: Value = serde_json::from_str(&cli(&[
        "history", "--until", &until_t, "--limit", "4", "--cursor", &next, "-o", "json",
    ]))
    .unwrap();
    assert_eq!(keys(&json, None), want[4..8]);
    let table = cli(&["history", "--until", &until_t, "--limit", "5"]);
    assert!(
        table.lines().next().unwrap().starts_with("SHARD"),
        "{table}"
    );
    let status = cli(&["status"]);
    assert!(
        status.lines().next().unwrap().starts_with("SHARD"),
        "{status}"
    );
    for app in owner_of.keys() {
        assert!(status.contains(fleet.id(app).as_str()), "{status}");
    }
}

/// Following the fleet from its head while an App moves to the other shard (its label) and
/// a new commit reaches every App: each new event once, oldest first, from both shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_fleet_while_an_app_moves() {
    let fleet = &Fleet::ready().await;
    let (shards, http) = (&fleet.shards, &fleet.http);
    let (_, first) = http
        .ok(&format!("{}/api/v1/events?limit=1", shards[0].url), false)
        .await;
    let head = first["head"]
        .as_str()
        .expect("a first fleet page has a head")
        .to_string();
    let head_pos: BTreeMap<u64, u64> = head
        .split(',')
        .map(|p| {
            let (s, q) = p.split_once(':').unwrap();
            (s.parse().unwrap(), q.parse().unwrap())
        })
        .collect();
    let (moved, sha2) = fleet.move_app().await;
    let mut after = head.clone();
    let mut followed: Vec<(u64, u64, chrono::DateTime<chrono::Utc>, Value)> = Vec::new();
    let start = Instant::now();
    loop {
        let (_, page) = http
            .ok(
                &format!(
                    "{}/api/v1/events?after={}&limit=5",
                    shards[1].url,
                    enc(&after)
                ),
                false,
            )
            .await;
        for e in page["events"].as_array().unwrap() {
            let t = e["time"].as_str().unwrap().parse().unwrap();
            followed.push((
                e["shard"].as_u64().unwrap(),
                e["seq"].as_u64().unwrap(),
                t,
                e.clone(),
            ));
        }
        after = page["next"]
            .as_str()
            .expect("following always continues")
            .to_string();
        let observed: BTreeSet<u64> = followed
            .iter()
            .filter(|(_, _, _, e)| {
                e["kind"] == "CommitObserved" && e["revision"].as_str() == Some(sha2.as_str())
            })
            .map(|(s, _, _, _)| *s)
            .collect();
        let moved_synced = followed.iter().any(|(s, _, _, e)| {
            *s == 1 && e["app"] == fleet.id(&moved).as_str() && e["kind"] == "SyncFinished"
        });
        if observed.len() == 2 && moved_synced {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "following saw {} events, commit 2 on {observed:?}",
            followed.len()
        );
        if page["events"].as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let mut seen = BTreeSet::new();
    for w in followed.windows(2) {
        assert!(
            w[0].2 <= w[1].2,
            "oldest first: {:?} then {:?}",
            w[0].2,
            w[1].2
        );
    }
    for (s, q, _, _) in &followed {
        assert!(seen.insert((*s, *q)), "({s}, {q}) followed twice");
        assert!(*q > head_pos[s], "({s}, {q}) is after the head {head}");
    }
    for s in 0..2u64 {
        let seqs: Vec<u64> = followed.iter().filter(|f| f.0 == s).map(|f| f.1).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "shard {s}: {seqs:?}");
    }
}

/// The moved App: its new owner writes its status (no StoreGap: the old status counted the
/// other store's events), queries prefer the shard that reconciles it now, and its history
/// is the union of both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moved_app_is_answered_by_its_new_owner() {
    let fleet = &mut Fleet::ready().await;
    let (moved, sha2) = fleet.move_app().await;
    let status = fleet.moved_app_applied(&moved, &sha2).await;
    let (shards, http) = (&fleet.shards, &fleet.http);
    assert!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == "StoreGap" && c.status == "True"),
        "{status:?}"
    );
    let moved_id = fleet.id(&moved);
    for s in shards {
        let (headers, revs) = http
            .ok(
                &format!("{}/api/v1/apps/{moved_id}/revisions", s.url),
                false,
            )
            .await;
        assert_eq!(
            headers[reckon::api::fanout::SHARD_HEADER].to_str().unwrap(),
            "1"
        );
        assert_eq!(
            revs["revisions"][0]["sha"].as_str(),
            Some(sha2.as_str()),
            "{revs}"
        );
        let (_, page) = http
            .ok(
                &format!("{}/api/v1/events?app={moved_id}&limit=1000", s.url),
                false,
            )
            .await;
        let from: BTreeSet<u64> = keys(&page, None).iter().map(|(sh, _)| *sh).collect();
        assert_eq!(
            from,
            BTreeSet::from([0, 1]),
            "{moved}'s history is on both shards"
        );
    }
}

/// A stopped shard: 502 naming it, or a partial answer that says it is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_shard_is_named_or_reported_missing() {
    let fleet = &mut Fleet::ready().await;
    let window = &Window::take(fleet).await;
    let (shards, http) = (&mut fleet.shards, &fleet.http);
    let (until_t, want) = (window.until_t.clone(), window.want.clone());
    let stopped_url = shards[1].url.clone();
    shards[1].stop();
    let (status, _, body) = http
        .get(&format!("{}/api/v1/events?limit=10", shards[0].url), false)
        .await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("shard 1 ({stopped_url})")),
        "{message}"
    );
    let (status, _, body) = http
        .get(&format!("{}/api/v1/apps", shards[0].url), false)
        .await;
    assert_eq!(status, 502, "{body}");
    let (_, page) = http
        .ok(
            &format!(
                "{}/api/v1/events?limit=1000&until={}&partial=true",
                shards[0].url,
                enc(&until_t)
            ),
            false,
        )
        .await;
    assert_eq!(page["missing"][0]["shard"], 1, "{page}");
    let only0: Vec<(u64, u64)> = want.iter().copied().filter(|(s, _)| *s == 0).collect();
    assert_eq!(keys(&page, None), only0);
    shards[0].stop();
}

/// The stores: each App's events in its owner's store only; the orphan in none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_is_in_its_owners_store_only() {
    let fleet = &mut Fleet::ready().await;
    let (moved, sha2) = fleet.move_app().await;
    fleet.moved_app_applied(&moved, &sha2).await;
    // The moved App's history is on both stores (checked below), not on one owner's.
    fleet.owner_of.remove(&moved);
    // The stores are read once no shard holds them.
    fleet.shards[1].stop();
    fleet.shards[0].stop();
    let shards = &fleet.shards;
    let (owner_of, orphan, moved) = (
        fleet.owner_of.clone(),
        fleet.orphan.clone(),
        moved.to_string(),
    );
    let stored: Vec<BTreeSet<String>> = shards
        .iter()
        .map(|s| {
            s.events()
                .iter()
                .filter_map(|e| e.body.app.clone())
                .collect()
        })
        .collect();
    for (app, owner) in &owner_of {
        let app = &fleet.id(app);
        assert!(
            stored[*owner as usize].contains(app),
            "{app} in shard {owner}"
        );
        assert!(
            !stored[1 - *owner as usize].contains(app),
            "{app} not in the other"
        );
    }
    assert!(stored.iter().all(|s| !s.contains(&fleet.id(&orphan))));
    assert!(
        stored.iter().all(|s| s.contains(&fleet.id(&moved))),
        "{moved} moved: history on both"
    );
    for s in shards {
        let gaps = s
            .events()
            .iter()
            .filter(|e| matches!(e.body.event, reckon::event::Event::StoreGap(_)))
            .count();
        assert_eq!(gaps, 0, "no StoreGap in {}", s.dir.display());
    }
}

/// Issue 18, item 8: shards that serve HTTPS (`--tls-cert`) and name https:// peers trusted with
/// `--peer-ca-file` answer for the fleet over TLS, bearer tokens included; the listener speaks
/// nothing but TLS, and no shard warns of tokens sent in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_serving_https_answer_for_the_fleet_over_tls() {
    let client = support::client().await;
    install_app_crd(&client).await;
    let ns = TestNamespace::create(&client, "shard-tls").await;
    let fixture = Fixture::new().unwrap();
    let names = ["tls0", "tls1"];
    let mut commit = fixture.commit("One directory per App");
    for name in names {
        commit = commit.write(&format!("{name}/cm.yaml"), config_map(name));
    }
    commit.create().unwrap();
    fixture.push().unwrap();

    let ca = TestCa::generate().unwrap();
    let root = tempfile::tempdir().unwrap();
    let ports = reckon_testenv::ports::free_ports(2).unwrap();
    let mut shards: Vec<Shard> = (0..2)
        .map(|i| Shard::start_with(i, &ports, &ns.name, root.path(), Some(&ca)))
        .collect();
    // Each App pinned to its shard by label.
    let apps: Api<App> = Api::namespaced(client.clone(), &ns.name);
    for (i, name) in names.iter().enumerate() {
        let label = i.to_string();
        let object = app_object(name, &fixture.file_url(), Some(&label));
        apps.create(&PostParams::default(), &object).await.unwrap();
    }
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns.name);
    for name in names {
        until(
            &format!("{name} applied"),
            Duration::from_secs(90),
            || async { cms.get_opt(&format!("cm-{name}")).await.unwrap() },
        )
        .await;
    }

    let pem = std::fs::read(ca.bundle_path()).unwrap();
    let http = Http {
        client: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap(),
    };
    let id = |name: &str| reckon::model::identity::of_object(&ns.name, name);
    let want: BTreeMap<String, u64> = [(id("tls0"), 0), (id("tls1"), 1)].into();
    for s in &shards {
        assert!(s.url.starts_with("https://"), "{}", s.url);
        // The App list merges both shards: the other one answered the fan-out over TLS.
        let (_, list) = http.ok(&format!("{}/api/v1/apps", s.url), false).await;
        let got = owners(&list);
        assert_eq!(got, want, "apps from {}", s.url);
        // Plain HTTP on the same port gets no answer.
        let plain = s.url.replacen("https://", "http://", 1);
        let refused = reqwest::Client::new()
            .get(format!("{plain}/api/v1/apps"))
            .bearer_auth(READER)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(
            refused.as_ref().is_err() || !refused.as_ref().unwrap().status().is_success(),
            "plain HTTP answered: {refused:?}"
        );
    }
    for s in &mut shards {
        s.stop();
        let log = s.log();
        assert!(!log.contains("over plain HTTP"), "{log}");
    }
}

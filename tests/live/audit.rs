//! Drift attribution through the Kubernetes audit log, against a real control plane of its own
//! (kube-apiserver v1.20 started with `deploy/audit/policy.yaml` and a webhook kubeconfig made
//! from `deploy/audit/webhook-kubeconfig.yaml`, pointing at the agent's receiver): two token
//! users make different manual changes — alice scales a Deployment (`deployments/scale`), bob
//! patches a ConfigMap, alice deletes it, bob creates a ConfigMap by hand — and each change is
//! recorded with the right person; a request without the webhook's credentials is refused.
//!
//! These tests cannot use the run's shared control plane (`RECKON_TEST_KUBECONFIG`): the audit
//! webhook is an API server flag, so the attribution test starts one with the flags
//! (`support::audited`): the changes by hand and everything found attributed after them are one
//! test (each step reads what the changes produced). The receiver's credentials are a test of
//! their own, asked of the receiver directly, on the shared control plane.

use crate::support;
use support::audited::{Audited, Receiving, Running, kubectl, post_status, skipped, token};
use support::eventually;

use reckon::event::{DriftAttributed, Event};
use reckon::store::{EventStore, OpenOptions, SledStore};
use reckon_testenv::control_plane::ControlPlane;
use std::time::{Duration, Instant};

/// The changes by hand, then what each of the later steps finds attributed: one test, since
/// every step reads what the changes produced, and another would start a control plane of its
/// own and make them again (audit tests run alone: `.config/nextest.toml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_manual_change_is_attributed_to_the_person_who_made_it() {
    if skipped() {
        return;
    }
    let audited = Audited::start().await;
    alice_and_bob_change_things_by_hand(&audited).await;
    every_change_is_attributed_while_the_agent_runs(&audited).await;
    let (events, cp) = the_agent_stops_and_blame_and_history_name_the_people(audited).await;
    each_drift_and_the_configmap_made_by_hand_is_attributed_once(&events);
    drop(cp);
}

/// Only the webhook's credentials get in: not another token (alice's), not an anonymous sender.
/// The receiver is asked directly, so its agent runs on the run's shared control plane: the
/// webhook, which needs a control plane of its own, is not what this checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_webhooks_credentials_get_in() {
    let Receiving { receiver: a, .. } = &Receiving::start().await;
    let alice = token();
    let (url, webhook_token) = (a.url.clone(), a.webhook_token.clone());
    let ca = &a.ca;
    assert_eq!(post_status(&url, &ca.bundle_path(), None), "401");
    assert_eq!(post_status(&url, &ca.bundle_path(), Some(&alice)), "401");
    assert_eq!(
        post_status(&url, &ca.bundle_path(), Some(&webhook_token)),
        "200"
    );
}

/// alice scales the Deployment, bob patches the ConfigMap, alice deletes it, mallory patches it
/// naming reckon's field manager to pass for reckon (each put back), bob creates a ConfigMap by
/// hand.
async fn alice_and_bob_change_things_by_hand(a: &Audited) {
    let (alice_kc, bob_kc, ns) = (a.alice_kc.clone(), a.bob_kc.clone(), a.ns.clone());
    let (deployments, cms) = (&a.running.deployments, &a.running.cms);
    kubectl(&alice_kc, &ns, &["scale", "deployment/web", "--replicas=3"]);
    eventually("replicas put back", Duration::from_secs(20), || async {
        deployments.get("web").await.unwrap().data["spec"]["replicas"] == 0
    })
    .await;
    kubectl(
        &bob_kc,
        &ns,
        &[
            "patch",
            "configmap/settings",
            "-p",
            r#"{"data":{"color":"green"}}"#,
        ],
    );
    eventually("the color put back", Duration::from_secs(20), || async {
        cms.get("settings").await.unwrap().data["data"]["color"] == "blue"
    })
    .await;
    kubectl(&alice_kc, &ns, &["delete", "configmap/settings"]);
    eventually(
        "the ConfigMap re-created",
        Duration::from_secs(20),
        || async {
            cms.get_opt("settings")
                .await
                .unwrap()
                .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
        },
    )
    .await;
    // The field manager is a query parameter anyone may set; before the attributor checked who
    // sent reckon's field manager, this write was taken for reckon's own and never attributed.
    kubectl(
        &a.mallory_kc,
        &ns,
        &[
            "patch",
            "configmap/settings",
            "--field-manager=reckon",
            "-p",
            r#"{"data":{"color":"red"}}"#,
        ],
    );
    eventually(
        "the color put back after mallory",
        Duration::from_secs(20),
        || async { cms.get("settings").await.unwrap().data["data"]["color"] == "blue" },
    )
    .await;
    kubectl(
        &bob_kc,
        &ns,
        &["create", "configmap", "by-hand", "--from-literal=a=b"],
    );
}

/// Every attribution is recorded once its writes arrived (1 s batches) or its wait is over;
/// under load that takes longer, so wait for what the assertions below expect to be there.
async fn every_change_is_attributed_while_the_agent_runs(a: &Audited) {
    let (ns, api_port, read_token) = (
        a.ns.clone(),
        a.running.api_port,
        a.running.read_token.clone(),
    );
    let http = reqwest::Client::new();
    let attributed = |user: &'static str| {
        let (http, token) = (http.clone(), read_token.clone());
        async move {
            let url = format!("http://127.0.0.1:{api_port}/api/v1/events?user={user}&limit=100");
            let Ok(resp) = http.get(url).bearer_auth(token).send().await else {
                return std::collections::BTreeSet::new();
            };
            let body = resp.bytes().await.unwrap_or_default();
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            page["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["object"].as_str().map(str::to_string))
                .collect::<std::collections::BTreeSet<String>>()
        }
    };
    let expected: [(&str, &[&str]); 3] = [
        (
            "alice",
            &["ConfigMap/{ns}/settings", "Deployment.apps/{ns}/web"],
        ),
        (
            "bob",
            &["ConfigMap/{ns}/by-hand", "ConfigMap/{ns}/settings"],
        ),
        ("mallory", &["ConfigMap/{ns}/settings"]),
    ];
    for (user, objects) in expected {
        let want: std::collections::BTreeSet<String> =
            objects.iter().map(|o| o.replace("{ns}", &ns)).collect();
        let start = Instant::now();
        loop {
            let got = attributed(user).await;
            if got == want {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{user}'s changes attributed: {got:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The agent stops cleanly; the questions users ask: blame names the person beside the field
/// manager, and history --user lists what the audit log attributes to them. Returns the log and
/// the control plane (stopped last).
async fn the_agent_stops_and_blame_and_history_name_the_people(
    a: Audited,
) -> (Vec<reckon::event::Envelope>, ControlPlane) {
    let Audited {
        running: Running { stop_tx, task, .. },
        ns,
        dir,
        cp,
        ..
    } = a;
    let d = dir.path();
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the agent stops")
        .unwrap()
        .expect("the agent exits cleanly");
    let store = SledStore::open(d.join("store"), OpenOptions::default()).unwrap();
    let events: Vec<_> = store.reader().iter_from(1).map(|e| e.unwrap()).collect();
    // The questions users ask: blame names the person beside the field manager, and history
    // --user lists what the audit log attributes to them.
    let projections = store.projections().clone();
    let spec: reckon::query::ObjectSpec = format!("Deployment.apps/{ns}/web").parse().unwrap();
    let blame = reckon::query::blame(&store, &projections, &spec, Some("web"), None).unwrap();
    let replicas = blame
        .fields
        .iter()
        .find(|f| f.path == "/spec/replicas")
        .expect("replicas blamed");
    let people: Vec<Vec<String>> = replicas
        .drifts
        .iter()
        .map(|d| {
            d.changed_by
                .as_ref()
                .expect("attributed")
                .iter()
                .map(|w| w.username.clone())
                .collect()
        })
        .collect();
    assert_eq!(people, vec![vec!["alice".to_string()]]);
    let by_user = |user: &str| -> Vec<String> {
        let filter = reckon::query::HistoryFilter {
            user: Some(user.into()),
            ..Default::default()
        };
        reckon::query::history(&store, &projections, &filter)
            .unwrap()
            .events
            .iter()
            .map(|e| e.object.clone().unwrap_or_default())
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    };
    assert_eq!(
        by_user("alice"),
        vec![
            format!("ConfigMap/{ns}/settings"),
            format!("Deployment.apps/{ns}/web")
        ],
        "the delete and the scale, sorted (the log records them in the order their \
         audit batches and drifts met, not always the order of the changes)"
    );
    assert_eq!(
        by_user("bob"),
        vec![
            format!("ConfigMap/{ns}/by-hand"),
            format!("ConfigMap/{ns}/settings")
        ]
    );
    assert_eq!(by_user("mallory"), vec![format!("ConfigMap/{ns}/settings")]);
    assert!(by_user("carol").is_empty());
    store.close().unwrap();
    (events, cp)
}

/// The scale, the patch and the delete: each drift attributed to the user, verb and fields of
/// the write that made it, exactly once; the ConfigMap made by hand attributed to bob.
fn each_drift_and_the_configmap_made_by_hand_is_attributed_once(
    events: &[reckon::event::Envelope],
) {
    let drifts: Vec<(u64, &reckon::event::DriftDetected)> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftDetected(d) => Some((e.body.seq, d)),
            _ => None,
        })
        .collect();
    let attributions: Vec<&DriftAttributed> = events
        .iter()
        .filter_map(|e| match &e.body.event {
            Event::DriftAttributed(a) => Some(a),
            _ => None,
        })
        .collect();
    let for_drift = |pred: &dyn Fn(&reckon::event::DriftDetected) -> bool| -> &DriftAttributed {
        let (seq, _) = drifts
            .iter()
            .find(|(_, d)| pred(d))
            .unwrap_or_else(|| panic!("drift not recorded; drifts: {drifts:#?}"));
        attributions
            .iter()
            .find(|a| a.drift_seq == Some(*seq))
            .unwrap_or_else(|| panic!("drift {seq} not attributed: {attributions:#?}"))
    };
    let users = |a: &DriftAttributed| -> Vec<(String, String, Option<String>)> {
        a.writers
            .iter()
            .map(|w| (w.username.clone(), w.verb.clone(), w.subresource.clone()))
            .collect()
    };

    let scaled = for_drift(&|d| {
        d.object.kind == "Deployment" && d.diffs.iter().any(|f| f.path == "/spec/replicas")
    });
    assert_eq!(
        users(scaled),
        vec![("alice".into(), "patch".into(), Some("scale".into()))],
        "{scaled:#?}"
    );
    let w = &scaled.writers[0];
    assert_eq!(w.fields, vec!["/spec/replicas"]);
    assert_eq!(w.evidence, "request-body");
    assert!(
        w.groups.contains(&"system:authenticated".to_string()),
        "{w:?}"
    );
    assert!(
        w.user_agent
            .as_deref()
            .is_some_and(|ua| ua.starts_with("kubectl")),
        "{w:?}"
    );
    assert_eq!(w.source_ips, vec!["127.0.0.1"]);
    assert!(!w.audit_id.is_empty());
    assert!(scaled.unexplained.is_empty());

    let color = |value: &'static str| {
        move |d: &reckon::event::DriftDetected| {
            d.object.kind == "ConfigMap"
                && d.diffs
                    .iter()
                    .any(|f| f.path == "/data/color" && f.actual.as_deref() == Some(value))
        }
    };
    let spoofed = for_drift(&color("\"red\""));
    assert_eq!(
        users(spoofed),
        vec![("mallory".into(), "patch".into(), None)],
        "a write naming reckon's field manager by someone else is theirs: {spoofed:#?}"
    );
    let patched = for_drift(&color("\"green\""));
    assert_eq!(
        users(patched),
        vec![("bob".into(), "patch".into(), None)],
        "{patched:#?}"
    );
    assert_eq!(patched.writers[0].fields, vec!["/data/color"]);

    let deleted =
        for_drift(&|d| d.object.kind == "ConfigMap" && d.diffs.iter().any(|f| f.path.is_empty()));
    assert_eq!(
        users(deleted),
        vec![("alice".into(), "delete".into(), None)],
        "{deleted:#?}"
    );

    // Objects created outside Git in the managed namespace. The test control plane's controller
    // manager runs with the admin token (a real one is `system:kube-controller-manager`, which
    // the policy does not send), so its `kube-root-ca.crt` ConfigMap arrives as admin's.
    let created: Vec<_> = attributions
        .iter()
        .filter(|a| a.drift_seq.is_none())
        .filter(|a| a.writers.iter().all(|w| w.username != "admin"))
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(
        (
            created[0].object.kind.as_str(),
            created[0].object.name.as_str()
        ),
        ("ConfigMap", "by-hand")
    );
    assert_eq!(
        users(created[0]),
        vec![("bob".into(), "create".into(), None)]
    );
    // What it took (printed for docs/audit.md; run with --no-capture): from each drift to its
    // attribution, and how many writes the shipped policy sent for this whole test.
    for e in events {
        if let Event::DriftAttributed(a) = &e.body.event
            && let Some(seq) = a.drift_seq
        {
            let detected = events.iter().find(|d| d.body.seq == seq).unwrap();
            eprintln!(
                "measure: drift {seq} attributed after {} ms",
                (e.body.time - detected.body.time).num_milliseconds()
            );
        }
    }
    eprintln!(
        "measure: audit writes received {}, dropped {}, requests rejected {}",
        reckon::metrics::METRICS.audit_received.get(),
        reckon::metrics::METRICS.audit_dropped.get(),
        reckon::metrics::METRICS.audit_rejected.get()
    );
    // Every drift got exactly one attribution record.
    for (seq, d) in &drifts {
        let n = attributions
            .iter()
            .filter(|a| a.drift_seq == Some(*seq))
            .count();
        assert_eq!(n, 1, "drift {seq} {:?}", d.object);
    }
}

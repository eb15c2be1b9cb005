//! The webhook receiver over real HTTP on loopback (GitHub, GitLab, generic HMAC; wrong or missing
//! signatures get 401 and trigger nothing), and the poller: timed fetches with jitter and immediate
//! fetches on a webhook, end to end against a real repository.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use reckon::source::poll::{self, PollResult, PollSchedule, Trigger};
use reckon::source::webhook::{self, WebhookConfig, WebhookTrigger};
use reckon::source::{GitSource, RefSelector, SourceSpec};
use reckon_testenv::git::Fixture;
use tokio::sync::mpsc;

const GITHUB_SECRET: &str = "gh-s3cret";
const GITLAB_TOKEN: &str = "gl-t0ken";
const GENERIC_SECRET: &str = "generic-s3cret";

/// The router on a real loopback socket; the server task ends with the test's runtime.
async fn serve(sources: Vec<(String, String)>) -> Result<(String, mpsc::Receiver<WebhookTrigger>)> {
    let (tx, rx) = mpsc::channel(16);
    let config = WebhookConfig {
        github_secret: Some(GITHUB_SECRET.into()),
        gitlab_token: Some(GITLAB_TOKEN.into()),
        generic_secret: Some(GENERIC_SECRET.into()),
        sources: std::sync::Arc::new(std::sync::RwLock::new(sources)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            webhook::router(config, tx, webhook::DEFAULT_BODY_LIMITS),
        )
        .await;
    });
    Ok((base, rx))
}

/// The default branch of `url`, whole repository, no credentials or signature checks.
fn default_branch_source(url: impl Into<String>, cache: &std::path::Path) -> GitSource {
    GitSource::new(
        SourceSpec {
            id: "app".into(),
            url: url.into(),
            reference: RefSelector::DefaultBranch,
            path: String::new(),
            access: Default::default(),
            signatures: Default::default(),
        },
        cache,
    )
}

fn github_push(url: &str) -> Vec<u8> {
    serde_json::json!({
        "ref": "refs/heads/main",
        "repository": { "clone_url": url, "ssh_url": "git@example.invalid:none/none.git" }
    })
    .to_string()
    .into_bytes()
}

async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Result<(u16, String)> {
    let client = reqwest::Client::new();
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn nothing_queued(rx: &mut mpsc::Receiver<WebhookTrigger>) {
    assert!(
        rx.try_recv().is_err(),
        "a refused request must trigger nothing"
    );
}

#[tokio::test]
async fn github_push_triggers_matching_sources_and_bad_signatures_get_401() -> Result<()> {
    let sources = vec![
        (
            "web".to_string(),
            "https://git.example.com/org/web.git".to_string(),
        ),
        (
            "web-ssh".to_string(),
            "git@git.example.com:org/web".to_string(),
        ),
        (
            "other".to_string(),
            "https://git.example.com/org/other.git".to_string(),
        ),
    ];
    let (base, mut rx) = serve(sources).await?;
    let hook = format!("{base}/hooks/github");
    let body = github_push("https://git.example.com/org/web.git");
    let event = ("x-github-event", "push".to_string());

    let (status, text) = post(
        &hook,
        &[
            event.clone(),
            ("x-hub-signature-256", webhook::sign(GITHUB_SECRET, &body)),
        ],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 202, "{text}");
    let mut got = vec![
        rx.recv().await.unwrap().source,
        rx.recv().await.unwrap().source,
    ];
    got.sort();
    assert_eq!(got, vec!["web", "web-ssh"]);
    nothing_queued(&mut rx);
    assert!(text.contains("web-ssh"), "{text}");

    let (status, _) = post(
        &hook,
        &[
            event.clone(),
            ("x-hub-signature-256", webhook::sign("wrong", &body)),
        ],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, _) = post(&hook, std::slice::from_ref(&event), body.clone()).await?;
    assert_eq!(status, 401);
    // A valid signature over a different body does not count either.
    let (status, _) = post(
        &hook,
        &[
            event.clone(),
            ("x-hub-signature-256", webhook::sign(GITHUB_SECRET, b"{}")),
        ],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 401);
    nothing_queued(&mut rx);

    // ping is acknowledged without fetching.
    let ping = b"{\"zen\":\"hi\"}".to_vec();
    let (status, _) = post(
        &hook,
        &[
            ("x-github-event", "ping".into()),
            ("x-hub-signature-256", webhook::sign(GITHUB_SECRET, &ping)),
        ],
        ping,
    )
    .await?;
    assert_eq!(status, 202);
    nothing_queued(&mut rx);
    Ok(())
}

#[tokio::test]
async fn gitlab_token_and_generic_hmac() -> Result<()> {
    let sources = vec![(
        "web".to_string(),
        "https://gitlab.example.com/group/web.git".to_string(),
    )];
    let (base, mut rx) = serve(sources).await?;
    let body = serde_json::json!({
        "object_kind": "push",
        "project": { "git_http_url": "https://gitlab.example.com/group/web.git" }
    })
    .to_string()
    .into_bytes();
    let gitlab = format!("{base}/hooks/gitlab");
    let event = ("x-gitlab-event", "Push Hook".to_string());
    let (status, _) = post(
        &gitlab,
        &[event.clone(), ("x-gitlab-token", GITLAB_TOKEN.into())],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 202);
    let t = rx.recv().await.unwrap();
    assert_eq!(
        t,
        WebhookTrigger {
            source: "web".into(),
            trigger: Trigger::Webhook {
                provider: "gitlab".into()
            }
        }
    );
    let (status, _) = post(
        &gitlab,
        &[event.clone(), ("x-gitlab-token", "nope".into())],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, _) = post(&gitlab, std::slice::from_ref(&event), body).await?;
    assert_eq!(status, 401);
    nothing_queued(&mut rx);

    let generic = format!("{base}/hooks/generic/web");
    let body = b"anything".to_vec();
    let (status, _) = post(
        &generic,
        &[("x-signature-256", webhook::sign(GENERIC_SECRET, &body))],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 202);
    assert_eq!(rx.recv().await.unwrap().source, "web");
    let (status, _) = post(
        &generic,
        &[("x-signature-256", webhook::sign("bad", &body))],
        body.clone(),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, _) = post(&generic, &[], body.clone()).await?;
    assert_eq!(status, 401);
    let unknown = format!("{base}/hooks/generic/nosuch");
    let (status, _) = post(
        &unknown,
        &[("x-signature-256", webhook::sign(GENERIC_SECRET, &body))],
        body,
    )
    .await?;
    assert_eq!(status, 404);
    nothing_queued(&mut rx);
    Ok(())
}

async fn next(results: &mut mpsc::Receiver<PollResult>) -> PollResult {
    tokio::time::timeout(Duration::from_secs(20), results.recv())
        .await
        .expect("a poll result within 20 s")
        .expect("poller alive")
}

#[tokio::test]
async fn poller_fetches_on_its_interval_with_jitter() -> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    f.commit("one").write("a", "1").create()?;
    f.push()?;
    let cache = tempfile::tempdir()?;
    let source = default_branch_source(f.file_url(), cache.path());
    let (_trigger_tx, trigger_rx) = mpsc::channel(4);
    let (result_tx, mut results) = mpsc::channel(4);
    let schedule = PollSchedule {
        interval: Duration::from_millis(200),
        jitter: 0.5,
    };
    let task = tokio::spawn(poll::run(source, schedule, None, trigger_rx, result_tx));

    let first = next(&mut results).await;
    assert_eq!(first.trigger, Trigger::Timer);
    assert_eq!(first.result.unwrap().head, f.served_rev("main")?);
    let new = f.commit("two").write("a", "2").create()?;
    f.push()?;
    loop {
        let r = next(&mut results).await;
        assert_eq!(r.trigger, Trigger::Timer);
        let o = r.result?;
        if o.head == new {
            assert_eq!(o.new_commits.len(), 1, "the new commit, observed once");
            assert_eq!(o.new_commits[0].sha, new);
            break;
        }
        assert!(o.new_commits.is_empty());
    }
    drop(results);
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    Ok(())
}

#[tokio::test]
async fn a_signed_github_push_makes_the_poller_fetch_at_once() -> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    f.commit("one").write("a", "1").create()?;
    f.push()?;
    let cache = tempfile::tempdir()?;
    let url = f.file_url();
    let source = default_branch_source(url.clone(), cache.path());
    let (trigger_tx, trigger_rx) = mpsc::channel(4);
    let (result_tx, mut results) = mpsc::channel(4);
    // An hour: only a trigger can cause the second fetch within the test.
    let schedule = PollSchedule {
        interval: Duration::from_secs(3600),
        jitter: 0.1,
    };
    tokio::spawn(poll::run(source, schedule, None, trigger_rx, result_tx));
    let (base, webhook_rx) = serve(vec![("app".into(), url.clone())]).await?;
    tokio::spawn(poll::dispatch(
        webhook_rx,
        HashMap::from([("app".to_string(), trigger_tx)]),
    ));

    assert_eq!(next(&mut results).await.trigger, Trigger::Timer);
    let new = f.commit("two").write("a", "2").create()?;
    f.push()?;
    let body = github_push(&url);
    let (status, _) = post(
        &format!("{base}/hooks/github"),
        &[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", webhook::sign(GITHUB_SECRET, &body)),
        ],
        body,
    )
    .await?;
    assert_eq!(status, 202);
    let r = next(&mut results).await;
    assert_eq!(
        r.trigger,
        Trigger::Webhook {
            provider: "github".into()
        }
    );
    let o = r.result?;
    assert_eq!(o.head, new);
    assert_eq!(o.new_commits.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_failed_poll_keeps_the_last_good_head_and_the_next_success_reports_everything_since()
-> Result<()> {
    reckon::tls::install_crypto_provider();
    let f = Fixture::new()?;
    let one = f.commit("one").write("a", "1").create()?;
    f.push()?;
    let cache = tempfile::tempdir()?;
    let source = default_branch_source(f.file_url(), cache.path());
    let (trigger_tx, trigger_rx) = mpsc::channel(4);
    let (result_tx, mut results) = mpsc::channel(4);
    let schedule = PollSchedule {
        interval: Duration::from_secs(3600),
        jitter: 0.0,
    };
    tokio::spawn(poll::run(source, schedule, None, trigger_rx, result_tx));
    assert_eq!(next(&mut results).await.result?.head, one);

    // The remote disappears: the poll fails with a reason.
    let served = f.served_path();
    let hidden = f.root().join("hidden.git");
    std::fs::rename(&served, &hidden)?;
    trigger_tx.send(Trigger::Manual).await?;
    let failed = next(&mut results).await;
    let err = failed.result.expect_err("the remote is gone");
    assert_eq!(err.reason(), "Unreachable", "{err}");

    // It comes back with two new commits: both are reported, counted from the last good head.
    std::fs::rename(&hidden, &served)?;
    let two = f.commit("two").write("a", "2").create()?;
    let three = f.commit("three").write("a", "3").create()?;
    f.push()?;
    trigger_tx.send(Trigger::Manual).await?;
    let ok = next(&mut results).await.result?;
    assert_eq!(ok.previous_head.as_deref(), Some(one.as_str()));
    let shas: Vec<&str> = ok.new_commits.iter().map(|c| c.sha.as_str()).collect();
    assert_eq!(shas, vec![two.as_str(), three.as_str()]);
    Ok(())
}

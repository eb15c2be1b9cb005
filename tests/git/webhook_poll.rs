//! The webhook receiver over real HTTP on loopback (GitHub, GitLab, generic HMAC; wrong or missing
//! signatures get 401 and trigger nothing). When an App fetches (its poll timer with jitter, a
//! webhook's wake-up) is the agent's schedule, unit-tested in `agent::schedule` and end to end in
//! the agent's live tests.

use anyhow::Result;
use reckon::source::webhook::{self, Trigger, WebhookConfig, WebhookTrigger};
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
    let signed = |secret: &str, source: &str, at: u64| {
        let (timestamp, signature) = webhook::sign_generic(secret, at, source, &body);
        vec![
            (webhook::GENERIC_TIMESTAMP_HEADER, timestamp),
            ("x-signature-256", signature),
        ]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let delivery = signed(GENERIC_SECRET, "web", now);
    let (status, _) = post(&generic, &delivery, body.clone()).await?;
    assert_eq!(status, 202);
    assert_eq!(rx.recv().await.unwrap().source, "web");
    // The same delivery again is accepted once only; one signed for another source, or stamped
    // outside the window, or with the wrong secret, or unsigned, not at all.
    let (status, _) = post(&generic, &delivery, body.clone()).await?;
    assert_eq!(status, 409);
    for headers in [
        signed(GENERIC_SECRET, "nosuch", now),
        signed(GENERIC_SECRET, "web", now - 600),
        signed("bad", "web", now),
        Vec::new(),
    ] {
        let (status, _) = post(&generic, &headers, body.clone()).await?;
        assert_eq!(status, 401, "{headers:?}");
    }
    let unknown = format!("{base}/hooks/generic/nosuch");
    let (status, _) = post(&unknown, &signed(GENERIC_SECRET, "nosuch", now), body).await?;
    assert_eq!(status, 404);
    nothing_queued(&mut rx);
    Ok(())
}

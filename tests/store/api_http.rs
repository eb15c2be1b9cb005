//! The HTTP API served over real HTTP on a real store (written through the store's writer, with
//! the realistic sample stream): the OpenAPI document lists exactly the routes the router is
//! built from, tokens give 401/403/200 as documented, events pages walk the whole log by cursor
//! and match the store's own queries, responses fit the documented schemas, and `/metrics`
//! counts what the writer appended. The agent with real syncs is tests/process/api.rs.

use crate::support;

use reckon::api::auth::{Role, Tokens};
use reckon::api::client::Client;
use reckon::api::{Access, ApiState, routes};
use reckon::event::samples;
use reckon::query::{AppStatus, HistoryPage as EventsPage};
use reckon::store::{EventRead, OpenOptions, Query, Selector, SledStore};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::openapi::Spec;

const READ: &str = "read-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const APPS: u64 = 3;
const OBJECTS: u64 = 5;
const EVENTS: u64 = 2_000;

#[test]
fn openapi_paths_are_exactly_the_routes() {
    let spec = Spec::load();
    let documented = spec.operations();
    let served: BTreeSet<(String, String)> = routes()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    // Every operation behind a token documents 401, every POST under /api/v1 403: the auth
    // contract is in the doc. The open ones (the document itself) say so with `security: []`.
    let open: BTreeSet<String> = routes()
        .into_iter()
        .filter(|r| r.access == Access::Open)
        .map(|r| r.path.to_string())
        .collect();
    for (method, path) in &documented {
        let op = &spec.0["paths"][path][method.to_lowercase()];
        if open.contains(path) {
            assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
        } else {
            // 500 when the store cannot be read, 503 from a standby replica: any of them.
            for status in ["401", "500", "503"] {
                assert!(
                    !op["responses"][status].is_null(),
                    "{method} {path} documents {status}"
                );
            }
        }
        if method == "POST" && path.starts_with("/api/v1") {
            assert!(
                !op["responses"]["403"].is_null(),
                "{method} {path} documents 403"
            );
        }
    }
}

struct Server {
    base: String,
    handle: reckon::store::writer::StoreHandle,
    projections: reckon::store::Projections,
    store: reckon::store::StoreReader,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

/// A store with the sample stream, served by the API router on a loopback port.
fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = SledStore::open(&path, OpenOptions::create()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut tokens = Tokens::default();
    tokens.add(READ, None, Role::Read);
    tokens.add(ADMIN, Some("ops"), Role::Admin);
    // Blobs first (no event names a missing blob); events go through the writer task so the
    // metrics hook sees them as the agent's would.
    for i in 0..EVENTS {
        if let Some(b) = samples::stream_blob(i, APPS, OBJECTS) {
            reckon::store::EventStore::put_blob(&mut store, &b).unwrap();
        }
    }
    let reader = store.reader();
    let (base, projections, handle) = rt.block_on(async {
        let (handle, _task) = reckon::store::writer::spawn(store);
        let drafts: Vec<_> = (0..EVENTS)
            .map(|i| samples::stream(i, APPS, OBJECTS))
            .collect();
        for chunk in drafts.chunks(500) {
            handle.append(chunk.to_vec()).await.unwrap();
        }
        let projections = handle.projections().await.unwrap();
        let kept = handle.clone();
        let state = ApiState::new(
            handle,
            Arc::new(tokens),
            vec!["app-0".into(), "app-1".into(), "app-2".into()],
            None,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, reckon::api::router(state))
                .await
                .unwrap()
        });
        (format!("http://{addr}"), projections, kept)
    });
    Server {
        base,
        handle,
        projections,
        store: reader,
        _dir: dir,
        rt,
    }
}

fn raw(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let http = reqwest::blocking::Client::new();
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if url.contains("/rollback") || url.contains("/resume") {
        req = req
            .header("content-type", "application/json")
            .body(r#"{"steps":1}"#);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn tokens_give_401_403_and_200_as_documented() {
    let s = server();
    let spec = Spec::load();
    let error = spec.response_schema("GET", "/api/v1/events", 401).clone();
    let events = format!("{}/api/v1/events", s.base);
    for token in [None, Some("not-a-token-at-all-xx"), Some("")] {
        let (status, headers, body) = raw(reqwest::Method::GET, &events, token);
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{headers:?}"
        );
        spec.validate(&error, &body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _, body) = raw(reqwest::Method::GET, &events, Some(READ));
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = raw(reqwest::Method::GET, &events, Some(ADMIN));
    assert_eq!(status, 200, "{body}");

    // A read-only token may not POST; the admin token passes auth (and reaches the handler,
    // which refuses an App this server does not reconcile... here app-0 is, so it resolves).
    let rollback = format!("{}/api/v1/apps/app-0/rollback", s.base);
    let (status, _, body) = raw(reqwest::Method::POST, &rollback, Some(READ));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    spec.validate(
        spec.response_schema("POST", "/api/v1/apps/{app}/rollback", 403),
        &body,
    )
    .unwrap();
    let (status, _, body) = raw(reqwest::Method::POST, &rollback, None);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = raw(reqwest::Method::POST, &rollback, Some(ADMIN));
    assert_eq!(status, 200, "{body}");
    spec.validate(
        spec.response_schema("POST", "/api/v1/apps/{app}/rollback", 200),
        &body,
    )
    .unwrap();
    // The intent names the admin token's identity as its actor.
    let page: EventsPage = Client::new(&s.base, Some(READ.into()))
        .unwrap()
        .get(
            "/api/v1/events",
            &[
                ("app", Some("app-0".into())),
                ("kind", Some("rollback".into())),
            ],
        )
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].actor.as_deref(), Some("api:ops"));
    assert_eq!(page.events[0].kind, "IntentRecorded");
    let intent = serde_json::to_value(&page.events[0].event).unwrap();
    assert_eq!(intent["IntentRecorded"]["intent"], "Rollback");

    // Unknown paths get a JSON 404 too.
    let (status, _, body) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/nope", s.base),
        None,
    );
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");

    // Health and metrics need no token.
    let (status, _, _) = raw(reqwest::Method::GET, &format!("{}/healthz", s.base), None);
    assert_eq!(status, 200);
    let (status, _, _) = raw(reqwest::Method::GET, &format!("{}/metrics", s.base), None);
    assert_eq!(status, 200);
}

#[test]
fn event_pages_walk_the_log_and_match_the_store() {
    let s = server();
    let spec = Spec::load();
    let schema = spec.response_schema("GET", "/api/v1/events", 200).clone();
    let client = Client::new(&s.base, Some(READ.into())).unwrap();

    // All of app-1's events, 97 at a time, newest first, equal the store's own index query.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let body: Value = client
            .get(
                "/api/v1/events",
                &[
                    ("app", Some("app-1".into())),
                    ("limit", Some("97".into())),
                    ("cursor", cursor.map(|c: u64| c.to_string())),
                ],
            )
            .unwrap();
        spec.validate(&schema, &body).unwrap();
        let page: EventsPage = serde_json::from_value(body).unwrap();
        assert!(page.events.len() <= 97);
        seen.extend(page.events.iter().map(|e| e.seq));
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let direct = s
        .store
        .query(&Query::new(Selector::App("app-1".into())).limit(100_000))
        .unwrap();
    let expected: Vec<u64> = direct.events.iter().map(|e| e.body.seq).collect();
    assert_eq!(seen.len(), (0..EVENTS).filter(|i| i % APPS == 1).count());
    assert_eq!(seen, expected);

    // Combined filters: app-2's drifts on one object, each checked field by field.
    let page: EventsPage = client
        .get(
            "/api/v1/events",
            &[
                ("app", Some("app-2".into())),
                ("kind", Some("drift".into())),
                ("object", Some("Deployment.apps/ns-2/svc-0".into())),
                ("limit", Some("1000".into())),
            ],
        )
        .unwrap();
    assert!(!page.events.is_empty());
    let expected = direct_filter(&s, |e| {
        e.body.app.as_deref() == Some("app-2")
            && matches!(&e.body.event, reckon::event::Event::DriftDetected(d)
                if d.object.namespace.as_deref() == Some("ns-2") && d.object.name == "svc-0")
    });
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        expected
    );
    for e in &page.events {
        assert_eq!(e.kind, "DriftDetected");
        assert_eq!(e.object.as_deref(), Some("Deployment.apps/ns-2/svc-0"));
        let v = serde_json::to_value(&e.event).unwrap();
        assert_eq!(v["DriftDetected"]["managers"][0]["manager"], "kubectl-edit");
    }

    // By author: only CommitObserved events of that author.
    let page: EventsPage = client
        .get(
            "/api/v1/events",
            &[("author", Some("DEV3@example.com".into()))],
        )
        .unwrap();
    assert!(!page.events.is_empty());
    for e in &page.events {
        let v = serde_json::to_value(&e.event).unwrap();
        assert_eq!(v["CommitObserved"]["author"]["email"], "dev3@example.com");
    }

    // Bad input names the parameter and the cause.
    let err = client
        .get::<Value>("/api/v1/events", &[("kind", Some("Nope".into()))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("kind=Nope"),
        "{err}"
    );
    let err = client
        .get::<Value>("/api/v1/events", &[("since", Some("yesterday".into()))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("since=yesterday"), "{err}");
    let err = client
        .get::<Value>("/api/v1/events", &[("limit", Some("5000".into()))])
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit=5000"), "{err}");
}

fn direct_filter(s: &Server, keep: impl Fn(&reckon::event::Envelope) -> bool) -> Vec<u64> {
    let all = s
        .store
        .query(&Query::new(Selector::All).limit(1_000_000))
        .unwrap();
    all.events
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.body.seq)
        .collect()
}

#[test]
fn apps_show_the_projection_and_metrics_count_appends() {
    let s = server();
    let spec = Spec::load();
    let client = Client::new(&s.base, Some(READ.into())).unwrap();
    let body: Value = client.get("/api/v1/apps", &[]).unwrap();
    spec.validate(spec.response_schema("GET", "/api/v1/apps", 200), &body)
        .unwrap();
    let list: Vec<AppStatus> = serde_json::from_value(body).unwrap();
    assert_eq!(
        list.iter().map(|a| a.app.as_str()).collect::<Vec<_>>(),
        ["app-0", "app-1", "app-2"]
    );
    for a in &list {
        assert!(!a.pinned);
        assert_eq!(a.objects, OBJECTS, "{a:?}");
        assert!(a.applied_revision.is_some());
    }
    let one: Value = client.get("/api/v1/apps/app-1", &[]).unwrap();
    spec.validate(spec.response_schema("GET", "/api/v1/apps/{app}", 200), &one)
        .unwrap();
    assert_eq!(one["app"], "app-1");
    let err = client.get::<Value>("/api/v1/apps/nope", &[]).unwrap_err();
    match err {
        reckon::api::client::ClientError::Status { status, code, .. } => {
            assert_eq!(status, 404);
            assert_eq!(code.as_deref(), Some("not_found"));
        }
        other => panic!("{other}"),
    }

    let text = reqwest::blocking::get(format!("{}/metrics", s.base))
        .unwrap()
        .text()
        .unwrap();
    // Counters are process-wide; this process appended at least this server's events.
    let counted = metric(
        &text,
        "reckon_events_appended_total{kind=\"CommitObserved\"}",
    );
    assert!(counted >= (EVENTS / APPS / (OBJECTS + 4)) as f64, "{text}");
    assert!(
        metric(&text, "reckon_drift_detected_total") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "reckon_store_size_bytes") > 0.0, "{text}");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

#[test]
fn read_routes_answer_what_the_queries_answer() {
    use reckon::query;
    let s = server();
    let spec = Spec::load();
    let client = Client::new(&s.base, Some(READ.into())).unwrap();
    let p = &s.projections;
    let json = |v: &dyn erased::Ser| v.json();

    // Every revision, 7 a page, following the cursor, equals the unlimited query.
    let direct = query::revisions(&s.store, p, "app-2").unwrap();
    assert!(direct.len() > 10);
    let mut walked = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page: Value = client
            .get(
                "/api/v1/apps/app-2/revisions",
                &[("limit", Some("7".into())), ("cursor", cursor.clone())],
            )
            .unwrap();
        spec.validate(
            spec.response_schema("GET", "/api/v1/apps/{app}/revisions", 200),
            &page,
        )
        .unwrap();
        let rows = page["revisions"].as_array().unwrap();
        assert!(rows.len() <= 7);
        walked.extend(rows.iter().cloned());
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(Value::Array(walked), json(&direct));

    let (old, new) = (&direct[direct.len() - 1].sha, &direct[1].sha);
    // The sample stream's blobs are not manifests: the route answers as the query does.
    let shown = client.get::<Value>(
        &format!("/api/v1/apps/app-2/revisions/{old}/manifests"),
        &[],
    );
    match (shown, query::show(&s.store, p, "app-2", old)) {
        (Ok(v), Ok(d)) => {
            spec.validate(
                spec.response_schema("GET", "/api/v1/apps/{app}/revisions/{rev}/manifests", 200),
                &v,
            )
            .unwrap();
            assert_eq!(v, json(&d));
        }
        (Err(e), Err(de)) => assert!(e.to_string().contains(&de.to_string()), "{e} / {de}"),
        (a, b) => panic!("HTTP {a:?} but direct {b:?}"),
    }

    let diff = client.get::<Value>(
        "/api/v1/apps/app-2/diff",
        &[("from", Some(old.clone())), ("to", Some(new.clone()))],
    );
    let direct_diff = query::diff_revisions(&s.store, p, "app-2", old, new);
    match (diff, direct_diff) {
        (Ok(d), Ok(dd)) => {
            spec.validate(
                spec.response_schema("GET", "/api/v1/apps/{app}/diff", 200),
                &d,
            )
            .unwrap();
            assert_eq!(d, json(&dd));
        }
        (Err(e), Err(de)) => assert!(e.to_string().contains(&de.to_string()), "{e} / {de}"),
        (a, b) => panic!("HTTP {a:?} but direct {b:?}"),
    }

    let at = chrono::Utc::now().to_rfc3339();
    let replay: Value = client
        .get(
            "/api/v1/replay",
            &[("at", Some(at.clone())), ("app", Some("app-0".into()))],
        )
        .unwrap();
    spec.validate(spec.response_schema("GET", "/api/v1/replay", 200), &replay)
        .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&at).unwrap().to_utc();
    assert_eq!(
        replay,
        json(&query::replay(&s.store, at, Some("app-0")).unwrap())
    );

    let blame = client.get::<Value>(
        "/api/v1/blame",
        &[("object", Some("Deployment/ns-1/svc-2".into()))],
    );
    let object: query::ObjectSpec = "Deployment/ns-1/svc-2".parse().unwrap();
    match (blame, query::blame(&s.store, p, &object, None, None)) {
        (Ok(b), Ok(db)) => {
            spec.validate(spec.response_schema("GET", "/api/v1/blame", 200), &b)
                .unwrap();
            assert_eq!(b, json(&db));
        }
        (Err(e), Err(de)) => assert!(e.to_string().contains(&de.to_string()), "{e} / {de}"),
        (a, b) => panic!("HTTP {a:?} but direct {b:?}"),
    }
    let err = client
        .get::<Value>("/api/v1/blame", &[("object", Some("nonsense".into()))])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HTTP 400") && err.contains("nonsense"),
        "{err}"
    );
}

mod erased {
    /// Any serialisable query result, as the JSON the API would send.
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}

#[test]
fn history_follow_over_the_server_prints_what_is_appended() {
    use std::io::BufRead;
    let s = server();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args([
            "history",
            "app-0",
            "--follow",
            "--interval",
            "0.2",
            "--limit",
            "3",
        ])
        .args(["-o", "jsonl", "--server", &s.base, "--token", READ])
        .env_remove("RECKON_SERVER")
        .env_remove("RECKON_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line for {what}"))
    };
    // The newest page first (3 events, oldest first, like tail -f).
    let first: Vec<Value> = (0..3).map(|_| next("the first page")).collect();
    assert!(first.iter().all(|e| e["app"] == "app-0"), "{first:?}");
    let last_seen = first[2]["seq"].as_u64().unwrap();
    // Appended while following: another App's event is filtered out, app-0's are printed.
    let appended =
        s.rt.block_on(s.handle.append(vec![
            samples::stream(EVENTS + 2, APPS, OBJECTS), // 2002 % 3: app-1
            samples::stream(EVENTS + 1, APPS, OBJECTS), // 2001 % 3: app-0
            samples::stream(EVENTS + 4, APPS, OBJECTS), // 2004 % 3: app-0
        ]))
        .unwrap();
    let a = next("the first appended app-0 event");
    let b = next("the second appended app-0 event");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(a["seq"].as_u64().unwrap(), appended.first_seq + 1);
    assert_eq!(b["seq"].as_u64().unwrap(), appended.last_seq);
    assert!(a["seq"].as_u64().unwrap() > last_seen);
    assert_eq!(a["app"], "app-0");
}

/// Sends one request and returns (status, content type, JSON body or the text as a string).
fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> (u16, String, Value) {
    let http = reqwest::blocking::Client::new();
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some((content_type, text)) = body {
        req = req
            .header("content-type", content_type)
            .body(text.to_string());
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The findings of the schema-driven fuzzer (issue 23), each as it was reported: every refusal,
/// axum's own extractor rejections included, is the documented JSON error with a stable code
/// and a status the document lists for the operation; what the document forbids is refused.
#[test]
fn malformed_requests_get_the_documented_json_error() {
    let s = server();
    let spec = Spec::load();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    // (method, documented path, request path and query, token, body, status, code, message part)
    type Case<'a> = (
        reqwest::Method,
        &'a str,
        &'a str,
        Option<(&'a str, &'a str)>,
        u16,
        &'a str,
        &'a str,
    );
    let json = "application/json";
    let cases: Vec<Case> = vec![
        // Was text/plain "Failed to deserialize query string: limit: invalid digit ...".
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?limit=x",
            None,
            400,
            "bad_request",
            "limit: invalid digit",
        ),
        (
            get.clone(),
            "/api/v1/apps/{app}/revisions",
            "/api/v1/apps/app-0/revisions?limit=ten",
            None,
            400,
            "bad_request",
            "limit",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?partial=maybe",
            None,
            400,
            "bad_request",
            "partial",
        ),
        // Empty parameters: the schema says minLength 1.
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?cursor=",
            None,
            400,
            "bad_request",
            "cursor: empty",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?after=",
            None,
            400,
            "bad_request",
            "after: empty",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?object=",
            None,
            400,
            "bad_request",
            "object: empty",
        ),
        (
            get.clone(),
            "/api/v1/replay",
            "/api/v1/replay?at=",
            None,
            400,
            "bad_request",
            "at: empty",
        ),
        (
            get.clone(),
            "/api/v1/blame",
            "/api/v1/blame?object=",
            None,
            400,
            "bad_request",
            "object: empty",
        ),
        // Mutually exclusive.
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?cursor=5&after=3",
            None,
            400,
            "bad_request",
            "cursor and after",
        ),
        // Exactly the documented forms.
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?after=%2B5",
            None,
            400,
            "bad_request",
            "after=+5",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?kind=Drift",
            None,
            400,
            "bad_request",
            "Drift",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?since=1h30m",
            None,
            400,
            "bad_request",
            "since=1h30m",
        ),
        (
            get.clone(),
            "/api/v1/events",
            "/api/v1/events?until=2026-01-31%2012:00:00Z",
            None,
            400,
            "bad_request",
            "until=",
        ),
        (
            get.clone(),
            "/api/v1/replay",
            "/api/v1/replay?at=%C3%A9",
            None,
            400,
            "bad_request",
            "at=",
        ),
        // A path segment that is not UTF-8.
        (
            get.clone(),
            "/api/v1/apps/{app}",
            "/api/v1/apps/%FF",
            None,
            400,
            "bad_request",
            "path",
        ),
        // Bodies. A field of the wrong type was 422 with a text body.
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"steps": "1"}"#)),
            400,
            "bad_request",
            "steps: invalid type",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"to": "abcd", "require_healthy": {}}"#)),
            400,
            "bad_request",
            "require_healthy",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"steps": 4294967296}"#)),
            400,
            "bad_request",
            "steps",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"steps": 1, "dry_run": true}"#)),
            400,
            "bad_request",
            "unknown field `dry_run`",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"to": null, "steps": 1}"#)),
            400,
            "bad_request",
            "to: invalid type: null",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"to": " abcd"}"#)),
            400,
            "bad_request",
            "is not a revision",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((
                json,
                r#"{"to": "0123456789012345678901234567890123456789a"}"#,
            )),
            400,
            "bad_request",
            "is not a revision",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, r#"{"to": "abcd", "steps": 1}"#)),
            400,
            "bad_request",
            "exactly one",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some((json, "\u{0}")),
            400,
            "bad_request",
            "request body",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/rollback",
            "/api/v1/apps/app-0/rollback",
            Some(("text/plain", r#"{"steps": 1}"#)),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        // Resume answered 400 (and 422), neither documented.
        (
            post.clone(),
            "/api/v1/apps/{app}/resume",
            "/api/v1/apps/app-0/resume",
            Some((json, "\u{0}")),
            400,
            "bad_request",
            "request body",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/resume",
            "/api/v1/apps/app-0/resume",
            Some((json, r#"{"reason": 1}"#)),
            400,
            "bad_request",
            "reason: invalid type",
        ),
        (
            post.clone(),
            "/api/v1/apps/{app}/resume",
            "/api/v1/apps/app-0/resume",
            Some((json, r#"{"why": "x"}"#)),
            400,
            "bad_request",
            "unknown field `why`",
        ),
    ];
    for (method, documented, target, body, status, code, part) in cases {
        let token = if method == reqwest::Method::POST {
            ADMIN
        } else {
            READ
        };
        let what = format!("{method} {target} {body:?}");
        let (got, content_type, answer) = send(
            method.clone(),
            &format!("{}{target}", s.base),
            Some(token),
            body,
        );
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(content_type, "application/json", "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(part), "{what}: {message:?} names {part:?}");
        // The status is one the document lists for the operation, with the Error schema.
        spec.validate(
            spec.response_schema(method.as_str(), documented, status),
            &answer,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // Nothing above reached the store: no rollback or resume was recorded.
    let page: EventsPage = Client::new(&s.base, Some(READ.into()))
        .unwrap()
        .get("/api/v1/events", &[("kind", Some("rollback".into()))])
        .unwrap();
    assert!(page.events.is_empty(), "{:?}", page.events);

    // The documented forms are taken: a duration, an RFC 3339 time with a lowercase t and z.
    for q in [
        "since=2h",
        "since=0s",
        "until=2026-01-31t12:00:00.5z",
        "until=2026-01-31T12:00:00%2B01:00",
    ] {
        let (status, _, body) = send(
            get.clone(),
            &format!("{}/api/v1/events?{q}", s.base),
            Some(READ),
            None,
        );
        assert_eq!(status, 200, "{q}: {body}");
    }
    // A method a path does not serve: JSON too.
    let (status, content_type, body) = send(
        reqwest::Method::DELETE,
        &format!("{}/api/v1/events", s.base),
        Some(ADMIN),
        None,
    );
    assert_eq!(
        (status, content_type.as_str()),
        (405, "application/json"),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

/// `GET /api/v1/openapi.json` and `.yaml` serve, without a token, the very document the route
/// test above checks (`reckon::api::OPENAPI`, the committed docs/openapi.yaml).
#[test]
fn the_openapi_document_is_served_without_a_token() {
    let s = server();
    let spec = Spec::load();
    let (status, content_type, body) = send(
        reqwest::Method::GET,
        &format!("{}/api/v1/openapi.json", s.base),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    assert_eq!(body, spec.0, "the served JSON is the committed document");
    let resp = reqwest::blocking::get(format!("{}/api/v1/openapi.yaml", s.base)).unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/yaml");
    assert_eq!(resp.text().unwrap(), reckon::api::OPENAPI);
    // Both are in the route table (as open routes) and so in the document's own paths.
    for path in ["/api/v1/openapi.json", "/api/v1/openapi.yaml"] {
        assert!(
            routes()
                .iter()
                .any(|r| r.path == path && r.access == Access::Open),
            "{path}"
        );
        assert!(!spec.0["paths"][path]["get"].is_null(), "{path}");
    }
}

/// Reads server-sent events from `resp` until one with data: (id, data as JSON).
fn next_sse(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> (u64, Value) {
    let mut id = None;
    for line in lines {
        let line = line.expect("the stream ended or timed out before an event");
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse::<u64>().unwrap());
        } else if let Some(v) = line.strip_prefix("data:") {
            return (
                id.expect("an id before the data"),
                serde_json::from_str(v.trim()).unwrap(),
            );
        }
    }
    panic!("the stream ended before an event");
}

#[test]
fn event_stream_sends_the_apps_new_events_as_they_are_appended() {
    use std::io::BufRead;
    let s = server();
    let (status, _, body) = raw(
        reqwest::Method::GET,
        &format!("{}/api/v1/apps/nope/events/stream", s.base),
        Some(READ),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let url = format!("{}/api/v1/apps/app-0/events/stream", s.base);
    let (status, _, body) = raw(reqwest::Method::GET, &url, None);
    assert_eq!(status, 401, "{body}");
    // A bounded client: a stream that never sends fails the test instead of hanging it.
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = http.get(&url).bearer_auth(READ).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut lines = std::io::BufReader::new(resp).lines();
    // Opened without `after`: only what is appended from now on; another App's event is not sent.
    let appended =
        s.rt.block_on(s.handle.append(vec![
            samples::stream(EVENTS + 2, APPS, OBJECTS), // 2002 % 3: app-1
            samples::stream(EVENTS + 1, APPS, OBJECTS), // 2001 % 3: app-0
        ]))
        .unwrap();
    let (id, row) = next_sse(&mut lines);
    assert_eq!(id, appended.last_seq);
    assert_eq!(row["seq"].as_u64(), Some(id));
    assert_eq!(row["app"], "app-0");
    // A reconnecting client gets what it missed after its Last-Event-ID, oldest first.
    let resp = http
        .get(&url)
        .bearer_auth(READ)
        .header("last-event-id", (appended.last_seq - 1).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut again = std::io::BufReader::new(resp).lines();
    let (id, row) = next_sse(&mut again);
    assert_eq!(id, appended.last_seq);
    assert_eq!(row["app"], "app-0");
}

#[test]
fn the_ui_is_served_with_deep_links_and_a_strict_policy() {
    let s = server();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http.get(format!("{}/ui", s.base)).send().unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/ui/");
    for path in ["/ui/", "/ui/apps/app-0", "/ui/apps/app-0/revisions/abcd"] {
        let resp = http.get(format!("{}{path}", s.base)).send().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        assert!(
            resp.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert!(resp.text().unwrap().contains("/ui/assets/app.js"), "{path}");
    }
    let js = http
        .get(format!("{}/ui/assets/app.js", s.base))
        .send()
        .unwrap();
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(js.text().unwrap().contains("/api/v1"));
    let missing = http
        .get(format!("{}/ui/assets/nope.js", s.base))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `GET /api/v1/integrity`: the store's size, and the last `store verify` as recorded beside the
/// log, with how many events came after it; never a verification per request.
#[test]
fn integrity_reports_the_recorded_verification_and_what_came_after() {
    use reckon::store::last_verify;
    let s = server();
    let spec = Spec::load();
    let schema = spec.response_schema("GET", "/api/v1/integrity", 200);
    let client = Client::new(&s.base, Some(READ.into())).unwrap();
    let last_seq = s.store.last_seq().unwrap();

    let never: Value = client.get("/api/v1/integrity", &[]).unwrap();
    spec.validate(schema, &never).unwrap();
    assert_eq!(never["last_verify"], Value::Null, "{never}");
    assert_eq!(never["appended_since"], Value::Null, "{never}");
    assert_eq!(never["store"]["last_seq"], last_seq);
    assert!(never["store"]["bytes"].as_u64().unwrap() > 0, "{never}");

    // What `reckon store verify` records (the store is quiet here: nothing appends).
    let report = reckon::store::verify::verify(&s.store, &mut |_| {}).unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let record = last_verify::LastVerify::of(&report, chrono::Utc::now(), 5);
    last_verify::write(s.store.path(), &record).unwrap();
    // Events naming no blob (the blob store is the writer's now).
    let more: Vec<_> = (EVENTS..EVENTS + 20)
        .filter(|i| samples::stream_blob(*i, APPS, OBJECTS).is_none())
        .map(|i| samples::stream(i, APPS, OBJECTS))
        .collect();
    let appended = more.len() as u64;
    s.rt.block_on(s.handle.append(more)).unwrap();

    let after: Value = client.get("/api/v1/integrity", &[]).unwrap();
    spec.validate(schema, &after).unwrap();
    assert_eq!(after["last_verify"]["ok"], true, "{after}");
    assert_eq!(after["last_verify"]["events"], report.events);
    assert_eq!(after["last_verify"]["last_seq"], last_seq);
    assert_eq!(after["appended_since"], appended, "{after}");
    assert_eq!(after["store"]["last_seq"], last_seq + appended);

    // A torn or foreign file is an error, not a pass.
    std::fs::write(s.store.path().join(last_verify::FILE), b"{").unwrap();
    match client.get::<Value>("/api/v1/integrity", &[]).unwrap_err() {
        reckon::api::client::ClientError::Status { status, .. } => assert_eq!(status, 500),
        other => panic!("{other}"),
    }
}

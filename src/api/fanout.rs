//! Owns the API's fan-out across shards: a request to any shard of a fleet is asked of every
//! shard (itself included, over HTTP like the others) in parallel and the answers are combined —
//! history merged by time with a composite cursor ([`crate::shard::merge`]), App lists and
//! replays concatenated, per-App requests answered by the shard that has the App.
//!
//! A live event stream (`/api/v1/apps/{app}/events/stream`) cannot be merged like a page: it is
//! forwarded, streaming, to the shard that reconciles the App, which is the one that appends its
//! new events ([`stream_from_owner`]).
//!
//! A forwarded request carries [`FANOUT_HEADER`], and a shard answers such a request from its own
//! store only: a request is fanned out once, never again. A shard that does not answer (down,
//! 5xx, refusing the token) fails the request with 502 naming it — a fleet answer missing a
//! shard would look complete — unless the caller asked `partial=true`.

use super::ApiError;
use crate::shard::Shards;
use crate::shard::merge::{self, Cursor, MissingShard, Order, Page, Pos, ShardPage};
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Marks a request one shard forwards to another: answer from your own store.
pub const FANOUT_HEADER: &str = "x-reckon-fanout";
/// On a forwarded answer about one App: whether the answering shard reconciles it now (after a
/// resize an App's older history stays on its previous shard; the current owner wins).
pub const RECONCILES_HEADER: &str = "x-reckon-reconciles";
/// On a fleet answer from one shard: which one.
pub const SHARD_HEADER: &str = "x-reckon-shard";
/// On a `partial=true` list answer: the shards it lacks (comma-separated).
pub const MISSING_HEADER: &str = "x-reckon-missing-shards";

/// How far behind now a fleet's `--follow` hands out events: a shard stamps an event's time a
/// moment before the event is visible, so following up to now could pass an event of one shard
/// before an older one of another; a second covers that moment with a wide margin.
const FOLLOW_LAG: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Requests bodies forwarded to peers are small JSON (rollback, resume).
const MAX_BODY: usize = 1 << 20;

/// A forwarded live stream has no overall deadline (it lasts up to 10 minutes), but a peer
/// that sends nothing for this long is gone: its stream sends a keep-alive comment every 15 s.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(
        "--peers: {count} URLs for --shards {shards} (give one per shard, in shard order, or one with {{i}})"
    )]
    PeerCount { count: usize, shards: u32 },
    #[error("--peers {url}: not an http:// or https:// URL ({reason})")]
    BadPeer { url: String, reason: String },
    #[error("building the HTTP client for peers: {0}")]
    Client(String),
}

/// The other shards of this fleet, and how to ask them.
pub struct Fleet {
    pub shards: Shards,
    /// Base URL of every shard, index = shard (this one's included).
    pub peers: Vec<reqwest::Url>,
    /// The read-only token for forwarded GETs (the caller's own token when `None`).
    pub token: Option<String>,
    http: reqwest::Client,
    /// For forwarded live streams: the same peers and CA, no overall timeout (see
    /// [`STREAM_READ_TIMEOUT`]).
    stream_http: reqwest::Client,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("shards", &self.shards)
            .field(
                "peers",
                &self.peers.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
            )
            .field("token", &self.token.is_some())
            .finish()
    }
}

/// One URL per shard: the list as given, or one URL with `{i}` expanded over `0..count`
/// (`http://reckon-{i}.reckon-shards.reckon.svc:8080`, the headless Service's names).
pub fn expand_peers(peers: &[String], count: u32) -> Result<Vec<String>, FanoutError> {
    if let [one] = peers
        && one.contains("{i}")
    {
        return Ok((0..count)
            .map(|i| one.replace("{i}", &i.to_string()))
            .collect());
    }
    if peers.len() != count as usize {
        return Err(FanoutError::PeerCount {
            count: peers.len(),
            shards: count,
        });
    }
    Ok(peers.to_vec())
}

impl Fleet {
    pub fn new(
        shards: Shards,
        peers: &[String],
        token: Option<String>,
        timeout: Duration,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Fleet, FanoutError> {
        let peers = expand_peers(peers, shards.count)?
            .into_iter()
            .map(|url| {
                let parsed = reqwest::Url::parse(&url).map_err(|e| FanoutError::BadPeer {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(FanoutError::BadPeer {
                        url,
                        reason: format!("scheme {}", parsed.scheme()),
                    });
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut roots = Vec::new();
        if let Some(ca) = ca_file {
            for cert in
                crate::tls::certificates(ca).map_err(|e| FanoutError::Client(e.to_string()))?
            {
                roots.push(
                    reqwest::Certificate::from_der(&cert)
                        .map_err(|e| FanoutError::Client(format!("{}: {e}", ca.display())))?,
                );
            }
        }
        let build = |b: reqwest::ClientBuilder| {
            roots
                .iter()
                .fold(b, |b, c| b.add_root_certificate(c.clone()))
                .build()
                .map_err(|e| FanoutError::Client(e.to_string()))
        };
        let http = build(reqwest::Client::builder().timeout(timeout))?;
        let stream_http = build(
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .read_timeout(STREAM_READ_TIMEOUT),
        )?;
        Ok(Fleet {
            shards,
            peers,
            token: token.filter(|t| !t.is_empty()),
            http,
            stream_http,
        })
    }

    /// A peer reached over plain HTTP, if any: the forwarded bearer tokens travel in the clear.
    pub fn plain_http_peer(&self) -> Option<&reqwest::Url> {
        self.peers.iter().find(|u| u.scheme() == "http")
    }

    fn peer_name(&self, shard: u32) -> String {
        self.peers[shard as usize]
            .as_str()
            .trim_end_matches('/')
            .to_string()
    }
}

/// What one shard said.
struct Answer {
    shard: u32,
    status: StatusCode,
    reconciles: bool,
    body: Bytes,
}

/// A request to forward: method, path, query pairs, the caller's token and body.
#[derive(Clone)]
struct Forward {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    auth: Option<HeaderValue>,
    body: Bytes,
}

impl Fleet {
    /// Asks one shard; `Err` is a shard that did not answer usably (it names the shard).
    async fn ask(&self, shard: u32, f: &Forward) -> Result<Answer, MissingShard> {
        let peer = self.peer_name(shard);
        let missing = |error: String| MissingShard {
            shard,
            peer: peer.clone(),
            error,
        };
        let mut url = self.peers[shard as usize].clone();
        url.set_path(&f.path);
        url.set_query(None);
        if !f.query.is_empty() {
            url.query_pairs_mut().extend_pairs(f.query.iter());
        }
        let mut req = self
            .http
            .request(f.method.clone(), url)
            .header(FANOUT_HEADER, "1");
        // GETs go with the fleet's read-only token; a POST must carry the caller's own token,
        // whose name the owning shard records as the actor.
        match (&self.token, f.method == Method::GET) {
            (Some(t), true) => req = req.bearer_auth(t),
            _ => {
                if let Some(a) = &f.auth {
                    req = req.header(header::AUTHORIZATION, a.clone());
                }
            }
        }
        if !f.body.is_empty() {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(f.body.clone());
        }
        let resp = req.send().await.map_err(|e| missing(error_chain(&e)))?;
        let status = resp.status();
        let reconciles = resp
            .headers()
            .get(RECONCILES_HEADER)
            .is_some_and(|v| v == "true");
        let body = resp
            .bytes()
            .await
            .map_err(|e| missing(format!("reading the answer: {}", error_chain(&e))))?;
        // A shard that fails or refuses the fleet's token cannot answer for its Apps: the caller
        // must hear about it, not get a smaller answer.
        if status.is_server_error()
            || (f.method == Method::GET
                && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN))
        {
            return Err(missing(format!(
                "HTTP {}: {}",
                status.as_u16(),
                message_of(&body)
            )));
        }
        Ok(Answer {
            shard,
            status,
            reconciles,
            body,
        })
    }

    async fn ask_all(&self, shards: &[u32], f: &Forward) -> Vec<Result<Answer, MissingShard>> {
        futures::future::join_all(shards.iter().map(|s| self.ask(*s, f))).await
    }

    fn all(&self) -> Vec<u32> {
        (0..self.shards.count).collect()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

fn passthrough(a: &Answer) -> Response {
    let mut resp = (a.status, a.body.clone()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&a.shard.to_string()) {
        resp.headers_mut().insert(SHARD_HEADER, v);
    }
    resp
}

/// 502 naming every shard that did not answer.
fn unavailable(missing: &[MissingShard]) -> ApiError {
    let names: Vec<String> = missing
        .iter()
        .map(|m| format!("shard {} ({}) did not answer: {}", m.shard, m.peer, m.error))
        .collect();
    ApiError::BadGateway(format!(
        "{}; without it this answer would be incomplete: retry, or pass partial=true for the \
         other shards' answer",
        names.join("; ")
    ))
}

fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    let q = uri.query().unwrap_or_default();
    reqwest::Url::parse(&format!("http://x/?{q}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn partial_of(pairs: &[(String, String)]) -> Result<bool, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == "partial") {
        None => Ok(false),
        Some((_, v)) => match v.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(ApiError::BadRequest(format!(
                "partial={other}: expected true or false"
            ))),
        },
    }
}

/// The App a per-App request is about: the `{app}` of `/api/v1/apps/{app}/...`, else `?app=`.
fn app_of(path: &str, pairs: &[(String, String)]) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/api/v1/apps/") {
        let seg = rest.split('/').next().unwrap_or_default();
        if !seg.is_empty() {
            return Some(
                reqwest::Url::parse(&format!("http://x/{seg}"))
                    .ok()
                    .and_then(|u| {
                        u.path_segments()
                            .and_then(|mut s| s.next().map(str::to_owned))
                    })
                    .unwrap_or_else(|| seg.to_string()),
            );
        }
    }
    pairs
        .iter()
        .find(|(k, _)| k == "app")
        .map(|(_, v)| v.clone())
}

/// The middleware: answers from this store when the request was forwarded (or there is no
/// fleet), else fans out by route.
pub async fn fanout(
    axum::extract::State(state): axum::extract::State<super::ApiState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(fleet) = state.fleet.clone() else {
        return next.run(req).await;
    };
    // A live stream cannot be buffered and merged like a page: the App's owner streams it
    // (docs/api.md, "Live events").
    if req.uri().path().ends_with(super::handlers::STREAM_SUFFIX)
        && !req.headers().contains_key(FANOUT_HEADER)
    {
        return match stream_from_owner(&fleet, &state, req, next).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        };
    }
    // A token's identity is not a fleet's answer: every shard has the same tokens. Nor a
    // store's integrity: each shard has its own store, and reports that one.
    if req.uri().path().ends_with(super::handlers::STREAM_SUFFIX)
        || req.uri().path() == "/api/v1/whoami"
        || req.uri().path() == "/api/v1/integrity"
    {
        return next.run(req).await;
    }
    let pairs = query_pairs(req.uri());
    if req.headers().contains_key(FANOUT_HEADER) {
        let app = app_of(req.uri().path(), &pairs);
        let mut resp = next.run(req).await;
        if let Some(app) = app {
            let mine = (state.apps)(&app);
            resp.headers_mut().insert(
                RECONCILES_HEADER,
                HeaderValue::from_static(if mine { "true" } else { "false" }),
            );
        }
        return resp;
    }
    match fan(&fleet, req, pairs).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// A live stream asked of any shard comes from the shard that reconciles the App: only it
/// appends the App's new events. Every shard is asked whether it reconciles the App (its status,
/// as a per-App query is); this shard streams itself when it is the one, or when nobody is (an
/// App no shard reconciles has no new events; this shard's answer — 404 for an unknown App —
/// stands); otherwise the owner's stream is passed through as it comes, with the owner's shard in
/// [`SHARD_HEADER`]. Without every shard's answer the owner may be the silent one: 502.
async fn stream_from_owner(
    fleet: &Fleet,
    state: &super::ApiState,
    req: Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let app_path = path
        .strip_suffix(super::handlers::STREAM_SUFFIX)
        .unwrap_or(&path)
        .to_string();
    let status = Forward {
        method: Method::GET,
        path: app_path,
        query: Vec::new(),
        auth: req.headers().get(header::AUTHORIZATION).cloned(),
        body: Bytes::new(),
    };
    let mut owner = None;
    let mut missing = Vec::new();
    for r in fleet.ask_all(&fleet.all(), &status).await {
        match r {
            Ok(a) if a.status.is_success() && a.reconciles => owner = Some(a.shard),
            Ok(_) => {}
            Err(m) => missing.push(m),
        }
    }
    let owner = match owner {
        Some(o) => o,
        None if !missing.is_empty() => return Err(unavailable(&missing)),
        None => fleet.shards.index,
    };
    if owner == fleet.shards.index {
        return Ok(next.run(req).await);
    }
    let mut url = fleet.peers[owner as usize].clone();
    url.set_path(&path);
    url.set_query(req.uri().query());
    let mut out = fleet.stream_http.get(url).header(FANOUT_HEADER, "1");
    match (&fleet.token, req.headers().get(header::AUTHORIZATION)) {
        (Some(t), _) => out = out.bearer_auth(t),
        (None, Some(a)) => out = out.header(header::AUTHORIZATION, a.clone()),
        (None, None) => {}
    }
    if let Some(id) = req.headers().get("last-event-id") {
        out = out.header("last-event-id", id.clone());
    }
    let peer = fleet.peer_name(owner);
    let upstream = out.send().await.map_err(|e| {
        unavailable(&[MissingShard {
            shard: owner,
            peer: peer.clone(),
            error: error_chain(&e),
        }])
    })?;
    let code = upstream.status();
    let mut resp = Response::builder().status(code);
    for h in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(v) = upstream.headers().get(&h) {
            resp = resp.header(h, v.clone());
        }
    }
    resp = resp.header(SHARD_HEADER, owner.to_string());
    // The owner's stream as it comes; it ends when the owner's does, when the owner goes
    // silent (STREAM_READ_TIMEOUT), or when this agent stops.
    let chunks = futures::stream::unfold(Some(upstream), |up| async move {
        let mut up = up?;
        match up.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(up))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let mut stop = state.stop.clone();
    let stopped = async move {
        match stop.as_mut() {
            Some(stop) => {
                let _ = stop.wait_for(|s| *s).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    use futures::StreamExt;
    let body = axum::body::Body::from_stream(chunks.take_until(Box::pin(stopped)));
    resp.body(body)
        .map_err(|e| ApiError::Internal(format!("forwarding the stream: {e}")))
}

async fn fan(
    fleet: &Fleet,
    req: Request,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let partial = partial_of(&pairs)?;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    let uri = req.uri().clone();
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    let query: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "partial").collect();
    let forward = Forward {
        method: method.clone(),
        path: path.clone(),
        query,
        auth,
        body,
    };
    match (method, path.as_str()) {
        (Method::GET, "/api/v1/events") => events(fleet, &uri, forward, partial).await,
        (Method::GET, "/api/v1/apps") | (Method::GET, "/api/v1/replay") => {
            concat(fleet, forward, partial).await
        }
        _ => one(fleet, forward, partial).await,
    }
}

/// App lists and replays: every shard's array, each element tagged with its shard.
async fn concat(fleet: &Fleet, f: Forward, partial: bool) -> Result<Response, ApiError> {
    let mut items = Vec::new();
    let mut missing = Vec::new();
    let mut answered = Vec::new();
    for r in fleet.ask_all(&fleet.all(), &f).await {
        match r {
            Err(m) => missing.push(m),
            Ok(a) if a.status == StatusCode::NOT_FOUND => answered.push(a),
            Ok(a) if !a.status.is_success() => return Ok(passthrough(&a)),
            Ok(a) => {
                let list: Vec<serde_json::Value> =
                    serde_json::from_slice(&a.body).map_err(|e| {
                        ApiError::BadGateway(format!(
                            "shard {} ({}): not a list: {e}",
                            a.shard,
                            fleet.peer_name(a.shard)
                        ))
                    })?;
                for mut item in list {
                    if let Some(o) = item.as_object_mut() {
                        o.insert("shard".into(), a.shard.into());
                    }
                    items.push(item);
                }
            }
        }
    }
    if !missing.is_empty() && !partial {
        return Err(unavailable(&missing));
    }
    if items.is_empty()
        && missing.is_empty()
        && let Some(a) = answered.first()
    {
        return Ok(passthrough(a));
    }
    // By App name (both lists carry `app`), then shard: one order whoever is asked.
    items.sort_by(|a, b| {
        let key = |v: &serde_json::Value| {
            (
                v["app"].as_str().unwrap_or_default().to_string(),
                v["shard"].as_u64().unwrap_or_default(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut resp = axum::Json(items).into_response();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| m.shard.to_string()).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
            resp.headers_mut().insert(MISSING_HEADER, v);
        }
    }
    Ok(resp)
}

/// Per-App requests (and blame): the shard that has the App answers. Several (an App moved on a
/// resize): the one that reconciles it now, else the lowest. None: the most telling error.
async fn one(fleet: &Fleet, f: Forward, partial: bool) -> Result<Response, ApiError> {
    let mut ok: Vec<Answer> = Vec::new();
    let mut refused: Vec<Answer> = Vec::new();
    let mut not_found: Vec<Answer> = Vec::new();
    let mut missing = Vec::new();
    for r in fleet.ask_all(&fleet.all(), &f).await {
        match r {
            Err(m) => missing.push(m),
            Ok(a) if a.status.is_success() => ok.push(a),
            Ok(a) if a.status == StatusCode::NOT_FOUND => not_found.push(a),
            Ok(a) => refused.push(a),
        }
    }
    // Without every shard's word even a found App may be answered by the wrong shard (its
    // current owner could be the silent one).
    if !missing.is_empty() && (!partial || (ok.is_empty() && refused.is_empty())) {
        return Err(unavailable(&missing));
    }
    let chosen = ok
        .iter()
        .find(|a| a.reconciles)
        .or_else(|| ok.first())
        .or_else(|| refused.iter().find(|a| a.reconciles))
        .or_else(|| refused.first())
        .or_else(|| not_found.first());
    let mut resp = match chosen {
        Some(a) => passthrough(a),
        None => return Err(ApiError::Internal("no shard answered".into())),
    };
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|m| m.shard.to_string()).collect();
        if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
            resp.headers_mut().insert(MISSING_HEADER, v);
        }
    }
    Ok(resp)
}

/// `GET /api/v1/events` across the fleet.
async fn events(
    fleet: &Fleet,
    uri: &axum::http::Uri,
    f: Forward,
    partial: bool,
) -> Result<Response, ApiError> {
    let axum::extract::Query(params) =
        axum::extract::Query::<super::handlers::EventsParams>::try_from_uri(uri)
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    // Validates every filter here, once, with this shard's words.
    let filter = params.filter()?;
    let (order, given) = match (&params.after, &params.cursor) {
        (Some(a), _) => (Order::OldestFirst, Some(a)),
        (None, c) => (Order::NewestFirst, c.as_ref()),
    };
    // The document's pattern first: the parser's integers would also take a sign (`+5`).
    if let Some(c) = given
        && !c
            .bytes()
            .all(|b| b.is_ascii_digit() || b",:-*".contains(&b))
    {
        return Err(ApiError::BadRequest(format!(
            "{c}: expected a position (SEQ, or SHARD:POS,... with POS a sequence number, - or *)"
        )));
    }
    let given: Option<Cursor> = given
        .map(|c| c.parse())
        .transpose()
        .map_err(|e: merge::MergeError| ApiError::BadRequest(e.to_string()))?;
    let from = Cursor::positions(given.as_ref(), fleet.shards.count)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // Every shard reads the same filter: relative times become one absolute time here.
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut base: Vec<(String, String)> = f
        .query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "cursor" | "after" | "limit" | "since" | "until"))
        .cloned()
        .collect();
    if let Some(t) = filter.since {
        base.push(("since".into(), rfc(t)));
    }
    if let Some(t) = filter.until {
        base.push(("until".into(), rfc(t)));
    }
    base.push(("limit".into(), filter.limit.to_string()));
    let asks = from.iter().filter_map(|(shard, pos)| {
        let mut query = base.clone();
        let key = match order {
            Order::NewestFirst => "cursor",
            Order::OldestFirst => "after",
        };
        match (order, pos) {
            (_, Pos::Done) => return None,
            (Order::NewestFirst, Pos::Top) => {}
            (Order::OldestFirst, Pos::Top) => query.push((key.into(), "0".into())),
            (_, Pos::At(n)) => query.push((key.into(), n.to_string())),
        }
        let fwd = Forward { query, ..f.clone() };
        Some(async move { fleet.ask(*shard, &fwd).await })
    });
    // Taken before asking: every event stamped before it is visible by the time a shard answers.
    let watermark = (order == Order::OldestFirst).then(|| chrono::Utc::now() - FOLLOW_LAG);
    let answers = futures::future::join_all(asks).await;
    let mut pages = Vec::new();
    let mut missing = Vec::new();
    let mut not_found = Vec::new();
    for r in answers {
        match r {
            Err(m) => missing.push(m),
            Ok(a) if a.status == StatusCode::NOT_FOUND => {
                // The filter names something (an App, a revision) this shard never saw.
                pages.push(ShardPage {
                    shard: a.shard,
                    events: Vec::new(),
                    next: None,
                });
                not_found.push(a);
            }
            Ok(a) if !a.status.is_success() => return Ok(passthrough(&a)),
            Ok(a) => {
                let page: Page = serde_json::from_slice(&a.body).map_err(|e| {
                    ApiError::BadGateway(format!(
                        "shard {} ({}): not a history page: {e}",
                        a.shard,
                        fleet.peer_name(a.shard)
                    ))
                })?;
                let next = match page.next {
                    None => None,
                    Some(Cursor::Seq(n)) => Some(n),
                    Some(other) => {
                        return Err(ApiError::BadGateway(format!(
                            "shard {} ({}) answered a fleet cursor {other}: it fanned out again",
                            a.shard,
                            fleet.peer_name(a.shard)
                        )));
                    }
                };
                pages.push(ShardPage {
                    shard: a.shard,
                    events: page.events,
                    next,
                });
            }
        }
    }
    if !missing.is_empty() && !partial {
        return Err(unavailable(&missing));
    }
    if missing.is_empty()
        && !not_found.is_empty()
        && not_found.len() == pages.len()
        && let Some(a) = not_found.first()
    {
        return Ok(passthrough(a));
    }
    // Where following starts: each shard's newest event (only a first page, all shards there).
    let head = (order == Order::NewestFirst && given.is_none() && missing.is_empty()).then(|| {
        Cursor::Shards(
            pages
                .iter()
                .map(|p| (p.shard, Pos::At(p.events.first().map_or(0, |e| e.seq))))
                .collect(),
        )
    });
    let (events, to) = merge::merge(order, &from, pages, filter.limit, watermark);
    let page = Page {
        events,
        next: merge::next_cursor(order, to),
        head,
        missing,
    };
    Ok(axum::Json(page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_a_list_per_shard_or_one_template() {
        let list = vec!["http://a:1".to_string(), "http://b:2".to_string()];
        assert_eq!(expand_peers(&list, 2).unwrap(), list);
        assert!(matches!(
            expand_peers(&list, 3),
            Err(FanoutError::PeerCount {
                count: 2,
                shards: 3
            })
        ));
        let t = vec!["http://reckon-{i}.reckon-shards.ns.svc:8080".to_string()];
        assert_eq!(
            expand_peers(&t, 3).unwrap(),
            vec![
                "http://reckon-0.reckon-shards.ns.svc:8080",
                "http://reckon-1.reckon-shards.ns.svc:8080",
                "http://reckon-2.reckon-shards.ns.svc:8080",
            ]
        );
        let shards = Shards { index: 0, count: 2 };
        let bad = vec!["ftp://a".to_string(), "http://b".to_string()];
        assert!(matches!(
            Fleet::new(shards, &bad, None, Duration::from_secs(1), None),
            Err(FanoutError::BadPeer { .. })
        ));
    }

    #[test]
    fn a_plain_http_peer_is_named_and_a_bad_ca_file_refused() {
        let shards = Shards { index: 0, count: 2 };
        let second = Duration::from_secs(1);
        let mixed = vec!["https://a:1".to_string(), "http://b:2".to_string()];
        let fleet = Fleet::new(shards, &mixed, None, second, None).unwrap();
        assert_eq!(
            fleet.plain_http_peer().map(|u| u.as_str()),
            Some("http://b:2/")
        );
        let tls = vec!["https://a:1".to_string(), "https://b:2".to_string()];
        let fleet = Fleet::new(shards, &tls, None, second, None).unwrap();
        assert!(fleet.plain_http_peer().is_none());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Fleet::new(shards, &tls, None, second, Some(&empty)).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn the_app_of_a_request_and_partial() {
        assert_eq!(
            app_of("/api/v1/apps/shop/revisions", &[]).as_deref(),
            Some("shop")
        );
        assert_eq!(app_of("/api/v1/apps/shop", &[]).as_deref(), Some("shop"));
        let q = vec![("app".to_string(), "web".to_string())];
        assert_eq!(app_of("/api/v1/blame", &q).as_deref(), Some("web"));
        assert_eq!(app_of("/api/v1/events", &[]), None);
        assert!(!partial_of(&[]).unwrap());
        let p = |v: &str| vec![("partial".to_string(), v.to_string())];
        assert!(partial_of(&p("true")).unwrap());
        assert!(!partial_of(&p("false")).unwrap());
        assert!(partial_of(&p("maybe")).is_err());
    }

    #[test]
    fn a_silent_shard_is_named_in_the_502() {
        let e = unavailable(&[MissingShard {
            shard: 1,
            peer: "http://reckon-1:8080".into(),
            error: "connection refused".into(),
        }]);
        let (status, code) = e.parts();
        assert_eq!((status, code), (StatusCode::BAD_GATEWAY, "bad_gateway"));
        assert!(
            e.to_string()
                .starts_with("shard 1 (http://reckon-1:8080) did not answer: connection refused;"),
            "{e}"
        );
    }
}

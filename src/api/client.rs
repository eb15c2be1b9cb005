//! Owns the client side of the HTTP API: what `reckon --server URL` uses to ask a running agent
//! instead of opening its store (which the agent holds locked). Blocking (reqwest), as the CLI's
//! read commands are; JSON in and out, the server's error messages passed through.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--server {url}: not an http:// or https:// URL ({reason})")]
    BadUrl { url: String, reason: String },
    #[error("{url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        /// The API's error code (`unauthorized`, `not_found`, ...), when it sent one.
        code: Option<String>,
        message: String,
    },
    #[error("{url}: the response is not what this reckon expects: {reason}")]
    Decode { url: String, reason: String },
}

/// A connection to one agent's API.
#[derive(Clone)]
pub struct Client {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Client {
    /// `server` is the agent's base URL (`http://host:port`); `token` its bearer token.
    pub fn new(server: &str, token: Option<String>) -> Result<Client, ClientError> {
        let bad = |reason: String| ClientError::BadUrl {
            url: server.to_string(),
            reason,
        };
        let base = reqwest::Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!("scheme {}", base.scheme())));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ClientError::Request {
                url: server.to_string(),
                source,
            })?;
        Ok(Client {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The URL of `path` (absolute, e.g. `/api/v1/events`) with `query` pairs (None skipped).
    pub fn url(&self, path: &str, query: &[(&str, Option<String>)]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url.set_query(None);
        if query.iter().any(|(_, v)| v.is_some()) {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                if let Some(v) = v {
                    pairs.append_pair(k, v);
                }
            }
        }
        url
    }

    fn send(
        &self,
        req: reqwest::blocking::RequestBuilder,
        url: &reqwest::Url,
    ) -> Result<String, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|source| ClientError::Request {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        let body = resp.text().map_err(|source| ClientError::Request {
            url: url.to_string(),
            source,
        })?;
        if status.is_success() {
            return Ok(body);
        }
        // The API's errors are {"error": {"code", "message"}}; anything else is shown as is.
        let parsed: Option<serde_json::Value> = serde_json::from_str(&body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v["error"][name].as_str())
                .map(str::to_owned)
        };
        Err(ClientError::Status {
            url: url.to_string(),
            status: status.as_u16(),
            code: field("code"),
            message: field("message").unwrap_or_else(|| body.trim().to_string()),
        })
    }

    fn decode<T: DeserializeOwned>(url: &reqwest::Url, body: &str) -> Result<T, ClientError> {
        serde_json::from_str(body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// GET `path?query` and decode the JSON answer.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, ClientError> {
        let url = self.url(path, query);
        let body = self.send(self.http.get(url.clone()), &url)?;
        Self::decode(&url, &body)
    }

    /// POST `body` as JSON to `path` and decode the JSON answer.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path, &[]);
        let json = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json);
        let body = self.send(req, &url)?;
        Self::decode(&url, &body)
    }
}

/// Percent-encodes one path segment (an App name, a revision) for use in an API path.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! Owns the Helm chart repository test server: a static HTTP(S) server over a directory of
//! packaged charts and their `index.yaml` (made by the real `helm package` and `helm repo index`),
//! with `ETag` validators and `304 Not Modified` as chart repositories on object stores and
//! GitHub Pages answer, optional basic auth, and a log of every request it answered, so tests can
//! count what a poll cost.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::http::{HttpAuth, TestCa};
use super::serve::LoopbackServer;
use super::{Error, Result, io_err};

const HELM_HINT: &str = "helm is built by scripts/provision-testenv.sh (tests/testenv/k8s/helm)";

/// One request the server answered: path and status.
pub type Logged = (String, u16);

struct Files {
    root: PathBuf,
    auth: Option<HttpAuth>,
    log: Arc<Mutex<Vec<Logged>>>,
}

/// A chart repository on loopback.
pub struct ChartRepoServer {
    server: LoopbackServer,
    ca: Option<TestCa>,
    log: Arc<Mutex<Vec<Logged>>>,
    root: PathBuf,
}

impl ChartRepoServer {
    /// Serves `root` (over TLS with a fresh [`TestCa`] when `tls`), demanding `auth` if given.
    pub fn start(root: &Path, tls: bool, auth: Option<HttpAuth>) -> Result<Self> {
        let ca = if tls { Some(TestCa::generate()?) } else { None };
        let acceptor = match &ca {
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                ca.server_config()?,
            ))),
            None => None,
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Files {
            root: root.to_path_buf(),
            auth,
            log: log.clone(),
        });
        let router = axum::Router::new().fallback(serve_file).with_state(state);
        let server = super::serve::serve_router("chart-repo", router, acceptor)?;
        Ok(Self {
            server,
            ca,
            log,
            root: root.to_path_buf(),
        })
    }

    /// The repository's URL (`index.yaml` is under it).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.server.addr().port())
    }

    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Packages the chart at `chart_dir` into the repository with the real `helm package`, and
    /// rewrites `index.yaml` with `helm repo index` (archive URLs relative, as most repositories
    /// publish them). Returns the archive's path.
    pub fn publish(&self, chart_dir: &Path) -> Result<PathBuf> {
        let archive = package(chart_dir, &self.root)?;
        let helm = super::require_binary("helm", HELM_HINT)?;
        run(
            &helm,
            &["repo".as_ref(), "index".as_ref(), self.root.as_os_str()],
        )?;
        Ok(archive)
    }
}

/// Packages the chart at `chart_dir` into `destination` with the real `helm package`; returns
/// the archive's path.
pub fn package(chart_dir: &Path, destination: &Path) -> Result<PathBuf> {
    let helm = super::require_binary("helm", HELM_HINT)?;
    let out = run(
        &helm,
        &[
            "package".as_ref(),
            chart_dir.as_os_str(),
            "--destination".as_ref(),
            destination.as_os_str(),
        ],
    )?;
    out.trim()
        .rsplit(": ")
        .next()
        .map(PathBuf::from)
        .ok_or_else(|| Error::UnexpectedOutput {
            command: "helm package".into(),
            detail: out.clone(),
        })
}

fn run(program: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: program.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::CommandFailed {
            command: format!("{} {:?}", program.display(), args),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A strong validator from the file's size and modification time (as static servers make them).
fn etag_of(meta: &std::fs::Metadata) -> String {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), modified)
}

async fn serve_file(State(files): State<Arc<Files>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let response = answer(&files, &path, &req);
    files
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path, response.status().as_u16()));
    response
}

fn answer(files: &Files, path: &str, req: &Request) -> Response {
    if let Some(expected) = &files.auth
        && !super::http::basic_auth_matches(req, expected)
    {
        let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"charts\""),
        );
        return resp;
    }
    let relative = path.trim_start_matches('/');
    if relative.is_empty() || relative.split('/').any(|p| p == ".." || p.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let file = files.root.join(relative);
    let Ok(meta) = std::fs::metadata(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = etag_of(&meta);
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        match std::fs::read(&file).map_err(io_err(&file)) {
            Ok(bytes) => Response::new(Body::from(bytes)),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

//! Owns the smart-HTTP Git server: `git http-backend` run as CGI behind a small axum/hyper server on
//! loopback, optionally over TLS (a throwaway CA from rcgen) and behind HTTP basic auth.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use tokio::io::AsyncWriteExt;

use super::serve::LoopbackServer;
use super::{Error, GIT_HINT, Result, io_err, require_binary};

/// Credentials the server demands (HTTP basic auth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAuth {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Serve HTTPS with a certificate from a fresh [`TestCa`].
    pub tls: bool,
    /// Require these credentials; everything else gets 401.
    pub auth: Option<HttpAuth>,
}

/// A throwaway certificate authority and a server certificate for 127.0.0.1/localhost signed by it.
/// Clients trust it only through [`TestCa::bundle_path`], never through the system store.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
    server_cert_pem: String,
    server_key_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    /// What signs further certificates ([`TestCa::client_pem_files_named`]).
    ca_params: rcgen::CertificateParams,
    ca_key_pem: String,
}

impl TestCa {
    pub fn generate() -> Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let tls = |e: rcgen::Error| Error::Tls(e.to_string());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "reckon test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(tls)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params.clone(), ca_key);

        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(tls)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;

        // A client certificate from the same CA, for servers that authenticate clients by it.
        let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "reckon test client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        client_params.use_authority_key_identifier_extension = true;
        let client_key = KeyPair::generate().map_err(tls)?;
        let client_cert = client_params.signed_by(&client_key, &issuer).map_err(tls)?;

        let dir = tempfile::Builder::new()
            .prefix("reckon-ca-")
            .tempdir()
            .map_err(io_err(std::env::temp_dir()))?;
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, ca_cert.pem()).map_err(io_err(&bundle))?;
        Ok(Self {
            dir,
            server_cert: cert.der().clone(),
            server_key_der: key.serialize_der(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_params,
            ca_key_pem,
        })
    }

    /// A client certificate signed by this CA with the subject common name `common_name` and
    /// the DNS alternative names `dns`, and its key as PEM files: `(certificate, key)`.
    pub fn client_pem_files_named(
        &self,
        common_name: &str,
        dns: &[&str],
    ) -> Result<(PathBuf, PathBuf)> {
        use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
        let tls = |e: rcgen::Error| Error::Tls(e.to_string());
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(tls)?;
        let issuer = Issuer::new(self.ca_params.clone(), ca_key);
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .map_err(tls)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        let stem: String = common_name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let cert_path = self.dir.path().join(format!("client-{stem}.pem"));
        let key_path = self.dir.path().join(format!("client-{stem}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
        std::fs::write(&key_path, key.serialize_pem()).map_err(io_err(&key_path))?;
        Ok((cert_path, key_path))
    }

    /// A client certificate signed by this CA and its key as PEM files: `(certificate, key)`.
    pub fn client_pem_files(&self) -> Result<(PathBuf, PathBuf)> {
        let cert = self.dir.path().join("client.pem");
        let key = self.dir.path().join("client-key.pem");
        std::fs::write(&cert, &self.client_cert_pem).map_err(io_err(&cert))?;
        std::fs::write(&key, &self.client_key_pem).map_err(io_err(&key))?;
        Ok((cert, key))
    }

    /// The server certificate and its key as PEM files (for servers other than this module's,
    /// e.g. reckon's audit receiver): `(certificate, key)`.
    pub fn server_pem_files(&self) -> Result<(PathBuf, PathBuf)> {
        let cert = self.dir.path().join("server.pem");
        let key = self.dir.path().join("server-key.pem");
        std::fs::write(&cert, &self.server_cert_pem).map_err(io_err(&cert))?;
        std::fs::write(&key, &self.server_key_pem).map_err(io_err(&key))?;
        Ok((cert, key))
    }

    /// A PEM file holding only the CA certificate.
    pub fn bundle_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)
            .map_err(|e| Error::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

struct Cgi {
    project_root: PathBuf,
    auth: Option<HttpAuth>,
}

/// A running smart-HTTP server. It runs on its own thread and runtime so blocking tests (gix is
/// blocking) and async tests can both use it; drop stops it, and `kill_on_drop` on every CGI child
/// stops any `git http-backend` still running.
pub struct HttpGitServer {
    server: LoopbackServer,
    ca: Option<TestCa>,
}

impl HttpGitServer {
    /// Serves every repository under `project_root` at `http(s)://127.0.0.1:PORT/<name>`.
    pub fn start(project_root: &Path, options: HttpOptions) -> Result<Self> {
        require_binary("git", GIT_HINT)?;
        let ca = if options.tls {
            Some(TestCa::generate()?)
        } else {
            None
        };
        let acceptor = match &ca {
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                ca.server_config()?,
            ))),
            None => None,
        };
        let state = Arc::new(Cgi {
            project_root: project_root.to_path_buf(),
            auth: options.auth,
        });
        let router = axum::Router::new().fallback(cgi).with_state(state);
        let server = super::serve::serve_router("git-http", router, acceptor)?;
        Ok(Self { server, ca })
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `http://` or `https://` URL of `name` under the project root.
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.server.addr().port())
    }

    /// The CA bundle that verifies this server, when it serves TLS.
    pub fn ca_bundle(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(TestCa::bundle_path)
    }
}

fn unauthorized() -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"reckon-test\""),
    );
    resp
}

/// Whether `req` carries `expected` as HTTP basic auth.
pub(crate) fn basic_auth_matches(req: &Request, expected: &HttpAuth) -> bool {
    basic_auth_user(req, expected).is_some()
}

fn basic_auth_user(req: &Request, expected: &HttpAuth) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (user == expected.username && password == expected.password).then(|| user.to_string())
}

async fn cgi(State(cgi): State<Arc<Cgi>>, req: Request) -> Response {
    let remote_user = match &cgi.auth {
        Some(expected) => match basic_auth_user(&req, expected) {
            Some(user) => Some(user),
            None => return unauthorized(),
        },
        None => None,
    };
    match run_backend(&cgi, req, remote_user).await {
        Ok(resp) => resp,
        Err(msg) => (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response(),
    }
}

/// One CGI request: the request body is buffered (test repositories are small) so CONTENT_LENGTH is
/// exact, which http-backend relies on.
async fn run_backend(
    cgi: &Cgi,
    req: Request,
    remote_user: Option<String>,
) -> Result<Response, String> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 30)
        .await
        .map_err(|e| format!("reading request body: {e}"))?;
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &cgi.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", proto);
    }
    if let Some(user) = remote_user {
        cmd.env("REMOTE_USER", user);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawning git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    // Feed stdin concurrently with reading stdout: a large request and response could otherwise
    // deadlock on full pipes.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("waiting for git http-backend: {e}"))?;
    let _ = writer.await;
    parse_cgi_output(&out.stdout).ok_or_else(|| {
        format!(
            "malformed CGI output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn parse_cgi_output(out: &[u8]) -> Option<Response> {
    let (head_end, body_start) = find_header_end(out)?;
    let head = std::str::from_utf8(&out[..head_end]).ok()?;
    let mut builder = Response::builder().status(StatusCode::OK);
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.split_whitespace().next()?.parse().ok()?;
            builder = builder.status(code);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    builder.body(Body::from(out[body_start..].to_vec())).ok()
}

/// The end of the CGI header block: whichever blank line (CRLF or LF style) comes first, since the
/// body may contain either sequence.
fn find_header_end(out: &[u8]) -> Option<(usize, usize)> {
    let crlf = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

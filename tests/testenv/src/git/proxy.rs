//! Owns a forward HTTP proxy for tests: it tunnels `CONNECT host:port` (how clients reach https
//! remotes through a proxy) and records each tunnel's target, so a test can prove traffic really
//! went through it. Plain-http proxying (absolute-form requests) is not supported: 405.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::Result;
use super::serve::LoopbackServer;

/// A running proxy on loopback, on its own thread and runtime; stopped on drop.
pub struct HttpProxy {
    server: LoopbackServer,
    tunnels: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    pub fn start() -> Result<Self> {
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let seen = tunnels.clone();
        let server = LoopbackServer::start("proxy", move |stream| tunnel(stream, seen.clone()))?;
        Ok(Self { server, tunnels })
    }

    /// `http://127.0.0.1:PORT`, as HTTPS_PROXY wants it.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The `host:port` of every tunnel opened so far.
    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().expect("not poisoned").clone()
    }
}

async fn tunnel(stream: tokio::net::TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).await.is_err() {
        return;
    }
    // Skip the remaining request headers.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = reader
            .get_mut()
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_string();
    let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
        let _ = reader
            .get_mut()
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    };
    seen.lock().expect("not poisoned").push(target);
    let mut client = reader.into_inner();
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

//! Owns the in-process loopback servers of the Git harness (smart HTTP, CONNECT proxy): a
//! listener bound before `start` returns, an accept loop on a thread and runtime of its own (so
//! blocking tests, like gix's, and async tests can both use it), one task per connection, and a
//! shutdown that stops and joins it on drop.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};

use super::{Result, io_err};

/// A running loopback server; dropping it stops the accept loop, cancels in-flight connections
/// (dropping the runtime) and joins the thread.
pub struct LoopbackServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackServer {
    /// Binds 127.0.0.1 on a free port and serves every accepted connection with `handle`.
    pub fn start<F, Fut>(name: &str, handle: F) -> Result<Self>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Bound here, on the caller's thread, so the port is ours before start returns: no race.
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("127.0.0.1:0"))?;
        listener.set_nonblocking(true).map_err(io_err("listener"))?;
        let addr = listener.local_addr().map_err(io_err("listener"))?;
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("tokio runtime"))?;
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        let stream = tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => match accepted {
                                Ok((stream, _)) => stream,
                                Err(_) => continue,
                            },
                        };
                        tokio::spawn(handle(stream));
                    }
                });
                // Dropping the runtime cancels in-flight connections; child processes they
                // started (CGI) die through kill_on_drop.
                drop(runtime);
            })
            .map_err(io_err(format!("{name} server thread")))?;
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `router` on loopback over HTTP/1, through `tls` when given (each connection's
/// handshake first; a failed one drops the connection).
pub fn serve_router(
    name: &str,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<LoopbackServer> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    LoopbackServer::start(name, move |stream| {
        let service = TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        async move {
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        }
    })
}

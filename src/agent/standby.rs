//! Owns what a standby agent (`reckon run --lease`, not the holder) serves on `--listen`:
//! `/healthz` ok (the process is alive and waiting), `/readyz` 503 (Kubernetes routes API and
//! webhook traffic to the holder only), `/metrics`, and 503 for everything else. The store is
//! not open in standby (the holder may have it), so nothing here reads it.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use tokio::sync::oneshot;

/// A body every refused request gets, naming the Lease.
fn standby_message(lease: &str) -> String {
    format!("standby: another replica holds the Lease {lease}; this one writes nothing\n")
}

/// Serves the standby routes on `addr` until `done` fires; the returned task ends once the
/// listener is closed, so the holder's server can bind the same address.
pub async fn serve(
    addr: SocketAddr,
    lease: String,
    limits: crate::listen::ListenLimits,
    done: oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    let refused = standby_message(&lease);
    let ready = refused.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move { (StatusCode::SERVICE_UNAVAILABLE, ready) }),
        )
        .route(
            "/metrics",
            get(|| async {
                let text = tokio::task::spawn_blocking(|| crate::metrics::METRICS.encode(None))
                    .await
                    .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }),
        )
        .fallback(move || async move {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "error": {"code": "standby", "message": refused.trim_end()}
                })),
            )
                .into_response()
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "listening (standby)");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = done.await;
        };
        crate::listen::serve(listener, app, limits, shutdown).await;
    }))
}

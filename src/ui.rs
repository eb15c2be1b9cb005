//! Owns the web UI's HTTP side: the built front end (`ui/dist/`, committed and compiled into the
//! binary, so the agent serves it offline with no files beside it) under `/ui/`. Every path
//! under `/ui/` that is not an asset answers with the page itself, so a deep link
//! (`/ui/apps/shop/timeline?kind=drift`) loads the app, which then reads its own URL. The UI
//! talks to `/api/v1` with the token the user signs in with; this module serves no data.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the UI lives; the agent logs this URL at start.
pub const PATH: &str = "/ui/";

/// The built assets: (path under `/ui/`, media type, bytes). `scripts/build-ui.sh --check`
/// proves these files are what the sources build to.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../ui/dist/index.html"),
    ),
    (
        "assets/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/dist/assets/app.js"),
    ),
    (
        "assets/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/dist/assets/app.css"),
    ),
];

/// What the UI's routes can fail with.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("no UI asset {0}")]
    NoAsset(String),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        (StatusCode::NOT_FOUND, self.to_string()).into_response()
    }
}

/// The asset at `path` (relative to `/ui/`): a file, or the page for any other route that is not
/// under `assets/` (a missing asset is a 404, not a page that would then fail to parse as script).
pub fn asset(path: &str) -> Result<(&'static str, &'static [u8]), UiError> {
    if let Some((_, media, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
        return Ok((media, bytes));
    }
    if path.starts_with("assets/") {
        return Err(UiError::NoAsset(path.to_string()));
    }
    let (_, media, bytes) = ASSETS[0];
    Ok((media, bytes))
}

async fn serve(path: Option<axum::extract::Path<String>>) -> Result<Response, UiError> {
    let path = path.map(|p| p.0).unwrap_or_default();
    let (media, bytes) = asset(&path)?;
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    // Only this origin's script, style and API: a token in sessionStorage is worth as much as
    // the page is safe from injected script.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Asset names carry no hash: revalidate, so an upgraded agent never serves a stale script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `/ui` (redirected to `/ui/`), `/ui/` and everything under it.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent(PATH) }))
        .route("/ui/", get(|| serve(None)))
        .route(
            "/ui/{*path}",
            get(|p: axum::extract::Path<String>| serve(Some(p))),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_links_get_the_page_and_missing_assets_a_404() {
        let (media, page) = asset("apps/shop/timeline").unwrap();
        assert_eq!(media, "text/html; charset=utf-8");
        assert_eq!(page, asset("").unwrap().1);
        assert!(String::from_utf8_lossy(page).contains("assets/app.js"));
        assert_eq!(
            asset("assets/app.js").unwrap().0,
            "text/javascript; charset=utf-8"
        );
        assert!(matches!(asset("assets/nope.js"), Err(UiError::NoAsset(_))));
    }
}

//! Owns how the API reads a request: query parameters, path segments and JSON bodies, with every
//! refusal answered as the documented JSON error (`{"error": {"code", "message"}}`, status 400 or
//! 415) instead of axum's plain-text rejections, and the rules the OpenAPI document states for
//! all of them (no empty parameter, no unknown body field, a body only as JSON).

use super::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Query parameters as `T`. A parameter given with an empty value (`?cursor=`) is refused: no
/// parameter means anything when empty, and accepting it as "absent" would make `?app=` match
/// every App while it reads as "the App named nothing".
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let uri = &parts.uri;
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::BadRequest(query_message(&e.body_text())))?;
        if let Some((name, _)) = pairs.0.iter().find(|(_, v)| v.is_empty()) {
            return Err(ApiError::BadRequest(format!(
                "{name}: empty; leave the parameter out instead"
            )));
        }
        axum::extract::Query::<T>::try_from_uri(uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::BadRequest(query_message(&e.body_text())))
    }
}

/// axum's message without its "Failed to deserialize query string: " preamble: the rest names
/// the parameter and the cause (`limit: invalid digit found in string`).
fn query_message(text: &str) -> String {
    let rest = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    format!("query: {rest}")
}

/// Path segments as `T` (a segment that is not valid percent-encoded UTF-8 is refused).
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))
    }
}

/// An optional JSON body: `None` when the request has no body at all. A body must say
/// `Content-Type: application/json` (415 otherwise) and parse as `T`, whose type decides which
/// fields exist (the body types deny unknown fields); the message names the field that failed.
pub struct Body<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("request body: {}", e.body_text())))?;
        if bytes.is_empty() {
            return Ok(Body(None));
        }
        if json != Some(true) {
            return Err(ApiError::UnsupportedMediaType(
                "request body: expected Content-Type: application/json".into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            if at == "." {
                ApiError::BadRequest(format!("request body: {inner}"))
            } else {
                ApiError::BadRequest(format!("request body: {at}: {inner}"))
            }
        })?;
        // Trailing bytes after the object (`{} x`) are a malformed body, not ignored.
        de.end()
            .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
        Ok(Body(Some(value)))
    }
}

/// For `Option` fields of body types: absent is `None`, but an explicit `null` is refused like
/// any other value of the wrong type, so the body's schema (a string, an integer) is the whole
/// truth.
pub fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct B {
        #[serde(default, deserialize_with = "present")]
        to: Option<String>,
        #[serde(default, deserialize_with = "present")]
        steps: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Q {
        limit: Option<u32>,
        app: Option<String>,
    }

    async fn body(content_type: Option<&str>, body: &str) -> Result<Option<B>, ApiError> {
        let mut req = HttpRequest::post("/");
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let req = req.body(axum::body::Body::from(body.to_string())).unwrap();
        Body::<B>::from_request(req, &()).await.map(|b| b.0)
    }

    async fn query(uri: &str) -> Result<Q, ApiError> {
        let (mut parts, ()) = HttpRequest::get(uri).body(()).unwrap().into_parts();
        Query::<Q>::from_request_parts(&mut parts, &())
            .await
            .map(|q| q.0)
    }

    fn refused(r: Result<impl std::fmt::Debug, ApiError>) -> (&'static str, String) {
        let e = r.unwrap_err();
        (e.code(), e.to_string())
    }

    #[tokio::test]
    async fn bodies_are_json_of_known_fields_with_no_nulls() {
        let ok = body(Some("application/json"), r#"{"steps": 2}"#).await;
        assert_eq!(ok.unwrap().unwrap().steps, Some(2));
        assert!(body(None, "").await.unwrap().is_none(), "no body is None");
        let (code, msg) = refused(body(Some("application/json"), r#"{"steps": 1, "x": 1}"#).await);
        assert_eq!(code, "bad_request");
        assert!(msg.contains("unknown field `x`"), "{msg}");
        let (code, msg) = refused(body(Some("application/json"), r#"{"to": null}"#).await);
        assert_eq!(code, "bad_request");
        assert!(msg.contains("to: invalid type: null"), "{msg}");
        let (code, msg) = refused(body(Some("application/json"), r#"{"steps": 4294967296}"#).await);
        assert_eq!(code, "bad_request");
        assert!(msg.contains("steps:"), "{msg}");
        let (code, _) = refused(body(Some("application/json"), r#"{"steps": "1"}"#).await);
        assert_eq!(code, "bad_request");
        let (code, _) = refused(body(Some("application/json"), "\u{0}").await);
        assert_eq!(code, "bad_request");
        let (code, _) = refused(body(Some("application/json"), "{} x").await);
        assert_eq!(code, "bad_request");
        let (code, _) = refused(body(Some("text/plain"), r#"{"steps": 1}"#).await);
        assert_eq!(code, "unsupported_media_type");
        let (code, _) = refused(body(None, r#"{"steps": 1}"#).await);
        assert_eq!(code, "unsupported_media_type");
        let ok = body(Some("application/json; charset=utf-8"), r#"{"to": "abcd"}"#).await;
        assert_eq!(ok.unwrap().unwrap().to.as_deref(), Some("abcd"));
    }

    #[tokio::test]
    async fn queries_name_the_bad_parameter_and_refuse_empty_ones() {
        let q = query("/?limit=5&app=web").await.unwrap();
        assert_eq!((q.limit, q.app.as_deref()), (Some(5), Some("web")));
        let (code, msg) = refused(query("/?limit=x").await);
        assert_eq!(code, "bad_request");
        assert_eq!(msg, "query: limit: invalid digit found in string");
        let (code, msg) = refused(query("/?app=").await);
        assert_eq!(code, "bad_request");
        assert!(msg.starts_with("app: empty"), "{msg}");
        // An unknown parameter is ignored (a query string cannot declare its own shape).
        assert!(query("/?other=1").await.is_ok());
    }
}

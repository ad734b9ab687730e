//! The stylesheet and the script, compiled into the binary (`api-gateway/assets/`). Pages name
//! them with the gateway's version in the query string, so they may be cached for a day.

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Changes with every release: asset URLs carry it, so a new gateway's pages fetch new assets.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const CSS: &str = include_str!("../../assets/ui.css");
const JS: &str = include_str!("../../assets/ui.js");

/// A weak validator: the assets change only with the binary.
fn etag(body: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "\"{}\"",
        digest
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// `GET /static/<file>`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let (body, kind) = match file.as_str() {
        "ui.css" => (CSS, "text/css; charset=utf-8"),
        "ui.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let tag = etag(body);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == tag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (header::CACHE_CONTROL, "public, max-age=86400".to_owned()),
            (header::ETAG, tag),
        ],
        body,
    )
        .into_response()
}

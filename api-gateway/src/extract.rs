//! Request extractors whose failures are [`ApiError`]s, so that even a bad path or an oversized
//! body is answered in the API's own shapes.

use crate::error::ApiError;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The `{job_id}` path parameter, which must be a UUID (400 otherwise, as in Testflinger).
#[derive(Clone, Copy, Debug)]
pub struct JobId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Internal(format!("path parameters: {e}")))?;
        let raw = params
            .iter()
            .find_map(|(k, v)| (k == "job_id").then_some(v))
            .ok_or_else(|| ApiError::Internal("route has no {job_id}".into()))?;
        Uuid::parse_str(raw)
            .map(JobId)
            .map_err(|_| ApiError::BadRequest(format!("Invalid job id {raw:?}: not a UUID")))
    }
}

/// The raw request body, within the configured size limit (413 beyond it). Bodies are parsed
/// by the flows themselves, which name the bad fields.
#[derive(Clone, Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(format!("Cannot read the request body: {}", e.body_text()))
                }
            })
    }
}

/// A JSON body that must be an object: 400 when it is not JSON, 422 (`_schema`) when it is
/// JSON of another type, as Testflinger answers.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid_field("_schema", "Invalid input type.")),
        Err(e) => Err(ApiError::BadRequest(format!("Malformed JSON: {e}"))),
    }
}

//! The one place where errors become HTTP answers.
//!
//! Handlers and flows return typed errors ([`SubmitError`], [`CancelError`], store errors, the
//! scheduler's refusals of commands); the `From` impls below decide their status codes, and [`ApiError::into_response`] decides
//! the bodies: `{"message": …}`, or Testflinger's validation shape
//! `{"message": "Validation error", "detail": {"<location>": {field: [messages]}}}`.

use crate::cancel::CancelError;
use crate::scheduler::{Command, CommandError};
use crate::submit::SubmitError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use broker_schema::ValidationErrors;
use broker_schema::messages::RefusalCode;
use flinger_store::StoreError;
use serde_json::{Value, json};
use tracing::{error, warn};

/// Where a validation error was found, as Testflinger's clients read it (`detail.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The JSON body.
    Json,
    /// The query string.
    Query,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Json => "json",
            Location::Query => "query",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong in a way that is not a field's validation (bad id, bad JSON).
    #[error("{0}")]
    BadRequest(String),
    /// 422: fields failed validation; every one is named.
    #[error("validation error: {errors}")]
    Validation {
        location: Location,
        errors: ValidationErrors,
    },
    /// 204: Testflinger's answer for a job it does not know, on reads.
    #[error("no such job")]
    NoContent,
    /// 401: the caller must authenticate (or its token expired).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: an unknown agent, queue or path.
    #[error("{0}")]
    NotFound(String),
    /// 409: the job is not in a state that allows this (e.g. extending a job that is not reserving).
    #[error("{0}")]
    Conflict(String),
    /// 410: the resource exists but no longer answers this question (position of a started job).
    #[error("{0}")]
    Gone(String),
    /// 413: the body is larger than the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 429: the client is over one of its limits (see [`crate::limits`]); `Retry-After` says
    /// in how many seconds to try again.
    #[error("{reason}")]
    TooManyRequests { retry_after: u64, reason: String },
    /// 503: a dependency (store, broker, scheduler) did not answer; retrying may help.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a corrupt record.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming one field of the JSON body.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        let mut errors = ValidationErrors::default();
        errors.add(field, message);
        ApiError::invalid_fields(errors)
    }

    /// A 422 naming each bad field of the JSON body.
    pub fn invalid_fields(errors: ValidationErrors) -> ApiError {
        ApiError::Validation {
            location: Location::Json,
            errors,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoContent => StatusCode::NO_CONTENT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(msg) => error!(error = %msg, "request failed"),
            ApiError::Unavailable(msg) => warn!(error = %msg, "dependency unavailable"),
            _ => {}
        }
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let body: Value = match self {
            ApiError::NoContent => return status.into_response(),
            ApiError::Validation { location, errors } => json!({
                "message": "Validation error",
                "detail": { location.as_str(): errors.to_detail_json() },
            }),
            other => json!({ "message": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// The identity provider's failures: it did not answer (503: retrying may help), it lacks the
/// device flow (503: nothing a retry changes, but nothing the caller did wrong either), or what
/// it said is refused (401).
impl From<crate::auth::oidc::OidcError> for ApiError {
    fn from(e: crate::auth::oidc::OidcError) -> Self {
        use crate::auth::oidc::OidcError;
        match e {
            OidcError::Provider(_) | OidcError::Unsupported(_) => ApiError::Unavailable(e.to_string()),
            OidcError::Refused(reason) => ApiError::Unauthorized(format!("Sign-in refused: {reason}")),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            StoreError::Corrupt(_) | StoreError::Other(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::MalformedJson(_) | SubmitError::JobIdNotUuid(_) => {
                ApiError::BadRequest(e.to_string())
            }
            SubmitError::Invalid(errors) => ApiError::invalid_fields(errors),
            SubmitError::AllAgentsExcluded { .. } => ApiError::invalid_field("exclude_agents", e.to_string()),
            SubmitError::NoAgentServes { .. } => ApiError::invalid_field("job_queue", e.to_string()),
            SubmitError::NeedsLogin(msg) => ApiError::Unauthorized(msg),
            SubmitError::NotAllowed(msg) => ApiError::Forbidden(msg),
            SubmitError::Secrets(msg) => ApiError::invalid_field("test_data.secrets", msg),
            SubmitError::Store(s) => s.into(),
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::UnknownJob | CancelError::AlreadyEnded(_) => ApiError::BadRequest(e.to_string()),
            CancelError::NotOwner => ApiError::Forbidden(e.to_string()),
            CancelError::Scheduler(c) => c.into(),
            CancelError::Store(s) => s.into(),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused {
                command,
                code,
                reason,
            } => refused(command, code, reason),
            CommandError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            CommandError::Failed(_) => ApiError::Internal(e.to_string()),
        }
    }
}

/// Every refusal of the scheduler as an HTTP status: the only place that decides them.
fn refused(command: Command, code: RefusalCode, reason: String) -> ApiError {
    match (command, code) {
        (_, RefusalCode::Forbidden) => ApiError::Forbidden(reason),
        // Testflinger answers 400 for a job it cannot cancel, whatever the reason.
        (Command::Cancel, _) => ApiError::BadRequest(reason),
        // The deadline is the only part of an extension the scheduler judges (past, too long).
        (Command::Extend, RefusalCode::Invalid) => ApiError::invalid_field("by", reason),
        (_, RefusalCode::NotFound) => ApiError::NotFound(reason),
        (_, RefusalCode::Conflict) => ApiError::Conflict(reason),
        (_, RefusalCode::Invalid) => ApiError::BadRequest(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_of_each_command_has_one_status() {
        use Command::*;
        use RefusalCode::*;
        let table = [
            // Testflinger's cancel: 400 for a job it cannot cancel, 403 when not allowed.
            (Cancel, NotFound, 400),
            (Cancel, Conflict, 400),
            (Cancel, Invalid, 400),
            (Cancel, Forbidden, 403),
            (Extend, NotFound, 404),
            (Extend, Conflict, 409),
            (Extend, Invalid, 422),
            (Extend, Forbidden, 403),
            (SetAgentState, NotFound, 404),
            (SetAgentState, Conflict, 409),
            (SetAgentState, Invalid, 400),
            (SetAgentState, Forbidden, 403),
            (AttachmentsReady, NotFound, 404),
            (AttachmentsReady, Conflict, 409),
            (AttachmentsReady, Invalid, 400),
            (AttachmentsReady, Forbidden, 403),
        ];
        for (command, code, status) in table {
            let e = ApiError::from(CommandError::Refused {
                command,
                code,
                reason: "because".into(),
            });
            assert_eq!(e.status().as_u16(), status, "{command:?} refused {code:?}");
        }
        let ApiError::Validation { errors, .. } = refused(Extend, Invalid, "in the past".into()) else {
            panic!("an invalid extension names its field")
        };
        assert_eq!(errors.fields["by"], vec!["in the past".to_string()]);
    }
}

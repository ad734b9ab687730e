//! Attachments (uploaded by the submitter, read by the agent before its phases) and artifacts
//! (uploaded by the agent at the end of the run, read by the submitter): tar.gz archives
//! streamed straight into the store, never held in memory, refused with 413 beyond their size
//! limit.
//!
//! Uploads are `multipart/form-data` with the archive in the `file` field, as Testflinger's CLI
//! and agent send them; a raw body (any other content type) is taken as the archive itself.
//! A job submitted with attachments is not dispatched until they are stored: the upload then
//! asks the scheduler to release it.
//!
//! Agents come with a client of their own (role `agent`) or with the job-files token their lease
//! grant carried: that token moves only its own job's files, and only while the attempt it was
//! issued to runs.

use crate::auth::{Caller, access};
use crate::cancel::may_act_on;
use crate::error::ApiError;
use crate::extract::JobId;
use crate::scheduler;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use broker_schema::job_files::FilesOperation;
use broker_schema::messages::{AttachmentsReadyRequest, SchedulerRequest};
use flinger_store::{BlobError, BlobName, ByteStream};
use futures::TryStreamExt;
use tracing::info;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/job/{job_id}/attachments",
            get(get_attachments).post(post_attachments),
        )
        .route(
            "/v1/result/{job_id}/artifact",
            get(get_artifact).post(post_artifact),
        )
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { .. } => ApiError::PayloadTooLarge,
            BlobError::Source(e) => ApiError::BadRequest(format!("Cannot read the upload: {e}")),
            BlobError::Store(s) => s.into(),
        }
    }
}

/// The archive of an upload request: the `file` field of a multipart body, or the raw body.
async fn upload_stream(request: Request) -> Result<ByteStream, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().into_data_stream();
    if !content_type.starts_with("multipart/") {
        return Ok(Box::pin(body.map_err(std::io::Error::other)));
    }
    let boundary = multer::parse_boundary(&content_type)
        .map_err(|e| ApiError::BadRequest(format!("Bad multipart body: {e}")))?;
    let mut multipart = multer::Multipart::new(body, boundary);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                return Ok(Box::pin(field.map_err(std::io::Error::other)));
            }
            // Other fields are skipped (their bytes are read past).
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ApiError::invalid_field(
                    "file",
                    "Missing data for required field.",
                ));
            }
            Err(e) => return Err(ApiError::BadRequest(format!("Bad multipart body: {e}"))),
        }
    }
}

/// A stored archive as a streamed response; 204 when there is none.
async fn download(state: &AppState, name: &BlobName, filename: &str) -> Result<Response, ApiError> {
    let Some((info, stream)) = state.store().open_blob(name).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /v1/job/<id>/attachments`: 200 `OK` once stored and the job released; 403 when the
/// caller may not (below); 422 when the job is unknown or does not wait for attachments (any
/// more); 413 beyond the limit.
///
/// Its submitter, a manager or an admin may upload a job's attachments. So may anyone else let
/// in — Testflinger's CLI uploads without a token even for a job it submitted with one — but
/// only while the job waits for them (once released, its archive is final), and only when the
/// job could have been submitted anonymously: a job that uses its owner's secrets, priority,
/// long reservation or restricted queue takes attachments from its owner only, or a stranger
/// quick enough could run code of theirs with the owner's privileges. The owner's upload
/// repeated after a success is answered `OK` (a retry whose answer was lost).
#[utoipa::path(
    post,
    path = "/v1/job/{job_id}/attachments",
    tag = "jobs",
    summary = "Upload the job's attachments archive; the job is then dispatched",
    security(("bearer" = ["admin", "manager", "contributor"])),
    request_body(content((crate::openapi::Upload = "multipart/form-data"), (crate::openapi::Archive = "application/gzip"))),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
        (status = 409, body = flinger_api::Error),
        (status = 413, body = flinger_api::Error),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn post_attachments(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    request: Request,
) -> Result<&'static str, ApiError> {
    caller.require(access::SUBMITTER)?;
    let job = state
        .store()
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::invalid_field("job_id", format!("Job {id} is not valid")))?;
    let owner = job.submitted_by.is_some() && may_act_on(&caller, job.submitted_by.as_deref());
    if !owner
        && job.submitted_by.is_some()
        && !crate::submit::anonymous_could_submit(&state, &job.definition).await
    {
        return Err(ApiError::Forbidden(
            "This job uses its submitter's privileges (secrets, priority, a long reservation or \
             a restricted queue): only its submitter, a manager or an admin may upload its \
             attachments, with a token (flinger submit sends one)"
                .into(),
        ));
    }
    let name = BlobName::attachments(id);
    if !job.awaiting_attachments {
        if owner && job.definition.has_attachments() && state.store().blob_info(&name).await?.is_some() {
            return Ok("OK");
        }
        return Err(ApiError::invalid_field(
            "job_id",
            format!("Job {id} not awaiting attachments"),
        ));
    }
    let data = upload_stream(request).await?;
    let stored = state
        .store()
        .put_blob(&name, data, state.limits().max_attachment_bytes)
        .await?;
    info!(job_id = %id, bytes = stored.size, "attachments stored");
    let request = SchedulerRequest::AttachmentsReady(AttachmentsReadyRequest { job_id: id });
    scheduler::command(&state, &request).await?;
    Ok("OK")
}

/// Lets in an agent (role `agent`), or the holder of a files token for `op` on job `id` while
/// the attempt it names is running: a token outlives neither its lease nor its run.
async fn agent_for(state: &AppState, caller: &Caller, id: Uuid, op: FilesOperation) -> Result<(), ApiError> {
    let Some(claims) = caller.files_for(id, op)? else {
        return caller.require(access::AGENT);
    };
    match state.store().get_job(id).await? {
        Some(job) if job.attempt == claims.attempt && job.state.is_active() => Ok(()),
        _ => Err(ApiError::Forbidden(
            "This files token's run is over (the job ended or was given to another attempt)".into(),
        )),
    }
}

/// `GET /v1/job/<id>/attachments` (agents): the archive, or 204.
#[utoipa::path(
    get,
    path = "/v1/job/{job_id}/attachments",
    tag = "jobs",
    summary = "Download the job's attachments archive; 204 if none",
    security(("bearer" = ["agent"])),
    responses(
        (status = 200, body = crate::openapi::Archive, content_type = "application/gzip"),
        (status = 204),
    )
)]
async fn get_attachments(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    agent_for(&state, &caller, id, FilesOperation::ReadAttachments).await?;
    download(&state, &BlobName::attachments(id), "attachments.tar.gz").await
}

/// `POST /v1/result/<id>/artifact` (agents): 200 `OK`; 404 for an unknown job; 413 beyond the
/// limit.
#[utoipa::path(
    post,
    path = "/v1/result/{job_id}/artifact",
    tag = "results",
    summary = "Upload the job's artifacts archive",
    security(("bearer" = ["agent"])),
    request_body(content((crate::openapi::Upload = "multipart/form-data"), (crate::openapi::Archive = "application/gzip"))),
    responses(
        (status = 200, body = String, content_type = "text/plain"),
        (status = 404, body = flinger_api::Error),
        (status = 413, body = flinger_api::Error),
        (status = 422, body = flinger_api::ValidationError),
    )
)]
async fn post_artifact(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
    request: Request,
) -> Result<&'static str, ApiError> {
    agent_for(&state, &caller, id, FilesOperation::WriteArtifacts).await?;
    if state.store().get_job(id).await?.is_none() {
        return Err(ApiError::NotFound("Job not found".into()));
    }
    let data = upload_stream(request).await?;
    let stored = state
        .store()
        .put_blob(&BlobName::artifact(id), data, state.limits().max_artifact_bytes)
        .await?;
    info!(job_id = %id, bytes = stored.size, "artifact stored");
    Ok("OK")
}

/// `GET /v1/result/<id>/artifact`: the archive (`artifact.tar.gz`), or 204.
#[utoipa::path(
    get,
    path = "/v1/result/{job_id}/artifact",
    tag = "results",
    summary = "Download the job's artifacts archive; 204 if none",
    security(("bearer" = ["admin", "manager", "contributor"])),
    responses(
        (status = 200, body = crate::openapi::Archive, content_type = "application/gzip"),
        (status = 204),
    )
)]
async fn get_artifact(
    State(state): State<AppState>,
    caller: Caller,
    JobId(id): JobId,
) -> Result<Response, ApiError> {
    caller.require(access::SUBMITTER)?;
    download(&state, &BlobName::artifact(id), "artifact.tar.gz").await
}

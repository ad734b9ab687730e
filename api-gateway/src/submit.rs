//! `POST /v1/job`: from a request body to an accepted job.
//!
//! Accepted means durable: the job is in the store *before* it is published, and the answer is
//! 2xx only once it is stored. The order of the steps is the point of this module:
//!
//! 1. parse the body, check a given `job_id` is a UUID, validate the job file (every bad field),
//!    and its `job_status_webhook` against `--webhook-allow`;
//! 2. a `job_id` already stored is a resubmission: answer with it and do nothing else;
//! 3. check the caller may submit it: `job_priority` and a long reservation need a client's
//!    permission for the queue, a restricted queue needs its owner (401 anonymous, 403 not
//!    allowed), secrets need a logged-in client that has them;
//!    refuse a job whose `exclude_agents` leaves no known agent of its queue;
//! 4. store it `waiting` (never seen on the broker);
//! 5. publish the submission (`mandatory`, persistent, with confirms):
//!    - confirmed → accepted;
//!    - returned (no queue serves the class) → discard the record and refuse the job;
//!    - no confirm in time (broker down) → still accepted: the scheduler's sweeper publishes
//!      stored jobs never seen on the broker.

use crate::auth::Caller;
use crate::state::AppState;
use broker_schema::bus::{PublishError, PublishOptions};
use broker_schema::job::UNPRIVILEGED_MAX_RESERVE;
use broker_schema::messages::Submission;
use broker_schema::{DeviceClass, JobDefinition, Millis, ValidationErrors};
use flinger_store::{Inserted, JobRecord, Records, StoreError};
use serde_json::Value;
use std::collections::HashSet;
use tracing::{error, info, warn};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Malformed JSON: {0}")]
    MalformedJson(String),
    #[error("job_id {0:?} is not a UUID")]
    JobIdNotUuid(String),
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("Every agent serving queue '{queue}' is excluded")]
    AllAgentsExcluded { queue: DeviceClass },
    #[error("No agent serves queue '{queue}'")]
    NoAgentServes { queue: DeviceClass },
    /// 401: the job needs a logged-in client (priority, long reservation, restricted queue).
    #[error("{0}")]
    NeedsLogin(String),
    /// 403: the client's permissions do not allow it.
    #[error("{0}")]
    NotAllowed(String),
    /// 422 on `test_data.secrets`.
    #[error("{0}")]
    Secrets(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A request body that passed validation.
#[derive(Debug)]
pub struct SubmitRequest {
    /// The `job_id` the client chose (a resubmission), if any.
    pub job_id: Option<Uuid>,
    pub definition: JobDefinition,
}

impl SubmitRequest {
    /// Parses and validates a body. A `job_id` that is a string but not a UUID is a 400 (as in
    /// Testflinger), checked before the job file so it is reported alone.
    pub fn parse(body: &[u8]) -> Result<SubmitRequest, SubmitError> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| SubmitError::MalformedJson(e.to_string()))?;
        let job_id = match doc.get("job_id") {
            Some(Value::String(s)) => {
                Some(Uuid::parse_str(s).map_err(|_| SubmitError::JobIdNotUuid(s.clone()))?)
            }
            _ => None,
        };
        let definition = JobDefinition::parse(doc).map_err(SubmitError::Invalid)?;
        Ok(SubmitRequest { job_id, definition })
    }
}

/// Runs the whole flow and returns the accepted job's id.
pub async fn submit(state: &AppState, caller: &Caller, body: &[u8]) -> Result<Uuid, SubmitError> {
    let SubmitRequest {
        job_id: requested,
        definition,
    } = SubmitRequest::parse(body)?;
    check_webhook(state, &definition)?;
    let store = state.store();
    if let Some(id) = requested
        && store.get_job(id).await?.is_some()
    {
        info!(job_id = %id, "resubmission of a known job");
        return Ok(id);
    }
    check_permissions(state, caller, &definition).await?;
    check_secrets(state, caller, &definition).await?;
    check_exclusions(state, &definition).await?;

    let job_id = requested.unwrap_or_else(Uuid::new_v4);
    let now = Millis::now();
    let submitted_by = caller.client_id().map(str::to_owned);
    let record = JobRecord::new_waiting(job_id, definition.clone(), submitted_by.clone(), now);
    if let Inserted::Existing(_) = store.insert_job(&record).await? {
        // Another request with the same id won the race; it owns the publishing.
        info!(%job_id, "resubmission of a known job");
        return Ok(job_id);
    }
    let queue = definition.job_queue().clone();
    let counted = (queue.to_string(), definition.reserve_data().is_some());
    if record.awaiting_attachments {
        // Stored, not published: `POST /v1/job/<id>/attachments` stores them and asks the
        // scheduler to release the job.
        info!(%job_id, %queue, "job accepted; waiting for its attachments");
        crate::metrics::job_submitted(&counted.0, counted.1);
        return Ok(job_id);
    }

    let priority = definition.priority();
    let submission = Submission {
        job_id,
        job: definition,
        submitted_at: Some(now),
        submitted_by,
    };
    follow_webhook(state, &submission).await;
    let accepted = match publish(state, &submission).await {
        Ok(()) => {
            info!(%job_id, %queue, priority, "job accepted");
            Ok(job_id)
        }
        Err(PublishError::Unroutable { .. }) => match store.discard_job(job_id).await {
            Ok(true) => {
                info!(%job_id, %queue, "job refused: no agent serves its queue");
                Err(SubmitError::NoAgentServes { queue })
            }
            Ok(false) => {
                // Someone else (the sweeper) got it onto the broker meanwhile: it is alive.
                info!(%job_id, %queue, "job accepted (published by another producer)");
                Ok(job_id)
            }
            Err(e) => {
                // The record stays; the sweeper's publish will be returned too and the scheduler
                // ends the job as rejected, so nothing is left waiting forever.
                error!(%job_id, error = %e, "cannot discard an unroutable job");
                Err(SubmitError::NoAgentServes { queue })
            }
        },
        Err(e) => {
            warn!(%job_id, %queue, error = %e, "job stored but not confirmed by the broker; the sweeper will publish it");
            Ok(job_id)
        }
    };
    if accepted.is_ok() {
        crate::metrics::job_submitted(&counted.0, counted.1);
    }
    accepted
}

/// A webhook the gateways would not relay to (outside `--webhook-allow`) is refused now, naming
/// the field, rather than accepted and its events dropped later.
fn check_webhook(state: &AppState, job: &JobDefinition) -> Result<(), SubmitError> {
    match job.webhook() {
        Some(url) if !state.webhooks().allows(url) => {
            let mut errors = ValidationErrors::default();
            errors.add(
                "job_status_webhook",
                "Not an allowed webhook URL (the gateway's --webhook-allow).",
            );
            Err(SubmitError::Invalid(errors))
        }
        _ => Ok(()),
    }
}

/// Testflinger's rules: a non-zero priority needs the client's `max_priority` for the queue (or
/// `*`); a reservation longer than 6 h needs its `max_reservation_time`; a restricted queue needs
/// the client among its owners (admins may use any queue). Anonymous callers get 401, clients
/// without the permission 403.
/// Whether a caller without a token could have submitted `job` (no secrets, no priority, no
/// long reservation, no restricted queue): then a stranger's attachments gain it nothing an
/// anonymous submission would not have had. Store errors count as "no".
pub async fn anonymous_could_submit(state: &AppState, job: &JobDefinition) -> bool {
    let anonymous = Caller::anonymous(state.auth());
    job.secrets().is_empty() && check_permissions(state, &anonymous, job).await.is_ok()
}

async fn check_permissions(
    state: &AppState,
    caller: &Caller,
    job: &JobDefinition,
) -> Result<(), SubmitError> {
    let queue = job.job_queue().as_str();
    let priority = job.priority();
    if priority > 0 {
        let Some(p) = &caller.permissions else {
            return Err(SubmitError::NeedsLogin(format!(
                "Authentication required for setting priority: {priority}"
            )));
        };
        if priority > p.max_priority_for(queue) {
            return Err(SubmitError::NotAllowed(format!(
                "Not enough permissions to push to {queue} with priority {priority}"
            )));
        }
    }
    if let Some(reserve) = job.reserve_timeout()
        && reserve > UNPRIVILEGED_MAX_RESERVE
    {
        let secs = reserve.as_secs();
        let Some(p) = &caller.permissions else {
            return Err(SubmitError::NeedsLogin(format!(
                "Authentication required for setting timeout: {secs}"
            )));
        };
        if secs > p.max_reservation_for(queue) {
            return Err(SubmitError::NotAllowed(format!(
                "Not enough permissions to push to {queue} with reservation timeout {secs}"
            )));
        }
    }
    if let Some(restricted) = state.store().get_restricted_queue(queue).await? {
        match caller.client_id() {
            None => {
                return Err(SubmitError::NeedsLogin(format!(
                    "Authentication required to push to restricted queue: {queue}"
                )));
            }
            Some(id) if restricted.owners.contains(id) || caller.role() == flinger_store::Role::Admin => {}
            Some(_) => {
                return Err(SubmitError::NotAllowed(format!(
                    "Not enough permissions to push to the restricted queue: {queue}"
                )));
            }
        }
    }
    Ok(())
}

/// A job naming secrets must come from a logged-in client that has every one of them (they
/// are resolved from that client's secrets when the job is leased).
async fn check_secrets(state: &AppState, caller: &Caller, job: &JobDefinition) -> Result<(), SubmitError> {
    let secrets = job.secrets();
    if secrets.is_empty() {
        return Ok(());
    }
    let Some(client) = caller.client_id() else {
        return Err(SubmitError::Secrets(
            "Missing client ID (user not authenticated)".into(),
        ));
    };
    let now = Millis::now();
    let mut missing = std::collections::BTreeSet::new();
    for path in secrets.values() {
        if state.store().get_secret(client, path, now).await?.is_none() {
            missing.insert(path.as_str());
        }
    }
    if !missing.is_empty() {
        return Err(SubmitError::Secrets(format!(
            "Inaccessible secret paths: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// Refuses a job when its queue has known agents and it excludes every one of them.
async fn check_exclusions(state: &AppState, definition: &JobDefinition) -> Result<(), SubmitError> {
    if definition.exclude_agents().is_empty() {
        return Ok(());
    }
    let excluded: HashSet<&str> = definition.exclude_agents().iter().map(String::as_str).collect();
    let queue = definition.job_queue();
    let agents = state.store().list_agents().await?;
    let mut serving = agents.iter().filter(|a| a.queues.contains(queue)).peekable();
    if serving.peek().is_some() && serving.all(|a| excluded.contains(a.name.as_str())) {
        return Err(SubmitError::AllAgentsExcluded { queue: queue.clone() });
    }
    Ok(())
}

/// Routes the job's status events to the gateways before its first one can happen, when it has
/// a webhook (the scheduler does it too, before it grants the lease: this covers the moments
/// before). Bounded by the publish timeout; a failure only costs the webhook early events.
async fn follow_webhook(state: &AppState, submission: &Submission) {
    if submission.job.webhook().is_none() {
        return;
    }
    let limit = state.timeouts().publish;
    broker_schema::topology::route_job_events(state.bus(), &submission.job_id, true, limit).await;
}

/// Publishes a submission and waits for the broker's verdict, at most the publish timeout
/// (the bus reconnects forever, so the limit has to be put around the whole attempt).
async fn publish(state: &AppState, submission: &Submission) -> Result<(), PublishError> {
    let limit = state.timeouts().publish;
    let opts = PublishOptions {
        mandatory: true,
        priority: Some(Submission::amqp_priority(submission.job.priority())),
        message_id: Some(submission.job_id.to_string()),
        // Proves to the scheduler that its `submitted_by` comes from the gateway.
        user_id: state.publisher().bus().user(),
        ..Default::default()
    };
    let exchange = state.names().jobs_exchange();
    let routing_key = submission.job.job_queue().as_str();
    let send = state
        .publisher()
        .send(&exchange, routing_key, submission, &opts, Some(limit));
    tokio::time::timeout(limit, send)
        .await
        .unwrap_or(Err(PublishError::TimedOut(limit)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<SubmitRequest, SubmitError> {
        SubmitRequest::parse(body.as_bytes())
    }

    #[test]
    fn malformed_json_is_not_a_validation_error() {
        assert!(matches!(parse("{"), Err(SubmitError::MalformedJson(_))));
    }

    #[test]
    fn a_job_id_must_be_a_uuid() {
        assert!(matches!(
            parse(r#"{"job_queue": "q", "job_id": "nope"}"#),
            Err(SubmitError::JobIdNotUuid(_))
        ));
        let id = Uuid::new_v4();
        let r = parse(&format!(r#"{{"job_queue": "q", "job_id": "{id}"}}"#)).unwrap();
        assert_eq!(r.job_id, Some(id));
    }

    #[test]
    fn invalid_jobs_name_their_fields() {
        let Err(SubmitError::Invalid(e)) = parse(r#"{"bogus": 1}"#) else {
            panic!("expected a validation error")
        };
        assert!(e.fields.contains_key("bogus"));
        assert!(e.fields.contains_key("job_queue"));
    }
}

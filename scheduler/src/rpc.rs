//! Serves requests to the scheduler (leases, renewals, commands) and replies by direct reply-to.

use crate::commands;
use crate::core::{Core, Deferred};
use crate::delivery::Disposition;
use crate::lease;
use crate::store::StoreError;
use broker_schema::messages::{SchedulerReply, SchedulerRequest};
use broker_schema::{DecodeError, decode};

/// Handles one request. The reply is `None` when the request should be retried later (the
/// store is unavailable): it is requeued, and the caller retries on timeout anyway. The
/// deferred effects, if any, are for after the reply.
pub async fn handle(core: &Core, body: &[u8]) -> (Option<SchedulerReply>, Disposition, Option<Deferred>) {
    let req = match decode::<SchedulerRequest>(body) {
        Ok(r) => r,
        Err(e) => {
            let (reply, disposition) = malformed(e);
            return (reply, disposition, None);
        }
    };
    let mut deferred = None;
    let reply = match &req {
        SchedulerRequest::Lease(r) => lease::lease(core, r).await.map(|(reply, later)| {
            deferred = later;
            SchedulerReply::Lease(reply)
        }),
        SchedulerRequest::Renew(r) => lease::renew(core, r).await.map(SchedulerReply::Renew),
        SchedulerRequest::Cancel(r) => commands::cancel(core, r).await.map(SchedulerReply::Command),
        SchedulerRequest::Extend(r) => commands::extend(core, r).await.map(SchedulerReply::Command),
        SchedulerRequest::SetAgentState(r) => commands::set_agent_state(core, r)
            .await
            .map(SchedulerReply::Command),
        SchedulerRequest::AttachmentsReady(r) => commands::attachments_ready(core, r)
            .await
            .map(SchedulerReply::Command),
        SchedulerRequest::RestrictedQueues(r) => crate::restricted::restricted_queues(core, r)
            .await
            .map(|restricted| SchedulerReply::RestrictedQueues { restricted }),
    };
    match reply {
        Ok(reply) => (Some(reply), Disposition::Ack, deferred),
        Err(e @ StoreError::Unavailable(_)) => {
            tracing::warn!(error = %e, "store unavailable; request requeued");
            (None, Disposition::Retry, None)
        }
        Err(e) => (
            Some(SchedulerReply::Error {
                reason: e.to_string(),
            }),
            Disposition::Ack,
            None,
        ),
    }
}

fn malformed(e: DecodeError) -> (Option<SchedulerReply>, Disposition) {
    let reason = format!("malformed scheduler request: {e}");
    (
        Some(SchedulerReply::Error {
            reason: reason.clone(),
        }),
        Disposition::Dead(reason),
    )
}

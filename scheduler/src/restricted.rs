//! Which of an agent's queues are restricted: an agent serving a restricted queue takes jobs only
//! from its restricted queues (Testflinger's rule: a device lent to a team serves that team
//! alone). Agents ask when they start and every little while after; the answer is read from the
//! store, where the gateway keeps restricted queues and their owners.
//!
//! A read: it never changes a job or an agent.

use crate::core::Core;
use crate::store::{Records, StoreResult};
use broker_schema::DeviceClass;
use broker_schema::messages::RestrictedQueuesRequest;

/// Of the queues asked about, those with at least one owner (a queue whose last owner was
/// removed is no longer restricted).
pub async fn restricted_queues(core: &Core, req: &RestrictedQueuesRequest) -> StoreResult<Vec<DeviceClass>> {
    let mut restricted = vec![];
    for queue in &req.queues {
        if let Some(r) = core.store().get_restricted_queue(queue.as_str()).await?
            && !r.owners.is_empty()
        {
            restricted.push(queue.clone());
        }
    }
    Ok(restricted)
}

//! Who a submission belongs to.
//!
//! A job's submitter decides whose secrets it may use and who may cancel or extend it, so it
//! must not be whatever a producer writes into `submitted_by`. RabbitMQ verifies a message's
//! `user_id` property against the publishing connection's user, which makes it the one fact
//! about a producer we can trust:
//! - a **trusted publisher** (the lab's gateways and schedulers: this scheduler's own broker
//!   user and those named by `--trusted-publisher`) vouches for the `submitted_by` it writes;
//! - any other RabbitMQ user *is* the client: its jobs belong to the client of that name, and a
//!   `submitted_by` naming someone else is refused;
//! - without `user_id` nothing is proven: the job is anonymous, and a `submitted_by` is refused.

use crate::core::Core;

/// The job's submitter, or why the submission is refused.
pub fn submitter(
    core: &Core,
    published_by: Option<&str>,
    claimed: Option<&str>,
) -> Result<Option<String>, String> {
    match (published_by, claimed) {
        (Some(user), claimed) if is_trusted(core, user) => Ok(claimed.map(str::to_owned)),
        (Some(user), None) => Ok(Some(user.to_owned())),
        (Some(user), Some(claimed)) if claimed == user => Ok(Some(user.to_owned())),
        (Some(user), Some(claimed)) => Err(format!(
            "submitted_by '{claimed}' is not the RabbitMQ user '{user}' that published the job"
        )),
        (None, None) => Ok(None),
        (None, Some(claimed)) => Err(format!(
            "submitted_by '{claimed}' needs the message's user_id property (RabbitMQ checks it \
             against the publishing user)"
        )),
    }
}

fn is_trusted(core: &Core, user: &str) -> bool {
    core.config.trusted_publishers.iter().any(|t| t == user)
        || core.publisher.bus().user().as_deref() == Some(user)
}

use crate::codec::Message;
use crate::job::JobDefinition;
use crate::timestamp::Millis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job submitted to a device class: published on the jobs exchange with routing key
/// `job.job_queue`, by the gateway or by any other producer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Chosen by the producer (a random UUID); submissions are idempotent by it.
    pub job_id: Uuid,
    /// The Testflinger job file.
    pub job: JobDefinition,
    /// When the producer accepted the job; the scheduler's receipt time when absent.
    #[serde(default)]
    pub submitted_at: Option<Millis>,
    /// The authenticated client that submitted it, when known.
    #[serde(default)]
    pub submitted_by: Option<String>,
}

impl Message for Submission {
    const KIND: &'static str = "submission";
}

/// AMQP priority levels on class queues (`x-max-priority`).
pub const PRIORITY_LEVELS: u8 = 10;

impl Submission {
    /// Maps `job_priority` (0 … 2³²) onto the queue's ten AMQP levels, logarithmically:
    /// 0 → 0, 1 → 1, 2–3 → 2, 4–7 → 3, …, 256 and above → 9. Within a level jobs keep their
    /// arrival order. The store keeps the exact priority, so the API's queue position is exact.
    pub fn amqp_priority(job_priority: u32) -> u8 {
        if job_priority == 0 {
            return 0;
        }
        let level = 32 - job_priority.leading_zeros(); // 1 + floor(log2(p))
        level.min(u32::from(PRIORITY_LEVELS - 1)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_levels_are_logarithmic_and_capped() {
        assert_eq!(Submission::amqp_priority(0), 0);
        assert_eq!(Submission::amqp_priority(1), 1);
        assert_eq!(Submission::amqp_priority(3), 2);
        assert_eq!(Submission::amqp_priority(4), 3);
        assert_eq!(Submission::amqp_priority(255), 8);
        assert_eq!(Submission::amqp_priority(256), 9);
        assert_eq!(Submission::amqp_priority(u32::MAX), 9);
    }
}

//! The lab's cap on a job's output: the most bytes of each stream (output, serial) one run may
//! ship, for every queue or for one queue. The lease grant carries it to the agent, which stops
//! shipping past it, says so in the output and reports what it dropped; without a setting here
//! the agent's own cap applies (256 MiB per stream by default).

use std::collections::BTreeMap;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputCap {
    /// For every queue without a cap of its own; `None`: the agent's.
    pub lab: Option<u64>,
    /// Queues with a cap of their own, in bytes.
    pub per_queue: BTreeMap<String, u64>,
}

impl OutputCap {
    /// The cap a job of `queue` runs under, if the lab sets one.
    pub fn for_queue(&self, queue: &str) -> Option<u64> {
        self.per_queue.get(queue).copied().or(self.lab)
    }

    /// Parses a cap in MiB (fractions allowed: `0.0625` is 64 KiB).
    pub fn mib(mib: f64) -> Result<u64, String> {
        if !mib.is_finite() || mib <= 0.0 {
            return Err(format!("an output cap is a positive number of MiB, not {mib}"));
        }
        Ok((mib * MIB).round().max(1.0) as u64)
    }

    /// Parses `QUEUE=MIB`.
    pub fn queue_override(s: &str) -> Result<(String, u64), String> {
        let (queue, mib) = s
            .split_once('=')
            .ok_or_else(|| format!("expected QUEUE=MIB, not {s:?}"))?;
        if queue.trim().is_empty() {
            return Err(format!("expected QUEUE=MIB, not {s:?}"));
        }
        let mib: f64 = mib
            .trim()
            .parse()
            .map_err(|_| format!("{queue}: the cap must be a number of MiB, not {mib:?}"))?;
        Ok((queue.trim().to_owned(), Self::mib(mib)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_cap_wins_over_the_lab_cap() {
        let cap = OutputCap {
            lab: Some(OutputCap::mib(256.0).unwrap()),
            per_queue: BTreeMap::from([OutputCap::queue_override("chatty=0.0625").unwrap()]),
        };
        assert_eq!(cap.for_queue("chatty"), Some(64 * 1024));
        assert_eq!(cap.for_queue("other"), Some(256 * 1024 * 1024));
        assert_eq!(OutputCap::default().for_queue("chatty"), None);
        assert!(OutputCap::queue_override("chatty").is_err());
        assert!(OutputCap::mib(0.0).is_err());
    }
}

//! Wall-clock instants as they travel on the wire and sit in the store.
//!
//! Milliseconds since the Unix epoch (UTC) in an `i64`: compact in MessagePack, trivially
//! comparable in SQLite and MongoDB queries, and unambiguous for producers in other languages.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use time::OffsetDateTime;

/// An instant, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Millis((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn plus(self, d: Duration) -> Self {
        Millis(self.0.saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
    }

    pub fn minus(self, d: Duration) -> Self {
        Millis(self.0.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn to_offset_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// ISO-8601 in UTC with a `Z`, as Testflinger's API writes datetimes.
    pub fn to_rfc3339(self) -> String {
        let t = self.to_offset_datetime();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// Parses ISO-8601 / RFC 3339 (`2024-01-02T03:04:05Z`, with or without fraction or offset).
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_a_z() {
        let t = Millis(1_700_000_000_123);
        let s = t.to_rfc3339();
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(Millis::parse_rfc3339(&s), Some(t));
    }
}

//! Durations as people write them in connector YAML and job files.
//!
//! A string is a human duration: `250ms`, `10s`, `2m`, `1h30m`, `4d` (the `d h m s` forms are
//! `broker_schema::job::parse_human_duration`'s, plus `ms`). A bare number has a unit that
//! depends on the key, because Testflinger-style settings count seconds while the fake
//! connector's timings are short: each deserializer below says which unit it uses.

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;
use std::time::Duration;

/// The unit of a bare number.
#[derive(Clone, Copy)]
enum Unit {
    Seconds,
    Millis,
}

impl Unit {
    fn of(self, n: f64) -> Option<Duration> {
        let secs = match self {
            Unit::Seconds => n,
            Unit::Millis => n / 1000.0,
        };
        Duration::try_from_secs_f64(secs).ok()
    }

    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Millis => "milliseconds",
        }
    }
}

/// Parses a human duration string; a string of digits alone counts in `unit`.
fn parse_str(s: &str, unit: Unit) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return unit.of(n as f64);
    }
    if let Some(ms) = s.strip_suffix("ms")
        && let Ok(n) = ms.trim().parse::<u64>()
    {
        return Some(Duration::from_millis(n));
    }
    broker_schema::job::parse_human_duration(s)
}

struct DurationVisitor(Unit);

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a duration: a number of {} or a string like \"250ms\", \"10s\", \"1h30m\"",
            self.0.name()
        )
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        self.visit_f64(n as f64)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        self.visit_f64(n as f64)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Duration, E> {
        self.0
            .of(n)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Float(n), &self))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        parse_str(s, self.0).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
    }
}

/// A duration whose bare numbers are seconds (`kill_grace: 10`).
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Seconds))
}

/// An optional duration whose bare numbers are milliseconds (`duration: 250`).
pub(crate) fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Millis)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_carry_their_unit_and_bare_numbers_use_the_keys_unit() {
        assert_eq!(
            parse_str("250ms", Unit::Seconds),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_str("1m30s", Unit::Millis), Some(Duration::from_secs(90)));
        assert_eq!(parse_str("10", Unit::Seconds), Some(Duration::from_secs(10)));
        assert_eq!(parse_str("10", Unit::Millis), Some(Duration::from_millis(10)));
        assert_eq!(parse_str("soon", Unit::Seconds), None);
        assert_eq!(Unit::Seconds.of(-1.0), None);
    }
}

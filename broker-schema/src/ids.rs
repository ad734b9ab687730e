//! Names that end up inside AMQP queue names and routing keys, so they can only be built valid.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may only contain letters, digits and {allowed:?} (found {found:?})")]
    BadChar { found: char, allowed: &'static str },
}

fn check(s: &str, max: usize, extra: &'static str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.chars().count() > max {
        return Err(NameError::TooLong { max });
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        return Err(NameError::BadChar {
            found: c,
            allowed: extra,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check(&s, $max, $extra)?;
                Ok($name(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    };
}

name_type!(
    /// A device class, i.e. a Testflinger `job_queue` (`rpi4b`, `maas-x86-node`). It becomes a
    /// routing key and part of a queue name, so AMQP wildcards (`*`, `#`) and spaces are refused.
    DeviceClass, 200, "-_.:"
);

name_type!(
    /// An agent's name. It becomes a routing-key word (`agent.<name>.heartbeat`), so dots are
    /// refused as well.
    AgentName, 200, "-_:"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_class_refuses_amqp_wildcards_and_empty() {
        assert!(DeviceClass::parse("rpi4b").is_ok());
        assert!(DeviceClass::parse("maas-x86.node_2").is_ok());
        assert_eq!(DeviceClass::parse(""), Err(NameError::Empty));
        assert!(matches!(
            DeviceClass::parse("a*b"),
            Err(NameError::BadChar { found: '*', .. })
        ));
        assert!(matches!(
            DeviceClass::parse("a b"),
            Err(NameError::BadChar { found: ' ', .. })
        ));
    }

    #[test]
    fn agent_name_refuses_dots() {
        assert!(AgentName::parse("dut-01").is_ok());
        assert!(AgentName::parse("dut.01").is_err());
    }
}

//! The job file's shape, declared once: Testflinger's job schema as Rust types.
//!
//! What each field accepts is said by its type (a [`Seconds`] is a whole number of seconds, 1 or
//! more, written as a number or a string of digits, as marshmallow's `Integer` reads it) and by
//! serde's attributes (`deny_unknown_fields` at the top level, where Testflinger refuses unknown
//! keys too; the phases' mappings are the device connectors' and keep any key). The gateway,
//! the scheduler and the agent read a job through it ([`super::JobDefinition::parse`]), the
//! OpenAPI document shows it (feature `openapi`), and the CLI writes its reserve jobs with it.

use super::checked::{MISSING, NOT_BOOL, NOT_INTEGER, about_member};
use super::{is_env_name, is_secret_path, parse_human_duration};
use crate::ids::DeviceClass;
use serde::de::{Deserializer, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A job file, as submitted (Testflinger's `Job` schema). Unknown top-level keys are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Given by a client that wants an idempotent submission: a known id is a resubmission.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(format = Uuid))]
    pub job_id: Option<String>,
    /// The device class (queue): letters, digits, `-_.:`.
    #[serde(deserialize_with = "queue_name")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, min_length = 1))]
    pub job_queue: DeviceClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Higher first; 0 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u32>))]
    pub job_priority: Option<Priority>,
    /// Seconds; 14400 (4 h) by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    pub global_timeout: Option<Seconds>,
    /// Seconds of silence allowed in the test phase; 900 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    pub output_timeout: Option<Seconds>,
    /// Seconds a multi-device job waits for its devices; 7200 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 1))]
    pub allocation_timeout: Option<Seconds>,
    /// Agents that must not run the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_agents: Option<Vec<String>>,
    /// An http(s) URL that receives the job's events (HTTP PUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub job_status_webhook: Option<Webhook>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provision_data: Option<PhaseData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_update_data: Option<FirmwareUpdateData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<TestData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocate_data: Option<AllocateData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_data: Option<ReserveData>,
    /// A multi-device child's parent job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub parent_job_id: Option<JobRef>,
    /// Testflinger's flag for device connectors; marshmallow's spellings (`"yes"`, `0`…) are
    /// read as a boolean.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bool>))]
    pub debug: Option<BoolLike>,
}

impl JobFile {
    /// A job file with only its queue.
    pub fn for_queue(job_queue: DeviceClass) -> JobFile {
        JobFile {
            job_id: None,
            job_queue,
            name: None,
            tags: None,
            job_priority: None,
            global_timeout: None,
            output_timeout: None,
            allocation_timeout: None,
            exclude_agents: None,
            job_status_webhook: None,
            provision_data: None,
            firmware_update_data: None,
            test_data: None,
            allocate_data: None,
            reserve_data: None,
            parent_job_id: None,
            debug: None,
        }
    }
}

/// `provision_data`: the device connector's (`url`, `distro`, `skip`…), with attachments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhaseData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    /// The device connector's own keys, kept as given.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub connector: BTreeMap<String, Value>,
}

/// `firmware_update_data`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FirmwareUpdateData {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub version: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub ignore_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub connector: BTreeMap<String, Value>,
}

/// `test_data`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestData {
    /// The test script: a string, or a list of lines (Testflinger's server wrongly refuses a
    /// list; Flinger takes both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_cmds: Option<TestCmds>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_password: Option<String>,
    /// Environment variable → secret path (the submitter's write-only secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<BTreeMap<String, String>>))]
    pub secrets: Option<BTreeMap<EnvName, SecretPath>>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub connector: BTreeMap<String, Value>,
}

/// `allocate_data`: `allocate: true` for a multi-device child.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AllocateData {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub allocate: Option<bool>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub connector: BTreeMap<String, Value>,
}

/// `reserve_data`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReserveData {
    /// Public keys, or `lp:<user>` / `gh:<user>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_keys: Option<Vec<String>>,
    /// How long the device is held: seconds, or a form like `2h30m`; 3600 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<ReserveTimeout>,
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub connector: BTreeMap<String, Value>,
}

/// A file uploaded with the job: Testflinger's CLI packs `local` and submits `agent`, its path in
/// the archive; `device` is where a connector puts it. One of `local` or `agent` is needed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "AttachmentFields")]
pub struct Attachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Deserialize)]
struct AttachmentFields {
    #[serde(default, deserialize_with = "present")]
    local: Option<String>,
    #[serde(default, deserialize_with = "present")]
    agent: Option<String>,
    #[serde(default, deserialize_with = "present")]
    device: Option<String>,
}

impl TryFrom<AttachmentFields> for Attachment {
    type Error = String;
    fn try_from(a: AttachmentFields) -> Result<Attachment, String> {
        if a.local.is_none() && a.agent.is_none() {
            return Err(about_member("agent", MISSING));
        }
        Ok(Attachment {
            local: a.local,
            agent: a.agent,
            device: a.device,
        })
    }
}

/// A whole number of seconds, 1 or more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub u64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        seconds(&Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

fn seconds(v: &Value) -> Result<Seconds, &'static str> {
    match as_integer(v) {
        Some(n) if n >= 1 => Ok(Seconds(n as u64)),
        Some(_) => Err("Must be greater than or equal to 1."),
        None => Err(NOT_INTEGER),
    }
}

/// `job_priority`: 0 to 2³² − 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Priority(pub u32);

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        match as_integer(&Value::deserialize(d)?) {
            Some(p) if p < 0 => Err(D::Error::custom("Must be greater than or equal to 0.")),
            Some(p) => u32::try_from(p)
                .map(Priority)
                .map_err(|_| D::Error::custom(format!("Must be less than or equal to {}.", u32::MAX))),
            None => Err(D::Error::custom(NOT_INTEGER)),
        }
    }
}

/// `reserve_data.timeout`: seconds, or a duration such as `2h30m` or `4d`; not zero.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ReserveTimeout {
    #[serde(skip)]
    pub duration: Duration,
    /// As written: it is written back so.
    written: Value,
}

impl<'de> Deserialize<'de> for ReserveTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ReserveTimeout, D::Error> {
        let written = Value::deserialize(d)?;
        let duration = match &written {
            Value::String(s) => match parse_human_duration(s) {
                Some(d) if !d.is_zero() => d,
                _ => {
                    return Err(D::Error::custom(
                        "Not a valid duration: use seconds or a form like 2h30m or 4d.",
                    ));
                }
            },
            v => seconds(v).map_err(D::Error::custom)?.duration(),
        };
        Ok(ReserveTimeout { duration, written })
    }
}

impl ReserveTimeout {
    /// A timeout as a person writes it: seconds (kept a number), or a form like `2h30m` (kept
    /// as written); `None` if it is neither, or zero.
    pub fn parse(text: &str) -> Option<ReserveTimeout> {
        let t = text.trim();
        let written = match t.parse::<u64>() {
            Ok(secs) => Value::from(secs),
            Err(_) => Value::from(t),
        };
        let duration = parse_human_duration(t).filter(|d| !d.is_zero())?;
        Some(ReserveTimeout { duration, written })
    }
}

impl From<Duration> for ReserveTimeout {
    fn from(duration: Duration) -> ReserveTimeout {
        ReserveTimeout {
            duration,
            written: Value::from(duration.as_secs()),
        }
    }
}

/// `test_data.test_cmds`: a script, or a list of lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TestCmds {
    Script(String),
    Lines(Vec<String>),
}

impl TestCmds {
    /// One shell script (a list is joined by newlines).
    pub fn script(&self) -> String {
        match self {
            TestCmds::Script(s) => s.clone(),
            TestCmds::Lines(lines) => lines.join("\n"),
        }
    }
}

impl<'de> Deserialize<'de> for TestCmds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TestCmds, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(TestCmds::Script(s)),
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(TestCmds::Lines(
                items
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            )),
            _ => Err(D::Error::custom("Must be a string or a list of strings.")),
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for TestCmds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for TestCmds {}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ReserveTimeout {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(Some("Seconds, or a duration such as `2h30m` or `4d`."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ReserveTimeout {}

/// A boolean as marshmallow's `Boolean` reads one (see [`super::bool_like`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoolLike(pub bool);

impl<'de> Deserialize<'de> for BoolLike {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BoolLike, D::Error> {
        super::bool_like(&Value::deserialize(d)?)
            .map(BoolLike)
            .ok_or_else(|| D::Error::custom(NOT_BOOL))
    }
}

/// An http(s) URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Webhook(pub url::Url);

impl<'de> Deserialize<'de> for Webhook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Webhook, D::Error> {
        match url::Url::parse(&String::deserialize(d)?) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Webhook(u)),
            _ => Err(D::Error::custom("Not a valid URL.")),
        }
    }
}

/// Another job's id (`parent_job_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct JobRef(pub uuid::Uuid);

impl<'de> Deserialize<'de> for JobRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<JobRef, D::Error> {
        uuid::Uuid::parse_str(&String::deserialize(d)?)
            .map(JobRef)
            .map_err(|_| D::Error::custom("Not a valid job id."))
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EnvName(pub String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvName, D::Error> {
        checked(
            d,
            is_env_name,
            "Not a valid environment variable name (letters, digits, _; not starting with a digit).",
        )
        .map(EnvName)
    }
}

/// A secret's path: `[A-Za-z0-9_/-]+`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SecretPath(pub String);

impl<'de> Deserialize<'de> for SecretPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretPath, D::Error> {
        checked(
            d,
            is_secret_path,
            "Not a valid secret path (letters, digits, _, -, /).",
        )
        .map(SecretPath)
    }
}

/// A string that `valid` accepts; else `message` is the error.
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    valid: fn(&str) -> bool,
    message: &'static str,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if valid(&s) {
        Ok(s)
    } else {
        Err(D::Error::custom(message))
    }
}

/// A field that may be left out but, when given, may not be `null`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `job_queue`: required (`null` counts as missing), and a valid queue name.
fn queue_name<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceClass, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Err(D::Error::custom(MISSING)),
        Some(s) => DeviceClass::parse(s).map_err(|e| D::Error::custom(format!("Invalid queue name: {e}."))),
    }
}

/// A whole number as marshmallow's `Integer` reads one: a number without a fraction, or a string
/// of digits.
fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

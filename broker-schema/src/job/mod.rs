//! The job file: Testflinger's schema, parsed once at the edge into a type that is always valid.
//!
//! The shape is declared once, as types ([`file::JobFile`]); [`JobDefinition::parse`] reads a
//! document through it and reports *all* problems at once ([`checked`]), keyed by field path, in
//! the nested shape Testflinger's clients read from `detail.json`. The original document is kept
//! verbatim (it is what the agent writes to `testflinger.json` and what `GET /v1/job/<id>`
//! returns): keys inside the phases' mappings are the device connectors'.

pub mod checked;
pub mod file;

pub use file::{
    AllocateData, Attachment, FirmwareUpdateData, JobFile, PhaseData, ReserveData, ReserveTimeout, TestCmds,
    TestData,
};

use crate::ids::DeviceClass;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

pub const DEFAULT_GLOBAL_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
pub const DEFAULT_OUTPUT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub const DEFAULT_ALLOCATION_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
pub const DEFAULT_RESERVE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Reservations longer than this need the client's `max_reservation_time`.
pub const UNPRIVILEGED_MAX_RESERVE: Duration = Duration::from_secs(6 * 3600);

/// Every problem found in a job file, keyed by dotted field path (`test_data.test_cmds`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationErrors {
    pub fields: BTreeMap<String, Vec<String>>,
}

impl ValidationErrors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.fields.entry(path.into()).or_default().push(message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The nested `{field: [messages]}` / `{field: {sub: [messages]}}` map of `detail.json`.
    pub fn to_detail_json(&self) -> Value {
        let mut root = Map::new();
        for (path, msgs) in &self.fields {
            let mut node = &mut root;
            let parts: Vec<&str> = path.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                let entry = node
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                node = entry.as_object_mut().expect("just made an object");
            }
            node.insert(
                parts[parts.len() - 1].to_string(),
                Value::Array(msgs.iter().cloned().map(Value::String).collect()),
            );
        }
        Value::Object(root)
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (path, msgs) in &self.fields {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{path}: {}", msgs.join(" "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A validated job file: the document as submitted, and what it says, typed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct JobDefinition {
    /// The document as submitted, without `job_id`.
    raw: Map<String, Value>,
    file: JobFile,
}

impl TryFrom<Value> for JobDefinition {
    type Error = ValidationErrors;
    fn try_from(v: Value) -> Result<Self, ValidationErrors> {
        JobDefinition::parse(v)
    }
}

impl From<JobDefinition> for Value {
    fn from(j: JobDefinition) -> Value {
        Value::Object(j.raw)
    }
}

impl JobDefinition {
    /// Parses and validates a job file, reporting every bad field.
    pub fn parse(doc: Value) -> Result<JobDefinition, ValidationErrors> {
        let Value::Object(mut raw) = doc else {
            let mut errs = ValidationErrors::default();
            errs.add("_schema", "Invalid input type: a job must be a mapping.");
            return Err(errs);
        };
        let mut file: JobFile = checked::deserialize(Value::Object(raw.clone()))?;
        raw.remove("job_id");
        file.job_id = None;
        // Testflinger's `debug` flag, read by device connectors (maas2) from testflinger.json.
        // Kept as a JSON boolean whichever of marshmallow's spellings was sent (`"yes"`, `1`…):
        // a connector testing the string "false" in Python would take it for true.
        if let Some(debug) = file.debug {
            raw.insert("debug".into(), Value::Bool(debug.0));
        }
        Ok(JobDefinition { raw, file })
    }

    /// The document as submitted (without `job_id`).
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// What the document says, typed.
    pub fn file(&self) -> &JobFile {
        &self.file
    }

    /// The document with `job_id` added, as Testflinger returns and agents write it.
    pub fn to_json_with_id(&self, job_id: &uuid::Uuid) -> Value {
        let mut m = self.raw.clone();
        m.insert("job_id".into(), Value::String(job_id.to_string()));
        Value::Object(m)
    }

    pub fn job_queue(&self) -> &DeviceClass {
        &self.file.job_queue
    }

    pub fn priority(&self) -> u32 {
        self.file.job_priority.map_or(0, |p| p.0)
    }

    pub fn name(&self) -> Option<&str> {
        self.file.name.as_deref()
    }

    pub fn tags(&self) -> &[String] {
        self.file.tags.as_deref().unwrap_or_default()
    }

    pub fn exclude_agents(&self) -> &[String] {
        self.file.exclude_agents.as_deref().unwrap_or_default()
    }

    pub fn webhook(&self) -> Option<&url::Url> {
        self.file.job_status_webhook.as_ref().map(|w| &w.0)
    }

    pub fn global_timeout(&self) -> Duration {
        self.file
            .global_timeout
            .map_or(DEFAULT_GLOBAL_TIMEOUT, file::Seconds::duration)
    }

    pub fn output_timeout(&self) -> Duration {
        self.file
            .output_timeout
            .map_or(DEFAULT_OUTPUT_TIMEOUT, file::Seconds::duration)
    }

    pub fn allocation_timeout(&self) -> Duration {
        self.file
            .allocation_timeout
            .map_or(DEFAULT_ALLOCATION_TIMEOUT, file::Seconds::duration)
    }

    /// The multi-device job that submitted this one (`parent_job_id`), if any.
    pub fn parent_job_id(&self) -> Option<uuid::Uuid> {
        self.file.parent_job_id.map(|p| p.0)
    }

    /// A multi-device child: `allocate_data.allocate` is true and it names its parent. After its
    /// allocate phase it reports `allocated` and holds its device while the parent lives.
    pub fn is_allocated_child(&self) -> bool {
        self.parent_job_id().is_some()
            && self
                .file
                .allocate_data
                .as_ref()
                .and_then(|a| a.allocate)
                .unwrap_or(false)
    }

    /// How long a reservation holds the device, when the job asks for one.
    pub fn reserve_timeout(&self) -> Option<Duration> {
        self.file
            .reserve_data
            .as_ref()
            .map(|r| r.timeout.as_ref().map_or(DEFAULT_RESERVE_TIMEOUT, |t| t.duration))
    }

    fn phase_data(&self, key: &str) -> Option<&Map<String, Value>> {
        self.raw.get(key).and_then(Value::as_object)
    }

    /// `provision_data` as submitted (the device connector's keys).
    pub fn provision_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("provision_data")
    }

    /// `test_data` as submitted (the device connector's keys).
    pub fn test_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("test_data")
    }

    /// `reserve_data` as submitted.
    pub fn reserve_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("reserve_data")
    }

    /// `test_data.test_cmds` as one shell script (a list is joined by newlines).
    pub fn test_cmds(&self) -> Option<String> {
        self.file
            .test_data
            .as_ref()?
            .test_cmds
            .as_ref()
            .map(TestCmds::script)
    }

    pub fn ssh_keys(&self) -> Vec<String> {
        self.file
            .reserve_data
            .as_ref()
            .and_then(|r| r.ssh_keys.clone())
            .unwrap_or_default()
    }

    /// `test_data.secrets`: environment variable → secret path.
    pub fn secrets(&self) -> BTreeMap<String, String> {
        self.file
            .test_data
            .as_ref()
            .and_then(|t| t.secrets.as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.0.clone(), v.0.clone())).collect())
            .unwrap_or_default()
    }

    /// Testflinger's `debug` flag: connectors may say more (maas2 keeps the machine's logs).
    pub fn debug(&self) -> bool {
        self.file.debug.is_some_and(|d| d.0)
    }

    /// Whether any phase data lists attachments (the job then waits for their upload).
    pub fn has_attachments(&self) -> bool {
        let f = &self.file;
        [
            f.provision_data.as_ref().and_then(|d| d.attachments.as_ref()),
            f.firmware_update_data
                .as_ref()
                .and_then(|d| d.attachments.as_ref()),
            f.test_data.as_ref().and_then(|d| d.attachments.as_ref()),
        ]
        .into_iter()
        .flatten()
        .any(|a| !a.is_empty())
    }
}

/// A boolean as marshmallow's `fields.Boolean` (Testflinger's schema) reads one: JSON booleans,
/// `0`/`1`, and the usual words (`true`, `yes`, `on`, `t`, `y` and their opposites, in lower,
/// title or upper case).
fn bool_like(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => {
            let word = s.as_str();
            let is = |w: &str| {
                let title = format!("{}{}", &w[..1].to_uppercase(), &w[1..]);
                word == w || word == title || word == w.to_uppercase()
            };
            if ["true", "yes", "on", "t", "y", "1"].iter().any(|w| is(w)) {
                Some(true)
            } else if ["false", "no", "off", "f", "n", "0"].iter().any(|w| is(w)) {
                Some(false)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A secret path: `[A-Za-z0-9_/-]+`, as Testflinger accepts them.
pub fn is_secret_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
}

/// Parses `3600`, `90s`, `45m`, `2h30m`, `4d` (units d, h, m, s; summed).
pub fn parse_human_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c.to_ascii_lowercase() {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !num.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_minimal_job_gets_testflinger_defaults() {
        let j = JobDefinition::parse(json!({"job_queue": "rpi4b"})).unwrap();
        assert_eq!(j.job_queue().as_str(), "rpi4b");
        assert_eq!(j.global_timeout(), Duration::from_secs(14400));
        assert_eq!(j.output_timeout(), Duration::from_secs(900));
        assert_eq!(j.priority(), 0);
        assert_eq!(j.reserve_timeout(), None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = JobDefinition::parse(json!({
            "bogus": 1,
            "global_timeout": "soon",
            "tags": "x",
            "test_data": {"test_cmds": 5},
        }))
        .unwrap_err();
        let d = e.to_detail_json();
        assert_eq!(d["job_queue"], json!(["Missing data for required field."]));
        assert_eq!(d["bogus"], json!(["Unknown field."]));
        assert_eq!(d["global_timeout"], json!(["Not a valid integer."]));
        assert_eq!(d["tags"], json!(["Not a valid list."]));
        assert_eq!(
            d["test_data"]["test_cmds"],
            json!(["Must be a string or a list of strings."])
        );
    }

    #[test]
    fn test_cmds_may_be_a_string_or_a_list() {
        let a = JobDefinition::parse(json!({"job_queue": "q", "test_data": {"test_cmds": "echo a\necho b"}}))
            .unwrap();
        let b =
            JobDefinition::parse(json!({"job_queue": "q", "test_data": {"test_cmds": ["echo a", "echo b"]}}))
                .unwrap();
        assert_eq!(a.test_cmds(), b.test_cmds());
    }

    #[test]
    fn reserve_timeout_accepts_seconds_and_human_durations() {
        let j =
            JobDefinition::parse(json!({"job_queue": "q", "reserve_data": {"timeout": "2h30m"}})).unwrap();
        assert_eq!(j.reserve_timeout(), Some(Duration::from_secs(9000)));
        let j = JobDefinition::parse(json!({"job_queue": "q", "reserve_data": {"timeout": 600}})).unwrap();
        assert_eq!(j.reserve_timeout(), Some(Duration::from_secs(600)));
        let j =
            JobDefinition::parse(json!({"job_queue": "q", "reserve_data": {"ssh_keys": ["lp:x"]}})).unwrap();
        assert_eq!(j.reserve_timeout(), Some(DEFAULT_RESERVE_TIMEOUT));
        assert!(
            JobDefinition::parse(json!({"job_queue": "q", "reserve_data": {"timeout": "soon"}})).is_err()
        );
    }

    #[test]
    fn human_durations() {
        assert_eq!(parse_human_duration("4d"), Some(Duration::from_secs(4 * 86400)));
        assert_eq!(parse_human_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_human_duration("1h1m1s"), Some(Duration::from_secs(3661)));
        assert_eq!(parse_human_duration("2x"), None);
        assert_eq!(parse_human_duration("5h3"), None);
    }

    #[test]
    fn attachments_as_the_testflinger_cli_submits_them_are_accepted() {
        let j = JobDefinition::parse(json!({"job_queue": "q",
            "test_data": {"attachments": [{"agent": "data/a.txt"}, {"local": "/tmp/b", "agent": "b"}]},
            "provision_data": {"attachments": [{"agent": "img.xz", "device": "/boot/img.xz"}]}}))
        .unwrap();
        assert!(j.has_attachments());
        let e = JobDefinition::parse(json!({"job_queue": "q",
            "test_data": {"attachments": [{"device": "/x"}, {"agent": 5}]}}))
        .unwrap_err()
        .to_detail_json();
        assert_eq!(
            e["test_data"]["attachments"]["0"]["agent"],
            json!(["Missing data for required field."])
        );
        assert_eq!(
            e["test_data"]["attachments"]["1"]["agent"],
            json!(["Not a valid string."])
        );
    }

    #[test]
    fn secrets_name_variables_and_paths() {
        assert!(
            JobDefinition::parse(
                json!({"job_queue": "q", "test_data": {"secrets": {"TOKEN_1": "lab/ci-token"}}})
            )
            .is_ok()
        );
        let e = JobDefinition::parse(
            json!({"job_queue": "q", "test_data": {"secrets": {"1BAD": "ok", "GOOD": "bad path!"}}}),
        )
        .unwrap_err();
        assert!(e.fields.contains_key("test_data.secrets.1BAD"));
        assert!(e.fields.contains_key("test_data.secrets.GOOD"));
    }

    #[test]
    fn debug_is_a_boolean_kept_for_the_connectors() {
        let j = JobDefinition::parse(json!({"job_queue": "q", "debug": true})).unwrap();
        assert!(j.debug());
        assert_eq!(j.raw()["debug"], json!(true));
        for (sent, kept) in [(json!("yes"), true), (json!("False"), false), (json!(0), false)] {
            let j = JobDefinition::parse(json!({"job_queue": "q", "debug": sent})).unwrap();
            assert_eq!(j.raw()["debug"], json!(kept), "{sent}");
        }
        assert!(!JobDefinition::parse(json!({"job_queue": "q"})).unwrap().debug());
        for bad in [json!("maybe"), json!(2), json!(null), json!({})] {
            let e = JobDefinition::parse(json!({"job_queue": "q", "debug": bad}))
                .unwrap_err()
                .to_detail_json();
            assert_eq!(e["debug"], json!(["Not a valid boolean."]), "{bad}");
        }
    }

    #[test]
    fn numbers_are_read_as_marshmallow_reads_them_and_kept_as_written() {
        let j = JobDefinition::parse(json!({"job_queue": "q", "global_timeout": "60",
            "output_timeout": 30.0, "job_priority": " 7 "}))
        .unwrap();
        assert_eq!(j.global_timeout(), Duration::from_secs(60));
        assert_eq!(j.output_timeout(), Duration::from_secs(30));
        assert_eq!(j.priority(), 7);
        assert_eq!(j.raw()["global_timeout"], json!("60"));
        let d = JobDefinition::parse(json!({"job_queue": "q", "global_timeout": 0,
            "output_timeout": 1.5, "job_priority": -1, "allocation_timeout": null}))
        .unwrap_err()
        .to_detail_json();
        assert_eq!(
            d["global_timeout"],
            json!(["Must be greater than or equal to 1."])
        );
        assert_eq!(d["output_timeout"], json!(["Not a valid integer."]));
        assert_eq!(d["job_priority"], json!(["Must be greater than or equal to 0."]));
        assert!(d.get("allocation_timeout").is_none(), "{d}");
    }

    #[test]
    fn null_is_missing_for_the_queue_and_refused_where_a_value_is_needed() {
        let d = JobDefinition::parse(
            json!({"job_queue": null, "job_id": null, "name": null, "tags": null,
            "firmware_update_data": {"version": null, "ignore_failure": "no"},
            "allocate_data": {"allocate": null},
            "test_data": {"attachments": [{"agent": "a", "device": null}], "test_cmds": null}}),
        )
        .unwrap_err()
        .to_detail_json();
        assert_eq!(d["job_queue"], json!(["Missing data for required field."]));
        assert_eq!(d["job_id"], json!(["Not a valid string."]));
        assert_eq!(
            d["firmware_update_data"]["version"],
            json!(["Not a valid string."])
        );
        assert_eq!(
            d["firmware_update_data"]["ignore_failure"],
            json!(["Not a valid boolean."])
        );
        assert_eq!(d["allocate_data"]["allocate"], json!(["Not a valid boolean."]));
        assert_eq!(
            d["test_data"]["attachments"]["0"]["device"],
            json!(["Not a valid string."])
        );
        assert_eq!(d.as_object().unwrap().len(), 5, "{d}");
    }

    #[test]
    fn each_bad_item_of_a_list_is_named_by_its_index() {
        let d = JobDefinition::parse(json!({"job_queue": "q", "tags": [1, "a", 2],
            "exclude_agents": "x", "reserve_data": {"ssh_keys": ["lp:a", 3]}}))
        .unwrap_err()
        .to_detail_json();
        assert_eq!(d["tags"]["0"], json!(["Not a valid string."]));
        assert_eq!(d["tags"]["2"], json!(["Not a valid string."]));
        assert!(d["tags"].get("1").is_none(), "{d}");
        assert_eq!(d["exclude_agents"], json!(["Not a valid list."]));
        assert_eq!(d["reserve_data"]["ssh_keys"]["1"], json!(["Not a valid string."]));
    }

    #[test]
    fn queue_webhook_parent_and_mappings_are_checked() {
        let d = JobDefinition::parse(json!({"job_queue": "a queue", "job_status_webhook": "ftp://x",
            "parent_job_id": "p", "provision_data": [], "test_data": "x",
            "reserve_data": {"timeout": "0"}}))
        .unwrap_err()
        .to_detail_json();
        assert!(
            d["job_queue"][0]
                .as_str()
                .unwrap()
                .starts_with("Invalid queue name: "),
            "{d}"
        );
        assert_eq!(d["job_status_webhook"], json!(["Not a valid URL."]));
        assert_eq!(d["parent_job_id"], json!(["Not a valid job id."]));
        assert_eq!(d["provision_data"], json!(["Not a valid mapping type."]));
        assert_eq!(d["test_data"], json!(["Not a valid mapping type."]));
        assert_eq!(
            d["reserve_data"]["timeout"],
            json!(["Not a valid duration: use seconds or a form like 2h30m or 4d."])
        );
    }

    #[test]
    fn the_connectors_keys_in_the_phases_mappings_are_kept() {
        let doc = json!({"job_queue": "q", "provision_data": {"url": "http://x/img", "skip": false},
            "test_data": {"test_cmds": "x", "fake": {"duration": "1s"}}, "reserve_data": {"extra": 1}});
        let j = JobDefinition::parse(doc.clone()).unwrap();
        assert_eq!(Value::from(j.clone()), doc);
        let file = j.file();
        assert_eq!(
            file.provision_data.as_ref().unwrap().connector["url"],
            json!("http://x/img")
        );
        assert_eq!(
            file.test_data.as_ref().unwrap().connector["fake"],
            json!({"duration": "1s"})
        );
        assert_eq!(serde_json::to_value(file).unwrap(), doc);
    }

    #[test]
    fn job_id_is_accepted_but_not_kept_in_the_definition() {
        let j = JobDefinition::parse(json!({"job_queue": "q", "job_id": "abc"})).unwrap();
        assert!(!j.raw().contains_key("job_id"));
    }
}

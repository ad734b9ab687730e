//! The job file: Testflinger's schema, parsed once at the edge into a type that is always valid.
//!
//! `JobDefinition::parse` checks every field and reports *all* problems at once, keyed by field
//! path, in the nested shape Testflinger's clients read from `detail.json`. The original document
//! is kept verbatim (it is what the agent writes to `testflinger.json` and what
//! `GET /v1/job/<id>` returns).

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

/// Top-level keys a job file may have. Anything else is refused by name.
pub const KNOWN_KEYS: &[&str] = &[
    "job_id",
    "parent_job_id",
    "name",
    "tags",
    "job_queue",
    "global_timeout",
    "output_timeout",
    "allocation_timeout",
    "job_priority",
    "exclude_agents",
    "job_status_webhook",
    "provision_data",
    "firmware_update_data",
    "test_data",
    "allocate_data",
    "reserve_data",
    "debug",
];

const MISSING: &str = "Missing data for required field.";
const UNKNOWN: &str = "Unknown field.";
const NOT_STRING: &str = "Not a valid string.";
const NOT_INTEGER: &str = "Not a valid integer.";
const NOT_LIST: &str = "Not a valid list.";
const NOT_MAPPING: &str = "Not a valid mapping type.";
const NOT_BOOL: &str = "Not a valid boolean.";

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

/// A validated job file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct JobDefinition {
    /// The document as submitted, without `job_id`.
    raw: Map<String, Value>,
    job_queue: DeviceClass,
    priority: u32,
    global_timeout: Option<Duration>,
    output_timeout: Option<Duration>,
    allocation_timeout: Option<Duration>,
    reserve_timeout: Option<Duration>,
    tags: Vec<String>,
    exclude_agents: Vec<String>,
    webhook: Option<url::Url>,
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
        let mut errs = ValidationErrors::default();
        let Value::Object(mut raw) = doc else {
            errs.add("_schema", "Invalid input type: a job must be a mapping.");
            return Err(errs);
        };
        for key in raw.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                errs.add(key.clone(), UNKNOWN);
            }
        }
        if let Some(id) = raw.get("job_id")
            && !id.is_string()
        {
            errs.add("job_id", NOT_STRING);
        }
        raw.remove("job_id");

        let job_queue = match raw.get("job_queue") {
            None | Some(Value::Null) => {
                errs.add("job_queue", MISSING);
                None
            }
            Some(Value::String(s)) => match DeviceClass::parse(s.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    errs.add("job_queue", format!("Invalid queue name: {e}."));
                    None
                }
            },
            Some(_) => {
                errs.add("job_queue", NOT_STRING);
                None
            }
        };
        optional_string(&raw, "name", &mut errs);
        optional_string(&raw, "parent_job_id", &mut errs);
        if let Some(Value::String(s)) = raw.get("parent_job_id")
            && uuid::Uuid::parse_str(s).is_err()
        {
            errs.add("parent_job_id", "Not a valid job id.");
        }
        let tags = string_list(&raw, "tags", "tags", &mut errs);
        let exclude_agents = string_list(&raw, "exclude_agents", "exclude_agents", &mut errs);
        let global_timeout = positive_seconds(raw.get("global_timeout"), "global_timeout", &mut errs);
        let output_timeout = positive_seconds(raw.get("output_timeout"), "output_timeout", &mut errs);
        let allocation_timeout =
            positive_seconds(raw.get("allocation_timeout"), "allocation_timeout", &mut errs);
        let priority = match raw.get("job_priority") {
            None | Some(Value::Null) => 0,
            Some(v) => match as_integer(v) {
                Some(p) if (0..=i64::from(u32::MAX)).contains(&p) => p as u32,
                Some(_) => {
                    errs.add("job_priority", "Must be greater than or equal to 0.");
                    0
                }
                None => {
                    errs.add("job_priority", NOT_INTEGER);
                    0
                }
            },
        };
        let webhook = match raw.get("job_status_webhook") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match url::Url::parse(s) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
                _ => {
                    errs.add("job_status_webhook", "Not a valid URL.");
                    None
                }
            },
            Some(_) => {
                errs.add("job_status_webhook", NOT_STRING);
                None
            }
        };
        for key in ["provision_data", "firmware_update_data", "allocate_data"] {
            mapping(&raw, key, &mut errs);
        }
        if let Some(fw) = mapping(&raw, "firmware_update_data", &mut ValidationErrors::default()) {
            if let Some(v) = fw.get("version")
                && !v.is_string()
            {
                errs.add("firmware_update_data.version", NOT_STRING);
            }
            if let Some(v) = fw.get("ignore_failure")
                && !v.is_boolean()
            {
                errs.add("firmware_update_data.ignore_failure", NOT_BOOL);
            }
        }
        if let Some(a) = mapping(&raw, "allocate_data", &mut ValidationErrors::default())
            && let Some(v) = a.get("allocate")
            && !v.is_boolean()
        {
            errs.add("allocate_data.allocate", NOT_BOOL);
        }
        for key in ["provision_data", "firmware_update_data"] {
            if let Some(data) = mapping(&raw, key, &mut ValidationErrors::default()) {
                attachments(data, key, &mut errs);
            }
        }
        // Testflinger's `debug` flag, read by device connectors (maas2) from testflinger.json.
        // Kept as a JSON boolean whichever of marshmallow's spellings was sent (`"yes"`, `1`…):
        // a connector testing the string "false" in Python would take it for true.
        match raw.get("debug") {
            None => {}
            Some(v) => match bool_like(v) {
                Some(b) => {
                    raw.insert("debug".into(), Value::Bool(b));
                }
                None => errs.add("debug", NOT_BOOL),
            },
        }
        if let Some(test) = mapping(&raw, "test_data", &mut errs) {
            validate_test_data(test, &mut errs);
        }
        let mut reserve_timeout = None;
        if let Some(res) = mapping(&raw, "reserve_data", &mut errs) {
            string_list(res, "ssh_keys", "reserve_data.ssh_keys", &mut errs);
            match res.get("timeout") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => match parse_human_duration(s) {
                    Some(d) if !d.is_zero() => reserve_timeout = Some(d),
                    _ => errs.add(
                        "reserve_data.timeout",
                        "Not a valid duration: use seconds or a form like 2h30m or 4d.",
                    ),
                },
                Some(v) => reserve_timeout = positive_seconds(Some(v), "reserve_data.timeout", &mut errs),
            }
        }

        match job_queue {
            Some(job_queue) if errs.is_empty() => Ok(JobDefinition {
                raw,
                job_queue,
                priority,
                global_timeout,
                output_timeout,
                allocation_timeout,
                reserve_timeout,
                tags,
                exclude_agents,
                webhook,
            }),
            _ => Err(errs),
        }
    }

    /// The document as submitted (without `job_id`).
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The document with `job_id` added, as Testflinger returns and agents write it.
    pub fn to_json_with_id(&self, job_id: &uuid::Uuid) -> Value {
        let mut m = self.raw.clone();
        m.insert("job_id".into(), Value::String(job_id.to_string()));
        Value::Object(m)
    }

    pub fn job_queue(&self) -> &DeviceClass {
        &self.job_queue
    }

    pub fn priority(&self) -> u32 {
        self.priority
    }

    pub fn name(&self) -> Option<&str> {
        self.raw.get("name").and_then(Value::as_str)
    }

    pub fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn exclude_agents(&self) -> &[String] {
        &self.exclude_agents
    }

    pub fn webhook(&self) -> Option<&url::Url> {
        self.webhook.as_ref()
    }

    pub fn global_timeout(&self) -> Duration {
        self.global_timeout.unwrap_or(DEFAULT_GLOBAL_TIMEOUT)
    }

    pub fn output_timeout(&self) -> Duration {
        self.output_timeout.unwrap_or(DEFAULT_OUTPUT_TIMEOUT)
    }

    pub fn allocation_timeout(&self) -> Duration {
        self.allocation_timeout.unwrap_or(DEFAULT_ALLOCATION_TIMEOUT)
    }

    /// The multi-device job that submitted this one (`parent_job_id`), if any.
    pub fn parent_job_id(&self) -> Option<uuid::Uuid> {
        self.raw
            .get("parent_job_id")
            .and_then(Value::as_str)
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
    }

    /// A multi-device child: `allocate_data.allocate` is true and it names its parent. After its
    /// allocate phase it reports `allocated` and holds its device while the parent lives.
    pub fn is_allocated_child(&self) -> bool {
        self.parent_job_id().is_some()
            && self
                .phase_data("allocate_data")
                .and_then(|a| a.get("allocate"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
    }

    /// How long a reservation holds the device, when the job asks for one.
    pub fn reserve_timeout(&self) -> Option<Duration> {
        self.phase_data("reserve_data")
            .map(|_| self.reserve_timeout.unwrap_or(DEFAULT_RESERVE_TIMEOUT))
    }

    fn phase_data(&self, key: &str) -> Option<&Map<String, Value>> {
        self.raw.get(key).and_then(Value::as_object)
    }

    pub fn provision_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("provision_data")
    }

    pub fn test_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("test_data")
    }

    pub fn reserve_data(&self) -> Option<&Map<String, Value>> {
        self.phase_data("reserve_data")
    }

    /// `test_data.test_cmds` as one shell script (a list is joined by newlines).
    pub fn test_cmds(&self) -> Option<String> {
        match self.test_data()?.get("test_cmds")? {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        }
    }

    pub fn ssh_keys(&self) -> Vec<String> {
        self.reserve_data()
            .and_then(|r| r.get("ssh_keys"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    /// `test_data.secrets`: environment variable → secret path.
    pub fn secrets(&self) -> BTreeMap<String, String> {
        self.test_data()
            .and_then(|t| t.get("secrets"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), p.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Testflinger's `debug` flag: connectors may say more (maas2 keeps the machine's logs).
    pub fn debug(&self) -> bool {
        self.raw.get("debug").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Whether any phase data lists attachments (the job then waits for their upload).
    pub fn has_attachments(&self) -> bool {
        ["provision_data", "firmware_update_data", "test_data"]
            .iter()
            .filter_map(|k| self.phase_data(k))
            .any(|m| {
                m.get("attachments")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
            })
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

fn positive_seconds(v: Option<&Value>, path: &str, errs: &mut ValidationErrors) -> Option<Duration> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match as_integer(v) {
            Some(n) if n >= 1 => Some(Duration::from_secs(n as u64)),
            Some(_) => {
                errs.add(path, "Must be greater than or equal to 1.");
                None
            }
            None => {
                errs.add(path, NOT_INTEGER);
                None
            }
        },
    }
}

fn optional_string(m: &Map<String, Value>, key: &str, errs: &mut ValidationErrors) {
    if let Some(v) = m.get(key)
        && !v.is_string()
        && !v.is_null()
    {
        errs.add(key, NOT_STRING);
    }
}

fn string_list(m: &Map<String, Value>, key: &str, path: &str, errs: &mut ValidationErrors) -> Vec<String> {
    match m.get(key) {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(items)) => {
            let mut out = vec![];
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) => out.push(s.to_owned()),
                    None => errs.add(format!("{path}.{i}"), NOT_STRING),
                }
            }
            out
        }
        Some(_) => {
            errs.add(path, NOT_LIST);
            vec![]
        }
    }
}

fn mapping<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    errs: &mut ValidationErrors,
) -> Option<&'a Map<String, Value>> {
    match m.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(_) => {
            errs.add(key, NOT_MAPPING);
            None
        }
    }
}

fn validate_test_data(t: &Map<String, Value>, errs: &mut ValidationErrors) {
    match t.get("test_cmds") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {}
        Some(_) => errs.add("test_data.test_cmds", "Must be a string or a list of strings."),
    }
    for key in ["test_username", "test_password"] {
        if let Some(v) = t.get(key)
            && !v.is_string()
            && !v.is_null()
        {
            errs.add(format!("test_data.{key}"), NOT_STRING);
        }
    }
    match t.get("secrets") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if !is_env_name(k) {
                    errs.add(
                        format!("test_data.secrets.{k}"),
                        "Not a valid environment variable name (letters, digits, _; not starting with a digit).",
                    );
                }
                match v.as_str() {
                    Some(p) if is_secret_path(p) => {}
                    Some(_) => errs.add(
                        format!("test_data.secrets.{k}"),
                        "Not a valid secret path (letters, digits, _, -, /).",
                    ),
                    None => errs.add(format!("test_data.secrets.{k}"), NOT_STRING),
                }
            }
        }
        Some(_) => errs.add("test_data.secrets", NOT_MAPPING),
    }
    attachments(t, "test_data", errs);
}

/// `<phase>_data.attachments`: a list of `{local, agent, device}` paths. Testflinger's CLI packs
/// the `local` files and replaces `local` by `agent` (the path inside the archive) before it
/// submits, so each entry needs one of `local` or `agent`.
fn attachments(data: &Map<String, Value>, phase_key: &str, errs: &mut ValidationErrors) {
    match data.get("attachments") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{phase_key}.attachments.{i}");
                let Some(a) = item.as_object() else {
                    errs.add(path, NOT_MAPPING);
                    continue;
                };
                for key in ["local", "agent", "device"] {
                    if let Some(v) = a.get(key)
                        && !v.is_string()
                    {
                        errs.add(format!("{path}.{key}"), NOT_STRING);
                    }
                }
                if !a.contains_key("local") && !a.contains_key("agent") {
                    errs.add(format!("{path}.agent"), MISSING);
                }
            }
        }
        Some(_) => errs.add(format!("{phase_key}.attachments"), NOT_LIST),
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
    fn job_id_is_accepted_but_not_kept_in_the_definition() {
        let j = JobDefinition::parse(json!({"job_queue": "q", "job_id": "abc"})).unwrap();
        assert!(!j.raw().contains_key("job_id"));
    }
}

//! Reading a job file (YAML or JSON, from a path or stdin) into the JSON document the API takes.
//!
//! Only the shape is checked here (a mapping); the fields are the server's to validate, so that
//! this CLI never disagrees with the server it talks to.

use serde_json::{Map, Value};
use std::io::Read;
use std::path::PathBuf;

/// Where the job file comes from: `-` is stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobSource {
    Stdin,
    Path(PathBuf),
}

impl From<PathBuf> for JobSource {
    fn from(p: PathBuf) -> JobSource {
        if p.as_os_str() == "-" {
            JobSource::Stdin
        } else {
            JobSource::Path(p)
        }
    }
}

impl JobSource {
    /// The file's path (`None` for stdin).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            JobSource::Stdin => None,
            JobSource::Path(p) => Some(p),
        }
    }

    /// How to name it in messages.
    pub fn describe(&self) -> String {
        match self {
            JobSource::Stdin => "stdin".into(),
            JobSource::Path(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    #[error("cannot read the job file {origin}: {source}")]
    Read { origin: String, source: std::io::Error },
    #[error("the job file {origin} is neither valid YAML nor JSON: {message}")]
    Syntax { origin: String, message: String },
    #[error("the job file {origin} must be a mapping of fields (job_queue, test_data, …), not {found}")]
    NotAMapping { origin: String, found: &'static str },
}

/// A job file, parsed.
#[derive(Clone, Debug)]
pub struct JobFile {
    pub origin: String,
    pub doc: Map<String, Value>,
}

impl JobFile {
    pub fn read(source: &JobSource) -> Result<JobFile, JobFileError> {
        let origin = source.describe();
        let text = match source {
            JobSource::Stdin => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| JobFileError::Read {
                        origin: origin.clone(),
                        source: e,
                    })?;
                text
            }
            JobSource::Path(p) => std::fs::read_to_string(p).map_err(|e| JobFileError::Read {
                origin: origin.clone(),
                source: e,
            })?,
        };
        JobFile::parse(origin, &text)
    }

    pub fn parse(origin: String, text: &str) -> Result<JobFile, JobFileError> {
        // JSON is YAML, but a JSON parser names JSON mistakes better.
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| JobFileError::Syntax {
                origin: origin.clone(),
                message: e.to_string(),
            })?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| JobFileError::Syntax {
                origin: origin.clone(),
                message: e.to_string(),
            })?
        };
        match value {
            Value::Object(doc) => Ok(JobFile { origin, doc }),
            other => Err(JobFileError::NotAMapping {
                origin,
                found: kind(&other),
            }),
        }
    }

    /// The queue the job asks for, if the file names one as a string.
    pub fn queue(&self) -> Option<&str> {
        self.doc
            .get("job_queue")
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "an empty document",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_job_files_give_the_same_document() {
        let yaml = "job_queue: rpi4b\ntest_data:\n  test_cmds: |\n    echo hi\n";
        let json = r#"{"job_queue": "rpi4b", "test_data": {"test_cmds": "echo hi\n"}}"#;
        let a = JobFile::parse("a.yaml".into(), yaml).unwrap();
        let b = JobFile::parse("b.json".into(), json).unwrap();
        assert_eq!(a.doc, b.doc);
        assert_eq!(a.queue(), Some("rpi4b"));
    }

    #[test]
    fn a_job_file_must_be_a_mapping() {
        let err = JobFile::parse("j.yaml".into(), "- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("not a list"), "{err}");
        let err = JobFile::parse("j.yaml".into(), "").unwrap_err();
        assert!(err.to_string().contains("an empty document"), "{err}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let err = JobFile::parse("broken.json".into(), "{\"job_queue\": ").unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");
    }

    #[test]
    fn a_dash_means_stdin() {
        assert_eq!(JobSource::from(PathBuf::from("-")), JobSource::Stdin);
        assert_eq!(JobSource::from(PathBuf::from("job.yaml")).describe(), "job.yaml");
    }
}

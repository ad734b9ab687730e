//! MessagePack encoding with an explicit schema version, and the typed errors of decoding.
//!
//! Every message is a MessagePack map with named fields and a `v` field holding the schema
//! version, e.g. `{"v": 1, "job_id": "…", "job": {…}}`. Decoding first reads `v` alone, so a
//! message from a newer producer is refused as *unsupported version* rather than misread.
//! UUIDs travel as strings (human-readable mode) so producers in any language can write them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The content type set on every message we publish. A consumed message must carry it (or one
/// of its aliases), or none at all: see [`check_content_type`].
pub const CONTENT_TYPE: &str = "application/msgpack";

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u16 = 1;

/// A message type with a stable kind name (sent as the AMQP `type` property, used in logs).
pub trait Message: Serialize + DeserializeOwned {
    const KIND: &'static str;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message body")]
    Empty,
    #[error("content type {found:?} is not {CONTENT_TYPE}")]
    WrongContentType { found: String },
    #[error("not a MessagePack map: {0}")]
    NotMessagePack(String),
    #[error("no schema version field `v`")]
    MissingVersion,
    #[error("schema version {found} is not supported (this build reads version {SCHEMA_VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("invalid {kind} message: {detail}")]
    Invalid { kind: &'static str, detail: String },
    #[error("invalid job in submission: {errors}")]
    InvalidJob {
        job_id: Uuid,
        errors: crate::job::ValidationErrors,
    },
}

impl DecodeError {
    /// The job this undecodable message names, when that much could be read.
    pub fn job_id(&self) -> Option<Uuid> {
        match self {
            DecodeError::InvalidJob { job_id, .. } => Some(*job_id),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Out<'a, T> {
    v: u16,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Deserialize)]
struct In<T> {
    #[allow(dead_code)]
    v: u64,
    #[serde(flatten)]
    body: T,
}

#[derive(Deserialize)]
struct Probe {
    v: Option<u64>,
    job_id: Option<String>,
}

/// Encodes a message as a versioned MessagePack map.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    let mut ser = rmp_serde::Serializer::new(&mut buf)
        .with_struct_map()
        .with_human_readable();
    Out {
        v: SCHEMA_VERSION,
        body: msg,
    }
    .serialize(&mut ser)
    .expect("our messages always serialize");
    buf
}

/// Checks the AMQP content type of a delivery. A missing content type is accepted (some
/// producers cannot set one) and the body is then checked by [`decode`].
pub fn check_content_type(content_type: Option<&str>) -> Result<(), DecodeError> {
    match content_type {
        None | Some(CONTENT_TYPE) | Some("application/x-msgpack") | Some("application/vnd.msgpack") => Ok(()),
        Some(other) => Err(DecodeError::WrongContentType {
            found: other.to_owned(),
        }),
    }
}

fn probe(bytes: &[u8]) -> Result<Probe, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut de = rmp_serde::Deserializer::new(bytes).with_human_readable();
    let p = Probe::deserialize(&mut de).map_err(|e| DecodeError::NotMessagePack(e.to_string()))?;
    match p.v {
        None => Err(DecodeError::MissingVersion),
        Some(v) if v != u64::from(SCHEMA_VERSION) => Err(DecodeError::UnsupportedVersion { found: v }),
        Some(_) => Ok(p),
    }
}

/// Decodes a message, refusing garbage, truncated bodies and other schema versions.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, DecodeError> {
    probe(bytes)?;
    let mut de = rmp_serde::Deserializer::new(bytes).with_human_readable();
    let msg = In::<M>::deserialize(&mut de).map_err(|e| DecodeError::Invalid {
        kind: M::KIND,
        detail: e.to_string(),
    })?;
    Ok(msg.body)
}

/// Decodes a submission, telling an invalid job (with its id, so a rejection can be recorded
/// against it) apart from a message that is not a submission at all.
pub fn decode_submission(bytes: &[u8]) -> Result<crate::messages::Submission, DecodeError> {
    let p = probe(bytes)?;
    match decode::<crate::messages::Submission>(bytes) {
        Ok(s) => Ok(s),
        Err(err) => {
            // Was it the job that was wrong? Re-read it loosely to name the bad fields.
            #[derive(Deserialize)]
            struct Loose {
                job: serde_json::Value,
            }
            let id = p.job_id.as_deref().and_then(|s| Uuid::parse_str(s).ok());
            let mut de = rmp_serde::Deserializer::new(bytes).with_human_readable();
            match (id, Loose::deserialize(&mut de)) {
                (Some(job_id), Ok(loose)) => match crate::job::JobDefinition::parse(loose.job) {
                    Err(errors) => Err(DecodeError::InvalidJob { job_id, errors }),
                    Ok(_) => Err(err),
                },
                _ => Err(err),
            }
        }
    }
}

/// The `job_id` of a message, read as loosely as possible (for dead-letter reasons and
/// rejection events about messages that failed to decode).
pub fn probe_job_id(bytes: &[u8]) -> Option<Uuid> {
    let mut de = rmp_serde::Deserializer::new(bytes).with_human_readable();
    let p = Probe::deserialize(&mut de).ok()?;
    Uuid::parse_str(p.job_id.as_deref()?).ok()
}

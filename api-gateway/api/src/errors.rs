//! The bodies of error answers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Every 4xx and 5xx answer but 422.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Error {
    pub message: String,
}

/// A 422, in Testflinger's shape: `{"message": "Validation error", "detail": {"json" |
/// "query": {field: [messages] or nested fields}}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationError {
    #[schema(example = "Validation error")]
    pub message: String,
    /// Where the bad fields are (`json`, `query`) → field → messages (nested for nested fields).
    #[schema(value_type = Object)]
    pub detail: Map<String, Value>,
}

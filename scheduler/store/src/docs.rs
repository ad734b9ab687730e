//! Small documents that are not jobs: API clients, refresh tokens, restricted queues, secrets,
//! advertised queues, provision logs, results posted over HTTP, the scheduler's settings,
//! pending single sign-ons.
//!
//! Each is a JSON body stored under a (kind, id) key with a version number. A backend only has
//! to get, compare-and-set, delete and list them; what each kind means, and how it changes, is
//! written once, in Rust, in [`super::records`]. The compare-and-set is what makes concurrent
//! gateways safe: a change computed from a stale read is refused and recomputed.

use serde_json::Value;

/// Which family of documents; ids are unique within a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocKind {
    /// An API client (id: client id).
    Client,
    /// A refresh token (id: the SHA-256 of the token, never the token).
    RefreshToken,
    /// A restricted queue and its owners (id: queue).
    RestrictedQueue,
    /// A client's secret (id: `<client_id>/<path>`).
    Secret,
    /// What agents advertise about a queue: description, images (id: queue).
    Queue,
    /// An agent's provision history and streak (id: agent name).
    ProvisionLog,
    /// Results a Testflinger-style agent posted with `POST /v1/result/<id>` (id: job id).
    PostedResult,
    /// A setting the scheduler applies, recorded for the gateway to show (id: its name, e.g.
    /// `retention`).
    Setting,
    /// A single sign-on under way: a device login's request or a browser's state (id: the
    /// SHA-256 of the request id or state, never the value itself).
    PendingSignOn,
}

impl DocKind {
    pub const ALL: [DocKind; 9] = [
        DocKind::Client,
        DocKind::RefreshToken,
        DocKind::RestrictedQueue,
        DocKind::Secret,
        DocKind::Queue,
        DocKind::ProvisionLog,
        DocKind::PostedResult,
        DocKind::Setting,
        DocKind::PendingSignOn,
    ];

    /// The name backends store (never change one: it is in existing databases).
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Client => "client",
            DocKind::RefreshToken => "refresh_token",
            DocKind::RestrictedQueue => "restricted_queue",
            DocKind::Secret => "secret",
            DocKind::Queue => "queue",
            DocKind::ProvisionLog => "provision_log",
            DocKind::PostedResult => "posted_result",
            DocKind::Setting => "setting",
            DocKind::PendingSignOn => "pending_sign_on",
        }
    }
}

/// A stored document.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub id: String,
    /// 1 when created, +1 on every write: the compare-and-set token.
    pub version: u64,
    pub body: Value,
}

//! The lab's records besides jobs, agents and output — clients and their permissions, refresh
//! tokens, restricted queues, secrets, advertised queues and images, provision logs, results
//! posted over HTTP, single sign-ons under way — with their semantics, written once for every
//! backend.
//!
//! Each record is a [`Doc`](super::Doc) of one [`DocKind`]; every change is a read, a change in
//! Rust, and a compare-and-set on the version that was read, retried when another writer got
//! there first ([`modify`]). Backends therefore cannot disagree about what an operation means.

use super::{DocKind, Store, StoreError, StoreResult};
use async_trait::async_trait;
use broker_schema::Millis;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Entries kept in an agent's provision history (Testflinger keeps 100).
pub const PROVISION_LOG_LENGTH: usize = 100;

/// How often a compare-and-set is retried before giving up as unavailable (only reached under
/// pathological contention).
const CAS_ATTEMPTS: usize = 32;

// ----- clients

/// What an API client may do. Ordered: a role may manage clients of its own rank or below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An agent: posts results, output, artifacts; reads attachments.
    Agent,
    /// Submits and follows jobs (the default, and what anonymous users act as when allowed).
    Contributor,
    /// Manages clients (up to manager), restricted queues and agents.
    Manager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Agent, Role::Contributor, Role::Manager, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Contributor => "contributor",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API client (Testflinger's "client permissions").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub client_id: String,
    /// A PHC-format password hash of the client's secret (never the secret itself); `None` for
    /// a client that cannot log in.
    #[serde(default)]
    pub secret_hash: Option<String>,
    pub role: Role,
    /// Highest `job_priority` per queue, or for every queue under `*`.
    #[serde(default)]
    pub max_priority: BTreeMap<String, u32>,
    /// Longest reservation in seconds per queue, or for every queue under `*`.
    #[serde(default)]
    pub max_reservation_time: BTreeMap<String, u64>,
    #[serde(default)]
    pub email: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A refresh token, stored under the hash of the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub client_id: String,
    pub issued_at: Millis,
    /// `None`: never expires.
    #[serde(default)]
    pub expires_at: Option<Millis>,
    #[serde(default)]
    pub revoked: bool,
    /// The role a single sign-on's claim gave this login (`--oidc-role-claim`): its tokens
    /// carry at least this role while the login lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_role: Option<Role>,
}

/// The outcome of revoking a refresh token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    Now,
    Already,
    Unknown,
}

// ----- single sign-on

/// A single sign-on under way, kept from the request that starts it to the one that ends it
/// (which may reach another gateway). It is taken once: whoever takes it finishes the sign-on,
/// so a replayed request id or state finds nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignOnRecord {
    #[serde(flatten)]
    pub flow: SignOnFlow,
    /// After this the sign-on is over, taken or not.
    pub expires_at: Millis,
}

/// Which flow a pending sign-on is, with what its end must know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
pub enum SignOnFlow {
    /// A CLI polling while a person approves at the provider (RFC 8628). The device code never
    /// leaves the gateways.
    Device {
        device_code: String,
        /// The provider's polling interval.
        interval_secs: u64,
        /// Polls before this are answered `slow_down` without asking the provider.
        next_poll_at: Millis,
    },
    /// A browser sent to the provider: what its callback must match.
    Browser { nonce: String, pkce_verifier: String },
}

/// What a device login's poll may do now ([`Records::claim_device_poll`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such request (never made, already taken, or expired and forgotten).
    Unknown,
    /// It expired now (and is forgotten).
    Expired,
    /// Polled again before the interval: retry after that many seconds.
    TooSoon { retry_after_secs: u64 },
    /// Ask the provider with this device code.
    Ask { device_code: String },
}

// ----- queues

/// A restricted queue: only its owners (and admins) may submit to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestrictedQueueRecord {
    pub owners: BTreeSet<String>,
}

/// What agents advertised about a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    #[serde(default)]
    pub description: Option<String>,
    /// Image name → provision data (as text).
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    pub updated_at: Millis,
}

// ----- secrets

/// A client's secret value. Write-only through the API: only the scheduler reads it, when it
/// leases a job that names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    pub value: String,
    pub written_at: Millis,
    #[serde(default)]
    pub expires_at: Option<Millis>,
    /// Deleted as the first job naming it takes it (Testflinger's `ephemeral`).
    #[serde(default)]
    pub single_use: bool,
}

// ----- agents' provisioning

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionEntry {
    pub job_id: String,
    pub exit_code: i32,
    #[serde(default)]
    pub detail: String,
    pub at: Millis,
}

/// An agent's recent provisioning results, and how many in a row passed or failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionLogRecord {
    /// Oldest first, at most [`PROVISION_LOG_LENGTH`].
    pub entries: Vec<ProvisionEntry>,
    /// `pass` or `fail` (empty before the first entry).
    pub streak_type: String,
    pub streak_count: u32,
}

impl ProvisionLogRecord {
    /// Reference semantics: appends the entry and extends or restarts the streak. An entry for a
    /// job already in the history is a duplicate (a redelivered event) and changes nothing.
    pub fn record(&mut self, entry: ProvisionEntry) -> bool {
        if self.entries.iter().any(|e| e.job_id == entry.job_id) {
            return false;
        }
        let kind = if entry.exit_code == 0 { "pass" } else { "fail" };
        if self.streak_type == kind {
            self.streak_count += 1;
        } else {
            self.streak_type = kind.to_owned();
            self.streak_count = 1;
        }
        self.entries.push(entry);
        let excess = self.entries.len().saturating_sub(PROVISION_LOG_LENGTH);
        self.entries.drain(..excess);
        true
    }

    /// Retention: forgets the entries recorded before `before`; the streak (the device's
    /// current run of passes or failures) stays. Returns whether any entry was forgotten.
    pub fn forget_before(&mut self, before: Millis) -> bool {
        let n = self.entries.len();
        self.entries.retain(|e| e.at >= before);
        self.entries.len() != n
    }
}

/// Results a Testflinger-style agent posted (`POST /v1/result/<id>`), merged key by key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PostedResultRecord {
    pub fields: Map<String, Value>,
    pub updated_at: Millis,
}

impl PostedResultRecord {
    /// Reference semantics of a post: top-level keys replace, except that `status` maps
    /// (phase → exit code) and `device_info` maps merge into what was posted before.
    pub fn merge(&mut self, patch: &Map<String, Value>) {
        for (k, v) in patch {
            match (self.fields.get_mut(k), v) {
                (Some(Value::Object(old)), Value::Object(new)) if k == "status" || k == "device_info" => {
                    for (kk, vv) in new {
                        old.insert(kk.clone(), vv.clone());
                    }
                }
                _ => {
                    self.fields.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The retention a scheduler applies (see `flinger_scheduler::retention`), recorded by each
/// scheduler when it starts so that the gateway can show it (`flinger admin show retention`).
/// Several schedulers: the last one to start wrote it; each logs a warning when it replaces
/// settings that differ from its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionSettingsRecord {
    /// Days ended jobs are kept in queues without a setting of their own; `None`: forever.
    pub keep_days: Option<f64>,
    /// Queues with a setting of their own, in days (`None`: forever).
    #[serde(default)]
    pub per_queue: BTreeMap<String, Option<f64>>,
    /// Seconds between two purges.
    pub purge_every_secs: f64,
    /// The scheduler that recorded them (its instance name) and when.
    pub recorded_by: String,
    pub recorded_at: Millis,
}

impl RetentionSettingsRecord {
    /// The same settings, whoever recorded them when.
    pub fn same_settings(&self, other: &RetentionSettingsRecord) -> bool {
        (self.keep_days, &self.per_queue, self.purge_every_secs)
            == (other.keep_days, &other.per_queue, other.purge_every_secs)
    }
}

/// The id of the retention settings' document.
const RETENTION_SETTINGS: &str = "retention";

// ----- the operations

fn decode<T: DeserializeOwned>(kind: DocKind, id: &str, body: Value) -> StoreResult<T> {
    serde_json::from_value(body).map_err(|e| StoreError::Corrupt(format!("{} {id}: {e}", kind.as_str())))
}

fn encode<T: Serialize>(kind: DocKind, v: &T) -> StoreResult<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::Other(format!("encoding {}: {e}", kind.as_str())))
}

/// What [`modify`] should do with the document it read.
pub enum Change<T> {
    Keep,
    Write(T),
    Delete,
}

/// Reads a document, lets `change` decide from what it found (`None`: absent), and applies the
/// decision with a compare-and-set on the version read; retries when another writer changed the
/// document in between. Returns the document as it is afterwards.
pub async fn modify<S, T, F>(store: &S, kind: DocKind, id: &str, mut change: F) -> StoreResult<Option<T>>
where
    S: Store + ?Sized,
    T: Serialize + DeserializeOwned + Clone + Send,
    F: FnMut(Option<T>) -> Change<T> + Send,
{
    for _ in 0..CAS_ATTEMPTS {
        let doc = store.get_doc(kind, id).await?;
        let version = doc.as_ref().map(|d| d.version);
        let current: Option<T> = doc.map(|d| decode(kind, id, d.body)).transpose()?;
        match change(current.clone()) {
            Change::Keep => return Ok(current),
            Change::Write(new) => {
                let body = encode(kind, &new)?;
                if store.put_doc(kind, id, version, &body).await?.is_some() {
                    return Ok(Some(new));
                }
            }
            Change::Delete => match version {
                None => return Ok(None),
                Some(v) => {
                    if store.delete_doc(kind, id, Some(v)).await? {
                        return Ok(None);
                    }
                }
            },
        }
    }
    Err(StoreError::Unavailable(format!(
        "{} {id} kept changing under us",
        kind.as_str()
    )))
}

async fn read<S, T>(store: &S, kind: DocKind, id: &str) -> StoreResult<Option<T>>
where
    S: Store + ?Sized,
    T: DeserializeOwned,
{
    store
        .get_doc(kind, id)
        .await?
        .map(|d| decode(kind, id, d.body))
        .transpose()
}

async fn list<S, T>(store: &S, kind: DocKind, prefix: &str) -> StoreResult<Vec<(String, T)>>
where
    S: Store + ?Sized,
    T: DeserializeOwned,
{
    store
        .list_docs(kind, prefix)
        .await?
        .into_iter()
        .map(|d| {
            let v = decode(kind, &d.id, d.body)?;
            Ok((d.id, v))
        })
        .collect()
}

/// Deletes every document of `kind` that `expired` says is over, each with a compare-and-set on
/// the version that was judged (one rewritten meanwhile is judged again); how many. Of several
/// purgers at once, each deletion is counted by one.
async fn purge_expired<S, T, F>(store: &S, kind: DocKind, expired: F) -> StoreResult<u64>
where
    S: Store + ?Sized,
    T: Serialize + DeserializeOwned + Clone + Send,
    F: Fn(&T) -> bool + Send + Sync,
{
    let mut removed = 0;
    for (id, doc) in list::<_, T>(store, kind, "").await? {
        if !expired(&doc) {
            continue;
        }
        let mut deleted = false;
        modify(store, kind, &id, |doc: Option<T>| {
            deleted = doc.as_ref().is_some_and(&expired);
            if deleted { Change::Delete } else { Change::Keep }
        })
        .await?;
        removed += u64::from(deleted);
    }
    Ok(removed)
}

/// The id of a client's secret.
pub fn secret_id(client_id: &str, path: &str) -> String {
    format!("{client_id}/{path}")
}

/// Typed operations on the lab's records, for every store.
#[async_trait]
pub trait Records {
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>>;
    /// Every client, by id.
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    /// Creates or replaces a client; returns whether it was created.
    async fn put_client(&self, client: &ClientRecord) -> StoreResult<bool>;
    async fn delete_client(&self, client_id: &str) -> StoreResult<bool>;

    async fn insert_refresh_token(&self, token_hash: &str, token: &RefreshTokenRecord) -> StoreResult<()>;
    async fn get_refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>>;
    async fn revoke_refresh_token(&self, token_hash: &str) -> StoreResult<Revoked>;

    /// Revokes every live refresh token of a client (an admin ending its sessions); how many.
    async fn revoke_client_refresh_tokens(&self, client_id: &str) -> StoreResult<usize>;
    /// Forgets the refresh tokens (web UI sessions included) that expired by `now`, revoked or
    /// not: an expired token opens nothing, so its record has nothing left to refuse. Tokens
    /// that never expire stay. How many; retention calls it on every pass.
    async fn purge_expired_refresh_tokens(&self, now: Millis) -> StoreResult<u64>;

    /// Records a sign-on under way under the hash of its request id or state; an error if one
    /// is already recorded there.
    async fn insert_pending_sign_on(&self, id_hash: &str, pending: &PendingSignOnRecord) -> StoreResult<()>;
    /// Takes a pending sign-on: atomically removes it and returns it unless it expired before
    /// `now` (an expired one is removed too). Of two takers, one gets it.
    async fn take_pending_sign_on(
        &self,
        id_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<PendingSignOnRecord>>;
    /// Forgets the pending sign-ons that expired by `now` (people who never finished signing
    /// in); how many. Retention calls it on every pass.
    async fn purge_expired_sign_ons(&self, now: Millis) -> StoreResult<u64>;
    /// A device login's poll at `now`: moves its next allowed poll half an interval on and says
    /// to ask the provider, or says why not (unknown, expired — then forgotten —, too soon).
    async fn claim_device_poll(&self, id_hash: &str, now: Millis) -> StoreResult<DevicePoll>;

    /// Restricts the queue (if it was not) and adds an owner.
    async fn add_restricted_owner(&self, queue: &str, client_id: &str) -> StoreResult<RestrictedQueueRecord>;
    /// Removes an owner; the last one leaving lifts the restriction. Whether it was an owner.
    async fn remove_restricted_owner(&self, queue: &str, client_id: &str) -> StoreResult<bool>;
    async fn get_restricted_queue(&self, queue: &str) -> StoreResult<Option<RestrictedQueueRecord>>;
    /// Every restricted queue, by name.
    async fn list_restricted_queues(&self) -> StoreResult<Vec<(String, RestrictedQueueRecord)>>;

    async fn put_secret(&self, client_id: &str, path: &str, secret: &SecretRecord) -> StoreResult<()>;
    /// The secret's value, unless it is unknown or expired at `now`.
    async fn get_secret(&self, client_id: &str, path: &str, now: Millis) -> StoreResult<Option<String>>;
    /// As [`Records::get_secret`], for a job that uses it: a single-use secret is deleted as it
    /// is taken, atomically, so only one taker ever gets it.
    async fn take_secret(&self, client_id: &str, path: &str, now: Millis) -> StoreResult<Option<String>>;
    async fn delete_secret(&self, client_id: &str, path: &str) -> StoreResult<bool>;
    /// Every secret, by id ([`secret_id`]), expired ones included.
    async fn list_secrets(&self) -> StoreResult<Vec<(String, SecretRecord)>>;
    /// Forgets the secrets that expired by `now`: none is given out after its expiry, so
    /// keeping one only keeps a credential at rest. How many; retention calls it on every pass.
    async fn purge_expired_secrets(&self, now: Millis) -> StoreResult<u64>;
    /// Replaces a secret's stored value if it still is `expected` (what it was read as);
    /// whether it did. Sealing under a rotated key uses it.
    async fn replace_secret_value(&self, id: &str, expected: &str, value: &str) -> StoreResult<bool>;

    /// Records queue descriptions, keeping each queue's images.
    async fn advertise_queues(&self, queues: &BTreeMap<String, String>, now: Millis) -> StoreResult<()>;
    /// Replaces a queue's images, keeping its description.
    async fn set_queue_images(
        &self,
        queue: &str,
        images: &BTreeMap<String, String>,
        now: Millis,
    ) -> StoreResult<()>;
    async fn get_queue(&self, queue: &str) -> StoreResult<Option<QueueRecord>>;
    async fn list_queues(&self) -> StoreResult<Vec<(String, QueueRecord)>>;

    /// Records a provisioning result ([`ProvisionLogRecord::record`]) and returns the history.
    async fn record_provision(&self, agent: &str, entry: &ProvisionEntry) -> StoreResult<ProvisionLogRecord>;
    async fn get_provision_log(&self, agent: &str) -> StoreResult<Option<ProvisionLogRecord>>;
    /// Every agent's provision history, by agent name.
    async fn list_provision_logs(&self) -> StoreResult<Vec<(String, ProvisionLogRecord)>>;

    /// Merges a posted result ([`PostedResultRecord::merge`]) and returns the merged fields.
    async fn merge_posted_result(
        &self,
        job_id: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<PostedResultRecord>;
    async fn get_posted_result(&self, job_id: &str) -> StoreResult<Option<PostedResultRecord>>;

    /// Records the retention settings; returns what was recorded before.
    async fn put_retention_settings(
        &self,
        settings: &RetentionSettingsRecord,
    ) -> StoreResult<Option<RetentionSettingsRecord>>;
    async fn get_retention_settings(&self) -> StoreResult<Option<RetentionSettingsRecord>>;
}

#[async_trait]
impl<S: Store + ?Sized> Records for S {
    async fn get_client(&self, client_id: &str) -> StoreResult<Option<ClientRecord>> {
        read(self, DocKind::Client, client_id).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        Ok(list(self, DocKind::Client, "")
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    async fn put_client(&self, client: &ClientRecord) -> StoreResult<bool> {
        let mut created = false;
        modify(
            self,
            DocKind::Client,
            &client.client_id,
            |old: Option<ClientRecord>| {
                created = old.is_none();
                Change::Write(client.clone())
            },
        )
        .await?;
        Ok(created)
    }

    async fn delete_client(&self, client_id: &str) -> StoreResult<bool> {
        self.delete_doc(DocKind::Client, client_id, None).await
    }

    async fn insert_refresh_token(&self, token_hash: &str, token: &RefreshTokenRecord) -> StoreResult<()> {
        let body = encode(DocKind::RefreshToken, token)?;
        match self
            .put_doc(DocKind::RefreshToken, token_hash, None, &body)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(StoreError::Other("a refresh token with this hash exists".into())),
        }
    }

    async fn get_refresh_token(&self, token_hash: &str) -> StoreResult<Option<RefreshTokenRecord>> {
        read(self, DocKind::RefreshToken, token_hash).await
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> StoreResult<Revoked> {
        let mut outcome = Revoked::Unknown;
        modify(
            self,
            DocKind::RefreshToken,
            token_hash,
            |t: Option<RefreshTokenRecord>| match t {
                None => {
                    outcome = Revoked::Unknown;
                    Change::Keep
                }
                Some(t) if t.revoked => {
                    outcome = Revoked::Already;
                    Change::Keep
                }
                Some(mut t) => {
                    outcome = Revoked::Now;
                    t.revoked = true;
                    Change::Write(t)
                }
            },
        )
        .await?;
        Ok(outcome)
    }

    async fn revoke_client_refresh_tokens(&self, client_id: &str) -> StoreResult<usize> {
        let mut revoked = 0;
        for (hash, token) in list::<_, RefreshTokenRecord>(self, DocKind::RefreshToken, "").await? {
            if token.client_id == client_id
                && !token.revoked
                && self.revoke_refresh_token(&hash).await? == Revoked::Now
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    async fn purge_expired_refresh_tokens(&self, now: Millis) -> StoreResult<u64> {
        purge_expired(self, DocKind::RefreshToken, |t: &RefreshTokenRecord| {
            t.expires_at.is_some_and(|at| at <= now)
        })
        .await
    }

    async fn insert_pending_sign_on(&self, id_hash: &str, pending: &PendingSignOnRecord) -> StoreResult<()> {
        let body = encode(DocKind::PendingSignOn, pending)?;
        match self.put_doc(DocKind::PendingSignOn, id_hash, None, &body).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::Other("a pending sign-on with this id exists".into())),
        }
    }

    async fn purge_expired_sign_ons(&self, now: Millis) -> StoreResult<u64> {
        let mut removed = 0;
        for (id, pending) in list::<_, PendingSignOnRecord>(self, DocKind::PendingSignOn, "").await? {
            // Taking an expired one removes it; one taken meanwhile is gone anyway.
            if pending.expires_at <= now && self.take_pending_sign_on(&id, now).await?.is_none() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn take_pending_sign_on(
        &self,
        id_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<PendingSignOnRecord>> {
        let mut taken = None;
        modify(
            self,
            DocKind::PendingSignOn,
            id_hash,
            |p: Option<PendingSignOnRecord>| {
                taken = p.filter(|p| p.expires_at > now);
                Change::Delete
            },
        )
        .await?;
        Ok(taken)
    }

    async fn claim_device_poll(&self, id_hash: &str, now: Millis) -> StoreResult<DevicePoll> {
        let mut poll = DevicePoll::Unknown;
        modify(
            self,
            DocKind::PendingSignOn,
            id_hash,
            |p: Option<PendingSignOnRecord>| {
                let Some(mut p) = p else {
                    poll = DevicePoll::Unknown;
                    return Change::Keep;
                };
                if p.expires_at <= now {
                    poll = DevicePoll::Expired;
                    return Change::Delete;
                }
                let SignOnFlow::Device {
                    device_code,
                    interval_secs,
                    next_poll_at,
                } = &mut p.flow
                else {
                    poll = DevicePoll::Unknown;
                    return Change::Keep;
                };
                if now < *next_poll_at {
                    poll = DevicePoll::TooSoon {
                        retry_after_secs: (*interval_secs).max(1),
                    };
                    return Change::Keep;
                }
                poll = DevicePoll::Ask {
                    device_code: device_code.clone(),
                };
                // Half the interval: a client that waits the interval is never told to slow down.
                *next_poll_at = now.plus(std::time::Duration::from_millis(*interval_secs * 500));
                Change::Write(p)
            },
        )
        .await?;
        Ok(poll)
    }

    async fn add_restricted_owner(&self, queue: &str, client_id: &str) -> StoreResult<RestrictedQueueRecord> {
        let rec = modify(
            self,
            DocKind::RestrictedQueue,
            queue,
            |q: Option<RestrictedQueueRecord>| {
                let mut q = q.unwrap_or_default();
                if q.owners.insert(client_id.to_owned()) {
                    Change::Write(q)
                } else {
                    Change::Keep
                }
            },
        )
        .await?;
        match rec {
            Some(r) => Ok(r),
            None => Ok(self.get_restricted_queue(queue).await?.unwrap_or_default()),
        }
    }

    async fn remove_restricted_owner(&self, queue: &str, client_id: &str) -> StoreResult<bool> {
        let mut was_owner = false;
        modify(
            self,
            DocKind::RestrictedQueue,
            queue,
            |q: Option<RestrictedQueueRecord>| {
                let Some(mut q) = q else {
                    was_owner = false;
                    return Change::Keep;
                };
                was_owner = q.owners.remove(client_id);
                match (was_owner, q.owners.is_empty()) {
                    (false, _) => Change::Keep,
                    (true, true) => Change::Delete,
                    (true, false) => Change::Write(q),
                }
            },
        )
        .await?;
        Ok(was_owner)
    }

    async fn get_restricted_queue(&self, queue: &str) -> StoreResult<Option<RestrictedQueueRecord>> {
        read(self, DocKind::RestrictedQueue, queue).await
    }

    async fn list_restricted_queues(&self) -> StoreResult<Vec<(String, RestrictedQueueRecord)>> {
        list(self, DocKind::RestrictedQueue, "").await
    }

    async fn put_secret(&self, client_id: &str, path: &str, secret: &SecretRecord) -> StoreResult<()> {
        let id = secret_id(client_id, path);
        modify(self, DocKind::Secret, &id, |_: Option<SecretRecord>| {
            Change::Write(secret.clone())
        })
        .await?;
        Ok(())
    }

    async fn get_secret(&self, client_id: &str, path: &str, now: Millis) -> StoreResult<Option<String>> {
        let s: Option<SecretRecord> = read(self, DocKind::Secret, &secret_id(client_id, path)).await?;
        Ok(s.filter(|s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| s.value))
    }

    async fn take_secret(&self, client_id: &str, path: &str, now: Millis) -> StoreResult<Option<String>> {
        let mut taken = None;
        modify(
            self,
            DocKind::Secret,
            &secret_id(client_id, path),
            |s: Option<SecretRecord>| {
                taken = s
                    .as_ref()
                    .filter(|s| s.expires_at.is_none_or(|t| t > now))
                    .map(|s| s.value.clone());
                match s {
                    Some(s) if s.single_use && taken.is_some() => Change::Delete,
                    _ => Change::Keep,
                }
            },
        )
        .await?;
        Ok(taken)
    }

    async fn delete_secret(&self, client_id: &str, path: &str) -> StoreResult<bool> {
        self.delete_doc(DocKind::Secret, &secret_id(client_id, path), None)
            .await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<(String, SecretRecord)>> {
        list(self, DocKind::Secret, "").await
    }

    async fn purge_expired_secrets(&self, now: Millis) -> StoreResult<u64> {
        purge_expired(self, DocKind::Secret, |s: &SecretRecord| {
            s.expires_at.is_some_and(|at| at <= now)
        })
        .await
    }

    async fn replace_secret_value(&self, id: &str, expected: &str, value: &str) -> StoreResult<bool> {
        let mut replaced = false;
        modify(self, DocKind::Secret, id, |s: Option<SecretRecord>| {
            replaced = false;
            match s {
                Some(mut s) if s.value == expected => {
                    replaced = true;
                    s.value = value.to_owned();
                    Change::Write(s)
                }
                _ => Change::Keep,
            }
        })
        .await?;
        Ok(replaced)
    }

    async fn advertise_queues(&self, queues: &BTreeMap<String, String>, now: Millis) -> StoreResult<()> {
        for (name, description) in queues {
            modify(self, DocKind::Queue, name, |q: Option<QueueRecord>| {
                let mut q = q.unwrap_or_default();
                q.description = Some(description.clone());
                q.updated_at = now;
                Change::Write(q)
            })
            .await?;
        }
        Ok(())
    }

    async fn set_queue_images(
        &self,
        queue: &str,
        images: &BTreeMap<String, String>,
        now: Millis,
    ) -> StoreResult<()> {
        modify(self, DocKind::Queue, queue, |q: Option<QueueRecord>| {
            let mut q = q.unwrap_or_default();
            q.images = images.clone();
            q.updated_at = now;
            Change::Write(q)
        })
        .await?;
        Ok(())
    }

    async fn get_queue(&self, queue: &str) -> StoreResult<Option<QueueRecord>> {
        read(self, DocKind::Queue, queue).await
    }

    async fn list_queues(&self) -> StoreResult<Vec<(String, QueueRecord)>> {
        list(self, DocKind::Queue, "").await
    }

    async fn record_provision(&self, agent: &str, entry: &ProvisionEntry) -> StoreResult<ProvisionLogRecord> {
        let log = modify(
            self,
            DocKind::ProvisionLog,
            agent,
            |log: Option<ProvisionLogRecord>| {
                let mut log = log.unwrap_or_default();
                if log.record(entry.clone()) {
                    Change::Write(log)
                } else {
                    Change::Keep
                }
            },
        )
        .await?;
        match log {
            Some(l) => Ok(l),
            None => Ok(self.get_provision_log(agent).await?.unwrap_or_default()),
        }
    }

    async fn get_provision_log(&self, agent: &str) -> StoreResult<Option<ProvisionLogRecord>> {
        read(self, DocKind::ProvisionLog, agent).await
    }

    async fn list_provision_logs(&self) -> StoreResult<Vec<(String, ProvisionLogRecord)>> {
        list(self, DocKind::ProvisionLog, "").await
    }

    async fn merge_posted_result(
        &self,
        job_id: &str,
        patch: &Map<String, Value>,
        now: Millis,
    ) -> StoreResult<PostedResultRecord> {
        let merged = modify(
            self,
            DocKind::PostedResult,
            job_id,
            |r: Option<PostedResultRecord>| {
                let mut r = r.unwrap_or_default();
                r.merge(patch);
                r.updated_at = now;
                Change::Write(r)
            },
        )
        .await?;
        Ok(merged.unwrap_or_default())
    }

    async fn get_posted_result(&self, job_id: &str) -> StoreResult<Option<PostedResultRecord>> {
        read(self, DocKind::PostedResult, job_id).await
    }

    async fn put_retention_settings(
        &self,
        settings: &RetentionSettingsRecord,
    ) -> StoreResult<Option<RetentionSettingsRecord>> {
        let mut before = None;
        modify(
            self,
            DocKind::Setting,
            RETENTION_SETTINGS,
            |old: Option<RetentionSettingsRecord>| {
                before = old;
                Change::Write(settings.clone())
            },
        )
        .await?;
        Ok(before)
    }

    async fn get_retention_settings(&self) -> StoreResult<Option<RetentionSettingsRecord>> {
        read(self, DocKind::Setting, RETENTION_SETTINGS).await
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn forgetting_old_provision_entries_keeps_recent_ones_and_the_streak() {
        let entry = |job: &str, at| ProvisionEntry {
            job_id: job.into(),
            exit_code: 1,
            detail: String::new(),
            at: Millis(at),
        };
        let mut log = ProvisionLogRecord::default();
        for (job, at) in [("a", 10), ("b", 20), ("c", 30)] {
            log.record(entry(job, at));
        }
        assert!(log.forget_before(Millis(20)));
        let jobs: Vec<&str> = log.entries.iter().map(|e| e.job_id.as_str()).collect();
        assert_eq!(jobs, ["b", "c"]);
        assert_eq!((log.streak_type.as_str(), log.streak_count), ("fail", 3));
        assert!(!log.forget_before(Millis(20)), "nothing more to forget");
    }
}

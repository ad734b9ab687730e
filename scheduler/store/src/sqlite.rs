//! SQLite backend: the embedded default, so that a single-node lab needs no database server.
//!
//! Several processes open the same file (the gateway inserts and reads, schedulers write), so
//! nothing here relies on being alone. Every write is one `BEGIN IMMEDIATE` transaction: it takes
//! the file's single write lock up front (waiting up to [`BUSY_TIMEOUT`] for another process), so
//! a transaction that read a job can always write it back. `update_job` loads the job, checks its
//! precondition and applies its update inside that transaction with the reference semantics
//! ([`Precondition::holds`], [`JobUpdate::apply`]): a compare-and-set across processes. WAL mode
//! lets reads proceed while another process writes.
//!
//! SQLite calls block, so none runs on the runtime: each connection lives on its own thread
//! (`tokio-rusqlite`). One writer connection serializes this process's writes; a few read-only
//! connections answer reads concurrently.
//!
//! A job is stored as its JSON document plus columns derived from it for filtering and sorting.
//! The columns are rewritten from the document on every write, never on their own, so they
//! cannot drift from it.

use super::{
    AgentRecord, BLOB_CHUNK, BlobError, BlobInfo, BlobName, ByteStream, Doc, DocKind, Inserted, JobCount,
    JobOrder, JobQuery, JobRecord, JobUpdate, OutputFragment, OutputQuery, Precondition, Purge,
    SchedulerStore, Store, StoreError, StoreResult,
};
use async_trait::async_trait;
use broker_schema::messages::{AdminState, Heartbeat, LogStream};
use broker_schema::{AgentName, JobState, Millis, Phase};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_rusqlite::rusqlite::types::Value;
use tokio_rusqlite::rusqlite::{self, OptionalExtension, TransactionBehavior, params, params_from_iter};
use uuid::Uuid;

/// How long a write waits for another process's write lock before giving up as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections per store: reads run in parallel with each other and with the writer.
const READERS: usize = 2;

/// Prepared statements kept per connection. `find_jobs` builds one statement per query shape
/// (which filters are set), so there are a few dozen at most.
const STATEMENT_CACHE: usize = 64;

/// Schema migrations in order. `PRAGMA user_version` is the number applied; a new migration is
/// appended here, never edited in place.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    job_id      TEXT PRIMARY KEY,
    queue       TEXT NOT NULL,
    state       TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    enqueued_at INTEGER,
    lease_until INTEGER,
    tags        TEXT NOT NULL,  -- JSON array of strings, searched with json_each
    doc         TEXT NOT NULL   -- the JobRecord as JSON: the truth; the columns above derive from it
);
-- Agents taking work and the queue-position question: queue, state, then queue order.
CREATE INDEX jobs_queue_order ON jobs (queue, state, priority DESC, created_at);
-- Listings, newest or oldest first.
CREATE INDEX jobs_created ON jobs (created_at);
-- The reaper: leases that expired.
CREATE INDEX jobs_lease_until ON jobs (lease_until) WHERE lease_until IS NOT NULL;
-- The sweeper: submissions never seen on the broker.
CREATE INDEX jobs_not_enqueued ON jobs (updated_at) WHERE enqueued_at IS NULL;

CREATE TABLE output (
    job_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    phase   TEXT NOT NULL,
    at      INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, stream, seq)
);

CREATE TABLE agents (
    name      TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL,
    doc       TEXT NOT NULL   -- the AgentRecord as JSON
);
"#,
    r#"
-- Small versioned documents (clients, tokens, secrets, restricted queues, ...): see store::docs.
CREATE TABLE docs (
    kind    TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL,   -- JSON
    PRIMARY KEY (kind, id)
);

-- Attachments and artifacts: a name points at the upload that holds its current bytes; a new
-- upload's chunks are written and the pointer swapped in one transaction, so a blob is always
-- whole.
CREATE TABLE blobs (
    name      TEXT PRIMARY KEY,
    upload    TEXT NOT NULL,
    size      INTEGER NOT NULL,
    stored_at INTEGER NOT NULL
);
CREATE TABLE blob_chunks (
    upload TEXT NOT NULL,
    n      INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (upload, n)
);
"#,
    r#"
-- Retention: ended jobs by when they last changed.
CREATE INDEX jobs_ended ON jobs (updated_at) WHERE state IN ('complete', 'cancelled', 'failed');
"#,
    r#"
-- Metrics: live jobs by state and queue, counted without reading the ended ones.
CREATE INDEX jobs_live ON jobs (state, queue) WHERE state NOT IN ('complete', 'cancelled', 'failed');
"#,
    r#"
-- The web UI's sortable columns: name, started, duration. Each expression is `job_order`'s,
-- word for word, so that SQLite uses the index.
CREATE INDEX jobs_name ON jobs (json_extract(doc, '$.definition.name'), created_at DESC, job_id DESC);
CREATE INDEX jobs_started ON jobs (json_extract(doc, '$.started_at') DESC, created_at DESC, job_id DESC);
CREATE INDEX jobs_run_time ON jobs
    ((json_extract(doc, '$.ended_at') - json_extract(doc, '$.started_at')) DESC, created_at DESC, job_id DESC);
"#,
];

/// The partial index `jobs_live`'s condition (migration 4), word for word: a query that says it
/// can use that index.
macro_rules! live {
    () => {
        "state NOT IN ('complete', 'cancelled', 'failed')"
    };
}
const LIVE: &str = live!();
const COUNT_LIVE_JOBS: &str = concat!(
    "SELECT queue, state, COUNT(*) FROM jobs WHERE ",
    live!(),
    " GROUP BY state, queue"
);
const SELECT_JOB: &str = "SELECT doc FROM jobs WHERE job_id = ?1";
const INSERT_JOB: &str = "INSERT INTO jobs (job_id, queue, state, priority, created_at, updated_at, enqueued_at, \
     lease_until, tags, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (job_id) DO NOTHING";
const UPDATE_JOB: &str = "UPDATE jobs SET queue = ?2, state = ?3, priority = ?4, created_at = ?5, updated_at = ?6, \
     enqueued_at = ?7, lease_until = ?8, tags = ?9, doc = ?10 WHERE job_id = ?1";
const DISCARD_JOB: &str = "DELETE FROM jobs WHERE job_id = ?1 AND state = 'waiting' AND enqueued_at IS NULL";
const INSERT_OUTPUT: &str = "INSERT INTO output (job_id, attempt, stream, seq, phase, at, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING";
const READ_OUTPUT: &str = "SELECT seq, phase, at, data FROM output \
     WHERE job_id = ?1 AND attempt = ?2 AND stream = ?3 AND seq >= ?4 \
     AND (?5 IS NULL OR phase = ?5) AND (?6 IS NULL OR at >= ?6) ORDER BY seq LIMIT ?7";
const COUNT_OUTPUT: &str = "SELECT COUNT(*) FROM output WHERE job_id = ?1 AND attempt = ?2 AND stream = ?3";
const SELECT_AGENT: &str = "SELECT doc FROM agents WHERE name = ?1";
const UPSERT_AGENT: &str = "INSERT INTO agents (name, last_seen, doc) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, doc = excluded.doc";
const LIST_AGENTS: &str = "SELECT name, doc FROM agents ORDER BY name";
const SELECT_DOC: &str = "SELECT version, body FROM docs WHERE kind = ?1 AND id = ?2";
const INSERT_DOC: &str =
    "INSERT INTO docs (kind, id, version, body) VALUES (?1, ?2, 1, ?3) ON CONFLICT (kind, id) DO NOTHING";
const UPDATE_DOC: &str =
    "UPDATE docs SET version = version + 1, body = ?3 WHERE kind = ?1 AND id = ?2 AND version = ?4";
const DELETE_DOC: &str = "DELETE FROM docs WHERE kind = ?1 AND id = ?2 AND (?3 IS NULL OR version = ?3)";
const LIST_DOCS: &str = "SELECT id, version, body FROM docs \
     WHERE kind = ?1 AND substr(id, 1, length(?2)) = ?2 ORDER BY id";
const SELECT_BLOB: &str = "SELECT upload, size, stored_at FROM blobs WHERE name = ?1";
const UPSERT_BLOB: &str = "INSERT INTO blobs (name, upload, size, stored_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (name) DO UPDATE SET upload = excluded.upload, size = excluded.size, stored_at = excluded.stored_at";
const INSERT_CHUNK: &str = "INSERT INTO blob_chunks (upload, n, data) VALUES (?1, ?2, ?3)";
const SELECT_CHUNK: &str = "SELECT data FROM blob_chunks WHERE upload = ?1 AND n = ?2";
const DELETE_CHUNKS: &str = "DELETE FROM blob_chunks WHERE upload = ?1";
const SELECT_PURGEABLE: &str = "SELECT job_id FROM jobs \
     WHERE state IN ('complete', 'cancelled', 'failed') AND updated_at < ?1 \
     AND (?2 IS NULL OR queue = ?2) AND queue NOT IN (SELECT value FROM json_each(?3)) \
     ORDER BY updated_at LIMIT ?4";
const DELETE_BLOB: &str = "DELETE FROM blobs WHERE name = ?1";

/// A store in one SQLite file, shared safely with other processes that open the same file.
pub struct SqliteStore {
    /// The only connection this process writes through, so its own writes never contend.
    writer: tokio_rusqlite::Connection,
    /// Read-only connections, used in turn.
    readers: Vec<tokio_rusqlite::Connection>,
    next_reader: AtomicUsize,
    /// Checkpoints the WAL after retention's batches. A checkpoint waits for its disk sync
    /// (milliseconds); on a connection of its own, the writer — and the leases and events queued
    /// behind it — go on meanwhile (WAL lets a checkpoint run beside a writer).
    checkpointer: tokio_rusqlite::Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Safe to call from several processes at once.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_owned();
        let open_err =
            |e: rusqlite::Error| StoreError::Unavailable(format!("opening {}: {e}", path.display()));
        let writer = tokio_rusqlite::Connection::open(&path).await.map_err(open_err)?;
        writer
            .call(|c| {
                configure(c)?;
                use_wal(c)?;
                migrate(c)
            })
            .await
            .map_err(call_err)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = tokio_rusqlite::Connection::open(&path).await.map_err(open_err)?;
            reader
                .call(|c| {
                    configure(c)?;
                    c.pragma_update(None, "query_only", true)?;
                    Ok(())
                })
                .await
                .map_err(call_err)?;
            readers.push(reader);
        }
        let checkpointer = tokio_rusqlite::Connection::open(&path).await.map_err(open_err)?;
        checkpointer.call(|c| configure(c)).await.map_err(call_err)?;
        Ok(SqliteStore {
            writer,
            readers,
            next_reader: AtomicUsize::new(0),
            checkpointer,
        })
    }

    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut rusqlite::Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.writer.call(f).await.map_err(call_err)
    }

    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut rusqlite::Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].call(f).await.map_err(call_err)
    }
}

/// Per-connection settings (the WAL mode itself is a property of the file).
fn configure(c: &rusqlite::Connection) -> StoreResult<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    // In WAL mode, NORMAL loses no committed transaction on a process crash, only possibly the
    // last ones on power loss; it spares an fsync per commit.
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Switches the file to WAL. Another process opening the file at the same moment can hold a lock
/// the switch needs, so a busy answer is retried until the busy timeout.
fn use_wal(c: &rusqlite::Connection) -> StoreResult<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match c.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::Other(format!(
                    "cannot use WAL mode (journal mode is {mode})"
                )));
            }
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Applies the migrations this database lacks, in one transaction (so concurrent openers apply
/// each exactly once).
fn migrate(c: &mut rusqlite::Connection) -> StoreResult<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::Other(format!(
            "database schema version {applied} is newer than this program's ({known}); upgrade Flinger"
        )));
    }
    for migration in &MIGRATIONS[applied as usize..] {
        tx.execute_batch(migration)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

fn immediate(c: &mut rusqlite::Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The one place SQLite errors become store errors.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::CannotOpen
                | C::DiskFull
                | C::OutOfMemory
                | C::FileLockingProtocolFailed
                | C::PermissionDenied
                | C::ReadOnly => StoreError::Unavailable(format!("sqlite: {e}")),
                C::DatabaseCorrupt | C::NotADatabase => StoreError::Corrupt(format!("sqlite: {e}")),
                _ => StoreError::Other(format!("sqlite: {e}")),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(format!("sqlite: {e}")),
            _ => StoreError::Other(format!("sqlite: {e}")),
        }
    }
}

fn call_err(e: tokio_rusqlite::Error<StoreError>) -> StoreError {
    match e {
        tokio_rusqlite::Error::Error(e) => e,
        tokio_rusqlite::Error::ConnectionClosed => StoreError::Unavailable("sqlite connection closed".into()),
        other => StoreError::Other(format!("sqlite: {other}")),
    }
}

fn decode_job(doc: &str) -> StoreResult<JobRecord> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("job document: {e}")))
}

fn decode_agent(name: &str, doc: &str) -> StoreResult<AgentRecord> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("agent {name}: {e}")))
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("encoding {what}: {e}")))
}

fn to_i64(what: &str, v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} is out of range")))
}

/// A job as stored: its document and the columns derived from it.
struct JobRow {
    job_id: String,
    queue: String,
    state: &'static str,
    priority: i64,
    created_at: i64,
    updated_at: i64,
    enqueued_at: Option<i64>,
    lease_until: Option<i64>,
    tags: String,
    doc: String,
}

impl JobRow {
    fn of(job: &JobRecord) -> StoreResult<Self> {
        Ok(JobRow {
            job_id: job.job_id.to_string(),
            queue: job.queue.as_str().to_owned(),
            state: job.state.as_str(),
            priority: i64::from(job.priority),
            created_at: job.created_at.0,
            updated_at: job.updated_at.0,
            enqueued_at: job.enqueued_at.map(|t| t.0),
            lease_until: job.lease.as_ref().map(|l| l.until.0),
            tags: encode("tags", &job.tags)?,
            doc: encode("job", job)?,
        })
    }

    /// Runs [`INSERT_JOB`] or [`UPDATE_JOB`], which take the same parameters.
    fn execute(&self, c: &rusqlite::Connection, sql: &str) -> rusqlite::Result<usize> {
        c.prepare_cached(sql)?.execute(params![
            self.job_id,
            self.queue,
            self.state,
            self.priority,
            self.created_at,
            self.updated_at,
            self.enqueued_at,
            self.lease_until,
            self.tags,
            self.doc,
        ])
    }
}

/// The `FROM … WHERE …` part of a job query and its parameters: every [`JobQuery`] filter in SQL,
/// with exactly the semantics of [`JobQuery::matches`], so that `LIMIT` and `COUNT` are right.
fn job_filter(q: &JobQuery) -> (String, Vec<Value>) {
    fn placeholders(n: usize) -> String {
        vec!["?"; n].join(", ")
    }
    let mut sql = String::from(" FROM jobs WHERE 1");
    let mut args: Vec<Value> = vec![];
    if let Some(queue) = &q.queue {
        sql.push_str(" AND queue = ?");
        args.push(Value::Text(queue.as_str().to_owned()));
    }
    if let Some(states) = &q.states {
        if states.is_empty() {
            sql.push_str(" AND 0");
        } else {
            sql.push_str(&format!(" AND state IN ({})", placeholders(states.len())));
            args.extend(states.iter().map(|s| Value::Text(s.as_str().to_owned())));
            // Only live states: say so in `jobs_live`'s words, so that SQLite searches that
            // index of the live jobs rather than reading every job the store keeps (the
            // scheduler's periodic passes ask for the running and the waiting jobs this way).
            if states.iter().all(|s| !s.is_terminal()) {
                sql.push_str(&format!(" AND {LIVE}"));
            }
        }
    }
    if !q.tags.is_empty() {
        let tags: BTreeSet<&String> = q.tags.iter().collect();
        let list = placeholders(tags.len());
        if q.all_tags {
            sql.push_str(&format!(
                " AND (SELECT COUNT(DISTINCT value) FROM json_each(jobs.tags) WHERE value IN ({list})) = ?"
            ));
        } else {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value IN ({list}))"
            ));
        }
        args.extend(tags.iter().map(|t| Value::Text((*t).clone())));
        if q.all_tags {
            args.push(Value::Integer(tags.len() as i64));
        }
    }
    if let Some(t) = q.lease_expired_before {
        sql.push_str(" AND lease_until < ?");
        args.push(Value::Integer(t.0));
    }
    if let Some(t) = q.not_enqueued_since {
        sql.push_str(" AND enqueued_at IS NULL AND updated_at < ?");
        args.push(Value::Integer(t.0));
    }
    if let Some((priority, created)) = q.ahead_of {
        sql.push_str(" AND (priority > ? OR (priority = ? AND created_at < ?))");
        args.extend([
            Value::Integer(i64::from(priority)),
            Value::Integer(i64::from(priority)),
            Value::Integer(created.0),
        ]);
    }
    if let Some(t) = q.created_after {
        sql.push_str(" AND created_at > ?");
        args.push(Value::Integer(t.0));
    }
    if let Some(text) = &q.text {
        sql.push_str(
            " AND (instr(lower(json_extract(doc, '$.definition.name')), lower(?)) > 0 \
             OR EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?))",
        );
        args.push(Value::Text(text.clone()));
        args.push(Value::Text(text.clone()));
    }
    if let Some(who) = &q.submitted_by {
        sql.push_str(" AND json_extract(doc, '$.submitted_by') = ?");
        args.push(Value::Text(who.clone()));
    }
    (sql, args)
}

fn job_order(order: JobOrder) -> &'static str {
    // `job_id` breaks ties so that pages are stable.
    match order {
        JobOrder::CreatedAsc => " ORDER BY created_at, job_id",
        JobOrder::CreatedDesc => " ORDER BY created_at DESC, job_id DESC",
        JobOrder::QueueOrder => " ORDER BY priority DESC, created_at, job_id",
        JobOrder::QueueNewest => " ORDER BY queue, created_at DESC, job_id DESC",
        JobOrder::StateNewest => " ORDER BY state, created_at DESC, job_id DESC",
        // The expressions are the indexes' (migration 5); NULL sorts first ascending and last
        // descending, as `JobOrder::compare` says.
        JobOrder::NameNewest => {
            " ORDER BY json_extract(doc, '$.definition.name'), created_at DESC, job_id DESC"
        }
        JobOrder::StartedNewest => {
            " ORDER BY json_extract(doc, '$.started_at') DESC, created_at DESC, job_id DESC"
        }
        JobOrder::LongestFirst => {
            " ORDER BY (json_extract(doc, '$.ended_at') - json_extract(doc, '$.started_at')) DESC, \
             created_at DESC, job_id DESC"
        }
    }
}

/// The statement `find_jobs` runs for `query`, and its arguments.
fn find_jobs_sql(query: &JobQuery) -> (String, Vec<Value>) {
    let (filter, mut args) = job_filter(query);
    let sql = format!("SELECT doc{filter}{} LIMIT ? OFFSET ?", job_order(query.order));
    args.push(sql_limit(query.limit));
    args.push(Value::Integer(i64::from(query.offset.unwrap_or(0))));
    (sql, args)
}

/// SQLite's "no limit".
fn sql_limit(limit: Option<u32>) -> Value {
    Value::Integer(limit.map_or(-1, i64::from))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM sqlite_master")?
                .query_row([], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    async fn insert_job(&self, job: &JobRecord) -> StoreResult<Inserted> {
        let row = JobRow::of(job)?;
        self.write(move |c| {
            let tx = immediate(c)?;
            let inserted = row.execute(&tx, INSERT_JOB)? == 1;
            let outcome = if inserted {
                Inserted::New
            } else {
                let doc: String = tx
                    .prepare_cached(SELECT_JOB)?
                    .query_row([&row.job_id], |r| r.get(0))?;
                Inserted::Existing(Box::new(decode_job(&doc)?))
            };
            tx.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn get_job(&self, job_id: Uuid) -> StoreResult<Option<JobRecord>> {
        self.read(move |c| {
            let doc: Option<String> = c
                .prepare_cached(SELECT_JOB)?
                .query_row([job_id.to_string()], |r| r.get(0))
                .optional()?;
            doc.map(|d| decode_job(&d)).transpose()
        })
        .await
    }

    async fn discard_job(&self, job_id: Uuid) -> StoreResult<bool> {
        self.write(move |c| {
            let tx = immediate(c)?;
            let deleted = tx.prepare_cached(DISCARD_JOB)?.execute([job_id.to_string()])? == 1;
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn find_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRecord>> {
        let (sql, args) = find_jobs_sql(query);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let docs = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
            docs.map(|d| decode_job(&d?)).collect()
        })
        .await
    }

    async fn count_jobs(&self, query: &JobQuery) -> StoreResult<u64> {
        let (filter, mut args) = job_filter(query);
        let sql = format!("SELECT COUNT(*) FROM (SELECT 1{filter} LIMIT ? OFFSET ?)");
        args.push(sql_limit(query.limit));
        args.push(Value::Integer(i64::from(query.offset.unwrap_or(0))));
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(&sql)?
                .query_row(params_from_iter(args), |r| r.get(0))?;
            Ok(n as u64)
        })
        .await
    }

    async fn count_live_jobs(&self) -> StoreResult<Vec<JobCount>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(COUNT_LIVE_JOBS)?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (queue, state, count) = row?;
                let state = JobState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?;
                Ok(JobCount {
                    queue,
                    state,
                    count: count as u64,
                })
            })
            .collect()
        })
        .await
    }

    async fn append_output(&self, fragments: &[OutputFragment]) -> StoreResult<()> {
        if fragments.is_empty() {
            return Ok(());
        }
        let rows = fragments
            .iter()
            .map(|f| {
                Ok((
                    f.job_id.to_string(),
                    f.attempt,
                    f.stream.as_str(),
                    to_i64("output seq", f.seq)?,
                    f.phase.as_str(),
                    f.at.0,
                    f.data.clone(),
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.write(move |c| {
            let tx = immediate(c)?;
            {
                let mut stmt = tx.prepare_cached(INSERT_OUTPUT)?;
                for (job_id, attempt, stream, seq, phase, at, data) in &rows {
                    stmt.execute(params![job_id, attempt, stream, seq, phase, at, data])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn read_output(&self, query: &OutputQuery) -> StoreResult<Vec<OutputFragment>> {
        let q = query.clone();
        let from_seq = i64::try_from(q.from_seq).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(READ_OUTPUT)?;
            let rows = stmt.query_map(
                params![
                    q.job_id.to_string(),
                    q.attempt,
                    q.stream.as_str(),
                    from_seq,
                    q.phase.map(Phase::as_str),
                    q.since.map(|t| t.0),
                    sql_limit(q.limit),
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                },
            )?;
            rows.map(|row| {
                let (seq, phase, at, data) = row?;
                let phase = Phase::parse(&phase).ok_or_else(|| {
                    StoreError::Corrupt(format!("output of job {}: phase {phase:?}", q.job_id))
                })?;
                Ok(OutputFragment {
                    job_id: q.job_id,
                    attempt: q.attempt,
                    stream: q.stream,
                    seq: seq as u64,
                    phase,
                    at: Millis(at),
                    data,
                })
            })
            .collect()
        })
        .await
    }

    async fn count_output(&self, job_id: Uuid, attempt: u32, stream: LogStream) -> StoreResult<u64> {
        self.read(move |c| {
            let n: i64 = c
                .prepare_cached(COUNT_OUTPUT)?
                .query_row(params![job_id.to_string(), attempt, stream.as_str()], |r| {
                    r.get(0)
                })?;
            Ok(n as u64)
        })
        .await
    }

    async fn record_heartbeat(&self, hb: &Heartbeat) -> StoreResult<AgentRecord> {
        let hb = hb.clone();
        self.write(move |c| {
            upsert_agent(c, hb.agent.as_str(), |stored| match stored {
                Some(mut agent) => {
                    agent.apply_heartbeat(&hb);
                    agent
                }
                None => AgentRecord::from_heartbeat(&hb),
            })
        })
        .await
    }

    async fn set_agent_admin(
        &self,
        name: &AgentName,
        state: Option<AdminState>,
        comment: &str,
        _now: Millis,
    ) -> StoreResult<AgentRecord> {
        let (name, comment) = (name.clone(), comment.to_owned());
        self.write(move |c| {
            upsert_agent(c, name.as_str(), |stored| {
                let mut agent = stored.unwrap_or_else(|| AgentRecord::placeholder(name.clone()));
                agent.set_admin(state, &comment);
                agent
            })
        })
        .await
    }

    async fn get_agent(&self, name: &AgentName) -> StoreResult<Option<AgentRecord>> {
        let name = name.as_str().to_owned();
        self.read(move |c| {
            let doc: Option<String> = c
                .prepare_cached(SELECT_AGENT)?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            doc.map(|d| decode_agent(&name, &d)).transpose()
        })
        .await
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(LIST_AGENTS)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            rows.map(|row| {
                let (name, doc) = row?;
                decode_agent(&name, &doc)
            })
            .collect()
        })
        .await
    }
    async fn get_doc(&self, kind: DocKind, id: &str) -> StoreResult<Option<Doc>> {
        let id = id.to_owned();
        self.read(move |c| {
            let row: Option<(i64, String)> = c
                .prepare_cached(SELECT_DOC)?
                .query_row(params![kind.as_str(), id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(version, body)| decode_doc(kind, id.clone(), version, &body))
                .transpose()
        })
        .await
    }

    async fn put_doc(
        &self,
        kind: DocKind,
        id: &str,
        expected: Option<u64>,
        body: &serde_json::Value,
    ) -> StoreResult<Option<u64>> {
        let (id, body) = (id.to_owned(), encode("document", body)?);
        let expected = expected.map(|v| to_i64("version", v)).transpose()?;
        self.write(move |c| {
            let changed = match expected {
                None => c
                    .prepare_cached(INSERT_DOC)?
                    .execute(params![kind.as_str(), id, body])?,
                Some(v) => c
                    .prepare_cached(UPDATE_DOC)?
                    .execute(params![kind.as_str(), id, body, v])?,
            };
            Ok((changed == 1).then(|| expected.map_or(1, |v| v as u64 + 1)))
        })
        .await
    }

    async fn delete_doc(&self, kind: DocKind, id: &str, expected: Option<u64>) -> StoreResult<bool> {
        let id = id.to_owned();
        let expected = expected.map(|v| to_i64("version", v)).transpose()?;
        self.write(move |c| {
            Ok(c.prepare_cached(DELETE_DOC)?
                .execute(params![kind.as_str(), id, expected])?
                == 1)
        })
        .await
    }

    async fn list_docs(&self, kind: DocKind, prefix: &str) -> StoreResult<Vec<Doc>> {
        let prefix = prefix.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(LIST_DOCS)?;
            let rows = stmt.query_map(params![kind.as_str(), prefix], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (id, version, body) = row?;
                decode_doc(kind, id, version, &body)
            })
            .collect()
        })
        .await
    }

    async fn put_blob(
        &self,
        name: &BlobName,
        mut data: ByteStream,
        max_bytes: u64,
    ) -> Result<BlobInfo, BlobError> {
        // Spooled to an anonymous temporary file first, so that the database's write lock is held
        // only for the final copy, and a failed or oversized upload never touches the database.
        let spool = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(|e| StoreError::Other(format!("temporary file: {e}")))?
            .map_err(|e| StoreError::Unavailable(format!("temporary file: {e}")))?;
        let mut spool = tokio::fs::File::from_std(spool);
        let mut size: u64 = 0;
        while let Some(piece) = data.next().await {
            let piece = piece.map_err(BlobError::Source)?;
            size += piece.len() as u64;
            if size > max_bytes {
                return Err(BlobError::TooLarge { limit: max_bytes });
            }
            spool
                .write_all(&piece)
                .await
                .map_err(|e| StoreError::Unavailable(format!("temporary file: {e}")))?;
        }
        spool
            .flush()
            .await
            .map_err(|e| StoreError::Unavailable(format!("temporary file: {e}")))?;
        let mut spool = spool.into_std().await;
        let name = name.to_string();
        let stored_at = Millis::now();
        let size_i64 = to_i64("blob size", size)?;
        let info = self
            .write(move |c| {
                let io = |e: std::io::Error| StoreError::Unavailable(format!("temporary file: {e}"));
                spool.rewind().map_err(io)?;
                let tx = immediate(c)?;
                let old: Option<String> = tx
                    .prepare_cached(SELECT_BLOB)?
                    .query_row([&name], |r| r.get(0))
                    .optional()?;
                let upload = Uuid::new_v4().to_string();
                let mut buf = vec![0u8; BLOB_CHUNK];
                let mut n: i64 = 0;
                loop {
                    let len = read_full(&mut spool, &mut buf).map_err(io)?;
                    if len == 0 {
                        break;
                    }
                    tx.prepare_cached(INSERT_CHUNK)?
                        .execute(params![upload, n, &buf[..len]])?;
                    n += 1;
                }
                tx.prepare_cached(UPSERT_BLOB)?
                    .execute(params![name, upload, size_i64, stored_at.0])?;
                if let Some(old) = old {
                    tx.prepare_cached(DELETE_CHUNKS)?.execute([old])?;
                }
                tx.commit()?;
                Ok(BlobInfo { size, stored_at })
            })
            .await?;
        Ok(info)
    }

    async fn blob_info(&self, name: &BlobName) -> StoreResult<Option<BlobInfo>> {
        Ok(self.blob_row(name).await?.map(|(_, info)| info))
    }

    async fn open_blob(&self, name: &BlobName) -> StoreResult<Option<(BlobInfo, ByteStream)>> {
        let Some((upload, info)) = self.blob_row(name).await? else {
            return Ok(None);
        };
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[i].clone();
        // (next chunk, bytes read so far)
        let stream = futures::stream::try_unfold((0i64, 0u64), move |(n, read)| {
            let (conn, upload) = (conn.clone(), upload.clone());
            async move {
                if read >= info.size {
                    return Ok(None);
                }
                let data: Option<Vec<u8>> = conn
                    .call(move |c| {
                        Ok::<_, StoreError>(
                            c.prepare_cached(SELECT_CHUNK)?
                                .query_row(params![upload, n], |r| r.get(0))
                                .optional()?,
                        )
                    })
                    .await
                    .map_err(|e| std::io::Error::other(call_err(e)))?;
                match data {
                    Some(d) => {
                        let len = d.len() as u64;
                        Ok(Some((Bytes::from(d), (n + 1, read + len))))
                    }
                    None => Err(std::io::Error::other(
                        "the blob was replaced while it was being read",
                    )),
                }
            }
        });
        Ok(Some((info, Box::pin(stream))))
    }

    async fn delete_blob(&self, name: &BlobName) -> StoreResult<bool> {
        let name = name.to_string();
        self.write(move |c| {
            let tx = immediate(c)?;
            let upload: Option<String> = tx
                .prepare_cached(SELECT_BLOB)?
                .query_row([&name], |r| r.get(0))
                .optional()?;
            let Some(upload) = upload else { return Ok(false) };
            tx.prepare_cached(DELETE_BLOB)?.execute([&name])?;
            tx.prepare_cached(DELETE_CHUNKS)?.execute([upload])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

impl SqliteStore {
    /// The upload holding a blob's bytes, and its info.
    async fn blob_row(&self, name: &BlobName) -> StoreResult<Option<(String, BlobInfo)>> {
        let name = name.to_string();
        self.read(move |c| {
            let row = c
                .prepare_cached(SELECT_BLOB)?
                .query_row([&name], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .optional()?;
            Ok(row.map(|(upload, size, at)| {
                (
                    upload,
                    BlobInfo {
                        size: size.max(0) as u64,
                        stored_at: Millis(at),
                    },
                )
            }))
        })
        .await
    }
}

fn decode_doc(kind: DocKind, id: String, version: i64, body: &str) -> StoreResult<Doc> {
    let body = serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("{} {id}: {e}", kind.as_str())))?;
    Ok(Doc {
        id,
        version: version.max(0) as u64,
        body,
    })
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads an agent, changes it with `change`, and writes it back, in one write transaction.
fn upsert_agent(
    c: &mut rusqlite::Connection,
    name: &str,
    change: impl FnOnce(Option<AgentRecord>) -> AgentRecord,
) -> StoreResult<AgentRecord> {
    let tx = immediate(c)?;
    let doc: Option<String> = tx
        .prepare_cached(SELECT_AGENT)?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let agent = change(doc.map(|d| decode_agent(name, &d)).transpose()?);
    let doc = encode("agent", &agent)?;
    tx.prepare_cached(UPSERT_AGENT)?
        .execute(params![name, agent.last_seen.0, doc])?;
    tx.commit()?;
    Ok(agent)
}

#[async_trait]
impl SchedulerStore for SqliteStore {
    async fn update_job(
        &self,
        job_id: Uuid,
        pre: &Precondition,
        update: &JobUpdate,
    ) -> StoreResult<Option<JobRecord>> {
        let (pre, update) = (pre.clone(), update.clone());
        self.write(move |c| {
            let tx = immediate(c)?;
            let doc: Option<String> = tx
                .prepare_cached(SELECT_JOB)?
                .query_row([job_id.to_string()], |r| r.get(0))
                .optional()?;
            let Some(doc) = doc else { return Ok(None) };
            let mut job = decode_job(&doc)?;
            if !pre.holds(&job) {
                return Ok(None); // dropping the transaction rolls it back: nothing was written
            }
            update.apply(&mut job);
            JobRow::of(&job)?.execute(&tx, UPDATE_JOB)?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await
    }

    async fn purge_ended_jobs(&self, purge: &Purge) -> StoreResult<u64> {
        let purge = purge.clone();
        let removed = self
            .write(move |c| {
                let tx = immediate(c)?;
                let limit = i64::from(purge.limit);
                let except = serde_json::to_string(&purge.except_queues)
                    .map_err(|e| StoreError::Other(format!("encoding queues: {e}")))?;
                let ids: Vec<String> = tx
                    .prepare_cached(SELECT_PURGEABLE)?
                    .query_map(params![purge.ended_before.0, purge.queue, except, limit], |r| {
                        r.get(0)
                    })?
                    .collect::<Result<_, _>>()?;
                for id in &ids {
                    tx.prepare_cached("DELETE FROM output WHERE job_id = ?1")?
                        .execute([id])?;
                    tx.prepare_cached("DELETE FROM docs WHERE kind = ?1 AND id = ?2")?
                        .execute(params![DocKind::PostedResult.as_str(), id])?;
                    let job_id =
                        Uuid::parse_str(id).map_err(|_| StoreError::Corrupt(format!("job id {id}")))?;
                    for name in
                        [BlobName::attachments(job_id), BlobName::artifact(job_id)].map(|n| n.to_string())
                    {
                        let upload: Option<String> = tx
                            .prepare_cached(SELECT_BLOB)?
                            .query_row([&name], |r| r.get(0))
                            .optional()?;
                        if let Some(upload) = upload {
                            tx.prepare_cached(DELETE_BLOB)?.execute([&name])?;
                            tx.prepare_cached(DELETE_CHUNKS)?.execute([upload])?;
                        }
                    }
                    tx.prepare_cached("DELETE FROM jobs WHERE job_id = ?1")?
                        .execute([id])?;
                }
                tx.commit()?;
                Ok(ids.len() as u64)
            })
            .await?;
        if removed > 0 {
            // Moves the freed pages out of the WAL into the file (where new rows reuse them)
            // without waiting for readers; a busy checkpoint is simply retried next batch. Not
            // on the writer: its disk sync would hold up every write queued behind it.
            self.checkpointer
                .call(|c| {
                    let _ = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    Ok::<_, StoreError>(())
                })
                .await
                .map_err(call_err)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql` on a store of the current schema: one line per step.
    async fn plan(sql: &str, args: Vec<Value>) -> Vec<String> {
        let path = std::env::temp_dir().join(format!("flinger-plan-{}.db", uuid::Uuid::new_v4()));
        drop(SqliteStore::open(&path).await.unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        drop(c);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        plan
    }

    /// The live-jobs count reads the partial index of live jobs, never the table (which keeps
    /// every ended job).
    #[tokio::test]
    async fn counting_live_jobs_reads_only_the_live_jobs_index() {
        let plan = plan(COUNT_LIVE_JOBS, vec![]).await;
        assert!(
            plan.iter().any(|step| step.contains("COVERING INDEX jobs_live")),
            "{plan:?}"
        );
    }

    /// The scheduler's periodic passes (the reaper's running jobs, the lost-message check's
    /// waiting ones) search the index of live jobs by state; none reads the whole table, which
    /// keeps every ended job until retention removes it.
    #[tokio::test]
    async fn jobs_asked_for_by_state_are_searched_not_scanned() {
        let running = JobState::ALL.iter().copied().filter(|s| s.is_active()).collect();
        for (what, states, limit) in [
            ("running", running, None),
            ("waiting", vec![JobState::Waiting], Some(1000)),
        ] {
            let query = JobQuery {
                states: Some(states),
                limit,
                ..Default::default()
            };
            let (sql, args) = find_jobs_sql(&query);
            let plan = plan(&sql, args).await;
            assert!(
                plan.iter()
                    .any(|s| s.starts_with("SEARCH jobs USING INDEX jobs_live")),
                "{what}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|s| s.starts_with("SCAN jobs")),
                "{what}: {plan:?}"
            );
        }
    }
}

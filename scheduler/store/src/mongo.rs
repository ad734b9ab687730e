//! MongoDB backend: the production store (a replica set with majority writes).
//!
//! Three collections:
//! - `jobs`: one document per job, `_id` = the job id (hyphenated string). Everything queries
//!   or preconditions look at is a top-level field (`queue`, `state`, `priority`, `tags`,
//!   `created_at`, `updated_at`, `enqueued_at`, `attempt`, `lease.until`, …). The job file and
//!   the agent's `device_info` are stored as JSON *text*: they carry arbitrary user keys, which
//!   may contain dots or start with `$`, and MongoDB update paths choke on those.
//! - `output`: one document per fragment, unique on (job_id, attempt, stream, seq); data as
//!   BSON binary.
//! - `agents`: one document per agent, `_id` = its name.
//! - `docs`: the small versioned documents of [`super::docs`], `_id` = `<kind>/<id>`, the body as
//!   JSON text (user keys again), `version` for compare-and-set.
//! - GridFS bucket `blobs` (`blobs.files`, `blobs.chunks`): attachments and artifacts, one file
//!   per upload named `attachments/<job_id>` or `artifact/<job_id>`; the newest is current and
//!   older ones are deleted once a new one is complete.
//!
//! Every write is a single-document atomic operation (no transactions, no sessions): a job
//! changes only through one `findOneAndUpdate` whose filter is the translated
//! [`Precondition`] and whose update is the translated [`JobUpdate`]. Their Rust
//! implementations are the reference; `job_filter` and `job_update` must stay
//! equivalent to them (the contract suite checks it). Instants stay `Int64` milliseconds.

use super::*;
use broker_schema::messages::AgentState;
use broker_schema::{DeviceClass, Failure, JobDefinition, JobState, Phase};
use futures::TryStreamExt;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use mongodb::bson::{self, Binary, Bson, Document, doc, spec::BinarySubtype};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::gridfs::{FilesCollectionDocument, GridFsBucket};
use mongodb::options::{
    Acknowledgment, ClientOptions, GridFsBucketOptions, IndexOptions, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::Duration;

const JOBS: &str = "jobs";
const OUTPUT: &str = "output";
const AGENTS: &str = "agents";
const DOCS: &str = "docs";
/// The GridFS bucket of attachments and artifacts.
const BLOB_BUCKET: &str = "blobs";

/// How long the driver looks for a usable server before giving up: an unreachable database
/// must surface as [`StoreError::Unavailable`] quickly, not hang the caller.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a majority write may wait for replication before it is reported as failed.
const MAJORITY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on any single operation: the driver has no socket timeout, and a server that
/// accepts a request and never answers must not stall a scheduler loop forever.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

pub struct MongoStore {
    /// For `ping`, and so that tests can drop their database.
    db: Database,
    jobs: Collection<Document>,
    output: Collection<Document>,
    agents: Collection<Document>,
    docs: Collection<Document>,
    blobs: GridFsBucket,
    /// The bucket's files collection, to find a file's newest revision and its size.
    blob_files: Collection<FilesCollectionDocument>,
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes (idempotent).
    ///
    /// Options given in the URI win; otherwise server selection and connect time out after
    /// 5 s and writes use majority write concern (what a replica set needs for "accepted means
    /// durable"; a standalone server treats majority as itself).
    pub async fn open(uri: &str, database: &str) -> StoreResult<Self> {
        let mut opts = ClientOptions::parse(uri)
            .await
            .map_err(|e| map_err("parse MongoDB URI", e))?;
        opts.server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        opts.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
        opts.app_name.get_or_insert_with(|| "flinger".to_owned());
        opts.write_concern.get_or_insert_with(|| {
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .w_timeout(MAJORITY_WRITE_TIMEOUT)
                .build()
        });
        let client = Client::with_options(opts).map_err(|e| map_err("create MongoDB client", e))?;
        let db = client.database(database);
        let store = MongoStore {
            jobs: db.collection(JOBS),
            output: db.collection(OUTPUT),
            agents: db.collection(AGENTS),
            docs: db.collection(DOCS),
            blobs: db.gridfs_bucket(
                GridFsBucketOptions::builder()
                    .bucket_name(BLOB_BUCKET.to_owned())
                    .chunk_size_bytes(BLOB_CHUNK as u32)
                    .build(),
            ),
            blob_files: db.collection(&format!("{BLOB_BUCKET}.files")),
            db,
        };
        store.ping().await?;
        store.create_indexes().await?;
        store.backfill().await?;
        Ok(store)
    }

    /// Gives jobs stored by earlier versions the fields later ones copy out of the record:
    /// `name` (searches, the name order) and `run_time_ms` (the longest-first order). Both
    /// derive from fields that never change, or from the document itself in one update, so
    /// several stores opening at once, and schedulers updating jobs meanwhile, agree.
    async fn backfill(&self) -> StoreResult<()> {
        let stale = doc! { "run_time_ms": { "$exists": false } };
        let stages = vec![doc! { "$set": { "run_time_ms": run_time_expr() } }];
        timed("backfill run times", self.jobs.update_many(stale, stages)).await?;
        loop {
            let unnamed = doc! { "name": { "$exists": false } };
            let find = self
                .jobs
                .find(unnamed.clone())
                .projection(doc! { "definition": 1 })
                .limit(500);
            let batch: Vec<Document> = timed(
                "find unnamed jobs",
                async move { find.await?.try_collect().await },
            )
            .await?;
            if batch.is_empty() {
                return Ok(());
            }
            for d in batch {
                let name = d
                    .get_str("definition")
                    .ok()
                    .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
                    .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
                let mut one = unnamed.clone();
                one.insert("_id", d.get("_id").cloned().unwrap_or(Bson::Null));
                timed(
                    "backfill name",
                    self.jobs.update_one(one, doc! { "$set": { "name": name } }),
                )
                .await?;
            }
        }
    }

    /// The database this store lives in (tests drop it when done).
    pub fn database(&self) -> &Database {
        &self.db
    }

    async fn create_indexes(&self) -> StoreResult<()> {
        let index = |name: &str, keys: Document, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique.then_some(true))
                        .build(),
                )
                .build()
        };
        let jobs = vec![
            // Agents' and the queue-position question: waiting jobs of a class in queue order.
            index(
                "queue_order",
                doc! { "queue": 1, "state": 1, "priority": -1, "created_at": 1 },
                false,
            ),
            // The reaper: leases that expired.
            index("lease_until", doc! { "lease.until": 1 }, false),
            // The sweeper: jobs never seen on the broker.
            index("not_enqueued", doc! { "enqueued_at": 1, "updated_at": 1 }, false),
            index("created_at", doc! { "created_at": 1 }, false),
            index("tags", doc! { "tags": 1 }, false),
            // Retention: ended jobs by when they last changed.
            index("state_updated", doc! { "state": 1, "updated_at": 1 }, false),
            // The web UI's sortable columns.
            index(
                "name_newest",
                doc! { "name": 1, "created_at": -1, "_id": -1 },
                false,
            ),
            index(
                "started_newest",
                doc! { "started_at": -1, "created_at": -1, "_id": -1 },
                false,
            ),
            index(
                "longest_first",
                doc! { "run_time_ms": -1, "created_at": -1, "_id": -1 },
                false,
            ),
        ];
        timed("create job indexes", self.jobs.create_indexes(jobs)).await?;
        let output = vec![index(
            "fragment_key",
            doc! { "job_id": 1, "attempt": 1, "stream": 1, "seq": 1 },
            true,
        )];
        timed("create output indexes", self.output.create_indexes(output)).await?;
        let docs = vec![index("kind_key", doc! { "kind": 1, "key": 1 }, false)];
        timed("create document indexes", self.docs.create_indexes(docs)).await?;
        Ok(())
    }
}

#[async_trait]
impl Store for MongoStore {
    fn backend(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.db.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }

    async fn insert_job(&self, job: &JobRecord) -> StoreResult<Inserted> {
        let doc = job_to_doc(job)?;
        // A job discarded between our failed insert and our read is inserted again.
        for _ in 0..3 {
            match deadline("insert job", self.jobs.insert_one(doc.clone())).await? {
                Ok(_) => return Ok(Inserted::New),
                Err(e) if is_duplicate_key(&e) => {
                    if let Some(existing) = self.get_job(job.job_id).await? {
                        return Ok(Inserted::Existing(Box::new(existing)));
                    }
                }
                Err(e) => return Err(map_err("insert job", e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "insert job {}: it keeps appearing and vanishing",
            job.job_id
        )))
    }

    async fn get_job(&self, job_id: Uuid) -> StoreResult<Option<JobRecord>> {
        let found = timed("get job", self.jobs.find_one(doc! { "_id": job_id.to_string() })).await?;
        found.map(job_from_doc).transpose()
    }

    async fn discard_job(&self, job_id: Uuid) -> StoreResult<bool> {
        let filter = doc! {
            "_id": job_id.to_string(),
            "state": JobState::Waiting.as_str(),
            "enqueued_at": Bson::Null,
        };
        let deleted = timed("discard job", self.jobs.delete_one(filter)).await?;
        Ok(deleted.deleted_count == 1)
    }

    async fn find_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRecord>> {
        if query.limit == Some(0) {
            // MongoDB reads `limit(0)` as "no limit".
            return Ok(vec![]);
        }
        let sort = match query.order {
            // `_id` breaks ties so that pages are stable (the SQLite backend does the same).
            JobOrder::CreatedAsc => doc! { "created_at": 1, "_id": 1 },
            JobOrder::CreatedDesc => doc! { "created_at": -1, "_id": -1 },
            JobOrder::QueueOrder => doc! { "priority": -1, "created_at": 1, "_id": 1 },
            JobOrder::QueueNewest => doc! { "queue": 1, "created_at": -1, "_id": -1 },
            JobOrder::StateNewest => doc! { "state": 1, "created_at": -1, "_id": -1 },
            JobOrder::NameNewest => doc! { "name": 1, "created_at": -1, "_id": -1 },
            JobOrder::StartedNewest => doc! { "started_at": -1, "created_at": -1, "_id": -1 },
            JobOrder::LongestFirst => doc! { "run_time_ms": -1, "created_at": -1, "_id": -1 },
        };
        let mut find = self.jobs.find(query_filter(query)).sort(sort);
        if let Some(offset) = query.offset {
            find = find.skip(u64::from(offset));
        }
        if let Some(limit) = query.limit {
            find = find.limit(i64::from(limit));
        }
        let docs: Vec<Document> = timed("find jobs", async move { find.await?.try_collect().await }).await?;
        docs.into_iter().map(job_from_doc).collect()
    }

    /// Counts what `find_jobs` would return, `limit` included.
    async fn count_jobs(&self, query: &JobQuery) -> StoreResult<u64> {
        let mut count = self.jobs.count_documents(query_filter(query));
        if let Some(offset) = query.offset {
            count = count.skip(u64::from(offset));
        }
        match query.limit {
            Some(0) => return Ok(0),
            Some(limit) => count = count.limit(u64::from(limit)),
            None => {}
        }
        timed("count jobs", count).await
    }

    /// One aggregation; its `$match` on `state` uses the `state_updated` index, so only live
    /// jobs are read.
    async fn count_live_jobs(&self) -> StoreResult<Vec<JobCount>> {
        let live: Vec<&str> = JobState::ALL
            .iter()
            .filter(|s| !s.is_terminal())
            .map(|s| s.as_str())
            .collect();
        let pipeline = vec![
            doc! { "$match": { "state": { "$in": live } } },
            doc! { "$group": { "_id": { "queue": "$queue", "state": "$state" }, "count": { "$sum": 1 } } },
        ];
        let aggregate = self.jobs.aggregate(pipeline);
        let groups: Vec<Document> = timed(
            "count live jobs",
            async move { aggregate.await?.try_collect().await },
        )
        .await?;
        groups
            .into_iter()
            .map(|g| {
                let corrupt = |what: &str| StoreError::Corrupt(format!("live job count: {what}: {g}"));
                let id = g.get_document("_id").map_err(|_| corrupt("_id"))?;
                let queue = id.get_str("queue").map_err(|_| corrupt("queue"))?.to_owned();
                let state = id
                    .get_str("state")
                    .ok()
                    .and_then(JobState::parse)
                    .ok_or_else(|| corrupt("state"))?;
                let count = match g.get("count") {
                    Some(Bson::Int32(n)) => *n as u64,
                    Some(Bson::Int64(n)) => *n as u64,
                    Some(Bson::Double(n)) => *n as u64,
                    _ => return Err(corrupt("count")),
                };
                Ok(JobCount { queue, state, count })
            })
            .collect()
    }

    async fn append_output(&self, fragments: &[OutputFragment]) -> StoreResult<()> {
        if fragments.is_empty() {
            return Ok(());
        }
        let docs = fragments
            .iter()
            .map(fragment_to_doc)
            .collect::<StoreResult<Vec<_>>>()?;
        // Unordered: one duplicate (a redelivered chunk) must not stop the others.
        match deadline("append output", self.output.insert_many(docs).ordered(false)).await? {
            Ok(_) => Ok(()),
            Err(e) => match e.kind.as_ref() {
                ErrorKind::InsertMany(failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|errs| errs.iter().all(|w| w.code == DUPLICATE_KEY)) =>
                {
                    Ok(())
                }
                _ => Err(map_err("append output", e)),
            },
        }
    }

    async fn read_output(&self, query: &OutputQuery) -> StoreResult<Vec<OutputFragment>> {
        // Stored seqs are Int64: none is beyond `i64::MAX`.
        let Ok(from_seq) = i64::try_from(query.from_seq) else {
            return Ok(vec![]);
        };
        if query.limit == Some(0) {
            return Ok(vec![]);
        }
        let mut filter = doc! {
            "job_id": query.job_id.to_string(),
            "attempt": i64::from(query.attempt),
            "stream": query.stream.as_str(),
            "seq": { "$gte": from_seq },
        };
        if let Some(phase) = query.phase {
            filter.insert("phase", phase.as_str());
        }
        if let Some(since) = query.since {
            filter.insert("at", doc! { "$gte": since.0 });
        }
        let mut find = self.output.find(filter).sort(doc! { "seq": 1 });
        if let Some(limit) = query.limit {
            find = find.limit(i64::from(limit));
        }
        let docs: Vec<Document> =
            timed("read output", async move { find.await?.try_collect().await }).await?;
        docs.iter().map(fragment_from_doc).collect()
    }

    async fn count_output(&self, job_id: Uuid, attempt: u32, stream: LogStream) -> StoreResult<u64> {
        let filter =
            doc! { "job_id": job_id.to_string(), "attempt": i64::from(attempt), "stream": stream.as_str() };
        timed("count output", self.output.count_documents(filter)).await
    }

    async fn record_heartbeat(&self, hb: &Heartbeat) -> StoreResult<AgentRecord> {
        let what = "record heartbeat";
        let update = doc! {
            "$set": reported_fields(&AgentRecord::from_heartbeat(hb))?,
            // The admin's decisions are only written by `set_agent_admin`; a new agent has none.
            "$setOnInsert": { "admin_state": Bson::Null, "admin_comment": Bson::Null },
        };
        // Only over an older heartbeat (every agent document has `last_seen`; an admin's
        // placeholder has 0). When a newer one is stored the filter misses, the upsert's insert
        // collides with the existing `_id`, and the stored record stands.
        let filter = doc! { "_id": hb.agent.as_str(), "last_seen": { "$lte": hb.at.0 } };
        let mut retried = false;
        loop {
            let action = self
                .agents
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After);
            match deadline(what, action).await? {
                Ok(Some(doc)) => return agent_from_doc(doc),
                Ok(None) => return Err(StoreError::Other(format!("{what}: upsert returned no document"))),
                Err(e) if is_duplicate_key(&e) => match self.get_agent(&hb.agent).await? {
                    Some(stored) if stored.last_seen > hb.at => return Ok(stored),
                    // Two first heartbeats raced to insert: try again as an update.
                    _ if !retried => retried = true,
                    _ => return Err(map_err(what, e)),
                },
                Err(e) => return Err(map_err(what, e)),
            }
        }
    }

    async fn set_agent_admin(
        &self,
        name: &AgentName,
        state: Option<AdminState>,
        comment: &str,
        _now: Millis,
    ) -> StoreResult<AgentRecord> {
        let mut decided = AgentRecord::placeholder(name.clone());
        decided.set_admin(state, comment);
        let update = doc! {
            "$set": {
                "admin_state": decided.admin_state.map(|s| s.as_str()),
                "admin_comment": decided.admin_comment.as_deref(),
            },
            // Until the agent reports: the placeholder (offline, never seen).
            "$setOnInsert": reported_fields(&decided)?,
        };
        self.upsert_agent("set agent admin state", name, update).await
    }

    async fn get_agent(&self, name: &AgentName) -> StoreResult<Option<AgentRecord>> {
        let found = timed("get agent", self.agents.find_one(doc! { "_id": name.as_str() })).await?;
        found.map(agent_from_doc).transpose()
    }

    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        let find = self.agents.find(doc! {}).sort(doc! { "_id": 1 });
        let docs: Vec<Document> =
            timed("list agents", async move { find.await?.try_collect().await }).await?;
        docs.into_iter().map(agent_from_doc).collect()
    }
    async fn get_doc(&self, kind: DocKind, id: &str) -> StoreResult<Option<Doc>> {
        let found = timed(
            "get document",
            self.docs.find_one(doc! { "_id": doc_key(kind, id) }),
        )
        .await?;
        found.map(|d| doc_from_bson(kind, d)).transpose()
    }

    async fn put_doc(
        &self,
        kind: DocKind,
        id: &str,
        expected: Option<u64>,
        body: &serde_json::Value,
    ) -> StoreResult<Option<u64>> {
        let body = json_text(body)?;
        match expected {
            None => {
                let new = doc! {
                    "_id": doc_key(kind, id),
                    "kind": kind.as_str(),
                    "key": id,
                    "version": 1_i64,
                    "body": body,
                };
                match deadline("insert document", self.docs.insert_one(new)).await? {
                    Ok(_) => Ok(Some(1)),
                    Err(e) if is_duplicate_key(&e) => Ok(None),
                    Err(e) => Err(map_err("insert document", e)),
                }
            }
            Some(v) => {
                let v = u64_to_i64("version", v)?;
                let filter = doc! { "_id": doc_key(kind, id), "version": v };
                let update = doc! { "$set": { "body": body, "version": v + 1 } };
                let r = timed("update document", self.docs.update_one(filter, update)).await?;
                Ok((r.matched_count == 1).then_some(v as u64 + 1))
            }
        }
    }

    async fn delete_doc(&self, kind: DocKind, id: &str, expected: Option<u64>) -> StoreResult<bool> {
        let mut filter = doc! { "_id": doc_key(kind, id) };
        if let Some(v) = expected {
            filter.insert("version", u64_to_i64("version", v)?);
        }
        let r = timed("delete document", self.docs.delete_one(filter)).await?;
        Ok(r.deleted_count == 1)
    }

    async fn list_docs(&self, kind: DocKind, prefix: &str) -> StoreResult<Vec<Doc>> {
        let find = self
            .docs
            .find(doc! { "kind": kind.as_str(), "key": { "$gte": prefix } })
            .sort(doc! { "key": 1 });
        let docs: Vec<Document> =
            timed("list documents", async move { find.await?.try_collect().await }).await?;
        docs.into_iter()
            .filter(|d| d.get_str("key").is_ok_and(|k| k.starts_with(prefix)))
            .map(|d| doc_from_bson(kind, d))
            .collect()
    }

    async fn put_blob(
        &self,
        name: &BlobName,
        mut data: ByteStream,
        max_bytes: u64,
    ) -> Result<BlobInfo, BlobError> {
        let filename = name.to_string();
        let mut upload = timed("open blob upload", self.blobs.open_upload_stream(&filename)).await?;
        let mut size: u64 = 0;
        let failure = loop {
            let Some(piece) = data.next().await else {
                break None;
            };
            let piece = match piece {
                Ok(p) => p,
                Err(e) => break Some(BlobError::Source(e)),
            };
            size += piece.len() as u64;
            if size > max_bytes {
                break Some(BlobError::TooLarge { limit: max_bytes });
            }
            if let Err(e) = upload.write_all(&piece).await {
                break Some(StoreError::Unavailable(format!("write blob {filename}: {e}")).into());
            }
        };
        if let Some(failure) = failure {
            // Deletes the chunks written so far; nothing becomes visible.
            let _ = upload.abort().await;
            return Err(failure);
        }
        upload
            .close()
            .await
            .map_err(|e| StoreError::Unavailable(format!("finish blob {filename}: {e}")))?;
        let id = upload.id().clone();
        let stored = timed("read blob", self.blob_files.find_one(doc! { "_id": id.clone() }))
            .await?
            .ok_or_else(|| StoreError::Other(format!("blob {filename} vanished after its upload")))?;
        // The new revision is complete: older ones go (readers only ever open the newest).
        let older = self
            .blob_files
            .find(doc! { "filename": &filename, "uploadDate": { "$lt": stored.upload_date } });
        let older: Vec<FilesCollectionDocument> =
            timed(
                "find older blobs",
                async move { older.await?.try_collect().await },
            )
            .await?;
        for file in older {
            if let Err(e) = timed("delete older blob", self.blobs.delete(file.id)).await {
                tracing::warn!(blob = %filename, error = %e, "cannot delete an older revision");
            }
        }
        Ok(BlobInfo {
            size: stored.length,
            stored_at: Millis(stored.upload_date.timestamp_millis()),
        })
    }

    async fn blob_info(&self, name: &BlobName) -> StoreResult<Option<BlobInfo>> {
        Ok(self.newest_blob(name).await?.map(|f| BlobInfo {
            size: f.length,
            stored_at: Millis(f.upload_date.timestamp_millis()),
        }))
    }

    async fn open_blob(&self, name: &BlobName) -> StoreResult<Option<(BlobInfo, ByteStream)>> {
        let Some(file) = self.newest_blob(name).await? else {
            return Ok(None);
        };
        let info = BlobInfo {
            size: file.length,
            stored_at: Millis(file.upload_date.timestamp_millis()),
        };
        let reader = timed("open blob", self.blobs.open_download_stream(file.id)).await?;
        let stream = futures::stream::try_unfold(reader, |mut reader| async move {
            let mut buf = vec![0u8; 64 * 1024];
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), reader)))
        });
        Ok(Some((info, Box::pin(stream))))
    }

    async fn delete_blob(&self, name: &BlobName) -> StoreResult<bool> {
        let find = self.blob_files.find(doc! { "filename": name.to_string() });
        let files: Vec<FilesCollectionDocument> =
            timed("find blobs", async move { find.await?.try_collect().await }).await?;
        let any = !files.is_empty();
        for file in files {
            timed("delete blob", self.blobs.delete(file.id)).await?;
        }
        Ok(any)
    }
}

impl MongoStore {
    /// The newest complete revision of a blob.
    async fn newest_blob(&self, name: &BlobName) -> StoreResult<Option<FilesCollectionDocument>> {
        timed(
            "find blob",
            self.blob_files
                .find_one(doc! { "filename": name.to_string() })
                .sort(doc! { "uploadDate": -1, "_id": -1 }),
        )
        .await
    }
}

// ----- small documents

fn doc_key(kind: DocKind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

fn doc_from_bson(kind: DocKind, d: Document) -> StoreResult<Doc> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "{} document {:?}: bad {what}",
            kind.as_str(),
            d.get("_id")
        ))
    };
    let id = d.get_str("key").map_err(|_| corrupt("key"))?.to_owned();
    let version = match d.get("version") {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        _ => return Err(corrupt("version")),
    };
    let body =
        serde_json::from_str(d.get_str("body").map_err(|_| corrupt("body"))?).map_err(|_| corrupt("body"))?;
    Ok(Doc {
        id,
        version: version.max(0) as u64,
        body,
    })
}

impl MongoStore {
    /// One upsert on the agent's document. Two concurrent upserts of a new `_id` can race to
    /// insert it; the loser gets a duplicate-key error and simply retries as an update.
    async fn upsert_agent(&self, what: &str, name: &AgentName, update: Document) -> StoreResult<AgentRecord> {
        let mut retried = false;
        loop {
            let action = self
                .agents
                .find_one_and_update(doc! { "_id": name.as_str() }, update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After);
            match deadline(what, action).await? {
                Ok(Some(doc)) => return agent_from_doc(doc),
                Ok(None) => return Err(StoreError::Other(format!("{what}: upsert returned no document"))),
                Err(e) if !retried && is_duplicate_key(&e) => retried = true,
                Err(e) => return Err(map_err(what, e)),
            }
        }
    }
}

// ----- jobs: document shape

/// A job as stored. Field names are the query vocabulary of [`job_filter`] and [`query_filter`].
#[derive(Serialize, Deserialize)]
struct JobDoc {
    #[serde(rename = "_id")]
    id: String,
    queue: DeviceClass,
    /// The job file as JSON text (see the module docs for why not a subdocument).
    definition: String,
    state: JobState,
    priority: u32,
    tags: Vec<String>,
    #[serde(default)]
    submitted_by: Option<String>,
    /// The job file's `name`, copied out of `definition` for searches and the name order (jobs
    /// stored before it was copied get it when a store opens: [`MongoStore::backfill`]).
    #[serde(default)]
    name: Option<String>,
    /// `ended_at - started_at`, for the `LongestFirst` order (see [`run_time_expr`]).
    #[serde(default)]
    run_time_ms: Option<i64>,
    created_at: Millis,
    updated_at: Millis,
    #[serde(default)]
    enqueued_at: Option<Millis>,
    #[serde(default)]
    awaiting_attachments: bool,
    attempt: u32,
    #[serde(default)]
    lease: Option<Lease>,
    #[serde(default)]
    attempts: Vec<AttemptRecord>,
    #[serde(default)]
    started_at: Option<Millis>,
    #[serde(default)]
    ended_at: Option<Millis>,
    #[serde(default)]
    phase_status: BTreeMap<String, i32>,
    /// JSON text, like `definition`: the agent reports arbitrary keys.
    #[serde(default)]
    device_info: Option<String>,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    cancel_requested: Option<String>,
    #[serde(default)]
    released: Option<String>,
    #[serde(default)]
    reservation: Option<Reservation>,
    #[serde(default)]
    last_output_at: Option<Millis>,
    /// Multi-device children, as job ids.
    #[serde(default)]
    children: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    output_truncated: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_shipped: Option<ShippedOutput>,
}

fn job_to_doc(job: &JobRecord) -> StoreResult<Document> {
    let definition = serde_json::to_string(&job.definition)
        .map_err(|e| StoreError::Other(format!("job {}: encode definition: {e}", job.job_id)))?;
    let device_info = job.device_info.as_ref().map(json_text).transpose()?;
    let shaped = JobDoc {
        id: job.job_id.to_string(),
        queue: job.queue.clone(),
        definition,
        name: job.definition.name().map(str::to_owned),
        run_time_ms: job.ended_at.zip(job.started_at).map(|(e, s)| e.0 - s.0),
        state: job.state,
        priority: job.priority,
        tags: job.tags.clone(),
        submitted_by: job.submitted_by.clone(),
        created_at: job.created_at,
        updated_at: job.updated_at,
        enqueued_at: job.enqueued_at,
        awaiting_attachments: job.awaiting_attachments,
        attempt: job.attempt,
        lease: job.lease.clone(),
        attempts: job.attempts.clone(),
        started_at: job.started_at,
        ended_at: job.ended_at,
        phase_status: job.phase_status.clone(),
        device_info,
        failure: job.failure.clone(),
        cancel_requested: job.cancel_requested.clone(),
        released: job.released.clone(),
        reservation: job.reservation.clone(),
        last_output_at: job.last_output_at,
        children: job.children.iter().map(Uuid::to_string).collect(),
        output_truncated: job.output_truncated.clone(),
        output_shipped: job.output_shipped,
    };
    bson::to_document(&shaped).map_err(|e| StoreError::Other(format!("job {}: encode: {e}", job.job_id)))
}

fn job_from_doc(doc: Document) -> StoreResult<JobRecord> {
    let id = doc.get_str("_id").unwrap_or("?").to_owned();
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("job {id}: {what}: {e}"));
    let d: JobDoc = bson::from_document(doc).map_err(|e| corrupt("decode", &e))?;
    let job_id = Uuid::parse_str(&d.id).map_err(|e| corrupt("_id", &e))?;
    let definition: JobDefinition =
        serde_json::from_str(&d.definition).map_err(|e| corrupt("definition", &e))?;
    let device_info = d
        .device_info
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| corrupt("device_info", &e))?;
    Ok(JobRecord {
        job_id,
        queue: d.queue,
        definition,
        state: d.state,
        priority: d.priority,
        tags: d.tags,
        submitted_by: d.submitted_by,
        created_at: d.created_at,
        updated_at: d.updated_at,
        enqueued_at: d.enqueued_at,
        awaiting_attachments: d.awaiting_attachments,
        attempt: d.attempt,
        lease: d.lease,
        attempts: d.attempts,
        started_at: d.started_at,
        ended_at: d.ended_at,
        phase_status: d.phase_status,
        device_info,
        failure: d.failure,
        cancel_requested: d.cancel_requested,
        released: d.released,
        reservation: d.reservation,
        last_output_at: d.last_output_at,
        children: d
            .children
            .iter()
            .map(|c| Uuid::parse_str(c))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt("children", &e))?,
        output_truncated: d.output_truncated,
        output_shipped: d.output_shipped,
    })
}

fn json_text(v: &serde_json::Value) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Other(format!("encode JSON: {e}")))
}

fn to_bson<T: Serialize>(what: &str, v: &T) -> StoreResult<Bson> {
    bson::to_bson(v).map_err(|e| StoreError::Other(format!("encode {what}: {e}")))
}

// ----- jobs: preconditions, updates and queries translated

/// [`Precondition::holds`] as a filter on the job's document.
fn job_filter(job_id: Uuid, pre: &Precondition) -> Document {
    let mut clauses = vec![doc! { "_id": job_id.to_string() }];
    if let Some(states) = &pre.states {
        clauses.push(doc! { "state": { "$in": states.iter().map(|s| s.as_str()).collect::<Vec<_>>() } });
    }
    if let Some(attempt) = pre.attempt {
        clauses.push(doc! { "attempt": i64::from(attempt) });
    }
    if let Some(agent) = &pre.lease_agent {
        // Never matches a null or missing lease, like `lease.agent == Some(agent)`.
        clauses.push(doc! { "lease.agent": agent.as_str() });
    }
    if let Some(t) = pre.lease_expired_at {
        // A comparison never matches null or missing: no lease, no expiry.
        clauses.push(doc! { "lease.until": { "$lt": t.0 } });
    }
    if let Some(t) = pre.lease_valid_at {
        clauses.push(doc! { "lease.until": { "$gte": t.0 } });
    }
    if pre.not_enqueued {
        // Matches null and missing alike.
        clauses.push(doc! { "enqueued_at": Bson::Null });
    }
    and(clauses)
}

/// [`JobQuery::matches`] as a filter.
fn query_filter(q: &JobQuery) -> Document {
    let mut clauses = vec![];
    if let Some(queue) = &q.queue {
        clauses.push(doc! { "queue": queue.as_str() });
    }
    if let Some(states) = &q.states {
        clauses.push(doc! { "state": { "$in": states.iter().map(|s| s.as_str()).collect::<Vec<_>>() } });
    }
    if !q.tags.is_empty() {
        let op = if q.all_tags { "$all" } else { "$in" };
        clauses.push(doc! { "tags": { op: q.tags.clone() } });
    }
    if let Some(t) = q.lease_expired_before {
        clauses.push(doc! { "lease.until": { "$lt": t.0 } });
    }
    if let Some(t) = q.not_enqueued_since {
        clauses.push(doc! { "enqueued_at": Bson::Null, "updated_at": { "$lt": t.0 } });
    }
    if let Some((priority, created)) = q.ahead_of {
        let p = i64::from(priority);
        clauses.push(doc! { "$or": [
            { "priority": { "$gt": p } },
            { "priority": p, "created_at": { "$lt": created.0 } },
        ] });
    }
    if let Some(t) = q.created_after {
        clauses.push(doc! { "created_at": { "$gt": t.0 } });
    }
    if let Some(text) = &q.text {
        clauses.push(doc! { "$or": [
            { "name": { "$regex": regex_escape(text), "$options": "i" } },
            { "tags": text.as_str() },
        ] });
    }
    if let Some(who) = &q.submitted_by {
        clauses.push(doc! { "submitted_by": who.as_str() });
    }
    and(clauses)
}

/// `s` as a regular expression that matches it literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn and(mut clauses: Vec<Document>) -> Document {
    match clauses.len() {
        0 => Document::new(),
        1 => clauses.remove(0),
        _ => doc! { "$and": clauses },
    }
}

/// A translated [`JobUpdate`].
enum Modification {
    /// Update operators, with the array filters they use. The usual form.
    Operators {
        update: Document,
        array_filters: Option<Vec<Document>>,
    },
    /// An aggregation-pipeline update (MongoDB 4.2+), for the one combination update operators
    /// cannot express in one write: appending an attempt and closing one in the same update
    /// (`$push` on `attempts` conflicts with any `$set` inside it).
    Pipeline(Vec<Document>),
}

/// The array-filter identifier naming the attempt being closed.
const CLOSING: &str = "closing";

/// `run_time_ms` from a job document's own fields: null unless both instants are set (the
/// `LongestFirst` order's key; `job_to_doc` computes the same).
fn run_time_expr() -> Document {
    doc! { "$subtract": ["$ended_at", "$started_at"] }
}

/// [`JobUpdate::apply`] as one update.
///
/// - optional fields: `$set` to the value, or to null for `Some(None)`;
/// - `clear_phase_status` with `phase_status_set`: `$set` the whole map to the one entry
///   (MongoDB refuses `$set` of `phase_status` and `phase_status.<p>` together, and clearing then
///   inserting one entry is exactly that map); clear alone: `$set` to `{}`; set alone:
///   `$set` of `phase_status.<p>`;
/// - `close_attempt(n, …)`: `$set` of `attempts.$[closing].*` with array filter
///   `closing.attempt == n`, so a missing attempt changes nothing, as in the reference (a
///   positional `attempts.<n-1>` path would pad the array with nulls instead);
/// - `push_attempt`, or a change of `started_at` or `ended_at`: a pipeline instead (the `$set`s
///   as literals, the attempt appended, the attempt closed with `$map`, and `run_time_ms`
///   recomputed from the document as updated).
fn job_update(u: &JobUpdate) -> StoreResult<Modification> {
    let mut set = doc! { "updated_at": u.updated_at.0 };
    if let Some(s) = u.state {
        set.insert("state", s.to().as_str());
    }
    if let Some(a) = u.attempt {
        set.insert("attempt", i64::from(a));
    }
    if let Some(lease) = &u.lease {
        set.insert("lease", to_bson("lease", lease)?);
    }
    if let Some(t) = u.enqueued_at {
        set.insert("enqueued_at", t.map(|t| t.0));
    }
    if let Some(a) = u.awaiting_attachments {
        set.insert("awaiting_attachments", a);
    }
    if let Some(t) = u.started_at {
        set.insert("started_at", t.map(|t| t.0));
    }
    if let Some(t) = u.ended_at {
        set.insert("ended_at", t.map(|t| t.0));
    }
    if let Some(f) = &u.failure {
        set.insert("failure", to_bson("failure", f)?);
    }
    if let Some(c) = &u.cancel_requested {
        set.insert("cancel_requested", c.as_deref());
    }
    if let Some(r) = &u.released {
        set.insert("released", r.as_deref());
    }
    match (u.clear_phase_status, u.phase_status_set) {
        (true, Some((phase, code))) => {
            set.insert("phase_status", doc! { phase.as_str(): code });
        }
        (true, None) => {
            set.insert("phase_status", Document::new());
        }
        (false, Some((phase, code))) => {
            // Phase names are fixed snake_case words: safe in a path.
            set.insert(format!("phase_status.{}", phase.as_str()), code);
        }
        (false, None) => {}
    }
    if let Some(info) = &u.device_info {
        set.insert("device_info", info.as_ref().map(json_text).transpose()?);
    }
    if let Some(r) = &u.reservation {
        set.insert("reservation", to_bson("reservation", r)?);
    }
    if let Some(t) = u.last_output_at {
        set.insert("last_output_at", t.0);
    }
    if let Some(t) = &u.output_truncated {
        set.insert("output_truncated", to_bson("output_truncated", t)?);
    }
    if let Some(s) = &u.output_shipped {
        set.insert("output_shipped", to_bson("output_shipped", s)?);
    }
    let pushed = u
        .push_attempt
        .as_ref()
        .map(|a| to_bson("attempt", a))
        .transpose()?;

    // `run_time_ms` derives from the stored `started_at` and `ended_at`, so an update touching
    // either computes it from the document as updated: only a pipeline can.
    let touches_run_time = u.started_at.is_some() || u.ended_at.is_some();
    if pushed.is_none() && !touches_run_time {
        let mut array_filters = None;
        if let Some((n, ended, outcome)) = &u.close_attempt {
            set.insert(format!("attempts.$[{CLOSING}].ended_at"), ended.0);
            set.insert(format!("attempts.$[{CLOSING}].outcome"), outcome.as_str());
            array_filters = Some(vec![doc! { format!("{CLOSING}.attempt"): i64::from(*n) }]);
        }
        let mut update = doc! { "$set": set };
        if let Some(child) = u.add_child {
            update.insert("$addToSet", doc! { "children": child.to_string() });
        }
        return Ok(Modification::Operators {
            update,
            array_filters,
        });
    }
    // Same order as the reference: set, append, then close attempt `n` (possibly the new one).
    let mut first = Document::new();
    for (path, value) in set {
        // In a pipeline, strings starting with `$` would be field paths.
        first.insert(path, doc! { "$literal": value });
    }
    if let Some(pushed) = pushed {
        first.insert(
            "attempts",
            doc! { "$concatArrays": [ { "$ifNull": ["$attempts", []] }, [ { "$literal": pushed } ] ] },
        );
    }
    if let Some(child) = u.add_child {
        let child = child.to_string();
        let children = doc! { "$ifNull": ["$children", []] };
        first.insert(
            "children",
            doc! { "$cond": [
                { "$in": [ { "$literal": &child }, children.clone() ] },
                children.clone(),
                { "$concatArrays": [ children, [ { "$literal": &child } ] ] },
            ] },
        );
    }
    let mut stages = vec![doc! { "$set": first }];
    if let Some((n, ended, outcome)) = &u.close_attempt {
        let close = doc! {
            "$map": {
                "input": { "$ifNull": ["$attempts", []] },
                "as": "a",
                "in": { "$cond": [
                    { "$eq": ["$$a.attempt", i64::from(*n)] },
                    { "$mergeObjects": ["$$a", {
                        "ended_at": { "$literal": ended.0 },
                        "outcome": { "$literal": outcome.as_str() },
                    }] },
                    "$$a",
                ] },
            }
        };
        stages.push(doc! { "$set": { "attempts": close } });
    }
    if touches_run_time {
        stages.push(doc! { "$set": { "run_time_ms": run_time_expr() } });
    }
    Ok(Modification::Pipeline(stages))
}

// ----- output

fn fragment_to_doc(f: &OutputFragment) -> StoreResult<Document> {
    Ok(doc! {
        "job_id": f.job_id.to_string(),
        "attempt": i64::from(f.attempt),
        "stream": f.stream.as_str(),
        "seq": seq_to_i64(f.seq)?,
        "phase": f.phase.as_str(),
        "at": f.at.0,
        "data": Binary { subtype: BinarySubtype::Generic, bytes: f.data.clone() },
    })
}

fn fragment_from_doc(d: &Document) -> StoreResult<OutputFragment> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("output fragment {:?}: bad {what}", d.get("_id")));
    let str_field = |k: &str| d.get_str(k).map_err(|_| corrupt(k));
    let int_field = |k: &str| match d.get(k) {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        _ => Err(corrupt(k)),
    };
    Ok(OutputFragment {
        job_id: Uuid::parse_str(str_field("job_id")?).map_err(|_| corrupt("job_id"))?,
        attempt: u32::try_from(int_field("attempt")?).map_err(|_| corrupt("attempt"))?,
        stream: LogStream::parse(str_field("stream")?).ok_or_else(|| corrupt("stream"))?,
        seq: u64::try_from(int_field("seq")?).map_err(|_| corrupt("seq"))?,
        phase: Phase::parse(str_field("phase")?).ok_or_else(|| corrupt("phase"))?,
        at: Millis(int_field("at")?),
        data: d.get_binary_generic("data").map_err(|_| corrupt("data"))?.clone(),
    })
}

fn seq_to_i64(seq: u64) -> StoreResult<i64> {
    u64_to_i64("seq", seq)
}

fn u64_to_i64(what: &str, v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} does not fit in a BSON Int64")))
}

// ----- agents

/// What the agent reports about itself: everything but the admin's decisions.
fn reported_fields(a: &AgentRecord) -> StoreResult<Document> {
    Ok(doc! {
        "state": a.state.as_str(),
        "job_id": a.job_id.map(|id| id.to_string()),
        "queues": a.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(),
        "location": a.location.as_deref(),
        "provision_type": a.provision_type.as_deref(),
        "comment": a.comment.as_deref(),
        "interval_ms": u64_to_i64("interval_ms", a.interval_ms)?,
        "last_seen": a.last_seen.0,
        "version": a.version.as_deref(),
    })
}

#[derive(Deserialize)]
struct AgentDoc {
    #[serde(rename = "_id")]
    name: AgentName,
    state: AgentState,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    queues: Vec<DeviceClass>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    provision_type: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    admin_state: Option<AdminState>,
    #[serde(default)]
    admin_comment: Option<String>,
    interval_ms: u64,
    last_seen: Millis,
    #[serde(default)]
    version: Option<String>,
}

fn agent_from_doc(doc: Document) -> StoreResult<AgentRecord> {
    let name = doc.get_str("_id").unwrap_or("?").to_owned();
    let d: AgentDoc =
        bson::from_document(doc).map_err(|e| StoreError::Corrupt(format!("agent {name}: decode: {e}")))?;
    let job_id = d
        .job_id
        .map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("agent {name}: job_id: {e}")))?;
    Ok(AgentRecord {
        name: d.name,
        state: d.state,
        job_id,
        queues: d.queues,
        location: d.location,
        provision_type: d.provision_type,
        comment: d.comment,
        admin_state: d.admin_state,
        admin_comment: d.admin_comment,
        interval_ms: d.interval_ms,
        last_seen: d.last_seen,
        version: d.version,
    })
}

// ----- errors

/// Runs one driver operation with [`OPERATION_TIMEOUT`], mapping its error.
async fn timed<T>(what: &str, op: impl IntoFuture<Output = mongodb::error::Result<T>>) -> StoreResult<T> {
    deadline(what, op).await?.map_err(|e| map_err(what, e))
}

/// Runs one driver operation with [`OPERATION_TIMEOUT`], leaving its error to the caller
/// (for the few that treat a duplicate key as an answer).
async fn deadline<T>(
    what: &str,
    op: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> StoreResult<mongodb::error::Result<T>> {
    tokio::time::timeout(OPERATION_TIMEOUT, op)
        .await
        .map_err(|_| StoreError::Unavailable(format!("{what}: no answer within {OPERATION_TIMEOUT:?}")))
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY)),
        _ => false,
    }
}

/// Server error codes that mean "not now": a failover, a shutdown, a timeout, a write that
/// could not reach a majority in time. Retrying later is the right answer to all of them.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed (wtimeout)
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// The one place driver errors become [`StoreError`]s.
fn map_err(what: &str, e: mongodb::error::Error) -> StoreError {
    let transient = match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => TRANSIENT_CODES.contains(&w.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => TRANSIENT_CODES.contains(&w.code),
        ErrorKind::InsertMany(m) => m
            .write_concern_error
            .as_ref()
            .is_some_and(|w| TRANSIENT_CODES.contains(&w.code)),
        _ => false,
    } || e.contains_label(mongodb::error::RETRYABLE_WRITE_ERROR);
    if transient {
        return StoreError::Unavailable(format!("{what}: {e}"));
    }
    match e.kind.as_ref() {
        ErrorKind::BsonDeserialization(_) | ErrorKind::InvalidResponse { .. } => {
            StoreError::Corrupt(format!("{what}: {e}"))
        }
        _ => StoreError::Other(format!("{what}: {e}")),
    }
}

#[async_trait]
impl SchedulerStore for MongoStore {
    async fn update_job(
        &self,
        job_id: Uuid,
        pre: &Precondition,
        update: &JobUpdate,
    ) -> StoreResult<Option<JobRecord>> {
        let filter = job_filter(job_id, pre);
        let found = match job_update(update)? {
            Modification::Operators {
                update,
                array_filters,
            } => {
                let mut action = self
                    .jobs
                    .find_one_and_update(filter, update)
                    .return_document(ReturnDocument::After);
                if let Some(filters) = array_filters {
                    action = action.array_filters(filters);
                }
                timed("update job", action).await?
            }
            Modification::Pipeline(stages) => {
                let action = self
                    .jobs
                    .find_one_and_update(filter, stages)
                    .return_document(ReturnDocument::After);
                timed("update job", action).await?
            }
        };
        found.map(job_from_doc).transpose()
    }

    async fn purge_ended_jobs(&self, purge: &Purge) -> StoreResult<u64> {
        if purge.limit == 0 {
            return Ok(0);
        }
        let mut clauses = vec![doc! {
            "state": { "$in": ENDED_STATES.to_vec() },
            "updated_at": { "$lt": purge.ended_before.0 },
        }];
        if let Some(queue) = &purge.queue {
            clauses.push(doc! { "queue": queue.as_str() });
        }
        if !purge.except_queues.is_empty() {
            clauses.push(doc! { "queue": { "$nin": purge.except_queues.clone() } });
        }
        let filter = and(clauses);
        let find = self
            .jobs
            .find(filter.clone())
            .projection(doc! { "_id": 1 })
            .sort(doc! { "updated_at": 1 })
            .limit(i64::from(purge.limit));
        let found: Vec<Document> = timed(
            "find purgeable jobs",
            async move { find.await?.try_collect().await },
        )
        .await?;
        let mut removed = 0;
        for d in found {
            let Ok(id) = d.get_str("_id").map(str::to_owned) else {
                continue;
            };
            let Ok(job_id) = Uuid::parse_str(&id) else {
                continue;
            };
            // What belongs to the job goes first, the job last: if this stops half-way, the job
            // is still found by the next batch (here or in another scheduler).
            timed("purge output", self.output.delete_many(doc! { "job_id": &id })).await?;
            timed(
                "purge posted result",
                self.docs
                    .delete_one(doc! { "_id": doc_key(DocKind::PostedResult, &id) }),
            )
            .await?;
            self.delete_blob(&BlobName::attachments(job_id)).await?;
            self.delete_blob(&BlobName::artifact(job_id)).await?;
            let mut one = filter.clone();
            one.insert("_id", &id);
            let deleted = timed("purge job", self.jobs.delete_one(one)).await?;
            removed += deleted.deleted_count;
        }
        Ok(removed)
    }
}

//! The scheduler's store, timed: every call's latency by operation
//! (`flinger_scheduler_store_call_duration_seconds`). Only calls pass through; the store's
//! meaning is the wrapped one's.

use crate::store::{
    AgentRecord, BlobError, BlobInfo, BlobName, ByteStream, Doc, DocKind, DynSchedulerStore, Inserted,
    JobCount, JobQuery, JobRecord, JobUpdate, OutputFragment, OutputQuery, Precondition, Purge,
    SchedulerStore, Store, StoreResult,
};
use async_trait::async_trait;
use broker_schema::messages::{AdminState, Heartbeat, LogStream};
use broker_schema::{AgentName, Millis};
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// A store whose every call is timed.
pub struct Metered {
    inner: DynSchedulerStore,
}

impl Metered {
    pub fn wrap(inner: DynSchedulerStore) -> DynSchedulerStore {
        Arc::new(Metered { inner })
    }
}

async fn timed<T, E>(operation: &'static str, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!(
        "flinger_scheduler_store_call_duration_seconds",
        "operation" => operation,
        "result" => if result.is_ok() { "ok" } else { "error" },
    )
    .record(started.elapsed().as_secs_f64());
    result
}

#[async_trait]
impl Store for Metered {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.inner.ping()).await
    }
    async fn insert_job(&self, job: &JobRecord) -> StoreResult<Inserted> {
        timed("insert_job", self.inner.insert_job(job)).await
    }
    async fn get_job(&self, job_id: Uuid) -> StoreResult<Option<JobRecord>> {
        timed("get_job", self.inner.get_job(job_id)).await
    }
    async fn discard_job(&self, job_id: Uuid) -> StoreResult<bool> {
        timed("discard_job", self.inner.discard_job(job_id)).await
    }
    async fn find_jobs(&self, query: &JobQuery) -> StoreResult<Vec<JobRecord>> {
        timed("find_jobs", self.inner.find_jobs(query)).await
    }
    async fn count_jobs(&self, query: &JobQuery) -> StoreResult<u64> {
        timed("count_jobs", self.inner.count_jobs(query)).await
    }
    async fn count_live_jobs(&self) -> StoreResult<Vec<JobCount>> {
        timed("count_live_jobs", self.inner.count_live_jobs()).await
    }
    async fn append_output(&self, fragments: &[OutputFragment]) -> StoreResult<()> {
        timed("append_output", self.inner.append_output(fragments)).await
    }
    async fn read_output(&self, query: &OutputQuery) -> StoreResult<Vec<OutputFragment>> {
        timed("read_output", self.inner.read_output(query)).await
    }
    async fn count_output(&self, job_id: Uuid, attempt: u32, stream: LogStream) -> StoreResult<u64> {
        timed("count_output", self.inner.count_output(job_id, attempt, stream)).await
    }
    async fn record_heartbeat(&self, hb: &Heartbeat) -> StoreResult<AgentRecord> {
        timed("record_heartbeat", self.inner.record_heartbeat(hb)).await
    }
    async fn set_agent_admin(
        &self,
        name: &AgentName,
        state: Option<AdminState>,
        comment: &str,
        now: Millis,
    ) -> StoreResult<AgentRecord> {
        timed(
            "set_agent_admin",
            self.inner.set_agent_admin(name, state, comment, now),
        )
        .await
    }
    async fn get_agent(&self, name: &AgentName) -> StoreResult<Option<AgentRecord>> {
        timed("get_agent", self.inner.get_agent(name)).await
    }
    async fn list_agents(&self) -> StoreResult<Vec<AgentRecord>> {
        timed("list_agents", self.inner.list_agents()).await
    }
    async fn get_doc(&self, kind: DocKind, id: &str) -> StoreResult<Option<Doc>> {
        timed("get_doc", self.inner.get_doc(kind, id)).await
    }
    async fn put_doc(
        &self,
        kind: DocKind,
        id: &str,
        expected: Option<u64>,
        body: &serde_json::Value,
    ) -> StoreResult<Option<u64>> {
        timed("put_doc", self.inner.put_doc(kind, id, expected, body)).await
    }
    async fn delete_doc(&self, kind: DocKind, id: &str, expected: Option<u64>) -> StoreResult<bool> {
        timed("delete_doc", self.inner.delete_doc(kind, id, expected)).await
    }
    async fn list_docs(&self, kind: DocKind, prefix: &str) -> StoreResult<Vec<Doc>> {
        timed("list_docs", self.inner.list_docs(kind, prefix)).await
    }
    async fn put_blob(
        &self,
        name: &BlobName,
        data: ByteStream,
        max_bytes: u64,
    ) -> Result<BlobInfo, BlobError> {
        timed("put_blob", self.inner.put_blob(name, data, max_bytes)).await
    }
    async fn blob_info(&self, name: &BlobName) -> StoreResult<Option<BlobInfo>> {
        timed("blob_info", self.inner.blob_info(name)).await
    }
    /// Times the opening only: the bytes are read as the caller polls the stream.
    async fn open_blob(&self, name: &BlobName) -> StoreResult<Option<(BlobInfo, ByteStream)>> {
        timed("open_blob", self.inner.open_blob(name)).await
    }
    async fn delete_blob(&self, name: &BlobName) -> StoreResult<bool> {
        timed("delete_blob", self.inner.delete_blob(name)).await
    }
}

#[async_trait]
impl SchedulerStore for Metered {
    async fn update_job(
        &self,
        job_id: Uuid,
        pre: &Precondition,
        update: &JobUpdate,
    ) -> StoreResult<Option<JobRecord>> {
        timed("update_job", self.inner.update_job(job_id, pre, update)).await
    }
    async fn purge_ended_jobs(&self, purge: &Purge) -> StoreResult<u64> {
        timed("purge_ended_jobs", self.inner.purge_ended_jobs(purge)).await
    }
}

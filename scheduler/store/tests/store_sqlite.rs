//! The SQLite store: the whole contract suite, each case on its own fresh database file opened
//! twice (two handles, as the gateway and the scheduler would), plus what is SQLite's own.

#[macro_use]
mod contract;
use contract::Fresh;

use broker_schema::{JobDefinition, JobState, Millis};
use flinger_store::sqlite::SqliteStore;
use flinger_store::{
    DynSchedulerStore, Inserted, JobQuery, JobRecord, JobUpdate, Precondition, SchedulerStore, Store,
    StoreConfig, StoreError,
};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use uuid::Uuid;

async fn fresh() -> Fresh {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("flinger.db");
    let store: DynSchedulerStore = Arc::new(SqliteStore::open(&path).await.expect("open"));
    let other: DynSchedulerStore = Arc::new(SqliteStore::open(&path).await.expect("open again"));
    Fresh {
        store,
        other,
        guard: Box::new(dir),
    }
}

store_contract_tests!(fresh());

fn temp_db() -> (TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("flinger.db");
    (dir, path)
}

fn job() -> JobRecord {
    let def = JobDefinition::parse(serde_json::json!({"job_queue": "rpi4b"})).unwrap();
    JobRecord::new_waiting(Uuid::new_v4(), def, None, Millis(1_700_000_000_000))
}

/// Runs `sql` on the file directly, as an operator with the `sqlite3` shell would.
fn poke(path: &Path, sql: &str) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    c.execute_batch(sql).unwrap();
}

fn pragma(path: &Path, name: &str) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    c.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(s) => s,
            other => format!("{other:?}"),
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_file_see_each_others_writes() {
    let (_dir, path) = temp_db();
    let gateway = SqliteStore::open(&path).await.unwrap();
    let scheduler = SqliteStore::open(&path).await.unwrap();
    let j = job();
    assert_eq!(gateway.insert_job(&j).await.unwrap(), Inserted::New);
    assert_eq!(scheduler.get_job(j.job_id).await.unwrap(), Some(j.clone()));

    let enqueued = JobUpdate {
        enqueued_at: Some(Some(Millis(1_700_000_000_005))),
        ..JobUpdate::at(Millis(1_700_000_000_005))
    };
    let updated = scheduler
        .update_job(j.job_id, &Precondition::state(JobState::Waiting), &enqueued)
        .await
        .unwrap();
    assert!(updated.is_some());
    assert_eq!(gateway.get_job(j.job_id).await.unwrap(), updated);
    assert!(
        !gateway.discard_job(j.job_id).await.unwrap(),
        "the scheduler saw it on the broker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reopening_a_database_keeps_everything() {
    let (_dir, path) = temp_db();
    let j = job();
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_job(&j).await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.get_job(j.job_id).await.unwrap(), Some(j));
}

#[tokio::test(flavor = "multi_thread")]
async fn opening_sets_wal_and_the_schema_version() {
    let (_dir, path) = temp_db();
    let _store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(pragma(&path, "journal_mode"), "wal");
    assert_eq!(pragma(&path, "user_version"), "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_processes_opening_a_new_file_at_once_all_succeed() {
    let (_dir, path) = temp_db();
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await.map(|_| ()) })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("concurrent open");
    }
    assert_eq!(pragma(&path, "user_version"), "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_from_a_newer_flinger_is_refused() {
    let (_dir, path) = temp_db();
    drop(SqliteStore::open(&path).await.unwrap());
    poke(&path, "PRAGMA user_version = 99");
    match SqliteStore::open(&path).await {
        Err(StoreError::Other(msg)) => assert!(msg.contains("99"), "{msg}"),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("opened a database from the future"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_job_document_is_reported_corrupt() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.unwrap();
    let j = job();
    store.insert_job(&j).await.unwrap();
    poke(
        &path,
        &format!(
            "UPDATE jobs SET doc = '{{\"not\": \"a job\"}}' WHERE job_id = '{}'",
            j.job_id
        ),
    );
    assert!(matches!(
        store.get_job(j.job_id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.find_jobs(&JobQuery::default()).await,
        Err(StoreError::Corrupt(_))
    ));
    let update = JobUpdate::at(Millis(1));
    assert!(matches!(
        store
            .update_job(j.job_id, &Precondition::default(), &update)
            .await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_lock_held_past_the_busy_timeout_is_unavailable() {
    let (_dir, path) = temp_db();
    let store = SqliteStore::open(&path).await.unwrap();
    let j = job();
    store.insert_job(&j).await.unwrap();
    // Another process holds the write lock for longer than the 5 s busy timeout.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let err = store
        .update_job(j.job_id, &Precondition::default(), &JobUpdate::at(Millis(1)))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "gave up after {:?}",
        started.elapsed()
    );
    // Reads go on meanwhile (WAL), and the job is unchanged.
    assert_eq!(store.get_job(j.job_id).await.unwrap(), Some(j));
    locker.execute_batch("ROLLBACK").unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn store_config_opens_a_sqlite_file() {
    let (_dir, path) = temp_db();
    let store = StoreConfig::parse(&format!("sqlite:{}", path.display()))
        .unwrap()
        .open()
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    store.ping().await.unwrap();
    assert!(path.exists());
}

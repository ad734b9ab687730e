//! Schema migrations from the previous release's store files: a SQLite store written by the
//! schema before the current one (`fixtures/store-v3.db`, schema version 3, made by
//! `fixtures/make_v3.rs.txt` run at commit dae299a) is opened by this release, migrated in place,
//! and every job and output fragment in it reads back as it was written.

use broker_schema::messages::LogStream;
use broker_schema::{JobState, Millis, Phase};
use flinger_store::{JobOrder, JobQuery, OutputQuery, StoreConfig};
use uuid::Uuid;

#[tokio::test]
async fn a_previous_release_store_migrates_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store-v3.db"),
        &path,
    )
    .unwrap();
    let version = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&path), 3, "the fixture is a version-3 store");
    let store = StoreConfig::parse(&format!("sqlite:{}", path.display()))
        .unwrap()
        .open_for_scheduler()
        .await
        .unwrap();
    let t = |ms: i64| Millis(1_760_000_000_000 + ms);

    let done = store.get_job(Uuid::from_u128(1)).await.unwrap().expect("job 1");
    assert_eq!(done.state, JobState::Complete);
    assert_eq!(done.queue.as_str(), "rpi4b");
    assert_eq!(done.tags, ["nightly"]);
    assert_eq!(done.submitted_by.as_deref(), Some("alice"));
    assert_eq!((done.created_at, done.ended_at), (t(0), Some(t(500))));
    assert_eq!(done.phase_status.get("test"), Some(&0));
    assert_eq!(
        done.device_info,
        Some(serde_json::json!({"device_ip": "10.0.0.7"}))
    );
    assert_eq!(done.attempts.len(), 1);
    assert!(done.children.is_empty() && done.output_truncated.is_empty());
    let output = store
        .read_output(&OutputQuery::all(done.job_id, 1, LogStream::Output))
        .await
        .unwrap();
    let text: Vec<(Phase, &[u8])> = output.iter().map(|f| (f.phase, f.data.as_slice())).collect();
    assert_eq!(
        text,
        [
            (Phase::Provision, &b"provisioning noble\n"[..]),
            (Phase::Test, b"hi\n"),
            (Phase::Test, b"bye\n"),
        ]
    );
    let serial = store
        .read_output(&OutputQuery::all(done.job_id, 1, LogStream::Serial))
        .await
        .unwrap();
    assert_eq!(serial[0].data, b"U-Boot 2024\n");

    let failed = store.get_job(Uuid::from_u128(2)).await.unwrap().expect("job 2");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.failure.map(|f| f.reason),
        Some("global timeout of 60 s reached".into())
    );
    let out = store
        .read_output(&OutputQuery::all(failed.job_id, 1, LogStream::Output))
        .await
        .unwrap();
    assert_eq!(out[0].data, b"still running\n");

    let waiting = store.get_job(Uuid::from_u128(3)).await.unwrap().expect("job 3");
    assert_eq!((waiting.state, waiting.priority), (JobState::Waiting, 5));
    // What the new migration added works on the old rows: live jobs counted by its index.
    let live = store.count_live_jobs().await.unwrap();
    assert_eq!(live.iter().map(|c| c.count).sum::<u64>(), 1, "{live:?}");
    // And the web UI's orders over their expression indexes (migration 5): the job that ran
    // longest first, the one that never ran last.
    let longest = store
        .find_jobs(&JobQuery {
            order: JobOrder::LongestFirst,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(longest.last().map(|j| j.job_id), Some(waiting.job_id));
    assert!(longest[0].run_time() >= longest[1].run_time(), "{longest:?}");
    drop(store);
    assert_eq!(version(&path), 5, "migrated to the current schema");
}

//! Backup and restore of the embedded store, through the real binaries: `flinger-scheduler
//! backup` while the lab runs jobs, then a new lab started on a copy of the backup.

use flinger_tests::{AgentSpec, Lab, StoreKind, bin};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

fn backup(store: &str, path: &std::path::Path) -> std::process::Output {
    std::process::Command::new(bin("flinger-scheduler"))
        .env("FLINGER_STORE", store)
        .env("RUST_BACKTRACE", "0")
        .arg("backup")
        .arg(path)
        .output()
        .expect("flinger-scheduler backup")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_ended_jobs_and_runs_waiting_ones() {
    let mut lab = Lab::builder()
        .name("backup")
        .agent(AgentSpec::fake("bk-1", &["bk"]))
        .agent(AgentSpec::fake("later-1", &["bk-later"]))
        .start()
        .await;
    let ended = lab
        .submit(&json!({"job_queue": "bk", "test_data": {"fake": {"output": ["ended-before-backup"]}}}))
        .await;
    assert_eq!(lab.wait_done(ended, JOB_TIMEOUT).await["state"], "complete");
    // A job that waits at backup time: its queue is declared, its only agent stopped.
    lab.agent("later-1").stop(Duration::from_secs(10));
    let waiting = lab
        .submit(&json!({"job_queue": "bk-later", "test_data": {"fake": {"output": ["ran-after-restore"]}}}))
        .await;

    // Load: jobs submitted and run while the backup is taken.
    let mut load = Vec::new();
    for i in 0..20 {
        let id = lab
            .submit(&json!({"job_queue": "bk", "test_data": {"fake": {"output": [format!("load-{i}")]}}}))
            .await;
        load.push((i, id));
    }
    // Every job that had ended when the backup began must be in it, with its output.
    let mut ended_before: Vec<(String, Uuid)> = vec![("ended-before-backup".into(), ended)];
    for (i, id) in &load[..10] {
        lab.wait_done(*id, JOB_TIMEOUT).await;
        ended_before.push((format!("load-{i}"), *id));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("backup.db");
    let (store, path) = (lab.store.clone(), copy.clone());
    let out = tokio::task::spawn_blocking(move || backup(&store, &path))
        .await
        .expect("backup task");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backup failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("backed up"), "{stdout}");
    assert_eq!(lab.info(waiting).await.expect("waiting job")["state"], "waiting");
    // A second backup to the same path is refused: backups never overwrite.
    let (store, path) = (lab.store.clone(), copy.clone());
    let again = tokio::task::spawn_blocking(move || backup(&store, &path))
        .await
        .expect("backup task");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The disk dies: everything stops; the lab is restored into a fresh store from the copy
    // (a plain file copy, the processes stopped), on the same broker.
    lab.stop_processes();
    let namespace = lab.namespace.clone();
    drop(lab);
    let restored = dir.path().join("restored.db");
    std::fs::copy(&copy, &restored).expect("restore the copy");
    let lab = Lab::builder()
        .namespace(&namespace)
        .store(StoreKind::Url(format!("sqlite:{}", restored.display())))
        .agent(AgentSpec::fake("bk-1", &["bk"]))
        .agent(AgentSpec::fake("later-1", &["bk-later"]))
        .start()
        .await;
    for (marker, id) in &ended_before {
        let info = lab
            .info(*id)
            .await
            .unwrap_or_else(|| panic!("{marker}: job {id} lost"));
        assert_eq!(info["state"], "complete", "{marker}: {info}");
        let output = lab.output(*id).await;
        assert!(output.contains(marker.as_str()), "{marker}: {output}");
    }
    // The job that waited at backup time runs on the restored lab.
    let info = lab.wait_done(waiting, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert!(lab.output(waiting).await.contains("ran-after-restore"));
    lab.stop().await;
}

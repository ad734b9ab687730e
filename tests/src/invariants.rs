//! What must hold after any fault, checked from the store the lab wrote:
//! every accepted job ended; no two attempts of a job held a lease at the same time, by the
//! scheduler's records and by the output each attempt produced; a completed job's output has
//! no gaps.

use broker_schema::JobState;
use broker_schema::messages::LogStream;
use flinger_store::{DynStore, OutputQuery, Records, StoreConfig};
use uuid::Uuid;

pub async fn open(store: &str) -> DynStore {
    StoreConfig::parse(store)
        .expect("store url")
        .open()
        .await
        .expect("open store")
}

/// Every stored secret's id (`client/path`), sorted.
pub async fn secret_ids(store: &DynStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_secrets()
        .await
        .expect("list secrets")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// Panics with every violation found among `accepted` jobs.
pub async fn check(store: &str, accepted: &[Uuid]) {
    let store = open(store).await;
    let mut problems = vec![];
    for id in accepted {
        let Some(job) = store.get_job(*id).await.expect("get job") else {
            problems.push(format!("{id}: accepted but not in the store"));
            continue;
        };
        if !job.state.is_terminal() {
            problems.push(format!("{id}: not ended ({})", job.state));
        }
        if job.state == JobState::Failed && job.failure.is_none() {
            problems.push(format!("{id}: failed without a reason"));
        }
        for pair in job.attempts.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            match a.ended_at {
                Some(end) if end <= b.started_at => {}
                Some(end) => problems.push(format!(
                    "{id}: attempt {} (until {end}) overlaps attempt {} (from {})",
                    a.attempt, b.attempt, b.started_at
                )),
                None => problems.push(format!(
                    "{id}: attempt {} never ended but attempt {} started",
                    a.attempt, b.attempt
                )),
            }
        }
        // What actually ran, not only what the scheduler recorded: an attempt produced no
        // output after its lease was taken back (and so none while a later attempt ran).
        for a in &job.attempts {
            let Some(end) = a.ended_at else { continue };
            for stream in [LogStream::Output, LogStream::Serial] {
                let frags = store
                    .read_output(&OutputQuery::all(*id, a.attempt, stream))
                    .await
                    .expect("output");
                if let Some(late) = frags.iter().find(|f| f.at > end) {
                    problems.push(format!(
                        "{id}: attempt {} produced {stream:?} at {} after its lease ended at {end}",
                        a.attempt, late.at
                    ));
                }
            }
        }
        if job.state.is_terminal()
            && let Some(last) = job.attempts.last()
            && last.ended_at.is_none()
        {
            problems.push(format!("{id}: ended but its last attempt is open"));
        }
        if job.state == JobState::Complete {
            let frags = store
                .read_output(&OutputQuery::all(*id, job.attempt, LogStream::Output))
                .await
                .expect("output");
            for (i, f) in frags.iter().enumerate() {
                if f.seq != i as u64 {
                    problems.push(format!("{id}: output gap: fragment {i} has seq {}", f.seq));
                    break;
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "invariants violated:\n{}",
        problems.join("\n")
    );
}

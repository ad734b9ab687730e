//! The MongoDB store against a real server: the stand-in (`scripts/mongo-standin`, started on
//! port 27017 if nothing answers there) unless `FLINGER_TEST_MONGO_URI` names another one.
//!
//! Every test gets a database of its own, so tests run in parallel. Besides the shared contract
//! suite, this checks what is particular to the MongoDB translation: that updates and queries
//! agree with their Rust reference semantics on random inputs, that user keys with dots and `$`
//! survive, and that an unreachable server fails fast.

#[macro_use]
mod contract;
use contract::Fresh;

use broker_schema::messages::{AdminState, AgentState, Heartbeat, LogStream};
use broker_schema::{AgentName, DeviceClass, Failure, FailureKind, JobDefinition, JobState, Millis, Phase};
use flinger_store::mongo::MongoStore;
use flinger_store::{
    AgentRecord, AttemptRecord, Inserted, JobOrder, JobQuery, JobRecord, JobUpdate, Lease, OutputFragment,
    OutputQuery, Precondition, Reservation, SchedulerStore, StateChange, Store, StoreError,
};
use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use serde_json::json;
use std::future::IntoFuture;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

// ----- harness

const TEST_DB_PREFIX: &str = "flinger_test_";
/// Test databases older than this are dropped at start: every test drops its own when it passes,
/// a failed one keeps it to be looked at, and a later run clears it.
const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// The server's URI, starting the stand-in once per test binary if no URI is given.
async fn mongo_uri() -> String {
    static URI: OnceLock<String> = OnceLock::new();
    if let Some(uri) = URI.get() {
        return uri.clone();
    }
    tokio::task::spawn_blocking(|| URI.get_or_init(start_server).clone())
        .await
        .unwrap()
}

fn start_server() -> String {
    if let Ok(uri) = std::env::var("FLINGER_TEST_MONGO_URI") {
        return uri;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mongo-standin/standin");
    let status = std::process::Command::new(&script)
        .args(["start", "--port", "27017"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} start failed: {status}", script.display());
    "mongodb://127.0.0.1:27017/?directConnection=true".to_owned()
}

/// A name no other test (or test run) uses; it carries its creation time so that leftovers
/// can be told from databases of a run still going on.
fn fresh_db_name() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    format!("{TEST_DB_PREFIX}{secs}_{}", Uuid::new_v4().simple())
}

/// Drops test databases that earlier runs left behind, once per test binary.
async fn drop_leftovers(store: &MongoStore) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let client = store.database().client();
        let Ok(names) = client.list_database_names().await else {
            return;
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        for name in names {
            let Some(rest) = name.strip_prefix(TEST_DB_PREFIX) else {
                continue;
            };
            let Some(secs) = rest.split('_').next().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            if now.saturating_sub(secs) > LEFTOVER_AGE.as_secs() {
                let _ = client.database(&name).drop().await;
            }
        }
    })
    .await;
}

async fn fresh_mongo() -> MongoStore {
    let store = MongoStore::open(&mongo_uri().await, &fresh_db_name())
        .await
        .expect("open MongoDB store");
    drop_leftovers(&store).await;
    store
}

/// A fresh, empty database for one contract case, opened twice as two processes would.
async fn fresh() -> Fresh {
    let store = fresh_mongo().await;
    let other = MongoStore::open(&mongo_uri().await, store.database().name())
        .await
        .expect("open a second handle");
    let guard = Box::new(DropOnExit(store.database().clone()));
    Fresh {
        store: Arc::new(store),
        other: Arc::new(other),
        guard,
    }
}

store_contract_tests!(fresh());

/// Drops a contract case's database when the case is done. A failed case keeps it to be
/// looked at (the next run's leftover sweep removes it).
struct DropOnExit(Database);

impl Drop for DropOnExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // The contract cases run on a multi-thread runtime, where blocking in place is allowed.
        if let Ok(rt) = tokio::runtime::Handle::try_current()
            && rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        {
            let db = self.0.clone();
            let _ = tokio::task::block_in_place(|| rt.block_on(db.drop().into_future()));
        }
    }
}

async fn drop_db(store: MongoStore) {
    store.database().drop().await.expect("drop test database");
}

// ----- fixtures

fn definition(queue: &str, priority: u32, tags: &[&str]) -> JobDefinition {
    JobDefinition::parse(json!({
        "job_queue": queue,
        "job_priority": priority,
        "tags": tags,
        "test_data": { "test_cmds": "echo hi" },
    }))
    .unwrap()
}

fn waiting_job(queue: &str, priority: u32, tags: &[&str], created: i64) -> JobRecord {
    JobRecord::new_waiting(
        Uuid::new_v4(),
        definition(queue, priority, tags),
        None,
        Millis(created),
    )
}

fn agent(name: &str) -> AgentName {
    AgentName::parse(name).unwrap()
}

/// A small deterministic generator (xorshift), so failures reproduce without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
    fn subset<T: Clone>(&mut self, xs: &[T], max: u64) -> Vec<T> {
        (0..1 + self.below(max)).map(|_| self.pick(xs)).collect()
    }
    fn millis(&mut self, around: i64, spread: u64) -> Millis {
        Millis(around - spread as i64 + self.below(2 * spread + 1) as i64)
    }
}

// ----- the database itself

#[tokio::test]
async fn an_unreachable_database_is_reported_unavailable_within_seconds() {
    let started = Instant::now();
    let opened = tokio::time::timeout(
        Duration::from_secs(30),
        MongoStore::open(
            "mongodb://127.0.0.1:1/?directConnection=true",
            "flinger_test_unreachable",
        ),
    )
    .await
    .expect("open must give up on its own, not hang");
    match opened {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.is_transient()),
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("nothing listens on port 1, yet the store opened"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn opening_twice_keeps_the_indexes_and_the_data() {
    let name = fresh_db_name();
    let uri = mongo_uri().await;
    let first = MongoStore::open(&uri, &name).await.unwrap();
    let job = waiting_job("rpi4b", 0, &[], 1_000);
    first.insert_job(&job).await.unwrap();
    let second = MongoStore::open(&uri, &name)
        .await
        .expect("index creation is idempotent");
    assert_eq!(second.get_job(job.job_id).await.unwrap(), Some(job));
    drop_db(first).await;
}

/// Jobs stored by versions that did not copy `name` and `run_time_ms` out of the record get
/// them when a store opens: the search finds them by name, and the orders place them.
#[tokio::test]
async fn opening_gives_older_jobs_their_search_and_order_fields() {
    let name = fresh_db_name();
    let uri = mongo_uri().await;
    let first = MongoStore::open(&uri, &name).await.unwrap();
    let mut old = waiting_job("rpi4b", 0, &[], 1_000);
    let mut raw = serde_json::to_value(&old.definition).unwrap();
    raw["name"] = "nightly kernel smoke".into();
    old.definition = JobDefinition::parse(raw).unwrap();
    (old.state, old.started_at, old.ended_at) =
        (JobState::Complete, Some(Millis(2_000)), Some(Millis(9_000)));
    let short = JobRecord {
        job_id: Uuid::new_v4(),
        started_at: Some(Millis(2_000)),
        ended_at: Some(Millis(3_000)),
        ..old.clone()
    };
    let never_ran = waiting_job("rpi4b", 0, &[], 2_000);
    for job in [&old, &short, &never_ran] {
        first.insert_job(job).await.unwrap();
    }
    // As an older version stored them.
    let jobs = first.database().collection::<Document>("jobs");
    jobs.update_many(doc! {}, doc! { "$unset": { "name": "", "run_time_ms": "" } })
        .await
        .unwrap();
    let by_name = JobQuery {
        text: Some("KERNEL".into()),
        ..Default::default()
    };
    assert_eq!(
        first.find_jobs(&by_name).await.unwrap(),
        vec![],
        "positive control: not found before"
    );

    let second = MongoStore::open(&uri, &name).await.unwrap();
    let ids = |js: Vec<JobRecord>| js.into_iter().map(|j| j.job_id).collect::<Vec<_>>();
    let mut found = ids(second.find_jobs(&by_name).await.unwrap());
    found.sort();
    let mut named = vec![old.job_id, short.job_id];
    named.sort();
    assert_eq!(found, named, "both named jobs, and not the nameless one");
    let longest = JobQuery {
        order: JobOrder::LongestFirst,
        ..Default::default()
    };
    assert_eq!(
        ids(second.find_jobs(&longest).await.unwrap()),
        vec![old.job_id, short.job_id, never_ran.job_id]
    );
    drop_db(first).await;
}

#[tokio::test]
async fn jobs_are_stored_with_queryable_top_level_fields_and_the_job_file_as_text() {
    let store = fresh_mongo().await;
    let mut job = waiting_job("rpi4b", 7, &["x"], 1_000);
    job.lease = Some(Lease {
        agent: agent("dut-1"),
        attempt: 1,
        until: Millis(5_000),
    });
    store.insert_job(&job).await.unwrap();

    let raw: Document = store
        .database()
        .collection::<Document>("jobs")
        .find_one(doc! { "_id": job.job_id.to_string() })
        .await
        .unwrap()
        .expect("the job's document, keyed by its id");
    assert_eq!(raw.get_str("queue").unwrap(), "rpi4b");
    assert_eq!(raw.get_str("state").unwrap(), "waiting");
    assert_eq!(raw.get("priority"), Some(&Bson::Int64(7)));
    assert_eq!(raw.get("created_at"), Some(&Bson::Int64(1_000)));
    assert_eq!(
        raw.get_document("lease").unwrap().get("until"),
        Some(&Bson::Int64(5_000))
    );
    assert_eq!(raw.get("enqueued_at"), Some(&Bson::Null));
    let text = raw.get_str("definition").expect("the job file as JSON text");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(text).unwrap()["job_queue"],
        "rpi4b"
    );
    drop_db(store).await;
}

#[tokio::test]
async fn user_keys_with_dots_and_dollars_survive_storage_and_updates() {
    let store = fresh_mongo().await;
    let weird = json!({ "a.b": 1, "$where": { "c.d": "$e" }, "": [ { "$": null } ] });
    let definition = JobDefinition::parse(json!({
        "job_queue": "rpi4b",
        "provision_data": weird.clone(),
        "test_data": { "test_cmds": ["$HOME/run.sh"], "env": weird.clone() },
    }))
    .unwrap();
    let job = JobRecord::new_waiting(Uuid::new_v4(), definition, Some("$user.name".into()), Millis(1));
    assert_eq!(store.insert_job(&job).await.unwrap(), Inserted::New);
    assert_eq!(store.get_job(job.job_id).await.unwrap().as_ref(), Some(&job));

    let mut update = JobUpdate::at(Millis(2));
    update.device_info = Some(Some(weird.clone()));
    update.cancel_requested = Some(Some("$set: by {a.b}".into()));
    let updated = store
        .update_job(job.job_id, &Precondition::default(), &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.device_info, Some(weird));
    assert_eq!(updated.cancel_requested.as_deref(), Some("$set: by {a.b}"));
    assert_eq!(updated.definition, job.definition);
    drop_db(store).await;
}

// ----- the translation of updates and queries

/// A lease granted together with closing the attempt it starts: the one update that needs a
/// pipeline, where values that look like field paths (`$…`) must stay values.
#[tokio::test]
async fn pushing_and_closing_an_attempt_in_one_update_matches_the_reference() {
    let store = fresh_mongo().await;
    let mut expected = waiting_job("rpi4b", 0, &[], 1_000);
    store.insert_job(&expected).await.unwrap();

    for (n, close) in [(1, 1), (2, 1), (3, 3), (4, 9)] {
        let mut update = JobUpdate::at(Millis(2_000 + n as i64))
            .moving(JobState::Waiting, JobState::Leased)
            .unwrap();
        update.attempt = Some(n);
        update.push_attempt = Some(AttemptRecord {
            attempt: n,
            agent: agent("dut-1"),
            started_at: Millis(10),
            ended_at: None,
            outcome: None,
        });
        update.close_attempt = Some((close, Millis(20 + n as i64), format!("$closed {close}")));
        update.cancel_requested = Some(Some("$attempts".into()));
        update.phase_status_set = Some((Phase::Test, n as i32));
        update.lease = Some(Some(Lease {
            agent: agent("dut-1"),
            attempt: n,
            until: Millis(99),
        }));
        update.apply(&mut expected);
        let got = store
            .update_job(expected.job_id, &Precondition::default(), &update)
            .await
            .unwrap();
        assert_eq!(got.as_ref(), Some(&expected), "push {n}, close {close}");
    }
    drop_db(store).await;
}

#[tokio::test]
async fn closing_an_attempt_that_does_not_exist_changes_no_attempt() {
    let store = fresh_mongo().await;
    let mut expected = waiting_job("rpi4b", 0, &[], 1_000);
    store.insert_job(&expected).await.unwrap();
    let mut push = JobUpdate::at(Millis(2));
    push.push_attempt = Some(AttemptRecord {
        attempt: 1,
        agent: agent("dut-1"),
        started_at: Millis(2),
        ended_at: None,
        outcome: None,
    });
    push.apply(&mut expected);
    store
        .update_job(expected.job_id, &Precondition::default(), &push)
        .await
        .unwrap();

    let mut close = JobUpdate::at(Millis(3));
    close.close_attempt = Some((5, Millis(3), "lease expired".into()));
    close.apply(&mut expected);
    let got = store
        .update_job(expected.job_id, &Precondition::default(), &close)
        .await
        .unwrap();
    assert_eq!(got.as_ref(), Some(&expected));
    assert_eq!(expected.attempts.len(), 1, "no padding, no new attempt");
    drop_db(store).await;
}

fn random_precondition(rng: &mut Rng, current: &JobRecord) -> Precondition {
    let mut pre = Precondition::default();
    if rng.chance(40) {
        pre.states = Some(rng.subset(&JobState::ALL, 3));
    }
    if rng.chance(25) {
        pre.attempt = Some((current.attempt + rng.below(2) as u32).saturating_sub(rng.below(2) as u32));
    }
    if rng.chance(20) {
        pre.lease_agent = Some(rng.pick(&[agent("dut-1"), agent("dut-2")]));
    }
    if rng.chance(20) {
        pre.lease_expired_at = Some(rng.millis(1_000, 100));
    }
    if rng.chance(20) {
        pre.lease_valid_at = Some(rng.millis(1_000, 100));
    }
    pre.not_enqueued = rng.chance(15);
    pre
}

fn random_update(rng: &mut Rng, current: &JobRecord, now: Millis) -> JobUpdate {
    let mut u = JobUpdate::at(now);
    let maybe_millis = |rng: &mut Rng| {
        if rng.chance(30) {
            None
        } else {
            Some(rng.millis(1_000, 100))
        }
    };
    if rng.chance(30) {
        // Any state may be set (the store does not judge moves; the update's type does):
        // each is reached by a legal move from some state.
        let to = rng.pick(&JobState::ALL);
        u.state = JobState::ALL
            .into_iter()
            .find_map(|from| StateChange::new(from, to).ok());
    }
    if rng.chance(20) {
        u.attempt = Some(rng.below(4) as u32);
    }
    if rng.chance(25) {
        u.lease = Some(rng.chance(70).then(|| Lease {
            agent: rng.pick(&[agent("dut-1"), agent("dut-2")]),
            attempt: rng.below(4) as u32,
            until: rng.millis(1_000, 100),
        }));
    }
    if rng.chance(20) {
        u.enqueued_at = Some(maybe_millis(rng));
    }
    if rng.chance(15) {
        u.awaiting_attachments = Some(rng.chance(50));
    }
    if rng.chance(15) {
        u.started_at = Some(maybe_millis(rng));
    }
    if rng.chance(15) {
        u.ended_at = Some(maybe_millis(rng));
    }
    if rng.chance(15) {
        u.failure = Some(rng.chance(70).then(|| Failure {
            kind: rng.pick(&[
                FailureKind::AgentLost,
                FailureKind::GlobalTimeout,
                FailureKind::TestFailed,
            ]),
            reason: rng.pick(&["lost", "$lost", "a.b"]).to_owned(),
        }));
    }
    if rng.chance(15) {
        u.cancel_requested = Some(
            rng.chance(70)
                .then(|| rng.pick(&["by alice", "$by.bob"]).to_owned()),
        );
    }
    u.clear_phase_status = rng.chance(20);
    if rng.chance(35) {
        u.phase_status_set = Some((rng.pick(&Phase::ALL), rng.below(5) as i32 - 1));
    }
    if rng.chance(15) {
        u.device_info = Some(
            rng.chance(70)
                .then(|| json!({ "ip": "10.0.0.1", "$k.x": rng.below(9) })),
        );
    }
    if rng.chance(15) {
        u.reservation = Some(rng.chance(70).then(|| Reservation {
            started_at: rng.millis(1_000, 100),
            until: rng.millis(5_000, 100),
            device_ip: rng.chance(50).then(|| "10.0.0.2".to_owned()),
            user: None,
        }));
    }
    if rng.chance(15) {
        u.last_output_at = Some(rng.millis(1_000, 100));
    }
    let attempts = current.attempts.len() as u32;
    if rng.chance(25) {
        // By construction attempts[i].attempt == i + 1: a grant appends the next one.
        u.push_attempt = Some(AttemptRecord {
            attempt: attempts + 1,
            agent: rng.pick(&[agent("dut-1"), agent("dut-2")]),
            started_at: now,
            ended_at: None,
            outcome: None,
        });
    }
    if rng.chance(25) {
        let n = 1 + rng.below(u64::from(attempts) + 2) as u32;
        u.close_attempt = Some((
            n,
            now,
            rng.pick(&["complete", "$lease expired", "failed: a.b"])
                .to_owned(),
        ));
    }
    u
}

/// `update_job` agrees with `Precondition::holds` + `JobUpdate::apply` on random inputs.
#[tokio::test]
async fn random_updates_agree_with_the_reference_semantics() {
    let store = fresh_mongo().await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut expected = waiting_job("rpi4b", 3, &["a"], 1_000);
    store.insert_job(&expected).await.unwrap();
    let (mut applied, mut refused) = (0, 0);
    for step in 0..400 {
        let pre = random_precondition(&mut rng, &expected);
        let update = random_update(&mut rng, &expected, Millis(10_000 + step));
        let want = if pre.holds(&expected) {
            update.apply(&mut expected);
            applied += 1;
            Some(expected.clone())
        } else {
            refused += 1;
            None
        };
        let got = store.update_job(expected.job_id, &pre, &update).await.unwrap();
        assert_eq!(got, want, "step {step}: {pre:?} then {update:?}");
    }
    assert_eq!(store.get_job(expected.job_id).await.unwrap(), Some(expected));
    assert!(
        applied > 50 && refused > 50,
        "both outcomes exercised: {applied} applied, {refused} refused"
    );
    drop_db(store).await;
}

fn reference_find(jobs: &[JobRecord], q: &JobQuery) -> Vec<JobRecord> {
    let mut found: Vec<JobRecord> = jobs.iter().filter(|j| q.matches(j)).cloned().collect();
    found.sort_by(|a, b| q.order.compare(a, b));
    if let Some(limit) = q.limit {
        found.truncate(limit as usize);
    }
    found
}

/// `find_jobs` and `count_jobs` agree with `JobQuery::matches` and `JobOrder` on random
/// queries (creation times are distinct, so every order is total).
#[tokio::test]
async fn random_queries_agree_with_the_reference_semantics() {
    let store = fresh_mongo().await;
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let queues = ["rpi4b", "maas-x86.node"];
    let tags = ["a", "b", "c"];
    let mut jobs = vec![];
    for i in 0..40 {
        let job_tags: Vec<&str> = if rng.chance(20) {
            vec![]
        } else {
            rng.subset(&tags, 2)
        };
        let mut job = waiting_job(rng.pick(&queues), rng.below(3) as u32, &job_tags, 1_000 + 10 * i);
        job.state = rng.pick(&JobState::ALL);
        job.updated_at = rng.millis(1_200, 200);
        job.enqueued_at = rng.chance(60).then(|| rng.millis(1_200, 200));
        if rng.chance(50) {
            job.lease = Some(Lease {
                agent: agent("dut-1"),
                attempt: 1,
                until: rng.millis(1_200, 200),
            });
        }
        store.insert_job(&job).await.unwrap();
        jobs.push(job);
    }
    for round in 0..250 {
        let mut q = JobQuery::default();
        if rng.chance(40) {
            q.queue = Some(DeviceClass::parse(rng.pick(&queues)).unwrap());
        }
        if rng.chance(40) {
            q.states = Some(rng.subset(&JobState::ALL, 5));
        }
        if rng.chance(40) {
            q.tags = rng.subset(&tags, 2).into_iter().map(String::from).collect();
            q.all_tags = rng.chance(50);
        }
        if rng.chance(20) {
            q.lease_expired_before = Some(rng.millis(1_200, 200));
        }
        if rng.chance(20) {
            q.not_enqueued_since = Some(rng.millis(1_200, 200));
        }
        if rng.chance(20) {
            q.ahead_of = Some((rng.below(3) as u32, Millis(1_000 + 5 * rng.below(80) as i64)));
        }
        if rng.chance(20) {
            q.created_after = Some(Millis(1_000 + 5 * rng.below(80) as i64));
        }
        q.order = rng.pick(&JobOrder::ALL);
        let expected_count = reference_find(&jobs, &q).len() as u64;
        if rng.chance(30) {
            q.limit = Some(rng.below(8) as u32);
        }
        let got = store.find_jobs(&q).await.unwrap();
        let want = reference_find(&jobs, &q);
        let ids = |js: &[JobRecord]| js.iter().map(|j| j.job_id).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "round {round}: {q:?}");
        q.limit = None;
        assert_eq!(
            store.count_jobs(&q).await.unwrap(),
            expected_count,
            "round {round}: count {q:?}"
        );
    }
    drop_db(store).await;
}

// ----- output

#[tokio::test]
async fn redelivered_fragments_are_ignored_even_within_one_batch() {
    let store = fresh_mongo().await;
    let job_id = Uuid::new_v4();
    let fragment = |seq: u64, text: &str| OutputFragment {
        job_id,
        attempt: 1,
        stream: LogStream::Output,
        seq,
        phase: Phase::Test,
        at: Millis(seq as i64),
        data: text.as_bytes().to_vec(),
    };
    store
        .append_output(&[fragment(0, "a"), fragment(1, "b")])
        .await
        .unwrap();
    store
        .append_output(&[
            fragment(1, "B"),
            fragment(2, "c"),
            fragment(2, "C"),
            fragment(3, "d"),
        ])
        .await
        .unwrap();
    store.append_output(&[]).await.unwrap();
    let read = store
        .read_output(&OutputQuery::all(job_id, 1, LogStream::Output))
        .await
        .unwrap();
    let texts: Vec<&[u8]> = read.iter().map(|f| f.data.as_slice()).collect();
    assert_eq!(texts, [b"a", b"b", b"c", b"d"]);
    assert_eq!(store.count_output(job_id, 1, LogStream::Output).await.unwrap(), 4);
    assert_eq!(store.count_output(job_id, 1, LogStream::Serial).await.unwrap(), 0);
    drop_db(store).await;
}

// ----- agents

/// Racing upserts of a new agent's document: the losers of the insert race retry as updates.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_reports_and_admin_decisions_all_land() {
    let store = Arc::new(fresh_mongo().await);
    let name = agent("dut-new");
    let heartbeat = Heartbeat {
        agent: name.clone(),
        state: AgentState::Waiting,
        job_id: None,
        queues: vec![DeviceClass::parse("rpi4b").unwrap()],
        location: None,
        provision_type: None,
        comment: None,
        interval_ms: 5_000,
        at: Millis(1_000),
        version: "0.1.0".into(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, heartbeat, name) = (store.clone(), heartbeat.clone(), name.clone());
        tasks.spawn(async move {
            if i == 3 {
                store
                    .set_agent_admin(&name, Some(AdminState::Maintenance), "cable", Millis(1))
                    .await
                    .map(|_| ())
            } else {
                store.record_heartbeat(&heartbeat).await.map(|_| ())
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().expect("every upsert succeeds");
    }
    let mut expected = AgentRecord::from_heartbeat(&heartbeat);
    expected.set_admin(Some(AdminState::Maintenance), "cable");
    assert_eq!(store.list_agents().await.unwrap(), vec![expected]);
    drop_db(Arc::into_inner(store).unwrap()).await;
}

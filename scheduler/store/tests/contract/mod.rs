//! The store contract: what every backend must do, as executable cases.
//!
//! Each case takes a [`Fresh`] database (empty, this test's alone) and asserts on observable
//! results. Where the backend's own semantics could drift from the reference ones
//! ([`Precondition::holds`], [`JobUpdate::apply`], [`JobQuery::matches`], [`OutputQuery::matches`],
//! [`AgentRecord::apply_heartbeat`]), a case compares the two on many inputs.
//!
//! A backend's test file includes this module and runs every case with `store_contract_tests!`:
//!
//! ```ignore
//! mod contract;
//! async fn fresh() -> contract::Fresh { /* open two handles on a new, empty database */ }
//! store_contract_tests!(fresh());
//! ```
//!
//! The cases panic on failure. This is test-only code: it is compiled into the store's test
//! binaries, never into a service.

use broker_schema::messages::{AdminState, AgentState, Heartbeat, LogStream};
use broker_schema::{AgentName, DeviceClass, Failure, FailureKind, JobDefinition, JobState, Millis, Phase};
use bytes::Bytes;
use flinger_store::records::{self, Change};
use flinger_store::{
    AgentRecord, AttemptRecord, BlobError, BlobName, ByteStream, ClientRecord, DevicePoll, DocKind,
    DynSchedulerStore, Inserted, JobOrder, JobQuery, JobRecord, JobUpdate, Lease, OutputFragment,
    OutputQuery, PendingSignOnRecord, Precondition, ProvisionEntry, Purge, Records, RefreshTokenRecord,
    Reservation, Revoked, Role, SecretRecord, ShippedOutput, SignOnFlow, StateChange,
};
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// One test's database.
pub struct Fresh {
    pub store: DynSchedulerStore,
    /// A second handle on the same database, as another process would open it. A backend that
    /// cannot open two may pass `store` again.
    pub other: DynSchedulerStore,
    /// Whatever must live as long as the test (a temporary directory, …); dropped after it.
    #[allow(dead_code)] // held, never read
    pub guard: Box<dyn std::any::Any + Send>,
}

/// Expands to one `#[tokio::test]` per contract case. `$fresh` is an expression evaluated in
/// each test that yields a future of a [`Fresh`] database.
#[macro_export]
macro_rules! store_contract_tests {
    ($fresh:expr) => {
        store_contract_tests!(@cases $fresh;
            inserted_job_reads_back_equal_with_every_field_set,
            inserting_an_existing_job_id_returns_the_stored_record_unchanged,
            unknown_job_is_none,
            exactly_one_of_many_concurrent_claimers_wins,
            concurrent_updates_of_one_job_are_never_lost,
            update_applies_only_in_the_expected_states,
            update_applies_only_at_the_expected_attempt,
            update_applies_only_for_the_lease_holder,
            lease_expired_at_holds_strictly_after_the_deadline,
            lease_valid_at_holds_up_to_and_including_the_deadline,
            not_enqueued_holds_only_until_the_broker_saw_the_job,
            every_precondition_field_must_hold,
            update_of_an_unknown_job_is_none_and_creates_nothing,
            update_agrees_with_the_reference_semantics,
            update_sets_every_field_and_returns_the_stored_record,
            a_child_is_listed_once_in_the_order_added,
            update_clears_optional_fields_with_some_none,
            update_leaves_unnamed_fields_alone,
            clear_phase_status_then_set_in_one_update,
            push_attempt_appends_and_close_attempt_closes_only_that_attempt,
            discard_deletes_only_a_waiting_never_enqueued_job,
            find_jobs_filters_by_queue_and_states,
            find_jobs_filters_by_any_or_all_tags,
            find_jobs_finds_leases_expired_before_an_instant,
            find_jobs_finds_jobs_not_enqueued_since_an_instant,
            find_jobs_created_after_is_strict,
            count_jobs_answers_the_queue_position_question,
            find_jobs_orders_oldest_newest_or_in_queue_order,
            limit_caps_find_jobs_and_count_jobs,
            find_jobs_filters_by_submitter_and_pages_with_offset,
            find_jobs_agrees_with_the_reference_semantics,
            appending_output_twice_and_out_of_order_stores_each_fragment_once,
            output_of_different_attempts_and_streams_is_separate,
            read_output_honours_from_seq_phase_since_and_limit,
            output_data_survives_byte_for_byte,
            first_heartbeat_creates_the_agent,
            later_heartbeat_updates_what_the_agent_reports,
            an_older_heartbeat_changes_nothing,
            admin_decision_survives_later_heartbeats,
            admin_decision_for_an_unknown_agent_creates_a_placeholder,
            clearing_the_admin_decision_keeps_what_the_agent_reported,
            list_agents_returns_every_agent_once,
            unknown_agent_is_none,
            ping_answers,
            a_write_through_one_handle_is_read_through_the_other,
            a_doc_is_created_only_when_absent_and_then_compare_and_set_by_version,
            deleting_a_doc_honours_the_expected_version,
            docs_are_listed_by_kind_and_id_prefix_in_id_order,
            concurrent_modifications_of_a_doc_are_never_lost,
            clients_are_stored_listed_replaced_and_deleted,
            a_refresh_token_is_revoked_once,
            an_admin_revokes_every_refresh_token_of_one_client,
            a_pending_sign_on_is_taken_once_and_expires,
            retention_forgets_expired_refresh_tokens_and_secrets_and_keeps_live_ones,
            a_device_poll_is_spaced_by_half_the_interval,
            the_last_owner_leaving_lifts_a_queue_restriction,
            secrets_belong_to_one_client_and_expire,
            a_single_use_secret_is_taken_once_and_values_are_replaced_only_as_read,
            queue_descriptions_and_images_are_kept_apart,
            provision_logs_count_streaks_and_ignore_duplicates,
            posted_results_merge_status_and_device_info,
            a_blob_round_trips_byte_for_byte_across_many_chunks,
            a_new_blob_replaces_the_old_one_whole,
            a_blob_over_the_limit_stores_nothing_and_keeps_the_previous_one,
            a_blob_whose_upload_fails_stores_nothing,
            unknown_blobs_are_none_and_deleting_removes_them,
            purge_removes_only_old_ended_jobs_and_everything_kept_for_them,
            purge_takes_batches_of_at_most_its_limit,
            count_live_jobs_counts_each_live_state_by_queue_and_no_ended_job,
        );
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $case() {
                let fresh: $crate::contract::Fresh = $fresh.await;
                $crate::contract::$case(&fresh).await;
            }
        )*
    };
}

// ----- fixtures

/// An arbitrary fixed epoch, so that instants read as offsets.
const T0: i64 = 1_700_000_000_000;

fn t(ms: i64) -> Millis {
    Millis(T0 + ms)
}

fn agent(name: &str) -> AgentName {
    AgentName::parse(name).expect("valid agent name")
}

fn class(name: &str) -> DeviceClass {
    DeviceClass::parse(name).expect("valid device class")
}

fn definition(queue: &str, priority: u32, tags: &[&str]) -> JobDefinition {
    JobDefinition::parse(serde_json::json!({
        "job_queue": queue,
        "job_priority": priority,
        "tags": tags,
        "test_data": {"test_cmds": "echo hello"},
    }))
    .expect("valid job")
}

/// A waiting, never-enqueued job.
fn waiting(queue: &str, priority: u32, tags: &[&str], created: Millis) -> JobRecord {
    JobRecord::new_waiting(Uuid::new_v4(), definition(queue, priority, tags), None, created)
}

/// A job leased by `holder` (attempt 1) until `until`.
fn leased(holder: &str, until: Millis) -> JobRecord {
    let mut job = waiting("rpi4b", 0, &[], t(0));
    job.state = JobState::Leased;
    job.enqueued_at = Some(t(1));
    job.attempt = 1;
    job.lease = Some(Lease {
        agent: agent(holder),
        attempt: 1,
        until,
    });
    job.attempts = vec![attempt(1, holder, t(2))];
    job.started_at = Some(t(2));
    job
}

fn attempt(n: u32, holder: &str, started: Millis) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        agent: agent(holder),
        started_at: started,
        ended_at: None,
        outcome: None,
    }
}

/// A job with every field set, optional or not.
fn full_job() -> JobRecord {
    let def = JobDefinition::parse(serde_json::json!({
        "job_queue": "maas-x86-node",
        "name": "everything",
        "job_priority": 7,
        "tags": ["ci", "nightly"],
        "global_timeout": 3600,
        "output_timeout": 600,
        "provision_data": {"distro": "noble"},
        "test_data": {"test_cmds": ["echo one", "echo two"], "attachments": [{"local": "a.txt"}]},
        "reserve_data": {"ssh_keys": ["lp:someone"], "timeout": "2h30m"},
    }))
    .expect("valid job");
    let mut job = JobRecord::new_waiting(Uuid::new_v4(), def, Some("ci-bot".into()), t(0));
    job.state = JobState::Reserve;
    job.updated_at = t(50);
    job.enqueued_at = Some(t(1));
    job.awaiting_attachments = true;
    job.attempt = 2;
    job.lease = Some(Lease {
        agent: agent("dut-2"),
        attempt: 2,
        until: t(90_000),
    });
    job.attempts = vec![
        AttemptRecord {
            attempt: 1,
            agent: agent("dut-1"),
            started_at: t(2),
            ended_at: Some(t(20)),
            outcome: Some("lease expired".into()),
        },
        attempt(2, "dut-2", t(30)),
    ];
    job.started_at = Some(t(30));
    job.ended_at = Some(t(45));
    job.phase_status = BTreeMap::from([("setup".into(), 0), ("provision".into(), 0), ("test".into(), 1)]);
    job.device_info = Some(serde_json::json!({
        "device_ip": "10.0.0.5",
        "cores": 4,
        "nested": {"list": [1, "two", true, null]},
    }));
    job.failure = Some(Failure {
        kind: FailureKind::TestFailed,
        reason: "test exited 1".into(),
    });
    job.cancel_requested = Some("by alice: wrong image".into());
    job.reservation = Some(Reservation {
        started_at: t(40),
        until: t(9_040),
        device_ip: Some("10.0.0.5".into()),
        user: Some("alice".into()),
    });
    job.last_output_at = Some(t(44));
    job
}

/// The lease grant: waiting → leased by `holder`.
fn grant(holder: &str, attempt_no: u32, until: Millis, now: Millis) -> JobUpdate {
    JobUpdate {
        attempt: Some(attempt_no),
        lease: Some(Some(Lease {
            agent: agent(holder),
            attempt: attempt_no,
            until,
        })),
        started_at: Some(Some(now)),
        clear_phase_status: true,
        push_attempt: Some(attempt(attempt_no, holder, now)),
        ..JobUpdate::at(now)
            .moving(JobState::Waiting, JobState::Leased)
            .unwrap()
    }
}

async fn insert(db: &Fresh, job: &JobRecord) {
    assert_eq!(
        db.store.insert_job(job).await.unwrap(),
        Inserted::New,
        "inserting job {}",
        job.job_id
    );
}

async fn stored(db: &Fresh, id: Uuid) -> JobRecord {
    db.store.get_job(id).await.unwrap().expect("job is stored")
}

/// `pre` holds on the stored job: an update that only touches `updated_at` applies.
async fn assert_holds(db: &Fresh, id: Uuid, pre: Precondition) {
    let before = stored(db, id).await;
    let now = Millis(before.updated_at.0 + 1);
    let after = db.store.update_job(id, &pre, &JobUpdate::at(now)).await.unwrap();
    let after = after.unwrap_or_else(|| panic!("{pre:?} should hold on {before:?}"));
    assert_eq!(after.updated_at, now);
    assert_eq!(stored(db, id).await.updated_at, now);
}

/// `pre` does not hold on the stored job: the update returns `None` and changes nothing, not even
/// `updated_at`.
async fn assert_refused(db: &Fresh, id: Uuid, pre: Precondition) {
    let before = stored(db, id).await;
    let update = JobUpdate {
        attempt: Some(99),
        ..JobUpdate::at(t(999_999))
            .moving(JobState::Waiting, JobState::Failed)
            .unwrap()
    };
    let result = db.store.update_job(id, &pre, &update).await.unwrap();
    assert_eq!(result, None, "{pre:?} should not hold on {before:?}");
    assert_eq!(stored(db, id).await, before, "a refused update changed the job");
}

fn ids(jobs: &[JobRecord]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.job_id).collect()
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

// ----- jobs: insert and read

pub async fn inserted_job_reads_back_equal_with_every_field_set(db: &Fresh) {
    let full = full_job();
    insert(db, &full).await;
    assert_eq!(db.store.get_job(full.job_id).await.unwrap(), Some(full.clone()));

    let plain = waiting("rpi4b", 0, &[], t(5));
    insert(db, &plain).await;
    assert_eq!(db.store.get_job(plain.job_id).await.unwrap(), Some(plain));
}

pub async fn inserting_an_existing_job_id_returns_the_stored_record_unchanged(db: &Fresh) {
    let first = waiting("rpi4b", 3, &["a"], t(0));
    insert(db, &first).await;
    let mut second = full_job();
    second.job_id = first.job_id;
    assert_eq!(
        db.store.insert_job(&second).await.unwrap(),
        Inserted::Existing(Box::new(first.clone()))
    );
    assert_eq!(
        db.other.insert_job(&first).await.unwrap(),
        Inserted::Existing(Box::new(first.clone()))
    );
    assert_eq!(stored(db, first.job_id).await, first);
}

pub async fn unknown_job_is_none(db: &Fresh) {
    insert(db, &waiting("rpi4b", 0, &[], t(0))).await;
    assert_eq!(db.store.get_job(Uuid::new_v4()).await.unwrap(), None);
}

// ----- jobs: atomic updates

pub async fn exactly_one_of_many_concurrent_claimers_wins(db: &Fresh) {
    const CLAIMERS: usize = 20;
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    let id = job.job_id;
    let start = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let tasks: Vec<_> = (0..CLAIMERS)
        .map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                db.other.clone()
            };
            let start = start.clone();
            tokio::spawn(async move {
                let name = format!("dut-{i}");
                let pre = Precondition::state(JobState::Waiting).attempt(0);
                start.wait().await;
                let won = store
                    .update_job(id, &pre, &grant(&name, 1, t(60_000), t(10)))
                    .await
                    .unwrap();
                won.map(|job| (name, job))
            })
        })
        .collect();
    let mut winners = vec![];
    for task in tasks {
        if let Some(w) = task.await.unwrap() {
            winners.push(w);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "winners: {:?}",
        winners.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let (winner, returned) = winners.pop().unwrap();
    let job = stored(db, id).await;
    assert_eq!(returned, job);
    assert_eq!(job.state, JobState::Leased);
    assert_eq!(job.attempt, 1);
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].agent.as_str(), winner);
    assert_eq!(
        job.lease.as_ref().map(|l| l.agent.as_str()),
        Some(winner.as_str())
    );
}

pub async fn concurrent_updates_of_one_job_are_never_lost(db: &Fresh) {
    const WRITERS: u32 = 20;
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    let id = job.job_id;
    let tasks: Vec<_> = (1..=WRITERS)
        .map(|n| {
            let store = if n % 2 == 0 {
                db.store.clone()
            } else {
                db.other.clone()
            };
            tokio::spawn(async move {
                let update = JobUpdate {
                    push_attempt: Some(attempt(n, "dut-1", t(n.into()))),
                    ..JobUpdate::at(t(1))
                };
                store
                    .update_job(id, &Precondition::default(), &update)
                    .await
                    .unwrap()
                    .is_some()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap(), "an unconditional update was refused");
    }
    let mut pushed: Vec<u32> = stored(db, id).await.attempts.iter().map(|a| a.attempt).collect();
    pushed.sort();
    assert_eq!(pushed, (1..=WRITERS).collect::<Vec<_>>());
}

pub async fn update_applies_only_in_the_expected_states(db: &Fresh) {
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    let id = job.job_id;
    assert_refused(
        db,
        id,
        Precondition::in_states(&[JobState::Leased, JobState::Test]),
    )
    .await;
    assert_refused(db, id, Precondition::in_states(&[])).await;
    assert_holds(db, id, Precondition::state(JobState::Waiting)).await;
    assert_holds(
        db,
        id,
        Precondition::in_states(&[JobState::Leased, JobState::Waiting]),
    )
    .await;
}

pub async fn update_applies_only_at_the_expected_attempt(db: &Fresh) {
    let job = leased("dut-1", t(10_000));
    insert(db, &job).await;
    let id = job.job_id;
    assert_refused(db, id, Precondition::default().attempt(0)).await;
    assert_refused(db, id, Precondition::default().attempt(2)).await;
    assert_holds(db, id, Precondition::default().attempt(1)).await;
}

pub async fn update_applies_only_for_the_lease_holder(db: &Fresh) {
    let job = leased("dut-1", t(10_000));
    insert(db, &job).await;
    let holder = |name: &str| Precondition {
        lease_agent: Some(agent(name)),
        ..Default::default()
    };
    assert_refused(db, job.job_id, holder("dut-2")).await;
    assert_holds(db, job.job_id, holder("dut-1")).await;

    let unleased = waiting("rpi4b", 0, &[], t(0));
    insert(db, &unleased).await;
    assert_refused(db, unleased.job_id, holder("dut-1")).await;
}

pub async fn lease_expired_at_holds_strictly_after_the_deadline(db: &Fresh) {
    let job = leased("dut-1", t(10_000));
    insert(db, &job).await;
    let expired_at = |at: Millis| Precondition {
        lease_expired_at: Some(at),
        ..Default::default()
    };
    assert_refused(db, job.job_id, expired_at(t(9_999))).await;
    assert_refused(db, job.job_id, expired_at(t(10_000))).await;
    assert_holds(db, job.job_id, expired_at(t(10_001))).await;

    let unleased = waiting("rpi4b", 0, &[], t(0));
    insert(db, &unleased).await;
    assert_refused(db, unleased.job_id, expired_at(t(10_001))).await;
}

pub async fn lease_valid_at_holds_up_to_and_including_the_deadline(db: &Fresh) {
    let job = leased("dut-1", t(10_000));
    insert(db, &job).await;
    let valid_at = |at: Millis| Precondition {
        lease_valid_at: Some(at),
        ..Default::default()
    };
    assert_holds(db, job.job_id, valid_at(t(9_999))).await;
    assert_holds(db, job.job_id, valid_at(t(10_000))).await;
    assert_refused(db, job.job_id, valid_at(t(10_001))).await;

    let unleased = waiting("rpi4b", 0, &[], t(0));
    insert(db, &unleased).await;
    assert_refused(db, unleased.job_id, valid_at(t(0))).await;
}

pub async fn not_enqueued_holds_only_until_the_broker_saw_the_job(db: &Fresh) {
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    let not_enqueued = || Precondition {
        not_enqueued: true,
        ..Default::default()
    };
    assert_holds(db, job.job_id, not_enqueued()).await;
    let seen = JobUpdate {
        enqueued_at: Some(Some(t(5))),
        ..JobUpdate::at(t(5))
    };
    assert!(
        db.store
            .update_job(job.job_id, &not_enqueued(), &seen)
            .await
            .unwrap()
            .is_some()
    );
    assert_refused(db, job.job_id, not_enqueued()).await;
}

pub async fn every_precondition_field_must_hold(db: &Fresh) {
    let job = leased("dut-1", t(10_000));
    insert(db, &job).await;
    let all = || Precondition {
        states: Some(vec![JobState::Leased]),
        attempt: Some(1),
        lease_agent: Some(agent("dut-1")),
        lease_expired_at: None,
        lease_valid_at: Some(t(5_000)),
        not_enqueued: false,
    };
    assert_refused(
        db,
        job.job_id,
        Precondition {
            states: Some(vec![JobState::Test]),
            ..all()
        },
    )
    .await;
    assert_refused(
        db,
        job.job_id,
        Precondition {
            attempt: Some(2),
            ..all()
        },
    )
    .await;
    assert_refused(
        db,
        job.job_id,
        Precondition {
            lease_agent: Some(agent("dut-9")),
            ..all()
        },
    )
    .await;
    assert_refused(
        db,
        job.job_id,
        Precondition {
            lease_valid_at: Some(t(20_000)),
            ..all()
        },
    )
    .await;
    assert_refused(
        db,
        job.job_id,
        Precondition {
            lease_expired_at: Some(t(5_000)),
            ..all()
        },
    )
    .await;
    assert_refused(
        db,
        job.job_id,
        Precondition {
            not_enqueued: true,
            ..all()
        },
    )
    .await;
    assert_holds(db, job.job_id, all()).await;
}

pub async fn update_of_an_unknown_job_is_none_and_creates_nothing(db: &Fresh) {
    let id = Uuid::new_v4();
    let update = grant("dut-1", 1, t(60_000), t(10));
    assert_eq!(
        db.store
            .update_job(id, &Precondition::default(), &update)
            .await
            .unwrap(),
        None
    );
    assert_eq!(db.store.get_job(id).await.unwrap(), None);
    assert_eq!(db.store.count_jobs(&JobQuery::default()).await.unwrap(), 0);
}

pub async fn update_agrees_with_the_reference_semantics(db: &Fresh) {
    let mut no_lease = leased("dut-1", t(10_000));
    no_lease.lease = None;
    no_lease.state = JobState::Test;
    let jobs = [
        waiting("rpi4b", 1, &["x"], t(0)),
        leased("dut-1", t(10_000)),
        no_lease,
        full_job(),
    ];
    let pres = [
        Precondition::default(),
        Precondition::state(JobState::Waiting).attempt(0),
        Precondition::in_states(&[JobState::Leased, JobState::Reserve]),
        Precondition::default().attempt(2),
        Precondition {
            lease_agent: Some(agent("dut-1")),
            ..Default::default()
        },
        Precondition {
            lease_agent: Some(agent("dut-2")),
            ..Default::default()
        },
        Precondition {
            lease_expired_at: Some(t(10_000)),
            ..Default::default()
        },
        Precondition {
            lease_expired_at: Some(t(90_001)),
            ..Default::default()
        },
        Precondition {
            lease_valid_at: Some(t(10_000)),
            ..Default::default()
        },
        Precondition {
            lease_valid_at: Some(t(10_001)),
            ..Default::default()
        },
        Precondition {
            not_enqueued: true,
            ..Default::default()
        },
        Precondition {
            not_enqueued: true,
            ..Precondition::state(JobState::Waiting)
        },
    ];
    let update = JobUpdate {
        failure: Some(Some(Failure {
            kind: FailureKind::AgentLost,
            reason: "gone".into(),
        })),
        ended_at: Some(Some(t(70_000))),
        close_attempt: Some((1, t(70_000), "lease expired".into())),
        lease: Some(None),
        ..JobUpdate::at(t(70_000))
            .moving(JobState::Test, JobState::Failed)
            .unwrap()
    };
    for job in &jobs {
        for pre in &pres {
            let mut job = job.clone();
            job.job_id = Uuid::new_v4();
            insert(db, &job).await;
            let expected = pre.holds(&job).then(|| {
                let mut j = job.clone();
                update.apply(&mut j);
                j
            });
            let got = db.store.update_job(job.job_id, pre, &update).await.unwrap();
            assert_eq!(got, expected, "{pre:?} on {job:?}");
            assert_eq!(stored(db, job.job_id).await, expected.unwrap_or(job));
        }
    }
}

pub async fn a_child_is_listed_once_in_the_order_added(db: &Fresh) {
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    for (n, child) in [a, b, a].into_iter().enumerate() {
        let update = JobUpdate {
            add_child: Some(child),
            ..JobUpdate::at(t(10 + n as i64))
        };
        let returned = db
            .store
            .update_job(job.job_id, &Precondition::default(), &update)
            .await
            .expect("update")
            .expect("applied");
        assert_eq!(returned, stored(db, job.job_id).await);
    }
    assert_eq!(stored(db, job.job_id).await.children, [a, b]);
}

pub async fn update_sets_every_field_and_returns_the_stored_record(db: &Fresh) {
    let mut job = waiting("rpi4b", 0, &[], t(0));
    job.awaiting_attachments = true;
    insert(db, &job).await;
    let update = JobUpdate {
        updated_at: t(100),
        state: Some(StateChange::new(JobState::Leased, JobState::Reserve).unwrap()),
        attempt: Some(3),
        lease: Some(Some(Lease {
            agent: agent("dut-3"),
            attempt: 3,
            until: t(50_000),
        })),
        enqueued_at: Some(Some(t(1))),
        awaiting_attachments: Some(false),
        started_at: Some(Some(t(10))),
        ended_at: Some(Some(t(90))),
        failure: Some(Some(Failure {
            kind: FailureKind::DeviceFailed,
            reason: "provision exited 1".into(),
        })),
        cancel_requested: Some(Some("by bob".into())),
        released: Some(Some("released: parent job x ended (complete)".into())),
        clear_phase_status: false,
        phase_status_set: Some((Phase::Provision, 1)),
        device_info: Some(Some(serde_json::json!({"device_ip": "10.1.1.1"}))),
        reservation: Some(Some(Reservation {
            started_at: t(60),
            until: t(3_660),
            device_ip: None,
            user: None,
        })),
        last_output_at: Some(t(95)),
        push_attempt: Some(attempt(3, "dut-3", t(10))),
        close_attempt: Some((3, t(90), "complete".into())),
        add_child: Some(Uuid::from_u128(42)),
        output_truncated: Some([("serial".to_owned(), 1234)].into()),
        output_shipped: Some(ShippedOutput {
            attempt: 3,
            output: 17,
            serial: 2,
        }),
    };
    let mut expected = job.clone();
    update.apply(&mut expected);
    let returned = db
        .store
        .update_job(job.job_id, &Precondition::default(), &update)
        .await
        .unwrap();
    assert_eq!(returned.as_ref(), Some(&expected));
    let got = stored(db, job.job_id).await;
    assert_eq!(got, expected);
    // Spelled out, in case the reference semantics themselves regress.
    assert_eq!(got.updated_at, t(100));
    assert_eq!(got.state, JobState::Reserve);
    assert_eq!(got.attempt, 3);
    assert_eq!(
        got.lease.as_ref().map(|l| (l.agent.as_str(), l.until)),
        Some(("dut-3", t(50_000)))
    );
    assert_eq!(got.enqueued_at, Some(t(1)));
    assert_eq!(got.output_truncated, [("serial".to_owned(), 1234)].into());
    assert_eq!(
        got.output_shipped.map(|s| (s.attempt, s.output, s.serial)),
        Some((3, 17, 2))
    );
    assert!(!got.awaiting_attachments);
    assert_eq!((got.started_at, got.ended_at), (Some(t(10)), Some(t(90))));
    assert_eq!(
        got.failure.as_ref().map(|f| f.kind),
        Some(FailureKind::DeviceFailed)
    );
    assert_eq!(got.cancel_requested.as_deref(), Some("by bob"));
    assert_eq!(got.phase_status, BTreeMap::from([("provision".to_owned(), 1)]));
    assert_eq!(
        got.device_info,
        Some(serde_json::json!({"device_ip": "10.1.1.1"}))
    );
    assert_eq!(got.reservation.as_ref().map(|r| r.until), Some(t(3_660)));
    assert_eq!(got.last_output_at, Some(t(95)));
    assert_eq!(got.attempts.len(), 1);
    assert_eq!(
        (got.attempts[0].ended_at, got.attempts[0].outcome.as_deref()),
        (Some(t(90)), Some("complete"))
    );
}

pub async fn update_clears_optional_fields_with_some_none(db: &Fresh) {
    let job = full_job();
    insert(db, &job).await;
    let update = JobUpdate {
        lease: Some(None),
        enqueued_at: Some(None),
        awaiting_attachments: Some(false),
        started_at: Some(None),
        ended_at: Some(None),
        failure: Some(None),
        cancel_requested: Some(None),
        device_info: Some(None),
        reservation: Some(None),
        ..JobUpdate::at(t(100))
    };
    let got = db
        .store
        .update_job(job.job_id, &Precondition::default(), &update)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored(db, job.job_id).await, got);
    assert_eq!(got.lease, None);
    assert_eq!(got.enqueued_at, None);
    assert!(!got.awaiting_attachments);
    assert_eq!((got.started_at, got.ended_at), (None, None));
    assert_eq!(got.failure, None);
    assert_eq!(got.cancel_requested, None);
    assert_eq!(got.device_info, None);
    assert_eq!(got.reservation, None);
    let mut expected = job.clone();
    update.apply(&mut expected);
    assert_eq!(got, expected);
}

pub async fn update_leaves_unnamed_fields_alone(db: &Fresh) {
    let job = full_job();
    insert(db, &job).await;
    let got = db
        .store
        .update_job(job.job_id, &Precondition::default(), &JobUpdate::at(t(77)))
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(JobRecord {
            updated_at: t(77),
            ..job.clone()
        })
    );
    assert_eq!(
        stored(db, job.job_id).await,
        JobRecord {
            updated_at: t(77),
            ..job
        }
    );
}

pub async fn clear_phase_status_then_set_in_one_update(db: &Fresh) {
    let job = full_job(); // setup 0, provision 0, test 1
    insert(db, &job).await;
    let id = job.job_id;
    let set = |phase, code| JobUpdate {
        phase_status_set: Some((phase, code)),
        ..JobUpdate::at(t(100))
    };

    let got = db
        .store
        .update_job(id, &Precondition::default(), &set(Phase::Test, 3))
        .await
        .unwrap()
        .unwrap();
    let expect = |pairs: &[(&str, i32)]| {
        pairs
            .iter()
            .map(|(p, c)| ((*p).to_owned(), *c))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(
        got.phase_status,
        expect(&[("setup", 0), ("provision", 0), ("test", 3)])
    );

    let got = db
        .store
        .update_job(id, &Precondition::default(), &set(Phase::Reserve, 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.phase_status,
        expect(&[("setup", 0), ("provision", 0), ("test", 3), ("reserve", 0)])
    );

    let clear_and_set = JobUpdate {
        clear_phase_status: true,
        ..set(Phase::Setup, 2)
    };
    let got = db
        .store
        .update_job(id, &Precondition::default(), &clear_and_set)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.phase_status, expect(&[("setup", 2)]));

    let clear_only = JobUpdate {
        clear_phase_status: true,
        ..JobUpdate::at(t(101))
    };
    db.store
        .update_job(id, &Precondition::default(), &clear_only)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored(db, id).await.phase_status, BTreeMap::new());
}

pub async fn push_attempt_appends_and_close_attempt_closes_only_that_attempt(db: &Fresh) {
    let mut job = leased("dut-1", t(10_000));
    job.attempts.push(attempt(2, "dut-2", t(20)));
    job.attempt = 2;
    insert(db, &job).await;
    let id = job.job_id;
    let any = Precondition::default();

    let close = |n| JobUpdate {
        close_attempt: Some((n, t(500), "lease expired".to_owned())),
        ..JobUpdate::at(t(500))
    };
    let got = db.store.update_job(id, &any, &close(1)).await.unwrap().unwrap();
    assert_eq!(
        (got.attempts[0].ended_at, got.attempts[0].outcome.as_deref()),
        (Some(t(500)), Some("lease expired"))
    );
    assert_eq!(
        (got.attempts[1].ended_at, got.attempts[1].outcome.as_deref()),
        (None, None)
    );

    let push = JobUpdate {
        push_attempt: Some(attempt(3, "dut-3", t(600))),
        ..JobUpdate::at(t(600))
    };
    let got = db.store.update_job(id, &any, &push).await.unwrap().unwrap();
    assert_eq!(
        got.attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(got.attempts[2], attempt(3, "dut-3", t(600)));

    // Closing an attempt that does not exist changes nothing but `updated_at`.
    let before = stored(db, id).await;
    let got = db.store.update_job(id, &any, &close(9)).await.unwrap().unwrap();
    assert_eq!(
        got,
        JobRecord {
            updated_at: t(500),
            ..before
        }
    );
    assert_eq!(stored(db, id).await, got);
}

pub async fn discard_deletes_only_a_waiting_never_enqueued_job(db: &Fresh) {
    let fresh = waiting("rpi4b", 0, &[], t(0));
    let mut enqueued = waiting("rpi4b", 0, &[], t(1));
    enqueued.enqueued_at = Some(t(2));
    let mut cancelled = waiting("rpi4b", 0, &[], t(3));
    cancelled.state = JobState::Cancelled;
    let mut running = leased("dut-1", t(10_000));
    running.enqueued_at = None;
    for job in [&fresh, &enqueued, &cancelled, &running] {
        insert(db, job).await;
    }

    assert!(db.store.discard_job(fresh.job_id).await.unwrap());
    assert_eq!(db.store.get_job(fresh.job_id).await.unwrap(), None);
    assert!(
        !db.store.discard_job(fresh.job_id).await.unwrap(),
        "discarding twice"
    );

    for job in [&enqueued, &cancelled, &running] {
        assert!(
            !db.store.discard_job(job.job_id).await.unwrap(),
            "discarded {job:?}"
        );
        assert_eq!(&stored(db, job.job_id).await, job);
    }
    assert!(!db.store.discard_job(Uuid::new_v4()).await.unwrap());
}

// ----- jobs: queries

/// Six jobs with distinct creation instants:
///
/// | | queue | prio | tags | created | state | lease until | enqueued | name | started | ended |
/// |-|-|-|-|-|-|-|-|-|-|-|
/// | a | rpi4b | 0 | x | 1 | waiting | – | never (updated 1) | beta | – | – |
/// | b | rpi4b | 5 | x y | 2 | waiting | – | 2 | – | – | – |
/// | c | rpi4b | 5 | y | 3 | leased | 100 | 3 | alpha | 7 | – |
/// | d | maas | 0 | – | 4 | test | 50 | 4 | Beta | 9 | – |
/// | e | maas | 9 | x y z | 5 | complete | – | 5 | alpha | 6 | 10 |
/// | f | rpi4b | 0 | z | 6 | waiting | – | 6 | – | – | – |
struct Corpus {
    all: Vec<JobRecord>,
}

impl Corpus {
    async fn insert(db: &Fresh) -> Corpus {
        let row = |queue,
                   priority,
                   tags: &[&str],
                   created: i64,
                   state,
                   lease_until: Option<i64>,
                   enqueued: bool| {
            let mut j = waiting(queue, priority, tags, t(created));
            j.state = state;
            if let Some(until) = lease_until {
                j.attempt = 1;
                j.lease = Some(Lease {
                    agent: agent("dut-1"),
                    attempt: 1,
                    until: t(until),
                });
            }
            j.enqueued_at = enqueued.then_some(t(created));
            j
        };
        // The columns the web UI sorts by and no filter reads.
        let shown = |mut j: JobRecord, name: Option<&str>, started: Option<i64>, ended: Option<i64>| {
            if let Some(name) = name {
                let mut raw = serde_json::to_value(&j.definition).unwrap();
                raw["name"] = name.into();
                j.definition = JobDefinition::parse(raw).unwrap();
            }
            j.started_at = started.map(t);
            j.ended_at = ended.map(t);
            j
        };
        use JobState::*;
        let all = vec![
            shown(
                row("rpi4b", 0, &["x"], 1, Waiting, None, false),
                Some("beta"),
                None,
                None,
            ),
            row("rpi4b", 5, &["x", "y"], 2, Waiting, None, true),
            shown(
                row("rpi4b", 5, &["y"], 3, Leased, Some(100), true),
                Some("alpha"),
                Some(7),
                None,
            ),
            shown(
                row("maas", 0, &[], 4, Test, Some(50), true),
                Some("Beta"),
                Some(9),
                None,
            ),
            shown(
                row("maas", 9, &["x", "y", "z"], 5, Complete, None, true),
                Some("alpha"),
                Some(6),
                Some(10),
            ),
            row("rpi4b", 0, &["z"], 6, Waiting, None, true),
        ];
        // Insert out of creation order, so that no backend returns them in order by accident.
        for i in [3, 0, 5, 1, 4, 2] {
            insert(db, &all[i]).await;
        }
        Corpus { all }
    }

    /// Ids of the named jobs (`"abf"`), in that order.
    fn ids(&self, names: &str) -> Vec<Uuid> {
        names
            .bytes()
            .map(|n| self.all[usize::from(n - b'a')].job_id)
            .collect()
    }

    /// The reference answer: [`JobQuery::matches`], the query's order, its limit.
    fn expected(&self, q: &JobQuery) -> Vec<Uuid> {
        let mut hits: Vec<&JobRecord> = self.all.iter().filter(|j| q.matches(j)).collect();
        hits.sort_by(|a, b| q.order.compare(a, b));
        hits.truncate(q.limit.map_or(usize::MAX, |l| l as usize));
        hits.iter().map(|j| j.job_id).collect()
    }
}

/// Finds with `q` and checks the ids (as a set) and the count.
async fn assert_finds(db: &Fresh, c: &Corpus, q: JobQuery, names: &str) {
    let found = ids(&db.store.find_jobs(&q).await.unwrap());
    assert_eq!(sorted(found), sorted(c.ids(names)), "{q:?}");
    assert_eq!(
        db.store.count_jobs(&q).await.unwrap(),
        names.len() as u64,
        "count of {q:?}"
    );
}

pub async fn find_jobs_filters_by_queue_and_states(db: &Fresh) {
    let c = Corpus::insert(db).await;
    assert_finds(db, &c, JobQuery::default(), "abcdef").await;
    assert_finds(
        db,
        &c,
        JobQuery {
            queue: Some(class("rpi4b")),
            ..Default::default()
        },
        "abcf",
    )
    .await;
    assert_finds(
        db,
        &c,
        JobQuery {
            queue: Some(class("nowhere")),
            ..Default::default()
        },
        "",
    )
    .await;
    let states = |s: &[JobState]| Some(s.to_vec());
    assert_finds(
        db,
        &c,
        JobQuery {
            states: states(&[JobState::Waiting]),
            ..Default::default()
        },
        "abf",
    )
    .await;
    let q = JobQuery {
        queue: Some(class("maas")),
        states: states(&[JobState::Test, JobState::Complete, JobState::Waiting]),
        ..Default::default()
    };
    assert_finds(db, &c, q, "de").await;
    assert_finds(
        db,
        &c,
        JobQuery {
            states: states(&[]),
            ..Default::default()
        },
        "",
    )
    .await;
}

pub async fn find_jobs_filters_by_any_or_all_tags(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let tags = |tags: &[&str], all_tags| JobQuery {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        all_tags,
        ..Default::default()
    };
    assert_finds(db, &c, tags(&["x"], false), "abe").await;
    assert_finds(db, &c, tags(&["x", "z"], false), "abef").await;
    assert_finds(db, &c, tags(&["nope"], false), "").await;
    assert_finds(db, &c, tags(&["x", "y"], true), "be").await;
    assert_finds(db, &c, tags(&["x", "y", "z"], true), "e").await;
    assert_finds(db, &c, tags(&["x", "x"], true), "abe").await;
    assert_finds(db, &c, tags(&["x", "nope"], true), "").await;
    assert_finds(db, &c, tags(&[], true), "abcdef").await;
}

pub async fn find_jobs_finds_leases_expired_before_an_instant(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let before = |ms| JobQuery {
        lease_expired_before: Some(t(ms)),
        ..Default::default()
    };
    assert_finds(db, &c, before(50), "").await;
    assert_finds(db, &c, before(51), "d").await;
    assert_finds(db, &c, before(100), "d").await;
    assert_finds(db, &c, before(101), "cd").await;
}

pub async fn find_jobs_finds_jobs_not_enqueued_since_an_instant(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let since = |ms| JobQuery {
        not_enqueued_since: Some(t(ms)),
        ..Default::default()
    };
    assert_finds(db, &c, since(1), "").await; // a was last updated at 1: not strictly before
    assert_finds(db, &c, since(2), "a").await;
    assert_finds(db, &c, since(1_000), "a").await;
}

pub async fn find_jobs_created_after_is_strict(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let after = |ms| JobQuery {
        created_after: Some(t(ms)),
        ..Default::default()
    };
    assert_finds(db, &c, after(0), "abcdef").await;
    assert_finds(db, &c, after(3), "def").await;
    assert_finds(db, &c, after(6), "").await;
}

pub async fn count_jobs_answers_the_queue_position_question(db: &Fresh) {
    let c = Corpus::insert(db).await;
    // g ties with f: same priority, same instant. Neither is ahead of the other.
    let g = waiting("rpi4b", 0, &[], t(6));
    insert(db, &g).await;
    let ahead_of = |job: &JobRecord| JobQuery {
        queue: Some(job.queue.clone()),
        states: Some(vec![JobState::Waiting]),
        ahead_of: Some((job.priority, job.created_at)),
        ..Default::default()
    };
    let [a, b, _, _, _, f] = &c.all[..] else {
        unreachable!()
    };
    assert_finds(db, &c, ahead_of(f), "ab").await; // b: higher priority; a: same, older
    assert_eq!(db.store.count_jobs(&ahead_of(&g)).await.unwrap(), 2);
    assert_finds(db, &c, ahead_of(a), "b").await;
    assert_finds(db, &c, ahead_of(b), "").await; // nothing higher; c has b's priority but is younger
    let first_in_line = JobQuery {
        ahead_of: Some((9, t(5))),
        ..Default::default()
    };
    assert_finds(db, &c, first_in_line, "").await; // e itself: nothing higher, nothing older at 9
    let everyone_ahead = JobQuery {
        ahead_of: Some((0, t(1_000))),
        ..Default::default()
    };
    assert_eq!(db.store.count_jobs(&everyone_ahead).await.unwrap(), 7);
}

pub async fn find_jobs_orders_oldest_newest_or_in_queue_order(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let order = |order| JobQuery {
        order,
        ..Default::default()
    };
    assert_eq!(
        ids(&db.store.find_jobs(&order(JobOrder::CreatedAsc)).await.unwrap()),
        c.ids("abcdef")
    );
    assert_eq!(
        ids(&db.store.find_jobs(&order(JobOrder::CreatedDesc)).await.unwrap()),
        c.ids("fedcba")
    );
    assert_eq!(
        ids(&db.store.find_jobs(&order(JobOrder::QueueOrder)).await.unwrap()),
        c.ids("ebcadf")
    );
    let waiting_here = JobQuery {
        queue: Some(class("rpi4b")),
        states: Some(vec![JobState::Waiting]),
        order: JobOrder::QueueOrder,
        ..Default::default()
    };
    assert_eq!(
        ids(&db.store.find_jobs(&waiting_here).await.unwrap()),
        c.ids("baf")
    );
}

pub async fn limit_caps_find_jobs_and_count_jobs(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let q = |order, limit| JobQuery {
        order,
        limit: Some(limit),
        ..Default::default()
    };
    assert_eq!(
        ids(&db.store.find_jobs(&q(JobOrder::CreatedDesc, 2)).await.unwrap()),
        c.ids("fe")
    );
    assert_eq!(
        ids(&db.store.find_jobs(&q(JobOrder::CreatedAsc, 2)).await.unwrap()),
        c.ids("ab")
    );
    assert_eq!(
        ids(&db.store.find_jobs(&q(JobOrder::QueueOrder, 1)).await.unwrap()),
        c.ids("e")
    );
    assert_eq!(
        db.store.find_jobs(&q(JobOrder::CreatedAsc, 0)).await.unwrap(),
        vec![]
    );
    assert_eq!(
        ids(&db.store.find_jobs(&q(JobOrder::CreatedAsc, 100)).await.unwrap()),
        c.ids("abcdef")
    );
    // `count_jobs` counts what `find_jobs` would return: the limit caps it.
    assert_eq!(db.store.count_jobs(&q(JobOrder::CreatedAsc, 2)).await.unwrap(), 2);
    assert_eq!(db.store.count_jobs(&q(JobOrder::CreatedAsc, 0)).await.unwrap(), 0);
    assert_eq!(
        db.store.count_jobs(&q(JobOrder::CreatedAsc, 100)).await.unwrap(),
        6
    );
    // The limit applies after filtering.
    let filtered = JobQuery {
        states: Some(vec![JobState::Waiting]),
        ..q(JobOrder::CreatedDesc, 2)
    };
    assert_eq!(ids(&db.store.find_jobs(&filtered).await.unwrap()), c.ids("fb"));
}

/// The web UI's job list: one submitter's jobs, a page at a time.
pub async fn find_jobs_filters_by_submitter_and_pages_with_offset(db: &Fresh) {
    let mut jobs = vec![];
    for (n, who) in [
        (1, Some("alice")),
        (2, None),
        (3, Some("bob")),
        (4, Some("alice")),
        (5, Some("alice")),
    ] {
        let mut j = waiting("rpi4b", 0, &[], t(n));
        j.submitted_by = who.map(str::to_owned);
        insert(db, &j).await;
        jobs.push(j.job_id);
    }
    let alice = |offset, limit| JobQuery {
        submitted_by: Some("alice".into()),
        order: JobOrder::CreatedDesc,
        offset,
        limit,
        ..Default::default()
    };
    assert_eq!(
        ids(&db.store.find_jobs(&alice(None, None)).await.unwrap()),
        vec![jobs[4], jobs[3], jobs[0]]
    );
    assert_eq!(db.store.count_jobs(&alice(None, None)).await.unwrap(), 3);
    // Pages: the offset applies after filtering and ordering, before the limit.
    assert_eq!(
        ids(&db.store.find_jobs(&alice(Some(1), Some(1))).await.unwrap()),
        vec![jobs[3]]
    );
    assert_eq!(
        ids(&db.store.find_jobs(&alice(Some(2), Some(5))).await.unwrap()),
        vec![jobs[0]]
    );
    assert_eq!(db.store.count_jobs(&alice(Some(2), Some(5))).await.unwrap(), 1);
    assert_eq!(db.store.find_jobs(&alice(Some(3), None)).await.unwrap(), vec![]);
    let everyone = JobQuery {
        order: JobOrder::CreatedAsc,
        offset: Some(3),
        ..Default::default()
    };
    assert_eq!(
        ids(&db.store.find_jobs(&everyone).await.unwrap()),
        vec![jobs[3], jobs[4]]
    );
    // The search box: part of a name in any case, or a whole tag; literally (no pattern).
    let mut named = waiting("rpi4b", 0, &["nightly"], t(10));
    named.definition = broker_schema::JobDefinition::parse(
        serde_json::json!({"job_queue": "rpi4b", "name": "Kernel (6.8) smoke test", "tags": ["nightly"]}),
    )
    .unwrap();
    insert(db, &named).await;
    let search = |text: &str| JobQuery {
        text: Some(text.into()),
        ..Default::default()
    };
    for (text, found) in [
        ("kernel", true),
        ("(6.8) SMOKE", true),
        ("nightly", true),
        ("night", false),
        ("6.8.", false),
        ("k.rnel", false),
    ] {
        let ids = ids(&db.store.find_jobs(&search(text)).await.unwrap());
        assert_eq!(ids == vec![named.job_id], found, "{text:?}: {ids:?}");
        assert_eq!(search(text).matches(&named), found, "reference, {text:?}");
    }
}

pub async fn find_jobs_agrees_with_the_reference_semantics(db: &Fresh) {
    let c = Corpus::insert(db).await;
    let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let base = [
        JobQuery::default(),
        JobQuery {
            queue: Some(class("rpi4b")),
            states: Some(vec![JobState::Waiting]),
            ..Default::default()
        },
        JobQuery {
            tags: tags(&["y", "z"]),
            ..Default::default()
        },
        JobQuery {
            tags: tags(&["y", "x"]),
            all_tags: true,
            queue: Some(class("maas")),
            ..Default::default()
        },
        JobQuery {
            lease_expired_before: Some(t(75)),
            states: Some(vec![JobState::Test]),
            ..Default::default()
        },
        JobQuery {
            not_enqueued_since: Some(t(10)),
            tags: tags(&["x"]),
            ..Default::default()
        },
        JobQuery {
            ahead_of: Some((5, t(3))),
            ..Default::default()
        },
        JobQuery {
            ahead_of: Some((0, t(5))),
            created_after: Some(t(1)),
            ..Default::default()
        },
        JobQuery {
            created_after: Some(t(2)),
            tags: tags(&["y"]),
            ..Default::default()
        },
    ];
    for q in base {
        for order in JobOrder::ALL {
            for limit in [None, Some(1), Some(3)] {
                let q = JobQuery {
                    order,
                    limit,
                    ..q.clone()
                };
                let expected = c.expected(&q);
                assert_eq!(ids(&db.store.find_jobs(&q).await.unwrap()), expected, "{q:?}");
                assert_eq!(
                    db.store.count_jobs(&q).await.unwrap(),
                    expected.len() as u64,
                    "count of {q:?}"
                );
            }
        }
    }
}

// ----- output

fn fragment(
    job_id: Uuid,
    attempt: u32,
    stream: LogStream,
    seq: u64,
    phase: Phase,
    data: &[u8],
) -> OutputFragment {
    OutputFragment {
        job_id,
        attempt,
        stream,
        seq,
        phase,
        at: t(seq as i64 * 10),
        data: data.to_vec(),
    }
}

fn seqs(fragments: &[OutputFragment]) -> Vec<u64> {
    fragments.iter().map(|f| f.seq).collect()
}

pub async fn appending_output_twice_and_out_of_order_stores_each_fragment_once(db: &Fresh) {
    let id = Uuid::new_v4();
    let f = |seq| {
        fragment(
            id,
            1,
            LogStream::Output,
            seq,
            Phase::Test,
            format!("line {seq}\n").as_bytes(),
        )
    };
    db.store.append_output(&[f(2), f(0)]).await.unwrap();
    db.store.append_output(&[f(1), f(0), f(3), f(2)]).await.unwrap();
    db.other.append_output(&[f(3), f(1)]).await.unwrap();
    db.store.append_output(&[]).await.unwrap();
    let all = OutputQuery::all(id, 1, LogStream::Output);
    assert_eq!(
        db.store.read_output(&all).await.unwrap(),
        vec![f(0), f(1), f(2), f(3)]
    );
    assert_eq!(db.store.count_output(id, 1, LogStream::Output).await.unwrap(), 4);
}

pub async fn output_of_different_attempts_and_streams_is_separate(db: &Fresh) {
    let (id, other_job) = (Uuid::new_v4(), Uuid::new_v4());
    let pieces = [
        fragment(id, 1, LogStream::Output, 0, Phase::Test, b"attempt 1 output"),
        fragment(id, 2, LogStream::Output, 0, Phase::Test, b"attempt 2 output"),
        fragment(id, 1, LogStream::Serial, 0, Phase::Test, b"attempt 1 serial"),
        fragment(
            id,
            1,
            LogStream::Serial,
            1,
            Phase::Test,
            b"attempt 1 serial, more",
        ),
        fragment(other_job, 1, LogStream::Output, 0, Phase::Test, b"another job"),
    ];
    db.store.append_output(&pieces).await.unwrap();
    let read = |job, attempt, stream| {
        let store = db.store.clone();
        async move {
            store
                .read_output(&OutputQuery::all(job, attempt, stream))
                .await
                .unwrap()
        }
    };
    assert_eq!(read(id, 1, LogStream::Output).await, vec![pieces[0].clone()]);
    assert_eq!(read(id, 2, LogStream::Output).await, vec![pieces[1].clone()]);
    assert_eq!(
        read(id, 1, LogStream::Serial).await,
        vec![pieces[2].clone(), pieces[3].clone()]
    );
    assert_eq!(
        read(other_job, 1, LogStream::Output).await,
        vec![pieces[4].clone()]
    );
    assert_eq!(read(id, 3, LogStream::Output).await, vec![]);
    assert_eq!(db.store.count_output(id, 1, LogStream::Output).await.unwrap(), 1);
    assert_eq!(db.store.count_output(id, 1, LogStream::Serial).await.unwrap(), 2);
    assert_eq!(db.store.count_output(id, 2, LogStream::Serial).await.unwrap(), 0);
    assert_eq!(
        db.store
            .count_output(Uuid::new_v4(), 1, LogStream::Output)
            .await
            .unwrap(),
        0
    );
}

pub async fn read_output_honours_from_seq_phase_since_and_limit(db: &Fresh) {
    let id = Uuid::new_v4();
    let phases = [
        Phase::Setup,
        Phase::Setup,
        Phase::Provision,
        Phase::Test,
        Phase::Test,
        Phase::Cleanup,
    ];
    let all: Vec<_> = phases
        .iter()
        .enumerate()
        .map(|(seq, phase)| fragment(id, 1, LogStream::Output, seq as u64, *phase, &[seq as u8]))
        .collect();
    db.store.append_output(&all).await.unwrap(); // fragment n is at t(10 n)
    let base = OutputQuery::all(id, 1, LogStream::Output);
    let cases = [
        (base.clone(), vec![0, 1, 2, 3, 4, 5]),
        (
            OutputQuery {
                from_seq: 2,
                ..base.clone()
            },
            vec![2, 3, 4, 5],
        ),
        (
            OutputQuery {
                from_seq: 6,
                ..base.clone()
            },
            vec![],
        ),
        (
            OutputQuery {
                from_seq: u64::MAX,
                ..base.clone()
            },
            vec![],
        ),
        (
            OutputQuery {
                phase: Some(Phase::Test),
                ..base.clone()
            },
            vec![3, 4],
        ),
        (
            OutputQuery {
                phase: Some(Phase::Reserve),
                ..base.clone()
            },
            vec![],
        ),
        (
            OutputQuery {
                since: Some(t(40)),
                ..base.clone()
            },
            vec![4, 5],
        ),
        (
            OutputQuery {
                since: Some(t(41)),
                ..base.clone()
            },
            vec![5],
        ),
        (
            OutputQuery {
                limit: Some(2),
                ..base.clone()
            },
            vec![0, 1],
        ),
        (
            OutputQuery {
                limit: Some(0),
                ..base.clone()
            },
            vec![],
        ),
        (
            OutputQuery {
                from_seq: 1,
                phase: Some(Phase::Setup),
                ..base.clone()
            },
            vec![1],
        ),
        (
            OutputQuery {
                from_seq: 3,
                limit: Some(1),
                ..base.clone()
            },
            vec![3],
        ),
        (
            OutputQuery {
                since: Some(t(10)),
                phase: Some(Phase::Test),
                limit: Some(1),
                ..base.clone()
            },
            vec![3],
        ),
    ];
    for (q, expected) in cases {
        let got = db.store.read_output(&q).await.unwrap();
        assert_eq!(seqs(&got), expected, "{q:?}");
        let reference: Vec<_> = all
            .iter()
            .filter(|f| q.matches(f))
            .take(q.limit.map_or(usize::MAX, |l| l as usize))
            .cloned()
            .collect();
        assert_eq!(got, reference, "{q:?} against OutputQuery::matches");
    }
}

pub async fn output_data_survives_byte_for_byte(db: &Fresh) {
    let id = Uuid::new_v4();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let not_utf8 = b"\xff\xfe\x00ok\x80\n\r\x1b[31mred\x1b[0m".to_vec();
    let big: Vec<u8> = (0..256 * 1024)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let pieces = [
        fragment(id, 1, LogStream::Serial, 0, Phase::Provision, &every_byte),
        fragment(id, 1, LogStream::Serial, 1, Phase::Provision, &not_utf8),
        fragment(id, 1, LogStream::Serial, 2, Phase::Provision, b""),
        fragment(id, 1, LogStream::Serial, 3, Phase::Provision, &big),
    ];
    db.store.append_output(&pieces).await.unwrap();
    let got = db
        .other
        .read_output(&OutputQuery::all(id, 1, LogStream::Serial))
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    for (got, sent) in got.iter().zip(&pieces) {
        assert!(
            got.data == sent.data,
            "fragment {} differs ({} bytes vs {})",
            sent.seq,
            got.data.len(),
            sent.data.len()
        );
    }
    assert_eq!(got, pieces);
}

// ----- agents

fn heartbeat(name: &str, state: AgentState, at: Millis) -> Heartbeat {
    Heartbeat {
        agent: agent(name),
        state,
        job_id: None,
        queues: vec![class("rpi4b")],
        location: Some("lab 1, rack 2".into()),
        provision_type: Some("noprovision".into()),
        comment: None,
        interval_ms: 5_000,
        at,
        version: "0.1.0".into(),
    }
}

pub async fn first_heartbeat_creates_the_agent(db: &Fresh) {
    let hb = heartbeat("dut-1", AgentState::Waiting, t(100));
    let recorded = db.store.record_heartbeat(&hb).await.unwrap();
    let expected = AgentRecord {
        name: agent("dut-1"),
        state: AgentState::Waiting,
        job_id: None,
        queues: vec![class("rpi4b")],
        location: Some("lab 1, rack 2".into()),
        provision_type: Some("noprovision".into()),
        comment: None,
        admin_state: None,
        admin_comment: None,
        interval_ms: 5_000,
        last_seen: t(100),
        version: Some("0.1.0".into()),
    };
    assert_eq!(recorded, expected);
    assert_eq!(db.store.get_agent(&agent("dut-1")).await.unwrap(), Some(expected));
}

pub async fn later_heartbeat_updates_what_the_agent_reports(db: &Fresh) {
    db.store
        .record_heartbeat(&heartbeat("dut-1", AgentState::Waiting, t(100)))
        .await
        .unwrap();
    let job_id = Uuid::new_v4();
    let busy = Heartbeat {
        job_id: Some(job_id),
        queues: vec![class("rpi4b"), class("rpi4b-hat")],
        location: Some("lab 2".into()),
        provision_type: None,
        comment: Some("running".into()),
        interval_ms: 2_000,
        version: "0.2.0".into(),
        ..heartbeat("dut-1", AgentState::Running(Phase::Test), t(200))
    };
    let recorded = db.store.record_heartbeat(&busy).await.unwrap();
    assert_eq!(recorded, AgentRecord::from_heartbeat(&busy));
    assert_eq!(recorded.state, AgentState::Running(Phase::Test));
    assert_eq!(recorded.job_id, Some(job_id));
    assert_eq!(recorded.queues, vec![class("rpi4b"), class("rpi4b-hat")]);
    assert_eq!(
        (recorded.location.as_deref(), recorded.provision_type.as_deref()),
        (Some("lab 2"), None)
    );
    assert_eq!(recorded.comment.as_deref(), Some("running"));
    assert_eq!((recorded.interval_ms, recorded.last_seen), (2_000, t(200)));
    assert_eq!(recorded.version.as_deref(), Some("0.2.0"));
    assert_eq!(db.store.get_agent(&agent("dut-1")).await.unwrap(), Some(recorded));

    let idle = heartbeat("dut-1", AgentState::Waiting, t(300));
    let recorded = db.other.record_heartbeat(&idle).await.unwrap();
    assert_eq!((recorded.job_id, recorded.comment.clone()), (None, None));
    assert_eq!(
        db.store.get_agent(&agent("dut-1")).await.unwrap(),
        Some(AgentRecord::from_heartbeat(&idle))
    );
}

pub async fn an_older_heartbeat_changes_nothing(db: &Fresh) {
    let busy = Heartbeat {
        job_id: Some(Uuid::new_v4()),
        ..heartbeat("dut-1", AgentState::Running(Phase::Test), t(200))
    };
    db.store.record_heartbeat(&busy).await.unwrap();
    // A redelivered heartbeat from before the job started arrives late.
    let stale = heartbeat("dut-1", AgentState::Waiting, t(100));
    let answered = db.other.record_heartbeat(&stale).await.unwrap();
    let expected = AgentRecord::from_heartbeat(&busy);
    assert_eq!(answered, expected);
    assert_eq!(
        db.store.get_agent(&agent("dut-1")).await.unwrap(),
        Some(expected.clone())
    );
    // The reference semantics agree.
    let mut reference = expected.clone();
    reference.apply_heartbeat(&stale);
    assert_eq!(reference, expected);
    // A heartbeat of the same instant is taken (the agent's state changed within a millisecond).
    let same = heartbeat("dut-1", AgentState::Waiting, t(200));
    let recorded = db.store.record_heartbeat(&same).await.unwrap();
    assert_eq!(recorded, AgentRecord::from_heartbeat(&same));
    // An admin's placeholder (never seen) takes any heartbeat.
    db.store
        .set_agent_admin(
            &agent("dut-2"),
            Some(AdminState::Maintenance),
            "new cable",
            t(500),
        )
        .await
        .unwrap();
    let first = heartbeat("dut-2", AgentState::Waiting, t(1));
    let recorded = db.other.record_heartbeat(&first).await.unwrap();
    assert_eq!((recorded.state, recorded.last_seen), (AgentState::Waiting, t(1)));
    assert_eq!(recorded.admin_state, Some(AdminState::Maintenance));
}

pub async fn admin_decision_survives_later_heartbeats(db: &Fresh) {
    let name = agent("dut-1");
    db.store
        .record_heartbeat(&heartbeat("dut-1", AgentState::Waiting, t(100)))
        .await
        .unwrap();
    let decided = db
        .store
        .set_agent_admin(&name, Some(AdminState::Maintenance), "flaky usb", t(150))
        .await
        .unwrap();
    assert_eq!(decided.admin_state, Some(AdminState::Maintenance));
    assert_eq!(decided.admin_comment.as_deref(), Some("flaky usb"));
    assert_eq!(
        (decided.state, decided.last_seen),
        (AgentState::Waiting, t(100)),
        "kept what the agent reported"
    );

    let hb = heartbeat("dut-1", AgentState::Running(Phase::Setup), t(200));
    let after = db.store.record_heartbeat(&hb).await.unwrap();
    assert_eq!(after.admin_state, Some(AdminState::Maintenance));
    assert_eq!(after.admin_comment.as_deref(), Some("flaky usb"));
    assert_eq!(
        (after.state, after.last_seen),
        (AgentState::Running(Phase::Setup), t(200))
    );
    assert_eq!(db.store.get_agent(&name).await.unwrap(), Some(after));
}

pub async fn admin_decision_for_an_unknown_agent_creates_a_placeholder(db: &Fresh) {
    let name = agent("dut-new");
    let placeholder = db
        .store
        .set_agent_admin(&name, Some(AdminState::Offline), "not cabled yet", t(10))
        .await
        .unwrap();
    let expected = AgentRecord {
        admin_state: Some(AdminState::Offline),
        admin_comment: Some("not cabled yet".into()),
        ..AgentRecord::placeholder(name.clone())
    };
    assert_eq!(placeholder, expected);
    assert_eq!(
        (placeholder.state, placeholder.last_seen),
        (AgentState::Offline, Millis(0))
    );
    assert!(placeholder.interval_ms > 0);
    assert_eq!(db.store.get_agent(&name).await.unwrap(), Some(expected));

    let hb = heartbeat("dut-new", AgentState::Waiting, t(100));
    let reported = db.store.record_heartbeat(&hb).await.unwrap();
    assert_eq!(reported.admin_state, Some(AdminState::Offline));
    assert_eq!(
        (reported.state, reported.last_seen),
        (AgentState::Waiting, t(100))
    );
}

pub async fn clearing_the_admin_decision_keeps_what_the_agent_reported(db: &Fresh) {
    let name = agent("dut-1");
    let hb = heartbeat("dut-1", AgentState::Waiting, t(100));
    db.store.record_heartbeat(&hb).await.unwrap();
    db.store
        .set_agent_admin(&name, Some(AdminState::Offline), "moving racks", t(110))
        .await
        .unwrap();
    let cleared = db.store.set_agent_admin(&name, None, "", t(120)).await.unwrap();
    assert_eq!(cleared, AgentRecord::from_heartbeat(&hb));
    assert_eq!(db.store.get_agent(&name).await.unwrap(), Some(cleared));
}

pub async fn list_agents_returns_every_agent_once(db: &Fresh) {
    assert_eq!(db.store.list_agents().await.unwrap(), vec![]);
    for (name, at) in [("dut-b", 1), ("dut-a", 2), ("dut-b", 3), ("dut-c", 4)] {
        db.store
            .record_heartbeat(&heartbeat(name, AgentState::Waiting, t(at)))
            .await
            .unwrap();
    }
    db.store
        .set_agent_admin(&agent("dut-d"), Some(AdminState::Maintenance), "", t(5))
        .await
        .unwrap();
    let mut listed = db.store.list_agents().await.unwrap();
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<_> = listed.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["dut-a", "dut-b", "dut-c", "dut-d"]);
    assert_eq!(listed[1].last_seen, t(3));
    assert_eq!(listed[3].admin_state, Some(AdminState::Maintenance));
    assert_eq!(listed[3].admin_comment, None, "an empty comment is no comment");
}

pub async fn unknown_agent_is_none(db: &Fresh) {
    db.store
        .record_heartbeat(&heartbeat("dut-1", AgentState::Waiting, t(1)))
        .await
        .unwrap();
    assert_eq!(db.store.get_agent(&agent("dut-2")).await.unwrap(), None);
}

// ----- the database itself

pub async fn ping_answers(db: &Fresh) {
    db.store.ping().await.expect("ping");
    db.other.ping().await.expect("ping through the second handle");
    assert!(!db.store.backend().is_empty());
}

pub async fn a_write_through_one_handle_is_read_through_the_other(db: &Fresh) {
    let job = waiting("rpi4b", 0, &[], t(0));
    insert(db, &job).await;
    assert_eq!(db.other.get_job(job.job_id).await.unwrap(), Some(job.clone()));

    let pre = Precondition::state(JobState::Waiting).attempt(0);
    let leased = db
        .other
        .update_job(job.job_id, &pre, &grant("dut-1", 1, t(60_000), t(5)))
        .await
        .unwrap();
    assert_eq!(db.store.get_job(job.job_id).await.unwrap(), leased);
    assert_eq!(
        db.store
            .update_job(job.job_id, &pre, &JobUpdate::at(t(6)))
            .await
            .unwrap(),
        None
    );

    let piece = fragment(job.job_id, 1, LogStream::Output, 0, Phase::Setup, b"hello");
    db.other
        .append_output(std::slice::from_ref(&piece))
        .await
        .unwrap();
    assert_eq!(
        db.store
            .read_output(&OutputQuery::all(job.job_id, 1, LogStream::Output))
            .await
            .unwrap(),
        vec![piece]
    );

    let hb = heartbeat("dut-1", AgentState::Leased, t(7));
    db.store.record_heartbeat(&hb).await.unwrap();
    assert_eq!(
        db.other.get_agent(&agent("dut-1")).await.unwrap(),
        Some(AgentRecord::from_heartbeat(&hb))
    );

    let q = JobQuery {
        states: Some(vec![JobState::Leased]),
        ..Default::default()
    };
    assert_eq!(ids(&db.other.find_jobs(&q).await.unwrap()), vec![job.job_id]);
    assert!(
        !db.store.discard_job(job.job_id).await.unwrap(),
        "a leased job is not discarded"
    );
}

// ----- small documents

pub async fn a_doc_is_created_only_when_absent_and_then_compare_and_set_by_version(db: &Fresh) {
    let s = &db.store;
    assert_eq!(s.get_doc(DocKind::Queue, "rpi4b").await.unwrap(), None);
    assert_eq!(
        s.put_doc(DocKind::Queue, "rpi4b", None, &json!({"a": 1}))
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        db.other
            .put_doc(DocKind::Queue, "rpi4b", None, &json!({"a": 2}))
            .await
            .unwrap(),
        None,
        "create-only refused: it exists"
    );
    assert_eq!(
        s.put_doc(DocKind::Queue, "rpi4b", Some(7), &json!({"a": 3}))
            .await
            .unwrap(),
        None,
        "wrong version refused"
    );
    assert_eq!(
        db.other
            .put_doc(
                DocKind::Queue,
                "rpi4b",
                Some(1),
                &json!({"a": 4, "k.$x": [1, null]})
            )
            .await
            .unwrap(),
        Some(2)
    );
    let d = s.get_doc(DocKind::Queue, "rpi4b").await.unwrap().expect("stored");
    assert_eq!((d.id.as_str(), d.version), ("rpi4b", 2));
    assert_eq!(d.body, json!({"a": 4, "k.$x": [1, null]}), "user keys survive");
    assert_eq!(
        s.put_doc(DocKind::Queue, "rpi4b", Some(1), &json!({}))
            .await
            .unwrap(),
        None
    );
}

pub async fn deleting_a_doc_honours_the_expected_version(db: &Fresh) {
    let s = &db.store;
    s.put_doc(DocKind::Client, "c", None, &json!(1)).await.unwrap();
    s.put_doc(DocKind::Client, "c", Some(1), &json!(2)).await.unwrap();
    assert!(!s.delete_doc(DocKind::Client, "c", Some(1)).await.unwrap());
    assert!(s.get_doc(DocKind::Client, "c").await.unwrap().is_some());
    assert!(db.other.delete_doc(DocKind::Client, "c", Some(2)).await.unwrap());
    assert!(
        !s.delete_doc(DocKind::Client, "c", None).await.unwrap(),
        "already gone"
    );
    s.put_doc(DocKind::Client, "d", None, &json!(1)).await.unwrap();
    assert!(
        s.delete_doc(DocKind::Client, "d", None).await.unwrap(),
        "unconditional"
    );
    assert_eq!(s.get_doc(DocKind::Client, "d").await.unwrap(), None);
}

pub async fn docs_are_listed_by_kind_and_id_prefix_in_id_order(db: &Fresh) {
    let s = &db.store;
    for id in ["alice/b", "alice/a/x", "bob/a", "alicex/z"] {
        s.put_doc(DocKind::Secret, id, None, &json!(id)).await.unwrap();
    }
    s.put_doc(DocKind::Queue, "alice/q", None, &json!("other kind"))
        .await
        .unwrap();
    let ids = |docs: Vec<flinger_store::Doc>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_docs(DocKind::Secret, "alice/").await.unwrap()),
        vec!["alice/a/x", "alice/b"]
    );
    assert_eq!(
        ids(db.other.list_docs(DocKind::Secret, "").await.unwrap()),
        vec!["alice/a/x", "alice/b", "alicex/z", "bob/a"]
    );
    assert!(s.list_docs(DocKind::Secret, "carol/").await.unwrap().is_empty());
    assert_eq!(
        ids(s.list_docs(DocKind::Queue, "").await.unwrap()),
        vec!["alice/q"]
    );
}

pub async fn concurrent_modifications_of_a_doc_are_never_lost(db: &Fresh) {
    let mut tasks = vec![];
    for i in 0..12 {
        let store = if i % 2 == 0 {
            db.store.clone()
        } else {
            db.other.clone()
        };
        tasks.push(tokio::spawn(async move {
            records::modify(store.as_ref(), DocKind::Queue, "counter", |n: Option<u64>| {
                Change::Write(n.unwrap_or(0) + 1)
            })
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = db
        .store
        .get_doc(DocKind::Queue, "counter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body, json!(12));
    assert_eq!(d.version, 12);
}

/// Every stored secret's id (`client/path`), sorted.
async fn secret_ids(s: &DynSchedulerStore) -> Vec<String> {
    let mut ids: Vec<String> = s
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

fn client(id: &str, role: Role) -> ClientRecord {
    ClientRecord {
        client_id: id.into(),
        secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        role,
        max_priority: BTreeMap::from([("*".into(), 10), ("rpi4b".into(), 100)]),
        max_reservation_time: BTreeMap::from([("rpi4b".into(), 86_400)]),
        email: Some(format!("{id}@example.com")),
        created_at: t(0),
        updated_at: t(1),
    }
}

pub async fn clients_are_stored_listed_replaced_and_deleted(db: &Fresh) {
    let s = &db.store;
    assert_eq!(s.get_client("bob").await.unwrap(), None);
    assert!(
        s.put_client(&client("bob", Role::Contributor)).await.unwrap(),
        "created"
    );
    assert!(s.put_client(&client("alice", Role::Admin)).await.unwrap());
    let mut bob = client("bob", Role::Manager);
    bob.max_priority.clear();
    assert!(!db.other.put_client(&bob).await.unwrap(), "replaced, not created");
    assert_eq!(s.get_client("bob").await.unwrap(), Some(bob.clone()));
    let all = s.list_clients().await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
    assert!(s.delete_client("bob").await.unwrap());
    assert!(!s.delete_client("bob").await.unwrap());
    assert_eq!(db.other.get_client("bob").await.unwrap(), None);
}

pub async fn a_refresh_token_is_revoked_once(db: &Fresh) {
    let s = &db.store;
    let token = RefreshTokenRecord {
        client_id: "bob".into(),
        issued_at: t(0),
        expires_at: Some(t(1_000)),
        revoked: false,
        claimed_role: Some(Role::Manager),
    };
    s.insert_refresh_token("hash-1", &token).await.unwrap();
    assert!(
        s.insert_refresh_token("hash-1", &token).await.is_err(),
        "hashes are unique"
    );
    assert_eq!(
        db.other.get_refresh_token("hash-1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(s.revoke_refresh_token("hash-1").await.unwrap(), Revoked::Now);
    assert_eq!(
        db.other.revoke_refresh_token("hash-1").await.unwrap(),
        Revoked::Already
    );
    assert_eq!(s.revoke_refresh_token("nope").await.unwrap(), Revoked::Unknown);
    assert!(s.get_refresh_token("hash-1").await.unwrap().unwrap().revoked);
}

pub async fn an_admin_revokes_every_refresh_token_of_one_client(db: &Fresh) {
    let s = &db.store;
    let token = |client: &str| RefreshTokenRecord {
        client_id: client.into(),
        issued_at: t(0),
        expires_at: None,
        revoked: false,
        claimed_role: None,
    };
    for (hash, client) in [
        ("h1", "alice@example.com"),
        ("h2", "alice@example.com"),
        ("h3", "bob"),
    ] {
        s.insert_refresh_token(hash, &token(client)).await.unwrap();
    }
    s.revoke_refresh_token("h2").await.unwrap();
    assert_eq!(
        db.other
            .revoke_client_refresh_tokens("alice@example.com")
            .await
            .unwrap(),
        1,
        "h2 was revoked already"
    );
    assert!(s.get_refresh_token("h1").await.unwrap().unwrap().revoked);
    assert!(!s.get_refresh_token("h3").await.unwrap().unwrap().revoked);
    assert_eq!(s.revoke_client_refresh_tokens("nobody").await.unwrap(), 0);
}

pub async fn a_pending_sign_on_is_taken_once_and_expires(db: &Fresh) {
    let s = &db.store;
    let browser = PendingSignOnRecord {
        flow: SignOnFlow::Browser {
            nonce: "n".into(),
            pkce_verifier: "v".into(),
        },
        expires_at: t(1_000),
    };
    s.insert_pending_sign_on("state-1", &browser).await.unwrap();
    assert!(
        s.insert_pending_sign_on("state-1", &browser).await.is_err(),
        "ids are unique"
    );
    // Two takers at once (two gateways): exactly one gets it.
    let (a, b) = tokio::join!(
        s.take_pending_sign_on("state-1", t(10)),
        db.other.take_pending_sign_on("state-1", t(10))
    );
    let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken, vec![browser.clone()]);
    assert_eq!(s.take_pending_sign_on("state-1", t(10)).await.unwrap(), None);
    // An expired one is nobody's, and is forgotten.
    s.insert_pending_sign_on("state-2", &browser).await.unwrap();
    assert_eq!(s.take_pending_sign_on("state-2", t(1_000)).await.unwrap(), None);
    assert_eq!(s.get_doc(DocKind::PendingSignOn, "state-2").await.unwrap(), None);
    // Retention forgets the ones nobody finished once they expired, and only those.
    let later = PendingSignOnRecord {
        expires_at: t(5_000),
        ..browser.clone()
    };
    s.insert_pending_sign_on("abandoned", &browser).await.unwrap();
    s.insert_pending_sign_on("under-way", &later).await.unwrap();
    assert_eq!(s.purge_expired_sign_ons(t(1_000)).await.unwrap(), 1);
    assert_eq!(
        s.get_doc(DocKind::PendingSignOn, "abandoned").await.unwrap(),
        None
    );
    assert_eq!(
        s.take_pending_sign_on("under-way", t(1_000)).await.unwrap(),
        Some(later)
    );
}

pub async fn retention_forgets_expired_refresh_tokens_and_secrets_and_keeps_live_ones(db: &Fresh) {
    let s = &db.store;
    let token = |expires_at: Option<Millis>, revoked: bool| RefreshTokenRecord {
        client_id: "alice@example.com".into(),
        issued_at: t(0),
        expires_at,
        revoked,
        claimed_role: None,
    };
    let tokens = [
        ("expired", token(Some(t(1_000)), false)),
        ("expired-revoked", token(Some(t(500)), true)),
        ("live", token(Some(t(1_001)), false)),
        ("live-revoked", token(Some(t(2_000)), true)),
        ("forever", token(None, false)),
    ];
    for (hash, record) in &tokens {
        s.insert_refresh_token(hash, record).await.unwrap();
    }
    let secret = |expires_at: Option<Millis>| SecretRecord {
        value: "v".into(),
        written_at: t(0),
        expires_at,
        single_use: false,
    };
    s.put_secret("alice", "expired", &secret(Some(t(1_000))))
        .await
        .unwrap();
    s.put_secret("alice", "live", &secret(Some(t(1_001))))
        .await
        .unwrap();
    s.put_secret("alice", "forever", &secret(None)).await.unwrap();

    // Two schedulers' retention passes at once: each expired record is removed, and counted,
    // once.
    let (a, b) = tokio::join!(
        s.purge_expired_refresh_tokens(t(1_000)),
        db.other.purge_expired_refresh_tokens(t(1_000))
    );
    assert_eq!(a.unwrap() + b.unwrap(), 2, "expiring at t is expired by t");
    let (a, b) = tokio::join!(
        s.purge_expired_secrets(t(1_000)),
        db.other.purge_expired_secrets(t(1_000))
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1);

    for (hash, record) in &tokens {
        let kept = s.get_refresh_token(hash).await.unwrap();
        if hash.starts_with("expired") {
            assert_eq!(kept, None, "{hash}");
        } else {
            assert_eq!(kept.as_ref(), Some(record), "{hash} is kept as it was");
        }
    }
    assert_eq!(secret_ids(s).await, ["alice/forever", "alice/live"]);
    // Nothing more to do until the next one expires.
    assert_eq!(s.purge_expired_refresh_tokens(t(1_000)).await.unwrap(), 0);
    assert_eq!(s.purge_expired_secrets(t(1_000)).await.unwrap(), 0);
    assert_eq!(s.purge_expired_refresh_tokens(t(1_001)).await.unwrap(), 1);
    assert_eq!(s.purge_expired_secrets(t(1_001)).await.unwrap(), 1);
}

pub async fn a_device_poll_is_spaced_by_half_the_interval(db: &Fresh) {
    let s = &db.store;
    let device = PendingSignOnRecord {
        flow: SignOnFlow::Device {
            device_code: "dc".into(),
            interval_secs: 4,
            next_poll_at: t(0),
        },
        expires_at: t(60_000),
    };
    s.insert_pending_sign_on("req", &device).await.unwrap();
    let ask = DevicePoll::Ask {
        device_code: "dc".into(),
    };
    assert_eq!(s.claim_device_poll("req", t(0)).await.unwrap(), ask);
    assert_eq!(
        db.other.claim_device_poll("req", t(1_999)).await.unwrap(),
        DevicePoll::TooSoon { retry_after_secs: 4 }
    );
    assert_eq!(s.claim_device_poll("req", t(2_000)).await.unwrap(), ask);
    assert_eq!(
        s.claim_device_poll("nope", t(0)).await.unwrap(),
        DevicePoll::Unknown
    );
    assert_eq!(
        s.claim_device_poll("req", t(60_000)).await.unwrap(),
        DevicePoll::Expired
    );
    assert_eq!(
        s.claim_device_poll("req", t(60_000)).await.unwrap(),
        DevicePoll::Unknown
    );
    // The flow that took it is over: a taken device login polls as unknown.
    s.insert_pending_sign_on("req2", &device).await.unwrap();
    assert!(s.take_pending_sign_on("req2", t(1)).await.unwrap().is_some());
    assert_eq!(
        s.claim_device_poll("req2", t(2)).await.unwrap(),
        DevicePoll::Unknown
    );
}

pub async fn the_last_owner_leaving_lifts_a_queue_restriction(db: &Fresh) {
    let s = &db.store;
    assert_eq!(s.get_restricted_queue("rpi4b").await.unwrap(), None);
    s.add_restricted_owner("rpi4b", "alice").await.unwrap();
    let q = db.other.add_restricted_owner("rpi4b", "bob").await.unwrap();
    assert_eq!(
        q.owners.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
    let again = s.add_restricted_owner("rpi4b", "bob").await.unwrap();
    assert_eq!(again, q, "adding an owner twice changes nothing");
    s.add_restricted_owner("other", "carol").await.unwrap();
    assert_eq!(
        s.list_restricted_queues()
            .await
            .unwrap()
            .iter()
            .map(|(q, _)| q.as_str())
            .collect::<Vec<_>>(),
        vec!["other", "rpi4b"]
    );
    assert!(!s.remove_restricted_owner("rpi4b", "carol").await.unwrap());
    assert!(s.remove_restricted_owner("rpi4b", "alice").await.unwrap());
    assert!(
        s.get_restricted_queue("rpi4b").await.unwrap().is_some(),
        "bob still owns it"
    );
    assert!(db.other.remove_restricted_owner("rpi4b", "bob").await.unwrap());
    assert_eq!(
        s.get_restricted_queue("rpi4b").await.unwrap(),
        None,
        "no owner: not restricted"
    );
    assert!(!s.remove_restricted_owner("rpi4b", "bob").await.unwrap());
}

pub async fn secrets_belong_to_one_client_and_expire(db: &Fresh) {
    let s = &db.store;
    let secret = |v: &str, expires: Option<Millis>| SecretRecord {
        value: v.into(),
        written_at: t(0),
        expires_at: expires,
        single_use: false,
    };
    s.put_secret("alice", "lab/token", &secret("s3cr3t", None))
        .await
        .unwrap();
    s.put_secret("alice", "short", &secret("brief", Some(t(100))))
        .await
        .unwrap();
    assert_eq!(
        db.other
            .get_secret("alice", "lab/token", t(5))
            .await
            .unwrap()
            .as_deref(),
        Some("s3cr3t")
    );
    assert_eq!(
        s.get_secret("bob", "lab/token", t(5)).await.unwrap(),
        None,
        "another client's"
    );
    assert_eq!(
        s.get_secret("alice", "short", t(99)).await.unwrap().as_deref(),
        Some("brief")
    );
    assert_eq!(
        s.get_secret("alice", "short", t(100)).await.unwrap(),
        None,
        "expired"
    );
    s.put_secret("alice", "lab/token", &secret("rotated", None))
        .await
        .unwrap();
    assert_eq!(
        s.get_secret("alice", "lab/token", t(5)).await.unwrap().as_deref(),
        Some("rotated")
    );
    assert!(s.delete_secret("alice", "lab/token").await.unwrap());
    assert!(!s.delete_secret("alice", "lab/token").await.unwrap());
    assert_eq!(s.get_secret("alice", "lab/token", t(5)).await.unwrap(), None);
}

pub async fn a_single_use_secret_is_taken_once_and_values_are_replaced_only_as_read(db: &Fresh) {
    let s = &db.store;
    let secret = |v: &str, expires: Option<Millis>, single_use: bool| SecretRecord {
        value: v.into(),
        written_at: t(0),
        expires_at: expires,
        single_use,
    };
    s.put_secret("alice", "once", &secret("only-once", None, true))
        .await
        .unwrap();
    s.put_secret("alice", "kept", &secret("many-times", None, false))
        .await
        .unwrap();
    s.put_secret("alice", "gone", &secret("expired", Some(t(10)), true))
        .await
        .unwrap();
    // Reading is not taking.
    assert_eq!(
        s.get_secret("alice", "once", t(5)).await.unwrap().as_deref(),
        Some("only-once")
    );
    // Two takers at once, through two handles: exactly one gets it.
    let (a, b) = tokio::join!(
        s.take_secret("alice", "once", t(5)),
        db.other.take_secret("alice", "once", t(5))
    );
    let got: Vec<String> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(got, ["only-once"]);
    assert_eq!(
        s.get_secret("alice", "once", t(5)).await.unwrap(),
        None,
        "deleted"
    );
    for _ in 0..2 {
        assert_eq!(
            s.take_secret("alice", "kept", t(5)).await.unwrap().as_deref(),
            Some("many-times")
        );
    }
    // An expired single-use secret gives nothing (and is left to expire).
    assert_eq!(s.take_secret("alice", "gone", t(10)).await.unwrap(), None);

    assert_eq!(secret_ids(s).await, ["alice/gone", "alice/kept"]);
    // Replaced only while it holds what was read.
    assert!(
        !s.replace_secret_value("alice/kept", "stale", "new")
            .await
            .unwrap()
    );
    assert!(
        db.other
            .replace_secret_value("alice/kept", "many-times", "new")
            .await
            .unwrap()
    );
    let (_, kept) = s
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .find(|(id, _)| id == "alice/kept")
        .unwrap();
    assert_eq!((kept.value.as_str(), kept.written_at), ("new", t(0)));
    assert!(!s.replace_secret_value("alice/none", "x", "y").await.unwrap());
}

pub async fn queue_descriptions_and_images_are_kept_apart(db: &Fresh) {
    let s = &db.store;
    let images = BTreeMap::from([("noble".to_string(), "url: http://img/noble".to_string())]);
    s.set_queue_images("rpi4b", &images, t(1)).await.unwrap();
    s.advertise_queues(
        &BTreeMap::from([
            ("rpi4b".to_string(), "Raspberry Pi 4".to_string()),
            ("x86".to_string(), String::new()),
        ]),
        t(2),
    )
    .await
    .unwrap();
    let q = db.other.get_queue("rpi4b").await.unwrap().unwrap();
    assert_eq!(q.description.as_deref(), Some("Raspberry Pi 4"));
    assert_eq!(q.images, images, "advertising keeps the images");
    s.set_queue_images("rpi4b", &BTreeMap::new(), t(3)).await.unwrap();
    let q = s.get_queue("rpi4b").await.unwrap().unwrap();
    assert!(q.images.is_empty());
    assert_eq!(
        q.description.as_deref(),
        Some("Raspberry Pi 4"),
        "images keep the description"
    );
    assert_eq!(
        s.list_queues()
            .await
            .unwrap()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        vec!["rpi4b", "x86"]
    );
}

pub async fn provision_logs_count_streaks_and_ignore_duplicates(db: &Fresh) {
    let s = &db.store;
    let entry = |job: &str, code: i32| ProvisionEntry {
        job_id: job.into(),
        exit_code: code,
        detail: String::new(),
        at: t(0),
    };
    s.record_provision("dut-1", &entry("j1", 0)).await.unwrap();
    let log = db.other.record_provision("dut-1", &entry("j2", 0)).await.unwrap();
    assert_eq!((log.streak_type.as_str(), log.streak_count), ("pass", 2));
    let log = s.record_provision("dut-1", &entry("j2", 0)).await.unwrap();
    assert_eq!(log.streak_count, 2, "a duplicate is not counted");
    let log = s.record_provision("dut-1", &entry("j3", 1)).await.unwrap();
    assert_eq!((log.streak_type.as_str(), log.streak_count), ("fail", 1));
    assert_eq!(log.entries.len(), 3);
    for i in 0..110 {
        s.record_provision("dut-2", &entry(&format!("k{i}"), 1))
            .await
            .unwrap();
    }
    let log = s.get_provision_log("dut-2").await.unwrap().unwrap();
    assert_eq!(log.entries.len(), records::PROVISION_LOG_LENGTH);
    assert_eq!(log.entries[0].job_id, "k10", "the oldest are dropped");
    assert_eq!(log.streak_count, 110);
    assert_eq!(s.get_provision_log("dut-3").await.unwrap(), None);
    let all = db.other.list_provision_logs().await.unwrap();
    assert_eq!(
        all.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(),
        vec!["dut-1", "dut-2"]
    );
}

pub async fn posted_results_merge_status_and_device_info(db: &Fresh) {
    let s = &db.store;
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    s.merge_posted_result(
        "j",
        &obj(json!({"status": {"setup": 0}, "job_state": "setup"})),
        t(1),
    )
    .await
    .unwrap();
    let r = db
        .other
        .merge_posted_result(
            "j",
            &obj(
                json!({"status": {"test": 1}, "device_info": {"device_ip": "10.0.0.1"}, "job_state": "test"}),
            ),
            t(2),
        )
        .await
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(r.fields.clone()),
        json!({"status": {"setup": 0, "test": 1}, "device_info": {"device_ip": "10.0.0.1"}, "job_state": "test"})
    );
    assert_eq!(s.get_posted_result("j").await.unwrap().unwrap().fields, r.fields);
    assert_eq!(s.get_posted_result("k").await.unwrap(), None);
}

// ----- blobs

fn byte_stream(pieces: Vec<std::io::Result<Bytes>>) -> ByteStream {
    Box::pin(futures::stream::iter(pieces))
}

/// Deterministic bytes that are not periodic in the chunk size.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `data` in pieces of `piece` bytes.
fn pieces(data: &[u8], piece: usize) -> ByteStream {
    byte_stream(
        data.chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
    )
}

async fn read_blob(db: &DynSchedulerStore, name: &BlobName) -> Option<Vec<u8>> {
    let (info, mut stream) = db.open_blob(name).await.unwrap()?;
    let mut out = vec![];
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.expect("blob piece"));
    }
    assert_eq!(info.size, out.len() as u64, "size matches the bytes");
    Some(out)
}

pub async fn a_blob_round_trips_byte_for_byte_across_many_chunks(db: &Fresh) {
    let name = BlobName::attachments(Uuid::new_v4());
    let data = noise(3 * flinger_store::BLOB_CHUNK + 12_345, 7);
    let info = db
        .store
        .put_blob(&name, pieces(&data, 10_000), 100 << 20)
        .await
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(
        db.other.blob_info(&name).await.unwrap().map(|i| i.size),
        Some(data.len() as u64)
    );
    assert!(read_blob(&db.other, &name).await.unwrap() == data, "bytes differ");
    let empty = BlobName::artifact(name.job_id);
    db.store.put_blob(&empty, byte_stream(vec![]), 10).await.unwrap();
    assert_eq!(
        read_blob(&db.store, &empty).await,
        Some(vec![]),
        "an empty blob is a blob"
    );
    assert_eq!(
        read_blob(&db.store, &name).await.map(|d| d.len()),
        Some(data.len()),
        "kinds are apart"
    );
}

pub async fn a_new_blob_replaces_the_old_one_whole(db: &Fresh) {
    let name = BlobName::artifact(Uuid::new_v4());
    db.store
        .put_blob(&name, pieces(&noise(600_000, 1), 65_536), 1 << 30)
        .await
        .unwrap();
    let second = noise(1000, 2);
    db.other
        .put_blob(&name, pieces(&second, 300), 1 << 30)
        .await
        .unwrap();
    assert!(read_blob(&db.store, &name).await.unwrap() == second);
    assert_eq!(db.store.blob_info(&name).await.unwrap().unwrap().size, 1000);
}

pub async fn a_blob_over_the_limit_stores_nothing_and_keeps_the_previous_one(db: &Fresh) {
    let name = BlobName::attachments(Uuid::new_v4());
    let big = noise(300_000, 3);
    match db.store.put_blob(&name, pieces(&big, 50_000), 299_999).await {
        Err(BlobError::TooLarge { limit }) => assert_eq!(limit, 299_999),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(db.store.blob_info(&name).await.unwrap(), None);
    db.store
        .put_blob(&name, pieces(&big, 50_000), 300_000)
        .await
        .expect("exactly the limit fits");
    assert!(matches!(
        db.other
            .put_blob(&name, pieces(&noise(400_000, 4), 50_000), 300_000)
            .await,
        Err(BlobError::TooLarge { .. })
    ));
    assert!(
        read_blob(&db.store, &name).await.unwrap() == big,
        "the previous blob is intact"
    );
}

pub async fn a_blob_whose_upload_fails_stores_nothing(db: &Fresh) {
    let name = BlobName::attachments(Uuid::new_v4());
    let broken = byte_stream(vec![
        Ok(Bytes::from(noise(300_000, 5))),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    assert!(matches!(
        db.store.put_blob(&name, broken, 1 << 30).await,
        Err(BlobError::Source(_))
    ));
    assert_eq!(db.store.blob_info(&name).await.unwrap(), None);
    assert!(db.store.open_blob(&name).await.unwrap().is_none());
}

pub async fn unknown_blobs_are_none_and_deleting_removes_them(db: &Fresh) {
    let name = BlobName::artifact(Uuid::new_v4());
    assert!(db.store.open_blob(&name).await.unwrap().is_none());
    assert!(!db.store.delete_blob(&name).await.unwrap());
    db.store
        .put_blob(&name, pieces(b"tarball", 3), 100)
        .await
        .unwrap();
    assert!(db.other.delete_blob(&name).await.unwrap());
    assert_eq!(db.store.blob_info(&name).await.unwrap(), None);
    assert!(!db.store.delete_blob(&name).await.unwrap());
}

// ----- retention

fn ended(queue: &str, state: JobState, updated: Millis) -> JobRecord {
    let mut job = waiting(queue, 0, &[], t(0));
    job.state = state;
    job.updated_at = updated;
    job
}

async fn with_everything(db: &Fresh, job: &JobRecord) {
    insert(db, job).await;
    let id = job.job_id;
    db.store
        .append_output(&[
            fragment(id, 1, LogStream::Output, 0, Phase::Test, b"out"),
            fragment(id, 1, LogStream::Serial, 0, Phase::Test, b"serial"),
        ])
        .await
        .unwrap();
    let fields = json!({"status": {"test": 0}}).as_object().unwrap().clone();
    db.store
        .merge_posted_result(&id.to_string(), &fields, t(1))
        .await
        .unwrap();
    for name in [BlobName::attachments(id), BlobName::artifact(id)] {
        db.store
            .put_blob(&name, pieces(b"bytes", 2), 1 << 20)
            .await
            .unwrap();
    }
}

/// What is left of a job's records besides the job itself: output and serial fragments of
/// attempt 1, and whether its posted result, attachments and artifacts exist.
async fn records_left(db: &Fresh, id: Uuid) -> (u64, u64, bool, bool, bool) {
    (
        db.store.count_output(id, 1, LogStream::Output).await.unwrap(),
        db.store.count_output(id, 1, LogStream::Serial).await.unwrap(),
        db.store
            .get_posted_result(&id.to_string())
            .await
            .unwrap()
            .is_some(),
        db.store
            .blob_info(&BlobName::attachments(id))
            .await
            .unwrap()
            .is_some(),
        db.store
            .blob_info(&BlobName::artifact(id))
            .await
            .unwrap()
            .is_some(),
    )
}

async fn kept_whole(db: &Fresh, job: &JobRecord) -> bool {
    db.store.get_job(job.job_id).await.unwrap().as_ref() == Some(job)
        && records_left(db, job.job_id).await == (1, 1, true, true, true)
}

async fn gone_whole(db: &Fresh, id: Uuid) -> bool {
    db.store.get_job(id).await.unwrap().is_none() && records_left(db, id).await == (0, 0, false, false, false)
}

pub async fn purge_removes_only_old_ended_jobs_and_everything_kept_for_them(db: &Fresh) {
    let old_complete = ended("rpi4b", JobState::Complete, t(100));
    let old_failed = ended("rpi4b", JobState::Failed, t(100));
    let old_cancelled_elsewhere = ended("maas", JobState::Cancelled, t(100));
    let recent = ended("rpi4b", JobState::Complete, t(1_000));
    let mut old_waiting = waiting("rpi4b", 0, &[], t(0));
    old_waiting.updated_at = t(100);
    let mut old_running = leased("dut-1", t(200));
    old_running.updated_at = t(100);
    let mut old_reserved = ended("rpi4b", JobState::Reserve, t(100));
    old_reserved.attempt = 1;
    for job in [
        &old_complete,
        &old_failed,
        &old_cancelled_elsewhere,
        &recent,
        &old_waiting,
        &old_running,
        &old_reserved,
    ] {
        with_everything(db, job).await;
    }
    let everywhere_but_maas = Purge {
        ended_before: t(500),
        queue: None,
        except_queues: vec!["maas".into()],
        limit: 100,
    };
    assert_eq!(db.store.purge_ended_jobs(&everywhere_but_maas).await.unwrap(), 2);
    assert!(gone_whole(db, old_complete.job_id).await);
    assert!(gone_whole(db, old_failed.job_id).await);
    for job in [
        &old_cancelled_elsewhere,
        &recent,
        &old_waiting,
        &old_running,
        &old_reserved,
    ] {
        assert!(
            kept_whole(db, job).await,
            "removed {:?} {}",
            job.state,
            job.job_id
        );
    }
    assert_eq!(db.other.purge_ended_jobs(&everywhere_but_maas).await.unwrap(), 0);
    let maas = Purge {
        queue: Some("maas".into()),
        except_queues: vec![],
        ..everywhere_but_maas.clone()
    };
    assert_eq!(db.other.purge_ended_jobs(&maas).await.unwrap(), 1);
    assert!(gone_whole(db, old_cancelled_elsewhere.job_id).await);
    assert!(kept_whole(db, &recent).await);
}

pub async fn purge_takes_batches_of_at_most_its_limit(db: &Fresh) {
    for i in 0..5 {
        insert(db, &ended("rpi4b", JobState::Complete, t(i))).await;
    }
    let batch = Purge {
        ended_before: t(100),
        queue: None,
        except_queues: vec![],
        limit: 2,
    };
    assert_eq!(db.store.purge_ended_jobs(&batch).await.unwrap(), 2);
    assert_eq!(db.other.purge_ended_jobs(&batch).await.unwrap(), 2);
    assert_eq!(db.store.purge_ended_jobs(&batch).await.unwrap(), 1);
    assert_eq!(db.store.purge_ended_jobs(&batch).await.unwrap(), 0);
    assert_eq!(db.store.count_jobs(&JobQuery::default()).await.unwrap(), 0);
}

// ----- metrics

pub async fn count_live_jobs_counts_each_live_state_by_queue_and_no_ended_job(db: &Fresh) {
    assert_eq!(db.store.count_live_jobs().await.unwrap(), vec![]);
    let mut test = leased("a1", t(100));
    test.state = JobState::Test;
    for job in [
        waiting("rpi4b", 0, &[], t(1)),
        waiting("rpi4b", 5, &[], t(2)),
        waiting("maas", 0, &[], t(3)),
        leased("a1", t(100)), // rpi4b
        test,                 // rpi4b
        ended("rpi4b", JobState::Complete, t(4)),
        ended("maas", JobState::Failed, t(5)),
        ended("maas", JobState::Cancelled, t(6)),
    ] {
        insert(db, &job).await;
    }
    let mut counts: Vec<(String, &str, u64)> = db
        .other
        .count_live_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.queue, c.state.as_str(), c.count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("maas".to_owned(), "waiting", 1),
            ("rpi4b".to_owned(), "leased", 1),
            ("rpi4b".to_owned(), "test", 1),
            ("rpi4b".to_owned(), "waiting", 2),
        ]
    );
}

//! Every message survives the wire, and anything that is not one of our messages is refused
//! with a typed error.

use broker_schema::messages::*;
use broker_schema::*;
use serde_json::json;
use std::collections::BTreeMap;
use uuid::Uuid;

fn job() -> JobDefinition {
    JobDefinition::parse(json!({
        "job_queue": "rpi4b",
        "tags": ["a", "b"],
        "job_priority": 7,
        "provision_data": {"url": "http://x/img.xz", "nested": {"n": [1, 2.5, null, true]}},
        "test_data": {"test_cmds": ["echo hi", "uname -a"]},
        "reserve_data": {"ssh_keys": ["lp:me"], "timeout": "2h"}
    }))
    .unwrap()
}

fn submission() -> Submission {
    Submission {
        job_id: Uuid::new_v4(),
        job: job(),
        submitted_at: Some(Millis::now()),
        submitted_by: Some("ci-bot".into()),
    }
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
    let bytes = encode(&m);
    let back: M = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", M::KIND));
    assert_eq!(back, m);
}

#[test]
fn every_message_round_trips() {
    let id = Uuid::new_v4();
    let agent = AgentName::parse("dut-01").unwrap();
    round_trip(submission());
    for req in [
        SchedulerRequest::Lease(LeaseRequest {
            job_id: id,
            agent: agent.clone(),
            submission: submission(),
            published_by: Some("ci-bot".into()),
            fetches_files: Some(false),
        }),
        SchedulerRequest::Renew(RenewRequest {
            job_id: id,
            attempt: 2,
            agent: agent.clone(),
        }),
        SchedulerRequest::Cancel(CancelRequest {
            job_id: id,
            requested_by: None,
        }),
        SchedulerRequest::Extend(ExtendRequest {
            job_id: id,
            by_secs: Some(7200),
            until: None,
            requested_by: Some("me".into()),
            max_total_secs: None,
        }),
        SchedulerRequest::SetAgentState(SetAgentStateRequest {
            agent: agent.clone(),
            state: Some(AdminState::Maintenance),
            comment: "new cable".into(),
        }),
        SchedulerRequest::SetAgentState(SetAgentStateRequest {
            agent: agent.clone(),
            state: Some(AdminState::Restart),
            comment: String::new(),
        }),
        SchedulerRequest::RestrictedQueues(RestrictedQueuesRequest {
            agent: agent.clone(),
            queues: vec![DeviceClass::parse("rpi4b").unwrap()],
        }),
    ] {
        round_trip(req);
    }
    for rep in [
        SchedulerReply::Lease(LeaseReply::Granted(LeaseGrant {
            job_id: id,
            attempt: 1,
            lease_until: Millis(5),
            lease_ms: 30_000,
            renew_every_ms: 10_000,
            secrets: BTreeMap::from([("TOKEN".into(), "s3cret".into())]),
            reserve_until: None,
            files: Some(broker_schema::job_files::JobFiles {
                url: "http://gw:8080".into(),
                token: "a.b.c".into(),
                until: Millis(5),
            }),
            output_cap: Some(64 * 1024),
        })),
        SchedulerReply::Lease(LeaseReply::Denied(LeaseDenial {
            job_id: id,
            reason: DenyReason::AlreadyLeased,
            detail: "leased by dut-02".into(),
        })),
        SchedulerReply::Renew(RenewReply::Renewed {
            lease_until: Millis(9),
            cancel: Some("by me".into()),
            reserve_until: None,
            files: None,
        }),
        SchedulerReply::Renew(RenewReply::Lost {
            reason: "expired".into(),
        }),
        SchedulerReply::Command(CommandReply::Refused {
            code: RefusalCode::Conflict,
            reason: "already complete".into(),
        }),
        SchedulerReply::RestrictedQueues {
            restricted: vec![DeviceClass::parse("rpi4b").unwrap()],
        },
        SchedulerReply::Error { reason: "bad".into() },
    ] {
        round_trip(rep);
    }
    for kind in [
        JobEventKind::PhaseStarted {
            phase: Phase::Provision,
        },
        JobEventKind::PhaseFinished {
            phase: Phase::Test,
            exit_code: -9,
            detail: Some("killed".into()),
        },
        JobEventKind::DeviceInfo {
            info: json!({"device_ip": "10.0.0.2"}),
        },
        JobEventKind::ReservationStarted {
            until: Millis(77),
            device_ip: Some("10.0.0.2".into()),
            user: Some("ubuntu".into()),
        },
        JobEventKind::Finished {
            outcome: Outcome::Failed {
                failure: Failure {
                    kind: FailureKind::OutputTimeout,
                    reason: "silent 900 s".into(),
                },
            },
            output: OutputCounts {
                output: 12,
                serial: 0,
            },
            phase_status: BTreeMap::from([(Phase::Setup, 0), (Phase::Test, 1)]),
            device_info: Some(json!({"device_ip": "10.0.0.2"})),
            output_truncated: BTreeMap::from([(LogStream::Output, 1234)]),
        },
        JobEventKind::StateChanged {
            state: JobState::Cancelled,
            failure: None,
            detail: None,
        },
        JobEventKind::RunAbandoned {
            reason: "the agent is shutting down".into(),
        },
    ] {
        round_trip(JobEvent {
            job_id: id,
            attempt: 3,
            agent: Some(agent.clone()),
            at: Millis::now(),
            shipped: None,
            kind,
        });
    }
    round_trip(OutputChunk {
        job_id: id,
        attempt: 1,
        stream: LogStream::Output,
        seq: 41,
        phase: Phase::Test,
        at: Millis::now(),
        data: bytes::Bytes::from_static(b"\xffnot utf8\n"),
    });
    round_trip(Heartbeat {
        agent: agent.clone(),
        state: AgentState::Running(Phase::Test),
        job_id: Some(id),
        queues: vec![DeviceClass::parse("rpi4b").unwrap()],
        location: Some("lab 2".into()),
        provision_type: Some("noprovision".into()),
        comment: None,
        interval_ms: 10_000,
        at: Millis::now(),
        version: "0.1.0".into(),
    });
    round_trip(Control {
        at: Millis(1),
        command: ControlCommand::Cancel {
            job_id: id,
            attempt: 1,
            reason: "user".into(),
        },
    });
}

#[test]
fn a_submission_is_a_plain_map_other_languages_can_write() {
    let s = submission();
    let v: serde_json::Value = rmp_serde::from_slice(&encode(&s)).unwrap();
    assert_eq!(v["v"], json!(SCHEMA_VERSION));
    assert_eq!(v["job_id"], json!(s.job_id.to_string()));
    assert_eq!(v["job"]["job_queue"], json!("rpi4b"));
    assert_eq!(v["job"]["test_data"]["test_cmds"], json!(["echo hi", "uname -a"]));
}

#[test]
fn garbage_is_refused() {
    assert_eq!(decode::<Submission>(b""), Err(DecodeError::Empty));
    assert!(matches!(
        decode::<Submission>(b"{\"json\": true}"),
        Err(DecodeError::NotMessagePack(_))
    ));
    assert!(matches!(
        decode::<Heartbeat>(&[0xc1, 0x00]),
        Err(DecodeError::NotMessagePack(_))
    ));
}

#[test]
fn truncated_messages_are_refused() {
    let bytes = encode(&submission());
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode::<Submission>(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn other_schema_versions_are_refused() {
    let mut v: serde_json::Value = rmp_serde::from_slice(&encode(&submission())).unwrap();
    v["v"] = json!(2);
    let bytes = rmp_serde::to_vec_named(&v).unwrap();
    assert_eq!(
        decode::<Submission>(&bytes),
        Err(DecodeError::UnsupportedVersion { found: 2 })
    );
    v.as_object_mut().unwrap().remove("v");
    let bytes = rmp_serde::to_vec_named(&v).unwrap();
    assert_eq!(decode::<Submission>(&bytes), Err(DecodeError::MissingVersion));
}

#[test]
fn a_message_of_another_kind_is_refused() {
    let bytes = encode(&Control {
        at: Millis(1),
        command: ControlCommand::SetAdminState {
            state: None,
            comment: String::new(),
        },
    });
    assert!(matches!(
        decode::<Submission>(&bytes),
        Err(DecodeError::Invalid {
            kind: "submission",
            ..
        })
    ));
}

#[test]
fn an_invalid_job_is_refused_naming_the_job_and_its_fields() {
    let id = Uuid::new_v4();
    let bytes = rmp_serde::to_vec_named(
        &json!({"v": 1, "job_id": id.to_string(), "job": {"job_queue": "q", "surprise": 1}}),
    )
    .unwrap();
    match decode_submission(&bytes) {
        Err(DecodeError::InvalidJob { job_id, errors }) => {
            assert_eq!(job_id, id);
            assert!(errors.fields.contains_key("surprise"));
        }
        other => panic!("expected InvalidJob, got {other:?}"),
    }
    assert_eq!(broker_schema::codec::probe_job_id(&bytes), Some(id));
}

#[test]
fn wrong_content_types_are_refused() {
    assert!(broker_schema::codec::check_content_type(Some("application/json")).is_err());
    assert!(broker_schema::codec::check_content_type(Some(CONTENT_TYPE)).is_ok());
    assert!(broker_schema::codec::check_content_type(None).is_ok());
}

#[test]
fn a_lease_grant_never_prints_its_secrets() {
    let grant = LeaseGrant {
        job_id: Uuid::nil(),
        attempt: 1,
        lease_until: Millis(0),
        lease_ms: 1,
        renew_every_ms: 1,
        secrets: BTreeMap::from([("TOKEN".into(), "hunter2-very-secret".into())]),
        reserve_until: None,
        output_cap: None,
        files: Some(broker_schema::job_files::JobFiles {
            url: "http://gw:8080".into(),
            token: "hunter2-very-secret".into(),
            until: Millis(0),
        }),
    };
    let shown = format!(
        "{grant:?} {:?}",
        SchedulerReply::Lease(LeaseReply::Granted(grant.clone()))
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("TOKEN=****"), "{shown}");
}

//! Submitting, reading, placing and cancelling jobs.

use crate::support::{TestApp, validation_detail};
use broker_schema::messages::{
    AgentState, CommandReply, RefusalCode, SchedulerReply, SchedulerRequest, Submission,
};
use broker_schema::{CONTENT_TYPE, Failure, FailureKind, JobState, Millis};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

async fn job_id_of(r: reqwest::Response) -> Uuid {
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["job_id"].as_str().expect("job_id").parse().expect("a UUID")
}

#[tokio::test]
async fn a_valid_job_is_stored_waiting_and_published_to_its_class_queue() {
    let app = TestApp::spawn().await;
    app.declare_class("rpi4b").await;
    let ci = app
        .client("ci", "contributor", json!({"max_priority": {"rpi4b": 10}}))
        .await;

    let r = app
        .post_json_as(
            &ci,
            "/v1/job",
            &json!({"job_queue": "rpi4b", "job_priority": 5, "test_data": {"test_cmds": "echo hi"}}),
        )
        .await;
    let job_id = job_id_of(r).await;

    let stored = app.store.get_job(job_id).await.unwrap().expect("job stored");
    assert_eq!(stored.state, JobState::Waiting);
    assert_eq!(stored.queue.as_str(), "rpi4b");
    assert_eq!(stored.priority, 5);
    assert_eq!(stored.submitted_by.as_deref(), Some("ci"));

    let (submission, props, _) = app
        .next_submission("rpi4b")
        .await
        .expect("submission on the class queue");
    assert_eq!(submission.job_id, job_id);
    assert_eq!(submission.job.test_cmds().as_deref(), Some("echo hi"));
    assert_eq!(props.priority(), &Some(Submission::amqp_priority(5)));
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some(CONTENT_TYPE)
    );
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    app.stop().await;
}

#[tokio::test]
async fn a_job_for_a_queue_no_agent_declared_is_refused_and_not_stored() {
    let app = TestApp::spawn().await;
    let job_id = Uuid::new_v4();

    let r = app
        .post_json(
            "/v1/job",
            &json!({"job_queue": "nobody-serves-this", "job_id": job_id}),
        )
        .await;

    let detail = validation_detail(r).await;
    assert_eq!(
        detail["job_queue"],
        json!(["No agent serves queue 'nobody-serves-this'"])
    );
    assert!(
        app.store.get_job(job_id).await.unwrap().is_none(),
        "a refused job is not kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_invalid_job_is_refused_naming_every_bad_field() {
    let app = TestApp::spawn().await;

    let r = app
        .post_json(
            "/v1/job",
            &json!({"bogus": 1, "global_timeout": "soon", "tags": "x", "test_data": {"test_cmds": 5}}),
        )
        .await;

    let detail = validation_detail(r).await;
    assert_eq!(detail["bogus"], json!(["Unknown field."]));
    assert_eq!(detail["global_timeout"], json!(["Not a valid integer."]));
    assert_eq!(detail["tags"], json!(["Not a valid list."]));
    assert_eq!(detail["job_queue"], json!(["Missing data for required field."]));
    assert_eq!(
        detail["test_data"]["test_cmds"],
        json!(["Must be a string or a list of strings."])
    );
    app.stop().await;
}

#[tokio::test]
async fn test_cmds_may_be_a_list() {
    let app = TestApp::spawn().await;
    app.declare_class("q1").await;

    let r = app
        .post_json(
            "/v1/job",
            &json!({"job_queue": "q1", "test_data": {"test_cmds": ["echo a", "echo b"]}}),
        )
        .await;

    job_id_of(r).await;
    let (submission, _, _) = app.next_submission("q1").await.expect("published");
    assert_eq!(submission.job.test_cmds().as_deref(), Some("echo a\necho b"));
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_and_a_job_id_that_is_not_a_uuid_are_bad_requests() {
    let app = TestApp::spawn().await;

    let r = app.post_raw("/v1/job", "{not json").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Malformed JSON"),
        "{body}"
    );

    let r = app
        .post_json("/v1/job", &json!({"job_queue": "q", "job_id": "not-a-uuid"}))
        .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn resubmitting_a_known_job_id_answers_with_it_and_publishes_nothing_more() {
    let app = TestApp::spawn().await;
    app.declare_class("q1").await;
    let id = Uuid::new_v4();
    let job = json!({"job_queue": "q1", "job_id": id});

    assert_eq!(job_id_of(app.post_json("/v1/job", &job).await).await, id);
    assert_eq!(job_id_of(app.post_json("/v1/job", &job).await).await, id);

    let (first, _, remaining) = app.next_submission("q1").await.expect("published once");
    assert_eq!(first.job_id, id);
    assert_eq!(remaining, 0, "the resubmission was not published again");
    app.stop().await;
}

#[tokio::test]
async fn a_job_excluding_every_agent_of_its_queue_is_refused() {
    let app = TestApp::spawn().await;
    app.declare_class("q1").await;
    app.heartbeat("dut-1", &["q1"], AgentState::Waiting, Millis::now())
        .await;
    app.heartbeat("dut-2", &["q1"], AgentState::Waiting, Millis::now())
        .await;
    app.heartbeat("other", &["q2"], AgentState::Waiting, Millis::now())
        .await;

    let r = app
        .post_json(
            "/v1/job",
            &json!({"job_queue": "q1", "exclude_agents": ["dut-1", "dut-2"]}),
        )
        .await;
    let detail = validation_detail(r).await;
    assert!(
        detail["exclude_agents"][0].as_str().unwrap().contains("q1"),
        "{detail}"
    );

    let r = app
        .post_json(
            "/v1/job",
            &json!({"job_queue": "q1", "exclude_agents": ["dut-1"]}),
        )
        .await;
    job_id_of(r).await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_awaiting_attachments_is_stored_but_not_published() {
    let app = TestApp::spawn().await;
    app.declare_class("q1").await;

    let r = app
        .post_json(
            "/v1/job",
            &json!({"job_queue": "q1", "test_data": {"test_cmds": "ls", "attachments": [{"local": "a.txt"}]}}),
        )
        .await;

    let job_id = job_id_of(r).await;
    let stored = app.store.get_job(job_id).await.unwrap().expect("stored");
    assert!(stored.awaiting_attachments);
    assert!(
        app.next_submission("q1").await.is_none(),
        "not dispatched before its attachments"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(|c| c.max_body_bytes = 1024).await;

    let big = json!({"job_queue": "q", "name": "x".repeat(4096)});
    let r = app.post_json("/v1/job", &big).await;

    assert_eq!(r.status(), 413);
    app.stop().await;
}

#[tokio::test]
async fn get_job_answers_the_job_file_204_when_unknown_and_400_for_a_bad_id() {
    let app = TestApp::spawn().await;
    let job = app
        .insert_job(json!({"job_queue": "q1", "name": "hello", "tags": ["a"]}), |_| {})
        .await;

    let r = app.get(&format!("/v1/job/{}", job.job_id)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"job_queue": "q1", "name": "hello", "tags": ["a"], "job_id": job.job_id})
    );

    assert_eq!(
        app.get(&format!("/v1/job/{}", Uuid::new_v4())).await.status(),
        204
    );
    assert_eq!(app.get("/v1/job/not-a-uuid").await.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn position_counts_waiting_jobs_ahead_in_priority_order() {
    let app = TestApp::spawn().await;
    let t0 = Millis::now().minus(Duration::from_secs(60));
    let at =
        |secs: u64| move |j: &mut flinger_store::JobRecord| j.created_at = t0.plus(Duration::from_secs(secs));
    let old_low = app.insert_job(json!({"job_queue": "q1"}), at(0)).await;
    let new_high = app
        .insert_job(json!({"job_queue": "q1", "job_priority": 10}), at(5))
        .await;
    let newer_low = app.insert_job(json!({"job_queue": "q1"}), at(10)).await;
    let _other_queue = app
        .insert_job(json!({"job_queue": "q2", "job_priority": 99}), at(0))
        .await;
    let running = app
        .insert_job(json!({"job_queue": "q1", "job_priority": 50}), |j| {
            j.state = JobState::Test;
            j.attempt = 1;
        })
        .await;

    let position = |id: Uuid| {
        let app = &app;
        async move {
            let r = app.get(&format!("/v1/job/{id}/position")).await;
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(position(new_high.job_id).await, (200, "0".into()));
    assert_eq!(position(old_low.job_id).await, (200, "1".into()));
    assert_eq!(position(newer_low.job_id).await, (200, "2".into()));
    assert_eq!(
        position(running.job_id).await.0,
        410,
        "a job that is not waiting has no position"
    );
    assert_eq!(position(Uuid::new_v4()).await.0, 204);
    app.stop().await;
}

#[tokio::test]
async fn info_shows_the_whole_record_with_position_while_waiting() {
    let app = TestApp::spawn().await;
    let waiting = app
        .insert_job(json!({"job_queue": "q1", "tags": ["t"]}), |_| {})
        .await;
    let failed = app
        .insert_job(json!({"job_queue": "q1"}), |j| {
            j.state = JobState::Failed;
            j.failure = Some(Failure {
                kind: FailureKind::AgentLost,
                reason: "lease expired 3 times".into(),
            });
        })
        .await;

    let info: Value = app
        .get(&format!("/v1/job/{}/info", waiting.job_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["state"], "waiting");
    assert_eq!(info["job_state"], "waiting");
    assert_eq!(info["position"], 0);
    assert_eq!(info["tags"], json!(["t"]));
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    let info: Value = app
        .get(&format!("/v1/job/{}/info", failed.job_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["state"], "failed");
    assert_eq!(info["job_state"], "complete", "Testflinger clients stop polling");
    assert_eq!(
        info["failure"],
        json!({"kind": "agent_lost", "reason": "lease expired 3 times"})
    );
    assert!(info.get("position").is_none());
    app.stop().await;
}

#[tokio::test]
async fn cancel_with_no_scheduler_running_is_503() {
    let app = TestApp::spawn_with(|c| c.scheduler_timeout = Duration::from_millis(500)).await;
    let job = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;

    let r = app
        .post_json(
            &format!("/v1/job/{}/action", job.job_id),
            &json!({"action": "cancel"}),
        )
        .await;

    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("scheduler"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn cancel_asks_the_scheduler_and_answers_ok_when_it_is_done() {
    let app = TestApp::spawn().await;
    let job = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;
    let mut served = app
        .fake_scheduler(|_| {
            SchedulerReply::Command(CommandReply::Done {
                detail: "cancelled".into(),
                reserve_until: None,
            })
        })
        .await;

    let r = app
        .post_json(
            &format!("/v1/job/{}/action/", job.job_id),
            &json!({"action": "cancel"}),
        )
        .await;

    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");
    let SchedulerRequest::Cancel(request) = served.recv().await.expect("the scheduler was asked") else {
        panic!("not a cancel request")
    };
    assert_eq!(request.job_id, job.job_id);
    app.stop().await;
}

#[tokio::test]
async fn a_cancel_the_scheduler_refuses_is_a_bad_request_with_its_reason() {
    let app = TestApp::spawn().await;
    let job = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;
    let _served = app
        .fake_scheduler(|_| {
            SchedulerReply::Command(CommandReply::Refused {
                code: RefusalCode::Conflict,
                reason: "The job is already completed or cancelled".into(),
            })
        })
        .await;

    let r = app
        .post_json(
            &format!("/v1/job/{}/action", job.job_id),
            &json!({"action": "cancel"}),
        )
        .await;

    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "The job is already completed or cancelled");
    app.stop().await;
}

#[tokio::test]
async fn cancel_refuses_unknown_actions_unknown_jobs_and_ended_jobs() {
    let app = TestApp::spawn().await;
    let done = app
        .insert_job(json!({"job_queue": "q1"}), |j| j.state = JobState::Complete)
        .await;
    let waiting = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;

    let r = app
        .post_json(
            &format!("/v1/job/{}/action", waiting.job_id),
            &json!({"action": "explode"}),
        )
        .await;
    assert_eq!(
        validation_detail(r).await["action"],
        json!(["Must be one of: cancel."])
    );

    let r = app
        .post_json(
            &format!("/v1/job/{}/action", Uuid::new_v4()),
            &json!({"action": "cancel"}),
        )
        .await;
    assert_eq!(r.status(), 400);

    let r = app
        .post_json(
            &format!("/v1/job/{}/action", done.job_id),
            &json!({"action": "cancel"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("already ended"),
        "{body}"
    );

    assert_eq!(
        app.post_json("/v1/job/nope/action", &json!({"action": "cancel"}))
            .await
            .status(),
        400
    );
    app.stop().await;
}

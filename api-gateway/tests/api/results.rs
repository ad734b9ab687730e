//! Results and logs, read from records and fragments written straight into the store (as the
//! scheduler projects them).

use crate::support::TestApp;
use broker_schema::messages::LogStream;
use broker_schema::{Failure, FailureKind, JobState, Millis, Phase};
use flinger_store::JobRecord;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// A job on its second attempt, in the test phase, after setup and provision passed. The first
/// attempt left output that must not show.
async fn running_job(app: &TestApp) -> (JobRecord, Millis) {
    let t0 = Millis::now().minus(Duration::from_secs(100));
    let job = app
        .insert_job(
            json!({"job_queue": "q1", "provision_data": {"url": "x"}, "test_data": {"test_cmds": "x"}}),
            |j| {
                j.state = JobState::Test;
                j.attempt = 2;
                j.phase_status.insert("setup".into(), 0);
                j.phase_status.insert("provision".into(), 0);
            },
        )
        .await;
    let at = |s: u64| t0.plus(Duration::from_secs(s));
    app.write_output(
        &job,
        1,
        LogStream::Output,
        &[(0, Phase::Setup, at(0), b"stale attempt\n")],
    )
    .await;
    app.write_output(
        &job,
        2,
        LogStream::Output,
        &[
            (0, Phase::Setup, at(10), b"setting up\n"),
            (1, Phase::Provision, at(20), b"flashing "),
            (2, Phase::Provision, at(30), b"done\n"),
            (3, Phase::Test, at(40), b"caf\xc3"),
            (4, Phase::Test, at(50), b"\xa9 \xff\n"),
        ],
    )
    .await;
    app.write_output(
        &job,
        2,
        LogStream::Serial,
        &[(0, Phase::Provision, at(25), b"U-Boot\n")],
    )
    .await;
    (job, t0)
}

async fn log(app: &TestApp, job: &JobRecord, rest: &str) -> Value {
    let r = app.get(&format!("/v1/result/{}/log/{rest}", job.job_id)).await;
    assert_eq!(r.status(), 200, "{rest}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn results_are_flat_with_exit_codes_output_and_our_fields() {
    let app = TestApp::spawn().await;
    let (_, _) = running_job(&app).await;
    let failed = app
        .insert_job(json!({"job_queue": "q1"}), |j| {
            j.state = JobState::Failed;
            j.attempt = 1;
            j.phase_status.insert("setup".into(), 0);
            j.phase_status.insert("test".into(), 1);
            j.device_info = Some(json!({"device_ip": "10.0.0.9"}));
            j.failure = Some(Failure {
                kind: FailureKind::TestFailed,
                reason: "test exited 1".into(),
            });
        })
        .await;
    app.write_output(
        &failed,
        1,
        LogStream::Output,
        &[(0, Phase::Test, Millis::now(), b"FAIL\n")],
    )
    .await;

    let r = app.get(&format!("/v1/result/{}", failed.job_id)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "job_state": "complete",
            "setup_status": 0,
            "test_status": 1,
            "test_output": "FAIL\n",
            "device_info": {"device_ip": "10.0.0.9"},
            "state": "failed",
            "failure": {"kind": "test_failed", "reason": "test exited 1"},
            "attempt": 1,
        })
    );
    assert_eq!(
        app.get(&format!("/v1/result/{}", Uuid::new_v4())).await.status(),
        204
    );
    app.stop().await;
}

#[tokio::test]
async fn results_show_only_the_current_attempt_and_both_streams() {
    let app = TestApp::spawn().await;
    let (job, _) = running_job(&app).await;

    let body: Value = app
        .get(&format!("/v1/result/{}", job.job_id))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(body["job_state"], "test");
    assert_eq!(body["setup_output"], "setting up\n");
    assert_eq!(body["provision_output"], "flashing done\n");
    assert_eq!(body["provision_serial"], "U-Boot\n");
    assert_eq!(body["test_output"], "café \u{fffd}\n");
    assert_eq!(body["attempt"], 2);
    app.stop().await;
}

#[tokio::test]
async fn the_log_groups_fragments_by_phase() {
    let app = TestApp::spawn().await;
    let (job, _) = running_job(&app).await;

    let body = log(&app, &job, "output").await;

    assert_eq!(
        body,
        json!({"output": {
            "setup": {"last_fragment_number": 0, "log_data": "setting up\n"},
            "provision": {"last_fragment_number": 2, "log_data": "flashing done\n"},
            "test": {"last_fragment_number": 4, "log_data": "café \u{fffd}\n"},
        }})
    );
    app.stop().await;
}

#[tokio::test]
async fn the_log_filters_by_fragment_timestamp_and_phase() {
    let app = TestApp::spawn().await;
    let (job, t0) = running_job(&app).await;

    let body = log(&app, &job, "output?start_fragment=2").await;
    assert_eq!(
        body["output"]["setup"],
        json!({"last_fragment_number": -1, "log_data": ""})
    );
    assert_eq!(
        body["output"]["provision"],
        json!({"last_fragment_number": 2, "log_data": "done\n"})
    );
    assert_eq!(body["output"]["test"]["last_fragment_number"], 4);

    let since = t0.plus(Duration::from_secs(40)).to_rfc3339();
    let body = log(&app, &job, &format!("output?start_timestamp={since}")).await;
    assert_eq!(body["output"]["provision"]["last_fragment_number"], -1);
    assert_eq!(body["output"]["test"]["log_data"], "café \u{fffd}\n");

    let body = log(&app, &job, "output?phase=provision&start_fragment=1").await;
    assert_eq!(
        body,
        json!({"output": {"provision": {"last_fragment_number": 2, "log_data": "flashing done\n"}}})
    );

    let body = log(&app, &job, "output?phase=reserve").await;
    assert_eq!(
        body,
        json!({"output": {"reserve": {"last_fragment_number": -1, "log_data": ""}}})
    );

    let body = log(&app, &job, "serial").await;
    assert_eq!(
        body["serial"]["provision"],
        json!({"last_fragment_number": 0, "log_data": "U-Boot\n"})
    );
    app.stop().await;
}

#[tokio::test]
async fn log_requests_are_checked() {
    let app = TestApp::spawn().await;
    let (job, _) = running_job(&app).await;
    let waiting = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;

    let r = app
        .get(&format!(
            "/v1/result/{}/log/output?start_fragment=x&phase=lunch",
            job.job_id
        ))
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["detail"]["query"]["start_fragment"],
        json!(["Not a valid integer."])
    );
    assert!(body["detail"]["query"]["phase"].is_array());

    assert_eq!(
        app.get(&format!("/v1/result/{}/log/journal", job.job_id))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/v1/result/{}/log/output", Uuid::new_v4()))
            .await
            .status(),
        204
    );
    assert_eq!(app.get("/v1/result/nope/log/output").await.status(), 400);
    assert_eq!(log(&app, &waiting, "output").await, json!({"output": {}}));
    app.stop().await;
}

/// `GET /v1/result` is streamed page by page (flinger_gateway::streaming): its bytes are those
/// serde_json writes for the results built whole, across many pages, both streams, characters
/// split between fragments, invalid bytes and what an agent posted.
#[tokio::test]
async fn streamed_results_are_the_bytes_of_the_whole() {
    use flinger_store::{OutputQuery, Records};
    let app = TestApp::spawn().await;
    let job = app
        .insert_job(json!({"job_queue": "q1"}), |j| {
            j.state = JobState::Complete;
            j.attempt = 1;
            j.phase_status.insert("setup".into(), 0);
            j.phase_status.insert("test".into(), 3);
        })
        .await;
    let now = Millis::now();
    let text = "line \"quoted\" \\ tab\t é 漢字 🦀\n".repeat(40).into_bytes();
    let mut frags: Vec<(u64, Phase, Millis, Vec<u8>)> = vec![];
    for (i, piece) in text.chunks(7).enumerate() {
        let phase = if i < 30 { Phase::Setup } else { Phase::Test };
        frags.push((i as u64, phase, now, piece.to_vec()));
    }
    frags.push((frags.len() as u64, Phase::Test, now, b"\xff\xe6\xbc".to_vec()));
    let borrowed: Vec<_> = frags
        .iter()
        .map(|(s, p, t, d)| (*s, *p, *t, d.as_slice()))
        .collect();
    app.write_output(&job, 1, LogStream::Output, &borrowed).await;
    app.write_output(
        &job,
        1,
        LogStream::Serial,
        &[(0, Phase::Cleanup, now, b"serial\n")],
    )
    .await;
    app.store
        .merge_posted_result(
            &job.job_id.to_string(),
            json!({"status": {"provision": 0}, "device_info": {"ip": "10.1.2.3"}})
                .as_object()
                .unwrap(),
            now,
        )
        .await
        .unwrap();

    let r = app.get(&format!("/v1/result/{}", job.job_id)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let streamed = r.bytes().await.unwrap();

    let output = app
        .store
        .read_output(&OutputQuery::all(job.job_id, 1, LogStream::Output))
        .await
        .unwrap();
    let serial = app
        .store
        .read_output(&OutputQuery::all(job.job_id, 1, LogStream::Serial))
        .await
        .unwrap();
    assert!(
        output.len() as u32 > 4 * flinger_gateway::streaming::PAGE,
        "several pages"
    );
    let mut whole = flinger_gateway::views::results(&job, &output, &serial);
    let posted = app
        .store
        .get_posted_result(&job.job_id.to_string())
        .await
        .unwrap()
        .unwrap();
    flinger_gateway::views::add_posted_results(&mut whole, &posted.fields);
    assert_eq!(
        String::from_utf8_lossy(&streamed),
        serde_json::to_string(&whole).unwrap()
    );

    // Long log answers are streamed too, with the same bytes.
    use flinger_gateway::logs::{self, LogFilter};
    for (query, filter) in [
        ("", LogFilter::default()),
        (
            "?start_fragment=5",
            LogFilter {
                start_fragment: 5,
                ..Default::default()
            },
        ),
        (
            "?phase=test",
            LogFilter {
                phase: Some(Phase::Test),
                ..Default::default()
            },
        ),
    ] {
        let r = app
            .get(&format!("/v1/result/{}/log/output{query}", job.job_id))
            .await;
        assert_eq!(r.status(), 200);
        let streamed = r.bytes().await.unwrap();
        let fragments: Vec<_> = output
            .iter()
            .filter(|f| filter.query(job.job_id, 1, LogStream::Output).matches(f))
            .cloned()
            .collect();
        let whole = logs::log_answer(
            LogStream::Output,
            &filter,
            &logs::phases_started(&job),
            &fragments,
        );
        assert_eq!(
            String::from_utf8_lossy(&streamed),
            serde_json::to_string(&whole).unwrap(),
            "{query}"
        );
    }
    app.stop().await;
}

/// A long log answer of a live job ends at its first missing fragment, as a short one does.
#[tokio::test]
async fn a_long_live_log_ends_at_its_first_missing_fragment() {
    let app = TestApp::spawn().await;
    let job = app
        .insert_job(json!({"job_queue": "q1"}), |j| {
            j.state = JobState::Test;
            j.attempt = 1;
        })
        .await;
    let page = flinger_gateway::streaming::PAGE as u64;
    let now = Millis::now();
    let frags: Vec<(u64, Phase, Millis, &[u8])> = (0..4 * page)
        .filter(|seq| *seq != 2 * page + 1)
        .map(|seq| (seq, Phase::Test, now, &b"x\n"[..]))
        .collect();
    app.write_output(&job, 1, LogStream::Output, &frags).await;
    let body = log(&app, &job, "output").await;
    assert_eq!(body["output"]["test"]["last_fragment_number"], 2 * page);
    assert_eq!(
        body["output"]["test"]["log_data"],
        "x\n".repeat(2 * page as usize + 1)
    );
    app.stop().await;
}

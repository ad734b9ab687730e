//! Testflinger compatibility: every endpoint the other files do not cover, driven with the
//! request shapes Testflinger's CLI and agent send, asserting the answers' shapes and codes.

use crate::support::{TestApp, assert_body_matches, assert_documented, validation_detail};
use broker_schema::messages::{
    AgentState, CommandReply, JobEvent, JobEventKind, LogStream, SchedulerReply, SchedulerRequest,
};
use broker_schema::{AgentName, JobState, Millis, Names, Phase};
use flinger_store::AttemptRecord;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn done() -> SchedulerReply {
    SchedulerReply::Command(CommandReply::Done {
        detail: "ok".into(),
        reserve_until: None,
    })
}

/// A small tar.gz, as the CLI packs attachments.
fn archive() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "test/data.txt", &b"hello"[..]).unwrap();
        tar.finish().unwrap();
    }
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn multipart(bytes: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("attachments.tar.gz")
            .mime_str("application/x-gzip")
            .unwrap(),
    )
}

async fn job_id_of(r: reqwest::Response) -> Uuid {
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn search_finds_jobs_by_tags_any_or_all_and_by_state() {
    let app = TestApp::spawn().await;
    let a = app
        .insert_job(json!({"job_queue": "q", "tags": ["ci", "nightly"]}), |_| {})
        .await;
    let b = app
        .insert_job(json!({"job_queue": "q", "tags": ["ci"]}), |j| {
            j.state = JobState::Test
        })
        .await;
    let c = app
        .insert_job(json!({"job_queue": "q", "tags": ["nightly"]}), |j| {
            j.state = JobState::Failed
        })
        .await;
    let ids = |v: Value| {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<Uuid>| {
        v.sort_by_key(|u| u.to_string());
        v.into_iter().map(|u| u.to_string()).collect::<Vec<_>>()
    };
    let r = app.get("/v1/job/search?tags=ci&tags=nightly").await;
    assert_eq!(r.status(), 200);
    let found: Value = r.json().await.unwrap();
    assert_eq!(ids(found.clone()), sorted(vec![a.job_id, b.job_id, c.job_id]));
    let one = found
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == c.job_id.to_string())
        .unwrap();
    assert_eq!(
        one["job_state"], "complete",
        "a failed job shows as complete to Testflinger clients"
    );
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'));
    let all: Value = app
        .get("/v1/job/search?tags=ci&tags=nightly&match=all")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(all), sorted(vec![a.job_id]));
    let active: Value = app
        .get("/v1/job/search?tags=ci&tags=nightly&state=active")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(active), sorted(vec![a.job_id, b.job_id]));
    let test: Value = app.get("/v1/job/search?state=test").await.json().await.unwrap();
    assert_eq!(ids(test), sorted(vec![b.job_id]));
    let r = app.get("/v1/job/search?match=some").await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"]["query"]["match"].is_array(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn position_of_a_started_job_is_gone_and_estimates_explain_themselves() {
    let app = TestApp::spawn().await;
    let now = Millis::now();
    // Two finished runs of 100 s and one agent, busy with a job of this queue for 40 s.
    for _ in 0..2 {
        app.insert_job(json!({"job_queue": "eq"}), |j| {
            j.state = JobState::Complete;
            j.started_at = Some(now.minus(Duration::from_secs(500)));
            j.ended_at = Some(now.minus(Duration::from_secs(400)));
        })
        .await;
    }
    let running = app
        .insert_job(json!({"job_queue": "eq"}), |j| {
            j.state = JobState::Test;
            j.started_at = Some(now.minus(Duration::from_secs(40)));
        })
        .await;
    let hb = broker_schema::messages::Heartbeat {
        agent: AgentName::parse("dut-e").unwrap(),
        state: AgentState::Running(Phase::Test),
        job_id: Some(running.job_id),
        queues: vec![broker_schema::DeviceClass::parse("eq").unwrap()],
        location: None,
        provision_type: None,
        comment: None,
        interval_ms: 1000,
        at: now,
        version: "t".into(),
    };
    app.store.record_heartbeat(&hb).await.unwrap();
    let first = app
        .insert_job(json!({"job_queue": "eq"}), |j| {
            j.created_at = now.minus(Duration::from_secs(5))
        })
        .await;
    let second = app.insert_job(json!({"job_queue": "eq"}), |_| {}).await;

    assert_eq!(
        app.get(&format!("/v1/job/{}/position", second.job_id))
            .await
            .text()
            .await
            .unwrap(),
        "1"
    );
    let r = app.get(&format!("/v1/job/{}/position", running.job_id)).await;
    assert_eq!(r.status(), 410);
    let est: Value = app
        .get(&format!("/v1/job/{}/estimate", first.job_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(est["position"], 0);
    assert_eq!(est["median_run_seconds"], 100);
    assert_eq!(
        est["eta_seconds"], 60,
        "the running job has about 60 s left: {est}"
    );
    let est: Value = app
        .get(&format!("/v1/job/{}/estimate", second.job_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(est["eta_seconds"], 160, "then one more run: {est}");
    assert!(est["basis"].as_str().unwrap().contains("1 job(s) ahead"), "{est}");
    assert_eq!(
        app.get(&format!("/v1/job/{}/estimate", running.job_id))
            .await
            .status(),
        410
    );
    // No history, no estimate, and the answer says why.
    let lone = app.insert_job(json!({"job_queue": "fresh"}), |_| {}).await;
    let est: Value = app
        .get(&format!("/v1/job/{}/estimate", lone.job_id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(est["eta_seconds"], Value::Null);
    assert!(est["basis"].as_str().unwrap().contains("no agent"), "{est}");
    app.stop().await;
}

#[tokio::test]
async fn attachments_are_stored_then_the_scheduler_releases_the_job() {
    let app = TestApp::spawn().await;
    app.declare_class("aq").await;
    let mut served = app.fake_scheduler(|_| done()).await;
    let agent = app.client("att-agent", "agent", json!({})).await;
    let id = job_id_of(
        app.post_json(
            "/v1/job",
            &json!({"job_queue": "aq", "test_data": {"attachments": [{"agent": "data.txt"}]}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        app.get_as(&agent, &format!("/v1/job/{id}/attachments"))
            .await
            .status(),
        204
    );

    let bytes = archive();
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/job/{id}/attachments")))
                .multipart(multipart(bytes.clone())),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");
    let SchedulerRequest::AttachmentsReady(ready) = served.recv().await.expect("the scheduler was asked")
    else {
        panic!("not an attachments-ready request")
    };
    assert_eq!(ready.job_id, id);

    let r = app.get_as(&agent, &format!("/v1/job/{id}/attachments")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    assert_eq!(
        app.get(&format!("/v1/job/{id}/attachments")).await.status(),
        401,
        "agents only"
    );

    // Unknown job, a job without attachments, a bad id.
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/job/{}/attachments", Uuid::new_v4())))
                .multipart(multipart(archive())),
        )
        .await;
    assert_eq!(r.status(), 422);
    let plain = app.insert_job(json!({"job_queue": "aq"}), |_| {}).await;
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/job/{}/attachments", plain.job_id)))
                .multipart(multipart(archive())),
        )
        .await;
    assert_eq!(r.status(), 422);
    let r = app
        .send(
            app.http
                .post(app.url("/v1/job/not-a-uuid/attachments"))
                .multipart(multipart(archive())),
        )
        .await;
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn uploads_over_their_limit_are_refused_with_413_and_store_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.max_attachment_bytes = 1000;
        c.max_artifact_bytes = 1000;
    })
    .await;
    let agent = app.client("big-agent", "agent", json!({})).await;
    let waiting = app
        .insert_job(
            json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "x"}]}}),
            |_| {},
        )
        .await;
    let big = vec![7u8; 5000];
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/job/{}/attachments", waiting.job_id)))
                .multipart(multipart(big.clone())),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        app.get_as(&agent, &format!("/v1/job/{}/attachments", waiting.job_id))
            .await
            .status(),
        204
    );
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/result/{}/artifact", waiting.job_id)))
                .bearer_auth(&agent)
                .multipart(multipart(big)),
        )
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        app.get(&format!("/v1/result/{}/artifact", waiting.job_id))
            .await
            .status(),
        204
    );
    app.stop().await;
}

#[tokio::test]
async fn artifacts_are_uploaded_by_agents_and_downloaded_by_submitters() {
    let app = TestApp::spawn().await;
    let agent = app.client("art-agent", "agent", json!({})).await;
    let job = app
        .insert_job(json!({"job_queue": "q"}), |j| j.state = JobState::Complete)
        .await;
    let path = format!("/v1/result/{}/artifact", job.job_id);
    assert_eq!(app.get(&path).await.status(), 204);
    let bytes = archive();
    let r = app
        .send(
            app.http
                .post(app.url(&path))
                .bearer_auth(&agent)
                .multipart(multipart(bytes.clone())),
        )
        .await;
    assert_eq!(r.status(), 200);
    // A raw body is an archive too (for curl users).
    let r = app.get(&path).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("artifact.tar.gz")
    );
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    let r = app
        .send(
            app.http
                .post(app.url(&path))
                .bearer_auth(&agent)
                .header("content-type", "application/gzip")
                .body(b"raw".to_vec()),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.get(&path).await.bytes().await.unwrap().to_vec(),
        b"raw".to_vec()
    );
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/result/{}/artifact", Uuid::new_v4())))
                .bearer_auth(&agent)
                .multipart(multipart(archive())),
        )
        .await;
    assert_eq!(r.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn agents_post_results_and_log_fragments_as_testflinger_agents_do() {
    let app = TestApp::spawn().await;
    let agent = app.client("tf-agent", "agent", json!({})).await;
    let job = app.insert_job(json!({"job_queue": "q"}), |_| {}).await;
    let id = job.job_id;

    let r = app
        .post_json_as(
            &agent,
            &format!("/v1/result/{id}"),
            &json!({"status": {"setup": 0}, "job_state": "setup"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    app.post_json_as(
        &agent,
        &format!("/v1/result/{id}"),
        &json!({"status": {"test": 1}, "device_info": {"device_ip": "10.1.1.1"}}),
    )
    .await;
    let results: Value = app.get(&format!("/v1/result/{id}")).await.json().await.unwrap();
    assert_eq!(results["setup_status"], 0);
    assert_eq!(results["test_status"], 1);
    assert_eq!(results["device_info"], json!({"device_ip": "10.1.1.1"}));
    assert_eq!(
        results["job_state"], "waiting",
        "a posted job_state does not change the job"
    );

    let detail = validation_detail(
        app.post_json_as(
            &agent,
            &format!("/v1/result/{id}"),
            &json!({"status": {"lunch": 0}}),
        )
        .await,
    )
    .await;
    assert!(detail["status"]["lunch"].is_array(), "{detail}");
    assert_eq!(
        app.post_json_as(&agent, &format!("/v1/result/{}", Uuid::new_v4()), &json!({}))
            .await
            .status(),
        404
    );
    // 16 MiB and more: 413.
    let huge = format!("{{\"job_state\": \"{}\"}}", "x".repeat(16 * 1024 * 1024));
    let r = app
        .send(
            app.http
                .post(app.url(&format!("/v1/result/{id}")))
                .bearer_auth(&agent)
                .header("content-type", "application/json")
                .body(huge),
        )
        .await;
    assert_eq!(r.status(), 413);

    let t0 = Millis::now();
    for (n, phase, text) in [
        (0, "setup", "one\n"),
        (1, "test", "two\n"),
        (2, "test", "three\n"),
    ] {
        let r = app
            .post_json_as(
                &agent,
                &format!("/v1/result/{id}/log/output"),
                &json!({"fragment_number": n, "timestamp": t0.plus(Duration::from_secs(n)).to_rfc3339(), "phase": phase, "log_data": text}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let log: Value = app
        .get(&format!("/v1/result/{id}/log/output"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        log["output"]["setup"],
        json!({"last_fragment_number": 0, "log_data": "one\n"})
    );
    assert_eq!(
        log["output"]["test"],
        json!({"last_fragment_number": 2, "log_data": "two\nthree\n"})
    );
    let log: Value = app
        .get(&format!("/v1/result/{id}/log/output?phase=test&start_fragment=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        log,
        json!({"output": {"test": {"last_fragment_number": 2, "log_data": "three\n"}}})
    );
    let detail = validation_detail(
        app.post_json_as(
            &agent,
            &format!("/v1/result/{id}/log/serial"),
            &json!({"fragment_number": -1, "phase": "nap"}),
        )
        .await,
    )
    .await;
    for field in ["fragment_number", "timestamp", "phase", "log_data"] {
        assert!(detail[field].is_array(), "{field}: {detail}");
    }
    assert_eq!(
        app.post_json_as(&agent, &format!("/v1/result/{id}/log/console"), &json!({}))
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_output_arrives() {
    let app = TestApp::spawn().await;
    let job = app
        .insert_job(json!({"job_queue": "q"}), |j| {
            j.state = JobState::Test;
            j.attempt = 1;
        })
        .await;
    let store = app.store.clone();
    // "live" arrives after 700 ms, "late" half-way through the 20 s the poll may wait: an
    // answer as soon as output arrives has the first and not the second.
    let writer = {
        let job = job.clone();
        tokio::spawn(async move {
            let fragment = |seq, data: &[u8]| flinger_store::OutputFragment {
                job_id: job.job_id,
                attempt: 1,
                stream: LogStream::Output,
                seq,
                phase: Phase::Test,
                at: Millis::now(),
                data: data.to_vec(),
            };
            tokio::time::sleep(Duration::from_millis(700)).await;
            store.append_output(&[fragment(0, b"live\n")]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            store.append_output(&[fragment(1, b"late\n")]).await.unwrap();
        })
    };
    let log: Value = app
        .get(&format!(
            "/v1/result/{}/log/output?start_fragment=0&wait=20",
            job.job_id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        log["output"]["test"]["log_data"], "live\n",
        "answered before the output existed, or only at the end of the wait: {log}"
    );
    writer.abort();
    // Nothing new: it waits for the time asked, then answers with nothing.
    let started = Instant::now();
    let log: Value = app
        .get(&format!(
            "/v1/result/{}/log/output?start_fragment=1&wait=0.5",
            job.job_id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(log["output"]["test"]["last_fragment_number"], -1);
    let r = app
        .get(&format!("/v1/result/{}/log/output?wait=3600", job.job_id))
        .await;
    assert_eq!(r.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn agents_report_over_http_and_admins_set_their_state_through_the_scheduler() {
    let app = TestApp::spawn().await;
    let agent = app.client("dut-http", "agent", json!({})).await;
    let admin = app.admin_token().await;
    let mut served = app.fake_scheduler(|_| done()).await;

    let r = app
        .post_json_as(
            &agent,
            "/v1/agents/data/dut-http",
            &json!({"state": "waiting", "queues": ["hq"], "location": "rack 3", "provision_type": "muxpi", "log": ["x"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "OK"}));
    let v: Value = app.get("/v1/agents/data/dut-http").await.json().await.unwrap();
    assert_eq!(v["state"], "waiting");
    assert_eq!(v["queues"], json!(["hq"]));
    assert_eq!(v["location"], "rack 3");
    // A partial update keeps the rest.
    app.post_json_as(&agent, "/v1/agents/data/dut-http", &json!({"state": "provision"}))
        .await;
    let v: Value = app.get("/v1/agents/data/dut-http").await.json().await.unwrap();
    assert_eq!(
        (v["state"].as_str(), v["location"].as_str()),
        (Some("provision"), Some("rack 3"))
    );

    // The CLI's `admin set agent-status`.
    let r = app
        .post_json_as(
            &admin,
            "/v1/agents/data/dut-http",
            &json!({"state": "maintenance", "comment": "Set to offline by admin for lab related task."}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let SchedulerRequest::SetAgentState(req) = served.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(req.agent.as_str(), "dut-http");
    assert_eq!(req.state, Some(broker_schema::messages::AdminState::Maintenance));
    app.post_json_as(
        &admin,
        "/v1/agents/data/dut-http",
        &json!({"state": "online", "comment": ""}),
    )
    .await;
    let SchedulerRequest::SetAgentState(req) = served.recv().await.unwrap() else {
        panic!()
    };
    assert_eq!(req.state, None, "online returns the agent to service");
    assert_eq!(
        app.post_json_as(&admin, "/v1/agents/data/nobody", &json!({"state": "offline"}))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.post_json_as(&admin, "/v1/agents/data/dut-http", &json!({"state": "asleep"}))
            .await
            .status(),
        422
    );

    // Provision logs: history and streak.
    for (job, code) in [("j1", 0), ("j2", 1), ("j3", 1)] {
        let r = app
            .post_json_as(
                &agent,
                "/v1/agents/provision_logs/dut-http",
                &json!({"job_id": job, "exit_code": code, "detail": ""}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let v: Value = app.get("/v1/agents/data/dut-http").await.json().await.unwrap();
    assert_eq!(
        (
            v["provision_streak_type"].as_str(),
            v["provision_streak_count"].as_u64()
        ),
        (Some("fail"), Some(2))
    );
    let log: Value = app
        .get("/v1/agents/provision_logs/dut-http")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["provision_log"].as_array().unwrap().len(), 3);
    assert_eq!(
        app.post_json_as(
            &agent,
            "/v1/agents/provision_logs/ghost",
            &json!({"job_id": "j", "exit_code": 0})
        )
        .await
        .status(),
        404
    );
    let detail = validation_detail(
        app.post_json_as(
            &agent,
            "/v1/agents/provision_logs/dut-http",
            &json!({"exit_code": "x", "detail": 5}),
        )
        .await,
    )
    .await;
    assert_eq!(detail["job_id"], json!(["Missing data for required field."]));
    assert_eq!(detail["exit_code"], json!(["Not a valid integer."]));
    assert_eq!(detail["detail"], json!(["Not a valid string."]));
    app.stop().await;
}

#[tokio::test]
async fn queues_images_wait_times_and_what_is_in_a_queue() {
    let app = TestApp::spawn().await;
    let agent = app.client("q-agent", "agent", json!({})).await;
    app.heartbeat("dut-q", &["served"], AgentState::Waiting, Millis::now())
        .await;
    let r = app
        .post_json_as(
            &agent,
            "/v1/agents/queues",
            &json!({"served": "Served queue", "advertised": "Nobody yet"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let queues: Value = app.get("/v1/agents/queues").await.json().await.unwrap();
    assert_eq!(
        queues,
        json!({"advertised": "Nobody yet", "served": "Served queue"})
    );
    assert_eq!(
        validation_detail(
            app.post_json_as(&agent, "/v1/agents/queues", &json!({"x": 5}))
                .await
        )
        .await["x"],
        json!(["Not a valid string."])
    );

    app.post_json_as(
        &agent,
        "/v1/agents/images",
        &json!({"served": {"noble": "url: http://img/noble.img.xz"}}),
    )
    .await;
    let images: Value = app.get("/v1/agents/images/served").await.json().await.unwrap();
    assert_eq!(images, json!({"noble": "url: http://img/noble.img.xz"}));
    assert_eq!(
        app.get("/v1/agents/images/unknown")
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({})
    );

    assert_eq!(app.get("/v1/queues/served/agents").await.status(), 200);
    // No agent serves it: 404 naming the queue, advertised or not (the CLI stops there).
    for queue in ["advertised", "nothing"] {
        let r = app.get(&format!("/v1/queues/{queue}/agents")).await;
        assert_eq!(r.status(), 404, "{queue}");
        let message = r.json::<Value>().await.unwrap()["message"].to_string();
        assert!(message.contains(&format!("'{queue}'")), "{message}");
    }

    assert_eq!(app.get("/v1/queues/served/jobs").await.status(), 204);
    let now = Millis::now();
    let j = app
        .insert_job(json!({"job_queue": "served"}), |j| {
            j.created_at = now.minus(Duration::from_secs(100));
            j.state = JobState::Complete;
            j.attempts = vec![AttemptRecord {
                attempt: 1,
                agent: AgentName::parse("dut-q").unwrap(),
                started_at: now.minus(Duration::from_secs(70)),
                ended_at: None,
                outcome: None,
            }];
        })
        .await;
    let jobs: Value = app.get("/v1/queues/served/jobs").await.json().await.unwrap();
    assert_eq!(jobs[0]["job_id"], j.job_id.to_string());
    assert_eq!(jobs[0]["job_queue"], "served");
    assert_eq!(jobs[0]["job_state"], "complete");
    let waits: Value = app
        .get("/v1/queues/wait_times?queue=served")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(waits["served"]["50"], 30.0);
    assert_eq!(
        waits["served"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["10", "5", "50", "90", "95"]
    );
    let all: Value = app.get("/v1/queues/wait_times").await.json().await.unwrap();
    assert!(all.get("served").is_some());
    app.stop().await;
}

type Received = Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on a free port: every PUT body it gets.
async fn webhook_server() -> (String, Received) {
    use axum::routing::put;
    let got: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        put({
            let got = got.clone();
            move |axum::Json(v): axum::Json<Value>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(v);
                    "thanks"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn wait_for(got: &Received, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.lock().unwrap().clone()
}

#[tokio::test]
async fn job_events_are_relayed_to_the_jobs_webhook() {
    let app = TestApp::spawn().await;
    let (url, got) = webhook_server().await;
    let agent = app.client("hook-agent", "agent", json!({})).await;
    let job = app
        .insert_job(json!({"job_queue": "q", "job_status_webhook": url}), |_| {})
        .await;

    // A Testflinger agent's status update.
    let update = json!({"agent_id": "dut-1", "job_queue": "q", "job_status_webhook": url,
        "events": [{"event_name": "provision_start", "timestamp": "2024-01-01T00:00:00Z", "detail": ""}]});
    let r = app
        .post_json_as(&agent, &format!("/v1/job/{}/events", job.job_id), &update)
        .await;
    assert_eq!(r.status(), 200);
    let received = wait_for(&got, 1).await;
    assert_eq!(received[0]["events"][0]["event_name"], "provision_start");
    assert!(received[0].get("job_status_webhook").is_none());
    assert_eq!(
        app.post_json_as(&agent, &format!("/v1/job/{}/events", Uuid::new_v4()), &update)
            .await
            .status(),
        404
    );

    // Our agents' events, from the broker: routed to the gateways for jobs with a webhook (the
    // scheduler does this when it records the job or grants its lease; a job inserted straight
    // into the store here needs it done by hand).
    broker_schema::topology::follow_job_events(&app.channel, &app.names, &job.job_id)
        .await
        .unwrap();
    let event = JobEvent {
        job_id: job.job_id,
        attempt: 1,
        agent: Some(AgentName::parse("dut-1").unwrap()),
        at: Millis::now(),
        shipped: None,
        kind: JobEventKind::PhaseFinished {
            phase: Phase::Provision,
            exit_code: 1,
            detail: None,
        },
    };
    app.channel
        .basic_publish(
            app.names.events_exchange().as_str().into(),
            Names::job_status_key(&job.job_id).as_str().into(),
            Default::default(),
            &broker_schema::encode(&event),
            lapin::BasicProperties::default().with_content_type(broker_schema::CONTENT_TYPE.into()),
        )
        .await
        .unwrap();
    let received = wait_for(&got, 2).await;
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1]["events"][0]["event_name"], "provision_fail");
    assert_eq!(received[1]["agent_id"], "dut-1");
    assert_eq!(received[1]["job_queue"], "q");
    app.stop().await;
}

#[tokio::test]
async fn webhooks_outside_the_allowed_list_are_refused() {
    let app = TestApp::spawn_with(|c| c.webhook_allow = vec!["https://ci.example.com/".into()]).await;
    let agent = app.client("hook-agent2", "agent", json!({})).await;
    let job = app.insert_job(json!({"job_queue": "q"}), |_| {}).await;
    let r = app
        .post_json_as(
            &agent,
            &format!("/v1/job/{}/events", job.job_id),
            &json!({"job_status_webhook": "http://10.0.0.1/steal"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        validation_detail(
            app.post_json_as(&agent, &format!("/v1/job/{}/events", job.job_id), &json!({}))
                .await
        )
        .await["job_status_webhook"],
        json!(["Missing data for required field."])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_webhook_is_not_allowed_is_refused_at_submit() {
    let app = TestApp::spawn_with(|c| {
        c.webhook_allow = vec![
            "https://ci.example.com/hooks/".into(),
            "http://obs.example.com".into(),
        ]
    })
    .await;
    app.declare_class("wq").await;
    let submit = |hook: &str| {
        let app = &app;
        let job = json!({"job_queue": "wq", "job_status_webhook": hook});
        async move { app.post_json("/v1/job", &job).await }
    };
    for hook in [
        "http://10.0.0.1/steal",
        "https://ci.example.com/elsewhere",
        "http://obs.example.com.evil.net/",
        "http://obs.example.com@evil.net/",
        "/hooks/relative",
        "ftp://ci.example.com/hooks/x",
        "",
    ] {
        let detail = validation_detail(submit(hook).await).await;
        assert!(detail["job_status_webhook"].is_array(), "{hook:?}: {detail}");
    }
    assert!(app.next_submission("wq").await.is_none(), "nothing was published");
    for hook in [
        "https://ci.example.com/hooks/build-1",
        "http://bot:pw@obs.example.com/x?token=t",
    ] {
        assert_eq!(submit(hook).await.status(), 200, "{hook}");
    }
    app.stop().await;
}

/// How a [`troubled_webhook`] answers.
#[derive(Clone, Copy)]
enum Trouble {
    /// 500, once the gate opens.
    Fails,
    /// Never.
    Hangs,
}

/// A webhook receiver in trouble, with credentials in its URL: how many PUTs it got.
async fn troubled_webhook(
    trouble: Trouble,
    gate: tokio::sync::watch::Receiver<bool>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::put;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        put({
            let count = count.clone();
            move || {
                let (count, mut gate) = (count.clone(), gate.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    match trouble {
                        Trouble::Fails => {
                            let _ = gate.wait_for(|open| *open).await;
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        }
                        Trouble::Hangs => std::future::pending().await,
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://bot:hunter2@{}/hook?token=sekrit",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, count)
}

/// Waits (30 s at most) until the gateway logged that the relay for `job` gave up.
async fn relay_given_up(job: Uuid) {
    let given_up = || {
        crate::support::logged()
            .lines()
            .any(|l| l.contains("webhook relay failed") && l.contains(&job.to_string()))
    };
    for _ in 0..300 {
        if given_up() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the relay for {job} never gave up");
}

/// Posts a status update naming `url` for `job` as an agent; its answer must come within 30 s.
async fn post_status_update(app: &TestApp, agent: &str, job: Uuid, url: &str) -> u16 {
    let update = json!({"agent_id": "dut-1", "job_queue": "q", "job_status_webhook": url,
        "events": [{"event_name": "job_start", "timestamp": "2024-01-01T00:00:00Z", "detail": ""}]});
    let path = format!("/v1/job/{job}/events");
    let post = app.post_json_as(agent, &path, &update);
    tokio::time::timeout(Duration::from_secs(30), post)
        .await
        .expect("the agent was kept waiting for the webhook")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_failing_webhook_is_tried_a_bounded_number_of_times_and_the_agent_is_answered_at_once() {
    use std::sync::atomic::Ordering;
    // Each PUT may wait longer than the test would: only the receiver decides when it ends.
    let app = TestApp::spawn_with(|c| c.webhook_timeout = Duration::from_secs(120)).await;
    let agent = app.client("hook-agent3", "agent", json!({})).await;
    let job = app.insert_job(json!({"job_queue": "q"}), |_| {}).await;
    let (open, gate) = tokio::sync::watch::channel(false);
    let (url, tries) = troubled_webhook(Trouble::Fails, gate).await;

    // The receiver holds every PUT until the gate opens, and the gate opens only once the
    // agent has its answer: an answer that waited for the relay would never come.
    assert_eq!(post_status_update(&app, &agent, job.job_id, &url).await, 200);
    open.send(true).unwrap();

    relay_given_up(job.job_id).await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        flinger_gateway::webhooks::TRIES as usize
    );
    let logs = crate::support::logged();
    assert!(
        !logs.contains("hunter2") && !logs.contains("sekrit"),
        "a webhook's credentials were logged"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_hanging_webhook_is_tried_a_bounded_number_of_times() {
    use std::sync::atomic::Ordering;
    let app = TestApp::spawn_with(|c| c.webhook_timeout = Duration::from_millis(300)).await;
    let agent = app.client("hook-agent4", "agent", json!({})).await;
    let job = app.insert_job(json!({"job_queue": "q"}), |_| {}).await;
    let (_open, gate) = tokio::sync::watch::channel(false);
    let (url, tries) = troubled_webhook(Trouble::Hangs, gate).await;

    assert_eq!(post_status_update(&app, &agent, job.job_id, &url).await, 200);

    relay_given_up(job.job_id).await;
    assert_eq!(
        tries.load(Ordering::SeqCst),
        flinger_gateway::webhooks::TRIES as usize
    );
    let logs = crate::support::logged();
    assert!(!logs.contains("hunter2") && !logs.contains("sekrit"));
    app.stop().await;
}

#[tokio::test]
async fn pull_dispatch_answers_no_job() {
    let app = TestApp::spawn().await;
    let agent = app.client("pull-agent", "agent", json!({})).await;
    app.insert_job(json!({"job_queue": "q"}), |_| {}).await;
    assert_eq!(app.get_as(&agent, "/v1/job?queue=q").await.status(), 204);
    assert_eq!(app.get_as(&agent, "/v1/job").await.status(), 400);
    assert_eq!(app.get("/v1/job?queue=q").await.status(), 401);
    app.stop().await;
}

#[test]
fn an_answer_whose_json_body_does_not_match_its_schema_fails_the_check() {
    let op = || assert_documented("get", &format!("/v1/job/{}/info", Uuid::nil()), 200).unwrap();
    let mut json_headers = axum::http::HeaderMap::new();
    json_headers.insert("content-type", "application/json".parse().unwrap());
    let check = |body: Value, headers: &axum::http::HeaderMap| {
        let op = op();
        let headers = headers.clone();
        std::panic::catch_unwind(move || assert_body_matches(op, 200, &headers, body.to_string().as_bytes()))
            .is_ok()
    };
    assert!(check(
        json!({"job_id": Uuid::nil(), "state": "waiting"}),
        &json_headers
    ));
    assert!(
        !check(json!({"job_id": 5, "state": "waiting"}), &json_headers),
        "a job_id that is not a string"
    );
    assert!(
        !check(json!({"job_id": Uuid::nil()}), &json_headers),
        "state is required"
    );
    assert!(
        !check(
            json!({"job_id": Uuid::nil(), "state": "waiting"}),
            &axum::http::HeaderMap::new()
        ),
        "the document says the answer is JSON"
    );
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_every_operation() {
    let app = TestApp::spawn().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        served,
        serde_json::to_value(flinger_gateway::openapi::document()).unwrap()
    );
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    for op in flinger_gateway::openapi::operations() {
        assert!(
            served["paths"][op.path][op.method].is_object(),
            "{} {}",
            op.method,
            op.path
        );
    }
    // Every documented operation is routed: none falls through to the router's own 404 or 405.
    let ops = flinger_gateway::openapi::operations();
    for op in &ops {
        let path = op
            .path
            .replace("{job_id}", &Uuid::new_v4().to_string())
            .replace("{path}", "a")
            .replace(['{', '}'], "");
        let method = reqwest::Method::from_bytes(op.method.to_uppercase().as_bytes()).unwrap();
        let r = app.http.request(method, app.url(&path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        assert!(status != 405, "{} {} is not routed", op.method, op.path);
        assert!(
            !(status == 404 && body.contains("\"Not found\"")),
            "{} {} is not routed",
            op.method,
            op.path
        );
    }

    // And the other way: every routed path is documented…
    let routed = routed_paths();
    let documented: BTreeSet<String> = ops.iter().map(|o| o.path.to_owned()).collect();
    // (`/oidc` and everything under it answer 404, documented as the one call the CLI makes.)
    let routed_but_oidc: BTreeSet<String> = routed
        .iter()
        .filter(|p| !p.starts_with("/oidc"))
        .cloned()
        .collect();
    let documented_but_oidc: BTreeSet<String> = documented
        .iter()
        .filter(|p| !p.starts_with("/oidc"))
        .cloned()
        .collect();
    assert_eq!(
        routed_but_oidc, documented_but_oidc,
        "routed paths and documented paths differ"
    );
    assert!(routed.contains("/oidc/{rest}") && documented.contains("/oidc/auth-init"));
    // …with every method it serves: a method the document does not list is the router's 405.
    for path in &documented_but_oidc {
        for method in ["get", "post", "put", "delete", "patch"] {
            if ops.iter().any(|o| o.path == path && o.method == method) {
                continue;
            }
            let concrete = path
                .replace("{job_id}", &Uuid::new_v4().to_string())
                .replace("{path}", "a")
                .replace(['{', '}'], "");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = app
                .http
                .request(m, app.url(&concrete))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 405, "{method} {path} is served but not documented");
        }
    }
    app.stop().await;
}

/// Every path the gateway's router declares (`.route("…", …)` in `src/routes/`), with `{*x}`
/// written `{x}` as the document writes it.
fn routed_paths() -> BTreeSet<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/routes");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for rest in source.split(".route(").skip(1) {
            let literal = rest.trim_start().strip_prefix('"').expect("a route path literal");
            let path = &literal[..literal.find('"').unwrap()];
            paths.insert(path.replace("{*", "{"));
        }
    }
    assert!(paths.len() > 30, "found the routes: {paths:?}");
    paths
}

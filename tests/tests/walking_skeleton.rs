//! The whole path once: HTTP or AMQP → RabbitMQ → agent → store → API, on real services.

use flinger_tests::{AgentSpec, Lab, broker};
use serde_json::{Value, json};
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_job_submitted_over_http_completes_with_exit_codes_and_output() {
    let lab = Lab::builder()
        .name("http")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let id = lab
        .submit(&json!({
            "job_queue": "fake",
            "provision_data": {"distro": "noble"},
            "test_data": {"test_cmds": ["echo hello", "uname -a"], "fake": {"output": ["hello from the fake device"]}},
        }))
        .await;
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    assert_eq!(info["failure"], Value::Null);
    let results = lab.results(id).await;
    assert_eq!(results["job_state"], "complete");
    for phase in ["setup", "provision", "test", "cleanup"] {
        assert_eq!(results[format!("{phase}_status")], 0, "{phase}: {results}");
    }
    let output = lab.output(id).await;
    assert!(output.contains("hello from the fake device"), "{output}");
    assert!(output.contains("$ echo hello"), "{output}");
    assert!(
        results["test_output"]
            .as_str()
            .unwrap_or("")
            .contains("hello from the fake device"),
        "{results}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provision_failure_skips_later_phases_except_cleanup() {
    let lab = Lab::builder()
        .name("provfail")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let id = lab
        .submit(&json!({
            "job_queue": "fake",
            "provision_data": {"url": "http://images/x.img", "fake": {"exit_code": 1, "output": ["flashing failed"]}},
            "test_data": {"test_cmds": "echo never"},
            "reserve_data": {"ssh_keys": ["lp:someone"]},
        }))
        .await;
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["failure"]["kind"], "device_failed", "{info}");
    let results = lab.results(id).await;
    assert_eq!(results["provision_status"], 1, "{results}");
    assert_eq!(results["cleanup_status"], 0, "{results}");
    assert!(
        results.get("test_status").is_none_or(Value::is_null),
        "test ran: {results}"
    );
    assert!(
        results.get("reserve_status").is_none_or(Value::is_null),
        "reserve ran: {results}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cancelled_while_waiting_never_starts() {
    // No agent serves the queue yet, but one has declared it: the job waits.
    let mut lab = Lab::builder()
        .name("cancelwait")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    lab.agent("fake-1").stop(Duration::from_secs(10));
    let id = lab
        .submit(&json!({"job_queue": "fake", "test_data": {"test_cmds": "echo should-never-run"}}))
        .await;
    assert_eq!(lab.info(id).await.expect("job")["state"], "waiting");
    assert_eq!(lab.cancel(id).await, 200);
    assert_eq!(lab.info(id).await.expect("job")["state"], "cancelled");
    // The agent comes back and takes the delivery: the lease is refused, the job stays cancelled.
    lab.agent("fake-1").restart();
    lab.wait_agent_state("fake-1", "waiting").await;
    let marker = lab.submit(&json!({"job_queue": "fake"})).await;
    lab.wait_done(marker, JOB_TIMEOUT).await;
    let info = lab.info(id).await.expect("job");
    assert_eq!(info["state"], "cancelled", "{info}");
    assert_eq!(info["attempt"], 0, "a cancelled job was leased: {info}");
    assert!(!lab.output(id).await.contains("should-never-run"));
    // Cancelling again is refused: it already ended.
    assert_eq!(lab.cancel(id).await, 400);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_published_by_a_plain_amqp_client_completes_and_shows_in_the_api() {
    let lab = Lab::builder()
        .name("amqp")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let id = uuid::Uuid::new_v4();
    // What a producer in any language writes: a MessagePack map with named fields.
    let msg = json!({
        "v": 1,
        "job_id": id.to_string(),
        "job": {"job_queue": "fake", "test_data": {"test_cmds": "echo from amqp", "fake": {"output": ["direct producer"]}}},
    });
    let body = rmp_serde::to_vec_named(&msg).unwrap();
    let conn = broker::connect().await;
    // At-least-once producers publish again when unsure: the same job, delivered twice, runs once.
    for _ in 0..2 {
        let returned = broker::publish(
            &conn,
            &lab.names.jobs_exchange(),
            "fake",
            &body,
            Some("application/msgpack"),
        )
        .await;
        assert!(!returned, "the broker returned the job");
    }
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    // The one agent takes the class queue in order: once a job submitted after the duplicate
    // is done, the duplicate was delivered and dealt with.
    let after = lab.submit(&json!({"job_queue": "fake"})).await;
    assert_eq!(lab.wait_done(after, JOB_TIMEOUT).await["state"], "complete");
    let info = lab.info(id).await.unwrap();
    assert_eq!(info["attempt"], 1, "{info}");
    assert_eq!(info["attempts"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(
        lab.output(id).await.matches("direct producer").count(),
        1,
        "the job's output, once"
    );
    // A job for a class nobody declared is returned to the producer.
    let other = rmp_serde::to_vec_named(
        &json!({"v": 1, "job_id": uuid::Uuid::new_v4().to_string(), "job": {"job_queue": "nobody"}}),
    )
    .unwrap();
    assert!(
        broker::publish(
            &conn,
            &lab.names.jobs_exchange(),
            "nobody",
            &other,
            Some("application/msgpack")
        )
        .await
    );
    let _ = conn.close(200, "done".into()).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_direct_producers_jobs_belong_to_the_rabbitmq_user_that_published_them() {
    let lab = Lab::builder()
        .name("provenance")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let exchange = lab.names.jobs_exchange();
    let job = |submitted_by: Option<&str>| {
        let id = uuid::Uuid::new_v4();
        let mut msg = json!({"v": 1, "job_id": id.to_string(), "job": {"job_queue": "fake"}});
        if let Some(by) = submitted_by {
            msg["submitted_by"] = json!(by);
        }
        (id, rmp_serde::to_vec_named(&msg).unwrap())
    };
    let props = |user_id: Option<&str>| {
        let p = lapin::BasicProperties::default().with_content_type("application/msgpack".into());
        match user_id {
            Some(u) => p.with_user_id(u.into()),
            None => p,
        }
    };
    let rejected = |info: &Value, because: &str| {
        assert_eq!(info["state"], "failed", "{info}");
        assert_eq!(info["failure"]["kind"], "rejected", "{info}");
        let reason = info["failure"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(because), "{because:?} not in {reason:?}");
        assert_eq!(info["submitted_by"], Value::Null, "{info}");
    };

    // A producer with a RabbitMQ user of its own is the client of that name…
    let producer = broker::TempUser::create("ci-bot", &broker::regex_exact(&exchange));
    let conn = lapin::Connection::connect(&producer.url(), Default::default())
        .await
        .expect("the producer connects");
    let (own, body) = job(None);
    broker::publish_with(&conn, &exchange, "fake", &body, props(Some(&producer.name)))
        .await
        .expect("published");
    let info = lab.wait_done(own, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["submitted_by"], producer.name.as_str(), "{info}");
    // …and cannot pass its jobs off as someone else's (whose secrets they would use).
    let (forged, body) = job(Some("alice"));
    broker::publish_with(&conn, &exchange, "fake", &body, props(Some(&producer.name)))
        .await
        .expect("published");
    rejected(&lab.wait_done(forged, JOB_TIMEOUT).await, "'alice'");
    // RabbitMQ itself refuses a user_id other than the connection's: what makes it proof.
    let (_, body) = job(None);
    let refused = broker::publish_with(&conn, &exchange, "fake", &body, props(Some("alice"))).await;
    assert!(refused.is_err(), "RabbitMQ took a forged user_id");
    let _ = conn.close(200, "done".into()).await;

    // Without user_id a claim proves nothing.
    let lab_conn = broker::connect().await;
    let (unproven, body) = job(Some("alice"));
    broker::publish_with(&lab_conn, &exchange, "fake", &body, props(None))
        .await
        .expect("published");
    rejected(&lab.wait_done(unproven, JOB_TIMEOUT).await, "user_id");
    // The lab's own user (the gateway's and the scheduler's) vouches for its submitters.
    let (vouched, body) = job(Some("alice"));
    let lab_user = broker_schema::bus::url_user(&flinger_tests::broker_url()).expect("a user");
    broker::publish_with(&lab_conn, &exchange, "fake", &body, props(Some(&lab_user)))
        .await
        .expect("published");
    let info = lab.wait_done(vouched, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["submitted_by"], "alice", "{info}");
    let _ = lab_conn.close(200, "done".into()).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_message_is_dead_lettered_and_service_goes_on() {
    let lab = Lab::builder()
        .name("garbage")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let conn = broker::connect().await;
    // A producer listening for its jobs' events, as docs/amqp-producers.md tells it to.
    let events = broker::tap(&conn, &lab.names.events_exchange(), "job.*.status").await;
    broker::publish(
        &conn,
        &lab.names.jobs_exchange(),
        "fake",
        b"this is not msgpack",
        Some("application/msgpack"),
    )
    .await;
    let bad_version_id = uuid::Uuid::new_v4();
    let bad_version =
        rmp_serde::to_vec_named(&json!({"v": 99, "job_id": bad_version_id.to_string(), "job": {}})).unwrap();
    let invalid_id = uuid::Uuid::new_v4();
    let invalid = rmp_serde::to_vec_named(&json!({
        "v": 1,
        "job_id": invalid_id.to_string(),
        "job": {"job_queue": "fake", "global_timeout": "soon", "no_such_key": 1},
    }))
    .unwrap();
    broker::publish(
        &conn,
        &lab.names.jobs_exchange(),
        "fake",
        &invalid,
        Some("application/msgpack"),
    )
    .await;
    broker::publish(
        &conn,
        &lab.names.jobs_exchange(),
        "fake",
        &bad_version,
        Some("application/msgpack"),
    )
    .await;
    // Both the agent (class queue) and the scheduler (its copy) refuse each one with a reason.
    let class_queue = lab
        .names
        .class_queue(&broker_schema::DeviceClass::parse("fake").unwrap());
    let tap = lab.names.scheduler_submissions_queue();
    let mut seen: Vec<(String, String)> = vec![];
    let wanted = |seen: &Vec<(String, String)>, queue: &str, reason: &str| {
        seen.iter().any(|(q, r)| q == queue && r.contains(reason))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for d in broker::drain(&conn, &lab.names.dead_queue()).await {
            let queue = d.header("x-flinger-queue").unwrap_or_default().to_owned();
            let reason = d.header("x-flinger-reason").unwrap_or_default().to_owned();
            seen.push((queue, reason));
        }
        let all = [class_queue.as_str(), tap.as_str()]
            .iter()
            .all(|q| wanted(&seen, q, "MessagePack") && wanted(&seen, q, "version 99"));
        if all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters so far: {seen:?}\n{}",
            lab.log_tails(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The messages that named their job are answered: the job is recorded as rejected, with
    // the reason, and the verdict is announced to whoever listens.
    for (id, why) in [
        (bad_version_id, vec!["version 99"]),
        (invalid_id, vec!["global_timeout", "no_such_key"]),
    ] {
        let info = lab.wait_done(id, JOB_TIMEOUT).await;
        assert_eq!(info["state"], "failed", "{info}");
        assert_eq!(info["failure"]["kind"], "rejected", "{info}");
        let reason = info["failure"]["reason"].as_str().unwrap_or_default();
        for w in why {
            assert!(reason.contains(w), "{w:?} not in {reason:?}");
        }
        assert!(info["attempts"].as_array().unwrap().is_empty(), "{info}");
    }
    let mut announced = vec![];
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while announced.len() < 2 {
        for got in broker::drain(&conn, &events).await {
            let ev: Value = rmp_serde::from_slice(&got.body).expect("an event");
            if ev["failure"]["kind"] == "rejected" {
                announced.push(ev["job_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "announced: {announced:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    announced.sort();
    let mut expected = vec![bad_version_id.to_string(), invalid_id.to_string()];
    expected.sort();
    assert_eq!(announced, expected);
    // …and both keep serving.
    let id = lab.submit(&json!({"job_queue": "fake"})).await;
    assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    let _ = conn.close(200, "done".into()).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_on_one_queue_run_each_of_ten_jobs_exactly_once() {
    let lab = Lab::builder().name("two").start().await;
    let mut lab = lab;
    let ran = lab.path("ran.log");
    for name in ["local-1", "local-2"] {
        lab.add_agent(AgentSpec::commands(
            name,
            &["local"],
            &[("test", "flinger-agent run-test-cmds")],
        ))
        .await;
    }
    let mut ids = vec![];
    for i in 0..10 {
        let cmd = format!("echo job-{i} >> {}; sleep 0.2", ran.display());
        ids.push(
            lab.submit(&json!({"job_queue": "local", "test_data": {"test_cmds": cmd}}))
                .await,
        );
    }
    let mut agents = std::collections::BTreeSet::new();
    for id in &ids {
        let info = lab.wait_done(*id, JOB_TIMEOUT).await;
        assert_eq!(info["state"], "complete", "{info}");
        assert_eq!(info["attempt"], 1, "{info}");
        assert_eq!(info["attempts"].as_array().map(Vec::len), Some(1), "{info}");
        agents.insert(info["attempts"][0]["agent"].as_str().unwrap().to_owned());
    }
    let log = std::fs::read_to_string(&ran).unwrap();
    for i in 0..10 {
        assert_eq!(
            log.lines().filter(|l| *l == format!("job-{i}")).count(),
            1,
            "job-{i} in:\n{log}"
        );
    }
    assert_eq!(agents.len(), 2, "one agent ran everything: {agents:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_for_a_queue_no_agent_serves_is_refused_naming_the_queue() {
    let lab = Lab::builder().name("unroutable").start().await;
    let (status, body) = lab.post_job(&json!({"job_queue": "nobody-serves-this"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]["json"]["job_queue"][0]
            .as_str()
            .unwrap_or("")
            .contains("nobody-serves-this"),
        "{body}"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_schedulers_health_endpoints_tell_alive_from_ready() {
    flinger_tests::init_tls();
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.unwrap_or_default()))
        }
    };
    // With its broker and store: ready (it answers 503 while it is still connecting).
    let addr = format!("127.0.0.1:{}", flinger_tests::free_port());
    let lab = Lab::builder()
        .name("sched-health")
        .scheduler_arg("--health-listen", &addr)
        .start()
        .await;
    let (status, body) = flinger_tests::eventually(JOB_TIMEOUT, "the scheduler to be ready", || {
        let answer = get(format!("http://{addr}/readyz"));
        async move { answer.await.filter(|(status, _)| *status == 200) }
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"store": "ok", "broker": "ok"}));
    lab.stop().await;

    // Without a broker: alive, not ready, and it says why.
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", flinger_tests::free_port());
    let args: Vec<String> = [
        "--store",
        &format!("sqlite:{}", dir.path().join("s.db").display()),
        "--broker-url",
        "amqp://guest:guest@127.0.0.1:1/%2f",
        "--health-listen",
        &addr,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = flinger_tests::proc::Proc::spawn(
        "scheduler",
        &flinger_tests::bin("flinger-scheduler"),
        &args,
        &[],
        dir.path(),
    );
    let (status, _) =
        flinger_tests::eventually(JOB_TIMEOUT, "/healthz", || get(format!("http://{addr}/healthz"))).await;
    assert_eq!(status, 200);
    // Alive while it opens its store; once the store is open, still not ready for the broker.
    let (status, body) = flinger_tests::eventually(JOB_TIMEOUT, "the store open", || async {
        get(format!("http://{addr}/readyz"))
            .await
            .filter(|(_, body)| body.contains(r#""store":"ok""#))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_ne!(v["broker"], "ok", "{body}");
    p.stop(Duration::from_secs(10));
}

/// The agent keeps a finished run's lease only until the scheduler has recorded the end: told
/// so, its lease keeper stops at once, so no renewal of an ended job is ever refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_lease_keeper_stops_when_the_scheduler_records_the_end_of_the_run() {
    let lab = Lab::builder()
        .name("keeperstop")
        .agent(AgentSpec::fake("fake-1", &["fake"]))
        .start()
        .await;
    let id = lab.submit(&json!({"job_queue": "fake"})).await;
    assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    // A keeper that let the lease go renews no more; one refused a renewal never says it let go.
    let logs = flinger_tests::eventually(JOB_TIMEOUT, "the keeper to let the lease go", || async {
        let logs = lab.logs();
        logs.lines()
            .any(|l| l.contains("lease let go") && l.contains(&id.to_string()))
            .then_some(logs)
    })
    .await;
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("renewal refused") && l.contains(&id.to_string())),
        "{logs}"
    );
    lab.stop().await;
}

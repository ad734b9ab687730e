//! Fault tests: real processes on the real broker and store, faults injected for real (kill -9,
//! broker restarts), and the invariants checked afterwards from the store and the API.

use flinger_tests::keyserver::KeyServer;
use flinger_tests::private_broker::PrivateBroker;
use flinger_tests::{AgentSpec, Lab, eventually, invariants};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

const DONE: Duration = Duration::from_secs(90);

/// The job ended `failed`, of this kind, for a reason that says `why`.
fn assert_failed(info: &Value, kind: &str, why: &str) {
    assert_eq!(info["state"], "failed", "{info}");
    assert_eq!(info["failure"]["kind"], kind, "{info}");
    let reason = info["failure"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "{why:?} not in {info}");
}

fn slow_test_job(queue: &str, secs: u32) -> Value {
    json!({
        "job_queue": queue,
        "test_data": {"test_cmds": "run-suite", "fake": {"duration": format!("{secs}s"), "output": ["step 1", "step 2", "step 3", "step 4"]}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_test_phase_is_replaced_and_the_job_completes() {
    let mut lab = Lab::builder()
        .name("kill9")
        .agent(AgentSpec::fake("a1", &["kill9"]))
        .agent(AgentSpec::fake("a2", &["kill9"]))
        .start()
        .await;
    let id = lab.submit(&slow_test_job("kill9", 3)).await;
    let running = lab.wait_state(id, &["test"], DONE).await;
    let victim = running["lease"]["agent"]
        .as_str()
        .expect("lease holder")
        .to_owned();
    lab.agent(&victim).crash();
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    assert_eq!(info["attempt"], 2, "{info}");
    assert_eq!(info["attempts"][0]["agent"], victim.as_str(), "{info}");
    assert!(
        info["attempts"][0]["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("lease expired"),
        "{info}"
    );
    assert_ne!(info["attempts"][1]["agent"], victim.as_str(), "{info}");
    assert!(lab.output(id).await.contains("step 4"));
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_agent_dies_on_the_last_attempt_fails_as_agent_lost() {
    let mut lab = Lab::builder()
        .name("lastattempt")
        .scheduler_arg("--max-attempts", "1")
        .agent(AgentSpec::fake("solo", &["lastattempt"]))
        .start()
        .await;
    let id = lab.submit(&slow_test_job("lastattempt", 30)).await;
    lab.wait_state(id, &["test"], DONE).await;
    lab.agent("solo").crash();
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "failed", "{info}");
    assert_eq!(info["failure"]["kind"], "agent_lost", "{info}");
    assert!(
        info["failure"]["reason"].as_str().unwrap_or("").contains("solo"),
        "{info}"
    );
    // Testflinger clients see an ended job, not one polling forever.
    assert_eq!(lab.results(id).await["job_state"], "complete");
    invariants::check(&lab.store, &[id]).await;
    // The agent comes back, sweeps what its dead run left, and serves again.
    lab.agent("solo").restart();
    lab.wait_agent_state("solo", "waiting").await;
    let next = lab.submit(&json!({"job_queue": "lastattempt"})).await;
    assert_eq!(lab.wait_done(next, DONE).await["state"], "complete");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_a_killed_agents_phase_left_behind_die_when_it_restarts_and_the_job_runs_again() {
    let mut lab = Lab::builder()
        .name("orphans")
        .scheduler_arg("--lease-secs", "3")
        .scheduler_arg("--renew-secs", "0.5")
        .agent(AgentSpec::commands(
            "o1",
            &["orphans"],
            &[("test", "flinger-agent run-test-cmds")],
        ))
        .start()
        .await;
    let (marker, first_run, pid_file) = (
        lab.path("orphan.ticks"),
        lab.path("first-run"),
        lab.path("orphan.pid"),
    );
    // The first attempt leaves a grandchild ticking in the background (its pid in a file);
    // the second just passes.
    let cmds = format!(
        "if [ -e {first} ]; then echo second attempt; exit 0; fi; touch {first}\n\
         sh -c 'echo $$ > {pid}; while true; do echo tick >> {marker}; sleep 0.2; done' &\n\
         sleep 1000",
        first = first_run.display(),
        pid = pid_file.display(),
        marker = marker.display()
    );
    let id = lab
        .submit(&json!({"job_queue": "orphans", "test_data": {"test_cmds": cmds}}))
        .await;
    let ticks = || {
        std::fs::read_to_string(&marker)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    eventually(DONE, "the grandchild ticking", || async {
        (ticks() >= 2).then_some(())
    })
    .await;
    lab.agent("o1").crash();
    lab.agent("o1").restart();
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    assert_eq!(info["attempt"], 2, "{info}");
    assert!(lab.output(id).await.contains("second attempt"));
    // Nothing of the first attempt runs on: the grandchild itself is seen dead (not a file
    // seen unchanged for a while).
    let grandchild = read_pid(&pid_file);
    eventually(DONE, "the killed agent's grandchild to die", || async {
        (!alive(grandchild)).then_some(())
    })
    .await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_in_provision_test_or_reserve_stops_the_phase_runs_cleanup_and_ends_cancelled() {
    let lab = Lab::builder()
        .name("cancel")
        .agent(AgentSpec::fake("c1", &["cancel"]))
        .agent(AgentSpec::fake("c2", &["cancel"]))
        .agent(AgentSpec::fake("c3", &["cancel"]))
        .start()
        .await;
    let jobs = [
        (
            "provision",
            json!({"job_queue": "cancel", "provision_data": {"fake": {"hang": true}}, "test_data": {"test_cmds": "x"}}),
        ),
        (
            "test",
            json!({"job_queue": "cancel", "test_data": {"test_cmds": "x", "fake": {"hang": true}}, "reserve_data": {"timeout": 600}}),
        ),
        (
            "reserve",
            json!({"job_queue": "cancel", "reserve_data": {"timeout": 600}}),
        ),
    ];
    let mut ids = vec![];
    for (phase, job) in &jobs {
        let id = lab.submit(job).await;
        ids.push((*phase, id));
    }
    for (phase, id) in &ids {
        lab.wait_state(*id, &[phase], DONE).await;
        assert_eq!(lab.cancel(*id).await, 200);
    }
    for (phase, id) in &ids {
        let info = lab.wait_done(*id, DONE).await;
        assert_eq!(info["state"], "cancelled", "{phase}: {info}");
        let results = lab.results(*id).await;
        assert_eq!(results["job_state"], "cancelled", "{phase}: {results}");
        assert_eq!(
            results["cleanup_status"], 0,
            "{phase}: cleanup did not run: {results}"
        );
        if *phase != "reserve" {
            assert!(
                results[format!("{phase}_status")].as_i64().unwrap_or(0) < 0,
                "{phase} was not killed: {results}"
            );
        }
        for later in ["test", "reserve"].iter().filter(|l| **l != *phase) {
            if *phase == "provision" {
                assert!(
                    results.get(format!("{later}_status")).is_none_or(Value::is_null),
                    "{later} ran: {results}"
                );
            }
        }
    }
    let ids: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    invariants::check(&lab.store, &ids).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_and_global_timeouts_fail_the_job_with_their_reasons() {
    let lab = Lab::builder()
        .name("timeouts")
        .agent(AgentSpec::fake("t1", &["timeouts"]))
        .agent(AgentSpec::fake("t2", &["timeouts"]))
        .start()
        .await;
    let silent = lab
        .submit(&json!({"job_queue": "timeouts", "output_timeout": 2, "test_data": {"test_cmds": "x", "fake": {"hang": true}}}))
        .await;
    let long = lab.submit(&json!({"job_queue": "timeouts", "global_timeout": 3, "provision_data": {"fake": {"hang": true}}})).await;
    let info = lab.wait_done(silent, DONE).await;
    assert_eq!(info["state"], "failed", "{info}");
    assert_eq!(info["failure"]["kind"], "output_timeout", "{info}");
    assert_eq!(lab.results(silent).await["cleanup_status"], 0);
    let info = lab.wait_done(long, DONE).await;
    assert_eq!(info["state"], "failed", "{info}");
    assert_eq!(info["failure"]["kind"], "global_timeout", "{info}");
    assert_eq!(lab.results(long).await["cleanup_status"], 0);
    invariants::check(&lab.store, &[silent, long]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_installs_the_keys_and_extended_ends_at_its_new_deadline() {
    let keys = KeyServer::start(BTreeMap::from([
        (
            "alice".to_owned(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlice alice@lp\n".to_owned(),
        ),
        (
            "carol".to_owned(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICarol carol@gh\n".to_owned(),
        ),
    ]))
    .await;
    // A short grace, so that a scheduler that wrongly applied the global timeout (2 s) to the
    // reservation would end it long before its extended deadline.
    let mut lab = Lab::builder()
        .name("reserve")
        .scheduler_arg("--backstop-grace-secs", "1")
        .start()
        .await;
    let authorized = lab.path("device-authorized_keys");
    let spec = AgentSpec::fake_with(
        "r1",
        &["reserve"],
        &format!("device_ip: 10.1.2.3\nauthorized_keys: {}", authorized.display()),
    )
    .with_yaml(&keys.agent_yaml());
    lab.add_agent(spec).await;
    let id = lab
        .submit(&json!({"job_queue": "reserve", "global_timeout": 2, "reserve_data": {"ssh_keys": ["lp:alice", "gh:carol", "ssh-ed25519 AAAAinline bob@laptop"], "timeout": 4}}))
        .await;
    lab.wait_state(id, &["reserve"], DONE).await;
    let url = lab.url(&format!("/v1/job/{id}/reservation"));
    let first: Value = eventually(Duration::from_secs(10), "the reservation status", || {
        let (http, url) = (lab.http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())?;
            r.json().await.ok()
        }
    })
    .await;
    assert_eq!(first["device_ip"], "10.1.2.3", "{first}");
    assert_eq!(first["ssh"], "ssh ubuntu@10.1.2.3", "{first}");
    let first_until = broker_schema::Millis::parse_rfc3339(first["until"].as_str().unwrap()).unwrap();
    let r = lab
        .http
        .post(lab.url(&format!("/v1/job/{id}/reservation/extend")))
        .json(&json!({"by": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let extended: Value = r.json().await.unwrap();
    let new_until =
        broker_schema::Millis::parse_rfc3339(extended["reserve_until"].as_str().unwrap()).unwrap();
    assert_eq!(new_until.0 - first_until.0, 4000, "{extended}");
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    let ended = broker_schema::Millis::parse_rfc3339(info["ended_at"].as_str().unwrap()).unwrap();
    assert!(
        ended >= new_until,
        "ended at {ended}, before the extended deadline {new_until}"
    );
    let installed = std::fs::read_to_string(&authorized).unwrap_or_default();
    assert!(
        installed.contains("AAAAC3NzaC1lZDI1NTE5AAAAIAlice"),
        "{installed}"
    );
    assert!(installed.contains("AAAAICarol carol@gh"), "{installed}");
    assert!(installed.contains("AAAAinline bob@laptop"), "{installed}");
    // Extending a job that no longer reserves is refused.
    let r = lab
        .http
        .post(lab.url(&format!("/v1/job/{id}/reservation/extend")))
        .json(&json!({"by": "1h"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_over_six_hours_needs_the_clients_permission_to_start_or_grow() {
    let mut lab = Lab::builder()
        .name("longrsv")
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", "admin")
        .gateway_env("FLINGER_ADMIN_SECRET", "admin-secret-of-the-lab")
        .start()
        .await;
    let authorized = lab.path("device-authorized_keys");
    lab.add_agent(AgentSpec::fake_with(
        "lr1",
        &["longrsv"],
        &format!("device_ip: 10.1.2.3\nauthorized_keys: {}", authorized.display()),
    ))
    .await;
    let token = |client: &'static str, secret: &'static str| {
        let (http, url) = (lab.http.clone(), lab.url("/v1/oauth2/token"));
        async move {
            let r = http
                .post(url)
                .basic_auth(client, Some(secret))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{client} logs in");
            let v: Value = r.json().await.unwrap();
            v["access_token"].as_str().unwrap().to_owned()
        }
    };
    let admin = token("admin", "admin-secret-of-the-lab").await;
    for (client, extra) in [
        ("plain", json!({})),
        ("trusted", json!({"max_reservation_time": {"longrsv": 8 * 3600}})),
    ] {
        let mut body = json!({"client_secret": format!("{client}-secret-0123456789"), "role": "contributor"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = lab
            .http
            .put(lab.url(&format!("/v1/client-permissions/{client}")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "creating {client}");
    }
    let plain = token("plain", "plain-secret-0123456789").await;
    let trusted = token("trusted", "trusted-secret-0123456789").await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkqzaFGuXb3vO0PRtq8Cs7CwVIb5wVRz1bfA8lV1S1q me@laptop";
    let reserve = |timeout: Value| json!({"job_queue": "longrsv", "reserve_data": {"ssh_keys": [key], "timeout": timeout}});
    let submit = |job: Value, token: Option<String>| {
        let (http, url) = (lab.http.clone(), lab.url("/v1/job"));
        async move {
            let mut r = http.post(url).json(&job);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Seven hours: not for anonymous callers, nor for a client without the permission…
    assert_eq!(submit(reserve(json!("7h")), None).await.0, 401);
    let (status, body) = submit(reserve(json!("7h")), Some(plain.clone())).await;
    assert_eq!(status, 403, "{body}");
    // …but within the limit of a client that has it for this queue.
    let (status, body) = submit(reserve(json!("7h")), Some(trusted.clone())).await;
    assert_eq!(status, 200, "{body}");
    let long = Uuid::parse_str(body["job_id"].as_str().unwrap()).unwrap();
    // Six hours is anyone's; growing it past six needs the permission too.
    let (status, body) = submit(reserve(json!(6 * 3600)), Some(plain.clone())).await;
    assert_eq!(status, 200, "{body}");
    let short = Uuid::parse_str(body["job_id"].as_str().unwrap()).unwrap();
    let extend = |id: Uuid, by: &'static str, token: String| {
        let (http, url) = (
            lab.http.clone(),
            lab.url(&format!("/v1/job/{id}/reservation/extend")),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"by": by}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    // Reserving once its deadline is set (a moment after the state says `reserve`).
    let reserving = |id: Uuid| {
        let (http, url) = (lab.http.clone(), lab.url(&format!("/v1/job/{id}/reservation")));
        eventually(DONE, "the reservation status", move || {
            let (http, url) = (http.clone(), url.clone());
            async move { (http.get(&url).send().await.ok()?.status() == 200).then_some(()) }
        })
    };
    reserving(long).await;
    let (status, body) = extend(long, "30m", trusted.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = extend(long, "1h", trusted.clone()).await;
    assert_eq!(status, 403, "past its 8 h: {body}");
    let cancel = |id: Uuid, token: String| {
        let (http, url) = (lab.http.clone(), lab.url(&format!("/v1/job/{id}/action")));
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"action": "cancel"}));
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(cancel(long, trusted.clone()).await, 200);
    reserving(short).await;
    let (status, body) = extend(short, "1h", plain.clone()).await;
    assert_eq!(status, 403, "past 6 h without permission: {body}");
    assert!(body.contains("at most"), "{body}");
    assert_eq!(cancel(short, plain.clone()).await, 200);
    for id in [long, short] {
        assert_eq!(lab.wait_done(id, DONE).await["state"], "cancelled");
    }
    invariants::check(&lab.store, &[long, short]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_rabbitmq_with_fifty_jobs_in_flight_loses_nothing() {
    let broker = PrivateBroker::start();
    let mut builder = Lab::builder()
        .name("rmqrestart")
        .broker(&broker.url())
        .scheduler_arg("--lease-secs", "30")
        .scheduler_arg("--renew-secs", "2");
    for i in 0..4 {
        builder = builder.agent(AgentSpec::fake(&format!("r{i}"), &["restart"]));
    }
    let lab = builder.start().await;
    let mut ids = vec![];
    for i in 0..50 {
        let job = json!({"job_queue": "restart", "test_data": {"test_cmds": format!("job {i}"), "fake": {"duration": "400ms", "output": ["a", "b", "c"]}}});
        ids.push(lab.submit(&job).await);
    }
    // Restart the broker while jobs are queued, running and finishing.
    eventually(DONE, "a few jobs to finish", || async {
        let mut done = 0;
        for id in &ids[..12] {
            if lab.info(*id).await.is_some_and(|i| i["state"] == "complete") {
                done += 1;
            }
        }
        (done >= 3).then_some(())
    })
    .await;
    let mut in_flight = 0;
    for id in &ids {
        let state = lab.info(*id).await.map(|i| i["state"].clone());
        if state.is_some_and(|s| s != "complete") {
            in_flight += 1;
        }
    }
    assert!(in_flight >= 40, "only {in_flight} jobs in flight at the restart");
    broker.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.up();
    // The gateway's publisher is back too: a job submitted now is published and runs.
    ids.push(
        lab.submit(&json!({"job_queue": "restart", "test_data": {"test_cmds": "after"}}))
            .await,
    );
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(240)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    }
    invariants::check(&lab.store, &ids).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_scheduler_under_load_loses_nothing() {
    let mut builder = Lab::builder()
        .name("schedkill")
        .scheduler_arg("--lease-secs", "15")
        .scheduler_arg("--renew-secs", "1");
    for i in 0..3 {
        builder = builder.agent(AgentSpec::fake(&format!("s{i}"), &["schedkill"]));
    }
    let mut lab = builder.start().await;
    let mut ids = vec![];
    for i in 0..30 {
        let job = json!({"job_queue": "schedkill", "test_data": {"test_cmds": format!("job {i}"), "fake": {"duration": "300ms", "output": ["x", "y"]}}});
        ids.push(lab.submit(&job).await);
    }
    eventually(DONE, "some jobs to finish", || async {
        let first = lab.info(ids[2]).await?;
        (first["state"] == "complete").then_some(())
    })
    .await;
    lab.schedulers[0].crash();
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.schedulers[0].restart();
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(180)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    }
    invariants::check(&lab.store, &ids).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_the_gateway_could_not_publish_is_published_by_the_scheduler() {
    let lab = Lab::builder()
        .name("outbox")
        .gateway_env("FLINGER_BROKER_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .gateway_env("FLINGER_PUBLISH_TIMEOUT", "1s")
        .agent(AgentSpec::fake("o1", &["outbox"]))
        .start()
        .await;
    // The gateway cannot reach the broker, but the store has the job: it is accepted…
    let id = lab
        .submit(&json!({"job_queue": "outbox", "test_data": {"test_cmds": "x", "fake": {"output": ["ran"]}}}))
        .await;
    // …and the scheduler publishes it.
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    assert!(lab.output(id).await.contains("ran"));
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_device_recovery_takes_the_agent_offline_with_the_reason() {
    let mut lab = Lab::builder()
        .name("exit46")
        .agent(AgentSpec::fake("dut", &["exit46"]))
        .start()
        .await;
    let id = lab.submit(&json!({"job_queue": "exit46", "provision_data": {"fake": {"exit_code": 46}}, "test_data": {"test_cmds": "x"}})).await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["failure"]["kind"], "recovery_failed", "{info}");
    let agent = lab.wait_agent_state("dut", "offline").await;
    assert!(
        agent["comment"]
            .as_str()
            .unwrap_or("")
            .contains("recovery failed"),
        "{agent}"
    );
    // An offline agent takes no jobs: one submitted now is still there for an agent that
    // starts after it, and runs there, leased once.
    let next = lab.submit(&json!({"job_queue": "exit46"})).await;
    lab.add_agent(AgentSpec::fake("dut-2", &["exit46"])).await;
    let info = lab.wait_done(next, DONE).await;
    assert_ran_once_on(&info, "dut-2");
    invariants::check(&lab.store, &[id, next]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_excluding_an_agent_runs_on_another_without_busy_looping() {
    let lab = Lab::builder()
        .name("exclude")
        .agent(AgentSpec::fake("e1", &["exclude"]))
        .agent(AgentSpec::fake("e2", &["exclude"]))
        .start()
        .await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(lab.submit(&json!({"job_queue": "exclude", "exclude_agents": ["e1"], "test_data": {"test_cmds": "x", "fake": {"duration": "300ms"}}})).await);
    }
    for id in &ids {
        let info = lab.wait_done(*id, DONE).await;
        assert_eq!(info["state"], "complete", "{info}");
        assert_eq!(info["attempts"][0]["agent"], "e2", "{info}");
        assert_eq!(info["attempt"], 1, "{info}");
    }
    let passes = lab
        .agents
        .iter()
        .find(|a| a.name == "e1")
        .unwrap()
        .log_text()
        .matches("leaving it to others")
        .count();
    assert!(passes <= 20, "e1 bounced excluded jobs {passes} times");
    let (status, body) = lab
        .post_job(&json!({"job_queue": "exclude", "exclude_agents": ["e1", "e2"]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"]["json"]["exclude_agents"].is_array(), "{body}");
    invariants::check(&lab.store, &ids).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gracefully_stopped_agent_gives_its_job_back_at_once_and_shows_offline() {
    // A long lease: only the agent's own report can requeue the job quickly.
    let mut lab = Lab::builder()
        .name("sigterm")
        .scheduler_arg("--lease-secs", "60")
        .scheduler_arg("--renew-secs", "5")
        .agent(AgentSpec::fake("g1", &["sigterm"]))
        .agent(AgentSpec::fake("g2", &["sigterm"]))
        .start()
        .await;
    let id = lab.submit(&slow_test_job("sigterm", 3)).await;
    let running = lab.wait_state(id, &["test"], DONE).await;
    let victim = running["lease"]["agent"]
        .as_str()
        .expect("lease holder")
        .to_owned();
    let exit = lab.agent(&victim).stop(Duration::from_secs(20));
    assert_eq!(exit, Some(0), "the agent did not stop cleanly");
    let info = lab.wait_done(id, Duration::from_secs(30)).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["attempt"], 2, "{info}");
    assert!(
        info["attempts"][0]["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("shutting down"),
        "{info}"
    );
    lab.wait_agent_state(&victim, "offline").await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_database_under_load_loses_nothing() {
    let mongo = flinger_tests::private_mongo::PrivateMongo::start();
    let mut builder = Lab::builder()
        .name("dbrestart")
        .store(flinger_tests::StoreKind::Url(mongo.store_url("flinger")))
        .scheduler_arg("--lease-secs", "30")
        .scheduler_arg("--renew-secs", "2");
    for i in 0..3 {
        builder = builder.agent(AgentSpec::fake(&format!("d{i}"), &["dbrestart"]));
    }
    let lab = builder.start().await;
    let mut ids = vec![];
    for i in 0..20 {
        let job = json!({"job_queue": "dbrestart", "test_data": {"test_cmds": format!("job {i}"), "fake": {"duration": "500ms", "output": ["p", "q"]}}});
        ids.push(lab.submit(&job).await);
    }
    eventually(DONE, "a job to finish", || async {
        (lab.info(ids[1]).await?["state"] == "complete").then_some(())
    })
    .await;
    mongo.down();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mongo.up();
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(180)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    }
    invariants::check(&lab.store, &ids).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_path_works_on_the_mongodb_store() {
    let lab = Lab::builder()
        .name("mongo")
        .store(flinger_tests::StoreKind::Mongo)
        .agent(AgentSpec::fake("m1", &["mongo"]))
        .start()
        .await;
    let id = lab
        .submit(
            &json!({"job_queue": "mongo", "test_data": {"test_cmds": "x", "fake": {"output": ["on mongo"]}}}),
        )
        .await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert!(lab.output(id).await.contains("on mongo"));
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_cannot_renew_its_lease_kills_the_phase_instead_of_running_unleased() {
    let mut lab = Lab::builder()
        .name("unleased")
        .scheduler_arg("--lease-secs", "3")
        .scheduler_arg("--renew-secs", "0.5")
        .start()
        .await;
    let beats = lab.path("beats.log");
    lab.add_agent(AgentSpec::commands(
        "u1",
        &["unleased"],
        &[("test", "flinger-agent run-test-cmds")],
    ))
    .await;
    let pid_file = lab.path("beats.pid");
    let cmd = format!(
        "sh -c 'echo $$ > {pid}; while true; do date +%s%N >> {beats}; sleep 0.1; done'",
        pid = pid_file.display(),
        beats = beats.display()
    );
    let id = lab
        .submit(&json!({"job_queue": "unleased", "test_data": {"test_cmds": cmd}}))
        .await;
    lab.wait_state(id, &["test"], DONE).await;
    eventually(DONE, "the test phase to write", || async {
        std::fs::metadata(&beats).ok().filter(|m| m.len() > 0)
    })
    .await;
    // The scheduler goes away: no renewal can succeed.
    lab.schedulers[0].crash();
    let crashed_at = std::time::Instant::now();
    // The agent must kill the phase: its writer is seen dead (then the file cannot grow), and
    // its last beat came within the lease.
    let writer = read_pid(&pid_file);
    eventually(DONE, "the unleased phase to be killed", || async {
        (!alive(writer)).then_some(())
    })
    .await;
    let lines = std::fs::read_to_string(&beats).unwrap();
    let last_beat_ns: u128 = lines.lines().last().unwrap().parse().unwrap();
    let crash_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        - crashed_at.elapsed().as_nanos();
    assert!(
        last_beat_ns < crash_ns + 3_000_000_000,
        "the phase outlived the lease"
    );
    // The agent noted locally why it stopped.
    let journal = std::fs::read_to_string(lab.path("agents/u1/state/journal.jsonl")).unwrap_or_default();
    assert!(
        journal.contains(&id.to_string()) && journal.contains("LeaseLost"),
        "journal: {journal}"
    );
    // The scheduler comes back, reclaims the lease and the job runs again (attempt 2).
    lab.schedulers[0].restart();
    let info = eventually(DONE, "the job to run again as attempt 2", || async {
        let info = lab.info(id).await?;
        (info["attempt"] == 2 && info["state"] == "test").then_some(info)
    })
    .await;
    assert_eq!(info["attempt"], 2, "{info}");
    assert!(lab.cancel(id).await == 200);
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "cancelled", "{info}");
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn maintenance_takes_effect_after_the_current_job_and_survives_a_restart() {
    let mut lab = Lab::builder()
        .name("maint")
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", "admin")
        .gateway_env("FLINGER_ADMIN_SECRET", "admin-secret-of-the-lab")
        .agent(AgentSpec::fake("mt", &["maint"]))
        .start()
        .await;
    let running = lab.submit(&slow_test_job("maint", 3)).await;
    lab.wait_state(running, &["test"], DONE).await;
    // Setting an agent's state is an admin's call.
    let token = {
        let r = lab
            .http
            .post(lab.url("/v1/oauth2/token"))
            .basic_auth("admin", Some("admin-secret-of-the-lab"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let (http, url) = (lab.http.clone(), lab.url("/v1/agents/data/mt"));
    let anonymous = http
        .post(&url)
        .json(&json!({"state": "maintenance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let set = |state: &'static str| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"state": state, "comment": "new cable"}))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "{}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    };
    set("maintenance").await;
    // The running job is not disturbed…
    let info = lab.wait_done(running, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    // …then the agent is in maintenance and takes nothing: a job queued now is still there for
    // an agent that starts after it, and runs there.
    lab.wait_agent_state("mt", "maintenance").await;
    let queued = lab.submit(&json!({"job_queue": "maint"})).await;
    lab.add_agent(AgentSpec::fake("mt-spare", &["maint"])).await;
    assert_ran_once_on(&lab.wait_done(queued, DONE).await, "mt-spare");
    lab.agent("mt-spare").stop(Duration::from_secs(10));
    // A restarted agent is reminded of the decision: it takes nothing either.
    lab.agent("mt").stop(Duration::from_secs(10));
    lab.agent("mt").restart();
    lab.wait_agent_state("mt", "maintenance").await;
    let after_restart = lab.submit(&json!({"job_queue": "maint"})).await;
    lab.agent("mt-spare").restart();
    assert_ran_once_on(&lab.wait_done(after_restart, DONE).await, "mt-spare");
    lab.agent("mt-spare").stop(Duration::from_secs(10));
    // Back in service, it takes the job that waited.
    let waited = lab.submit(&json!({"job_queue": "maint"})).await;
    set("waiting").await;
    assert_ran_once_on(&lab.wait_done(waited, DONE).await, "mt");
    invariants::check(&lab.store, &[running, queued, after_restart, waited]).await;
    lab.stop().await;
}

/// An agent that speaks the protocol but ignores deadlines: it leases jobs and renews their
/// leases forever, and never ends them.
mod rogue {
    pub use flinger_tests::agent_double::AgentDouble as Rogue;
}

/// A lab whose scheduler ends a job one second past a deadline its agent ignores, and that
/// agent: a rogue serving the class `name`.
async fn backstop_lab(name: &str) -> (Lab, rogue::Rogue) {
    let lab = Lab::builder()
        .name(name)
        .scheduler_arg("--backstop-grace-secs", "1")
        .start()
        .await;
    let rogue = rogue::Rogue::start(&lab.broker_url, &lab.names, name).await;
    (lab, rogue)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_ends_a_job_whose_agent_ignores_its_global_timeout() {
    let (lab, rogue) = backstop_lab("backstop").await;
    let id = lab
        .submit(
            &json!({"job_queue": "backstop", "global_timeout": 2, "test_data": {"test_cmds": "sleep 1d"}}),
        )
        .await;
    let grant = rogue.lease_next().await;
    assert_eq!(grant.job_id, id);
    rogue
        .report(
            &grant,
            broker_schema::messages::JobEventKind::PhaseStarted {
                phase: broker_schema::Phase::Test,
            },
        )
        .await;
    // 2 s of global timeout and 1 s of grace: the scheduler takes the lease back.
    let reason = rogue.renew_until_lost(&grant, Duration::from_secs(30)).await;
    let info = lab.wait_done(id, DONE).await;
    assert_failed(&info, "global_timeout", "ended by the scheduler");
    assert!(!reason.is_empty());
    // The agent is told to stop, in case it is alive but deaf to its deadlines.
    let commands = rogue.control_commands().await;
    assert!(
        commands.iter().any(|c| matches!(c,
            broker_schema::messages::ControlCommand::Cancel { job_id, reason, .. }
                if *job_id == id && reason.contains("global timeout"))),
        "{commands:?}"
    );
    rogue.stop().await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_ends_a_test_phase_its_agent_leaves_silent() {
    let (lab, rogue) = backstop_lab("backstop-out").await;
    let id = lab
        .submit(&json!({"job_queue": "backstop-out", "output_timeout": 2, "test_data": {"test_cmds": "sleep 1d"}}))
        .await;
    let grant = rogue.lease_next().await;
    rogue
        .report(
            &grant,
            broker_schema::messages::JobEventKind::PhaseStarted {
                phase: broker_schema::Phase::Test,
            },
        )
        .await;
    // Its test phase prints nothing for 2 s (and 1 s of grace) while the agent keeps renewing.
    rogue.renew_until_lost(&grant, Duration::from_secs(30)).await;
    let info = lab.wait_done(id, DONE).await;
    assert_failed(&info, "output_timeout", "ended by the scheduler");
    rogue.stop().await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_attempts_late_events_and_output_are_ignored() {
    use broker_schema::Phase;
    use broker_schema::messages::{JobEventKind, Outcome, OutputCounts};
    let lab = Lab::builder()
        .name("fencing")
        .scheduler_arg("--lease-secs", "2")
        .scheduler_arg("--renew-secs", "0.5")
        .start()
        .await;
    let rogue = rogue::Rogue::start(&lab.broker_url, &lab.names, "fencing").await;
    let id = lab
        .submit(&json!({"job_queue": "fencing", "test_data": {"test_cmds": "run"}}))
        .await;
    let first = rogue.lease_next().await;
    rogue
        .report(&first, JobEventKind::PhaseStarted { phase: Phase::Test })
        .await;
    // The first attempt goes quiet: its lease expires and the job is queued again.
    let second = rogue.lease_next().await;
    assert_eq!((first.attempt, second.attempt), (1, 2));
    let finished = |code: i32| JobEventKind::Finished {
        outcome: Outcome::Complete,
        output: OutputCounts { output: 1, serial: 0 },
        phase_status: [(Phase::Test, code)].into(),
        device_info: None,
        output_truncated: Default::default(),
    };
    // The first attempt was only cut off; it comes back and reports its run as complete.
    rogue.output(&first, 0, Phase::Test, "stale output\n").await;
    rogue.report(&first, finished(0)).await;
    // The current attempt runs, and fails its test.
    rogue
        .report(&second, JobEventKind::PhaseStarted { phase: Phase::Test })
        .await;
    rogue.output(&second, 0, Phase::Test, "current output\n").await;
    rogue.report(&second, finished(3)).await;
    let info = lab.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["attempt"], 2, "{info}");
    assert_eq!(
        lab.results(id).await["test_status"],
        3,
        "the stale run's result won"
    );
    let output = lab.output(id).await;
    assert!(output.contains("current output"), "{output}");
    assert!(!output.contains("stale output"), "{output}");
    rogue.stop().await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_ends_a_reservation_its_agent_overruns() {
    let (lab, rogue) = backstop_lab("backstop-rsv").await;
    let id = lab
        .submit(&json!({"job_queue": "backstop-rsv", "reserve_data": {"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkqzaFGuXb3vO0PRtq8Cs7CwVIb5wVRz1bfA8lV1S1q me@laptop"], "timeout": 2}}))
        .await;
    let grant = rogue.lease_next().await;
    // The agent sets the deadline when the reserve phase starts: now + reserve_data.timeout.
    assert_eq!(grant.reserve_until, None);
    let until = broker_schema::Millis::now().plus(Duration::from_secs(2));
    use broker_schema::messages::JobEventKind;
    rogue
        .report(
            &grant,
            JobEventKind::PhaseStarted {
                phase: broker_schema::Phase::Reserve,
            },
        )
        .await;
    rogue
        .report(
            &grant,
            JobEventKind::ReservationStarted {
                until,
                device_ip: Some("10.0.0.7".into()),
                user: Some("ubuntu".into()),
            },
        )
        .await;
    lab.wait_state(id, &["reserve"], DONE).await;
    // The agent keeps the device past the deadline (and a second of grace): the scheduler ends it.
    rogue.renew_until_lost(&grant, Duration::from_secs(30)).await;
    let lost_at = broker_schema::Millis::now();
    assert!(
        lost_at.0 >= until.0,
        "the reservation was ended before its deadline"
    );
    let info = lab.wait_done(id, DONE).await;
    assert_failed(&info, "agent_error", "did not end the reservation");
    rogue.stop().await;
    invariants::check(&lab.store, &[id]).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_of_the_same_name_in_another_lab_leaves_our_running_phase_alone() {
    let command = [("test", "flinger-agent run-test-cmds")];
    let ours = Lab::builder()
        .name("twin-a")
        .agent(AgentSpec::commands("twin", &["twin-a"], &command))
        .start()
        .await;
    let id = ours
        .submit(&json!({"job_queue": "twin-a", "test_data": {"test_cmds": "sleep 4; echo survived"}}))
        .await;
    ours.wait_state(id, &["test"], DONE).await;
    // Another lab on this host starts an agent called `twin` too: at start it sweeps the
    // leftovers of *its* earlier runs, which must not include our phase.
    let theirs = Lab::builder()
        .name("twin-b")
        .agent(AgentSpec::commands("twin", &["twin-b"], &command))
        .start()
        .await;
    let info = ours.wait_done(id, DONE).await;
    assert_eq!(info["state"], "complete", "{info}");
    let results = ours.results(id).await;
    assert_eq!(results["test_status"], 0, "{results}");
    assert!(ours.output(id).await.contains("survived"));
    invariants::check(&ours.store, &[id]).await;
    theirs.stop().await;
    ours.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_gateway_answers_its_long_polls_at_once_and_exits() {
    let mut lab = Lab::builder()
        .name("pollstop")
        .gateways(2)
        // The gateways log each request as it starts: the test sees its long poll under way.
        .gateway_env("FLINGER_LOG", "info,tower_http=debug")
        .agent(AgentSpec::fake_with(
            "ps-1",
            &["pollstop"],
            "phases:\n  test:\n    duration: 20s\n    output: [started]\n",
        ))
        .start()
        .await;
    let id = lab
        .submit(&json!({"job_queue": "pollstop", "test_data": {"test_cmds": "true"}}))
        .await;
    lab.wait_state(id, &["test"], DONE).await;
    // A long poll for output that will never come (fragment 1000), for up to 60 s, through the
    // first gateway.
    let poll = tokio::spawn({
        let (http, url) = (
            lab.http.clone(),
            lab.url(&format!("/v1/result/{id}/log/output?start_fragment=1000&wait=60")),
        );
        async move {
            http.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    });
    eventually(DONE, "the gateway to take the long poll", || async {
        let log = lab.gateway.as_ref().unwrap().log_text();
        log.lines()
            .any(|l| l.contains("wait=60") && l.contains("started processing request"))
            .then_some(())
    })
    .await;
    lab.gateway
        .as_ref()
        .unwrap()
        .signal(nix::sys::signal::Signal::SIGTERM);
    let answered = poll.await.unwrap();
    let answered_at = broker_schema::Millis::now();
    assert_eq!(answered, Ok(200), "the long poll is answered, not cut off");
    assert_eq!(lab.gateway.as_mut().unwrap().wait_exit(DONE), Some(0));
    // Ordering, not a stopwatch: the poll was answered before the 20 s test phase ended (it
    // would have waited 60 s), as the other gateway shows.
    let other = &lab.more_bases[0];
    let info = eventually(DONE, "the job to end", || async {
        let info = lab.info_at(other, id).await?;
        info["ended_at"].is_string().then_some(info)
    })
    .await;
    assert_eq!(info["state"], "complete", "{info}");
    let ended = broker_schema::Millis::parse_rfc3339(info["ended_at"].as_str().unwrap()).unwrap();
    assert!(
        answered_at < ended,
        "the poll was answered at {answered_at:?}, after the job ended at {ended:?}"
    );
    lab.stop().await;
}

/// The pid a test command wrote to `path`.
fn read_pid(path: &std::path::Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether process `pid` runs: it exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// The job completed on its first and only lease, held by `agent`.
fn assert_ran_once_on(info: &serde_json::Value, agent: &str) {
    assert_eq!(info["state"], "complete", "{info}");
    assert_eq!(info["attempts"].as_array().map(Vec::len), Some(1), "{info}");
    assert_eq!(info["attempts"][0]["agent"], agent, "{info}");
}

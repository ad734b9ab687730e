//! Retention through a real lab, on both stores: with a short retention, an old ended job is
//! removed (the API answers for it and its results as for a job it never knew), while a job waiting since before it
//! ended, a running one, a recent one and a queue with a retention of its own are kept.

use broker_schema::Millis;
use flinger_store::{Records, RefreshTokenRecord, SecretRecord};
use flinger_tests::{AgentSpec, Lab, StoreKind, cli, invariants};
use serde_json::json;
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);

async fn status(lab: &Lab, path: &str) -> u16 {
    lab.http
        .get(lab.url(path))
        .send()
        .await
        .expect("GET")
        .status()
        .as_u16()
}

/// The job ids in an agent's provision history.
async fn provisions(lab: &Lab, agent: &str) -> Vec<String> {
    let v: serde_json::Value = lab
        .http
        .get(lab.url(&format!("/v1/agents/provision_logs/{agent}")))
        .send()
        .await
        .expect("GET provision log")
        .json()
        .await
        .unwrap_or_default();
    v["provision_log"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["job_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn old_ended_jobs_go_and_the_rest_stay(store: StoreKind) {
    // Ended jobs are kept 5 s (0.3 s between purges); the queue `rt-keep` keeps them forever.
    let mut lab = Lab::builder()
        .name("retention")
        .store(store)
        .scheduler_arg("--retention-days", &(5.0 / 86_400.0).to_string())
        .scheduler_arg("--retention", "rt-keep=0")
        .scheduler_arg("--retention-every-secs", "0.3")
        .agent(AgentSpec::fake("rt-1", &["rt"]))
        .agent(AgentSpec::fake("rt-run", &["rt-run"]))
        .agent(AgentSpec::fake("rt-keep", &["rt-keep"]))
        .agent(AgentSpec::fake("rt-idle", &["rt-wait"]))
        .start()
        .await;
    // Records with an expiry of their own: an expired and a live refresh token and secret.
    let store = invariants::open(&lab.store).await;
    let now = Millis::now();
    let token = |expires_at| RefreshTokenRecord {
        client_id: "rt-person@example.com".into(),
        issued_at: now,
        expires_at: Some(expires_at),
        revoked: false,
        claimed_role: None,
    };
    let secret = |expires_at| SecretRecord {
        value: "v".into(),
        written_at: now,
        expires_at: Some(expires_at),
        single_use: false,
    };
    let (past, future) = (
        now.minus(Duration::from_secs(1)),
        now.plus(Duration::from_secs(3600)),
    );
    store
        .insert_refresh_token("rt-expired", &token(past))
        .await
        .unwrap();
    store
        .insert_refresh_token("rt-live", &token(future))
        .await
        .unwrap();
    store
        .put_secret("rt-person", "expired", &secret(past))
        .await
        .unwrap();
    store
        .put_secret("rt-person", "live", &secret(future))
        .await
        .unwrap();

    // Waiting since before anything ended: its queue's only agent is stopped.
    lab.agent("rt-idle").stop(Duration::from_secs(10));
    let waiting = lab.submit(&json!({"job_queue": "rt-wait"})).await;
    let running = lab
        .submit(&json!({"job_queue": "rt-run", "test_data": {"fake": {"hang": true}}}))
        .await;
    lab.wait_state(running, &["test"], JOB_TIMEOUT).await;
    let kept_queue = lab
        .submit(&json!({"job_queue": "rt-keep", "test_data": {"fake": {"output": ["kept forever"]}}}))
        .await;
    let old = lab
        .submit(&json!({"job_queue": "rt", "provision_data": {"distro": "noble"}, "test_data": {"fake": {"output": ["soon gone"]}}}))
        .await;
    lab.wait_done(kept_queue, JOB_TIMEOUT).await;
    lab.wait_done(old, JOB_TIMEOUT).await;
    assert!(lab.output(old).await.contains("soon gone"));
    assert!(
        provisions(&lab, "rt-1").await.contains(&old.to_string()),
        "the old job's provisioning is in rt-1's history"
    );

    // The positive control: the old job goes, with its results.
    let gone = tokio::time::timeout(JOB_TIMEOUT, async {
        // Testflinger's answer for a job it does not know: 204.
        while status(&lab, &format!("/v1/job/{old}/info")).await != 204 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the old ended job was never removed\n{}",
        lab.log_tails(40)
    );
    let never = uuid::Uuid::new_v4();
    for path in [
        "/v1/result/{}",
        "/v1/result/{}/log/output",
        "/v1/job/{}/attachments",
    ] {
        assert_eq!(
            status(&lab, &path.replace("{}", &old.to_string())).await,
            status(&lab, &path.replace("{}", &never.to_string())).await,
            "{path}: the old job is answered as a job never known"
        );
    }
    // Ended after the old one: by then older than the retention too, and so would be a recent
    // job were the cutoff wrong; a job that ends now is kept.
    let recent = lab
        .submit(&json!({"job_queue": "rt", "provision_data": {"distro": "noble"}, "test_data": {"fake": {"output": ["recent"]}}}))
        .await;
    lab.wait_done(recent, JOB_TIMEOUT).await;
    assert!(lab.output(recent).await.contains("recent"));
    // The agent's provision history forgets the old job's provisioning, keeps the recent one's.
    let forgotten = tokio::time::timeout(JOB_TIMEOUT, async {
        loop {
            let jobs = provisions(&lab, "rt-1").await;
            if jobs.contains(&recent.to_string()) && !jobs.contains(&old.to_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        forgotten.is_ok(),
        "{:?}\n{}",
        provisions(&lab, "rt-1").await,
        lab.log_tails(15)
    );

    // The expired token and secret went (by now, many passes ran); the live ones stay.
    let expired_gone = tokio::time::timeout(JOB_TIMEOUT, async {
        while store.get_refresh_token("rt-expired").await.unwrap().is_some()
            || store.list_secrets().await.unwrap().len() != 1
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(expired_gone.is_ok(), "{}", lab.log_tails(15));
    assert!(store.get_refresh_token("rt-live").await.unwrap().is_some());
    assert_eq!(invariants::secret_ids(&store).await, ["rt-person/live"]);

    assert_eq!(lab.info(waiting).await.expect("waiting job")["state"], "waiting");
    assert_eq!(lab.info(running).await.expect("running job")["state"], "test");
    let kept = lab.info(kept_queue).await.expect("job of a queue kept forever");
    assert_eq!(kept["state"], "complete");
    assert!(lab.output(kept_queue).await.contains("kept forever"));
    lab.cancel(running).await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_ended_jobs_and_keeps_the_rest_on_sqlite() {
    old_ended_jobs_go_and_the_rest_stay(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_ended_jobs_and_keeps_the_rest_on_mongodb() {
    old_ended_jobs_go_and_the_rest_stay(StoreKind::Mongo).await;
}

/// `flinger admin get retention` shows the settings the scheduler runs with (it records them in
/// the store at start; the gateway reads them there), per queue too, to admins only.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_cli_shows_the_schedulers_retention_settings() {
    const SECRET: &str = "retention-admin-secret-0123";
    let lab = Lab::builder()
        .name("retention-show")
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", "admin")
        .gateway_env("FLINGER_ADMIN_SECRET", SECRET)
        .scheduler_arg("--retention-days", "7")
        .scheduler_arg("--retention", "rt-keep=0,rt-short=0.5")
        .scheduler_arg("--retention-every-secs", "90")
        .start()
        .await;
    let flinger = |args: &'static [&'static str]| cli::run(lab.cli(), args, None);
    // Without a login: refused before anything is sent.
    assert_eq!(flinger(&["admin", "get", "retention"]).await.code, 6);
    let login = flinger(&["login", "--client-id", "admin", "--secret-key", SECRET]).await;
    assert_eq!(login.code, 0, "{login}");

    let shown = flinger_tests::eventually(JOB_TIMEOUT, "the scheduler's settings", || async {
        let run = flinger(&["admin", "get", "retention"]).await;
        (run.code == 0).then_some(run)
    })
    .await;
    let lines: Vec<&str> = shown.stdout.lines().collect();
    assert_eq!(
        lines[0], "Ended jobs are kept 7 days (removed every 90 s)",
        "{shown}"
    );
    assert_eq!(lines[1], "  queue rt-keep: kept forever", "{shown}");
    assert_eq!(lines[2], "  queue rt-short: kept 0.5 days", "{shown}");
    assert!(
        lines[3].starts_with("Recorded by flinger-scheduler pid "),
        "{shown}"
    );

    let run = flinger(&["--json", "admin", "get", "retention"]).await;
    assert_eq!(run.code, 0, "{run}");
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["keep_days"], 7.0, "{v}");
    assert_eq!(v["per_queue"], json!({"rt-keep": null, "rt-short": 0.5}), "{v}");
    assert_eq!(v["purge_every_secs"], 90.0, "{v}");

    // A contributor may not read them.
    let anonymous = lab.http.get(lab.url("/v1/retention")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    lab.stop().await;
}

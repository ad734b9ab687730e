//! Secrets' lifetimes, end to end: `flinger secret write --single-use` and `--expire-after`, the
//! lab's default lifetime, and rotating the secrets key without losing a secret.

use broker_schema::Millis;
use flinger_store::Records;
use flinger_tests::cli::{Run, run};
use flinger_tests::{AgentSpec, Lab, bin};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(60);
const ADMIN: &str = "lab-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const ALICE_SECRET: &str = "alice-secret-0123456789";
const KEY: &str = "the lab's first secrets passphrase";
const NEW_KEY: &str = "the lab's second secrets passphrase";
const VALUE: &str = "s3cr3t-Value-of-19c";

/// The scheduler's arguments in a lab (short leases, as `Lab::builder` gives them), with `more`.
fn scheduler_args(more: &[&str]) -> Vec<String> {
    ["--lease-secs", "4", "--renew-secs", "1", "--reap-secs", "0.5"]
        .iter()
        .chain(more)
        .map(|s| s.to_string())
        .collect()
}

/// A lab whose gateway and scheduler seal secrets with `KEY`, with alice (a contributor) and
/// an agent on queue `sec` whose test phase runs the job's `test_cmds`.
async fn lab(name: &str) -> (Lab, String) {
    let mut lab = Lab::builder()
        .name(name)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .gateway_env("FLINGER_SECRETS_KEY", KEY)
        .scheduler_arg("--secrets-key", KEY)
        .start()
        .await;
    let admin = lab.access_token(ADMIN, ADMIN_SECRET).await;
    let r = lab
        .http
        .put(lab.url("/v1/client-permissions/alice"))
        .bearer_auth(&admin)
        .json(&json!({"client_secret": ALICE_SECRET, "role": "contributor"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    lab.add_agent(AgentSpec::commands(
        "sec-1",
        &["sec"],
        &[("test", "flinger-agent run-test-cmds")],
    ))
    .await;
    let alice = lab.access_token("alice", ALICE_SECRET).await;
    (lab, alice)
}

async fn flinger(lab: &Lab, args: &[&str]) -> Run {
    run(lab.cli(), args, None).await
}

/// `expires_at` of a `flinger --json secret write` run, as seconds from now (`None`: never).
fn expires_in(run: &Run) -> Option<f64> {
    assert_eq!(run.code, 0, "{run}");
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON");
    doc["expires_at"].as_str().map(|t| {
        let at = Millis::parse_rfc3339(t).expect("a datetime");
        (at.0 - Millis::now().0) as f64 / 1000.0
    })
}

/// Submits a job on `sec` as `token` whose test phase prints each variable's length.
async fn submit(lab: &Lab, token: &str, secrets: &[(&str, &str)]) -> Uuid {
    let (status, body) = post_job(lab, token, secrets).await;
    assert_eq!(status, 200, "{body}");
    body["job_id"].as_str().unwrap().parse().unwrap()
}

/// The answer to the submission of [`submit`].
async fn post_job(lab: &Lab, token: &str, secrets: &[(&str, &str)]) -> (u16, Value) {
    let cmds: Vec<String> = secrets
        .iter()
        .map(|(var, _)| format!("echo \"{var}=${{#{var}}}\""))
        .collect();
    let secrets: serde_json::Map<String, Value> = secrets
        .iter()
        .map(|(var, path)| (var.to_string(), json!(path)))
        .collect();
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(token)
        .json(&json!({
            "job_queue": "sec",
            "test_data": {"test_cmds": cmds.join("\n"), "secrets": secrets},
        }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn single_use_expiring_and_default_lifetimes_through_the_cli() {
    let (lab, alice) = lab("secret-life").await;
    let run = flinger(
        &lab,
        &["login", "--client-id", "alice", "--secret-key", ALICE_SECRET],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");

    // The lab's default lifetime is Testflinger's year; -1 is never; a single-use secret lives
    // the default lifetime unless taken first.
    let year = 365.0 * 86_400.0;
    for (args, expected) in [
        (vec!["default", VALUE], Some(year)),
        (vec!["once", VALUE, "--single-use"], Some(year)),
        (vec!["forever", VALUE, "--expire-after", "-1"], None),
        (vec!["brief", VALUE, "--expire-after", "1"], Some(1.0)),
    ] {
        let run = flinger(&lab, &[&["--json", "secret", "write"][..], &args[..]].concat()).await;
        match (expires_in(&run), expected) {
            (None, None) => {}
            (Some(got), Some(want)) => assert!((got - want).abs() < 60.0, "{args:?}: {got} s: {run}"),
            (got, want) => panic!("{args:?}: expires in {got:?}, expected {want:?}: {run}"),
        }
    }
    // Bad lifetimes are refused, naming what is wrong.
    let run = flinger(&lab, &["secret", "write", "x", "y", "--expire-after", "0"]).await;
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("expire_after"), "{run}");
    let run = flinger(
        &lab,
        &["secret", "write", "x", "y", "--expire-after", "5", "--single-use"],
    )
    .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--single-use"), "{run}");

    // Once its second has passed, `brief` has expired: a job naming it is refused, naming it.
    let brief_gone = std::time::Instant::now() + Duration::from_millis(1500);
    tokio::time::sleep_until(brief_gone.into()).await;
    let (status, body) = post_job(&lab, &alice, &[("BRIEF", "brief")]).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]["json"]["test_data"]["secrets"][0]
            .as_str()
            .is_some_and(|m| m.contains("brief")),
        "{body}"
    );
    let all = [("ONCE", "once"), ("FOREVER", "forever"), ("DEFAULT", "default")];
    let first = submit(&lab, &alice, &all).await;
    let info = lab.wait_done(first, JOB_TIMEOUT).await;
    assert_eq!(info["job_state"], "complete", "{info}");
    let output = lab.output(first).await;
    let len = VALUE.len();
    for line in [
        format!("ONCE={len}"),
        format!("FOREVER={len}"),
        format!("DEFAULT={len}"),
    ] {
        assert!(output.contains(&line), "{line} in:\n{output}");
    }
    // The single-use secret was given to the first job only: a job naming it now is refused.
    let (status, body) = post_job(&lab, &alice, &[("ONCE", "once"), ("FOREVER", "forever")]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"]["json"]["test_data"]["secrets"],
        json!(["Inaccessible secret paths: once"]),
        "{body}"
    );
    let store = flinger_tests::invariants::open(&lab.store).await;
    let left = flinger_tests::invariants::secret_ids(&store).await;
    assert!(!left.contains(&"alice/once".to_owned()), "{left:?}");
    assert!(left.contains(&"alice/forever".to_owned()), "{left:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_secrets_key_keeps_every_secret() {
    let (mut lab, alice) = lab("secret-rotate").await;
    for path in ["ci/token", "ci/other"] {
        let r = lab
            .http
            .put(lab.url(&format!("/v1/secrets/alice/{path}")))
            .bearer_auth(&alice)
            .json(&json!({"value": VALUE}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let store = flinger_tests::invariants::open(&lab.store).await;
    let sealed = |secrets: Vec<(String, flinger_store::SecretRecord)>| -> Vec<(String, String)> {
        secrets.into_iter().map(|(id, s)| (id, s.value)).collect()
    };
    let before = sealed(store.list_secrets().await.unwrap());
    assert_eq!(before.len(), 2);

    // The scheduler is stopped, the secrets are sealed again under the new key, and it starts
    // again knowing only the new key.
    for s in &mut lab.schedulers {
        s.stop(Duration::from_secs(10));
    }
    let rotate = |previous: &str| {
        let mut cmd = std::process::Command::new(bin("flinger-scheduler"));
        cmd.env("FLINGER_STORE", &lab.store)
            .env("FLINGER_SECRETS_KEY", NEW_KEY)
            .env("FLINGER_PREVIOUS_SECRETS_KEYS", previous)
            .arg("rotate-secrets-key");
        cmd
    };
    // Without the key the secrets were sealed with, nothing is replaced and the command says so.
    let run_ = run(rotate("a passphrase that never sealed anything"), &[], None).await;
    assert_ne!(run_.code, 0, "{run_}");
    assert!(run_.stderr.contains("alice/ci/token"), "{run_}");
    assert_eq!(sealed(store.list_secrets().await.unwrap()), before);

    let run_ = run(rotate(KEY), &[], None).await;
    assert_eq!(run_.code, 0, "{run_}");
    assert!(run_.stdout.contains("2 resealed"), "{run_}");
    let after = sealed(store.list_secrets().await.unwrap());
    for ((id, old), (id2, new)) in before.iter().zip(&after) {
        assert_eq!(id, id2);
        assert!(new.starts_with("enc:v1:") && new != old, "{id}: {new}");
    }
    // Again: nothing left to do.
    let run_ = run(rotate(KEY), &[], None).await;
    assert!(run_.stdout.contains("0 resealed, 2 already were"), "{run_}");

    lab.start_scheduler("scheduler-new-key", &scheduler_args(&["--secrets-key", NEW_KEY]));
    let job = submit(&lab, &alice, &[("LAB_TOKEN", "ci/token")]).await;
    let info = lab.wait_done(job, JOB_TIMEOUT).await;
    assert_eq!(info["job_state"], "complete", "{info}");
    let output = lab.output(job).await;
    assert!(output.contains(&format!("LAB_TOKEN={}", VALUE.len())), "{output}");
    // The secret reached the phase under the new key, and was still masked in its output.
    assert!(!output.contains(VALUE), "{output}");
    lab.stop().await;
}

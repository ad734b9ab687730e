//! Testflinger drop-in, end to end on real binaries: a job with attachments waits for them, runs
//! with the files in `attachments/test/`, uploads its artifacts, and uses a secret that reaches
//! the phase's environment but never the stored output, the API or any process's log.

use flinger_store::Records;
use flinger_tests::{AgentSpec, Lab, StoreKind, eventually};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;
use uuid::Uuid;

const JOB_TIMEOUT: Duration = Duration::from_secs(90);
const ADMIN: &str = "lab-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const SECRET_VALUE: &str = "s3cr3t-Value-9f8e7d";
const SECRETS_KEY: &str = "the lab's secrets passphrase";

async fn create_client(lab: &Lab, admin: &str, id: &str, role: &str, secret: &str) {
    let r = lab
        .http
        .put(lab.url(&format!("/v1/client-permissions/{id}")))
        .bearer_auth(admin)
        .json(&json!({"client_secret": secret, "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "create {id}: {}", r.text().await.unwrap());
}

/// A tar.gz with `test/<path>` entries, as Testflinger's CLI packs attachments.
fn attachments_archive(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("test/{path}"), text.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Every `(path, contents)` of a tar.gz.
fn unpack(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut t = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for e in t.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut s = String::new();
        if e.header().entry_type().is_file() {
            e.read_to_string(&mut s).unwrap();
        }
        out.push((path, s));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn attachments_artifacts_and_secrets_end_to_end() {
    scenario(StoreKind::Sqlite).await;
}

/// The same on MongoDB: attachments and artifacts in GridFS, secrets and clients as documents.
#[tokio::test(flavor = "multi_thread")]
async fn attachments_artifacts_and_secrets_end_to_end_on_mongodb() {
    scenario(StoreKind::Mongo).await;
}

async fn scenario(store: StoreKind) {
    // Alice's secret, written once, never readable.
    let (mut lab, admin, alice) = lab_with_a_secret_on("dropin", store).await;
    // Sealed at rest: the store holds no trace of the value.
    let stored = flinger_tests::invariants::open(&lab.store)
        .await
        .get_secret("alice", "ci/token", broker_schema::Millis::now())
        .await
        .unwrap()
        .expect("the secret is stored");
    assert!(
        stored.starts_with("enc:v1:") && !stored.contains(SECRET_VALUE),
        "{stored}"
    );

    let yaml = format!(
        "server_address: {}\nclient_id: agent-dropin\nclient_secret: agent-secret-0123456789\n\
         advertised_queues:\n  dropin: Drop-in test queue\n\
         advertised_images:\n  dropin:\n    noble: \"url: http://images/noble.img.xz\"\n",
        lab.base
    );
    lab.add_agent(
        AgentSpec::commands(
            "dropin-1",
            &["dropin"],
            &[("test", "flinger-agent run-test-cmds")],
        )
        .with_yaml(&yaml),
    )
    .await;

    // The agent advertised its queue and images through the gateway.
    let images: Value = eventually(Duration::from_secs(10), "advertised images", || async {
        let v: Value = lab
            .http
            .get(lab.url("/v1/agents/images/dropin"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v != json!({})).then_some(v)
    })
    .await;
    assert_eq!(images, json!({"noble": "url: http://images/noble.img.xz"}));
    let queues: Value = lab
        .http
        .get(lab.url("/v1/agents/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(queues["dropin"], "Drop-in test queue");

    let test_cmds = [
        "cat attachments/test/data/hello.txt",
        "echo \"token is $LAB_TOKEN\"",
        "printf '%s' \"$LAB_TOKEN\" | head -c 6; sleep 0.2; printf '%s\\n' \"$LAB_TOKEN\" | tail -c +7",
        // Compared reversed, so that the job file itself does not hold the secret.
        "test \"$(printf %s \"$LAB_TOKEN\" | rev)\" = \"$REVERSED\" && echo secret-reached-the-phase",
        "mkdir -p artifacts/logs && echo built > artifacts/logs/build.txt && cp attachments/test/data/hello.txt artifacts/",
    ]
    .join("\n");
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(&alice)
        .json(&json!({
            "job_queue": "dropin",
            "test_data": {
                "test_cmds": test_cmds.replace("$REVERSED", &SECRET_VALUE.chars().rev().collect::<String>()),
                "attachments": [{"agent": "data/hello.txt"}],
                "secrets": {"LAB_TOKEN": "ci/token"},
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let id: Uuid = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Without its attachments the job waits, and is not dispatched: a job submitted after it
    // to the same queue and agent runs first.
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(&alice)
        .json(&json!({"job_queue": "dropin", "test_data": {"test_cmds": "echo marker"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let marker: Uuid = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    lab.wait_done(marker, Duration::from_secs(60)).await;
    let info = lab.info(id).await.expect("job info");
    assert_eq!(info["state"], "waiting", "{info}");
    assert_eq!(info["attempt"], 0, "leased before its attachments: {info}");
    assert_eq!(info["awaiting_attachments"], true);

    // The upload as Testflinger's CLI sends it (multipart `file`), with alice's token: the job
    // uses her secret, so attachments from anyone else, or without a token, are refused.
    let upload = |token: Option<String>, text: &'static str| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(attachments_archive(&[("data/hello.txt", text)]))
                .file_name("attachments.tar.gz")
                .mime_str("application/x-gzip")
                .unwrap(),
        );
        let mut r = lab
            .http
            .post(lab.url(&format!("/v1/job/{id}/attachments")))
            .multipart(form);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, body) = upload(None, "a stranger's attachment\n").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = upload(Some(alice.clone()), "hello from the attachment\n").await;
    assert_eq!(status, 200, "{body}");

    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.logs());
    let results = lab.results(id).await;
    assert_eq!(results["test_status"], 0, "{results}\n{}", lab.logs());

    let output = lab.output(id).await;
    assert!(output.contains("hello from the attachment"), "{output}");
    assert!(output.contains("secret-reached-the-phase"), "{output}");
    assert!(output.contains("token is ****"), "{output}");
    assert!(
        !output.contains(SECRET_VALUE),
        "the secret leaked into the output: {output}"
    );
    // Written in two pieces 200 ms apart (two output chunks), it is still masked.
    assert!(output.lines().any(|l| l == "****"), "{output}");

    // Artifacts: uploaded by the agent, downloadable as Testflinger's CLI does.
    let r = lab
        .http
        .get(lab.url(&format!("/v1/result/{id}/artifact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let files = unpack(&r.bytes().await.unwrap());
    assert!(
        files
            .iter()
            .any(|(p, s)| p == "artifacts/logs/build.txt" && s == "built\n"),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|(p, s)| p == "artifacts/hello.txt" && s.contains("hello from the attachment")),
        "{files:?}"
    );

    // The secret is nowhere: not in any API answer, not in any log.
    for path in [
        format!("/v1/job/{id}"),
        format!("/v1/job/{id}/info"),
        format!("/v1/result/{id}"),
        format!("/v1/result/{id}/log/output"),
        "/v1/client-permissions".to_owned(),
    ] {
        let text = lab
            .http
            .get(lab.url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(SECRET_VALUE), "{path} shows the secret: {text}");
    }
    let logs = eventually(Duration::from_secs(5), "logs to be written", || async {
        let l = lab.logs();
        // The marker's run, then this one.
        (l.matches("run over").count() >= 2).then_some(l)
    })
    .await;
    assert!(!logs.contains(SECRET_VALUE), "a process logged the secret");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_attachments_never_come_is_not_dispatched_and_can_be_cancelled() {
    let mut lab = Lab::builder().name("noattach").start().await;
    lab.add_agent(AgentSpec::fake("fake-na", &["noattach"])).await;
    let id = lab
        .submit(&json!({"job_queue": "noattach", "test_data": {"test_cmds": "true", "attachments": [{"agent": "x"}]}}))
        .await;
    // A job submitted after it to the same queue and agent runs first.
    let marker = lab
        .submit(&json!({"job_queue": "noattach", "test_data": {"test_cmds": "true"}}))
        .await;
    lab.wait_done(marker, JOB_TIMEOUT).await;
    let info = lab.info(id).await.unwrap();
    assert_eq!(info["state"], "waiting", "{info}");
    assert_eq!(info["attempt"], 0, "never leased");
    assert_eq!(lab.cancel(id).await, 200);
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "cancelled");
    lab.stop().await;
}

/// The bootstrap path without configuration: `flinger-gateway create-client` writes an admin
/// straight into the store, with the secret from standard input.
#[tokio::test(flavor = "multi_thread")]
async fn create_client_writes_the_first_admin_into_the_store() {
    use flinger_store::{Records, Role, StoreConfig};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", dir.path().join("flinger.db").display());
    let mut child = std::process::Command::new(flinger_tests::bin("flinger-gateway"))
        .args([
            "--store",
            &store,
            "create-client",
            "first-admin",
            "--role",
            "admin",
        ])
        .env_remove("FLINGER_CLIENT_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first-admin-secret-123\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created client \"first-admin\" with role admin"));
    let store = StoreConfig::parse(&store).unwrap().open().await.unwrap();
    let client = store.get_client("first-admin").await.unwrap().expect("created");
    assert_eq!(client.role, Role::Admin);
    let hash = client.secret_hash.unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains("first-admin-secret"));
    // Too short a secret is refused.
    let status = std::process::Command::new(flinger_tests::bin("flinger-gateway"))
        .args(["--store", &store_path(&dir), "create-client", "x"])
        .env("FLINGER_CLIENT_SECRET", "short")
        .status()
        .unwrap();
    assert!(!status.success());
}

fn store_path(dir: &tempfile::TempDir) -> String {
    format!("sqlite:{}", dir.path().join("flinger.db").display())
}

/// The routes of status events to the gateways (`<ns>.gateway.events`) that exist now.
fn gateway_routes(lab: &Lab) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_bindings",
            "-q",
            "-p",
            "/",
            "source_name",
            "destination_name",
            "routing_key",
        ])
        .output()
        .expect("rabbitmqctl must be installed next to the broker (scripts/test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (events, gateways) = (lab.names.events_exchange(), lab.names.gateway_events_queue());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3 && f[0] == events && f[1] == gateways).then(|| f[2].to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_webhook_hears_its_whole_run_whoever_submitted_it() {
    let lab = Lab::builder()
        .name("webhooks")
        .agent(AgentSpec::fake("wh-1", &["hooked"]))
        .start()
        .await;
    let hook = flinger_tests::webhook::WebhookReceiver::start().await;
    let job = |id: Uuid| {
        json!({"job_id": id.to_string(), "job_queue": "hooked", "job_status_webhook": hook.url,
               "provision_data": {"distro": "noble"}, "test_data": {"test_cmds": "true"}})
    };
    // Over HTTP…
    let over_http = lab.submit(&job(Uuid::new_v4())).await;
    // …and straight onto the broker, as another system would.
    let over_amqp = Uuid::new_v4();
    let mut msg = json!({"v": 1, "job_id": over_amqp.to_string(), "job": job(over_amqp)});
    msg["job"].as_object_mut().unwrap().remove("job_id");
    let conn = flinger_tests::broker::connect().await;
    let body = rmp_serde::to_vec_named(&msg).unwrap();
    let publish = || {
        let (conn, exchange, body) = (&conn, lab.names.jobs_exchange(), &body);
        async move {
            let returned =
                flinger_tests::broker::publish(conn, &exchange, "hooked", body, Some("application/msgpack"))
                    .await;
            assert!(!returned);
        }
    };
    publish().await;
    // A job without a webhook, meanwhile, is nothing to the gateways.
    let plain = lab.submit(&json!({"job_queue": "hooked"})).await;

    for id in [over_http, over_amqp, plain] {
        assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    }
    for id in [over_http, over_amqp] {
        let names = eventually(JOB_TIMEOUT, "the webhook to hear the end of the job", || {
            let names = hook.event_names(id);
            async move { names.iter().any(|n| n == "job_end").then_some(names) }
        })
        .await;
        for expected in [
            "provision_start",
            "provision_success",
            "test_start",
            "test_success",
            "job_end",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
        }
    }
    assert!(hook.event_names(plain).is_empty());
    // Without a webhook token, relays carry no Authorization header.
    let auths = hook.authorizations();
    assert!(
        !auths.is_empty() && auths.iter().all(Option::is_none),
        "{auths:?}"
    );
    // A producer publishing the ended job again (at least once…) makes no route either: once a
    // job submitted after it has run on the one agent, the copy has been dealt with.
    publish().await;
    let after = lab.submit(&json!({"job_queue": "hooked"})).await;
    assert_eq!(lab.wait_done(after, JOB_TIMEOUT).await["state"], "complete");
    let _ = conn.close(200, "done".into()).await;
    // Routes to the gateways exist only while a job with a webhook runs: none is left now, and
    // none was ever made for every job.
    let routes = gateway_routes(&lab);
    assert!(routes.is_empty(), "routes left to the gateways: {routes:?}");
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_relays_carry_the_labs_bearer_token_as_testflingers_webhook_auth() {
    // Testflinger's server setting, by its own name.
    let lab = Lab::builder()
        .name("hookauth")
        .gateway_env("WEBHOOK_AUTH", "tf-hook-token")
        .agent(AgentSpec::fake("wa-1", &["hookauth"]))
        .start()
        .await;
    let hook = flinger_tests::webhook::WebhookReceiver::start().await;
    let id = lab
        .submit(&json!({"job_queue": "hookauth", "job_status_webhook": hook.url,
                        "test_data": {"test_cmds": "true"}}))
        .await;
    assert_eq!(lab.wait_done(id, JOB_TIMEOUT).await["state"], "complete");
    eventually(JOB_TIMEOUT, "the webhook to hear the end of the job", || {
        let names = hook.event_names(id);
        async move { names.iter().any(|n| n == "job_end").then_some(()) }
    })
    .await;
    let auths = hook.authorizations();
    assert!(
        auths.len() >= 2 && auths.iter().all(|a| a.as_deref() == Some("Bearer tf-hook-token")),
        "every relay carries the token: {auths:?}"
    );
    // The token is a secret: it is in no log of the lab.
    assert!(
        !lab.logs().contains("tf-hook-token"),
        "the webhook token was logged"
    );
    lab.stop().await;
}

/// A lab whose gateway and scheduler share a secrets key, with an `agent` client for the
/// agents and alice, who holds the secret `ci/token`. Returns alice's token.
async fn lab_with_a_secret(name: &str) -> (Lab, String) {
    let (lab, _admin, alice) = lab_with_a_secret_on(name, StoreKind::Sqlite).await;
    (lab, alice)
}

/// [`lab_with_a_secret`] on the given store; also returns the admin's token.
async fn lab_with_a_secret_on(name: &str, store: StoreKind) -> (Lab, String, String) {
    let lab = Lab::builder()
        .name(name)
        .store(store)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .gateway_env("FLINGER_JWT_SIGNING_KEY", "dropin-test-signing-key")
        .gateway_env("FLINGER_SECRETS_KEY", SECRETS_KEY)
        .scheduler_arg("--secrets-key", SECRETS_KEY)
        .start()
        .await;
    let admin = lab.access_token(ADMIN, ADMIN_SECRET).await;
    create_client(&lab, &admin, "agent-dropin", "agent", "agent-secret-0123456789").await;
    create_client(&lab, &admin, "alice", "contributor", "alice-secret-0123456789").await;
    let alice = lab.access_token("alice", "alice-secret-0123456789").await;
    let r = lab
        .http
        .put(lab.url("/v1/secrets/alice/ci/token"))
        .bearer_auth(&alice)
        .json(&json!({"value": SECRET_VALUE}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (lab, admin, alice)
}

/// An agent whose phases run `tests/fixtures/tf-device-connector.py`, which reads secrets from
/// `testflinger.json` as Testflinger's device connectors do; `after_cleanup` runs after its
/// cleanup stage, in the run directory.
fn tf_connector_agent(lab: &Lab, name: &str, queue: &str, after_cleanup: &str) -> AgentSpec {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tf-device-connector.py");
    let stage = |s: &str| format!("python3 {script} fake {s} -c /dev/null testflinger.json");
    AgentSpec::commands(
        name,
        &[queue],
        &[
            ("test", &stage("runtest")),
            ("cleanup", &format!("{}; {after_cleanup}", stage("cleanup"))),
        ],
    )
    .with_yaml(&format!(
        "server_address: {}\nclient_id: agent-dropin\nclient_secret: agent-secret-0123456789\n",
        lab.base
    ))
}

async fn submit_as(lab: &Lab, token: &str, job: &Value) -> Uuid {
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(token)
        .json(job)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_testflinger_device_connector_reads_secret_values_from_testflinger_json_during_the_test_phase_only()
{
    let (mut lab, alice) = lab_with_a_secret("tfsecrets").await;
    let out = lab.path("probe");
    std::fs::create_dir_all(&out).unwrap();
    // After the test phase, cleanup copies what the run directory still holds.
    let probe = format!(
        "cp testflinger.json {0}/after-test.json; cp kept-link.json {0}/kept-link.json",
        out.display()
    );
    let spec = tf_connector_agent(&lab, "tfs-1", "tfsecrets", &probe);
    lab.add_agent(spec).await;
    let test_cmds = [
        // Compared reversed: the output masks the value itself.
        "echo \"reversed: $(printf %s \"$LAB_TOKEN\" | rev)\"",
        "echo \"mode $(stat -c %a testflinger.json)\"",
        // A job leaving the values behind as best it can: copies in artifacts/, a hard link.
        "mkdir -p artifacts && cp testflinger.json artifacts/job-during-test.json && env > artifacts/env.txt",
        "ln testflinger.json kept-link.json",
    ]
    .join("\n");
    let id = submit_as(
        &lab,
        &alice,
        &json!({"job_queue": "tfsecrets", "test_data": {"test_cmds": test_cmds, "secrets": {"LAB_TOKEN": "ci/token"}}}),
    )
    .await;
    let info = lab.wait_done(id, JOB_TIMEOUT).await;
    assert_eq!(info["state"], "complete", "{info}\n{}", lab.log_tails(40));
    let output = lab.output(id).await;
    // The connector found the value in testflinger.json (with the path there, it would have
    // overwritten the environment's value with "ci/token").
    let reversed: String = SECRET_VALUE.chars().rev().collect();
    assert!(output.contains(&format!("reversed: {reversed}")), "{output}");
    assert!(output.contains("mode 600"), "{output}");
    assert!(!output.contains(SECRET_VALUE), "{output}");

    // Once the phase was over, testflinger.json held the path again and the job's hard link to
    // the file that held the value was emptied.
    let after = std::fs::read_to_string(out.join("after-test.json")).unwrap();
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["test_data"]["secrets"]["LAB_TOKEN"], "ci/token", "{after}");
    assert_eq!(std::fs::read_to_string(out.join("kept-link.json")).unwrap(), "");

    // The copies in artifacts/ were masked before they left the host.
    let r = lab
        .http
        .get(lab.url(&format!("/v1/result/{id}/artifact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let files = unpack(&r.bytes().await.unwrap());
    let file = |name: &str| {
        files
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("{name} not among {files:?}"))
    };
    let copied: Value = serde_json::from_str(&file("artifacts/job-during-test.json")).unwrap();
    assert_eq!(copied["test_data"]["secrets"]["LAB_TOKEN"], "****", "{copied}");
    assert!(file("artifacts/env.txt").contains("LAB_TOKEN=****"));
    for (path, text) in &files {
        assert!(!text.contains(SECRET_VALUE), "{path} holds the secret");
    }
    // The agent's run directory is gone.
    assert!(!lab.path(&format!("agents/tfs-1/run/{id}")).exists());
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_during_the_test_phase_removes_the_secret_values_when_it_starts_again() {
    let (mut lab, alice) = lab_with_a_secret("tfkilled").await;
    let spec = tf_connector_agent(&lab, "tfk-1", "tfkilled", "true");
    lab.add_agent(spec).await;
    let id = submit_as(
        &lab,
        &alice,
        &json!({"job_queue": "tfkilled", "test_data": {"test_cmds": "while true; do sleep 0.1; done",
                "secrets": {"LAB_TOKEN": "ci/token"}}}),
    )
    .await;
    lab.wait_state(id, &["test"], JOB_TIMEOUT).await;
    let run_dir = lab.path(&format!("agents/tfk-1/run/{id}"));
    // While the test phase runs, the file holds the value, as a Testflinger agent writes it.
    eventually(JOB_TIMEOUT, "the value in testflinger.json", || async {
        let text = std::fs::read_to_string(run_dir.join("testflinger.json")).ok()?;
        text.contains(SECRET_VALUE).then_some(())
    })
    .await;
    // (So that `waiting` below can only come from the agent started again.)
    lab.wait_agent_state("tfk-1", "test").await;
    // The agent dies; it comes back serving another queue, so that it cannot take the job again.
    lab.agent("tfk-1").crash();
    let config = lab.agent_config("tfk-1");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("job_queues: [\"tfkilled\"]", "job_queues: [\"tfkilled-other\"]");
    std::fs::write(&config, text).unwrap();
    lab.agent("tfk-1").restart();
    lab.wait_agent_state("tfk-1", "waiting").await;
    assert!(
        !run_dir.exists(),
        "the killed run's directory is still there: {:?}",
        std::fs::read_to_string(run_dir.join("testflinger.json"))
    );
    // The lab deletes the queues of the classes it knows; this one it does not.
    let conn = flinger_tests::broker::connect().await;
    let other = lab
        .names
        .class_queue(&broker_schema::DeviceClass::parse("tfkilled-other").unwrap());
    flinger_tests::broker::delete(&conn, &[other], &[]).await;
    let _ = conn.close(200, "done".into()).await;
    lab.stop().await;
}

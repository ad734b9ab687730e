//! Secrets: write-only, per client, needed by the jobs that name them, masked in what agents
//! post, and never in an answer or a log line.

use crate::support::{TestApp, logged, validation_detail};
use flinger_store::Records;
use serde_json::{Value, json};

const VALUE: &str = "pa55-w0rd-for-the-lab";

#[tokio::test]
async fn secrets_are_write_only_and_belong_to_their_client() {
    let app = TestApp::spawn().await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let r = app
        .put_json_as(&alice, "/v1/secrets/alice/lab/token", &json!({"value": VALUE}))
        .await;
    assert_eq!(r.status(), 200);
    // Without `expire_after`: the default lifetime, a year (as Testflinger).
    let expires = r.json::<Value>().await.unwrap()["expires_at"]
        .as_str()
        .and_then(broker_schema::Millis::parse_rfc3339)
        .expect("expires_at");
    let days = expires.since(broker_schema::Millis::now()).as_secs_f64() / 86_400.0;
    assert!((364.9..=365.0).contains(&days), "{days}");
    // `null`: until deleted.
    let r = app
        .put_json_as(
            &alice,
            "/v1/secrets/alice/forever",
            &json!({"value": VALUE, "expire_after": null}),
        )
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"expires_at": null}));
    let r = app
        .put_json_as(
            &alice,
            "/v1/secrets/alice/short-lived",
            &json!({"value": "x", "expire_after": 60}),
        )
        .await;
    assert!(
        r.json::<Value>().await.unwrap()["expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // No way to read one back.
    assert_eq!(
        app.get_as(&alice, "/v1/secrets/alice/lab/token").await.status(),
        405
    );
    // Anonymous, someone else's, bad paths, bad bodies.
    let r = app
        .send(
            app.http
                .put(app.url("/v1/secrets/alice/lab/token"))
                .json(&json!({"value": "x"})),
        )
        .await;
    assert_eq!(r.status(), 401);
    let bob = app.client("bob", "contributor", json!({})).await;
    assert_eq!(
        app.put_json_as(&bob, "/v1/secrets/alice/lab/token", &json!({"value": "x"}))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.put_json_as(&alice, "/v1/secrets/alice/bad%20path", &json!({"value": "x"}))
            .await
            .status(),
        422
    );
    let detail = validation_detail(
        app.put_json_as(&alice, "/v1/secrets/alice/p", &json!({"value": ""}))
            .await,
    )
    .await;
    assert!(detail["value"].is_array(), "{detail}");
    let detail = validation_detail(
        app.put_json_as(
            &alice,
            "/v1/secrets/alice/p",
            &json!({"value": "v", "ephemeral": true, "expire_after": 5}),
        )
        .await,
    )
    .await;
    assert!(detail["_schema"].is_array(), "{detail}");
    // Deleting.
    assert_eq!(
        app.delete_as(Some(&bob), "/v1/secrets/alice/lab/token", None)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.delete_as(Some(&alice), "/v1/secrets/alice/lab/token", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.delete_as(Some(&alice), "/v1/secrets/alice/lab/token", None)
            .await
            .status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn a_job_naming_secrets_needs_a_client_that_has_them() {
    let app = TestApp::spawn().await;
    app.declare_class("sq").await;
    let alice = app.client("alice", "contributor", json!({})).await;
    app.put_json_as(&alice, "/v1/secrets/alice/ci/token", &json!({"value": VALUE}))
        .await;
    let job = |path: &str| json!({"job_queue": "sq", "test_data": {"test_cmds": "echo $TOKEN", "secrets": {"TOKEN": path}}});

    let detail = validation_detail(app.post_json("/v1/job", &job("ci/token")).await).await;
    assert_eq!(
        detail["test_data"]["secrets"],
        json!(["Missing client ID (user not authenticated)"])
    );
    let detail = validation_detail(app.post_json_as(&alice, "/v1/job", &job("ci/other")).await).await;
    assert_eq!(
        detail["test_data"]["secrets"],
        json!(["Inaccessible secret paths: ci/other"])
    );
    let bad = json!({"job_queue": "sq", "test_data": {"secrets": {"1BAD": "ci/token"}}});
    assert!(validation_detail(app.post_json_as(&alice, "/v1/job", &bad).await).await["test_data"]["secrets"]["1BAD"].is_array());

    let r = app.post_json_as(&alice, "/v1/job", &job("ci/token")).await;
    assert_eq!(r.status(), 200);
    let id: uuid::Uuid = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The job names the path; the value stays in the store, only for the scheduler.
    let shown = app.get(&format!("/v1/job/{id}")).await.text().await.unwrap();
    assert!(shown.contains("ci/token") && !shown.contains(VALUE), "{shown}");
    assert_eq!(
        app.store
            .get_secret("alice", "ci/token", broker_schema::Millis::now())
            .await
            .unwrap()
            .as_deref(),
        Some(VALUE)
    );
    app.stop().await;
}

/// Alice's job using her secret `ci/token` (= [`VALUE`]) on queue `queue`, and an agent's token.
async fn job_with_a_secret(app: &TestApp, queue: &str) -> (uuid::Uuid, String) {
    app.declare_class(queue).await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let agent = app.client("mask-agent", "agent", json!({})).await;
    let r = app
        .put_json_as(&alice, "/v1/secrets/alice/ci/token", &json!({"value": VALUE}))
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_json_as(
            &alice,
            "/v1/job",
            &json!({"job_queue": queue, "test_data": {"secrets": {"TOKEN": "ci/token"}}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (id, agent)
}

#[tokio::test]
async fn output_posted_over_http_is_masked_when_secrets_are_sealed_at_rest() {
    let app =
        TestApp::spawn_with(|c| c.auth.secrets_key = Some("a sealing passphrase for tests".into())).await;
    let (id, agent) = job_with_a_secret(&app, "sealq").await;
    let stored = app
        .store
        .get_secret("alice", "ci/token", broker_schema::Millis::now())
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.contains(VALUE), "the value is sealed in the store");

    let r = app
        .post_json_as(
            &agent,
            &format!("/v1/result/{id}/log/output"),
            &json!({"fragment_number": 0, "timestamp": "2024-05-01T10:00:00Z", "phase": "test",
                    "log_data": format!("token={VALUE}\n")}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let log: Value = app
        .get(&format!("/v1/result/{id}/log/output"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["output"]["test"]["log_data"], "token=****\n");
    let results = app.get(&format!("/v1/result/{id}")).await.text().await.unwrap();
    assert!(!results.contains(VALUE), "{results}");
    let kept = app
        .store
        .read_output(&flinger_store::OutputQuery::all(
            id,
            0,
            broker_schema::messages::LogStream::Output,
        ))
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].data, b"token=****\n");
    app.stop().await;
}

#[tokio::test]
async fn results_posted_over_http_are_masked_at_any_depth() {
    let app = TestApp::spawn().await;
    let (id, agent) = job_with_a_secret(&app, "resq").await;
    let r = app
        .post_json_as(
            &agent,
            &format!("/v1/result/{id}"),
            &json!({"status": {"test": 0}, "job_state": format!("state {VALUE}"),
                    "device_info": {"device_ip": "10.1.2.3", "notes": [format!("pw={VALUE}"), {"deep": VALUE}]}}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let posted = app
        .store
        .get_posted_result(&id.to_string())
        .await
        .unwrap()
        .expect("posted result stored");
    let stored = serde_json::to_string(&posted.fields).unwrap();
    assert!(!stored.contains(VALUE), "stored unmasked: {stored}");
    assert_eq!(
        posted.fields["device_info"],
        json!({"device_ip": "10.1.2.3", "notes": ["pw=****", {"deep": "****"}]})
    );
    assert_eq!(posted.fields["job_state"], "state ****");
    let shown: Value = app.get(&format!("/v1/result/{id}")).await.json().await.unwrap();
    assert_eq!(shown["device_info"]["notes"][0], "pw=****", "{shown}");
    assert_eq!(shown["test_status"], 0);
    app.stop().await;
}

#[tokio::test]
async fn output_posted_by_agents_is_masked_and_the_secret_is_never_shown_or_logged() {
    let app = TestApp::spawn().await;
    app.declare_class("mq").await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let agent = app.client("mask-agent", "agent", json!({})).await;
    let admin = app.admin_token().await;
    app.put_json_as(&alice, "/v1/secrets/alice/ci/token", &json!({"value": VALUE}))
        .await;
    let r = app
        .post_json_as(
            &alice,
            "/v1/job",
            &json!({"job_queue": "mq", "test_data": {"secrets": {"TOKEN": "ci/token"}}}),
        )
        .await;
    let id: uuid::Uuid = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let r = app
        .post_json_as(
            &agent,
            &format!("/v1/result/{id}/log/output"),
            &json!({"fragment_number": 0, "timestamp": "2024-05-01T10:00:00Z", "phase": "test",
                    "log_data": format!("token={VALUE} twice {VALUE}\n")}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let log: Value = app
        .get(&format!("/v1/result/{id}/log/output"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(log["output"]["test"]["log_data"], "token=**** twice ****\n");

    for path in [
        format!("/v1/job/{id}"),
        format!("/v1/job/{id}/info"),
        format!("/v1/result/{id}"),
        format!("/v1/result/{id}/log/output"),
        "/v1/client-permissions/alice".to_owned(),
        "/v1/client-permissions".to_owned(),
    ] {
        let text = app.get_as(&admin, &path).await.text().await.unwrap();
        assert!(!text.contains(VALUE), "{path}: {text}");
    }
    let logs = logged();
    assert!(logs.contains("secret written"), "the log capture works");
    assert!(!logs.contains(VALUE), "the gateway logged a secret");
    app.stop().await;
}

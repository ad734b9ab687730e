//! Health, readiness, and the conventions every path follows.

use crate::support::TestApp;
use serde_json::{Value, json};

#[tokio::test]
async fn the_banner_and_liveness_answer_plain_text() {
    let app = TestApp::spawn().await;

    let r = app.get("/v1/").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Testflinger API v1 compatible"));
    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    app.stop().await;
}

#[tokio::test]
async fn ready_when_store_and_broker_answer() {
    let app = TestApp::spawn().await;

    let r = app.wait_ready().await;

    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"store": "ok", "broker": "ok"})
    );
    app.stop().await;
}

#[tokio::test]
async fn not_ready_while_the_broker_cannot_be_reached() {
    // Nothing listens on port 1.
    let app = TestApp::spawn_with(|c| c.broker.url = "amqp://guest:guest@127.0.0.1:1/%2f".into()).await;

    let r = app.get("/readyz").await;

    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["store"], "ok");
    assert_ne!(body["broker"], "ok");
    app.stop().await;
}

#[tokio::test]
async fn a_job_is_accepted_while_the_broker_is_down_because_it_is_stored() {
    let app = TestApp::spawn_with(|c| {
        c.broker.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
        c.publish_timeout = std::time::Duration::from_millis(500);
    })
    .await;

    let r = app.post_json("/v1/job", &json!({"job_queue": "q1"})).await;

    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let job_id = body["job_id"].as_str().unwrap().parse().unwrap();
    let stored = app.store.get_job(job_id).await.unwrap().expect("durable");
    assert_eq!(stored.enqueued_at, None, "left for the sweeper to publish");
    app.stop().await;
}

#[tokio::test]
async fn oidc_is_not_configured_so_every_oidc_path_is_404_whatever_the_method() {
    let app = TestApp::spawn().await;
    for path in [
        "/oidc/auth-init",
        "/oidc/auth-init/",
        "/oidc",
        "/oidc/token",
        "/oidc/a/b/c",
    ] {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = app.http.request(m, app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 404, "{method} {path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["message"], "OIDC is not configured", "{method} {path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn trailing_slashes_are_accepted_everywhere() {
    let app = TestApp::spawn().await;
    app.declare_class("q1").await;

    let r = app.post_json("/v1/job/", &json!({"job_queue": "q1"})).await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(app.get(&format!("/v1/job/{id}/")).await.status(), 200);
    assert_eq!(app.get(&format!("/v1/job/{id}/position/")).await.status(), 200);
    assert_eq!(
        app.get(&format!("/v1/result/{id}/log/output/")).await.status(),
        200
    );
    assert_eq!(app.get("/v1/agents/data/").await.status(), 200);
    assert_eq!(app.get("/healthz/").await.status(), 200);
    assert_eq!(app.get("/v1/nothing-here").await.status(), 404);
    app.stop().await;
}

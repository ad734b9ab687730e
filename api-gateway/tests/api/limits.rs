//! Per-client request limits: a client over its rate is answered 429 with `Retry-After` while
//! another is served, and is served again once it has waited that long.

use crate::support::TestApp;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_client_over_its_rate_waits_while_another_is_served() {
    // One request a second, ten at once: room for the setup's logins, then a quick end.
    let app = TestApp::spawn_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 10;
    })
    .await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let bob = app.client("bob", "contributor", json!({})).await;

    let mut refused = None;
    for _ in 0..50 {
        let r = app.get_as(&alice, "/v1/agents/data").await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let refused = refused.expect("alice is refused within 50 requests");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Too many requests"),
        "{body}"
    );

    // Bob has his own rate.
    assert_eq!(app.get_as(&bob, "/v1/agents/data").await.status(), 200);
    // Health probes are never limited.
    assert_eq!(app.get("/healthz").await.status(), 200);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.get_as(&alice, "/v1/agents/data").await.status(), 200);
    app.stop().await;
}

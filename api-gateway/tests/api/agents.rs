//! Agents and queues, from heartbeats written straight into the store.

use crate::support::TestApp;
use broker_schema::Millis;
use broker_schema::messages::{AdminState, AgentState};
use broker_schema::{AgentName, Phase};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn agents_show_their_reported_state_until_they_fall_silent() {
    let app = TestApp::spawn().await;
    let now = Millis::now();
    app.heartbeat("dut-1", &["q1"], AgentState::Running(Phase::Test), now)
        .await;
    // Three heartbeat intervals (1 s each here) without news: offline.
    app.heartbeat(
        "dut-2",
        &["q1", "q2"],
        AgentState::Waiting,
        now.minus(Duration::from_secs(4)),
    )
    .await;

    let r = app.get("/v1/agents/data").await;
    assert_eq!(r.status(), 200);
    let mut agents: Vec<Value> = r.json().await.unwrap();
    agents.sort_by_key(|a| a["name"].as_str().unwrap().to_owned());

    assert_eq!(agents.len(), 2);
    assert_eq!(agents[0]["name"], "dut-1");
    assert_eq!(agents[0]["state"], "test");
    assert_eq!(agents[0]["queues"], json!(["q1"]));
    assert_eq!(agents[0]["location"], "lab-1");
    assert_eq!(agents[0]["provision_type"], "fake");
    assert_eq!(agents[0]["restricted_to"], json!({}));
    assert!(agents[0]["updated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(agents[1]["state"], "offline", "silent for three intervals");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_agent_in_maintenance_shows_it_with_the_admin_comment() {
    let app = TestApp::spawn().await;
    app.heartbeat("dut-1", &["q1"], AgentState::Waiting, Millis::now())
        .await;
    let name = AgentName::parse("dut-1").unwrap();
    app.store
        .set_agent_admin(&name, Some(AdminState::Maintenance), "new SD card", Millis::now())
        .await
        .unwrap();

    let agent: Value = app.get("/v1/agents/data/dut-1").await.json().await.unwrap();

    assert_eq!(agent["state"], "maintenance");
    assert_eq!(agent["comment"], "new SD card");
    assert_eq!(app.get("/v1/agents/data/nobody").await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn queues_are_those_agents_serve() {
    let app = TestApp::spawn().await;
    app.heartbeat("dut-1", &["q1"], AgentState::Waiting, Millis::now())
        .await;
    app.heartbeat("dut-2", &["q1", "q2"], AgentState::Waiting, Millis::now())
        .await;

    let queues: Value = app.get("/v1/agents/queues").await.json().await.unwrap();
    assert_eq!(queues, json!({"q1": "", "q2": ""}));

    let r = app.get("/v1/queues/q2/agents").await;
    assert_eq!(r.status(), 200);
    let agents: Vec<Value> = r.json().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["name"], "dut-2");

    assert_eq!(app.get("/v1/queues/q3/agents").await.status(), 404);
    assert_eq!(app.get("/v1/queues/bad*name/agents").await.status(), 404);
    app.stop().await;
}

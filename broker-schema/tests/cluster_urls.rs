//! Several broker URLs (a cluster's nodes): a bus connects to one that answers.

use broker_schema::Names;
use broker_schema::bus::{Bus, BusConfig};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A broker URL nothing listens on.
fn dead_node() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

#[tokio::test]
async fn a_bus_given_several_nodes_connects_to_the_one_that_answers() {
    let live = std::env::var("FLINGER_TEST_BROKER_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let names = Names::new(format!(
        "t-urls-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    // Whichever node it tries first, it goes round the list to the live one.
    let url = format!("{}, {},{live}", dead_node(), dead_node());
    let bus = Bus::new(
        BusConfig {
            url,
            names: names.clone(),
            connection_name: "cluster URLs test".into(),
        },
        CancellationToken::new(),
    );
    let connection = tokio::time::timeout(Duration::from_secs(30), bus.live())
        .await
        .expect("connected within 30 s")
        .expect("connected")
        .connection;
    assert!(connection.status().connected());
    assert_eq!(bus.connections_made(), 1);
    // It declared the topology there; remove it.
    let ch = connection.create_channel().await.expect("channel");
    for q in [
        names.dead_queue(),
        names.scheduler_submissions_queue(),
        names.scheduler_status_queue(),
        names.scheduler_output_queue(),
        names.scheduler_rpc_queue(),
        names.gateway_events_queue(),
    ] {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .expect("queue declared");
    }
    for x in [
        names.jobs_exchange(),
        names.events_exchange(),
        names.control_exchange(),
        names.dead_exchange(),
    ] {
        ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
            .await
            .expect("exchange declared");
    }
    let _ = ch.close(200, "done".into()).await;
    bus.close().await;
}

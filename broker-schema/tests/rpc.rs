//! Request/reply when the broker cannot be reached: the caller's timeout holds.

use broker_schema::bus::{Bus, BusConfig, RpcClient, RpcError};
use broker_schema::messages::{RenewRequest, SchedulerReply, SchedulerRequest};
use broker_schema::{AgentName, Names};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A broker URL nothing listens on: the bus keeps reconnecting with backoff.
fn unreachable_broker() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

#[tokio::test]
async fn a_call_gives_up_at_its_timeout_while_the_broker_is_unreachable() {
    let bus = Bus::new(
        BusConfig {
            url: unreachable_broker(),
            names: Names::new("rpc-test"),
            connection_name: "rpc test".into(),
        },
        CancellationToken::new(),
    );
    let rpc = RpcClient::new(bus);
    let request = SchedulerRequest::Renew(RenewRequest {
        job_id: uuid::Uuid::new_v4(),
        attempt: 1,
        agent: AgentName::parse("dut-01").unwrap(),
    });
    let call = rpc.call::<_, SchedulerReply>("anywhere", &request, Duration::from_millis(300));
    // Far longer than the call's own timeout: without the bound it waits for a broker forever.
    let outcome = tokio::time::timeout(Duration::from_secs(30), call).await;
    match outcome {
        Ok(Err(RpcError::Timeout(t))) => assert_eq!(t, Duration::from_millis(300)),
        Ok(other) => panic!("expected a timeout, got {other:?}"),
        Err(_) => panic!("the call outlived its timeout waiting for the broker"),
    }
}

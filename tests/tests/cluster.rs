//! RabbitMQ as a cluster: three nodes of the machine's `rabbitmq-server`, the lab given every
//! node's URL and declaring the queues that need no priority as quorum queues, and nodes
//! stopped one after the other under load. The cluster takes long to start: one test uses it.

use flinger_tests::private_broker::{PrivateBroker, PrivateCluster};
use flinger_tests::{AgentSpec, Lab, eventually, invariants};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

const CLASS: &str = "cluster";

fn job(label: &str) -> Value {
    json!({"job_queue": CLASS, "test_data": {"test_cmds": label, "fake": {"duration": "700ms", "output": [label]}}})
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// `name → type` of the lab's queues, as `node` lists them.
fn queue_types(node: &PrivateBroker, namespace: &str) -> Vec<(String, String)> {
    let out = node
        .ctl_output(&["list_queues", "name", "type", "--formatter", "json"])
        .expect("list_queues");
    let list: Vec<Value> = serde_json::from_str(&out).expect("list_queues JSON");
    let mut types: Vec<(String, String)> = list
        .iter()
        .filter_map(|q| Some((q["name"].as_str()?.to_owned(), q["type"].as_str()?.to_owned())))
        .filter(|(name, _)| name.starts_with(namespace))
        .collect();
    types.sort();
    types
}

/// How many of `ids` are complete now.
async fn completed(lab: &Lab, ids: &[Uuid]) -> usize {
    let mut n = 0;
    for id in ids {
        if lab.info(*id).await.is_some_and(|i| i["state"] == "complete") {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_node_cluster_loses_and_repeats_no_job_when_its_nodes_stop_one_after_another() {
    let cluster = std::sync::Arc::new(blocking(|| PrivateCluster::start(3)).await);
    let mut builder = Lab::builder()
        .name("cluster")
        .broker(&cluster.urls())
        .quorum_queues()
        .schedulers(2)
        .scheduler_arg("--lease-secs", "12")
        .scheduler_arg("--renew-secs", "1");
    for i in 0..3 {
        builder = builder.agent(AgentSpec::fake(&format!("c{i}"), &[CLASS]));
    }
    let mut lab = builder.start().await;
    let names = lab.names.clone();
    let class_queue = names.class_queue(&broker_schema::DeviceClass::parse(CLASS).expect("class"));

    // The queues that need no priority are quorum queues; the class queue stays classic, and so
    // do each gateway's web UI queue (exclusive to its connection, which quorum queues cannot be).
    let types = queue_types(&cluster.nodes[0], names.namespace());
    let ui_queue = names.gateway_ui_queue("");
    for (name, kind) in &types {
        let expected =
            if *name == class_queue || *name == names.gateway_events_queue() || name.starts_with(&ui_queue) {
                "classic"
            } else {
                "quorum"
            };
        assert_eq!(kind, expected, "{name}: {types:?}");
    }
    assert!(
        types.iter().any(|(n, _)| *n == names.scheduler_rpc_queue()),
        "{types:?}"
    );

    // First a node that does not hold the class queue, then the one that does.
    let home = cluster.home_of(&class_queue).expect("the class queue's node");
    let other = (home + 1) % 3;

    // Each job's test prints its label.
    let mut labels = std::collections::HashMap::new();
    let submit = async |lab: &Lab, labels: &mut std::collections::HashMap<Uuid, String>, label: String| {
        let id = lab.submit(&job(&label)).await;
        labels.insert(id, label);
        id
    };
    let mut ids = vec![];
    for i in 0..9 {
        ids.push(submit(&lab, &mut labels, format!("before {i}")).await);
    }
    eventually(Duration::from_secs(60), "a few jobs to finish", || async {
        (completed(&lab, &ids).await >= 2).then_some(())
    })
    .await;
    let c = cluster.clone();
    blocking(move || c.nodes[other].down()).await;
    // The lab goes on on the other two nodes: jobs queued before finish, new ones are taken.
    for i in 0..4 {
        ids.push(submit(&lab, &mut labels, format!("while {other} is down {i}")).await);
    }
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(90)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.log_tails(40));
    }
    let c = cluster.clone();
    blocking(move || {
        c.nodes[other].up();
        c.wait_running(&c.nodes[home], 3);
    })
    .await;

    // Now the class queue's node, with jobs queued and running.
    let mut queued = vec![];
    for i in 0..8 {
        queued.push(submit(&lab, &mut labels, format!("queued {i}")).await);
    }
    let c = cluster.clone();
    blocking(move || c.nodes[home].down()).await;
    // Accepted while the class queue is away: the queue drops these, the store has them.
    let mut during = vec![];
    for i in 0..3 {
        during.push(submit(&lab, &mut labels, format!("while the class queue is down {i}")).await);
    }
    let c = cluster.clone();
    blocking(move || {
        c.nodes[home].up();
        c.wait_running(&c.nodes[other], 3);
    })
    .await;
    ids.extend(&queued);
    ids.extend(&during);
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.log_tails(40));
    }
    invariants::check(&lab.store, &ids).await;
    // The jobs accepted while their class queue was away ran because a scheduler published them
    // again from the store: either it saw the queue hold fewer jobs than the store has waiting
    // (the queue dropped their messages), or the outbox found them never published (the
    // gateway could not reach the broker at all while the node was down: services declaring
    // the topology are refused while a classic queue's home node is away).
    let schedulers: String = lab.schedulers.iter().map(|p| p.log_text()).collect();
    assert!(
        schedulers.contains("the class queue holds fewer jobs than wait for it")
            || schedulers.contains("job not seen on the broker; published it again"),
        "{}",
        lab.log_tails(40)
    );
    // Each ran its commands once (the invariants showed no two attempts ran at once).
    for id in &ids {
        let output = lab.output(*id).await;
        let label = &labels[id];
        let runs = output.lines().filter(|l| l == label).count();
        assert_eq!(runs, 1, "{label:?} in {output:?}");
    }
    // Every process is the one started at first: each reconnected by itself.
    for p in lab.schedulers.iter_mut().chain(lab.agents.iter_mut()) {
        assert!(p.is_running(), "{} exited", p.name);
    }
    let logs = lab.logs();
    assert!(
        logs.contains("reconnected to the broker"),
        "no process had to reconnect:\n{}",
        lab.log_tails(40)
    );
    lab.stop().await;
}

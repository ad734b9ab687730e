//! RabbitMQ nodes of a test's own, on their own ports, so that a test can stop and restart the
//! broker without disturbing tests that share the machine's broker: one node
//! ([`PrivateBroker`]), or a cluster of several ([`PrivateCluster`]). The nodes run Debian's
//! `rabbitmq-server` as the `rabbitmq` user, whose Erlang cookie they all share.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivateBroker {
    pub port: u16,
    /// The Erlang node name, `flinger-<id>@localhost`.
    pub node: String,
    dir: PathBuf,
    dist_port: u16,
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts connections.
    pub fn start() -> PrivateBroker {
        let broker = PrivateBroker::create();
        broker.up();
        broker
    }

    /// A node's directories and configuration, not started.
    fn create() -> PrivateBroker {
        let port = crate::free_port();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("flinger-rmq-{}", &id[..10]));
        std::fs::create_dir_all(dir.join("mnesia")).expect("mnesia dir");
        std::fs::create_dir_all(dir.join("log")).expect("log dir");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins");
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n"),
        )
        .expect("config");
        // The server runs as the rabbitmq user.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        PrivateBroker {
            port,
            node: format!("flinger-{}@localhost", &id[..10]),
            dir,
            dist_port: crate::free_port(),
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// `rabbitmqctl -n <this node> ARGS`; panics unless it succeeds.
    pub fn ctl(&self, args: &[&str]) {
        let status = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .status()
            .expect("rabbitmqctl");
        assert!(status.success(), "rabbitmqctl {args:?} on {} failed", self.node);
    }

    /// `rabbitmqctl -n <this node> ARGS`'s output; `None` when it fails.
    pub fn ctl_output(&self, args: &[&str]) -> Option<String> {
        let out = self
            .command("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    }

    /// Starts the node (again) and waits for its listener.
    pub fn up(&self) {
        let status = self
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !port_open(self.port) {
            assert!(
                Instant::now() < deadline,
                "private broker did not start; see {}",
                self.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node (its durable queues and persistent messages survive) and waits until
    /// its listener is gone.
    pub fn down(&self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while port_open(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The process ids of the Erlang VMs running `node` (started with its `RABBITMQ_NODENAME`).
fn beams_of(node: &str) -> Vec<i32> {
    let wanted = format!("RABBITMQ_NODENAME={node}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let is_beam = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("beam"));
            is_beam
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|e| String::from_utf8_lossy(&e).split('\0').any(|v| v == wanted))
        })
        .collect()
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.down();
        // A node that did not stop (hung, or stopped answering rabbitmqctl) is killed: no VM
        // of a test outlives it. Only this node's own VMs, by process id.
        for pid in beams_of(&self.node) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ cluster of nodes of a test's own: the first node starts alone, the others join it
/// (`rabbitmqctl join_cluster`). Dropping it stops every node and removes their directories.
pub struct PrivateCluster {
    pub nodes: Vec<PrivateBroker>,
}

impl PrivateCluster {
    /// Starts `n` nodes and clusters them; waits until every node runs and sees the others.
    pub fn start(n: usize) -> PrivateCluster {
        assert!(n >= 1);
        let nodes: Vec<PrivateBroker> = (0..n).map(|_| PrivateBroker::create()).collect();
        // Boot all at once (each boot takes seconds), then join one by one.
        std::thread::scope(|s| {
            for node in &nodes {
                s.spawn(|| node.up());
            }
        });
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", &nodes[0].node]);
            node.ctl(&["start_app"]);
        }
        let cluster = PrivateCluster { nodes };
        for node in &cluster.nodes {
            node.ctl(&["await_startup"]);
            cluster.wait_running(node, n);
        }
        cluster
    }

    /// Every node's URL, comma-separated: what `--broker-url` takes for a cluster.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",")
    }

    /// Waits until `node` says `running` nodes of the cluster run.
    pub fn wait_running(&self, node: &PrivateBroker, running: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = node
                .ctl_output(&["cluster_status", "--formatter", "json"])
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            let seen = status
                .as_ref()
                .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
                .unwrap_or(0);
            if seen == running {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} sees {seen} running nodes, not {running}: {status:?}",
                node.node
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The index of the node a classic queue lives on (each node lists its own, `--local`).
    pub fn home_of(&self, queue: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.ctl_output(&["list_queues", "--local", "name", "--formatter", "json"])
                .and_then(|out| serde_json::from_str::<serde_json::Value>(&out).ok())
                .and_then(|list| list.as_array().map(|l| l.iter().any(|q| q["name"] == queue)))
                .unwrap_or(false)
        })
    }
}

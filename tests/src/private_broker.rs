//! A RabbitMQ node of a test's own, on its own port, so that a test can stop and restart the
//! broker without disturbing tests that share the machine's broker.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct PrivateBroker {
    pub port: u16,
    node: String,
    dir: PathBuf,
    dist_port: u16,
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

impl PrivateBroker {
    /// Starts a node and waits until it accepts connections.
    pub fn start() -> PrivateBroker {
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
        let broker = PrivateBroker {
            port,
            node: format!("flinger-{}@localhost", &id[..10]),
            dir,
            dist_port: crate::free_port(),
        };
        broker.up();
        broker
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
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
        let deadline = Instant::now() + Duration::from_secs(60);
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

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

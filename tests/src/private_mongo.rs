//! A MongoDB stand-in of a test's own, on its own port and keeping its data on disk, so a test
//! can stop and restart the database without disturbing other tests.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivateMongo {
    pub port: u16,
    data: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mongo-standin/standin")
}

impl PrivateMongo {
    pub fn start() -> PrivateMongo {
        let port = crate::free_port();
        let m = PrivateMongo {
            port,
            data: tempfile::tempdir().expect("data dir"),
        };
        m.up();
        m
    }

    /// The store URL for a database on this server.
    pub fn store_url(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }

    pub fn up(&self) {
        let status = Command::new(script())
            .args(["start", "--port", &self.port.to_string(), "--data-dir"])
            .arg(self.data.path())
            .status()
            .expect("standin");
        assert!(status.success(), "cannot start the MongoDB stand-in");
    }

    pub fn down(&self) {
        let _ = Command::new(script())
            .args(["stop", "--port", &self.port.to_string()])
            .status();
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        self.down();
    }
}

//! A "device" for tests: an sshd of the test's own on a free loopback port, with its own host
//! key and authorized keys. Shared by the `ssh` connector's tests and the agent's end-to-end
//! test (which includes this file by path), so it uses nothing of either crate.
//!
//! Needs OpenSSH's server (`/usr/sbin/sshd`, Debian's `openssh-server`; it need not be running)
//! and root, which sshd needs to log anyone in. Without sshd, [`Device::start`] says the test is
//! skipped; with `FLINGER_REQUIRE_SSHD=1` it fails instead.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";

/// A "device": an sshd of our own on 127.0.0.1 that lets root in with the test's client key.
pub struct Device {
    pub dir: TempDir,
    pub port: u16,
    sshd: Child,
    /// The private key that logs in as root.
    pub client_key: PathBuf,
    /// The server's public host key (`ssh-ed25519 AAAA… comment`).
    pub host_key: String,
    /// A second `AuthorizedKeysFile` of the sshd, inside a directory that does not exist yet:
    /// where the tests have reserve install keys (rather than root's real home).
    pub reserved_keys: PathBuf,
}

impl Device {
    /// Starts the device, or says the test is skipped and returns `None` when sshd is absent.
    pub fn start() -> Option<Device> {
        if !Path::new(SSHD).exists() {
            if std::env::var_os("FLINGER_REQUIRE_SSHD").is_some() {
                panic!("{SSHD} is absent and FLINGER_REQUIRE_SSHD is set: install openssh-server");
            }
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {SSHD} is absent; install openssh-server to run the ssh connector tests"
            );
            return None;
        }
        // sshd refuses to start without its privilege separation directory.
        if !Path::new("/run/sshd").is_dir() {
            std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
            std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let host_key = keygen(&dir.path().join("host_key"));
        let client_key = dir.path().join("client_key");
        let client_pub = keygen(&client_key);
        std::fs::write(dir.path().join("client_authorized_keys"), client_pub).unwrap();
        let reserved_keys = dir.path().join("home/.ssh/authorized_keys");
        for _ in 0..5 {
            let port = free_port();
            if let Some(sshd) = start_sshd(dir.path(), port, &reserved_keys) {
                return Some(Device {
                    dir,
                    port,
                    sshd,
                    client_key,
                    host_key,
                    reserved_keys,
                });
            }
        }
        panic!(
            "sshd did not start; see {}",
            dir.keep().join("sshd.log").display()
        );
    }

    /// Whether `key` logs in to the device, as the reserving person would.
    pub async fn logs_in_with(&self, key: &Path) -> bool {
        let out = tokio::process::Command::new("ssh")
            .args(["-T", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(key)
            .args(["-p", &self.port.to_string(), "root@127.0.0.1", "echo logged-in"])
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("logged-in")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// Generates an ed25519 key pair at `path`; returns the public key.
pub fn keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "flinger-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `sshd -D` on `port`; `None` if it could not listen there.
fn start_sshd(dir: &Path, port: u16, reserved_keys: &Path) -> Option<Child> {
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/client_authorized_keys {reserved}\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel VERBOSE\n",
            d = dir.display(),
            reserved = reserved_keys.display(),
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let mut child = Command::new(SSHD)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sshd starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server listening")
        {
            return Some(child);
        }
        if child.try_wait().unwrap().is_some() {
            return None; // the port was taken meanwhile
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

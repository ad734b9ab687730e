//! The `ssh` connector against a real sshd on this machine, started per test on a free
//! loopback port with its own host key and authorized keys.
//!
//! Needs OpenSSH's server (`/usr/sbin/sshd`, Debian's `openssh-server`; it need not be running)
//! and root, which sshd needs to log anyone in. Without sshd the device tests say they were
//! skipped; with `FLINGER_REQUIRE_SSHD=1` they fail instead.

mod common;

use broker_schema::Phase;
use common::sshd::{Device, free_port, keygen};
use common::*;
use flinger_connectors::ssh::{HostKeyPolicy, KnownHosts, RESERVATION_RECORD};
use flinger_connectors::{
    Connector, ConnectorConfig, PhaseContext, RECOVERY_FAILED_EXIT, SSH_KEYS_FILE_ENV, SshConfig,
    SshConnector,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The connector's side of the test device.
trait Connected {
    fn config(&self) -> SshConfig;
    fn connector(&self) -> Arc<SshConnector>;
}

impl Connected for Device {
    /// The connector's settings for this device, with short timings for tests.
    fn config(&self) -> SshConfig {
        let mut c = SshConfig::new("127.0.0.1");
        c.port = self.port;
        c.user = "root".into();
        c.identity_file = Some(self.client_key.clone());
        c.provision_timeout = Duration::from_secs(5);
        c.connect_timeout = Duration::from_secs(5);
        c.kill_grace = Duration::from_secs(1);
        c.authorized_keys = self.reserved_keys.display().to_string();
        c
    }

    fn connector(&self) -> Arc<SshConnector> {
        Arc::new(SshConnector::new(self.config()).expect("a valid config"))
    }
}

fn test_job(cmds: &str) -> RunDir {
    RunDir::new(job(serde_json::json!({
        "job_queue": "ssh-class",
        "test_data": {"test_cmds": cmds},
    })))
}

/// Live processes whose command line contains `token`, with their names.
fn processes_mentioning(token: &str) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline).contains(token).then(|| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                (pid, comm.trim().to_string())
            })
        })
        .collect()
}

fn with_env(mut ctx: PhaseContext, vars: &[(&str, &str)]) -> PhaseContext {
    for (k, v) in vars {
        ctx.env.insert(k.to_string(), v.to_string());
    }
    ctx
}

// ---- configuration ----

#[test]
fn the_config_reads_from_yaml_with_defaults_and_refuses_unknown_keys() {
    let config: ConnectorConfig = serde_yaml_ng::from_str(
        "type: ssh\nhost: 10.0.0.7\nuser: tester\nenv: {RETRIES: 3, NAME: x}\nkill_grace: 3\n\
         known_hosts: {policy: accept-new, file: /var/lib/flinger/known_hosts}\n\
         options: [ProxyJump=bastion]\n",
    )
    .unwrap();
    let ConnectorConfig::Ssh(c) = &config else {
        panic!("{config:?}")
    };
    assert_eq!(c.host, "10.0.0.7");
    assert_eq!(c.port, 22);
    assert_eq!(c.reserve_user(), "tester", "reserve_user defaults to user");
    assert_eq!(c.env["RETRIES"], "3");
    assert_eq!(c.kill_grace, Duration::from_secs(3));
    assert_eq!(c.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.authorized_keys, "%h/.ssh/authorized_keys");
    assert_eq!(c.known_hosts.policy, HostKeyPolicy::AcceptNew);

    let connector = config.build().unwrap();
    assert_eq!(connector.kind(), "ssh");
    assert_eq!(connector.device_ip().as_deref(), Some("10.0.0.7"));
    for phase in Phase::ALL {
        let expected = matches!(
            phase,
            Phase::Provision | Phase::Test | Phase::Reserve | Phase::Cleanup
        );
        assert_eq!(connector.supports(phase), expected, "{phase}");
    }

    let unknown = serde_yaml_ng::from_str::<ConnectorConfig>("type: ssh\nhost: h\nhostname: h\n");
    assert!(unknown.unwrap_err().to_string().contains("hostname"));
}

#[test]
fn a_bad_config_is_refused_when_the_connector_is_built() {
    let refused = |tweak: fn(&mut SshConfig)| {
        let mut c = SshConfig::new("10.0.0.7");
        tweak(&mut c);
        SshConnector::new(c).unwrap_err().to_string()
    };
    assert!(refused(|c| c.host = "-oProxyCommand=x".into()).contains("host"));
    assert!(refused(|c| c.reserve_user = Some("a b".into())).contains("reserve_user"));
    assert!(refused(|c| c.identity_file = Some("/nonexistent/key".into())).contains("identity_file"));
    assert!(
        refused(|c| c.known_hosts = KnownHosts {
            policy: HostKeyPolicy::Strict,
            file: None
        })
        .contains("strict")
    );
    assert!(
        refused(|c| {
            c.env.insert("NOT-A-NAME".into(), "x".into());
        })
        .contains("NOT-A-NAME")
    );
    assert!(refused(|c| c.authorized_keys = "relative/%u".into()).contains("authorized_keys"));
}

// ---- provision ----

#[tokio::test]
async fn provision_succeeds_on_a_reachable_device_and_writes_device_info() {
    let Some(device) = Device::start() else { return };
    let run_dir = test_job("true");
    let (outcome, out) = run_ok(&*device.connector(), &run_dir.ctx(Phase::Provision)).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert!(out.contains("the device is reachable"), "{out}");
    assert!(out.contains("Linux"), "uname -a from the device: {out}");

    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.dir.path().join("device-info.json")).unwrap()).unwrap();
    assert_eq!(
        info,
        serde_json::json!({"device_info": {"device_ip": "127.0.0.1", "agent_name": "test-agent-1"}})
    );
    // accept-new without a file pins the key in the run directory.
    let known = std::fs::read_to_string(run_dir.dir.path().join("known_hosts")).unwrap();
    let key_blob = device.host_key.split_whitespace().nth(1).unwrap();
    assert!(known.contains(key_blob), "{known}");
}

#[tokio::test]
async fn provision_fails_within_its_timeout_on_a_closed_port() {
    let run_dir = test_job("true");
    let mut config = SshConfig::new("127.0.0.1");
    config.port = free_port(); // nothing listens there
    config.provision_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    let connector = SshConnector::new(config).unwrap();

    let started = Instant::now();
    let (outcome, out) = run_ok(&connector, &run_dir.ctx(Phase::Provision)).await;
    let took = started.elapsed();
    assert_eq!(outcome.exit_code, RECOVERY_FAILED_EXIT, "{out}");
    assert!(outcome.detail.unwrap().contains("unreachable"));
    assert!(
        out.contains("Connection refused"),
        "ssh's own error is shown: {out}"
    );
    assert!(out.contains("retrying"), "{out}");
    assert!(
        took >= Duration::from_secs(2),
        "it retried until the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "and then gave up: {took:?}");
}

#[tokio::test]
async fn strict_host_key_checking_accepts_the_known_key_and_refuses_any_other() {
    let Some(device) = Device::start() else { return };
    let known_hosts = device.dir.path().join("known_hosts");
    let strict = |file: &Path| {
        let mut c = device.config();
        c.provision_timeout = Duration::ZERO;
        c.known_hosts = KnownHosts {
            policy: HostKeyPolicy::Strict,
            file: Some(file.to_path_buf()),
        };
        SshConnector::new(c).unwrap()
    };
    let run_dir = test_job("true");

    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}", device.port, device.host_key),
    )
    .unwrap();
    let (outcome, out) = run_ok(&strict(&known_hosts), &run_dir.ctx(Phase::Provision)).await;
    assert_eq!(outcome.exit_code, 0, "{out}");

    let other = keygen(&device.dir.path().join("other_host_key"));
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{} {other}", device.port)).unwrap();
    let (outcome, out) = run_ok(&strict(&known_hosts), &run_dir.ctx(Phase::Provision)).await;
    assert_eq!(outcome.exit_code, RECOVERY_FAILED_EXIT, "{out}");
    assert!(out.contains("Host key verification failed"), "{out}");
}

// ---- test ----

#[tokio::test]
async fn test_output_streams_before_the_remote_command_ends() {
    let Some(device) = Device::start() else { return };
    let run_dir = test_job("printf first; sleep 2; printf second");
    let connector = device.connector();
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let task = tokio::spawn(async move { connector.run_phase(&ctx, &sink, CancellationToken::new()).await });

    let first = read_until(&mut rx, "first").await;
    assert_eq!(first, "first", "no newline needed: bytes arrive as written");
    assert!(!task.is_finished(), "the remote command is still running");
    assert_eq!(read_until(&mut rx, "second").await, "second");
    assert_eq!(task.await.unwrap().unwrap().exit_code, 0);
}

#[tokio::test]
async fn test_merges_stderr_in_order_and_returns_the_remote_exit_code() {
    let Some(device) = Device::start() else { return };
    let connector = device.connector();
    let run_dir = test_job("echo out1; echo err1 >&2; echo out2; echo err2 >&2\nexit 3");
    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Test)).await;
    assert_eq!(out, "out1\nerr1\nout2\nerr2\n");
    assert_eq!(outcome.exit_code, 3);

    for (cmds, code) in [("true", 0), ("exit 46", 46), ("no-such-command-xyz", 127)] {
        let (outcome, _) = run_ok(&*connector, &test_job(cmds).ctx(Phase::Test)).await;
        assert_eq!(outcome.exit_code, code, "{cmds}");
    }
}

#[tokio::test]
async fn test_commands_see_device_ip_and_the_environment_whatever_the_values() {
    let Some(device) = Device::start() else { return };
    let awkward = r#"it's "quoted" $HOME `id` \n back\slash; $(echo no) *"#;
    let mut config = device.config();
    config.env.insert("FROM_CONFIG".into(), "two  spaces".into());
    config.env.insert("OVERRIDDEN".into(), "by config".into());
    let connector = SshConnector::new(config).unwrap();
    let run_dir =
        test_job(r#"printf '[%s]\n' "$DEVICE_IP" "$FROM_CONFIG" "$AWKWARD" "$MULTI" "$OVERRIDDEN""#);
    let ctx = with_env(
        run_dir.ctx(Phase::Test),
        &[
            ("AWKWARD", awkward),
            ("MULTI", "line one\nline two"),
            ("OVERRIDDEN", "by the job"),
            ("not-exportable", "skipped"),
        ],
    );
    let (outcome, out) = run_ok(&connector, &ctx).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert_eq!(
        out,
        format!("[127.0.0.1]\n[two  spaces]\n[{awkward}]\n[line one\nline two]\n[by the job]\n")
    );
}

#[tokio::test]
async fn cancel_kills_the_local_ssh_and_the_remote_command() {
    let Some(device) = Device::start() else { return };
    let token = format!("token-{}", Uuid::new_v4());
    // `exec` keeps the pid: the printed pid is the remote sleep's.
    let run_dir = test_job(&format!(": {token}; echo pid $$; exec sleep 300"));
    let connector = device.connector();
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.run_phase(&ctx, &sink, cancel).await }
    });

    let out = read_until(&mut rx, "\n").await;
    let remote_pid: i32 = out.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    assert!(alive(remote_pid));
    let before = processes_mentioning(&token);
    assert!(
        before.iter().any(|(_, comm)| comm == "ssh"),
        "the local ssh carries the command: {before:?}"
    );
    assert!(
        before.iter().any(|(_, comm)| comm == "sh"),
        "the remote wrapper runs on the device: {before:?}"
    );

    let started = Instant::now();
    cancel.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the phase stops promptly")
        .unwrap()
        .unwrap();
    assert!(outcome.exit_code < 0, "killed locally: {outcome:?}");
    assert!(outcome.detail.unwrap().contains("cancelled"));
    assert!(started.elapsed() < Duration::from_secs(5));

    eventually("the remote command is killed", || !alive(remote_pid)).await;
    eventually("nothing of the phase runs locally or on the device", || {
        processes_mentioning(&token).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_lost_lease_kills_the_remote_commands_at_once_not_after_the_grace() {
    let Some(device) = Device::start() else { return };
    let token = format!("token-{}", Uuid::new_v4());
    // The remote commands ignore SIGTERM; the watcher's grace is longer than the test may take.
    let run_dir = test_job(&format!(
        ": {token}; trap '' TERM; echo pid $$; while :; do sleep 0.1; done"
    ));
    let mut config = device.config();
    config.kill_grace = Duration::from_secs(120);
    let connector = Arc::new(SshConnector::new(config).unwrap());
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let (cancel, kill) = (CancellationToken::new(), ctx.kill.clone());
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.run_phase(&ctx, &sink, cancel).await }
    });
    let out = read_until(&mut rx, "\n").await;
    let remote_pid: i32 = out.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    assert!(alive(remote_pid));

    kill.cancel();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the phase stops promptly")
        .unwrap()
        .unwrap();
    eventually(
        "the remote commands are SIGKILLed without waiting for the grace",
        || !alive(remote_pid),
    )
    .await;
    eventually("nothing of the phase runs locally or on the device", || {
        processes_mentioning(&token).is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_background_process_left_by_the_test_commands_is_stopped_with_them() {
    let Some(device) = Device::start() else { return };
    let run_dir = test_job("sleep 300 & echo bg $!; echo done");
    let started = Instant::now();
    let (outcome, out) = run_ok(&*device.connector(), &run_dir.ctx(Phase::Test)).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the background sleep does not hold the session open"
    );
    let bg: i32 = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("bg ")
        .unwrap()
        .parse()
        .unwrap();
    eventually("the background process is stopped", || !alive(bg)).await;
}

// ---- reserve and cleanup ----

#[tokio::test]
async fn a_reservation_installs_keys_that_log_in_and_cleanup_removes_them() {
    let Some(device) = Device::start() else { return };
    let connector = device.connector();
    let run_dir = test_job("true");
    let person_key = device.dir.path().join("person_key");
    let person_pub = keygen(&person_key);
    assert!(
        !device.logs_in_with(&person_key).await,
        "not before the reservation"
    );

    let keys_file = run_dir.dir.path().join("authorized_keys");
    std::fs::write(&keys_file, &person_pub).unwrap();
    let ctx = with_env(
        run_dir.ctx(Phase::Reserve),
        &[(SSH_KEYS_FILE_ENV, keys_file.to_str().unwrap())],
    );
    let (outcome, out) = run_ok(&*connector, &ctx).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert!(
        out.contains(&format!("ssh root@127.0.0.1 -p {}", device.port)),
        "{out}"
    );
    assert!(run_dir.dir.path().join(RESERVATION_RECORD).exists());

    let ssh_dir = device.reserved_keys.parent().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(ssh_dir), 0o700, "the directory reserve created");
    assert_eq!(mode(&device.reserved_keys), 0o600, "the file reserve created");
    assert!(
        device.logs_in_with(&person_key).await,
        "the reservation's key is usable"
    );

    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Cleanup)).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert!(out.contains("removed 1 key"), "{out}");
    assert_eq!(std::fs::read_to_string(&device.reserved_keys).unwrap(), "");
    assert!(!device.logs_in_with(&person_key).await, "not after cleanup");
}

#[tokio::test]
async fn reserve_adds_no_duplicates_and_cleanup_removes_only_what_it_added() {
    let Some(device) = Device::start() else { return };
    let connector = device.connector();
    let run_dir = test_job("true");
    let permanent = keygen(&device.dir.path().join("permanent_key"));
    let person = keygen(&device.dir.path().join("person_key"));
    // The device already trusts one key (no newline at the end of its file).
    std::fs::create_dir_all(device.reserved_keys.parent().unwrap()).unwrap();
    std::fs::write(&device.reserved_keys, permanent.trim_end()).unwrap();

    let keys_file = run_dir.dir.path().join("authorized_keys");
    std::fs::write(
        &keys_file,
        format!("{permanent}{person}# a comment\n\n{person}not a key\n"),
    )
    .unwrap();
    let ctx = with_env(
        run_dir.ctx(Phase::Reserve),
        &[(SSH_KEYS_FILE_ENV, keys_file.to_str().unwrap())],
    );
    for _ in 0..2 {
        let (outcome, out) = run_ok(&*connector, &ctx).await;
        assert_eq!(outcome.exit_code, 0, "{out}");
        assert!(out.contains("not a public key"), "{out}");
    }
    let installed = std::fs::read_to_string(&device.reserved_keys).unwrap();
    let blob = |k: &str| k.split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(installed.matches(&blob(&permanent)).count(), 1, "{installed}");
    assert_eq!(installed.matches(&blob(&person)).count(), 1, "{installed}");
    assert_eq!(installed.lines().count(), 2, "{installed}");

    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Cleanup)).await;
    assert_eq!(outcome.exit_code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(&device.reserved_keys).unwrap(),
        format!("{}\n", permanent.trim_end()),
        "the key the device had before stays"
    );
}

#[tokio::test]
async fn without_keys_reserve_says_how_to_connect_and_cleanup_touches_nothing() {
    // No device needed: neither phase connects.
    let mut config = SshConfig::new("192.0.2.1");
    config.reserve_user = Some("person".into());
    let connector = SshConnector::new(config).unwrap();
    let run_dir = test_job("true");

    let (outcome, out) = run_ok(&connector, &run_dir.ctx(Phase::Reserve)).await;
    assert_eq!(outcome.exit_code, 0);
    assert!(out.contains("ssh person@192.0.2.1 -p 22"), "{out}");

    let (outcome, out) = run_ok(&connector, &run_dir.ctx(Phase::Cleanup)).await;
    assert_eq!(outcome.exit_code, 0);
    assert!(out.contains("nothing to clean up"), "{out}");
}

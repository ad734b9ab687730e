//! The `command` connector against real processes.

mod common;

use broker_schema::Phase;
use common::*;
use flinger_connectors::{CommandConfig, CommandConnector, Connector, ConnectorError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn connector_with(
    phase: Phase,
    command: &str,
    tweak: impl FnOnce(&mut CommandConfig),
) -> Arc<CommandConnector> {
    let mut config = CommandConfig::default();
    config.set_command(phase, command);
    tweak(&mut config);
    Arc::new(CommandConnector::new(config).expect("a valid config"))
}

fn test_command(command: &str) -> Arc<CommandConnector> {
    connector_with(Phase::Test, command, |_| {})
}

/// Pids printed by a command as `pids <leader> <background child>`.
fn parse_pids(out: &str) -> (i32, i32) {
    let line = out
        .lines()
        .find(|l| l.starts_with("pids "))
        .expect("the pids line");
    let mut it = line.split_whitespace().skip(1).map(|p| p.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

#[tokio::test]
async fn output_is_streamed_before_the_command_exits() {
    let run_dir = RunDir::new(minimal_job());
    let connector = test_command("printf first; sleep 3; printf second");
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let task = tokio::spawn(async move { connector.run_phase(&ctx, &sink, CancellationToken::new()).await });

    // No newline after "first": bytes are forwarded as they arrive, not line by line.
    let first = read_until(&mut rx, "first").await;
    assert_eq!(first, "first");
    assert!(
        !task.is_finished(),
        "the first bytes arrived while the command was still running"
    );

    let rest = read_until(&mut rx, "second").await;
    assert_eq!(rest, "second");
    assert_eq!(task.await.unwrap().unwrap().exit_code, 0);
}

#[tokio::test]
async fn stdout_and_stderr_are_merged_in_the_order_written() {
    let run_dir = RunDir::new(minimal_job());
    let connector = test_command("echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo out3");
    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Test)).await;
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(out, "out1\nerr1\nout2\nerr2\nout3\n");
}

#[tokio::test]
async fn the_exit_code_is_reported_and_a_signal_death_is_negative() {
    let run_dir = RunDir::new(minimal_job());
    for (command, code) in [
        ("true", 0),
        ("exit 3", 3),
        ("exit 46", 46),
        ("kill -9 $$", -9),
        ("kill -15 $$", -15),
    ] {
        let (outcome, _) = run_ok(&*test_command(command), &run_dir.ctx(Phase::Test)).await;
        assert_eq!(outcome.exit_code, code, "{command}");
        assert_eq!(outcome.detail, None, "{command}");
    }
}

#[tokio::test]
async fn the_command_runs_in_the_run_directory_and_can_read_the_job() {
    let job = job(serde_json::json!({"job_queue": "rpi4b", "test_data": {"test_cmds": ["uname -a"]}}));
    let run_dir = RunDir::new(job);
    let (outcome, out) = run_ok(
        &*test_command("pwd -P; cat testflinger.json"),
        &run_dir.ctx(Phase::Test),
    )
    .await;
    assert_eq!(outcome.exit_code, 0);
    let (pwd, json) = out.split_once('\n').unwrap();
    assert_eq!(pwd, run_dir.dir.path().canonicalize().unwrap().to_str().unwrap());
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(doc["job_queue"], "rpi4b");
    assert_eq!(doc["job_id"], run_dir.job_id.to_string());
}

#[tokio::test]
async fn the_environment_is_the_agents_then_the_configs_then_the_phases() {
    let run_dir = RunDir::new(minimal_job());
    let connector = connector_with(Phase::Test, r#"echo "$PATH|$HOME|$A|$B|$DEVICE_IP""#, |c| {
        c.env.insert("HOME".into(), "/from-config".into());
        c.env.insert("A".into(), "config-a".into());
        c.env.insert("B".into(), "config-b".into());
    });
    let mut ctx = run_dir.ctx(Phase::Test);
    ctx.env.insert("B".into(), "phase-b".into());
    ctx.env.insert("DEVICE_IP".into(), "10.1.2.3".into());
    let (_, out) = run_ok(&*connector, &ctx).await;
    let path = std::env::var("PATH").unwrap();
    assert_eq!(out, format!("{path}|/from-config|config-a|phase-b|10.1.2.3\n"));
}

#[tokio::test]
async fn non_utf8_output_is_passed_through_as_bytes() {
    let run_dir = RunDir::new(minimal_job());
    let (result, out) = run(
        &*test_command(r"printf '\377\376abc\n'"),
        &run_dir.ctx(Phase::Test),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(result.unwrap().exit_code, 0);
    assert_eq!(out, b"\xff\xfeabc\n");
}

#[tokio::test]
async fn large_output_reaches_a_small_sink_completely() {
    let run_dir = RunDir::new(minimal_job());
    let connector = test_command("head -c 3000000 /dev/zero | tr '\\0' x; echo; echo end >&2");
    let (sink, mut rx) = sink(1);
    let ctx = run_dir.ctx(Phase::Test);
    let task = tokio::spawn(async move { connector.run_phase(&ctx, &sink, CancellationToken::new()).await });
    let mut all = vec![];
    while let Some(chunk) = rx.recv().await {
        all.extend_from_slice(&chunk);
        tokio::task::yield_now().await; // a consumer slower than the producer
    }
    assert_eq!(task.await.unwrap().unwrap().exit_code, 0);
    assert_eq!(all.len(), 3_000_000 + "\nend\n".len());
    assert!(all[..3_000_000].iter().all(|b| *b == b'x'));
    assert!(all.ends_with(b"\nend\n"));
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let run_dir = RunDir::new(minimal_job());
    let connector = test_command(r#"sleep 1000 & echo "pids $$ $!"; wait"#);
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.run_phase(&ctx, &sink, cancel).await }
    });
    let (leader, background) = parse_pids(&read_until(&mut rx, "\n").await);
    assert!(alive(background));

    cancel.cancel();
    let outcome = task.await.unwrap().unwrap();
    assert_eq!(outcome.exit_code, -15);
    assert!(outcome.detail.unwrap().contains("cancelled"));
    eventually("no process of the group survives", || {
        live_group_members(leader).is_empty()
    })
    .await;
    assert!(!alive(background));
}

#[tokio::test]
async fn a_command_ignoring_sigterm_is_killed_after_the_grace() {
    let run_dir = RunDir::new(minimal_job());
    let grace = Duration::from_millis(500);
    let connector = connector_with(
        Phase::Test,
        r#"trap '' TERM; sleep 1000 & echo "pids $$ $!"; while :; do sleep 0.1; done"#,
        |c| c.kill_grace = grace,
    );
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.run_phase(&ctx, &sink, cancel).await }
    });
    let (leader, background) = parse_pids(&read_until(&mut rx, "\n").await);

    let cancelled_at = Instant::now();
    cancel.cancel();
    let outcome = task.await.unwrap().unwrap();
    assert!(cancelled_at.elapsed() >= grace, "SIGKILL waited for the grace");
    assert_eq!(outcome.exit_code, -9);
    assert!(outcome.detail.unwrap().contains("SIGKILL"));
    eventually("no process of the group survives", || {
        live_group_members(leader).is_empty()
    })
    .await;
    assert!(!alive(background));
}

#[tokio::test]
async fn a_lost_lease_kills_the_group_at_once_even_during_a_cancels_grace() {
    let run_dir = RunDir::new(minimal_job());
    // A grace far longer than the test may take: only `kill` can end the phase in time.
    let connector = connector_with(
        Phase::Test,
        r#"trap '' TERM; sleep 1000 & echo "pids $$ $!"; while :; do sleep 0.1; done"#,
        |c| c.kill_grace = Duration::from_secs(600),
    );
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let (cancel, kill) = (CancellationToken::new(), ctx.kill.clone());
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { connector.run_phase(&ctx, &sink, cancel).await }
    });
    let (leader, background) = parse_pids(&read_until(&mut rx, "\n").await);
    cancel.cancel(); // SIGTERM, ignored: the grace starts
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the phase ends without waiting for the grace")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.exit_code, -9);
    assert!(outcome.detail.unwrap().contains("at once"));
    eventually("no process of the group survives", || {
        live_group_members(leader).is_empty()
    })
    .await;
    assert!(!alive(background));
}

#[tokio::test]
async fn variables_the_agent_withholds_do_not_reach_the_command() {
    let run_dir = RunDir::new(minimal_job());
    // HOME is inherited from this process; withholding it must remove it.
    assert!(std::env::var_os("HOME").is_some(), "the test needs HOME set");
    let connector = test_command(r#"echo "[${HOME:-unset}]""#);
    let mut ctx = run_dir.ctx(Phase::Test);
    ctx.env_remove = vec!["HOME".into()];
    let (_, out) = run_ok(&*connector, &ctx).await;
    assert_eq!(out, "[unset]\n");
}

#[tokio::test]
async fn a_background_child_holding_the_output_open_does_not_hang_the_phase() {
    let run_dir = RunDir::new(minimal_job());
    let connector = connector_with(Phase::Test, r#"sleep 1000 & echo "pids $$ $!""#, |c| {
        c.drain_timeout = Duration::from_millis(300)
    });
    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Test)).await;
    assert_eq!(outcome.exit_code, 0);
    assert!(outcome.detail.unwrap().contains("background"));
    let (leader, background) = parse_pids(&out);
    eventually("the background child is killed", || !alive(background)).await;
    assert!(live_group_members(leader).is_empty());
}

#[tokio::test]
async fn a_child_that_left_the_group_and_holds_the_output_does_not_hang_the_phase() {
    let run_dir = RunDir::new(minimal_job());
    // setsid: the child escapes the group, so killing the group cannot close the pipe.
    let connector = connector_with(Phase::Test, r#"setsid sleep 1000 & echo "pids $$ $!""#, |c| {
        c.drain_timeout = Duration::from_millis(200)
    });
    let (outcome, out) = run_ok(&*connector, &run_dir.ctx(Phase::Test)).await;
    let (_, escaped) = parse_pids(&out);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(escaped),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(outcome.exit_code, 0);
}

#[tokio::test]
async fn what_a_finished_command_leaves_in_its_group_is_killed() {
    let run_dir = RunDir::new(minimal_job());
    let (outcome, out) = run_ok(
        &*test_command(r#"sleep 1000 >/dev/null 2>&1 & echo "pids $$ $!""#),
        &run_dir.ctx(Phase::Test),
    )
    .await;
    assert_eq!(outcome.exit_code, 0);
    let (leader, background) = parse_pids(&out);
    eventually("the background child is killed", || !alive(background)).await;
    assert!(live_group_members(leader).is_empty());
}

#[tokio::test]
async fn dropping_a_running_phase_kills_its_process_group() {
    let run_dir = RunDir::new(minimal_job());
    let connector = test_command(r#"sleep 1000 & echo "pids $$ $!"; wait"#);
    let (sink, mut rx) = sink(16);
    let ctx = run_dir.ctx(Phase::Test);
    let task = tokio::spawn(async move { connector.run_phase(&ctx, &sink, CancellationToken::new()).await });
    let (leader, background) = parse_pids(&read_until(&mut rx, "\n").await);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    eventually("no process of the group survives", || {
        live_group_members(leader).is_empty()
    })
    .await;
    assert!(!alive(background));
}

#[tokio::test]
async fn a_phase_cancelled_before_it_starts_runs_nothing() {
    let run_dir = RunDir::new(minimal_job());
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (result, out) = run(&*test_command("touch started"), &run_dir.ctx(Phase::Test), cancel).await;
    assert_eq!(result.unwrap().exit_code, -15);
    assert!(out.is_empty());
    assert!(!run_dir.dir.path().join("started").exists());
}

#[tokio::test]
async fn a_command_that_does_not_exist_cannot_start() {
    let run_dir = RunDir::new(minimal_job());
    let (result, _) = run(
        &*test_command("no-such-device-connector provision -c device.yaml"),
        &run_dir.ctx(Phase::Test),
        CancellationToken::new(),
    )
    .await;
    match result {
        Err(ConnectorError::CannotStart { phase, reason }) => {
            assert_eq!(phase, Phase::Test);
            assert!(reason.contains("no-such-device-connector"), "{reason}");
        }
        other => panic!("expected CannotStart, got {other:?}"),
    }
}

#[tokio::test]
async fn exit_127_from_a_program_that_exists_is_an_ordinary_failure() {
    let run_dir = RunDir::new(minimal_job());
    let (outcome, _) = run_ok(&*test_command("sh -c 'exit 127'"), &run_dir.ctx(Phase::Test)).await;
    assert_eq!(outcome.exit_code, 127);
}

#[tokio::test]
async fn a_missing_run_directory_cannot_start() {
    let run_dir = RunDir::new(minimal_job());
    let mut ctx = run_dir.ctx(Phase::Test);
    ctx.run_dir = run_dir.dir.path().join("gone");
    let (result, _) = run(&*test_command("true"), &ctx, CancellationToken::new()).await;
    assert!(
        matches!(result, Err(ConnectorError::CannotStart { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn only_phases_with_a_command_are_supported() {
    let mut config = CommandConfig::default();
    config
        .set_command(Phase::Provision, "true")
        .set_command(Phase::Test, "true");
    config.set_command(Phase::Cleanup, "   ");
    let connector = CommandConnector::new(config).unwrap();
    for phase in Phase::ALL {
        assert_eq!(
            connector.supports(phase),
            matches!(phase, Phase::Provision | Phase::Test),
            "{phase}"
        );
    }
    let run_dir = RunDir::new(minimal_job());
    let (result, _) = run(&connector, &run_dir.ctx(Phase::Reserve), CancellationToken::new()).await;
    assert!(matches!(
        result,
        Err(ConnectorError::CannotStart {
            phase: Phase::Reserve,
            ..
        })
    ));
}

#[test]
fn an_environment_variable_name_the_os_would_refuse_is_a_config_error() {
    let mut config = CommandConfig::default();
    config.env.insert("A=B".into(), "x".into());
    assert!(matches!(
        CommandConnector::new(config),
        Err(ConnectorError::Config(_))
    ));
}

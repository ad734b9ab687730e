//! The `fake` connector: a simulated device, steered by its config and by the job.

mod common;

use broker_schema::Phase;
use common::*;
use flinger_connectors::{
    Connector, ConnectorError, FakeBehaviour, FakeConfig, FakeConnector, OutputSink, PhaseContext,
};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn fake(config: FakeConfig) -> Arc<FakeConnector> {
    Arc::new(FakeConnector::new(config).unwrap())
}

fn config(yaml: &str) -> FakeConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

async fn run_phase(connector: &FakeConnector, job: serde_json::Value, phase: Phase) -> (i32, String) {
    let (outcome, out) = run_ok(connector, &ctx_for(self::job(job), phase)).await;
    (outcome.exit_code, out)
}

#[tokio::test]
async fn every_phase_succeeds_by_default_and_says_what_it_does() {
    let connector = fake(FakeConfig::default());
    let job = json!({"job_queue": "q"});
    for phase in Phase::ALL {
        let (code, out) = run_phase(&connector, job.clone(), phase).await;
        assert_eq!(code, 0, "{phase}");
        assert!(!out.is_empty() && out.ends_with('\n'), "{phase}: {out:?}");
    }
}

#[tokio::test]
async fn a_thousand_zero_duration_phases_complete() {
    let connector = fake(FakeConfig::default());
    let ctx = ctx_for(minimal_job(), Phase::Setup);
    let (sink, mut rx) = sink(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    for _ in 0..1000 {
        let outcome = connector
            .run_phase(&ctx, &sink, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(outcome.exit_code, 0);
    }
    drop(sink);
    drain.await.unwrap();
}

#[tokio::test]
async fn a_phase_lasts_its_configured_duration() {
    let connector = fake(config("phases: {provision: {duration: 300ms}}"));
    let started = Instant::now();
    let (code, _) = run_phase(
        &connector,
        json!({"job_queue": "q", "provision_data": {}}),
        Phase::Provision,
    )
    .await;
    assert_eq!(code, 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn exit_codes_come_from_the_phase_entry_then_the_default() {
    let connector = fake(config(
        "default: {exit_code: 2}\nphases: {test: {exit_code: 1}, cleanup: {exit_code: 0}}",
    ));
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "true"}});
    assert_eq!(run_phase(&connector, job.clone(), Phase::Test).await.0, 1);
    assert_eq!(run_phase(&connector, job.clone(), Phase::Cleanup).await.0, 0);
    assert_eq!(run_phase(&connector, job, Phase::Setup).await.0, 2);
}

#[tokio::test]
async fn configured_output_lines_follow_the_narrative_spread_over_the_duration() {
    let connector = fake(config(
        "phases: {setup: {duration: 200ms, output: [one, two, three]}}",
    ));
    let ctx = ctx_for(minimal_job(), Phase::Setup);
    let (sink, mut rx) = sink(16);
    let task = tokio::spawn({
        let connector = connector.clone();
        async move { connector.run_phase(&ctx, &sink, CancellationToken::new()).await }
    });
    let mut chunks = vec![];
    while let Some(chunk) = rx.recv().await {
        chunks.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    assert_eq!(task.await.unwrap().unwrap().exit_code, 0);
    assert_eq!(chunks.len(), 4, "one line at a time: {chunks:?}");
    assert!(chunks[0].starts_with("fake device test-agent-1: setting up"));
    assert_eq!(chunks[1..], ["one\n", "two\n", "three\n"]);
}

#[tokio::test]
async fn provision_says_what_it_installs_from_the_jobs_provision_data() {
    let connector = fake(FakeConfig::default());
    let job =
        json!({"job_queue": "q", "provision_data": {"url": "http://images/noble.img.xz", "distro": "noble"}});
    let (code, out) = run_phase(&connector, job, Phase::Provision).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("installing url: http://images/noble.img.xz\n"),
        "{out}"
    );
    assert!(out.contains("installing distro: noble\n"), "{out}");
}

#[tokio::test]
async fn test_echoes_each_test_command_and_runs_none() {
    let connector = fake(config("phases: {test: {output: [all passed]}}"));
    let job =
        json!({"job_queue": "q", "test_data": {"test_cmds": ["touch /tmp/flinger-fake-ran", "uname -a"]}});
    let (code, out) = run_phase(&connector, job, Phase::Test).await;
    assert_eq!(code, 0);
    assert_eq!(out, "$ touch /tmp/flinger-fake-ran\n$ uname -a\nall passed\n");
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "echo a\necho b\n"}});
    assert_eq!(
        run_phase(&connector, job, Phase::Test).await.1,
        "$ echo a\n$ echo b\nall passed\n"
    );
}

#[tokio::test]
async fn reserve_says_how_to_connect_and_returns_at_once() {
    let job = json!({"job_queue": "q", "reserve_data": {"ssh_keys": ["lp:alice"], "timeout": "2h"}});
    let (code, out) = run_phase(&fake(config("device_ip: 10.0.0.7")), job.clone(), Phase::Reserve).await;
    assert_eq!(code, 0);
    assert!(out.contains("ssh ubuntu@10.0.0.7\n"), "{out}");
    assert!(out.contains("lp:alice"), "{out}");

    // Without a configured address, the phase's DEVICE_IP is reported.
    let mut ctx = ctx_for(self::job(job), Phase::Reserve);
    ctx.env.insert("DEVICE_IP".into(), "192.168.1.20".into());
    let (_, out) = run_ok(&*fake(FakeConfig::default()), &ctx).await;
    assert!(out.contains("ssh ubuntu@192.168.1.20\n"), "{out}");
}

#[tokio::test]
async fn the_jobs_phase_data_overrides_the_config() {
    let connector = fake(config("default: {exit_code: 0, output: [configured]}"));
    let job = json!({"job_queue": "q", "provision_data": {"url": "x", "fake": {"exit_code": 46, "output": ["recovery failed"]}}});
    let (code, out) = run_phase(&connector, job.clone(), Phase::Provision).await;
    assert_eq!(code, 46);
    assert!(
        out.ends_with("recovery failed\n") && !out.contains("configured"),
        "{out}"
    );
    // Other phases keep the configured behaviour.
    let (code, out) = run_phase(&connector, job, Phase::Setup).await;
    assert_eq!(code, 0);
    assert!(out.ends_with("configured\n"), "{out}");
}

#[tokio::test]
async fn setup_and_cleanup_are_overridden_from_any_phases_fake_map() {
    let connector = fake(FakeConfig::default());
    let job = json!({"job_queue": "q",
        "provision_data": {"fake": {"exit_code": 0, "setup": {"exit_code": 3}}},
        "test_data": {"test_cmds": "true", "fake": {"cleanup": {"exit_code": 4, "output": "cleanup broke"}}}});
    assert_eq!(run_phase(&connector, job.clone(), Phase::Setup).await.0, 3);
    assert_eq!(run_phase(&connector, job.clone(), Phase::Provision).await.0, 0);
    assert_eq!(run_phase(&connector, job.clone(), Phase::Test).await.0, 0);
    let (code, out) = run_phase(&connector, job, Phase::Cleanup).await;
    assert_eq!(code, 4);
    assert!(out.ends_with("cleanup broke\n"), "{out}");
}

#[tokio::test]
async fn a_bad_job_override_is_refused_naming_the_field() {
    let connector = fake(FakeConfig::default());
    let job = self::job(json!({"job_queue": "q", "test_data": {"fake": {"exit_code": "three"}}}));
    let (result, _) = run(&*connector, &ctx_for(job, Phase::Test), CancellationToken::new()).await;
    match result {
        Err(ConnectorError::CannotStart {
            phase: Phase::Test,
            reason,
        }) => {
            assert!(reason.starts_with("test_data.fake:"), "{reason}")
        }
        other => panic!("expected CannotStart, got {other:?}"),
    }
    let job = self::job(json!({"job_queue": "q", "provision_data": {"fake": {"setup": {"hnag": true}}}}));
    let (result, _) = run(&*connector, &ctx_for(job, Phase::Setup), CancellationToken::new()).await;
    assert!(
        matches!(&result, Err(ConnectorError::CannotStart { reason, .. }) if reason.contains("provision_data.fake.setup") && reason.contains("hnag")),
        "{result:?}"
    );
}

/// Starts a phase in the background; returns its task and output receiver.
fn start(
    connector: Arc<FakeConnector>,
    ctx: PhaseContext,
    cancel: CancellationToken,
) -> (
    tokio::task::JoinHandle<Result<flinger_connectors::PhaseOutcome, ConnectorError>>,
    tokio::sync::mpsc::Receiver<bytes::Bytes>,
) {
    let (sink, rx): (OutputSink, _) = sink(16);
    (
        tokio::spawn(async move { connector.run_phase(&ctx, &sink, cancel).await }),
        rx,
    )
}

#[tokio::test]
async fn a_hanging_phase_runs_until_cancelled_then_reports_sigterm() {
    let job = self::job(
        json!({"job_queue": "q", "test_data": {"test_cmds": "true", "fake": {"hang": true, "output": "stuck"}}}),
    );
    let cancel = CancellationToken::new();
    let (task, mut rx) = start(
        fake(FakeConfig::default()),
        ctx_for(job, Phase::Test),
        cancel.clone(),
    );
    read_until(&mut rx, "stuck\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "a hanging phase does not end by itself");
    cancel.cancel();
    let outcome = task.await.unwrap().unwrap();
    assert_eq!(outcome.exit_code, -15);
    assert_eq!(outcome.detail.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn cancel_stops_a_long_phase_at_once() {
    let connector = fake(config("phases: {provision: {duration: 1h, output: [a, b]}}"));
    let job = self::job(json!({"job_queue": "q", "provision_data": {"url": "x"}}));
    let cancel = CancellationToken::new();
    let (task, mut rx) = start(connector, ctx_for(job, Phase::Provision), cancel.clone());
    read_until(&mut rx, "provisioning").await;
    cancel.cancel();
    assert_eq!(task.await.unwrap().unwrap().exit_code, -15);
}

#[tokio::test]
async fn cancel_stops_a_phase_blocked_on_a_full_sink() {
    let job = self::job(json!({"job_queue": "q", "test_data": {"fake": {"output_bytes": 100_000_000}}}));
    let cancel = CancellationToken::new();
    let (task, rx) = start(
        fake(FakeConfig::default()),
        ctx_for(job, Phase::Test),
        cancel.clone(),
    );
    // Nobody reads: the phase fills the sink and waits for room.
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancel.cancel();
    assert_eq!(task.await.unwrap().unwrap().exit_code, -15);
    drop(rx);
}

#[tokio::test]
async fn output_bytes_emits_exactly_that_many_bytes_of_filler_lines() {
    let connector = fake(FakeConfig::default());
    for n in [0u64, 1, 63, 64, 65, 1_000_003] {
        let job = json!({"job_queue": "q", "test_data": {"test_cmds": "true", "fake": {"output_bytes": n}}});
        let (result, out) = run(
            &*connector,
            &ctx_for(self::job(job), Phase::Test),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(result.unwrap().exit_code, 0);
        assert_eq!(out.len() as u64, n);
        if n > 0 {
            assert_eq!(out.last(), Some(&b'\n'));
        }
    }
}

#[tokio::test]
async fn a_closed_sink_does_not_stop_the_phase() {
    let connector = fake(config("default: {output: [a, b, c]}"));
    let (sink, rx) = sink(1);
    drop(rx);
    let outcome = connector
        .run_phase(
            &ctx_for(minimal_job(), Phase::Setup),
            &sink,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
}

#[tokio::test]
async fn unsupported_phases_are_not_offered_and_refuse_to_run() {
    let connector = fake(config("supported: [setup, test, cleanup]"));
    assert!(connector.supports(Phase::Test));
    assert!(!connector.supports(Phase::Provision));
    let job = self::job(json!({"job_queue": "q", "provision_data": {"url": "x"}}));
    let (result, _) = run(
        &*connector,
        &ctx_for(job, Phase::Provision),
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(
        result,
        Err(ConnectorError::CannotStart {
            phase: Phase::Provision,
            ..
        })
    ));
}

#[tokio::test]
async fn a_job_override_replaces_only_the_fields_it_sets() {
    let connector = fake(config("phases: {test: {exit_code: 1, output: [configured]}}"));
    let job = json!({"job_queue": "q", "test_data": {"test_cmds": "true", "fake": {"exit_code": 0}}});
    let (code, out) = run_phase(&connector, job, Phase::Test).await;
    assert_eq!(code, 0);
    assert!(out.ends_with("configured\n"), "{out}");
}

#[test]
fn an_override_accepts_every_documented_field() {
    let b: FakeBehaviour = serde_json::from_value(
        json!({"duration": "1s", "exit_code": 5, "hang": true, "output_bytes": 10, "output": "x"}),
    )
    .unwrap();
    assert_eq!(b.duration, Some(Duration::from_secs(1)));
    assert_eq!(b.exit_code, Some(5));
    assert_eq!(b.hang, Some(true));
    assert_eq!(b.output_bytes, Some(10));
    assert_eq!(b.output, Some(vec!["x".to_string()]));
}

//! Connector settings as written in the agent's YAML.

use broker_schema::Phase;
use flinger_connectors::{CommandConfig, ConnectorConfig, FakeBehaviour, FakeConfig};
use std::time::Duration;

fn parse(yaml: &str) -> Result<ConnectorConfig, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(yaml)
}

#[test]
fn a_command_connector_takes_a_command_per_phase_env_and_kill_grace() {
    let config = parse(
        r#"
type: command
setup: echo setup
provision_command: testflinger-device-connector maas2 provision -c /etc/device.yaml testflinger.json
test: testflinger-device-connector maas2 runtest -c /etc/device.yaml testflinger.json
env: {SERIAL_PORT: /dev/ttyUSB0, RETRIES: 3, VERBOSE: true}
kill_grace: 30s
"#,
    )
    .unwrap();
    let ConnectorConfig::Command(c) = &config else {
        panic!("{config:?}")
    };
    assert_eq!(c.command(Phase::Setup), Some("echo setup"));
    assert!(c.command(Phase::Provision).unwrap().contains("maas2 provision"));
    assert_eq!(c.command(Phase::Reserve), None);
    assert_eq!(c.env["RETRIES"], "3");
    assert_eq!(c.env["VERBOSE"], "true");
    assert_eq!(c.kill_grace, Duration::from_secs(30));
    assert_eq!(
        c.drain_timeout,
        flinger_connectors::command::DEFAULT_DRAIN_TIMEOUT
    );
    let connector = config.build().unwrap();
    assert_eq!(connector.kind(), "command");
    assert!(connector.supports(Phase::Test) && !connector.supports(Phase::Cleanup));
}

#[test]
fn kill_grace_defaults_to_ten_seconds_and_a_bare_number_is_seconds() {
    let ConnectorConfig::Command(c) = parse("type: command\ntest: 'true'").unwrap() else {
        panic!()
    };
    assert_eq!(c.kill_grace, Duration::from_secs(10));
    assert_eq!(c, {
        let mut d = CommandConfig::default();
        d.set_command(Phase::Test, "true");
        d.clone()
    });
    let ConnectorConfig::Command(c) = parse("type: command\nkill_grace: 5\ndrain_timeout: 500ms").unwrap()
    else {
        panic!()
    };
    assert_eq!(c.kill_grace, Duration::from_secs(5));
    assert_eq!(c.drain_timeout, Duration::from_millis(500));
}

#[test]
fn unknown_keys_and_bad_durations_are_refused_by_name() {
    let e = parse("type: command\ntest: 'true'\nprovison: 'true'")
        .unwrap_err()
        .to_string();
    assert!(e.contains("provison"), "{e}");
    let e = parse("type: command\nkill_grace: soon").unwrap_err().to_string();
    assert!(e.contains("soon"), "{e}");
    let e = parse("type: fake\ndefault: {duraton: 5}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("duraton"), "{e}");
    let e = parse("type: fake\nphases: {provisioning: {}}")
        .unwrap_err()
        .to_string();
    assert!(e.contains("provisioning"), "{e}");
    assert!(parse("type: teleport").is_err());
}

#[test]
fn a_fake_connector_takes_a_default_per_phase_behaviour_and_supported_phases() {
    let config = parse(
        r#"
type: fake
device_ip: 10.0.0.7
supported: [setup, provision, test, reserve, cleanup]
default: {duration: 250, output: [working]}
phases:
  provision: {duration: 2s, output: "booting\nflashing"}
  test: {exit_code: 1}
"#,
    )
    .unwrap();
    let ConnectorConfig::Fake(f) = &config else {
        panic!("{config:?}")
    };
    assert_eq!(f.default.duration, Some(Duration::from_millis(250)));
    assert_eq!(f.phases[&Phase::Provision].duration, Some(Duration::from_secs(2)));
    assert_eq!(
        f.phases[&Phase::Provision].output,
        Some(vec!["booting".to_string(), "flashing".to_string()])
    );
    assert_eq!(f.phases[&Phase::Test].exit_code, Some(1));
    assert_eq!(f.device_ip.as_deref(), Some("10.0.0.7"));
    let connector = config.build().unwrap();
    assert_eq!(connector.kind(), "fake");
    assert!(connector.supports(Phase::Reserve) && !connector.supports(Phase::FirmwareUpdate));
}

#[test]
fn an_empty_fake_config_is_a_device_whose_every_phase_succeeds_at_once() {
    let ConnectorConfig::Fake(f) = parse("type: fake").unwrap() else {
        panic!()
    };
    assert_eq!(f, FakeConfig::default());
    assert_eq!(f.default, FakeBehaviour::default());
    let connector = ConnectorConfig::Fake(f).build().unwrap();
    assert!(Phase::ALL.into_iter().all(|p| connector.supports(p)));
}

//! The `multi` connector: the parent of a multi-device job, through the gateway's v1 API.
//!
//! Behaves as Testflinger's `multi` device connector does, natively:
//! - **provision** submits each job file of `provision_data.jobs` as a child (`allocate_data:
//!   {allocate: true}`, `parent_job_id`: this job), then reads the children's results until
//!   every one is `allocated` — at most `allocation_timeout` (default 2 h). If a child ends
//!   first, or time runs out, it cancels every child and fails, saying why. Then it writes
//!   `job_list.json` in the run directory: `[{job_id, device_info}]`, in submission order.
//! - **test** runs `test_data.test_cmds` on this host through `/bin/sh` (the `command`
//!   connector's process handling), with `DEVICE_IP_1`, `DEVICE_IP_2`, … from `job_list.json`.
//! - **cleanup** cancels the children that never got allocated. Allocated ones stay with the
//!   parent through its cleanup (it may still collect logs from them) and are released by the
//!   scheduler when the parent's run ends.
//!
//! The children it submitted are kept in `children.json` as they are submitted, so cleanup finds
//! them even when provision was stopped midway. It speaks only HTTP: it knows nothing about the
//! broker, leases or the store.

use super::*;
use crate::command::{CommandConfig, CommandConnector};
use crate::duration;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Written in the run directory for the test phase: each child's `job_id` and `device_info`.
pub const JOB_LIST_FILE: &str = "job_list.json";
/// The children submitted so far (job ids), for cleanup.
const CHILDREN_FILE: &str = "children.json";

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

/// Settings of the `multi` connector (`connector: {type: multi, …}` in the agent's YAML).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MultiConfig {
    /// The gateway's base URL (Testflinger's `testflinger_server`).
    #[serde(alias = "testflinger_server")]
    pub server: String,
    /// A client's credentials, when the gateway requires them to submit (Testflinger's keys).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub secret_key: Option<String>,
    /// How often the children's states are read while waiting. A bare number is seconds.
    #[serde(default = "default_poll_interval", deserialize_with = "duration::seconds")]
    pub poll_interval: Duration,
}

impl MultiConfig {
    fn check(&self) -> Result<(), ConnectorError> {
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return Err(ConnectorError::Config(
                "multi: server must be the gateway's http:// or https:// URL".into(),
            ));
        }
        if self.client_id.is_some() != self.secret_key.is_some() {
            return Err(ConnectorError::Config(
                "multi: client_id and secret_key go together".into(),
            ));
        }
        Ok(())
    }
}

pub struct MultiConnector {
    config: MultiConfig,
    http: reqwest::Client,
}

impl MultiConnector {
    pub fn new(config: MultiConfig) -> Result<MultiConnector, ConnectorError> {
        config.check()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| ConnectorError::Config(format!("multi: HTTP client: {e}")))?;
        Ok(MultiConnector { config, http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.server.trim_end_matches('/'))
    }

    /// A bearer token from the client's credentials, when it has some.
    async fn token(&self) -> Result<Option<String>, String> {
        let (Some(id), Some(key)) = (&self.config.client_id, &self.config.secret_key) else {
            return Ok(None);
        };
        let r = self
            .http
            .post(self.url("/v1/oauth2/token"))
            .basic_auth(id, Some(key))
            .send()
            .await
            .map_err(|e| format!("cannot log in: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("cannot log in: HTTP {}", r.status()));
        }
        let body: Value = r.json().await.map_err(|e| format!("cannot log in: {e}"))?;
        Ok(body["access_token"].as_str().map(str::to_owned))
    }

    fn authed(&self, req: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn submit(&self, job: &Value, token: &Option<String>) -> Result<Uuid, String> {
        let r = self
            .authed(self.http.post(self.url("/v1/job")), token)
            .json(job)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {body}"));
        }
        serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["job_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()))
            .ok_or_else(|| format!("no job_id in the answer: {body}"))
    }

    /// The child's results (`job_state`, `device_info`), as Testflinger's client reads them.
    async fn results(&self, id: Uuid, token: &Option<String>) -> Result<Value, String> {
        let r = self
            .authed(self.http.get(self.url(&format!("/v1/result/{id}"))), token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status()));
        }
        r.json().await.map_err(|e| e.to_string())
    }

    /// Cancels a child; one that already ended (400) is fine.
    async fn cancel(&self, id: Uuid, token: &Option<String>) -> Result<(), String> {
        let r = self
            .authed(self.http.post(self.url(&format!("/v1/job/{id}/action"))), token)
            .json(&json!({"action": "cancel"}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match r.status().as_u16() {
            200..=299 | 400 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    }

    async fn cancel_all(&self, children: &[Uuid], token: &Option<String>, sink: &OutputSink) {
        for id in children {
            if let Err(e) = self.cancel(*id, token).await {
                sink.out(format!("multi: cannot cancel child job {id}: {e}\n"))
                    .await;
            }
        }
    }

    async fn provision(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: &CancellationToken,
    ) -> PhaseOutcome {
        let Some(jobs) = ctx
            .job
            .provision_data()
            .and_then(|p| p.get("jobs"))
            .and_then(Value::as_array)
            .filter(|j| !j.is_empty())
        else {
            return failed(sink, "provision_data.jobs must list the child job files").await;
        };
        let token = match self.token().await {
            Ok(t) => t,
            Err(e) => return failed(sink, &e).await,
        };
        let mut children = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let Some(file) = job.as_object() else {
                self.cancel_all(&children, &token, sink).await;
                return failed(sink, &format!("provision_data.jobs[{i}] is not a job file")).await;
            };
            let child = child_file(file, ctx.job_id);
            match self.submit(&child, &token).await {
                Ok(id) => {
                    children.push(id);
                    save_children(&ctx.run_dir, &children).await;
                    // Testflinger's words: CI (its `poll-multi` action) finds the children's ids
                    // in the provision output by them.
                    let queue = file.get("job_queue").and_then(Value::as_str).unwrap_or("?");
                    sink.out(format!(
                        "multi: child {} on queue {queue}\nCreated job {id}\n",
                        i + 1
                    ))
                    .await;
                }
                Err(e) => {
                    self.cancel_all(&children, &token, sink).await;
                    return failed(sink, &format!("cannot submit provision_data.jobs[{i}]: {e}")).await;
                }
            }
        }
        let limit = ctx.job.allocation_timeout();
        let deadline = Instant::now() + limit;
        let mut device_info: Vec<Option<Value>> = vec![None; children.len()];
        let mut allocated = vec![false; children.len()];
        sink.out(format!(
            "multi: waiting up to {} s for {} children to be allocated\n",
            limit.as_secs(),
            children.len()
        ))
        .await;
        loop {
            for (n, id) in children.iter().enumerate() {
                if allocated[n] {
                    continue;
                }
                let results = match self.results(*id, &token).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(child = %id, error = %e, "cannot read a child's state; trying again");
                        continue;
                    }
                };
                match results["job_state"].as_str().unwrap_or("") {
                    "allocated" => {
                        allocated[n] = true;
                        device_info[n] = results.get("device_info").cloned();
                        let info = device_info[n].clone().unwrap_or(Value::Null);
                        sink.out(format!("multi: child job {id} allocated: {info}\n"))
                            .await;
                    }
                    "complete" | "completed" | "cancelled" => {
                        let state = results["state"].as_str().or(results["job_state"].as_str());
                        self.cancel_all(&children, &token, sink).await;
                        return failed(
                            sink,
                            &format!(
                                "child job {id} ended ({}) before it was allocated; every child was cancelled",
                                state.unwrap_or("?")
                            ),
                        )
                        .await;
                    }
                    _ => {}
                }
            }
            if allocated.iter().all(|a| *a) {
                break;
            }
            if Instant::now() >= deadline {
                let waiting: Vec<String> = children
                    .iter()
                    .zip(&allocated)
                    .filter(|(_, a)| !**a)
                    .map(|(id, _)| id.to_string())
                    .collect();
                self.cancel_all(&children, &token, sink).await;
                return failed(
                    sink,
                    &format!(
                        "allocation_timeout: {} s passed before every child was allocated (not allocated: {}); every child was cancelled",
                        limit.as_secs(),
                        waiting.join(", ")
                    ),
                )
                .await;
            }
            let pause = self.config.poll_interval.min(deadline - Instant::now());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = cancel.cancelled() => {
                    // The parent is stopping: its end releases every child (the scheduler's).
                    sink.out("multi: stopped while waiting for the children\n").await;
                    return PhaseOutcome { exit_code: crate::fake::CANCELLED_EXIT, detail: Some("cancelled".into()) };
                }
            }
        }
        let list: Vec<Value> = children
            .iter()
            .zip(device_info)
            .map(|(id, info)| json!({"job_id": id.to_string(), "device_info": info}))
            .collect();
        let text = Value::Array(list).to_string();
        if let Err(e) = tokio::fs::write(ctx.run_dir.join(JOB_LIST_FILE), &text).await {
            self.cancel_all(&children, &token, sink).await;
            return failed(sink, &format!("cannot write {JOB_LIST_FILE}: {e}")).await;
        }
        sink.out(format!(
            "multi: every child is allocated; {JOB_LIST_FILE} written\n"
        ))
        .await;
        PhaseOutcome::default()
    }

    async fn test(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        let Some(cmds) = ctx.job.test_cmds().filter(|c| !c.trim().is_empty()) else {
            sink.out("multi: no test_cmds\n").await;
            return Ok(PhaseOutcome::default());
        };
        let mut ctx = ctx.clone();
        for (n, info) in read_job_list(&ctx.run_dir).await.iter().enumerate() {
            if let Some(ip) = info["device_info"]["device_ip"].as_str() {
                ctx.env.insert(format!("DEVICE_IP_{}", n + 1), ip.to_owned());
            }
        }
        let mut config = CommandConfig::default();
        config.set_command(Phase::Test, cmds);
        CommandConnector::new(config)?.run_phase(&ctx, sink, cancel).await
    }

    async fn cleanup(&self, ctx: &PhaseContext, sink: &OutputSink) -> PhaseOutcome {
        let children: Vec<Uuid> = match tokio::fs::read(ctx.run_dir.join(CHILDREN_FILE)).await {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_default(),
            Err(_) => return PhaseOutcome::default(),
        };
        let token = self.token().await.unwrap_or_default();
        for id in children {
            let state = match self.results(id, &token).await {
                Ok(r) => r["job_state"].as_str().unwrap_or("").to_owned(),
                Err(_) => String::new(),
            };
            match state.as_str() {
                "allocated" => {
                    sink.out(format!(
                        "multi: child job {id} stays allocated until this job ends\n"
                    ))
                    .await
                }
                "complete" | "completed" | "cancelled" => {}
                _ => {
                    sink.out(format!("multi: cancelling child job {id} ({state})\n"))
                        .await;
                    if let Err(e) = self.cancel(id, &token).await {
                        sink.out(format!("multi: cannot cancel child job {id}: {e}\n"))
                            .await;
                    }
                }
            }
        }
        PhaseOutcome::default()
    }
}

/// A child's job file: the listed one, with `allocate_data: {allocate: true}` and its parent.
fn child_file(file: &Map<String, Value>, parent: Uuid) -> Value {
    let mut child = file.clone();
    child.insert("allocate_data".into(), json!({"allocate": true}));
    child.insert("parent_job_id".into(), Value::String(parent.to_string()));
    Value::Object(child)
}

async fn save_children(dir: &Path, children: &[Uuid]) {
    let text = serde_json::to_string(children).unwrap_or_default();
    if let Err(e) = tokio::fs::write(dir.join(CHILDREN_FILE), text).await {
        tracing::warn!(error = %e, "cannot keep the list of children");
    }
}

/// `job_list.json`, or nothing.
pub async fn read_job_list(dir: &Path) -> Vec<Value> {
    match tokio::fs::read(dir.join(JOB_LIST_FILE)).await {
        Ok(text) => serde_json::from_slice(&text).unwrap_or_default(),
        Err(_) => vec![],
    }
}

async fn failed(sink: &OutputSink, why: &str) -> PhaseOutcome {
    sink.out(format!("multi: {why}\n")).await;
    PhaseOutcome {
        exit_code: 1,
        detail: Some(why.to_owned()),
    }
}

#[async_trait]
impl Connector for MultiConnector {
    fn kind(&self) -> &'static str {
        "multi"
    }

    fn supports(&self, phase: Phase) -> bool {
        matches!(phase, Phase::Provision | Phase::Test | Phase::Cleanup)
    }

    async fn run_phase(
        &self,
        ctx: &PhaseContext,
        sink: &OutputSink,
        cancel: CancellationToken,
    ) -> Result<PhaseOutcome, ConnectorError> {
        match ctx.phase {
            Phase::Provision => Ok(self.provision(ctx, sink, &cancel).await),
            Phase::Test => self.test(ctx, sink, cancel).await,
            Phase::Cleanup => Ok(self.cleanup(ctx, sink).await),
            phase => Err(ConnectorError::CannotStart {
                phase,
                reason: "the multi connector has no step for this phase".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_names_its_parent_and_allocates() {
        let parent = Uuid::from_u128(5);
        let file =
            json!({"job_queue": "dut", "allocate_data": {"other": 1}, "test_data": {"test_cmds": "x"}});
        let child = child_file(file.as_object().unwrap(), parent);
        assert_eq!(child["allocate_data"], json!({"allocate": true}));
        assert_eq!(child["parent_job_id"], parent.to_string());
        assert_eq!(child["test_data"]["test_cmds"], "x");
    }

    #[test]
    fn the_config_takes_testflingers_key_and_refuses_half_credentials() {
        let c: MultiConfig =
            serde_yaml_ng::from_str("testflinger_server: http://gw:8000\npoll_interval: 1\n").unwrap();
        assert_eq!(c.server, "http://gw:8000");
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert!(c.check().is_ok());
        let half = MultiConfig {
            client_id: Some("ci".into()),
            ..c.clone()
        };
        assert!(half.check().is_err());
        let not_http = MultiConfig {
            server: "gw:8000".into(),
            ..c
        };
        assert!(not_http.check().is_err());
    }
}

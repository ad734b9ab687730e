//! Runs one leased job: prepares its run directory, runs the planned phases through the
//! connector in Testflinger's order while streaming their output, enforces the job's timeouts,
//! holds a reservation until its (movable) deadline, always runs cleanup unless the lease is
//! gone, and reports the end of the run once every output chunk is confirmed.

use crate::config::AgentConfig;
use crate::intake::TakenJob;
use crate::lease::{LeaseKeeper, LeaseSpec, Unrecorded};
use crate::output::OutputPipe;
use crate::reporter::Reporter;
use crate::status::Status;
use crate::stop::{Stop, StopReason};
use broker_schema::bus::{Publisher, RpcClient};
use broker_schema::messages::{AgentState, JobEventKind, LogStream, Outcome, OutputCounts};
use broker_schema::phase::RECOVERY_FAILED_EXIT;
use broker_schema::{Failure, FailureKind, JobDefinition, Millis, Names, Phase, Plan};
use bytes::Bytes;
use flinger_connectors::{Connector, OutputSink, PhaseContext, PhaseOutcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// What the control consumer needs to reach the job being run.
pub struct CurrentJob {
    pub job_id: Uuid,
    pub attempt: u32,
    pub stop: Stop,
    pub deadline: watch::Sender<Option<Millis>>,
}

/// The job being run, if any, and the runs whose lease is kept until the scheduler records
/// their end, shared with the control consumer.
#[derive(Clone, Default)]
pub struct CurrentSlot {
    job: Arc<Mutex<Option<CurrentJob>>>,
    pub unrecorded: Unrecorded,
}

impl CurrentSlot {
    pub fn with<R>(&self, f: impl FnOnce(Option<&CurrentJob>) -> R) -> R {
        f(self.job.lock().expect("current job lock").as_ref())
    }

    fn set(&self, job: Option<CurrentJob>) {
        *self.job.lock().expect("current job lock") = job;
    }
}

/// How a run went, for the agent's own decisions afterwards.
pub struct RunSummary {
    pub job_id: Uuid,
    pub phase_status: BTreeMap<Phase, i32>,
    pub stop: Option<StopReason>,
    /// The phase whose connector reported that device recovery failed (exit 46).
    pub recovery_failed: Option<Phase>,
    /// The lease keeper, still renewing until the scheduler records the end.
    pub keeper: Option<JoinHandle<()>>,
}

pub struct Runner {
    pub connector: Arc<dyn Connector>,
    pub publisher: Arc<Publisher>,
    pub rpc: Arc<RpcClient>,
    pub names: Names,
    pub config: Arc<AgentConfig>,
    pub status: Status,
    pub current: CurrentSlot,
    pub shutdown: CancellationToken,
    /// Where a `run_abandoned` the broker could not take waits for the next connection.
    pub unreported: Arc<crate::unreported::Unreported>,
}

/// Per-run state threaded through the phases.
struct Run {
    job_id: Uuid,
    job: Arc<JobDefinition>,
    run_dir: PathBuf,
    /// The agent's own files for this run (downloaded archives, the reservation's keys), in
    /// its state directory: out of the job's reach, unlike the run directory.
    scratch: PathBuf,
    stop: Stop,
    reporter: Reporter,
    output: OutputPipe,
    serial: OutputPipe,
    env: BTreeMap<String, String>,
    deadline: watch::Receiver<Option<Millis>>,
    /// Sets the deadline when the reservation starts (extensions arrive through the same
    /// channel from control messages and lease renewals).
    deadline_tx: watch::Sender<Option<Millis>>,
    device_info: Option<serde_json::Value>,
    /// The job's secrets, resolved: variable → value.
    secrets: BTreeMap<String, String>,
    /// Testflinger's metrics, and the device's release for their label.
    tf_metrics: crate::metrics::Testflinger,
    release: crate::release::Release,
}

impl Run {
    /// The output published so far, sent with each phase move.
    fn shipped(&self) -> OutputCounts {
        OutputCounts {
            output: self.output.published(),
            serial: self.serial.published(),
        }
    }
}

impl Runner {
    pub async fn run(&self, taken: TakenJob) -> RunSummary {
        let job_id = taken.submission.job_id;
        let attempt = taken.grant.attempt;
        let job = Arc::new(taken.submission.job);
        let stop = Stop::new();
        let (deadline_tx, deadline_rx) = watch::channel(taken.grant.reserve_until);
        // The files credential of the grant, refreshed by each renewal.
        let (files_tx, files_rx) = watch::channel(taken.grant.files.clone());
        let gateway = self.files_client(files_rx);
        self.current.set(Some(CurrentJob {
            job_id,
            attempt,
            stop: stop.clone(),
            deadline: deadline_tx.clone(),
        }));
        self.status.set(AgentState::Leased, Some(job_id));
        crate::metrics::busy(true);
        info!(%job_id, attempt, queue = %taken.queue, "running job");

        let keeper = LeaseKeeper::start(
            self.rpc.clone(),
            self.names.clone(),
            LeaseSpec {
                job_id,
                attempt,
                agent: self.config.name.clone(),
                lease: Duration::from_millis(taken.grant.lease_ms),
                renew_every: Duration::from_millis(taken.grant.renew_every_ms),
                asked_at: taken.asked_at,
                recorded: self.current.unrecorded.watch(job_id, attempt),
            },
            stop.clone(),
            deadline_tx.clone(),
            files_tx,
        );
        // A multi-device child holding its device for its parent: its own global timeout does
        // not end the hold (the parent's lifetime does).
        let holding = Arc::new(AtomicBool::new(false));
        let mut watchdogs = self.start_watchdogs(&job, &stop, &holding);
        {
            // Shutting down stops the run at once; its lease lapses (or is given back below).
            let (shutdown, stop) = (self.shutdown.clone(), stop.clone());
            watchdogs.push(tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => stop.request(StopReason::Shutdown),
                    _ = stop.hard.cancelled() => {}
                }
            }));
        }
        let reporter = Reporter {
            publisher: self.publisher.clone(),
            names: self.names.clone(),
            job_id,
            attempt,
            agent: self.config.name.clone(),
            silenced: stop.hard.clone(),
        };
        let mut env = self.config.env.clone();
        env.extend(taken.grant.secrets.clone());
        let secrets = broker_schema::mask::Masker::new(taken.grant.secrets.values());
        env.insert(crate::leftovers::AGENT_ENV.into(), self.config.name.to_string());
        env.insert(
            crate::leftovers::STATE_ENV.into(),
            self.config.state_dir.to_string_lossy().into_owned(),
        );
        env.insert("FLINGER_JOB_ID".into(), job_id.to_string());
        // issue 14: the lab's cap (the grant's) wins over the agent's own.
        let output_cap = taken.grant.output_cap.unwrap_or(self.config.output_cap);
        let mut run = Run {
            job_id,
            run_dir: self.config.execution_basedir.join(job_id.to_string()),
            scratch: scratch_dir(&self.config, job_id),
            job: job.clone(),
            stop: stop.clone(),
            // issue 4: the job's secret values never leave the host unmasked.
            output: OutputPipe::start_masked(
                reporter.clone(),
                LogStream::Output,
                &secrets,
                &self.config.sensitive_patterns,
                output_cap,
            ),
            serial: OutputPipe::start_masked(
                reporter.clone(),
                LogStream::Serial,
                &secrets,
                &self.config.sensitive_patterns,
                output_cap,
            ),
            reporter,
            env,
            deadline: deadline_rx,
            deadline_tx,
            device_info: None,
            secrets: taken.grant.secrets.clone(),
            tf_metrics: crate::metrics::Testflinger {
                agent_id: self.config.name.to_string(),
                identifier: self.config.identifier.clone().unwrap_or_default(),
            },
            release: crate::release::Release::None,
        };
        run.tf_metrics.job_started();

        let mut phase_status = BTreeMap::new();
        let mut setup_error = None;
        if let Err(e) = prepare_run_dir(&run.run_dir, &job, job_id).await {
            setup_error = Some(format!(
                "cannot prepare the run directory {}: {e}",
                run.run_dir.display()
            ));
        } else if let Err(e) = prepare_scratch(&run.scratch, &run.run_dir).await {
            setup_error = Some(format!(
                "cannot prepare the agent's directory {}: {e}",
                run.scratch.display()
            ));
        }
        // issue 4: attachments, unpacked into attachments/<phase>/ before any phase.
        if setup_error.is_none()
            && let Err(e) =
                crate::attachments::prepare(gateway.as_ref(), &job, job_id, &run.run_dir, &run.scratch).await
        {
            setup_error = Some(e.to_string());
        }
        let mut plan = Plan::new(&job, |p| self.connector.supports(p));
        if setup_error.is_none() {
            while let Some(phase) = plan.next_phase() {
                // A device must not be stopped mid-flash: a cancel waits for provision's end
                // (held before the check below, so that no cancel slips in between). Simulated
                // and pre-installed devices flash nothing; theirs is stopped at once.
                let holds = phase == Phase::Provision && self.connector.runs_testflinger_connectors();
                if holds {
                    stop.hold_cancels();
                }
                if stop.is_stopped() {
                    stop.release_cancels();
                    plan.stop();
                    break;
                }
                let code = self.run_phase(&mut run, phase, stop.token.child_token()).await;
                if holds {
                    stop.release_cancels();
                }
                phase_status.insert(phase, code);
                plan.record(phase, code);
                if matches!(phase, Phase::Provision | Phase::Allocate) {
                    self.read_device_info(&mut run).await;
                }
                if phase == Phase::Allocate && code == 0 && job.is_allocated_child() && !stop.is_stopped() {
                    self.hold_for_parent(&mut run, &holding).await;
                }
                if phase == Phase::Provision && code == 0 {
                    self.ask_release(&mut run);
                }
                if stop.is_stopped() {
                    plan.stop();
                }
            }
            // Provision may not have run (or not have written it) while a later phase did.
            if run.device_info.is_none() && !stop.hard.is_cancelled() {
                self.read_device_info(&mut run).await;
            }
        } else {
            plan.stop();
        }
        let skipped = plan.skipped().to_vec();
        if plan.runs_cleanup()
            && !stop.reason().is_some_and(|r| r.forbids_cleanup())
            && !stop.hard.is_cancelled()
        {
            // Cleanup survives a cancel or timeout, but not a lost lease; it has its own limit.
            let token = stop.hard.child_token();
            let limit = token.clone();
            let cleanup_timeout = self.config.cleanup_timeout;
            let timer = tokio::spawn(async move {
                tokio::time::sleep(cleanup_timeout).await;
                limit.cancel();
            });
            let code = self.run_phase(&mut run, Phase::Cleanup, token).await;
            timer.abort();
            phase_status.insert(Phase::Cleanup, code);
        }
        for w in watchdogs {
            w.abort();
        }
        // issue 4: artifacts, uploaded before the run is reported finished (not without the lease).
        // Lost artifacts are said in the output and in the outcome, not only in our log.
        let mut artifacts_lost = None;
        if !stop.hard.is_cancelled()
            && let Err(e) =
                crate::artifacts::save(gateway.as_ref(), job_id, &run.run_dir, &run.scratch, &secrets).await
        {
            warn!(%job_id, error = %e, "artifacts not saved");
            let line = format!("flinger-agent: the job's artifacts were not saved: {e}\n");
            run.output.send(Phase::Cleanup, Bytes::from(line)).await;
            artifacts_lost = Some(format!("the job's artifacts were not saved: {e}"));
        }

        let (output_end, serial_end) = (run.output.finish().await, run.serial.finish().await);
        let counts = OutputCounts {
            output: output_end.chunks,
            serial: serial_end.chunks,
        };
        let output_truncated: BTreeMap<LogStream, u64> = [
            (LogStream::Output, output_end.dropped),
            (LogStream::Serial, serial_end.dropped),
        ]
        .into_iter()
        .filter(|(_, dropped)| *dropped > 0)
        .collect();
        if !output_truncated.is_empty() {
            warn!(%job_id, ?output_truncated, output_cap, "output truncated at the cap");
        }
        let reason = stop.reason();
        let recovery_failed = phase_status
            .iter()
            .find(|(_, c)| **c == RECOVERY_FAILED_EXIT)
            .map(|(p, _)| *p);
        let outcome = match (&setup_error, &reason) {
            (Some(e), _) => Outcome::Failed {
                failure: Failure {
                    kind: FailureKind::AgentError,
                    reason: e.clone(),
                },
            },
            (None, None) => Outcome::Complete,
            (None, Some(StopReason::Cancelled(r))) => Outcome::Cancelled { reason: r.clone() },
            (None, Some(StopReason::GlobalTimeout(d))) => Outcome::Failed {
                failure: Failure {
                    kind: FailureKind::GlobalTimeout,
                    reason: format!("global timeout of {} s reached", d.as_secs()),
                },
            },
            (None, Some(StopReason::OutputTimeout(d))) => Outcome::Failed {
                failure: Failure {
                    kind: FailureKind::OutputTimeout,
                    reason: format!("no output for {} s in the test phase", d.as_secs()),
                },
            },
            (None, Some(StopReason::LeaseLost(_) | StopReason::Shutdown)) => Outcome::Complete, // never reported
        };
        // A run that otherwise ended complete says its artifacts are lost; a cancel stays a
        // cancel and a failure already found stays the reason (the output has the line anyway).
        let outcome = match (outcome, artifacts_lost) {
            (Outcome::Complete, Some(reason)) => Outcome::Failed {
                failure: Failure {
                    kind: FailureKind::ArtifactsLost,
                    reason,
                },
            },
            (outcome, _) => outcome,
        };
        if !skipped.is_empty() {
            info!(%job_id, ?skipped, "phases skipped");
        }
        let keeper = if stop.hard.is_cancelled() {
            // The lease is gone (or going): nothing of this run may be reported as its result.
            self.journal(job_id, attempt, &reason).await;
            let _ = keeper.finish().await;
            self.abandon(&run.reporter, &reason).await;
            None
        } else {
            let phases: BTreeMap<Phase, i32> = phase_status.clone();
            let confirmed = run
                .reporter
                .event(JobEventKind::Finished {
                    outcome: outcome.clone(),
                    output: counts,
                    phase_status: phases,
                    device_info: run.device_info.clone(),
                    output_truncated,
                })
                .await;
            if !confirmed {
                warn!(%job_id, "could not report the end of the run");
            }
            Some(keeper.finish())
        };
        for dir in [&run.run_dir, &run.scratch] {
            if let Err(e) = tokio::fs::remove_dir_all(dir).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(%job_id, error = %e, dir = %dir.display(), "cannot remove the run's directory");
            }
        }
        self.current.set(None);
        self.status.set(AgentState::Waiting, None);
        crate::metrics::busy(false);
        crate::metrics::job_ended(match (&keeper, &outcome) {
            (None, _) => "abandoned",
            (Some(_), Outcome::Complete) => "complete",
            (Some(_), Outcome::Cancelled { .. }) => "cancelled",
            (Some(_), Outcome::Failed { .. }) => "failed",
        });
        info!(%job_id, ?outcome, "run over");
        RunSummary {
            job_id,
            phase_status,
            stop: reason,
            recovery_failed,
            keeper,
        }
    }

    /// How this run moves its files: with the agent's own gateway client (`server_address`, its
    /// credentials) when it has one, as before; otherwise with the grant's files credential.
    fn files_client(
        &self,
        files: watch::Receiver<Option<broker_schema::job_files::JobFiles>>,
    ) -> Option<crate::gateway::GatewayClient> {
        match &self.config.gateway {
            Some(own) => Some(crate::gateway::GatewayClient::new(own.clone())),
            None => crate::gateway::GatewayClient::for_job(files),
        }
    }

    /// The global timeout (capped by the agent's own limit). It does not cut a reservation or a
    /// cleanup short: those have their own limits.
    fn start_watchdogs(
        &self,
        job: &JobDefinition,
        stop: &Stop,
        holding: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<()>> {
        let limit = cap(job.global_timeout(), self.config.global_timeout_cap);
        let stop = stop.clone();
        let holding = holding.clone();
        let mut status = self.status.subscribe();
        vec![tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            loop {
                let state = status.borrow_and_update().state;
                let exempt = matches!(state, AgentState::Running(Phase::Reserve | Phase::Cleanup))
                    || (state == AgentState::Running(Phase::Allocate) && holding.load(Ordering::SeqCst));
                if !exempt {
                    stop.request(StopReason::GlobalTimeout(limit));
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })]
    }

    async fn run_phase(&self, run: &mut Run, phase: Phase, token: CancellationToken) -> i32 {
        self.status.set(AgentState::Running(phase), Some(run.job_id));
        let started = Instant::now();
        // What the earlier phases printed is published before the move, and counted in it.
        run.output.flush().await;
        run.serial.flush().await;
        run.reporter
            .event_after(JobEventKind::PhaseStarted { phase }, Some(run.shipped()))
            .await;
        let mut ctx = PhaseContext {
            phase,
            job_id: run.job_id,
            job: run.job.clone(),
            run_dir: run.run_dir.clone(),
            env: run.env.clone(),
            env_remove: crate::config::CREDENTIAL_ENV
                .iter()
                .map(|v| v.to_string())
                .collect(),
            agent_name: self.config.name.to_string(),
            kill: run.stop.hard.clone(),
        };
        let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(32);
        let (serial_tx, mut serial_rx) = mpsc::channel::<Bytes>(32);
        let sink = OutputSink {
            output: out_tx,
            serial: serial_tx,
        };
        let output_timeout =
            (phase == Phase::Test).then(|| cap(run.job.output_timeout(), self.config.output_timeout_cap));
        if output_timeout.is_some() {
            run.output.last_activity.store(Millis::now().0, Ordering::Relaxed);
        }
        let is_reserve = phase == Phase::Reserve;
        let mut hold_until = None;
        if is_reserve {
            match self.start_reservation(run).await {
                Ok((until, keys_file)) => {
                    hold_until = Some(until);
                    if let Some(f) = keys_file {
                        ctx.env.insert(
                            flinger_connectors::SSH_KEYS_FILE_ENV.into(),
                            f.display().to_string(),
                        );
                    }
                }
                Err(e) => {
                    warn!(job_id = %run.job_id, error = %e, "cannot start the reservation");
                    run.output
                        .send(
                            phase,
                            Bytes::from(format!("flinger-agent: cannot reserve: {e}\n")),
                        )
                        .await;
                    run.output.flush().await;
                    run.reporter
                        .event_after(
                            JobEventKind::PhaseFinished {
                                phase,
                                exit_code: 1,
                                detail: Some(e),
                            },
                            Some(run.shipped()),
                        )
                        .await;
                    return 1;
                }
            }
        }
        // Testflinger's device connectors read the test phase's secrets from testflinger.json,
        // as its agent writes them there: the values, for this phase only.
        let revealed = if phase == Phase::Test
            && self.connector.runs_testflinger_connectors()
            && !run.secrets.is_empty()
        {
            match crate::jobfile::reveal(&run.run_dir, &run.job, run.job_id, &run.secrets).await {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(job_id = %run.job_id, error = %e, "cannot write the secrets into testflinger.json");
                    run.output
                        .send(
                            phase,
                            Bytes::from(format!(
                                "flinger-agent: cannot write the secrets into testflinger.json ({e}); they are in the environment only\n"
                            )),
                        )
                        .await;
                    None
                }
            }
        } else {
            None
        };
        let mut noted_held = false;
        let result = {
            let phase_token = token.clone();
            let fut = self.connector.run_phase(&ctx, &sink, phase_token);
            tokio::pin!(fut);
            let mut result: Option<Result<PhaseOutcome, flinger_connectors::ConnectorError>> = None;
            let mut ended_by_deadline = false;
            loop {
                let silence_deadline = output_timeout.map(|t| {
                    let last = Millis(run.output.last_activity.load(Ordering::Relaxed));
                    Instant::now() + t.saturating_sub(Millis::now().since(last))
                });
                let reserve_deadline = hold_until.map(|_| {
                    let until = run.deadline.borrow().unwrap_or_else(Millis::now);
                    Instant::now() + until.since(Millis::now())
                });
                tokio::select! {
                    r = &mut fut, if result.is_none() => {
                        result = Some(r);
                        // A reservation holds the device until its deadline even when the
                        // connector's own reserve step is done (unless it failed).
                        let holding = is_reserve && matches!(&result, Some(Ok(o)) if o.exit_code == 0) && !token.is_cancelled();
                        if !holding {
                            break;
                        }
                    }
                    Some(b) = out_rx.recv() => run.output.send(phase, b).await,
                    Some(b) = serial_rx.recv() => run.serial.send(phase, b).await,
                    _ = sleep_opt(silence_deadline) => {
                        let t = output_timeout.expect("only armed with an output timeout");
                        let last = Millis(run.output.last_activity.load(Ordering::Relaxed));
                        if Millis::now().since(last) >= t {
                            run.stop.request(StopReason::OutputTimeout(t));
                        }
                    }
                    _ = sleep_opt(reserve_deadline), if !ended_by_deadline => {
                        let until = run.deadline.borrow().unwrap_or_else(Millis::now);
                        if Millis::now() >= until {
                            info!(job_id = %run.job_id, "reservation reached its deadline");
                            ended_by_deadline = true;
                            token.cancel();
                            if result.is_some() {
                                break;
                            }
                        }
                    }
                    _ = run.deadline.changed(), if is_reserve => {}
                    _ = token.cancelled(), if result.is_some() => break,
                    _ = run.stop.held.cancelled(), if phase == Phase::Provision && !noted_held => {
                        noted_held = true;
                        let why = match run.stop.reason() {
                            Some(StopReason::Cancelled(r)) if !r.is_empty() => format!(" ({r})"),
                            _ => String::new(),
                        };
                        info!(job_id = %run.job_id, "cancel held until provision ends");
                        run.output
                            .send(
                                phase,
                                Bytes::from(format!(
                                    "\nflinger-agent: cancel requested{why} during provision: provision goes on to its end (a device stopped mid-flash may not boot again), then the job is cancelled\n"
                                )),
                            )
                            .await;
                    }
                }
            }
            let outcome = result.expect("the loop ends only with a result");
            match outcome {
                // A reservation that ended at its deadline ended well, whatever the killed
                // reserve step returned.
                Ok(_) if ended_by_deadline && !run.stop.is_stopped() => Ok(PhaseOutcome {
                    exit_code: 0,
                    detail: None,
                }),
                other => other,
            }
        };
        // The phase's processes are gone: the values leave testflinger.json.
        if let Some(r) = revealed
            && let Err(e) = r.conceal(&run.job, run.job_id).await
        {
            warn!(job_id = %run.job_id, error = %e, "cannot take the secrets out of testflinger.json");
        }
        drop(sink);
        // The connector may have left senders in tasks of its own: drain for a bounded time.
        let drain = async {
            loop {
                tokio::select! {
                    b = out_rx.recv() => match b { Some(b) => run.output.send(phase, b).await, None => break },
                    Some(b) = serial_rx.recv() => run.serial.send(phase, b).await,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        // Testflinger's device connectors leave the phase's serial console log in the run
        // directory rather than stream it.
        if let Some(log) = read_job_file(&run.run_dir.join(format!("{phase}-serial.log"))).await
            && !log.is_empty()
        {
            run.serial.send(phase, Bytes::from(log)).await;
        }
        if phase == Phase::Provision && run.stop.held.is_cancelled() {
            run.output
                .send(
                    phase,
                    Bytes::from_static(
                        b"flinger-agent: provision is over; cancelling the job as requested\n",
                    ),
                )
                .await;
        }
        run.output.flush().await;
        run.serial.flush().await;
        let (exit_code, detail) = match result {
            Ok(o) if o.exit_code != 0 => {
                let error = read_job_file(&run.run_dir.join(CONNECTOR_ERROR_FILE))
                    .await
                    .and_then(|text| connector_error(&String::from_utf8_lossy(&text), phase));
                let detail = match (error, o.detail) {
                    (Some(e), Some(d)) => Some(format!("{e}; {d}")),
                    (e, d) => e.or(d),
                };
                (o.exit_code, detail)
            }
            Ok(o) => (o.exit_code, o.detail),
            Err(e) => {
                warn!(job_id = %run.job_id, %phase, error = %e, "phase could not run");
                run.output
                    .send(phase, Bytes::from(format!("flinger-agent: {e}\n")))
                    .await;
                run.output.flush().await;
                (127, Some(e.to_string()))
            }
        };
        info!(job_id = %run.job_id, %phase, exit_code, "phase finished");
        let took = started.elapsed();
        crate::metrics::phase_finished(phase.as_str(), exit_code, took);
        if phase != Phase::Cleanup {
            let release = run.release.label().await.to_owned();
            run.tf_metrics
                .phase_finished(phase.as_str(), exit_code, took, &release);
        }
        run.reporter
            .event_after(
                JobEventKind::PhaseFinished {
                    phase,
                    exit_code,
                    detail,
                },
                Some(run.shipped()),
            )
            .await;
        exit_code
    }

    /// A multi-device child after its allocate phase: tells the scheduler it holds the device
    /// (with the device's info for the parent's test phase), then holds it — the lease kept
    /// alive — until the job is stopped: released when its parent ends (the scheduler sends a
    /// cancel), cancelled, or its lease lost. The phases after allocate and cleanup follow.
    async fn hold_for_parent(&self, run: &mut Run, holding: &AtomicBool) {
        let parent = run.job.parent_job_id().map(|p| p.to_string()).unwrap_or_default();
        let device_info = run.device_info.clone().or_else(|| {
            let ip = self
                .connector
                .device_ip()
                .or_else(|| run.env.get("DEVICE_IP").cloned())?;
            Some(serde_json::json!({"device_ip": ip, "agent_name": self.config.name.as_str()}))
        });
        holding.store(true, Ordering::SeqCst);
        info!(job_id = %run.job_id, %parent, "allocated: holding the device for the parent job");
        run.output
            .send(
                Phase::Allocate,
                Bytes::from(format!(
                    "flinger-agent: allocated for parent job {parent}; the device is held until the parent ends or this job is cancelled\n"
                )),
            )
            .await;
        run.output.flush().await;
        run.reporter.event(JobEventKind::Allocated { device_info }).await;
        run.stop.token.cancelled().await;
        holding.store(false, Ordering::SeqCst);
        let why = match run.stop.reason() {
            Some(StopReason::Cancelled(r)) => r,
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        info!(job_id = %run.job_id, %why, "allocation over");
        if !run.stop.hard.is_cancelled() {
            run.output
                .send(
                    Phase::Allocate,
                    Bytes::from(format!("flinger-agent: the device is no longer held: {why}\n")),
                )
                .await;
            run.output.flush().await;
        }
    }

    /// Resolves and writes the job's ssh keys for the connector to install, sets the
    /// reservation's deadline (one the scheduler already extended wins) and says so.
    async fn start_reservation(&self, run: &mut Run) -> Result<(Millis, Option<PathBuf>), String> {
        let entries = run.job.ssh_keys();
        let keys_file = if entries.is_empty() {
            None
        } else {
            let keys = crate::keys::resolve(&entries, &self.config.key_servers).await?;
            let path = run.scratch.join("authorized_keys");
            tokio::fs::write(&path, keys.join("\n") + "\n")
                .await
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(path)
        };
        let timeout = run
            .job
            .reserve_timeout()
            .unwrap_or(broker_schema::job::DEFAULT_RESERVE_TIMEOUT);
        let until = run
            .deadline
            .borrow()
            .unwrap_or_else(|| Millis::now().plus(timeout));
        run.deadline_tx.send_replace(Some(until));
        let device_ip = run
            .device_info
            .as_ref()
            .and_then(|d| d.get("device_ip"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .or_else(|| self.connector.device_ip())
            .or_else(|| run.env.get("DEVICE_IP").cloned())
            .or_else(|| run.env.get("device_ip").cloned());
        let user = self.connector.reserve_user().unwrap_or_else(|| {
            run.job
                .test_data()
                .and_then(|t| t.get("test_username"))
                .and_then(|v| v.as_str())
                .unwrap_or("ubuntu")
                .to_owned()
        });
        run.reporter
            .event(JobEventKind::ReservationStarted {
                until,
                device_ip,
                user: Some(user),
            })
            .await;
        Ok((until, keys_file))
    }

    /// Starts asking the provisioned device for its release (the `release` label of
    /// Testflinger's metrics), as Testflinger's agent does: only when metrics are served and
    /// the device is one of Testflinger's device connectors', at the `device_ip` it reported.
    fn ask_release(&self, run: &mut Run) {
        if self.config.metrics_listen.is_none() || !self.connector.runs_testflinger_connectors() {
            return;
        }
        let Some(ip) = run
            .device_info
            .as_ref()
            .and_then(|d| d.get("device_ip"))
            .and_then(|v| v.as_str())
        else {
            return;
        };
        let user = run
            .job
            .test_data()
            .and_then(|t| t.get("test_username"))
            .and_then(|v| v.as_str())
            .unwrap_or("ubuntu");
        run.release = crate::release::Release::ask(ip.to_owned(), user.to_owned());
    }

    /// Reads `device-info.json` (written by Testflinger device connectors after provisioning)
    /// and publishes it; its `device_ip` becomes `DEVICE_IP` for later phases.
    async fn read_device_info(&self, run: &mut Run) {
        let path = run.run_dir.join("device-info.json");
        let Some(text) = read_job_file(&path).await else {
            return;
        };
        let parsed: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                warn!(job_id = %run.job_id, error = %e, "device-info.json is not JSON; ignored");
                return;
            }
        };
        let info = parsed.get("device_info").cloned().unwrap_or(parsed);
        if let Some(ip) = info.get("device_ip").and_then(|v| v.as_str()) {
            run.env.insert("DEVICE_IP".into(), ip.to_owned());
        }
        run.device_info = Some(info.clone());
        run.reporter.event(JobEventKind::DeviceInfo { info }).await;
    }

    /// Tells the scheduler the run was given up, so that it requeues the job now rather than
    /// when the lease expires. One attempt, bounded: the broker may be what failed; then the
    /// message is kept and told once the agent is connected again ([`crate::unreported`]).
    async fn abandon(&self, reporter: &Reporter, reason: &Option<StopReason>) {
        let reason = match reason {
            Some(StopReason::LeaseLost(r)) => format!("lease lost: {r}"),
            Some(StopReason::Shutdown) => "the agent is shutting down".to_owned(),
            other => format!("{other:?}"),
        };
        let ev = broker_schema::messages::JobEvent {
            job_id: reporter.job_id,
            attempt: reporter.attempt,
            agent: Some(reporter.agent.clone()),
            at: Millis::now(),
            shipped: None,
            kind: JobEventKind::RunAbandoned { reason },
        };
        let key = Names::job_status_key(&reporter.job_id);
        let exchange = self.names.events_exchange();
        let opts = broker_schema::bus::PublishOptions::default();
        let publish = self.publisher.publish(&exchange, &key, &ev, &opts);
        match tokio::time::timeout(Duration::from_secs(3), publish).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                warn!(job_id = %reporter.job_id, error = %e, "could not tell the scheduler the run was given up")
            }
            Err(_) => {
                warn!(job_id = %reporter.job_id, "could not tell the scheduler the run was given up in time")
            }
        }
        self.unreported.keep(&ev).await;
    }

    /// Notes locally why a run stopped without reporting its results (its lease was lost, or
    /// the agent is shutting down), for operators.
    async fn journal(&self, job_id: Uuid, attempt: u32, reason: &Option<StopReason>) {
        warn!(%job_id, attempt, ?reason, "run stopped without its lease; no results reported");
        let line = serde_json::json!({
            "at": Millis::now().to_rfc3339(),
            "job_id": job_id,
            "attempt": attempt,
            "reason": format!("{reason:?}"),
        });
        let path = self.config.state_dir.join("journal.jsonl");
        let write = async {
            use tokio::io::AsyncWriteExt;
            tokio::fs::create_dir_all(&self.config.state_dir).await?;
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await?;
            f.write_all(format!("{line}\n").as_bytes()).await
        };
        if let Err(e) = write.await {
            warn!(error = %e, path = %path.display(), "cannot write the journal");
        }
    }
}

fn cap(job: Duration, agent_cap: Option<Duration>) -> Duration {
    agent_cap.map_or(job, |c| job.min(c))
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where Testflinger's device connectors write why a phase failed:
/// `{"<phase>_exception_info": {"exception_name", "exception_message", "exception_cause"}}`,
/// one object appended per failing phase.
pub const CONNECTOR_ERROR_FILE: &str = "device-connector-error.json";

/// The agent's own directory for one run, inside its state directory.
pub fn scratch_dir(config: &AgentConfig, job_id: Uuid) -> PathBuf {
    config.state_dir.join("jobs").join(job_id.to_string())
}

/// An empty directory at `dir` (what an earlier run left there is removed).
async fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    if tokio::fs::try_exists(dir).await? {
        tokio::fs::remove_dir_all(dir).await?;
    }
    tokio::fs::create_dir_all(dir).await
}

/// A fresh run directory holding `testflinger.json` (the job, with its secrets' paths:
/// [`crate::jobfile`]) and an empty `device-connector-error.json` (Testflinger's agent makes
/// one; some connector wrappers expect it).
async fn prepare_run_dir(dir: &Path, job: &JobDefinition, job_id: Uuid) -> std::io::Result<()> {
    fresh_dir(dir).await?;
    crate::jobfile::write(dir, job, job_id).await?;
    tokio::fs::write(dir.join(CONNECTOR_ERROR_FILE), b"").await
}

/// A fresh directory of the agent's own for the run, naming the run directory: should the
/// agent be killed, the next process removes that directory
/// ([`crate::leftovers::remove_abandoned_runs`]).
async fn prepare_scratch(scratch: &Path, run_dir: &Path) -> std::io::Result<()> {
    fresh_dir(scratch).await?;
    tokio::fs::write(
        scratch.join(crate::leftovers::RUN_DIR_FILE),
        run_dir.display().to_string(),
    )
    .await
}

/// A regular file the job's commands left in the run directory. A symbolic link is not
/// followed: the job must not make the agent publish a file from outside its run directory.
async fn read_job_file(path: &Path) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .await
        .ok()?;
    if !f.metadata().await.ok()?.is_file() {
        return None;
    }
    let mut data = vec![];
    f.read_to_end(&mut data).await.ok()?;
    Some(data)
}

/// The phase's failure as Testflinger's agent words it (`name: message [caused by cause]`),
/// from the contents of `device-connector-error.json`. Objects appended one after another (one
/// per failing phase) are all searched; the device connector names the test phase `runtest`.
pub fn connector_error(text: &str, phase: Phase) -> Option<String> {
    let keys = [
        format!("{}_exception_info", phase.as_str()),
        format!("{}_exception_info", phase.connector_stage()),
    ];
    let info = serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .map_while(Result::ok)
        .find_map(|v| keys.iter().find_map(|k| v.get(k).cloned()))?;
    let field = |k: &str| match info.get(k) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let name = field("exception_name").unwrap_or_else(|| "Exception".into());
    let message = field("exception_message").unwrap_or_default();
    Some(match field("exception_cause") {
        Some(cause) => format!("{name}: {message} caused by {cause}"),
        None => format!("{name}: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connector_error_is_worded_as_testflinger_words_it() {
        let text = r#"{"provision_exception_info": {"exception_name": "ProvisioningError", "exception_message": "no image", "exception_cause": null}}{"runtest_exception_info": {"exception_name": "E", "exception_message": "m", "exception_cause": "OSError('x')"}}"#;
        assert_eq!(
            connector_error(text, Phase::Provision).as_deref(),
            Some("ProvisioningError: no image")
        );
        assert_eq!(
            connector_error(text, Phase::Test).as_deref(),
            Some("E: m caused by OSError('x')")
        );
        assert_eq!(connector_error(text, Phase::Reserve), None);
        assert_eq!(connector_error("", Phase::Provision), None);
        assert_eq!(connector_error("not json", Phase::Provision), None);
    }

    #[tokio::test]
    async fn files_left_by_the_job_are_read_only_when_they_are_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.log"), b"serial").unwrap();
        std::fs::write(dir.path().join("outside"), b"agent's secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("link.log")).unwrap();
        std::fs::create_dir(dir.path().join("dir.log")).unwrap();
        assert_eq!(
            read_job_file(&dir.path().join("a.log")).await.as_deref(),
            Some(&b"serial"[..])
        );
        assert_eq!(read_job_file(&dir.path().join("link.log")).await, None);
        assert_eq!(read_job_file(&dir.path().join("dir.log")).await, None);
        assert_eq!(read_job_file(&dir.path().join("missing.log")).await, None);
    }
}

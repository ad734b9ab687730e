//! The agent: one per device. Takes a job, runs it, takes the next; heartbeats and obeys its
//! control queue all along; leaves the queues alone while out of service.

use crate::config::AgentConfig;
use crate::control::Controls;
use crate::heartbeat;
use crate::intake::Intake;
use crate::restart::Ending;
use crate::runner::{CurrentSlot, Runner};
use crate::status::Status;
use crate::stop::Stop;
use broker_schema::Millis;
use broker_schema::bus::{Bus, BusConfig, Publisher, RpcClient, supervise};
use broker_schema::messages::{AdminState, SchedulerReply, SchedulerRequest, SetAgentStateRequest};
use flinger_connectors::ConnectorError;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(String),
}

pub struct Agent {
    config: Arc<AgentConfig>,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            config: Arc::new(config),
        }
    }

    /// Runs until `shutdown`, or until a restart was asked for (SIGUSR1, the `restart` admin
    /// state) and the agent is idle ([`Ending::Restart`]). A job running when `shutdown` fires
    /// is stopped at once and given back (`run_abandoned`): the scheduler requeues it as a new
    /// attempt, or, if that message is lost, when its lease lapses. None of the stopped run's
    /// results are reported.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Ending, AgentError> {
        // Everything below stops with this: on `shutdown`, or when the agent leaves to restart.
        let shutdown = shutdown.child_token();
        let status = Status::new();
        let mut services = JoinSet::new();
        // First: SIGUSR1 would otherwise kill the agent.
        let usr1 = crate::restart::on_sigusr1(status.clone(), shutdown.clone());
        let config = self.config.clone();
        let connector = config.connector.build()?;
        crate::metrics::install(config.metrics_listen).map_err(AgentError::Metrics)?;
        let killed = crate::leftovers::sweep(config.name.as_str(), &config.state_dir);
        if killed > 0 {
            warn!(groups = killed, "killed processes left by an earlier run");
        }
        for dir in [&config.execution_basedir, &config.state_dir] {
            std::fs::create_dir_all(dir).map_err(|source| AgentError::Dir {
                path: dir.clone(),
                source,
            })?;
        }
        // Run directories and per-run files of runs an earlier process did not finish (it
        // crashed or was killed): a run directory may hold the job's secret values.
        let removed = crate::leftovers::remove_abandoned_runs(&config.state_dir);
        if removed > 0 {
            warn!(
                runs = removed,
                "removed the run directories of runs an earlier process left"
            );
        }
        let bus = Bus::new(
            BusConfig {
                url: config.broker_url.clone(),
                names: broker_schema::Names::new(&config.namespace).with_quorum_queues(config.quorum_queues),
                connection_name: format!("flinger-agent {}", config.name),
            },
            shutdown.clone(),
        );
        let names = bus.names().clone();
        let publisher = Arc::new(Publisher::new(
            bus.clone(),
            format!("flinger-agent {}", config.name),
        ));
        let rpc = Arc::new(RpcClient::new(bus.clone()));
        let current = CurrentSlot::default();

        // Declare this agent's queues before it says it is waiting: a job submitted the moment
        // the lab shows the agent must be routable.
        declare_queues(&bus, &config).await;

        let controls = Arc::new(Controls {
            bus: bus.clone(),
            publisher: publisher.clone(),
            agent: config.name.clone(),
            current: current.clone(),
            status: status.clone(),
            started: Millis::now(),
        });
        {
            let controls = controls.clone();
            let token = shutdown.clone();
            services.spawn(async move { supervise("control", &token, || controls.serve()).await });
        }
        // issue 4: queue descriptions and images for the gateway's `/v1/agents/queues|images`.
        services.spawn(crate::gateway::advertise(config.clone(), shutdown.clone()));
        // Runs given up while the broker was unreachable are told on each (re)connection.
        let unreported = Arc::new(crate::unreported::Unreported::new(
            &config.state_dir,
            publisher.clone(),
            names.clone(),
        ));
        let connected = Arc::new(tokio::sync::Notify::new());
        services.spawn(crate::unreported::serve(
            unreported.clone(),
            connected.clone(),
            shutdown.clone(),
        ));
        {
            let bus = bus.clone();
            services.spawn(crate::metrics::follow_connections(
                move || bus.connections_made(),
                move |n| {
                    crate::metrics::broker_connections(n);
                    connected.notify_one();
                },
                crate::metrics::CONNECTIONS_EVERY,
                shutdown.clone(),
            ));
        }
        services.spawn(heartbeat::beat(
            publisher.clone(),
            names.clone(),
            config.clone(),
            status.clone(),
            shutdown.clone(),
        ));
        let (serving_tx, mut serving) = tokio::sync::watch::channel(None);
        services.spawn(crate::serving::follow(
            rpc.clone(),
            names.clone(),
            config.name.clone(),
            config.queues.clone(),
            crate::serving::refresh_every(config.heartbeat_interval),
            serving_tx,
            shutdown.clone(),
        ));

        let runner = Runner {
            connector,
            publisher: publisher.clone(),
            rpc: rpc.clone(),
            names: names.clone(),
            config: config.clone(),
            status: status.clone(),
            current,
            shutdown: shutdown.clone(),
            unreported,
        };
        let mut intake = Intake::new(
            bus.clone(),
            publisher.clone(),
            rpc.clone(),
            config.name.clone(),
            config.queues.clone(),
        );
        intake.fetches_files = config.gateway.is_some();
        let mut keepers = JoinSet::new();
        info!(agent = %config.name, queues = ?config.queues.iter().map(|q| q.as_str()).collect::<Vec<_>>(), connector = runner.connector.kind(), "agent running");

        let mut ending = Ending::Shutdown;
        while !shutdown.is_cancelled() {
            while keepers.try_join_next().is_some() {}
            let now = status.get();
            if now.restart.is_some() {
                ending = Ending::Restart;
                break;
            }
            if now.admin.is_some() {
                wait_for_service(&status, &shutdown).await;
                continue;
            }
            let interrupt = interrupt_waiting(&status, &serving, &shutdown);
            let queues = serving.borrow_and_update().clone();
            let Some(queues) = queues else {
                // Not known yet which queues to serve: wait for the answer (or anything else).
                interrupt.token.cancelled().await;
                continue;
            };
            let taken = intake.take(&interrupt, &queues).await;
            interrupt.token.cancel(); // ends the watcher
            match taken {
                Ok(Some(job)) => {
                    let summary = runner.run(job).await;
                    if let Some(k) = summary.keeper {
                        keepers.spawn(async move {
                            let _ = k.await;
                        });
                    }
                    if let Some(phase) = summary.recovery_failed {
                        let comment = format!("device recovery failed in {phase} of job {}", summary.job_id);
                        go_offline(&rpc, &names, &config, &status, comment).await;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "cannot take jobs right now; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        info!(?ending, "agent stopping");
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while keepers.join_next().await.is_some() {}
        })
        .await;
        keepers.abort_all();
        if ending == Ending::Restart {
            // As Testflinger's agent does: offline, saying why, until the new process reports.
            let why = status.get().restart.unwrap_or_default();
            info!(%why, "restarting: exiting for the supervisor to start the agent again");
            status.going_away(format!("restarting: {why}"));
            heartbeat::publish(&publisher, &names, &config, &status.get()).await;
        }
        shutdown.cancel();
        let _ = usr1.await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while services.join_next().await.is_some() {}
        })
        .await;
        services.abort_all();
        rpc.close().await;
        publisher.close().await;
        bus.close().await;
        info!("agent stopped");
        Ok(ending)
    }
}

/// Declares the agent's class queues and control queue, retrying until the broker answers or
/// the agent shuts down.
async fn declare_queues(bus: &Bus, config: &AgentConfig) {
    let names = bus.names().clone();
    loop {
        let declared = bus
            .with_channel(async |ch| {
                for class in &config.queues {
                    broker_schema::topology::declare_class(ch, &names, class).await?;
                }
                Ok(broker_schema::topology::declare_agent(ch, &names, &config.name).await?)
            })
            .await;
        match declared {
            Ok(()) => return,
            Err(broker_schema::bus::BusError::Shutdown) => return,
            Err(e) => {
                warn!(error = %e, "cannot declare the agent's queues; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = bus.shutdown_token().cancelled() => return,
                }
            }
        }
    }
}

/// A stop signal for waiting for a job: it fires on shutdown, when an admin takes the agent out
/// of service, when a restart is asked for, and when the queues to serve change (the intake
/// then starts again with the new ones).
fn interrupt_waiting(
    status: &Status,
    serving: &crate::serving::Serving,
    shutdown: &CancellationToken,
) -> Stop {
    let interrupt = Stop::new();
    let mut changes = status.subscribe();
    let mut serving = serving.clone();
    serving.mark_unchanged();
    let (token, shutdown) = (interrupt.token.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            {
                let s = changes.borrow_and_update();
                if s.admin.is_some() || s.restart.is_some() {
                    token.cancel();
                    return;
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = serving.changed() => { token.cancel(); return }
                _ = shutdown.cancelled() => { token.cancel(); return }
                _ = token.cancelled() => return,
            }
        }
    });
    interrupt
}

/// Waits until an admin puts the agent back in service, a restart is asked for, or shutdown.
async fn wait_for_service(status: &Status, shutdown: &CancellationToken) {
    let mut changes = status.subscribe();
    while {
        let s = changes.borrow_and_update();
        s.admin.is_some() && s.restart.is_none()
    } {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Takes the agent out of service after a failed device recovery, and records it with the
/// scheduler so that it survives restarts until an admin puts the agent back.
async fn go_offline(
    rpc: &RpcClient,
    names: &broker_schema::Names,
    config: &AgentConfig,
    status: &Status,
    comment: String,
) {
    error!(%comment, "going offline");
    status.set_admin(Some(AdminState::Offline), Some(comment.clone()));
    let req = SchedulerRequest::SetAgentState(SetAgentStateRequest {
        agent: config.name.clone(),
        state: Some(AdminState::Offline),
        comment,
    });
    for _ in 0..5 {
        match rpc
            .call::<_, SchedulerReply>(&names.scheduler_rpc_queue(), &req, Duration::from_secs(5))
            .await
        {
            Ok(SchedulerReply::Command(_)) => return,
            Ok(other) => warn!(?other, "unexpected reply"),
            Err(e) => warn!(error = %e, "cannot record going offline; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

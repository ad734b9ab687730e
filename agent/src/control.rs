//! The agent's control queue: cancels, reservation deadlines, recorded ends of runs and admin
//! decisions, applied to the job being run, its lease keeper or the agent itself.

use crate::runner::CurrentSlot;
use crate::status::Status;
use crate::stop::StopReason;
use broker_schema::Millis;
use broker_schema::bus::{Bus, BusError, Deliveries, Publisher, dead_letter};
use broker_schema::messages::{AdminState, Control, ControlCommand};
use broker_schema::topology::declare_agent;
use broker_schema::{AgentName, decode};
use lapin::options::BasicAckOptions;
use std::sync::Arc;
use tracing::{debug, info, warn};

pub struct Controls {
    pub bus: Bus,
    pub publisher: Arc<Publisher>,
    pub agent: AgentName,
    pub current: CurrentSlot,
    pub status: Status,
    /// When this process started: a restart ordered before it was for an earlier process.
    pub started: Millis,
}

impl Controls {
    /// Applies one command, sent at `at`. Commands for a job that is not (or no longer) running
    /// are ignored: the scheduler repeats what matters in lease renewals.
    pub fn apply(&self, at: Millis, command: ControlCommand) {
        match command {
            ControlCommand::SetAdminState {
                state: Some(AdminState::Restart),
                comment,
            } => {
                if at < self.started {
                    info!(%at, "a restart ordered before this agent started; ignored");
                    return;
                }
                info!(%comment, "restart ordered: restarting after the current job");
                let why = if comment.is_empty() {
                    "restart requested by an admin".to_owned()
                } else {
                    comment
                };
                self.status.request_restart(why);
            }
            ControlCommand::Cancel {
                job_id,
                attempt,
                reason,
            } => self.current.with(|job| match job {
                Some(j) if j.job_id == job_id && j.attempt == attempt => {
                    j.stop.request(StopReason::Cancelled(reason))
                }
                _ => info!(%job_id, "cancel for a job not running here; ignored"),
            }),
            ControlCommand::SetReservationDeadline { job_id, until } => self.current.with(|job| match job {
                Some(j) if j.job_id == job_id => {
                    info!(%job_id, %until, "reservation deadline moved");
                    j.deadline.send_replace(Some(until));
                }
                _ => info!(%job_id, "deadline for a job not running here; ignored"),
            }),
            ControlCommand::RunRecorded { job_id, attempt } => {
                if !self.current.unrecorded.recorded(job_id, attempt) {
                    debug!(%job_id, attempt, "end of a run no keeper waits for; ignored");
                }
            }
            ControlCommand::SetAdminState { state, comment } => {
                info!(?state, %comment, "admin state set");
                let comment = (!comment.is_empty()).then_some(comment);
                self.status.set_admin(state, comment);
            }
        }
    }

    /// Consumes the control queue until shutdown.
    pub async fn serve(&self) -> Result<(), BusError> {
        let names = self.bus.names().clone();
        self.bus
            .with_channel(async |ch| {
                declare_agent(ch, &names, &self.agent).await?;
                let queue = names.agent_control_queue(&self.agent);
                let tag = format!("{}-control", self.agent);
                let mut deliveries =
                    Deliveries::start(ch, &queue, &tag, 16, self.bus.shutdown_token()).await?;
                while let Some(d) = deliveries.next().await? {
                    match decode::<Control>(&d.data) {
                        Ok(c) => self.apply(c.at, c.command),
                        Err(e) => {
                            warn!(error = %e, "malformed control message; dead-lettering it");
                            if dead_letter(&self.publisher, &names, &d, &queue, &e.to_string())
                                .await
                                .is_err()
                            {
                                continue; // stays unacknowledged; redelivered after a reconnect
                            }
                        }
                    }
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                Ok(())
            })
            .await
    }
}

//! An agent double: speaks the agents' protocol on the broker, built from `broker-schema` as a
//! real agent is, so the scheduler sees nothing unusual on the wire, while the test decides what
//! it says and when — events out of order, output late, deadlines ignored. It leases jobs of
//! one class, renews leases, reports events and output, and reads its control queue.

use broker_schema::bus::{Bus, BusConfig, PublishOptions, Publisher, RpcClient};
use broker_schema::messages::*;
use broker_schema::names::Names;
use broker_schema::{AgentName, DeviceClass, codec, topology};
use futures::StreamExt;
use std::time::Duration;

pub struct AgentDouble {
    pub name: AgentName,
    bus: Bus,
    rpc: RpcClient,
    publisher: Publisher,
    names: Names,
    class: DeviceClass,
}

impl AgentDouble {
    /// Declares its class queue and control queue, as an agent does at start.
    pub async fn start(broker_url: &str, names: &Names, class: &str) -> AgentDouble {
        let bus = Bus::new(
            BusConfig {
                url: broker_url.into(),
                names: names.clone(),
                connection_name: "agent double (test)".into(),
            },
            tokio_util::sync::CancellationToken::new(),
        );
        let name = AgentName::parse("rogue-1").unwrap();
        let class = DeviceClass::parse(class).unwrap();
        let (ch, _) = bus.channel().await.unwrap();
        topology::declare_topology(&ch, names).await.unwrap();
        topology::declare_class(&ch, names, &class).await.unwrap();
        topology::declare_agent(&ch, names, &name).await.unwrap();
        AgentDouble {
            rpc: RpcClient::new(bus.clone()),
            publisher: Publisher::new(bus.clone(), "rogue"),
            bus,
            name,
            names: names.clone(),
            class,
        }
    }

    /// Takes the next job of its class and leases it, as an agent does.
    pub async fn lease_next(&self) -> LeaseGrant {
        let (ch, _) = self.bus.channel().await.unwrap();
        let mut consumer = broker_schema::bus::consume(&ch, &self.names.class_queue(&self.class), "rogue", 1)
            .await
            .unwrap();
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a job within 30 s")
            .unwrap()
            .unwrap();
        let submission = codec::decode_submission(&d.data).unwrap();
        let request = SchedulerRequest::Lease(LeaseRequest {
            job_id: submission.job_id,
            agent: self.name.clone(),
            submission,
            published_by: d.properties.user_id().as_ref().map(|u| u.to_string()),
            fetches_files: None,
        });
        let reply: SchedulerReply = self
            .rpc
            .call(
                &self.names.scheduler_rpc_queue(),
                &request,
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        d.ack(Default::default()).await.unwrap();
        let _ = ch.close(200, "leased".into()).await;
        match reply {
            SchedulerReply::Lease(LeaseReply::Granted(g)) => g,
            other => panic!("no lease: {other:?}"),
        }
    }

    /// Tells the lab what it does, as an agent's reporter does.
    pub async fn report(&self, grant: &LeaseGrant, kind: JobEventKind) {
        self.report_after(grant, kind, None).await
    }

    /// Reports an event that came after `shipped` output chunks (a phase move, as agents send
    /// it).
    pub async fn report_after(&self, grant: &LeaseGrant, kind: JobEventKind, shipped: Option<OutputCounts>) {
        let ev = JobEvent {
            job_id: grant.job_id,
            attempt: grant.attempt,
            agent: Some(self.name.clone()),
            at: broker_schema::Millis::now(),
            shipped,
            kind,
        };
        self.publisher
            .publish(
                &self.names.events_exchange(),
                &Names::job_status_key(&grant.job_id),
                &ev,
                &PublishOptions::default(),
            )
            .await
            .unwrap();
    }

    /// Reports that `phase` started after `output` chunks of output (none of the serial log),
    /// as an agent's runner does.
    pub async fn phase_started(&self, grant: &LeaseGrant, phase: broker_schema::Phase, output: u64) {
        let shipped = OutputCounts { output, serial: 0 };
        self.report_after(grant, JobEventKind::PhaseStarted { phase }, Some(shipped))
            .await
    }

    /// Reports the run complete after `output` chunks of output, every phase of `phases`
    /// having exited 0.
    pub async fn finished_complete(&self, grant: &LeaseGrant, output: u64, phases: &[broker_schema::Phase]) {
        let kind = JobEventKind::Finished {
            outcome: Outcome::Complete,
            output: OutputCounts { output, serial: 0 },
            phase_status: phases.iter().map(|p| (*p, 0)).collect(),
            device_info: None,
            output_truncated: Default::default(),
        };
        self.report(grant, kind).await
    }

    /// Publishes one chunk of the run's output, as an agent's output pipe does.
    pub async fn output(&self, grant: &LeaseGrant, seq: u64, phase: broker_schema::Phase, text: &str) {
        let chunk = OutputChunk {
            job_id: grant.job_id,
            attempt: grant.attempt,
            stream: LogStream::Output,
            seq,
            phase,
            at: broker_schema::Millis::now(),
            data: text.as_bytes().to_vec().into(),
        };
        self.publisher
            .publish(
                &self.names.events_exchange(),
                &Names::job_output_key(&grant.job_id),
                &chunk,
                &PublishOptions::default(),
            )
            .await
            .unwrap();
    }

    /// Renews the lease every 300 ms, whatever the deadlines say, until it is refused;
    /// returns the reason.
    pub async fn renew_until_lost(&self, grant: &LeaseGrant, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let request = SchedulerRequest::Renew(RenewRequest {
                job_id: grant.job_id,
                attempt: grant.attempt,
                agent: self.name.clone(),
            });
            let reply: SchedulerReply = self
                .rpc
                .call(
                    &self.names.scheduler_rpc_queue(),
                    &request,
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            match reply {
                SchedulerReply::Renew(RenewReply::Lost { reason }) => return reason,
                SchedulerReply::Renew(RenewReply::Renewed { .. }) => {}
                other => panic!("unexpected renewal reply: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("the scheduler kept renewing the lease for {limit:?}");
    }

    /// The commands the scheduler sent to this agent so far.
    pub async fn control_commands(&self) -> Vec<ControlCommand> {
        let (ch, _) = self.bus.channel().await.unwrap();
        let queue = self.names.agent_control_queue(&self.name);
        let mut out = vec![];
        while let Some(m) = ch
            .basic_get(
                queue.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(codec::decode::<Control>(&m.delivery.data).unwrap().command);
        }
        let _ = ch.close(200, "read".into()).await;
        out
    }

    pub async fn stop(self) {
        self.rpc.close().await;
        self.publisher.close().await;
        self.bus.close().await;
    }
}

//! `flinger poll JOB` (and `poll-serial`): follows a job until it ends.
//!
//! Every tick reads the job record (state, attempt, queue position) and then the log from the
//! next fragment on, prints only what is new, in phase order, and stops once the record says the
//! job ended; that last log read comes after the end was seen, so no output is left behind (the
//! scheduler stores a run's output before it records the run's end). Ticks come every 0.5 s
//! while something happens and slow down to 2 s while nothing does.
//!
//! Output goes to stdout exactly as produced; status lines go to stderr. With `--json`, stdout
//! carries one JSON event per line instead (`state`, `position`, `attempt`, `output`, `end`).

use crate::args::PollArgs;
use crate::client::Client;
use crate::exit::{CliError, Exit, Outcome};
use crate::model::{JobId, JobInfo, LogBatch, LogStream};
use crate::output::Ui;
use serde_json::json;
use std::time::{Duration, Instant};

const FAST: Duration = Duration::from_millis(500);
const SLOW: Duration = Duration::from_secs(2);
/// How long the server may stay unreachable (or failing) while a job is followed: a gateway
/// restart must not fail a CI job that takes hours.
const OUTAGE_LIMIT: Duration = Duration::from_secs(300);

/// What to follow.
#[derive(Clone, Debug)]
pub struct Follow {
    pub stream: LogStream,
    pub start_fragment: u64,
    pub phase: Option<String>,
}

impl Follow {
    pub fn from_start(stream: LogStream) -> Follow {
        Follow {
            stream,
            start_fragment: 0,
            phase: None,
        }
    }
}

pub async fn run(client: &Client, ui: &Ui, args: PollArgs, stream: LogStream) -> Result<Exit, CliError> {
    let follow = Follow {
        stream,
        start_fragment: args.start_fragment,
        phase: args.phase,
    };
    if args.oneshot {
        oneshot(client, ui, args.job_id, &follow).await
    } else {
        self::follow(client, ui, args.job_id, &follow).await
    }
}

/// Prints the output there is now and exits 0, whatever the job's state.
pub async fn oneshot(client: &Client, ui: &Ui, id: JobId, follow: &Follow) -> Result<Exit, CliError> {
    let answer = client
        .log(id, follow.stream, follow.start_fragment, follow.phase.as_deref())
        .await?;
    let batch = parse_batch(&answer, follow.stream)?;
    print_batch(ui, &batch, follow.stream)?;
    Ok(Exit::Success)
}

/// Follows the job to its end; the exit code is its outcome's.
pub async fn follow(client: &Client, ui: &Ui, id: JobId, follow: &Follow) -> Result<Exit, CliError> {
    let mut follower = Follower::new(id, follow.clone());
    let mut interval = FAST;
    let mut outage: Option<Instant> = None;
    loop {
        match follower.tick(client, ui).await {
            Ok(tick) => {
                if outage.take().is_some() {
                    ui.status("The server answers again.");
                }
                match tick {
                    Tick::Ended(outcome) => return finish(ui, id, &follower, &outcome),
                    Tick::Moved => interval = FAST,
                    Tick::Quiet => interval = (interval * 2).min(SLOW),
                }
            }
            Err(CliError::Client(e)) if e.is_transient() => {
                let since = *outage.get_or_insert_with(|| {
                    ui.status(&format!(
                        "{e}; still trying for up to {} s",
                        OUTAGE_LIMIT.as_secs()
                    ));
                    Instant::now()
                });
                if since.elapsed() >= OUTAGE_LIMIT {
                    return Err(e.into());
                }
                interval = SLOW;
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

fn finish(ui: &Ui, id: JobId, follower: &Follower, outcome: &Outcome) -> Result<Exit, CliError> {
    let exit = outcome.exit();
    if ui.is_json() {
        let info = follower.last.as_ref().map(|i| &i.raw);
        ui.event(&json!({
            "event": "end",
            "job_id": id.to_string(),
            "state": info.and_then(|i| i.get("state")),
            "job_state": info.and_then(|i| i.get("job_state")),
            "failure": info.and_then(|i| i.get("failure")),
            "exit_code": exit.code(),
        }))?;
    }
    ui.outcome(id, outcome);
    Ok(exit)
}

enum Tick {
    /// The job ended; everything it printed has been printed.
    Ended(Outcome),
    /// New output, a new state or a new position.
    Moved,
    /// Nothing new.
    Quiet,
}

/// What has been seen of the job so far.
struct Follower {
    id: JobId,
    follow: Follow,
    /// The fragment to ask for next (of the current attempt).
    next_fragment: u64,
    /// The last record read.
    last: Option<JobInfo>,
}

impl Follower {
    fn new(id: JobId, follow: Follow) -> Follower {
        Follower {
            id,
            next_fragment: follow.start_fragment,
            follow,
            last: None,
        }
    }

    async fn tick(&mut self, client: &Client, ui: &Ui) -> Result<Tick, CliError> {
        let info = client.info(self.id).await?;
        let mut moved = self.report_changes(ui, &info)?;
        // A job that was never leased has no output yet.
        if info.attempt > 0 {
            let answer = client
                .log(
                    self.id,
                    self.follow.stream,
                    self.next_fragment,
                    self.follow.phase.as_deref(),
                )
                .await?;
            let batch = parse_batch(&answer, self.follow.stream)?;
            print_batch(ui, &batch, self.follow.stream)?;
            self.next_fragment = batch.next_fragment(self.next_fragment);
            moved |= !batch.is_empty();
        }
        let outcome = Outcome::of(&info);
        self.last = Some(info);
        Ok(match outcome {
            Some(o) => Tick::Ended(o),
            None if moved => Tick::Moved,
            None => Tick::Quiet,
        })
    }

    /// Status lines (or JSON events) for what changed since the last record; whether anything did.
    fn report_changes(&mut self, ui: &Ui, info: &JobInfo) -> Result<bool, CliError> {
        let prev = self.last.as_ref();
        let mut moved = false;
        // Output is numbered per attempt: a new attempt (the previous agent was lost and the job
        // requeued) starts again from fragment 0.
        if let Some(p) = prev
            && p.attempt > 0
            && info.attempt != p.attempt
        {
            self.next_fragment = 0;
            moved = true;
            let agent = info.agent.as_deref().unwrap_or("an agent");
            if ui.is_json() {
                ui.event(&json!({"event": "attempt", "attempt": info.attempt, "agent": info.agent}))?;
            } else {
                ui.status(&format!(
                    "Attempt {} of the job (on {agent}); its output follows from the start.",
                    info.attempt
                ));
            }
        }
        if prev.is_none_or(|p| p.state != info.state) && !info.is_terminal() {
            moved = true;
            if ui.is_json() {
                let event = json!({"event": "state", "state": info.state, "job_state": info.job_state, "agent": info.agent});
                ui.event(&event)?;
            } else {
                ui.status(&describe_state(info));
            }
        }
        if let Some(position) = info.position
            && prev.is_none_or(|p| p.position != info.position)
        {
            moved = true;
            if ui.is_json() {
                ui.event(&json!({"event": "position", "position": position, "queue": info.queue}))?;
            } else {
                ui.status(&describe_position(&info.queue, position));
            }
        }
        Ok(moved)
    }
}

fn parse_batch(answer: &serde_json::Value, stream: LogStream) -> Result<LogBatch, CliError> {
    LogBatch::parse(answer, stream).map_err(|detail| {
        CliError::Client(crate::client::ClientError::BadAnswer {
            what: "the log read".into(),
            detail,
        })
    })
}

fn print_batch(ui: &Ui, batch: &LogBatch, stream: LogStream) -> Result<(), CliError> {
    for piece in batch.pieces.iter().filter(|p| !p.text.is_empty()) {
        if ui.is_json() {
            ui.event(&json!({
                "event": "output",
                "stream": stream.as_str(),
                "phase": piece.phase,
                "last_fragment_number": piece.last_fragment_number,
                "data": piece.text,
            }))?;
        } else {
            ui.raw(&piece.text)?;
        }
    }
    Ok(())
}

/// A status line for a job's (non-final) state.
pub fn describe_state(info: &JobInfo) -> String {
    match (info.state.as_str(), info.agent.as_deref()) {
        ("waiting", _) => format!("Job waiting for an agent on queue {}.", info.queue),
        ("leased", Some(agent)) => format!("Job taken by agent {agent}."),
        (state, Some(agent)) => format!("Job in {state} on agent {agent}."),
        (state, None) => format!("Job in {state}."),
    }
}

/// A status line for a waiting job's place in its queue (`position` is 0-based).
pub fn describe_position(queue: &str, position: u64) -> String {
    match position {
        0 => format!("Next in line on queue {queue}."),
        1 => format!("1 job ahead on queue {queue}."),
        n => format!("{n} jobs ahead on queue {queue}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(v: serde_json::Value) -> JobInfo {
        JobInfo::parse(v).unwrap()
    }

    #[test]
    fn states_are_described_with_their_agent() {
        assert_eq!(
            describe_state(&info(json!({"state": "waiting", "queue": "rpi4b"}))),
            "Job waiting for an agent on queue rpi4b."
        );
        let running =
            info(json!({"state": "provision", "queue": "q", "lease": {"agent": "dev-3", "until": "x"}}));
        assert_eq!(describe_state(&running), "Job in provision on agent dev-3.");
    }

    #[test]
    fn positions_count_the_jobs_ahead() {
        assert_eq!(describe_position("q", 0), "Next in line on queue q.");
        assert_eq!(describe_position("q", 1), "1 job ahead on queue q.");
        assert_eq!(describe_position("q", 5), "5 jobs ahead on queue q.");
    }
}

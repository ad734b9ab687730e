//! `flinger poll JOB` (and `poll-serial`): follows a job until it ends.
//!
//! Every tick reads the job record (state, attempt, queue position) and then the log from the
//! next fragment on, prints only what is new, in phase order, and stops once the record says the
//! job ended; that last log read comes after the end was seen, so no output is left behind (the
//! scheduler stores a run's output before it records the run's end).
//!
//! The log read is a long poll (`wait`): the server answers as soon as there is new output, so
//! output shows up live, or after a couple of seconds of silence, which paces the loop. A server
//! without long polls answers at once; ticks are then spaced 0.5 s while something happens,
//! slowing to 2 s while nothing does.
//!
//! Output goes to stdout exactly as produced; status lines go to stderr. With `--events` (and
//! when `submit --poll` or `reserve` follow a job with `--json`), stdout carries one JSON event
//! per line instead (`state`, `position`, `attempt`, `output`, `end`). `poll --json` alone prints
//! the log document once and exits, as `testflinger poll --json` does.
//!
//! With `--phase`, following also stops once that phase has ended (Testflinger's meaning), and
//! the exit code is the phase's outcome.

use crate::args::PollArgs;
use crate::client::{Client, ClientError, LogQuery};
use crate::commands::Ctx;
use crate::exit::{CliError, Exit, Outcome};
use crate::model::{JobId, JobInfo, LogBatch, LogStream};
use crate::output::{Ui, human_duration};
use broker_schema::Phase;
use flinger_api::{LogAnswer, Reservation};
use serde_json::json;
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};

const FAST: Duration = Duration::from_millis(500);
const SLOW: Duration = Duration::from_secs(2);
/// How long the server may hold a log read while there is no new output.
const LONG_POLL: Duration = Duration::from_secs(2);
/// How long the server may stay unreachable (or failing) while a job is followed: a gateway
/// restart must not fail a CI job that takes hours.
const OUTAGE_LIMIT: Duration = Duration::from_secs(300);
/// How often a waiting job's ETA is asked for again.
const ETA_EVERY: Duration = Duration::from_secs(15);

/// What to follow.
#[derive(Clone, Debug)]
pub struct Follow {
    pub stream: LogStream,
    pub start_fragment: u64,
    pub start_timestamp: Option<String>,
    pub phase: Option<String>,
}

impl Follow {
    pub fn from_start(stream: LogStream) -> Follow {
        Follow {
            stream,
            start_fragment: 0,
            start_timestamp: None,
            phase: None,
        }
    }
}

/// When following stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// The job ended.
    Ended,
    /// The job ended, or its reservation is up (`flinger reserve`).
    Reserved,
}

/// How following stopped.
pub enum Stop {
    Ended(Outcome),
    /// The reservation, as `GET /v1/job/<id>/reservation` describes it.
    Reserved(Reservation),
    /// The phase followed with `--phase` ended, with this exit code; the job goes on.
    PhaseEnded {
        phase: String,
        code: i64,
    },
}

impl Stop {
    /// The exit code of a `poll`: the job's outcome, or the followed phase's (0 when it passed,
    /// 1 for a failed test phase, 3 for another failed phase).
    pub fn exit(&self) -> Exit {
        match self {
            Stop::Ended(outcome) => outcome.exit(),
            Stop::Reserved(_) => Exit::Success,
            Stop::PhaseEnded { code: 0, .. } => Exit::Success,
            Stop::PhaseEnded { phase, .. } if phase == Phase::Test.as_str() => Exit::TestFailed,
            Stop::PhaseEnded { .. } => Exit::Infrastructure,
        }
    }
}

pub async fn run(ctx: &Ctx<'_>, args: PollArgs, stream: LogStream) -> Result<Exit, CliError> {
    let follow = Follow {
        stream,
        start_fragment: args.start_fragment,
        start_timestamp: args.start_timestamp,
        phase: args.phase,
    };
    // `--json` without `--events` prints the log once, as `testflinger poll --json` does.
    if args.oneshot || (ctx.ui.is_json() && !args.events) {
        oneshot(ctx, args.job_id, &follow).await
    } else {
        Ok(self::follow(ctx, args.job_id, &follow, Until::Ended)
            .await?
            .exit())
    }
}

/// Prints the output there is now and exits 0, whatever the job's state. With `--json`, the
/// server's log document as is (what `testflinger poll --json` prints).
pub async fn oneshot(ctx: &Ctx<'_>, id: JobId, follow: &Follow) -> Result<Exit, CliError> {
    let query = LogQuery {
        start_fragment: follow.start_fragment,
        start_timestamp: follow.start_timestamp.clone(),
        phase: follow.phase.clone(),
        wait: None,
    };
    let answer = ctx.client.log(id, follow.stream, &query).await?;
    if ctx.ui.is_json() {
        ctx.ui.document(&answer)?;
        return Ok(Exit::Success);
    }
    let batch = parse_batch(&answer, follow.stream)?;
    print_batch(ctx.ui, &batch, follow.stream)?;
    match batch.pieces.iter().map(|p| p.last_fragment_number).max() {
        Some(n) if n >= 0 => ctx.ui.hint(&format!("Last fragment number: {n}")),
        _ => ctx.ui.hint("No output yet."),
    }
    Ok(Exit::Success)
}

/// Follows the job until `until`. Ctrl-C offers to cancel the job (on a terminal) and stops.
pub async fn follow(ctx: &Ctx<'_>, id: JobId, follow: &Follow, until: Until) -> Result<Stop, CliError> {
    let mut follower = Follower::new(id, follow.clone(), until);
    loop {
        let interrupted = tokio::select! {
            r = follower.run(ctx) => return r,
            _ = tokio::signal::ctrl_c() => true,
        };
        if interrupted {
            ctx.ui.clear_bar();
            match ask_on_interrupt(ctx.ui, id) {
                Interrupt::Continue => continue,
                Interrupt::Cancel => {
                    super::cancel::run(ctx, id).await?;
                }
                Interrupt::Leave => {
                    ctx.ui.note(&format!(
                        "Stopped following job {id}; it goes on (`flinger cancel {id}` stops it). Next fragment number: {}.",
                        follower.next_fragment
                    ));
                }
            }
            return Err(CliError::Interrupted);
        }
    }
}

enum Interrupt {
    Continue,
    Cancel,
    Leave,
}

/// On a terminal, asks whether to cancel the job (as Testflinger does); elsewhere, leaves it.
fn ask_on_interrupt(ui: &Ui, id: JobId) -> Interrupt {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) || ui.is_json() {
        return Interrupt::Leave;
    }
    eprint!("\nCancel job {id} before exiting? (y)es/(N)o/(c)ontinue: ");
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return Interrupt::Leave;
    }
    match answer.trim().chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('y') => Interrupt::Cancel,
        Some('c') => Interrupt::Continue,
        _ => Interrupt::Leave,
    }
}

fn finish(ui: &Ui, id: JobId, follower: &Follower, outcome: &Outcome) -> Result<(), CliError> {
    if ui.is_json() {
        let info = follower.last.as_ref().map(|i| &i.raw);
        ui.event(&json!({
            "event": "end",
            "job_id": id.to_string(),
            "state": info.and_then(|i| i.get("state")),
            "job_state": info.and_then(|i| i.get("job_state")),
            "failure": info.and_then(|i| i.get("failure")),
            "exit_code": outcome.exit().code(),
        }))?;
    }
    ui.outcome(id, outcome);
    Ok(())
}

enum Tick {
    Stop(Stop),
    /// New output, a new state or a new position.
    Moved,
    /// Nothing new.
    Quiet,
}

/// What has been seen of the job so far.
struct Follower {
    id: JobId,
    follow: Follow,
    until: Until,
    /// The fragment to ask for next (of the current attempt).
    next_fragment: u64,
    /// The last record read.
    last: Option<JobInfo>,
    /// Whether the server takes `wait` (long polls); unknown servers are assumed to.
    long_poll: bool,
    /// The last ETA asked for, and when.
    eta: Option<(Instant, Option<u64>)>,
    /// While the server is unreachable: since when.
    outage: Option<Instant>,
}

impl Follower {
    fn new(id: JobId, follow: Follow, until: Until) -> Follower {
        Follower {
            id,
            next_fragment: follow.start_fragment,
            follow,
            until,
            last: None,
            long_poll: true,
            eta: None,
            outage: None,
        }
    }

    async fn run(&mut self, ctx: &Ctx<'_>) -> Result<Stop, CliError> {
        let mut interval = FAST;
        loop {
            let began = Instant::now();
            match self.tick(ctx).await {
                Ok(tick) => {
                    if self.outage.take().is_some() {
                        ctx.ui.status("The server answers again.");
                    }
                    match tick {
                        Tick::Stop(stop) => {
                            match &stop {
                                Stop::Ended(outcome) => finish(ctx.ui, self.id, self, outcome)?,
                                Stop::PhaseEnded { phase, code } => {
                                    self.finish_phase(ctx.ui, phase, *code)?
                                }
                                Stop::Reserved(_) => {}
                            }
                            ctx.ui.clear_bar();
                            return Ok(stop);
                        }
                        Tick::Moved => interval = FAST,
                        Tick::Quiet => interval = (interval * 2).min(SLOW),
                    }
                }
                Err(CliError::Client(e)) if e.is_transient() => {
                    let since = *self.outage.get_or_insert_with(|| {
                        ctx.ui.status(&format!(
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
            // A long poll that waited has paced the loop already.
            tokio::time::sleep(interval.saturating_sub(began.elapsed())).await;
        }
    }

    async fn tick(&mut self, ctx: &Ctx<'_>) -> Result<Tick, CliError> {
        let info = ctx.client.info(self.id).await?;
        ctx.remember(&info);
        let mut moved = self.report_changes(ctx, &info).await?;
        // A job that was never leased has no output yet.
        if info.attempt > 0 {
            let batch = self.read_log(&ctx.client, !info.is_terminal()).await?;
            print_batch(ctx.ui, &batch, self.follow.stream)?;
            self.next_fragment = batch.next_fragment(self.next_fragment);
            moved |= !batch.is_empty();
        }
        let outcome = Outcome::of(&info);
        let reserved = match (self.until, &outcome) {
            (Until::Reserved, None) if info.state == "reserve" => ctx.client.reservation(self.id).await?,
            _ => None,
        };
        // The phase followed with `--phase` has an exit code: it ended (its output was stored
        // before its end was recorded, and the log was read after the record).
        let phase_ended = self.follow.phase.as_ref().and_then(|p| {
            let (name, code) = info.phase_status.iter().find(|(name, _)| name == p)?;
            Some(Stop::PhaseEnded {
                phase: name.clone(),
                code: *code,
            })
        });
        self.last = Some(info);
        Ok(match (outcome, reserved, phase_ended) {
            (Some(o), _, _) => Tick::Stop(Stop::Ended(o)),
            (None, Some(r), _) => Tick::Stop(Stop::Reserved(r)),
            (None, None, Some(p)) => Tick::Stop(p),
            (None, None, None) if moved => Tick::Moved,
            (None, None, None) => Tick::Quiet,
        })
    }

    /// The followed phase ended while the job goes on: say so, and how to follow the rest.
    fn finish_phase(&self, ui: &Ui, phase: &str, code: i64) -> Result<(), CliError> {
        let id = self.id;
        let next = self.next_fragment;
        let stop = Stop::PhaseEnded {
            phase: phase.to_owned(),
            code,
        };
        if ui.is_json() {
            ui.event(&json!({
                "event": "phase_end",
                "job_id": id.to_string(),
                "phase": phase,
                "phase_exit_code": code,
                "next_fragment": next,
                "exit_code": stop.exit().code(),
            }))?;
        }
        // Testflinger's words.
        ui.status(&format!("Phase '{phase}' completed with exit code: {code}"));
        ui.hint(&format!(
            "Use 'flinger poll {id} --start_fragment {next}' to continue polling."
        ));
        Ok(())
    }

    /// The next output, by long poll while the job runs (if the server takes it).
    async fn read_log(&mut self, client: &Client, running: bool) -> Result<LogBatch, CliError> {
        let mut query = LogQuery {
            start_fragment: self.next_fragment,
            start_timestamp: self.follow.start_timestamp.clone(),
            phase: self.follow.phase.clone(),
            wait: (running && self.long_poll).then_some(LONG_POLL),
        };
        let answer = match client.log(self.id, self.follow.stream, &query).await {
            // A server without long polls that checks its parameters names `wait`.
            Err(ClientError::Refused {
                status: 422,
                detail: Some(d),
                ..
            }) if query.wait.is_some() && d.pointer("/query/wait").is_some() => {
                self.long_poll = false;
                query.wait = None;
                client.log(self.id, self.follow.stream, &query).await?
            }
            other => other?,
        };
        parse_batch(&answer, self.follow.stream)
    }

    /// Status lines (or JSON events) for what changed since the last record, and the live
    /// status line; whether anything changed.
    async fn report_changes(&mut self, ctx: &Ctx<'_>, info: &JobInfo) -> Result<bool, CliError> {
        let ui = ctx.ui;
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
        let state_changed = prev.is_none_or(|p| p.state != info.state);
        if state_changed && !info.is_terminal() {
            moved = true;
            ui.restart_bar_clock();
            if ui.is_json() {
                let event = json!({"event": "state", "state": info.state, "job_state": info.job_state, "agent": info.agent});
                ui.event(&event)?;
            } else {
                ui.status(&describe_state(info));
            }
        }
        let position_changed = info.position.is_some() && prev.is_none_or(|p| p.position != info.position);
        if let Some(position) = info.position {
            // The ETA, when the position changes and now and then while it does not.
            let stale = self.eta.is_none_or(|(at, _)| at.elapsed() >= ETA_EVERY);
            if position_changed || (stale && ui.is_interactive()) {
                let eta = ctx.client.estimate(self.id).await.and_then(|e| e.eta_seconds);
                self.eta = Some((Instant::now(), eta));
            }
            if position_changed {
                moved = true;
                let eta = self.eta.and_then(|(_, e)| e);
                if ui.is_json() {
                    ui.event(&json!({"event": "position", "position": position, "queue": info.queue, "eta_seconds": eta}))?;
                } else {
                    let mut line = describe_position(&info.queue, position);
                    if let Some(secs) = eta {
                        line = format!("{} Estimated start in {}.", line, human_duration(secs));
                    }
                    ui.status(&line);
                }
            }
        } else {
            self.eta = None;
        }
        self.update_bar(ui, info);
        Ok(moved)
    }

    fn update_bar(&self, ui: &Ui, info: &JobInfo) {
        if !ui.is_interactive() || info.is_terminal() {
            return;
        }
        let prefix = match (info.state.as_str(), info.agent.as_deref()) {
            ("waiting", _) => format!("waiting on {}", info.queue),
            (state, Some(agent)) => format!("{state} on {agent}"),
            (state, None) => state.to_owned(),
        };
        let mut parts = vec![];
        if let Some(p) = info.position {
            parts.push(match p {
                0 => "next in line".to_owned(),
                n => format!("{n} ahead"),
            });
            if let Some((_, Some(eta))) = self.eta {
                parts.push(format!("ETA {}", human_duration(eta)));
            }
        }
        if info.attempt > 1 {
            parts.push(format!("attempt {}", info.attempt));
        }
        ui.set_bar(&prefix, &parts.join(" · "));
    }
}

fn parse_batch(answer: &LogAnswer, stream: LogStream) -> Result<LogBatch, CliError> {
    LogBatch::parse(answer, stream).map_err(|detail| {
        CliError::Client(ClientError::BadAnswer {
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

/// A followed job's result, for commands that follow after doing something else.
pub async fn follow_to_end(ctx: &Ctx<'_>, id: JobId, follow: &Follow) -> Result<Exit, CliError> {
    Ok(self::follow(ctx, id, follow, Until::Ended).await?.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(mut v: serde_json::Value) -> JobInfo {
        v["job_id"] = serde_json::json!("3f2504e0-4f89-41d3-9a0c-0305e82c3301");
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

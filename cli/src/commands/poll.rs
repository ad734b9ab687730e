//! `flinger poll JOB` (and `poll-serial`): follows a job until it ends.
//!
//! Every tick reads the job record (state, attempt, queue position) and then the log from the
//! next fragment on, prints only what is new, in phase order, and stops once the record says the
//! job ended; that last log read comes after the end was seen, so no output is left behind (the
//! scheduler stores a run's output before it records the run's end).
//!
//! A phase's output is shown before the next phase's state line: the log is read before a new
//! state is announced (without waiting, as the line is due), and the lines and the output are
//! then printed in phase order — "Job in cleanup" after the test phase's last line. Output of a
//! phase the record has not reached yet (the scheduler stores output and states from two
//! queues) is announced by its phase's line first, which the record then does not repeat.
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
use crate::model::{JobId, JobInfo, LogBatch, LogStream, PhaseText};
use crate::output::{Ui, human_duration};
use broker_schema::JobState;
use broker_schema::Phase;
use flinger_api::{Estimate, LogAnswer, Reservation};
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
/// The longest a state line waits for the output shipped before it (normally milliseconds).
const HOLD_LIMIT: Duration = Duration::from_secs(10);

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
    /// The last ETA asked for, and when (`None`: the server gives none).
    eta: Option<(Instant, Option<Estimate>)>,
    /// The state whose line was printed last (from the record, or from a later phase's output).
    shown: Option<String>,
    /// While the server is unreachable: since when.
    outage: Option<Instant>,
    /// Since when the record's state line waits for output shipped before it.
    held_since: Option<Instant>,
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
            shown: None,
            outage: None,
            held_since: None,
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
        let mut moved = self.new_attempt(ctx.ui, &info)?;
        // A job that was never leased has no output yet. The output is read before a new
        // state's line is printed; without a long poll then, as the line is due now.
        let batch = if info.attempt > 0 {
            let wait = !info.is_terminal() && (!self.state_due(&info) || self.behind(&info));
            let batch = self.read_log(&ctx.client, wait).await?;
            self.next_fragment = batch.next_fragment(self.next_fragment);
            batch
        } else {
            LogBatch::default()
        };
        let hold = self.hold_state(&info);
        moved |= self.show(ctx.ui, &info, &batch, hold)?;
        moved |= self.report_position(ctx, &info).await?;
        self.update_bar(ctx.ui, &info);
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

    /// A new attempt (the previous agent was lost and the job requeued): output is numbered
    /// per attempt, so it starts again from fragment 0. Whether there was one.
    fn new_attempt(&mut self, ui: &Ui, info: &JobInfo) -> Result<bool, CliError> {
        let Some(p) = self.last.as_ref() else {
            return Ok(false);
        };
        if p.attempt == 0 || info.attempt == p.attempt {
            return Ok(false);
        }
        self.next_fragment = 0;
        self.shown = None;
        let agent = info.agent.as_deref().unwrap_or("an agent");
        if ui.is_json() {
            ui.event(&json!({"event": "attempt", "attempt": info.attempt, "agent": info.agent}))?;
        } else {
            ui.status(&format!(
                "Attempt {} of the job (on {agent}); its output follows from the start.",
                info.attempt
            ));
        }
        Ok(true)
    }

    fn state_due(&self, info: &JobInfo) -> bool {
        due(self.shown.as_deref(), &info.state, info.is_terminal())
    }

    /// Whether the record's latest phase move came after output not read yet (it is stored
    /// apart from the record, and may lag). A phase filter leaves other phases' fragments out,
    /// so such a follower cannot tell.
    fn behind(&self, info: &JobInfo) -> bool {
        self.follow.phase.is_none() && info.shipped(self.follow.stream) > self.next_fragment
    }

    /// Whether the record's state line waits, because output shipped before the move is not
    /// read yet; for at most [`HOLD_LIMIT`] (output lost on the way must not stop the lines).
    fn hold_state(&mut self, info: &JobInfo) -> bool {
        if info.is_terminal() || !self.behind(info) {
            self.held_since = None;
            return false;
        }
        self.held_since.get_or_insert_with(Instant::now).elapsed() < HOLD_LIMIT
    }

    /// The new output and the state lines, in the order things happened (`hold`: the record's
    /// state waits for output still missing). Whether anything was shown.
    fn show(&mut self, ui: &Ui, info: &JobInfo, batch: &LogBatch, hold: bool) -> Result<bool, CliError> {
        let steps = order(
            self.shown.as_deref(),
            &info.state,
            info.is_terminal() || hold,
            &batch.pieces,
        );
        let moved = !steps.is_empty();
        for step in steps {
            match step {
                Step::Announce(state) => self.announce(ui, &state, info)?,
                Step::Output(i) => print_piece(ui, &batch.pieces[i], self.follow.stream)?,
            }
        }
        Ok(moved)
    }

    /// The line (or JSON event) of a non-final state the job is in.
    fn announce(&mut self, ui: &Ui, state: &str, info: &JobInfo) -> Result<(), CliError> {
        self.shown = Some(state.to_owned());
        ui.restart_bar_clock();
        if ui.is_json() {
            let job_state = JobState::parse(state).map_or(state, |s| s.testflinger_name());
            let event =
                json!({"event": "state", "state": state, "job_state": job_state, "agent": info.agent});
            ui.event(&event)?;
        } else {
            ui.status(&describe(state, info.agent.as_deref(), &info.queue));
        }
        Ok(())
    }

    /// A waiting job's place and ETA, when its place changed; whether it did.
    async fn report_position(&mut self, ctx: &Ctx<'_>, info: &JobInfo) -> Result<bool, CliError> {
        let ui = ctx.ui;
        let prev = self.last.as_ref();
        let Some(position) = info.position else {
            self.eta = None;
            return Ok(false);
        };
        let position_changed = prev.is_none_or(|p| p.position != info.position);
        // The ETA, when the position changes and now and then while it does not.
        let stale = self.eta.as_ref().is_none_or(|(at, _)| at.elapsed() >= ETA_EVERY);
        if position_changed || (stale && ui.is_interactive()) {
            let estimate = ctx.client.estimate(self.id).await;
            self.eta = Some((Instant::now(), estimate));
        }
        if !position_changed {
            return Ok(false);
        }
        let estimate = self.eta.as_ref().and_then(|(_, e)| e.as_ref());
        if ui.is_json() {
            ui.event(&json!({
                "event": "position",
                "position": position,
                "queue": info.queue,
                "eta_seconds": estimate.and_then(|e| e.eta_seconds),
                "eta_unknown": estimate.and_then(|e| e.unknown.clone()),
            }))?;
        } else {
            let mut line = describe_position(&info.queue, position);
            if let Some(e) = estimate {
                line = format!("{line} {}", describe_eta(e));
            }
            ui.status(&line);
        }
        Ok(true)
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
            match self.eta.as_ref().and_then(|(_, e)| e.as_ref()) {
                Some(Estimate {
                    eta_seconds: Some(eta),
                    ..
                }) => parts.push(format!("ETA {}", human_duration(*eta))),
                Some(_) => parts.push("ETA unknown".to_owned()),
                None => {}
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
        print_piece(ui, piece, stream)?;
    }
    Ok(())
}

fn print_piece(ui: &Ui, piece: &PhaseText, stream: LogStream) -> Result<(), CliError> {
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
    Ok(())
}

/// One thing to show, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// A state's line.
    Announce(String),
    /// The piece of output at this index of the batch.
    Output(usize),
}

/// Whether the record's `state` still has to be announced after `shown`. Phases only move
/// forward; the one move back is a requeue, to `waiting`. A record behind the output already
/// shown is not news.
fn due(shown: Option<&str>, state: &str, terminal: bool) -> bool {
    if terminal {
        return false;
    }
    let Some(shown) = shown else {
        return true;
    };
    match (rank(state), rank(shown)) {
        _ if state == shown => false,
        (Some(new), Some(old)) => new > old || state == JobState::Waiting.as_str(),
        _ => true,
    }
}

/// The state lines and the new output (`pieces`, in phase order) in the order things happened:
/// each phase's output after its own state line and before the next phase's — the record's
/// `state` comes before its own phase's output, after the earlier phases' — and a phase the
/// record has not reached yet is announced by its output. `quiet`: the record's state is not
/// announced (it is an end, which the outcome says, or it waits for output not read yet).
fn order(shown: Option<&str>, state: &str, quiet: bool, pieces: &[PhaseText]) -> Vec<Step> {
    let mut shown = shown.map(str::to_owned);
    let mut steps = vec![];
    for (i, piece) in pieces.iter().enumerate().filter(|(_, p)| !p.text.is_empty()) {
        let phase = rank(&piece.phase);
        if phase.is_some() && phase >= rank(state) && due(shown.as_deref(), state, quiet) {
            steps.push(Step::Announce(state.to_owned()));
            shown = Some(state.to_owned());
        }
        let later = match (phase, shown.as_deref().map(rank)) {
            (Some(p), Some(Some(s))) => p > s,
            (Some(_), _) => true,
            (None, _) => false,
        };
        if later {
            steps.push(Step::Announce(piece.phase.clone()));
            shown = Some(piece.phase.clone());
        }
        steps.push(Step::Output(i));
    }
    if due(shown.as_deref(), state, quiet) {
        steps.push(Step::Announce(state.to_owned()));
    }
    steps
}

/// Where a state comes in a job's life (phases only move forward); `None` for a state this
/// version does not know.
fn rank(state: &str) -> Option<usize> {
    let s = JobState::parse(state)?;
    JobState::ALL.iter().position(|a| *a == s)
}

/// A status line for a job's (non-final) state.
fn describe(state: &str, agent: Option<&str>, queue: &str) -> String {
    match (state, agent) {
        ("waiting", _) => format!("Job waiting for an agent on queue {queue}."),
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

/// A waiting job's ETA in words: a figure, or why there is none.
pub fn describe_eta(e: &Estimate) -> String {
    match e.eta_seconds {
        Some(secs) => format!("Estimated start in {}.", human_duration(secs)),
        None => format!("Estimated start unknown: {}.", e.basis.trim_end_matches('.')),
    }
}

/// A followed job's result, for commands that follow after doing something else.
pub async fn follow_to_end(ctx: &Ctx<'_>, id: JobId, follow: &Follow) -> Result<Exit, CliError> {
    Ok(self::follow(ctx, id, follow, Until::Ended).await?.exit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(phases: &[&str]) -> Vec<PhaseText> {
        phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseText {
                phase: (*p).to_owned(),
                last_fragment_number: i as i64,
                text: format!("{p} output\n"),
            })
            .collect()
    }

    fn line(s: &str) -> Step {
        Step::Announce(s.to_owned())
    }

    #[test]
    fn a_phase_output_comes_before_the_next_phase_line() {
        // The test phase's last line and the move to cleanup are seen in the same tick.
        let steps = order(Some("test"), "cleanup", false, &pieces(&["test"]));
        assert_eq!(steps, vec![Step::Output(0), line("cleanup")]);
        let steps = order(Some("test"), "cleanup", false, &pieces(&["test", "cleanup"]));
        assert_eq!(steps, vec![Step::Output(0), line("cleanup"), Step::Output(1)]);
    }

    #[test]
    fn a_state_waiting_for_output_is_not_announced_yet() {
        // The record moved to cleanup; the test phase's last line is not read yet.
        assert_eq!(order(Some("test"), "cleanup", true, &[]), vec![]);
        let steps = order(Some("test"), "cleanup", true, &pieces(&["test"]));
        assert_eq!(steps, vec![Step::Output(0)]);
    }

    #[test]
    fn a_new_state_comes_before_its_own_output() {
        let steps = order(Some("waiting"), "setup", false, &pieces(&["setup"]));
        assert_eq!(steps, vec![line("setup"), Step::Output(0)]);
        assert_eq!(order(None, "leased", false, &[]), vec![line("leased")]);
    }

    #[test]
    fn output_ahead_of_the_record_announces_its_phase_once() {
        // Output and states are stored from two queues: provision output may be stored before
        // the record says provision.
        let steps = order(Some("setup"), "setup", false, &pieces(&["setup", "provision"]));
        assert_eq!(steps, vec![Step::Output(0), line("provision"), Step::Output(1)]);
        assert!(
            !due(Some("provision"), "setup", false),
            "the record catching up is not news"
        );
        assert!(!due(Some("provision"), "provision", false));
    }

    #[test]
    fn a_requeue_is_announced_and_an_end_is_left_to_the_outcome() {
        assert!(due(Some("test"), "waiting", false));
        let steps = order(Some("test"), "complete", true, &pieces(&["test", "cleanup"]));
        assert_eq!(steps, vec![Step::Output(0), line("cleanup"), Step::Output(1)]);
    }

    #[test]
    fn states_are_described_with_their_agent() {
        assert_eq!(
            describe("waiting", None, "rpi4b"),
            "Job waiting for an agent on queue rpi4b."
        );
        assert_eq!(
            describe("provision", Some("dev-3"), "q"),
            "Job in provision on agent dev-3."
        );
    }

    #[test]
    fn positions_count_the_jobs_ahead() {
        assert_eq!(describe_position("q", 0), "Next in line on queue q.");
        assert_eq!(describe_position("q", 1), "1 job ahead on queue q.");
        assert_eq!(describe_position("q", 5), "5 jobs ahead on queue q.");
    }
}

//! Scenario `estimate`: how far the queue estimator's ETAs (`flinger_api::eta`, the one the API,
//! the CLI and the pages use) land from the truth, replaying a recorded mix of jobs.
//!
//! The mix (`benches/data/job-mix.csv`: when each job was submitted and how long it ran) is
//! played through a queue of identical agents taking jobs first come, first served, which says
//! when each job truly started. At every submission, and every `--every` seconds while jobs
//! wait, each waiting job is estimated as the gateway would at that moment — the last
//! `--history` runs that ended, each agent idle or `elapsed` into its job, the job's place — and
//! the estimate is compared with the true wait. The old rule (the queue's median run minus what
//! the running job ran, never below 0, and the median per job ahead) is measured on the same
//! moments, for comparison. No broker, no store: the estimator alone, in a second or so.

use crate::progress;
use crate::report::{Report, Sample};
use clap::Args;
use flinger_api::eta::{self, Agent, Durations, Inputs, Unknown};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct EstimateArgs {
    /// A mix of jobs: CSV `arrival_s,duration_s` (seconds since the first submission, seconds
    /// from lease to end), `#` comments allowed. Default: the committed synthetic mix.
    #[arg(long)]
    pub mix: Option<PathBuf>,
    /// Agents serving the queue.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Seconds between the estimates of every waiting job, besides one at each submission.
    #[arg(long, default_value_t = 300.0)]
    pub every: f64,
    /// Finished runs the estimator sees (the gateway's `HISTORY_JOBS`).
    #[arg(long, default_value_t = 50)]
    pub history: usize,
}

const DEFAULT_MIX: &str = include_str!("../../data/job-mix.csv");

#[derive(Clone, Copy, Debug)]
struct Job {
    arrival: f64,
    duration: f64,
    /// Filled in by the replay.
    start: f64,
}

impl Job {
    fn end(&self) -> f64 {
        self.start + self.duration
    }
}

fn parse(text: &str) -> anyhow::Result<Vec<Job>> {
    let mut jobs = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("arrival") {
            continue;
        }
        let mut cols = line.split(',').map(str::trim).map(str::parse::<f64>);
        match (cols.next(), cols.next()) {
            (Some(Ok(arrival)), Some(Ok(duration))) if arrival >= 0.0 && duration >= 0.0 => jobs.push(Job {
                arrival,
                duration,
                start: 0.0,
            }),
            _ => anyhow::bail!("line {}: expected arrival_s,duration_s: {line:?}", n + 1),
        }
    }
    anyhow::ensure!(!jobs.is_empty(), "the mix has no job");
    jobs.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Ok(jobs)
}

/// First come, first served over `agents` identical agents: each job starts when it arrived or
/// when the first agent frees, whichever is later.
fn replay(jobs: &mut [Job], agents: usize) {
    let mut free = vec![0.0_f64; agents];
    for job in jobs.iter_mut() {
        let (i, at) = free
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one agent");
        job.start = at.max(job.arrival);
        free[i] = job.end();
    }
}

/// What the gateway would see at `now`: the last `history` runs that ended (latest submitted
/// first, as the gateway asks for them), and each agent's running job's elapsed time.
fn seen(jobs: &[Job], now: f64, history: usize, agents: usize) -> (Vec<f64>, Vec<Option<f64>>) {
    let finished: Vec<f64> = jobs
        .iter()
        .rev()
        .filter(|j| j.arrival <= now && j.end() <= now)
        .take(history)
        .map(|j| j.duration)
        .collect();
    let mut running: Vec<Option<f64>> = jobs
        .iter()
        .filter(|j| j.start <= now && now < j.end())
        .map(|j| Some(now - j.start))
        .collect();
    running.resize(agents, None);
    (finished, running)
}

/// The rule before the estimator: the median run, minus what the running job ran (never below
/// 0), and the median per job ahead; unknown only without a run or an agent.
fn old_rule(finished: &[f64], running: &[Option<f64>], position: usize) -> Option<f64> {
    let mut runs = finished.to_vec();
    runs.sort_by(f64::total_cmp);
    let median = *runs.get(runs.len() / 2)?;
    let mut free: Vec<f64> = running
        .iter()
        .map(|r| r.map_or(0.0, |e| (median - e).max(0.0)))
        .collect();
    if free.is_empty() {
        return None;
    }
    for _ in 0..position {
        let i = (0..free.len())
            .min_by(|a, b| free[*a].total_cmp(&free[*b]))
            .expect("an agent");
        free[i] += median;
    }
    free.into_iter().min_by(f64::total_cmp)
}

#[derive(Default)]
struct Errors {
    all: Sample,
    next: Sample,
}

impl Errors {
    fn push(&mut self, error: f64, position: usize) {
        self.all.push_ms(error * 1000.0);
        if position == 0 {
            self.next.push_ms(error * 1000.0);
        }
    }
}

fn secs(s: &Sample, q: f64) -> f64 {
    s.quantile_ms(q) / 1000.0
}

pub async fn run(args: &EstimateArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.agents > 0, "--agents must be at least 1");
    anyhow::ensure!(args.every > 0.0, "--every must be positive");
    let (text, source) = match &args.mix {
        Some(p) => (std::fs::read_to_string(p)?, p.display().to_string()),
        None => (DEFAULT_MIX.to_owned(), "benches/data/job-mix.csv".to_owned()),
    };
    let mut jobs = parse(&text)?;
    replay(&mut jobs, args.agents);
    progress!(
        "estimate: replaying {} jobs of {source} over {} agents",
        jobs.len(),
        args.agents
    );

    // The moments: every submission, and every `every` seconds until the last job started.
    let last_start = jobs.iter().map(|j| j.start).fold(0.0, f64::max);
    let mut moments: Vec<f64> = jobs.iter().map(|j| j.arrival).collect();
    let mut t = 0.0;
    while t < last_start {
        moments.push(t);
        t += args.every;
    }
    moments.sort_by(f64::total_cmp);
    moments.dedup();

    let (mut new, mut old) = (Errors::default(), Errors::default());
    let (mut truth, mut signed) = (Sample::default(), Sample::default());
    let (mut estimates, mut unknown, mut old_unknown) = (0usize, [0usize; 3], 0usize);
    let (mut within, mut ranged) = (0usize, 0usize);
    let mut spent = std::time::Duration::ZERO;
    for now in moments {
        let (finished, running) = seen(&jobs, now, args.history, args.agents);
        let durations = Durations::new(finished.iter().copied());
        let agents: Vec<Agent<'_>> = running
            .iter()
            .map(|r| match r {
                Some(elapsed) => Agent::Running {
                    elapsed: *elapsed,
                    of: &durations,
                },
                None => Agent::Idle,
            })
            .collect();
        let inputs = Inputs {
            durations: &durations,
            agents: &agents,
        };
        let waiting: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.arrival <= now && now < j.start)
            .collect();
        let timer = std::time::Instant::now();
        let forecasts = eta::forecasts(&inputs, waiting.len());
        spent += timer.elapsed();
        for (position, (job, f)) in waiting.iter().zip(forecasts).enumerate() {
            let wait = job.start - now;
            estimates += 1;
            truth.push_ms(wait * 1000.0);
            if let Some((early, late)) = f.likely {
                ranged += 1;
                within += usize::from(early <= wait && wait <= late);
            }
            match f.start {
                Ok(s) => {
                    new.push((s - wait).abs(), position);
                    signed.push_ms((s - wait) * 1000.0);
                }
                Err(why) => {
                    unknown[match why {
                        Unknown::NoAgent => 0,
                        Unknown::NoHistory => 1,
                        Unknown::Overrun => 2,
                    }] += 1
                }
            }
            match old_rule(&finished, &running, position) {
                Some(s) => old.push((s - wait).abs(), position),
                None => old_unknown += 1,
            }
        }
    }

    let mut report = Report::new(
        "estimate",
        json!({
            "mix": source,
            "jobs": jobs.len(),
            "agents": args.agents,
            "every_s": args.every,
            "history": args.history,
        }),
    );
    let share = |n: usize| 100.0 * n as f64 / estimates.max(1) as f64;
    report.add("estimates of a waiting job", estimates as f64, "");
    report.add("true wait p50", secs(&truth, 0.5), "s");
    report.add("true wait p90", secs(&truth, 0.9), "s");
    report.add("abs error p50", secs(&new.all, 0.5), "s");
    report.add("abs error p90", secs(&new.all, 0.9), "s");
    report.add("abs error p50, next in line", secs(&new.next, 0.5), "s");
    report.add("abs error p90, next in line", secs(&new.next, 0.9), "s");
    report.add("signed error p50 (+ late)", secs(&signed, 0.5), "s");
    report.add(
        "truth within the likely range (p10–p90)",
        100.0 * within as f64 / ranged.max(1) as f64,
        "%",
    );
    report.add("unknown: no history", share(unknown[1]), "%");
    report.add("unknown: overrun", share(unknown[2]), "%");
    report.add("old rule abs error p50", secs(&old.all, 0.5), "s");
    report.add("old rule abs error p90", secs(&old.all, 0.9), "s");
    report.add("old rule abs error p50, next in line", secs(&old.next, 0.5), "s");
    report.add("old rule abs error p90, next in line", secs(&old.next, 0.9), "s");
    report.add("old rule unknown", share(old_unknown), "%");
    report.add(
        "estimator time per waiting job",
        spent.as_secs_f64() * 1e6 / estimates.max(1) as f64,
        "µs",
    );
    report.note(
        "errors are over the estimates that gave a figure; the unknown ones are counted apart \
         (the old rule gave a figure, often 0 s, where the estimator says unknown)",
    );
    report.note(
        "first come, first served, one priority, identical agents, none away: what the mix \
         cannot show (priorities, agents serving several queues) is not measured",
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(arrival: f64, duration: f64) -> Job {
        Job {
            arrival,
            duration,
            start: 0.0,
        }
    }

    #[test]
    fn the_replay_serves_first_come_first_served() {
        let mut jobs = vec![job(0.0, 10.0), job(1.0, 10.0), job(2.0, 5.0), job(20.0, 1.0)];
        replay(&mut jobs, 2);
        let starts: Vec<f64> = jobs.iter().map(|j| j.start).collect();
        assert_eq!(starts, vec![0.0, 1.0, 10.0, 20.0]);
    }

    #[test]
    fn the_committed_mix_parses() {
        let jobs = parse(DEFAULT_MIX).unwrap();
        assert!(jobs.len() > 100);
        assert!(parse("0,1\nx,2\n").is_err());
    }

    #[test]
    fn the_old_rule_says_0_s_for_jobs_that_outran_the_median() {
        assert_eq!(old_rule(&[1.0, 1.0], &[Some(5.0), Some(5.0)], 0), Some(0.0));
    }
}

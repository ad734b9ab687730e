//! **[ext]** When a waiting job will start: the one estimator behind `GET /v1/job/<id>/estimate`,
//! the web pages' positions and ETAs and the CLI's `--poll` (which reads the API's answer).
//!
//! A pure function over plain inputs — no clock, no store: the caller says how long the queue's
//! recent runs took, what each agent serving the queue is doing now and the job's place in the
//! queue; the gateway's `estimate.rs` reads those from the store. `flinger-bench estimate`
//! replays a recorded mix of job durations through it and measures how far it lands from the
//! truth (`docs/performance.md`).
//!
//! The rules (each has a test below):
//! 1. Only agents that will take the queue's next jobs count: an agent offline, in maintenance
//!    or going there after its current job ([`Agent::Away`]) does not. None left: unknown.
//! 2. An idle agent is free now.
//! 3. A busy agent whose job has run `t` seconds frees in E\[D − t | D > t\] over the recent
//!    durations D of that job's queue: how much longer the recent runs that lasted at least
//!    `t` went on — not the median minus nothing. When no recent run lasted longer than `t`,
//!    that agent's time is unknown (the job overran everything seen lately).
//! 4. A busy agent whose end is known (a reservation's deadline) frees then.
//! 5. A busy agent whose job is not known (no lease in the store yet) frees in the mean
//!    residual time of the queue's runs, E\[D²\] / 2E\[D\] (a run met at a random moment).
//! 6. The jobs ahead go one by one to whichever agent frees first and each runs the queue's
//!    mean recent duration; the job starts when the next agent frees after them.
//! 7. An agent whose time is unknown never frees in this reckoning. When the answer depends on
//!    it, the answer is unknown, with why; when it does not, the answer stands and says that
//!    the job may start sooner.
//! 8. No recent run and the answer needs one: unknown. A job next in line with an idle agent
//!    needs none: it starts now.
//!
//! What it does not see (said in `docs/api.md`): jobs submitted later with a higher priority
//! (they pass this one), and waiting jobs of an agent's other queues (they compete for it).

use std::fmt;

/// Recent run durations of a queue, in seconds (from lease to end).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durations {
    sorted: Vec<f64>,
}

impl Durations {
    /// Negative and non-finite values are dropped.
    pub fn new(seconds: impl IntoIterator<Item = f64>) -> Durations {
        let mut sorted: Vec<f64> = seconds
            .into_iter()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .collect();
        sorted.sort_by(f64::total_cmp);
        Durations { sorted }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.is_empty()).then(|| self.sorted.iter().sum::<f64>() / self.len() as f64)
    }

    /// The middle run (the upper one of an even count).
    pub fn median(&self) -> Option<f64> {
        self.sorted.get(self.len() / 2).copied()
    }

    pub fn longest(&self) -> Option<f64> {
        self.sorted.last().copied()
    }

    /// E\[D − t | D > t\]: how much longer a run that has lasted `elapsed` is expected to go on.
    /// `None` when no recent run lasted longer.
    pub fn expected_remaining(&self, elapsed: f64) -> Option<f64> {
        let first = self.sorted.partition_point(|d| *d <= elapsed);
        let longer = &self.sorted[first..];
        (!longer.is_empty()).then(|| longer.iter().map(|d| d - elapsed).sum::<f64>() / longer.len() as f64)
    }

    /// E\[D²\] / 2E\[D\]: the expected rest of a run met at a random moment of it.
    pub fn mean_residual(&self) -> Option<f64> {
        let mean = self.mean()?;
        if mean == 0.0 {
            return Some(0.0);
        }
        let square = self.sorted.iter().map(|d| d * d).sum::<f64>() / self.len() as f64;
        Some(square / (2.0 * mean))
    }
}

/// What one agent serving the queue is doing now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Agent<'a> {
    /// Waiting for a job.
    Idle,
    /// Running a job that was leased `elapsed` seconds ago; `of` are the recent durations of
    /// that job's queue (this queue's, or another one the agent also serves).
    Running { elapsed: f64, of: &'a Durations },
    /// Busy until a known moment, `in_seconds` from now (a reservation's deadline).
    Until { in_seconds: f64 },
    /// Busy with a job the store does not know of yet.
    Busy,
    /// Offline, in maintenance, or going there after its current job: takes no job of ours.
    Away,
}

/// Everything the estimate is made from.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// Recent run durations of the job's queue.
    pub durations: &'a Durations,
    pub agents: &'a [Agent<'a>],
}

/// Why there is no figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// No agent serving the queue takes jobs now.
    NoAgent,
    /// No recent run of the queue to take durations from.
    NoHistory,
    /// The agents the answer depends on run jobs longer than any recent run of their queue.
    Overrun,
}

impl Unknown {
    /// A stable name for programs (`Estimate::unknown`).
    pub fn code(self) -> &'static str {
        match self {
            Unknown::NoAgent => "no_agent",
            Unknown::NoHistory => "no_history",
            Unknown::Overrun => "overrun",
        }
    }
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unknown::NoAgent => "no agent serving the queue takes jobs now",
            Unknown::NoHistory => "no job of the queue finished recently, so how long they run is unknown",
            Unknown::Overrun => "the running jobs have run longer than any recent job of their queue",
        })
    }
}

/// The estimate for one place in the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// Seconds from now until the job starts, or why that is unknown.
    pub start: Result<f64, Unknown>,
    /// Agents that will take the queue's jobs, and how many of them are busy now.
    pub agents: usize,
    pub busy: usize,
    /// Busy agents whose end is unknown (rule 7): the job may start sooner than said.
    pub overrun: usize,
}

/// When the job at 0-based `position` starts.
pub fn forecast(inputs: &Inputs<'_>, position: u64) -> Forecast {
    let mut schedule = Schedule::new(inputs);
    let mut start = schedule.next();
    for _ in 0..position {
        if start.is_err() {
            break;
        }
        start = schedule.next();
    }
    schedule.forecast(start)
}

/// The starts of the first `count` places at once (a queue's page), in one pass.
pub fn forecasts(inputs: &Inputs<'_>, count: usize) -> Vec<Forecast> {
    let mut schedule = Schedule::new(inputs);
    (0..count)
        .map(|_| {
            let start = schedule.next();
            schedule.forecast(start)
        })
        .collect()
}

/// When each agent frees, handed jobs one by one (rule 6).
struct Schedule<'a> {
    inputs: &'a Inputs<'a>,
    free: Vec<Result<f64, Unknown>>,
    busy: usize,
    overrun: usize,
}

impl<'a> Schedule<'a> {
    fn new(inputs: &'a Inputs<'a>) -> Schedule<'a> {
        let free: Vec<_> = inputs
            .agents
            .iter()
            .filter_map(|a| match a {
                Agent::Away => None,
                Agent::Idle => Some(Ok(0.0)),
                Agent::Running { of, .. } if of.is_empty() => Some(Err(Unknown::NoHistory)),
                Agent::Running { elapsed, of } => {
                    Some(of.expected_remaining(*elapsed).ok_or(Unknown::Overrun))
                }
                Agent::Until { in_seconds } => Some(Ok(in_seconds.max(0.0))),
                Agent::Busy => Some(inputs.durations.mean_residual().ok_or(Unknown::NoHistory)),
            })
            .collect();
        let busy = inputs
            .agents
            .iter()
            .filter(|a| !matches!(a, Agent::Away | Agent::Idle))
            .count();
        let overrun = free.iter().filter(|f| **f == Err(Unknown::Overrun)).count();
        Schedule {
            inputs,
            free,
            busy,
            overrun,
        }
    }

    /// The start of the next job in line, which then holds the agent it got.
    fn next(&mut self) -> Result<f64, Unknown> {
        let Some((i, at)) = self
            .free
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.as_ref().ok().map(|at| (i, *at)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return Err(self.why_unknown());
        };
        self.free[i] = self
            .inputs
            .durations
            .mean()
            .map(|d| at + d)
            .ok_or(Unknown::NoHistory);
        Ok(at)
    }

    /// Every agent left is unknown: the first reason that applies (no agent, then no
    /// history, then overrun).
    fn why_unknown(&self) -> Unknown {
        if self.free.is_empty() {
            Unknown::NoAgent
        } else if self.free.contains(&Err(Unknown::NoHistory)) {
            Unknown::NoHistory
        } else {
            Unknown::Overrun
        }
    }

    fn forecast(&self, start: Result<f64, Unknown>) -> Forecast {
        Forecast {
            start,
            agents: self.free.len(),
            busy: self.busy,
            overrun: self.overrun,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(d: &[f64]) -> Durations {
        Durations::new(d.iter().copied())
    }

    fn start(durations: &Durations, agents: &[Agent<'_>], position: u64) -> Result<f64, Unknown> {
        forecast(&Inputs { durations, agents }, position).start
    }

    fn close(a: Result<f64, Unknown>, b: f64) -> bool {
        a.is_ok_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn the_reported_case_two_agents_1s_into_25s_jobs_start_in_24s_not_0() {
        let d = runs(&[25.0, 25.0, 25.0]);
        let agents = [
            Agent::Running { elapsed: 1.0, of: &d },
            Agent::Running { elapsed: 1.0, of: &d },
        ];
        assert!(close(start(&d, &agents, 0), 24.0));
        // The second job in line waits for the other agent, the third for a second round.
        assert!(close(start(&d, &agents, 1), 24.0));
        assert!(close(start(&d, &agents, 2), 49.0));
    }

    #[test]
    fn remaining_time_is_conditional_on_what_the_job_has_already_run() {
        // Short jobs and long ones: a job that has run 4 s is one of the long ones.
        let d = runs(&[3.0, 3.0, 3.0, 25.0, 25.0]);
        assert_eq!(d.expected_remaining(1.0), Some((2.0 * 3.0 + 24.0 * 2.0) / 5.0));
        assert_eq!(d.expected_remaining(4.0), Some(21.0));
        assert_eq!(d.median(), Some(3.0));
        let agents = [Agent::Running { elapsed: 4.0, of: &d }];
        assert!(
            close(start(&d, &agents, 0), 21.0),
            "not the median minus the elapsed time"
        );
    }

    #[test]
    fn a_job_longer_than_every_recent_run_makes_its_agent_unknown() {
        let d = runs(&[1.0, 1.0, 2.0]);
        assert_eq!(d.expected_remaining(2.0), None);
        let agents = [
            Agent::Running { elapsed: 5.0, of: &d },
            Agent::Running { elapsed: 3.0, of: &d },
        ];
        let f = forecast(
            &Inputs {
                durations: &d,
                agents: &agents,
            },
            0,
        );
        assert_eq!(f.start, Err(Unknown::Overrun));
        assert_eq!(f.overrun, 2);
        assert!(
            Unknown::Overrun
                .to_string()
                .contains("longer than any recent job")
        );
    }

    #[test]
    fn an_answer_that_does_not_depend_on_an_overrunning_agent_stands() {
        let d = runs(&[10.0, 20.0]);
        let agents = [
            Agent::Running {
                elapsed: 30.0,
                of: &d,
            },
            Agent::Running { elapsed: 5.0, of: &d },
        ];
        let f = forecast(
            &Inputs {
                durations: &d,
                agents: &agents,
            },
            0,
        );
        assert!(close(f.start, 10.0)); // (5 + 15) / 2
        assert_eq!(f.overrun, 1, "the answer says the job may start sooner");
        // The next job in line needs the overrunning agent or a second round of the other.
        assert!(close(start(&d, &agents, 1), 25.0));
    }

    #[test]
    fn agents_away_do_not_count_and_none_left_is_unknown() {
        let d = runs(&[10.0]);
        assert_eq!(start(&d, &[], 0), Err(Unknown::NoAgent));
        assert_eq!(start(&d, &[Agent::Away, Agent::Away], 0), Err(Unknown::NoAgent));
        let f = forecast(
            &Inputs {
                durations: &d,
                agents: &[Agent::Away, Agent::Idle],
            },
            1,
        );
        assert_eq!((f.agents, f.busy), (1, 0));
        assert!(close(f.start, 10.0));
    }

    #[test]
    fn next_in_line_with_an_idle_agent_starts_now_even_without_history() {
        let none = Durations::default();
        assert!(close(start(&none, &[Agent::Idle], 0), 0.0));
        assert_eq!(start(&none, &[Agent::Idle], 1), Err(Unknown::NoHistory));
        let d = runs(&[10.0]);
        let agents = [Agent::Running {
            elapsed: 1.0,
            of: &none,
        }];
        assert_eq!(
            start(&d, &agents, 0),
            Err(Unknown::NoHistory),
            "the running job's queue has no history"
        );
    }

    #[test]
    fn a_reservation_frees_its_agent_at_its_deadline() {
        let d = runs(&[10.0]);
        let agents = [
            Agent::Until { in_seconds: 3600.0 },
            Agent::Running { elapsed: 2.0, of: &d },
        ];
        assert!(close(start(&d, &agents, 0), 8.0));
        assert!(close(start(&d, &agents, 1), 18.0));
        // The other agent takes jobs at 8, 18, … 3598; the reserved one the first after 3600.
        assert!(close(start(&d, &agents, 359), 3598.0));
        assert!(close(start(&d, &agents, 360), 3600.0));
    }

    #[test]
    fn a_busy_agent_whose_job_is_not_known_frees_in_the_mean_residual_time() {
        let d = runs(&[10.0, 30.0]);
        // E[D²] / 2E[D] = (100 + 900) / 2 / 40
        assert_eq!(d.mean_residual(), Some(12.5));
        assert!(close(start(&d, &[Agent::Busy], 0), 12.5));
        assert_eq!(
            start(&Durations::default(), &[Agent::Busy], 0),
            Err(Unknown::NoHistory)
        );
    }

    #[test]
    fn jobs_ahead_take_the_mean_duration_on_whichever_agent_frees_first() {
        let d = runs(&[10.0, 20.0, 30.0]);
        let agents = [Agent::Idle, Agent::Running { elapsed: 5.0, of: &d }];
        // Agent 0 frees at 0, agent 1 at E[D - 5 | D > 5] = 15. Places: 0 → 0 (agent 0, then
        // busy until 20), 1 → 15 (agent 1, until 35), 2 → 20, 3 → 35.
        let all: Vec<_> = forecasts(
            &Inputs {
                durations: &d,
                agents: &agents,
            },
            4,
        )
        .into_iter()
        .map(|f| f.start.unwrap())
        .collect();
        assert_eq!(all, vec![0.0, 15.0, 20.0, 35.0]);
        for (p, s) in all.iter().enumerate() {
            assert!(
                close(start(&d, &agents, p as u64), *s),
                "one at a time agrees with the pass"
            );
        }
    }

    #[test]
    fn durations_drop_what_cannot_be_a_duration() {
        let d = Durations::new([f64::NAN, -1.0, 4.0, f64::INFINITY, 2.0]);
        assert_eq!(d.len(), 2);
        assert_eq!(d.median(), Some(4.0));
        assert_eq!(d.longest(), Some(4.0));
        assert_eq!(d.mean(), Some(3.0));
    }
}

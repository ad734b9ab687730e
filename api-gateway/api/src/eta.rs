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
//! 3. A busy agent whose job has run `t` seconds frees in D − t, for D one of the recent
//!    durations of that job's queue that are longer than `t`: the distribution of D − t given
//!    D > t, whose mean is E\[D − t | D > t\] — how much longer the recent runs that lasted at
//!    least `t` went on, not the median minus nothing. When no recent run lasted longer than
//!    `t`, that agent's time is unknown (the job overran everything seen lately).
//! 4. A busy agent whose end is known (a reservation's deadline) frees then.
//! 5. A busy agent whose job is not known (no lease in the store yet) is met at a random moment
//!    of a recent run: a run drawn in proportion to its length, at a uniform point of it (mean
//!    E\[D²\] / 2E\[D\]).
//! 6. The jobs ahead go one by one to whichever agent frees first, each running one of the
//!    queue's recent durations; the job starts when the next agent frees after them.
//! 7. The answer is the median start over [`DRAWS`] such futures, each drawing its durations
//!    from the recent runs (seeded: the same inputs give the same answer), with the 10th and
//!    90th percentiles as its likely range. The median, not the mean of each agent's time:
//!    the first of four agents to free is usually much sooner than the soonest of their
//!    expected ends when runs are short and long mixed, and the median is the figure that
//!    lands closest to the truth most of the time (`flinger-bench estimate`).
//! 8. An agent whose time is unknown never frees in this reckoning. When the answer depends on
//!    it, the answer is unknown, with why; when it does not, the answer stands and says that
//!    the job may start sooner.
//! 9. No recent run and the answer needs one: unknown. A job next in line with an idle agent
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

/// How many futures are drawn (odd, so the median is one of them).
pub const DRAWS: usize = 201;

/// The estimate for one place in the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// Seconds from now until the job starts (the median of the draws), or why that is unknown.
    pub start: Result<f64, Unknown>,
    /// The likely range of the start: the 10th and 90th percentiles of the draws.
    pub likely: Option<(f64, f64)>,
    /// Agents that will take the queue's jobs, and how many of them are busy now.
    pub agents: usize,
    pub busy: usize,
    /// Busy agents whose end is unknown (rule 8): the job may start sooner than said.
    pub overrun: usize,
}

/// When the job at 0-based `position` starts.
pub fn forecast(inputs: &Inputs<'_>, position: u64) -> Forecast {
    let count = usize::try_from(position).unwrap_or(usize::MAX - 1) + 1;
    forecasts_from(inputs, count, true)
        .pop()
        .expect("one place at least")
}

/// The starts of the first `count` places at once (a queue's page), in one pass; it keeps
/// `count` × [`DRAWS`] numbers while it runs.
pub fn forecasts(inputs: &Inputs<'_>, count: usize) -> Vec<Forecast> {
    forecasts_from(inputs, count, false)
}

/// Draws [`DRAWS`] futures of the queue; with `last_only`, keeps only the last place's starts.
fn forecasts_from(inputs: &Inputs<'_>, count: usize, last_only: bool) -> Vec<Forecast> {
    let agents: Vec<Free> = inputs
        .agents
        .iter()
        .filter_map(|a| Free::of(a, inputs.durations))
        .collect();
    let busy = inputs
        .agents
        .iter()
        .filter(|a| !matches!(a, Agent::Away | Agent::Idle))
        .count();
    let overrun = agents
        .iter()
        .filter(|a| matches!(a, Free::Never(Unknown::Overrun)))
        .count();
    let kept = if last_only { 1 } else { count };
    // starts[place][draw]; a place is unknown in every draw or in none (only agents whose time
    // is known are ever picked, and a known agent stays known while durations exist).
    let mut starts: Vec<Vec<f64>> = vec![Vec::with_capacity(DRAWS); kept];
    let mut why: Vec<Option<Unknown>> = vec![None; kept];
    let mut free: Vec<Result<f64, Unknown>> = Vec::with_capacity(agents.len());
    for draw in 0..DRAWS {
        // One stream per draw: a place's draws do not depend on how many places are asked for.
        let mut rng = SplitMix(0x5EED_F11A_6E25 ^ (draw as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        free.clear();
        free.extend(agents.iter().map(|a| a.draw(inputs.durations, &mut rng)));
        for place in 0..count {
            let slot = if last_only { 0 } else { place };
            let next = free
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.as_ref().ok().map(|at| (i, *at)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((i, at)) = next else {
                why[slot] = Some(why_unknown(&free));
                if last_only {
                    break;
                }
                continue;
            };
            if !last_only || place + 1 == count {
                starts[slot].push(at);
            }
            free[i] = inputs
                .durations
                .pick(&mut rng)
                .map(|d| at + d)
                .ok_or(Unknown::NoHistory);
        }
    }
    starts
        .into_iter()
        .zip(why)
        .map(|(mut s, why)| {
            s.sort_by(f64::total_cmp);
            let at = |q: f64| s[((q * (s.len() - 1) as f64).round() as usize).min(s.len() - 1)];
            let (start, likely) = match why {
                Some(w) => (Err(w), None),
                None if s.is_empty() => (Err(why_unknown(&[])), None),
                None => (Ok(at(0.5)), Some((at(0.1), at(0.9)))),
            };
            Forecast {
                start,
                likely,
                agents: agents.len(),
                busy,
                overrun,
            }
        })
        .collect()
}

/// When no agent's time is known: the first reason that applies (no agent, then no history,
/// then overrun).
fn why_unknown(free: &[Result<f64, Unknown>]) -> Unknown {
    if free.is_empty() {
        Unknown::NoAgent
    } else if free.contains(&Err(Unknown::NoHistory)) {
        Unknown::NoHistory
    } else {
        Unknown::Overrun
    }
}

/// An agent that will take the queue's jobs: how its first free moment is drawn.
enum Free<'a> {
    Now,
    /// After `D − elapsed` for a `D` of `of` longer than `elapsed`.
    After {
        elapsed: f64,
        of: &'a Durations,
    },
    At(f64),
    /// At a random moment of one of the queue's runs.
    Residual,
    Never(Unknown),
}

impl<'a> Free<'a> {
    fn of(agent: &Agent<'a>, durations: &Durations) -> Option<Free<'a>> {
        Some(match *agent {
            Agent::Away => return None,
            Agent::Idle => Free::Now,
            Agent::Running { of, .. } if of.is_empty() => Free::Never(Unknown::NoHistory),
            Agent::Running { elapsed, of } if of.expected_remaining(elapsed).is_none() => {
                Free::Never(Unknown::Overrun)
            }
            Agent::Running { elapsed, of } => Free::After { elapsed, of },
            Agent::Until { in_seconds } => Free::At(in_seconds.max(0.0)),
            Agent::Busy if durations.is_empty() => Free::Never(Unknown::NoHistory),
            Agent::Busy => Free::Residual,
        })
    }

    fn draw(&self, durations: &Durations, rng: &mut SplitMix) -> Result<f64, Unknown> {
        match self {
            Free::Now => Ok(0.0),
            Free::After { elapsed, of } => {
                let longer = &of.sorted[of.sorted.partition_point(|d| d <= elapsed)..];
                Ok(longer[rng.below(longer.len())] - elapsed)
            }
            Free::At(t) => Ok(*t),
            Free::Residual => {
                // A run drawn in proportion to its length, met at a uniform point of it.
                let total: f64 = durations.sorted.iter().sum();
                let mut left = rng.unit() * total;
                let run = durations
                    .sorted
                    .iter()
                    .find(|d| {
                        left -= **d;
                        left < 0.0
                    })
                    .or(durations.sorted.last())
                    .copied()
                    .unwrap_or(0.0);
                Ok(run * rng.unit())
            }
            Free::Never(why) => Err(*why),
        }
    }
}

impl Durations {
    fn pick(&self, rng: &mut SplitMix) -> Option<f64> {
        (!self.is_empty()).then(|| self.sorted[rng.below(self.len())])
    }
}

/// A small seeded generator (SplitMix64): the same inputs always give the same forecast.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
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
        let d = runs(&[10.0, 20.0, 20.0]);
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
        // The other agent frees in 5 s (a third of the runs) or 15 s (two thirds): 15 s mostly.
        assert!(close(f.start, 15.0), "{f:?}");
        assert_eq!(f.likely, Some((5.0, 15.0)));
        assert_eq!(f.overrun, 1, "the answer says the job may start sooner");
        // The next job in line waits for a second round of the other agent.
        assert!(close(start(&d, &agents, 1), 25.0));
    }

    #[test]
    fn the_first_of_several_agents_to_free_is_sooner_than_the_soonest_expected_end() {
        // Three runs of 100 s for one of 1000 s: each agent's expected rest is 325 s, but the
        // first of four to free is a 100 s run unless all four run long (1 in 256).
        let d = runs(&[100.0, 100.0, 100.0, 1000.0]);
        assert_eq!(d.expected_remaining(0.0), Some(325.0));
        let agents = [Agent::Running { elapsed: 0.0, of: &d }; 4];
        assert!(close(start(&d, &agents, 0), 100.0));
        // Alone, an agent frees after a 100 s run most of the time, too, but not always.
        let f = forecast(
            &Inputs {
                durations: &d,
                agents: &agents[..1],
            },
            0,
        );
        assert!(close(f.start, 100.0));
        assert_eq!(f.likely, Some((100.0, 1000.0)));
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
    fn a_busy_agent_whose_job_is_not_known_is_met_at_a_random_moment_of_a_run() {
        let d = runs(&[10.0, 30.0]);
        // E[D²] / 2E[D] = (100 + 900) / 2 / 40
        assert_eq!(d.mean_residual(), Some(12.5));
        // Runs of 10 s: somewhere in one, 5 s left in the middle.
        let ten = runs(&[10.0]);
        let f = forecast(
            &Inputs {
                durations: &ten,
                agents: &[Agent::Busy],
            },
            0,
        );
        let (start, (early, late)) = (f.start.unwrap(), f.likely.unwrap());
        assert!(
            (start - 5.0).abs() < 1.0 && early < start && start < late && late <= 10.0,
            "{f:?}"
        );
        assert_eq!(
            start_of(&Durations::default(), &[Agent::Busy]),
            Err(Unknown::NoHistory)
        );
    }

    fn start_of(durations: &Durations, agents: &[Agent<'_>]) -> Result<f64, Unknown> {
        start(durations, agents, 0)
    }

    #[test]
    fn jobs_ahead_run_the_queue_s_runs_on_whichever_agent_frees_first() {
        let d = runs(&[20.0, 20.0]);
        let agents = [Agent::Idle, Agent::Running { elapsed: 5.0, of: &d }];
        // Agent 0 frees at 0, agent 1 at 15. Places: 0 → 0 (agent 0, then busy until 20),
        // 1 → 15 (agent 1, until 35), 2 → 20, 3 → 35.
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
    }

    #[test]
    fn one_place_at_a_time_agrees_with_the_whole_queue_at_once() {
        let d = runs(&[10.0, 20.0, 30.0, 300.0]);
        let agents = [
            Agent::Idle,
            Agent::Running { elapsed: 5.0, of: &d },
            Agent::Until { in_seconds: 50.0 },
        ];
        let inputs = Inputs {
            durations: &d,
            agents: &agents,
        };
        for (p, f) in forecasts(&inputs, 6).into_iter().enumerate() {
            assert_eq!(f, forecast(&inputs, p as u64), "place {p}");
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

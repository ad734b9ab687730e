//! `flinger-bench`: the benchmarks that prove the design, run against the real broker, the real
//! release binaries and either store. Each scenario prints one table (stdout) and, with
//! `--json`, one JSON document per scenario instead (the tables then go to stderr).
//!
//! Build the binaries first: `cargo build --release --bins`. Figures and how to read them:
//! `docs/performance.md`.

mod baseline;
mod procstat;
mod report;
mod scenarios;
mod setup;
mod tap;
mod tracker;

use clap::{Parser, Subcommand};
use report::Report;
use scenarios::big_reads::BigReadsArgs;
use scenarios::estimate::EstimateArgs;
use scenarios::footprint::FootprintArgs;
use scenarios::gateway::GatewayArgs;
use scenarios::output::OutputArgs;
use scenarios::pickup::PickupArgs;
use scenarios::purge::PurgeArgs;
use scenarios::scale::ScaleArgs;
use scenarios::throughput::ThroughputArgs;
use scenarios::ui::UiArgs;
use setup::Store;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "flinger-bench",
    about = "Flinger's benchmarks: pickup, throughput, output, gateway, scale, footprint, estimate, ui, big-reads, purge"
)]
struct Cli {
    /// The store every component uses.
    #[arg(long, global = true, value_enum, default_value_t = Store::Sqlite)]
    store: Store,
    /// Print JSON on stdout (tables go to stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Idle agents, one job at a time: submit → first phase, submit → complete.
    Pickup(PickupArgs),
    /// N agents over M queues, K jobs as fast as the gateway takes them; vs the raw broker.
    Throughput(ThroughputArgs),
    /// Live output: MB/s to a follower of the output API, and line delays.
    Output(OutputArgs),
    /// Requests/s and latency of POST /v1/job and GET /v1/result at a few concurrency levels.
    Gateway(GatewayArgs),
    /// 1,000 heartbeating agents and 10,000 waiting jobs: scheduler CPU, memory, pickup.
    Scale(ScaleArgs),
    /// Resident memory and start-up time of each binary.
    Footprint(FootprintArgs),
    /// The queue estimator's ETAs against the truth, replaying a recorded mix of jobs.
    Estimate(EstimateArgs),
    /// The web UI with 100,000 jobs: page latencies, a line's delay to an open page, idle streams' CPU.
    Ui(UiArgs),
    /// A job of 256 MiB of output read whole by 20 clients at once: the gateway's memory.
    BigReads(BigReadsArgs),
    /// Pickup latency idle, then while retention purges 100,000 ended jobs with output.
    Purge(PurgeArgs),
    /// Every scenario on SQLite, then pickup, throughput and output on MongoDB.
    All {
        /// Skip the MongoDB runs.
        #[arg(long)]
        no_mongo: bool,
        /// Smaller sizes (a quick check that everything runs, not figures to quote).
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread exists: the lab starts the release binaries next to this one, logging
    // at `info` as a deployment would (the tests' debug logging would be measured too).
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from));
    // SAFETY: no other thread runs yet (the runtime is built below).
    unsafe {
        if std::env::var_os("FLINGER_BIN_DIR").is_none()
            && let Some(dir) = &here
        {
            std::env::set_var("FLINGER_BIN_DIR", dir);
        }
        if std::env::var_os("FLINGER_TEST_LOG").is_none() {
            std::env::set_var("FLINGER_TEST_LOG", "info");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flinger-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    progress!("binaries from {}", flinger_tests::bin_dir().display());
    let started = std::time::Instant::now();
    let store = cli.store;
    let mut failures = 0;
    let mut emit = |r: anyhow::Result<Report>| match r {
        Ok(r) => print(&r, cli.json),
        Err(e) => {
            failures += 1;
            eprintln!("flinger-bench: scenario failed: {e:#}");
        }
    };
    match cli.scenario {
        Scenario::Pickup(a) => emit(scenarios::pickup::run(store, &a).await),
        Scenario::Throughput(a) => emit(scenarios::throughput::run(store, &a).await),
        Scenario::Output(a) => emit(scenarios::output::run(store, &a).await),
        Scenario::Gateway(a) => emit(scenarios::gateway::run(store, &a).await),
        Scenario::Scale(a) => emit(scenarios::scale::run(store, &a).await),
        Scenario::Footprint(a) => emit(scenarios::footprint::run(store, &a).await),
        Scenario::Estimate(a) => emit(scenarios::estimate::run(&a).await),
        Scenario::Ui(a) => emit(scenarios::ui::run(store, &a).await),
        Scenario::BigReads(a) => emit(scenarios::big_reads::run(store, &a).await),
        Scenario::Purge(a) => emit(scenarios::purge::run(store, &a).await),
        Scenario::All { no_mongo, quick } => {
            let d = Defaults::new(quick);
            emit(scenarios::footprint::run(Store::Sqlite, &d.footprint).await);
            emit(scenarios::pickup::run(Store::Sqlite, &d.pickup).await);
            emit(scenarios::throughput::run(Store::Sqlite, &d.throughput).await);
            emit(scenarios::output::run(Store::Sqlite, &d.output).await);
            emit(scenarios::gateway::run(Store::Sqlite, &d.gateway).await);
            emit(scenarios::scale::run(Store::Sqlite, &d.scale).await);
            emit(scenarios::estimate::run(&d.estimate).await);
            emit(scenarios::ui::run(Store::Sqlite, &d.ui).await);
            emit(scenarios::big_reads::run(Store::Sqlite, &d.big_reads).await);
            emit(scenarios::purge::run(Store::Sqlite, &d.purge).await);
            if !no_mongo {
                emit(scenarios::pickup::run(Store::Mongo, &d.pickup).await);
                emit(scenarios::throughput::run(Store::Mongo, &d.mongo_throughput).await);
                emit(scenarios::output::run(Store::Mongo, &d.mongo_output).await);
            }
        }
    }
    progress!("done in {:.0} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(failures == 0, "{failures} scenario(s) failed");
    Ok(())
}

fn print(r: &Report, json: bool) {
    if json {
        eprint!("{}", r.table());
        println!("{}", r.json());
    } else {
        print!("{}", r.table());
        println!("{}", r.json());
    }
}

/// The sizes `all` uses.
struct Defaults {
    pickup: PickupArgs,
    throughput: ThroughputArgs,
    /// Smaller than on SQLite: the MongoDB stand-in of this repository serves a few hundred
    /// operations a second (see docs/performance.md).
    mongo_throughput: ThroughputArgs,
    output: OutputArgs,
    mongo_output: OutputArgs,
    gateway: GatewayArgs,
    scale: ScaleArgs,
    footprint: FootprintArgs,
    estimate: EstimateArgs,
    ui: UiArgs,
    big_reads: BigReadsArgs,
    purge: PurgeArgs,
}

impl Defaults {
    fn new(quick: bool) -> Defaults {
        // Each scenario's own defaults, parsed as if given no options.
        #[derive(Parser)]
        struct P<A: clap::Args> {
            #[command(flatten)]
            a: A,
        }
        fn parse<A: clap::Args>(extra: &[&str]) -> A {
            P::<A>::parse_from(std::iter::once("x").chain(extra.iter().copied())).a
        }
        // The stand-in serves a few hundred operations a second: the same small run either way.
        let mongo_throughput = parse(&[
            "--agents",
            "10",
            "--queues",
            "2",
            "--jobs",
            "100",
            "--no-baseline",
        ]);
        if quick {
            Defaults {
                pickup: parse(&["--jobs", "30", "--warmup", "5"]),
                throughput: parse(&["--agents", "10", "--queues", "2", "--jobs", "200"]),
                mongo_throughput,
                output: parse(&["--mib", "8", "--lines", "100", "--flood-lines", "10000"]),
                mongo_output: parse(&["--mib", "2", "--lines", "50", "--flood-lines", "1000"]),
                gateway: parse(&["--seconds", "1", "--levels", "1,16"]),
                scale: parse(&[
                    "--agents",
                    "100",
                    "--jobs",
                    "500",
                    "--interval",
                    "2",
                    "--window",
                    "5",
                ]),
                footprint: parse(&["--idle", "1", "--jobs", "5"]),
                estimate: parse(&[]),
                ui: parse(&[
                    "--jobs",
                    "5000",
                    "--requests",
                    "50",
                    "--lines",
                    "50",
                    "--streams",
                    "50",
                    "--window",
                    "5",
                ]),
                big_reads: parse(&["--mib", "8", "--clients", "4"]),
                purge: parse(&["--jobs", "2000", "--probes", "30", "--warmup", "5"]),
            }
        } else {
            Defaults {
                pickup: parse(&[]),
                throughput: parse(&[]),
                mongo_throughput,
                output: parse(&[]),
                mongo_output: parse(&["--mib", "8", "--lines", "200", "--flood-lines", "10000"]),
                gateway: parse(&[]),
                scale: parse(&[]),
                footprint: parse(&[]),
                estimate: parse(&[]),
                ui: parse(&[]),
                big_reads: parse(&[]),
                purge: parse(&[]),
            }
        }
    }
}

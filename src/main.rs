//! The `custflow` command line: parses configuration and wires the crates together.

mod app;
mod bench;
mod churn;
mod config;
mod connect;
mod demo;
mod fit;
mod lookup;
mod process;
mod shutdown;
mod synth;
mod telemetry;
mod topics;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the processor's hot loop allocates and frees
/// many small buffers, and glibc's malloc/free/consolidate took a third of its time.
/// Built without its transparent-huge-page advice (`no_thp`): memory it returned and
/// took back came as fresh 2 MiB pages for the kernel to zero, a fifth of the
/// processor's time during a rescoring pass.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use config::{group, Common, Key};

#[derive(Debug, Parser)]
#[command(
    name = "custflow",
    version,
    about = "Streaming customer analytics: RFM, churn and CLTV features from Kafka into Redis"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the topics of the contract that are missing and list them.
    Topics,
    /// Fit BG/NBD, Pareto/NBD, Gamma-Gamma, RFM cut-points and k-means on transactions.
    Fit(fit::FitArgs),
    /// Train the supervised churn classifier on point-in-time snapshots; report and install.
    TrainChurn(churn::TrainChurnArgs),
    /// Generate synthetic customers and events (backfill, then live with --rate).
    Synth(synth::SynthArgs),
    /// The main job: the whole pipeline fed by the synthetic generator, with a live summary.
    Demo(demo::DemoArgs),
    /// Print a customer's features and scores (from Redis, as of now or --as-of).
    Features(lookup::LookupArgs),
    /// Print a customer's scores valid at an instant (from the score history table).
    Scores(lookup::LookupArgs),
    /// Run everything in one process: processors, scoring, model job, SQL sink and API.
    Run(app::RunArgs),
    /// Measure a component: `custflow bench sink` (rows/s into the SQL sink).
    Bench(bench::BenchArgs),
    /// Serve the HTTP API alone (ingest, features, scores, registry, streams).
    Serve,
    /// Run a Connect-style worker (CSV spool-dir and Postgres sources) with its REST API.
    Connect(connect::ConnectArgs),
    /// Run a stream processor: input topics → per-customer features in Redis.
    Process(process::ProcessArgs),
}

fn main() -> std::process::ExitCode {
    match start() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A closed stdout pipe (`custflow synth --output - | head`) is a normal end.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // One readable line with its causes; CUSTFLOW_LOG=debug shows more.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The settings groups each command takes flags for (see `config::group`).
fn settings_of(command: &str) -> &'static [&'static [Key]] {
    use group::*;
    match command {
        "topics" => &[KAFKA, DEPLOYMENT],
        "train-churn" => &[KAFKA, DEPLOYMENT, REDIS],
        "synth" => &[KAFKA, DEPLOYMENT],
        "features" | "scores" => &[DEPLOYMENT, REDIS, SINK],
        "bench" => &[KAFKA, DEPLOYMENT, REDIS, SINK],
        "serve" => &[KAFKA, DEPLOYMENT, REDIS, SINK, HTTP, KEYS, PRIVACY, TRACING],
        "connect" => &[KAFKA, DEPLOYMENT, KEYS, PRIVACY, TRACING],
        "process" => &[KAFKA, DEPLOYMENT, REDIS, CLOCK, HTTP, TRACING],
        "run" | "demo" => &[
            KAFKA, DEPLOYMENT, REDIS, SINK, HTTP, KEYS, CLOCK, ALERTS, OUTPUTS, PRIVACY, TRACING,
        ],
        // fit reads files only.
        _ => &[],
    }
}

/// The command line: the derived commands, each with the flags of its settings.
fn command() -> clap::Command {
    let mut cli = Cli::command();
    let names: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    for name in names {
        cli = config::with_settings(cli, &name, settings_of(&name));
    }
    cli
}

/// Parses the command line and runs the command: `fit`, which reads a file and computes,
/// on this thread (a runtime's threads would only be started and stopped around it), the
/// others on a multi-threaded tokio runtime.
fn start() -> anyhow::Result<()> {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.common.resolve(&matches)?;
    if let Command::Fit(args) = &cli.command {
        return fit::run(args, config.json);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(&config, cli.command))
}

async fn run(config: &config::Resolved, command: Command) -> anyhow::Result<()> {
    // Flushes the spans still buffered when the command ends.
    let _telemetry = telemetry::init(&config.otlp_endpoint, config.trace_sample)?;
    match command {
        Command::Topics => topics::run(config).await,
        Command::Process(args) => process::run(config, &args).await,
        Command::Connect(args) => connect::run(config, &args).await,
        Command::Run(args) => app::run(config, args.options()).await,
        Command::Bench(args) => bench::run(config, &args).await,
        Command::Serve => app::run(config, app::RunOptions::serve()).await,
        Command::Features(args) => lookup::features(config, &args).await,
        Command::Scores(args) => lookup::scores(config, &args).await,
        Command::Demo(args) => demo::run(config, &args).await,
        Command::Synth(args) => synth::run(config, &args).await,
        Command::Fit(args) => fit::run(&args, config.json),
        Command::TrainChurn(args) => churn::run(config, &args).await,
    }
}

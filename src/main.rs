//! The `custflow` command line: parses configuration and wires the crates together.

mod config;
mod fit;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "custflow",
    version,
    about = "Streaming customer analytics: RFM, churn and CLTV features from Kafka into Redis"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the topics of the contract that are missing and list them.
    Topics,
    /// Fit BG/NBD, Pareto/NBD, Gamma-Gamma, RFM cut-points and k-means on transactions.
    Fit(fit::FitArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTFLOW_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = cli.config.resolve()?;
    match cli.command {
        Command::Topics => topics(&config).await,
        Command::Fit(args) => fit::run(&args, config.json),
    }
}

async fn topics(config: &config::Resolved) -> anyhow::Result<()> {
    let states =
        custflow_ingest::ensure_topics(&config.brokers, &config.topics(), Duration::from_secs(15))
            .await
            .with_context(|| {
                format!(
                    "is the broker running at {}? start it with scripts/stack.sh up",
                    config.brokers
                )
            })?;
    for s in &states {
        if !config.json {
            println!(
                "{:<28} {:>3} partitions{}",
                s.name,
                s.partitions,
                if s.created { "  (created)" } else { "" }
            );
        }
    }
    let summary = serde_json::json!({
        "topics": states.iter().map(|s| serde_json::json!({"name": s.name, "partitions": s.partitions, "created": s.created})).collect::<Vec<_>>(),
        "created": states.iter().filter(|s| s.created).count(),
    });
    if config.json {
        println!("{summary}");
    }
    Ok(())
}

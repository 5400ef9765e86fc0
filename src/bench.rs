//! `custflow bench <name>`: measurements that need a running component, printed as one
//! JSON line (`{"bench": name, …}`). `sink`: score rows per second into the SQL sink.

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use custflow_connectors::sql_sink::SqlSink;
use custflow_schemas::CustomerScore;

use crate::config::Resolved;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// Score rows per second into the --sink database (upsert + SCD2 history).
    Sink {
        /// Score rows to write: two versions for each of rows/2 customers.
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// Rows per transaction (the sink connector's batch).
        #[arg(long, default_value_t = 5_000)]
        batch: usize,
    },
}

pub(crate) async fn run(config: &Resolved, args: &BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Sink { rows, batch } => sink(config, rows, batch.max(1)).await,
    }
}

fn score(customer: usize, version: i64) -> CustomerScore {
    let f = (customer % 17) as f64;
    CustomerScore {
        customer_id: format!("bench-{customer:08}"),
        version,
        as_of: 1_700_000_000_000 + version * 86_400_000,
        model_version: "bench".into(),
        frequency: f,
        recency: f * 3.0,
        age: 200.0,
        monetary_value: 20.0 + f,
        p_alive: 0.8,
        churn_probability: 0.2,
        expected_orders_90d: 1.1,
        expected_aov: 21.0,
        clv_12m: 80.0 + f,
        value_tier: "mid60".into(),
        r_score: 3,
        f_score: 2,
        m_score: 4,
        rfm_segment: "need_attention".into(),
        cluster: Some("c2".into()),
        at_risk: false,
    }
}

async fn sink(config: &Resolved, rows: usize, batch: usize) -> anyhow::Result<()> {
    let sink = SqlSink::connect(&config.sink)
        .await
        .with_context(|| format!("opening the SQL sink {}", config.sink))?;
    let customers = rows.div_ceil(2);
    // A fresh version range per run, so every row is applied rather than skipped.
    let base = custflow_schemas::time::now_ms();
    let all: Vec<CustomerScore> = (1..=2)
        .flat_map(|v| (0..customers).map(move |c| score(c, base + v)))
        .take(rows)
        .collect();
    let started = Instant::now();
    let mut applied = 0;
    for chunk in all.chunks(batch) {
        applied += sink.write_scores(chunk).await?.applied;
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        applied == rows as u64,
        "{applied} of {rows} rows were applied"
    );
    let backend = config.sink.split(':').next().unwrap_or("");
    println!(
        "{}",
        serde_json::json!({"bench": "sink", "backend": backend, "rows": rows, "batch": batch,
            "seconds": seconds, "rows_per_sec": rows as f64 / seconds.max(1e-9)})
    );
    Ok(())
}

//! `custflow bench <name>`: measurements that need a running component, printed as one
//! JSON line (`{"bench": name, …}`). `sink`: score rows per second into the SQL sink.
//! `csv`: the spool-dir source's reading, conversion and encoding of one file, without a
//! broker (records per second and peak memory).

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
    /// Read one CSV file the way the spool-dir source does (parse, convert, validate,
    /// encode), without producing: the source's own cost and its peak memory.
    Csv {
        /// The file.
        file: std::path::PathBuf,
        /// `cdnow`, `online-retail`, or empty for the generic mapping.
        #[arg(long, default_value = "cdnow")]
        preset: String,
    },
}

pub(crate) async fn run(config: &Resolved, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.which {
        Which::Sink { rows, batch } => sink(config, *rows, (*batch).max(1)).await,
        Which::Csv { file, preset } => csv(config, file, preset),
    }
}

fn csv(config: &Resolved, file: &std::path::Path, preset: &str) -> anyhow::Result<()> {
    use custflow_connectors::connect::worker::{Encoder, TaskContext};
    use custflow_connectors::connect::{ConnectorConfig, ErrorPolicy};
    use custflow_connectors::spooldir::SpoolDirTask;

    let dir = file.parent().context("the file has no folder")?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file name is not UTF-8")?;
    let scratch = std::env::temp_dir().join(format!("custflow-bench-csv-{}", std::process::id()));
    let mut settings: std::collections::BTreeMap<String, String> = [
        ("connector.class", "SpoolDirCsvSource"),
        ("input.path", &dir.to_string_lossy()),
        ("input.file.pattern", &format!("^{}$", regex::escape(name))),
        ("finished.path", &scratch.to_string_lossy()),
        ("error.path", &scratch.to_string_lossy()),
        ("errors.tolerance", "all"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    if !preset.is_empty() {
        settings.insert("csv.preset".into(), preset.into());
    }
    let cfg = ConnectorConfig::new("bench-csv", settings)?;
    let common = cfg.common(&config.topics())?;
    let ctx = TaskContext {
        policy: ErrorPolicy::new(&common, 0),
        encoder: Encoder::new(
            std::sync::Arc::new(custflow_schemas::avro::AvroCodec::builtin()),
            common.format,
        ),
        topic: common.topic.as_str().into(),
        common,
        task: 0,
        offsets: Default::default(),
    };
    let mut task = SpoolDirTask::start(&cfg, ctx)?;
    let started = Instant::now();
    let (mut records, mut dead, mut bytes) = (0u64, 0u64, 0u64);
    loop {
        let batch = task.poll(5000)?;
        bytes += batch.bytes;
        dead += batch.records.iter().filter(|r| r.headers.is_some()).count() as u64;
        records += batch.records.len() as u64;
        if let Some(f) = batch.fatal {
            anyhow::bail!("{f}");
        }
        if !batch.ends.is_empty() {
            break;
        }
        anyhow::ensure!(
            !(batch.records.is_empty() && batch.bytes == 0),
            "{} is not readable as a {preset:?} file",
            file.display()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&scratch).ok();
    println!(
        "{}",
        serde_json::json!({"bench": "csv", "preset": preset, "records": records,
            "dead_letters": dead, "bytes": bytes, "seconds": seconds,
            "records_per_sec": (records as f64 / seconds.max(1e-9)).round(),
            "mb_per_sec": (bytes as f64 / 1e6 / seconds.max(1e-9) * 10.0).round() / 10.0,
            "max_rss_mb": crate::connect::max_rss_mb()})
    );
    Ok(())
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

//! `custflow connect`: a Connect-style worker with its management REST API; connector
//! configs given as files are created or updated on start.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use custflow_connectors::connect::rest;
use custflow_connectors::connect::worker::{Worker, WorkerConfig};
use custflow_connectors::connect::ConnectorConfig;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics;
use serde_json::json;

use crate::config::Resolved;

/// Options of `custflow connect`.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Connector configs to create or update (JSON files: `{"name": …, "config": {…}}`).
    configs: Vec<std::path::PathBuf>,
    /// Listen address of the Connect REST API.
    #[arg(
        long,
        env = "CUSTFLOW_CONNECT_HTTP_ADDR",
        default_value = "127.0.0.1:8083"
    )]
    connect_http: String,
    /// Stop once every task is idle (all files read, no new rows) and print a summary.
    #[arg(long)]
    exit_when_idle: bool,
    /// How often acknowledged source offsets are committed, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    offset_flush_ms: u64,
    /// Most records per task poll.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
}

fn read_config(path: &std::path::Path) -> anyhow::Result<ConnectorConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: \"name\" is missing", path.display()))?;
    let map = v
        .get("config")
        .and_then(|c| c.as_object())
        .with_context(|| format!("{}: \"config\" is missing", path.display()))?;
    ConnectorConfig::from_json(name, map.clone()).with_context(|| format!("{}", path.display()))
}

pub(crate) async fn run(config: &Resolved, args: &ConnectArgs) -> anyhow::Result<()> {
    let configs = args
        .configs
        .iter()
        .map(|p| read_config(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keys = crate::app::api_keys(&args.connect_http, config)?;
    crate::topics::ensure(config).await?;
    let registry = crate::process::registry(config).await?;
    let ids = registry.register_builtin(&config.topics()).await?;
    let names = config.topics();
    let worker = Worker::start(WorkerConfig {
        brokers: config.brokers.clone(),
        topics: names.clone(),
        config_topic: names.name(topics::CONNECT_CONFIGS),
        offset_topic: names.name(topics::CONNECT_OFFSETS),
        worker_id: args.connect_http.clone(),
        codec: std::sync::Arc::new(AvroCodec::new(registry, ids)),
        offset_flush: Duration::from_millis(args.offset_flush_ms.max(1)),
        batch_max: args.batch_max.max(1),
        deny: config.deny.clone(),
    })
    .await
    .context("starting the connect worker; is the broker up?")?;
    for c in configs {
        let name = c.name.clone();
        worker
            .put(c)
            .await
            .with_context(|| format!("connector {name}"))?;
    }
    let listener = tokio::net::TcpListener::bind(&args.connect_http)
        .await
        .with_context(|| format!("binding the Connect REST API to {}", args.connect_http))?;
    let app = rest::routes(worker.clone()).into_router(keys);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.changed().await;
            })
            .await
    });
    if !config.json {
        eprintln!(
            "connect worker: REST API on http://{} ({} connector(s)); Ctrl-C stops",
            args.connect_http,
            worker.names().await.len()
        );
    }
    let metrics = worker.metrics();
    let started = Instant::now();
    // The record count is sampled every 20 ms (the active time's resolution); the
    // worker's idleness every 200 ms.
    const SAMPLE: Duration = Duration::from_millis(20);
    let mut tick = tokio::time::interval(SAMPLE);
    let mut last_report = Instant::now();
    let mut last_idle_check = Instant::now();
    let mut idle_seen = 0;
    // From the first record on: the rate excludes start-up and the idle end.
    let mut first_record: Option<Instant> = None;
    let mut last_record = Instant::now();
    let mut last_count = 0;
    loop {
        tokio::select! {
            () = crate::shutdown::requested() => break,
            _ = tick.tick() => {}
        }
        let count = metrics.total(|t| &t.records);
        if count > last_count {
            first_record.get_or_insert_with(Instant::now);
            last_record = Instant::now();
            last_count = count;
        }
        if args.exit_when_idle && last_idle_check.elapsed() >= Duration::from_millis(200) {
            last_idle_check = Instant::now();
            // Twice in a row, so a task between two files does not count as done.
            if worker.all_idle().await {
                idle_seen += 1;
                if idle_seen >= 2 {
                    break;
                }
            } else {
                idle_seen = 0;
            }
        }
        if !config.json && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "{} records, {} dead letters, {} files done ({:.0} records/s)",
                metrics.total(|t| &t.records),
                metrics.total(|t| &t.dead_letters),
                metrics.total(|t| &t.partitions_done),
                metrics.total(|t| &t.records) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    worker.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    let secs = started.elapsed().as_secs_f64();
    let records = metrics.total(|t| &t.records);
    // Records before the first sample that saw them count from that sample: one sample
    // period is added, so the active time is never short.
    let active = first_record.map_or(0.0, |f| {
        (last_record.duration_since(f) + SAMPLE).as_secs_f64()
    });
    let mut failed = Vec::new();
    for n in worker.names().await {
        if let Ok(s) = worker.status(&n).await {
            for t in s["tasks"].as_array().into_iter().flatten() {
                if t["state"] == "FAILED" {
                    failed.push(json!({"connector": n, "task": t["id"], "trace": t["trace"]}));
                }
            }
        }
    }
    let summary = json!({
        "records": records,
        "dead_letters": metrics.total(|t| &t.dead_letters),
        "recovered": metrics.total(|t| &t.recovered),
        "files": metrics.total(|t| &t.partitions_done),
        "source_bytes": metrics.total(|t| &t.bytes),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "active_seconds": (active * 1000.0).round() / 1000.0,
        "records_per_sec": (records as f64 / active.max(1e-9)).round(),
        "max_rss_mb": max_rss_mb(),
        "failed": failed,
    });
    if config.json {
        println!("{summary}");
    } else {
        eprintln!("stopped: {summary}");
    }
    Ok(())
}

/// Peak resident memory of this process (`VmHWM`), in MiB; 0 where /proc is missing.
pub(crate) fn max_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

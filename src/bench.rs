//! `custflow bench <name>`: measurements that need a running component, printed as one
//! JSON line (`{"bench": name, …}`). `sink`: score rows per second into the SQL sink.
//! `csv`: the spool-dir source's reading, conversion and encoding of one file, without a
//! broker (records per second and peak memory). `lookup`: feature lookups against a
//! running API at a fixed request rate (open loop), with latency percentiles.

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
    /// Feature lookups at a fixed rate against a running API (`custflow serve`), for
    /// customers sampled from Redis: achieved rate and latency percentiles. Requests are
    /// scheduled whatever the answers do (open loop); a request that could not be sent
    /// on time counts its wait (`schedule_*` figures), so saturation shows.
    Lookup {
        /// The API, e.g. `http://127.0.0.1:8080`.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        target: String,
        /// Requests per second.
        #[arg(long, default_value_t = 5_000.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        duration_secs: f64,
        /// Customers per request: 1 = `GET /v1/customers/{id}/features`, more = `POST
        /// /v1/features:batch`.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Comma-separated features to ask for (default: all).
        #[arg(long)]
        features: Option<String>,
        /// Most requests in flight.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Customers to sample from Redis.
        #[arg(long, default_value_t = 100_000)]
        customers: usize,
        /// API key with the features:read scope.
        #[arg(long, env = "CUSTFLOW_BENCH_API_KEY")]
        api_key: Option<String>,
    },
}

pub(crate) async fn run(config: &Resolved, args: &BenchArgs) -> anyhow::Result<()> {
    match &args.which {
        Which::Sink { rows, batch } => sink(config, *rows, (*batch).max(1)).await,
        Which::Csv { file, preset } => csv(config, file, preset),
        Which::Lookup {
            target,
            rate,
            duration_secs,
            batch,
            features,
            connections,
            customers,
            api_key,
        } => {
            anyhow::ensure!(
                *rate > 0.0 && *duration_secs > 0.0,
                "--rate and --duration-secs must be > 0"
            );
            let ids = sample_customers(config, *customers).await?;
            let plan = LookupPlan {
                target: target.trim_end_matches('/').to_owned(),
                rate: *rate,
                requests: (*rate * *duration_secs).ceil() as usize,
                batch: (*batch).clamp(1, custflow_http::features::MAX_BATCH),
                features: features.clone(),
                connections: (*connections).max(1),
                api_key: api_key.clone(),
            };
            lookup(plan, ids).await
        }
    }
}

/// Up to `n` customer ids stored under this deployment's prefix.
async fn sample_customers(config: &Resolved, n: usize) -> anyhow::Result<Vec<String>> {
    use custflow_feature_store::conn::Scan;
    let (mut conn, keys) = crate::app::redis_connection(config).await?;
    let mut scan = Scan::new(&mut conn, &keys.features_pattern(), 5000).await?;
    let mut ids = Vec::new();
    while let Some(page) = scan.next_page(&mut conn).await? {
        ids.extend(
            page.iter()
                .filter_map(|k| keys.customer_of(k))
                .map(str::to_owned),
        );
        if ids.len() >= n {
            break;
        }
    }
    ids.truncate(n);
    anyhow::ensure!(
        !ids.is_empty(),
        "no customers in Redis under this prefix; run the pipeline first"
    );
    Ok(ids)
}

struct LookupPlan {
    target: String,
    rate: f64,
    requests: usize,
    batch: usize,
    features: Option<String>,
    connections: usize,
    api_key: Option<String>,
}

/// One answered request: microseconds waiting to be sent, microseconds on the wire,
/// status.
type Sample = (u64, u64, u16);

async fn lookup(plan: LookupPlan, ids: Vec<String>) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tokio::sync::Semaphore;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.connections)
        .tcp_nodelay(true)
        .build()?;
    let slots = Arc::new(Semaphore::new(plan.connections));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let select: Vec<&str> = plan
        .features
        .as_deref()
        .map(|f| f.split(',').collect())
        .unwrap_or_default();
    let start = tokio::time::Instant::now();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut pick = || {
        // xorshift: which customers each request asks for.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        ids[(rng_state % ids.len() as u64) as usize].clone()
    };
    for i in 0..plan.requests {
        let due = start + std::time::Duration::from_secs_f64(i as f64 / plan.rate);
        tokio::time::sleep_until(due).await;
        let permit = slots.clone().acquire_owned().await?;
        let req = if plan.batch == 1 {
            let mut url = format!("{}/v1/customers/{}/features", plan.target, pick());
            if let Some(f) = &plan.features {
                url.push_str("?features=");
                url.push_str(f);
            }
            client.get(url)
        } else {
            let customers: Vec<String> = (0..plan.batch).map(|_| pick()).collect();
            let mut body = serde_json::json!({"customer_ids": customers});
            if !select.is_empty() {
                body["features"] = serde_json::json!(select);
            }
            client
                .post(format!("{}/v1/features:batch", plan.target))
                .header("content-type", "application/json")
                .body(body.to_string())
        };
        let req = match &plan.api_key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let sent = tokio::time::Instant::now();
            let status = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    // The whole body counts: a lookup is done when it is read.
                    if r.bytes().await.is_ok() {
                        status
                    } else {
                        0
                    }
                }
                Err(_) => 0,
            };
            let done = tokio::time::Instant::now();
            let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            let _ = tx.send((
                us(sent.saturating_duration_since(due)),
                us(done.saturating_duration_since(sent)),
                status,
            ));
            drop(permit);
        });
    }
    drop(tx);
    let mut samples = Vec::with_capacity(plan.requests);
    while let Some(s) = rx.recv().await {
        samples.push(s);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = samples.iter().filter(|s| s.2 == 200).count();
    use custflow_ingest::load::percentile_ms as q;
    let sorted = |f: fn(&Sample) -> u64| {
        let mut v: Vec<u64> = samples.iter().map(f).collect();
        v.sort_unstable();
        v
    };
    let wire = sorted(|s| s.1);
    let scheduled = sorted(|s| s.0 + s.1);
    let lag = sorted(|s| s.0);
    println!(
        "{}",
        serde_json::json!({
            "bench": "lookup",
            "batch": plan.batch,
            "target_rate": plan.rate,
            "requests": samples.len(),
            "ok": ok,
            "errors": samples.len() - ok,
            "achieved_rate": (samples.len() as f64 / elapsed).round(),
            "customers_per_s": ((ok * plan.batch) as f64 / elapsed).round(),
            "p50_ms": q(&wire, 0.50),
            "p99_ms": q(&wire, 0.99),
            "p999_ms": q(&wire, 0.999),
            "max_ms": q(&wire, 1.0),
            "schedule_p99_ms": q(&scheduled, 0.99),
            "schedule_max_ms": q(&scheduled, 1.0),
            "send_lag_p99_ms": q(&lag, 0.99),
        })
    );
    Ok(())
}

fn csv(config: &Resolved, file: &std::path::Path, preset: &str) -> anyhow::Result<()> {
    use custflow_connectors::connect::task::{Encoder, TaskContext};
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
        retention_target: false,
        expected_retention_profit: 0.0,
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

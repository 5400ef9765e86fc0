//! `custflow demo`: the whole pipeline in one process fed by the synthetic generator —
//! a short backfill so there is history and a fitted model, then live events at a
//! visible rate — with a live summary in the terminal.

use anyhow::Context as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use custflow_feature_store::api::segment_counts;
use custflow_feature_store::conn::Scan;
use custflow_feature_store::keys::Keys;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::Outcome;
use redis::AsyncCommands;

use crate::app::{self, RunOptions};
use crate::config::Resolved;
use crate::synth::SynthArgs;

/// Options of `custflow demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Start over: delete this deployment's topics, Redis keys and SQLite sink file.
    #[arg(long)]
    fresh: bool,
    /// Customers in the backfill.
    #[arg(long, default_value_t = 3000)]
    customers: u64,
    /// Days of history in the backfill.
    #[arg(long, default_value_t = 365)]
    days: i64,
    /// Live events per second after the backfill.
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Stop after this many seconds of live events (default: until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Seconds between model refits.
    #[arg(long, default_value_t = 30)]
    model_every_secs: u64,
}

async fn fresh_start(config: &Resolved) -> anyhow::Result<()> {
    let n = custflow_ingest::kafka::delete_topics(
        &config.brokers,
        &config.topics(),
        Duration::from_secs(15),
    )
    .await?;
    let keys = Keys::new(config.topics().name(""));
    let store = custflow_processors::store::Store::connect(&config.redis, keys).await?;
    let wiped = store.wipe().await?;
    let mut conn = store.connection();
    let _: () = conn.del(store.keys().model_current()).await?;
    if let Some(path) = config.sink.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    eprintln!("fresh start: deleted {n} topics and {wiped} Redis keys, removed the SQLite sink");
    // The broker deletes topics asynchronously; wait until they are gone.
    for _ in 0..50 {
        let left = custflow_ingest::list_topics(&config.brokers, Duration::from_secs(5))?;
        if !left
            .iter()
            .any(|(t, _)| t == &config.topics().name(custflow_schemas::topics::ORDERS))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn line(s: &app::Shared, prev: &mut (u64, u64, Instant), segments: &serde_json::Value) -> String {
    let now = Instant::now();
    let dt = now.duration_since(prev.2).as_secs_f64().max(1e-3);
    let produced = s.generated.load(Ordering::Relaxed) + s.ingest.accepted.load(Ordering::Relaxed);
    let applied = Metrics::get(&s.processor.applied);
    let rate_in = (produced - prev.0) as f64 / dt;
    let rate_applied = (applied - prev.1) as f64 / dt;
    *prev = (produced, applied, now);
    let counts = |dim: &str| -> String {
        segments["counts"][dim]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.as_i64().unwrap_or(0) > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    format!(
        "in {rate_in:>5.0}/s  applied {rate_applied:>5.0}/s  customers {}  lag {}  freshness p99 {}  model {}\n  tiers: {}\n  segments: {}",
        segments["customers_scored"],
        s.processor.total_lag(),
        s.processor.freshness.quantile(0.99).map_or("-".into(), |v| format!("≤{:.0} ms", v * 1000.0)),
        s.model.current().map_or("none yet".into(), |m| m.version.clone()),
        counts("value_tier"),
        counts("rfm_segment"),
    )
}

pub(crate) async fn run(config: &Resolved, args: &DemoArgs) -> anyhow::Result<()> {
    if args.fresh {
        fresh_start(config).await?;
    }
    let (mut conn, keys) = app::redis_connection(config).await?;
    let has_history: bool = conn.exists(keys.model_current()).await?;
    let running = app::start(
        config,
        RunOptions {
            model_every: Duration::from_secs(args.model_every_secs),
            rebuild: false,
            api_only: false,
            churn: Default::default(),
            rescore_slice: custflow_processors::runtime::RESCORE_SLICE,
        },
    )
    .await?;
    let addr = running.addr;
    let shared = running.shared.clone();
    let started = Instant::now();
    eprintln!("custflow demo — API on http://{addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let seed = if has_history {
        (custflow_schemas::time::now_ms() as u64) % 1_000_000
    } else {
        42
    };
    if !has_history {
        eprintln!(
            "backfill: {} customers over {} days of history …",
            args.customers, args.days
        );
        let backfill = SynthArgs::kafka(args.customers, args.days, seed);
        let totals = crate::synth::generate(
            config,
            &backfill,
            stop_rx.clone(),
            true,
            Some(shared.generated.clone()),
        )
        .await?;
        eprintln!(
            "backfill: {} events produced in {:.1} s; processing …",
            totals.events, totals.seconds
        );
        let deadline = Instant::now() + Duration::from_secs(300);
        while Metrics::get(&shared.processor.applied)
            + Metrics::get(&shared.processor.dead_lettered)
            < totals.events
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the backfill was not processed within 5 minutes"
            );
            if let Some(name) = running.failed() {
                anyhow::bail!("{name} stopped during the backfill");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The model job fits only once the processors say the features are built.
        while !redis::cmd("EXISTS")
            .arg(keys.state_ready())
            .query_async::<bool>(&mut conn)
            .await?
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the features were not marked built within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match app::refit(&running.model_job, &running.sink, &running.clock).await {
            Some(Outcome::Promoted { version, customers }) => {
                eprintln!("model {version} fitted on {customers} customers")
            }
            other => eprintln!(
                "no model yet ({other:?}); the model job retries every {} s",
                args.model_every_secs
            ),
        }
    } else {
        eprintln!("continuing the existing pipeline (use --fresh to start over)");
    }

    // A real customer for the copy-paste lookup (SCAN pages may come back empty).
    let mut scan = Scan::new(&mut conn, &keys.features_pattern(), 1000).await?;
    let customer = loop {
        let page = scan
            .next_page(&mut conn)
            .await?
            .context("no customer in Redis after the backfill; see the processor's log")?;
        if let Some(c) = page.iter().find_map(|k| keys.customer_of(k)) {
            break c.to_owned();
        }
    };
    let now = custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms());
    println!();
    println!("  Dashboard:  http://{addr}/dashboard");
    println!();
    println!("  Look up a customer's features and scores:");
    println!("    curl -s http://{addr}/v1/customers/{customer}/features");
    println!("  Subscribe to score updates (server-sent events):");
    println!("    curl -sN http://{addr}/v1/stream/customer-scores");
    println!("  Send an order:");
    println!(
        "    curl -s -X POST http://{addr}/v1/events -H 'content-type: application/json' -d '{{\"type\":\"order\",\"event_id\":\"demo-{}\",\"order_id\":\"demo-order-1\",\"customer_id\":\"{customer}\",\"occurred_at\":\"{now}\",\"status\":\"placed\",\"currency\":\"EUR\",\"items\":[{{\"sku\":\"burger-classic\",\"category\":\"mains\",\"quantity\":2,\"unit_price\":11.5}}],\"total\":23.0}}'",
        custflow_schemas::time::now_ms()
    );
    println!();
    eprintln!("live: {} events/s (Ctrl-C stops)", args.rate);

    let live = SynthArgs {
        rate: Some(args.rate),
        duration_secs: args.duration_secs,
        live_only: true,
        ..SynthArgs::kafka(args.customers, args.days, seed)
    };
    let live_task = {
        let (config, counter) = (config.clone(), shared.generated.clone());
        let rx = stop_rx.clone();
        // The live phase regenerates the same population and skips its history, so the
        // customers of the backfill keep buying.
        tokio::spawn(async move {
            crate::synth::generate(&config, &live, rx, false, Some(counter)).await
        })
    };
    let mut prev = (
        shared.generated.load(Ordering::Relaxed) + shared.ingest.accepted.load(Ordering::Relaxed),
        Metrics::get(&shared.processor.applied),
        Instant::now(),
    );
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tokio::select! {
            () = crate::shutdown::requested() => break,
            _ = tick.tick() => {
                let seg = segment_counts(&mut conn, &keys).await.unwrap_or(serde_json::Value::Null);
                eprintln!("{}", line(&shared, &mut prev, &seg));
                if live_task.is_finished() || running.failed().is_some() {
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let live_totals = live_task
        .await
        .map_err(|e| anyhow::anyhow!("live generator: {e}"))?;
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (rows, history, models, sales) = running.sink.counts().await.unwrap_or_default();
    let summary = format!(
        "custflow demo ran {:.0} s: {} events produced, {} applied to customer state ({} dead-lettered), {} scores emitted \
         and {} rows in the sink ({} customers in customer_scores, {} history rows, {} models, {} sales_rollups rows); \
         model in use: {}. \
         Offsets are committed; run the same command to continue, or add --fresh to start over.",
        started.elapsed().as_secs_f64(),
        g(&shared.generated),
        Metrics::get(&shared.processor.applied),
        Metrics::get(&shared.processor.dead_lettered),
        Metrics::get(&shared.processor.scores_emitted),
        g(&shared.sink.applied),
        rows,
        history,
        models,
        sales,
        shared.model.current().map_or("none".into(), |m| m.version.clone()),
    );
    running.shutdown().await?;
    if let Err(e) = live_totals {
        eprintln!("live generator: {e:#}");
    }
    eprintln!("\n{summary}");
    if config.json {
        println!(
            "{}",
            serde_json::json!({
                "seconds": started.elapsed().as_secs_f64(),
                "events": g(&shared.generated),
                "applied": Metrics::get(&shared.processor.applied),
                "scores": Metrics::get(&shared.processor.scores_emitted),
                "sink_rows": rows,
                "history_rows": history,
                "models": models,
                "sales_rows": sales,
            })
        );
    }
    Ok(())
}

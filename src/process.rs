//! `custflow process`: runs one processor (a consumer-group member) until Ctrl-C.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use custflow_feature_store::state::DEFAULT_HISTORY_DAYS;
use custflow_kafka::progress::{Groups, Progress};
use custflow_kafka::registry_store::KafkaRegistryStore;
use custflow_metrics::Counts;
use custflow_processors::metrics::Metrics;
use custflow_processors::{Clock, Processor, ProcessorConfig};
use custflow_schemas::registry::Registry;
use custflow_schemas::topics;

use crate::config::Resolved;

/// Options of `custflow process`.
#[derive(Debug, Args)]
pub(crate) struct ProcessArgs {
    /// Wipe this deployment's Redis keys and replay the input topics from the beginning.
    #[arg(long)]
    rebuild: bool,
    /// Allowed lateness of the event-time clock, in seconds.
    #[arg(long, default_value_t = 3600)]
    lateness_secs: i64,
    /// Days without an order after which a customer is at risk.
    #[arg(long, default_value_t = custflow_feature_store::features::DEFAULT_AT_RISK_DAYS)]
    at_risk_days: f64,
    /// Most messages per batch.
    #[arg(long, default_value_t = 5000)]
    batch_max: usize,
    /// Stop once this many events were applied or dead-lettered (for benchmarks).
    #[arg(long)]
    until_events: Option<u64>,
    /// This instance's id among the deployment's processors (default: a fresh one per
    /// process). Not needed to share the partitions or to resume; a second running
    /// process with the same id is refused.
    #[arg(long, env = "CUSTFLOW_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Do not keep the sales rollups (`/v1/sales/*`, the `sales_rollups` table).
    #[arg(long)]
    no_sales_rollups: bool,
    /// Days of per-day detail kept behind each customer's newest order (default ten
    /// years): events in any order and however late within them give the same features;
    /// an older order is dead-lettered (`beyond_history`). `run` and `demo` read
    /// CUSTFLOW_HISTORY_DAYS.
    #[arg(long, env = "CUSTFLOW_HISTORY_DAYS", default_value_t = DEFAULT_HISTORY_DAYS, value_parser = clap::value_parser!(i32).range(1..))]
    history_days: i32,
}

impl ProcessArgs {
    /// The defaults of the flags (for `run` and `demo`).
    pub(crate) fn defaults(rebuild: bool) -> Self {
        Self {
            rebuild,
            lateness_secs: 3600,
            at_risk_days: custflow_feature_store::features::DEFAULT_AT_RISK_DAYS,
            batch_max: 5000,
            until_events: None,
            instance_id: None,
            no_sales_rollups: false,
            history_days: std::env::var("CUSTFLOW_HISTORY_DAYS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|d| *d >= 1)
                .unwrap_or(DEFAULT_HISTORY_DAYS),
        }
    }
}

/// Opens the schema registry of a deployment (its log is a compacted topic).
pub(crate) async fn registry(config: &Resolved) -> anyhow::Result<Arc<Registry>> {
    let store = KafkaRegistryStore::new(&config.brokers, &config.topics().name(topics::SCHEMAS))?;
    let reg = Registry::open(Arc::new(store)).await.with_context(|| {
        format!(
            "reading the schema registry from {}; is the broker up?",
            config.brokers
        )
    })?;
    Ok(Arc::new(reg))
}

pub(crate) fn processor_config(
    config: &Resolved,
    args: &ProcessArgs,
) -> anyhow::Result<ProcessorConfig> {
    let clock = Clock::parse(&config.clock, args.lateness_secs * 1000)
        .with_context(|| format!("--clock {:?} is not wall or event", config.clock))?;
    let mut cfg = ProcessorConfig::new(&config.brokers, &config.redis, config.topics(), clock);
    cfg.rebuild = args.rebuild;
    cfg.at_risk_days = args.at_risk_days;
    cfg.batch_max = args.batch_max;
    cfg.instance_id = args.instance_id.clone();
    cfg.sales = !args.no_sales_rollups;
    cfg.history_days = args.history_days;
    Ok(cfg)
}

/// A progress line on stderr every few seconds; it says so when the processors' group is
/// stalled (input waits and no offset moves) and why. Its freshness p99 is that of the
/// events applied since `since` (the previous line's counts, moved to now), else of the
/// whole run.
pub(crate) fn progress(
    metrics: &Metrics,
    group: &Progress,
    started: Instant,
    since: Option<&mut Counts>,
) -> String {
    let now = metrics.freshness.counts();
    let over = if since.is_some() { "" } else { " over the run" };
    let p99 = match since {
        Some(last) => now.quantile_since(&std::mem::replace(last, now), 0.99),
        None => now.quantile_since(&Counts::default(), 0.99),
    }
    .map_or("-".into(), |s| format!("{:.0} ms", s * 1000.0));
    let stalled = group
        .stalled()
        .map_or(String::new(), |why| format!("\n  STALLED: {why}"));
    format!(
        "{:>6.0}s  applied {}  duplicates {}  dead-lettered {}  lag {}  freshness p99 ≤ {}{over}{stalled}",
        started.elapsed().as_secs_f64(),
        Metrics::get(&metrics.applied),
        Metrics::get(&metrics.duplicates),
        Metrics::get(&metrics.dead_lettered),
        metrics.total_lag(),
        p99
    )
}

pub(crate) async fn run(config: &Resolved, args: &ProcessArgs) -> anyhow::Result<()> {
    crate::topics::ensure(config).await?;
    let registry = registry(config).await?;
    let metrics = Arc::new(Metrics::default());
    let processor = Processor::new(processor_config(config, args)?, registry, metrics.clone())
        .await
        .with_context(|| {
            format!(
                "starting the processor (broker {}, Redis {})",
                config.brokers, config.redis
            )
        })?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let group = processor.progress();
    // Prometheus metrics and health of this instance on --http.
    let server = {
        let (m, g) = (metrics.clone(), group.clone());
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let (m, g) = (m.clone(), g.clone());
                    async move {
                        let mut registry = custflow_metrics::Registry::default();
                        registry.collect(m).collect(Groups(vec![g]));
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                custflow_metrics::CONTENT_TYPE,
                            )],
                            registry.render(),
                        )
                    }
                }),
            )
            .route(
                "/healthz",
                axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            );
        // Another instance on this machine may hold the port: processing goes on without
        // an endpoint rather than failing (give each instance its own --http).
        match tokio::net::TcpListener::bind(&config.http).await {
            Ok(listener) => {
                if let Ok(addr) = listener.local_addr() {
                    eprintln!("metrics on http://{addr}/metrics");
                }
                Some(tokio::spawn(
                    async move { axum::serve(listener, app).await },
                ))
            }
            Err(e) => {
                eprintln!(
                    "warning: no metrics endpoint, {} is taken ({e}); use --http",
                    config.http
                );
                None
            }
        }
    };
    let reporter = {
        let (metrics, group) = (metrics.clone(), group.clone());
        tokio::spawn(async move {
            let mut last = metrics.freshness.counts();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!("{}", progress(&metrics, &group, started, Some(&mut last)));
            }
        })
    };
    let until = args.until_events;
    let watched = metrics.clone();
    // When the first event was applied: the sustained rate leaves out joining the group
    // and a new deployment's first replay set-up.
    let first_applied = Arc::new(std::sync::OnceLock::<Instant>::new());
    let first = first_applied.clone();
    let stop = tokio::spawn(async move {
        let done = async {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if Metrics::get(&watched.applied) > 0 {
                    first.get_or_init(Instant::now);
                }
                let n = Metrics::get(&watched.applied) + Metrics::get(&watched.dead_lettered);
                if until.is_some_and(|u| n >= u) {
                    return;
                }
            }
        };
        tokio::select! {
            () = crate::shutdown::requested() => eprintln!("stopping: finishing the batch in hand and committing offsets …"),
            () = done => {}
        }
        let _ = tx.send(true);
    });
    let result = processor.run(rx).await;
    reporter.abort();
    stop.abort();
    if let Some(server) = server {
        server.abort();
    }
    result?;
    eprintln!("{}", progress(&metrics, &group, started, None));
    if config.json {
        let seconds = started.elapsed().as_secs_f64();
        let applied = Metrics::get(&metrics.applied);
        let after_first = first_applied.get().map(|t| t.elapsed().as_secs_f64());
        println!(
            "{}",
            serde_json::json!({
                "applied": applied,
                "duplicates": Metrics::get(&metrics.duplicates),
                "dead_lettered": Metrics::get(&metrics.dead_lettered),
                "seconds": seconds,
                "events_per_sec": applied as f64 / seconds.max(1e-9),
                "seconds_after_first": after_first,
                "events_per_sec_after_first": after_first.map(|t| applied as f64 / t.max(1e-9)),
                "redis_write_p99_ms": metrics.redis_write.quantile(0.99).map(|s| s * 1000.0),
                "freshness_p99_ms": metrics.freshness.quantile(0.99).map(|s| s * 1000.0),
            })
        );
    }
    Ok(())
}

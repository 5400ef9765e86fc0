//! `custflow demo`: the whole pipeline in one process fed by the synthetic generator —
//! a short backfill so there is history and a fitted model, then live events at a
//! visible rate — with a live summary in the terminal.

use anyhow::Context as _;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use custflow_feature_store::conn::Scan;
use custflow_feature_store::keys::Keys;
use custflow_http::features::segment_counts;
use custflow_metrics::Counts;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::Outcome;
use custflow_schemas::avro::{self, AvroCodec};
use custflow_schemas::{json, topics, EventKind, ValidationContext};
use rdkafka::Message;
use redis::AsyncCommands;

use crate::app::{self, RunOptions};
use crate::config::Resolved;
use crate::synth::SynthArgs;

/// Options of `custflow demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Start over: the deployment's log begins anew (what its topics hold stays on the
    /// broker but is no longer read), its Redis keys and SQLite sink file go.
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
    /// Seconds between model refits: faster than `run`'s six hours so that the demo shows
    /// the model job's decisions; a refit is still promoted only under `run`'s rule.
    #[arg(long, default_value_t = 30)]
    model_every_secs: u64,
}

async fn fresh_start(config: &Resolved) -> anyhow::Result<()> {
    // Topics are not deleted: on tansu's durable engines deleting one topic deletes every
    // topic of the broker. The log's beginning and the consumers' positions move to the
    // ends instead (`kafka::start_over`).
    let names = config.topics();
    let prefix = names.name("");
    let topics: Vec<String> = [
        topics::CUSTOMERS,
        topics::ORDERS,
        topics::ACTIVITY,
        topics::CUSTOMER_SCORES,
        topics::SEGMENT_CHANGES,
        topics::DLQ,
    ]
    .iter()
    .map(|t| names.name(t))
    .collect();
    let groups: Vec<String> = [
        "custflow-processors",
        "custflow-sql-sink",
        "custflow-alerts",
    ]
    .iter()
    .map(|g| format!("{prefix}{g}"))
    .collect();
    let brokers = config.brokers.clone();
    let moved = tokio::task::spawn_blocking(move || {
        custflow_kafka::client::start_over(
            &brokers,
            &prefix,
            &topics,
            &groups,
            Duration::from_secs(15),
        )
    })
    .await??;
    let keys = Keys::new(config.topics().name(""));
    let store = custflow_processors::store::Store::connect(&config.redis, keys).await?;
    let wiped = store.wipe().await?;
    let mut conn = store.connection();
    let _: () = conn.del(store.keys().model_current()).await?;
    if let Some(path) = config.sink.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    } else {
        custflow_connectors::sql_sink::SqlSink::connect(&config.sink)
            .await?
            .delete_meta(PLAN)
            .await?;
    }
    eprintln!(
        "fresh start: the deployment's log begins anew ({moved} partitions), deleted {wiped} Redis keys, removed the SQLite sink"
    );
    Ok(())
}

/// What the previous status line saw, for the rates and the freshness since it.
struct LastLine {
    produced: u64,
    applied: u64,
    at: Instant,
    freshness: Counts,
}

impl LastLine {
    fn now(s: &app::Shared) -> Self {
        LastLine {
            produced: s.events_in(),
            applied: Metrics::get(&s.processor.applied),
            at: Instant::now(),
            freshness: s.processor.freshness.counts(),
        }
    }
}

/// The status line: rates and freshness p99 since the previous line (a backlog worked
/// off minutes ago does not stay in it), customers, lag, model, tiers and segments.
fn line(s: &app::Shared, prev: &mut LastLine, segments: &serde_json::Value) -> String {
    let last = LastLine::now(s);
    let dt = last.at.duration_since(prev.at).as_secs_f64().max(1e-3);
    let rate_in = last.produced.saturating_sub(prev.produced) as f64 / dt;
    let rate_applied = last.applied.saturating_sub(prev.applied) as f64 / dt;
    let p99 = last.freshness.quantile_since(&prev.freshness, 0.99);
    *prev = last;
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
    // Input that waits while no consumer moves: say so, and why, instead of a calm line.
    let stalled = s.stalled().map_or(String::new(), |(group, why)| {
        format!("\n  STALLED ({group}): {why}")
    });
    format!(
        "in {rate_in:>5.0}/s  applied {rate_applied:>5.0}/s  customers {}  lag {}  freshness p99 {}  model {}\n  tiers: {}\n  segments: {}{stalled}",
        segments["customers_scored"],
        s.processor.total_lag(),
        p99.map_or("-".into(), |v| format!("≤{:.0} ms", v * 1000.0)),
        s.model.current().map_or("none yet".into(), |m| m.version.clone()),
        counts("value_tier"),
        counts("rfm_segment"),
    )
}

/// The demo's backfill, fixed when it first starts and kept in the sink's database
/// (`custflow_meta`), so a demo stopped in the middle of it (Ctrl-C, a kill) finishes the
/// same backfill when started again: the same events, none twice.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BackfillPlan {
    /// The instant the history ends (the generator's "now").
    now_ms: i64,
    seed: u64,
    customers: u64,
    days: i64,
    done: bool,
}

const PLAN: &str = "demo.backfill";

/// Ids of the events already on the input topics (a backfill interrupted before).
async fn delivered_ids(config: &Resolved) -> anyhow::Result<HashSet<String>> {
    let registry = crate::process::registry(config).await?;
    let ids = registry.register_builtin(&config.topics()).await?;
    let codec = AvroCodec::new(registry, ids);
    let topics = config.topics();
    let brokers = config.brokers.clone();
    tokio::task::spawn_blocking(move || {
        let names: Vec<String> = EventKind::ALL
            .iter()
            .map(|k| topics.name(k.topic()))
            .collect();
        let inputs: Vec<(String, i32)> =
            custflow_kafka::list_topics(&brokers, &names, Duration::from_secs(10))?
                .into_iter()
                .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
                .collect();
        let starts: Vec<(String, i32, i64)> = custflow_kafka::client::log_starts(
            &brokers,
            &topics.name(""),
            &inputs,
            Duration::from_secs(10),
        )?
        .into_iter()
        .map(|((t, p), o)| (t, p, o))
        .collect();
        let mut seen = HashSet::new();
        custflow_kafka::client::read_to_end(&brokers, &starts, Duration::from_secs(300), |m| {
            let (Some(kind), Some(bytes)) = (
                topics.base(m.topic()).and_then(EventKind::for_topic),
                m.payload(),
            ) else {
                return;
            };
            let event = if avro::is_framed(bytes) {
                codec.decode_unchecked(kind, bytes).ok()
            } else {
                json::decode(kind, bytes, &ValidationContext::now()).ok()
            };
            if let Some(e) = event {
                seen.insert(e.event_id().to_owned());
            }
        })?;
        Ok(seen)
    })
    .await?
}

/// Produces the demo's backfill, or what of it a stopped demo left undone; `None` when it
/// was done before (the pipeline continues).
async fn backfill(
    config: &Resolved,
    args: &DemoArgs,
    sink: &custflow_connectors::sql_sink::SqlSink,
    counter: Arc<std::sync::atomic::AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<crate::synth::SynthTotals>> {
    let plan = match sink.meta(PLAN).await? {
        Some(json) => serde_json::from_str(&json).context("the demo's backfill plan")?,
        None => {
            // A deployment that has events but no plan was fed before plans were kept,
            // or by hand: it is not backfilled again.
            let has_events = !delivered_ids(config).await?.is_empty();
            BackfillPlan {
                now_ms: custflow_schemas::time::now_ms(),
                seed: 42,
                customers: args.customers,
                days: args.days,
                done: has_events,
            }
        }
    };
    sink.set_meta(PLAN, &serde_json::to_string(&plan)?).await?;
    if plan.done {
        return Ok(None);
    }
    let delivered = delivered_ids(config).await?;
    if delivered.is_empty() {
        eprintln!(
            "backfill: {} customers over {} days of history …",
            plan.customers, plan.days
        );
    } else {
        eprintln!(
            "backfill: resuming a backfill that was stopped; {} of its events are on the topics already …",
            delivered.len()
        );
    }
    let run = SynthArgs {
        now_ms: Some(plan.now_ms),
        skip: Some(Arc::new(delivered)),
        ..SynthArgs::kafka(plan.customers, plan.days, plan.seed)
    };
    let totals = crate::synth::generate(config, &run, stop.clone(), true, Some(counter)).await?;
    anyhow::ensure!(
        totals.failed == 0,
        "{} backfill events were not delivered; run the demo again to finish the backfill",
        totals.failed
    );
    if *stop.borrow() {
        anyhow::bail!("stopped during the backfill; run the demo again to finish it");
    }
    sink.set_meta(
        PLAN,
        &serde_json::to_string(&BackfillPlan { done: true, ..plan })?,
    )
    .await?;
    Ok(Some(totals))
}

pub(crate) async fn run(config: &Resolved, args: &DemoArgs) -> anyhow::Result<()> {
    if args.fresh {
        fresh_start(config).await?;
    }
    let (mut conn, keys) = app::redis_connection(config).await?;
    let running = app::start(
        config,
        RunOptions {
            model_every: Duration::from_secs(args.model_every_secs),
            rebuild: false,
            api_only: false,
            churn: Default::default(),
            rescore_slice: custflow_processors::runtime::RESCORE_SLICE,
            promotion: Default::default(),
        },
    )
    .await?;
    let addr = running.addr;
    let shared = running.shared.clone();
    let started = Instant::now();
    eprintln!("custflow demo — API on http://{addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Ctrl-C or SIGTERM during the backfill stops it; what was produced stays, and the
    // next run produces the rest.
    let interrupt = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            crate::shutdown::requested().await;
            let _ = stop_tx.send(true);
        })
    };
    let backfilled = backfill(
        config,
        args,
        &running.sink,
        shared.generated.clone(),
        stop_rx.clone(),
    )
    .await;
    let backfilled = match backfilled {
        Ok(b) => b,
        Err(e) => {
            let _ = stop_tx.send(true);
            running.shutdown().await?;
            return Err(e);
        }
    };
    let seed = match &backfilled {
        Some(totals) => {
            eprintln!(
                "backfill: {} events produced in {:.1} s; processing …",
                totals.events, totals.seconds
            );
            42
        }
        None => {
            eprintln!("continuing the existing pipeline (use --fresh to start over)");
            (custflow_schemas::time::now_ms() as u64) % 1_000_000
        }
    };
    // Everything on the input topics is applied (the processors' committed offsets reached
    // the log ends in a reading taken after the backfill) and the features are marked
    // built; then a first model is fitted where there is none. Progress is shown, and a
    // stall says why instead of waiting in silence.
    let processors = shared.groups().into_iter().next();
    let since = Instant::now();
    let mut last_note = Instant::now();
    loop {
        if *stop_rx.borrow() {
            break;
        }
        if let Some(name) = running.failed() {
            let _ = stop_tx.send(true);
            running.shutdown().await?;
            anyhow::bail!("{name} stopped while the history was processed");
        }
        let caught_up = processors.as_ref().is_none_or(|p| p.caught_up_after(since));
        let ready = redis::cmd("EXISTS")
            .arg(keys.state_ready())
            .query_async::<bool>(&mut conn)
            .await
            .unwrap_or(false);
        if caught_up && ready {
            break;
        }
        if last_note.elapsed() >= Duration::from_secs(5) {
            last_note = Instant::now();
            let waiting = processors.as_ref().map_or(0, |p| p.waiting());
            match shared.stalled() {
                Some((group, why)) => eprintln!("processing: STALLED ({group}): {why}"),
                None => eprintln!(
                    "processing: {} events applied, {waiting} waiting …",
                    Metrics::get(&shared.processor.applied)
                ),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if shared.model.current().is_none() && !*stop_rx.borrow() {
        match app::refit(&running.model_job, &running.sink, &running.clock).await {
            Some(Outcome::Promoted {
                version, customers, ..
            }) => {
                eprintln!("model {version} fitted on {customers} customers")
            }
            other => eprintln!(
                "no model yet ({other:?}); the model job retries every {} s",
                args.model_every_secs
            ),
        }
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
    let mut prev = LastLine::now(&shared);
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut stopping = stop_rx.clone();
    loop {
        if *stopping.borrow() {
            break;
        }
        tokio::select! {
            _ = stopping.changed() => break,
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
    interrupt.abort();
    let live_totals = live_task
        .await
        .map_err(|e| anyhow::anyhow!("live generator: {e}"))?;
    let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (rows, history, models, sales) = running.sink.counts().await.unwrap_or_default();
    let summary = format!(
        "custflow demo ran {:.0} s: {} events produced, {} applied to customer state ({} dead-lettered), {} scores emitted \
         and {} rows in the sink ({} customers in customer_scores, {} history rows, {} models, {} sales_rollups rows); \
         model in use: {} ({} refits promoted, {} kept: GET /v1/models says why). \
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
        Metrics::get(&shared.processor.model_promotions),
        Metrics::get(&shared.processor.model_kept),
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
                "promotions": Metrics::get(&shared.processor.model_promotions),
                "refits_kept": Metrics::get(&shared.processor.model_kept),
                "sales_rows": sales,
            })
        );
    }
    Ok(())
}

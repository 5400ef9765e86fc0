//! `custflow synth`: the synthetic generator as a command — backfill history as fast as
//! possible, then (with `--rate`) live events at a steady rate.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use custflow_ingest::producer::{EventProducer, Format};
use custflow_ingest::synth::{Generator, SynthParams};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::{json, Event};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Resolved;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum WireFormat {
    Avro,
    Json,
}

/// Options of `custflow synth`.
#[derive(Debug, Args, Clone)]
pub(crate) struct SynthArgs {
    /// Customers arriving during the backfill span.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) customers: u64,
    /// Days of history to backfill, ending now.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: i64,
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// After the backfill, produce live events (event time = now) at this many per second.
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Stop live mode after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    pub(crate) duration_secs: Option<f64>,
    #[arg(long, value_enum, default_value_t = WireFormat::Avro)]
    pub(crate) format: WireFormat,
    /// `kafka` (default), `-` for NDJSON on stdout, or a file path for NDJSON.
    #[arg(long, default_value = "kafka")]
    pub(crate) output: String,
    /// Generate the history but do not send it (continue a population live).
    #[arg(long)]
    pub(crate) live_only: bool,
}

/// Where events go.
enum Sink {
    Kafka(Box<EventProducer>),
    Ndjson(Box<dyn Write + Send>),
}

impl Sink {
    fn send(&mut self, e: &Event) -> anyhow::Result<usize> {
        match self {
            Sink::Kafka(p) => Ok(p.send(e)?),
            Sink::Ndjson(w) => {
                let mut line = serde_json::to_vec(&json::encode_tagged(e))?;
                line.push(b'\n');
                w.write_all(&line)?;
                Ok(line.len())
            }
        }
    }
}

/// Totals of a run, printed as the final summary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SynthTotals {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) failed: u64,
}

pub(crate) async fn run(config: &Resolved, args: &SynthArgs) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    let totals = generate(config, args, rx, !config.json, None).await?;
    let summary = serde_json::json!({
        "events": totals.events,
        "bytes": totals.bytes,
        "seconds": totals.seconds,
        "events_per_sec": totals.events as f64 / totals.seconds.max(1e-9),
        "failed": totals.failed,
    });
    if config.json {
        println!("{summary}");
    } else {
        eprintln!(
            "{} events, {} bytes in {:.1} s ({:.0} events/s), {} delivery failures",
            totals.events,
            totals.bytes,
            totals.seconds,
            totals.events as f64 / totals.seconds.max(1e-9),
            totals.failed
        );
    }
    anyhow::ensure!(
        totals.failed == 0,
        "{} events were not delivered",
        totals.failed
    );
    Ok(())
}

/// Runs the generator until the backfill (and live phase, if any) ends or `stop` is set.
pub(crate) async fn generate(
    config: &Resolved,
    args: &SynthArgs,
    stop: tokio::sync::watch::Receiver<bool>,
    show_progress: bool,
    counter: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> anyhow::Result<SynthTotals> {
    let count = |n: u64| {
        if let Some(c) = &counter {
            c.fetch_add(n, Ordering::Relaxed);
        }
    };
    let now = custflow_schemas::time::now_ms();
    anyhow::ensure!(args.days > 0, "--days must be positive");
    // Live mode continues the same population into the future.
    let live_days = if args.rate.is_some() { 365 } else { 0 };
    let customers = args.customers + args.customers * live_days as u64 / args.days as u64;
    let params = SynthParams {
        seed: args.seed,
        customers,
        start_ms: now - args.days * DAY_MS,
        end_ms: now + live_days * DAY_MS,
        ..SynthParams::default()
    };
    let mut generator = Generator::new(params).map_err(anyhow::Error::msg)?;
    let mut sink = match args.output.as_str() {
        "kafka" => {
            crate::topics::ensure(config).await?;
            let registry = crate::process::registry(config).await?;
            let ids = registry.register_builtin(&config.topics()).await?;
            let codec = Arc::new(AvroCodec::new(registry, ids));
            let format = match args.format {
                WireFormat::Avro => Format::Avro,
                WireFormat::Json => Format::Json,
            };
            Sink::Kafka(Box::new(EventProducer::new(
                &config.brokers,
                config.topics(),
                codec,
                format,
            )?))
        }
        "-" => Sink::Ndjson(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        path => {
            let f = std::fs::File::create(PathBuf::from(path))
                .with_context(|| format!("creating {path}"))?;
            Sink::Ndjson(Box::new(std::io::BufWriter::new(f)))
        }
    };
    let bar = if show_progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let mut totals = SynthTotals::default();
    // Backfill: every event up to now, as fast as the sink takes them.
    let mut pending = None;
    while let Some(e) = generator.next() {
        if e.occurred_at() > now {
            pending = Some(e);
            break;
        }
        if args.live_only {
            continue;
        }
        totals.bytes += sink.send(&e)? as u64;
        totals.events += 1;
        count(1);
        if totals.events % 10_000 == 0 {
            bar.set_message(format!(
                "backfill: {} events, {} customers",
                totals.events,
                generator.customers_seen()
            ));
            bar.tick();
            if *stop.borrow() {
                break;
            }
        }
    }
    // Live: the same population, one event at a time, event time = now.
    if let (Some(rate), Some(first)) = (args.rate, pending) {
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let live_start = Instant::now();
        let mut next = tokio::time::Instant::now();
        for (i, mut e) in std::iter::once(first).chain(generator.by_ref()).enumerate() {
            if *stop.borrow()
                || args
                    .duration_secs
                    .is_some_and(|d| live_start.elapsed().as_secs_f64() >= d)
            {
                break;
            }
            retime(&mut e, custflow_schemas::time::now_ms());
            totals.bytes += sink.send(&e)? as u64;
            totals.events += 1;
            count(1);
            if i % 50 == 0 {
                bar.set_message(format!("live: {} events at {rate}/s", totals.events));
                bar.tick();
            }
            next += interval;
            tokio::time::sleep_until(next).await;
        }
    }
    bar.finish_and_clear();
    match &mut sink {
        Sink::Kafka(p) => {
            p.flush(Duration::from_secs(60))?;
            totals.failed = p.deliveries().failed.load(Ordering::Relaxed);
        }
        Sink::Ndjson(w) => w.flush()?,
    }
    totals.seconds = started.elapsed().as_secs_f64();
    Ok(totals)
}

/// Moves a live event to the present.
fn retime(e: &mut Event, now: i64) {
    match e {
        Event::Customer(c) => {
            c.occurred_at = now;
            c.signup_at = Some(now);
        }
        Event::Order(o) => o.occurred_at = now,
        Event::Activity(a) => a.occurred_at = now,
    }
}

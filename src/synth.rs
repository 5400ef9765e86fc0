//! `custflow synth`: the synthetic generator as a command — backfill history as fast as
//! possible, then (with `--rate`) live events at a steady rate.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use custflow_ingest::load::{HttpLoad, LoadConfig, LoadReport};
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
    /// Days of history to backfill, ending at --end (default now).
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
    /// `kafka` (default), `fluvio://HOST:PORT/TOPIC` (tagged JSON keyed by customer id,
    /// for a FluvioSource with `event.type=tagged`), `-` for NDJSON on stdout, or a file
    /// path for NDJSON.
    #[arg(long, default_value = "kafka")]
    pub(crate) output: String,
    /// Send to custflow's REST endpoint instead (`http://127.0.0.1:8080`): the load test.
    #[arg(long, conflicts_with = "output")]
    pub(crate) target: Option<String>,
    /// With --target: requests in flight at once.
    #[arg(long, default_value_t = 8, requires = "target")]
    pub(crate) concurrency: usize,
    /// With --target: events per request (1 = one JSON object per POST, else NDJSON).
    #[arg(long, default_value_t = 500, requires = "target")]
    pub(crate) batch: usize,
    /// With --target: API key with the `events:write` scope.
    #[arg(long, env = "CUSTFLOW_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Generate the history but do not send it (continue a population live).
    #[arg(long)]
    pub(crate) live_only: bool,
    /// The instant the generated history ends: a date (its end, UTC), RFC 3339 or epoch
    /// milliseconds; default now. The same end, seed and sizes give the same events with
    /// the same ids, byte for byte (the demo resumes its backfill so).
    #[arg(long = "end", value_name = "TIME", value_parser = parse_end)]
    pub(crate) now_ms: Option<i64>,
    /// Ids of events already delivered: generated, not sent again.
    #[arg(skip)]
    pub(crate) skip: Option<Arc<std::collections::HashSet<String>>>,
}

impl SynthArgs {
    /// A backfill of `days` of history for `customers` into Kafka as Avro.
    pub(crate) fn kafka(customers: u64, days: i64, seed: u64) -> Self {
        Self {
            customers,
            days,
            seed,
            rate: None,
            duration_secs: None,
            format: WireFormat::Avro,
            output: "kafka".into(),
            target: None,
            concurrency: 8,
            batch: 500,
            api_key: None,
            live_only: false,
            now_ms: None,
            skip: None,
        }
    }
}

/// `--end`: a date, RFC 3339 or epoch milliseconds.
fn parse_end(s: &str) -> Result<i64, String> {
    custflow_schemas::time::parse_instant(s).ok_or_else(|| {
        format!("{s:?} is not a date (YYYY-MM-DD), an RFC 3339 timestamp or epoch milliseconds")
    })
}

/// Where events go.
enum Sink {
    Kafka(Box<EventProducer>),
    #[cfg(feature = "fluvio")]
    Fluvio(Box<custflow_connectors::fluvio_sink::Publisher>, u64),
    Ndjson(Box<dyn Write + Send>),
    Http(Box<HttpLoad>),
}

impl Sink {
    async fn send(&mut self, e: &Event) -> anyhow::Result<usize> {
        match self {
            Sink::Kafka(p) => Ok(p.send(e)?),
            Sink::Http(h) => Ok(h.send(e).await?),
            #[cfg(feature = "fluvio")]
            Sink::Fluvio(p, queued) => {
                let value = json::encode_tagged(e).to_string();
                let len = value.len();
                p.send(e.customer_id(), value).await?;
                *queued += 1;
                // Acknowledged in rounds, so what waits for an acknowledgement stays bounded.
                if *queued % 50_000 == 0 {
                    p.flush().await?;
                }
                Ok(len)
            }
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
#[derive(Debug, Default, Clone)]
pub(crate) struct SynthTotals {
    pub(crate) events: u64,
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    pub(crate) failed: u64,
    /// With --target: what the endpoint answered.
    pub(crate) http: Option<LoadReport>,
}

pub(crate) async fn run(config: &Resolved, args: &SynthArgs) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::shutdown::requested().await;
        let _ = tx.send(true);
    });
    let totals = generate(config, args, rx, !config.json, None).await?;
    let mut summary = serde_json::json!({
        "events": totals.events,
        "bytes": totals.bytes,
        "seconds": totals.seconds,
        "events_per_sec": totals.events as f64 / totals.seconds.max(1e-9),
        "failed": totals.failed,
    });
    if let Some(h) = &totals.http {
        summary["http"] = serde_json::to_value(h)?;
        summary["requests_per_sec"] = (h.requests as f64 / totals.seconds.max(1e-9)).into();
    }
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
        if let Some(h) = &totals.http {
            eprintln!(
                "{} requests ({:.0}/s): {} accepted, {} rejected, {} failed; latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms; statuses {:?}",
                h.requests,
                h.requests as f64 / totals.seconds.max(1e-9),
                h.events_accepted,
                h.events_rejected,
                h.events_failed,
                h.latency_p50_ms,
                h.latency_p95_ms,
                h.latency_p99_ms,
                h.latency_max_ms,
                h.statuses
            );
        }
    }
    if let Some(err) = totals.http.as_ref().and_then(|h| h.first_error.as_ref()) {
        eprintln!("first failure: {err}");
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
    let now = args.now_ms.unwrap_or_else(custflow_schemas::time::now_ms);
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
    let generator = Generator::new(params)?;
    let mut sink = match (&args.target, args.output.as_str()) {
        (Some(target), _) => Sink::Http(Box::new(HttpLoad::start(&LoadConfig {
            target: target.clone(),
            concurrency: args.concurrency,
            batch: args.batch,
            api_key: args.api_key.clone(),
        })?)),
        (None, "kafka") => {
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
        #[cfg(feature = "fluvio")]
        (None, url) if url.starts_with("fluvio://") => {
            let target = custflow_connectors::fluvio_sink::Target::parse(url)?;
            Sink::Fluvio(Box::new(target.connect().await?), 0)
        }
        #[cfg(not(feature = "fluvio"))]
        (None, url) if url.starts_with("fluvio://") => {
            anyhow::bail!(
                "--output fluvio:// needs custflow built with the `fluvio` feature (the default)"
            )
        }
        (None, "-") => Sink::Ndjson(Box::new(std::io::BufWriter::new(std::io::stdout()))),
        (None, path) => {
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
    // Backfill: every event up to now, as fast as the sink takes them. The generator runs
    // on its own thread, so generating and encoding/sending use both cores.
    let (chunks, handle) = spawn_backfill(generator, now, args.live_only);
    let mut chunks = chunks;
    'backfill: while let Some(chunk) = chunks.recv().await {
        let mut sent = 0;
        for e in &chunk.events {
            if args.skip.as_ref().is_some_and(|s| s.contains(e.event_id())) {
                continue;
            }
            totals.bytes += sink.send(e).await? as u64;
            sent += 1;
        }
        totals.events += sent;
        count(sent);
        bar.set_message(format!(
            "backfill: {} events, {} customers",
            totals.events, chunk.customers_seen
        ));
        bar.tick();
        if *stop.borrow() {
            break 'backfill;
        }
    }
    drop(chunks);
    let (mut generator, pending) = handle.await.context("the generator thread panicked")?;
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
            totals.bytes += sink.send(&e).await? as u64;
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
    match sink {
        Sink::Kafka(p) => {
            p.flush(Duration::from_secs(60))?;
            totals.failed = p.deliveries().failed.load(Ordering::Relaxed);
        }
        Sink::Ndjson(mut w) => w.flush()?,
        #[cfg(feature = "fluvio")]
        Sink::Fluvio(mut p, _) => p.flush().await?,
        Sink::Http(h) => {
            let report = h.finish().await?;
            totals.failed = report.events_failed + report.events_rejected;
            totals.http = Some(report);
        }
    }
    totals.seconds = started.elapsed().as_secs_f64();
    Ok(totals)
}

/// Events of the backfill, generated ahead of the sender.
struct Chunk {
    events: Vec<Event>,
    customers_seen: u64,
}

/// Runs the generator up to `now` on a blocking thread, sending chunks of events (none
/// with `live_only`); gives back the generator and the first event after `now`.
fn spawn_backfill(
    mut generator: Generator,
    now: i64,
    live_only: bool,
) -> (
    tokio::sync::mpsc::Receiver<Chunk>,
    tokio::task::JoinHandle<(Generator, Option<Event>)>,
) {
    const CHUNK: usize = 2048;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut events = Vec::with_capacity(CHUNK);
        let mut pending = None;
        while let Some(e) = generator.next() {
            if e.occurred_at() > now {
                pending = Some(e);
                break;
            }
            if live_only {
                continue;
            }
            events.push(e);
            if events.len() == CHUNK {
                let chunk = Chunk {
                    events: std::mem::replace(&mut events, Vec::with_capacity(CHUNK)),
                    customers_seen: generator.customers_seen(),
                };
                if tx.blocking_send(chunk).is_err() {
                    // The sender stopped (Ctrl-C or an error): nothing more is wanted.
                    return (generator, None);
                }
            }
        }
        if !events.is_empty() {
            let customers_seen = generator.customers_seen();
            let _ = tx.blocking_send(Chunk {
                events,
                customers_seen,
            });
        }
        (generator, pending)
    });
    (rx, handle)
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

//! `custflow run`: processors, scoring, model job, SQL sink and the HTTP API in one
//! process, wired together; `custflow serve` is the API alone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use custflow_connectors::sales_sink;
use custflow_connectors::score_sink::{self, ScoreSinkConfig, SinkMetrics};
use custflow_connectors::sql_sink::SqlSink;
use custflow_connectors::webhook::{self, AlertConfig, AlertMetrics, AlertRule};
use custflow_feature_store::conn::{Redis, Timeouts};
use custflow_feature_store::features::DEFAULT_AT_RISK_DAYS;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::members::Member;
use custflow_feature_store::model::ModelHandle;
use custflow_http::features::FeatureState;
use custflow_http::ingest::{IngestMetrics, IngestState};
use custflow_http::ops::{OpsState, Status};
use custflow_http::sales::SalesState;
use custflow_http::stream::StreamHub;
use custflow_http::AppState;
use custflow_kafka::progress::{Groups, Progress};
use custflow_models::promotion::PromotionRule;
use custflow_processors::metrics::Metrics;
use custflow_processors::model_job::{ChurnMonitoring, ModelJob, Outcome};
use custflow_processors::runtime::{BoxFuture, Tick};
use custflow_processors::scoring::Scorer;
use custflow_processors::{Clock, Processor};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::registry::Registry;
use custflow_schemas::topics;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::config::Resolved;

/// Counters the whole process shares (for `/v1/stats` and the demo's summary).
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) processor: Arc<Metrics>,
    pub(crate) ingest: Arc<IngestMetrics>,
    pub(crate) sink: Arc<SinkMetrics>,
    pub(crate) alerts: Arc<AlertMetrics>,
    #[cfg(feature = "fluvio")]
    pub(crate) fluvio: Arc<custflow_connectors::fluvio_sink::FluvioSinkMetrics>,
    /// Requests and latency per HTTP route.
    pub(crate) http: Arc<custflow_http::http_metrics::HttpMetrics>,
    /// Events produced by an in-process generator (demo).
    pub(crate) generated: Arc<AtomicU64>,
    pub(crate) model: ModelHandle,
    /// The progress of each consumer group this process runs a member of (processors,
    /// SQL sink, alerts): their lag, and why one is stalled.
    pub(crate) groups: std::sync::Mutex<Vec<Arc<Progress>>>,
    /// The window of `/v1/stats`'s freshness p99 (the dashboard's).
    pub(crate) recent_freshness: custflow_metrics::Recent,
}

/// `/v1/stats` gives the freshness p99 of the events applied in the last 10–20 s: a
/// backlog worked off minutes ago leaves it.
const STATS_WINDOW: Duration = Duration::from_secs(10);

impl Shared {
    /// Events in so far: produced by the in-process generator or accepted over REST.
    pub(crate) fn events_in(&self) -> u64 {
        self.generated.load(Ordering::Relaxed) + self.ingest.accepted.load(Ordering::Relaxed)
    }

    /// The groups watched here.
    pub(crate) fn groups(&self) -> Vec<Arc<Progress>> {
        self.groups.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The first stalled group and why, if any.
    pub(crate) fn stalled(&self) -> Option<(String, String)> {
        self.groups()
            .iter()
            .find_map(|g| g.stalled().map(|why| (g.group.clone(), why)))
    }

    fn watch(&self, progress: Arc<Progress>) {
        if let Ok(mut g) = self.groups.lock() {
            g.push(progress);
        }
    }
}

/// The whole HTTP API (`custflow_http::app`) over this process's state.
pub(crate) fn router(
    config: &Resolved,
    registry: Arc<Registry>,
    redis: Redis,
    shared: Arc<Shared>,
    codec: Arc<AvroCodec>,
) -> anyhow::Result<Router> {
    let keys = deployment_keys(config, &redis);
    let ingest = IngestState {
        producer: IngestState::producer(&config.brokers)?,
        topics: config.topics(),
        codec,
        redis: Some(redis.clone()),
        permits: Arc::new(Semaphore::new(200_000)),
        max_items: 10_000,
        body_limit: 16 << 20,
        metrics: shared.ingest.clone(),
        deny: config.deny.clone(),
    };
    let state = AppState {
        ingest,
        features: FeatureState {
            redis: redis.clone(),
            keys: keys.clone(),
            model: shared.model.clone(),
            at_risk_days: DEFAULT_AT_RISK_DAYS,
        },
        sales: SalesState {
            redis: redis.clone(),
            keys: keys.clone(),
        },
        registry,
        streams: StreamHub::new(&config.brokers, config.topics()),
        ops: OpsState {
            status: shared.clone(),
            redis,
            keys,
            brokers: config.brokers.clone(),
            orders_topic: config.topics().name(topics::ORDERS),
        },
        access: api_keys(&config.http, config)?,
        http_metrics: shared.http.clone(),
    };
    Ok(custflow_http::app(state))
}

/// The API keys and their limits for a server on `addr`: off by default on loopback,
/// required elsewhere.
pub(crate) fn api_keys(
    addr: &str,
    config: &Resolved,
) -> anyhow::Result<Arc<custflow_http::auth::Access>> {
    let keys = custflow_http::auth::ApiKeys::parse(&config.api_keys)?;
    let loopback = addr
        .parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    anyhow::ensure!(
        loopback || !keys.is_empty(),
        "serving on {addr} (not loopback) needs API keys: set --api-keys or CUSTFLOW_API_KEYS"
    );
    Ok(custflow_http::auth::Access::new(keys, config.limits))
}

impl Status for Shared {
    fn metrics(&self) -> String {
        let mut registry = custflow_metrics::Registry::default();
        registry
            .collect(self.processor.clone())
            .collect(self.ingest.clone())
            .collect(self.sink.clone())
            .collect(self.alerts.clone())
            .collect(self.http.clone())
            .collect(Groups(self.groups()));
        #[cfg(feature = "fluvio")]
        registry.collect(self.fluvio.clone());
        registry.render()
    }

    fn stats(&self) -> serde_json::Value {
        stats_json(self)
    }

    fn stalled(&self) -> Option<(String, String)> {
        Shared::stalled(self)
    }
}

/// The figures of `/v1/stats`.
pub(crate) fn stats_json(s: &Shared) -> serde_json::Value {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    json!({
        "at_ms": custflow_schemas::time::now_ms(),
        "events_in": s.events_in(),
        "applied": Metrics::get(&s.processor.applied),
        "dead_lettered": Metrics::get(&s.processor.dead_lettered),
        "scores_emitted": Metrics::get(&s.processor.scores_emitted),
        "sink_rows": g(&s.sink.applied),
        "lag": s.processor.total_lag(),
        "stalled": s.stalled().map(|(group, why)| format!("{group}: {why}")),
        "freshness_p99_ms": s
            .recent_freshness
            .quantile(&s.processor.freshness, 0.99, STATS_WINDOW)
            .map(|v| (v * 1000.0).round()),
        "model_version": s.model.current().map(|m| m.version.clone()),
    })
}

/// Refreshes the model in use from Redis every sweep.
struct Refresh {
    model: ModelHandle,
    redis: Redis,
    keys: Keys,
}

impl Tick for Refresh {
    fn tick(&self) -> BoxFuture<'_, custflow_processors::Result<Option<String>>> {
        Box::pin(async move {
            if let Err(e) = self
                .model
                .refresh(&mut self.redis.clone(), &self.keys)
                .await
            {
                tracing::warn!(error = %e, "model refresh failed");
            }
            Ok(self.model.current().map(|m| m.version.clone()))
        })
    }
}

/// Everything `run` started, to stop it cleanly.
pub(crate) struct Running {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    pub(crate) addr: SocketAddr,
    pub(crate) sink: SqlSink,
    pub(crate) model_job: Arc<ModelJob>,
    pub(crate) clock: Arc<Clock>,
}

/// The model job's default period: six hours. Each refit is cheap (seconds at a million
/// customers) but a promotion rescores every customer, and customers' behaviour does not
/// change by the minute.
pub(crate) const MODEL_EVERY_SECS: u64 = 6 * 3600;
/// The model job's period while no model is in use.
const NO_MODEL_RETRY: Duration = Duration::from_secs(30);

/// Options of `run` that the demo tunes.
#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    pub(crate) model_every: Duration,
    pub(crate) rebuild: bool,
    /// `serve`: the HTTP API alone (ingest, lookups, registry, streams); processors,
    /// model job and sink run in other processes.
    pub(crate) api_only: bool,
    pub(crate) churn: ChurnMonitoring,
    /// Customers rescored between two live batches during a pass (all partitions).
    pub(crate) rescore_slice: usize,
    /// When a refit replaces the model in use.
    pub(crate) promotion: PromotionRule,
}

impl RunOptions {
    /// `serve`'s: the API alone.
    pub(crate) fn serve() -> Self {
        Self {
            model_every: Duration::from_secs(MODEL_EVERY_SECS),
            rebuild: false,
            api_only: true,
            churn: ChurnMonitoring::default(),
            rescore_slice: custflow_processors::runtime::RESCORE_SLICE,
            promotion: PromotionRule::default(),
        }
    }
}

/// Connects to the Redis of `config` (a standalone server, or any node of a Redis
/// Cluster) and gives the deployment's key names in the layout it needs.
pub(crate) async fn redis_connection(config: &Resolved) -> anyhow::Result<(Redis, Keys)> {
    let url = &config.redis;
    let hint = || format!("connecting to Redis at {url}; start it with scripts/stack.sh up");
    let redis = tokio::time::timeout(
        Duration::from_secs(15),
        Redis::connect(url, Timeouts::default()),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 15 s"))
    .with_context(hint)?
    .with_context(hint)?;
    let keys = deployment_keys(config, &redis);
    Ok((redis, keys))
}

/// The key names of `config`'s deployment, in the layout of the Redis behind `redis`.
pub(crate) fn deployment_keys(config: &Resolved, redis: &Redis) -> Keys {
    Keys::new(config.topics().name("")).in_cluster(redis.is_cluster())
}

/// Starts processors, scoring, model job, sink and API; returns at once.
pub(crate) async fn start(config: &Resolved, opts: RunOptions) -> anyhow::Result<Running> {
    crate::topics::ensure(config).await?;
    let registry = crate::process::registry(config).await?;
    let ids = registry.register_builtin(&config.topics()).await?;
    let out_ids = registry.register_outputs(&config.topics()).await?;
    let codec = Arc::new(AvroCodec::new(registry.clone(), ids));
    let (redis, keys) = redis_connection(config).await?;
    let shared = Arc::new(Shared::default());
    if let Err(e) = shared.model.refresh(&mut redis.clone(), &keys).await {
        tracing::warn!(error = %e, "no readable model yet");
    }
    let sink = SqlSink::connect(&config.sink)
        .await
        .with_context(|| format!("opening the SQL sink {}", config.sink))?;
    // Redis lost the model (it restarted empty; the processors rebuild the features from
    // the topics): the champion the sink recorded is put back in use, instead of waiting
    // for a refit and rolling a new model out to everyone.
    if shared.model.current().is_none() && !opts.api_only {
        match sink.champion().await {
            Ok(Some(m)) => {
                let version = m.version.clone();
                match shared.model.promote(&mut redis.clone(), &keys, &m).await {
                    Ok(()) => tracing::info!(version, "model restored from the SQL sink"),
                    Err(e) => tracing::warn!(error = %e, "restoring the model from the sink"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the champion from the sink"),
        }
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)> = Vec::new();

    // Processors with scoring.
    let args = crate::process::ProcessArgs::defaults(opts.rebuild);
    let mut pcfg = crate::process::processor_config(config, &args)?;
    pcfg.rescore_slice = opts.rescore_slice;
    let clock = pcfg.clock.clone();
    let refresh = Refresh {
        model: shared.model.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
    };
    if opts.api_only {
        // Lookups score with the current model: follow what the model job publishes.
        let mut rx = stop_rx.clone();
        tasks.push((
            "model refresh",
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = rx.changed() => return Ok(()),
                    }
                    refresh.tick().await?;
                }
            }),
        ));
    } else {
        let processor = Processor::new(pcfg, registry.clone(), shared.processor.clone()).await?;
        shared.watch(processor.progress());
        let scorer = Scorer::new(
            processor.producer().clone(),
            config.topics(),
            shared.model.clone(),
            shared.processor.clone(),
            DEFAULT_AT_RISK_DAYS,
            out_ids,
        );
        let processor = processor
            .with_hook(Arc::new(scorer))
            .with_tick(Arc::new(refresh));
        let rx = stop_rx.clone();
        tasks.push((
            "processor",
            tokio::spawn(async move { Ok(processor.run(rx).await?) }),
        ));
    }

    // Model job.
    let model_job = Arc::new(ModelJob {
        conn: redis.clone(),
        keys: keys.clone(),
        model: shared.model.clone(),
        at_risk_days: DEFAULT_AT_RISK_DAYS,
        sample_max: 200_000,
        seed: 42,
        rule: opts.promotion,
        drift_threshold: custflow_processors::model_job::DRIFT_THRESHOLD,
        metrics: shared.processor.clone(),
        churn: opts.churn,
    });
    if !opts.api_only {
        let (job, sink, clock, mut rx) = (
            model_job.clone(),
            sink.clone(),
            clock.clone(),
            stop_rx.clone(),
        );
        let every = opts.model_every;
        tasks.push((
            "model job",
            tokio::spawn(async move {
                loop {
                    // Without a model (features still building, too few customers) the
                    // next try comes sooner than a deployment's period of hours.
                    let wait = if job.model.current().is_some() {
                        every
                    } else {
                        every.min(NO_MODEL_RETRY)
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = rx.changed() => return Ok(()),
                    }
                    refit(&job, &sink, &clock).await;
                }
            }),
        ));
    }

    // SQL sink.
    if !opts.api_only {
        let group_id = format!("{}custflow-sql-sink", config.topics().name(""));
        let progress = Arc::new(Progress::new(group_id.clone()));
        shared.watch(progress.clone());
        let cfg = ScoreSinkConfig {
            brokers: config.brokers.clone(),
            topic: config.topics().name(topics::CUSTOMER_SCORES),
            group_id,
            batch_max: 5000,
            batch_wait: Duration::from_millis(50),
            member: Member::new(redis.clone(), &config.topics().name(""), "sql-sink", None),
            progress,
        };
        let (sink, metrics, rx) = (sink.clone(), shared.sink.clone(), stop_rx.clone());
        tasks.push((
            "sql sink",
            tokio::spawn(async move { Ok(score_sink::run(cfg, sink, metrics, rx).await?) }),
        ));
    }

    // Sales rollups → SQL.
    if !opts.api_only {
        let (conn, keys, sink, rx) = (redis.clone(), keys.clone(), sink.clone(), stop_rx.clone());
        tasks.push((
            "sales sink",
            tokio::spawn(async move {
                Ok(sales_sink::run(conn, keys, sink, Duration::from_secs(5), rx).await?)
            }),
        ));
    }

    // Alerts.
    if !opts.api_only && !config.alert_webhook.is_empty() {
        let group_id = format!("{}custflow-alerts", config.topics().name(""));
        let progress = Arc::new(Progress::new(group_id.clone()));
        shared.watch(progress.clone());
        let cfg = AlertConfig {
            brokers: config.brokers.clone(),
            topic: config.topics().name(topics::SEGMENT_CHANGES),
            dlq_topic: config.topics().name(topics::DLQ),
            group_id,
            member: Member::new(redis.clone(), &config.topics().name(""), "alerts", None),
            progress,
            url: config.alert_webhook.clone(),
            rules: AlertRule::parse_all(&config.alert_rule)?,
            max_attempts: 5,
            backoff: Duration::from_millis(500),
        };
        let (metrics, rx) = (shared.alerts.clone(), stop_rx.clone());
        tasks.push((
            "alerts",
            tokio::spawn(async move { Ok(webhook::run(cfg, metrics, rx).await?) }),
        ));
    }

    // Scores and segment changes → Fluvio.
    if !opts.api_only && !config.fluvio_sink.is_empty() {
        tasks.push(fluvio_sink(config, &redis, &shared, stop_rx.clone())?);
    }

    // HTTP API.
    let app = router(config, registry, redis, shared.clone(), codec)?;
    let listener = tokio::net::TcpListener::bind(&config.http)
        .await
        .with_context(|| {
            format!(
                "binding the HTTP API to {} (is another custflow running? use --http)",
                config.http
            )
        })?;
    let addr = listener.local_addr()?;
    let mut rx = stop_rx.clone();
    tasks.push((
        "http",
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await?;
            Ok(())
        }),
    ));
    Ok(Running {
        shared,
        stop,
        tasks,
        addr,
        sink,
        model_job,
        clock,
    })
}

/// One model-job run, with its outcome logged and a promoted model recorded in SQL.
pub(crate) async fn refit(job: &ModelJob, sink: &SqlSink, clock: &Clock) -> Option<Outcome> {
    let as_of = clock.now().unwrap_or_else(custflow_schemas::time::now_ms);
    match job.run_once(as_of).await {
        Ok(o) => {
            // Whatever is in use now (a population refit, a churn refit or an installed
            // churn model) is recorded once; a known version is left as it is.
            if let Some(m) = job.model.current() {
                if let Err(e) = sink.record_model(&m).await {
                    tracing::warn!(error = %e, "recording the model in the sink failed");
                }
            }
            match &o {
                Outcome::Promoted { decision, .. } | Outcome::Kept { decision } => {
                    if let Err(e) = sink.record_decision(decision).await {
                        tracing::warn!(error = %e, "recording the model decision in the sink failed");
                    }
                    tracing::info!(
                        version = %decision.version,
                        promoted = decision.promoted,
                        reason = %decision.reason,
                        "model job"
                    );
                }
                other => tracing::info!(outcome = ?other, "model job"),
            }
            Some(o)
        }
        Err(e) => {
            tracing::warn!(error = %e, "model job failed");
            None
        }
    }
}

impl Running {
    /// Stops everything: the processor finishes its batch and commits.
    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first_err = None;
        for (name, mut t) in self.tasks {
            // Open event streams keep the HTTP server's graceful shutdown waiting; their
            // clients reconnect, so the server gets a short grace period only.
            let grace = if name == "http" {
                Duration::from_secs(3)
            } else {
                Duration::from_secs(30)
            };
            match tokio::time::timeout(grace, &mut t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    first_err.get_or_insert(e.context(name));
                }
                Ok(Err(e)) => {
                    first_err.get_or_insert(anyhow::anyhow!("{name} panicked: {e}"));
                }
                Err(_) if name == "http" => t.abort(),
                Err(_) => eprintln!("{name} did not stop within {grace:?}"),
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The first task that ended with an error, if any (they only end on failure).
    pub(crate) fn failed(&self) -> Option<&'static str> {
        self.tasks
            .iter()
            .find(|(_, t)| t.is_finished())
            .map(|(n, _)| *n)
    }
}

/// Options of `custflow run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Seconds between model refits (the first one runs at start; while there is no
    /// model yet, every 30 s at most). A refit is promoted only when the rule below says
    /// so (docs/models.md).
    #[arg(long, default_value_t = MODEL_EVERY_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) model_every_secs: u64,
    /// Level of the likelihood-ratio test a refit must pass (or the inputs must have
    /// drifted) to be promoted.
    #[arg(long, default_value_t = PromotionRule::default().level)]
    pub(crate) promote_level: f64,
    /// Share of customers whose value tier, RFM segment or retention target must change
    /// for a promotion (or the CLV shift below).
    #[arg(long, default_value_t = PromotionRule::default().min_changed_share)]
    pub(crate) promote_min_changed: f64,
    /// Median relative change of the customers' CLV that is enough for a promotion (or
    /// the share above).
    #[arg(long, default_value_t = PromotionRule::default().min_clv_shift)]
    pub(crate) promote_min_clv_shift: f64,
    /// Refit the churn classifier when the realised AUC of matured predictions falls
    /// below this.
    #[arg(long, default_value_t = ChurnMonitoring::default().min_auc)]
    pub(crate) churn_min_auc: f64,
    /// Days of the clock between recorded churn prediction snapshots.
    #[arg(long, default_value_t = ChurnMonitoring::default().every_days, value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) churn_every_days: i64,
    /// Days ahead that `churn_probability` speaks of: the probability of no purchase in
    /// them, from the purchase model while no churn classifier is installed (an
    /// installed one brings its own label horizon, `train-churn --horizon-days`).
    #[arg(long, default_value_t = ChurnMonitoring::default().horizon_days, value_parser = clap::value_parser!(i64).range(1..))]
    pub(crate) churn_horizon_days: i64,
    /// Customers rescored between two live batches while a new model is rolled out
    /// (shared among the input partitions): larger finishes the pass sooner, smaller
    /// keeps live events fresher meanwhile.
    #[arg(long, default_value_t = custflow_processors::runtime::RESCORE_SLICE, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) rescore_slice: usize,
}

impl RunArgs {
    pub(crate) fn options(&self) -> RunOptions {
        RunOptions {
            model_every: Duration::from_secs(self.model_every_secs),
            rebuild: false,
            api_only: false,
            churn: ChurnMonitoring {
                min_auc: self.churn_min_auc,
                every_days: self.churn_every_days,
                horizon_days: self.churn_horizon_days,
                ..ChurnMonitoring::default()
            },
            rescore_slice: self.rescore_slice,
            promotion: PromotionRule {
                level: self.promote_level,
                min_changed_share: self.promote_min_changed,
                min_clv_shift: self.promote_min_clv_shift,
            },
        }
    }
}

/// `run` (everything) or `serve` (`api_only`: the HTTP API alone) until Ctrl-C.
pub(crate) async fn run(config: &Resolved, opts: RunOptions) -> anyhow::Result<()> {
    let api_only = opts.api_only;
    let running = start(config, opts).await?;
    eprintln!(
        "custflow {} on http://{}  (dashboard: http://{}/dashboard); Ctrl-C stops",
        if api_only {
            "serves its API"
        } else {
            "is running: API"
        },
        running.addr,
        running.addr
    );
    if !api_only {
        let job = running.model_job.clone();
        refit(&job, &running.sink, &running.clock).await;
    }
    loop {
        tokio::select! {
            () = crate::shutdown::requested() => break,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Some(name) = running.failed() {
                    eprintln!("{name} stopped; shutting down");
                    break;
                }
            }
        }
    }
    running.shutdown().await
}

/// The Fluvio sink's task (`--fluvio-sink fluvio://HOST:PORT/TOPIC`).
#[cfg(feature = "fluvio")]
fn fluvio_sink(
    config: &Resolved,
    redis: &Redis,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    use custflow_connectors::fluvio_sink::{self, FluvioSinkConfig, Target};
    let group_id = format!("{}custflow-fluvio-sink", config.topics().name(""));
    let progress = Arc::new(Progress::new(group_id.clone()));
    shared.watch(progress.clone());
    let cfg = FluvioSinkConfig {
        brokers: config.brokers.clone(),
        scores_topic: config.topics().name(topics::CUSTOMER_SCORES),
        changes_topic: config.topics().name(topics::SEGMENT_CHANGES),
        group_id,
        member: Member::new(
            redis.clone(),
            &config.topics().name(""),
            "fluvio-sink",
            None,
        ),
        progress,
        target: Target::parse(&config.fluvio_sink)?,
    };
    let metrics = shared.fluvio.clone();
    Ok((
        "fluvio sink",
        tokio::spawn(async move { Ok(fluvio_sink::run(cfg, metrics, stop).await?) }),
    ))
}

#[cfg(not(feature = "fluvio"))]
fn fluvio_sink(
    _: &Resolved,
    _: &Redis,
    _: &Arc<Shared>,
    _: watch::Receiver<bool>,
) -> anyhow::Result<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    anyhow::bail!("--fluvio-sink needs custflow built with the `fluvio` feature (the default)")
}

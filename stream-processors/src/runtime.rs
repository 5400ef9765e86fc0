//! The consumer loop: batches of input events → decode → apply to customer states →
//! one Redis pipeline → offsets committed. Invalid events go to the dead-letter topic.
//! A Redis that lost its data (the partition markers are gone) is rebuilt: the affected
//! partitions are replayed from the start, and the deployment is not ready meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custflow_feature_store::features;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::members::Member;
use custflow_feature_store::sales::Rollups;
use custflow_feature_store::state::{Applied, CustomerState, SourcePos};
use custflow_kafka::assignment::Assignment;
use custflow_kafka::client::{self as kafka, Rewind, Tune};
use custflow_kafka::progress::Progress;
use custflow_kafka::trace::{self, TraceContextExt};
use custflow_schemas::avro::{self, AvroCodec};
use custflow_schemas::registry::Registry;
use custflow_schemas::topics::{self, Topics};
use custflow_schemas::{json, Event, EventKind, ValidationContext};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::pass::PassCursor;
use crate::store::{Guard, PartitionState, Store, Write};

/// Settings of a processor.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub brokers: String,
    pub redis_url: String,
    pub topics: Topics,
    pub group_id: String,
    pub clock: Arc<Clock>,
    pub at_risk_days: f64,
    /// Most messages in one batch.
    pub batch_max: usize,
    /// Longest wait to fill a batch.
    pub batch_wait: Duration,
    /// Wipe Redis and replay the input topics from the beginning.
    pub rebuild: bool,
    /// How often the clock sweep (at-risk crossings, decay rescoring) runs.
    pub sweep_every: Duration,
    /// Customers per partition rescored per sweep, in rotation.
    pub rotate_per_sweep: usize,
    /// Customers rescored between two batches during the pass that follows a model
    /// change (shared among the owned partitions whose pass is running).
    pub rescore_slice: usize,
    /// While events are waiting, background rescoring (a slice of the pass, a
    /// partition's sweep) takes its turn only if the oldest event of the last batch was
    /// applied within this long of being produced: the live stream stays fresh first.
    pub live_budget: Duration,
    /// This instance's id among the deployment's processors (`members`): an explicit
    /// one is checked for a second process using it; by default each process makes a
    /// fresh one. Partitions are split among the live instances either way.
    pub instance_id: Option<String>,
    /// Keep the sales rollups (saved with the customer states).
    pub sales: bool,
    /// Days of per-day detail kept behind each customer's newest order: events in any
    /// order within them give the same features; an order older than the detail kept is
    /// dead-lettered naming this setting.
    pub history_days: i32,
}

impl ProcessorConfig {
    pub fn new(brokers: &str, redis_url: &str, topics: Topics, clock: Clock) -> Self {
        Self {
            brokers: brokers.to_owned(),
            redis_url: redis_url.to_owned(),
            group_id: format!("{}custflow-processors", topics.name("")),
            topics,
            clock: Arc::new(clock),
            at_risk_days: features::DEFAULT_AT_RISK_DAYS,
            batch_max: 5000,
            batch_wait: Duration::from_millis(20),
            rebuild: false,
            sweep_every: Duration::from_secs(5),
            rotate_per_sweep: 500,
            rescore_slice: RESCORE_SLICE,
            live_budget: LIVE_BUDGET,
            instance_id: None,
            sales: true,
            history_days: custflow_feature_store::state::DEFAULT_HISTORY_DAYS,
        }
    }
}

/// A customer whose state a batch changed, handed to the [`BatchHook`].
pub struct Changed<'a> {
    pub customer: &'a str,
    pub state: &'a mut CustomerState,
    pub partition: i32,
    /// Why the customer is rescored.
    pub cause: Rescore,
    /// The span of the traced event that changed the customer (tracing on), so the
    /// score it causes continues the event's trace.
    pub trace: Option<trace::Context>,
    /// When the earliest event that changed the customer was produced (epoch ms), for
    /// event → row latency; `None` for a rescore without an event.
    pub event_ms: Option<i64>,
}

/// A customer a batch changed (or a pass rescores), before scoring and saving.
struct Touched<'a> {
    customer: &'a str,
    partition: i32,
    /// For the at-risk index; `None` leaves the index as it is.
    last_order_at: Option<i64>,
    /// The span of the traced event that changed it.
    trace: Option<trace::Context>,
    /// When the earliest event that changed it was produced.
    event_ms: Option<i64>,
}

impl<'a> Touched<'a> {
    /// A customer rescored without an event (a pass, a sweep).
    fn rescored(customer: &'a str, partition: i32) -> Self {
        Self {
            customer,
            partition,
            last_order_at: None,
            trace: None,
            event_ms: None,
        }
    }
}

/// How a save's customers are scored: as of when, why, and the rescoring pass cursors
/// the save moves.
struct Scoring<'a> {
    as_of: i64,
    cause: Rescore,
    passes: &'a [(i32, &'a PassCursor)],
}

/// Why a customer is rescored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescore {
    /// An event changed the customer's state.
    Event,
    /// The clock moved (P(alive) and CLV decay, at-risk crossings): emitted only when
    /// the scores moved enough.
    Clock,
    /// A new model became current: every customer is rescored once and emitted, so each
    /// score names the model in use.
    NewModel,
}

/// Work done for each batch after events were applied and before the states are saved
/// and offsets committed (scoring; it may update the states). It returns changes to the
/// segment counters, saved with the states. An error fails the batch: nothing is saved
/// or committed, and it is retried.
pub trait BatchHook: Send + Sync {
    fn on_batch<'a>(
        &'a self,
        changed: &'a mut [Changed<'a>],
        as_of: i64,
    ) -> BoxFuture<'a, Result<CounterDeltas>>;
}

/// Changes to the segment counters: (input partition of the customer, field, delta).
pub type CounterDeltas = Vec<(i32, String, i64)>;

/// A boxed, sendable future (keeps the hook traits object safe).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// One processor instance (a member of the consumer group).
pub struct Processor {
    cfg: ProcessorConfig,
    consumer: Arc<StreamConsumer<Rewind>>,
    producer: FutureProducer,
    store: Store,
    registry: Arc<Registry>,
    codec: AvroCodec,
    metrics: Arc<Metrics>,
    hook: Option<Arc<dyn BatchHook>>,
    on_tick: Option<Arc<dyn Tick>>,
    inputs: Vec<String>,
    /// Partitions of the input topics (the most of any of them).
    partitions: i32,
    /// Owned partitions being replayed after Redis lost their state: the offsets per
    /// input topic they must reach to be ready again.
    rebuilding: Mutex<HashMap<i32, Vec<(String, i64)>>>,
    /// How long after being produced the oldest event of the last batch was applied
    /// (ms): what background rescoring yields to.
    live_age_ms: AtomicU64,
    /// The group's progress as its watcher sees it (lag of every partition, stalls).
    progress: Arc<Progress>,
}

/// Work done between batches every sweep interval (refreshing the model in use).
pub trait Tick: Send + Sync {
    /// Returns the version of the model in use (`None` while there is none): each
    /// partition whose customers were not all rescored with it gets a rescoring pass.
    fn tick(&self) -> BoxFuture<'_, Result<Option<String>>>;
}

/// A decoded message of a batch.
struct Input {
    pos: SourcePos,
    op: Op,
    produced_ms: Option<i64>,
    /// The processing span of a traced message, ended once the batch is saved.
    trace: Option<trace::Context>,
}

/// What an input record asks for.
enum Op {
    Apply(Event),
    /// Forget the customer (an erasure request made at `at`).
    Erase {
        customer: String,
        at: i64,
    },
}

impl Op {
    fn customer_id(&self) -> &str {
        match self {
            Op::Apply(e) => e.customer_id(),
            Op::Erase { customer, .. } => customer,
        }
    }
}

/// The processing span of `msg` when it carries a trace context (tracing on).
fn traced(msg: &OwnedMessage) -> Option<trace::Context> {
    let parent = trace::of_message(msg)?;
    Some(trace::start(
        "custflow.process",
        trace::SpanKind::Consumer,
        &parent,
        trace::message_attributes(msg),
    ))
}

/// A message for the dead-letter topic.
struct DeadLetter {
    msg: OwnedMessage,
    reason: String,
    message: String,
}

fn kind_index(k: EventKind) -> u8 {
    match k {
        EventKind::Customer => 0,
        EventKind::Order => 1,
        EventKind::Activity => 2,
    }
}

impl Processor {
    /// Connects to the broker and Redis and joins the consumer group.
    pub async fn new(
        cfg: ProcessorConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let mut consumer_cfg = custflow_kafka::client::client_config(&cfg.brokers);
        // The instances split the partitions among themselves (`members`) and assign
        // them to their consumers; offsets are committed under the group's id. Partitions
        // start a little before their committed offsets (tansu skips the rest of a batch
        // fetched from its middle): what comes before is dropped.
        consumer_cfg
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .tune("fetch.wait.max.ms", custflow_kafka::client::FETCH_WAIT_MS);
        let consumer: StreamConsumer<Rewind> =
            consumer_cfg.create_with_context(Rewind::default())?;
        let producer: FutureProducer = custflow_kafka::client::client_config(&cfg.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .tune("linger.ms", "5")
            .tune("compression.type", "lz4")
            .create()?;
        let store = Store::connect(&cfg.redis_url, Keys::new(cfg.topics.name(""))).await?;
        let ids = registry.register_builtin(&cfg.topics).await?;
        let codec = AvroCodec::new(registry.clone(), ids);
        let inputs: Vec<String> = EventKind::ALL
            .iter()
            .map(|k| cfg.topics.name(k.topic()))
            .collect();
        let consumer = Arc::new(consumer);
        let partitions = {
            let (consumer, inputs) = (consumer.clone(), inputs.clone());
            blocking(move || {
                Ok(
                    kafka::partition_counts(&*consumer, &inputs, Duration::from_secs(10))?
                        .into_iter()
                        .map(|(_, n)| n)
                        .max()
                        .unwrap_or(0),
                )
            })
            .await?
        };
        let progress = Arc::new(Progress::new(cfg.group_id.clone()));
        let p = Self {
            cfg,
            consumer,
            producer,
            store,
            registry,
            codec,
            metrics,
            hook: None,
            on_tick: None,
            inputs: inputs.clone(),
            partitions,
            rebuilding: Mutex::new(HashMap::new()),
            live_age_ms: AtomicU64::new(0),
            progress,
        };
        if p.cfg.rebuild {
            p.rebuild(&inputs).await?;
        }
        Ok(p)
    }

    /// Sets the work done per batch before commit (scoring).
    pub fn with_hook(mut self, hook: Arc<dyn BatchHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Sets the work done every sweep interval (model refresh).
    pub fn with_tick(mut self, tick: Arc<dyn Tick>) -> Self {
        self.on_tick = Some(tick);
        self
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    pub fn topics(&self) -> &Topics {
        &self.cfg.topics
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The progress of the processors' group (every partition's lag, stalls).
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Wipes Redis and points the group at the beginning of every input partition's log
    /// (`kafka::log_starts`).
    async fn rebuild(&self, inputs: &[String]) -> Result<()> {
        let deleted = self.store.wipe().await?;
        tracing::info!(deleted, "rebuild: Redis state wiped");
        let (consumer, brokers, prefix) = (
            self.consumer.clone(),
            self.cfg.brokers.clone(),
            self.cfg.topics.name(""),
        );
        let inputs = inputs.to_vec();
        blocking(move || {
            let timeout = Duration::from_secs(10);
            let parts = kafka::partitions_of(&*consumer, &inputs, timeout)?;
            let starts = kafka::log_starts(&brokers, &prefix, &parts, timeout)?;
            let mut tpl = TopicPartitionList::new();
            for ((t, p), start) in &starts {
                tpl.add_partition_offset(t, *p, Offset::Offset(*start))?;
            }
            if tpl.count() > 0 {
                consumer.commit(&tpl, CommitMode::Sync)?;
            }
            Ok(())
        })
        .await
    }

    /// Runs until `shutdown` turns true: finishes the batch in hand, commits, returns.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let member = Member::new(
            self.store.connection(),
            &self.cfg.topics.name(""),
            "processors",
            self.cfg.instance_id.as_deref(),
        );
        tracing::info!(
            id = member.id(),
            "processor joins the deployment's processors"
        );
        let mut assignment = Assignment::start(
            member,
            &self.cfg.brokers,
            &self.inputs,
            self.progress.clone(),
            shutdown.clone(),
        )
        .await?;
        let mut last_lag = Instant::now() - Duration::from_secs(60);
        let mut last_sweep = Instant::now();
        let mut last_check = Instant::now() - Duration::from_secs(60);
        // The rescoring pass of each owned partition (read from Redis when first needed)
        // and whether one is running.
        let mut passes: HashMap<i32, PassCursor> = HashMap::new();
        let mut passing = false;
        // Owned partitions whose clock sweep is due, swept one per turn between batches.
        let mut sweeps_due: VecDeque<i32> = VecDeque::new();
        let (mut slice_end, mut slice_took) = (Instant::now(), Duration::ZERO);
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Some(e) = assignment.failed().await {
                return Err(Error::Config(e.to_string()));
            }
            // This instance's share of the partitions changed (an instance joined, left
            // or was killed and its lease ran out): take the new ones from their
            // committed offsets, drop the others, and check the new ones' state at once.
            if tolerate(
                assignment.apply(&self.consumer).await.map_err(Error::from),
                "taking this instance's partitions",
            )?
            .flatten()
            .is_some()
            {
                last_check = Instant::now() - STATE_CHECK_EVERY;
            }
            if last_check.elapsed() >= STATE_CHECK_EVERY {
                last_check = Instant::now();
                tolerate(self.check_state().await, "checking the state markers")?;
            }
            if last_sweep.elapsed() >= self.cfg.sweep_every {
                last_sweep = Instant::now();
                if let Some(refresh) = &self.on_tick {
                    if let Some(Some(model)) =
                        tolerate(refresh.tick().await, "refreshing the model")?
                    {
                        let started = tolerate(
                            self.plan_passes(&mut passes, &model).await,
                            "reading the rescoring passes",
                        )?;
                        if let Some(partitions) = started.filter(|n| *n > 0) {
                            tracing::info!(
                                model,
                                partitions,
                                "new model: rescoring every customer"
                            );
                            Metrics::add(&self.metrics.model_passes, 1);
                        }
                        passing |= passes.values().any(|c| !c.done);
                    }
                }
                // A sweep still under way (a busy stream) finishes before the next starts.
                if sweeps_due.is_empty() && self.hook.is_some() {
                    let owned = tolerate(self.owned_order_partitions(), "sweeping")?;
                    sweeps_due.extend(owned.unwrap_or_default());
                }
            }
            // Live events go first. Background rescoring (a partition's sweep, else a
            // slice of the pass) takes a turn when no event is waiting, or once live
            // batches took as long as the last turn did while the stream is fresh (its
            // last batch within the live budget). A busy, fresh stream gets at least
            // half the time; a stale one all of it; an idle one leaves it all to the
            // background.
            let background = passing || !sweeps_due.is_empty();
            let waiting = if background {
                self.consumer.recv().now_or_never()
            } else {
                None
            };
            let fresh = Duration::from_millis(self.live_age_ms.load(Ordering::Relaxed))
                <= self.cfg.live_budget;
            if background && (waiting.is_none() || (fresh && slice_end.elapsed() >= slice_took)) {
                let started = Instant::now();
                let done = if let Some(p) = sweeps_due.pop_front() {
                    // No decay rotation where a pass runs: the pass rescores everyone.
                    let rotate = if passes.get(&p).is_some_and(|c| !c.done) {
                        0
                    } else {
                        self.cfg.rotate_per_sweep
                    };
                    tolerate(self.sweep_partition(p, rotate).await, "sweeping")?.is_some()
                } else {
                    let slice = tolerate(self.rescore_slice(&mut passes).await, "rescoring")?;
                    if slice == Some(true) {
                        passing = false;
                        Metrics::add(&self.metrics.model_passes_done, 1);
                        tracing::info!("rescoring pass done");
                    }
                    slice.is_some()
                };
                slice_end = Instant::now();
                slice_took = slice_end - started;
                // A failed turn (Redis or the broker away) waits for the next message
                // or half a second like an idle loop, instead of retrying at once.
                if waiting.is_none() && done {
                    continue;
                }
            }
            let first = match waiting {
                Some(m) => m,
                None => tokio::select! {
                    m = self.consumer.recv() => m,
                    _ = shutdown.changed() => break,
                    () = assignment.changed() => continue,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        self.maybe_lag(&mut last_lag);
                        continue;
                    }
                },
            };
            // Broker errors (a restarting broker, a lost connection) are reported here
            // while librdkafka reconnects by itself: only a fatal one stops the processor.
            let mut batch = match first {
                Ok(m) => vec![m.detach()],
                Err(e) => {
                    consumer_error(e)?;
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + self.cfg.batch_wait;
            while batch.len() < self.cfg.batch_max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => {
                        consumer_error(e)?;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Messages of partitions this instance gave up while they were prefetched
            // belong to their new owner; what comes before a partition's committed offset
            // (it started earlier, `Rewind`) was handled.
            let owned = self.consumer.assignment()?;
            batch.retain(|m| {
                owned.find_partition(m.topic(), m.partition()).is_some()
                    && self.consumer.context().keep(m)
            });
            if batch.is_empty() {
                continue;
            }
            if !self.process_until_done(batch, &mut shutdown).await? {
                break;
            }
            tolerate(self.check_rebuilt().await, "checking the rebuild")?;
            self.maybe_lag(&mut last_lag);
        }
        // Offsets of finished batches were committed asynchronously; flush them now.
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit had nothing to commit");
        }
        assignment.finish().await;
        Ok(())
    }

    /// Processes `batch`, retrying with backoff while Redis or the broker fail (each try
    /// is idempotent: the states record what they applied), and replaying from the start
    /// the partitions whose state Redis lost. False when shutdown came first.
    async fn process_until_done(
        &self,
        mut batch: Vec<OwnedMessage>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let err = match self.process_batch(&batch).await {
                Ok(()) => return Ok(true),
                Err(Error::StateLost(lost)) => match self.recover(&batch, &lost).await {
                    Ok(()) => return Ok(true),
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !err.retryable() {
                return Err(err);
            }
            // A fenced idempotent producer (after messages timed out) fails every send
            // from then on: stop, so a supervisor restarts the process with a new one.
            let fenced = matches!(&err, Error::Kafka(k) if kafka::is_fenced(k));
            if fenced || self.producer.client().fatal_error().is_some() {
                return Err(Error::Config(format!(
                    "the producer can no longer produce ({err}); restart the processor"
                )));
            }
            Metrics::add(&self.metrics.retries, 1);
            tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "batch failed; retrying");
            tokio::select! {
                _ = shutdown.changed() => return Ok(false),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let owned = self.consumer.assignment()?;
            batch.retain(|m| owned.find_partition(m.topic(), m.partition()).is_some());
            if batch.is_empty() {
                return Ok(true);
            }
        }
    }

    /// After Redis lost the state of `lost`: the batch's other partitions go back to the
    /// batch's first offsets (nothing of it was written), the lost ones to their start.
    /// Every other owned partition without a marker is reset with them (a new deployment
    /// has none), so one reset covers them all instead of one per batch.
    async fn recover(&self, batch: &[OwnedMessage], lost: &[i32]) -> Result<()> {
        let owned = self.owned_partitions()?;
        let states = self.store.partition_states(&owned).await?;
        let also: Vec<i32> = owned
            .iter()
            .zip(&states)
            .filter(|(p, s)| **s == PartitionState::Missing && !lost.contains(p))
            .map(|(p, _)| *p)
            .collect();
        let lost = &[lost, &also].concat()[..];
        let mut first: HashMap<(String, i32), i64> = HashMap::new();
        for m in batch.iter().filter(|m| !lost.contains(&m.partition())) {
            let e = first
                .entry((m.topic().to_owned(), m.partition()))
                .or_insert(i64::MAX);
            *e = (*e).min(m.offset());
        }
        let consumer = self.consumer.clone();
        blocking(move || {
            for ((topic, partition), offset) in first {
                Rewind::seek(&*consumer, &topic, partition, offset, SEEK_TIMEOUT)?;
            }
            Ok(())
        })
        .await?;
        self.reset(lost).await
    }

    /// Replays `lost` from the start: each input topic's partition is sought to the
    /// beginning of the deployment's log (`kafka::log_starts`) and that offset committed (a crash from here on replays from there too),
    /// then the partitions are marked as rebuilding, until the offsets reach today's end.
    async fn reset(&self, lost: &[i32]) -> Result<()> {
        tracing::warn!(
            partitions = ?lost,
            "no feature state in Redis for these partitions (a new deployment, or Redis lost it): building it from the start of the topics"
        );
        let targets = self.replay_targets(lost, true).await?;
        self.store.mark_rebuilding(lost).await?;
        Metrics::add(&self.metrics.state_resets, lost.len() as u64);
        if let Ok(mut m) = self.rebuilding.lock() {
            m.extend(targets);
        }
        Ok(())
    }

    /// Where the replay of each of `parts` ends, per input topic: today's high watermark,
    /// for the topics with anything between the log's beginning and it. With
    /// `from_start`, each topic's partition is first sought to that beginning and the
    /// offset committed.
    async fn replay_targets(
        &self,
        parts: &[i32],
        from_start: bool,
    ) -> Result<HashMap<i32, Vec<(String, i64)>>> {
        let (consumer, inputs, parts) =
            (self.consumer.clone(), self.inputs.clone(), parts.to_vec());
        let (brokers, prefix) = (self.cfg.brokers.clone(), self.cfg.topics.name(""));
        blocking(move || {
            let mut targets: HashMap<i32, Vec<(String, i64)>> = HashMap::new();
            let mut tpl = TopicPartitionList::new();
            let all: Vec<(String, i32)> = parts
                .iter()
                .flat_map(|p| inputs.iter().map(move |t| (t.clone(), *p)))
                .collect();
            let starts = kafka::log_starts(&brokers, &prefix, &all, SEEK_TIMEOUT)?;
            let highs = kafka::log_ends(&*consumer, &all, true, SEEK_TIMEOUT)?;
            for &p in &parts {
                let entry = targets.entry(p).or_default();
                for topic in &inputs {
                    let high = highs.get(&(topic.clone(), p)).copied().unwrap_or(0);
                    let start = starts.get(&(topic.clone(), p)).copied().unwrap_or(0);
                    if from_start {
                        Rewind::seek(&*consumer, topic, p, start, SEEK_TIMEOUT)?;
                        tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
                    }
                    if high > start {
                        entry.push((topic.clone(), high));
                    }
                }
            }
            if tpl.count() > 0 {
                consumer.commit(&tpl, CommitMode::Sync)?;
            }
            Ok(targets)
        })
        .await
    }

    /// Partitions of the input topics this instance owns.
    fn owned_partitions(&self) -> Result<Vec<i32>> {
        Ok(distinct(
            self.consumer
                .assignment()?
                .elements()
                .iter()
                .filter(|e| self.inputs.iter().any(|t| t == e.topic()))
                .map(|e| e.partition()),
        ))
    }

    /// Reads the markers of the owned partitions: missing ones (Redis lost them, or never
    /// had them) are replayed from the start; ones another instance was rebuilding are
    /// taken over, to be ready once today's end is reached. Then publishes readiness.
    async fn check_state(&self) -> Result<()> {
        let owned = self.owned_partitions()?;
        let states = self.store.partition_states(&owned).await?;
        let mut missing = Vec::new();
        let mut adopt = Vec::new();
        {
            let mut m = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|p, _| owned.contains(p));
            for (p, s) in owned.iter().zip(&states) {
                match s {
                    PartitionState::Missing => missing.push(*p),
                    PartitionState::Rebuilding if !m.contains_key(p) => adopt.push(*p),
                    _ => {}
                }
            }
        }
        if !missing.is_empty() {
            self.reset(&missing).await?;
        }
        if !adopt.is_empty() {
            let targets = self.replay_targets(&adopt, false).await?;
            if let Ok(mut m) = self.rebuilding.lock() {
                m.extend(targets);
            }
        }
        self.check_rebuilt().await?;
        if !owned.is_empty() {
            self.store.publish_ready(self.partitions).await?;
        }
        Ok(())
    }

    /// Marks the partitions whose replay reached its end as ready. Where is a partition's
    /// consumer position, or, before its first message, its committed offset: a partition
    /// taken over with nothing left to read has no position until a message arrives, and
    /// a quiet topic may bring none.
    async fn check_rebuilt(&self) -> Result<()> {
        // A partition whose topics were all empty has no targets and is done at once.
        let pending: Vec<(i32, String)> = {
            let m = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            if m.is_empty() {
                return Ok(());
            }
            m.iter()
                .flat_map(|(p, targets)| targets.iter().map(move |(t, _)| (*p, t.clone())))
                .collect()
        };
        // An offset, or `None` where librdkafka has none yet (`Offset::Invalid`).
        let position_of = |positions: &TopicPartitionList, topic: &str, p: i32| match positions
            .find_partition(topic, p)?
            .offset()
        {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        let positions = self.consumer.position()?;
        let unplaced: Vec<(i32, String)> = pending
            .into_iter()
            .filter(|(p, t)| position_of(&positions, t, *p).is_none())
            .collect();
        let committed = if unplaced.is_empty() {
            TopicPartitionList::new()
        } else {
            let consumer = self.consumer.clone();
            blocking(move || {
                let mut tpl = TopicPartitionList::new();
                for (p, t) in &unplaced {
                    tpl.add_partition(t, *p);
                }
                Ok(consumer.committed_offsets(tpl, SEEK_TIMEOUT)?)
            })
            .await?
        };
        let done: Vec<i32> = {
            let mut m = self.rebuilding.lock().unwrap_or_else(|p| p.into_inner());
            for (p, targets) in m.iter_mut() {
                targets.retain(|(topic, target)| {
                    let at = position_of(&positions, topic, *p)
                        .or_else(|| position_of(&committed, topic, *p))
                        .unwrap_or(-1);
                    at < *target
                });
            }
            let done = m
                .iter()
                .filter(|(_, t)| t.is_empty())
                .map(|(p, _)| *p)
                .collect();
            m.retain(|_, t| !t.is_empty());
            done
        };
        if done.is_empty() {
            return Ok(());
        }
        for &p in &done {
            self.store.mark_ready(p).await?;
        }
        let ready = self.store.publish_ready(self.partitions).await?;
        tracing::info!(partitions = ?done, all_ready = ready, "partitions rebuilt");
        Ok(())
    }

    /// Copies the lag of every input partition (owned here or not) from the group's
    /// progress watcher into the metrics.
    fn maybe_lag(&self, last: &mut Instant) {
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
        if let Ok(mut m) = self.metrics.lag.lock() {
            *m = self.progress.lags();
        }
    }

    /// The event kind of an input topic's messages.
    fn kind_of(&self, msg: &OwnedMessage) -> Option<EventKind> {
        self.cfg
            .topics
            .base(msg.topic())
            .and_then(EventKind::for_topic)
    }

    fn decode(
        &self,
        msg: &OwnedMessage,
        ctx: &ValidationContext,
    ) -> std::result::Result<Event, (String, String)> {
        let kind = self.kind_of(msg).ok_or_else(|| {
            (
                "unknown_topic".to_owned(),
                format!("no event kind for topic {}", msg.topic()),
            )
        })?;
        let bytes = msg.payload().unwrap_or_default();
        let result = if avro::is_framed(bytes) {
            self.codec.decode(kind, bytes, ctx)
        } else {
            json::decode(kind, bytes, ctx)
        };
        result.map_err(|e| {
            let message = match e.field_errors() {
                Some(errs) => serde_json::to_string(errs).unwrap_or_else(|_| e.to_string()),
                None => e.to_string(),
            };
            (e.reason().to_owned(), message)
        })
    }

    async fn process_batch(&self, batch: &[OwnedMessage]) -> Result<()> {
        let ctx = ValidationContext::now();
        let mut inputs: Vec<Input> = Vec::with_capacity(batch.len());
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut next_offsets: HashMap<(String, i32), i64> = HashMap::new();
        for msg in batch {
            let e = next_offsets
                .entry((msg.topic().to_owned(), msg.partition()))
                .or_insert(0);
            *e = (*e).max(msg.offset() + 1);
            if let Some(at) = kafka::erasure_at(msg) {
                match (msg.key().map(std::str::from_utf8), self.kind_of(msg)) {
                    (Some(Ok(customer)), Some(kind)) if !customer.is_empty() => {
                        inputs.push(Input {
                            pos: SourcePos {
                                topic: kind_index(kind),
                                partition: msg.partition(),
                                offset: msg.offset(),
                            },
                            op: Op::Erase {
                                customer: customer.to_owned(),
                                at,
                            },
                            produced_ms: msg.timestamp().to_millis(),
                            trace: traced(msg),
                        });
                    }
                    _ => dead.push(DeadLetter {
                        msg: msg.clone(),
                        reason: "invalid_erasure".into(),
                        message: "an erasure request needs a customer id as its key".into(),
                    }),
                }
                continue;
            }
            let mut decoded = self.decode(msg, &ctx);
            if let Err((reason, _)) = &decoded {
                if reason == "unknown_schema" {
                    // Another process may have registered it: catch up once and retry.
                    self.registry.reload().await?;
                    decoded = self.decode(msg, &ctx);
                }
            }
            match decoded {
                Ok(event) => {
                    self.cfg.clock.observe(event.occurred_at());
                    inputs.push(Input {
                        pos: SourcePos {
                            topic: kind_index(event.kind()),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        },
                        op: Op::Apply(event),
                        produced_ms: msg.timestamp().to_millis(),
                        trace: traced(msg),
                    });
                }
                Err((reason, message)) => dead.push(DeadLetter {
                    msg: msg.clone(),
                    reason,
                    message,
                }),
            }
        }

        // Group by customer, keeping each customer's events in arrival order.
        let mut order: Vec<&str> = Vec::new();
        let mut by_customer: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, inp) in inputs.iter().enumerate() {
            let c = inp.op.customer_id();
            by_customer
                .entry(c)
                .or_insert_with(|| {
                    order.push(c);
                    Vec::new()
                })
                .push(i);
        }
        let parts = distinct(next_offsets.keys().map(|(_, p)| *p));
        // A customer's events all come from one partition number (input topics are
        // keyed by customer): the one its state is kept under on a cluster.
        let home = |c: &str| {
            by_customer[c]
                .first()
                .map_or(0, |&i| inputs[i].pos.partition)
        };
        let located: Vec<(&str, i32)> = order.iter().map(|c| (*c, home(c))).collect();
        let (mut states, guard) = self.store.load(&located, &parts).await?;
        let cluster = self.store.keys().is_cluster();
        let mut changed: Vec<Touched<'_>> = Vec::new();
        let (mut applied, mut dups, mut erased, mut skipped_erased) = (0u64, 0u64, 0u64, 0u64);
        let mut beyond: Vec<(usize, String)> = Vec::new();
        // By partition on a cluster (each partition's script writes its own share);
        // under one key on a standalone Redis, where the shares would be the same keys.
        let mut rollups: BTreeMap<i32, Rollups<'_>> = BTreeMap::new();
        for c in &order {
            let Some(state) = states.get_mut(*c) else {
                continue;
            };
            let shard = if cluster { home(c) } else { 0 };
            let first_before = state.first_order.clone();
            let mut touched = false;
            let mut partition = 0;
            for &i in &by_customer[c] {
                let inp = &inputs[i];
                let event = match &inp.op {
                    Op::Erase { at, .. } => {
                        if state.erase(inp.pos, *at) == Applied::Changed {
                            erased += 1;
                            touched = true;
                            partition = inp.pos.partition;
                        } else {
                            dups += 1;
                        }
                        continue;
                    }
                    // Produced before the customer's erasure (a replay, or a record
                    // that was still in flight): it went with the customer.
                    Op::Apply(_) if state.is_erased(inp.produced_ms) => {
                        skipped_erased += 1;
                        continue;
                    }
                    Op::Apply(e) => e,
                };
                match state.apply_with_effect(event, inp.pos, self.cfg.history_days) {
                    Ok((Applied::Changed, effect)) => {
                        applied += 1;
                        touched = true;
                        partition = inp.pos.partition;
                        if let (true, Event::Order(o)) = (self.cfg.sales, event) {
                            rollups.entry(shard).or_default().add(o, effect, state);
                        }
                    }
                    Ok((Applied::Duplicate, _)) => dups += 1,
                    Err(e) => beyond.push((i, e.to_string())),
                }
            }
            if touched {
                if self.cfg.sales {
                    let r = rollups.entry(shard).or_default();
                    r.attribute(c, state);
                    r.cohort(first_before.as_ref(), state.first_order.as_ref());
                }
                changed.push(Touched {
                    customer: c,
                    partition,
                    last_order_at: features::last_purchase_at(state),
                    trace: by_customer[c]
                        .iter()
                        .rev()
                        .find_map(|&i| inputs[i].trace.clone()),
                    event_ms: by_customer[c]
                        .iter()
                        .filter_map(|&i| inputs[i].produced_ms)
                        .min(),
                });
            }
        }
        // Orders older than the detail kept are refused with the setting to change, not
        // lost.
        for (i, message) in beyond {
            let inp = &inputs[i];
            let Op::Apply(event) = &inp.op else {
                continue;
            };
            let payload = json::encode(event);
            let record = DeadLetter {
                msg: OwnedMessage::new(
                    Some(payload),
                    Some(event.customer_id().as_bytes().to_vec()),
                    self.cfg.topics.name(event.kind().topic()),
                    rdkafka::Timestamp::NotAvailable,
                    inp.pos.partition,
                    inp.pos.offset,
                    None,
                ),
                reason: "beyond_history".into(),
                message,
            };
            dead.push(record);
        }

        let as_of = self
            .cfg
            .clock
            .now()
            .unwrap_or_else(custflow_schemas::time::now_ms);
        self.score_and_save(
            &mut states,
            &changed,
            Scoring {
                as_of,
                cause: Rescore::Event,
                passes: &[],
            },
            &rollups,
            &guard,
        )
        .await?;
        for cx in inputs.iter().filter_map(|i| i.trace.as_ref()) {
            cx.span().end();
        }
        // After the states are saved, so a batch retried after a failed save does not
        // dead-letter twice; a crash in between re-detects them on replay.
        self.dead_letter(&dead).await?;
        let visible = custflow_schemas::time::now_ms();
        let mut oldest = 0;
        for inp in &inputs {
            if let Some(p) = inp.produced_ms {
                let age = (visible - p).max(0);
                oldest = oldest.max(age);
                self.metrics.freshness.observe(age as f64 / 1000.0);
            }
        }
        self.live_age_ms
            .store(u64::try_from(oldest).unwrap_or(0), Ordering::Relaxed);

        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &next_offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        self.consumer.commit(&tpl, CommitMode::Async)?;
        Metrics::add(&self.metrics.applied, applied);
        Metrics::add(&self.metrics.duplicates, dups);
        Metrics::add(&self.metrics.erased, erased);
        Metrics::add(&self.metrics.skipped_erased, skipped_erased);
        Metrics::add(&self.metrics.dead_lettered, dead.len() as u64);
        Metrics::add(&self.metrics.batches, 1);
        Ok(())
    }

    /// Runs the hook (scoring) on the changed customers, then writes their states, index
    /// entries, the batch's sales rollups and the pass cursors it moves in one
    /// transaction.
    async fn score_and_save(
        &self,
        states: &mut HashMap<String, CustomerState>,
        changed: &[Touched<'_>],
        Scoring {
            as_of,
            cause,
            passes,
        }: Scoring<'_>,
        rollups: &BTreeMap<i32, Rollups<'_>>,
        guard: &Guard,
    ) -> Result<()> {
        let mut counts = Vec::new();
        if let Some(hook) = &self.hook {
            let touched: HashMap<&str, &Touched<'_>> =
                changed.iter().map(|t| (t.customer, t)).collect();
            let mut list: Vec<Changed<'_>> = states
                .iter_mut()
                .filter_map(|(c, state)| {
                    let t = touched.get(c.as_str())?;
                    Some(Changed {
                        customer: c.as_str(),
                        state,
                        partition: t.partition,
                        cause,
                        trace: t.trace.clone(),
                        event_ms: t.event_ms,
                    })
                })
                .collect();
            counts = hook.on_batch(&mut list, as_of).await?;
        }
        let writes: Vec<Write<'_>> = changed
            .iter()
            .filter_map(|t| {
                Some(Write {
                    customer: t.customer,
                    state: states.get(t.customer)?,
                    partition: t.partition,
                    last_order_at: t.last_order_at,
                })
            })
            .collect();
        let started = Instant::now();
        self.store
            .save(&writes, &counts, rollups, guard, passes)
            .await?;
        self.metrics
            .redis_write
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Brings the passes of the owned partitions up to `model`: reads the cursors of
    /// partitions not seen yet from Redis (another instance may have moved them), forgets
    /// partitions no longer owned, and starts a pass wherever the cursor's model is not
    /// `model`. Returns how many passes started.
    async fn plan_passes(
        &self,
        passes: &mut HashMap<i32, PassCursor>,
        model: &str,
    ) -> Result<usize> {
        let owned = self.owned_order_partitions()?;
        passes.retain(|p, _| owned.contains(p));
        let unread: Vec<i32> = owned
            .iter()
            .filter(|p| !passes.contains_key(p))
            .copied()
            .collect();
        if !unread.is_empty() {
            passes.extend(
                unread
                    .iter()
                    .copied()
                    .zip(self.store.passes(&unread).await?),
            );
        }
        let mut started = 0;
        for cursor in passes.values_mut() {
            started += usize::from(cursor.start(model));
        }
        Ok(started)
    }

    /// Rescores the next slice of every owned partition's customers with the model of
    /// its pass (cause [`Rescore::NewModel`]), saving the moved cursors with the states;
    /// true when every pass is done.
    async fn rescore_slice(&self, passes: &mut HashMap<i32, PassCursor>) -> Result<bool> {
        let Some(now) = self.cfg.clock.now() else {
            return Ok(false); // no time to score as of yet (an event clock before events)
        };
        // Every owned partition's next slice, then one load, score and save for all:
        // round trips per slice, not per partition. The cursors move in copies, kept
        // once the save succeeded.
        let mut slice: Vec<(String, i32)> = Vec::new();
        let mut moved: Vec<(i32, PassCursor)> = Vec::new();
        let owned = self.owned_order_partitions()?;
        let running = owned
            .iter()
            .filter(|p| passes.get(p).is_some_and(|c| !c.done))
            .count();
        let take = self.cfg.rescore_slice.div_ceil(running.max(1)).max(1);
        for p in owned {
            let Some(cursor) = passes.get(&p).filter(|c| !c.done) else {
                continue;
            };
            let mut cursor = cursor.clone();
            let page = self
                .store
                .index_after(p, cursor.after.as_ref(), None, take)
                .await?;
            slice.extend(cursor.advance(page, take).into_iter().map(|(_, c)| (c, p)));
            moved.push((p, cursor));
        }
        if moved.is_empty() {
            return Ok(passes.values().all(|c| c.done));
        }
        let ids: Vec<(&str, i32)> = slice.iter().map(|(c, p)| (c.as_str(), *p)).collect();
        let parts: Vec<i32> = moved.iter().map(|(p, _)| *p).collect();
        let (mut states, guard) = self.store.load(&ids, &parts).await?;
        let changed: Vec<Touched<'_>> = slice
            .iter()
            .filter(|(c, _)| states.contains_key(c))
            .map(|(c, p)| Touched::rescored(c, *p))
            .collect();
        let cursors: Vec<(i32, &PassCursor)> = moved.iter().map(|(p, c)| (*p, c)).collect();
        self.score_and_save(
            &mut states,
            &changed,
            Scoring {
                as_of: now,
                cause: Rescore::NewModel,
                passes: &cursors,
            },
            &BTreeMap::new(),
            &guard,
        )
        .await?;
        Metrics::add(&self.metrics.model_rescored, changed.len() as u64);
        passes.extend(moved);
        Ok(passes.values().all(|c| c.done))
    }

    /// The partitions of the orders topic this instance owns.
    fn owned_order_partitions(&self) -> Result<Vec<i32>> {
        let orders = self.cfg.topics.name(EventKind::Order.topic());
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .filter(|e| e.topic() == orders)
            .map(|e| e.partition())
            .collect())
    }

    /// Rescores the customers of owned partition `p` due as the clock advances: those
    /// whose last order just crossed the at-risk threshold (from the sorted index, no
    /// scan), and a bounded slice of the rest in rotation (P(alive) and CLV decay).
    /// Nothing when `p` is no longer owned.
    async fn sweep_partition(&self, p: i32, rotate: usize) -> Result<usize> {
        if self.hook.is_none() || !self.owned_order_partitions()?.contains(&p) {
            return Ok(0);
        }
        let Some(now) = self.cfg.clock.now() else {
            return Ok(0);
        };
        let threshold =
            now - (self.cfg.at_risk_days * custflow_schemas::time::DAY_MS as f64) as i64;
        let customers = self.store.sweep_candidates(p, threshold, rotate).await?;
        if customers.is_empty() {
            return Ok(0);
        }
        let ids: Vec<(&str, i32)> = customers.iter().map(|c| (c.as_str(), p)).collect();
        let (mut states, guard) = self.store.load(&ids, &[p]).await?;
        let changed: Vec<Touched<'_>> = ids
            .iter()
            .filter(|(c, _)| states.contains_key(*c))
            .map(|(c, _)| Touched::rescored(c, p))
            .collect();
        self.score_and_save(
            &mut states,
            &changed,
            Scoring {
                as_of: now,
                cause: Rescore::Clock,
                passes: &[],
            },
            &BTreeMap::new(),
            &guard,
        )
        .await?;
        Metrics::add(&self.metrics.clock_rescored, changed.len() as u64);
        Ok(changed.len())
    }

    /// Produces dead letters and waits for the broker's acknowledgement of each.
    async fn dead_letter(&self, dead: &[DeadLetter]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let topic = self.cfg.topics.name(topics::DLQ);
        let sends = dead.iter().map(|d| {
            let headers = custflow_kafka::client::dead_letter_headers(
                d.msg.topic(),
                d.msg.partition(),
                d.msg.offset(),
                &d.reason,
                &d.message,
            );
            let mut rec = FutureRecord::to(&topic)
                .payload(d.msg.payload().unwrap_or_default())
                .headers(headers);
            if let Some(k) = d.msg.key() {
                rec = rec.key(k);
            }
            self.producer.send(rec, Duration::from_secs(30))
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| Error::Kafka(e))?;
        }
        Ok(())
    }
}

/// Runs blocking librdkafka calls (metadata, watermarks, seeks, synchronous commits) off
/// the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Config(e.to_string()))?
}

/// Customers rescored between two live batches during a pass, unless configured
/// ([`ProcessorConfig::rescore_slice`]): about a quarter of a second of this machine's
/// work, the wait it adds to the events that arrive meanwhile.
pub const RESCORE_SLICE: usize = 2000;

/// How fresh the live stream must be for background rescoring to take a turn while
/// events wait, unless configured ([`ProcessorConfig::live_budget`]): the processor's
/// half of the 1 s event → row target.
pub const LIVE_BUDGET: Duration = Duration::from_millis(500);

/// How often the state markers of the owned partitions are checked.
const STATE_CHECK_EVERY: Duration = Duration::from_secs(1);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps going through errors that trying again later can fix (Redis or the broker
/// unreachable, a lost partition state, which the next check rebuilds): logs them and
/// gives `None`.
fn tolerate<T>(r: Result<T>, what: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.retryable() || matches!(e, Error::StateLost(_)) => {
            tracing::warn!(error = %e, "{what} failed; trying again later");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A consumer error: librdkafka retries broker failures itself, so only a fatal error is
/// returned.
fn consumer_error(e: rdkafka::error::KafkaError) -> Result<()> {
    if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) {
        return Err(e.into());
    }
    tracing::warn!(error = %e, "consumer error; librdkafka retries");
    Ok(())
}

/// The distinct partitions of `parts`, in order.
fn distinct(parts: impl Iterator<Item = i32>) -> Vec<i32> {
    parts.collect::<BTreeSet<i32>>().into_iter().collect()
}

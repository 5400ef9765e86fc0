//! The consumer loop: batches of input events → decode → apply to customer states →
//! one Redis pipeline → offsets committed. Invalid events go to the dead-letter topic.
//! A Redis that lost its data (the partition markers are gone) is rebuilt: the affected
//! partitions are replayed from the start, and the deployment is not ready meanwhile.
//!
//! This module holds the processor's types and its run loop; applying a batch is in
//! `apply`, recovery in `recovery`, background rescoring and clock sweeps in
//! `rescoring`.

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
use crate::store::{Guard, PartitionState, SavePlan, Store, Write};

mod apply;
mod recovery;
mod rescoring;
use rescoring::InFlight;

use apply::distinct;

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
/// segment counters, saved with the states, and the acknowledgements of what it
/// produced, which the batch waits for before it is saved. An error (of either) fails
/// the batch: nothing is saved or committed, and it is retried.
pub trait BatchHook: Send + Sync {
    fn on_batch<'a>(
        &'a self,
        changed: &'a mut [Changed<'a>],
        as_of: i64,
    ) -> BoxFuture<'a, Result<Scored>>;
}

/// What a [`BatchHook`] did with a batch.
pub struct Scored {
    /// Changes to the segment counters, saved with the states.
    pub counts: CounterDeltas,
    /// The broker's acknowledgements of the records the hook produced: the states are
    /// saved only once they are in (a crash in between produces the records again when
    /// the batch is redone, so none is lost). A pass's slice waits for them while the
    /// next slice is read and scored.
    pub delivered: Delivery,
}

impl Scored {
    /// Counter changes with nothing produced.
    pub fn counts(counts: CounterDeltas) -> Self {
        Self {
            counts,
            delivered: Box::pin(async { Ok(()) }),
        }
    }
}

/// A wait for the broker's acknowledgements ([`Scored::delivered`]).
pub type Delivery = BoxFuture<'static, Result<()>>;

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
    /// Takes batches from `consumer` and decodes them (also on a task of its own).
    intake: Arc<Intake>,
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

impl Processor {
    /// Connects to the broker and Redis and joins the consumer group.
    pub async fn new(
        cfg: ProcessorConfig,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        // The instances split the partitions among themselves (`members`) and assign
        // them to their consumers; offsets are committed under the group's id.
        let consumer: StreamConsumer<Rewind> =
            custflow_kafka::assignment::member_consumer(&cfg.brokers, &cfg.group_id)?;
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
        let intake = Arc::new(Intake {
            consumer: consumer.clone(),
            codec,
            registry: registry.clone(),
            topics: cfg.topics.clone(),
            clock: cfg.clock.clone(),
            batch_max: cfg.batch_max,
            batch_wait: cfg.batch_wait,
        });
        let p = Self {
            cfg,
            consumer,
            producer,
            store,
            registry,
            intake,
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
        // The last slice of a pass, not saved yet: the next slice is read and scored
        // while it is; anything else first waits for its save (`settle`).
        let mut in_flight: Option<InFlight> = None;
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
            if assignment.has_changed() {
                self.settle(&mut passes, &mut in_flight).await?;
            }
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
                // A new model restarts the passes' cursors: the slice in flight first.
                self.settle(&mut passes, &mut in_flight).await?;
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
                        self.count_rollouts(&passes);
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
                    self.settle(&mut passes, &mut in_flight).await?;
                    // No decay rotation where a pass runs: the pass rescores everyone.
                    let rotate = if passes.get(&p).is_some_and(|c| !c.done) {
                        0
                    } else {
                        self.cfg.rotate_per_sweep
                    };
                    tolerate(self.sweep_partition(p, rotate).await, "sweeping")?.is_some()
                } else {
                    let slice = tolerate(
                        self.rescore_slice(&mut passes, &mut in_flight).await,
                        "rescoring",
                    )?;
                    self.count_rollouts(&passes);
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
            let batch = match first {
                Ok(m) => self.intake.fill_batch(m.detach()).await?,
                Err(e) => {
                    consumer_error(e)?;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            self.settle(&mut passes, &mut in_flight).await?;
            // A backlog is worked through batch after batch until the next sweep or
            // state check is due; background work takes its turns batch by batch.
            let until = if background {
                Instant::now()
            } else {
                (last_check + BACKLOG_CHECK_EVERY).min(last_sweep + self.cfg.sweep_every)
            };
            if !self
                .process_backlog(batch, &mut shutdown, &assignment, until)
                .await?
            {
                break;
            }
            tolerate(self.check_rebuilt().await, "checking the rebuild")?;
            self.maybe_lag(&mut last_lag);
        }
        self.settle(&mut passes, &mut in_flight).await?;
        // Offsets of finished batches were committed asynchronously; flush them now.
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit had nothing to commit");
        }
        assignment.finish().await;
        Ok(())
    }

    /// Saves the slice of a pass in flight, if any ([`Processor::rescore_slice`]); a
    /// failed one is read again by the next slice (the cursors did not move).
    async fn settle(
        &self,
        passes: &mut HashMap<i32, PassCursor>,
        in_flight: &mut Option<InFlight>,
    ) -> Result<()> {
        if in_flight.is_some() {
            tolerate(self.settle_slice(passes, in_flight).await, "rescoring")?;
            self.count_rollouts(passes);
        }
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
}

/// Where a processor's batches come from: takes them from the consumer and decodes
/// them. Shared with the task that takes and decodes the next batch of a backlog while
/// the one before is applied.
pub(super) struct Intake {
    consumer: Arc<StreamConsumer<Rewind>>,
    codec: AvroCodec,
    registry: Arc<Registry>,
    topics: Topics,
    clock: Arc<Clock>,
    batch_max: usize,
    batch_wait: Duration,
}

impl Intake {
    /// A batch: `first` and the messages that follow it within the batch wait, up to the
    /// batch size. Messages of partitions this instance gave up while they were
    /// prefetched belong to their new owner, and what comes before a partition's
    /// committed offset (it started earlier, `Rewind`) was handled: both are left out.
    pub(super) async fn fill_batch(&self, first: OwnedMessage) -> Result<Vec<OwnedMessage>> {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.batch_wait;
        while batch.len() < self.batch_max {
            // What the consumer holds already is taken without arming a timer for it.
            let next = match self.consumer.recv().now_or_never() {
                Some(m) => Ok(m),
                None => tokio::time::timeout_at(deadline, self.consumer.recv()).await,
            };
            match next {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    consumer_error(e)?;
                    break;
                }
                Err(_) => break,
            }
        }
        let owned = self.consumer.assignment()?;
        batch.retain(|m| {
            owned.find_partition(m.topic(), m.partition()).is_some()
                && self.consumer.context().keep(m)
        });
        Ok(batch)
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
/// ([`ProcessorConfig::rescore_slice`]): the wait it adds to the events that arrive
/// meanwhile, about a quarter of a second on the 2-core machine where 5,000 rolled 1 M
/// customers out in 47.8–56.3 s against 2,000's 62.7–87.8 s, live freshness p99 ≤ 1 s in
/// both; on a machine half as fast about half a second, and p99 ≤ 2.5 s
/// (BENCHMARKS.md, `scripts/bench-rescore.sh`).
pub const RESCORE_SLICE: usize = 5000;

/// How fresh the live stream must be for background rescoring to take a turn while
/// events wait, unless configured ([`ProcessorConfig::live_budget`]): the processor's
/// half of the 1 s event → row target.
pub const LIVE_BUDGET: Duration = Duration::from_millis(500);

/// How often the state markers of the owned partitions are checked.
const STATE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often they are checked while a backlog is worked through: each check ends the
/// pipeline of batches (its last save and the next first batch are not overlapped;
/// checking every second cost about 6% at 140,000 events/s), and meanwhile every save
/// checks the markers of its partitions anyway (lost state stops it at once).
const BACKLOG_CHECK_EVERY: Duration = Duration::from_secs(5);
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

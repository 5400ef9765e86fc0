//! The worker: runs every connector's tasks, produces their records, commits source
//! offsets after the broker's acknowledgement, and keeps configs and target states on a
//! compacted topic so a restarted worker picks up where it stopped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custflow_kafka::client::bulk_producer_config;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, DenyList, Event};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Header;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use super::metrics::{ConnectMetrics, TaskCounters};
use super::offsets::{self, Delivered, KvTopic, Positions};
use super::{
    partition_key, Batch, Common, ConnectorClass, ConnectorConfig, Error, ErrorPolicy,
    PartitionKey, SourceRecord, ValueFormat, SOURCE_HEADER,
};
use crate::pg_source::PgTask;
use crate::spooldir::SpoolDirTask;

/// Batches in flight per task before it waits for the oldest one's acknowledgements.
const MAX_IN_FLIGHT: usize = 8;

/// Settings of a worker.
#[derive(Clone)]
pub struct WorkerConfig {
    pub brokers: String,
    /// The deployment's topic names (defaults of `topic` and the dead-letter topic).
    pub topics: Topics,
    /// Compacted topic of connector configs and target states.
    pub config_topic: String,
    /// Compacted topic of source offsets.
    pub offset_topic: String,
    /// Shown as `worker_id` in statuses (the REST address).
    pub worker_id: String,
    pub codec: Arc<AvroCodec>,
    /// How often acknowledged offsets are committed (`offset.flush.interval.ms`).
    pub offset_flush: Duration,
    /// Most records per poll.
    pub batch_max: usize,
    /// Customer attributes dropped before records are written.
    pub deny: DenyList,
}

/// Turns events into record values in a connector's `value.format`.
#[derive(Clone)]
pub struct Encoder {
    codec: Arc<AvroCodec>,
    format: ValueFormat,
    deny: DenyList,
}

impl Encoder {
    pub fn new(codec: Arc<AvroCodec>, format: ValueFormat) -> Self {
        Self {
            codec,
            format,
            deny: DenyList::default(),
        }
    }

    /// Drops `deny`'s customer attributes from every event it encodes.
    pub fn with_deny(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
    }

    /// Validates and encodes an event; the error is the reason for the dead letter.
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, String> {
        let event = &*self.deny.redacted(event);
        let errs = custflow_schemas::validate::validate(
            event,
            &custflow_schemas::validate::ValidationContext::now(),
        );
        if !errs.is_empty() {
            return Err(errs
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; "));
        }
        match self.format {
            ValueFormat::Avro => self.codec.encode(event).map_err(|e| e.to_string()),
            ValueFormat::Json => Ok(json::encode(event)),
        }
    }
}

/// What every task needs to build its records.
#[derive(Clone)]
pub struct TaskContext {
    pub common: Common,
    pub task: usize,
    pub policy: ErrorPolicy,
    pub encoder: Encoder,
    pub topic: Arc<str>,
    /// Committed offsets of this connector: partition key → offset.
    pub offsets: HashMap<String, Value>,
}

impl TaskContext {
    /// An event record, or a dead letter / the fatal reason when it does not validate.
    pub fn event_record(
        &self,
        event: &Event,
        partition: &PartitionKey,
        id: String,
    ) -> Result<SourceRecord, String> {
        let value = self.encoder.encode(event)?;
        Ok(SourceRecord {
            topic: self.topic.clone(),
            key: Some(event.customer_id().as_bytes().to_vec()),
            value,
            headers: None,
            partition: partition.clone(),
            id,
        })
    }
}

/// A running source task of one of the connector classes.
pub enum Task {
    SpoolDir(Box<SpoolDirTask>),
    Postgres(Box<PgTask>),
}

impl Task {
    /// Checks a configuration the way creating the connector would, without starting it.
    pub fn validate(config: &ConnectorConfig, topics: &Topics) -> Result<Common, Error> {
        let common = config.common(topics)?;
        match common.class {
            ConnectorClass::SpoolDirCsvSource => SpoolDirTask::validate(config)?,
            ConnectorClass::PostgresSource => PgTask::validate(config)?,
        }
        Ok(common)
    }

    async fn start(config: &ConnectorConfig, ctx: TaskContext) -> Result<Self, Error> {
        Ok(match ctx.common.class {
            ConnectorClass::SpoolDirCsvSource => {
                Self::SpoolDir(Box::new(SpoolDirTask::start(config, ctx)?))
            }
            ConnectorClass::PostgresSource => {
                Self::Postgres(Box::new(PgTask::start(config, ctx).await?))
            }
        })
    }

    async fn poll(&mut self, max: usize) -> Result<Batch, Error> {
        match self {
            Self::SpoolDir(t) => tokio::task::block_in_place(|| t.poll(max)),
            Self::Postgres(t) => t.poll(max).await,
        }
    }

    /// Offsets up to and including these finished partitions are committed.
    fn committed(&mut self, ends: &[(PartitionKey, Value)]) -> Result<(), Error> {
        match self {
            Self::SpoolDir(t) => t.committed(ends),
            Self::Postgres(_) => Ok(()),
        }
    }

    /// What the task is working on, for the status endpoint.
    fn progress(&self) -> Value {
        match self {
            Self::SpoolDir(t) => t.progress(),
            Self::Postgres(t) => t.progress(),
        }
    }

    fn poll_interval(&self) -> Duration {
        match self {
            Self::SpoolDir(t) => t.poll_interval(),
            Self::Postgres(t) => t.poll_interval(),
        }
    }
}

/// Acknowledgements of one produced batch.
#[derive(Default)]
struct BatchAck {
    remaining: AtomicUsize,
    failed: Mutex<Option<String>>,
    /// Highest acknowledged broker offset per topic partition.
    max: Mutex<Vec<(Arc<str>, i32, i64)>>,
    done: Notify,
}

impl BatchAck {
    fn finish_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    async fn wait(&self) {
        while self.remaining.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }
}

/// Producer context: counts each record's delivery against its batch.
struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        match result {
            Ok(m) => {
                let mut max = ack.max.lock().unwrap_or_else(|e| e.into_inner());
                match max
                    .iter_mut()
                    .find(|(t, p, _)| *p == m.partition() && &**t == m.topic())
                {
                    Some(entry) => entry.2 = entry.2.max(m.offset()),
                    None => max.push((m.topic().into(), m.partition(), m.offset())),
                }
            }
            Err((e, _)) => {
                let mut f = ack.failed.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert_with(|| e.to_string());
            }
        }
        ack.finish_one();
    }
}

/// What a task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Stop,
}

/// A task's state as the status endpoint shows it.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    pub state: &'static str,
    pub trace: Option<String>,
    pub progress: Value,
    /// The last poll found nothing and everything produced is committed.
    pub idle: bool,
}

impl Default for TaskStatus {
    fn default() -> Self {
        Self {
            state: "UNASSIGNED",
            trace: None,
            progress: Value::Null,
            idle: false,
        }
    }
}

struct TaskRun {
    status: Arc<Mutex<TaskStatus>>,
    control: watch::Sender<Control>,
    join: tokio::task::JoinHandle<()>,
}

struct Connector {
    config: ConnectorConfig,
    paused: bool,
    tasks: Vec<TaskRun>,
}

struct Inner {
    cfg: WorkerConfig,
    configs: KvTopic,
    offsets: KvTopic,
    committed: Mutex<HashMap<String, Value>>,
    producer: ThreadedProducer<AckContext>,
    connectors: tokio::sync::Mutex<BTreeMap<String, Connector>>,
    metrics: Arc<ConnectMetrics>,
}

/// A Connect-style worker (one per deployment: it owns every connector of the configs
/// topic; DESIGN deviation: no group coordination between several workers).
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// A connector as `GET /connectors/{name}` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorInfo {
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub tasks: Vec<Value>,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

fn config_key(name: &str) -> String {
    format!("connector-{name}")
}

fn state_key(name: &str) -> String {
    format!("target-state-{name}")
}

impl Worker {
    /// Opens the config and offset topics, and starts every stored connector.
    pub async fn start(cfg: WorkerConfig) -> Result<Self, Error> {
        let configs = KvTopic::open(&cfg.brokers, &cfg.config_topic).await?;
        let offsets = KvTopic::open(&cfg.brokers, &cfg.offset_topic).await?;
        let stored = configs.load().await?;
        let committed = offsets.load().await?;
        let producer = bulk_producer_config(&cfg.brokers)
            .create_with_context(AckContext)
            .map_err(Error::kafka)?;
        let worker = Self {
            inner: Arc::new(Inner {
                cfg,
                configs,
                offsets,
                committed: Mutex::new(committed),
                producer,
                connectors: tokio::sync::Mutex::new(BTreeMap::new()),
                metrics: Arc::new(ConnectMetrics::default()),
            }),
        };
        let mut names: Vec<&String> = stored
            .keys()
            .filter(|k| k.starts_with("connector-"))
            .collect();
        names.sort();
        for key in names {
            let parsed = serde_json::from_value::<ConnectorConfig>(stored[key].clone());
            let config = match parsed {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(key, error = %e, "skipping a malformed stored connector config");
                    continue;
                }
            };
            let paused = stored
                .get(&state_key(&config.name))
                .and_then(|v| v.get("state"))
                .and_then(Value::as_str)
                == Some("PAUSED");
            let launched = match Task::validate(&config, &worker.inner.cfg.topics) {
                Ok(common) => worker.launch(config.clone(), common, paused).await,
                Err(e) => Err(e),
            };
            if let Err(e) = launched {
                tracing::warn!(connector = %config.name, error = %e, "stored connector does not start");
            }
        }
        Ok(worker)
    }

    pub fn metrics(&self) -> Arc<ConnectMetrics> {
        self.inner.metrics.clone()
    }

    /// The deployment's topic names.
    pub fn topics(&self) -> Topics {
        self.inner.cfg.topics.clone()
    }

    pub fn worker_id(&self) -> &str {
        &self.inner.cfg.worker_id
    }

    /// Creates or replaces a connector; `Ok(true)` when it is new.
    pub async fn put(&self, config: ConnectorConfig) -> Result<bool, Error> {
        let common = Task::validate(&config, &self.inner.cfg.topics)?;
        let existed = self.stop_tasks(&config.name).await;
        let paused = existed.unwrap_or(false);
        self.inner
            .configs
            .put(&[(
                config_key(&config.name),
                Some(serde_json::to_value(&config).unwrap_or(Value::Null)),
            )])
            .await?;
        self.launch(config, common, paused).await?;
        Ok(existed.is_none())
    }

    /// Creates a connector; fails if one of that name exists.
    pub async fn create(&self, config: ConnectorConfig) -> Result<(), Error> {
        if self
            .inner
            .connectors
            .lock()
            .await
            .contains_key(&config.name)
        {
            return Err(Error::Exists(config.name));
        }
        self.put(config).await.map(|_| ())
    }

    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        if self.stop_tasks(name).await.is_none() {
            return Err(Error::NotFound(name.into()));
        }
        self.inner.connectors.lock().await.remove(name);
        self.inner
            .configs
            .put(&[(config_key(name), None), (state_key(name), None)])
            .await?;
        self.inner.metrics.remove(name);
        Ok(())
    }

    pub async fn names(&self) -> Vec<String> {
        self.inner.connectors.lock().await.keys().cloned().collect()
    }

    pub async fn info(&self, name: &str) -> Result<ConnectorInfo, Error> {
        let map = self.inner.connectors.lock().await;
        let c = map.get(name).ok_or_else(|| Error::NotFound(name.into()))?;
        Ok(ConnectorInfo {
            name: name.into(),
            config: c.config.config.clone(),
            tasks: (0..c.tasks.len())
                .map(|i| json!({"connector": name, "task": i}))
                .collect(),
            kind: "source",
        })
    }

    /// `GET /connectors/{name}/status` in Connect's shape, with each task's progress.
    pub async fn status(&self, name: &str) -> Result<Value, Error> {
        let map = self.inner.connectors.lock().await;
        let c = map.get(name).ok_or_else(|| Error::NotFound(name.into()))?;
        let worker_id = &self.inner.cfg.worker_id;
        let tasks: Vec<TaskStatus> = c
            .tasks
            .iter()
            .map(|t| t.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect();
        let state = if c.paused {
            "PAUSED"
        } else if !tasks.is_empty() && tasks.iter().all(|t| t.state == "FAILED") {
            "FAILED"
        } else {
            "RUNNING"
        };
        Ok(json!({
            "name": name,
            "connector": {"state": state, "worker_id": worker_id},
            "tasks": tasks.iter().enumerate().map(|(i, t)| {
                let mut v = json!({"id": i, "state": t.state, "worker_id": worker_id});
                if let Some(trace) = &t.trace {
                    v["trace"] = json!(trace);
                }
                if !t.progress.is_null() {
                    v["progress"] = t.progress.clone();
                }
                v
            }).collect::<Vec<_>>(),
            "type": "source",
        }))
    }

    /// Pauses (`true`) or resumes a connector; the state survives worker restarts.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), Error> {
        let mut map = self.inner.connectors.lock().await;
        let c = map
            .get_mut(name)
            .ok_or_else(|| Error::NotFound(name.into()))?;
        self.inner
            .configs
            .put(&[(
                state_key(name),
                Some(json!({"state": if paused { "PAUSED" } else { "STARTED" }})),
            )])
            .await?;
        c.paused = paused;
        for t in &c.tasks {
            let _ = t
                .control
                .send(if paused { Control::Pause } else { Control::Run });
        }
        Ok(())
    }

    /// Stops and starts a connector's tasks (clears a FAILED state).
    pub async fn restart(&self, name: &str) -> Result<(), Error> {
        let paused = self
            .stop_tasks(name)
            .await
            .ok_or_else(|| Error::NotFound(name.into()))?;
        let config = {
            let map = self.inner.connectors.lock().await;
            map.get(name)
                .map(|c| c.config.clone())
                .ok_or_else(|| Error::NotFound(name.into()))?
        };
        let common = Task::validate(&config, &self.inner.cfg.topics)?;
        self.launch(config, common, paused).await
    }

    /// True when every task of every connector is idle or failed (nothing left to read
    /// right now and everything produced is committed).
    pub async fn all_idle(&self) -> bool {
        let map = self.inner.connectors.lock().await;
        map.values().all(|c| {
            c.tasks.iter().all(|t| {
                let s = t.status.lock().unwrap_or_else(|e| e.into_inner());
                s.idle || s.state == "FAILED"
            })
        })
    }

    /// Stops every task, committing what the broker acknowledged.
    pub async fn shutdown(&self) {
        let names = self.names().await;
        for n in names {
            self.stop_tasks(&n).await;
        }
    }

    /// Stops a connector's tasks and waits for them; `None` if there is no such
    /// connector, else whether it was paused.
    async fn stop_tasks(&self, name: &str) -> Option<bool> {
        let tasks = {
            let mut map = self.inner.connectors.lock().await;
            let c = map.get_mut(name)?;
            (std::mem::take(&mut c.tasks), c.paused)
        };
        for t in &tasks.0 {
            let _ = t.control.send(Control::Stop);
        }
        for t in tasks.0 {
            let _ = t.join.await;
        }
        Some(tasks.1)
    }

    /// Starts the tasks of a validated connector.
    async fn launch(
        &self,
        config: ConnectorConfig,
        common: Common,
        paused: bool,
    ) -> Result<(), Error> {
        let mut runs = Vec::new();
        for task in 0..common.tasks_max {
            let status = Arc::new(Mutex::new(TaskStatus::default()));
            let (tx, rx) = watch::channel(if paused { Control::Pause } else { Control::Run });
            let runner = Runner {
                inner: self.inner.clone(),
                config: config.clone(),
                common: common.clone(),
                task,
                status: status.clone(),
                counters: self.inner.metrics.task(&config.name, task),
            };
            let join = tokio::spawn(runner.run(rx));
            runs.push(TaskRun {
                status,
                control: tx,
                join,
            });
        }
        let mut map = self.inner.connectors.lock().await;
        map.insert(
            config.name.clone(),
            Connector {
                config,
                paused,
                tasks: runs,
            },
        );
        Ok(())
    }
}

/// A batch whose records are with the broker.
struct InFlight {
    ack: Arc<BatchAck>,
    offsets: Vec<(PartitionKey, Value)>,
    ends: Vec<(PartitionKey, Value)>,
    records: u64,
    dead_letters: u64,
}

/// One task's produce-and-commit loop.
struct Runner {
    inner: Arc<Inner>,
    config: ConnectorConfig,
    common: Common,
    task: usize,
    status: Arc<Mutex<TaskStatus>>,
    counters: Arc<TaskCounters>,
}

/// The offsets-topic key of a task's scan positions.
fn positions_key(connector: &str, task: usize) -> PartitionKey {
    partition_key(connector, &json!({"custflow.positions": task}))
}

impl Runner {
    fn set_status(&self, f: impl FnOnce(&mut TaskStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    async fn run(self, control: watch::Receiver<Control>) {
        let mut state = match self.prepare().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(connector = %self.common.name, task = self.task, error = %e, "task failed to start");
                self.set_status(|s| {
                    s.state = "FAILED";
                    s.trace = Some(e.to_string());
                });
                return;
            }
        };
        let result = self.produce_loop(&mut state, control).await;
        // Whatever the broker acknowledged gets committed, even on the way out.
        let drained = self.drain(&mut state).await;
        let result = result.and(drained);
        match result {
            Ok(()) => self.set_status(|s| {
                s.state = "UNASSIGNED";
                s.idle = true;
            }),
            Err(e) => {
                tracing::warn!(connector = %self.common.name, task = self.task, error = %e, "task failed");
                self.set_status(|s| {
                    s.state = "FAILED";
                    s.trace = Some(e.to_string());
                    s.idle = true;
                });
            }
        }
    }

    /// Reads the committed offsets, finds what a crash left uncommitted on the topics,
    /// and starts the task.
    async fn prepare(&self) -> Result<TaskState, Error> {
        let brokers = self.inner.cfg.brokers.clone();
        offsets::ensure_topic(&brokers, &self.common.topic, 8, false).await?;
        offsets::ensure_topic(&brokers, &self.common.dlq_topic, 1, false).await?;
        let name = &self.common.name;
        let prefix = {
            let k = partition_key(name, &Value::Null);
            k[..k.len() - "null]".len()].to_owned()
        };
        let offsets: HashMap<String, Value> = {
            let c = self
                .inner
                .committed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        // Scan from the lowest position any task of this connector recorded.
        let mut from = Positions::new();
        for (k, v) in &offsets {
            if !k.contains("\"custflow.positions\"") {
                continue;
            }
            let Ok(p) = serde_json::from_value::<Positions>(v.clone()) else {
                continue;
            };
            for (t, parts) in p {
                for (part, off) in parts {
                    let e = from
                        .entry(t.clone())
                        .or_default()
                        .entry(part)
                        .or_insert(off);
                    *e = (*e).min(off);
                }
            }
        }
        let dests = [self.common.topic.as_str(), self.common.dlq_topic.as_str()];
        let (delivered, positions) = {
            let (brokers, name) = (brokers.clone(), name.clone());
            let dests: Vec<String> = dests.iter().map(|s| (*s).to_owned()).collect();
            tokio::task::spawn_blocking(move || -> Result<(Delivered, Positions), Error> {
                let refs: Vec<&str> = dests.iter().map(String::as_str).collect();
                let high = offsets::high_watermarks(&brokers, &refs)?;
                // Partitions nothing recorded a position for start at their end.
                let mut start = high.clone();
                for (t, parts) in &from {
                    if let Some(s) = start.get_mut(t) {
                        for (p, o) in parts {
                            if let Some(e) = s.get_mut(p) {
                                *e = (*e).min(*o);
                            }
                        }
                    }
                }
                let delivered = offsets::read_back(&brokers, &super::connector_tag(&name), &start)?;
                Ok((delivered, start))
            })
            .await
            .map_err(|e| Error::Kafka(e.to_string()))??
        };
        let found: usize = delivered.values().map(HashMap::len).sum();
        if found > 0 {
            tracing::info!(connector = %name, task = self.task, records = found, "found delivered records past the committed offsets; they will not be produced again");
        }
        let ctx = TaskContext {
            policy: ErrorPolicy::new(&self.common, self.task),
            encoder: Encoder::new(self.inner.cfg.codec.clone(), self.common.format)
                .with_deny(self.inner.cfg.deny.clone()),
            topic: self.common.topic.as_str().into(),
            common: self.common.clone(),
            task: self.task,
            offsets,
        };
        let task = Task::start(&self.config, ctx).await?;
        let mut state = TaskState {
            task,
            delivered,
            in_flight: VecDeque::new(),
            acked: Vec::new(),
            pending: HashMap::new(),
            ends: Vec::new(),
            positions,
            positions_dirty: true,
            last_commit: Instant::now(),
        };
        // Record the scan start before producing anything, so a crash before the first
        // commit still finds this run's records.
        self.commit(&mut state).await?;
        Ok(state)
    }

    async fn produce_loop(
        &self,
        st: &mut TaskState,
        mut control: watch::Receiver<Control>,
    ) -> Result<(), Error> {
        self.set_status(|s| {
            s.state = "RUNNING";
            s.trace = None;
        });
        loop {
            let c = *control.borrow_and_update();
            match c {
                Control::Stop => return Ok(()),
                Control::Pause => {
                    self.drain(st).await?;
                    self.set_status(|s| {
                        s.state = "PAUSED";
                        s.idle = true;
                    });
                    if control.changed().await.is_err() {
                        return Ok(());
                    }
                    self.set_status(|s| {
                        s.state = "RUNNING";
                        s.idle = false;
                    });
                    continue;
                }
                Control::Run => {}
            }
            self.retire(st, false).await?;
            if st.last_commit.elapsed() >= self.inner.cfg.offset_flush || !st.ends.is_empty() {
                self.commit(st).await?;
            }
            let batch = st.task.poll(self.inner.cfg.batch_max).await?;
            TaskCounters::add(&self.counters.bytes, batch.bytes);
            let progress = st.task.progress();
            let empty = batch.records.is_empty() && batch.ends.is_empty() && batch.fatal.is_none();
            if empty {
                self.drain(st).await?;
                self.set_status(|s| {
                    s.idle = true;
                    s.progress = progress;
                });
                let wait = st.task.poll_interval();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = control.changed() => {}
                }
                continue;
            }
            self.set_status(|s| {
                s.idle = false;
                s.progress = progress;
            });
            let fatal = batch.fatal.clone();
            self.send(st, batch).await?;
            if let Some(reason) = fatal {
                self.drain(st).await?;
                return Err(Error::Record(reason));
            }
        }
    }

    /// Produces a batch's records (skipping those already delivered before a crash).
    async fn send(&self, st: &mut TaskState, batch: Batch) -> Result<(), Error> {
        let ack = Arc::new(BatchAck::default());
        // One extra count, released after the loop, so the batch cannot complete early.
        ack.remaining.store(1, Ordering::Release);
        let (mut records, mut dead_letters, mut recovered) = (0u64, 0u64, 0u64);
        let tag = super::connector_tag(&self.common.name);
        // The partition's hash, computed once per run of records from one partition.
        let mut last: Option<(PartitionKey, u64)> = None;
        let mut header = String::new();
        for rec in batch.records {
            let hash = match &last {
                Some((p, h)) if Arc::ptr_eq(p, &rec.partition) || *p == rec.partition => *h,
                _ => {
                    let h = super::fnv(rec.partition.as_bytes());
                    last = Some((rec.partition.clone(), h));
                    h
                }
            };
            if let Some(ids) = st.delivered.get_mut(&hash) {
                if ids.remove(&rec.id).is_some() {
                    recovered += 1;
                    continue;
                }
            }
            let is_dead = rec.headers.is_some();
            header.clear();
            let _ = write!(header, "{tag}{hash:016x}/{}", rec.id);
            let headers = rec.headers.unwrap_or_default().insert(Header {
                key: SOURCE_HEADER,
                value: Some(&header),
            });
            let mut record = BaseRecord::with_opaque_to(&rec.topic, ack.clone())
                .payload(&rec.value)
                .headers(headers);
            if let Some(k) = &rec.key {
                record = record.key(k);
            }
            ack.remaining.fetch_add(1, Ordering::AcqRel);
            loop {
                match self.inner.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        ack.finish_one();
                        return Err(Error::Kafka(format!("producing to {}: {e}", rec.topic)));
                    }
                }
            }
            records += 1;
            if is_dead {
                dead_letters += 1;
            }
        }
        ack.finish_one();
        for (p, _) in &batch.ends {
            st.delivered.remove(&super::fnv(p.as_bytes()));
        }
        TaskCounters::add(&self.counters.recovered, recovered);
        st.in_flight.push_back(InFlight {
            ack,
            offsets: batch.offsets,
            ends: batch.ends,
            records,
            dead_letters,
        });
        if st.in_flight.len() >= MAX_IN_FLIGHT {
            self.retire(st, true).await?;
        }
        Ok(())
    }

    /// Takes acknowledged batches off the front; with `wait`, waits for the oldest.
    async fn retire(&self, st: &mut TaskState, wait: bool) -> Result<(), Error> {
        if wait {
            if let Some(f) = st.in_flight.front() {
                f.ack.wait().await;
            }
        }
        while st
            .in_flight
            .front()
            .is_some_and(|f| f.ack.remaining.load(Ordering::Acquire) == 0)
        {
            let Some(f) = st.in_flight.pop_front() else {
                break;
            };
            if let Some(e) = f
                .ack
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                return Err(Error::Kafka(format!("a record was not delivered: {e}")));
            }
            for (t, p, o) in f.ack.max.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                st.acked.push((t.clone(), *p, *o));
            }
            TaskCounters::add(&self.counters.records, f.records);
            TaskCounters::add(&self.counters.dead_letters, f.dead_letters);
            st.pending.extend(f.offsets);
            TaskCounters::add(&self.counters.partitions_done, f.ends.len() as u64);
            for (p, o) in f.ends {
                st.pending.insert(p.clone(), o.clone());
                st.ends.push((p, o));
            }
        }
        Ok(())
    }

    /// Waits for every batch in flight and commits.
    async fn drain(&self, st: &mut TaskState) -> Result<(), Error> {
        while !st.in_flight.is_empty() {
            self.retire(st, true).await?;
        }
        self.commit(st).await
    }

    /// Commits the offsets of acknowledged batches, then the scan positions, then lets
    /// the task act on finished partitions.
    async fn commit(&self, st: &mut TaskState) -> Result<(), Error> {
        st.last_commit = Instant::now();
        for (t, p, o) in st.acked.drain(..) {
            let e = st
                .positions
                .entry(t.to_string())
                .or_default()
                .entry(p)
                .or_insert(o + 1);
            *e = (*e).max(o + 1);
            st.positions_dirty = true;
        }
        if st.pending.is_empty() && !st.positions_dirty {
            return Ok(());
        }
        // Records found after a crash and not yet read again stay inside the scan range.
        let mut positions = st.positions.clone();
        for (t, p, o) in st.delivered.values().flat_map(HashMap::values) {
            if let Some(e) = positions.get_mut(&**t).and_then(|m| m.get_mut(p)) {
                *e = (*e).min(*o);
            }
        }
        let mut entries: Vec<(String, Option<Value>)> = st
            .pending
            .drain()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .collect();
        let pkey = positions_key(&self.common.name, self.task).to_string();
        entries.push((
            pkey,
            Some(serde_json::to_value(&positions).unwrap_or(Value::Null)),
        ));
        self.inner.offsets.put(&entries).await?;
        {
            let mut c = self
                .inner
                .committed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for (k, v) in entries {
                if let Some(v) = v {
                    c.insert(k, v);
                }
            }
        }
        st.positions_dirty = false;
        TaskCounters::add(&self.counters.commits, 1);
        let ends = std::mem::take(&mut st.ends);
        st.task.committed(&ends)
    }
}

/// A running task's bookkeeping.
struct TaskState {
    task: Task,
    /// Records found on the topics after a crash, not yet read again from the source.
    delivered: Delivered,
    in_flight: VecDeque<InFlight>,
    /// Acknowledged broker offsets not yet folded into `positions`.
    acked: Vec<(Arc<str>, i32, i64)>,
    /// Acknowledged offsets not yet committed, per partition.
    pending: HashMap<PartitionKey, Value>,
    /// Finished partitions whose final offsets await their commit.
    ends: Vec<(PartitionKey, Value)>,
    positions: Positions,
    positions_dirty: bool,
    last_commit: Instant,
}

//! The worker's control plane: connectors and their tasks (create, update, pause,
//! restart, delete, status), with configs and target states kept on a compacted topic
//! so a restarted worker picks up where it stopped. Each task runs in
//! [`super::runner`]; what a task is, in [`super::task`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custflow_kafka::client::bulk_producer_config;
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::DenyList;
use rdkafka::producer::ThreadedProducer;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::acks::AckContext;
use super::metrics::ConnectMetrics;
use super::offsets::KvTopic;
use super::runner::Runner;
use super::task;
use super::{Common, ConnectorConfig, Error};

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

/// What a task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
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

pub(super) struct Inner {
    pub(super) cfg: WorkerConfig,
    configs: KvTopic,
    pub(super) offsets: KvTopic,
    pub(super) committed: Mutex<HashMap<String, Value>>,
    pub(super) producer: ThreadedProducer<AckContext>,
    connectors: tokio::sync::Mutex<BTreeMap<String, Connector>>,
    pub(super) metrics: Arc<ConnectMetrics>,
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
            let launched = match task::validate(&config, &worker.inner.cfg.topics) {
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
        let common = task::validate(&config, &self.inner.cfg.topics)?;
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
        let common = task::validate(&config, &self.inner.cfg.topics)?;
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

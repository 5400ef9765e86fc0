//! One task's loop: poll the source, produce the records, wait for the broker's
//! acknowledgements, and commit the source offsets after them (with the crash recovery
//! that skips what reached the topics past the last commit).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Header;
use rdkafka::producer::BaseRecord;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::acks::BatchAck;
use super::metrics::TaskCounters;
use super::offsets::{self, Delivered, Positions};
use super::task::{self, Encoder, SourceTask, TaskContext};
use super::worker::{Control, Inner, TaskStatus};
use super::{
    partition_key, Batch, Common, ConnectorConfig, Error, ErrorPolicy, PartitionKey, SOURCE_HEADER,
};

/// Batches in flight per task before it waits for the oldest one's acknowledgements.
const MAX_IN_FLIGHT: usize = 8;

/// A batch whose records are with the broker.
struct InFlight {
    ack: Arc<BatchAck>,
    offsets: Vec<(PartitionKey, Value)>,
    ends: Vec<(PartitionKey, Value)>,
    records: u64,
    dead_letters: u64,
}

/// One task's produce-and-commit loop.
pub(super) struct Runner {
    pub(super) inner: Arc<Inner>,
    pub(super) config: ConnectorConfig,
    pub(super) common: Common,
    pub(super) task: usize,
    pub(super) status: Arc<Mutex<TaskStatus>>,
    pub(super) counters: Arc<TaskCounters>,
}

/// The offsets-topic key of a task's scan positions.
fn positions_key(connector: &str, task: usize) -> PartitionKey {
    partition_key(connector, &json!({"custflow.positions": task}))
}

impl Runner {
    fn set_status(&self, f: impl FnOnce(&mut TaskStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(super) async fn run(self, control: watch::Receiver<Control>) {
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
        for topic in self.common.destinations() {
            let partitions = if topic == self.common.dlq_topic { 1 } else { 8 };
            offsets::ensure_topic(&brokers, &topic, partitions, false).await?;
        }
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
        let (delivered, positions) = {
            let (brokers, name) = (brokers.clone(), name.clone());
            let dests = self.common.destinations();
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
        let task = task::start(&self.config, ctx).await?;
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
    task: Box<dyn SourceTask>,
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

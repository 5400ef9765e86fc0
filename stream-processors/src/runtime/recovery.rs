//! Recovery: a deployment rebuilt from the start of its topics (`--rebuild`, a new
//! deployment), and partitions whose state Redis lost, found by their markers and
//! replayed while the deployment is not ready.

use super::*;

impl Processor {
    /// Wipes Redis and points the group at the beginning of every input partition's log
    /// (`kafka::log_starts`).
    pub(super) async fn rebuild(&self, inputs: &[String]) -> Result<()> {
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

    /// After Redis lost the state of `lost`: the batch's other partitions go back to the
    /// batch's first offsets (nothing of it was written), the lost ones to their start.
    /// Every other owned partition without a marker is reset with them (a new deployment
    /// has none), so one reset covers them all instead of one per batch.
    pub(super) async fn recover(&self, batch: &[OwnedMessage], lost: &[i32]) -> Result<()> {
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
    pub(super) async fn reset(&self, lost: &[i32]) -> Result<()> {
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
    pub(super) async fn replay_targets(
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
    pub(super) fn owned_partitions(&self) -> Result<Vec<i32>> {
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
    pub(super) async fn check_state(&self) -> Result<()> {
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
    pub(super) async fn check_rebuilt(&self) -> Result<()> {
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
}

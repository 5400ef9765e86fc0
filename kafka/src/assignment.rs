//! A consumer's side of a membership (`custflow_feature_store::members`): applies this
//! process's share of the partitions to a Kafka consumer and tells the group's progress
//! watcher what it owns.

use std::sync::Arc;
use std::time::Duration;

use custflow_feature_store::members::{Error, Member, Share};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use crate::client::{client_config, Rewind, Tune, FETCH_QUEUE_BACKOFF_MS, FETCH_WAIT_MS};
use crate::progress::Progress;

/// A consumer for a membership's partitions: no group protocol (the [`Assignment`]
/// assigns), offsets committed by hand under `group`, nothing stored automatically,
/// from the earliest record where the group has no offset. Partitions start a little
/// before their committed offsets (tansu skips the rest of a batch fetched from its
/// middle; [`Rewind`] drops what comes before).
pub fn member_consumer(brokers: &str, group: &str) -> Result<StreamConsumer<Rewind>, KafkaError> {
    client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .tune("fetch.wait.max.ms", FETCH_WAIT_MS)
        .tune("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(Rewind::default())
}

/// A consumer's side of a membership: applies this member's share of the partitions to
/// the consumer (the same partition numbers of each of its topics), and tells the group's
/// progress watcher what this process owns.
pub struct Assignment {
    share: watch::Receiver<Share>,
    /// Each topic the consumer reads, with its partition count.
    topics: Vec<(String, i32)>,
    progress: Arc<Progress>,
    /// The lease task; `None` once its end was read (a finished handle must not be polled
    /// again).
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    /// The share last applied to the consumer.
    applied: Option<Share>,
}

impl Assignment {
    /// Starts `member`'s lease and the progress watcher of `group` over `topics` (those
    /// that exist; each with its partition count from the broker), until `stop`.
    pub async fn start(
        member: Member,
        brokers: &str,
        topics: &[String],
        progress: Arc<Progress>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, KafkaError> {
        let counts = {
            let (brokers, topics) = (brokers.to_owned(), topics.to_vec());
            tokio::task::spawn_blocking(move || partition_counts(&brokers, &topics))
                .await
                .map_err(|_| KafkaError::Canceled)??
        };
        let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
        let (share, task) = member.spawn(most, stop.clone());
        tokio::spawn(crate::progress::watch(
            brokers.to_owned(),
            topics.to_vec(),
            progress.clone(),
            stop,
        ));
        Ok(Self {
            share,
            topics: counts,
            progress,
            task: Some(task),
            applied: None,
        })
    }

    /// Waits until this member's share changes (for a `select!`); never returns once the
    /// membership ended.
    pub async fn changed(&mut self) {
        if self.share.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether this member's share changed since it was last applied or waited for.
    pub fn has_changed(&self) -> bool {
        self.share.has_changed().unwrap_or(false)
    }

    /// Whether the membership ended with an error (another process took the id over).
    /// Reports that error once.
    pub async fn failed(&mut self) -> Option<Error> {
        let task = self.task.take_if(|t| t.is_finished())?;
        match task.await {
            Ok(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Applies the share to `consumer` when it differs from the one applied last; the
    /// partitions gained and lost. Blocking work runs off the runtime.
    #[allow(clippy::type_complexity)]
    pub async fn apply<C>(
        &mut self,
        consumer: &Arc<C>,
    ) -> Result<Option<(Vec<(String, i32)>, Vec<(String, i32)>)>, KafkaError>
    where
        C: Consumer<Rewind> + Send + Sync + 'static,
    {
        let share = self.share.borrow_and_update().clone();
        if share.members == 0 && share.partitions.is_empty() && self.applied.is_none() {
            return Ok(None); // not joined yet
        }
        if self.applied.as_ref() == Some(&share) {
            return Ok(None);
        }
        let wanted: Vec<(String, i32)> = self
            .topics
            .iter()
            .flat_map(|(t, n)| {
                share
                    .partitions
                    .iter()
                    .filter(move |p| **p < *n)
                    .map(move |p| (t.clone(), *p))
            })
            .collect();
        let c = consumer.clone();
        let moved = tokio::task::spawn_blocking(move || {
            Rewind::reassign(&*c, &wanted, Duration::from_secs(10))
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        match moved {
            Ok(m) => {
                self.progress.set_share(&share.partitions, share.members);
                self.applied = Some(share);
                Ok(Some(m))
            }
            // Tried again at the next call.
            Err(e) => Err(e),
        }
    }

    /// After the stop signal: waits (a few seconds at most) until the lease was given up,
    /// so the other instances take the partitions at once.
    pub async fn finish(&mut self) {
        if let Some(task) = self.task.as_mut() {
            if tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .is_ok()
            {
                self.task = None;
            }
        }
    }

    /// This member's current share.
    pub fn share(&self) -> Share {
        self.share.borrow().clone()
    }
}

impl Drop for Assignment {
    /// A consumer that ended without its stop signal (an error) stops renewing: its
    /// lease runs out and the others take its partitions.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The partition count of each of `topics` that exists. Blocking.
fn partition_counts(brokers: &str, topics: &[String]) -> Result<Vec<(String, i32)>, KafkaError> {
    let consumer: BaseConsumer = crate::client::client_config(brokers).create()?;
    crate::client::partition_counts(&consumer, topics, Duration::from_secs(10))
}

//! Acknowledgements of produced batches: the producer's delivery reports counted against
//! their batch, with the highest acknowledged offset per topic partition.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientContext, Message};
use tokio::sync::Notify;

/// Acknowledgements of one produced batch.
#[derive(Default)]
pub(super) struct BatchAck {
    pub(super) remaining: AtomicUsize,
    pub(super) failed: Mutex<Option<String>>,
    /// Highest acknowledged broker offset per topic partition.
    pub(super) max: Mutex<Vec<(Arc<str>, i32, i64)>>,
    done: Notify,
}

impl BatchAck {
    pub(super) fn finish_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    pub(super) async fn wait(&self) {
        while self.remaining.load(Ordering::Acquire) > 0 {
            self.done.notified().await;
        }
    }
}

/// Producer context: counts each record's delivery against its batch.
pub(super) struct AckContext;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_done_once_every_record_was_reported() {
        let ack = Arc::new(BatchAck::default());
        ack.remaining.store(3, Ordering::Release);
        let waiter = {
            let ack = ack.clone();
            tokio::spawn(async move { ack.wait().await })
        };
        ack.finish_one();
        ack.finish_one();
        assert!(!waiter.is_finished());
        ack.finish_one();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends with the last report")
            .unwrap();
        assert_eq!(ack.remaining.load(Ordering::Acquire), 0);
    }
}

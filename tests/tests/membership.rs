//! A consumer's membership through its whole life on the real broker and Redis: the end
//! of its lease task is read once, however often the consumer loop asks after it.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use custflow_kafka::assignment::Assignment;
use custflow_kafka::progress::Progress;
use custflow_schemas::topics::{self, Topics};

async fn assignment(
    brokers: &str,
    names: &Topics,
    member: custflow_feature_store::members::Member,
) -> (Assignment, tokio::sync::watch::Sender<bool>) {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let topics = vec![names.name(topics::ORDERS)];
    let a = Assignment::start(
        member,
        brokers,
        &topics,
        Arc::new(Progress::new(names.name("group"))),
        stop,
    )
    .await
    .unwrap();
    (a, stop_tx)
}

/// After a clean stop the loop keeps asking whether the membership failed and then
/// waits for the lease to be given up: no answer is an error and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_membership_is_asked_after_as_often_as_the_loop_likes() {
    let (brokers, names) = custflow_tests::deployment("mb-").await;
    let member = custflow_tests::member(&names.name(""), "processors").await;
    let (mut a, stop) = assignment(&brokers, &names, member).await;
    custflow_tests::wait_until(Duration::from_secs(20), "the first share", || {
        let share = a.share();
        async move { (!share.partitions.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(
        a.share().partitions.len(),
        topics::DEFAULT_PARTITIONS as usize
    );
    stop.send(true).unwrap();
    a.finish().await;
    for _ in 0..3 {
        assert!(a.failed().await.is_none(), "a clean stop is no failure");
        a.finish().await;
    }
}

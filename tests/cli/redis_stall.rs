//! Stuck Redis: the processor reaches Redis through a proxy that stops passing bytes for
//! 25 s (longer than the processor's 10 s reply timeout) while 40,000 more events
//! arrive. Meanwhile the processor applies nothing and its memory stays bounded (it
//! retries the batch in hand and does not read further); once Redis answers again the
//! lag drains, and every customer's features equal a recomputation from the topics:
//! the writes that were held and then landed late are not applied twice.

use std::time::{Duration, Instant};

use custflow_schemas::time::DAY_MS;
use custflow_tests::Proxy;

use crate::crash::{assert_same, counter, deployment, spawn_with};
use crate::free_port;

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_redis_keeps_memory_bounded_and_the_lag_recovers() {
    const FIRST: usize = 20_000;
    const ALL: usize = 60_000;
    let _turn = crate::HEAVY.lock().await;
    let mut d = deployment("redis-stall-", 13, 15_000, ALL).await;
    let later = d.events.split_off(FIRST);
    let proxy = Proxy::start(
        custflow_tests::redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/'),
    )
    .await;
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut processor = spawn_with(&d.prefix, &d.brokers, &metrics, &["--redis", &url]);

    d.produce(5_000, Duration::ZERO).await.unwrap();
    d.applied(FIRST).await;
    let rss_before = rss_mib(processor.id());

    // Stuck for 25 s while the rest arrives.
    proxy.stall();
    let stalled = Instant::now();
    d.events = later;
    d.produce(5_000, Duration::ZERO).await.unwrap();
    let mut rss_peak = rss_before;
    let mut applied_during = Vec::new();
    while stalled.elapsed() < Duration::from_secs(25) {
        rss_peak = rss_peak.max(rss_mib(processor.id()));
        applied_during.push(counter(&metrics, "custflow_events_applied_total"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retried = counter(&metrics, "custflow_batches_retried_total");
    let stalls = counter(&metrics, "custflow_group_stalls_total");
    proxy.up();

    let (reference, ids, states) = d.applied(ALL).await;
    let recovered = stalled.elapsed();
    eprintln!(
        "RSS {rss_before} MiB before, peak {rss_peak} MiB while stuck; {retried} batch \
         attempts retried, {stalls} stalls reported; all applied {:.1} s after the stall began",
        recovered.as_secs_f64()
    );
    processor.kill().unwrap();
    processor.wait().unwrap();

    // Nothing was applied while stuck (the lag grew by the 40,000 events)...
    let (first, last) = (applied_during[0], *applied_during.last().unwrap());
    assert!(
        last <= first + 2_000 && last < ALL as u64,
        "events applied while Redis was stuck: {applied_during:?}"
    );
    // The processor noticed instead of hanging: a batch that timed out on Redis was
    // retried, or (when the stall first hit a marker check or the lease renewal, which
    // then gave the partitions up) its group reported the stall.
    assert!(
        retried > 0 || stalls > 0,
        "no batch was retried and no stall was reported"
    );
    // ...the memory stayed bounded (librdkafka's prefetch queue is capped)...
    assert!(
        rss_peak < rss_before + 256,
        "RSS grew from {rss_before} MiB to {rss_peak} MiB while Redis was stuck"
    );
    // ...and afterwards everything is applied exactly once.
    assert_same(&reference, &ids, &states, d.now + DAY_MS);
}

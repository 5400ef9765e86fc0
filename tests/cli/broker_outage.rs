//! Broker outage: every client reaches a private tansu broker through a proxy, and the
//! proxy cuts them all off for 8 s mid-stream (open connections dropped, new ones
//! refused), which is what clients see while a broker restarts. Meanwhile events arrive
//! both through the REST endpoint (which answers 503 for what the broker did not take;
//! the client sends those again) and through a librdkafka producer (which retries
//! itself). Afterwards every event is on the topics, and every customer's features equal
//! a recomputation from the topics: nothing lost, nothing counted twice.
//!
//! A restart of tansu itself is not what this tests: its memory storage forgets the
//! topics, and its SQLite engine (0.6.0) panicked under this test's load (RELIABILITY.md).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::CustomerState;
use custflow_ingest::producer::{EventProducer, Format};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, Event, ValidationContext};
use custflow_tests::Proxy;

use crate::crash::{apply_input, assert_same, spawn_with, synthetic};
use crate::{free_port, get, Helper, Server};

/// The tansu binary the scripts install (scripts/lib.sh says where).
fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let lib = custflow_tests::repo_root().join("scripts/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && echo \"$TANSU_BIN\"", lib.display()))
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `tansu broker` (memory storage) listening on `port` and telling clients to connect
/// to `advertised` (the proxy), killed when dropped.
fn broker(port: u16, advertised: u16) -> Helper {
    let bin = tansu_bin();
    assert!(
        bin.exists(),
        "{} is missing: run scripts/install.sh",
        bin.display()
    );
    Helper::listening(
        Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
            ])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stderr(Stdio::null()),
        port,
    )
}

/// Posts `events` as NDJSON batches until the endpoint took every one: a 503 names the
/// events the broker did not acknowledge, and only those are sent again. Returns how
/// many answers were 503 (or no answer at all, while the broker was down).
fn post_all(api: &str, events: &[Event]) -> usize {
    let mut refused = 0;
    for batch in events.chunks(100) {
        let mut left: Vec<&Event> = batch.iter().collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !left.is_empty() {
            assert!(
                Instant::now() < deadline,
                "events not taken within 2 minutes"
            );
            let body: Vec<u8> = left
                .iter()
                .flat_map(|e| {
                    let mut line = json::encode_tagged(e).to_string().into_bytes();
                    line.push(b'\n');
                    line
                })
                .collect();
            let (status, _, text) = custflow_tests::http(
                api,
                "POST",
                "/v1/events",
                &[("Content-Type", "application/x-ndjson")],
                &body,
            );
            match status {
                200 => left.clear(),
                503 => {
                    refused += 1;
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let results = v["error"]["details"][0]["results"]
                        .as_array()
                        .unwrap_or_else(|| panic!("a 503 without results: {text}"));
                    let failed: HashSet<usize> = results
                        .iter()
                        .filter(|r| r["status"] == "failed")
                        .filter_map(|r| r["index"].as_u64())
                        .map(|i| i as usize)
                        .collect();
                    assert!(
                        results
                            .iter()
                            .all(|r| r["status"] == "failed" || r["status"] == "accepted"),
                        "{text}"
                    );
                    left = left
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| failed.contains(i))
                        .map(|(_, e)| e)
                        .collect();
                    // The client's backoff before sending the refused events again.
                    std::thread::sleep(Duration::from_millis(200));
                }
                _ => panic!("POST /v1/events answered {status}: {text}"),
            }
        }
    }
    refused
}

/// Every input record on the topics (until `ids` were all seen and the topics stayed
/// quiet for 3 s), applied the way the processor does: the reference; and how many
/// records there were.
fn recompute(
    brokers: &str,
    names: &Topics,
    ids: &HashSet<String>,
) -> (HashMap<String, CustomerState>, usize) {
    let consumer = custflow_tests::input_reader(brokers, names, "outage-check-");
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut records = 0;
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "only {} of {} events on the topics",
            seen.len(),
            ids.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            if seen.len() == ids.len() && quiet_since.elapsed() > Duration::from_secs(3) {
                return (states, records);
            }
            continue;
        };
        quiet_since = Instant::now();
        let e = apply_input(names, &codec, &ctx, &m.unwrap(), &mut states);
        seen.insert(e.event_id().to_owned());
        records += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_and_doubles_nothing() {
    const N: usize = 20_000;
    let _turn = crate::HEAVY.lock().await;
    custflow_tests::ensure_stack(); // Redis
    let prefix = custflow_tests::unique("broker-outage-") + ".";
    let port = free_port();
    let proxy = Proxy::start(&format!("127.0.0.1:{port}")).await;
    let _broker = broker(port, proxy.port);
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let names = Topics::new(prefix.clone());
    custflow_kafka::ensure_topics(&brokers, &names, Duration::from_secs(20))
        .await
        .unwrap();

    let (now, events) = synthetic(3, 6_000, N);
    let ids: HashSet<String> = events.iter().map(|e| e.event_id().to_owned()).collect();
    assert_eq!(ids.len(), N);
    // Half the customers arrive through REST, half through librdkafka: each customer's
    // events come one way, in order (across both ways, an old event could arrive after
    // the customer's newest by more than the kept detail, and be dead-lettered as late).
    let (by_rest, events): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| {
        let h = e
            .customer_id()
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        h % 2 == 0
    });

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut processor = spawn_with(&prefix, &brokers, &metrics, &[]);
    let api = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &["serve", "--topic-prefix", &prefix, "--brokers", &brokers],
        &api,
        "/healthz",
    );

    // Both paths produce, paced over about 10 s.
    let (b2, n2) = (brokers.clone(), names.clone());
    let producer = tokio::task::spawn_blocking(move || {
        let codec = Arc::new(AvroCodec::builtin());
        let mut p = EventProducer::new(&b2, n2, codec, Format::Avro).unwrap();
        for (i, e) in events.iter().enumerate() {
            p.send(e).unwrap();
            if i % 500 == 499 {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        p.flush(Duration::from_secs(120)).unwrap();
        p.deliveries()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
    });
    let api2 = api.clone();
    let rest = tokio::task::spawn_blocking(move || {
        let mut refused = 0;
        for part in by_rest.chunks(500) {
            refused += post_all(&api2, part);
            std::thread::sleep(Duration::from_millis(500));
        }
        refused
    });

    // Mid-stream every client loses the broker for 8 s.
    const OUTAGE: Duration = Duration::from_secs(8);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down_at = tokio::time::Instant::now();
    proxy.down();
    // /readyz must notice within the outage.
    let (down_status, down_body) = loop {
        let (status, body) = get(&api, "/readyz");
        if body.contains("\"broker\":false") || down_at.elapsed() >= OUTAGE {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep_until(down_at + OUTAGE).await;
    proxy.up();

    assert_eq!(producer.await.unwrap(), 0, "librdkafka deliveries failed");
    let refused = rest.await.unwrap();
    eprintln!("REST answers refused while the broker was away: {refused}");
    assert!(refused > 0, "no POST met the outage");
    assert_eq!(
        down_status, 503,
        "/readyz while the broker was away: {down_body}"
    );
    assert!(down_body.contains("\"broker\":false"), "{down_body}");

    // Everything is on the topics, and the processor applied exactly that.
    let (reference, records) = {
        let (b, n, i) = (brokers.clone(), names.clone(), ids.clone());
        tokio::task::spawn_blocking(move || recompute(&b, &n, &i))
            .await
            .unwrap()
    };
    assert!(records >= N, "{records} records for {N} events");
    let want: u64 = reference.values().map(|s| s.applied).sum();
    let customers: Vec<String> = reference.keys().cloned().collect();
    let keys = Keys::new(prefix.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    let states = loop {
        let states = custflow_tests::read_states(&keys, &customers).await;
        let got: u64 = states.iter().flatten().map(|s| s.applied).sum();
        if got >= want {
            break states;
        }
        assert!(
            Instant::now() < deadline,
            "the processor applied {got} of {want} within 5 minutes of the restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_same(&reference, &customers, &states, now + DAY_MS);

    processor.kill().unwrap();
    processor.wait().unwrap();
    server.stop();
}

//! `custflow synth --target`: the load generator sends every generated event through
//! `custflow serve`'s REST endpoint; each arrives on its topic exactly once and decodes,
//! and the report's counts and latencies agree with what the broker holds.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::ValidationContext;
use rdkafka::Message;

use crate::{free_port, json_summary, Server};

#[test]
fn synth_target_delivers_every_event_once_through_rest() {
    let brokers = custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("load-");
    let addr = format!("127.0.0.1:{}", free_port());
    let _server = Server::start(&["serve", "--topic-prefix", &prefix], &addr, "/healthz");

    let summary = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["synth", "--customers", "300", "--days", "90", "--json"])
            .args(["--topic-prefix", &prefix])
            .args(["--target", &format!("http://{addr}")])
            .args(["--batch", "40", "--concurrency", "4"]),
    );
    let events = summary["events"].as_u64().unwrap();
    assert!(events > 300, "{summary}");
    let http = &summary["http"];
    assert_eq!(http["events_accepted"].as_u64(), Some(events), "{summary}");
    assert_eq!(http["events_failed"].as_u64(), Some(0), "{summary}");
    assert_eq!(
        http["requests"].as_u64(),
        Some(events.div_ceil(40)),
        "{summary}"
    );
    let (p50, p99) = (
        http["latency_p50_ms"].as_f64().unwrap(),
        http["latency_p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{summary}");

    // The broker holds each event exactly once, decodable.
    let names = Topics::new(&prefix);
    let consumer = custflow_tests::input_reader(&brokers, &names, "load-check-");
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    let mut seen: HashMap<String, u32> = HashMap::new();
    // Read until every event is back, then a little longer to catch extra copies.
    let mut quiet_until: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while quiet_until.is_none_or(|q| Instant::now() < q) {
        assert!(
            Instant::now() < deadline,
            "read {} of {events} events back",
            seen.len()
        );
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let (_, e) = custflow_tests::decode_input(&names, &codec, &ctx, &m);
        assert_eq!(m.key(), Some(e.customer_id().as_bytes()));
        *seen.entry(e.event_id().to_owned()).or_default() += 1;
        if seen.len() as u64 == events && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_secs(3));
        }
    }
    assert_eq!(seen.len() as u64, events);
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dupes.is_empty(),
        "events on the topics more than once: {dupes:?}"
    );
}

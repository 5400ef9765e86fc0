//! `custflow serve` against its own `/openapi.json`: schemathesis generates valid and
//! invalid requests for every operation, and the server answers none of them with a 5xx.
//!
//! Needs `CUSTFLOW_PYTHON`: a Python with `schemathesis` (scripts/test.sh creates one).

use std::process::Command;

use crate::{free_port, Server};

#[test]
fn schemathesis_finds_no_server_error() {
    let _turn = crate::HEAVY.blocking_lock();
    let python = std::env::var("CUSTFLOW_PYTHON").unwrap_or_else(|_| {
        panic!("CUSTFLOW_PYTHON must name a Python with schemathesis; scripts/test.sh sets it up")
    });
    custflow_tests::ensure_stack();
    let prefix = format!("openapi-{}.", std::process::id());
    let addr = format!("127.0.0.1:{}", free_port());
    // A processor marks the (empty) deployment's features built, so lookups answer.
    let _processor = Server::start(
        &["process", "--topic-prefix", &prefix],
        &format!("127.0.0.1:{}", free_port()),
        "/metrics",
    );
    // Built before the server starts: its own wait for /readyz would count 503s.
    let ready = custflow_feature_store::keys::Keys::new(prefix.clone()).state_ready();
    let mut redis = redis::Client::open(custflow_tests::redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    crate::eventually(60, "the features marked built", || {
        redis::cmd("EXISTS")
            .arg(&ready)
            .query::<bool>(&mut redis)
            .unwrap()
            .then_some(())
    });
    let _server = Server::start(&["serve", "--topic-prefix", &prefix], &addr, "/readyz");
    let out = Command::new(&python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        // An open event stream never ends; tests/tests/stream.rs covers it.
        .args(["--exclude-path", "/v1/stream/{topic}"])
        .args([
            "--max-examples",
            "40",
            "--seed",
            "20261126",
            "--workers",
            "2",
        ])
        .args(["--request-timeout", "10", "--no-color"])
        // Its example database goes to a scratch folder, not the clone.
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It did test the API (not an empty or unreadable document).
    assert!(report.contains("/v1/customers/{id}/features"), "{report}");
    // The server counted those requests per route template, and none as a 5xx.
    let (status, metrics) = crate::get(&addr, "/metrics");
    assert_eq!(status, 200);
    let route = "route=\"/v1/customers/{id}/features\",status=\"404\"}";
    let not_found = metrics
        .lines()
        .find(|l| l.starts_with("custflow_http_requests_total") && l.contains(route))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(not_found > 0, "{metrics}");
    assert!(!metrics.contains("status=\"5"), "{metrics}");
}

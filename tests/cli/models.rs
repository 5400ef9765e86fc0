//! The model job of `custflow run` as a user starts it, with its default cadence (a refit
//! every 6 hours): a new deployment still gets its first model within a minute of its
//! features being built, `GET /v1/models` says why it was taken, and the rollout to
//! every customer is reported done.

use std::process::Command;

use serde_json::Value;

use crate::{eventually, free_port, get, json_summary, Server};

#[test]
fn run_with_default_flags_fits_its_first_model_and_reports_the_rollout() {
    custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique("models-");
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    let sink = format!("sqlite://{}/sink.db", dir.display());
    let addr = format!("127.0.0.1:{}", free_port());
    // Only what a second deployment on this machine needs: its topics, sink and port.
    let _server = Server::start(
        &["run", "--topic-prefix", &prefix, "--sink", &sink],
        &addr,
        "/readyz",
    );
    // Nothing to fit yet: no model, and the history says so by being empty.
    let (status, body) = get(&addr, "/v1/models");
    assert_eq!(status, 200, "{body}");
    let empty: Value = serde_json::from_str(&body).unwrap();
    assert!(empty["current"].is_null(), "{empty}");
    assert_eq!(
        empty["decisions"].as_array().map(Vec::len),
        Some(0),
        "{empty}"
    );

    let summary = json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["synth", "--customers", "200", "--days", "120", "--json"])
            .args(["--topic-prefix", &prefix]),
    );
    assert!(summary["events"].as_u64().unwrap() > 200, "{summary}");

    // The job retries every 30 s while no model is in use (not every 6 hours).
    let models: Value = eventually(120, "the first model and its rollout", || {
        let (status, body) = get(&addr, "/v1/models");
        let v: Value = serde_json::from_str(&body).ok()?;
        (status == 200 && v["rollout"]["done"] == true).then_some(v)
    });
    let version = models["current"]["version"].as_str().unwrap();
    let first = &models["decisions"][0];
    assert_eq!(first["version"], version, "{models}");
    assert_eq!(first["promoted"], true, "{models}");
    assert_eq!(first["reason"], "the deployment's first model", "{models}");
    let rollout = &models["rollout"];
    assert_eq!(rollout["model"], version, "{rollout}");
    assert_eq!(rollout["progress"], 1.0, "{rollout}");
    assert!(rollout["customers"].as_u64().unwrap() > 0, "{rollout}");
    assert_eq!(
        rollout["partitions"], rollout["partitions_done"],
        "{rollout}"
    );
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        metrics.contains("custflow_model_promotions_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("custflow_model_rollout_partitions_running 0"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

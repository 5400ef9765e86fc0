//! A Redis in cluster mode is refused at start, with the reason, by a command that
//! writes features (`process`) and one that reads them (`features`): custflow writes
//! each batch with one Lua script over keys in many hash slots, which a cluster
//! refuses batch after batch.

use std::process::Command;

use crate::{free_port, Helper};

#[test]
fn a_redis_in_cluster_mode_is_refused_with_the_reason() {
    let brokers = custflow_tests::ensure_stack();
    let dir = std::env::temp_dir().join(custflow_tests::unique("redis-cluster-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _redis = Helper::listening(
        Command::new("redis-server")
            .current_dir(&dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ]),
        port,
    );
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = custflow_tests::unique("redis-cluster-");
    let process = [
        "process",
        "--topic-prefix",
        &prefix,
        "--brokers",
        &brokers,
        "--redis",
        &url,
        "--until-events",
        "1",
    ];
    let features = ["features", "c-1", "--redis", &url];
    for args in [&process[..], &features[..]] {
        // Bounded: without the check, `process` would retry its batches for ever.
        let out = Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_custflow"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} accepted a cluster: {stderr}"
        );
        assert!(
            stderr.contains("runs in cluster mode") && stderr.contains("standalone primary"),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! The Fluvio source against a real local Fluvio cluster (`CUSTFLOW_FLUVIO_HOME`):
//! orders produced into Fluvio reach the `orders` topic exactly once across a SIGKILL of
//! `custflow connect` and a 10 s outage of the cluster, and an invalid record lands in
//! the dead-letter topic with its reason.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custflow_schemas::avro::AvroCodec;
use custflow_schemas::{Event, EventKind, ValidationContext};

use crate::{free_port, get};

const ORDERS: usize = 20_000;

/// A local Fluvio cluster on private ports, stopped and purged when dropped.
struct Cluster {
    home: PathBuf,
    data: PathBuf,
    ports: [u16; 4],
    sc: String,
}

impl Cluster {
    /// Starts a cluster on four free ports. A port found free can be taken before the
    /// SC or SPU binds it (by another test's outgoing connection, from the same range), so
    /// a start that fails is cleaned up and tried again on new ports, three times at most.
    fn start(home: &Path, data: &Path) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let ports = [free_port(), free_port(), free_port(), free_port()];
            let c = Self {
                home: home.to_owned(),
                data: data.to_owned(),
                ports,
                sc: format!("127.0.0.1:{}", ports[0]),
            };
            // A failed start is stopped and purged when `c` drops, before the next try.
            match c.try_up() {
                Ok(()) => return c,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "start-local.sh failed three times:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Starts the cluster again on its ports (after [`Cluster::down`]).
    fn up(&mut self) {
        if let Err(e) = self.try_up() {
            panic!("start-local.sh: {e}");
        }
    }

    fn try_up(&self) -> Result<(), String> {
        let out = Command::new(self.home.join("start-local.sh"))
            .arg(&self.data)
            .args(self.ports.map(|p| p.to_string()))
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn down(&self) {
        let out = Command::new(self.home.join("stop-local.sh"))
            .arg(&self.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn cli(&self) -> Command {
        let mut c = Command::new(self.home.join("bin/fluvio"));
        c.args(["-c", &self.sc]);
        c
    }

    /// Produces `key=value` lines with the Fluvio CLI.
    fn produce(&self, topic: &str, lines: &str) {
        let mut child = self
            .cli()
            .args(["produce", topic, "--key-separator", "="])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a Fluvio test starts with: a cluster of its own, a fresh deployment prefix and a
/// scratch folder; `None` (the test is skipped and says why) without the Fluvio tools.
fn set_up(test: &str, label: &str) -> Option<(Cluster, String, PathBuf)> {
    let home = custflow_tests::optional_tool(
        "CUSTFLOW_FLUVIO_HOME",
        &format!("fluvio::{test}"),
        "a local Fluvio cluster",
    )?;
    let _ = custflow_tests::ensure_stack();
    let prefix = custflow_tests::unique(label);
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).unwrap();
    Some((Cluster::start(&home, &dir.join("fluvio")), prefix, dir))
}

impl Cluster {
    /// Writes `dir/fluvio.json`: the `fluvio-orders` FluvioSource reading `topic` of this
    /// cluster, with the settings in `more`.
    fn source_config(&self, dir: &Path, topic: &str, more: serde_json::Value) -> PathBuf {
        let mut config = serde_json::json!({
            "connector.class": "FluvioSource",
            "fluvio.endpoint": self.sc,
            "fluvio.topic": topic,
        });
        for (k, v) in more.as_object().into_iter().flatten() {
            config[k] = v.clone();
        }
        let path = dir.join("fluvio.json");
        std::fs::write(
            &path,
            serde_json::json!({"name": "fluvio-orders", "config": config}).to_string(),
        )
        .unwrap();
        path
    }

    fn create_topic(&self, topic: &str, partitions: u32) {
        let out = self
            .cli()
            .args(["topic", "create", topic, "-p", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(self.home.join("stop-local.sh"))
            .arg(&self.data)
            .arg("--purge")
            .output();
    }
}

/// A `custflow connect` process, killed when the test ends.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn order_line(i: usize, at: &str) -> String {
    let customer = format!("c{}", i % 997);
    let ulid = ulid::Ulid::from_parts(1_700_000_000_000 + i as u64, i as u128);
    format!(
        "{customer}={}\n",
        serde_json::json!({"event_id": ulid.to_string(), "order_id": format!("fo-{i}"),
            "customer_id": customer, "occurred_at": at, "status": "placed",
            "currency": "EUR", "total": 10.0 + i as f64})
    )
}

fn connect(prefix: &str, addr: &str, config: Option<&Path>, log: &Path, extra: &[&str]) -> Worker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custflow"));
    cmd.args(["connect", "--topic-prefix", prefix, "--connect-http", addr])
        .args(extra)
        .env("CUSTFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(c) = config {
        cmd.arg(c);
    }
    Worker(cmd.spawn().unwrap())
}

/// The task's status, polled until `check` holds.
fn wait_status(w: &mut Worker, addr: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(w.0.try_wait().unwrap().is_none(), "custflow connect exited");
        if std::net::TcpStream::connect(addr).is_ok() {
            let (_, body) = get(addr, "/connectors/fluvio-orders/status");
            let st: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if check(&st["tasks"][0]) {
                return;
            }
            assert!(Instant::now() < deadline, "waited for {what}: {st}");
        }
        assert!(Instant::now() < deadline, "waited for {what}: no status");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fluvio_orders_reach_the_topic_once_across_a_sigkill_and_a_cluster_outage() {
    let Some((mut cluster, prefix, dir)) = set_up(
        "fluvio_orders_reach_the_topic_once_across_a_sigkill_and_a_cluster_outage",
        "flv-",
    ) else {
        return;
    };
    cluster.create_topic("shop-orders", 2);
    let at = custflow_schemas::time::format_rfc3339(custflow_schemas::time::now_ms() - 60_000);
    let half = ORDERS / 2;
    let first: String = (0..half).map(|i| order_line(i, &at)).collect();
    cluster.produce("shop-orders", &first);

    let topic = format!("{prefix}orders");
    let config = cluster.source_config(
        &dir,
        "shop-orders",
        serde_json::json!({
            "topic": topic,
            "errors.tolerance": "all",
            // Small fetches: Fluvio 0.50's consumer skips the record cut off at the end
            // of a fetch, and the source must read every such gap again.
            "fluvio.fetch.max.bytes": "65536",
        }),
    );

    // First run: no periodic offset commit, so what it delivers before the SIGKILL is
    // past the committed offsets; small batches so the kill lands mid-stream.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = connect(
        &prefix,
        &addr,
        Some(&config),
        &dir.join("first.log"),
        &["--offset-flush-ms", "600000", "--batch-max", "500"],
    );
    wait_status(&mut w, &addr, "a quarter of the orders read", |t| {
        t["progress"]["records"].as_u64().unwrap_or(0) >= (half / 4) as u64
    });
    w.0.kill().unwrap(); // SIGKILL
    w.0.wait().unwrap();

    // Second run, from the stored configuration: it finds what the first delivered.
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = connect(&prefix, &addr, None, &dir.join("second.log"), &[]);
    wait_status(&mut w, &addr, "the first half read", |t| {
        t["progress"]["partitions"].as_array().is_some_and(|ps| {
            ps.iter()
                .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                .sum::<u64>()
                == half as u64
        })
    });

    // The cluster goes away for 10 s: the task says it reconnects, and loses nothing.
    cluster.down();
    wait_status(&mut w, &addr, "the status to say it reconnects", |t| {
        t["progress"]["connected"] == false && t["progress"]["reconnecting"]["reason"].is_string()
    });
    std::thread::sleep(Duration::from_secs(10));
    cluster.up();
    let rest: String = (half..ORDERS).map(|i| order_line(i, &at)).collect();
    cluster.produce(
        "shop-orders",
        &format!("{rest}c1={{\"customer_id\": \"c1\"}}\n"),
    );
    wait_status(&mut w, &addr, "every record read after the outage", |t| {
        t["progress"]["connected"] == true
            && t["progress"]["partitions"].as_array().is_some_and(|ps| {
                ps.iter()
                    .map(|p| p["next_offset"].as_u64().unwrap_or(0))
                    .sum::<u64>()
                    == ORDERS as u64 + 1
            })
    });

    // Every order once, by content; the invalid record in the dead-letter topic.
    let msgs = custflow_tests::read_topic(&topic, ORDERS);
    let codec = AvroCodec::builtin();
    let ctx = ValidationContext::now();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, _, v) in &msgs {
        let Event::Order(o) = codec.decode(EventKind::Order, v, &ctx).unwrap() else {
            panic!("not an order");
        };
        let i: usize = o.order_id.strip_prefix("fo-").unwrap().parse().unwrap();
        assert!((o.total - (10.0 + i as f64)).abs() < 1e-9, "{o:?}");
        *seen.entry(o.order_id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "orders on the topic more than once: {twice:?}"
    );
    assert_eq!(seen.len(), ORDERS, "orders missing from the topic");
    let (_, status) = get(&addr, "/connectors/fluvio-orders/status");
    eprintln!("status after the run: {status}");
    let dlq = custflow_tests::read_topic(&format!("{prefix}custflow-dlq"), 1);
    assert_eq!(dlq.len(), 1, "{status}");
    let reason = dlq[0]
        .0
        .get("custflow.error.message")
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("event_id"), "{:?}", dlq[0].0);
    assert!(
        dlq[0]
            .0
            .get("custflow.source.location")
            .is_some_and(|l| l.starts_with("shop-orders/")),
        "{:?}",
        dlq[0].0
    );
    drop(w);
    // The cluster's pid files are in `dir`: stop it before the folder goes.
    drop(cluster);
    std::fs::remove_dir_all(&dir).ok();
}

/// The demo's pipeline on Fluvio: `synth --output fluvio://…` writes a history into a
/// Fluvio topic, a FluvioSource with `event.type=tagged` puts each event on its Kafka
/// topic once, and `run --fluvio-sink` publishes the scores to another Fluvio topic,
/// keyed by customer id.
#[test]
fn a_history_from_fluvio_is_scored_and_the_scores_reach_fluvio() {
    let Some((cluster, prefix, dir)) = set_up(
        "a_history_from_fluvio_is_scored_and_the_scores_reach_fluvio",
        "flvrun-",
    ) else {
        return;
    };
    cluster.create_topic("shop-events", 2);
    cluster.create_topic("scores", 1);
    let summary = crate::json_summary(
        Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["synth", "--customers", "200", "--days", "120", "--json"])
            .args(["--output", &format!("fluvio://{}/shop-events", cluster.sc)]),
    );
    let events = summary["events"].as_u64().unwrap();
    assert!(events > 200, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");

    let config = cluster.source_config(
        &dir,
        "shop-events",
        serde_json::json!({"event.type": "tagged"}),
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let mut w = connect(&prefix, &addr, Some(&config), &dir.join("connect.log"), &[]);
    wait_status(&mut w, &addr, "every event read", |t| {
        t["progress"]["records"].as_u64() == Some(events)
    });
    // Each kind on its topic, every event once.
    let mut ids = std::collections::HashSet::new();
    let mut total = 0;
    for kind in [EventKind::Customer, EventKind::Order, EventKind::Activity] {
        let msgs = custflow_tests::read_topic(&format!("{prefix}{}", kind.topic()), 1);
        let codec = AvroCodec::builtin();
        for (_, _, v) in &msgs {
            let e = codec.decode_unchecked(kind, v).unwrap();
            ids.insert(e.event_id().to_owned());
        }
        total += msgs.len() as u64;
    }
    assert_eq!(total, events);
    assert_eq!(ids.len() as u64, events);
    drop(w);

    let sink = format!("sqlite://{}/sink.db", dir.display());
    let http = format!("127.0.0.1:{}", free_port());
    let target = format!("fluvio://{}/scores", cluster.sc);
    let _run = crate::Server::start(
        &[
            "run",
            "--topic-prefix",
            &prefix,
            "--sink",
            &sink,
            "--fluvio-sink",
            &target,
        ],
        &http,
        "/readyz",
    );
    let scored = custflow_tests::eventually(120, "scores on the Fluvio topic", || {
        let out = cluster
            .cli()
            .args(["consume", "scores", "-B", "-d", "-F", "{{key}}\t{{value}}"])
            .output()
            .ok()?;
        let lines: Vec<(String, serde_json::Value)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('\t')?;
                Some((k.to_owned(), serde_json::from_str(v).ok()?))
            })
            .collect();
        // Scores and segment changes come from two topics in no set order: wait for
        // both kinds, not for a count that segment changes alone can reach.
        let has_score = lines
            .iter()
            .any(|(_, v)| v["type"] == "score" && v["clv_12m"].is_number());
        (lines.len() >= 50 && has_score).then_some(lines)
    });
    for (key, v) in &scored {
        assert_eq!(v["customer_id"].as_str(), Some(key.as_str()), "{v}");
        assert!(v["type"] == "score" || v["type"] == "segment_change", "{v}");
    }

    drop(cluster);
    std::fs::remove_dir_all(&dir).ok();
}

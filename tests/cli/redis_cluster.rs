//! Redis Cluster: a real local cluster of three redis-server processes (started here,
//! the 16,384 slots spread over them by `redis-cli --cluster create`). A processor writes
//! one deployment's features into it while events flow, is killed with `kill -9` and
//! restarted; the same events go to a second deployment kept in the standalone Redis.
//! Every customer's state equals a recomputation from the topics, the keys are spread
//! over every node, the sales rollups summed over the partitions' shards equal the
//! standalone ones, and a lookup through the customer's locator answers what the
//! standalone lookup does.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use custflow_feature_store::keys::Keys;
use custflow_feature_store::sales::{self, Grain};
use custflow_schemas::topics::Topics;

use crate::crash::{assert_same, counter, deployment, spawn_with, Deployment};
use crate::{free_port, Helper};

/// A Redis Cluster of `nodes` primaries on free ports, removed when dropped.
struct Cluster {
    ports: Vec<u16>,
    dir: PathBuf,
    nodes: Vec<Option<Helper>>,
}

impl Cluster {
    fn start(nodes: usize) -> Self {
        let dir = std::env::temp_dir().join(custflow_tests::unique("redis-cluster-"));
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let mut cluster = Self {
            ports,
            dir,
            nodes: Vec::new(),
        };
        for i in 0..nodes {
            let node = cluster.node(i);
            cluster.nodes.push(Some(node));
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (Debian's redis-tools) is needed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok();
        cluster
    }

    /// Starts node `i` (nothing kept on disk but the cluster's own nodes.conf).
    fn node(&self, i: usize) -> Helper {
        let port = self.ports[i];
        let node_dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        Helper::listening(
            Command::new("redis-server")
                .current_dir(&node_dir)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no"]),
            port,
        )
    }

    /// Kills node `i` and starts it again: it keeps its slots and has lost its data.
    fn restart_empty(&mut self, i: usize) {
        self.nodes[i] = None;
        self.nodes[i] = Some(self.node(i));
        self.wait_ok();
    }

    /// Waits until every node knows the whole slot map (a client routes by it).
    fn wait_ok(&self) {
        crate::eventually(60, "the cluster to become ok", || {
            self.ports
                .iter()
                .all(|p| {
                    self.cli(*p, &["CLUSTER", "INFO"])
                        .contains("cluster_state:ok")
                })
                .then_some(())
        });
    }

    /// The keys node `port` holds.
    fn keys_on(&self, port: u16) -> u64 {
        self.cli(port, &["DBSIZE"]).trim().parse().unwrap()
    }

    /// What `redis-cli -p port args…` prints.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports[0])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `custflow features ID --json` answers for deployment `prefix` in the Redis at
/// `redis`, as of `as_of`.
fn lookup(prefix: &str, redis: &str, id: &str, as_of: i64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
        .args(["features", id, "--json", "--topic-prefix", prefix])
        .args(["--redis", redis, "--as-of", &as_of.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "features {id} on {redis}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_on_a_redis_cluster_equals_one_on_a_standalone_redis() {
    const N: usize = 20_000;
    let _turn = crate::HEAVY.lock().await;
    let cluster = Cluster::start(3);
    let url = cluster.url();
    let mut on_cluster = deployment("rcluster-", 23, 4_000, N).await;
    // The same events for a deployment kept in the standalone Redis.
    let prefix = custflow_tests::unique("rstandalone-") + ".";
    let names = Topics::new(prefix.clone());
    custflow_kafka::ensure_topics(&on_cluster.brokers, &names, Duration::from_secs(20))
        .await
        .unwrap();
    // Profiles first, applied by both before any order is sent: the loyalty rollups of
    // orders applied long before their customer's profile depend on how the topics
    // interleave on arrival (docs/deviations.md, "Sales rollups"), which differs between
    // two processors reading a backlog.
    on_cluster
        .events
        .sort_by_key(|e| !matches!(e, custflow_schemas::Event::Customer(_)));
    let profiles = on_cluster
        .events
        .iter()
        .take_while(|e| matches!(e, custflow_schemas::Event::Customer(_)))
        .count();
    let rest = on_cluster.events.split_off(profiles);
    let mut standalone = Deployment {
        brokers: on_cluster.brokers.clone(),
        prefix,
        names,
        now: on_cluster.now,
        events: on_cluster.events.clone(),
    };

    let first_http = format!("127.0.0.1:{}", free_port());
    // Processes of the test are killed when dropped, however the test ends.
    let first = spawn_with(
        &on_cluster.prefix,
        &on_cluster.brokers,
        &first_http,
        &["--redis", &url],
    );
    let _single = spawn_with(&standalone.prefix, &standalone.brokers, "127.0.0.1:0", &[]);
    on_cluster.produce(profiles, Duration::ZERO).await.unwrap();
    standalone.produce(profiles, Duration::ZERO).await.unwrap();
    on_cluster.applied_in(profiles, &url).await;
    standalone.applied(profiles).await;

    standalone.events = rest.clone();
    on_cluster.events = rest;
    let producing = on_cluster.produce(500, Duration::from_millis(100));
    let producing_standalone = standalone.produce(500, Duration::from_millis(100));
    // Killed while it works on the cluster (orders applied, not all), restarted.
    custflow_tests::wait_until(
        Duration::from_secs(120),
        "orders applied on the cluster",
        || {
            let up = std::net::TcpStream::connect(&first_http).is_ok();
            let applied = if up {
                counter(&first_http, "custflow_events_applied_total")
            } else {
                0
            };
            async move { (applied > profiles as u64).then_some(()) }
        },
    )
    .await;
    drop(first); // kill -9
    let _second = spawn_with(
        &on_cluster.prefix,
        &on_cluster.brokers,
        "127.0.0.1:0",
        &["--redis", &url],
    );
    producing.await.unwrap();
    producing_standalone.await.unwrap();

    let (reference, ids, states) = on_cluster.applied_in(N, &url).await;
    assert_same(&reference, &ids, &states, on_cluster.now);
    let (reference_s, ids_s, states_s) = standalone.applied(N).await;
    assert_same(&reference_s, &ids_s, &states_s, on_cluster.now);

    // The partitions' slots are spread over the three primaries, and so are the keys.
    for port in &cluster.ports {
        assert!(cluster.keys_on(*port) > 0, "node {port} holds no key");
    }

    // Sales rollups and cohorts, summed over the partitions' shards, equal the
    // standalone deployment's.
    let keys = Keys::new(on_cluster.prefix.clone()).in_cluster(true);
    let mut conn = custflow_tests::redis_conn_at(&url).await;
    let standalone_keys = Keys::new(standalone.prefix.clone());
    let mut single_conn = custflow_tests::redis_conn().await;
    let (first_day, last_day) = (
        custflow_feature_store::state::day_of(on_cluster.now) - 400,
        custflow_feature_store::state::day_of(on_cluster.now) + 1,
    );
    let mut compared = 0;
    for grain in Grain::ALL {
        let starts = sales::period_starts(grain, first_day, last_day).unwrap();
        for chunk in starts.chunks(sales::MAX_PERIODS) {
            let got = sales::rows(&mut conn, &keys, grain, chunk, None)
                .await
                .unwrap();
            let want = sales::rows(&mut single_conn, &standalone_keys, grain, chunk, None)
                .await
                .unwrap();
            let differ: Vec<String> = got
                .iter()
                .zip(&want)
                .filter(|(g, w)| g != w)
                .take(3)
                .map(|(g, w)| format!("cluster {g:?}\nstandalone {w:?}"))
                .collect();
            assert!(
                differ.is_empty(),
                "{grain:?} rollups differ:\n{}",
                differ.join("\n")
            );
            assert_eq!(got.len(), want.len(), "{grain:?} rollup rows");
            compared += got.len();
        }
    }
    assert!(compared > 100, "only {compared} rollup rows");
    let cohorts = sales::cohorts(&mut conn, &keys).await.unwrap();
    assert!(!cohorts.is_empty());
    assert_eq!(
        cohorts,
        sales::cohorts(&mut single_conn, &standalone_keys)
            .await
            .unwrap()
    );
    let starts = sales::period_starts(Grain::Month, first_day, last_day).unwrap();
    for value in ["member", "non_member", "unknown"] {
        let got = sales::distinct_over(&mut conn, &keys, Grain::Month, &starts, "loyalty", value)
            .await
            .unwrap();
        let want = sales::distinct_over(
            &mut single_conn,
            &standalone_keys,
            Grain::Month,
            &starts,
            "loyalty",
            value,
        )
        .await
        .unwrap();
        assert_eq!(got, want, "distinct {value} customers");
    }

    // A lookup finds the customer's partition through its locator.
    for id in ids.iter().take(5) {
        assert_eq!(
            lookup(&on_cluster.prefix, &url, id, on_cluster.now),
            lookup(
                &standalone.prefix,
                &custflow_tests::redis_url(),
                id,
                on_cluster.now
            ),
            "customer {id}"
        );
    }
}

/// A node that restarts empty (no replica, nothing on disk) loses the state of the
/// partitions whose slots it serves, and locators of customers of other partitions: the
/// processor notices the missing markers of those partitions and replays them, and every
/// customer's state equals a recomputation from the topics again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_restarted_empty_has_its_partitions_replayed() {
    const N: usize = 8_000;
    const M: usize = 2_000;
    let _turn = crate::HEAVY.lock().await;
    let mut cluster = Cluster::start(3);
    let url = cluster.url();
    let mut d = deployment("rclost-", 29, 2_000, N + M).await;
    let later = d.events.split_off(N);
    let _processor = spawn_with(&d.prefix, &d.brokers, "127.0.0.1:0", &["--redis", &url]);
    d.produce(N, Duration::ZERO).await.unwrap();
    d.applied_in(N, &url).await;

    // The node with the most keys holds partitions' state.
    let (busiest, before) = (0..cluster.ports.len())
        .map(|i| (i, cluster.keys_on(cluster.ports[i])))
        .max_by_key(|(_, n)| *n)
        .unwrap();
    cluster.restart_empty(busiest);
    assert_eq!(
        cluster.keys_on(cluster.ports[busiest]),
        0,
        "it kept {before} keys"
    );

    // More events make the processor load the lost partitions' markers.
    d.events = later;
    d.produce(M, Duration::ZERO).await.unwrap();
    let (reference, ids, states) = d.applied_in(N + M, &url).await;
    assert_same(&reference, &ids, &states, d.now);
    assert!(cluster.keys_on(cluster.ports[busiest]) > 0);
}

/// The customer states of deployment `keys` in the Redis (or cluster) at `url`.
async fn all_states(
    url: &str,
    keys: &Keys,
) -> Vec<(String, custflow_feature_store::state::CustomerState)> {
    let mut conn = custflow_tests::redis_conn_at(url).await;
    let keys = keys.clone().in_cluster(conn.is_cluster());
    let mut scan =
        custflow_feature_store::conn::Scan::new(&mut conn, &keys.features_pattern(), 500)
            .await
            .unwrap();
    let mut ids = Vec::new();
    while let Some(page) = scan.next_page(&mut conn).await.unwrap() {
        ids.extend(
            page.iter()
                .filter_map(|k| keys.customer_of(k))
                .map(str::to_owned),
        );
    }
    let states = custflow_tests::read_states_at(url, &keys, &ids).await;
    ids.into_iter()
        .zip(states)
        .filter_map(|(id, s)| Some((id, s?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custflow_run_scores_and_serves_from_a_redis_cluster() {
    let _turn = crate::HEAVY.lock().await;
    let cluster = Cluster::start(3);
    let url = cluster.url();
    // Started once /readyz answers: the ready key is published on the cluster.
    let run = crate::ScoredRun::start("rcrun-", &["--redis", &url]);
    let keys = Keys::new(run.prefix.clone());

    // Every customer with a purchase scored, and the segment counts (one share per input
    // partition, summed by /v1/segments) agree with the customers' own states.
    let (states, counts) = custflow_tests::wait_until(
        Duration::from_secs(180),
        "every customer with orders scored and counted",
        || {
            let (url, keys, addr) = (url.clone(), keys.clone(), run.addr.clone());
            async move {
                let states = all_states(&url, &keys).await;
                // Customers with a purchase day are in the last-order index, which the
                // first model's rescoring pass walks.
                let buyers: Vec<_> = states
                    .iter()
                    .filter(|(_, s)| {
                        custflow_feature_store::features::last_purchase_at(s).is_some()
                    })
                    .collect();
                let scored = states.iter().filter(|(_, s)| s.segments.is_some()).count();
                let (status, body) = crate::get(&addr, "/v1/segments");
                let counts: serde_json::Value = serde_json::from_str(&body).ok()?;
                let counted = counts["customers_scored"].as_u64()? as usize;
                let all_scored = buyers.iter().all(|(_, s)| s.segments.is_some());
                (status == 200 && buyers.len() > 100 && all_scored && counted == scored)
                    .then_some((states, counts))
            }
        },
    )
    .await;
    for tier in custflow_models::rfm::TIERS {
        let want = states
            .iter()
            .filter(|(_, s)| s.segments.as_ref().is_some_and(|m| m.value_tier == *tier))
            .count() as u64;
        assert_eq!(
            counts["counts"]["value_tier"][tier].as_u64(),
            Some(want),
            "tier {tier}"
        );
    }
    let at_risk: u64 = counts["counts"]["at_risk"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(serde_json::Value::as_u64)
        .sum();
    assert_eq!(
        at_risk as usize,
        states.iter().filter(|(_, s)| s.segments.is_some()).count()
    );

    // Lookups through the locators, and an unknown customer looked for everywhere.
    let ids: Vec<&str> = states.iter().take(20).map(|(id, _)| id.as_str()).collect();
    let mut asked: Vec<&str> = ids.clone();
    asked.push("nobody-at-all");
    let body = serde_json::json!({ "customer_ids": asked }).to_string();
    let (status, answer) = crate::request(&run.addr, "POST", "/v1/features:batch", &body);
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let customers = answer["customers"].as_array().unwrap();
    assert_eq!(customers.len(), asked.len());
    for (c, id) in customers.iter().zip(&asked) {
        assert_eq!(c["customer_id"].as_str(), Some(*id), "{c}");
        if *id == "nobody-at-all" {
            assert_eq!(c["error"]["code"].as_str(), Some("not_found"), "{c}");
        } else {
            assert!(c["features"].is_object(), "{c}");
        }
    }
    let (status, one) = crate::get(&run.addr, &format!("/v1/customers/{}/features", ids[0]));
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        crate::get(&run.addr, "/v1/customers/nobody-at-all/features").0,
        404
    );

    // The scores reached the SQL sink too.
    crate::eventually(60, "a score row in the sink", || {
        let out = Command::new(env!("CARGO_BIN_EXE_custflow"))
            .args(["scores", ids[0], "--json", "--topic-prefix", &run.prefix])
            .args(["--sink", &run.sink])
            .output()
            .unwrap();
        out.status.success().then_some(())
    });
    drop(run.server);
    let _ = std::fs::remove_dir_all(&run.dir);
}

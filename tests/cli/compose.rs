//! The compose cluster (`compose/`), checked without a Docker engine: every service,
//! port, mounted file and setting it names exists and agrees with custflow's own
//! configuration (its flags and environment variables, its HTTP port, the metrics it
//! exports) and with the other services' configuration files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compose")
}

/// A YAML file as JSON, with `<<` merge keys applied.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap()
}

/// `host:port` (after an optional `scheme://` and `user@`, before any path) split.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url:?} names no port"));
    (host.to_owned(), port.parse().unwrap())
}

/// The port part of a listener such as `PLAINTEXT://:9092` or `0.0.0.0:8080`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every `custflow_*` name in custflow's sources: the metrics it can export.
fn metric_names() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = BTreeSet::new();
    let mut stack: Vec<PathBuf> = [
        "src",
        "schemas",
        "ingest",
        "stream-processors",
        "feature-store",
        "connectors",
        "http",
        "kafka",
        "metrics",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            let src = std::fs::read_to_string(&p).unwrap();
            names.extend(identifiers(&src).filter(|w| w.starts_with("custflow_")));
        }
    }
    names
}

fn identifiers(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
}

#[test]
fn the_compose_cluster_agrees_with_custflow_and_with_itself() {
    let compose = yaml(&dir().join("docker-compose.yml"));
    let services = compose["services"].as_object().unwrap();
    for name in [
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "redis-1",
        "redis-2",
        "redis-3",
        "redis-4",
        "redis-5",
        "redis-6",
        "redis-cluster",
        "postgres",
        "otel-collector",
        "prometheus",
        "grafana",
        "custflow",
        "custflow-api",
        "custflow-topics",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let env = |svc: &str, key: &str| -> String { text(&services[svc]["environment"][key]) };

    // Every service has an image; built ones name a Dockerfile that exists.
    for (name, s) in services {
        assert!(s["image"].is_string(), "{name} has no image");
        if let Some(b) = s.get("build") {
            let context = dir().join(text(&b["context"]));
            assert!(context.join("Cargo.toml").exists(), "{name}: build context");
            assert!(
                context.join(text(&b["dockerfile"])).exists(),
                "{name}: Dockerfile"
            );
        }
        // Bind mounts: the files and folders exist.
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = text(v);
            if let Some(local) = v.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(dir().join(local).exists(), "{name}: {local} does not exist");
            } else {
                let volume = v.split(':').next().unwrap();
                assert!(
                    compose["volumes"].get(volume).is_some(),
                    "{name}: volume {volume} is not declared"
                );
            }
        }
        for c in s["configs"].as_array().into_iter().flatten() {
            let source = text(&c["source"]);
            assert!(
                compose["configs"].get(&source).is_some(),
                "{name}: config {source}"
            );
        }
    }

    // Host ports are not taken twice.
    let mut host_ports = BTreeMap::new();
    for (name, s) in services {
        for p in s["ports"].as_array().into_iter().flatten() {
            let host = text(p).split(':').next().unwrap().to_owned();
            assert!(
                host_ports.insert(host.clone(), name).is_none(),
                "host port {host} twice"
            );
        }
    }

    // Kafka: three brokers in KRaft mode, each a controller in the quorum it names.
    let mut listeners = BTreeSet::new();
    let voters = env("kafka-1", "KAFKA_CONTROLLER_QUORUM_VOTERS");
    for (i, name) in ["kafka-1", "kafka-2", "kafka-3"].iter().enumerate() {
        assert_eq!(
            env(name, "KAFKA_PROCESS_ROLES"),
            "broker,controller",
            "{name}"
        );
        assert_eq!(env(name, "KAFKA_NODE_ID"), (i + 1).to_string(), "{name}");
        assert_eq!(env(name, "KAFKA_CONTROLLER_QUORUM_VOTERS"), voters);
        let own = env(name, "KAFKA_LISTENERS");
        let controller_port = own
            .split(',')
            .find_map(|l| l.strip_prefix("CONTROLLER://"))
            .map(port_of)
            .unwrap();
        assert!(
            voters
                .split(',')
                .any(|v| v == format!("{}@{name}:{controller_port}", i + 1)),
            "{name} is not in the quorum {voters}"
        );
        let advertised = env(name, "KAFKA_ADVERTISED_LISTENERS");
        let (host, port) = host_port(&advertised);
        assert_eq!(&host, name, "{name} advertises another host");
        assert!(
            own.contains(&format!("PLAINTEXT://:{port}")),
            "{name} does not listen on {port}"
        );
        listeners.insert(format!("{host}:{port}"));
    }
    assert!(
        env("kafka-1", "KAFKA_DEFAULT_REPLICATION_FACTOR")
            .parse::<u32>()
            .unwrap()
            <= 3
    );

    // Redis Cluster: six nodes in cluster mode, each announcing its own host name, and
    // the one-shot service that creates the cluster naming each of them once, with one
    // replica per primary (three primaries).
    let mut cluster_nodes = BTreeSet::new();
    for i in 1..=6 {
        let name = format!("redis-{i}");
        let cmd: Vec<String> = services[&name]["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no command"))
            .iter()
            .map(text)
            .collect();
        let arg = |flag: &str| {
            let at = cmd.iter().position(|a| a == flag);
            at.and_then(|at| cmd.get(at + 1)).cloned()
        };
        assert_eq!(arg("--cluster-enabled").as_deref(), Some("yes"), "{name}");
        assert_eq!(arg("--cluster-announce-hostname"), Some(name.clone()));
        assert_eq!(text(&services[&name]["hostname"]), name);
        let port = arg("--port").unwrap_or_else(|| panic!("{name} names no port"));
        cluster_nodes.insert(format!("{name}:{port}"));
    }
    let create: String = services["redis-cluster"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .collect();
    let named: Vec<&str> = create
        .split_whitespace()
        .filter(|w| w.starts_with("redis-") && w.contains(':'))
        .collect();
    let named_set: BTreeSet<String> = named.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(named.len(), named_set.len(), "a node named twice: {create}");
    assert_eq!(
        named_set, cluster_nodes,
        "the nodes the cluster is created from"
    );
    assert!(create.contains("--cluster-replicas 1"), "{create}");
    for i in 1..=6 {
        assert!(
            services["redis-cluster"]["depends_on"]
                .get(format!("redis-{i}"))
                .is_some(),
            "redis-cluster starts before redis-{i}"
        );
    }

    // custflow's services: their commands and settings are custflow's own.
    let exe = env!("CARGO_BIN_EXE_custflow");
    let main_rs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs")).unwrap();
    // Every command reads every setting from the environment, also one it has no flag
    // for; `run` has the flags of all of them, so its help names every variable.
    let settings = Command::new(exe).args(["run", "--help"]).output().unwrap();
    let settings = String::from_utf8_lossy(&settings.stdout).to_string();
    let http_port = port_of(&env("custflow", "CUSTFLOW_HTTP_ADDR"));
    for name in ["custflow", "custflow-api", "custflow-topics"] {
        let s = &services[name];
        assert_eq!(text(&s["build"]["dockerfile"]), "compose/Dockerfile");
        let command: Vec<String> = s["command"].as_array().unwrap().iter().map(text).collect();
        let help = Command::new(exe)
            .args(&command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            help.status.success(),
            "{name}: `custflow {command:?}` is not a custflow command"
        );
        let help = String::from_utf8_lossy(&help.stdout).to_string();
        for key in s["environment"].as_object().unwrap().keys() {
            let names = |help: &str| {
                help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]"))
            };
            assert!(
                names(&help) || names(&settings) || main_rs.contains(&format!("\"{key}\"")),
                "{name}: custflow does not read {key}"
            );
        }
        let brokers: BTreeSet<String> = env(name, "CUSTFLOW_BROKERS")
            .split(',')
            .map(str::to_owned)
            .collect();
        assert_eq!(brokers, listeners, "{name}: brokers");
        // custflow's Redis is a node of the cluster the redis-cluster service creates.
        let (redis_host, redis_port) = host_port(&env(name, "CUSTFLOW_REDIS_URL"));
        assert!(
            cluster_nodes.contains(&format!("{redis_host}:{redis_port}")),
            "{name}: Redis"
        );
        let sink = env(name, "CUSTFLOW_SINK_URL");
        let (pg_host, pg_port) = host_port(&sink);
        assert_eq!((pg_host.as_str(), pg_port), ("postgres", 5432));
        assert!(sink.starts_with(&format!("postgres://{}:", env("postgres", "POSTGRES_USER"))));
        assert!(sink.ends_with(&format!("/{}", env("postgres", "POSTGRES_DB"))));
        assert_eq!(port_of(&env(name, "CUSTFLOW_HTTP_ADDR")), http_port);
        assert_eq!(env(name, "CUSTFLOW_REPLICATION_FACTOR"), "3");
    }
    assert!(services["custflow"]["expose"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| text(p) == http_port.to_string()));
    assert!(services["custflow-api"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| text(p).ends_with(&format!(":{http_port}"))));
    let replicas = services["custflow"]["deploy"]["replicas"].as_u64().unwrap();
    let partitions = custflow_schemas::topics::ALL[0].partitions as u64;
    assert!(
        (1..=partitions).contains(&replicas),
        "more replicas than partitions"
    );

    // Traces: custflow → collector (its OTLP/HTTP receiver) → Jaeger.
    let (otel_host, otel_port) = host_port(&env("custflow", "CUSTFLOW_OTLP_ENDPOINT"));
    assert_eq!(otel_host, "otel-collector");
    let collector_cmd = text(&services["otel-collector"]["command"][0]);
    let collector_path = collector_cmd.strip_prefix("--config=").unwrap();
    let collector_file = services["otel-collector"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(text)
        .find_map(|v| {
            let mut parts = v.split(':');
            let (local, target) = (parts.next()?, parts.next()?);
            (target == collector_path).then(|| dir().join(local))
        })
        .expect("the collector's config file is mounted where --config says");
    let collector = yaml(&collector_file);
    let receiver = text(&collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]);
    assert_eq!(port_of(&receiver), otel_port, "collector OTLP/HTTP port");
    for exporter in collector["service"]["pipelines"]["traces"]["exporters"]
        .as_array()
        .unwrap()
    {
        let e = &collector["exporters"][text(exporter)];
        assert!(e.is_object(), "exporter {exporter} not defined");
        let (host, _) = host_port(&text(&e["endpoint"]));
        assert!(
            services.contains_key(&host),
            "exporter {exporter} sends to unknown {host}"
        );
    }

    // Prometheus scrapes every custflow process on its HTTP port, with the mounted key.
    let prometheus = yaml(&dir().join("prometheus.yml"));
    let key_target = text(&services["prometheus"]["configs"][0]["target"]);
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        assert_eq!(text(&job["authorization"]["credentials_file"]), key_target);
        for sd in job["dns_sd_configs"].as_array().into_iter().flatten() {
            assert_eq!(sd["port"].as_u64(), Some(u64::from(http_port)));
            for n in sd["names"].as_array().unwrap() {
                assert!(services.contains_key(&text(n)), "scrape of unknown {n}");
            }
        }
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            for t in sc["targets"].as_array().unwrap() {
                let (host, port) = host_port(&text(t));
                assert!(services.contains_key(&host), "scrape of unknown {host}");
                assert_eq!(port, http_port);
            }
        }
    }

    // Grafana: the provisioned data source is Prometheus, and the dashboard's panels use
    // it and query metrics custflow exports, covering throughput, lag, freshness, errors
    // and drift.
    let datasources = yaml(&dir().join("grafana/provisioning/datasources/prometheus.yml"));
    let ds = &datasources["datasources"][0];
    let (prom_host, prom_port) = host_port(&text(&ds["url"]));
    assert_eq!(prom_host, "prometheus");
    assert!(services["prometheus"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| text(p).ends_with(&format!(":{prom_port}"))));
    let providers = yaml(&dir().join("grafana/provisioning/dashboards/custflow.yml"));
    let dashboards_at = text(&providers["providers"][0]["options"]["path"]);
    assert!(services["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| text(v) == format!("./grafana/dashboards:{dashboards_at}:ro")));
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("grafana/dashboards/custflow.json")).unwrap(),
    )
    .unwrap();
    let known = metric_names();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], ds["uid"], "{}", panel["title"]);
        for t in panel["targets"].as_array().unwrap() {
            for name in identifiers(&text(&t["expr"])).filter(|w| w.starts_with("custflow_")) {
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_owned();
                // A name built from a prefix (`custflow_churn_realised_{name}`) counts by
                // its prefix.
                let exported = known.contains(&base)
                    || known
                        .iter()
                        .any(|k| k.ends_with('_') && base.starts_with(k.as_str()));
                assert!(exported, "{}: custflow exports no {base}", panel["title"]);
                used.insert(base);
            }
        }
    }
    for needed in [
        "custflow_events_applied_total",
        "custflow_consumer_lag",
        "custflow_freshness_seconds",
        "custflow_events_dead_lettered_total",
        "custflow_model_input_psi",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }

    // Every secret the file requires is in the example environment file.
    let example = std::fs::read_to_string(dir().join(".env.example")).unwrap();
    let raw = std::fs::read_to_string(dir().join("docker-compose.yml")).unwrap();
    for var in raw
        .split("${")
        .skip(1)
        .filter_map(|r| r.split([':', '}', '-']).next())
    {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} is not in .env.example"
        );
    }
}

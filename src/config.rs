//! Configuration: flags, then `CUSTFLOW_*` environment variables, then `custflow.toml`,
//! then defaults that work on a fresh machine (DESIGN §8).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use custflow_schemas::topics::Topics;

/// Settings every command shares.
#[derive(Debug, Args)]
pub(crate) struct Config {
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "CUSTFLOW_BROKERS")]
    brokers: Option<String>,
    /// Redis URL (redis:// or rediss://).
    #[arg(long, global = true, env = "CUSTFLOW_REDIS_URL")]
    redis: Option<String>,
    /// SQL sink URL (sqlite://path or postgres://…).
    #[arg(long, global = true, env = "CUSTFLOW_SINK_URL")]
    sink: Option<String>,
    /// HTTP listen address.
    #[arg(long, global = true, env = "CUSTFLOW_HTTP_ADDR")]
    http: Option<String>,
    /// Prefix for every topic name, so several deployments can share a broker.
    #[arg(long, global = true, env = "CUSTFLOW_TOPIC_PREFIX")]
    topic_prefix: Option<String>,
    /// Processor clock: `wall` or `event`.
    #[arg(long, global = true, env = "CUSTFLOW_CLOCK")]
    clock: Option<String>,
    /// API keys: `KEY=scope+scope;…` (scopes events:write, features:read, admin; a key may
    /// be given as `sha256:HEX`). Off by default on loopback, required on other addresses.
    #[arg(long, global = true, env = "CUSTFLOW_API_KEYS", hide_env_values = true)]
    api_keys: Option<String>,
    /// Requests per second each API key may make (bursts of one second's worth); 0 =
    /// unlimited. Applies when API keys are configured.
    #[arg(long, global = true, env = "CUSTFLOW_RATE_LIMIT")]
    rate_limit: Option<String>,
    /// Event streams (`/v1/stream/*`) each API key may hold open; 0 = unlimited.
    #[arg(long, global = true, env = "CUSTFLOW_MAX_STREAMS")]
    max_streams: Option<String>,
    /// Webhook for segment-change alerts (`run`, `demo`); off when empty.
    #[arg(long, global = true, env = "CUSTFLOW_ALERT_WEBHOOK")]
    alert_webhook: Option<String>,
    /// Which changes alert: `field=value,…` (fields dimension, previous, current,
    /// value_tier), several rules separated by `;`.
    #[arg(long, global = true, env = "CUSTFLOW_ALERT_RULE")]
    alert_rule: Option<String>,
    /// Customer attributes that are never stored, comma-separated (for example
    /// `email,phone`): dropped from customer events at the REST endpoint and in
    /// connectors, before anything is written to a topic.
    #[arg(long, global = true, env = "CUSTFLOW_DENY_ATTRIBUTES")]
    deny_attributes: Option<String>,
    /// Replicas of each partition of the topics custflow creates (3 on a cluster of three
    /// brokers; the local broker has one).
    #[arg(long, global = true, env = "CUSTFLOW_REPLICATION_FACTOR")]
    replication_factor: Option<String>,
    /// OpenTelemetry collector (OTLP over HTTP, e.g. `http://127.0.0.1:4318`): traces of
    /// REST ingest → processor → SQL sink are exported there. Off when empty.
    #[arg(long, global = true, env = "CUSTFLOW_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of new traces kept (0 to 1); a request's sampled `traceparent` is always
    /// followed.
    #[arg(long, global = true, env = "CUSTFLOW_TRACE_SAMPLE")]
    trace_sample: Option<String>,
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "CUSTFLOW_CONFIG",
        default_value = "custflow.toml"
    )]
    config: PathBuf,
    /// Print a machine-readable JSON summary as the last line of stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// Configuration after every source was consulted.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) brokers: String,
    pub(crate) redis: String,
    pub(crate) sink: String,
    pub(crate) http: String,
    pub(crate) topic_prefix: String,
    pub(crate) clock: String,
    pub(crate) api_keys: String,
    pub(crate) limits: custflow_http::auth::Limits,
    pub(crate) alert_webhook: String,
    pub(crate) alert_rule: String,
    pub(crate) deny: custflow_schemas::DenyList,
    pub(crate) replication_factor: i32,
    pub(crate) otlp_endpoint: String,
    pub(crate) trace_sample: f64,
    pub(crate) json: bool,
}

impl Resolved {
    pub(crate) fn topics(&self) -> Topics {
        Topics::new(self.topic_prefix.clone())
    }
}

impl Config {
    pub(crate) fn resolve(&self) -> anyhow::Result<Resolved> {
        let file = read_file(&self.config)?;
        let pick = |flag: &Option<String>, key: &str, default: &str| {
            flag.clone()
                .or_else(|| file.get(key))
                .unwrap_or_else(|| default.to_owned())
        };
        let clock = pick(&self.clock, "clock", "wall");
        anyhow::ensure!(
            clock == "wall" || clock == "event",
            "--clock must be wall or event, not {clock:?}"
        );
        let defaults = custflow_http::auth::Limits::default();
        let number = |flag: &Option<String>, key: &str, default: u32| {
            let v = pick(flag, key, &default.to_string());
            v.parse::<u32>()
                .with_context(|| format!("{key} must be a whole number ≥ 0, not {v:?}"))
        };
        let limits = custflow_http::auth::Limits {
            requests_per_s: number(&self.rate_limit, "rate_limit", defaults.requests_per_s)?,
            streams: number(&self.max_streams, "max_streams", defaults.streams)?,
        };
        let sample = pick(&self.trace_sample, "trace_sample", "1");
        let trace_sample = sample
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .with_context(|| format!("trace_sample must be between 0 and 1, not {sample:?}"))?;
        Ok(Resolved {
            brokers: pick(&self.brokers, "brokers", "127.0.0.1:9092"),
            redis: pick(&self.redis, "redis", "redis://127.0.0.1:6379"),
            sink: pick(&self.sink, "sink", "sqlite://data/custflow.db"),
            http: pick(&self.http, "http", "127.0.0.1:8080"),
            topic_prefix: pick(&self.topic_prefix, "topic_prefix", ""),
            clock,
            api_keys: pick(&self.api_keys, "api_keys", ""),
            limits,
            alert_webhook: pick(&self.alert_webhook, "alert_webhook", ""),
            alert_rule: pick(
                &self.alert_rule,
                "alert_rule",
                custflow_connectors::webhook::DEFAULT_RULE,
            ),
            deny: custflow_schemas::DenyList::parse(&pick(
                &self.deny_attributes,
                "deny_attributes",
                "",
            )),
            replication_factor: i32::try_from(number(
                &self.replication_factor,
                "replication_factor",
                1,
            )?)
            .ok()
            .filter(|r| *r >= 1)
            .context("replication_factor must be between 1 and 2^31")?,
            otlp_endpoint: pick(&self.otlp_endpoint, "otlp_endpoint", ""),
            trace_sample,
            json: self.json,
        })
    }
}

/// The `custflow.toml` file: the same settings as the flags, all optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    brokers: Option<String>,
    redis: Option<String>,
    sink: Option<String>,
    http: Option<String>,
    topic_prefix: Option<String>,
    clock: Option<String>,
    api_keys: Option<String>,
    rate_limit: Option<u32>,
    max_streams: Option<u32>,
    alert_webhook: Option<String>,
    alert_rule: Option<String>,
    deny_attributes: Option<String>,
    replication_factor: Option<u32>,
    otlp_endpoint: Option<String>,
    trace_sample: Option<f64>,
}

impl FileConfig {
    fn get(&self, key: &str) -> Option<String> {
        let text = match key {
            "rate_limit" => return self.rate_limit.map(|v| v.to_string()),
            "max_streams" => return self.max_streams.map(|v| v.to_string()),
            "trace_sample" => return self.trace_sample.map(|v| v.to_string()),
            "replication_factor" => return self.replication_factor.map(|v| v.to_string()),
            "brokers" => self.brokers.as_ref(),
            "redis" => self.redis.as_ref(),
            "sink" => self.sink.as_ref(),
            "http" => self.http.as_ref(),
            "topic_prefix" => self.topic_prefix.as_ref(),
            "clock" => self.clock.as_ref(),
            "api_keys" => self.api_keys.as_ref(),
            "alert_webhook" => self.alert_webhook.as_ref(),
            "alert_rule" => self.alert_rule.as_ref(),
            "deny_attributes" => self.deny_attributes.as_ref(),
            "otlp_endpoint" => self.otlp_endpoint.as_ref(),
            _ => None,
        };
        text.cloned()
    }
}

/// Reads the configuration file; a missing file is empty.
fn read_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

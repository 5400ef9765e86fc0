//! Configuration: flags, then `CUSTFLOW_*` environment variables, then `custflow.toml`,
//! then defaults that work on a fresh machine (DESIGN §8).
//!
//! Every setting is one [`Key`]: its flag, environment variable, file key, default and
//! help come from there, and each command takes the flags of the groups it uses (its
//! `--help` lists nothing else). A setting a command has no flag for still comes from
//! the environment or the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Arg, ArgMatches, Args};
use custflow_schemas::topics::Topics;

/// Options of every command.
#[derive(Debug, Args)]
pub(crate) struct Common {
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

/// One setting of [`Resolved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Brokers,
    ReplicationFactor,
    TopicPrefix,
    Redis,
    Sink,
    Http,
    ApiKeys,
    RateLimit,
    MaxStreams,
    Clock,
    AlertWebhook,
    AlertRule,
    FluvioSink,
    DenyAttributes,
    OtlpEndpoint,
    TraceSample,
}

impl Key {
    const ALL: [Key; 16] = [
        Key::Brokers,
        Key::ReplicationFactor,
        Key::TopicPrefix,
        Key::Redis,
        Key::Sink,
        Key::Http,
        Key::ApiKeys,
        Key::RateLimit,
        Key::MaxStreams,
        Key::Clock,
        Key::AlertWebhook,
        Key::AlertRule,
        Key::FluvioSink,
        Key::DenyAttributes,
        Key::OtlpEndpoint,
        Key::TraceSample,
    ];

    /// The key in `custflow.toml` (the flag is the same with dashes).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Key::Brokers => "brokers",
            Key::ReplicationFactor => "replication_factor",
            Key::TopicPrefix => "topic_prefix",
            Key::Redis => "redis",
            Key::Sink => "sink",
            Key::Http => "http",
            Key::ApiKeys => "api_keys",
            Key::RateLimit => "rate_limit",
            Key::MaxStreams => "max_streams",
            Key::Clock => "clock",
            Key::AlertWebhook => "alert_webhook",
            Key::AlertRule => "alert_rule",
            Key::FluvioSink => "fluvio_sink",
            Key::DenyAttributes => "deny_attributes",
            Key::OtlpEndpoint => "otlp_endpoint",
            Key::TraceSample => "trace_sample",
        }
    }

    /// The environment variable of this setting.
    fn env(self) -> String {
        match self {
            Key::Redis => "CUSTFLOW_REDIS_URL".into(),
            Key::Sink => "CUSTFLOW_SINK_URL".into(),
            Key::Http => "CUSTFLOW_HTTP_ADDR".into(),
            _ => format!("CUSTFLOW_{}", self.name().to_ascii_uppercase()),
        }
    }

    fn default(self) -> String {
        let limits = custflow_http::auth::Limits::default();
        match self {
            Key::Brokers => "127.0.0.1:9092".into(),
            Key::ReplicationFactor => "1".into(),
            Key::Redis => "redis://127.0.0.1:6379".into(),
            Key::Sink => "sqlite://data/custflow.db".into(),
            Key::Http => "127.0.0.1:8080".into(),
            Key::RateLimit => limits.requests_per_s.to_string(),
            Key::MaxStreams => limits.streams.to_string(),
            Key::Clock => "wall".into(),
            Key::AlertRule => custflow_connectors::webhook::DEFAULT_RULE.into(),
            Key::TraceSample => "1".into(),
            Key::TopicPrefix
            | Key::ApiKeys
            | Key::AlertWebhook
            | Key::FluvioSink
            | Key::DenyAttributes
            | Key::OtlpEndpoint => String::new(),
        }
    }

    fn help(self) -> &'static str {
        match self {
            Key::Brokers => "Kafka bootstrap servers",
            Key::ReplicationFactor => {
                "Replicas of each partition of the topics custflow creates (3 on a cluster of \
                 three brokers; the local broker has one)"
            }
            Key::TopicPrefix => {
                "Prefix for every topic name and Redis key, so several deployments can share \
                 a broker and a Redis"
            }
            Key::Redis => "Redis URL (redis:// or rediss://)",
            Key::Sink => "SQL sink URL (sqlite://path or postgres://…)",
            Key::Http => "HTTP listen address",
            Key::ApiKeys => {
                "API keys: `KEY=scope+scope;…` (scopes events:write, features:read, sales:read, \
                 admin; a key may be given as `sha256:HEX`). Off by default on loopback, \
                 required on other addresses"
            }
            Key::RateLimit => {
                "Requests per second each API key may make (bursts of one second's worth); 0 = \
                 unlimited. Applies when API keys are configured"
            }
            Key::MaxStreams => {
                "Event streams (`/v1/stream/*`) each API key may hold open; 0 = unlimited"
            }
            Key::Clock => "Processor clock: `wall` or `event`",
            Key::AlertWebhook => "Webhook for segment-change alerts; off when empty",
            Key::FluvioSink => {
                "Also publish scores and segment changes to a Fluvio topic, \
                 fluvio://HOST:PORT/TOPIC (keyed by customer id, JSON); off when empty"
            }
            Key::AlertRule => {
                "Which changes alert: `field=value,…` (fields dimension, previous, current, \
                 value_tier), several rules separated by `;`"
            }
            Key::DenyAttributes => {
                "Customer attributes that are never stored, comma-separated (for example \
                 `email,phone`): dropped from customer events at the REST endpoint and in \
                 connectors, before anything is written to a topic"
            }
            Key::OtlpEndpoint => {
                "OpenTelemetry collector (OTLP over HTTP, e.g. `http://127.0.0.1:4318`): traces \
                 of REST ingest → processor → SQL sink are exported there. Off when empty"
            }
            Key::TraceSample => {
                "Share of new traces kept (0 to 1); a request's sampled `traceparent` is always \
                 followed"
            }
        }
    }

    fn parse(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The flag of this setting.
    fn arg(self) -> Arg {
        let mut arg = Arg::new(self.name())
            .long(self.name().replace('_', "-"))
            .env(self.env())
            .help(self.help())
            .value_name("VALUE");
        // Shown in --help; a value from here is the default, below the file's (see
        // `Common::resolve`).
        let default = self.default();
        if !default.is_empty() {
            arg = arg.default_value(default);
        }
        if self == Key::ApiKeys {
            arg.hide_env_values(true)
        } else {
            arg
        }
    }
}

/// Groups of settings; a command takes the flags of the groups it uses.
pub(crate) mod group {
    use super::Key;

    pub(crate) const KAFKA: &[Key] = &[Key::Brokers, Key::ReplicationFactor];
    pub(crate) const DEPLOYMENT: &[Key] = &[Key::TopicPrefix];
    pub(crate) const REDIS: &[Key] = &[Key::Redis];
    pub(crate) const SINK: &[Key] = &[Key::Sink];
    pub(crate) const HTTP: &[Key] = &[Key::Http];
    pub(crate) const KEYS: &[Key] = &[Key::ApiKeys, Key::RateLimit, Key::MaxStreams];
    pub(crate) const CLOCK: &[Key] = &[Key::Clock];
    pub(crate) const ALERTS: &[Key] = &[Key::AlertWebhook, Key::AlertRule];
    pub(crate) const OUTPUTS: &[Key] = &[Key::FluvioSink];
    pub(crate) const PRIVACY: &[Key] = &[Key::DenyAttributes];
    pub(crate) const TRACING: &[Key] = &[Key::OtlpEndpoint, Key::TraceSample];
}

/// Adds the flags of `groups` to the subcommand `name` of `cli`.
pub(crate) fn with_settings(cli: clap::Command, name: &str, groups: &[&[Key]]) -> clap::Command {
    let args: Vec<Arg> = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|k| k.arg().help_heading("Settings"))
        .collect();
    cli.mut_subcommand(name, |c| c.args(args))
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
    pub(crate) fluvio_sink: String,
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

impl Common {
    /// Resolves every setting: the flags of `matches` (the command's), the environment,
    /// the configuration file, the defaults.
    pub(crate) fn resolve(&self, matches: &ArgMatches) -> anyhow::Result<Resolved> {
        let file = read_file(&self.config)?;
        let flags = matches.subcommand().map(|(_, m)| m);
        let mut values: BTreeMap<Key, String> = BTreeMap::new();
        for key in Key::ALL {
            // A flag given, or its variable set; clap's default ranks below the file.
            let flag = flags.and_then(|m| {
                let value = m.try_get_one::<String>(key.name()).ok().flatten()?;
                let given =
                    m.value_source(key.name()) != Some(clap::parser::ValueSource::DefaultValue);
                given.then(|| value.clone())
            });
            let value = flag
                .or_else(|| std::env::var(key.env()).ok())
                .or_else(|| file.get(&key).cloned())
                .unwrap_or_else(|| key.default());
            values.insert(key, value);
        }
        Resolved::from_values(&values, self.json)
    }
}

impl Resolved {
    fn from_values(values: &BTreeMap<Key, String>, json: bool) -> anyhow::Result<Self> {
        let get = |key: Key| values.get(&key).cloned().unwrap_or_else(|| key.default());
        let number = |key: Key| {
            let v = get(key);
            v.parse::<u32>()
                .with_context(|| format!("{} must be a whole number ≥ 0, not {v:?}", key.name()))
        };
        let clock = get(Key::Clock);
        anyhow::ensure!(
            clock == "wall" || clock == "event",
            "clock must be wall or event, not {clock:?}"
        );
        let sample = get(Key::TraceSample);
        let trace_sample = sample
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .with_context(|| format!("trace_sample must be between 0 and 1, not {sample:?}"))?;
        Ok(Resolved {
            brokers: get(Key::Brokers),
            redis: get(Key::Redis),
            sink: get(Key::Sink),
            http: get(Key::Http),
            topic_prefix: get(Key::TopicPrefix),
            clock,
            api_keys: get(Key::ApiKeys),
            limits: custflow_http::auth::Limits {
                requests_per_s: number(Key::RateLimit)?,
                streams: number(Key::MaxStreams)?,
            },
            alert_webhook: get(Key::AlertWebhook),
            alert_rule: get(Key::AlertRule),
            fluvio_sink: get(Key::FluvioSink),
            deny: custflow_schemas::DenyList::parse(&get(Key::DenyAttributes)),
            replication_factor: i32::try_from(number(Key::ReplicationFactor)?)
                .ok()
                .filter(|r| *r >= 1)
                .context("replication_factor must be between 1 and 2^31")?,
            otlp_endpoint: get(Key::OtlpEndpoint),
            trace_sample,
            json,
        })
    }
}

/// The `custflow.toml` file: any of the settings, by their names; a key that names no
/// setting is refused with its name.
fn parse_file(text: &str) -> anyhow::Result<BTreeMap<Key, String>> {
    let table: toml::Table = toml::from_str(text)?;
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let key = Key::parse(&name).with_context(|| {
            let known: Vec<&str> = Key::ALL.iter().map(|k| k.name()).collect();
            format!("unknown setting {name:?} (known: {})", known.join(", "))
        })?;
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => anyhow::bail!("{name}: expected a string or a number, not {other}"),
        };
        out.insert(key, text);
    }
    Ok(out)
}

/// Reads the configuration file; a missing file is empty.
fn read_file(path: &std::path::Path) -> anyhow::Result<BTreeMap<Key, String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => parse_file(&t).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_its_name_and_has_a_valid_default() {
        for k in Key::ALL {
            assert_eq!(Key::parse(k.name()), Some(k));
            assert!(k.env().starts_with("CUSTFLOW_"));
        }
        let defaults: BTreeMap<Key, String> = Key::ALL.iter().map(|k| (*k, k.default())).collect();
        let r = Resolved::from_values(&defaults, false).unwrap();
        assert_eq!(r.brokers, "127.0.0.1:9092");
        assert_eq!(r.replication_factor, 1);
        assert_eq!(r.clock, "wall");
    }

    #[test]
    fn the_file_refuses_an_unknown_key_by_name_and_reads_numbers() {
        let err = parse_file("brokrs = \"x:9092\"\n").unwrap_err().to_string();
        assert!(err.contains("\"brokrs\""), "{err}");
        assert!(err.contains("brokers"), "{err}");
        let ok = parse_file("rate_limit = 7\ntrace_sample = 0.5\nsink = \"sqlite://x\"\n").unwrap();
        assert_eq!(ok[&Key::RateLimit], "7");
        assert_eq!(ok[&Key::TraceSample], "0.5");
        let r = Resolved::from_values(&ok, false).unwrap();
        assert_eq!(r.limits.requests_per_s, 7);
        assert_eq!(r.sink, "sqlite://x");
        assert!(parse_file("clock = [1]\n").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_setting_named() {
        let mut v: BTreeMap<Key, String> = BTreeMap::new();
        v.insert(Key::Clock, "sundial".into());
        let err = Resolved::from_values(&v, false).unwrap_err().to_string();
        assert!(err.contains("clock"), "{err}");
        let mut v: BTreeMap<Key, String> = BTreeMap::new();
        v.insert(Key::MaxStreams, "-1".into());
        let err = format!("{:#}", Resolved::from_values(&v, false).unwrap_err());
        assert!(err.contains("max_streams"), "{err}");
    }
}

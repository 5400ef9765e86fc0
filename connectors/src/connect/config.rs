//! Connector configurations in Kafka Connect's shape (`{"name", "config": {…}}`) and the
//! settings every source shares: class, tasks, topic, value format, error handling.

use std::collections::BTreeMap;
use std::sync::Arc;

use custflow_schemas::topics::{self, Topics};
use custflow_schemas::EventKind;
use serde::{Deserialize, Serialize};

use super::Error;

/// The connector classes this worker runs (`connector.class`; a Java-style package
/// prefix such as `io.custflow.` is accepted and ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorClass {
    SpoolDirCsvSource,
    PostgresSource,
    FluvioSource,
}

impl ConnectorClass {
    pub const ALL: [ConnectorClass; 3] = [
        Self::SpoolDirCsvSource,
        Self::PostgresSource,
        Self::FluvioSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SpoolDirCsvSource => "SpoolDirCsvSource",
            Self::PostgresSource => "PostgresSource",
            Self::FluvioSource => "FluvioSource",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let short = s.rsplit('.').next().unwrap_or(s);
        Self::ALL.into_iter().find(|c| c.as_str() == short)
    }
}

/// `errors.tolerance`: what a record that cannot be converted does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerance {
    /// Stop the task with the reason in its status (the default, as in Connect).
    None,
    /// Send the record to the dead-letter topic and go on.
    All,
}

/// Wire format of produced events (`value.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Avro,
    Json,
}

/// A connector's name and raw configuration, as stored and as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    pub name: String,
    pub config: BTreeMap<String, String>,
}

/// The settings every source connector shares, validated.
#[derive(Debug, Clone)]
pub struct Common {
    pub name: String,
    pub class: ConnectorClass,
    pub tasks_max: usize,
    /// Literal topic the events go to.
    pub topic: String,
    /// With `event.type=tagged` (each record names its kind in `type`): the topic of each
    /// kind, the deployment's `customers`, `orders` and `activity`; `topic` is unused.
    pub by_kind: Option<[Arc<str>; 3]>,
    pub format: ValueFormat,
    pub tolerance: Tolerance,
    /// Literal dead-letter topic.
    pub dlq_topic: String,
    pub dlq_context_headers: bool,
}

impl Common {
    /// With `event.type=tagged`, the topic of an event of `kind` (shared, so routing a
    /// record allocates nothing); `None` when every event goes to `topic`.
    pub fn routed(&self, kind: EventKind) -> Option<Arc<str>> {
        let topics = self.by_kind.as_ref()?;
        let i = EventKind::ALL.iter().position(|k| *k == kind)?;
        topics.get(i).cloned()
    }

    /// Every topic this connector writes to: where its events go, and the dead letters.
    pub fn destinations(&self) -> Vec<String> {
        let mut out = match &self.by_kind {
            Some(topics) => topics.iter().map(|t| t.to_string()).collect(),
            None => vec![self.topic.clone()],
        };
        out.push(self.dlq_topic.clone());
        out
    }
}

impl ConnectorConfig {
    /// A config from the REST body or a file: `{"name", "config"}`; a `name` inside the
    /// config map must agree.
    pub fn new(name: &str, mut config: BTreeMap<String, String>) -> Result<Self, Error> {
        check_name(name)?;
        if let Some(inner) = config.get("name") {
            if inner != name {
                return Err(Error::invalid(
                    "config.name",
                    format!("{inner:?} differs from the connector name {name:?}"),
                ));
            }
        }
        config.insert("name".into(), name.into());
        let c = Self {
            name: name.into(),
            config,
        };
        c.common(&Topics::default())?;
        Ok(c)
    }

    /// A config from JSON (a REST body or a file): see [`string_settings`].
    pub fn from_json(
        name: &str,
        config: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<Self, Error> {
        Self::new(name, string_settings(config)?)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.config
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A required setting.
    pub fn required(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::invalid(format!("config.{key}"), "is required"))
    }

    /// A number setting with a default.
    pub fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, Error> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                Error::invalid(format!("config.{key}"), format!("{v:?} is not a number"))
            }),
        }
    }

    /// A boolean setting with a default.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(Error::invalid(
                format!("config.{key}"),
                format!("{v:?} is not true or false"),
            )),
        }
    }

    /// The shared settings; topic defaults use the deployment's prefix.
    pub fn common(&self, names: &Topics) -> Result<Common, Error> {
        let class_name = self.required("connector.class")?;
        let class = ConnectorClass::parse(class_name).ok_or_else(|| {
            Error::invalid(
                "config.connector.class",
                format!(
                    "{class_name:?} is not one of {}",
                    ConnectorClass::ALL.map(ConnectorClass::as_str).join(", ")
                ),
            )
        })?;
        let tasks_max: usize = self.number("tasks.max", 1)?;
        if !(1..=64).contains(&tasks_max) {
            return Err(Error::invalid("config.tasks.max", "must be 1 to 64"));
        }
        let format = match self.get("value.format").unwrap_or("avro") {
            "avro" => ValueFormat::Avro,
            "json" => ValueFormat::Json,
            v => {
                return Err(Error::invalid(
                    "config.value.format",
                    format!("{v:?} is not avro or json"),
                ))
            }
        };
        let tolerance = match self.get("errors.tolerance").unwrap_or("none") {
            "none" => Tolerance::None,
            "all" => Tolerance::All,
            v => {
                return Err(Error::invalid(
                    "config.errors.tolerance",
                    format!("{v:?} is not none or all"),
                ))
            }
        };
        Ok(Common {
            name: self.name.clone(),
            class,
            tasks_max,
            topic: self
                .get("topic")
                .map_or_else(|| names.name(topics::ORDERS), str::to_owned),
            by_kind: (self.get("event.type") == Some("tagged"))
                .then(|| EventKind::ALL.map(|k| names.name(k.topic()).into())),
            format,
            tolerance,
            dlq_topic: self
                .get("errors.deadletterqueue.topic.name")
                .map_or_else(|| names.name(topics::DLQ), str::to_owned),
            dlq_context_headers: self
                .flag("errors.deadletterqueue.context.headers.enable", true)?,
        })
    }
}

/// Connect settings are strings; numbers and booleans are accepted and kept as text,
/// anything else is refused with the setting's path.
pub fn string_settings(
    config: impl IntoIterator<Item = (String, serde_json::Value)>,
) -> Result<BTreeMap<String, String>, Error> {
    use serde_json::Value;
    config
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            other => Err(Error::invalid(
                format!("config.{k}"),
                format!("must be a string, not {other}"),
            )),
        })
        .collect()
}

/// Connector names travel in URLs and topic keys: printable, no slashes, at most 200 bytes.
fn check_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::invalid("name", "must not be empty"));
    }
    if name.len() > 200 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::invalid(
            "name",
            "must be at most 200 bytes without control characters or '/'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn common_settings_and_defaults() {
        let c = ConnectorConfig::new(
            "files",
            cfg(&[("connector.class", "io.custflow.SpoolDirCsvSource")]),
        )
        .unwrap();
        let common = c.common(&Topics::new("dev.")).unwrap();
        assert_eq!(common.class, ConnectorClass::SpoolDirCsvSource);
        assert_eq!(common.topic, "dev.orders");
        assert_eq!(common.dlq_topic, "dev.custflow-dlq");
        assert_eq!(common.tolerance, Tolerance::None);
        assert_eq!(common.format, ValueFormat::Avro);
        assert_eq!(c.config["name"], "files");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = ConnectorConfig::new("x", cfg(&[("connector.class", "FileStream")])).unwrap_err();
        assert!(e.to_string().contains("config.connector.class"), "{e}");
        let e = ConnectorConfig::new(
            "x",
            cfg(&[("connector.class", "PostgresSource"), ("tasks.max", "many")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("config.tasks.max"), "{e}");
        let e =
            ConnectorConfig::new("a/b", cfg(&[("connector.class", "PostgresSource")])).unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let e = ConnectorConfig::new(
            "x",
            cfg(&[("connector.class", "PostgresSource"), ("name", "y")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("differs"), "{e}");
    }
}

//! Topic names of DESIGN §3 and the optional deployment prefix.

/// Default partition count of the input topics.
pub const DEFAULT_PARTITIONS: i32 = 8;

pub const CUSTOMERS: &str = "customers";
pub const ORDERS: &str = "orders";
pub const ACTIVITY: &str = "activity";
pub const CUSTOMER_SCORES: &str = "customer-scores";
pub const SEGMENT_CHANGES: &str = "segment-changes";
pub const DLQ: &str = "custflow-dlq";
/// Compacted topic that persists the schema registry.
pub const SCHEMAS: &str = "custflow-schemas";

/// Compacted topic of the connect worker's connector configs and target states.
pub const CONNECT_CONFIGS: &str = "custflow-connect-configs";
/// Compacted topic of the connect worker's source offsets.
pub const CONNECT_OFFSETS: &str = "custflow-connect-offsets";

/// How a topic is cleaned up by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Compact,
}

/// One topic of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    pub cleanup: Cleanup,
    /// `retention.ms` of a topic that deletes old records, set explicitly: [`FOREVER_MS`]
    /// for the input topics, which are the source of truth that `process --rebuild` and a
    /// rebuild after Redis lost its data replay; a week for derived streams.
    pub retention_ms: &'static str,
}

/// A week in milliseconds, the retention of derived event streams (segment changes,
/// dead letters).
pub const WEEK_MS: &str = "604800000";

/// Keep for ever: the largest `retention.ms`. Not Kafka's -1: tansu 0.6's durable engines
/// compare a record's age with the value as a number, so -1 deleted every record of the
/// topic at the broker's next maintenance (every 10 minutes).
pub const FOREVER_MS: &str = "9223372036854775807";

/// Every topic custflow creates, with its partition count and cleanup policy.
pub const ALL: &[TopicSpec] = &[
    TopicSpec {
        name: CUSTOMERS,
        partitions: DEFAULT_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: ORDERS,
        partitions: DEFAULT_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: ACTIVITY,
        partitions: DEFAULT_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: CUSTOMER_SCORES,
        partitions: DEFAULT_PARTITIONS,
        cleanup: Cleanup::Compact,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: SEGMENT_CHANGES,
        partitions: DEFAULT_PARTITIONS,
        cleanup: Cleanup::Delete,
        retention_ms: WEEK_MS,
    },
    TopicSpec {
        name: DLQ,
        partitions: 1,
        cleanup: Cleanup::Delete,
        retention_ms: WEEK_MS,
    },
    TopicSpec {
        name: SCHEMAS,
        partitions: 1,
        cleanup: Cleanup::Compact,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: CONNECT_CONFIGS,
        partitions: 1,
        cleanup: Cleanup::Compact,
        retention_ms: FOREVER_MS,
    },
    TopicSpec {
        name: CONNECT_OFFSETS,
        partitions: 1,
        cleanup: Cleanup::Compact,
        retention_ms: FOREVER_MS,
    },
];

/// Topic names with a deployment prefix, so several deployments can share a broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The full name of a contract topic.
    pub fn name(&self, base: &str) -> String {
        format!("{}{}", self.prefix, base)
    }

    /// The contract topic a full name belongs to, if any.
    pub fn base<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Input topics keep their records for ever, with a retention every broker reads as
    /// "never": not -1, which tansu's durable engines take for "older than 0 ms".
    #[test]
    fn no_topic_asks_for_a_negative_retention() {
        for t in ALL {
            let ms: i64 = t.retention_ms.parse().unwrap_or(-1);
            assert!(ms > 0, "{}: {}", t.name, t.retention_ms);
        }
        for name in [CUSTOMERS, ORDERS, ACTIVITY] {
            let t = ALL.iter().find(|t| t.name == name).map(|t| t.retention_ms);
            assert_eq!(t, Some(FOREVER_MS), "{name}");
        }
    }

    #[test]
    fn prefix_applies_and_strips() {
        let t = Topics::new("staging.");
        assert_eq!(t.name(ORDERS), "staging.orders");
        assert_eq!(t.base("staging.orders"), Some("orders"));
        assert_eq!(t.base("orders"), None);
        assert_eq!(Topics::default().name(ORDERS), "orders");
    }
}

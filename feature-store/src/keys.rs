//! Redis key names (DESIGN §5). Braces around the customer id are a Redis Cluster hash
//! tag, so all keys of one customer live in one slot. Every key starts with the
//! deployment's prefix (the topic prefix), so several deployments can share a Redis.

/// The key names of one deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The state (features, scores, source positions) of one customer.
    pub fn features(&self, customer_id: &str) -> String {
        format!("{}cf:{{{customer_id}}}:f", self.prefix)
    }

    /// The model artefact in use.
    pub fn model_current(&self) -> String {
        format!("{}cf:model:current", self.prefix)
    }

    /// One stored model artefact version.
    pub fn model(&self, version: &str) -> String {
        format!("{}cf:model:{version}", self.prefix)
    }

    /// Sorted set of customers by last purchase time, one per input partition, so each
    /// processor owns the index of its partitions and a cluster can shard it.
    pub fn last_order_index(&self, partition: i32) -> String {
        format!("{}cf:idx:last_order:{{p{partition}}}", self.prefix)
    }

    /// Hash of customers per segment value (`tier:top20`, `segment:champions`,
    /// `cluster:v1`, `at_risk:true`), kept by the processors.
    pub fn segment_counts(&self) -> String {
        format!("{}cf:segments", self.prefix)
    }

    /// Hash of recorded churn predictions by clock day, kept until their labels mature.
    pub fn churn_predictions(&self) -> String {
        format!("{}cf:churn:predictions", self.prefix)
    }

    /// Where input partition `partition` stands in the rescoring pass that follows a
    /// model change (the processors' `PassCursor`, JSON), saved with the states it
    /// rescored.
    pub fn model_pass(&self, partition: i32) -> String {
        format!("{}cf:pass:{{p{partition}}}", self.prefix)
    }

    /// Prefix of the per-partition sweep cursors (`<prefix>:{p<N>}`).
    pub fn sweep_prefix(&self) -> String {
        format!("{}cf:sweep", self.prefix)
    }

    /// The sales rollups of one period (`grain` d, w or m; `label` such as 2026-11-25,
    /// 2026-W48, 2026-11): a hash of `dimension|value|metric` counters.
    pub fn sales(&self, grain: char, label: &str) -> String {
        format!("{}cf:sales:{grain}:{label}", self.prefix)
    }

    /// The HyperLogLog of distinct customers of one series of a day (weeks and months
    /// count the union of their days).
    pub fn sales_customers(&self, day: &str, dim: &str, value: &str) -> String {
        format!("{}cf:sales:d:{day}:u:{dim}|{value}", self.prefix)
    }

    /// Set of `grain|start-day` periods changed since the sales sink last copied them.
    pub fn sales_dirty(&self) -> String {
        format!("{}cf:sales:dirty", self.prefix)
    }

    /// The dirty periods the sales sink is copying (kept until the copy is committed).
    pub fn sales_flushing(&self) -> String {
        format!("{}cf:sales:flushing", self.prefix)
    }

    /// Hash of first-order cohorts per discount label: `first|<label>`, `returned|<label>`.
    pub fn sales_cohorts(&self) -> String {
        format!("{}cf:sales:cohorts", self.prefix)
    }

    /// The marker of input partition `partition`'s state: present while Redis holds the
    /// state the processors built from that partition's log (`rebuilding` while they
    /// replay it, `ready` once caught up). Redis losing its data loses the markers with
    /// the state, which is how the processors notice.
    pub fn partition_state(&self, partition: i32) -> String {
        format!("{}cf:state:{{p{partition}}}", self.prefix)
    }

    /// Present when every input partition's state is `ready`: lookups and `/readyz`
    /// answer from Redis only then.
    pub fn state_ready(&self) -> String {
        format!("{}cf:state:ready", self.prefix)
    }

    /// Patterns of every key of this deployment (for wiping on rebuild).
    pub fn patterns(&self) -> [String; 6] {
        let p = &self.prefix;
        [
            format!("{p}cf:{{*}}:f"),
            format!("{p}cf:idx:*"),
            format!("{p}cf:sweep:*"),
            format!("{p}cf:pass:*"),
            format!("{p}cf:sales:*"),
            format!("{p}cf:state:*"),
        ]
    }

    /// The customer id of a features key.
    pub fn customer_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("cf:{")?
            .strip_suffix("}:f")
    }
}

/// Why custflow refuses a Redis in cluster mode (said with the address it was given).
pub const CLUSTER_UNSUPPORTED: &str = "runs in cluster mode, which custflow does not support \
yet: each batch is written by one Lua script over keys in many hash slots, and a cluster \
refuses that. Point --redis at a standalone primary (docs/operations.md)";

/// Whether the Redis behind `conn` runs in cluster mode (`INFO cluster`); false when the
/// server refuses to say (an ACL user without `INFO`).
pub async fn is_cluster<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
) -> redis::RedisResult<bool> {
    match redis::cmd("INFO")
        .arg("cluster")
        .query_async::<String>(conn)
        .await
    {
        Ok(info) => Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1")),
        Err(e) if e.code().is_some() => Ok(false),
        Err(e) => Err(e),
    }
}

/// One page of `SCAN cursor MATCH pattern COUNT count`: the next cursor (0 when done)
/// and the keys found.
pub async fn scan_page<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    cursor: u64,
    pattern: &str,
    count: usize,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hash_tagged_and_prefixed() {
        let k = Keys::default();
        assert_eq!(k.features("c-17"), "cf:{c-17}:f");
        assert_eq!(k.model("v3"), "cf:model:v3");
        assert_eq!(k.last_order_index(5), "cf:idx:last_order:{p5}");
        let staging = Keys::new("staging.");
        assert_eq!(staging.features("c"), "staging.cf:{c}:f");
        assert_eq!(staging.customer_of("staging.cf:{c-1}:f"), Some("c-1"));
        assert_eq!(staging.customer_of("cf:{c-1}:f"), None);
    }
}

//! Redis key names (DESIGN §5). Braces around the customer id are a Redis Cluster hash
//! tag, so all keys of one customer live in one slot. Every key starts with the
//! deployment's prefix (the topic prefix), so several deployments can share a Redis.

/// The key names of one deployment, for a standalone Redis or (`in_cluster`) a Redis
/// Cluster. On a cluster every key a processor's batch writes for input partition N
/// carries the hash tag `{pN}`, so one script per partition writes them atomically on
/// one node; the counters and rollups are then kept per partition and summed when read
/// (see [`Keys::shards`]), and a customer's partition is found through its locator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            cluster: false,
        }
    }

    /// The same deployment's keys in the layout of a cluster (`cluster`) or of a
    /// standalone Redis.
    #[must_use]
    pub fn in_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Whether these are the cluster layout's names.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The state (features, scores, source positions) of one customer, whose events
    /// come from input partition `partition` (only the cluster layout names it).
    pub fn features(&self, customer_id: &str, partition: i32) -> String {
        if self.cluster {
            format!("{}cf:{{p{partition}}}:{customer_id}:f", self.prefix)
        } else {
            format!("{}cf:{{{customer_id}}}:f", self.prefix)
        }
    }

    /// Cluster layout: the input partition of one customer (its state's key names it).
    pub fn locator(&self, customer_id: &str) -> String {
        format!("{}cf:{{{customer_id}}}:p", self.prefix)
    }

    /// The number of input partitions (which shards to sum on a cluster, which rescoring
    /// passes to read for a rollout's progress).
    pub fn partition_count(&self) -> String {
        format!("{}cf:partitions", self.prefix)
    }

    /// The partitions whose shards of the counters and rollups a reader sums, of a
    /// deployment with `partitions` input partitions: every partition on a cluster, and
    /// one (any: the name does not depend on it) on a standalone Redis.
    pub fn shards(&self, partitions: i32) -> Vec<i32> {
        if self.cluster {
            (0..partitions).collect()
        } else {
            vec![0]
        }
    }

    /// `{pN}` on a cluster, to tag a per-partition shard of a shared key.
    fn shard(&self, partition: i32) -> String {
        if self.cluster {
            format!(":{{p{partition}}}")
        } else {
            String::new()
        }
    }

    /// The model artefact in use.
    pub fn model_current(&self) -> String {
        format!("{}cf:model:current", self.prefix)
    }

    /// One stored model artefact version.
    pub fn model(&self, version: &str) -> String {
        format!("{}cf:model:{version}", self.prefix)
    }

    /// List of the model job's decisions (JSON, newest first, the last
    /// [`crate::model::DECISIONS_KEPT`]): what each refit was found to change and whether
    /// it was promoted.
    pub fn model_decisions(&self) -> String {
        format!("{}cf:models:decisions", self.prefix)
    }

    /// Sorted set of customers by last purchase time, one per input partition, so each
    /// processor owns the index of its partitions and a cluster can shard it.
    pub fn last_order_index(&self, partition: i32) -> String {
        format!("{}cf:idx:last_order:{{p{partition}}}", self.prefix)
    }

    /// Hash of customers per segment value (`tier:top20`, `segment:champions`,
    /// `cluster:v1`, `at_risk:true`), kept by the processors (on a cluster, the share of
    /// input partition `partition`).
    pub fn segment_counts(&self, partition: i32) -> String {
        format!("{}cf:segments{}", self.prefix, self.shard(partition))
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
    /// 2026-W48, 2026-11): a hash of `dimension|value|metric` counters (on a cluster,
    /// input partition `partition`'s share).
    pub fn sales(&self, grain: char, label: &str, partition: i32) -> String {
        format!(
            "{}cf:sales:{grain}:{label}{}",
            self.prefix,
            self.shard(partition)
        )
    }

    /// The HyperLogLog of distinct customers of one series of a day (weeks and months
    /// count the union of their days). On a cluster all of them share the tag `{u}`, so
    /// one `PFCOUNT` counts a union.
    pub fn sales_customers(&self, day: &str, dim: &str, value: &str) -> String {
        if self.cluster {
            format!("{}cf:sales:{{u}}:d:{day}:u:{dim}|{value}", self.prefix)
        } else {
            format!("{}cf:sales:d:{day}:u:{dim}|{value}", self.prefix)
        }
    }

    /// Set of `grain|start-day` periods changed since the sales sink last copied them.
    pub fn sales_dirty(&self, partition: i32) -> String {
        format!("{}cf:sales:dirty{}", self.prefix, self.shard(partition))
    }

    /// The dirty periods the sales sink is copying (kept until the copy is committed).
    pub fn sales_flushing(&self, partition: i32) -> String {
        format!("{}cf:sales:flushing{}", self.prefix, self.shard(partition))
    }

    /// Hash of first-order cohorts per discount label: `first|<label>`, `returned|<label>`.
    pub fn sales_cohorts(&self, partition: i32) -> String {
        format!("{}cf:sales:cohorts{}", self.prefix, self.shard(partition))
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

    /// The pattern of every customer state key (for scans).
    pub fn features_pattern(&self) -> String {
        if self.cluster {
            format!("{}cf:{{p*}}:*:f", self.prefix)
        } else {
            format!("{}cf:{{*}}:f", self.prefix)
        }
    }

    /// The pattern of every key of this deployment, the model's too: a rebuild's wipe
    /// scans the keyspace once with it and deletes what matches one of [`Keys::patterns`]
    /// (a scan per pattern walked a shared Redis's whole keyspace seven times).
    pub fn deployment_pattern(&self) -> String {
        format!("{}cf:*", self.prefix)
    }

    /// Patterns of every key of this deployment (for wiping on rebuild) but the model's.
    pub fn patterns(&self) -> Vec<String> {
        let p = &self.prefix;
        let mut out = vec![
            self.features_pattern(),
            format!("{p}cf:idx:*"),
            format!("{p}cf:sweep:*"),
            format!("{p}cf:pass:*"),
            format!("{p}cf:sales:*"),
            format!("{p}cf:state:*"),
            format!("{p}cf:segments*"),
        ];
        if self.cluster {
            out.push(format!("{p}cf:{{*}}:p"));
        }
        out
    }

    /// The customer id of a features key.
    pub fn customer_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if self.cluster {
            let rest = rest.strip_prefix("cf:{p")?;
            let (partition, rest) = rest.split_once("}:")?;
            partition.parse::<i32>().ok()?;
            rest.strip_suffix(":f")
        } else {
            rest.strip_prefix("cf:{")?.strip_suffix("}:f")
        }
    }
}

/// Whether `key` matches a Redis glob `pattern` whose only wildcard is `*` (what
/// [`Keys::patterns`] use; braces are literal, as in Redis).
pub fn glob_match(pattern: &str, key: &str) -> bool {
    // `split` gives the text before the first `*` first, then the text after each `*`.
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, stars)) = parts.split_first() else {
        return false;
    };
    let Some(mut rest) = key.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = stars.split_last() else {
        // No `*`: the whole key is the literal.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Adds to `pipe` the read that finds customer `id`'s state: the state itself on a
/// standalone Redis, its locator on a cluster (then [`located_states`]).
pub fn push_lookup(keys: &Keys, pipe: &mut redis::Pipeline, id: &str) {
    if keys.is_cluster() {
        pipe.get(keys.locator(id));
    } else {
        pipe.get(keys.features(id, 0));
    }
}

/// The encoded states of `ids` from the replies to [`push_lookup`]'s reads (`replies`,
/// one per id): as they are on a standalone Redis. On a cluster, read from the
/// partitions the locators name (one more round trip); a customer without a locator
/// (unknown, or its locator was on a node that lost its data) is looked for in every
/// partition.
pub async fn located_states<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    ids: &[&str],
    replies: Vec<redis::Value>,
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    if !keys.is_cluster() {
        return replies.iter().map(redis::from_redis_value).collect();
    }
    let located: Vec<Option<i32>> = replies
        .iter()
        .map(redis::from_redis_value)
        .collect::<redis::RedisResult<_>>()?;
    let all = if located.iter().any(Option::is_none) {
        (0..partitions(conn, keys).await?).collect()
    } else {
        Vec::new()
    };
    // The partitions to read each customer's state from.
    let candidates: Vec<&[i32]> = located
        .iter()
        .map(|p| p.as_ref().map_or(all.as_slice(), std::slice::from_ref))
        .collect();
    let mut pipe = redis::pipe();
    for (id, ps) in ids.iter().zip(&candidates) {
        for p in *ps {
            pipe.get(keys.features(id, *p));
        }
    }
    let found: Vec<Option<Vec<u8>>> = if pipe.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let mut found = found.into_iter();
    Ok(candidates
        .iter()
        .map(|ps| {
            let mut state = None;
            for _ in 0..ps.len() {
                state = state.or(found.next().flatten());
            }
            state
        })
        .collect())
}

/// The encoded states of `ids` (None where there is none).
pub async fn read_states<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
    ids: &[&str],
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        push_lookup(keys, &mut pipe, id);
    }
    let replies: Vec<redis::Value> = pipe.query_async(conn).await?;
    located_states(conn, keys, ids, replies).await
}

/// The input partitions of the deployment, as the processors recorded them (cluster
/// layout; 1 on a standalone Redis, where readers need no count).
pub async fn partitions<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> redis::RedisResult<i32> {
    if !keys.is_cluster() {
        return Ok(1);
    }
    let n: Option<i32> = redis::cmd("GET")
        .arg(keys.partition_count())
        .query_async(conn)
        .await?;
    Ok(n.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys a processor's batch writes for input partition `p`.
    fn partition_keys(k: &Keys, p: i32) -> Vec<String> {
        vec![
            k.features("c-17", p),
            k.last_order_index(p),
            k.segment_counts(p),
            k.sales('d', "2026-11-25", p),
            k.sales_dirty(p),
            k.sales_cohorts(p),
            k.model_pass(p),
            k.partition_state(p),
        ]
    }

    #[test]
    fn globs_match_as_redis_does_for_star_patterns() {
        assert!(glob_match("cf:{*}:f", "cf:{c-1}:f"));
        assert!(glob_match("cf:{*}:f", "cf:{a}:b}:f"));
        assert!(!glob_match("cf:{*}:f", "cf:{c-1}:p"));
        assert!(!glob_match("cf:{*}:f", "x.cf:{c-1}:f"));
        assert!(glob_match("cf:{p*}:*:f", "cf:{p3}:c-9:f"));
        assert!(!glob_match("cf:{p*}:*:f", "cf:{p3}:f"));
        assert!(glob_match("cf:segments*", "cf:segments"));
        assert!(glob_match("cf:segments*", "cf:segments:{p2}"));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"));
        assert!(glob_match("cf:state:ready", "cf:state:ready"));
        assert!(!glob_match("cf:state:ready", "cf:state:ready2"));
    }

    /// A rebuild's wipe: every key of the deployment's state under the one scan pattern
    /// and one of the wipe's patterns; the model's keys and other deployments' not.
    #[test]
    fn the_wipe_takes_the_deployments_state_and_leaves_its_models_and_neighbours() {
        for k in [Keys::new("s."), Keys::new("s.").in_cluster(true)] {
            let wiped = |key: &str| {
                glob_match(&k.deployment_pattern(), key)
                    && k.patterns().iter().any(|p| glob_match(p, key))
            };
            let others = [k.state_ready(), format!("{}:{{p3}}", k.sweep_prefix())];
            for key in partition_keys(&k, 3).into_iter().chain(others) {
                assert!(wiped(&key), "{key}");
            }
            for key in [k.model_current(), k.model("v3")] {
                assert!(glob_match(&k.deployment_pattern(), &key));
                assert!(!wiped(&key), "{key}");
            }
            let other = Keys::new("t.").in_cluster(k.is_cluster());
            assert!(!wiped(&other.features("c-17", 3)));
            assert!(!wiped(&Keys::default().features("c-17", 3)));
        }
    }

    #[test]
    fn keys_are_hash_tagged_and_prefixed() {
        let k = Keys::default();
        assert_eq!(k.features("c-17", 3), "cf:{c-17}:f");
        assert_eq!(k.model("v3"), "cf:model:v3");
        assert_eq!(k.last_order_index(5), "cf:idx:last_order:{p5}");
        let staging = Keys::new("staging.");
        assert_eq!(staging.features("c", 0), "staging.cf:{c}:f");
        assert_eq!(staging.customer_of("staging.cf:{c-1}:f"), Some("c-1"));
        assert_eq!(staging.customer_of("cf:{c-1}:f"), None);
        assert_eq!(k.segment_counts(4), "cf:segments");
        assert_eq!(k.shards(8), vec![0]);
    }

    #[test]
    fn cluster_keys_of_one_partition_share_its_hash_tag() {
        use crate::conn::hash_tag;
        let k = Keys::new("s.").in_cluster(true);
        for key in &partition_keys(&k, 3) {
            assert_eq!(hash_tag(key.as_bytes()), b"p3", "{key}");
        }
        assert_eq!(k.features("c-17", 3), "s.cf:{p3}:c-17:f");
        assert_eq!(k.customer_of("s.cf:{p3}:c:1:f"), Some("c:1"));
        assert_eq!(k.customer_of("s.cf:{c-1}:f"), None);
        assert_eq!(hash_tag(k.locator("c-17").as_bytes()), b"c-17");
        let day = k.sales_customers("2026-11-25", "location", "x");
        assert_eq!(hash_tag(day.as_bytes()), b"u");
        assert_eq!(k.shards(3), vec![0, 1, 2]);
    }
}

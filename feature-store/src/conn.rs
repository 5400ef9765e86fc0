//! One Redis connection for a standalone server or a Redis Cluster. On a cluster every
//! command goes to the node serving its key's slot, and a pipeline over keys of many
//! slots is split into one pipeline per hash tag, sent concurrently, with the replies put
//! back in the pipeline's order (cluster-aware pipelining). Transactions and scripts are
//! sent as they are: their keys must share a slot (the layout in `keys` sees to it).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to a standalone Redis (reconnecting) or to a Redis Cluster.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Timeouts of a [`Redis`] connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Longest wait to connect to a node.
    pub connect: Duration,
    /// Longest wait for a reply (None: for ever).
    pub response: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            response: None,
        }
    }
}

impl Redis {
    /// Connects to the Redis at `url`, asking it first whether it runs in cluster mode
    /// (`INFO cluster`): a cluster node is a seed of a cluster connection.
    pub async fn connect(url: &str, t: Timeouts) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let mut probe = tokio::time::timeout(t.connect, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| timed_out("connecting to Redis"))??;
        if is_cluster(&mut probe).await? {
            let mut b = ClusterClientBuilder::new(vec![url]).connection_timeout(t.connect);
            if let Some(r) = t.response {
                b = b.response_timeout(r);
            }
            let conn = b.build()?.get_async_connection().await?;
            return Ok(Self::Cluster(conn));
        }
        let mut config = ConnectionManagerConfig::new().set_connection_timeout(t.connect);
        if let Some(r) = t.response {
            config = config.set_response_timeout(r);
        }
        Ok(Self::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The addresses of the cluster's primaries (`CLUSTER SLOTS`); empty when standalone.
    pub async fn primaries(&mut self) -> RedisResult<Vec<(String, u16)>> {
        let Self::Cluster(c) = self else {
            return Ok(Vec::new());
        };
        let slots: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let mut out: Vec<(String, u16)> = Vec::new();
        for range in slots {
            // [start, end, [host, port, id, …], replicas…]
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(primary)) = parts.get(2) else {
                continue;
            };
            let host: Option<String> = primary
                .first()
                .and_then(|v| redis::from_redis_value(v).ok());
            let port: Option<u16> = primary.get(1).and_then(|v| redis::from_redis_value(v).ok());
            if let (Some(h), Some(p)) = (host, port) {
                if !out.contains(&(h.clone(), p)) {
                    out.push((h, p));
                }
            }
        }
        Ok(out)
    }
}

fn timed_out(what: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what}: no answer in time"),
    ))
}

/// Whether the Redis behind `conn` runs in cluster mode (`INFO cluster`); false when the
/// server refuses to say (an ACL user without `INFO`).
pub async fn is_cluster<C: ConnectionLike + Send>(conn: &mut C) -> RedisResult<bool> {
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

/// What Redis Cluster hashes of `key`: the text between the first `{` and the next `}`
/// when it is not empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|b| *b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|b| *b == b'}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

/// The key a command is routed by (its first key), or None for a command without one.
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        redis::Arg::Cursor => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()?;
        let keys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
        return if keys == 0 { None } else { args.next() };
    }
    const KEYLESS: [&[u8]; 7] = [
        b"PING",
        b"INFO",
        b"SCRIPT",
        b"CLUSTER",
        b"SCAN",
        b"FLUSHALL",
        b"DBSIZE",
    ];
    if KEYLESS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        return None;
    }
    args.next()
}

/// Sends a non-transactional pipeline to a cluster: one sub-pipeline per hash tag,
/// concurrently, the replies in the pipeline's order.
async fn split_pipeline(conn: &ClusterConnection, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let cmds: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_tag: HashMap<&[u8], usize> = HashMap::new();
    for (i, cmd) in cmds.iter().enumerate() {
        match first_key(cmd).map(hash_tag) {
            Some(tag) => {
                let g = *by_tag.entry(tag).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
            }
            None => groups.push(vec![i]),
        }
    }
    if groups.len() == 1 {
        return conn
            .clone()
            .req_packed_commands(pipeline, 0, cmds.len())
            .await;
    }
    let sends = groups.iter().map(|idx| {
        let mut sub = redis::pipe();
        for i in idx {
            sub.add_command(cmds[*i].clone());
        }
        let mut c = conn.clone();
        async move { c.req_packed_commands(&sub, 0, idx.len()).await }
    });
    let replies = try_join_all(sends).await?;
    let mut out = vec![Value::Nil; cmds.len()];
    for (idx, values) in groups.iter().zip(replies) {
        for (i, v) in idx.iter().zip(values) {
            out[*i] = v;
        }
    }
    Ok(out)
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let whole = !pipeline.is_transaction() && offset == 0 && count == pipeline.len();
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) if whole => {
                let c = c.clone();
                Box::pin(async move { split_pipeline(&c, pipeline).await })
            }
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Walks `SCAN … MATCH pattern` over every primary of a cluster (one after another), or
/// over the one server.
pub struct Scan {
    pattern: String,
    count: usize,
    /// The primaries still to walk (None: the standalone server).
    nodes: Vec<Option<(String, u16)>>,
    cursor: u64,
}

impl Scan {
    pub async fn new(conn: &mut Redis, pattern: &str, count: usize) -> RedisResult<Self> {
        let mut nodes: Vec<Option<(String, u16)>> = if conn.is_cluster() {
            conn.primaries().await?.into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        nodes.reverse();
        Ok(Self {
            pattern: pattern.to_owned(),
            count,
            nodes,
            cursor: 0,
        })
    }

    /// The next page of keys (possibly empty), or None once every node is walked.
    pub async fn next_page(&mut self, conn: &mut Redis) -> RedisResult<Option<Vec<String>>> {
        let Some(node) = self.nodes.last().cloned() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(self.count);
        let (next, keys): (u64, Vec<String>) = match (conn, node) {
            (Redis::Cluster(c), Some((host, port))) => {
                let at = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                redis::from_redis_value(&c.route_command(&cmd, at).await?)?
            }
            (conn, _) => cmd.query_async(conn).await?,
        };
        self.cursor = next;
        if next == 0 {
            self.nodes.pop();
        }
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_are_read_as_redis_cluster_reads_them() {
        assert_eq!(hash_tag(b"cf:{p3}:c-1:f"), b"p3");
        assert_eq!(hash_tag(b"cf:{c-1}:f"), b"c-1");
        assert_eq!(hash_tag(b"cf:segments"), b"cf:segments");
        // An empty tag or an unclosed brace hashes the whole key.
        assert_eq!(hash_tag(b"a{}b"), b"a{}b");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        // Only the first braces count.
        assert_eq!(hash_tag(b"{x}{y}"), b"x");
    }

    #[test]
    fn commands_route_by_their_first_key() {
        let mut get = redis::cmd("GET");
        get.arg("cf:{p1}:a:f");
        assert_eq!(first_key(&get), Some(&b"cf:{p1}:a:f"[..]));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(2).arg("k1").arg("k2").arg("v");
        assert_eq!(first_key(&eval), Some(&b"k1"[..]));
        let mut none = redis::cmd("EVAL");
        none.arg("return 1").arg(0);
        assert_eq!(first_key(&none), None);
        let mut info = redis::cmd("INFO");
        info.arg("cluster");
        assert_eq!(first_key(&info), None);
    }
}

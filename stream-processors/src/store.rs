//! Reading and writing customer states in Redis, pipelined: one round trip per batch.
//! Every read and write is guarded by the state markers of the partitions involved
//! (`Keys::partition_state`): a Redis that lost its data is noticed, not written into.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use custflow_feature_store::keys::{self, scan_page, Keys};
use custflow_feature_store::sales::Rollups;
use custflow_feature_store::state::CustomerState;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;

use crate::error::{Error, Result};
use crate::pass::{IndexPos, PassCursor};

/// Runs the commands that follow in ARGV (each as its argument count, then its
/// arguments) only when every marker in KEYS still holds the value the batch's load saw
/// (ARGV[1..#KEYS]), and gives each marker a new token (ARGV[#KEYS+1]). Otherwise writes
/// nothing and returns the 1-based indices of the missing markers, and the negated ones
/// of the changed markers. A script is atomic: nothing can wipe Redis between the check
/// and the writes, a restarted Redis cannot receive half a batch, and a write that was
/// delayed (a stuck connection, a retried batch, an instance that lost its partitions)
/// cannot land after a newer one.
static GUARDED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local bad = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then bad[#bad + 1] = i
  elseif v ~= ARGV[i] then bad[#bad + 1] = -i end
end
if #bad > 0 then return bad end
local token = ARGV[#KEYS + 1]
for i, k in ipairs(KEYS) do
  local state = string.match(ARGV[i], '^(%a+)') or 'ready'
  redis.call('SET', k, state .. ':' .. token)
end
local i = #KEYS + 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return bad
",
    )
});

/// Sets the ready key (ARGV[1]) when every marker in KEYS says `ready`, and removes it
/// otherwise; returns 1 when ready.
static PUBLISH_READY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v or string.sub(v, 1, 6) ~= 'ready:' then
    redis.call('DEL', ARGV[1])
    return 0
  end
end
redis.call('SET', ARGV[1], '1')
return 1
",
    )
});

/// Most key/value (or score/member) pairs per command the save script runs: well inside
/// Lua's limit on the values one `unpack` may return (8,000).
const PAIRS_PER_COMMAND: usize = 1000;

/// Most customers per partition one sweep rescores for crossing the at-risk threshold;
/// more (after an outage) wait for the following sweeps.
pub const CROSSINGS_PER_SWEEP: usize = 1000;

/// Longest wait for a Redis reply before the batch fails and is retried.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A partition's state in Redis, from its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    /// No marker: Redis never had this partition's state, or lost it.
    Missing,
    /// Being replayed from the start of the partition.
    Rebuilding,
    Ready,
}

/// The markers of a batch's partitions as its load saw them: its save writes only if
/// they are unchanged.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    markers: Vec<(i32, String)>,
}

/// The Redis side of a processor.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
    /// Makes this process's marker tokens unique among all processes.
    nonce: String,
    tokens: Arc<AtomicU64>,
}

/// One customer's write: the state and, when it has one, its last order time for the
/// at-risk index of its partition.
pub struct Write<'a> {
    pub customer: &'a str,
    pub state: &'a CustomerState,
    pub partition: i32,
    pub last_order_at: Option<i64>,
}

impl Store {
    /// Connects with a response timeout: a stuck Redis (or a connection to it) fails the
    /// batch, which is retried, instead of holding the processor forever.
    pub async fn connect(url: &str, keys: Keys) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_connection_timeout(Duration::from_secs(5));
        let mut conn = ConnectionManager::new_with_config(client, config).await?;
        if keys::is_cluster(&mut conn).await? {
            return Err(Error::Config(format!(
                "the Redis at --redis {}",
                keys::CLUSTER_UNSUPPORTED
            )));
        }
        let nonce = format!(
            "{:x}{:x}",
            custflow_schemas::time::now_ms(),
            std::process::id()
        );
        Ok(Self {
            conn,
            keys,
            nonce,
            tokens: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A marker token no other write uses.
    fn token(&self) -> String {
        let n = self.tokens.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.nonce)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The stored states of `customers` (a fresh state for unknown ones), who belong to
    /// `partitions`, and the guard to save them with; [`Error::StateLost`] when a
    /// partition's marker is missing.
    pub async fn load(
        &self,
        customers: &[&str],
        partitions: &[i32],
    ) -> Result<(HashMap<String, CustomerState>, Guard)> {
        let mut pipe = redis::pipe();
        for p in partitions {
            pipe.get(self.keys.partition_state(*p));
        }
        for c in customers {
            pipe.get(self.keys.features(c));
        }
        let mut raw: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let states = raw.split_off(partitions.len().min(raw.len()));
        let mut lost = Vec::new();
        let mut guard = Guard::default();
        for (p, v) in partitions.iter().zip(raw) {
            match redis::from_redis_value::<Option<String>>(&v)? {
                Some(marker) => guard.markers.push((*p, marker)),
                None => lost.push(*p),
            }
        }
        if !lost.is_empty() {
            return Err(Error::StateLost(lost));
        }
        let raw: Vec<Option<Vec<u8>>> = states
            .iter()
            .map(redis::from_redis_value)
            .collect::<redis::RedisResult<_>>()?;
        let mut out = HashMap::with_capacity(customers.len());
        for (c, bytes) in customers.iter().zip(raw) {
            let state = match bytes {
                None => CustomerState::default(),
                Some(b) => CustomerState::decode(&b).map_err(|e| Error::CorruptState {
                    customer: (*c).to_owned(),
                    reason: e.to_string(),
                })?,
            };
            out.insert((*c).to_owned(), state);
        }
        Ok((out, guard))
    }

    /// Writes states, index entries, counter changes and sales rollups in one script
    /// (all or nothing, so a crash mid-write cannot half-apply a batch, and a replayed
    /// batch finds its events applied), only if the markers of the partitions exist and are
    /// ([`Error::StateLost`] otherwise) unchanged ([`Error::Conflict`] otherwise) since
    /// the load that gave `guard`; returns once Redis confirmed.
    ///
    /// `passes` are the rescoring pass cursors the writes move (saved with them, so a
    /// restarted pass neither repeats nor skips a slice).
    pub async fn save(
        &self,
        writes: &[Write<'_>],
        counts: &[(String, i64)],
        rollups: &Rollups<'_>,
        guard: &Guard,
        passes: &[(i32, &PassCursor)],
    ) -> Result<()> {
        if writes.is_empty() && passes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (p, cursor) in passes {
            pipe.set(self.keys.model_pass(*p), cursor.encode()).ignore();
        }
        let counters = self.keys.segment_counts();
        for (field, delta) in counts.iter().filter(|(_, d)| *d != 0) {
            pipe.hincr(&counters, field, *delta).ignore();
        }
        // Few commands with many arguments: the script's cost is per command it runs.
        let mut index_adds: BTreeMap<i32, Vec<(i64, &str)>> = BTreeMap::new();
        let mut index_removes: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
        for chunk in writes.chunks(PAIRS_PER_COMMAND) {
            let mut mset = redis::cmd("MSET");
            for w in chunk {
                mset.arg(self.keys.features(w.customer))
                    .arg(w.state.encode());
                match w.last_order_at {
                    Some(at) => index_adds
                        .entry(w.partition)
                        .or_default()
                        .push((at, w.customer)),
                    // Erased: out of the sweeps' index too.
                    None if w.state.is_blank() => index_removes
                        .entry(w.partition)
                        .or_default()
                        .push(w.customer),
                    None => {}
                }
            }
            pipe.add_command(mset).ignore();
        }
        for (p, members) in &index_adds {
            for chunk in members.chunks(PAIRS_PER_COMMAND) {
                pipe.zadd_multiple(self.keys.last_order_index(*p), chunk)
                    .ignore();
            }
        }
        for (p, members) in &index_removes {
            for chunk in members.chunks(PAIRS_PER_COMMAND) {
                pipe.zrem(self.keys.last_order_index(*p), chunk).ignore();
            }
        }
        rollups.write(&mut pipe, &self.keys);
        self.guarded(&pipe, guard).await
    }

    /// Runs `pipe`'s commands in the [`GUARDED`] script.
    async fn guarded(&self, pipe: &redis::Pipeline, guard: &Guard) -> Result<()> {
        let mut inv = GUARDED.prepare_invoke();
        for (p, _) in &guard.markers {
            inv.key(self.keys.partition_state(*p));
        }
        for (_, marker) in &guard.markers {
            inv.arg(marker);
        }
        inv.arg(self.token());
        for cmd in pipe.cmd_iter() {
            let args: Vec<&[u8]> = cmd
                .args_iter()
                .filter_map(|a| match a {
                    redis::Arg::Simple(b) => Some(b),
                    redis::Arg::Cursor => None,
                })
                .collect();
            inv.arg(args.len());
            for a in args {
                inv.arg(a);
            }
        }
        let bad: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await?;
        if bad.is_empty() {
            return Ok(());
        }
        let partition = |i: i64| {
            let i = usize::try_from(i.unsigned_abs()).ok()?.checked_sub(1)?;
            guard.markers.get(i).map(|(p, _)| *p)
        };
        let lost: Vec<i32> = bad
            .iter()
            .filter(|i| **i > 0)
            .filter_map(|i| partition(*i))
            .collect();
        if !lost.is_empty() {
            return Err(Error::StateLost(lost));
        }
        Err(Error::Conflict(
            bad.iter().filter_map(|i| partition(*i)).collect(),
        ))
    }

    /// The markers of `partitions`.
    pub async fn partition_states(&self, partitions: &[i32]) -> Result<Vec<PartitionState>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = partitions
            .iter()
            .map(|p| self.keys.partition_state(*p))
            .collect();
        let raw: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(raw
            .iter()
            .map(|v| match v.as_deref() {
                None => PartitionState::Missing,
                Some(v) if v.starts_with("ready:") => PartitionState::Ready,
                Some(_) => PartitionState::Rebuilding,
            })
            .collect())
    }

    /// Marks `partitions` as being rebuilt (and the deployment as not ready).
    pub async fn mark_rebuilding(&self, partitions: &[i32]) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for p in partitions {
            pipe.set(
                self.keys.partition_state(*p),
                format!("rebuilding:{}", self.token()),
            )
            .ignore();
        }
        pipe.del(self.keys.state_ready()).ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Marks partition `p` as caught up.
    pub async fn mark_ready(&self, p: i32) -> Result<()> {
        let () = redis::cmd("SET")
            .arg(self.keys.partition_state(p))
            .arg(format!("ready:{}", self.token()))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Sets or clears the deployment's ready key from the markers of all `partitions`
    /// input partitions; true when ready.
    pub async fn publish_ready(&self, partitions: i32) -> Result<bool> {
        let mut inv = PUBLISH_READY.prepare_invoke();
        for p in 0..partitions {
            inv.key(self.keys.partition_state(p));
        }
        inv.arg(self.keys.state_ready());
        let ready: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(ready == 1)
    }

    /// The rescoring pass cursors of `partitions` (a cursor before any pass where none
    /// is stored, or the stored one is unreadable).
    pub async fn passes(&self, partitions: &[i32]) -> Result<Vec<PassCursor>> {
        let mut pipe = redis::pipe();
        for p in partitions {
            pipe.get(self.keys.model_pass(*p));
        }
        let raw: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(partitions
            .iter()
            .zip(raw)
            .map(|(p, bytes)| {
                let bytes = bytes?;
                PassCursor::decode(&bytes)
                    .map_err(|e| {
                        tracing::warn!(partition = p, error = %e, "unreadable rescoring pass cursor; starting over");
                    })
                    .ok()
            })
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// Up to `count` places of partition `p`'s last-order index after `after` (from the
    /// start when `None`) and at or before `until` (to the end when `None`), in the
    /// index's order: last order time, then customer id.
    pub async fn index_after(
        &self,
        p: i32,
        after: Option<&IndexPos>,
        until: Option<i64>,
        count: usize,
    ) -> Result<Vec<IndexPos>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let key = self.keys.last_order_index(p);
        let min = after.map_or_else(|| "-inf".to_owned(), |(at, _)| at.to_string());
        let max = until.map_or_else(|| "+inf".to_owned(), |at| at.to_string());
        let mut limit = count;
        loop {
            let raw: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(&key)
                .arg(&min)
                .arg(&max)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut self.conn.clone())
                .await?;
            let full = raw.len() == limit;
            let mut page: Vec<IndexPos> = raw
                .into_iter()
                .map(|(customer, at)| (at as i64, customer))
                .filter(|pos| after.is_none_or(|a| pos > a))
                .collect();
            // Those left out are tied with `after` at its time and come first: when
            // they filled the page, ask again for as many more.
            if page.len() >= count || !full {
                page.truncate(count);
                return Ok(page);
            }
            limit = limit - page.len() + count;
        }
    }

    /// Customers of partition `p` to rescore: up to [`CROSSINGS_PER_SWEEP`] of those
    /// whose last order crossed `threshold` since the previous sweep (the rest at the
    /// next), plus the next `rotate` of the index in rotation. A partition's first sweep
    /// starts its crossings at `threshold`: customers already past it are scored by the
    /// partition's first rescoring pass, not all at once by a sweep.
    pub async fn sweep_candidates(
        &self,
        p: i32,
        threshold: i64,
        rotate: usize,
    ) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let idx = self.keys.last_order_index(p);
        let cursor_key = format!("{}:{{p{p}}}", self.keys.sweep_prefix());
        let (crossed_at, crossed_id, pos): (Option<i64>, Option<String>, Option<i64>) =
            redis::cmd("HMGET")
                .arg(&cursor_key)
                .arg("crossed_at")
                .arg("crossed_id")
                .arg("rotation")
                .query_async(&mut conn)
                .await?;
        let mut crossed: IndexPos = match crossed_at {
            Some(at) => (at, crossed_id.unwrap_or_default()),
            None => (threshold, String::new()),
        };
        let page = self
            .index_after(p, Some(&crossed), Some(threshold), CROSSINGS_PER_SWEEP)
            .await?;
        if let Some(last) = page.last() {
            crossed = last.clone();
        }
        let mut out: Vec<String> = page.into_iter().map(|(_, c)| c).collect();
        let pos = pos.unwrap_or(0).max(0);
        let mut next_pos = pos;
        if rotate > 0 {
            let slice: Vec<String> = conn
                .zrange(&idx, pos as isize, (pos as usize + rotate - 1) as isize)
                .await?;
            next_pos = if slice.len() < rotate {
                0
            } else {
                pos + rotate as i64
            };
            out.extend(slice);
        }
        out.sort();
        out.dedup();
        let () = redis::cmd("HSET")
            .arg(&cursor_key)
            .arg("crossed_at")
            .arg(crossed.0)
            .arg("crossed_id")
            .arg(&crossed.1)
            .arg("rotation")
            .arg(next_pos)
            .query_async(&mut conn)
            .await?;
        Ok(out)
    }

    /// Deletes every key custflow wrote (for `process --rebuild`).
    pub async fn wipe(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut deleted = 0u64;
        let () = redis::cmd("DEL")
            .arg(self.keys.segment_counts())
            .query_async(&mut conn)
            .await?;
        for pattern in self.keys.patterns() {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch) = scan_page(&mut conn, cursor, &pattern, 1000).await?;
                if !batch.is_empty() {
                    let n: u64 = redis::cmd("UNLINK")
                        .arg(&batch)
                        .query_async(&mut conn)
                        .await?;
                    deleted += n;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

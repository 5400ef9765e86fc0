//! Reading and writing customer states in Redis, pipelined: one round trip per batch.
//! Every read and write is guarded by the state markers of the partitions involved
//! (`Keys::partition_state`): a Redis that lost its data is noticed, not written into.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use custflow_feature_store::conn::{Redis, Scan, Timeouts};
use custflow_feature_store::keys::{glob_match, Keys};
use custflow_feature_store::sales::Rollups;
use custflow_feature_store::state::CustomerState;
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
/// cannot land after a newer one. Used on a Redis Cluster; a standalone Redis gets the
/// same guarantees from a `WATCH`ed transaction ([`Store::guarded`]), at half the cost.
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

/// Room reserved per state in a save's `MSET` (most states are smaller: 366 B on
/// average at a million customers, BENCHMARKS.md), so its buffer rarely grows.
const STATE_BYTES: usize = 512;

/// A customer state as a command argument: encoded into a buffer the thread reuses, then
/// copied into the command's buffer in one piece.
struct Encoded<'a>(&'a CustomerState);

impl redis::ToRedisArgs for Encoded<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            self.0.encode_to(buf);
            out.write_arg(buf);
        });
    }
}

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
/// they are unchanged. Also which customers had no state yet (on a cluster their
/// locators are written with their first state).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    markers: Vec<(i32, String)>,
    fresh: HashSet<String>,
}

/// A batch's writes, encoded ([`Store::plan_save`]): on a cluster the locators and
/// distinct-customer counts first, then one guarded script per partition (a single one
/// on a standalone Redis), each with the markers it is guarded by and the token it
/// gives them.
/// Cloned cheaply: the encoded commands are shared.
#[derive(Default, Clone)]
pub struct SavePlan {
    first: Arc<redis::Pipeline>,
    scripts: Vec<Script>,
}

/// One guarded script of a [`SavePlan`].
#[derive(Clone)]
struct Script {
    pipe: Arc<redis::Pipeline>,
    markers: Vec<(i32, String)>,
    token: String,
}

impl SavePlan {
    /// The markers of the plan's partitions once it is saved ([`marker_after`]).
    pub fn markers_after(&self) -> impl Iterator<Item = (i32, String)> + '_ {
        self.scripts.iter().flat_map(|s| {
            s.markers
                .iter()
                .map(|(p, marker)| (*p, marker_after(marker, &s.token)))
        })
    }
}

/// What a save leaves in a partition's marker that was `marker`: its state word (`ready`
/// when it has none), then the save's token — as [`GUARDED`] does on a cluster.
fn marker_after(marker: &str, token: &str) -> String {
    let word: String = marker
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect();
    let word = if word.is_empty() { "ready" } else { &word };
    format!("{word}:{token}")
}

impl Guard {
    /// Expects the markers `plan` leaves where it writes: a load that may have run
    /// before that plan's save (the next batch, read while this one is saved) guards
    /// its own save by them.
    pub fn follow(&mut self, plan: &SavePlan) {
        for (p, after) in plan.markers_after() {
            if let Some((_, marker)) = self.markers.iter_mut().find(|(q, _)| *q == p) {
                *marker = after;
            }
        }
    }
}

/// Segment count changes of a batch: (input partition, field, delta).
pub type Counts = [(i32, String, i64)];

/// The Redis side of a processor.
#[derive(Clone)]
pub struct Store {
    conn: Redis,
    keys: Keys,
    /// Makes this process's marker tokens unique among all processes.
    nonce: String,
    tokens: Arc<AtomicU64>,
    /// On a standalone Redis, the connection saves run their `WATCH`ed transactions on
    /// (a `WATCH` belongs to its connection, so no other command shares it), made when
    /// first needed and dropped after a failure; `None` on a cluster.
    saver: Option<Arc<tokio::sync::Mutex<Saver>>>,
}

/// The connection of a standalone Redis's saves ([`Store::saver`]).
struct Saver {
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
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
        let timeouts = Timeouts {
            connect: Duration::from_secs(5),
            response: Some(RESPONSE_TIMEOUT),
        };
        let conn = Redis::connect(url, timeouts).await?;
        let keys = keys.in_cluster(conn.is_cluster());
        let saver = (!conn.is_cluster())
            .then(|| redis::Client::open(url))
            .transpose()?
            .map(|client| Arc::new(tokio::sync::Mutex::new(Saver { client, conn: None })));
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
            saver,
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

    pub fn connection(&self) -> Redis {
        self.conn.clone()
    }

    /// The stored states of `customers` (each with the input partition its events come
    /// from; a fresh state for unknown ones), and the guard to save them with: the
    /// markers of `partitions`. [`Error::StateLost`] when a marker is missing.
    pub async fn load(
        &self,
        customers: &[(&str, i32)],
        partitions: &[i32],
    ) -> Result<(HashMap<String, CustomerState>, Guard)> {
        let mut pipe = redis::pipe();
        for p in partitions {
            pipe.get(self.keys.partition_state(*p));
        }
        for (c, p) in customers {
            pipe.get(self.keys.features(c, *p));
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
        let mut out = HashMap::with_capacity(customers.len());
        for ((c, _), value) in customers.iter().zip(&states) {
            // Decoded from the reply's bytes where they lie (no copy of each state);
            // anything but a string or nil is converted (an error reply fails the load).
            let converted;
            let bytes = match value {
                redis::Value::Nil => None,
                redis::Value::BulkString(b) => Some(b),
                other => {
                    converted = redis::from_redis_value::<Option<Vec<u8>>>(other)?;
                    converted.as_ref()
                }
            };
            let state = match bytes {
                None => {
                    if self.keys.is_cluster() {
                        guard.fresh.insert((*c).to_owned());
                    }
                    CustomerState::default()
                }
                Some(b) => CustomerState::decode(b).map_err(|e| Error::CorruptState {
                    customer: (*c).to_owned(),
                    reason: e.to_string(),
                })?,
            };
            out.insert((*c).to_owned(), state);
        }
        Ok((out, guard))
    }

    /// The save of a batch: writes states, index entries, counter changes and sales
    /// rollups in one guarded step ([`Store::guarded`]: all or nothing, so a crash
    /// mid-write cannot half-apply a batch, and a replayed batch finds its events
    /// applied), only if the markers of the partitions exist and are
    /// ([`Error::StateLost`] otherwise) unchanged ([`Error::Conflict`] otherwise) since
    /// the load that gave `guard`.
    ///
    /// On a Redis Cluster it is one such script per partition, each on the node of its
    /// partition's slot: a partition's writes are all or nothing, and a batch whose
    /// scripts partly failed is retried, its applied partitions finding their events
    /// applied. The locators of new customers and the distinct-customer HyperLogLogs
    /// (idempotent, in other slots) are written first.
    ///
    /// `rollups` are the sales rollups by input partition (all under one, any, on a
    /// standalone Redis); `passes` are the rescoring pass cursors the writes move (saved
    /// with them, so a restarted pass neither repeats nor skips a slice).
    ///
    /// The commands are encoded and owned here and written by [`Store::run_save`]: the
    /// batch's borrowed data can go (and the next batch be prepared) meanwhile.
    pub fn plan_save(
        &self,
        writes: &[Write<'_>],
        counts: &Counts,
        rollups: &BTreeMap<i32, Rollups<'_>>,
        guard: &Guard,
        passes: &[(i32, &PassCursor)],
    ) -> SavePlan {
        let mut plan = SavePlan::default();
        if writes.is_empty() && passes.is_empty() {
            return plan;
        }
        if !self.keys.is_cluster() {
            let mut pipe = redis::pipe();
            self.batch_writes(&mut pipe, None, writes, counts, rollups, passes);
            for r in rollups.values() {
                r.write_customers(&mut pipe, &self.keys);
            }
            plan.scripts.push(Script {
                pipe: Arc::new(pipe),
                markers: guard.markers.clone(),
                token: self.token(),
            });
            return plan;
        }
        let mut first = redis::pipe();
        for w in writes.iter().filter(|w| guard.fresh.contains(w.customer)) {
            first
                .set(self.keys.locator(w.customer), w.partition)
                .ignore();
        }
        for r in rollups.values() {
            r.write_customers(&mut first, &self.keys);
        }
        plan.first = Arc::new(first);
        for (p, marker) in &guard.markers {
            let mut pipe = redis::pipe();
            self.batch_writes(&mut pipe, Some(*p), writes, counts, rollups, passes);
            plan.scripts.push(Script {
                pipe: Arc::new(pipe),
                markers: vec![(*p, marker.clone())],
                token: self.token(),
            });
        }
        plan
    }

    /// Writes a [`SavePlan`]; returns once Redis confirmed. The save runs on a task of
    /// its own: a standalone Redis's transaction takes several round trips, which go on
    /// while the caller's task applies the next batch (`join`ed in one task, each round
    /// trip waited for the whole application).
    pub async fn run_save(&self, plan: &SavePlan) -> Result<()> {
        let (store, plan) = (self.clone(), plan.clone());
        tokio::spawn(async move { store.write_plan(&plan).await })
            .await
            .map_err(|e| Error::Config(format!("the save's task failed: {e}")))?
    }

    async fn write_plan(&self, plan: &SavePlan) -> Result<()> {
        if !plan.first.is_empty() {
            let () = plan.first.query_async(&mut self.conn.clone()).await?;
        }
        let scripts = plan
            .scripts
            .iter()
            .map(|s| self.guarded(&s.pipe, &s.markers, &s.token));
        let (mut lost, mut conflict) = (Vec::new(), Vec::new());
        for r in futures::future::join_all(scripts).await {
            match r {
                Ok(()) => {}
                Err(Error::StateLost(p)) => lost.extend(p),
                Err(Error::Conflict(p)) => conflict.extend(p),
                Err(e) => return Err(e),
            }
        }
        if !lost.is_empty() {
            return Err(Error::StateLost(lost));
        }
        if !conflict.is_empty() {
            return Err(Error::Conflict(conflict));
        }
        Ok(())
    }

    /// Adds to `pipe` the writes of the batch that belong to input partition `only` (all
    /// when None): states, index entries, pass cursors, segment counts, sales rollups.
    fn batch_writes(
        &self,
        pipe: &mut redis::Pipeline,
        only: Option<i32>,
        writes: &[Write<'_>],
        counts: &Counts,
        rollups: &BTreeMap<i32, Rollups<'_>>,
        passes: &[(i32, &PassCursor)],
    ) {
        let mine = |p: i32| only.is_none_or(|o| o == p);
        for (p, cursor) in passes.iter().filter(|(p, _)| mine(*p)) {
            pipe.set(self.keys.model_pass(*p), cursor.encode()).ignore();
        }
        // Summed per key first: one command per counter.
        let mut deltas: BTreeMap<(String, &str), i64> = BTreeMap::new();
        for (p, field, delta) in counts.iter().filter(|(p, _, _)| mine(*p)) {
            *deltas
                .entry((self.keys.segment_counts(*p), field.as_str()))
                .or_default() += delta;
        }
        for ((key, field), delta) in deltas.iter().filter(|(_, d)| **d != 0) {
            pipe.hincr(key, *field, *delta).ignore();
        }
        // Few commands with many arguments: the script's cost is per command it runs.
        let mine_writes: Vec<&Write<'_>> = writes.iter().filter(|w| mine(w.partition)).collect();
        let mut index_adds: BTreeMap<i32, Vec<(i64, &str)>> = BTreeMap::new();
        let mut index_removes: BTreeMap<i32, Vec<&str>> = BTreeMap::new();
        for chunk in mine_writes.chunks(PAIRS_PER_COMMAND) {
            let mut mset =
                redis::Cmd::with_capacity(1 + 2 * chunk.len(), STATE_BYTES * chunk.len());
            mset.arg("MSET");
            for w in chunk {
                mset.arg(self.keys.features(w.customer, w.partition))
                    .arg(Encoded(w.state));
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
        for (p, r) in rollups.iter().filter(|(p, _)| mine(**p)) {
            r.write(pipe, &self.keys, *p);
        }
    }

    /// Runs `pipe`'s commands if the markers are as expected, giving them `token`: in a
    /// `WATCH`ed transaction on a standalone Redis, in the [`GUARDED`] script on a
    /// cluster. Both write all or nothing, and nothing when a marker is missing or moved.
    async fn guarded(
        &self,
        pipe: &redis::Pipeline,
        markers: &[(i32, String)],
        token: &str,
    ) -> Result<()> {
        match &self.saver {
            Some(saver) => {
                let mut saver = saver.lock().await;
                let result = self.watched(&mut saver, pipe, markers, token).await;
                if matches!(result, Err(Error::Redis(_))) {
                    // A connection that failed mid-transaction may still hold its WATCH
                    // or MULTI: the next save starts on a new one.
                    saver.conn = None;
                }
                result
            }
            None => self.scripted(pipe, markers, token).await,
        }
    }

    /// [`Store::guarded`] on a standalone Redis: `WATCH` the markers and read them, then
    /// `MULTI`, the new markers, `pipe`'s commands and `EXEC`, which writes nothing if a
    /// marker changed after the `WATCH`. A Lua script did this before, and spent more of
    /// Redis's time copying the arguments in and out of Lua than on the writes
    /// (BENCHMARKS.md, "Processing").
    async fn watched(
        &self,
        saver: &mut Saver,
        pipe: &redis::Pipeline,
        markers: &[(i32, String)],
        token: &str,
    ) -> Result<()> {
        let conn = match &mut saver.conn {
            Some(c) => c,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Duration::from_secs(5))
                    .set_response_timeout(RESPONSE_TIMEOUT);
                let c = saver
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                saver.conn.insert(c)
            }
        };
        let keys: Vec<String> = markers
            .iter()
            .map(|(p, _)| self.keys.partition_state(*p))
            .collect();
        // A save guarded by no partition (none does so today) watches nothing: `WATCH`
        // with no key is an error, and the script wrote such a save unguarded too.
        let found: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            let ((), found) = redis::pipe()
                .cmd("WATCH")
                .arg(&keys)
                .cmd("MGET")
                .arg(&keys)
                .query_async(conn)
                .await?;
            found
        };
        let (mut lost, mut moved) = (Vec::new(), Vec::new());
        for ((p, expected), now) in markers.iter().zip(&found) {
            match now {
                None => lost.push(*p),
                Some(now) if now != expected => moved.push(*p),
                Some(_) => {}
            }
        }
        if !lost.is_empty() || !moved.is_empty() {
            let () = redis::cmd("UNWATCH").query_async(conn).await?;
            return Err(if lost.is_empty() {
                Error::Conflict(moved)
            } else {
                Error::StateLost(lost)
            });
        }
        let mut open = redis::pipe();
        open.cmd("MULTI").ignore();
        for (key, (_, marker)) in keys.iter().zip(markers) {
            open.set(key, marker_after(marker, token)).ignore();
        }
        let () = open.query_async(conn).await?;
        if !pipe.is_empty() {
            let () = pipe.query_async(conn).await?;
        }
        match redis::cmd("EXEC").query_async::<redis::Value>(conn).await? {
            redis::Value::Nil => Err(Error::Conflict(markers.iter().map(|(p, _)| *p).collect())),
            redis::Value::Array(replies) => {
                match replies.into_iter().find_map(|r| r.extract_error().err()) {
                    Some(e) => Err(e.into()),
                    None => Ok(()),
                }
            }
            other => Err(Error::Redis(redis::RedisError::from((
                redis::ErrorKind::ResponseError,
                "EXEC answered neither nil nor an array",
                format!("{other:?}"),
            )))),
        }
    }

    /// [`Store::guarded`] on a cluster: the [`GUARDED`] script, on the node of the
    /// markers' slot.
    async fn scripted(
        &self,
        pipe: &redis::Pipeline,
        markers: &[(i32, String)],
        token: &str,
    ) -> Result<()> {
        let mut inv = GUARDED.prepare_invoke();
        for (p, _) in markers {
            inv.key(self.keys.partition_state(*p));
        }
        for (_, marker) in markers {
            inv.arg(marker);
        }
        inv.arg(token);
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
            markers.get(i).map(|(p, _)| *p)
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
        for p in partitions {
            pipe.set(
                self.keys.partition_state(*p),
                format!("rebuilding:{}", self.token()),
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        if self.keys.is_cluster() {
            // The markers live in other slots than the ready key: they are written first,
            // then the key removed, so a [`Store::publish_ready`] that read them before
            // and set the key is undone after (it also reads them again after setting).
            let () = pipe.query_async(&mut conn).await?;
            let () = conn.del(self.keys.state_ready()).await?;
            return Ok(());
        }
        pipe.atomic();
        pipe.del(self.keys.state_ready()).ignore();
        let () = pipe.query_async(&mut conn).await?;
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
    /// Also records the partition count (the readers of sharded keys and of a rollout's
    /// progress need it).
    pub async fn publish_ready(&self, partitions: i32) -> Result<bool> {
        let () = self
            .conn
            .clone()
            .set(self.keys.partition_count(), partitions)
            .await?;
        if self.keys.is_cluster() {
            return self.publish_ready_cluster(partitions).await;
        }
        let mut inv = PUBLISH_READY.prepare_invoke();
        for p in 0..partitions {
            inv.key(self.keys.partition_state(p));
        }
        inv.arg(self.keys.state_ready());
        let ready: i64 = inv.invoke_async(&mut self.conn.clone()).await?;
        Ok(ready == 1)
    }

    /// [`Store::publish_ready`] on a cluster, where no script spans the markers' slots:
    /// sets the ready key when every marker says ready, then reads the markers again and
    /// takes it back if one changed meanwhile (an instance that marks a partition
    /// rebuilding removes the key after its marker, so the key cannot outlive a
    /// rebuilding marker).
    async fn publish_ready_cluster(&self, partitions: i32) -> Result<bool> {
        let all: Vec<i32> = (0..partitions).collect();
        let mut conn = self.conn.clone();
        let ready = |s: &[PartitionState]| s.iter().all(|s| *s == PartitionState::Ready);
        if ready(&self.partition_states(&all).await?) {
            let () = conn.set(self.keys.state_ready(), "1").await?;
            if ready(&self.partition_states(&all).await?) {
                return Ok(true);
            }
        }
        let () = conn.del(self.keys.state_ready()).await?;
        Ok(false)
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

    /// Deletes every key custflow wrote but the model's (for `process --rebuild`), on
    /// every primary of a cluster.
    pub async fn wipe(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let patterns = self.keys.patterns();
        let (mut deleted, mut seen) = (0u64, 0u64);
        let mut said = Instant::now();
        let mut scan = Scan::new(&mut conn, &self.keys.deployment_pattern(), 10_000).await?;
        while let Some(page) = scan.next_page(&mut conn).await? {
            seen += page.len() as u64;
            let batch: Vec<&String> = page
                .iter()
                .filter(|k| patterns.iter().any(|p| glob_match(p, k)))
                .collect();
            if !batch.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut conn)
                    .await?;
                deleted += n;
            }
            if said.elapsed() >= Duration::from_secs(5) {
                tracing::info!(
                    deleted,
                    seen,
                    "rebuild: wiping the deployment's Redis state"
                );
                said = Instant::now();
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(markers: &[(i32, &str)], token: &str) -> Script {
        Script {
            pipe: Arc::default(),
            markers: markers.iter().map(|(p, m)| (*p, (*m).to_owned())).collect(),
            token: token.to_owned(),
        }
    }

    /// The markers a save leaves are the ones GUARDED writes (its state word, else
    /// `ready`, then the plan's token), and a guard that follows the plan expects them
    /// where the plan writes and keeps its own elsewhere.
    #[test]
    fn a_guard_following_a_plan_expects_the_markers_its_save_leaves() {
        let plan = SavePlan {
            first: Arc::default(),
            scripts: vec![
                script(&[(0, "ready:a-1"), (1, "rebuilding:a-1")], "b-7"),
                script(&[(2, "odd")], "b-8"),
            ],
        };
        let after: Vec<(i32, String)> = plan.markers_after().collect();
        assert_eq!(
            after,
            vec![
                (0, "ready:b-7".to_owned()),
                (1, "rebuilding:b-7".to_owned()),
                (2, "odd:b-8".to_owned()),
            ]
        );
        let mut guard = Guard {
            markers: vec![(1, "rebuilding:a-1".into()), (5, "ready:c-2".into())],
            fresh: HashSet::new(),
        };
        guard.follow(&plan);
        assert_eq!(
            guard.markers,
            vec![(1, "rebuilding:b-7".into()), (5, "ready:c-2".into())]
        );
        let none = script(&[(3, ":x")], "t");
        let plan = SavePlan {
            first: Arc::default(),
            scripts: vec![none],
        };
        assert_eq!(plan.markers_after().next(), Some((3, "ready:t".into())));
    }
}

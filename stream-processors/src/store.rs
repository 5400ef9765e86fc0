//! Reading and writing customer states in Redis, pipelined: one round trip per batch.

use std::collections::HashMap;

use custflow_feature_store::keys::{scan_page, Keys};
use custflow_feature_store::sales::Rollups;
use custflow_feature_store::state::CustomerState;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::error::{Error, Result};

/// The Redis side of a processor.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    keys: Keys,
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
    pub async fn connect(url: &str, keys: Keys) -> Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(Self { conn, keys })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The stored states of `customers` (a fresh state for unknown ones).
    pub async fn load(&self, customers: &[&str]) -> Result<HashMap<String, CustomerState>> {
        let mut pipe = redis::pipe();
        for c in customers {
            pipe.get(self.keys.features(c));
        }
        let raw: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn.clone()).await?;
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
        Ok(out)
    }

    /// Writes states, index entries, counter changes and sales rollups in one MULTI/EXEC
    /// transaction (all or nothing, so a crash mid-write cannot half-apply a batch, and a
    /// replayed batch finds its events applied); returns once Redis confirmed.
    pub async fn save(
        &self,
        writes: &[Write<'_>],
        counts: &[(String, i64)],
        rollups: &Rollups<'_>,
    ) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let counters = self.keys.segment_counts();
        for (field, delta) in counts.iter().filter(|(_, d)| *d != 0) {
            pipe.hincr(&counters, field, *delta).ignore();
        }
        for w in writes {
            pipe.set(self.keys.features(w.customer), w.state.encode())
                .ignore();
            match w.last_order_at {
                Some(at) => {
                    pipe.zadd(self.keys.last_order_index(w.partition), w.customer, at)
                        .ignore();
                }
                // Erased: out of the sweeps' index too.
                None if w.state.is_blank() => {
                    pipe.zrem(self.keys.last_order_index(w.partition), w.customer)
                        .ignore();
                }
                None => {}
            }
        }
        rollups.write(&mut pipe, &self.keys);
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Customers in partition `p`'s last-order index.
    pub async fn index_len(&self, p: i32) -> Result<usize> {
        Ok(redis::cmd("ZCARD")
            .arg(self.keys.last_order_index(p))
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Customers `start..start+count` of partition `p`'s last-order index (by rank).
    pub async fn index_page(&self, p: i32, start: usize, count: usize) -> Result<Vec<String>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("ZRANGE")
            .arg(self.keys.last_order_index(p))
            .arg(start)
            .arg(start + count - 1)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Customers of partition `p` to rescore: those whose last order crossed `threshold`
    /// since the previous sweep, plus the next `rotate` of the index in rotation.
    pub async fn sweep_candidates(
        &self,
        p: i32,
        threshold: i64,
        rotate: usize,
    ) -> Result<Vec<String>> {
        let mut conn = self.conn.clone();
        let idx = self.keys.last_order_index(p);
        let cursor_key = format!("{}:{{p{p}}}", self.keys.sweep_prefix());
        let (since, pos): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(&cursor_key)
            .arg("threshold")
            .arg("rotation")
            .query_async(&mut conn)
            .await?;
        let since = since.unwrap_or(i64::MIN);
        let mut out: Vec<String> = if threshold > since {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&idx)
                .arg(if since == i64::MIN {
                    "-inf".to_owned()
                } else {
                    format!("({since}")
                })
                .arg(threshold)
                .query_async(&mut conn)
                .await?
        } else {
            Vec::new()
        };
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
            .arg("threshold")
            .arg(threshold.max(since))
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

//! Reading and writing customer states in Redis, pipelined: one round trip per batch.

use std::collections::HashMap;

use custflow_feature_store::keys::Keys;
use custflow_feature_store::state::CustomerState;
use redis::aio::ConnectionManager;

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

    /// Writes states and index entries in one pipeline; returns once Redis confirmed.
    pub async fn save(&self, writes: &[Write<'_>]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for w in writes {
            pipe.set(self.keys.features(w.customer), w.state.encode())
                .ignore();
            if let Some(at) = w.last_order_at {
                pipe.zadd(self.keys.last_order_index(w.partition), w.customer, at)
                    .ignore();
            }
        }
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Deletes every key custflow wrote (for `process --rebuild`).
    pub async fn wipe(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let mut deleted = 0u64;
        for pattern in self.keys.patterns() {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
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

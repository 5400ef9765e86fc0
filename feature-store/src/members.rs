//! Which instance of a deployment consumes which partitions. Each consuming process keeps
//! a lease in Redis (a sorted set of member ids scored by expiry, renewed every second),
//! and every member derives the same split of the partitions from the live members:
//! partition `p` goes to the `p mod n`-th of the `n` live ids in order.
//!
//! This replaces the Kafka group protocol for custflow's consumers. tansu's coordinator
//! (0.6) keeps a dead member's assignment when it expires the member in a formed group, so
//! a restarted or scaled-down deployment could wait for ever on partitions nobody reads
//! (docs/operations.md, "Restarts"). A lease expires by itself; a clean stop removes it at
//! once. Offsets still go to the broker under the group's id (commits without a
//! membership), so Kafka's tools show the positions and the lag.
//!
//! The consumer's side (applying a share to a Kafka consumer) is
//! `custflow_kafka::assignment`.

use std::time::{Duration, Instant};

use redis::Script;
use tokio::sync::watch;

use crate::conn::Redis;

/// How long a member's lease lasts without renewal: a killed member's partitions move to
/// the others this long after its last renewal.
pub const LEASE: Duration = Duration::from_secs(10);

/// How often a member renews its lease and reads the others'.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Drops the expired leases, renews `ARGV[3]`'s (expiry `ARGV[1]` ms from the server's
/// clock) unless another process holds that id, and returns the live ids. A lease is held
/// by the process whose nonce (`ARGV[2]`) is kept in `KEYS[2]`; a live lease of another
/// nonce is not taken over: the reply is then `{'held', ms left}`.
static RENEW: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local holder = redis.call('HGET', KEYS[2], ARGV[3])
if holder and holder ~= ARGV[2] then
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[3])
  return {'held', tostring(tonumber(until_ms) - now)}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[2], 10 * tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
",
    )
});

/// Removes `ARGV[1]`'s lease if this process (nonce `ARGV[2]`) holds it.
static LEAVE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 0
",
    )
});

/// Errors of a membership.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// Another live process renews the lease of the same explicit instance id.
    #[error(
        "another running process uses instance id {0:?} for {1}: give each instance its own \
         --instance-id, or leave it out (each process then gets a fresh one)"
    )]
    Taken(String, String),
}

/// The partitions of a role this process owns, as its last lease renewal saw them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Share {
    /// Owned partition numbers, ascending; empty until the first renewal, and after the
    /// lease could not be renewed for nearly [`LEASE`] (the others may take them).
    pub partitions: Vec<i32>,
    /// Live members of the role, this one included (0 while unknown).
    pub members: usize,
    /// This member's id.
    pub id: String,
}

/// The partitions of `partitions` that member `me` owns among the live `members` (any
/// order): every `p` with `p mod n` the place of `me` among the sorted ids. Empty when
/// `me` is not live.
pub fn share(members: &[String], me: &str, partitions: i32) -> Vec<i32> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(place) = sorted.iter().position(|m| *m == me) else {
        return Vec::new();
    };
    let n = sorted.len() as i32;
    (0..partitions).filter(|p| p % n == place as i32).collect()
}

/// One process's membership of a role (`processors`, `sql-sink`, `alerts`) of a
/// deployment.
#[derive(Clone)]
pub struct Member {
    conn: Redis,
    members_key: String,
    holders_key: String,
    role: String,
    id: String,
    nonce: String,
    lease: Duration,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("role", &self.role)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member of `role` under the deployment's key `prefix`. `id` names it (an explicit
    /// `--instance-id`), else a fresh id is made from the host, the process and a ULID.
    pub fn new(conn: Redis, prefix: &str, role: &str, id: Option<&str>) -> Self {
        let nonce = ulid::Ulid::new().to_string().to_lowercase();
        let id = id.map(str::to_owned).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "host".into());
            format!("{host}-{}-{}", std::process::id(), &nonce[16..])
        });
        Self {
            conn,
            members_key: format!("{prefix}cf:{{members}}:{role}"),
            holders_key: format!("{prefix}cf:{{members}}:{role}:holders"),
            role: role.to_owned(),
            id,
            nonce,
            lease: LEASE,
        }
    }

    /// The same member with a lease of `lease` (tests).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Renews the lease once; the live ids, or `Err(ms)` while another live process
    /// holds this id.
    async fn renew(&self) -> Result<Result<Vec<String>, i64>, redis::RedisError> {
        let reply: redis::Value = RENEW
            .key(&self.members_key)
            .key(&self.holders_key)
            .arg(self.lease.as_millis() as u64)
            .arg(&self.nonce)
            .arg(&self.id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let list: Vec<String> = redis::from_redis_value(&reply)?;
        if list.first().map(String::as_str) == Some("held") {
            let left = list.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok(Err(left));
        }
        Ok(Ok(list))
    }

    /// Takes the lease: at once for a fresh id; for an explicit id still held by a
    /// process that stopped without leaving (killed), once that lease ran out. An id
    /// another running process keeps renewing is [`Error::Taken`].
    pub async fn join(&self) -> Result<Vec<String>, Error> {
        let deadline = Instant::now() + self.lease + RENEW_EVERY * 3;
        let mut told = false;
        loop {
            match self.renew().await? {
                Ok(live) => return Ok(live),
                Err(_) if Instant::now() > deadline => {
                    return Err(Error::Taken(self.id.clone(), self.role.clone()))
                }
                Err(left) => {
                    if !told {
                        tracing::warn!(
                            id = self.id,
                            role = self.role,
                            left_ms = left,
                            "instance id still leased (a process that stopped uncleanly, or \
                             another one running): waiting for the lease to run out"
                        );
                        told = true;
                    }
                    tokio::time::sleep(RENEW_EVERY).await;
                }
            }
        }
    }

    /// Gives the lease up (a clean stop): the others take the partitions at once.
    pub async fn leave(&self) {
        let left: redis::RedisResult<i64> = LEAVE
            .key(&self.members_key)
            .key(&self.holders_key)
            .arg(&self.id)
            .arg(&self.nonce)
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(e) = left {
            tracing::warn!(error = %e, role = self.role, "leaving the membership failed; the lease runs out by itself");
        }
    }

    /// Joins, then renews the lease every [`RENEW_EVERY`] until `stop` turns true,
    /// publishing this member's share of `partitions` on the returned channel, and leaves.
    /// While Redis does not answer, the last share is kept until the lease has nearly run
    /// out, then given up (the others take the partitions once it has). Ends with an
    /// error only when another process takes over the id.
    pub fn spawn(
        self,
        partitions: i32,
        mut stop: watch::Receiver<bool>,
    ) -> (
        watch::Receiver<Share>,
        tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let (tx, rx) = watch::channel(Share {
            id: self.id.clone(),
            ..Share::default()
        });
        let task = tokio::spawn(async move {
            let mut last_ok = Instant::now();
            let mut joined = false;
            loop {
                if *stop.borrow() {
                    break;
                }
                let renewed = if joined {
                    self.renew().await.map_err(Error::from).and_then(|r| {
                        r.map_err(|_| Error::Taken(self.id.clone(), self.role.clone()))
                    })
                } else {
                    self.join().await
                };
                match renewed {
                    Ok(live) => {
                        joined = true;
                        last_ok = Instant::now();
                        let next = Share {
                            partitions: share(&live, &self.id, partitions),
                            members: live.len(),
                            id: self.id.clone(),
                        };
                        tx.send_if_modified(|s| {
                            let changed = *s != next;
                            if changed {
                                tracing::info!(role = self.role, id = self.id, members = next.members, partitions = ?next.partitions, "partitions of this instance");
                                *s = next;
                            }
                            changed
                        });
                    }
                    Err(e @ Error::Taken(..)) => {
                        tx.send_modify(|s| s.partitions.clear());
                        return Err(e);
                    }
                    Err(Error::Redis(e)) => {
                        if last_ok.elapsed() + RENEW_EVERY * 2 >= self.lease {
                            tx.send_if_modified(|s| {
                                let had = !s.partitions.is_empty();
                                if had {
                                    tracing::warn!(role = self.role, error = %e, "lease not renewed for {:?}: giving the partitions up", last_ok.elapsed());
                                    s.partitions.clear();
                                    s.members = 0;
                                }
                                had
                            });
                        } else {
                            tracing::warn!(role = self.role, error = %e, "renewing the lease failed; retrying");
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                    _ = stop.changed() => {}
                }
            }
            if joined {
                self.leave().await;
            }
            Ok(())
        });
        (rx, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_among_the_live_members() {
        for n in 1..6 {
            let members: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            let mut owners = vec![0; 8];
            for m in &members {
                for p in share(&members, m, 8) {
                    owners[p as usize] += 1;
                }
            }
            assert_eq!(owners, vec![1; 8], "{n} members");
        }
    }

    #[test]
    fn the_split_does_not_depend_on_the_order_the_ids_come_in() {
        let a = share(&ids(&["b", "a", "c"]), "b", 8);
        let b = share(&ids(&["c", "b", "a"]), "b", 8);
        assert_eq!(a, b);
        assert_eq!(a, vec![1, 4, 7]);
    }

    #[test]
    fn a_member_that_is_not_live_owns_nothing() {
        assert!(share(&ids(&["a", "b"]), "z", 8).is_empty());
        assert_eq!(share(&ids(&["z"]), "z", 3), vec![0, 1, 2]);
    }
}

//! The sales sink: copies the sales rollup periods the processors changed from Redis to
//! the `sales_rollups` table every few seconds. Rows carry current values and are
//! upserted, so a copy interrupted by a crash is simply made again.

use std::collections::BTreeMap;
use std::time::Duration;

use custflow_feature_store::conn::Redis;
use custflow_feature_store::keys::Keys;
use custflow_feature_store::sales::{self, Grain};
use tokio::sync::watch;

use crate::sql_sink::SqlSink;

/// Errors of one copy; the loop logs them and tries again on the next tick.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("reading rollups: {0}")]
    Rollups(#[from] sales::Error),
    #[error("{0}")]
    Sink(#[from] crate::sql_sink::Error),
}

/// Copies every changed period to the table; returns the rows written.
///
/// The changed periods are moved from the dirty set to a flushing set in one
/// transaction, and the flushing set is deleted only after the rows are committed: a
/// period changed meanwhile is in the dirty set again, and a crash leaves the flushing set
/// for the next copy. On a Redis Cluster each input partition has its own pair of sets,
/// moved in a transaction on its slot.
pub async fn flush(conn: &mut Redis, keys: &Keys, sink: &SqlSink) -> Result<usize, Error> {
    let shards = keys.shards(custflow_feature_store::keys::partitions(conn, keys).await?);
    let mut members: Vec<String> = Vec::new();
    for p in &shards {
        let (dirty, flushing) = (keys.sales_dirty(*p), keys.sales_flushing(*p));
        let (moved,): (Vec<String>,) = redis::pipe()
            .atomic()
            .cmd("SUNIONSTORE")
            .arg(&flushing)
            .arg(&flushing)
            .arg(&dirty)
            .ignore()
            .del(&dirty)
            .ignore()
            .smembers(&flushing)
            .query_async(conn)
            .await?;
        members.extend(moved);
    }
    members.sort();
    members.dedup();
    let mut by_grain: BTreeMap<Grain, Vec<i32>> = BTreeMap::new();
    for m in &members {
        let parsed = m
            .split_once('|')
            .and_then(|(g, s)| Some((Grain::parse(g)?, s.parse::<i32>().ok()?)));
        match parsed {
            Some((g, s)) => by_grain.entry(g).or_default().push(s),
            None => tracing::warn!(member = %m, "sales sink: unreadable dirty period skipped"),
        }
    }
    let mut written = 0;
    for (grain, mut starts) in by_grain {
        starts.sort_unstable();
        for chunk in starts.chunks(sales::MAX_PERIODS) {
            let rows = sales::rows(conn, keys, grain, chunk, None).await?;
            sink.upsert_sales(&rows).await?;
            written += rows.len();
        }
    }
    for p in &shards {
        let () = redis::cmd("DEL")
            .arg(keys.sales_flushing(*p))
            .query_async(conn)
            .await?;
    }
    Ok(written)
}

/// Copies changed periods every `every` until `shutdown`, then once more.
pub async fn run(
    mut conn: Redis,
    keys: Keys,
    sink: SqlSink,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(every) => false,
            _ = shutdown.changed() => true,
        };
        match flush(&mut conn, &keys, &sink).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "sales rollups copied"),
            Err(e) if stop => return Err(e),
            Err(e) => tracing::warn!(error = %e, "sales sink: copy failed, retrying"),
        }
        if stop {
            return Ok(());
        }
    }
}

//! The model artefact in use, as stored in Redis (`cf:model:current` → version →
//! `cf:model:<version>` JSON), cached in memory and refreshed when the version changes.

use std::sync::{Arc, RwLock};

use crate::conn::Redis;
use custflow_models::artefact::ModelArtefact;
use redis::AsyncCommands;

use crate::keys::Keys;

/// A shared, refreshable handle on the artefact in use.
#[derive(Clone, Default)]
pub struct ModelHandle(Arc<RwLock<Option<Arc<ModelArtefact>>>>);

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("model artefact {version} is unreadable: {reason}")]
    Unreadable { version: String, reason: String },
}

/// The stored JSON of something about model `version` (an artefact, a decision).
fn to_json(version: &str, value: &impl serde::Serialize) -> Result<String, ModelError> {
    serde_json::to_string(value).map_err(|e| ModelError::Unreadable {
        version: version.to_owned(),
        reason: e.to_string(),
    })
}

impl ModelHandle {
    pub fn current(&self) -> Option<Arc<ModelArtefact>> {
        self.0.read().ok().and_then(|m| m.clone())
    }

    pub fn set(&self, m: ModelArtefact) {
        if let Ok(mut w) = self.0.write() {
            *w = Some(Arc::new(m));
        }
    }

    /// Loads the artefact in use when its version changed; returns whether it did.
    pub async fn refresh(&self, conn: &mut Redis, keys: &Keys) -> Result<bool, ModelError> {
        let version: Option<String> = conn.get(keys.model_current()).await?;
        let Some(version) = version else {
            return Ok(false);
        };
        if self.current().is_some_and(|m| m.version == version) {
            return Ok(false);
        }
        let json: Option<String> = conn.get(keys.model(&version)).await?;
        let Some(json) = json else { return Ok(false) };
        let artefact: ModelArtefact =
            serde_json::from_str(&json).map_err(|e| ModelError::Unreadable {
                version,
                reason: e.to_string(),
            })?;
        self.set(artefact);
        Ok(true)
    }

    /// Stores an artefact as a new version, makes it the one in use and holds it here.
    pub async fn promote(
        &self,
        conn: &mut Redis,
        keys: &Keys,
        artefact: &ModelArtefact,
    ) -> Result<(), ModelError> {
        let json = to_json(&artefact.version, artefact)?;
        // The version first, then the pointer to it: a reader that finds the pointer
        // finds the version (on a cluster the two keys live in different slots, where
        // no transaction spans them).
        let () = redis::cmd("SET")
            .arg(keys.model(&artefact.version))
            .arg(json)
            .query_async(conn)
            .await?;
        let () = redis::cmd("SET")
            .arg(keys.model_current())
            .arg(&artefact.version)
            .query_async(conn)
            .await?;
        self.set(artefact.clone());
        Ok(())
    }
}

/// Decisions kept in [`Keys::model_decisions`].
pub const DECISIONS_KEPT: isize = 500;

/// One run of the model job that fitted a model: what the refit was found to change
/// against the model in use and whether it was promoted (`GET /v1/models`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelDecision {
    /// The refit's version (the artefact is stored only when promoted).
    pub version: String,
    pub decided_at_ms: i64,
    pub promoted: bool,
    /// Why, in words.
    pub reason: String,
    /// The version in use before the decision (`None`: there was none).
    pub previous: Option<String>,
    pub customers: usize,
    /// The refit's fit metrics (log-likelihoods, parameters).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// What the comparison with the model in use found (none for the first model).
    pub comparison: Option<custflow_models::promotion::Comparison>,
}

/// Appends a decision to the deployment's history, keeping the newest
/// [`DECISIONS_KEPT`].
pub async fn record_decision(
    conn: &mut Redis,
    keys: &Keys,
    d: &ModelDecision,
) -> Result<(), ModelError> {
    let json = to_json(&d.version, d)?;
    let () = redis::pipe()
        .lpush(keys.model_decisions(), json)
        .ignore()
        .ltrim(keys.model_decisions(), 0, DECISIONS_KEPT - 1)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(())
}

/// The newest `limit` decisions, newest first (unreadable entries are skipped).
pub async fn decisions(
    conn: &mut Redis,
    keys: &Keys,
    limit: usize,
) -> Result<Vec<ModelDecision>, ModelError> {
    let raw: Vec<String> = conn
        .lrange(keys.model_decisions(), 0, limit.max(1) as isize - 1)
        .await?;
    Ok(raw
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect())
}

/// How far the rollout of a model has got: the rescoring passes of the input partitions
/// (their cursors in the last-order indexes), read from Redis.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rollout {
    /// The model the passes are rolling out.
    pub model: String,
    pub partitions: usize,
    /// Partitions whose pass with `model` is complete.
    pub partitions_done: usize,
    /// Customers in the last-order indexes.
    pub customers: u64,
    /// Customers the passes with `model` have rescored (from the cursors' places in the
    /// indexes: an estimate while customers order, exact when done).
    pub rescored: u64,
    /// `rescored / customers` (1 with no customers).
    pub progress: f64,
    pub done: bool,
}

/// The rollout of `model` over the deployment's partitions, `None` before the processors
/// recorded how many there are.
pub async fn rollout(
    conn: &mut Redis,
    keys: &Keys,
    model: &str,
) -> Result<Option<Rollout>, ModelError> {
    use crate::pass::PassCursor;
    let n: Option<i32> = conn.get(keys.partition_count()).await?;
    let Some(n) = n.filter(|n| *n > 0) else {
        return Ok(None);
    };
    let mut pipe = redis::pipe();
    for p in 0..n {
        pipe.get(keys.model_pass(p)).zcard(keys.last_order_index(p));
    }
    let raw: Vec<(Option<Vec<u8>>, u64)> = pipe.query_async(conn).await?;
    let cursors: Vec<(i32, PassCursor, u64)> = (0..n)
        .zip(raw)
        .map(|(p, (c, card))| {
            let c = c
                .and_then(|b| PassCursor::decode(&b).ok())
                .unwrap_or_default();
            (p, c, card)
        })
        .collect();
    // Places of the running passes' cursors as ranks (customers at or before them in
    // the index's order): the customer's own rank while it is still at that place, else
    // the customers ordered strictly earlier.
    let mut pipe = redis::pipe();
    let running: Vec<&(i32, PassCursor, u64)> = cursors
        .iter()
        .filter(|(_, c, _)| c.model.as_deref() == Some(model) && !c.done)
        .collect();
    let mut places = Vec::new();
    for (p, c, _) in &running {
        for pos in [&c.from, &c.after] {
            let key = keys.last_order_index(*p);
            let (at, id) = pos.clone().unwrap_or((i64::MIN, String::new()));
            pipe.zscore(&key, &id)
                .zrank(&key, &id)
                .zcount(&key, "-inf", format!("({at}"));
            places.push(pos.is_some().then_some(at));
        }
    }
    let raw: Vec<(Option<f64>, Option<u64>, u64)> = if running.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let ranks: Vec<u64> = places
        .iter()
        .zip(raw)
        .map(|(at, (score, rank, before))| match (at, score, rank) {
            (None, _, _) => 0,
            (Some(at), Some(score), Some(rank)) if score == *at as f64 => rank + 1,
            _ => before,
        })
        .collect();
    let mut out = Rollout {
        model: model.to_owned(),
        partitions: cursors.len(),
        partitions_done: 0,
        customers: 0,
        rescored: 0,
        progress: 1.0,
        done: false,
    };
    let mut ranks = ranks.chunks(2);
    for (_, c, card) in &cursors {
        out.customers += card;
        if c.model.as_deref() != Some(model) {
            continue;
        }
        if c.done {
            out.partitions_done += 1;
            out.rescored += card;
            continue;
        }
        let (from, after) = match ranks.next() {
            Some([f, a]) => (*f, *a),
            _ => (0, 0),
        };
        // From the pass's start to the end of the index, then from its beginning.
        out.rescored += if c.wrapped {
            card.saturating_sub(from) + after
        } else {
            after.saturating_sub(from)
        }
        .min(*card);
    }
    out.done = out.partitions_done == out.partitions;
    if out.customers > 0 {
        out.progress = out.rescored as f64 / out.customers as f64;
    }
    Ok(Some(out))
}

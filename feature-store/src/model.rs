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
        let json = serde_json::to_string(artefact).map_err(|e| ModelError::Unreadable {
            version: artefact.version.clone(),
            reason: e.to_string(),
        })?;
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

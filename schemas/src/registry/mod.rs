//! Schema-registry core: subjects, versions, global ids and BACKWARD compatibility,
//! persisted as an append-only log (a compacted topic) so ids survive restarts.
//!
//! The HTTP endpoints (Confluent-compatible) live in the feature store; the wire
//! types they use are in [`api`].

pub mod api;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use async_trait_free::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::avro::SchemaSource;
use crate::event::EventKind;

/// Errors of the registry, with the Confluent error code each maps to.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("subject {0:?} not found")]
    SubjectNotFound(String),
    #[error("version {1} of subject {0:?} not found")]
    VersionNotFound(String, String),
    #[error("schema {0} not found")]
    SchemaNotFound(u32),
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("schema is incompatible with the latest version of {subject:?}: {reason}")]
    Incompatible { subject: String, reason: String },
    /// The log could not be read or written; retrying may help.
    #[error("registry storage: {0}")]
    Storage(String),
}

impl RegistryError {
    /// Confluent's numeric error code.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(..) => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::Storage(_) => 50001,
        }
    }
}

/// One entry of the registry log: a version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Where the registry log is kept.
pub trait RegistryStore: Send + Sync {
    /// Every record appended so far, in order.
    fn load(&self) -> BoxFuture<'_, Result<Vec<RegistryRecord>, RegistryError>>;
    /// Appends a record durably; returns only once it is stored.
    fn append<'a>(&'a self, record: &'a RegistryRecord)
        -> BoxFuture<'a, Result<(), RegistryError>>;
}

/// A registered schema.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: u32,
    /// The text as first registered.
    pub text: String,
    pub parsed: Arc<Schema>,
}

/// A version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Which version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    /// Parses `latest`, `-1` or a positive number.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "latest" | "-1" => Some(Self::Latest),
            _ => s.parse().ok().filter(|n| *n > 0).map(Self::Number),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    by_id: BTreeMap<u32, Arc<StoredSchema>>,
    /// [`identity`] → id, so the same schema gets one id across subjects.
    by_canonical: HashMap<String, u32>,
    /// subject → ids of versions 1..=n
    subjects: BTreeMap<String, Vec<u32>>,
}

impl State {
    fn apply(&mut self, rec: &RegistryRecord) -> Result<(), RegistryError> {
        let parsed = Schema::parse_str(&rec.schema)
            .map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let canonical = identity(&parsed);
        self.by_id.entry(rec.id).or_insert_with(|| {
            Arc::new(StoredSchema {
                id: rec.id,
                text: rec.schema.clone(),
                parsed: Arc::new(parsed),
            })
        });
        self.by_canonical.entry(canonical).or_insert(rec.id);
        let versions = self.subjects.entry(rec.subject.clone()).or_default();
        let idx = rec.version as usize;
        if idx == versions.len() + 1 {
            versions.push(rec.id);
        }
        Ok(())
    }
}

/// The registry: reads are lock-free of I/O; registrations are serialised and logged.
pub struct Registry {
    state: RwLock<State>,
    write: tokio::sync::Mutex<()>,
    store: Option<Arc<dyn RegistryStore>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("subjects", &self.subjects())
            .finish()
    }
}

impl Registry {
    /// A registry that keeps nothing beyond the process (tests, one-shot tools).
    pub fn in_memory() -> Self {
        Self {
            state: RwLock::new(State::default()),
            write: tokio::sync::Mutex::new(()),
            store: None,
        }
    }

    /// Opens a registry over a log, replaying what it holds.
    pub async fn open(store: Arc<dyn RegistryStore>) -> Result<Self, RegistryError> {
        let reg = Self {
            state: RwLock::new(State::default()),
            write: tokio::sync::Mutex::new(()),
            store: Some(store),
        };
        reg.reload().await?;
        Ok(reg)
    }

    /// Catches up with the log (other writers may have appended).
    pub async fn reload(&self) -> Result<(), RegistryError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let records = store.load().await?;
        let mut state = self.state.write().map_err(|_| poisoned())?;
        for rec in &records {
            if let Err(e) = state.apply(rec) {
                tracing::warn!(subject = %rec.subject, version = rec.version, error = %e, "skipping unreadable registry record");
            }
        }
        Ok(())
    }

    /// Registers `schema` under `subject`. Returns the existing version when the same
    /// schema is already registered there; refuses a schema that cannot read data
    /// written with the latest version (BACKWARD).
    pub async fn register(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<SubjectVersion, RegistryError> {
        let parsed =
            Schema::parse_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let _guard = self.write.lock().await;
        self.reload().await?;
        let record = {
            let state = self.state.read().map_err(|_| poisoned())?;
            let canonical = identity(&parsed);
            let versions = state.subjects.get(subject).cloned().unwrap_or_default();
            if let Some(existing) = state.by_canonical.get(&canonical) {
                if let Some(pos) = versions.iter().position(|id| id == existing) {
                    return Ok(SubjectVersion {
                        subject: subject.to_owned(),
                        version: pos as u32 + 1,
                        id: *existing,
                        schema: state.by_id[existing].text.clone(),
                    });
                }
            }
            if let Some(latest) = versions.last().and_then(|id| state.by_id.get(id)) {
                SchemaCompatibility::can_read(&latest.parsed, &parsed).map_err(|e| {
                    RegistryError::Incompatible {
                        subject: subject.to_owned(),
                        reason: e.to_string(),
                    }
                })?;
            }
            let id = match state.by_canonical.get(&canonical) {
                Some(id) => *id,
                None => state.by_id.keys().next_back().map_or(1, |m| m + 1),
            };
            RegistryRecord {
                subject: subject.to_owned(),
                version: versions.len() as u32 + 1,
                id,
                schema: schema.to_owned(),
            }
        };
        if let Some(store) = &self.store {
            store.append(&record).await?;
        }
        self.state.write().map_err(|_| poisoned())?.apply(&record)?;
        Ok(SubjectVersion {
            subject: record.subject,
            version: record.version,
            id: record.id,
            schema: record.schema,
        })
    }

    /// Registers custflow's own input schemas under `<topic>-value` and returns their ids.
    pub async fn register_builtin(
        &self,
        topics: &crate::topics::Topics,
    ) -> Result<HashMap<EventKind, u32>, RegistryError> {
        let mut ids = HashMap::new();
        for kind in EventKind::ALL {
            let text = crate::avro::schema_text(kind.record_name()).unwrap_or_default();
            let v = self
                .register(&subject_for(&topics.name(kind.topic())), text)
                .await?;
            ids.insert(kind, v.id);
        }
        Ok(ids)
    }

    /// Registers the output records (`CustomerScore`, `SegmentChange`) under their
    /// topics' subjects and returns (score id, segment-change id).
    pub async fn register_outputs(
        &self,
        topics: &crate::topics::Topics,
    ) -> Result<(u32, u32), RegistryError> {
        let mut ids = [0u32; 2];
        for (i, (record, topic)) in [
            ("CustomerScore", crate::topics::CUSTOMER_SCORES),
            ("SegmentChange", crate::topics::SEGMENT_CHANGES),
        ]
        .into_iter()
        .enumerate()
        {
            let text = crate::avro::schema_text(record).unwrap_or_default();
            ids[i] = self
                .register(&subject_for(&topics.name(topic)), text)
                .await?
                .id;
        }
        Ok((ids[0], ids[1]))
    }

    pub fn subjects(&self) -> Vec<String> {
        self.state
            .read()
            .map(|s| s.subjects.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Version numbers of a subject.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let v = state
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        Ok((1..=v.len() as u32).collect())
    }

    pub fn version(
        &self,
        subject: &str,
        which: VersionRef,
    ) -> Result<SubjectVersion, RegistryError> {
        let state = self.state.read().map_err(|_| poisoned())?;
        let versions = state
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let n = match which {
            VersionRef::Latest => versions.len() as u32,
            VersionRef::Number(n) => n,
        };
        let id = n
            .checked_sub(1)
            .and_then(|i| versions.get(i as usize))
            .ok_or_else(|| RegistryError::VersionNotFound(subject.to_owned(), n.to_string()))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: n,
            id: *id,
            schema: state.by_id[id].text.clone(),
        })
    }

    /// The version of `subject` that holds exactly this schema.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, RegistryError> {
        let parsed =
            Schema::parse_str(schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
        let state = self.state.read().map_err(|_| poisoned())?;
        let versions = state
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let id = state
            .by_canonical
            .get(&identity(&parsed))
            .copied()
            .ok_or(RegistryError::SchemaNotFound(0))?;
        let pos = versions
            .iter()
            .position(|v| *v == id)
            .ok_or(RegistryError::SchemaNotFound(id))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: pos as u32 + 1,
            id,
            schema: state.by_id[&id].text.clone(),
        })
    }

    pub fn schema(&self, id: u32) -> Result<Arc<StoredSchema>, RegistryError> {
        self.state
            .read()
            .map_err(|_| poisoned())?
            .by_id
            .get(&id)
            .cloned()
            .ok_or(RegistryError::SchemaNotFound(id))
    }
}

impl SchemaSource for Registry {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        self.schema(id).ok().map(|s| s.parsed.clone())
    }
}

/// What makes two schemas "the same" for ids: the normalised JSON including defaults
/// (the Parsing Canonical Form drops defaults, which matter for compatibility).
fn identity(schema: &Schema) -> String {
    serde_json::to_string(schema).unwrap_or_else(|_| schema.canonical_form())
}

/// The subject of a topic's values (Confluent's TopicNameStrategy).
pub fn subject_for(topic: &str) -> String {
    format!("{topic}-value")
}

fn poisoned() -> RegistryError {
    RegistryError::Storage("registry lock poisoned".into())
}

/// A boxed future, so the store trait stays object safe without extra crates.
pub mod async_trait_free {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"}]}"#;
    const V2_OK: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"b","type":"long","default":0}]}"#;
    const V2_BAD: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"},{"name":"b","type":"long"}]}"#;

    #[derive(Default)]
    struct MemLog(std::sync::Mutex<Vec<RegistryRecord>>);

    impl RegistryStore for MemLog {
        fn load(&self) -> BoxFuture<'_, Result<Vec<RegistryRecord>, RegistryError>> {
            let v = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(v) })
        }
        fn append<'a>(&'a self, r: &'a RegistryRecord) -> BoxFuture<'a, Result<(), RegistryError>> {
            self.0.lock().unwrap().push(r.clone());
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn versions_ids_and_backward_compatibility() {
        let reg = Registry::in_memory();
        let a = reg.register("orders-value", V1).await.unwrap();
        assert_eq!((a.version, a.id), (1, 1));
        // Same schema again: same version, no new id.
        assert_eq!(reg.register("orders-value", V1).await.unwrap(), a);
        // Same schema under another subject: same global id, version 1 there.
        let b = reg.register("other-value", V1).await.unwrap();
        assert_eq!((b.version, b.id), (1, 1));
        let c = reg.register("orders-value", V2_OK).await.unwrap();
        assert_eq!((c.version, c.id), (2, 2));
        // A new field without a default cannot read data written before it existed.
        reg.register("strict-value", V1).await.unwrap();
        let err = reg.register("strict-value", V2_BAD).await.unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(reg.versions("strict-value").unwrap(), vec![1]);
        assert_eq!(
            reg.version("orders-value", VersionRef::Latest).unwrap().id,
            2
        );
        assert_eq!(reg.versions("orders-value").unwrap(), vec![1, 2]);
        assert_eq!(reg.lookup("orders-value", V1).unwrap().version, 1);
        assert_eq!(
            reg.version("nope", VersionRef::Latest).unwrap_err().code(),
            40401
        );
        assert_eq!(
            reg.version("orders-value", VersionRef::Number(9))
                .unwrap_err()
                .code(),
            40402
        );
        assert_eq!(
            reg.register("x", "{not json").await.unwrap_err().code(),
            42201
        );
    }

    #[tokio::test]
    async fn ids_survive_a_restart_through_the_log() {
        let log = Arc::new(MemLog::default());
        let reg = Registry::open(log.clone()).await.unwrap();
        reg.register("a-value", V1).await.unwrap();
        reg.register("a-value", V2_OK).await.unwrap();
        drop(reg);
        let again = Registry::open(log.clone()).await.unwrap();
        assert_eq!(again.version("a-value", VersionRef::Latest).unwrap().id, 2);
        let next = again.register("b-value", r#""string""#).await.unwrap();
        assert_eq!(next.id, 3);
        assert_eq!(log.0.lock().unwrap().len(), 3);
    }
}

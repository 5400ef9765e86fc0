//! What a source task is to the worker: the [`SourceTask`] trait every connector class
//! implements, the context a task builds its records with, and the one place that maps a
//! connector class to its task (a new source adds itself here, not in the worker).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use custflow_schemas::avro::AvroCodec;
use custflow_schemas::topics::Topics;
use custflow_schemas::{json, DenyList, Event};
use serde_json::Value;

use super::{
    Batch, Common, ConnectorClass, ConnectorConfig, Error, ErrorPolicy, PartitionKey, SourceRecord,
    ValueFormat,
};
use crate::pg_source::PgTask;
use crate::spooldir::SpoolDirTask;

/// A boxed future of a task method.
pub type TaskFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// A running source task: the worker polls it for records, produces them, and tells it
/// which source offsets are committed.
pub trait SourceTask: Send {
    /// At most `max` records (fewer, or none, when the source has no more now).
    fn poll(&mut self, max: usize) -> TaskFuture<'_, Batch>;

    /// Offsets up to and including these finished partitions are committed (a source
    /// may then let go of them, as the spool-dir source moves finished files).
    fn committed(&mut self, ends: &[(PartitionKey, Value)]) -> Result<(), Error> {
        let _ = ends;
        Ok(())
    }

    /// What the task is working on, for the status endpoint.
    fn progress(&self) -> Value;

    /// How long to wait after a poll that found nothing.
    fn poll_interval(&self) -> Duration;
}

/// Checks a configuration the way creating the connector would, without starting it.
pub fn validate(config: &ConnectorConfig, topics: &Topics) -> Result<Common, Error> {
    let common = config.common(topics)?;
    match common.class {
        ConnectorClass::SpoolDirCsvSource => SpoolDirTask::validate(config)?,
        ConnectorClass::PostgresSource => PgTask::validate(config)?,
        #[cfg(feature = "fluvio")]
        ConnectorClass::FluvioSource => crate::fluvio_source::FluvioTask::validate(config)?,
        #[cfg(not(feature = "fluvio"))]
        ConnectorClass::FluvioSource => return Err(without_fluvio()),
    }
    Ok(common)
}

/// Starts a task of the connector's class.
pub async fn start(
    config: &ConnectorConfig,
    ctx: TaskContext,
) -> Result<Box<dyn SourceTask>, Error> {
    Ok(match ctx.common.class {
        ConnectorClass::SpoolDirCsvSource => Box::new(SpoolDirTask::start(config, ctx)?),
        ConnectorClass::PostgresSource => Box::new(PgTask::start(config, ctx).await?),
        #[cfg(feature = "fluvio")]
        ConnectorClass::FluvioSource => {
            Box::new(crate::fluvio_source::FluvioTask::start(config, ctx).await?)
        }
        #[cfg(not(feature = "fluvio"))]
        ConnectorClass::FluvioSource => return Err(without_fluvio()),
    })
}

#[cfg(not(feature = "fluvio"))]
fn without_fluvio() -> Error {
    Error::invalid(
        "config.connector.class",
        "FluvioSource needs custflow built with the `fluvio` feature (the default)",
    )
}

/// Turns events into record values in a connector's `value.format`.
#[derive(Clone)]
pub struct Encoder {
    codec: Arc<AvroCodec>,
    format: ValueFormat,
    deny: DenyList,
}

impl Encoder {
    pub fn new(codec: Arc<AvroCodec>, format: ValueFormat) -> Self {
        Self {
            codec,
            format,
            deny: DenyList::default(),
        }
    }

    /// Drops `deny`'s customer attributes from every event it encodes.
    pub fn with_deny(mut self, deny: DenyList) -> Self {
        self.deny = deny;
        self
    }

    /// Validates and encodes an event; the error is the reason for the dead letter.
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, String> {
        let event = &*self.deny.redacted(event);
        let errs = custflow_schemas::validate::validate(
            event,
            &custflow_schemas::validate::ValidationContext::now(),
        );
        if !errs.is_empty() {
            return Err(errs
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; "));
        }
        match self.format {
            ValueFormat::Avro => self.codec.encode(event).map_err(|e| e.to_string()),
            ValueFormat::Json => Ok(json::encode(event)),
        }
    }
}

/// What every task needs to build its records.
#[derive(Clone)]
pub struct TaskContext {
    pub common: Common,
    pub task: usize,
    pub policy: ErrorPolicy,
    pub encoder: Encoder,
    pub topic: Arc<str>,
    /// Committed offsets of this connector: partition key → offset.
    pub offsets: HashMap<String, Value>,
}

impl TaskContext {
    /// An event record, or a dead letter / the fatal reason when it does not validate.
    pub fn event_record(
        &self,
        event: &Event,
        partition: &PartitionKey,
        id: String,
    ) -> Result<SourceRecord, String> {
        let value = self.encoder.encode(event)?;
        let topic = self
            .common
            .routed(event.kind())
            .unwrap_or_else(|| self.topic.clone());
        Ok(SourceRecord {
            topic,
            key: Some(event.customer_id().as_bytes().to_vec()),
            value,
            headers: None,
            partition: partition.clone(),
            id,
        })
    }
}

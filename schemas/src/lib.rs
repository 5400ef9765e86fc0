//! Event types, Avro schemas, wire codecs, validation and the schema-registry core of custflow.
//!
//! Everything that crosses a process boundary is defined here: the input events
//! (`Customer`, `Order`, `Activity`), the output records (`CustomerScore`,
//! `SegmentChange`), their Avro schemas (`schemas/avro/*.avsc`), the Confluent
//! wire format, plain JSON and Kafka Connect's JSON envelope.

pub mod avro;
pub mod deny;
pub mod error;
pub mod event;
pub mod json;
pub mod registry;
pub mod time;
pub mod topics;
pub mod validate;

pub use deny::DenyList;
pub use error::{Error, FieldError, Result};
pub use event::{
    Activity, ActivityKind, Customer, CustomerScore, Event, EventKind, Order, OrderItem,
    OrderStatus, SegmentChange, SegmentDimension,
};
pub use validate::ValidationContext;

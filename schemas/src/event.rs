//! The event and output record types of DESIGN §3, shared by every crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::serde_ms;
use crate::topics;

/// A customer profile upsert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Customer {
    pub event_id: String,
    pub customer_id: String,
    #[serde(with = "serde_ms")]
    pub occurred_at: i64,
    #[serde(with = "opt_ms", skip_serializing_if = "Option::is_none")]
    pub signup_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub loyalty_member: bool,
    pub attributes: BTreeMap<String, String>,
}

/// Lifecycle of an order. A refund or cancellation carries the original `order_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Placed,
    Refunded,
    Cancelled,
}

impl OrderStatus {
    pub const SYMBOLS: [&'static str; 3] = ["placed", "refunded", "cancelled"];

    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_index(i: usize) -> Option<Self> {
        [Self::Placed, Self::Refunded, Self::Cancelled]
            .get(i)
            .copied()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .and_then(Self::from_index)
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderItem {
    pub sku: String,
    pub category: String,
    pub quantity: i32,
    pub unit_price: f64,
}

/// An order event. `total` is the net amount paid (placed) or given back (refunded,
/// cancelled), as a double in `currency`; never negative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    pub event_id: String,
    pub order_id: String,
    pub customer_id: String,
    #[serde(with = "serde_ms")]
    pub occurred_at: i64,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub currency: String,
    pub items: Vec<OrderItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
    pub discount_amount: f64,
    pub total: f64,
}

/// Kind of a non-purchase interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    Visit,
    Login,
    Support,
    EmailOpen,
}

impl ActivityKind {
    pub const SYMBOLS: [&'static str; 4] = ["visit", "login", "support", "email_open"];

    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }

    pub fn from_index(i: usize) -> Option<Self> {
        [Self::Visit, Self::Login, Self::Support, Self::EmailOpen]
            .get(i)
            .copied()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::SYMBOLS
            .iter()
            .position(|x| *x == s)
            .and_then(Self::from_index)
    }
}

/// A visit, login, support contact or e-mail open.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub event_id: String,
    pub customer_id: String,
    #[serde(with = "serde_ms")]
    pub occurred_at: i64,
    pub kind: ActivityKind,
    pub properties: BTreeMap<String, String>,
}

/// Which of the three input records an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Customer,
    Order,
    Activity,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Customer, EventKind::Order, EventKind::Activity];

    /// The `type` discriminator used where one stream mixes kinds (REST, NDJSON files).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Customer => "customer",
            EventKind::Order => "order",
            EventKind::Activity => "activity",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The contract topic (without prefix) this kind is produced to.
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::Customer => topics::CUSTOMERS,
            EventKind::Order => topics::ORDERS,
            EventKind::Activity => topics::ACTIVITY,
        }
    }

    /// The kind carried by a contract topic (without prefix).
    pub fn for_topic(base: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.topic() == base)
    }

    /// The Avro record name, also the schema file name.
    pub fn record_name(self) -> &'static str {
        match self {
            EventKind::Customer => "Customer",
            EventKind::Order => "Order",
            EventKind::Activity => "Activity",
        }
    }
}

/// Any input event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    Customer(Customer),
    Order(Order),
    Activity(Activity),
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Customer(_) => EventKind::Customer,
            Event::Order(_) => EventKind::Order,
            Event::Activity(_) => EventKind::Activity,
        }
    }

    /// The partition key of every input topic.
    pub fn customer_id(&self) -> &str {
        match self {
            Event::Customer(c) => &c.customer_id,
            Event::Order(o) => &o.customer_id,
            Event::Activity(a) => &a.customer_id,
        }
    }

    pub fn event_id(&self) -> &str {
        match self {
            Event::Customer(c) => &c.event_id,
            Event::Order(o) => &o.event_id,
            Event::Activity(a) => &a.event_id,
        }
    }

    pub fn occurred_at(&self) -> i64 {
        match self {
            Event::Customer(c) => c.occurred_at,
            Event::Order(o) => o.occurred_at,
            Event::Activity(a) => a.occurred_at,
        }
    }
}

/// Incremental CLTV and segment update of one customer (topic `customer-scores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerScore {
    pub customer_id: String,
    /// Grows with every update of this customer (derived from the source position).
    pub version: i64,
    #[serde(with = "serde_ms")]
    pub as_of: i64,
    pub model_version: String,
    pub frequency: f64,
    pub recency: f64,
    pub age: f64,
    pub monetary_value: f64,
    pub p_alive: f64,
    pub churn_probability: f64,
    pub expected_orders_90d: f64,
    pub expected_aov: f64,
    pub clv_12m: f64,
    pub value_tier: String,
    pub r_score: i32,
    pub f_score: i32,
    pub m_score: i32,
    pub rfm_segment: String,
    #[serde(default)]
    pub cluster: Option<String>,
    pub at_risk: bool,
    /// Whether a retention offer is expected to pay for this customer.
    #[serde(default)]
    pub retention_target: bool,
    /// Churn probability × offer acceptance × CLV − offer cost.
    #[serde(default)]
    pub expected_retention_profit: f64,
}

impl CustomerScore {
    /// The nine measures from `frequency` to `clv_12m`, in the order of the schema's
    /// fields (and of the sink table's columns).
    pub fn measures(&self) -> [f64; 9] {
        [
            self.frequency,
            self.recency,
            self.age,
            self.monetary_value,
            self.p_alive,
            self.churn_probability,
            self.expected_orders_90d,
            self.expected_aov,
            self.clv_12m,
        ]
    }
}

/// Which segmentation changed in a [`SegmentChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentDimension {
    ValueTier,
    RfmSegment,
    Cluster,
    AtRisk,
}

/// A change of tier, RFM segment, cluster or at-risk flag (topic `segment-changes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentChange {
    pub customer_id: String,
    pub version: i64,
    #[serde(with = "serde_ms")]
    pub as_of: i64,
    pub model_version: String,
    pub dimension: SegmentDimension,
    #[serde(default)]
    pub previous: Option<String>,
    pub current: String,
    /// The customer's value tier at this version (for rules combining dimensions).
    #[serde(default)]
    pub value_tier: Option<String>,
}

mod opt_ms {
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&crate::time::format_rfc3339(*ms)),
            None => s.serialize_none(),
        }
    }
}

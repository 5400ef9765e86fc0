//! Avro codec: the schemas of `schemas/avro/`, the Confluent wire format (magic byte 0 +
//! big-endian schema id + datum), a hand-written fast path for custflow's own writer
//! schemas and a generic path (schema resolution) for any compatible writer schema.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, RwLock};

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::event::{
    Activity, ActivityKind, Customer, CustomerScore, Event, EventKind, Order, OrderItem,
    OrderStatus, SegmentChange, SegmentDimension,
};
use crate::validate::{validate, ValidationContext};

/// Magic byte of the Confluent wire format.
pub const MAGIC: u8 = 0;

/// The schema texts shipped in `schemas/avro/`, by record name.
pub const SCHEMA_TEXTS: &[(&str, &str)] = &[
    ("Customer", include_str!("../avro/Customer.avsc")),
    ("Order", include_str!("../avro/Order.avsc")),
    ("Activity", include_str!("../avro/Activity.avsc")),
    ("CustomerScore", include_str!("../avro/CustomerScore.avsc")),
    ("SegmentChange", include_str!("../avro/SegmentChange.avsc")),
];

/// Earlier versions of shipped schemas, newest first: records written with them (before
/// fields with defaults were added) still decode.
const EARLIER_TEXTS: &[(&str, &str)] = &[(
    "CustomerScore",
    include_str!("../avro/CustomerScore.v1.avsc"),
)];

static EARLIER: LazyLock<Vec<(&'static str, Schema)>> = LazyLock::new(|| {
    EARLIER_TEXTS
        .iter()
        .filter_map(|(name, text)| Some((*name, Schema::parse_str(text).ok()?)))
        .collect()
});

static PARSED: LazyLock<HashMap<&'static str, Schema>> = LazyLock::new(|| {
    SCHEMA_TEXTS
        .iter()
        .map(|(name, text)| {
            // The texts are compiled in and checked by unit tests.
            #[allow(clippy::expect_used)]
            let s = Schema::parse_str(text).expect("shipped Avro schema parses");
            (*name, s)
        })
        .collect()
});

/// The schema text of a record name (`Order`, `CustomerScore`, …).
pub fn schema_text(record: &str) -> Option<&'static str> {
    SCHEMA_TEXTS
        .iter()
        .find(|(n, _)| *n == record)
        .map(|(_, t)| *t)
}

/// The parsed schema of a record name.
pub fn schema(record: &str) -> Option<&'static Schema> {
    PARSED.get(record)
}

fn event_schema(kind: EventKind) -> &'static Schema {
    // Every EventKind has a shipped schema (checked by tests).
    #[allow(clippy::expect_used)]
    schema(kind.record_name()).expect("schema for every event kind")
}

/// Prepends the Confluent header to a datum.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// Splits Confluent-framed bytes into schema id and datum.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
    match bytes {
        [MAGIC, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [MAGIC, ..] => Err(Error::Avro(
            "shorter than the 5-byte Confluent header".into(),
        )),
        _ => Err(Error::Avro("missing Confluent magic byte 0".into())),
    }
}

/// Whether bytes look like Confluent-framed Avro rather than JSON.
pub fn is_framed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&MAGIC)
}

/// Looks writer schemas up by their global id (the schema registry).
pub trait SchemaSource: Send + Sync {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>>;
}

/// Fixed ids for custflow's own schemas, for tools that run without a registry.
#[derive(Debug, Clone)]
pub struct StaticSchemas {
    ids: HashMap<u32, Arc<Schema>>,
}

impl StaticSchemas {
    /// Customer = 1, Order = 2, Activity = 3, CustomerScore = 4, SegmentChange = 5.
    pub fn builtin() -> Self {
        let ids = SCHEMA_TEXTS
            .iter()
            .zip(1u32..)
            .filter_map(|((name, _), id)| Some((id, Arc::new(schema(name)?.clone()))))
            .collect();
        Self { ids }
    }

    /// The id this source gives a record name.
    pub fn id_of(record: &str) -> Option<u32> {
        SCHEMA_TEXTS
            .iter()
            .position(|(n, _)| *n == record)
            .and_then(|i| u32::try_from(i + 1).ok())
    }
}

impl SchemaSource for StaticSchemas {
    fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
        self.ids.get(&id).cloned()
    }
}

#[derive(Debug)]
enum Plan {
    /// The writer schema is custflow's own for this kind: hand-written decoder.
    Fast(EventKind),
    /// Any other writer schema: resolve into the reader schema.
    Generic(Arc<Schema>),
}

/// Encodes and decodes events in the Confluent wire format.
pub struct AvroCodec {
    source: Arc<dyn SchemaSource>,
    writer_ids: HashMap<EventKind, u32>,
    plans: RwLock<HashMap<u32, Arc<Plan>>>,
}

impl std::fmt::Debug for AvroCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroCodec")
            .field("writer_ids", &self.writer_ids)
            .finish()
    }
}

impl AvroCodec {
    /// A codec that writes with `writer_ids` (from registering custflow's schemas) and
    /// reads any id `source` knows.
    pub fn new(source: Arc<dyn SchemaSource>, writer_ids: HashMap<EventKind, u32>) -> Self {
        Self {
            source,
            writer_ids,
            plans: RwLock::new(HashMap::new()),
        }
    }

    /// A codec over [`StaticSchemas`], for tools and tests without a registry.
    pub fn builtin() -> Self {
        let ids = EventKind::ALL
            .into_iter()
            .filter_map(|k| Some((k, StaticSchemas::id_of(k.record_name())?)))
            .collect();
        Self::new(Arc::new(StaticSchemas::builtin()), ids)
    }

    /// The schema id this codec writes events of `kind` with.
    pub fn writer_id(&self, kind: EventKind) -> Option<u32> {
        self.writer_ids.get(&kind).copied()
    }

    /// Encodes an event in the Confluent wire format.
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(event, &mut out)?;
        Ok(out)
    }

    /// Appends an event in the Confluent wire format to `out`.
    pub fn encode_into(&self, event: &Event, out: &mut Vec<u8>) -> Result<()> {
        let id = self
            .writer_id(event.kind())
            .ok_or_else(|| Error::Avro(format!("no writer schema id for {:?}", event.kind())))?;
        out.push(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        encode_datum(event, out);
        Ok(())
    }

    /// Decodes Confluent-framed bytes that arrived on the topic of `kind`, and validates.
    pub fn decode(&self, kind: EventKind, bytes: &[u8], ctx: &ValidationContext) -> Result<Event> {
        let event = self.decode_unchecked(kind, bytes)?;
        let errs = validate(&event, ctx);
        if errs.is_empty() {
            Ok(event)
        } else {
            Err(Error::Invalid(errs))
        }
    }

    /// Decodes without the semantic checks (for benchmarks and trusted replays).
    pub fn decode_unchecked(&self, kind: EventKind, bytes: &[u8]) -> Result<Event> {
        let (id, datum) = unframe(bytes)?;
        match &*self.plan(id)? {
            Plan::Fast(k) if *k == kind => decode_datum(kind, datum),
            Plan::Fast(k) => Err(Error::Avro(format!(
                "schema id {id} is a {} record, expected {}",
                k.record_name(),
                kind.record_name()
            ))),
            Plan::Generic(writer) => {
                let mut r = datum;
                let v = apache_avro::from_avro_datum(writer, &mut r, Some(event_schema(kind)))?;
                if !r.is_empty() {
                    return Err(Error::Avro(format!("{} trailing bytes", r.len())));
                }
                crate::json::read(kind, &avro_to_json(v))
            }
        }
    }

    fn plan(&self, id: u32) -> Result<Arc<Plan>> {
        if let Some(p) = self.plans.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(p);
        }
        let writer = self
            .source
            .schema_by_id(id)
            .ok_or(Error::UnknownSchemaId(id))?;
        let plan = Arc::new(
            EventKind::ALL
                .into_iter()
                .find(|k| event_schema(*k) == &*writer)
                .map_or(Plan::Generic(writer), Plan::Fast),
        );
        if let Ok(mut m) = self.plans.write() {
            m.insert(id, plan.clone());
        }
        Ok(plan)
    }
}

/// Encodes any serde record (such as `CustomerScore`) with one of the shipped schemas.
pub fn encode_record<T: serde::Serialize>(record: &str, value: &T) -> Result<Vec<u8>> {
    let schema = schema(record).ok_or_else(|| Error::Avro(format!("no schema {record}")))?;
    let json = serde_json::to_value(value)?;
    let v = json_to_avro(&json, schema)?;
    Ok(apache_avro::to_avro_datum(schema, v)?)
}

/// Decodes a datum written with one of the shipped schemas into a serde record.
pub fn decode_record<T: serde::de::DeserializeOwned>(record: &str, datum: &[u8]) -> Result<T> {
    let schema = schema(record).ok_or_else(|| Error::Avro(format!("no schema {record}")))?;
    let mut r = datum;
    let v = match apache_avro::from_avro_datum(schema, &mut r, None) {
        Ok(v) if r.is_empty() => v,
        first => {
            // Written with an earlier version: resolve it to the current schema.
            let older = EARLIER
                .iter()
                .filter(|(n, _)| *n == record)
                .find_map(|(_, w)| {
                    let mut r = datum;
                    apache_avro::from_avro_datum(w, &mut r, Some(schema))
                        .ok()
                        .filter(|_| r.is_empty())
                });
            match (older, first) {
                (Some(v), _) => v,
                (None, Ok(_)) => {
                    return Err(Error::Avro(format!("{record}: bytes left after the datum")))
                }
                (None, Err(e)) => return Err(e.into()),
            }
        }
    };
    Ok(serde_json::from_value(avro_to_json(v))?)
}

/// Converts an Avro value into JSON (timestamps as epoch milliseconds).
pub fn avro_to_json(v: AvroValue) -> Value {
    match v {
        AvroValue::Null => Value::Null,
        AvroValue::Boolean(b) => Value::Bool(b),
        AvroValue::Int(i) | AvroValue::Date(i) | AvroValue::TimeMillis(i) => Value::from(i),
        AvroValue::Long(i)
        | AvroValue::TimeMicros(i)
        | AvroValue::TimestampMillis(i)
        | AvroValue::TimestampMicros(i)
        | AvroValue::TimestampNanos(i)
        | AvroValue::LocalTimestampMillis(i)
        | AvroValue::LocalTimestampMicros(i)
        | AvroValue::LocalTimestampNanos(i) => Value::from(i),
        AvroValue::Float(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        AvroValue::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        AvroValue::String(s) | AvroValue::Enum(_, s) => Value::String(s),
        AvroValue::Uuid(u) => Value::String(u.to_string()),
        AvroValue::Bytes(b) | AvroValue::Fixed(_, b) => {
            Value::String(String::from_utf8_lossy(&b).into_owned())
        }
        AvroValue::Union(_, v) => avro_to_json(*v),
        AvroValue::Array(a) => Value::Array(a.into_iter().map(avro_to_json).collect()),
        AvroValue::Map(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, avro_to_json(v))).collect())
        }
        AvroValue::Record(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, avro_to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

/// Converts JSON into an Avro value of `schema` (RFC 3339 strings become timestamps).
pub fn json_to_avro(v: &Value, schema: &Schema) -> Result<AvroValue> {
    let bad = |what: &str| Err(Error::Avro(format!("expected {what}, got {v}")));
    Ok(match schema {
        Schema::Null => AvroValue::Null,
        Schema::Boolean => match v {
            Value::Bool(b) => AvroValue::Boolean(*b),
            _ => return bad("boolean"),
        },
        Schema::Int => match v.as_i64().and_then(|i| i32::try_from(i).ok()) {
            Some(i) => AvroValue::Int(i),
            None => return bad("int"),
        },
        Schema::Long => match v.as_i64() {
            Some(i) => AvroValue::Long(i),
            None => return bad("long"),
        },
        Schema::TimestampMillis => match v {
            Value::String(s) => match crate::time::parse_rfc3339(s) {
                Some(ms) => AvroValue::TimestampMillis(ms),
                None => return bad("RFC 3339 timestamp"),
            },
            _ => match v.as_i64() {
                Some(ms) => AvroValue::TimestampMillis(ms),
                None => return bad("timestamp"),
            },
        },
        Schema::Float => match v.as_f64() {
            #[allow(clippy::cast_possible_truncation)]
            Some(f) => AvroValue::Float(f as f32),
            None => return bad("float"),
        },
        Schema::Double => match v.as_f64() {
            Some(f) => AvroValue::Double(f),
            None => return bad("double"),
        },
        Schema::String => match v {
            Value::String(s) => AvroValue::String(s.clone()),
            _ => return bad("string"),
        },
        Schema::Enum(e) => match v {
            Value::String(s) => match e.symbols.iter().position(|x| x == s) {
                Some(i) => AvroValue::Enum(u32::try_from(i).unwrap_or(0), s.clone()),
                None => return bad(&format!("one of {:?}", e.symbols)),
            },
            _ => return bad("enum symbol"),
        },
        Schema::Union(u) => {
            let variants = u.variants();
            let null_idx = variants.iter().position(|s| matches!(s, Schema::Null));
            match (v, null_idx) {
                (Value::Null, Some(i)) => {
                    AvroValue::Union(u32::try_from(i).unwrap_or(0), Box::new(AvroValue::Null))
                }
                _ => {
                    let (i, inner) = variants
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| !matches!(s, Schema::Null))
                        .find_map(|(i, s)| json_to_avro(v, s).ok().map(|x| (i, x)))
                        .ok_or_else(|| Error::Avro(format!("{v} matches no union branch")))?;
                    AvroValue::Union(u32::try_from(i).unwrap_or(0), Box::new(inner))
                }
            }
        }
        Schema::Array(a) => match v {
            Value::Array(xs) => AvroValue::Array(
                xs.iter()
                    .map(|x| json_to_avro(x, &a.items))
                    .collect::<Result<_>>()?,
            ),
            _ => return bad("array"),
        },
        Schema::Map(m) => match v {
            Value::Object(o) => AvroValue::Map(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), json_to_avro(x, &m.types)?)))
                    .collect::<Result<_>>()?,
            ),
            _ => return bad("map"),
        },
        Schema::Record(r) => match v {
            Value::Object(o) => AvroValue::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let x = o.get(&f.name).unwrap_or(&Value::Null);
                        let x = json_to_avro(x, &f.schema)
                            .map_err(|e| Error::Avro(format!("{}: {e}", f.name)))?;
                        Ok((f.name.clone(), x))
                    })
                    .collect::<Result<_>>()?,
            ),
            _ => return bad("record"),
        },
        other => return Err(Error::Avro(format!("unsupported schema {other:?}"))),
    })
}

// ---------------------------------------------------------------------------
// Fast path: the binary encoding of custflow's own schemas, field by field.
// The order of fields here must match schemas/avro/*.avsc; the property tests
// check both directions against the generic apache-avro implementation.

/// Appends the Avro binary datum (no header) of an event.
pub fn encode_datum(event: &Event, out: &mut Vec<u8>) {
    let w = &mut W(out);
    match event {
        Event::Customer(c) => {
            w.str(&c.event_id);
            w.str(&c.customer_id);
            w.long(c.occurred_at);
            w.opt(c.signup_at.as_ref(), |w, v| w.long(*v));
            w.opt(c.country.as_ref(), |w, v| w.str(v));
            w.opt(c.channel.as_ref(), |w, v| w.str(v));
            w.0.push(u8::from(c.loyalty_member));
            w.map(&c.attributes);
        }
        Event::Order(o) => {
            w.str(&o.event_id);
            w.str(&o.order_id);
            w.str(&o.customer_id);
            w.long(o.occurred_at);
            w.long(o.status as i64);
            w.opt(o.location_id.as_ref(), |w, v| w.str(v));
            w.opt(o.channel.as_ref(), |w, v| w.str(v));
            w.str(&o.currency);
            if !o.items.is_empty() {
                w.long(o.items.len() as i64);
                for item in &o.items {
                    w.str(&item.sku);
                    w.str(&item.category);
                    w.long(i64::from(item.quantity));
                    w.double(item.unit_price);
                }
            }
            w.long(0);
            w.opt(o.discount_code.as_ref(), |w, v| w.str(v));
            w.double(o.discount_amount);
            w.double(o.total);
        }
        Event::Activity(a) => {
            w.str(&a.event_id);
            w.str(&a.customer_id);
            w.long(a.occurred_at);
            w.long(a.kind as i64);
            w.map(&a.properties);
        }
    }
}

/// Decodes an Avro binary datum (no header) written with custflow's schema of `kind`.
pub fn decode_datum(kind: EventKind, datum: &[u8]) -> Result<Event> {
    let mut r = R { b: datum };
    let event = match kind {
        EventKind::Customer => Event::Customer(Customer {
            event_id: r.str()?,
            customer_id: r.str()?,
            occurred_at: r.long()?,
            signup_at: r.opt(R::long)?,
            country: r.opt(R::str)?,
            channel: r.opt(R::str)?,
            loyalty_member: r.boolean()?,
            attributes: r.map()?,
        }),
        EventKind::Order => Event::Order(Order {
            event_id: r.str()?,
            order_id: r.str()?,
            customer_id: r.str()?,
            occurred_at: r.long()?,
            status: r.enum_index(3).and_then(|i| {
                OrderStatus::from_index(i).ok_or_else(|| Error::Avro("bad status".into()))
            })?,
            location_id: r.opt(R::str)?,
            channel: r.opt(R::str)?,
            currency: r.str()?,
            items: {
                let mut items = Vec::new();
                r.blocks(|r| {
                    items.push(OrderItem {
                        sku: r.str()?,
                        category: r.str()?,
                        quantity: r.int()?,
                        unit_price: r.double()?,
                    });
                    Ok(())
                })?;
                items
            },
            discount_code: r.opt(R::str)?,
            discount_amount: r.double()?,
            total: r.double()?,
        }),
        EventKind::Activity => Event::Activity(Activity {
            event_id: r.str()?,
            customer_id: r.str()?,
            occurred_at: r.long()?,
            kind: r.enum_index(4).and_then(|i| {
                ActivityKind::from_index(i).ok_or_else(|| Error::Avro("bad kind".into()))
            })?,
            properties: r.map()?,
        }),
    };
    r.finish(event)
}

/// The Avro binary datum of a [`CustomerScore`] with its shipped schema, field by field:
/// what [`encode_record`] gives, without its detour through JSON and apache-avro's value
/// tree (a rollout encodes a score and several segment changes per customer).
pub fn encode_score(s: &CustomerScore) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + s.customer_id.len() + s.model_version.len());
    let w = &mut W(&mut out);
    w.str(&s.customer_id);
    w.long(s.version);
    w.long(s.as_of);
    w.str(&s.model_version);
    for v in s.measures() {
        w.double(v);
    }
    w.str(&s.value_tier);
    for v in [s.r_score, s.f_score, s.m_score] {
        w.long(i64::from(v));
    }
    w.str(&s.rfm_segment);
    w.opt(s.cluster.as_ref(), |w, v| w.str(v));
    w.0.push(u8::from(s.at_risk));
    w.0.push(u8::from(s.retention_target));
    w.double(s.expected_retention_profit);
    out
}

/// The Avro binary datum of a [`SegmentChange`] with its shipped schema, field by field
/// (see [`encode_score`]).
pub fn encode_change(c: &SegmentChange) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + c.customer_id.len() + c.model_version.len());
    let w = &mut W(&mut out);
    w.str(&c.customer_id);
    w.long(c.version);
    w.long(c.as_of);
    w.str(&c.model_version);
    w.long(match c.dimension {
        SegmentDimension::ValueTier => 0,
        SegmentDimension::RfmSegment => 1,
        SegmentDimension::Cluster => 2,
        SegmentDimension::AtRisk => 3,
    });
    w.opt(c.previous.as_ref(), |w, v| w.str(v));
    w.str(&c.current);
    w.opt(c.value_tier.as_ref(), |w, v| w.str(v));
    out
}

/// Decodes a [`CustomerScore`] datum field by field; one that does not read as the
/// current schema (written with an earlier one) goes through [`decode_record`].
pub fn decode_score(datum: &[u8]) -> Result<CustomerScore> {
    let mut r = R { b: datum };
    let fast = (|| -> Result<CustomerScore> {
        let s = CustomerScore {
            customer_id: r.str()?,
            version: r.long()?,
            as_of: r.long()?,
            model_version: r.str()?,
            frequency: r.double()?,
            recency: r.double()?,
            age: r.double()?,
            monetary_value: r.double()?,
            p_alive: r.double()?,
            churn_probability: r.double()?,
            expected_orders_90d: r.double()?,
            expected_aov: r.double()?,
            clv_12m: r.double()?,
            value_tier: r.str()?,
            r_score: r.int()?,
            f_score: r.int()?,
            m_score: r.int()?,
            rfm_segment: r.str()?,
            cluster: r.opt(R::str)?,
            at_risk: r.boolean()?,
            retention_target: r.boolean()?,
            expected_retention_profit: r.double()?,
        };
        r.finish(s)
    })();
    fast.or_else(|_| decode_record("CustomerScore", datum))
}

/// Decodes a [`SegmentChange`] datum field by field, else through [`decode_record`]
/// (see [`decode_score`]).
pub fn decode_change(datum: &[u8]) -> Result<SegmentChange> {
    let mut r = R { b: datum };
    let fast = (|| -> Result<SegmentChange> {
        let c = SegmentChange {
            customer_id: r.str()?,
            version: r.long()?,
            as_of: r.long()?,
            model_version: r.str()?,
            dimension: match r.enum_index(4)? {
                0 => SegmentDimension::ValueTier,
                1 => SegmentDimension::RfmSegment,
                2 => SegmentDimension::Cluster,
                _ => SegmentDimension::AtRisk,
            },
            previous: r.opt(R::str)?,
            current: r.str()?,
            value_tier: r.opt(R::str)?,
        };
        r.finish(c)
    })();
    fast.or_else(|_| decode_record("SegmentChange", datum))
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn long(&mut self, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            self.0.push((z as u8) | 0x80);
            z >>= 7;
        }
        self.0.push(z as u8);
    }

    fn str(&mut self, s: &str) {
        self.long(s.len() as i64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn double(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A `["null", T]` union.
    fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                f(self, v);
            }
        }
    }

    fn map(&mut self, m: &BTreeMap<String, String>) {
        if !m.is_empty() {
            self.long(m.len() as i64);
            for (k, v) in m {
                self.str(k);
                self.str(v);
            }
        }
        self.long(0);
    }
}

struct R<'a> {
    b: &'a [u8],
}

/// Upper bound of elements in one block, so corrupt counts cannot exhaust memory.
const MAX_BLOCK: i64 = 1 << 20;

impl R<'_> {
    fn eof() -> Error {
        Error::Avro("unexpected end of datum".into())
    }

    /// `value` when the whole datum was read, else an error naming the bytes left.
    fn finish<T>(&self, value: T) -> Result<T> {
        if self.b.is_empty() {
            Ok(value)
        } else {
            Err(Error::Avro(format!(
                "{} bytes left after the datum",
                self.b.len()
            )))
        }
    }

    fn long(&mut self) -> Result<i64> {
        let mut z: u64 = 0;
        for (i, byte) in self.b.iter().enumerate().take(10) {
            z |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.b = &self.b[i + 1..];
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(if self.b.len() < 10 {
            Self::eof()
        } else {
            Error::Avro("varint longer than 10 bytes".into())
        })
    }

    fn int(&mut self) -> Result<i32> {
        i32::try_from(self.long()?).map_err(|_| Error::Avro("int out of range".into()))
    }

    fn boolean(&mut self) -> Result<bool> {
        let (&b, rest) = self.b.split_first().ok_or_else(Self::eof)?;
        self.b = rest;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Avro(format!("boolean byte {b}"))),
        }
    }

    fn double(&mut self) -> Result<f64> {
        let (head, rest) = self.b.split_first_chunk::<8>().ok_or_else(Self::eof)?;
        self.b = rest;
        Ok(f64::from_le_bytes(*head))
    }

    fn str(&mut self) -> Result<String> {
        let len =
            usize::try_from(self.long()?).map_err(|_| Error::Avro("negative length".into()))?;
        if len > self.b.len() {
            return Err(Self::eof());
        }
        let (s, rest) = self.b.split_at(len);
        self.b = rest;
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| Error::Avro("string is not UTF-8".into()))
    }

    fn enum_index(&mut self, n: usize) -> Result<usize> {
        usize::try_from(self.long()?)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| Error::Avro("enum index out of range".into()))
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.long()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            i => Err(Error::Avro(format!("union index {i}"))),
        }
    }

    /// Reads the blocks of an array or map, calling `f` once per element.
    fn blocks(&mut self, mut f: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                n = n
                    .checked_neg()
                    .ok_or_else(|| Error::Avro("bad block count".into()))?;
                self.long()?; // block size in bytes, not needed
            }
            if n > MAX_BLOCK || n as usize > self.b.len() {
                return Err(Error::Avro(format!(
                    "block of {n} elements exceeds the datum"
                )));
            }
            for _ in 0..n {
                f(self)?;
            }
        }
    }

    fn map(&mut self) -> Result<BTreeMap<String, String>> {
        let mut m = BTreeMap::new();
        self.blocks(|r| {
            let k = r.str()?;
            let v = r.str()?;
            m.insert(k, v);
            Ok(())
        })?;
        Ok(m)
    }
}

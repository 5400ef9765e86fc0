//! JSON codec: plain JSON objects and Kafka Connect's `{"schema", "payload"}` envelope.
//!
//! Decoding walks the JSON value by hand so that every problem is collected with
//! its field path instead of stopping at the first one, then runs the semantic
//! checks of [`crate::validate`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{Error, FieldError, Result};
use crate::event::{
    Activity, ActivityKind, Customer, Event, EventKind, Order, OrderItem, OrderStatus,
};
use crate::validate::{validate_into, ValidationContext};

mod typed;

/// Decodes JSON bytes of a known kind (the kind of the topic they arrived on).
pub fn decode(kind: EventKind, bytes: &[u8], ctx: &ValidationContext) -> Result<Event> {
    if let Some(event) = typed::read(Some(kind), bytes) {
        return finish(Some(event), Vec::new(), ctx);
    }
    let v: Value = serde_json::from_slice(bytes)?;
    decode_value(kind, &v, ctx)
}

/// Reads JSON bytes checking only their structure, as [`read`] does: of `kind`, or of
/// the kind named by the `type` field when `kind` is `None`.
///
/// A record in the common shape (fields of their usual JSON types, no envelope) is read
/// in one pass straight into the event; anything else takes the path through
/// [`Value`], which accepts the same lenient forms as [`read`] and names every problem.
pub fn read_slice(kind: Option<EventKind>, bytes: &[u8]) -> Result<Event> {
    if let Some(event) = typed::read(kind, bytes) {
        return Ok(event);
    }
    let v: Value = serde_json::from_slice(bytes)?;
    match kind {
        Some(kind) => read(kind, &v),
        None => read(tag(unwrap_envelope(&v))?, &v),
    }
}

/// Decodes a JSON value of a known kind, unwrapping a Connect envelope if present.
pub fn decode_value(kind: EventKind, v: &Value, ctx: &ValidationContext) -> Result<Event> {
    let v = unwrap_envelope(v);
    let mut errs = Vec::new();
    let event = read_event(kind, v, &mut errs);
    finish(event, errs, ctx)
}

/// Reads a JSON value of a known kind checking only its structure (fields, types,
/// enum symbols), not the semantic rules of [`crate::validate`].
pub fn read(kind: EventKind, v: &Value) -> Result<Event> {
    let mut errs = Vec::new();
    match read_event(kind, unwrap_envelope(v), &mut errs) {
        Some(e) if errs.is_empty() => Ok(e),
        _ => Err(Error::Invalid(errs)),
    }
}

/// Decodes a JSON value whose kind is named by its `type` field (`customer`, `order`,
/// `activity`): the form used by `POST /v1/events` and NDJSON files.
pub fn decode_tagged(v: &Value, ctx: &ValidationContext) -> Result<Event> {
    let v = unwrap_envelope(v);
    decode_value(tag(v)?, v, ctx)
}

/// The kind named by a JSON object's `type` field.
fn tag(v: &Value) -> Result<EventKind> {
    match v.get("type") {
        None | Some(Value::Null) => Err(Error::Invalid(vec![FieldError::new(
            "type",
            "missing",
            "required: one of customer, order, activity",
        )])),
        Some(Value::String(s)) => EventKind::parse(s).ok_or_else(|| {
            Error::Invalid(vec![FieldError::new(
                "type",
                "enum",
                format!("{s:?} is not one of customer, order, activity"),
            )])
        }),
        Some(_) => Err(Error::Invalid(vec![FieldError::new(
            "type",
            "type",
            "must be a string",
        )])),
    }
}

/// Encodes an event as a plain JSON object.
pub fn encode(event: &Event) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(event).unwrap_or_default()
}

/// Encodes an event as a JSON object with its `type` discriminator.
pub fn encode_tagged(event: &Event) -> Value {
    let mut v = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("type".into(), Value::String(event.kind().as_str().into()));
    }
    v
}

/// The payload of a Kafka Connect envelope, or the value itself.
pub fn unwrap_envelope(v: &Value) -> &Value {
    match v {
        Value::Object(m) if m.len() == 2 && m.contains_key("schema") => {
            m.get("payload").unwrap_or(v)
        }
        _ => v,
    }
}

fn finish(
    event: Option<Event>,
    mut errs: Vec<FieldError>,
    ctx: &ValidationContext,
) -> Result<Event> {
    let Some(event) = event else {
        return Err(Error::Invalid(errs));
    };
    validate_into(&event, ctx, &mut errs);
    if errs.is_empty() {
        Ok(event)
    } else {
        Err(Error::Invalid(errs))
    }
}

fn read_event(kind: EventKind, v: &Value, errs: &mut Vec<FieldError>) -> Option<Event> {
    let Value::Object(m) = v else {
        errs.push(FieldError::new(
            "",
            "type",
            "an event must be a JSON object",
        ));
        return None;
    };
    let mut r = Obj {
        m,
        prefix: String::new(),
        errs,
    };
    Some(match kind {
        EventKind::Customer => Event::Customer(Customer {
            event_id: r.req_str("event_id"),
            customer_id: r.req_str("customer_id"),
            occurred_at: r.req_ts("occurred_at"),
            signup_at: r.opt_ts("signup_at"),
            country: r.opt_str("country"),
            channel: r.opt_str("channel"),
            loyalty_member: r.bool_or("loyalty_member", false),
            attributes: r.str_map("attributes"),
        }),
        EventKind::Order => Event::Order(Order {
            event_id: r.req_str("event_id"),
            order_id: r.req_str("order_id"),
            customer_id: r.req_str("customer_id"),
            occurred_at: r.req_ts("occurred_at"),
            status: r
                .req_enum("status", &OrderStatus::SYMBOLS)
                .and_then(OrderStatus::from_index)
                .unwrap_or(OrderStatus::Placed),
            location_id: r.opt_str("location_id"),
            channel: r.opt_str("channel"),
            currency: r.req_str("currency"),
            items: r.items("items"),
            discount_code: r.opt_str("discount_code"),
            discount_amount: r.f64_or("discount_amount", 0.0),
            total: r.req_f64("total"),
        }),
        EventKind::Activity => Event::Activity(Activity {
            event_id: r.req_str("event_id"),
            customer_id: r.req_str("customer_id"),
            occurred_at: r.req_ts("occurred_at"),
            kind: r
                .req_enum("kind", &ActivityKind::SYMBOLS)
                .and_then(ActivityKind::from_index)
                .unwrap_or(ActivityKind::Visit),
            properties: r.str_map("properties"),
        }),
    })
}

/// Reads fields of one JSON object, recording problems under `prefix`.
struct Obj<'a, 'e> {
    m: &'a Map<String, Value>,
    prefix: String,
    errs: &'e mut Vec<FieldError>,
}

impl<'a> Obj<'a, '_> {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn err(&mut self, name: &str, code: &str, msg: impl Into<String>) {
        let path = self.path(name);
        self.errs.push(FieldError::new(path, code, msg));
    }

    /// The field's value, `None` when absent or null.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.m.get(name).filter(|v| !v.is_null())
    }

    fn req_str(&mut self, name: &str) -> String {
        match self.get(name) {
            None => {
                self.err(name, "missing", "required");
                String::new()
            }
            Some(v) => self.as_str(name, v).unwrap_or_default(),
        }
    }

    fn opt_str(&mut self, name: &str) -> Option<String> {
        let v = self.get(name)?;
        self.as_str(name, v)
    }

    fn as_str(&mut self, name: &str, v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            // Ids are often numeric in source systems; accept integers as their text.
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => {
                self.err(name, "type", "must be a string");
                None
            }
        }
    }

    fn ts_of(&mut self, name: &str, v: &Value) -> Option<i64> {
        match v {
            Value::String(s) => {
                let t = crate::time::parse_rfc3339(s);
                if t.is_none() {
                    self.err(
                        name,
                        "format",
                        format!("{s:?} is not an RFC 3339 timestamp"),
                    );
                }
                t
            }
            Value::Number(n) => {
                let t = n.as_i64();
                if t.is_none() {
                    self.err(name, "type", "epoch milliseconds must be an integer");
                }
                t
            }
            _ => {
                self.err(
                    name,
                    "type",
                    "must be an RFC 3339 string or epoch milliseconds",
                );
                None
            }
        }
    }

    fn req_ts(&mut self, name: &str) -> i64 {
        match self.get(name) {
            None => {
                self.err(name, "missing", "required");
                0
            }
            Some(v) => self.ts_of(name, v).unwrap_or(0),
        }
    }

    fn opt_ts(&mut self, name: &str) -> Option<i64> {
        let v = self.get(name)?;
        self.ts_of(name, v)
    }

    fn bool_or(&mut self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.err(name, "type", "must be a boolean");
                default
            }
        }
    }

    fn num(&mut self, name: &str, v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            // Decimals are often sent as strings to keep precision.
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(x) => Some(x),
                Err(_) => {
                    self.err(name, "type", format!("{s:?} is not a number"));
                    None
                }
            },
            _ => {
                self.err(name, "type", "must be a number");
                None
            }
        }
    }

    fn req_f64(&mut self, name: &str) -> f64 {
        match self.get(name) {
            None => {
                self.err(name, "missing", "required");
                0.0
            }
            Some(v) => self.num(name, v).unwrap_or(0.0),
        }
    }

    fn f64_or(&mut self, name: &str, default: f64) -> f64 {
        match self.get(name) {
            None => default,
            Some(v) => self.num(name, v).unwrap_or(default),
        }
    }

    fn req_i32(&mut self, name: &str) -> i32 {
        match self.get(name) {
            None => {
                self.err(name, "missing", "required");
                1
            }
            Some(Value::Number(n)) => match n.as_i64().and_then(|x| i32::try_from(x).ok()) {
                Some(x) => x,
                None => {
                    self.err(name, "type", "must be a 32-bit integer");
                    1
                }
            },
            Some(_) => {
                self.err(name, "type", "must be an integer");
                1
            }
        }
    }

    fn req_enum(&mut self, name: &str, symbols: &[&str]) -> Option<usize> {
        match self.get(name) {
            None => {
                self.err(
                    name,
                    "missing",
                    format!("required: one of {}", symbols.join(", ")),
                );
                None
            }
            Some(Value::String(s)) => {
                let i = symbols.iter().position(|x| x == s);
                if i.is_none() {
                    self.err(
                        name,
                        "enum",
                        format!("{s:?} is not one of {}", symbols.join(", ")),
                    );
                }
                i
            }
            Some(_) => {
                self.err(name, "type", "must be a string");
                None
            }
        }
    }

    fn str_map(&mut self, name: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.get(name) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Number(_) | Value::Bool(_) => {
                            out.insert(k.clone(), v.to_string());
                        }
                        _ => {
                            let p = format!("{name}.{k}");
                            self.err(&p, "type", "map values must be strings");
                        }
                    }
                }
            }
            Some(_) => self.err(name, "type", "must be an object of strings"),
        }
        out
    }

    fn items(&mut self, name: &str) -> Vec<OrderItem> {
        let arr = match self.get(name) {
            None => return Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => {
                self.err(name, "type", "must be an array");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(arr.len());
        for (i, v) in arr.iter().enumerate() {
            let prefix = format!("{}[{i}]", self.path(name));
            let Value::Object(m) = v else {
                self.errs
                    .push(FieldError::new(prefix, "type", "must be an object"));
                continue;
            };
            let mut r = Obj {
                m,
                prefix,
                errs: self.errs,
            };
            out.push(OrderItem {
                sku: r.req_str("sku"),
                category: r.opt_str("category").unwrap_or_default(),
                quantity: r.req_i32("quantity"),
                unit_price: r.req_f64("unit_price"),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> ValidationContext {
        ValidationContext::at(crate::time::parse_rfc3339("2026-11-25T14:00:00Z").unwrap())
    }

    fn order() -> Value {
        json!({
            "event_id": "01JDQ0000000000000000000AA", "order_id": "o-1", "customer_id": "c-1",
            "occurred_at": "2026-11-25T12:00:00Z", "status": "placed", "currency": "EUR",
            "items": [
                {"sku": "A", "category": "mains", "quantity": 2, "unit_price": 10.0},
                {"sku": "B", "category": "drinks", "quantity": 1, "unit_price": 3.5}
            ],
            "discount_code": "WELCOME", "discount_amount": 2.0, "total": 21.5
        })
    }

    #[test]
    fn valid_order_decodes() {
        let e = decode_value(EventKind::Order, &order(), &ctx()).unwrap();
        let Event::Order(o) = e else {
            panic!("not an order")
        };
        assert_eq!(o.items.len(), 2);
        assert_eq!(o.total, 21.5);
        assert_eq!(
            o.occurred_at,
            crate::time::parse_rfc3339("2026-11-25T12:00:00Z").unwrap()
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut v = order();
        v["customer_id"] = json!("");
        v["status"] = json!("shipped");
        v["currency"] = json!("EURO");
        v["items"][1]["quantity"] = json!(0);
        v["items"][0]["unit_price"] = json!(-1.0);
        v["occurred_at"] = json!("2030-01-01T00:00:00Z");
        v.as_object_mut().unwrap().remove("order_id");
        let err = decode_value(EventKind::Order, &v, &ctx()).unwrap_err();
        let mut paths: Vec<_> = err
            .field_errors()
            .unwrap()
            .iter()
            .map(|e| (e.path.as_str(), e.code.as_str()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![
                ("currency", "currency"),
                ("customer_id", "empty"),
                ("items[0].unit_price", "negative"),
                ("items[1].quantity", "zero"),
                ("occurred_at", "future"),
                ("order_id", "missing"),
                ("status", "enum"),
            ]
        );
    }

    #[test]
    fn totals_must_add_up() {
        let mut v = order();
        v["total"] = json!(25.0);
        let err = decode_value(EventKind::Order, &v, &ctx()).unwrap_err();
        let errs = err.field_errors().unwrap();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].code.as_str()),
            ("total", "mismatch")
        );
    }

    #[test]
    fn connect_envelope_and_epoch_millis_are_accepted() {
        let mut payload = order();
        payload["occurred_at"] = json!(1_795_600_000_000_i64);
        let env = json!({"schema": {"type": "struct", "fields": []}, "payload": payload});
        let e = decode_value(EventKind::Order, &env, &ctx()).unwrap();
        assert_eq!(e.occurred_at(), 1_795_600_000_000);
    }

    #[test]
    fn tagged_events_need_a_known_type() {
        let mut v = order();
        assert_eq!(
            decode_tagged(&v, &ctx())
                .unwrap_err()
                .field_errors()
                .unwrap()[0]
                .path,
            "type"
        );
        v["type"] = json!("order");
        assert!(decode_tagged(&v, &ctx()).is_ok());
        v["type"] = json!("refund");
        assert_eq!(
            decode_tagged(&v, &ctx())
                .unwrap_err()
                .field_errors()
                .unwrap()[0]
                .code,
            "enum"
        );
    }

    #[test]
    fn wrong_types_are_reported() {
        let v = json!({"event_id": 5, "customer_id": ["x"], "occurred_at": true, "kind": 3,
                       "properties": {"a": {"b": 1}}});
        let err = decode_value(EventKind::Activity, &v, &ctx()).unwrap_err();
        let paths: Vec<_> = err
            .field_errors()
            .unwrap()
            .iter()
            .map(|e| e.path.clone())
            .collect();
        assert_eq!(
            paths,
            vec!["customer_id", "occurred_at", "kind", "properties.a"]
        );
    }
}

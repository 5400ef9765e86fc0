//! One pass from JSON bytes straight into an event, for records in the usual shape.
//!
//! [`read`] answers `None` for anything it does not take exactly as the
//! [`Value`](serde_json::Value) reader would (numeric ids, numbers as strings, nulls in
//! required fields, envelopes, duplicate keys, type errors): the caller then takes that
//! path, which accepts the lenient forms and names every problem. So this is only a
//! shortcut, never a second set of rules.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::event::{
    Activity, ActivityKind, Customer, Event, EventKind, Order, OrderItem, OrderStatus,
};

/// Every field of every kind; what a kind requires is checked when the event is built.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    tag: Option<Tag>,
    event_id: Option<String>,
    customer_id: Option<String>,
    occurred_at: Option<Ts>,
    signup_at: Option<Ts>,
    country: Option<String>,
    channel: Option<String>,
    loyalty_member: Option<bool>,
    attributes: Option<BTreeMap<String, String>>,
    order_id: Option<String>,
    status: Option<OrderStatus>,
    location_id: Option<String>,
    currency: Option<String>,
    items: Option<Vec<Item>>,
    discount_code: Option<String>,
    discount_amount: Option<f64>,
    total: Option<f64>,
    kind: Option<ActivityKind>,
    properties: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Tag {
    Customer,
    Order,
    Activity,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    category: Option<String>,
    quantity: i32,
    unit_price: f64,
}

/// A timestamp: an RFC 3339 string or integer epoch milliseconds.
struct Ts(i64);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch milliseconds")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ts, E> {
                crate::time::parse_rfc3339(s)
                    .map(Ts)
                    .ok_or_else(|| E::custom("not an RFC 3339 timestamp"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
                Ok(Ts(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
                i64::try_from(v)
                    .map(Ts)
                    .map_err(|_| E::custom("out of range"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The event in `bytes` of `kind` (of its `type` when `None`), or `None` when the
/// [`Value`](serde_json::Value) path must decide.
pub(super) fn read(kind: Option<EventKind>, bytes: &[u8]) -> Option<Event> {
    let w: Wire = serde_json::from_slice(bytes).ok()?;
    let kind = match (kind, &w.tag) {
        (Some(k), _) => k,
        (None, Some(Tag::Customer)) => EventKind::Customer,
        (None, Some(Tag::Order)) => EventKind::Order,
        (None, Some(Tag::Activity)) => EventKind::Activity,
        (None, None) => return None,
    };
    Some(match kind {
        EventKind::Customer => Event::Customer(Customer {
            event_id: w.event_id?,
            customer_id: w.customer_id?,
            occurred_at: w.occurred_at?.0,
            signup_at: w.signup_at.map(|t| t.0),
            country: w.country,
            channel: w.channel,
            loyalty_member: w.loyalty_member.unwrap_or(false),
            attributes: w.attributes.unwrap_or_default(),
        }),
        EventKind::Order => Event::Order(Order {
            event_id: w.event_id?,
            order_id: w.order_id?,
            customer_id: w.customer_id?,
            occurred_at: w.occurred_at?.0,
            status: w.status?,
            location_id: w.location_id,
            channel: w.channel,
            currency: w.currency?,
            items: w
                .items
                .unwrap_or_default()
                .into_iter()
                .map(|i| OrderItem {
                    sku: i.sku,
                    category: i.category.unwrap_or_default(),
                    quantity: i.quantity,
                    unit_price: i.unit_price,
                })
                .collect(),
            discount_code: w.discount_code,
            discount_amount: w.discount_amount.unwrap_or(0.0),
            total: w.total?,
        }),
        EventKind::Activity => Event::Activity(Activity {
            event_id: w.event_id?,
            customer_id: w.customer_id?,
            occurred_at: w.occurred_at?.0,
            kind: w.kind?,
            properties: w.properties.unwrap_or_default(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::json;

    fn order() -> Value {
        json!({
            "type": "order",
            "event_id": "01JDQ0000000000000000000AA", "order_id": "o-1", "customer_id": "c-1",
            "occurred_at": "2026-11-25T12:00:00Z", "status": "placed", "currency": "EUR",
            "channel": "app", "location_id": null,
            "items": [
                {"sku": "A", "category": "mains", "quantity": 2, "unit_price": 10.0},
                {"sku": "B\u{e9}\"", "quantity": 1, "unit_price": 3}
            ],
            "discount_code": "WELCOME", "discount_amount": 2.0, "total": 21.5, "extra": [1]
        })
    }

    fn customer() -> Value {
        json!({
            "type": "customer", "event_id": "e-2", "customer_id": "c-2",
            "occurred_at": 1_795_615_200_000_i64, "signup_at": "2026-01-01T00:00:00+02:00",
            "loyalty_member": true, "attributes": {"tier": "gold"}
        })
    }

    fn activity() -> Value {
        json!({
            "type": "activity", "event_id": "e-3", "customer_id": "c-3",
            "occurred_at": "2026-11-25T12:00:00.250Z", "kind": "email_open",
            "properties": {"campaign": "x"}
        })
    }

    /// Both paths on one record: the shortcut must agree with the `Value` reader
    /// whenever it answers.
    fn both(kind: Option<EventKind>, v: &Value) -> (Option<Event>, Option<Event>) {
        let bytes = serde_json::to_vec(v).unwrap();
        let slow = match kind {
            Some(k) => json::read(k, v).ok(),
            None => json::tag(json::unwrap_envelope(v))
                .and_then(|k| json::read(k, v))
                .ok(),
        };
        (read(kind, &bytes), slow)
    }

    #[test]
    fn the_usual_shapes_take_the_shortcut_and_read_as_the_value_reader_does() {
        for (kind, v) in [
            (EventKind::Order, order()),
            (EventKind::Customer, customer()),
            (EventKind::Activity, activity()),
        ] {
            for k in [Some(kind), None] {
                let (fast, slow) = both(k, &v);
                assert!(fast.is_some(), "{v}");
                assert_eq!(fast, slow, "{v}");
                let bytes = serde_json::to_vec(&v).unwrap();
                assert_eq!(json::read_slice(k, &bytes).ok(), slow);
            }
        }
    }

    #[test]
    fn lenient_or_wrong_shapes_are_left_to_the_value_reader() {
        let variants: Vec<(&str, Value)> = vec![
            ("customer_id", json!(42)),
            ("total", json!("21.5")),
            ("customer_id", Value::Null),
            ("occurred_at", json!(1.5)),
            ("occurred_at", json!("yesterday")),
            ("status", json!("shipped")),
            (
                "items",
                json!([{"sku": "A", "quantity": 2.0, "unit_price": 1}]),
            ),
            (
                "items",
                json!([{"sku": "A", "quantity": 1, "unit_price": "1"}]),
            ),
            ("discount_amount", json!(true)),
        ];
        for (field, value) in variants {
            let mut v = order();
            v[field] = value;
            let (fast, slow) = both(Some(EventKind::Order), &v);
            assert!(fast.is_none(), "{v}");
            let bytes = serde_json::to_vec(&v).unwrap();
            assert_eq!(
                json::read_slice(Some(EventKind::Order), &bytes).ok(),
                slow,
                "{v}"
            );
        }
        // The numeric id is accepted (as its text) by the Value reader only.
        let mut v = order();
        v["customer_id"] = json!(42);
        let bytes = serde_json::to_vec(&v).unwrap();
        let Ok(Event::Order(o)) = json::read_slice(None, &bytes) else {
            panic!("a numeric id is accepted")
        };
        assert_eq!(o.customer_id, "42");
        // An envelope, an untagged record and a duplicate key go the long way too.
        let envelope = json!({"schema": {}, "payload": order()});
        let (fast, slow) = both(None, &envelope);
        assert!(fast.is_none() && slow.is_some());
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(json::read_slice(None, &bytes).ok(), slow);
        let mut untagged = order();
        untagged.as_object_mut().unwrap().remove("type");
        assert!(read(None, &serde_json::to_vec(&untagged).unwrap()).is_none());
        let err = json::read_slice(None, &serde_json::to_vec(&untagged).unwrap()).unwrap_err();
        assert_eq!(err.field_errors().unwrap()[0].path, "type");
        let dup =
            br#"{"event_id":"a","event_id":"b","customer_id":"c","occurred_at":0,"kind":"visit"}"#;
        assert!(read(Some(EventKind::Activity), dup).is_none());
    }
}

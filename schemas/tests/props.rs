//! Property tests: codec round trips in both directions and validation completeness.

#![allow(clippy::unwrap_used)] // tests and benches fail loudly on purpose

use std::collections::BTreeMap;

use apache_avro::Schema;
use custflow_schemas::avro::{self, AvroCodec};
use custflow_schemas::validate::validate;
use custflow_schemas::{
    json, Activity, ActivityKind, Customer, CustomerScore, Event, EventKind, Order, OrderItem,
    OrderStatus, SegmentChange, SegmentDimension, ValidationContext,
};
use proptest::prelude::*;

const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(text(), text(), 0..4)
}

fn item() -> impl Strategy<Value = OrderItem> {
    (text(), text(), any::<i32>(), -1e6..1e6f64).prop_map(
        |(sku, category, quantity, unit_price)| OrderItem {
            sku,
            category,
            quantity,
            unit_price,
        },
    )
}

fn event() -> impl Strategy<Value = Event> {
    let customer = (
        text(),
        text(),
        0..MAX_MS,
        proptest::option::of(0..MAX_MS),
        proptest::option::of(text()),
        proptest::option::of(text()),
        any::<bool>(),
        map(),
    )
        .prop_map(
            |(
                event_id,
                customer_id,
                occurred_at,
                signup_at,
                country,
                channel,
                loyalty_member,
                attributes,
            )| {
                Event::Customer(Customer {
                    event_id,
                    customer_id,
                    occurred_at,
                    signup_at,
                    country,
                    channel,
                    loyalty_member,
                    attributes,
                })
            },
        );
    let order = (
        (
            text(),
            text(),
            text(),
            0..MAX_MS,
            0..3usize,
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        (
            text(),
            proptest::collection::vec(item(), 0..5),
            proptest::option::of(text()),
            -1e6..1e6f64,
            -1e6..1e6f64,
        ),
    )
        .prop_map(
            |(
                (event_id, order_id, customer_id, occurred_at, status, location_id, channel),
                (currency, items, discount_code, discount_amount, total),
            )| {
                Event::Order(Order {
                    event_id,
                    order_id,
                    customer_id,
                    occurred_at,
                    status: OrderStatus::from_index(status).unwrap(),
                    location_id,
                    channel,
                    currency,
                    items,
                    discount_code,
                    discount_amount,
                    total,
                })
            },
        );
    let activity = (text(), text(), 0..MAX_MS, 0..4usize, map()).prop_map(
        |(event_id, customer_id, occurred_at, kind, properties)| {
            Event::Activity(Activity {
                event_id,
                customer_id,
                occurred_at,
                kind: ActivityKind::from_index(kind).unwrap(),
                properties,
            })
        },
    );
    prop_oneof![customer, order, activity]
}

fn score() -> impl Strategy<Value = CustomerScore> {
    let f = || -1e9..1e9f64;
    (
        (text(), any::<i64>(), 0..MAX_MS, text()),
        proptest::array::uniform9(f()),
        (
            text(),
            any::<[i32; 3]>(),
            text(),
            proptest::option::of(text()),
        ),
        (any::<bool>(), any::<bool>(), f()),
    )
        .prop_map(
            |(
                (customer_id, version, as_of, model_version),
                v,
                (value_tier, rfm, rfm_segment, cluster),
                (at_risk, retention_target, profit),
            )| CustomerScore {
                customer_id,
                version,
                as_of,
                model_version,
                frequency: v[0],
                recency: v[1],
                age: v[2],
                monetary_value: v[3],
                p_alive: v[4],
                churn_probability: v[5],
                expected_orders_90d: v[6],
                expected_aov: v[7],
                clv_12m: v[8],
                value_tier,
                r_score: rfm[0],
                f_score: rfm[1],
                m_score: rfm[2],
                rfm_segment,
                cluster,
                at_risk,
                retention_target,
                expected_retention_profit: profit,
            },
        )
}

fn change() -> impl Strategy<Value = SegmentChange> {
    (
        (text(), any::<i64>(), 0..MAX_MS, text()),
        0..4usize,
        (
            proptest::option::of(text()),
            text(),
            proptest::option::of(text()),
        ),
    )
        .prop_map(
            |((customer_id, version, as_of, model_version), d, (previous, current, value_tier))| {
                SegmentChange {
                    customer_id,
                    version,
                    as_of,
                    model_version,
                    dimension: [
                        SegmentDimension::ValueTier,
                        SegmentDimension::RfmSegment,
                        SegmentDimension::Cluster,
                        SegmentDimension::AtRisk,
                    ][d],
                    previous,
                    current,
                    value_tier,
                }
            },
        )
}

proptest! {
    #[test]
    fn output_fast_paths_agree_with_the_generic_encoding(s in score(), c in change()) {
        let generic = avro::encode_record("CustomerScore", &s).unwrap();
        prop_assert_eq!(&avro::encode_score(&s), &generic);
        prop_assert_eq!(avro::decode_score(&generic).unwrap(), s);
        let generic = avro::encode_record("SegmentChange", &c).unwrap();
        prop_assert_eq!(&avro::encode_change(&c), &generic);
        prop_assert_eq!(avro::decode_change(&generic).unwrap(), c);
    }

    #[test]
    fn output_decoders_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = avro::decode_score(&bytes);
        let _ = avro::decode_change(&bytes);
    }

    #[test]
    fn avro_fast_path_round_trips(e in event()) {
        let codec = AvroCodec::builtin();
        let bytes = codec.encode(&e).unwrap();
        prop_assert_eq!(codec.decode_unchecked(e.kind(), &bytes).unwrap(), e);
    }

    #[test]
    fn fast_encoder_agrees_with_apache_avro(e in event()) {
        // What the hand-written encoder writes, the reference implementation reads back …
        let schema = avro::schema(e.kind().record_name()).unwrap();
        let mut datum = Vec::new();
        avro::encode_datum(&e, &mut datum);
        let mut r = &datum[..];
        let v = apache_avro::from_avro_datum(schema, &mut r, None).unwrap();
        prop_assert!(r.is_empty());
        prop_assert_eq!(json::read(e.kind(), &avro::avro_to_json(v)).unwrap(), e.clone());
        // … and what the reference writes, the hand-written decoder reads back.
        let json = serde_json::to_value(&e).unwrap();
        let reference = apache_avro::to_avro_datum(schema, avro::json_to_avro(&json, schema).unwrap()).unwrap();
        // apache-avro writes maps in hash order, so bytes agree only when order cannot differ.
        let small_maps = match &e {
            Event::Customer(c) => c.attributes.len() <= 1,
            Event::Activity(a) => a.properties.len() <= 1,
            Event::Order(_) => true,
        };
        if small_maps {
            prop_assert_eq!(&reference, &datum);
        }
        prop_assert_eq!(avro::decode_datum(e.kind(), &reference).unwrap(), e);
    }

    #[test]
    fn json_round_trips(e in event()) {
        let bytes = json::encode(&e);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(json::read(e.kind(), &v).unwrap(), e.clone());
        let tagged = json::encode_tagged(&e);
        prop_assert_eq!(tagged["type"].as_str(), Some(e.kind().as_str()));
    }

    #[test]
    fn avro_decoder_never_panics_on_garbage(kind in 0..3usize, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let kind = EventKind::ALL[kind];
        let _ = avro::decode_datum(kind, &bytes);
        let _ = AvroCodec::builtin().decode(kind, &bytes, &ValidationContext::now());
    }

    #[test]
    fn valid_orders_pass_and_each_corruption_is_reported(
        prices in proptest::collection::vec((1..20i32, 0.0..100.0f64), 1..5),
        discount in 0.0..5.0f64,
        corrupt in proptest::collection::btree_set(0..6usize, 0..6),
    ) {
        let now = 1_795_615_200_000;
        let ctx = ValidationContext::at(now);
        let items: Vec<OrderItem> = prices.iter().enumerate().map(|(i, (q, p))| OrderItem {
            sku: format!("sku-{i}"), category: "mains".into(), quantity: *q, unit_price: (*p * 100.0).round() / 100.0,
        }).collect();
        let gross: f64 = items.iter().map(|i| f64::from(i.quantity) * i.unit_price).sum();
        let discount = discount.min(gross);
        let mut o = Order {
            event_id: "e".into(), order_id: "o".into(), customer_id: "c".into(), occurred_at: now - 1000,
            status: OrderStatus::Placed, location_id: None, channel: None, currency: "EUR".into(), items,
            discount_code: Some("D".into()), discount_amount: discount, total: gross - discount,
        };
        prop_assert_eq!(validate(&Event::Order(o.clone()), &ctx), vec![]);
        let mut expected = Vec::new();
        for c in &corrupt {
            match c {
                0 => { o.customer_id = " ".into(); expected.push("customer_id"); }
                1 => { o.currency = "EU".into(); expected.push("currency"); }
                2 => { o.items[0].quantity = 0; expected.push("items[0].quantity"); }
                3 => { o.occurred_at = now + 3 * 86_400_000; expected.push("occurred_at"); }
                4 => { o.event_id = String::new(); expected.push("event_id"); }
                _ => { o.discount_amount = f64::NAN; expected.push("discount_amount"); }
            }
        }
        let mut got: Vec<String> = validate(&Event::Order(o), &ctx).into_iter().map(|e| e.path).collect();
        got.sort();
        expected.sort_unstable();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn every_shipped_schema_parses_and_names_match() {
    for (name, text) in avro::SCHEMA_TEXTS {
        let s = Schema::parse_str(text).unwrap();
        let Schema::Record(r) = s else {
            panic!("{name} is not a record")
        };
        assert_eq!(r.name.name, *name);
        assert_eq!(r.name.namespace.as_deref(), Some("io.custflow"));
    }
}

#[test]
fn foreign_writer_schema_resolves_through_the_generic_path() {
    use std::sync::Arc;
    // A producer wrote orders with an older schema that lacks the optional fields.
    let old = r#"{"type":"record","name":"Order","namespace":"io.custflow","fields":[
        {"name":"event_id","type":"string"},{"name":"order_id","type":"string"},
        {"name":"customer_id","type":"string"},
        {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"status","type":{"type":"enum","name":"OrderStatus","symbols":["placed","refunded","cancelled"]}},
        {"name":"currency","type":"string"},{"name":"total","type":"double"}]}"#;
    let old = Schema::parse_str(old).unwrap();
    struct One(Arc<Schema>);
    impl avro::SchemaSource for One {
        fn schema_by_id(&self, id: u32) -> Option<Arc<Schema>> {
            (id == 77).then(|| self.0.clone())
        }
    }
    let codec = AvroCodec::new(Arc::new(One(Arc::new(old.clone()))), Default::default());
    let v = apache_avro::types::Value::Record(vec![
        ("event_id".into(), "e1".into()),
        ("order_id".into(), "o1".into()),
        ("customer_id".into(), "c1".into()),
        (
            "occurred_at".into(),
            apache_avro::types::Value::TimestampMillis(1_700_000_000_000),
        ),
        (
            "status".into(),
            apache_avro::types::Value::Enum(1, "refunded".into()),
        ),
        ("currency".into(), "USD".into()),
        ("total".into(), apache_avro::types::Value::Double(5.0)),
    ]);
    let bytes = avro::frame(77, &apache_avro::to_avro_datum(&old, v).unwrap());
    let e = codec
        .decode(EventKind::Order, &bytes, &ValidationContext::now())
        .unwrap();
    let Event::Order(o) = e else { panic!() };
    assert_eq!(
        (o.status, o.total, o.items.len(), o.discount_amount),
        (OrderStatus::Refunded, 5.0, 0, 0.0)
    );
    assert!(matches!(
        codec.decode(
            EventKind::Order,
            &avro::frame(5, b""),
            &ValidationContext::now()
        ),
        Err(custflow_schemas::Error::UnknownSchemaId(5))
    ));
}

#[test]
fn output_records_round_trip_through_avro() {
    let s = custflow_schemas::CustomerScore {
        customer_id: "c1".into(),
        version: 42,
        as_of: 1_795_615_200_000,
        model_version: "m-3".into(),
        frequency: 2.0,
        recency: 30.0,
        age: 40.0,
        monetary_value: 12.5,
        p_alive: 0.8,
        churn_probability: 0.2,
        expected_orders_90d: 1.1,
        expected_aov: 13.0,
        clv_12m: 55.0,
        value_tier: "top20".into(),
        r_score: 5,
        f_score: 4,
        m_score: 3,
        rfm_segment: "champions".into(),
        cluster: None,
        at_risk: false,
        retention_target: true,
        expected_retention_profit: 3.5,
    };
    let bytes = avro::encode_record("CustomerScore", &s).unwrap();
    let back: custflow_schemas::CustomerScore =
        avro::decode_record("CustomerScore", &bytes).unwrap();
    assert_eq!(back, s);

    // A score written before the retention fields existed decodes with their defaults.
    let v1 = apache_avro::Schema::parse_str(include_str!("../avro/CustomerScore.v1.avsc")).unwrap();
    let mut json = serde_json::to_value(&s).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("retention_target");
    obj.remove("expected_retention_profit");
    let old = apache_avro::to_avro_datum(&v1, avro::json_to_avro(&json, &v1).unwrap()).unwrap();
    let back: custflow_schemas::CustomerScore = avro::decode_record("CustomerScore", &old).unwrap();
    assert_eq!(
        back,
        custflow_schemas::CustomerScore {
            retention_target: false,
            expected_retention_profit: 0.0,
            ..s
        }
    );
    // The field-by-field decoder hands it to the generic path with the same result.
    assert_eq!(avro::decode_score(&old).unwrap(), back);
    // Garbage is still an error, not a default-filled record.
    assert!(
        avro::decode_record::<custflow_schemas::CustomerScore>("CustomerScore", &old[..5]).is_err()
    );
    assert!(avro::decode_score(&old[..5]).is_err());
}

//! Encode and decode a 3-item `Order` in Avro (Confluent wire format) and JSON.
//!
//! Run: `cargo bench -p custflow-schemas --bench codec`. Target: ≥ 1,000,000 Avro
//! decodes per second per core (≤ 1 µs per decode).

#![allow(clippy::unwrap_used)] // tests and benches fail loudly on purpose

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use custflow_schemas::avro::AvroCodec;
use custflow_schemas::{json, Event, EventKind, Order, OrderItem, OrderStatus, ValidationContext};

fn order() -> Event {
    let item = |sku: &str, category: &str, quantity, unit_price| OrderItem {
        sku: sku.into(),
        category: category.into(),
        quantity,
        unit_price,
    };
    Event::Order(Order {
        event_id: "01JDQ7ZB5M1N8Q2W3E4R5T6Y7U".into(),
        order_id: "ord-000123456".into(),
        customer_id: "cust-0004242".into(),
        occurred_at: 1_795_615_200_000,
        status: OrderStatus::Placed,
        location_id: Some("loc-07".into()),
        channel: Some("app".into()),
        currency: "EUR".into(),
        items: vec![
            item("burger-classic", "mains", 2, 11.5),
            item("fries-large", "sides", 1, 4.25),
            item("cola-330", "drinks", 2, 2.8),
        ],
        discount_code: Some("WELCOME10".into()),
        discount_amount: 3.0,
        total: 29.85,
    })
}

fn bench(c: &mut Criterion) {
    let codec = AvroCodec::builtin();
    let event = order();
    let avro = codec.encode(&event).unwrap();
    let js = json::encode(&event);
    let ctx = ValidationContext::now();

    let mut g = c.benchmark_group("order_3_items");
    g.throughput(Throughput::Elements(1));
    g.bench_function("avro_encode", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            buf.clear();
            codec.encode_into(black_box(&event), &mut buf).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("avro_decode", |b| {
        b.iter(|| {
            codec
                .decode_unchecked(EventKind::Order, black_box(&avro))
                .unwrap()
        })
    });
    g.bench_function("avro_decode_validate", |b| {
        b.iter(|| {
            codec
                .decode(EventKind::Order, black_box(&avro), &ctx)
                .unwrap()
        })
    });
    g.bench_function("json_encode", |b| {
        b.iter(|| json::encode(black_box(&event)))
    });
    g.bench_function("json_decode_validate", |b| {
        b.iter(|| json::decode(EventKind::Order, black_box(&js), &ctx).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! History in any order: a customer's features are the same whatever order and however
//! late their events arrive — checked on the CDNOW sample loaded in five interleaved
//! chunks (February's orders after September's) against the published BTYD summary, and
//! on random histories of orders, refunds and cancellations applied in random orders.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::path::PathBuf;

use custflow_feature_store::features::{compute, Features};
use custflow_feature_store::state::{CustomerState, SourcePos};
use custflow_schemas::time::DAY_MS;
use custflow_schemas::{Event, Order, OrderItem, OrderStatus};
use proptest::prelude::*;

fn order(customer: &str, id: &str, at: i64, total: f64, status: OrderStatus) -> Event {
    Event::Order(Order {
        event_id: format!("{id}-{status:?}-{at}"),
        order_id: id.into(),
        customer_id: customer.into(),
        occurred_at: at,
        status,
        location_id: Some(format!("loc-{}", at % 3)),
        channel: None,
        currency: "USD".into(),
        items: vec![OrderItem {
            sku: "s".into(),
            category: format!("cat-{}", at % 5),
            quantity: 1,
            unit_price: total,
        }],
        discount_code: None,
        discount_amount: 0.0,
        total,
    })
}

/// Applies `events` in the order given, each at the next offset, as a processor does.
fn apply_all<'a>(events: impl IntoIterator<Item = &'a Event>) -> HashMap<String, CustomerState> {
    let mut states: HashMap<String, CustomerState> = HashMap::new();
    for (n, e) in events.into_iter().enumerate() {
        let pos = SourcePos {
            topic: 1,
            partition: 0,
            offset: n as i64,
        };
        states
            .entry(e.customer_id().to_owned())
            .or_default()
            .apply(e, pos)
            .unwrap();
    }
    states
}

#[test]
fn cdnow_in_five_interleaved_chunks_gives_the_published_summary() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/cdnow");
    let text = std::fs::read_to_string(root.join("CDNOW_sample.txt")).unwrap();
    let events: Vec<Event> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (id, day, _, value) = custflow_models::input::parse_cdnow_line(l).unwrap()?;
            Some(order(
                id,
                &format!("line-{i}"),
                day * DAY_MS + 12 * 3_600_000,
                value,
                OrderStatus::Placed,
            ))
        })
        .collect();
    // Row i in chunk i mod 5, the chunks one after the other.
    let chunked: Vec<&Event> = (0..5)
        .flat_map(|k| events.iter().skip(k).step_by(5))
        .collect();
    let states = apply_all(chunked);
    let as_of = custflow_models::input::parse_day("1997-09-30").unwrap();
    let published =
        std::fs::read_to_string(root.join("cdnow_customers_summary_with_transactions.csv"))
            .unwrap();
    let same = |ours: f64, printed: f64| (ours - printed).abs() <= 0.005 + 1e-9;
    let mut checked = 0;
    for line in published.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let n = |i: usize| f[i].trim().parse::<f64>().unwrap();
        let s = &states[f[0]];
        assert_eq!(s.folded.before, None, "nothing folded for {}", f[0]);
        let ft = compute(s, as_of * DAY_MS + DAY_MS - 1, 45.0);
        assert_eq!(f64::from(ft.frequency), n(1), "x of {}", f[0]);
        assert!(same(ft.recency / 7.0, n(2)), "t_x of {}", f[0]);
        assert!(same(ft.age / 7.0, n(3)), "T of {}", f[0]);
        assert!(same(ft.monetary_value, n(4)), "zbar of {}: {ft:?}", f[0]);
        checked += 1;
    }
    assert_eq!(checked, 2357);
    // And the same as loading the file in time order, for the whole 18 months.
    let in_time = apply_all(&events);
    let end = custflow_models::input::parse_day("1998-07-01").unwrap() * DAY_MS;
    for (id, s) in &in_time {
        assert_close(&compute(s, end, 45.0), &compute(&states[id], end, 45.0), id);
    }
}

/// Two feature sets equal up to the rounding of adding one day's values in another
/// order (1e-9 relative).
fn assert_close(a: &Features, b: &Features, what: &str) {
    let (ja, jb) = (
        serde_json::to_value(a).unwrap(),
        serde_json::to_value(b).unwrap(),
    );
    let (Some(ma), Some(mb)) = (ja.as_object(), jb.as_object()) else {
        panic!("features are objects");
    };
    for (k, va) in ma {
        let vb = &mb[k];
        match (va.as_f64(), vb.as_f64()) {
            (Some(x), Some(y)) => assert!(
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                "{what}: {k} {x} vs {y}"
            ),
            _ => assert_eq!(va, vb, "{what}: {k}"),
        }
    }
}

/// One customer's history: orders over three years with values in quarters (sums are
/// exact in any order), some refunded in part, some cancelled, refunds and cancellations
/// after their order.
fn history() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        (0i64..1100, 0i64..24, 1u32..400, 0u8..6, 1u32..200, 1i64..60),
        1..40,
    )
    .prop_map(|orders| {
        let mut events = Vec::new();
        for (k, (day, hour, quarters, fate, refund, after)) in orders.into_iter().enumerate() {
            let id = format!("o{k}");
            let at = (10_000 + day) * DAY_MS + hour * 3_600_000;
            let total = f64::from(quarters) / 4.0;
            events.push(order("c", &id, at, total, OrderStatus::Placed));
            let later = at + after * DAY_MS;
            match fate {
                0 => events.push(order(
                    "c",
                    &id,
                    later,
                    f64::from(refund) / 4.0,
                    OrderStatus::Refunded,
                )),
                1 => events.push(order("c", &id, later, total, OrderStatus::Cancelled)),
                2 => {
                    events.push(order(
                        "c",
                        &id,
                        later,
                        f64::from(refund) / 4.0,
                        OrderStatus::Refunded,
                    ));
                    events.push(order(
                        "c",
                        &id,
                        later + DAY_MS,
                        total,
                        OrderStatus::Cancelled,
                    ));
                }
                _ => {}
            }
        }
        events
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_arrival_order_gives_the_same_features(
        events in history(),
        seed in any::<u64>(),
        as_of_day in 10_000i64..11_300,
    ) {
        // Time order against a random permutation (refunds before their orders too).
        let mut by_time: Vec<&Event> = events.iter().collect();
        by_time.sort_by_key(|e| e.occurred_at());
        let mut shuffled: Vec<&Event> = events.iter().collect();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let a = &apply_all(by_time)["c"];
        let b = &apply_all(shuffled)["c"];
        prop_assert!(b.pending.is_empty());
        for at in [as_of_day * DAY_MS, 11_400 * DAY_MS] {
            prop_assert_eq!(compute(a, at, 45.0), compute(b, at, 45.0));
        }
    }
}

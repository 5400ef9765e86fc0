//! The synthetic event generator: a generative customer model, not random noise.
//!
//! Customers arrive uniformly over the generated span. Each one buys first on arrival,
//! then at rate λ ~ Gamma(r, α) (per day) while alive, and drops out after each repeat
//! purchase with probability p ~ Beta(a, b) — the BG/NBD process. Order values follow
//! Gamma-Gamma: ν ~ Gamma(q, γ) per customer, value ~ Gamma(p, ν) per order. Around that
//! sit restaurant details: locations, a menu of categories and SKUs, dayparts with a
//! time-of-day profile, discount codes, loyalty members who buy more often, refunds and
//! cancellations, activity events and a profile event before the first order.
//!
//! Events come out in event-time order from an agenda of per-customer next events, so
//! memory grows with the number of customers, not of events. Deterministic for a seed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use custflow_models::bgnbd::BgNbd;
use custflow_schemas::time::DAY_MS;
use custflow_schemas::{Activity, ActivityKind, Customer, Event, Order, OrderItem, OrderStatus};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};

/// Parameters of the generator; the defaults are the published CDNOW fits (α in days).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SynthParams {
    pub seed: u64,
    pub customers: u64,
    /// Start of the generated span (epoch ms); customers arrive uniformly until `end_ms`.
    pub start_ms: i64,
    pub end_ms: i64,
    /// BG/NBD: λ ~ Gamma(r, α) per day, p ~ Beta(a, b).
    pub purchase: BgNbd,
    /// Gamma-Gamma: ν ~ Gamma(q, γ), value ~ Gamma(p, ν).
    pub spend_p: f64,
    pub spend_q: f64,
    pub spend_gamma: f64,
    /// Share of customers in the loyalty programme, and their purchase-rate multiplier.
    pub loyalty_share: f64,
    pub loyalty_rate_boost: f64,
    pub discount_uptake: f64,
    pub refund_share: f64,
    pub cancel_share: f64,
    /// Activity events per order, on average.
    pub activity_per_order: f64,
    pub locations: u32,
}

impl Default for SynthParams {
    fn default() -> Self {
        let end = custflow_schemas::time::now_ms();
        Self {
            seed: 42,
            customers: 10_000,
            start_ms: end - 365 * DAY_MS,
            end_ms: end,
            purchase: BgNbd {
                r: 0.2426,
                alpha: 4.4136 * 7.0,
                a: 0.7929,
                b: 2.4259,
            },
            spend_p: 6.25,
            spend_q: 3.74,
            spend_gamma: 15.44,
            loyalty_share: 0.3,
            loyalty_rate_boost: 1.5,
            discount_uptake: 0.15,
            refund_share: 0.03,
            cancel_share: 0.01,
            activity_per_order: 1.5,
            locations: 12,
        }
    }
}

/// The menu: (category, sku, base price).
const MENU: &[(&str, &str, f64)] = &[
    ("mains", "burger-classic", 11.5),
    ("mains", "burger-veggie", 10.9),
    ("mains", "chicken-bowl", 12.4),
    ("mains", "pasta-arrabbiata", 9.8),
    ("sides", "fries", 3.9),
    ("sides", "salad", 4.6),
    ("drinks", "cola", 2.8),
    ("drinks", "lemonade", 3.2),
    ("drinks", "coffee", 2.6),
    ("desserts", "brownie", 4.2),
    ("desserts", "ice-cream", 3.8),
    ("breakfast", "pancakes", 7.5),
];
const CHANNELS: &[&str] = &["app", "web", "in_store", "delivery"];
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "GB", "US", "ES"];
const CODES: &[(&str, f64)] = &[("WELCOME10", 0.10), ("LUNCH5", 0.05), ("FRIDAY15", 0.15)];
/// Relative order volume by hour of day (UTC): breakfast, lunch and dinner peaks.
const HOURS: [f64; 24] = [
    0.2, 0.1, 0.05, 0.05, 0.05, 0.2, 0.6, 1.2, 1.6, 1.2, 1.0, 2.2, 3.5, 3.0, 1.4, 1.0, 1.2, 2.4,
    3.6, 3.4, 2.4, 1.4, 0.8, 0.4,
];
/// Relative order volume by weekday, Monday first.
const WEEKDAYS: [f64; 7] = [0.8, 0.85, 0.9, 1.0, 1.3, 1.4, 1.1];

/// A customer's hidden parameters: the ground truth for model tests.
#[derive(Debug, Clone, Copy)]
struct Person {
    lambda: f64,
    p: f64,
    nu: f64,
    loyalty: bool,
    home: u32,
    alive: bool,
    orders: u32,
}

/// What happens next for a customer.
#[derive(Debug, Clone, PartialEq)]
enum Next {
    Profile,
    FirstOrder,
    Order,
    Activity,
    /// Refunds and cancellations happen where the order was placed: the customer's
    /// order number and the location's index (numbers, not the ids: millions wait).
    Refund {
        order: u32,
        location: u32,
        amount: f64,
    },
    Cancel {
        order: u32,
        location: u32,
    },
}

#[derive(Debug)]
struct Pending {
    at: i64,
    seq: u64,
    customer: u64,
    next: Next,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Event-time width of an [`Agenda`]'s buckets: an hour.
const BUCKET_MS: i64 = 3_600_000;

/// Pending events, taken in (time, sequence) order as from one binary heap, but kept in
/// buckets of an hour of event time, only the current one a heap: a heap of all pending
/// events (two per customer before their arrival, 160 MB at a million customers) missed
/// the cache at every level of every pop, three quarters of the generator's time.
struct Agenda {
    /// Bucket index of `later[0]`.
    first: i64,
    /// The bucket being taken from: `now` holds every pending event up to its end,
    /// `later` the buckets after it (those before it are empty).
    current: i64,
    now: BinaryHeap<Reverse<Pending>>,
    later: Vec<Vec<Reverse<Pending>>>,
}

impl Agenda {
    /// An agenda for events from `start_ms` on.
    fn new(start_ms: i64) -> Self {
        let first = start_ms.div_euclid(BUCKET_MS);
        Self {
            first,
            current: first - 1,
            now: BinaryHeap::new(),
            later: Vec::new(),
        }
    }

    fn push(&mut self, p: Pending) {
        let bucket = p.at.div_euclid(BUCKET_MS);
        if bucket <= self.current {
            self.now.push(Reverse(p));
            return;
        }
        // After `current`, so at or after `first`.
        let i = usize::try_from(bucket - self.first).unwrap_or(0);
        if i >= self.later.len() {
            self.later.resize_with(i + 1, Vec::new);
        }
        self.later[i].push(Reverse(p));
    }

    fn pop(&mut self) -> Option<Pending> {
        while self.now.is_empty() {
            self.current += 1;
            let i = usize::try_from(self.current - self.first).unwrap_or(usize::MAX);
            let events = std::mem::take(self.later.get_mut(i)?);
            self.now = BinaryHeap::from(events);
        }
        self.now.pop().map(|Reverse(p)| p)
    }
}

/// Draws events in event-time order.
pub struct Generator {
    params: SynthParams,
    rng: StdRng,
    people: Vec<Person>,
    agenda: Agenda,
    seq: u64,
    lambda: Gamma<f64>,
    drop: Beta<f64>,
    nu: Gamma<f64>,
}

/// Samples one customer's repeat purchases in (0, t] days under BG/NBD (for tests).
pub fn simulate_repeat_purchases(m: &BgNbd, t: f64, rng: &mut impl Rng) -> u32 {
    let lambda: f64 = Gamma::new(m.r, 1.0 / m.alpha).map_or(0.0, |g| g.sample(rng));
    let p: f64 = Beta::new(m.a, m.b).map_or(1.0, |b| b.sample(rng));
    let Ok(gap) = Exp::new(lambda.max(1e-12)) else {
        return 0;
    };
    let (mut now, mut x) = (0.0, 0);
    loop {
        now += gap.sample(rng);
        if now > t {
            return x;
        }
        x += 1;
        if rng.gen::<f64>() < p {
            return x;
        }
    }
}

/// Parameters a generator cannot draw from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// A distribution's parameters outside its domain (which one, and why).
    #[error("{0}: {1}")]
    Distribution(&'static str, String),
    #[error("the generated span is empty (end ≤ start)")]
    EmptySpan,
}

impl Generator {
    /// A generator for `params`; fails on parameters outside their distributions' domains.
    pub fn new(params: SynthParams) -> Result<Self, ParamError> {
        let m = params.purchase;
        let bad =
            |which| move |e: rand_distr::GammaError| ParamError::Distribution(which, e.to_string());
        let lambda = Gamma::new(m.r, 1.0 / m.alpha).map_err(bad("Gamma(r, α)"))?;
        let drop = Beta::new(m.a, m.b)
            .map_err(|e| ParamError::Distribution("Beta(a, b)", e.to_string()))?;
        let nu =
            Gamma::new(params.spend_q, 1.0 / params.spend_gamma).map_err(bad("Gamma(q, γ)"))?;
        if params.end_ms <= params.start_ms {
            return Err(ParamError::EmptySpan);
        }
        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut agenda = Agenda::new(params.start_ms);
        let span = (params.end_ms - params.start_ms) as f64;
        let mut seq = 0;
        for c in 0..params.customers {
            let arrive = params.start_ms + (rng.gen::<f64>() * span) as i64;
            let profile_at = (arrive - rng.gen_range(60_000..3_600_000)).max(params.start_ms);
            agenda.push(Pending {
                at: profile_at,
                seq,
                customer: c,
                next: Next::Profile,
            });
            seq += 1;
            agenda.push(Pending {
                at: arrive,
                seq,
                customer: c,
                next: Next::FirstOrder,
            });
            seq += 1;
        }
        Ok(Self {
            params,
            rng,
            people: Vec::new(),
            agenda,
            seq,
            lambda,
            drop,
            nu,
        })
    }

    /// Customer id of the n-th customer.
    pub fn customer_id(&self, n: u64) -> String {
        format!("c{:07}-{}", n, self.params.seed % 1000)
    }

    fn person(&mut self, c: u64) -> Person {
        while self.people.len() as u64 <= c {
            let loyalty = self.rng.gen::<f64>() < self.params.loyalty_share;
            let boost = if loyalty {
                self.params.loyalty_rate_boost
            } else {
                1.0
            };
            let home = self.rng.gen_range(0..self.params.locations.max(1));
            self.people.push(Person {
                lambda: self.lambda.sample(&mut self.rng).max(1e-9) * boost,
                p: self.drop.sample(&mut self.rng),
                nu: self.nu.sample(&mut self.rng).max(1e-9),
                loyalty,
                home,
                alive: true,
                orders: 0,
            });
        }
        self.people[c as usize]
    }

    fn push(&mut self, at: i64, customer: u64, next: Next) {
        if at <= self.params.end_ms {
            self.seq += 1;
            self.agenda.push(Pending {
                at,
                seq: self.seq,
                customer,
                next,
            });
        }
    }

    fn ulid(&mut self, at: i64) -> String {
        ulid::Ulid::from_parts(at.max(0) as u64, self.rng.gen()).to_string()
    }

    /// Moves an instant to an hour drawn from the daily profile on its day (or the next,
    /// thinning quiet weekdays), so orders follow the restaurant's rhythm.
    fn shape_time(&mut self, at: i64) -> i64 {
        let day = at.div_euclid(DAY_MS);
        let total: f64 = HOURS.iter().sum();
        let mut u = self.rng.gen::<f64>() * total;
        let mut hour = 23;
        for (h, w) in HOURS.iter().enumerate() {
            u -= w;
            if u <= 0.0 {
                hour = h;
                break;
            }
        }
        // 1970-01-01 was a Thursday.
        let weekday = (day + 3).rem_euclid(7) as usize;
        let shift = if self.rng.gen::<f64>() * 1.4 > WEEKDAYS[weekday] {
            DAY_MS
        } else {
            0
        };
        day * DAY_MS + shift + hour as i64 * 3_600_000 + self.rng.gen_range(0..3_600_000)
    }

    /// An order of customer `c` at `at`, and the index of its location.
    fn order(&mut self, c: u64, at: i64) -> (Order, u32) {
        let person = self.person(c);
        let value: f64 = Gamma::new(self.params.spend_p, 1.0 / person.nu)
            .map_or(10.0, |g| g.sample(&mut self.rng));
        let n_items = self.rng.gen_range(1..=4usize);
        let picks: Vec<usize> = (0..n_items)
            .map(|_| self.rng.gen_range(0..MENU.len()))
            .collect();
        let weights: Vec<f64> = picks.iter().map(|i| MENU[*i].2).collect();
        let wsum: f64 = weights.iter().sum();
        let mut items = Vec::with_capacity(n_items);
        for (i, w) in picks.iter().zip(&weights) {
            let quantity = if self.rng.gen::<f64>() < 0.2 { 2 } else { 1 };
            let unit_price = ((value.max(1.0) * w / wsum / f64::from(quantity)) * 100.0)
                .round()
                .max(1.0)
                / 100.0;
            items.push(OrderItem {
                sku: MENU[*i].1.into(),
                category: MENU[*i].0.into(),
                quantity,
                unit_price,
            });
        }
        let gross: f64 = items
            .iter()
            .map(|i| f64::from(i.quantity) * i.unit_price)
            .sum();
        let (discount_code, discount_amount) =
            if self.rng.gen::<f64>() < self.params.discount_uptake {
                let (code, pct) = CODES[self.rng.gen_range(0..CODES.len())];
                (Some(code.to_owned()), (gross * pct * 100.0).round() / 100.0)
            } else {
                (None, 0.0)
            };
        let location = if self.rng.gen::<f64>() < 0.7 {
            person.home
        } else {
            self.rng.gen_range(0..self.params.locations.max(1))
        };
        let order = Order {
            event_id: self.ulid(at),
            order_id: order_id(&self.customer_id(c), person.orders),
            customer_id: self.customer_id(c),
            occurred_at: at,
            status: OrderStatus::Placed,
            location_id: Some(location_id(location)),
            channel: Some(CHANNELS[self.rng.gen_range(0..CHANNELS.len())].to_owned()),
            currency: "EUR".into(),
            items,
            discount_code,
            discount_amount,
            total: ((gross - discount_amount) * 100.0).round() / 100.0,
        };
        (order, location)
    }

    fn after_order(&mut self, c: u64, at: i64, (order, location): (&Order, u32), first: bool) {
        let person = self.person(c);
        self.people[c as usize].orders += 1;
        let u: f64 = self.rng.gen();
        if u < self.params.cancel_share {
            let later = at + self.rng.gen_range(60_000..3_600_000);
            self.push(
                later,
                c,
                Next::Cancel {
                    order: person.orders,
                    location,
                },
            );
        } else if u < self.params.cancel_share + self.params.refund_share {
            let later = at + self.rng.gen_range(DAY_MS / 2..5 * DAY_MS);
            let amount = if self.rng.gen::<bool>() {
                order.total
            } else {
                (order.total * 50.0).round() / 100.0
            };
            self.push(
                later,
                c,
                Next::Refund {
                    order: person.orders,
                    location,
                    amount,
                },
            );
        }
        let activities = Exp::new(1.0 / self.params.activity_per_order.max(1e-9))
            .map_or(0.0, |e| e.sample(&mut self.rng));
        for _ in 0..activities.round() as u32 {
            let later = at + self.rng.gen_range(DAY_MS / 24..14 * DAY_MS);
            self.push(later, c, Next::Activity);
        }
        // BG/NBD: a customer may drop out after each repeat purchase.
        if !first && self.rng.gen::<f64>() < person.p {
            self.people[c as usize].alive = false;
            return;
        }
        let gap_days = Exp::new(person.lambda).map_or(f64::INFINITY, |e| e.sample(&mut self.rng));
        if gap_days.is_finite() && gap_days < 1e5 {
            let next = at + (gap_days * DAY_MS as f64) as i64;
            let next = self.shape_time(next).max(at + 1);
            self.push(next, c, Next::Order);
        }
    }

    /// Ground truth: whether the n-th customer is still alive at the end of the span.
    pub fn is_alive(&self, n: u64) -> Option<bool> {
        self.people.get(n as usize).map(|p| p.alive)
    }

    /// Number of customers who have appeared so far.
    pub fn customers_seen(&self) -> u64 {
        self.people.len() as u64
    }
}

/// Placed orders as `(customer, day, total)` transactions, and whether each customer
/// had really dropped out by the end of the span: the generator's ground truth, for
/// judging churn models. Refunds and cancellations are switched off so a transaction is
/// exactly a purchase.
pub fn purchase_log(mut params: SynthParams) -> Result<PurchaseLog, ParamError> {
    params.refund_share = 0.0;
    params.cancel_share = 0.0;
    let mut g = Generator::new(params)?;
    let mut tx = Vec::new();
    for e in g.by_ref() {
        if let Event::Order(o) = e {
            if o.status == OrderStatus::Placed {
                tx.push((o.customer_id, o.occurred_at.div_euclid(DAY_MS), o.total));
            }
        }
    }
    let dropped_out = (0..g.customers_seen())
        .filter_map(|n| Some((g.customer_id(n), !g.is_alive(n)?)))
        .collect();
    Ok(PurchaseLog { tx, dropped_out })
}

/// See [`purchase_log`].
pub struct PurchaseLog {
    pub tx: Vec<(String, i64, f64)>,
    pub dropped_out: std::collections::HashMap<String, bool>,
}

impl Iterator for Generator {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let Pending {
                at,
                customer: c,
                next,
                ..
            } = self.agenda.pop()?;
            let person = self.person(c);
            let event = match next {
                Next::Profile => {
                    let mut attributes = BTreeMap::new();
                    attributes.insert("segment_source".into(), "synth".into());
                    Event::Customer(Customer {
                        event_id: self.ulid(at),
                        customer_id: self.customer_id(c),
                        occurred_at: at,
                        signup_at: Some(at),
                        country: Some(COUNTRIES[self.rng.gen_range(0..COUNTRIES.len())].to_owned()),
                        channel: Some(CHANNELS[self.rng.gen_range(0..CHANNELS.len())].to_owned()),
                        loyalty_member: person.loyalty,
                        attributes,
                    })
                }
                Next::FirstOrder | Next::Order => {
                    if !person.alive {
                        continue;
                    }
                    let first = next == Next::FirstOrder;
                    let (o, location) = self.order(c, at);
                    self.after_order(c, at, (&o, location), first);
                    Event::Order(o)
                }
                Next::Activity => Event::Activity(Activity {
                    event_id: self.ulid(at),
                    customer_id: self.customer_id(c),
                    occurred_at: at,
                    kind: ActivityKind::from_index(self.rng.gen_range(0..4))
                        .unwrap_or(ActivityKind::Visit),
                    properties: BTreeMap::new(),
                }),
                Next::Refund {
                    order,
                    location,
                    amount,
                } => Event::Order(self.adjustment(
                    c,
                    at,
                    (order, location),
                    OrderStatus::Refunded,
                    amount,
                )),
                Next::Cancel { order, location } => Event::Order(self.adjustment(
                    c,
                    at,
                    (order, location),
                    OrderStatus::Cancelled,
                    0.0,
                )),
            };
            return Some(event);
        }
    }
}

/// The id of a customer's `n`-th order (from 0).
fn order_id(customer_id: &str, n: u32) -> String {
    format!("o-{customer_id}-{n}")
}

/// The id of the location of index `i` (from 0).
fn location_id(i: u32) -> String {
    format!("loc-{:02}", i + 1)
}

impl Generator {
    fn adjustment(
        &mut self,
        c: u64,
        at: i64,
        (order, location): (u32, u32),
        status: OrderStatus,
        amount: f64,
    ) -> Order {
        let customer_id = self.customer_id(c);
        Order {
            event_id: self.ulid(at),
            order_id: order_id(&customer_id, order),
            customer_id,
            occurred_at: at,
            status,
            location_id: Some(location_id(location)),
            channel: None,
            currency: "EUR".into(),
            items: Vec::new(),
            discount_code: None,
            discount_amount: 0.0,
            total: amount,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_outside_their_domains_are_refused_by_name() {
        let mut p = SynthParams::default();
        p.end_ms = p.start_ms;
        assert_eq!(Generator::new(p).err(), Some(ParamError::EmptySpan));
        let mut p = SynthParams::default();
        p.purchase.r = -1.0;
        match Generator::new(p).err() {
            Some(ParamError::Distribution(which, _)) => assert_eq!(which, "Gamma(r, α)"),
            other => panic!("{other:?}"),
        }
    }

    use super::*;
    use custflow_schemas::validate::validate;
    use custflow_schemas::ValidationContext;

    #[test]
    fn repeat_purchases_follow_the_bgnbd_closed_form() {
        let m = SynthParams::default().purchase;
        let mut rng = StdRng::seed_from_u64(1);
        let n = 400_000;
        for t in [30.0, 180.0, 365.0] {
            let mean = (0..n)
                .map(|_| f64::from(simulate_repeat_purchases(&m, t, &mut rng)))
                .sum::<f64>()
                / n as f64;
            let want = m.expected_unconditional(t);
            assert!(
                (mean / want - 1.0).abs() < 0.03,
                "t={t}: simulated {mean:.4}, closed form {want:.4}"
            );
        }
    }

    #[test]
    fn the_agenda_gives_pending_events_in_one_heaps_order() {
        // Pushes spread over days, into the bucket being taken from and the hour after
        // it, interleaved with pops, against one binary heap of them all.
        let mut rng = StdRng::seed_from_u64(7);
        let (mut agenda, mut heap) = (Agenda::new(0), BinaryHeap::new());
        let pending = |at: i64, seq: u64| Pending {
            at,
            seq,
            customer: seq % 13,
            next: Next::Activity,
        };
        let (mut seq, mut last) = (0u64, 0i64);
        for round in 0..20_000 {
            for _ in 0..rng.gen_range(0..3) {
                seq += 1;
                let at = last
                    + match rng.gen_range(0..3) {
                        0 => rng.gen_range(0..60_000),
                        1 => rng.gen_range(0..2 * BUCKET_MS),
                        _ => rng.gen_range(0..30 * DAY_MS),
                    };
                agenda.push(pending(at, seq));
                heap.push(Reverse(pending(at, seq)));
            }
            if round % 3 != 0 {
                let (a, h) = (agenda.pop(), heap.pop().map(|Reverse(p)| p));
                assert_eq!(a.as_ref().map(|p| (p.at, p.seq)), h.map(|p| (p.at, p.seq)));
                last = a.map_or(last, |p| p.at);
            }
        }
        while let Some(Reverse(h)) = heap.pop() {
            assert_eq!(agenda.pop().map(|p| (p.at, p.seq)), Some((h.at, h.seq)));
        }
        assert!(agenda.pop().is_none());
    }

    #[test]
    fn events_are_valid_ordered_and_deterministic() {
        let params = SynthParams {
            customers: 300,
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_000_000 + 120 * DAY_MS,
            ..Default::default()
        };
        let a: Vec<Event> = Generator::new(params.clone()).unwrap().collect();
        let b: Vec<Event> = Generator::new(params.clone()).unwrap().collect();
        assert_eq!(a, b, "same seed, same events");
        let ctx = ValidationContext::at(params.end_ms);
        let mut kinds = [0usize; 3];
        let mut statuses = [0usize; 3];
        for e in &a {
            assert_eq!(validate(e, &ctx), vec![], "{e:?}");
            kinds[e.kind() as usize] += 1;
            if let Event::Order(o) = e {
                statuses[o.status as usize] += 1;
            }
        }
        assert!(
            a.windows(2)
                .all(|w| w[0].occurred_at() <= w[1].occurred_at()),
            "event-time order"
        );
        assert_eq!(kinds[0], 300, "one profile per customer");
        assert!(kinds[1] > 300 && kinds[2] > 0, "{kinds:?}");
        assert!(
            statuses[1] + statuses[2] > 0,
            "some refunds or cancellations: {statuses:?}"
        );
    }
}

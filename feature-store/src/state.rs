//! The per-customer state stored under `cf:{id}:f`: what the processors apply events to
//! and what lookups compute features from, encoded compactly (postcard).
//!
//! The customer's days with orders are kept day by day, with the orders placed on them,
//! for the last `history_days` (default [`DEFAULT_HISTORY_DAYS`], ten years) before the
//! customer's newest order and at most [`MAX_DETAIL_DAYS`] of them, so events in any order
//! and however late, refunds and cancellations land on the right day: every feature is
//! the same whatever the arrival order. A refund or cancellation that arrives before its
//! order waits in `pending` and is applied when the order comes. Days beyond the bound
//! are folded into running totals that keep exactly what the BTYD features need (first
//! purchase day and value, number of purchase days, sum of repeat-day values, last
//! purchase day); an order for a folded day is refused, naming the setting.

use serde::{Deserialize, Serialize};

use custflow_schemas::time::DAY_MS;
use custflow_schemas::{Activity, Customer, Event, Order, OrderStatus};

/// Days of per-day detail kept behind the customer's newest order by default: ten years.
pub const DEFAULT_HISTORY_DAYS: i32 = 3650;

/// Days with orders kept in detail per customer, at most, whatever `history_days`: a
/// customer who orders every day keeps about four years (about 40 bytes a day with its
/// order), so one state stays under about 200 KB.
pub const MAX_DETAIL_DAYS: usize = 1500;

/// Days behind the newest order for which the sales series a customer ordered in are
/// remembered (`sales_seen`): an order later than this may count the customer again in
/// its period's distinct customers.
pub const SALES_SEEN_DAYS: i32 = 400;

/// Refunds and cancellations waiting for their order, at most; past it the oldest is
/// settled as for an unknown order.
pub const PENDING_MAX: usize = 64;

/// Errors of applying an event to a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The order's day is folded into the totals: beyond the detail kept.
    #[error(
        "order of day {day} is older than the detail kept for this customer (days before {before} are folded into totals; history_days is {history_days}, at most {MAX_DETAIL_DAYS} days with orders): raise --history-days (CUSTFLOW_HISTORY_DAYS) and rebuild (`custflow process --rebuild`) to apply it"
    )]
    BeyondHistory {
        day: i32,
        before: i32,
        history_days: i32,
    },
}

/// Where an event came from: input topic (0 customers, 1 orders, 2 activity), partition,
/// offset. Events at or before the stored position are re-deliveries and are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePos {
    pub topic: u8,
    pub partition: i32,
    pub offset: i64,
}

/// Per-day aggregate of orders.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    /// Net value: placed totals minus refunds and cancellations.
    pub net: f64,
    /// Placed orders not cancelled.
    pub orders: u32,
    /// A refund or cancellation touched this day.
    pub refunded: bool,
    /// Milliseconds into the day of the first and latest order placed this day.
    pub first_ms: u32,
    pub last_ms: u32,
}

impl Day {
    /// Event time of the first order placed this day.
    pub fn first_at(&self) -> i64 {
        i64::from(self.day) * DAY_MS + i64::from(self.first_ms)
    }

    /// Event time of the latest order placed this day.
    pub fn last_at(&self) -> i64 {
        i64::from(self.day) * DAY_MS + i64::from(self.last_ms)
    }
}

/// An order placed within the kept window, so refunds and cancellations find its day.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrderRef {
    /// FNV-1a hash of the order id (32 bits: collisions among one customer's orders of
    /// the kept days are negligible).
    pub id: u32,
    pub day: i32,
    /// What is still counted of it (total minus refunds).
    pub open: f64,
    pub cancelled: bool,
    pub discounted: bool,
}

/// Totals of the days folded out of the per-day detail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Folded {
    pub first_day: Option<i32>,
    pub first_at: i64,
    pub last_day: Option<i32>,
    pub last_at: i64,
    pub purchase_days: u32,
    /// Sum of the net values of purchase days after the first.
    pub repeat_sum: f64,
    pub orders: u32,
    pub spend: f64,
    pub discounted: u32,
    /// Days before this one are folded; a late event for them cannot be applied exactly.
    pub before: Option<i32>,
}

/// Spend per named value, bounded (the smallest entry is dropped past the bound).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally(pub Vec<(String, f64)>);

const TALLY_MAX: usize = 32;

impl Tally {
    fn add(&mut self, key: &str, v: f64) {
        if let Some(e) = self.0.iter_mut().find(|(k, _)| k == key) {
            e.1 += v;
        } else {
            self.0.push((key.to_owned(), v));
            if self.0.len() > TALLY_MAX {
                let min = (0..self.0.len()).min_by(|&a, &b| self.0[a].1.total_cmp(&self.0[b].1));
                if let Some(i) = min {
                    self.0.swap_remove(i);
                }
            }
        }
    }

    /// The key with the highest spend (ties: the smaller key).
    pub fn mode(&self) -> Option<&str> {
        self.0
            .iter()
            .filter(|(_, v)| *v > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
            .map(|(k, _)| k.as_str())
    }
}

pub const DAYPARTS: [&str; 5] = ["morning", "lunch", "afternoon", "dinner", "night"];

/// Daypart of an event time (UTC hour): morning 5–11, lunch 11–14, afternoon 14–17,
/// dinner 17–21, night 21–5.
pub fn daypart(ms: i64) -> usize {
    let hour = ms.rem_euclid(DAY_MS) / 3_600_000;
    match hour {
        5..=10 => 0,
        11..=13 => 1,
        14..=16 => 2,
        17..=20 => 3,
        _ => 4,
    }
}

/// Day number (days since 1970-01-01, UTC) of an event time.
pub fn day_of(ms: i64) -> i32 {
    i32::try_from(ms.div_euclid(DAY_MS)).unwrap_or(if ms < 0 { i32::MIN } else { i32::MAX })
}

fn fnv(s: &str) -> u32 {
    fnv_from(0x811c_9dc5, s)
}

/// 32-bit FNV-1a of `s`, starting from `seed` instead of the offset basis.
pub(crate) fn fnv_from(seed: u32, s: &str) -> u32 {
    s.bytes()
        .fold(seed, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Everything custflow keeps about one customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerState {
    pub positions: Vec<SourcePos>,
    /// Applied events (the per-customer version of scores).
    pub applied: u64,
    pub loyalty_member: bool,
    pub profile_at: i64,
    pub country: Option<String>,
    pub folded: Folded,
    pub days: Vec<Day>,
    pub orders: Vec<OrderRef>,
    pub category: Tally,
    pub location: Tally,
    pub daypart: [f64; 5],
    pub newest_at: i64,
    pub last_activity_at: i64,
    pub activity: [u32; 4],
    /// Order refunds or cancellations whose original order was not found.
    pub unmatched_adjustments: u32,
    /// Segments of the last score emitted, to emit `SegmentChange` only on change.
    pub segments: Option<SegmentMemo>,
    /// Version of the last score emitted; only grows.
    pub score_version: i64,
    /// The customer's first order (by event time) and whether they came back within
    /// [`RETURN_DAYS`] days, for the discount cohorts of the sales analytics. `None` for a
    /// customer without orders, or one whose first order predates this field.
    pub first_order: Option<FirstOrder>,
    /// (day, series hash) of the sales rollup series this customer ordered in, over the
    /// kept days, so each period counts the customer once per series, whatever order the
    /// events arrive in.
    pub sales_seen: Vec<(i32, u32)>,
    /// Sales of orders applied before the customer's first profile, per day: counted
    /// under loyalty `unknown` until a profile says which group they belong to.
    pub unattributed: Vec<Unattributed>,
    /// Produce time (epoch ms) of the customer's latest erasure (`DELETE
    /// /v1/customers/{id}`); 0 if never erased. Events produced at or before it belong to
    /// the erased customer and are skipped, also when a rebuild replays them.
    pub erased_at: i64,
    /// Refunds and cancellations whose order has not arrived yet, in arrival order.
    pub pending: Vec<Pending>,
}

/// A postcard output that appends to a borrowed vector.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A refund or cancellation waiting for its order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// FNV-1a hash of the order id, as [`OrderRef::id`].
    pub id: u32,
    /// The refund's amount (a cancellation takes whatever is open).
    pub amount: f64,
    pub cancelled: bool,
}

/// A day's sales counted under loyalty `unknown` (the sales rollups' counters without
/// customers: revenue, orders, discount, discounted orders in cents; refunds and their
/// count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Unattributed {
    pub day: i32,
    pub sums: [i64; 6],
}

/// Days within which a customer who placed a first order counts as returned.
pub const RETURN_DAYS: i32 = 30;

/// A customer's first order, as the sales analytics' discount cohorts need it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstOrder {
    pub at: i64,
    pub discount_code: Option<String>,
    pub discounted: bool,
    /// Another order (not cancelled) followed on the same day or within [`RETURN_DAYS`].
    pub returned: bool,
}

/// What an order event did to the customer's sales, for the sales rollups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrderEffect {
    /// A new order was counted.
    Placed,
    /// A refund or cancellation took `amount` off (for one whose original is not kept,
    /// the event's own total).
    Adjusted { amount: f64, cancelled: bool },
    /// Nothing changed: not an order, an order placed twice, a repeated cancellation.
    None,
}

/// The segmentation of the last emitted score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentMemo {
    pub value_tier: String,
    pub rfm_segment: String,
    pub cluster: Option<String>,
    pub at_risk: bool,
    /// P(alive) and CLV of the last score, so clock rescoring emits only real moves.
    pub p_alive: f64,
    pub clv_12m: f64,
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event changed the state.
    Changed,
    /// Already applied (re-delivery): skipped.
    Duplicate,
}

impl CustomerState {
    /// The state's stored bytes (postcard).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_to(&mut out);
        out
    }

    /// Encodes the state as [`CustomerState::encode`] does, appended to `out` (a buffer
    /// reused from state to state). Pushed straight into the vector: through
    /// `std::io::Write` each of a state's few hundred varints and strings was a call of
    /// its own, 17% of a processor's time at a million customers (BENCHMARKS.md).
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        // Every state serializes into memory.
        let _ = postcard::serialize_with_flavor(self, Append(out));
    }

    /// Decodes a stored state. States written before the trailing fields were added
    /// (the sales fields `first_order`, `sales_seen`, `unattributed`, then `erased_at`,
    /// then `pending`) lack their bytes; they decode as if those were empty (each encodes
    /// as one zero byte when empty).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            [1usize, 2, 5]
                .into_iter()
                .find_map(|missing| {
                    let mut padded = Vec::with_capacity(bytes.len() + missing);
                    padded.extend_from_slice(bytes);
                    padded.resize(bytes.len() + missing, 0);
                    postcard::from_bytes(&padded).ok()
                })
                .ok_or(e)
        })
    }

    /// Erases everything known about the customer (an erasure record at `pos`, produced
    /// at `at`). Kept: the source positions (so replays stay skipped), the score version
    /// (it only grows), the erasure time, and the segments of the last score, which the
    /// scorer needs once to take the customer out of the segment counts and emit the
    /// tombstone.
    ///
    /// One erasure request is written to every input topic (each record in order with
    /// that topic's events): the first to arrive erases, the others, with the same time,
    /// change nothing; so an event produced after the request, which comes after the
    /// request's record of its own topic, is never erased by the record of another.
    pub fn erase(&mut self, pos: SourcePos, at: i64) -> Applied {
        if self.seen(pos) || at <= self.erased_at {
            return Applied::Duplicate;
        }
        let mut kept = CustomerState {
            positions: std::mem::take(&mut self.positions),
            score_version: self.score_version,
            segments: self.segments.take(),
            erased_at: self.erased_at.max(at),
            ..CustomerState::default()
        };
        kept.record(pos);
        *self = kept;
        Applied::Changed
    }

    /// Whether an event produced at `produced_ms` was erased with its customer.
    pub fn is_erased(&self, produced_ms: Option<i64>) -> bool {
        self.erased_at != 0 && produced_ms.is_some_and(|p| p <= self.erased_at)
    }

    /// Whether this is only the marker an erasure left (nothing applied since): lookups
    /// treat it as an unknown customer.
    pub fn is_blank(&self) -> bool {
        self.erased_at != 0 && self.applied == 0
    }

    /// Whether a profile of this customer was applied.
    pub fn has_profile(&self) -> bool {
        self.profile_at != 0
    }

    /// Records an order of this customer in the sales series `hashes` on `day`, and says
    /// for each series and each period `[start, end)` of `periods` whether it is the
    /// customer's first order in that series within the period. `sales_seen` is kept
    /// sorted, so only the days of the periods are looked at.
    pub fn first_in_series<const N: usize>(
        &mut self,
        hashes: &[u32],
        day: i32,
        periods: &[(i32, i32); N],
    ) -> Vec<[bool; N]> {
        let lo = periods.iter().map(|p| p.0).min().unwrap_or(day);
        let hi = periods.iter().map(|p| p.1).max().unwrap_or(day + 1);
        let a = self.sales_seen.partition_point(|(d, _)| *d < lo);
        let b = self.sales_seen.partition_point(|(d, _)| *d < hi);
        let mut firsts = vec![[true; N]; hashes.len()];
        for (d, h) in &self.sales_seen[a..b] {
            for (j, _) in hashes.iter().enumerate().filter(|(_, x)| *x == h) {
                for (k, (start, end)) in periods.iter().enumerate() {
                    if d >= start && d < end {
                        firsts[j][k] = false;
                    }
                }
            }
        }
        for h in hashes {
            if let Err(i) = self.sales_seen.binary_search(&(day, *h)) {
                self.sales_seen.insert(i, (day, *h));
            }
        }
        firsts
    }

    /// Whether the event at `pos` was applied already.
    pub fn seen(&self, pos: SourcePos) -> bool {
        self.positions
            .iter()
            .any(|p| p.topic == pos.topic && p.partition == pos.partition && p.offset >= pos.offset)
    }

    fn record(&mut self, pos: SourcePos) {
        match self.positions.iter_mut().find(|p| p.topic == pos.topic) {
            Some(p) => *p = pos,
            None => self.positions.push(pos),
        }
    }

    /// Applies one event from `pos`, exactly once in effect, keeping the default history.
    pub fn apply(&mut self, event: &Event, pos: SourcePos) -> Result<Applied, ApplyError> {
        self.apply_with_effect(event, pos, DEFAULT_HISTORY_DAYS)
            .map(|(a, _)| a)
    }

    /// [`apply`](Self::apply) keeping `history_days` of detail behind the newest order,
    /// also saying what an order did to the customer's sales.
    pub fn apply_with_effect(
        &mut self,
        event: &Event,
        pos: SourcePos,
        history_days: i32,
    ) -> Result<(Applied, OrderEffect), ApplyError> {
        if self.seen(pos) {
            return Ok((Applied::Duplicate, OrderEffect::None));
        }
        let effect = match event {
            Event::Customer(c) => {
                self.apply_customer(c);
                OrderEffect::None
            }
            Event::Order(o) => self.apply_order(o, history_days)?,
            Event::Activity(a) => {
                self.apply_activity(a);
                OrderEffect::None
            }
        };
        self.record(pos);
        self.applied += 1;
        Ok((Applied::Changed, effect))
    }

    fn apply_customer(&mut self, c: &Customer) {
        // The latest profile by event time wins, whatever order they arrive in.
        if c.occurred_at >= self.profile_at {
            self.profile_at = c.occurred_at;
            self.loyalty_member = c.loyalty_member;
            self.country = c.country.clone();
        }
    }

    fn apply_activity(&mut self, a: &Activity) {
        self.last_activity_at = self.last_activity_at.max(a.occurred_at);
        self.activity[a.kind as usize] += 1;
    }

    fn day_mut(&mut self, day: i32) -> &mut Day {
        let i = match self.days.binary_search_by_key(&day, |d| d.day) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(
                    i,
                    Day {
                        day,
                        net: 0.0,
                        orders: 0,
                        refunded: false,
                        first_ms: u32::MAX,
                        last_ms: 0,
                    },
                );
                i
            }
        };
        &mut self.days[i]
    }

    fn apply_order(&mut self, o: &Order, history_days: i32) -> Result<OrderEffect, ApplyError> {
        let day = day_of(o.occurred_at);
        let id = fnv(&o.order_id);
        let effect = match o.status {
            OrderStatus::Placed => {
                if let Some(before) = self.folded.before.filter(|b| day < *b) {
                    return Err(ApplyError::BeyondHistory {
                        day,
                        before,
                        history_days,
                    });
                }
                if self.orders.iter().any(|r| r.id == id) {
                    return Ok(OrderEffect::None); // the same order placed twice: counted once
                }
                let discounted = o.discount_amount > 0.0 || o.discount_code.is_some();
                let no_orders_yet =
                    self.orders.is_empty() && self.days.is_empty() && self.folded.orders == 0;
                let earlier = self
                    .first_order
                    .as_ref()
                    .is_some_and(|f| o.occurred_at < f.at);
                if no_orders_yet || earlier {
                    self.first_order = Some(FirstOrder {
                        at: o.occurred_at,
                        discount_code: o.discount_code.clone(),
                        discounted,
                        returned: false,
                    });
                }
                self.orders.push(OrderRef {
                    id,
                    day,
                    open: o.total,
                    cancelled: false,
                    discounted,
                });
                let d = self.day_mut(day);
                d.net += o.total;
                d.orders += 1;
                let ms = u32::try_from(o.occurred_at.rem_euclid(DAY_MS)).unwrap_or(0);
                d.last_ms = d.last_ms.max(ms);
                d.first_ms = d.first_ms.min(ms);
                for item in &o.items {
                    let cat = if item.category.is_empty() {
                        "other"
                    } else {
                        &item.category
                    };
                    self.category
                        .add(cat, f64::from(item.quantity) * item.unit_price);
                }
                if let Some(loc) = &o.location_id {
                    self.location.add(loc, o.total);
                }
                self.daypart[daypart(o.occurred_at)] += o.total;
                self.newest_at = self.newest_at.max(o.occurred_at);
                // Refunds and cancellations that arrived first land on it now, in the
                // order they came.
                let waiting: Vec<Pending> = self
                    .pending
                    .iter()
                    .filter(|p| p.id == id)
                    .copied()
                    .collect();
                if !waiting.is_empty() {
                    self.pending.retain(|p| p.id != id);
                    let i = self.orders.len() - 1;
                    for p in waiting {
                        self.adjust(i, p.amount, p.cancelled);
                    }
                }
                self.fold(history_days);
                OrderEffect::Placed
            }
            OrderStatus::Refunded | OrderStatus::Cancelled => {
                let cancelled = o.status == OrderStatus::Cancelled;
                let Some(i) = self.orders.iter().position(|r| r.id == id) else {
                    // Its order has not arrived (or is folded): the adjustment waits for
                    // it. The sales rollups count the adjustment now.
                    self.pending.push(Pending {
                        id,
                        amount: o.total,
                        cancelled,
                    });
                    if self.pending.len() > PENDING_MAX {
                        // Settled as for an unknown order: only the spend is corrected.
                        let p = self.pending.remove(0);
                        self.unmatched_adjustments += 1;
                        if !p.cancelled {
                            self.folded.spend -= p.amount;
                        }
                    }
                    return Ok(OrderEffect::Adjusted {
                        amount: o.total,
                        cancelled,
                    });
                };
                if self.orders[i].cancelled {
                    return Ok(OrderEffect::None);
                }
                let amount = self.adjust(i, o.total, cancelled);
                OrderEffect::Adjusted { amount, cancelled }
            }
        };
        self.update_returned();
        Ok(effect)
    }

    /// Refunds `amount` of the kept order `i` (at most what is open), or cancels it;
    /// returns what was taken off. A cancelled order changes no more.
    fn adjust(&mut self, i: usize, amount: f64, cancel: bool) -> f64 {
        let r = self.orders[i];
        if r.cancelled {
            return 0.0;
        }
        let amount = if cancel { r.open } else { amount.min(r.open) };
        self.orders[i].open -= amount;
        self.orders[i].cancelled = cancel;
        let d = self.day_mut(r.day);
        d.net -= amount;
        d.refunded = true;
        if cancel {
            d.orders = d.orders.saturating_sub(1);
        }
        amount
    }

    /// Recomputes whether the first order's customer came back within [`RETURN_DAYS`],
    /// while the first order's day is still kept in detail (afterwards it is settled).
    fn update_returned(&mut self) {
        let Some(first) = &self.first_order else {
            return;
        };
        let fd = day_of(first.at);
        if self.folded.before.is_some_and(|b| fd < b) {
            return;
        }
        let returned = self.days.iter().any(|d| {
            (d.day == fd && d.orders >= 2)
                || (d.day > fd && d.day <= fd + RETURN_DAYS && d.orders > 0)
        });
        if let Some(f) = &mut self.first_order {
            f.returned = returned;
        }
    }

    /// Folds into the totals the days older than `history_days` behind the newest order,
    /// and the oldest days past [`MAX_DETAIL_DAYS`]; forgets the sales series of days
    /// older than [`SALES_SEEN_DAYS`].
    fn fold(&mut self, history_days: i32) {
        let newest = day_of(self.newest_at);
        let seen_limit = newest.saturating_sub(SALES_SEEN_DAYS);
        if self
            .sales_seen
            .first()
            .is_some_and(|(d, _)| *d < seen_limit)
        {
            self.sales_seen.retain(|(d, _)| *d >= seen_limit);
        }
        let mut limit = newest.saturating_sub(history_days.max(1));
        if self.days.len() > MAX_DETAIL_DAYS {
            limit = limit.max(self.days[self.days.len() - MAX_DETAIL_DAYS].day);
        }
        let n = self.days.iter().take_while(|d| d.day < limit).count();
        if n == 0 {
            return;
        }
        self.folded.before = Some(self.folded.before.map_or(limit, |b| b.max(limit)));
        for d in self.days.drain(..n) {
            let f = &mut self.folded;
            f.orders += d.orders;
            f.spend += d.net;
            if crate::features::is_purchase_day(&d) {
                if f.first_day.is_none() {
                    f.first_day = Some(d.day);
                    f.first_at = d.first_at();
                } else {
                    f.repeat_sum += d.net;
                }
                f.purchase_days += 1;
                f.last_day = Some(d.day);
                f.last_at = d.last_at();
            }
        }
        let discounted = self
            .orders
            .iter()
            .filter(|r| r.day < limit && r.discounted && !r.cancelled)
            .count();
        self.folded.discounted += u32::try_from(discounted).unwrap_or(u32::MAX);
        self.orders.retain(|r| r.day >= limit);
        self.sales_seen.retain(|(d, _)| *d >= limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::compute;
    use custflow_schemas::{OrderItem, OrderStatus};

    fn order(id: &str, day: i64, hour: i64, total: f64, status: OrderStatus) -> Event {
        Event::Order(Order {
            event_id: format!("e-{id}-{status:?}"),
            order_id: id.into(),
            customer_id: "c".into(),
            occurred_at: day * DAY_MS + hour * 3_600_000,
            status,
            location_id: Some("loc-1".into()),
            channel: None,
            currency: "EUR".into(),
            items: vec![OrderItem {
                sku: "s".into(),
                category: "mains".into(),
                quantity: 1,
                unit_price: total,
            }],
            discount_code: None,
            discount_amount: 0.0,
            total,
        })
    }

    fn pos(offset: i64) -> SourcePos {
        SourcePos {
            topic: 1,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn refunds_and_cancellations_adjust_the_original_day() {
        let mut s = CustomerState::default();
        let evs = [
            order("a", 100, 12, 20.0, OrderStatus::Placed),
            order("b", 103, 19, 40.0, OrderStatus::Placed),
            order("c", 105, 12, 10.0, OrderStatus::Placed),
            order("b", 110, 9, 15.0, OrderStatus::Refunded), // partial refund, lands on day 103
            order("c", 111, 9, 10.0, OrderStatus::Cancelled), // day 105 is no purchase day now
        ];
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(s.apply(e, pos(i as i64)), Ok(Applied::Changed));
        }
        let f = compute(&s, 120 * DAY_MS, 45.0);
        assert_eq!(
            (f.frequency, f.recency, f.age, f.monetary_value),
            (1, 3.0, 20.0, 25.0)
        );
        assert_eq!((f.orders_total, f.spend_total), (2, 45.0));
        assert_eq!(f.favourite_daypart.as_deref(), Some("dinner"));
        // Re-delivery of an applied offset is skipped.
        assert_eq!(s.apply(&evs[0], pos(2)), Ok(Applied::Duplicate));
        assert_eq!(compute(&s, 120 * DAY_MS, 45.0), f);
    }

    #[test]
    fn out_of_order_delivery_gives_the_same_features() {
        let evs = [
            order("a", 100, 8, 12.0, OrderStatus::Placed),
            order("b", 130, 12, 40.0, OrderStatus::Placed),
            order("c", 150, 12, 7.5, OrderStatus::Placed),
            order("b", 151, 12, 40.0, OrderStatus::Refunded),
            order("d", 170, 22, 9.0, OrderStatus::Placed),
        ];
        let mut in_order = CustomerState::default();
        for (i, e) in evs.iter().enumerate() {
            in_order.apply(e, pos(i as i64)).unwrap();
        }
        let mut shuffled = CustomerState::default();
        for (n, i) in [4, 1, 3, 0, 2].into_iter().enumerate() {
            shuffled.apply(&evs[i], pos(n as i64)).unwrap();
        }
        let as_of = 175 * DAY_MS;
        assert_eq!(
            compute(&in_order, as_of, 45.0),
            compute(&shuffled, as_of, 45.0)
        );
    }

    #[test]
    fn folding_keeps_the_btyd_features_exact() {
        // 60 orders every 9 days with 120 days of history kept: most days get folded.
        let mut s = CustomerState::default();
        let mut tx = Vec::new();
        for i in 0..60i64 {
            let total = 10.0 + i as f64;
            let e = order(
                &format!("o{i}"),
                1000 + 9 * i,
                12,
                total,
                OrderStatus::Placed,
            );
            s.apply_with_effect(&e, pos(i), 120).unwrap();
            tx.push(("c", (1000 + 9 * i), total));
        }
        assert!(
            s.folded.purchase_days > 0 && s.days.len() < 20,
            "{} days kept",
            s.days.len()
        );
        let as_of_day = 1000 + 9 * 59 + 5;
        let f = compute(&s, as_of_day * DAY_MS, 45.0);
        let want = custflow_models::summary::summarise(tx, as_of_day, 1.0)["c"];
        assert_eq!(f64::from(f.frequency), want.x);
        assert_eq!((f.recency, f.age), (want.t_x, want.t));
        assert!((f.monetary_value - want.m).abs() < 1e-9);
        assert_eq!(f.orders_total, 60);
        // A placed order for a folded day is refused naming the setting, not misapplied.
        let late = order("late", 1001, 12, 5.0, OrderStatus::Placed);
        let e = s.apply_with_effect(&late, pos(100), 120).unwrap_err();
        assert!(matches!(
            e,
            ApplyError::BeyondHistory {
                history_days: 120,
                ..
            }
        ));
        assert!(e.to_string().contains("--history-days"), "{e}");
        assert_eq!(CustomerState::decode(&s.encode()).unwrap(), s);
        // The stored bytes are postcard's own encoding of the state.
        assert_eq!(s.encode(), postcard::to_allocvec(&s).unwrap());
        // Encoded into a buffer that holds something already, the same bytes follow it.
        let mut buf = b"MSET k".to_vec();
        s.encode_to(&mut buf);
        assert_eq!(&buf[..6], b"MSET k");
        assert_eq!(buf[6..], s.encode()[..]);
    }

    #[test]
    fn with_the_default_history_a_year_late_order_lands_on_its_day() {
        // Live orders first, then last year's: nothing is folded or refused.
        let mut late_first = CustomerState::default();
        let mut in_time = CustomerState::default();
        let live: Vec<Event> = (0..20)
            .map(|i| order(&format!("n{i}"), 2000 + 3 * i, 12, 8.0, OrderStatus::Placed))
            .collect();
        let old: Vec<Event> = (0..20)
            .map(|i| order(&format!("o{i}"), 1500 + 7 * i, 9, 4.5, OrderStatus::Placed))
            .collect();
        for (n, e) in live.iter().chain(&old).enumerate() {
            late_first.apply(e, pos(n as i64)).unwrap();
        }
        for (n, e) in old.iter().chain(&live).enumerate() {
            in_time.apply(e, pos(n as i64)).unwrap();
        }
        let as_of = 2100 * DAY_MS;
        assert_eq!(
            compute(&late_first, as_of, 45.0),
            compute(&in_time, as_of, 45.0)
        );
        assert_eq!(late_first.folded, Folded::default());
        assert_eq!(compute(&late_first, as_of, 45.0).frequency, 39);
    }

    #[test]
    fn a_refund_or_cancellation_before_its_order_waits_for_it() {
        let placed = order("a", 100, 12, 40.0, OrderStatus::Placed);
        let refund = order("a", 101, 9, 15.0, OrderStatus::Refunded);
        let other = order("b", 102, 12, 10.0, OrderStatus::Placed);
        let cancel = order("b", 103, 9, 10.0, OrderStatus::Cancelled);
        let mut in_time = CustomerState::default();
        for (n, e) in [&placed, &refund, &other, &cancel].into_iter().enumerate() {
            in_time.apply(e, pos(n as i64)).unwrap();
        }
        let mut reversed = CustomerState::default();
        for (n, e) in [&cancel, &refund, &other, &placed].into_iter().enumerate() {
            reversed.apply(e, pos(n as i64)).unwrap();
        }
        assert!(reversed.pending.is_empty());
        let as_of = 110 * DAY_MS;
        let f = compute(&reversed, as_of, 45.0);
        assert_eq!(f, compute(&in_time, as_of, 45.0));
        assert_eq!((f.orders_total, f.spend_total, f.frequency), (1, 25.0, 0));
        // While it waits, the refund changes no feature.
        let mut waiting = CustomerState::default();
        waiting.apply(&refund, pos(0)).unwrap();
        assert_eq!(waiting.pending.len(), 1);
        assert_eq!(compute(&waiting, as_of, 45.0).spend_total, 0.0);
        assert_eq!(CustomerState::decode(&waiting.encode()).unwrap(), waiting);
    }

    #[test]
    fn the_first_order_and_a_return_within_30_days_are_tracked() {
        let mut s = CustomerState::default();
        let mut second = order("b", 120, 12, 9.0, OrderStatus::Placed);
        let (applied, effect) = s
            .apply_with_effect(&second, pos(0), DEFAULT_HISTORY_DAYS)
            .unwrap();
        assert_eq!((applied, effect), (Applied::Changed, OrderEffect::Placed));
        assert_eq!(s.first_order.as_ref().map(|f| f.returned), Some(false));
        // A late, earlier order with a code becomes the first; "b" is 20 days later.
        let mut first = order("a", 100, 12, 10.0, OrderStatus::Placed);
        if let Event::Order(o) = &mut first {
            o.discount_code = Some("WELCOME".into());
        }
        s.apply(&first, pos(1)).unwrap();
        let f = s.first_order.clone().unwrap();
        assert_eq!(
            (f.discount_code.as_deref(), f.returned),
            (Some("WELCOME"), true)
        );
        // Cancelling the return undoes it; a repeated cancellation changes nothing.
        if let Event::Order(o) = &mut second {
            o.status = OrderStatus::Cancelled;
        }
        let (_, effect) = s
            .apply_with_effect(&second, pos(2), DEFAULT_HISTORY_DAYS)
            .unwrap();
        assert_eq!(
            effect,
            OrderEffect::Adjusted {
                amount: 9.0,
                cancelled: true
            }
        );
        assert_eq!(s.first_order.as_ref().map(|f| f.returned), Some(false));
        assert_eq!(
            s.apply_with_effect(&second, pos(3), DEFAULT_HISTORY_DAYS)
                .unwrap()
                .1,
            OrderEffect::None
        );
    }

    #[test]
    fn an_erasure_forgets_the_customer_but_not_the_positions() {
        let mut s = CustomerState::default();
        s.apply(&order("a", 100, 12, 10.0, OrderStatus::Placed), pos(0))
            .unwrap();
        s.segments = Some(SegmentMemo::default());
        s.score_version = 3;
        assert!(!s.is_blank());
        let at = 100 * DAY_MS + 13 * 3_600_000;
        let erasure = SourcePos { topic: 0, ..pos(7) };
        assert_eq!(s.erase(erasure, at), Applied::Changed);
        assert!(s.is_blank());
        assert!(s.days.is_empty() && s.orders.is_empty() && s.folded == Folded::default());
        assert_eq!((s.score_version, s.erased_at), (3, at));
        assert!(s.segments.is_some(), "kept for the scorer's tombstone");
        // Re-deliveries of the order and of the erasure are skipped.
        assert!(s.seen(pos(0)));
        assert_eq!(s.erase(erasure, at), Applied::Duplicate);
        // The same request's record on another topic changes nothing.
        assert_eq!(s.erase(pos(8), at), Applied::Duplicate);
        // Events produced before the erasure went with the customer; later ones do not.
        assert!(s.is_erased(Some(at - 1)) && s.is_erased(Some(at)));
        assert!(!s.is_erased(Some(at + 1)) && !s.is_erased(None));
        s.apply(&order("b", 101, 12, 5.0, OrderStatus::Placed), pos(1))
            .unwrap();
        assert!(!s.is_blank());
        assert_eq!(CustomerState::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn states_written_before_first_order_existed_still_decode() {
        let mut s = CustomerState::default();
        s.apply(&order("a", 100, 12, 10.0, OrderStatus::Placed), pos(0))
            .unwrap();
        s.first_order = None;
        let full = s.encode();
        // The trailing None, empty lists, zero erasure time and empty pending list the
        // oldest layout lacks.
        let mut bytes = full.clone();
        assert_eq!(bytes.split_off(bytes.len() - 5), [0, 0, 0, 0, 0]);
        assert_eq!(CustomerState::decode(&bytes).unwrap(), s);
        // Written before erasures existed: no erasure time and no pending list.
        assert_eq!(CustomerState::decode(&full[..full.len() - 2]).unwrap(), s);
        // Written before pending adjustments existed.
        assert_eq!(CustomerState::decode(&full[..full.len() - 1]).unwrap(), s);
        // A series counts a customer once per period, whatever the arrival order.
        let weeks = |d: i32| [(d, d + 1), (d - d % 7, d - d % 7 + 7)];
        assert_eq!(s.first_in_series(&[7], 15, &weeks(15)), [[true, true]]);
        assert_eq!(s.first_in_series(&[7], 14, &weeks(14)), [[true, false]]);
        assert_eq!(
            s.first_in_series(&[7, 8], 15, &weeks(15)),
            [[false, false], [true, true]]
        );
        assert_eq!(s.sales_seen, [(14, 7), (15, 7), (15, 8)]);
    }

    #[test]
    fn time_dependent_features_follow_the_clock() {
        let mut s = CustomerState::default();
        s.apply(&order("a", 100, 12, 20.0, OrderStatus::Placed), pos(0))
            .unwrap();
        let soon = compute(&s, 110 * DAY_MS + 12 * 3_600_000, 45.0);
        let later = compute(&s, 160 * DAY_MS + 12 * 3_600_000, 45.0);
        assert_eq!(
            (soon.days_since_last_order, soon.at_risk),
            (Some(10.0), false)
        );
        assert_eq!(
            (later.days_since_last_order, later.at_risk),
            (Some(60.0), true)
        );
        assert_eq!((soon.orders_30d, later.orders_30d), (1, 0));
    }
}

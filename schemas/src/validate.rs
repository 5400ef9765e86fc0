//! Semantic validation of decoded events: every problem is reported with its field path.

use crate::error::FieldError;
use crate::event::{Activity, Customer, Event, Order, OrderStatus};

/// Active ISO 4217 currency codes.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND \
BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN \
ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD \
JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT \
MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR \
RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND \
TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// Whether `code` is an active ISO 4217 currency code.
pub fn is_currency(code: &str) -> bool {
    // The list is sorted and every code is 3 letters + 1 separator: binary search in place.
    let b = code.as_bytes();
    if b.len() != 3 {
        return false;
    }
    let table = ISO_4217.as_bytes();
    let (mut lo, mut hi) = (0, table.len().div_ceil(4));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match table[mid * 4..mid * 4 + 3].cmp(b) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// What validation compares against.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext {
    /// The current time in epoch milliseconds.
    pub now_ms: i64,
    /// How far in the future an event time may lie (clock skew), in milliseconds.
    pub max_future_ms: i64,
    /// Absolute tolerance when items, discount and total are compared.
    pub total_tolerance: f64,
}

impl ValidationContext {
    /// Validation against the wall clock with one day of allowed skew.
    pub fn now() -> Self {
        Self::at(crate::time::now_ms())
    }

    pub fn at(now_ms: i64) -> Self {
        Self {
            now_ms,
            max_future_ms: crate::time::DAY_MS,
            total_tolerance: 0.01,
        }
    }
}

impl Default for ValidationContext {
    fn default() -> Self {
        Self::now()
    }
}

/// Collects errors under a path prefix.
pub(crate) struct Problems<'a> {
    pub(crate) errs: &'a mut Vec<FieldError>,
}

impl Problems<'_> {
    fn push(&mut self, path: &str, code: &str, msg: impl Into<String>) {
        // A structural error already reported for this path wins over a semantic one.
        if !self.errs.iter().any(|e| e.path == path) {
            self.errs.push(FieldError::new(path, code, msg));
        }
    }

    fn id(&mut self, path: &str, v: &str) {
        if v.trim().is_empty() {
            self.push(path, "empty", "must not be empty");
        } else if v.len() > 256 {
            self.push(path, "format", "must be at most 256 bytes");
        }
    }

    fn time(&mut self, path: &str, ms: i64, ctx: &ValidationContext) {
        if ms > ctx.now_ms.saturating_add(ctx.max_future_ms) {
            self.push(
                path,
                "future",
                format!(
                    "{} is more than {} s in the future",
                    crate::time::format_rfc3339(ms),
                    ctx.max_future_ms / 1000
                ),
            );
        }
    }

    fn amount(&mut self, path: &str, v: f64) {
        if !v.is_finite() {
            self.push(path, "non_finite", "must be a finite number");
        } else if v < 0.0 {
            self.push(path, "negative", "must not be negative");
        }
    }
}

/// Every problem of an event, empty when it is valid.
pub fn validate(event: &Event, ctx: &ValidationContext) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_into(event, ctx, &mut errs);
    errs
}

pub(crate) fn validate_into(event: &Event, ctx: &ValidationContext, errs: &mut Vec<FieldError>) {
    let mut p = Problems { errs };
    match event {
        Event::Customer(c) => customer(c, ctx, &mut p),
        Event::Order(o) => order(o, ctx, &mut p),
        Event::Activity(a) => activity(a, ctx, &mut p),
    }
}

fn customer(c: &Customer, ctx: &ValidationContext, p: &mut Problems<'_>) {
    p.id("event_id", &c.event_id);
    p.id("customer_id", &c.customer_id);
    p.time("occurred_at", c.occurred_at, ctx);
    if let Some(s) = c.signup_at {
        p.time("signup_at", s, ctx);
    }
    if let Some(country) = &c.country {
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            p.push(
                "country",
                "format",
                "must be an ISO 3166-1 alpha-2 code such as \"DE\"",
            );
        }
    }
}

fn order(o: &Order, ctx: &ValidationContext, p: &mut Problems<'_>) {
    p.id("event_id", &o.event_id);
    p.id("order_id", &o.order_id);
    p.id("customer_id", &o.customer_id);
    p.time("occurred_at", o.occurred_at, ctx);
    if !is_currency(&o.currency) {
        p.push(
            "currency",
            "currency",
            format!("{:?} is not an ISO 4217 currency code", o.currency),
        );
    }
    p.amount("total", o.total);
    p.amount("discount_amount", o.discount_amount);
    let mut gross = 0.0;
    let mut items_ok = true;
    for (i, item) in o.items.iter().enumerate() {
        if item.sku.trim().is_empty() || item.sku.len() > 256 {
            p.id(&format!("items[{i}].sku"), &item.sku);
        }
        if item.quantity == 0 {
            p.push(&format!("items[{i}].quantity"), "zero", "must not be zero");
            items_ok = false;
        } else if item.quantity < 0 {
            p.push(
                &format!("items[{i}].quantity"),
                "negative",
                "must not be negative",
            );
            items_ok = false;
        }
        if !item.unit_price.is_finite() || item.unit_price < 0.0 {
            p.amount(&format!("items[{i}].unit_price"), item.unit_price);
            items_ok = false;
        }
        gross += f64::from(item.quantity) * item.unit_price;
    }
    // Refunds may be partial, so only placed and cancelled orders must add up.
    if items_ok
        && !o.items.is_empty()
        && o.status != OrderStatus::Refunded
        && o.total.is_finite()
        && o.discount_amount.is_finite()
    {
        let expected = gross - o.discount_amount;
        if (expected - o.total).abs() > ctx.total_tolerance + 1e-9 * expected.abs() {
            p.push(
                "total",
                "mismatch",
                format!(
                    "items sum to {gross:.2} minus discount {:.2} = {expected:.2}, but total is {:.2}",
                    o.discount_amount, o.total
                ),
            );
        }
    }
    if o.discount_amount > 0.0 && o.discount_code.as_deref().is_none_or(str::is_empty) {
        p.push(
            "discount_code",
            "missing",
            "required when discount_amount > 0",
        );
    }
}

fn activity(a: &Activity, ctx: &ValidationContext, p: &mut Problems<'_>) {
    p.id("event_id", &a.event_id);
    p.id("customer_id", &a.customer_id);
    p.time("occurred_at", a.occurred_at, ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_table_is_sorted_and_regular() {
        let codes: Vec<&str> = ISO_4217.split(' ').collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert!(codes.iter().all(|c| c.len() == 3));
        assert!(codes.iter().all(|c| is_currency(c)));
    }

    #[test]
    fn currency_codes() {
        assert!(is_currency("EUR"));
        assert!(is_currency("USD"));
        assert!(!is_currency("usd"));
        assert!(!is_currency("XYZ"));
        assert!(!is_currency("EURO"));
    }
}

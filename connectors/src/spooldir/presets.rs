//! CSV row formats of the spool-dir source (DESIGN §9): CDNOW transactions, the UCI
//! Online Retail files, and a generic column mapping. Pure conversion of parsed rows into
//! events; reading files is the task's job.

use std::collections::BTreeMap;

use csv::ByteRecord;
use custflow_models::input::{parse_cdnow_line, parse_day};
use custflow_schemas::time::{parse_rfc3339, DAY_MS};
use custflow_schemas::{Order, OrderItem, OrderStatus};
use thiserror::Error;

/// A stable ULID: the event time and a hash of where the record came from, so reading a
/// file twice gives the same event ids.
pub fn stable_ulid(ms: i64, parts: &[&[u8]]) -> String {
    let (mut a, mut b) = (0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64);
    for p in parts {
        for &x in p.iter().chain(std::iter::once(&0xff)) {
            a = (a ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x1f);
        }
    }
    let random = (u128::from(a) << 64 | u128::from(b)) & ((1u128 << 80) - 1);
    ulid::Ulid::from_parts(u64::try_from(ms.max(0)).unwrap_or(0), random).to_string()
}

/// Parses a date with an optional time of day, as written by spreadsheets and databases:
/// `12/1/2010 8:26`, `2010-12-01 08:26:00`, `20101201`, or RFC 3339; times without a zone
/// are UTC. Epoch milliseconds are accepted too.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(ms) = parse_rfc3339(s) {
        return Some(ms);
    }
    if s.len() >= 11 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let day = parse_day(date)?;
    let mut ms = 0;
    if let Some(t) = time.filter(|t| !t.is_empty()) {
        let mut parts = t.split(':');
        let h: i64 = parts.next()?.parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let sec: f64 = parts.next().map_or(Some(0.0), |x| x.parse().ok())?;
        if parts.next().is_some() || !(0..24).contains(&h) || !(0..60).contains(&m) {
            return None;
        }
        if !(0.0..61.0).contains(&sec) {
            return None;
        }
        // Whole milliseconds of the seconds field.
        ms = (h * 3600 + m * 60) * 1000 + (sec * 1000.0).round() as i64;
    }
    day.checked_mul(DAY_MS)?.checked_add(ms)
}

/// Why a source row is not an event: its dead-letter reason, naming the column.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RowError {
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A value that does not parse as what the column holds.
    #[error("{column} {value:?} is not {expected}")]
    Invalid {
        column: String,
        value: String,
        expected: &'static str,
    },
    /// A value that parses but cannot be an order's.
    #[error("{column} {value} is {problem}")]
    Unusable {
        column: &'static str,
        value: String,
        problem: &'static str,
    },
    /// An invoice row without a customer.
    #[error("row has no Customer ID")]
    NoCustomer,
    #[error("Customer ID {customer} differs from the invoice's {first}")]
    OtherCustomer { customer: String, first: String },
    /// A quantity whose sign does not fit the invoice (`a sales` or `a cancellation`).
    #[error("Quantity {quantity} does not fit {invoice} invoice")]
    Sign {
        quantity: i64,
        invoice: &'static str,
    },
    /// A line of a whitespace-separated file that does not parse, or is not UTF-8.
    #[error("{0}")]
    Line(String),
}

impl RowError {
    fn invalid(column: &str, value: &str, expected: &'static str) -> Self {
        Self::Invalid {
            column: column.to_owned(),
            value: value.to_owned(),
            expected,
        }
    }

    fn unusable(column: &'static str, value: impl ToString, problem: &'static str) -> Self {
        Self::Unusable {
            column,
            value: value.to_string(),
            problem,
        }
    }
}

/// Why a file's header does not fit the connector's columns: the task fails with it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HeaderError {
    #[error("header has no {wanted} column (header: {header})")]
    Missing { wanted: String, header: String },
    #[error("csv.column.{field} names {column:?}, which is not in the header ({header})")]
    Unknown {
        field: &'static str,
        column: String,
        header: String,
    },
    #[error("csv.column.{0} is required without csv.preset")]
    Unmapped(&'static str),
}

fn field(rec: &ByteRecord, i: usize) -> &str {
    rec.get(i)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
        .trim()
}

/// One CDNOW row as a placed order: one item of `quantity` CDs, the order id from the
/// source location so every row is its own order.
pub fn cdnow_order(
    line: &str,
    order_id: &str,
    event_id_parts: &[&[u8]],
) -> Result<Option<Order>, RowError> {
    let Some((customer, day, quantity, value)) = parse_cdnow_line(line).map_err(RowError::Line)?
    else {
        return Ok(None);
    };
    if value < 0.0 {
        return Err(RowError::unusable("value", value, "negative"));
    }
    let quantity = i32::try_from(quantity)
        .map_err(|_| RowError::unusable("quantity", quantity, "out of range"))?;
    if quantity < 0 {
        return Err(RowError::unusable("quantity", quantity, "negative"));
    }
    let occurred_at = day * DAY_MS;
    let items = if quantity > 0 {
        vec![OrderItem {
            sku: "cd".into(),
            category: "music".into(),
            quantity,
            unit_price: value / f64::from(quantity),
        }]
    } else {
        Vec::new()
    };
    Ok(Some(Order {
        event_id: stable_ulid(occurred_at, event_id_parts),
        order_id: order_id.to_owned(),
        customer_id: customer.to_owned(),
        occurred_at,
        status: OrderStatus::Placed,
        location_id: None,
        channel: None,
        currency: "USD".into(),
        items,
        discount_code: None,
        discount_amount: 0.0,
        total: value,
    }))
}

/// A header's column names, trimmed, without a byte-order mark.
fn header_names(header: &ByteRecord) -> Vec<String> {
    header
        .iter()
        .map(|b| {
            String::from_utf8_lossy(b)
                .trim()
                .trim_start_matches('\u{feff}')
                .to_owned()
        })
        .collect()
}

/// Column positions of an Online Retail file, found by header name.
#[derive(Debug, Clone)]
pub struct RetailColumns {
    invoice: usize,
    stock_code: usize,
    quantity: usize,
    date: usize,
    price: usize,
    customer: usize,
    country: usize,
}

impl RetailColumns {
    /// Accepts both spellings of the UCI files' header.
    pub fn from_header(header: &ByteRecord) -> Result<Self, HeaderError> {
        let names = header_names(header);
        let find = |options: &[&str]| {
            names
                .iter()
                .position(|n| options.iter().any(|o| n.eq_ignore_ascii_case(o)))
                .ok_or_else(|| HeaderError::Missing {
                    wanted: options.join(" or "),
                    header: names.join(","),
                })
        };
        Ok(Self {
            invoice: find(&["InvoiceNo", "Invoice"])?,
            stock_code: find(&["StockCode"])?,
            quantity: find(&["Quantity"])?,
            date: find(&["InvoiceDate"])?,
            price: find(&["UnitPrice", "Price"])?,
            customer: find(&["CustomerID", "Customer ID"])?,
            country: find(&["Country"])?,
        })
    }

    /// The invoice number of a row (rows are grouped by it).
    pub fn invoice<'a>(&self, rec: &'a ByteRecord) -> &'a str {
        field(rec, self.invoice)
    }
}

/// One parsed Online Retail row.
#[derive(Debug, Clone, PartialEq)]
pub struct RetailRow {
    pub invoice: String,
    pub stock_code: String,
    pub quantity: i64,
    pub at: i64,
    pub price: f64,
    /// `17850.0` and `17850` are the same customer; empty is `None`.
    pub customer: Option<String>,
    pub country: String,
}

/// Parses a row; the error is the dead-letter reason.
pub fn retail_row(rec: &ByteRecord, c: &RetailColumns) -> Result<RetailRow, RowError> {
    let invoice = field(rec, c.invoice);
    if invoice.is_empty() {
        return Err(RowError::Empty("Invoice"));
    }
    let q = field(rec, c.quantity);
    let quantity: i64 = q
        .parse()
        .map_err(|_| RowError::invalid("Quantity", q, "a whole number"))?;
    let d = field(rec, c.date);
    let at = parse_datetime(d).ok_or_else(|| RowError::invalid("InvoiceDate", d, "a date"))?;
    let p = field(rec, c.price);
    let price: f64 = p
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
        .ok_or_else(|| RowError::invalid("Price", p, "a number"))?;
    let customer = field(rec, c.customer);
    let customer = customer.strip_suffix(".0").unwrap_or(customer);
    Ok(RetailRow {
        invoice: invoice.to_owned(),
        stock_code: field(rec, c.stock_code).to_owned(),
        quantity,
        at,
        price,
        customer: (!customer.is_empty()).then(|| customer.to_owned()),
        country: field(rec, c.country).to_owned(),
    })
}

/// Why a row of an invoice cannot be part of its order, if it cannot: no customer, a
/// different customer than the invoice's first row, a quantity whose sign does not fit
/// the invoice (cancellations, `C…`, have negative quantities), a negative price.
pub fn retail_row_problem(row: &RetailRow, invoice_customer: Option<&str>) -> Option<RowError> {
    let cancel = is_cancellation(&row.invoice);
    let Some(customer) = &row.customer else {
        return Some(RowError::NoCustomer);
    };
    if let Some(first) = invoice_customer {
        if first != customer {
            return Some(RowError::OtherCustomer {
                customer: customer.clone(),
                first: first.to_owned(),
            });
        }
    }
    if row.quantity == 0 || (cancel && row.quantity > 0) || (!cancel && row.quantity < 0) {
        return Some(RowError::Sign {
            quantity: row.quantity,
            invoice: if cancel { "a cancellation" } else { "a sales" },
        });
    }
    if row.price < 0.0 {
        return Some(RowError::unusable("Price", row.price, "negative"));
    }
    if i32::try_from(row.quantity.unsigned_abs()).is_err() {
        return Some(RowError::unusable("Quantity", row.quantity, "out of range"));
    }
    None
}

/// Invoices starting with `C` are cancellations.
pub fn is_cancellation(invoice: &str) -> bool {
    invoice.starts_with(['C', 'c'])
}

/// One invoice's usable rows as an order: a cancellation becomes a refund with positive
/// quantities; total = Σ |quantity| × price (in GBP, the currency of the UCI data).
pub fn retail_order(rows: &[RetailRow], event_id: String) -> Option<Order> {
    let first = rows.first()?;
    let items: Vec<OrderItem> = rows
        .iter()
        .map(|r| OrderItem {
            sku: if r.stock_code.is_empty() {
                "unknown".into()
            } else {
                r.stock_code.clone()
            },
            category: String::new(),
            quantity: i32::try_from(r.quantity.unsigned_abs()).unwrap_or(i32::MAX),
            unit_price: r.price,
        })
        .collect();
    let total: f64 = items
        .iter()
        .map(|i| f64::from(i.quantity) * i.unit_price)
        .sum();
    Some(Order {
        event_id,
        order_id: first.invoice.clone(),
        customer_id: first.customer.clone().unwrap_or_default(),
        occurred_at: first.at,
        status: if is_cancellation(&first.invoice) {
            OrderStatus::Refunded
        } else {
            OrderStatus::Placed
        },
        location_id: (!first.country.is_empty()).then(|| first.country.clone()),
        channel: Some("online".into()),
        currency: "GBP".into(),
        items,
        discount_code: None,
        discount_amount: 0.0,
        total: (total * 100.0).round() / 100.0,
    })
}

/// Fields of an order the generic mapping can fill (`csv.column.<field>`).
pub const GENERIC_FIELDS: [&str; 13] = [
    "customer_id",
    "occurred_at",
    "total",
    "order_id",
    "status",
    "location_id",
    "channel",
    "currency",
    "sku",
    "category",
    "quantity",
    "unit_price",
    "discount_code",
];

/// A generic mapping: order field → column position.
#[derive(Debug, Clone)]
pub struct GenericColumns {
    index: BTreeMap<&'static str, usize>,
    currency: String,
}

impl GenericColumns {
    /// `mapping` is field → header name; customer_id, occurred_at and total are required.
    pub fn from_header(
        header: &ByteRecord,
        mapping: &BTreeMap<String, String>,
        currency: &str,
    ) -> Result<Self, HeaderError> {
        let names = header_names(header);
        let mut index = BTreeMap::new();
        for f in GENERIC_FIELDS {
            let Some(col) = mapping.get(f) else { continue };
            let i = names
                .iter()
                .position(|n| n == col)
                .ok_or_else(|| HeaderError::Unknown {
                    field: f,
                    column: col.clone(),
                    header: names.join(","),
                })?;
            index.insert(f, i);
        }
        for f in ["customer_id", "occurred_at", "total"] {
            if !index.contains_key(f) {
                return Err(HeaderError::Unmapped(f));
            }
        }
        Ok(Self {
            index,
            currency: currency.to_owned(),
        })
    }

    fn get<'a>(&self, rec: &'a ByteRecord, f: &str) -> Option<&'a str> {
        self.index
            .get(f)
            .map(|&i| field(rec, i))
            .filter(|s| !s.is_empty())
    }

    /// One row as an order; `default_order_id` is used when no column gives one.
    pub fn order(
        &self,
        rec: &ByteRecord,
        default_order_id: &str,
        event_id_parts: &[&[u8]],
    ) -> Result<Order, RowError> {
        let customer = self
            .get(rec, "customer_id")
            .ok_or(RowError::Empty("customer_id"))?;
        let customer = customer.strip_suffix(".0").unwrap_or(customer);
        let at = self.get(rec, "occurred_at").unwrap_or("");
        let occurred_at =
            parse_datetime(at).ok_or_else(|| RowError::invalid("occurred_at", at, "a date"))?;
        let number = |f: &str| -> Result<Option<f64>, RowError> {
            self.get(rec, f)
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| RowError::invalid(f, s, "a number"))
                })
                .transpose()
        };
        let total = number("total")?.ok_or(RowError::Empty("total"))?;
        let status = match self.get(rec, "status") {
            None => OrderStatus::Placed,
            Some(s) => OrderStatus::parse(&s.to_ascii_lowercase())
                .ok_or_else(|| RowError::invalid("status", s, "placed, refunded or cancelled"))?,
        };
        let quantity = match self.get(rec, "quantity") {
            None => 1,
            Some(q) => q
                .parse::<i32>()
                .map_err(|_| RowError::invalid("quantity", q, "a whole number"))?,
        };
        let items = match self.get(rec, "sku") {
            None => Vec::new(),
            Some(sku) => vec![OrderItem {
                sku: sku.to_owned(),
                category: self.get(rec, "category").unwrap_or("").to_owned(),
                quantity,
                unit_price: number("unit_price")?
                    .unwrap_or_else(|| total / f64::from(quantity.max(1))),
            }],
        };
        Ok(Order {
            event_id: stable_ulid(occurred_at, event_id_parts),
            order_id: self
                .get(rec, "order_id")
                .unwrap_or(default_order_id)
                .to_owned(),
            customer_id: customer.to_owned(),
            occurred_at,
            status,
            location_id: self.get(rec, "location_id").map(str::to_owned),
            channel: self.get(rec, "channel").map(str::to_owned),
            currency: self
                .get(rec, "currency")
                .unwrap_or(&self.currency)
                .to_owned(),
            items,
            discount_code: self.get(rec, "discount_code").map(str::to_owned),
            discount_amount: 0.0,
            total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fields: &[&str]) -> ByteRecord {
        ByteRecord::from(fields.to_vec())
    }

    #[test]
    fn datetimes_in_spreadsheet_and_iso_forms() {
        let a = parse_datetime("12/1/2010 8:26").unwrap();
        assert_eq!(parse_datetime("2010-12-01 08:26:00"), Some(a));
        assert_eq!(parse_datetime("2010-12-01T08:26:00Z"), Some(a));
        assert_eq!(a % DAY_MS, (8 * 60 + 26) * 60_000);
        assert_eq!(parse_datetime("20101201"), Some(a - a % DAY_MS));
        assert_eq!(parse_datetime("1291191960000"), Some(a));
        assert_eq!(parse_datetime("12/1/2010 25:00"), None);
        assert_eq!(parse_datetime("soon"), None);
    }

    #[test]
    fn stable_ids_differ_by_source() {
        let a = stable_ulid(1000, &[b"f.csv", b"10"]);
        assert_eq!(a, stable_ulid(1000, &[b"f.csv", b"10"]));
        assert_ne!(a, stable_ulid(1000, &[b"f.csv", b"11"]));
        assert_ne!(a, stable_ulid(1000, &[b"f.csv1", b"0"]));
        assert_eq!(a.len(), 26);
    }

    #[test]
    fn cdnow_rows() {
        let o = cdnow_order(" 00004 0001 19970101  2   29.33\r", "f:1", &[b"x"])
            .unwrap()
            .unwrap();
        assert_eq!(o.customer_id, "1");
        assert_eq!(o.total, 29.33);
        assert_eq!(o.items[0].quantity, 2);
        assert_eq!(o.occurred_at, parse_datetime("1997-01-01").unwrap());
        assert!(cdnow_order("   ", "f:2", &[b"x"]).unwrap().is_none());
        assert!(cdnow_order("1 2 3", "f:3", &[b"x"]).is_err());
        let free = cdnow_order("00007 19970105 0 0.00", "f:4", &[b"x"])
            .unwrap()
            .unwrap();
        assert!(free.items.is_empty());
        assert_eq!(free.customer_id, "7");
    }

    #[test]
    fn online_retail_both_headers_and_quirks() {
        let old = rec(&[
            "InvoiceNo",
            "StockCode",
            "Description",
            "Quantity",
            "InvoiceDate",
            "UnitPrice",
            "CustomerID",
            "Country",
        ]);
        let new = rec(&[
            "Invoice",
            "StockCode",
            "Description",
            "Quantity",
            "InvoiceDate",
            "Price",
            "Customer ID",
            "Country",
        ]);
        let a = RetailColumns::from_header(&old).unwrap();
        let b = RetailColumns::from_header(&new).unwrap();
        let r1 = retail_row(
            &rec(&[
                "536365",
                "85123A",
                "WHITE HANGING, HEART",
                "6",
                "12/1/2010 8:26",
                "2.55",
                "17850.0",
                "United Kingdom",
            ]),
            &a,
        )
        .unwrap();
        let r2 = retail_row(
            &rec(&[
                "536365",
                "71053",
                "LANTERN",
                "6",
                "2010-12-01 08:26:00",
                "3.39",
                "17850",
                "United Kingdom",
            ]),
            &b,
        )
        .unwrap();
        assert_eq!(r1.customer.as_deref(), Some("17850"));
        assert_eq!(r1.at, r2.at);
        assert_eq!(retail_row_problem(&r1, None), None);
        assert_eq!(retail_row_problem(&r2, Some("17850")), None);
        let o = retail_order(&[r1.clone(), r2], "id".into()).unwrap();
        assert_eq!(o.status, OrderStatus::Placed);
        assert_eq!(o.total, 35.64);
        assert_eq!(o.location_id.as_deref(), Some("United Kingdom"));
        let c = retail_row(
            &rec(&[
                "C536379",
                "D",
                "Discount",
                "-1",
                "12/1/2010 9:41",
                "27.50",
                "14527",
                "United Kingdom",
            ]),
            &a,
        )
        .unwrap();
        assert_eq!(retail_row_problem(&c, None), None);
        let refund = retail_order(&[c], "id2".into()).unwrap();
        assert_eq!(refund.status, OrderStatus::Refunded);
        assert_eq!(refund.items[0].quantity, 1);
        assert_eq!(refund.total, 27.5);
        let anon = retail_row(
            &rec(&[
                "536414",
                "22139",
                "",
                "56",
                "12/1/2010 11:52",
                "0",
                "",
                "United Kingdom",
            ]),
            &a,
        )
        .unwrap();
        assert_eq!(retail_row_problem(&anon, None), Some(RowError::NoCustomer));
        let mut neg = r1.clone();
        neg.quantity = -2;
        assert_eq!(
            retail_row_problem(&neg, None).map(|e| e.to_string()),
            Some("Quantity -2 does not fit a sales invoice".to_owned())
        );
        assert_eq!(
            retail_row(
                &rec(&["1", "x", "", "two", "12/1/2010 8:26", "1", "1", "UK"]),
                &a
            ),
            Err(RowError::invalid("Quantity", "two", "a whole number"))
        );
        assert!(matches!(
            RetailColumns::from_header(&rec(&["Invoice", "StockCode"])),
            Err(HeaderError::Missing { wanted, .. }) if wanted == "Quantity"
        ));
    }

    #[test]
    fn generic_mapping() {
        let header = rec(&["cust", "when", "amount", "item"]);
        let mapping: BTreeMap<String, String> = [
            ("customer_id", "cust"),
            ("occurred_at", "when"),
            ("total", "amount"),
            ("sku", "item"),
        ]
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
        let cols = GenericColumns::from_header(&header, &mapping, "EUR").unwrap();
        let o = cols
            .order(
                &rec(&["c1", "2026-01-02 10:00:00", "12.5", "tea"]),
                "f:2",
                &[b"x"],
            )
            .unwrap();
        assert_eq!(o.customer_id, "c1");
        assert_eq!(o.currency, "EUR");
        assert_eq!(o.order_id, "f:2");
        assert_eq!(o.items[0].unit_price, 12.5);
        assert_eq!(
            cols.order(&rec(&["c1", "later", "1", "tea"]), "f:3", &[b"x"])
                .map_err(|e| e.to_string()),
            Err("occurred_at \"later\" is not a date".to_owned())
        );
        let mut missing = mapping.clone();
        missing.insert("total".into(), "price".into());
        assert!(matches!(
            GenericColumns::from_header(&header, &missing, "EUR"),
            Err(HeaderError::Unknown { field: "total", .. })
        ));
    }
}

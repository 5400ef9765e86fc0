//! Reading transactions from text: the CDNOW format and CSV with named columns. Pure
//! parsing over text the caller read; every bad line is reported with its number.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::summary::{days_from_civil, parse_yyyymmdd};

/// A transaction: customer id, day (days since 1970-01-01), net value.
pub type Transaction = (String, i64, f64);

/// Transactions with each customer id stored once: a file of 65,000 lines holds 23,570
/// customers, and the summary groups by id, so ids become small integers as they are
/// read (not a string per line, compared again and again when sorted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transactions {
    /// Distinct customer ids, in the order they first appear.
    ids: Vec<String>,
    /// (index into `ids`, day, value), in input order.
    rows: Vec<(u32, i64, f64)>,
}

impl Transactions {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Distinct customer ids, in the order they first appear.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// (index into [`Transactions::ids`], day, value), in input order.
    pub fn rows(&self) -> &[(u32, i64, f64)] {
        &self.rows
    }

    /// (customer, day, value), in input order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64, f64)> + '_ {
        self.rows
            .iter()
            .map(|&(c, d, v)| (self.ids[c as usize].as_str(), d, v))
    }

    /// Every transaction with its own copy of the customer id.
    pub fn to_vec(&self) -> Vec<Transaction> {
        self.iter().map(|(c, d, v)| (c.to_owned(), d, v)).collect()
    }
}

impl<S: AsRef<str>> FromIterator<(S, i64, f64)> for Transactions {
    fn from_iter<I: IntoIterator<Item = (S, i64, f64)>>(iter: I) -> Self {
        let mut b = TransactionsBuilder::default();
        for (c, d, v) in iter {
            b.push(c.as_ref(), d, v);
        }
        b.finish()
    }
}

/// Builds [`Transactions`], looking an id up only when it differs from the previous
/// line's (files list a customer's transactions together).
#[derive(Debug, Default)]
struct TransactionsBuilder {
    index: HashMap<String, u32, foldhash::fast::RandomState>,
    rows: Vec<(u32, i64, f64)>,
    /// The previous row's id and its index.
    last: (String, u32),
}

impl TransactionsBuilder {
    fn with_capacity(rows: usize) -> Self {
        Self {
            rows: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    fn push(&mut self, id: &str, day: i64, value: f64) {
        if self.rows.is_empty() || self.last.0 != id {
            let next = self.index.len() as u32;
            self.last.1 = match self.index.get(id) {
                Some(&c) => c,
                None => {
                    self.index.insert(id.to_owned(), next);
                    next
                }
            };
            self.last.0.clear();
            self.last.0.push_str(id);
        }
        self.rows.push((self.last.1, day, value));
    }

    fn finish(self) -> Transactions {
        let mut ids = vec![String::new(); self.index.len()];
        for (id, c) in self.index {
            ids[c as usize] = id;
        }
        Transactions {
            ids,
            rows: self.rows,
        }
    }
}

/// Parses a date as `YYYY-MM-DD`, `YYYYMMDD`, `M/D/YYYY` (with an optional time) or the
/// date part of an RFC 3339 timestamp, into days since 1970-01-01. Years outside
/// 1…9999 are refused (they overflowed the millisecond arithmetic downstream).
pub fn parse_day(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(d) = parse_yyyymmdd(s) {
        return Some(d);
    }
    let date = s.split(['T', ' ']).next()?;
    if let Some((m, rest)) = date.split_once('/') {
        let (d, y) = rest.split_once('/')?;
        let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        return valid_date(y, m, d).then(|| days_from_civil(y, m, d));
    }
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    valid_date(y, m, d).then(|| days_from_civil(y, m, d))
}

fn valid_date(y: i64, m: u32, d: u32) -> bool {
    (1..=9999).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d)
}

/// One CDNOW line: customer id (leading zeros dropped), day, number of CDs, value.
pub type CdnowRow<'a> = (&'a str, i64, i64, f64);

/// Parses one CDNOW line (`customer [sample] YYYYMMDD quantity value`, whitespace
/// separated): `Ok(None)` for a blank line. With five columns the customer is the sample
/// id (as in the published summary).
pub fn parse_cdnow_line(line: &str) -> std::result::Result<Option<CdnowRow<'_>>, String> {
    let (f, k) = match ascii_columns(line) {
        Some(columns) => columns,
        None => columns(line.split_whitespace())?,
    };
    let (id, date, quantity, value) = match k {
        0 => return Ok(None),
        5 => (f[1], f[2], f[3], f[4]),
        4 => (f[0], f[1], f[2], f[3]),
        k => return Err(format!("expected 4 or 5 columns, found {k}")),
    };
    let day = parse_yyyymmdd(date).ok_or_else(|| format!("{date:?} is not a YYYYMMDD date"))?;
    let quantity: i64 = quantity
        .parse()
        .map_err(|_| format!("{quantity:?} is not a whole number"))?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    let id = id.trim_start_matches('0');
    Ok(Some((
        if id.is_empty() { "0" } else { id },
        day,
        quantity,
        value,
    )))
}

/// The columns of a line of printable ASCII separated by spaces and tabs (what CDNOW
/// files hold), found byte by byte: a line's split costs a few nanoseconds instead of
/// tens. `None` for anything else (other bytes, more than five columns), which
/// [`columns`] splits on Unicode whitespace and explains.
fn ascii_columns(line: &str) -> Option<([&str; 5], usize)> {
    let b = line.as_bytes();
    let mut f = [""; 5];
    let (mut k, mut i) = (0, 0);
    loop {
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        if i == b.len() {
            return Some((f, k));
        }
        let start = i;
        while i < b.len() && (b'!'..=b'~').contains(&b[i]) {
            i += 1;
        }
        if k == 5 || (i < b.len() && !matches!(b[i], b' ' | b'\t')) {
            return None;
        }
        // Both ends are at ASCII bytes, so on character boundaries.
        f[k] = &line[start..i];
        k += 1;
    }
}

/// Up to five columns of a CDNOW line and how many there are.
fn columns<'a>(
    parts: impl Iterator<Item = &'a str>,
) -> std::result::Result<([&'a str; 5], usize), String> {
    let mut f = [""; 5];
    let mut k = 0;
    for part in parts {
        if k == 5 {
            return Err("expected 4 or 5 columns, found more".into());
        }
        f[k] = part;
        k += 1;
    }
    Ok((f, k))
}

/// CDNOW lines, see [`parse_cdnow_line`].
pub fn parse_cdnow(text: &str) -> Result<Transactions> {
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    let mut out = TransactionsBuilder::with_capacity(lines);
    for (n, line) in text.lines().enumerate() {
        if let Some((id, day, _, value)) = parse_cdnow_line(line).map_err(|m| bad(n, m))? {
            out.push(id, day, value);
        }
    }
    Ok(out.finish())
}

/// Column names of a CSV of transactions.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    pub customer: String,
    pub date: String,
    pub value: String,
}

/// Parses comma-separated text with a header naming the columns.
pub fn parse_csv(text: &str, cols: &CsvColumns) -> Result<Transactions> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::InvalidInput("empty CSV".into()))?;
    let index: HashMap<&str, usize> = header.split(',').map(str::trim).zip(0..).collect();
    let col = |name: &str| {
        index.get(name).copied().ok_or_else(|| {
            Error::InvalidInput(format!(
                "column {name:?} not in header {header:?} (set it with --*-column)"
            ))
        })
    };
    let (ci, di, vi) = (col(&cols.customer)?, col(&cols.date)?, col(&cols.value)?);
    let mut out = TransactionsBuilder::default();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| bad(n, format!("missing column {}", i + 1)))
        };
        let customer = get(ci)?;
        if customer.is_empty() {
            return Err(bad(n, "empty customer id".into()));
        }
        let date = get(di)?;
        let day = parse_day(date).ok_or_else(|| bad(n, format!("{date:?} is not a date")))?;
        let value = get(vi)?;
        let value: f64 = value
            .parse()
            .map_err(|_| bad(n, format!("{value:?} is not a number")))?;
        out.push(customer.trim_end_matches(".0"), day, value);
    }
    Ok(out.finish())
}

fn bad(line: usize, msg: String) -> Error {
    Error::InvalidInput(format!("line {}: {msg}", line + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let d = parse_day("1997-01-01").unwrap();
        assert_eq!(parse_day("19970101"), Some(d));
        assert_eq!(parse_day("1/1/1997 8:26"), Some(d));
        assert_eq!(parse_day("1997-01-01T10:00:00Z"), Some(d));
        assert_eq!(parse_day("yesterday"), None);
        // Found by fuzzing: a year this large overflowed the arithmetic after it.
        assert_eq!(parse_day("1/1/99999999999999"), None);
        assert_eq!(parse_day("0-01-01"), None);
        let c = parse_cdnow(" 00004 0001 19970101  2   29.33\n\n 00004 0001 19970118  2   29.73\n")
            .unwrap();
        assert_eq!(
            c.to_vec(),
            vec![("1".into(), d, 29.33), ("1".into(), d + 17, 29.73)]
        );
        assert_eq!(c.ids(), ["1"]);
        assert!(parse_cdnow("1 2 3")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        // Tabs and runs of spaces split like any whitespace; a line with other
        // whitespace (a no-break space, a vertical tab) takes the general split.
        for line in [
            "4\t1\t19970101\t2\t29.33",
            "  00004   1 19970101 2 29.33  ",
            "4 1\u{a0}19970101 2 29.33",
            "4 1\u{b}19970101 2 29.33",
        ] {
            assert_eq!(
                parse_cdnow_line(line).unwrap(),
                Some(("1", d, 2, 29.33)),
                "{line:?}"
            );
        }
        assert_eq!(ascii_columns("a b\u{a0}c"), None);
        assert!(parse_cdnow_line("1 2 3 4 5 6")
            .unwrap_err()
            .contains("found more"));
        let interned: Transactions = [("b", 1, 1.0), ("a", 2, 2.0), ("b", 3, 3.0), ("", 4, 4.0)]
            .into_iter()
            .collect();
        assert_eq!(interned.ids(), ["b", "a", ""]);
        assert_eq!(
            interned.iter().collect::<Vec<_>>(),
            [("b", 1, 1.0), ("a", 2, 2.0), ("b", 3, 3.0), ("", 4, 4.0)]
        );
        let cols = CsvColumns {
            customer: "cust".into(),
            date: "when".into(),
            value: "amount".into(),
        };
        let v = parse_csv("when,cust,amount\n1997-01-01,17850.0,3.5\n", &cols).unwrap();
        assert_eq!(v.to_vec(), vec![("17850".into(), d, 3.5)]);
        assert!(parse_csv("a,b\n", &cols)
            .unwrap_err()
            .to_string()
            .contains("\"cust\""));
    }
}

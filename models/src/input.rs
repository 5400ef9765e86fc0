//! Reading transactions from text: the CDNOW format and CSV with named columns. Pure
//! parsing over text the caller read; every bad line is reported with its number.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::summary::{days_from_civil, parse_yyyymmdd};

/// A transaction: customer id, day (days since 1970-01-01), net value.
pub type Transaction = (String, i64, f64);

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
    let mut f = [""; 5];
    let mut k = 0;
    for part in line.split_whitespace() {
        if k == 5 {
            return Err("expected 4 or 5 columns, found more".into());
        }
        f[k] = part;
        k += 1;
    }
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

/// CDNOW lines, see [`parse_cdnow_line`].
pub fn parse_cdnow(text: &str) -> Result<Vec<Transaction>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some((id, day, _, value)) = parse_cdnow_line(line).map_err(|m| bad(n, m))? {
            out.push((id.to_owned(), day, value));
        }
    }
    Ok(out)
}

/// Column names of a CSV of transactions.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    pub customer: String,
    pub date: String,
    pub value: String,
}

/// Parses comma-separated text with a header naming the columns.
pub fn parse_csv(text: &str, cols: &CsvColumns) -> Result<Vec<Transaction>> {
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
    let mut out = Vec::new();
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
        out.push((customer.trim_end_matches(".0").to_owned(), day, value));
    }
    Ok(out)
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
        assert_eq!(c, vec![("1".into(), d, 29.33), ("1".into(), d + 17, 29.73)]);
        assert!(parse_cdnow("1 2 3")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        let cols = CsvColumns {
            customer: "cust".into(),
            date: "when".into(),
            value: "amount".into(),
        };
        let v = parse_csv("when,cust,amount\n1997-01-01,17850.0,3.5\n", &cols).unwrap();
        assert_eq!(v, vec![("17850".into(), d, 3.5)]);
        assert!(parse_csv("a,b\n", &cols)
            .unwrap_err()
            .to_string()
            .contains("\"cust\""));
    }
}

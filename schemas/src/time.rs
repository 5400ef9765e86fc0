//! Timestamps: epoch milliseconds inside, RFC 3339 or epoch milliseconds in JSON.

use chrono::{DateTime, SecondsFormat, Utc};

/// Milliseconds in one day, the feature time unit.
pub const DAY_MS: i64 = 86_400_000;

/// Parses an RFC 3339 timestamp into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Parses an instant given as epoch milliseconds, an RFC 3339 timestamp, or a date
/// `YYYY-MM-DD`, which means the end of that day in UTC (its last millisecond), so
/// "as of 1997-09-30" includes everything of that day.
pub fn parse_instant(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| parse_rfc3339(s))
        .or_else(|| {
            let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            let start = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
            Some(start + DAY_MS - 1)
        })
}

/// Formats epoch milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn format_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Current wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Serde adapter: epoch millis written as RFC 3339, read from RFC 3339 or a number.
pub mod serde_ms {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = i64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
                i64::try_from(v).map_err(|_| E::custom("timestamp out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
                super::parse_rfc3339(v).ok_or_else(|| E::custom("not an RFC 3339 timestamp"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_epoch_ms_rfc3339_or_the_end_of_a_day() {
        assert_eq!(parse_instant("875577600000"), Some(875_577_600_000));
        assert_eq!(parse_instant("1997-09-30T00:00:00Z"), Some(875_577_600_000));
        // 1997-09-30 is day 10134; its end is the millisecond before day 10135.
        assert_eq!(parse_instant("1997-09-30"), Some(10_135 * DAY_MS - 1));
        assert_eq!(parse_instant("1997-02-30"), None);
        assert_eq!(parse_instant("yesterday"), None);
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_rfc3339("2026-11-25T14:00:00Z").unwrap();
        assert_eq!(ms, 1_795_615_200_000);
        assert_eq!(format_rfc3339(ms), "2026-11-25T14:00:00.000Z");
        assert_eq!(parse_rfc3339("2026-11-25T15:00:00+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

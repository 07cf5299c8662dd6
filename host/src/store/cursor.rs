//! Cursor types and the platform's monotonicity rules: timestamps and numeric
//! ids may only move forward (`>=`), opaque tokens only change (`!=`).
//!
//! A cursor is also a promise about the future: a timestamp beyond now (plus
//! the operator's skew) would make every later run fetch nothing, so it is
//! refused, and numeric ids must be canonical integers so that no two
//! spellings of one value (`5`, `+5`, ` 5 `, `5.0`) or an out-of-range one
//! (`1e300`) can slip past the comparison.

use chrono::{DateTime, Utc};
use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

/// Longest cursor value accepted, in bytes.
pub const MAX_CURSOR_BYTES: usize = 4096;

/// How far past the host's clock a timestamp cursor may point by default.
pub const DEFAULT_MAX_CURSOR_SKEW: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorType {
    TimestampUtc,
    NumericId,
    OpaqueToken,
}

impl CursorType {
    pub fn as_str(self) -> &'static str {
        match self {
            CursorType::TimestampUtc => "timestamp_utc",
            CursorType::NumericId => "numeric_id",
            CursorType::OpaqueToken => "opaque_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "timestamp_utc" => Some(CursorType::TimestampUtc),
            "numeric_id" => Some(CursorType::NumericId),
            "opaque_token" => Some(CursorType::OpaqueToken),
            _ => None,
        }
    }

    /// Checks that `value` is well formed for this type and, for a timestamp,
    /// no later than now + `max_skew`.
    pub fn validate(self, value: &str, max_skew: Duration) -> Result<(), String> {
        CursorValue::parse(self, value)?.check_not_future(value, max_skew)
    }

    /// Whether committing `new` after `old` moves the cursor forward by the
    /// platform's rules. `Err` when `new` is malformed or too far in the future.
    pub fn advances(self, old: Option<&str>, new: &str, max_skew: Duration) -> Result<bool, String> {
        let new_value = CursorValue::parse(self, new)?;
        new_value.check_not_future(new, max_skew)?;
        let Some(old) = old else { return Ok(true) };
        // A stored value that no longer parses cannot block progress.
        let Ok(old_value) = CursorValue::parse(self, old) else {
            return Ok(true);
        };
        Ok(match (old_value, new_value) {
            (CursorValue::Opaque(a), CursorValue::Opaque(b)) => a != b,
            (a, b) => b.partial_cmp(&a).is_some_and(|o| o != Ordering::Less),
        })
    }
}

impl fmt::Display for CursorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum CursorValue {
    Timestamp(DateTime<Utc>),
    Integer(i64),
    Opaque(String),
}

impl CursorValue {
    fn parse(cursor_type: CursorType, value: &str) -> Result<Self, String> {
        if value.len() > MAX_CURSOR_BYTES {
            return Err(format!(
                "a cursor value is at most {MAX_CURSOR_BYTES} bytes, this one is {}",
                value.len()
            ));
        }
        match cursor_type {
            CursorType::TimestampUtc => DateTime::parse_from_rfc3339(value)
                .map(|t| CursorValue::Timestamp(t.with_timezone(&Utc)))
                .map_err(|e| format!("{value:?} is not an RFC 3339 timestamp such as 2024-01-01T00:00:00Z ({e})")),
            CursorType::NumericId => match value.parse::<i64>() {
                // Canonical only: one spelling per value ("5", never "+5", "05" or "-0").
                Ok(i) if i.to_string() == value => Ok(CursorValue::Integer(i)),
                _ => Err(format!(
                    "{value:?} is not a numeric id: a whole number written plainly, such as 42, \
                     from {} to {}",
                    i64::MIN,
                    i64::MAX
                )),
            },
            CursorType::OpaqueToken if value.is_empty() => Err("an opaque token must not be empty".into()),
            // PostgreSQL cannot store one and SQLite can: one rule for both engines.
            CursorType::OpaqueToken if value.contains('\0') => {
                Err("an opaque token must not hold a NUL byte (U+0000): the store does not keep one".into())
            }
            CursorType::OpaqueToken => Ok(CursorValue::Opaque(value.to_owned())),
        }
    }

    /// A timestamp may not point past the host's clock by more than `max_skew`.
    fn check_not_future(&self, value: &str, max_skew: Duration) -> Result<(), String> {
        let CursorValue::Timestamp(at) = self else {
            return Ok(());
        };
        let latest = Utc::now() + chrono::Duration::from_std(max_skew).unwrap_or(chrono::Duration::MAX);
        if *at > latest {
            return Err(format!(
                "{value:?} is in the future (after {}, now + {} of allowed clock skew); a cursor \
                 there would make every later run fetch nothing (--max-cursor-skew)",
                latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(max_skew)
            ));
        }
        Ok(())
    }

    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (CursorValue::Timestamp(a), CursorValue::Timestamp(b)) => a.partial_cmp(b),
            (CursorValue::Integer(a), CursorValue::Integer(b)) => a.partial_cmp(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CursorType::*;
    use super::DEFAULT_MAX_CURSOR_SKEW as SKEW;
    use std::time::Duration;

    #[test]
    fn timestamps_compare_as_instants_not_strings() {
        // 10:00+02:00 is 08:00Z: earlier, although the string sorts later.
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T10:00:00+02:00", SKEW),
            Ok(false)
        );
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T09:00:00.5Z", SKEW),
            Ok(true)
        );
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T11:00:00+02:00", SKEW),
            Ok(true)
        );
    }

    #[test]
    fn equal_values_advance_for_ordered_types() {
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T09:00:00Z", SKEW),
            Ok(true)
        );
        assert_eq!(NumericId.advances(Some("42"), "42", SKEW), Ok(true));
        assert_eq!(OpaqueToken.advances(Some("abc"), "abc", SKEW), Ok(false));
        assert_eq!(OpaqueToken.advances(Some("abc"), "abd", SKEW), Ok(true));
    }

    #[test]
    fn numeric_ids_compare_as_numbers() {
        assert_eq!(NumericId.advances(Some("9"), "10", SKEW), Ok(true));
        assert_eq!(NumericId.advances(Some("10"), "9", SKEW), Ok(false));
        assert_eq!(
            NumericId.advances(Some("9223372036854775807"), "9223372036854775806", SKEW),
            Ok(false)
        );
        assert_eq!(NumericId.advances(Some("-5"), "-4", SKEW), Ok(true));
        // A stored value from before the canonical rule does not block progress.
        assert_eq!(NumericId.advances(Some("1.5"), "2", SKEW), Ok(true));
    }

    #[test]
    fn numeric_ids_must_be_canonical_integers_in_range() {
        for bad in [
            "1e300",
            "+5",
            " 5 ",
            "5 ",
            "-0",
            "05",
            "1.5",
            "0x10",
            "",
            "-",
            "99999999999999999999999999999999999999999999",
        ] {
            let e = NumericId.validate(bad, SKEW).unwrap_err();
            assert!(e.contains("is not a numeric id"), "{bad:?}: {e}");
        }
        for good in ["0", "5", "-5", "9223372036854775807", "-9223372036854775808"] {
            assert_eq!(NumericId.validate(good, SKEW), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn far_future_timestamps_are_refused() {
        for poison in [
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "2999-01-01T00:00:00Z",
        ] {
            let e = TimestampUtc.validate(poison, SKEW).unwrap_err();
            assert!(e.contains("is in the future"), "{poison}: {e}");
            assert!(TimestampUtc.advances(None, poison, SKEW).is_err());
        }
        let soon = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
        assert_eq!(TimestampUtc.validate(&soon, SKEW), Ok(()), "within the skew");
        assert!(
            TimestampUtc.validate(&soon, Duration::from_secs(60)).is_err(),
            "past a tighter skew"
        );
        assert!(
            TimestampUtc.validate(" 2024-05-01T09:00:00Z", SKEW).is_err(),
            "no padding"
        );
        assert!(OpaqueToken.validate(&"x".repeat(5000), SKEW).is_err(), "bounded length");
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(TimestampUtc.validate("yesterday", SKEW).is_err());
        assert!(TimestampUtc.validate("2024-05-01 09:00:00", SKEW).is_err());
        assert!(NumericId.validate("12a", SKEW).is_err());
        assert!(NumericId.validate("NaN", SKEW).is_err());
        assert!(OpaqueToken.validate("", SKEW).is_err());
        assert!(OpaqueToken.validate("tok\0en", SKEW).unwrap_err().contains("NUL byte"));
        assert_eq!(TimestampUtc.advances(None, "2024-05-01T09:00:00Z", SKEW), Ok(true));
        assert!(TimestampUtc.advances(None, "nope", SKEW).is_err());
    }
}

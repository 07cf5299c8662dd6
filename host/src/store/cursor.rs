//! Cursor types and the platform's monotonicity rules: timestamps and numeric
//! ids may only move forward (`>=`), opaque tokens only change (`!=`).

use chrono::{DateTime, Utc};
use std::cmp::Ordering;
use std::fmt;

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

    /// Checks that `value` is well formed for this type.
    pub fn validate(self, value: &str) -> Result<(), String> {
        CursorValue::parse(self, value).map(|_| ())
    }

    /// Whether committing `new` after `old` moves the cursor forward by the
    /// platform's rules. `Err` when `new` is malformed.
    pub fn advances(self, old: Option<&str>, new: &str) -> Result<bool, String> {
        let new_value = CursorValue::parse(self, new)?;
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

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum CursorValue {
    Timestamp(DateTime<Utc>),
    Integer(i128),
    Decimal(f64),
    Opaque(String),
}

impl CursorValue {
    fn parse(cursor_type: CursorType, value: &str) -> Result<Self, String> {
        match cursor_type {
            CursorType::TimestampUtc => DateTime::parse_from_rfc3339(value.trim())
                .map(|t| CursorValue::Timestamp(t.with_timezone(&Utc)))
                .map_err(|e| format!("{value:?} is not an RFC 3339 timestamp such as 2024-01-01T00:00:00Z ({e})")),
            CursorType::NumericId => {
                let v = value.trim();
                if let Ok(i) = v.parse::<i128>() {
                    Ok(CursorValue::Integer(i))
                } else {
                    match v.parse::<f64>() {
                        Ok(f) if f.is_finite() => Ok(CursorValue::Decimal(f)),
                        _ => Err(format!("{value:?} is not a number")),
                    }
                }
            }
            CursorType::OpaqueToken if value.is_empty() => Err("an opaque token must not be empty".into()),
            CursorType::OpaqueToken => Ok(CursorValue::Opaque(value.to_owned())),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            CursorValue::Integer(i) => Some(*i as f64),
            CursorValue::Decimal(f) => Some(*f),
            _ => None,
        }
    }

    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (CursorValue::Timestamp(a), CursorValue::Timestamp(b)) => a.partial_cmp(b),
            (CursorValue::Integer(a), CursorValue::Integer(b)) => a.partial_cmp(b),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CursorType::*;

    #[test]
    fn timestamps_compare_as_instants_not_strings() {
        // 10:00+02:00 is 08:00Z: earlier, although the string sorts later.
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T10:00:00+02:00"),
            Ok(false)
        );
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T09:00:00.5Z"),
            Ok(true)
        );
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T11:00:00+02:00"),
            Ok(true)
        );
    }

    #[test]
    fn equal_values_advance_for_ordered_types() {
        assert_eq!(
            TimestampUtc.advances(Some("2024-05-01T09:00:00Z"), "2024-05-01T09:00:00Z"),
            Ok(true)
        );
        assert_eq!(NumericId.advances(Some("42"), "42"), Ok(true));
        assert_eq!(OpaqueToken.advances(Some("abc"), "abc"), Ok(false));
        assert_eq!(OpaqueToken.advances(Some("abc"), "abd"), Ok(true));
    }

    #[test]
    fn numeric_ids_compare_as_numbers() {
        assert_eq!(NumericId.advances(Some("9"), "10"), Ok(true));
        assert_eq!(NumericId.advances(Some("10"), "9"), Ok(false));
        assert_eq!(
            NumericId.advances(
                Some("170141183460469231731687303715884105727"),
                "170141183460469231731687303715884105726"
            ),
            Ok(false)
        );
        assert_eq!(NumericId.advances(Some("1.5"), "2"), Ok(true));
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(TimestampUtc.validate("yesterday").is_err());
        assert!(TimestampUtc.validate("2024-05-01 09:00:00").is_err());
        assert!(NumericId.validate("12a").is_err());
        assert!(NumericId.validate("NaN").is_err());
        assert!(OpaqueToken.validate("").is_err());
        assert_eq!(TimestampUtc.advances(None, "2024-05-01T09:00:00Z"), Ok(true));
        assert!(TimestampUtc.advances(None, "nope").is_err());
    }
}

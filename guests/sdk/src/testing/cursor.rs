//! The host's cursor rules (`host/src/store/cursor.rs`), one place each:
//! what a value of each cursor type may look like, and when committing one
//! moves the cursor forward (timestamps and numeric ids `>=`, opaque tokens `!=`).

use crate::delta_state::CursorType;
use chrono::{DateTime, Utc};

/// Longest cursor value the host accepts, in bytes.
pub const MAX_CURSOR_BYTES: usize = 4096;

/// How far past now a timestamp cursor may point (the host's `--max-cursor-skew` default).
pub const MAX_CURSOR_SKEW: chrono::Duration = chrono::Duration::hours(1);

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Timestamp(DateTime<Utc>),
    Integer(i64),
    Opaque(String),
}

/// The host's name for a cursor type, as messages and `state show` write it.
pub fn name(cursor_type: CursorType) -> &'static str {
    match cursor_type {
        CursorType::TimestampUtc => "timestamp_utc",
        CursorType::NumericId => "numeric_id",
        CursorType::OpaqueToken => "opaque_token",
    }
}

fn parse(cursor_type: CursorType, value: &str) -> Result<Value, String> {
    if value.len() > MAX_CURSOR_BYTES {
        return Err(format!(
            "a cursor value is at most {MAX_CURSOR_BYTES} bytes, this one is {}",
            value.len()
        ));
    }
    match cursor_type {
        CursorType::TimestampUtc => DateTime::parse_from_rfc3339(value)
            .map(|t| Value::Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("{value:?} is not an RFC 3339 timestamp such as 2024-01-01T00:00:00Z ({e})")),
        CursorType::NumericId => match value.parse::<i64>() {
            // Canonical only: one spelling per value ("5", never "+5", "05" or "-0").
            Ok(i) if i.to_string() == value => Ok(Value::Integer(i)),
            _ => Err(format!(
                "{value:?} is not a numeric id: a whole number written plainly, such as 42, from {} to {}",
                i64::MIN,
                i64::MAX
            )),
        },
        CursorType::OpaqueToken if value.is_empty() => Err("an opaque token must not be empty".into()),
        CursorType::OpaqueToken => Ok(Value::Opaque(value.to_owned())),
    }
}

/// A timestamp may not point past now by more than the skew.
fn check_not_future(value: &Value, shown: &str) -> Result<(), String> {
    let Value::Timestamp(at) = value else { return Ok(()) };
    let latest = Utc::now() + MAX_CURSOR_SKEW;
    if *at > latest {
        return Err(format!(
            "{shown:?} is in the future (after {}, now + 1h of allowed clock skew); a cursor there would \
             make every later run fetch nothing",
            latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(())
}

/// Whether `value` is a valid cursor of this type now (what `set-new-cursor` checks).
pub fn validate(cursor_type: CursorType, value: &str) -> Result<(), String> {
    check_not_future(&parse(cursor_type, value)?, value)
}

/// Whether committing `new` after `old` moves the cursor forward (what `complete` checks).
pub fn advances(cursor_type: CursorType, old: Option<&str>, new: &str) -> Result<bool, String> {
    let new_value = parse(cursor_type, new)?;
    check_not_future(&new_value, new)?;
    let Some(old) = old else { return Ok(true) };
    // A stored value that no longer parses cannot block progress.
    let Ok(old_value) = parse(cursor_type, old) else {
        return Ok(true);
    };
    Ok(match (old_value, new_value) {
        (Value::Opaque(a), Value::Opaque(b)) => a != b,
        (Value::Timestamp(a), Value::Timestamp(b)) => b >= a,
        (Value::Integer(a), Value::Integer(b)) => b >= a,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CursorType::*;

    #[test]
    fn the_rules_are_the_hosts() {
        assert!(validate(NumericId, "42").is_ok());
        for bad in ["+42", "042", "42.0", "1e3", " 42", "-0", ""] {
            assert!(validate(NumericId, bad).is_err(), "{bad:?}");
        }
        assert!(validate(TimestampUtc, "2024-05-01T09:00:00+02:00").is_ok());
        assert!(validate(TimestampUtc, "yesterday").is_err());
        assert!(
            validate(TimestampUtc, "2999-01-01T00:00:00Z")
                .unwrap_err()
                .contains("in the future")
        );
        assert!(validate(OpaqueToken, "").is_err());
        assert!(validate(OpaqueToken, &"x".repeat(MAX_CURSOR_BYTES + 1)).is_err());

        assert_eq!(advances(NumericId, Some("9"), "10"), Ok(true), "as numbers, not text");
        assert_eq!(advances(NumericId, Some("10"), "10"), Ok(true));
        assert_eq!(advances(NumericId, Some("10"), "9"), Ok(false));
        assert_eq!(
            advances(TimestampUtc, Some("2024-05-01T10:00:00Z"), "2024-05-01T11:30:00+02:00"),
            Ok(false),
            "as instants, not text"
        );
        assert_eq!(advances(OpaqueToken, Some("b"), "a"), Ok(true));
        assert_eq!(advances(OpaqueToken, Some("a"), "a"), Ok(false));
        assert_eq!(advances(NumericId, Some("not a number"), "1"), Ok(true));
    }
}

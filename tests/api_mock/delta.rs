//! The delta-state service: one `DeltaStreamState` row per (customer, connector, stream),
//! begin / complete / fail / reset as the platform docs describe them, and the audit log.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// (customer, connector_name, stream_name)
pub type StreamKey = (String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorType {
    TimestampUtc,
    NumericId,
    OpaqueToken,
}

impl CursorType {
    fn parse(value: Option<&str>) -> Result<Self, Refusal> {
        match value {
            Some("timestamp_utc") => Ok(Self::TimestampUtc),
            Some("numeric_id") => Ok(Self::NumericId),
            Some("opaque_token") => Ok(Self::OpaqueToken),
            _ => Err(Refusal::unprocessable(
                "INVALID_CURSOR_TYPE",
                "cursor_type must be one of timestamp_utc, numeric_id, opaque_token".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Idle,
    Running,
    Succeeded,
    Failed,
}

/// The §6.3 schema; every field is always present (null where unset). Times are RFC 3339 UTC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaStreamState {
    pub connector_name: String,
    pub stream_name: String,
    pub cursor_type: Option<CursorType>,
    pub committed_cursor_value: Option<String>,
    pub committed_at_utc: Option<String>,
    pub status: Status,
    pub started_at_utc: Option<String>,
    pub completed_at_utc: Option<String>,
    pub records_processed: Option<u64>,
    pub error_summary: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub updated_at_utc: Option<String>,
    pub updated_by: Option<String>,
}

impl DeltaStreamState {
    /// What GET answers for a stream that never began (and what begin starts from).
    pub fn idle(connector: &str, stream: &str) -> Self {
        Self {
            connector_name: connector.to_owned(),
            stream_name: stream.to_owned(),
            cursor_type: None,
            committed_cursor_value: None,
            committed_at_utc: None,
            status: Status::Idle,
            started_at_utc: None,
            completed_at_utc: None,
            records_processed: None,
            error_summary: None,
            metadata: None,
            updated_at_utc: None,
            updated_by: None,
        }
    }
}

/// One `delta_audit_log` row: cursor advances and resets (never failures).
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub customer: String,
    pub connector_name: String,
    pub stream_name: String,
    pub event_type: &'static str,
    pub cursor_type: Option<CursorType>,
    pub old_cursor_value: Option<String>,
    pub new_cursor_value: Option<String>,
    pub api_user: String,
    pub reason: Option<String>,
    pub created_at_utc: String,
}

/// An answer other than 200: status, and the `code` 422s carry.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: Option<&'static str>,
    pub message: String,
}

impl Refusal {
    fn unprocessable(code: &'static str, message: String) -> Self {
        Self {
            status: 422,
            code: Some(code),
            message,
        }
    }

    fn not_found() -> Self {
        Self {
            status: 404,
            code: None,
            message: "stream not found: call /begin first".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    cursor_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    new_cursor_value: String,
    records_processed: Option<u64>,
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    error_summary: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    new_cursor_value: String,
    reason: Option<String>,
    cursor_type: Option<String>,
}

/// The delta-state tables of every customer.
#[derive(Default)]
pub struct Streams {
    pub rows: BTreeMap<StreamKey, DeltaStreamState>,
    pub audit: Vec<AuditRow>,
}

pub fn now() -> String {
    stamp(Utc::now())
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Streams {
    pub fn get(&self, key: &StreamKey) -> DeltaStreamState {
        self.rows
            .get(key)
            .cloned()
            .unwrap_or_else(|| DeltaStreamState::idle(&key.1, &key.2))
    }

    /// Creates the row when missing; overwrites the run-state fields in place. Never refuses a `running` row.
    pub fn begin(&mut self, key: &StreamKey, body: BeginBody, user: &str) -> Result<DeltaStreamState, Refusal> {
        let cursor_type = CursorType::parse(body.cursor_type.as_deref())?;
        let now = now();
        let row = self
            .rows
            .entry(key.clone())
            .or_insert_with(|| DeltaStreamState::idle(&key.1, &key.2));
        row.cursor_type = Some(cursor_type);
        row.status = Status::Running;
        row.started_at_utc = Some(now.clone());
        row.completed_at_utc = None;
        row.records_processed = None;
        row.error_summary = None;
        row.updated_at_utc = Some(now);
        row.updated_by = Some(user.to_owned());
        Ok(row.clone())
    }

    /// Moves the cursor only forward (per the stored `cursor_type`) and audits the advance.
    pub fn complete(&mut self, key: &StreamKey, body: CompleteBody, user: &str) -> Result<DeltaStreamState, Refusal> {
        let row = self.rows.get_mut(key).ok_or_else(Refusal::not_found)?;
        check_advance(
            row.cursor_type,
            row.committed_cursor_value.as_deref(),
            &body.new_cursor_value,
        )?;
        let now = now();
        let old = row.committed_cursor_value.replace(body.new_cursor_value.clone());
        row.committed_at_utc = Some(now.clone());
        row.status = Status::Succeeded;
        row.completed_at_utc = Some(now.clone());
        row.records_processed = body.records_processed;
        row.metadata = body.metadata;
        row.updated_at_utc = Some(now.clone());
        row.updated_by = Some(user.to_owned());
        let row = row.clone();
        self.audit.push(AuditRow {
            customer: key.0.clone(),
            connector_name: key.1.clone(),
            stream_name: key.2.clone(),
            event_type: "cursor_advance",
            cursor_type: row.cursor_type,
            old_cursor_value: old,
            new_cursor_value: Some(body.new_cursor_value),
            api_user: user.to_owned(),
            reason: None,
            created_at_utc: now,
        });
        Ok(row)
    }

    /// Marks the run failed; the cursor stays, so the next begin hands out the same lower bound.
    pub fn fail(&mut self, key: &StreamKey, body: FailBody, user: &str) -> Result<DeltaStreamState, Refusal> {
        let row = self.rows.get_mut(key).ok_or_else(Refusal::not_found)?;
        row.status = Status::Failed;
        row.error_summary = Some(body.error_summary);
        row.updated_at_utc = Some(now());
        row.updated_by = Some(user.to_owned());
        Ok(row.clone())
    }

    /// Sets the cursor regardless of monotonicity (creating the row if missing) and audits it.
    pub fn reset(&mut self, key: &StreamKey, body: ResetBody, user: &str) -> Result<DeltaStreamState, Refusal> {
        let reason = body
            .reason
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| Refusal::unprocessable("REASON_REQUIRED", "reason is required for a cursor reset".into()))?;
        let given_type = match body.cursor_type.as_deref() {
            None => None,
            Some(t) => Some(CursorType::parse(Some(t))?),
        };
        let stored_type = self.rows.get(key).and_then(|r| r.cursor_type);
        let cursor_type = given_type.or(stored_type);
        well_formed(cursor_type, &body.new_cursor_value)?;
        let now = now();
        let row = self
            .rows
            .entry(key.clone())
            .or_insert_with(|| DeltaStreamState::idle(&key.1, &key.2));
        let old = row.committed_cursor_value.replace(body.new_cursor_value.clone());
        row.cursor_type = cursor_type;
        row.committed_at_utc = Some(now.clone());
        row.status = Status::Idle;
        row.updated_at_utc = Some(now.clone());
        row.updated_by = Some(user.to_owned());
        let row = row.clone();
        self.audit.push(AuditRow {
            customer: key.0.clone(),
            connector_name: key.1.clone(),
            stream_name: key.2.clone(),
            event_type: "cursor_reset",
            cursor_type,
            old_cursor_value: old,
            new_cursor_value: Some(body.new_cursor_value),
            api_user: user.to_owned(),
            reason: Some(reason),
            created_at_utc: now,
        });
        Ok(row)
    }
}

/// A cursor value this type can compare: 422 `INVALID_CURSOR` otherwise.
fn well_formed(cursor_type: Option<CursorType>, value: &str) -> Result<(), Refusal> {
    let invalid = |what: &str| Refusal::unprocessable("INVALID_CURSOR", format!("new_cursor_value {value:?} {what}"));
    match cursor_type {
        _ if value.is_empty() => Err(invalid("is empty")),
        Some(CursorType::TimestampUtc) if DateTime::parse_from_rfc3339(value).is_err() => {
            Err(invalid("is not an RFC 3339 timestamp (cursor_type timestamp_utc)"))
        }
        Some(CursorType::NumericId) if value.parse::<i128>().is_err() => {
            Err(invalid("is not an integer (cursor_type numeric_id)"))
        }
        _ => Ok(()),
    }
}

/// The monotonicity rules of complete. A previous value the type cannot read
/// (the stream changed its cursor_type at begin) does not block the advance.
fn check_advance(cursor_type: Option<CursorType>, previous: Option<&str>, new: &str) -> Result<(), Refusal> {
    well_formed(cursor_type, new)?;
    let Some(previous) = previous else {
        return Ok(());
    };
    let regressed = match cursor_type {
        Some(CursorType::TimestampUtc) => match (
            DateTime::parse_from_rfc3339(previous),
            DateTime::parse_from_rfc3339(new),
        ) {
            (Ok(p), Ok(n)) => n < p,
            _ => false,
        },
        Some(CursorType::NumericId) => match (previous.parse::<i128>(), new.parse::<i128>()) {
            (Ok(p), Ok(n)) => n < p,
            _ => false,
        },
        Some(CursorType::OpaqueToken) => new == previous,
        None => false,
    };
    if regressed {
        Err(Refusal::unprocessable(
            "CURSOR_REGRESSION",
            format!("new_cursor_value {new:?} does not advance past the committed cursor {previous:?}"),
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), Refusal>) -> Option<&'static str> {
        r.err().and_then(|r| r.code)
    }

    #[test]
    fn timestamps_compare_as_instants_not_text() {
        let ts = Some(CursorType::TimestampUtc);
        // 12:30Z sorts before 12:00Z as text; 11:30Z after it.
        assert_eq!(
            code(check_advance(
                ts,
                Some("2024-05-01T12:00:00Z"),
                "2024-05-01T11:30:00-01:00"
            )),
            None
        );
        assert_eq!(
            code(check_advance(
                ts,
                Some("2024-05-01T12:00:00Z"),
                "2024-05-01T12:30:00+01:00"
            )),
            Some("CURSOR_REGRESSION")
        );
        assert_eq!(
            code(check_advance(ts, Some("2024-05-01T12:00:00Z"), "2024-05-01T11:59:59Z")),
            Some("CURSOR_REGRESSION")
        );
        assert_eq!(code(check_advance(ts, None, "yesterday")), Some("INVALID_CURSOR"));
    }

    #[test]
    fn numeric_ids_compare_as_numbers() {
        let n = Some(CursorType::NumericId);
        assert_eq!(code(check_advance(n, Some("9"), "10")), None);
        assert_eq!(code(check_advance(n, Some("10"), "10")), None);
        assert_eq!(code(check_advance(n, Some("10"), "9")), Some("CURSOR_REGRESSION"));
        assert_eq!(code(check_advance(n, Some("10"), "1e3")), Some("INVALID_CURSOR"));
    }

    #[test]
    fn an_opaque_token_refuses_only_its_own_value() {
        let o = Some(CursorType::OpaqueToken);
        assert_eq!(code(check_advance(o, Some("b"), "a")), None);
        assert_eq!(code(check_advance(o, Some("b"), "b")), Some("CURSOR_REGRESSION"));
    }
}

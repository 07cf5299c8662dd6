//! Rows a connector set aside (`delta-run.reject`): the raw row and why, kept
//! once per distinct row and stream with how often and when it was seen, so
//! one bad row in the source does not fail every run until someone fixes it.

use super::delta::StreamFilter;
use super::schema::now_utc;
use super::sql::{Conn, params, transaction};
use super::{StoreError, StreamKey};
use serde::Serialize;

/// A NUL byte written `\u0000`: PostgreSQL cannot store one and SQLite can,
/// and a rejected row is kept as evidence, so both engines keep its content
/// with the NUL spelled out (as JSON writes it: a row that was JSON stays JSON).
pub fn escape_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\\u0000").into()
    } else {
        text.into()
    }
}

/// Records a rejected row for the stream of run `run_id`.
pub async fn reject(conn: &mut Conn, key: &StreamKey, run_id: &str, row: &str, reason: &str) -> Result<(), StoreError> {
    use sha2::Digest;
    let (row, reason) = (&*escape_nul(row), &*escape_nul(reason));
    let row_sha256: String = sha2::Sha256::digest(row.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let now = now_utc();
    transaction(conn, async |tx: &mut Conn| {
        tx.execute(
            "INSERT INTO rejected_record
                 (customer_number, connector_name, stream_name, row_sha256, row, reason, first_rejected_at,
                  last_rejected_at, last_run_id, times)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, 1)
             ON CONFLICT (customer_number, connector_name, stream_name, row_sha256) DO UPDATE SET
                 reason = excluded.reason, last_rejected_at = excluded.last_rejected_at,
                 last_run_id = excluded.last_run_id, times = rejected_record.times + 1",
            params![
                &key.customer_number,
                &key.connector_name,
                &key.stream_name,
                &row_sha256,
                row,
                reason,
                &now,
                run_id
            ],
        )
        .await?;
        tx.execute(
            "UPDATE delta_run SET rejected = COALESCE(rejected, 0) + 1 WHERE run_id = ?1",
            params![run_id],
        )
        .await?;
        Ok(())
    })
    .await
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedRecord {
    pub customer_number: String,
    pub connector_name: String,
    pub stream_name: String,
    pub row: String,
    pub reason: String,
    pub first_rejected_at: String,
    pub last_rejected_at: String,
    pub last_run_id: String,
    pub times: i64,
}

/// Rejected rows matching `filter`, the most recently seen first.
pub async fn list_rejected(
    conn: &mut Conn,
    filter: &StreamFilter,
    limit: usize,
) -> Result<Vec<RejectedRecord>, StoreError> {
    let sql = format!(
        "SELECT customer_number, connector_name, stream_name, row, reason, first_rejected_at, last_rejected_at,
                last_run_id, times
         FROM rejected_record
         WHERE {}
         ORDER BY last_rejected_at DESC, row_sha256 LIMIT ?4",
        super::delta::STREAM_FILTER
    );
    let rows = filter.list(conn, &sql, limit).await?;
    Ok(rows
        .iter()
        .map(|r| RejectedRecord {
            customer_number: r.text(0),
            connector_name: r.text(1),
            stream_name: r.text(2),
            row: r.text(3),
            reason: r.text(4),
            first_rejected_at: r.text(5),
            last_rejected_at: r.text(6),
            last_run_id: r.text(7),
            times: r.int(8),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Stop;
    use crate::store::owner::RunOwner;
    use crate::store::{CursorType, delta};
    use std::time::Duration;

    async fn a_row_rejected_twice_is_kept_once_and_counted(conn: &mut Conn) {
        let key = StreamKey {
            customer_number: "c1".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        };
        let owner = RunOwner::this_process("sha", "test", Duration::from_secs(60));
        delta::begin_run(conn, &key, CursorType::TimestampUtc, &owner, &Stop::never())
            .await
            .unwrap();
        let a1 = r#"{"number":"A1","active":"yes"}"#;
        reject(conn, &key, &owner.run_id, a1, "active is not a boolean")
            .await
            .unwrap();
        reject(conn, &key, &owner.run_id, a1, "active is \"yes\"")
            .await
            .unwrap();
        reject(conn, &key, &owner.run_id, r#"{"number":"A2"}"#, "name is missing")
            .await
            .unwrap();
        let rows = list_rejected(conn, &StreamFilter::default(), 10).await.unwrap();
        assert_eq!(rows.len(), 2);
        let a1 = rows.iter().find(|r| r.row.contains("A1")).unwrap();
        assert_eq!((a1.times, a1.reason.as_str()), (2, "active is \"yes\""));
        let counted = conn
            .query_opt(
                "SELECT rejected FROM delta_run WHERE run_id = ?1",
                params![&owner.run_id],
            )
            .await
            .unwrap()
            .unwrap()
            .int(0);
        assert_eq!(counted, 3);
    }

    async fn a_nul_in_a_rejected_row_is_kept_escaped(conn: &mut Conn) {
        let key = StreamKey {
            customer_number: "c1".into(),
            connector_name: "acme_eu".into(),
            stream_name: "suppliers".into(),
        };
        let owner = RunOwner::this_process("sha", "test", Duration::from_secs(60));
        delta::begin_run(conn, &key, CursorType::TimestampUtc, &owner, &Stop::never())
            .await
            .unwrap();
        reject(conn, &key, &owner.run_id, "{\"name\": \"a\0b\"}", "a NUL\0")
            .await
            .unwrap();
        let rows = list_rejected(conn, &StreamFilter::default(), 10).await.unwrap();
        assert_eq!(rows[0].row, r#"{"name": "a\u0000b"}"#);
        assert_eq!(rows[0].reason, r"a NUL\u0000");
        let row: serde_json::Value = serde_json::from_str(&rows[0].row).unwrap();
        assert_eq!(row["name"], "a\0b", "JSON that was JSON reads back as it was");
    }

    crate::store::testing::on_both_engines!(
        a_row_rejected_twice_is_kept_once_and_counted,
        a_nul_in_a_rejected_row_is_kept_escaped
    );
}

//! Read-only views of the store for operators: `state show` and
//! `suppliers export`. They open the database read-only, so they are safe
//! beside a running job (WAL readers never block the writer).

use crate::store::delta::{Reset, StreamFilter, list_audit, list_runs, list_states, reset_cursor};
use crate::store::schema::{open, open_read_only};
use crate::store::{OpenError, StoreError, StreamKey};
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// Why an admin command failed: an unusable database is bad input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("failed to read the database: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("failed to write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("failed to write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The operator asked for something the state does not allow (exit 2).
    #[error("{0}")]
    Refused(String),
}

impl AdminError {
    pub fn is_broken_pipe(&self) -> bool {
        let io = match self {
            AdminError::Output(e) => Some(e),
            AdminError::Csv(e) => match e.kind() {
                csv::ErrorKind::Io(e) => Some(e),
                _ => None,
            },
            _ => None,
        };
        io.is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// `state show`: the platform's DeltaStreamState fields per stream, and who
/// holds a running stream's lease.
pub fn state_show(db: &Path, filter: &StreamFilter, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    let conn = open_read_only(db)?;
    let rows = list_states(&conn, filter)?;
    if as_json {
        return write_json(out, &rows);
    }
    if rows.is_empty() {
        writeln!(out, "No delta-state rows match.")?;
    }
    for row in &rows {
        let s = &row.state;
        writeln!(
            out,
            "{}/{} (customer {})",
            esc(&s.connector_name),
            esc(&s.stream_name),
            esc(&row.customer_number)
        )?;
        writeln!(out, "  status             {}", s.status.as_str())?;
        if let Some(run_id) = &row.lease.run_id {
            writeln!(
                out,
                "  running as         run {}, process {} on {}, lease until {}",
                esc(run_id),
                row.lease.owner_pid.unwrap_or(0),
                dash(&row.lease.owner_host),
                dash(&row.lease.lease_expires_at_utc)
            )?;
        }
        writeln!(
            out,
            "  cursor             {} ({})",
            dash(&s.committed_cursor_value),
            s.cursor_type.map_or("-", |t| t.as_str())
        )?;
        writeln!(out, "  committed at       {}", dash(&s.committed_at_utc))?;
        writeln!(out, "  started at         {}", dash(&s.started_at_utc))?;
        writeln!(out, "  completed at       {}", dash(&s.completed_at_utc))?;
        writeln!(
            out,
            "  records processed  {}",
            s.records_processed.map_or_else(|| "-".into(), |n| n.to_string())
        )?;
        if let Some(summary) = &s.error_summary {
            writeln!(out, "  error summary      {}", esc(summary))?;
        }
        if let Some(metadata) = &s.metadata {
            writeln!(out, "  metadata           {}", esc(&metadata.to_string()))?;
        }
        writeln!(
            out,
            "  updated            {} by {}",
            dash(&s.updated_at_utc),
            dash(&s.updated_by)
        )?;
    }
    Ok(())
}

/// An optional field as text for a terminal, "-" when absent.
fn dash(value: &Option<String>) -> String {
    value.as_deref().map_or_else(|| "-".into(), esc)
}

/// Text for a terminal: connector-written values (cursors, summaries,
/// metadata, names) may hold line breaks that forge fields and escapes that
/// drive the operator's terminal, so control and bidi characters and the
/// backslash are written as escapes. JSON output stays exact.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || crate::log::is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), AdminError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// `state audit`: cursor_advance and cursor_reset events, newest first.
pub fn state_audit(
    db: &Path,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let conn = open_read_only(db)?;
    let events = list_audit(&conn, filter, limit)?;
    if as_json {
        return write_json(out, &events);
    }
    for e in &events {
        write!(
            out,
            "{}  {:<14} {}/{} (customer {})  {} -> {}  by {}",
            esc(&e.created_at_utc),
            esc(&e.event_type),
            esc(&e.connector_name),
            esc(&e.stream_name),
            esc(&e.customer_number),
            dash(&e.old_cursor_value),
            dash(&e.new_cursor_value),
            dash(&e.api_user)
        )?;
        match &e.reason {
            Some(reason) => writeln!(out, "  reason: {}", esc(reason))?,
            None => writeln!(out)?,
        }
    }
    Ok(())
}

/// `rejected`: rows connectors set aside, the most recently seen first.
pub fn rejected(
    db: &Path,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let conn = open_read_only(db)?;
    let rows = crate::store::rejected::list_rejected(&conn, filter, limit)?;
    if as_json {
        return write_json(out, &rows);
    }
    if rows.is_empty() {
        writeln!(out, "No rejected rows match.")?;
    }
    for r in &rows {
        writeln!(
            out,
            "{}/{} (customer {})  seen {} time(s), last {} in run {}",
            esc(&r.connector_name),
            esc(&r.stream_name),
            esc(&r.customer_number),
            r.times,
            esc(&r.last_rejected_at),
            esc(&r.last_run_id)
        )?;
        writeln!(out, "  reason  {}", esc(&r.reason))?;
        writeln!(out, "  row     {}", esc(&r.row))?;
    }
    Ok(())
}

/// `runs`: run history, newest first.
pub fn runs(
    db: &Path,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let conn = open_read_only(db)?;
    let runs = list_runs(&conn, filter, limit)?;
    if as_json {
        return write_json(out, &runs);
    }
    for r in &runs {
        writeln!(
            out,
            "{} {}/{} (customer {})  {}",
            esc(&r.run_id),
            esc(&r.connector_name),
            esc(&r.stream_name),
            esc(&r.customer_number),
            esc(&r.status)
        )?;
        writeln!(
            out,
            "  started {}  ended {}",
            esc(&r.started_at_utc),
            dash(&r.ended_at_utc)
        )?;
        let n = |v: Option<i64>| v.map_or_else(|| "-".into(), |n| n.to_string());
        writeln!(
            out,
            "  records {}  cursor {} -> {}",
            n(r.records_processed),
            dash(&r.cursor_before),
            dash(&r.cursor_after)
        )?;
        if r.suppliers_inserted.is_some() {
            writeln!(
                out,
                "  suppliers {} inserted, {} updated, {} unchanged",
                n(r.suppliers_inserted),
                n(r.suppliers_updated),
                n(r.suppliers_unchanged)
            )?;
        }
        writeln!(
            out,
            "  process {} on {}  plugin sha256 {}",
            r.owner_pid.unwrap_or(0),
            dash(&r.owner_host),
            dash(&r.plugin_sha256)
        )?;
        if let Some(e) = &r.error_summary {
            writeln!(out, "  error: {}", esc(e))?;
        }
    }
    Ok(())
}

/// `state reset`: the stream named by connector and stream (and customer, when
/// more than one has it) gets `reset.new_cursor_value`, audited.
pub fn state_reset(
    db: &Path,
    customer: Option<String>,
    connector: String,
    stream: String,
    reset: &Reset,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let mut conn = open_read_only(db).and_then(|_| open(db))?;
    let key = match customer {
        Some(customer_number) => StreamKey {
            customer_number,
            connector_name: connector,
            stream_name: stream,
        },
        None => {
            let filter = StreamFilter {
                customer_number: None,
                connector_name: Some(connector.clone()),
                stream_name: Some(stream.clone()),
            };
            let rows = list_states(&conn, &filter)?;
            match rows.as_slice() {
                [row] => StreamKey {
                    customer_number: row.customer_number.clone(),
                    connector_name: connector,
                    stream_name: stream,
                },
                [] => {
                    return Err(AdminError::Refused(format!(
                        "no stream {connector}/{stream} in {}; pass --customer to create one",
                        db.display()
                    )));
                }
                many => {
                    let customers: Vec<&str> = many.iter().map(|r| r.customer_number.as_str()).collect();
                    return Err(AdminError::Refused(format!(
                        "stream {connector}/{stream} exists for customers {}; pass --customer",
                        customers.join(", ")
                    )));
                }
            }
        }
    };
    let old = reset_cursor(&mut conn, &key, reset).map_err(|e| match e {
        StoreError::Database(e) => AdminError::Query(e),
        other => AdminError::Refused(other.to_string()),
    })?;
    writeln!(
        out,
        "Reset {}: cursor {} -> {} (status idle). Reason: {}",
        esc(&key.to_string()),
        dash(&old),
        esc(&reset.new_cursor_value),
        esc(&reset.reason)
    )?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per supplier, locations and addresses nested.
    Jsonl,
    /// One row per address (or per location, or per supplier without either).
    Csv,
}

const SUPPLIER_FIELDS: [&str; 12] = [
    "customer_number",
    "supplier_number",
    "organization_code",
    "supplier_name",
    "alternative_supplier_name",
    "supplier_type",
    "is_active",
    "custom_field_1",
    "custom_field_2",
    "custom_field_3",
    "custom_field_4",
    "custom_field_5",
];
const LOCATION_FIELDS: [&str; 14] = [
    "location_code",
    "location_name",
    "organization_code",
    "default_currency_code",
    "default_payment_term_code",
    "default_payment_method",
    "taxpayer_id",
    "duns_number",
    "is_active",
    "custom_field_1",
    "custom_field_2",
    "custom_field_3",
    "custom_field_4",
    "custom_field_5",
];
const ADDRESS_FIELDS: [&str; 8] = [
    "street",
    "city",
    "state",
    "postal_code",
    "country_code",
    "custom_field_1",
    "custom_field_2",
    "custom_field_3",
];

/// Reads the named columns of one row as JSON values (`is_active` as a boolean).
fn row_object(
    r: &rusqlite::Row<'_>,
    fields: &[&str],
    offset: usize,
) -> rusqlite::Result<serde_json::Map<String, Value>> {
    let mut obj = serde_json::Map::new();
    for (i, name) in fields.iter().enumerate() {
        let value = if *name == "is_active" {
            json!(r.get::<_, i64>(offset + i)? != 0)
        } else {
            r.get::<_, Option<String>>(offset + i)?
                .map_or(Value::Null, Value::String)
        };
        obj.insert((*name).to_owned(), value);
    }
    Ok(obj)
}

/// Each supplier with its locations and their addresses, in a stable order
/// (customer, supplier number, organization code; location code; position).
fn for_each_supplier(
    conn: &Connection,
    customer: Option<&str>,
    mut visit: impl FnMut(Value) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    let mut suppliers = conn.prepare(&format!(
        "SELECT {} FROM supplier WHERE (?1 IS NULL OR customer_number = ?1)
         ORDER BY customer_number, supplier_number, organization_code",
        SUPPLIER_FIELDS.join(", ")
    ))?;
    let mut locations = conn.prepare(&format!(
        "SELECT {} FROM supplier_location
         WHERE customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3
         ORDER BY location_code",
        LOCATION_FIELDS.join(", ")
    ))?;
    let mut addresses = conn.prepare(&format!(
        "SELECT {} FROM supplier_address
         WHERE customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3
           AND location_code = ?4
         ORDER BY position",
        ADDRESS_FIELDS.join(", ")
    ))?;
    let mut rows = suppliers.query(params![customer])?;
    while let Some(r) = rows.next()? {
        let mut supplier = row_object(r, &SUPPLIER_FIELDS, 0)?;
        let key: [String; 3] = [r.get(0)?, r.get(1)?, r.get(2)?];
        let mut nested = Vec::new();
        let mut loc_rows = locations.query(params![key[0], key[1], key[2]])?;
        while let Some(l) = loc_rows.next()? {
            let mut location = row_object(l, &LOCATION_FIELDS, 0)?;
            let code: String = l.get(0)?;
            let addrs = addresses
                .query_map(params![key[0], key[1], key[2], code], |a| {
                    row_object(a, &ADDRESS_FIELDS, 0).map(Value::Object)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            location.insert("addresses".into(), Value::Array(addrs));
            nested.push(Value::Object(location));
        }
        supplier.insert("locations".into(), Value::Array(nested));
        visit(Value::Object(supplier))?;
    }
    Ok(())
}

/// `suppliers export`: what the store holds.
pub fn suppliers_export(
    db: &Path,
    customer: Option<&str>,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let conn = open_read_only(db)?;
    match format {
        ExportFormat::Jsonl => for_each_supplier(&conn, customer, |s| {
            serde_json::to_writer(&mut *out, &s).map_err(std::io::Error::from)?;
            writeln!(out)?;
            Ok(())
        }),
        ExportFormat::Csv => {
            let mut csv = csv::Writer::from_writer(out);
            let header: Vec<String> = SUPPLIER_FIELDS
                .iter()
                .map(|f| f.to_string())
                .chain(
                    LOCATION_FIELDS
                        .iter()
                        .map(|f| format!("location_{}", f.trim_start_matches("location_"))),
                )
                .chain(ADDRESS_FIELDS.iter().map(|f| format!("address_{f}")))
                .collect();
            csv.write_record(&header)?;
            for_each_supplier(&conn, customer, |s| {
                let cells = |obj: &Value, fields: &[&str]| -> Vec<String> {
                    fields
                        .iter()
                        .map(|f| match &obj[*f] {
                            Value::Null => String::new(),
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect()
                };
                let supplier_cells = cells(&s, &SUPPLIER_FIELDS);
                let no_location = vec![String::new(); LOCATION_FIELDS.len()];
                let no_address = vec![String::new(); ADDRESS_FIELDS.len()];
                let locations = s["locations"].as_array().cloned().unwrap_or_default();
                if locations.is_empty() {
                    csv.write_record(supplier_cells.iter().chain(&no_location).chain(&no_address))?;
                }
                for l in &locations {
                    let location_cells = cells(l, &LOCATION_FIELDS);
                    let addresses = l["addresses"].as_array().cloned().unwrap_or_default();
                    if addresses.is_empty() {
                        csv.write_record(supplier_cells.iter().chain(&location_cells).chain(&no_address))?;
                    }
                    for a in &addresses {
                        csv.write_record(
                            supplier_cells
                                .iter()
                                .chain(&location_cells)
                                .chain(&cells(a, &ADDRESS_FIELDS)),
                        )?;
                    }
                }
                Ok(())
            })?;
            csv.flush()?;
            Ok(())
        }
    }
}

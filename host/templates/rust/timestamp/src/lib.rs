//! A Nuntiq connector: pulls the suppliers that changed since the last run
//! from `GET {api_url}/suppliers?updated_after=…&page=N&per_page=…`
//! (`{"data": [{"id", "name", "active", "updated_at"}], "next_page": N | null}`),
//! upserts them, and commits the newest `updated_at` as the stream's cursor.
//!
//! Start here: change `fetch_page`, `Row` and `map` to your API; `cargo test`
//! runs `src/tests.rs` against the fixtures, `cargo wasm` builds the component.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::{Guest, SupplierLoad, Supplier, context, get_config, get_param, http, log, supplier};
use serde::Deserialize;
use serde_json::{Value, json};

/// The stream this connector keeps a cursor for.
const STREAM: &str = "suppliers";
/// The secret the host sends as `Authorization: Bearer …` (the connector never sees it).
const TOKEN: &str = "api_token";
/// Suppliers handed to the store at a time.
const FLUSH_EVERY: usize = 500;

pub struct Connector;

impl Guest for Connector {
    fn run() -> Result<String, String> {
        let connector = get_config("connector_name").ok_or("config.connector_name is required")?;
        let api_url = get_config("api_url").ok_or("config.api_url is required")?;
        if !context::has_secret(TOKEN) {
            return Err(format!("secrets.{TOKEN} is required"));
        }
        let page_size = context::get_config("page_size").and_then(|v| v.as_i64()).unwrap_or(100);
        let mut load = SupplierLoad::new();
        let summary = nuntiq_connector::delta_run(&connector, STREAM, CursorType::TimestampUtc, |run| {
            let since = since(run)?;
            log::info(&format!("Pulling suppliers updated after {since}"));
            // The cursor never moves back, and never past the moment this run began.
            let mut cursor = run.lower_bound_cursor().unwrap_or_else(|| since.clone());
            let run_start = now();
            let (mut page, mut fetched) = (1u64, 0usize);
            loop {
                let body = fetch_page(&api_url, &since, page, page_size)?;
                for raw in &body.data {
                    fetched += 1;
                    match read(raw) {
                        Ok((updated_at, supplier)) => {
                            if updated_at > cursor && updated_at <= run_start {
                                cursor = updated_at;
                            }
                            load.add(supplier);
                        }
                        // A row that cannot be read is set aside, not a reason to fail every run.
                        Err(reason) => run
                            .reject(&raw.to_string(), &format!("page {page}: {reason}"))
                            .map_err(|e| e.message())?,
                    }
                    if load.len() >= FLUSH_EVERY {
                        load.save_all().map_err(|e| e.message())?;
                    }
                }
                match body.next_page {
                    Some(next) if next > page => page = next,
                    _ => break,
                }
            }
            // What is still queued is written with the cursor, in one transaction.
            load.queue().map_err(|e| e.message())?;
            run.set_new_cursor(&cursor).map_err(|e| e.message())?;
            run.set_records_processed(fetched as u64);
            Ok(json!({ "connector_name": connector, "fetched": fetched, "cursor_committed": cursor }))
        })?;
        Ok(summary.to_string())
    }
}

/// Where this run starts reading: `job_params.since_override`, else a second
/// before the committed cursor (APIs with `updated_after` and whole-second
/// stamps may otherwise miss a change made in that second), else
/// `job_params.lookback_days` (7) ago.
fn since(run: &DeltaRun) -> Result<String, String> {
    if let Some(over) = get_param("since_override") {
        return Ok(over);
    }
    if let Some(cursor) = run.lower_bound_cursor() {
        return Ok(shift(&cursor, -1));
    }
    let days = context::get_param("lookback_days").and_then(|v| v.as_i64()).unwrap_or(7);
    Ok(shift(&now(), -days * 24 * 3600))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Value>,
    next_page: Option<u64>,
}

/// One row of your API.
#[derive(Deserialize)]
struct Row {
    id: String,
    name: String,
    active: Option<bool>,
    updated_at: String,
}

fn fetch_page(api_url: &str, since: &str, page: u64, page_size: i64) -> Result<Page, String> {
    let response = http::get(format!("{}/suppliers", api_url.trim_end_matches('/')))
        .query("updated_after", since)
        .query("page", page)
        .query("per_page", page_size)
        .bearer_secret(TOKEN)
        .send()
        .map_err(|e| format!("page {page}: {}", e.message()))?;
    response.json().map_err(|e| format!("page {page} is not the JSON expected: {e}"))
}

/// A row's `updated_at` (as an RFC 3339 UTC timestamp) and its supplier.
pub fn read(raw: &Value) -> Result<(String, Supplier), String> {
    let row: Row = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    let updated_at =
        normalize(&row.updated_at).ok_or_else(|| format!("updated_at {:?} is not a timestamp", row.updated_at))?;
    Ok((updated_at, map(row)))
}

/// Your row → a Nuntiq supplier.
fn map(row: Row) -> Supplier {
    let mut s = supplier(row.id, row.name);
    s.is_active = Some(row.active.unwrap_or(true));
    s
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn shift(stamp: &str, seconds: i64) -> String {
    parse(stamp).map_or_else(|| stamp.to_owned(), |t| format(t + Duration::seconds(seconds)))
}

/// Any RFC 3339 timestamp, as UTC `YYYY-MM-DDTHH:MM:SSZ` (which sorts as text).
fn normalize(stamp: &str) -> Option<String> {
    parse(stamp).map(format)
}

fn parse(stamp: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(stamp).ok().map(|t| t.to_utc())
}

fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

nuntiq_connector::export_connector!(Connector);

#[cfg(test)]
mod tests;

//! A Nuntiq connector: pulls the suppliers added since the last run from
//! `GET {api_url}/suppliers?after_id=N&limit=M` (`{"data": [{"id", "name",
//! "active"}]}`, ascending ids; fewer than M rows is the last page), upserts
//! them, and commits the greatest id seen as the stream's numeric cursor.
//!
//! Start here: change `fetch_page`, `Row` and `map` to your API; `cargo test`
//! runs `src/tests.rs` against the fixtures, `cargo wasm` builds the component.

use nuntiq_connector::delta_state::CursorType;
use nuntiq_connector::{Guest, Supplier, SupplierLoad, context, get_config, http, log, supplier};
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
        let limit = context::get_config("page_size").and_then(|v| v.as_i64()).unwrap_or(100).max(1);
        let mut load = SupplierLoad::new();
        let summary = nuntiq_connector::delta_run(&connector, STREAM, CursorType::NumericId, |run| {
            // A first run starts from the beginning; the cursor only moves forward.
            let start: i64 = match run.lower_bound_cursor() {
                Some(c) => c.parse().map_err(|_| format!("the committed cursor {c:?} is not a number"))?,
                None => 0,
            };
            log::info(&format!("Pulling suppliers after id {start}"));
            let (mut after, mut fetched) = (start, 0usize);
            loop {
                let rows = fetch_page(&api_url, after, limit)?;
                for raw in &rows {
                    fetched += 1;
                    // The next page starts after the greatest id seen, readable or not.
                    if let Some(id) = raw["id"].as_i64() {
                        after = after.max(id);
                    }
                    match read(raw) {
                        Ok(supplier) => load.add(supplier),
                        // A row that cannot be read is set aside, not a reason to fail every run.
                        Err(reason) => run.reject(&raw.to_string(), &reason).map_err(|e| e.message())?,
                    }
                    if load.len() >= FLUSH_EVERY {
                        load.save_all().map_err(|e| e.message())?;
                    }
                }
                if (rows.len() as i64) < limit {
                    break;
                }
            }
            // What is still queued is written with the cursor, in one transaction.
            load.queue().map_err(|e| e.message())?;
            run.set_new_cursor(&after.to_string()).map_err(|e| e.message())?;
            run.set_records_processed(fetched as u64);
            Ok(json!({ "connector_name": connector, "fetched": fetched, "cursor_committed": after.to_string() }))
        })?;
        Ok(summary.to_string())
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Value>,
}

/// One row of your API.
#[derive(Deserialize)]
struct Row {
    id: i64,
    name: String,
    active: Option<bool>,
}

fn fetch_page(api_url: &str, after: i64, limit: i64) -> Result<Vec<Value>, String> {
    let response = http::get(format!("{}/suppliers", api_url.trim_end_matches('/')))
        .query("after_id", after)
        .query("limit", limit)
        .bearer_secret(TOKEN)
        .send()
        .map_err(|e| format!("after id {after}: {}", e.message()))?;
    let page: Page = response.json().map_err(|e| format!("after id {after}: not the JSON expected: {e}"))?;
    Ok(page.data)
}

/// A row as a supplier, or why it cannot be one.
pub fn read(raw: &Value) -> Result<Supplier, String> {
    let row: Row = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    if row.name.trim().is_empty() {
        return Err(format!("supplier {} has no name", row.id));
    }
    Ok(map(row))
}

/// Your row → a Nuntiq supplier.
fn map(row: Row) -> Supplier {
    let mut s = supplier(format!("S-{}", row.id), row.name);
    s.is_active = Some(row.active.unwrap_or(true));
    s
}

nuntiq_connector::export_connector!(Connector);

#[cfg(test)]
mod tests;

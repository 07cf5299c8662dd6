//! A Nuntiq connector: reads a change feed, `GET {api_url}/suppliers/changes
//! ?since=TOKEN` (`{"data": [{"id", "name", "active"}], "next_token": "…",
//! "has_more": bool}`; a first run names no token), upserts what changed, and
//! commits the last `next_token` as the stream's opaque cursor. The host
//! requires a committed token to differ from the last one: this feed hands
//! out a new token on every call.
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
        let mut load = SupplierLoad::new();
        let summary = nuntiq_connector::delta_run(&connector, STREAM, CursorType::OpaqueToken, |run| {
            let mut since = run.lower_bound_cursor();
            log::info(&format!("Reading changes since {}", since.as_deref().unwrap_or("the beginning")));
            let mut fetched = 0usize;
            loop {
                let page = fetch_page(&api_url, since.as_deref())?;
                for raw in &page.data {
                    fetched += 1;
                    match read(raw) {
                        Ok(supplier) => load.add(supplier),
                        // A row that cannot be read is set aside, not a reason to fail every run.
                        Err(reason) => run.reject(&raw.to_string(), &reason).map_err(|e| e.message())?,
                    }
                    if load.len() >= FLUSH_EVERY {
                        load.save_all().map_err(|e| e.message())?;
                    }
                }
                since = Some(page.next_token);
                if !page.has_more {
                    break;
                }
            }
            let token = since.unwrap_or_default();
            // What is still queued is written with the cursor, in one transaction.
            load.queue().map_err(|e| e.message())?;
            run.set_new_cursor(&token).map_err(|e| e.message())?;
            run.set_records_processed(fetched as u64);
            Ok(json!({ "connector_name": connector, "fetched": fetched, "cursor_committed": token }))
        })?;
        Ok(summary.to_string())
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Value>,
    next_token: String,
    #[serde(default)]
    has_more: bool,
}

/// One row of your API.
#[derive(Deserialize)]
struct Row {
    id: String,
    name: String,
    active: Option<bool>,
}

fn fetch_page(api_url: &str, since: Option<&str>) -> Result<Page, String> {
    let mut request = http::get(format!("{}/suppliers/changes", api_url.trim_end_matches('/'))).bearer_secret(TOKEN);
    if let Some(token) = since {
        request = request.query("since", token);
    }
    let response = request.send().map_err(|e| format!("changes since {since:?}: {}", e.message()))?;
    response.json().map_err(|e| format!("changes since {since:?}: not the JSON expected: {e}"))
}

/// A row as a supplier, or why it cannot be one.
pub fn read(raw: &Value) -> Result<Supplier, String> {
    let row: Row = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    Ok(map(row))
}

/// Your row → a Nuntiq supplier.
fn map(row: Row) -> Supplier {
    let mut s = supplier(row.id, row.name);
    s.is_active = Some(row.active.unwrap_or(true));
    s
}

nuntiq_connector::export_connector!(Connector);

#[cfg(test)]
mod tests;

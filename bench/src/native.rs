//! Contenders 0 and 2 without wasm: the store alone, and the Acme connector's
//! fetch → parse → map → upsert written as plain Rust on the host's own store.

use nuntiq_e2e::dataset::Dataset;
use nuntiq_host::limits::Stop;
use nuntiq_host::store::{Batch, 
    AddressRecord, Completion, CursorType, LocationRecord, RunOwner, SaveCounts, Store, StreamKey, SupplierRecord,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// The seed connector's flush size.
const FLUSH_EVERY: usize = 500;

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<AcmeSupplier>,
    next_page: Option<u64>,
}

#[derive(Deserialize)]
struct AcmeSupplier {
    number: Option<Value>,
    name: Option<String>,
    active: Option<bool>,
    updated_at: Option<String>,
    address: Option<Map<String, Value>>,
}

/// The seed's mapping: number/name/active, and one MAIN location when there is an address.
fn map_supplier(ext: AcmeSupplier) -> SupplierRecord {
    let number = match ext.number {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let mut supplier = SupplierRecord::new(number, ext.name.unwrap_or_default());
    supplier.is_active = Some(ext.active.unwrap_or(true));
    if let Some(a) = ext.address.filter(|a| !a.is_empty()) {
        let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut location = LocationRecord::new("MAIN");
        location.location_name = Some("Headquarters".into());
        location.is_active = Some(true);
        let mut address = AddressRecord::default();
        address.street = Some(field("street").unwrap_or_default());
        address.city = Some(field("city").unwrap_or_default());
        address.country_code = Some(field("country").unwrap_or_else(|| "XX".into()));
        location.addresses.push(address);
        supplier.locations.push(location);
    }
    supplier
}

fn key() -> StreamKey {
    StreamKey {
        customer_number: "10000001".into(),
        connector_name: "acme_eu".into(),
        stream_name: "suppliers".into(),
    }
}

/// Contender 0: the same mapped rows upserted straight into the same schema,
/// 1000 per transaction, through the host's own store code.
pub fn store_only(suppliers: usize, db: &Path) -> anyhow::Result<(usize, f64)> {
    let data = Dataset::seeded(suppliers, 42, chrono::Utc::now());
    let rows: Vec<SupplierRecord> = data
        .rows
        .iter()
        .map(|r| serde_json::from_value::<AcmeSupplier>(r.json.clone()).map(map_supplier))
        .collect::<Result<_, _>>()?;
    let mut conn = nuntiq_host::store::sql::Conn::Sqlite(nuntiq_host::store::sqlite::SqliteConn::new(
        nuntiq_host::store::schema::open(db)?,
    ));
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let started = std::time::Instant::now();
    let saved =
        runtime.block_on(nuntiq_host::store::suppliers::save_suppliers(&mut conn, "10000001", &rows, Default::default()))?;
    Ok((saved.total() as usize, started.elapsed().as_secs_f64()))
}

/// Contender 2: the Acme connector in plain Rust — fetch, parse, map, flush
/// every 500 in the background, final flush with the cursor.
pub fn native(api_url: &str, token: &str, since: &str, page_size: u32, db: &Path) -> anyhow::Result<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = Store::open_sqlite(db)?;
        let client = reqwest::Client::new();
        let owner = RunOwner::this_process("native", "nuntiq-bench", Duration::from_secs(300));
        let stop = Stop::never();
        let (_, before) = store
            .begin_run(key(), CursorType::TimestampUtc, owner.clone(), stop.clone())
            .await?;
        let mut batch = Vec::with_capacity(FLUSH_EVERY);
        let (mut count, mut page, mut watermark) = (0usize, 1u64, since.to_owned());
        let mut newest = chrono::DateTime::parse_from_rfc3339(since)?;
        loop {
            let body = client
                .get(format!("{api_url}/suppliers"))
                .query(&[
                    ("updated_after", since),
                    ("page", &page.to_string()),
                    ("per_page", &page_size.to_string()),
                ])
                .bearer_auth(token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let parsed: Page = serde_json::from_slice(&body)?;
            for ext in parsed.data {
                if let Some(at) = ext
                    .updated_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    && at > newest
                {
                    newest = at;
                    watermark = at
                        .with_timezone(&chrono::Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                }
                batch.push(map_supplier(ext));
                count += 1;
                if batch.len() == FLUSH_EVERY {
                    store
                        .save_suppliers("10000001".into(), Batch::unbudgeted(std::mem::take(&mut batch)), stop.clone())
                        .await?;
                }
            }
            match parsed.next_page {
                Some(next) if next > page => page = next,
                _ => break,
            }
        }
        let completion = Completion {
            cursor_type: CursorType::TimestampUtc,
            new_cursor_value: watermark,
            records_processed: Some(count as u64),
            metadata: None,
            updated_by: "nuntiq-bench".into(),
            max_cursor_skew: nuntiq_host::store::cursor::DEFAULT_MAX_CURSOR_SKEW,
        };
        store
            .complete_run(key(), owner.run_id, completion, Batch::unbudgeted(batch), before, stop)
            .await
            .map_err(|e| e.error)?;
        let _: SaveCounts = store.drain().await?;
        Ok(count)
    })
}

//! Pull suppliers from Acme ERP into Nuntiq (delta sync).
//!
//! The platform's REST-pull connector, ported: walk `GET {api_url}/suppliers`
//! page by page from the `since` lower bound, map each row to a Nuntiq supplier,
//! flush every 500, and commit the greatest `updated_at` seen as the new cursor.
//! The bearer token is attached by the host (`bearer_secret`), so this
//! connector never holds it.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use nuntiq_connector::delta_state::{CursorType, DeltaRun};
use nuntiq_connector::log::{self, Level};
use nuntiq_connector::{
    Guest, Supplier, SupplierLoad, address, context, get_config, get_param, http, location, supplier,
};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;

const STREAM_NAME: &str = "suppliers";
/// Bump on schema changes so you can spot which version emitted a row.
const SCHEMA_VERSION: u32 = 1;
/// Flush every 500: a bounded queue, faster recovery, visible progress.
const FLUSH_EVERY: usize = 500;
const TOKEN_SECRET: &str = "acme_token";
/// How far before the committed cursor a run starts reading (see [`resolve_since`]).
const BOUNDARY_OVERLAP_SECONDS: i64 = 1;

struct Acme;

impl Guest for Acme {
    fn run() -> Result<String, String> {
        let connector_name = get_config("connector_name");
        let api_url = get_config("api_url");
        let (Some(connector_name), Some(api_url), true) = (connector_name, api_url, context::has_secret(TOKEN_SECRET))
        else {
            return Err("config.connector_name, config.api_url, secrets.acme_token are required".into());
        };
        let page_size = match context::get_config("page_size") {
            None => 200,
            Some(v) => v.as_i64().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| {
                format!(
                    "config.page_size must be an integer from 1 to 10000, not {}",
                    v.to_text()
                )
            })?,
        };

        let mut load = SupplierLoad::new();
        // Rows stamped later than this (clock skew at the source) are kept, but
        // never carry the cursor past the moment the run began.
        let run_start = Utc::now();
        let summary = nuntiq_connector::delta_run(&connector_name, STREAM_NAME, CursorType::TimestampUtc, |r| {
            let lower_bound = r.lower_bound_cursor();
            let since = resolve_since(lower_bound.as_deref())?;
            log::event(
                Level::Info,
                "start",
                &format!("Pulling suppliers updated_after={since}"),
                &json!({"since": since}),
            );

            // The watermark starts at the lower bound, so a run that fetches nothing,
            // or a backfill, never moves the cursor backwards.
            let mut watermark = parse_timestamp(&since).map_err(|e| format!("since: {e}"))?;
            if let Some(committed) = lower_bound.as_deref().and_then(|c| parse_timestamp(c).ok()) {
                watermark = watermark.max(committed);
            }

            let mut count = 0usize;
            let mut page = 1u64;
            loop {
                let bytes = fetch_page(&api_url, &since, page, page_size)?;
                let body = read_page(&bytes, page)?;
                log::event(
                    Level::Info,
                    "fetch",
                    &format!("Fetched page {page} ({} rows)", body.data.len()),
                    &json!({"page": page, "count": body.data.len()}),
                );
                for (row, raw) in body.data.iter().enumerate() {
                    let raw: &RawValue = raw;
                    count += 1;
                    let (updated_at, supplier) = match read_row(raw) {
                        Ok(read) => read,
                        Err(reason) => {
                            // One bad row must not fail every run until the source fixes it:
                            // set it aside (the host keeps it and counts it) and go on.
                            let reason = format!("page {page}, row {row}: {reason}");
                            log::warn(&format!("Setting a row aside: {reason}"));
                            r.reject(raw.get(), &reason)
                                .map_err(|e| format!("{reason}; the row could not be set aside: {}", e.message()))?;
                            if let Some(at) = serde_json::from_str::<Value>(raw.get())
                                .ok()
                                .and_then(|v| v.get("updated_at")?.as_str().and_then(|t| parse_timestamp(t).ok()))
                            {
                                watermark = watermark.max(at.min(run_start));
                            }
                            continue;
                        }
                    };
                    if updated_at > run_start {
                        log::event(
                            Level::Warn,
                            "fetch",
                            &format!(
                                "Supplier {} has updated_at {}, after this run began ({}); it is stored, \
                                 but the cursor will not pass the run's start",
                                supplier.supplier_number,
                                updated_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                                run_start.to_rfc3339_opts(SecondsFormat::Secs, true)
                            ),
                            &json!({"page": page, "row": row, "supplier_number": supplier.supplier_number}),
                        );
                    }
                    watermark = watermark.max(updated_at.min(run_start));
                    load.add(supplier);
                    if load.len() >= FLUSH_EVERY {
                        load.save_all()
                            .map_err(|e| format!("save_all failed: {}", e.message()))?;
                        log::event(
                            Level::Info,
                            "save",
                            &format!("Flushed {} so far", count),
                            &json!({"count": count}),
                        );
                    }
                }
                match body.next(page)? {
                    Some(next) => page = next,
                    None => break,
                }
            }

            // The final flush goes to the host's queue: complete() writes it in the
            // same transaction that advances the cursor.
            load.queue().map_err(|e| format!("save_all failed: {}", e.message()))?;
            let cursor = watermark.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            log::event(
                Level::Info,
                "done",
                &format!("Done: {count} suppliers, new cursor = {cursor}"),
                &json!({"count": count, "cursor": cursor}),
            );
            commit(r, &cursor, count, page_size, &since)?;
            Ok(json!({
                "connector_name": connector_name,
                "fetched": count,
                "cursor_committed": cursor,
            }))
        })?;
        Ok(summary.to_string())
    }
}

fn commit(r: &DeltaRun, cursor: &str, count: usize, page_size: i64, since: &str) -> Result<(), String> {
    r.set_new_cursor(cursor).map_err(|e| e.message())?;
    r.set_records_processed(count as u64);
    let metadata = json!({"schema_version": SCHEMA_VERSION, "page_size": page_size, "lower_bound_used": since});
    r.set_metadata(&metadata.to_string()).map_err(|e| e.message())
}

/// Override > delta cursor > bootstrap window. The cursor is re-read with a
/// second of overlap: Acme's `updated_after` is strictly after and its stamps
/// have second precision, so a row changed in the cursor's own second after
/// the last run read it would otherwise never be fetched (the upsert of the
/// rows read twice writes nothing).
fn resolve_since(lower_bound: Option<&str>) -> Result<String, String> {
    if let Some(over) = get_param("since_override") {
        let at = parse_timestamp(&over).map_err(|e| format!("job_params.since_override {e}"))?;
        // A cursor in the future would skip every change until then.
        if at > Utc::now() {
            return Err(format!("job_params.since_override {over} is in the future"));
        }
        log::event(
            Level::Info,
            "since",
            &format!("since_override set → {over}"),
            &json!({"since_override": over}),
        );
        return Ok(over);
    }
    if let Some(lower_bound) = lower_bound {
        let overlap = parse_timestamp(lower_bound).map_err(|e| format!("the committed cursor {e}"))?
            - Duration::seconds(BOUNDARY_OVERLAP_SECONDS);
        return Ok(overlap.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }
    let lookback_days = match context::get_param("lookback_days") {
        None => 7,
        Some(v) => v.as_i64().filter(|d| (0..=36_500).contains(d)).ok_or_else(|| {
            format!(
                "job_params.lookback_days must be a whole number of days, not {}",
                v.to_text()
            )
        })?,
    };
    let bootstrap = (Utc::now() - Duration::days(lookback_days))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    log::event(
        Level::Info,
        "since",
        &format!("First-run bootstrap → {bootstrap} (lookback_days={lookback_days})"),
        &json!({"bootstrap": bootstrap, "lookback_days": lookback_days}),
    );
    Ok(bootstrap)
}

/// Timestamps are compared as instants, never as strings: "10:00+02:00" is before "09:00Z".
fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp ({e})"))
}

/// A page as Acme sends it. Rows stay raw JSON (borrowed from the response
/// body) and are read one by one, so a bad row can be set aside.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(default, borrow)]
    data: Vec<&'a RawValue>,
    #[serde(default)]
    next_page: Value,
}

impl Page<'_> {
    /// `next_page`: a number, a string holding one, or null at the end.
    fn next(&self, page: u64) -> Result<Option<u64>, String> {
        let next = match &self.next_page {
            Value::Null => return Ok(None),
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match next {
            Some(0) => Ok(None),
            Some(next) if next > page => Ok(Some(next)),
            Some(next) => Err(format!("page {page} says next_page is {next}; pages must move forward")),
            None => Err(format!(
                "page {page} has next_page {}, which is not a page number; the pages after it cannot be read",
                self.next_page
            )),
        }
    }
}

/// One source row: its `updated_at` and the supplier it maps to, or why it cannot be read.
fn read_row(raw: &RawValue) -> Result<(DateTime<Utc>, Supplier), String> {
    let ext: AcmeSupplier<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("the row does not read: {e}"))?;
    let updated_at = ext.updated_at.as_deref().ok_or("updated_at is missing")?;
    let updated_at = parse_timestamp(updated_at).map_err(|e| format!("updated_at {e}"))?;
    Ok((updated_at, map_supplier(&ext)?))
}

/// A row, read straight from the page's bytes (strings borrowed unless escaped).
#[derive(Deserialize)]
struct AcmeSupplier<'a> {
    /// A string or a number.
    #[serde(borrow)]
    number: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    active: Option<bool>,
    #[serde(borrow)]
    updated_at: Option<Cow<'a, str>>,
    #[serde(borrow)]
    address: Option<&'a RawValue>,
}

/// The address fields Acme sends; a field that is not a string counts as absent.
#[derive(Deserialize)]
struct AcmeAddress<'a> {
    #[serde(borrow)]
    street: Option<&'a RawValue>,
    #[serde(borrow)]
    city: Option<&'a RawValue>,
    #[serde(borrow)]
    country: Option<&'a RawValue>,
}

/// A JSON string's text; `None` for anything else.
fn text(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
        .map(Cow::into_owned)
}

fn fetch_page(api_url: &str, since: &str, page: u64, page_size: i64) -> Result<Vec<u8>, String> {
    let response = http::get(format!("{}/suppliers", api_url.trim_end_matches('/')))
        .query("updated_after", since)
        .query("page", page)
        .query("per_page", page_size)
        .header("accept", "application/json")
        .bearer_secret(TOKEN_SECRET)
        .send()
        .map_err(|e| format!("page {page}: {}", e.message()))?;
    Ok(response.body)
}

fn read_page(body: &[u8], page: u64) -> Result<Page<'_>, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("page {page}: the response is not the expected JSON {{\"data\": [...], \"next_page\": N|null}} ({e})")
    })
}

/// External Acme row → Nuntiq supplier, with one MAIN location when there is an address.
fn map_supplier(ext: &AcmeSupplier<'_>) -> Result<Supplier, String> {
    let number = match ext.number.map(RawValue::get) {
        Some(n) if n.starts_with('"') => text(ext.number).filter(|s| !s.is_empty()),
        Some(n) => serde_json::from_str::<serde_json::Number>(n).ok().map(|n| n.to_string()),
        None => None,
    }
    .ok_or("number is missing")?;
    let name = ext.name.as_deref().filter(|n| !n.is_empty()).ok_or("name is missing")?;
    let mut s = supplier(number, name);
    s.is_active = Some(ext.active.unwrap_or(true));
    // VAT numbers live on Organization, not Supplier: vat_number is ignored here.
    if let Some(raw) = ext.address.filter(|a| a.get() != "null") {
        let ext_address: AcmeAddress<'_> =
            serde_json::from_str(raw.get()).map_err(|e| format!("the address does not read: {e}"))?;
        let empty = raw.get().trim_start_matches('{').trim_end_matches('}').trim().is_empty();
        if !empty {
            let mut loc = location("MAIN");
            loc.location_name = Some("Headquarters".into());
            loc.is_active = Some(true);
            let mut addr = address();
            addr.street = Some(text(ext_address.street).unwrap_or_default());
            addr.city = Some(text(ext_address.city).unwrap_or_default());
            addr.country_code = Some(text(ext_address.country).unwrap_or_else(|| "XX".into()));
            loc.addresses.push(addr);
            s.locations.push(loc);
        }
    }
    Ok(s)
}

nuntiq_connector::export_connector!(Acme);

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Supplier, String> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        read_row(&raw).map(|(_, s)| s)
    }

    #[test]
    fn rows_map_to_suppliers_with_one_main_location() {
        let s = read(
            r#"{"number": "A-1", "name": "Caf\u00e9", "active": false, "updated_at": "2026-01-01T10:00:00+02:00",
                "address": {"street": "Main 1", "city": "Utrecht", "country": "NL", "zip": "1234"}}"#,
        )
        .unwrap();
        assert_eq!((s.supplier_number.as_str(), s.supplier_name.as_str()), ("A-1", "Café"));
        assert_eq!(s.is_active, Some(false));
        let a = &s.locations[0].addresses[0];
        assert_eq!(s.locations[0].location_code, "MAIN");
        assert_eq!(
            (a.street.as_deref(), a.city.as_deref(), a.country_code.as_deref()),
            (Some("Main 1"), Some("Utrecht"), Some("NL"))
        );
    }

    #[test]
    fn numbers_may_be_json_numbers_and_odd_address_fields_count_as_absent() {
        let s = read(r#"{"number": 42, "name": "N", "updated_at": "2026-01-01T00:00:00Z", "address": {"city": 7}}"#)
            .unwrap();
        assert_eq!(s.supplier_number, "42");
        assert_eq!(s.is_active, Some(true), "active defaults to true");
        let a = &s.locations[0].addresses[0];
        assert_eq!((a.street.as_deref(), a.city.as_deref(), a.country_code.as_deref()), (Some(""), Some(""), Some("XX")));
        let s = read(r#"{"number": "7", "name": "N", "updated_at": "2026-01-01T00:00:00Z", "address": {}}"#).unwrap();
        assert!(s.locations.is_empty(), "an empty address makes no location");
        let s = read(r#"{"number": "7", "name": "N", "updated_at": "2026-01-01T00:00:00Z", "address": null}"#).unwrap();
        assert!(s.locations.is_empty());
    }

    #[test]
    fn unreadable_rows_say_why() {
        let why = |json| read(json).err().unwrap();
        assert!(why(r#"{"number": "1", "name": "N", "updated_at": "yesterday"}"#).contains("updated_at"));
        assert!(why(r#"{"number": "1", "name": "N", "active": "yes", "updated_at": "2026-01-01T00:00:00Z"}"#)
            .contains("does not read"));
        assert!(why(r#"{"name": "N", "updated_at": "2026-01-01T00:00:00Z"}"#).contains("number is missing"));
        assert!(why(r#"{"number": "", "name": "N", "updated_at": "2026-01-01T00:00:00Z"}"#).contains("number is missing"));
        assert!(why(r#"{"number": "1", "updated_at": "2026-01-01T00:00:00Z"}"#).contains("name is missing"));
        assert!(why(r#"{"number": "1", "name": "N", "updated_at": "2026-01-01T00:00:00Z", "address": "x"}"#)
            .contains("address"));
    }

    #[test]
    fn pages_name_their_next_page_as_a_number_or_a_string() {
        let page = |json: &str, n| {
            let page: Page<'_> = serde_json::from_str(json).unwrap();
            page.next(n)
        };
        assert_eq!(page(r#"{"data": [], "next_page": 3}"#, 2), Ok(Some(3)));
        assert_eq!(page(r#"{"data": [], "next_page": "3"}"#, 2), Ok(Some(3)));
        assert_eq!(page(r#"{"data": [], "next_page": null}"#, 2), Ok(None));
        assert!(page(r#"{"data": [], "next_page": 1}"#, 2).is_err());
    }
}

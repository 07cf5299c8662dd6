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
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

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
            let mut pending = Some(start_page(&api_url, &since, page, page_size)?);
            while let Some(request) = pending.take() {
                let response = request.finish().map_err(|e| format!("page {page}: {}", e.message()))?;
                let body = read_page(&response.body, page)?;
                // The next page downloads while this one is mapped and written.
                let next = body.next(page);
                if let Ok(Some(next)) = next {
                    pending = Some(start_page(&api_url, &since, next, page_size)?);
                }
                log::event(
                    Level::Info,
                    "fetch",
                    &format!("Fetched page {page} ({} rows)", body.len()),
                    &json!({"page": page, "count": body.len()}),
                );
                // Rows are mapped here, not while reading the page, so the next page is already on its way.
                let mut raw_rows = None;
                for row in 0..body.len() {
                    let (updated_at, supplier) = match body.read(row) {
                        Ok(read) => read,
                        Err(reason) => {
                            // One bad row must not fail every run until the source fixes it:
                            // set it aside (the host keeps it and counts it) and go on.
                            count += 1;
                            let raw = match &raw_rows {
                                Some(rows) => rows,
                                None => raw_rows.insert(body.raw_rows(&response.body, page)?),
                            };
                            let raw = raw.get(row).map_or("", |r: &&RawValue| r.get());
                            let reason = format!("page {page}, row {row}: {reason}");
                            log::warn(&format!("Setting a row aside: {reason}"));
                            r.reject(raw, &reason)
                                .map_err(|e| format!("{reason}; the row could not be set aside: {}", e.message()))?;
                            if let Some(at) = serde_json::from_str::<Value>(raw)
                                .ok()
                                .and_then(|v| v.get("updated_at")?.as_str().and_then(|t| parse_timestamp(t).ok()))
                            {
                                watermark = watermark.max(at.min(run_start));
                            }
                            continue;
                        }
                    };
                    count += 1;
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
                match next? {
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

/// A page as Acme sends it: its rows read in one pass over the body when
/// they all read, else left raw so each bad one can be set aside.
struct Page<'a> {
    rows: Rows<'a>,
    next_page: Value,
}

enum Rows<'a> {
    Typed(Vec<AcmeSupplier<'a>>),
    Raw(Vec<&'a RawValue>),
}

impl<'a> Page<'a> {
    fn len(&self) -> usize {
        match &self.rows {
            Rows::Typed(rows) => rows.len(),
            Rows::Raw(rows) => rows.len(),
        }
    }

    /// Row `row`'s `updated_at` and the supplier it maps to, or why it cannot be read.
    fn read(&self, row: usize) -> Result<(DateTime<Utc>, Supplier), String> {
        match &self.rows {
            Rows::Typed(rows) => map_row(&rows[row]),
            Rows::Raw(rows) => read_row(rows[row]),
        }
    }

    /// The rows as raw JSON, to set one aside.
    fn raw_rows(&self, body: &'a [u8], page: u64) -> Result<Vec<&'a RawValue>, String> {
        match &self.rows {
            Rows::Raw(rows) => Ok(rows.clone()),
            Rows::Typed(_) => Ok(raw_page(body, page)?.data),
        }
    }

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

/// The page with its rows typed: the one pass the common case needs.
#[derive(Deserialize)]
struct TypedPage<'a> {
    #[serde(default, borrow)]
    data: Vec<AcmeSupplier<'a>>,
    #[serde(default)]
    next_page: Value,
}

/// The page with its rows left raw, when some row does not read.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(default, borrow)]
    data: Vec<&'a RawValue>,
    #[serde(default)]
    next_page: Value,
}

/// One source row: its `updated_at` and the supplier it maps to, or why it cannot be read.
fn read_row(raw: &RawValue) -> Result<(DateTime<Utc>, Supplier), String> {
    let ext: AcmeSupplier<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("the row does not read: {e}"))?;
    map_row(&ext)
}

fn map_row(ext: &AcmeSupplier<'_>) -> Result<(DateTime<Utc>, Supplier), String> {
    let updated_at = ext.updated_at.as_deref().ok_or("updated_at is missing")?;
    let updated_at = parse_timestamp(updated_at).map_err(|e| format!("updated_at {e}"))?;
    Ok((updated_at, map_supplier(ext)?))
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
    #[serde(borrow, default)]
    address: Option<AcmeAddress<'a>>,
}

/// The address fields Acme sends; a field that is not a string counts as absent.
#[derive(Default)]
struct AcmeAddress<'a> {
    street: Option<Cow<'a, str>>,
    city: Option<Cow<'a, str>>,
    country: Option<Cow<'a, str>>,
    /// `{}`: no keys at all, which makes no location.
    empty: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for AcmeAddress<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Fields<'a> {
            type Value = AcmeAddress<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut address = AcmeAddress { empty: true, ..AcmeAddress::default() };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    address.empty = false;
                    let slot = match key.as_ref() {
                        "street" => &mut address.street,
                        "city" => &mut address.city,
                        "country" => &mut address.country,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = map.next_value::<Text<'a>>()?.0;
                }
                Ok(address)
            }
        }
        deserializer.deserialize_map(Fields(PhantomData))
    }
}

/// A JSON string's text; any other value reads as absent.
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyValue<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for AnyValue<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(AnyValue(PhantomData))
    }
}

fn start_page(api_url: &str, since: &str, page: u64, page_size: i64) -> Result<http::Pending, String> {
    http::get(format!("{}/suppliers", api_url.trim_end_matches('/')))
        .query("updated_after", since)
        .query("page", page)
        .query("per_page", page_size)
        .header("accept", "application/json")
        .bearer_secret(TOKEN_SECRET)
        .start()
        .map_err(|e| format!("page {page}: {}", e.message()))
}

/// Reads a page in one pass when every row has the expected shape.
fn read_page(body: &[u8], page: u64) -> Result<Page<'_>, String> {
    if let Ok(typed) = serde_json::from_slice::<TypedPage<'_>>(body) {
        return Ok(Page { rows: Rows::Typed(typed.data), next_page: typed.next_page });
    }
    let raw = raw_page(body, page)?;
    Ok(Page { rows: Rows::Raw(raw.data), next_page: raw.next_page })
}

fn raw_page(body: &[u8], page: u64) -> Result<RawPage<'_>, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("page {page}: the response is not the expected JSON {{\"data\": [...], \"next_page\": N|null}} ({e})")
    })
}

/// External Acme row → Nuntiq supplier, with one MAIN location when there is an address.
fn map_supplier(ext: &AcmeSupplier<'_>) -> Result<Supplier, String> {
    let number = match ext.number.map(RawValue::get) {
        Some(n) if n.starts_with('"') => serde_json::from_str::<Cow<'_, str>>(n)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned),
        Some(n) => serde_json::from_str::<serde_json::Number>(n).ok().map(|n| n.to_string()),
        None => None,
    }
    .ok_or("number is missing")?;
    let name = ext.name.as_deref().filter(|n| !n.is_empty()).ok_or("name is missing")?;
    let mut s = supplier(number, name);
    s.is_active = Some(ext.active.unwrap_or(true));
    // VAT numbers live on Organization, not Supplier: vat_number is ignored here.
    if let Some(ext_address) = ext.address.as_ref().filter(|a| !a.empty) {
        let mut loc = location("MAIN");
        loc.location_name = Some("Headquarters".into());
        loc.is_active = Some(true);
        let mut addr = address();
        let text = |t: &Option<Cow<'_, str>>| t.as_deref().map(str::to_owned);
        addr.street = Some(text(&ext_address.street).unwrap_or_default());
        addr.city = Some(text(&ext_address.city).unwrap_or_default());
        addr.country_code = Some(text(&ext_address.country).unwrap_or_else(|| "XX".into()));
        loc.addresses.push(addr);
        s.locations.push(loc);
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
    fn a_page_reads_the_same_in_one_pass_as_row_by_row() {
        let rows = [
            r#"{"number": "A-1", "name": "Caf\u00e9", "updated_at": "2026-01-01T10:00:00+02:00", "vat_number": "X",
                "address": {"street": "Main 1", "city": 7, "country": null, "zip": "1234", "extra": {"a": [1]}}}"#,
            r#"{"number": 42, "name": "N", "active": false, "updated_at": "2026-01-01T00:00:00Z", "address": {}}"#,
            r#"{"number": "B", "name": "M", "updated_at": "2026-01-01T00:00:00Z", "address": null}"#,
        ];
        let page = format!(r#"{{"data": [{}], "next_page": 2}}"#, rows.join(","));
        let read = read_page(page.as_bytes(), 1).unwrap();
        assert!(matches!(read.rows, Rows::Typed(_)), "every row reads: one pass");
        // wit-bindgen's records have Debug, not PartialEq.
        let alone = |row: &str| format!("{:?}", read_row(&serde_json::from_str::<Box<RawValue>>(row).unwrap()));
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(format!("{:?}", read.read(i)), alone(row));
        }
        let (_, first) = read.read(0).unwrap();
        let a = &first.locations[0].addresses[0];
        assert_eq!((a.street.as_deref(), a.city.as_deref(), a.country_code.as_deref()), (Some("Main 1"), Some(""), Some("XX")));

        // A row of the wrong shape leaves the page raw: the good rows read as before, the bad one says why.
        let bad = r#"{"number": "C", "name": "O", "active": "yes", "updated_at": "2026-01-01T00:00:00Z"}"#;
        let dup = r#"{"number": "D", "name": "P", "updated_at": "2026-01-01T00:00:00Z", "address": {"city": "a", "city": "b"}}"#;
        let page = format!(r#"{{"data": [{}, {bad}, {dup}], "next_page": null}}"#, rows[0]);
        let read = read_page(page.as_bytes(), 1).unwrap();
        assert!(matches!(read.rows, Rows::Raw(_)));
        assert_eq!(format!("{:?}", read.read(0)), alone(rows[0]));
        assert!(read.read(1).unwrap_err().contains("does not read"));
        assert!(read.read(2).unwrap_err().contains("duplicate field `city`"));
        assert_eq!(read.raw_rows(page.as_bytes(), 1).unwrap()[1].get(), bad);
        assert_eq!(read.next(1), Ok(None));
    }

    #[test]
    fn pages_name_their_next_page_as_a_number_or_a_string() {
        let page = |json: &str, n| read_page(json.as_bytes(), 1).unwrap().next(n);
        assert_eq!(page(r#"{"data": [], "next_page": 3}"#, 2), Ok(Some(3)));
        assert_eq!(page(r#"{"data": [], "next_page": "3"}"#, 2), Ok(Some(3)));
        assert_eq!(page(r#"{"data": [], "next_page": null}"#, 2), Ok(None));
        assert!(page(r#"{"data": [], "next_page": 1}"#, 2).is_err());
    }
}

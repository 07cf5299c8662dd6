//! Contender "plain": the Acme supplier feed loaded by a plain Rust program,
//! written the way a Rust author who wants it fast would write it — no wasm,
//! no nuntiq-host code — into its own natural-key SQLite schema carrying every
//! platform column.
//!
//! One thread fetches each page (reqwest, the query the connector sends) and
//! parses it with serde straight from the response body into typed rows whose
//! text lands in one reused buffer per page; the main thread writes them
//! through a bounded channel: prepared statements bound once with the values
//! that never change, `INSERT … ON CONFLICT DO UPDATE` upserts on the natural
//! keys, the location's addresses deleted and re-inserted, 1000 suppliers per
//! transaction, WAL with `synchronous=NORMAL`, the cursor committed with the
//! last rows.
//!
//! SQLite is the same bundled build the host links (rusqlite 0.37). The
//! connection comes from `nuntiq_e2e::Db::open_rw`, which is a bare
//! `rusqlite::Connection::open`: naming `rusqlite` here would need a
//! `Cargo.lock` change outside `bench/`. Nothing below names the crate.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::mpsc;

const CUSTOMER: &str = "10000001";
const CONNECTOR: &str = "acme_eu";
const STREAM: &str = "suppliers";
/// The platform's request size; one transaction each.
const SUPPLIERS_PER_TRANSACTION: usize = 1000;
/// Pages parsed ahead of the writer at most.
const PAGES_AHEAD: usize = 8;

/// The platform's supplier contract, keyed by natural keys, without rowids.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS supplier (
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL,
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 INTEGER NOT NULL,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, organization_code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS supplier_location (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    location_name              TEXT,
    organization_code          TEXT,
    default_currency_code      TEXT,
    default_payment_term_code  TEXT,
    default_payment_method     TEXT,
    taxpayer_id                TEXT,
    duns_number                TEXT,
    is_active                  INTEGER NOT NULL,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    custom_field_4             TEXT,
    custom_field_5             TEXT,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS supplier_address (
    customer_number            TEXT NOT NULL,
    supplier_number            TEXT NOT NULL,
    supplier_organization_code TEXT NOT NULL,
    location_code              TEXT NOT NULL,
    position                   INTEGER NOT NULL,
    street                     TEXT,
    city                       TEXT,
    state                      TEXT,
    postal_code                TEXT,
    country_code               TEXT,
    custom_field_1             TEXT,
    custom_field_2             TEXT,
    custom_field_3             TEXT,
    PRIMARY KEY (customer_number, supplier_number, supplier_organization_code, location_code, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sync_state (
    customer_number TEXT NOT NULL,
    connector_name  TEXT NOT NULL,
    stream_name     TEXT NOT NULL,
    cursor          TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (customer_number, connector_name, stream_name)
) WITHOUT ROWID;
"#;

// Parameters: ?1 customer, ?2 number, ?3 organization, ?4 name, ?5..?6 alternative
// name and type, ?7 active, ?8..?12 custom fields, ?13 now. Those the Acme feed
// has no value for stay unbound: NULL.
const UPSERT_SUPPLIER: &str = "
INSERT INTO supplier (customer_number, supplier_number, organization_code, supplier_name,
    alternative_supplier_name, supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3,
    custom_field_4, custom_field_5, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
    supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
    supplier_type = excluded.supplier_type, is_active = excluded.is_active,
    custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
    custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
    custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at";

// ?1 customer, ?2 number, ?3 supplier organization, ?4 location code, ?5 name,
// ?6 organization, ?7..?11 currency, payment term, payment method, taxpayer id,
// DUNS, ?12 active, ?13..?17 custom fields, ?18 now.
const UPSERT_LOCATION: &str = "
INSERT INTO supplier_location (customer_number, supplier_number, supplier_organization_code, location_code,
    location_name, organization_code, default_currency_code, default_payment_term_code, default_payment_method,
    taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
    custom_field_5, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18)
ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO UPDATE SET
    location_name = excluded.location_name, organization_code = excluded.organization_code,
    default_currency_code = excluded.default_currency_code,
    default_payment_term_code = excluded.default_payment_term_code,
    default_payment_method = excluded.default_payment_method, taxpayer_id = excluded.taxpayer_id,
    duns_number = excluded.duns_number, is_active = excluded.is_active,
    custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
    custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
    custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at";

const DELETE_ADDRESSES: &str = "
DELETE FROM supplier_address
WHERE customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3 AND location_code = ?4";

// ?1..?4 the location's key, ?5 position, ?6 street, ?7 city, ?8 state,
// ?9 postal code, ?10 country, ?11..?13 custom fields.
const INSERT_ADDRESS: &str = "
INSERT INTO supplier_address (customer_number, supplier_number, supplier_organization_code, location_code,
    position, street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

const SAVE_CURSOR: &str = "
INSERT INTO sync_state (customer_number, connector_name, stream_name, cursor, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (customer_number, connector_name, stream_name) DO UPDATE SET
    cursor = excluded.cursor, updated_at = excluded.updated_at";

/// A piece of a page's text buffer.
#[derive(Clone, Copy)]
struct Span(u32, u32);

/// One mapped supplier; its text lives in the page's buffer.
struct Row {
    number: Span,
    name: Span,
    active: bool,
    /// Street, city, country of the MAIN location's one address.
    address: Option<[Span; 3]>,
}

/// A parsed page, handed from the fetch thread to the writer and back.
#[derive(Default)]
struct Batch {
    text: String,
    rows: Vec<Row>,
}

impl Batch {
    fn push_str(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span(start, self.text.len() as u32)
    }

    fn get(&self, span: Span) -> &str {
        &self.text[span.0 as usize..span.1 as usize]
    }
}

/// A JSON string, borrowed from the body unless it has escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// Acme's `number`: a string or a JSON number, as text.
struct Number<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Number<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Number<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Number(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Number(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Number(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Number(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Number(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An address field: its text when it is a string; anything else counts as absent.
struct Lenient<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Lenient<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Acme's address object; `present` is false for `{}` (which makes no location).
struct Address<'a> {
    street: Option<Cow<'a, str>>,
    city: Option<Cow<'a, str>>,
    country: Option<Cow<'a, str>>,
    present: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Address<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Address<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an address object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut a = Address::<'a> {
                    street: None,
                    city: None,
                    country: None,
                    present: false,
                };
                while let Some(key) = map.next_key::<Text<'a>>()? {
                    a.present = true;
                    match &*key.0 {
                        "street" => a.street = map.next_value::<Lenient<'a>>()?.0,
                        "city" => a.city = map.next_value::<Lenient<'a>>()?.0,
                        "country" => a.country = map.next_value::<Lenient<'a>>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(a)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// One Acme row; fields the platform has no place for (vat_number) are skipped.
#[derive(Deserialize)]
struct AcmeSupplier<'a> {
    #[serde(borrow)]
    number: Option<Number<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    active: Option<bool>,
    #[serde(borrow)]
    updated_at: Option<Text<'a>>,
    #[serde(borrow)]
    address: Option<Address<'a>>,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow, default)]
    data: Vec<AcmeSupplier<'a>>,
    next_page: Option<u64>,
}

/// Reads one page body into `batch`; returns the next page and the newest `updated_at`.
fn parse_page(
    body: &[u8],
    batch: &mut Batch,
    newest: &mut Option<DateTime<Utc>>,
) -> anyhow::Result<Option<u64>> {
    let page: Page<'_> = serde_json::from_slice(body)?;
    batch.rows.reserve(page.data.len());
    for ext in page.data {
        let number = ext.number.map(|n| n.0).filter(|n| !n.is_empty());
        let number = number.ok_or_else(|| anyhow::anyhow!("a row has no number"))?;
        let name = ext.name.map(|n| n.0).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| anyhow::anyhow!("supplier {number} has no name"))?;
        let updated_at = ext
            .updated_at
            .ok_or_else(|| anyhow::anyhow!("supplier {number} has no updated_at"))?;
        let at = DateTime::parse_from_rfc3339(updated_at.0.trim())?.with_timezone(&Utc);
        if newest.is_none_or(|n| at > n) {
            *newest = Some(at);
        }
        let row = Row {
            number: batch.push_str(&number),
            name: batch.push_str(&name),
            active: ext.active.unwrap_or(true),
            address: ext.address.filter(|a| a.present).map(|a| {
                [
                    batch.push_str(a.street.as_deref().unwrap_or("")),
                    batch.push_str(a.city.as_deref().unwrap_or("")),
                    batch.push_str(a.country.as_deref().unwrap_or("XX")),
                ]
            }),
        };
        batch.rows.push(row);
    }
    Ok(page.next_page)
}

/// The fetch thread: every page in order, parsed, handed to the writer.
fn fetch(
    api_url: String,
    token: String,
    since: String,
    page_size: u32,
    full: mpsc::SyncSender<Batch>,
    empty: mpsc::Receiver<Batch>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::new();
        let url = format!("{}/suppliers", api_url.trim_end_matches('/'));
        let per_page = page_size.to_string();
        let mut newest = None;
        let mut page = 1u64;
        loop {
            let body = client
                .get(&url)
                .query(&[
                    ("updated_after", since.as_str()),
                    ("page", &page.to_string()),
                    ("per_page", &per_page),
                ])
                .header("accept", "application/json")
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let mut batch = empty.try_recv().unwrap_or_default();
            batch.text.clear();
            batch.rows.clear();
            let next = parse_page(&body, &mut batch, &mut newest)?;
            if full.send(batch).is_err() {
                // The writer stopped; its error is the one to report.
                return Ok(newest);
            }
            match next {
                Some(next) if next > page => page = next,
                Some(next) if next != 0 => anyhow::bail!("page {page} says next_page is {next}"),
                _ => return Ok(newest),
            }
        }
    })
}

/// The fetch thread's handle, the channel it fills with parsed pages, and
/// the one that hands their buffers back.
type Fetching = (
    std::thread::JoinHandle<anyhow::Result<Option<DateTime<Utc>>>>,
    mpsc::Receiver<Batch>,
    mpsc::SyncSender<Batch>,
);

fn spawn_fetch(api_url: &str, token: &str, since: &str, page_size: u32) -> anyhow::Result<Fetching> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Batch>(PAGES_AHEAD);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Batch>(PAGES_AHEAD + 2);
    let (api_url, token, since) = (api_url.to_owned(), token.to_owned(), since.to_owned());
    let fetcher = std::thread::Builder::new()
        .name("fetch".into())
        .spawn(move || fetch(api_url, token, since, page_size, full_tx, empty_rx))?;
    Ok((fetcher, full_rx, empty_tx))
}

/// Every page fetched and parsed as [`plain`] does, on its fetch thread, and
/// nothing written: the floor under any re-read of the window. Returns the rows read.
pub fn read_only(api_url: &str, token: &str, since: &str, page_size: u32) -> anyhow::Result<usize> {
    let (fetcher, full_rx, empty_tx) = spawn_fetch(api_url, token, since, page_size)?;
    let mut rows = 0;
    for batch in full_rx.iter() {
        rows += batch.rows.len();
        let _ = empty_tx.try_send(batch);
    }
    fetcher
        .join()
        .map_err(|_| anyhow::anyhow!("the fetch thread panicked"))??;
    Ok(rows)
}

const LOAD_CURSOR: &str = "
SELECT cursor FROM sync_state WHERE customer_number = ?1 AND connector_name = ?2 AND stream_name = ?3";

/// Loads every supplier updated after `since` (the stored cursor when `None`,
/// else the last seven days); returns how many.
pub fn plain(api_url: &str, token: &str, since: Option<&str>, page_size: u32, db: &Path) -> anyhow::Result<usize> {
    let conn = nuntiq_e2e::Db::open_rw(db);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let since = match since {
        Some(since) => since.to_owned(),
        None => {
            let mut stmt = conn.prepare(LOAD_CURSOR)?;
            let mut rows = stmt.query((CUSTOMER, CONNECTOR, STREAM))?;
            match rows.next()? {
                Some(row) => row.get(0)?,
                None => (Utc::now() - chrono::Duration::days(7)).to_rfc3339_opts(SecondsFormat::Secs, true),
            }
        }
    };

    let (fetcher, full_rx, empty_tx) = spawn_fetch(api_url, token, &since, page_size)?;

    // Prepared once; the values that never change are bound once (SQLite keeps
    // bindings across executions), the rest per row.
    let mut upsert_supplier = conn.prepare(UPSERT_SUPPLIER)?;
    upsert_supplier.raw_bind_parameter(1, CUSTOMER)?;
    upsert_supplier.raw_bind_parameter(3, "")?;
    upsert_supplier.raw_bind_parameter(13, now.as_str())?;
    let mut upsert_location = conn.prepare(UPSERT_LOCATION)?;
    upsert_location.raw_bind_parameter(1, CUSTOMER)?;
    upsert_location.raw_bind_parameter(3, "")?;
    upsert_location.raw_bind_parameter(4, "MAIN")?;
    upsert_location.raw_bind_parameter(5, "Headquarters")?;
    upsert_location.raw_bind_parameter(12, true)?;
    upsert_location.raw_bind_parameter(18, now.as_str())?;
    let mut delete_addresses = conn.prepare(DELETE_ADDRESSES)?;
    delete_addresses.raw_bind_parameter(1, CUSTOMER)?;
    delete_addresses.raw_bind_parameter(3, "")?;
    delete_addresses.raw_bind_parameter(4, "MAIN")?;
    let mut insert_address = conn.prepare(INSERT_ADDRESS)?;
    insert_address.raw_bind_parameter(1, CUSTOMER)?;
    insert_address.raw_bind_parameter(3, "")?;
    insert_address.raw_bind_parameter(4, "MAIN")?;
    insert_address.raw_bind_parameter(5, 0i64)?;

    let mut written = 0usize;
    let mut in_transaction = 0usize;
    let write = (|| -> anyhow::Result<()> {
        for batch in full_rx.iter() {
            for row in &batch.rows {
                if in_transaction == 0 {
                    conn.execute_batch("BEGIN IMMEDIATE")?;
                }
                let number = batch.get(row.number);
                upsert_supplier.raw_bind_parameter(2, number)?;
                upsert_supplier.raw_bind_parameter(4, batch.get(row.name))?;
                upsert_supplier.raw_bind_parameter(7, row.active)?;
                upsert_supplier.raw_execute()?;
                if let Some([street, city, country]) = row.address {
                    upsert_location.raw_bind_parameter(2, number)?;
                    upsert_location.raw_execute()?;
                    delete_addresses.raw_bind_parameter(2, number)?;
                    delete_addresses.raw_execute()?;
                    insert_address.raw_bind_parameter(2, number)?;
                    insert_address.raw_bind_parameter(6, batch.get(street))?;
                    insert_address.raw_bind_parameter(7, batch.get(city))?;
                    insert_address.raw_bind_parameter(10, batch.get(country))?;
                    insert_address.raw_execute()?;
                }
                written += 1;
                in_transaction += 1;
                if in_transaction == SUPPLIERS_PER_TRANSACTION {
                    conn.execute_batch("COMMIT")?;
                    in_transaction = 0;
                }
            }
            let _ = empty_tx.try_send(batch);
        }
        Ok(())
    })();
    // Closing the channel stops the fetcher if the writer failed.
    drop(full_rx);
    let newest = fetcher
        .join()
        .map_err(|_| anyhow::anyhow!("the fetch thread panicked"))?;
    write?;
    let newest = newest?;

    // The cursor goes in with the last rows: never ahead of what was written.
    if in_transaction == 0 {
        conn.execute_batch("BEGIN IMMEDIATE")?;
    }
    // Never backwards: a run that fetched nothing keeps its lower bound.
    let cursor = match newest {
        Some(at) if DateTime::parse_from_rfc3339(&since).is_ok_and(|s| at > s) => {
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        }
        _ => since,
    };
    conn.prepare(SAVE_CURSOR)?
        .execute((CUSTOMER, CONNECTOR, STREAM, cursor.as_str(), now.as_str()))?;
    conn.execute_batch("COMMIT")?;
    Ok(written)
}

// ---------------------------------------------------------------- PostgreSQL

/// Contender "plain PostgreSQL": the same fetch thread, written by the
/// program a Rust author would write for PostgreSQL — tokio-postgres, the
/// host's PostgreSQL table ([`PG_SCHEMA`]: a supplier per row, its locations
/// a JSON document built with `serde_json`), 1000 suppliers per transaction
/// written by one multi-row `unnest()` upsert, and a transaction's
/// statements pipelined (sent together, the server's answers read after). Batches commit without
/// waiting for the WAL flush; the last one, with the cursor, waits. It does
/// less than the host: no change detection (a re-read rewrites every row),
/// and only the columns the Acme feed fills.
pub fn plain_pg(api_url: &str, token: &str, since: Option<&str>, page_size: u32, url: &str) -> anyhow::Result<usize> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(plain_pg_async(api_url, token, since, page_size, url))
}

/// The host's PostgreSQL supplier table: one row per supplier, its locations
/// (with their addresses) a JSON document on it, which the host's views show
/// as the location and address tables. Without the host's change-detection
/// fingerprint, which this loader does not do.
const PG_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS supplier (
    customer_number           TEXT NOT NULL,
    supplier_number           TEXT NOT NULL,
    organization_code         TEXT NOT NULL,
    supplier_name             TEXT NOT NULL,
    alternative_supplier_name TEXT,
    supplier_type             TEXT,
    is_active                 BIGINT NOT NULL,
    custom_field_1            TEXT,
    custom_field_2            TEXT,
    custom_field_3            TEXT,
    custom_field_4            TEXT,
    custom_field_5            TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    locations                 JSON NOT NULL DEFAULT '[]',
    PRIMARY KEY (customer_number, supplier_number, organization_code)
);
CREATE TABLE IF NOT EXISTS sync_state (
    customer_number TEXT NOT NULL,
    connector_name  TEXT NOT NULL,
    stream_name     TEXT NOT NULL,
    cursor          TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (customer_number, connector_name, stream_name)
);
"#;

const PG_UPSERT_SUPPLIER: &str = "
INSERT INTO supplier (customer_number, supplier_number, organization_code, supplier_name, is_active, created_at,
    updated_at, locations)
SELECT $1, t.number, '', t.name, t.active, $4, $4, t.locations::json
FROM unnest($2::text[], $3::text[], $5::int8[], $6::text[]) AS t(number, name, active, locations)
ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
    supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
    supplier_type = excluded.supplier_type, is_active = excluded.is_active,
    custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
    custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
    custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at, locations = excluded.locations";

/// One transaction's rows as column arrays.
#[derive(Default)]
struct PgColumns {
    number: Vec<String>,
    name: Vec<String>,
    active: Vec<i64>,
    /// Each supplier's locations document, as JSON text.
    locations: Vec<String>,
}

impl PgColumns {
    fn clear(&mut self) {
        for c in [&mut self.number, &mut self.name, &mut self.locations] {
            c.clear();
        }
        self.active.clear();
    }
}

struct PgStatements {
    upsert_supplier: tokio_postgres::Statement,
}

/// One transaction: BEGIN, the rows' upsert, the cursor if given, COMMIT —
/// all sent before the first answer is read.
async fn write_pg(
    client: &tokio_postgres::Client,
    s: &PgStatements,
    cols: &PgColumns,
    now: &str,
    cursor: Option<(&tokio_postgres::Statement, &str)>,
) -> Result<(), tokio_postgres::Error> {
    type P<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
    let supplier: [P<'_>; 6] = [&CUSTOMER, &cols.number, &cols.name, &now, &cols.active, &cols.locations];
    let cursor_value = cursor.map(|(_, c)| c).unwrap_or_default();
    let saved: [P<'_>; 5] = [&CUSTOMER, &CONNECTOR, &STREAM, &cursor_value, &now];
    // A batch commits without waiting for its WAL flush: the cursor's own
    // commit waits, and flushes every batch before it (the host does the same;
    // SQLite's `synchronous=NORMAL` is the like of it).
    let begin = match cursor {
        Some(_) => "BEGIN",
        None => "BEGIN; SET LOCAL synchronous_commit = off",
    };
    tokio::try_join!(
        client.batch_execute(begin),
        client.execute(&s.upsert_supplier, &supplier),
        async {
            match cursor {
                Some((statement, _)) => client.execute(statement, &saved).await,
                None => Ok(0),
            }
        },
        client.batch_execute("COMMIT"),
    )?;
    Ok(())
}

async fn plain_pg_async(
    api_url: &str,
    token: &str,
    since: Option<&str>,
    page_size: u32,
    url: &str,
) -> anyhow::Result<usize> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("{PG_SCHEMA}\nSET synchronous_commit = on"))
        .await?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let since = match since {
        Some(since) => since.to_owned(),
        None => match client
            .query_opt(&LOAD_CURSOR.replace("?1", "$1").replace("?2", "$2").replace("?3", "$3"), &[
                &CUSTOMER, &CONNECTOR, &STREAM,
            ])
            .await?
        {
            Some(row) => row.get(0),
            None => (Utc::now() - chrono::Duration::days(7)).to_rfc3339_opts(SecondsFormat::Secs, true),
        },
    };
    let (fetcher, full_rx, empty_tx) = spawn_fetch(api_url, token, &since, page_size)?;
    let upsert_supplier = client.prepare(PG_UPSERT_SUPPLIER).await?;

    // The fetch thread's channel is blocking: read it on a blocking thread.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(PAGES_AHEAD);
    let forward = tokio::task::spawn_blocking(move || {
        for batch in full_rx.iter() {
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
    });

    let statements = PgStatements { upsert_supplier };
    let mut cols = PgColumns::default();
    let mut written = 0usize;
    let write = async {
        while let Some(batch) = rx.recv().await {
            for row in &batch.rows {
                let number = batch.get(row.number);
                cols.number.push(number.to_owned());
                cols.name.push(batch.get(row.name).to_owned());
                cols.active.push(row.active.into());
                let locations = match row.address {
                    Some([street, city, country]) => serde_json::json!([{
                        "location_code": "MAIN",
                        "location_name": "Headquarters",
                        "is_active": 1,
                        "created_at": now,
                        "updated_at": now,
                        "addresses": [{
                            "street": batch.get(street),
                            "city": batch.get(city),
                            "country_code": batch.get(country),
                        }],
                    }]),
                    None => serde_json::json!([]),
                };
                cols.locations.push(locations.to_string());
                if cols.number.len() == SUPPLIERS_PER_TRANSACTION {
                    write_pg(&client, &statements, &cols, &now, None).await?;
                    written += cols.number.len();
                    cols.clear();
                }
            }
            let _ = empty_tx.try_send(batch);
        }
        anyhow::Ok(())
    }
    .await;
    drop(rx);
    let _ = forward.await;
    let newest = fetcher
        .join()
        .map_err(|_| anyhow::anyhow!("the fetch thread panicked"))?;
    write?;
    let newest = newest?;

    // The cursor goes in with the last rows: never ahead of what was written.
    let cursor = match newest {
        Some(at) if DateTime::parse_from_rfc3339(&since).is_ok_and(|s| at > s) => {
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
        }
        _ => since,
    };
    let save_cursor = client
        .prepare(&SAVE_CURSOR.replace("?1", "$1").replace("?2", "$2").replace("?3", "$3").replace("?4", "$4").replace("?5", "$5"))
        .await?;
    write_pg(&client, &statements, &cols, &now, Some((&save_cursor, &cursor))).await?;
    written += cols.number.len();
    drop(client);
    let _ = connection.await;
    Ok(written)
}

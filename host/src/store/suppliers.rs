//! The supplier store: natural-key tables (no surrogate ids, no second
//! index), and an upsert that writes nothing for a supplier whose content
//! fingerprint is what the store already holds. Each engine writes its own
//! fastest way: SQLite one prepared statement per row (in-process, a row is
//! cheaper than a round trip), PostgreSQL a few array statements per batch
//! (`unnest`), so a batch of 1000 costs a handful of round trips.

use super::StoreError;
use super::backend::LoadOptions;
use super::children;
use super::postgres::PgConn;
use super::records::SupplierRecord;
use super::schema::now_utc;
use super::sql::{Conn, transaction};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{OptionalExtension, ToSql, params};
use serde::Serialize;
use std::collections::HashSet;

/// The platform splits `save_all` into requests of 1000 rows; so do our transactions.
pub const SUPPLIERS_PER_TRANSACTION: usize = 1000;

/// What an upsert did, supplier by supplier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SaveCounts {
    pub inserted: u64,
    pub updated: u64,
    /// Equal to what the store held: nothing was written.
    pub unchanged: u64,
    /// Refused by the store one by one (the Customer API's validation) and
    /// set aside as rejected rows; the rest of their batch was written.
    #[serde(skip_serializing_if = "is_zero")]
    pub refused: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl SaveCounts {
    pub fn add(&mut self, other: SaveCounts) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.refused += other.refused;
    }

    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// Suppliers written by one run past which PostgreSQL's statistics are
/// refreshed at its end: plans made while a table was small (a first load)
/// would otherwise scan it whole for the next run's updates.
pub const ANALYZE_AFTER_WRITES: u64 = 5_000;

/// Refreshes the supplier tables' statistics (PostgreSQL; SQLite plans by its indexes).
pub async fn refresh_statistics(conn: &mut Conn) -> Result<(), StoreError> {
    if let Conn::Postgres(_) = conn {
        // The key columns only: every statement here finds rows by key, and
        // the other columns' statistics cost three times as long to gather.
        conn.execute(
            "ANALYZE supplier (customer_number, supplier_number, organization_code),
                 supplier_location (customer_number, supplier_number, supplier_organization_code, location_code),
                 supplier_address (customer_number, supplier_number, supplier_organization_code, location_code)",
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Upserts `suppliers` in transactions of [`SUPPLIERS_PER_TRANSACTION`].
/// With `full_load`, the first transaction deletes the customer's other
/// suppliers first.
///
/// On PostgreSQL these commit without waiting for the WAL to reach the disk
/// (`synchronous_commit = off`, a flush per batch was a third of a first
/// load): the cursor is only ever committed by a transaction that waits, and
/// that wait flushes the WAL up to it, every earlier batch included. A server
/// crash can lose batches whose cursor was not committed yet, which the next
/// run fetches again — as SQLite's `synchronous=NORMAL` does on power loss.
pub async fn save_suppliers(
    conn: &mut Conn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    let mut counts = SaveCounts::default();
    let mut options = options;
    for chunk in suppliers.chunks(SUPPLIERS_PER_TRANSACTION) {
        counts.add(
            transaction(conn, async |tx: &mut Conn| {
                if tx.engine() == super::sql::Engine::Postgres {
                    tx.batch("SET LOCAL synchronous_commit = off").await?;
                }
                upsert_suppliers(tx, customer_number, chunk, options).await
            })
            .await?,
        );
        options.full_load = false;
    }
    Ok(counts)
}

/// Upserts on (customer_number, supplier_number, organization_code), inside
/// the caller's transaction: a new supplier is inserted with its locations
/// and addresses; a changed one is updated, each listed location upserted on
/// its code and its addresses replaced; an unchanged one (same fingerprint)
/// is left as it is. Of one supplier listed twice, the last wins. The load
/// options: `full_load` deletes the customer's suppliers first; insert-only
/// addresses and bank accounts are written by [`children`].
pub(super) async fn upsert_suppliers(
    conn: &mut Conn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    options: LoadOptions,
) -> Result<SaveCounts, StoreError> {
    if suppliers.is_empty() {
        return Ok(SaveCounts::default());
    }
    if options.full_load {
        children::delete_all(conn, customer_number).await?;
    }
    let plan = children::plan(conn, customer_number, suppliers, options).await?;
    let counts = upsert_in_bulk(conn, customer_number, suppliers, !options.address_insert_only).await?;
    if let Some(plan) = plan {
        plan.apply(conn, customer_number, suppliers).await?;
    }
    Ok(counts)
}

/// Suppliers, their locations and (with `replace_addresses`) their addresses.
async fn upsert_in_bulk(
    conn: &mut Conn,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    replace_addresses: bool,
) -> Result<SaveCounts, StoreError> {
    match conn {
        Conn::Sqlite(c) => {
            let counts = upsert_sqlite(&c.conn, customer_number, suppliers, c.inserting, replace_addresses)?;
            // The next batch guesses from this one: a first load inserts, a re-read finds.
            c.inserting = counts.inserted * 2 > counts.total();
            Ok(counts)
        }
        Conn::Postgres(c) => {
            // Batches of distinct suppliers: a repeat starts the next batch,
            // so it sees what the earlier one wrote.
            let mut counts = SaveCounts::default();
            let mut start = 0;
            let mut seen = HashSet::new();
            for (i, s) in suppliers.iter().enumerate() {
                if !seen.insert((s.supplier_number.as_str(), s.organization_key())) {
                    counts.add(upsert_postgres(c, customer_number, &suppliers[start..i], replace_addresses).await?);
                    start = i;
                    seen.clear();
                    seen.insert((s.supplier_number.as_str(), s.organization_key()));
                }
            }
            counts.add(upsert_postgres(c, customer_number, &suppliers[start..], replace_addresses).await?);
            Ok(counts)
        }
    }
}

/// SQLite: a statement per row, prepared once per connection. With
/// `inserting` (the last batch was mostly new suppliers) each supplier is
/// inserted first and looked up only when its key is taken; otherwise looked
/// up first and inserted only when absent — one statement for the common
/// case either way.
fn upsert_sqlite(
    tx: &rusqlite::Connection,
    customer_number: &str,
    suppliers: &[SupplierRecord],
    inserting: bool,
    replace_addresses: bool,
) -> rusqlite::Result<SaveCounts> {
    let mut counts = SaveCounts::default();
    let now = now_utc();
    let mut stored_fingerprint = tx.prepare_cached(
        "SELECT fingerprint FROM supplier
         WHERE customer_number = ?1 AND supplier_number = ?2 AND organization_code = ?3",
    )?;
    let mut insert_supplier = tx.prepare_cached(
        "INSERT INTO supplier
             (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
              supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, fingerprint, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1), ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
         ON CONFLICT (customer_number, supplier_number, organization_code) DO NOTHING",
    )?;
    let mut update_supplier = tx.prepare_cached(
        "UPDATE supplier SET supplier_name = ?4, alternative_supplier_name = ?5, supplier_type = ?6,
             is_active = COALESCE(?7, is_active), custom_field_1 = ?8, custom_field_2 = ?9, custom_field_3 = ?10,
             custom_field_4 = ?11, custom_field_5 = ?12, fingerprint = ?13, updated_at = ?14
         WHERE customer_number = ?1 AND supplier_number = ?2 AND organization_code = ?3",
    )?;
    let mut upsert_location = tx.prepare_cached(
        "INSERT INTO supplier_location
             (customer_number, supplier_number, supplier_organization_code, location_code, location_name,
              organization_code, default_currency_code, default_payment_term_code, default_payment_method,
              taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
              custom_field_5, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, COALESCE(?12, 1), ?13, ?14, ?15, ?16, ?17, ?18, ?18)
         ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO UPDATE SET
             location_name = excluded.location_name, organization_code = excluded.organization_code,
             default_currency_code = excluded.default_currency_code,
             default_payment_term_code = excluded.default_payment_term_code,
             default_payment_method = excluded.default_payment_method,
             taxpayer_id = excluded.taxpayer_id, duns_number = excluded.duns_number,
             is_active = COALESCE(?12, supplier_location.is_active),
             custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
             custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
             custom_field_5 = excluded.custom_field_5, updated_at = excluded.updated_at",
    )?;
    let mut delete_addresses = tx.prepare_cached(
        "DELETE FROM supplier_address
         WHERE customer_number = ?1 AND supplier_number = ?2 AND supplier_organization_code = ?3
           AND location_code = ?4",
    )?;
    let mut insert_address = tx.prepare_cached(
        "INSERT INTO supplier_address
             (customer_number, supplier_number, supplier_organization_code, location_code, position,
              street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;

    for s in suppliers {
        let org = s.organization_key();
        let fingerprint = s.fingerprint();
        let supplier_params = params![
            customer_number,
            s.supplier_number,
            org,
            s.supplier_name,
            s.alternative_supplier_name,
            s.supplier_type,
            s.is_active,
            s.custom_field_1,
            s.custom_field_2,
            s.custom_field_3,
            s.custom_field_4,
            s.custom_field_5,
            fingerprint.as_slice(),
            now
        ];
        let stored = |statement: &mut rusqlite::CachedStatement<'_>| {
            statement
                .query_row(params![customer_number, s.supplier_number, org], |r| {
                    r.get::<_, Vec<u8>>(0)
                })
                .optional()
        };
        let held = if inserting {
            if execute_sparse(&mut insert_supplier, supplier_params)? == 1 {
                None
            } else {
                stored(&mut stored_fingerprint)?
            }
        } else {
            match stored(&mut stored_fingerprint)? {
                None => {
                    execute_sparse(&mut insert_supplier, supplier_params)?;
                    None
                }
                held => held,
            }
        };
        let is_new = match held {
            None => {
                counts.inserted += 1;
                true
            }
            Some(held) if held.as_slice() == fingerprint.as_slice() => {
                counts.unchanged += 1;
                continue;
            }
            Some(_) => {
                execute_sparse(&mut update_supplier, supplier_params)?;
                counts.updated += 1;
                false
            }
        };
        for l in &s.locations {
            execute_sparse(
                &mut upsert_location,
                params![
                    customer_number,
                    s.supplier_number,
                    org,
                    l.location_code,
                    l.location_name,
                    l.organization_code,
                    l.default_currency_code,
                    l.default_payment_term_code,
                    l.default_payment_method,
                    l.taxpayer_id,
                    l.duns_number,
                    l.is_active,
                    l.custom_field_1,
                    l.custom_field_2,
                    l.custom_field_3,
                    l.custom_field_4,
                    l.custom_field_5,
                    now
                ],
            )?;
            if !replace_addresses {
                continue;
            }
            // A new supplier has no addresses to replace.
            if !is_new {
                execute_sparse(
                    &mut delete_addresses,
                    params![customer_number, s.supplier_number, org, l.location_code],
                )?;
            }
            for (position, a) in l.addresses.iter().enumerate() {
                execute_sparse(
                    &mut insert_address,
                    params![
                        customer_number,
                        s.supplier_number,
                        org,
                        l.location_code,
                        position as i64,
                        a.street,
                        a.city,
                        a.state,
                        a.postal_code,
                        a.country_code,
                        a.custom_field_1,
                        a.custom_field_2,
                        a.custom_field_3
                    ],
                )?;
            }
        }
    }
    Ok(counts)
}

/// Runs `statement` binding only the values that are not NULL: its bindings
/// are cleared first, so an absent value costs no bind call (most of a
/// supplier's optional columns are absent).
fn execute_sparse(statement: &mut rusqlite::CachedStatement<'_>, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    statement.clear_bindings();
    for (i, value) in values.iter().enumerate() {
        match value.to_sql()? {
            ToSqlOutput::Borrowed(ValueRef::Null) | ToSqlOutput::Owned(Value::Null) => {}
            value => statement.raw_bind_parameter(i + 1, value)?,
        }
    }
    statement.raw_execute()
}

/// PostgreSQL: one batch of distinct suppliers in a few array statements —
/// read the stored fingerprints, then insert the new, update the changed,
/// upsert their locations and replace their addresses.
async fn upsert_postgres(
    conn: &mut PgConn,
    customer: &str,
    suppliers: &[SupplierRecord],
    replace_addresses: bool,
) -> Result<SaveCounts, StoreError> {
    let mut counts = SaveCounts::default();
    if suppliers.is_empty() {
        return Ok(counts);
    }
    // Only what differs comes back: a batch the store already holds costs one
    // statement and returns nothing.
    let fingerprints: Vec<[u8; 16]> = suppliers.iter().map(SupplierRecord::fingerprint).collect();
    let numbers: Vec<&str> = suppliers.iter().map(|s| s.supplier_number.as_str()).collect();
    let orgs: Vec<&str> = suppliers.iter().map(SupplierRecord::organization_key).collect();
    let prints: Vec<&[u8]> = fingerprints.iter().map(|f| f.as_slice()).collect();
    let differing = conn
        .prepared(
            // LATERAL … LIMIT 1: one index probe per key, whatever the table's
            // statistics say (a join may otherwise hash the customer's every supplier).
            "SELECT k.i, s.fingerprint IS NOT NULL
             FROM unnest($2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS k(number, org, fp, i)
             LEFT JOIN LATERAL (
                 SELECT fingerprint FROM supplier
                 WHERE customer_number = $1 AND supplier_number = k.number AND organization_code = k.org
                 LIMIT 1
             ) s ON true
             WHERE s.fingerprint IS DISTINCT FROM k.fp",
        )
        .await?;
    let now = now_utc();
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    for row in conn
        .client()
        .query(&differing, &[&customer, &numbers, &orgs, &prints])
        .await?
    {
        let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
        let (Some(s), Some(fingerprint)) = (suppliers.get(i), fingerprints.get(i)) else {
            continue;
        };
        if row.get::<_, bool>(1) {
            changed.push((s, *fingerprint));
        } else {
            new.push((s, *fingerprint));
        }
    }
    counts.unchanged = (suppliers.len() - new.len() - changed.len()) as u64;
    counts.inserted = new.len() as u64;
    counts.updated = changed.len() as u64;

    // Every write below depends only on the probe's answer, not on another
    // write's: prepared first (cached after the first batch), then sent
    // together and their answers read after — one round trip for all of
    // them instead of one each (the server runs them in the order sent).
    let insert_supplier = conn.prepared(INSERT_SUPPLIERS).await?;
    let update_supplier = conn.prepared(UPDATE_SUPPLIERS).await?;
    let update_location = conn.prepared(UPDATE_LOCATIONS).await?;
    let insert_location = conn.prepared(INSERT_LOCATIONS).await?;
    let delete_address = conn.prepared(DELETE_ADDRESSES).await?;
    let insert_address = conn.prepared(INSERT_ADDRESSES).await?;

    let new_columns = SupplierColumns::of(&new);
    let changed_columns = SupplierColumns::of(&changed);
    let written: Vec<&SupplierRecord> = new.iter().chain(&changed).map(|(s, _)| *s).collect();
    let locations = LocationColumns::of(&written);
    let changed_suppliers: Vec<&SupplierRecord> = changed.iter().map(|(s, _)| *s).collect();
    let keys = LocationColumns::of(&changed_suppliers);
    let addresses = AddressColumns::of(&written);
    let new_params = new_columns.params(&customer, &now);
    let changed_params = changed_columns.params(&customer, &now);
    let location_params = locations.params(&customer, &now);
    let key_params: Vec<PgParam<'_>> = vec![&customer, &keys.number, &keys.org, &keys.code];
    let address_params = addresses.params(&customer);

    let client = conn.client();
    let mut writes: Vec<(&tokio_postgres::Statement, &[PgParam<'_>])> = Vec::with_capacity(6);
    if !new.is_empty() {
        writes.push((&insert_supplier, &new_params));
    }
    if !replace_addresses {
        return Ok(counts);
    }
    if !changed.is_empty() {
        writes.push((&update_supplier, &changed_params));
    }
    if locations.len() > 0 {
        // Existing locations of changed suppliers first (an absent is_active
        // keeps the stored one), then every location not stored yet.
        if !changed.is_empty() {
            writes.push((&update_location, &location_params));
        }
        writes.push((&insert_location, &location_params));
    }
    if !changed.is_empty() {
        writes.push((&delete_address, &key_params));
    }
    if !addresses.number.is_empty() {
        writes.push((&insert_address, &address_params));
    }
    futures_util::future::try_join_all(
        writes
            .into_iter()
            .map(|(statement, params)| client.execute(statement, params)),
    )
    .await?;
    Ok(counts)
}

const INSERT_SUPPLIERS: &str = "INSERT INTO supplier
         (customer_number, supplier_number, organization_code, supplier_name, alternative_supplier_name,
          supplier_type, is_active, custom_field_1, custom_field_2, custom_field_3, custom_field_4,
          custom_field_5, fingerprint, created_at, updated_at)
     SELECT $1, t.number, t.org, t.name, t.alt, t.type, COALESCE(t.active, 1), t.c1, t.c2, t.c3, t.c4, t.c5,
            t.fp, $14, $14
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp)
     ON CONFLICT (customer_number, supplier_number, organization_code) DO UPDATE SET
         supplier_name = excluded.supplier_name, alternative_supplier_name = excluded.alternative_supplier_name,
         supplier_type = excluded.supplier_type, is_active = excluded.is_active,
         custom_field_1 = excluded.custom_field_1, custom_field_2 = excluded.custom_field_2,
         custom_field_3 = excluded.custom_field_3, custom_field_4 = excluded.custom_field_4,
         custom_field_5 = excluded.custom_field_5, fingerprint = excluded.fingerprint,
         updated_at = excluded.updated_at";

const UPDATE_SUPPLIERS: &str = "UPDATE supplier s SET supplier_name = t.name, alternative_supplier_name = t.alt,
         supplier_type = t.type, is_active = COALESCE(t.active, s.is_active), custom_field_1 = t.c1,
         custom_field_2 = t.c2, custom_field_3 = t.c3, custom_field_4 = t.c4, custom_field_5 = t.c5,
         fingerprint = t.fp, updated_at = $14
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[], $8::text[],
                 $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[])
          AS t(number, org, name, alt, type, active, c1, c2, c3, c4, c5, fp)
     WHERE s.customer_number = $1 AND s.supplier_number = t.number AND s.organization_code = t.org";

const UPDATE_LOCATIONS: &str = "UPDATE supplier_location l SET location_name = t.name, organization_code = t.org_code,
         default_currency_code = t.currency, default_payment_term_code = t.term,
         default_payment_method = t.method, taxpayer_id = t.taxpayer, duns_number = t.duns,
         is_active = COALESCE(t.active, l.is_active), custom_field_1 = t.c1, custom_field_2 = t.c2,
         custom_field_3 = t.c3, custom_field_4 = t.c4, custom_field_5 = t.c5, updated_at = $18
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::text[],
                 $14::text[], $15::text[], $16::text[], $17::text[])
          AS t(number, org, code, name, org_code, currency, term, method, taxpayer, duns, active,
               c1, c2, c3, c4, c5)
     WHERE l.customer_number = $1 AND l.supplier_number = t.number
       AND l.supplier_organization_code = t.org AND l.location_code = t.code";

const INSERT_LOCATIONS: &str = "INSERT INTO supplier_location
         (customer_number, supplier_number, supplier_organization_code, location_code, location_name,
          organization_code, default_currency_code, default_payment_term_code, default_payment_method,
          taxpayer_id, duns_number, is_active, custom_field_1, custom_field_2, custom_field_3,
          custom_field_4, custom_field_5, created_at, updated_at)
     SELECT $1, t.number, t.org, t.code, t.name, t.org_code, t.currency, t.term, t.method, t.taxpayer,
            t.duns, COALESCE(t.active, 1), t.c1, t.c2, t.c3, t.c4, t.c5, $18, $18
     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::text[],
                 $14::text[], $15::text[], $16::text[], $17::text[])
          AS t(number, org, code, name, org_code, currency, term, method, taxpayer, duns, active,
               c1, c2, c3, c4, c5)
     ON CONFLICT (customer_number, supplier_number, supplier_organization_code, location_code) DO NOTHING";

const DELETE_ADDRESSES: &str = "DELETE FROM supplier_address a
     USING unnest($2::text[], $3::text[], $4::text[]) AS t(number, org, code)
     WHERE a.customer_number = $1 AND a.supplier_number = t.number
       AND a.supplier_organization_code = t.org AND a.location_code = t.code";

const INSERT_ADDRESSES: &str = "INSERT INTO supplier_address
         (customer_number, supplier_number, supplier_organization_code, location_code, position,
          street, city, state, postal_code, country_code, custom_field_1, custom_field_2, custom_field_3)
     SELECT $1, t.* FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                                $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])
          AS t";

type PgParam<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Suppliers as column arrays (one array per column, a row per index).
#[derive(Default)]
struct SupplierColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    name: Vec<&'a str>,
    alt: Vec<Option<&'a str>>,
    kind: Vec<Option<&'a str>>,
    active: Vec<Option<i64>>,
    custom: [Vec<Option<&'a str>>; 5],
    fingerprint: Vec<Vec<u8>>,
}

impl<'a> SupplierColumns<'a> {
    fn of(rows: &[(&'a SupplierRecord, [u8; 16])]) -> Self {
        let mut c = Self::default();
        for (s, fingerprint) in rows {
            c.number.push(&s.supplier_number);
            c.org.push(s.organization_key());
            c.name.push(&s.supplier_name);
            c.alt.push(s.alternative_supplier_name.as_deref());
            c.kind.push(s.supplier_type.as_deref());
            c.active.push(s.is_active.map(i64::from));
            for (column, value) in c.custom.iter_mut().zip([
                &s.custom_field_1,
                &s.custom_field_2,
                &s.custom_field_3,
                &s.custom_field_4,
                &s.custom_field_5,
            ]) {
                column.push(value.as_deref());
            }
            c.fingerprint.push(fingerprint.to_vec());
        }
        c
    }

    fn params(&'a self, customer: &'a &'a str, now: &'a String) -> Vec<PgParam<'a>> {
        vec![
            customer,
            &self.number,
            &self.org,
            &self.name,
            &self.alt,
            &self.kind,
            &self.active,
            &self.custom[0],
            &self.custom[1],
            &self.custom[2],
            &self.custom[3],
            &self.custom[4],
            &self.fingerprint,
            now,
        ]
    }
}

/// The locations of some suppliers as column arrays.
#[derive(Default)]
struct LocationColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    code: Vec<&'a str>,
    text: [Vec<Option<&'a str>>; 7],
    active: Vec<Option<i64>>,
    custom: [Vec<Option<&'a str>>; 5],
}

impl<'a> LocationColumns<'a> {
    fn of(suppliers: &[&'a SupplierRecord]) -> Self {
        let mut c = Self::default();
        for s in suppliers {
            for l in &s.locations {
                c.number.push(&s.supplier_number);
                c.org.push(s.organization_key());
                c.code.push(&l.location_code);
                for (column, value) in c.text.iter_mut().zip([
                    &l.location_name,
                    &l.organization_code,
                    &l.default_currency_code,
                    &l.default_payment_term_code,
                    &l.default_payment_method,
                    &l.taxpayer_id,
                    &l.duns_number,
                ]) {
                    column.push(value.as_deref());
                }
                c.active.push(l.is_active.map(i64::from));
                for (column, value) in c.custom.iter_mut().zip([
                    &l.custom_field_1,
                    &l.custom_field_2,
                    &l.custom_field_3,
                    &l.custom_field_4,
                    &l.custom_field_5,
                ]) {
                    column.push(value.as_deref());
                }
            }
        }
        c
    }

    fn len(&self) -> usize {
        self.number.len()
    }

    fn params(&'a self, customer: &'a &'a str, now: &'a String) -> Vec<PgParam<'a>> {
        let mut p: Vec<PgParam<'a>> = vec![customer, &self.number, &self.org, &self.code];
        p.extend(self.text.iter().map(|c| c as PgParam<'a>));
        p.push(&self.active);
        p.extend(self.custom.iter().map(|c| c as PgParam<'a>));
        p.push(now);
        p
    }
}

/// The addresses of some suppliers' locations as column arrays, with their positions.
#[derive(Default)]
struct AddressColumns<'a> {
    number: Vec<&'a str>,
    org: Vec<&'a str>,
    code: Vec<&'a str>,
    position: Vec<i64>,
    fields: [Vec<Option<&'a str>>; 8],
}

impl<'a> AddressColumns<'a> {
    fn of(suppliers: &[&'a SupplierRecord]) -> Self {
        let mut c = Self::default();
        for s in suppliers {
            for l in &s.locations {
                for (position, a) in l.addresses.iter().enumerate() {
                    c.number.push(&s.supplier_number);
                    c.org.push(s.organization_key());
                    c.code.push(&l.location_code);
                    c.position.push(position as i64);
                    for (column, value) in c.fields.iter_mut().zip([
                        &a.street,
                        &a.city,
                        &a.state,
                        &a.postal_code,
                        &a.country_code,
                        &a.custom_field_1,
                        &a.custom_field_2,
                        &a.custom_field_3,
                    ]) {
                        column.push(value.as_deref());
                    }
                }
            }
        }
        c
    }

    fn params(&'a self, customer: &'a &'a str) -> Vec<PgParam<'a>> {
        let mut p: Vec<PgParam<'a>> = vec![customer, &self.number, &self.org, &self.code, &self.position];
        p.extend(self.fields.iter().map(|c| c as PgParam<'a>));
        p
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::records::tests::supplier;
    use crate::store::sql::params;
    use crate::store::testing::{count, on_both_engines};

    async fn name_and_city(conn: &mut Conn, number: &str) -> (String, String) {
        let row = conn
            .query_opt(
                "SELECT s.supplier_name, a.city FROM supplier s
                 JOIN supplier_address a ON a.customer_number = s.customer_number
                  AND a.supplier_number = s.supplier_number AND a.supplier_organization_code = s.organization_code
                 WHERE s.supplier_number = ?1",
                params![number],
            )
            .await
            .unwrap()
            .unwrap();
        (row.text(0), row.text(1))
    }

    /// Something that changes whenever any supplier row is written: SQLite's
    /// change counter, PostgreSQL's row versions.
    async fn writes(conn: &mut Conn) -> String {
        match conn {
            Conn::Sqlite(c) => c.conn.total_changes().to_string(),
            Conn::Postgres(_) => {
                let mut versions = String::new();
                for table in ["supplier", "supplier_location", "supplier_address"] {
                    for row in conn
                        .query(&format!("SELECT xmin::text FROM {table} ORDER BY 1"), params![])
                        .await
                        .unwrap()
                    {
                        versions.push_str(&row.text(0));
                        versions.push(',');
                    }
                }
                versions
            }
        }
    }

    async fn upsert_replaces_in_place_without_duplicates(conn: &mut Conn) {
        let counts = save_suppliers(
            conn,
            "c1",
            &[supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)],
        Default::default())
        .await
        .unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (2, 0, 0));
        let counts = save_suppliers(conn, "c1", &[supplier("S1", "One renamed", Some("Delft"))], Default::default())
            .await
            .unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 1, 0));
        assert_eq!(count(conn, "supplier").await, 2);
        assert_eq!(count(conn, "supplier_location").await, 1);
        assert_eq!(count(conn, "supplier_address").await, 1);
        assert_eq!(name_and_city(conn, "S1").await, ("One renamed".into(), "Delft".into()));
        // Another tenant's S1 is another row.
        save_suppliers(conn, "c2", &[supplier("S1", "Theirs", None)], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier").await, 3);
    }

    async fn unchanged_suppliers_are_not_rewritten(conn: &mut Conn) {
        let batch = [supplier("S1", "One", Some("Utrecht")), supplier("S2", "Two", None)];
        save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        let before = writes(conn).await;
        let counts = save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (0, 0, 2));
        assert_eq!(writes(conn).await, before, "not one row was written");
        let mut renamed = batch.to_vec();
        renamed[1].supplier_name = "Two renamed".into();
        renamed.push(supplier("S3", "Three", None));
        let counts = save_suppliers(conn, "c1", &renamed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 1, 1));
        assert_ne!(writes(conn).await, before, "the check sees a write");
        // SQLite looks suppliers up first after a batch of mostly known ones
        // and inserts first after a batch of mostly new ones: both count alike.
        let mut mixed = renamed.clone();
        mixed[0].supplier_name = "One renamed".into();
        mixed.extend((4..8).map(|n| supplier(&format!("S{n}"), "New", None)));
        let counts = save_suppliers(conn, "c1", &mixed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (4, 1, 2));
        mixed[1].supplier_name = "Two again".into();
        mixed.push(supplier("S8", "Eight", None));
        let counts = save_suppliers(conn, "c1", &mixed, Default::default()).await.unwrap();
        assert_eq!((counts.inserted, counts.updated, counts.unchanged), (1, 1, 6));
    }

    async fn locations_not_listed_are_left_alone(conn: &mut Conn) {
        let mut two = supplier("S1", "One", Some("Utrecht"));
        let mut branch = two.locations[0].clone();
        branch.location_code = "BRANCH".into();
        two.locations.push(branch);
        save_suppliers(conn, "c1", &[two], Default::default()).await.unwrap();
        save_suppliers(conn, "c1", &[supplier("S1", "One", Some("Delft"))], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier_location").await, 2);
        let cities: Vec<String> = conn
            .query("SELECT city FROM supplier_address ORDER BY location_code", params![])
            .await
            .unwrap()
            .iter()
            .map(|r| r.text(0))
            .collect();
        assert_eq!(cities, ["Utrecht", "Delft"], "BRANCH kept, MAIN replaced");
    }

    async fn a_value_never_leaks_into_the_next_rows_absent_one(conn: &mut Conn) {
        let mut full = supplier("S1", "One", Some("Utrecht"));
        full.custom_field_1 = Some("c1".into());
        full.alternative_supplier_name = Some("Alt".into());
        full.locations[0].taxpayer_id = Some("NL123".into());
        full.locations[0].addresses[0].postal_code = Some("3511".into());
        let bare = supplier("S2", "Two", Some("Delft"));
        save_suppliers(conn, "c1", &[full, bare], Default::default()).await.unwrap();
        let absent = conn
            .query(
                "SELECT s.custom_field_1, s.alternative_supplier_name, l.taxpayer_id, a.postal_code
                 FROM supplier s
                 JOIN supplier_location l ON l.supplier_number = s.supplier_number
                 JOIN supplier_address a ON a.supplier_number = s.supplier_number
                 WHERE s.supplier_number = 'S2'",
                params![],
            )
            .await
            .unwrap();
        assert_eq!(absent.len(), 1);
        for i in 0..4 {
            assert_eq!(absent[0].opt_text(i), None, "column {i} of S2 is absent");
        }
    }

    async fn an_absent_is_active_keeps_the_stored_one(conn: &mut Conn) {
        let mut off = supplier("S1", "One", Some("Utrecht"));
        off.is_active = Some(false);
        off.locations[0].is_active = Some(false);
        save_suppliers(conn, "c1", &[off.clone()], Default::default()).await.unwrap();
        let mut silent = off.clone();
        silent.supplier_name = "One renamed".into();
        silent.is_active = None;
        silent.locations[0].is_active = None;
        save_suppliers(conn, "c1", &[silent], Default::default()).await.unwrap();
        let row = conn
            .query_opt(
                "SELECT s.is_active, l.is_active FROM supplier s JOIN supplier_location l
                   ON l.customer_number = s.customer_number AND l.supplier_number = s.supplier_number",
                params![],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((row.int(0), row.int(1)), (0, 0));
        let mut fresh = supplier("S2", "Two", Some("Gouda"));
        fresh.is_active = None;
        fresh.locations[0].is_active = None;
        save_suppliers(conn, "c1", &[fresh], Default::default()).await.unwrap();
        let row = conn
            .query_opt("SELECT is_active FROM supplier WHERE supplier_number = 'S2'", params![])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.int(0), 1, "a new supplier is active unless it says otherwise");
    }

    async fn organization_code_is_part_of_the_key(conn: &mut Conn) {
        let mut other_org = supplier("S1", "One in org B", None);
        other_org.organization_code = Some("B".into());
        save_suppliers(conn, "c1", &[supplier("S1", "One", None), other_org], Default::default())
            .await
            .unwrap();
        assert_eq!(count(conn, "supplier").await, 2);
    }

    async fn duplicates_in_one_batch_collapse_to_the_last(conn: &mut Conn) {
        let batch = [
            supplier("S1", "First version", Some("Delft")),
            supplier("S1", "Last version", Some("Gouda")),
        ];
        save_suppliers(conn, "c1", &batch, Default::default()).await.unwrap();
        assert_eq!(count(conn, "supplier").await, 1);
        assert_eq!(count(conn, "supplier_address").await, 1);
        assert_eq!(name_and_city(conn, "S1").await, ("Last version".into(), "Gouda".into()));
    }

    on_both_engines!(
        upsert_replaces_in_place_without_duplicates,
        unchanged_suppliers_are_not_rewritten,
        locations_not_listed_are_left_alone,
        an_absent_is_active_keeps_the_stored_one,
        a_value_never_leaks_into_the_next_rows_absent_one,
        organization_code_is_part_of_the_key,
        duplicates_in_one_batch_collapse_to_the_last,
    );
}
